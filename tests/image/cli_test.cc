// `berth` image verbs end to end as root: the real binary against a real
// docker-registry on loopback. Output is checked in Docker's words, failures
// as one line with a non-zero status, and the store is checked after every
// failure and after kills at random points of a pull.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <thread>

#include "image/layer_writer.h"
#include "image/pull.h"
#include "image/registry.h"
#include "image/store.h"
#include "peer_tools.h"
#include "registry_fixture.h"
#include "util/fs.h"
#include "tree.h"

namespace berth::image {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using test::LocalRegistry;
using test::RegistryConfig;

struct Out {
  int code = -1;
  std::string out, err;
};

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (layer owners, mounts)";
    if (::access(LocalRegistry::kBinary, X_OK) != 0) GTEST_SKIP() << "docker-registry is not installed";
    root_ = dir_.path() + "/store";
    ::setenv("DOCKER_CONFIG", (dir_.path() + "/docker").c_str(), 1);
  }
  // Image mounts a failed test left, and EROFS layers (mounted until removed).
  void TearDown() override { detach_mounts_beneath(dir_.path()); }

  // Runs berth with --root; stdin from `input` (a file) when given.
  Out berth(const std::vector<std::string>& args, const std::string& input = "", pid_t* started = nullptr,
            bool wait = true) {
    std::string out = dir_.path() + "/out", err = dir_.path() + "/err";
    pid_t pid = ::fork();
    if (pid == 0) {
      int o = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      int e = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      int i = ::open(input.empty() ? "/dev/null" : input.c_str(), O_RDONLY);
      ::dup2(i, 0);
      ::dup2(o, 1);
      ::dup2(e, 2);
      std::vector<std::string> argv = {BERTH_CLI, "--root", root_};
      argv.insert(argv.end(), args.begin(), args.end());
      std::vector<char*> a;
      for (auto& s : argv) a.push_back(s.data());
      a.push_back(nullptr);
      ::execv(a[0], a.data());
      _exit(127);
    }
    if (started) *started = pid;
    Out r;
    if (!wait) return r;
    int st = 0;
    ::waitpid(pid, &st, 0);
    r.code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    r.out = read_file(out).value_or("");
    r.err = read_file(err).value_or("");
    return r;
  }

  std::unique_ptr<ImageStore> open() {
    auto s = ImageStore::open(root_);
    EXPECT_TRUE(s) << s.error().str();
    return s ? std::move(*s) : nullptr;
  }

  // Every blob and layer dir belongs to an image; nothing temporary is left.
  void expect_clean() {
    auto s = open();
    ASSERT_TRUE(s);
    std::set<std::string> blobs, layers;
    auto images = s->list();
    ASSERT_TRUE(images);
    for (auto& img : *images) {
      auto kept = s->blobs(img);
      ASSERT_TRUE(kept);
      for (auto& b : *kept) blobs.insert(b.str());
      for (auto& l : img.layers) layers.insert(l.hex);
      for (auto& d : s->layer_dirs(img)) EXPECT_TRUE(fs::is_directory(d)) << d;
    }
    auto stored = s->content().list();
    ASSERT_TRUE(stored);
    for (auto& d : *stored) EXPECT_TRUE(blobs.count(d.str())) << "orphaned blob " << d.str();
    for (auto& e : fs::directory_iterator(root_ + "/layers"))
    {
      EXPECT_TRUE(layers.count(e.path().filename().string())) << "orphaned layer dir " << e.path();
      test::expect_whole_layer(e.path().string());
    }
    EXPECT_TRUE(fs::is_empty(root_ + "/content/ingest"));
    EXPECT_TRUE(fs::is_empty(root_ + "/ops"));
  }

  // A `layers`-layer image of random (incompressible) data, `mib` MiB a layer,
  // pushed to `reg` as `name` from a store of its own.
  void push_big_image(LocalRegistry& reg, const std::string& name, int layers, int mib) {
    std::string other = dir_.path() + "/src-store";
    auto s = ImageStore::open(other);
    ASSERT_TRUE(s) << s.error().str();
    auto op = (*s)->begin_op();
    std::vector<Descriptor> descs;
    std::vector<Digest> diffs;
    std::mt19937_64 rng(42);
    for (int l = 0; l < layers; ++l) {
      auto w = LayerWriter::create((*s)->content(), "big layer");
      ASSERT_TRUE(w);
      std::string data(static_cast<size_t>(mib) << 20, '\0');
      for (size_t i = 0; i + 8 <= data.size(); i += 8) {
        uint64_t v = rng();
        std::memcpy(&data[i], &v, 8);
      }
      ASSERT_TRUE((*w)->file("layer" + std::to_string(l), data, {}));
      auto b = (*w)->finish();
      ASSERT_TRUE(b);
      descs.push_back(b->descriptor);
      diffs.push_back(b->diff_id);
    }
    std::string cfg = make_config("{}", diffs, std::vector<std::string>(diffs.size(), "x"), rfc3339(1));
    Descriptor cd{std::string(media::kOciConfig), *(*s)->content().put(cfg), cfg.size()};
    Digest md = *(*s)->content().put(make_manifest(cd, descs));
    auto ref = *Reference::parse(reg.domain() + "/" + name);
    auto img = (*s)->commit(md, {ref});
    ASSERT_TRUE(img) << img.error().str();
    auto pushed = push(**s, *img, ref, {});
    ASSERT_TRUE(pushed) << pushed.error().str();
  }

  test::TempDir dir_;
  std::string root_;
};

