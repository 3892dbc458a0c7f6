#include "image/store.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/mount.h>
#include <sched.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <ctime>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "image/db.h"
#include "image/decompress.h"
#include "image/erofs.h"
#include "image/parallel.h"
#include "image/unpack.h"
#include "util/fs.h"
#include "util/log.h"

namespace berth::image {

namespace {

// Bumped with every change to kSchema.
constexpr int kSchemaVersion = 1;
constexpr std::string_view kSchema = R"sql(
CREATE TABLE IF NOT EXISTS images (
  id TEXT PRIMARY KEY,
  manifest TEXT NOT NULL,
  manifest_type TEXT NOT NULL,
  platform TEXT NOT NULL,
  created TEXT NOT NULL,
  added INTEGER NOT NULL,
  size INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tags (
  name TEXT PRIMARY KEY,
  image TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
  added INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS repo_digests (
  name TEXT PRIMARY KEY,
  image TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE);
CREATE TABLE IF NOT EXISTS layers (
  chain TEXT PRIMARY KEY,
  diff_id TEXT NOT NULL,
  size INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS image_layers (
  image TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
  idx INTEGER NOT NULL,
  chain TEXT NOT NULL REFERENCES layers(chain),
  PRIMARY KEY (image, idx));
CREATE INDEX IF NOT EXISTS image_layers_chain ON image_layers(chain);
CREATE TABLE IF NOT EXISTS image_blobs (
  image TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
  blob TEXT NOT NULL,
  PRIMARY KEY (image, blob));
CREATE INDEX IF NOT EXISTS image_blobs_blob ON image_blobs(blob);
CREATE TABLE IF NOT EXISTS image_mounts (
  image TEXT PRIMARY KEY REFERENCES images(id),
  count INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS image_users (
  user TEXT PRIMARY KEY,
  image TEXT NOT NULL REFERENCES images(id));
)sql";

std::string random_hex(size_t n) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  std::string s;
  while (s.size() < n) s += "0123456789abcdef"[rng() & 15];
  return s;
}

std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") out.push_back(n);
  }
  ::closedir(d);
  return out;
}

// Mounts an overlay of `lowers` (top first) on `target`: read-only without
// `upper`, else with upper and work dirs. The new mount API's "lowerdir+"
// takes one layer per call (no page-size limit on the option string, so
// images with hundreds of layers mount); mount(2) is the fallback for kernels
// before 6.8.
Result<> mount_overlay(const std::vector<std::string>& lowers, const std::string& upper, const std::string& work,
                       const std::string& target, bool volatile_upper = false) {
  bool ro = upper.empty();
  // lowers are layers/<chain>/diff: an EROFS layer has layer.erofs beside it.
  bool xino = std::any_of(lowers.begin(), lowers.end(), [](const std::string& l) {
    return path_exists(l.substr(0, l.rfind('/')) + "/layer.erofs");
  });
  bool create_einval = false;  // the new API refused at create: perhaps only lowerdir+
  int fs = static_cast<int>(::syscall(SYS_fsopen, "overlay", FSOPEN_CLOEXEC));
  if (fs >= 0) {
    UniqueFd fsfd(fs);
    bool ok = true;
    for (auto& l : lowers)
      if (::syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "lowerdir+", l.c_str(), 0) != 0) {
        ok = false;
        break;
      }
    // Layers on filesystems of their own (EROFS) would show each layer's
    // files with a device number of its own and inode numbers that repeat
    // across layers (tar, du and rsync -H take (dev, ino) as identity): xino
    // gives one device and unique inode numbers, as a single filesystem has.
    if (ok && xino) ::syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "xino", "on", 0);
    if (ok) {
      if (!ro && ::syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "upperdir", upper.c_str(), 0) != 0)
        return sys_error("overlay upper dir " + upper);
      if (!ro && ::syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "workdir", work.c_str(), 0) != 0)
        return sys_error("overlay work dir " + work);
      // Best effort: a kernel without it (before 5.10) syncs as before.
      if (!ro && volatile_upper) ::syscall(SYS_fsconfig, fs, FSCONFIG_SET_FLAG, "volatile", nullptr, 0);
      // Before 6.5 overlayfs parsed options only at create, so an unknown
      // "lowerdir+" shows here: EINVAL goes to mount(2), which says what is wrong.
      if (::syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, nullptr, nullptr, 0) != 0) {
        if (errno != EINVAL) return sys_error("mount overlay on " + target);
        create_einval = true;
        ok = false;
      }
    }
    if (ok) {
      int m = static_cast<int>(::syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC, ro ? MOUNT_ATTR_RDONLY : 0));
      if (m < 0) return sys_error("fsmount overlay for " + target);
      UniqueFd mfd(m);
      if (::syscall(SYS_move_mount, m, "", AT_FDCWD, target.c_str(), MOVE_MOUNT_F_EMPTY_PATH) != 0)
        return sys_error("move_mount overlay to " + target);
      return {};
    }
    if (errno != EINVAL) return sys_error("overlay lowerdir+ for " + target);
  }
  std::string opts = "lowerdir=";
  for (size_t i = 0; i < lowers.size(); ++i) {
    if (lowers[i].find_first_of(":,") != std::string::npos)
      return fail("overlay lower dir " + lowers[i] + ": ':' or ',' in the path (this kernel lacks lowerdir+)");
    if (i) opts += ":";
    opts += lowers[i];
  }
  if (!ro) opts += ",upperdir=" + upper + ",workdir=" + work;
  if (xino) opts += ",xino=on";
  if (!ro && volatile_upper &&
      ::mount("overlay", target.c_str(), "overlay", 0, (opts + ",volatile").c_str()) == 0)
    return {};
  if (::mount("overlay", target.c_str(), "overlay", ro ? MS_RDONLY : 0, opts.c_str()) != 0)
    return sys_error(std::string("mount overlay on ") + target +
                     (create_einval ? " (the mount API also refused it: Invalid argument)" : ""));
  return {};
}

struct InflatedLayer {
  uint64_t size = 0;  // the tar's bytes
  Digest diff_id;     // their sha256
};

// Decompresses a layer blob into dir/layer.tar and writes its EROFS metadata
// to dir/layer.erofs (both created) as the tar streams past. Inflating runs on
// a thread of its own; hashing, writing and reading the headers on the
// caller's.
struct InflateSource {
  std::optional<uint64_t> offset;  // set: the blob is the `length` bytes there (pread)
  uint64_t length = UINT64_MAX;
  const std::atomic<bool>* cancel = nullptr;  // set: stops at the next chunk
};

