#include "util/fs.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <utility>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <ctime>

#include "util/syscalls.h"

namespace berth {

Result<std::string> read_fd(int fd) {
  std::string out;
  char buf[8192];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return sys_error("read");
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

Result<std::string> read_file(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return sys_error("open " + path);
  return TRY_CTX(read_fd(fd.get()), "read " + path);
}

Result<> write_new_file(const std::string& path, std::string_view data, mode_t mode) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode));
  if (!fd || ::fchmod(fd.get(), mode) < 0) return sys_error("create " + path);
  TRY_CTX(write_fd(fd.get(), data), "write " + path);
  return {};
}

Result<> write_fd(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return sys_error("write");
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return {};
}

Result<> write_file(const std::string& path, std::string_view data) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC));
  if (!fd) return sys_error("open " + path);
  // cgroupfs and procfs take one value per write: never split it. O_TRUNC
  // is ignored there (as for a shell's `>`) and makes fixture trees in tests
  // read back what was written last.
  ssize_t n = ::write(fd.get(), data.data(), data.size());
  if (n < 0) return sys_error("write " + path);
  if (static_cast<size_t>(n) != data.size()) return fail("short write to " + path);
  return {};
}

Result<> atomic_write_file(const std::string& path, std::string_view data, mode_t mode) {
  std::string tmp = path + ".tmp";
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode));
  if (!fd) return sys_error("create " + tmp);
  if (auto r = write_fd(fd.get(), data); !r) {
    ::unlink(tmp.c_str());
    return std::unexpected(std::move(r).error().context("write " + tmp));
  }
  // No fsync: runtime state lives on tmpfs (/run) and does not outlive a boot.
  if (::rename(tmp.c_str(), path.c_str()) < 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    return sys_error(e, "rename " + tmp);
  }
  return {};
}

Result<> mkdir_p(const std::string& path, mode_t mode) {
  if (path.empty()) return {};
  if (::mkdir(path.c_str(), mode) == 0 || errno == EEXIST) return {};
  if (errno != ENOENT) return sys_error("mkdir " + path);
  auto slash = path.find_last_of('/');
  if (slash != std::string::npos && slash > 0) TRY(mkdir_p(path.substr(0, slash), mode));
  if (::mkdir(path.c_str(), mode) < 0 && errno != EEXIST) return sys_error("mkdir " + path);
  return {};
}

bool is_mount_root(int dirfd, const char* path) {
  struct statx stx {};
  int flags = AT_SYMLINK_NOFOLLOW | (*path ? 0 : AT_EMPTY_PATH);
  return ::statx(dirfd, path, flags, STATX_BASIC_STATS, &stx) == 0 &&
         (stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) && (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT);
}

bool is_mount_root(const std::string& path) { return is_mount_root(AT_FDCWD, path.c_str()); }

