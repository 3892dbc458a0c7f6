#include "cgroup/stats.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <limits>
#include <nlohmann/json.hpp>

#include "util/fs.h"

namespace berth::cgroup {
namespace {

constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();

class StatsFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/berth-stats-XXXXXX";
    ASSERT_TRUE(::mkdtemp(tmpl));
    root_ = tmpl;
  }
  void TearDown() override { (void)remove_tree(root_); }
  void put(const std::string& rel, const std::string& v) {
    std::string p = root_ + "/" + rel;
    ASSERT_TRUE(mkdir_p(p.substr(0, p.find_last_of('/'))));
    ASSERT_TRUE(atomic_write_file(p, v, 0644));
  }
  void dir(const std::string& rel) { ASSERT_TRUE(mkdir_p(root_ + "/" + rel)); }
  std::string root_;
};

uint64_t ticks_ns(uint64_t ticks) { return ticks * 1000000000ull / static_cast<uint64_t>(::sysconf(_SC_CLK_TCK)); }

// A v1 host with cpu,cpuacct co-mounted, as on most distributions, the throttle
// blkio files, and a kernel without memory.kmem.tcp.*.
TEST_F(StatsFixture, StatsV1ParsesEveryController) {
  const std::string cpu = "cpu,cpuacct/ctr/";
  put(cpu + "cpuacct.usage", "123456789\n");
  put(cpu + "cpuacct.usage_percpu", "60000000 63456789 \n");
  put(cpu + "cpuacct.usage_percpu_sys", "10000000 20000000 \n");
  put(cpu + "cpuacct.usage_percpu_user", "50000000 43456789 \n");
  put(cpu + "cpuacct.stat", "user 7\nsystem 3\n");
  put(cpu + "cpu.stat", "nr_periods 40\nnr_throttled 5\nthrottled_time 123000\nnr_bursts 1\nburst_time 999\n");

  const std::string mem = "memory/ctr/";
  put(mem + "memory.usage_in_bytes", "4194304\n");
  put(mem + "memory.max_usage_in_bytes", "8388608\n");
  put(mem + "memory.limit_in_bytes", "9223372036854771712\n");
  put(mem + "memory.failcnt", "2\n");
  put(mem + "memory.memsw.usage_in_bytes", "5242880\n");
  put(mem + "memory.memsw.max_usage_in_bytes", "9437184\n");
  put(mem + "memory.memsw.limit_in_bytes", "9223372036854771712\n");
  put(mem + "memory.memsw.failcnt", "0\n");
  put(mem + "memory.kmem.usage_in_bytes", "65536\n");
  put(mem + "memory.kmem.max_usage_in_bytes", "131072\n");
  put(mem + "memory.kmem.limit_in_bytes", "9223372036854771712\n");
  put(mem + "memory.kmem.failcnt", "0\n");
  put(mem + "memory.stat",
      "cache 1000\nrss 2000\nrss_huge 0\nmapped_file 0\npgfault 77\nhierarchical_memory_limit "
      "9223372036854771712\ntotal_cache 4096\ntotal_rss 8192\n");
  put(mem + "memory.use_hierarchy", "1\n");
  put(mem + "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n");

  put("pids/ctr/pids.current", "4\n");
  put("pids/ctr/pids.max", "max\n");

  const std::string blk = "blkio/ctr/";
  put(blk + "blkio.throttle.io_service_bytes_recursive",
      "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:0 Async 12288\n8:0 Discard 0\n8:0 Total 12288\nTotal 12288\n");
  put(blk + "blkio.throttle.io_serviced_recursive",
      "8:0 Read 1\n8:0 Write 2\n8:0 Sync 0\n8:0 Async 3\n8:0 Discard 0\n8:0 Total 3\nTotal 3\n");
  // Present but not preferred: the throttle counters win.
  put(blk + "blkio.bfq.io_service_bytes_recursive", "8:0 Read 1\nTotal 1\n");

  auto sizes = hugepage_sizes();
  for (auto& sz : sizes) {
    put("hugetlb/ctr/hugetlb." + sz + ".usage_in_bytes", "2097152\n");
    put("hugetlb/ctr/hugetlb." + sz + ".max_usage_in_bytes", "4194304\n");
    put("hugetlb/ctr/hugetlb." + sz + ".failcnt", "1\n");
  }
  dir("hugetlb/ctr");

  std::map<std::string, std::string> dirs = {
      {"cpu", root_ + "/" + cpu},       {"cpuacct", root_ + "/" + cpu},    {"memory", root_ + "/" + mem},
      {"pids", root_ + "/pids/ctr"},    {"blkio", root_ + "/" + blk},      {"hugetlb", root_ + "/hugetlb/ctr"}};
  auto r = read_stats_v1(dirs);
  ASSERT_TRUE(r) << r.error().str();
  const Stats& s = *r;

  EXPECT_EQ(s.cpu.total, 123456789u);
  EXPECT_EQ(s.cpu.percpu, (std::vector<uint64_t>{60000000, 63456789}));
  EXPECT_EQ(s.cpu.percpu_kernel, (std::vector<uint64_t>{10000000, 20000000}));
  EXPECT_EQ(s.cpu.percpu_user, (std::vector<uint64_t>{50000000, 43456789}));
  EXPECT_EQ(s.cpu.user, ticks_ns(7));
  EXPECT_EQ(s.cpu.kernel, ticks_ns(3));
  EXPECT_EQ(s.cpu.periods, 40u);
  EXPECT_EQ(s.cpu.throttled_periods, 5u);
  EXPECT_EQ(s.cpu.throttled_time, 123000u);
  EXPECT_EQ(s.cpu.burst_periods, 1u);
  EXPECT_EQ(s.cpu.burst_time, 999u);

  EXPECT_EQ(s.memory.usage.usage, 4194304u);
  EXPECT_EQ(s.memory.usage.max, 8388608u);
  EXPECT_EQ(s.memory.usage.limit, 9223372036854771712u);
  EXPECT_EQ(s.memory.usage.failcnt, 2u);
  EXPECT_EQ(s.memory.swap.usage, 5242880u);
  EXPECT_EQ(s.memory.swap.max, 9437184u);
  EXPECT_EQ(s.memory.kernel.usage, 65536u);
  EXPECT_EQ(s.memory.kernel.max, 131072u);
  EXPECT_EQ(s.memory.kernel_tcp.usage, 0u);  // no kmem.tcp files: zeros
  EXPECT_EQ(s.memory.kernel_tcp.limit, 0u);
  EXPECT_EQ(s.memory.cache, 4096u);  // total_cache over cache
  EXPECT_EQ(s.memory.raw.size(), 8u);
  EXPECT_EQ(s.memory.raw.at("pgfault"), 77u);
  EXPECT_EQ(s.memory.raw.at("cache"), 1000u);
  EXPECT_TRUE(s.memory.use_hierarchy);
  EXPECT_EQ(s.oom_kills, 3u);

  EXPECT_EQ(s.pids.current, 4u);
  EXPECT_EQ(s.pids.limit, 0u);  // "max"

  ASSERT_EQ(s.blkio.service_bytes.size(), 6u);  // final "Total" line skipped
  EXPECT_EQ(s.blkio.service_bytes[0].major, 8u);
  EXPECT_EQ(s.blkio.service_bytes[0].minor, 0u);
  EXPECT_EQ(s.blkio.service_bytes[0].op, "Read");
  EXPECT_EQ(s.blkio.service_bytes[0].value, 4096u);
  EXPECT_EQ(s.blkio.service_bytes[1].op, "Write");
  EXPECT_EQ(s.blkio.service_bytes[1].value, 8192u);
  EXPECT_EQ(s.blkio.service_bytes[5].op, "Total");
  ASSERT_EQ(s.blkio.serviced.size(), 6u);
  EXPECT_EQ(s.blkio.serviced[3].op, "Async");
  EXPECT_EQ(s.blkio.serviced[3].value, 3u);

  ASSERT_EQ(s.hugetlb.size(), sizes.size());
  for (auto& sz : sizes) {
    EXPECT_EQ(s.hugetlb.at(sz).usage, 2097152u);
    EXPECT_EQ(s.hugetlb.at(sz).max, 4194304u);
    EXPECT_EQ(s.hugetlb.at(sz).failcnt, 1u);
  }
}

