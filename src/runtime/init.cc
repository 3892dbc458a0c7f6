#include "runtime/init.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>

#include "runtime/hooks.h"
#include "runtime/namespaces.h"
#include "runtime/process.h"
#include "runtime/sync.h"
#include "runtime/terminal.h"
#include "util/fs.h"
#include "util/syscalls.h"

namespace berth::runtime {

Result<std::string> sysctl_path(const oci::Spec& spec, const std::string& key) {
  std::string k = key;
  for (auto& ch : k)
    if (ch == '.') ch = '/';
  if (k.empty() || k[0] == '/' || clean_path(k) != k || k.find("..") != std::string::npos)
    return fail("linux.sysctl: invalid key \"" + key + "\"");
  auto owns = [&](const char* type) { return spec.ns(type) != nullptr; };
  static const char* ipc_keys[] = {"kernel/msgmax", "kernel/msgmnb", "kernel/msgmni",      "kernel/sem",
                                   "kernel/shmall", "kernel/shmmax", "kernel/shmmni", "kernel/shm_rmid_forced"};
  bool ok = false;
  for (auto* i : ipc_keys)
    if (k == i) ok = owns("ipc");
  if (k.rfind("fs/mqueue/", 0) == 0) ok = owns("ipc");
  if (k.rfind("net/", 0) == 0) ok = owns("network");
  if (k == "kernel/hostname" || k == "kernel/domainname") ok = owns("uts");
  if (!ok) return fail("linux.sysctl: \"" + key + "\" is not namespaced by a namespace the container owns");
  return "sys/" + k;
}

namespace {

Result<> join_and_unshare(InitContext& c) {
  for (auto& [flag, fd] : c.joins) {
    if (::setns(fd.get(), flag) < 0) return sys_error("join namespace (setns)");
    // Closed, not reset: a direct start shares the parent's copy of `joins`.
    ::close(fd.get());
  }
  if (c.unshare_flags & ~CLONE_NEWCGROUP)
    if (::unshare(c.unshare_flags & ~CLONE_NEWCGROUP) < 0) return sys_error("unshare namespaces");
  if (c.fork_for_pid) {
    if (::unshare(CLONE_NEWPID) < 0) return sys_error("unshare pid namespace");
    pid_t child = ::fork();
    if (child < 0) return sys_error("fork into the pid namespace");
    if (child > 0) {
      // The intermediate process: report the real container pid, then leave.
      (void)send_msg(c.sync_fd, Msg::kGrandchild, child);
      _exit(0);
    }
  }
  return {};
}

// Writes /proc/sys values through the host's procfs, still visible before
// pivot_root: the container has no process that could have mounted over it,
// and the writes land in the namespaces of the writer, which are the container's.
Result<> apply_sysctls(const oci::Spec& spec) {
  if (!spec.linux || spec.linux->sysctl.empty()) return {};
  UniqueFd proc(::open("/proc", O_PATH | O_DIRECTORY | O_CLOEXEC));
  struct statfs sfs;
  if (!proc || ::fstatfs(proc.get(), &sfs) < 0 || sfs.f_type != PROC_SUPER_MAGIC)
    return fail("linux.sysctl: /proc is not procfs");
  for (auto& [key, value] : spec.linux->sysctl) {
    std::string rel = TRY(sysctl_path(spec, key));
    struct open_how how = {};
    how.flags = O_WRONLY | O_CLOEXEC;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;
    UniqueFd f(sys::openat2(proc.get(), rel.c_str(), &how));
    if (!f) return sys_error("linux.sysctl " + key);
    if (::write(f.get(), value.data(), value.size()) < 0) return sys_error("linux.sysctl " + key + "=" + value);
  }
  return {};
}

Result<> set_oom_score_adj(const oci::Process& p) {
  if (!p.oom_score_adj) return {};
  TRY_CTX(write_file("/proc/self/oom_score_adj", std::to_string(*p.oom_score_adj)), "process.oomScoreAdj");
  return {};
}

Result<> install_seccomp(InitContext& c) {
  if (!c.seccomp) return {};
  UniqueFd listener = TRY_CTX(seccomp::install(*c.seccomp), "linux.seccomp");
  if (listener) TRY(send_msg(c.sync_fd, Msg::kSeccompFd, 0, {}, listener.get()));
  return {};
}

Result<> setup(InitContext& c, std::string* exe) {
  const oci::Spec& spec = *c.spec;
  const oci::Process& proc = *spec.process;
  // Nothing in the container may open /proc/<us>/exe (the runtime binary) or
  // ptrace us before we exec (CVE-2019-5736, CVE-2016-9962). Not in a new user
  // namespace: there the parent must still open our /proc files to write the
  // maps (as an unprivileged user, when rootless), and the host's root that
  // owns the binary is unmapped anyway.
  if (!c.plan.new_userns && ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0) return sys_error("prctl(PR_SET_DUMPABLE)");
  // A direct start's parent sleeps until we exec: if it is killed meanwhile,
  // nobody would record or clean up a container we went on to start.
  if (c.direct) ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
  std::vector<int> keep = {c.sync_fd, c.listen_fd, c.console_fd};
  for (auto& [flag, fd] : c.joins) keep.push_back(fd.get());
  close_fds_except(c.preserve_fds, keep);
  for (auto& f : c.cgroup_tasks) TRY_CTX(write_file(f, "0"), "join cgroup");
  if (c.plan.new_userns) {
    TRY(expect_msg(c.sync_fd, Msg::kMaps));
    // Become root of the new namespace: our ids were unmapped until now, and
    // the mounts below are made as that root.
    if (::setresgid(0, 0, 0) < 0 || ::setresuid(0, 0, 0) < 0)
      return sys_error("become root in the user namespace (is uid/gid 0 mapped?)");
    // The id change made us non-dumpable, which would hand our /proc/self
    // files to the unmapped host root: take them back.
    ::prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
  }
  // The parent puts us in our cgroup while we set up the mounts; we wait for
  // that (kGo) before anything that depends on it: the cgroup namespace and
  // cgroup mounts, and of course exec.
  bool joined_cgroup = false;
  auto enter_cgroup = [&]() -> Result<> {
    if (joined_cgroup) return {};
    joined_cgroup = true;
    if (!c.direct) {
      Message go = TRY(expect_msg(c.sync_fd, Msg::kGo));
      c.state = std::move(go.text);
    }
    if (c.unshare_flags & CLONE_NEWCGROUP)
      if (::unshare(CLONE_NEWCGROUP) < 0) return sys_error("unshare cgroup namespace");
    return {};
  };
  c.plan.before_cgroup_mount = enter_cgroup;
  // The extra fork of a new pid namespace must happen inside the cgroup.
  if (c.fork_for_pid) TRY(enter_cgroup());
  TRY(join_and_unshare(c));
  if (c.new_netns) TRY(loopback_up());
  if (c.send_mount_ns) {
    // Through the host's /proc, still ours: the container's is not mounted yet.
    UniqueFd ns(::open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC));
    if (ns) TRY(send_msg(c.sync_fd, Msg::kMountNs, 0, {}, ns.get()));
  }
  if (!c.no_new_keyring) {
    // A session keyring of its own, so containers don't share the host's keys.
    // Kernels or seccomp profiles without keyctl are fine: it is defence in depth.
    ::syscall(SYS_keyctl, 1 /* KEYCTL_JOIN_SESSION_KEYRING */, nullptr);
  }
  if (proc.exec_cpu_affinity) TRY(apply_cpu_affinity(proc.exec_cpu_affinity->initial, "process.execCPUAffinity.initial"));
  if (c.new_mountns) {
    TRY(setup_rootfs(c.plan));
    // runc creates a missing cwd; do it before pivot, in-root.
    UniqueFd root(::open(c.plan.rootfs.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (root) (void)mkdir_in_root(root.get(), proc.cwd);
  }
  TRY(enter_cgroup());
  if (!spec.hostname.empty() && ::sethostname(spec.hostname.data(), spec.hostname.size()) < 0)
    return sys_error("hostname \"" + spec.hostname + "\"");
  if (!spec.domainname.empty() && ::setdomainname(spec.domainname.data(), spec.domainname.size()) < 0)
    return sys_error("domainname \"" + spec.domainname + "\"");
  TRY(apply_sysctls(spec));
  TRY(set_oom_score_adj(proc));

  if (c.hook_handshake) {
    TRY(send_msg(c.sync_fd, Msg::kHooks));
    TRY(expect_msg(c.sync_fd, Msg::kContinue));
    TRY(run_hooks(spec.hooks.create_container, c.state, "createContainer"));
  }

  if (c.new_mountns) {
    TRY(enter_rootfs(c.plan));
    TRY(finish_rootfs(c.plan));
  } else if (::chroot(c.plan.rootfs.c_str()) < 0 || ::chdir("/") < 0) {
    return sys_error("chroot " + c.plan.rootfs);
  }

  if (proc.terminal) {
    if (c.console_fd < 0) return fail("process.terminal is set but no --console-socket was given");
    Pty pty = TRY(open_container_pty(proc.console_size));
    TRY(bind_console(pty.slave.get()));
    TRY_CTX(send_fd(c.console_fd, pty.master.get(), "berth"), "send pty master to the console socket");
    pty.master.reset();
    ::close(c.console_fd);
    c.console_fd = -1;
    TRY(make_controlling_tty(pty.slave.get()));
  }

  if (::chdir(proc.cwd.c_str()) < 0) return sys_error("process.cwd " + proc.cwd);
  // A cwd reached through a leaked directory fd would be outside our root
  // (CVE-2024-21626); the kernel marks such a cwd "(unreachable)".
  char cwd[4096];
  if (!::getcwd(cwd, sizeof cwd) || cwd[0] != '/') return fail("process.cwd " + proc.cwd + " is outside the container");
  *exe = TRY(lookup_executable(proc.args[0], proc.env));

  TRY(apply_lsm_labels(proc));
  if (spec.linux) TRY(apply_personality(*spec.linux));
  TRY(apply_rlimits(proc.rlimits));
  TRY(apply_scheduling(proc));
  // Without no_new_privs only a process with CAP_SYS_ADMIN may load a filter, so
  // it goes on before the capabilities are dropped; with it, as late as possible.
  if (!proc.no_new_privileges) TRY(install_seccomp(c));
  TRY(apply_user_and_caps(proc));
  if (proc.no_new_privileges) TRY(install_seccomp(c));
  if (c.listen_fd >= 0) TRY(send_msg(c.sync_fd, Msg::kCreated));
  return {};
}

}  // namespace

void init_container(InitContext& c) {
  std::string exe;
  if (auto r = setup(c, &exe); !r) {
    (void)send_msg(c.sync_fd, Msg::kError, r.error().err, r.error().msg);
    _exit(1);
  }
  // Wait for start. `run` says so over the sync socket. `start` is another
  // process: it connects to start.sock. Either way anything we send back is an
  // error, and the channel closing on exec (CLOEXEC) means success.
  int chan = c.sync_fd;
  std::string state;
  if (c.listen_fd < 0) {
    state = std::move(c.state);
    if (auto p = state.find("\"status\":\"creating\""); p != std::string::npos)
      state.replace(p, 21, "\"status\":\"created\"");
  } else {
    ::close(c.sync_fd);
    do {
      chan = ::accept4(c.listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    } while (chan < 0 && errno == EINTR);
    if (chan < 0) _exit(1);
    ::close(c.listen_fd);
    for (;;) {
      char buf[4096];
      ssize_t n = ::read(chan, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      state.append(buf, static_cast<size_t>(n));
    }
  }
  auto report = [&](const Error& e) {
    if (c.listen_fd < 0) {
      (void)send_msg(chan, Msg::kError, e.err, e.msg);
    } else {
      std::string m = e.str();
      (void)!::write(chan, m.data(), m.size());
    }
    _exit(1);
  };
  const oci::Spec& spec = *c.spec;
  if (auto r = run_hooks(spec.hooks.start_container, state, "startContainer"); !r) report(r.error());
  if (spec.process->exec_cpu_affinity)
    if (auto r = apply_cpu_affinity(spec.process->exec_cpu_affinity->final, "process.execCPUAffinity.final"); !r)
      report(r.error());
  prepare_fds_for_exec(c.preserve_fds, {chan});
  if (c.direct) {
    // The container must outlive a `run -d`: no death signal past here. A
    // parent that died before this (its end of the socket closed) gets no
    // orphan container either.
    ::prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0);
    struct pollfd p = {chan, POLLIN, 0};
    if (::poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLERR))) _exit(1);
    c.exec_reached = true;
  }
  auto blocked = spec.annotations.find(kBlockSignalsAnnotation);
  report(exec_process(exe, *spec.process, c.reset_signals,
                      blocked != spec.annotations.end() && blocked->second == "true"));
  _exit(127);
}

}  // namespace berth::runtime
