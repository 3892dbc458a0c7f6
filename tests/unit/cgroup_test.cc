#include "cgroup/cgroup.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "util/fs.h"

namespace berth::cgroup {
namespace {

const char* kHybrid =
    "30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
    "34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
    "33 30 0:30 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset\n"
    "36 30 0:33 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer\n"
    "37 30 0:34 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
    "39 30 0:36 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd\n"
    "40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";

TEST(Layout, DetectsHybrid) {
  Layout l = parse_layout(kHybrid);
  EXPECT_EQ(l.mode, Mode::hybrid);
  EXPECT_EQ(l.unified_root, "/sys/fs/cgroup/unified");
  ASSERT_EQ(l.v1.size(), 6u);
  EXPECT_EQ(l.v1[4].controllers, (std::vector<std::string>{"cpu", "cpuacct"}));
  EXPECT_EQ(l.v1[5].controllers, (std::vector<std::string>{"name=systemd"}));
  EXPECT_TRUE(has_controller(l.v1[4], "cpuacct"));
}

TEST(Layout, DetectsUnifiedAndLegacy) {
  Layout u = parse_layout("25 22 0:23 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n");
  EXPECT_EQ(u.mode, Mode::unified);
  EXPECT_TRUE(u.v1.empty());
  Layout l = parse_layout("31 30 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n");
  EXPECT_EQ(l.mode, Mode::legacy);
}

TEST(Conversions, SharesToWeightMatchesRuncAndCrun) {
  EXPECT_EQ(shares_to_weight(2), 1u);
  EXPECT_EQ(shares_to_weight(1024), 39u);
  EXPECT_EQ(shares_to_weight(262144), 10000u);
  EXPECT_EQ(shares_to_weight(0), 0u);
  EXPECT_EQ(cpu_max(50000, 100000), "50000 100000");
  EXPECT_EQ(cpu_max(std::nullopt, 20000), "max 20000");
  EXPECT_EQ(cpu_max(-1, std::nullopt), "max 100000");
}

class FixtureTree : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/berth-cg-XXXXXX";
    ASSERT_TRUE(::mkdtemp(tmpl));
    root_ = tmpl;
  }
  void TearDown() override { (void)remove_tree(root_); }
  void touch(const std::string& p, const std::string& v = "") {
    ASSERT_TRUE(mkdir_p(p.substr(0, p.find_last_of('/'))));
    ASSERT_TRUE(atomic_write_file(p, v, 0644));
  }
  std::string root_;
};

// cgroupfs creates the control files of a new directory; a plain temp dir
// doesn't, so the fixture pre-creates the leaf with the files a write needs.
TEST_F(FixtureTree, V2AppliesLimitsToFiles) {
  Layout l;
  l.mode = Mode::unified;
  l.unified_root = root_;
  for (auto f : {"memory.max", "memory.swap.max", "cpu.weight", "cpu.max", "pids.max", "cpuset.cpus"})
    touch(root_ + "/a/b/" + f);
  auto m = open(l, "/a/b");
  ASSERT_TRUE(m);
  oci::Resources r;
  r.memory = oci::Resources::Memory{};
  r.memory->limit = 1 << 20;
  r.memory->swap = 3 << 20;
  r.cpu = oci::Resources::Cpu{};
  r.cpu->shares = 1024;
  r.cpu->quota = 50000;
  r.cpu->period = 100000;
  r.cpu->cpus = "0";
  r.pids = oci::Resources::Pids{20};
  ASSERT_TRUE((*m)->apply(r));
  EXPECT_EQ(*read_file(root_ + "/a/b/memory.max"), "1048576");
  EXPECT_EQ(*read_file(root_ + "/a/b/memory.swap.max"), "2097152");
  EXPECT_EQ(*read_file(root_ + "/a/b/cpu.weight"), "39");
  EXPECT_EQ(*read_file(root_ + "/a/b/cpu.max"), "50000 100000");
  EXPECT_EQ(*read_file(root_ + "/a/b/pids.max"), "20");
  EXPECT_EQ(*read_file(root_ + "/a/b/cpuset.cpus"), "0");
}

TEST_F(FixtureTree, V2RefusesSwapBelowLimitAndBadUnifiedKey) {
  Layout l;
  l.mode = Mode::unified;
  l.unified_root = root_;
  touch(root_ + "/c/memory.max");
  auto m = open(l, "/c");
  ASSERT_TRUE(m);
  oci::Resources r;
  r.memory = oci::Resources::Memory{};
  r.memory->limit = 2 << 20;
  r.memory->swap = 1 << 20;
  auto e = (*m)->apply(r);
  ASSERT_FALSE(e);
  EXPECT_NE(e.error().msg.find("linux.resources.memory.swap"), std::string::npos);
  oci::Resources u;
  u.unified["../../etc/passwd"] = "x";
  auto e2 = (*m)->apply(u);
  ASSERT_FALSE(e2);
  EXPECT_NE(e2.error().msg.find("invalid key"), std::string::npos);
}

