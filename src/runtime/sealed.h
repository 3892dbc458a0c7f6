// Re-executes the calling program from a sealed memfd copy of itself, unless
// it already runs from one. A process that joins a running container (exec)
// must never give the container a handle on the host's binary through
// /proc/PID/exe (CVE-2019-5736): the sealed copy can be neither written nor
// resized, and is not the file on the host. Does not return on success;
// prints a line naming `name` and exits 1 on failure.
#pragma once

namespace berth::runtime {

void reexec_sealed(char** argv, const char* name);

}  // namespace berth::runtime
