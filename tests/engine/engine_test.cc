// `berth` container verbs end to end as root: the real binary, its monitor and
// the runtime core, against the busybox template image. Each test has its own
// --root and --runroot and removes every container it made; TearDown checks
// that no mount, cgroup, monitor or file of its containers is left.
#include <elf.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <thread>

#include "berth_run.h"
#include "engine/spare.h"
#include "image/db.h"
#include "util/fs.h"

namespace berth {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using test::Out;

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (mounts, cgroups, namespaces)";
    ASSERT_TRUE(test::make_test_dirs("engine", dir_, root_, runroot_));
  }
  void TearDown() override {
    if (dir_.empty()) return;
    auto ids = berth({"ps", "-aq", "--no-trunc"});
    for (auto& id : split(ids.out, '\n'))
      if (!id.empty()) berth({"rm", "-f", id});
    // Nothing of ours may be left: no mount under the root, no monitor.
    EXPECT_TRUE(test::wait_for_trash(root_)) << "removed containers' files are left";
    test::expect_only_layer_mounts(dir_, root_);
    if (fs::exists(root_ + "/containers")) {
      // Spare directories (engine/spare.h) are the store's, a few at most.
      size_t n = 0, spares = 0;
      for (auto& e : fs::directory_iterator(root_ + "/containers")) {
        std::string name = e.path().filename().string();
        if (name == engine::kSpareNursery) {
          EXPECT_TRUE(fs::is_empty(e.path())) << "a spare being made is left";
          continue;
        }
        ++(name.starts_with(".spare-") ? spares : n);
      }
      EXPECT_EQ(n, 0u) << "container directories are left";
      EXPECT_LE(spares, static_cast<size_t>(engine::kSpareSlots)) << "spare directories pile up";
    }
    if (fs::exists(runroot_ + "/runtime")) {
      size_t n = 0;
      for (auto& e : fs::directory_iterator(runroot_ + "/runtime")) ++n, (void)e;
      EXPECT_EQ(n, 0u) << "runtime state is left";
    }
    for (auto& id : made_)
      for (auto* c : {"memory", "pids", "cpu", "freezer"})
        EXPECT_FALSE(fs::exists(std::string("/sys/fs/cgroup/") + c + "/berth-" + id) &&
                     fs::exists(std::string("/sys/fs/cgroup/") + c + "/berth-" + id + "/cgroup.procs"))
            << "cgroup left for " << id;
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  // Runs berth with this test's roots; stdin from /dev/null unless `input`.
  Out berth(const std::vector<std::string>& args, const std::string& input = "") {
    return test::run_berth(root_, runroot_, dir_ + "/cmd." + std::to_string(seq_++), args, input);
  }
  // `cmd` run by sh -c (berth started in a state of the caller's own: its
  // signals, its umask): the exit status and what it printed.
  std::pair<int, std::string> shell(const std::string& cmd) {
    FILE* p = ::popen(("sh -c \"" + cmd + "\"").c_str(), "r");
    if (!p) return {-1, ""};
    std::string out;
    char buf[256];
    while (size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
    return {::pclose(p), out};
  }
  // berth with this test's roots, not waited for: its stdin /dev/null, its
  // output to `out` (or /dev/null). Reap ends it however it is.
  pid_t start_berth(const std::vector<std::string>& args, int out = -1) {
    pid_t pid = ::fork();
    if (pid == 0) {
      int null = ::open("/dev/null", O_RDWR);
      if (out < 0) out = null;
      ::dup2(null, 0), ::dup2(out, 1), ::dup2(out, 2);
      std::vector<std::string> argv = {BERTH_CLI, "--root", root_, "--runroot", runroot_};
      argv.insert(argv.end(), args.begin(), args.end());
      std::vector<char*> a;
      for (auto& x : argv) a.push_back(x.data());
      a.push_back(nullptr);
      ::execv(a[0], a.data());
      _exit(127);
    }
    return pid;
  }
  struct Reap {
    pid_t pid;
    ~Reap() {
      if (::waitpid(pid, nullptr, WNOHANG) == 0) ::kill(pid, SIGKILL), ::kill(pid, SIGCONT), ::waitpid(pid, nullptr, 0);
    }
  };
  // The command lines of this store's monitors (they name --dir ROOT/containers/ID).
  std::vector<std::string> monitors() {
    std::vector<std::string> out;
    for (auto& e : fs::directory_iterator("/proc")) {
      std::string cmd = read_file(e.path().string() + "/cmdline").value_or("");
      for (auto& ch : cmd)
        if (ch == '\0') ch = ' ';
      if (cmd.find("berth-monitor") != std::string::npos && cmd.find(root_ + "/containers/") != std::string::npos)
        out.push_back(cmd);
    }
    return out;
  }
  std::string run_d(std::vector<std::string> args) {
    args.insert(args.begin(), {"run", "-d"});
    auto r = berth(args);
    EXPECT_EQ(r.code, 0) << r.err;
    std::string id = r.out.substr(0, r.out.find('\n'));
    made_.push_back(id);
    return id;
  }
  json inspect(const std::string& name) {
    auto r = berth({"inspect", name});
    EXPECT_EQ(r.code, 0) << r.err;
    json j = json::parse(r.out, nullptr, false);
    return j.is_array() && !j.empty() ? j[0] : json::object();
  }
  // The cgroup directories left of any container this store ever made (the
  // IDs its event log names), a moment after they all went: none.
  std::vector<std::string> cgroups_of_made_containers() {
    std::set<std::string> ids;
    for (auto& line : split(read_file(root_ + "/events.log").value_or(""), '\n')) {
      json e = json::parse(line, nullptr, false);
      if (e.is_object() && e.value("Type", "") == "container") ids.insert(e.value("id", ""));
    }
    std::vector<std::string> left;
    for (int i = 0; i < 200; ++i) {  // the last monitors remove theirs as they exit
      left.clear();
      std::error_code ec;
      std::vector<fs::path> roots = {"/sys/fs/cgroup"};  // v2, then each v1 hierarchy
      for (auto& h : fs::directory_iterator("/sys/fs/cgroup", ec)) roots.push_back(h.path());
      for (auto& r : roots)
        for (auto& id : ids)
          if (!id.empty() && fs::exists(r / ("berth-" + id))) left.push_back((r / ("berth-" + id)).string());
      if (left.empty()) break;
      ::usleep(20000);
    }
    return left;
  }
  size_t count_containers() {
    auto r = berth({"ps", "-aq"});
    size_t n = 0;
    for (auto& l : split(r.out, '\n')) n += !l.empty();
    return n;
  }

  std::string dir_, root_, runroot_;
  std::vector<std::string> made_;
  std::atomic<int> seq_{0};  // berth() runs from several threads at once
};

TEST_F(EngineTest, RunPrintsOutputAndPassesTheExitCode) {
  auto r = berth({"run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3"});
  EXPECT_EQ(r.code, 3) << r.err;
  EXPECT_EQ(r.out, "out\n");
  EXPECT_EQ(r.err, "err\n");
  // --rm: gone once run returns.
  EXPECT_EQ(count_containers(), 0u);
  r = berth({"run", "--rm", "busybox", "false"});
  EXPECT_EQ(r.code, 1);
}

// berth is a static binary that runs the container verbs itself and hands
// the verbs that need libcurl, ISA-L's gzip or libarchive's disk side to
// berth-full beside it (src/CMakeLists.txt). A copy of berth without
// berth-full shows where that line runs.
TEST_F(EngineTest, TheStaticBerthHandsArchiveAndRegistryWorkToBerthFull) {
  std::string bin = fs::path(BERTH_CLI).parent_path().string();
  if (!fs::exists(bin + "/berth-full")) GTEST_SKIP() << "berth is built whole (no static archives here)";
  // Static: no program interpreter in its headers.
  auto elf = read_file(BERTH_CLI).value_or("");
  ASSERT_GT(elf.size(), sizeof(Elf64_Ehdr));
  auto* eh = reinterpret_cast<const Elf64_Ehdr*>(elf.data());
  bool interp = false;
  for (int i = 0; i < eh->e_phnum; ++i)
    interp |= reinterpret_cast<const Elf64_Phdr*>(elf.data() + eh->e_phoff + i * eh->e_phentsize)->p_type == PT_INTERP;
  EXPECT_FALSE(interp) << BERTH_CLI << " is dynamically linked";
  EXPECT_EQ(eh->e_type, ET_DYN) << "not a PIE";

  // The image the containers below need is made from its template by
  // berth-full, which runs the whole `run` then (berth reads nothing, not
  // its --env-file, before it hands it over).
  std::string env = dir_ + "/env";
  ASSERT_TRUE(atomic_write_file(env, "A=from-stdin\n"));
  auto first = berth({"run", "--rm", "--env-file", "/dev/stdin", "busybox", "sh", "-c", "echo $A"}, env);
  ASSERT_EQ(first.code, 0) << first.err;
  EXPECT_EQ(first.out, "from-stdin\n");
  std::string alone = dir_ + "/alone";
  fs::create_directories(alone);
  for (auto* f : {"berth", "berth-monitor", "berth-init"}) fs::copy_file(bin + "/" + f, alone + "/" + f);
  auto lone = [&](const std::vector<std::string>& args) {
    return test::run_berth_exe(alone + "/berth", root_, runroot_, dir_ + "/alone.cmd", args);
  };
  auto r = lone({"run", "--rm", "busybox", "echo", "static"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "static\n");
  EXPECT_EQ(lone({"images", "-q"}).code, 0);
  for (std::vector<std::string> args : {std::vector<std::string>{"save", "busybox"}, {"pull", "localhost:1/x"},
                                        {"image", "load", "-i", "/dev/null"}, {"container", "export", "x"},
                                        {"login", "localhost:1"}}) {
    r = lone(args);
    EXPECT_EQ(r.code, 125) << args[0];
    EXPECT_NE(r.err.find("exec " + alone + "/berth-full"), std::string::npos) << r.err;
  }
  // A run whose image must first be made from its template runs in berth-full
  // from the start, and nothing of the attempt is left (TearDown checks).
  r = lone({"run", "--rm", "debian", "true"});
  EXPECT_EQ(r.code, 125);
  EXPECT_NE(r.err.find("berth-full"), std::string::npos) << r.err;
  // (The run before's monitor may still be at its files, in a child.)
  for (int i = 0; i < 500 && !monitors().empty(); ++i) ::usleep(10000);
  EXPECT_TRUE(monitors().empty());
  // A berth-full that is the static berth again is refused, not exec'd in a loop.
  fs::copy_file(alone + "/berth", alone + "/berth-full");
  r = lone({"save", "busybox"});
  EXPECT_EQ(r.code, 125);
  EXPECT_NE(r.err.find("is not the full build"), std::string::npos) << r.err;
}

// `run`'s early monitor makes the container's cgroup while the CLI creates
// the container; one that is never told to start it (the run failed) removes
// it as it goes.
TEST_F(EngineTest, AnUnusedEarlyMonitorRemovesTheCgroupItMade) {
  std::string monitor = fs::path(BERTH_CLI).parent_path().string() + "/berth-monitor";
  std::srand(static_cast<unsigned>(::getpid() ^ ::time(nullptr)));
  std::string id;
  for (int i = 0; i < 64; ++i) id += "0123456789abcdef"[std::rand() % 16];
  std::string cg = fs::exists("/sys/fs/cgroup/pids") ? "/sys/fs/cgroup/pids/berth-" + id : "/sys/fs/cgroup/berth-" + id;
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  std::string dir = dir_ + "/containers/" + id, path = "/berth-" + id;
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(sv[1], 3);
    ::execl(monitor.c_str(), monitor.c_str(), "--args-on-sync", "--id", id.c_str(), "--dir", dir.c_str(), "--sync-fd",
            "3", "--netns-early", "--cgroup-early", path.c_str(), nullptr);
    ::_exit(127);
  }
  ::close(sv[1]);
  struct Guard {
    pid_t pid;
    int fd;
    std::string id;
    ~Guard() {  // never leave it behind, whatever failed: the cgroup in every hierarchy
      if (fd >= 0) ::close(fd);
      if (pid > 0) ::kill(pid, SIGKILL), ::waitpid(pid, nullptr, 0);
      ::rmdir(("/sys/fs/cgroup/berth-" + id).c_str());
      std::error_code ec;
      for (auto& h : fs::directory_iterator("/sys/fs/cgroup", ec)) ::rmdir((h.path() / ("berth-" + id)).c_str());
    }
  } guard{pid, sv[0], id};
  bool made = false;
  for (int i = 0; i < 500 && !made; ++i) made = fs::exists(cg) || (::usleep(10000), false);
  EXPECT_TRUE(made) << cg;
  ::close(std::exchange(guard.fd, -1));
  int st = 0;
  ASSERT_EQ(::waitpid(pid, &st, 0), pid);
  guard.pid = -1;
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << st;
  EXPECT_FALSE(fs::exists(cg));
  std::error_code ec;
  for (auto& h : fs::directory_iterator("/sys/fs/cgroup", ec)) EXPECT_FALSE(fs::exists(h.path() / ("berth-" + id)));
}

TEST_F(EngineTest, CommandsThatCannotRunGetDockersStatuses) {
  auto r = berth({"run", "--rm", "busybox", "nosuchcmd"});
  EXPECT_EQ(r.code, 127) << r.err;
  EXPECT_NE(r.err.find("nosuchcmd"), std::string::npos) << r.err;
  r = berth({"run", "--rm", "busybox", "/etc/passwd"});
  EXPECT_EQ(r.code, 126) << r.err;
  r = berth({"run", "--rm", "nosuchimage:1", "true"});
  EXPECT_EQ(r.code, 125);
  EXPECT_NE(r.err.find("nosuchimage"), std::string::npos) << r.err;
  r = berth({"run", "--rm", "--no-such-flag", "busybox", "true"});
  EXPECT_EQ(r.code, 125);
  r = berth({"run", "--rm", "-u", "nosuchuser", "busybox", "true"});
  EXPECT_EQ(r.code, 125);
  EXPECT_NE(r.err.find("unable to find user nosuchuser"), std::string::npos) << r.err;
  r = berth({"run", "--rm", "-v", dir_ + "/missing:/x", "busybox", "true"});
  EXPECT_EQ(r.code, 125);
  EXPECT_NE(r.err.find("does not exist"), std::string::npos) << r.err;
  r = berth({"run", "--rm", "-m", "lots", "busybox", "true"});
  EXPECT_EQ(r.code, 125);
  EXPECT_NE(r.err.find("--memory"), std::string::npos) << r.err;
  r = berth({"run", "--rm", "--cap-add", "NOPE", "busybox", "true"});
  EXPECT_EQ(r.code, 125);
  EXPECT_NE(r.err.find("CAP_NOPE"), std::string::npos) << r.err;
  // Nothing was left by any of them, not the monitor `run` starts before it
  // looks at its arguments (EarlyMonitor).
  EXPECT_EQ(count_containers(), 0u);
  EXPECT_EQ(monitors(), std::vector<std::string>{});
  // `run` makes the container's cgroup before it looks at its arguments
  // (EarlyMonitor): those that failed after their create left none.
  EXPECT_EQ(cgroups_of_made_containers(), std::vector<std::string>{});
  run_d({"--name", "taken", "busybox", "sleep", "60"});
  r = berth({"run", "--name", "taken", "busybox", "true"});
  EXPECT_EQ(r.code, 125);
  EXPECT_NE(r.err.find("\"/taken\" is already in use"), std::string::npos) << r.err;
  EXPECT_EQ(count_containers(), 1u);
  r = berth({"rm", "taken"});
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("stop the container before removing or force remove"), std::string::npos) << r.err;
  r = berth({"stop", "nosuch"});
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("no such container: nosuch"), std::string::npos) << r.err;
}

