// The image formats: parsing OCI and Docker manifests, indexes and configs
// (hostile input refused with the field named), platform selection, chain IDs.
#include "image/manifest.h"

#include <gtest/gtest.h>

namespace berth::image {
namespace {

const std::string kA = "sha256:" + std::string(64, 'a');
const std::string kB = "sha256:" + std::string(64, 'b');

std::string desc(const std::string& mt, const std::string& digest, int size, const std::string& extra = "") {
  return R"({"mediaType":")" + mt + R"(","digest":")" + digest + R"(","size":)" + std::to_string(size) + extra + "}";
}

TEST(Manifest, ParsesDockerSchema2) {
  std::string doc = R"({"schemaVersion":2,"mediaType":")" + std::string(media::kDockerManifest) + R"(","config":)" +
                    desc(std::string(media::kDockerConfig), kA, 10) + R"(,"layers":[)" +
                    desc(std::string(media::kDockerLayer), kB, 20) + "]}";
  auto m = parse_manifest(doc);
  ASSERT_TRUE(m) << m.error().str();
  EXPECT_EQ(m->media_type, media::kDockerManifest);
  EXPECT_EQ(m->config.digest.str(), kA);
  ASSERT_EQ(m->layers.size(), 1u);
  EXPECT_EQ(m->layers[0].size, 20u);
  EXPECT_EQ(*layer_compression(m->layers[0].media_type), Compression::kGzip);
  EXPECT_EQ(*sniff_media_type(doc), media::kDockerManifest);
}

TEST(Manifest, RefusesHostileFields) {
  auto with_layer = [](const std::string& layer) {
    return R"({"schemaVersion":2,"config":)" + desc(std::string(media::kOciConfig), kA, 1) + R"(,"layers":[)" + layer +
           "]}";
  };
  auto bad_digest = parse_manifest(with_layer(desc(std::string(media::kOciLayerGzip), "sha256:../../etc", 1)));
  ASSERT_FALSE(bad_digest);
  EXPECT_NE(bad_digest.error().str().find("manifest.layers[0].digest"), std::string::npos) << bad_digest.error().str();
  auto negative = parse_manifest(with_layer(desc(std::string(media::kOciLayerGzip), kB, -5)));
  ASSERT_FALSE(negative);
  EXPECT_NE(negative.error().str().find("manifest.layers[0].size"), std::string::npos);
  auto unknown = parse_manifest(with_layer(desc("application/x-weird", kB, 5)));
  ASSERT_FALSE(unknown);
  EXPECT_NE(unknown.error().str().find("application/x-weird"), std::string::npos);
  auto foreign = parse_manifest(with_layer(desc(std::string(media::kDockerForeignLayer), kB, 5)));
  ASSERT_FALSE(foreign);
  EXPECT_NE(foreign.error().str().find("non-distributable"), std::string::npos);
  EXPECT_FALSE(parse_manifest("[1,2]"));
  EXPECT_FALSE(parse_manifest("{not json"));
  auto schema1 = sniff_media_type(R"({"schemaVersion":1,"fsLayers":[]})");
  ASSERT_FALSE(schema1);
  EXPECT_NE(schema1.error().str().find("schema 1"), std::string::npos);
  auto weird = sniff_media_type(R"({"mediaType":"application/vnd.example+json"})");
  ASSERT_FALSE(weird);
  EXPECT_NE(weird.error().str().find("application/vnd.example+json"), std::string::npos);
}

TEST(Manifest, SelectsPlatformFromIndex) {
  std::string doc = R"({"schemaVersion":2,"mediaType":")" + std::string(media::kOciIndex) + R"(","manifests":[)" +
                    desc(std::string(media::kOciManifest), kA, 1,
                         R"(,"platform":{"os":"linux","architecture":"arm64","variant":"v8"})") +
                    "," +
                    desc(std::string(media::kOciManifest), kB, 1, R"(,"platform":{"os":"linux","architecture":"amd64"})") +
                    "]}";
  auto idx = parse_index(doc);
  ASSERT_TRUE(idx) << idx.error().str();
  EXPECT_EQ(select_platform(*idx, *Platform::parse("linux/amd64"))->digest.str(), kB);
  EXPECT_EQ(select_platform(*idx, *Platform::parse("linux/arm64"))->digest.str(), kA);
  EXPECT_EQ(select_platform(*idx, *Platform::parse("linux/arm64/v8"))->digest.str(), kA);
  auto none = select_platform(*idx, *Platform::parse("linux/s390x"));
  ASSERT_FALSE(none);
  EXPECT_NE(none.error().str().find("linux/arm64/v8, linux/amd64"), std::string::npos) << none.error().str();
  EXPECT_FALSE(Platform::parse("a/b/c/d"));
  EXPECT_FALSE(Platform::parse("linux//v7"));
  EXPECT_EQ(Platform::parse("x86_64")->str(), "linux/amd64");
}

TEST(Manifest, ParsesConfigDiffIdsAndHistory) {
  std::string doc = R"({"architecture":"amd64","os":"linux","created":"2024-01-02T03:04:05Z",
    "rootfs":{"type":"layers","diff_ids":[")" + kA + R"(",")" + kB + R"("]},
    "history":[{"created_by":"ADD a"},{"created_by":"ENV x","empty_layer":true},{"created_by":"ADD b"}]})";
  auto c = parse_config(doc);
  ASSERT_TRUE(c) << c.error().str();
  EXPECT_EQ(c->platform.str(), "linux/amd64");
  ASSERT_EQ(c->diff_ids.size(), 2u);
  ASSERT_EQ(c->history.size(), 3u);
  EXPECT_TRUE(c->history[1].empty_layer);
  auto bad = parse_config(R"({"rootfs":{"diff_ids":["sha256:nothex"]}})");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().str().find("diff_ids[0]"), std::string::npos);
}

TEST(Manifest, ChainIdsFollowTheSpec) {
  // Values computed independently (Python hashlib) from the image spec's formula.
  auto ids = chain_ids({*Digest::parse(kA), *Digest::parse(kB), *Digest::parse(kA)});
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_EQ(ids[0].str(), kA);
  EXPECT_EQ(ids[1].str(), "sha256:ccd722928bd92476ba1745586fed6e45a102504185ad88cd89e01ff116fd146c");
  EXPECT_EQ(ids[2].str(), "sha256:406364a4bd8d39df8107071d4494fa73814420337124657ec5999b072e5d3352");
}

TEST(Manifest, MadeManifestParsesBack) {
  Descriptor cfg{std::string(media::kOciConfig), *Digest::parse(kA), 3};
  Descriptor layer{std::string(media::kOciLayerGzip), *Digest::parse(kB), 7};
  auto m = parse_manifest(make_manifest(cfg, {layer}));
  ASSERT_TRUE(m) << m.error().str();
  EXPECT_EQ(m->media_type, media::kOciManifest);
  EXPECT_EQ(m->layers[0].digest, layer.digest);
}

}  // namespace
}  // namespace berth::image
