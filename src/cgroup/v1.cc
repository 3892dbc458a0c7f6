// cgroupfs v1: one directory per mounted hierarchy, each holding the files of
// its controllers. On a hybrid host (v1 controllers plus a cgroup2 mount) the
// controllers that live only on the cgroup2 side (hugetlb on this machine) get a
// directory there too, made only when a limit needs it: joining a cgroup2
// directory costs a write to cgroup.procs on every start.
#include <fcntl.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <set>

#include "cgroup/cgroup.h"
#include "cgroup/internal.h"
#include "util/fs.h"
#include "util/log.h"

namespace berth::cgroup {
namespace {

using namespace detail;

// v1 OOM notification: an eventfd registered on memory.oom_control through
// cgroup.event_control. The kernel also signals it when the cgroup goes away,
// which is no OOM: take() checks the cgroup is still there.
class V1OomWatcher final : public OomWatcher {
 public:
  V1OomWatcher(UniqueFd efd, UniqueFd control, std::string dir)
      : efd_(std::move(efd)), control_(std::move(control)), dir_(std::move(dir)) {}
  int fd() const override { return efd_.get(); }
  Result<uint64_t> take() override {
    uint64_t n = 0;
    if (::read(efd_.get(), &n, sizeof n) != sizeof n) {
      if (errno == EAGAIN) return 0;
      return sys_error("read the OOM eventfd");
    }
    if (!path_exists(dir_ + "/memory.oom_control")) return 0;
    return n;
  }

 private:
  UniqueFd efd_, control_;
  std::string dir_;
};

std::string number(int64_t v) { return std::to_string(v); }
std::string dev(int64_t major, int64_t minor) { return number(major) + ":" + number(minor); }

class V1Manager final : public Manager {
 public:
  V1Manager(const Layout& l, std::string path) : hier_(l.v1), path_(std::move(path)) {
    // Hybrid: controllers that only the cgroup2 mount has.
    bool v1_hugetlb = false;
    for (auto& h : hier_) v1_hugetlb |= has_controller(h, "hugetlb");
    if (!v1_hugetlb && !l.unified_root.empty()) unified_ = l.unified_root + path_;
  }

  Result<> create(const oci::Resources* res, bool adopt) override {
    std::vector<std::string> made;
    auto r = [&]() -> Result<> {
      for (auto& h : hier_) {
        if (optional(h) && !(res && needs(h, *res))) continue;
        if (adopt && path_exists(h.mountpoint + path_)) made.push_back(h.mountpoint + path_);
        else TRY(make_levels(h, made));
      }
      if (res && !res->hugepage_limits.empty()) TRY(make_unified(made));
      // A cgroup this call made goes away on error: nothing to put back.
      if (res) TRY(apply_limits(*res, made.empty()));
      return {};
    }();
    if (!r) remove_levels(made);
    return r;
  }

  // An update may need a hierarchy the container was made without (a first
  // --cpuset-cpus): its cgroup is made, limited, and then the container's
  // processes move in. On error it goes again, and they never moved.
  Result<> apply(const oci::Resources& res) override {
    std::vector<std::string> made;
    std::vector<const Hierarchy*> late;
    auto r = [&]() -> Result<> {
      for (auto& h : hier_)
        if (optional(h) && needs(h, res) && !path_exists(h.mountpoint + path_)) {
          TRY(make_levels(h, made));
          late.push_back(&h);
        }
      TRY(apply_limits(res, true));
      for (auto* h : late) TRY(move_in(*h));
      return {};
    }();
    if (!r) remove_levels(made);
    return r;
  }

  // Hierarchies whose controllers limit nothing unless asked: a container that
  // asks nothing of them stays in its parent's cgroup there. Making a cpuset
  // cgroup is the costliest step of a v1 create (its CPUs and nodes copied
  // down, and the first one beside the root flips a static key: kernel text
  // patched on every CPU). name=systemd is kept: a container must leave the
  // caller's unit, or systemd counts it as the caller's.
  static bool optional(const Hierarchy& h) {
    if (h.controllers.empty()) return false;
    for (auto& c : h.controllers)
      if (c != "cpuset" && c != "net_cls" && c != "net_prio") return false;
    return true;
  }
  static bool needs(const Hierarchy& h, const oci::Resources& res) {
    if (has_controller(h, "cpuset") && res.cpu && (!res.cpu->cpus.empty() || !res.cpu->mems.empty())) return true;
    return (has_controller(h, "net_cls") || has_controller(h, "net_prio")) && res.network;
  }
  // Whether the container is in `h`'s cgroup (an optional one it never needed is absent).
  bool joined(const Hierarchy& h) const { return !optional(h) || path_exists(h.mountpoint + path_); }

