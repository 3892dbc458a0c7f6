#include "runtime/terminal.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/statfs.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include <cstring>

#include "runtime/sync.h"
#include "util/fs.h"

#ifndef TIOCGPTPEER
#define TIOCGPTPEER _IO('T', 0x41)
#endif

namespace berth::runtime {

Result<Pty> open_container_pty(const std::optional<oci::ConsoleSize>& size) {
  UniqueFd root(::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
  Pty p;
  p.master = TRY_CTX(open_in_root(root.get(), "/dev/ptmx", O_RDWR | O_NOCTTY), "open pty master");
  struct statfs sfs;
  if (::fstatfs(p.master.get(), &sfs) < 0 || sfs.f_type != DEVPTS_SUPER_MAGIC)
    return fail("/dev/ptmx in the container is not on a devpts filesystem");
  if (::unlockpt(p.master.get()) < 0) return sys_error("unlockpt");
  p.slave.reset(::ioctl(p.master.get(), TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC));
  if (!p.slave) return sys_error("open pty slave");
  if (size) {
    struct winsize ws = {};
    ws.ws_row = static_cast<unsigned short>(size->height);
    ws.ws_col = static_cast<unsigned short>(size->width);
    ::ioctl(p.slave.get(), TIOCSWINSZ, &ws);
  }
  return p;
}

Result<> make_controlling_tty(int slave) {
  if (::setsid() < 0) return sys_error("setsid");
  if (::ioctl(slave, TIOCSCTTY, 0) < 0) return sys_error("set controlling terminal");
  for (int fd = 0; fd < 3; ++fd)
    if (::dup2(slave, fd) < 0) return sys_error("dup2 pty");
  return {};
}

Result<UniqueFd> connect_unix(const std::string& path) {
  UniqueFd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!s) return sys_error("socket");
  struct sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  std::string p = path;
  // Long paths (deep --root dirs) go through an O_PATH fd of their directory.
  UniqueFd dir;
  if (p.size() >= sizeof addr.sun_path) {
    auto slash = p.find_last_of('/');
    dir.reset(::open(p.substr(0, slash).c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!dir) return sys_error("open " + p.substr(0, slash));
    p = fd_path(dir.get()) + p.substr(slash);
    if (p.size() >= sizeof addr.sun_path) return fail("socket path too long: " + path);
  }
  std::memcpy(addr.sun_path, p.c_str(), p.size() + 1);
  if (::connect(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) return sys_error("connect " + path);
  return s;
}

Result<> send_pidfd(const std::string& path, int pidfd) {
  if (path.empty()) return {};
  UniqueFd s = TRY_CTX(connect_unix(path), "--pidfd-socket");
  TRY_CTX(send_fd(s.get(), pidfd, "pidfd"), "--pidfd-socket");
  return {};
}

ConsoleProxy::ConsoleProxy(UniqueFd master) : master_(std::move(master)) {
  static_assert(sizeof(termios) <= sizeof saved_);
  struct termios t;
  if (::isatty(0) && ::tcgetattr(0, &t) == 0) {
    std::memcpy(saved_, &t, sizeof t);
    struct termios raw = t;
    ::cfmakeraw(&raw);
    raw.c_oflag |= OPOST;  // keep "\n" -> "\r\n" on our side
    if (::tcsetattr(0, TCSANOW, &raw) == 0) raw_ = true;
    resize_from_stdin();
  }
}

ConsoleProxy::~ConsoleProxy() {
  if (raw_) {
    struct termios t;
    std::memcpy(&t, saved_, sizeof t);
    ::tcsetattr(0, TCSANOW, &t);
  }
}

void ConsoleProxy::resize_from_stdin() {
  struct winsize ws;
  if (::ioctl(0, TIOCGWINSZ, &ws) == 0) ::ioctl(master_.get(), TIOCSWINSZ, &ws);
}

bool ConsoleProxy::pump(int ready_fd) {
  char buf[16384];
  if (ready_fd == 0 && stdin_open_) {
    ssize_t n = ::read(0, buf, sizeof buf);
    if (n <= 0) {
      stdin_open_ = false;
      // End of input: send the terminal's EOF character, as a user's ^D would.
      char eof = 4;
      (void)!::write(master_.get(), &eof, 1);
      return true;
    }
    (void)write_fd(master_.get(), std::string_view(buf, static_cast<size_t>(n)));
    return true;
  }
  ssize_t n = ::read(master_.get(), buf, sizeof buf);
  if (n <= 0) return false;
  (void)write_fd(1, std::string_view(buf, static_cast<size_t>(n)));
  return true;
}

}  // namespace berth::runtime
