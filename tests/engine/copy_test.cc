// `berth cp`, `diff` and `export` end to end as root, against the busybox
// template: what lands where (Docker's naming rules), owners, tar streams both
// ways, and that no symlink or tar entry in a container reaches a host file.
// Each test has its own --root and --runroot; TearDown removes its containers
// and checks that no mount is left.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <map>

#include "berth_run.h"
#include "util/fs.h"

namespace berth {
namespace {

namespace fs = std::filesystem;

// ------------------------------------------------------------ tar helpers --

// A ustar entry: type '0' file, '2' symlink, '5' directory.
std::string tar_entry(const std::string& name, char type, const std::string& data = "", const std::string& link = "") {
  std::string h(512, '\0');
  auto put = [&](size_t off, size_t len, const std::string& v) {
    h.replace(off, std::min(len, v.size()), v.substr(0, len));
  };
  auto octal = [](uint64_t v, int width) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%0*llo", width, static_cast<unsigned long long>(v));
    return std::string(buf);
  };
  put(0, 100, name);
  put(100, 8, octal(type == '5' ? 0755 : 0644, 7));
  put(108, 8, octal(1234, 7));
  put(116, 8, octal(1234, 7));
  put(124, 12, octal(data.size(), 11));
  put(136, 12, octal(1700000000, 11));
  h[156] = type;
  put(157, 100, link);
  put(257, 6, std::string("ustar\0", 6));
  put(263, 2, "00");
  put(148, 8, "        ");
  unsigned sum = 0;
  for (unsigned char c : h) sum += c;
  put(148, 8, octal(sum, 6) + std::string("\0 ", 2));
  std::string body = data;
  body.resize((data.size() + 511) / 512 * 512, '\0');
  return h + body;
}
std::string tar_end() { return std::string(1024, '\0'); }

// Name -> content of a tar's entries (ustar names, pax "path" records).
std::map<std::string, std::string> tar_files(const std::string& t) {
  std::map<std::string, std::string> out;
  std::string next_path;
  for (size_t off = 0; off + 512 <= t.size();) {
    std::string_view h(t.data() + off, 512);
    if (h.find_first_not_of('\0') == std::string_view::npos) break;
    auto field = [&](size_t o, size_t len) {
      return std::string(h.substr(o, len).substr(0, h.substr(o, len).find('\0')));
    };
    uint64_t size = std::strtoull(field(124, 12).c_str(), nullptr, 8);
    std::string data = t.substr(off + 512, size);
    off += 512 + (size + 511) / 512 * 512;
    if (h[156] == 'x') {
      for (auto& rec : split(data, '\n'))
        if (auto p = rec.find(" path="); p != std::string::npos) next_path = rec.substr(p + 6);
      continue;
    }
    std::string name = field(345, 155).empty() ? field(0, 100) : field(345, 155) + "/" + field(0, 100);
    if (!next_path.empty()) name = std::exchange(next_path, "");
    out[name] = data;
  }
  return out;
}

// ---------------------------------------------------------------- fixture --

class CopyTest : public test::BerthFixture {
 protected:
  CopyTest() : BerthFixture("copy") {}
  void SetUp() override {
    BerthFixture::SetUp();
    if (dir_.empty()) return;
    host_ = dir_ + "/host";
    ASSERT_TRUE(mkdir_p(host_));
  }

  // A running busybox container named `name` (sleeping), after `setup` ran in it.
  void start(const std::string& name, const std::string& setup = "true") {
    auto r = berth({"run", "-d", "--name", name, "busybox", "sleep", "3600"});
    ASSERT_EQ(r.code, 0) << r.err;
    sh(name, setup);
  }
  // A shell command in the container; its stdout.
  std::string sh(const std::string& name, const std::string& cmd) {
    auto r = berth({"exec", name, "sh", "-c", cmd});
    EXPECT_EQ(r.code, 0) << cmd << ": " << r.err;
    return r.out;
  }
  void write(const std::string& path, const std::string& data) { ASSERT_TRUE(atomic_write_file(path, data, 0644)); }
  std::string read(const std::string& path) { return read_file(path).value_or("<missing>"); }

