// EROFS metadata for a tar layer: libarchive reads the tar's headers only (the
// data is skipped, never read); the entries build a tree with the unpacker's
// rules; the tree is laid out as inodes, directory blocks and chunk indexes
// pointing into the tar.
#include "image/erofs.h"

#include <archive.h>
#include <archive_entry.h>
#include <endian.h>
#include <fcntl.h>
#include <linux/mount.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "image/tar_source.h"
#include "util/fd.h"
#include "util/fs.h"
#include "util/text.h"

namespace berth::image {
namespace {

// ---------------------------------------------------------------------------
// On-disk format (fs/erofs/erofs_fs.h), little-endian throughout.

constexpr unsigned kBlkBits = 9;
constexpr uint64_t kBlk = 1u << kBlkBits;
constexpr uint32_t kMagic = 0xE0F5E1E2;
constexpr uint64_t kSuperOff = 1024;
constexpr uint32_t kIncompatChunkedFile = 0x4, kIncompatDeviceTable = 0x8;
constexpr uint64_t kDevtSlotSize = 128;
// The device table follows the 128-byte superblock; the inodes follow it.
constexpr uint16_t kDevtSlotOff = (kSuperOff + 128) / kDevtSlotSize;
constexpr uint64_t kInodesStart = (kDevtSlotOff + 1) * kDevtSlotSize;
constexpr uint16_t kFlatPlain = 0, kFlatInline = 2, kChunkBased = 4;
constexpr uint16_t kChunkIndexes = 0x20, kChunkBitsMask = 0x1f;
constexpr uint32_t kNullAddr = 0xffffffff;
constexpr uint64_t kCompactSize = 32, kExtendedSize = 64, kXattrHeader = 12, kDirent = 12;
constexpr size_t kNameMax = 255;
// The tar is device 1; device 0 is the metadata image itself.
constexpr uint16_t kTarDevice = 1;
enum : uint8_t { kFtUnknown, kFtReg, kFtDir, kFtChr, kFtBlk, kFtFifo, kFtSock, kFtLnk };

uint8_t ftype_of(mode_t m) {
  switch (m & S_IFMT) {
    case S_IFREG: return kFtReg;
    case S_IFDIR: return kFtDir;
    case S_IFCHR: return kFtChr;
    case S_IFBLK: return kFtBlk;
    case S_IFIFO: return kFtFifo;
    case S_IFSOCK: return kFtSock;
    case S_IFLNK: return kFtLnk;
    default: return kFtUnknown;
  }
}

void put16(std::string& b, uint64_t off, uint16_t v) { v = htole16(v), std::memcpy(&b[off], &v, 2); }
void put32(std::string& b, uint64_t off, uint32_t v) { v = htole32(v), std::memcpy(&b[off], &v, 4); }
void put64(std::string& b, uint64_t off, uint64_t v) { v = htole64(v), std::memcpy(&b[off], &v, 8); }
uint16_t get16(std::string_view b, uint64_t off) { uint16_t v; std::memcpy(&v, &b[off], 2); return le16toh(v); }
uint32_t get32(std::string_view b, uint64_t off) { uint32_t v; std::memcpy(&v, &b[off], 4); return le32toh(v); }
uint64_t get64(std::string_view b, uint64_t off) { uint64_t v; std::memcpy(&v, &b[off], 8); return le64toh(v); }

constexpr uint64_t round_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

// The xattr name prefixes EROFS indexes (EROFS_XATTR_INDEX_*). The POSIX ACLs
// are whole names with an empty suffix.
struct Prefix {
  std::string_view name;
  uint8_t index;
  bool whole;
};
constexpr Prefix kPrefixes[] = {{"user.", 1, false},
                                {"system.posix_acl_access", 2, true},
                                {"system.posix_acl_default", 3, true},
                                {"trusted.", 4, false},
                                {"security.", 6, false}};

// ---------------------------------------------------------------------------
// The tree the tar describes.

struct Xattr {
  std::string name, value;
};

struct Node {
  mode_t mode = S_IFDIR | 0755;
  uint32_t uid = 0, gid = 0;
  int64_t mtime = 0;
  uint32_t mtime_ns = 0;
  uint64_t size = 0;      // regular files: data bytes; symlinks: target length
  uint64_t data_off = 0;  // regular files: where the data starts in the tar
  uint32_t rdev = 0;      // new_encode_dev() form
  std::string target;     // symlink
  std::vector<Xattr> xattrs;
  bool opaque = false;    // the layer has .wh..wh..opq here
  std::map<std::string, std::shared_ptr<Node>> children;  // byte order: EROFS's dirent order

  // Layout, filled in by the writer.
  uint32_t nlink = 0;
  uint64_t nid = 0, ino = 0;
  bool placed = false;
  std::string data;  // directory blocks or symlink target, stored in the image
  std::vector<std::pair<uint64_t, const Node*>> nid_slots;  // dirent nids to fill in `data`
  uint16_t layout = kFlatPlain;
  uint64_t isize = 0, xsize = 0, tail = 0;  // tail: inline bytes or chunk index bytes
  uint32_t startblk = kNullAddr;
  unsigned chunk_bits = 0;
};

bool is_dir(const Node& n) { return S_ISDIR(n.mode); }

class TreeBuilder {
 public:
  TreeBuilder(const ErofsOptions& o, ErofsStats& st, uint64_t tar_size)
      : o_(o), st_(st), tar_size_(tar_size), root_(std::make_shared<Node>()) {}

  Result<> add(struct archive_entry* e, uint64_t data_off);
  std::shared_ptr<Node> root() const { return root_; }
  // Where the last block of file data ends: within the tar, once its size is known.
  uint64_t data_end() const { return data_end_; }

 private:
  std::unexpected<Error> err(const std::string& shown, const std::string& what) {
    return fail(o_.what + ": entry " + shown + ": " + what);
  }
  // The directory holding comps' last component, made (0755, root-owned) where
  // missing. Nothing is followed: a symlink or file on the way is an error.
  Result<Node*> parent_of(const std::vector<std::string>& comps, const std::string& shown);

