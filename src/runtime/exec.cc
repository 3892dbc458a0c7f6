// `exec`: a new process in a running container.
//
// The runtime enters the container's pid (and time) namespace for its children
// only, clones one child into the container's cgroup, and that child joins the
// remaining namespaces through the init's pidfd (one setns for all, no path
// re-resolved) before it becomes the process. The runtime binary itself runs from
// a sealed memfd by then (see cli), so nothing in the container can reach the
// host's copy through /proc/PID/exe.
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

#include "cgroup/cgroup.h"
#include "runtime/container.h"
#include "runtime/foreground.h"
#include "runtime/namespaces.h"
#include "runtime/process.h"
#include "runtime/seccomp.h"
#include "runtime/state.h"
#include "runtime/sync.h"
#include "runtime/terminal.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/syscalls.h"

namespace berth::runtime {

namespace {

Result<oci::Process> build_process(const oci::Spec& spec, const ExecOptions& o) {
  if (!o.process_file.empty()) {
    std::string text = TRY(read_file(o.process_file));
    return oci::parse_process(text);
  }
  if (o.args.empty()) return fail("exec: no command given (use -p FILE or give arguments)");
  oci::Process p = spec.process ? *spec.process : oci::Process{};
  p.args = o.args;
  p.terminal = o.tty;
  p.console_size.reset();
  for (auto& e : o.env) {
    auto eq = e.find('=');
    if (eq == std::string::npos || eq == 0) return fail("--env \"" + e + "\": not of the form NAME=value");
    std::string key = e.substr(0, eq + 1);
    bool replaced = false;
    for (auto& cur : p.env)
      if (cur.rfind(key, 0) == 0) cur = e, replaced = true;
    if (!replaced) p.env.push_back(e);
  }
  if (!o.cwd.empty()) {
    if (o.cwd[0] != '/') return fail("--cwd \"" + o.cwd + "\": not an absolute path");
    p.cwd = o.cwd;
  }
  if (!o.user.empty()) {
    auto parts = split(o.user, ':');
    char* end = nullptr;
    p.user.uid = static_cast<uint32_t>(std::strtoul(parts[0].c_str(), &end, 10));
    if (*end || parts[0].empty()) return fail("--user \"" + o.user + "\": expected UID[:GID]");
    if (parts.size() > 1) {
      p.user.gid = static_cast<uint32_t>(std::strtoul(parts[1].c_str(), &end, 10));
      if (*end || parts[1].empty()) return fail("--user \"" + o.user + "\": expected UID[:GID]");
    }
  }
  for (auto& g : o.additional_gids) {
    char* end = nullptr;
    unsigned long v = std::strtoul(g.c_str(), &end, 10);
    if (*end || g.empty()) return fail("--additional-gids \"" + g + "\": not a number");
    p.user.additional_gids.push_back(static_cast<uint32_t>(v));
  }
  if (!o.caps.empty()) {
    if (!p.capabilities) p.capabilities = oci::Capabilities{};
    for (auto& c : o.caps) {
      std::string name = c.rfind("CAP_", 0) == 0 ? c : "CAP_" + c;
      if (oci::capability_number(name) < 0) return fail("--cap: unknown capability \"" + c + "\"");
      for (auto* set : {&p.capabilities->bounding, &p.capabilities->effective, &p.capabilities->permitted})
        set->push_back(name);
    }
  }
  if (o.no_new_privs) p.no_new_privileges = true;
  return p;
}

struct ExecChild {
  const oci::Process* proc;
  const seccomp::Program* filter;
  int pidfd;
  int ns_flags;
  int sync;
  int console;
  int preserve_fds;
};

Result<> exec_setup(ExecChild& c, std::string* exe) {
  ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  close_fds_except(c.preserve_fds, {c.sync, c.pidfd, c.console});
  TRY(expect_msg(c.sync, Msg::kGo));
  // One setns for every namespace through the pidfd: all or nothing, and no
  // /proc/PID/ns path that could be swapped underneath us.
  if (c.ns_flags && ::setns(c.pidfd, c.ns_flags) < 0) return sys_error("join the container's namespaces");
  ::close(c.pidfd);
  const oci::Process& p = *c.proc;
  if (p.terminal) {
    Pty pty = TRY(open_container_pty(p.console_size));
    TRY_CTX(send_fd(c.console, pty.master.get(), "berth"), "send pty master to the console socket");
    ::close(c.console);
    TRY(make_controlling_tty(pty.slave.get()));
  }
  if (::chdir(p.cwd.c_str()) < 0) return sys_error("cwd " + p.cwd);
  char cwd[4096];
  if (!::getcwd(cwd, sizeof cwd) || cwd[0] != '/') return fail("cwd " + p.cwd + " is outside the container");
  *exe = TRY(lookup_executable(p.args[0], p.env));
  TRY(apply_lsm_labels(p));
  TRY(apply_rlimits(p.rlimits));
  TRY(apply_scheduling(p));
  if (p.exec_cpu_affinity) TRY(apply_cpu_affinity(p.exec_cpu_affinity->final, "process.execCPUAffinity.final"));
  if (c.filter && !p.no_new_privileges) TRY_CTX(seccomp::install(*c.filter), "linux.seccomp");
  TRY(apply_user_and_caps(p));
  if (c.filter && p.no_new_privileges) TRY_CTX(seccomp::install(*c.filter), "linux.seccomp");
  return {};
}

[[noreturn]] void exec_child(ExecChild& c) {
  std::string exe;
  auto r = exec_setup(c, &exe);
  if (r) {
    prepare_fds_for_exec(c.preserve_fds, {c.sync});
    r = std::unexpected(exec_process(exe, *c.proc));
  }
  (void)send_msg(c.sync, Msg::kError, r.error().err, r.error().msg);
  _exit(127);
}

}  // namespace

Result<int> exec(const Globals& g, const ExecOptions& o) {
  State st = TRY(load_state(g.root, o.id));
  Status s = current_status(g.root, st);
  if (s == Status::stopped) return fail("cannot exec in a stopped container \"" + o.id + "\"");
  if (s == Status::paused && !o.ignore_paused)
    return fail("cannot exec in a paused container \"" + o.id + "\" (use --ignore-paused)");
  oci::Spec spec = TRY(oci::parse_spec(TRY(saved_config(g.root, o.id))));
  oci::Process proc = TRY(build_process(spec, o));
  if (!o.process_label.empty()) proc.selinux_label = o.process_label;
  if (!o.apparmor.empty()) proc.apparmor_profile = o.apparmor;
  if (proc.terminal && o.console_socket.empty() && o.detach)
    return fail("cannot allocate a tty for a detached exec without --console-socket");
  std::optional<seccomp::Program> filter;
  if (spec.linux && spec.linux->seccomp)
    filter = TRY(g.seccomp_cache.empty() ? seccomp::compile(*spec.linux->seccomp)
                                         : seccomp::compile_cached(*spec.linux->seccomp, g.seccomp_cache));

  UniqueFd init(sys::pidfd_open(st.pid, 0));
  if (!init || process_start_time(st.pid) != st.pid_start) return fail("container \"" + o.id + "\" is not running");
  int ns_flags = 0;
  bool pid_ns = false, time_ns = false;
  for (auto& t : st.namespaces) {
    int f = ns_flag(t);
    if (f == CLONE_NEWPID) pid_ns = true;
    else if (f == CLONE_NEWTIME) time_ns = true;
    else ns_flags |= f;
  }
  // Our future children start in the container's pid and time namespaces.
  if (pid_ns || time_ns)
    if (::setns(init.get(), (pid_ns ? CLONE_NEWPID : 0) | (time_ns ? CLONE_NEWTIME : 0)) < 0)
      return sys_error("join the container's pid namespace");

  UniqueFd console, console_listener;
  std::unique_ptr<ConsoleProxy> proxy;
  if (proc.terminal) {
    if (!o.console_socket.empty()) {
      console = TRY_CTX(connect_unix(o.console_socket), "--console-socket");
    } else {
      int sv[2];
      if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) return sys_error("socketpair");
      console_listener.reset(sv[0]);
      console.reset(sv[1]);
    }
  }
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) return sys_error("socketpair");
  UniqueFd parent_sock(sv[0]), child_sock(sv[1]);

  std::unique_ptr<cgroup::Manager> cg;
  if (!st.cgroup_path.empty()) {
    cgroup::Layout layout = TRY(cgroup::detect_layout());
    cg = TRY(cgroup::open_existing(layout, st.cgroup_path, st.systemd_cgroup));
  }
  UniqueFd cgfd = cg ? cg->dir_fd() : UniqueFd();

  sigset_t all = forwarded_signals(), old;
  if (!o.detach) ::sigprocmask(SIG_BLOCK, &all, &old);

  ExecChild ec{&proc, filter ? &*filter : nullptr, init.get(), ns_flags, child_sock.get(),
               console ? console.get() : -1, o.preserve_fds};
  struct clone_args ca = {};
  int pidfd = -1;
  ca.flags = CLONE_PIDFD;
  ca.pidfd = reinterpret_cast<uint64_t>(&pidfd);
  ca.exit_signal = SIGCHLD;
  if (cgfd) {
    ca.flags |= CLONE_INTO_CGROUP;
    ca.cgroup = static_cast<uint64_t>(cgfd.get());
  }
  long pid = sys::clone3(&ca);
  if (pid == 0) {
    parent_sock.reset();
    exec_child(ec);
  }
  if (pid < 0) return sys_error("clone exec process");
  UniqueFd pfd(pidfd);
  child_sock.reset();
  console.reset();
  auto abort_child = [&] {
    sys::pidfd_send_signal(pfd.get(), SIGKILL, nullptr, 0);
    ::waitpid(static_cast<pid_t>(pid), nullptr, 0);
  };
  if (cg && !cgfd) {
    if (auto r = cg->add_pid(static_cast<pid_t>(pid)); !r) {
      abort_child();
      return std::unexpected(std::move(r).error().context("join cgroup " + cg->path()));
    }
  }
  if (auto r = send_msg(parent_sock.get(), Msg::kGo); !r) {
    abort_child();
    return std::unexpected(std::move(r).error());
  }
  if (console_listener) {
    auto master = recv_fd(console_listener.get());
    if (!master) {
      // The child failed before it had a terminal: its error says why.
      auto m = recv_msg(parent_sock.get());
      abort_child();
      if (m && m->type == Msg::kError) return std::unexpected(Error{static_cast<int>(m->value), m->text});
      return std::unexpected(std::move(master).error());
    }
    proxy = std::make_unique<ConsoleProxy>(std::move(*master));
  }
  // The sync socket closes (CLOEXEC) when the child execs: EOF is success.
  auto m = recv_msg(parent_sock.get());
  if (m && m->type == Msg::kError) {
    ::waitpid(static_cast<pid_t>(pid), nullptr, 0);
    return std::unexpected(Error{static_cast<int>(m->value), m->text});
  }
  TRY(write_pid_file(o.pid_file, static_cast<pid_t>(pid)));
  TRY(send_pidfd(o.pidfd_socket, pfd.get()));
  if (o.detach) return 0;

  int status = wait_foreground(static_cast<pid_t>(pid), pfd.get(), proxy.get(), all);
  proxy.reset();
  ::sigprocmask(SIG_SETMASK, &old, nullptr);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return WEXITSTATUS(status);
}

}  // namespace berth::runtime
