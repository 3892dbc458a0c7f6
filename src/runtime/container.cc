#include "runtime/container.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>  // renameat2
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/single_threaded.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <functional>

#include "cgroup/cgroup.h"
#include "cgroup/systemd.h"
#include "runtime/foreground.h"
#include "runtime/hooks.h"
#include "runtime/init.h"
#include "runtime/process.h"
#include "runtime/namespaces.h"
#include "runtime/netdev.h"
#include "runtime/seccomp.h"
#include "runtime/state.h"
#include "runtime/sync.h"
#include "runtime/terminal.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/syscalls.h"

namespace berth::runtime {

namespace {

// Rolls back a multi-step operation: every step registers its undo, and unless
// release() is called the undos run in reverse order on scope exit.
class Cleanup {
 public:
  ~Cleanup() {
    if (!armed_) return;
    for (auto it = undo_.rbegin(); it != undo_.rend(); ++it) (*it)();
  }
  void add(std::function<void()> f) { undo_.push_back(std::move(f)); }
  void release() { armed_ = false; }
  // `other`'s undo steps become ours (after ours), and it is disarmed.
  void take(Cleanup& other) {
    for (auto& f : other.undo_) undo_.push_back(std::move(f));
    other.undo_.clear();
    other.armed_ = false;
  }

 private:
  std::vector<std::function<void()>> undo_;
  bool armed_ = true;
};

std::string absolute(const std::string& p) {
  if (!p.empty() && p[0] == '/') return clean_path(p);
  char cwd[4096];
  if (!::getcwd(cwd, sizeof cwd)) return clean_path(p);
  return clean_path(join_path(cwd, p));
}

// Where the container's cgroup goes when the config names none: one level, so
// delete leaves nothing behind (no shared parent to prune or race on).
std::string default_cgroup_path(const std::string& id) { return "/berth-" + id; }

Result<UniqueFd> listen_unix(const std::string& dir, const char* name) {
  UniqueFd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!s) return sys_error("socket");
  UniqueFd d(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!d) return sys_error("open " + dir);
  // Bind through the directory fd so a long --root never hits sun_path's limit.
  std::string p = fd_path(d.get()) + "/" + name;
  struct sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, p.c_str(), p.size() + 1);
  if (::bind(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) return sys_error("bind " + dir + "/" + name);
  if (::listen(s.get(), 1) < 0) return sys_error("listen");
  return s;
}

// What create leaves for run and start: the container's init.
struct Created {
  State st;
  UniqueFd pidfd;
  UniqueFd mount_ns;  // CreateOptions::keep_mount_ns
  oci::Spec spec;
  bool cgroup_adopted = false;  // CreateOptions::cgroup_made was taken over
};

struct NsPlan {
  int clone_flags = 0;
  InitContext init;
  UniqueFd join_pid, join_time;  // entered by the parent around clone
  bool new_time = false;
};

// `netns_fd` (or -1): a network namespace made beforehand for this container
// (CreateOptions::netns_fd), joined in place of a new one.
Result<NsPlan> plan_namespaces(const oci::Spec& spec, const cgroup::Layout* layout, int netns_fd) {
  NsPlan p;
  const oci::Namespace* user = spec.ns("user");
  bool joined_user = user && !user->path.empty();
  if (!spec.linux) return p;
  std::vector<std::pair<int, UniqueFd>> joins;
  for (auto& ns : spec.linux->namespaces) {
    int flag = ns_flag(ns.type);
    if (!ns.path.empty()) {
      UniqueFd fd = TRY(open_ns(ns));
      if (flag == CLONE_NEWPID)
        p.join_pid = std::move(fd);
      else if (flag == CLONE_NEWTIME)
        p.join_time = std::move(fd);
      else if (flag == CLONE_NEWUSER)
        joins.insert(joins.begin(), {flag, std::move(fd)});
      else
        joins.emplace_back(flag, std::move(fd));
      continue;
    }
    if (flag == CLONE_NEWNET && netns_fd >= 0 && !user) {
      // Made by our caller in the user namespace a new one would have had
      // (ours): the same empty namespace, its making off the start's path.
      UniqueFd fd(::fcntl(netns_fd, F_DUPFD_CLOEXEC, 3));
      if (!fd) return sys_error("network namespace made beforehand");
      joins.emplace_back(flag, std::move(fd));
    } else if (flag == CLONE_NEWTIME) {
      p.new_time = true;
    } else if (flag == CLONE_NEWCGROUP) {
      // Unshared by the child once it is in its cgroup, so the namespace is
      // rooted there.
      p.init.unshare_flags |= CLONE_NEWCGROUP;
    } else if (joined_user) {
      // Namespaces owned by the joined user namespace must be made after
      // joining it: by unshare in the child (and a fork for pid).
      if (flag == CLONE_NEWPID)
        p.init.fork_for_pid = true;
      else
        p.init.unshare_flags |= flag;
    } else {
      p.clone_flags |= flag;
    }
  }
  p.init.new_netns = ((p.clone_flags | p.init.unshare_flags) & CLONE_NEWNET) != 0;
  p.init.joins = std::move(joins);
  p.init.new_mountns = spec.ns("mount") != nullptr;
  p.init.plan.new_userns = user && user->path.empty();
  p.init.plan.new_cgroupns = (p.init.unshare_flags & CLONE_NEWCGROUP) != 0;
  p.init.plan.cgroup_layout = layout;
  if (p.init.new_mountns && !spec.ns("mount")->path.empty())
    p.init.new_mountns = false;  // joined: the rootfs there is not ours to set up
  return p;
}

// Enters `fd`'s namespace for our future children only (pid, time), returning a
// handle on the one we leave so it can be restored after clone.
Result<UniqueFd> enter_for_children(int fd, int flag, const char* self_name) {
  UniqueFd old(::open((std::string("/proc/self/ns/") + self_name).c_str(), O_RDONLY | O_CLOEXEC));
  if (!old) return sys_error(std::string("open /proc/self/ns/") + self_name);
  if (::setns(fd, flag) < 0) return sys_error(std::string("join ") + self_name + " namespace");
  return old;
}

struct Bundle {
  std::string dir;
  std::string text;  // config.json as read
  oci::Spec spec;
};

Result<Bundle> load_bundle(const std::string& path) {
  Bundle b;
  b.dir = absolute(path);
  b.text = TRY(read_file(join_path(b.dir, "config.json")));
  b.spec = TRY(oci::parse_spec(b.text));
  return b;
}

}  // namespace

