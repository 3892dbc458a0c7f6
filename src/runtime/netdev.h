// linux.netDevices: host network interfaces moved into the container's network
// namespace (and renamed), over rtnetlink. When that namespace goes away the
// kernel returns physical devices to the host and destroys virtual ones.
#pragma once

#include <sys/types.h>

#include <map>
#include <string>

#include "oci/spec.h"
#include "util/error.h"

namespace berth::runtime {

// Moves each device of `devices` (host name -> new name) into the network
// namespace of `pid`. Names are checked first, so a bad entry moves nothing.
Result<> move_net_devices(const std::map<std::string, oci::NetDevice>& devices, pid_t pid);

}  // namespace berth::runtime
