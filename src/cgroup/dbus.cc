#include "cgroup/dbus.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstdlib>
#include <cstddef>
#include <cstring>

#include "util/fs.h"

namespace berth::dbus {

namespace {

// The spec caps a message at 128 MiB; systemd's replies are tiny.
constexpr size_t kMaxMessage = 1 << 27;

enum Field : uint8_t {
  kPath = 1, kInterface = 2, kMember = 3, kErrorName = 4, kReplySerial = 5,
  kDestination = 6, kSender = 7, kSignature = 8, kUnixFds = 9,
};

size_t type_align(char c) {
  switch (c) {
    case 'y': case 'g': case 'v': return 1;
    case 'n': case 'q': return 2;
    case 'x': case 't': case 'd': case '(': case '{': return 8;
    default: return 4;  // b i u s o a h
  }
}

// Length of the first complete type in `sig`; 0 when it is malformed.
size_t complete_type_len(std::string_view sig) {
  size_t i = 0;
  while (i < sig.size() && sig[i] == 'a') ++i;
  if (i >= sig.size()) return 0;
  if (sig[i] != '(' && sig[i] != '{') return i + 1;
  int nest = 0;
  for (; i < sig.size(); ++i) {
    if (sig[i] == '(' || sig[i] == '{') ++nest;
    else if ((sig[i] == ')' || sig[i] == '}') && --nest == 0) return i + 1;
  }
  return 0;
}

int64_t now_ms() {
  struct timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

}  // namespace

// ------------------------------------------------------------------ Writer --

void Writer::align(size_t n) {
  while (buf_.size() % n) buf_.push_back('\0');
}

void Writer::u32(uint32_t v) {
  align(4);
  char b[4];
  std::memcpy(b, &v, 4);  // little endian hosts only (x86-64, arm64, ...)
  buf_.append(b, 4);
}

void Writer::u64(uint64_t v) {
  align(8);
  char b[8];
  std::memcpy(b, &v, 8);
  buf_.append(b, 8);
}

void Writer::str(std::string_view s) {
  u32(static_cast<uint32_t>(s.size()));
  buf_.append(s);
  buf_.push_back('\0');
}

void Writer::sig(std::string_view s) {
  byte(static_cast<uint8_t>(s.size()));
  buf_.append(s);
  buf_.push_back('\0');
}

size_t Writer::begin_array(size_t elem_align) {
  u32(0);
  size_t len_at = buf_.size() - 4;
  align(elem_align);
  return len_at;
}

void Writer::end_array(size_t len_at, size_t elem_align) {
  // The length counts the elements only, not the padding before the first.
  size_t start = len_at + 4;
  while (start % elem_align) ++start;
  uint32_t len = static_cast<uint32_t>(buf_.size() - start);
  std::memcpy(&buf_[len_at], &len, 4);
}

void write_properties(Writer& w, const Properties& props) {
  size_t arr = w.begin_array(8);
  for (auto& [name, value] : props) {
    w.begin_struct();
    w.str(name);
    std::visit(
        [&](auto&& v) {
          using T = std::decay_t<decltype(v)>;
          if constexpr (std::is_same_v<T, bool>) {
            w.sig("b"), w.boolean(v);
          } else if constexpr (std::is_same_v<T, uint64_t>) {
            w.sig("t"), w.u64(v);
          } else if constexpr (std::is_same_v<T, std::string>) {
            w.sig("s"), w.str(v);
          } else if constexpr (std::is_same_v<T, std::vector<uint32_t>>) {
            w.sig("au");
            size_t a = w.begin_array(4);
            for (uint32_t x : v) w.u32(x);
            w.end_array(a, 4);
          } else {
            w.sig("ay");
            size_t a = w.begin_array(1);
            for (uint8_t x : v) w.byte(x);
            w.end_array(a, 1);
          }
        },
        value);
  }
  w.end_array(arr, 8);
}

// ------------------------------------------------------------------ Reader --

Result<> Reader::need(size_t n) {
  if (pos_ + n > d_.size()) return fail("D-Bus message truncated");
  return {};
}

Result<> Reader::align(size_t n) {
  size_t abs = base_ + pos_;
  size_t pad = (n - abs % n) % n;
  TRY(need(pad));
  for (size_t i = 0; i < pad; ++i)
    if (d_[pos_ + i] != '\0') return fail("D-Bus message: non-zero padding");
  pos_ += pad;
  return {};
}

Result<uint8_t> Reader::byte() {
  TRY(need(1));
  return static_cast<uint8_t>(d_[pos_++]);
}

template <class T>
Result<T> Reader::fixed() {
  TRY(align(sizeof(T)));
  TRY(need(sizeof(T)));
  T v;
  std::memcpy(&v, d_.data() + pos_, sizeof(T));
  pos_ += sizeof(T);
  return be_ ? std::byteswap(v) : v;
}

Result<uint32_t> Reader::u32() { return fixed<uint32_t>(); }
Result<uint64_t> Reader::u64() { return fixed<uint64_t>(); }

Result<std::string> Reader::str() {
  uint32_t n = TRY(u32());
  TRY(need(static_cast<size_t>(n) + 1));
  std::string s(d_.substr(pos_, n));
  if (d_[pos_ + n] != '\0') return fail("D-Bus message: string without its NUL");
  pos_ += n + 1;
  return s;
}

Result<std::string> Reader::sig() {
  uint8_t n = TRY(byte());
  TRY(need(static_cast<size_t>(n) + 1));
  std::string s(d_.substr(pos_, n));
  pos_ += n + 1;
  return s;
}

Result<size_t> Reader::begin_array(size_t elem_align) {
  uint32_t n = TRY(u32());
  if (n > (1u << 26)) return fail("D-Bus message: array too long");
  TRY(align(elem_align));
  TRY(need(n));
  return pos_ + n;
}

Result<> Reader::skip(std::string_view sig) {
  std::string_view s = sig;
  TRY(skip_one(s, 0));
  return {};
}

// Skips one value of the first complete type of `sig`, consuming it from `sig`.
Result<> Reader::skip_one(std::string_view& sig, int depth) {
  if (depth > 32) return fail("D-Bus message: types nested too deep");
  if (sig.empty()) return fail("D-Bus message: bad signature");
  char c = sig[0];
  sig.remove_prefix(1);
  switch (c) {
    case 'y': TRY(need(1)); pos_ += 1; return {};
    case 'n': case 'q': TRY(align(2)); TRY(need(2)); pos_ += 2; return {};
    case 'b': case 'i': case 'u': case 'h': TRY(u32()); return {};
    case 'x': case 't': case 'd': TRY(u64()); return {};
    case 's': case 'o': TRY(str()); return {};
    case 'g': TRY(this->sig()); return {};
    case 'v': {
      std::string inner = TRY(this->sig());
      std::string_view iv = inner;
      TRY(skip_one(iv, depth + 1));
      if (!iv.empty()) return fail("D-Bus message: variant holds more than one value");
      return {};
    }
    case 'a': {
      size_t n = complete_type_len(sig);
      if (n == 0) return fail("D-Bus message: bad signature");
      std::string_view elem = sig.substr(0, n);
      sig.remove_prefix(n);
      size_t end = TRY(begin_array(type_align(elem[0])));
      while (pos_ < end) {
        std::string_view e = elem;
        TRY(skip_one(e, depth + 1));
      }
      if (pos_ != end) return fail("D-Bus message: array length mismatch");
      return {};
    }
    case '(': case '{': {
      TRY(align(8));
      char close = c == '(' ? ')' : '}';
      while (!sig.empty() && sig[0] != close) TRY(skip_one(sig, depth + 1));
      if (sig.empty()) return fail("D-Bus message: bad signature");
      sig.remove_prefix(1);
      return {};
    }
    default:
      return fail(std::string("D-Bus message: unsupported type '") + c + "'");
  }
}

// ----------------------------------------------------------------- Message --

Message Message::call(std::string dest, std::string path, std::string iface, std::string member) {
  Message m;
  m.type = Type::kCall;
  m.destination = std::move(dest);
  m.path = std::move(path);
  m.interface = std::move(iface);
  m.member = std::move(member);
  return m;
}

std::string Message::encode() const {
  Writer w;
  w.byte('l');
  w.byte(static_cast<uint8_t>(type));
  w.byte(flags);
  w.byte(1);
  w.u32(static_cast<uint32_t>(body.size()));
  w.u32(serial);
  size_t arr = w.begin_array(8);
  auto field = [&](uint8_t code, const char* sig, const std::string& v) {
    if (v.empty()) return;
    w.begin_struct();
    w.byte(code);
    w.sig(sig);
    if (sig[0] == 'g') w.sig(v);
    else w.str(v);
  };
  field(kPath, "o", path);
  field(kInterface, "s", interface);
  field(kMember, "s", member);
  field(kErrorName, "s", error_name);
  field(kDestination, "s", destination);
  field(kSignature, "g", signature);
  if (reply_serial) {
    w.begin_struct();
    w.byte(kReplySerial);
    w.sig("u");
    w.u32(reply_serial);
  }
  w.end_array(arr, 8);
  w.align(8);
  return w.data() + body;
}

Result<Message> Message::decode(std::string_view data, size_t* used) {
  *used = 0;
  if (data.size() < 16) return Message{};
  char endian = data[0];
  if (endian != 'l' && endian != 'B') return fail("D-Bus message: bad byte order mark");
  Message m;
  m.big_endian = endian == 'B';
  Reader fixed(data.substr(0, 16), m.big_endian);
  (void)TRY(fixed.byte());
  m.type = static_cast<Type>(TRY(fixed.byte()));
  m.flags = TRY(fixed.byte());
  if (TRY(fixed.byte()) != 1) return fail("D-Bus message: unknown protocol version");
  uint32_t body_len = TRY(fixed.u32());
  m.serial = TRY(fixed.u32());
  uint32_t fields_len = TRY(fixed.u32());
  size_t header = 16 + static_cast<size_t>(fields_len);
  header = (header + 7) & ~size_t{7};
  size_t total = header + body_len;
  if (fields_len > kMaxMessage || body_len > kMaxMessage || total > kMaxMessage)
    return fail("D-Bus message too large");
  if (data.size() < total) return Message{};
  Reader r(data.substr(0, 16 + fields_len), m.big_endian);
  for (int i = 0; i < 12; ++i) (void)TRY(r.byte());
  size_t end = TRY(r.begin_array(8));
  while (r.pos() < end) {
    TRY(r.align(8));
    uint8_t code = TRY(r.byte());
    std::string sig = TRY(r.sig());
    auto want = [&](const char* s) -> Result<> {
      if (sig != s) return fail("D-Bus message: header field " + std::to_string(code) + " has type " + sig);
      return {};
    };
    switch (code) {
      case kPath: TRY(want("o")); m.path = TRY(r.str()); break;
      case kInterface: TRY(want("s")); m.interface = TRY(r.str()); break;
      case kMember: TRY(want("s")); m.member = TRY(r.str()); break;
      case kErrorName: TRY(want("s")); m.error_name = TRY(r.str()); break;
      case kReplySerial: TRY(want("u")); m.reply_serial = TRY(r.u32()); break;
      case kDestination: TRY(want("s")); m.destination = TRY(r.str()); break;
      case kSender: TRY(want("s")); m.sender = TRY(r.str()); break;
      case kSignature: TRY(want("g")); m.signature = TRY(r.sig()); break;
      case kUnixFds: TRY(want("u")); if (TRY(r.u32()) != 0) return fail("D-Bus message carries fds we did not ask for"); break;
      default: TRY(r.skip(sig)); break;
    }
  }
  m.body = std::string(data.substr(header, body_len));
  *used = total;
  return m;
}

std::string Message::error_text() const {
  std::string text;
  if (signature.size() >= 1 && signature[0] == 's') {
    Reader r = reader();
    if (auto s = r.str(); s) text = *s;
  }
  return text.empty() ? error_name : error_name + ": " + text;
}

// -------------------------------------------------------------- Connection --

Result<Connection> Connection::system() {
  const char* env = std::getenv("DBUS_SYSTEM_BUS_ADDRESS");
  std::string addr = env && *env ? env : "unix:path=/run/dbus/system_bus_socket";
  // Several addresses may be listed; the first unix one is used.
  for (auto& a : split(addr, ';')) {
    if (a.rfind("unix:", 0) != 0) continue;
    for (auto& kv : split(a.substr(5), ',')) {
      if (kv.rfind("path=", 0) == 0) {
        std::string path = kv.substr(5);
        bool direct = path == "/run/systemd/private";
        return TRY_CTX(open(path, false, !direct), "D-Bus system bus " + path);
      }
      if (kv.rfind("abstract=", 0) == 0) return TRY_CTX(open(kv.substr(9), true, true), "D-Bus system bus @" + kv.substr(9));
    }
  }
  return fail("DBUS_SYSTEM_BUS_ADDRESS \"" + addr + "\": no unix:path= or unix:abstract= address");
}

Result<Connection> Connection::open(const std::string& socket_path, bool abstract, bool bus) {
  Connection c;
  c.bus_ = bus;
  c.fd_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!c.fd_) return sys_error("socket");
  struct sockaddr_un sa = {};
  sa.sun_family = AF_UNIX;
  if (socket_path.size() + 1 >= sizeof(sa.sun_path)) return fail("socket path too long");
  size_t off = abstract ? 1 : 0;
  std::memcpy(sa.sun_path + off, socket_path.data(), socket_path.size());
  socklen_t len = static_cast<socklen_t>(offsetof(struct sockaddr_un, sun_path) + off + socket_path.size() + (abstract ? 0 : 1));
  if (::connect(c.fd_.get(), reinterpret_cast<struct sockaddr*>(&sa), len) < 0) return sys_error("connect");
  // SASL EXTERNAL: the server checks our uid from the socket's credentials.
  std::string uid = std::to_string(::geteuid()), hex;
  for (unsigned char ch : uid) {
    static const char* digits = "0123456789abcdef";
    hex += digits[ch >> 4];
    hex += digits[ch & 15];
  }
  // The whole exchange is sent at once, as sd-bus does, and BEGIN is known to
  // be consumed once the answer to NEGOTIATE_UNIX_FD (sent before it) is
  // back: systemd 252's server stalls on a message that arrives in the same
  // read as BEGIN (it sits unparsed in its buffer until the socket is
  // readable again).
  std::string auth = std::string(1, '\0') + "AUTH EXTERNAL " + hex + "\r\nNEGOTIATE_UNIX_FD\r\nBEGIN\r\n";
  TRY_CTX(write_fd(c.fd_.get(), auth), "authenticate");
  std::string in;
  int64_t deadline = now_ms() + 10000;
  auto line = [&]() -> Result<std::string> {
    for (;;) {
      if (size_t e = in.find("\r\n"); e != std::string::npos) {
        std::string l = in.substr(0, e);
        in.erase(0, e + 2);
        return l;
      }
      if (in.size() > 4096) return fail("authenticate: answer too long");
      struct pollfd p = {c.fd_.get(), POLLIN, 0};
      int left = static_cast<int>(deadline - now_ms());
      if (left <= 0 || ::poll(&p, 1, left) == 0) return fail("authenticate: no answer from the server");
      char buf[256];
      ssize_t n = ::read(c.fd_.get(), buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return sys_error("authenticate");
      if (n == 0) return fail("authenticate: the server closed the connection");
      in.append(buf, static_cast<size_t>(n));
    }
  };
  std::string ok = TRY(line());
  if (ok.rfind("OK ", 0) != 0) return fail("authenticate: refused (" + ok + ")");
  // AGREE_UNIX_FD, or ERROR from a server without fd passing: either will do
  // (berth passes no fds).
  TRY(line());
  c.rbuf_ = std::move(in);
  if (bus) {
    auto hello = Message::call("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "Hello");
    TRY_CTX(c.call(std::move(hello), 10000), "Hello");
  }
  return c;
}

Result<> Connection::send(const Message& m) {
  return write_fd(fd_.get(), m.encode());
}

Result<Message> Connection::receive(int timeout_ms) {
  int64_t deadline = now_ms() + timeout_ms;
  for (;;) {
    size_t used = 0;
    Message m = TRY(Message::decode(rbuf_, &used));
    if (used) {
      rbuf_.erase(0, used);
      return m;
    }
    struct pollfd p = {fd_.get(), POLLIN, 0};
    int left = static_cast<int>(deadline - now_ms());
    if (left <= 0) return sys_error(ETIMEDOUT, "waiting for D-Bus");
    int r = ::poll(&p, 1, left);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return sys_error("poll D-Bus socket");
    if (r == 0) continue;
    char buf[16384];
    ssize_t n = ::read(fd_.get(), buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n < 0) return sys_error("read D-Bus socket");
    if (n == 0) return fail("D-Bus connection closed by the server");
    rbuf_.append(buf, static_cast<size_t>(n));
  }
}

Result<Message> Connection::call(Message m, int timeout_ms) {
  m.serial = ++serial_;
  TRY(send(m));
  int64_t deadline = now_ms() + timeout_ms;
  for (;;) {
    int left = static_cast<int>(deadline - now_ms());
    if (left <= 0) return sys_error(ETIMEDOUT, m.member + ": no reply");
    Message r = TRY(receive(left));
    if (r.type == Type::kSignal) {
      signals_.push_back(std::move(r));
      continue;
    }
    if ((r.type != Type::kReturn && r.type != Type::kError) || r.reply_serial != m.serial) continue;
    if (r.type == Type::kError) return fail(m.member + ": " + r.error_text());
    return r;
  }
}

Result<Message> Connection::next_signal(int timeout_ms) {
  if (!signals_.empty()) {
    Message m = std::move(signals_.front());
    signals_.pop_front();
    return m;
  }
  int64_t deadline = now_ms() + timeout_ms;
  for (;;) {
    int left = static_cast<int>(deadline - now_ms());
    if (left <= 0) return sys_error(ETIMEDOUT, "waiting for a D-Bus signal");
    Message r = TRY(receive(left));
    if (r.type == Type::kSignal) return r;
  }
}

Result<> Connection::add_match(const std::string& rule) {
  if (!bus_) return {};
  auto m = Message::call("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "AddMatch");
  Writer w;
  w.str(rule);
  m.signature = "s";
  m.body = w.data();
  TRY(call(std::move(m), 10000));
  return {};
}

}  // namespace berth::dbus
