// unpack_layer: tar streams built in memory with libarchive's writer, applied to
// a fresh directory; the outcome is checked on disk. Hostile layers must fail
// with an error naming the entry and leave the sibling "outside" untouched.
#include "image/unpack.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "image/digest.h"
#include "util/fd.h"

namespace berth::image {
namespace {

namespace fs = std::filesystem;

enum class Filter { None, Gzip, Zstd };

struct Ent {
  std::string name;
  mode_t type = AE_IFREG;
  mode_t perm = 0644;
  std::string data;
  std::string symlink;
  std::string hardlink;
  int64_t uid = 0, gid = 0;
  time_t mtime = 1700000000;
  unsigned major = 0, minor = 0;
  std::vector<std::pair<std::string, std::string>> xattrs;
};

Ent file(std::string name, std::string data, mode_t perm = 0644) {
  Ent e;
  e.name = std::move(name);
  e.data = std::move(data);
  e.perm = perm;
  return e;
}
Ent dir(std::string name, mode_t perm = 0755) {
  Ent e;
  e.name = std::move(name);
  e.type = AE_IFDIR;
  e.perm = perm;
  return e;
}
Ent symlink(std::string name, std::string target) {
  Ent e;
  e.name = std::move(name);
  e.type = AE_IFLNK;
  e.perm = 0777;
  e.symlink = std::move(target);
  return e;
}
Ent hardlink(std::string name, std::string target) {
  Ent e;
  e.name = std::move(name);
  e.hardlink = std::move(target);
  return e;
}

la_ssize_t append_cb(struct archive*, void* out, const void* buf, size_t n) {
  static_cast<std::string*>(out)->append(static_cast<const char*>(buf), n);
  return static_cast<la_ssize_t>(n);
}

void add_filter(struct archive* a, Filter f) {
  if (f == Filter::Gzip) {
    ASSERT_EQ(archive_write_add_filter_gzip(a), ARCHIVE_OK) << archive_error_string(a);
  }
  if (f == Filter::Zstd) {
    ASSERT_EQ(archive_write_add_filter_zstd(a), ARCHIVE_OK) << archive_error_string(a);
  }
}

void open_writer(struct archive* a, std::string* out) {
  // Default 10 KiB blocking pads the tar; keep it (real layers are padded too).
  ASSERT_EQ(archive_write_open(a, out, nullptr, append_cb, nullptr), ARCHIVE_OK) << archive_error_string(a);
}

// A pax tar of `ents`, optionally compressed; `zeros` adds that many zero bytes
// to a last file "big" (streamed, for the bomb).
std::string make_tar(const std::vector<Ent>& ents, Filter f = Filter::None, size_t zeros = 0) {
  std::string out;
  struct archive* a = archive_write_new();
  archive_write_set_format_pax_restricted(a);
  add_filter(a, f);
  // No zero padding after the compressed stream (the tar inside keeps its own).
  if (f != Filter::None) archive_write_set_bytes_in_last_block(a, 1);
  open_writer(a, &out);
  for (auto& x : ents) {
    struct archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, x.name.c_str());
    archive_entry_set_uid(e, x.uid);
    archive_entry_set_gid(e, x.gid);
    archive_entry_set_mtime(e, x.mtime, 0);
    if (!x.hardlink.empty()) {
      archive_entry_set_filetype(e, AE_IFREG);
      archive_entry_set_perm(e, x.perm);
      archive_entry_set_hardlink(e, x.hardlink.c_str());
      archive_entry_set_size(e, 0);
    } else {
      archive_entry_set_filetype(e, x.type);
      archive_entry_set_perm(e, x.perm);
      if (x.type == AE_IFLNK) archive_entry_set_symlink(e, x.symlink.c_str());
      if (x.type == AE_IFCHR || x.type == AE_IFBLK) {
        archive_entry_set_rdevmajor(e, x.major);
        archive_entry_set_rdevminor(e, x.minor);
      }
      archive_entry_set_size(e, x.type == AE_IFREG ? static_cast<la_int64_t>(x.data.size()) : 0);
    }
    for (auto& [k, v] : x.xattrs) archive_entry_xattr_add_entry(e, k.c_str(), v.data(), v.size());
    EXPECT_GE(archive_write_header(a, e), ARCHIVE_WARN) << archive_error_string(a);
    if (x.type == AE_IFREG && x.hardlink.empty() && !x.data.empty())
      archive_write_data(a, x.data.data(), x.data.size());
    archive_entry_free(e);
  }
  if (zeros) {
    struct archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, "big");
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    archive_entry_set_size(e, static_cast<la_int64_t>(zeros));
    archive_write_header(a, e);
    std::string chunk(1 << 20, '\0');
    for (size_t left = zeros; left > 0;) {
      size_t n = std::min(left, chunk.size());
      archive_write_data(a, chunk.data(), n);
      left -= n;
    }
    archive_entry_free(e);
  }
  archive_write_close(a);
  archive_write_free(a);
  return out;
}

