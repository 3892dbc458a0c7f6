// The image store as root: templates, layers shared by chain ID, overlay
// views with whiteouts, tags and removal with reference counts, and repair of
// what a killed operation leaves. Skips without root (unpack sets owners,
// mounts need CAP_SYS_ADMIN).
#include "image/store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <random>
#include <set>
#include <thread>

#include "image/layer_writer.h"
#include "image/template.h"
#include "util/fs.h"
#include "tree.h"

namespace berth::image {
namespace {

namespace fs = std::filesystem;

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (layer owners, mounts)";
    char tmpl[] = "/tmp/berth-store-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    auto s = ImageStore::open(root_);
    ASSERT_TRUE(s) << s.error().str();
    store_ = std::move(*s);
  }
  void TearDown() override {
    if (root_.empty()) return;
    store_.reset();
    // Whatever a failed test left mounted under this store (and only there),
    // and EROFS layers, which stay mounted until removed.
    detach_mounts_beneath(root_);
    (void)remove_tree(root_);
  }

  Reference ref(const std::string& s) { return *Reference::parse(s); }

  // An image of `layers` (each a list of (path, content) files; content
  // "<dir>" makes a directory) stored and tagged `name`.
  Result<ImageRecord> make_image(const std::vector<std::vector<std::pair<std::string, std::string>>>& layers,
                                 const std::string& name) {
    auto op = TRY(store_->begin_op());
    std::vector<Descriptor> descs;
    std::vector<Digest> diffs;
    for (auto& files : layers) {
      auto w = TRY(LayerWriter::create(store_->content(), "test layer"));
      for (auto& [path, content] : files) {
        if (content == "<dir>") TRY(w->dir(path, {0755, 0, 0, 1}));
        else TRY(w->file(path, content, {0644, 0, 0, 1}));
      }
      LayerBlob b = TRY(w->finish());
      descs.push_back(b.descriptor);
      diffs.push_back(b.diff_id);
    }
    std::string cfg = make_config("{}", diffs, std::vector<std::string>(diffs.size(), "test"), rfc3339(1));
    Descriptor cd{std::string(media::kOciConfig), TRY(store_->content().put(cfg)), cfg.size()};
    Digest md = TRY(store_->content().put(make_manifest(cd, descs)));
    return store_->commit(md, {ref(name)});
  }

  // The store's invariants: every image's blobs and layer dirs exist, every
  // blob and layer dir belongs to an image, nothing temporary is left.
  void expect_consistent() {
    auto images = store_->list();
    ASSERT_TRUE(images) << images.error().str();
    std::set<std::string> blobs, layers;
    for (auto& img : *images) {
      auto m = parse_manifest(*store_->read_manifest(img));
      ASSERT_TRUE(m) << m.error().str();
      EXPECT_TRUE(store_->content().has(m->config.digest));
      for (auto& l : m->layers) EXPECT_TRUE(store_->content().has(l.digest)) << l.digest.str();
      auto kept = store_->blobs(img);
      ASSERT_TRUE(kept);
      for (auto& b : *kept) blobs.insert(b.str());
      for (auto& d : img.layers) layers.insert(d.hex);
      for (auto& dir : store_->layer_dirs(img)) EXPECT_TRUE(fs::is_directory(dir)) << dir;
    }
    auto stored = store_->content().list();
    ASSERT_TRUE(stored);
    for (auto& d : *stored) EXPECT_TRUE(blobs.count(d.str())) << "orphaned blob " << d.str();
    for (auto& e : fs::directory_iterator(root_ + "/layers"))
    {
      EXPECT_TRUE(layers.count(e.path().filename().string())) << "orphaned layer dir " << e.path();
      test::expect_whole_layer(e.path().string());
    }
    EXPECT_TRUE(fs::is_empty(root_ + "/content/ingest")) << "ingest files left";
    EXPECT_TRUE(fs::is_empty(root_ + "/ops")) << "operation markers left";
  }

  std::string root_;
  std::unique_ptr<ImageStore> store_;
};

