// The registry client over libcurl's easy API: one easy handle per transfer
// (reused by the next transfer on the same thread, which keeps connections
// alive), nothing shared between threads but the credentials state under a
// mutex.
//
// Redirects are followed by hand, not by curl: the Authorization header goes
// only to the registry's own origin, never to the storage a blob redirect
// points at.
#include "image/registry.h"

#include <curl/curl.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <utility>

#include "image/curl_loader.h"
#include "util/fs.h"

namespace berth::image {

namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// Manifests are held in memory: a hostile registry must not make that unbounded
// (4 MiB is what containerd and the distribution spec's registries allow).
constexpr uint64_t kManifestMax = 4u << 20;
// An error answer is read for its message only.
constexpr size_t kErrorBodyMax = 64u << 10;
constexpr int kBlobAttempts = 3;
constexpr int kMaxRedirects = 10;
// Where Docker keeps Docker Hub's credentials in config.json.
constexpr const char* kDockerHubKey = "https://index.docker.io/v1/";

// ---- small helpers ----

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n')) s.remove_suffix(1);
  return s;
}

constexpr std::string_view kB64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string base64(std::string_view in) {
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (unsigned char c : in) {
    acc = (acc << 8) | c;
    bits += 8;
    while (bits >= 6) out += kB64[(acc >> (bits -= 6)) & 63];
  }
  if (bits > 0) out += kB64[(acc << (6 - bits)) & 63];
  while (out.size() % 4) out += '=';
  return out;
}

std::optional<std::string> unbase64(std::string_view in) {
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    if (c == '=') break;
    size_t v = kB64.find(c);
    if (v == std::string_view::npos) return std::nullopt;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) out += static_cast<char>((acc >> (bits -= 8)) & 0xff);
  }
  return out;
}

// Docker writes registry keys in config.json as a host, or as a URL
// ("https://index.docker.io/v1/"): both name the same registry.
std::string normalize_domain(std::string_view s) {
  if (s.starts_with("https://")) s.remove_prefix(8);
  else if (s.starts_with("http://")) s.remove_prefix(7);
  s = s.substr(0, s.find('/'));
  if (s == "index.docker.io" || s == "registry-1.docker.io") return "docker.io";
  return std::string(s);
}

// docker.io is a name; its API lives elsewhere.
std::string api_host(const std::string& domain) { return domain == "docker.io" ? "registry-1.docker.io" : domain; }

std::string host_without_port(const std::string& domain) {
  if (domain.starts_with('[')) return domain.substr(0, domain.find(']') + 1);
  return domain.substr(0, domain.find(':'));
}

// Listed as "host:port", or as "host" for all its ports; loopback unless the caller says otherwise.
bool is_insecure(const std::string& domain, const RegistryOptions& o) {
  for (const auto& h : o.insecure)
    if (h == domain || (host_without_port(h) == h && h == host_without_port(domain))) return true;
  Reference r;
  r.domain = domain;
  return o.loopback_insecure && r.loopback();
}

// The tag or digest that goes into a URL: nothing that could change the path.
Result<> check_manifest_ref(std::string_view ref) {
  constexpr std::string_view kAllowed = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-";
  if (ref.empty() || ref.size() > 256 || ref.starts_with('.') || ref.find_first_not_of(kAllowed) != std::string_view::npos)
    return fail("invalid tag or digest \"" + std::string(ref) + "\"");
  return {};
}

// Rate limit for progress callbacks.
class Throttle {
 public:
  bool due() {
    auto now = Clock::now();
    if (now < next_) return false;
    next_ = now + std::chrono::milliseconds(100);
    return true;
  }

 private:
  Clock::time_point next_{};
};

// ---- URLs (curl's URL API: it resolves relative references as browsers do) ----

struct UrlDeleter {
  void operator()(CURLU* u) const { curl_url_cleanup(u); }
};
using UrlPtr = std::unique_ptr<CURLU, UrlDeleter>;

Result<UrlPtr> parse_url(const std::string& url) {
  UrlPtr u(curl_url());
  if (!u) return fail("out of memory");
  if (curl_url_set(u.get(), CURLUPART_URL, url.c_str(), 0) != CURLUE_OK) return fail("invalid URL \"" + url + "\"");
  return u;
}

std::string url_part(CURLU* u, CURLUPart part, unsigned flags = 0) {
  char* s = nullptr;
  std::string out;
  if (curl_url_get(u, part, &s, flags) == CURLUE_OK && s) out = s;
  curl_free(s);
  return out;
}

// `ref` (absolute, or relative to `base`, as a Location header may be).
Result<std::string> resolve_url(const std::string& base, const std::string& ref) {
  UrlPtr u = TRY(parse_url(base));
  if (curl_url_set(u.get(), CURLUPART_URL, ref.c_str(), 0) != CURLUE_OK)
    return fail("invalid URL \"" + ref + "\" (relative to " + base + ")");
  return url_part(u.get(), CURLUPART_URL);
}

