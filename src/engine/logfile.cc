// The writer follows moby's daemon/logger/jsonfilelog (jsonlog/jsonlogbytes.go
// for the encoding, loggerutils/logfile.go for rotation) and copier.go for the
// 16 KiB pieces; the reader reads what either of them wrote.
#include "engine/logfile.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <nlohmann/json.hpp>
#include <vector>

namespace berth::engine {
namespace {

// copier.go's bufSize: a line longer than this becomes several entries.
constexpr size_t kMaxLine = 16 * 1024;
constexpr int64_t kSecond = 1'000'000'000;

// ---- Time ----

// Days since 1970-01-01 of a proleptic Gregorian date, and back (Howard
// Hinnant's days_from_civil / civil_from_days). Not gmtime_r: glibc's loads
// /etc/localtime on first use, which the monitor has no use for.
int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

void civil_from_days(int64_t z, int64_t& y, unsigned& m, unsigned& d) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const auto doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  d = doy - (153 * mp + 2) / 5 + 1;
  m = mp < 10 ? mp + 3 : mp - 9;
  y = static_cast<int64_t>(yoe) + era * 400 + (m <= 2);
}

// "2026-11-23T04:34:21.123456789Z" into `out` (32 bytes), returning its length.
// trim: Go's RFC3339Nano, whose fraction loses its trailing zeros (and its dot
// when nothing is left), as Docker writes the "time" field.
size_t format_time(int64_t ns, bool trim, char* out) {
  int64_t secs = ns / kSecond, frac = ns % kSecond;
  if (frac < 0) {
    frac += kSecond;
    --secs;
  }
  int64_t days = secs / 86400, sod = secs % 86400;
  if (sod < 0) {
    sod += 86400;
    --days;
  }
  int64_t y;
  unsigned m, d;
  civil_from_days(days, y, m, d);
  auto put = [](char* p, int64_t v, int width) {
    for (int i = width - 1; i >= 0; --i, v /= 10) p[i] = static_cast<char>('0' + v % 10);
  };
  std::memcpy(out, "0000-00-00T00:00:00.000000000Z", 30);
  put(out, y, 4);
  put(out + 5, m, 2);
  put(out + 8, d, 2);
  put(out + 11, sod / 3600, 2);
  put(out + 14, sod / 60 % 60, 2);
  put(out + 17, sod % 60, 2);
  put(out + 20, frac, 9);
  if (!trim) return 30;
  size_t n = 29;
  while (out[n - 1] == '0') --n;
  if (out[n - 1] == '.') --n;
  out[n++] = 'Z';
  return n;
}

// Exactly `n` digits from the front of `s`.
bool take_digits(std::string_view& s, size_t n, int& v) {
  if (s.size() < n) return false;
  v = 0;
  for (size_t i = 0; i < n; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    v = v * 10 + (s[i] - '0');
  }
  s.remove_prefix(n);
  return true;
}

bool take(std::string_view& s, char c) {
  if (s.empty() || s[0] != c) return false;
  s.remove_prefix(1);
  return true;
}

// RFC 3339 and the shorter forms Docker's timetypes.GetTimestamp accepts:
// "2006-01-02", "2006-01-02T15", "2006-01-02T15:04", "2006-01-02T15:04:05",
// seconds with a fraction, each with "Z" or "+07:00"; without a zone the time
// is at `local_off_s` from UTC (none given: not accepted).
bool parse_rfc3339(std::string_view s, std::optional<int64_t> local_off_s, int64_t& ns) {
  int y, mo, d, h = 0, mi = 0, sec = 0;
  int64_t frac = 0;
  if (!take_digits(s, 4, y) || !take(s, '-') || !take_digits(s, 2, mo) || !take(s, '-') ||
      !take_digits(s, 2, d))
    return false;
  if (take(s, 'T')) {
    if (!take_digits(s, 2, h)) return false;
    if (take(s, ':')) {
      if (!take_digits(s, 2, mi)) return false;
      if (take(s, ':')) {
        if (!take_digits(s, 2, sec)) return false;
        if (take(s, '.')) {
          size_t n = 0;
          for (; n < s.size() && s[n] >= '0' && s[n] <= '9'; ++n)
            if (n < 9) frac = frac * 10 + (s[n] - '0');
          if (n == 0) return false;
          for (size_t i = n; i < 9; ++i) frac *= 10;
          s.remove_prefix(n);
        }
      }
    }
  }
  int64_t off;
  if (s == "Z" || s == "z") {
    off = 0;
  } else if (s.empty()) {
    if (!local_off_s) return false;
    off = *local_off_s;
  } else {
    bool neg = s[0] == '-';
    int oh, om;
    if ((!take(s, '+') && !take(s, '-')) || !take_digits(s, 2, oh) || !take(s, ':') ||
        !take_digits(s, 2, om) || !s.empty() || oh > 23 || om > 59)
      return false;
    off = (neg ? -1 : 1) * (oh * 3600 + om * 60);
  }
  static constexpr int kMonthDays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  bool leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
  if (mo < 1 || mo > 12 || d < 1 || d > kMonthDays[mo - 1] || (mo == 2 && d == 29 && !leap) ||
      h > 23 || mi > 59 || sec > 59)
    return false;
  int64_t secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - off;
  ns = secs * kSecond + frac;
  return true;
}

// Go's time.ParseDuration: an optionally signed sequence of decimal numbers,
// each with an optional fraction and a unit (ns, us, µs, ms, s, m, h).
bool parse_duration(std::string_view s, int64_t& ns) {
  bool neg = false;
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) {
    neg = s[0] == '-';
    s.remove_prefix(1);
  }
  if (s == "0") {
    ns = 0;
    return true;
  }
  if (s.empty()) return false;
  static constexpr std::pair<std::string_view, int64_t> kUnits[] = {
      {"ns", 1},           {"us", 1000},        {"\u00b5s", 1000}, {"\u03bcs", 1000},
      {"ms", 1'000'000},   {"s", kSecond},      {"m", 60 * kSecond}, {"h", 3600 * kSecond},
  };
  int64_t total = 0;
  while (!s.empty()) {
    int64_t whole = 0;
    size_t n = 0;
    for (; n < s.size() && s[n] >= '0' && s[n] <= '9'; ++n)
      if (__builtin_mul_overflow(whole, 10, &whole) || __builtin_add_overflow(whole, s[n] - '0', &whole))
        return false;
    bool digits = n > 0;
    s.remove_prefix(n);
    double frac = 0, scale = 1;
    if (take(s, '.')) {
      for (n = 0; n < s.size() && s[n] >= '0' && s[n] <= '9'; ++n)
        if (scale < 1e18) frac = frac * 10 + (s[n] - '0'), scale *= 10;
      digits |= n > 0;
      s.remove_prefix(n);
    }
    if (!digits) return false;
    int64_t unit = 0;
    for (auto [name, u] : kUnits)
      if (s.starts_with(name)) {
        unit = u;
        s.remove_prefix(name.size());
        break;
      }
    if (unit == 0) return false;
    int64_t v;
    if (__builtin_mul_overflow(whole, unit, &v) ||
        __builtin_add_overflow(v, static_cast<int64_t>(frac * (static_cast<double>(unit) / scale)), &v) ||
        __builtin_add_overflow(total, v, &total))
      return false;
  }
  ns = neg ? -total : total;
  return true;
}

