#include "runtime/mounts.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <set>

#include "runtime/namespaces.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/syscalls.h"

namespace berth::runtime {

namespace {

struct FlagOpt {
  const char* name;
  bool clear;
  unsigned long flag;
};
constexpr FlagOpt kFlags[] = {
    {"async", true, MS_SYNCHRONOUS},     {"atime", true, MS_NOATIME},
    {"defaults", false, 0},              {"dev", true, MS_NODEV},
    {"diratime", true, MS_NODIRATIME},   {"dirsync", false, MS_DIRSYNC},
    {"exec", true, MS_NOEXEC},           {"iversion", false, MS_I_VERSION},
    {"lazytime", false, MS_LAZYTIME},    {"loud", true, MS_SILENT},
    {"mand", false, MS_MANDLOCK},        {"noatime", false, MS_NOATIME},
    {"nodev", false, MS_NODEV},          {"nodiratime", false, MS_NODIRATIME},
    {"noexec", false, MS_NOEXEC},        {"noiversion", true, MS_I_VERSION},
    {"nolazytime", true, MS_LAZYTIME},   {"nomand", true, MS_MANDLOCK},
    {"norelatime", true, MS_RELATIME},   {"nostrictatime", true, MS_STRICTATIME},
    {"nosuid", false, MS_NOSUID},        {"nosymfollow", false, MS_NOSYMFOLLOW},
    {"relatime", false, MS_RELATIME},    {"remount", false, MS_REMOUNT},
    {"ro", false, MS_RDONLY},            {"rw", true, MS_RDONLY},
    {"silent", false, MS_SILENT},        {"strictatime", false, MS_STRICTATIME},
    {"suid", true, MS_NOSUID},           {"sync", false, MS_SYNCHRONOUS},
    {"symfollow", true, MS_NOSYMFOLLOW},
};

struct PropOpt {
  const char* name;
  unsigned long flag;
};
constexpr PropOpt kProps[] = {
    {"private", MS_PRIVATE},          {"rprivate", MS_PRIVATE | MS_REC}, {"shared", MS_SHARED},
    {"rshared", MS_SHARED | MS_REC},  {"slave", MS_SLAVE},               {"rslave", MS_SLAVE | MS_REC},
    {"unbindable", MS_UNBINDABLE},    {"runbindable", MS_UNBINDABLE | MS_REC},
};

struct RecOpt {
  const char* name;
  bool clear;
  uint64_t attr;
};
constexpr RecOpt kRec[] = {
    {"rro", false, MOUNT_ATTR_RDONLY},        {"rrw", true, MOUNT_ATTR_RDONLY},
    {"rnosuid", false, MOUNT_ATTR_NOSUID},    {"rsuid", true, MOUNT_ATTR_NOSUID},
    {"rnodev", false, MOUNT_ATTR_NODEV},      {"rdev", true, MOUNT_ATTR_NODEV},
    {"rnoexec", false, MOUNT_ATTR_NOEXEC},    {"rexec", true, MOUNT_ATTR_NOEXEC},
    {"rnodiratime", false, MOUNT_ATTR_NODIRATIME}, {"rdiratime", true, MOUNT_ATTR_NODIRATIME},
    {"rrelatime", false, MOUNT_ATTR_RELATIME}, {"rnorelatime", true, MOUNT_ATTR_RELATIME},
    {"rnoatime", false, MOUNT_ATTR_NOATIME},  {"ratime", true, MOUNT_ATTR_NOATIME},
    {"rstrictatime", false, MOUNT_ATTR_STRICTATIME}, {"rnostrictatime", true, MOUNT_ATTR_STRICTATIME},
    {"rnosymfollow", false, MOUNT_ATTR_NOSYMFOLLOW}, {"rsymfollow", true, MOUNT_ATTR_NOSYMFOLLOW},
};

bool is_fs_magic(int fd, long magic) {
  struct statfs sfs;
  return ::fstatfs(fd, &sfs) == 0 && sfs.f_type == magic;
}

// Non-recursive MS_* to MOUNT_ATTR_* for mount_setattr on a cloned tree.
uint64_t attr_from_flags(unsigned long f) {
  uint64_t a = 0;
  if (f & MS_RDONLY) a |= MOUNT_ATTR_RDONLY;
  if (f & MS_NOSUID) a |= MOUNT_ATTR_NOSUID;
  if (f & MS_NODEV) a |= MOUNT_ATTR_NODEV;
  if (f & MS_NOEXEC) a |= MOUNT_ATTR_NOEXEC;
  if (f & MS_NODIRATIME) a |= MOUNT_ATTR_NODIRATIME;
  if (f & MS_NOSYMFOLLOW) a |= MOUNT_ATTR_NOSYMFOLLOW;
  return a;
}

// The atime mode is one field, not independent bits.
void atime_attr(unsigned long f, struct mount_attr& a) {
  if (f & MS_NOATIME)
    a.attr_set |= MOUNT_ATTR_NOATIME, a.attr_clr |= MOUNT_ATTR__ATIME;
  else if (f & MS_STRICTATIME)
    a.attr_set |= MOUNT_ATTR_STRICTATIME, a.attr_clr |= MOUNT_ATTR__ATIME;
  else if (f & MS_RELATIME)
    a.attr_set |= MOUNT_ATTR_RELATIME, a.attr_clr |= MOUNT_ATTR__ATIME;
}

Result<> move_onto(int tree_fd, int target_fd, const std::string& dest) {
  if (::move_mount(tree_fd, "", target_fd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
    return sys_error("mount on " + dest);
  return {};
}

// A user namespace with the given maps, held by a short-lived child, for idmapped
// mounts. We may already be in the container's new pid namespace while /proc is
// still the host's: the child tells its pid as that /proc knows it.
Result<UniqueFd> userns_with_maps(const std::vector<oci::IdMapping>& uids, const std::vector<oci::IdMapping>& gids) {
  int go[2], back[2];
  if (::pipe2(go, O_CLOEXEC) < 0) return sys_error("pipe");
  UniqueFd go_rd(go[0]), go_wr(go[1]);
  if (::pipe2(back, O_CLOEXEC) < 0) return sys_error("pipe");
  UniqueFd back_rd(back[0]), back_wr(back[1]);
  struct clone_args ca = {};
  ca.flags = CLONE_NEWUSER;
  ca.exit_signal = SIGCHLD;
  long pid = sys::clone3(&ca);
  if (pid < 0) return sys_error("clone user namespace for idmap");
  if (pid == 0) {
    go_wr.reset();
    back_rd.reset();
    char self[64] = {};
    ssize_t n = ::readlink("/proc/self", self, sizeof self - 1);
    (void)!::write(back_wr.get(), self, n > 0 ? static_cast<size_t>(n) : 0);
    back_wr.reset();
    char c;
    (void)!::read(go_rd.get(), &c, 1);
    _exit(0);
  }
  back_wr.reset();
  go_rd.reset();
  char self[64] = {};
  ssize_t n = ::read(back_rd.get(), self, sizeof self - 1);
  pid_t seen = n > 0 ? static_cast<pid_t>(std::atoi(self)) : 0;
  Result<> maps = seen > 0 ? write_id_maps(seen, uids, gids, true) : fail("idmap helper did not report its pid");
  UniqueFd ns;
  int e = 0;
  if (maps) {
    ns.reset(::open(("/proc/" + std::to_string(seen) + "/ns/user").c_str(), O_RDONLY | O_CLOEXEC));
    e = errno;
  }
  go_wr.reset();
  ::waitpid(static_cast<pid_t>(pid), nullptr, 0);
  if (!maps) return std::unexpected(std::move(maps).error());
  if (!ns) return sys_error(e, "open idmap user namespace");
  return ns;
}

class RootfsBuilder {
 public:
  explicit RootfsBuilder(const RootfsPlan& p) : plan_(p), spec_(*p.spec) {}

  Result<> run() {
    TRY(set_propagation());
    TRY(bind_rootfs());
    bool dev_is_bind = false;
    for (auto& m : spec_.mounts) {
      TRY(mount_one(m));
      if (clean_path(m.destination) == "/dev" && is_bind(m)) dev_is_bind = true;
    }
    if (!dev_is_bind) TRY(setup_dev());
    return {};
  }

 private:
  static bool is_bind(const oci::Mount& m) {
    if (m.type == "bind") return true;
    for (auto& o : m.options)
      if (o == "bind" || o == "rbind") return true;
    return false;
  }

  Result<> set_propagation() {
    // Nothing we mount may propagate back to the host: start from rslave, then
    // apply a stricter setting if asked. "shared" is restored after pivot_root.
    if (::mount(nullptr, "/", nullptr, MS_SLAVE | MS_REC, nullptr) < 0)
      return sys_error("make / rslave");
    const std::string& p = spec_.linux ? spec_.linux->rootfs_propagation : std::string();
    for (auto& pr : kProps)
      if (p == pr.name && !(pr.flag & (MS_SHARED | MS_SLAVE)))
        if (::mount(nullptr, "/", nullptr, pr.flag, nullptr) < 0)
          return sys_error("linux.rootfsPropagation " + p);
    return {};
  }

  Result<> bind_rootfs() {
    struct stat st;
    if (::stat(plan_.rootfs.c_str(), &st) < 0) return sys_error("root.path " + plan_.rootfs);
    if (!S_ISDIR(st.st_mode)) return fail("root.path " + plan_.rootfs + ": not a directory");
    if (::mount(plan_.rootfs.c_str(), plan_.rootfs.c_str(), nullptr, MS_BIND | MS_REC, nullptr) < 0)
      return sys_error("bind mount rootfs " + plan_.rootfs);
    root_.reset(::open(plan_.rootfs.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!root_) return sys_error("open rootfs " + plan_.rootfs);
    return {};
  }

  // Mounts under /proc are limited to what lxcfs and friends need: regular files
  // bind-mounted over a few well-known files. Anything else could hide or redirect
  // the kernel interfaces the runtime itself writes (CVE-2019-16884 class).
  Result<> check_proc_dest(const std::string& dest, const oci::Mount& m, bool bind) {
    if (dest == "/proc") {
      if (m.type != "proc") return fail("mount " + dest + ": only a proc filesystem may be mounted on /proc");
      return {};
    }
    if (dest.rfind("/proc/", 0) != 0) return {};
    static const std::set<std::string> allowed = {
        "/proc/cpuinfo", "/proc/diskstats", "/proc/meminfo", "/proc/stat", "/proc/swaps",
        "/proc/uptime",  "/proc/loadavg",   "/proc/slabinfo", "/proc/net/dev",
        "/proc/sys/kernel/ns_last_pid"};
    if (bind && allowed.count(dest)) return {};
    return fail("mount " + dest + ": mounts under /proc are not allowed");
  }

  Result<UniqueFd> dest_fd(const std::string& dest, bool dir, unsigned long long resolve_extra) {
    auto fd = ensure_in_root(root_.get(), dest, dir);
    if (!fd) return std::unexpected(std::move(fd).error().context("mount destination " + dest));
    if (resolve_extra) {
      // Re-open refusing symlinks anywhere on the way: /proc and /sys must be the
      // real directories, not links planted by the image.
      auto strict = open_in_root(root_.get(), dest, O_PATH | O_DIRECTORY, resolve_extra);
      if (!strict) return fail("mount destination " + dest + ": must be a real directory, not a symlink");
      return strict;
    }
    return fd;
  }

  Result<> mount_one(const oci::Mount& m) {
    std::string dest = clean_path("/" + m.destination);
    MountOptions o = TRY_CTX(parse_mount_options(m.options), "mount " + dest);
    bool bind = o.bind || m.type == "bind";
    TRY(check_proc_dest(dest, m, bind));
    if (bind) return mount_bind(m, dest, o);
    if (m.type == "cgroup" || m.type == "cgroup2") return mount_cgroup(m, dest, o);
    if (o.idmap || o.ridmap) return fail("mount " + dest + ": idmap is only supported on bind mounts");
    bool strict = m.type == "proc" || m.type == "sysfs";
    UniqueFd target = TRY(dest_fd(dest, true, strict ? RESOLVE_NO_SYMLINKS : 0));
    UniqueFd copy_from;
    if (o.tmpcopyup) {
      if (m.type != "tmpfs") return fail("mount " + dest + ": tmpcopyup needs a tmpfs");
      copy_from = TRY(open_in_root(root_.get(), dest, O_RDONLY | O_DIRECTORY));
    }
    unsigned long flags = o.flags & ~MS_REMOUNT;
    std::string src = m.source.empty() ? m.type : m.source;
    if (::mount(src.c_str(), fd_path(target.get()).c_str(), m.type.c_str(), flags,
                o.data.empty() ? nullptr : o.data.c_str()) < 0)
      return sys_error("mount " + m.type + " on " + dest);
    if (o.propagation &&
        ::mount(nullptr, fd_path(TRY(open_in_root(root_.get(), dest, O_PATH)).get()).c_str(), nullptr,
                o.propagation, nullptr) < 0)
      return sys_error("set propagation of " + dest);
    if (m.type == "proc" || m.type == "sysfs") {
      UniqueFd now = TRY(open_in_root(root_.get(), dest, O_PATH | O_DIRECTORY, RESOLVE_NO_SYMLINKS));
      long magic = m.type == "proc" ? PROC_SUPER_MAGIC : SYSFS_MAGIC;
      if (!is_fs_magic(now.get(), magic)) return fail("mount " + m.type + " on " + dest + ": destination was swapped");
    }
    if (copy_from) TRY_CTX(copy_tree(copy_from.get(), TRY(open_in_root(root_.get(), dest, O_RDONLY | O_DIRECTORY)).get()),
                           "tmpcopyup " + dest);
    return {};
  }

  Result<> mount_bind(const oci::Mount& m, const std::string& dest, const MountOptions& o) {
    if (m.source.empty()) return fail("mount " + dest + ": a bind mount needs a source");
    struct stat st;
    if (::stat(m.source.c_str(), &st) < 0) return sys_error("mount source " + m.source);
    UniqueFd tree(::open_tree(AT_FDCWD, m.source.c_str(),
                              OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (o.recursive ? AT_RECURSIVE : 0)));
    if (!tree) return sys_error("bind mount source " + m.source);
    // Flags land on the detached copy before it becomes visible: no window in
    // which the container sees it writable.
    struct mount_attr top = {};
    top.attr_set = attr_from_flags(o.flags);
    top.attr_clr = attr_from_flags(o.clear);
    atime_attr(o.flags, top);
    if (o.propagation && !(o.propagation & MS_REC)) top.propagation = o.propagation;
    if (o.idmap || o.ridmap) {
      if (plan_.new_userns) return fail("mount " + dest + ": idmapped mounts inside a new user namespace are not supported");
      auto uids = m.uid_mappings.empty() && spec_.linux ? spec_.linux->uid_mappings : std::vector<oci::IdMapping>{};
      auto gids = m.gid_mappings.empty() && spec_.linux ? spec_.linux->gid_mappings : std::vector<oci::IdMapping>{};
      for (auto& e : m.uid_mappings) uids.push_back({e.container_id, e.host_id, e.size});
      for (auto& e : m.gid_mappings) gids.push_back({e.container_id, e.host_id, e.size});
      if (uids.empty() || gids.empty()) return fail("mount " + dest + ": idmap needs uidMappings and gidMappings");
      userns_ = TRY_CTX(userns_with_maps(uids, gids), "mount " + dest);
    }
    if (o.ridmap) {
      struct mount_attr id = {};
      id.attr_set = MOUNT_ATTR_IDMAP;
      id.userns_fd = static_cast<uint64_t>(userns_.get());
      if (::mount_setattr(tree.get(), "", AT_EMPTY_PATH | AT_RECURSIVE, &id, sizeof id) < 0)
        return sys_error("mount " + dest + ": ridmap");
    } else if (o.idmap) {
      top.attr_set |= MOUNT_ATTR_IDMAP;
      top.userns_fd = static_cast<uint64_t>(userns_.get());
    }
    if ((top.attr_set || top.attr_clr || top.propagation) &&
        ::mount_setattr(tree.get(), "", AT_EMPTY_PATH, &top, sizeof top) < 0)
      return sys_error("mount " + dest + ": set options");
    if (o.rec_attr_set || o.rec_attr_clr || (o.propagation & MS_REC)) {
      struct mount_attr rec = {};
      rec.attr_set = o.rec_attr_set;
      rec.attr_clr = o.rec_attr_clr;
      if (o.rec_attr_set & (MOUNT_ATTR_NOATIME | MOUNT_ATTR_STRICTATIME | MOUNT_ATTR_RELATIME))
        rec.attr_clr |= MOUNT_ATTR__ATIME;
      if (o.propagation & MS_REC) rec.propagation = o.propagation & ~MS_REC;
      if (::mount_setattr(tree.get(), "", AT_EMPTY_PATH | AT_RECURSIVE, &rec, sizeof rec) < 0)
        return sys_error("mount " + dest + ": set recursive options");
    }
    UniqueFd target = TRY(dest_fd(dest, S_ISDIR(st.st_mode), 0));
    struct stat tst;
    if (::fstat(target.get(), &tst) == 0 && S_ISDIR(tst.st_mode) != S_ISDIR(st.st_mode))
      return fail("mount " + dest + ": source and destination are not both directories or both files");
    return move_onto(tree.get(), target.get(), dest);
  }

  // A cgroup mount shows the container its own cgroup: a fresh cgroup filesystem
  // inside a cgroup namespace, otherwise a bind of the container's directory.
  Result<> mount_cgroup(const oci::Mount&, const std::string& dest, const MountOptions& o) {
    if (plan_.before_cgroup_mount) TRY(plan_.before_cgroup_mount());
    if (!plan_.cgroup_layout) return {};
    const auto& layout = *plan_.cgroup_layout;
    UniqueFd target = TRY(dest_fd(dest, true, RESOLVE_NO_SYMLINKS));
    unsigned long flags = (o.flags & ~(MS_RDONLY | MS_REMOUNT)) | MS_NOSUID | MS_NODEV | MS_NOEXEC;
    if (layout.mode == cgroup::Mode::unified) {
      if (plan_.new_cgroupns) {
        if (::mount("cgroup2", fd_path(target.get()).c_str(), "cgroup2", flags | (o.flags & MS_RDONLY), nullptr) < 0)
          return sys_error("mount cgroup2 on " + dest);
        return {};
      }
      return bind_host_dir(layout.unified_root + plan_.cgroup_path, dest, o.flags & MS_RDONLY);
    }
    if (::mount("tmpfs", fd_path(target.get()).c_str(), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=755") < 0)
      return sys_error("mount tmpfs on " + dest);
    UniqueFd tmp = TRY(open_in_root(root_.get(), dest, O_RDONLY | O_DIRECTORY, RESOLVE_NO_SYMLINKS));
    for (auto& h : layout.v1) {
      // A hierarchy the container is not in (an optional one it asked nothing
      // of: cgroup/v1.cc) is not shown: its cgroup there is its parent's.
      if (!path_exists(h.mountpoint + plan_.cgroup_path)) continue;
      std::string name = h.mountpoint.substr(h.mountpoint.find_last_of('/') + 1);
      std::string sub = dest + "/" + name;
      if (::mkdirat(tmp.get(), name.c_str(), 0755) < 0 && errno != EEXIST) return sys_error("mkdir " + sub);
      if (plan_.new_cgroupns) {
        std::string data;
        for (auto& c : h.controllers) data += (data.empty() ? "" : ",") + c;
        if (data.rfind("name=", 0) == 0) data = "none," + data;
        UniqueFd t = TRY(open_in_root(root_.get(), sub, O_PATH | O_DIRECTORY, RESOLVE_NO_SYMLINKS));
        if (::mount("cgroup", fd_path(t.get()).c_str(), "cgroup", flags | (o.flags & MS_RDONLY), data.c_str()) < 0)
          return sys_error("mount cgroup " + data + " on " + sub);
      } else {
        TRY(bind_host_dir(h.mountpoint + plan_.cgroup_path, sub, o.flags & MS_RDONLY));
      }
      // "cpu,cpuacct" is also reachable as "cpu" and "cpuacct", as on the host.
      if (h.controllers.size() > 1)
        for (auto& c : h.controllers)
          if (c != name && c.rfind("name=", 0) != 0) (void)!::symlinkat(name.c_str(), tmp.get(), c.c_str());
    }
    if (o.flags & MS_RDONLY) {
      UniqueFd t = TRY(open_in_root(root_.get(), dest, O_PATH | O_DIRECTORY, RESOLVE_NO_SYMLINKS));
      struct mount_attr a = {};
      a.attr_set = MOUNT_ATTR_RDONLY;
      if (::mount_setattr(t.get(), "", AT_EMPTY_PATH, &a, sizeof a) < 0) return sys_error("remount " + dest + " read-only");
    }
    return {};
  }

  Result<> bind_host_dir(const std::string& src, const std::string& dest, bool ro) {
    UniqueFd tree(::open_tree(AT_FDCWD, src.c_str(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE));
    if (!tree) return sys_error("bind " + src);
    if (ro) {
      struct mount_attr a = {};
      a.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
      if (::mount_setattr(tree.get(), "", AT_EMPTY_PATH | AT_RECURSIVE, &a, sizeof a) < 0)
        return sys_error("bind " + src + " read-only");
    }
    UniqueFd target = TRY(dest_fd(dest, true, RESOLVE_NO_SYMLINKS));
    return move_onto(tree.get(), target.get(), dest);
  }

  // Copies the directory tree at `from` into `to` (tmpcopyup): regular files,
  // directories and symlinks, with modes and owners, never following a link.
  Result<> copy_tree(int from, int to) {
    DIR* d = ::fdopendir(::dup(from));
    if (!d) return sys_error("opendir");
    Result<> r;
    while (auto* e = ::readdir(d)) {
      std::string_view n(e->d_name);
      if (n == "." || n == "..") continue;
      struct stat st;
      if (::fstatat(from, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) continue;
      if (S_ISDIR(st.st_mode)) {
        ::mkdirat(to, e->d_name, st.st_mode & 07777);
        UniqueFd sf(::openat(from, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        UniqueFd df(::openat(to, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (sf && df) r = copy_tree(sf.get(), df.get());
      } else if (S_ISLNK(st.st_mode)) {
        char buf[4096];
        ssize_t len = ::readlinkat(from, e->d_name, buf, sizeof buf - 1);
        if (len >= 0) {
          buf[len] = 0;
          (void)!::symlinkat(buf, to, e->d_name);
        }
      } else if (S_ISREG(st.st_mode)) {
        UniqueFd sf(::openat(from, e->d_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
        UniqueFd df(::openat(to, e->d_name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, st.st_mode & 07777));
        if (sf && df) {
          auto data = read_fd(sf.get());
          if (data) r = write_fd(df.get(), *data);
        }
      }
      ::fchownat(to, e->d_name, st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW);
      if (!r) break;
    }
    ::closedir(d);
    return r;
  }

  Result<> setup_dev() {
    auto dev = mkdir_in_root(root_.get(), "/dev");
    if (!dev) return std::unexpected(std::move(dev).error().context("create /dev"));
    struct DefaultDev {
      const char* path;
      unsigned major, minor;
    };
    static const DefaultDev defaults[] = {{"/dev/null", 1, 3},    {"/dev/zero", 1, 5},  {"/dev/full", 1, 7},
                                          {"/dev/random", 1, 8},  {"/dev/urandom", 1, 9}, {"/dev/tty", 5, 0}};
    std::set<std::string> configured;
    if (spec_.linux)
      for (auto& d : spec_.linux->devices) configured.insert(clean_path(d.path));
    UniqueFd devfd = TRY(open_in_root(root_.get(), "/dev", O_RDONLY | O_DIRECTORY, RESOLVE_NO_SYMLINKS));
    // Nodes are made with their modes exactly (as runc does): no chmod after.
    struct Umask {
      mode_t old = ::umask(0);
      ~Umask() { ::umask(old); }
    } zero_umask;
    for (auto& d : defaults) {
      if (configured.count(d.path)) continue;
      oci::Device dv{"c", d.path, d.major, d.minor, 0666, 0u, 0u};
      TRY(create_device(dv, devfd.get()));
    }
    if (spec_.linux)
      for (auto& d : spec_.linux->devices) TRY(create_device(d, devfd.get()));
    static const std::pair<const char*, const char*> links[] = {
        {"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"}, {"/proc/self/fd/1", "stdout"},
        {"/proc/self/fd/2", "stderr"}};
    for (auto& [target, name] : links)
      if (::symlinkat(target, devfd.get(), name) < 0 && errno != EEXIST) return sys_error(std::string("symlink /dev/") + name);
    if (::access("/proc/kcore", F_OK) == 0) (void)!::symlinkat("/proc/kcore", devfd.get(), "core");
    // /dev/ptmx must lead to the container's own devpts instance.
    struct stat st;
    if (::fstatat(devfd.get(), "ptmx", &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISLNK(st.st_mode))
      ::unlinkat(devfd.get(), "ptmx", 0);
    if (::symlinkat("pts/ptmx", devfd.get(), "ptmx") < 0 && errno != EEXIST) return sys_error("symlink /dev/ptmx");
    return {};
  }

  // `dev`: the container's /dev, open, for a node directly in it; the umask
  // is 0 (setup_dev).
  Result<> create_device(const oci::Device& d, int dev) {
    std::string path = clean_path(d.path);
    if (path.rfind("/dev/", 0) != 0) return fail("linux.devices: " + path + " is not under /dev");
    auto slash = path.find_last_of('/');
    UniqueFd pdir;
    if (slash != 4) {
      UniqueFd parent = TRY(mkdir_in_root(root_.get(), path.substr(0, slash)));
      pdir.reset(::openat(parent.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      if (!pdir) return sys_error("open " + path.substr(0, slash));
      dev = pdir.get();
    }
    std::string name = path.substr(slash + 1);
    mode_t type = d.type == "b" ? S_IFBLK : d.type == "p" ? S_IFIFO : S_IFCHR;
    mode_t mode = d.file_mode ? (*d.file_mode & 07777) : 0666;
    dev_t rdev = makedev(static_cast<unsigned>(d.major), static_cast<unsigned>(d.minor));
    if (plan_.new_userns && type != S_IFIFO) {
      // mknod is not allowed in a user namespace: bind the host's node instead.
      UniqueFd f(::openat(dev, name.c_str(), O_CREAT | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0));
      if (!f && errno != EEXIST) return sys_error("create " + path);
      UniqueFd tree(::open_tree(AT_FDCWD, path.c_str(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC));
      if (!tree) return sys_error("bind host device " + path);
      UniqueFd target = TRY(open_in_root(root_.get(), path, O_PATH | O_NOFOLLOW));
      return move_onto(tree.get(), target.get(), path);
    }
    // Whatever the image had there goes (a node is made anew, never reused).
    if (::mknodat(dev, name.c_str(), type | mode, rdev) < 0) {
      if (errno != EEXIST) return sys_error("mknod " + path);
      ::unlinkat(dev, name.c_str(), 0);
      if (::mknodat(dev, name.c_str(), type | mode, rdev) < 0) return sys_error("mknod " + path);
    }
    // A set-id bit may be dropped as the node is made (inode_init_owner):
    // set again (the name is the node just made, not a symlink).
    if ((mode & 07000) && ::fchmodat(dev, name.c_str(), mode, 0) < 0) return sys_error("chmod " + path);
    if (::fchownat(dev, name.c_str(), d.uid.value_or(0), d.gid.value_or(0), AT_SYMLINK_NOFOLLOW) < 0)
      return sys_error("chown " + path);
    return {};
  }

  const RootfsPlan& plan_;
  const oci::Spec& spec_;
  UniqueFd root_;
  UniqueFd userns_;
};

}  // namespace

Result<MountOptions> parse_mount_options(const std::vector<std::string>& opts) {
  MountOptions o;
  for (auto& opt : opts) {
    bool known = false;
    if (opt == "bind" || opt == "rbind") {
      o.bind = true;
      o.recursive = o.recursive || opt == "rbind";
      continue;
    }
    if (opt == "idmap") o.idmap = known = true;
    if (opt == "ridmap") o.ridmap = known = true;
    if (opt == "tmpcopyup") o.tmpcopyup = known = true;
    for (auto& f : kFlags)
      if (opt == f.name) {
        known = true;
        if (f.clear)
          o.flags &= ~f.flag, o.clear |= f.flag;
        else
          o.flags |= f.flag, o.clear &= ~f.flag;
      }
    for (auto& p : kProps)
      if (opt == p.name) known = true, o.propagation = p.flag;
    for (auto& r : kRec)
      if (opt == r.name) {
        known = true;
        if (r.clear)
          o.rec_attr_clr |= r.attr, o.rec_attr_set &= ~r.attr;
        else
          o.rec_attr_set |= r.attr, o.rec_attr_clr &= ~r.attr;
      }
    if (!known) {
      if (opt.find(',') != std::string::npos) return fail("invalid option \"" + opt + "\"");
      o.data += (o.data.empty() ? "" : ",") + opt;
    }
  }
  return o;
}

Result<> setup_rootfs(const RootfsPlan& plan) {
  RootfsBuilder b(plan);
  return b.run();
}

Result<> enter_rootfs(const RootfsPlan& plan) {
  if (::chdir(plan.rootfs.c_str()) < 0) return sys_error("chdir " + plan.rootfs);
  if (plan.no_pivot) {
    if (::mount(plan.rootfs.c_str(), "/", nullptr, MS_MOVE, nullptr) < 0) return sys_error("move rootfs to /");
    if (::chroot(".") < 0) return sys_error("chroot");
  } else {
    // pivot_root(".", ".") stacks the old root on top of the new one; detaching it
    // then leaves only the rootfs. The old root must not propagate the detach
    // back to the host.
    if (sys::pivot_root(".", ".") < 0) return sys_error("pivot_root " + plan.rootfs);
    if (::mount(nullptr, ".", nullptr, MS_SLAVE | MS_REC, nullptr) < 0) return sys_error("make old root rslave");
    if (::umount2(".", MNT_DETACH) < 0) return sys_error("detach old root");
  }
  if (::chdir("/") < 0) return sys_error("chdir /");
  return {};
}

Result<> finish_rootfs(const RootfsPlan& plan) {
  const oci::Spec& spec = *plan.spec;
  UniqueFd root(::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root) return sys_error("open /");
  if (spec.linux) {
    // A masked file is covered by the real /dev/null only: check that the node we
    // are about to bind is char 1:3, not something the image planted (CVE-2025-31133).
    UniqueFd devnull;
    auto get_devnull = [&]() -> Result<int> {
      if (devnull) return devnull.get();
      devnull = TRY(open_in_root(root.get(), "/dev/null", O_PATH, RESOLVE_NO_SYMLINKS));
      struct stat st;
      if (::fstat(devnull.get(), &st) < 0 || !S_ISCHR(st.st_mode) || st.st_rdev != makedev(1, 3))
        return fail("/dev/null in the container is not the null device (char 1:3)");
      return devnull.get();
    };
    for (auto& p : spec.linux->masked_paths) {
      auto target = open_in_root(root.get(), p, O_PATH);
      if (!target) {
        if (target.error().err == ENOENT || target.error().err == ENOTDIR) continue;
        return std::unexpected(std::move(target).error().context("linux.maskedPaths"));
      }
      struct stat st;
      if (::fstat(target->get(), &st) < 0) return sys_error("stat masked path " + p);
      if (S_ISDIR(st.st_mode)) {
        UniqueFd fs(::fsopen("tmpfs", FSOPEN_CLOEXEC));
        if (!fs) return sys_error("fsopen tmpfs");
        if (::fsconfig(fs.get(), FSCONFIG_SET_FLAG, "ro", nullptr, 0) < 0 ||
            ::fsconfig(fs.get(), FSCONFIG_SET_STRING, "size", "0", 0) < 0 ||
            ::fsconfig(fs.get(), FSCONFIG_CMD_CREATE, nullptr, nullptr, 0) < 0)
          return sys_error("create tmpfs to mask " + p);
        UniqueFd mnt(::fsmount(fs.get(), FSMOUNT_CLOEXEC, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC));
        if (!mnt) return sys_error("fsmount tmpfs to mask " + p);
        TRY_CTX(move_onto(mnt.get(), target->get(), p), "linux.maskedPaths");
      } else {
        int dn = TRY(get_devnull());
        UniqueFd tree(::open_tree(dn, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH));
        if (!tree) return sys_error("clone /dev/null to mask " + p);
        TRY_CTX(move_onto(tree.get(), target->get(), p), "linux.maskedPaths");
      }
    }
    for (auto& p : spec.linux->readonly_paths) {
      auto target = open_in_root(root.get(), p, O_PATH);
      if (!target) {
        if (target.error().err == ENOENT || target.error().err == ENOTDIR) continue;
        return std::unexpected(std::move(target).error().context("linux.readonlyPaths"));
      }
      UniqueFd tree(::open_tree(target->get(), "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH | AT_RECURSIVE));
      if (!tree) return sys_error("clone read-only path " + p);
      struct mount_attr a = {};
      a.attr_set = MOUNT_ATTR_RDONLY;
      if (::mount_setattr(tree.get(), "", AT_EMPTY_PATH | AT_RECURSIVE, &a, sizeof a) < 0)
        return sys_error("make " + p + " read-only");
      TRY_CTX(move_onto(tree.get(), target->get(), p), "linux.readonlyPaths");
    }
  }
  if (spec.root_readonly) {
    struct mount_attr a = {};
    a.attr_set = MOUNT_ATTR_RDONLY;
    if (::mount_setattr(AT_FDCWD, "/", 0, &a, sizeof a) < 0) return sys_error("make rootfs read-only");
  }
  if (spec.linux) {
    const std::string& p = spec.linux->rootfs_propagation;
    if (p == "shared" || p == "rshared")
      if (::mount(nullptr, "/", nullptr, MS_SHARED | (p == "rshared" ? MS_REC : 0), nullptr) < 0)
        return sys_error("linux.rootfsPropagation " + p);
  }
  return {};
}

Result<> bind_console(int slave_fd) {
  UniqueFd root(::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
  UniqueFd dev = TRY(open_in_root(root.get(), "/dev", O_RDONLY | O_DIRECTORY, RESOLVE_NO_SYMLINKS));
  struct stat st;
  if (::fstatat(dev.get(), "console", &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISREG(st.st_mode))
    ::unlinkat(dev.get(), "console", 0);
  UniqueFd f(::openat(dev.get(), "console", O_CREAT | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!f && errno != EEXIST) return sys_error("create /dev/console");
  UniqueFd target(::openat(dev.get(), "console", O_PATH | O_NOFOLLOW | O_CLOEXEC));
  if (!target) return sys_error("open /dev/console");
  UniqueFd tree(::open_tree(slave_fd, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH));
  if (!tree) return sys_error("clone console pty");
  return move_onto(tree.get(), target.get(), "/dev/console");
}

}  // namespace berth::runtime