  Result<> make_levels(const Hierarchy& h, std::vector<std::string>& made) {
    for (auto& dir : missing_levels(h.mountpoint, path_)) {
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
    return {};
  }

  // Moves every process of the container into `h`'s new cgroup; passes repeat
  // while a fork adds one.
  Result<> move_in(const Hierarchy& h) {
    std::set<pid_t> moved;
    for (int pass = 0; pass < 10; ++pass) {
      auto pids = TRY(pids_recursive(procs_dir()));
      bool more = false;
      for (pid_t p : pids) {
        if (!moved.insert(p).second) continue;
        more = true;
        if (auto r = write_file(h.mountpoint + path_ + "/cgroup.procs", std::to_string(p)); !r && r.error().err != ESRCH)
          return std::unexpected(std::move(r).error().context("move " + std::to_string(p) + " into " + h.mountpoint + path_));
      }
      if (!more) return {};
    }
    return {};
  }

  // `journal`: put files back on error (an update); a create needs no undo.
  Result<> apply_limits(const oci::Resources& res, bool journal) {
    for (size_t i = 0; i < res.devices.size(); ++i) TRY(check_device_rule(res.devices[i], i));
    if (!res.unified.empty())
      return fail("linux.resources.unified: \"" + res.unified.begin()->first +
                  "\" is a cgroup v2 key and this host is cgroup v1");
    Journal j(journal);
    TRY(apply_memory(j, res));
    TRY(apply_cpu(j, res));
    if (res.pids) {
      std::string v = res.pids->limit > 0 ? number(res.pids->limit) : "max";
      TRY(j.write(TRY(need("pids", "linux.resources.pids")) + "/pids.max", v, "linux.resources.pids.limit"));
    }
    TRY(apply_blkio(j, res));
    TRY(apply_hugetlb(j, res));
    TRY(apply_network(j, res));
    if (!res.rdma.empty()) {
      std::string d = TRY(need("rdma", "linux.resources.rdma"));
      for (auto& [dev, lim] : res.rdma) {
        TRY(j.write_line(d + "/rdma.max", dev, rdma_limits(lim), "linux.resources.rdma." + dev,
                         "hca_handle=max hca_object=max"));
      }
    }
    // Last: device rules are checked above and can't be rolled back.
    if (!res.devices.empty()) {
      std::string d = dir("devices");
      if (!d.empty())
        for (auto& r : res.devices)
          TRY(j.write_undo(d + (r.allow ? "/devices.allow" : "/devices.deny"), device_rule(r),
                           "linux.resources.devices", ""));
    }
    j.commit();
    return {};
  }

  Result<> add_pid(pid_t pid) override {
    std::string p = std::to_string(pid);
    for (auto& h : hier_)
      if (joined(h)) TRY(write_file(h.mountpoint + path_ + "/cgroup.procs", p));
    if (unified_made()) TRY(write_file(unified_ + "/cgroup.procs", p));
    return {};
  }

  std::vector<std::string> self_join_files() const override {
    std::vector<std::string> out;
    for (auto& h : hier_)
      if (joined(h)) out.push_back(h.mountpoint + path_ + "/tasks");
    // cgroup2 has no per-thread tasks file; "0" moves the writer's process.
    if (unified_made()) out.push_back(unified_ + "/cgroup.procs");
    return out;
  }

  Result<std::vector<pid_t>> pids() override { return pids_recursive(procs_dir()); }

  Result<> freeze(bool frozen) override { return freeze_within(frozen, 5000); }

  Result<bool> frozen() override {
    std::string d = dir("freezer");
    if (d.empty()) return false;
    auto s = read_file(d + "/freezer.state");
    if (!s) return false;
    return trim(*s) != "THAWED";
  }

  Result<> kill_all(int sig) override {
    auto pids = pids_recursive(procs_dir());
    // An empty cgroup (the usual case once the init of a pid namespace is gone)
    // needs no freeze, and a freezer round trip costs milliseconds.
    if (!pids || pids->empty()) return {};
    // Freeze first (the freezer freezes the cgroups beneath too) so nothing
    // forks between the read of cgroup.procs and the kill.
    bool was_frozen = frozen().value_or(false);
    // A task the freezer can't stop (one stalled in an OOM wait) must not hold
    // the kill up for long.
    bool can_freeze = !dir("freezer").empty() && freeze_within(true, 500).has_value();
    if (can_freeze) pids = pids_recursive(procs_dir());
    if (pids)
      for (pid_t p : *pids) ::kill(p, sig);
    if (can_freeze && !was_frozen) (void)freeze(false);
    return {};
  }

  Result<> destroy() override {
    (void)kill_all(SIGKILL);
    std::string first_err;
    for (auto& h : hier_)
      if (auto r = rmdir_tree(h.mountpoint + path_); !r && first_err.empty()) first_err = r.error().str();
    if (!unified_.empty())
      if (auto r = rmdir_tree(unified_); !r && first_err.empty()) first_err = r.error().str();
    if (!first_err.empty()) return fail(first_err);
    return {};
  }

  Result<Stats> stats() override {
    std::map<std::string, std::string> dirs;
    for (const char* c : {"cpu", "cpuacct", "memory", "pids", "blkio", "hugetlb"})
      if (auto d = dir(c); !d.empty()) dirs[c] = d;
    return read_stats_v1(dirs, unified_made() ? unified_ : "");
  }

  Result<std::unique_ptr<OomWatcher>> watch_oom() override {
    std::string d = TRY(need("memory", "events"));
    UniqueFd efd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!efd) return sys_error("eventfd");
    UniqueFd control(::open((d + "/memory.oom_control").c_str(), O_RDONLY | O_CLOEXEC));
    if (!control) return sys_error("open " + d + "/memory.oom_control");
    TRY_CTX(write_file(d + "/cgroup.event_control",
                       std::to_string(efd.get()) + " " + std::to_string(control.get())),
            "register for OOM notifications");
    return std::unique_ptr<OomWatcher>(new V1OomWatcher(std::move(efd), std::move(control), d));
  }

