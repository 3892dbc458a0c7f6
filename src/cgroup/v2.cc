// cgroupfs v2: one directory in the unified tree. Limits are the v2 files
// (memory.max, cpu.max, io.max, ...); device rules become an eBPF program
// (device_filter.cc); freeze and kill are cgroup.freeze and cgroup.kill.
#include <fcntl.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <set>

#include "cgroup/cgroup.h"
#include "cgroup/device_filter.h"
#include "cgroup/internal.h"
#include "util/fs.h"
#include "util/log.h"

namespace berth::cgroup {
namespace {

using namespace detail;

// v2 OOM notification: inotify on memory.events, whose "oom" count grows with
// every OOM the cgroup meets.
class V2OomWatcher final : public OomWatcher {
 public:
  V2OomWatcher(UniqueFd ifd, std::string events, uint64_t seen)
      : ifd_(std::move(ifd)), events_(std::move(events)), seen_(seen) {}
  int fd() const override { return ifd_.get(); }
  Result<uint64_t> take() override {
    char buf[4096];
    while (::read(ifd_.get(), buf, sizeof buf) > 0) {
    }
    auto text = read_file(events_);
    if (!text) return 0;  // the cgroup is gone
    uint64_t now = keyed_value(*text, "oom");
    uint64_t n = now > seen_ ? now - seen_ : 0;
    seen_ = now;
    return n;
  }

 private:
  UniqueFd ifd_;
  std::string events_;
  uint64_t seen_;
};

std::string max_or(int64_t v) { return v < 0 ? "max" : std::to_string(v); }

class V2Manager final : public Manager {
 public:
  V2Manager(std::string root, std::string path) : root_(std::move(root)), path_(std::move(path)) {}

  Result<> create(const oci::Resources* res, bool adopt) override {
    auto levels = missing_levels(root_, path_);
    std::vector<std::string> made;
    if (adopt && levels.empty()) made.push_back(root_ + path_);
    auto r = [&]() -> Result<> {
      for (auto& dir : levels) {
        std::string parent = dir.substr(0, dir.find_last_of('/'));
        enable_controllers(parent);
        if (::mkdir(dir.c_str(), 0755) < 0 && errno != EEXIST) return sys_error("mkdir " + dir);
        made.push_back(dir);
      }
      // A cgroup this call made goes away on error: nothing to put back.
      if (res) TRY(apply_limits(*res, made.empty()));
      return {};
    }();
    if (!r) remove_levels(made);
    return r;
  }

  // Delegates every available controller to the children of `parent`, where that
  // is not done already (the host's own levels usually have them enabled).
  void enable_controllers(const std::string& parent) {
    auto avail = read_file(parent + "/cgroup.controllers");
    auto enabled = read_file(parent + "/cgroup.subtree_control");
    if (!avail || !enabled) return;
    std::set<std::string> on;
    for (auto& c : split(trim(*enabled), ' ')) on.insert(c);
    for (auto& c : split(trim(*avail), ' ')) {
      if (c.empty() || on.count(c)) continue;
      // A parent with member processes can't delegate (the "no internal
      // processes" rule); the limits that need it fail later with a clear error.
      if (!write_file(parent + "/cgroup.subtree_control", "+" + c))
        log::debug("cannot enable " + c + " in " + parent);
    }
  }

  Result<> apply(const oci::Resources& res) override { return apply_limits(res, true); }

