// Logging in runc's shapes, because containerd and conmon parse them:
//   text: time="2024-05-01T10:00:00Z" level=error msg="..."
//   json: {"level":"error","msg":"...","time":"2024-05-01T10:00:00Z"}
// Without --log, lines go to stderr.
#pragma once

#include <string_view>

namespace berth::log {

enum class Level { debug, info, warn, error };
enum class Format { text, json };

// Opens `path` for appending (empty: stderr). Returns false with errno set on failure.
bool init(std::string_view path, Format format, bool debug);
// As init, but the file is made only when there is something to write (a
// monitor's log usually stays empty: no file, no inode), and opened for each
// message (a forked child that writes one shares nothing with its parent).
void init_lazy(std::string_view path, Format format, bool debug);
bool debug_enabled();
void write(Level level, std::string_view msg);
inline void debug(std::string_view m) {
  if (debug_enabled()) write(Level::debug, m);
}
inline void warn(std::string_view m) { write(Level::warn, m); }
inline void error(std::string_view m) { write(Level::error, m); }
// Escapes a string for a JSON string literal body.
void json_escape(std::string& out, std::string_view s);

}  // namespace berth::log