TEST_F(CliTest, PushAndPullSpeakDocker) {
  auto reg = LocalRegistry::start({});
  ASSERT_TRUE(reg) << reg.error().str();
  std::string name = (*reg)->domain() + "/bb:1";
  ASSERT_EQ(berth({"image", "create", "busybox"}).code, 0);
  ASSERT_EQ(berth({"tag", "busybox", name}).code, 0);
  Out p = berth({"push", name});
  ASSERT_EQ(p.code, 0) << p.err;
  EXPECT_NE(p.out.find("The push refers to repository [" + (*reg)->domain() + "/bb]"), std::string::npos) << p.out;
  EXPECT_NE(p.out.find(": Pushed\n"), std::string::npos) << p.out;
  EXPECT_NE(p.out.find("1: digest: sha256:"), std::string::npos) << p.out;
  // A second repository on the same registry mounts the layer instead of uploading it.
  ASSERT_EQ(berth({"tag", "busybox", (*reg)->domain() + "/copy:1"}).code, 0);
  Out m = berth({"push", (*reg)->domain() + "/copy:1"});
  ASSERT_EQ(m.code, 0) << m.err;
  EXPECT_NE(m.out.find("Mounted from bb"), std::string::npos) << m.out;

  std::string id = berth({"images", "-q", "busybox"}).out;
  ASSERT_EQ(id.size(), 13u) << id;
  ASSERT_EQ(berth({"rmi", "-f", id.substr(0, 12)}).code, 0);
  EXPECT_TRUE(berth({"images", "-q"}).out.empty());
  Out pull = berth({"pull", name});
  ASSERT_EQ(pull.code, 0) << pull.err;
  EXPECT_NE(pull.out.find("1: Pulling from bb"), std::string::npos) << pull.out;
  EXPECT_NE(pull.out.find(": Pull complete"), std::string::npos) << pull.out;
  EXPECT_NE(pull.out.find("Status: Downloaded newer image for " + name), std::string::npos) << pull.out;
  EXPECT_TRUE(pull.out.ends_with(name + "\n")) << pull.out;
  Out again = berth({"pull", name});
  EXPECT_NE(again.out.find("Status: Image is up to date for " + name), std::string::npos) << again.out;
  Out images = berth({"images", "--digests", "--format", "{{.Repository}} {{.Tag}} {{.Digest}}"});
  EXPECT_NE(images.out.find((*reg)->domain() + "/bb 1 sha256:"), std::string::npos) << images.out;
  Out mount = berth({"image", "mount", name});
  ASSERT_EQ(mount.code, 0) << mount.err;
  std::string mp = mount.out.substr(0, mount.out.size() - 1);
  EXPECT_TRUE(fs::exists(mp + "/bin/busybox"));
  ASSERT_EQ(berth({"image", "umount", name}).code, 0);
  // By digest: no tag, shown under its repository as Docker does.
  auto at = pull.out.find("Digest: ");
  ASSERT_NE(at, std::string::npos);
  std::string digest = pull.out.substr(at + 8, 71);
  ASSERT_EQ(berth({"rmi", name}).code, 0);
  Out by_digest = berth({"pull", (*reg)->domain() + "/bb@" + digest});
  ASSERT_EQ(by_digest.code, 0) << by_digest.err;
  EXPECT_EQ(berth({"images", "--format", "{{.Repository}} {{.Tag}}"}).out, (*reg)->domain() + "/bb <none>\n");
  expect_clean();
}

