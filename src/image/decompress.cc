#include "image/decompress.h"

#include <isa-l/igzip_lib.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace berth::image {

namespace {
constexpr size_t kInBuf = 128 * 1024;
constexpr size_t kOutBuf = 256 * 1024;
}  // namespace

struct Decompressor::Impl {
  Impl(int fd, DecompressOptions o) : fd_(fd), o_(std::move(o)), in_(kInBuf), out_(kOutBuf) {}
  ~Impl() {
    if (zstd_) ZSTD_freeDCtx(zstd_);
  }

  // Sniffs the compression from the first bytes.
  Result<> init() {
    while (in_len_ < 4 && !eof_) TRY(fill());
    const unsigned char* p = in_.data();
    if (in_len_ >= 2 && p[0] == 0x1f && p[1] == 0x8b) {
      kind_ = Kind::kGzip;
      gz_ = std::make_unique<inflate_state>();
      gz_member_done_ = true;  // starts the first member on the first read
    } else if (in_len_ >= 4 && p[0] == 0x28 && p[1] == 0xb5 && p[2] == 0x2f && p[3] == 0xfd) {
      kind_ = Kind::kZstd;
      zstd_ = ZSTD_createDCtx();
      if (!zstd_) return fail(o_.what + ": zstd: cannot allocate a decompression context");
    } else {
      kind_ = Kind::kPlain;
    }
    return {};
  }

  // Next chunk of uncompressed bytes; an empty view at the end of the stream.
  Result<std::string_view> read() {
    std::string_view v;
    switch (kind_) {
      case Kind::kPlain: v = TRY(read_plain()); break;
      case Kind::kGzip: v = TRY(read_gzip(out_.data(), out_.size())); break;
      case Kind::kZstd: v = TRY(read_zstd(out_.data(), out_.size())); break;
    }
    return account(v);
  }

  // The same, into `buf` (at most `cap` bytes): the bytes are inflated there,
  // not copied (a plain stream is copied from the input buffer).
  Result<std::string_view> read_into(unsigned char* buf, size_t cap) {
    std::string_view v;
    switch (kind_) {
      case Kind::kPlain: {
        v = TRY(read_plain());
        // read_plain hands out the whole input buffer: never more than kInBuf.
        std::memcpy(buf, v.data(), v.size());
        v = std::string_view(reinterpret_cast<const char*>(buf), v.size());
        break;
      }
      case Kind::kGzip: v = TRY(read_gzip(buf, cap)); break;
      case Kind::kZstd: v = TRY(read_zstd(buf, cap)); break;
    }
    return account(v);
  }

  Result<std::string_view> account(std::string_view v) {
    if (!v.empty()) {
      uncompressed_ += v.size();
      if (o_.hash) hash_.update(v.data(), v.size());
      if (uncompressed_ > o_.ratio_floor &&
          static_cast<unsigned __int128>(o_.max_ratio) * compressed_ < uncompressed_)
        return fail(o_.what + ": expands more than " + std::to_string(o_.max_ratio) +
                    " times (a decompression bomb?)");
    }
    return v;
  }

  // Reads the rest of the stream (tar padding after the end-of-archive
  // blocks) so the hash covers all of it.
  Result<> drain() {
    for (;;) {
      auto v = TRY(read());
      if (v.empty()) return {};
    }
  }

  Digest finish() { return hash_.finish(); }
  uint64_t compressed() const { return compressed_; }
  uint64_t uncompressed() const { return uncompressed_; }

  using Kind = Decompressor::Kind;

