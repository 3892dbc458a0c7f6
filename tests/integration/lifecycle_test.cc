// Lifecycle: run, the containerd-shim create/start/state/kill/delete sequence
// (with and without a terminal), exec, state/list/ps, pause/resume, kill, delete.
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <sstream>

#include "harness.h"

namespace berth::it {
namespace {

const std::string kHelper = "/bin/berth-test-helper";

class Lifecycle : public BerthTest {};

// ------------------------------------------------------------------ run --

TEST_F(Lifecycle, RunPrintsGreetingAndPropagatesExitCode) {
  auto& b = make_bundle("greet", {"/bin/echo", "Hello from a berth container"});
  auto r = run_fg(b);
  ASSERT_OK(r);
  EXPECT_EQ(r.out, "Hello from a berth container\n") << r.desc();
  // Foreground run deletes the container afterwards.
  EXPECT_TRUE(root_entries().empty()) << r.desc();
  EXPECT_FALSE(exists(root_ + "/greet"));
  EXPECT_TRUE(cgroup_dirs(b.cgroup_path).empty());

  auto& b7 = make_bundle("seven", {kHelper, "exit", "7"});
  auto r7 = run_fg(b7);
  EXPECT_EQ(r7.code, 7) << r7.desc();
  EXPECT_FALSE(exists(root_ + "/seven"));
}

TEST_F(Lifecycle, RunKilledBySignalReports128PlusN) {
  auto& b = make_bundle("sig", {kHelper, "pause"});
  Proc p = rt_spawn({"run", "--bundle", b.dir, b.id});
  procs_.push_back(p);
  ASSERT_TRUE(wait_status("sig", "running", 10)) << read_file(p.err_path);
  auto k = rt({"kill", "sig", "KILL"});
  ASSERT_OK(k);
  auto r = procs_.back().wait(15);
  EXPECT_FALSE(r.timed_out) << r.desc();
  EXPECT_EQ(r.code, 128 + 9) << r.desc();
  EXPECT_FALSE(exists(root_ + "/sig"));

  // Without a pid namespace the shell is no init and can kill itself.
  auto& b2 = make_bundle("selfkill", {"/bin/sh", "-c", "kill -TERM $$; sleep 5"}, false);
  b2.remove_namespace("pid");
  b2.save();
  auto r2 = run_fg(b2);
  EXPECT_EQ(r2.code, 128 + 15) << r2.desc();
}

// ------------------------------------------------------ shim sequence --

// Reads from fd into acc until `want` appears or the timeout passes.
bool read_until(int fd, std::string& acc, const std::string& want, int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!contains(acc, want)) {
    int left = static_cast<int>(
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count());
    if (left <= 0) return false;
    struct pollfd p = {fd, POLLIN, 0};
    if (::poll(&p, 1, left) <= 0) return false;
    char buf[4096];
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) return contains(acc, want);
    acc.append(buf, static_cast<size_t>(n));
  }
  return true;
}

TEST_F(Lifecycle, ShimSequenceWithTerminal) {
  auto& b = make_bundle("tty", {"/bin/sh", "-c", kHelper + " tty; exec " + kHelper + " pause"}, false);
  b.process()["terminal"] = true;
  b.process()["consoleSize"] = {{"height", 33}, {"width", 111}};
  b.save();
  std::string sock = path("console.sock");
  int l = listen_unix(sock);
  ASSERT_GE(l, 0) << std::strerror(errno);
  track_fd(l);
  std::string pidfile = path("tty.pid");
  Proc c = rt_spawn({"create", "--bundle", b.dir, "--console-socket", sock, "--pid-file", pidfile, "tty"});
  procs_.push_back(c);
  int master = recv_fd_from(l, 10000);
  auto cr = procs_.back().wait(20);
  ASSERT_OK(cr);
  ASSERT_GE(master, 0) << "no pty master received on the console socket";
  track_fd(master);
  EXPECT_EQ(status("tty"), "created");

  ASSERT_OK(rt({"start", "tty"}));
  std::string out;
  ASSERT_TRUE(read_until(master, out, "winsize=", 10000)) << out;
  read_until(master, out, "\n", 1000);
  read_until(master, out, "winsize=33 111", 1000);
  EXPECT_TRUE(contains(out, "isatty0=1 isatty1=1 isatty2=1")) << out;
  EXPECT_TRUE(contains(out, "winsize=33 111")) << out;

  auto st = state("tty");
  ASSERT_TRUE(st);
  EXPECT_EQ((*st)["status"], "running");
  EXPECT_EQ(std::to_string((*st)["pid"].get<int>()), trim(read_file(pidfile)));
  EXPECT_TRUE(pid_alive((*st)["pid"].get<int>()));

  ASSERT_OK(rt({"kill", "tty", "SIGTERM"}));
  EXPECT_TRUE(read_until(master, out, "got SIGTERM", 10000)) << out;
  EXPECT_TRUE(wait_status("tty", "stopped", 10)) << status("tty");

  ASSERT_OK(rt({"delete", "--force", "tty"}));
  std::string err;
  EXPECT_FALSE(state("tty", &err));
  EXPECT_TRUE(contains(err, "does not exist")) << err;
  EXPECT_FALSE(exists(root_ + "/tty"));
  EXPECT_TRUE(cgroup_dirs(b.cgroup_path).empty());
}