void add_default_device_rules(oci::Resources& r, const oci::Spec& spec) {
  auto allow = [&](const char* type, int64_t maj, int64_t min) {
    oci::DeviceCgroupRule d;
    d.allow = true;
    d.type = type;
    if (maj >= 0) d.major = maj;
    if (min >= 0) d.minor = min;
    d.access = "rwm";
    r.devices.push_back(d);
  };
  allow("c", 1, 3);    // null
  allow("c", 1, 5);    // zero
  allow("c", 1, 7);    // full
  allow("c", 1, 8);    // random
  allow("c", 1, 9);    // urandom
  allow("c", 5, 0);    // tty
  allow("c", 5, 1);    // console
  allow("c", 5, 2);    // ptmx
  allow("c", 136, -1); // pts/*
  if (spec.linux)
    for (auto& d : spec.linux->devices)
      if (d.type == "c" || d.type == "b" || d.type == "u") allow(d.type == "b" ? "b" : "c", d.major, d.minor);
}

// The config a container was created with: the state's copy, or the bundle's
// where the state keeps none (CreateOptions::config_in_bundle).
Result<std::string> saved_config(const std::string& root, const std::string& id) {
  auto text = read_file(state_dir(root, id) + "/config.json");
  if (text || text.error().err != ENOENT) return text;
  State st = TRY(load_state(root, id));
  return read_file(join_path(st.bundle, "config.json"));
}

namespace {

// --systemd-cgroup: a transient systemd unit named by "slice:prefix:name".
Result<std::unique_ptr<cgroup::Manager>> systemd_cgroup(const Globals& g, const oci::Spec& spec,
                                                        const cgroup::Layout& layout, const std::string& id) {
  std::string p = spec.linux ? spec.linux->cgroups_path : "";
  cgroup::SystemdUnit unit = TRY(cgroup::parse_systemd_path(p, id, g.rootless));
  if (g.rootless)
    return fail("--systemd-cgroup: rootless containers would need the user's systemd instance, which berth does not "
                "drive; drop --systemd-cgroup");
  if (!cgroup::systemd_running())
    return fail("--systemd-cgroup: systemd is not running on this host (no /run/systemd/system); "
                "use the cgroupfs driver (drop --systemd-cgroup)");
  return cgroup::open_systemd(layout, unit);
}

// The state of a vfork-style start (see do_create): the child's own stack,
// and what the parent takes back once it runs again.
class DirectStart {
 public:
  DirectStart() = default;
  DirectStart(const DirectStart&) = delete;
  DirectStart& operator=(const DirectStart&) = delete;
  ~DirectStart() {
    if (map_) ::munmap(map_, kMapSize);
  }

  // The child shares our memory but not our stack: it gets one of its own
  // (touched pages only; a guard page below).
  Result<> prepare(InitContext* ic, int parent_sock) {
    ic_ = ic;
    parent_sock_ = parent_sock;
    ic->direct = true;
    void* m = ::mmap(nullptr, kMapSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK,
                     -1, 0);
    if (m == MAP_FAILED) return sys_error("mmap the container process's stack");
    map_ = m;
    if (::mprotect(map_, kGuard, PROT_NONE) < 0) return sys_error("mprotect stack guard");
    dumpable_ = ::prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
    return {};
  }
  uint64_t stack() const { return reinterpret_cast<uint64_t>(map_) + kGuard; }
  uint64_t stack_size() const { return kMapSize - kGuard; }

  static int child(void* p) {
    auto* d = static_cast<DirectStart*>(p);
    // Our fd table is a copy: closing here leaves the parent's end open.
    ::close(d->parent_sock_);
    init_container(*d->ic_);
  }

  // In the parent, once the child has exec'd (it has a memory of its own
  // then) or died. PR_SET_DUMPABLE belongs to the memory, which the child
  // cleared for itself (CVE-2019-5736): ours again.
  void restore() const {
    // (2, suid_dumpable's "root only", cannot be set through prctl.)
    if (dumpable_ == 1) ::prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
  }

