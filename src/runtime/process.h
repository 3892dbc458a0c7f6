// Turning the calling (container) process into process.* of the spec: rlimits,
// scheduling, user and groups, capabilities, no_new_privs, seccomp, and the final
// execve. Shared by the container's init and by `exec`.
#pragma once

#include <string>
#include <vector>

#include "oci/spec.h"
#include "runtime/seccomp.h"
#include "util/error.h"
#include "util/fd.h"

namespace berth::runtime {

// Before the user switch, while still root in the container's user namespace.
Result<> apply_rlimits(const std::vector<oci::Rlimit>& limits);
Result<> apply_scheduling(const oci::Process& p);
Result<> apply_cpu_affinity(const std::string& cpus, const char* field);
Result<> apply_personality(const oci::Linux& l);

// Drops the bounding set, switches to p.user, sets the other four capability sets,
// sets no_new_privs. Inheritable is exactly what the config lists (empty if none).
Result<> apply_user_and_caps(const oci::Process& p);

// SELinux and AppArmor labels: set for the coming execve where the LSM is
// enabled; a debug line (and nothing else) where it is not, as runc does.
Result<> apply_lsm_labels(const oci::Process& p);

// Resolves args[0] inside the current root using PATH from `env` (like execvp, but
// never outside the container): the path to execve.
Result<std::string> lookup_executable(const std::string& arg0, const std::vector<std::string>& env);

// Closes every fd from 3+preserve_fds up except `keep`: whatever the caller leaked
// to us (or we opened, such as a lock) must not live on in the container.
void close_fds_except(int preserve_fds, const std::vector<int>& keep);

// Marks every fd >= first CLOEXEC except the `keep` ones, clears CLOEXEC on 3..3+preserve-1.
void prepare_fds_for_exec(int preserve_fds, const std::vector<int>& keep);

// Execs `p`, signals reset to their default, unblocked. Returns only on
// failure. `reset`: a mask of the signals that may need it (bit n-1 for
// signal n: signals_not_default()), all of them by default; an exec resets
// caught ones by itself, but not the ignored ones, and a caught one must not
// run its handler before the exec. `all_blocked`: every signal stays blocked
// through the exec instead (kBlockSignalsAnnotation).
Error exec_process(const std::string& path, const oci::Process& p, uint64_t reset = ~uint64_t{0},
                   bool all_blocked = false);

// The annotation ("true") that has the container's process start with every
// signal blocked: for an init (berth-init) that waits for them with
// sigwaitinfo. As PID 1 of its namespace a process drops a signal it has
// neither blocked nor a handler for, so one sent between the exec and the
// init's own sigprocmask would be lost; blocked, it stays pending for it.
inline constexpr const char* kBlockSignalsAnnotation = "run.oci.berth.signals_blocked";

// The signals ignored or caught in this process (their dispositions asked
// of the kernel), all of them if that fails: resetting only these before an
// exec is one system call each (the asking, 64 cheap ones, is done once, in
// the parent, before the clone).
uint64_t signals_not_default();

// Parses a cpu list "0-3,8" into a cpu_set (errors name `field`).
Result<std::vector<int>> parse_cpu_list(const std::string& s, const char* field);

}  // namespace berth::runtime
