// The static berth's SHA-256 (cli/berth/lite_sha256.cc), linked into a test
// of its own (it defines libcrypto's names): FIPS 180-4's examples, and the
// padding's edge cases (lengths around a 64-byte block) against Python's
// hashlib, whole and fed in pieces of every size.
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>

#include <gtest/gtest.h>

#include <string>

namespace {

std::string hex_sha256(const std::string& data, size_t piece) {
  SHA256_CTX c;
  SHA256_Init(&c);
  for (size_t at = 0; at < data.size(); at += piece) SHA256_Update(&c, data.data() + at, std::min(piece, data.size() - at));
  unsigned char md[32];
  SHA256_Final(md, &c);
  static const char* d = "0123456789abcdef";
  std::string out;
  for (unsigned char b : md) out += d[b >> 4], out += d[b & 15];
  return out;
}

TEST(LiteSha256, FipsExamples) {
  EXPECT_EQ(hex_sha256("", 1), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(hex_sha256("abc", 1), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(hex_sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 7),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(hex_sha256(std::string(1000000, 'a'), 4099),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(LiteSha256, BlockEdges) {
  const std::pair<size_t, const char*> want[] = {
      {55, "e7313d333c272e639f790978283f9eb392e843d0f29b7016828bb1daa4aac70b"},
      {56, "4324d65f3c103567f5589c710bc08f8523f929a9272e3af36fc968e52abc6c27"},
      {57, "35df609437dcfea3279283ab79fd554e2bf78f8f7ae2de532d8ee300b09e8f73"},
      {63, "81c80242132f230c3bd41b3e63bbcff16107339549214a99614ff26664625055"},
      {64, "39e3d7b6b5d075d37d053ad89b24b41bef4f3c29760c84447cab3f3be1882241"},
      {65, "aacca6ff74fdbb296d165a45cecfa04e5127bc008770fbbdd48006f2d2fae95e"},
      {119, "9ce7368e4daf32341631b492e80359dc9f594b48453cd0dd5bf0b19279cc177e"},
      {120, "7836b787757e95e58b3ca5aec90b1b004e8deba1e50e9675af9cabf1a13a04b5"},
      {128, "d2742f1f4ac6bb7ca2b239ee18402ba8b3f9f8e652d2a72973c2b9ba11c08cf6"},
      {1000, "1e9bc38cbf860b9ec31918b065f9b52476c549a782e0e7990bed8ce3868d2371"},
  };
  for (auto& [n, digest] : want) {
    std::string data;
    for (size_t i = 0; i < n; ++i) data += static_cast<char>((i * 7 + 3) & 0xff);
    for (size_t piece : {size_t{1}, size_t{13}, size_t{64}, n ? n : 1}) EXPECT_EQ(hex_sha256(data, piece), digest) << n << "/" << piece;
  }
}

}  // namespace
