// The registry client against a real docker-registry on loopback (plain HTTP,
// htpasswd, TLS with a test CA, bearer tokens), and against scripted servers
// for what a real registry does not do on demand: drop a download halfway,
// redirect to storage on another host, send an oversized or lying manifest.
#include "image/registry.h"

#include <dirent.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "registry_fixture.h"
#include "util/fs.h"

namespace berth::image {
namespace {

using test::FakeHttpServer;
using test::HttpRequest;
using test::LocalRegistry;
using test::RegistryConfig;
using test::TempDir;

constexpr const char* kOciManifest = "application/vnd.oci.image.manifest.v1+json";

bool have_tool(const std::string& name) {
  for (const auto& dir : split(::getenv("PATH") ? ::getenv("PATH") : "/usr/bin:/bin", ':'))
    if (::access((dir + "/" + name).c_str(), X_OK) == 0) return true;
  return false;
}

std::string random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

struct TestImage {
  std::string config, layer, manifest;
  Digest config_d, layer_d, manifest_d;
};

// A config and one layer in `cs`, and an OCI manifest naming them. The
// annotation gives tests a same-length string to corrupt on the registry's disk.
TestImage make_image(ContentStore& cs, size_t layer_size, uint32_t seed) {
  TestImage img;
  img.config = R"({"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"seed":)" +
               std::to_string(seed) + "}";
  img.layer = random_bytes(layer_size, seed);
  img.config_d = *cs.put(img.config);
  img.layer_d = *cs.put(img.layer);
  nlohmann::json m = {
      {"schemaVersion", 2},
      {"mediaType", kOciManifest},
      {"config", {{"mediaType", "application/vnd.oci.image.config.v1+json"}, {"digest", img.config_d.str()}, {"size", img.config.size()}}},
      {"layers",
       {{{"mediaType", "application/vnd.oci.image.layer.v1.tar+gzip"}, {"digest", img.layer_d.str()}, {"size", img.layer.size()}}}},
      {"annotations", {{"note", "aaaaaaaa"}}}};
  img.manifest = m.dump();
  img.manifest_d = sha256_of(img.manifest);
  return img;
}

Result<> push_image(Registry& r, ContentStore& cs, const TestImage& img, const std::string& tag) {
  TRY(r.push_blob(img.config_d, cs));
  TRY(r.push_blob(img.layer_d, cs));
  Digest d = TRY(r.put_manifest(tag, kOciManifest, img.manifest));
  if (d != img.manifest_d) return fail("put_manifest returned " + d.str());
  return {};
}

// Pulls `tag` into `cs` and checks every byte against `img`.
void expect_pull(Registry& r, ContentStore& cs, const TestImage& img, const std::string& tag) {
  auto m = r.manifest(tag, {kOciManifest});
  ASSERT_TRUE(m) << m.error().str();
  EXPECT_EQ(m->bytes, img.manifest);
  EXPECT_EQ(m->digest, img.manifest_d);
  EXPECT_EQ(m->media_type, kOciManifest);
  auto by_digest = r.manifest(img.manifest_d.str(), {kOciManifest});
  ASSERT_TRUE(by_digest) << by_digest.error().str();
  EXPECT_EQ(by_digest->bytes, img.manifest);
  std::vector<std::pair<uint64_t, uint64_t>> calls;
  auto f = r.fetch_blob(img.layer_d, img.layer.size(), cs, "layer 1",
                        [&](const Digest& d, uint64_t done, uint64_t total) {
                          EXPECT_EQ(d, img.layer_d);
                          calls.emplace_back(done, total);
                        });
  ASSERT_TRUE(f) << f.error().str();
  ASSERT_FALSE(calls.empty());
  EXPECT_EQ(calls.back(), (std::pair<uint64_t, uint64_t>(img.layer.size(), img.layer.size())));
  auto c = r.fetch_blob(img.config_d, img.config.size(), cs, "config");
  ASSERT_TRUE(c) << c.error().str();
  EXPECT_EQ(*cs.read(img.layer_d, 64u << 20), img.layer);
  EXPECT_EQ(*cs.read(img.config_d), img.config);
}

std::vector<std::string> dir_entries(const std::string& dir) {
  std::vector<std::string> out;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (auto* e = ::readdir(d))
      if (e->d_name[0] != '.') out.push_back(e->d_name);
    ::closedir(d);
  }
  return out;
}

