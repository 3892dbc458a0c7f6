// Trees for the image tests: tars written entry by entry (every entry type,
// xattrs, long names, hardlinks) and snapshots of a mounted or extracted tree
// (type, mode, owner, mtime, size, xattrs, link target, device, inode,
// content hash) to compare.
#pragma once

#include <archive.h>
#include <archive_entry.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "image/digest.h"
#include "image/erofs.h"
#include "util/fs.h"

namespace berth::image::test {

namespace fs = std::filesystem;

struct Entry {
  std::string path;
  mode_t type = AE_IFREG;
  mode_t perm = 0644;
  std::string content;  // regular files
  std::string link;     // symlink target
  std::string hardlink;
  int64_t uid = 0, gid = 0;
  int64_t mtime = 1700000000;
  long nsec = 0;
  unsigned major = 0, minor = 0;
  std::vector<std::pair<std::string, std::string>> xattrs;
};

inline Entry dir(std::string p, mode_t perm = 0755) { return Entry{.path = std::move(p), .type = AE_IFDIR, .perm = perm}; }
inline Entry file(std::string p, std::string content) { return Entry{.path = std::move(p), .content = std::move(content)}; }

// A tar of `entries` in pax (xattrs, nanoseconds, long names) or GNU format.
inline void write_tar(const std::string& path, const std::vector<Entry>& entries, bool gnu = false) {
  struct archive* a = archive_write_new();
  ASSERT_EQ(gnu ? archive_write_set_format_gnutar(a) : archive_write_set_format_pax(a), ARCHIVE_OK);
  ASSERT_EQ(archive_write_open_filename(a, path.c_str()), ARCHIVE_OK);
  for (auto& en : entries) {
    struct archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, en.path.c_str());
    archive_entry_set_uid(e, en.uid);
    archive_entry_set_gid(e, en.gid);
    archive_entry_set_mtime(e, en.mtime, en.nsec);
    if (!en.hardlink.empty()) {
      archive_entry_set_hardlink(e, en.hardlink.c_str());
    } else {
      archive_entry_set_filetype(e, en.type);
      archive_entry_set_perm(e, en.perm);
      if (en.type == AE_IFLNK) archive_entry_set_symlink(e, en.link.c_str());
      if (en.type == AE_IFCHR || en.type == AE_IFBLK) archive_entry_set_rdev(e, makedev(en.major, en.minor));
      archive_entry_set_size(e, en.type == AE_IFREG ? static_cast<la_int64_t>(en.content.size()) : 0);
    }
    for (auto& [n, v] : en.xattrs) archive_entry_xattr_add_entry(e, n.c_str(), v.data(), v.size());
    ASSERT_EQ(archive_write_header(a, e), ARCHIVE_OK) << en.path << ": " << archive_error_string(a);
    if (!en.content.empty()) {
      ASSERT_EQ(archive_write_data(a, en.content.data(), en.content.size()), static_cast<la_ssize_t>(en.content.size()));
    }
    archive_entry_free(e);
  }
  ASSERT_EQ(archive_write_close(a), ARCHIVE_OK);
  archive_write_free(a);
}

inline uint64_t file_size(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
}

// What a test compares of one path.
struct Info {
  mode_t mode = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  int64_t mtime = 0;
  long mtime_ns = 0;
  uint64_t size = 0;
  nlink_t nlink = 0;
  dev_t rdev = 0;
  ino_t ino = 0;
  std::string link, sha256;
  std::map<std::string, std::string> xattrs;

  std::string str() const {
    std::string s = "mode " + std::to_string(mode) + " uid " + std::to_string(uid) + " gid " + std::to_string(gid) +
                    " mtime " + std::to_string(mtime) + "." + std::to_string(mtime_ns) + " size " + std::to_string(size) +
                    " rdev " + std::to_string(rdev) + " link " + link + " sha " + sha256 + " xattrs";
    for (auto& [k, v] : xattrs) s += " " + k + "(" + std::to_string(v.size()) + ")";
    return s;
  }
};

inline std::map<std::string, std::string> xattrs_of(const std::string& p) {
  std::map<std::string, std::string> out;
  char names[65536];
  ssize_t n = ::llistxattr(p.c_str(), names, sizeof names);
  for (ssize_t i = 0; i < n; i += static_cast<ssize_t>(std::strlen(names + i)) + 1) {
    std::string v(65536, '\0');
    ssize_t l = ::lgetxattr(p.c_str(), names + i, v.data(), v.size());
    v.resize(l < 0 ? 0 : static_cast<size_t>(l));
    out[names + i] = v;
  }
  return out;
}

inline Info info_of(const std::string& p) {
  struct stat st;
  EXPECT_EQ(::lstat(p.c_str(), &st), 0) << p;
  Info i;
  i.mode = st.st_mode;
  i.uid = st.st_uid;
  i.gid = st.st_gid;
  i.mtime = st.st_mtim.tv_sec;
  i.mtime_ns = st.st_mtim.tv_nsec;
  i.nlink = st.st_nlink;
  i.ino = st.st_ino;
  i.xattrs = xattrs_of(p);
  if (S_ISREG(st.st_mode)) {
    i.size = static_cast<uint64_t>(st.st_size);
    auto data = read_file(p);
    EXPECT_TRUE(data) << p;
    if (data) i.sha256 = sha256_of(*data).str();
  } else if (S_ISLNK(st.st_mode)) {
    i.size = static_cast<uint64_t>(st.st_size);
    i.link = fs::read_symlink(p).string();
  } else if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) {
    i.rdev = st.st_rdev;
  }
  return i;
}

