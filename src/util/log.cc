#include "util/log.h"

#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <string>

namespace berth::log {
namespace {
int g_fd = STDERR_FILENO;
// init_lazy: the file's directory (O_PATH, held) and name, opened per message.
int g_lazy_dir = -1;
std::string g_lazy_name;
Format g_format = Format::text;
bool g_debug = false;

const char* name(Level l) {
  switch (l) {
    case Level::debug: return "debug";
    case Level::info: return "info";
    case Level::warn: return "warning";
    case Level::error: return "error";
  }
  return "info";
}
}  // namespace

bool init(std::string_view path, Format format, bool debug) {
  g_format = format;
  g_debug = debug;
  if (path.empty()) return true;
  int fd = ::open(std::string(path).c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return false;
  g_fd = fd;
  return true;
}

void init_lazy(std::string_view path, Format format, bool debug) {
  g_format = format;
  g_debug = debug;
  std::string p(path);
  auto slash = p.find_last_of('/');
  std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : p.substr(0, slash));
  g_lazy_name = slash == std::string::npos ? p : p.substr(slash + 1);
  // Held by fd: a message from the container's side of a start (after its
  // pivot_root, before its exec closes this) still lands here, not in the
  // container's filesystem nor its stderr.
  g_lazy_dir = ::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
}

bool debug_enabled() { return g_debug; }

void json_escape(std::string& out, std::string_view s) {
  static const char hex[] = "0123456789abcdef";
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += hex[c >> 4];
          out += hex[c & 15];
        } else {
          out += static_cast<char>(c);
        }
    }
  }
}

void write(Level level, std::string_view msg) {
  char ts[64];
  struct timespec now;
  ::clock_gettime(CLOCK_REALTIME, &now);
  struct tm tm;
  ::gmtime_r(&now.tv_sec, &tm);
  ::strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
  std::string line;
  line.reserve(msg.size() + 80);
  if (g_format == Format::json) {
    line += "{\"level\":\"";
    line += name(level);
    line += "\",\"msg\":\"";
    json_escape(line, msg);
    line += "\",\"time\":\"";
    line += ts;
    line += "Z\"}\n";
  } else {
    line += "time=\"";
    line += ts;
    line += "Z\" level=";
    line += name(level);
    line += " msg=\"";
    json_escape(line, msg);
    line += "\"\n";
  }
  if (!g_lazy_name.empty()) {
    int fd = ::openat(g_lazy_dir, g_lazy_name.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd >= 0) {
      (void)!::write(fd, line.data(), line.size());
      ::close(fd);
    }
    return;  // never to stderr, which may be the container's by now
  }
  (void)!::write(g_fd, line.data(), line.size());
}

}  // namespace berth::log
