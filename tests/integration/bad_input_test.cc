// Bad input: one line on stderr naming the culprit, a non-zero exit, and
// nothing left behind (state, cgroup, process).
#include <dirent.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "harness.h"

namespace berth::it {
namespace {

const std::string kHelper = "/bin/berth-test-helper";

class BadInput : public BerthTest {
 protected:
  // Processes whose root is this bundle's rootfs.
  std::vector<pid_t> procs_in(const Bundle& b) {
    std::vector<pid_t> out;
    if (DIR* d = ::opendir("/proc")) {
      while (auto* e = ::readdir(d)) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        std::string cwd = readlink_str(std::string("/proc/") + e->d_name + "/cwd");
        std::string root = readlink_str(std::string("/proc/") + e->d_name + "/root");
        if (contains(cwd, b.rootfs) || contains(root, b.rootfs)) out.push_back(std::atoi(e->d_name));
      }
      ::closedir(d);
    }
    return out;
  }

  void expect_clean_failure(const ProcResult& r, const std::string& culprit, const Bundle* b) {
    EXPECT_NE(r.code, 0) << r.desc();
    EXPECT_FALSE(r.timed_out) << r.desc();
    EXPECT_NE(r.code, 128 + 11) << "crashed: " << r.desc();
    std::string e = trim(r.err);
    EXPECT_EQ(split_lines(e).size(), 1u) << "expected exactly one line on stderr: " << r.desc();
    EXPECT_TRUE(contains(e, culprit)) << "stderr does not name \"" << culprit << "\": " << r.desc();
    EXPECT_TRUE(trim(r.out).empty()) << r.desc();
    if (!b) return;
    EXPECT_FALSE(exists(root_ + "/" + b->id)) << "state left for " << b->id;
    auto left = root_entries();
    EXPECT_TRUE(left.empty()) << "left under --root: " << (left.empty() ? "" : left[0]);
    EXPECT_TRUE(cgroup_dirs(b->cgroup_path).empty()) << "cgroup left: " << b->cgroup_path;
    EXPECT_TRUE(wait_until([&] { return procs_in(*b).empty(); }, 2)) << "a process of the container is left";
  }
};

TEST_F(BadInput, MalformedJson) {
  auto& b = make_bundle("badjson", {kHelper, "true"});
  write_file(b.dir + "/config.json", "{ \"ociVersion\": \"1.3.0\", \"process\": ");
  auto r = create(b);
  expect_clean_failure(r, "config.json", &b);
  EXPECT_TRUE(contains(r.err, "JSON")) << r.desc();
}

TEST_F(BadInput, WrongTypeForProcessArgs) {
  auto& b = make_bundle("badtype", {kHelper, "true"}, false);
  b.process()["args"] = "/bin/sh";
  b.save();
  auto r = create(b);
  expect_clean_failure(r, "process.args", &b);
}

TEST_F(BadInput, MissingRootfs) {
  auto& b = make_bundle("norootfs", {kHelper, "true"}, false);
  b.config["root"]["path"] = "does-not-exist";
  b.save();
  auto r = create(b);
  expect_clean_failure(r, "does-not-exist", &b);
}

TEST_F(BadInput, UnknownNamespaceType) {
  auto& b = make_bundle("badns", {kHelper, "true"}, false);
  b.linux_()["namespaces"].push_back({{"type", "foo"}});
  b.save();
  auto r = create(b);
  SKIP_IF_CLEANUP_CRASH(r);
  expect_clean_failure(r, "foo", &b);
}

TEST_F(BadInput, NonNamespacedSysctl) {
  auto& b = make_bundle("badsysctl", {kHelper, "true"}, false);
  b.linux_()["sysctl"] = {{"vm.swappiness", "10"}};
  b.save();
  auto r = create(b);
  SKIP_IF_CLEANUP_CRASH(r);
  expect_clean_failure(r, "vm.swappiness", &b);
}

TEST_F(BadInput, DuplicateIdKeepsTheFirst) {
  auto& a = make_bundle("dup", {kHelper, "pause"});
  auto c = create(a);
  ASSERT_OK(c);
  pid_t pid = init_pid("dup");
  ASSERT_GT(pid, 0);
  std::string state_before = read_file(root_ + "/dup/state.json");
  auto cg_before = cgroup_dirs(a.cgroup_path);
  ASSERT_FALSE(cg_before.empty());

  // A second bundle, same id.
  Bundle other = a;
  other.dir = path("b-dup2");
  mkdirs(other.dir);
  ASSERT_EQ(::symlink(a.rootfs.c_str(), (other.dir + "/rootfs").c_str()), 0);
  other.save();
  auto r = rt({"create", "--bundle", other.dir, "dup"});
  expect_clean_failure(r, "dup", nullptr);
  EXPECT_TRUE(contains(r.err, "exists")) << r.desc();
  // The first container is intact.
  EXPECT_EQ(status("dup"), "created");
  EXPECT_TRUE(pid_alive(pid));
  EXPECT_EQ(read_file(root_ + "/dup/state.json"), state_before);
  EXPECT_EQ(cgroup_dirs(a.cgroup_path), cg_before);
  EXPECT_TRUE(exists(root_ + "/dup/start.sock"));
  ASSERT_OK(rt({"start", "dup"}));
  EXPECT_EQ(status("dup"), "running");
  ASSERT_OK(rt({"kill", "dup", "TERM"}));
  EXPECT_TRUE(wait_until([&] { return contains(read_file(c.out_path), "got SIGTERM"); }, 5));
}

TEST_F(BadInput, PathLikeId) {
  auto& b = make_bundle("pathid", {kHelper, "true"});
  for (const std::string id : {"../x", "a/b", "..", "/abs"}) {
    SCOPED_TRACE(id);
    auto r = rt({"create", "--bundle", b.dir, id});
    expect_clean_failure(r, id, nullptr);
    EXPECT_TRUE(root_entries().empty());
    EXPECT_FALSE(exists(path("x")));
    EXPECT_TRUE(cgroup_dirs(b.cgroup_path).empty());
    auto d = rt({"delete", "--force", id});
    EXPECT_NE(d.code, 0) << d.desc();
    auto s = rt({"state", id});
    EXPECT_NE(s.code, 0) << s.desc();
  }
}

TEST_F(BadInput, UnknownSignal) {
  auto& b = make_bundle("sig", {kHelper, "pause"});
  create_and_start(b);
  ASSERT_FALSE(HasFailure());
  for (const std::string s : {"SIGNOPE", "NOPE", "0", "65", "-1", "9x"}) {
    SCOPED_TRACE(s);
    auto r = rt({"kill", "sig", s});
    expect_clean_failure(r, s, nullptr);
  }
  EXPECT_EQ(status("sig"), "running");
}

TEST_F(BadInput, DeadConsoleSocket) {
  auto& b = make_bundle("deadsock", {kHelper, "tty"}, false);
  b.process()["terminal"] = true;
  b.save();
  // A socket file nobody listens on any more.
  std::string dead = path("dead.sock");
  int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un a = {};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, dead.c_str(), sizeof a.sun_path - 1);
  ASSERT_EQ(::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ::close(s);
  auto r = create(b, {"--console-socket", dead});
  SKIP_IF_CLEANUP_CRASH(r);
  expect_clean_failure(r, "console-socket", &b);

  auto r2 = create(b, {"--console-socket", path("missing.sock")});
  SKIP_IF_CLEANUP_CRASH(r2);
  expect_clean_failure(r2, "console-socket", &b);
}

TEST_F(BadInput, TerminalWithoutConsoleSocket) {
  auto& b = make_bundle("noconsole", {kHelper, "tty"}, false);
  b.process()["terminal"] = true;
  b.save();
  auto r = create(b);
  expect_clean_failure(r, "console-socket", &b);
  auto d = run_fg(b, {"--detach"});
  expect_clean_failure(d, "console-socket", &b);
}

TEST_F(BadInput, UnknownFlag) {
  auto& b = make_bundle("flag", {kHelper, "true"});
  // runc words it "flag provided but not defined: -bogus".
  auto r = rt({"create", "--bogus", "--bundle", b.dir, "flag"});
  expect_clean_failure(r, "bogus", &b);
  auto g = rt({"--bogus", "list"});
  expect_clean_failure(g, "bogus", &b);
  auto k = rt({"kill", "--bogus", "flag"});
  expect_clean_failure(k, "bogus", &b);
}

// containerd's go-runc reads the error of a failed call from --log in JSON.
TEST_F(BadInput, ErrorsReachTheLogFileInRuncsShapes) {
  std::string json_log = path("log.json"), text_log = path("log.txt");
  auto r = rt({"--log", json_log, "--log-format", "json", "state", "nosuch"});
  EXPECT_NE(r.code, 0);
  auto lines = split_lines(trim(read_file(json_log)));
  ASSERT_EQ(lines.size(), 1u) << read_file(json_log);
  auto j = json::parse(lines[0], nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << lines[0];
  EXPECT_EQ(j["level"], "error");
  EXPECT_TRUE(contains(j["msg"].get<std::string>(), "nosuch")) << lines[0];
  EXPECT_TRUE(j["time"].is_string());
  auto t = rt({"--log", text_log, "--log-format", "text", "state", "nosuch"});
  EXPECT_NE(t.code, 0);
  std::string text = read_file(text_log);
  EXPECT_TRUE(contains(text, "level=error msg=\"")) << text;
  EXPECT_TRUE(contains(text, "time=\"")) << text;
  auto bad = rt({"--log-format", "xml", "list"});
  expect_clean_failure(bad, "xml", nullptr);
}

TEST_F(BadInput, UnknownCommand) {
  auto r = rt({"frobnicate"});
  expect_clean_failure(r, "frobnicate", nullptr);
}

}  // namespace
}  // namespace berth::it