// Appends "name=value" to the query, keeping what is already there.
Result<std::string> add_query(const std::string& url, const std::string& name, const std::string& value) {
  UrlPtr u = TRY(parse_url(url));
  std::string q = name + "=" + value;
  if (curl_url_set(u.get(), CURLUPART_QUERY, q.c_str(), CURLU_APPENDQUERY | CURLU_URLENCODE) != CURLUE_OK)
    return fail("invalid URL \"" + url + "\"");
  return url_part(u.get(), CURLUPART_URL);
}

// "scheme://host:port", lower case, with the default port spelled out.
std::string origin(const std::string& url) {
  auto u = parse_url(url);
  if (!u) return {};
  return lower(url_part(u->get(), CURLUPART_SCHEME) + "://" + url_part(u->get(), CURLUPART_HOST) + ":" +
               url_part(u->get(), CURLUPART_PORT, CURLU_DEFAULT_PORT));
}

// ---- HTTP over curl ----

struct Response {
  long status = 0;
  std::string reason;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;  // what no sink took, bounded
  std::string url;

  std::string header(std::string_view name) const {
    for (const auto& [k, v] : headers)
      if (k == name) return v;
    return {};
  }
  bool ok() const { return status >= 200 && status < 300; }
  std::string status_line() const { return std::to_string(status) + (reason.empty() ? "" : " " + reason); }
};

struct Request {
  std::string method = "GET";
  std::string url;
  std::vector<std::string> headers;
  std::string_view body;  // sent as is (a manifest, an empty POST)
  int upload_fd = -1;     // or streamed from this file, upload_size bytes
  uint64_t upload_size = 0;
  std::function<void(uint64_t)> upload_progress;
  // Takes the body of a 2xx response as it arrives; an error ends the transfer with it.
  std::function<Result<>(const Response&, std::string_view)> sink;
  // A 2xx body over body_max without a sink is refused with this error; error
  // bodies are cut at kErrorBodyMax.
  uint64_t body_max = kErrorBodyMax;
  std::string too_large;
};

// How to reach one origin.
struct Transport {
  std::string user_agent;
  int timeout_s = 30;
  bool verify = true;
  std::string ca_pem;  // the system CAs plus certs.d's, or empty for curl's defaults
};

std::string reason_phrase(long status) {
  static const std::map<long, const char*> kReasons = {
      {200, "OK"},           {201, "Created"},       {202, "Accepted"},         {204, "No Content"},
      {206, "Partial Content"}, {301, "Moved Permanently"}, {302, "Found"},     {303, "See Other"},
      {307, "Temporary Redirect"}, {308, "Permanent Redirect"}, {400, "Bad Request"}, {401, "Unauthorized"},
      {403, "Forbidden"},    {404, "Not Found"},     {405, "Method Not Allowed"}, {416, "Range Not Satisfiable"},
      {429, "Too Many Requests"}, {500, "Internal Server Error"}, {502, "Bad Gateway"}, {503, "Service Unavailable"},
      {504, "Gateway Timeout"}};
  auto it = kReasons.find(status);
  return it == kReasons.end() ? "" : it->second;
}

struct EasyDeleter {
  void operator()(CURL* h) const { curl_easy_cleanup(h); }
};
using EasyPtr = std::unique_ptr<CURL, EasyDeleter>;

// This thread's idle handle: its connection cache serves the next transfer.
thread_local EasyPtr t_idle_easy;

EasyPtr take_easy() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  EasyPtr h = std::move(t_idle_easy);
  if (h) curl_easy_reset(h.get());
  else h.reset(curl_easy_init());
  return h;
}

struct Transfer {
  const Request* rq;
  Response resp;
  std::optional<Error> sink_error;
  uint64_t upload_off = 0;
  Throttle upload_throttle;
};

size_t on_header(char* p, size_t size, size_t n, void* ud) {
  auto* t = static_cast<Transfer*>(ud);
  std::string_view line = trim(std::string_view(p, size * n));
  if (line.starts_with("HTTP/")) {
    // A new response (after 100 Continue, or the next one of a redirect): start over.
    t->resp.headers.clear();
    t->resp.body.clear();
    size_t sp = line.find(' ');
    t->resp.status = sp == std::string_view::npos ? 0 : std::atol(std::string(line.substr(sp + 1, 3)).c_str());
    size_t sp2 = sp == std::string_view::npos ? sp : line.find(' ', sp + 1);
    t->resp.reason = sp2 == std::string_view::npos ? reason_phrase(t->resp.status) : std::string(trim(line.substr(sp2 + 1)));
  } else if (size_t colon = line.find(':'); colon != std::string_view::npos) {
    t->resp.headers.emplace_back(lower(trim(line.substr(0, colon))), std::string(trim(line.substr(colon + 1))));
  }
  return size * n;
}

size_t on_body(char* p, size_t size, size_t n, void* ud) {
  auto* t = static_cast<Transfer*>(ud);
  size_t len = size * n;
  std::string_view data(p, len);
  if (t->resp.ok() && t->rq->sink) {
    if (auto r = t->rq->sink(t->resp, data); !r) {
      t->sink_error = std::move(r).error();
      return 0;
    }
    return len;
  }
  if (t->resp.ok() && t->resp.body.size() + len > t->rq->body_max) {
    t->sink_error = Error{0, t->rq->too_large};
    return 0;
  }
  // An error body is only read for its message: keep the start.
  size_t room = t->resp.ok() ? len : std::min(len, kErrorBodyMax - std::min(kErrorBodyMax, t->resp.body.size()));
  t->resp.body.append(p, room);
  return len;
}