// Controllers not mounted leave zeros; the CFQ/BFQ blkio files are read when
// the throttle ones are absent; hugetlb comes from the hybrid's v2 directory.
TEST_F(StatsFixture, StatsV1FallbacksAndMissingControllers) {
  put("memory/ctr/memory.usage_in_bytes", "100\n");
  put("memory/ctr/memory.stat", "cache 55\nrss 45\n");
  put("blkio/ctr/blkio.bfq.io_service_bytes_recursive", "259:0 Read 512\n259:0 Write 1024\nTotal 1536\n");
  put("blkio/ctr/blkio.bfq.io_serviced_recursive", "259:0 Read 1\n259:0 Write 2\nTotal 3\n");
  auto sizes = hugepage_sizes();
  for (auto& sz : sizes) {
    put("unified/ctr/hugetlb." + sz + ".current", "4194304\n");
    put("unified/ctr/hugetlb." + sz + ".events", "max 6\n");
  }
  dir("unified/ctr");

  auto r = read_stats_v1({{"memory", root_ + "/memory/ctr"}, {"blkio", root_ + "/blkio/ctr"}},
                         root_ + "/unified/ctr");
  ASSERT_TRUE(r) << r.error().str();
  EXPECT_EQ(r->cpu.total, 0u);
  EXPECT_TRUE(r->cpu.percpu.empty());
  EXPECT_EQ(r->pids.current, 0u);
  EXPECT_EQ(r->memory.usage.usage, 100u);
  EXPECT_EQ(r->memory.usage.limit, 0u);  // file absent
  EXPECT_EQ(r->memory.cache, 55u);       // no total_cache: cache
  EXPECT_FALSE(r->memory.use_hierarchy);
  EXPECT_EQ(r->oom_kills, 0u);
  ASSERT_EQ(r->blkio.service_bytes.size(), 2u);
  EXPECT_EQ(r->blkio.service_bytes[1].major, 259u);
  EXPECT_EQ(r->blkio.service_bytes[1].op, "Write");
  EXPECT_EQ(r->blkio.service_bytes[1].value, 1024u);
  EXPECT_EQ(r->blkio.serviced.size(), 2u);
  ASSERT_EQ(r->hugetlb.size(), sizes.size());
  for (auto& sz : sizes) {
    EXPECT_EQ(r->hugetlb.at(sz).usage, 4194304u);
    EXPECT_EQ(r->hugetlb.at(sz).max, 0u);
    EXPECT_EQ(r->hugetlb.at(sz).failcnt, 6u);
  }

  auto none = read_stats_v1({});
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->hugetlb.empty());
  EXPECT_TRUE(none->memory.raw.empty());
}

