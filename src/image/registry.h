// The registry client: the OCI distribution API (pull and push of manifests and
// blobs) over libcurl, with Docker's rules for transport and credentials.
//
// Transport: HTTPS verified against the system CAs plus Docker's certs.d
// (<dir>/<host[:port]>/*.crt). An insecure host (listed, or loopback) gets
// HTTPS without verification, and plain HTTP when its TLS handshake fails;
// the choice is made once, in connect().
// Credentials: anonymous, Basic (Docker's config.json "auths"), or Bearer
// tokens fetched from the realm a 401 names and cached per scope.
// Everything that comes from a registry is checked before it is trusted:
// manifests are hashed and bounded (4 MiB), blobs land in the content store
// only with their digest and size verified.
//
// Nothing here prints: every failure is one Result line naming the registry,
// the image or the blob at fault.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "image/content_store.h"
#include "image/digest.h"
#include "image/reference.h"
#include "util/error.h"

namespace berth::image {

// Bytes done / total for one blob; called from the transferring thread, about
// ten times a second per blob and once more at the end.
using ProgressFn = std::function<void(const Digest& blob, uint64_t done, uint64_t total)>;

struct RegistryOptions {
  std::string auth_file;              // Docker config.json ("auths": {"host": {"auth": base64(user:pass)}}); empty = none
  std::vector<std::string> insecure;  // "host[:port]" allowed plain HTTP / unverified TLS ("host" matches every port)
  std::vector<std::string> certs_dirs = {"/etc/berth/certs.d", "/etc/docker/certs.d"};
  std::string extra_ca_dir;           // *.crt here trusted for this registry too (podman's --cert-dir)
  std::string user_agent = "berth";
  int timeout_s = 30;                 // connect and low-speed timeouts (not total time)
  // Loopback registries are insecure by default, as for Docker; tests turn this
  // off to check real TLS verification against 127.0.0.1.
  bool loopback_insecure = true;
};

struct FetchedManifest {
  // The Content-Type, or the manifest's own mediaType when the server sent a
  // generic one (application/json); empty when neither says.
  std::string media_type;
  Digest digest;           // sha256 of bytes
  std::string bytes;
};

// One repository on one registry. Thread-safe: blobs may transfer from several
// threads at once (each transfer has its own curl handle; only the token
// cache is shared, under a mutex).
class Registry {
 public:
  static Result<std::unique_ptr<Registry>> connect(const Reference& ref, const RegistryOptions& o);
  ~Registry();

  // GET /v2/<path>/manifests/<ref> accepting `accept`. Verifies the digest when
  // the reference is one, and Docker-Content-Digest when sent. Refuses
  // manifests over 4 MiB.
  Result<FetchedManifest> manifest(std::string_view tag_or_digest, const std::vector<std::string>& accept);
  // Downloads a blob into `store` (digest and size verified there); nothing to
  // do when the store has it. A dropped connection is resumed with a Range
  // request from where it stopped (3 attempts in all). `what` names the blob
  // in errors.
  Result<> fetch_blob(const Digest& d, uint64_t size, ContentStore& store, const std::string& what,
                      const ProgressFn& progress = {});
  Result<bool> has_blob(const Digest& d);  // HEAD
  // Uploads a blob from `store` unless the registry has it. With `mount_from`
  // (another repository path on this registry) a cross-repository mount is
  // tried first, and the upload happens only when the registry declines it.
  enum class Pushed { kExisted, kMounted, kUploaded };
  Result<Pushed> push_blob(const Digest& d, ContentStore& store, const std::optional<std::string>& mount_from = std::nullopt,
                     const ProgressFn& progress = {});
  // PUT /v2/<path>/manifests/<tag_or_digest>; returns the digest of bytes.
  Result<Digest> put_manifest(std::string_view tag_or_digest, std::string_view media_type, std::string_view bytes);

  // "https://localhost:5000" or "http://...": the scheme connect() chose.
  const std::string& base_url() const;

 private:
  struct Impl;
  friend Result<> login(const std::string&, const std::string&, const std::string&, const RegistryOptions&);
  explicit Registry(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// `berth login`: checks the credentials against the registry (GET /v2/, through
// its token server when it has one), then stores them in o.auth_file (created
// 0600; other entries and keys kept; written atomically and durably).
Result<> login(const std::string& domain, const std::string& user, const std::string& password, const RegistryOptions& o);
// Removes the stored credentials; "not logged in to <domain>" when there are none.
Result<> logout(const std::string& domain, const RegistryOptions& o);

}  // namespace berth::image