// ---- Encoding ----

// Length of the valid UTF-8 sequence at s[i], 0 when invalid: the ranges of
// Go's utf8.DecodeRune (no overlongs, surrogates or code points past U+10FFFF).
size_t utf8_len(std::string_view s, size_t i) {
  auto b = static_cast<unsigned char>(s[i]);
  size_t n;
  unsigned char lo = 0x80, hi = 0xBF;
  if (b >= 0xC2 && b <= 0xDF) {
    n = 2;
  } else if (b >= 0xE0 && b <= 0xEF) {
    n = 3;
    if (b == 0xE0) lo = 0xA0;
    if (b == 0xED) hi = 0x9F;
  } else if (b >= 0xF0 && b <= 0xF4) {
    n = 4;
    if (b == 0xF0) lo = 0x90;
    if (b == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    auto c = static_cast<unsigned char>(s[i + k]);
    if (c < (k == 1 ? lo : 0x80) || c > (k == 1 ? hi : 0xBF)) return 0;
  }
  return n;
}

// Appends `s` JSON-escaped (without quotes) as jsonlogbytes.go's
// ffjsonWriteJSONBytesAsString does, so the file reads byte for byte like
// Docker's: \" \\ \n \r, every other byte below 0x20 and < > & as \u00XX (\t
// too: that function has no short form for it), U+2028/U+2029 escaped, and
// each byte of invalid UTF-8 replaced by \ufffd.
void append_escaped(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  size_t start = 0, i = 0;
  while (i < s.size()) {
    auto b = static_cast<unsigned char>(s[i]);
    if (b < 0x80) {
      if (b >= 0x20 && b != '"' && b != '\\' && b != '<' && b != '>' && b != '&') {
        ++i;
        continue;
      }
      out.append(s, start, i - start);
      if (b == '"' || b == '\\') {
        out += '\\';
        out += static_cast<char>(b);
      } else if (b == '\n') {
        out += "\\n";
      } else if (b == '\r') {
        out += "\\r";
      } else {
        out += "\\u00";
        out += kHex[b >> 4];
        out += kHex[b & 0xF];
      }
      start = ++i;
      continue;
    }
    size_t n = utf8_len(s, i);
    if (n == 0) {
      out.append(s, start, i - start);
      out += "\\ufffd";
      start = ++i;
      continue;
    }
    // U+2028/U+2029 (E2 80 A8/A9): line terminators to JavaScript.
    if (n == 3 && b == 0xE2 && s[i + 1] == '\x80' && (s[i + 2] == '\xA8' || s[i + 2] == '\xA9')) {
      out.append(s, start, i - start);
      out += "\\u202";
      out += kHex[s[i + 2] & 0xF];
      start = i + 3;
    }
    i += n;
  }
  out.append(s, start, s.size() - start);
}

// Where to end a piece of a long line at most `max` bytes long without cutting
// a UTF-8 sequence in two (Docker cuts anywhere, which turns the character
// into two U+FFFD).
size_t piece_end(std::string_view s, size_t max) {
  for (size_t j = max; j > 0 && j + 3 >= max; --j) {
    auto b = static_cast<unsigned char>(s[j - 1]);
    if (b < 0x80) break;
    if (b >= 0xC0) {
      size_t n = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : 2;
      return j - 1 + n > max ? j - 1 : max;
    }
  }
  return max;
}

// ---- Reading ----

Result<UniqueFd> open_log(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd && errno != ENOENT) return sys_error("open " + path);
  return fd;
}