 private:
  static constexpr size_t kMapSize = 1 << 20, kGuard = 4096;
  InitContext* ic_ = nullptr;
  int parent_sock_ = -1;
  void* map_ = nullptr;
  int dumpable_ = -1;
};

// Where a start prepared ahead keeps its state until the launch (Prepared::ahead).
std::string prepared_state_dir(const std::string& root, const std::string& id) { return root + "/.prep-" + id; }

// A create's work up to the clone that needs the config but none of the
// bundle's files (its rootfs, the sources of its bind mounts): the seccomp
// program, the state directory and its lock, the cgroup, the namespaces to
// join, the sync socket. What it made is undone by `cleanup` until the
// create finishes (finish_create), or when dropped. Kept at one address: the
// init context points into it.
struct Prepared {
  Globals g;
  std::string id;
  bool inline_start = true;
  // Made ahead of the start (prepare_launch): another command may start the
  // same container meanwhile. The state directory is made under a name of
  // its own and takes the container's only if that is still free; a cgroup
  // taken over is left to whoever uses it, if the preparation is dropped.
  bool ahead = false;
  std::string bundle, pid_file, pidfd_socket, rootfs, dir, cg_path, cgroup_path;
  oci::Spec spec;
  std::optional<seccomp::Program> filter;
  std::optional<Lock> lock;
  Cleanup cleanup;
  std::shared_ptr<cgroup::Manager> cg;
  cgroup::Layout layout;  // (the init context's plan points at it)
  bool adopt = false, v2 = false, self_join = false;
  bool asked_early = false;  // ic.reset_signals and the time zone already (ahead)
  oci::Resources late_devices;
  NsPlan ns;
  UniqueFd parent_sock, child_sock, listener, console;
  UniqueFd console_ours;  // launch(): our end of the terminal's socket
};

// `inline_start`: `run`; the container execs as soon as it is set up, and
// finish_create returns once it did. Otherwise the child waits on start.sock
// for `start`.
Result<std::unique_ptr<Prepared>> prepare_create(const Globals& g, const CreateOptions& o, Bundle&& b,
                                                 bool inline_start, UniqueFd console_in = {}, bool ahead = false) {
  auto prepared = std::make_unique<Prepared>();
  Prepared& p = *prepared;
  p.g = g;
  p.id = o.id;
  p.inline_start = inline_start;
  p.ahead = ahead;
  p.console = std::move(console_in);
  std::string& bundle = p.bundle;
  bundle = b.dir;
  oci::Spec& spec = p.spec;
  spec = std::move(b.spec);
  // The caller's relative paths, resolved before we chdir to the bundle.
  p.pid_file = o.pid_file.empty() ? "" : absolute(o.pid_file);
  p.pidfd_socket = o.pidfd_socket.empty() ? "" : absolute(o.pidfd_socket);
  UniqueFd& console = p.console;
  Cleanup& cleanup = p.cleanup;
  if (!spec.process) return fail("config.json: process is required to create a container");
  if (spec.process->terminal && o.console_socket.empty() && !console)
    return fail("process.terminal is set: --console-socket is required");
  // (Looked at by finish_create: the bundle may not be in place yet.)
  std::string& rootfs = p.rootfs;
  rootfs = spec.root_path[0] == '/' ? clean_path(spec.root_path) : clean_path(join_path(bundle, spec.root_path));
  if (!spec.ns("mount") && !spec.mounts.empty())
    return fail("config.json: mounts need a mount namespace");
  if (spec.linux)
    for (auto& [k, v] : spec.linux->sysctl) TRY(sysctl_path(spec, k));
  if (spec.linux && !spec.linux->mount_label.empty() && ::access("/sys/fs/selinux/enforce", F_OK) != 0)
    log::debug("linux.mountLabel ignored: SELinux is not enabled");
  std::optional<seccomp::Program>& filter = p.filter;
  if (spec.linux && spec.linux->seccomp)
    filter = TRY(g.seccomp_cache.empty() ? seccomp::compile(*spec.linux->seccomp)
                                         : seccomp::compile_cached(*spec.linux->seccomp, g.seccomp_cache));

  TRY(mkdir_p(g.root, 0700));
  std::string& dir = p.dir;
  dir = ahead ? prepared_state_dir(g.root, o.id) : state_dir(g.root, o.id);
  if (::mkdir(dir.c_str(), 0700) < 0) {
    if (errno == EEXIST) return fail("container \"" + o.id + "\" already exists");
    return sys_error("mkdir " + dir);
  }
  cleanup.add([dir] { (void)remove_tree(dir); });
  p.lock = TRY(Lock::acquire(dir));
  if (!o.config_in_bundle) TRY(atomic_write_file(dir + "/config.json", b.text));

  // The cgroup, made before the clone. The container process is in it before
  // it runs anything of its own: on v2 the clone lands there
  // (CLONE_INTO_CGROUP); on v1 the child moves itself first thing, unless a new
  // user namespace takes its rights on cgroupfs, and then the parent places it.
  // Shared with the cleanup, which may run after this function returned.
  std::shared_ptr<cgroup::Manager>& cg = p.cg;
  cgroup::Layout& layout = p.layout;
  layout = o.cgroup_layout ? *o.cgroup_layout : TRY(cgroup::detect_layout());
  std::string& cg_path = p.cg_path;
  cg_path = spec.linux && !spec.linux->cgroups_path.empty() ? spec.linux->cgroups_path
                                                                         : default_cgroup_path(o.id);
  if (g.systemd_cgroup)
    cg = TRY(systemd_cgroup(g, spec, layout, o.id));
  else
    cg = TRY(cgroup::open(layout, cg_path));
  oci::Resources res = spec.linux && spec.linux->resources ? *spec.linux->resources : oci::Resources{};
  if (!res.devices.empty()) add_default_device_rules(res, spec);
  bool& adopt = p.adopt;
  adopt = !g.systemd_cgroup && !o.cgroup_made.empty() && clean_path("/" + o.cgroup_made) == clean_path("/" + cg_path);
  // The very rules the caller put on the cgroup it made for us a moment ago
  // (empty then, and still: nothing runs in it): not written again.
  if (adopt && o.cgroup_devices_applied && res.devices == *o.cgroup_devices_applied)
    res.devices.clear();
  bool& v2 = p.v2;
  v2 = layout.mode == cgroup::Mode::unified;
  // On v2 the device rules are an eBPF program whose load (the verifier) is
  // the slowest step of making the cgroup: it is loaded and attached after the
  // clone, while the child sets up its mounts, and before kGo, so before the
  // container runs anything of its own.
  oci::Resources& late_devices = p.late_devices;
  if (v2) late_devices.devices = std::move(res.devices), res.devices.clear();
  auto make_cgroup = [&]() -> Result<> {
    if (auto r = cg->create(&res, adopt); !r) {
      if (!g.rootless) return std::unexpected(std::move(r).error().context("cgroup " + cg_path));
      log::debug("rootless: no cgroup: " + r.error().str());
      cg.reset();
    }
    if (cg && ahead) cleanup.add([path = cg->path()] { cgroup::remove_if_empty(path); });
    else if (cg) cleanup.add([cg] { (void)cg->destroy(); });
    return {};
  };
  TRY(make_cgroup());

  p.ns = TRY(plan_namespaces(spec, cg ? &layout : nullptr, o.netns_fd));
  NsPlan& ns = p.ns;
  std::string& cgroup_path = p.cgroup_path;
  cgroup_path = cg ? cg->path() : "";
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) return sys_error("socketpair");
  p.parent_sock.reset(sv[0]);
  p.child_sock.reset(sv[1]);
  UniqueFd& child_sock = p.child_sock;
  UniqueFd& listener = p.listener;
  if (!inline_start) listener = TRY(listen_unix(dir, "start.sock"));
  if (!o.console_socket.empty()) console = TRY_CTX(connect_unix(o.console_socket), "--console-socket");

