// Text from images and containers shown to people.
#pragma once

#include <cstdio>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace berth {

// A hostile name printed on one line: control bytes and backslashes escaped.
inline std::string printable(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f || c == '\\') {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

// A tar entry's name as path components: "./" prefixes, empty and "."
// components dropped; absolute names and ".." refused (nullopt).
inline std::optional<std::vector<std::string>> entry_components(std::string_view name) {
  if (name.empty() || name.front() == '/') return std::nullopt;
  std::vector<std::string> comps;
  while (!name.empty()) {
    auto slash = name.find('/');
    std::string_view c = name.substr(0, slash);
    if (c == "..") return std::nullopt;
    if (!c.empty() && c != ".") comps.emplace_back(c);
    if (slash == std::string_view::npos) break;
    name.remove_prefix(slash + 1);
  }
  return comps;
}

}  // namespace berth
