// The two layer formats side by side (issue 6): every image is stored twice,
// as tars indexed by berth's EROFS metadata and unpacked into directories,
// and the trees `image mount` shows are compared entry by entry: type, mode,
// owner, mtime, size, xattrs, link target, device number, hardlink groups and
// the sha256 of every file. Hostile layers are played on both paths. Needs
// root (mounts, owners); the EROFS side skips on a kernel that cannot mount it
// (the qemu VM's 6.1 runs the dir side alone).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <set>

#include "image/layer_writer.h"
#include "image/manifest.h"
#include "image/store.h"
#include "image/template.h"
#include "tree.h"
#include "util/fs.h"

namespace berth::image {
namespace {

namespace fs = std::filesystem;
using namespace test;

// In the test body: GTEST_SKIP returns from the function it is in.
#define REQUIRE_EROFS()                                                                    \
  if (!erofs_ok_) GTEST_SKIP() << "this kernel cannot mount berth's EROFS layers (the dir " \
                                  "path is tested alone)"

std::string shell_out(const std::string& cmd, int* status = nullptr) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int st = ::pclose(p);
  if (status) *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return out;
}

class LayerFormatTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (mounts, layer owners)";
    char tmpl[] = "/tmp/berth-formats-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    auto ok = erofs_supported(dir_);
    ASSERT_TRUE(ok) << ok.error().str();
    erofs_ok_ = *ok;
    for (auto f : {LayerFormat::kErofs, LayerFormat::kDir}) {
      if (f == LayerFormat::kErofs && !erofs_ok_) continue;
      auto s = ImageStore::open(dir_ + "/" + std::string(layer_format_name(f)), {.layer_format = f});
      ASSERT_TRUE(s) << s.error().str();
      stores_.push_back(std::move(*s));
    }
  }
  void TearDown() override {
    if (dir_.empty()) return;
    for (auto& [s, img] : mounted_) (void)s->umount(img, true);
    stores_.clear();
    // Once the image mounts are gone only EROFS layers stay mounted (until
    // their layer goes).
    for (auto& line : split(read_file("/proc/self/mountinfo").value_or(""), '\n')) {
      auto f = split(line, ' ');
      if (f.size() > 4 && f[4].starts_with(dir_ + "/")) {
        EXPECT_TRUE(f[4].find("/layers/") != std::string::npos && f[4].ends_with("/diff")) << "left mounted: " << f[4];
      }
    }
    detach_mounts_beneath(dir_);
    (void)remove_tree(dir_);
  }

  // An image of these uncompressed layer tars (gzipped where `gzip` says),
  // stored in `s` as `name`.
  Result<ImageRecord> store_tars(ImageStore& s, const std::vector<std::string>& tars, const std::string& name,
                                 const std::vector<bool>& gzip = {}) {
    auto op = TRY(s.begin_op());
    std::vector<Descriptor> layers;
    std::vector<Digest> diffs;
    for (size_t i = 0; i < tars.size(); ++i) {
      std::string raw = TRY(read_file(tars[i]));
      diffs.push_back(sha256_of(raw));
      bool gz = i < gzip.size() && gzip[i];
      std::string blob = raw;
      if (gz) {
        int st = 0;
        blob = shell_out("gzip -n -c " + tars[i], &st);
        if (st != 0) return fail("gzip " + tars[i]);
      }
      Digest d = TRY(s.content().put(blob));
      layers.push_back({std::string(gz ? media::kOciLayerGzip : media::kOciLayer), d, blob.size()});
    }
    std::string cfg = make_config("{}", diffs, std::vector<std::string>(diffs.size(), "test"), rfc3339(1));
    Descriptor cd{std::string(media::kOciConfig), TRY(s.content().put(cfg)), cfg.size()};
    Digest md = TRY(s.content().put(make_manifest(cd, layers)));
    return s.commit(md, {*Reference::parse(name)});
  }

  std::string mount(ImageStore& s, const ImageRecord& img) {
    auto mp = s.mount(img);
    EXPECT_TRUE(mp) << mp.error().str();
    if (!mp) return "/nonexistent";
    mounted_.emplace_back(&s, img);
    return *mp;
  }

  // Stores the tars in every store, mounts each, and compares each tree with
  // the first store's (EROFS where the kernel has it, with the dir one).
  std::vector<std::string> expect_same_everywhere(const std::vector<std::string>& tars,
                                                  const std::vector<bool>& gzip = {}) {
    EXPECT_EQ(stores_.size(), 2u) << "needs both formats";
    std::vector<std::string> points;
    std::optional<Digest> id;
    for (auto& s : stores_) {
      auto img = store_tars(*s, tars, "same:1", gzip);
      EXPECT_TRUE(img) << s->root() << ": " << img.error().str();
      if (!img) return {};
      if (id) {
        EXPECT_EQ(img->id, *id) << "the same layers make the same image";
      }
      id = img->id;
      points.push_back(mount(*s, *img));
    }
    expect_same_tree(points[0], points[1]);
    return points;
  }

  static void expect_same_tree(const std::string& erofs, const std::string& dir) {
    auto want = snapshot(dir);
    ASSERT_FALSE(want.empty()) << dir << " is empty";
    expect_same_snapshots(want, snapshot(erofs), "the EROFS tree");
  }

  std::string tar(const std::string& name, const std::vector<Entry>& entries) {
    std::string p = dir_ + "/" + name + ".tar";
    write_tar(p, entries);
    return p;
  }

  std::string dir_;
  bool erofs_ok_ = false;
  std::vector<std::unique_ptr<ImageStore>> stores_;
  std::vector<std::pair<ImageStore*, ImageRecord>> mounted_;
};