  const std::string& path() const override { return path_; }
  std::string dir(const std::string& controller) const override {
    for (auto& h : hier_)
      if (has_controller(h, controller)) return h.mountpoint + path_;
    return "";
  }
  Mode mode() const override { return Mode::legacy; }

 private:
  // The directory of `controller`, or an error naming `field` where the host
  // mounts no such hierarchy.
  Result<std::string> need(const std::string& controller, const std::string& field) const {
    std::string d = dir(controller);
    if (d.empty()) return fail(field + ": this host mounts no " + controller + " cgroup hierarchy");
    return d;
  }
  std::string procs_dir() const {
    std::string d = dir("pids");
    if (d.empty() && !hier_.empty()) d = hier_.front().mountpoint + path_;
    return d;
  }
  // A freeze that does not complete in time is undone: the cgroup is never
  // left half frozen.
  Result<> freeze_within(bool frozen, int timeout_ms) {
    std::string d = dir("freezer");
    if (d.empty()) return fail("no freezer cgroup hierarchy on this host");
    std::string want = frozen ? "FROZEN" : "THAWED";
    TRY(write_file(d + "/freezer.state", want));
    auto r = wait_until(d + "/freezer.state", want, false, timeout_ms);
    if (!r && frozen) {
      (void)write_file(d + "/freezer.state", "THAWED");
      return fail("cannot freeze " + d + ": a process does not stop (stalled in the kernel?)");
    }
    return r;
  }
  bool unified_made() const { return !unified_.empty() && path_exists(unified_); }

  // The hybrid host's cgroup2 directory, for limits only it can take.
  Result<> make_unified(std::vector<std::string>& made) {
    if (unified_.empty()) return {};
    std::string root = unified_.substr(0, unified_.size() - path_.size());
    for (auto& dir : missing_levels(root, path_)) {
      std::string parent = dir.substr(0, dir.find_last_of('/'));
      // Delegate the controllers cgroup2 has to the new level.
      if (auto avail = read_file(parent + "/cgroup.controllers"))
        for (auto& c : split(trim(*avail), ' '))
          if (!c.empty()) (void)write_file(parent + "/cgroup.subtree_control", "+" + c);
      if (::mkdir(dir.c_str(), 0755) < 0 && errno != EEXIST) return sys_error("mkdir " + dir);
      made.push_back(dir);
    }
    return {};
  }