Result<InflatedLayer> inflate_layer(int src_fd, const std::string& dir, const std::string& what,
                                    const InflateSource& from = {}) {
  std::string tar_path = dir + "/layer.tar", meta_path = dir + "/layer.erofs";
  UniqueFd out(::open(tar_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!out) return sys_error("create " + tar_path);
  UniqueFd meta(::open(meta_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!meta) return sys_error("create " + meta_path);
  Decompressor d(src_fd, {.what = what, .hash = false, .offset = from.offset, .length = from.length});
  TRY(d.init());
  Sha256 hash;
  {
    Prefetcher ahead(d);
    TarChunkFn next = [&]() -> Result<std::string_view> {
      if (from.cancel && from.cancel->load(std::memory_order_relaxed)) return fail(what + ": cancelled");
      std::string_view chunk = TRY(ahead.next());
      hash.update(chunk.data(), chunk.size());
      TRY_CTX(write_fd(out.get(), chunk), what + ": write " + tar_path);
      return chunk;
    };
    TRY(erofs_write_stream(next, meta.get(), {.what = what}));
  }
  return InflatedLayer{d.uncompressed(), hash.finish()};
}

// Records the size of the layer made in `tmp` and renames it to `final_dir`;
// where another berth process made the same layer first, its copy is used.
Result<> place_layer(const std::string& tmp, const std::string& final_dir, uint64_t size) {
  TRY(atomic_write_file(tmp + "/size", std::to_string(size), 0600));
  if (::rename(tmp.c_str(), final_dir.c_str()) != 0) {
    if (errno != EEXIST && errno != ENOTEMPTY) return sys_error("rename " + tmp + " to " + final_dir);
    TRY(remove_tree(tmp));
  }
  return {};
}

// The EROFS layers of `image` that are not mounted (never used yet, or a
// reboot took them); `root` is the store's.
std::vector<const Digest*> unmounted_layers(const std::string& root, const ImageRecord& image) {
  std::vector<const Digest*> out;
  for (auto& c : image.layers) {
    std::string dir = root + "/layers/" + c.hex;
    if (path_exists(dir + "/layer.erofs") && !is_mount_root(dir + "/diff")) out.push_back(&c);
  }
  return out;
}

std::string boot_id() {
  auto b = read_file("/proc/sys/kernel/random/boot_id");
  if (!b) return "unknown";
  while (!b->empty() && b->back() == '\n') b->pop_back();
  return *b;
}

}  // namespace

std::string_view layer_format_name(LayerFormat f) {
  switch (f) {
    case LayerFormat::kErofs: return "erofs";
    case LayerFormat::kDir: return "dir";
    case LayerFormat::kAuto: break;
  }
  return "auto";
}

Result<StoreOptions> parse_storage_opts(const std::vector<std::string>& opts) {
  StoreOptions o;
  for (auto& opt : opts) {
    for (auto& kv : split(opt, ',')) {
      if (kv.empty()) continue;
      auto eq = kv.find('=');
      std::string key = kv.substr(0, eq), val = eq == std::string::npos ? "" : kv.substr(eq + 1);
      if (key == "layer-format") {
        if (val == "erofs") o.layer_format = LayerFormat::kErofs;
        else if (val == "dir") o.layer_format = LayerFormat::kDir;
        else if (val == "auto") o.layer_format = LayerFormat::kAuto;
        else return fail("storage option layer-format=" + val + ": expected erofs, dir or auto");
      } else {
        return fail("storage option " + kv + ": unknown (berth knows layer-format=erofs|dir|auto)");
      }
    }
  }
  return o;
}

// ------------------------------------------------------------------ open --

ImageStore::~ImageStore() = default;

ImageStore::Op::~Op() {
  if (!path_.empty()) ::unlink(path_.c_str());
}

Result<std::unique_ptr<ImageStore>> ImageStore::open(const std::string& root, const StoreOptions& o) {
  std::unique_ptr<ImageStore> s(new ImageStore);
  s->opts_ = o;
  TRY_CTX(mkdir_p(root, 0700), "image store " + root);
  // Mount points are compared with mountinfo, which has real absolute paths.
  char real[PATH_MAX];
  if (!::realpath(root.c_str(), real)) return sys_error("image store " + root);
  s->root_ = real;
  for (const char* sub : {"layers", "image-mounts", "ops"})
    TRY_CTX(mkdir_p(root + "/" + sub, 0700), "image store " + root);
  s->content_ = std::make_unique<ContentStore>(TRY(ContentStore::open(root)));
  s->db_ = TRY(Db::open(root + "/berth.db", kSchema, kSchemaVersion));
  TRY_CTX(s->repair(), "repair image store " + root);
  return s;
}

Result<UniqueFd> ImageStore::lock() const {
  std::string p = root_ + "/store.lock";
  UniqueFd fd(::open(p.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd) return sys_error("open " + p);
  while (::flock(fd.get(), LOCK_EX) != 0)
    if (errno != EINTR) return sys_error("lock " + p);
  return fd;
}

Result<ImageStore::Op> ImageStore::begin_op() {
  Op op;
  op.path_ = root_ + "/ops/" + random_hex(16);
  op.fd_ = UniqueFd(::open(op.path_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!op.fd_) return sys_error("create " + op.path_);
  if (::flock(op.fd_.get(), LOCK_EX) != 0) return sys_error("lock " + op.path_);
  // Waits out a garbage collection that started before this marker existed;
  // any later one sees the marker held and leaves the store alone.
  TRY(lock());
  return op;
}

Result<LayerFormat> ImageStore::layer_format() {
  std::lock_guard g(format_mu_);
  if (format_ != LayerFormat::kAuto) return format_;
  if (opts_.layer_format == LayerFormat::kErofs) {
    // Forced: a kernel that cannot mount the layers is an error now, not at
    // the first container.
    if (TRY(probe_layer_format()) != LayerFormat::kErofs)
      return fail("storage option layer-format=erofs: this kernel cannot mount berth's EROFS layers "
                  "(file-backed EROFS with 512-byte blocks under overlayfs needs Linux 6.12 or later)");
  }
  format_ = opts_.layer_format != LayerFormat::kAuto ? opts_.layer_format : TRY(probe_layer_format());
  return format_;
}

// The probe mounts a tiny EROFS layer and an overlay over it (a few ms), once
// per boot: the answer is kept with the boot's ID.
Result<LayerFormat> ImageStore::probe_layer_format() {
  std::string cache = root_ + "/layer-format.probe", boot = boot_id();
  auto parse = [&](const std::string& text) -> std::optional<LayerFormat> {
    auto f = split(text, ' ');
    if (f.size() != 2 || f[0] != boot) return std::nullopt;
    if (f[1] == "erofs\n") return LayerFormat::kErofs;
    if (f[1] == "dir\n") return LayerFormat::kDir;
    return std::nullopt;
  };
  if (auto c = read_file(cache))
    if (auto f = parse(*c)) return *f;
  UniqueFd held = TRY(lock());
  if (auto c = read_file(cache))
    if (auto f = parse(*c)) return *f;
  // A probe killed midway leaves its scratch dir, perhaps with mounts.
  std::string scratch = root_ + "/probe";
  detach_mounts_beneath(scratch);
  TRY(remove_tree(scratch));
  TRY(mkdir_p(scratch, 0700));
  bool ok = TRY(erofs_supported(scratch));
  TRY(remove_tree(scratch));
  LayerFormat f = ok ? LayerFormat::kErofs : LayerFormat::kDir;
  if (!ok) log::debug("layer format: this kernel does not mount berth's EROFS layers; layers are unpacked (dir)");
  // Without a boot ID the answer could outlive the kernel it is about.
  if (boot != "unknown") TRY(atomic_write_file(cache, boot + " " + std::string(layer_format_name(f)) + "\n", 0600));
  return f;
}

Result<> ImageStore::repair() {
  auto markers = list_dir(root_ + "/ops");
  if (markers.empty()) return {};
  return collect_garbage();
}

Result<> ImageStore::collect_garbage() {
  UniqueFd held = TRY(lock());
  std::vector<std::string> dead;
  for (auto& m : list_dir(root_ + "/ops")) {
    std::string p = root_ + "/ops/" + m;
    UniqueFd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) continue;
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) return {};  // a live operation: not now
    dead.push_back(p);
  }
  // Blobs that no image references.
  std::set<std::string> keep;
  TRY(db_->run("SELECT DISTINCT blob FROM image_blobs", {}, [&](const Row& r) { keep.insert(r.text(0)); }));
  for (auto& d : TRY(content_->list()))
    if (!keep.count(d.str())) TRY(content_->remove(d));
  // Layer directories that no row records, and unpacks that never finished.
  std::set<std::string> layers;
  TRY(db_->run("SELECT chain FROM layers", {}, [&](const Row& r) { layers.insert(r.text(0)); }));
  for (auto& n : list_dir(root_ + "/layers"))
    if (!layers.count("sha256:" + n)) TRY(remove_layer_dir(n));
  // Layer rows no image needs (a removal killed between its two steps).
  TRY(drop_unreferenced());
  for (auto& n : list_dir(root_ + "/image-mounts")) {
    std::string p = root_ + "/image-mounts/" + n;
    if (!is_mount_root(p)) ::rmdir(p.c_str());
  }
  for (auto& p : dead) ::unlink(p.c_str());
  return {};
}

// ------------------------------------------------------------------ load --

Result<std::optional<ImageRecord>> ImageStore::load(const std::string& id) const {
  std::optional<ImageRecord> rec;
  Error err;
  // One statement (each is parsed anew by every process, the first use of
  // SQLite's code in it): the image's tags, repo digests and layers come as
  // lists with their sort keys, put in order here.
  TRY(db_->run("SELECT id, manifest, manifest_type, platform, created, added, size,"
               " (SELECT group_concat(t.added || ' ' || t.name, char(10)) FROM tags t WHERE t.image = i.id),"
               " (SELECT group_concat(r.name, char(10)) FROM repo_digests r WHERE r.image = i.id),"
               " (SELECT group_concat(il.idx || ' ' || il.chain || ' ' || l.size, char(10))"
               "  FROM image_layers il JOIN layers l ON l.chain = il.chain WHERE il.image = i.id)"
               " FROM images i WHERE id = ?1",
               {id}, [&](const Row& r) {
                 ImageRecord i;
                 auto idd = Digest::parse(r.text(0));
                 auto md = Digest::parse(r.text(1));
                 auto pl = Platform::parse(r.text(3));
                 if (!idd || !md || !pl) {
                   err = Error{0, "berth.db: image " + r.text(0) + ": malformed row"};
                   return;
                 }
                 i.id = *idd;
                 i.manifest = *md;
                 i.manifest_type = r.text(2);
                 i.platform = *pl;
                 i.created = r.text(4);
                 i.added = r.integer(5);
                 i.size = static_cast<uint64_t>(r.integer(6));
                 // "<key> <rest>" lines, sorted by the number, then the rest.
                 auto keyed = [](const std::string& text) {
                   std::vector<std::pair<int64_t, std::string>> out;
                   for (auto& line : split(text, '\n')) {
                     auto sp = line.find(' ');
                     if (line.empty() || sp == std::string::npos) continue;
                     out.emplace_back(std::atoll(line.c_str()), line.substr(sp + 1));
                   }
                   std::sort(out.begin(), out.end());
                   return out;
                 };
                 for (auto& [added, name] : keyed(r.text(7)))
                   if (auto ref = Reference::parse(name)) i.tags.push_back(*ref);
                 for (auto& name : split(r.text(8), '\n'))
                   if (!name.empty()) i.repo_digests.push_back(name);
                 std::sort(i.repo_digests.begin(), i.repo_digests.end());
                 for (auto& [idx, rest] : keyed(r.text(9))) {
                   auto sp = rest.find(' ');
                   auto d = Digest::parse(rest.substr(0, sp));
                   if (!d || sp == std::string::npos) {
                     err = Error{0, "berth.db: image " + r.text(0) + ": malformed layer row"};
                     return;
                   }
                   i.layers.push_back(*d);
                   i.layer_sizes.push_back(static_cast<uint64_t>(std::atoll(rest.c_str() + sp + 1)));
                 }
                 rec = std::move(i);
               }));
  if (!err.msg.empty()) return std::unexpected(std::move(err));
  return rec;
}

Result<std::vector<ImageRecord>> ImageStore::list() const {
  std::vector<std::string> ids;
  TRY(db_->run("SELECT id FROM images ORDER BY added DESC, id", {}, [&](const Row& r) { ids.push_back(r.text(0)); }));
  std::vector<ImageRecord> out;
  for (auto& id : ids)
    if (auto rec = TRY(load(id))) out.push_back(std::move(*rec));
  return out;
}

Result<ImageRecord> ImageStore::resolve(std::string_view name) const {
  std::string n(name);
  auto not_found = [&] { return fail("no such image: " + n); };
  if (n.empty()) return not_found();
  // A full ID or a unique prefix of one.
  std::string hex = n.starts_with("sha256:") ? n.substr(7) : n;
  bool hexlike = hex.size() >= 4 && hex.size() <= 64 && hex.find_first_not_of("0123456789abcdef") == std::string::npos;
  auto by_id_prefix = [&]() -> Result<std::optional<ImageRecord>> {
    std::vector<std::string> ids;
    TRY(db_->run("SELECT id FROM images WHERE substr(id, 8, ?2) = ?1", {hex, static_cast<int64_t>(hex.size())},
                 [&](const Row& r) { ids.push_back(r.text(0)); }));
    if (ids.size() > 1) return fail("image ID prefix " + hex + " is ambiguous (" + std::to_string(ids.size()) + " images)");
    if (ids.empty()) return std::optional<ImageRecord>();
    return load(ids[0]);
  };
  if (hexlike && (hex.size() == 64 || n.starts_with("sha256:")))
    if (auto rec = TRY(by_id_prefix())) return std::move(*rec);
  if (n.starts_with("sha256:")) return not_found();
  auto ref = Reference::parse(n);
  if (ref) {
    std::optional<std::string> id;
    if (ref->digest) {
      std::string rd = ref->repository() + "@" + ref->digest->str();
      id = TRY(db_->text("SELECT image FROM repo_digests WHERE name = ?1", rd));
      if (!id) id = TRY(db_->text("SELECT id FROM images WHERE manifest = ?1", ref->digest->str()));
    } else {
      id = TRY(db_->text("SELECT image FROM tags WHERE name = ?1", ref->str()));
    }
    if (id)
      if (auto rec = TRY(load(*id))) return std::move(*rec);
  }
  if (hexlike)
    if (auto rec = TRY(by_id_prefix())) return std::move(*rec);
  if (!ref) return std::unexpected(std::move(ref).error());
  return not_found();
}

// ---------------------------------------------------------------- commit --

struct ImageStore::EarlyLayer::Impl {
  std::string tmp;  // layers/.tmp-early-*: removed unless adopted (then empty)
  UniqueFd wr;      // the pipe the blob's bytes go through; closed at its end
  std::thread worker;
  std::atomic<bool> cancel{false};              // nobody wants the layer any more
  std::optional<Result<InflatedLayer>> result;  // the worker's, once joined
};

Result<bool> ImageStore::prepare_layer(const Digest& chain, const Descriptor& blob, const Digest& diff_id,
                                       const std::string& what) {
  // A layer directory exists only once whole: it is renamed into place last.
  std::string final_dir = root_ + "/layers/" + chain.hex;
  if (path_exists(final_dir)) return false;
  if (auto early = take_early_layer(blob.digest)) {
    auto& e = *early->d_;
    e.wr.reset();
    if (e.worker.joinable()) e.worker.join();
    if (e.result && *e.result && (*e.result)->diff_id == diff_id) {
      auto placed = place_layer(e.tmp, final_dir, (*e.result)->size);
      if (!placed) return std::unexpected(Error(std::move(placed).error()).context(what));
      e.tmp.clear();
      ++early_adopted_;
      return true;
    }
    // Not this layer after all: made again below, which reports what is wrong.
  }
  LayerFormat format = TRY_CTX(layer_format(), what);
  std::string tmp = root_ + "/layers/.tmp-" + chain.hex.substr(0, 12) + "-" + random_hex(8);
  auto r = [&]() -> Result<> {
    TRY_CTX(mkdir_p(tmp + "/diff", 0755), what);
    UniqueFd src = TRY_CTX(content_->open_blob(blob.digest), what);
    uint64_t size = 0;
    if (format == LayerFormat::kErofs) {
      // The tar once, sequentially; the kernel reads the files out of it.
      InflatedLayer l = TRY(inflate_layer(src.get(), tmp, what));
      if (!(l.diff_id == diff_id))
        return fail(what + ": diff_id mismatch: expected " + diff_id.str() + ", got " + l.diff_id.str());
      size = l.size;
    } else {
      UniqueFd dest(::open((tmp + "/diff").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      if (!dest) return sys_error("open " + tmp + "/diff");
      UnpackOptions o;
      o.diff_id = diff_id;
      o.what = what;
      o.set_owners = ::geteuid() == 0;
      size = TRY(unpack_layer(src.get(), dest.get(), o)).uncompressed;
    }
    return place_layer(tmp, final_dir, size);
  }();
  if (!r) {
    (void)remove_tree(tmp);
    return std::unexpected(std::move(r).error());
  }
  return true;
}

// ----------------------------------------------------------- early layers --

ImageStore::EarlyLayer::EarlyLayer() : d_(std::make_unique<Impl>()) {}

ImageStore::EarlyLayer::~EarlyLayer() {
  d_->cancel = true;
  d_->wr.reset();
  if (d_->worker.joinable()) d_->worker.join();
  if (!d_->tmp.empty()) (void)remove_tree(d_->tmp);
}

void ImageStore::EarlyLayer::feed(std::string_view data) {
  if (d_->wr && !write_fd(d_->wr.get(), data)) d_->wr.reset();
}

void ImageStore::EarlyLayer::end() { d_->wr.reset(); }

namespace {

// CPUs this process may run on (its affinity: a container's cpuset, not the host's count).
unsigned usable_cpus() {
  cpu_set_t set;
  if (::sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return static_cast<unsigned>(CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

// An early layer is only a head start: failing to make one fails nothing.
std::unique_ptr<ImageStore::EarlyLayer> or_none(Result<std::unique_ptr<ImageStore::EarlyLayer>> r, const std::string& what) {
  if (r) return std::move(*r);
  log::debug(what + ": no early layer: " + r.error().str());
  return nullptr;
}

}  // namespace

Result<std::unique_ptr<ImageStore::EarlyLayer>> ImageStore::start_early_layer(const std::string& what) {
  return or_none(early_from_pipe(what), what);
}

Result<std::unique_ptr<ImageStore::EarlyLayer>> ImageStore::early_from_pipe(const std::string& what) {
  if (TRY(layer_format()) != LayerFormat::kErofs) return nullptr;
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return sys_error(what + ": pipe");
  UniqueFd rd(p[0]);
  std::unique_ptr<EarlyLayer> l(new EarlyLayer);
  l->d_->wr.reset(p[1]);
  // Large hand-offs: with the default 64 KiB the two sides take turns.
  (void)::fcntl(p[1], F_SETPIPE_SZ, 1 << 20);
  l->d_->tmp = root_ + "/layers/.tmp-early-" + random_hex(12);
  TRY_CTX(mkdir_p(l->d_->tmp + "/diff", 0755), what);
  l->d_->worker = std::thread([impl = l->d_.get(), rd = std::move(rd), what]() {
    impl->result = inflate_layer(rd.get(), impl->tmp, what, {.cancel = &impl->cancel});
    // To the end of the stream, whatever happened: the feeder never blocks
    // on a pipe nobody reads, and never meets a closed one.
    char buf[64 * 1024];
    for (;;) {
      ssize_t n = ::read(rd.get(), buf, sizeof buf);
      if (n > 0 || (n < 0 && errno == EINTR)) continue;
      break;
    }
  });
  return l;
}

Result<std::unique_ptr<ImageStore::EarlyLayer>> ImageStore::start_early_layer(const std::string& what, int fd,
                                                                               uint64_t offset, uint64_t length) {
  return or_none(early_from_range(what, fd, offset, length), what);
}

Result<std::unique_ptr<ImageStore::EarlyLayer>> ImageStore::early_from_range(const std::string& what, int fd,
                                                                              uint64_t offset, uint64_t length) {
  if (TRY(layer_format()) != LayerFormat::kErofs) return nullptr;
  // Each takes about one and a half CPUs (inflating; hashing and writing) and
  // 8 MiB of buffers: one per usable CPU, at most 4.
  if (early_busy_.load() >= static_cast<int>(std::min(4u, usable_cpus()))) return nullptr;
  UniqueFd src(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
  if (!src) return sys_error(what + ": dup");
  std::unique_ptr<EarlyLayer> l(new EarlyLayer);
  l->d_->tmp = root_ + "/layers/.tmp-early-" + random_hex(12);
  TRY_CTX(mkdir_p(l->d_->tmp + "/diff", 0755), what);
  ++early_busy_;
  l->d_->worker = std::thread([impl = l->d_.get(), src = std::move(src), what, offset, length, busy = &early_busy_]() {
    impl->result = inflate_layer(src.get(), impl->tmp, what, {.offset = offset, .length = length, .cancel = &impl->cancel});
    --*busy;
  });
  return l;
}

void ImageStore::keep_early_layer(const Digest& blob, std::unique_ptr<EarlyLayer> layer) {
  if (!layer) return;
  layer->d_->wr.reset();
  std::lock_guard g(early_mu_);
  early_.emplace_back(blob, std::move(layer));
}

std::unique_ptr<ImageStore::EarlyLayer> ImageStore::take_early_layer(const Digest& blob) {
  std::lock_guard g(early_mu_);
  for (auto it = early_.begin(); it != early_.end(); ++it)
    if (it->first == blob) {
      auto l = std::move(it->second);
      early_.erase(it);
      return l;
    }
  return nullptr;
}

void ImageStore::discard_early_layers() {
  std::vector<std::pair<Digest, std::unique_ptr<EarlyLayer>>> gone;
  {
    std::lock_guard g(early_mu_);
    gone.swap(early_);
  }
}

Result<> ImageStore::unpack_missing(const Manifest& m, const ImageConfig& config,
                                    const std::vector<Digest>& chain, const UnpackProgressFn& progress,
                                    std::vector<Digest>* made) {
  std::vector<size_t> jobs;
  for (size_t i = 0; i < chain.size(); ++i) {
    if (path_exists(root_ + "/layers/" + chain[i].hex)) {
      if (progress) progress({i, chain.size(), m.layers[i].digest, "exists"});
      continue;
    }
    jobs.push_back(i);
  }
  std::mutex progress_mu;
  auto report = [&](size_t i, std::string_view phase) {
    if (!progress) return;
    std::lock_guard g(progress_mu);
    progress({i, chain.size(), m.layers[i].digest, phase});
  };
  return parallel_for(jobs.size(), std::thread::hardware_concurrency(), [&](size_t j) -> Result<> {
    size_t i = jobs[j];
    report(i, "extracting");
    bool fresh = TRY(prepare_layer(chain[i], m.layers[i], config.diff_ids[i],
                                   "layer " + std::to_string(i + 1) + " (" + m.layers[i].digest.str() + ")"));
    report(i, "done");
    if (fresh) {
      std::lock_guard g(progress_mu);
      made->push_back(chain[i]);
    }
    return {};
  });
}

Result<ImageRecord> ImageStore::commit(const Digest& manifest_digest, const std::vector<Reference>& tags,
                                       const std::optional<std::string>& repo_digest,
                                       const UnpackProgressFn& progress) {
  std::string mbytes = TRY_CTX(content_->read(manifest_digest), "manifest " + manifest_digest.str());
  std::string mtype = TRY(sniff_media_type(mbytes));
  if (!is_manifest_type(mtype)) return fail("manifest " + manifest_digest.str() + ": is an index, not an image manifest");
  Manifest m = TRY_CTX(parse_manifest(mbytes), "manifest " + manifest_digest.str());
  std::string cbytes = TRY_CTX(content_->read(m.config.digest), "image config " + m.config.digest.str());
  ImageConfig cfg = TRY_CTX(parse_config(cbytes), "image config " + m.config.digest.str());
  if (cfg.diff_ids.size() != m.layers.size())
    return fail("image " + m.config.digest.str() + ": the manifest lists " + std::to_string(m.layers.size()) +
                " layers, the config " + std::to_string(cfg.diff_ids.size()) + " diff_ids");
  for (auto& l : m.layers)
    if (!content_->has(l.digest)) return fail("layer " + l.digest.str() + ": not in the content store");
  std::vector<Digest> chain = chain_ids(cfg.diff_ids);
  std::string id = m.config.digest.str();
  std::vector<Digest> made;  // layers unpacked here: removed again unless recorded
  auto stored = [&]() -> Result<> {
    TRY(unpack_missing(m, cfg, chain, progress, &made));
    UniqueFd held = TRY(lock());
    uint64_t total = 0;
    std::vector<uint64_t> sizes;
    for (size_t i = 0; i < chain.size(); ++i) {
      std::string dir = root_ + "/layers/" + chain[i].hex;
      if (!path_exists(dir)) return fail("layer " + chain[i].str() + ": removed while this image was being stored; try again");
      auto sz = read_file(dir + "/size");
      sizes.push_back(sz ? std::strtoull(sz->c_str(), nullptr, 10) : 0);
      total += sizes.back();
    }
    std::optional<Digest> index_digest;
    if (repo_digest) {
      auto at = repo_digest->rfind('@');
      if (at != std::string::npos)
        if (auto d = Digest::parse(repo_digest->substr(at + 1)); d && content_->has(*d)) index_digest = *d;
    }
    int64_t now = ::time(nullptr);
    TRY(db_->transaction([&]() -> Result<> {
      bool exists = TRY(db_->count("SELECT count(*) FROM images WHERE id = ?1", id)) > 0;
      if (!exists) {
        TRY(db_->exec("INSERT INTO images (id, manifest, manifest_type, platform, created, added, size) "
                      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                      id, manifest_digest.str(), mtype, cfg.platform.str(), cfg.created, now,
                      static_cast<int64_t>(total)));
        for (size_t i = 0; i < chain.size(); ++i) {
          TRY(db_->exec("INSERT OR IGNORE INTO layers (chain, diff_id, size) VALUES (?1, ?2, ?3)", chain[i].str(),
                        cfg.diff_ids[i].str(), static_cast<int64_t>(sizes[i])));
          TRY(db_->exec("INSERT INTO image_layers (image, idx, chain) VALUES (?1, ?2, ?3)", id,
                        static_cast<int64_t>(i), chain[i].str()));
        }
      }
      std::vector<std::string> blobs = {manifest_digest.str(), m.config.digest.str()};
      for (auto& l : m.layers) blobs.push_back(l.digest.str());
      if (index_digest) blobs.push_back(index_digest->str());
      for (auto& b : blobs) TRY(db_->exec("INSERT OR IGNORE INTO image_blobs (image, blob) VALUES (?1, ?2)", id, b));
      for (auto& t : tags)
        TRY(db_->exec("INSERT OR REPLACE INTO tags (name, image, added) VALUES (?1, ?2, ?3)", t.str(), id, now));
      if (repo_digest)
        TRY(db_->exec("INSERT OR REPLACE INTO repo_digests (name, image) VALUES (?1, ?2)", *repo_digest, id));
      return {};
    }));
    return {};
  }();
  if (!stored) {
    (void)discard_layers(made);
    return std::unexpected(std::move(stored).error());
  }
  // Tags moved away may leave their old image dangling: it stays (as in Docker) until pruned.
  auto rec = TRY(load(id));
  if (!rec) return fail("image " + id + ": vanished after commit");
  return std::move(*rec);
}

Result<> ImageStore::tag(const ImageRecord& image, const Reference& name) {
  if (name.tag.empty()) return fail("tag " + name.str() + ": a tag name cannot have a digest");
  UniqueFd held = TRY(lock());
  return db_->exec("INSERT OR REPLACE INTO tags (name, image, added) VALUES (?1, ?2, ?3)", name.str(),
                   image.id.str(), static_cast<int64_t>(::time(nullptr)));
}

Result<> ImageStore::add_repo_digest(const ImageRecord& image, const std::string& name) {
  UniqueFd held = TRY(lock());
  return db_->exec("INSERT OR REPLACE INTO repo_digests (name, image) VALUES (?1, ?2)", name, image.id.str());
}

// ---------------------------------------------------------------- remove --

Result<bool> ImageStore::in_use(const std::string& id) const {
  int64_t n = TRY(db_->count("SELECT (SELECT count(*) FROM image_mounts WHERE image = ?1 AND count > 0) + "
                             "(SELECT count(*) FROM image_users WHERE image = ?1)",
                             id));
  return n > 0;
}

Result<> ImageStore::drop_unreferenced() {
  std::vector<std::string> chains;
  TRY(db_->run("SELECT chain FROM layers WHERE chain NOT IN (SELECT chain FROM image_layers)", {},
               [&](const Row& r) { chains.push_back(r.text(0)); }));
  for (auto& c : chains) {
    TRY(db_->exec("DELETE FROM layers WHERE chain = ?1", c));
    TRY(remove_layer_dir(c.substr(7)));
  }
  return {};
}

Result<> ImageStore::delete_image(const std::string& id, RemoveResult* out) {
  std::vector<std::string> blobs;
  TRY(db_->run("SELECT blob FROM image_blobs WHERE image = ?1", {id}, [&](const Row& r) { blobs.push_back(r.text(0)); }));
  TRY(db_->transaction([&]() -> Result<> {
    TRY(db_->exec("DELETE FROM image_mounts WHERE image = ?1", id));
    TRY(db_->exec("DELETE FROM images WHERE id = ?1", id));
    return {};
  }));
  // The rows are gone: what follows only removes what nothing references, and
  // a crash here leaves garbage that repair() collects.
  TRY(drop_unreferenced());
  for (auto& b : blobs) {
    if (TRY(db_->count("SELECT count(*) FROM image_blobs WHERE blob = ?1", b)) > 0) continue;
    if (auto d = Digest::parse(b)) TRY(content_->remove(*d));
  }
  if (out) out->deleted.push_back(*Digest::parse(id));
  return {};
}

Result<> ImageStore::discard_blobs(const std::vector<Digest>& blobs) {
  UniqueFd held = TRY(lock());
  for (auto& b : blobs)
    if (TRY(db_->count("SELECT count(*) FROM image_blobs WHERE blob = ?1", b.str())) == 0) TRY(content_->remove(b));
  return {};
}

Result<> ImageStore::discard_layers(const std::vector<Digest>& chains) {
  UniqueFd held = TRY(lock());
  for (auto& c : chains)
    if (TRY(db_->count("SELECT count(*) FROM layers WHERE chain = ?1", c.str())) == 0)
      TRY(remove_layer_dir(c.hex));
  return {};
}

Result<RemoveResult> ImageStore::remove(std::string_view name, bool force) {
  Op op = TRY(begin_op());
  ImageRecord rec = TRY(resolve(name));
  UniqueFd held = TRY(lock());
  RemoveResult out;
  std::string id = rec.id.str();
  auto ref = Reference::parse(name);
  bool by_name = false;
  if (ref && !ref->digest)
    by_name = TRY(db_->count("SELECT count(*) FROM tags WHERE name = ?1 AND image = ?2", ref->str(), id)) > 0;
  if (by_name && rec.tags.size() > 1) {
    TRY(db_->exec("DELETE FROM tags WHERE name = ?1", ref->str()));
    out.untagged.push_back(ref->familiar());
    return out;
  }
  if (!by_name && rec.tags.size() > 1 && !force)
    return fail("image " + rec.id.hex.substr(0, 12) + " is referenced in multiple repositories (use --force)");
  if (!force && TRY(in_use(id)))
    return fail("image " + std::string(name) + " (" + rec.id.hex.substr(0, 12) + ") is in use (mounted or by a container); use --force");
  if (force && TRY(db_->count("SELECT count(*) FROM image_users WHERE image = ?1", id)) > 0) {
    // Containers stand on its layers: as Docker, a forced removal takes its
    // names and leaves it dangling until the last of them is gone.
    for (auto& t : rec.tags) out.untagged.push_back(t.familiar());
    for (auto& d : rec.repo_digests) out.untagged.push_back(d);
    TRY(db_->transaction([&]() -> Result<> {
      TRY(db_->exec("DELETE FROM tags WHERE image = ?1", id));
      return db_->exec("DELETE FROM repo_digests WHERE image = ?1", id);
    }));
    return out;
  }
  if (force) {
    // A forced removal of a mounted image unmounts it first.
    std::string mp = root_ + "/image-mounts/" + rec.id.hex;
    if (is_mount_root(mp)) ::umount2(mp.c_str(), MNT_DETACH);
    ::rmdir(mp.c_str());
  }
  for (auto& t : rec.tags) out.untagged.push_back(t.familiar());
  for (auto& d : rec.repo_digests) out.untagged.push_back(d);
  TRY(delete_image(id, &out));
  return out;
}

Result<RemoveResult> ImageStore::prune(bool all) {
  Op op = TRY(begin_op());
  UniqueFd held = TRY(lock());
  RemoveResult out;
  std::vector<std::string> ids;
  std::string q = all ? "SELECT id FROM images" : "SELECT id FROM images WHERE id NOT IN (SELECT image FROM tags)";
  TRY(db_->run(q, {}, [&](const Row& r) { ids.push_back(r.text(0)); }));
  for (auto& id : ids) {
    if (TRY(in_use(id))) continue;
    auto rec = TRY(load(id));
    if (rec)
      for (auto& t : rec->tags) out.untagged.push_back(t.familiar());
    TRY(delete_image(id, &out));
  }
  return out;
}

Result<DiskUsage> ImageStore::disk_usage() const {
  DiskUsage u;
  TRY(db_->run("SELECT count(*) FROM images", {}, [&](const Row& r) { u.images = r.integer(0); }));
  TRY(db_->run("SELECT count(*) FROM images WHERE id IN (SELECT image FROM image_users) OR id IN "
               "(SELECT image FROM image_mounts WHERE count > 0)",
               {}, [&](const Row& r) { u.active = r.integer(0); }));
  // A layer's tar bytes, plus an EROFS layer's metadata beside its tar.
  // Reclaimable: layers only unused images hold.
  TRY(db_->run("SELECT chain, size, chain NOT IN (SELECT il.chain FROM image_layers il WHERE il.image IN "
               "(SELECT image FROM image_users) OR il.image IN (SELECT image FROM image_mounts WHERE count > 0)) "
               "FROM layers",
               {}, [&](const Row& r) {
                 uint64_t n = static_cast<uint64_t>(r.integer(1));
                 struct stat st;
                 if (::stat((root_ + "/layers/" + r.text(0).substr(7) + "/layer.erofs").c_str(), &st) == 0)
                   n += static_cast<uint64_t>(st.st_size);
                 u.layers_size += n;
                 if (r.integer(2)) u.reclaimable += n;
               }));
  TRY(db_->run("SELECT coalesce(sum(size), 0) FROM images", {}, [&](const Row& r) { u.images_size = r.integer(0); }));
  for (auto& d : TRY(content_->list()))
    if (auto s = content_->size(d)) u.content_size += *s;
  return u;
}

// ---------------------------------------------------------- layer mounts --

Result<> ImageStore::remove_layer_dir(const std::string& name) {
  std::string dir = root_ + "/layers/" + name;
  // An EROFS layer still mounted (in use by nothing: its rows are gone).
  if (is_mount_root(dir + "/diff") && ::umount2((dir + "/diff").c_str(), MNT_DETACH) != 0)
    return sys_error("umount " + dir + "/diff");
  return remove_tree(dir);
}

// Under lock(): mounts the EROFS layers of `image` that are not mounted. A
// layer stays mounted until it is removed (or a reboot): mounting and
// unmounting fifty layers at every start of a fifty-layer image cost a
// quarter of `run --rm`, and a fresh mount starts with cold caches.
Result<> ImageStore::mount_layers(const ImageRecord& image) {
  for (auto* c : unmounted_layers(root_, image)) {
    std::string dir = root_ + "/layers/" + c->hex;
    TRY_CTX(erofs_mount(dir + "/layer.erofs", dir + "/layer.tar", dir + "/diff"), "layer " + c->str());
  }
  return {};
}

Result<std::vector<std::string>> ImageStore::mounted_layer_dirs(const ImageRecord& image) {
  if (!unmounted_layers(root_, image).empty()) {
    UniqueFd held = TRY(lock());
    TRY(mount_layers(image));
  }
  return layer_dirs(image);
}

// ---------------------------------------------------------------- mounts --

std::vector<std::string> ImageStore::layer_dirs(const ImageRecord& image) const {
  std::vector<std::string> out;
  for (auto it = image.layers.rbegin(); it != image.layers.rend(); ++it)
    out.push_back(root_ + "/layers/" + it->hex + "/diff");
  return out;
}

Result<std::string> ImageStore::mount(const ImageRecord& image) {
  UniqueFd held = TRY(lock());
  std::string mp = root_ + "/image-mounts/" + image.id.hex;
  if (is_mount_root(mp)) {
    TRY(db_->exec("INSERT INTO image_mounts (image, count) VALUES (?1, 1) "
                  "ON CONFLICT(image) DO UPDATE SET count = count + 1",
                  image.id.str()));
    return mp;
  }
  auto lowers = layer_dirs(image);
  if (lowers.empty()) return fail("image " + image.id.hex.substr(0, 12) + ": has no layers to mount");
  TRY(mkdir_p(mp, 0700));
  // Neither the mount nor its directory outlives a failed step.
  auto made = [&]() -> Result<> {
    TRY(mount_layers(image));
    if (lowers.size() == 1) {
      // overlayfs needs two lower layers when it has no upper one.
      if (::mount(lowers[0].c_str(), mp.c_str(), nullptr, MS_BIND, nullptr) != 0)
        return sys_error("bind mount " + lowers[0] + " on " + mp);
      if (::mount(nullptr, mp.c_str(), nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY, nullptr) != 0)
        return sys_error("remount " + mp + " read-only");
    } else {
      TRY(mount_overlay(lowers, "", "", mp));
    }
    return db_->exec("INSERT OR REPLACE INTO image_mounts (image, count) VALUES (?1, 1)", image.id.str());
  }();
  if (!made) {
    if (is_mount_root(mp)) ::umount2(mp.c_str(), MNT_DETACH);
    ::rmdir(mp.c_str());
    return std::unexpected(std::move(made).error());
  }
  return mp;
}

Result<bool> ImageStore::umount(const ImageRecord& image, bool all) {
  UniqueFd held = TRY(lock());
  std::string mp = root_ + "/image-mounts/" + image.id.hex;
  int64_t n = TRY(db_->count("SELECT coalesce(max(count), 0) FROM image_mounts WHERE image = ?1", image.id.str()));
  bool mounted = is_mount_root(mp);
  if (n <= 0 && !mounted) return false;
  if (n > 1 && !all) {
    TRY(db_->exec("UPDATE image_mounts SET count = count - 1 WHERE image = ?1", image.id.str()));
    return true;
  }
  if (mounted && ::umount2(mp.c_str(), 0) != 0) return sys_error("umount " + mp);
  ::rmdir(mp.c_str());
  TRY(db_->exec("DELETE FROM image_mounts WHERE image = ?1", image.id.str()));
  return true;
}

Result<std::vector<std::pair<ImageRecord, std::string>>> ImageStore::mounts() const {
  std::vector<std::string> ids;
  TRY(db_->run("SELECT image FROM image_mounts WHERE count > 0", {}, [&](const Row& r) { ids.push_back(r.text(0)); }));
  std::vector<std::pair<ImageRecord, std::string>> out;
  for (auto& id : ids)
    if (auto rec = TRY(load(id))) out.emplace_back(*rec, root_ + "/image-mounts/" + rec->id.hex);
  return out;
}

Result<std::vector<Digest>> ImageStore::blobs(const ImageRecord& image) const {
  std::vector<Digest> out;
  TRY(db_->run("SELECT blob FROM image_blobs WHERE image = ?1 ORDER BY blob", {image.id.str()}, [&](const Row& r) {
    if (auto d = Digest::parse(r.text(0))) out.push_back(*d);
  }));
  return out;
}

// ------------------------------------------------------ container rootfs --

constexpr std::string_view kDropImageUser = "DELETE FROM image_users WHERE user = ?1";

Result<std::string> ImageStore::create_rootfs(const std::string& user, const ImageRecord& image,
                                              const std::string& dir, bool transient) {
  UniqueFd held = TRY(lock());
  // The image is ours to use from here (rmi refuses it): one statement that
  // also says whether it is still there, and whether `user` had one.
  if (auto r = db_->exec("INSERT INTO image_users (user, image) SELECT ?1, id FROM images WHERE id = ?2", user,
                         image.id.str());
      !r) {
    if (r.error().msg.find("UNIQUE") != std::string::npos) return fail("container rootfs for " + user + ": already exists");
    return std::unexpected(std::move(r).error());
  }
  if (db_->changes() == 0) return fail("image " + image.id.hex.substr(0, 12) + ": removed");
  std::string rootfs = dir + "/rootfs";
  // Nothing of it is left when a step fails: not the mount, not the directories.
  bool made_dir = !path_exists(dir);
  bool mounted = false;
  auto made = [&]() -> Result<> {
    for (auto* sub : {"/work", "/rootfs"}) TRY(mkdir_p(dir + sub, 0755));
    // The container's root directory is the upper dir's: 0755, not what the
    // caller's umask left of it (a spare's is made so, engine/spare.h).
    std::string upper = dir + "/upper";
    if (::mkdir(upper.c_str(), 0755) == 0) {
      if (::chmod(upper.c_str(), 0755) != 0) return sys_error("chmod " + upper);
    } else if (errno != EEXIST) {
      return sys_error("mkdir " + upper);
    }
    TRY(mount_layers(image));
    auto lowers = layer_dirs(image);
    if (lowers.empty()) {
      // An image without layers (FROM scratch, nothing added): the upper dir alone.
      if (::mount((dir + "/upper").c_str(), rootfs.c_str(), nullptr, MS_BIND, nullptr) != 0)
        return sys_error("bind mount " + dir + "/upper on " + rootfs);
    } else {
      TRY(mount_overlay(lowers, dir + "/upper", dir + "/work", rootfs, transient));
    }
    mounted = true;
    return Result<>{};
  }();
  if (!made) {
    if (mounted) ::umount2(rootfs.c_str(), MNT_DETACH);
    if (made_dir) (void)remove_tree(dir);
    (void)db_->exec(kDropImageUser, user);
    return std::unexpected(std::move(made).error());
  }
  return rootfs;
}

// The cache of an image's passwd and group: "berth-etc-1\n", then each file
// as its length in decimal, a newline and its bytes.
namespace {
constexpr std::string_view kEtcMagic = "berth-etc-1\n";
std::string etc_cache_path(const std::string& root, const ImageRecord& image) {
  return root + "/layers/" + image.layers.back().hex + "/etc-files";
}
}  // namespace

std::optional<std::pair<std::string, std::string>> ImageStore::etc_files(const ImageRecord& image) const {
  if (image.layers.empty()) return std::nullopt;
  auto text = read_file(etc_cache_path(root_, image));
  if (!text || !std::string_view(*text).starts_with(kEtcMagic)) return std::nullopt;
  std::string_view rest = std::string_view(*text).substr(kEtcMagic.size());
  std::string files[2];
  for (auto& f : files) {
    size_t nl = rest.find('\n');
    if (nl == std::string_view::npos || nl == 0 || nl > 9) return std::nullopt;
    size_t n = 0;
    for (char c : rest.substr(0, nl)) {
      if (c < '0' || c > '9') return std::nullopt;
      n = n * 10 + static_cast<size_t>(c - '0');
    }
    rest.remove_prefix(nl + 1);
    if (n > rest.size()) return std::nullopt;
    f = std::string(rest.substr(0, n));
    rest.remove_prefix(n);
  }
  if (!rest.empty()) return std::nullopt;
  return std::pair{std::move(files[0]), std::move(files[1])};
}

void ImageStore::save_etc_files(const ImageRecord& image, std::string_view passwd, std::string_view group) const {
  if (image.layers.empty()) return;
  std::string text(kEtcMagic);
  for (auto f : {passwd, group}) text.append(std::to_string(f.size())).append("\n").append(f);
  // A name of our own: two first containers of the image may write it at once.
  std::string path = etc_cache_path(root_, image), tmp = path + "." + std::to_string(::getpid()) + ".tmp";
  if (!write_new_file(tmp, text, 0600)) return;
  if (::rename(tmp.c_str(), path.c_str()) != 0) ::unlink(tmp.c_str());
}

Result<std::string> ImageStore::mount_rootfs(const ImageRecord& image, const std::string& dir) {
  std::string rootfs = dir + "/rootfs";
  if (is_mount_root(rootfs)) return rootfs;
  auto lowers = TRY(mounted_layer_dirs(image));
  // A volatile mount leaves work/work/incompat/volatile, and overlayfs refuses
  // that work dir until it goes: the rootfs of a transient container, which
  // is mounted volatile again.
  std::string incompat = dir + "/work/work/incompat";
  bool transient = path_exists(incompat + "/volatile");
  if (transient) TRY(remove_tree(incompat));
  if (lowers.empty()) {
    if (::mount((dir + "/upper").c_str(), rootfs.c_str(), nullptr, MS_BIND, nullptr) != 0)
      return sys_error("bind mount " + dir + "/upper on " + rootfs);
  } else {
    TRY(mount_overlay(lowers, dir + "/upper", dir + "/work", rootfs, transient));
  }
  return rootfs;
}

void ImageStore::prepare_remove_rootfs() { db_->prepare(kDropImageUser); }

Result<> ImageStore::remove_rootfs(const std::string& user, const std::string& dir, bool later,
                                   const std::function<Result<>()>& with) {
  UniqueFd held = TRY(lock());
  std::string rootfs = dir + "/rootfs";
  // Not mounted (EINVAL) or never made (ENOENT) is fine: reading mountinfo to
  // ask first cost more than the unmount. Trash is unmounted by whoever
  // removes it (remove_trash), off the caller's path.
  if (!later && ::umount2(rootfs.c_str(), MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT)
    return sys_error("umount " + rootfs);
  TRY(later ? trash_tree(dir) : remove_tree(dir));
  if (!with) return db_->exec(kDropImageUser, user);
  return db_->transaction([&]() -> Result<> {
    TRY(db_->exec(kDropImageUser, user));
    return with();
  });
}

Result<std::string> ImageStore::read_config(const ImageRecord& image) const { return content_->read(image.id); }
Result<std::string> ImageStore::read_manifest(const ImageRecord& image) const {
  return content_->read(image.manifest);
}

}  // namespace berth::image