  const ErofsOptions& o_;
  ErofsStats& st_;
  uint64_t tar_size_;
  uint64_t data_end_ = 0;
  std::shared_ptr<Node> root_;
};

Result<Node*> TreeBuilder::parent_of(const std::vector<std::string>& comps, const std::string& shown) {
  Node* cur = root_.get();
  for (size_t i = 0; i + 1 < comps.size(); ++i) {
    auto [it, made] = cur->children.try_emplace(comps[i]);
    if (made) it->second = std::make_shared<Node>();
    Node* next = it->second.get();
    if (S_ISLNK(next->mode)) return fail(o_.what + ": entry " + shown + " goes through a symlink");
    if (!is_dir(*next)) return err(shown, printable(comps[i]) + " is not a directory");
    cur = next;
  }
  return cur;
}

Result<> TreeBuilder::add(struct archive_entry* e, uint64_t data_off) {
  const char* raw = archive_entry_pathname(e);
  if (!raw) raw = archive_entry_pathname_utf8(e);
  if (!raw) return fail(o_.what + ": entry without a name");
  const std::string shown = printable(raw);
  auto comps_opt = entry_components(raw);
  if (!comps_opt) return err(shown, "absolute name or \"..\" component refused");
  auto& comps = *comps_opt;
  for (auto& c : comps)
    if (c.size() > kNameMax) return err(shown, "name component longer than 255 bytes");

  const char* hardlink = archive_entry_hardlink(e);
  const mode_t type = archive_entry_filetype(e);
  const int64_t uid = archive_entry_uid(e), gid = archive_entry_gid(e);
  if (uid < 0 || uid >= 0xffffffffLL || gid < 0 || gid >= 0xffffffffLL) return err(shown, "owner out of range");
  auto meta = std::make_shared<Node>();
  meta->mode = type | (archive_entry_mode(e) & 07777);
  meta->uid = static_cast<uint32_t>(uid);
  meta->gid = static_cast<uint32_t>(gid);
  meta->mtime = archive_entry_mtime(e);
  meta->mtime_ns = archive_entry_mtime_is_set(e) ? static_cast<uint32_t>(archive_entry_mtime_nsec(e)) : 0;

  if (archive_entry_xattr_reset(e) > 0) {
    const char* xn;
    const void* xv;
    size_t xs;
    while (archive_entry_xattr_next(e, &xn, &xv, &xs) == ARCHIVE_OK) {
      std::string name(xn);
      // The overlay's own xattrs come from whiteout entries only: a layer that
      // sets them directly could redirect lookups or fake opaque directories.
      bool overlay = name.rfind("trusted.overlay.", 0) == 0 || name.rfind("user.overlay.", 0) == 0;
      bool indexed = std::any_of(std::begin(kPrefixes), std::end(kPrefixes), [&](const Prefix& p) {
        return p.whole ? name == p.name : name.size() > p.name.size() && name.rfind(p.name, 0) == 0;
      });
      if (overlay || !indexed) {
        ++st_.xattrs_skipped;
        continue;
      }
      if (xs > 0xffff) return err(shown, "xattr " + printable(name) + " larger than 64 KiB");
      // pax archives from libarchive carry each xattr twice (SCHILY and
      // LIBARCHIVE records): the last one wins.
      std::string value(static_cast<const char*>(xv), xs);
      auto same = std::find_if(meta->xattrs.begin(), meta->xattrs.end(), [&](const Xattr& x) { return x.name == name; });
      if (same != meta->xattrs.end())
        same->value = std::move(value);
      else
        meta->xattrs.push_back({std::move(name), std::move(value)});
    }
  }

  // The root directory: mode, owner and time only.
  if (comps.empty()) {
    if (hardlink || type != AE_IFDIR) return err(shown, "the root is not a directory");
    root_->mode = meta->mode;
    root_->uid = meta->uid;
    root_->gid = meta->gid;
    root_->mtime = meta->mtime;
    root_->mtime_ns = meta->mtime_ns;
    return {};
  }
  const std::string& base = comps.back();

  if (base.rfind(".wh.", 0) == 0) {
    Node* parent = TRY(parent_of(comps, shown));
    if (base == ".wh..wh..opq") {
      parent->opaque = true;
      return {};
    }
    if (base.rfind(".wh..wh.", 0) == 0) return {};  // aufs metadata: nothing for overlayfs
    std::string name = base.substr(4);
    if (name.empty() || name == "." || name == "..") return err(shown, "bad whiteout");
    auto wh = std::make_shared<Node>();
    wh->mode = S_IFCHR;
    parent->children[name] = std::move(wh);
    return {};
  }

  Node* parent = TRY(parent_of(comps, shown));

  if (hardlink) {
    const std::string tshown = printable(hardlink);
    auto outside = [&] {
      return fail(o_.what + ": hardlink " + shown + " -> " + tshown + " points outside the layer");
    };
    auto tcomps = entry_components(hardlink);
    if (!tcomps || tcomps->empty()) return outside();
    const Node* dir = root_.get();
    for (size_t i = 0; i + 1 < tcomps->size(); ++i) {
      auto it = dir->children.find((*tcomps)[i]);
      if (it == dir->children.end() || !is_dir(*it->second)) return outside();
      dir = it->second.get();
    }
    auto it = dir->children.find(tcomps->back());
    if (it == dir->children.end() || !S_ISREG(it->second->mode)) return outside();
    parent->children[base] = it->second;  // a link to itself changes nothing
    return {};
  }

  switch (type) {
    case AE_IFDIR: {
      auto& slot = parent->children[base];
      if (slot && is_dir(*slot)) {
        // An existing directory keeps its entries (and opaque mark).
        meta->children = std::move(slot->children);
        meta->opaque = slot->opaque;
      }
      slot = std::move(meta);
      return {};
    }
    case AE_IFREG: {
      if (archive_entry_sparse_count(e) > 0) return err(shown, "sparse files are not supported");
      int64_t size = archive_entry_size(e);
      if (size < 0) return err(shown, "negative size");
      meta->size = static_cast<uint64_t>(size);
      meta->data_off = data_off;
      // The kernel reads whole blocks: the last one's tar padding included.
      if (data_off % kBlk || data_off > tar_size_ || round_up(meta->size, kBlk) > tar_size_ - data_off)
        return err(shown, "data outside the tar");
      data_end_ = std::max(data_end_, data_off + round_up(meta->size, kBlk));
      break;
    }
    case AE_IFLNK: {
      const char* target = archive_entry_symlink(e);
      if (!target) target = archive_entry_symlink_utf8(e);
      if (!target || !*target) return err(shown, "symlink without a target");
      meta->target = target;
      meta->mode = S_IFLNK | 0777;  // as symlinkat(2) makes them: the unpacker's result
      if (meta->target.size() >= 4096) return err(shown, "symlink target longer than 4095 bytes");
      meta->size = meta->target.size();
      break;
    }
    case AE_IFCHR:
    case AE_IFBLK: {
      uint64_t maj = archive_entry_rdevmajor(e), min = archive_entry_rdevminor(e);
      if (maj > 0xfff || min > 0xfffff) return err(shown, "device number out of range");
      // new_encode_dev(): the kernel's 32-bit device number.
      meta->rdev = static_cast<uint32_t>((min & 0xff) | (maj << 8) | ((min & ~0xffull) << 12));
      break;
    }
    case AE_IFIFO:
      break;
    default:
      return err(shown, "unsupported file type 0" + std::to_string(type >> 12));
  }
  // Replaces whatever was there, a whole directory included.
  parent->children[base] = std::move(meta);
  return {};
}

// ---------------------------------------------------------------------------
// The tar sources: a file read with pread (data skipped, never read:
// tar_source.h), or chunks pulled from a stream as they pass (data read
// through, never copied).

struct StreamSource {
  const TarChunkFn* next;
  uint64_t size = 0;
  bool ended = false;
  std::optional<Error> error;
};

la_ssize_t stream_read(struct archive* a, void* data, const void** out) {
  auto* s = static_cast<StreamSource*>(data);
  if (s->ended) return 0;
  auto chunk = (*s->next)();
  if (!chunk) {
    s->error = std::move(chunk).error();
    archive_set_error(a, EIO, "read tar");
    return ARCHIVE_FATAL;
  }
  s->ended = chunk->empty();
  s->size += chunk->size();
  *out = chunk->data();
  return static_cast<la_ssize_t>(chunk->size());
}

struct ArchiveFree {
  void operator()(struct archive* a) const { archive_read_free(a); }
};

// ---------------------------------------------------------------------------
// Layout and encoding.

class Writer {
 public:
  Writer(const ErofsOptions& o, ErofsStats& st, uint64_t tar_size) : o_(o), st_(st), tar_size_(tar_size) {}
  Result<std::string> build(Node& root);