TEST_F(CliTest, PullsEveryLayerOnceAndSkipsWhatItHas) {
  auto reg = LocalRegistry::start({});
  ASSERT_TRUE(reg) << reg.error().str();
  push_big_image(**reg, "big:1", 4, 2);
  Out p = berth({"pull", (*reg)->domain() + "/big:1"});
  ASSERT_EQ(p.code, 0) << p.err;
  size_t complete = 0;
  for (size_t at = 0; (at = p.out.find(": Pull complete", at)) != std::string::npos; ++at) ++complete;
  EXPECT_EQ(complete, 4u) << p.out;
  auto s = open();
  auto img = s->resolve((*reg)->domain() + "/big:1");
  ASSERT_TRUE(img);
  EXPECT_EQ(img->layers.size(), 4u);
  s.reset();
  EXPECT_EQ((*reg)->count_requests("GET", "/v2/big/blobs/", 5), 5u) << "config and four layers, once each";
  // The same layers under another name: nothing downloaded again.
  ASSERT_EQ(berth({"tag", (*reg)->domain() + "/big:1", (*reg)->domain() + "/big:2"}).code, 0);
  ASSERT_EQ(berth({"push", (*reg)->domain() + "/big:2"}).code, 0);
  Out again = berth({"pull", (*reg)->domain() + "/big:2"});
  ASSERT_EQ(again.code, 0) << again.err;
  EXPECT_NE(again.out.find("Already exists"), std::string::npos) << again.out;
  EXPECT_EQ((*reg)->count_requests("GET", "/v2/big/blobs/"), 5u);
  expect_clean();
}

TEST_F(CliTest, LoginLogoutAndCredentials) {
  RegistryConfig cfg;
  cfg.auth = RegistryConfig::Auth::kHtpasswd;
  auto reg = LocalRegistry::start(cfg);
  ASSERT_TRUE(reg) << reg.error().str();
  std::string d = (*reg)->domain();
  ASSERT_EQ(berth({"image", "create", "busybox", "-t", d + "/private:1"}).code, 0);
  Out anon = berth({"push", d + "/private:1"});
  EXPECT_EQ(anon.code, 1);
  EXPECT_NE(anon.err.find("authentication required"), std::string::npos) << anon.err;
  Out wrong = berth({"login", "-u", "alice", "-p", "nope", d});
  EXPECT_EQ(wrong.code, 1);
  EXPECT_NE(wrong.err.find("authentication failed"), std::string::npos) << wrong.err;
  EXPECT_FALSE(fs::exists(dir_.path() + "/docker/config.json"));
  ASSERT_TRUE(atomic_write_file(dir_.path() + "/pw", "s3cret\n", 0600));
  Out ok = berth({"login", "-u", "alice", "--password-stdin", d}, dir_.path() + "/pw");
  ASSERT_EQ(ok.code, 0) << ok.err;
  EXPECT_EQ(ok.out, "Login Succeeded\n");
  json conf = json::parse(*read_file(dir_.path() + "/docker/config.json"));
  EXPECT_TRUE(conf["auths"].contains(d)) << conf.dump();
  EXPECT_EQ(fs::status(dir_.path() + "/docker/config.json").permissions() & fs::perms::others_read, fs::perms::none);
  Out pushed = berth({"push", d + "/private:1"});
  ASSERT_EQ(pushed.code, 0) << pushed.err;
  Out out = berth({"logout", d});
  EXPECT_EQ(out.out, "Removing login credentials for " + d + "\n");
  ASSERT_EQ(berth({"rmi", d + "/private:1"}).code, 0);
  Out denied = berth({"pull", d + "/private:1"});
  EXPECT_EQ(denied.code, 1);
  EXPECT_NE(denied.err.find("authentication required"), std::string::npos) << denied.err;
  expect_clean();
}

