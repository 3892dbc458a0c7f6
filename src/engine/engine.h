// The engine: containers made from images, daemonless. `berth` (and later
// `berth serve`) call it; it turns an image config and Docker's create body
// into an OCI bundle, and starts each container under its own monitor
// (engine/monitor.h), which calls the runtime core in-process.
//
// On disk, under the store root:
//   berth.db                containers table (beside the image store's tables)
//   containers/<id>/        0700: config.json (the bundle), upper/ work/ rootfs/,
//                           <id>-json.log, attach.sock, exit, monitor.log, hostname, hosts,
//                           mounts.json (engine/volumes.h)
//   volumes/<name>/_data    Docker's local volumes (volumes and volume_users tables)
// and under the run root (/run/berth: gone after a reboot, as the containers are):
//   runtime/<id>/           the runtime core's state
//
// A container's truth is its init process: running while the runtime state
// names a live init, else exited, with the status the monitor wrote to `exit`
// (or 255 when no monitor saw it end). The row is brought up to date by the
// monitor's exit command (cleanup) and by whichever command next looks.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "engine/user.h"
#include "util/error.h"
#include "util/fd.h"

namespace berth::image {
class ImageStore;
class Db;
struct ImageRecord;
}  // namespace berth::image

namespace berth::engine {

struct Options {
  std::string root;         // the store root (/var/lib/berth)
  std::string runroot;      // /run/berth
  std::string berth_exe;    // for the monitor's exit command
  std::string monitor_exe;  // berth-monitor
  // A removed container's files go to the trash (util/fs.h trash_tree) for
  // the caller to empty: the CLI hands it to a child as it exits.
  bool defer_removal = false;
  std::string init_exe;     // berth-init (--init)
  // --cgroup-manager systemd: containers made now get a systemd scope
  // (system.slice:berth:<id>) instead of a cgroupfs directory.
  bool systemd_cgroup = false;
};

struct Container {
  std::string id, name, image_id, image_name;
  int64_t created = 0;                  // unix ns
  std::string config;                   // Docker's create body: Config fields + "HostConfig"
  std::string state;                    // created, running, paused, restarting, exited, removing
  pid_t pid = 0, monitor_pid = 0;
  uint64_t monitor_start = 0;
  int exit_code = 0;
  int64_t started = 0, finished = 0;    // unix ns, 0 if never
  int restart_count = 0;
  std::string error;                    // why the last start failed
  std::string dir;                      // containers/<id>
};

// A new container ID (64 hex digits), for create().
std::string new_container_id();

// Where a store's containers' runtime state lives under its runroot.
inline std::string runtime_state_root(const std::string& runroot) { return runroot + "/runtime"; }

// A monitor started before its container is made (`run`): it execs and
// loads on another CPU while the command opens the store and makes the
// container, then waits on its sync socket for the rest of its command line,
// which Engine::start sends. One never handed to start closes the socket as
// it goes, and the monitor exits without a trace.
//
// spawn() returns at once: a thread of ours posix_spawns it (posix_spawn's
// vfork stops its caller until the exec is done, some 0.4 ms here), and the
// first use waits for that thread (spawned()).
class EarlyMonitor {
 public:
  // Spawned in two steps, so that it loads (exec, libc's start: ~1 ms here)
  // while the CLI still parses its command line. spawn(): for the container
  // `id` (new_container_id(), then create()'s) to be in `dir`
  // (containers/<id>; both on its command line from the start, as on every
  // monitor's, for ps), with a starting client's socket whose other end is
  // put in `attach_ours`.
  static Result<EarlyMonitor> spawn(const std::string& monitor_exe, const std::string& id, const std::string& dir,
                                    UniqueFd* attach_ours);
  // configure(), once the command line is parsed. `attached`: the socket
  // above is its starting client, as start()'s attach_fd (else it closes it).
  // `netns`: set when the container will have a new network namespace (its
  // --network is neither host nor container:NAME), the store's spare
  // namespaces' directory (<runroot>/netns, spare.h): the monitor takes one
  // from there, or makes it, while it waits (runtime::CreateOptions::netns_fd),
  // and makes the next run's spare once its container runs. `cgroup`: its cgroup
  // under the cgroupfs driver (spec.h's container_cgroup_path), made the same way
  // (CreateOptions::cgroup_made); empty for none. `runtime_root`: the store's
  // runtime state root (Engine::runtime_root), where the monitor prepares the
  // start as the spec comes (runtime::prepare_launch); empty: it waits for the
  // command line. False if it could not be told (it is dead: start() finds it
  // so and spawns another).
  bool configure(bool attached, const std::string& netns, const std::string& cgroup,
                 const std::string& runtime_root = {});
  EarlyMonitor(EarlyMonitor&& o) noexcept;
  EarlyMonitor& operator=(EarlyMonitor&&) = delete;
  ~EarlyMonitor();
  // Waits for the spawning thread: false if the monitor could not be started.
  bool spawned();
  // start() found it dead (and reaped it) before it could take it over.
  bool lost() const { return lost_; }

