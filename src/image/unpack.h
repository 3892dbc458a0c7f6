// Applies one image layer (a tar stream, gzip- or zstd-compressed or plain) to
// a directory that holds that layer alone, in the form overlayfs reads as a
// lower layer: whiteouts become 0/0 character devices, opaque directories get
// the trusted.overlay.opaque xattr.
//
// The layer is hostile. No entry creates, changes or removes anything outside
// `dest`: every parent directory is resolved beneath it without following a
// symlink (an entry beneath a symlink fails), an entry never writes through an
// existing symlink (it replaces it), hardlinks must name a regular file this
// layer extracted, and absolute names or ".." components are refused.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "image/digest.h"
#include "util/error.h"

namespace berth::image {

struct UnpackOptions {
  // The layer's diff_id (sha256 of the uncompressed tar): checked at the end.
  std::optional<Digest> diff_id;
  // A stream that expands beyond both of these is refused (a decompression
  // bomb): uncompressed bytes > max_ratio * compressed bytes and > ratio_floor.
  uint64_t max_ratio = 200;
  uint64_t ratio_floor = 1ull << 30;
  // Sets each entry's owner (needs CAP_CHOWN); off, everything is owned by the caller.
  bool set_owners = true;
  // Names the layer in errors ("layer sha256:ab12...").
  std::string what = "layer";
};

struct UnpackResult {
  Digest diff_id;             // of what was read
  uint64_t compressed = 0;    // bytes read from the source
  uint64_t uncompressed = 0;  // tar bytes
  uint64_t entries = 0;        // tar entries read
  // xattrs not set: refused by the filesystem (EOPNOTSUPP, outside the
  // security namespace) or overlay xattrs (trusted.overlay.*, user.overlay.*),
  // which only whiteout entries may produce.
  uint64_t xattrs_skipped = 0;
};

// Reads the layer from `src_fd` (a file or a pipe) and applies it to the
// directory `dest_dirfd` (empty, made by the caller). On error the directory
// may hold part of the layer: the caller unpacks into a temporary directory
// and removes it on failure.
Result<UnpackResult> unpack_layer(int src_fd, int dest_dirfd, const UnpackOptions& o = {});

}  // namespace berth::image
