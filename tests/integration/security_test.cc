// Safety: each test plays an attack and shows that it fails.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <functional>

#include "harness.h"

namespace berth::it {
namespace {

const std::string kHelper = "/bin/berth-test-helper";

class Security : public BerthTest {};

std::vector<std::string> dir_entries(const std::string& d) {
  std::vector<std::string> out;
  if (DIR* dp = ::opendir(d.c_str())) {
    while (auto* e = ::readdir(dp))
      if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, "..")) out.emplace_back(e->d_name);
    ::closedir(dp);
  }
  return out;
}

// ------------------------------------------------------- a. fd leaks --

TEST_F(Security, LeakedHostFdNeverReachesTheContainer) {
  std::string hostdir = path("hostdir");
  mkdirs(hostdir);
  write_file(hostdir + "/secret", "host secret\n");
  // Deliberately without O_CLOEXEC: fork+exec of the runtime inherits it.
  int fd = ::open(hostdir.c_str(), O_RDONLY | O_DIRECTORY);
  ASSERT_GE(fd, 3);
  track_fd(fd);
  const std::string n = std::to_string(fd);
  // Sanity: a plain child really inherits it.
  auto probe = run({"/bin/ls", "/proc/self/fd/"}, path("probe.out"), path("probe.err"));
  ASSERT_TRUE(contains(probe.out, n + "\n")) << "leak setup did not work: " << probe.out;

  auto& b = make_bundle("fds", {kHelper, "fds"});
  auto r = run_fg(b);
  ASSERT_OK(r);
  EXPECT_EQ(r.out, "0 1 2\n") << r.desc();

  auto& e = make_bundle("escape", {kHelper, "cwd-escape"});
  auto re = run_fg(e);
  ASSERT_OK(re);
  EXPECT_TRUE(contains(re.out, "escape=none")) << re.desc();
  EXPECT_TRUE(contains(re.out, "root_dotdot=same")) << re.desc();

  // The same through exec (and --cwd) into a running container.
  auto& x = make_bundle("execfd", {kHelper, "pause"});
  create_and_start(x);
  ASSERT_FALSE(HasFailure());
  auto xf = rt({"exec", "execfd", kHelper, "fds"});
  ASSERT_OK(xf);
  EXPECT_EQ(xf.out, "0 1 2\n") << xf.desc();
  auto xe = rt({"exec", "execfd", kHelper, "cwd-escape"});
  ASSERT_OK(xe);
  EXPECT_TRUE(contains(xe.out, "escape=none")) << xe.desc();
  auto xc = rt({"exec", "--cwd", "/proc/self/fd/" + n, "execfd", kHelper, "cwd"});
  if (xc.code == 0)
    EXPECT_FALSE(contains(xc.out, "unreachable")) << xc.desc();
  else
    EXPECT_TRUE(contains(xc.err, "cwd")) << xc.desc();

  // CVE-2024-21626: process.cwd through the leaked fd.
  auto& c = make_bundle("cwdfd", {kHelper, "cwd"}, false);
  c.process()["cwd"] = "/proc/self/fd/" + n;
  c.save();
  auto rc = run_fg(c);
  SKIP_IF_CLEANUP_CRASH(rc);
  if (rc.code == 0) {
    EXPECT_FALSE(contains(rc.out, "unreachable")) << rc.desc();
    EXPECT_EQ(rc.out.rfind("/", 0), 0u) << rc.desc();
  } else {
    EXPECT_TRUE(contains(rc.err, "cwd")) << rc.desc();
  }
  EXPECT_FALSE(contains(rc.out, "host secret"));
  EXPECT_FALSE(exists(root_ + "/cwdfd"));
  EXPECT_TRUE(cgroup_dirs(c.cgroup_path).empty());
}

// ------------------------------------------------- b. --preserve-fds --

