// resolve_user against a rootfs made in a temp dir: runc's GetExecUser cases,
// --group-add, missing and hostile /etc files (a symlink pointing outside the
// rootfs must be resolved inside it).
#include "engine/user.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "util/fd.h"

namespace berth::engine {
namespace {

namespace fs = std::filesystem;
using Gids = std::vector<gid_t>;

constexpr const char* kPasswd =
    "root:x:0:0:root:/root:/bin/sh\n"
    "# a comment\n"
    "\n"
    "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\r\n"
    "short:x\n"
    "bad:x:abc:0::/bad:/bin/sh\n"
    "huge:x:2147483648:0::/huge:/bin/sh\n"
    "app:x:1000:1000:App:/home/app:/bin/sh\n"
    "app:x:1001:1001:second app:/home/app2:/bin/sh\n"
    "1234:x:5000:5000::/home/numname:/bin/sh\n"
    "nohome:x:2000:2000\n";

constexpr const char* kGroup =
    "root:x:0:\n"
    "wheel:x:10:root,app\n"
    "staff:x:50:app\n"
    "# ignored:x:60:app\n"
    "audio:x:63:\n"
    "docker:x:999:other,app\n"
    "staff2:x:50:app\n"
    "broken:x\n"
    "app:x:1000:\n";

class User : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/berth-user-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    root_ = dir_ / "rootfs";
    fs::create_directories(root_ / "etc");
    write(root_ / "etc/passwd", kPasswd);
    write(root_ / "etc/group", kGroup);
    rootfd_ = UniqueFd(::open(root_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    ASSERT_TRUE(rootfd_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  static void write(const fs::path& p, const std::string& data) {
    fs::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary | std::ios::trunc) << data;
  }
  Result<ExecUser> resolve(std::string_view spec, const std::vector<std::string>& add = {}) {
    return resolve_user(rootfd_.get(), spec, add);
  }
  std::string error(std::string_view spec, const std::vector<std::string>& add = {}) {
    auto r = resolve(spec, add);
    if (r) return "resolved to uid " + std::to_string(r->uid);
    return r.error().str();
  }

  fs::path dir_, root_;
  UniqueFd rootfd_;
};

void expect_user(const Result<ExecUser>& r, uid_t uid, gid_t gid, const std::string& home, const Gids& gids) {
  ASSERT_TRUE(r) << r.error().str();
  EXPECT_EQ(r->uid, uid);
  EXPECT_EQ(r->gid, gid);
  EXPECT_EQ(r->home, home);
  EXPECT_EQ(r->additional_gids, gids);
}

TEST_F(User, EmptySpecIsRootWithItsGroups) {
  expect_user(resolve(""), 0, 0, "/root", {10});
}

TEST_F(User, ByNameFirstEntryWinsWithSupplementaryGroupsDeduplicated) {
  // staff and staff2 share gid 50.
  expect_user(resolve("app"), 1000, 1000, "/home/app", {10, 50, 999});
}

TEST_F(User, ByUidUsesTheEntry) {
  expect_user(resolve("1000"), 1000, 1000, "/home/app", {10, 50, 999});
  expect_user(resolve("1"), 1, 1, "/usr/sbin", {});  // CRLF line
}

TEST_F(User, NumericUserIsAlwaysAUid) {
  // The entry named "1234" is not looked at: 1234 is a uid without an entry.
  expect_user(resolve("1234"), 1234, 0, "/", {});
}

TEST_F(User, NumericUidWithoutEntry) {
  expect_user(resolve("4242"), 4242, 0, "/", {});
  expect_user(resolve("4242:42"), 4242, 42, "/", {});
}

TEST_F(User, ExplicitGroupDropsSupplementaryGroups) {
  expect_user(resolve("app:audio"), 1000, 63, "/home/app", {});
  expect_user(resolve("app:50"), 1000, 50, "/home/app", {});
  expect_user(resolve("app:777"), 1000, 777, "/home/app", {});
  expect_user(resolve("1000:audio"), 1000, 63, "/home/app", {});
  expect_user(resolve("0:0"), 0, 0, "/root", {});
  expect_user(resolve(":audio"), 0, 63, "/root", {});
  expect_user(resolve("app:"), 1000, 1000, "/home/app", {10, 50, 999});
}

TEST_F(User, EntryWithoutHomeGetsSlash) {
  expect_user(resolve("nohome"), 2000, 2000, "/", {});
}

TEST_F(User, UnknownUserOrGroup) {
  EXPECT_EQ(error("nobody"), "unable to find user nobody: no matching entries in passwd file");
  EXPECT_EQ(error("app:nogroup"), "unable to find group nogroup: no matching entries in group file");
  EXPECT_EQ(error("4242:nogroup"), "unable to find group nogroup: no matching entries in group file");
  // Lines with a bad id are skipped, not read as uid 0.
  EXPECT_EQ(error("bad"), "unable to find user bad: no matching entries in passwd file");
  EXPECT_EQ(error("huge"), "unable to find user huge: no matching entries in passwd file");
  EXPECT_EQ(error("short"), "unable to find user short: no matching entries in passwd file");
  EXPECT_EQ(error("app:broken"), "unable to find group broken: no matching entries in group file");
  EXPECT_EQ(error("app:ignored"), "unable to find group ignored: no matching entries in group file");
}

TEST_F(User, IdsOutOfRange) {
  EXPECT_EQ(error("2147483648"), "user 2147483648: uids and gids must be in range 0-2147483647");
  EXPECT_EQ(error("-1"), "user -1: uids and gids must be in range 0-2147483647");
  EXPECT_EQ(error("99999999999999999999999"),
            "user 99999999999999999999999: uids and gids must be in range 0-2147483647");
  EXPECT_EQ(error("0:2147483648"), "group 2147483648: uids and gids must be in range 0-2147483647");
  EXPECT_EQ(error("0", {"4294967296"}), "group 4294967296: uids and gids must be in range 0-2147483647");
  expect_user(resolve("2147483647:2147483647"), 2147483647, 2147483647, "/", {});
}

TEST_F(User, GroupAddByNameGidOrNumber) {
  expect_user(resolve("app", {"audio", "1234", "wheel", "63", "999"}), 1000, 1000, "/home/app",
              {10, 50, 999, 63, 1234});
  expect_user(resolve("4242:42", {"staff", "7"}), 4242, 42, "/", {50, 7});
  EXPECT_EQ(error("app", {"audio", "nogroup"}), "unable to find group nogroup: no matching entries in group file");
}

TEST_F(User, MissingFilesAreEmpty) {
  fs::remove(root_ / "etc/passwd");
  fs::remove(root_ / "etc/group");
  expect_user(resolve(""), 0, 0, "/", {});
  expect_user(resolve("1000"), 1000, 0, "/", {});
  expect_user(resolve("123:456", {"5"}), 123, 456, "/", {5});
  EXPECT_EQ(error("app"), "unable to find user app: no matching entries in passwd file");
  EXPECT_EQ(error("0:staff"), "unable to find group staff: no matching entries in group file");
  EXPECT_EQ(error("0", {"audio"}), "unable to find group audio: no matching entries in group file");

  fs::remove(root_ / "etc");
  expect_user(resolve("7:8"), 7, 8, "/", {});
  write(root_ / "etc", "");  // ENOTDIR reads as missing too
  expect_user(resolve("7:8"), 7, 8, "/", {});
}

TEST_F(User, SymlinkOutOfRootfsResolvesInside) {
  fs::path outside = dir_ / "outside/passwd";
  write(outside, "evil:x:4321:4321::/evil:/bin/sh\n");
  fs::remove(root_ / "etc/passwd");
  // Enough ".." to reach "/" from the host's view of rootfs/etc.
  std::string target;
  for (int i = 0; i < 32; i++) target += "../";
  target += outside.relative_path().string();
  fs::create_symlink(target, root_ / "etc/passwd");
  // On the host the link does reach the outside file...
  std::ifstream host(root_ / "etc/passwd");
  std::string line;
  ASSERT_TRUE(std::getline(host, line));
  ASSERT_EQ(line, "evil:x:4321:4321::/evil:/bin/sh");
  // ...in the rootfs it names <rootfs>/<outside>, missing: an empty passwd.
  EXPECT_EQ(error("evil"), "unable to find user evil: no matching entries in passwd file");
  expect_user(resolve(""), 0, 0, "/", {});

  // And once that in-root path exists, it is the file read.
  write(root_ / outside.relative_path(), "inside:x:77:88::/in:/bin/sh\n");
  expect_user(resolve("inside"), 77, 88, "/in", {});
  EXPECT_EQ(error("evil"), "unable to find user evil: no matching entries in passwd file");
}

TEST_F(User, NonRegularFilesAreRefused) {
  fs::remove(root_ / "etc/passwd");
  fs::create_directory(root_ / "etc/passwd");
  EXPECT_EQ(error("app"), "/etc/passwd in rootfs is not a regular file");

  // A FIFO must be refused, not opened (which would block).
  fs::remove(root_ / "etc/group");
  ASSERT_EQ(::mkfifo((root_ / "etc/group").c_str(), 0644), 0);
  fs::remove(root_ / "etc/passwd");
  EXPECT_EQ(error("0"), "/etc/group in rootfs is not a regular file");
}

TEST_F(User, OversizedFileIsRefused) {
  ASSERT_EQ(::truncate((root_ / "etc/group").c_str(), (4 << 20) + 1), 0);  // sparse
  EXPECT_EQ(error("app"), "/etc/group in rootfs is larger than 4 MiB");
  ASSERT_EQ(::truncate((root_ / "etc/group").c_str(), 4 << 20), 0);
  expect_user(resolve("app"), 1000, 1000, "/home/app", {10, 50, 999});
}

}  // namespace
}  // namespace berth::engine