TEST_F(StatsFixture, StatsV2ParsesEveryController) {
  put("c/cpu.stat",
      "usage_usec 2000\nuser_usec 1500\nsystem_usec 500\ncore_sched.force_idle_usec 0\nnr_periods 10\n"
      "nr_throttled 2\nthrottled_usec 300\nnr_bursts 1\nburst_usec 40\n");
  put("c/memory.current", "1048576\n");
  put("c/memory.peak", "2097152\n");
  put("c/memory.max", "4194304\n");
  put("c/memory.swap.current", "65536\n");
  put("c/memory.swap.max", "1048576\n");
  put("c/memory.swap.events", "high 0\nmax 4\nfail 0\n");
  put("c/memory.events", "low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\noom_group_kill 0\n");
  put("c/memory.stat", "anon 4096\nfile 8192\nkernel 1024\nslab 512\npgfault 9\n");
  put("c/pids.current", "3\n");
  put("c/pids.max", "100\n");
  put("c/io.stat",
      "8:0 rbytes=1024 wbytes=2048 rios=3 wios=4 dbytes=0 dios=0\n"
      "253:1 rbytes=5 wbytes=6 rios=7 wios=8 dbytes=9 dios=10 cost.vrate=100.00 cost.usage=3\n");
  auto sizes = hugepage_sizes();
  for (auto& sz : sizes) {
    put("c/hugetlb." + sz + ".current", "0\n");
    put("c/hugetlb." + sz + ".events", "max 2\n");
  }

  auto r = read_stats_v2(root_ + "/c");
  ASSERT_TRUE(r) << r.error().str();
  const Stats& s = *r;
  EXPECT_EQ(s.cpu.total, 2000000u);
  EXPECT_EQ(s.cpu.user, 1500000u);
  EXPECT_EQ(s.cpu.kernel, 500000u);
  EXPECT_TRUE(s.cpu.percpu.empty());
  EXPECT_EQ(s.cpu.periods, 10u);
  EXPECT_EQ(s.cpu.throttled_periods, 2u);
  EXPECT_EQ(s.cpu.throttled_time, 300000u);
  EXPECT_EQ(s.cpu.burst_periods, 1u);
  EXPECT_EQ(s.cpu.burst_time, 40000u);

  EXPECT_EQ(s.memory.usage.usage, 1048576u);
  EXPECT_EQ(s.memory.usage.max, 2097152u);
  EXPECT_EQ(s.memory.usage.limit, 4194304u);
  EXPECT_EQ(s.memory.usage.failcnt, 7u);
  EXPECT_EQ(s.memory.swap.usage, 1048576u + 65536u);   // memory + swap, as v1's memsw
  EXPECT_EQ(s.memory.swap.limit, 4194304u + 1048576u);
  EXPECT_EQ(s.memory.swap.max, 0u);
  EXPECT_EQ(s.memory.swap.failcnt, 4u);
  EXPECT_EQ(s.memory.cache, 8192u);
  EXPECT_EQ(s.memory.raw.size(), 5u);
  EXPECT_EQ(s.oom_kills, 1u);

  EXPECT_EQ(s.pids.current, 3u);
  EXPECT_EQ(s.pids.limit, 100u);

  ASSERT_EQ(s.blkio.service_bytes.size(), 6u);
  EXPECT_EQ(s.blkio.service_bytes[0].op, "Read");
  EXPECT_EQ(s.blkio.service_bytes[0].value, 1024u);
  EXPECT_EQ(s.blkio.service_bytes[1].op, "Write");
  EXPECT_EQ(s.blkio.service_bytes[1].value, 2048u);
  EXPECT_EQ(s.blkio.service_bytes[5].major, 253u);
  EXPECT_EQ(s.blkio.service_bytes[5].minor, 1u);
  EXPECT_EQ(s.blkio.service_bytes[5].op, "Discard");
  EXPECT_EQ(s.blkio.service_bytes[5].value, 9u);
  ASSERT_EQ(s.blkio.serviced.size(), 6u);
  EXPECT_EQ(s.blkio.serviced[4].op, "Write");
  EXPECT_EQ(s.blkio.serviced[4].value, 8u);

  ASSERT_EQ(s.hugetlb.size(), sizes.size());
  for (auto& sz : sizes) EXPECT_EQ(s.hugetlb.at(sz).failcnt, 2u);
}

