// Servers for the registry client's tests, all on 127.0.0.1 with ports the
// kernel picks:
//   LocalRegistry   a real docker-registry (plain HTTP, htpasswd, TLS with a
//                   test CA, or bearer tokens), its storage in a temp dir;
//   FakeHttpServer  a scripted HTTP/1.1 server on a thread, for what a real
//                   registry will not do on demand (drop a connection
//                   mid-blob, redirect, lie about a digest);
//   TokenServer     a FakeHttpServer issuing RS256 JWTs docker-registry's
//                   `auth: token` accepts (x5c header, the cert being the
//                   registry's rootcertbundle).
// Each owns everything it started: the destructor stops its process or thread
// (that process only, by pid) and removes its temp dir, also after a failed
// assertion.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "util/error.h"
#include "util/fd.h"

namespace berth::image::test {

// A fresh directory under /tmp, removed with everything in it.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Runs a tool (openssl, htpasswd) to completion; the error carries its output.
Result<> run_tool(const std::vector<std::string>& argv, const std::string& log_path);

// A loopback port nothing listens on (bound, then closed).
int free_port();

std::string base64(std::string_view in);

struct HttpRequest {
  std::string method, path, query;            // "/v2/app/blobs/sha256:..", "a=b&c=d"
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string header(const std::string& name) const;
  std::vector<std::string> query_values(const std::string& name) const;  // URL-decoded
};

class FakeHttpServer {
 public:
  // Returns the raw bytes to write; the connection is closed after them, so
  // an answer that stops short of its Content-Length is a dropped connection.
  using Handler = std::function<std::string(const HttpRequest&)>;
  explicit FakeHttpServer(Handler handler);
  ~FakeHttpServer();
  FakeHttpServer(const FakeHttpServer&) = delete;
  FakeHttpServer& operator=(const FakeHttpServer&) = delete;

  int port() const { return port_; }
  std::string domain() const { return "127.0.0.1:" + std::to_string(port_); }
  // What it answered so far (requests it could not parse, such as a TLS
  // hello, are not in it).
  std::vector<HttpRequest> requests() const;

  // "HTTP/1.1 <status>" with Content-Length, Connection: close and `headers`.
  static std::string reply(int status, std::string_view body, const std::vector<std::string>& headers = {});

 private:
  void serve();
  void serve_one(int fd);
  Handler handler_;
  UniqueFd listener_;
  UniqueFd stop_read_, stop_write_;
  int port_ = 0;
  mutable std::mutex mu_;
  std::vector<HttpRequest> requests_;
  std::thread thread_;
};

class TokenServer {
 public:
  static constexpr const char* kIssuer = "berth-test-issuer";
  static constexpr const char* kService = "berth-test-registry";
  // Makes its key and self-signed cert (openssl) in `dir`. Only `user` with
  // `password` (Basic) gets tokens; everyone else gets 401.
  static Result<std::unique_ptr<TokenServer>> start(const std::string& dir, std::string user, std::string password);
  ~TokenServer();

  std::string realm() const { return "http://127.0.0.1:" + std::to_string(server_->port()) + "/token"; }
  const std::string& cert_path() const { return cert_path_; }
  std::vector<HttpRequest> requests() const { return server_->requests(); }

 private:
  TokenServer() = default;
  std::string answer(const HttpRequest& rq);
  std::string user_, password_, cert_path_, cert_der_b64_;
  void* key_ = nullptr;  // EVP_PKEY*
  std::unique_ptr<FakeHttpServer> server_;
};

struct RegistryConfig {
  enum class Auth { kNone, kHtpasswd, kToken };
  Auth auth = Auth::kNone;
  bool tls = false;
  std::string user = "alice", password = "s3cret";
};

class LocalRegistry {
 public:
  static constexpr const char* kBinary = "/usr/bin/docker-registry";
  // Starts it and waits until GET /v2/ answers.
  static Result<std::unique_ptr<LocalRegistry>> start(const RegistryConfig& cfg);
  ~LocalRegistry();

  int port() const { return port_; }
  std::string domain() const { return "127.0.0.1:" + std::to_string(port_); }
  const std::string& dir() const { return dir_->path(); }
  std::string storage() const { return dir() + "/storage"; }
  // The blob's file in the registry's storage (to corrupt it).
  std::string blob_data_path(const std::string& hex) const;
  std::string ca_cert() const { return dir() + "/ca.crt"; }  // TLS only
  TokenServer* token_server() const { return token_.get(); }
  // Requests in its access log whose method matches and whose target starts
  // with `target_prefix`; waits until at least `at_least` are logged (the
  // log line is written just after the answer) or a second has passed.
  size_t count_requests(std::string_view method, std::string_view target_prefix, size_t at_least = 0) const;
  std::string log() const;

 private:
  LocalRegistry() = default;
  Result<> launch(const RegistryConfig& cfg);
  void stop();
  std::unique_ptr<TempDir> dir_;
  std::unique_ptr<TokenServer> token_;
  int port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace berth::image::test