  Result<> apply_memory(Journal& j, const oci::Resources& res) {
    if (!res.memory) return {};
    auto& m = *res.memory;
    std::string d = TRY(need("memory", "linux.resources.memory"));
    if (m.limit && *m.limit > 0 && m.check_before_update.value_or(false)) {
      uint64_t usage = std::strtoull(trim(read_file(d + "/memory.usage_in_bytes").value_or("0")).c_str(), nullptr, 10);
      if (static_cast<uint64_t>(*m.limit) < usage)
        return fail("linux.resources.memory.limit " + number(*m.limit) + ": below the container's current usage " +
                    std::to_string(usage));
    }
    if (m.limit && m.swap && *m.swap != -1 && *m.limit > 0 && *m.swap < *m.limit)
      return fail("linux.resources.memory.swap " + number(*m.swap) + ": below the memory limit " + number(*m.limit));
    bool have_memsw = path_exists(d + "/memory.memsw.limit_in_bytes");
    auto write_limit = [&]() -> Result<> {
      if (!m.limit) return {};
      auto r = j.write(d + "/memory.limit_in_bytes", number(*m.limit), "linux.resources.memory.limit");
      if (!r && r.error().err == EBUSY)
        return fail("linux.resources.memory.limit " + number(*m.limit) + ": below the container's current usage " +
                    trim(read_file(d + "/memory.usage_in_bytes").value_or("?")));
      return r;
    };
    if (m.swap && have_memsw) {
      // memory.limit <= memsw.limit must hold after every single write: raise
      // memsw first when it grows, lower the limit first when it shrinks.
      std::string cur = trim(read_file(d + "/memory.memsw.limit_in_bytes").value_or("0"));
      bool growing = *m.swap == -1 || static_cast<uint64_t>(*m.swap) >= std::strtoull(cur.c_str(), nullptr, 10);
      if (growing) {
        TRY(j.write(d + "/memory.memsw.limit_in_bytes", number(*m.swap), "linux.resources.memory.swap"));
        TRY(write_limit());
      } else {
        TRY(write_limit());
        TRY(j.write(d + "/memory.memsw.limit_in_bytes", number(*m.swap), "linux.resources.memory.swap"));
      }
    } else {
      if (m.swap && *m.swap != -1 && m.limit && *m.swap != *m.limit)
        log::warn("linux.resources.memory.swap: ignored: this kernel does not account swap (swapaccount=0)");
      TRY(write_limit());
    }
    if (m.reservation)
      TRY(j.write(d + "/memory.soft_limit_in_bytes", number(*m.reservation), "linux.resources.memory.reservation"));
    if (m.swappiness) {
      if (*m.swappiness > 100)
        return fail("linux.resources.memory.swappiness " + std::to_string(*m.swappiness) + ": must be 0 to 100");
      TRY(j.write(d + "/memory.swappiness", std::to_string(*m.swappiness), "linux.resources.memory.swappiness"));
    }
    // Kernel 6.x keeps the kmem files but refuses limits in them.
    if (m.kernel && *m.kernel != 0)
      if (!j.write(d + "/memory.kmem.limit_in_bytes", number(*m.kernel), "linux.resources.memory.kernel"))
        log::warn("linux.resources.memory.kernel: ignored: this kernel has no kernel memory limit");
    if (m.kernel_tcp && *m.kernel_tcp != 0)
      if (!j.write(d + "/memory.kmem.tcp.limit_in_bytes", number(*m.kernel_tcp), "linux.resources.memory.kernelTCP"))
        log::warn("linux.resources.memory.kernelTCP: ignored: this kernel has no TCP buffer limit");
    if (m.disable_oom_killer) {
      auto old = read_file(d + "/memory.oom_control");
      TRY(j.write_undo(d + "/memory.oom_control", *m.disable_oom_killer ? "1" : "0",
                       "linux.resources.memory.disableOOMKiller",
                       old ? std::to_string(keyed_value(*old, "oom_kill_disable")) : ""));
    }
    if (m.use_hierarchy && !j.write(d + "/memory.use_hierarchy", *m.use_hierarchy ? "1" : "0",
                                    "linux.resources.memory.useHierarchy"))
      log::warn("linux.resources.memory.useHierarchy: ignored: this kernel always uses the hierarchy");
    return {};
  }