 private:
  void collect(Node& root);
  Result<> encode_xattrs(const Node& n, std::string* out);
  void make_dir_data(Node& d, const Node& parent);
  void write_inode(std::string& img, const Node& n);

  const ErofsOptions& o_;
  ErofsStats& st_;
  uint64_t tar_size_;
  std::vector<Node*> order_;  // every inode once, root first
  int64_t epoch_ = 0;
  uint32_t epoch_ns_ = 0;
};

// Breadth-first from the root, so the root (whose nid the superblock holds in
// 16 bits) comes first and a directory's entries sit near each other.
void Writer::collect(Node& root) {
  root.placed = true;
  order_.push_back(&root);
  for (size_t i = 0; i < order_.size(); ++i) {
    Node* d = order_[i];
    d->nlink = is_dir(*d) ? 2 : d->nlink;
    for (auto& [name, child] : d->children) {
      if (is_dir(*child)) ++d->nlink;
      else ++child->nlink;
      if (!child->placed) {
        child->placed = true;
        order_.push_back(child.get());
      }
    }
  }
}

Result<> Writer::encode_xattrs(const Node& n, std::string* out) {
  std::vector<Xattr> all = n.xattrs;
  if (n.opaque) all.push_back({"trusted.overlay.opaque", "y"});
  if (all.empty()) return {};
  std::string body(kXattrHeader, '\0');
  for (auto& x : all) {
    const Prefix* p = nullptr;
    for (auto& c : kPrefixes)
      if (c.whole ? x.name == c.name : x.name.rfind(c.name, 0) == 0) p = &c;
    std::string_view suffix = std::string_view(x.name).substr(p->name.size());
    if (suffix.size() > kNameMax) return fail(o_.what + ": xattr " + printable(x.name) + ": name too long");
    uint64_t at = body.size();
    body.resize(round_up(at + 4 + suffix.size() + x.value.size(), 4));
    body[at] = static_cast<char>(suffix.size());
    body[at + 1] = static_cast<char>(p->index);
    put16(body, at + 2, static_cast<uint16_t>(x.value.size()));
    std::memcpy(&body[at + 4], suffix.data(), suffix.size());
    std::memcpy(&body[at + 4 + suffix.size()], x.value.data(), x.value.size());
  }
  // i_xattr_icount counts 4-byte units after the 12-byte header, plus one.
  if ((body.size() - kXattrHeader) / 4 + 1 > 0xffff) return fail(o_.what + ": too many xattrs on one file");
  *out = std::move(body);
  return {};
}

// Directory blocks: each holds its dirents then their names; a name never
// crosses a block, and the last name of a block ends at the block's end (or
// the directory's). Entries are sorted by bytes across the whole directory,
// "." and ".." included: lookups binary-search them.
void Writer::make_dir_data(Node& d, const Node& parent) {
  std::vector<std::pair<std::string_view, const Node*>> ents;
  ents.emplace_back(".", &d);
  ents.emplace_back("..", &parent);
  for (auto& [name, child] : d.children) ents.emplace_back(name, child.get());
  std::sort(ents.begin(), ents.end());
  d.data.clear();
  d.nid_slots.clear();
  for (size_t i = 0; i < ents.size();) {
    size_t n = 0, used = 0;
    while (i + n < ents.size() && used + kDirent + ents[i + n].first.size() <= kBlk) used += kDirent + ents[i + n++].first.size();
    uint64_t blk = d.data.size();
    d.data.resize(blk + used);
    uint64_t nameoff = n * kDirent;
    for (size_t k = 0; k < n; ++k) {
      auto [name, node] = ents[i + k];
      uint64_t de = blk + k * kDirent;
      d.nid_slots.emplace_back(de, node);
      put16(d.data, de + 8, static_cast<uint16_t>(nameoff));
      d.data[de + 10] = static_cast<char>(ftype_of(node->mode));
      std::memcpy(&d.data[blk + nameoff], name.data(), name.size());
      nameoff += name.size();
    }
    i += n;
    if (i < ents.size()) d.data.resize(round_up(d.data.size(), kBlk));  // the rest of the block is zeros
  }
  d.size = d.data.size();
}

void Writer::write_inode(std::string& img, const Node& n) {
  uint64_t at = n.nid * 32;
  bool compact = n.isize == kCompactSize;
  uint16_t xcount = n.xsize ? static_cast<uint16_t>((n.xsize - kXattrHeader) / 4 + 1) : 0;
  put16(img, at, static_cast<uint16_t>((compact ? 0 : 1) | (n.layout << 1)));
  put16(img, at + 2, xcount);
  put16(img, at + 4, static_cast<uint16_t>(n.mode));
  uint32_t iu = n.startblk;
  if (n.layout == kChunkBased) iu = kChunkIndexes | n.chunk_bits;  // erofs_inode_chunk_info.format
  if (S_ISCHR(n.mode) || S_ISBLK(n.mode)) iu = n.rdev;
  if (S_ISFIFO(n.mode) || S_ISSOCK(n.mode)) iu = 0;
  if (compact) {
    put16(img, at + 6, static_cast<uint16_t>(n.nlink));
    put32(img, at + 8, static_cast<uint32_t>(n.size));
    put32(img, at + 12, 0);  // mtime relative to the epoch: the epoch itself
    put32(img, at + 16, iu);
    put32(img, at + 20, static_cast<uint32_t>(n.ino));
    put16(img, at + 24, static_cast<uint16_t>(n.uid));
    put16(img, at + 26, static_cast<uint16_t>(n.gid));
  } else {
    put64(img, at + 8, n.size);
    put32(img, at + 16, iu);
    put32(img, at + 20, static_cast<uint32_t>(n.ino));
    put32(img, at + 24, n.uid);
    put32(img, at + 28, n.gid);
    put64(img, at + 32, static_cast<uint64_t>(n.mtime));
    put32(img, at + 40, n.mtime_ns);
    put32(img, at + 44, n.nlink);
  }
}

Result<std::string> Writer::build(Node& root) {
  collect(root);
  // Parents, for "..": the order is breadth-first, so a directory's parent
  // is already known when it is reached.
  std::unordered_map<const Node*, const Node*> parent_of{{&root, &root}};
  for (Node* d : order_)
    for (auto& [name, child] : d->children)
      if (is_dir(*child)) parent_of[child.get()] = d;

  // The epoch compact inodes share: the most common mtime. Older kernels
  // (before compact inodes had an mtime) use it for every compact inode, so
  // only inodes with exactly this mtime are compact.
  std::map<std::pair<int64_t, uint32_t>, uint64_t> times;
  for (Node* n : order_) ++times[{n->mtime, n->mtime_ns}];
  auto common = std::max_element(times.begin(), times.end(), [](auto& x, auto& y) { return x.second < y.second; });
  epoch_ = common->first.first;
  epoch_ns_ = common->first.second;

  // Pass 1: sizes and places. Every inode record (inode, xattrs, inline data
  // or chunk indexes) that fits in a block stays inside one: inline data must
  // (the kernel maps it from the inode's block), and the rest reads simpler.
  std::vector<std::string> xattrs(order_.size());
  uint64_t pos = kInodesStart;
  for (size_t i = 0; i < order_.size(); ++i) {
    Node& n = *order_[i];
    n.ino = i + 1;
    TRY(encode_xattrs(n, &xattrs[i]));
    if (is_dir(n)) make_dir_data(n, *parent_of[&n]);
    if (S_ISLNK(n.mode)) n.data = n.target;
    bool compact = n.uid <= 0xffff && n.gid <= 0xffff && n.nlink <= 0xffff && n.size <= 0xffffffff &&
                   n.mtime == epoch_ && n.mtime_ns == epoch_ns_;
    n.isize = compact ? kCompactSize : kExtendedSize;
    n.xsize = xattrs[i].size();
    n.layout = kFlatPlain;
    n.tail = 0;
    uint64_t head = n.isize + n.xsize;
    if (S_ISREG(n.mode) && n.size > 0) {
      n.layout = kChunkBased;
      n.chunk_bits = 0;
      while (n.chunk_bits < o_.max_chunk_bits && n.chunk_bits < 31 && (kBlk << n.chunk_bits) < n.size) ++n.chunk_bits;
      uint64_t chunks = (n.size + (kBlk << n.chunk_bits) - 1) / (kBlk << n.chunk_bits);
      n.tail = round_up(head, 8) - head + chunks * 8;
    } else if (!n.data.empty()) {
      uint64_t t = n.data.size() % kBlk;
      if (t && head + t <= kBlk) {
        n.layout = kFlatInline;
        n.tail = t;
      }
    }
    uint64_t rec = head + n.tail;
    if (pos % kBlk + rec > kBlk && rec <= kBlk) pos = round_up(pos, kBlk);
    n.nid = pos / 32;
    pos = round_up(pos + rec, 32);
  }

  // Pass 2: data blocks of directories and symlinks after the inodes.
  uint64_t blk = round_up(pos, kBlk) / kBlk;
  for (Node* n : order_) {
    if (n->data.empty() || n->layout == kChunkBased) continue;
    uint64_t full = n->layout == kFlatInline ? n->data.size() / kBlk : round_up(n->data.size(), kBlk) / kBlk;
    n->startblk = full ? static_cast<uint32_t>(blk) : 0;
    blk += full;
  }
  if (blk >= kNullAddr) return fail(o_.what + ": metadata larger than 2 TiB");

  std::string img(blk * kBlk, '\0');
  // Superblock.
  put32(img, kSuperOff, kMagic);
  img[kSuperOff + 12] = static_cast<char>(kBlkBits);
  put16(img, kSuperOff + 14, static_cast<uint16_t>(root.nid));
  put64(img, kSuperOff + 16, order_.size());           // inos
  put64(img, kSuperOff + 24, static_cast<uint64_t>(epoch_));  // epoch (build_time)
  put32(img, kSuperOff + 32, epoch_ns_);
  put32(img, kSuperOff + 36, static_cast<uint32_t>(blk));     // blocks of this device
  put32(img, kSuperOff + 40, 0);                              // meta_blkaddr: nid 0 is byte 0
  put32(img, kSuperOff + 80, kIncompatChunkedFile | kIncompatDeviceTable);
  put16(img, kSuperOff + 86, 1);                              // extra_devices
  put16(img, kSuperOff + 88, kDevtSlotOff);
  // The tar's slot: no tag (a mount must name the tar with device=), its
  // size, and no unified address (chunks name it by device id).
  uint64_t slot = kDevtSlotOff * kDevtSlotSize;
  put32(img, slot + 64, static_cast<uint32_t>(round_up(tar_size_, kBlk) / kBlk));

  for (size_t i = 0; i < order_.size(); ++i) {
    Node& n = *order_[i];
    write_inode(img, n);
    uint64_t at = n.nid * 32 + n.isize;
    if (n.xsize) std::memcpy(&img[at], xattrs[i].data(), n.xsize);
    at += n.xsize;
    for (auto [off, child] : n.nid_slots) put64(n.data, off, child->nid);
    if (n.layout == kChunkBased) {
      at = round_up(at, 8);
      uint64_t per = uint64_t{1} << n.chunk_bits, chunks = (n.size - 1) / (kBlk << n.chunk_bits) + 1;
      for (uint64_t c = 0; c < chunks; ++c, at += 8) {
        put16(img, at, 0);
        put16(img, at + 2, kTarDevice);
        put32(img, at + 4, static_cast<uint32_t>(n.data_off / kBlk + c * per));
      }
    } else if (!n.data.empty()) {
      uint64_t full = n.layout == kFlatInline ? n.data.size() / kBlk * kBlk : n.data.size();
      if (full) std::memcpy(&img[n.startblk * kBlk], n.data.data(), full);
      if (n.layout == kFlatInline) std::memcpy(&img[at], n.data.data() + full, n.data.size() - full);
    }
  }
  st_.inodes = order_.size();
  st_.meta_bytes = img.size();
  return img;
}

// ---------------------------------------------------------------------------
// The checker: every read bounds-checked, the input may be anything.

class Checker {
 public:
  Checker(std::string_view img, uint64_t tar_size) : img_(img), tar_size_(tar_size) {}
  Result<> run();

