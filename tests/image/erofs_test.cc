// The EROFS metadata writer against the real kernel: tars holding every entry
// type are indexed, checked by the in-process reader, mounted file-backed
// with the tar as device= and compared with GNU tar's extraction of the same
// tar (type, mode, owner, mtime, size, xattrs, link target, device number,
// hardlink groups, content). Writing and checking run unprivileged; mounting
// needs root and skips without it.
#include "image/erofs.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <set>

#include "image/digest.h"
#include "util/fs.h"
#include "tree.h"

namespace berth::image {
namespace {

namespace fs = std::filesystem;
using namespace test;

Result<ErofsStats> index_tar(const std::string& tar, const std::string& meta, ErofsOptions o = {}) {
  UniqueFd t(::open(tar.c_str(), O_RDONLY | O_CLOEXEC));
  UniqueFd m(::open(meta.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!t || !m) return sys_error("open " + tar + " or " + meta);
  return erofs_write(t.get(), m.get(), o);
}

// Directory mtimes as the tar's headers give them. GNU tar makes symlinks with
// absolute or ".." targets last (placeholders first), which changes their
// directories' mtimes after it set them: its tree is wrong there.
std::map<std::string, std::pair<int64_t, long>> dir_times(const std::string& tar) {
  std::map<std::string, std::pair<int64_t, long>> out;
  struct archive* a = archive_read_new();
  archive_read_support_format_tar(a);
  EXPECT_EQ(archive_read_open_filename(a, tar.c_str(), 65536), ARCHIVE_OK);
  struct archive_entry* e;
  while (archive_read_next_header(a, &e) == ARCHIVE_OK)
    if (archive_entry_filetype(e) == AE_IFDIR)
      out[fs::path(archive_entry_pathname(e)).lexically_normal().string()] = {archive_entry_mtime(e), archive_entry_mtime_nsec(e)};
  archive_read_free(a);
  return out;
}

void expect_same_tree(const std::string& tar, const std::string& want_root, const std::string& got_root) {
  auto want = snapshot(want_root), got = snapshot(got_root);
  for (auto& [p, t] : dir_times(tar)) {
    std::string key = p.ends_with("/") ? p.substr(0, p.size() - 1) : p;
    if (auto it = want.find(key); it != want.end()) std::tie(it->second.mtime, it->second.mtime_ns) = t;
  }
  expect_same_snapshots(want, got, "the mount");
}

class ErofsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/berth-erofs-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    for (auto it = mounts_.rbegin(); it != mounts_.rend(); ++it) ::umount2(it->c_str(), MNT_DETACH);
    if (!dir_.empty()) (void)remove_tree(dir_);
  }
  bool root() const { return ::geteuid() == 0; }
  std::string mkdir(const std::string& name) {
    std::string p = dir_ + "/" + name;
    EXPECT_EQ(::mkdir(p.c_str(), 0755), 0) << p;
    return p;
  }
  // Indexes `tar`, checks the image, mounts it; returns the mount point.
  std::string mount_tar(const std::string& tar, const std::string& name, ErofsOptions o = {}) {
    std::string meta = dir_ + "/" + name + ".erofs";
    auto st = index_tar(tar, meta, o);
    EXPECT_TRUE(st) << st.error().str();
    auto ok = erofs_check(meta, file_size(tar));
    EXPECT_TRUE(ok) << ok.error().str();
    std::string mnt = mkdir(name + ".mnt");
    auto m = erofs_mount(meta, tar, mnt);
    EXPECT_TRUE(m) << m.error().str();
    if (m) mounts_.push_back(mnt);
    return mnt;
  }
  std::string extract(const std::string& tar, const std::string& name) {
    std::string out = mkdir(name);
    std::string cmd = "tar --xattrs --xattrs-include='*' -xpf " + tar + " -C " + out;
    EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
    return out;
  }