TEST_F(Lifecycle, ShimSequenceWithoutTerminal) {
  auto& b = make_bundle("notty", {"/bin/sh", "-c", kHelper + " tty; exec " + kHelper + " pause"});
  std::string pidfile = path("notty.pid");
  auto c = create(b, {"--pid-file", pidfile});
  ASSERT_OK(c);
  auto st = state("notty");
  ASSERT_TRUE(st);
  EXPECT_EQ((*st)["status"], "created");
  EXPECT_EQ(std::to_string((*st)["pid"].get<int>()), trim(read_file(pidfile)));
  // Nothing runs before start.
  sleep_ms(100);
  EXPECT_EQ(read_file(c.out_path), "");

  ASSERT_OK(rt({"start", "notty"}));
  ASSERT_TRUE(wait_until([&] { return contains(read_file(c.out_path), "winsize="); }, 10)) << read_file(c.out_path);
  std::string o = read_file(c.out_path);
  EXPECT_TRUE(contains(o, "isatty0=0 isatty1=0 isatty2=0")) << o;
  EXPECT_EQ(status("notty"), "running");

  ASSERT_OK(rt({"kill", "notty", "TERM"}));
  EXPECT_TRUE(wait_until([&] { return contains(read_file(c.out_path), "got SIGTERM"); }, 10))
      << read_file(c.out_path);
  EXPECT_TRUE(wait_status("notty", "stopped", 10));
  ASSERT_OK(rt({"delete", "notty"}));
  std::string err;
  EXPECT_FALSE(state("notty", &err));
  EXPECT_TRUE(contains(err, "does not exist")) << err;
  EXPECT_TRUE(cgroup_dirs(b.cgroup_path).empty());
}

// ------------------------------------------------------------------ exec --

