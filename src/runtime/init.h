// The container process between clone and execve.
//
// The body of init_container() is the start-up order itself: join namespaces,
// wait for the parent's go, mounts, hostname, sysctls, hooks, pivot_root, masks,
// terminal, process attributes, seccomp, then wait for `start` and exec. It never
// returns: errors go to the parent over the sync socket.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "runtime/mounts.h"
#include "runtime/seccomp.h"
#include "util/fd.h"

namespace berth::runtime {

struct InitContext {
  const oci::Spec* spec = nullptr;
  std::string id;
  int sync_fd = -1;         // our end of the sync socketpair
  int listen_fd = -1;       // start.sock, listening; -1: `run`, exec as soon as set up
  bool hook_handshake = false;  // stop for the parent's prestart/createRuntime hooks
  int console_fd = -1;      // connected --console-socket, or -1
  int preserve_fds = 0;
  bool no_new_keyring = false;
  // Namespaces joined by path, entered in this order (user first).
  std::vector<std::pair<int, UniqueFd>> joins;  // (CLONE_NEW* flag, fd)
  // New namespaces still to unshare in the child: cgroup (after the cgroup join),
  // and, when a user namespace was joined, all of them.
  int unshare_flags = 0;
  bool fork_for_pid = false;  // unshare(CLONE_NEWPID) needs one more fork
  // Started vfork-style: we share the parent's memory while it sleeps until
  // we exec, so no kGo comes, and nothing the parent still owns is changed.
  bool direct = false;
  // Set by a direct start's child just before execve: the parent tells an
  // exec (the sync socket closing) from a death without a word.
  bool exec_reached = false;
  std::string state;          // state JSON from kGo, for the hooks run in here
  // cgroup v1 `tasks` files to join by ourselves, first thing (see
  // cgroup::Manager::self_join_files); empty when the parent places us.
  std::vector<std::string> cgroup_tasks;
  bool new_mountns = false;
  // A network namespace of its own, made by the clone or unshared: its
  // loopback is set up (runtime/namespaces.h loopback_up).
  bool new_netns = false;
  // Send the parent our mount namespace (kMountNs) once we are in it: a
  // direct start's parent reads it after our exec (CreateOptions::keep_mount_ns).
  bool send_mount_ns = false;
  RootfsPlan plan;
  const seccomp::Program* seccomp = nullptr;
  // The signals set to other than their default in the parent (process.h's
  // signals_not_default), put back before the exec.
  uint64_t reset_signals = ~uint64_t{0};
};

[[noreturn]] void init_container(InitContext& c);

// The sysctl file under /proc/sys for a key, refusing keys that are not
// namespaced by a namespace the container owns. Exposed for unit tests.
Result<std::string> sysctl_path(const oci::Spec& spec, const std::string& key);

}  // namespace berth::runtime
