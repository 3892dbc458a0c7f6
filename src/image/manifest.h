// The image formats: OCI image-spec index, manifest and config, and Docker's
// v2 schema 2 manifest and manifest list (the same shapes under other media
// types). Parsing is strict where a value becomes a path or a decision (digests,
// sizes, media types) and lenient elsewhere, as registries in the wild are.
//
// Everything parsed here comes from a registry or an archive and is hostile:
// digests are checked by Digest::parse, sizes must be non-negative integers,
// and an unknown media type is an error naming it.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "image/digest.h"
#include "util/error.h"

namespace berth::image {

namespace media {
inline constexpr std::string_view kOciIndex = "application/vnd.oci.image.index.v1+json";
inline constexpr std::string_view kOciManifest = "application/vnd.oci.image.manifest.v1+json";
inline constexpr std::string_view kOciConfig = "application/vnd.oci.image.config.v1+json";
inline constexpr std::string_view kOciLayer = "application/vnd.oci.image.layer.v1.tar";
inline constexpr std::string_view kOciLayerGzip = "application/vnd.oci.image.layer.v1.tar+gzip";
inline constexpr std::string_view kOciLayerZstd = "application/vnd.oci.image.layer.v1.tar+zstd";
inline constexpr std::string_view kDockerList = "application/vnd.docker.distribution.manifest.list.v2+json";
inline constexpr std::string_view kDockerManifest = "application/vnd.docker.distribution.manifest.v2+json";
inline constexpr std::string_view kDockerConfig = "application/vnd.docker.container.image.v1+json";
inline constexpr std::string_view kDockerLayer = "application/vnd.docker.image.rootfs.diff.tar.gzip";
inline constexpr std::string_view kDockerForeignLayer =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
}  // namespace media

// Every manifest and index type berth reads, for a registry's Accept header.
const std::vector<std::string>& accepted_manifest_types();
bool is_index_type(std::string_view media_type);
bool is_manifest_type(std::string_view media_type);

enum class Compression { kNone, kGzip, kZstd };
// The compression a layer media type names; an error for anything else
// (including non-distributable foreign layers, which berth does not fetch).
Result<Compression> layer_compression(std::string_view media_type);

struct Platform {
  std::string os = "linux";
  std::string architecture;  // GOARCH names: amd64, arm64, arm, 386, ppc64le, s390x, riscv64
  std::string variant;       // "v7", "v8"; empty when none

  // The machine berth runs on ("linux/amd64").
  static Platform host();
  // "linux/arm64/v8", "linux/amd64", "arm64" (os linux assumed).
  static Result<Platform> parse(std::string_view s);
  std::string str() const;
  // `want`'s variant is ignored when empty; arm64's "v8" is its default variant.
  bool matches(const Platform& want) const;
};

struct Descriptor {
  std::string media_type;
  Digest digest;
  uint64_t size = 0;
  std::optional<Platform> platform;
  std::map<std::string, std::string> annotations;
};

struct Index {
  std::string media_type;
  std::vector<Descriptor> manifests;
  std::map<std::string, std::string> annotations;
};

struct Manifest {
  std::string media_type;
  Descriptor config;
  std::vector<Descriptor> layers;
};

struct HistoryEntry {
  std::string created;     // RFC 3339
  std::string created_by;
  std::string comment;
  bool empty_layer = false;
};

// The parts of an image config the store needs; the engine reads the rest
// from the raw JSON.
struct ImageConfig {
  Platform platform;
  std::string created;  // RFC 3339, may be empty
  std::vector<Digest> diff_ids;
  std::vector<HistoryEntry> history;
};

// The media type of a manifest or index document, from `declared` (a
// Content-Type or descriptor) when it is one berth knows, else from the
// document's own "mediaType", else from its shape ("manifests" or "layers").
Result<std::string> sniff_media_type(std::string_view doc, std::string_view declared = {});
Result<Index> parse_index(std::string_view doc);
Result<Manifest> parse_manifest(std::string_view doc);
Result<ImageConfig> parse_config(std::string_view doc);

// The manifest in `index` for `want`; an error listing the platforms there are.
Result<Descriptor> select_platform(const Index& index, const Platform& want);

// chain(L1) = diff_id(L1); chain(Ln) = sha256(chain(Ln-1) + " " + diff_id(Ln)):
// the key under which a layer, applied over its parents, is unpacked once.
std::vector<Digest> chain_ids(const std::vector<Digest>& diff_ids);

// Serialized OCI documents, for images berth makes itself (templates, import,
// commit, load): stable key order, no whitespace.
std::string descriptor_json(const Descriptor& d);
std::string make_manifest(const Descriptor& config, const std::vector<Descriptor>& layers);

}  // namespace berth::image
