// A minimal D-Bus client: enough of the wire protocol to call systemd's manager
// (method calls with basic types, arrays, structs and variants; replies, errors
// and signals back). berth-runtime is a static binary, and libsystemd's sd-bus
// can't be linked statically nor dlopen'ed safely from one; youki made the same
// choice for the same reason. See docs/architecture.md.
//
// Only little-endian messages are written; both byte orders are read.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "util/error.h"
#include "util/fd.h"

namespace berth::dbus {

// Marshals values into a message body (or header), aligned as the spec says.
class Writer {
 public:
  void byte(uint8_t v) { buf_.push_back(static_cast<char>(v)); }
  void boolean(bool v) { u32(v ? 1 : 0); }
  void u32(uint32_t v);
  void u64(uint64_t v);
  void str(std::string_view s);  // also object paths
  void sig(std::string_view s);
  // An array: begin returns where its length goes; end fills that in.
  size_t begin_array(size_t elem_align);
  void end_array(size_t len_at, size_t elem_align);
  void begin_struct() { align(8); }
  void align(size_t n);
  const std::string& data() const { return buf_; }

 private:
  std::string buf_;
};

// Reads values from a message; every read checks bounds.
class Reader {
 public:
  // `base`: the offset of data[0] in the message, for alignment.
  Reader(std::string_view data, bool big_endian, size_t base = 0) : d_(data), be_(big_endian), base_(base) {}
  Result<uint8_t> byte();
  Result<uint32_t> u32();
  Result<uint64_t> u64();
  Result<std::string> str();  // strings and object paths
  Result<std::string> sig();
  // Skips one complete value of type `sig`.
  Result<> skip(std::string_view sig);
  // An array's end offset; the caller reads elements while pos() < it.
  Result<size_t> begin_array(size_t elem_align);
  Result<> align(size_t n);
  size_t pos() const { return pos_; }

 private:
  Result<> need(size_t n);
  template <class T>
  Result<T> fixed();  // an aligned integer in the message's byte order
  Result<> skip_one(std::string_view& sig, int depth);
  std::string_view d_;
  bool be_;
  size_t base_;
  size_t pos_ = 0;
};

enum class Type : uint8_t { kCall = 1, kReturn = 2, kError = 3, kSignal = 4 };

struct Message {
  Type type = Type::kCall;
  uint8_t flags = 0;
  uint32_t serial = 0, reply_serial = 0;
  bool big_endian = false;
  std::string path, interface, member, error_name, destination, sender, signature;
  std::string body;

  static Message call(std::string dest, std::string path, std::string iface, std::string member);
  // Reads the body, which starts 8-aligned in the message.
  Reader reader() const { return Reader(body, big_endian); }
  // The whole message as sent on the wire (little endian).
  std::string encode() const;
  // One message from the front of `data`: its size in *used, 0 when more bytes are needed.
  static Result<Message> decode(std::string_view data, size_t* used);
  // "name: text" of an error reply.
  std::string error_text() const;
};

// A typed property value for systemd's a(sv) arrays.
using Value = std::variant<bool, uint64_t, std::string, std::vector<uint32_t>, std::vector<uint8_t>>;
using Properties = std::vector<std::pair<std::string, Value>>;
void write_properties(Writer& w, const Properties& props);

class Connection {
 public:
  // The system bus: $DBUS_SYSTEM_BUS_ADDRESS (unix:path= or unix:abstract=),
  // else /run/dbus/system_bus_socket. An address naming systemd's own socket
  // (/run/systemd/private) is a direct connection: no bus, no Hello.
  static Result<Connection> system();
  // Connects to a unix socket; `bus` false for a peer-to-peer connection.
  static Result<Connection> open(const std::string& socket_path, bool abstract, bool bus);

  // Sends `m` and waits for its reply; signals that arrive meanwhile are
  // queued for next_signal. An error reply is an Error naming the D-Bus error.
  Result<Message> call(Message m, int timeout_ms = 30000);
  // The next signal, waiting up to timeout_ms.
  Result<Message> next_signal(int timeout_ms);
  // Adds a match rule on the bus (a no-op on a direct connection).
  Result<> add_match(const std::string& rule);

 private:
  Result<> send(const Message& m);
  Result<Message> receive(int timeout_ms);
  UniqueFd fd_;
  bool bus_ = true;
  uint32_t serial_ = 0;
  std::string rbuf_;
  std::deque<Message> signals_;
};

}  // namespace berth::dbus
