// The content store: blobs (compressed layers, manifests, configs) addressed by
// digest under <root>/content/sha256/<hex>.
//
// A blob is written to <root>/content/ingest/, hashed while it is written,
// fsynced, and renamed into place only when its digest (and its size, where the
// caller knows it) match: a blob with the wrong digest is never stored. A writer
// holds an flock on its ingest file; opening the store removes ingest files no
// live writer holds (what a killed pull leaves), so a crash at any moment
// leaves a store the next command uses as is.
#pragma once

#include <cstdint>
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
  Result<Digest> put(std::string_view data, const std::optional<Digest>& expect = std::nullopt,
                     const std::string& what = "blob");
  // Removing a blob that is not there is not an error.
  Result<> remove(const Digest& d);
  Result<std::vector<Digest>> list() const;

 private:
  explicit ContentStore(std::string root) : root_(std::move(root)) {}
  // Writes through `write` into an ingest file and commits it under its digest.
  template <class Fill>
  Result<Digest> ingest_with(const std::optional<Digest>& expect, std::optional<uint64_t> size,
                             const std::string& what, Fill&& fill);
  std::string root_;  // <root>/content
};

}  // namespace berth::image