// Compresses arbitrary bytes (one gzip member / zstd frame).
std::string compress(const std::string& data, Filter f) {
  std::string out;
  struct archive* a = archive_write_new();
  archive_write_set_format_raw(a);
  add_filter(a, f);
  archive_write_set_bytes_per_block(a, 0);
  open_writer(a, &out);
  struct archive_entry* e = archive_entry_new();
  archive_entry_set_pathname(e, "raw");
  archive_entry_set_filetype(e, AE_IFREG);
  archive_entry_set_size(e, static_cast<la_int64_t>(data.size()));
  archive_write_header(a, e);
  archive_write_data(a, data.data(), data.size());
  archive_entry_free(e);
  archive_write_close(a);
  archive_write_free(a);
  return out;
}

std::string slurp(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  std::string s;
  if (!fd) return "<missing>";
  char buf[65536];
  ssize_t n;
  while ((n = ::read(fd.get(), buf, sizeof buf)) > 0) s.append(buf, static_cast<size_t>(n));
  return s;
}

std::string get_xattr(const std::string& path, const char* name) {
  char buf[256];
  ssize_t n = ::lgetxattr(path.c_str(), name, buf, sizeof buf);
  if (n < 0) return "<none>";
  return std::string(buf, static_cast<size_t>(n));
}

