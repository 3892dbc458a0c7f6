#include "cgroup/cgroup.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <set>

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

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

Result<std::vector<pid_t>> read_pids(const std::string& file) {
  auto text = TRY(read_file(file));
  std::vector<pid_t> out;
  for (auto& line : split(text, '\n'))
    if (!line.empty()) out.push_back(static_cast<pid_t>(std::stol(line)));
  return out;
}

// Removes `dir` and every cgroup beneath it, deepest first. A cgroup directory
// holds only control files, which rmdir ignores, so only subdirectories recurse.
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

// The levels of `path` that do not exist yet under `root`, outermost first.
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

Result<> wait_until(const std::string& file, const std::string& key_value_or_value, bool keyed) {
  for (int i = 0; i < 5000; ++i) {
    auto text = TRY(read_file(file));
    if (keyed) {
      for (auto& line : split(text, '\n'))
        if (line == key_value_or_value) return {};
    } else if (trim(text) == key_value_or_value) {
      return {};
    }
    struct timespec ts = {0, 1000000};
    ::nanosleep(&ts, nullptr);
  }
  return fail("timed out waiting for " + file + " to read \"" + key_value_or_value + "\"");
}

std::string device_rule(const oci::DeviceCgroupRule& r) {
  std::string t = r.type.empty() ? "a" : r.type;
  if (t == "a") return "a";
  std::string maj = r.major && *r.major >= 0 ? std::to_string(*r.major) : "*";
  std::string min = r.minor && *r.minor >= 0 ? std::to_string(*r.minor) : "*";
  return t + " " + maj + ":" + min + " " + (r.access.empty() ? "rwm" : r.access);
}

class V1Manager final : public Manager {
 public:
  V1Manager(std::vector<Hierarchy> h, std::string path) : hier_(std::move(h)), path_(std::move(path)) {}

  Result<> create(const oci::Resources* res) override {
    std::vector<std::string> made;
    auto r = [&]() -> Result<> {
      for (auto& h : hier_) {
        auto levels = missing_levels(h.mountpoint, path_);
        for (auto& dir : levels) {
          if (::mkdir(dir.c_str(), 0755) < 0 && errno != EEXIST) return sys_error("mkdir " + dir);
          made.push_back(dir);
          // A new cpuset cgroup starts with no CPUs and no memory nodes; a task
          // can't join it until both are copied down from the parent.
          if (has_controller(h, "cpuset")) {
            std::string parent = dir.substr(0, dir.find_last_of('/'));
            for (const char* f : {"cpuset.cpus", "cpuset.mems"}) {
              auto v = TRY(read_file(parent + "/" + f));
              TRY(write_file(dir + "/" + f, trim(v)));
            }
          }
        }
      }
      if (res) TRY(apply(*res));
      return {};
    }();
    if (!r) remove_levels(made);
    return r;
  }