// Asserts that a Result holds no error, printing the error when it does.
#define ASSERT_OK(expr)                               \
  do {                                                \
    auto&& ok_r_ = (expr);                            \
    ASSERT_TRUE(ok_r_) << ok_r_.error().str();        \
  } while (0)

// Starts the registry for a RegistryTest; leaves the test when that skipped or failed.
#define START_REGISTRY(cfg)                          \
  do {                                               \
    start(cfg);                                      \
    if (IsSkipped() || HasFatalFailure()) return;    \
  } while (0)

class RegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(tmp_.path().empty());
    auto a = ContentStore::open(tmp_.path() + "/a");
    auto b = ContentStore::open(tmp_.path() + "/b");
    ASSERT_TRUE(a && b);
    src_.emplace(std::move(*a));
    dst_.emplace(std::move(*b));
  }
  void TearDown() override { reg_.reset(); }

  // Starts docker-registry, or skips the test when it or a tool the
  // configuration needs is missing.
  void start(const RegistryConfig& cfg) {
    if (::access(LocalRegistry::kBinary, X_OK) != 0) GTEST_SKIP() << LocalRegistry::kBinary << " is not installed";
    if (cfg.auth == RegistryConfig::Auth::kHtpasswd && !have_tool("htpasswd")) GTEST_SKIP() << "htpasswd is not installed";
    if ((cfg.tls || cfg.auth == RegistryConfig::Auth::kToken) && !have_tool("openssl")) GTEST_SKIP() << "openssl is not installed";
    auto r = LocalRegistry::start(cfg);
    ASSERT_TRUE(r) << r.error().str();
    reg_ = std::move(*r);
  }

  // Host certs.d directories stay out of the tests.
  RegistryOptions options() const {
    RegistryOptions o;
    o.certs_dirs = {};
    o.timeout_s = 10;
    return o;
  }

  Reference ref(const std::string& repo) const { return *Reference::parse(reg_->domain() + "/" + repo); }

  std::unique_ptr<Registry> connect(const std::string& repo, const RegistryOptions& o) {
    auto r = Registry::connect(ref(repo), o);
    EXPECT_TRUE(r) << r.error().str();
    return r ? std::move(*r) : nullptr;
  }

  // Options whose auth file holds cfg.user's credentials, with `password`.
  RegistryOptions logged_in(const RegistryConfig& cfg, const std::string& password) {
    RegistryOptions o = options();
    o.auth_file = tmp_.path() + "/config.json";
    nlohmann::json j = {{"auths", {{reg_->domain(), {{"auth", test::base64(cfg.user + ":" + password)}}}}}};
    EXPECT_TRUE(atomic_write_file(o.auth_file, j.dump()));
    return o;
  }

  static RegistryConfig with_auth(RegistryConfig::Auth auth) {
    RegistryConfig cfg;
    cfg.auth = auth;
    return cfg;
  }

  TempDir tmp_;
  std::optional<ContentStore> src_, dst_;
  std::unique_ptr<LocalRegistry> reg_;
};

TEST_F(RegistryTest, PushesAndPullsOverPlainHttp) {
  START_REGISTRY({});
  TestImage img = make_image(*src_, (1u << 20) + 4097, 1);  // past curl's 1 MiB Expect: 100-continue threshold
  auto r = connect("app", options());
  ASSERT_TRUE(r);
  // Loopback is insecure: HTTPS is tried, the TLS handshake fails, plain HTTP it is.
  EXPECT_EQ(r->base_url(), "http://" + reg_->domain());
  std::vector<uint64_t> pushed;
  auto p = r->push_blob(img.layer_d, *src_, std::nullopt,
                        [&](const Digest&, uint64_t done, uint64_t) { pushed.push_back(done); });
  ASSERT_TRUE(p) << p.error().str();
  ASSERT_FALSE(pushed.empty());
  EXPECT_EQ(pushed.back(), img.layer.size());
  ASSERT_OK(push_image(*r, *src_, img, "1"));

  auto puller = connect("app", options());
  ASSERT_TRUE(puller);
  expect_pull(*puller, *dst_, img, "1");
}

