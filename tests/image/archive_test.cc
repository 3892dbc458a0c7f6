// save/load/import as root: round trips through docker-archive and OCI
// archives, interop with skopeo and umoci, and hostile or broken archives
// refused with nothing left in the store.
#include "image/archive.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "image/layer_writer.h"
#include "image/manifest.h"
#include "peer_tools.h"
#include "image/template.h"
#include "util/fs.h"

namespace berth::image {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

int sh(const std::string& cmd) {
  int st = std::system(cmd.c_str());
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

// A tar written from (name, content) pairs, for hand-made hostile archives.
std::string make_tar(const std::string& path, const std::vector<std::pair<std::string, std::string>>& files) {
  archive* a = archive_write_new();
  archive_write_set_format_pax_restricted(a);
  archive_write_open_filename(a, path.c_str());
  for (auto& [name, data] : files) {
    archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, name.c_str());
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    archive_entry_set_size(e, static_cast<la_int64_t>(data.size()));
    archive_write_header(a, e);
    archive_write_data(a, data.data(), data.size());
    archive_entry_free(e);
  }
  archive_write_close(a);
  archive_write_free(a);
  return path;
}

class ArchiveTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (layer owners, mounts)";
    char tmpl[] = "/tmp/berth-archive-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    store_ = open_store(dir_ + "/store");
  }
  void TearDown() override {
    if (dir_.empty()) return;
    store_.reset();
    // Image mounts a failed test left, and EROFS layers (mounted until removed).
    detach_mounts_beneath(dir_);
    (void)remove_tree(dir_);
  }
  std::unique_ptr<ImageStore> open_store(const std::string& root) {
    auto s = ImageStore::open(root);
    EXPECT_TRUE(s) << s.error().str();
    return s ? std::move(*s) : nullptr;
  }
  ImageRecord busybox() {
    auto r = create_from_template(*store_, "busybox", *Reference::parse("busybox"));
    EXPECT_TRUE(r) << r.error().str();
    return *r;
  }
  Result<> save_to(const std::string& path, const ImageRecord& img, ArchiveFormat f) {
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    return save_images(*store_, {{img, img.tags}}, f, fd.get());
  }
  Result<std::vector<LoadedImage>> load_from(ImageStore& s, const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    return load_images(s, fd.get(), Platform::host());
  }
  // The archive at `path` as a file ("file": read where its entries lie), through
  // a pipe ("pipe": a stream), or gzip'd ("gzip": a stream too).
  Result<std::vector<LoadedImage>> load_via(ImageStore& s, const std::string& path, const std::string& how) {
    if (how == "file") return load_from(s, path);
    if (how == "gzip") {
      EXPECT_EQ(sh("gzip -1 -c " + path + " > " + path + ".gz"), 0);
      return load_from(s, path + ".gz");
    }
    int p[2];
    EXPECT_EQ(::pipe2(p, O_CLOEXEC), 0);
    pid_t cat = ::fork();
    if (cat == 0) {
      ::dup2(p[1], 1);
      ::execlp("cat", "cat", path.c_str(), nullptr);
      ::_exit(127);
    }
    ::close(p[1]);
    auto r = load_images(s, p[0], Platform::host());
    ::close(p[0]);  // a load that stopped early: cat gets EPIPE
    int st = 0;
    ::waitpid(cat, &st, 0);
    return r;
  }
  void expect_no_temporaries(const std::string& root, const std::string& how) {
    for (auto& e : fs::directory_iterator(root + "/layers"))
      EXPECT_FALSE(e.path().filename().string().starts_with(".tmp")) << how << ": left " << e.path();
  }
  // Nothing but what its images need is in the store.
  void expect_clean(ImageStore& s, const std::string& root) {
    auto images = s.list();
    ASSERT_TRUE(images);
    std::set<std::string> blobs;
    for (auto& img : *images) {
      auto m = parse_manifest(*s.read_manifest(img));
      ASSERT_TRUE(m);
      EXPECT_TRUE(s.content().has(m->config.digest));
      for (auto& l : m->layers) EXPECT_TRUE(s.content().has(l.digest)) << l.digest.str();
      auto kept = s.blobs(img);
      ASSERT_TRUE(kept);
      for (auto& b : *kept) blobs.insert(b.str());
    }
    auto stored = s.content().list();
    ASSERT_TRUE(stored);
    for (auto& d : *stored) EXPECT_TRUE(blobs.count(d.str())) << "orphaned blob " << d.str();
    size_t layers = 0;
    for (auto& img : *images) layers += img.layers.size();
    EXPECT_LE(static_cast<size_t>(std::distance(fs::directory_iterator(root + "/layers"), fs::directory_iterator())),
              layers);
    EXPECT_TRUE(fs::is_empty(root + "/content/ingest"));
  }

  std::string dir_;
  std::unique_ptr<ImageStore> store_;
};