  Result<> apply(const oci::Resources& res) override {
    if (res.memory) {
      auto& m = *res.memory;
      std::string d = dir("memory");
      if (d.empty()) return fail("linux.resources.memory: no memory cgroup hierarchy on this host");
      // Raising the limit above memsw fails, and so does lowering memsw below the
      // limit: write in the order that keeps memory.limit <= memsw.limit throughout.
      if (m.limit) {
        std::string lim = std::to_string(*m.limit);
        std::string sw = m.swap ? std::to_string(*m.swap) : "";
        auto cur = read_file(d + "/memory.memsw.limit_in_bytes");
        bool have_memsw = cur.has_value();
        if (m.swap && have_memsw && *m.swap != -1 && *m.swap < *m.limit)
          return fail("linux.resources.memory.swap: " + sw + " is below the memory limit " + lim);
        if (have_memsw && !sw.empty()) {
          if (write_file(d + "/memory.memsw.limit_in_bytes", sw)) {
            TRY_CTX(write_file(d + "/memory.limit_in_bytes", lim), "linux.resources.memory.limit " + lim);
          } else {
            TRY_CTX(write_file(d + "/memory.limit_in_bytes", lim), "linux.resources.memory.limit " + lim);
            TRY_CTX(write_file(d + "/memory.memsw.limit_in_bytes", sw), "linux.resources.memory.swap " + sw);
          }
        } else {
          TRY_CTX(write_file(d + "/memory.limit_in_bytes", lim), "linux.resources.memory.limit " + lim);
        }
      }
      if (m.reservation)
        TRY_CTX(write_file(d + "/memory.soft_limit_in_bytes", std::to_string(*m.reservation)),
                "linux.resources.memory.reservation");
      if (m.swappiness)
        TRY_CTX(write_file(d + "/memory.swappiness", std::to_string(*m.swappiness)),
                "linux.resources.memory.swappiness");
      if (m.disable_oom_killer && *m.disable_oom_killer)
        TRY_CTX(write_file(d + "/memory.oom_control", "1"), "linux.resources.memory.disableOOMKiller");
    }
    if (res.cpu) {
      auto& c = *res.cpu;
      std::string d = dir("cpu");
      if (c.shares) TRY_CTX(write_file(d + "/cpu.shares", std::to_string(*c.shares)), "linux.resources.cpu.shares");
      if (c.period) TRY_CTX(write_file(d + "/cpu.cfs_period_us", std::to_string(*c.period)), "linux.resources.cpu.period");
      if (c.quota) TRY_CTX(write_file(d + "/cpu.cfs_quota_us", std::to_string(*c.quota)), "linux.resources.cpu.quota");
      std::string cs = dir("cpuset");
      if (!c.cpus.empty()) TRY_CTX(write_file(cs + "/cpuset.cpus", c.cpus), "linux.resources.cpu.cpus \"" + c.cpus + "\"");
      if (!c.mems.empty()) TRY_CTX(write_file(cs + "/cpuset.mems", c.mems), "linux.resources.cpu.mems \"" + c.mems + "\"");
    }
    if (res.pids) {
      std::string v = res.pids->limit > 0 ? std::to_string(res.pids->limit) : "max";
      TRY_CTX(write_file(dir("pids") + "/pids.max", v), "linux.resources.pids.limit");
    }
    if (res.block_io && res.block_io->weight)
      TRY_CTX(write_file(dir("blkio") + "/blkio.weight", std::to_string(*res.block_io->weight)),
              "linux.resources.blockIO.weight");
    if (!res.devices.empty()) TRY(apply_devices(res.devices));
    return {};
  }

  Result<> apply_devices(const std::vector<oci::DeviceCgroupRule>& rules) {
    std::string d = dir("devices");
    if (d.empty()) return {};
    for (auto& r : rules) {
      std::string file = d + (r.allow ? "/devices.allow" : "/devices.deny");
      TRY_CTX(write_file(file, device_rule(r)), "linux.resources.devices \"" + device_rule(r) + "\"");
    }
    return {};
  }

  Result<> add_pid(pid_t pid) override {
    std::string p = std::to_string(pid);
    for (auto& h : hier_) TRY(write_file(h.mountpoint + path_ + "/cgroup.procs", p));
    return {};
  }

  std::vector<std::string> self_join_files() const override {
    std::vector<std::string> out;
    for (auto& h : hier_) out.push_back(h.mountpoint + path_ + "/tasks");
    return out;
  }

  Result<std::vector<pid_t>> pids() override {
    std::string d = dir("pids");
    if (d.empty()) d = hier_.empty() ? "" : hier_.front().mountpoint + path_;
    return read_pids(d + "/cgroup.procs");
  }

  Result<> freeze(bool frozen) override {
    std::string d = dir("freezer");
    if (d.empty()) return fail("no freezer cgroup hierarchy on this host");
    std::string want = frozen ? "FROZEN" : "THAWED";
    TRY(write_file(d + "/freezer.state", want));
    return wait_until(d + "/freezer.state", want, false);
  }

  Result<bool> frozen() override {
    std::string d = dir("freezer");
    if (d.empty()) return false;
    auto s = read_file(d + "/freezer.state");
    if (!s) return false;
    return trim(*s) != "THAWED";
  }

  Result<> kill_all(int sig) override {
    std::string tasks = dir("pids");
    if (tasks.empty() && !hier_.empty()) tasks = hier_.front().mountpoint + path_;
    auto pids = read_pids(tasks + "/cgroup.procs");
    // An empty cgroup (the usual case once the init of a pid namespace is gone)
    // needs no freeze, and a freezer round trip costs milliseconds.
    if (!pids || pids->empty()) return {};
    // Freeze first so nothing forks between the read of cgroup.procs and the kill.
    bool was_frozen = frozen().value_or(false);
    bool can_freeze = !dir("freezer").empty() && freeze(true).has_value();
    if (can_freeze) pids = read_pids(tasks + "/cgroup.procs");
    if (pids)
      for (pid_t p : *pids) ::kill(p, sig);
    if (can_freeze && !was_frozen) (void)freeze(false);
    return {};
  }

