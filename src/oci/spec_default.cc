// The template `berth-runtime spec` writes: the same defaults as `runc spec`, so a
// bundle made for one runtime works with the other.
#include <unistd.h>

#include <string>

#include "oci/spec.h"

namespace berth::oci {

std::string default_spec_json(bool rootless) {
  std::string caps = R"(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"])";
  std::string s = R"({
  "ociVersion": "1.3.0",
  "process": {
    "terminal": true,
    "user": { "uid": 0, "gid": 0 },
    "args": [ "sh" ],
    "env": [
      "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
      "TERM=xterm"
    ],
    "cwd": "/",
    "capabilities": {
      "bounding": )" + caps + R"(,
      "effective": )" + caps + R"(,
      "permitted": )" + caps + R"(
    },
    "rlimits": [ { "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 } ],
    "noNewPrivileges": true
  },
  "root": { "path": "rootfs", "readonly": true },
  "hostname": "berth",
  "mounts": [
    { "destination": "/proc", "type": "proc", "source": "proc" },
    { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
      "options": [ "nosuid", "strictatime", "mode=755", "size=65536k" ] },
    { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
      "options": [ "nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620")" +
                  std::string(rootless ? "" : R"(, "gid=5")") + R"( ] },
    { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
      "options": [ "nosuid", "noexec", "nodev", "mode=1777", "size=65536k" ] },
    { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
      "options": [ "nosuid", "noexec", "nodev" ] },)";
  if (rootless) {
    s += R"(
    { "destination": "/sys", "type": "none", "source": "/sys",
      "options": [ "rbind", "nosuid", "noexec", "nodev", "ro" ] }
  ],)";
  } else {
    s += R"(
    { "destination": "/sys", "type": "sysfs", "source": "sysfs",
      "options": [ "nosuid", "noexec", "nodev", "ro" ] },
    { "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
      "options": [ "nosuid", "noexec", "nodev", "relatime", "ro" ] }
  ],)";
  }
  s += R"(
  "linux": {)";
  if (rootless) {
    s += R"(
    "uidMappings": [ { "containerID": 0, "hostID": )" + std::to_string(::getuid()) + R"(, "size": 1 } ],
    "gidMappings": [ { "containerID": 0, "hostID": )" + std::to_string(::getgid()) + R"(, "size": 1 } ],
    "namespaces": [
      { "type": "pid" }, { "type": "ipc" }, { "type": "uts" }, { "type": "mount" },
      { "type": "cgroup" }, { "type": "user" }
    ],)";
  } else {
    s += R"(
    "resources": { "devices": [ { "allow": false, "access": "rwm" } ] },
    "namespaces": [
      { "type": "pid" }, { "type": "network" }, { "type": "ipc" }, { "type": "uts" },
      { "type": "mount" }, { "type": "cgroup" }
    ],)";
  }
  s += R"(
    "maskedPaths": [
      "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
      "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
      "/proc/scsi", "/sys/devices/virtual/powercap"
    ],
    "readonlyPaths": [
      "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
    ]
  }
}
)";
  return s;
}

}  // namespace berth::oci