TEST_F(ArchiveTest, RoundTripsThroughBothFormats) {
  ImageRecord img = busybox();
  for (auto f : {ArchiveFormat::kDockerArchive, ArchiveFormat::kOciArchive}) {
    std::string path = dir_ + (f == ArchiveFormat::kDockerArchive ? "/d.tar" : "/o.tar");
    auto saved = save_to(path, img, f);
    ASSERT_TRUE(saved) << saved.error().str();
    auto other = open_store(dir_ + "/other");
    auto loaded = load_from(*other, path);
    ASSERT_TRUE(loaded) << loaded.error().str();
    ASSERT_EQ(loaded->size(), 1u);
    EXPECT_EQ((*loaded)[0].image.id, img.id) << "the config (the image ID) survives the trip";
    ASSERT_EQ((*loaded)[0].names.size(), 1u);
    EXPECT_EQ((*loaded)[0].names[0].familiar(), "busybox:latest");
    auto mp = other->mount((*loaded)[0].image);
    ASSERT_TRUE(mp) << mp.error().str();
    EXPECT_TRUE(fs::exists(*mp + "/bin/busybox"));
    ASSERT_TRUE(other->umount((*loaded)[0].image));
    if (f == ArchiveFormat::kOciArchive) {
      EXPECT_EQ((*loaded)[0].image.manifest, img.manifest) << "OCI keeps the manifest";
    }
    expect_clean(*other, dir_ + "/other");
    other.reset();
    detach_mounts_beneath(dir_ + "/other");  // its EROFS layers
    ASSERT_TRUE(remove_tree(dir_ + "/other"));
  }
}

TEST_F(ArchiveTest, InteroperatesWithSkopeoAndUmoci) {
  if (sh("command -v skopeo >/dev/null && command -v umoci >/dev/null") != 0)
    GTEST_SKIP() << "skopeo and umoci are not installed";
  berth::test::PeerToolFiles peer_files;
  ImageRecord img = busybox();
  ASSERT_TRUE(save_to(dir_ + "/d.tar", img, ArchiveFormat::kDockerArchive));
  ASSERT_TRUE(save_to(dir_ + "/o.tar", img, ArchiveFormat::kOciArchive));
  // berth -> skopeo/umoci: both archives convert and unpack to a rootfs with busybox.
  ASSERT_EQ(sh("skopeo copy -q docker-archive:" + dir_ + "/d.tar oci:" + dir_ + "/layout:a"), 0);
  ASSERT_EQ(sh("skopeo copy -q oci-archive:" + dir_ + "/o.tar oci:" + dir_ + "/layout:b"), 0);
  ASSERT_EQ(sh("umoci unpack --image " + dir_ + "/layout:b " + dir_ + "/bundle >/dev/null"), 0);
  EXPECT_TRUE(fs::exists(dir_ + "/bundle/rootfs/bin/busybox"));
  // skopeo -> berth: its docker-archive and OCI archive load with their names.
  ASSERT_EQ(sh("skopeo copy -q oci:" + dir_ + "/layout:a docker-archive:" + dir_ + "/s-d.tar:localhost/s:d"), 0);
  ASSERT_EQ(sh("skopeo copy -q oci:" + dir_ + "/layout:a oci-archive:" + dir_ + "/s-o.tar:localhost/s:o"), 0);
  for (auto* name : {"/s-d.tar", "/s-o.tar"}) {
    auto loaded = load_from(*store_, dir_ + name);
    ASSERT_TRUE(loaded) << name << ": " << loaded.error().str();
    ASSERT_EQ(loaded->size(), 1u);
    ASSERT_EQ((*loaded)[0].names.size(), 1u);
    EXPECT_EQ((*loaded)[0].names[0].familiar(), std::string("localhost/s:") + (name[3] == 'd' ? "d" : "o"));
  }
  expect_clean(*store_, dir_ + "/store");
}

