#include "cgroup/cgroup.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include <set>

#include "cgroup/internal.h"
#include "cgroup/systemd.h"
#include "util/fs.h"
#include "util/log.h"

namespace berth::cgroup {

namespace {

// Controller names a v1 super-options list may carry; everything else there is a
// mount option (rw, relatime, ...).
const std::set<std::string>& v1_controller_names() {
  static const std::set<std::string> n = {"cpu",     "cpuacct", "cpuset", "memory",    "devices",
                                          "freezer", "blkio",   "pids",   "net_cls",   "net_prio",
                                          "hugetlb", "perf_event", "rdma", "misc"};
  return n;
}

}  // namespace

namespace detail {

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

Result<std::vector<pid_t>> pids_recursive(const std::string& top) {
  std::vector<pid_t> out;
  std::vector<std::string> stack = {top};
  while (!stack.empty()) {
    std::string d = stack.back();
    stack.pop_back();
    auto text = read_file(d + "/cgroup.procs");
    if (!text) {
      if (d == top) return std::unexpected(std::move(text).error());
      continue;  // a sub-cgroup removed while we walk
    }
    for (auto& line : split(*text, '\n'))
      if (!line.empty()) out.push_back(static_cast<pid_t>(std::stol(line)));
    if (DIR* dd = ::opendir(d.c_str())) {
      while (auto* e = ::readdir(dd))
        if (e->d_type == DT_DIR && e->d_name[0] != '.') stack.push_back(d + "/" + e->d_name);
      ::closedir(dd);
    }
  }
  return out;
}

// A cgroup directory holds only control files, which rmdir ignores, so only
// subdirectories recurse.
Result<> rmdir_tree(const std::string& dir) {
  // Usually there is nothing beneath: try the one rmdir before walking.
  if (::rmdir(dir.c_str()) == 0 || errno == ENOENT) return {};
  if (DIR* d = ::opendir(dir.c_str())) {
    while (auto* e = ::readdir(d)) {
      if (e->d_type != DT_DIR) continue;
      std::string_view n(e->d_name);
      if (n == "." || n == "..") continue;
      if (auto r = rmdir_tree(dir + "/" + e->d_name); !r) {
        ::closedir(d);
        return r;
      }
    }
    ::closedir(d);
  }
  // A cgroup whose last task just exited can report EBUSY for a moment.
  for (int i = 0; i < 200; ++i) {
    if (::rmdir(dir.c_str()) == 0 || errno == ENOENT) return {};
    if (errno != EBUSY) return sys_error("rmdir " + dir);
    struct timespec ts = {0, 1000000};
    ::nanosleep(&ts, nullptr);
  }
  return sys_error(EBUSY, "rmdir " + dir);
}

std::vector<std::string> missing_levels(const std::string& root, const std::string& path) {
  std::vector<std::string> levels;
  std::string cur = root;
  for (auto& c : split(path, '/')) {
    if (c.empty()) continue;
    cur += "/" + c;
    if (!path_exists(cur)) levels.push_back(cur);
  }
  return levels;
}

void remove_levels(const std::vector<std::string>& made) {
  for (auto it = made.rbegin(); it != made.rend(); ++it) ::rmdir(it->c_str());
}

Result<> wait_until(const std::string& file, const std::string& value, bool keyed, int timeout_ms) {
  struct timespec start, now;
  ::clock_gettime(CLOCK_MONOTONIC, &start);
  for (;;) {
    auto text = TRY(read_file(file));
    if (keyed) {
      for (auto& line : split(text, '\n'))
        if (line == value) return {};
    } else if (trim(text) == value) {
      return {};
    }
    ::clock_gettime(CLOCK_MONOTONIC, &now);
    if ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000 >= timeout_ms) break;
    struct timespec ts = {0, 1000000};
    ::nanosleep(&ts, nullptr);
  }
  return fail("timed out waiting for " + file + " to read \"" + value + "\"");
}

Result<std::vector<unsigned>> parse_list(const std::string& list) {
  std::vector<unsigned> out;
  for (auto& part : split(trim(list), ',')) {
    if (part.empty()) continue;
    auto dash = part.find('-');
    auto num = [&](const std::string& t) -> Result<unsigned> {
      if (t.empty() || t.size() > 6 || t.find_first_not_of("0123456789") != std::string::npos)
        return fail("\"" + list + "\" is not a list such as 0-3,6");
      return static_cast<unsigned>(std::stoul(t));
    };
    unsigned lo = TRY(num(part.substr(0, dash)));
    unsigned hi = dash == std::string::npos ? lo : TRY(num(part.substr(dash + 1)));
    if (hi < lo) return fail("\"" + list + "\": range " + part + " runs backwards");
    for (unsigned i = lo; i <= hi; ++i) out.push_back(i);
  }
  return out;
}

Result<> check_subset(const std::string& field, const std::string& want, const std::string& allowed_file) {
  auto w = TRY_CTX(parse_list(want), field);
  auto allowed_text = read_file(allowed_file);
  if (!allowed_text) return {};  // nothing to check against; the kernel decides
  auto allowed = TRY(parse_list(*allowed_text));
  std::set<unsigned> a(allowed.begin(), allowed.end());
  for (unsigned v : w)
    if (!a.count(v))
      return fail(field + " \"" + want + "\": " + std::to_string(v) + " is not among this host's " +
                  trim(*allowed_text));
  return {};
}

Result<std::string> hugepage_size(const oci::HugepageLimit& l, size_t index) {
  auto sizes = hugepage_sizes();
  for (auto& s : sizes)
    if (s == l.page_size) return s;
  std::string have;
  for (auto& s : sizes) have += (have.empty() ? "" : ", ") + s;
  return fail("linux.resources.hugepageLimits[" + std::to_string(index) + "].pageSize \"" + l.page_size +
              "\": not a huge page size of this host" + (have.empty() ? " (it has none)" : " (" + have + ")"));
}

Result<> Journal::write(const std::string& file, const std::string& value, const std::string& field) {
  if (!record_) return write_undo(file, value, field, "");
  auto old = read_file(file);
  return write_undo(file, value, field, old ? trim(*old) : std::string());
}

Result<> Journal::write_undo(const std::string& file, const std::string& value, const std::string& field,
                             std::string restore) {
  if (auto r = write_file(file, value); !r) {
    if (r.error().err == ENOENT)
      return fail(field + " \"" + value + "\": this host's cgroup has no " + file.substr(file.rfind('/') + 1));
    return sys_error(r.error().err, field + " \"" + value + "\"");
  }
  if (!restore.empty()) undo_.emplace_back(file, std::move(restore));
  return {};
}

Result<> Journal::write_line(const std::string& file, const std::string& key, const std::string& value,
                             const std::string& field, const std::string& none) {
  if (!record_) return write_undo(file, key + " " + value, field, "");
  std::string restore = key + " " + none;
  if (auto old = read_file(file))
    for (auto& line : split(*old, '\n'))
      if (line.rfind(key + " ", 0) == 0) restore = line;
  return write_undo(file, key + " " + value, field, restore);
}

void Journal::rollback() {
  for (auto it = undo_.rbegin(); it != undo_.rend(); ++it) {
    // Multi-line values (io.weight) go back one line at a time.
    for (auto& line : split(it->second, '\n'))
      if (!line.empty()) (void)write_file(it->first, line);
  }
  undo_.clear();
}

std::string device_rule(const oci::DeviceCgroupRule& r) {
  std::string t = r.type.empty() ? "a" : r.type;
  std::string maj = r.major && *r.major >= 0 ? std::to_string(*r.major) : "*";
  std::string min = r.minor && *r.minor >= 0 ? std::to_string(*r.minor) : "*";
  if (t == "a" && maj == "*" && min == "*") return "a";
  return t + " " + maj + ":" + min + " " + (r.access.empty() ? "rwm" : r.access);
}

Result<> check_device_rule(const oci::DeviceCgroupRule& r, size_t index) {
  std::string at = "linux.resources.devices[" + std::to_string(index) + "]";
  if (!r.type.empty() && r.type != "a" && r.type != "b" && r.type != "c")
    return fail(at + ".type \"" + r.type + "\": expected a, b or c");
  if (r.access.size() > 3 || r.access.find_first_not_of("rwm") != std::string::npos)
    return fail(at + ".access \"" + r.access + "\": expected letters from rwm");
  return {};
}

std::string rdma_limits(const std::pair<std::optional<uint32_t>, std::optional<uint32_t>>& lim) {
  std::string v;
  if (lim.first) v += "hca_handle=" + std::to_string(*lim.first);
  if (lim.second) v += std::string(v.empty() ? "" : " ") + "hca_object=" + std::to_string(*lim.second);
  return v;
}

uint64_t keyed_value(const std::string& text, const std::string& key) {
  for (auto& line : split(text, '\n')) {
    if (line.size() > key.size() && line.compare(0, key.size(), key) == 0 && line[key.size()] == ' ')
      return std::strtoull(line.c_str() + key.size() + 1, nullptr, 10);
  }
  return 0;
}

}  // namespace detail