size_t on_read(char* buf, size_t size, size_t n, void* ud) {
  auto* t = static_cast<Transfer*>(ud);
  ssize_t got;
  do got = ::pread(t->rq->upload_fd, buf, size * n, static_cast<off_t>(t->upload_off));
  while (got < 0 && errno == EINTR);
  if (got < 0) {
    t->sink_error = Error{errno, "read blob"};
    return CURL_READFUNC_ABORT;
  }
  t->upload_off += static_cast<uint64_t>(got);
  if (t->rq->upload_progress && (t->upload_throttle.due() || t->upload_off == t->rq->upload_size))
    t->rq->upload_progress(t->upload_off);
  return static_cast<size_t>(got);
}

int on_seek(void* ud, curl_off_t off, int origin) {
  if (origin != SEEK_SET) return CURL_SEEKFUNC_CANTSEEK;
  static_cast<Transfer*>(ud)->upload_off = static_cast<uint64_t>(off);
  return CURL_SEEKFUNC_OK;
}

// A connection that broke mid-transfer: worth resuming.
bool dropped_connection(CURLcode rc) {
  switch (rc) {
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
      return true;
    default:
      return false;
  }
}

// One HTTP exchange, nothing followed or retried. Transport errors are
// prefixed with `where`; a sink's errors name their own subject. `dropped`
// tells a broken connection from other failures.
Result<Response> perform(const Transport& tp, const Request& rq, const std::string& authorization, const std::string& where,
                         bool* dropped = nullptr) {
  EasyPtr h = take_easy();
  if (!h) return fail("curl_easy_init failed");
  CURL* c = h.get();
  Transfer t{&rq, {}, {}, 0, {}};
  char errbuf[CURL_ERROR_SIZE] = "";
  curl_easy_setopt(c, CURLOPT_URL, rq.url.c_str());
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(c, CURLOPT_USERAGENT, tp.user_agent.c_str());
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, static_cast<long>(tp.timeout_s));
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, static_cast<long>(tp.timeout_s));
  curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &t);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &t);
  if (!tp.verify) {
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
  } else if (!tp.ca_pem.empty()) {
    curl_blob blob{const_cast<char*>(tp.ca_pem.data()), tp.ca_pem.size(), CURL_BLOB_COPY};
    curl_easy_setopt(c, CURLOPT_CAINFO_BLOB, &blob);
  }
  if (rq.method == "HEAD") {
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
  } else if (rq.upload_fd >= 0) {
    curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(rq.upload_size));
    curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
    curl_easy_setopt(c, CURLOPT_READDATA, &t);
    curl_easy_setopt(c, CURLOPT_SEEKFUNCTION, on_seek);
    curl_easy_setopt(c, CURLOPT_SEEKDATA, &t);
    if (rq.method != "PUT") curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, rq.method.c_str());
  } else if (rq.method != "GET") {
    // Never NULL: curl would then read the body from stdin.
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, rq.body.empty() ? "" : rq.body.data());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(rq.body.size()));
    if (rq.method != "POST") curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, rq.method.c_str());
  }
  curl_slist* hdrs = nullptr;
  for (const auto& hd : rq.headers) hdrs = curl_slist_append(hdrs, hd.c_str());
  if (!authorization.empty()) hdrs = curl_slist_append(hdrs, authorization.c_str());
  // A small body is cheaper sent at once than after a 100 Continue round trip.
  if (rq.upload_fd < 0) hdrs = curl_slist_append(hdrs, "Expect:");
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);

  CURLcode rc = curl_easy_perform(c);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, nullptr);
  curl_slist_free_all(hdrs);
  long os_errno = 0;
  curl_easy_getinfo(c, CURLINFO_OS_ERRNO, &os_errno);
  t_idle_easy = std::move(h);
  if (dropped) *dropped = false;
  if (t.sink_error) return std::unexpected(std::move(*t.sink_error));
  if (rc != CURLE_OK) {
    if (dropped) *dropped = dropped_connection(rc);
    std::string detail = errbuf[0] ? errbuf : curl_easy_strerror(rc);
    switch (rc) {
      case CURLE_COULDNT_CONNECT:
        if (os_errno) return sys_error(static_cast<int>(os_errno), where + ": connect");
        return fail(where + ": connect: " + detail);
      case CURLE_SSL_CONNECT_ERROR:
      case CURLE_PEER_FAILED_VERIFICATION:
      case CURLE_SSL_CERTPROBLEM:
      case CURLE_SSL_CIPHER:
      case CURLE_SSL_CACERT_BADFILE:
      case CURLE_SSL_ISSUER_ERROR:
        return fail(where + ": TLS: " + detail);
      default:
        return fail(where + ": " + detail);
    }
  }
  t.resp.url = rq.url;
  return std::move(t.resp);
}

