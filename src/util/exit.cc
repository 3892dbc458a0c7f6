#include "util/exit.h"

#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>

#include "util/syscalls.h"

namespace berth {

namespace {

// The keeper's stack, static so that nothing is allocated for it: it needs a
// few hundred bytes.
alignas(16) char keeper_stack[16 << 10];
pid_t keeper_parent = 0;

// Raw system calls only: it runs in the exiting process's memory, with that
// process's thread pointer. Its signals came blocked (the caller's mask).
int keeper(void*) {
  // Copies of our stdio (the only fds left): a reader of our stdout sees its
  // end when we exit, not when the keeper does. Nor does it pin our cwd.
  ::syscall(SYS_close_range, 0U, ~0U, 0U);
  // The unmapping waits for an idle CPU: at our priority it took one from
  // whatever the caller started next (back to back, the next `run`'s exec).
  struct sched_param idle = {};
  ::syscall(SYS_sched_setscheduler, 0, SCHED_IDLE, &idle);
  ::syscall(SYS_chdir, "/");
  ::syscall(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
  // A parent gone before the death signal was armed: nothing to wait for.
  if (::syscall(SYS_getppid) == keeper_parent)
    for (;;) ::syscall(SYS_ppoll, nullptr, 0, nullptr, nullptr, 0);
  return 0;
}

}  // namespace

void exit_deferring_unmap(int status) {
  std::fflush(nullptr);
  // Not as PID 1 (no one would reap the keeper: and our exit is the
  // namespace's end anyway), nor where an fd could not be closed first.
  // Closed first, so the keeper holds no copy of them: a lock (flock), a
  // socket whose end a monitor waits for, a pipe someone reads to its end.
  if (sys::kHaveClone3Fn && ::getpid() != 1 && sys::close_range(3, ~0U, 0) == 0) {
    keeper_parent = ::getpid();
    // Blocked here, so the keeper is born with every signal blocked; we are
    // about to exit, and SIGKILL is not blockable.
    sigset_t all;
    sigfillset(&all);
    ::sigprocmask(SIG_BLOCK, &all, nullptr);
    struct clone_args ca = {};
    ca.flags = CLONE_VM | CLONE_CLEAR_SIGHAND;
    ca.exit_signal = SIGCHLD;
    ca.stack = reinterpret_cast<uint64_t>(keeper_stack);
    ca.stack_size = sizeof keeper_stack;
    (void)sys::clone3_fn(&ca, keeper, nullptr);
  }
  ::_exit(status);
}

}  // namespace berth