TEST_F(CliTest, BadRegistriesAndImagesFailCleanly) {
  auto reg = LocalRegistry::start({});
  ASSERT_TRUE(reg) << reg.error().str();
  std::string d = (*reg)->domain();
  Out refused = berth({"pull", "127.0.0.1:" + std::to_string(test::free_port()) + "/x:1"});
  EXPECT_EQ(refused.code, 1);
  EXPECT_NE(refused.err.find("connect"), std::string::npos) << refused.err;
  EXPECT_EQ(std::count(refused.err.begin(), refused.err.end(), '\n'), 1) << "one line: " << refused.err;
  Out unknown = berth({"pull", d + "/nothere:1"});
  EXPECT_EQ(unknown.code, 1);
  EXPECT_NE(unknown.err.find(d + "/nothere:1: manifest unknown"), std::string::npos) << unknown.err;
  Out bad_name = berth({"pull", "app/UPPER"});
  EXPECT_EQ(bad_name.code, 1);
  EXPECT_NE(bad_name.err.find("app/UPPER"), std::string::npos) << bad_name.err;
  // A layer corrupted on the registry's disk: refused, naming the layer; nothing kept.
  push_big_image(**reg, "corrupt:1", 2, 1);
  auto s = ImageStore::open(dir_.path() + "/src-store");
  ASSERT_TRUE(s);
  auto img = (*s)->resolve(d + "/corrupt:1");
  ASSERT_TRUE(img);
  auto m = parse_manifest(*(*s)->read_manifest(*img));
  s->reset();
  std::string victim = (*reg)->blob_data_path(m->layers[1].digest.hex);
  ASSERT_TRUE(atomic_write_file(victim, "not the layer", 0644));
  Out corrupt = berth({"pull", d + "/corrupt:1"});
  EXPECT_EQ(corrupt.code, 1);
  EXPECT_NE(corrupt.err.find("layer 2 of"), std::string::npos) << corrupt.err;
  EXPECT_TRUE(berth({"images", "-q"}).out.empty());
  expect_clean();
}

TEST_F(CliTest, ImagesFiltersAsDocker) {
  ASSERT_TRUE(mkdir_p(dir_.path() + "/root/etc"));
  ASSERT_EQ(std::system(("tar -C " + dir_.path() + "/root -cf " + dir_.path() + "/r.tar .").c_str()), 0);
  ASSERT_EQ(berth({"import", "-c", "LABEL tier=web", dir_.path() + "/r.tar", "web:1"}).code, 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));  // created times have one-second resolution
  ASSERT_EQ(berth({"import", "-c", "LABEL tier=db", "-c", "LABEL backup=yes", dir_.path() + "/r.tar", "db:1"}).code, 0);
  auto names = [&](const std::string& filter) {
    return berth({"images", "--filter", filter, "--format", "{{.Repository}}"}).out;
  };
  EXPECT_EQ(names("label=tier=web"), "web\n");
  EXPECT_EQ(names("label=backup"), "db\n");
  EXPECT_EQ(names("label=tier=cache"), "");
  EXPECT_EQ(names("reference=d*"), "db\n");
  EXPECT_EQ(names("before=db:1"), "web\n");
  EXPECT_EQ(names("since=web:1"), "db\n");
  Out bad = berth({"images", "--filter", "colour=red"});
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.err.find("invalid filter 'colour=red'"), std::string::npos) << bad.err;
  expect_clean();
}

TEST_F(CliTest, ManifestOfAnUnknownMediaTypeIsRefused) {
  const std::string weird = "application/vnd.example.weird+json";
  test::FakeHttpServer srv([&](const test::HttpRequest& rq) {
    if (rq.path == "/v2/") return test::FakeHttpServer::reply(200, "{}");
    if (rq.path == "/v2/app/manifests/1")
      return test::FakeHttpServer::reply(200, R"({"schemaVersion":2,"mediaType":")" + weird + R"("})",
                                         {"Content-Type: " + weird});
    return test::FakeHttpServer::reply(404, "");
  });
  Out p = berth({"pull", srv.domain() + "/app:1"});
  EXPECT_EQ(p.code, 1);
  EXPECT_NE(p.err.find(srv.domain() + "/app:1"), std::string::npos) << "names the image: " << p.err;
  EXPECT_NE(p.err.find("unknown media type \"" + weird + "\""), std::string::npos) << p.err;
  EXPECT_EQ(std::count(p.err.begin(), p.err.end(), '\n'), 1) << p.err;
  EXPECT_TRUE(berth({"images", "-q"}).out.empty());
  expect_clean();
}

