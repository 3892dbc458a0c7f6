#include "runtime/foreground.h"

#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

#include "runtime/terminal.h"
#include "util/fd.h"
#include "util/syscalls.h"

namespace berth::runtime {

sigset_t forwarded_signals() {
  sigset_t s;
  sigfillset(&s);
  for (int sig : {SIGSEGV, SIGBUS, SIGILL, SIGFPE}) sigdelset(&s, sig);
  return s;
}

int wait_foreground(pid_t pid, int pidfd, ConsoleProxy* proxy, const sigset_t& blocked) {
  UniqueFd sfd(::signalfd(-1, &blocked, SFD_CLOEXEC));
  UniqueFd ep(::epoll_create1(EPOLL_CLOEXEC));
  auto watch = [&](int fd) {
    struct epoll_event ev = {};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    return ::epoll_ctl(ep.get(), EPOLL_CTL_ADD, fd, &ev) == 0;
  };
  watch(sfd.get());
  bool stdin_watched = false;
  if (proxy) {
    watch(proxy->master());
    stdin_watched = watch(0);
  }
  int status = 0;
  bool exited = false, master_open = proxy != nullptr;
  // The exit may be reaped before SIGCHLD is read from the signalfd.
  auto reap = [&] {
    pid_t w;
    int ws;
    while ((w = ::waitpid(-1, &ws, WNOHANG)) > 0)
      if (w == pid) status = ws, exited = true;
  };
  reap();
  while (!exited || master_open) {
    struct epoll_event evs[4];
    // After the exit, drain what the container left in the pty, then stop.
    int n = ::epoll_wait(ep.get(), evs, 4, exited ? 100 : -1);
    if (n < 0 && errno != EINTR) break;
    if (n == 0 && exited) break;
    for (int i = 0; i < n; ++i) {
      int fd = evs[i].data.fd;
      if (fd == sfd.get()) {
        struct signalfd_siginfo si;
        if (::read(sfd.get(), &si, sizeof si) != sizeof si) continue;
        if (si.ssi_signo == SIGCHLD)
          reap();
        else if (si.ssi_signo == SIGWINCH && proxy)
          proxy->resize_from_stdin();
        else
          sys::pidfd_send_signal(pidfd, static_cast<int>(si.ssi_signo), nullptr, 0);
      } else if (proxy) {
        if (!proxy->pump(fd)) {
          master_open = false;
          ::epoll_ctl(ep.get(), EPOLL_CTL_DEL, proxy->master(), nullptr);
        } else if (fd == 0 && stdin_watched && (evs[i].events & (EPOLLHUP | EPOLLERR))) {
          ::epoll_ctl(ep.get(), EPOLL_CTL_DEL, 0, nullptr);
          stdin_watched = false;
        }
      }
    }
  }
  return status;
}

}  // namespace berth::runtime