TEST_F(RegistryTest, ExistingBlobsAreNotUploadedAgain) {
  START_REGISTRY({});
  TestImage img = make_image(*src_, 1000, 2);
  auto r = connect("app", options());
  ASSERT_TRUE(r);
  EXPECT_FALSE(*r->has_blob(img.layer_d));
  ASSERT_TRUE(r->push_blob(img.layer_d, *src_));
  EXPECT_TRUE(*r->has_blob(img.layer_d));
  ASSERT_TRUE(r->push_blob(img.layer_d, *src_));
  std::string head = "/v2/app/blobs/" + img.layer_d.str();
  // Four HEADs: has_blob twice and one per push.
  EXPECT_EQ(reg_->count_requests("HEAD", head, 4), 4u);
  EXPECT_EQ(reg_->count_requests("POST", "/v2/app/blobs/uploads/"), 1u);
  EXPECT_EQ(reg_->count_requests("PUT", "/v2/app/blobs/uploads/"), 1u);
  // A blob already in the local store is not downloaded either.
  ASSERT_TRUE(r->fetch_blob(img.layer_d, img.layer.size(), *src_, "layer"));
  EXPECT_EQ(reg_->count_requests("GET", head), 0u);
}

TEST_F(RegistryTest, MountsAcrossRepositoriesAndFallsBackToUpload) {
  START_REGISTRY({});
  TestImage img = make_image(*src_, 5000, 3);
  auto a = connect("team/a", options());
  auto b = connect("team/b", options());
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(a->push_blob(img.layer_d, *src_));
  auto m = b->push_blob(img.layer_d, *src_, "team/a");
  ASSERT_TRUE(m) << m.error().str();
  EXPECT_EQ(*m, Registry::Pushed::kMounted);
  EXPECT_TRUE(*b->has_blob(img.layer_d));
  EXPECT_EQ(reg_->count_requests("POST", "/v2/team/b/blobs/uploads/?mount=", 1), 1u);
  EXPECT_EQ(reg_->count_requests("PUT", "/v2/team/b/"), 0u);  // mounted, not uploaded

  // A source that lacks the blob: the registry opens an upload instead (202).
  auto f = b->push_blob(img.config_d, *src_, "team/a");
  ASSERT_TRUE(f) << f.error().str();
  EXPECT_EQ(*f, Registry::Pushed::kUploaded);
  EXPECT_TRUE(*b->has_blob(img.config_d));
  EXPECT_EQ(reg_->count_requests("POST", "/v2/team/b/blobs/uploads/?mount=", 2), 2u);
  EXPECT_EQ(reg_->count_requests("PUT", "/v2/team/b/blobs/uploads/", 1), 1u);
  EXPECT_EQ(reg_->count_requests("POST", "/v2/team/b/blobs/uploads/ "), 0u);  // the mount's upload was used
}

TEST_F(RegistryTest, UnknownManifestNamesTheImage) {
  START_REGISTRY({});
  auto r = connect("app", options());
  ASSERT_TRUE(r);
  auto m = r->manifest("nope", {kOciManifest});
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().str(), reg_->domain() + "/app:nope: manifest unknown");
  auto b = r->fetch_blob(sha256_of("x"), 1, *dst_, "layer 3 of app:nope");
  ASSERT_FALSE(b);
  EXPECT_EQ(b.error().str(), "layer 3 of app:nope: blob unknown to registry");
  EXPECT_TRUE(dir_entries(tmp_.path() + "/b/content/ingest").empty());
}