 private:
  struct Spawner;
  EarlyMonitor();
  friend class Engine;
  void reap();  // closes its socket (it exits, if it waits there) and waits for it
  bool send_frame(const char* kind, const std::string& body);  // monitor.h's header, then body
  // The config.json create() made for its container: the monitor parses it
  // while the CLI finishes (monitor.h). False if it could not be sent (the
  // monitor reads the bundle's file then, or start() finds it dead).
  bool send_spec(const std::string& spec);
  pid_t pid_ = -1;
  std::string id_;
  bool attached_ = false;
  bool lost_ = false;
  UniqueFd sync_;
  std::unique_ptr<Spawner> spawner_;  // until spawned() has joined it
};

class Engine {
 public:
  static Result<std::unique_ptr<Engine>> open(image::ImageStore& store, Options o);
  ~Engine();

  // Docker's create: `body` is the create request (Image, Cmd, Env, ...,
  // HostConfig). Returns the new container; nothing is left on failure.
  // `id`: one drawn with new_container_id() (an EarlyMonitor's), else a new one.
  // `image`: the body's Image, if the caller has resolved it already.
  // `early`: the monitor started for `id` (EarlyMonitor), sent the config.json.
  Result<Container> create(std::string_view name, std::string_view body, std::vector<std::string>* warnings,
                           std::string id = {}, const image::ImageRecord* image = nullptr,
                           EarlyMonitor* early = nullptr);
  // Starts a created or exited container under a new monitor. `attach_fd`, if
  // >= 0, is handed to the monitor as an attached client from the first byte.
  // `fresh`: the container was created by this process a moment ago (run):
  // its rootfs and volumes are mounted and no earlier run left anything, so
  // the image is not resolved again nor leftovers looked for.
  // `early`: a monitor already started for it (its attach fd was given
  // then, and `attach_fd` is not used); taken over, or left to its owner
  // when the container needs none (already running).
  Result<Container> start(const std::string& name_or_id, int attach_fd = -1, bool fresh = false,
                          EarlyMonitor* early = nullptr);
  Result<> kill(const std::string& name_or_id, int sig);
  // The container's rootfs, mounted again if it is not: a reboot unmounts
  // the rootfs of every container that is not running, and an `--rm`
  // container whose removal was cut short has had it unmounted. cp and
  // export read a stopped container's files, as Docker's do.
  Result<std::string> rootfs(const Container& c);
  // SIGTERM (or the container's stop signal), then SIGKILL after `timeout_s`.
  Result<> stop(const std::string& name_or_id, int timeout_s);
  Result<> remove(const std::string& name_or_id, bool force, bool volumes);
  Result<> pause(const std::string& name_or_id);
  Result<> unpause(const std::string& name_or_id);
  // Blocks until the container is not running (its monitor's cleanup done); its exit code.
  Result<int> wait(const std::string& name_or_id);
  Result<> rename(const std::string& name_or_id, const std::string& new_name);

