#include "cgroup/stats.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <limits>
#include <nlohmann/json.hpp>
#include <utility>

#include "util/fs.h"

namespace berth::cgroup {

namespace {

constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

// Whitespace-separated fields of one line.
std::vector<std::string_view> fields(std::string_view line) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && is_space(line[i])) ++i;
    size_t j = i;
    while (j < line.size() && !is_space(line[j])) ++j;
    if (j > i) out.push_back(line.substr(i, j - i));
    i = j;
  }
  return out;
}

std::vector<std::string_view> lines(std::string_view text) {
  std::vector<std::string_view> out;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    std::string_view l = text.substr(0, nl);
    if (!trim(l).empty()) out.push_back(l);
    if (nl == std::string_view::npos) break;
    text.remove_prefix(nl + 1);
  }
  return out;
}

std::optional<uint64_t> to_u64(std::string_view s) {
  s = trim(s);
  if (s == "max") return kMax;
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

std::unexpected<Error> bad(const std::string& file, std::string_view what) {
  return fail("parse " + file + ": " + std::string(what));
}

Result<uint64_t> parse_u64(std::string_view s, const std::string& file) {
  auto v = to_u64(s);
  if (!v) return bad(file, "invalid number \"" + std::string(trim(s)) + "\"");
  return *v;
}

// The file's contents, or nullopt when it does not exist (a controller file the
// running kernel lacks). Any other failure to read it is an error.
Result<std::optional<std::string>> read_opt(const std::string& path) {
  auto r = read_file(path);
  if (!r) {
    if (r.error().err == ENOENT) return std::nullopt;
    return std::unexpected(std::move(r).error());
  }
  return std::optional<std::string>(std::move(*r));
}

// A single-value file; 0 when absent. "max" reads as UINT64_MAX.
Result<uint64_t> read_u64(const std::string& path) {
  auto text = TRY(read_opt(path));
  if (!text) return uint64_t{0};
  return parse_u64(*text, path);
}

// A space-separated list of numbers (cpuacct.usage_percpu); empty when absent.
Result<std::vector<uint64_t>> read_list(const std::string& path) {
  auto text = TRY(read_opt(path));
  std::vector<uint64_t> out;
  if (!text) return out;
  for (auto f : fields(*text)) out.push_back(TRY(parse_u64(f, path)));
  return out;
}

// "key value" lines (memory.stat, cpu.stat, memory.events, ...); empty when absent.
Result<std::map<std::string, uint64_t>> read_keyed(const std::string& path) {
  auto text = TRY(read_opt(path));
  std::map<std::string, uint64_t> out;
  if (!text) return out;
  for (auto l : lines(*text)) {
    auto f = fields(l);
    if (f.size() != 2) return bad(path, "malformed line \"" + std::string(trim(l)) + "\"");
    out[std::string(f[0])] = TRY(parse_u64(f[1], path));
  }
  return out;
}

uint64_t get(const std::map<std::string, uint64_t>& m, const std::string& k) {
  auto it = m.find(k);
  return it == m.end() ? 0 : it->second;
}

// A missing directory is a cgroup that is gone (or never existed): an error,
// unlike a missing file in a directory that exists.
Result<> check_dir(const std::string& dir) {
  struct stat st{};
  if (::stat(dir.c_str(), &st) < 0) return sys_error("cgroup " + dir);
  if (!S_ISDIR(st.st_mode)) return sys_error(ENOTDIR, "cgroup " + dir);
  return {};
}

uint64_t mul_div(uint64_t a, uint64_t mul, uint64_t div) {
  if (div == 0) return 0;
  unsigned __int128 v = static_cast<unsigned __int128>(a) * mul / div;
  return v > kMax ? kMax : static_cast<uint64_t>(v);
}

uint64_t sat_add(uint64_t a, uint64_t b) { return a > kMax - b ? kMax : a + b; }

Result<std::pair<uint64_t, uint64_t>> parse_dev(std::string_view s, const std::string& file) {
  size_t c = s.find(':');
  if (c == std::string_view::npos) return bad(file, "invalid device \"" + std::string(s) + "\"");
  auto maj = to_u64(s.substr(0, c)), min = to_u64(s.substr(c + 1));
  if (!maj || !min || *maj == kMax || *min == kMax) return bad(file, "invalid device \"" + std::string(s) + "\"");
  return std::pair{*maj, *min};
}

// v1 blkio lists: "MAJ:MIN Op value" lines, then a final "Total value".
// nullopt when the file does not exist.
Result<std::optional<std::vector<BlkioEntry>>> read_blkio_v1(const std::string& path) {
  auto text = TRY(read_opt(path));
  if (!text) return std::nullopt;
  std::vector<BlkioEntry> out;
  for (auto l : lines(*text)) {
    auto f = fields(l);
    if (f.size() == 2 && f[0] == "Total") continue;
    if (f.size() != 3) return bad(path, "malformed line \"" + std::string(trim(l)) + "\"");
    auto [maj, min] = TRY(parse_dev(f[0], path));
    out.push_back({maj, min, std::string(f[1]), TRY(parse_u64(f[2], path))});
  }
  return std::optional<std::vector<BlkioEntry>>(std::move(out));
}

// v1 memory.<prefix>usage_in_bytes, max_usage_in_bytes, limit_in_bytes, failcnt.
Result<MemoryEntry> read_memory_entry_v1(const std::string& dir, const std::string& prefix) {
  MemoryEntry e;
  std::string p = dir + "/memory." + prefix;
  e.usage = TRY(read_u64(p + "usage_in_bytes"));
  e.max = TRY(read_u64(p + "max_usage_in_bytes"));
  e.limit = TRY(read_u64(p + "limit_in_bytes"));
  e.failcnt = TRY(read_u64(p + "failcnt"));
  return e;
}

Result<> read_cpu_v1(const std::map<std::string, std::string>& dirs, Stats& s) {
  if (auto it = dirs.find("cpuacct"); it != dirs.end()) {
    const std::string& d = it->second;
    TRY(check_dir(d));
    s.cpu.total = TRY(read_u64(d + "/cpuacct.usage"));
    s.cpu.percpu = TRY(read_list(d + "/cpuacct.usage_percpu"));
    s.cpu.percpu_kernel = TRY(read_list(d + "/cpuacct.usage_percpu_sys"));
    s.cpu.percpu_user = TRY(read_list(d + "/cpuacct.usage_percpu_user"));
    if (s.cpu.percpu_kernel.empty() && s.cpu.percpu_user.empty()) {
      // Kernels with cpuacct.usage_all but not the per-mode percpu files:
      // a "cpu user system" header, then one line per CPU.
      std::string all = d + "/cpuacct.usage_all";
      if (auto text = TRY(read_opt(all))) {
        bool header = true;
        for (auto l : lines(*text)) {
          auto f = fields(l);
          if (header && !f.empty() && f[0] == "cpu") {
            header = false;
            continue;
          }
          header = false;
          if (f.size() != 3) return bad(all, "malformed line \"" + std::string(trim(l)) + "\"");
          TRY(parse_u64(f[0], all));
          s.cpu.percpu_user.push_back(TRY(parse_u64(f[1], all)));
          s.cpu.percpu_kernel.push_back(TRY(parse_u64(f[2], all)));
        }
      }
    }
    std::string statf = d + "/cpuacct.stat";
    auto st = TRY(read_keyed(statf));
    long hz = ::sysconf(_SC_CLK_TCK);
    if (hz <= 0) hz = 100;
    s.cpu.user = mul_div(get(st, "user"), 1000000000ull, static_cast<uint64_t>(hz));
    s.cpu.kernel = mul_div(get(st, "system"), 1000000000ull, static_cast<uint64_t>(hz));
  }
  if (auto it = dirs.find("cpu"); it != dirs.end()) {
    TRY(check_dir(it->second));
    auto st = TRY(read_keyed(it->second + "/cpu.stat"));
    s.cpu.periods = get(st, "nr_periods");
    s.cpu.throttled_periods = get(st, "nr_throttled");
    s.cpu.throttled_time = get(st, "throttled_time");
    s.cpu.burst_periods = get(st, "nr_bursts");
    s.cpu.burst_time = get(st, "burst_time");
  }
  return {};
}

Result<> read_memory_v1(const std::string& d, Stats& s) {
  TRY(check_dir(d));
  auto& m = s.memory;
  m.usage = TRY(read_memory_entry_v1(d, ""));
  m.swap = TRY(read_memory_entry_v1(d, "memsw."));  // memory+swap, as runc reports it
  m.kernel = TRY(read_memory_entry_v1(d, "kmem."));
  m.kernel_tcp = TRY(read_memory_entry_v1(d, "kmem.tcp."));
  m.raw = TRY(read_keyed(d + "/memory.stat"));
  m.cache = m.raw.contains("total_cache") ? m.raw["total_cache"] : get(m.raw, "cache");
  m.use_hierarchy = TRY(read_u64(d + "/memory.use_hierarchy")) != 0;
  auto oom = TRY(read_keyed(d + "/memory.oom_control"));
  s.oom_kills = get(oom, "oom_kill");
  return {};
}

Result<> read_pids(const std::string& d, Stats& s) {
  TRY(check_dir(d));
  s.pids.current = TRY(read_u64(d + "/pids.current"));
  s.pids.limit = TRY(read_u64(d + "/pids.max"));
  if (s.pids.limit == kMax) s.pids.limit = 0;
  return {};
}

Result<> read_blkio_v1_dir(const std::string& d, Stats& s) {
  TRY(check_dir(d));
  // The throttle counters exist with every I/O scheduler; the CFQ (removed in
  // 5.0) and BFQ ones only with theirs.
  for (const char* prefix : {"blkio.throttle.", "blkio.", "blkio.bfq."}) {
    auto bytes = TRY(read_blkio_v1(d + "/" + prefix + "io_service_bytes_recursive"));
    auto ios = TRY(read_blkio_v1(d + "/" + prefix + "io_serviced_recursive"));
    if (!bytes && !ios) continue;
    if (bytes) s.blkio.service_bytes = std::move(*bytes);
    if (ios) s.blkio.serviced = std::move(*ios);
    break;
  }
  return {};
}

// hugetlb.<size>.current / .events on a v2 directory; a size without the files
// (controller not enabled there) gets no entry.
Result<> read_hugetlb_v2(const std::string& d, Stats& s) {
  for (auto& size : hugepage_sizes()) {
    std::string p = d + "/hugetlb." + size;
    auto cur = TRY(read_opt(p + ".current"));
    if (!cur) continue;
    HugetlbEntry e;
    e.usage = TRY(parse_u64(*cur, p + ".current"));
    e.failcnt = get(TRY(read_keyed(p + ".events")), "max");
    s.hugetlb[size] = e;
  }
  return {};
}

}  // namespace

