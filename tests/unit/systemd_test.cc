// The systemd driver's pieces that need no systemd: unit naming, slice paths,
// unit properties, and the D-Bus client, checked against a real dbus-daemon
// (the reference implementation validates every message it is sent).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "cgroup/dbus.h"
#include "cgroup/systemd.h"

namespace berth::cgroup {
namespace {

TEST(SystemdPath, SliceExpansion) {
  EXPECT_EQ(*expand_slice("system.slice"), "/system.slice");
  EXPECT_EQ(*expand_slice("a-b-c.slice"), "/a.slice/a-b.slice/a-b-c.slice");
  EXPECT_EQ(*expand_slice("-.slice"), "/");
  for (const char* bad : {"system", "a--b.slice", "-a.slice", "a-.slice", ".slice", "a/b.slice"})
    EXPECT_FALSE(expand_slice(bad)) << bad;
}

TEST(SystemdPath, UnitNames) {
  auto u = *parse_systemd_path("system.slice:berth:web", "id");
  EXPECT_EQ(u.slice, "system.slice");
  EXPECT_EQ(u.name, "berth-web.scope");
  u = *parse_systemd_path("", "c1");  // runc's default, with berth's prefix
  EXPECT_EQ(u.slice, "system.slice");
  EXPECT_EQ(u.name, "berth-c1.scope");
  u = *parse_systemd_path(":berth:c1", "x", /*rootless=*/true);
  EXPECT_EQ(u.slice, "user.slice");
  u = *parse_systemd_path("machine.slice::web", "x");
  EXPECT_EQ(u.name, "web.scope");
  u = *parse_systemd_path("kubepods.slice:crio:kubepods-pod1.slice", "x");
  EXPECT_EQ(u.name, "kubepods-pod1.slice");
}

TEST(SystemdPath, BadPathsNameTheField) {
  for (const char* bad : {"/berth/web", "a:b", "a:b:c:d", "system.slice:berth:", "system:berth:web",
                          "system.slice:berth:we b", "system.slice:be@rth:web", "x--y.slice:p:n"}) {
    auto r = parse_systemd_path(bad, "id");
    ASSERT_FALSE(r) << bad;
    EXPECT_NE(r.error().str().find("linux.cgroupsPath \"" + std::string(bad) + "\""), std::string::npos)
        << r.error().str();
  }
}

TEST(SystemdProperties, V2AndV1Names) {
  oci::Resources res;
  res.memory.emplace();
  res.memory->limit = 64 << 20;
  res.memory->swap = 96 << 20;
  res.cpu.emplace();
  res.cpu->shares = 1024;
  res.cpu->quota = 15000;
  res.cpu->period = 100000;
  res.cpu->cpus = "0,9";
  res.pids.emplace();
  res.pids->limit = -1;
  auto find = [](const dbus::Properties& p, const std::string& name) -> const dbus::Value* {
    for (auto& [n, v] : p)
      if (n == name) return &v;
    return nullptr;
  };
  auto v2 = unit_properties(res, Mode::unified);
  EXPECT_EQ(std::get<uint64_t>(*find(v2, "MemoryMax")), 64u << 20);
  EXPECT_EQ(std::get<uint64_t>(*find(v2, "MemorySwapMax")), 32u << 20);
  EXPECT_EQ(std::get<uint64_t>(*find(v2, "CPUWeight")), 39u);  // runc's conversion of 1024
  EXPECT_EQ(std::get<uint64_t>(*find(v2, "CPUQuotaPerSecUSec")), 150000u);
  EXPECT_EQ(std::get<uint64_t>(*find(v2, "CPUQuotaPeriodUSec")), 100000u);
  EXPECT_EQ(std::get<uint64_t>(*find(v2, "TasksMax")), UINT64_MAX);
  auto cpus = std::get<std::vector<uint8_t>>(*find(v2, "AllowedCPUs"));
  EXPECT_EQ(cpus, (std::vector<uint8_t>{0x01, 0x02}));
  auto v1 = unit_properties(res, Mode::legacy);
  EXPECT_EQ(std::get<uint64_t>(*find(v1, "MemoryLimit")), 64u << 20);
  EXPECT_EQ(std::get<uint64_t>(*find(v1, "CPUShares")), 1024u);
  EXPECT_EQ(find(v1, "MemoryMax"), nullptr);
  EXPECT_EQ(find(v1, "AllowedCPUs"), nullptr);
  // A fraction of a percent rounds up: 12.345 ms per 100 ms is 130 ms per second.
  res.cpu->quota = 12345;
  EXPECT_EQ(std::get<uint64_t>(*find(unit_properties(res, Mode::unified), "CPUQuotaPerSecUSec")), 130000u);
}

// ------------------------------------------------------------------ D-Bus --

TEST(DBusWire, RoundTripAndSkip) {
  auto m = dbus::Message::call("org.example", "/org/example", "org.example.I", "Do");
  dbus::Writer w;
  w.str("unit");
  dbus::write_properties(w, {{"B", true},
                             {"T", uint64_t{1} << 40},
                             {"S", std::string("x")},
                             {"AU", std::vector<uint32_t>{7, 8}},
                             {"AY", std::vector<uint8_t>{}}});
  w.u32(42);
  m.signature = "sa(sv)u";
  m.body = w.data();
  m.serial = 9;
  std::string wire = m.encode();
  size_t used = 0;
  auto back = dbus::Message::decode(wire + "trailing", &used);
  ASSERT_TRUE(back) << back.error().str();
  EXPECT_EQ(used, wire.size());
  EXPECT_EQ(back->member, "Do");
  EXPECT_EQ(back->path, "/org/example");
  EXPECT_EQ(back->signature, "sa(sv)u");
  dbus::Reader r = back->reader();
  EXPECT_EQ(*r.str(), "unit");
  ASSERT_TRUE(r.skip("a(sv)"));
  EXPECT_EQ(*r.u32(), 42u);
  // Short input asks for more; a bad byte order mark is an error.
  EXPECT_EQ((dbus::Message::decode(wire.substr(0, wire.size() - 1), &used), used), 0u);
  std::string bad = wire;
  bad[0] = 'x';
  EXPECT_FALSE(dbus::Message::decode(bad, &used));
  // A length that runs past the data is caught by the reader.
  dbus::Reader trunc(std::string_view("\xff\xff\x00\x00", 4), false);
  EXPECT_FALSE(trunc.str());
}

// A private dbus-daemon on a socket in a temp dir.
class DBusDaemon : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::access("/usr/bin/dbus-daemon", X_OK) != 0) GTEST_SKIP() << "needs dbus-daemon (scripts/install-deps.sh)";
    char tmpl[] = "/tmp/berth-dbus.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    socket_ = dir_ + "/bus";
    std::string config = dir_ + "/bus.conf";
    FILE* f = std::fopen(config.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fprintf(f,
                 "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\"\n"
                 " \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n"
                 "<busconfig><type>session</type><listen>unix:path=%s</listen>"
                 "<auth>EXTERNAL</auth><policy context=\"default\"><allow send_destination=\"*\" eavesdrop=\"true\"/>"
                 "<allow eavesdrop=\"true\"/><allow own=\"*\"/></policy></busconfig>\n",
                 socket_.c_str());
    std::fclose(f);
    pid_ = ::fork();
    ASSERT_GE(pid_, 0);
    if (pid_ == 0) {
      // It warns that it can't raise its fd limit here (no CAP_SYS_RESOURCE).
      int null = ::open("/dev/null", O_WRONLY);
      ::dup2(null, 2);
      ::execl("/usr/bin/dbus-daemon", "dbus-daemon", "--nofork", "--nopidfile", ("--config-file=" + config).c_str(),
              static_cast<char*>(nullptr));
      ::_exit(127);
    }
    for (int i = 0; i < 500 && ::access(socket_.c_str(), F_OK) != 0; ++i) ::usleep(10000);
    ASSERT_EQ(::access(socket_.c_str(), F_OK), 0) << "dbus-daemon did not start";
  }
  void TearDown() override {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      ::waitpid(pid_, nullptr, 0);
    }
    if (!dir_.empty()) {
      ::unlink(socket_.c_str());
      ::unlink((dir_ + "/bus.conf").c_str());
      ::rmdir(dir_.c_str());
    }
  }
  std::string dir_, socket_;
  pid_t pid_ = -1;
};