TEST_F(CliTest, InteroperatesWithSkopeoThroughTheRegistry) {
  if (std::system("command -v skopeo >/dev/null") != 0) GTEST_SKIP() << "skopeo is not installed";
  berth::test::PeerToolFiles peer_files;
  auto reg = LocalRegistry::start({});
  ASSERT_TRUE(reg) << reg.error().str();
  std::string d = (*reg)->domain();
  ASSERT_EQ(berth({"image", "create", "busybox", "-t", d + "/bb:1"}).code, 0);
  ASSERT_EQ(berth({"push", d + "/bb:1"}).code, 0);
  // berth -> skopeo -> registry (another name) -> berth.
  std::string layout = dir_.path() + "/layout";
  ASSERT_EQ(std::system(("skopeo copy -q --src-tls-verify=false docker://" + d + "/bb:1 oci:" + layout + ":x").c_str()), 0);
  ASSERT_EQ(std::system(("skopeo copy -q --dest-tls-verify=false oci:" + layout + ":x docker://" + d + "/viaskopeo:2").c_str()), 0);
  Out p = berth({"pull", d + "/viaskopeo:2"});
  ASSERT_EQ(p.code, 0) << p.err;
  Out insp = berth({"image", "inspect", "--format", "{{.Os}}/{{.Architecture}} {{json .Config.Cmd}}", d + "/viaskopeo:2"});
  EXPECT_EQ(insp.out, "linux/amd64 [\"sh\"]\n") << insp.err;
  expect_clean();
}

TEST_F(CliTest, TlsRegistryWithCertDir) {
  RegistryConfig cfg;
  cfg.tls = true;
  auto reg = LocalRegistry::start(cfg);
  ASSERT_TRUE(reg) << reg.error().str();
  std::string d = (*reg)->domain();
  std::string certs = dir_.path() + "/certs";
  ASSERT_TRUE(mkdir_p(certs));
  fs::copy_file((*reg)->ca_cert(), certs + "/ca.crt");
  ASSERT_EQ(berth({"image", "create", "busybox", "-t", d + "/tls:1"}).code, 0);
  Out p = berth({"push", "--cert-dir", certs, d + "/tls:1"});
  ASSERT_EQ(p.code, 0) << p.err;
  ASSERT_EQ(berth({"rmi", d + "/tls:1"}).code, 0);
  Out pull = berth({"pull", "--cert-dir", certs, d + "/tls:1"});
  ASSERT_EQ(pull.code, 0) << pull.err;
  Out missing = berth({"pull", "--cert-dir", dir_.path() + "/nope", d + "/tls:1"});
  EXPECT_EQ(missing.code, 1);
  EXPECT_NE(missing.err.find("--cert-dir"), std::string::npos) << missing.err;
  expect_clean();
}