TEST_F(EngineTest, DetachedLifecycle) {
  std::string id = run_d({"--name", "web", "busybox", "sh", "-c", "echo started; trap 'echo bye; exit 0' TERM; while :; do sleep 0.1; done"});
  ASSERT_EQ(id.size(), 64u);
  auto ps = berth({"ps"});
  EXPECT_NE(ps.out.find("web"), std::string::npos) << ps.out;
  EXPECT_NE(ps.out.find("Up "), std::string::npos) << ps.out;
  EXPECT_EQ(berth({"ps", "-q"}).out, id.substr(0, 12) + "\n");
  json j = inspect("web");
  EXPECT_EQ(j["State"]["Status"], "running");
  EXPECT_EQ(j["Id"], id);
  pid_t pid = j["State"]["Pid"].get<int>();
  EXPECT_GT(pid, 0);
  EXPECT_EQ(::kill(pid, 0), 0);
  // exec sees the container; its exit code comes back.
  auto r = berth({"exec", "web", "sh", "-c", "hostname; exit 4"});
  EXPECT_EQ(r.code, 4) << r.err;
  EXPECT_EQ(r.out, id.substr(0, 12) + "\n");
  // pause/unpause freeze and thaw it.
  EXPECT_EQ(berth({"pause", "web"}).code, 0);
  EXPECT_EQ(inspect("web")["State"]["Status"], "paused");
  EXPECT_EQ(berth({"unpause", "web"}).code, 0);
  EXPECT_EQ(inspect("web")["State"]["Status"], "running");
  // stop: the trap runs, exit 0, and the log has both lines.
  r = berth({"stop", "web"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "web\n");
  j = inspect("web");
  EXPECT_EQ(j["State"]["Status"], "exited");
  EXPECT_EQ(j["State"]["ExitCode"], 0);
  EXPECT_NE(::kill(pid, 0), 0);
  EXPECT_EQ(berth({"logs", "web"}).out, "started\nbye\n");
  // Start again: the log grows; kill gives 137.
  EXPECT_EQ(berth({"start", "web"}).code, 0);
  EXPECT_EQ(inspect("web")["State"]["Status"], "running");
  EXPECT_EQ(berth({"kill", "web"}).code, 0);
  EXPECT_EQ(berth({"wait", "web"}).out, "137\n");
  EXPECT_EQ(berth({"logs", "--tail", "1", "web"}).out, "started\n");
  EXPECT_EQ(berth({"rename", "web", "web2"}).code, 0);
  EXPECT_NE(berth({"ps", "-a"}).out.find("Exited (137)"), std::string::npos);
  EXPECT_EQ(berth({"rm", "web2"}).code, 0);
  EXPECT_EQ(count_containers(), 0u);
}

TEST_F(EngineTest, FlagsTakeEffectInside) {
  std::string script =
      "id; pwd; echo $FOO; hostname; "
      "touch /x 2>/dev/null && echo wrote || echo readonly; "
      "chown 1 /tmp 2>/dev/null && echo chowned || echo nochown; "
      "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max "
      "/sys/fs/cgroup/cpu/cpu.cfs_quota_us; cat /data/f; cat /proc/self/status | grep CapEff";
  std::string data = dir_ + "/data";
  fs::create_directories(data);
  ASSERT_TRUE(atomic_write_file(data + "/f", "from the host\n", 0644));
  auto r = berth({"run", "--rm", "-e", "FOO=bar", "-w", "/work", "-u", "nobody", "--hostname", "box",
                  "--read-only", "--cap-drop", "CHOWN", "-m", "64m", "--pids-limit", "20", "--cpus", "0.5",
                  "-v", data + ":/data:ro", "busybox", "sh", "-c", script});
  ASSERT_EQ(r.code, 0) << r.err;
  auto lines = split(r.out, '\n');
  ASSERT_GE(lines.size(), 11u) << r.out;
  EXPECT_EQ(lines[0], "uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)");
  EXPECT_EQ(lines[1], "/work");
  EXPECT_EQ(lines[2], "bar");
  EXPECT_EQ(lines[3], "box");
  EXPECT_EQ(lines[4], "readonly");
  EXPECT_EQ(lines[5], "nochown");
  EXPECT_EQ(lines[6], "67108864");
  EXPECT_EQ(lines[7], "20");
  EXPECT_EQ(lines[8], "50000");
  EXPECT_EQ(lines[9], "from the host");
  EXPECT_EQ(lines[10], "CapEff:\t0000000000000000");  // a non-root user has no effective caps
  // Root in the default set, minus what --cap-drop took.
  r = berth({"run", "--rm", "--cap-drop", "CHOWN", "busybox", "sh", "-c", "chown 1 /tmp && echo chowned || echo nochown"});
  EXPECT_EQ(r.out, "nochown\n") << r.err;
  r = berth({"run", "--rm", "busybox", "sh", "-c", "chown 1 /tmp && echo chowned"});
  EXPECT_EQ(r.out, "chowned\n") << r.err;
}

// An image's /etc/passwd and /etc/group are read through the first
// container's rootfs and kept beside its top layer (image/store.h
// etc_files): later creates resolve -u from that copy; a damaged copy is
// read past, and the rootfs read again.
TEST_F(EngineTest, UsersResolveFromTheImagesKeptPasswd) {
  auto r = berth({"run", "--rm", "-u", "nobody", "busybox", "id", "-u"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "65534\n");
  std::vector<std::string> kept;
  for (auto& layer : fs::directory_iterator(root_ + "/layers"))
    if (fs::exists(layer.path() / "etc-files")) kept.push_back(layer.path() / "etc-files");
  ASSERT_EQ(kept.size(), 1u) << "no copy of the image's passwd was kept";
  auto text = read_file(kept[0]).value_or("");
  EXPECT_TRUE(text.starts_with("berth-etc-1\n")) << text;
  EXPECT_NE(text.find("nobody:x:65534:65534"), std::string::npos) << text;
  // The copy is what -u is resolved from (a user only it has)...
  std::string passwd = "root:x:0:0:root:/root:/bin/sh\nkept:x:4242:4243:kept:/home/kept:/bin/sh\n";
  std::string group = "root:x:0:\nkeptg:x:4243:\nextra:x:4244:kept\n";
  ASSERT_TRUE(atomic_write_file(kept[0], "berth-etc-1\n" + std::to_string(passwd.size()) + "\n" + passwd +
                                             std::to_string(group.size()) + "\n" + group));
  r = berth({"run", "--rm", "-u", "kept", "busybox", "sh", "-c", "id -u; id -G; echo $HOME"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "4242\n4243 4244\n/home/kept\n");
  // ...and a damaged one is not: the image's own files again, kept anew.
  ASSERT_TRUE(atomic_write_file(kept[0], "berth-etc-1\n999\nroot"));
  r = berth({"run", "--rm", "-u", "kept", "busybox", "id", "-u"});
  EXPECT_EQ(r.code, 125);
  EXPECT_NE(r.err.find("unable to find user kept"), std::string::npos) << r.err;
  EXPECT_NE(read_file(kept[0]).value_or("").find("nobody:x:65534:65534"), std::string::npos);
}

TEST_F(EngineTest, MemoryLimitKillsTheContainer) {
  // 64 MiB touched against a 16 MiB limit without swap: the kernel's OOM killer ends it.
  auto r = berth({"run", "--rm", "-m", "16m", "--memory-swap", "16m", "busybox", "dd", "if=/dev/zero",
                  "of=/dev/null", "bs=64M", "count=1"});
  EXPECT_EQ(r.code, 137) << r.out << r.err;
  // Within the limit it completes.
  r = berth({"run", "--rm", "-m", "16m", "--memory-swap", "16m", "busybox", "dd", "if=/dev/zero", "of=/dev/null",
             "bs=4M", "count=1"});
  EXPECT_EQ(r.code, 0) << r.out << r.err;
}

TEST_F(EngineTest, KilledMonitorAndRebootAreShownTruthfully) {
  std::string id = run_d({"--name", "m", "busybox", "sleep", "600"});
  pid_t pid = inspect("m")["State"]["Pid"].get<int>();
  // The monitor is the container's parent.
  auto stat = read_file("/proc/" + std::to_string(pid) + "/stat").value_or("");
  auto fields = split(stat.substr(stat.rfind(')') + 2), ' ');
  pid_t monitor = std::stoi(fields.at(1));
  auto comm = read_file("/proc/" + std::to_string(monitor) + "/comm").value_or("");
  ASSERT_EQ(comm, "berth-monitor\n");
  ASSERT_EQ(::kill(monitor, SIGKILL), 0);
  for (int i = 0; i < 100 && ::kill(monitor, 0) == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  // The container still runs: ps says so.
  EXPECT_EQ(inspect("m")["State"]["Status"], "running");
  // A "reboot": the container dies too, with nobody to see it.
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  for (int i = 0; i < 100 && ::kill(pid, 0) == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  json j = inspect("m");
  EXPECT_EQ(j["State"]["Status"], "exited");
  EXPECT_EQ(j["State"]["ExitCode"], 255);
  // It can start again, and rm -f removes it whole.
  auto r = berth({"start", "m"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(inspect("m")["State"]["Status"], "running");
  EXPECT_EQ(berth({"rm", "-f", "m"}).code, 0);
  EXPECT_EQ(count_containers(), 0u);
}

// `berth ARGS` on a fresh pty of 33x101: once `trigger` shows, types `input`
// (then stops at `done`); returns the exit status and all output. Never hangs:
// the child is killed after 20 s.
std::pair<int, std::string> pty_session(const std::vector<std::string>& berth_args, const std::string& trigger,
                                        const std::string& input, const std::string& done) {
  int master = -1;
  struct winsize ws = {};
  ws.ws_row = 33, ws.ws_col = 101;
  pid_t pid = ::forkpty(&master, nullptr, nullptr, &ws);
  if (pid < 0) return {-1, "forkpty failed"};
  if (pid == 0) {
    std::vector<std::string> argv = {BERTH_CLI};
    argv.insert(argv.end(), berth_args.begin(), berth_args.end());
    std::vector<char*> a;
    for (auto& s : argv) a.push_back(s.data());
    a.push_back(nullptr);
    ::execv(a[0], a.data());
    _exit(127);
  }
  std::string got;
  bool sent = false;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < deadline) {
    struct pollfd p = {master, POLLIN, 0};
    if (::poll(&p, 1, 100) > 0) {
      char buf[4096];
      ssize_t n = ::read(master, buf, sizeof buf);
      if (n <= 0) break;
      got.append(buf, static_cast<size_t>(n));
    }
    if (got.find(done) != std::string::npos) break;
    if (!sent && got.find(trigger) != std::string::npos) {
      (void)!::write(master, input.data(), input.size());
      sent = true;
    }
  }
  int st = 0;
  pid_t ended = 0;
  for (int i = 0; i < 200 && (ended = ::waitpid(pid, &st, WNOHANG)) == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  if (ended == 0) {
    ::kill(pid, SIGKILL);  // never hang the suite: fail instead
    ::waitpid(pid, &st, 0);
  }
  ::close(master);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), got};
}

TEST_F(EngineTest, TtyIsARealPty) {
  auto [code, got] = pty_session({"--root", root_, "--runroot", runroot_, "run", "--rm", "-it", "busybox", "sh", "-c",
                                  "tty; stty size; read line; echo got:$line"},
                                 "33 101", "hello\r", "got:hello");
  EXPECT_EQ(code, 0) << got;
  EXPECT_NE(got.find("/dev/pts/0"), std::string::npos) << got;
  EXPECT_NE(got.find("33 101"), std::string::npos) << got;
  EXPECT_NE(got.find("got:hello"), std::string::npos) << got;
  // exec -it: a pty of its own in the container, at the caller's size, with input.
  run_d({"--name", "t", "busybox", "sleep", "60"});
  std::tie(code, got) = pty_session({"--root", root_, "--runroot", runroot_, "exec", "-it", "t", "sh", "-c",
                                     "tty; stty size; read x; echo got:$x; exit 3"},
                                    "33 101", "there\r", "got:there");
  EXPECT_EQ(code, 3) << got;
  EXPECT_NE(got.find("/dev/pts/"), std::string::npos) << got;
  EXPECT_NE(got.find("33 101"), std::string::npos) << got;
  EXPECT_NE(got.find("got:there"), std::string::npos) << got;
}

// Detaching: ctrl-p ctrl-q by default, --detach-keys otherwise; the container
// goes on running; keys that only begin the sequence reach the container.
TEST_F(EngineTest, DetachKeysLeaveTheContainerRunning) {
  auto [code, got] = pty_session({"--root", root_, "--runroot", runroot_, "run", "-it", "--name", "d1", "busybox", "sh",
                                  "-c", "echo ready; sleep 60"},
                                 "ready", "\x10\x11", "\x01never");
  EXPECT_EQ(code, 0) << got;
  EXPECT_EQ(inspect("d1")["State"]["Status"], "running") << got;
  std::tie(code, got) = pty_session({"--root", root_, "--runroot", runroot_, "run", "-it", "--rm", "--detach-keys",
                                     "ctrl-x,y", "busybox", "sh", "-c", "echo ready; read line; echo got:$line"},
                                    "ready", "\x18zz\r", "\x01never");
  EXPECT_EQ(code, 0) << got;
  EXPECT_NE(got.find("got:\x18zz"), std::string::npos) << "a broken sequence goes through: " << got;
  std::tie(code, got) = pty_session({"--root", root_, "--runroot", runroot_, "run", "-it", "--name", "d2",
                                     "--detach-keys", "ctrl-x,y", "busybox", "sh", "-c", "echo ready; sleep 60"},
                                    "ready", "\x10\x11\x18y", "\x01never");
  EXPECT_EQ(code, 0) << got;
  EXPECT_EQ(inspect("d2")["State"]["Status"], "running") << got;
  // attach takes them too.
  std::tie(code, got) = pty_session({"--root", root_, "--runroot", runroot_, "attach", "--detach-keys", "ctrl-a", "d1"},
                                    "", "\x01", "\x01never");
  EXPECT_EQ(code, 0) << got;
  EXPECT_EQ(inspect("d1")["State"]["Status"], "running") << got;
  // Docker's config.json may name them.
  std::string conf = dir_ + "/docker-config";
  ASSERT_TRUE(mkdir_p(conf));
  ASSERT_TRUE(atomic_write_file(conf + "/config.json", R"({"detachKeys": "ctrl-e"})", 0600));
  std::tie(code, got) = pty_session({"--root", root_, "--runroot", runroot_, "--config", conf, "attach", "d2"}, "",
                                    "\x05", "\x01never");
  EXPECT_EQ(code, 0) << got;
  EXPECT_EQ(inspect("d2")["State"]["Status"], "running") << got;
  auto bad = berth({"run", "-it", "--detach-keys", "ctrl-zz", "busybox", "true"});
  EXPECT_EQ(bad.code, 125);
  EXPECT_EQ(bad.err, "berth: invalid detach keys (ctrl-zz) provided\n");
  EXPECT_EQ(count_containers(), 2u) << "nothing made for bad keys";
}

TEST_F(EngineTest, StdinGoesToTheContainer) {
  std::string in = dir_ + "/in";
  ASSERT_TRUE(atomic_write_file(in, "line one\nline two\n", 0644));
  auto r = berth({"run", "--rm", "-i", "busybox", "wc", "-l"}, in);
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "2\n");
}

// Polls `pred` every 50 ms for up to `seconds`.
bool eventually(const std::function<bool()>& pred, double seconds = 10) {
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<int>(seconds * 1000));
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return pred();
}

// Whether `pid` (our child) ended within `seconds`; its status in *st.
bool ended_within(pid_t pid, int* st, double seconds) {
  return eventually([&] {
    pid_t r = ::waitpid(pid, st, WNOHANG);
    return r == pid && (WIFEXITED(*st) || WIFSIGNALED(*st));
  }, seconds);
}

TEST_F(EngineTest, RestartPoliciesAsDocker) {
  // on-failure:2: the first run and two restarts, then it stays exited.
  run_d({"--name", "flaky", "--restart", "on-failure:2", "busybox", "sh", "-c", "echo run; exit 1"});
  ASSERT_TRUE(eventually([&] {
    json j = inspect("flaky");
    return j["RestartCount"] == 2 && j["State"]["Status"] == "exited";
  })) << inspect("flaky").dump();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_EQ(inspect("flaky")["RestartCount"], 2);
  EXPECT_EQ(berth({"logs", "flaky"}).out, "run\nrun\nrun\n");
  // on-failure does not restart a success.
  run_d({"--name", "fine", "--restart", "on-failure", "busybox", "true"});
  EXPECT_EQ(berth({"wait", "fine"}).out, "0\n");
  EXPECT_EQ(inspect("fine")["RestartCount"], 0);
  // always: restarted after exit 0 too, until a user stops it.
  run_d({"--name", "loop", "--restart", "always", "busybox", "sh", "-c", "sleep 0.1"});
  ASSERT_TRUE(eventually([&] { return inspect("loop")["RestartCount"].get<int>() >= 2; }));
  EXPECT_EQ(berth({"stop", "-t", "1", "loop"}).code, 0);
  int count = inspect("loop")["RestartCount"];
  std::this_thread::sleep_for(std::chrono::milliseconds(800));
  json j = inspect("loop");
  EXPECT_EQ(j["State"]["Status"], "exited");
  EXPECT_EQ(j["RestartCount"], count);
  auto r = berth({"run", "--rm", "--restart", "always", "busybox", "true"});
  EXPECT_EQ(r.code, 125);
  EXPECT_NE(r.err.find("--restart and --rm"), std::string::npos) << r.err;
}

TEST_F(EngineTest, RunWhoseContainerAnotherCommandStartedDoesNotHang) {
  // `run` stopped between its create and its start; `start` starts the
  // container meanwhile. The run's own monitor (started early, holding its
  // attach socket) is not taken over: it must go, so that the run sees its
  // attach socket end and waits for the container as Docker's client would.
  int out = ::open((dir_ + "/raced.out").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  ASSERT_GE(out, 0);
  ::setenv("BERTH_FAILPOINT", "start-fresh:stop", 1);
  pid_t run = start_berth({"run", "--name", "raced", "busybox", "sh", "-c", "sleep 1; exit 3"}, out);
  ::unsetenv("BERTH_FAILPOINT");
  ::close(out);
  Reap reap{run};
  int st = 0;
  ASSERT_EQ(::waitpid(run, &st, WUNTRACED), run);
  ASSERT_TRUE(WIFSTOPPED(st)) << "run did not stop at its failpoint";
  auto started = berth({"start", "raced"});
  EXPECT_EQ(started.code, 0) << started.err;
  ::kill(run, SIGCONT);
  bool ended = ended_within(run, &st, 20);
  ASSERT_TRUE(ended) << "run hung after another command started its container";
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 3) << read_file(dir_ + "/raced.out").value_or("");
  EXPECT_EQ(berth({"rm", "-f", "raced"}).code, 0);
}

// A run's early monitor killed once it has prepared the start from the spec
// (runtime::prepare_launch), before the command line came: a detached run
// starts the container with a monitor of its own, and the state the dead one prepared
// (under its own name, <runtime>/.prep-<id>) goes with the container.
TEST_F(EngineTest, EarlyMonitorKilledAfterPreparingLeavesNothing) {
  // (A whole run first: the image's passwd is kept, so the spec goes first.)
  ASSERT_EQ(berth({"run", "--rm", "busybox", "true"}).code, 0);
  ::setenv("BERTH_FAILPOINT", "start-fresh:stop", 1);
  pid_t run = start_berth({"run", "-d", "--name", "prep", "busybox", "sh", "-c", "exit 4"});
  ::unsetenv("BERTH_FAILPOINT");
  Reap reap{run};
  int st = 0;
  ASSERT_EQ(::waitpid(run, &st, WUNTRACED), run);
  ASSERT_TRUE(WIFSTOPPED(st)) << "run did not stop at its failpoint";
  std::string id = inspect("prep")["Id"].get<std::string>();
  std::string prep = runroot_ + "/runtime/.prep-" + id;
  ASSERT_TRUE(eventually([&] { return fs::exists(prep); })) << "the early monitor prepared nothing";
  pid_t monitor = 0;
  for (auto& e : fs::directory_iterator("/proc")) {
    std::string cmd = read_file(e.path().string() + "/cmdline").value_or("");
    if (cmd.find("berth-monitor") != std::string::npos && cmd.find("--id") != std::string::npos &&
        cmd.find(id) != std::string::npos)
      monitor = std::atoi(e.path().filename().c_str());
  }
  ASSERT_GT(monitor, 0) << "no early monitor for " << id;
  ASSERT_EQ(::kill(monitor, SIGKILL), 0);
  // (A zombie until the stopped run reaps it.)
  ASSERT_TRUE(eventually([&] {
    auto stat = read_file("/proc/" + std::to_string(monitor) + "/stat").value_or("");
    auto paren = stat.rfind(')');
    return paren == std::string::npos || stat.compare(paren + 2, 1, "Z") == 0;
  }));
  ::kill(run, SIGCONT);
  ASSERT_TRUE(ended_within(run, &st, 20)) << "run hung after its early monitor died";
  // (Detached: a monitor of its own; a foreground run's early monitor holds its attach socket.)
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  auto waited = berth({"wait", "prep"});
  EXPECT_EQ(waited.out, "4\n") << "the container did not run to its exit: " << waited.err;
  EXPECT_EQ(berth({"rm", "-f", "prep"}).code, 0);
  EXPECT_FALSE(fs::exists(prep)) << "the dead monitor's prepared state is left";
  // The spare network namespace it had taken is unmounted by the next run's
  // spare maker, as for any early monitor killed while it waited.
  ASSERT_EQ(berth({"run", "--rm", "busybox", "true"}).code, 0);
  EXPECT_TRUE(eventually([&] {
    for (auto& line : split(read_file("/proc/self/mountinfo").value_or(""), '\n')) {
      auto f = split(line, ' ');
      if (f.size() > 4 && f[4].starts_with(runroot_ + "/netns/spare-") && !path_exists(f[4] + ".ready")) return false;
    }
    return true;
  })) << "a taken spare network namespace is still kept";
}

TEST_F(EngineTest, AHealthCheckWithANulByteIsRefused) {
  // An image whose HEALTHCHECK words hold NUL bytes: the monitor's arguments
  // are C strings (and NUL-ended on an early monitor's socket), so such a word
  // could end its command line with `-- CMD` of the image's choosing, run on
  // the host as its exit command. Refused at create, with nothing left.
  std::string d = dir_ + "/hostile";
  ASSERT_EQ(berth({"save", "-o", dir_ + "/bb.tar", "busybox"}).code, 0);
  fs::create_directories(d);
  ASSERT_EQ(std::system(("tar -xf " + dir_ + "/bb.tar -C " + d).c_str()), 0);
  json manifest = json::parse(read_file(d + "/manifest.json").value_or("[]"));
  ASSERT_TRUE(manifest.is_array() && !manifest.empty());
  std::string cfg_path = d + "/" + manifest[0]["Config"].get<std::string>();
  json cfg = json::parse(read_file(cfg_path).value_or("{}"));
  std::string marker = dir_ + "/pwned";
  const char word[] = "x\0--\0/bin/sh\0-c\0touch ";
  cfg["config"]["Healthcheck"] = {{"Test", {"CMD", std::string(word, sizeof word - 1) + marker}}};
  ASSERT_TRUE(write_file(cfg_path, cfg.dump()));
  manifest[0]["RepoTags"] = {"nulhc:latest"};
  ASSERT_TRUE(write_file(d + "/manifest.json", manifest.dump()));
  fs::remove(d + "/repositories");
  ASSERT_EQ(std::system(("tar -cf " + dir_ + "/hostile.tar -C " + d + " .").c_str()), 0);
  auto r = berth({"load", "-i", dir_ + "/hostile.tar"});
  ASSERT_EQ(r.code, 0) << r.err;
  for (auto* detach : {"-d", "--rm"}) {
    r = berth({"run", detach, "nulhc", "true"});
    EXPECT_EQ(r.code, 125) << detach;
    EXPECT_NE(r.err.find("NUL"), std::string::npos) << r.err;
  }
  EXPECT_EQ(count_containers(), 0u);
  EXPECT_EQ(monitors(), std::vector<std::string>{});
  EXPECT_FALSE(fs::exists(marker));
  EXPECT_EQ(berth({"rmi", "nulhc"}).code, 0);
}

TEST_F(EngineTest, HealthChecksRunInTheContainer) {
  run_d({"--name", "h", "--health-cmd", "test -e /tmp/ready", "--health-interval", "100ms", "--health-retries", "2",
         "busybox", "sleep", "60"});
  ASSERT_TRUE(eventually([&] { return inspect("h")["State"]["Health"]["Status"] == "unhealthy"; }))
      << inspect("h").dump();
  EXPECT_NE(berth({"ps"}).out.find("(unhealthy)"), std::string::npos);
  ASSERT_EQ(berth({"exec", "h", "touch", "/tmp/ready"}).code, 0);
  ASSERT_TRUE(eventually([&] { return inspect("h")["State"]["Health"]["Status"] == "healthy"; }));
  EXPECT_NE(berth({"ps"}).out.find("(healthy)"), std::string::npos);
  json log = inspect("h")["State"]["Health"]["Log"];
  ASSERT_FALSE(log.empty());
  EXPECT_EQ(log.back()["ExitCode"], 0);
  auto r = berth({"run", "--rm", "--health-interval", "often", "busybox", "true"});
  EXPECT_EQ(r.code, 125);
}

TEST_F(EngineTest, AttachCarriesStdinOutputAndTheExitCode) {
  run_d({"--name", "a", "-i", "busybox", "sh", "-c", "read x; echo got $x; exit 7"});
  std::string in = dir_ + "/in";
  ASSERT_TRUE(atomic_write_file(in, "hello\n", 0644));
  auto r = berth({"attach", "a"}, in);
  EXPECT_EQ(r.code, 7) << r.err;
  EXPECT_EQ(r.out, "got hello\n");
  r = berth({"attach", "a"});
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("start it first"), std::string::npos) << r.err;
  // The monitor binds attach.sock a quarter second after the start: a
  // container done before has none (and left no monitor.log: nothing to say),
  // and a client that came early waited for it (the attach above).
  std::string quick = run_d({"busybox", "true"});
  EXPECT_EQ(berth({"wait", quick}).out, "0\n");
  EXPECT_FALSE(fs::exists(root_ + "/containers/" + quick + "/attach.sock"));
  EXPECT_FALSE(fs::exists(root_ + "/containers/" + quick + "/monitor.log"));
  std::string slow = run_d({"busybox", "sleep", "1"});
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  while (!fs::exists(root_ + "/containers/" + slow + "/attach.sock") && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_TRUE(fs::exists(root_ + "/containers/" + slow + "/attach.sock")) << "a running container has no attach.sock";
  // The runtime state keeps no copy of the spec (the container's directory
  // has it), and exec reads it from there.
  EXPECT_TRUE(fs::exists(runroot_ + "/runtime/" + slow + "/state.json"));
  EXPECT_FALSE(fs::exists(runroot_ + "/runtime/" + slow + "/config.json"));
  auto e = berth({"exec", slow, "sh", "-c", "echo in"});
  EXPECT_EQ(e.code, 0) << e.err;
  EXPECT_EQ(e.out, "in\n");
}

// The monitor serves a new container from its first image for a moment,
// then re-execs into its small one, but only when nothing is half-way: here
// the foreground client (`run` without -d, whose stdout nobody reads) holds
// output. Waiting for that must not spin (it once polled with a zero
// timeout), and the client that went away is no foreground client after the
// re-exec. (Other clients attach only from the quarter second on, when
// attach.sock is bound just before the re-exec.)
TEST_F(EngineTest, MonitorWaitsForAStalledClientWithoutSpinning) {
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  pid_t client = ::fork();
  if (client == 0) {
    int null = ::open("/dev/null", O_RDWR);
    ::dup2(null, 0), ::dup2(p[1], 1), ::dup2(null, 2);
    std::vector<std::string> argv = {BERTH_CLI, "--root", root_, "--runroot", runroot_, "run", "--name", "chatty",
                                     "busybox", "sh", "-c", "while :; do echo lots of output here; done"};
    std::vector<char*> a;
    for (auto& x : argv) a.push_back(x.data());
    a.push_back(nullptr);
    ::execv(a[0], a.data());
    _exit(127);
  }
  ::close(p[1]);
  // However the test ends, the client does not outlive it (a failed
  // assertion returns early).
  struct Reap {
    pid_t pid;
    int fd;
    ~Reap() {
      if (::waitpid(pid, nullptr, WNOHANG) == 0) ::kill(pid, SIGKILL), ::waitpid(pid, nullptr, 0);
      ::close(fd);
    }
  } reap{client, p[0]};
  pid_t monitor = 0;
  auto found = [&] {
    auto r = berth({"inspect", "--format", "{{.Id}}", "chatty"});
    if (r.code != 0) return false;
    std::string id = r.out.substr(0, r.out.find('\n'));
    for (auto& e : std::filesystem::directory_iterator("/proc")) {
      std::string cmd = read_file(e.path().string() + "/cmdline").value_or("");
      if (cmd.find("berth-monitor") != std::string::npos && cmd.find(id) != std::string::npos)
        monitor = std::atoi(e.path().filename().c_str());
    }
    return monitor > 0;
  };
  ASSERT_TRUE(eventually(found));
  auto cpu_ticks = [&] {
    auto f = split(read_file("/proc/" + std::to_string(monitor) + "/stat").value_or(""), ' ');
    return f.size() > 15 ? std::atoll(f[13].c_str()) + std::atoll(f[14].c_str()) : -1LL;
  };
  auto relaunched = [&] {
    return read_file("/proc/" + std::to_string(monitor) + "/cmdline").value_or("").find("--loop") != std::string::npos;
  };
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  if (relaunched()) {
    GTEST_SKIP() << "the client attached after the monitor's hand-over (a slow machine): nothing to wait for";
  }
  long long before = cpu_ticks();
  std::this_thread::sleep_for(std::chrono::seconds(1));
  long long used = cpu_ticks() - before;
  ::kill(client, SIGKILL);
  ::waitpid(client, nullptr, 0);
  // A spinning loop takes the whole second (100 ticks); waiting takes almost none.
  EXPECT_GE(before, 0);
  EXPECT_LT(used, 30) << "monitor CPU ticks in 1 s";
  // With the client gone the hand-over happens, and the container is served on.
  ASSERT_TRUE(eventually(relaunched));
  EXPECT_EQ(inspect("chatty")["State"]["Status"], "running");
  EXPECT_EQ(berth({"rm", "-f", "chatty"}).code, 0);
}

TEST_F(EngineTest, EventsRecordTheLifecycle) {
  auto r = berth({"run", "--rm", "--name", "ev", "busybox", "true"});
  ASSERT_EQ(r.code, 0) << r.err;
  r = berth({"events", "--since", "1m", "--until", "0s", "--filter", "container=ev", "--format", "{{.Action}}"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "create\nstart\ndie\ndestroy\n");
}

TEST_F(EngineTest, SeccompAsDocker) {
  // The default profile refuses what Docker's does (mount, new namespaces)...
  auto r = berth({"run", "--rm", "busybox", "sh", "-c",
                  "grep Seccomp: /proc/self/status; unshare -n true && echo unshared || echo refused"});
  EXPECT_EQ(r.out, "Seccomp:\t2\nrefused\n") << r.err;
  // ...unless the capability that makes it safe is there, or it is off.
  r = berth({"run", "--rm", "--cap-add", "SYS_ADMIN", "busybox", "sh", "-c", "unshare -n true && echo unshared"});
  EXPECT_EQ(r.out, "unshared\n") << r.err;
  r = berth({"run", "--rm", "--security-opt", "seccomp=unconfined", "busybox", "grep", "Seccomp:", "/proc/self/status"});
  EXPECT_EQ(r.out, "Seccomp:\t0\n") << r.err;
  // A profile file in Docker's format.
  std::string prof = dir_ + "/profile.json";
  ASSERT_TRUE(atomic_write_file(prof, R"({"defaultAction":"SCMP_ACT_ALLOW","archMap":[{"architecture":"SCMP_ARCH_X86_64","subArchitectures":["SCMP_ARCH_X86","SCMP_ARCH_X32"]}],
    "syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":1},
                {"names":["getpid"],"action":"SCMP_ACT_ERRNO","includes":{"caps":["CAP_SYS_ADMIN"]}}]})", 0644));
  r = berth({"run", "--rm", "--security-opt", "seccomp=" + prof, "busybox", "sh", "-c", "mkdir /x || echo refused"});
  EXPECT_NE(r.out.find("refused"), std::string::npos) << r.out << r.err;
  r = berth({"run", "--rm", "--security-opt", "seccomp=" + dir_ + "/none.json", "busybox", "true"});
  EXPECT_EQ(r.code, 125);
  EXPECT_NE(r.err.find("none.json"), std::string::npos) << r.err;
  EXPECT_EQ(count_containers(), 0u);
}

TEST_F(EngineTest, CommitMakesAnImageOfTheChanges) {
  run_d({"--name", "c", "busybox", "sh", "-c", "echo made > /greeting; rm /etc/group; sleep 60"});
  ASSERT_TRUE(eventually([&] { return berth({"exec", "c", "cat", "/greeting"}).out == "made\n"; }));
  auto r = berth({"commit", "-c", "ENV MOOD=happy", "-m", "a test", "c", "snap:1"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(r.out.starts_with("sha256:")) << r.out;
  // The new image has the file, lacks the deleted one (a whiteout in the layer) and has the ENV.
  r = berth({"run", "--rm", "snap:1", "sh", "-c", "cat /greeting; test -e /etc/group && echo group || echo nogroup; echo $MOOD"});
  EXPECT_EQ(r.out, "made\nnogroup\nhappy\n") << r.err;
  r = berth({"history", "snap:1"});
  EXPECT_NE(r.out.find("a test"), std::string::npos) << r.out;
  EXPECT_EQ(berth({"rm", "-f", "c"}).code, 0);
  EXPECT_EQ(berth({"rmi", "snap:1"}).code, 0);
}

TEST_F(EngineTest, StatsAndPrune) {
  run_d({"--name", "s", "-m", "64m", "busybox", "sleep", "60"});
  auto r = berth({"stats", "--no-stream", "--format", "{{.Name}} {{.MemUsage}} {{.PIDs}}", "s"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(r.out.starts_with("s ")) << r.out;
  EXPECT_NE(r.out.find("/ 64MiB 1"), std::string::npos) << r.out;
  run_d({"--name", "done1", "busybox", "true"});
  EXPECT_EQ(berth({"wait", "done1"}).code, 0);
  // system df and info count them: one running, one stopped.
  EXPECT_NE(berth({"system", "df", "--format", "{{.Type}} {{.TotalCount}} {{.Active}}"}).out.find("Containers 2 1\n"),
            std::string::npos);
  auto info = berth({"info"}).out;
  EXPECT_NE(info.find("Containers: 2\n Running: 1\n Paused: 0\n Stopped: 1\n"), std::string::npos) << info;
  r = berth({"container", "prune", "-f"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("Deleted Containers:"), std::string::npos);
  EXPECT_EQ(berth({"ps", "-aq"}).out.size(), 13u);  // only the running one is left
}

TEST_F(EngineTest, InitReapsAndForwardsSignals) {
  auto r = berth({"run", "--rm", "--init", "busybox", "sh", "-c", "ps -o pid,comm | grep ' 1 '; exit 3"});
  EXPECT_EQ(r.code, 3) << r.err;
  EXPECT_NE(r.out.find("berth-init"), std::string::npos) << r.out;
  // sleep as PID 1 would ignore SIGTERM; under berth-init it gets it and dies at once.
  run_d({"--name", "i", "--init", "busybox", "sleep", "60"});
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(berth({"stop", "-t", "20", "i"}).code, 0);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
  EXPECT_EQ(inspect("i")["State"]["ExitCode"], 143);
  // berth-init is started with every signal blocked (as PID 1 it would drop
  // one sent before it blocks them itself): the annotation that asks the
  // runtime for it, what the runtime does for it, and berth-init's command
  // starting with none blocked.
  std::string config = root_ + "/containers/" + inspect("i")["Id"].get<std::string>() + "/config.json";
  EXPECT_NE(read_file(config).value_or("").find("\"run.oci.berth.signals_blocked\":\"true\""), std::string::npos);
  r = berth({"run", "--rm", "--annotation", "run.oci.berth.signals_blocked=true", "busybox", "grep", "SigBlk",
             "/proc/self/status"});
  EXPECT_EQ(r.out, "SigBlk:\tfffffffe7ffbfeff\n") << r.err;
  r = berth({"run", "--rm", "--init", "busybox", "grep", "SigBlk", "/proc/self/status"});
  EXPECT_EQ(r.out, "SigBlk:\t0000000000000000\n") << r.err;
  // A stop at once after the start still ends the command by its signal.
  for (int i = 0; i < 5; ++i) {
    std::string name = "now" + std::to_string(i);
    run_d({"--name", name, "--init", "busybox", "sleep", "60"});
    EXPECT_EQ(berth({"stop", "-t", "20", name}).code, 0);
    EXPECT_EQ(inspect(name)["State"]["ExitCode"], 143) << name;
  }
}

TEST_F(EngineTest, CloneCopiesTheWritableLayer) {
  auto r = berth({"run", "--name", "orig", "busybox", "sh", "-c",
                  "echo kept > /data; ln /data /data2; rm /etc/group; mkdir -p /d/e"});
  ASSERT_EQ(r.code, 0) << r.err;
  r = berth({"clone", "orig", "copy"});
  ASSERT_EQ(r.code, 0) << r.err;
  // The copy starts with the original's changes (and the same command).
  EXPECT_EQ(berth({"inspect", "-f", "{{json .Config.Cmd}}", "copy"}).out, berth({"inspect", "-f", "{{json .Config.Cmd}}", "orig"}).out);
  std::string upper = root_ + "/containers/" + inspect("copy")["Id"].get<std::string>() + "/upper";
  EXPECT_EQ(read_file(upper + "/data").value_or(""), "kept\n");
  struct stat a, b;
  ASSERT_EQ(::stat((upper + "/data").c_str(), &a), 0);
  ASSERT_EQ(::stat((upper + "/data2").c_str(), &b), 0);
  EXPECT_EQ(a.st_ino, b.st_ino);  // the hard link stays one
  ASSERT_EQ(::stat((upper + "/etc/group").c_str(), &a), 0);
  EXPECT_TRUE(S_ISCHR(a.st_mode) && a.st_rdev == 0);  // the whiteout too
  run_d({"--name", "busy", "busybox", "sleep", "60"});
  r = berth({"clone", "busy", "nope"});
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("stop it first"), std::string::npos) << r.err;
}

TEST_F(EngineTest, KilledCliLeavesATruthfulStoreThatRmCleans) {
  // `run -d` killed at random points (creating, starting, recording).
  std::mt19937 rng(42);
  for (int i = 0; i < 12; ++i) {
    pid_t pid = ::fork();
    if (pid == 0) {
      int null = ::open("/dev/null", O_RDWR);
      ::dup2(null, 0), ::dup2(null, 1), ::dup2(null, 2);
      std::vector<std::string> argv = {BERTH_CLI, "--root", root_, "--runroot", runroot_, "run", "-d", "busybox",
                                       "sleep", "60"};
      std::vector<char*> a;
      for (auto& x : argv) a.push_back(x.data());
      a.push_back(nullptr);
      ::execv(a[0], a.data());
      _exit(127);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(std::uniform_int_distribution<int>(2000, 30000)(rng)));
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
  }
  // A create killed after its rootfs was mounted, before its row: certain, not by chance.
  // (After a whole run: the image's passwd is kept, so its spec goes to the
  // monitor before the rootfs is mounted, and the monitor prepares the start.)
  ASSERT_EQ(berth({"run", "--rm", "busybox", "true"}).code, 0);
  ::setenv("BERTH_FAILPOINT", "create-after-rootfs", 1);
  auto killed = berth({"run", "-d", "busybox", "sleep", "60"});
  ::unsetenv("BERTH_FAILPOINT");
  EXPECT_EQ(killed.code, 128 + SIGKILL);
  // The monitor it had started waiting for its container goes with it.
  auto known = berth({"ps", "-aq", "--no-trunc"}).out;
  EXPECT_TRUE(eventually([&] {
    for (auto& m : monitors()) {
      auto at = m.find("--id ");
      if (at == std::string::npos || known.find(m.substr(at + 5, 64)) == std::string::npos) return false;
    }
    return true;
  })) << "a monitor of a container that does not exist is left";
  // Its monitor had prepared the start from the spec sent before the rootfs
  // (runtime::prepare_launch: a state directory, the cgroup taken over): undone.
  EXPECT_TRUE(eventually([&] {
    if (!fs::exists(runroot_ + "/runtime")) return true;
    // (The cgroup is undone before the directory: Cleanup's reverse order.)
    for (auto& e : fs::directory_iterator(runroot_ + "/runtime"))
      if (known.find(e.path().filename().string()) == std::string::npos) return false;
    return true;
  })) << "the start a killed create's monitor prepared is left (its runtime state)";
  // Killed after its row, before its directory took its name: the next
  // command finishes the rename, and the container is whole.
  ::setenv("BERTH_FAILPOINT", "create-after-row", 1);
  killed = berth({"create", "--name", "half", "busybox", "true"});
  ::unsetenv("BERTH_FAILPOINT");
  EXPECT_EQ(killed.code, 128 + SIGKILL);
  auto half = berth({"start", "-a", "half"});
  EXPECT_EQ(half.code, 0) << half.err;
  EXPECT_TRUE(fs::exists(root_ + "/containers/" + inspect("half")["Id"].get<std::string>() + "/config.json"));
  // A removal killed after the directory went to the trash, before the row:
  // rm removes the row (the trash goes a minute later; here, by hand).
  std::string gone = run_d({"busybox", "sleep", "60"});
  ::setenv("BERTH_FAILPOINT", "remove-after-rootfs", 1);
  killed = berth({"rm", "-f", gone});
  ::unsetenv("BERTH_FAILPOINT");
  EXPECT_EQ(killed.code, 128 + SIGKILL);
  EXPECT_FALSE(fs::exists(root_ + "/containers/" + gone));
  auto rm = berth({"rm", "-f", gone});
  EXPECT_EQ(rm.code, 0) << rm.err;
  EXPECT_NE(berth({"inspect", gone}).code, 0) << "the row is left";
  for (auto& e : fs::directory_iterator(root_ + "/containers"))
    if (e.path().filename().string().starts_with(".trash-" + gone)) ASSERT_TRUE(remove_trash(e.path().string()));
  // Every container ps shows running has a live init; every other is not running.
  auto r = berth({"ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.State}}"});
  ASSERT_EQ(r.code, 0) << r.err;
  for (auto& line : split(r.out, '\n')) {
    if (line.empty()) continue;
    auto f = split(line, ' ');
    json j = inspect(f[0]);
    int pid = j["State"]["Pid"].get<int>();
    if (f[1] == "running") {
      EXPECT_TRUE(pid > 0 && ::kill(pid, 0) == 0) << line;
    }
  }
  // rm -f removes them all; what a killed create left without a row goes at
  // the next command (TearDown checks that no directory, mount or state is left).
  for (auto& line : split(r.out, '\n'))
    if (!line.empty()) {
      EXPECT_EQ(berth({"rm", "-f", split(line, ' ')[0]}).code, 0);
    }
  EXPECT_EQ(berth({"ps", "-aq"}).out, "");
}

// A foreground `run --rm` leaves its monitor to make the next create's
// directory (engine/spare.h), or its own directory becomes one: complete,
// its directories empty, when it shows, then taken whole by the next
// create, which writes its own files over what they hold.
// A foreground `run --rm` tells the monitor, as it takes the cleanup over
// from it, that the container goes: the monitor unmounts its rootfs then,
// while the command records the exit, rather than after the command is
// gone (a rootfs still mounted then was in the next container's copy of the
// host's mounts, and its last unmount, with the discards of its work
// directories, fell on that container's set-up). A container that stays
// keeps its rootfs. Stopped where the command's cleanup begins:
TEST_F(EngineTest, RunRmsRootfsIsUnmountedAsItsCleanupBegins) {
  auto stopped_run = [&](const std::vector<std::string>& args) {
    ::setenv("BERTH_FAILPOINT", "cleanup-by-client:stop", 1);
    pid_t pid = start_berth(args);
    ::unsetenv("BERTH_FAILPOINT");
    return pid;
  };
  for (bool rm : {true, false}) {
    SCOPED_TRACE(rm ? "--rm" : "kept");
    std::string name = rm ? "goes" : "stays";
    std::vector<std::string> args = {"run", "--name", name, "busybox", "true"};
    if (rm) args.insert(args.begin() + 1, "--rm");
    pid_t run = stopped_run(args);
    Reap reap{run};
    int st = 0;
    ASSERT_EQ(::waitpid(run, &st, WUNTRACED), run);
    ASSERT_TRUE(WIFSTOPPED(st)) << "run did not stop at its failpoint";
    std::string id = inspect(name)["Id"].get<std::string>();
    std::string rootfs = root_ + "/containers/" + id + "/rootfs";
    ASSERT_TRUE(fs::exists(root_ + "/containers/" + id + "/upper"));
    if (rm) {
      EXPECT_TRUE(eventually([&] { return !is_mount_root(rootfs); })) << rootfs << " still mounted";
    } else {
      ::usleep(200000);
      EXPECT_TRUE(is_mount_root(rootfs)) << "the rootfs of a container that stays was unmounted";
    }
    ::kill(run, SIGCONT);
    ASSERT_TRUE(ended_within(run, &st, 20)) << "run hung after its cleanup resumed";
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    EXPECT_EQ(berth({"inspect", name}).code, rm ? 1 : 0);
  }
  // The container that stays starts again on its rootfs.
  auto again = berth({"start", "-a", "stays"});
  EXPECT_EQ(again.code, 0) << again.err;
  EXPECT_EQ(berth({"rm", "stays"}).code, 0);
}

// A foreground `run --rm` killed as its cleanup begins (after it told the
// monitor it removes the container, before it handed the files over): the
// monitor's exit command removes the container, as Docker's daemon would.
TEST_F(EngineTest, RunRmKilledInItsCleanupIsRemovedAnyway) {
  ::setenv("BERTH_FAILPOINT", "cleanup-by-client", 1);
  auto r = berth({"run", "--rm", "--name", "orphan", "busybox", "sh", "-c", "echo hi > /made"});
  ::unsetenv("BERTH_FAILPOINT");
  ASSERT_EQ(r.code, 137) << "the run was not killed at its failpoint: " << r.err;
  EXPECT_TRUE(eventually([&] { return berth({"inspect", "orphan"}).code != 0; }))
      << "the --rm container stayed: " << berth({"ps", "-a"}).out;
  EXPECT_TRUE(berth({"ps", "-aq"}).out.empty());
}

TEST_F(EngineTest, RunRmLeavesASpareDirectoryTheNextCreateTakes) {
  ASSERT_EQ(berth({"run", "--rm", "--hostname", "recycled-host", "busybox", "true"}).code, 0);
  ASSERT_TRUE(test::wait_for_trash(root_));  // the spare is made under a trash name
  // The run's own directory, recycled (a slot was free: the run's monitor
  // made one spare only), its files holding its contents: the longer
  // hostname is cut below.
  std::string spare, seen;
  for (int n = 0; n < engine::kSpareSlots; ++n) {
    std::string slot = root_ + "/containers/.spare-" + std::to_string(n);
    std::string h = read_file(slot + "/hostname").value_or("(none)");
    seen += " " + slot.substr(slot.rfind('/') + 1) + ": " + h;
    if (h == "recycled-host\n") spare = slot;
  }
  ASSERT_FALSE(spare.empty()) << "the run's directory was not recycled; spares' hostnames:" << seen;
  std::set<std::string> names;
  for (auto& e : fs::directory_iterator(spare)) {
    names.insert(e.path().filename().string());
    if (e.is_directory()) EXPECT_TRUE(fs::is_empty(e.path())) << e.path();
    else EXPECT_TRUE(e.is_regular_file()) << e.path();
  }
  EXPECT_EQ(names, (std::set<std::string>{"config.json", "hostname", "hosts", "resolv.conf", "rootfs", "upper", "work"}));
  struct stat before;
  ASSERT_EQ(::stat(spare.c_str(), &before), 0);
  std::string spare_inode = std::to_string(before.st_ino);
  // Taken by the next create (both slots are tried, so take every spare there is).
  std::string id;
  for (int n = 0; n < engine::kSpareSlots && id.empty(); ++n) {
    auto c = berth({"create", "--hostname", "spare-host", "busybox", "sh", "-c", "cat /etc/hostname; echo x > /f; cat /f"});
    ASSERT_EQ(c.code, 0) << c.err;
    std::string cid = c.out.substr(0, c.out.find('\n'));
    struct stat st;
    ASSERT_EQ(::stat((root_ + "/containers/" + cid).c_str(), &st), 0);
    if (std::to_string(st.st_ino) == spare_inode) id = cid;
    else EXPECT_EQ(berth({"rm", cid}).code, 0);
  }
  ASSERT_FALSE(id.empty()) << "the spare was not taken";
  EXPECT_FALSE(fs::exists(spare));
  EXPECT_EQ(read_file(root_ + "/containers/" + id + "/hostname").value_or(""), "spare-host\n");
  EXPECT_TRUE(json::parse(read_file(root_ + "/containers/" + id + "/config.json").value_or(""), nullptr, false).is_object());
  auto r = berth({"start", "-a", id});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "spare-host\nx\n");
  EXPECT_EQ(berth({"rm", id}).code, 0);
}

// A `run --rm`'s directory becomes the next spare only when nothing of its
// container is left in it (engine/spare.h, recycle_as_spare): a new upper/
// (the old overlay may live on through a descriptor open anywhere), the
// overlay's work/work gone, and a file the container saw that someone still
// holds open for writing replaced; a written upper/, a changed inode, or a
// container without a pid namespace of its own (its config.json's, or as
// its monitor says) is not recycled at all.
TEST_F(EngineTest, RecycledSpareKeepsNothingOfItsContainer) {
  auto made = berth({"create", "busybox", "true"});
  ASSERT_EQ(made.code, 0) << made.err;
  std::string id = made.out.substr(0, made.out.find('\n'));
  std::string config = read_file(root_ + "/containers/" + id + "/config.json").value_or("");
  ASSERT_EQ(berth({"rm", id}).code, 0);
  ASSERT_TRUE(test::wait_for_trash(root_));
  std::string containers = root_ + "/containers";
  for (int n = 0; n < engine::kSpareSlots; ++n) fs::remove_all(containers + "/.spare-" + std::to_string(n));
  mode_t old_umask = ::umask(022);
  auto trash = [&](const std::string& name, const std::string& cfg) {
    std::string d = containers + "/.trash-" + name + ".1.1";
    EXPECT_EQ(::mkdir(d.c_str(), 0700), 0);
    for (auto* sub : {"/upper", "/work", "/work/work", "/work/work/incompat", "/rootfs"})
      EXPECT_EQ(::mkdir((d + sub).c_str(), 0755), 0) << sub;
    for (auto* f : {"hostname", "hosts", "resolv.conf"})
      EXPECT_TRUE(write_new_file(d + "/" + f, "old " + std::string(f) + "\n", 0644));
    EXPECT_TRUE(write_new_file(d + "/config.json", cfg, 0600));
    return d;
  };
  auto ino = [](const std::string& p) {
    struct stat st {};
    return ::lstat(p.c_str(), &st) == 0 ? st.st_ino : 0;
  };
  auto spares = [&] {
    std::set<ino_t> s;
    for (int n = 0; n < engine::kSpareSlots; ++n)
      if (ino_t i = ino(containers + "/.spare-" + std::to_string(n))) s.insert(i);
    return s;
  };

  // As made, but for its hosts, which someone holds open for writing.
  std::string d = trash("clean", config);
  ino_t dir = ino(d), hosts = ino(d + "/hosts"), hostname = ino(d + "/hostname");
  UniqueFd writer(::open((d + "/hosts").c_str(), O_WRONLY | O_CLOEXEC));
  ASSERT_TRUE(writer);
  // (What a live old overlay writes through: its upper dir.)
  UniqueFd old_upper(::open((d + "/upper").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  ASSERT_TRUE(old_upper);
  ASSERT_TRUE(engine::recycle_as_spare(containers, d));
  EXPECT_FALSE(fs::exists(d));
  ASSERT_EQ(spares(), std::set<ino_t>{dir});
  std::string spare = containers + "/.spare-0";
  if (ino(spare) != dir) spare = containers + "/.spare-1";
  EXPECT_LT(::openat(old_upper.get(), "late", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644), 0)
      << "the container's upper dir was kept";
  EXPECT_TRUE(fs::is_empty(spare + "/upper"));
  EXPECT_TRUE(fs::is_empty(spare + "/work")) << "the overlay's work/work was kept";
  EXPECT_EQ(ino(spare + "/hostname"), hostname);  // nobody holds it: kept, written over by the next create
  EXPECT_NE(ino(spare + "/hosts"), hosts) << "a file open for writing elsewhere was kept";
  ASSERT_EQ(::write(writer.get(), "evil\n", 5), 5);
  EXPECT_EQ(read_file(spare + "/hosts").value_or("?"), "");

  // Not recycled (the caller removes them): something written in upper/, a
  // mode changed, an extended attribute, no pid namespace of its own.
  std::string written = trash("written", config);
  EXPECT_TRUE(write_new_file(written + "/upper/f", "x", 0644));
  std::string chmodded = trash("chmodded", config);
  ::chmod((chmodded + "/hosts").c_str(), 0600);
  std::string xattr = trash("xattr", config);
  ASSERT_EQ(::setxattr((xattr + "/work").c_str(), "user.x", "1", 1, 0), 0);
  json spec = json::parse(config);
  auto& nss = spec["linux"]["namespaces"];
  for (auto it = nss.begin(); it != nss.end(); ++it)
    if ((*it)["type"] == "pid") {
      nss.erase(it);
      break;
    }
  std::string hostpid = trash("hostpid", spec.dump());
  // Nor one whose monitor says it had none, whatever its config.json says.
  std::string joined = trash("joined", config);
  for (auto& t : {written, chmodded, xattr, hostpid, joined}) {
    EXPECT_FALSE(engine::recycle_as_spare(containers, t, t == joined ? std::optional<bool>(false) : std::nullopt)) << t;
    EXPECT_EQ(spares(), std::set<ino_t>{dir}) << t;
    EXPECT_TRUE(remove_trash(t)) << t;
  }
  ::umask(old_umask);
}

// The container's signals are at their defaults, as Docker's are, whatever
// the caller ignored (a shell's `trap ''`, nohup) and whatever the monitor
// catches or ignores itself (process.h's signals_not_default): glibc's own
// two included.
TEST_F(EngineTest, ContainerSignalsStartAtTheirDefaults) {
  auto [status, out] = shell("trap '' HUP INT PIPE; exec " + std::string(BERTH_CLI) + " --root " + root_ +
                              " --runroot " + runroot_ + " run --rm busybox grep -E 'SigIgn|SigCgt' /proc/self/status");
  EXPECT_EQ(status, 0);
  EXPECT_EQ(out, "SigIgn:\t0000000000000000\nSigCgt:\t0000000000000000\n");
}

// --network none (berth's default until the bridge) is Docker's: its own
// namespace with the loopback up, 127.0.0.1 answering; the namespace came
// from the spares (engine/spare.h) or was made by the early monitor.
TEST_F(EngineTest, NetworkNoneHasAWorkingLoopback) {
  for (int i = 0; i < 3; ++i) {
    auto r = berth({"run", "--rm", "--network", "none", "busybox", "sh", "-c",
                    "cat /sys/class/net/lo/flags; ping -c1 -W2 127.0.0.1 >/dev/null && echo answered"});
    EXPECT_EQ(r.out, "0x9\nanswered\n") << r.err;
  }
}

// A container's umask is Docker's (0022) whatever the caller's is, and its
// /dev nodes have their modes exactly.
TEST_F(EngineTest, ContainerUmaskIsDockersNotTheCallers) {
  auto [status, out] = shell("umask 077; exec " + std::string(BERTH_CLI) + " --root " + root_ + " --runroot " +
                              runroot_ +
                              " run --rm busybox sh -c 'umask; stat -c %a /dev/null /dev/tty /dev/pts; touch /f; stat -c %a /f'");
  EXPECT_EQ(status, 0);
  EXPECT_EQ(out, "0022\n666\n666\n755\n644\n");
}

// Neither is the container's root directory nor are its /etc/hosts,
// /etc/hostname and /etc/resolv.conf the caller's umask's: whether the
// container's directory was made by its create, by a monitor ahead of it
// (a spare), or recycled from the last `run --rm`'s (engine/spare.h), a
// user other than root can read them (under umask 077 the root directory
// was 0700, and `-u nobody` could exec nothing).
TEST_F(EngineTest, ContainerRootAndEtcFilesKeepTheirModesWhateverTheCallersUmask) {
  std::string cli = "umask 077; exec " + std::string(BERTH_CLI) + " --root " + root_ + " --runroot " + runroot_;
  for (int i = 0; i < 4; ++i) {
    auto [status, out] =
        shell(cli + " run --rm busybox stat -c %a / /etc/hosts /etc/hostname /etc/resolv.conf");
    EXPECT_EQ(status, 0);
    EXPECT_EQ(out, "755\n644\n644\n644\n") << "run " << i;
    ASSERT_TRUE(test::wait_for_trash(root_));
  }
  auto [status, out] = shell(cli + " run --rm -u nobody busybox sh -c 'ls / >/dev/null && cat /etc/hostname >/dev/null && echo ok'");
  EXPECT_EQ(status, 0);
  EXPECT_EQ(out, "ok\n");
}

// The store's log is checkpointed by a child a command leaves behind
// (image/db.h), not by the committing command and not only at the forced
// size: after many `run --rm`s (~15 pages each) it stays short.
TEST_F(EngineTest, StoreLogIsCheckpointedAsCommandsEnd) {
  for (int i = 0; i < 40; ++i) ASSERT_EQ(berth({"run", "--rm", "busybox", "true"}).code, 0);
  std::string lock = root_ + "/berth.db-checkpoint.lock";
  ASSERT_TRUE(eventually([&] {
    UniqueFd fd(::open(lock.c_str(), O_RDWR | O_CLOEXEC));
    return fd && ::flock(fd.get(), LOCK_EX | LOCK_NB) == 0;
  })) << "no checkpointer ran, or one never ended";
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open_v2((root_ + "/berth.db").c_str(), &db, SQLITE_OPEN_READWRITE, nullptr), SQLITE_OK);
  sqlite3_db_config(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
  (void)sqlite3_exec(db, "SELECT 1 FROM sqlite_master LIMIT 1", nullptr, nullptr, nullptr);
  int log = -1, done = -1;
  // (A passive checkpoint only reports: the log's frames, and how many are in the database.)
  EXPECT_EQ(sqlite3_wal_checkpoint_v2(db, "main", SQLITE_CHECKPOINT_PASSIVE, &log, &done), SQLITE_OK);
  sqlite3_close(db);
  EXPECT_GE(log, 0);
  EXPECT_LT(log, 2 * image::Db::kCheckpointPages) << "the log grew past where a checkpoint was due";
}

// The checkpointer also starts the log over (a transaction of its own once
// every frame is in the database): the command after it no longer does, with
// the two fsyncs that come with a new log's header at synchronous=NORMAL.
// Read from the log's index (-shm): its header's last frame (offset 16) and
// the frames already in the database (96), between commands, each time no
// checkpointer runs.
TEST_F(EngineTest, CheckpointerStartsTheLogOverItself) {
  std::string lock = root_ + "/berth.db-checkpoint.lock";
  auto index = [&](uint32_t* frames, uint32_t* backfilled) {
    std::string shm = read_file(root_ + "/berth.db-shm").value_or("");
    if (shm.size() < 100) return false;
    std::memcpy(frames, shm.data() + 16, 4);
    std::memcpy(backfilled, shm.data() + 96, 4);
    return true;
  };
  uint32_t last = 0;
  int restarts = 0;
  for (int i = 0; i < 60; ++i) {
    ASSERT_EQ(berth({"run", "--rm", "busybox", "true"}).code, 0);
    ASSERT_TRUE(eventually([&] {
      UniqueFd fd(::open(lock.c_str(), O_RDWR | O_CLOEXEC));
      return !fd || ::flock(fd.get(), LOCK_EX | LOCK_NB) == 0;
    }));
    uint32_t frames = 0, backfilled = 0;
    ASSERT_TRUE(index(&frames, &backfilled));
    EXPECT_FALSE(frames > 1 && backfilled == frames)
        << "a checkpointed log was left for the next command to start over (" << frames << " frames)";
    if (frames < last) {
      ++restarts;
      EXPECT_EQ(frames, 1u) << "the log was started over by a command, not by its checkpointer";
    }
    last = frames;
  }
  EXPECT_GE(restarts, 1) << "no checkpoint in 60 runs";
}

// A run's monitor makes the next run's network namespace (engine/spare.h):
// the next container is in it, and once that one runs its mount goes (a used
// namespace is kept by nothing of berth's); a run that starts nothing gives
// its spare back untouched.
TEST_F(EngineTest, RunTakesASpareNetworkNamespaceMadeByTheRunBefore) {
  std::string dir = runroot_ + "/netns";
  auto ready_inode = [&]() -> std::string {
    for (int n = 0; n < engine::kSpareSlots; ++n) {
      std::string slot = dir + "/spare-" + std::to_string(n);
      struct stat st;
      if (path_exists(slot + ".ready") && ::stat(slot.c_str(), &st) == 0) return std::to_string(st.st_ino);
    }
    return "";
  };
  ASSERT_EQ(berth({"run", "--rm", "busybox", "true"}).code, 0);
  std::string spare;
  ASSERT_TRUE(eventually([&] { return !(spare = ready_inode()).empty(); })) << "no spare network namespace made";
  // A create that fails (no such profile) leaves it there.
  EXPECT_EQ(berth({"run", "--rm", "--security-opt", "seccomp=" + dir_ + "/none.json", "busybox", "true"}).code, 125);
  EXPECT_EQ(ready_inode(), spare) << "a run that started nothing used up the spare";
  auto r = berth({"run", "--rm", "busybox", "readlink", "/proc/self/ns/net"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "net:[" + spare + "]\n") << "the container is not in the spare namespace";
  // Its mount goes at the next maker's visit (this run's monitor's, once the
  // container is over); the next one is another, fresh namespace.
  ASSERT_TRUE(eventually([&] {
    std::string mounts = read_file("/proc/self/mountinfo").value_or("");
    return mounts.find("net:[" + spare + "]") == std::string::npos && !ready_inode().empty();
  })) << "the taken namespace is still mounted, or no new spare was made";
  EXPECT_NE(ready_inode(), spare);
  // --network host takes none.
  std::string next = ready_inode();
  EXPECT_EQ(berth({"run", "--rm", "--network", "host", "busybox", "true"}).code, 0);
  EXPECT_EQ(ready_inode(), next);
}

// The monitor that makes spares marks containers/ a "top directory" (ext4's
// chattr +T, engine/spare.cc): each container's directory, and the inodes
// its overlay mount makes, go to a block group of few directories instead
// of piling into containers/'s, where a journal-less ext4 steps over every
// inode freed in the last minute for each new one.
TEST_F(EngineTest, ContainerDirectoriesAreSpreadOverTheFilesystem) {
  // <linux/fs.h>'s, which does not mix with <sys/mount.h>.
  constexpr unsigned long kGetFlags = _IOR('f', 1, long);
  constexpr int kTopDir = 0x00020000;
  std::string containers = root_ + "/containers";
  ASSERT_EQ(berth({"run", "--rm", "busybox", "true"}).code, 0);
  ASSERT_TRUE(test::wait_for_trash(root_));
  UniqueFd dir(::open(containers.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  ASSERT_TRUE(dir);
  struct statfs sfs {};
  ASSERT_EQ(::fstatfs(dir.get(), &sfs), 0);
  int flags = 0;
  if (sfs.f_type != 0xEF53 || ::ioctl(dir.get(), kGetFlags, &flags) != 0)
    GTEST_SKIP() << "the store is not on ext2/3/4 (the flag is theirs)";
  EXPECT_TRUE(flags & kTopDir) << "containers/ is not marked for Orlov's spreading";
  // Spares are made in a marked directory of their own, so that such a
  // mkdir (slow: Orlov searches every group) holds no lock a create needs.
  UniqueFd nursery(::open((containers + "/" + engine::kSpareNursery).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  ASSERT_TRUE(nursery);
  flags = 0;
  ASSERT_EQ(::ioctl(nursery.get(), kGetFlags, &flags), 0);
  EXPECT_TRUE(flags & kTopDir) << "the spare nursery is not marked for Orlov's spreading";
  bool spare = false;
  for (int n = 0; n < engine::kSpareSlots; ++n) spare = spare || fs::exists(containers + "/.spare-" + std::to_string(n));
  EXPECT_TRUE(spare) << "no spare made";
}

// A running container's monitor keeps the store's WAL index (the -shm) valid
// (engine/store_index.h): a command then maps it as it is. With no monitor,
// a command is SQLite's first connection, which truncates and rebuilds it.
TEST_F(EngineTest, AMonitorKeepsTheStoresWalIndexForTheNextCommand) {
  std::string shm = root_ + "/berth.db-shm";
  // Whether a command truncated the -shm: bytes put past what SQLite uses
  // (it maps 32 KiB at a time, a chunk a 4,000 frames of log) are gone.
  auto ps_truncates_index = [&] {
    const std::string canary = "berth-test-canary";
    UniqueFd fd(::open(shm.c_str(), O_RDWR | O_CLOEXEC));
    EXPECT_TRUE(fd);
    EXPECT_EQ(::pwrite(fd.get(), canary.data(), canary.size(), 1 << 20), static_cast<ssize_t>(canary.size()));
    auto r = berth({"ps", "-q"});
    EXPECT_EQ(r.code, 0) << r.err;
    std::string back(canary.size(), '\0');
    return ::pread(fd.get(), back.data(), back.size(), 1 << 20) != static_cast<ssize_t>(canary.size()) || back != canary;
  };
  std::string id = run_d({"busybox", "sleep", "60"});
  ASSERT_EQ(monitors().size(), 1u);
  EXPECT_FALSE(ps_truncates_index()) << "the index was reset with a monitor holding it";
  EXPECT_FALSE(ps_truncates_index());
  ASSERT_EQ(berth({"rm", "-f", id}).code, 0);
  for (int i = 0; i < 200 && !monitors().empty(); ++i) ::usleep(10000);
  ASSERT_TRUE(monitors().empty());
  ASSERT_TRUE(test::wait_for_trash(root_));
  EXPECT_TRUE(ps_truncates_index()) << "no holder left, yet the index was not reset";
}

TEST_F(EngineTest, ParallelRunsLeaveAConsistentStore) {
  // 50 `run --rm`, 8 at a time.
  std::vector<std::thread> threads;
  std::atomic<int> next{0}, failures{0};
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&] {
      for (int i; (i = next++) < 50;) {
        auto r = berth({"run", "--rm", "busybox", "sh", "-c", "echo " + std::to_string(i)});
        if (r.code != 0 || r.out != std::to_string(i) + "\n") {
          ++failures;
          ADD_FAILURE() << "run " << i << ": status " << r.code << ", out \"" << r.out << "\", err " << r.err;
        }
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(count_containers(), 0u);
}

// A removed container's files are renamed away at once and removed by a child
// as berth exits; what a crash left (a minute old) the next command removes.
TEST_F(EngineTest, RemovedFilesGoAtOnceAndCrashLeftoversLater) {
  std::string id = run_d({"busybox", "sleep", "60"});
  std::string dir = root_ + "/containers/" + id;
  ASSERT_TRUE(fs::exists(dir));
  ASSERT_EQ(berth({"rm", "-f", id}).code, 0);
  EXPECT_FALSE(fs::exists(dir)) << "the directory is still in place after rm";
  EXPECT_TRUE(test::wait_for_trash(root_));
  std::string old = root_ + "/containers/.trash-" + id + ".1000.1";
  std::string fresh = root_ + "/containers/.trash-" + id + "." + std::to_string(::time(nullptr)) + ".1";
  ASSERT_TRUE(mkdir_p(old + "/upper/etc"));
  // A rootfs goes to the trash mounted (its remover unmounts it): a crash
  // leaves it so.
  ASSERT_TRUE(mkdir_p(old + "/rootfs"));
  ASSERT_EQ(::mount("tmpfs", (old + "/rootfs").c_str(), "tmpfs", 0, "size=1m"), 0);
  ASSERT_TRUE(write_new_file(old + "/rootfs/file", "x"));
  ASSERT_TRUE(mkdir_p(fresh + "/upper"));
  EXPECT_EQ(berth({"ps", "-a"}).code, 0);
  EXPECT_FALSE(fs::exists(old)) << "a crash's leftover stays";
  EXPECT_EQ(read_file("/proc/self/mountinfo").value_or("").find(old), std::string::npos) << "its mount stays";
  EXPECT_TRUE(fs::exists(fresh)) << "a remover at work was raced";
  ASSERT_TRUE(remove_tree(fresh));
  // A spare whose maker died as it made it, in the nursery (engine/spare.h).
  std::string nursery = root_ + "/containers/" + engine::kSpareNursery;
  std::string old_spare = nursery + "/.trash-spare.1000.1";
  std::string new_spare = nursery + "/.trash-spare." + std::to_string(::time(nullptr)) + ".1";
  ASSERT_TRUE(mkdir_p(old_spare + "/upper"));
  ASSERT_TRUE(mkdir_p(new_spare + "/upper"));
  EXPECT_EQ(berth({"ps", "-a"}).code, 0);
  EXPECT_FALSE(fs::exists(old_spare)) << "a dead maker's spare stays";
  EXPECT_TRUE(fs::exists(new_spare)) << "a maker at work was raced";
  ASSERT_TRUE(remove_tree(new_spare));
}

// Runtime state without a row is a crash's leftover only once its container's
// trash is a minute old: before that its remover (a `run --rm`'s monitor
// child) is at work, and the next command neither races it nor waits for it.
TEST_F(EngineTest, RuntimeStateBeingRemovedIsLeftToItsRemover) {
  // A stopped container's state without a row, made from a running one's.
  std::string running = run_d({"busybox", "sleep", "60"});
  json st = json::parse(read_file(runroot_ + "/runtime/" + running + "/state.json").value_or(""), nullptr, false);
  ASSERT_TRUE(st.is_object());
  std::string id = std::string(64, 'e');
  for (auto key : {"id", "bundle", "rootfs", "cgroup_path"}) {
    std::string v = st.value(key, "");
    if (auto at = v.find(running); at != std::string::npos) v.replace(at, running.size(), id);
    st[key] = v;
  }
  st["pid_start"] = 1;  // not its process: stopped
  std::string state = runroot_ + "/runtime/" + id;
  ASSERT_TRUE(mkdir_p(state));
  ASSERT_TRUE(write_new_file(state + "/state.json", st.dump()));
  // Its files in the trash a moment ago, as a removal leaves them.
  std::string fresh = root_ + "/containers/.trash-" + id + "." + std::to_string(::time(nullptr)) + ".1";
  ASSERT_TRUE(mkdir_p(fresh + "/upper"));
  EXPECT_EQ(berth({"ps", "-a"}).code, 0);
  EXPECT_TRUE(fs::exists(state + "/state.json")) << "the state of a container being removed was taken";
  // A minute on, its remover is taken for dead: the next command removes both.
  std::string old = root_ + "/containers/.trash-" + id + ".1000.1";
  ASSERT_EQ(::rename(fresh.c_str(), old.c_str()), 0);
  EXPECT_EQ(berth({"ps", "-a"}).code, 0);
  EXPECT_FALSE(fs::exists(state)) << "a crash's leftover state stays";
  EXPECT_FALSE(fs::exists(old));
  EXPECT_TRUE(fs::exists(runroot_ + "/runtime/" + running + "/state.json"));
}

TEST_F(EngineTest, RunRmCyclesLeakNothing) {
  // The issue's leak test: many run --rm cycles; TearDown checks mounts,
  // container dirs, runtime state and cgroups; here the rows and processes.
  int cycles = 1000;
  if (const char* n = std::getenv("BERTH_LEAK_CYCLES")) cycles = std::atoi(n);
  for (int i = 0; i < cycles; ++i) {
    auto r = berth({"run", "--rm", "busybox", "true"});
    ASSERT_EQ(r.code, 0) << "cycle " << i << ": " << r.err;
  }
  EXPECT_EQ(count_containers(), 0u);
  // No monitor of ours lives on (the last removers have finished first), and
  // no cgroup of ours is left (the monitors remove them as they exit).
  EXPECT_TRUE(test::wait_for_trash(root_));
  EXPECT_EQ(cgroups_of_made_containers(), std::vector<std::string>{});
  // A monitor may be a moment from its exit (it removed the trash last).
  std::string left;
  for (int i = 0; i < 200; ++i) {
    left.clear();
    std::error_code ec;
    for (auto& e : fs::directory_iterator("/proc", ec)) {
      auto cmd = read_file(e.path().string() + "/cmdline").value_or("");
      if (cmd.find(root_) != std::string::npos) left += e.path().string() + " ";
    }
    if (left.empty()) break;
    ::usleep(10000);
  }
  EXPECT_EQ(left, "") << "processes left";
}

}  // namespace
}  // namespace berth

namespace berth {
namespace {

// --cgroup-manager systemd is driven against a real systemd in tests/vm; here,
// where none runs, the engine refuses it before making anything.
TEST_F(EngineTest, CgroupManagerSystemdNeedsSystemd) {
  if (path_exists("/run/systemd/system")) GTEST_SKIP() << "systemd runs here: tests/vm covers the other side";
  auto r = berth({"--cgroup-manager", "systemd", "run", "--rm", "busybox", "true"});
  EXPECT_EQ(r.code, 125) << r.err;
  EXPECT_NE(r.err.find("--cgroup-manager systemd: systemd is not running"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_EQ(berth({"ps", "-aq"}).out, "");
  r = berth({"--cgroup-manager", "nope", "ps"});
  EXPECT_EQ(r.code, 125) << r.err;
  EXPECT_NE(r.err.find("--cgroup-manager"), std::string::npos) << r.err;
  EXPECT_NE(berth({"info"}).out.find("Cgroup Driver: cgroupfs\n"), std::string::npos);
  EXPECT_EQ(berth({"--cgroup-manager", "systemd", "info", "--format", "{{.CgroupDriver}}"}).out, "systemd\n");
}

}  // namespace
}  // namespace berth

namespace berth {
namespace {

// Docker's rules for removing an image containers stand on: refused without
// --force; with it, refused while one runs, else untagged and kept (dangling)
// for the stopped container, which still starts.
TEST_F(EngineTest, RmiOfAnImageContainersUse) {
  ASSERT_EQ(berth({"tag", "busybox", "mine:1"}).code, 0);
  ASSERT_EQ(berth({"rmi", "busybox"}).out, "Untagged: busybox:latest\n");  // mine:1 is its only name now
  run_d({"--name", "u", "mine:1", "sleep", "60"});
  auto r = berth({"rmi", "-f", "mine:1"});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("(cannot be forced) - image is being used by running container"), std::string::npos) << r.err;
  r = berth({"rmi", "mine:1"});
  EXPECT_NE(r.code, 0);
  EXPECT_NE(berth({"images", "--format", "{{.Repository}}:{{.Tag}}"}).out.find("mine:1\n"), std::string::npos);
  ASSERT_EQ(berth({"stop", "-t", "1", "u"}).code, 0);
  r = berth({"rmi", "-f", "mine:1"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("Untagged: mine:1"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("Deleted:"), std::string::npos) << r.out;
  // Its layers are still there: the container starts again.
  EXPECT_EQ(berth({"start", "u"}).code, 0);
  EXPECT_EQ(berth({"inspect", "-f", "{{.State.Running}}", "u"}).out, "true\n");
  EXPECT_EQ(berth({"rm", "-f", "u"}).code, 0);
  // Nothing holds it now: prune takes the dangling image.
  r = berth({"image", "prune", "-f"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("deleted: sha256:"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace berth