TEST_F(StoreTest, BusyboxTemplateIsReproducibleAndMountsReadOnly) {
  auto a = create_from_template(*store_, "busybox", ref("busybox"));
  ASSERT_TRUE(a) << a.error().str();
  auto b = create_from_template(*store_, "busybox", ref("other:1"));
  ASSERT_TRUE(b) << b.error().str();
  EXPECT_EQ(a->id, b->id) << "the same busybox binary must give the same image";
  auto img = store_->resolve("busybox");
  ASSERT_TRUE(img) << img.error().str();
  EXPECT_EQ(img->tags.size(), 2u);
  auto mp = store_->mount(*img);
  ASSERT_TRUE(mp) << mp.error().str();
  struct stat st {};
  ASSERT_EQ(::stat((*mp + "/bin/busybox").c_str(), &st), 0);
  EXPECT_TRUE(st.st_mode & S_IXUSR);
  char target[64] = {};
  ASSERT_GT(::readlink((*mp + "/bin/sh").c_str(), target, sizeof target - 1), 0);
  EXPECT_STREQ(target, "/bin/busybox");
  int fd = ::open((*mp + "/etc/new").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
  EXPECT_EQ(fd, -1);
  EXPECT_EQ(errno, EROFS);
  // A second name is only untagged; the last one of a mounted image is refused.
  ASSERT_TRUE(store_->remove("other:1", false));
  auto rm = store_->remove("busybox", false);
  ASSERT_FALSE(rm);
  EXPECT_NE(rm.error().str().find("in use"), std::string::npos) << rm.error().str();
  ASSERT_TRUE(store_->umount(*img).value_or(false));
  EXPECT_FALSE(fs::exists(*mp));
  expect_consistent();
}

TEST_F(StoreTest, OverlayViewAppliesWhiteoutsAcrossLayers) {
  auto img = make_image({{{"a", "<dir>"}, {"a/gone", "1"}, {"a/kept", "2"}, {"d", "<dir>"}, {"d/old", "3"}},
                         {{"a/.wh.gone", ""}, {"d/.wh..wh..opq", ""}, {"d/new", "4"}, {"top", "5"}}},
                        "layers:2");
  ASSERT_TRUE(img) << img.error().str();
  ASSERT_EQ(img->layers.size(), 2u);
  auto mp = store_->mount(*img);
  ASSERT_TRUE(mp) << mp.error().str();
  EXPECT_FALSE(fs::exists(*mp + "/a/gone"));
  EXPECT_TRUE(fs::exists(*mp + "/a/kept"));
  EXPECT_FALSE(fs::exists(*mp + "/d/old")) << "opaque directory hides the lower layer";
  EXPECT_TRUE(fs::exists(*mp + "/d/new"));
  EXPECT_EQ(*read_file(*mp + "/top"), "5");
  ASSERT_TRUE(store_->umount(*img));
  expect_consistent();
}

TEST_F(StoreTest, ContainerRootfsIsCopyOnWriteAndKeepsTheImageInUse) {
  auto img = make_image({{{"etc", "<dir>"}, {"etc/conf", "base"}}, {{"app", "v1"}}}, "app:1");
  ASSERT_TRUE(img) << img.error().str();
  std::string c1 = root_ + "/containers/c1", c2 = root_ + "/containers/c2";
  auto r1 = store_->create_rootfs("c1", *img, c1);
  ASSERT_TRUE(r1) << r1.error().str();
  auto r2 = store_->create_rootfs("c2", *img, c2);
  ASSERT_TRUE(r2) << r2.error().str();
  EXPECT_FALSE(store_->create_rootfs("c1", *img, c1 + "x")) << "one rootfs per container";
  ASSERT_TRUE(atomic_write_file(*r1 + "/etc/conf", "changed", 0644));
  ASSERT_TRUE(atomic_write_file(*r1 + "/new", "n", 0644));
  // The change is in c1's upper dir only: not in the layer, not in c2.
  EXPECT_EQ(*read_file(c1 + "/upper/etc/conf"), "changed");
  EXPECT_EQ(*read_file(store_->layer_dirs(*img)[1] + "/etc/conf"), "base");
  EXPECT_EQ(*read_file(*r2 + "/etc/conf"), "base");
  EXPECT_FALSE(fs::exists(*r2 + "/new"));
  auto rm = store_->remove("app:1", false);
  ASSERT_FALSE(rm);
  EXPECT_NE(rm.error().str().find("in use"), std::string::npos) << rm.error().str();
  ASSERT_TRUE(store_->remove_rootfs("c1", c1));
  EXPECT_FALSE(fs::exists(c1));
  EXPECT_FALSE(store_->remove("app:1", false)) << "c2 still uses it";
  ASSERT_TRUE(store_->remove_rootfs("c2", c2));
  ASSERT_TRUE(store_->remove("app:1", false));
  expect_consistent();
}

// A --rm container's rootfs is volatile (no sync of the upper filesystem at
// unmount); mounted again after a reboot, it is volatile again, although
// overlayfs refuses a work dir a volatile mount used until its marker goes.
TEST_F(StoreTest, TransientRootfsIsVolatileAndMountsAgain) {
  auto img = make_image({{{"etc/conf", "base"}}, {{"etc/more", "top"}}}, "app:1");
  ASSERT_TRUE(img) << img.error().str();
  auto options = [](const std::string& mp) {
    for (auto& line : split(read_file("/proc/self/mountinfo").value_or(""), '\n')) {
      auto f = split(line, ' ');
      if (f.size() > 4 && f[4] == mp) return line;
    }
    return std::string("<not mounted>");
  };
  std::string t = root_ + "/containers/t", k = root_ + "/containers/k";
  auto rt = store_->create_rootfs("t", *img, t, true);
  ASSERT_TRUE(rt) << rt.error().str();
  auto rk = store_->create_rootfs("k", *img, k);
  ASSERT_TRUE(rk) << rk.error().str();
  EXPECT_NE(options(*rt).find("volatile"), std::string::npos) << options(*rt);
  EXPECT_EQ(options(*rk).find("volatile"), std::string::npos) << options(*rk);
  ASSERT_TRUE(atomic_write_file(*rt + "/etc/conf", "changed", 0644));
  // A reboot: the mounts go, the dirs stay.
  ASSERT_EQ(::umount2(rt->c_str(), MNT_DETACH), 0);
  ASSERT_EQ(::umount2(rk->c_str(), MNT_DETACH), 0);
  auto again = store_->mount_rootfs(*img, t);
  ASSERT_TRUE(again) << again.error().str();
  EXPECT_NE(options(*again).find("volatile"), std::string::npos) << options(*again);
  EXPECT_EQ(read_file(*again + "/etc/conf").value_or(""), "changed");
  EXPECT_EQ(read_file(*again + "/etc/more").value_or(""), "top");
  auto kept = store_->mount_rootfs(*img, k);
  ASSERT_TRUE(kept) << kept.error().str();
  EXPECT_EQ(options(*kept).find("volatile"), std::string::npos) << options(*kept);
  ASSERT_TRUE(store_->remove_rootfs("t", t));
  ASSERT_TRUE(store_->remove_rootfs("k", k));
  ASSERT_TRUE(store_->remove("app:1", false));
  expect_consistent();
}

TEST_F(StoreTest, SharedLayersAreCountedAndRemovedWithTheLastImage) {
  auto one = make_image({{{"base", "b"}}, {{"one", "1"}}}, "one");
  auto two = make_image({{{"base", "b"}}, {{"two", "2"}}}, "two");
  ASSERT_TRUE(one && two);
  EXPECT_EQ(one->layers[0], two->layers[0]) << "the base layer is stored once";
  size_t dirs = std::distance(fs::directory_iterator(root_ + "/layers"), fs::directory_iterator());
  EXPECT_EQ(dirs, 3u);
  ASSERT_TRUE(store_->remove("one", false));
  EXPECT_TRUE(fs::exists(root_ + "/layers/" + two->layers[0].hex)) << "two still needs the base layer";
  EXPECT_FALSE(fs::exists(root_ + "/layers/" + one->layers[1].hex));
  expect_consistent();
  ASSERT_TRUE(store_->remove("two", false));
  EXPECT_TRUE(fs::is_empty(root_ + "/layers"));
  EXPECT_TRUE(store_->content().list()->empty());
  expect_consistent();
}

TEST_F(StoreTest, TagsMoveAndRemoveAsDockerDoes) {
  auto a = make_image({{{"f", "a"}}}, "app:1");
  ASSERT_TRUE(a);
  ASSERT_TRUE(store_->tag(*a, ref("app:latest")));
  // By ID with two names: refused without force.
  auto by_id = store_->remove(a->id.hex.substr(0, 12), false);
  ASSERT_FALSE(by_id);
  EXPECT_NE(by_id.error().str().find("multiple repositories"), std::string::npos);
  // By name with two names: only untags.
  auto untag = store_->remove("app:1", false);
  ASSERT_TRUE(untag) << untag.error().str();
  EXPECT_EQ(untag->untagged, std::vector<std::string>{"app:1"});
  EXPECT_TRUE(untag->deleted.empty());
  // The tag moves to a new image; the old one is dangling and pruned.
  auto b = make_image({{{"f", "b"}}}, "app:latest");
  ASSERT_TRUE(b);
  auto old = store_->resolve(a->id.str());
  ASSERT_TRUE(old);
  EXPECT_TRUE(old->tags.empty());
  auto pruned = store_->prune(false);
  ASSERT_TRUE(pruned);
  ASSERT_EQ(pruned->deleted.size(), 1u);
  EXPECT_EQ(pruned->deleted[0], a->id);
  EXPECT_TRUE(store_->resolve("app").has_value());
  EXPECT_FALSE(store_->resolve("nothere:1").has_value());
  EXPECT_NE(store_->resolve("nothere:1").error().str().find("no such image: nothere:1"), std::string::npos);
  expect_consistent();
}

TEST_F(StoreTest, WrongDiffIdStoresNothing) {
  auto op = store_->begin_op();
  ASSERT_TRUE(op);
  auto w = LayerWriter::create(store_->content(), "layer");
  ASSERT_TRUE(w);
  ASSERT_TRUE((*w)->file("f", "x", {}));
  auto b = (*w)->finish();
  ASSERT_TRUE(b);
  Digest wrong = sha256_of("something else");
  std::string cfg = make_config("{}", {wrong}, {"x"}, rfc3339(1));
  Descriptor cd{std::string(media::kOciConfig), *store_->content().put(cfg), cfg.size()};
  Digest md = *store_->content().put(make_manifest(cd, {b->descriptor}));
  auto r = store_->commit(md, {ref("bad:1")});
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().str().find("diff"), std::string::npos) << r.error().str();
  EXPECT_FALSE(store_->resolve("bad:1"));
  EXPECT_TRUE(fs::is_empty(root_ + "/layers")) << "no layer directory left";
  // The blobs this failed operation put are garbage once it ends.
  op = std::unexpected(Error{});
  ASSERT_TRUE(store_->collect_garbage());
  expect_consistent();
}