TEST_F(Lifecycle, ExecDetachedWithProcessJsonAndForeground) {
  auto& b = make_bundle("ex", {kHelper, "pause"});
  create_and_start(b);
  ASSERT_FALSE(HasFailure());
  pid_t init = init_pid("ex");
  ASSERT_GT(init, 0);

  json proc = b.config["process"];
  proc["args"] = {kHelper, "sleep", "30"};
  std::string pj = path("process.json");
  write_file(pj, proc.dump());
  std::string pf = path("exec.pid");
  auto e = rt({"exec", "--detach", "--pid-file", pf, "--process", pj, "ex"});
  ASSERT_OK(e);
  pid_t pid = std::atoi(read_file(pf).c_str());
  ASSERT_GT(pid, 0) << "pid file: " << read_file(pf);
  EXPECT_TRUE(pid_alive(pid));
  std::string sp = "/proc/" + std::to_string(pid);
  std::string ip = "/proc/" + std::to_string(init);
  for (const char* ns : {"pid", "mnt", "net", "ipc", "uts"}) {
    EXPECT_EQ(readlink_str(sp + "/ns/" + ns), readlink_str(ip + "/ns/" + ns)) << ns;
    EXPECT_FALSE(readlink_str(sp + "/ns/" + ns).empty()) << ns;
  }
  EXPECT_NE(readlink_str(sp + "/ns/pid"), readlink_str("/proc/self/ns/pid"));
  EXPECT_TRUE(contains(read_file(sp + "/cmdline"), "sleep"));
  // It is in the container's cgroup, so ps lists it.
  auto ps = rt({"ps", "--format", "json", "ex"});
  ASSERT_OK(ps);
  auto pids = json::parse(ps.out);
  EXPECT_NE(std::find(pids.begin(), pids.end(), json(pid)), pids.end()) << ps.out;

  auto fg = rt({"exec", "ex", kHelper, "echo", "hi"});
  EXPECT_OK(fg);
  EXPECT_EQ(fg.out, "hi\n") << fg.desc();
  auto fg3 = rt({"exec", "ex", kHelper, "exit", "3"});
  EXPECT_EQ(fg3.code, 3) << fg3.desc();
  // The exec'd process sees the container's own pid namespace.
  auto ppid = rt({"exec", "ex", kHelper, "pid"});
  EXPECT_OK(ppid);
  EXPECT_NE(trim(ppid.out), std::to_string(pid));
  EXPECT_LT(std::atoi(ppid.out.c_str()), 100) << ppid.out;

  ASSERT_OK(rt({"delete", "--force", "ex"}));
  EXPECT_TRUE(wait_until([&] { return !pid_alive(pid); }, 5)) << "exec'd process survived delete --force";
}

// ------------------------------------------------ state / list / ps / pause --

// Relative --pid-file and --pidfd-socket paths are the caller's, not the
// bundle's (the runtime chdirs to the bundle before it clones).
TEST_F(Lifecycle, RelativePathsAreTheCallers) {
  auto& b = make_bundle("relpid", {kHelper, "pause"});
  std::string caller = path("caller");
  mkdirs(caller);
  int l = listen_unix(caller + "/pidfd.sock");
  ASSERT_GE(l, 0);
  track_fd(l);
  auto r = create(b, {"--pid-file", "pid", "--pidfd-socket", "pidfd.sock"},
                  {.fds = {}, .timeout_s = 30, .cwd = caller});
  ASSERT_OK(r);
  pid_t init = init_pid("relpid");
  EXPECT_EQ(trim(read_file(caller + "/pid")), std::to_string(init));
  EXPECT_FALSE(exists(b.dir + "/pid"));
  int pidfd = recv_fd_from(l, 5000);
  ASSERT_GE(pidfd, 0);
  track_fd(pidfd);
  // The pidfd is the container's init: signalling through it ends the container.
  EXPECT_EQ(::syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, nullptr, 0), 0);
  EXPECT_TRUE(wait_status("relpid", "stopped"));
}

