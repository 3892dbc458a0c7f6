// The systemd cgroup driver against a real systemd: the container's cgroup is a
// transient scope systemd made, holding the limits in the cgroup and in
// systemd's own record of the unit. Skips where systemd does not run (this
// host); tests/vm starts systemd (in a pid namespace of the cgroup v2 VM) and
// runs these there.
#include <unistd.h>

#include "harness.h"

namespace berth::it {
namespace {

const std::string kHelper = "/bin/berth-test-helper";

class SystemdCgroup : public BerthTest {
 protected:
  void SetUp() override {
    BerthTest::SetUp();
    if (IsSkipped()) return;
    if (!exists("/run/systemd/system"))
      GTEST_SKIP() << "systemd is not running here (tests/vm runs these under a systemd of its own)";
  }
  // "system.slice:berth-it:<pid>-<name>": unit berth-it-<pid>-<name>.scope.
  Bundle& systemd_bundle(const std::string& id, const std::vector<std::string>& args) {
    auto& b = make_bundle(id, args, false);
    b.linux_()["cgroupsPath"] = "system.slice:berth-it:" + std::to_string(::getpid()) + "-" + id;
    return b;
  }
  std::string unit(const std::string& id) const { return "berth-it-" + std::to_string(::getpid()) + "-" + id + ".scope"; }
  ProcResult sd(std::vector<std::string> args) {
    args.insert(args.begin(), "--systemd-cgroup");
    return rt(args);
  }
  // The cgroup `pid` is in, for `controller` (v2: the one line "0::").
  std::string cgroup_of(pid_t pid, const std::string& controller) const {
    for (auto& l : split_lines(read_file("/proc/" + std::to_string(pid) + "/cgroup"))) {
      auto a = l.find(':'), b = l.find(':', a + 1);
      if (a == std::string::npos || b == std::string::npos) continue;
      std::string ctrls = l.substr(a + 1, b - a - 1);
      if ((cgroup_v1(controller) && ("," + ctrls + ",").find("," + controller + ",") != std::string::npos) ||
          (!cgroup_v1(controller) && l.rfind("0::", 0) == 0))
        return l.substr(b + 1);
    }
    return "";
  }
  std::string transient(const std::string& id) const { return "/run/systemd/transient/" + unit(id); }
};

TEST_F(SystemdCgroup, ContainerRunsInATransientScopeWithItsLimits) {
  auto& b = systemd_bundle("lim", {kHelper, "pause"});
  b.linux_()["resources"]["memory"] = {{"limit", 32L << 20}};
  b.linux_()["resources"]["pids"] = {{"limit", 17}};
  b.linux_()["resources"]["cpu"] = {{"quota", 50000}, {"period", 100000}};
  b.save();
  ASSERT_OK(sd({"create", "--bundle", b.dir, "lim"}));
  ASSERT_OK(rt({"start", "lim"}));
  pid_t pid = init_pid("lim");
  ASSERT_GT(pid, 0);
  // The container is in the unit's cgroup, alone: the process that held the
  // scope open until it came is gone.
  std::string cg = cgroup_of(pid, "memory");
  std::string tail = "/system.slice/" + unit("lim");
  ASSERT_TRUE(cg.size() >= tail.size() && cg.compare(cg.size() - tail.size(), tail.size(), tail) == 0) << cg;
  auto procs = split_lines(trim(read_file(cgroup_file("pids", cg, "cgroup.procs"))));
  EXPECT_EQ(procs, std::vector<std::string>{std::to_string(pid)});
  // The kernel has the limits...
  bool v2 = !cgroup_v1("memory");
  EXPECT_EQ(trim(read_file(cgroup_file("memory", cg, v2 ? "memory.max" : "memory.limit_in_bytes"))), "33554432");
  EXPECT_EQ(trim(read_file(cgroup_file("pids", cg, "pids.max"))), "17");
  if (v2) {
    EXPECT_EQ(trim(read_file(cgroup_file("cpu", cg, "cpu.max"))), "50000 100000");
  }
  // ...and so does systemd's unit, delegated to us.
  std::string unit_file = read_file(transient("lim"));
  EXPECT_TRUE(contains(unit_file, "Delegate=yes")) << unit_file;
  EXPECT_TRUE(contains(unit_file, v2 ? "MemoryMax=33554432" : "MemoryLimit=33554432")) << unit_file;
  EXPECT_TRUE(contains(unit_file, "TasksMax=17")) << unit_file;

  // update: the cgroup and systemd's record both follow.
  ASSERT_OK(rt({"update", "--memory", "67108864", "--pids-limit", "40", "lim"}));
  EXPECT_EQ(trim(read_file(cgroup_file("memory", cg, v2 ? "memory.max" : "memory.limit_in_bytes"))), "67108864");
  EXPECT_EQ(trim(read_file(cgroup_file("pids", cg, "pids.max"))), "40");
  // (A transient unit keeps its runtime changes beside it.)
  std::string dropin = transient("lim") + ".d/";
  EXPECT_TRUE(contains(read_file(dropin + (v2 ? "50-MemoryMax.conf" : "50-MemoryLimit.conf")), "67108864"))
      << read_file(dropin + "50-MemoryMax.conf");
  EXPECT_TRUE(contains(read_file(dropin + "50-TasksMax.conf"), "TasksMax=40"));

  // The freezer works on the unit's cgroup.
  ASSERT_OK(rt({"pause", "lim"}));
  EXPECT_EQ(status("lim"), "paused");
  ASSERT_OK(rt({"resume", "lim"}));
  EXPECT_EQ(status("lim"), "running");

  // delete: the unit and its cgroup are gone (delete needs no flag: the state
  // remembers the driver).
  ASSERT_OK(rt({"delete", "--force", "lim"}));
  EXPECT_FALSE(exists(transient("lim")));
  EXPECT_TRUE(wait_until([&] { return !exists(cgroup_file("pids", cg, "")); }, 5)) << cg;
}

TEST_F(SystemdCgroup, OomKillInsideTheScopeAndTheNameIsReusable) {
  auto& b = systemd_bundle("oom", {kHelper, "memhog", "128"});
  b.linux_()["resources"]["memory"] = {{"limit", 32L << 20}, {"swap", 32L << 20}};
  b.save();
  // The scope ends "failed" (oom-kill); a second container of the same name
  // still starts, as runc's and crun's do.
  for (int round = 0; round < 2; ++round) {
    auto r = sd({"run", "--bundle", b.dir, "oom"});
    EXPECT_EQ(r.code, 137) << "round " << round << ": " << r.desc();
    EXPECT_TRUE(root_entries().empty()) << "round " << round;
  }
  EXPECT_FALSE(exists(transient("oom")));
}

TEST_F(SystemdCgroup, BadLimitLeavesNoUnit) {
  auto& b = systemd_bundle("bad", {kHelper, "true"});
  b.linux_()["resources"]["cpu"] = {{"cpus", "63"}};
  b.save();
  auto r = sd({"run", "--bundle", b.dir, "bad"});
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(contains(r.err, "cpus")) << r.desc();
  EXPECT_EQ(split_lines(trim(r.err)).size(), 1u) << r.err;
  EXPECT_TRUE(root_entries().empty());
  EXPECT_TRUE(wait_until([&] { return !exists(transient("bad")); }, 5)) << "unit left: " << read_file(transient("bad"));
}

// A unit name a running container holds: the second create is refused and
// the first container, and its unit, are untouched.
TEST_F(SystemdCgroup, ALiveUnitNameIsNotTaken) {
  auto& a = systemd_bundle("same", {kHelper, "pause"});
  a.save();
  ASSERT_OK(sd({"create", "--bundle", a.dir, "same"}));
  auto& b = make_bundle("other", {kHelper, "true"}, false);
  b.linux_()["cgroupsPath"] = a.linux_()["cgroupsPath"];
  b.save();
  auto r = sd({"run", "--bundle", b.dir, "other"});
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(contains(r.err, "UnitExists")) << r.desc();
  EXPECT_EQ(split_lines(trim(r.err)).size(), 1u) << r.err;
  EXPECT_TRUE(exists(transient("same")));
  EXPECT_EQ(status("same"), "created");
  EXPECT_TRUE(pid_alive(init_pid("same")));
  ASSERT_OK(rt({"delete", "--force", "same"}));
  EXPECT_FALSE(exists(transient("same")));
}

TEST_F(SystemdCgroup, DefaultPathIsSystemSliceBerthId) {
  auto& b = make_bundle("dflt", {kHelper, "pause"}, false);
  b.linux_().erase("cgroupsPath");
  b.save();
  std::string id = "sd-" + std::to_string(::getpid()) + "-dflt";
  ASSERT_OK(sd({"create", "--bundle", b.dir, id}));
  pid_t pid = init_pid(id);
  std::string cg = cgroup_of(pid, "memory");
  EXPECT_TRUE(contains(cg, "/system.slice/berth-" + id + ".scope")) << cg;
  EXPECT_TRUE(exists("/run/systemd/transient/berth-" + id + ".scope"));
  ASSERT_OK(rt({"delete", "--force", id}));
  EXPECT_FALSE(exists("/run/systemd/transient/berth-" + id + ".scope"));
}

}  // namespace
}  // namespace berth::it