  std::string dir_;
  std::vector<std::string> mounts_;
};

TEST_F(ErofsTest, CheckWithoutMounting) {
  std::string tar = dir_ + "/all.tar", meta = dir_ + "/all.erofs";
  write_tar(tar, everything());
  auto st = index_tar(tar, meta);
  ASSERT_TRUE(st) << st.error().str();
  EXPECT_GT(st->entries, 150u);
  EXPECT_EQ(st->meta_bytes, file_size(meta));
  auto ok = erofs_check(meta, file_size(tar));
  EXPECT_TRUE(ok) << ok.error().str();
  // A tar shorter than the chunks claim is caught.
  EXPECT_FALSE(erofs_check(meta, file_size(tar) / 2));
  // Many chunks per file.
  st = index_tar(tar, meta, {.max_chunk_bits = 1});
  ASSERT_TRUE(st) << st.error().str();
  ok = erofs_check(meta, file_size(tar));
  EXPECT_TRUE(ok) << ok.error().str();
}

// A tar indexed as it streams past, in chunks of every awkward size, gives the
// same image as the file read with pread; every byte is pulled, the padding
// after the end-of-archive blocks included; a stream cut inside a file's data
// is refused.
TEST_F(ErofsTest, StreamedTarGivesTheSameImage) {
  std::string tar = dir_ + "/all.tar", meta = dir_ + "/all.erofs", streamed = dir_ + "/streamed.erofs";
  write_tar(tar, everything());
  std::string bytes = *read_file(tar) + std::string(4096, '\0');  // trailing padding, as gzip'd layers have
  ASSERT_TRUE(atomic_write_file(tar, bytes));
  ASSERT_TRUE(index_tar(tar, meta));
  std::string want = *read_file(meta);
  auto stream = [&](std::string_view data, size_t chunk, const std::string& out) {
    size_t at = 0, pulled = 0;
    TarChunkFn next = [&]() -> Result<std::string_view> {
      std::string_view c = data.substr(at, std::min(chunk, data.size() - at));
      at += c.size();
      pulled += c.size();
      return c;
    };
    UniqueFd m(::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    auto st = erofs_write_stream(next, m.get());
    EXPECT_TRUE(!st || pulled == data.size()) << "stopped at " << pulled << " of " << data.size();
    return st;
  };
  for (size_t chunk : {size_t{1}, size_t{7}, size_t{511}, size_t{512}, size_t{100003}, size_t{1} << 20}) {
    auto st = stream(bytes, chunk, streamed);
    ASSERT_TRUE(st) << "chunks of " << chunk << ": " << st.error().str();
    EXPECT_EQ(*read_file(streamed), want) << "chunks of " << chunk;
  }
  // Cut inside the data of the largest file.
  auto cut = stream(std::string_view(bytes).substr(0, bytes.size() / 2), 4096, streamed);
  EXPECT_FALSE(cut);
  // An error from the source ends the stream with it.
  TarChunkFn broken = []() -> Result<std::string_view> { return fail("the source broke"); };
  UniqueFd m(::open(streamed.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC));
  auto st = erofs_write_stream(broken, m.get(), {.what = "layer x"});
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().str().find("the source broke"), std::string::npos) << st.error().str();
}

// The checker reads hostile images: random byte flips never crash it, and
// the ones it accepts keep every chunk inside the tar.
TEST_F(ErofsTest, CheckerSurvivesCorruption) {
  std::string tar = dir_ + "/all.tar", meta = dir_ + "/all.erofs", bad = dir_ + "/bad.erofs";
  write_tar(tar, everything());
  ASSERT_TRUE(index_tar(tar, meta));
  std::string img = *read_file(meta);
  std::mt19937 rng(7);
  int rejected = 0;
  for (int i = 0; i < 300; ++i) {
    std::string m = img;
    for (int k = 0; k < 4; ++k) m[rng() % m.size()] ^= static_cast<char>(1 + rng() % 255);
    ASSERT_TRUE(atomic_write_file(bad, m));
    if (!erofs_check(bad, file_size(tar))) ++rejected;
  }
  EXPECT_GT(rejected, 0);
}

TEST_F(ErofsTest, EveryEntryTypeMatchesGnuTar) {
  if (!root()) GTEST_SKIP() << "needs root (mount, owners)";
  std::string tar = dir_ + "/all.tar";
  write_tar(tar, everything());
  std::string want = extract(tar, "want");
  // The baseline holds what is compared.
  ASSERT_EQ(xattrs_of(want + "/caps").size(), 3u);
  ASSERT_EQ(info_of(want + "/nsec").mtime_ns, 123456789);
  expect_same_tree(tar, want, mount_tar(tar, "one-chunk"));
  expect_same_tree(tar, want, mount_tar(tar, "many-chunks", {.max_chunk_bits = 0}));
}

TEST_F(ErofsTest, GnuLongNamesMatchGnuTar) {
  if (!root()) GTEST_SKIP() << "needs root (mount)";
  std::string tar = dir_ + "/gnu.tar";
  std::string longdir = std::string(120, 'd') + "/" + std::string(120, 'e');
  write_tar(tar, {dir(std::string(120, 'd')), dir(longdir), file(longdir + "/" + std::string(200, 'f'), "gnu"),
                  Entry{.path = longdir + "/l", .type = AE_IFLNK, .perm = 0777, .link = std::string(150, 't')}},
            true);
  expect_same_tree(tar, extract(tar, "want"), mount_tar(tar, "gnu"));
}

TEST_F(ErofsTest, WhiteoutsAndOpaqueDirsOverOverlay) {
  if (!root()) GTEST_SKIP() << "needs root (mount)";
  std::string lower = dir_ + "/lower.tar", upper = dir_ + "/upper.tar";
  write_tar(lower, {dir("a"), file("a/keep", "k"), file("a/gone", "g"), dir("b"), file("b/x", "x"), file("b/y", "y")});
  write_tar(upper, {dir("a"), file("a/.wh.gone", ""), dir("b"), file("b/.wh..wh..opq", ""), file("b/z", "z")});
  std::string lm = mount_tar(lower, "lower"), um = mount_tar(upper, "upper");

  // The upper layer as overlayfs reads it.
  struct stat st;
  ASSERT_EQ(::lstat((um + "/a/gone").c_str(), &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode));
  EXPECT_EQ(st.st_rdev, makedev(0, 0));
  EXPECT_EQ(xattrs_of(um + "/b")["trusted.overlay.opaque"], "y");
  for (auto& [p, i] : snapshot(um)) EXPECT_EQ(p.find(".wh."), std::string::npos) << p;

  std::string merged = mkdir("merged");
  std::string opts = "lowerdir=" + um + ":" + lm;
  ASSERT_EQ(::mount("overlay", merged.c_str(), "overlay", MS_RDONLY, opts.c_str()), 0) << strerror(errno);
  mounts_.push_back(merged);
  std::set<std::string> seen;
  for (auto& [p, i] : snapshot(merged)) seen.insert(p);
  EXPECT_EQ(seen, (std::set<std::string>{"a", "a/keep", "b", "b/z"}));
  EXPECT_EQ(*read_file(merged + "/a/keep"), "k");
}

TEST_F(ErofsTest, BusyboxLayerMatchesGnuTar) {
  if (!root()) GTEST_SKIP() << "needs root (mount)";
  std::string store = mkdir("store");
  std::string cmd = std::string(BERTH_CLI) + " --root " + store + " image create busybox >/dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::string blob;
  for (auto& e : fs::directory_iterator(store + "/content/sha256")) {
    auto head = read_file(e.path().string());
    if (head && head->size() > 2 && (*head)[0] == '\x1f' && (*head)[1] == '\x8b') blob = e.path().string();
  }
  ASSERT_FALSE(blob.empty()) << "no gzip layer in " << store;
  std::string tar = dir_ + "/busybox.tar";
  ASSERT_EQ(std::system(("gzip -dc " + blob + " > " + tar).c_str()), 0);
  expect_same_tree(tar, extract(tar, "want"), mount_tar(tar, "busybox"));
}

// A ustar header block for a regular file of `size` bytes.
std::string ustar_header(const std::string& name, uint64_t size) {
  std::string h(512, '\0');
  auto field = [&](size_t off, size_t len, const std::string& v) { std::memcpy(&h[off], v.data(), std::min(len, v.size())); };
  auto octal = [](uint64_t v, int width) {
    char b[32];
    std::snprintf(b, sizeof b, "%0*llo", width, static_cast<unsigned long long>(v));
    return std::string(b);
  };
  field(0, 100, name);
  field(100, 8, octal(0644, 7));
  field(108, 8, octal(0, 7));
  field(116, 8, octal(0, 7));
  field(124, 12, octal(size, 11));
  field(136, 12, octal(1700000000, 11));
  h[156] = '0';
  field(257, 8, std::string("ustar\0" "00", 8));
  std::memset(&h[148], ' ', 8);
  unsigned sum = 0;
  for (unsigned char c : h) sum += c;
  field(148, 8, octal(sum, 6));
  return h;
}

// A file over 4 GiB (a hole in the tar, so it costs no disk) and one whose
// data lies beyond 4 GiB in the tar.
TEST_F(ErofsTest, FilesBeyondFourGiB) {
  if (!root()) GTEST_SKIP() << "needs root (mount)";
  const uint64_t big = (5ull << 30) + 7;
  const uint64_t after = 512 + (big + 511) / 512 * 512;
  std::string tar = dir_ + "/big.tar";
  UniqueFd fd(::open(tar.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  ASSERT_TRUE(fd);
  std::string h1 = ustar_header("big", big), h2 = ustar_header("after", 5);
  ASSERT_EQ(::pwrite(fd.get(), h1.data(), 512, 0), 512);
  ASSERT_EQ(::pwrite(fd.get(), h2.data(), 512, static_cast<off_t>(after)), 512);
  ASSERT_EQ(::pwrite(fd.get(), "tail\n", 5, static_cast<off_t>(after + 512)), 5);
  ASSERT_EQ(::ftruncate(fd.get(), static_cast<off_t>(after + 1024 + 1024)), 0);
  fd.reset();

  std::string m = mount_tar(tar, "big");
  EXPECT_EQ(file_size(m + "/big"), big);
  EXPECT_EQ(*read_file(m + "/after"), "tail\n");
  UniqueFd b(::open((m + "/big").c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(b);
  char buf[4096];
  ASSERT_EQ(::pread(b.get(), buf, sizeof buf, static_cast<off_t>(big - 100)), 100);
  EXPECT_TRUE(std::all_of(buf, buf + 100, [](char c) { return c == 0; }));
}

TEST_F(ErofsTest, SparseFilesAreRefused) {
  std::string tar = dir_ + "/sparse.tar", meta = dir_ + "/sparse.erofs";
  struct archive* a = archive_write_new();
  archive_write_set_format_pax(a);
  ASSERT_EQ(archive_write_open_filename(a, tar.c_str()), ARCHIVE_OK);
  struct archive_entry* e = archive_entry_new();
  archive_entry_set_pathname(e, "holes");
  archive_entry_set_filetype(e, AE_IFREG);
  archive_entry_set_perm(e, 0644);
  archive_entry_set_size(e, 1 << 20);
  archive_entry_sparse_add_entry(e, 4096, 4096);
  ASSERT_EQ(archive_write_header(a, e), ARCHIVE_OK);
  std::string data(4096, 'd');
  archive_write_data(a, data.data(), data.size());
  archive_entry_free(e);
  archive_write_close(a);
  archive_write_free(a);
  auto st = index_tar(tar, meta);
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().str().find("entry holes: sparse files are not supported"), std::string::npos) << st.error().str();
}

TEST_F(ErofsTest, HostileNamesAreRefused) {
  std::string tar = dir_ + "/bad.tar", meta = dir_ + "/bad.erofs";
  auto refused = [&](std::vector<Entry> entries, const std::string& needle) {
    write_tar(tar, entries);
    auto st = index_tar(tar, meta, {.what = "layer sha256:ab"});
    ASSERT_FALSE(st) << needle;
    EXPECT_NE(st.error().str().find(needle), std::string::npos) << st.error().str();
    EXPECT_EQ(st.error().str().rfind("layer sha256:ab", 0), 0u) << st.error().str();
  };
  refused({file("../evil", "x")}, "../evil");
  refused({file("a/../../evil", "x")}, "a/../../evil");
  refused({Entry{.path = "l", .type = AE_IFLNK, .link = "/etc"}, file("l/passwd", "x")}, "goes through a symlink");
  refused({file("f", "x"), file("f/g", "x")}, "is not a directory");
  refused({Entry{.path = "h", .hardlink = "/etc/shadow"}}, "points outside the layer");
  refused({dir("d"), Entry{.path = "h", .hardlink = "d"}}, "points outside the layer");
}

TEST_F(ErofsTest, LaterEntriesWin) {
  if (!root()) GTEST_SKIP() << "needs root (mount)";
  std::string tar = dir_ + "/dup.tar";
  write_tar(tar, {dir("d"), file("d/x", "1"), file("d", "now a file"),  // a file replaces a directory tree
                  file("e", "first"), dir("e"), file("e/y", "2"),        // a directory replaces a file
                  file("f", "old"), file("f", "new"),
                  dir("g", 0700), file("g/k", "kept"), dir("g", 0750),    // a directory again: entries stay
                  file("./h", "dot-slash"), file("i//j", "")});
  std::string m = mount_tar(tar, "dup");
  EXPECT_EQ(*read_file(m + "/d"), "now a file");
  EXPECT_EQ(*read_file(m + "/e/y"), "2");
  EXPECT_EQ(*read_file(m + "/f"), "new");
  EXPECT_EQ(*read_file(m + "/g/k"), "kept");
  EXPECT_EQ(info_of(m + "/g").mode & 07777, 0750u);
  EXPECT_EQ(*read_file(m + "/h"), "dot-slash");
  EXPECT_TRUE(fs::is_regular_file(m + "/i/j"));
}

TEST_F(ErofsTest, KernelProbe) {
  if (!root()) GTEST_SKIP() << "needs root (mount)";
  auto ok = erofs_supported(dir_);
  ASSERT_TRUE(ok) << ok.error().str();
  EXPECT_TRUE(*ok);
  // Nothing left behind.
  EXPECT_TRUE(fs::is_empty(dir_));
}

}  // namespace
}  // namespace berth::image