  // `journal`: put files back on error (an update); a create needs no undo.
  Result<> apply_limits(const oci::Resources& res, bool journal) {
    for (size_t i = 0; i < res.devices.size(); ++i) TRY(check_device_rule(res.devices[i], i));
    if (res.network && (res.network->class_id || !res.network->priorities.empty()))
      return fail("linux.resources.network: cgroup v2 has no net_cls or net_prio controller");
    Journal j(journal);
    TRY(apply_memory(j, res));
    TRY(apply_cpu(j, res));
    if (res.pids) {
      std::string v = res.pids->limit > 0 ? std::to_string(res.pids->limit) : "max";
      TRY(j.write(dir() + "/pids.max", v, "linux.resources.pids.limit"));
    }
    TRY(apply_io(j, res));
    for (size_t i = 0; i < res.hugepage_limits.size(); ++i) {
      auto& l = res.hugepage_limits[i];
      std::string size = TRY(hugepage_size(l, i));
      std::string field = "linux.resources.hugepageLimits[" + std::to_string(i) + "].limit";
      TRY(j.write(dir() + "/hugetlb." + size + ".max", std::to_string(l.limit), field));
      if (path_exists(dir() + "/hugetlb." + size + ".rsvd.max"))
        TRY(j.write(dir() + "/hugetlb." + size + ".rsvd.max", std::to_string(l.limit), field));
    }
    for (auto& [dev, lim] : res.rdma) {
      TRY(j.write_line(dir() + "/rdma.max", dev, rdma_limits(lim), "linux.resources.rdma." + dev,
                         "hca_handle=max hca_object=max"));
    }
    for (auto& [k, v] : res.unified) {
      if (k.empty() || k.find('/') != std::string::npos || k[0] == '.' || k.find('.') == std::string::npos)
        return fail("linux.resources.unified: invalid key \"" + k + "\"");
      // A key whose controller is not enabled here reads as a missing file.
      std::string controller = k.substr(0, k.find('.'));
      if (!path_exists(dir() + "/" + k)) {
        auto avail = read_file(dir() + "/cgroup.controllers").value_or("");
        if (controller != "cgroup" && (" " + trim(avail) + " ").find(" " + controller + " ") == std::string::npos)
          return fail("linux.resources.unified." + k + ": the " + controller +
                      " controller is not available in this cgroup");
        return fail("linux.resources.unified." + k + ": no such cgroup file");
      }
      TRY(j.write(dir() + "/" + k, v, "linux.resources.unified." + k));
    }
    // Last: the filter replaces the old one atomically and is not rolled back.
    if (!res.devices.empty()) {
      UniqueFd fd = dir_fd();
      if (!fd) return sys_error("open " + dir());
      TRY_CTX(attach_device_filter(fd.get(), res.devices), "linux.resources.devices");
    }
    j.commit();
    return {};
  }

  Result<> add_pid(pid_t pid) override { return write_file(dir() + "/cgroup.procs", std::to_string(pid)); }

  UniqueFd dir_fd() override { return UniqueFd(::open(dir().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)); }

  Result<std::vector<pid_t>> pids() override { return pids_recursive(dir()); }

  Result<> freeze(bool f) override {
    TRY(write_file(dir() + "/cgroup.freeze", f ? "1" : "0"));
    auto r = wait_until(dir() + "/cgroup.events", f ? "frozen 1" : "frozen 0", true);
    if (!r && f) {
      // Never leave the cgroup half frozen.
      (void)write_file(dir() + "/cgroup.freeze", "0");
      return fail("cannot freeze " + dir() + ": a process does not stop (stalled in the kernel?)");
    }
    return r;
  }

  Result<bool> frozen() override {
    auto s = read_file(dir() + "/cgroup.freeze");
    if (!s) return false;
    return trim(*s) == "1";
  }

  Result<> kill_all(int sig) override {
    if (sig == SIGKILL && write_file(dir() + "/cgroup.kill", "1")) return {};
    auto p = TRY(pids());
    for (pid_t pid : p) ::kill(pid, sig);
    return {};
  }

  Result<> destroy() override {
    (void)kill_all(SIGKILL);
    return rmdir_tree(dir());
  }

  Result<Stats> stats() override { return read_stats_v2(dir()); }

