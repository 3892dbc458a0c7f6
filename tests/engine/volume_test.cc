// Volumes end to end as root: `berth volume` verbs and containers using them
// (-v NAME:/p, -v /p, --mount, --volumes-from, image content copied up), each
// test with its own --root and --runroot; TearDown removes every container and
// volume and checks that no mount is left.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "berth_run.h"
#include "util/fs.h"

namespace berth {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

class VolumeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (mounts, namespaces)";
    ASSERT_TRUE(test::make_test_dirs("volume", dir_, root_, runroot_));
  }
  void TearDown() override {
    if (dir_.empty()) return;
    for (auto& id : lines(berth({"ps", "-aq", "--no-trunc"}).out)) berth({"rm", "-f", id});
    for (auto& v : lines(berth({"volume", "ls", "-q"}).out)) berth({"volume", "rm", "-f", v});
    EXPECT_TRUE(lines(berth({"volume", "ls", "-q"}).out).empty()) << "volumes are left";
    EXPECT_TRUE(test::wait_for_trash(root_)) << "removed containers' files are left";
    test::expect_only_layer_mounts(dir_, root_);
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  static std::vector<std::string> lines(const std::string& s) {
    std::vector<std::string> out;
    for (auto& l : split(s, '\n'))
      if (!l.empty()) out.push_back(l);
    return out;
  }

  // berth with this test's roots; stdin from /dev/null, or `input`.
  test::Out berth(const std::vector<std::string>& args, const std::string& input = "") {
    std::string in;
    if (!input.empty()) (void)atomic_write_file(in = dir_ + "/in", input, 0644);
    return test::run_berth(root_, runroot_, dir_ + "/cmd", args, in);
  }
  // `run --rm FLAGS busybox sh -c SCRIPT`.
  test::Out sh(const std::vector<std::string>& flags, const std::string& script) {
    std::vector<std::string> a = {"run", "--rm"};
    a.insert(a.end(), flags.begin(), flags.end());
    a.insert(a.end(), {"busybox", "sh", "-c", script});
    return berth(a);
  }
  json inspect(const std::vector<std::string>& args) {
    auto r = berth(args);
    EXPECT_EQ(r.code, 0) << r.err;
    json j = json::parse(r.out, nullptr, false);
    return j.is_array() && !j.empty() ? j[0] : json::object();
  }
  std::string data(const std::string& volume) { return root_ + "/volumes/" + volume + "/_data"; }

  std::string dir_, root_, runroot_;
};

TEST_F(VolumeTest, NamedVolumeKeepsDataBetweenContainers) {
  auto r = sh({"-v", "keep:/data"}, "echo hello > /data/f");
  ASSERT_EQ(r.code, 0) << r.err;
  // Made on first use, kept after the --rm container.
  EXPECT_EQ(lines(berth({"volume", "ls", "-q"}).out), std::vector<std::string>{"keep"});
  r = sh({"-v", "keep:/data"}, "cat /data/f");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "hello\n");
  EXPECT_EQ(read_file(data("keep") + "/f").value_or(""), "hello\n");
  // --mount type=volume names the same volume.
  r = sh({"--mount", "type=volume,source=keep,target=/m"}, "cat /m/f");
  EXPECT_EQ(r.out, "hello\n") << r.err;
}