TEST_F(Security, PreserveFdsPassesExactlyN) {
  write_file(path("fd3.txt"), "three\n");
  write_file(path("fd4.txt"), "four\n");
  int a = ::open(path("fd3.txt").c_str(), O_RDONLY | O_CLOEXEC);
  int b4 = ::open(path("fd4.txt").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(a, 0);
  ASSERT_GE(b4, 0);
  track_fd(a);
  track_fd(b4);
  SpawnOptions o;
  o.fds = {{a, 3}, {b4, 4}};
  auto& b = make_bundle("pfds", {kHelper, "fdpaths"});
  auto r = run_fg(b, {"--preserve-fds", "1"}, o);
  ASSERT_OK(r);
  EXPECT_TRUE(contains(r.out, "3 -> " + path("fd3.txt"))) << r.desc();
  EXPECT_FALSE(contains(r.out, "4 ->")) << r.desc();
  EXPECT_FALSE(contains(r.out, "fd4.txt")) << r.desc();

  auto& c = make_bundle("pfdread", {kHelper, "read", "/proc/self/fd/3"});
  auto rc = run_fg(c, {"--preserve-fds", "1"}, o);
  ASSERT_OK(rc);
  EXPECT_EQ(rc.out, "three\n") << rc.desc();

  // Without the flag nothing passes.
  auto& d = make_bundle("nofds", {kHelper, "fds"});
  auto rd = run_fg(d, {}, o);
  ASSERT_OK(rd);
  EXPECT_EQ(rd.out, "0 1 2\n") << rd.desc();
}

// ------------------------------------------------- c. CVE-2019-5736 --

TEST_F(Security, ExeOverwriteThroughProcPidExeFails) {
  // The test drives a copy of the runtime: even a successful attack could not
  // damage the build. The helper runs in harmless mode regardless.
  std::string copy = path("berth-runtime-copy");
  write_file(copy, read_file(runtime_path()), 0755);
  ::chmod(copy.c_str(), 0755);
  std::string real_before = sha256_of(runtime_path());
  std::string copy_before = sha256_of(copy);
  ASSERT_FALSE(copy_before.empty());
  ASSERT_EQ(real_before, copy_before);
  runtime_ = copy;

  auto& b = make_bundle("attack", {kHelper, "exe-attack", "5", "harmless"});
  auto c = create_and_start(b);
  ASSERT_FALSE(HasFailure());
  int ok = 0, tries = 0;
  auto t0 = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(3500)) {
    ++tries;
    auto e = rt({"exec", "attack", kHelper, "sleep", "0.05"}, {.fds = {}, .timeout_s = 10, .cwd = ""});
    if (e.code == 0) ++ok;
    auto e2 = rt({"exec", "-d", "attack", kHelper, "true"}, {.fds = {}, .timeout_s = 10, .cwd = ""});
    if (e2.code == 0) ++ok;
  }
  EXPECT_GT(ok, 4) << "execs into the container did not work (" << ok << "/" << 2 * tries << ")";
  ASSERT_TRUE(wait_until([&] { return contains(read_file(c.out_path), "attack="); }, 15))
      << read_file(c.out_path);
  std::string out = read_file(c.out_path);
  EXPECT_TRUE(contains(out, "attack=failed")) << out;
  if (::getenv("BERTH_IT_VERBOSE")) std::fprintf(stderr, "exe-attack output:\n%s\n", out.c_str());
  EXPECT_FALSE(contains(out, "write=ok")) << out;
  EXPECT_TRUE(contains(out, "pid=")) << "the attacker never saw a process to attack: " << out;
  EXPECT_EQ(sha256_of(copy), copy_before);
  EXPECT_EQ(sha256_of(runtime_path()), real_before);
  runtime_ = runtime_path();
}

// ------------------------------------------------- d. masked paths --

