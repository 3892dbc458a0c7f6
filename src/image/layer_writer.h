// Writes image layers berth makes itself (templates, import, commit): tar
// entries through libarchive (pax format), hashed uncompressed for the diff_id
// while they are written, gzip-compressed on the fly with isa-l, and committed
// to the content store under the compressed digest.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "image/content_store.h"
#include "image/manifest.h"
#include "util/error.h"

namespace berth::image {

struct LayerBlob {
  Descriptor descriptor;  // media type tar+gzip, compressed digest and size
  Digest diff_id;
  uint64_t uncompressed = 0;
};

struct EntryMeta {
  mode_t mode = 0755;  // permission bits only
  uid_t uid = 0;
  gid_t gid = 0;
  int64_t mtime = 0;
};

class LayerWriter {
 public:
  // The compressed stream goes straight into a content-store ingest (hashed
  // as it is written), committed by finish().
  static Result<std::unique_ptr<LayerWriter>> create(ContentStore& store, std::string what);
  ~LayerWriter();

  Result<> dir(std::string_view path, const EntryMeta& m);
  Result<> file(std::string_view path, std::string_view data, const EntryMeta& m);
  // A regular file copied from `fd` (size bytes).
  Result<> file_from_fd(std::string_view path, int fd, uint64_t size, const EntryMeta& m);
  Result<> symlink(std::string_view path, std::string_view target, const EntryMeta& m);
  // Every entry beneath `dir` (not following symlinks), with owners, modes,
  // times, xattrs and hardlinks as they are on disk, named relative to it.
  // `overlay_upper`: `dir` is an overlayfs upper dir (`commit`): its
  // whiteouts (0:0 char devices) become `.wh.NAME` entries, its opaque
  // directories get a `.wh..wh..opq` entry, and trusted.overlay.* xattrs
  // are left out: the OCI layer format.
  Result<> tree(const std::string& dir, bool overlay_upper = false);
  // Finishes the tar and the gzip stream and commits the blob.
  Result<LayerBlob> finish();

 private:
  struct Impl;
  explicit LayerWriter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// An image config for a layer stack berth made (`config` is the "config"
// object: Env, Cmd, ...), with one history entry per layer.
std::string make_config(const std::string& config_json, const std::vector<Digest>& diff_ids,
                        const std::vector<std::string>& created_by, const std::string& created);

// Unix seconds as RFC 3339 UTC ("2026-11-23T02:00:00Z").
std::string rfc3339(int64_t unix_seconds);

}  // namespace berth::image
