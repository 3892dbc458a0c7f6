// Ending a process without waiting for its address space to be unmapped.
#pragma once

namespace berth {

// Flushes stdio and ends the process with `status`, as returning from main
// would (berth registers no atexit handlers, and what it leaves open the
// kernel closes). The slowest part of an exit of a large static binary is
// the unmapping of its address space (berth's CLI has some 1,400 pages of
// its text mapped, 64 KiB around each fault: ~0.3 ms on the VM this was
// measured on), and the kernel does it before the parent learns of the exit.
// Here a second process sharing the address space (CLONE_VM), holding no
// file and no signal handler, keeps it until we are gone; our exit then
// only drops a reference, and the keeper, killed by our death
// (PR_SET_PDEATHSIG), unmaps it off the caller's path. The keeper is reaped
// by whoever reaps our orphans (init, a subreaper). A plain exit as PID 1,
// where fds cannot be closed first (close_range), without clone3 or
// CLONE_CLEAR_SIGHAND, or on an architecture without sys::clone3_fn.
[[noreturn]] void exit_deferring_unmap(int status);

}  // namespace berth
