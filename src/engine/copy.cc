// cp, diff and export (engine/copy.h): a tar writer that walks a tree by fds
// (nothing below the source is reached through a symlink), an extractor that
// trusts no entry, and Docker's rules for what is copied under which name.
// A copy between the host and a container is the writer on a thread feeding
// the extractor through a socketpair, as Docker's client and daemon do.
#include "engine/copy.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <thread>

#include "util/fs.h"
#include "util/syscalls.h"

namespace berth::engine {
namespace {

// A name from a tar stream or a container, quoted and escaped: one line.
std::string shown_name(std::string_view s) {
  return nlohmann::json(std::string(s)).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// The overlay's own attributes: never copied (a copied one could redirect lookups).
bool overlay_xattr(std::string_view name) {
  return name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.");
}

bool whiteout(const struct stat& st) { return S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0); }

uint64_t mount_id(int fd) {
  struct statx stx {};
  if (::statx(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, STATX_MNT_ID, &stx) != 0) return 0;
  return stx.stx_mnt_id;
}

// The names in a directory (any fd on it, O_PATH too), sorted.
Result<std::vector<std::string>> names_in(int dirfd, const std::string& what) {
  int fd = ::openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  DIR* d = fd < 0 ? nullptr : ::fdopendir(fd);
  if (!d) {
    if (fd >= 0) ::close(fd);
    return sys_error("open " + what);
  }
  std::vector<std::string> names;
  while (struct dirent* de = ::readdir(d))
    if (std::strcmp(de->d_name, ".") != 0 && std::strcmp(de->d_name, "..") != 0) names.emplace_back(de->d_name);
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

std::string join_comps(const std::vector<std::string>& comps, size_t n) {
  std::string s;
  for (size_t i = 0; i < n; ++i) s += (i ? "/" : "") + comps[i];
  return s;
}

// ------------------------------------------------------------ tar writer --

class TarWriter {
 public:
  // `one_fs_root`, if >= 0: directories on another mount than it are written
  // without their contents (what a container sees mounted there is not its rootfs).
  TarWriter(int out, int one_fs_root)
      : out_(out), a_(archive_write_new()), links_(archive_entry_linkresolver_new()), buf_(1 << 17) {
    struct stat st;
    sock_ = ::fstat(out, &st) == 0 && S_ISSOCK(st.st_mode);
    if (one_fs_root >= 0) root_mnt_ = mount_id(one_fs_root);
    archive_write_set_format_pax_restricted(a_);
    archive_write_set_bytes_per_block(a_, 10240);
    archive_entry_linkresolver_set_strategy(links_, ARCHIVE_FORMAT_TAR_PAX_RESTRICTED);
    opened_ = archive_write_open2(a_, this, nullptr, &TarWriter::on_write, nullptr, nullptr) == ARCHIVE_OK;
  }
  ~TarWriter() {
    archive_entry_linkresolver_free(links_);
    archive_write_free(a_);
  }
  TarWriter(const TarWriter&) = delete;
  TarWriter& operator=(const TarWriter&) = delete;

  // `obj` (an O_PATH fd, possibly on a symlink) as `name`, and all beneath it.
  Result<> add(int obj, const std::string& name);
  // A container's volume or bind at the entry `name`: the root to write there
  // instead of the mount point beneath it (-1: none).
  std::function<int(const std::string& name)> mount_root;
  // Everything beneath the directory `dir`, each name prefixed with `prefix`.
  Result<> add_children(int dir, const std::string& prefix);
  Result<> finish() { return check(opened_ ? archive_write_close(a_) : ARCHIVE_FATAL, "end of archive"); }

 private:
  static la_ssize_t on_write(archive*, void* self, const void* buf, size_t len);
  Result<> check(int rc, const std::string& name) {
    if (rc >= ARCHIVE_WARN) return {};
    if (err_.err || !err_.msg.empty()) return std::unexpected(err_);
    const char* m = archive_error_string(a_);
    return fail("tar " + shown_name(name) + ": " + (m ? m : "write failed"));
  }
  Result<> data(archive_entry* e, int fd, const std::string& name);
  Result<> add_one(int obj, const std::string& name);

  int out_;
  bool sock_ = false, opened_ = false;
  uint64_t root_mnt_ = 0;
  archive* a_;
  archive_entry_linkresolver* links_;
  std::vector<char> buf_;
  Error err_;  // the output's failure
};

la_ssize_t TarWriter::on_write(archive*, void* self, const void* buf, size_t len) {
  auto* w = static_cast<TarWriter*>(self);
  const char* p = static_cast<const char*>(buf);
  for (size_t left = len; left > 0;) {
    // A socket (the other end extracts): no SIGPIPE when it gave up.
    ssize_t n = w->sock_ ? ::send(w->out_, p, left, MSG_NOSIGNAL) : ::write(w->out_, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      w->err_ = Error{n < 0 ? errno : EIO, "write tar stream"};
      return -1;
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  return static_cast<la_ssize_t>(len);
}

void add_xattrs(archive_entry* e, int fd) {
  ssize_t len = ::flistxattr(fd, nullptr, 0);
  std::string names(len > 0 ? static_cast<size_t>(len) : 0, '\0');
  len = len > 0 ? ::flistxattr(fd, names.data(), names.size()) : 0;
  for (size_t i = 0; len > 0 && i < static_cast<size_t>(len); i += std::strlen(names.c_str() + i) + 1) {
    const char* n = names.c_str() + i;
    if (overlay_xattr(n)) continue;
    ssize_t vlen = ::fgetxattr(fd, n, nullptr, 0);
    std::string v(vlen > 0 ? static_cast<size_t>(vlen) : 0, '\0');
    if (vlen >= 0 && (vlen = ::fgetxattr(fd, n, v.data(), v.size())) >= 0)
      archive_entry_xattr_add_entry(e, n, v.data(), static_cast<size_t>(vlen));
  }
}

Result<> TarWriter::data(archive_entry* e, int fd, const std::string& name) {
  for (int64_t left = archive_entry_size(e); left > 0;) {
    ssize_t n = ::read(fd, buf_.data(), static_cast<size_t>(std::min<int64_t>(left, buf_.size())));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return sys_error("read " + shown_name(name));
    if (n == 0) break;  // shrunk while read: libarchive pads the entry with zeros
    if (archive_write_data(a_, buf_.data(), static_cast<size_t>(n)) != n) return check(ARCHIVE_FATAL, name);
    left -= n;
  }
  return {};
}

Result<> TarWriter::add(int obj, const std::string& name) {
  int mounted = mount_root ? mount_root(name) : -1;
  if (mounted < 0) return add_one(obj, name);
  // The mount's own tree, kept on its own filesystem.
  uint64_t saved = root_mnt_;
  if (root_mnt_) root_mnt_ = mount_id(mounted);
  auto r = add_one(mounted, name);
  root_mnt_ = saved;
  return r;
}

Result<> TarWriter::add_one(int obj, const std::string& name) {
  if (!opened_) return check(ARCHIVE_FATAL, name);
  struct stat st;
  if (::fstat(obj, &st) < 0) return sys_error("stat " + shown_name(name));
  std::unique_ptr<archive_entry, void (*)(archive_entry*)> e(archive_entry_new(), archive_entry_free);
  archive_entry_copy_stat(e.get(), &st);
  archive_entry_set_pathname(e.get(), name.c_str());
  UniqueFd content;  // a readable fd: the file's data, the directory's xattrs
  if (S_ISREG(st.st_mode)) {
    // The same inode as `obj`, whatever has been renamed meanwhile.
    content.reset(::open(fd_path(obj).c_str(), O_RDONLY | O_NOCTTY | O_CLOEXEC));
  } else if (S_ISDIR(st.st_mode)) {
    content.reset(::openat(obj, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  } else if (S_ISLNK(st.st_mode)) {
    char target[PATH_MAX];
    ssize_t n = ::readlinkat(obj, "", target, sizeof target);
    if (n < 0) return sys_error("readlink " + shown_name(name));
    archive_entry_set_symlink(e.get(), std::string(target, static_cast<size_t>(n)).c_str());
  }
  if ((S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)) && !content) return sys_error("open " + shown_name(name));
  if (!S_ISREG(st.st_mode)) archive_entry_set_size(e.get(), 0);
  if (content) add_xattrs(e.get(), content.get());
  // A second name of a file already written becomes a hardlink entry (size 0).
  archive_entry* entry = e.release();
  archive_entry* sparse = nullptr;
  archive_entry_linkify(links_, &entry, &sparse);
  e.reset(entry);
  if (e) {
    TRY(check(archive_write_header(a_, e.get()), name));
    if (S_ISREG(st.st_mode) && !archive_entry_hardlink(e.get())) TRY(data(e.get(), content.get(), name));
  }
  if (S_ISDIR(st.st_mode) && !(root_mnt_ && mount_id(obj) != root_mnt_)) TRY(add_children(obj, name + "/"));
  return {};
}

Result<> TarWriter::add_children(int dir, const std::string& prefix) {
  for (auto& n : TRY(names_in(dir, prefix.empty() ? "/" : shown_name(prefix)))) {
    UniqueFd child(::openat(dir, n.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
    if (!child && errno == ENOENT) continue;  // removed meanwhile
    if (!child) return sys_error("open " + shown_name(prefix + n));
    TRY(add(child.get(), prefix + n));
  }
  return {};
}

// ------------------------------------------------------------- extractor --

enum class Owner {
  kCaller,   // as created (copied out: the caller's)
  kEntries,  // the tar entry's uid/gid (-a)
  kRoot,     // 0:0 (copied in without -a)
};

struct ExtractOptions {
  Owner owner = Owner::kCaller;
  // Docker's rebase: a first name component `from` becomes `to` ("." as
  // `from`: every name gets `to` in front). Empty: names as they are.
  std::string from, to;
  unsigned long long resolve = 0;  // more RESOLVE_* flags (RESOLVE_NO_XDEV in a container)
  std::string what;                // "copy to web:/tmp"
};

class Extractor {
 public:
  Extractor(int dest, const ExtractOptions& o) : dest_(dest), o_(o) {}
  ~Extractor() {
    for (auto& d : dirs_) archive_entry_free(d.meta);
  }
  Extractor(const Extractor&) = delete;
  Extractor& operator=(const Extractor&) = delete;
  Result<> entry(archive* a, archive_entry* e);
  // Directories' modes, owners and times, deepest first (their entries were made meanwhile).
  Result<> finish();

 private:
  struct Dir {
    std::vector<std::string> comps;
    archive_entry* meta;  // a clone
  };
  std::optional<std::vector<std::string>> name_of(const char* raw) const;
  // The directory that holds comps' last name, each component resolved without
  // following a symlink; missing ones are made when `create`.
  Result<UniqueFd> parent(const std::vector<std::string>& comps, bool create);
  Result<> own(int fd, const char* name, int flags, archive_entry* e, const std::string& shown);
  std::unexpected<Error> err(const std::string& shown, const std::string& what, int e = 0) {
    return std::unexpected(Error{e, o_.what + ": " + shown + ": " + what});
  }

  int dest_;
  const ExtractOptions& o_;
  std::set<std::string> files_;  // regular files extracted: what hardlinks may name
  std::vector<Dir> dirs_;
};

std::optional<std::vector<std::string>> Extractor::name_of(const char* raw) const {
  std::vector<std::string> comps;
  for (auto& c : split(raw, '/')) {
    if (c == "..") return std::nullopt;
    if (!c.empty() && c != ".") comps.push_back(std::move(c));
  }
  if (o_.from == ".")
    comps.insert(comps.begin(), o_.to);
  else if (!o_.from.empty() && !comps.empty() && comps[0] == o_.from)
    comps[0] = o_.to;
  return comps;
}

Result<UniqueFd> Extractor::parent(const std::vector<std::string>& comps, bool create) {
  UniqueFd cur(::fcntl(dest_, F_DUPFD_CLOEXEC, 3));
  if (!cur) return sys_error(o_.what + ": dup");
  for (size_t i = 0; i + 1 < comps.size(); ++i) {
    const unsigned long long how = RESOLVE_NO_SYMLINKS | o_.resolve;
    auto next = open_in_root(cur.get(), comps[i], O_PATH | O_DIRECTORY, how);
    if (!next && next.error().err == ENOENT && create) {
      if (::mkdirat(cur.get(), comps[i].c_str(), 0755) < 0 && errno != EEXIST)
        return err(shown_name(join_comps(comps, i + 1)), "mkdir", errno);
      next = open_in_root(cur.get(), comps[i], O_PATH | O_DIRECTORY, how);
    }
    if (!next) {
      int e = next.error().err;
      if (e == ELOOP || e == ENOTDIR || e == EXDEV)
        return err(shown_name(join_comps(comps, comps.size())), "goes through a symlink, a non-directory or a mount");
      return err(shown_name(join_comps(comps, i + 1)), "open", e);
    }
    cur = std::move(*next);
  }
  return cur;
}

Result<> Extractor::own(int fd, const char* name, int flags, archive_entry* e, const std::string& shown) {
  if (o_.owner == Owner::kCaller) return {};
  int64_t uid = 0, gid = 0;
  if (o_.owner == Owner::kEntries) uid = archive_entry_uid(e), gid = archive_entry_gid(e);
  if (uid < 0 || uid >= 0xffffffffLL || gid < 0 || gid >= 0xffffffffLL) return err(shown, "owner out of range");
  if (::fchownat(fd, name, static_cast<uid_t>(uid), static_cast<gid_t>(gid), flags) < 0)
    return err(shown, "chown", errno);
  return {};
}

// Best effort, as Docker's: a filesystem without xattrs (or that refuses
// security.*) does not fail the copy.
void set_xattrs(int fd, archive_entry* e) {
  const char* name;
  const void* value;
  size_t size;
  archive_entry_xattr_reset(e);
  while (archive_entry_xattr_next(e, &name, &value, &size) == ARCHIVE_OK)
    if (!overlay_xattr(name)) (void)::fsetxattr(fd, name, value, size, 0);
}

Result<> Extractor::entry(archive* a, archive_entry* e) {
  const char* raw = archive_entry_pathname(e);
  if (!raw) return fail(o_.what + ": a tar entry without a name");
  auto comps = name_of(raw);
  if (!comps) return err(shown_name(raw), "\"..\" in a name is refused");
  if (comps->empty()) return {};  // the copy's root: the destination, left as it is
  const std::string path = join_comps(*comps, comps->size());
  const std::string shown = shown_name(path);
  const char* hardlink = archive_entry_hardlink(e);
  const mode_t type = hardlink ? AE_IFREG : archive_entry_filetype(e);
  const mode_t perm = archive_entry_mode(e) & 07777;
  struct timespec ts[2];
  ts[0].tv_sec = ts[1].tv_sec = archive_entry_mtime(e);
  ts[0].tv_nsec = ts[1].tv_nsec = archive_entry_mtime_is_set(e) ? archive_entry_mtime_nsec(e) : 0;

  UniqueFd pfd = TRY(parent(*comps, true));
  const int p = pfd.get();
  const char* n = comps->back().c_str();
  struct stat st;
  bool exists = ::fstatat(p, n, &st, AT_SYMLINK_NOFOLLOW) == 0;
  if (!exists && errno != ENOENT) return err(shown, "stat", errno);
  if (exists && S_ISDIR(st.st_mode) != (type == AE_IFDIR))
    return err(shown, S_ISDIR(st.st_mode) ? "cannot overwrite a directory with a non-directory"
                                          : "cannot overwrite a non-directory with a directory");
  // Whatever is there (a symlink included) is replaced, never written through.
  if (exists && type != AE_IFDIR) {
    if (::unlinkat(p, n, 0) < 0) return err(shown, "remove", errno);
    files_.erase(path);
  }

  if (hardlink) {
    auto target = name_of(hardlink);
    if (!target || target->empty() || !files_.count(join_comps(*target, target->size())))
      return err(shown, "hardlink to " + shown_name(hardlink) + ", not a file of this copy");
    UniqueFd tp = TRY(parent(*target, false));
    if (::linkat(tp.get(), target->back().c_str(), p, n, 0) < 0) return err(shown, "link", errno);
    files_.insert(path);
    return {};
  }
  switch (type) {
    case AE_IFDIR:
      if (!exists && ::mkdirat(p, n, 0700) < 0) return err(shown, "mkdir", errno);
      dirs_.push_back({*comps, archive_entry_clone(e)});
      return {};
    case AE_IFREG: {
      UniqueFd f(::openat(p, n, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
      if (!f) return err(shown, "create", errno);
      files_.insert(path);
      if (archive_read_data_into_fd(a, f.get()) < ARCHIVE_WARN) {
        const char* m = archive_error_string(a);
        return err(shown, std::string("read data: ") + (m ? m : "failed"));
      }
      // A sparse file's trailing hole.
      if (::fstat(f.get(), &st) == 0 && st.st_size < archive_entry_size(e) &&
          ::ftruncate(f.get(), archive_entry_size(e)) < 0)
        return err(shown, "truncate", errno);
      // chown clears setuid bits and capabilities: owner, then mode, then xattrs.
      TRY(own(f.get(), "", AT_EMPTY_PATH, e, shown));
      if (::fchmod(f.get(), perm) < 0) return err(shown, "chmod", errno);
      set_xattrs(f.get(), e);
      if (::futimens(f.get(), ts) < 0) return err(shown, "set times", errno);
      return {};
    }
    case AE_IFLNK: {
      const char* target = archive_entry_symlink(e);
      if (!target) return err(shown, "a symlink without a target");
      if (::symlinkat(target, p, n) < 0) return err(shown, "symlink", errno);
      TRY(own(p, n, AT_SYMLINK_NOFOLLOW, e, shown));
      if (::utimensat(p, n, ts, AT_SYMLINK_NOFOLLOW) < 0) return err(shown, "set times", errno);
      return {};
    }
    case AE_IFCHR:
    case AE_IFBLK:
    case AE_IFIFO: {
      dev_t rdev = type == AE_IFIFO ? 0 : makedev(archive_entry_rdevmajor(e), archive_entry_rdevminor(e));
      if (::mknodat(p, n, type | 0600, rdev) < 0) return err(shown, "mknod", errno);
      // chmod through an fd on the node just made, so that nothing swapped in its place is followed.
      UniqueFd node(::openat(p, n, O_PATH | O_NOFOLLOW | O_CLOEXEC));
      if (!node || ::fstat(node.get(), &st) < 0 || (st.st_mode & S_IFMT) != type)
        return err(shown, "replaced while being made");
      TRY(own(node.get(), "", AT_EMPTY_PATH, e, shown));
      if (::chmod(fd_path(node.get()).c_str(), perm) < 0) return err(shown, "chmod", errno);
      if (::utimensat(p, n, ts, AT_SYMLINK_NOFOLLOW) < 0) return err(shown, "set times", errno);
      return {};
    }
    default:
      return err(shown, "unsupported file type");
  }
}

Result<> Extractor::finish() {
  std::stable_sort(dirs_.begin(), dirs_.end(),
                   [](const Dir& x, const Dir& y) { return x.comps.size() > y.comps.size(); });
  for (auto& d : dirs_) {
    const std::string shown = shown_name(join_comps(d.comps, d.comps.size()));
    UniqueFd pfd = TRY(parent(d.comps, false));
    UniqueFd fd(::openat(pfd.get(), d.comps.back().c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) return err(shown, "open directory", errno);
    TRY(own(fd.get(), "", AT_EMPTY_PATH, d.meta, shown));
    if (::fchmod(fd.get(), archive_entry_mode(d.meta) & 07777) < 0) return err(shown, "chmod", errno);
    set_xattrs(fd.get(), d.meta);
    struct timespec ts[2];
    ts[0].tv_sec = ts[1].tv_sec = archive_entry_mtime(d.meta);
    ts[0].tv_nsec = ts[1].tv_nsec = archive_entry_mtime_nsec(d.meta);
    if (::futimens(fd.get(), ts) < 0) return err(shown, "set times", errno);
  }
  return {};
}

// Extracts the tar stream on `in` beneath the directory `dest`.
Result<> extract(int in, int dest, const ExtractOptions& o) {
  std::unique_ptr<archive, int (*)(archive*)> a(archive_read_new(), archive_read_free);
  archive_read_support_format_tar(a.get());
  archive_read_support_filter_gzip(a.get());
  archive_read_support_filter_zstd(a.get());
  archive_read_support_filter_xz(a.get());
  archive_read_support_filter_bzip2(a.get());
  auto bad = [&](const char* doing) {
    const char* m = archive_error_string(a.get());
    return fail(o.what + ": " + doing + ": " + (m ? m : "not a tar archive"));
  };
  if (archive_read_open_fd(a.get(), in, 1 << 16) != ARCHIVE_OK) return bad("read tar");
  Extractor x(dest, o);
  for (;;) {
    archive_entry* e = nullptr;
    int r = archive_read_next_header(a.get(), &e);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) return bad("read tar");
    TRY(x.entry(a.get(), e));
  }
  return x.finish();
}

// --------------------------------------------------------- Docker's names --

// One end of a copy: the host (paths as given) or a container (paths resolved in its rootfs).
// A container's volume or directory bind, opened.
struct OpenMount {
  std::string destination;
  UniqueFd root;  // O_PATH on the source
  bool rw = true;
};

Result<std::vector<OpenMount>> open_mounts(const CopyOptions& o) {
  std::vector<OpenMount> out;
  for (auto& m : o.mounts) {
    UniqueFd fd(::open(m.source.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!fd) return sys_error("open the source of " + o.container + ":" + m.destination + ", " + m.source);
    out.push_back({clean_path(m.destination), std::move(fd), m.rw});
  }
  return out;
}

Result<std::string> fd_link(int f) {
  char buf[PATH_MAX];
  ssize_t n = ::readlink(fd_path(f).c_str(), buf, sizeof buf);
  if (n < 0) return sys_error("readlink " + fd_path(f));
  return std::string(buf, static_cast<size_t>(n));
}

struct Side {
  int root = -1;  // the container's rootfs; -1: the host
  std::string container;
  const std::vector<OpenMount>* mounts = nullptr;  // the container's volumes and binds

  bool in_container() const { return root >= 0; }
  std::string where(std::string_view path) const {
    return in_container() ? container + ":" + std::string(path) : std::string(path);
  }
  // The mount an absolute container path lies in (the deepest), or null: the rootfs.
  const OpenMount* mount_of(const std::string& path) const {
    const OpenMount* best = nullptr;
    if (!mounts) return best;
    for (auto& m : *mounts)
      if ((path == m.destination || path.starts_with(m.destination + "/")) &&
          (!best || m.destination.size() > best->destination.size()))
        best = &m;
    return best;
  }
  // The root a container path is resolved in: a mount's source, or the rootfs.
  int root_for(const std::string& path) const {
    const OpenMount* m = mount_of(path);
    return m ? m->root.get() : root;
  }
  bool writable(const std::string& path) const {
    const OpenMount* m = mount_of(path);
    return !m || m->rw;
  }
  Result<UniqueFd> open(const std::string& path, int flags) const {
    if (in_container()) {
      if (const OpenMount* m = mount_of(path)) {
        std::string rest = path.size() == m->destination.size() ? "/" : path.substr(m->destination.size());
        return open_in_root(m->root.get(), rest, flags, RESOLVE_NO_XDEV);
      }
      return open_in_root(root, path, flags, RESOLVE_NO_XDEV);
    }
    UniqueFd fd(::open(path.c_str(), flags | O_CLOEXEC));
    if (!fd) return sys_error("open " + path);
    return fd;
  }
  // Where `fd` is, as a path on this side.
  Result<std::string> path_of(int fd) const {
    std::string p = TRY(fd_link(fd));
    if (!in_container()) return p;
    // The deepest root holding it: a mount's source, else the rootfs.
    std::string best_root, best_dest;
    auto consider = [&](int r, const std::string& dest) -> Result<> {
      std::string l = TRY(fd_link(r));
      if ((p == l || p.starts_with(l + "/")) && l.size() >= best_root.size()) best_root = l, best_dest = dest;
      return {};
    };
    TRY(consider(root, "/"));
    if (mounts)
      for (auto& m : *mounts) TRY(consider(m.root.get(), m.destination));
    if (best_root.empty()) return fail("a path outside the container's rootfs: " + p);
    if (p == best_root) return best_dest;
    return clean_path(best_dest + "/" + p.substr(best_root.size() + 1));
  }
};

// Docker's SplitPathDirEntry, and whether the path says "a directory".
struct PathParts {
  std::string path;       // cleaned; for "dir/." the directory
  std::string dir, base;  // base "." for "dir/." or "/": the directory's contents
  bool asserts_dir = false;
};

PathParts parts(std::string_view p) {
  PathParts r;
  r.asserts_dir = p.ends_with('/') || p.ends_with("/.") || p == ".";
  r.path = clean_path(p);
  if (p == "." || p.ends_with("/.") || r.path == "/" || r.path == ".") {
    r.dir = r.path;
    r.base = ".";
    return r;
  }
  size_t s = r.path.rfind('/');
  r.dir = s == std::string::npos ? "." : s == 0 ? "/" : r.path.substr(0, s);
  r.base = r.path.substr(s == std::string::npos ? 0 : s + 1);
  return r;
}

std::string container_path(std::string_view p) { return p.starts_with('/') ? std::string(p) : "/" + std::string(p); }

struct Source {
  UniqueFd obj;  // O_PATH
  std::string name;
  std::string path;  // cleaned, as given (a container path: absolute)
  bool dir = false;
  int fs_root = -1;  // the root it was resolved in (its tar stays on that filesystem)
};

Result<Source> open_source(const Side& s, std::string_view path, const CopyOptions& o) {
  const bool follow = o.follow_link;
  PathParts pp = parts(path);
  if (pp.base == "..") {  // "..", "../..": named by where they lead (host paths only: a container's are absolute)
    char real[PATH_MAX];
    if (!::realpath(pp.path.c_str(), real)) return sys_error("lstat " + std::string(path));
    pp = parts(real);
  }
  Source src;
  src.name = pp.base;
  src.path = pp.path;
  int flags = O_PATH | (pp.base == "." ? O_DIRECTORY : 0) | (follow || pp.asserts_dir ? 0 : O_NOFOLLOW);
  auto fd = s.open(pp.path, flags);
  if (!fd && fd.error().err == ENOENT && s.in_container())
    return fail("no such file in container " + s.container + ": " + std::string(path));
  if (!fd) return std::unexpected(Error{fd.error().err, "lstat " + s.where(path)});
  src.obj = std::move(*fd);
  src.fs_root = s.in_container() ? s.root_for(pp.path) : -1;
  struct stat st;
  if (::fstat(src.obj.get(), &st) < 0) return sys_error("stat " + s.where(path));
  src.dir = S_ISDIR(st.st_mode);
  if (pp.asserts_dir && !src.dir) return fail(s.where(path) + ": not a directory");
  if (s.in_container() && S_ISREG(st.st_mode) && !o.mounted_files.empty()) {
    std::string at = TRY(s.path_of(src.obj.get()));
    for (auto& [mounted, host_file] : o.mounted_files)
      if (at == mounted) src.obj = TRY(Side{}.open(host_file, O_PATH));
  }
  return src;
}

struct Dest {
  UniqueFd dir;  // extracted beneath
  std::string from, to;
};

// Docker's PrepareArchiveCopy: where the source's tar goes and how its first
// name component is renamed.
Result<Dest> open_dest(const Side& s, std::string_view path, const Source& src) {
  PathParts pp = parts(path);
  const std::string shown = s.where(path);
  auto no_dir = [&](const std::string& dir) {
    return fail(s.in_container() ? "no such directory in container " + s.container + ": " + dir
                                 : "destination directory " + dir + " does not exist");
  };
  auto obj = s.open(pp.path, O_PATH);
  if (obj) {
    struct stat st;
    if (::fstat(obj->get(), &st) < 0) return sys_error("stat " + shown);
    if (S_ISDIR(st.st_mode)) return Dest{std::move(*obj), "", ""};  // into it, names as they are
    if (src.dir) return fail("cannot copy a directory to a file: " + shown);
    if (pp.asserts_dir) return fail(shown + ": not a directory");
    // A file (or a link to one): replaced where it resolves, under that name.
    PathParts real = parts(TRY(s.path_of(obj->get())));
    UniqueFd d = TRY(s.open(real.dir, O_PATH | O_DIRECTORY));
    return Dest{std::move(d), src.name, real.base};
  }
  if (obj.error().err != ENOENT) return std::unexpected(std::move(obj).error().context(shown));
  // Missing: made by the copy, under the name given, in a directory that must exist.
  if (pp.base == ".") return no_dir(pp.path);
  if (pp.asserts_dir && !src.dir) return no_dir(pp.path);
  auto d = s.open(pp.dir, O_PATH | O_DIRECTORY);
  if (!d && d.error().err == ENOENT) return no_dir(pp.dir);
  if (!d) return std::unexpected(std::move(d).error().context(shown));
  return Dest{std::move(*d), src.name, pp.base};
}

// For a TarWriter of `src` (a container's): the mount whose destination an
// entry is, so a volume beneath a copied directory is written with its files.
std::function<int(const std::string&)> mounts_under(const Side& side, const Source& src) {
  if (!side.mounts || side.mounts->empty()) return {};
  return [&side, &src](const std::string& name) -> int {
    std::string p;
    if (name == src.name) p = src.path;
    else if (name.starts_with(src.name + "/")) p = clean_path(src.path + name.substr(src.name.size()));
    else return -1;
    for (auto& m : *side.mounts)
      if (m.destination == p) return m.root.get();
    return -1;
  };
}

// The source written as tar on one thread, extracted on this one.
Result<> pipe_copy(const Source& src, int one_fs_root, const Dest& dst, const ExtractOptions& xo,
                   std::function<int(const std::string&)> mount_root = {}) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) return sys_error("socketpair");
  UniqueFd rd(sv[0]), wr(sv[1]);
  Result<> written;
  std::thread writer([&] {
    TarWriter w(wr.get(), one_fs_root);
    w.mount_root = mount_root;
    written = w.add(src.obj.get(), src.name);
    if (written) written = w.finish();
    ::shutdown(wr.get(), SHUT_WR);  // the reader's end of stream
  });
  Result<> extracted = extract(rd.get(), dst.dir.get(), xo);
  if (extracted) {
    char buf[4096];  // the writer's padding after the end of the archive
    while (::read(rd.get(), buf, sizeof buf) > 0) {
    }
  }
  ::shutdown(rd.get(), SHUT_RDWR);  // a writer still writing gets EPIPE
  writer.join();
  if (!written && (extracted || written.error().err != EPIPE)) return written;
  return extracted;
}

}  // namespace

Result<UniqueFd> open_rootfs(const std::string& rootfs_dir, std::string_view container) {
  UniqueFd fd(::open(rootfs_dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return sys_error("open " + rootfs_dir);
  // (Engine::rootfs mounts a stopped container's again first.)
  if (!is_mount_root(fd.get(), ""))
    return fail("the filesystem of container " + std::string(container) + " is not mounted at " + rootfs_dir);
  return fd;
}

Result<> copy_from_container(const std::string& rootfs_dir, std::string_view src_path, int out_tar_fd,
                             const CopyOptions& o) {
  UniqueFd root = TRY(open_rootfs(rootfs_dir, o.container));
  auto mounts = TRY(open_mounts(o));
  Side side{root.get(), o.container, &mounts};
  Source src = TRY(open_source(side, container_path(src_path), o));
  TarWriter w(out_tar_fd, src.fs_root);
  w.mount_root = mounts_under(side, src);
  TRY(w.add(src.obj.get(), src.name));
  return w.finish();
}

Result<> copy_to_container(const std::string& rootfs_dir, std::string_view dst_path, int in_tar_fd,
                           const CopyOptions& o) {
  UniqueFd root = TRY(open_rootfs(rootfs_dir, o.container));
  auto mounts = TRY(open_mounts(o));
  Side c{root.get(), o.container, &mounts};
  std::string path = clean_path(container_path(dst_path));
  if (!c.writable(path)) return fail("mounted volume is marked read-only: " + c.where(path));
  auto dir = c.open(path, O_PATH | O_DIRECTORY);
  if (!dir && dir.error().err == ENOENT) return fail("no such directory in container " + o.container + ": " + path);
  if (!dir) return fail("destination \"" + c.where(dst_path) + "\" must be a directory");
  ExtractOptions xo{o.archive ? Owner::kEntries : Owner::kRoot, "", "", RESOLVE_NO_XDEV, "copy to " + c.where(path)};
  return extract(in_tar_fd, dir->get(), xo);
}

Result<> copy_out(const std::string& rootfs_dir, std::string_view src_path, const std::string& host_dst,
                  const CopyOptions& o) {
  UniqueFd root = TRY(open_rootfs(rootfs_dir, o.container));
  auto mounts = TRY(open_mounts(o));
  Side side{root.get(), o.container, &mounts};
  Source src = TRY(open_source(side, container_path(src_path), o));
  Dest dst = TRY(open_dest(Side{}, host_dst, src));
  ExtractOptions xo{Owner::kCaller, dst.from, dst.to, 0, "copy to " + host_dst};
  return pipe_copy(src, src.fs_root, dst, xo, mounts_under(side, src));
}

Result<> copy_in(const std::string& host_src, const std::string& rootfs_dir, std::string_view dst_path,
                 const CopyOptions& o) {
  UniqueFd root = TRY(open_rootfs(rootfs_dir, o.container));
  auto mounts = TRY(open_mounts(o));
  Side c{root.get(), o.container, &mounts};
  Source src = TRY(open_source(Side{}, host_src, o));
  std::string path = container_path(dst_path);
  Dest dst = TRY(open_dest(c, path, src));
  // Where the files land decides (a new name is made in its parent's mount).
  std::string landing = clean_path(TRY(c.path_of(dst.dir.get())));
  if (!c.writable(landing)) return fail("mounted volume is marked read-only: " + c.where(path));
  ExtractOptions xo{o.archive ? Owner::kEntries : Owner::kRoot, dst.from, dst.to, RESOLVE_NO_XDEV,
                    "copy to " + c.where(path)};
  return pipe_copy(src, -1, dst, xo);
}

Result<> export_rootfs(const std::string& rootfs_dir, int out_fd, std::string_view container) {
  UniqueFd root = TRY(open_rootfs(rootfs_dir, container));
  TarWriter w(out_fd, root.get());
  TRY(w.add_children(root.get(), ""));
  return w.finish();
}

// ------------------------------------------------------------------ diff --

namespace {

// What the merged lower layers (top first) have at `comps`, by overlay's
// rules: a whiteout or a non-directory on the way hides what is below it, and
// so does an opaque directory.
std::optional<struct stat> in_lowers(const std::vector<UniqueFd>& lowers, const std::vector<std::string>& comps) {
  for (auto& layer : lowers) {
    int cur = layer.get();
    UniqueFd held;
    bool opaque = false;
    for (size_t i = 0; i < comps.size(); ++i) {
      struct stat st;
      if (::fstatat(cur, comps[i].c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) break;  // not in this layer
      if (whiteout(st)) return std::nullopt;
      if (i + 1 == comps.size()) return st;
      if (!S_ISDIR(st.st_mode)) return std::nullopt;
      held.reset(::openat(cur, comps[i].c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!held) return std::nullopt;
      cur = held.get();
      char v = 0;
      if (::fgetxattr(cur, "trusted.overlay.opaque", &v, 1) == 1 && v == 'y') opaque = true;
    }
    if (opaque) return std::nullopt;
  }
  return std::nullopt;
}

// Lists what is beneath the upper directory `dir` (at `comps`); whether anything was.
Result<bool> diff_dir(int dir, const std::vector<UniqueFd>& lowers, const std::vector<std::string>& hidden,
                      std::vector<std::string>& comps, std::vector<std::pair<char, std::string>>& out) {
  std::string here;
  for (auto& c : comps) here += "/" + c;
  const size_t start = out.size();
  for (auto& n : TRY(names_in(dir, here.empty() ? "/" : here))) {
    std::string path = here + "/" + n;
    struct stat st;
    if (std::find(hidden.begin(), hidden.end(), path) != hidden.end()) continue;
    if (::fstatat(dir, n.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) {
      if (errno == ENOENT) continue;
      return sys_error("stat " + path);
    }
    if (whiteout(st)) {
      out.emplace_back('D', path);
      continue;
    }
    comps.push_back(n);
    auto below = in_lowers(lowers, comps);
    size_t at = out.size();
    out.emplace_back(below ? 'C' : 'A', path);
    bool inner = false;
    if (S_ISDIR(st.st_mode)) {
      UniqueFd sub(::openat(dir, n.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!sub) return sys_error("open " + path);
      inner = TRY(diff_dir(sub.get(), lowers, hidden, comps, out));
    }
    comps.pop_back();
    // Copied up only for what is (hidden) beneath it, mode and owner as below: not a change itself.
    if (below && S_ISDIR(st.st_mode) && S_ISDIR(below->st_mode) && !inner && st.st_mode == below->st_mode &&
        st.st_uid == below->st_uid && st.st_gid == below->st_gid)
      out.erase(out.begin() + static_cast<ptrdiff_t>(at));
  }
  return out.size() > start;
}

}  // namespace

Result<std::vector<std::pair<char, std::string>>> diff(const std::string& upper_dir,
                                                       const std::vector<std::string>& lower_dirs,
                                                       const std::vector<std::string>& hidden) {
  UniqueFd upper(::open(upper_dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!upper) return sys_error("open " + upper_dir);
  std::vector<UniqueFd> lowers;
  for (auto& l : lower_dirs) {
    UniqueFd fd(::open(l.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!fd) return sys_error("open layer " + l);
    lowers.push_back(std::move(fd));
  }
  std::vector<std::pair<char, std::string>> out;
  std::vector<std::string> comps;
  TRY(diff_dir(upper.get(), lowers, hidden, comps, out));
  return out;
}

}  // namespace berth::engine