// The registry's own words for an error ({"errors": [{"message": ...}]}), or empty.
std::string registry_message(const Response& r) {
  auto j = json::parse(r.body, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("errors") || !j["errors"].is_array()) return {};
  std::string out;
  for (const auto& e : j["errors"]) {
    if (!e.is_object()) continue;
    std::string m = e.value("message", "");
    if (m.empty()) m = lower(e.value("code", ""));
    if (m.empty()) continue;
    if (!out.empty()) out += "; ";
    out += m;
  }
  return out;
}

std::unexpected<Error> status_error(const std::string& what, const Response& r) {
  std::string m = registry_message(r);
  return fail(what + ": " + (m.empty() ? r.status_line() : m));
}

// ---- WWW-Authenticate ----

struct Challenge {
  std::string scheme;  // "bearer", "basic"
  std::map<std::string, std::string> params;
};

// RFC 7235: scheme, then key=value or key="quoted, with \"escapes\"" pairs.
Challenge parse_challenge(std::string_view s) {
  Challenge c;
  s = trim(s);
  size_t sp = s.find(' ');
  c.scheme = lower(s.substr(0, sp));
  if (sp == std::string_view::npos) return c;
  s.remove_prefix(sp + 1);
  while (!s.empty()) {
    s = trim(s);
    size_t eq = s.find('=');
    if (eq == std::string_view::npos) break;
    std::string key = lower(trim(s.substr(0, eq)));
    s.remove_prefix(eq + 1);
    std::string value;
    if (!s.empty() && s[0] == '"') {
      size_t i = 1;
      for (; i < s.size() && s[i] != '"'; ++i) {
        if (s[i] == '\\' && i + 1 < s.size()) ++i;
        value += s[i];
      }
      s.remove_prefix(std::min(s.size(), i + 1));
    } else {
      size_t end = s.find(',');
      value = trim(s.substr(0, end));
      s.remove_prefix(end == std::string_view::npos ? s.size() : end);
    }
    c.params[key] = value;
    s = trim(s);
    if (!s.empty() && s[0] == ',') s.remove_prefix(1);
  }
  return c;
}

// The challenge of a 401 to answer: Bearer rather than Basic when both are offered.
std::optional<Challenge> pick_challenge(const Response& r) {
  std::optional<Challenge> best;
  for (const auto& [k, v] : r.headers) {
    if (k != "www-authenticate") continue;
    Challenge c = parse_challenge(v);
    if (c.scheme == "bearer" || (c.scheme == "basic" && !best)) best = std::move(c);
  }
  return best;
}

// ---- credentials file ----

struct Credentials {
  std::string user, password;
};

Result<json> read_auth_file(const std::string& path) {
  if (path.empty() || !path_exists(path)) return json::object();
  std::string text = TRY(read_file(path));
  auto j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return fail("auth file " + path + ": not a JSON object");
  return j;
}

// The config.json keys that name `domain`.
std::vector<std::string> auth_keys(const json& cfg, const std::string& domain) {
  std::vector<std::string> keys;
  if (cfg.contains("auths") && cfg["auths"].is_object())
    for (const auto& [k, v] : cfg["auths"].items())
      if (normalize_domain(k) == domain) keys.push_back(k);
  return keys;
}

Result<std::optional<Credentials>> lookup_credentials(const std::string& path, const std::string& domain) {
  json cfg = TRY(read_auth_file(path));
  for (const auto& k : auth_keys(cfg, domain)) {
    const json& e = cfg["auths"][k];
    if (!e.is_object()) continue;
    if (e.contains("auth") && e["auth"].is_string() && !e["auth"].get<std::string>().empty()) {
      auto dec = unbase64(e["auth"].get<std::string>());
      size_t colon = dec ? dec->find(':') : std::string::npos;
      if (colon == std::string::npos) return fail("auth file " + path + ": " + k + ": malformed \"auth\"");
      return Credentials{dec->substr(0, colon), dec->substr(colon + 1)};
    }
    if (e.contains("username") && e["username"].is_string() && e.contains("password") && e["password"].is_string())
      return Credentials{e["username"].get<std::string>(), e["password"].get<std::string>()};
  }
  return std::optional<Credentials>();
}

// Written so that a crash leaves the old file or the new one: temp file,
// fsync, rename, fsync of the directory.
Result<> write_auth_file(const std::string& path, const json& cfg) {
  std::string dir = path.substr(0, path.rfind('/') == std::string::npos ? 0 : path.rfind('/'));
  if (!dir.empty()) TRY(mkdir_p(dir, 0700));
  std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd) return sys_error("create " + tmp);
  auto r = [&]() -> Result<> {
    // Credentials: never readable by others, whatever the umask or an old file's mode.
    if (::fchmod(fd.get(), 0600) < 0) return sys_error("chmod " + tmp);
    TRY_CTX(write_fd(fd.get(), cfg.dump(1, '\t') + "\n"), "write " + tmp);
    if (::fsync(fd.get()) < 0) return sys_error("fsync " + tmp);
    if (::rename(tmp.c_str(), path.c_str()) < 0) return sys_error("rename " + tmp + " to " + path);
    UniqueFd d(::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (d) ::fsync(d.get());
    return {};
  }();
  if (!r) ::unlink(tmp.c_str());
  return r;
}

