// Image references as Docker and the distribution spec write them:
//   [domain[:port]/]path[:tag][@digest]
// normalized as Docker normalizes them: a first component without '.' or ':'
// (and not "localhost") is a path, not a domain, and the domain is then
// docker.io; a one-component path on docker.io gets "library/"; a reference
// with neither tag nor digest gets the tag "latest".
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "image/digest.h"
#include "util/error.h"

namespace berth::image {

struct Reference {
  std::string domain;            // "docker.io", "localhost:5000", "[::1]:5000"
  std::string path;              // "library/busybox"
  std::string tag;               // "latest" by default; empty when only a digest was given
  std::optional<Digest> digest;  // "@sha256:..."

  // Refuses (naming the reference) upper case in the path, empty components,
  // a tag longer than 128 or with characters outside [A-Za-z0-9_.-], a
  // malformed digest, a total length over 255.
  static Result<Reference> parse(std::string_view s);

  // "docker.io/library/busybox"
  std::string repository() const;
  // The canonical name: "docker.io/library/busybox:latest", with "@digest" when set.
  std::string str() const;
  // As Docker prints it: "busybox:latest", "localhost:5000/app:1" (docker.io
  // and library/ left out).
  std::string familiar() const;
  // "busybox", "localhost:5000/app".
  std::string familiar_repository() const;
  // The tag when set, else the digest: what goes after /manifests/ in a registry URL.
  std::string manifest_ref() const;
  // localhost, 127.0.0.0/8 and ::1 (with or without a port): insecure by default.
  bool loopback() const;
};

}  // namespace berth::image
