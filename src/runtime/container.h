// The OCI runtime operations, one function per runc verb. Each takes the global
// options (state root, cgroup driver) and its own.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "oci/spec.h"
#include "util/error.h"
#include "util/fd.h"

namespace berth::cgroup {
struct Layout;
}

namespace berth::runtime {

struct Globals {
  std::string root = "/run/berth-runtime";
  bool systemd_cgroup = false;
  bool rootless = false;
  // Where compiled seccomp programs are kept (seccomp::compile_cached); "" compiles each time.
  std::string seccomp_cache;
};

struct CreateOptions {
  std::string id;
  std::string bundle = ".";
  std::string console_socket;
  std::string pid_file;
  std::string pidfd_socket;
  bool no_pivot = false;
  bool no_new_keyring = false;
  // The bundle outlives the container and its config.json stays as it was
  // (berth's engine: the container's directory): the state keeps no copy of
  // it, and exec, start and delete read the bundle's. One file fewer per start.
  bool config_in_bundle = false;
  int preserve_fds = 0;
  // A network namespace made beforehand (make_netns()), taken in place of a
  // new one when the config asks for a new one and no user namespace: its
  // making (the slowest of the namespaces, ~0.5 ms) is then off the start's
  // path. berth's early monitor makes it while the CLI creates the container.
  int netns_fd = -1;
  // The config's linux.cgroupsPath, made empty for this container by the
  // caller a moment ago (cgroup::Manager::create(nullptr), cgroupfs driver):
  // taken over as if made here (limited as new, removed on error). berth's
  // early monitor makes it while the CLI creates the container.
  std::string cgroup_made;
  // The host's cgroup layout as the caller found it a moment ago (berth's
  // early monitor, making cgroup_made): not read again from mountinfo.
  const cgroup::Layout* cgroup_layout = nullptr;
  // The device rules the caller has applied to cgroup_made already, in order
  // (berth's early monitor: those of a container without --device or
  // --privileged): when the config's, with the runtime's defaults added
  // (add_default_device_rules), are the same, they are not applied again.
  const std::vector<oci::DeviceCgroupRule>* cgroup_devices_applied = nullptr;
  // launch(): the bundle's config.json as the caller has it already, read
  // and parsed (berth's early monitor, sent it by the CLI as soon as it was
  // made, parses it while the CLI finishes): taken (moved) in place of
  // reading the file, which holds the same text.
  oci::Spec* config_spec = nullptr;
  const std::string* config_text = nullptr;
  // launch(): hand the caller the container's new mount namespace
  // (Launched::mount_ns). Its holder outlives the container's last process,
  // so that process's exit does not tear the namespace down (its mounts
  // unmounted, an RCU grace period waited for, between its exit and our
  // SIGCHLD); the holder does, when it closes the fd. Only a direct
  // (vfork-style) start of a new mount namespace sends it; else it is empty.
  bool keep_mount_ns = false;
};

// The devices every container may use whatever its config's rules say (as
// runc allows them), added after those rules when it has any.
void add_default_device_rules(oci::Resources& r, const oci::Spec& spec);

Result<> create(const Globals& g, const CreateOptions& o);
Result<> start(const Globals& g, const std::string& id);
// The config.json a container was created with (see config_in_bundle).
Result<std::string> saved_config(const std::string& root, const std::string& id);
// create + start; in the foreground returns the container's exit status
// (128+signal when killed) after forwarding signals and deleting it (unless keep).
Result<int> run(const Globals& g, const CreateOptions& o, bool detach, bool keep);
// The engine's start: create + start at once, in-process, for a caller that
// stays the container's parent (berth's monitor). The container's stdio are
// this process's fds 0-2, or with process.terminal a pty whose master is
// returned. The caller reaps the container and calls remove() afterwards.
struct Launched {
  pid_t pid = 0;
  UniqueFd pidfd;
  UniqueFd console;  // the pty master (process.terminal), else empty
  UniqueFd mount_ns;  // CreateOptions::keep_mount_ns, when it could be had
  bool cgroup_adopted = false;  // CreateOptions::cgroup_made was taken over
  // It is the first process of a pid namespace of its own: its end ended
  // every process of the container.
  bool own_pid_ns = false;
};
// launch()'s first steps, for a caller that has the config before it may
// start the container (berth's early monitor: the CLI sends the spec while
// it finishes the create, the command line after it, and the container's
// directory has its name only then): the seccomp program, the state
// directory and its lock, the cgroup taken over, the namespaces planned, the
// sync socket. None of the bundle's files is looked at (its rootfs, its bind
// mounts' sources): launch() does, as it goes on from there with the same
// options. The caller's signal dispositions are read now: it changes none
// before the launch. Dropped unused, what it made is undone.
struct LaunchPrep;
struct LaunchPrepDeleter {
  void operator()(LaunchPrep* p) const;
};
using PreparedLaunch = std::unique_ptr<LaunchPrep, LaunchPrepDeleter>;
Result<PreparedLaunch> prepare_launch(const Globals& g, const CreateOptions& o);
Result<Launched> launch(const Globals& g, const CreateOptions& o, PreparedLaunch prepared = {});

Result<std::string> state(const Globals& g, const std::string& id);
Result<> kill(const Globals& g, const std::string& id, int sig, bool all);
Result<> remove(const Globals& g, const std::string& id, bool force);
Result<> pause(const Globals& g, const std::string& id);
Result<> resume(const Globals& g, const std::string& id);
Result<std::vector<pid_t>> pids(const Globals& g, const std::string& id);

// Changes the resource limits of a created, running or paused container, live;
// on error the cgroup is left as it was.
Result<> update(const Globals& g, const std::string& id, const oci::Resources& res);
// One runc "stats" event: {"type":"stats","id":ID,"data":{...}}.
Result<std::string> stats_event(const Globals& g, const std::string& id);
// runc's event stream: a stats event every `interval_ms`, an {"type":"oom"}
// event as soon as the kernel reports an OOM in the container's cgroup. Ends
// when the container stops.
Result<> events(const Globals& g, const std::string& id, int interval_ms,
                const std::function<void(const std::string&)>& emit);

struct ListEntry {
  std::string id, status, bundle, created, owner;
  pid_t pid = 0;
};
Result<std::vector<ListEntry>> list(const Globals& g);

struct ExecOptions {
  std::string id;
  std::string process_file;  // -p
  std::vector<std::string> args;
  bool tty = false, detach = false, no_new_privs = false, ignore_paused = false;
  std::string console_socket, pidfd_socket, cwd, user, pid_file, process_label, apparmor;
  std::vector<std::string> env, caps, additional_gids;
  int preserve_fds = 0;
};
// Returns the exit status of the exec'd process (0 with detach).
Result<int> exec(const Globals& g, const ExecOptions& o);

// Signal name or number ("KILL", "SIGKILL", "9") to its number.
Result<int> parse_signal(std::string_view s);

// The features document of `berth-runtime features`.
std::string features_json();

}  // namespace berth::runtime