// ---- TLS trust ----

// Docker's certs.d: every *.crt in <dir>/<host[:port]>/ is a CA for that host,
// trusted along with the system's.
Result<std::string> extra_ca_pem(const std::string& domain, const RegistryOptions& o) {
  std::string extra;
  std::vector<std::string> dirs;
  for (const auto& base : o.certs_dirs) dirs.push_back(base + "/" + domain);
  if (!o.extra_ca_dir.empty()) dirs.push_back(o.extra_ca_dir);
  for (const auto& dir : dirs) {
    DIR* d = ::opendir(dir.c_str());
    if (!d) continue;
    std::vector<std::string> names;
    while (auto* e = ::readdir(d))
      if (std::string_view(e->d_name).ends_with(".crt")) names.push_back(e->d_name);
    ::closedir(d);
    std::sort(names.begin(), names.end());
    for (const auto& n : names) extra += TRY(read_file(dir + "/" + n)) + "\n";
  }
  if (extra.empty()) return extra;
  // CURLOPT_CAINFO_BLOB replaces curl's CA file: put the system's in front.
  EasyPtr h = take_easy();
  char* system_ca = nullptr;
  if (h) curl_easy_getinfo(h.get(), CURLINFO_CAINFO, &system_ca);
  std::string all;
  if (system_ca && path_exists(system_ca)) all = TRY(read_file(system_ca)) + "\n";
  t_idle_easy = std::move(h);
  return all + extra;
}

Result<Transport> transport_for(const std::string& domain, const RegistryOptions& o, bool insecure) {
  Transport tp;
  tp.user_agent = o.user_agent;
  tp.timeout_s = o.timeout_s;
  tp.verify = !insecure;
  if (tp.verify) tp.ca_pem = TRY(extra_ca_pem(domain, o));
  return tp;
}

// For an origin other than the registry's (its token server, the storage a
// blob redirect points at): verified unless that host is itself insecure.
Result<Transport> transport_for_url(const std::string& url, const RegistryOptions& o) {
  UrlPtr u = TRY(parse_url(url));
  std::string host = url_part(u.get(), CURLUPART_HOST), port = url_part(u.get(), CURLUPART_PORT);
  if (host.find(':') != std::string::npos) host = "[" + host + "]";
  std::string domain = port.empty() ? host : host + ":" + port;
  return transport_for(domain, o, is_insecure(domain, o));
}

}  // namespace

// ---- the client ----

struct Registry::Impl {
  std::string domain;  // "localhost:5000": names the registry in errors and in config.json
  std::string path;    // "library/busybox"; empty for login
  std::string name;    // "localhost:5000/app", as errors name the repository
  RegistryOptions opts;
  Transport tp;
  std::string base;  // "https://localhost:5000"
  std::optional<Credentials> creds;

  std::mutex mu;  // guards what follows
  Challenge challenge;  // the registry's last 401: how it wants to be authenticated
  struct Token {
    std::string value;
    Clock::time_point expires;
  };
  std::map<std::string, Token> tokens;  // by scope

  std::string where() const { return "registry " + domain; }
  std::string pull_scope() const { return "repository:" + path + ":pull"; }
  std::string push_scope() const { return "repository:" + path + ":pull,push"; }
  std::string repo_url(std::string_view kind, std::string_view ref) const {
    return base + "/v2/" + path + "/" + std::string(kind) + "/" + std::string(ref);
  }

  std::string basic_header() const {
    return creds ? "Authorization: Basic " + base64(creds->user + ":" + creds->password) : std::string();
  }

  Result<std::string> fetch_token(const Challenge& ch, const std::string& scope) {
    std::string realm = ch.params.count("realm") ? ch.params.at("realm") : "";
    if (realm.empty()) return fail(where() + ": Bearer challenge without a realm");
    std::string url = realm;
    if (ch.params.count("service")) url = TRY(add_query(url, "service", ch.params.at("service")));
    for (const auto& s : split(scope, ' '))
      if (!s.empty()) url = TRY(add_query(url, "scope", s));
    if (creds && scope.empty()) url = TRY(add_query(url, "account", creds->user));
    Transport rtp = TRY_CTX(transport_for_url(url, opts), where());
    Request rq;
    rq.url = url;
    Response r = TRY(perform(rtp, rq, basic_header(), where() + ": token server " + realm));
    if (r.status == 401 || r.status == 403) return fail(where() + ": authentication failed (" + r.status_line() + ")");
    if (!r.ok()) return status_error(where() + ": token server " + realm, r);
    auto j = json::parse(r.body, nullptr, false);
    std::string token;
    if (j.is_object()) {
      if (j.contains("token") && j["token"].is_string()) token = j["token"];
      if (token.empty() && j.contains("access_token") && j["access_token"].is_string()) token = j["access_token"];
    }
    if (token.empty()) return fail(where() + ": token server " + realm + ": no token in its answer");
    int expires_in = j.contains("expires_in") && j["expires_in"].is_number_integer() ? j["expires_in"].get<int>() : 60;
    // Renewed a little early, so a token never runs out in flight.
    tokens[scope] = Token{token, Clock::now() + std::chrono::seconds(std::max(expires_in, 60) - 10)};
    return token;
  }