  InitContext& ic = ns.init;
  ic.spec = &spec;
  ic.id = o.id;
  ic.sync_fd = child_sock.get();
  ic.listen_fd = listener ? listener.get() : -1;
  ic.hook_handshake = !spec.hooks.prestart.empty() || !spec.hooks.create_runtime.empty() ||
                      !spec.hooks.create_container.empty();
  ic.console_fd = console ? console.get() : -1;
  ic.preserve_fds = o.preserve_fds;
  ic.no_new_keyring = o.no_new_keyring;
  ic.plan.spec = &spec;
  ic.plan.rootfs = rootfs;
  ic.plan.no_pivot = o.no_pivot;
  ic.plan.cgroup_path = cgroup_path;
  bool& self_join = p.self_join;
  self_join = cg && !v2 && !ic.plan.new_userns && !ns.init.fork_for_pid;
  if (self_join) ic.cgroup_tasks = cg->self_join_files();
  self_join = self_join && !ic.cgroup_tasks.empty();
  ic.seccomp = filter ? &*filter : nullptr;
  if (ahead) {
    // What the launch would ask of the kernel before its clone, asked now
    // (~0.1 ms less between the command line and the clone): the signals'
    // dispositions (the caller changes none before its launch) and the
    // host's time zone.
    ic.reset_signals = signals_not_default();
    p.asked_early = true;
    ::tzset();
  }
  return prepared;
}