 private:
  struct Inode {
    uint64_t nid, at, isize, xsize, size;
    uint16_t layout, mode;
    uint32_t iu, nlink;
  };
  std::unexpected<Error> bad(uint64_t nid, const std::string& what) {
    return fail("erofs image: nid " + std::to_string(nid) + ": " + what);
  }
  bool in(uint64_t off, uint64_t len) const { return off <= img_.size() && len <= img_.size() - off; }
  Result<Inode> inode(uint64_t nid);
  Result<> xattrs(const Inode& n);
  Result<std::string> flat_data(const Inode& n);
  Result<> chunks(const Inode& n);
  Result<> dir(const Inode& d, uint64_t parent, std::vector<std::pair<uint64_t, uint64_t>>& subdirs);

  std::string_view img_;
  uint64_t tar_size_, dev_bytes_ = 0;
  std::map<uint64_t, uint32_t> links_;  // non-directories: nid -> entries naming it
  std::map<uint64_t, uint32_t> nlink_;
  std::set<uint64_t> dirs_seen_;
};

Result<Checker::Inode> Checker::inode(uint64_t nid) {
  Inode n{};
  n.nid = nid;
  if (nid > img_.size() / 32) return bad(nid, "outside the image");
  n.at = nid * 32;
  if (!in(n.at, kCompactSize)) return bad(nid, "outside the image");
  uint16_t fmt = get16(img_, n.at);
  if (fmt & ~0xfu) return bad(nid, "unknown inode format bits");
  n.isize = (fmt & 1) ? kExtendedSize : kCompactSize;
  if (!in(n.at, n.isize)) return bad(nid, "outside the image");
  n.layout = fmt >> 1;
  uint16_t xcount = get16(img_, n.at + 2);
  n.xsize = xcount ? kXattrHeader + 4ull * (xcount - 1) : 0;
  n.mode = get16(img_, n.at + 4);
  n.iu = get32(img_, n.at + 16);
  if (fmt & 1) {
    n.size = get64(img_, n.at + 8);
    n.nlink = get32(img_, n.at + 44);
  } else {
    n.size = get32(img_, n.at + 8);
    n.nlink = get16(img_, n.at + 6);
  }
  if (!in(n.at + n.isize, n.xsize)) return bad(nid, "xattrs outside the image");
  if (ftype_of(n.mode) == kFtUnknown) return bad(nid, "bad mode");
  if (n.layout != kFlatPlain && n.layout != kFlatInline && n.layout != kChunkBased)
    return bad(nid, "unsupported data layout " + std::to_string(n.layout));
  TRY(xattrs(n));
  bool has_data = S_ISREG(n.mode) || S_ISDIR(n.mode) || S_ISLNK(n.mode);
  if (!has_data && (n.size || n.layout != kFlatPlain)) return bad(nid, "special file with data");
  if (n.layout == kChunkBased && !S_ISREG(n.mode)) return bad(nid, "chunks on a non-regular file");
  if (n.layout == kChunkBased) TRY(chunks(n));
  if (S_ISREG(n.mode) && n.layout != kChunkBased) TRY(flat_data(n));
  if (S_ISLNK(n.mode)) {
    std::string target = TRY(flat_data(n));
    if (target.empty() || target.size() >= 4096 || target.find('\0') != target.npos) return bad(nid, "bad symlink");
  }
  return n;
}

Result<> Checker::xattrs(const Inode& n) {
  if (!n.xsize) return {};
  uint64_t at = n.at + n.isize;
  if (img_[at + 4] != 0) return bad(n.nid, "shared xattrs");
  uint64_t p = at + kXattrHeader, end = at + n.xsize;
  while (p < end) {
    if (end - p < 4) return bad(n.nid, "truncated xattr");
    uint8_t len = static_cast<uint8_t>(img_[p]), idx = static_cast<uint8_t>(img_[p + 1]);
    uint64_t vlen = get16(img_, p + 2), total = round_up(4 + len + vlen, 4);
    if (total > end - p) return bad(n.nid, "xattr outside its inode");
    const Prefix* pre = nullptr;
    for (auto& c : kPrefixes)
      if (c.index == idx) pre = &c;
    if (!pre || (pre->whole ? len != 0 : len == 0)) return bad(n.nid, "bad xattr name");
    if (std::memchr(&img_[p + 4], '\0', len)) return bad(n.nid, "NUL in xattr name");
    p += total;
  }
  return {};
}

// The bytes of a flat inode: whole blocks at startblk, then (inline) the tail
// after the inode, inside the inode's block.
Result<std::string> Checker::flat_data(const Inode& n) {
  if (n.layout == kChunkBased) return bad(n.nid, "expected flat data");
  if (n.size > img_.size()) return bad(n.nid, "data larger than the image");
  uint64_t full = n.layout == kFlatInline ? n.size / kBlk * kBlk : n.size;
  std::string out;
  if (full) {
    if (n.iu == kNullAddr || !in(uint64_t{n.iu} * kBlk, round_up(full, kBlk))) return bad(n.nid, "data outside the image");
    out.assign(img_.substr(uint64_t{n.iu} * kBlk, full));
  }
  if (n.layout == kFlatInline) {
    uint64_t at = n.at + n.isize + n.xsize, t = n.size - full;
    if (!t || !in(at, t) || at % kBlk + t > kBlk) return bad(n.nid, "inline data crosses its block");
    out.append(img_.substr(at, t));
  }
  return out;
}

Result<> Checker::chunks(const Inode& n) {
  if ((n.iu & 0xffff) & ~(kChunkIndexes | kChunkBitsMask) || !(n.iu & kChunkIndexes))
    return bad(n.nid, "unsupported chunk format");
  unsigned bits = kBlkBits + (n.iu & kChunkBitsMask);
  uint64_t csize = uint64_t{1} << bits, count = n.size ? (n.size - 1) / csize + 1 : 0;
  uint64_t at = round_up(n.at + n.isize + n.xsize, 8);
  if (count > img_.size() / 8 || !in(at, count * 8)) return bad(n.nid, "chunk indexes outside the image");
  uint64_t limit = std::min(tar_size_, dev_bytes_);
  for (uint64_t c = 0; c < count; ++c, at += 8) {
    uint32_t blk = get32(img_, at + 4);
    if (blk == kNullAddr) continue;  // a hole
    if (get16(img_, at) != 0 || get16(img_, at + 2) != kTarDevice) return bad(n.nid, "chunk on an unknown device");
    uint64_t len = round_up(std::min(csize, n.size - c * csize), kBlk), start = uint64_t{blk} * kBlk;
    if (start > limit || len > limit - start) return bad(n.nid, "chunk outside the tar");
  }
  return {};
}

Result<> Checker::dir(const Inode& d, uint64_t parent, std::vector<std::pair<uint64_t, uint64_t>>& subdirs) {
  std::string data = TRY(flat_data(d));
  std::string prev;
  bool first = true, dot = false, dotdot = false;
  uint32_t nsub = 0;
  for (uint64_t b = 0; b < data.size(); b += kBlk) {
    std::string_view blk = std::string_view(data).substr(b, kBlk);
    if (blk.size() < kDirent) return bad(d.nid, "truncated directory block");
    uint64_t n0 = get16(blk, 8);
    if (n0 < kDirent || n0 % kDirent || n0 >= blk.size()) return bad(d.nid, "bad first dirent");
    for (uint64_t k = 0; k < n0 / kDirent; ++k) {
      uint64_t de = k * kDirent, off = get16(blk, de + 8);
      uint64_t endoff = k + 1 < n0 / kDirent ? get16(blk, de + 8 + kDirent) : blk.size();
      if (off < n0 || off > endoff || endoff > blk.size()) return bad(d.nid, "bad dirent name offset");
      std::string_view name = blk.substr(off, endoff - off);
      if (k + 1 == n0 / kDirent) name = name.substr(0, name.find('\0'));
      if (name.empty() || name.size() > kNameMax || name.find('/') != name.npos || name.find('\0') != name.npos)
        return bad(d.nid, "bad name in directory");
      if (!first && !(std::string_view(prev) < name)) return bad(d.nid, "directory entries out of order at " + printable(name));
      first = false;
      prev.assign(name);
      uint64_t nid = get64(blk, de);
      uint8_t ft = static_cast<uint8_t>(blk[de + 10]);
      if (name == "." || name == "..") {
        if (nid != (name == "." ? d.nid : parent)) return bad(d.nid, "wrong " + std::string(name));
        (name == "." ? dot : dotdot) = true;
        continue;
      }
      Inode c = TRY(inode(nid));
      if (ftype_of(c.mode) != ft) return bad(d.nid, "file type of " + printable(name) + " disagrees with its inode");
      if (S_ISDIR(c.mode)) {
        ++nsub;
        subdirs.emplace_back(nid, d.nid);
      } else {
        ++links_[nid];
        nlink_[nid] = c.nlink;
      }
    }
  }
  if (!dot || !dotdot) return bad(d.nid, "directory without . or ..");
  if (d.nlink != 2 + nsub) return bad(d.nid, "directory link count wrong");
  return {};
}

Result<> Checker::run() {
  if (img_.size() < kInodesStart || img_.size() % kBlk) return fail("erofs image: truncated");
  std::string_view sb = img_.substr(kSuperOff, 128);
  if (get32(sb, 0) != kMagic) return fail("erofs image: bad magic");
  if (static_cast<uint8_t>(sb[12]) != kBlkBits || sb[13] != 0 || sb[90] != 0 || get32(sb, 8) != 0)
    return fail("erofs image: unexpected block size or features");
  if (get32(sb, 80) != (kIncompatChunkedFile | kIncompatDeviceTable)) return fail("erofs image: unexpected features");
  if (uint64_t{get32(sb, 36)} * kBlk != img_.size() || get32(sb, 40) != 0) return fail("erofs image: bad block counts");
  if (get16(sb, 86) != 1 || get16(sb, 88) != kDevtSlotOff) return fail("erofs image: bad device table");
  dev_bytes_ = uint64_t{get32(img_, kDevtSlotOff * kDevtSlotSize + 64)} * kBlk;

  uint64_t root = get16(sb, 14);
  Inode r = TRY(inode(root));
  if (!S_ISDIR(r.mode)) return fail("erofs image: the root is not a directory");
  std::vector<std::pair<uint64_t, uint64_t>> todo{{root, root}};
  while (!todo.empty()) {
    auto [nid, parent] = todo.back();
    todo.pop_back();
    if (!dirs_seen_.insert(nid).second) return bad(nid, "directory reached twice");
    Inode d = TRY(inode(nid));
    TRY(dir(d, parent, todo));
  }
  for (auto& [nid, count] : links_)
    if (nlink_[nid] != count) return bad(nid, "link count " + std::to_string(nlink_[nid]) + ", named " + std::to_string(count) + " times");
  if (get64(sb, 16) != dirs_seen_.size() + links_.size()) return fail("erofs image: inode count wrong");
  return {};
}

// ---------------------------------------------------------------------------
// Mounts, for the probe.

struct ProbeCleanup {
  std::vector<std::string> mounts, files, dirs;
  ~ProbeCleanup() {
    for (auto it = mounts.rbegin(); it != mounts.rend(); ++it) ::umount2(it->c_str(), MNT_DETACH);
    for (auto& f : files) ::unlink(f.c_str());
    for (auto it = dirs.rbegin(); it != dirs.rend(); ++it) ::rmdir(it->c_str());
  }
};

// A one-file layer tar: "d/f" holding `content`.
Result<> write_probe_tar(const std::string& path, const std::string& content) {
  std::unique_ptr<struct archive, int (*)(struct archive*)> a(archive_write_new(), archive_write_free);
  if (!a || archive_write_set_format_pax_restricted(a.get()) != ARCHIVE_OK ||
      archive_write_open_filename(a.get(), path.c_str()) != ARCHIVE_OK)
    return fail("probe tar " + path + ": " + (a ? archive_error_string(a.get()) ?: "" : ""));
  std::unique_ptr<struct archive_entry, void (*)(struct archive_entry*)> e(archive_entry_new(), archive_entry_free);
  for (auto [name, type] : {std::pair{"d", AE_IFDIR}, std::pair{"d/f", AE_IFREG}}) {
    archive_entry_clear(e.get());
    archive_entry_set_pathname(e.get(), name);
    archive_entry_set_filetype(e.get(), type);
    archive_entry_set_perm(e.get(), 0755);
    archive_entry_set_size(e.get(), type == AE_IFREG ? static_cast<la_int64_t>(content.size()) : 0);
    if (archive_write_header(a.get(), e.get()) != ARCHIVE_OK ||
        (type == AE_IFREG && archive_write_data(a.get(), content.data(), content.size()) < 0))
      return sys_error(archive_errno(a.get()), "probe tar " + path + ": " + (archive_error_string(a.get()) ?: "write"));
  }
  // A full disk shows at close, as libarchive writes in blocks: say so.
  if (archive_write_close(a.get()) != ARCHIVE_OK)
    return sys_error(archive_errno(a.get()), "probe tar " + path + ": " + (archive_error_string(a.get()) ?: "close"));
  return {};
}

}  // namespace

namespace {

// Reads the tar `a` was opened on (its callbacks fill `source_error`) and
// writes the image. `tar_size` bounds the file data where known; a stream's
// size is known only at its end (`final_size`, called then).
template <typename SizeFn>
Result<ErofsStats> write_image(struct archive* a, const std::optional<Error>& source_error, uint64_t tar_size,
                               const SizeFn& final_size, int meta_fd, const ErofsOptions& o) {
  ErofsStats st;
  auto archive_fail = [&](const char* doing) -> std::unexpected<Error> {
    if (source_error) return std::unexpected(Error(*source_error).context(o.what));
    const char* m = archive_error_string(a);
    return fail(o.what + ": " + doing + ": " + printable(m ? m : "unknown error"));
  };
  if (archive_read_open1(a) != ARCHIVE_OK) return archive_fail("read tar");

  TreeBuilder tree(o, st, tar_size);
  for (;;) {
    struct archive_entry* e = nullptr;
    int r = archive_read_next_header(a, &e);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) return archive_fail("read tar");
    ++st.entries;
    // The tar reader has consumed this entry's headers (extension headers
    // included) and nothing of its data: the bytes consumed so far are where
    // the data starts.
    TRY(tree.add(e, static_cast<uint64_t>(archive_filter_bytes(a, 0))));
    if (archive_read_data_skip(a) < ARCHIVE_WARN) return archive_fail("read tar");
  }
  tar_size = TRY(final_size());
  if (round_up(tar_size, kBlk) / kBlk >= kNullAddr) return fail(o.what + ": tar larger than 2 TiB");
  if (tree.data_end() > tar_size) return fail(o.what + ": file data past the end of the tar");

