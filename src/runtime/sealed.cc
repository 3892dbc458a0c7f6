// See sealed.h.
#include "runtime/sealed.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

extern char** environ;

namespace berth::runtime {

void reexec_sealed(char** argv, const char* name) {
  int self = ::open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
  if (self < 0) return;
  int seals = ::fcntl(self, F_GET_SEALS);
  if (seals >= 0 && (seals & (F_SEAL_WRITE | F_SEAL_SEAL)) == (F_SEAL_WRITE | F_SEAL_SEAL)) {
    ::close(self);
    return;
  }
  struct stat st;
  int mfd = ::memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (mfd < 0 || ::fstat(self, &st) < 0) {
    std::fprintf(stderr, "%s: cannot copy itself to a sealed memfd: %s\n", name, std::strerror(errno));
    ::_exit(1);
  }
  off_t off = 0;
  while (off < st.st_size)
    if (::sendfile(mfd, self, &off, static_cast<size_t>(st.st_size - off)) <= 0) break;
  ::close(self);
  // F_SEAL_WRITE waits (about 150 ms) for transient references to the new
  // pages to go (LRU batches, compaction, reclaim) and says EBUSY if they
  // outlive that: on a loaded host they can. Nothing maps this memfd, so a
  // later try succeeds; a few, spaced out, before giving up.
  int sealed = -1;
  for (int attempt = 0; off == st.st_size && attempt < 6; ++attempt) {
    sealed = ::fcntl(mfd, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE);
    if (sealed == 0 || errno != EBUSY) break;
    ::usleep(static_cast<useconds_t>(10000) << attempt);
  }
  if (off != st.st_size || sealed < 0) {
    std::fprintf(stderr, "%s: cannot seal its memfd copy: %s\n", name, std::strerror(errno));
    ::_exit(1);
  }
  ::fexecve(mfd, argv, environ);
  std::fprintf(stderr, "%s: cannot re-execute from memfd: %s\n", name, std::strerror(errno));
  ::_exit(1);
}

}  // namespace berth::runtime