// The rest of a create: the clone and what follows. `cleanup` takes over
// what the preparation made.
Result<Created> finish_create(Prepared& p, const CreateOptions& o, Cleanup& cleanup) {
  cleanup.take(p.cleanup);
  if (p.ahead) {
    // The container's state directory, unless another start made it meanwhile.
    std::string dir = state_dir(p.g.root, p.id);
    if (::renameat2(AT_FDCWD, p.dir.c_str(), AT_FDCWD, dir.c_str(), RENAME_NOREPLACE) < 0) {
      if (errno == EEXIST) return fail("container \"" + p.id + "\" already exists");
      return sys_error("rename " + p.dir + " to " + dir);
    }
    p.dir = dir;
    cleanup.add([dir] { (void)remove_tree(dir); });
    // Ours from here: a failed start takes it down with what it holds.
    if (p.cg) cleanup.add([cg = p.cg] { (void)cg->destroy(); });
  }
  const Globals& g = p.g;
  const bool inline_start = p.inline_start;
  const std::string& bundle = p.bundle;
  oci::Spec& spec = p.spec;
  const std::string& rootfs = p.rootfs;
  std::optional<seccomp::Program>& filter = p.filter;
  std::shared_ptr<cgroup::Manager>& cg = p.cg;
  const std::string& cg_path = p.cg_path;
  const std::string& cgroup_path = p.cgroup_path;
  const bool adopt = p.adopt, v2 = p.v2, self_join = p.self_join;
  oci::Resources& late_devices = p.late_devices;
  NsPlan& ns = p.ns;
  InitContext& ic = ns.init;
  UniqueFd& parent_sock = p.parent_sock;
  UniqueFd& child_sock = p.child_sock;
  UniqueFd& listener = p.listener;
  UniqueFd& console = p.console;
  const std::string& pid_file = p.pid_file;
  const std::string& pidfd_socket = p.pidfd_socket;
  {
    struct stat st;
    if (::stat(rootfs.c_str(), &st) < 0) return sys_error("root.path " + rootfs);
    if (!S_ISDIR(st.st_mode)) return fail("root.path " + rootfs + ": not a directory");
  }
  // Asked here (or by an early preparation, whose caller then changes
  // none): the child inherits exactly these dispositions.
  if (!p.asked_early) ic.reset_signals = signals_not_default();

  // Bind-mount sources given as relative paths are relative to the bundle.
  if (::chdir(bundle.c_str()) < 0) return sys_error("chdir " + bundle);

  UniqueFd restore_pid, restore_time;
  if (ns.join_pid) restore_pid = TRY(enter_for_children(ns.join_pid.get(), CLONE_NEWPID, "pid"));
  if (ns.join_time) restore_time = TRY(enter_for_children(ns.join_time.get(), CLONE_NEWTIME, "time"));
  if (ns.new_time) {
    restore_time.reset(::open("/proc/self/ns/time", O_RDONLY | O_CLOEXEC));
    if (::unshare(CLONE_NEWTIME) < 0) return sys_error("unshare time namespace");
    TRY(write_time_offsets(spec.linux->time_offsets));
  }

  struct clone_args ca = {};
  int pidfd = -1;
  ca.flags = static_cast<uint64_t>(ns.clone_flags) | CLONE_PIDFD;
  ca.pidfd = reinterpret_cast<uint64_t>(&pidfd);
  ca.exit_signal = SIGCHLD;
  UniqueFd cgfd = cg && v2 ? cg->dir_fd() : UniqueFd();
  if (cgfd) {
    ca.flags |= CLONE_INTO_CGROUP;
    ca.cgroup = static_cast<uint64_t>(cgfd.get());
  }
  // A `run` whose container process needs nothing from us between clone and
  // exec starts vfork-style (CLONE_VM | CLONE_VFORK): no page tables to copy,
  // no copy-on-write faults in the child, nothing for its exec to tear down,
  // and the child runs at once on our CPU while we sleep until it has exec'd
  // (or died, its error waiting on the socket). On a VM where a page fault
  // costs 15 us, that is a few milliseconds of a start. Anything that needs
  // the parent in between (user namespace maps, hooks, the extra fork of a
  // joined pid namespace, a parent-placed cgroup, network devices, a seccomp
  // listener the container could block on) takes the fork-style path.
  // A time namespace other than ours for the children is refused with
  // CLONE_VM by kernels before 6.x's timens-on-exec; a second thread would
  // run beside a child that shares its memory (and glibc's set*id broadcast
  // would walk our threads from the child).
  DirectStart direct;
  bool vfork_ok = sys::kHaveClone3Fn && inline_start && !ic.plan.new_userns && !ic.hook_handshake &&
                  !ic.fork_for_pid && !ns.new_time && !ns.join_time && spec.hooks.start_container.empty() &&
                  !(spec.linux && !spec.linux->net_devices.empty()) && !(filter && filter->notify) &&
                  (!cg || cgfd || self_join) && __libc_single_threaded;
  long pid = -1;
  int clone_errno = 0;
  // The mount namespace for the caller: a direct start's child sends it
  // before anything else, and we read it once it has exec'd.
  ic.send_mount_ns = vfork_ok && o.keep_mount_ns && (ns.clone_flags & CLONE_NEWNS);
  UniqueFd mount_ns;
  if (vfork_ok) {
    if (cg && !late_devices.devices.empty()) {
      // The cgroup is still empty: the device rules go on before the clone.
      TRY_CTX(cg->apply(late_devices), "cgroup " + cg_path);
      late_devices.devices.clear();
    }
    TRY(direct.prepare(&ic, parent_sock.get()));
    // The child may log (gmtime_r): glibc's time zone is read once, into
    // memory we share, and must be the host's, not the container's (read
    // already by an early preparation).
    if (!p.asked_early) ::tzset();
    ca.flags |= CLONE_VM | CLONE_VFORK;
    ca.stack = direct.stack();
    ca.stack_size = direct.stack_size();
    pid = sys::clone3_fn(&ca, DirectStart::child, &direct);
    clone_errno = errno;
    direct.restore();
    // The child set this to a function of its own stack frame.
    ic.plan.before_cgroup_mount = nullptr;
  } else {
    pid = sys::clone3(&ca);
    clone_errno = errno;
    if (pid == 0) {
      parent_sock.reset();
      init_container(ic);
    }
  }
  // Only the parent goes back: the child must stay in the namespaces it was
  // cloned into.
  if (restore_pid) ::setns(restore_pid.get(), CLONE_NEWPID);
  if (restore_time) ::setns(restore_time.get(), CLONE_NEWTIME);
  if (pid < 0) return sys_error(clone_errno, "clone container process");
  UniqueFd pfd(pidfd);
  cleanup.add([pid, fd = std::make_shared<UniqueFd>(::fcntl(pidfd, F_DUPFD_CLOEXEC, 0))] {
    sys::pidfd_send_signal(fd->get(), SIGKILL, nullptr, 0);
    ::waitpid(static_cast<pid_t>(pid), nullptr, 0);
  });
  child_sock.reset();
  listener.reset();
  console.reset();

  // A send fails when the child already died; the reason is then waiting on
  // the socket.
  auto send_to_child = [&](Msg type, std::string_view text) -> Result<> {
    auto r = send_msg(parent_sock.get(), type, 0, text);
    if (r) return {};
    if (auto m = recv_msg(parent_sock.get()); m && m->type == Msg::kError)
      return std::unexpected(Error{static_cast<int>(m->value), m->text});
    return r;
  };
  if (ic.plan.new_userns) {
    TRY(write_id_maps(static_cast<pid_t>(pid), spec.linux->uid_mappings, spec.linux->gid_mappings, g.rootless));
    TRY(send_to_child(Msg::kMaps, {}));
  }

  State st;
  st.id = p.id;
  st.pid = static_cast<pid_t>(pid);
  st.pid_start = process_start_time(st.pid);
  st.bundle = bundle;
  st.rootfs = rootfs;
  st.created = now_rfc3339();
  st.owner = ::geteuid();
  st.cgroup_path = cgroup_path;
  st.systemd_cgroup = g.systemd_cgroup && cg;
  st.annotations = spec.annotations;
  if (spec.linux)
    for (auto& n : spec.linux->namespaces) st.namespaces.push_back(n.type);
  if (spec.linux) TRY(move_net_devices(spec.linux->net_devices, st.pid));
  if (cg && !cgfd && !self_join) TRY_CTX(cg->add_pid(st.pid), "join cgroup " + cg->path());
  if (cg) cg->joined();
  if (cg && !late_devices.devices.empty()) TRY_CTX(cg->apply(late_devices), "cgroup " + cg_path);
  // Saved before the container can exec (`run` does not stop it in between),
  // so `state` and `kill` work from its first instruction on; after a direct
  // start, as soon as we run again, when it has just exec'd.
  TRY(save_state(g.root, st));
  if (!vfork_ok) TRY(send_to_child(Msg::kGo, state_json(st, Status::creating, false)));

  UniqueFd real_pidfd;
  for (;;) {
    auto msg = recv_msg(parent_sock.get());
    // In `run`, the socket closing (CLOEXEC at exec) is how the child says it
    // is running.
    if (!msg && inline_start && msg.error().err == 0) {
      // A direct start's child that died without a word also closes it.
      if (vfork_ok && !ic.exec_reached) return fail("container process exited before it could exec");
      break;
    }
    Message m = TRY(std::move(msg));
    if (m.type == Msg::kError) return std::unexpected(Error{static_cast<int>(m.value), m.text});
    if (m.type == Msg::kGrandchild) {
      st.pid = static_cast<pid_t>(m.value);
      real_pidfd.reset(sys::pidfd_open(st.pid, 0));
      if (!real_pidfd) return sys_error("pidfd_open container process");
      ::waitpid(static_cast<pid_t>(pid), nullptr, 0);
      cleanup.add([fd = std::make_shared<UniqueFd>(::fcntl(real_pidfd.get(), F_DUPFD_CLOEXEC, 0))] {
        sys::pidfd_send_signal(fd->get(), SIGKILL, nullptr, 0);
      });
      st.pid_start = process_start_time(st.pid);
      TRY(save_state(g.root, st));
      continue;
    }
    if (m.type == Msg::kHooks) {
      std::string s = state_json(st, Status::creating, false);
      TRY(run_hooks(spec.hooks.prestart, s, "prestart"));
      TRY(run_hooks(spec.hooks.create_runtime, s, "createRuntime"));
      TRY(send_to_child(Msg::kContinue, {}));
      continue;
    }
    if (m.type == Msg::kSeccompFd) {
      if (!m.fd) return fail("linux.seccomp.listenerPath: no listener fd received");
      std::string payload = "{\"ociVersion\":\"1.3.0\",\"fds\":[\"seccompFd\"],\"pid\":" + std::to_string(st.pid) +
                            ",\"metadata\":\"\",\"state\":" + state_json(st, Status::creating, false) + "}";
      if (spec.linux->seccomp->listener_path.empty())
        return fail("linux.seccomp: SCMP_ACT_NOTIFY needs listenerPath");
      UniqueFd s = TRY_CTX(connect_unix(spec.linux->seccomp->listener_path), "linux.seccomp.listenerPath");
      TRY_CTX(send_fd(s.get(), m.fd.get(), payload), "linux.seccomp.listenerPath");
      continue;
    }
    if (m.type == Msg::kCreated && !inline_start) break;
    if (m.type == Msg::kMountNs && ic.send_mount_ns) {
      // One that came without its fd (ours at RLIMIT_NOFILE): the start goes
      // on without it.
      if (!mount_ns) mount_ns = std::move(m.fd);
      continue;
    }
    return fail("unexpected message from the container process");
  }
  // (`run`: it may have run to completion already; its status tells.)
  if (!inline_start && !init_alive(st)) return fail("container process exited during create");
  TRY(write_pid_file(pid_file, st.pid));
  TRY(send_pidfd(pidfd_socket, real_pidfd ? real_pidfd.get() : pfd.get()));
  Created c{std::move(st), real_pidfd ? std::move(real_pidfd) : std::move(pfd), std::move(mount_ns), std::move(spec),
            adopt && cg};
  return c;
}

