#include "engine/spare.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>

#include "util/fd.h"
#include "util/fs.h"

namespace berth::engine {

namespace {

// What create makes (Engine::create, ImageStore::create_rootfs), with its modes.
struct Entry {
  const char* name;
  bool dir;
  mode_t mode;
};
constexpr Entry kSkeleton[] = {
    {"upper", true, 0755},       {"work", true, 0755},  {"rootfs", true, 0755},
    {"hostname", false, 0644},   {"hosts", false, 0644}, {"resolv.conf", false, 0644},
    {"config.json", false, 0600},
};

std::string slot_name(int n) { return ".spare-" + std::to_string(n); }

// ext4 without a journal (this VM's) skips, for every new inode, each free
// one of its block group deleted in the last minute (longer while its inode
// table block is not yet written): a scan from the group's first inode,
// ~0.2 us a skip. Every container's directory, files and the overlay mount's own
// (work/work, its probes) landed in containers/'s group, which a stream of
// `run --rm` fills with such inodes: after a few hundred runs the mount took
// 1.5-2.2 ms, not 0.25 (measured). Marked a "top directory" (chattr +T),
// containers/ has each new subdirectory placed by Orlov's allocator in a
// group of few directories, and everything below it follows: 0.25-0.29 ms
// under the same load. A filesystem without the flag keeps its own way.
// The placement has its price: Orlov's search over every group, and a read
// of the chosen group's bitmap, made such a mkdir take 0.3-0.8 ms (measured:
// 23 us in an unmarked directory), holding its parent's lock all along.
// Spares are therefore made in a directory of their own (kSpareNursery, also
// marked) and moved into containers/ complete: a create's or a removal's
// rename in containers/ never waits for one being made (it did, for 0.25-1.5
// ms, in half of the back-to-back `run --rm`s, traced).
void spread_subdirectories(int dir) {
  int flags = 0;
  if (::ioctl(dir, FS_IOC_GETFLAGS, &flags) != 0 || (flags & FS_TOPDIR_FL)) return;
  flags |= FS_TOPDIR_FL;
  (void)::ioctl(dir, FS_IOC_SETFLAGS, &flags);
}

}  // namespace

Result<> make_spare(const std::string& containers) {
  UniqueFd dir(::open(containers.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir) return sys_error("open " + containers);
  spread_subdirectories(dir.get());
  auto free_slot = [&] {
    for (int n = 0; n < kSpareSlots; ++n)
      if (::faccessat(dir.get(), slot_name(n).c_str(), F_OK, AT_SYMLINK_NOFOLLOW) != 0 && errno == ENOENT) return n;
    return -1;
  };
  if (free_slot() < 0) return {};
  if (::mkdirat(dir.get(), kSpareNursery, 0700) < 0 && errno != EEXIST)
    return sys_error("mkdir " + containers + "/" + kSpareNursery);
  UniqueFd nursery(::openat(dir.get(), kSpareNursery, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!nursery) return sys_error("open " + containers + "/" + kSpareNursery);
  spread_subdirectories(nursery.get());
  // A trash name (trash_age's form): a maker that dies leaves it to repair().
  std::string tmp = ".trash-spare." + std::to_string(::time(nullptr)) + "." + std::to_string(::getpid());
  if (::mkdirat(nursery.get(), tmp.c_str(), 0700) < 0)
    return sys_error("mkdir " + containers + "/" + kSpareNursery + "/" + tmp);
  auto made = [&]() -> Result<> {
    UniqueFd d(::openat(nursery.get(), tmp.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!d) return sys_error("open " + tmp);
    for (auto& e : kSkeleton) {
      if (e.dir) {
        if (::mkdirat(d.get(), e.name, e.mode) < 0) return sys_error(std::string("mkdir ") + e.name);
        continue;
      }
      UniqueFd f(::openat(d.get(), e.name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, e.mode));
      if (!f) return sys_error(std::string("create ") + e.name);
    }
    // Published complete, in a slot still free (another monitor's may have
    // taken the one we saw).
    for (int n = 0; n < kSpareSlots; ++n)
      if (::renameat2(nursery.get(), tmp.c_str(), dir.get(), slot_name(n).c_str(), RENAME_NOREPLACE) == 0) return {};
    return fail("no free slot");
  }();
  if (!made) (void)remove_tree(containers + "/" + kSpareNursery + "/" + tmp);
  return made;
}

bool claim_spare(const std::string& containers, const std::string& to) {
  for (int n = 0; n < kSpareSlots; ++n)
    if (::renameat2(AT_FDCWD, (containers + "/" + slot_name(n)).c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0)
      return true;
  return false;
}

Result<> write_container_file(const std::string& path, std::string_view data, mode_t mode) {
  // A spare's file is empty and ours: written as it is (no O_TRUNC, which
  // on a file with blocks would free them, a discard here).
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) {
    if (errno != ENOENT) return sys_error("open " + path);
    return write_new_file(path, data, mode);
  }
  struct stat st;
  if (::fstat(fd.get(), &st) < 0 || !S_ISREG(st.st_mode) || st.st_size != 0)
    return fail("create " + path + ": a file of another kind is in the way");
  TRY_CTX(write_fd(fd.get(), data), "write " + path);
  return {};
}

}  // namespace berth::engine
