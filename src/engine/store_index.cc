#include "engine/store_index.h"

#include <fcntl.h>

namespace berth::engine {

namespace {
// SQLite's unix VFS: the -shm's locks start at byte 120 (UNIX_SHM_BASE), eight
// of them, then the dead man switch (UNIX_SHM_DMS).
constexpr off_t kShmDeadManSwitch = 120 + 8;
}  // namespace

UniqueFd hold_store_index(const std::string& store_root) {
  std::string shm = store_root + "/berth.db-shm";
  UniqueFd fd(::open(shm.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY));
  if (!fd) return {};
  struct flock l = {};
  l.l_type = F_RDLCK;
  l.l_whence = SEEK_SET;
  l.l_start = kShmDeadManSwitch;
  l.l_len = 1;
  // Not waited for: a write lock there is a first connection truncating the
  // file, which it then shares with a read lock of its own.
  if (::fcntl(fd.get(), F_OFD_SETLK, &l) != 0) return {};
  return fd;
}

}  // namespace berth::engine