Result<Created> do_create(const Globals& g, const CreateOptions& o, Bundle&& b, Cleanup& cleanup,
                          bool inline_start, UniqueFd console = {}) {
  auto p = TRY(prepare_create(g, o, std::move(b), inline_start, std::move(console)));
  return finish_create(*p, o, cleanup);
}

// Connects to start.sock and hands the container the state for its
// startContainer hooks; the connection closing without a word means it exec'd.
Result<> signal_start(const std::string& root, State& st) {
  std::string dir = state_dir(root, st.id);
  UniqueFd s = TRY_CTX(connect_unix(dir + "/start.sock"), "container \"" + st.id + "\" is not waiting to start");
  std::string js = state_json(st, Status::running, false);
  (void)write_fd(s.get(), js);
  ::shutdown(s.get(), SHUT_WR);
  std::string err = TRY(read_fd(s.get()));
  ::unlink((dir + "/start.sock").c_str());
  if (!err.empty()) return fail(err);
  return {};
}

Result<oci::Spec> saved_spec(const std::string& root, const std::string& id) {
  auto text = TRY(saved_config(root, id));
  return oci::parse_spec(text);
}

Result<std::unique_ptr<cgroup::Manager>> open_cgroup(const State& st) {
  if (st.cgroup_path.empty()) return std::unique_ptr<cgroup::Manager>();
  cgroup::Layout layout = TRY(cgroup::detect_layout());
  return cgroup::open_existing(layout, st.cgroup_path, st.systemd_cgroup);
}

Result<> post_start(State& st, const oci::Spec& spec) {
  if (auto r = run_hooks(spec.hooks.poststart, state_json(st, Status::running, false), "poststart"); !r) {
    // runtime-spec 1.3.0: a failing poststart hook fails the start; the
    // container does not keep running behind an error.
    if (auto cg = open_cgroup(st); cg && *cg) (void)(*cg)->kill_all(SIGKILL);
    if (UniqueFd fd(sys::pidfd_open(st.pid, 0)); fd && process_start_time(st.pid) == st.pid_start)
      sys::pidfd_send_signal(fd.get(), SIGKILL, nullptr, 0);
    return std::unexpected(std::move(r).error());
  }
  return {};
}

// Removes everything a container left: cgroup, state dir; runs poststop hooks
// (from `spec`, or the config saved at create when the caller has none).
Result<> destroy(const std::string& root, const State& st, const oci::Spec* spec = nullptr) {
  if (auto cg = open_cgroup(st); cg && *cg)
    if (auto r = (*cg)->destroy(); !r) log::warn("delete " + st.id + ": cgroup: " + r.error().str());
  std::optional<oci::Spec> saved;
  if (!spec) {
    // Parsed only for its poststop hooks: a config that cannot have any (no
    // "poststop" key, and no \u escape that could spell one) is not parsed.
    auto text = saved_config(root, st.id);
    if (text && (text->find("\"poststop\"") != std::string::npos || text->find("\\u") != std::string::npos))
      if (auto s = oci::parse_spec(*text); s) spec = &saved.emplace(std::move(*s));
  }
  if (spec && !spec->hooks.poststop.empty())
    if (auto r = run_hooks(spec->hooks.poststop, state_json(st, Status::stopped, false), "poststop"); !r)
      log::warn(r.error().str());
  return remove_tree(state_dir(root, st.id));
}

Result<> wait_exit(pid_t pid, uint64_t start, int timeout_ms) {
  UniqueFd fd(sys::pidfd_open(pid, 0));
  if (!fd) return {};
  if (process_start_time(pid) != start) return {};
  struct pollfd p = {fd.get(), POLLIN, 0};
  if (::poll(&p, 1, timeout_ms) <= 0) return fail("process " + std::to_string(pid) + " did not exit");
  return {};
}

}  // namespace

Result<> create(const Globals& g, const CreateOptions& o) {
  TRY(check_id(o.id));
  Bundle b = TRY(load_bundle(o.bundle));
  Cleanup cleanup;
  TRY(do_create(g, o, std::move(b), cleanup, false));
  cleanup.release();
  return {};
}

