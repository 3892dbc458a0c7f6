// LXC's `clone` for berth: a new container with a stopped one's config and a
// copy of its writable layer (engine.h).
#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstring>
#include <map>

#include "engine/engine.h"
#include "image/store.h"
#include "util/fs.h"

namespace berth::engine {

namespace {

// Extended attributes of `fd` (overlayfs's trusted.overlay.* included: an
// opaque directory must stay opaque) copied onto `to`.
Result<> copy_xattrs(int from, int to, const std::string& what) {
  char names[65536];
  ssize_t n = ::flistxattr(from, names, sizeof names);
  if (n < 0) return errno == ENOTSUP ? Result<>{} : sys_error("list xattrs of " + what);
  std::string value(65536, '\0');
  for (ssize_t off = 0; off < n; off += static_cast<ssize_t>(std::strlen(names + off)) + 1) {
    const char* name = names + off;
    ssize_t len = ::fgetxattr(from, name, value.data(), value.size());
    if (len < 0) return sys_error(std::string("read xattr ") + name + " of " + what);
    if (::fsetxattr(to, name, value.data(), static_cast<size_t>(len), 0) < 0)
      return sys_error(std::string("write xattr ") + name + " of " + what);
  }
  return {};
}

// The file's data: a reflink where the filesystem shares extents (btrfs,
// xfs), copy_file_range otherwise (which may still share them).
Result<> copy_data(int from, int to, off_t size, const std::string& what) {
  if (::ioctl(to, FICLONE, from) == 0) return {};
  off_t left = size;
  while (left > 0) {
    ssize_t n = ::copy_file_range(from, nullptr, to, nullptr, static_cast<size_t>(left), 0);
    if (n < 0) return sys_error("copy " + what);
    if (n == 0) break;
    left -= n;
  }
  return {};
}

// Copies the tree under the directory `from` into the (empty) directory `to`
// exactly: owners, modes, times, xattrs, hard links, device nodes (an
// overlay upper dir's whiteouts are 0:0 character devices). Never follows a
// symlink: every entry is reached by *at() calls under its parent's fd.
class TreeCopy {
 public:
  // `to_root`: the copy's top directory, for hard links (see links_).
  explicit TreeCopy(int to_root) : to_root_(to_root) {}

  Result<> dir(int from, int to, const std::string& path, const std::string& rel = "") {
    UniqueFd list(::dup(from));
    DIR* d = ::fdopendir(list.release());
    if (!d) return sys_error("read " + path);
    struct Close {
      DIR* d;
      ~Close() { ::closedir(d); }
    } close_d{d};
    while (struct dirent* e = ::readdir(d)) {
      std::string name = e->d_name;
      if (name == "." || name == "..") continue;
      TRY(entry(from, to, name, path + "/" + name, rel.empty() ? name : rel + "/" + name));
    }
    return {};
  }

 private:
  Result<> entry(int from, int to, const std::string& name, const std::string& path, const std::string& rel) {
    struct stat st;
    if (::fstatat(from, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) return sys_error("stat " + path);
    auto key = std::make_pair(st.st_dev, st.st_ino);
    if (!S_ISDIR(st.st_mode) && st.st_nlink > 1) {
      if (auto it = links_.find(key); it != links_.end()) {
        if (::linkat(to_root_, it->second.c_str(), to, name.c_str(), 0) < 0) return sys_error("link " + path);
        return {};
      }
    }
    if (S_ISDIR(st.st_mode)) {
      if (::mkdirat(to, name.c_str(), 0700) < 0) return sys_error("mkdir " + path);
      UniqueFd src(::openat(from, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      UniqueFd dst(::openat(to, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!src || !dst) return sys_error("open " + path);
      TRY(dir(src.get(), dst.get(), path, rel));
      TRY(copy_xattrs(src.get(), dst.get(), path));
      TRY(finish(dst.get(), st, path));
      return {};
    }
    if (S_ISREG(st.st_mode)) {
      UniqueFd src(::openat(from, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
      UniqueFd dst(::openat(to, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
      if (!src || !dst) return sys_error("open " + path);
      TRY(copy_data(src.get(), dst.get(), st.st_size, path));
      TRY(copy_xattrs(src.get(), dst.get(), path));
      TRY(finish(dst.get(), st, path));
    } else if (S_ISLNK(st.st_mode)) {
      std::string target(static_cast<size_t>(st.st_size) + 1, '\0');
      ssize_t n = ::readlinkat(from, name.c_str(), target.data(), target.size());
      if (n < 0) return sys_error("readlink " + path);
      target.resize(static_cast<size_t>(n));
      if (::symlinkat(target.c_str(), to, name.c_str()) < 0) return sys_error("symlink " + path);
      if (::fchownat(to, name.c_str(), st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW) < 0) return sys_error("chown " + path);
      struct timespec t[2] = {st.st_atim, st.st_mtim};
      ::utimensat(to, name.c_str(), t, AT_SYMLINK_NOFOLLOW);
    } else {
      // Devices (whiteouts among them), fifos, sockets.
      if (::mknodat(to, name.c_str(), st.st_mode, st.st_rdev) < 0) return sys_error("mknod " + path);
      if (::fchownat(to, name.c_str(), st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW) < 0) return sys_error("chown " + path);
      struct timespec t[2] = {st.st_atim, st.st_mtim};
      ::utimensat(to, name.c_str(), t, AT_SYMLINK_NOFOLLOW);
    }
    if (st.st_nlink > 1) links_[key] = rel;
    return {};
  }

  // Owner, then mode (chown clears set-id bits), then times.
  Result<> finish(int fd, const struct stat& st, const std::string& path) {
    if (::fchown(fd, st.st_uid, st.st_gid) < 0) return sys_error("chown " + path);
    if (::fchmod(fd, st.st_mode & 07777) < 0) return sys_error("chmod " + path);
    struct timespec t[2] = {st.st_atim, st.st_mtim};
    if (::futimens(fd, t) < 0) return sys_error("set times of " + path);
    return {};
  }

  // First copy of each multiply-linked inode, by its path under to_root_:
  // every component is a directory this copy made, so the path leads nowhere else.
  int to_root_;
  std::map<std::pair<dev_t, ino_t>, std::string> links_;
};

}  // namespace

Result<Container> Engine::clone(const std::string& key, const std::string& new_name) {
  Container src = TRY(find(key));
  if (src.state == "running" || src.state == "paused" || src.state == "restarting")
    return fail("cannot clone container " + key + ": it is " + src.state + ": stop it first");
  Container c = TRY(create(new_name, src.config, nullptr));
  // The copy goes into the new upper dir with its overlay unmounted (changing
  // a mounted overlay's layers underneath it is undefined).
  auto copied = [&]() -> Result<> {
    std::string rootfs = c.dir + "/rootfs";
    if (::umount2(rootfs.c_str(), MNT_DETACH) < 0) return sys_error("umount " + rootfs);
    UniqueFd from(::open((src.dir + "/upper").c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    UniqueFd to(::open((c.dir + "/upper").c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!from || !to) return sys_error("open the upper dirs of " + src.name + " and " + c.name);
    TreeCopy copy(to.get());
    TRY(copy.dir(from.get(), to.get(), src.dir + "/upper"));
    image::ImageRecord img = TRY(store_->resolve(c.image_id));
    TRY(store_->mount_rootfs(img, c.dir));
    return {};
  }();
  if (!copied) {
    (void)remove(c.id, true, false);
    return std::unexpected(std::move(copied).error().context("clone " + src.name));
  }
  (void)record_event(c, "clone", {{"from", src.id}});
  return c;
}

}  // namespace berth::engine
