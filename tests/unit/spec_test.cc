#include "oci/spec.h"

#include <gtest/gtest.h>

namespace berth::oci {
namespace {

std::string minimal(const std::string& extra = "") {
  return R"({"ociVersion":"1.3.0","root":{"path":"rootfs"},)"
         R"("process":{"user":{"uid":0,"gid":0},"args":["sh"],"cwd":"/"})" +
         extra + "}";
}

TEST(Spec, DefaultSpecParsesAndHasRuncDefaults) {
  auto s = parse_spec(default_spec_json(false));
  ASSERT_TRUE(s) << s.error().str();
  EXPECT_EQ(s->root_path, "rootfs");
  EXPECT_TRUE(s->root_readonly);
  ASSERT_TRUE(s->process);
  EXPECT_TRUE(s->process->no_new_privileges);
  EXPECT_EQ(s->process->capabilities->bounding.size(), 3u);
  EXPECT_TRUE(s->ns("pid"));
  EXPECT_TRUE(s->ns("network"));
  EXPECT_EQ(s->mounts.size(), 7u);
  ASSERT_EQ(s->linux->resources->devices.size(), 1u);
  EXPECT_FALSE(s->linux->resources->devices[0].allow);
}

TEST(Spec, RootlessDefaultHasUserNamespaceAndMappings) {
  auto s = parse_spec(default_spec_json(true));
  ASSERT_TRUE(s) << s.error().str();
  EXPECT_TRUE(s->ns("user"));
  EXPECT_FALSE(s->ns("network"));
  EXPECT_EQ(s->linux->uid_mappings.size(), 1u);
}

TEST(Spec, ErrorsNameTheField) {
  struct Case {
    std::string json, want;
  } cases[] = {
      {"{", "not valid JSON"},
      {R"({"root":{"path":"r"}})", "ociVersion is required"},
      {minimal().replace(minimal().find(R"(["sh"])"), 6, R"("sh")"), "process.args"},
      {minimal(R"(,"linux":{"namespaces":[{"type":"foo"}]})"), "unknown namespace type \"foo\""},
      {minimal(R"(,"linux":{"namespaces":[{"type":"pid"},{"type":"pid"}]})"), "duplicate namespace"},
      {minimal(R"(,"linux":{"resources":{"memory":{"limit":"x"}}})"), "linux.resources.memory.limit"},
      {minimal(R"(,"linux":{"namespaces":[{"type":"user"}]})"), "uidMappings"},
      {minimal(R"(,"hostname":"h")"), "uts namespace"},
      {minimal(R"(,"linux":{"devices":[{"type":"x","path":"/dev/x"}]})"), "linux.devices[0].type"},
      {minimal(R"(,"linux":{"rootfsPropagation":"sideways"})"), "rootfsPropagation"},
      {minimal(R"(,"mounts":[{"type":"tmpfs"}])"), "mounts[0]: destination is required"},
      {minimal(R"(,"hooks":{"prestart":[{"path":"rel"}]})"), "hooks.prestart[0].path"},
      {minimal(R"(,"linux":{"timeOffsets":{"monotonic":{"secs":1}}})"), "timeOffsets"},
  };
  for (auto& c : cases) {
    auto s = parse_spec(c.json);
    ASSERT_FALSE(s) << c.json;
    EXPECT_NE(s.error().msg.find(c.want), std::string::npos) << s.error().msg << " / want " << c.want;
    EXPECT_EQ(s.error().msg.find('\n'), std::string::npos);
  }
}

TEST(Spec, ProcessFieldsAreValidated) {
  auto bad_cap = parse_spec(minimal().replace(minimal().find(R"("cwd":"/")"), 9,
                                              R"("cwd":"/","capabilities":{"bounding":["CAP_NOPE"]})"));
  ASSERT_FALSE(bad_cap);
  EXPECT_NE(bad_cap.error().msg.find("process.capabilities.bounding[0]"), std::string::npos);
  auto rel_cwd = parse_spec(minimal().replace(minimal().find(R"("cwd":"/")"), 9, R"("cwd":"tmp")"));
  ASSERT_FALSE(rel_cwd);
  EXPECT_NE(rel_cwd.error().msg.find("process.cwd"), std::string::npos);
  auto rl = parse_spec(minimal().replace(minimal().find(R"("cwd":"/")"), 9,
                                         R"("cwd":"/","rlimits":[{"type":"RLIMIT_NOFILE","soft":10,"hard":5}])"));
  ASSERT_FALSE(rl);
  EXPECT_NE(rl.error().msg.find("soft limit exceeds hard"), std::string::npos);
}

// The parser's strictness (oci/spec.cc's parse_json): what is not one JSON
// value, in UTF-8, is refused with a one-line error, deep nesting included
// (no recursion to exhaust the stack); a key given twice counts as its last.
TEST(Spec, MalformedDocumentsAreRefusedAndRepeatedKeysTakeTheLast) {
  std::string bad_utf8 = minimal();
  bad_utf8.replace(bad_utf8.find(R"("sh")"), 4, "\"s\xffh\"");
  for (std::string bad : {minimal() + "x", minimal() + "{}", minimal().substr(0, 40), std::string("[1,]"), bad_utf8,
                          minimal(R"(,"a":1 /* c */)"), std::string(200000, '[')}) {
    auto s = parse_spec(bad);
    ASSERT_FALSE(s) << bad.substr(0, 80);
    EXPECT_EQ(s.error().str(), "config.json: not valid JSON") << bad.substr(0, 80);
  }
  auto deep = parse_spec(std::string(200000, '[') + std::string(200000, ']'));
  ASSERT_FALSE(deep);
  EXPECT_EQ(deep.error().str(), "config.json: expected a JSON object");
  auto s = parse_spec(minimal(R"(,"root":{"path":"second"},"linux":{"sysctl":{"a.b":"1","a.b":"2"}})"));
  ASSERT_TRUE(s) << s.error().str();
  EXPECT_EQ(s->root_path, "second");
  EXPECT_EQ(s->linux->sysctl.at("a.b"), "2");
  auto big = parse_spec(minimal(R"(,"process":{"user":{"uid":4294967296,"gid":0},"args":["sh"],"cwd":"/"})"));
  ASSERT_FALSE(big);
  EXPECT_NE(big.error().str().find("process.user.uid: value out of range"), std::string::npos) << big.error().str();
}

TEST(Spec, UnknownFieldsAreIgnored) {
  auto s = parse_spec(minimal(R"(,"vendorThing":{"a":1},"linux":{"futureField":true})"));
  ASSERT_TRUE(s) << s.error().str();
}

TEST(Spec, FullLinuxSectionRoundTrips) {
  auto s = parse_spec(minimal(R"(,"linux":{
    "namespaces":[{"type":"user"},{"type":"network","path":"/proc/1/ns/net"},{"type":"time"}],
    "uidMappings":[{"containerID":0,"hostID":100000,"size":65536}],
    "gidMappings":[{"containerID":0,"hostID":100000,"size":65536}],
    "timeOffsets":{"boottime":{"secs":100,"nanosecs":5}},
    "sysctl":{"net.ipv4.ip_forward":"1"},
    "resources":{"memory":{"limit":1048576,"swap":2097152},"cpu":{"shares":512,"quota":50000,"period":100000,"cpus":"0"},
                 "pids":{"limit":10},"blockIO":{"weight":100,"throttleReadBpsDevice":[{"major":8,"minor":0,"rate":1000}]}},
    "seccomp":{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO","errnoRet":1,
               "args":[{"index":1,"value":2,"op":"SCMP_CMP_EQ"}]}]},
    "personality":{"domain":"LINUX32"}})"));
  ASSERT_TRUE(s) << s.error().str();
  EXPECT_EQ(s->linux->uid_mappings[0].host_id, 100000u);
  EXPECT_EQ(s->linux->time_offsets.at("boottime").secs, 100);
  EXPECT_EQ(*s->linux->resources->memory->limit, 1048576);
  EXPECT_EQ(*s->linux->resources->cpu->shares, 512u);
  EXPECT_EQ(s->linux->resources->pids->limit, 10);
  EXPECT_EQ(s->linux->resources->block_io->throttle_read_bps[0].rate, 1000u);
  EXPECT_EQ(s->linux->seccomp->syscalls[0].args[0].index, 1u);
  EXPECT_EQ(*s->linux->personality_domain, "LINUX32");
  EXPECT_EQ(s->ns("network")->path, "/proc/1/ns/net");
}

TEST(Spec, ProcessJsonForExec) {
  auto p = parse_process(R"({"user":{"uid":1,"gid":2,"additionalGids":[3]},"args":["ls"],"cwd":"/tmp","env":["A=b"]})");
  ASSERT_TRUE(p) << p.error().str();
  EXPECT_EQ(p->user.additional_gids[0], 3u);
  auto bad = parse_process(R"({"user":{"uid":1,"gid":2},"args":[],"cwd":"/"})");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().msg.rfind("process.json: ", 0), 0u) << bad.error().msg;
}

TEST(Spec, CapabilityAndRlimitTables) {
  EXPECT_EQ(capability_number("CAP_CHOWN"), 0);
  EXPECT_EQ(capability_number("CAP_SYS_ADMIN"), 21);
  EXPECT_EQ(capability_number("CAP_CHECKPOINT_RESTORE"), 40);
  EXPECT_EQ(capability_number("CHOWN"), -1);
  EXPECT_EQ(rlimit_number("RLIMIT_NOFILE"), 7);
  EXPECT_EQ(rlimit_number("RLIMIT_BOGUS"), -1);
}

}  // namespace
}  // namespace berth::oci