TEST_F(LayerFormatTest, BusyboxTemplateIsTheSameOnBothPaths) {
  REQUIRE_EROFS();
  std::vector<std::string> points;
  for (auto& s : stores_) {
    auto img = create_from_template(*s, "busybox", *Reference::parse("busybox"));
    ASSERT_TRUE(img) << img.error().str();
    points.push_back(mount(*s, *img));
  }
  ASSERT_TRUE(fs::exists(points[0] + "/bin/busybox"));
  expect_same_tree(points[0], points[1]);
}

// Every entry type in a first layer; the next ones delete with whiteouts,
// make a directory opaque, replace files by directories and back, and add
// hardlinks across directories. The middle layer is gzipped.
TEST_F(LayerFormatTest, EveryEntryTypeAcrossLayers) {
  REQUIRE_EROFS();
  std::vector<Entry> base = everything();
  for (auto& e : std::vector<Entry>{dir("w"), file("w/a", "a"), file("w/b", "b"), dir("op"), file("op/x", "x"),
                                    dir("op/sub"), file("op/sub/y", "y"), file("becomes-dir", "f"), dir("becomes-file"),
                                    file("becomes-file/inner", "i")})
    base.push_back(e);
  std::vector<Entry> second = {
      dir("w"), file("w/.wh.a", ""), dir("op"), file("op/.wh..wh..opq", ""), file("op/z", "only z"),
      file(".wh.many", ""), dir("becomes-dir"), file("becomes-dir/now", "d"), file("becomes-file", "now a file"),
      dir("x"), dir("y"), file("x/h1", "shared"), Entry{.path = "y/h2", .hardlink = "x/h1"},
      Entry{.path = "caps", .perm = 0700, .content = "changed", .xattrs = {{"user.k", "v2"}}},
      Entry{.path = "tmp", .type = AE_IFDIR, .perm = 01777, .mtime = 1800000000},
  };
  std::vector<Entry> third = {
      file("many", "a file where a directory was"),
      dir("w"), Entry{.path = "w/fifo", .type = AE_IFIFO, .perm = 0600},
      dir("dev"), Entry{.path = "dev/.wh.sda1", .type = AE_IFREG},
      Entry{.path = "dev/tty", .type = AE_IFCHR, .perm = 0666, .major = 5, .minor = 0},
      dir("x"), file("x/h3", "third"), dir("z"), Entry{.path = "z/h4", .hardlink = "x/h3"},
  };
  auto points = expect_same_everywhere({tar("l1", base), tar("l2", second), tar("l3", third)}, {false, true, false});
  ASSERT_EQ(points.size(), 2u);
  // What was compared is what the layers say (the dir store's view).
  const std::string& m = points[1];
  EXPECT_FALSE(fs::exists(m + "/w/a"));
  EXPECT_TRUE(fs::exists(m + "/w/b"));
  EXPECT_FALSE(fs::exists(m + "/op/x"));
  EXPECT_EQ(read_file(m + "/op/z").value_or(""), "only z");
  EXPECT_EQ(read_file(m + "/many").value_or(""), "a file where a directory was");
  EXPECT_FALSE(fs::exists(fs::symlink_status(m + "/dev/sda1")));
  EXPECT_EQ(xattrs_of(m + "/caps").at("user.k"), "v2");
  EXPECT_EQ(xattrs_of(m + "/bin/big").size(), 0u);
  EXPECT_EQ(info_of(m + "/dev/odd").rdev, makedev(300, 70000));
  EXPECT_EQ(info_of(m + "/x/h1").ino, info_of(m + "/y/h2").ino);
}

