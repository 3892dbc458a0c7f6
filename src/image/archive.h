// Image archives: `save`/`load` in the two forms the ecosystem exchanges,
// docker-archive (docker save: manifest.json, <config>.json, <layer>/layer.tar)
// and OCI archive (an OCI image layout in a tar: oci-layout, index.json,
// blobs/sha256/...), and `import` of a plain rootfs tar as a one-layer image.
//
// An archive is hostile. Entry names are only keys to look files up by, never
// paths berth writes to; every file goes through the content store (an OCI
// blob must match the digest its name claims); layers are unpacked by
// unpack_layer. A load that fails leaves no blob or layer of its own behind.
#pragma once

#include <string>
#include <vector>

#include "image/reference.h"
#include "image/store.h"
#include "util/error.h"

namespace berth::image {

enum class ArchiveFormat { kDockerArchive, kOciArchive };
Result<ArchiveFormat> parse_archive_format(std::string_view s);

struct SaveItem {
  ImageRecord image;
  std::vector<Reference> names;  // the names asked for (RepoTags); may be empty (saved by ID)
};

// Writes the archive of `items` to `out_fd` (a file or a pipe).
Result<> save_images(ImageStore& store, const std::vector<SaveItem>& items, ArchiveFormat format, int out_fd);

struct LoadedImage {
  ImageRecord image;
  std::vector<Reference> names;
};
// Reads a docker-archive or OCI archive (possibly gzip- or zstd-compressed)
// from `in_fd` and stores every image in it. `platform` picks from nested indexes.
Result<std::vector<LoadedImage>> load_images(ImageStore& store, int in_fd, const Platform& platform,
                                             const UnpackProgressFn& progress = {});

struct ImportOptions {
  std::vector<std::string> changes;  // Dockerfile instructions: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, VOLUME, WORKDIR
  std::string message;               // the history comment
  std::optional<Reference> name;
};
// A rootfs tarball (plain, gzip or zstd) as a one-layer image.
Result<ImageRecord> import_rootfs(ImageStore& store, int in_fd, const ImportOptions& o);

// Applies Dockerfile-style `changes` to an image config's "config" object (JSON text).
Result<std::string> apply_changes(const std::string& config_json, const std::vector<std::string>& changes);

}  // namespace berth::image