  Writer w(o, st, tar_size);
  std::string img = TRY(w.build(*tree.root()));
  for (uint64_t off = 0; off < img.size();) {
    ssize_t n = ::pwrite(meta_fd, img.data() + off, img.size() - off, static_cast<off_t>(off));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return sys_error(o.what + ": write erofs metadata");
    off += static_cast<uint64_t>(n);
  }
  return st;
}

using ArchivePtr = std::unique_ptr<struct archive, ArchiveFree>;

Result<ArchivePtr> tar_reader(const ErofsOptions& o) {
  ArchivePtr a(archive_read_new());
  if (!a) return fail(o.what + ": cannot allocate a tar reader");
  archive_read_support_format_tar(a.get());
  return a;
}

}  // namespace

Result<ErofsStats> erofs_write(int tar_fd, int meta_fd, const ErofsOptions& o) {
  struct stat sst;
  if (::fstat(tar_fd, &sst) < 0) return sys_error(o.what + ": stat tar");
  if (!S_ISREG(sst.st_mode)) return fail(o.what + ": the tar is not a regular file");
  const uint64_t tar_size = static_cast<uint64_t>(sst.st_size);
  if (round_up(tar_size, kBlk) / kBlk >= kNullAddr) return fail(o.what + ": tar larger than 2 TiB");

  PreadSource src{.fd = tar_fd, .size = tar_size};
  ArchivePtr a = TRY(tar_reader(o));
  set_pread_source(a.get(), src);
  return write_image(a.get(), src.error, tar_size, [&]() -> Result<uint64_t> { return tar_size; }, meta_fd, o);
}