TEST_F(RegistryTest, CorruptedContentIsRefusedAndNeverStored) {
  START_REGISTRY({});
  TestImage img = make_image(*src_, 3000, 4);
  auto r = connect("app", options());
  ASSERT_TRUE(r);
  ASSERT_TRUE(push_image(*r, *src_, img, "1"));
  // Same length, different bytes, on the registry's disk.
  std::string layer_file = reg_->blob_data_path(img.layer_d.hex);
  std::string bad_layer = img.layer;
  bad_layer[bad_layer.size() / 2] ^= 1;
  ASSERT_TRUE(atomic_write_file(layer_file, bad_layer, 0644));
  std::string manifest_file = reg_->blob_data_path(img.manifest_d.hex);
  std::string bad_manifest = img.manifest;
  bad_manifest.replace(bad_manifest.find("aaaaaaaa"), 8, "bbbbbbbb");
  ASSERT_TRUE(atomic_write_file(manifest_file, bad_manifest, 0644));

  auto by_digest = r->manifest(img.manifest_d.str(), {kOciManifest});
  ASSERT_FALSE(by_digest);
  EXPECT_NE(by_digest.error().str().find("digest mismatch: expected " + img.manifest_d.str()), std::string::npos)
      << by_digest.error().str();
  // By tag there is no digest to ask for, but the registry's Docker-Content-Digest disagrees.
  auto by_tag = r->manifest("1", {kOciManifest});
  ASSERT_FALSE(by_tag);
  EXPECT_NE(by_tag.error().str().find("digest mismatch"), std::string::npos) << by_tag.error().str();

  auto f = r->fetch_blob(img.layer_d, img.layer.size(), *dst_, "layer 1 of app:1");
  ASSERT_FALSE(f);
  EXPECT_NE(f.error().str().find("layer 1 of app:1: digest mismatch: expected " + img.layer_d.str()), std::string::npos)
      << f.error().str();
  EXPECT_TRUE(dst_->list()->empty());
  EXPECT_TRUE(dir_entries(tmp_.path() + "/b/content/ingest").empty());
}

TEST_F(RegistryTest, BasicAuthWithRightWrongAndNoPassword) {
  RegistryConfig cfg = with_auth(RegistryConfig::Auth::kHtpasswd);
  START_REGISTRY(cfg);
  TestImage img = make_image(*src_, 2000, 5);
  RegistryOptions o = logged_in(cfg, cfg.password);
  auto r = connect("app", o);
  ASSERT_TRUE(r);
  ASSERT_OK(push_image(*r, *src_, img, "1"));
  expect_pull(*r, *dst_, img, "1");

  auto wrong = connect("app", logged_in(cfg, "wrong"));
  ASSERT_TRUE(wrong);
  auto h = wrong->has_blob(img.layer_d);
  ASSERT_FALSE(h);
  EXPECT_EQ(h.error().str(), "registry " + reg_->domain() + ": authentication failed (401 Unauthorized)");

  o.auth_file.clear();
  auto anonymous = connect("app", o);
  ASSERT_TRUE(anonymous);
  auto m = anonymous->manifest("1", {kOciManifest});
  ASSERT_FALSE(m);
  EXPECT_NE(m.error().str().find("registry " + reg_->domain() + ": authentication required"), std::string::npos)
      << m.error().str();
}

