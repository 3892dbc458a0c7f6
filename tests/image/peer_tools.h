// Files that skopeo and podman keep at fixed paths of the host whatever
// their flags: containers/image's blob-info cache (/var/lib/containers/cache
// for root) and podman's locks (/dev/shm/libpod_lock). A test that runs them
// holds a PeerToolFiles for its whole run, and those of them that were not
// there when it began are removed as it ends. The tests that do are
// serialized by it (an flock on this test binary, which every ctest process
// of it opens), so that none removes what another is still using, and none
// takes another's files for the host's.
#pragma once

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <filesystem>
#include <vector>

#include "util/fd.h"

namespace berth::test {

class PeerToolFiles {
 public:
  PeerToolFiles() {
    lock_.reset(::open("/proc/self/exe", O_RDONLY | O_CLOEXEC));
    if (lock_) (void)::flock(lock_.get(), LOCK_EX);
    for (const char* p : {"/var/lib/containers", "/dev/shm/libpod_lock"})
      if (::access(p, F_OK) != 0) absent_.push_back(p);
  }
  ~PeerToolFiles() {
    std::error_code ec;
    for (const char* p : absent_) std::filesystem::remove_all(p, ec);
  }
  PeerToolFiles(const PeerToolFiles&) = delete;
  PeerToolFiles& operator=(const PeerToolFiles&) = delete;

 private:
  UniqueFd lock_;
  std::vector<const char*> absent_;
};

}  // namespace berth::test
