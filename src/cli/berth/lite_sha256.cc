// SHA-256 (FIPS 180-4) for the static berth, in place of libcrypto's
// SHA256_Init/Update/Final (image/digest.cc's calls, the only ones berth
// makes of libcrypto): linking those took in libcrypto's CPU probe, which
// runs from .init at every start (OPENSSL_cpuid_setup, a dozen CPUID
// instructions at ~5 us each under this VM's hypervisor: ~50 us of every
// command, profiled). berth hashes little (the verbs that pull, load and
// commit run in berth-full, which keeps libcrypto's SHA-NI code); plain C++
// suffices. tests/unit/lite_sha256_test.cc checks it against FIPS's vectors
// and against libcrypto.
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>

#include <cstdint>
#include <cstring>

namespace {

constexpr uint32_t kK[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

inline uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

void compress(uint32_t h[8], const unsigned char* block) {
  uint32_t w[64];
  for (int i = 0; i < 16; ++i)
    w[i] = uint32_t(block[4 * i]) << 24 | uint32_t(block[4 * i + 1]) << 16 | uint32_t(block[4 * i + 2]) << 8 |
           uint32_t(block[4 * i + 3]);
  for (int i = 16; i < 64; ++i) {
    uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
    uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
  for (int i = 0; i < 64; ++i) {
    uint32_t t1 = k + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + kK[i] + w[i];
    uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
    k = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
  }
  h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += k;
}

// The context's fields as libcrypto's header lays them out: h, the length in
// bits (Nh:Nl), the pending bytes in `data`, their count in `num`.
unsigned char* pending(SHA256_CTX* c) { return reinterpret_cast<unsigned char*>(c->data); }

}  // namespace

extern "C" {

int SHA256_Init(SHA256_CTX* c) {
  static const uint32_t init[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  std::memset(c, 0, sizeof *c);
  std::memcpy(c->h, init, sizeof init);
  c->md_len = SHA256_DIGEST_LENGTH;
  return 1;
}

int SHA256_Update(SHA256_CTX* c, const void* data, size_t len) {
  auto* p = static_cast<const unsigned char*>(data);
  uint64_t bits = (uint64_t(c->Nh) << 32 | c->Nl) + uint64_t(len) * 8;
  c->Nl = static_cast<uint32_t>(bits), c->Nh = static_cast<uint32_t>(bits >> 32);
  if (c->num) {
    size_t take = len < SHA256_CBLOCK - c->num ? len : SHA256_CBLOCK - c->num;
    std::memcpy(pending(c) + c->num, p, take);
    c->num += static_cast<unsigned>(take), p += take, len -= take;
    if (c->num < SHA256_CBLOCK) return 1;
    compress(c->h, pending(c));
    c->num = 0;
  }
  for (; len >= SHA256_CBLOCK; p += SHA256_CBLOCK, len -= SHA256_CBLOCK) compress(c->h, p);
  std::memcpy(pending(c), p, len);
  c->num = static_cast<unsigned>(len);
  return 1;
}

int SHA256_Final(unsigned char* md, SHA256_CTX* c) {
  uint64_t bits = uint64_t(c->Nh) << 32 | c->Nl;
  unsigned char* buf = pending(c);
  buf[c->num++] = 0x80;
  if (c->num > SHA256_CBLOCK - 8) {
    std::memset(buf + c->num, 0, SHA256_CBLOCK - c->num);
    compress(c->h, buf);
    c->num = 0;
  }
  std::memset(buf + c->num, 0, SHA256_CBLOCK - 8 - c->num);
  for (int i = 0; i < 8; ++i) buf[SHA256_CBLOCK - 1 - i] = static_cast<unsigned char>(bits >> (8 * i));
  compress(c->h, buf);
  for (int i = 0; i < 8; ++i)
    for (int j = 0; j < 4; ++j) md[4 * i + j] = static_cast<unsigned char>(c->h[i] >> (24 - 8 * j));
  std::memset(c, 0, sizeof *c);
  return 1;
}

}  // extern "C"