TEST_F(Security, MaskedPathsAreNullAndEmptyTmpfs) {
  std::vector<std::string> files;
  for (const char* p : {"/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/latency_stats", "/proc/sched_debug",
                        "/proc/timer_stats"})
    if (exists(p)) files.push_back(p);
  ASSERT_FALSE(files.empty()) << "no maskable /proc file on this host";
  std::string script;
  for (auto& f : files) script += "echo \"" + f + "=$(" + kHelper + " stat " + f + ")\"; ";
  script += "echo \"fw=$(" + kHelper + " stat /sys/firmware)\"; ";
  script += "echo \"fwls=$(ls -A /sys/firmware | wc -l)\"; ";
  script += "echo \"fwwrite=$(" + kHelper + " write /sys/firmware/x y)\"; ";
  script += "echo \"keys=$(" + kHelper + " read /proc/keys | wc -c)\"; ";
  script += kHelper + " mounts";
  auto& b = make_bundle("mask", {"/bin/sh", "-c", script});
  auto r = run_fg(b);
  ASSERT_OK(r);
  for (auto& f : files) {
    std::string v = kv(r.out, f);
    EXPECT_TRUE(contains(v, "type=chr")) << f << ": " << v;
    EXPECT_TRUE(contains(v, "rdev=1:3")) << f << ": " << v;
  }
  if (exists("/sys/firmware")) {
    EXPECT_TRUE(contains(kv(r.out, "fw"), "type=dir")) << r.out;
    EXPECT_EQ(kv(r.out, "fwls"), "0") << r.out;
    EXPECT_TRUE(contains(kv(r.out, "fwwrite"), "EROFS")) << r.out;
    bool found = false;
    for (auto& l : split_lines(r.out))
      if (contains(l, " /sys/firmware ")) {
        found = true;
        EXPECT_TRUE(contains(l, " tmpfs ")) << l;
        EXPECT_TRUE(contains(l, " ro,") || contains(l, " ro ")) << l;
      }
    EXPECT_TRUE(found) << r.out;
  }
  if (exists("/proc/keys")) {
    EXPECT_EQ(kv(r.out, "keys"), "0") << r.out;
  }
}

// A rootfs whose /dev/null is planted (CVE-2025-31133 class) must not turn the
// masks into binds of a host file.
TEST_F(Security, HostileDevNullInRootfs) {
  struct stat before;
  ASSERT_EQ(::stat("/etc/passwd", &before), 0);
  std::string passwd = read_file("/etc/passwd");
  std::string target = path("victim");
  write_file(target, "victim file\n");
  std::vector<std::string> files;
  for (const char* p : {"/proc/kcore", "/proc/keys", "/proc/timer_list"})
    if (exists(p)) files.push_back(p);
  ASSERT_FALSE(files.empty());
  std::string script;
  for (auto& f : files) script += "echo \"" + f + "=$(" + kHelper + " stat " + f + ")\"; ";
  script += "echo \"null=$(" + kHelper + " stat /dev/null)\"; echo x > /dev/null; echo wrote=$?";

  struct Variant {
    const char* name;
    std::function<void(const std::string&)> plant;
  } variants[] = {
      {"symlink-passwd", [](const std::string& dev) { ASSERT_EQ(::symlink("/etc/passwd", (dev + "/null").c_str()), 0); }},
      {"symlink-victim",
       [&](const std::string& dev) { ASSERT_EQ(::symlink(target.c_str(), (dev + "/null").c_str()), 0); }},
      {"regular-file", [](const std::string& dev) { write_file(dev + "/null", "not the null device\n"); }},
  };
  for (auto& v : variants) {
    SCOPED_TRACE(v.name);
    auto& b = make_bundle(std::string("hostile-") + v.name, {"/bin/sh", "-c", script}, false);
    // The rootfs's own /dev is used: no tmpfs over it.
    b.drop_mount("/dev");
    b.save();
    v.plant(b.rootfs + "/dev");
    auto r = run_fg(b);
    if (r.code == 0) {
      for (auto& f : files) {
        EXPECT_TRUE(contains(kv(r.out, f), "type=chr")) << r.desc();
        EXPECT_TRUE(contains(kv(r.out, f), "rdev=1:3")) << r.desc();
      }
      EXPECT_TRUE(contains(kv(r.out, "null"), "type=chr")) << r.desc();
      EXPECT_TRUE(contains(kv(r.out, "null"), "rdev=1:3")) << r.desc();
    } else {
      // Refusing the rootfs is fine too, with a clear word.
      EXPECT_TRUE(contains(r.err, "/dev/null")) << r.desc();
    }
    EXPECT_FALSE(exists(root_ + "/" + b.id));
  }
  struct stat after;
  ASSERT_EQ(::stat("/etc/passwd", &after), 0);
  EXPECT_EQ(read_file("/etc/passwd"), passwd);
  EXPECT_EQ(before.st_ino, after.st_ino);
  EXPECT_EQ(before.st_mtim.tv_sec, after.st_mtim.tv_sec);
  EXPECT_EQ(before.st_mtim.tv_nsec, after.st_mtim.tv_nsec);
  EXPECT_EQ(read_file(target), "victim file\n");
  struct stat ts;
  ASSERT_EQ(::lstat(target.c_str(), &ts), 0);
  EXPECT_TRUE(S_ISREG(ts.st_mode));
  // Nothing got mounted over host files.
  std::string mi = read_file("/proc/self/mountinfo");
  EXPECT_FALSE(contains(mi, " /etc/passwd ")) << mi;
  EXPECT_FALSE(contains(mi, target)) << mi;
}

