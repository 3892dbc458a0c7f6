// The rest of `run`'s flags, each checked from inside the container, and the
// verbs' less common options (exec -d/-t/-w, logs -f/--since/--until, kill -s,
// restart, top, ps filters and formats).
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "berth_run.h"
#include "runtime/container.h"

namespace berth {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

class FlagsTest : public test::BerthFixture {
 protected:
  FlagsTest() : BerthFixture("flags") {}
  // `run --rm busybox sh -c SCRIPT` with `flags` before the image: its stdout.
  std::string inside(std::vector<std::string> flags, const std::string& script) {
    std::vector<std::string> args = {"run", "--rm"};
    args.insert(args.end(), flags.begin(), flags.end());
    args.insert(args.end(), {"busybox", "sh", "-c", script});
    auto r = berth(args);
    EXPECT_EQ(r.code, 0) << r.err;
    return r.out;
  }
};

TEST_F(FlagsTest, ResourcesReachTheCgroup) {
  EXPECT_EQ(inside({"--cpu-shares", "512", "--cpuset-cpus", "0", "--memory-reservation", "32m", "-m", "128m",
                    "--memory-swap", "256m"},
                   "cd /sys/fs/cgroup; cat cpu/cpu.shares cpuset/cpuset.cpus memory/memory.soft_limit_in_bytes "
                   "memory/memory.limit_in_bytes memory/memory.memsw.limit_in_bytes"),
            "512\n0\n33554432\n134217728\n268435456\n");
  EXPECT_EQ(inside({"--blkio-weight", "300"}, "cat /sys/fs/cgroup/blkio/blkio.bfq.weight 2>/dev/null || "
                                               "cat /sys/fs/cgroup/blkio/blkio.weight"),
            "300\n");
  auto r = berth({"run", "--rm", "--cpuset-cpus", "63", "busybox", "true"});
  EXPECT_EQ(r.code, 125);
  EXPECT_NE(r.err.find("63"), std::string::npos) << r.err;
}

TEST_F(FlagsTest, ProcessSettings) {
  EXPECT_EQ(inside({"--ulimit", "nofile=512:1024"}, "ulimit -n; ulimit -Hn"), "512\n1024\n");
  EXPECT_EQ(inside({"--sysctl", "net.ipv4.ip_forward=1"}, "cat /proc/sys/net/ipv4/ip_forward"), "1\n");
  EXPECT_EQ(inside({"--shm-size", "8m"}, "df -k /dev/shm | tail -1 | awk '{print $2}'"), "8192\n");
  EXPECT_EQ(inside({"--tmpfs", "/scratch:size=1m"}, "df -k /scratch | tail -1 | awk '{print $2}'"), "1024\n");
  EXPECT_EQ(inside({"--entrypoint", "echo"}, "ignored"), "sh -c ignored\n");
  EXPECT_EQ(inside({"--group-add", "10"}, "id -G"), "0 10\n");
  EXPECT_EQ(inside({"--device", "/dev/null:/dev/mynull"}, "echo x > /dev/mynull && echo ok"), "ok\n");
  // --privileged: every capability berth holds itself (its bounding set), no seccomp.
  std::string bounding;
  for (auto& line : split(read_file("/proc/self/status").value_or(""), '\n'))
    if (line.starts_with("CapBnd:")) bounding = line.substr(line.find('\t') + 1);
  ASSERT_FALSE(bounding.empty());
  EXPECT_EQ(inside({"--privileged"}, "grep CapEff /proc/self/status | cut -f2; grep Seccomp: /proc/self/status"),
            bounding + "\nSeccomp:\t0\n");
  EXPECT_NE(inside({}, "grep CapEff /proc/self/status | cut -f2"), bounding + "\n");
  std::string env = dir_ + "/env";
  ASSERT_TRUE(atomic_write_file(env, "# comment\nA=1\nB=two words\n", 0644));
  EXPECT_EQ(inside({"--env-file", env, "-e", "A=3"}, "echo $A $B"), "3 two words\n");
  EXPECT_EQ(inside({"--security-opt", "no-new-privileges"}, "grep NoNewPrivs /proc/self/status | cut -f2"), "1\n");
  auto r = berth({"run", "--rm", "--ulimit", "nofile=10:5", "busybox", "true"});
  EXPECT_EQ(r.code, 125);
  r = berth({"run", "--rm", "--device", "/dev/nonexistent", "busybox", "true"});
  EXPECT_EQ(r.code, 125);
  EXPECT_NE(r.err.find("/dev/nonexistent"), std::string::npos) << r.err;
}

TEST_F(FlagsTest, LogRotation) {
  ASSERT_EQ(berth({"run", "--name", "chatty", "--log-opt", "max-size=2k", "--log-opt", "max-file=2", "busybox", "sh",
                   "-c", "i=0; while [ $i -lt 200 ]; do echo line $i; i=$((i+1)); done"}).code, 0);
  std::string id = berth({"inspect", "-f", "{{.Id}}", "chatty"}).out;
  id.pop_back();
  std::string log = root_ + "/containers/" + id + "/" + id + "-json.log";
  struct stat st;
  ASSERT_EQ(::stat(log.c_str(), &st), 0);
  EXPECT_LE(st.st_size, 2000);
  EXPECT_EQ(::stat((log + ".1").c_str(), &st), 0);
  EXPECT_NE(::stat((log + ".2").c_str(), &st), 0);  // max-file=2: the current one and .1
  // What is kept ends with the last line.
  auto out = berth({"logs", "--tail", "1", "chatty"}).out;
  EXPECT_EQ(out, "line 199\n");
  auto r = berth({"run", "--rm", "--log-opt", "max-size=lots", "busybox", "true"});
  EXPECT_EQ(r.code, 125);
  EXPECT_NE(r.err.find("max-size"), std::string::npos) << r.err;
  r = berth({"run", "--rm", "--log-opt", "colour=blue", "busybox", "true"});
  EXPECT_EQ(r.code, 125);
}

TEST_F(FlagsTest, NamespacesHostAndShared) {
  std::string host_net = fs::read_symlink("/proc/self/ns/net").string();
  EXPECT_EQ(inside({"--network", "host"}, "readlink /proc/self/ns/net"), host_net + "\n");
  EXPECT_NE(inside({}, "readlink /proc/self/ns/net"), host_net + "\n");
  EXPECT_EQ(inside({"--network", "none"}, "ls /sys/class/net"), "lo\n");
  auto r = berth({"run", "-d", "--name", "base", "busybox", "sleep", "60"});
  ASSERT_EQ(r.code, 0) << r.err;
  std::string base_pid = berth({"inspect", "-f", "{{.State.Pid}}", "base"}).out;
  base_pid.pop_back();
  std::string base_net = fs::read_symlink("/proc/" + base_pid + "/ns/net").string();
  std::string base_uts = fs::read_symlink("/proc/" + base_pid + "/ns/uts").string();
  EXPECT_EQ(inside({"--network", "container:base", "--uts", "container:base", "--ipc", "container:base", "--pid",
                    "container:base"},
                   "readlink /proc/self/ns/net; readlink /proc/self/ns/uts; ps -o comm | grep -c sleep"),
            base_net + "\n" + base_uts + "\n1\n");
  EXPECT_EQ(inside({"--pid", "host"}, "test -d /proc/1 && cat /proc/1/comm | grep -vc sh"), "1\n");
  r = berth({"run", "--rm", "--network", "container:nosuch", "busybox", "true"});
  EXPECT_EQ(r.code, 125);
  r = berth({"run", "--rm", "-p", "8080:80", "busybox", "true"});
  EXPECT_EQ(r.code, 125);
  EXPECT_NE(r.err.find("bridge network"), std::string::npos) << r.err;
}

// The network namespace of a container started by `run` is made by its
// monitor while the CLI creates the container (runtime's netns_fd): each
// container still has one of its own, and the monitor stays in the host's.
// A status line of /proc/PID/status ("self" for ours), its value.
static std::string proc_status(const std::string& pid, const std::string& key) {
  std::ifstream status("/proc/" + pid + "/status");
  std::string line;
  while (std::getline(status, line))
    if (line.starts_with(key + ":")) return line.substr(line.find_first_not_of(" \t", key.size() + 1));
  return "";
}

TEST_F(FlagsTest, EachContainerHasItsOwnNetworkNamespace) {
  std::string host_net = fs::read_symlink("/proc/self/ns/net").string();
  // The early monitor is started on a CPU other than the CLI's and then
  // given the CLI's CPUs back: it and its container may run on all of ours.
  std::string cpus = proc_status("self", "Cpus_allowed_list");
  ASSERT_FALSE(cpus.empty());
  std::vector<std::string> nets;
  for (const char* name : {"neta", "netb"}) {
    auto r = berth({"run", "-d", "--name", name, "busybox", "sleep", "60"});
    ASSERT_EQ(r.code, 0) << r.err;
    std::string pid = berth({"inspect", "-f", "{{.State.Pid}}", name}).out;
    pid.pop_back();
    nets.push_back(fs::read_symlink("/proc/" + pid + "/ns/net").string());
    // Docker's LogPath is there from the start, also for one that prints nothing.
    std::string log = berth({"inspect", "-f", "{{.LogPath}}", name}).out;
    log.pop_back();
    EXPECT_TRUE(fs::exists(log)) << log;
    EXPECT_NE(nets.back(), host_net);
    // Its parent is its monitor, back in the host's namespace.
    std::string ppid = proc_status(pid, "PPid");
    ASSERT_FALSE(ppid.empty());
    EXPECT_EQ(proc_status(ppid, "Cpus_allowed_list"), cpus);
    EXPECT_EQ(proc_status(pid, "Cpus_allowed_list"), cpus);
    std::ifstream comm("/proc/" + ppid + "/comm");
    std::string c;
    std::getline(comm, c);
    EXPECT_EQ(c, "berth-monitor");
    EXPECT_EQ(fs::read_symlink("/proc/" + ppid + "/ns/net").string(), host_net);
  }
  EXPECT_NE(nets[0], nets[1]);
  // What the container sees under /sys is its own namespace's: lo alone.
  auto r = berth({"exec", "neta", "ls", "/sys/class/net"});
  EXPECT_EQ(r.out, "lo\n") << r.err;
  // A foreground run's container too.
  r = berth({"run", "--rm", "busybox", "grep", "Cpus_allowed_list", "/proc/self/status"});
  EXPECT_EQ(r.out, "Cpus_allowed_list:\t" + cpus + "\n") << r.err;
}

// runtime::launch (the monitor's start) with keep_mount_ns hands its caller
// the container's mount namespace, which outlives the container's process
// with its mounts: the monitor tears it down after the exit frame, not the
// container's last exit on the way to it.
TEST_F(FlagsTest, LaunchHandsTheContainersMountNamespaceToItsCaller) {
  // A direct start, the only one that sends it, needs a single-threaded
  // caller: a test before this one in the same process may have run threads.
  if (!__libc_single_threaded) GTEST_SKIP() << "this process has had threads: no direct start here";
  auto made = berth({"create", "busybox", "sleep", "60"});
  ASSERT_EQ(made.code, 0) << made.err;
  std::string id = made.out.substr(0, made.out.find('\n'));
  runtime::Globals g;
  g.root = runroot_ + "/runtime";
  runtime::CreateOptions o;
  o.id = id;
  o.bundle = root_ + "/containers/" + id;
  o.config_in_bundle = true;
  o.keep_mount_ns = true;
  // The container's stdio are the caller's 0-2: /dev/null for the launch.
  int saved[3];
  int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  for (int fd = 0; fd < 3; ++fd) saved[fd] = ::fcntl(fd, F_DUPFD_CLOEXEC, 10), ::dup2(null, fd);
  auto l = runtime::launch(g, o);
  for (int fd = 0; fd < 3; ++fd) ::dup2(saved[fd], fd), ::close(saved[fd]);
  ::close(null);
  struct Remove {
    runtime::Globals g;
    std::string id;
    // launch made us a subreaper, as it does the monitor: not for the tests after.
    ~Remove() { (void)runtime::remove(g, id, true), ::prctl(PR_SET_CHILD_SUBREAPER, 0); }
  } remove{g, id};
  ASSERT_TRUE(l) << l.error().str();
  ASSERT_TRUE(l->mount_ns) << "no mount namespace handed over";
  struct stat held, theirs, ours;
  ASSERT_EQ(::fstat(l->mount_ns.get(), &held), 0);
  ASSERT_EQ(::stat(("/proc/" + std::to_string(l->pid) + "/ns/mnt").c_str(), &theirs), 0);
  ASSERT_EQ(::stat("/proc/self/ns/mnt", &ours), 0);
  EXPECT_EQ(held.st_ino, theirs.st_ino);
  EXPECT_NE(held.st_ino, ours.st_ino);
  // Its process gone (killed, reaped), the namespace is still there with the
  // container's mounts: its /etc/hostname is the container's.
  ASSERT_EQ(::kill(l->pid, SIGKILL), 0);
  ASSERT_EQ(::waitpid(l->pid, nullptr, 0), l->pid);
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(p[0]);
    if (::setns(l->mount_ns.get(), CLONE_NEWNS) != 0) _exit(2);
    int fd = ::open("/etc/hostname", O_RDONLY);
    char buf[128];
    ssize_t n = fd < 0 ? -1 : ::read(fd, buf, sizeof buf);
    if (n > 0) (void)!::write(p[1], buf, static_cast<size_t>(n));
    _exit(n > 0 ? 0 : 3);
  }
  ::close(p[1]);
  char buf[128];
  ssize_t n = ::read(p[0], buf, sizeof buf);
  ::close(p[0]);
  int ws = 0;
  ASSERT_EQ(::waitpid(child, &ws, 0), child);
  EXPECT_TRUE(WIFEXITED(ws) && WEXITSTATUS(ws) == 0) << ws;
  EXPECT_EQ(std::string(buf, n > 0 ? static_cast<size_t>(n) : 0), id.substr(0, 12) + "\n");
}

