// A layer stream as its uncompressed bytes: reads a file or pipe, sniffs the
// compression from the first bytes (gzip through isa-l's igzip, including
// multi-member streams and zero padding; zstd; or none), hashes and counts what
// comes out (the diff_id), and refuses a stream that expands past a cap (a
// decompression bomb).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "image/digest.h"
#include "util/error.h"

namespace berth::image {

struct DecompressOptions {
  // Refused when uncompressed > max_ratio * compressed and > ratio_floor.
  uint64_t max_ratio = 200;
  uint64_t ratio_floor = 1ull << 30;
  std::string what = "layer";  // names the stream in errors
};

class Decompressor {
 public:
  enum class Kind { kPlain, kGzip, kZstd };

  // `fd` stays the caller's.
  Decompressor(int fd, DecompressOptions o);
  ~Decompressor();
  Decompressor(const Decompressor&) = delete;
  Decompressor& operator=(const Decompressor&) = delete;

  // Reads the first bytes and picks the decoder.
  Result<> init();
  Kind kind() const;
  // The next chunk of uncompressed bytes (valid until the next call); empty at the end.
  Result<std::string_view> read();
  // Reads to the end (so the hash covers trailing tar padding).
  Result<> drain();
  // The sha256 of everything read; call once, at the end.
  Digest finish();
  uint64_t compressed() const;
  uint64_t uncompressed() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> d_;
};

}  // namespace berth::image
