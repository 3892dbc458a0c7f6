#include "cli/runtime/flags.h"

#include <cstdlib>

namespace berth::cli {

Result<size_t> parse_flags(const std::vector<std::string>& args, size_t pos, const std::vector<Flag>& flags,
                           const std::string& command) {
  while (pos < args.size()) {
    const std::string& a = args[pos];
    if (a == "--") return pos + 1;
    if (a.size() < 2 || a[0] != '-') return pos;
    std::string_view body(a);
    body.remove_prefix(a[1] == '-' ? 2 : 1);
    std::string_view name = body, value;
    bool has_value = false;
    if (auto eq = body.find('='); eq != std::string_view::npos) {
      name = body.substr(0, eq);
      value = body.substr(eq + 1);
      has_value = true;
    }
    const Flag* f = nullptr;
    for (auto& fl : flags)
      for (auto& n : fl.names)
        if (n == name) f = &fl;
    if (!f) return fail((command.empty() ? "" : command + ": ") + "flag provided but not defined: -" + std::string(name));
    ++pos;
    if (f->takes_value) {
      if (!has_value) {
        if (pos >= args.size()) return fail(command + ": flag needs an argument: -" + std::string(name));
        value = args[pos++];
      }
      TRY_CTX(f->set(value), "--" + std::string(name));
    } else {
      if (!has_value) value = "true";
      if (value != "true" && value != "false" && value != "1" && value != "0")
        return fail("--" + std::string(name) + ": invalid boolean value \"" + std::string(value) + "\"");
      TRY(f->set(value == "true" || value == "1" ? "true" : "false"));
    }
  }
  return pos;
}

Flag bool_flag(std::vector<std::string> names, bool* out, std::string help) {
  return Flag{std::move(names), false, [out](std::string_view v) -> Result<> {
                *out = v == "true";
                return {};
              },
              std::move(help)};
}

Flag string_flag(std::vector<std::string> names, std::string* out, std::string help) {
  return Flag{std::move(names), true, [out](std::string_view v) -> Result<> {
                *out = std::string(v);
                return {};
              },
              std::move(help)};
}

Flag list_flag(std::vector<std::string> names, std::vector<std::string>* out, std::string help) {
  return Flag{std::move(names), true, [out](std::string_view v) -> Result<> {
                out->emplace_back(v);
                return {};
              },
              std::move(help)};
}

Flag int_flag(std::vector<std::string> names, int* out, std::string help) {
  return Flag{std::move(names), true, [out](std::string_view v) -> Result<> {
                std::string s(v);
                char* end = nullptr;
                long n = std::strtol(s.c_str(), &end, 10);
                if (s.empty() || *end || n < 0 || n > 1 << 20) return fail("invalid number \"" + s + "\"");
                *out = static_cast<int>(n);
                return {};
              },
              std::move(help)};
}

std::string flags_help(const std::vector<Flag>& flags) {
  std::string out;
  for (auto& f : flags) {
    std::string line = "   ";
    for (size_t i = 0; i < f.names.size(); ++i) {
      if (i) line += ", ";
      line += (f.names[i].size() == 1 ? "-" : "--") + f.names[i];
    }
    if (f.takes_value) line += " value";
    if (line.size() < 32) line.resize(32, ' ');
    out += line + "  " + f.help + "\n";
  }
  return out;
}

}  // namespace berth::cli
