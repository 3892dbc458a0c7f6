#include "image/digest.h"

#include <openssl/evp.h>

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
  EVP_MD_CTX* ctx = nullptr;
};

Sha256::Sha256() : impl_(new Impl) {
  impl_->ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(impl_->ctx, EVP_sha256(), nullptr);
}

Sha256::~Sha256() { EVP_MD_CTX_free(impl_->ctx); }

void Sha256::update(const void* data, size_t len) { EVP_DigestUpdate(impl_->ctx, data, len); }

Digest Sha256::finish() {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_DigestFinal_ex(impl_->ctx, md, &n);
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