TEST_F(ArchiveTest, HostileAndBrokenArchivesLeaveNothing) {
  std::string cfg = R"({"os":"linux","architecture":"amd64","rootfs":{"type":"layers","diff_ids":[]}})";
  struct Case {
    std::string name;
    std::vector<std::pair<std::string, std::string>> files;
    std::string error;
  } cases[] = {
      {"lying blob name", {{"oci-layout", "{}"}, {"blobs/sha256/" + std::string(64, 'a'), "not that"}, {"index.json", "{}"}},
       "sha256:" + std::string(64, 'a')},
      {"blob name not a digest", {{"blobs/sha256/../../etc/passwd", "x"}}, "not a sha256 digest"},
      {"missing config", {{"manifest.json", R"([{"Config":"nope.json","Layers":[]}])"}}, "nope.json"},
      {"missing layer", {{"c.json", cfg}, {"manifest.json", R"([{"Config":"c.json","Layers":["l/layer.tar"]}])"}},
       "l/layer.tar"},
      {"neither format", {{"hello", "world"}}, "neither a docker-archive"},
      {"bad manifest.json", {{"manifest.json", "{]"}}, "manifest.json"},
      {"bad tag", {{"c.json", cfg}, {"manifest.json", R"([{"Config":"c.json","Layers":[],"RepoTags":["UPPER:x"]}])"}},
       "RepoTags"},
  };
  for (std::string how : {"file", "pipe"})
    for (auto& c : cases) {
      std::string path = make_tar(dir_ + "/bad.tar", c.files);
      auto r = load_via(*store_, path, how);
      ASSERT_FALSE(r) << how << ": " << c.name;
      EXPECT_NE(r.error().str().find(c.error), std::string::npos) << how << ": " << c.name << ": " << r.error().str();
      EXPECT_TRUE(store_->list()->empty()) << how << ": " << c.name;
      expect_clean(*store_, dir_ + "/store");
    }
  // A truncated archive: the first half of a real one.
  ImageRecord img = busybox();
  ASSERT_TRUE(save_to(dir_ + "/d.tar", img, ArchiveFormat::kDockerArchive));
  ASSERT_TRUE(store_->remove("busybox", false));
  fs::resize_file(dir_ + "/d.tar", fs::file_size(dir_ + "/d.tar") / 2);
  for (std::string how : {"file", "pipe"}) {
    auto r = load_via(*store_, dir_ + "/d.tar", how);
    ASSERT_FALSE(r) << how;
    EXPECT_TRUE(store_->list()->empty()) << how;
    expect_no_temporaries(dir_ + "/store", how);
    expect_clean(*store_, dir_ + "/store");
  }
}