static Result<> remove_at(int dirfd, const char* name, bool detach) {
  if (::unlinkat(dirfd, name, 0) == 0 || errno == ENOENT) return {};
  if (errno != EISDIR) return sys_error(std::string("unlink ") + name);
  // An empty directory (most of a removed container's work/) goes at once;
  // one that is not empty, or is a mount point, is opened.
  if (::unlinkat(dirfd, name, AT_REMOVEDIR) == 0 || errno == ENOENT) return {};
  UniqueFd fd(::openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return sys_error(std::string("open ") + name);
  // Never into another mount: a bind mount left in a tree (debootstrap's
  // /proc, a volume) would have its contents deleted. Trash (`detach`) is
  // ours whole: what is mounted in it is detached, and the directory under
  // it removed.
  if (is_mount_root(fd.get(), "")) {
    if (!detach) return sys_error(EBUSY, std::string("remove ") + name + ": a mount point");
    fd.reset();
    std::string at = dirfd == AT_FDCWD ? name : "/proc/self/fd/" + std::to_string(dirfd) + "/" + name;
    if (::umount2(at.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) != 0)
      return sys_error(std::string("umount ") + name);
    return remove_at(dirfd, name, detach);
  }
  DIR* d = ::fdopendir(::dup(fd.get()));
  if (!d) return sys_error(std::string("opendir ") + name);
  while (auto* e = ::readdir(d)) {
    if (std::string_view(e->d_name) == "." || std::string_view(e->d_name) == "..") continue;
    if (auto r = remove_at(fd.get(), e->d_name, detach); !r) {
      ::closedir(d);
      return r;
    }
  }
  ::closedir(d);
  if (::unlinkat(dirfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
    return sys_error(std::string("rmdir ") + name);
  return {};
}

Result<> remove_tree(const std::string& path) {
  return remove_at(AT_FDCWD, path.c_str(), false);
}

Result<> remove_trash(const std::string& path) { return remove_at(AT_FDCWD, path.c_str(), true); }

namespace {
std::vector<std::string>& trash() {
  static std::vector<std::string> kept;
  return kept;
}
}  // namespace

Result<> trash_tree(const std::string& path) {
  auto slash = path.find_last_of('/');
  std::string parent = slash == std::string::npos ? "." : path.substr(0, slash);
  std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
  std::string to = parent + "/.trash-" + name + "." + std::to_string(::time(nullptr)) + "." +
                   std::to_string(::getpid());
  if (::rename(path.c_str(), to.c_str()) < 0) {
    if (errno == ENOENT) return {};
    return remove_trash(path);  // another filesystem's quirk: remove it now
  }
  trash().push_back(std::move(to));
  return {};
}

std::vector<std::string> take_trash() { return std::exchange(trash(), {}); }
void restore_trash(std::vector<std::string> paths) {
  for (auto& p : paths) trash().push_back(std::move(p));
}

void empty_trash() {
  for (auto& p : trash()) (void)remove_trash(p);
  trash().clear();
}

void detach_from_caller(int keep) {
  ::setsid();
  if (keep >= 0 && keep != 3) keep = ::dup2(keep, 3);
  int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  for (int fd = 0; fd < 3 && null >= 0; ++fd) ::dup2(null, fd);
  ::close_range(keep == 3 ? 4 : 3, ~0U, 0);
}

void empty_trash_detached() {
  if (trash().empty()) return;
  std::fflush(nullptr);
  // The caller returns once the child has a session of its own: whoever
  // signals the caller's process group as it ends (a shell's ^C, a test's
  // kill of the group) does not end the removal.
  int ready[2];
  if (::pipe2(ready, O_CLOEXEC) < 0) return empty_trash();
  pid_t pid = ::fork();
  if (pid < 0) {
    ::close(ready[0]), ::close(ready[1]);
    return empty_trash();
  }
  if (pid > 0) {
    ::close(ready[1]);
    char b;
    while (::read(ready[0], &b, 1) < 0 && errno == EINTR) {
    }
    ::close(ready[0]);
    trash().clear();
    return;
  }
  ::close(ready[1]);
  detach_from_caller();
  (void)::setpriority(PRIO_PROCESS, 0, 10);
  for (auto& p : trash()) (void)remove_trash(p);
  ::_exit(0);
}

int64_t trash_age(std::string_view name) {
  if (!name.starts_with(".trash-")) return -1;
  auto last = name.rfind('.');
  if (last == std::string_view::npos || last == 0) return -1;
  auto prev = name.rfind('.', last - 1);
  if (prev == std::string_view::npos || prev < 7) return -1;
  std::string secs(name.substr(prev + 1, last - prev - 1));
  if (secs.empty() || secs.find_first_not_of("0123456789") != std::string::npos) return -1;
  int64_t made = std::atoll(secs.c_str());
  int64_t now = ::time(nullptr);
  return now > made ? now - made : 0;
}

void detach_mounts_beneath(const std::string& dir) {
  auto info = read_file("/proc/self/mountinfo");
  if (!info) return;
  std::vector<std::string> points;
  for (auto& line : split(*info, '\n')) {
    auto f = split(line, ' ');
    if (f.size() < 5) continue;
    // mountinfo writes space, tab, newline and backslash as \ooo.
    std::string p;
    for (size_t i = 0; i < f[4].size(); ++i) {
      if (f[4][i] == '\\' && i + 3 < f[4].size() && std::isdigit(static_cast<unsigned char>(f[4][i + 1]))) {
        p += static_cast<char>(std::strtol(f[4].substr(i + 1, 3).c_str(), nullptr, 8));
        i += 3;
      } else {
        p += f[4][i];
      }
    }
    if (p == dir || p.starts_with(dir + "/")) points.push_back(p);
  }
  std::sort(points.begin(), points.end(), [](auto& a, auto& b) { return a.size() > b.size(); });
  for (auto& p : points) ::umount2(p.c_str(), MNT_DETACH);
}

bool path_exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

std::vector<std::string> split(std::string_view s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    size_t p = s.find(sep, start);
    out.emplace_back(s.substr(start, p - start));
    if (p == std::string_view::npos) break;
    start = p + 1;
  }
  return out;
}

std::string clean_path(std::string_view path) {
  bool abs = !path.empty() && path[0] == '/';
  std::vector<std::string_view> parts;
  size_t i = 0;
  while (i <= path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    std::string_view c = path.substr(i, j - i);
    if (c.empty() || c == ".") {
    } else if (c == "..") {
      if (!parts.empty() && parts.back() != "..")
        parts.pop_back();
      else if (!abs)
        parts.push_back(c);
    } else {
      parts.push_back(c);
    }
    i = j + 1;
  }
  std::string out = abs ? "/" : "";
  for (size_t k = 0; k < parts.size(); ++k) {
    if (k) out += '/';
    out += parts[k];
  }
  if (out.empty()) out = ".";
  return out;
}

std::string join_path(std::string_view a, std::string_view b) {
  std::string s(a);
  if (s.empty() || s.back() != '/') s += '/';
  while (!b.empty() && b.front() == '/') b.remove_prefix(1);
  s += b;
  return s;
}

std::string fd_path(int fd) { return "/proc/self/fd/" + std::to_string(fd); }

Result<UniqueFd> open_in_root(int rootfd, std::string_view path, int flags,
                              unsigned long long extra_resolve, mode_t mode) {
  std::string rel = clean_path(path);
  if (rel == "/") rel = ".";
  struct open_how how = {};
  how.flags = static_cast<unsigned long long>(flags | O_CLOEXEC);
  how.mode = (flags & O_CREAT) ? mode : 0;
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | extra_resolve;
  for (;;) {
    int fd = sys::openat2(rootfd, rel.c_str(), &how);
    if (fd >= 0) return UniqueFd(fd);
    // EAGAIN: a rename raced the lookup; the kernel asks us to retry.
    if (errno != EAGAIN && errno != EINTR) return sys_error("open " + std::string(path) + " in rootfs");
  }
}

static Result<UniqueFd> mkdir_in_root_depth(int rootfd, std::string_view path, mode_t mode, int depth);

Result<UniqueFd> mkdir_in_root(int rootfd, std::string_view path, mode_t mode) {
  return mkdir_in_root_depth(rootfd, path, mode, 0);
}

static Result<UniqueFd> mkdir_in_root_depth(int rootfd, std::string_view path, mode_t mode, int depth) {
  if (depth > 40) return sys_error(ELOOP, "mkdir " + std::string(path) + " in rootfs");
  std::string abs = "/";
  abs.append(path);
  std::string clean = clean_path(abs);
  // Most often it is there (a container's mount points): resolved whole, in
  // one call, as the walk below would resolve it. (The walk resolves every
  // prefix anew: a dozen calls for a deep path, ~40 a container start.)
  if (auto whole = open_in_root(rootfd, clean, O_PATH | O_DIRECTORY); whole) return whole;
  UniqueFd cur(::openat(rootfd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!cur) return sys_error("open rootfs");
  std::string prefix;
  for (auto& comp : split(clean, '/')) {
    if (comp.empty()) continue;
    prefix += "/" + comp;
    auto next = open_in_root(rootfd, prefix, O_PATH | O_DIRECTORY);
    if (!next && next.error().err == ENOENT) {
      // Create the one missing name inside the directory we already hold, then
      // resolve again in-root (the name may have been a dangling symlink).
      if (::mkdirat(cur.get(), comp.c_str(), mode) < 0 && errno != EEXIST)
        return sys_error("mkdir " + prefix + " in rootfs");
      next = open_in_root(rootfd, prefix, O_PATH | O_DIRECTORY);
      if (!next && next.error().err == ENOENT) {
        // A dangling symlink: create its target, resolved lexically inside the
        // root ("/.." stays "/"), as runc and crun do.
        char link[4096];
        ssize_t n = ::readlinkat(cur.get(), comp.c_str(), link, sizeof link - 1);
        if (n > 0) {
          link[n] = 0;
          std::string parent = prefix.substr(0, prefix.size() - comp.size());
          std::string target = link[0] == '/' ? std::string(link) : parent + link;
          TRY(mkdir_in_root_depth(rootfd, target, mode, depth + 1));
          next = open_in_root(rootfd, prefix, O_PATH | O_DIRECTORY);
        }
      }
    }
    if (!next) return std::unexpected(std::move(next).error());
    cur = std::move(*next);
  }
  return cur;
}

Result<UniqueFd> ensure_in_root(int rootfd, std::string_view path, bool dir) {
  if (dir) return mkdir_in_root(rootfd, path);
  std::string clean = clean_path(path);
  if (auto fd = open_in_root(rootfd, clean, O_PATH); fd) return fd;
  auto slash = clean.find_last_of('/');
  std::string parent = slash == 0 ? "/" : clean.substr(0, slash);
  std::string name = clean.substr(slash + 1);
  UniqueFd pfd = TRY(mkdir_in_root(rootfd, parent));
  // Create the file through a real (non-O_PATH) directory fd, never following a
  // symlink planted at the final name.
  UniqueFd dfd(::openat(pfd.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dfd) return sys_error("open " + parent + " in rootfs");
  UniqueFd f(::openat(dfd.get(), name.c_str(), O_CREAT | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0644));
  if (!f && errno != EEXIST) return sys_error("create " + clean + " in rootfs");
  return open_in_root(rootfd, clean, O_PATH);
}

uint64_t tree_bytes(const std::string& dir) {
  // nftw's callback takes no context: a thread-local total.
  static thread_local uint64_t total;
  total = 0;
  ::nftw(
      dir.c_str(),
      [](const char*, const struct stat* st, int type, struct FTW*) {
        if (type == FTW_F || type == FTW_SL) total += static_cast<uint64_t>(st->st_size);
        return 0;
      },
      32, FTW_PHYS | FTW_MOUNT);
  return total;
}

}  // namespace berth