TEST_F(FixtureTree, V1WritesPerController) {
  Layout l;
  l.mode = Mode::legacy;
  for (auto c : {"memory", "cpu", "pids", "devices"}) {
    l.v1.push_back({root_ + "/" + c, {c}});
  }
  touch(root_ + "/memory/x/memory.limit_in_bytes");
  touch(root_ + "/cpu/x/cpu.shares");
  touch(root_ + "/cpu/x/cpu.cfs_quota_us");
  touch(root_ + "/pids/x/pids.max");
  touch(root_ + "/devices/x/devices.deny");
  touch(root_ + "/devices/x/devices.allow");
  auto m = open(l, "x");
  ASSERT_TRUE(m);
  EXPECT_EQ((*m)->path(), "/x");
  oci::Resources r;
  r.memory = oci::Resources::Memory{};
  r.memory->limit = 4096 * 1024;
  r.cpu = oci::Resources::Cpu{};
  r.cpu->shares = 512;
  r.cpu->quota = 25000;
  r.pids = oci::Resources::Pids{0};
  oci::DeviceCgroupRule deny;
  deny.access = "rwm";
  r.devices.push_back(deny);
  ASSERT_TRUE((*m)->apply(r));
  EXPECT_EQ(*read_file(root_ + "/memory/x/memory.limit_in_bytes"), "4194304");
  EXPECT_EQ(*read_file(root_ + "/cpu/x/cpu.shares"), "512");
  EXPECT_EQ(*read_file(root_ + "/cpu/x/cpu.cfs_quota_us"), "25000");
  EXPECT_EQ(*read_file(root_ + "/pids/x/pids.max"), "max");
  EXPECT_EQ(*read_file(root_ + "/devices/x/devices.deny"), "a");
}

TEST_F(FixtureTree, V1PutsEveryFileBackWhenALaterWriteFails) {
  Layout l;
  l.mode = Mode::legacy;
  for (auto c : {"memory", "cpu", "pids"}) l.v1.push_back({root_ + "/" + c, {c}});
  touch(root_ + "/memory/x/memory.limit_in_bytes", "104857600\n");
  touch(root_ + "/cpu/x/cpu.shares", "1024\n");
  touch(root_ + "/cpu/x/cpu.cfs_period_us", "100000\n");
  // A directory where a control file should be: the write fails (EISDIR).
  ASSERT_TRUE(mkdir_p(root_ + "/cpu/x/cpu.cfs_quota_us"));
  touch(root_ + "/pids/x/pids.max", "max\n");
  auto m = open(l, "/x");
  ASSERT_TRUE(m);
  oci::Resources r;
  r.memory = oci::Resources::Memory{};
  r.memory->limit = 1 << 30;
  r.cpu = oci::Resources::Cpu{};
  r.cpu->shares = 512;
  r.cpu->period = 50000;
  r.cpu->quota = 25000;
  r.pids = oci::Resources::Pids{7};
  auto e = (*m)->apply(r);
  ASSERT_FALSE(e);
  EXPECT_NE(e.error().str().find("linux.resources.cpu.quota \"25000\""), std::string::npos) << e.error().str();
  EXPECT_EQ(*read_file(root_ + "/memory/x/memory.limit_in_bytes"), "104857600");
  EXPECT_EQ(*read_file(root_ + "/cpu/x/cpu.shares"), "1024");
  EXPECT_EQ(*read_file(root_ + "/cpu/x/cpu.cfs_period_us"), "100000");
  EXPECT_EQ(*read_file(root_ + "/pids/x/pids.max"), "max\n");  // never written
}

