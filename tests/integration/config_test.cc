// config.json honoured: what the process sees inside, what the host shows.
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <sstream>

#include "harness.h"

namespace berth::it {
namespace {

const std::string kHelper = "/bin/berth-test-helper";

class Config : public BerthTest {
 protected:
  // A shell script (in the rootfs as /probe.sh) whose lines are `name=<output>`.
  Bundle& probe_bundle(const std::string& id, const std::vector<std::pair<std::string, std::string>>& probes,
                       const std::string& tail = "") {
    std::string script = "#!/bin/sh\n";
    for (auto& [name, cmd] : probes) script += "echo \"" + name + "=$(" + cmd + " 2>&1; echo \" rc=$?\")\"\n";
    script += tail;
    auto& b = make_bundle(id, {"/bin/sh", "/probe.sh"}, false);
    write_file(b.rootfs + "/probe.sh", script, 0755);
    return b;
  }
};

// The value of probe `name`, without the trailing " rc=N".
std::string probe(const std::string& out, const std::string& name) {
  std::string v = kv(out, name);
  auto p = v.rfind(" rc=");
  // Multi-line outputs were joined by the shell: keep what precedes rc=.
  return trim(p == std::string::npos ? v : v.substr(0, p));
}
int probe_rc(const std::string& out, const std::string& name) {
  std::string v = kv(out, name);
  auto p = v.rfind(" rc=");
  return p == std::string::npos ? -1 : std::atoi(v.c_str() + p + 4);
}

// ------------------------------------------ hostname, env, cwd, user --

TEST_F(Config, HostnameEnvCwd) {
  auto& b = make_bundle("basic", {"/bin/sh", "-c", kHelper + " hostname; " + kHelper + " env; " + kHelper + " cwd"},
                        false);
  b.config["hostname"] = "it-host";
  b.config["domainname"] = "it.example";
  b.process()["env"].push_back("FOO=bar baz");
  b.process()["cwd"] = "/work/sub";
  b.save();
  ASSERT_FALSE(exists(b.rootfs + "/work"));
  auto r = run_fg(b);
  ASSERT_OK(r);
  EXPECT_EQ(kv(r.out, "hostname"), "it-host") << r.out;
  EXPECT_EQ(kv(r.out, "domainname"), "it.example") << r.out;
  auto lines = split_lines(r.out);
  EXPECT_NE(std::find(lines.begin(), lines.end(), "FOO=bar baz"), lines.end()) << r.out;
  EXPECT_NE(std::find(lines.begin(), lines.end(), "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
            lines.end())
      << r.out;
  EXPECT_EQ(lines.back(), "/work/sub") << r.out;
  EXPECT_TRUE(exists(b.rootfs + "/work/sub"));
}

TEST_F(Config, UserGroupsUmask) {
  auto& b = make_bundle("user", {"/bin/sh", "-c", kHelper + " ids; " + kHelper + " umask; " + kHelper + " caps"},
                        false);
  b.process()["user"] = {{"uid", 1000}, {"gid", 1001}, {"additionalGids", {10, 20}}, {"umask", 027}};
  b.save();
  auto r = run_fg(b);
  ASSERT_OK(r);
  EXPECT_TRUE(contains(r.out, "uid=1000 gid=1001 euid=1000 egid=1001 groups=10,20\n")) << r.out;
  EXPECT_TRUE(contains(r.out, "\n0027\n")) << r.out;
  // A non-root process keeps no effective capabilities across exec, and the
  // bounding set is what was configured.
  EXPECT_EQ(status_field(r.out, "CapEff"), "0000000000000000") << r.out;
  EXPECT_EQ(status_field(r.out, "CapBnd"), "0000000020000420") << r.out;

  // No additionalGids: no supplementary groups at all (nothing from the runtime).
  auto& z = make_bundle("nogroups", {kHelper, "ids"}, false);
  z.process()["user"] = {{"uid", 0}, {"gid", 0}};
  z.save();
  auto rz = run_fg(z);
  ASSERT_OK(rz);
  EXPECT_EQ(rz.out, "uid=0 gid=0 euid=0 egid=0 groups=\n") << rz.out;
}

TEST_F(Config, Rlimits) {
  auto& b = make_bundle("rl", {kHelper, "rlimit", "NOFILE"});
  auto r = run_fg(b);
  ASSERT_OK(r);
  EXPECT_EQ(r.out, "1024 1024\n");

  auto& l = make_bundle("rl2", {"/bin/sh", "-c", kHelper + " rlimit NOFILE; " + kHelper + " rlimit CORE"}, false);
  l.process()["rlimits"] = json::array({{{"type", "RLIMIT_NOFILE"}, {"soft", 100}, {"hard", 200}},
                                        {{"type", "RLIMIT_CORE"}, {"soft", 0}, {"hard", 4096}}});
  l.save();
  auto rl = run_fg(l);
  ASSERT_OK(rl);
  EXPECT_EQ(rl.out, "100 200\n0 4096\n");
}

TEST_F(Config, NoNewPrivsAndOomScoreAdj) {
  auto& b = make_bundle("nnp", {"/bin/sh", "-c", kHelper + " caps; " + kHelper + " oom"}, false);
  b.process()["oomScoreAdj"] = 123;
  b.save();
  auto r = run_fg(b);
  ASSERT_OK(r);
  EXPECT_EQ(status_field(r.out, "NoNewPrivs"), "1") << r.out;
  EXPECT_EQ(split_lines(r.out).back(), "123") << r.out;

  auto& n = make_bundle("nonnp", {kHelper, "caps"}, false);
  n.process()["noNewPrivileges"] = false;
  n.save();
  auto rn = run_fg(n);
  ASSERT_OK(rn);
  EXPECT_EQ(status_field(rn.out, "NoNewPrivs"), "0") << rn.out;
}

TEST_F(Config, SysctlInNetns) {
  std::string host_before = read_file("/proc/sys/net/ipv4/ip_forward");
  auto& b = make_bundle("sysctl", {kHelper, "sysctl", "net.ipv4.ip_forward"}, false);
  b.linux_()["sysctl"] = {{"net.ipv4.ip_forward", "1"}};
  b.save();
  auto r = run_fg(b);
  ASSERT_OK(r);
  EXPECT_EQ(r.out, "1\n");
  EXPECT_EQ(read_file("/proc/sys/net/ipv4/ip_forward"), host_before) << "the host's sysctl changed";

  // A sysctl that no namespace of the container owns is refused.
  auto& h = make_bundle("sysctlhost", {kHelper, "true"}, false);
  h.linux_()["sysctl"] = {{"kernel.pid_max", "4194304"}};
  h.save();
  auto rh = run_fg(h);
  SKIP_IF_CLEANUP_CRASH(rh);
  EXPECT_NE(rh.code, 0);
  EXPECT_TRUE(contains(rh.err, "kernel.pid_max")) << rh.desc();
}

// A new network namespace has its loopback up (as runc and crun set it):
// Docker's --network none has a working 127.0.0.1.
TEST_F(Config, NewNetworkNamespaceHasItsLoopbackUp) {
  auto& b = make_bundle("lo", {kHelper, "read", "/sys/class/net/lo/flags"}, false);
  b.save();
  auto r = run_fg(b);
  ASSERT_OK(r);
  EXPECT_EQ(r.out, "0x9\n");  // IFF_UP | IFF_LOOPBACK
}

TEST_F(Config, ReadonlyRoot) {
  auto& b = make_bundle("ro", {kHelper, "write", "/x", "y"});
  auto r = run_fg(b);
  EXPECT_NE(r.code, 0);
  EXPECT_EQ(r.out, "error=EROFS\n") << r.desc();
  EXPECT_FALSE(exists(b.rootfs + "/x"));

  auto& w = make_bundle("rw", {kHelper, "write", "/x", "y"}, false);
  w.config["root"]["readonly"] = false;
  w.save();
  auto rw = run_fg(w);
  ASSERT_OK(rw);
  EXPECT_EQ(read_file(w.rootfs + "/x"), "y");
}

// ----------------------------------------------------------------- mounts --

TEST_F(Config, Mounts) {
  // Host side: a bind source with a file, and a tree with a submount.
  std::string robind = path("robind");
  mkdirs(robind);
  write_file(robind + "/f", "original\n");
  std::string tree = path("tree");
  mkdirs(tree + "/sub");
  write_file(tree + "/top", "top\n");
  ASSERT_EQ(::mount("tmpfs", (tree + "/sub").c_str(), "tmpfs", 0, "size=1m,mode=0755"), 0) << std::strerror(errno);
  track_mount(tree + "/sub");
  write_file(tree + "/sub/marker", "sub\n");

  auto& b = probe_bundle("mounts", {
                                       {"data_stat", kHelper + " stat /data"},
                                       {"data_write", kHelper + " write /data/f x"},
                                       {"ro_write", kHelper + " write /ro/f x"},
                                       {"ro_read", kHelper + " read /ro/f"},
                                       {"rb_marker", kHelper + " read /rb/sub/marker"},
                                       {"rb_write", kHelper + " write /rb/sub/new x"},
                                       {"nb_marker", kHelper + " stat /nb/sub/marker"},
                                       {"rro_top", kHelper + " write /rro/top x"},
                                       {"rro_sub", kHelper + " write /rro/sub/new2 x"},
                                       {"rro_read", kHelper + " read /rro/sub/marker"},
                                   },
                         kHelper + " mounts\n");
  b.add_mount({{"destination", "/data"},
               {"type", "tmpfs"},
               {"source", "tmpfs"},
               {"options", {"nosuid", "nodev", "noexec", "size=1m", "mode=0710"}}});
  b.add_mount({{"destination", "/ro"}, {"type", "bind"}, {"source", robind}, {"options", {"bind", "ro"}}});
  b.add_mount({{"destination", "/rb"}, {"type", "bind"}, {"source", tree}, {"options", {"rbind"}}});
  b.add_mount({{"destination", "/nb"}, {"type", "bind"}, {"source", tree}, {"options", {"bind"}}});
  b.add_mount({{"destination", "/rro"}, {"type", "bind"}, {"source", tree}, {"options", {"rbind", "rro"}}});
  b.save();
  auto r = run_fg(b);
  ASSERT_OK(r);
  const std::string& o = r.out;
  EXPECT_TRUE(contains(probe(o, "data_stat"), "type=dir mode=0710")) << o;
  EXPECT_EQ(probe_rc(o, "data_write"), 0) << o;
  EXPECT_TRUE(contains(probe(o, "ro_write"), "EROFS")) << o;
  EXPECT_EQ(probe(o, "ro_read"), "original") << o;
  EXPECT_EQ(read_file(robind + "/f"), "original\n");
  EXPECT_EQ(probe(o, "rb_marker"), "sub") << o;
  EXPECT_EQ(probe_rc(o, "rb_write"), 0) << o;
  EXPECT_EQ(read_file(tree + "/sub/new"), "x") << "rbind writes land on the host's submount";
  EXPECT_TRUE(contains(probe(o, "nb_marker"), "ENOENT")) << "a plain bind must not carry submounts: " << o;
  EXPECT_TRUE(contains(probe(o, "rro_top"), "EROFS")) << o;
  EXPECT_TRUE(contains(probe(o, "rro_sub"), "EROFS")) << "rro must make submounts read-only too: " << o;
  EXPECT_EQ(probe(o, "rro_read"), "sub") << o;
  EXPECT_FALSE(exists(tree + "/sub/new2"));
  // mountinfo: flags visible.
  bool seen_data = false, seen_ro = false;
  for (auto& l : split_lines(o)) {
    std::istringstream is(l);
    std::vector<std::string> f;
    std::string w;
    while (is >> w) f.push_back(w);
    if (f.size() < 6) continue;
    if (f[4] == "/data") {
      seen_data = true;
      EXPECT_TRUE(contains(f[5], "nosuid")) << l;
      EXPECT_TRUE(contains(f[5], "nodev")) << l;
      EXPECT_TRUE(contains(f[5], "noexec")) << l;
      EXPECT_TRUE(contains(l, " - tmpfs ")) << l;
      EXPECT_TRUE(contains(l, "size=1024k")) << l;
      EXPECT_TRUE(contains(l, "mode=710")) << l;
    }
    if (f[4] == "/ro") {
      seen_ro = true;
      EXPECT_EQ(f[5].rfind("ro", 0), 0u) << l;
    }
  }
  EXPECT_TRUE(seen_data) << o;
  EXPECT_TRUE(seen_ro) << o;
}

TEST_F(Config, MaskedPathsDevicesAndDevLinks) {
  auto& b = probe_bundle("devs", {
                                     {"secret_read", kHelper + " read /etc/secret"},
                                     {"secret_stat", kHelper + " stat /etc/secret"},
                                     {"sdir", "ls -A /etc/secretdir | wc -l"},
                                     {"fuse", kHelper + " stat /dev/fuse"},
                                     {"null", kHelper + " stat /dev/null"},
                                     {"fd", "readlink /dev/fd"},
                                     {"stdin", "readlink /dev/stdin"},
                                     {"stdout", "readlink /dev/stdout"},
                                     {"stderr", "readlink /dev/stderr"},
                                     {"ptmx", "readlink /dev/ptmx"},
                                     {"pts", kHelper + " stat /dev/pts/ptmx"},
                                 });
  write_file(b.rootfs + "/etc/secret", "top secret\n");
  mkdirs(b.rootfs + "/etc/secretdir");
  write_file(b.rootfs + "/etc/secretdir/inner", "inner\n");
  b.linux_()["maskedPaths"].push_back("/etc/secret");
  b.linux_()["maskedPaths"].push_back("/etc/secretdir");
  b.linux_()["devices"] = json::array(
      {{{"path", "/dev/fuse"}, {"type", "c"}, {"major", 10}, {"minor", 229}, {"fileMode", 0640}, {"uid", 0}, {"gid", 0}}});
  b.save();
  auto r = run_fg(b);
  ASSERT_OK(r);
  const std::string& o = r.out;
  EXPECT_EQ(probe(o, "secret_read"), "") << o;
  EXPECT_TRUE(contains(probe(o, "secret_stat"), "type=chr")) << o;
  EXPECT_TRUE(contains(probe(o, "secret_stat"), "rdev=1:3")) << o;
  EXPECT_EQ(probe(o, "sdir"), "0") << o;
  EXPECT_EQ(probe(o, "fuse"), "type=chr mode=0640 uid=0 gid=0 rdev=10:229") << o;
  EXPECT_TRUE(contains(probe(o, "null"), "type=chr mode=0666")) << o;
  EXPECT_TRUE(contains(probe(o, "null"), "rdev=1:3")) << o;
  EXPECT_EQ(probe(o, "fd"), "/proc/self/fd") << o;
  EXPECT_EQ(probe(o, "stdin"), "/proc/self/fd/0") << o;
  EXPECT_EQ(probe(o, "stdout"), "/proc/self/fd/1") << o;
  EXPECT_EQ(probe(o, "stderr"), "/proc/self/fd/2") << o;
  EXPECT_EQ(probe(o, "ptmx"), "pts/ptmx") << o;
  EXPECT_TRUE(contains(probe(o, "pts"), "type=chr")) << o;
  // The host's files are untouched.
  EXPECT_EQ(read_file(b.rootfs + "/etc/secret"), "top secret\n");
}

TEST_F(Config, PersonalitySchedulerIoPriority) {
  auto& b = make_bundle("pers", {"/bin/sh", "-c", kHelper + " personality; " + kHelper + " sched"}, false);
  b.linux_()["personality"] = {{"domain", "LINUX32"}};
  b.process()["scheduler"] = {{"policy", "SCHED_BATCH"}, {"nice", 5}};
  b.process()["ioPriority"] = {{"class", "IOPRIO_CLASS_BE"}, {"priority", 6}};
  b.save();
  auto r = run_fg(b);
  ASSERT_OK(r);
  EXPECT_EQ(kv(r.out, "personality"), "0x8") << r.out;
  EXPECT_EQ(kv(r.out, "policy"), "SCHED_BATCH") << r.out;
  EXPECT_EQ(kv(r.out, "nice"), "5") << r.out;
  EXPECT_TRUE(contains(r.out, "ioprio_class=2 ioprio_level=6")) << r.out;
}

TEST_F(Config, SeccompErrno) {
  auto& b = make_bundle("sec",
                        {"/bin/sh", "-c",
                         "mkdir /dev/shm/x 2>&1; echo mkdir=$?; touch /dev/shm/y; echo touch=$?; " + kHelper + " caps"},
                        false);
  b.linux_()["seccomp"] = {
      {"defaultAction", "SCMP_ACT_ALLOW"},
      {"architectures", {"SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"}},
      {"syscalls", json::array({{{"names", {"mkdir", "mkdirat"}}, {"action", "SCMP_ACT_ERRNO"}, {"errnoRet", 1}}})}};
  b.save();
  auto r = run_fg(b);
  SKIP_IF_BUG(r.code == 128 + 11,
              "berth-runtime dies of SIGSEGV on any config with linux.seccomp: linked with -static "
              "(src/CMakeLists.txt) against /usr/lib/x86_64-linux-gnu/libseccomp.so, so seccomp_init & co. "
              "resolve to address 0 (seccomp::compile calls NULL). "
                  << r.desc());
  ASSERT_OK(r);
  EXPECT_TRUE(contains(r.out, "Operation not permitted")) << r.out;
  EXPECT_EQ(kv(r.out, "mkdir"), "1") << r.out;
  EXPECT_EQ(kv(r.out, "touch"), "0") << r.out;
  EXPECT_EQ(status_field(r.out, "Seccomp"), "2") << r.out;
  // The compiled program was kept in the state root, and the second run (from
  // the cache) filters the same; the cache is no container.
  size_t entries = 0;
  for (auto& e : std::filesystem::directory_iterator(root_ + "/.seccomp-cache")) ++entries, (void)e;
  EXPECT_EQ(entries, 1u);
  r = run_fg(b);
  ASSERT_OK(r);
  EXPECT_EQ(kv(r.out, "mkdir"), "1") << r.out;
  EXPECT_EQ(kv(r.out, "touch"), "0") << r.out;
  auto list = rt({"list", "-q"});
  EXPECT_EQ(list.out, "") << list.desc();
  auto& c = make_bundle(".seccomp-cache", {"/bin/true"});
  auto refused = run_fg(c);
  EXPECT_NE(refused.code, 0);
  EXPECT_TRUE(contains(refused.err, "reserved")) << refused.desc();
}

// `run` starts the container vfork-style: the runtime sleeps until the child
// execs, and learns of success from the sync socket closing. A child killed
// before its exec (here by its own seccomp filter, on the poll(2) it makes
// after the filter is on and before execve) closes it too, without a word:
// that is an error, not a started container.
TEST_F(Config, RunReportsAProcessThatDiesBeforeItsExec) {
  auto& b = make_bundle("diesearly", {"/bin/true"}, false);
  b.process()["noNewPrivileges"] = true;
  b.linux_()["seccomp"] = {
      {"defaultAction", "SCMP_ACT_ALLOW"},
      {"architectures", {"SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"}},
      {"syscalls", json::array({{{"names", {"poll", "ppoll"}}, {"action", "SCMP_ACT_KILL_PROCESS"}}})}};
  b.save();
  auto r = run_fg(b);
  EXPECT_NE(r.code, 0) << r.desc();
  EXPECT_TRUE(contains(r.err, "exited before it could exec")) << r.desc();
  auto list = rt({"list", "-q"});
  EXPECT_EQ(list.out, "") << list.desc();
}

// ------------------------------------------------------------- namespaces --

TEST_F(Config, JoinNetworkNamespaceByPath) {
  auto& a = make_bundle("nsa", {kHelper, "pause"});
  create_and_start(a);
  ASSERT_FALSE(HasFailure());
  pid_t pa = init_pid("nsa");
  std::string net_a = readlink_str("/proc/" + std::to_string(pa) + "/ns/net");
  std::string uts_a = readlink_str("/proc/" + std::to_string(pa) + "/ns/uts");
  ASSERT_FALSE(net_a.empty());
  ASSERT_NE(net_a, readlink_str("/proc/self/ns/net"));

  auto& b = make_bundle("nsb", {kHelper, "ns"}, false);
  b.add_namespace({{"type", "network"}, {"path", "/proc/" + std::to_string(pa) + "/ns/net"}});
  b.save();
  auto r = run_fg(b);
  ASSERT_OK(r);
  EXPECT_EQ(kv(r.out, "net"), net_a) << r.out;
  EXPECT_NE(kv(r.out, "uts"), uts_a) << r.out;
  EXPECT_NE(kv(r.out, "uts"), readlink_str("/proc/self/ns/uts")) << r.out;

  // The joined namespace's fd is closed after setns, never inherited by the
  // container (`run` starts it vfork-style, sharing the runtime's memory).
  auto& f = make_bundle("nsfds", {kHelper, "fds"}, false);
  f.add_namespace({{"type", "network"}, {"path", "/proc/" + std::to_string(pa) + "/ns/net"}});
  f.save();
  auto rf = run_fg(f);
  ASSERT_OK(rf);
  EXPECT_EQ(rf.out, "0 1 2\n") << rf.desc();

  // A path that is not that kind of namespace is refused.
  auto& c = make_bundle("nsc", {kHelper, "ns"}, false);
  c.add_namespace({{"type", "network"}, {"path", "/proc/" + std::to_string(pa) + "/ns/uts"}});
  c.save();
  auto rc = run_fg(c);
  SKIP_IF_CLEANUP_CRASH(rc);
  EXPECT_NE(rc.code, 0);
  EXPECT_TRUE(contains(rc.err, "ns/uts")) << rc.desc();
}

TEST_F(Config, UserNamespaceWithMappings) {
  auto& b = make_bundle("userns", {"/bin/sh", "-c", kHelper + " ids; exec " + kHelper + " pause"}, false);
  b.add_namespace({{"type", "user"}});
  b.linux_()["uidMappings"] = json::array({{{"containerID", 0}, {"hostID", 100000}, {"size", 65536}}});
  b.linux_()["gidMappings"] = json::array({{{"containerID", 0}, {"hostID", 100000}, {"size", 65536}}});
  b.save();
  auto c = create(b);
  SKIP_IF_BUG(contains(c.err, "Value too large") || contains(c.err, "Broken pipe"),
              "a container with a new user namespace and the default mounts fails: the init never "
              "switches to uid/gid 0 of the new namespace after the maps are written, so its fsuid (host "
              "root) is unmapped there and mkdir in the /dev tmpfs it mounted fails with EOVERFLOW (reported "
              "as that, or masked as \"sendmsg: Broken pipe\" when the parent's kGo races the init's exit). "
                  << c.desc());
  ASSERT_OK(c);
  ASSERT_OK(rt({"start", "userns"}));
  ASSERT_TRUE(wait_until([&] { return contains(read_file(c.out_path), "uid="); }, 10)) << read_file(c.out_path);
  EXPECT_TRUE(contains(read_file(c.out_path), "uid=0 gid=0 euid=0 egid=0")) << read_file(c.out_path);
  pid_t pid = init_pid("userns");
  auto norm = [](const std::string& s) {
    std::istringstream is(s);
    std::string w, out;
    while (is >> w) out += (out.empty() ? "" : " ") + w;
    return out;
  };
  EXPECT_EQ(norm(read_file("/proc/" + std::to_string(pid) + "/uid_map")), "0 100000 65536");
  EXPECT_EQ(norm(read_file("/proc/" + std::to_string(pid) + "/gid_map")), "0 100000 65536");
  struct stat st;
  ASSERT_EQ(::stat(("/proc/" + std::to_string(pid)).c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 100000u) << "the init runs as the mapped host uid";
  ASSERT_OK(rt({"delete", "--force", "userns"}));
}

TEST_F(Config, TimeNamespaceOffsets) {
  const long offset = 10 * 86400;
  auto& b = make_bundle("timens", {"/bin/sh", "-c", kHelper + " read /proc/uptime; " + kHelper + " ns"}, false);
  b.add_namespace({{"type", "time"}});
  b.linux_()["timeOffsets"] = {{"boottime", {{"secs", offset}, {"nanosecs", 0}}}};
  b.save();
  double host_before = std::atof(read_file("/proc/uptime").c_str());
  auto r = run_fg(b);
  double host_after = std::atof(read_file("/proc/uptime").c_str());
  ASSERT_OK(r);
  SKIP_IF_BUG(kv(r.out, "time") == readlink_str("/proc/self/ns/time"),
              "the container is not in a new time namespace (so timeOffsets do nothing): do_create "
              "restores the runtime's time namespace with setns(restore_time) right after clone3, before "
              "the `pid == 0` branch, so the child runs it too and moves back to the host's. "
                  << r.desc());
  EXPECT_NE(kv(r.out, "time"), readlink_str("/proc/self/ns/time")) << r.out;
  double inside = std::atof(r.out.c_str());
  EXPECT_GE(inside, host_before + offset - 1) << r.out;
  EXPECT_LE(inside, host_after + offset + 1) << r.out;
}

// ------------------------------------------------------------------- hooks --

class Hooks : public Config {
 protected:
  std::string out_dir() { return path("hookout"); }
  // A host hook: /bin/sh SCRIPT KIND, saving stdin to hookout/KIND.json.
  json host_hook(const std::string& kind, const std::string& extra = "") {
    std::string script = path("hook-" + kind + ".sh");
    write_file(script,
               "#!/bin/sh\nset -e\nout=" + out_dir() + "\ncat > \"$out/" + kind + ".json\"\necho " + kind +
                   " >> \"$out/order.log\"\n" + extra,
               0755);
    return {{"path", "/bin/sh"}, {"args", {"sh", script, kind}}, {"env", {"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}}};
  }
  json hook_state(const std::string& kind) {
    std::string s = read_file(out_dir() + "/" + kind + ".json");
    if (s.empty()) return json();
    return json::parse(s, nullptr, false);
  }
};

TEST_F(Hooks, AllHooksGetTheStateAndRunWhereTheyShould) {
  mkdirs(out_dir());
  auto& b = make_bundle("hooks", {kHelper, "pause"}, false);
  b.add_mount({{"destination", "/hookout"}, {"type", "bind"}, {"source", out_dir()}, {"options", {"rbind", "rw"}}});
  b.config["hooks"] = {
      {"prestart", {host_hook("prestart")}},
      {"createRuntime", {host_hook("createRuntime")}},
      {"createContainer",
       {host_hook("createContainer", "readlink /proc/self/ns/mnt > \"$out/createContainer.mnt\"\n"
                                     "cat /proc/sys/kernel/hostname > \"$out/createContainer.host\"\n")}},
      {"startContainer",
       {{{"path", "/bin/busybox"},
         {"args",
          {"busybox", "sh", "-c",
           "cat > /hookout/startContainer.json; echo startContainer >> /hookout/order.log; "
           "hostname > /hookout/startContainer.host; readlink /proc/self/ns/mnt > /hookout/startContainer.mnt"}},
         {"env", {"PATH=/bin"}}}}},
      {"poststart", {host_hook("poststart")}},
      {"poststop", {host_hook("poststop")}},
  };
  b.save();
  ASSERT_OK(create(b));
  auto pre = hook_state("prestart");
  ASSERT_TRUE(pre.is_object()) << read_file(out_dir() + "/prestart.json");
  EXPECT_EQ(pre["id"], "hooks");
  EXPECT_EQ(pre["status"], "creating");
  EXPECT_GT(pre["pid"].get<int>(), 0);
  EXPECT_EQ(pre["bundle"], b.dir);
  auto cr = hook_state("createRuntime");
  ASSERT_TRUE(cr.is_object());
  EXPECT_EQ(cr["id"], "hooks");
  EXPECT_EQ(cr["status"], "creating");
  auto cc = hook_state("createContainer");
  ASSERT_TRUE(cc.is_object());
  EXPECT_EQ(cc["id"], "hooks");
  EXPECT_EQ(cc["status"], "creating");
  pid_t pid = init_pid("hooks");
  std::string mnt = readlink_str("/proc/" + std::to_string(pid) + "/ns/mnt");
  EXPECT_EQ(trim(read_file(out_dir() + "/createContainer.mnt")), mnt) << "createContainer ran outside the container";
  EXPECT_EQ(trim(read_file(out_dir() + "/createContainer.host")), "berth");
  EXPECT_FALSE(exists(out_dir() + "/startContainer.json")) << "startContainer ran before start";
  EXPECT_FALSE(exists(out_dir() + "/poststart.json"));

  ASSERT_OK(rt({"start", "hooks"}));
  ASSERT_TRUE(wait_until([&] { return exists(out_dir() + "/poststart.json"); }, 5));
  auto sc = hook_state("startContainer");
  ASSERT_TRUE(sc.is_object()) << read_file(out_dir() + "/startContainer.json");
  EXPECT_EQ(sc["id"], "hooks");
  EXPECT_EQ(sc["pid"], pid);
  EXPECT_EQ(trim(read_file(out_dir() + "/startContainer.mnt")), mnt);
  EXPECT_EQ(trim(read_file(out_dir() + "/startContainer.host")), "berth");
  auto ps = hook_state("poststart");
  ASSERT_TRUE(ps.is_object());
  EXPECT_EQ(ps["id"], "hooks");
  EXPECT_EQ(ps["status"], "running");
  EXPECT_EQ(ps["pid"], pid);
  EXPECT_FALSE(exists(out_dir() + "/poststop.json"));

  ASSERT_OK(rt({"kill", "hooks", "KILL"}));
  ASSERT_TRUE(wait_status("hooks", "stopped"));
  ASSERT_OK(rt({"delete", "hooks"}));
  auto pst = hook_state("poststop");
  ASSERT_TRUE(pst.is_object()) << read_file(out_dir() + "/poststop.json");
  EXPECT_EQ(pst["id"], "hooks");
  EXPECT_EQ(pst["status"], "stopped");
  EXPECT_EQ(read_file(out_dir() + "/order.log"),
            "prestart\ncreateRuntime\ncreateContainer\nstartContainer\npoststart\npoststop\n");
}

// `delete` reads the saved config only for poststop hooks, and skips the
// parse when the text cannot hold any: a key spelt with a JSON escape still
// counts.
TEST_F(Hooks, PoststopSpeltWithAnEscapeStillRuns) {
  mkdirs(out_dir());
  auto& b = make_bundle("escaped", {kHelper, "pause"}, false);
  b.config["hooks"] = {{"poststop", {host_hook("poststop")}}};
  b.save();
  std::string text = read_file(b.dir + "/config.json");
  auto at = text.find("\"poststop\"");
  ASSERT_NE(at, std::string::npos);
  text.replace(at, 10, "\"\\u0070oststop\"");
  write_file(b.dir + "/config.json", text);
  ASSERT_OK(create(b));
  ASSERT_OK(rt({"kill", "escaped", "KILL"}));
  ASSERT_TRUE(wait_status("escaped", "stopped"));
  ASSERT_OK(rt({"delete", "escaped"}));
  auto pst = hook_state("poststop");
  ASSERT_TRUE(pst.is_object()) << read_file(out_dir() + "/poststop.json");
  EXPECT_EQ(pst["id"], "escaped");
}

TEST_F(Hooks, FailingPoststartFailsRunAndStart) {
  mkdirs(out_dir());
  json bad = {{"path", "/bin/sh"}, {"args", {"sh", "-c", "exit 3"}}};
  auto& b = make_bundle("psfail", {kHelper, "pause"}, false);
  b.config["hooks"] = {{"poststart", {bad}}};
  b.save();
  auto r = run_fg(b, {"--detach"});
  EXPECT_NE(r.code, 0) << r.desc();
  EXPECT_TRUE(contains(r.err, "poststart")) << r.desc();
  std::string st = status("psfail");
  EXPECT_TRUE(st == "" || st == "stopped") << st;
  // run deletes what it made: no state, no cgroup, so no process left in it.
  EXPECT_FALSE(exists(root_ + "/psfail"));
  for (auto& d : cgroup_dirs(b.cgroup_path))
    EXPECT_TRUE(trim(read_file(d + "/cgroup.procs")).empty()) << d;
  EXPECT_TRUE(cgroup_dirs(b.cgroup_path).empty());

  auto& c = make_bundle("psfail2", {kHelper, "pause"}, false);
  c.config["hooks"] = {{"poststart", {bad}}};
  c.save();
  ASSERT_OK(create(c));
  pid_t pid = init_pid("psfail2");
  auto s = rt({"start", "psfail2"});
  EXPECT_NE(s.code, 0) << s.desc();
  EXPECT_TRUE(contains(s.err, "poststart")) << s.desc();
  EXPECT_TRUE(wait_until([&] { return !pid_alive(pid); }, 5)) << "container still running after a failed poststart";
  std::string st2 = status("psfail2");
  EXPECT_TRUE(st2 == "" || st2 == "stopped") << st2;
}

// A hook need not read the state on its stdin. One that exits first closes
// the pipe's only reader; with a state larger than a pipe holds (a big
// annotation) the runtime's write then always meets the closed end, and must
// get EPIPE, not die of SIGPIPE (the CI once saw `start` exit 141 on the race
// that a small state leaves).
TEST_F(Hooks, HookThatLeavesTheStateUnreadDoesNotKillTheRuntime) {
  json quiet = {{"path", "/bin/true"}, {"args", {"true"}}};
  auto& b = make_bundle("unread", {kHelper, "pause"}, false);
  b.config["annotations"] = {{"org.example.big", std::string(256 * 1024, 'x')}};
  b.config["hooks"] = {{"prestart", {quiet}}, {"poststart", {quiet}}};
  b.save();
  ASSERT_OK(create(b));
  ASSERT_OK(rt({"start", "unread"}));
  EXPECT_EQ(status("unread"), "running");
  ASSERT_OK(rt({"kill", "unread", "KILL"}));
  ASSERT_TRUE(wait_status("unread", "stopped"));
  ASSERT_OK(rt({"delete", "unread"}));
}

TEST_F(Hooks, HookTimeoutFailsQuickly) {
  auto& b = make_bundle("slow", {kHelper, "true"}, false);
  b.config["hooks"] = {{"prestart", {{{"path", "/bin/sleep"}, {"args", {"sleep", "5"}}, {"timeout", 1}}}}};
  b.save();
  auto t0 = std::chrono::steady_clock::now();
  auto r = create(b);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  SKIP_IF_CLEANUP_CRASH(r);
  EXPECT_NE(r.code, 0) << r.desc();
  EXPECT_LT(secs, 4.0) << r.desc();
  EXPECT_TRUE(contains(r.err, "prestart")) << r.desc();
  EXPECT_TRUE(contains(r.err, "timed out")) << r.desc();
  EXPECT_TRUE(root_entries().empty());
  EXPECT_TRUE(cgroup_dirs(b.cgroup_path).empty());
}

}  // namespace
}  // namespace berth::it
