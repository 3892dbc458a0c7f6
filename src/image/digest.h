// Content digests ("sha256:<64 hex>") as the OCI image spec defines them, and a
// streaming SHA-256 (OpenSSL's EVP) to compute them while data flows.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "util/error.h"

namespace berth::image {

struct Digest {
  std::string algorithm;  // "sha256"
  std::string hex;        // lowercase, 64 characters for sha256

  // Accepts only "sha256:" followed by 64 lowercase hex digits: a digest from an
  // image or registry is hostile until checked, and becomes a path component.
  static Result<Digest> parse(std::string_view s);
  std::string str() const { return algorithm + ":" + hex; }
  bool operator==(const Digest&) const = default;
};

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(const void* data, size_t len);
  void update(std::string_view s) { update(s.data(), s.size()); }
  // The digest of everything passed to update; the hasher is spent after.
  Digest finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

Digest sha256_of(std::string_view data);

}  // namespace berth::image