TEST_F(RegistryTest, LoginStoresCredentialsAndLogoutRemovesThem) {
  RegistryConfig cfg = with_auth(RegistryConfig::Auth::kHtpasswd);
  START_REGISTRY(cfg);
  RegistryOptions o = options();
  o.auth_file = tmp_.path() + "/docker/config.json";
  // Other registries and keys are someone else's: kept as they are.
  ASSERT_TRUE(mkdir_p(tmp_.path() + "/docker", 0700));
  nlohmann::json before = {{"auths", {{"other.example.com", {{"auth", "b3RoZXI6cGFzcw=="}}}}}, {"credsStore", "none"}};
  ASSERT_TRUE(atomic_write_file(o.auth_file, before.dump(), 0644));

  auto bad = login(reg_->domain(), cfg.user, "wrong", o);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().str(), "registry " + reg_->domain() + ": authentication failed (401 Unauthorized)");
  EXPECT_EQ(nlohmann::json::parse(*read_file(o.auth_file)), before);

  auto ok = login(reg_->domain(), cfg.user, cfg.password, o);
  ASSERT_TRUE(ok) << ok.error().str();
  struct stat st;
  ASSERT_EQ(::stat(o.auth_file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto after = nlohmann::json::parse(*read_file(o.auth_file));
  EXPECT_EQ(after["credsStore"], "none");
  EXPECT_EQ(after["auths"]["other.example.com"], before["auths"]["other.example.com"]);
  EXPECT_EQ(after["auths"][reg_->domain()]["auth"], test::base64(cfg.user + ":" + cfg.password));
  EXPECT_TRUE(dir_entries(tmp_.path() + "/docker").size() == 1) << "temp file left behind";

  // The stored credentials work.
  auto r = connect("app", o);
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->has_blob(sha256_of("x")));

  ASSERT_TRUE(logout(reg_->domain(), o));
  after = nlohmann::json::parse(*read_file(o.auth_file));
  EXPECT_FALSE(after["auths"].contains(reg_->domain()));
  EXPECT_TRUE(after["auths"].contains("other.example.com"));
  auto again = logout(reg_->domain(), o);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().str(), "not logged in to " + reg_->domain());
}

TEST(RegistryCredentials, DockerHubEntriesAreFoundUnderEverySpelling) {
  TempDir tmp;
  RegistryOptions o;
  o.auth_file = tmp.path() + "/config.json";
  ASSERT_TRUE(atomic_write_file(o.auth_file, R"({"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"},"quay.io":{}}})"));
  ASSERT_TRUE(logout("docker.io", o));
  auto j = nlohmann::json::parse(*read_file(o.auth_file));
  EXPECT_EQ(j["auths"].size(), 1u);
  EXPECT_EQ(logout("index.docker.io", o).error().str(), "not logged in to docker.io");
}

TEST_F(RegistryTest, TlsIsVerifiedAgainstTheCaInCertsDir) {
  RegistryConfig cfg;
  cfg.tls = true;
  START_REGISTRY(cfg);
  TestImage img = make_image(*src_, 2000, 6);
  RegistryOptions o = options();
  o.loopback_insecure = false;
  auto untrusted = Registry::connect(ref("app"), o);
  ASSERT_FALSE(untrusted);
  EXPECT_NE(untrusted.error().str().find("registry " + reg_->domain() + ": TLS: SSL certificate problem"), std::string::npos)
      << untrusted.error().str();

  std::string certs = tmp_.path() + "/certs.d";
  std::string localhost = "localhost:" + std::to_string(reg_->port());
  for (const auto& host : {reg_->domain(), localhost}) {
    ASSERT_TRUE(mkdir_p(certs + "/" + host));
    ASSERT_TRUE(atomic_write_file(certs + "/" + host + "/ca.crt", *read_file(reg_->ca_cert())));
  }
  o.certs_dirs = {tmp_.path() + "/missing", certs};
  auto r = connect("app", o);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->base_url(), "https://" + reg_->domain());
  ASSERT_OK(push_image(*r, *src_, img, "1"));
  // The name the certificate holds as DNS, as well as its IP.
  auto by_name = Registry::connect(*Reference::parse(localhost + "/app"), o);
  ASSERT_TRUE(by_name) << by_name.error().str();
  expect_pull(**by_name, *dst_, img, "1");

  // Loopback without the CA: insecure by default, so HTTPS unverified (never plain HTTP).
  auto loose = connect("app", options());
  ASSERT_TRUE(loose);
  EXPECT_EQ(loose->base_url(), "https://" + reg_->domain());
  EXPECT_TRUE(*loose->has_blob(img.layer_d));
}