  Result<> destroy() override {
    (void)kill_all(SIGKILL);
    std::string first_err;
    for (auto& h : hier_) {
      std::string d = h.mountpoint + path_;
      if (auto r = rmdir_tree(d); !r && first_err.empty()) first_err = r.error().str();
    }
    if (!first_err.empty()) return fail(first_err);
    return {};
  }

  const std::string& path() const override { return path_; }
  std::string dir(const std::string& controller) const override {
    for (auto& h : hier_)
      if (has_controller(h, controller)) return h.mountpoint + path_;
    return "";
  }
  Mode mode() const override { return Mode::legacy; }

 private:
  std::vector<Hierarchy> hier_;
  std::string path_;
};

class V2Manager final : public Manager {
 public:
  V2Manager(std::string root, std::string path) : root_(std::move(root)), path_(std::move(path)) {}

  Result<> create(const oci::Resources* res) override {
    auto levels = missing_levels(root_, path_);
    std::vector<std::string> made;
    auto r = [&]() -> Result<> {
      for (auto& dir : levels) {
        std::string parent = dir.substr(0, dir.find_last_of('/'));
        TRY(enable_controllers(parent));
        if (::mkdir(dir.c_str(), 0755) < 0 && errno != EEXIST) return sys_error("mkdir " + dir);
        made.push_back(dir);
      }
      if (res) TRY(apply(*res));
      return {};
    }();
    if (!r) remove_levels(made);
    return r;
  }

  // Delegates every available controller to the children of `parent`, where that
  // is not done already (the host's own levels usually have them enabled).
  Result<> enable_controllers(const std::string& parent) {
    auto avail = read_file(parent + "/cgroup.controllers");
    auto enabled = read_file(parent + "/cgroup.subtree_control");
    if (!avail || !enabled) return {};
    std::set<std::string> on;
    for (auto& c : split(trim(*enabled), ' ')) on.insert(c);
    for (auto& c : split(trim(*avail), ' ')) {
      if (c.empty() || on.count(c)) continue;
      // A parent with member processes can't delegate (the "no internal
      // processes" rule); the limits that need it fail later with a clear error.
      if (!write_file(parent + "/cgroup.subtree_control", "+" + c))
        log::debug("cannot enable " + c + " in " + parent);
    }
    return {};
  }

  Result<> apply(const oci::Resources& res) override {
    std::string d = root_ + path_;
    if (res.memory) {
      auto& m = *res.memory;
      if (m.limit) {
        std::string v = *m.limit < 0 ? "max" : std::to_string(*m.limit);
        TRY_CTX(write_file(d + "/memory.max", v), "linux.resources.memory.limit " + v);
      }
      if (m.reservation) {
        std::string v = *m.reservation < 0 ? "max" : std::to_string(*m.reservation);
        TRY_CTX(write_file(d + "/memory.low", v), "linux.resources.memory.reservation " + v);
      }
      if (m.swap) {
        // OCI swap is memory+swap; v2's memory.swap.max is swap alone.
        std::string v = "max";
        if (*m.swap >= 0) {
          int64_t lim = m.limit.value_or(0);
          if (lim > 0 && *m.swap < lim)
            return fail("linux.resources.memory.swap: " + std::to_string(*m.swap) + " is below the memory limit");
          v = std::to_string(lim > 0 ? *m.swap - lim : *m.swap);
        }
        TRY_CTX(write_file(d + "/memory.swap.max", v), "linux.resources.memory.swap " + v);
      }
      if (m.disable_oom_killer && *m.disable_oom_killer)
        return fail("linux.resources.memory.disableOOMKiller: not supported on cgroup v2");
    }
    if (res.cpu) {
      auto& c = *res.cpu;
      if (c.shares && *c.shares)
        TRY_CTX(write_file(d + "/cpu.weight", std::to_string(shares_to_weight(*c.shares))),
                "linux.resources.cpu.shares");
      if (c.quota || c.period) TRY_CTX(write_file(d + "/cpu.max", cpu_max(c.quota, c.period)), "linux.resources.cpu.quota");
      if (!c.cpus.empty()) TRY_CTX(write_file(d + "/cpuset.cpus", c.cpus), "linux.resources.cpu.cpus \"" + c.cpus + "\"");
      if (!c.mems.empty()) TRY_CTX(write_file(d + "/cpuset.mems", c.mems), "linux.resources.cpu.mems \"" + c.mems + "\"");
    }
    if (res.pids) {
      std::string v = res.pids->limit > 0 ? std::to_string(res.pids->limit) : "max";
      TRY_CTX(write_file(d + "/pids.max", v), "linux.resources.pids.limit");
    }
    for (auto& [k, v] : res.unified) {
      if (k.find('/') != std::string::npos || k.find("..") != std::string::npos)
        return fail("linux.resources.unified: invalid key \"" + k + "\"");
      TRY_CTX(write_file(d + "/" + k, v), "linux.resources.unified." + k);
    }
    return {};
  }

