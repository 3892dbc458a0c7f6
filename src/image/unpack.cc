// Layer unpack: a decompressing, hashing source feeds libarchive's tar reader;
// each entry is applied beneath dest_dirfd with *at syscalls on directory fds
// resolved by openat2 without following any symlink.
#include "image/unpack.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "image/decompress.h"
#include "util/fd.h"
#include "util/fs.h"
#include "util/text.h"
#include "util/syscalls.h"

namespace berth::image {
namespace {

constexpr unsigned long long kResolve =
    RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;

struct ReadCtx {
  Prefetcher* src;
  std::optional<Error> error;  // the source's failure, when libarchive reports one
};

la_ssize_t read_cb(struct archive* a, void* data, const void** buf) {
  auto* ctx = static_cast<ReadCtx*>(data);
  auto v = ctx->src->next();
  if (!v) {
    ctx->error = std::move(v).error();
    archive_set_error(a, EIO, "%s", ctx->error->str().c_str());
    return ARCHIVE_FATAL;
  }
  *buf = v->data();
  return static_cast<la_ssize_t>(v->size());
}

// ---------------------------------------------------------------------------
// Names.

std::string join(const std::vector<std::string>& comps, size_t n) {
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    if (i) s += '/';
    s += comps[i];
  }
  return s;
}

size_t depth_of(const std::string& p) {
  return p.empty() ? 0 : static_cast<size_t>(std::count(p.begin(), p.end(), '/')) + 1;
}

int openat2_retry(int dirfd, const char* path, int flags) {
  struct open_how how = {};
  how.flags = static_cast<unsigned long long>(flags | O_CLOEXEC);
  how.resolve = kResolve;
  for (;;) {
    int fd = sys::openat2(dirfd, path, &how);
    if (fd >= 0 || (errno != EAGAIN && errno != EINTR)) return fd;
  }
}

// Removes whatever is at parentfd/name, a directory tree included, without
// following symlinks.
int remove_at(int parentfd, const char* name) {
  struct stat st;
  if (::fstatat(parentfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) return errno == ENOENT ? 0 : -1;
  if (!S_ISDIR(st.st_mode)) return ::unlinkat(parentfd, name, 0);
  int dfd = ::openat(parentfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (dfd < 0) return -1;
  DIR* d = ::fdopendir(dfd);
  if (!d) {
    ::close(dfd);
    return -1;
  }
  std::vector<std::string> names;
  while (struct dirent* de = ::readdir(d)) {
    if (std::strcmp(de->d_name, ".") != 0 && std::strcmp(de->d_name, "..") != 0) names.emplace_back(de->d_name);
  }
  int rc = 0;
  for (auto& n : names) {
    if (remove_at(dfd, n.c_str()) < 0) {
      rc = -1;
      break;
    }
  }
  int saved = errno;
  ::closedir(d);
  errno = saved;
  if (rc < 0) return -1;
  return ::unlinkat(parentfd, name, AT_REMOVEDIR);
}

struct Xattr {
  std::string name, value;
};

struct DirMeta {
  mode_t mode;
  uid_t uid;
  gid_t gid;
  struct timespec mtime;
  std::vector<Xattr> xattrs;
  bool root = false;
};

// ---------------------------------------------------------------------------
// The applier: one per unpack.

class Applier {
 public:
  Applier(int dest, const UnpackOptions& o, UnpackResult& r) : dest_(dest), o_(o), r_(r) {}

  Result<> apply(struct archive* a, struct archive_entry* e);
  Result<> finish_dirs();

 private:
  Result<UniqueFd> open_parent(const std::vector<std::string>& comps, const std::string& shown, bool create);
  std::unexpected<Error> entry_err(const std::string& shown, const std::string& what, int err = 0) {
    return std::unexpected(Error{err, o_.what + ": entry " + shown + ": " + what});
  }
  Result<> set_xattrs_fd(int fd, const std::vector<Xattr>& xs, const std::string& shown);
  Result<> write_data(struct archive* a, int fd, int64_t size, const std::string& shown);
  // Something at path is gone or replaced: forget what we knew under it.
  void forget(const std::string& path);

  int dest_;
  const UnpackOptions& o_;
  UnpackResult& r_;
  std::set<std::string> files_;          // regular files this layer wrote
  std::map<std::string, DirMeta> dirs_;  // directories whose metadata waits for the end
};

void Applier::forget(const std::string& path) {
  files_.erase(path);
  dirs_.erase(path);
  if (path.empty()) return;
  std::string lo = path + "/", hi = path + "0";  // '0' follows '/'
  files_.erase(files_.lower_bound(lo), files_.lower_bound(hi));
  dirs_.erase(dirs_.lower_bound(lo), dirs_.lower_bound(hi));
}

// An fd to the directory holding comps' last component (dest itself for a
// top-level name). With create, missing directories are made one at a time.
Result<UniqueFd> Applier::open_parent(const std::vector<std::string>& comps, const std::string& shown,
                                      bool create) {
  size_t n = comps.size() - 1;
  if (n == 0) {
    int fd = ::fcntl(dest_, F_DUPFD_CLOEXEC, 3);
    if (fd < 0) return sys_error(o_.what + ": dup destination fd");
    return UniqueFd(fd);
  }
  auto classify = [&](int err, const std::string& at) -> std::unexpected<Error> {
    if (err == ELOOP) return fail(o_.what + ": entry " + shown + " goes through a symlink");
    if (err == ENOTDIR) return entry_err(shown, printable(at) + " is not a directory");
    return entry_err(shown, "open parent " + printable(at), err);
  };
  std::string parent = join(comps, n);
  int fd = openat2_retry(dest_, parent.c_str(), O_PATH | O_DIRECTORY);
  if (fd >= 0) return UniqueFd(fd);
  if (errno != ENOENT || !create) return classify(errno, parent);
  // Walk from dest, creating what is missing.
  UniqueFd cur(::fcntl(dest_, F_DUPFD_CLOEXEC, 3));
  if (!cur) return sys_error(o_.what + ": dup destination fd");
  for (size_t i = 0; i < n; ++i) {
    const char* c = comps[i].c_str();
    int next = openat2_retry(cur.get(), c, O_PATH | O_DIRECTORY);
    if (next < 0 && errno == ENOENT) {
      if (::mkdirat(cur.get(), c, 0755) < 0 && errno != EEXIST)
        return entry_err(shown, "mkdir " + printable(join(comps, i + 1)), errno);
      next = openat2_retry(cur.get(), c, O_PATH | O_DIRECTORY);
      // Just made by us and resolved without symlinks: the umask does not apply.
      if (next >= 0 && ::fchmodat(cur.get(), c, 0755, 0) < 0)
        return entry_err(shown, "chmod " + printable(join(comps, i + 1)), errno);
    }
    if (next < 0) return classify(errno, join(comps, i + 1));
    cur.reset(next);
  }
  return cur;
}

Result<> Applier::set_xattrs_fd(int fd, const std::vector<Xattr>& xs, const std::string& shown) {
  for (auto& x : xs) {
    if (::fsetxattr(fd, x.name.c_str(), x.value.data(), x.value.size(), 0) == 0) continue;
    if ((errno == EOPNOTSUPP || errno == ENOTSUP) && x.name.rfind("security.", 0) != 0) {
      ++r_.xattrs_skipped;
      continue;
    }
    return entry_err(shown, "set xattr " + printable(x.name), errno);
  }
  return {};
}

Result<> Applier::write_data(struct archive* a, int fd, int64_t size, const std::string& shown) {
  int64_t end = 0;
  for (;;) {
    const void* buf;
    size_t len;
    la_int64_t off;
    int r = archive_read_data_block(a, &buf, &len, &off);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) {
      const char* m = archive_error_string(a);
      return fail(o_.what + ": entry " + shown + ": read data: " + printable(m ? m : "unknown error"));
    }
    const char* p = static_cast<const char*>(buf);
    while (len > 0) {
      ssize_t n = ::pwrite(fd, p, len, off);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return entry_err(shown, "write", errno);
      p += n;
      len -= static_cast<size_t>(n);
      off += n;
    }
    end = std::max<int64_t>(end, off);
  }
  // Sparse files: the trailing hole.
  if (size > end && ::ftruncate(fd, size) < 0) return entry_err(shown, "truncate", errno);
  return {};
}

Result<> Applier::apply(struct archive* a, struct archive_entry* e) {
  const char* raw = archive_entry_pathname(e);
  if (!raw) raw = archive_entry_pathname_utf8(e);
  if (!raw) return fail(o_.what + ": entry without a name");
  const std::string shown = printable(raw);
  auto comps_opt = entry_components(raw);
  if (!comps_opt) return fail(o_.what + ": entry " + shown + ": absolute name or \"..\" component refused");
  auto& comps = *comps_opt;

  const char* hardlink = archive_entry_hardlink(e);
  const mode_t type = archive_entry_filetype(e);
  const mode_t perm = archive_entry_mode(e) & 07777;
  const int64_t uid64 = archive_entry_uid(e), gid64 = archive_entry_gid(e);
  if (uid64 < 0 || uid64 >= 0xffffffffLL || gid64 < 0 || gid64 >= 0xffffffffLL)
    return fail(o_.what + ": entry " + shown + ": owner out of range");
  const uid_t uid = static_cast<uid_t>(uid64);
  const gid_t gid = static_cast<gid_t>(gid64);
  struct timespec ts[2];
  ts[1].tv_sec = archive_entry_mtime(e);
  ts[1].tv_nsec = archive_entry_mtime_is_set(e) ? archive_entry_mtime_nsec(e) : 0;
  ts[0] = ts[1];

  std::vector<Xattr> xattrs;
  std::set<std::string> dropped;
  if (archive_entry_xattr_reset(e) > 0) {
    const char* xn;
    const void* xv;
    size_t xs;
    while (archive_entry_xattr_next(e, &xn, &xv, &xs) == ARCHIVE_OK) {
      std::string name(xn);
      // The overlay's own xattrs come from whiteout entries only: a layer that
      // sets them directly could redirect lookups or fake opaque directories.
      if (name.rfind("trusted.overlay.", 0) == 0 || name.rfind("user.overlay.", 0) == 0) {
        if (dropped.insert(name).second) ++r_.xattrs_skipped;
        continue;
      }
      // pax archives from libarchive carry each xattr twice (SCHILY and
      // LIBARCHIVE records): the last one wins.
      std::string value(static_cast<const char*>(xv), xs);
      auto same = std::find_if(xattrs.begin(), xattrs.end(), [&](const Xattr& x) { return x.name == name; });
      if (same != xattrs.end())
        same->value = std::move(value);
      else
        xattrs.push_back({std::move(name), std::move(value)});
    }
  }

  // The root directory: mode and owner only.
  if (comps.empty()) {
    if (hardlink || type != AE_IFDIR) return fail(o_.what + ": entry " + shown + ": the root is not a directory");
    dirs_[""] = DirMeta{perm, uid, gid, ts[1], {}, true};
    return {};
  }

  const std::string path = join(comps, comps.size());
  const std::string& base = comps.back();

  // Whiteouts.
  if (base.rfind(".wh.", 0) == 0) {
    if (base == ".wh..wh..opq") {
      UniqueFd ppath = TRY(open_parent(comps, shown, true));
      // fsetxattr needs a real fd: reopen the directory already resolved.
      UniqueFd pfd(::openat(ppath.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      if (!pfd) return entry_err(shown, "open parent", errno);
      if (::fsetxattr(pfd.get(), "trusted.overlay.opaque", "y", 1, 0) < 0)
        return entry_err(shown, "set trusted.overlay.opaque", errno);
      return {};
    }
    if (base.rfind(".wh..wh.", 0) == 0) return {};  // aufs metadata: nothing for overlayfs
    std::string name = base.substr(4);
    if (name.empty() || name == "." || name == "..") return fail(o_.what + ": entry " + shown + ": bad whiteout");
    UniqueFd pfd = TRY(open_parent(comps, shown, true));
    comps.back() = name;
    std::string target = join(comps, comps.size());
    if (remove_at(pfd.get(), name.c_str()) < 0) return entry_err(shown, "remove " + printable(name), errno);
    forget(target);
    if (::mknodat(pfd.get(), name.c_str(), S_IFCHR | 0, makedev(0, 0)) < 0)
      return entry_err(shown, "mknod whiteout", errno);
    return {};
  }

  UniqueFd pfd = TRY(open_parent(comps, shown, true));
  const int p = pfd.get();
  const char* n = base.c_str();

  if (hardlink) {
    const std::string tshown = printable(hardlink);
    auto outside = [&] {
      return fail(o_.what + ": hardlink " + shown + " -> " + tshown + " points outside the layer");
    };
    auto tcomps = entry_components(hardlink);
    if (!tcomps || tcomps->empty()) return outside();
    std::string tpath = join(*tcomps, tcomps->size());
    if (!files_.count(tpath)) return outside();
    if (tpath == path) return {};  // a link to itself: already there
    std::string tparent = join(*tcomps, tcomps->size() - 1);
    int tfd = tparent.empty() ? ::fcntl(dest_, F_DUPFD_CLOEXEC, 3)
                              : openat2_retry(dest_, tparent.c_str(), O_PATH | O_DIRECTORY);
    if (tfd < 0) return outside();
    UniqueFd tp(tfd);
    struct stat st;
    if (::fstatat(tp.get(), tcomps->back().c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
      return outside();
    if (remove_at(p, n) < 0) return entry_err(shown, "remove existing", errno);
    forget(path);
    if (::linkat(tp.get(), tcomps->back().c_str(), p, n, 0) < 0) return entry_err(shown, "link", errno);
    files_.insert(path);
    return {};
  }

  switch (type) {
    case AE_IFDIR: {
      struct stat st;
      bool exists = ::fstatat(p, n, &st, AT_SYMLINK_NOFOLLOW) == 0;
      if (exists && !S_ISDIR(st.st_mode)) {
        if (::unlinkat(p, n, 0) < 0) return entry_err(shown, "remove existing", errno);
        forget(path);
        exists = false;
      }
      if (!exists && ::mkdirat(p, n, 0700) < 0) return entry_err(shown, "mkdir", errno);
      dirs_[path] = DirMeta{perm, uid, gid, ts[1], std::move(xattrs)};
      return {};
    }
    case AE_IFREG: {
      if (remove_at(p, n) < 0) return entry_err(shown, "remove existing", errno);
      forget(path);
      int fd = ::openat(p, n, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
      if (fd < 0) return entry_err(shown, "create", errno);
      UniqueFd f(fd);
      files_.insert(path);
      TRY(write_data(a, f.get(), archive_entry_size(e), shown));
      // chown clears setuid and file capabilities: owner, then mode, then xattrs.
      if (o_.set_owners && ::fchown(f.get(), uid, gid) < 0) return entry_err(shown, "chown", errno);
      if (::fchmod(f.get(), perm) < 0) return entry_err(shown, "chmod", errno);
      TRY(set_xattrs_fd(f.get(), xattrs, shown));
      if (::futimens(f.get(), ts) < 0) return entry_err(shown, "set times", errno);
      return {};
    }
    case AE_IFLNK: {
      const char* target = archive_entry_symlink(e);
      if (!target) target = archive_entry_symlink_utf8(e);
      if (!target) return fail(o_.what + ": entry " + shown + ": symlink without a target");
      if (remove_at(p, n) < 0) return entry_err(shown, "remove existing", errno);
      forget(path);
      if (::symlinkat(target, p, n) < 0) return entry_err(shown, "symlink", errno);
      if (o_.set_owners && ::fchownat(p, n, uid, gid, AT_SYMLINK_NOFOLLOW) < 0)
        return entry_err(shown, "chown", errno);
      if (::utimensat(p, n, ts, AT_SYMLINK_NOFOLLOW) < 0) return entry_err(shown, "set times", errno);
      return {};
    }
    case AE_IFCHR:
    case AE_IFBLK:
    case AE_IFIFO: {
      if (remove_at(p, n) < 0) return entry_err(shown, "remove existing", errno);
      forget(path);
      dev_t rdev = type == AE_IFIFO ? 0 : makedev(archive_entry_rdevmajor(e), archive_entry_rdevminor(e));
      if (::mknodat(p, n, type | (perm & 0777), rdev) < 0) return entry_err(shown, "mknod", errno);
      // Just created by us, not a symlink: fchmodat may follow nothing.
      if (o_.set_owners && ::fchownat(p, n, uid, gid, AT_SYMLINK_NOFOLLOW) < 0)
        return entry_err(shown, "chown", errno);
      if (::fchmodat(p, n, perm, 0) < 0) return entry_err(shown, "chmod", errno);
      if (::utimensat(p, n, ts, AT_SYMLINK_NOFOLLOW) < 0) return entry_err(shown, "set times", errno);
      return {};
    }
    default:
      return fail(o_.what + ": entry " + shown + ": unsupported file type 0" + std::to_string(type >> 12));
  }
}

Result<> Applier::finish_dirs() {
  std::vector<std::pair<std::string, DirMeta*>> order;
  for (auto& [path, meta] : dirs_) order.emplace_back(path, &meta);
  std::stable_sort(order.begin(), order.end(),
                   [](auto& x, auto& y) { return depth_of(x.first) > depth_of(y.first); });
  for (auto& [path, m] : order) {
    const std::string shown = path.empty() ? "." : printable(path);
    int fd = path.empty() ? ::openat(dest_, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
                          : openat2_retry(dest_, path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    if (fd < 0) return entry_err(shown, "open directory", errno);
    UniqueFd d(fd);
    if (o_.set_owners && ::fchown(d.get(), m->uid, m->gid) < 0) return entry_err(shown, "chown", errno);
    if (::fchmod(d.get(), m->mode) < 0) return entry_err(shown, "chmod", errno);
    if (m->root) continue;
    TRY(set_xattrs_fd(d.get(), m->xattrs, shown));
    struct timespec ts[2] = {m->mtime, m->mtime};
    if (::futimens(d.get(), ts) < 0) return entry_err(shown, "set times", errno);
  }
  return {};
}

struct ArchiveFree {
  void operator()(struct archive* a) const { archive_read_free(a); }
};

}  // namespace

Result<UnpackResult> unpack_layer(int src_fd, int dest_dirfd, const UnpackOptions& o) {
  UnpackResult res;
  Decompressor src(src_fd, DecompressOptions{o.max_ratio, o.ratio_floor, o.what});
  TRY(src.init());
  Prefetcher ahead(src);
  ReadCtx ctx{&ahead, std::nullopt};

  std::unique_ptr<struct archive, ArchiveFree> a(archive_read_new());
  if (!a) return fail(o.what + ": cannot allocate a tar reader");
  archive_read_support_format_tar(a.get());
  auto archive_fail = [&](const char* doing) -> std::unexpected<Error> {
    if (ctx.error) return std::unexpected(*ctx.error);
    const char* m = archive_error_string(a.get());
    return fail(o.what + ": " + doing + ": " + printable(m ? m : "unknown error"));
  };
  if (archive_read_open(a.get(), &ctx, nullptr, read_cb, nullptr) != ARCHIVE_OK)
    return archive_fail("read tar");

  Applier app(dest_dirfd, o, res);
  for (;;) {
    struct archive_entry* e = nullptr;
    int r = archive_read_next_header(a.get(), &e);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) return archive_fail("read tar");
    ++res.entries;
    auto applied = app.apply(a.get(), e);
    if (!applied) {
      // A source failure (bomb, corrupt stream) while reading data: report that.
      if (ctx.error) return std::unexpected(*ctx.error);
      return std::unexpected(std::move(applied).error());
    }
  }
  // The rest of the stream (tar padding after the end-of-archive blocks), so
  // the hash covers all of it.
  for (;;) {
    auto v = TRY(ahead.next());
    if (v.empty()) break;
  }
  ahead.stop();
  TRY(app.finish_dirs());

  res.diff_id = src.finish();
  res.compressed = src.compressed();
  res.uncompressed = src.uncompressed();
  if (o.diff_id && !(*o.diff_id == res.diff_id))
    return fail(o.what + ": diff_id mismatch: expected " + o.diff_id->str() + ", got " + res.diff_id.str());
  return res;
}

}  // namespace berth::image