// Calls `line` for each line of `fd` from `pos` on, advancing `pos` past it. A
// last line without "\n" is passed too when `final`; otherwise it stays for a
// later call (the writer may be halfway through it).
template <class F>
Result<> read_forward(int fd, uint64_t& pos, bool final, F&& line) {
  constexpr size_t kChunk = 64 * 1024;
  std::string buf;
  for (uint64_t off = pos;;) {
    size_t have = buf.size();
    buf.resize(have + kChunk);
    ssize_t n;
    do n = ::pread(fd, buf.data() + have, kChunk, static_cast<off_t>(off));
    while (n < 0 && errno == EINTR);
    if (n < 0) return sys_error("read log");
    buf.resize(have + static_cast<size_t>(n));
    if (n == 0) break;
    off += static_cast<uint64_t>(n);
    size_t start = 0;
    for (size_t nl; (nl = buf.find('\n', start)) != std::string::npos; start = nl + 1)
      line(std::string_view(buf).substr(start, nl - start));
    pos += start;
    buf.erase(0, start);
  }
  if (final && !buf.empty()) {
    line(std::string_view(buf));
    pos += buf.size();
  }
  return {};
}

// Calls `line` for the lines of fd's first `end` bytes, last first, while it
// returns true. A last line without "\n" is skipped unless `final`;
// `complete_end` gets the offset just past the last complete line.
template <class F>
Result<> read_backward(int fd, uint64_t end, bool final, uint64_t& complete_end, F&& line) {
  constexpr size_t kChunk = 64 * 1024;
  std::string buf;  // the file's bytes [off, off + buf.size()): lines after them are done
  uint64_t off = end;
  bool first = true;  // the text after the last "\n" is still ahead
  complete_end = end;
  for (;;) {
    size_t stop = buf.size();
    for (size_t nl; stop > 0 && (nl = buf.rfind('\n', stop - 1)) != std::string::npos; stop = nl) {
      if (first) {
        first = false;
        complete_end = off + nl + 1;
        if (!final) continue;
      }
      if (!line(std::string_view(buf).substr(nl + 1, stop - nl - 1))) return {};
    }
    buf.resize(stop);
    if (off == 0) {
      if (first && !final) complete_end = 0;
      else if (!buf.empty()) line(std::string_view(buf));
      return {};
    }
    size_t n = static_cast<size_t>(std::min<uint64_t>(off, kChunk));
    std::string chunk(n, '\0');
    for (size_t got = 0; got < n;) {
      ssize_t r = ::pread(fd, chunk.data() + got, n - got, static_cast<off_t>(off - n + got));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) return sys_error("read log");
      if (r == 0) return fail("log file shrank while read");
      got += static_cast<size_t>(r);
    }
    off -= n;
    buf.insert(0, chunk);
  }
}

