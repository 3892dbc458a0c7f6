#include "image/layer_writer.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <isa-l/igzip_lib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ctime>
#include <nlohmann/json.hpp>
#include <optional>
#include <vector>

#include "util/fs.h"

namespace berth::image {

struct LayerWriter::Impl {
  std::string what;
  std::optional<ContentStore::Writer> out;  // the compressed stream, hashed as it goes
  Sha256 diff;
  uint64_t uncompressed = 0;
  isal_zstream zs{};
  std::vector<uint8_t> level_buf;
  std::vector<uint8_t> zbuf;
  Error err;  // the first write error, reported by finish()
  archive* a = nullptr;
  archive_entry_linkresolver* links = nullptr;

  bool deflate(const void* data, size_t len, bool end) {
    zs.next_in = static_cast<uint8_t*>(const_cast<void*>(data));
    zs.avail_in = static_cast<uint32_t>(len);
    zs.end_of_stream = end ? 1 : 0;
    zs.flush = NO_FLUSH;
    do {
      zs.next_out = zbuf.data();
      zs.avail_out = static_cast<uint32_t>(zbuf.size());
      if (isal_deflate(&zs) != COMP_OK) {
        err = Error{0, what + ": gzip compression failed"};
        return false;
      }
      size_t n = zbuf.size() - zs.avail_out;
      if (n) {
        if (auto r = out->write({reinterpret_cast<char*>(zbuf.data()), n}); !r) {
          err = std::move(r).error();
          return false;
        }
      }
    } while (zs.avail_in > 0 || (end && zs.internal_state.state != ZSTATE_END));
    return true;
  }

  static la_ssize_t on_write(archive*, void* self, const void* buf, size_t len) {
    auto* d = static_cast<Impl*>(self);
    d->diff.update(buf, len);
    d->uncompressed += len;
    return d->deflate(buf, len, false) ? static_cast<la_ssize_t>(len) : -1;
  }

  Result<> check(int rc, std::string_view path) {
    if (rc >= ARCHIVE_WARN) return {};
    if (!err.msg.empty()) return std::unexpected(err);
    return fail(what + ": " + std::string(path) + ": " + archive_error_string(a));
  }

