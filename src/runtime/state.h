// The per-container state directory: <root>/<id>/ (0700) holding state.json, a
// copy of the bundle's config.json as it was at create, and start.sock, the
// socket the waiting container process listens on until `start`.
#pragma once

#include <sys/types.h>

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "util/error.h"
#include "util/fd.h"

namespace berth::runtime {

enum class Status { creating, created, running, paused, stopped };
const char* status_name(Status s);

struct State {
  std::string id;
  pid_t pid = 0;
  uint64_t pid_start = 0;  // field 22 of /proc/PID/stat: tells a reused pid apart
  std::string bundle;
  std::string rootfs;
  std::string created;     // RFC 3339, UTC
  uint32_t owner = 0;
  std::string cgroup_path; // "" when the container has no cgroup of its own
  bool systemd_cgroup = false;
  std::map<std::string, std::string> annotations;
  // Namespace paths of the container's init, for exec to join.
  std::vector<std::string> namespaces;  // types: "pid", "network", ...
};

// The directory in the state root that keeps compiled seccomp programs
// (seccomp::compile_cached): not a container, so no container may be named so.
inline constexpr std::string_view kSeccompCacheDir = ".seccomp-cache";

// Validates a container id the way runc does: [A-Za-z0-9_+.-]+, not "." or "..",
// nor kSeccompCacheDir.
Result<> check_id(std::string_view id);

std::string state_dir(const std::string& root, const std::string& id);
Result<> save_state(const std::string& root, const State& st);
Result<State> load_state(const std::string& root, const std::string& id);
// Ids of every container under root.
std::vector<std::string> list_ids(const std::string& root);

// Start time of `pid` from /proc (0 when the process is gone).
uint64_t process_start_time(pid_t pid);
// Whether st.pid still names the container's init (not a reused pid, not a zombie).
bool init_alive(const State& st);
// created/running/paused/stopped, from the process, start.sock and the freezer.
Status current_status(const std::string& root, const State& st);

// The runtime-spec state document (runc's shape), as hooks and `state` print it.
std::string state_json(const State& st, Status s, bool pretty);

std::string now_rfc3339();

// --pid-file: the pid, written atomically (an empty path writes nothing).
Result<> write_pid_file(const std::string& path, pid_t pid);

// An exclusive flock(2) on the container's state directory, held while a command
// changes the container. Released on destruction.
class Lock {
 public:
  static Result<Lock> acquire(const std::string& dir);
  // Whether it is held now through another open of the directory (another
  // command at work on the container).
  static bool held_elsewhere(const std::string& dir);
  int fd() const { return fd_.get(); }

 private:
  UniqueFd fd_;
};

}  // namespace berth::runtime