bool has_controller(const Hierarchy& h, const std::string& name) {
  for (auto& c : h.controllers)
    if (c == name) return true;
  return false;
}

Layout parse_layout(const std::string& mountinfo) {
  Layout l;
  bool root_is_v2 = false;
  for (auto& line : split(mountinfo, '\n')) {
    auto dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    auto fields = split(line.substr(0, dash), ' ');
    auto tail = split(line.substr(dash + 3), ' ');
    if (fields.size() < 5 || tail.size() < 3) continue;
    const std::string& mnt = fields[4];
    if (tail[0] == "cgroup2") {
      if (l.unified_root.empty() || mnt == "/sys/fs/cgroup") l.unified_root = mnt;
      if (mnt == "/sys/fs/cgroup") root_is_v2 = true;
    } else if (tail[0] == "cgroup") {
      Hierarchy h{mnt, {}};
      for (auto& opt : split(tail[2], ','))
        if (v1_controller_names().count(opt) || opt.rfind("name=", 0) == 0) h.controllers.push_back(opt);
      // The same hierarchy can be mounted twice (bind mounts); keep the first.
      bool dup = false;
      for (auto& e : l.v1)
        if (e.controllers == h.controllers) dup = true;
      if (!dup && !h.controllers.empty()) l.v1.push_back(std::move(h));
    }
  }
  if (root_is_v2 || l.v1.empty())
    l.mode = Mode::unified;
  else
    l.mode = l.unified_root.empty() ? Mode::legacy : Mode::hybrid;
  if (l.mode == Mode::unified) l.v1.clear();
  return l;
}