  Result<> add_pid(pid_t pid) override { return write_file(root_ + path_ + "/cgroup.procs", std::to_string(pid)); }

  UniqueFd dir_fd() override {
    return UniqueFd(::open((root_ + path_).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  }

  Result<std::vector<pid_t>> pids() override {
    // Include processes in cgroups made beneath ours.
    std::vector<pid_t> out;
    std::vector<std::string> stack = {root_ + path_};
    while (!stack.empty()) {
      std::string d = stack.back();
      stack.pop_back();
      auto p = read_pids(d + "/cgroup.procs");
      if (p) out.insert(out.end(), p->begin(), p->end());
      if (DIR* dd = ::opendir(d.c_str())) {
        while (auto* e = ::readdir(dd))
          if (e->d_type == DT_DIR && e->d_name[0] != '.') stack.push_back(d + "/" + e->d_name);
        ::closedir(dd);
      }
    }
    return out;
  }

  Result<> freeze(bool f) override {
    std::string d = root_ + path_;
    TRY(write_file(d + "/cgroup.freeze", f ? "1" : "0"));
    return wait_until(d + "/cgroup.events", f ? "frozen 1" : "frozen 0", true);
  }

  Result<bool> frozen() override {
    auto s = read_file(root_ + path_ + "/cgroup.freeze");
    if (!s) return false;
    return trim(*s) == "1";
  }

  Result<> kill_all(int sig) override {
    std::string d = root_ + path_;
    if (sig == SIGKILL && write_file(d + "/cgroup.kill", "1")) return {};
    auto p = TRY(pids());
    for (pid_t pid : p) ::kill(pid, sig);
    return {};
  }

  Result<> destroy() override {
    (void)kill_all(SIGKILL);
    return rmdir_tree(root_ + path_);
  }

  const std::string& path() const override { return path_; }
  std::string dir(const std::string&) const override { return root_ + path_; }
  Mode mode() const override { return Mode::unified; }

 private:
  std::string root_, path_;
};

}  // namespace

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
  auto text = TRY(read_file(mountinfo_path));
  Layout l = parse_layout(text);
  if (l.mode == Mode::unified && l.unified_root.empty()) return fail("no cgroup filesystem is mounted");
  return l;
}

Result<std::unique_ptr<Manager>> open(const Layout& layout, const std::string& path) {
  std::string p = clean_path("/" + path);
  if (p == "/") return fail("linux.cgroupsPath: refusing to use the root cgroup");
  if (p.find("/..") != std::string::npos) return fail("linux.cgroupsPath: \"" + path + "\" escapes the hierarchy");
  if (layout.mode == Mode::unified) return std::unique_ptr<Manager>(new V2Manager(layout.unified_root, p));
  return std::unique_ptr<Manager>(new V1Manager(layout.v1, p));
}

uint64_t shares_to_weight(uint64_t shares) {
  // The mapping runc and crun use: [2, 262144] onto [1, 10000], linear.
  if (shares == 0) return 0;
  if (shares < 2) shares = 2;
  if (shares > 262144) shares = 262144;
  return 1 + ((shares - 2) * 9999) / 262142;
}

std::string cpu_max(std::optional<int64_t> quota, std::optional<uint64_t> period) {
  std::string q = (!quota || *quota <= 0) ? "max" : std::to_string(*quota);
  return q + " " + std::to_string(period && *period ? *period : 100000);
}

}  // namespace berth::cgroup