TEST_F(StatsFixture, StatsV2UnlimitedAndSparse) {
  put("c/memory.current", "10\n");
  put("c/memory.max", "max\n");
  put("c/memory.swap.current", "5\n");
  put("c/memory.swap.max", "max\n");
  put("c/pids.current", "1\n");
  put("c/pids.max", "max\n");
  auto r = read_stats_v2(root_ + "/c");
  ASSERT_TRUE(r) << r.error().str();
  EXPECT_EQ(r->memory.usage.limit, kMax);
  EXPECT_EQ(r->memory.swap.usage, 15u);
  EXPECT_EQ(r->memory.swap.limit, kMax);
  EXPECT_EQ(r->pids.limit, 0u);
  EXPECT_EQ(r->cpu.total, 0u);  // no cpu.stat
  EXPECT_TRUE(r->blkio.service_bytes.empty());
  EXPECT_TRUE(r->hugetlb.empty());  // hugetlb not enabled here

  // Swap accounting off: no memory.swap.* at all leaves swap zero.
  put("d/memory.current", "10\n");
  put("d/memory.max", "100\n");
  auto d = read_stats_v2(root_ + "/d");
  ASSERT_TRUE(d) << d.error().str();
  EXPECT_EQ(d->memory.swap.usage, 0u);
  EXPECT_EQ(d->memory.swap.limit, 0u);
}