TEST_F(CliTest, PullsThePlatformOfAnIndex) {
  auto reg = LocalRegistry::start({});
  ASSERT_TRUE(reg) << reg.error().str();
  std::string d = (*reg)->domain();
  // Two one-layer images whose configs name amd64 and arm64, under one index.
  std::string other = dir_.path() + "/src-store";
  auto s = ImageStore::open(other);
  ASSERT_TRUE(s);
  auto op = (*s)->begin_op();
  auto conn = Registry::connect(*Reference::parse(d + "/multi:1"), {});
  ASSERT_TRUE(conn) << conn.error().str();
  std::vector<std::string> entries;
  for (std::string arch : {"amd64", "arm64"}) {
    auto w = LayerWriter::create((*s)->content(), "layer");
    ASSERT_TRUE(w);
    ASSERT_TRUE((*w)->file("arch", arch, {}));
    auto b = (*w)->finish();
    ASSERT_TRUE(b);
    json cfg = json::parse(make_config("{}", {b->diff_id}, {"x"}, rfc3339(1)));
    cfg["architecture"] = arch;
    Descriptor cd{std::string(media::kOciConfig), *(*s)->content().put(cfg.dump()), cfg.dump().size()};
    std::string manifest = make_manifest(cd, {b->descriptor});
    Digest md = *(*s)->content().put(manifest);
    ASSERT_TRUE((*conn)->push_blob(b->descriptor.digest, (*s)->content()));
    ASSERT_TRUE((*conn)->push_blob(cd.digest, (*s)->content()));
    ASSERT_TRUE((*conn)->put_manifest(md.str(), media::kOciManifest, manifest));
    Descriptor entry{std::string(media::kOciManifest), md, manifest.size(), Platform{"linux", arch, ""}, {}};
    entries.push_back(descriptor_json(entry));
  }
  std::string index = R"({"schemaVersion":2,"mediaType":")" + std::string(media::kOciIndex) + R"(","manifests":[)" +
                      entries[0] + "," + entries[1] + "]}";
  ASSERT_TRUE((*conn)->put_manifest("1", media::kOciIndex, index));
  Out arm = berth({"pull", "--platform", "linux/arm64", d + "/multi:1"});
  ASSERT_EQ(arm.code, 0) << arm.err;
  Out mount = berth({"image", "mount", d + "/multi:1"});
  ASSERT_EQ(mount.code, 0) << mount.err;
  EXPECT_EQ(*read_file(mount.out.substr(0, mount.out.size() - 1) + "/arch"), "arm64");
  ASSERT_EQ(berth({"image", "umount", d + "/multi:1"}).code, 0);
  Out amd = berth({"pull", d + "/multi:1"});
  ASSERT_EQ(amd.code, 0) << amd.err;
  EXPECT_EQ(berth({"image", "inspect", "--format", "{{.Architecture}}", d + "/multi:1"}).out, "amd64\n");
  Out none = berth({"pull", "--platform", "linux/s390x", d + "/multi:1"});
  EXPECT_EQ(none.code, 1);
  EXPECT_NE(none.err.find("no manifest for platform linux/s390x (there are: linux/amd64, linux/arm64)"),
            std::string::npos)
      << none.err;
  expect_clean();
}

TEST_F(CliTest, FullDiskFailsCleanly) {
  auto reg = LocalRegistry::start({});
  ASSERT_TRUE(reg) << reg.error().str();
  push_big_image(**reg, "full:1", 3, 3);
  // The store on a 5 MiB tmpfs: the second layer cannot fit.
  ASSERT_TRUE(mkdir_p(root_));
  ASSERT_EQ(::mount("tmpfs", root_.c_str(), "tmpfs", 0, "size=5m"), 0) << strerror(errno);
  struct Unmount {
    std::string p;
    ~Unmount() { ::umount2(p.c_str(), MNT_DETACH); }
  } unmount{root_};
  Out p = berth({"pull", "-q", (*reg)->domain() + "/full:1"});
  EXPECT_EQ(p.code, 1);
  EXPECT_NE(p.err.find("No space left on device"), std::string::npos) << p.err;
  EXPECT_EQ(p.err.find("full:1: layer"), std::string::npos) << "said once: " << p.err;
  EXPECT_NE(p.err.find("full:1"), std::string::npos) << "names the image: " << p.err;
  EXPECT_EQ(std::count(p.err.begin(), p.err.end(), '\n'), 1) << p.err;
  EXPECT_TRUE(berth({"images", "-q"}).out.empty());
  expect_clean();
}