// ------------------------------------------ e. mount destination escapes --

TEST_F(Security, MountDestinationSymlinkStaysInRootfs) {
  std::string src = path("src");
  mkdirs(src);
  write_file(src + "/marker", "m\n");
  std::string hostdir = path("escape-target");
  mkdirs(hostdir);
  struct Variant {
    const char* name;
    std::string link;
  } variants[] = {{"dotdot", "/../../../../../.." + hostdir}, {"absolute", hostdir}, {"relative", "../../../../.." + hostdir}};
  for (auto& v : variants) {
    SCOPED_TRACE(v.name);
    auto& b = make_bundle(std::string("mnt-") + v.name, {kHelper, "stat", "/mnt/x/marker"}, false);
    ::rmdir((b.rootfs + "/mnt").c_str());
    ASSERT_EQ(::symlink(v.link.c_str(), (b.rootfs + "/mnt").c_str()), 0);
    b.add_mount({{"destination", "/mnt/x"}, {"type", "bind"}, {"source", src}, {"options", {"rbind", "ro"}}});
    b.save();
    auto r = run_fg(b);
    if (r.code == 0)
      EXPECT_TRUE(contains(r.out, "type=reg")) << r.desc();
    else
      EXPECT_TRUE(contains(r.err, "/mnt")) << r.desc();
    EXPECT_TRUE(dir_entries(hostdir).empty()) << "the bind escaped the rootfs into " << hostdir;
    // When it worked it landed inside the rootfs.
    if (r.code == 0) {
      EXPECT_TRUE(exists(b.rootfs + hostdir + "/x")) << b.rootfs + hostdir + "/x";
    }
  }
  EXPECT_FALSE(contains(read_file("/proc/self/mountinfo"), hostdir));
}

TEST_F(Security, ProcSymlinkInRootfsIsRefused) {
  std::string fake = path("fakeproc");
  mkdirs(fake);
  int i = 0;
  for (const std::string& link : {fake, std::string("/tmp"), std::string("../../../../..") + fake}) {
    SCOPED_TRACE(link);
    auto& b = make_bundle("procln" + std::to_string(i++), {kHelper, "true"}, false);
    ::rmdir((b.rootfs + "/proc").c_str());
    ::unlink((b.rootfs + "/proc").c_str());
    ASSERT_EQ(::symlink(link.c_str(), (b.rootfs + "/proc").c_str()), 0);
    b.save();
    auto r = create(b);
    SKIP_IF_CLEANUP_CRASH(r);
    SKIP_IF_BUG(contains(r.err, "Broken pipe"),
                "an error of the container's init early in its setup (here: /proc in the rootfs is a "
                "symlink) is reported as \"sendmsg: Broken pipe\": the parent sends kGo to the init that "
                "already exited instead of reading its kError first. "
                    << r.desc());
    EXPECT_NE(r.code, 0) << r.desc();
    EXPECT_TRUE(contains(r.err, "/proc")) << r.desc();
    EXPECT_EQ(split_lines(trim(r.err)).size(), 1u) << r.desc();
    EXPECT_TRUE(root_entries().empty()) << "left under --root: " << root_entries().size();
    EXPECT_TRUE(cgroup_dirs(b.cgroup_path).empty()) << "cgroup left: " << b.cgroup_path;
    EXPECT_TRUE(dir_entries(fake).empty());
    EXPECT_FALSE(contains(read_file("/proc/self/mountinfo"), fake));
  }
}

// ----------------------------------------------------- f. readonlyPaths --