// The early monitor puts a default container's device rules on its cgroup
// before the start, which then leaves them: they hold all the same. --device
// and --privileged have other rules, applied by the start.
TEST_F(FlagsTest, DeviceRulesHoldWhetherMadeEarlyOrAtTheStart) {
  const std::string probe =
      "mknod /tmp/null c 1 3 && echo null-made; mknod /tmp/sda b 8 0 2>/dev/null && echo sda-made || echo sda-refused;"
      "mknod /tmp/lc c 10 237 2>/dev/null && echo lc-made || echo lc-refused";
  auto r = berth({"run", "--rm", "busybox", "sh", "-c", probe});
  EXPECT_EQ(r.out, "null-made\nsda-refused\nlc-refused\n") << r.err;
  r = berth({"run", "--rm", "--device", "/dev/loop-control", "busybox", "sh", "-c", probe});
  EXPECT_EQ(r.out, "null-made\nsda-refused\nlc-made\n") << r.err;
  r = berth({"run", "--rm", "--privileged", "busybox", "sh", "-c", probe});
  EXPECT_EQ(r.out, "null-made\nsda-made\nlc-made\n") << r.err;
  // On a v1 host the rules can be read back: the defaults alone.
  std::string id = berth({"run", "-d", "busybox", "sleep", "60"}).out;
  id.pop_back();
  if (auto list = read_file("/sys/fs/cgroup/devices/berth-" + id + "/devices.list"))
    EXPECT_EQ(*list,
              "c 1:3 rwm\nc 1:5 rwm\nc 1:7 rwm\nc 1:8 rwm\nc 1:9 rwm\nc 5:0 rwm\nc 5:1 rwm\nc 5:2 rwm\nc 136:* rwm\n");
  EXPECT_EQ(berth({"rm", "-f", id}).code, 0);
}