// A load reads an archive in a regular file where its entries lie, and a
// pipe or a compressed archive as a stream; either way a large blob becomes
// an early layer as it is read, adopted once its diff_id is known: the image
// loads whole and no temporary layer is left.
TEST_F(ArchiveTest, LoadsFromFilesPipesAndCompressedArchives) {
  ImageRecord img = busybox();
  ASSERT_TRUE(save_to(dir_ + "/d.tar", img, ArchiveFormat::kDockerArchive));
  ASSERT_GE(img.layer_sizes.at(0), 1u << 20) << "the layer must be large enough for an early layer";
  for (std::string how : {"file", "pipe", "gzip"}) {
    std::string root = dir_ + "/" + how;
    auto s = open_store(root);
    auto loaded = load_via(*s, dir_ + "/d.tar", how);
    ASSERT_TRUE(loaded) << how << ": " << loaded.error().str();
    ASSERT_EQ(loaded->size(), 1u) << how;
    EXPECT_EQ((*loaded)[0].image.id, img.id) << how;
    EXPECT_EQ(s->early_layers_adopted(), 1u) << how << ": the layer was not made while the archive was read";
    // What is on disk is what was hashed (a large blob is written around the page cache, its last block padded).
    auto blobs = s->blobs((*loaded)[0].image);
    ASSERT_TRUE(blobs) << how;
    for (auto& b : *blobs)
      EXPECT_EQ(sha256_of(s->content().read(b, 1u << 30).value_or("unreadable")), b) << how << ": blob " << b.str();
    auto mp = s->mount((*loaded)[0].image);
    ASSERT_TRUE(mp) << how << ": " << mp.error().str();
    EXPECT_TRUE(fs::exists(*mp + "/bin/busybox")) << how;
    ASSERT_TRUE(s->umount((*loaded)[0].image));
    expect_no_temporaries(root, how);
    expect_clean(*s, root);
    // Again into the same store: the layer is there, nothing is made twice.
    auto again = load_via(*s, dir_ + "/d.tar", how);
    ASSERT_TRUE(again) << how << ": " << again.error().str();
    EXPECT_EQ((*again)[0].image.id, img.id) << how;
    expect_no_temporaries(root, how);
    expect_clean(*s, root);
  }
}

// Large blobs that are not what they claim: a big file that is no layer at all
// (its early layer fails and is dropped, the image beside it loads), and a
// layer whose config names another diff_id (refused, naming the layer, with
// nothing left: no blob, no layer, no temporary).
TEST_F(ArchiveTest, EarlyLayersOfLyingBlobsLeaveNothing) {
  ImageRecord img = busybox();
  ASSERT_TRUE(save_to(dir_ + "/d.tar", img, ArchiveFormat::kDockerArchive));
  std::string junk(3 << 20, '\0');
  for (size_t i = 0; i < junk.size(); ++i) junk[i] = static_cast<char>((i * 2654435761u) >> 13);
  ASSERT_EQ(sh("cd " + dir_ + " && mkdir x && tar -C x -xf d.tar && head -c 3145728 /dev/urandom > x/junk.bin && "
               "tar -C x -cf junk.tar ."), 0);
  for (std::string how : {"file", "pipe", "gzip"}) {
    std::string root = dir_ + "/junk-" + how;
    auto s = open_store(root);
    auto loaded = load_via(*s, dir_ + "/junk.tar", how);
    ASSERT_TRUE(loaded) << how << ": " << loaded.error().str();
    EXPECT_EQ((*loaded)[0].image.id, img.id) << how;
    expect_no_temporaries(root, how);
    expect_clean(*s, root);
  }
  auto other = open_store(dir_ + "/other");

  // An OCI archive whose only layer (an uncompressed tar of 2 MiB) does not
  // have the diff_id its config says.
  std::string layer = make_tar(dir_ + "/layer.tar", {{"big", junk.substr(0, 2 << 20)}});
  std::string lbytes = *read_file(layer);
  Digest ld = sha256_of(lbytes);
  std::string cfg = json({{"os", "linux"}, {"architecture", "amd64"},
                          {"rootfs", {{"type", "layers"}, {"diff_ids", {sha256_of("other").str()}}}}})
                        .dump();
  Digest cd = sha256_of(cfg);
  std::string man = json({{"schemaVersion", 2}, {"mediaType", std::string(media::kOciManifest)},
                          {"config", {{"mediaType", std::string(media::kOciConfig)}, {"digest", cd.str()}, {"size", cfg.size()}}},
                          {"layers", {{{"mediaType", std::string(media::kOciLayer)}, {"digest", ld.str()}, {"size", lbytes.size()}}}}})
                        .dump();
  Digest md = sha256_of(man);
  std::string index = json({{"schemaVersion", 2},
                            {"manifests", {{{"mediaType", std::string(media::kOciManifest)}, {"digest", md.str()}, {"size", man.size()},
                                            {"annotations", {{"io.containerd.image.name", "localhost/liar:1"}}}}}}})
                          .dump();
  std::string path = make_tar(dir_ + "/liar.tar", {{"oci-layout", R"({"imageLayoutVersion":"1.0.0"})"},
                                                   {"blobs/sha256/" + ld.hex, lbytes},
                                                   {"blobs/sha256/" + cd.hex, cfg},
                                                   {"blobs/sha256/" + md.hex, man},
                                                   {"index.json", index}});
  for (std::string how : {"file", "pipe"}) {
    auto r = load_via(*other, path, how);
    ASSERT_FALSE(r) << how;
    EXPECT_NE(r.error().str().find("diff_id mismatch"), std::string::npos) << how << ": " << r.error().str();
    EXPECT_TRUE(other->list()->empty()) << how;
    EXPECT_FALSE(other->content().has(ld)) << how << ": the layer blob was left behind";
    expect_no_temporaries(dir_ + "/other", how);
    expect_clean(*other, dir_ + "/other");
  }
  other.reset();
  detach_mounts_beneath(dir_ + "/other");
}

