// berth-runtime update and events.
#include <unistd.h>

#include <cstdio>
#include <optional>

#include "cli/runtime/commands.h"
#include "cli/runtime/flags.h"
#include "oci/spec.h"
#include "util/fs.h"

namespace berth::cli {

namespace {

// A flag whose value parses into an optional field; `parse` names the value.
template <class T, class Parse>
Flag value_flag(std::vector<std::string> names, std::optional<T>* out, Parse parse, std::string help) {
  std::string name = names.front();
  return Flag{std::move(names), true,
              [out, parse, name](std::string_view v) -> Result<> {
                auto r = parse(v);
                if (!r) return std::unexpected(std::move(r).error().context("--" + name));
                *out = static_cast<T>(*r);
                return {};
              },
              std::move(help)};
}

Result<int64_t> parse_int(std::string_view v) {
  std::string s(v);
  char* end = nullptr;
  errno = 0;
  long long n = std::strtoll(s.c_str(), &end, 10);
  if (s.empty() || *end || errno) return fail("invalid number \"" + s + "\"");
  return n;
}

Result<int64_t> parse_uint(std::string_view v) {
  int64_t n = TRY(parse_int(v));
  if (n < 0) return fail("\"" + std::string(v) + "\" must not be negative");
  return n;
}

}  // namespace

Result<int64_t> parse_bytes(std::string_view v) {
  std::string s(v);
  if (s == "-1") return -1;
  size_t i = 0;
  while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) ++i;
  if (i == 0) return fail("invalid size \"" + s + "\"");
  double n = std::strtod(s.substr(0, i).c_str(), nullptr);
  std::string unit;
  for (char c : s.substr(i))
    if (c != ' ') unit += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  // "k", "kb", "kib" alike: binary multiples, as docker and runc read them.
  if (unit.size() > 1 && unit.back() == 'b') unit.pop_back();
  if (unit.size() > 1 && unit.back() == 'i') unit.pop_back();
  static const std::pair<const char*, double> units[] = {{"", 1},
                                                         {"b", 1},
                                                         {"k", 1024.0},
                                                         {"m", 1024.0 * 1024},
                                                         {"g", 1024.0 * 1024 * 1024},
                                                         {"t", 1024.0 * 1024 * 1024 * 1024},
                                                         {"p", 1024.0 * 1024 * 1024 * 1024 * 1024}};
  for (auto& [u, mult] : units)
    if (unit == u) return static_cast<int64_t>(n * mult);
  return fail("invalid size \"" + s + "\": unknown unit");
}

Result<int64_t> parse_duration_ms(std::string_view v) {
  std::string s(v);
  if (s.empty()) return fail("invalid duration \"\"");
  double total = 0;
  size_t i = 0;
  while (i < s.size()) {
    size_t j = i;
    while (j < s.size() && (std::isdigit(static_cast<unsigned char>(s[j])) || s[j] == '.')) ++j;
    if (j == i) return fail("invalid duration \"" + s + "\"");
    double n = std::strtod(s.substr(i, j - i).c_str(), nullptr);
    size_t k = j;
    while (k < s.size() && std::isalpha(static_cast<unsigned char>(s[k]))) ++k;
    std::string unit = s.substr(j, k - j);
    double ms;
    if (unit == "ns") ms = n / 1e6;
    else if (unit == "us" || unit == "µs") ms = n / 1e3;
    else if (unit == "ms") ms = n;
    else if (unit == "s") ms = n * 1e3;
    else if (unit == "m") ms = n * 60e3;
    else if (unit == "h") ms = n * 3600e3;
    else return fail("invalid duration \"" + s + "\": unknown unit \"" + unit + "\"");
    total += ms;
    i = k;
  }
  return static_cast<int64_t>(total);
}