TEST_F(RegistryTest, SecureRegistriesAreNeverDowngradedToHttp) {
  START_REGISTRY({});
  RegistryOptions o = options();
  o.loopback_insecure = false;
  auto r = Registry::connect(ref("app"), o);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().str().find("registry " + reg_->domain() + ": TLS: "), std::string::npos) << r.error().str();
  for (const auto& entry : {reg_->domain(), std::string("127.0.0.1")}) {
    o.insecure = {entry};
    auto listed = Registry::connect(ref("app"), o);
    ASSERT_TRUE(listed) << entry << ": " << listed.error().str();
    EXPECT_EQ((*listed)->base_url(), "http://" + reg_->domain());
  }
}

TEST_F(RegistryTest, BearerTokensFromTheRealmAreCachedPerScope) {
  RegistryConfig cfg = with_auth(RegistryConfig::Auth::kToken);
  START_REGISTRY(cfg);
  TestImage img = make_image(*src_, 300000, 7);
  TestImage img2 = make_image(*src_, 200000, 8);
  RegistryOptions o = logged_in(cfg, cfg.password);
  auto pusher = connect("app", o);
  ASSERT_TRUE(pusher);
  ASSERT_OK(push_image(*pusher, *src_, img, "1"));
  ASSERT_TRUE(push_image(*pusher, *src_, img2, "2"));
  auto puller = connect("app", o);
  ASSERT_TRUE(puller);
  expect_pull(*puller, *dst_, img, "1");
  // Two blobs at once from two threads, sharing the puller's token.
  std::atomic<int> failures{0};
  std::thread t1([&] { failures += !puller->fetch_blob(img2.layer_d, img2.layer.size(), *dst_, "layer"); });
  std::thread t2([&] { failures += !puller->fetch_blob(img2.config_d, img2.config.size(), *dst_, "config"); });
  t1.join();
  t2.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(*dst_->read(img2.layer_d), img2.layer);

  // One token for the push (pull,push) and one for the pull, whatever the number of requests.
  auto asked = reg_->token_server()->requests();
  ASSERT_EQ(asked.size(), 2u);
  EXPECT_EQ(asked[0].query_values("scope"), std::vector<std::string>{"repository:app:pull,push"});
  EXPECT_EQ(asked[1].query_values("scope"), std::vector<std::string>{"repository:app:pull"});
  EXPECT_EQ(asked[0].query_values("service"), std::vector<std::string>{test::TokenServer::kService});

  auto wrong = connect("app", logged_in(cfg, "wrong"));
  ASSERT_TRUE(wrong);
  auto m = wrong->manifest("1", {kOciManifest});
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().str(), "registry " + reg_->domain() + ": authentication failed (401 Unauthorized)");

  o.auth_file = tmp_.path() + "/login.json";
  EXPECT_FALSE(login(reg_->domain(), cfg.user, "wrong", o));
  EXPECT_FALSE(path_exists(o.auth_file));
  auto ok = login(reg_->domain(), cfg.user, cfg.password, o);
  ASSERT_TRUE(ok) << ok.error().str();
  EXPECT_TRUE(path_exists(o.auth_file));
}

TEST(RegistryErrors, UnreachableRegistryNamesHostAndPort) {
  RegistryOptions o;
  o.certs_dirs = {};
  std::string domain = "127.0.0.1:" + std::to_string(test::free_port());
  auto r = Registry::connect(*Reference::parse(domain + "/app"), o);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().str(), "registry " + domain + ": connect: Connection refused");
}

// ---- scripted servers ----

class FakeRegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto cs = ContentStore::open(tmp_.path());
    ASSERT_TRUE(cs);
    store_.emplace(std::move(*cs));
  }
  std::unique_ptr<Registry> connect(const FakeHttpServer& srv, RegistryOptions o = {}) {
    o.certs_dirs = {};
    o.timeout_s = 10;
    auto r = Registry::connect(*Reference::parse(srv.domain() + "/app"), o);
    EXPECT_TRUE(r) << r.error().str();
    return r ? std::move(*r) : nullptr;
  }
  TempDir tmp_;
  std::optional<ContentStore> store_;
};