Result<ErofsStats> erofs_write_stream(const TarChunkFn& next, int meta_fd, const ErofsOptions& o) {
  StreamSource src{&next};
  ArchivePtr a = TRY(tar_reader(o));
  archive_read_set_callback_data(a.get(), &src);
  archive_read_set_read_callback(a.get(), stream_read);
  // The end-of-archive blocks end the entries, not the stream: what follows
  // (padding) is read too, so the caller sees every byte and the size is whole.
  auto final_size = [&]() -> Result<uint64_t> {
    while (!src.ended) {
      auto chunk = next();
      if (!chunk) return std::unexpected(std::move(chunk).error());
      src.ended = chunk->empty();
      src.size += chunk->size();
    }
    return src.size;
  };
  return write_image(a.get(), src.error, UINT64_MAX, final_size, meta_fd, o);
}

Result<> erofs_check(const std::string& meta_path, uint64_t tar_size) {
  std::string img = TRY(read_file(meta_path));
  return Checker(img, tar_size).run();
}

Result<> erofs_mount(const std::string& meta_path, const std::string& tar_path, const std::string& target) {
  // mount(2) takes options comma-separated: a tar path with a comma goes
  // straight to the mount API.
  if (tar_path.find(',') == std::string::npos) {
    std::string opts = "device=" + tar_path;
    if (::mount(meta_path.c_str(), target.c_str(), "erofs", MS_RDONLY, opts.c_str()) == 0) return {};
  }
  int saved = errno;
  int fs = static_cast<int>(::syscall(SYS_fsopen, "erofs", FSOPEN_CLOEXEC));
  if (fs < 0) return sys_error(saved, "mount erofs " + meta_path + " on " + target);
  UniqueFd fsfd(fs);
  if (::syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "source", meta_path.c_str(), 0) != 0 ||
      ::syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "device", tar_path.c_str(), 0) != 0 ||
      ::syscall(SYS_fsconfig, fs, FSCONFIG_SET_FLAG, "ro", nullptr, 0) != 0 ||
      ::syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, nullptr, nullptr, 0) != 0)
    return sys_error("mount erofs " + meta_path + " on " + target);
  int m = static_cast<int>(::syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_RDONLY));
  if (m < 0) return sys_error("fsmount erofs " + meta_path);
  UniqueFd mfd(m);
  if (::syscall(SYS_move_mount, m, "", AT_FDCWD, target.c_str(), MOVE_MOUNT_F_EMPTY_PATH) != 0)
    return sys_error("move_mount erofs to " + target);
  return {};
}