  std::string host_;
};

// ------------------------------------------------------------------ tests --

TEST_F(CopyTest, CopiesOutUnderDockersNames) {
  start("c", "mkdir -p /data/sub && echo top > /data/top && echo deep > /data/sub/f && chown 7:8 /data/top");
  // A file to a new name, and into an existing directory.
  auto r = berth({"cp", "c:/etc/passwd", host_ + "/passwd"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(read(host_ + "/passwd"), sh("c", "cat /etc/passwd"));
  EXPECT_NE(read(host_ + "/passwd").find("root:"), std::string::npos);
  // /etc/hosts as the container sees it (the engine's bind mount), not the mount point beneath.
  ASSERT_EQ(berth({"cp", "c:/etc/hosts", host_ + "/hosts"}).code, 0);
  EXPECT_EQ(read(host_ + "/hosts"), sh("c", "cat /etc/hosts"));
  EXPECT_NE(read(host_ + "/hosts").find("localhost"), std::string::npos);
  ASSERT_TRUE(mkdir_p(host_ + "/into"));
  ASSERT_EQ(berth({"container", "cp", "c:/data/top", host_ + "/into"}).code, 0);
  EXPECT_EQ(read(host_ + "/into/top"), "top\n");
  // Copied out: owned by the caller, not by the container's 7:8.
  struct stat st;
  ASSERT_EQ(::stat((host_ + "/into/top").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 0u);
  // A directory to a new name, into an existing directory, and its contents ("/.").
  ASSERT_EQ(berth({"cp", "c:/data", host_ + "/new"}).code, 0);
  EXPECT_EQ(read(host_ + "/new/sub/f"), "deep\n");
  ASSERT_EQ(berth({"cp", "c:/data", host_ + "/into/"}).code, 0);
  EXPECT_EQ(read(host_ + "/into/data/sub/f"), "deep\n");
  ASSERT_TRUE(mkdir_p(host_ + "/contents"));
  ASSERT_EQ(berth({"cp", "c:/data/.", host_ + "/contents"}).code, 0);
  EXPECT_EQ(read(host_ + "/contents/top"), "top\n");
  EXPECT_EQ(read(host_ + "/contents/sub/f"), "deep\n");
  // A file over an existing file replaces it; a directory over a file is refused.
  write(host_ + "/old", "old");
  ASSERT_EQ(berth({"cp", "c:/data/top", host_ + "/old"}).code, 0);
  EXPECT_EQ(read(host_ + "/old"), "top\n");
  r = berth({"cp", "c:/data", host_ + "/old"});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("cannot copy a directory to a file"), std::string::npos) << r.err;
  // Errors, one line each.
  r = berth({"cp", "c:/nope", host_ + "/x"});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "berth: no such file in container c: /nope\n");
  r = berth({"cp", "c:/data/top", host_ + "/missing/dir/x"});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("does not exist"), std::string::npos) << r.err;
  r = berth({"cp", "nosuch:/etc/passwd", host_ + "/x"});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("no such container"), std::string::npos) << r.err;
  EXPECT_EQ(berth({"cp", host_ + "/a", host_ + "/b"}).code, 125);
  EXPECT_EQ(berth({"cp", "c:/a", "c:/b"}).code, 125);
  EXPECT_EQ(berth({"cp", "c:/a"}).code, 125);
}