Result<Layout> detect_layout(const std::string& mountinfo_path) {
  // The common case in one syscall: cgroup2 mounted at /sys/fs/cgroup is a
  // unified host (runc and crun decide the same way). Anything else reads
  // mountinfo.
  if (mountinfo_path == "/proc/self/mountinfo") {
    struct statfs sfs {};
    if (::statfs("/sys/fs/cgroup", &sfs) == 0 && sfs.f_type == CGROUP2_SUPER_MAGIC) {
      Layout l;
      l.mode = Mode::unified;
      l.unified_root = "/sys/fs/cgroup";
      return l;
    }
  }
  auto text = TRY(read_file(mountinfo_path));
  Layout l = parse_layout(text);
  if (l.mode == Mode::unified && l.unified_root.empty()) return fail("no cgroup filesystem is mounted");
  return l;
}

Result<std::unique_ptr<Manager>> open(const Layout& layout, const std::string& path) {
  std::string p = clean_path("/" + path);
  if (p == "/") return fail("linux.cgroupsPath: refusing to use the root cgroup");
  if (p.find("/..") != std::string::npos) return fail("linux.cgroupsPath: \"" + path + "\" escapes the hierarchy");
  if (layout.mode == Mode::unified) return detail::make_v2(layout.unified_root, p);
  return detail::make_v1(layout, p);
}

void remove_if_empty(const std::string& path) {
  auto layout = detect_layout();
  if (!layout) return;
  if (!layout->unified_root.empty()) ::rmdir((layout->unified_root + path).c_str());
  for (auto& h : layout->v1) ::rmdir((h.mountpoint + path).c_str());
}

Result<std::unique_ptr<Manager>> open_existing(const Layout& layout, const std::string& path, bool systemd) {
  if (systemd) return reopen_systemd(layout, path);
  return open(layout, path);
}

uint64_t shares_to_weight(uint64_t shares) {
  // The mapping runc and crun use: [2, 262144] onto [1, 10000], linear.
  if (shares == 0) return 0;
  if (shares < 2) shares = 2;
  if (shares > 262144) shares = 262144;
  return 1 + ((shares - 2) * 9999) / 262142;
}

uint64_t blkio_to_io_weight(uint64_t weight) {
  if (weight == 0) return 0;
  if (weight < 10) weight = 10;
  if (weight > 1000) weight = 1000;
  return 1 + ((weight - 10) * 9999) / 990;
}

std::string cpu_max(std::optional<int64_t> quota, std::optional<uint64_t> period) {
  std::string q = (!quota || *quota <= 0) ? "max" : std::to_string(*quota);
  return q + " " + std::to_string(period && *period ? *period : 100000);
}

}  // namespace berth::cgroup