Result<bool> erofs_supported(const std::string& scratch_dir) {
  ProbeCleanup c;
  char tmpl[4096];
  std::snprintf(tmpl, sizeof tmpl, "%s/erofs-probe-XXXXXX", scratch_dir.c_str());
  if (!::mkdtemp(tmpl)) return sys_error("erofs probe: mkdtemp in " + scratch_dir);
  const std::string dir = tmpl, tar = dir + "/layer.tar", meta = dir + "/layer.erofs";
  const std::string lower = dir + "/lower", mnt = dir + "/mnt", merged = dir + "/merged";
  c.dirs = {dir, lower, mnt, merged};
  c.files = {tar, meta};
  for (auto& d : {lower, mnt, merged})
    if (::mkdir(d.c_str(), 0700) < 0) return sys_error("erofs probe: mkdir " + d);
  // Over 512 bytes, so the kernel reads a sub-page block at a 512-aligned
  // offset inside the tar and the next one.
  const std::string content = std::string(700, 'x') + "berth";
  TRY(write_probe_tar(tar, content));
  {
    UniqueFd t(::open(tar.c_str(), O_RDONLY | O_CLOEXEC));
    UniqueFd m(::open(meta.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!t || !m) return sys_error("erofs probe: open " + tar + " or " + meta);
    TRY(erofs_write(t.get(), m.get(), {.what = "erofs probe"}));
  }
  // What a kernel that lacks a piece answers (no EROFS, no file-backed
  // mounts, no sub-page blocks, overlayfs refusing the layer, no rights): "no".
  // Anything else (ENOMEM, ENOSPC, ...) is an error, so a passing failure is
  // never taken, and kept, as the kernel's answer.
  auto refused = [](int e) {
    return e == ENODEV || e == EINVAL || e == ENOTBLK || e == EOPNOTSUPP || e == EPERM || e == ENXIO || e == EIO;
  };
  if (auto m = erofs_mount(meta, tar, mnt); !m) {
    if (refused(m.error().err)) return false;
    return std::unexpected(std::move(m).error().context("erofs probe"));
  }
  c.mounts.push_back(mnt);
  auto got = read_file(mnt + "/d/f");
  if (!got || *got != content) return false;
  // overlayfs wants two lower layers without an upper one.
  std::string opts = "lowerdir=" + mnt + ":" + lower;
  if (::mount("overlay", merged.c_str(), "overlay", MS_RDONLY, opts.c_str()) != 0) {
    if (refused(errno)) return false;
    return sys_error("erofs probe: mount overlay on " + merged);
  }
  c.mounts.push_back(merged);
  got = read_file(merged + "/d/f");
  return got && *got == content;
}

}  // namespace berth::image