  Result<> apply_cpu(Journal& j, const oci::Resources& res) {
    if (!res.cpu) return {};
    auto& c = *res.cpu;
    if (c.shares || c.quota || c.period || c.burst || c.realtime_period || c.realtime_runtime || c.idle) {
      std::string d = TRY(need("cpu", "linux.resources.cpu"));
      if (c.shares) {
        if (*c.shares < 2 || *c.shares > 262144)
          return fail("linux.resources.cpu.shares " + std::to_string(*c.shares) + ": must be 2 to 262144");
        TRY(j.write(d + "/cpu.shares", std::to_string(*c.shares), "linux.resources.cpu.shares"));
      }
      if (c.period) TRY(j.write(d + "/cpu.cfs_period_us", std::to_string(*c.period), "linux.resources.cpu.period"));
      if (c.quota) TRY(j.write(d + "/cpu.cfs_quota_us", number(*c.quota), "linux.resources.cpu.quota"));
      if (c.burst) TRY(j.write(d + "/cpu.cfs_burst_us", std::to_string(*c.burst), "linux.resources.cpu.burst"));
      // The runtime must fit the period after each write: a longer period
      // first, a shorter one last.
      if (c.realtime_period && c.realtime_runtime) {
        auto cur = read_file(d + "/cpu.rt_period_us");
        bool longer = !cur || *c.realtime_period >= std::strtoull(cur->c_str(), nullptr, 10);
        if (longer)
          TRY(j.write(d + "/cpu.rt_period_us", std::to_string(*c.realtime_period), "linux.resources.cpu.realtimePeriod"));
        TRY(j.write(d + "/cpu.rt_runtime_us", number(*c.realtime_runtime), "linux.resources.cpu.realtimeRuntime"));
        if (!longer)
          TRY(j.write(d + "/cpu.rt_period_us", std::to_string(*c.realtime_period), "linux.resources.cpu.realtimePeriod"));
      } else if (c.realtime_period) {
        TRY(j.write(d + "/cpu.rt_period_us", std::to_string(*c.realtime_period), "linux.resources.cpu.realtimePeriod"));
      } else if (c.realtime_runtime) {
        TRY(j.write(d + "/cpu.rt_runtime_us", number(*c.realtime_runtime), "linux.resources.cpu.realtimeRuntime"));
      }
      if (c.idle) TRY(j.write(d + "/cpu.idle", number(*c.idle), "linux.resources.cpu.idle"));
    }
    if (!c.cpus.empty() || !c.mems.empty()) {
      std::string d = TRY(need("cpuset", "linux.resources.cpu.cpus"));
      std::string parent = d.substr(0, d.find_last_of('/'));
      if (!c.cpus.empty()) {
        TRY(check_subset("linux.resources.cpu.cpus", c.cpus, parent + "/cpuset.effective_cpus"));
        TRY(j.write(d + "/cpuset.cpus", c.cpus, "linux.resources.cpu.cpus"));
      }
      if (!c.mems.empty()) {
        TRY(check_subset("linux.resources.cpu.mems", c.mems, parent + "/cpuset.effective_mems"));
        TRY(j.write(d + "/cpuset.mems", c.mems, "linux.resources.cpu.mems"));
      }
    }
    return {};
  }