TEST_F(StoreTest, RepairsWhatADeadOperationLeft) {
  auto keep = make_image({{{"f", "keep"}}}, "keep:1");
  ASSERT_TRUE(keep);
  // What a killed pull leaves: its marker (no longer locked), a blob nothing
  // references, a half-unpacked layer, a layer dir with no row.
  ASSERT_TRUE(atomic_write_file(root_ + "/ops/deadbeef", ""));
  ASSERT_TRUE(store_->content().put("orphan"));
  ASSERT_TRUE(mkdir_p(root_ + "/layers/.tmp-0123-4567/diff/etc"));
  ASSERT_TRUE(mkdir_p(root_ + "/layers/" + std::string(64, 'c') + "/diff"));
  store_.reset();
  auto s = ImageStore::open(root_);
  ASSERT_TRUE(s) << s.error().str();
  store_ = std::move(*s);
  EXPECT_TRUE(store_->resolve("keep:1").has_value());
  expect_consistent();
}

TEST_F(StoreTest, RemoveTreeNeverDescendsIntoAMount) {
  std::string dir = root_ + "/victim";
  ASSERT_TRUE(mkdir_p(dir + "/mnt"));
  ASSERT_EQ(::mount("tmpfs", (dir + "/mnt").c_str(), "tmpfs", 0, "size=1m"), 0);
  ASSERT_TRUE(atomic_write_file(dir + "/mnt/precious", "x", 0644));
  auto r = remove_tree(dir);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().err, EBUSY);
  EXPECT_TRUE(fs::exists(dir + "/mnt/precious"));
  ASSERT_EQ(::umount2((dir + "/mnt").c_str(), 0), 0);
  // An empty mount too (a directory that rmdir would refuse as busy).
  ASSERT_EQ(::mount("tmpfs", (dir + "/mnt").c_str(), "tmpfs", 0, "size=1m"), 0);
  r = remove_tree(dir);
  EXPECT_TRUE(!r && r.error().err == EBUSY);
  EXPECT_TRUE(is_mount_root(dir + "/mnt"));
  ASSERT_EQ(::umount2((dir + "/mnt").c_str(), 0), 0);
  ASSERT_TRUE(remove_tree(dir));
  EXPECT_FALSE(fs::exists(dir));
}

