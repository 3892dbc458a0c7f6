// The systemd cgroup driver (--systemd-cgroup): the container's cgroup is a
// transient unit systemd makes (a scope, or a slice when the name is one), with
// Delegate=yes so the subtree is the runtime's to write. The limits systemd
// knows (memory, CPU, tasks, cpuset, IO weight) are given to it as unit
// properties, so a `systemctl daemon-reload` keeps them; all of them are then
// written through cgroupfs too, by the v1 or v2 manager, which also does
// everything else (freezer, stats, kill, devices).
#pragma once

#include <memory>
#include <string>

#include "cgroup/cgroup.h"
#include "cgroup/dbus.h"
#include "oci/spec.h"
#include "util/error.h"

namespace berth::cgroup {

struct SystemdUnit {
  std::string slice;  // "system.slice"
  std::string name;   // "berth-web.scope" or "web.slice"
};

// runc's "slice:prefix:name": the unit "prefix-name.scope" ("name.scope"
// without a prefix; "name" itself when it ends in ".slice") in `slice`
// (system.slice when empty, user.slice rootless). An empty path is
// "system.slice:berth:<id>".
Result<SystemdUnit> parse_systemd_path(const std::string& cgroups_path, const std::string& id, bool rootless = false);

// A slice's cgroup path: "a-b.slice" is "/a.slice/a-b.slice"; "-.slice" is "/".
Result<std::string> expand_slice(const std::string& slice);

// systemd's unit properties for `res` on a host in `mode` (v1 names where v2's
// have no legacy meaning). Only what systemd itself would write.
dbus::Properties unit_properties(const oci::Resources& res, Mode mode);

// Whether systemd runs as the init system here (/run/systemd/system).
bool systemd_running();

// A manager that starts `unit` in create().
Result<std::unique_ptr<Manager>> open_systemd(const Layout& layout, const SystemdUnit& unit);
// The manager of a cgroup made earlier by the systemd driver: `path` is its
// cgroupfs path (as path() gave it), whose last component is the unit.
Result<std::unique_ptr<Manager>> reopen_systemd(const Layout& layout, const std::string& path);

}  // namespace berth::cgroup