  // The Authorization header for `scope`, given what the registry asked for so far.
  Result<std::string> authorization(const std::string& scope) {
    std::lock_guard lock(mu);
    if (challenge.scheme == "basic") return basic_header();
    if (challenge.scheme != "bearer") return std::string();
    auto it = tokens.find(scope);
    if (it != tokens.end() && Clock::now() < it->second.expires) return "Authorization: Bearer " + it->second.value;
    // Fetched under the lock: parallel blob transfers wait for one token instead of each asking for its own.
    return "Authorization: Bearer " + TRY(fetch_token(challenge, scope));
  }

  // After a 401: learns the challenge and drops the token that was refused.
  Result<> on_unauthorized(const Response& r, const std::string& scope) {
    std::optional<Challenge> picked = pick_challenge(r);
    if (!picked) return fail(where() + ": authentication failed (" + r.status_line() + ")");
    Challenge& ch = *picked;
    if (ch.params.count("error") && ch.params.at("error") == "insufficient_scope")
      return fail(where() + ": access to " + path + " denied (insufficient_scope)");
    if (ch.scheme == "basic" && !creds) return fail(where() + ": authentication required (" + r.status_line() + "); log in first");
    std::lock_guard lock(mu);
    tokens.erase(scope);
    challenge = std::move(ch);
    return {};
  }

  // One request with credentials as the registry asks for them (a 401 is
  // answered once) and redirects followed (`follow`), the Authorization header
  // kept to the registry's own origin.
  Result<Response> send(Request rq, const std::string& scope, bool follow, bool* dropped = nullptr) {
    const std::string home = origin(base);
    bool answered_401 = false;
    for (int redirects = 0;;) {
      bool ours = origin(rq.url) == home;
      std::string auth = ours ? TRY(authorization(scope)) : std::string();
      Transport other;
      if (!ours) other = TRY_CTX(transport_for_url(rq.url, opts), where());
      Response r = TRY(perform(ours ? tp : other, rq, auth, where(), dropped));
      if (r.status == 401 && ours) {
        if (answered_401) return fail(where() + ": authentication failed (" + r.status_line() + ")");
        TRY(on_unauthorized(r, scope));
        answered_401 = true;
        continue;
      }
      bool redirect = r.status == 301 || r.status == 302 || r.status == 303 || r.status == 307 || r.status == 308;
      if (!follow || !redirect || r.header("location").empty()) return r;
      if (++redirects > kMaxRedirects) return fail(where() + ": too many redirects from " + rq.url);
      rq.url = TRY_CTX(resolve_url(rq.url, r.header("location")), where());
      // Other hosts get no credentials (`ours` above); that is also why curl does not follow.
      if (r.status == 303 && rq.method != "HEAD") rq.method = "GET";
    }
  }

  // A push asks with the push scope: one token for the whole push.
  Result<bool> head_blob(const Digest& d, const std::string& scope) {
    Request rq;
    rq.method = "HEAD";
    rq.url = repo_url("blobs", d.str());
    Response r = TRY(send(std::move(rq), scope, true));
    if (r.ok()) return true;
    if (r.status == 404) return false;
    return status_error(name + ": blob " + d.str(), r);
  }

  // Picks the scheme: HTTPS, or for an insecure registry HTTPS without
  // verification and then plain HTTP when the TLS handshake fails (as Docker does).
  Result<> ping(bool insecure) {
    std::string host = api_host(domain);
    Request rq;
    rq.url = "https://" + host + "/v2/";
    auto r = perform(tp, rq, "", where());
    if (!r && insecure) {
      Request plain;
      plain.url = "http://" + host + "/v2/";
      if (auto p = perform(tp, plain, "", where())) {
        base = "http://" + host;
        learn(*p);
        return {};
      }
    }
    if (!r) return std::unexpected(std::move(r).error());
    base = "https://" + host;
    learn(*r);
    return {};
  }

  // The ping's 401 tells how to authenticate: the first real request then
  // comes with credentials instead of being refused once.
  void learn(const Response& r) {
    if (r.status != 401) return;
    if (auto c = pick_challenge(r)) {
      std::lock_guard lock(mu);
      challenge = std::move(*c);
    }
  }

  static Result<std::unique_ptr<Impl>> open(const std::string& domain, const std::string& path, const RegistryOptions& o,
                                            std::optional<Credentials> creds) {
    auto impl = std::make_unique<Impl>();
    impl->domain = domain;
    impl->path = path;
    impl->name = domain + "/" + path;
    impl->opts = o;
    bool insecure = is_insecure(domain, o);
    impl->tp = TRY_CTX(transport_for(domain, o, insecure), "registry " + domain);
    impl->creds = creds ? std::move(creds) : TRY_CTX(lookup_credentials(o.auth_file, domain), "registry " + domain);
    TRY(impl->ping(insecure));
    return impl;
  }
};