Result<> start(const Globals& g, const std::string& id) {
  State st = TRY(load_state(g.root, id));
  Lock lock = TRY(Lock::acquire(state_dir(g.root, id)));
  Status s = current_status(g.root, st);
  if (s != Status::created)
    return fail("cannot start container \"" + id + "\": it is " + status_name(s) + ", not created");
  oci::Spec spec = TRY(saved_spec(g.root, id));
  TRY(signal_start(g.root, st));
  return post_start(st, spec);
}

Result<int> run(const Globals& g, const CreateOptions& o, bool detach, bool keep) {
  // Signals are blocked before the container is cloned (it unblocks its own
  // before exec) and read from a signalfd afterwards, so none is lost between
  // start and the wait loop.
  sigset_t all = forwarded_signals(), old;
  if (!detach) {
    ::sigprocmask(SIG_BLOCK, &all, &old);
    // The container may be a grandchild (joined user namespace): make it ours to reap.
    ::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
  }

  TRY(check_id(o.id));
  Bundle b = TRY(load_bundle(o.bundle));
  bool terminal = b.spec.process && b.spec.process->terminal;
  // A foreground terminal without --console-socket: we are the console, over a
  // socketpair (no socket file to create or leave behind).
  UniqueFd console_ours, console_theirs;
  if (!detach && o.console_socket.empty() && terminal) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) return sys_error("socketpair");
    console_ours.reset(sv[0]);
    console_theirs.reset(sv[1]);
  }
  if (detach && o.console_socket.empty() && terminal)
    return fail("cannot allocate a tty for a detached container without --console-socket");

  Cleanup cleanup;
  Created c = TRY(do_create(g, o, std::move(b), cleanup, true, std::move(console_theirs)));
  std::unique_ptr<ConsoleProxy> proxy;
  if (console_ours) {
    UniqueFd master = TRY(recv_fd(console_ours.get()));
    proxy = std::make_unique<ConsoleProxy>(std::move(master));
  }
  cleanup.release();
  if (auto r = post_start(c.st, c.spec); !r) {
    (void)destroy(g.root, c.st, &c.spec);
    return std::unexpected(std::move(r).error());
  }
  if (detach) return 0;

  int status = wait_foreground(c.st.pid, c.pidfd.get(), proxy.get(), all);
  proxy.reset();
  ::sigprocmask(SIG_SETMASK, &old, nullptr);
  if (!keep) TRY(destroy(g.root, c.st, &c.spec));
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return WEXITSTATUS(status);
}

namespace {

// launch()'s steps up to the clone (prepare_create, for `run`), and the
// socket a terminal's pty master comes back on.
Result<std::unique_ptr<Prepared>> prepare_for_launch(const Globals& global, const CreateOptions& o, bool ahead) {
  TRY(check_id(o.id));
  Bundle b;
  if (o.config_spec && o.config_text) {
    b.dir = absolute(o.bundle);
    b.text = *o.config_text;
    b.spec = std::move(*o.config_spec);
  } else {
    b = TRY(load_bundle(o.bundle));
  }
  // The engine's bundle says which cgroup driver it was made for: only the
  // systemd driver takes "slice:prefix:name".
  Globals g = global;
  std::string cg_path = b.spec.linux ? b.spec.linux->cgroups_path : "";
  if (split(cg_path, ':').size() == 3 && cg_path.find('/') == std::string::npos) g.systemd_cgroup = true;
  UniqueFd ours, theirs;
  if (b.spec.process && b.spec.process->terminal) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) return sys_error("socketpair");
    ours.reset(sv[0]);
    theirs.reset(sv[1]);
  }
  auto p = TRY(prepare_create(g, o, std::move(b), true, std::move(theirs), ahead));
  p->console_ours = std::move(ours);
  return p;
}

}  // namespace

struct LaunchPrep {
  std::unique_ptr<Prepared> p;
};
void LaunchPrepDeleter::operator()(LaunchPrep* l) const { delete l; }

Result<PreparedLaunch> prepare_launch(const Globals& g, const CreateOptions& o) {
  auto p = TRY(prepare_for_launch(g, o, true));
  return PreparedLaunch(new LaunchPrep{std::move(p)});
}

Result<Launched> launch(const Globals& global, const CreateOptions& o, PreparedLaunch pre) {
  std::unique_ptr<Prepared> p = pre ? std::move(pre->p) : TRY(prepare_for_launch(global, o, false));
  // A joined user namespace with a new pid namespace makes the container a
  // grandchild: the caller must still be the one to reap it.
  ::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
  Cleanup cleanup;
  Created c = TRY(finish_create(*p, o, cleanup));
  Launched l;
  if (p->console_ours) l.console = TRY_CTX(recv_fd(p->console_ours.get()), "console of container " + o.id);
  cleanup.release();
  if (auto r = post_start(c.st, c.spec); !r) {
    (void)destroy(p->g.root, c.st, &c.spec);
    return std::unexpected(std::move(r).error());
  }
  l.pid = c.st.pid;
  l.pidfd = std::move(c.pidfd);
  l.mount_ns = std::move(c.mount_ns);
  l.cgroup_adopted = c.cgroup_adopted;
  const oci::Namespace* pid_ns = c.spec.ns("pid");
  l.own_pid_ns = pid_ns && pid_ns->path.empty();
  return l;
}

Result<std::string> state(const Globals& g, const std::string& id) {
  State st = TRY(load_state(g.root, id));
  return state_json(st, current_status(g.root, st), true);
}