// A debootstrap Debian rootfs: from $BERTH_TEST_DEBIAN_TAR, the benchmarks'
// cache (bench/image-data.sh), or debootstrap itself when a mirror answers.
TEST_F(LayerFormatTest, DebootstrapDebianIsTheSameOnBothPaths) {
  REQUIRE_EROFS();
  std::string src;
  if (const char* e = std::getenv("BERTH_TEST_DEBIAN_TAR"); e && *e) src = e;
  else if (fs::exists("/var/tmp/berth-bench/debian.tar") &&
           read_file("/var/tmp/berth-bench/debian.source").value_or("").starts_with("debootstrap"))
    src = "/var/tmp/berth-bench/debian.tar";
  if (src.empty()) {
    if (::access("/usr/sbin/debootstrap", X_OK) != 0) GTEST_SKIP() << "debootstrap is not installed";
    std::string rootfs = dir_ + "/debian";
    // debootstrap's mount(8) makes libmount's /run/mount (its utab's
    // directory): gone again, if it was not there and is empty.
    bool had_run_mount = fs::exists("/run/mount");
    int st = 0;
    // Bounded: a slow or absent mirror skips the test, it never times out.
    shell_out("timeout 200 /usr/sbin/debootstrap --variant=minbase bookworm " + rootfs + " >" + dir_ +
                  "/debootstrap.log 2>&1",
              &st);
    detach_mounts_beneath(rootfs);
    if (!had_run_mount) ::rmdir("/run/mount");
    if (st != 0) GTEST_SKIP() << "debootstrap failed (no Debian mirror reachable?): see the log in the test dir";
    src = dir_ + "/debian.tar";
    shell_out("tar --xattrs --xattrs-include='*' --numeric-owner -C " + rootfs + " -cf " + src + " .", &st);
    ASSERT_EQ(st, 0) << "tar of the debootstrap tree";
  }
  auto points = expect_same_everywhere({src}, {true});
  ASSERT_EQ(points.size(), 2u);
  EXPECT_TRUE(fs::exists(points[1] + "/usr/bin/dpkg"));
}

// The hostile layers of the unpack tests, on both paths: each is refused with
// one line naming the layer and the entry, nothing outside the store changes
// and no layer directory is left.
TEST_F(LayerFormatTest, HostileLayersAreRefusedOnBothPaths) {
  std::string outside = dir_ + "/outside";
  ASSERT_TRUE(mkdir_p(outside));
  ASSERT_TRUE(atomic_write_file(outside + "/sentinel", "untouched", 0644));
  struct Case {
    std::vector<Entry> entries;
    std::string needle;
  };
  std::vector<Case> cases = {
      {{file("../outside/x", "pwn")}, "../outside/x"},
      {{dir("a"), file("a/../../outside/x", "pwn")}, "a/../../outside/x"},
      {{Entry{.path = "l", .type = AE_IFLNK, .perm = 0777, .link = "../outside"}, file("l/x", "pwn")}, "through a symlink"},
      {{Entry{.path = "b", .type = AE_IFLNK, .perm = 0777, .link = outside}, dir("b/sub")}, "through a symlink"},
      {{Entry{.path = "h", .hardlink = "../outside/sentinel"}}, "points outside the layer"},
      {{Entry{.path = "p", .hardlink = "/etc/passwd"}}, "points outside the layer"},
      {{dir("d"), file("d/f", "x"), Entry{.path = "s", .type = AE_IFLNK, .perm = 0777, .link = "d"},
        Entry{.path = "g", .hardlink = "s/f"}},
       "g -> s/f"},
      {{file("f", "x"), Entry{.path = "f", .type = AE_IFLNK, .perm = 0777, .link = "../outside/sentinel"},
        Entry{.path = "g", .hardlink = "f"}},
       "g -> f"},
      {{Entry{.path = "w", .type = AE_IFLNK, .perm = 0777, .link = "../outside"}, file("w/.wh.sentinel", "")},
       "through a symlink"},
  };
  for (auto& s : stores_) {
    for (size_t i = 0; i < cases.size(); ++i) {
      std::string t = tar("hostile" + std::to_string(i), cases[i].entries);
      auto img = store_tars(*s, {t}, "hostile:" + std::to_string(i));
      ASSERT_FALSE(img) << s->root() << ": stored hostile layer " << i;
      std::string msg = img.error().str();
      EXPECT_NE(msg.find("layer 1 (sha256:"), std::string::npos) << msg;
      EXPECT_NE(msg.find(cases[i].needle), std::string::npos) << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
      EXPECT_FALSE(s->resolve("hostile:" + std::to_string(i)));
    }
    EXPECT_TRUE(fs::is_empty(s->root() + "/layers")) << s->root() << ": a layer dir is left";
  }
  std::set<std::string> names;
  for (auto& e : fs::directory_iterator(outside)) names.insert(e.path().filename().string());
  EXPECT_EQ(names, std::set<std::string>{"sentinel"});
  EXPECT_EQ(read_file(outside + "/sentinel").value_or(""), "untouched");
}