TEST_F(CopyTest, CopiesInOwnedByRootUnlessArchive) {
  start("c");
  ASSERT_TRUE(mkdir_p(host_ + "/dir/sub"));
  write(host_ + "/dir/a", "alpha");
  write(host_ + "/dir/sub/b", "beta");
  ASSERT_EQ(::symlink("a", (host_ + "/dir/link").c_str()), 0);
  ASSERT_EQ(::link((host_ + "/dir/a").c_str(), (host_ + "/dir/hard").c_str()), 0);
  ASSERT_EQ(::chmod((host_ + "/dir/a").c_str(), 0751), 0);
  for (auto* p : {"/dir", "/dir/a", "/dir/sub", "/dir/sub/b"}) ASSERT_EQ(::lchown((host_ + p).c_str(), 1234, 4321), 0);
  // Into an existing directory: /tmp/dir.
  auto r = berth({"cp", host_ + "/dir", "c:/tmp/"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(sh("c", "cat /tmp/dir/a /tmp/dir/sub/b /tmp/dir/link"), "alphabetaalpha");
  EXPECT_EQ(sh("c", "stat -c '%u:%g %a' /tmp/dir/a /tmp/dir/sub/b /tmp/dir"), "0:0 751\n0:0 644\n0:0 755\n");
  EXPECT_EQ(sh("c", "stat -c %h /tmp/dir/a; readlink /tmp/dir/link"), "2\na\n");
  // -a keeps the owners; a missing target takes the source's place under its own name.
  r = berth({"cp", "-a", host_ + "/dir", "c:/kept"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(sh("c", "stat -c '%u:%g' /kept/a /kept/sub/b /kept"), "1234:4321\n1234:4321\n1234:4321\n");
  // A file to a new name, and over an existing file; the contents of a directory ("/.").
  ASSERT_EQ(berth({"cp", host_ + "/dir/a", "c:/etc/motd2"}).code, 0);
  ASSERT_EQ(berth({"cp", host_ + "/dir/sub/b", "c:/etc/motd2"}).code, 0);
  EXPECT_EQ(sh("c", "cat /etc/motd2"), "beta");
  ASSERT_EQ(berth({"cp", host_ + "/dir/sub/.", "c:/root"}).code, 0);
  EXPECT_EQ(sh("c", "cat /root/b"), "beta");
  // The container sees it at once (same overlay), and `diff` lists it.
  EXPECT_NE(berth({"diff", "c"}).out.find("A /tmp/dir/sub/b\n"), std::string::npos);
  // Errors.
  r = berth({"cp", host_ + "/nope", "c:/tmp"});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("No such file or directory"), std::string::npos) << r.err;
  r = berth({"cp", host_ + "/dir/a", "c:/no/such/dir"});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "berth: no such directory in container c: /no/such\n");
  r = berth({"cp", host_ + "/dir", "c:/etc/passwd"});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("cannot copy a directory to a file"), std::string::npos) << r.err;
}

TEST_F(CopyTest, SymlinksInTheContainerNeverReachTheHost) {
  // A host file, and the container's own file at the same path.
  std::string secret = dir_ + "/secret";
  write(secret, "host secret\n");
  start("c", "mkdir -p " + dir_ + " && echo container secret > " + secret + " && ln -s /../../../../.." + secret +
                 " /link-abs && ln -s ../../../../../../.." + secret + " /link-rel && ln -s " + dir_ +
                 " /evil && ln -s ../../../../.. /up");
  // -L follows the link, in the container's root.
  auto r = berth({"cp", "-L", "c:/link-abs", host_ + "/abs"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(read(host_ + "/abs"), "container secret\n");
  ASSERT_EQ(berth({"cp", "-L", "c:/link-rel", host_ + "/rel"}).code, 0);
  EXPECT_EQ(read(host_ + "/rel"), "container secret\n");
  ASSERT_EQ(berth({"cp", "c:/up/" + secret.substr(1), host_ + "/through"}).code, 0);
  EXPECT_EQ(read(host_ + "/through"), "container secret\n");
  ASSERT_EQ(berth({"cp", "c:/evil/secret", host_ + "/evil"}).code, 0);
  EXPECT_EQ(read(host_ + "/evil"), "container secret\n");
  // Without -L the link itself is copied.
  ASSERT_EQ(berth({"cp", "c:/link-abs", host_ + "/link"}).code, 0);
  EXPECT_TRUE(fs::is_symlink(host_ + "/link"));
  // Copied in through the links: the container's directory gets it, the host's does not.
  write(host_ + "/payload", "payload\n");
  ASSERT_EQ(berth({"cp", host_ + "/payload", "c:/evil/"}).code, 0);
  ASSERT_EQ(berth({"cp", host_ + "/payload", "c:/up/" + dir_.substr(1) + "/payload2"}).code, 0);
  EXPECT_FALSE(fs::exists(dir_ + "/payload"));
  EXPECT_FALSE(fs::exists(dir_ + "/payload2"));
  EXPECT_EQ(sh("c", "cat " + dir_ + "/payload " + dir_ + "/payload2"), "payload\npayload\n");
  // A file copied over a link replaces what the link names, in the container.
  ASSERT_EQ(berth({"cp", host_ + "/payload", "c:/link-abs"}).code, 0);
  EXPECT_EQ(read(secret), "host secret\n");
  EXPECT_EQ(sh("c", "cat " + secret), "payload\n");
  EXPECT_EQ(read(secret), "host secret\n");
}

TEST_F(CopyTest, HostileTarStreamsAreRefused) {
  start("c", "mkdir -p /dest && ln -s " + dir_ + " /dest/out");
  auto try_tar = [&](const std::string& tar) {
    write(dir_ + "/in.tar", tar);
    return berth({"cp", "-", "c:/dest"}, dir_ + "/in.tar");
  };
  // ".." and a name through a symlink (planted by the container, or by the stream itself).
  auto r = try_tar(tar_entry("../../../../../../.." + dir_ + "/dotdot", '0', "x") + tar_end());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("\"..\""), std::string::npos) << r.err;
  r = try_tar(tar_entry("out/through", '0', "x") + tar_end());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("symlink"), std::string::npos) << r.err;
  r = try_tar(tar_entry("l", '2', "", dir_) + tar_entry("l/x", '0', "x") + tar_end());
  EXPECT_EQ(r.code, 1);
  // A hardlink to a file outside the stream; a symlink entry replaces (not writes through) one in place.
  r = try_tar(tar_entry("h", '1', "", "/etc/shadow") + tar_end());
  EXPECT_EQ(r.code, 1);
  r = try_tar(tar_entry("out", '0', "replaced\n") + tar_end());
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(sh("c", "cat /dest/out"), "replaced\n");
  // An absolute name lands inside the destination.
  r = try_tar(tar_entry(dir_ + "/abs", '0', "abs\n") + tar_end());
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(sh("c", "cat /dest" + dir_ + "/abs"), "abs\n");
  for (auto* f : {"/dotdot", "/through", "/x", "/abs", "/out"}) EXPECT_FALSE(fs::exists(dir_ + f)) << f;
  // The destination of `cp -` must be a directory.
  r = try_tar(tar_end());
  EXPECT_EQ(r.code, 0) << r.err;
  write(dir_ + "/in.tar", tar_end());
  r = berth({"cp", "-", "c:/etc/passwd"}, dir_ + "/in.tar");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("must be a directory"), std::string::npos) << r.err;
}

