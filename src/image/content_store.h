// The content store: blobs (compressed layers, manifests, configs) addressed by
// digest under <root>/content/sha256/<hex>.
//
// A blob is written to <root>/content/ingest/, hashed while it is written,
// fsynced, and renamed into place only when its digest (and its size, where the
// caller knows it) match: a blob with the wrong digest is never stored. A writer
// holds an flock on its ingest file; opening the store removes ingest files no
// live writer holds (what a killed pull leaves), so a crash at any moment
// leaves a store the next command uses as is.
//
// Writer is the push side of the same path (a download feeding bytes as they
// arrive): it can go back to zero bytes when a resumed download restarts from
// the beginning, and removes its ingest file unless committed.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "image/digest.h"
#include "util/error.h"
#include "util/fd.h"

namespace berth::image {

class ContentStore {
 public:
  // Creates <root>/content/{sha256,ingest} as needed and clears abandoned ingests.
  static Result<ContentStore> open(const std::string& root);

  std::string path(const Digest& d) const;
  bool has(const Digest& d) const;
  Result<uint64_t> size(const Digest& d) const;
  Result<UniqueFd> open_blob(const Digest& d) const;
  // The whole blob, refused when larger than `max` (manifests and configs are
  // small; a hostile registry's are not to be trusted to be).
  Result<std::string> read(const Digest& d, uint64_t max = 16u << 20) const;

  // Stores what `fd` yields until EOF. With `expect`, the data must hash to it
  // (and, with `size`, be exactly that long: a longer stream is cut off early).
  // `what` names the blob in errors ("layer 2 of busybox:latest").
  Result<Digest> ingest(int fd, const std::optional<Digest>& expect, std::optional<uint64_t> size,
                        const std::string& what);
  // The same for the `size` bytes at `offset` in the file `fd` (a blob inside
  // an archive), read with pread; a file shorter than that is an error.
  Result<Digest> ingest_range(int fd, uint64_t offset, uint64_t size, const std::optional<Digest>& expect,
                              const std::string& what);
  Result<Digest> put(std::string_view data, const std::optional<Digest>& expect = std::nullopt,
                     const std::string& what = "blob");

  // An ingest fed by the caller. Not thread-safe (one writer per transfer);
  // several writers of one store may work at once.
  class Writer {
   public:
    Writer(Writer&& o) noexcept;
    Writer& operator=(Writer&&) = delete;
    ~Writer();
    // Refuses data beyond the announced size.
    Result<> write(std::string_view data);
    // All of a fresh writer's bytes: the `size` bytes at `offset` in `src`
    // (pread), written around the page cache (O_DIRECT) where the filesystem
    // allows.
    Result<> copy_range(int src, uint64_t offset, uint64_t size);
    uint64_t written() const { return written_; }
    // Back to zero bytes (a server that answered a Range request with the whole blob).
    Result<> restart();
    // Checks size and digest, fsyncs and renames into place; the writer is spent after.
    Result<Digest> commit();

   private:
    friend class ContentStore;
    Writer(std::string root, std::string tmp, UniqueFd fd, std::optional<Digest> expect,
           std::optional<uint64_t> size, std::string what);
    std::string root_;  // a copy: the store may move while a writer works
    std::string tmp_;  // empty once committed or moved from
    UniqueFd fd_;
    std::optional<Digest> expect_;
    std::optional<uint64_t> size_;
    std::string what_;
    std::unique_ptr<Sha256> hash_;
    uint64_t written_ = 0;
  };
  Result<Writer> writer(const std::optional<Digest>& expect, std::optional<uint64_t> size, const std::string& what);
  // Removing a blob that is not there is not an error.
  Result<> remove(const Digest& d);
  Result<std::vector<Digest>> list() const;

 private:
  explicit ContentStore(std::string root) : root_(std::move(root)) {}
  std::string root_;  // <root>/content
};

}  // namespace berth::image