// Every path beneath `root` (not root itself), relative.
inline std::map<std::string, Info> snapshot(const std::string& root) {
  std::map<std::string, Info> out;
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator(); ++it)
    out[it->path().lexically_relative(root).string()] = info_of(it->path().string());
  return out;
}

// Paths grouped by inode: the hardlink groups of regular files.
inline std::set<std::set<std::string>> link_groups(const std::map<std::string, Info>& t) {
  std::map<ino_t, std::set<std::string>> by;
  for (auto& [p, i] : t)
    if (S_ISREG(i.mode)) by[i.ino].insert(p);
  std::set<std::set<std::string>> out;
  for (auto& [ino, g] : by) out.insert(g);
  return out;
}

inline std::string repeat(const std::string& s, int n) {
  std::string out;
  while (n--) out += s;
  return out;
}

inline std::string random_bytes(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

// Every entry type, owners beyond 16 bits, odd modes, xattrs of each
// namespace, long names, hardlinks across directories, nanosecond times,
// directories of many blocks, a file of many chunks.
inline std::vector<Entry> everything() {
  // security.capability v2: CAP_NET_BIND_SERVICE permitted and effective.
  std::string cap("\x01\x00\x00\x02\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", 20);
  std::vector<Entry> v = {
      dir("./"),
      dir("bin"),
      file("bin/big", random_bytes(1 << 20 | 123, 1)),
      Entry{.path = "bin/sh", .type = AE_IFLNK, .perm = 0777, .link = "big"},
      Entry{.path = "bin/ls", .hardlink = "bin/big"},
      dir("usr"),
      dir("usr/bin"),
      Entry{.path = "usr/bin/ls2", .hardlink = "bin/big"},
      Entry{.path = "usr/bin/far", .type = AE_IFLNK, .perm = 0777, .link = repeat("d/", 350)},
      file("empty", ""),
      file("small", "hello\n"),
      file("exact512", std::string(512, 'e')),
      Entry{.path = "nsec", .content = "t", .mtime = 1600000000, .nsec = 123456789},
      Entry{.path = "old", .content = "o", .mtime = 5},
      Entry{.path = "owned", .content = "x", .uid = 100000, .gid = 4000000000},
      Entry{.path = "suid", .perm = 04755, .content = "#!/bin/sh\n"},
      Entry{.path = "sgid", .type = AE_IFDIR, .perm = 02775, .gid = 50},
      Entry{.path = "tmp", .type = AE_IFDIR, .perm = 01777},
      dir("dev"),
      Entry{.path = "dev/null", .type = AE_IFCHR, .perm = 0666, .major = 1, .minor = 3},
      Entry{.path = "dev/sda1", .type = AE_IFBLK, .perm = 0660, .gid = 6, .major = 8, .minor = 1},
      Entry{.path = "dev/odd", .type = AE_IFCHR, .perm = 0600, .major = 300, .minor = 70000},
      Entry{.path = "fifo", .type = AE_IFIFO, .perm = 0640},
      Entry{.path = "caps", .perm = 0755, .content = "bin", .xattrs = {{"security.capability", cap}, {"user.k", "v"}, {"trusted.t", std::string("\0\1\2", 3)}}},
      Entry{.path = "xdir", .type = AE_IFDIR, .perm = 0700, .xattrs = {{"user.dir", std::string(300, 'x')}}},
      Entry{.path = "bigx", .content = "y", .xattrs = {{"user.large", std::string(3000, 'z')}, {"user.b", ""}}},
      dir(std::string(255, 'a')),
      file(std::string(255, 'a') + "/" + std::string(200, 'b'), "long"),
      dir("many"),
  };
  for (int i = 0; i < 150; ++i) v.push_back(file("many/file-with-a-longish-name-" + std::to_string(i), std::to_string(i)));
  v.push_back(file("many/!first", "sorts before ."));
  return v;
}

// Every path of `want` is in `got` with the same type, mode, owner, mtime,
// size, xattrs, link target, device and content; nothing more is in `got`;
// the hardlink groups are the same.
inline void expect_same_snapshots(const std::map<std::string, Info>& want, const std::map<std::string, Info>& got,
                                  const std::string& got_name) {
  for (auto& [p, w] : want) {
    auto it = got.find(p);
    if (it == got.end()) {
      ADD_FAILURE() << "missing from " << got_name << ": " << p;
      continue;
    }
    Info g = it->second, x = w;
    // Directory link counts are each filesystem's own.
    if (S_ISDIR(x.mode)) g.nlink = x.nlink = 0;
    EXPECT_EQ(g.str(), x.str()) << p;
    EXPECT_EQ(g.nlink, x.nlink) << p;
    EXPECT_EQ(g.xattrs, x.xattrs) << p;
  }
  for (auto& [p, g] : got)
    if (!want.count(p)) ADD_FAILURE() << "only in " << got_name << ": " << p;
  EXPECT_EQ(link_groups(got), link_groups(want));
}

// A layer directory of the store is whole: an EROFS layer's metadata passes
// the checker against its tar (no chunk outside it), its size file names the
// tar's size; a dir layer has its diff/.
inline void expect_whole_layer(const std::string& dir) {
  if (fs::exists(dir + "/layer.erofs")) {
    auto tar = fs::file_size(dir + "/layer.tar");
    auto ok = erofs_check(dir + "/layer.erofs", tar);
    EXPECT_TRUE(ok) << dir << ": " << ok.error().str();
    EXPECT_EQ(read_file(dir + "/size").value_or(""), std::to_string(tar)) << dir;
  } else {
    EXPECT_TRUE(fs::is_directory(dir + "/diff")) << dir;
    EXPECT_TRUE(fs::exists(dir + "/size")) << dir;
  }
}

}  // namespace berth::image::test
