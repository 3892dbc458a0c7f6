// Seccomp for containers made by the engine, as Docker decides it:
//   - by default, Docker's policy: the system calls its default profile
//     refuses (kernel modules, mounts, namespaces, keyrings, clocks, tracing,
//     io_uring...) fail with EPERM unless the container holds the capability
//     that makes them safe; clone3 fails with ENOSYS (so libc falls back to
//     clone, whose namespace flags can be checked);
//   - `--security-opt seccomp=FILE`: a profile in Docker's format (archMap,
//     includes/excludes by capability and architecture, minKernel) or OCI's;
//   - `seccomp=unconfined` and --privileged: none.
// The result is the runtime spec's linux.seccomp object.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "util/error.h"

namespace berth::engine {

// `profile`: "" (the default), "unconfined", or a file path. `caps`: the
// container's bounding set ("CAP_SYS_ADMIN", ...). nullopt: no filter.
Result<std::optional<nlohmann::json>> seccomp_profile(std::string_view profile, const std::vector<std::string>& caps);

}  // namespace berth::engine
