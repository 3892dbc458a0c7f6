// OCI lifecycle hooks: each runs with the container state on stdin, its own args
// and env, and an optional timeout after which it is killed and counts as failed.
#pragma once

#include <string>
#include <vector>

#include "oci/spec.h"
#include "util/error.h"

namespace berth::runtime {

// Runs `hooks` in order in the caller's namespaces; stops at the first failure.
// `kind` names them in errors ("createRuntime hook /usr/bin/x: exited with 3").
Result<> run_hooks(const std::vector<oci::Hook>& hooks, const std::string& state_json, const char* kind);

}  // namespace berth::runtime
