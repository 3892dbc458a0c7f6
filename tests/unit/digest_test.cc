#include "image/digest.h"

#include <gtest/gtest.h>

#include <vector>

namespace berth::image {
namespace {

TEST(Digest, ParsesOnlyWellFormedSha256) {
  std::string hex(64, 'a');
  auto d = Digest::parse("sha256:" + hex);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->str(), "sha256:" + hex);
  for (std::string bad : std::vector<std::string>{"", "sha256", "sha256:", "sha256:" + std::string(63, 'a'), "sha256:" + std::string(65, 'a'),
                          "sha256:" + std::string(64, 'A'), "sha512:" + hex, "sha256:../../" + std::string(58, 'a'),
                          "sha256:" + std::string(63, 'a') + "/"})
    EXPECT_FALSE(Digest::parse(bad)) << bad;
}

TEST(Digest, Sha256MatchesKnownVectors) {
  EXPECT_EQ(sha256_of("").hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_of("abc").hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  // Streaming in pieces gives the same digest as one buffer.
  Sha256 h;
  h.update("a");
  h.update("bc");
  EXPECT_EQ(h.finish(), sha256_of("abc"));
}

}  // namespace
}  // namespace berth::image