TEST_F(FlagsTest, LabelsAnnotationsAndFilters) {
  ASSERT_EQ(berth({"run", "-d", "--name", "l1", "-l", "tier=web", "--annotation", "org.example/a=b", "busybox", "sleep",
                   "60"}).code, 0);
  ASSERT_EQ(berth({"run", "--name", "l2", "-l", "tier=db", "busybox", "true"}).code, 0);
  EXPECT_EQ(berth({"ps", "-a", "--filter", "label=tier=web", "--format", "{{.Names}}"}).out, "l1\n");
  EXPECT_EQ(berth({"ps", "-a", "--filter", "status=exited", "--format", "{{.Names}}"}).out, "l2\n");
  EXPECT_EQ(berth({"ps", "-a", "--filter", "name=l", "--format", "{{.Names}}"}).out, "l2\nl1\n");
  EXPECT_EQ(berth({"ps", "-n", "1", "--format", "{{.Names}}"}).out, "l2\n");
  EXPECT_EQ(berth({"inspect", "-f", "{{.Config.Labels.tier}}", "l1"}).out, "web\n");
  std::string id = berth({"inspect", "-f", "{{.Id}}", "l1"}).out;
  id.pop_back();
  auto cfg = read_file(root_ + "/containers/" + id + "/config.json");
  ASSERT_TRUE(cfg);
  EXPECT_EQ(json::parse(*cfg)["annotations"]["org.example/a"], "b");
  auto r = berth({"ps", "--filter", "colour=blue"});
  EXPECT_EQ(r.code, 125);
  // -s: the writable layer and the image under it.
  ASSERT_EQ(berth({"exec", "l1", "sh", "-c", "head -c 5000 /dev/zero > /blob"}).code, 0);
  r = berth({"ps", "-s", "--filter", "name=l1", "--format", "{{.Size}}"});
  EXPECT_TRUE(r.out.starts_with("5kB (virtual ")) << r.out;
  EXPECT_NE(berth({"ps", "-s"}).out.find("SIZE"), std::string::npos);
}

