// Docker's create body + the image config -> the OCI runtime config of the
// container's bundle, with Docker's defaults (capabilities, masked paths,
// /dev/shm, device rules). The caller hands it the documents it parsed;
// this header needs only json_fwd.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "engine/volumes.h"
#include "oci/spec.h"
#include "util/error.h"

namespace berth::engine {

struct SpecInput {
  std::string id;
  // Docker's create body (Config fields + HostConfig) and the image's config
  // blob, as the caller parsed them; one that is not an object reads as {}.
  const nlohmann::json* body = nullptr;
  const nlohmann::json* image = nullptr;
  int rootfs_fd = -1;        // the container's mounted rootfs (a missing workdir is made in it)
  // Without rootfs_fd (a spec made before the rootfs is mounted): the
  // working directory other than / is put here, for the caller to make.
  std::string* workdir_to_make = nullptr;
  // The image's /etc/passwd and /etc/group: -u, and the user's groups and home.
  std::string etc_passwd, etc_group;
  std::string dir;           // containers/<id>: hostname, hosts, resolv.conf live here
  std::string staging;       // where they are while the container is made, if not yet in dir
  // Init pids of the containers named by --network/--pid/--ipc container:NAME,
  // resolved by the caller: {"network", pid}...
  std::vector<std::pair<std::string, pid_t>> joined;
  std::string init_path;     // berth's init binary, for --init
  // Binds, volumes and --mount tmpfs, resolved (Volumes::prepare).
  std::vector<MountPoint> mounts;
  bool systemd_cgroup = false;  // cgroupsPath for the systemd driver
};

// Every capability the running kernel knows ("CAP_CHOWN", ...).
std::vector<std::string> all_capabilities();

// The linux.cgroupsPath of container `id` under the cgroupfs or the systemd driver.
std::string container_cgroup_path(const std::string& id, bool systemd);

// The device cgroup rules make_spec gives a container before its --device
// ones: everything denied, or with --privileged allowed (the runtime adds
// the devices every container may use). berth's early monitor puts a
// container's on the cgroup it makes ahead of the start (inline: the monitor
// links no spec.cc).
inline std::vector<oci::DeviceCgroupRule> base_device_rules(bool privileged) {
  oci::DeviceCgroupRule all;
  all.allow = privileged;
  all.access = "rwm";
  return {all};
}

// The config.json text; errors name the flag at fault.
Result<std::string> make_spec(const SpecInput& in);

// What `create` checks before making anything: the command, the flags'
// syntax. Returns the container's Path and Args as Docker reports them.
Result<std::vector<std::string>> container_command(std::string_view body, std::string_view image_config);

}  // namespace berth::engine
