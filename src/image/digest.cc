#include "image/digest.h"

// The low-level SHA-256 of libcrypto (deprecated in OpenSSL 3, kept): the same
// SHA-NI code as EVP's, without EVP. Through EVP a static link took in the
// provider machinery, ~200 KB of pointer tables that every start of `berth`
// (a PIE) relocated page by page (~50 copy-on-write faults).
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>

#include <cstdio>

namespace berth::image {

Result<Digest> Digest::parse(std::string_view s) {
  auto colon = s.find(':');
  if (colon == std::string_view::npos) return fail("digest \"" + std::string(s) + "\": expected algorithm:hex");
  std::string_view algo = s.substr(0, colon), hex = s.substr(colon + 1);
  if (algo != "sha256") return fail("digest \"" + std::string(s) + "\": unsupported algorithm \"" + std::string(algo) + "\"");
  if (hex.size() != 64 || hex.find_first_not_of("0123456789abcdef") != std::string_view::npos)
    return fail("digest \"" + std::string(s) + "\": not 64 lowercase hex digits");
  return Digest{std::string(algo), std::string(hex)};
}

struct Sha256::Impl {
  SHA256_CTX ctx;
};

Sha256::Sha256() : impl_(new Impl) { SHA256_Init(&impl_->ctx); }

Sha256::~Sha256() = default;

void Sha256::update(const void* data, size_t len) { SHA256_Update(&impl_->ctx, data, len); }

Digest Sha256::finish() {
  unsigned char md[SHA256_DIGEST_LENGTH];
  unsigned int n = SHA256_DIGEST_LENGTH;
  SHA256_Final(md, &impl_->ctx);
  std::string hex(n * 2, '0');
  static const char* digits = "0123456789abcdef";
  for (unsigned i = 0; i < n; ++i) {
    hex[2 * i] = digits[md[i] >> 4];
    hex[2 * i + 1] = digits[md[i] & 15];
  }
  return Digest{"sha256", hex};
}

Digest sha256_of(std::string_view data) {
  Sha256 h;
  h.update(data);
  return h.finish();
}

}  // namespace berth::image
