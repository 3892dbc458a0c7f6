#include "engine/spare.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <dirent.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <ctime>

#include "oci/spec.h"
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

// One of them, with its mode exactly (not the caller's umask's: a CLI run
// under umask 077 gave the container a root directory of mode 0700, and
// /etc/hosts of 0600).
Result<> make_entry(int dir, const Entry& e) {
  if (e.dir) {
    if (::mkdirat(dir, e.name, e.mode) < 0 || ::fchmodat(dir, e.name, e.mode, 0) < 0)
      return sys_error(std::string("mkdir ") + e.name);
    return {};
  }
  UniqueFd f(::openat(dir, e.name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, e.mode));
  if (!f || ::fchmod(f.get(), e.mode) < 0) return sys_error(std::string("create ") + e.name);
  return {};
}

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

Result<> make_spare(const std::string& containers, bool if_none) {
  UniqueFd dir(::open(containers.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir) return sys_error("open " + containers);
  spread_subdirectories(dir.get());
  int free = 0;
  for (int n = 0; n < kSpareSlots; ++n)
    if (::faccessat(dir.get(), slot_name(n).c_str(), F_OK, AT_SYMLINK_NOFOLLOW) != 0 && errno == ENOENT) ++free;
  if (free == 0 || (if_none && free < kSpareSlots)) return {};
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
    for (auto& e : kSkeleton) TRY(make_entry(d.get(), e));
    // Published complete, in a slot still free (another monitor's may have
    // taken the one we saw).
    for (int n = 0; n < kSpareSlots; ++n)
      if (::renameat2(nursery.get(), tmp.c_str(), dir.get(), slot_name(n).c_str(), RENAME_NOREPLACE) == 0) return {};
    return fail("no free slot");
  }();
  if (!made) (void)remove_tree(containers + "/" + kSpareNursery + "/" + tmp);
  return made;
}

namespace {

const Entry* skeleton_entry(std::string_view name) {
  for (auto& e : kSkeleton)
    if (name == e.name) return &e;
  return nullptr;
}

// The names in directory `fd` but . and .. (at most `max`+1 of them).
std::vector<std::string> names_in(int fd, size_t max) {
  std::vector<std::string> out;
  DIR* d = ::fdopendir(::dup(fd));
  if (!d) return {"?"};
  while (auto* e = ::readdir(d)) {
    std::string_view n = e->d_name;
    if (n == "." || n == "..") continue;
    out.emplace_back(n);
    if (out.size() > max) break;
  }
  ::closedir(d);
  return out;
}

// An inode kept from a container's directory as create made it: its kind,
// mode and owner, one link, no extended attribute.
bool as_made(int fd, const Entry& e) {
  struct stat st;
  if (::fstat(fd, &st) != 0 || st.st_uid != 0 || st.st_gid != 0 || (st.st_mode & 07777) != e.mode) return false;
  if (e.dir ? !S_ISDIR(st.st_mode) : (!S_ISREG(st.st_mode) || st.st_nlink != 1)) return false;
  char list[64];
  return ::flistxattr(fd, list, sizeof list) == 0;
}

// The files a container saw (bind-mounted into it) are kept only if no
// one holds one open for writing: the kernel grants a write lease only then
// (an unlinked one and a new inode otherwise).
bool open_for_writing(int fd) {
  if (::fcntl(fd, F_SETLEASE, F_WRLCK) != 0) return true;
  (void)::fcntl(fd, F_SETLEASE, F_UNLCK);
  return false;
}

}  // namespace

bool recycle_as_spare(const std::string& containers, const std::string& trash, std::optional<bool> own_pid_ns) {
  UniqueFd dir(::open(containers.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  UniqueFd d(::open(trash.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!dir || !d) return false;
  struct stat st;
  if (::fstat(d.get(), &st) != 0 || st.st_uid != 0 || (st.st_mode & 07777) != 0700) return false;
  // Its rootfs's overlay first (the directory under it is a spare's).
  if (is_mount_root(d.get(), "rootfs") &&
      ::umount2(("/proc/self/fd/" + std::to_string(d.get()) + "/rootfs").c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) != 0)
    return false;
  auto names = names_in(d.get(), std::size(kSkeleton));
  if (names.size() != std::size(kSkeleton)) return false;
  // Only a container whose processes all ended with it: one with a pid
  // namespace of its own (its end killed the rest; the caller removed its
  // cgroup first). Its monitor knows (parsing the spec again here took
  // ~0.1 ms of every `run --rm`).
  if (!own_pid_ns) {
    UniqueFd cfg(::openat(d.get(), "config.json", O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!cfg) return false;
    auto text = read_fd(cfg.get());
    auto spec = text ? oci::parse_spec(*text) : Result<oci::Spec>(std::unexpected(std::move(text).error()));
    own_pid_ns = spec && spec->linux &&
                 std::any_of(spec->linux->namespaces.begin(), spec->linux->namespaces.end(),
                             [](const oci::Namespace& ns) { return ns.type == "pid" && ns.path.empty(); });
  }
  if (!*own_pid_ns) return false;
  for (auto& n : names) {
    const Entry* e = skeleton_entry(n);
    if (!e) return false;
    std::string_view name = e->name;
    if (name == "upper") {
      // A new one: the old overlay lives on while a descriptor into it is
      // open anywhere (an unmount only detaches it), and what it writes
      // goes to the old upper/, removed here (only if empty), where nothing
      // can be made any more.
      if (::unlinkat(d.get(), e->name, AT_REMOVEDIR) != 0 || !make_entry(d.get(), *e)) return false;
      continue;
    }
    // work/: the overlay's own work/work goes (the old overlay's copy-ups
    // and whiteouts are made there, so that it can make none now); the
    // mount makes it anew.
    if (name == "work" && !remove_trash(trash + "/work/work")) return false;
    UniqueFd f(::openat(d.get(), e->name, (e->dir ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_NOFOLLOW | O_CLOEXEC));
    if (!f || !as_made(f.get(), *e)) return false;
    if (e->dir) {
      if (is_mount_root(f.get(), "") || !names_in(f.get(), 0).empty()) return false;
    } else if (name != "config.json" && open_for_writing(f.get())) {
      f.reset();
      if (::unlinkat(d.get(), e->name, 0) != 0 || !make_entry(d.get(), *e)) return false;
    }
  }
  for (int n = 0; n < kSpareSlots; ++n)
    if (::renameat2(AT_FDCWD, trash.c_str(), dir.get(), slot_name(n).c_str(), RENAME_NOREPLACE) == 0) return true;
  return false;
}

bool claim_spare(const std::string& containers, const std::string& to) {
  for (int n = 0; n < kSpareSlots; ++n)
    if (::renameat2(AT_FDCWD, (containers + "/" + slot_name(n)).c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0)
      return true;
  return false;
}

Result<> write_container_file(const std::string& path, std::string_view data, mode_t mode) {
  // A spare's file is ours: written over (no O_TRUNC, which on a file with
  // blocks would free them, a discard here, and the write take new ones),
  // then cut to the new length.
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) {
    if (errno != ENOENT) return sys_error("open " + path);
    return write_new_file(path, data, mode);  // (its mode exactly, whatever the caller's umask)
  }
  struct stat st;
  if (::fstat(fd.get(), &st) < 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1)
    return fail("create " + path + ": a file of another kind is in the way");
  TRY_CTX(write_fd(fd.get(), data), "write " + path);
  if (st.st_size > static_cast<off_t>(data.size()) && ::ftruncate(fd.get(), static_cast<off_t>(data.size())) != 0)
    return sys_error("truncate " + path);
  return {};
}

}  // namespace berth::engine