TEST_F(FixtureTree, V1ChecksCpusetAndDeviceRulesBeforeWriting) {
  Layout l;
  l.mode = Mode::legacy;
  for (auto c : {"cpuset", "devices", "pids"}) l.v1.push_back({root_ + "/" + c, {c}});
  touch(root_ + "/cpuset/cpuset.effective_cpus", "0-3\n");
  touch(root_ + "/cpuset/x/cpuset.cpus", "0-3\n");
  touch(root_ + "/pids/x/pids.max", "max");
  touch(root_ + "/devices/x/devices.allow");
  auto m = open(l, "/x");
  ASSERT_TRUE(m);
  oci::Resources r;
  r.cpu = oci::Resources::Cpu{};
  r.cpu->cpus = "2,9";
  auto e = (*m)->apply(r);
  ASSERT_FALSE(e);
  EXPECT_EQ(e.error().str(), "linux.resources.cpu.cpus \"2,9\": 9 is not among this host's 0-3");
  r.cpu->cpus = "3-1";
  EXPECT_FALSE((*m)->apply(r));
  r.cpu->cpus = "1-3";
  EXPECT_TRUE((*m)->apply(r));
  EXPECT_EQ(*read_file(root_ + "/cpuset/x/cpuset.cpus"), "1-3");

  oci::Resources d;
  d.pids = oci::Resources::Pids{5};
  oci::DeviceCgroupRule bad;
  bad.allow = true;
  bad.type = "c";
  bad.access = "rwx";
  d.devices.push_back(bad);
  auto e2 = (*m)->apply(d);
  ASSERT_FALSE(e2);
  EXPECT_NE(e2.error().str().find("linux.resources.devices[0].access \"rwx\""), std::string::npos);
  EXPECT_EQ(*read_file(root_ + "/pids/x/pids.max"), "max");
  oci::Resources u;
  u.unified["memory.high"] = "1";
  auto e3 = (*m)->apply(u);
  ASSERT_FALSE(e3);
  EXPECT_NE(e3.error().str().find("cgroup v2 key"), std::string::npos);
}

TEST_F(FixtureTree, V2BlockIoAndCpuMaxUpdates) {
  Layout l;
  l.mode = Mode::unified;
  l.unified_root = root_;
  touch(root_ + "/c/io.weight", "default 100\n");
  touch(root_ + "/c/io.max", "8:0 rbps=1000 wbps=max riops=max wiops=max\n");
  touch(root_ + "/c/cpu.max", "20000 100000\n");
  auto m = open(l, "/c");
  ASSERT_TRUE(m);
  oci::Resources r;
  r.block_io = oci::Resources::BlockIo{};
  r.block_io->weight = 500;
  r.block_io->throttle_write_bps.push_back({7, 3, 4096});
  r.cpu = oci::Resources::Cpu{};
  r.cpu->period = 50000;  // quota unchanged
  ASSERT_TRUE((*m)->apply(r));
  EXPECT_EQ(*read_file(root_ + "/c/io.weight"), "default 4950");
  EXPECT_EQ(*read_file(root_ + "/c/io.max"), "7:3 wbps=4096");
  EXPECT_EQ(*read_file(root_ + "/c/cpu.max"), "20000 50000");

  // Rolled back: the device's old line, or "max" for one the file did not list.
  touch(root_ + "/c/io.max", "8:0 rbps=1000 wbps=max riops=max wiops=max\n");
  oci::Resources bad;
  bad.block_io = oci::Resources::BlockIo{};
  bad.block_io->throttle_read_bps.push_back({8, 0, 1});
  bad.hugepage_limits.push_back({"3MB", 1 << 20});  // fails after io.max was written
  ASSERT_FALSE((*m)->apply(bad));
  EXPECT_EQ(*read_file(root_ + "/c/io.max"), "8:0 rbps=1000 wbps=max riops=max wiops=max");
}

TEST_F(FixtureTree, V2RdmaWritesOnlyTheGivenLimits) {
  Layout l;
  l.mode = Mode::unified;
  l.unified_root = root_;
  touch(root_ + "/r/rdma.max", "mlx4_0 hca_handle=max hca_object=max\n");
  auto m = open(l, "/r");
  ASSERT_TRUE(m);
  oci::Resources r;
  r.rdma["mlx4_0"] = {std::nullopt, 2000u};
  ASSERT_TRUE((*m)->apply(r));
  EXPECT_EQ(*read_file(root_ + "/r/rdma.max"), "mlx4_0 hca_object=2000");
}

TEST(Conversions, BlkioWeightToIoWeight) {
  EXPECT_EQ(blkio_to_io_weight(10), 1u);
  EXPECT_EQ(blkio_to_io_weight(500), 4950u);
  EXPECT_EQ(blkio_to_io_weight(1000), 10000u);
}

TEST(Open, RefusesRootAndEscapes) {
  Layout l;
  l.mode = Mode::unified;
  l.unified_root = "/sys/fs/cgroup";
  EXPECT_FALSE(open(l, "/"));
  EXPECT_FALSE(open(l, ""));
  auto m = open(l, "/a/../../b");
  ASSERT_TRUE(m);  // cleaned lexically to /b: stays inside the hierarchy
  EXPECT_EQ((*m)->path(), "/b");
}

}  // namespace
}  // namespace berth::cgroup
