// An EROFS metadata image for a layer kept as its uncompressed tar: the kernel
// reads each regular file straight out of the tar, which is attached to the
// mount as an extra device (`mount -t erofs -o device=LAYER.TAR META MNT`).
// Nothing is unpacked; the image holds only inodes, directories, symlinks and
// xattrs (issue 6).
//
// On-disk choices (Documentation/filesystems/erofs.rst, fs/erofs/erofs_fs.h):
//   - 512-byte blocks (blkszbits 9): tar data is only 512-byte aligned, and
//     Linux 6.4+ reads sub-page blocks for uncompressed data.
//   - Regular files are chunk-based inodes (EROFS_INODE_CHUNK_BASED, 8-byte
//     chunk indexes with a device id): every chunk names device 1, the tar,
//     at the block where the file's data starts in it. Empty files are flat
//     with no blocks.
//   - Directories and symlinks keep their data in the image: inline after the
//     inode when inode, xattrs and data fit in one block, otherwise in blocks
//     of their own.
//   - Compact 32-byte inodes where every field fits (mtime equal to the
//     superblock's, which older kernels use for all compact inodes); extended
//     64-byte inodes otherwise.
//   - The layer's overlay whiteouts become what overlayfs reads from a lower
//     layer: `.wh.NAME` a 0:0 character device NAME, `.wh..wh..opq` the xattr
//     trusted.overlay.opaque=y on its directory.
//
// The tar is hostile: names are normalised and ".." or absolute names refused,
// duplicate entries resolve as the unpacker resolves them (the later wins), and
// every chunk is checked to lie inside the tar.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "util/error.h"

namespace berth::image {

struct ErofsOptions {
  // Names the layer in errors ("layer sha256:ab12...").
  std::string what = "layer";
  // log2 of the largest chunk in 512-byte blocks. A file's data is one run in
  // the tar, so one chunk per file is enough (31: chunks up to 1 TiB); tests
  // lower it to exercise files of many chunks.
  unsigned max_chunk_bits = 31;
};

struct ErofsStats {
  uint64_t entries = 0;         // tar entries read
  uint64_t inodes = 0;          // inodes written
  uint64_t meta_bytes = 0;      // size of the metadata image
  // xattrs left out: names EROFS cannot index (outside user., trusted.,
  // security. and the POSIX ACLs) and overlay xattrs set by the tar itself
  // (trusted.overlay.*, user.overlay.*), which only whiteout entries may make.
  uint64_t xattrs_skipped = 0;
};

// Reads the uncompressed tar `tar_fd` (a regular file; read with pread, its
// offset untouched) and writes the metadata image to `meta_fd` (an empty
// file, written from offset 0). On error `meta_fd` may hold part of an image:
// the caller writes to a temporary file and removes it.
Result<ErofsStats> erofs_write(int tar_fd, int meta_fd, const ErofsOptions& o = {});

// The next chunk of a tar stream (valid until the next call); empty at its end.
using TarChunkFn = std::function<Result<std::string_view>()>;

// The same for a tar that is being written as it streams past (a layer as it
// inflates): `next` is pulled to the end of the stream, padding after the
// end-of-archive blocks included, so the caller sees every byte; the chunks
// are read, never kept. The image is written once the stream has ended.
Result<ErofsStats> erofs_write_stream(const TarChunkFn& next, int meta_fd, const ErofsOptions& o = {});

// Walks a metadata image as the kernel would and checks it: superblock and
// features, every inode, directory and xattr inside the image, directory
// entries sorted with valid names and types, "." and ".." right, link counts,
// no directory cycles, and every chunk inside a tar of `tar_size` bytes.
// For tests and the fuzzer; the input may be hostile.
Result<> erofs_check(const std::string& meta_path, uint64_t tar_size);

// Mounts the image read-only on `target` with the tar as its device:
// mount(2) with the image file as source, or, where that fails, the mount
// API (fsopen("erofs") with "source" and "device").
Result<> erofs_mount(const std::string& meta_path, const std::string& tar_path, const std::string& target);

// Whether this kernel mounts what erofs_write makes: a tiny layer is written in
// `scratch_dir` (which must exist), mounted file-backed and read back, then
// used as an overlay lower layer. Everything made is removed. False (not an
// error) when the kernel lacks a feature; errors only for the scratch files.
Result<bool> erofs_supported(const std::string& scratch_dir);

}  // namespace berth::image
