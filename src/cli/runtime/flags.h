// Command-line parsing with the conventions of runc's CLI (urfave/cli over Go's
// flag package), which callers such as containerd and conmon rely on:
//   -flag and --flag are the same; a value follows as "--flag=v" or "--flag v";
//   a bool flag takes "--flag" or "--flag=true|false"; flag parsing stops at the
//   first positional argument or "--" (so `exec ID sh -c ...` passes "-c" on).
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "util/error.h"

namespace berth::cli {

struct Flag {
  std::vector<std::string> names;  // without dashes: {"bundle", "b"}
  bool takes_value = false;
  std::function<Result<>(std::string_view)> set;  // value, or "true"/"false" for bools
  std::string help;
};

// Parses flags from args[pos..]; returns the index of the first positional
// argument. Unknown flags are an error naming the flag.
Result<size_t> parse_flags(const std::vector<std::string>& args, size_t pos, const std::vector<Flag>& flags,
                           const std::string& command);

// Helpers to build Flag setters.
Flag bool_flag(std::vector<std::string> names, bool* out, std::string help);
Flag string_flag(std::vector<std::string> names, std::string* out, std::string help);
Flag list_flag(std::vector<std::string> names, std::vector<std::string>* out, std::string help);
Flag int_flag(std::vector<std::string> names, int* out, std::string help);

std::string flags_help(const std::vector<Flag>& flags);

}  // namespace berth::cli
