// linux.seccomp compiled to a classic BPF program with libseccomp.
//
// The program is built by the runtime before it clones the container (so a bad
// profile fails `create` cleanly, with nothing started), and installed by the
// container process with the raw seccomp(2) syscall just before it execs, so the
// child never calls into libseccomp.
#pragma once

#include <linux/filter.h>

#include <string>
#include <vector>

#include "oci/spec.h"
#include "util/error.h"
#include "util/fd.h"

namespace berth::seccomp {

struct Program {
  std::vector<sock_filter> filter;
  unsigned flags = 0;      // SECCOMP_FILTER_FLAG_* for seccomp(SECCOMP_SET_MODE_FILTER)
  bool notify = false;     // some rule uses SCMP_ACT_NOTIFY: a listener fd is returned
};

// Compiles `s` for the host architecture (plus s.architectures). Errors name the
// field at fault: `linux.seccomp.syscalls[3].action: unknown action "SCMP_ACT_FOO"`.
// Unknown syscall names are skipped (as runc and crun do: profiles list syscalls of
// newer kernels), with a debug log line.
Result<Program> compile(const oci::Seccomp& s);

// compile(), through a cache of compiled programs in `dir` (0700, made if
// missing): compiling a profile of a few hundred rules with libseccomp takes
// milliseconds, and an engine starts containers with the same few profiles
// again and again. An entry is found by a hash of the profile and used only
// when the whole profile it was compiled from is equal, byte for byte, so a
// hash collision can never hand a container another profile's program. A
// cache that cannot be read or written is only slower.
Result<Program> compile_cached(const oci::Seccomp& s, const std::string& dir);

// Installs `p` in the calling thread. Returns the notify listener fd when
// p.notify, otherwise an invalid fd. Async-signal-safe enough for a forked child:
// only the seccomp(2) syscall and prctl.
Result<UniqueFd> install(const Program& p);

// Names used by `features`.
std::vector<std::string> known_actions();
std::vector<std::string> known_operators();
std::vector<std::string> known_archs();
std::vector<std::string> known_flags();

}  // namespace berth::seccomp
