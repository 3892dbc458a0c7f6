// Container terminals: a pty opened inside the container's own devpts instance,
// its master handed to the caller over --console-socket (SCM_RIGHTS), as runc does.
#pragma once

#include "oci/spec.h"
#include "util/error.h"
#include "util/fd.h"

namespace berth::runtime {

struct Pty {
  UniqueFd master, slave;
};

// Opens /dev/ptmx of the current root (after pivot_root), checks it is a devpts
// node, and opens the slave through the master (TIOCGPTPEER) so no path to the
// slave is ever resolved (CVE-2025-52565 class).
Result<Pty> open_container_pty(const std::optional<oci::ConsoleSize>& size);

// Makes `slave` the controlling terminal and stdio of the calling process.
Result<> make_controlling_tty(int slave);

// Connects to a --console-socket path (a unix socket the caller listens on).
Result<UniqueFd> connect_unix(const std::string& path);

// --pidfd-socket: connects to `path` and hands over `pidfd` (empty path: nothing).
Result<> send_pidfd(const std::string& path, int pidfd);

// Foreground console: copies between our stdio and `master` until the master
// hangs up; puts a terminal stdin in raw mode meanwhile. Used by `run`/`exec`
// without --console-socket.
class ConsoleProxy {
 public:
  explicit ConsoleProxy(UniqueFd master);
  ~ConsoleProxy();
  int master() const { return master_.get(); }
  // Handles readiness on stdin or master; false when the master has closed.
  bool pump(int ready_fd);
  void resize_from_stdin();

 private:
  UniqueFd master_;
  bool raw_ = false;
  bool stdin_open_ = true;
  char saved_[64];
};

}  // namespace berth::runtime