TEST_F(Lifecycle, StateListPsAndPauseResume) {
  auto& b = make_bundle("st",
                        {"/bin/sh", "-c", "i=0; while :; do i=$((i+1)); echo $i > /tmp/counter; usleep 50000; done"},
                        false);
  b.config["root"]["readonly"] = false;
  b.config["annotations"] = {{"org.example.key", "value-1"}};
  b.save();
  ASSERT_OK(create(b));
  auto s = state("st");
  ASSERT_TRUE(s);
  EXPECT_EQ((*s)["ociVersion"], "1.3.0");
  EXPECT_EQ((*s)["id"], "st");
  EXPECT_EQ((*s)["status"], "created");
  EXPECT_GT((*s)["pid"].get<int>(), 0);
  EXPECT_EQ((*s)["bundle"], b.dir);
  EXPECT_EQ((*s)["rootfs"], b.rootfs);
  ASSERT_TRUE((*s)["created"].is_string());
  EXPECT_EQ((*s)["created"].get<std::string>().size() >= 20, true) << (*s)["created"];
  EXPECT_EQ((*s)["created"].get<std::string>()[4], '-');
  EXPECT_EQ((*s)["created"].get<std::string>()[10], 'T');
  EXPECT_EQ((*s)["annotations"]["org.example.key"], "value-1");
  pid_t pid = (*s)["pid"];

  ASSERT_OK(rt({"start", "st"}));
  EXPECT_EQ(status("st"), "running");

  // list: table, json, quiet.
  auto l = rt({"list"});
  ASSERT_OK(l);
  auto lines = split_lines(l.out);
  ASSERT_GE(lines.size(), 2u) << l.out;
  {
    std::istringstream is(lines[0]);
    std::vector<std::string> h;
    std::string w;
    while (is >> w) h.push_back(w);
    EXPECT_EQ(h, (std::vector<std::string>{"ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"})) << l.out;
    std::istringstream row(lines[1]);
    std::vector<std::string> r;
    while (row >> w) r.push_back(w);
    ASSERT_EQ(r.size(), 6u) << lines[1];
    EXPECT_EQ(r[0], "st");
    EXPECT_EQ(r[1], std::to_string(pid));
    EXPECT_EQ(r[2], "running");
    EXPECT_EQ(r[3], b.dir);
    EXPECT_EQ(r[5], "root");
  }
  auto lj = rt({"list", "--format", "json"});
  ASSERT_OK(lj);
  auto arr = json::parse(lj.out);
  ASSERT_TRUE(arr.is_array()) << lj.out;
  ASSERT_EQ(arr.size(), 1u);
  EXPECT_EQ(arr[0]["id"], "st");
  EXPECT_EQ(arr[0]["pid"], pid);
  EXPECT_EQ(arr[0]["status"], "running");
  EXPECT_EQ(arr[0]["bundle"], b.dir);
  auto lq = rt({"list", "-q"});
  ASSERT_OK(lq);
  EXPECT_EQ(lq.out, "st\n");

  // ps --format json lists the init.
  auto ps = rt({"ps", "--format", "json", "st"});
  ASSERT_OK(ps);
  auto pids = json::parse(ps.out);
  EXPECT_NE(std::find(pids.begin(), pids.end(), json(pid)), pids.end()) << ps.out;

  // The counter advances while running.
  std::string counter = b.rootfs + "/tmp/counter";
  auto value = [&] {
    for (int i = 0; i < 50; ++i) {
      std::string v = trim(read_file(counter));
      if (!v.empty()) return std::atol(v.c_str());
      sleep_ms(5);
    }
    return -1L;
  };
  ASSERT_TRUE(wait_until([&] { return value() >= 2; }, 10)) << "counter never advanced";

  ASSERT_OK(rt({"pause", "st"}));
  EXPECT_EQ(status("st"), "paused");
  auto sp = state("st");
  ASSERT_TRUE(sp);
  EXPECT_EQ((*sp)["status"], "paused");
  sleep_ms(150);
  long a = value();
  sleep_ms(400);
  long a2 = value();
  EXPECT_EQ(a, a2) << "counter advanced while paused";
  // A paused container refuses exec unless --ignore-paused.
  auto ex = rt({"exec", "st", kHelper, "true"});
  EXPECT_NE(ex.code, 0) << ex.desc();

  ASSERT_OK(rt({"resume", "st"}));
  EXPECT_EQ(status("st"), "running");
  EXPECT_TRUE(wait_until([&] { return value() > a2 + 2; }, 5)) << "counter did not advance after resume";

  ASSERT_OK(rt({"kill", "st", "KILL"}));
  ASSERT_TRUE(wait_status("st", "stopped", 10));
  auto so = state("st");
  ASSERT_TRUE(so);
  EXPECT_EQ((*so)["status"], "stopped");
  EXPECT_EQ((*so)["pid"], 0);
  ASSERT_OK(rt({"delete", "st"}));
  auto le = rt({"list", "-q"});
  EXPECT_EQ(le.out, "");
}

// ------------------------------------------------------------------ kill --