// tmp/dest (unpacked into), tmp/outside/sentinel (must never change).
class UnpackTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/berth-unpack-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    tmp_ = tmpl;
    dest_ = tmp_ + "/dest";
    outside_ = tmp_ + "/outside";
    ASSERT_EQ(::mkdir(dest_.c_str(), 0755), 0);
    ASSERT_EQ(::mkdir(outside_.c_str(), 0755), 0);
    {
      UniqueFd fd(::open((outside_ + "/sentinel").c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
      ASSERT_TRUE(fd);
      ASSERT_EQ(::write(fd.get(), "secret\n", 7), 7);
    }
    before_ = snapshot();
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(tmp_, ec);
  }

  Result<UnpackResult> unpack(const std::string& layer, UnpackOptions o = {}) {
    std::string path = tmp_ + "/layer";
    {
      UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
      EXPECT_TRUE(fd);
      EXPECT_EQ(::write(fd.get(), layer.data(), layer.size()), static_cast<ssize_t>(layer.size()));
    }
    UniqueFd src(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    UniqueFd dst(::open(dest_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (o.what == "layer") o.what = "layer test";
    if (geteuid() != 0) o.set_owners = false;
    return unpack_layer(src.get(), dst.get(), o);
  }

  // Everything under outside/: names, types, modes, owners, contents.
  std::string snapshot() {
    std::vector<std::string> lines;
    for (auto& de : fs::recursive_directory_iterator(outside_)) {
      struct stat st;
      ::lstat(de.path().c_str(), &st);
      std::string l = de.path().string() + " " + std::to_string(st.st_mode) + " " + std::to_string(st.st_uid) +
                      " " + std::to_string(st.st_nlink) + " " + std::to_string(st.st_mtim.tv_sec);
      if (S_ISREG(st.st_mode)) l += " " + slurp(de.path());
      lines.push_back(l);
    }
    std::sort(lines.begin(), lines.end());
    std::string s;
    for (auto& l : lines) s += l + "\n";
    return s;
  }
  void expect_outside_unchanged() {
    EXPECT_EQ(snapshot(), before_);
    EXPECT_EQ(slurp(outside_ + "/sentinel"), "secret\n");
    struct stat st;
    ASSERT_EQ(::stat((outside_ + "/sentinel").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0644u);
  }
  // The layer fails, the error names `entry`, and outside is untouched.
  void expect_refused(const std::vector<Ent>& ents, const std::string& entry) {
    auto r = unpack(make_tar(ents));
    ASSERT_FALSE(r.has_value()) << "unpacked a hostile layer";
    std::string msg = r.error().str();
    EXPECT_NE(msg.find("layer test: "), std::string::npos) << msg;
    EXPECT_NE(msg.find(entry), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    expect_outside_unchanged();
  }

  std::string tmp_, dest_, outside_, before_;
};

std::vector<Ent> simple_layer() {
  std::vector<Ent> v = {dir("etc"), file("etc/hostname", "box\n"), dir("usr/bin"),
                        file("usr/bin/tool", std::string(100000, 'x'), 0755), symlink("bin", "usr/bin")};
  for (int i = 0; i < 50; ++i) v.push_back(file("data/f" + std::to_string(i), std::string(i * 997, 'a' + i % 26)));
  return v;
}

void expect_simple_layer(const std::string& dest) {
  EXPECT_EQ(slurp(dest + "/etc/hostname"), "box\n");
  EXPECT_EQ(slurp(dest + "/usr/bin/tool"), std::string(100000, 'x'));
  EXPECT_EQ(fs::read_symlink(dest + "/bin").string(), "usr/bin");
  EXPECT_EQ(slurp(dest + "/data/f49"), std::string(49 * 997, 'a' + 49 % 26));
}

// ---------------------------------------------------------------------------
// Compression and diff_id.

TEST_F(UnpackTest, PlainTarDiffId) {
  std::string tar = make_tar(simple_layer());
  UnpackOptions o;
  o.diff_id = sha256_of(tar);
  auto r = unpack(tar, o);
  ASSERT_TRUE(r.has_value()) << r.error().str();
  EXPECT_EQ(r->diff_id, sha256_of(tar));
  EXPECT_EQ(r->uncompressed, tar.size());
  EXPECT_EQ(r->compressed, tar.size());
  EXPECT_EQ(r->entries, simple_layer().size());
  expect_simple_layer(dest_);
}

TEST_F(UnpackTest, GzipDiffId) {
  std::string tar = make_tar(simple_layer());
  std::string gz = compress(tar, Filter::Gzip);  // the tar's zero padding included
  ASSERT_EQ(static_cast<unsigned char>(gz[0]), 0x1f);
  auto r = unpack(gz);
  ASSERT_TRUE(r.has_value()) << r.error().str();
  EXPECT_EQ(r->diff_id, sha256_of(tar));
  EXPECT_EQ(r->compressed, gz.size());
  EXPECT_EQ(r->uncompressed, tar.size());
  expect_simple_layer(dest_);
}

TEST_F(UnpackTest, ZstdDiffId) {
  std::string tar = make_tar(simple_layer());
  std::string zst = compress(tar, Filter::Zstd);
  ASSERT_EQ(static_cast<unsigned char>(zst[0]), 0x28);
  auto r = unpack(zst);
  ASSERT_TRUE(r.has_value()) << r.error().str();
  EXPECT_EQ(r->diff_id, sha256_of(tar));
  EXPECT_EQ(r->compressed, zst.size());
  expect_simple_layer(dest_);
}

TEST_F(UnpackTest, MultiMemberGzip) {
  std::string tar = make_tar(simple_layer());
  size_t k = tar.size() / 2 + 7;
  std::string gz = compress(tar.substr(0, k), Filter::Gzip) + compress(tar.substr(k, 1000), Filter::Gzip) +
                   compress(tar.substr(k + 1000), Filter::Gzip);
  UnpackOptions o;
  o.diff_id = sha256_of(tar);
  auto r = unpack(gz, o);
  ASSERT_TRUE(r.has_value()) << r.error().str();
  EXPECT_EQ(r->diff_id, sha256_of(tar));
  EXPECT_EQ(r->uncompressed, tar.size());
  expect_simple_layer(dest_);
}

TEST_F(UnpackTest, GzipZeroPaddingIsAcceptedGarbageIsNot) {
  std::string tar = make_tar(simple_layer());
  std::string gz = compress(tar, Filter::Gzip);
  UnpackOptions o;
  o.diff_id = sha256_of(tar);
  auto r = unpack(gz + std::string(9000, '\0'), o);
  ASSERT_TRUE(r.has_value()) << r.error().str();
  expect_simple_layer(dest_);
}

TEST_F(UnpackTest, GzipTrailingGarbageIsRefused) {
  std::string tar = make_tar(simple_layer());
  auto r = unpack(compress(tar, Filter::Gzip) + std::string(100, '\0') + "junk");
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().str().find("garbage after the gzip stream"), std::string::npos) << r.error().str();
}

TEST_F(UnpackTest, DiffIdMismatch) {
  std::string tar = make_tar(simple_layer());
  UnpackOptions o;
  o.diff_id = sha256_of("something else");
  auto r = unpack(compress(tar, Filter::Gzip), o);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().str(), "layer test: diff_id mismatch: expected " + sha256_of("something else").str() +
                                 ", got " + sha256_of(tar).str());
}

TEST_F(UnpackTest, TruncatedGzip) {
  std::vector<Ent> ents;
  std::string noise;
  uint32_t x = 12345;
  for (int i = 0; i < 200000; ++i) noise += static_cast<char>((x = x * 1103515245 + 12345) >> 24);
  ents.push_back(file("noise", noise));
  std::string gz = make_tar(ents, Filter::Gzip);
  auto r = unpack(gz.substr(0, gz.size() / 2));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().str(), "layer test: truncated gzip stream");
  // Cut inside the trailer, after all the data.
  auto r2 = unpack(gz.substr(0, gz.size() - 3));
  ASSERT_FALSE(r2.has_value());
  EXPECT_EQ(r2.error().str(), "layer test: truncated gzip stream");
}

TEST_F(UnpackTest, CorruptGzipAndZstd) {
  std::string gz = make_tar(simple_layer(), Filter::Gzip);
  gz[gz.size() / 2] ^= 0x55;
  gz[gz.size() / 2 + 1] ^= 0x55;
  auto r = unpack(gz);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().str().rfind("layer test: ", 0), 0u) << r.error().str();
  std::string zst = make_tar(simple_layer(), Filter::Zstd);
  auto r2 = unpack(zst.substr(0, zst.size() - 5));
  ASSERT_FALSE(r2.has_value());
  EXPECT_EQ(r2.error().str().rfind("layer test: ", 0), 0u) << r2.error().str();
}

TEST_F(UnpackTest, NotATar) {
  auto r = unpack(std::string(3000, 'z'));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().str().rfind("layer test: read tar: ", 0), 0u) << r.error().str();
}