TEST_F(CliTest, InteroperatesWithPodman) {
  if (std::system("command -v podman >/dev/null") != 0) GTEST_SKIP() << "podman is not installed";
  berth::test::PeerToolFiles peer_files;
  auto reg = LocalRegistry::start({});
  ASSERT_TRUE(reg) << reg.error().str();
  std::string d = (*reg)->domain();
  // --tmpdir: libpod's alive lock, events and exit files stay in the test's
  // directory (podman's default is /run/libpod, left on the host).
  std::string pm = "env -u DOCKER_CONFIG podman --root " + dir_.path() + "/pm/root --runroot " + dir_.path() +
                   "/pm/run --tmpdir " + dir_.path() + "/pm/tmp --storage-driver vfs ";
  std::string log = dir_.path() + "/podman.log";
  auto podman = [&](const std::string& args) {
    int rc = std::system((pm + args + " >" + log + " 2>&1").c_str());
    if (rc != 0) ADD_FAILURE() << "podman " << args << ":\n" << read_file(log).value_or("");
    return rc;
  };
  ASSERT_EQ(berth({"image", "create", "busybox", "-t", d + "/bb:1"}).code, 0);
  // berth -> podman: an archive, and the registry.
  ASSERT_EQ(berth({"save", "-o", dir_.path() + "/bb.tar", d + "/bb:1"}).code, 0);
  ASSERT_EQ(podman("load -i " + dir_.path() + "/bb.tar"), 0);
  ASSERT_EQ(berth({"push", d + "/bb:1"}).code, 0);
  ASSERT_EQ(podman("pull --tls-verify=false " + d + "/bb:1"), 0);
  // podman -> berth: its archives (both formats) and a push.
  ASSERT_EQ(podman("tag " + d + "/bb:1 " + d + "/frompodman:2"), 0);
  ASSERT_EQ(podman("save --format oci-archive -o " + dir_.path() + "/p-oci.tar " + d + "/frompodman:2"), 0);
  ASSERT_EQ(podman("save --format docker-archive -o " + dir_.path() + "/p-docker.tar " + d + "/frompodman:2"), 0);
  ASSERT_EQ(podman("push --tls-verify=false " + d + "/frompodman:2"), 0);
  ASSERT_EQ(berth({"rmi", "-f", d + "/bb:1"}).code, 0);
  for (auto* f : {"/p-oci.tar", "/p-docker.tar"}) {
    Out l = berth({"load", "-i", dir_.path() + f});
    ASSERT_EQ(l.code, 0) << f << ": " << l.err;
    EXPECT_NE(l.out.find("frompodman"), std::string::npos) << f << ": " << l.out;
  }
  Out p = berth({"pull", d + "/frompodman:2"});
  ASSERT_EQ(p.code, 0) << p.err;
  Out mount = berth({"image", "mount", d + "/frompodman:2"});
  ASSERT_EQ(mount.code, 0) << mount.err;
  EXPECT_TRUE(fs::exists(mount.out.substr(0, mount.out.size() - 1) + "/bin/busybox"));
  ASSERT_EQ(berth({"image", "umount", d + "/frompodman:2"}).code, 0);
  expect_clean();
}

// Kills `berth pull`, `berth load` and `berth rmi` at random points; each time
// the next command must find a store it can use (repairing it), and a last
// pull must succeed.
TEST_F(CliTest, KilledAtRandomPointsLeavesAUsableStore) {
  auto reg = LocalRegistry::start({});
  ASSERT_TRUE(reg) << reg.error().str();
  push_big_image(**reg, "kill:1", 3, 3);
  std::string name = (*reg)->domain() + "/kill:1";
  std::string archive = dir_.path() + "/kill.tar";
  ASSERT_EQ(berth({"pull", "-q", name}).code, 0);
  ASSERT_EQ(berth({"save", "-o", archive, name}).code, 0);
  std::mt19937 rng(std::random_device{}());
  const std::vector<std::string> verbs = {"pull", "load", "rmi"};
  for (int round = 0; round < 15; ++round) {
    const std::string& verb = verbs[round % verbs.size()];
    bool present = !berth({"images", "-q"}).out.empty();
    if (verb == "rmi" && !present) {
      ASSERT_EQ(berth({"pull", "-q", name}).code, 0);
    }
    if (verb != "rmi" && present) {
      ASSERT_EQ(berth({"rmi", name}).code, 0);
    }
    std::vector<std::string> args = verb == "pull"   ? std::vector<std::string>{"pull", "-q", name}
                                    : verb == "load" ? std::vector<std::string>{"load", "-q", "-i", archive}
                                                     : std::vector<std::string>{"rmi", name};
    pid_t pid = -1;
    berth(args, "", &pid, false);
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % (verb == "rmi" ? 30000 : 300000)));
    ::kill(pid, SIGKILL);
    int st = 0;
    ::waitpid(pid, &st, 0);
    Out list = berth({"images", "-q"});
    ASSERT_EQ(list.code, 0) << verb << ": " << list.err;
    expect_clean();
    if (HasFailure()) {
      ADD_FAILURE() << "after killing berth " << verb << " (round " << round << ")";
      return;
    }
  }
  if (!berth({"images", "-q"}).out.empty()) {
    ASSERT_EQ(berth({"rmi", name}).code, 0);
  }
  Out p = berth({"pull", name});
  ASSERT_EQ(p.code, 0) << p.err;
  Out l = berth({"load", "-i", archive});
  ASSERT_EQ(l.code, 0) << l.err;
  expect_clean();
}

}  // namespace
}  // namespace berth::image