// One line of the file; false for anything that is not an entry.
bool parse_entry(std::string_view line, LogEntry& e) {
  using nlohmann::json;
  json j = json::parse(line.begin(), line.end(), nullptr, false);
  if (!j.is_object()) return false;
  auto t = j.find("time");
  if (t == j.end() || !t->is_string() || !parse_rfc3339(t->get_ref<const std::string&>(), 0, e.time_ns))
    return false;
  auto l = j.find("log"), s = j.find("stream");
  e.text = l != j.end() && l->is_string() ? l->get<std::string>() : std::string();
  e.stream = s != j.end() && s->is_string() ? s->get<std::string>() : std::string();
  return true;
}

// path.i; path itself for 0.
std::string rotated_name(const std::string& path, int i) {
  return i == 0 ? path : path + "." + std::to_string(i);
}

bool same_file(const struct stat& a, const struct stat& b) { return a.st_dev == b.st_dev && a.st_ino == b.st_ino; }

// The file written after `f`, a rotated file: the one just under it in path,
// path.1, path.2, ... A rotation renames path.(n-1) -> path.n down to path ->
// path.1, so while one is under way a single index is missing, and the files
// above it have moved but not those under it: the file under `f` skipping that
// gap is still its successor. Checked again once open (`f` at the same index,
// nothing between): files only move up, so neither moved meanwhile. Empty when
// the successor is path, not created yet; path when `f` is gone (dropped as
// the oldest).
Result<UniqueFd> successor(const std::string& path, const struct stat& f) {
  struct stat st;
  auto missing = [&](int i) { return ::stat(rotated_name(path, i).c_str(), &st) < 0; };
  for (int tries = 0; tries < 100; ++tries) {
    int k = 0, below = -1;  // f's index, and the nearest under it that exists
    for (int i = 0, gaps = 0; gaps < 2 && k == 0; ++i) {
      if (missing(i)) {
        ++gaps;
        continue;
      }
      gaps = 0;
      if (i > 0 && same_file(st, f)) k = i;
      else below = i;
    }
    if (k == 0) return open_log(path);
    if (below < 0) return UniqueFd();
    UniqueFd next = TRY(open_log(rotated_name(path, below)));
    bool still = next && !missing(k) && same_file(st, f);
    for (int i = below + 1; still && i < k; ++i) still = missing(i);
    if (still) return next;
  }
  return open_log(path);  // rotating faster than it can be followed
}

// The oldest of path, path.1, ...: where following starts when there was no
// file at first (written since, rotated or not). Checked again once open: no
// file above it.
Result<UniqueFd> oldest(const std::string& path) {
  struct stat st;
  auto missing = [&](int i) { return ::stat(rotated_name(path, i).c_str(), &st) < 0; };
  for (int tries = 0; tries < 100; ++tries) {
    int n = 0;
    for (int i = 1, gaps = 0; gaps < 2; ++i) {
      if (missing(i)) ++gaps;
      else n = i, gaps = 0;
    }
    UniqueFd fd = TRY(open_log(rotated_name(path, n)));
    if (!fd && n == 0) return fd;
    if (fd && missing(n + 1) && missing(n + 2)) return fd;
  }
  return open_log(path);
}

}  // namespace