TEST_F(DBusDaemon, HelloCallsErrorsAndSignals) {
  auto a = dbus::Connection::open(socket_, false, true);
  ASSERT_TRUE(a) << a.error().str();
  // A reply with a body: our own unique name is among the bus's names.
  auto list = a->call(dbus::Message::call("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                                          "ListNames"));
  ASSERT_TRUE(list) << list.error().str();
  EXPECT_EQ(list->signature, "as");
  // StartTransientUnit's exact shape, sent to a name nobody has: the daemon
  // validates the whole body before it answers ServiceUnknown (a malformed
  // one would have us disconnected instead).
  auto m = dbus::Message::call("org.freedesktop.systemd1", "/org/freedesktop/systemd1",
                               "org.freedesktop.systemd1.Manager", "StartTransientUnit");
  dbus::Writer w;
  w.str("berth-x.scope");
  w.str("fail");
  dbus::write_properties(w, {{"Delegate", true},
                             {"PIDs", std::vector<uint32_t>{1}},
                             {"MemoryMax", uint64_t{1} << 25},
                             {"Slice", std::string("system.slice")},
                             {"AllowedCPUs", std::vector<uint8_t>{3}}});
  size_t aux = w.begin_array(8);
  w.end_array(aux, 8);
  m.signature = "ssa(sv)a(sa(sv))";
  m.body = w.data();
  {
    // The daemon does check: the same body under a signature it doesn't fit
    // costs the sender its connection.
    auto c = dbus::Connection::open(socket_, false, true);
    ASSERT_TRUE(c) << c.error().str();
    dbus::Message bad = m;
    bad.signature = "ssa(sv)a(sa(sv))u";
    auto rb = c->call(std::move(bad), 5000);
    ASSERT_FALSE(rb);
    EXPECT_EQ(rb.error().msg.find("ServiceUnknown"), std::string::npos) << rb.error().str();
  }
  auto r = a->call(std::move(m), 5000);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().msg.find("org.freedesktop.DBus.Error.ServiceUnknown"), std::string::npos) << r.error().str();
  // The connection still works, and signals arrive: a second client's arrival
  // is a NameOwnerChanged broadcast to those who asked for it.
  ASSERT_TRUE(a->add_match("type='signal',interface='org.freedesktop.DBus',member='NameOwnerChanged'"));
  auto b = dbus::Connection::open(socket_, false, true);
  ASSERT_TRUE(b) << b.error().str();
  // (NameAcquired, for our own Hello, may come first.)
  auto s = a->next_signal(5000);
  while (s && s->member == "NameAcquired") s = a->next_signal(5000);
  ASSERT_TRUE(s) << s.error().str();
  EXPECT_EQ(s->member, "NameOwnerChanged");
  EXPECT_EQ(s->signature, "sss");
  dbus::Reader sr = s->reader();
  std::string name = *sr.str();
  EXPECT_EQ(name.rfind(":1.", 0), 0u) << name;
}

TEST_F(DBusDaemon, MissingSocketAndBadAddressAreClear) {
  auto none = dbus::Connection::open(dir_ + "/nothing", false, true);
  ASSERT_FALSE(none);
  EXPECT_NE(none.error().str().find("connect"), std::string::npos);
  ::setenv("DBUS_SYSTEM_BUS_ADDRESS", ("unix:path=" + dir_ + "/nothing").c_str(), 1);
  auto sys = dbus::Connection::system();
  ::unsetenv("DBUS_SYSTEM_BUS_ADDRESS");
  ASSERT_FALSE(sys);
  EXPECT_NE(sys.error().str().find(dir_ + "/nothing"), std::string::npos) << sys.error().str();
  ::setenv("DBUS_SYSTEM_BUS_ADDRESS", "tcp:host=localhost,port=1", 1);
  auto tcp = dbus::Connection::system();
  ::unsetenv("DBUS_SYSTEM_BUS_ADDRESS");
  ASSERT_FALSE(tcp);
  EXPECT_NE(tcp.error().str().find("DBUS_SYSTEM_BUS_ADDRESS"), std::string::npos);
}

}  // namespace
}  // namespace berth::cgroup
