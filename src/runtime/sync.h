// The socket between the runtime and the container process during create.
//
// Between clone and exec the child can't return errors to a caller: every
// failure there is sent over this SOCK_SEQPACKET pair as a kError message whose
// text the parent prints. Descriptors (seccomp listener, pids) travel as
// SCM_RIGHTS.
#pragma once

#include <sys/types.h>

#include <string>

#include "util/error.h"
#include "util/fd.h"

namespace berth::runtime {

enum class Msg : uint32_t {
  kMaps = 1,        // parent -> child: user namespace maps written
  kGo,              // parent -> child: cgroup joined; state JSON attached
  kHooks,           // child -> parent: namespaces made, run createRuntime hooks
  kContinue,        // parent -> child: hooks done
  kSeccompFd,       // child -> parent: notify listener fd attached
  kGrandchild,      // child -> parent: value = pid of the real container process
  kCreated,         // child -> parent: ready and waiting for start
  kError,           // either way: text attached
  kMountNs,         // child -> parent: its mount namespace's fd attached (CreateOptions::keep_mount_ns)
};

struct Message {
  Msg type{};
  int64_t value = 0;
  std::string text;
  UniqueFd fd;
};

Result<> send_msg(int sock, Msg type, int64_t value = 0, std::string_view text = {}, int fd = -1);
Result<Message> recv_msg(int sock);
// Receives one message and fails unless it is `want` (a kError becomes the error).
Result<Message> expect_msg(int sock, Msg want);

// SCM_RIGHTS over a connected unix socket (console socket, pidfd socket).
Result<> send_fd(int sock, int fd, std::string_view payload);
Result<UniqueFd> recv_fd(int sock, std::string* payload = nullptr);

}  // namespace berth::runtime