  Result<> header(std::string_view path, mode_t type, const EntryMeta& m, uint64_t size = 0,
                  std::string_view link = {}) {
    archive_entry* e = archive_entry_new();
    std::string name(path);
    while (name.starts_with("/")) name.erase(0, 1);
    archive_entry_set_pathname(e, name.c_str());
    archive_entry_set_filetype(e, type);
    archive_entry_set_perm(e, m.mode & 07777);
    archive_entry_set_uid(e, m.uid);
    archive_entry_set_gid(e, m.gid);
    archive_entry_set_mtime(e, m.mtime, 0);
    archive_entry_set_size(e, static_cast<la_int64_t>(size));
    if (!link.empty()) archive_entry_set_symlink(e, std::string(link).c_str());
    int rc = archive_write_header(a, e);
    archive_entry_free(e);
    return check(rc, path);
  }
};

LayerWriter::LayerWriter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

LayerWriter::~LayerWriter() {
  if (impl_->links) archive_entry_linkresolver_free(impl_->links);
  if (impl_->a) archive_write_free(impl_->a);
}

Result<std::unique_ptr<LayerWriter>> LayerWriter::create(ContentStore& store, std::string what) {
  auto d = std::make_unique<Impl>();
  d->what = std::move(what);
  d->out.emplace(TRY(store.writer(std::nullopt, std::nullopt, d->what)));
  isal_deflate_init(&d->zs);
  d->zs.gzip_flag = IGZIP_GZIP;
  d->zs.level = 1;
  d->level_buf.resize(ISAL_DEF_LVL1_DEFAULT);
  d->zs.level_buf = d->level_buf.data();
  d->zs.level_buf_size = static_cast<uint32_t>(d->level_buf.size());
  d->zbuf.resize(1 << 17);
  d->a = archive_write_new();
  archive_write_set_format_pax_restricted(d->a);
  archive_write_set_bytes_per_block(d->a, 10240);
  d->links = archive_entry_linkresolver_new();
  archive_entry_linkresolver_set_strategy(d->links, ARCHIVE_FORMAT_TAR_PAX_RESTRICTED);
  Impl* raw = d.get();
  if (archive_write_open2(d->a, raw, nullptr, &Impl::on_write, nullptr, nullptr) != ARCHIVE_OK)
    return fail(raw->what + ": " + archive_error_string(raw->a));
  return std::unique_ptr<LayerWriter>(new LayerWriter(std::move(d)));
}

Result<> LayerWriter::dir(std::string_view path, const EntryMeta& m) {
  return impl_->header(path, AE_IFDIR, m);
}

Result<> LayerWriter::file(std::string_view path, std::string_view data, const EntryMeta& m) {
  TRY(impl_->header(path, AE_IFREG, m, data.size()));
  if (archive_write_data(impl_->a, data.data(), data.size()) != static_cast<la_ssize_t>(data.size()))
    return impl_->check(ARCHIVE_FATAL, path);
  return {};
}

Result<> LayerWriter::file_from_fd(std::string_view path, int fd, uint64_t size, const EntryMeta& m) {
  TRY(impl_->header(path, AE_IFREG, m, size));
  std::vector<char> buf(1 << 17);
  uint64_t left = size;
  while (left > 0) {
    ssize_t n = ::read(fd, buf.data(), std::min<uint64_t>(buf.size(), left));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return sys_error(impl_->what + ": read " + std::string(path));
    if (n == 0) return fail(impl_->what + ": " + std::string(path) + ": shorter than its size");
    if (archive_write_data(impl_->a, buf.data(), n) != n) return impl_->check(ARCHIVE_FATAL, path);
    left -= n;
  }
  return {};
}

Result<> LayerWriter::symlink(std::string_view path, std::string_view target, const EntryMeta& m) {
  EntryMeta l = m;
  l.mode = 0777;
  return impl_->header(path, AE_IFLNK, l, 0, target);
}

Result<> LayerWriter::tree(const std::string& root, bool overlay_upper) {
  archive* disk = archive_read_disk_new();
  struct Free {
    archive* a;
    ~Free() { archive_read_free(a); }
  } free_disk{disk};
  archive_read_disk_set_behavior(disk, ARCHIVE_READDISK_NO_TRAVERSE_MOUNTS | ARCHIVE_READDISK_NO_FFLAGS);
  archive_read_disk_set_symlink_physical(disk);
  archive_read_disk_set_standard_lookup(disk);
  if (archive_read_disk_open(disk, root.c_str()) != ARCHIVE_OK)
    return fail(impl_->what + ": " + root + ": " + archive_error_string(disk));
  std::vector<char> buf(1 << 17);
  while (true) {
    archive_entry* e = archive_entry_new();
    int rc = archive_read_next_header2(disk, e);
    if (rc == ARCHIVE_EOF) {
      archive_entry_free(e);
      break;
    }
    if (rc < ARCHIVE_WARN) {
      archive_entry_free(e);
      return fail(impl_->what + ": " + root + ": " + archive_error_string(disk));
    }
    archive_read_disk_descend(disk);
    std::string src = archive_entry_sourcepath(e);
    std::string rel = src.size() > root.size() ? src.substr(root.size()) : "";
    while (rel.starts_with("/")) rel.erase(0, 1);
    if (rel.empty()) {  // the root itself
      archive_entry_free(e);
      continue;
    }
    archive_entry_set_pathname(e, rel.c_str());
    std::string opaque_marker;
    if (overlay_upper) {
      if (archive_entry_filetype(e) == AE_IFCHR && archive_entry_rdev(e) == 0) {
        // A whiteout: the file is deleted in this layer.
        auto slash = rel.rfind('/');
        std::string wh = slash == std::string::npos ? ".wh." + rel : rel.substr(0, slash + 1) + ".wh." + rel.substr(slash + 1);
        archive_entry_set_pathname(e, wh.c_str());
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_set_perm(e, 0);
        archive_entry_set_size(e, 0);
        archive_entry_set_rdev(e, 0);
      }
      // Keep every xattr but overlayfs's own; note an opaque directory.
      std::vector<std::pair<std::string, std::string>> keep;
      const char* name;
      const void* value;
      size_t size;
      archive_entry_xattr_reset(e);
      while (archive_entry_xattr_next(e, &name, &value, &size) == ARCHIVE_OK) {
        std::string n(name), v(static_cast<const char*>(value), size);
        if (n.starts_with("trusted.overlay.")) {
          if (n == "trusted.overlay.opaque" && v == "y" && archive_entry_filetype(e) == AE_IFDIR)
            opaque_marker = rel + "/.wh..wh..opq";
          continue;
        }
        keep.emplace_back(std::move(n), std::move(v));
      }
      archive_entry_xattr_clear(e);
      for (auto& [n, v] : keep) archive_entry_xattr_add_entry(e, n.c_str(), v.data(), v.size());
    }
    archive_entry* sparse = nullptr;
    archive_entry_linkify(impl_->links, &e, &sparse);
    if (e) {
      int wr = archive_write_header(impl_->a, e);
      if (wr < ARCHIVE_WARN) {
        archive_entry_free(e);
        return impl_->check(wr, rel);
      }
      if (archive_entry_filetype(e) == AE_IFREG && archive_entry_size(e) > 0) {
        UniqueFd f(::open(src.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
        if (!f) {
          archive_entry_free(e);
          return sys_error(impl_->what + ": open " + src);
        }
        la_int64_t left = archive_entry_size(e);
        while (left > 0) {
          ssize_t n = ::read(f.get(), buf.data(), std::min<la_int64_t>(buf.size(), left));
          if (n <= 0) {
            archive_entry_free(e);
            return n < 0 ? sys_error(impl_->what + ": read " + src)
                         : fail(impl_->what + ": " + src + ": changed while being read");
          }
          if (archive_write_data(impl_->a, buf.data(), n) != n) {
            archive_entry_free(e);
            return impl_->check(ARCHIVE_FATAL, rel);
          }
          left -= n;
        }
      }
      archive_entry_free(e);
    }
    if (!opaque_marker.empty()) TRY(file(opaque_marker, "", EntryMeta{0, 0, 0, 0}));
  }
  return {};
}

Result<LayerBlob> LayerWriter::finish() {
  Impl& d = *impl_;
  if (archive_write_close(d.a) != ARCHIVE_OK) TRY(d.check(ARCHIVE_FATAL, "end of archive"));
  if (!d.deflate(nullptr, 0, true)) return std::unexpected(d.err);
  LayerBlob b;
  b.diff_id = d.diff.finish();
  b.uncompressed = d.uncompressed;
  b.descriptor.media_type = media::kOciLayerGzip;
  b.descriptor.size = d.out->written();
  b.descriptor.digest = TRY(d.out->commit());
  return b;
}

// libarchive's pax writer reports an entry type it cannot store through this
// internal function, which lives in the object holding libarchive's table of
// every format. Defined here (same behaviour, the message shortened), a static
// libarchive leaves that object, and the xar writer with libxml2 and ICU
// behind it, out of the berth binary. With a shared libarchive this copy is
// unused: the library calls its own.
extern "C" void __archive_write_entry_filetype_unsupported(struct archive* a, struct archive_entry* entry,
                                                           const char* format) {
  archive_set_error(a, EINVAL, "%s: %s format cannot archive this file type", archive_entry_pathname(entry), format);
}

std::string rfc3339(int64_t unix_seconds) {
  time_t t = static_cast<time_t>(unix_seconds);
  struct tm tm {};
  gmtime_r(&t, &tm);
  char buf[32];
  strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string make_config(const std::string& config_json, const std::vector<Digest>& diff_ids,
                        const std::vector<std::string>& created_by, const std::string& created) {
  using json = nlohmann::json;
  Platform p = Platform::host();
  json j = json::object();
  j["architecture"] = p.architecture;
  if (!p.variant.empty()) j["variant"] = p.variant;
  j["os"] = p.os;
  j["created"] = created;
  j["config"] = json::parse(config_json, nullptr, false);
  if (j["config"].is_discarded()) j["config"] = json::object();
  json ids = json::array();
  for (auto& d : diff_ids) ids.push_back(d.str());
  j["rootfs"] = {{"type", "layers"}, {"diff_ids", ids}};
  json hist = json::array();
  for (auto& c : created_by) hist.push_back({{"created", created}, {"created_by", c}});
  j["history"] = hist;
  return j.dump();
}

}  // namespace berth::image