Result<int> cmd_update(const runtime::Globals& g, const std::vector<std::string>& args, size_t pos) {
  std::string file;
  oci::Resources::Memory mem;
  oci::Resources::Cpu cpu;
  std::optional<int64_t> pids, blkio_weight;
  std::string l3, membw;
  std::vector<Flag> flags = {
      string_flag({"resources", "r"}, &file, "a JSON file of linux.resources to apply, or - for stdin"),
      value_flag({"blkio-weight"}, &blkio_weight, parse_uint, "block IO weight (10 to 1000)"),
      value_flag({"cpu-period"}, &cpu.period, parse_uint, "CFS period in microseconds"),
      value_flag({"cpu-quota"}, &cpu.quota, parse_int, "CFS quota in microseconds per period (-1: none)"),
      value_flag({"cpu-share"}, &cpu.shares, parse_uint, "CPU shares (relative weight)"),
      value_flag({"cpu-rt-period"}, &cpu.realtime_period, parse_uint, "realtime period in microseconds"),
      value_flag({"cpu-rt-runtime"}, &cpu.realtime_runtime, parse_int, "realtime runtime in microseconds"),
      value_flag({"cpu-burst"}, &cpu.burst, parse_uint, "CFS burst in microseconds"),
      value_flag({"cpu-idle"}, &cpu.idle, parse_int, "1: the SCHED_IDLE policy for the cgroup"),
      string_flag({"cpuset-cpus"}, &cpu.cpus, "CPUs to run on (0-3, 0,1)"),
      string_flag({"cpuset-mems"}, &cpu.mems, "memory nodes to allocate from (0-3, 0,1)"),
      value_flag({"memory"}, &mem.limit, parse_bytes, "memory limit (bytes, or with k/m/g)"),
      value_flag({"memory-reservation"}, &mem.reservation, parse_bytes, "memory soft limit"),
      value_flag({"memory-swap"}, &mem.swap, parse_bytes, "memory plus swap limit (-1: unlimited)"),
      value_flag({"kernel-memory"}, &mem.kernel, parse_bytes, "kernel memory limit (deprecated)"),
      value_flag({"kernel-memory-tcp"}, &mem.kernel_tcp, parse_bytes, "kernel TCP buffer limit (deprecated)"),
      value_flag({"pids-limit"}, &pids, parse_int, "maximum number of processes (-1: unlimited)"),
      string_flag({"l3-cache-schema"}, &l3, "Intel RDT L3 cache schema"),
      string_flag({"mem-bw-schema"}, &membw, "Intel RDT memory bandwidth schema"),
  };
  pos = TRY(parse_flags(args, pos, flags, "update"));
  if (pos >= args.size()) return fail("update: requires a container id");
  if (pos + 1 != args.size()) return fail("update: takes exactly one container id");
  if (!l3.empty() || !membw.empty()) return fail("update: Intel RDT (--l3-cache-schema, --mem-bw-schema) is not supported");
  oci::Resources res;
  if (!file.empty()) {
    // As runc: the file (or stdin) is the whole update, flags are not merged.
    std::string text = file == "-" ? TRY_CTX(read_fd(STDIN_FILENO), "read resources from stdin")
                                   : TRY_CTX(read_file(file), "--resources " + file);
    res = TRY_CTX(oci::parse_resources(text), "--resources " + file);
  } else {
    if (mem.limit || mem.reservation || mem.swap || mem.kernel || mem.kernel_tcp) res.memory = mem;
    if (cpu.period || cpu.quota || cpu.shares || cpu.realtime_period || cpu.realtime_runtime || cpu.burst ||
        cpu.idle || !cpu.cpus.empty() || !cpu.mems.empty())
      res.cpu = cpu;
    if (pids) res.pids = oci::Resources::Pids{*pids};
    if (blkio_weight) {
      res.block_io.emplace();
      res.block_io->weight = static_cast<uint16_t>(*blkio_weight);
    }
  }
  TRY(runtime::update(g, args[pos], res));
  return 0;
}

Result<int> cmd_events(const runtime::Globals& g, const std::vector<std::string>& args, size_t pos) {
  bool stats = false;
  std::string interval = "5s";
  pos = TRY(parse_flags(args, pos,
                        {bool_flag({"stats"}, &stats, "print one sample of the container's statistics and exit"),
                         string_flag({"interval"}, &interval, "time between stats samples (default 5s)")},
                        "events"));
  if (pos >= args.size()) return fail("events: requires a container id");
  if (pos + 1 != args.size()) return fail("events: takes exactly one container id");
  if (stats) {
    std::string ev = TRY(runtime::stats_event(g, args[pos]));
    std::printf("%s\n", ev.c_str());
    return 0;
  }
  int64_t ms = TRY_CTX(parse_duration_ms(interval), "--interval");
  if (ms <= 0) return fail("--interval: must be positive, not \"" + interval + "\"");
  TRY(runtime::events(g, args[pos], static_cast<int>(ms), [](const std::string& e) {
    std::printf("%s\n", e.c_str());
    std::fflush(stdout);
  }));
  return 0;
}

}  // namespace berth::cli
