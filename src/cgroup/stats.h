// Usage counters of a container's cgroup, read from cgroupfs v1 or v2, in the
// shape of runc's `events` ("stats" event data), so the tools that parse runc's
// output (containerd's runc shim, conmon, docker stats) parse ours.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "util/error.h"

namespace berth::cgroup {

struct CpuStats {
  uint64_t total = 0, kernel = 0, user = 0;  // ns
  std::vector<uint64_t> percpu, percpu_kernel, percpu_user;  // ns; empty where unknown
  uint64_t periods = 0, throttled_periods = 0, throttled_time = 0;  // ns
  uint64_t burst_periods = 0, burst_time = 0;                        // ns; not in runc's JSON
};

// Bytes. limit UINT64_MAX: unlimited ("max" on v2). On v1, swap is memory.memsw.*
// (memory+swap); on v2 it is built the same way (memory.current + memory.swap.current,
// max usage 0), as runc does.
struct MemoryEntry {
  uint64_t limit = 0, usage = 0, max = 0, failcnt = 0;
};

struct MemoryStats {
  uint64_t cache = 0;
  MemoryEntry usage, swap, kernel, kernel_tcp;
  std::map<std::string, uint64_t> raw;  // memory.stat, every key
  bool use_hierarchy = false;           // not in runc's JSON; always true on v2
};

struct PidsStats {
  uint64_t current = 0, limit = 0;  // limit 0: "max"
};

struct BlkioEntry {
  uint64_t major = 0, minor = 0;
  std::string op;  // "Read", "Write", "Sync", "Async", "Discard", "Total"
  uint64_t value = 0;
};

struct BlkioStats {
  std::vector<BlkioEntry> service_bytes, serviced;  // ioServiceBytesRecursive, ioServicedRecursive
};

struct HugetlbEntry {
  uint64_t usage = 0, max = 0, failcnt = 0;
};

struct Stats {
  CpuStats cpu;
  MemoryStats memory;
  PidsStats pids;
  BlkioStats blkio;
  std::map<std::string, HugetlbEntry> hugetlb;  // "2MB", "1GB"
  uint64_t oom_kills = 0;                      // OOM kills inside the cgroup so far; not in the JSON
};

// Directories a v1 container's counters live in, by controller name ("cpuacct",
// "memory", "pids", "blkio", "cpu", "hugetlb"); a missing key is a controller the
// host does not mount. `unified` is the hybrid host's v2 directory ("" if none):
// hugetlb is read there when no v1 hugetlb hierarchy exists.
//
// A file the kernel lacks reads as zeros; a directory named here that does not
// exist, an unreadable file, or one that does not parse is an error naming it.
Result<Stats> read_stats_v1(const std::map<std::string, std::string>& dirs, const std::string& unified = "");
// A v2 container's directory.
Result<Stats> read_stats_v2(const std::string& dir);

// runc's "stats" event data object, as a JSON text, with runc's field names and
// its omitempty rules (zero counters, empty lists and an empty raw map left out):
// {"cpu":{"usage":{...},"throttling":{...}},"memory":{...},"pids":{...},"blkio":{...},"hugetlb":{...}}
std::string stats_json(const Stats& s);

// Hugepage size names as the kernel's files spell them ("2MB", "1GB") for the
// sizes under /sys/kernel/mm/hugepages ("hugepages-2048kB"), smallest first; empty
// when the directory can't be read.
std::vector<std::string> hugepage_sizes(const std::string& sysfs = "/sys/kernel/mm/hugepages");

}  // namespace berth::cgroup
