#include "runtime/hooks.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "util/fd.h"
#include "util/fs.h"
#include "util/syscalls.h"

namespace berth::runtime {

namespace {

std::vector<char*> cstrs(std::vector<std::string>& v) {
  std::vector<char*> out;
  for (auto& s : v) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// Writes the state with SIGPIPE held back: a hook may exit without reading
// its stdin (runc's hooks may too), and its end closing must cost the write an
// EPIPE, not this process its life. A SIGPIPE the write raised is taken off
// the pending set before the mask is restored; one already pending stays.
void write_state(int fd, const std::string& state) {
  sigset_t pipe_only, old, pending;
  sigemptyset(&pipe_only);
  sigaddset(&pipe_only, SIGPIPE);
  ::pthread_sigmask(SIG_BLOCK, &pipe_only, &old);
  sigpending(&pending);
  bool was_pending = sigismember(&pending, SIGPIPE);
  (void)write_fd(fd, state);
  if (!was_pending) {
    struct timespec now = {};
    while (::sigtimedwait(&pipe_only, nullptr, &now) < 0 && errno == EINTR) {
    }
  }
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

Result<> run_hook(const oci::Hook& h, const std::string& state, const char* kind) {
  std::string what = std::string(kind) + " hook " + h.path;
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) < 0) return sys_error(what + ": pipe");
  UniqueFd rd(pipefd[0]), wr(pipefd[1]);
  std::vector<std::string> args = h.args.empty() ? std::vector<std::string>{h.path} : h.args;
  std::vector<std::string> env = h.env;
  auto argv = cstrs(args);
  auto envp = cstrs(env);

  struct clone_args ca = {};
  int pidfd = -1;
  ca.flags = CLONE_PIDFD;
  ca.pidfd = reinterpret_cast<uint64_t>(&pidfd);
  ca.exit_signal = SIGCHLD;
  long pid = sys::clone3(&ca);
  if (pid < 0) return sys_error(what + ": clone");
  if (pid == 0) {
    ::dup2(rd.get(), 0);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execve(h.path.c_str(), argv.data(), envp.data());
    _exit(127);
  }
  UniqueFd pfd(pidfd);
  rd.reset();
  // A hook that does not read its stdin must not fail the write.
  write_state(wr.get(), state);
  wr.reset();

  struct pollfd p = {pfd.get(), POLLIN, 0};
  int timeout_ms = h.timeout ? *h.timeout * 1000 : -1;
  int n;
  do {
    n = ::poll(&p, 1, timeout_ms);
  } while (n < 0 && errno == EINTR);
  if (n == 0) {
    sys::pidfd_send_signal(pfd.get(), SIGKILL, nullptr, 0);
    ::waitpid(static_cast<pid_t>(pid), nullptr, 0);
    return fail(what + ": timed out after " + std::to_string(*h.timeout) + "s");
  }
  int status = 0;
  while (::waitpid(static_cast<pid_t>(pid), &status, 0) < 0)
    if (errno != EINTR) return sys_error(what + ": wait");
  if (WIFEXITED(status) && WEXITSTATUS(status) == 127 && ::access(h.path.c_str(), X_OK) != 0)
    return sys_error(what);
  if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
    return fail(what + ": exited with status " + std::to_string(WEXITSTATUS(status)));
  if (WIFSIGNALED(status)) return fail(what + ": killed by signal " + std::to_string(WTERMSIG(status)));
  return {};
}

}  // namespace

Result<> run_hooks(const std::vector<oci::Hook>& hooks, const std::string& state_json, const char* kind) {
  for (auto& h : hooks) TRY(run_hook(h, state_json, kind));
  return {};
}

}  // namespace berth::runtime