TEST_F(UnpackTest, GzipBomb) {
  std::string gz = make_tar({}, Filter::Gzip, size_t{300} << 20);
  ASSERT_LT(gz.size(), size_t{2} << 20);
  UnpackOptions o;
  o.ratio_floor = 1 << 20;
  auto r = unpack(gz, o);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().str(), "layer test: expands more than 200 times (a decompression bomb?)");
  struct stat st;
  if (::stat((dest_ + "/big").c_str(), &st) == 0) {
    EXPECT_LT(st.st_size, 100 << 20);
  }
}

TEST_F(UnpackTest, HighRatioBelowFloorIsFine) {
  std::string gz = make_tar({}, Filter::Gzip, size_t{4} << 20);
  auto r = unpack(gz);  // default floor: 1 GiB
  ASSERT_TRUE(r.has_value()) << r.error().str();
  struct stat st;
  ASSERT_EQ(::stat((dest_ + "/big").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 4 << 20);
}

// ---------------------------------------------------------------------------
// Entry types and metadata.

TEST_F(UnpackTest, EntryTypesAndMetadata) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (chown, mknod, security xattrs)";
  // VFS_CAP_REVISION_2 | effective; permitted = CAP_NET_BIND_SERVICE.
  std::string cap("\x01\x00\x00\x02\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", 20);
  Ent root = dir("./", 0750);
  Ent d = dir("opt/app", 0750);
  d.uid = 1000;
  d.gid = 1001;
  d.mtime = 1000000;
  Ent suid = file("opt/app/suid", "#!/bin/sh\n", 04755);
  suid.uid = 1234;
  suid.gid = 5678;
  suid.mtime = 1234567;
  suid.xattrs = {{"user.note", "hello"}};
  Ent ping = file("opt/app/ping", "ELF", 0755);
  ping.xattrs = {{"security.capability", cap}};
  Ent sticky = dir("tmp", 01777);
  Ent link = symlink("opt/app/link", "/etc/passwd");
  link.uid = 7;
  link.gid = 8;
  link.mtime = 2000000;
  Ent hl = hardlink("opt/app/hard", "opt/app/suid");
  Ent null;
  null.name = "dev/null";
  null.type = AE_IFCHR;
  null.perm = 0666;
  null.major = 1;
  null.minor = 3;
  Ent blk;
  blk.name = "dev/loop0";
  blk.type = AE_IFBLK;
  blk.perm = 0660;
  blk.major = 7;
  blk.minor = 0;
  blk.gid = 6;
  Ent fifo;
  fifo.name = "run/fifo";
  fifo.type = AE_IFIFO;
  fifo.perm = 0620;
  auto r = unpack(make_tar({root, d, suid, ping, sticky, link, hl, null, blk, fifo, dir("./opt/app/sub")}));
  ASSERT_TRUE(r.has_value()) << r.error().str();
  EXPECT_EQ(r->entries, 11u);

  struct stat st;
  ASSERT_EQ(::lstat(dest_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0750u);

  ASSERT_EQ(::lstat((dest_ + "/opt/app").c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0750u);
  EXPECT_EQ(st.st_uid, 1000u);
  EXPECT_EQ(st.st_gid, 1001u);
  EXPECT_EQ(st.st_mtim.tv_sec, 1000000);  // set after its children were made

  ASSERT_EQ(::lstat((dest_ + "/opt").c_str(), &st), 0);  // implicit parent
  EXPECT_EQ(st.st_mode & 07777, 0755u);

  const std::string s = dest_ + "/opt/app/suid";
  ASSERT_EQ(::lstat(s.c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 04755u);
  EXPECT_EQ(st.st_uid, 1234u);
  EXPECT_EQ(st.st_gid, 5678u);
  EXPECT_EQ(st.st_mtim.tv_sec, 1234567);
  EXPECT_EQ(st.st_atim.tv_sec, 1234567);
  EXPECT_EQ(st.st_nlink, 2u);
  EXPECT_EQ(slurp(s), "#!/bin/sh\n");
  EXPECT_EQ(get_xattr(s, "user.note"), "hello");

  struct stat hst;
  ASSERT_EQ(::lstat((dest_ + "/opt/app/hard").c_str(), &hst), 0);
  EXPECT_EQ(hst.st_ino, st.st_ino);

  EXPECT_EQ(get_xattr(dest_ + "/opt/app/ping", "security.capability"), cap);

  ASSERT_EQ(::lstat((dest_ + "/tmp").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 01777u);

  const std::string l = dest_ + "/opt/app/link";
  ASSERT_EQ(::lstat(l.c_str(), &st), 0);
  EXPECT_TRUE(S_ISLNK(st.st_mode));
  EXPECT_EQ(fs::read_symlink(l).string(), "/etc/passwd");
  EXPECT_EQ(st.st_uid, 7u);
  EXPECT_EQ(st.st_gid, 8u);
  EXPECT_EQ(st.st_mtim.tv_sec, 2000000);

  ASSERT_EQ(::lstat((dest_ + "/dev/null").c_str(), &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode));
  EXPECT_EQ(st.st_rdev, makedev(1, 3));
  EXPECT_EQ(st.st_mode & 07777, 0666u);
  ASSERT_EQ(::lstat((dest_ + "/dev/loop0").c_str(), &st), 0);
  EXPECT_TRUE(S_ISBLK(st.st_mode));
  EXPECT_EQ(st.st_rdev, makedev(7, 0));
  EXPECT_EQ(st.st_gid, 6u);
  ASSERT_EQ(::lstat((dest_ + "/run/fifo").c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0620u);
  ASSERT_EQ(::lstat((dest_ + "/opt/app/sub").c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
}

TEST_F(UnpackTest, Whiteouts) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (trusted xattrs)";
  auto r = unpack(make_tar({file("gone", "old"), dir("d"), file("d/.wh..wh..opq", ""), file("d/keep", "k"),
                            file(".wh.gone", ""), file("x/.wh.y", ""), file(".wh..wh.plnk", "")}));
  ASSERT_TRUE(r.has_value()) << r.error().str();
  struct stat st;
  ASSERT_EQ(::lstat((dest_ + "/gone").c_str(), &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode));
  EXPECT_EQ(st.st_rdev, makedev(0, 0));
  ASSERT_EQ(::lstat((dest_ + "/x/y").c_str(), &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode));
  EXPECT_EQ(st.st_rdev, makedev(0, 0));
  EXPECT_EQ(get_xattr(dest_ + "/d", "trusted.overlay.opaque"), "y");
  EXPECT_EQ(get_xattr(dest_, "trusted.overlay.opaque"), "<none>");
  EXPECT_EQ(slurp(dest_ + "/d/keep"), "k");
  EXPECT_FALSE(fs::exists(dest_ + "/d/.wh..wh..opq"));
  EXPECT_FALSE(fs::exists(dest_ + "/.wh.gone"));
  EXPECT_FALSE(fs::exists(fs::symlink_status(dest_ + "/.wh..wh.plnk")));
}

TEST_F(UnpackTest, OverlayXattrsFromTarAreDropped) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (trusted xattrs)";
  Ent d = dir("d");
  d.xattrs = {{"trusted.overlay.redirect", "/elsewhere"}, {"trusted.overlay.opaque", "y"}};
  auto r = unpack(make_tar({d}));
  ASSERT_TRUE(r.has_value()) << r.error().str();
  EXPECT_EQ(r->xattrs_skipped, 2u);
  EXPECT_EQ(get_xattr(dest_ + "/d", "trusted.overlay.opaque"), "<none>");
  EXPECT_EQ(get_xattr(dest_ + "/d", "trusted.overlay.redirect"), "<none>");
}

TEST_F(UnpackTest, LaterEntriesReplaceEarlierOnes) {
  auto r = unpack(make_tar({dir("d"), file("d/f", "1"), dir("d/sub"), file("d/sub/g", "2"),
                            file("d", "now a file"),        // a tree replaced by a file
                            file("s", "file"), symlink("s", "d"),  // a file replaced by a symlink
                            symlink("t", "d"), dir("t", 0700),      // a symlink replaced by a directory
                            file("e", "x"), file("e", "y")}));
  ASSERT_TRUE(r.has_value()) << r.error().str();
  EXPECT_EQ(slurp(dest_ + "/d"), "now a file");
  EXPECT_EQ(fs::read_symlink(dest_ + "/s").string(), "d");
  EXPECT_TRUE(fs::is_directory(fs::symlink_status(dest_ + "/t")));
  EXPECT_EQ(slurp(dest_ + "/e"), "y");
}

TEST_F(UnpackTest, HardlinkToItsOwnLayerOnly) {
  auto r = unpack(make_tar({file("a", "A"), hardlink("./b", "./a")}));
  ASSERT_TRUE(r.has_value()) << r.error().str();
  EXPECT_EQ(fs::equivalent(dest_ + "/a", dest_ + "/b"), true);
}

TEST_F(UnpackTest, SparseFileKeepsHoles) {
  // A 64 MiB file with 4 KiB of data at 1 MiB: GNU.sparse pax records.
  std::string out;
  struct archive* a = archive_write_new();
  archive_write_set_format_pax(a);
  open_writer(a, &out);
  struct archive_entry* e = archive_entry_new();
  archive_entry_set_pathname(e, "sparse");
  archive_entry_set_filetype(e, AE_IFREG);
  archive_entry_set_perm(e, 0644);
  archive_entry_set_size(e, 64 << 20);
  archive_entry_sparse_add_entry(e, 1 << 20, 4096);
  ASSERT_GE(archive_write_header(a, e), ARCHIVE_WARN) << archive_error_string(a);
  // The writer takes the logical contents and keeps the mapped regions only.
  std::string data(4096, 'D');
  std::string logical = std::string(1 << 20, '\0') + data;
  archive_write_data(a, logical.data(), logical.size());
  archive_entry_free(e);
  archive_write_close(a);
  archive_write_free(a);
  ASSERT_LT(out.size(), size_t{1} << 20);

  auto r = unpack(out);
  ASSERT_TRUE(r.has_value()) << r.error().str();
  struct stat st;
  ASSERT_EQ(::stat((dest_ + "/sparse").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 64 << 20);
  EXPECT_LT(st.st_blocks * 512, 1 << 20);  // holes stayed holes
  std::string all = slurp(dest_ + "/sparse");
  EXPECT_EQ(all.substr(1 << 20, 4096), data);
  EXPECT_EQ(all.find_first_not_of('\0'), size_t{1} << 20);
}

// ---------------------------------------------------------------------------
// Hostile layers.

TEST_F(UnpackTest, RefusesAbsoluteName) { expect_refused({file("/outside/x", "pwn")}, "/outside/x"); }

TEST_F(UnpackTest, RefusesDotDot) {
  expect_refused({file("../outside/x", "pwn")}, "../outside/x");
  expect_refused({dir("a"), file("a/../../outside/x", "pwn")}, "a/../../outside/x");
}

TEST_F(UnpackTest, RefusesEntryBeneathRelativeSymlink) {
  expect_refused({symlink("a", "../outside"), file("a/x", "pwn")}, "entry a/x goes through a symlink");
}

TEST_F(UnpackTest, RefusesEntryBeneathAbsoluteSymlink) {
  expect_refused({symlink("b", tmp_ + "/outside"), file("b/x", "pwn")}, "entry b/x goes through a symlink");
  expect_refused({symlink("c", "/outside"), dir("c/sub/deeper")}, "entry c/sub/deeper/ goes through a symlink");
}

TEST_F(UnpackTest, RefusesHardlinkOutside) {
  expect_refused({hardlink("h", "../outside/sentinel")}, "hardlink h -> ../outside/sentinel points outside the layer");
  expect_refused({hardlink("p", "/etc/passwd")}, "hardlink p -> /etc/passwd points outside the layer");
  // A name this layer wrote, then turned into a symlink: no longer a file of ours.
  expect_refused({file("f", "x"), symlink("f", "../outside/sentinel"), hardlink("g", "f")},
                 "hardlink g -> f points outside the layer");
  // Through a symlinked directory.
  expect_refused({dir("d"), file("d/f", "x"), symlink("l", "d"), hardlink("g", "l/f")},
                 "hardlink g -> l/f points outside the layer");
}

TEST_F(UnpackTest, SetuidFileReplacesSymlinkInsteadOfFollowingIt) {
  auto r = unpack(make_tar({symlink("s", "../outside/sentinel"), file("s", "mine", 04755),
                            symlink("t", tmp_ + "/outside/sentinel"), dir("t", 04755)}));
  ASSERT_TRUE(r.has_value()) << r.error().str();
  struct stat st;
  ASSERT_EQ(::lstat((dest_ + "/s").c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 04755u);
  EXPECT_EQ(slurp(dest_ + "/s"), "mine");
  ASSERT_EQ(::lstat((dest_ + "/t").c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  expect_outside_unchanged();
}

TEST_F(UnpackTest, RefusesWhiteoutBeneathSymlink) {
  expect_refused({symlink("w", "../outside"), file("w/.wh.sentinel", "")}, "entry w/.wh.sentinel goes through a symlink");
  expect_refused({symlink("v", "../outside"), file("v/.wh..wh..opq", "")}, "entry v/.wh..wh..opq goes through a symlink");
}

TEST_F(UnpackTest, ErrorNamesAreOneLine) {
  auto r = unpack(make_tar({file("../evil\nname", "x")}));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().str().find('\n'), std::string::npos);
  EXPECT_NE(r.error().str().find("evil\\x0aname"), std::string::npos) << r.error().str();
}

}  // namespace
}  // namespace berth::image