TEST_F(FlagsTest, VerbOptions) {
  ASSERT_EQ(berth({"run", "-d", "--name", "v", "busybox", "sh", "-c",
                   "trap 'echo hup' HUP; while :; do echo tick; sleep 0.2; done"}).code, 0);
  // exec -d runs in the background; -w sets its cwd.
  EXPECT_EQ(berth({"exec", "-d", "v", "sh", "-c", "echo bg > /tmp/bg"}).code, 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(berth({"exec", "-w", "/tmp", "v", "cat", "bg"}).out, "bg\n");
  // kill -s HUP reaches the trap.
  EXPECT_EQ(berth({"kill", "-s", "HUP", "v"}).code, 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_NE(berth({"logs", "v"}).out.find("hup"), std::string::npos);
  // logs --since in the future is empty; --until in the past is empty; -t prefixes a time.
  EXPECT_EQ(berth({"logs", "--since", "2099-01-01T00:00:00Z", "v"}).out, "");
  EXPECT_EQ(berth({"logs", "--until", "2000-01-01T00:00:00Z", "v"}).out, "");
  EXPECT_TRUE(berth({"logs", "-t", "--tail", "1", "v"}).out.starts_with("20"));
  EXPECT_EQ(berth({"logs", "--since", "yesterday-ish", "v"}).code, 125);
  // top lists the processes.
  EXPECT_NE(berth({"top", "v"}).out.find("sh -c"), std::string::npos);
  // restart: a new init.
  std::string pid1 = berth({"inspect", "-f", "{{.State.Pid}}", "v"}).out;
  EXPECT_EQ(berth({"restart", "-t", "1", "v"}).code, 0);
  std::string pid2 = berth({"inspect", "-f", "{{.State.Pid}}", "v"}).out;
  EXPECT_NE(pid1, pid2);
  EXPECT_EQ(berth({"inspect", "-f", "{{.State.Status}}", "v"}).out, "running\n");
  // logs -f ends when the container does.
  ASSERT_EQ(berth({"run", "-d", "--name", "f", "busybox", "sh", "-c", "echo one; sleep 0.5; echo two"}).code, 0);
  EXPECT_EQ(berth({"logs", "-f", "f"}).out, "one\ntwo\n");
  // Wrong states.
  EXPECT_NE(berth({"unpause", "v"}).code, 0);
  EXPECT_NE(berth({"exec", "f", "true"}).code, 0);
  EXPECT_NE(berth({"kill", "f"}).code, 0);
}

}  // namespace
}  // namespace berth
