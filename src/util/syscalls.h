// Thin wrappers for syscalls glibc 2.36 does not wrap (or wraps late).
#pragma once

#include <fcntl.h>
#include <linux/openat2.h>
#include <linux/sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif

namespace berth::sys {

inline long clone3(struct clone_args* args) {
  return ::syscall(SYS_clone3, args, sizeof(*args));
}
// clone3 whose child runs fn(arg) on args->stack and exits with its return
// value: for CLONE_VM | CLONE_VFORK starts. Only x86-64 has the trampoline
// (kHaveClone3Fn); elsewhere it fails with ENOSYS, and callers take a
// fork-style clone instead.
long clone3_fn(struct clone_args* args, int (*fn)(void*), void* arg);
#if defined(__x86_64__)
inline constexpr bool kHaveClone3Fn = true;
#else
inline constexpr bool kHaveClone3Fn = false;
#endif
inline int openat2(int dirfd, const char* path, struct open_how* how) {
  return static_cast<int>(::syscall(SYS_openat2, dirfd, path, how, sizeof(*how)));
}
inline int pidfd_open(pid_t pid, unsigned flags) {
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, flags));
}
inline int pidfd_send_signal(int pidfd, int sig, siginfo_t* info, unsigned flags) {
  return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, info, flags));
}
inline int close_range(unsigned first, unsigned last, unsigned flags) {
  return static_cast<int>(::syscall(SYS_close_range, first, last, flags));
}
inline int pivot_root(const char* new_root, const char* put_old) {
  return static_cast<int>(::syscall(SYS_pivot_root, new_root, put_old));
}
inline int ioprio_set(int which, int who, int ioprio) {
  return static_cast<int>(::syscall(SYS_ioprio_set, which, who, ioprio));
}

}  // namespace berth::sys