// Kills `berth image create busybox` (a child process running the store code)
// at random points; every time, the next open must find a consistent store and
// the image must then be creatable.
TEST_F(StoreTest, KilledAtRandomPointsLeavesAUsableStore) {
  std::mt19937 rng(std::random_device{}());
  store_.reset();
  // The killed child's own children (busybox runs) come back here to be reaped.
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  struct Reap {
    ~Reap() {
      while (::waitpid(-1, nullptr, 0) > 0) {
      }
      ::prctl(PR_SET_CHILD_SUBREAPER, 0);
    }
  } reap;
  for (int round = 0; round < 12; ++round) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      auto s = ImageStore::open(root_);
      if (!s) _exit(2);
      auto a = create_from_template(**s, "busybox", *Reference::parse("busybox:" + std::to_string(round)));
      if (a) (void)(*s)->remove("busybox:" + std::to_string(round), true);
      _exit(a ? 0 : 1);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 60000));
    ::kill(pid, SIGKILL);
    int st = 0;
    ASSERT_EQ(::waitpid(pid, &st, 0), pid);
    auto s = ImageStore::open(root_);
    ASSERT_TRUE(s) << s.error().str();
    store_ = std::move(*s);
    expect_consistent();
    if (HasFailure()) return;
    store_.reset();
  }
  auto s = ImageStore::open(root_);
  ASSERT_TRUE(s);
  store_ = std::move(*s);
  auto a = create_from_template(*store_, "busybox", ref("busybox"));
  ASSERT_TRUE(a) << a.error().str();
  expect_consistent();
}

}  // namespace
}  // namespace berth::image