TEST_F(StatsFixture, StatsParseErrorsNameTheFile) {
  put("m/memory.usage_in_bytes", "12abc\n");
  auto e1 = read_stats_v1({{"memory", root_ + "/m"}});
  ASSERT_FALSE(e1);
  EXPECT_NE(e1.error().msg.find(root_ + "/m/memory.usage_in_bytes"), std::string::npos) << e1.error().str();

  put("c/cpu.stat", "usage_usec 10\nnr_periods\n");
  auto e2 = read_stats_v2(root_ + "/c");
  ASSERT_FALSE(e2);
  EXPECT_NE(e2.error().msg.find(root_ + "/c/cpu.stat"), std::string::npos) << e2.error().str();

  put("i/io.stat", "8:0 rbytes=x wbytes=1\n");
  auto e3 = read_stats_v2(root_ + "/i");
  ASSERT_FALSE(e3);
  EXPECT_NE(e3.error().msg.find(root_ + "/i/io.stat"), std::string::npos) << e3.error().str();

  put("b/blkio.throttle.io_service_bytes_recursive", "8-0 Read 1\nTotal 1\n");
  auto e4 = read_stats_v1({{"blkio", root_ + "/b"}});
  ASSERT_FALSE(e4);
  EXPECT_NE(e4.error().msg.find("blkio.throttle.io_service_bytes_recursive"), std::string::npos);

  // A cgroup directory that is gone is an error, not a row of zeros.
  auto e5 = read_stats_v2(root_ + "/nonexistent");
  ASSERT_FALSE(e5);
  EXPECT_EQ(e5.error().err, ENOENT);
  auto e6 = read_stats_v1({{"pids", root_ + "/nonexistent"}});
  ASSERT_FALSE(e6);
}