// ---- LogWriter ----

Result<LogWriter> LogWriter::open(const std::string& path, uint64_t max_size, int max_files, bool lazy) {
  LogWriter w;
  w.path_ = path;
  // Lazily, the file is made with the first entry (put); readers take a
  // missing file for an empty one.
  w.fd_ = UniqueFd(::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC | (lazy ? 0 : O_CREAT), 0640));
  if (!w.fd_) {
    if (errno != ENOENT || !lazy) return sys_error("open " + path);
    w.size_ = 0;
  } else {
    struct stat st;
    if (::fstat(w.fd_.get(), &st) < 0) return sys_error("stat " + path);
    w.size_ = static_cast<uint64_t>(st.st_size);
  }
  w.max_size_ = max_size;
  w.max_files_ = std::max(max_files, 1);
  return w;
}

Result<> LogWriter::write(std::string_view stream, std::string_view data) {
  Pending* p = nullptr;
  for (auto& slot : pending_)
    if (slot.stream == stream || (slot.stream.empty() && !p)) p = &slot;
  if (!p) return fail("log stream " + std::string(stream) + ": only two streams are supported");
  if (p->stream.empty()) p->stream = stream;
  std::string& buf = p->line;
  while (!data.empty()) {
    size_t nl = data.find('\n');
    std::string_view line = data.substr(0, nl);
    bool complete = nl != std::string_view::npos;
    // The common case, a whole line in one read: no copy.
    if (buf.empty() && complete && line.size() <= kMaxLine) {
      TRY(put(stream, line, true));
      data.remove_prefix(nl + 1);
      continue;
    }
    size_t room = kMaxLine - buf.size();
    if (line.size() <= room) {
      buf.append(line);
      data.remove_prefix(line.size());
      if (complete) {
        data.remove_prefix(1);
        TRY(put(stream, buf, true));
        buf.clear();
      }
      continue;
    }
    // Over 16 KiB without a newline: a piece without "\n", as Docker's copier.
    buf.append(line.substr(0, room));
    data.remove_prefix(room);
    size_t end = piece_end(buf, kMaxLine);
    TRY(put(stream, std::string_view(buf).substr(0, end), false));
    buf.erase(0, end);
  }
  return {};
}

Result<> LogWriter::flush() {
  for (auto& p : pending_) {
    if (p.line.empty()) continue;
    TRY(put(p.stream, p.line, false));
    p.line.clear();
  }
  return {};
}

// {"log":"...","stream":"stdout","time":"..."}\n in one write(2), the field
// order of Docker's files.
Result<> LogWriter::put(std::string_view stream, std::string_view text, bool newline) {
  out_.clear();
  out_ += "{\"log\":\"";
  append_escaped(out_, text);
  if (newline) out_ += "\\n";
  out_ += "\",\"stream\":\"";
  append_escaped(out_, stream);
  out_ += "\",\"time\":\"";
  struct timespec ts;
  ::clock_gettime(CLOCK_REALTIME, &ts);
  char t[32];
  out_.append(t, format_time(ts.tv_sec * kSecond + ts.tv_nsec, true, t));
  out_ += "\"}\n";

  // A file is never left empty by rotation: an entry larger than max_size
  // goes to a file of its own.
  if (max_size_ > 0 && size_ > 0 && size_ + out_.size() > max_size_) TRY(rotate());
  if (!fd_) {
    fd_ = UniqueFd(::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640));
    if (!fd_) return sys_error("open " + path_);
  }
  std::string_view rest = out_;
  while (!rest.empty()) {
    ssize_t n = ::write(fd_.get(), rest.data(), rest.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return sys_error("write " + path_);
    }
    size_ += static_cast<uint64_t>(n);
    rest.remove_prefix(static_cast<size_t>(n));
  }
  return {};
}

