// Runtime features beyond the basics: seccomp user notification handed to a
// listener (linux.seccomp.listenerPath), idmapped bind mounts, netDevices.
#include <linux/seccomp.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <thread>

#include "harness.h"

namespace berth::it {
namespace {

const std::string kHelper = "/bin/berth-test-helper";

class Extensions : public BerthTest {};

TEST_F(Extensions, SeccompNotifyGoesToTheListenerWhichAnswers) {
  std::string sock_path = path("seccomp.sock");
  int l = listen_unix(sock_path);
  ASSERT_GE(l, 0) << std::strerror(errno);
  track_fd(l);

  // The agent: takes the listener fd and answers every mkdir with ENOSPC.
  std::string payload;
  std::atomic<int> answered{0};
  std::thread agent([&] {
    int nfd = recv_fd_from(l, 30000, &payload);
    if (nfd < 0) return;
    for (;;) {
      struct seccomp_notif req = {};
      struct seccomp_notif_resp resp = {};
      if (::ioctl(nfd, SECCOMP_IOCTL_NOTIF_RECV, &req) < 0) break;
      resp.id = req.id;
      resp.error = -ENOSPC;
      ::ioctl(nfd, SECCOMP_IOCTL_NOTIF_SEND, &resp);
      ++answered;
    }
    ::close(nfd);
  });

  auto& b = make_bundle("notify", {"/bin/sh", "-c", "mkdir /tmp/x 2>&1; echo mkdir=$?"}, false);
  b.linux_()["seccomp"] = {
      {"defaultAction", "SCMP_ACT_ALLOW"},
      {"listenerPath", sock_path},
      {"syscalls", json::array({{{"names", {"mkdir", "mkdirat"}}, {"action", "SCMP_ACT_NOTIFY"}}})}};
  b.add_mount({{"destination", "/tmp"}, {"type", "tmpfs"}, {"source", "tmpfs"}});
  b.save();
  auto r = run_fg(b);
  ::shutdown(l, SHUT_RDWR);
  agent.join();
  ASSERT_OK(r);
  EXPECT_TRUE(contains(r.out, "No space left on device")) << r.out;
  EXPECT_EQ(kv(r.out, "mkdir"), "1") << r.out;
  EXPECT_GE(answered.load(), 1);
  auto doc = json::parse(payload, nullptr, false);
  ASSERT_FALSE(doc.is_discarded()) << payload;
  EXPECT_EQ(doc["fds"], json::array({"seccompFd"})) << payload;
  EXPECT_EQ(doc["state"]["id"], "notify") << payload;
  EXPECT_GT(doc["pid"].get<int>(), 0) << payload;
}

TEST_F(Extensions, IdmappedBindMountShowsMappedOwners) {
  std::string src = path("idsrc");
  mkdirs(src);
  write_file(src + "/f", "x");
  ASSERT_EQ(::chown((src + "/f").c_str(), 0, 0), 0);
  auto& b = make_bundle("idmap", {kHelper, "stat", "/mnt/f"}, false);
  b.add_mount({{"destination", "/mnt"},
               {"type", "bind"},
               {"source", src},
               {"options", {"bind", "idmap"}},
               {"uidMappings", {{{"containerID", 0}, {"hostID", 1000}, {"size", 1}}}},
               {"gidMappings", {{{"containerID", 0}, {"hostID", 2000}, {"size", 1}}}}});
  b.save();
  auto r = run_fg(b);
  ASSERT_OK(r);
  // On disk the file belongs to 0:0; through the idmapped mount it is 1000:2000.
  EXPECT_TRUE(contains(r.out, " uid=1000 ")) << r.out;
  EXPECT_TRUE(contains(r.out, " gid=2000 ")) << r.out;
  struct stat st;
  ASSERT_EQ(::stat((src + "/f").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 0u);  // the host's view is unchanged
}

TEST_F(Extensions, NetDevicesAreMovedAndRenamed) {
  // A veth pair of the test's own: the end moved into the container dies with
  // its network namespace, and takes its peer along.
  std::string a = "bit" + std::to_string(::getpid() % 100000) + "a";
  std::string peer = "bit" + std::to_string(::getpid() % 100000) + "b";
  auto ip = run({"/sbin/ip", "link", "add", a, "type", "veth", "peer", "name", peer}, path("ip.out"), path("ip.err"));
  if (ip.code != 0) GTEST_SKIP() << "cannot create a veth pair here: " << ip.desc();
  auto& b = make_bundle("netdev", {"/bin/ls", "/sys/class/net"}, false);
  b.linux_()["netDevices"] = {{a, {{"name", "eth7"}}}};
  b.save();
  auto r = run_fg(b);
  if (::if_nametoindex(a.c_str()) != 0)
    run({"/sbin/ip", "link", "del", a}, path("ip2.out"), path("ip2.err"));
  ASSERT_OK(r);
  EXPECT_TRUE(contains(r.out, "eth7")) << r.out;
  EXPECT_EQ(::if_nametoindex(a.c_str()), 0u) << "the device should have left the host";
  EXPECT_TRUE(wait_until([&] { return ::if_nametoindex(peer.c_str()) == 0; }, 5))
      << "the peer should be gone with the container's network namespace";
}

TEST_F(Extensions, NetDevicesUnknownDeviceFailsCleanly) {
  auto& b = make_bundle("nodev", {"/bin/true"}, false);
  b.linux_()["netDevices"] = {{"berthnope0", json::object()}};
  b.save();
  auto r = run_fg(b);
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(contains(r.err, "berthnope0")) << r.err;
  EXPECT_EQ(count_of(trim(r.err), "\n"), 0) << r.err;
  EXPECT_TRUE(root_entries().empty());
}

TEST_F(Extensions, RootlessRunAsAnUnprivilegedUser) {
  // The runtime itself runs as nobody (65534): a user namespace maps it to root
  // inside, no cgroup is made, and the state lives where nobody may write.
  std::string rootless_root = path("rootless-state");
  mkdirs(rootless_root, 0700);
  ASSERT_EQ(::chown(rootless_root.c_str(), 65534, 65534), 0);
  auto& b = make_bundle("rootless", {kHelper, "ids"}, false);
  ASSERT_EQ(::chown(b.dir.c_str(), 65534, 65534), 0);
  std::string spec_dir = path("rootless-spec");
  mkdirs(spec_dir);
  auto sp = rt({"spec", "--rootless", "--bundle", spec_dir});
  ASSERT_OK(sp);
  json cfg = json::parse(read_file(spec_dir + "/config.json"));
  cfg["process"]["terminal"] = false;
  cfg["process"]["args"] = {kHelper, "ids"};
  cfg["linux"]["uidMappings"][0]["hostID"] = 65534;
  cfg["linux"]["gidMappings"][0]["hostID"] = 65534;
  b.config = cfg;
  b.save();
  auto r = run({"/usr/bin/setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", runtime_, "--root",
                rootless_root, "run", "--bundle", b.dir, "rootless"},
               new_out_file("rl.out"), new_out_file("rl.err"));
  ASSERT_OK(r);
  EXPECT_TRUE(contains(r.out, "uid=0 gid=0")) << r.out;
  EXPECT_FALSE(exists(rootless_root + "/rootless")) << "state left behind";
  // Without rights on cgroupfs there is no cgroup (and so none to leave behind).
  for (auto& d : cgroup_dirs("/berth-rootless")) ADD_FAILURE() << "cgroup made: " << d;
}

}  // namespace
}  // namespace berth::it
