// The container's root filesystem: propagation, the rootfs bind, config mounts,
// /dev, pivot_root, masked and read-only paths.
//
// Every destination is resolved beneath the rootfs with openat2(RESOLVE_IN_ROOT)
// to an fd, and the mount is made on that fd (move_mount, or mount(2) through
// /proc/self/fd/N): a string path from the config is never re-resolved after it
// was checked (CVE-2021-30465 class).
#pragma once

#include <functional>
#include <string>

#include "cgroup/cgroup.h"
#include "oci/spec.h"
#include "util/error.h"
#include "util/fd.h"

namespace berth::runtime {

struct RootfsPlan {
  const oci::Spec* spec = nullptr;
  std::string rootfs;        // absolute host path
  bool new_userns = false;
  bool new_cgroupns = false;
  bool no_pivot = false;
  const cgroup::Layout* cgroup_layout = nullptr;  // null: no cgroup
  std::string cgroup_path;
  // Called once before the first mount that shows cgroups (the container must
  // be in its cgroup, and in its cgroup namespace, by then).
  std::function<Result<>()> before_cgroup_mount;
};

// Everything before pivot_root, in the container's new mount namespace.
Result<> setup_rootfs(const RootfsPlan& plan);
// pivot_root (or MS_MOVE + chroot with no_pivot) into the rootfs.
Result<> enter_rootfs(const RootfsPlan& plan);
// After pivot_root: masked and read-only paths, read-only root, propagation.
Result<> finish_rootfs(const RootfsPlan& plan);

// Bind-mounts the pty slave `slave_fd` over /dev/console (a regular file we make).
Result<> bind_console(int slave_fd);

// Parsed mount options (exposed for unit tests).
struct MountOptions {
  unsigned long flags = 0;        // MS_* set
  unsigned long clear = 0;        // MS_* cleared ("rw", "suid", ...)
  unsigned long propagation = 0;  // MS_SHARED | MS_REC ...
  uint64_t rec_attr_set = 0, rec_attr_clr = 0;  // MOUNT_ATTR_* from r* options
  bool bind = false, recursive = false;
  bool idmap = false, ridmap = false, tmpcopyup = false;
  std::string data;
};
Result<MountOptions> parse_mount_options(const std::vector<std::string>& opts);

}  // namespace berth::runtime