  Result<> apply_blkio(Journal& j, const oci::Resources& res) {
    if (!res.block_io) return {};
    auto& b = *res.block_io;
    std::string d = TRY(need("blkio", "linux.resources.blockIO"));
    // CFQ's blkio.weight went with CFQ; BFQ offers blkio.bfq.weight.
    std::string w = path_exists(d + "/blkio.weight") ? "blkio.weight" : "blkio.bfq.weight";
    auto no_weight = [&](const std::string& field) {
      return fail(field + ": this host's blkio cgroup has no weight (no disk uses the BFQ scheduler)");
    };
    if (b.weight) {
      if (!path_exists(d + "/" + w)) return no_weight("linux.resources.blockIO.weight");
      TRY(j.write(d + "/" + w, std::to_string(*b.weight), "linux.resources.blockIO.weight"));
    }
    if (b.leaf_weight) {
      if (!path_exists(d + "/blkio.leaf_weight"))
        return fail("linux.resources.blockIO.leafWeight: this kernel has no blkio.leaf_weight (CFQ is gone)");
      TRY(j.write(d + "/blkio.leaf_weight", std::to_string(*b.leaf_weight), "linux.resources.blockIO.leafWeight"));
    }
    for (size_t i = 0; i < b.weight_device.size(); ++i) {
      auto& wd = b.weight_device[i];
      std::string field = "linux.resources.blockIO.weightDevice[" + std::to_string(i) + "]";
      if (wd.weight) {
        if (!path_exists(d + "/" + w + "_device")) return no_weight(field);
        TRY(j.write_line(d + "/" + w + "_device", dev(wd.major, wd.minor), std::to_string(*wd.weight), field, "0"));
      }
      if (wd.leaf_weight)
        TRY(j.write_line(d + "/blkio.leaf_weight_device", dev(wd.major, wd.minor), std::to_string(*wd.leaf_weight),
                         field + ".leafWeight", "0"));
    }
    const std::pair<const std::vector<oci::ThrottleDevice>*, const char*> throttles[] = {
        {&b.throttle_read_bps, "read_bps_device"},
        {&b.throttle_write_bps, "write_bps_device"},
        {&b.throttle_read_iops, "read_iops_device"},
        {&b.throttle_write_iops, "write_iops_device"}};
    for (auto& [list, file] : throttles)
      for (auto& t : *list)
        TRY(j.write_line(d + "/blkio.throttle." + file, dev(t.major, t.minor), std::to_string(t.rate),
                         std::string("linux.resources.blockIO.throttle ") + file, "0"));
    return {};
  }

  Result<> apply_hugetlb(Journal& j, const oci::Resources& res) {
    if (res.hugepage_limits.empty()) return {};
    std::string d = dir("hugetlb");
    bool v2 = d.empty();
    if (v2) {
      if (unified_.empty()) return fail("linux.resources.hugepageLimits: this host has no hugetlb cgroup");
      if (!path_exists(unified_)) {
        // An update that adds the first limit: make the cgroup2 side now and
        // move the container's processes there.
        std::vector<std::string> made;
        TRY(make_unified(made));
        for (pid_t p : TRY(pids())) (void)write_file(unified_ + "/cgroup.procs", std::to_string(p));
      }
      d = unified_;
    }
    for (size_t i = 0; i < res.hugepage_limits.size(); ++i) {
      auto& l = res.hugepage_limits[i];
      std::string size = TRY(hugepage_size(l, i));
      std::string field = "linux.resources.hugepageLimits[" + std::to_string(i) + "].limit";
      std::string base = d + "/hugetlb." + size + (v2 ? ".max" : ".limit_in_bytes");
      std::string rsvd = d + "/hugetlb." + size + (v2 ? ".rsvd.max" : ".rsvd.limit_in_bytes");
      TRY(j.write(base, std::to_string(l.limit), field));
      if (path_exists(rsvd)) TRY(j.write(rsvd, std::to_string(l.limit), field));
    }
    return {};
  }

  Result<> apply_network(Journal& j, const oci::Resources& res) {
    if (!res.network) return {};
    auto& n = *res.network;
    if (n.class_id)
      TRY(j.write(TRY(need("net_cls", "linux.resources.network.classID")) + "/net_cls.classid",
                  std::to_string(*n.class_id), "linux.resources.network.classID"));
    if (!n.priorities.empty()) {
      std::string d = TRY(need("net_prio", "linux.resources.network.priorities"));
      for (auto& [ifname, prio] : n.priorities)
        TRY(j.write_line(d + "/net_prio.ifpriomap", ifname, std::to_string(prio),
                         "linux.resources.network.priorities." + ifname, "0"));
    }
    return {};
  }

  std::vector<Hierarchy> hier_;
  std::string path_;
  std::string unified_;  // hybrid: this cgroup's directory on the cgroup2 mount
};

}  // namespace

std::unique_ptr<Manager> detail::make_v1(const Layout& layout, const std::string& path) {
  return std::make_unique<V1Manager>(layout, path);
}

}  // namespace berth::cgroup
