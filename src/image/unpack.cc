// The layer unpacker: being written.
