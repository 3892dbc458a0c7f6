#include "registry_fixture.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>

#include "util/fs.h"

extern char** environ;

namespace berth::image::test {

namespace {

using Clock = std::chrono::steady_clock;

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string url_decode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      out += static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16));
      i += 2;
    } else {
      out += s[i] == '+' ? ' ' : s[i];
    }
  }
  return out;
}

}  // namespace

std::string base64(std::string_view in) {
  std::string out(4 * ((in.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), reinterpret_cast<const unsigned char*>(in.data()),
                          static_cast<int>(in.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

namespace {

std::string base64url(std::string_view in) {
  std::string s = base64(in);
  while (!s.empty() && s.back() == '=') s.pop_back();
  for (char& c : s) c = c == '+' ? '-' : c == '/' ? '_' : c;
  return s;
}

const char* reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 206: return "Partial Content";
    case 307: return "Temporary Redirect";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    default: return "Status";
  }
}

}  // namespace

TempDir::TempDir() {
  char t[] = "/tmp/berth-reg-XXXXXX";
  if (::mkdtemp(t)) path_ = t;
}

TempDir::~TempDir() {
  if (!path_.empty()) (void)remove_tree(path_);
}

Result<> run_tool(const std::vector<std::string>& argv, const std::string& log_path) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid;
  int rc = ::posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return sys_error(rc, "spawn " + argv[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return {};
  return fail(argv[0] + " failed: " + read_file(log_path).value_or(""));
}

int free_port() {
  UniqueFd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (::bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) < 0 ||
      ::getsockname(s.get(), reinterpret_cast<sockaddr*>(&a), &len) < 0)
    return -1;
  return ntohs(a.sin_port);
}

// ---- FakeHttpServer ----

std::string HttpRequest::header(const std::string& name) const {
  auto it = headers.find(name);
  return it == headers.end() ? std::string() : it->second;
}

std::vector<std::string> HttpRequest::query_values(const std::string& name) const {
  std::vector<std::string> out;
  for (const auto& kv : split(query, '&')) {
    size_t eq = kv.find('=');
    if (eq != std::string::npos && url_decode(kv.substr(0, eq)) == name) out.push_back(url_decode(kv.substr(eq + 1)));
  }
  return out;
}

FakeHttpServer::FakeHttpServer(Handler handler) : handler_(std::move(handler)) {
  listener_.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (::bind(listener_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 && ::listen(listener_.get(), 64) == 0 &&
      ::getsockname(listener_.get(), reinterpret_cast<sockaddr*>(&a), &len) == 0)
    port_ = ntohs(a.sin_port);
  int p[2];
  if (::pipe2(p, O_CLOEXEC) == 0) {
    stop_read_.reset(p[0]);
    stop_write_.reset(p[1]);
  }
  thread_ = std::thread([this] { serve(); });
}

FakeHttpServer::~FakeHttpServer() {
  (void)!::write(stop_write_.get(), "x", 1);
  thread_.join();
}

std::vector<HttpRequest> FakeHttpServer::requests() const {
  std::lock_guard lock(mu_);
  return requests_;
}

std::string FakeHttpServer::reply(int status, std::string_view body, const std::vector<std::string>& headers) {
  std::string out = "HTTP/1.1 " + std::to_string(status) + " " + reason(status) + "\r\nContent-Length: " +
                    std::to_string(body.size()) + "\r\nConnection: close\r\n";
  for (const auto& h : headers) out += h + "\r\n";
  out += "\r\n";
  out += body;
  return out;
}

void FakeHttpServer::serve() {
  for (;;) {
    pollfd fds[2] = {{listener_.get(), POLLIN, 0}, {stop_read_.get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents) return;
    UniqueFd c(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (c) serve_one(c.get());
  }
}

void FakeHttpServer::serve_one(int fd) {
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string in;
  char buf[4096];
  while (in.find("\r\n\r\n") == std::string::npos && in.size() < (64u << 10)) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) return;
    in.append(buf, static_cast<size_t>(n));
    // A TLS hello (a client trying HTTPS first): close at once, as a plain
    // HTTP server's garbled answer would end its handshake.
    if (static_cast<unsigned char>(in[0]) == 0x16) return;
  }
  HttpRequest rq;
  auto lines = split(in.substr(0, in.find("\r\n\r\n")), '\n');
  if (lines.empty()) return;
  auto parts = split(lines[0], ' ');
  if (parts.size() < 3) return;
  rq.method = parts[0];
  size_t q = parts[1].find('?');
  rq.path = parts[1].substr(0, q);
  if (q != std::string::npos) rq.query = parts[1].substr(q + 1);
  for (size_t i = 1; i < lines.size(); ++i) {
    std::string l = lines[i];
    if (!l.empty() && l.back() == '\r') l.pop_back();
    size_t colon = l.find(':');
    if (colon == std::string::npos) continue;
    size_t v = l.find_first_not_of(' ', colon + 1);
    rq.headers[lower(l.substr(0, colon))] = v == std::string::npos ? "" : l.substr(v);
  }
  {
    std::lock_guard lock(mu_);
    requests_.push_back(rq);
  }
  std::string out = handler_(rq);
  std::string_view rest = out;
  while (!rest.empty()) {
    ssize_t n = ::send(fd, rest.data(), rest.size(), MSG_NOSIGNAL);
    if (n <= 0) return;
    rest.remove_prefix(static_cast<size_t>(n));
  }
  // Half-close and drain: closing with unread input would reset the
  // connection, and the client could lose what was sent before the reset.
  ::shutdown(fd, SHUT_WR);
  timeval drain{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &drain, sizeof drain);
  while (::read(fd, buf, sizeof buf) > 0) {
  }
}

// ---- TokenServer ----

Result<std::unique_ptr<TokenServer>> TokenServer::start(const std::string& dir, std::string user, std::string password) {
  std::unique_ptr<TokenServer> ts(new TokenServer);
  ts->user_ = std::move(user);
  ts->password_ = std::move(password);
  ts->cert_path_ = dir + "/token.crt";
  std::string key_path = dir + "/token.key";
  TRY(run_tool({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key_path, "-out", ts->cert_path_,
                "-days", "2", "-subj", "/CN=berth-test-token"},
               dir + "/openssl.log"));
  FILE* kf = std::fopen(key_path.c_str(), "r");
  if (!kf) return sys_error("open " + key_path);
  ts->key_ = PEM_read_PrivateKey(kf, nullptr, nullptr, nullptr);
  std::fclose(kf);
  FILE* cf = std::fopen(ts->cert_path_.c_str(), "r");
  if (!cf) return sys_error("open " + ts->cert_path_);
  X509* cert = PEM_read_X509(cf, nullptr, nullptr, nullptr);
  std::fclose(cf);
  if (!ts->key_ || !cert) return fail("token key or cert unreadable");
  unsigned char* der = nullptr;
  int n = i2d_X509(cert, &der);
  ts->cert_der_b64_ = base64(std::string_view(reinterpret_cast<char*>(der), static_cast<size_t>(n)));
  OPENSSL_free(der);
  X509_free(cert);
  TokenServer* self = ts.get();
  ts->server_ = std::make_unique<FakeHttpServer>([self](const HttpRequest& rq) { return self->answer(rq); });
  return ts;
}

TokenServer::~TokenServer() {
  server_.reset();  // the thread first: it uses the key
  EVP_PKEY_free(static_cast<EVP_PKEY*>(key_));
}

std::string TokenServer::answer(const HttpRequest& rq) {
  if (rq.path != "/token") return FakeHttpServer::reply(404, "");
  if (rq.header("authorization") != "Basic " + base64(user_ + ":" + password_))
    return FakeHttpServer::reply(401, R"({"details":"bad credentials"})", {"Content-Type: application/json"});
  nlohmann::json access = nlohmann::json::array();
  for (const auto& scope : rq.query_values("scope")) {
    for (const auto& s : split(scope, ' ')) {
      // "repository:<name>:<actions>": the name may itself hold ':' (a port).
      size_t first = s.find(':'), last = s.rfind(':');
      if (first == std::string::npos || first == last) continue;
      access.push_back({{"type", s.substr(0, first)},
                        {"name", s.substr(first + 1, last - first - 1)},
                        {"actions", split(s.substr(last + 1), ',')}});
    }
  }
  long now = static_cast<long>(std::time(nullptr));
  nlohmann::json header = {{"typ", "JWT"}, {"alg", "RS256"}, {"x5c", {cert_der_b64_}}};
  nlohmann::json claims = {{"iss", kIssuer}, {"sub", user_},      {"aud", kService},
                           {"exp", now + 300}, {"nbf", now - 10}, {"iat", now},
                           {"jti", std::to_string(now) + "-" + std::to_string(requests().size())},
                           {"access", access}};
  std::string signing_input = base64url(header.dump()) + "." + base64url(claims.dump());
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  size_t len = 0;
  std::string sig;
  if (EVP_DigestSignInit(ctx, nullptr, EVP_sha256(), nullptr, static_cast<EVP_PKEY*>(key_)) == 1 &&
      EVP_DigestSign(ctx, nullptr, &len, reinterpret_cast<const unsigned char*>(signing_input.data()), signing_input.size()) == 1) {
    sig.resize(len);
    EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(sig.data()), &len,
                   reinterpret_cast<const unsigned char*>(signing_input.data()), signing_input.size());
    sig.resize(len);
  }
  EVP_MD_CTX_free(ctx);
  nlohmann::json body = {{"token", signing_input + "." + base64url(sig)}, {"expires_in", 300}};
  return FakeHttpServer::reply(200, body.dump(), {"Content-Type: application/json"});
}

// ---- LocalRegistry ----

Result<std::unique_ptr<LocalRegistry>> LocalRegistry::start(const RegistryConfig& cfg) {
  std::unique_ptr<LocalRegistry> reg(new LocalRegistry);
  reg->dir_ = std::make_unique<TempDir>();
  const std::string& d = reg->dir();
  if (d.empty()) return sys_error("mkdtemp");
  std::string log = d + "/tools.log";
  if (cfg.tls) {
    // A test CA and a server cert for both 127.0.0.1 and localhost. EC keys: quick to make.
    TRY(atomic_write_file(d + "/san.ext",
                       "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"));
    TRY(run_tool({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
                  d + "/ca.key", "-out", d + "/ca.crt", "-days", "2", "-subj", "/CN=berth-test-ca"},
                 log));
    TRY(run_tool({"openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
                  d + "/server.key", "-out", d + "/server.csr", "-subj", "/CN=localhost"},
                 log));
    TRY(run_tool({"openssl", "x509", "-req", "-in", d + "/server.csr", "-CA", d + "/ca.crt", "-CAkey", d + "/ca.key",
                  "-CAcreateserial", "-out", d + "/server.crt", "-days", "2", "-extfile", d + "/san.ext"},
                 log));
  }
  if (cfg.auth == RegistryConfig::Auth::kHtpasswd)
    TRY(run_tool({"htpasswd", "-Bbc", d + "/htpasswd", cfg.user, cfg.password}, log));
  if (cfg.auth == RegistryConfig::Auth::kToken) reg->token_ = TRY(TokenServer::start(d, cfg.user, cfg.password));
  // The port is free when picked, not necessarily when the registry binds it: try again then.
  Result<> r;
  for (int attempt = 0; attempt < 3; ++attempt)
    if ((r = reg->launch(cfg))) return reg;
  return std::unexpected(std::move(r).error());
}

Result<> LocalRegistry::launch(const RegistryConfig& cfg) {
  port_ = free_port();
  const std::string& d = dir();
  std::string yml = "version: 0.1\n"
                    "log:\n  level: warn\n  accesslog:\n    disabled: false\n"
                    "storage:\n  filesystem:\n    rootdirectory: " + storage() + "\n"
                    "  delete:\n    enabled: true\n"
                    "  maintenance:\n    uploadpurging:\n      enabled: false\n"
                    "http:\n  addr: 127.0.0.1:" + std::to_string(port_) + "\n  secret: berth-test\n";
  if (cfg.tls) yml += "  tls:\n    certificate: " + d + "/server.crt\n    key: " + d + "/server.key\n";
  if (cfg.auth == RegistryConfig::Auth::kHtpasswd) yml += "auth:\n  htpasswd:\n    realm: berth-test\n    path: " + d + "/htpasswd\n";
  if (cfg.auth == RegistryConfig::Auth::kToken)
    yml += "auth:\n  token:\n    realm: " + token_->realm() + "\n    service: " + TokenServer::kService + "\n    issuer: " +
           TokenServer::kIssuer + "\n    rootcertbundle: " + token_->cert_path() + "\n";
  std::string config = d + "/config.yml";
  (void)::unlink(config.c_str());
  TRY(atomic_write_file(config, yml));

  std::string log = d + "/registry.log";
  UniqueFd logfd(::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
  UniqueFd devnull(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (!logfd || !devnull) return sys_error("open " + log);
  const char* argv[] = {kBinary, "serve", config.c_str(), nullptr};
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) return sys_error("fork");
  if (pid == 0) {
    // Only async-signal-safe calls here: the test process has threads.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // a crashed test leaves no registry behind
    if (::getppid() != parent) ::_exit(1);
    ::dup2(devnull.get(), 0);
    ::dup2(logfd.get(), 1);
    ::dup2(logfd.get(), 2);
    ::execv(kBinary, const_cast<char* const*>(argv));
    ::_exit(127);
  }
  pid_ = pid;

  std::string url = std::string(cfg.tls ? "https" : "http") + "://127.0.0.1:" + std::to_string(port_) + "/v2/";
  auto deadline = Clock::now() + std::chrono::seconds(20);
  while (Clock::now() < deadline) {
    int status;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return fail("docker-registry exited: " + read_file(log).value_or(""));
    }
    CURL* h = curl_easy_init();
    curl_easy_setopt(h, CURLOPT_URL, url.c_str());
    curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 1000L);
    long code = 0;
    if (curl_easy_perform(h) == CURLE_OK) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(h);
    if (code == 200 || code == 401) return {};
    ::usleep(50 * 1000);
  }
  stop();
  return fail("docker-registry did not answer on " + url + ": " + read_file(log).value_or(""));
}

void LocalRegistry::stop() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  auto deadline = Clock::now() + std::chrono::seconds(5);
  int status;
  while (::waitpid(pid_, &status, WNOHANG) == 0) {
    if (Clock::now() > deadline) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
      break;
    }
    ::usleep(10 * 1000);
  }
  pid_ = -1;
}

LocalRegistry::~LocalRegistry() {
  stop();
  token_.reset();
  dir_.reset();
}

std::string LocalRegistry::blob_data_path(const std::string& hex) const {
  return storage() + "/docker/registry/v2/blobs/sha256/" + hex.substr(0, 2) + "/" + hex + "/data";
}

std::string LocalRegistry::log() const { return read_file(dir() + "/registry.log").value_or(""); }

size_t LocalRegistry::count_requests(std::string_view method, std::string_view target_prefix, size_t at_least) const {
  // Access log lines: 127.0.0.1 - - [date] "POST /v2/app/blobs/uploads/ HTTP/1.1" 202 0 "" "berth"
  std::string needle = "\"" + std::string(method) + " " + std::string(target_prefix);
  auto deadline = Clock::now() + std::chrono::seconds(1);
  for (;;) {
    size_t n = 0;
    for (const auto& line : split(log(), '\n'))
      if (line.find(needle) != std::string::npos) ++n;
    if (n >= at_least || Clock::now() > deadline) return n;
    ::usleep(20 * 1000);
  }
}

}  // namespace berth::image::test
