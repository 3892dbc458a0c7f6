// Namespace names, clone flags, joining by path, and user namespace id maps.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "oci/spec.h"
#include "util/error.h"
#include "util/fd.h"

namespace berth::runtime {

// "network" -> CLONE_NEWNET; 0 for unknown.
int ns_flag(std::string_view type);
// "network" -> "net" (the name under /proc/PID/ns/).
const char* ns_proc_name(std::string_view type);

// Opens a namespace file to join and checks it is a namespace of `type`
// (NS_GET_NSTYPE), so a config can't make us setns into something else.
Result<UniqueFd> open_ns(const oci::Namespace& ns);

// Writes /proc/PID/{uid,gid}_map (and setgroups when `deny_setgroups`).
Result<> write_id_maps(pid_t pid, const std::vector<oci::IdMapping>& uids,
                       const std::vector<oci::IdMapping>& gids, bool deny_setgroups);

// A new, empty network namespace, the calling thread staying in its own
// (the process's other threads are not touched): for CreateOptions::netns_fd.
Result<UniqueFd> make_netns();

// Sets the calling thread's network namespace's loopback up, as runc and
// crun do for a new one (Docker's --network none has a working 127.0.0.1).
Result<> loopback_up();

// Writes /proc/self/timens_offsets for a time namespace not yet entered.
Result<> write_time_offsets(const std::map<std::string, oci::TimeOffset>& offs);

}  // namespace berth::runtime