TEST_F(VolumeTest, CreateListInspect) {
  auto r = berth({"volume", "create", "--label", "team=a", "--label", "tier=db", "named"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "named\n");
  r = berth({"volume", "create"});
  ASSERT_EQ(r.code, 0) << r.err;
  std::string random = lines(r.out).at(0);
  EXPECT_EQ(random.size(), 64u);
  EXPECT_EQ(random.find_first_not_of("0123456789abcdef"), std::string::npos);
  // Creating an existing volume returns it.
  EXPECT_EQ(berth({"volume", "create", "named"}).code, 0);
  // The top-level inspect finds volumes after containers and images (Docker's order).
  EXPECT_EQ(berth({"inspect", "-f", "{{.Name}} {{.Driver}}", "named"}).out, "named local\n");
  auto missing = berth({"inspect", "nothing-here"});
  EXPECT_EQ(missing.code, 1);
  EXPECT_EQ(missing.out, "[]\n");
  EXPECT_NE(missing.err.find("no such object: nothing-here"), std::string::npos) << missing.err;

  json j = inspect({"volume", "inspect", "named"});
  EXPECT_EQ(j["Name"], "named");
  EXPECT_EQ(j["Driver"], "local");
  EXPECT_EQ(j["Scope"], "local");
  EXPECT_EQ(j["Mountpoint"], data("named"));
  EXPECT_EQ(j["Labels"], json({{"team", "a"}, {"tier", "db"}}));
  EXPECT_EQ(j["Options"], json::object());
  EXPECT_TRUE(j["CreatedAt"].get<std::string>().ends_with("Z"));
  struct stat st;
  ASSERT_EQ(::stat(data("named").c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0755u);
  ASSERT_EQ(::stat((root_ + "/volumes").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0701u);

  r = berth({"volume", "ls"});
  EXPECT_EQ(r.code, 0) << r.err;
  auto rows = lines(r.out);
  ASSERT_EQ(rows.size(), 3u) << r.out;
  EXPECT_TRUE(rows[0].starts_with("DRIVER")) << r.out;
  EXPECT_NE(r.out.find("local    named"), std::string::npos) << r.out;
  EXPECT_EQ(lines(berth({"volume", "ls", "-q", "--filter", "label=team=a"}).out), std::vector<std::string>{"named"});
  EXPECT_EQ(lines(berth({"volume", "ls", "-q", "--filter", "name=nam"}).out), std::vector<std::string>{"named"});
  EXPECT_EQ(lines(berth({"volume", "ls", "--format", "{{.Name}} {{.Driver}}", "-f", "label=tier"}).out),
            std::vector<std::string>{"named local"});
  EXPECT_EQ(lines(berth({"volume", "inspect", "-f", "{{.Mountpoint}}", "named"}).out),
            std::vector<std::string>{data("named")});
  r = berth({"volume", "inspect", "nope"});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("no such volume"), std::string::npos) << r.err;
  EXPECT_NE(berth({"volume", "create", "a/b"}).code, 0);
  EXPECT_NE(berth({"volume", "create", "--driver", "nfs", "x1"}).code, 0);
  EXPECT_NE(berth({"volume", "create", "-o", "bogus=1", "x2"}).code, 0);

  // dangling: used by no container.
  auto used = berth({"create", "-v", "named:/d", "busybox", "true"});
  ASSERT_EQ(used.code, 0) << used.err;
  EXPECT_EQ(lines(berth({"volume", "ls", "-q", "--filter", "dangling=true"}).out), std::vector<std::string>{random});
  EXPECT_EQ(lines(berth({"volume", "ls", "-q", "--filter", "dangling=false"}).out),
            std::vector<std::string>{"named"});
}

// A volume with a filesystem of its own (--opt type=,device=,o=): mounted on
// _data when a container takes it, and again when the container starts after
// a reboot (simulated: the mount taken away while it is stopped).
TEST_F(VolumeTest, OptFilesystemIsMountedAgainAfterAReboot) {
  auto mounted = [&](const std::string& path) {
    return read_file("/proc/self/mountinfo").value_or("").find(" " + path + " ") != std::string::npos;
  };
  ASSERT_EQ(berth({"volume", "create", "-o", "type=tmpfs", "-o", "device=tmpfs", "-o", "o=size=1m", "tv"}).code, 0);
  EXPECT_FALSE(mounted(data("tv"))) << "mounted when a container takes it";
  auto r = berth({"run", "-d", "--name", "c", "-v", "tv:/v", "busybox", "sleep", "60"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(mounted(data("tv")));
  r = berth({"exec", "c", "sh", "-c", "grep ' /v ' /proc/mounts; echo x > /v/f"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("tmpfs /v tmpfs"), std::string::npos) << r.out;
  ASSERT_EQ(berth({"kill", "c"}).code, 0);
  ASSERT_EQ(berth({"wait", "c"}).code, 0);
  ASSERT_EQ(::umount2(data("tv").c_str(), MNT_DETACH), 0);
  r = berth({"start", "c"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(mounted(data("tv"))) << "mounted again at start";
  r = berth({"exec", "c", "sh", "-c", "grep ' /v ' /proc/mounts; ls /v"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("tmpfs /v tmpfs"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("f\n"), std::string::npos) << "a fresh tmpfs: " << r.out;
  ASSERT_EQ(berth({"rm", "-f", "c"}).code, 0);
  ASSERT_EQ(berth({"volume", "rm", "tv"}).code, 0);
  EXPECT_FALSE(mounted(data("tv")));
}

TEST_F(VolumeTest, RemoveIsRefusedWhileInUse) {
  auto r = berth({"create", "--name", "user", "-v", "busy:/data", "busybox", "true"});
  ASSERT_EQ(r.code, 0) << r.err;
  std::string id = lines(r.out).at(0);
  r = berth({"volume", "rm", "busy"});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("volume is in use - [" + id + "]"), std::string::npos) << r.err;
  // -f does not remove a volume in use either (Docker), but ignores a missing one.
  EXPECT_EQ(berth({"volume", "rm", "-f", "busy"}).code, 1);
  EXPECT_EQ(berth({"volume", "rm", "-f", "missing"}).code, 0);
  EXPECT_EQ(berth({"volume", "rm", "missing"}).code, 1);
  // rm (even -v) keeps a named volume.
  EXPECT_EQ(berth({"rm", "-v", "user"}).code, 0);
  EXPECT_TRUE(fs::exists(data("busy")));
  r = berth({"volume", "rm", "busy"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "busy\n");
  EXPECT_FALSE(fs::exists(root_ + "/volumes/busy"));
  EXPECT_TRUE(lines(berth({"volume", "ls", "-q"}).out).empty());
}

TEST_F(VolumeTest, AnonymousVolumesGoWithRmVAndRunRm) {
  auto r = berth({"create", "--name", "anon", "-v", "/scratch", "busybox", "true"});
  ASSERT_EQ(r.code, 0) << r.err;
  json c = inspect({"inspect", "anon"});
  ASSERT_EQ(c["Mounts"].size(), 1u) << c["Mounts"];
  json m = c["Mounts"][0];
  EXPECT_EQ(m["Type"], "volume");
  EXPECT_EQ(m["Destination"], "/scratch");
  EXPECT_EQ(m["Driver"], "local");
  EXPECT_EQ(m["RW"], true);
  std::string name = m["Name"];
  EXPECT_EQ(name.size(), 64u);
  EXPECT_EQ(m["Source"], data(name));
  json v = inspect({"volume", "inspect", name});
  EXPECT_TRUE(v["Labels"].contains("com.docker.volume.anonymous")) << v;
  // rm without -v leaves it; rm -v removes it.
  r = berth({"create", "--name", "anon2", "-v", "/scratch", "busybox", "true"});
  ASSERT_EQ(r.code, 0) << r.err;
  std::string name2 = inspect({"inspect", "anon2"})["Mounts"][0]["Name"];
  EXPECT_EQ(berth({"rm", "anon2"}).code, 0);
  EXPECT_TRUE(fs::exists(data(name2)));
  EXPECT_EQ(berth({"rm", "-v", "anon"}).code, 0);
  EXPECT_FALSE(fs::exists(root_ + "/volumes/" + name));
  EXPECT_EQ(lines(berth({"volume", "ls", "-q"}).out), std::vector<std::string>{name2});
  // prune without -a: anonymous volumes only; -a: every unused one.
  ASSERT_EQ(berth({"volume", "create", "kept"}).code, 0);
  r = berth({"volume", "prune", "-f"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("Deleted Volumes:\n" + name2 + "\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Total reclaimed space:"), std::string::npos) << r.out;
  EXPECT_EQ(lines(berth({"volume", "ls", "-q"}).out), std::vector<std::string>{"kept"});
  r = berth({"volume", "prune", "-a"}, "y\n");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(lines(berth({"volume", "ls", "-q"}).out).empty());

  // run --rm: its anonymous volume goes with it, a named one stays.
  r = sh({"-v", "/tmpdata", "-v", "stays:/named"}, "echo x > /tmpdata/f; echo y > /named/f");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(lines(berth({"volume", "ls", "-q"}).out), std::vector<std::string>{"stays"});
}

TEST_F(VolumeTest, ImageContentIsCopiedIntoAnEmptyVolume) {
  auto r = sh({"-v", "etc:/etc"}, "ls /etc/passwd && grep -c root /etc/passwd");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "/etc/passwd\n1\n");
  auto passwd = read_file(data("etc") + "/passwd");
  ASSERT_TRUE(passwd) << "the volume has no passwd";
  EXPECT_NE(passwd->find("root:"), std::string::npos);
  // Not copied again into a volume that has content: a change stays.
  r = sh({"-v", "etc:/etc"}, "echo changed > /etc/passwd");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(read_file(data("etc") + "/passwd").value_or(""), "changed\n");
  r = sh({"-v", "etc:/etc"}, "cat /etc/passwd");
  EXPECT_EQ(r.out, "changed\n");
  // nocopy: an empty volume stays empty.
  r = sh({"-v", "bare:/etc:nocopy"}, "ls /etc | grep -c passwd");
  EXPECT_EQ(r.out, "0\n") << r.err;
  // Symlinks stay links, owners and modes are kept: copy /bin (busybox applets).
  r = sh({"-v", "bin:/bin"}, "true");
  EXPECT_EQ(r.code, 0) << r.err;
  struct stat st;
  ASSERT_EQ(::lstat((data("bin") + "/sh").c_str(), &st), 0);
  EXPECT_TRUE(S_ISLNK(st.st_mode) || S_ISREG(st.st_mode));
  ASSERT_EQ(::lstat((data("bin") + "/busybox").c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_TRUE(st.st_mode & 0100);
}

TEST_F(VolumeTest, ImageVolumesBecomeAnonymousVolumes) {
  // An image with VOLUME ["/data"] whose /data holds a file of another owner.
  std::string tree = dir_ + "/img";
  fs::create_directories(tree + "/bin");
  fs::create_directories(tree + "/data/sub");
  fs::copy_file("/bin/busybox", tree + "/bin/busybox");
  fs::create_symlink("busybox", tree + "/bin/sh");
  fs::create_symlink("../seed", tree + "/data/sub/link");
  ASSERT_TRUE(atomic_write_file(tree + "/data/seed", "seeded\n", 0640));
  ASSERT_EQ(::chown((tree + "/data/seed").c_str(), 1234, 5678), 0);
  ASSERT_EQ(::chown((tree + "/data").c_str(), 1234, 5678), 0);
  ASSERT_EQ(::chmod((tree + "/data").c_str(), 0750), 0);
  ASSERT_EQ(std::system(("tar -C " + tree + " -cf " + dir_ + "/img.tar .").c_str()), 0);
  auto r = berth({"import", "-c", "VOLUME [\"/data\"]", dir_ + "/img.tar", "volimg"});
  ASSERT_EQ(r.code, 0) << r.err;

  r = berth({"create", "--name", "c", "volimg", "/bin/sh", "-c", "cat /data/seed"});
  ASSERT_EQ(r.code, 0) << r.err;
  json mounts = inspect({"inspect", "c"})["Mounts"];
  ASSERT_EQ(mounts.size(), 1u) << mounts;
  EXPECT_EQ(mounts[0]["Destination"], "/data");
  EXPECT_EQ(mounts[0]["Mode"], "");
  std::string name = mounts[0]["Name"];
  // Copied up with owners, modes and links.
  struct stat st;
  ASSERT_EQ(::stat((data(name) + "/seed").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 1234u);
  EXPECT_EQ(st.st_gid, 5678u);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  ASSERT_EQ(::stat(data(name).c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 1234u);
  EXPECT_EQ(st.st_mode & 07777, 0750u);
  ASSERT_EQ(::lstat((data(name) + "/sub/link").c_str(), &st), 0);
  EXPECT_TRUE(S_ISLNK(st.st_mode));
  r = berth({"start", "-a", "c"});
  EXPECT_EQ(r.out, "seeded\n") << r.err;
  EXPECT_EQ(berth({"rm", "-v", "c"}).code, 0);
  EXPECT_FALSE(fs::exists(root_ + "/volumes/" + name));

  // A mount at that path replaces the image's volume.
  r = berth({"run", "--rm", "-v", "mine:/data", "volimg", "/bin/sh", "-c", "cat /data/seed"});
  EXPECT_EQ(r.out, "seeded\n") << r.err;
  r = berth({"run", "--rm", "--tmpfs", "/data", "volimg", "/bin/sh", "-c", "ls /data | wc -l"});
  EXPECT_EQ(r.out, "0\n") << r.err;
  EXPECT_EQ(lines(berth({"volume", "ls", "-q"}).out), std::vector<std::string>{"mine"});
}

TEST_F(VolumeTest, ReadOnlyRefusesWrites) {
  auto r = sh({"-v", "ro:/data:ro"}, "echo x > /data/f");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("Read-only file system"), std::string::npos) << r.err;
  r = sh({"--mount", "type=volume,source=ro,target=/data,readonly"}, "touch /data/f");
  EXPECT_NE(r.code, 0);
  r = sh({"-v", "ro:/data"}, "echo x > /data/f && cat /data/f");
  EXPECT_EQ(r.out, "x\n") << r.err;
  // A bind read-only too, and Mounts says so.
  std::string host = dir_ + "/hostdir";
  fs::create_directories(host);
  r = berth({"create", "--name", "b", "-v", host + ":/h:ro", "--mount", "type=volume,src=ro,dst=/v", "busybox", "true"});
  ASSERT_EQ(r.code, 0) << r.err;
  json mounts = inspect({"inspect", "b"})["Mounts"];
  ASSERT_EQ(mounts.size(), 2u) << mounts;
  EXPECT_EQ(mounts[0], json({{"Type", "bind"}, {"Source", host}, {"Destination", "/h"}, {"Mode", "ro"},
                             {"RW", false}, {"Propagation", "rprivate"}}));
  EXPECT_EQ(mounts[1], json({{"Type", "volume"}, {"Name", "ro"}, {"Source", data("ro")}, {"Destination", "/v"},
                             {"Driver", "local"}, {"Mode", ""}, {"RW", true}, {"Propagation", ""}}));
}

TEST_F(VolumeTest, MountTmpfsAndBind) {
  auto r = sh({"--mount", "type=tmpfs,target=/t,tmpfs-size=1m"}, "grep ' /t ' /proc/mounts");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("tmpfs /t tmpfs"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("size=1024k"), std::string::npos) << r.out;
  std::string host = dir_ + "/bind";
  fs::create_directories(host);
  r = sh({"--mount", "type=bind,source=" + host + ",target=/b"}, "echo hi > /b/f");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(read_file(host + "/f").value_or(""), "hi\n");
  // Errors are the create's (125), nothing is left.
  EXPECT_EQ(sh({"--mount", "type=bind,source=/nonexistent-berth,target=/b"}, "true").code, 125);
  EXPECT_EQ(sh({"--mount", "type=tmpfs,source=x,target=/t"}, "true").code, 125);
  EXPECT_EQ(sh({"--mount", "type=volume,target=relative"}, "true").code, 125);
  EXPECT_EQ(sh({"--mount", "type=volume,src=a1,target=/x", "-v", "b1:/x"}, "true").code, 125);
  EXPECT_EQ(sh({"--mount", "bogus=1,target=/x"}, "true").code, 125);
  EXPECT_EQ(sh({"-v", "bad/name:/x"}, "true").code, 125);
  EXPECT_TRUE(lines(berth({"ps", "-aq"}).out).empty());
  EXPECT_TRUE(lines(berth({"volume", "ls", "-q"}).out).empty());
}

TEST_F(VolumeTest, VolumesFromShares) {
  std::string host = dir_ + "/shared";
  fs::create_directories(host);
  auto r = berth({"create", "--name", "src", "-v", "shared:/s", "-v", "/anon", "-v", host + ":/h", "busybox", "true"});
  ASSERT_EQ(r.code, 0) << r.err;
  r = sh({"--volumes-from", "src"}, "echo a > /s/f && echo b > /anon/f && echo c > /h/f");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(read_file(data("shared") + "/f").value_or(""), "a\n");
  EXPECT_EQ(read_file(host + "/f").value_or(""), "c\n");
  std::string anon;
  const json src = inspect({"inspect", "src"});
  for (auto& m : src["Mounts"])
    if (m["Destination"] == "/anon") anon = m["Name"];
  ASSERT_FALSE(anon.empty());
  // The --rm user did not take src's anonymous volume with it.
  EXPECT_EQ(read_file(data(anon) + "/f").value_or(""), "b\n");
  // :ro makes every inherited mount read-only.
  r = sh({"--volumes-from", "src:ro"}, "cat /s/f; echo x > /s/g");
  EXPECT_NE(r.code, 0);
  EXPECT_EQ(r.out, "a\n");
  // A container sharing the anonymous volume keeps it through the owner's rm -v.
  r = berth({"create", "--name", "sharer", "--volumes-from", "src", "busybox", "true"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(berth({"rm", "-v", "src"}).code, 0);
  EXPECT_TRUE(fs::exists(data(anon)));
  EXPECT_EQ(berth({"volume", "rm", anon}).code, 1);
  EXPECT_EQ(berth({"rm", "sharer"}).code, 0);
  EXPECT_EQ(berth({"volume", "rm", anon, "shared"}).code, 0);
  EXPECT_EQ(sh({"--volumes-from", "nope"}, "true").code, 125);
}

}  // namespace
}  // namespace berth