TEST_F(CopyTest, TarStreamsBothWays) {
  start("c");
  auto r = berth({"cp", "c:/etc/passwd", "-"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto files = tar_files(r.out);
  ASSERT_EQ(files.count("passwd"), 1u) << r.out.size();
  EXPECT_EQ(files["passwd"], sh("c", "cat /etc/passwd"));
  r = berth({"cp", "c:/etc", "-"});
  ASSERT_EQ(r.code, 0) << r.err;
  files = tar_files(r.out);
  EXPECT_EQ(files.count("etc/"), 1u);
  EXPECT_EQ(files.count("etc/group"), 1u);
  // In from stdin: owned by root, or as in the stream with -a.
  write(dir_ + "/in.tar", tar_entry("fromstdin/", '5') + tar_entry("fromstdin/x", '0', "hello\n") + tar_end());
  r = berth({"cp", "-", "c:/tmp"}, dir_ + "/in.tar");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(sh("c", "cat /tmp/fromstdin/x; stat -c %u:%g /tmp/fromstdin/x"), "hello\n0:0\n");
  r = berth({"cp", "-a", "-", "c:/root"}, dir_ + "/in.tar");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(sh("c", "stat -c %u:%g /root/fromstdin/x /root/fromstdin"), "1234:1234\n1234:1234\n");
}

TEST_F(CopyTest, DiffListsAddedChangedDeleted) {
  start("c");
  // The engine's mount points (/etc/hosts, /etc/resolv.conf) are not changes.
  auto r = berth({"diff", "c"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "");
  sh("c",
     "echo new > /newfile && echo x > /etc/newconf && rm /bin/ls && mkdir -p /a/b && touch /a/b/c && chmod 700 /home");
  r = berth({"diff", "c"});
  ASSERT_EQ(r.code, 0) << r.err;
  for (auto* line : {"A /newfile\n", "C /etc\n", "A /etc/newconf\n", "C /bin\n", "D /bin/ls\n", "A /a\n", "A /a/b\n",
                     "A /a/b/c\n", "C /home\n"})
    EXPECT_NE(r.out.find(line), std::string::npos) << line << " not in\n" << r.out;
  // Parents first, names in order.
  EXPECT_LT(r.out.find("A /a\n"), r.out.find("A /a/b/c\n"));
  EXPECT_LT(r.out.find("C /bin\n"), r.out.find("C /etc\n"));
  EXPECT_EQ(berth({"container", "diff", "c"}).out, r.out);
  EXPECT_EQ(berth({"diff", "nosuch"}).code, 1);
}

TEST_F(CopyTest, ExportHasTheWholeRootfs) {
  start("c", "echo mine > /mine");
  std::string out = dir_ + "/export.tar";
  auto r = berth({"export", "-o", out, "c"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto files = tar_files(read(out));
  EXPECT_EQ(files.count("bin/busybox"), 1u);
  EXPECT_GT(files["bin/busybox"].size(), 100000u);
  EXPECT_EQ(files["mine"], "mine\n");
  EXPECT_EQ(files.count("etc/passwd"), 1u);
  r = berth({"container", "export", "c"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(tar_files(r.out).count("bin/busybox"), 1u);
}

// A stopped container's rootfs that is not mounted (after a reboot; or an
// `--rm` container whose removal was cut short, whose monitor unmounts it as
// the removal begins) is mounted again for cp and export, as Docker's daemon
// mounts a stopped container's for them.
TEST_F(CopyTest, AStoppedContainersUnmountedRootfsIsMountedAgain) {
  auto r = berth({"run", "--name", "c", "busybox", "sh", "-c", "echo mine > /mine"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto id = berth({"inspect", "-f", "{{.Id}}", "c"});
  ASSERT_EQ(id.code, 0) << id.err;
  std::string rootfs = root_ + "/containers/" + id.out.substr(0, id.out.find('\n')) + "/rootfs";
  ASSERT_TRUE(is_mount_root(rootfs));
  ASSERT_EQ(::umount2(rootfs.c_str(), MNT_DETACH), 0);
  r = berth({"cp", "c:/mine", host_ + "/mine"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(read(host_ + "/mine"), "mine\n");
  EXPECT_TRUE(is_mount_root(rootfs));
  ASSERT_EQ(::umount2(rootfs.c_str(), MNT_DETACH), 0);
  r = berth({"export", "-o", host_ + "/x.tar", "c"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(tar_files(read(host_ + "/x.tar"))["mine"], "mine\n");
  EXPECT_TRUE(is_mount_root(rootfs));
  // diff reads the upper dir: no mount needed.
  ASSERT_EQ(::umount2(rootfs.c_str(), MNT_DETACH), 0);
  r = berth({"diff", "c"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("A /mine"), std::string::npos) << r.out;
  EXPECT_FALSE(is_mount_root(rootfs));
  // And it starts again on it.
  r = berth({"start", "-a", "c"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(berth({"rm", "c"}).code, 0);
  EXPECT_FALSE(is_mount_root(rootfs));
}

// A rootfs that cannot be mounted again (its upper directory gone) is a
// one-line error naming it, and export leaves no file.
TEST_F(CopyTest, ARootfsThatCannotBeMountedIsAClearError) {
  auto r = berth({"create", "--name", "c", "busybox", "true"});
  ASSERT_EQ(r.code, 0) << r.err;
  std::string dir = root_ + "/containers/" + r.out.substr(0, r.out.find('\n'));
  ASSERT_EQ(::umount2((dir + "/rootfs").c_str(), MNT_DETACH), 0);
  ASSERT_EQ(::rmdir((dir + "/upper").c_str()), 0);
  r = berth({"export", "-o", host_ + "/x.tar", "c"});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find(dir + "/upper"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_FALSE(fs::exists(host_ + "/x.tar"));
  r = berth({"cp", "c:/etc/passwd", host_ + "/passwd"});
  EXPECT_EQ(r.code, 1);
  EXPECT_FALSE(fs::exists(host_ + "/passwd"));
  // Removable as it is.
  EXPECT_EQ(berth({"rm", "c"}).code, 0);
}

TEST_F(CopyTest, ReadOnlyContainersTakeNoFiles) {
  ASSERT_EQ(berth({"run", "-d", "--name", "ro", "--read-only", "busybox", "sleep", "60"}).code, 0);
  ASSERT_TRUE(atomic_write_file(host_ + "/f", "x\n", 0644));
  auto r = berth({"cp", host_ + "/f", "ro:/tmp/f"});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("read-only"), std::string::npos) << r.err;
  EXPECT_NE(berth({"exec", "ro", "test", "-e", "/tmp/f"}).code, 0);
  // Copying out is fine.
  EXPECT_EQ(berth({"cp", "ro:/etc/passwd", host_ + "/passwd"}).code, 0);
}

}  // namespace
}  // namespace berth

namespace berth {
namespace {

// cp sees what the container sees at its volumes and binds (Docker does): files
// out of and into a named volume and a directory bind, a bound file read as
// mounted, a read-only bind refused, and a symlink in a volume kept inside it.
TEST_F(CopyTest, VolumesAndBindsAreSeen) {
  ASSERT_TRUE(mkdir_p(host_ + "/bind"));
  write(host_ + "/bind/b.txt", "from the bind\n");
  write(host_ + "/app.conf", "bound file\n");
  write(host_ + "/secret", "host secret\n");
  auto r = berth({"run", "-d", "--name", "v", "-v", "vdata:/data", "-v", host_ + "/bind:/srv/b:ro", "-v",
                  host_ + "/app.conf:/etc/app.conf", "busybox", "sleep", "3600"});
  ASSERT_EQ(r.code, 0) << r.err;
  sh("v", "echo in the volume > /data/v.txt && mkdir /data/sub && echo deep > /data/sub/f && ln -s " + host_ +
              "/secret /data/esc");
  ASSERT_EQ(berth({"cp", "v:/data/v.txt", host_ + "/v.txt"}).code, 0);
  EXPECT_EQ(read(host_ + "/v.txt"), "in the volume\n");
  ASSERT_EQ(berth({"cp", "v:/data", host_ + "/whole"}).code, 0);
  EXPECT_EQ(read(host_ + "/whole/sub/f"), "deep\n");
  ASSERT_EQ(berth({"cp", "v:/srv/b/b.txt", host_ + "/b.out"}).code, 0);
  EXPECT_EQ(read(host_ + "/b.out"), "from the bind\n");
  // A bind beneath a copied directory comes with its files, not as its empty mount point.
  ASSERT_EQ(berth({"cp", "v:/srv", host_ + "/srv"}).code, 0);
  EXPECT_EQ(read(host_ + "/srv/b/b.txt"), "from the bind\n");
  ASSERT_EQ(berth({"cp", "v:/etc/app.conf", host_ + "/conf.out"}).code, 0);
  EXPECT_EQ(read(host_ + "/conf.out"), "bound file\n");
  // The link names a host path: followed, it stays in the volume's root.
  r = berth({"cp", "-L", "v:/data/esc", host_ + "/esc"});
  EXPECT_NE(r.code, 0);
  EXPECT_FALSE(fs::exists(host_ + "/esc"));
  sh("v", "mkdir -p /data" + host_ + " && echo volume secret > /data" + host_ + "/secret");
  ASSERT_EQ(berth({"cp", "-L", "v:/data/esc", host_ + "/esc"}).code, 0);
  EXPECT_EQ(read(host_ + "/esc"), "volume secret\n");
  // In: the volume takes the file (the container reads it), the ro bind refuses.
  write(host_ + "/new.txt", "copied in\n");
  ASSERT_EQ(berth({"cp", host_ + "/new.txt", "v:/data/"}).code, 0);
  EXPECT_EQ(sh("v", "cat /data/new.txt"), "copied in\n");
  r = berth({"cp", host_ + "/new.txt", "v:/srv/b/"});
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("mounted volume is marked read-only"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(host_ + "/bind/new.txt"));
  ASSERT_EQ(berth({"rm", "-f", "v"}).code, 0);
  ASSERT_EQ(berth({"volume", "rm", "vdata"}).code, 0);
}

}  // namespace
}  // namespace berth
