// Spare network namespaces (engine/spare.h). Apart from spare.cc, whose
// <linux/fs.h> does not mix with <sys/mount.h>.
#include <fcntl.h>
#include <linux/nsfs.h>
#include <sched.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "engine/spare.h"
#include "runtime/namespaces.h"
#include "util/fd.h"
#include "util/fs.h"

namespace berth::engine {

namespace {

// A slot: the namespace's bind mount, and a mark that it is there to take.
std::string slot_path(const std::string& dir, int n) { return dir + "/spare-" + std::to_string(n); }
std::string ready_path(const std::string& dir, int n) { return slot_path(dir, n) + ".ready"; }

// The directory's lock, held while a slot is looked at and changed.
UniqueFd lock_dir(const std::string& dir, bool create = true) {
  UniqueFd fd(::open((dir + "/.lock").c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC | (create ? O_CREAT : 0), 0600));
  if (fd && ::flock(fd.get(), LOCK_EX) != 0) fd.reset();
  return fd;
}

// A network namespace mounted there (a spare not yet taken): its fd.
UniqueFd open_netns(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (fd && ::ioctl(fd.get(), NS_GET_NSTYPE) != CLONE_NEWNET) fd.reset();
  return fd;
}

}  // namespace

Result<> make_spare_netns(const std::string& dir) {
  TRY(mkdir_p(dir, 0700));
  // Made before the lock is taken: a maker runs at SCHED_IDLE, and a
  // starting monitor that takes a spare (claim_spare_netns) waited on the
  // lock for as long as the maker, on a busy CPU, took to make one.
  // (None if every slot holds one: looked at again under the lock.)
  bool wanted = false;
  for (int n = 0; n < kSpareSlots && !wanted; ++n) wanted = ::access(ready_path(dir, n).c_str(), F_OK) != 0;
  if (!wanted) return {};
  UniqueFd made = TRY(runtime::make_netns());
  UniqueFd lock = lock_dir(dir);
  if (!lock) return sys_error("lock " + dir);
  // Taken ones' mounts, left by their takers (an unmount waits for an RCU
  // grace period: not on the start's path), go now: a taker makes the next
  // spare as soon as its container runs, so a namespace is kept by its slot
  // only until then.
  int free_slot = -1;
  for (int n = 0; n < kSpareSlots; ++n) {
    if (::access(ready_path(dir, n).c_str(), F_OK) == 0) continue;
    std::string slot = slot_path(dir, n);
    if (open_netns(slot)) (void)::umount2(slot.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW);
    if (free_slot < 0) free_slot = n;
  }
  if (free_slot < 0) return {};
  std::string slot = slot_path(dir, free_slot);
  UniqueFd file(::open(slot.c_str(), O_RDONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!file) return sys_error("create " + slot);
  std::string src = "/proc/self/fd/" + std::to_string(made.get());
  if (::mount(src.c_str(), slot.c_str(), nullptr, MS_BIND, nullptr) < 0) return sys_error("mount " + slot);
  UniqueFd ready(::open(ready_path(dir, free_slot).c_str(), O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!ready) {
    (void)::umount2(slot.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW);
    return sys_error("create " + ready_path(dir, free_slot));
  }
  return {};
}

UniqueFd claim_spare_netns(const std::string& dir, int* slot) {
  UniqueFd lock = lock_dir(dir, false);
  if (!lock) return {};
  for (int n = 0; n < kSpareSlots; ++n) {
    // Its ready mark removed, under the lock, it is ours: no other monitor
    // takes it. Its mount stays until the next maker's visit.
    if (::unlink(ready_path(dir, n).c_str()) != 0) continue;
    if (UniqueFd ns = open_netns(slot_path(dir, n))) {
      *slot = n;
      return ns;
    }
  }
  return {};
}

void release_spare_netns(const std::string& dir, int slot, bool unused) {
  UniqueFd lock = lock_dir(dir, false);
  if (!lock) return;
  std::string path = slot_path(dir, slot);
  if (!open_netns(path) || ::access(ready_path(dir, slot).c_str(), F_OK) == 0) return;
  if (unused) {
    UniqueFd ready(::open(ready_path(dir, slot).c_str(), O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (ready) return;
  }
  (void)::umount2(path.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW);
}

}  // namespace berth::engine
