// Container logs in Docker's json-file format: one JSON object per line,
//   {"log":"hello\n","stream":"stdout","time":"2026-11-23T04:34:21.123456789Z"}
// A line longer than 16 KiB is split into several entries (the last piece of a
// line ends with "\n", earlier pieces don't), as Docker's json-file driver does.
//
// LogWriter is used by the monitor: small, no JSON library, no allocations per
// line beyond its buffer. LogReader is used by `berth logs`.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "util/error.h"
#include "util/fd.h"

namespace berth::engine {

class LogWriter {
 public:
  // Appends to `path` (created 0640 if missing). max_size 0: no rotation;
  // otherwise when the file would exceed max_size bytes it is rotated:
  // path -> path.1 -> ... -> path.(max_files-1) (the oldest dropped), as
  // Docker's max-size/max-file options do. max_files >= 1.
  // `lazy`: the file is made with the first entry, not now (a `run --rm`
  // container that prints nothing has none to make and remove).
  static Result<LogWriter> open(const std::string& path, uint64_t max_size = 0, int max_files = 1,
                                bool lazy = false);
  // Data read from the container's "stdout" or "stderr" (any chunk size).
  // Complete lines become entries at once; a partial line is kept until its
  // newline arrives or flush() is called (then it is written without "\n").
  Result<> write(std::string_view stream, std::string_view data);
  // Writes any partial lines (container exited).
  Result<> flush();

 private:
  // A stream's line not yet ended by "\n" (at most 16 KiB: longer is written
  // as pieces).
  struct Pending {
    std::string stream, line;
  };

  Result<> put(std::string_view stream, std::string_view text, bool newline);
  Result<> rotate();

  UniqueFd fd_;
  std::string path_;
  uint64_t max_size_ = 0, size_ = 0;
  int max_files_ = 1;
  Pending pending_[2];  // stdout and stderr: the only streams the monitor has
  std::string out_;     // the entry being written, reused
};

struct LogEntry {
  std::string stream;  // "stdout" / "stderr"
  std::string text;    // the "log" field, decoded
  int64_t time_ns = 0; // unix nanoseconds
};

struct LogReadOptions {
  std::optional<int64_t> since_ns, until_ns;  // inclusive bounds
  std::optional<uint64_t> tail;  // only the last N entries (of those within bounds)
  bool follow = false;            // keep reading as the file grows (and across rotation)
  // With follow: called between polls; return false to stop (container exited
  // and everything is read).
  std::function<bool()> keep_following;
};

// Reads `path` (and its rotated files path.N, oldest first) and calls `emit`
// for each entry in order. Malformed lines are skipped.
Result<> read_logs(const std::string& path, const LogReadOptions& o,
                   const std::function<void(const LogEntry&)>& emit);

// Docker's --since/--until values: RFC 3339 ("2026-11-23T04:34:21Z", with
// fractional seconds or an offset), a unix timestamp ("1700000000.5"), or a
// duration relative to `now_ns` ("10m", "1h30m", "42s"). Returns unix ns.
Result<int64_t> parse_log_time(std::string_view s, int64_t now_ns);

// "2026-11-23T04:34:21.123456789Z" for unix ns (Docker's RFC3339Nano, trailing
// zeros of the fraction kept to 9 digits as Docker's logs -t prints them).
std::string format_log_time(int64_t ns);

}  // namespace berth::engine
