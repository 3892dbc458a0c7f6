// The monitor's attach protocol, spoken over a unix socket (attach.sock in the
// container's 0700 directory, or a socketpair handed to the monitor at start).
// Frames use Docker's stdcopy header: 1 byte of type, 3 zero bytes, a
// big-endian 32-bit length, then the payload. Both directions:
//   monitor -> client: kStdout, kStderr (a pty's output is kStdout), kExit
//                      ("<exit code> <unix ns>", sent once the container
//                      was reaped, before the monitor writes the exit file)
//   client -> monitor: kStdin, kCloseStdin (the client's stdin ended),
//                      kResize ("<rows> <cols>"), kCleanupByClient (after
//                      kExit: the client records the exit itself, so the
//                      monitor exits without running its exit command;
//                      "rm": and removes the container, whose rootfs the
//                      monitor unmounts at once),
//                      kRemoveTrash (after kCleanupByClient: the container's
//                      removed files, renamed to .trash-<id>.* beside its
//                      directory, one path a line, for the monitor to remove
//                      as it exits; any other path is ignored; the line
//                      "runtime": an --rm container's runtime state and
//                      cgroup, to be removed first)
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace berth::engine {

enum class Frame : uint8_t { kStdin = 0, kStdout = 1, kStderr = 2, kExit = 4, kResize = 5, kCloseStdin = 6, kCleanupByClient = 7, kRemoveTrash = 8 };

inline std::string frame(Frame type, std::string_view data) {
  std::string f(8, '\0');
  f[0] = static_cast<char>(type);
  uint32_t n = static_cast<uint32_t>(data.size());
  f[4] = static_cast<char>(n >> 24), f[5] = static_cast<char>(n >> 16);
  f[6] = static_cast<char>(n >> 8), f[7] = static_cast<char>(n);
  f.append(data);
  return f;
}

// A frame's payload is capped so a hostile peer cannot make the other side buffer without end.
constexpr size_t kMaxFrame = 1 << 20;

// Splits a byte stream into frames.
class FrameReader {
 public:
  void feed(const char* p, size_t n) { buf_.append(p, n); }
  // A frame over kMaxFrame arrived: the peer is to be dropped.
  bool bad() const { return bad_; }
  // Part of a frame is held (the rest has not arrived).
  bool partial() const { return buf_.size() > off_; }
  // The next whole frame, if one has arrived.
  bool next(Frame* type, std::string* payload) {
    if (buf_.size() - off_ < 8) return compact(), false;
    auto* h = reinterpret_cast<const unsigned char*>(buf_.data() + off_);
    size_t n = (size_t{h[4]} << 24) | (size_t{h[5]} << 16) | (size_t{h[6]} << 8) | h[7];
    if (n > kMaxFrame) return bad_ = true, false;
    if (buf_.size() - off_ < 8 + n) return compact(), false;
    *type = static_cast<Frame>(h[0]);
    payload->assign(buf_, off_ + 8, n);
    off_ += 8 + n;
    return true;
  }

 private:
  void compact() {
    if (off_) buf_.erase(0, off_), off_ = 0;
  }
  std::string buf_;
  size_t off_ = 0;
  bool bad_ = false;
};

}  // namespace berth::engine