  Result<std::unique_ptr<OomWatcher>> watch_oom() override {
    std::string events = dir() + "/memory.events";
    UniqueFd ifd(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
    if (!ifd) return sys_error("inotify_init1");
    if (::inotify_add_watch(ifd.get(), events.c_str(), IN_MODIFY) < 0) return sys_error("watch " + events);
    uint64_t seen = keyed_value(read_file(events).value_or(""), "oom");
    return std::unique_ptr<OomWatcher>(new V2OomWatcher(std::move(ifd), events, seen));
  }

  const std::string& path() const override { return path_; }
  std::string dir(const std::string&) const override { return dir(); }
  Mode mode() const override { return Mode::unified; }

 private:
  std::string dir() const { return root_ + path_; }
  std::string parent() const {
    std::string d = dir();
    return d.substr(0, d.find_last_of('/'));
  }
  uint64_t read_number(const std::string& file) {
    return std::strtoull(trim(read_file(dir() + "/" + file).value_or("0")).c_str(), nullptr, 10);
  }

  Result<> apply_memory(Journal& j, const oci::Resources& res) {
    if (!res.memory) return {};
    auto& m = *res.memory;
    std::string d = dir();
    if (m.limit && *m.limit > 0 && m.check_before_update.value_or(false)) {
      uint64_t usage = read_number("memory.current");
      if (static_cast<uint64_t>(*m.limit) < usage)
        return fail("linux.resources.memory.limit " + std::to_string(*m.limit) +
                    ": below the container's current usage " + std::to_string(usage));
    }
    if (m.swap) {
      // OCI's swap is memory+swap; memory.swap.max is swap alone.
      std::string v = "max";
      if (*m.swap >= 0) {
        int64_t lim = -1;
        if (m.limit) {
          lim = *m.limit;
        } else {
          std::string cur = trim(read_file(d + "/memory.max").value_or("max"));
          if (cur != "max") lim = static_cast<int64_t>(std::strtoull(cur.c_str(), nullptr, 10));
        }
        if (lim < 0)
          return fail("linux.resources.memory.swap " + std::to_string(*m.swap) + ": needs a memory limit");
        if (*m.swap < lim)
          return fail("linux.resources.memory.swap " + std::to_string(*m.swap) + ": below the memory limit " +
                      std::to_string(lim));
        v = std::to_string(*m.swap - lim);
      }
      TRY(j.write(d + "/memory.swap.max", v, "linux.resources.memory.swap"));
    }
    if (m.limit) TRY(j.write(d + "/memory.max", max_or(*m.limit), "linux.resources.memory.limit"));
    if (m.reservation) TRY(j.write(d + "/memory.low", max_or(*m.reservation), "linux.resources.memory.reservation"));
    if (m.swappiness) log::warn("linux.resources.memory.swappiness: ignored: cgroup v2 has no per-cgroup swappiness");
    if ((m.kernel && *m.kernel) || (m.kernel_tcp && *m.kernel_tcp))
      log::warn("linux.resources.memory.kernel: ignored: cgroup v2 has no kernel memory limit");
    if (m.disable_oom_killer && *m.disable_oom_killer)
      log::warn("linux.resources.memory.disableOOMKiller: ignored: cgroup v2 can't disable the OOM killer");
    return {};
  }

  Result<> apply_cpu(Journal& j, const oci::Resources& res) {
    if (!res.cpu) return {};
    auto& c = *res.cpu;
    std::string d = dir();
    if ((c.realtime_runtime && *c.realtime_runtime) || (c.realtime_period && *c.realtime_period))
      return fail("linux.resources.cpu.realtimeRuntime: cgroup v2 has no realtime CPU budget");
    if (c.shares && *c.shares) {
      if (*c.shares < 2 || *c.shares > 262144)
        return fail("linux.resources.cpu.shares " + std::to_string(*c.shares) + ": must be 2 to 262144");
      TRY(j.write(d + "/cpu.weight", std::to_string(shares_to_weight(*c.shares)), "linux.resources.cpu.shares"));
    }
    if (c.quota || c.period) {
      // An update that names only one of the two keeps the other.
      auto cur = split(trim(read_file(d + "/cpu.max").value_or("max 100000")), ' ');
      std::optional<int64_t> quota = c.quota;
      std::optional<uint64_t> period = c.period;
      if (!quota && !cur.empty() && cur[0] != "max") quota = std::strtoll(cur[0].c_str(), nullptr, 10);
      if (!period && cur.size() > 1) period = std::strtoull(cur[1].c_str(), nullptr, 10);
      TRY(j.write(d + "/cpu.max", cpu_max(quota, period), "linux.resources.cpu.quota"));
    }
    if (c.burst) TRY(j.write(d + "/cpu.max.burst", std::to_string(*c.burst), "linux.resources.cpu.burst"));
    if (c.idle) TRY(j.write(d + "/cpu.idle", std::to_string(*c.idle), "linux.resources.cpu.idle"));
    if (!c.cpus.empty()) {
      TRY(check_subset("linux.resources.cpu.cpus", c.cpus, parent() + "/cpuset.cpus.effective"));
      TRY(j.write(d + "/cpuset.cpus", c.cpus, "linux.resources.cpu.cpus"));
    }
    if (!c.mems.empty()) {
      TRY(check_subset("linux.resources.cpu.mems", c.mems, parent() + "/cpuset.mems.effective"));
      TRY(j.write(d + "/cpuset.mems", c.mems, "linux.resources.cpu.mems"));
    }
    return {};
  }

  Result<> apply_io(Journal& j, const oci::Resources& res) {
    if (!res.block_io) return {};
    auto& b = *res.block_io;
    std::string d = dir();
    // BFQ takes v1's weight range as is; io.weight has its own.
    bool bfq = path_exists(d + "/io.bfq.weight");
    std::string wfile = d + (bfq ? "/io.bfq.weight" : "/io.weight");
    auto weight = [&](uint16_t w) { return std::to_string(bfq ? w : blkio_to_io_weight(w)); };
    if (b.weight) {
      if (*b.weight < 10 || *b.weight > 1000)
        return fail("linux.resources.blockIO.weight " + std::to_string(*b.weight) + ": must be 10 to 1000");
      TRY(j.write(wfile, (bfq ? "" : "default ") + weight(*b.weight), "linux.resources.blockIO.weight"));
    }
    if (b.leaf_weight) return fail("linux.resources.blockIO.leafWeight: cgroup v2 has no leaf weight");
    for (size_t i = 0; i < b.weight_device.size(); ++i) {
      auto& wd = b.weight_device[i];
      std::string field = "linux.resources.blockIO.weightDevice[" + std::to_string(i) + "]";
      if (wd.leaf_weight) return fail(field + ".leafWeight: cgroup v2 has no leaf weight");
      if (wd.weight)
        TRY(j.write_line(wfile, std::to_string(wd.major) + ":" + std::to_string(wd.minor), weight(*wd.weight), field,
                         "default"));
    }
    const std::pair<const std::vector<oci::ThrottleDevice>*, const char*> throttles[] = {
        {&b.throttle_read_bps, "rbps"},
        {&b.throttle_write_bps, "wbps"},
        {&b.throttle_read_iops, "riops"},
        {&b.throttle_write_iops, "wiops"}};
    for (auto& [list, key] : throttles)
      for (auto& t : *list) {
        std::string dev = std::to_string(t.major) + ":" + std::to_string(t.minor);
        std::string v = std::string(key) + "=" + (t.rate ? std::to_string(t.rate) : "max");
        TRY(j.write_line(d + "/io.max", dev, v, std::string("linux.resources.blockIO.throttle ") + key,
                         "rbps=max wbps=max riops=max wiops=max"));
      }
    return {};
  }

  std::string root_, path_;
};

}  // namespace

std::unique_ptr<Manager> detail::make_v2(const std::string& root, const std::string& path) {
  return std::make_unique<V2Manager>(root, path);
}

}  // namespace berth::cgroup
