#include "engine/volumes.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/random.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>

#include "image/db.h"
#include "runtime/mounts.h"
#include "util/fs.h"

namespace berth::engine {

using json = nlohmann::json;
using image::Row;
using StringMap = std::map<std::string, std::string>;

namespace {

// Docker 23+ marks anonymous volumes so that `volume prune` (without -a) removes only them.
constexpr const char* kAnonymousLabel = "com.docker.volume.anonymous";
constexpr const char* kVolumeColumns = "name, created, labels, options, anonymous";

std::string hex_name() {
  unsigned char b[32];
  (void)::getrandom(b, sizeof b, 0);
  std::string s;
  char two[3];
  for (unsigned char c : b) std::snprintf(two, sizeof two, "%02x", c), s += two;
  return s;
}

// The local driver's rule: [a-zA-Z0-9][a-zA-Z0-9_.-]+
Result<> check_name(const std::string& n) {
  if (n.size() < 2) return fail("volume name is too short, names should be at least two alphanumeric characters");
  auto ok = [](char c, bool first) {
    return std::isalnum(static_cast<unsigned char>(c)) || (!first && (c == '_' || c == '.' || c == '-'));
  };
  for (size_t i = 0; i < n.size(); ++i)
    if (!ok(n[i], i == 0))
      return fail("\"" + n + "\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" "
                  "are allowed. If you intended to pass a host directory, use absolute path");
  return {};
}

// The local driver's options: a filesystem to mount on the volume's directory.
Result<> check_options(const StringMap& o) {
  for (auto& [k, v] : o)
    if (k != "type" && k != "device" && k != "o") return fail("invalid option: \"" + k + "\"");
  bool type = o.contains("type") && !o.at("type").empty(), device = o.contains("device") && !o.at("device").empty();
  if (type != device) return fail(std::string("missing required option: \"") + (type ? "device" : "type") + "\"");
  return {};
}

// The string members of a JSON object (labels, options).
StringMap to_map(const json& j) {
  StringMap out;
  if (j.is_object())
    for (auto& [k, v] : j.items())
      if (v.is_string()) out[k] = v.get<std::string>();
  return out;
}
StringMap to_map(const std::string& text) { return to_map(json::parse(text, nullptr, false)); }

// An exclusive flock on a directory for as long as the fd lives.
Result<UniqueFd> lock_dir(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return sys_error("open " + path);
  int rc;
  do rc = ::flock(fd.get(), LOCK_EX);
  while (rc < 0 && errno == EINTR);
  if (rc < 0) return sys_error("lock " + path);
  return fd;
}

// A volume made with --opt type=...,device=...: its filesystem, mounted on
// _data when a container first takes it; it stays until the volume goes.
Result<> mount_options(const Volume& v) {
  if (v.options.empty() || is_mount_root(v.mountpoint)) return {};
  std::vector<std::string> opts;
  if (auto it = v.options.find("o"); it != v.options.end())
    for (auto& o : split(it->second, ','))
      if (!o.empty()) opts.push_back(o);
  runtime::MountOptions mo = TRY_CTX(runtime::parse_mount_options(opts), "volume " + v.name + ": o");
  unsigned long flags = mo.flags | (mo.bind ? MS_BIND | (mo.recursive ? MS_REC : 0) : 0);
  std::string type = v.options.contains("type") ? v.options.at("type") : "", device = v.options.at("device");
  if (::mount(device.c_str(), v.mountpoint.c_str(), type.empty() ? nullptr : type.c_str(), flags,
              mo.data.empty() ? nullptr : mo.data.c_str()) < 0)
    return sys_error("volume " + v.name + ": mount " + device);
  return {};
}

// The bytes of the regular files under `path` (each inode once), as Docker counts a volume.
uint64_t tree_bytes(const std::string& path) {
  static thread_local uint64_t total;
  static thread_local std::set<std::pair<dev_t, ino_t>>* seen;
  std::set<std::pair<dev_t, ino_t>> inodes;
  total = 0;
  seen = &inodes;
  ::nftw(
      path.c_str(),
      [](const char*, const struct stat* st, int type, struct FTW*) {
        if (type == FTW_F && S_ISREG(st->st_mode) && seen->insert({st->st_dev, st->st_ino}).second)
          total += static_cast<uint64_t>(st->st_size);
        return 0;
      },
      32, FTW_PHYS | FTW_MOUNT);
  return total;
}

bool dir_is_empty(int fd) {
  DIR* d = ::fdopendir(::dup(fd));
  if (!d) return false;
  ::rewinddir(d);
  bool empty = true;
  while (auto* e = ::readdir(d))
    if (std::string_view(e->d_name) != "." && std::string_view(e->d_name) != "..") {
      empty = false;
      break;
    }
  ::closedir(d);
  return empty;
}

// Docker's copy of an image directory into a volume: regular files, directories,
// symlinks (as links), device nodes and fifos, hard links kept as links, with
// owners, modes, extended attributes (file capabilities) and times. Every name
// is opened relative to its parent's fd with O_NOFOLLOW: no link is followed on
// either side.
class TreeCopy {
 public:
  Result<> contents(int from, int to, const std::string& where) {
    std::unique_ptr<DIR, int (*)(DIR*)> d(::fdopendir(::dup(from)), ::closedir);
    if (!d) return sys_error("read " + where);
    ::rewinddir(d.get());
    while (auto* e = ::readdir(d.get())) {
      std::string_view n(e->d_name);
      if (n == "." || n == "..") continue;
      struct stat st;
      std::string path = where + "/" + e->d_name;
      if (::fstatat(from, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) return sys_error("stat " + path);
      TRY(entry(from, to, e->d_name, st, path));
    }
    return {};
  }

  // The owner, mode, extended attributes and times of `st` on `to` (after
  // chown, which clears set-id bits and security.capability).
  static Result<> attributes(int from, int to, const struct stat& st, const std::string& where) {
    if (::fchown(to, st.st_uid, st.st_gid) < 0) return sys_error("chown " + where);
    if (::fchmod(to, st.st_mode & 07777) < 0) return sys_error("chmod " + where);
    ssize_t len = ::flistxattr(from, nullptr, 0);
    std::string names(len > 0 ? static_cast<size_t>(len) : 0, '\0');
    if (len > 0 && (len = ::flistxattr(from, names.data(), names.size())) > 0) {
      for (size_t at = 0; at < static_cast<size_t>(len); at = names.find('\0', at) + 1) {
        const char* name = names.c_str() + at;
        ssize_t vlen = ::fgetxattr(from, name, nullptr, 0);
        if (vlen < 0) continue;
        std::string value(static_cast<size_t>(vlen), '\0');
        vlen = ::fgetxattr(from, name, value.data(), value.size());
        // Attributes the volume's filesystem refuses (trusted.*, security
        // labels) are left out, as Docker's copy does.
        if (vlen >= 0) (void)::fsetxattr(to, name, value.data(), static_cast<size_t>(vlen), 0);
      }
    }
    struct timespec times[2] = {st.st_atim, st.st_mtim};
    if (::futimens(to, times) < 0) return sys_error("set times of " + where);
    return {};
  }

 private:
  Result<> entry(int from, int to, const char* name, const struct stat& st, const std::string& path) {
    const int nofollow = O_NOFOLLOW | O_CLOEXEC;
    struct timespec times[2] = {st.st_atim, st.st_mtim};
    switch (st.st_mode & S_IFMT) {
      case S_IFDIR: {
        if (::mkdirat(to, name, 0700) < 0) return sys_error("mkdir " + path);
        UniqueFd src(::openat(from, name, O_RDONLY | O_DIRECTORY | nofollow));
        UniqueFd dst(::openat(to, name, O_RDONLY | O_DIRECTORY | nofollow));
        if (!src || !dst) return sys_error("open " + path);
        TRY(contents(src.get(), dst.get(), path));
        return attributes(src.get(), dst.get(), st, path);
      }
      case S_IFREG: {
        std::pair<dev_t, ino_t> inode{st.st_dev, st.st_ino};
        if (auto it = links_.find(inode); it != links_.end()) {
          if (::linkat(AT_FDCWD, fd_path(it->second.get()).c_str(), to, name, AT_SYMLINK_FOLLOW) < 0)
            return sys_error("link " + path);
          return {};
        }
        UniqueFd src(::openat(from, name, O_RDONLY | nofollow));
        UniqueFd dst(::openat(to, name, O_WRONLY | O_CREAT | O_EXCL | nofollow, 0600));
        if (!src || !dst) return sys_error("open " + path);
        for (off_t left = st.st_size; left > 0;) {
          ssize_t n = ::sendfile(dst.get(), src.get(), nullptr, static_cast<size_t>(std::min<off_t>(left, 1 << 30)));
          if (n < 0 && errno == EINTR) continue;
          if (n < 0) return sys_error("copy " + path);
          if (n == 0) break;  // the file shrank
          left -= n;
        }
        TRY(attributes(src.get(), dst.get(), st, path));
        if (st.st_nlink > 1) links_.emplace(inode, std::move(dst));
        return {};
      }
      case S_IFLNK: {
        std::string target(static_cast<size_t>(st.st_size) + 1, '\0');
        ssize_t n = ::readlinkat(from, name, target.data(), target.size());
        if (n < 0) return sys_error("readlink " + path);
        target.resize(static_cast<size_t>(n));
        if (::symlinkat(target.c_str(), to, name) < 0) return sys_error("symlink " + path);
        break;
      }
      case S_IFCHR:
      case S_IFBLK:
      case S_IFIFO:
        if (::mknodat(to, name, st.st_mode & (S_IFMT | 07777), st.st_rdev) < 0) return sys_error("mknod " + path);
        break;
      default:
        return {};  // sockets belong to a process, not to an image
    }
    if (::fchownat(to, name, st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW) < 0) return sys_error("chown " + path);
    if (!S_ISLNK(st.st_mode) && ::fchmodat(to, name, st.st_mode & 07777, AT_SYMLINK_NOFOLLOW) < 0)
      return sys_error("chmod " + path);
    if (::utimensat(to, name, times, AT_SYMLINK_NOFOLLOW) < 0) return sys_error("set times of " + path);
    return {};
  }

  // The first copy of each multiply-linked file, to link the others to.
  std::map<std::pair<dev_t, ino_t>, UniqueFd> links_;
};

// Docker's copy-up: an empty volume mounted at `dest` gets what the image has
// there, and that directory's owner and mode. `dest` is resolved inside the
// rootfs (no link leads out of it).
Result<> copy_up(int rootfs_fd, const std::string& dest, const std::string& data) {
  auto src = open_in_root(rootfs_fd, dest, O_RDONLY | O_DIRECTORY);
  if (!src) {
    int e = src.error().err;
    return e == ENOENT || e == ENOTDIR ? Result<>{} : std::unexpected(std::move(src).error());
  }
  UniqueFd to(::open(data.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!to) return sys_error("open " + data);
  if (!dir_is_empty(to.get())) return {};
  struct stat st;
  if (::fstat(src->get(), &st) < 0) return sys_error("stat " + dest);
  TreeCopy copy;
  TRY(copy.contents(src->get(), to.get(), dest));
  return TreeCopy::attributes(src->get(), to.get(), st, dest);
}

// What a container asks for at one destination.
struct Want {
  MountPoint m;
  bool copy = true;       // copy-up into an empty volume (nocopy turns it off)
  bool inherited = false; // from --volumes-from: held, never filled
  StringMap labels, options;  // for a volume made here (--mount volume-label, volume-opt)
};

Result<std::string> absolute_target(const std::string& t, const std::string& what) {
  if (t.empty() || t[0] != '/') return fail(what + ": invalid mount path: '" + t + "' mount path must be absolute");
  std::string c = clean_path(t);
  if (c == "/") return fail(what + ": destination can't be '/'");
  return c;
}

Result<> bind_source(const std::string& s, const std::string& what) {
  struct stat st;
  if (::stat(s.c_str(), &st) != 0) return fail(what + ": bind source path does not exist: " + s);
  return {};
}

// -v [SOURCE:]DEST[:MODE]: a bind when SOURCE is absolute, else a volume
// (anonymous without SOURCE).
Result<Want> parse_bind(const std::string& spec) {
  std::string what = "-v \"" + spec + "\"";
  auto is_mode = [](const std::string& m) {
    for (auto& x : split(m, ','))
      if (x != "ro" && x != "rw" && x != "z" && x != "Z" && x != "nocopy" && x != "private" && x != "rprivate" &&
          x != "shared" && x != "rshared" && x != "slave" && x != "rslave")
        return false;
    return !m.empty();
  };
  auto p = split(spec, ':');
  Want w;
  std::string src, dst, mode;
  if (p.size() == 1) dst = p[0];
  else if (p.size() == 2 && is_mode(p[1])) dst = p[0], mode = p[1];
  else if (p.size() == 2) src = p[0], dst = p[1];
  else if (p.size() == 3) src = p[0], dst = p[1], mode = p[2];
  else return fail(what + ": invalid volume specification");
  if (!mode.empty() && !is_mode(mode)) return fail(what + ": invalid mode: " + mode);
  w.m.destination = TRY(absolute_target(dst, what));
  bool ro = false, rw = false;
  std::string propagation;
  for (auto& x : split(mode, ',')) {
    ro |= x == "ro";
    rw |= x == "rw";
    if (x == "nocopy") w.copy = false;
    if (x.find("private") != std::string::npos || x.find("shared") != std::string::npos ||
        x.find("slave") != std::string::npos)
      propagation = x;
  }
  if (ro && rw) return fail(what + ": invalid mode: " + mode);
  w.m.rw = !ro;
  w.m.mode = mode;
  if (!src.empty() && src[0] == '/') {
    if (!w.copy) return fail(what + ": nocopy applies to volumes only");
    TRY(bind_source(src, what));
    w.m.type = "bind";
    w.m.source = clean_path(src);
    w.m.propagation = propagation.empty() ? "rprivate" : propagation;
    return w;
  }
  if (!propagation.empty()) return fail(what + ": propagation applies to bind mounts only");
  if (!src.empty()) TRY_CTX(check_name(src), what);
  w.m.type = "volume";
  w.m.name = src;  // empty: anonymous
  if (w.m.mode.empty()) w.m.mode = "z";
  return w;
}

// One of HostConfig.Mounts (the API's form of --mount).
Result<Want> parse_mount(const json& j) {
  if (!j.is_object()) return fail("--mount: not an object");
  std::string type = j.value("Type", ""), src = j.value("Source", ""), target = j.value("Target", "");
  std::string what = "--mount type=" + type + ",target=" + target;
  Want w;
  w.m.type = type;
  w.m.destination = TRY(absolute_target(target, what));
  w.m.rw = !j.value("ReadOnly", false);
  auto has = [&](const char* k) { return j.contains(k) && j[k].is_object() && !j[k].empty(); };
  if (type == "bind") {
    if (has("VolumeOptions") || has("TmpfsOptions")) return fail(what + ": only bind options apply to a bind");
    if (src.empty() || src[0] != '/') return fail(what + ": the source must be an absolute host path");
    TRY(bind_source(src, what));
    w.m.source = clean_path(src);
    w.m.propagation = has("BindOptions") ? j["BindOptions"].value("Propagation", "") : "";
    if (w.m.propagation.empty()) w.m.propagation = "rprivate";
  } else if (type == "volume") {
    if (has("BindOptions") || has("TmpfsOptions")) return fail(what + ": only volume options apply to a volume");
    if (!src.empty()) TRY_CTX(check_name(src), what);
    w.m.name = src;
    json vo = j.value("VolumeOptions", json::object());
    if (!vo.is_object()) vo = json::object();
    w.copy = !vo.value("NoCopy", false);
    w.labels = to_map(vo.value("Labels", json::object()));
    json dc = vo.value("DriverConfig", json::object());
    if (!dc.is_object()) dc = json::object();
    std::string driver = dc.value("Name", "");
    if (!driver.empty() && driver != "local") return fail(what + ": plugin \"" + driver + "\" not found");
    w.options = to_map(dc.value("Options", json::object()));
    TRY_CTX(check_options(w.options), what);
  } else if (type == "tmpfs") {
    if (!src.empty()) return fail(what + ": a tmpfs has no source");
    if (has("BindOptions") || has("VolumeOptions")) return fail(what + ": only tmpfs options apply to a tmpfs");
    json to = j.value("TmpfsOptions", json::object());
    if (!to.is_object()) to = json::object();
    if (int64_t size = to.value("SizeBytes", int64_t{0}); size > 0) w.m.tmpfs_options.push_back("size=" + std::to_string(size));
    if (int64_t mode = to.value("Mode", int64_t{0}); mode > 0) {
      char m[16];
      std::snprintf(m, sizeof m, "mode=%llo", static_cast<unsigned long long>(mode) & 07777);
      w.m.tmpfs_options.push_back(m);
    }
  } else {
    return fail("--mount: mount type unknown: \"" + type + "\"");
  }
  return w;
}

json to_json(const MountPoint& m) {
  json j = {{"Type", m.type}, {"Source", m.source}, {"Destination", m.destination}, {"Mode", m.mode},
            {"RW", m.rw},     {"Propagation", m.propagation}};
  if (m.type == "volume") j["Name"] = m.name, j["Driver"] = "local";
  return j;
}

size_t depth(const std::string& path) { return static_cast<size_t>(std::count(path.begin(), path.end(), '/')); }

}  // namespace

Volumes::Volumes(image::Db& db, std::string root) : db_(db), root_(std::move(root)), dir_(root_ + "/volumes") {}

Result<Volume> Volumes::get(const std::string& name) {
  std::optional<Volume> out;
  TRY(db_.run(std::string("SELECT ") + kVolumeColumns + " FROM volumes WHERE name = ?1", {name}, [&](const Row& r) {
    out = Volume{r.text(0), r.integer(1), to_map(r.text(2)), to_map(r.text(3)), r.integer(4) != 0, ""};
  }));
  if (!out) return fail("get " + name + ": no such volume");
  out->mountpoint = dir_ + "/" + name + "/_data";
  return *out;
}

Result<std::vector<Volume>> Volumes::list() {
  std::vector<Volume> out;
  TRY(db_.run(std::string("SELECT ") + kVolumeColumns + " FROM volumes ORDER BY name", {}, [&](const Row& r) {
    out.push_back(Volume{r.text(0), r.integer(1), to_map(r.text(2)), to_map(r.text(3)), r.integer(4) != 0,
                         dir_ + "/" + r.text(0) + "/_data"});
  }));
  return out;
}

Result<std::vector<std::string>> Volumes::users(const std::string& name) {
  std::vector<std::pair<std::string, bool>> rows;
  TRY(db_.run("SELECT u.container, EXISTS (SELECT 1 FROM containers c WHERE c.id = u.container) "
              "FROM volume_users u WHERE u.volume = ?1 ORDER BY u.container",
              {name}, [&](const Row& r) { rows.emplace_back(r.text(0), r.integer(1) != 0); }));
  // A container being created has its directory and no row yet; a row whose
  // container has neither (a killed create) holds nothing.
  std::vector<std::string> out;
  for (auto& [id, row] : rows)
    if (row || path_exists(root_ + "/containers/" + id) || path_exists(root_ + "/containers/.creating-" + id))
      out.push_back(id);
  return out;
}

Result<Volume> Volumes::hold(std::string name, const StringMap& labels, const StringMap& options, bool anonymous,
                             const std::string& user) {
  TRY(check_options(options));
  if (name.empty()) name = hex_name();
  TRY(check_name(name));
  StringMap l = labels;
  if (anonymous) l[kAnonymousLabel] = "";
  TRY(mkdir_p(dir_, 0701));
  UniqueFd lock = TRY(lock_dir(dir_));
  TRY(db_.transaction([&]() -> Result<> {
    TRY(db_.exec("INSERT OR IGNORE INTO volumes (" + std::string(kVolumeColumns) + ") VALUES (?1, ?2, ?3, ?4, ?5)",
                 name,
                 std::chrono::duration_cast<std::chrono::nanoseconds>(
                     std::chrono::system_clock::now().time_since_epoch())
                     .count(),
                 json(l).dump(), json(options).dump(), anonymous ? 1 : 0));
    if (!user.empty())
      TRY(db_.exec("INSERT OR IGNORE INTO volume_users (volume, container) VALUES (?1, ?2)", name, user));
    return {};
  }));
  Volume v = TRY(get(name));
  for (auto* d : {"", "/_data"}) {
    std::string path = dir_ + "/" + name + d;
    if (::mkdir(path.c_str(), 0755) < 0 && errno != EEXIST) return sys_error("mkdir " + path);
  }
  // As Docker's local driver: mounted when a container first takes it.
  if (!user.empty()) TRY(mount_options(v));
  return v;
}

Result<> Volumes::mount_held(const std::string& id) {
  std::vector<std::string> names;
  TRY(db_.run("SELECT volume FROM volume_users WHERE container = ?1 ORDER BY volume", {id},
              [&](const Row& r) { names.push_back(r.text(0)); }));
  if (names.empty()) return {};
  UniqueFd lock = TRY(lock_dir(dir_));
  for (auto& n : names) {
    Volume v = TRY(get(n));
    TRY(mount_options(v));
  }
  return {};
}

Result<Volume> Volumes::create(std::string name, const StringMap& labels, const StringMap& options) {
  std::string what = "create " + name;
  return TRY_CTX(hold(std::move(name), labels, options, false, ""), what);
}

Result<> Volumes::remove_unlocked(const Volume& v) {
  TRY(db_.transaction([&]() -> Result<> {
    TRY(db_.exec("DELETE FROM volume_users WHERE volume = ?1", v.name));
    return db_.exec("DELETE FROM volumes WHERE name = ?1", v.name);
  }));
  if (is_mount_root(v.mountpoint) && ::umount2(v.mountpoint.c_str(), MNT_DETACH) < 0)
    return sys_error("unmount " + v.mountpoint);
  return remove_tree(dir_ + "/" + v.name);
}

Result<> Volumes::remove(const std::string& name, bool force) {
  TRY(mkdir_p(dir_, 0701));
  UniqueFd lock = TRY(lock_dir(dir_));
  auto v = get(name);
  if (!v) return force ? Result<>{} : std::unexpected(std::move(v).error());
  auto users_now = TRY(users(name));
  if (!users_now.empty()) {
    std::string ids;
    for (auto& u : users_now) ids += (ids.empty() ? "" : ", ") + u;
    return fail("remove " + name + ": volume is in use - [" + ids + "]");
  }
  TRY_CTX(remove_unlocked(*v), "remove " + name);
  return {};
}

Result<PruneResult> Volumes::prune(bool all, const std::function<bool(const Volume&)>& keep) {
  PruneResult out;
  TRY(mkdir_p(dir_, 0701));
  UniqueFd lock = TRY(lock_dir(dir_));
  for (auto& v : TRY(list())) {
    if (!all && !v.anonymous && !v.labels.contains(kAnonymousLabel)) continue;
    if ((keep && !keep(v)) || !TRY(users(v.name)).empty()) continue;
    uint64_t bytes = tree_bytes(v.mountpoint);
    TRY_CTX(remove_unlocked(v), "remove " + v.name);
    out.removed.push_back(v.name);
    out.bytes += bytes;
  }
  return out;
}

constexpr std::string_view kHeldVolumes =
    "SELECT u.volume, v.anonymous FROM volume_users u LEFT JOIN volumes v ON v.name = u.volume WHERE u.container = ?1";

void Volumes::prepare_release() { db_.prepare(kHeldVolumes); }

Result<> Volumes::release(const std::string& id, bool remove_anonymous) {
  // Most containers hold no volume: one read, no lock, no write.
  std::vector<std::string> anonymous;
  int64_t held = 0;
  TRY(db_.run(kHeldVolumes, {id}, [&](const Row& r) {
                ++held;
                if (r.integer(1) != 0) anonymous.push_back(r.text(0));
              }));
  if (held == 0) return {};
  UniqueFd lock = TRY(lock_dir(dir_));
  TRY(db_.exec("DELETE FROM volume_users WHERE container = ?1", id));
  if (!remove_anonymous) return {};
  // Another container may hold one still (--volumes-from): it stays, as with Docker.
  for (auto& name : anonymous)
    if (auto v = get(name); v && TRY(users(name)).empty()) TRY_CTX(remove_unlocked(*v), "remove volume " + name);
  return {};
}

bool wants_volumes(const json& body, const json& image_config) {
  // What prepare() below reads: --volumes-from, -v, --mount, the image's VOLUMEs.
  const json& none = json::object();
  const json& host = body.is_object() && body.contains("HostConfig") ? body["HostConfig"] : none;
  if (host.is_object())
    for (const char* key : {"VolumesFrom", "Binds", "Mounts"})
      if (host.contains(key) && host[key].is_array() && !host[key].empty()) return true;
  if (!image_config.is_object() || !image_config.contains("config") || !image_config["config"].is_object()) return false;
  const json& cfg = image_config["config"];
  return cfg.contains("Volumes") && cfg["Volumes"].is_object() && !cfg["Volumes"].empty();
}

Result<std::vector<MountPoint>> Volumes::prepare(
    const std::string& id, const std::string& dir, std::string_view body_text, std::string_view image_config,
    int rootfs_fd, const std::function<Result<std::string>(const std::string&)>& container_dir) {
  json body = json::parse(body_text, nullptr, false);
  json host = body.is_object() ? body.value("HostConfig", json::object()) : json::object();
  if (!host.is_object()) host = json::object();
  json img = json::parse(image_config, nullptr, false);
  json image_volumes = img.is_object() && img.contains("config") && img["config"].is_object()
                           ? img["config"].value("Volumes", json::object())
                           : json::object();
  auto list = [&](const char* key) {
    std::vector<json> out;
    if (host.contains(key) && host[key].is_array())
      for (auto& v : host[key]) out.push_back(v);
    return out;
  };

  // Docker's precedence: --volumes-from, then -v and --mount (which may not
  // name one destination twice), then the image's volumes where nothing is mounted.
  std::map<std::string, Want> wants;
  for (auto& entry : list("VolumesFrom")) {
    std::string spec = entry.is_string() ? entry.get<std::string>() : "";
    auto colon = spec.find(':');
    std::string name = spec.substr(0, colon), mode = colon == std::string::npos ? "" : spec.substr(colon + 1);
    if (name.empty() || (mode != "" && mode != "ro" && mode != "rw"))
      return fail("--volumes-from \"" + spec + "\": expected CONTAINER[:ro|:rw]");
    std::string from = TRY_CTX(container_dir(name), "--volumes-from " + name);
    auto text = read_file(from + "/mounts.json");
    if (!text && text.error().err != ENOENT) return std::unexpected(std::move(text).error().context("--volumes-from " + name));
    json mounts = json::parse(text ? *text : "[]", nullptr, false);
    if (!mounts.is_array()) return fail("--volumes-from " + name + ": its mounts.json is damaged");
    for (auto& mj : mounts) {
      Want w;
      w.m = MountPoint{mj.value("Type", ""), mj.value("Name", ""), mj.value("Source", ""), mj.value("Destination", ""),
                       mj.value("Mode", ""), mj.value("RW", true), mj.value("Propagation", ""), {}};
      if (w.m.type != "volume" && w.m.type != "bind") continue;
      if (!mode.empty()) w.m.rw = mode == "rw";
      w.inherited = true;
      wants[w.m.destination] = std::move(w);
    }
  }
  std::set<std::string> given;
  auto add = [&](Want w) -> Result<> {
    if (!given.insert(w.m.destination).second) return fail("Duplicate mount point: " + w.m.destination);
    wants[w.m.destination] = std::move(w);
    return {};
  };
  for (auto& b : list("Binds"))
    if (b.is_string()) TRY(add(TRY(parse_bind(b.get<std::string>()))));
  for (auto& m : list("Mounts")) TRY(add(TRY(parse_mount(m))));
  if (image_volumes.is_object()) {
    json tmpfs = host.value("Tmpfs", json::object());
    for (auto& [path, unused] : image_volumes.items()) {
      (void)unused;
      if (path.empty() || path[0] != '/') continue;
      std::string dest = clean_path(path);
      if (dest == "/" || wants.contains(dest) || (tmpfs.is_object() && tmpfs.contains(dest))) continue;
      Want w;
      w.m.type = "volume";
      w.m.destination = dest;
      wants[dest] = std::move(w);
    }
  }

  std::vector<MountPoint> out;
  for (auto& [dest, w] : wants) {
    if (w.m.type == "volume") {
      bool anonymous = w.m.name.empty();
      Volume v = TRY_CTX(hold(w.m.name, w.labels, w.options, anonymous, id), "volume for " + dest);
      w.m.name = v.name;
      w.m.source = v.mountpoint;
      if (w.copy && !w.inherited) {
        // One copy at a time into a volume (two containers made at once).
        UniqueFd lock = TRY(lock_dir(dir_ + "/" + v.name));
        TRY_CTX(copy_up(rootfs_fd, dest, v.mountpoint), "copy " + dest + " into volume " + v.name);
      }
    }
    out.push_back(w.m);
  }
  // A parent before what is mounted under it.
  std::stable_sort(out.begin(), out.end(),
                   [](const MountPoint& a, const MountPoint& b) { return depth(a.destination) < depth(b.destination); });
  // No mounts, no file (inspect and --volumes-from read none as none).
  json saved = json::array();
  for (auto& m : out) saved.push_back(to_json(m));
  if (!out.empty()) TRY(atomic_write_file(dir + "/mounts.json", saved.dump(), 0600));
  return out;
}

Result<std::string> mounts_json(const std::string& container_dir) { return read_file(container_dir + "/mounts.json"); }

std::string volume_json(const Volume& v) {
  time_t s = static_cast<time_t>(v.created / 1000000000);
  struct tm tm {};
  gmtime_r(&s, &tm);
  char created[32];
  std::strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return json{{"CreatedAt", created}, {"Driver", "local"},       {"Labels", v.labels}, {"Mountpoint", v.mountpoint},
              {"Name", v.name},       {"Options", v.options},    {"Scope", "local"}}
      .dump();
}

}  // namespace berth::engine