Result<Stats> read_stats_v1(const std::map<std::string, std::string>& dirs, const std::string& unified) {
  Stats s;
  TRY(read_cpu_v1(dirs, s));
  if (auto it = dirs.find("memory"); it != dirs.end()) TRY(read_memory_v1(it->second, s));
  if (auto it = dirs.find("pids"); it != dirs.end()) TRY(read_pids(it->second, s));
  if (auto it = dirs.find("blkio"); it != dirs.end()) TRY(read_blkio_v1_dir(it->second, s));
  if (auto it = dirs.find("hugetlb"); it != dirs.end()) {
    TRY(check_dir(it->second));
    for (auto& size : hugepage_sizes()) {
      std::string p = it->second + "/hugetlb." + size + ".";
      HugetlbEntry e;
      e.usage = TRY(read_u64(p + "usage_in_bytes"));
      e.max = TRY(read_u64(p + "max_usage_in_bytes"));
      e.failcnt = TRY(read_u64(p + "failcnt"));
      s.hugetlb[size] = e;
    }
  } else if (!unified.empty()) {
    TRY(check_dir(unified));
    TRY(read_hugetlb_v2(unified, s));
  }
  return s;
}

Result<Stats> read_stats_v2(const std::string& dir) {
  Stats s;
  TRY(check_dir(dir));

  auto cpu = TRY(read_keyed(dir + "/cpu.stat"));
  s.cpu.total = mul_div(get(cpu, "usage_usec"), 1000, 1);
  s.cpu.user = mul_div(get(cpu, "user_usec"), 1000, 1);
  s.cpu.kernel = mul_div(get(cpu, "system_usec"), 1000, 1);
  s.cpu.periods = get(cpu, "nr_periods");
  s.cpu.throttled_periods = get(cpu, "nr_throttled");
  s.cpu.throttled_time = mul_div(get(cpu, "throttled_usec"), 1000, 1);
  s.cpu.burst_periods = get(cpu, "nr_bursts");
  s.cpu.burst_time = mul_div(get(cpu, "burst_usec"), 1000, 1);

  auto& m = s.memory;
  m.usage.usage = TRY(read_u64(dir + "/memory.current"));
  m.usage.max = TRY(read_u64(dir + "/memory.peak"));
  // No memory.max at all (the root cgroup): unlimited, as "max" reads.
  auto lim = TRY(read_opt(dir + "/memory.max"));
  m.usage.limit = lim ? TRY(parse_u64(*lim, dir + "/memory.max")) : kMax;
  auto events = TRY(read_keyed(dir + "/memory.events"));
  m.usage.failcnt = get(events, "max");
  s.oom_kills = get(events, "oom_kill");
  // v2 counts swap alone; runc reports it as v1's memsw did: memory + swap,
  // with no peak (a combined peak cannot be derived from two separate ones).
  if (auto cur = TRY(read_opt(dir + "/memory.swap.current"))) {
    uint64_t swap = TRY(parse_u64(*cur, dir + "/memory.swap.current"));
    auto slim = TRY(read_opt(dir + "/memory.swap.max"));
    uint64_t swap_limit = slim ? TRY(parse_u64(*slim, dir + "/memory.swap.max")) : kMax;
    m.swap.usage = sat_add(m.usage.usage, swap);
    m.swap.limit = (swap_limit == kMax || m.usage.limit == kMax) ? kMax : sat_add(m.usage.limit, swap_limit);
    m.swap.failcnt = get(TRY(read_keyed(dir + "/memory.swap.events")), "max");
  }
  m.raw = TRY(read_keyed(dir + "/memory.stat"));
  m.cache = get(m.raw, "file");
  m.use_hierarchy = true;  // v2 is always hierarchical

  s.pids.current = TRY(read_u64(dir + "/pids.current"));
  s.pids.limit = TRY(read_u64(dir + "/pids.max"));
  if (s.pids.limit == kMax) s.pids.limit = 0;

  std::string iof = dir + "/io.stat";
  if (auto text = TRY(read_opt(iof))) {
    for (auto l : lines(*text)) {
      auto f = fields(l);
      auto [maj, min] = TRY(parse_dev(f[0], iof));
      for (size_t i = 1; i < f.size(); ++i) {
        size_t eq = f[i].find('=');
        if (eq == std::string_view::npos) return bad(iof, "malformed field \"" + std::string(f[i]) + "\"");
        std::string_view k = f[i].substr(0, eq), v = f[i].substr(eq + 1);
        std::vector<BlkioEntry>* list = nullptr;
        const char* op = nullptr;
        if (k == "rbytes") list = &s.blkio.service_bytes, op = "Read";
        else if (k == "wbytes") list = &s.blkio.service_bytes, op = "Write";
        else if (k == "dbytes") list = &s.blkio.service_bytes, op = "Discard";
        else if (k == "rios") list = &s.blkio.serviced, op = "Read";
        else if (k == "wios") list = &s.blkio.serviced, op = "Write";
        else if (k == "dios") list = &s.blkio.serviced, op = "Discard";
        else continue;  // iocost/latency keys (cost.vrate=100.00, ...)
        list->push_back({maj, min, op, TRY(parse_u64(v, iof))});
      }
    }
  }

  TRY(read_hugetlb_v2(dir, s));
  return s;
}