  // By full name (with or without "/"), full ID or a unique ID prefix.
  Result<Container> find(std::string_view name_or_id);
  Result<std::vector<Container>> list();
  // Docker's inspect document.
  Result<std::string> inspect(const Container& c);
  std::string log_path(const Container& c) const;
  std::string runtime_root() const { return runtime_state_root(opt_.runroot); }
  // A container's runtime state and cgroup (what cleanup(id, &left) left).
  Result<> remove_runtime(const std::string& id);
  std::vector<pid_t> pids(const Container& c);
  const std::string& monitor_exe() const { return opt_.monitor_exe; }
  // `-u` of exec, resolved in the container's rootfs.
  Result<ExecUser> resolve_user(const Container& c, const std::string& spec);

  // The monitor's exit command: records the exit, removes an --rm container,
  // restarts per policy (after Docker's back-off, during which the container
  // is "restarting" and stop or rm -f cancel the restart).
  // `runtime_left` (a foreground run's client, whose monitor is still there):
  // an --rm container's runtime state and cgroup are left for the monitor to
  // remove as it exits (kRemoveTrash), and *runtime_left says so.
  // `exit`: the exit code and time (unix ns) the monitor sent in its kExit
  // frame, if the caller has them; else its exit file says.
  struct Exit {
    int code = 255;
    int64_t when = 0;
  };
  Result<> cleanup(const std::string& id, bool* runtime_left = nullptr, const Exit* exit = nullptr);

  // `commit`: a new image whose top layer is the container's changes (its
  // overlay upper dir in OCI layer form) and whose config is the image's with
  // the container's Cmd/Env/... and `changes` (Dockerfile instructions).
  // Returns the new image ID ("sha256:...").
  struct CommitOptions {
    std::string reference;  // repo[:tag], may be empty
    std::vector<std::string> changes;
    std::string message, author;
    bool pause = true;
  };
  Result<std::string> commit(const std::string& name_or_id, const CommitOptions& o);
  // LXC's clone: a new container named `new_name` with a stopped
  // container's config and a copy of its writable layer (reflinked where the
  // filesystem can).
  Result<Container> clone(const std::string& name_or_id, const std::string& new_name);
  // Removes every stopped container; returns their IDs.
  Result<std::vector<std::string>> prune();

  // A connection to the container's monitor (engine/attach.h protocol).
  Result<UniqueFd> attach(const Container& c);

  // The event log (`berth events`): Docker's event JSON, one per line.
  std::string events_path() const;
  Result<> record_event(const Container& c, std::string_view action,
                        const std::vector<std::pair<std::string, std::string>>& attrs = {});
  // Whole lines (O_APPEND: several berths' lines never interleave).
  Result<> append_events(const std::string& lines);

 private:
  Engine() = default;
  Result<Container> load(std::string_view id);
  Result<> repair();
  std::string container_dir(std::string_view id) const;  // containers/<id> in the store root
  Result<> reconcile(Container& c);
  Result<> save_state(const Container& c);
  // The statements a start's record and its container's cleanup will run,
  // parsed while the monitor launches the container (Db::prepare).
  void prepare_for_exit();
  // volumes: its anonymous volumes too; keep_runtime: its runtime state and
  // cgroup are someone else's to remove.
  Result<> remove_locked(Container& c, bool volumes = false, bool keep_runtime = false);
  Result<> wait_monitor(const Container& c, int timeout_ms);
  // A file whose presence says a user stopped the container (no restart).
  std::string stopped_marker(const Container& c) const;

  image::ImageStore* store_ = nullptr;
  image::Db* db_ = nullptr;
  Options opt_;
};

// A random adjective_surname, as Docker names containers.
std::string random_name();

}  // namespace berth::engine