TEST_F(Lifecycle, KillByNameNumberAndAll) {
  auto& b = make_bundle("k", {"/bin/sh", "-c", kHelper + " pause & exec " + kHelper + " pause"});
  auto c = create_and_start(b);
  ASSERT_FALSE(HasFailure());
  auto out = [&] { return read_file(c.out_path); };
  // Both processes exist before signalling --all.
  ASSERT_TRUE(wait_until([&] {
    auto r = rt({"ps", "--format", "json", "k"});
    return r.code == 0 && json::parse(r.out).size() == 2;
  }, 10));

  ASSERT_OK(rt({"kill", "k", "USR1"}));
  EXPECT_TRUE(wait_until([&] { return count_of(out(), "got SIGUSR1") == 1; }, 5)) << out();
  ASSERT_OK(rt({"kill", "k", "12"}));  // SIGUSR2
  EXPECT_TRUE(wait_until([&] { return contains(out(), "got SIGUSR2"); }, 5)) << out();
  ASSERT_OK(rt({"kill", "k", "SIGHUP"}));
  EXPECT_TRUE(wait_until([&] { return contains(out(), "got SIGHUP"); }, 5)) << out();
  sleep_ms(100);
  EXPECT_EQ(count_of(out(), "got SIGUSR1"), 1) << out();  // only the init got it
  EXPECT_EQ(count_of(out(), "got SIGHUP"), 1) << out();

  ASSERT_OK(rt({"kill", "--all", "k", "USR1"}));
  EXPECT_TRUE(wait_until([&] { return count_of(out(), "got SIGUSR1") == 3; }, 5)) << out();

  auto bad = rt({"kill", "k", "SIGFOO"});
  EXPECT_NE(bad.code, 0);
  EXPECT_TRUE(contains(bad.err, "SIGFOO")) << bad.desc();
  auto bad2 = rt({"kill", "k", "99"});
  EXPECT_NE(bad2.code, 0);
  EXPECT_TRUE(contains(bad2.err, "99")) << bad2.desc();
  EXPECT_EQ(status("k"), "running");

  ASSERT_OK(rt({"kill", "--all", "k", "KILL"}));
  EXPECT_TRUE(wait_status("k", "stopped", 10));
  EXPECT_TRUE(wait_until([&] {
    auto r = rt({"ps", "--format", "json", "k"});
    return r.code == 0 && json::parse(r.out).empty();
  }, 10));
  auto dead = rt({"kill", "k", "TERM"});
  EXPECT_NE(dead.code, 0) << dead.desc();
  EXPECT_TRUE(contains(dead.err, "not running")) << dead.desc();
}

// ---------------------------------------------------------------- delete --

TEST_F(Lifecycle, DeleteRules) {
  auto& b = make_bundle("del", {kHelper, "pause"});
  create_and_start(b);
  ASSERT_FALSE(HasFailure());
  pid_t pid = init_pid("del");
  auto d = rt({"delete", "del"});
  EXPECT_NE(d.code, 0) << d.desc();
  EXPECT_TRUE(contains(d.err, "del")) << d.desc();
  EXPECT_EQ(status("del"), "running");
  EXPECT_TRUE(pid_alive(pid));
  EXPECT_TRUE(exists(root_ + "/del/state.json"));
  EXPECT_FALSE(cgroup_dirs(b.cgroup_path).empty());
  ASSERT_OK(rt({"delete", "--force", "del"}));
  EXPECT_TRUE(wait_until([&] { return !pid_alive(pid); }, 5));
  EXPECT_FALSE(exists(root_ + "/del"));
  EXPECT_TRUE(cgroup_dirs(b.cgroup_path).empty());

  // A created (never started) container: plain delete works and kills its init.
  auto& b2 = make_bundle("created", {kHelper, "pause"});
  ASSERT_OK(create(b2));
  pid_t p2 = init_pid("created");
  ASSERT_GT(p2, 0);
  EXPECT_TRUE(pid_alive(p2));
  ASSERT_OK(rt({"delete", "created"}));
  EXPECT_TRUE(wait_until([&] { return !pid_alive(p2); }, 5)) << "init of a deleted created container survived";
  EXPECT_FALSE(exists(root_ + "/created"));
  EXPECT_TRUE(cgroup_dirs(b2.cgroup_path).empty());

  auto nf = rt({"delete", "--force", "no-such-container"});
  EXPECT_EQ(nf.code, 0) << nf.desc();
  auto n = rt({"delete", "no-such-container"});
  EXPECT_NE(n.code, 0) << n.desc();
  EXPECT_TRUE(contains(n.err, "does not exist")) << n.desc();
}

}  // namespace
}  // namespace berth::it