std::string stats_json(const Stats& s) {
  using J = nlohmann::ordered_json;
  // Mirrors runc's types.Stats encoding: a field tagged omitempty is left out
  // when zero or empty; nested structs are always present (Go never omits them).
  auto put = [](J& o, const char* k, uint64_t v) {
    if (v != 0) o[k] = v;
  };
  auto put_list = [](J& o, const char* k, const std::vector<uint64_t>& v) {
    if (!v.empty()) o[k] = v;
  };

  J usage = J::object();
  put(usage, "total", s.cpu.total);
  put_list(usage, "percpu", s.cpu.percpu);
  put_list(usage, "percpu_kernel", s.cpu.percpu_kernel);
  put_list(usage, "percpu_user", s.cpu.percpu_user);
  usage["kernel"] = s.cpu.kernel;
  usage["user"] = s.cpu.user;
  J throttling = J::object();
  put(throttling, "periods", s.cpu.periods);
  put(throttling, "throttledPeriods", s.cpu.throttled_periods);
  put(throttling, "throttledTime", s.cpu.throttled_time);

  auto entry = [&](const MemoryEntry& e) {
    J o = J::object();
    o["limit"] = e.limit;
    put(o, "usage", e.usage);
    put(o, "max", e.max);
    o["failcnt"] = e.failcnt;
    return o;
  };
  J memory = J::object();
  put(memory, "cache", s.memory.cache);
  memory["usage"] = entry(s.memory.usage);
  memory["swap"] = entry(s.memory.swap);
  memory["kernel"] = entry(s.memory.kernel);
  memory["kernelTCP"] = entry(s.memory.kernel_tcp);
  if (!s.memory.raw.empty()) {
    J raw = J::object();
    for (auto& [k, v] : s.memory.raw) raw[k] = v;
    memory["raw"] = std::move(raw);
  }

  J pids = J::object();
  put(pids, "current", s.pids.current);
  put(pids, "limit", s.pids.limit);

  auto blk = [&](const std::vector<BlkioEntry>& v) {
    J a = J::array();
    for (auto& e : v) {
      J o = J::object();
      put(o, "major", e.major);
      put(o, "minor", e.minor);
      if (!e.op.empty()) o["op"] = e.op;
      put(o, "value", e.value);
      a.push_back(std::move(o));
    }
    return a;
  };
  J blkio = J::object();
  if (!s.blkio.service_bytes.empty()) blkio["ioServiceBytesRecursive"] = blk(s.blkio.service_bytes);
  if (!s.blkio.serviced.empty()) blkio["ioServicedRecursive"] = blk(s.blkio.serviced);

  J hugetlb = J::object();
  for (auto& [size, e] : s.hugetlb) {
    J o = J::object();
    put(o, "usage", e.usage);
    put(o, "max", e.max);
    o["failcnt"] = e.failcnt;
    hugetlb[size] = std::move(o);
  }

  J out = J::object();
  out["cpu"] = {{"usage", std::move(usage)}, {"throttling", std::move(throttling)}};
  out["memory"] = std::move(memory);
  out["pids"] = std::move(pids);
  out["blkio"] = std::move(blkio);
  out["hugetlb"] = std::move(hugetlb);
  return out.dump();
}

