// A layer stream as its uncompressed bytes: reads a file or pipe, sniffs the
// compression from the first bytes (gzip through isa-l's igzip, including
// multi-member streams and zero padding; zstd; or none), hashes and counts what
// comes out (the diff_id), and refuses a stream that expands past a cap (a
// decompression bomb).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "image/digest.h"
#include "util/error.h"

namespace berth::image {

struct DecompressOptions {
  // Refused when uncompressed > max_ratio * compressed and > ratio_floor.
  uint64_t max_ratio = 200;
  uint64_t ratio_floor = 1ull << 30;
  std::string what = "layer";  // names the stream in errors
  // Off, read() does not hash and finish() means nothing: a caller that reads
  // on another thread (Prefetcher) hashes there, so inflating and hashing
  // overlap.
  bool hash = true;
  // Set: the stream is the `length` bytes at `offset` in the file (a blob
  // inside an archive), read with pread; the fd's offset is left alone.
  std::optional<uint64_t> offset;
  uint64_t length = UINT64_MAX;
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
  // The same, written into `buf` (up to `cap` bytes; a plain stream gives at
  // most 128 KiB per call, so `cap` must be at least that).
  Result<std::string_view> read_into(unsigned char* buf, size_t cap);
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

// Runs a Decompressor on a thread of its own, a few chunks ahead of the
// caller (as `igzip -dc | tar -x` would): the caller's work on each chunk
// (unpacking files, hashing and writing a tar) overlaps the inflating.
class Prefetcher {
 public:
  explicit Prefetcher(Decompressor& d);
  ~Prefetcher();
  Prefetcher(const Prefetcher&) = delete;
  Prefetcher& operator=(const Prefetcher&) = delete;

  // The next chunk (valid until the next call); empty at the end of the stream.
  Result<std::string_view> next();
  // Waits for the producer to finish (the decompressor is then the caller's again).
  void stop();

 private:
  // 8 chunks of 1 MiB: small hand-offs cost more than they overlap here.
  static constexpr size_t kDepth = 8, kChunk = 1 << 20;
  void run();

  Decompressor& d_;
  unsigned char* ring_ = nullptr;  // kDepth slots of kChunk bytes
  size_t len_[kDepth] = {};
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t head_ = 0, tail_ = 0;  // chunks made, chunks given back
  bool holding_ = false;          // the consumer holds slot tail_
  bool producer_waits_ = false, consumer_waits_ = false;
  std::optional<Error> error_;
  bool done_ = false, stop_ = false;
  std::thread thread_;  // last: started once everything above exists
};

}  // namespace berth::image