// The blob's bytes from `from` (a Range request's start) as a server sends them.
std::string serve_blob(const HttpRequest& rq, const std::string& blob) {
  std::string range = rq.header("range");
  if (range.empty()) return FakeHttpServer::reply(200, blob);
  uint64_t from = std::stoull(range.substr(range.find('=') + 1));
  return FakeHttpServer::reply(206, std::string_view(blob).substr(from),
                               {"Content-Range: bytes " + std::to_string(from) + "-" + std::to_string(blob.size() - 1) + "/" +
                                std::to_string(blob.size())});
}

// The full answer's headers and only part of its body: a connection that breaks.
std::string cut(const std::string& answer, size_t body_bytes) {
  return answer.substr(0, answer.find("\r\n\r\n") + 4 + body_bytes);
}

TEST_F(FakeRegistryTest, DroppedDownloadResumesWithARangeRequest) {
  const std::string blob = random_bytes((1u << 20) + 321, 9);
  const Digest d = sha256_of(blob);
  const size_t half = blob.size() / 2;
  std::atomic<int> gets{0};
  FakeHttpServer srv([&](const HttpRequest& rq) {
    if (rq.path == "/v2/") return FakeHttpServer::reply(200, "{}");
    if (rq.path != "/v2/app/blobs/" + d.str()) return FakeHttpServer::reply(404, "");
    if (gets++ == 0) return cut(FakeHttpServer::reply(200, blob), half);
    return serve_blob(rq, blob);
  });
  auto r = connect(srv);
  ASSERT_TRUE(r);
  uint64_t last = 0;
  auto f = r->fetch_blob(d, blob.size(), *store_, "layer 1", [&](const Digest&, uint64_t done, uint64_t) { last = done; });
  ASSERT_TRUE(f) << f.error().str();
  EXPECT_EQ(*store_->read(d, 8u << 20), blob);
  EXPECT_EQ(last, blob.size());
  std::vector<HttpRequest> blob_gets;
  for (const auto& rq : srv.requests())
    if (rq.path.starts_with("/v2/app/blobs/")) blob_gets.push_back(rq);
  ASSERT_EQ(blob_gets.size(), 2u);
  EXPECT_EQ(blob_gets[0].header("range"), "");
  EXPECT_EQ(blob_gets[1].header("range"), "bytes=" + std::to_string(half) + "-");
}

TEST_F(FakeRegistryTest, ResumeStartsOverWhenTheServerIgnoresRange) {
  const std::string blob = random_bytes(100000, 10);
  const Digest d = sha256_of(blob);
  std::atomic<int> gets{0};
  FakeHttpServer srv([&](const HttpRequest& rq) {
    if (rq.path == "/v2/") return FakeHttpServer::reply(200, "{}");
    if (gets++ == 0) return cut(FakeHttpServer::reply(200, blob), 40000);
    return FakeHttpServer::reply(200, blob);  // Range ignored: the whole blob again
  });
  auto r = connect(srv);
  ASSERT_TRUE(r);
  auto f = r->fetch_blob(d, blob.size(), *store_, "layer 1");
  ASSERT_TRUE(f) << f.error().str();
  EXPECT_EQ(*store_->read(d), blob);
}

TEST_F(FakeRegistryTest, GivesUpAfterThreeDropsLeavingNothing) {
  const std::string blob = random_bytes(100000, 11);
  const Digest d = sha256_of(blob);
  std::atomic<int> gets{0};
  FakeHttpServer srv([&](const HttpRequest& rq) {
    if (rq.path == "/v2/") return FakeHttpServer::reply(200, "{}");
    ++gets;
    return cut(serve_blob(rq, blob), 1000);
  });
  auto r = connect(srv);
  ASSERT_TRUE(r);
  auto f = r->fetch_blob(d, blob.size(), *store_, "layer 2 of app:1");
  ASSERT_FALSE(f);
  EXPECT_NE(f.error().str().find("layer 2 of app:1: registry " + srv.domain() + ": "), std::string::npos) << f.error().str();
  EXPECT_NE(f.error().str().find("(3 attempts)"), std::string::npos) << f.error().str();
  EXPECT_EQ(gets, 3);
  EXPECT_FALSE(store_->has(d));
  EXPECT_TRUE(dir_entries(tmp_.path() + "/content/ingest").empty());
}