TEST(StatsJson, RuncFieldNamesAndOmitEmpty) {
  Stats s;
  s.cpu.total = 1000;
  s.cpu.kernel = 0;
  s.cpu.user = 700;
  s.cpu.periods = 4;
  s.cpu.throttled_periods = 1;
  s.cpu.throttled_time = 50;
  s.memory.cache = 4096;
  s.memory.usage = {kMax, 2048, 8192, 0};
  s.memory.swap = {kMax, 3000, 0, 0};
  s.memory.raw = {{"file", 4096}, {"anon", 12}};
  s.pids = {5, 0};
  s.blkio.service_bytes = {{8, 0, "Read", 100}, {8, 0, "Write", 0}};
  s.hugetlb["2MB"] = {0, 0, 3};

  auto j = nlohmann::json::parse(stats_json(s));
  ASSERT_TRUE(j.is_object());
  for (auto k : {"cpu", "memory", "pids", "blkio", "hugetlb"}) EXPECT_TRUE(j.contains(k)) << k;

  auto& u = j["cpu"]["usage"];
  EXPECT_EQ(u["total"], 1000u);
  EXPECT_EQ(u["kernel"], 0u);  // not omitempty in runc
  EXPECT_EQ(u["user"], 700u);
  EXPECT_FALSE(u.contains("percpu"));  // empty: omitted
  EXPECT_FALSE(u.contains("percpu_kernel"));
  EXPECT_FALSE(u.contains("percpu_user"));
  auto& t = j["cpu"]["throttling"];
  EXPECT_EQ(t["periods"], 4u);
  EXPECT_EQ(t["throttledPeriods"], 1u);
  EXPECT_EQ(t["throttledTime"], 50u);

  auto& m = j["memory"];
  EXPECT_EQ(m["cache"], 4096u);
  EXPECT_EQ(m["usage"]["limit"].get<uint64_t>(), kMax);
  EXPECT_EQ(m["usage"]["usage"], 2048u);
  EXPECT_EQ(m["usage"]["max"], 8192u);
  EXPECT_EQ(m["usage"]["failcnt"], 0u);
  EXPECT_EQ(m["swap"]["usage"], 3000u);
  EXPECT_FALSE(m["swap"].contains("max"));
  EXPECT_TRUE(m.contains("kernel"));
  EXPECT_EQ(m["kernelTCP"]["limit"], 0u);
  EXPECT_EQ(m["kernelTCP"]["failcnt"], 0u);
  EXPECT_FALSE(m["kernelTCP"].contains("usage"));
  EXPECT_EQ(m["raw"]["file"], 4096u);
  EXPECT_EQ(m["raw"]["anon"], 12u);

  EXPECT_EQ(j["pids"]["current"], 5u);
  EXPECT_FALSE(j["pids"].contains("limit"));

  auto& b = j["blkio"]["ioServiceBytesRecursive"];
  ASSERT_EQ(b.size(), 2u);
  EXPECT_EQ(b[0]["major"], 8u);
  EXPECT_FALSE(b[0].contains("minor"));  // Go omits a zero minor
  EXPECT_EQ(b[0]["op"], "Read");
  EXPECT_EQ(b[0]["value"], 100u);
  EXPECT_FALSE(b[1].contains("value"));
  EXPECT_FALSE(j["blkio"].contains("ioServicedRecursive"));

  EXPECT_EQ(j["hugetlb"]["2MB"]["failcnt"], 3u);
  EXPECT_FALSE(j["hugetlb"]["2MB"].contains("usage"));

  // Nothing read at all: empty lists and raw disappear, the objects stay.
  auto z = nlohmann::json::parse(stats_json(Stats{}));
  EXPECT_FALSE(z["memory"].contains("raw"));
  EXPECT_FALSE(z["memory"].contains("cache"));
  EXPECT_TRUE(z["blkio"].is_object());
  EXPECT_TRUE(z["blkio"].empty());
  EXPECT_TRUE(z["hugetlb"].is_object());
  EXPECT_TRUE(z["hugetlb"].empty());
  EXPECT_TRUE(z["cpu"]["throttling"].empty());
}

TEST_F(StatsFixture, StatsHugepageSizesNamesLikeTheKernel) {
  for (auto d : {"hugepages-2048kB", "hugepages-1048576kB", "hugepages-64kB", "hugepages-32768kB",
                 "hugepages-16777216kB", "not-hugepages", "hugepages-xkB"})
    dir(std::string("sys/") + d);
  EXPECT_EQ(hugepage_sizes(root_ + "/sys"), (std::vector<std::string>{"64KB", "2MB", "32MB", "1GB", "16GB"}));
  EXPECT_TRUE(hugepage_sizes(root_ + "/missing").empty());
}

}  // namespace
}  // namespace berth::cgroup