// Streams that are not the layer they claim: a wrong diff_id, a truncated gzip.
TEST_F(LayerFormatTest, BadStreamsLeaveNothing) {
  for (auto& s : stores_) {
    auto op = s->begin_op();
    ASSERT_TRUE(op);
    std::string t = tar("ok", {file("f", "data")});
    std::string raw = *read_file(t);
    Digest wrong = sha256_of("not this");
    Digest d = *s->content().put(raw);
    std::string cfg = make_config("{}", {wrong}, {"x"}, rfc3339(1));
    Descriptor cd{std::string(media::kOciConfig), *s->content().put(cfg), cfg.size()};
    Digest md = *s->content().put(make_manifest(cd, {{std::string(media::kOciLayer), d, raw.size()}}));
    auto r = s->commit(md, {*Reference::parse("bad:1")});
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().str().find("diff_id mismatch"), std::string::npos) << r.error().str();

    int st = 0;
    std::string gz = shell_out("gzip -n -c " + t, &st);
    ASSERT_EQ(st, 0);
    gz.resize(gz.size() / 2);
    Digest gd = *s->content().put(gz);
    cfg = make_config("{}", {sha256_of(raw)}, {"x"}, rfc3339(2));
    cd = {std::string(media::kOciConfig), *s->content().put(cfg), cfg.size()};
    md = *s->content().put(make_manifest(cd, {{std::string(media::kOciLayerGzip), gd, gz.size()}}));
    r = s->commit(md, {*Reference::parse("bad:2")});
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().str().find("layer 1 (sha256:"), std::string::npos) << r.error().str();
    EXPECT_TRUE(fs::is_empty(s->root() + "/layers")) << s->root();
  }
}

