// cgroup managers: cgroupfs v1 (one directory per mounted hierarchy) and cgroupfs v2
// (one directory in the unified tree), behind one interface. The host's mode is
// detected from the mounts, never configured.
//
// Every manager takes the cgroupfs mount root as a parameter so unit tests can run
// against fixture trees in a temp dir.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "cgroup/stats.h"
#include "oci/spec.h"
#include "util/error.h"
#include "util/fd.h"

namespace berth::cgroup {

enum class Mode { legacy, hybrid, unified };

struct Hierarchy {
  std::string mountpoint;               // /sys/fs/cgroup/memory
  std::vector<std::string> controllers;  // {"memory"} or {"cpu","cpuacct"} or {"name=systemd"}
};

// What the host has, read from /proc/self/mountinfo.
struct Layout {
  Mode mode = Mode::unified;
  std::string unified_root;  // cgroup2 mount ("" if none)
  std::vector<Hierarchy> v1;
};
Result<Layout> detect_layout(const std::string& mountinfo_path = "/proc/self/mountinfo");
// Layout from mountinfo text (for tests).
Layout parse_layout(const std::string& mountinfo);

// Reports the OOM events of one cgroup: v1 through an eventfd registered on
// memory.oom_control, v2 through inotify on memory.events.
class OomWatcher {
 public:
  virtual ~OomWatcher() = default;
  // Readable when something may have happened; poll it.
  virtual int fd() const = 0;
  // The OOM events since the last call (drains fd()).
  virtual Result<uint64_t> take() = 0;
};

class Manager {
 public:
  virtual ~Manager() = default;
  // Creates the cgroup (all missing levels) and applies `res`. On error nothing the
  // call created is left behind. `adopt`: the cgroup was made, empty, for this
  // container a moment ago by create(nullptr) in another process (berth's early
  // monitor): it is limited as a new one and goes on error as if made here.
  virtual Result<> create(const oci::Resources* res, bool adopt = false) = 0;
  // Applies `res` to the existing cgroup, live. Fields `res` leaves out stay as
  // they are. On error (one line naming the field and the value) every control
  // file the call wrote holds its old value again.
  virtual Result<> apply(const oci::Resources& res) = 0;
  virtual Result<> add_pid(pid_t pid) = 0;
  // The container's first process is in the cgroup (cloned there, or placed
  // by add_pid): what create() put in it to hold it open may go (systemd).
  virtual void joined() {}
  // v1: the `tasks` files a single-threaded process writes "0" to, to move
  // itself. Moving oneself as a thread skips the threadgroup lock (and the RCU
  // grace period it costs, about 1 ms) that any write to cgroup.procs takes.
  // Empty on v2, where a clone lands in its cgroup directly.
  virtual std::vector<std::string> self_join_files() const { return {}; }
  // An O_DIRECTORY fd of the v2 cgroup for clone3(CLONE_INTO_CGROUP); invalid on v1.
  virtual UniqueFd dir_fd() { return {}; }
  // Every process in the cgroup and in the cgroups made beneath it.
  virtual Result<std::vector<pid_t>> pids() = 0;
  virtual Result<> freeze(bool frozen) = 0;
  virtual Result<bool> frozen() = 0;
  // Kills every process in the cgroup with `sig`.
  virtual Result<> kill_all(int sig) = 0;
  // Removes the cgroup and the cgroups made beneath it, killing what is left.
  virtual Result<> destroy() = 0;
  virtual Result<Stats> stats() = 0;
  virtual Result<std::unique_ptr<OomWatcher>> watch_oom() = 0;
  // Path (relative to a hierarchy root) the container uses, e.g. "/berth/web".
  virtual const std::string& path() const = 0;
  // Directory of the given v1 controller ("memory") or the v2 directory ("").
  virtual std::string dir(const std::string& controller) const = 0;
  virtual Mode mode() const = 0;
};

// A manager for `path` ("/a/b", relative paths are taken from the hierarchy root).
Result<std::unique_ptr<Manager>> open(const Layout& layout, const std::string& path);
// rmdir of the cgroup `path` ("/a") in every hierarchy of this host: it goes
// where it is empty and stays where it holds a process or a child cgroup.
// For one made ahead of a start that did not take it (berth's early monitor).
void remove_if_empty(const std::string& path);
// The manager of an existing container's cgroup at `path`: the systemd
// driver's (systemd.h) when `systemd` made it, else cgroupfs's.
Result<std::unique_ptr<Manager>> open_existing(const Layout& layout, const std::string& path, bool systemd);

// Conversions shared with the v2 manager and tested directly.
uint64_t shares_to_weight(uint64_t shares);
// blkio.weight [10, 1000] to io.weight [1, 10000], as runc and crun convert.
uint64_t blkio_to_io_weight(uint64_t weight);
std::string cpu_max(std::optional<int64_t> quota, std::optional<uint64_t> period);
// Whether a v1 controller name belongs to `h` ("cpu" matches "cpu,cpuacct").
bool has_controller(const Hierarchy& h, const std::string& name);

}  // namespace berth::cgroup