  // Appends what the fd gives to the input buffer (compacting it first).
  Result<> fill() {
    if (in_off_ > 0) {
      std::memmove(in_.data(), in_.data() + in_off_, in_len_);
      in_off_ = 0;
    }
    if (in_len_ == in_.size()) return {};
    for (;;) {
      size_t want = in_.size() - in_len_;
      ssize_t n;
      if (o_.offset) {
        want = static_cast<size_t>(std::min<uint64_t>(want, o_.length - compressed_));
        n = want ? ::pread(fd_, in_.data() + in_len_, want, static_cast<off_t>(*o_.offset + compressed_)) : 0;
      } else {
        n = ::read(fd_, in_.data() + in_len_, want);
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return sys_error(o_.what + ": read");
      if (n == 0) eof_ = true;
      in_len_ += static_cast<size_t>(n);
      compressed_ += static_cast<uint64_t>(n);
      return {};
    }
  }
  void consume(size_t n) {
    in_off_ += n;
    in_len_ -= n;
    if (in_len_ == 0) in_off_ = 0;
  }

  Result<std::string_view> read_plain() {
    if (in_len_ == 0 && !eof_) TRY(fill());
    std::string_view v(reinterpret_cast<const char*>(in_.data() + in_off_), in_len_);
    consume(in_len_);
    return v;
  }

  Result<std::string_view> read_gzip(unsigned char* out, size_t cap) {
    bool stalled = false;
    for (;;) {
      if (gz_member_done_) {
        // Between members: another member follows only if input remains.
        if (in_len_ == 0 && !eof_) {
          TRY(fill());
          continue;
        }
        if (in_len_ == 0) return std::string_view();
        // Zero padding after the last member (bsdtar and libarchive write it
        // by default; gzip(1) accepts it). No member starts with 0.
        if (in_[in_off_] == 0) {
          for (;;) {
            while (in_len_ > 0 && in_[in_off_] == 0) consume(1);
            if (in_len_ > 0) return fail(o_.what + ": garbage after the gzip stream");
            if (eof_) return std::string_view();
            TRY(fill());
          }
        }
        isal_inflate_init(gz_.get());
        gz_->crc_flag = ISAL_GZIP;
        gz_member_done_ = false;
      }
      if ((in_len_ == 0 || stalled) && !eof_) TRY(fill());
      gz_->next_in = in_.data() + in_off_;
      gz_->avail_in = static_cast<uint32_t>(in_len_);
      gz_->next_out = out;
      gz_->avail_out = static_cast<uint32_t>(cap);
      int r = isal_inflate(gz_.get());
      size_t used = in_len_ - gz_->avail_in;
      size_t produced = cap - gz_->avail_out;
      consume(used);
      if (r < 0) return fail(o_.what + ": corrupt gzip stream (isa-l error " + std::to_string(r) + ")");
      if (gz_->block_state == ISAL_BLOCK_FINISH) gz_member_done_ = true;
      if (produced > 0) return std::string_view(reinterpret_cast<const char*>(out), produced);
      if (gz_member_done_) continue;
      if (used == 0) {
        if (eof_) return fail(o_.what + ": truncated gzip stream");
        stalled = true;
      } else {
        stalled = false;
      }
    }
  }

  Result<std::string_view> read_zstd(unsigned char* dst, size_t cap) {
    for (;;) {
      if (in_len_ == 0 && !eof_) TRY(fill());
      ZSTD_inBuffer in{in_.data() + in_off_, in_len_, 0};
      ZSTD_outBuffer out{dst, cap, 0};
      size_t r = ZSTD_decompressStream(zstd_, &out, &in);
      if (ZSTD_isError(r)) return fail(o_.what + ": corrupt zstd stream: " + ZSTD_getErrorName(r));
      consume(in.pos);
      if (in.pos == 0 && out.pos == 0) {
        // No progress: the end, or more input needed.
        if (eof_ && in_len_ == 0) {
          if (zstd_last_ != 0) return fail(o_.what + ": truncated zstd stream");
          return std::string_view();
        }
        if (eof_ || in_len_ == in_.size()) return fail(o_.what + ": truncated zstd stream");
        TRY(fill());
        continue;
      }
      zstd_last_ = r;
      if (out.pos > 0) return std::string_view(reinterpret_cast<const char*>(dst), out.pos);
    }
  }

  int fd_;
  DecompressOptions o_;
  std::vector<unsigned char> in_, out_;
  size_t in_off_ = 0, in_len_ = 0;
  bool eof_ = false;
  Kind kind_ = Kind::kPlain;
  std::unique_ptr<inflate_state> gz_;
  bool gz_member_done_ = false;
  ZSTD_DCtx* zstd_ = nullptr;
  size_t zstd_last_ = 1;
  uint64_t compressed_ = 0, uncompressed_ = 0;
  Sha256 hash_;
};


Decompressor::Decompressor(int fd, DecompressOptions o) : d_(std::make_unique<Impl>(fd, std::move(o))) {}
Decompressor::~Decompressor() = default;
Result<> Decompressor::init() { return d_->init(); }
Decompressor::Kind Decompressor::kind() const { return d_->kind_; }
Result<std::string_view> Decompressor::read() { return d_->read(); }
Result<std::string_view> Decompressor::read_into(unsigned char* buf, size_t cap) { return d_->read_into(buf, cap); }
Result<> Decompressor::drain() { return d_->drain(); }
Digest Decompressor::finish() { return d_->finish(); }
uint64_t Decompressor::compressed() const { return d_->compressed(); }
uint64_t Decompressor::uncompressed() const { return d_->uncompressed(); }

Prefetcher::Prefetcher(Decompressor& d) : d_(d) {
  // One mapping for the whole ring, populated up front: a page fault costs
  // 15 us or more in some VMs, and 4096 of them per 16 MiB add up.
  void* p = ::mmap(nullptr, kDepth * kChunk, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (p == MAP_FAILED) {
    error_ = Error{errno, "inflate buffers"};
    done_ = true;
    return;
  }
  ring_ = static_cast<unsigned char*>(p);
  thread_ = std::thread([this] { run(); });
}

Prefetcher::~Prefetcher() {
  stop();
  if (ring_) ::munmap(ring_, kDepth * kChunk);
}

Result<std::string_view> Prefetcher::next() {
  std::unique_lock lk(mu_);
  if (holding_) {
    holding_ = false;
    ++tail_;
    if (producer_waits_) cv_.notify_all();
  }
  while (tail_ == head_ && !done_) {
    consumer_waits_ = true;
    cv_.wait(lk);
    consumer_waits_ = false;
  }
  if (tail_ != head_) {
    holding_ = true;
    return std::string_view(reinterpret_cast<const char*>(ring_ + (tail_ % kDepth) * kChunk), len_[tail_ % kDepth]);
  }
  if (error_) return std::unexpected(*error_);
  return std::string_view();
}

void Prefetcher::stop() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Prefetcher::run() {
  // Slot head_ % kDepth is the producer's until head_ moves past it; slots
  // from tail_ to head_ are the consumer's (the one at tail_ while holding_).
  for (uint64_t at = 0;; ++at) {
    {
      std::unique_lock lk(mu_);
      while (at - tail_ >= kDepth && !stop_) {
        producer_waits_ = true;
        cv_.wait(lk);
        producer_waits_ = false;
      }
      if (stop_) {
        done_ = true;
        return;
      }
    }
    unsigned char* slot = ring_ + (at % kDepth) * kChunk;
    auto v = d_.read_into(slot, kChunk);
    std::lock_guard lk(mu_);
    if (!v || v->empty()) {
      if (!v) error_ = std::move(v).error();
      done_ = true;
      cv_.notify_all();
      return;
    }
    len_[at % kDepth] = v->size();
    head_ = at + 1;
    if (consumer_waits_) cv_.notify_all();
  }
}

}  // namespace berth::image