// EROFS layers are mounted at their first use and stay mounted until the
// layer goes; the container rootfs and `image mount` see the layers; rmi
// leaves nothing.
TEST_F(LayerFormatTest, ErofsLayersMountAtFirstUseAndGoWithTheLayer) {
  REQUIRE_EROFS();
  ImageStore& s = *stores_[0];
  auto img = store_tars(s, {tar("a", {dir("etc"), file("etc/conf", "base")}), tar("b", {dir("etc"), file("etc/more", "top")})},
                        "users:1");
  ASSERT_TRUE(img) << img.error().str();
  auto is_mounted = [&](const Digest& chain) {
    std::string p = s.root() + "/layers/" + chain.hex + "/diff";
    return read_file("/proc/self/mountinfo").value_or("").find(" " + p + " ") != std::string::npos;
  };
  for (auto& l : img->layers) {
    EXPECT_FALSE(is_mounted(l)) << "a layer nothing used yet is not mounted";
    EXPECT_TRUE(fs::exists(s.root() + "/layers/" + l.hex + "/layer.tar"));
    EXPECT_TRUE(fs::exists(s.root() + "/layers/" + l.hex + "/layer.erofs"));
  }
  std::string c1 = dir_ + "/c1", c2 = dir_ + "/c2";
  auto r1 = s.create_rootfs("c1", *img, c1);
  ASSERT_TRUE(r1) << r1.error().str();
  auto r2 = s.create_rootfs("c2", *img, c2);
  ASSERT_TRUE(r2) << r2.error().str();
  EXPECT_EQ(read_file(*r1 + "/etc/conf").value_or(""), "base");
  EXPECT_EQ(read_file(*r1 + "/etc/more").value_or(""), "top");
  for (auto& l : img->layers) EXPECT_TRUE(is_mounted(l));
  // One mount per layer, whoever uses it.
  std::string info = read_file("/proc/self/mountinfo").value_or("");
  std::string first = " " + s.root() + "/layers/" + img->layers[0].hex + "/diff ";
  EXPECT_EQ(info.find(first, info.find(first) + 1), std::string::npos) << "mounted twice";
  ASSERT_TRUE(s.remove_rootfs("c1", c1));
  // A reboot unmounts everything: the rootfs is mounted again, layers first.
  ASSERT_EQ(::umount2(r2->c_str(), MNT_DETACH), 0);
  for (auto& l : img->layers) ASSERT_EQ(::umount2((s.root() + "/layers/" + l.hex + "/diff").c_str(), MNT_DETACH), 0);
  auto again = s.mount_rootfs(*img, c2);
  ASSERT_TRUE(again) << again.error().str();
  EXPECT_EQ(read_file(*again + "/etc/conf").value_or(""), "base");
  ASSERT_TRUE(s.remove_rootfs("c2", c2));
  for (auto& l : img->layers) EXPECT_TRUE(is_mounted(l)) << "kept for the next container";
  std::string mp = mount(s, *img);
  EXPECT_EQ(read_file(mp + "/etc/more").value_or(""), "top");
  auto rm = s.remove("users:1", true);
  ASSERT_TRUE(rm) << rm.error().str();
  mounted_.clear();
  for (auto& l : img->layers) EXPECT_FALSE(is_mounted(l)) << "removed with its layer";
  EXPECT_TRUE(fs::is_empty(s.root() + "/layers"));
}

TEST_F(LayerFormatTest, InfoNamesTheFormatAndStorageOptsAreChecked) {
  std::string root = dir_ + "/cli";
  // The qemu VM's copy of berth is elsewhere than the build dir.
  const char* env_cli = std::getenv("BERTH_TEST_CLI");
  std::string cli = std::string(env_cli && *env_cli ? env_cli : BERTH_CLI) + " --root " + root;
  int st = 0;
  std::string out = shell_out(cli + " info 2>&1", &st);
  EXPECT_EQ(st, 0) << out;
  EXPECT_NE(out.find(std::string(" Layer format: ") + (erofs_ok_ ? "erofs" : "dir")), std::string::npos) << out;
  out = shell_out(cli + " --storage-opt layer-format=dir info 2>&1", &st);
  EXPECT_NE(out.find(" Layer format: dir"), std::string::npos) << out;
  out = shell_out("BERTH_STORAGE_OPT=layer-format=dir " + cli + " info --format '{{json .DriverStatus}}' 2>&1", &st);
  EXPECT_NE(out.find("\"dir\""), std::string::npos) << out;
  out = shell_out(cli + " --storage-opt layer-format=zfs info 2>&1", &st);
  EXPECT_NE(st, 0);
  EXPECT_EQ(out, "berth: storage option layer-format=zfs: expected erofs, dir or auto\n");
  out = shell_out(cli + " --storage-opt size=10G info 2>&1", &st);
  EXPECT_NE(st, 0);
  EXPECT_NE(out.find("storage option size=10G: unknown"), std::string::npos) << out;
  // A forced format applies to the layers a command adds.
  out = shell_out(cli + " --storage-opt layer-format=dir image create busybox 2>&1", &st);
  ASSERT_EQ(st, 0) << out;
  for (auto& e : fs::directory_iterator(root + "/layers")) {
    EXPECT_FALSE(fs::exists(e.path() / "layer.erofs")) << e.path();
    EXPECT_TRUE(fs::exists(e.path() / "diff/bin/busybox")) << e.path();
  }
  out = shell_out(cli + " --storage-opt layer-format=dir rmi busybox 2>&1", &st);
  EXPECT_EQ(st, 0) << out;
}

}  // namespace
}  // namespace berth::image