Registry::Registry(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Registry::~Registry() = default;

const std::string& Registry::base_url() const { return impl_->base; }

Result<std::unique_ptr<Registry>> Registry::connect(const Reference& ref, const RegistryOptions& o) {
  TRY_CTX(load_curl(), "registry " + ref.domain);
  auto impl = TRY(Impl::open(ref.domain, ref.path, o, std::nullopt));
  // familiar_repository() as Docker prints it, so errors read "localhost:5000/app:1: ...".
  impl->name = ref.familiar_repository();
  return std::unique_ptr<Registry>(new Registry(std::move(impl)));
}

Result<FetchedManifest> Registry::manifest(std::string_view tag_or_digest, const std::vector<std::string>& accept) {
  std::optional<Digest> want;
  if (tag_or_digest.find(':') != std::string_view::npos) want = TRY(Digest::parse(tag_or_digest));
  std::string what = impl_->name + (want ? "@" : ":") + std::string(tag_or_digest);
  TRY_CTX(check_manifest_ref(tag_or_digest), what);
  Request rq;
  rq.url = impl_->repo_url("manifests", tag_or_digest);
  std::string types;
  for (const auto& a : accept) types += (types.empty() ? "" : ", ") + a;
  if (!types.empty()) rq.headers.push_back("Accept: " + types);
  rq.body_max = kManifestMax;
  rq.too_large = what + ": manifest larger than " + std::to_string(kManifestMax >> 20) + " MiB";
  Response r = TRY(impl_->send(std::move(rq), impl_->pull_scope(), true));
  if (!r.ok()) return status_error(what, r);

  FetchedManifest m;
  m.bytes = std::move(r.body);
  m.digest = sha256_of(m.bytes);
  std::string ct = std::string(trim(r.header("content-type").substr(0, r.header("content-type").find(';'))));
  if (ct.empty() || ct == "application/json" || ct == "text/plain") {
    auto j = json::parse(m.bytes, nullptr, false);
    if (j.is_object() && j.contains("mediaType") && j["mediaType"].is_string()) ct = j["mediaType"];
  }
  m.media_type = ct;
  if (want && !(m.digest == *want))
    return fail(what + ": digest mismatch: expected " + want->str() + ", got " + m.digest.str());
  // Schema 1's header digest is of the payload without its signatures, not of the bytes.
  if (auto dcd = Digest::parse(r.header("docker-content-digest"));
      dcd && !(*dcd == m.digest) && ct != "application/vnd.docker.distribution.manifest.v1+prettyjws")
    return fail(what + ": digest mismatch: registry says " + dcd->str() + ", content is " + m.digest.str());
  return m;
}

Result<bool> Registry::has_blob(const Digest& d) { return impl_->head_blob(d, impl_->pull_scope()); }

Result<> Registry::fetch_blob(const Digest& d, uint64_t size, ContentStore& store, const std::string& what,
                              const ProgressFn& progress) {
  if (store.has(d)) {
    if (progress) progress(d, size, size);
    return {};
  }
  ContentStore::Writer w = TRY(store.writer(d, size, what));
  Throttle throttle;
  for (int attempt = 1;; ++attempt) {
    Request rq;
    rq.url = impl_->repo_url("blobs", d.str());
    uint64_t from = w.written();
    if (from > 0) rq.headers.push_back("Range: bytes=" + std::to_string(from) + "-");
    bool started = false;
    rq.sink = [&](const Response& r, std::string_view data) -> Result<> {
      if (!started) {
        started = true;
        if (r.status == 206) {
          std::string cr = r.header("content-range");
          if (!cr.starts_with("bytes " + std::to_string(from) + "-"))
            return fail(what + ": asked for bytes from " + std::to_string(from) + ", got range \"" + cr + "\"");
        } else if (from > 0) {
          TRY(w.restart());  // the server ignored the Range: this is the whole blob again
        }
      }
      TRY(w.write(data));
      if (progress && throttle.due()) progress(d, w.written(), size);
      return {};
    };
    bool dropped = false;
    auto r = impl_->send(std::move(rq), impl_->pull_scope(), true, &dropped);
    if (!r) {
      if (dropped && attempt < kBlobAttempts) continue;
      // The sink's own errors (the store's) already name the blob.
      auto e = std::move(r).error();
      if (!e.msg.starts_with(what)) (void)std::move(e).context(what);
      if (dropped) e.msg += " (" + std::to_string(attempt) + " attempts)";
      return std::unexpected(std::move(e));
    }
    if (!r->ok()) return status_error(what, *r);
    break;
  }
  TRY(w.commit());
  if (progress) progress(d, size, size);
  return {};
}

Result<Registry::Pushed> Registry::push_blob(const Digest& d, ContentStore& store, const std::optional<std::string>& mount_from,
                             const ProgressFn& progress) {
  if (TRY(impl_->head_blob(d, impl_->push_scope()))) {
    if (progress) {
      uint64_t n = store.size(d).value_or(0);
      progress(d, n, n);
    }
    return Pushed::kExisted;
  }
  std::string what = impl_->name + ": blob " + d.str();
  uint64_t size = TRY(store.size(d));
  UniqueFd fd = TRY(store.open_blob(d));
  std::string scope = impl_->push_scope();
  std::string uploads = impl_->base + "/v2/" + impl_->path + "/blobs/uploads/";
  std::string location;
  if (mount_from && *mount_from != impl_->path) {
    Request rq;
    rq.method = "POST";
    rq.url = TRY(add_query(TRY(add_query(uploads, "mount", d.str())), "from", *mount_from));
    Response r = TRY(impl_->send(std::move(rq), scope + " repository:" + *mount_from + ":pull", false));
    if (r.status == 201) return Pushed::kMounted;
    // 202: the registry declined the mount and opened an upload instead.
    if (r.status != 202) return status_error(what + ": mount from " + *mount_from, r);
    location = TRY_CTX(resolve_url(r.url, r.header("location")), what);
  }
  if (location.empty()) {
    Request rq;
    rq.method = "POST";
    rq.url = uploads;
    Response r = TRY(impl_->send(std::move(rq), scope, false));
    if (r.status != 202) return status_error(what + ": start upload", r);
    if (r.header("location").empty()) return fail(what + ": start upload: no Location in the answer");
    location = TRY_CTX(resolve_url(r.url, r.header("location")), what);
  }
  Request put;
  put.method = "PUT";
  put.url = TRY_CTX(add_query(location, "digest", d.str()), what);
  put.headers.push_back("Content-Type: application/octet-stream");
  put.upload_fd = fd.get();
  put.upload_size = size;
  if (progress) put.upload_progress = [&](uint64_t done) { progress(d, done, size); };
  Response r = TRY_CTX(impl_->send(std::move(put), scope, false), what + ": upload");
  if (r.status != 201 && r.status != 204) return status_error(what + ": upload", r);
  if (auto dcd = Digest::parse(r.header("docker-content-digest")); dcd && !(*dcd == d))
    return fail(what + ": registry stored it as " + dcd->str());
  return Pushed::kUploaded;
}

Result<Digest> Registry::put_manifest(std::string_view tag_or_digest, std::string_view media_type, std::string_view bytes) {
  Digest digest = sha256_of(bytes);
  std::string what = impl_->name + (tag_or_digest.find(':') != std::string_view::npos ? "@" : ":") + std::string(tag_or_digest);
  TRY_CTX(check_manifest_ref(tag_or_digest), what);
  if (tag_or_digest.find(':') != std::string_view::npos && TRY_CTX(Digest::parse(tag_or_digest), what) != digest)
    return fail(what + ": manifest digest is " + digest.str());
  if (bytes.size() > kManifestMax) return fail(what + ": manifest larger than " + std::to_string(kManifestMax >> 20) + " MiB");
  Request rq;
  rq.method = "PUT";
  rq.url = impl_->repo_url("manifests", tag_or_digest);
  rq.headers.push_back("Content-Type: " + std::string(media_type));
  rq.body = bytes;
  Response r = TRY(impl_->send(std::move(rq), impl_->push_scope(), false));
  if (!r.ok()) return status_error(what + ": push manifest", r);
  if (auto dcd = Digest::parse(r.header("docker-content-digest")); dcd && !(*dcd == digest))
    return fail(what + ": registry stored the manifest as " + dcd->str() + ", expected " + digest.str());
  return digest;
}

Result<> login(const std::string& domain_in, const std::string& user, const std::string& password, const RegistryOptions& o) {
  std::string domain = normalize_domain(domain_in);
  if (o.auth_file.empty()) return fail("login to " + domain + ": no auth file configured");
  TRY_CTX(load_curl(), "registry " + domain);
  auto impl = TRY(Registry::Impl::open(domain, "", o, Credentials{user, password}));
  Request rq;
  rq.url = impl->base + "/v2/";
  Response r = TRY(impl->send(std::move(rq), "", false));
  if (!r.ok()) return status_error("registry " + domain, r);

  json cfg = TRY(read_auth_file(o.auth_file));
  if (!cfg.contains("auths") || !cfg["auths"].is_object()) cfg["auths"] = json::object();
  // One entry per registry: older spellings of the same key go.
  for (const auto& k : auth_keys(cfg, domain)) cfg["auths"].erase(k);
  cfg["auths"][domain == "docker.io" ? kDockerHubKey : domain] = {{"auth", base64(user + ":" + password)}};
  return write_auth_file(o.auth_file, cfg);
}

Result<> logout(const std::string& domain_in, const RegistryOptions& o) {
  std::string domain = normalize_domain(domain_in);
  json cfg = TRY(read_auth_file(o.auth_file));
  auto keys = auth_keys(cfg, domain);
  if (keys.empty()) return fail("not logged in to " + domain);
  for (const auto& k : keys) cfg["auths"].erase(k);
  return write_auth_file(o.auth_file, cfg);
}

}  // namespace berth::image
