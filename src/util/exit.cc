#include "util/exit.h"

#include <linux/sched.h>
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
// process's thread pointer.
int keeper(void*) {
  uint64_t all = ~uint64_t{0};
  ::syscall(SYS_rt_sigprocmask, SIG_SETMASK, &all, nullptr, sizeof all);
  // Copies of our stdio (the only fds left): a reader of our stdout sees its
  // end when we exit, not when the keeper does.
  ::syscall(SYS_close_range, 0U, ~0U, 0U);
  ::syscall(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
  // A parent gone before the death signal was armed: nothing to wait for.
  if (::syscall(SYS_getppid) == keeper_parent)
    for (;;) ::syscall(SYS_pause);
  return 0;
}

}  // namespace

void exit_deferring_unmap(int status) {
  std::fflush(nullptr);
  if constexpr (sys::kHaveClone3Fn) {
    // Closed first, so the keeper holds no copy of them: a lock (flock), a
    // socket whose end a monitor waits for, a pipe someone reads to its end.
    // (Its copies of 0-2 it closes as it starts.)
    sys::close_range(3, ~0U, 0);
    keeper_parent = ::getpid();
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