TEST_F(ArchiveTest, ImportMakesAOneLayerImageWithChanges) {
  // A rootfs tarball with a file, gzip-compressed by tar(1).
  ASSERT_TRUE(mkdir_p(dir_ + "/root/etc"));
  ASSERT_TRUE(atomic_write_file(dir_ + "/root/etc/motd", "hello\n", 0644));
  ASSERT_EQ(sh("tar -C " + dir_ + "/root -czf " + dir_ + "/rootfs.tgz ."), 0);
  ImportOptions o;
  o.name = *Reference::parse("imported:1");
  o.changes = {"CMD [\"cat\", \"/etc/motd\"]", "ENV A=b", "WORKDIR /etc", "EXPOSE 80"};
  o.message = "from a tarball";
  UniqueFd fd(::open((dir_ + "/rootfs.tgz").c_str(), O_RDONLY | O_CLOEXEC));
  auto img = import_rootfs(*store_, fd.get(), o);
  ASSERT_TRUE(img) << img.error().str();
  EXPECT_EQ(img->layers.size(), 1u);
  json cfg = json::parse(*store_->read_config(*img));
  EXPECT_EQ(cfg["config"]["Cmd"], json({"cat", "/etc/motd"}));
  EXPECT_EQ(cfg["config"]["Env"], json({"A=b"}));
  EXPECT_EQ(cfg["config"]["WorkingDir"], "/etc");
  EXPECT_TRUE(cfg["config"]["ExposedPorts"].contains("80/tcp"));
  EXPECT_EQ(cfg["history"][0]["comment"], "from a tarball");
  auto mp = store_->mount(*img);
  ASSERT_TRUE(mp);
  EXPECT_EQ(*read_file(*mp + "/etc/motd"), "hello\n");
  ASSERT_TRUE(store_->umount(*img));
  auto bad = apply_changes("{}", {"RUN rm -rf /"});
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().str().find("unsupported instruction RUN"), std::string::npos);
  // A hostile tarball fails and leaves nothing.
  std::string evil = make_tar(dir_ + "/evil.tar", {{"../escape", "x"}});
  UniqueFd efd(::open(evil.c_str(), O_RDONLY | O_CLOEXEC));
  auto r = import_rootfs(*store_, efd.get(), {});
  ASSERT_FALSE(r);
  EXPECT_FALSE(fs::exists(dir_ + "/escape"));
  expect_clean(*store_, dir_ + "/store");
}

}  // namespace
}  // namespace berth::image