TEST_F(FakeRegistryTest, RedirectsCarryNoCredentialsToOtherHosts) {
  const std::string blob = random_bytes(5000, 12);
  const Digest d = sha256_of(blob);
  FakeHttpServer storage([&](const HttpRequest&) { return FakeHttpServer::reply(200, blob); });
  const std::string basic = "Basic " + test::base64("u:p");
  FakeHttpServer srv([&](const HttpRequest& rq) {
    if (rq.header("authorization") != basic)
      return FakeHttpServer::reply(401, "", {"WWW-Authenticate: Basic realm=\"fake\""});
    if (rq.path == "/v2/") return FakeHttpServer::reply(200, "{}");
    return FakeHttpServer::reply(307, "", {"Location: http://" + storage.domain() + "/bucket/blob?sig=abc"});
  });
  RegistryOptions o;
  o.auth_file = tmp_.path() + "/config.json";
  ASSERT_TRUE(atomic_write_file(o.auth_file, R"({"auths":{")" + srv.domain() + R"(":{"auth":")" + test::base64("u:p") + R"("}}})"));
  auto r = connect(srv, o);
  ASSERT_TRUE(r);
  auto f = r->fetch_blob(d, blob.size(), *store_, "layer");
  ASSERT_TRUE(f) << f.error().str();
  EXPECT_EQ(*store_->read(d), blob);
  auto at_storage = storage.requests();
  ASSERT_EQ(at_storage.size(), 1u);
  EXPECT_EQ(at_storage[0].path, "/bucket/blob");
  EXPECT_EQ(at_storage[0].query, "sig=abc");
  EXPECT_EQ(at_storage[0].header("authorization"), "");
  EXPECT_EQ(srv.requests().back().header("authorization"), basic);
}

TEST_F(FakeRegistryTest, OversizedAndMislabelledManifestsAreRefused) {
  const std::string small = R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]})";
  const Digest other = sha256_of("something else");
  FakeHttpServer srv([&](const HttpRequest& rq) {
    if (rq.path == "/v2/") return FakeHttpServer::reply(200, "{}");
    if (rq.path == "/v2/app/manifests/big") return FakeHttpServer::reply(200, std::string((4u << 20) + 1, ' '));
    if (rq.path == "/v2/app/manifests/lying")
      return FakeHttpServer::reply(200, small, {"Content-Type: application/json", "Docker-Content-Digest: " + other.str()});
    // A generic Content-Type: the manifest's own mediaType says what it is.
    return FakeHttpServer::reply(200, small, {"Content-Type: application/json; charset=utf-8"});
  });
  auto r = connect(srv);
  ASSERT_TRUE(r);
  auto big = r->manifest("big", {kOciManifest});
  ASSERT_FALSE(big);
  EXPECT_EQ(big.error().str(), srv.domain() + "/app:big: manifest larger than 4 MiB");
  auto lying = r->manifest("lying", {kOciManifest});
  ASSERT_FALSE(lying);
  EXPECT_EQ(lying.error().str(), srv.domain() + "/app:lying: digest mismatch: registry says " + other.str() +
                                     ", content is " + sha256_of(small).str());
  auto fine = r->manifest("fine", {kOciManifest, "application/vnd.oci.image.index.v1+json"});
  ASSERT_TRUE(fine) << fine.error().str();
  EXPECT_EQ(fine->media_type, "application/vnd.oci.image.index.v1+json");
  EXPECT_EQ(srv.requests().back().header("accept"), std::string(kOciManifest) + ", application/vnd.oci.image.index.v1+json");
  auto injected = r->manifest("../../x", {kOciManifest});
  ASSERT_FALSE(injected);
}

}  // namespace
}  // namespace berth::image
