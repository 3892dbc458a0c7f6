// Keeping the store's WAL index valid between commands.
//
// berth's store is SQLite in WAL mode; its index of the log lives in
// berth.db-shm, shared memory that every connection maps. SQLite trusts that
// file only while some process has it open: a connection that finds no other
// (no lock on the -shm's "dead man switch" byte) truncates it and rebuilds the
// index by reading every frame of the log (recovery). Daemonless, each
// `berth` command was that first connection: up to 128 frames read and
// checksummed, the -shm truncated and regrown, ~0.3 ms of every command here.
//
// A monitor holds a read lock on that byte, as any open connection does
// (SQLite's unix VFS: byte 128 of the -shm, part of the locking protocol that
// processes of different SQLite versions share, so fixed), from once its
// container has started to its end; the trash child of a `run --rm` keeps it
// while it removes the container's files. A command that opens the store
// meanwhile maps the index as it is. Holding it changes nothing else: no
// read mark is held, so checkpoints and the log's restarts go on.
//
// Only a process started after a connection of this boot opened the store
// may hold it (a monitor takes it once its CLI has created the container):
// an index left by a crash of the host is never trusted, as SQLite requires.
#pragma once

#include <string>

#include "util/fd.h"

namespace berth::engine {

// A read lock (an open file description lock, so a forked child shares it
// until its copy closes) on the dead man switch of `store_root`/berth.db-shm;
// an empty fd if the file is missing or a first connection is resetting it.
UniqueFd hold_store_index(const std::string& store_root);

}  // namespace berth::engine