// path.(n-2) -> path.(n-1), ..., path -> path.1, then a new path; with one file
// the file is emptied instead (loggerutils' rotate with maxFiles < 2).
Result<> LogWriter::rotate() {
  for (int i = max_files_ - 1; i >= 1; --i) {
    std::string from = i == 1 ? path_ : rotated_name(path_, i - 1), to = rotated_name(path_, i);
    if (::rename(from.c_str(), to.c_str()) < 0 && errno != ENOENT)
      return sys_error("rotate log: rename " + from + " to " + to);
  }
  UniqueFd fd(::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_TRUNC | O_CLOEXEC, 0640));
  if (!fd) return sys_error("rotate log: open " + path_);
  fd_ = std::move(fd);
  size_ = 0;
  return {};
}

// ---- Reading ----

Result<> read_logs(const std::string& path, const LogReadOptions& o,
                   const std::function<void(const LogEntry&)>& emit) {
  LogEntry e;
  bool past_until = false;  // an entry after --until: following can stop
  auto in_bounds = [&](std::string_view line) {
    if (!parse_entry(line, e)) return false;
    if (o.until_ns && e.time_ns > *o.until_ns) {
      past_until = true;
      return false;
    }
    return !o.since_ns || e.time_ns >= *o.since_ns;
  };
  auto emit_line = [&](std::string_view line) {
    if (in_bounds(line)) emit(e);
  };

  // The current file first, then path.1, path.2, ...: a rotation between the
  // opens shows as a file seen twice (skipped), never as one missed.
  UniqueFd cur = TRY(open_log(path));
  struct stat st;
  std::vector<struct stat> seen;
  if (cur) {
    if (::fstat(cur.get(), &st) < 0) return sys_error("stat " + path);
    seen.push_back(st);
  }
  std::vector<UniqueFd> rotated;  // newest first
  for (int i = 1;; ++i) {
    std::string name = rotated_name(path, i);
    UniqueFd fd = TRY(open_log(name));
    if (!fd) break;
    if (::fstat(fd.get(), &st) < 0) return sys_error("stat " + name);
    if (std::any_of(seen.begin(), seen.end(), [&](auto& s) { return same_file(s, st); })) continue;
    seen.push_back(st);
    rotated.push_back(std::move(fd));
  }

  uint64_t pos = 0;  // in `cur`: past the last complete line read
  if (!o.tail) {
    for (auto it = rotated.rbegin(); it != rotated.rend(); ++it) {
      uint64_t p = 0;
      TRY(read_forward(it->get(), p, true, emit_line));
    }
    if (cur) TRY(read_forward(cur.get(), pos, !o.follow, emit_line));
  } else {
    // Read from the end back until `tail` entries within bounds are found,
    // so a short tail of a long log reads only its end.
    std::vector<LogEntry> last;
    auto collect = [&](std::string_view line) {
      if (last.size() >= *o.tail) return false;
      if (in_bounds(line)) last.push_back(e);
      return last.size() < *o.tail;
    };
    uint64_t ignored;
    if (cur) {
      if (::fstat(cur.get(), &st) < 0) return sys_error("stat " + path);
      TRY(read_backward(cur.get(), static_cast<uint64_t>(st.st_size), !o.follow, pos, collect));
    }
    for (auto& fd : rotated) {
      if (last.size() >= *o.tail) break;
      if (::fstat(fd.get(), &st) < 0) return sys_error("stat log");
      TRY(read_backward(fd.get(), static_cast<uint64_t>(st.st_size), true, ignored, collect));
    }
    for (auto it = last.rbegin(); it != last.rend(); ++it) emit(*it);
  }
  if (!o.follow || past_until) return {};
  // The file finished last, while its successor is not open: here path.1 when
  // path was missing (between a rotation's rename and its new file).
  std::optional<struct stat> prev;
  if (!cur && !rotated.empty()) {
    if (::fstat(rotated.front().get(), &st) < 0) return sys_error("stat log");
    prev = st;
  }
  rotated.clear();

  // Follow: wake on any change in the directory (IN_MODIFY there covers
  // writes to the file), and at least every 100 ms to ask keep_following.
  // Without inotify (no instances left), a plain 100 ms poll.
  UniqueFd ino(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
  if (ino) {
    auto slash = path.find_last_of('/');
    std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
    uint32_t mask = IN_MODIFY | IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE;
    if (::inotify_add_watch(ino.get(), dir.c_str(), mask) < 0) ino.reset();
  }
  // Everything there now, across rotations since the last look.
  auto drain = [&]() -> Result<> {
    for (;;) {
      if (!cur) {
        cur = prev ? TRY(successor(path, *prev)) : TRY(oldest(path));
        pos = 0;
        if (!cur) return {};  // not created yet
      }
      TRY(read_forward(cur.get(), pos, false, emit_line));
      struct stat now, named;
      if (::fstat(cur.get(), &now) < 0) return sys_error("stat " + path);
      if (static_cast<uint64_t>(now.st_size) < pos) {  // emptied (max_files 1)
        pos = 0;
        continue;
      }
      int r = ::stat(path.c_str(), &named);
      if (r < 0 && errno != ENOENT) return sys_error("stat " + path);
      if (r == 0 && same_file(now, named)) return {};
      // Rotated: the writer never writes to a file after renaming it, so what
      // it holds now is all of it. Then on to the file after it, which is the
      // new path unless the writer rotated again meanwhile.
      TRY(read_forward(cur.get(), pos, true, emit_line));
      prev = now;
      cur = TRY(successor(path, now));
      pos = 0;
    }
  };
  // Asked before draining, so that whatever was written before it said stop
  // is read; at most every 100 ms, not on every write seen (`berth logs` looks
  // the container up in its database to answer).
  // (Not time_point::min(): `now - min` overflows, and it would never ask.)
  auto asked = std::chrono::steady_clock::now() - std::chrono::seconds(1);
  for (;;) {
    bool more = true;
    if (auto t = std::chrono::steady_clock::now(); t - asked >= std::chrono::milliseconds(100)) {
      asked = t;
      more = !o.keep_following || o.keep_following();
    }
    TRY(drain());
    if (!more || past_until) return {};
    if (ino) {
      struct pollfd pfd = {ino.get(), POLLIN, 0};
      if (::poll(&pfd, 1, 100) > 0) {
        char events[4096];
        while (::read(ino.get(), events, sizeof events) > 0) continue;
      }
    } else {
      ::poll(nullptr, 0, 100);
    }
  }
}

// ---- Time values ----

Result<int64_t> parse_log_time(std::string_view s, int64_t now_ns) {
  // As Docker's timetypes.GetTimestamp: a duration first ("0" excepted: that
  // is the epoch), then a date, then unix seconds.
  int64_t v;
  if (s != "0" && parse_duration(s, v)) return now_ns - v;
  // No zone: Docker takes the local zone's offset of now.
  time_t now_s = static_cast<time_t>(now_ns / kSecond);
  struct tm tm;
  int64_t local_off = ::localtime_r(&now_s, &tm) ? tm.tm_gmtoff : 0;
  if (parse_rfc3339(s, local_off, v)) return v;
  auto bad = [orig = s] { return fail("\"" + std::string(orig) + "\" is not a timestamp or a duration"); };
  // "1700000000.5": the fraction's digits are the first of the nanoseconds.
  std::string_view frac;
  if (auto dot = s.find('.'); dot != std::string_view::npos) {
    frac = s.substr(dot + 1);
    s = s.substr(0, dot);
    if (frac.empty()) return bad();
  }
  if (s.empty() || s.size() > 10) return bad();
  int64_t secs = 0, ns = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return bad();
    secs = secs * 10 + (c - '0');
  }
  for (size_t i = 0; i < 9; ++i) {
    if (i < frac.size() && (frac[i] < '0' || frac[i] > '9')) return bad();
    ns = ns * 10 + (i < frac.size() ? frac[i] - '0' : 0);
  }
  if (frac.size() > 9 && frac.substr(9).find_first_not_of("0123456789") != std::string_view::npos) return bad();
  if (secs > INT64_MAX / kSecond - 1) return bad();
  return secs * kSecond + ns;
}

std::string format_log_time(int64_t ns) {
  char t[32];
  return std::string(t, format_time(ns, false, t));
}

}  // namespace berth::engine