std::vector<std::string> hugepage_sizes(const std::string& sysfs) {
  std::vector<std::pair<uint64_t, std::string>> sizes;
  if (DIR* d = ::opendir(sysfs.c_str())) {
    while (auto* e = ::readdir(d)) {
      std::string_view n(e->d_name);
      constexpr std::string_view pre = "hugepages-", suf = "kB";
      if (!n.starts_with(pre) || !n.ends_with(suf)) continue;
      auto kb = to_u64(n.substr(pre.size(), n.size() - pre.size() - suf.size()));
      if (!kb || *kb == 0 || *kb == kMax) continue;
      // The kernel's hugetlb cgroup file names: the largest unit that the size
      // is at least one of (sizes are powers of two, so it divides evenly).
      std::string name;
      if (*kb >= (1u << 20)) name = std::to_string(*kb >> 20) + "GB";
      else if (*kb >= (1u << 10)) name = std::to_string(*kb >> 10) + "MB";
      else name = std::to_string(*kb) + "KB";
      sizes.emplace_back(*kb, std::move(name));
    }
    ::closedir(d);
  }
  std::sort(sizes.begin(), sizes.end());
  std::vector<std::string> out;
  for (auto& [kb, name] : sizes) out.push_back(std::move(name));
  return out;
}

}  // namespace berth::cgroup
