// cgroup v2 has no devices.allow/deny: device access is decided by an eBPF
// program of type BPF_PROG_TYPE_CGROUP_DEVICE attached to the cgroup. This
// compiles the OCI device rules into such a program and attaches it.
//
// Semantics are those of cgroup v1's devices.allow/deny written in order (what
// runc and crun emulate): a type "a" rule with major and minor wildcards resets
// the default (allow all, or deny all) and forgets earlier rules; every other
// rule is an exception, and the last exception that matches a request decides
// it. An allow rule matches when every access the request asks for is in the
// rule's access; a deny rule matches when any of them is.
#pragma once

#include <cstdint>
#include <vector>

#include "oci/spec.h"
#include "util/error.h"
#include "util/fd.h"

namespace berth::cgroup {

struct BpfInsn {
  uint8_t code;
  uint8_t dst_reg : 4;
  uint8_t src_reg : 4;
  int16_t off;
  int32_t imm;
};

// The program's instructions; exposed for unit tests (an interpreter there runs
// them against requests), and fails only on a rule it cannot express (a bad
// type or access letter), naming it as "linux.resources.devices[N]: ...".
// A type "a" (or empty) rule with both major and minor wildcards (absent or
// negative) is the reset, whatever its access letters, as in v1. A rule whose
// major or minor is above INT32_MAX matches no device (the kernel's are 12 and
// 20 bits) and is left out. With no reset at all the default is deny.
Result<std::vector<BpfInsn>> compile_device_filter(const std::vector<oci::DeviceCgroupRule>& rules);

// Loads the program for `rules` and attaches it to the cgroup v2 directory
// `cgroup_dir` with BPF_F_ALLOW_MULTI, then detaches the device programs that
// were attached to that directory before (so an update replaces the filter
// atomically: there is never a moment with no filter). Fails with a clear line
// where the kernel has no cgroup BPF.
Result<> attach_device_filter(int cgroup_dir, const std::vector<oci::DeviceCgroupRule>& rules);

}  // namespace berth::cgroup