Result<int> parse_signal(std::string_view s) {
  if (s.empty()) return fail("empty signal");
  if (s[0] >= '0' && s[0] <= '9') {
    int n = 0;
    for (char c : s) {
      if (c < '0' || c > '9') return fail("unknown signal \"" + std::string(s) + "\"");
      n = n * 10 + (c - '0');
      if (n > 64) break;
    }
    if (n < 1 || n > 64) return fail("unknown signal \"" + std::string(s) + "\"");
    return n;
  }
  std::string name(s);
  for (auto& ch : name) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  if (name.rfind("SIG", 0) == 0) name = name.substr(3);
  static const std::pair<const char*, int> table[] = {
      {"HUP", SIGHUP},       {"INT", SIGINT},       {"QUIT", SIGQUIT},   {"ILL", SIGILL},
      {"TRAP", SIGTRAP},     {"ABRT", SIGABRT},     {"IOT", SIGIOT},     {"BUS", SIGBUS},
      {"FPE", SIGFPE},       {"KILL", SIGKILL},     {"USR1", SIGUSR1},   {"SEGV", SIGSEGV},
      {"USR2", SIGUSR2},     {"PIPE", SIGPIPE},     {"ALRM", SIGALRM},   {"TERM", SIGTERM},
      {"STKFLT", SIGSTKFLT}, {"CHLD", SIGCHLD},     {"CONT", SIGCONT},   {"STOP", SIGSTOP},
      {"TSTP", SIGTSTP},     {"TTIN", SIGTTIN},     {"TTOU", SIGTTOU},   {"URG", SIGURG},
      {"XCPU", SIGXCPU},     {"XFSZ", SIGXFSZ},     {"VTALRM", SIGVTALRM}, {"PROF", SIGPROF},
      {"WINCH", SIGWINCH},   {"IO", SIGIO},         {"POLL", SIGPOLL},   {"PWR", SIGPWR},
      {"SYS", SIGSYS}};
  for (auto& [n, v] : table)
    if (name == n) return v;
  if (name.rfind("RTMIN", 0) == 0 || name.rfind("RTMAX", 0) == 0) {
    bool min = name[3] == 'I';
    int off = 0;
    if (name.size() > 5) {
      if (name[5] != '+' && name[5] != '-') return fail("unknown signal \"" + std::string(s) + "\"");
      off = std::atoi(name.c_str() + 5);
    }
    int v = (min ? SIGRTMIN : SIGRTMAX) + off;
    if (v >= SIGRTMIN && v <= SIGRTMAX) return v;
  }
  return fail("unknown signal \"" + std::string(s) + "\"");
}

Result<> kill(const Globals& g, const std::string& id, int sig, bool all) {
  State st = TRY(load_state(g.root, id));
  Status s = current_status(g.root, st);
  if (all) {
    auto cg = TRY(open_cgroup(st));
    if (!cg) return fail("kill --all: container \"" + id + "\" has no cgroup");
    return cg->kill_all(sig);
  }
  if (s == Status::stopped) return fail("container \"" + id + "\" is not running");
  UniqueFd fd(sys::pidfd_open(st.pid, 0));
  // The pidfd pins the process: checking the start time after opening it rules
  // out signalling a stranger that inherited a recycled pid.
  if (!fd || process_start_time(st.pid) != st.pid_start) return fail("container \"" + id + "\" is not running");
  if (sys::pidfd_send_signal(fd.get(), sig, nullptr, 0) < 0) return sys_error("kill container \"" + id + "\"");
  return {};
}

Result<> remove(const Globals& g, const std::string& id, bool force) {
  TRY(check_id(id));
  // A start prepared ahead (prepare_launch) by a process that died before
  // the launch: its directory under its own name, which nobody holds.
  if (std::string prep = prepared_state_dir(g.root, id); path_exists(prep) && !Lock::held_elsewhere(prep))
    (void)remove_tree(prep);
  auto loaded = load_state(g.root, id);
  if (!loaded) {
    // A create that died before writing its state leaves only the directory.
    std::string dir = state_dir(g.root, id);
    if (path_exists(dir) && !path_exists(dir + "/state.json")) {
      (void)remove_tree(dir);
      return {};
    }
    if (force) return {};
    return std::unexpected(std::move(loaded).error());
  }
  State& st = *loaded;
  Lock lock = TRY(Lock::acquire(state_dir(g.root, id)));
  Status s = current_status(g.root, st);
  if (s == Status::running || s == Status::paused) {
    if (!force) return fail("cannot delete container \"" + id + "\" that is not stopped: " + status_name(s));
  }
  if (s != Status::stopped) {
    auto cg = open_cgroup(st);
    if (cg && *cg) (void)(*cg)->kill_all(SIGKILL);
    if (UniqueFd fd(sys::pidfd_open(st.pid, 0)); fd && process_start_time(st.pid) == st.pid_start)
      sys::pidfd_send_signal(fd.get(), SIGKILL, nullptr, 0);
    if (cg && *cg && s == Status::paused) (void)(*cg)->freeze(false);
    TRY(wait_exit(st.pid, st.pid_start, 10000));
  }
  return destroy(g.root, st);
}

Result<> pause(const Globals& g, const std::string& id) {
  State st = TRY(load_state(g.root, id));
  Status s = current_status(g.root, st);
  if (s != Status::running && s != Status::created)
    return fail("cannot pause container \"" + id + "\": it is " + status_name(s));
  auto cg = TRY(open_cgroup(st));
  if (!cg) return fail("cannot pause container \"" + id + "\": it has no cgroup");
  return cg->freeze(true);
}

Result<> resume(const Globals& g, const std::string& id) {
  State st = TRY(load_state(g.root, id));
  Status s = current_status(g.root, st);
  if (s != Status::paused) return fail("cannot resume container \"" + id + "\": it is not paused");
  auto cg = TRY(open_cgroup(st));
  return cg->freeze(false);
}

Result<std::vector<pid_t>> pids(const Globals& g, const std::string& id) {
  State st = TRY(load_state(g.root, id));
  auto cg = TRY(open_cgroup(st));
  if (!cg) return std::vector<pid_t>{};
  return cg->pids();
}

Result<std::vector<ListEntry>> list(const Globals& g) {
  std::vector<ListEntry> out;
  for (auto& id : list_ids(g.root)) {
    auto st = load_state(g.root, id);
    if (!st) continue;
    Status s = current_status(g.root, *st);
    ListEntry e;
    e.id = id;
    e.pid = s == Status::stopped ? 0 : st->pid;
    e.status = status_name(s);
    e.bundle = st->bundle;
    e.created = st->created;
    e.owner = st->owner == 0 ? "root" : std::to_string(st->owner);
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace berth::runtime