TEST_F(Security, ReadonlyProcSys) {
  std::string host_name = trim(read_file("/proc/sys/kernel/hostname"));
  auto& b = make_bundle("rop", {kHelper, "write", "/proc/sys/kernel/hostname", "pwned"});
  auto r = run_fg(b);
  EXPECT_NE(r.code, 0) << r.desc();
  EXPECT_TRUE(contains(r.out, "error=EROFS")) << r.desc();
  EXPECT_EQ(trim(read_file("/proc/sys/kernel/hostname")), host_name);
  // Another readonly path, where the host has it: a write must not reach the kernel.
  for (const char* p : {"/proc/sysrq-trigger", "/proc/sys/vm/drop_caches"}) {
    if (!exists(p)) continue;
    auto& t = make_bundle(std::string("rot") + std::to_string(std::strlen(p)), {kHelper, "write", p, "0"});
    auto rt2 = run_fg(t);
    EXPECT_NE(rt2.code, 0) << rt2.desc();
    EXPECT_TRUE(contains(rt2.out, "error=EROFS")) << rt2.desc();
  }
}

// ----------------------------------------------------- g. capabilities --

TEST_F(Security, CapabilitiesExactlyAsConfigured) {
  auto& b = make_bundle("caps", {kHelper, "caps"});
  auto r = run_fg(b);
  ASSERT_OK(r);
  EXPECT_EQ(status_field(r.out, "CapInh"), "0000000000000000") << r.out;
  EXPECT_EQ(status_field(r.out, "CapPrm"), "0000000020000420") << r.out;
  EXPECT_EQ(status_field(r.out, "CapEff"), "0000000020000420") << r.out;
  EXPECT_EQ(status_field(r.out, "CapBnd"), "0000000020000420") << r.out;
  EXPECT_EQ(status_field(r.out, "CapAmb"), "0000000000000000") << r.out;

  // Ambient without inheritable: nothing inheritable appears from nowhere.
  auto& a = make_bundle("ambient", {kHelper, "caps"}, false);
  json set = {"CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_CHOWN"};
  a.process()["capabilities"] = {
      {"bounding", set}, {"effective", set}, {"permitted", set}, {"ambient", {"CAP_NET_BIND_SERVICE"}}};
  a.save();
  auto ra = run_fg(a);
  ASSERT_OK(ra);
  EXPECT_EQ(status_field(ra.out, "CapInh"), "0000000000000000") << ra.out;
  EXPECT_EQ(status_field(ra.out, "CapAmb"), "0000000000000000") << ra.out;
  EXPECT_EQ(status_field(ra.out, "CapBnd"), "0000000020000421") << ra.out;
  EXPECT_EQ(status_field(ra.out, "CapEff"), "0000000020000421") << ra.out;

  // With inheritable listed, ambient works and nothing more is inheritable.
  auto& i = make_bundle("inh", {kHelper, "caps"}, false);
  i.process()["capabilities"] = {{"bounding", set},
                                 {"effective", set},
                                 {"permitted", set},
                                 {"inheritable", {"CAP_NET_BIND_SERVICE"}},
                                 {"ambient", {"CAP_NET_BIND_SERVICE"}}};
  i.save();
  auto ri = run_fg(i);
  ASSERT_OK(ri);
  EXPECT_EQ(status_field(ri.out, "CapInh"), "0000000000000400") << ri.out;
  EXPECT_EQ(status_field(ri.out, "CapAmb"), "0000000000000400") << ri.out;
}

// --------------------------------------- h. state dir, no abstract sockets --

TEST_F(Security, StateDirPrivateAndNoAbstractSockets) {
  auto& b = make_bundle("sock", {kHelper, "pause"});
  ASSERT_OK(create(b));
  struct stat st;
  ASSERT_EQ(::stat(root_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  ASSERT_EQ(::stat((root_ + "/sock").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  ASSERT_EQ(::lstat((root_ + "/sock/start.sock").c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  std::string unix_tab = read_file("/proc/net/unix");
  EXPECT_TRUE(contains(unix_tab, "start.sock")) << "the start socket is not a path socket";
  for (auto& l : split_lines(unix_tab)) {
    auto sp = l.find_last_of(' ');
    if (sp == std::string::npos) continue;
    std::string name = l.substr(sp + 1);
    if (name.rfind("@", 0) == 0) {
      EXPECT_FALSE(contains(name, "berth")) << l;
      EXPECT_FALSE(contains(name, "sock")) << l;
    }
  }
  // The state file itself is not world-writable either.
  ASSERT_EQ(::stat((root_ + "/sock/state.json").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0022, 0u);
  ASSERT_OK(rt({"start", "sock"}));
  EXPECT_FALSE(exists(root_ + "/sock/start.sock"));
}

}  // namespace
}  // namespace berth::it
