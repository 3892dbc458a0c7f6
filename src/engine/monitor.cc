#include "engine/monitor.h"

#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sys/mount.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <atomic>
#include <functional>
#include <system_error>
#include <thread>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "cgroup/cgroup.h"
#include "engine/attach.h"
#include "engine/logfile.h"
#include "engine/spare.h"
#include "engine/spec.h"
#include "engine/store_index.h"
#include "runtime/container.h"
#include "runtime/namespaces.h"
#include "runtime/process.h"
#include "runtime/sealed.h"
#include "util/fs.h"
#include "util/log.h"

namespace berth::engine {

namespace {

struct Args {
  std::string id, runtime_root, dir, log_path;
  uint64_t log_max_size = 0;
  int log_max_files = 1;
  bool open_stdin = false;
  bool log_lazy = false;  // --log-lazy: the log file made with its first entry (LogWriter)
  int sync_fd = -1;
  std::vector<int> attach_fds;  // the starting client (foreground `run`, `start -a`)
  std::vector<int> client_fds;  // --loop: clients that attached since
  std::vector<std::string> exit_command;
  // --loop: the second image (see Monitor::relaunch): the container runs,
  // these are its fds and pid.
  bool loop = false;
  pid_t pid = 0;
  bool own_pid_ns = false;  // --own-pid-ns: Launched::own_pid_ns (for recycle_as_spare)
  // Health check (Docker's Healthcheck): Test is ["CMD", args...] or ["CMD-SHELL", cmd].
  std::vector<std::string> health_test;
  int64_t health_interval_ms = 30000, health_timeout_ms = 30000, health_start_ms = 0;
  int health_retries = 3;
  int out_fd = -1, err_fd = -1, in_fd = -1, master_fd = -1, listen_fd = -1;
  // Made while waiting for the command line (--netns-early, --cgroup-early
  // PATH): the container's network namespace, and the path of its empty cgroup.
  int netns_fd = -1;
  // --netns-spares DIR (with --netns-early): where it came from, and where
  // the next run's is made (engine/spare.h).
  std::string netns_spares;
  int netns_slot = -1;  // the spare's slot if one was taken
  std::string cgroup_made;
  std::optional<cgroup::Layout> cgroup_layout;  // found making it, for the start
  std::optional<std::vector<oci::DeviceCgroupRule>> cgroup_devices;  // the rules put on it
  // config.json as the CLI sent it before the arguments, and parsed (monitor.h).
  std::string spec_text;
  std::optional<oci::Spec> spec;
  // The start's first steps, made from that spec as it came (while the CLI
  // finished the create), for this state root and directory; the spec is in it.
  runtime::PreparedLaunch prepared;
  std::string prepared_root, prepared_dir;
  // --loop: what the first image knew of the health checks and its timers
  // (CLOCK_MONOTONIC, which an exec keeps).
  std::string health_status;
  int health_streak = 0;
  std::vector<std::string> health_log;
  int64_t started_ms = -1, next_probe_ms = -1;
};

Result<Args> parse_args(int argc, char** argv) {
  Args a;
  int i = 1;
  auto value = [&](const char* flag) -> Result<std::string> {
    if (i + 1 >= argc) return fail(std::string(flag) + " needs a value");
    return std::string(argv[++i]);
  };
  auto number = [&](const char* flag) -> Result<long long> {
    std::string v = TRY(value(flag));
    char* end = nullptr;
    long long n = std::strtoll(v.c_str(), &end, 10);
    if (v.empty() || *end || n < 0) return fail(std::string(flag) + ": bad number \"" + v + "\"");
    return n;
  };
  for (; i < argc; ++i) {
    std::string f = argv[i];
    if (f == "--") {
      for (++i; i < argc; ++i) a.exit_command.emplace_back(argv[i]);
      break;
    }
    if (f == "--id") a.id = TRY(value("--id"));
    else if (f == "--runtime-root") a.runtime_root = TRY(value("--runtime-root"));
    else if (f == "--dir") a.dir = TRY(value("--dir"));
    else if (f == "--log") a.log_path = TRY(value("--log"));
    else if (f == "--log-max-size") a.log_max_size = TRY(number("--log-max-size"));
    else if (f == "--log-max-files") a.log_max_files = static_cast<int>(TRY(number("--log-max-files")));
    else if (f == "--stdin") a.open_stdin = true;
    else if (f == "--log-lazy") a.log_lazy = true;
    else if (f == "--sync-fd") a.sync_fd = static_cast<int>(TRY(number("--sync-fd")));
    else if (f == "--attach-fd") a.attach_fds.push_back(static_cast<int>(TRY(number("--attach-fd"))));
    else if (f == "--client-fd") a.client_fds.push_back(static_cast<int>(TRY(number("--client-fd"))));
    else if (f == "--health-status") a.health_status = TRY(value("--health-status"));
    else if (f == "--health-streak") a.health_streak = static_cast<int>(TRY(number("--health-streak")));
    else if (f == "--health-log") a.health_log.push_back(TRY(value("--health-log")));
    else if (f == "--started-ms") a.started_ms = TRY(number("--started-ms"));
    else if (f == "--next-probe-ms") a.next_probe_ms = TRY(number("--next-probe-ms"));
    else if (f == "--loop") a.loop = true;
    else if (f == "--own-pid-ns") a.own_pid_ns = true;
    else if (f == "--health-test") a.health_test.push_back(TRY(value("--health-test")));
    else if (f == "--health-interval-ms") a.health_interval_ms = TRY(number("--health-interval-ms"));
    else if (f == "--health-timeout-ms") a.health_timeout_ms = TRY(number("--health-timeout-ms"));
    else if (f == "--health-start-period-ms") a.health_start_ms = TRY(number("--health-start-period-ms"));
    else if (f == "--health-retries") a.health_retries = static_cast<int>(TRY(number("--health-retries")));
    else if (f == "--pid") a.pid = static_cast<pid_t>(TRY(number("--pid")));
    else if (f == "--out-fd") a.out_fd = static_cast<int>(TRY(number("--out-fd")));
    else if (f == "--err-fd") a.err_fd = static_cast<int>(TRY(number("--err-fd")));
    else if (f == "--in-fd") a.in_fd = static_cast<int>(TRY(number("--in-fd")));
    else if (f == "--master-fd") a.master_fd = static_cast<int>(TRY(number("--master-fd")));
    else if (f == "--listen-fd") a.listen_fd = static_cast<int>(TRY(number("--listen-fd")));
    else return fail("unknown flag " + f);
  }
  if (a.id.empty() || a.runtime_root.empty() || a.dir.empty() || a.sync_fd < 0)
    return fail("--id, --runtime-root, --dir and --sync-fd are required");
  if (a.log_max_files < 1) a.log_max_files = 1;
  return a;
}

void set_nonblock(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }

// Output waiting for a client, or input waiting for the container, beyond
// which the monitor stops reading the side that produces it (backpressure
// rather than unbounded memory).
constexpr size_t kHighWater = 256 << 10;

// How long the monitor serves a new container from the image that started
// it before it re-execs itself into the small one (see relaunch()).
constexpr int64_t kRelaunchAfterMs = 250;
// How long the spare maker waits for a foreground run's container to end
// before it makes the next run's network namespace (else finish() does).
constexpr int kSpareNetnsAfterMs = 20;

struct Client {
  UniqueFd fd;
  FrameReader in;
  std::string out;
  bool dead = false;
  bool initial = false;       // handed over at start (the foreground `run`)
  bool cleans_up = false;     // sent kCleanupByClient
  bool removes = false;       // and said the container goes with it ("rm")
  std::string trash;          // sent kRemoveTrash: its paths, one a line
};

class Monitor {
 public:
  explicit Monitor(Args a) : a_(std::move(a)) {}
  int run();
  int resume();

 private:
  Result<> start_container();
  // Whether the client handed over the trash (so it removed the container).
  bool remove_client_trash();
  Result<> listen_attach();
  void setup_process();
  // The store's root: --dir is <root>/containers/<id>.
  std::string store_root() const { return a_.dir.substr(0, a_.dir.find_last_of('/')) + "/.."; }
  [[noreturn]] void serve();
  [[noreturn]] void relaunch();
  void begin_serving();
  void loop(int64_t until_ms = -1);
  bool handover_ready() const;
  void on_output(int fd, Frame stream);
  void on_client(Client& c, short revents);
  void flush_client(Client& c);
  void broadcast(Frame type, std::string_view data);
  void reap();
  void drain();
  // Health checks: a probe is `berth-monitor exec` of the test in the container.
  void start_probe();
  void end_probe(int status, bool timed_out);
  int poll_timeout_ms();
  [[noreturn]] void finish();

  Args a_;
  std::optional<LogWriter> log_;
  UniqueFd out_, err_, in_;  // our ends of the container's stdio pipes
  UniqueFd master_;          // pty master (process.terminal)
  // The container's mount namespace (CreateOptions::keep_mount_ns): its
  // teardown is ours, once a client that cleans up is done (or as we exit
  // or exec), not its last process's on the way to our exit frame.
  UniqueFd mount_ns_;
  UniqueFd listener_, sigfd_;
  // The store's WAL index kept valid while we live (engine/store_index.h);
  // a trash child shares it.
  UniqueFd store_index_;
  // Makes the next create's spare while a foreground container runs
  // (engine/spare.h); joined before we fork or exec.
  std::thread spare_maker_;
  // The spare maker left the next network namespace to finish(): the
  // container was over within kSpareNetnsAfterMs.
  std::atomic<bool> netns_left_{false};
  void make_left_netns() {
    if (netns_left_.exchange(false))
      if (auto r = make_spare_netns(a_.netns_spares); !r) log::debug("spare network namespace: " + r.error().str());
  }
  UniqueFd pidfd_;  // the container's (runtime::Launched)
  void join_spare_maker() {
    if (spare_maker_.joinable()) spare_maker_.join();
  }
  std::string to_container_;  // stdin bytes not yet written
  bool close_stdin_ = false;
  std::vector<Client> clients_;
  pid_t pid_ = 0;
  bool exited_ = false;
  int status_ = 0;
  struct Probe {
    pid_t pid = 0;
    UniqueFd out;
    std::string output;
    int64_t started = 0;
    std::string started_at;  // RFC 3339, for the health log
  } probe_;
  int64_t started_ms_ = 0, next_probe_ms_ = 0;
  int failing_streak_ = 0;
  std::string health_ = "starting";
  std::vector<std::string> health_log_;  // JSON objects, the last 5
};

// A monitor outlives its terminal and its clients: SIGPIPE, SIGHUP and
// SIGINT are nothing to it. (Set before an early preparation, which reads
// the dispositions its container's process will reset: they must be these.)
void ignore_monitor_signals() {
  ::signal(SIGPIPE, SIG_IGN);
  ::signal(SIGHUP, SIG_IGN);
  ::signal(SIGINT, SIG_IGN);
}

int64_t now_ms() {
  struct timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}
std::string rfc3339_now() {
  struct timespec ts;
  ::clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  char b[64];
  std::snprintf(b, sizeof b, "%04d-%02d-%02dT%02d:%02d:%02d.%09ldZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec);
  return b;
}

void Monitor::start_probe() {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) < 0) return;
  UniqueFd r(p[0]), w(p[1]);
  char self[4096];
  ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) return;
  std::string exe(self, static_cast<size_t>(n));
  std::vector<std::string> args = {exe, "exec", "--runtime-root", a_.runtime_root, "--id", a_.id, "--"};
  if (a_.health_test.front() == "CMD-SHELL") {
    args.insert(args.end(), {"/bin/sh", "-c"});
    for (size_t i = 1; i < a_.health_test.size(); ++i) args.push_back(a_.health_test[i]);
  } else {
    args.insert(args.end(), a_.health_test.begin() + 1, a_.health_test.end());
  }
  std::vector<char*> argv;
  for (auto& s : args) argv.push_back(s.data());
  argv.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) return;
  if (pid == 0) {
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    int null = ::open("/dev/null", O_RDONLY);
    ::dup2(null, 0);
    ::dup2(w.get(), 1);
    ::dup2(w.get(), 2);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  set_nonblock(r.get());
  probe_.pid = pid;
  probe_.out = std::move(r);
  probe_.output.clear();
  probe_.started = now_ms();
  probe_.started_at = rfc3339_now();
}

void Monitor::end_probe(int status, bool timed_out) {
  if (probe_.out) {
    char buf[4096];
    ssize_t n;
    while ((n = ::read(probe_.out.get(), buf, sizeof buf)) > 0)
      if (probe_.output.size() < 4096) probe_.output.append(buf, static_cast<size_t>(n));
  }
  probe_.out.reset();
  probe_.pid = 0;
  int code = timed_out ? -1 : WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  if (timed_out)
    probe_.output = "Health check exceeded timeout (" + std::to_string(a_.health_timeout_ms / 1000) + "s)";
  if (probe_.output.size() > 4096) probe_.output.resize(4096);
  int64_t now = now_ms();
  // Docker: failures during the start period do not count; a success ends it.
  if (code == 0) {
    failing_streak_ = 0;
    health_ = "healthy";
  } else if (now - started_ms_ >= a_.health_start_ms) {
    if (++failing_streak_ >= a_.health_retries) health_ = "unhealthy";
  }
  std::string entry = "{\"Start\":\"" + probe_.started_at + "\",\"End\":\"" + rfc3339_now() +
                      "\",\"ExitCode\":" + std::to_string(code) + ",\"Output\":\"";
  log::json_escape(entry, probe_.output);
  entry += "\"}";
  health_log_.push_back(entry);
  if (health_log_.size() > 5) health_log_.erase(health_log_.begin());
  std::string doc = "{\"Status\":\"" + health_ + "\",\"FailingStreak\":" + std::to_string(failing_streak_) +
                    ",\"Log\":[";
  for (size_t i = 0; i < health_log_.size(); ++i) doc += (i ? "," : "") + health_log_[i];
  doc += "]}\n";
  (void)atomic_write_file(a_.dir + "/health.json", doc, 0600);
  next_probe_ms_ = now + a_.health_interval_ms;
}

int Monitor::poll_timeout_ms() {
  if (a_.health_test.empty() || a_.health_test.front() == "NONE") return -1;
  int64_t now = now_ms();
  int64_t at = probe_.pid ? probe_.started + a_.health_timeout_ms : next_probe_ms_;
  return static_cast<int>(std::clamp<int64_t>(at - now, 0, 60000));
}

// The runtime's options for a container's start, the same whether prepared
// as the spec came (monitor_main) or made at the start.
runtime::Globals start_globals(const std::string& runtime_root) {
  runtime::Globals g;
  g.root = runtime_root;
  // Beside the runtime state (a tmpfs in /run): the engine's few profiles compile once per boot.
  g.seccomp_cache = runtime_root + "/../seccomp-cache";
  return g;
}
runtime::CreateOptions start_options(const std::string& id, const std::string& dir, int netns_fd,
                                     const std::string& cgroup_made, const cgroup::Layout* layout,
                                     const std::vector<oci::DeviceCgroupRule>* devices) {
  runtime::CreateOptions o;
  o.id = id;
  o.bundle = dir;
  o.config_in_bundle = true;  // the container's directory holds it
  o.netns_fd = netns_fd;
  o.cgroup_made = cgroup_made;
  o.cgroup_layout = layout;
  o.cgroup_devices_applied = devices;
  o.keep_mount_ns = true;
  return o;
}

Result<> Monitor::start_container() {
  // The container's stdio are ours at launch: fds 0-2 are set to its pipes,
  // then back to /dev/null so that only the container holds the write ends
  // (its exit is then EOF on them).
  UniqueFd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
  if (!null) return sys_error("open /dev/null");
  int p[2];
  UniqueFd child_in, child_out, child_err;
  if (a_.open_stdin) {
    if (::pipe2(p, O_CLOEXEC) < 0) return sys_error("pipe");
    child_in.reset(p[0]), in_.reset(p[1]);
  }
  if (::pipe2(p, O_CLOEXEC) < 0) return sys_error("pipe");
  out_.reset(p[0]), child_out.reset(p[1]);
  if (::pipe2(p, O_CLOEXEC) < 0) return sys_error("pipe");
  err_.reset(p[0]), child_err.reset(p[1]);
  ::dup2(child_in ? child_in.get() : null.get(), 0);
  ::dup2(child_out.get(), 1);
  ::dup2(child_err.get(), 2);

  runtime::Globals g = start_globals(a_.runtime_root);
  runtime::CreateOptions o = start_options(a_.id, a_.dir, a_.netns_fd, a_.cgroup_made,
                                           a_.cgroup_layout ? &*a_.cgroup_layout : nullptr,
                                           a_.cgroup_devices ? &*a_.cgroup_devices : nullptr);
  // Prepared for other paths than the command line's (it never is): dropped,
  // and the config read from the directory.
  runtime::PreparedLaunch prepared;
  if (a_.prepared && a_.prepared_root == a_.runtime_root && a_.prepared_dir == a_.dir) prepared = std::move(a_.prepared);
  a_.prepared.reset();
  if (!prepared && a_.spec) o.config_spec = &*a_.spec, o.config_text = &a_.spec_text;
  auto launched = runtime::launch(g, o, std::move(prepared));
  if (a_.netns_fd >= 0) ::close(std::exchange(a_.netns_fd, -1));
  // Not taken over (a failed start, another path in the config): gone, as
  // far as it is still empty (another command's start may be in it).
  if (!a_.cgroup_made.empty() && (!launched || !launched->cgroup_adopted)) cgroup::remove_if_empty(a_.cgroup_made);
  for (int fd = 0; fd <= 2; ++fd) ::dup2(null.get(), fd);
  if (!launched) return std::unexpected(std::move(launched).error());
  pid_ = launched->pid;
  pidfd_ = std::move(launched->pidfd);
  a_.own_pid_ns = launched->own_pid_ns;
  mount_ns_ = std::move(launched->mount_ns);
  if (launched->console) {
    // A terminal: the pty is the container's stdio; the pipes are unused.
    master_ = std::move(launched->console);
    out_.reset(), err_.reset(), in_.reset();
    set_nonblock(master_.get());
  }
  if (out_) set_nonblock(out_.get());
  if (err_) set_nonblock(err_.get());
  if (in_) set_nonblock(in_.get());
  return {};
}

void Monitor::broadcast(Frame type, std::string_view data) {
  if (clients_.empty()) return;
  std::string f = frame(type, data);
  for (auto& c : clients_)
    if (!c.dead) c.out += f, flush_client(c);
}

void Monitor::flush_client(Client& c) {
  while (!c.out.empty()) {
    ssize_t n = ::send(c.fd.get(), c.out.data(), c.out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      c.out.erase(0, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    c.dead = true;  // gone: its output is dropped
    c.out.clear();
    return;
  }
}

void Monitor::on_output(int fd, Frame stream) {
  char buf[32 << 10];
  ssize_t n = ::read(fd, buf, sizeof buf);
  if (n <= 0) {
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    // EOF (or EIO: a pty whose last slave closed): nothing more from it.
    if (fd == master_.get()) master_.reset();
    else if (fd == out_.get()) out_.reset();
    else if (fd == err_.get()) err_.reset();
    return;
  }
  std::string_view data(buf, static_cast<size_t>(n));
  if (log_) (void)log_->write(stream == Frame::kStderr ? "stderr" : "stdout", data);
  broadcast(stream, data);
}

void Monitor::on_client(Client& c, short revents) {
  if (revents & POLLOUT) flush_client(c);
  if (!(revents & (POLLIN | POLLHUP | POLLERR))) return;
  char buf[16 << 10];
  ssize_t n = ::read(c.fd.get(), buf, sizeof buf);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n <= 0) {
    c.dead = true;
    return;
  }
  c.in.feed(buf, static_cast<size_t>(n));
  Frame type;
  std::string payload;
  while (c.in.next(&type, &payload)) {
    switch (type) {
      case Frame::kStdin:
        if (!close_stdin_ && (in_ || master_)) to_container_ += payload;
        break;
      case Frame::kCloseStdin:
        if (in_) close_stdin_ = true;
        break;
      case Frame::kCleanupByClient:
        c.cleans_up = c.initial;
        // An --rm container's client removes it now: its rootfs goes at
        // once (from our cwd, its directory, whatever the client renames
        // it to), while the client records the exit on the other CPU.
        // Left mounted, it was in the copy of the host's mounts that the
        // next container's mount namespace starts from, and when our
        // unmount came later, that container's unmount of its old root
        // was the overlay's last: the evicted work directories' discards
        // (~0.7 ms, in one run in four) were waited for on its set-up.
        c.removes = c.cleans_up && payload == "rm";
        if (c.removes && exited_) (void)::umount2("rootfs", MNT_DETACH | UMOUNT_NOFOLLOW);
        break;
      case Frame::kRemoveTrash:
        if (c.cleans_up) c.trash = payload.empty() ? "\n" : payload;
        break;
      case Frame::kResize: {
        unsigned rows = 0, cols = 0;
        if (master_ && std::sscanf(payload.c_str(), "%u %u", &rows, &cols) == 2) {
          struct winsize ws = {};
          ws.ws_row = static_cast<unsigned short>(rows);
          ws.ws_col = static_cast<unsigned short>(cols);
          ::ioctl(master_.get(), TIOCSWINSZ, &ws);
        }
        break;
      }
      default:
        break;
    }
  }
  if (c.in.bad()) c.dead = true;
}

void Monitor::reap() {
  int ws;
  pid_t w;
  // As a subreaper we also collect whatever the container orphaned to us.
  while ((w = ::waitpid(-1, &ws, WNOHANG)) > 0) {
    if (w == pid_) exited_ = true, status_ = ws;
    else if (probe_.pid && w == probe_.pid) end_probe(ws, false);
  }
}

// Nothing is half-way that a re-exec would lose: no output or input held
// for a client or the container, no partial frame, no health probe running.
bool Monitor::handover_ready() const {
  if (!to_container_.empty() || probe_.pid) return false;
  for (auto& c : clients_)
    if (!c.out.empty() || c.in.partial()) return false;
  return true;
}

// Serves until the container exits or, with `until_ms`, until that time has
// passed at a moment handover_ready().
void Monitor::loop(int64_t until_ms) {
  while (!exited_) {
    bool past = until_ms >= 0 && now_ms() >= until_ms;
    // attach.sock from the quarter second on, also while a stalled client
    // holds the hand-over back.
    if (past && !listener_ && !exited_)
      if (auto r = listen_attach(); !r) log::error(r.error().str());
    if (past && handover_ready()) return;
    std::vector<struct pollfd> pfds;
    size_t pending_out = 0;
    for (auto& c : clients_) pending_out = std::max(pending_out, c.out.size());
    bool read_container = pending_out < kHighWater;
    int stdin_fd = master_ ? master_.get() : in_.get();
    pfds.push_back({sigfd_.get(), POLLIN, 0});
    if (listener_) pfds.push_back({listener_.get(), POLLIN, 0});
    if (read_container) {
      if (out_) pfds.push_back({out_.get(), POLLIN, 0});
      if (err_) pfds.push_back({err_.get(), POLLIN, 0});
      if (master_) pfds.push_back({master_.get(), POLLIN, 0});
    }
    if (!to_container_.empty() && stdin_fd >= 0) pfds.push_back({stdin_fd, POLLOUT, 0});
    if (probe_.out) pfds.push_back({probe_.out.get(), POLLIN, 0});
    size_t first_client = pfds.size();
    for (auto& c : clients_)
      pfds.push_back({c.fd.get(), static_cast<short>((to_container_.size() < kHighWater ? POLLIN : 0) |
                                                     (c.out.empty() ? 0 : POLLOUT)),
                      0});
    int timeout = poll_timeout_ms();
    if (until_ms >= 0) {
      // Before the time, wake at it; after it (something half-way), look
      // again now and then rather than spin.
      int left = past ? 100 : static_cast<int>(std::clamp<int64_t>(until_ms - now_ms(), 0, 60000));
      timeout = timeout < 0 ? left : std::min(timeout, left);
    }
    if (::poll(pfds.data(), pfds.size(), timeout) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (int t = poll_timeout_ms(); t == 0) {
      if (probe_.pid) {
        ::kill(probe_.pid, SIGKILL);
        int ws;
        ::waitpid(probe_.pid, &ws, 0);
        end_probe(ws, true);
      } else {
        start_probe();
      }
    }
    for (size_t i = 0; i < first_client; ++i) {
      auto& p = pfds[i];
      if (!p.revents) continue;
      if (p.fd == sigfd_.get()) {
        struct signalfd_siginfo si;
        while (::read(sigfd_.get(), &si, sizeof si) == sizeof si) {
        }
        reap();
      } else if (listener_ && p.fd == listener_.get()) {
        int fd = ::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd >= 0) clients_.push_back(Client{UniqueFd(fd)});
      } else if (p.events & POLLOUT) {
        ssize_t n = ::write(stdin_fd, to_container_.data(), to_container_.size());
        if (n > 0) to_container_.erase(0, static_cast<size_t>(n));
        else if (n < 0 && errno != EAGAIN && errno != EINTR) to_container_.clear();
      } else if (probe_.out && p.fd == probe_.out.get()) {
        char buf[4096];
        ssize_t n = ::read(p.fd, buf, sizeof buf);
        if (n > 0 && probe_.output.size() < 4096) probe_.output.append(buf, static_cast<size_t>(n));
        if (n == 0) probe_.out.reset();
      } else if (out_ && p.fd == out_.get()) {
        on_output(p.fd, Frame::kStdout);
      } else if (err_ && p.fd == err_.get()) {
        on_output(p.fd, Frame::kStderr);
      } else if (master_ && p.fd == master_.get()) {
        on_output(p.fd, Frame::kStdout);
      }
    }
    for (size_t i = first_client; i < pfds.size(); ++i)
      if (pfds[i].revents) on_client(clients_[i - first_client], pfds[i].revents);
    std::erase_if(clients_, [](const Client& c) { return c.dead; });
    if (close_stdin_ && to_container_.empty() && in_) in_.reset();
  }
}

void Monitor::drain() {
  // What the container wrote before it exited is still in the pipes; a
  // process it left behind (outside its pid namespace) may hold them open, so
  // read only what is there.
  for (int round = 0; round < 1024; ++round) {
    bool any = false;
    for (auto [fd, stream] : {std::pair{&out_, Frame::kStdout}, {&err_, Frame::kStderr}, {&master_, Frame::kStdout}}) {
      if (!*fd) continue;
      int before = fd->get();
      struct pollfd p = {before, POLLIN, 0};
      if (::poll(&p, 1, 0) <= 0) continue;
      on_output(before, stream);
      any = true;
    }
    if (!any) break;
  }
  if (log_) (void)log_->flush();
}

void Monitor::finish() {
  int code = WIFSIGNALED(status_) ? 128 + WTERMSIG(status_) : WEXITSTATUS(status_);
  struct timespec ts;
  ::clock_gettime(CLOCK_REALTIME, &ts);
  int64_t ns = static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
  // The frame first: a foreground run records the exit from it (the exit
  // file, a new inode, was on the path of every `run --rm`).
  std::string exit = std::to_string(code) + " " + std::to_string(ns);
  broadcast(Frame::kExit, exit);
  // Give clients a moment to take the last frames; a client that reads
  // nothing does not hold the exit up.
  for (int i = 0; i < 50; ++i) {
    bool pending = false;
    for (auto& c : clients_) {
      if (c.dead || c.out.empty()) continue;
      flush_client(c);
      pending |= !c.out.empty();
    }
    if (!pending) break;
    ::usleep(20000);
  }
  // A foreground `run` records the exit itself (one process fewer on the
  // path of every `run --rm`): it answers kExit with kCleanupByClient. A
  // client that says nothing within a second, or goes away, leaves it to the
  // exit command.
  bool client_cleans = false, client_removes = false;
  for (auto& c : clients_) {
    if (!c.initial) continue;
    // Its last stdin frames may come before the answer.
    while (!c.dead && !c.cleans_up) {
      struct pollfd p = {c.fd.get(), POLLIN, 0};
      if (::poll(&p, 1, 1000) <= 0) break;
      on_client(c, p.revents);
    }
    client_cleans |= c.cleans_up;
    client_removes |= c.removes;
  }
  // The engine records the start before we may record the end.
  char b;
  while (::read(a_.sync_fd, &b, 1) > 0) {
  }
  ::close(a_.sync_fd);
  listener_.reset();
  ::unlink("attach.sock");
  // The exit record, unless the client recorded it (from the frame) and
  // removed the container, as it says when it hands over the trash: one file
  // fewer to make and remove on every foreground `run --rm`. A client that
  // went away before saying so may not have recorded it.
  bool removed = client_cleans && remove_client_trash();
  if (!removed)
    if (auto r = atomic_write_file(a_.dir + "/exit", exit + "\n"); !r) log::error("record exit: " + r.error().str());
  join_spare_maker();
  make_left_netns();
  // A client that said it removes an --rm container and then went away
  // (killed) before handing its files over leaves the removal to the exit
  // command, as if it had never taken the cleanup over: its row is gone
  // (then the command finds nothing to do) or still there (then it goes).
  if (a_.exit_command.empty() || (client_cleans && (removed || !client_removes))) ::_exit(0);
  // Attached clients stay connected through the exit command: a foreground
  // `run --rm` returns once their socket closes, when the removal is done.
  for (auto& c : clients_) {
    int fl = ::fcntl(c.fd.get(), F_GETFD);
    ::fcntl(c.fd.get(), F_SETFD, fl & ~FD_CLOEXEC);
    (void)c.fd.release();
  }
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  std::vector<char*> argv;
  for (auto& s : a_.exit_command) argv.push_back(s.data());
  argv.push_back(nullptr);
  ::execv(argv[0], argv.data());
  log::error(std::string("exec ") + argv[0] + ": " + std::strerror(errno));
  ::_exit(1);
}

// SCHED_IDLE for `ms` milliseconds, then back to the normal policy at nice
// +10 (SIGALRM's handler). Nothing if the timer cannot be armed.
void run_idle_for_a_while(int ms) {
  struct sigaction sa {};
  sa.sa_handler = [](int) {
    struct sched_param p {};
    (void)::sched_setscheduler(0, SCHED_OTHER, &p);
    (void)::setpriority(PRIO_PROCESS, 0, 10);
  };
  ::sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigset_t alrm;
  ::sigemptyset(&alrm);
  ::sigaddset(&alrm, SIGALRM);
  struct itimerval t {};
  t.it_value.tv_sec = ms / 1000;
  t.it_value.tv_usec = (ms % 1000) * 1000;
  if (::sigaction(SIGALRM, &sa, nullptr) != 0 || ::sigprocmask(SIG_UNBLOCK, &alrm, nullptr) != 0 ||
      ::setitimer(ITIMER_REAL, &t, nullptr) != 0)
    return;
  struct sched_param p {};
  (void)::sched_setscheduler(0, SCHED_IDLE, &p);
}

// The client that cleans up sends the container's removed files (kRemoveTrash)
// or closes the connection: the removal is ours, off its path, for each path
// that is this container's trash beside its directory.
bool Monitor::remove_client_trash() {
  join_spare_maker();  // (before the fork below)
  std::string parent = a_.dir.substr(0, a_.dir.find_last_of('/'));
  std::string prefix = ".trash-" + a_.id + ".";
  for (auto& c : clients_) {
    if (!c.initial || !c.cleans_up || c.dead) continue;
    ::fcntl(c.fd.get(), F_SETFL, ::fcntl(c.fd.get(), F_GETFL) & ~O_NONBLOCK);
    struct timeval tv = {10, 0};
    ::setsockopt(c.fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char buf[4096];
    while (c.trash.empty()) {
      Frame type;
      std::string payload;
      if (c.in.next(&type, &payload)) {
        if (type == Frame::kRemoveTrash) c.trash = payload.empty() ? "\n" : payload;
        continue;
      }
      if (c.in.bad()) return false;
      ssize_t n = ::read(c.fd.get(), buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      c.in.feed(buf, static_cast<size_t>(n));
    }
    // The client is done (its unmount of the rootfs included, whose grace
    // period ours would have lengthened): the container's namespace goes.
    mount_ns_.reset();
    // In a child: `wait`, `stop` and `rm -f` wait for this monitor to end,
    // not for a big upper dir to be removed. An --rm container's (its row
    // is gone: no command waits for it) is removed here, by this process
    // on its way out (a fork copied our page tables, and the child then
    // faulted its pages in again and unmapped them: 0.2-0.3 ms of CPU a
    // `run --rm`, traced, that the next run met), its clients let go first.
    bool gone = c.trash.starts_with("runtime\n");
    pid_t child = gone ? 0 : ::fork();
    if (child != 0) {
      netns_left_ = false;  // (the child makes it)
      return true;  // (or it failed: the next command's repair removes the trash)
    }
    if (gone) {
      for (auto& other : clients_) other.fd.reset();
      listener_.reset();
      out_.reset(), err_.reset(), in_.reset(), master_.reset();
    }
    (void)::setpriority(PRIO_PROCESS, 0, 10);
    // The next create's directory first (engine/spare.h) if none is ready:
    // it may be starting now, and needs it more than this one needs to be
    // gone.
    bool ours = c.trash.find(parent + "/" + prefix) != std::string::npos;
    if (ours)
      if (auto r = make_spare(parent, true); !r) log::debug("spare container directory: " + r.error().str());
    // The rest waits for an idle CPU: at nice +10 it still took the CPU from
    // the next run's monitor as it started the container (for 0.1-1.2 ms,
    // traced, in one run in five). Never for long: a timer puts it back at
    // nice +10 in a quarter second, under any load (idle tasks still get a
    // sliver of the CPU, enough to take the signal).
    run_idle_for_a_while(250);
    // The next run's network namespace, if the spare maker left it to us,
    // while this container's trash still has its name (what a command's
    // repair and the tests' wait_for_trash look for): made after it, it came
    // after a test's teardown had unmounted everything.
    make_left_netns();
    // An --rm container's runtime state and cgroup first (its row is gone);
    // then its directory, which becomes the next spare if nothing of the
    // container is left in it (engine/spare.h: fewer inodes to remove and
    // to make), or goes, and a new spare is made in a free slot.
    // A new spare (when the directory is not recycled) is made before the
    // trash goes: while this work is pending there is always a trash name
    // (the container's, or the spare's in the nursery), which is how
    // `test::wait_for_trash`, and a command's repair, tell it is done.
    bool ended = false, recycled = false, made = false;
    auto make_new_spare = [&] {
      if (!ours || recycled || made) return;
      made = true;
      if (auto r = make_spare(parent); !r) log::debug("spare container directory: " + r.error().str());
    };
    for (auto& p : split(c.trash, '\n')) {
      if (p == "runtime") {
        runtime::Globals g;
        g.root = a_.runtime_root;
        ended = runtime::remove(g, a_.id, true).has_value();
        continue;
      }
      auto slash = p.find_last_of('/');
      if (slash == std::string::npos || p.substr(0, slash) != parent) continue;
      std::string name = p.substr(slash + 1);
      if (!name.starts_with(prefix) || name.find('/') != std::string::npos) continue;
      if (ended && !recycled && recycle_as_spare(parent, p, a_.own_pid_ns)) {
        recycled = true;
        continue;
      }
      make_new_spare();
      (void)remove_trash(p);
    }
    make_new_spare();
    if (gone) return true;
    ::_exit(0);
  }
  return false;
}

// Creating the container touched most of this binary and left its heap
// behind; the monitor then lives as long as the container. It execs itself
// (staying the container's parent, with the same pid) with --loop and the
// fds it holds: the new image maps only what the loop uses, so a monitor
// costs a few pages of its own (PSS, bench/engine-run.sh).
void Monitor::relaunch() {
  join_spare_maker();
  // Its own path, not /proc/self/exe: the process name (comm) comes from it.
  char self[4096];
  ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  std::string exe = n > 0 ? std::string(self, static_cast<size_t>(n)) : std::string("/proc/self/exe");
  std::vector<std::string> args = {exe, "--loop", "--id", a_.id, "--runtime-root", a_.runtime_root,
                                   "--dir", a_.dir, "--pid", std::to_string(pid_),
                                   "--sync-fd", std::to_string(a_.sync_fd)};
  if (!a_.log_path.empty())
    args.insert(args.end(), {"--log", a_.log_path, "--log-max-size", std::to_string(a_.log_max_size),
                             "--log-max-files", std::to_string(a_.log_max_files)});
  if (a_.log_lazy) args.push_back("--log-lazy");
  if (a_.own_pid_ns) args.push_back("--own-pid-ns");
  auto pass = [&](const char* flag, const UniqueFd& fd) {
    if (!fd) return;
    ::fcntl(fd.get(), F_SETFD, 0);
    args.insert(args.end(), {flag, std::to_string(fd.get())});
  };
  pass("--out-fd", out_), pass("--err-fd", err_), pass("--in-fd", in_), pass("--master-fd", master_);
  pass("--listen-fd", listener_);
  for (auto& c : clients_) pass(c.initial ? "--attach-fd" : "--client-fd", c.fd);
  args.insert(args.end(), {"--started-ms", std::to_string(started_ms_), "--next-probe-ms",
                           std::to_string(next_probe_ms_), "--health-status", health_, "--health-streak",
                           std::to_string(failing_streak_)});
  for (auto& e : health_log_) args.insert(args.end(), {"--health-log", e});
  // A line without its newline yet is held in memory: it goes to the log now.
  if (log_) (void)log_->flush();
  ::fcntl(a_.sync_fd, F_SETFD, 0);
  for (auto& t : a_.health_test) args.insert(args.end(), {"--health-test", t});
  if (!a_.health_test.empty())
    args.insert(args.end(), {"--health-interval-ms", std::to_string(a_.health_interval_ms), "--health-timeout-ms",
                             std::to_string(a_.health_timeout_ms), "--health-start-period-ms",
                             std::to_string(a_.health_start_ms), "--health-retries",
                             std::to_string(a_.health_retries)});
  args.push_back("--");
  args.insert(args.end(), a_.exit_command.begin(), a_.exit_command.end());
  std::vector<char*> argv;
  for (auto& s : args) argv.push_back(s.data());
  argv.push_back(nullptr);
  // SIGCHLD stays blocked across exec, and one already pending stays pending.
  ::execv(argv[0], argv.data());
  log::error(std::string("re-exec the monitor: ") + std::strerror(errno));
  // Carry on in this image: slower to live with, not wrong.
  for (auto* fd : {&out_, &err_, &in_, &master_, &listener_})
    if (*fd) ::fcntl(fd->get(), F_SETFD, FD_CLOEXEC);
  ::fcntl(a_.sync_fd, F_SETFD, FD_CLOEXEC);
  serve();
}

// What both images of the monitor do first: runtime warnings to the
// container's directory (not into its log), SIGCHLD through a signalfd, the
// attach clients and sync socket handed over at start taken.
void Monitor::setup_process() {
  log::init_lazy(a_.dir + "/monitor.log", log::Format::text, false);
  ignore_monitor_signals();
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  ::sigprocmask(SIG_BLOCK, &chld, nullptr);
  sigfd_.reset(::signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK));
  for (int fd : a_.client_fds) {
    ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    set_nonblock(fd);
    clients_.push_back(Client{UniqueFd(fd)});
  }
  for (int fd : a_.attach_fds) {
    ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    set_nonblock(fd);
    clients_.push_back(Client{UniqueFd(fd)});
    clients_.back().initial = true;
  }
  ::fcntl(a_.sync_fd, F_SETFD, FD_CLOEXEC);
}

// The container runs: its health timers start, then the loop until it exits.
void Monitor::begin_serving() {
  started_ms_ = a_.started_ms >= 0 ? a_.started_ms : now_ms();
  // Docker runs the first probe one interval after the start.
  next_probe_ms_ = a_.next_probe_ms >= 0 ? a_.next_probe_ms : started_ms_ + a_.health_interval_ms;
  if (!a_.health_status.empty()) health_ = a_.health_status;
  failing_streak_ = a_.health_streak;
  health_log_ = a_.health_log;
  // (--loop: the first image wrote it, and may have recorded a probe since.)
  if (!a_.loop && !a_.health_test.empty() && a_.health_test.front() != "NONE")
    (void)atomic_write_file(a_.dir + "/health.json", "{\"Status\":\"starting\",\"FailingStreak\":0,\"Log\":[]}\n", 0600);
  reap();
}

void Monitor::serve() {
  begin_serving();
  loop();
  drain();
  finish();
}

int Monitor::run() {
  setup_process();
  auto report = [&](const std::string& line) {
    std::string l = line + "\n";
    (void)write_fd(a_.sync_fd, l);
  };
  auto started = [&]() -> Result<> {
    if (!a_.log_path.empty()) {
      log_.emplace(TRY_CTX(LogWriter::open(a_.log_path, a_.log_max_size, a_.log_max_files, a_.log_lazy), "log " + a_.log_path));
    }
    // attach.sock is bound relative to the container directory (its
    // absolute path may be longer than a socket address holds), once the
    // container has lived past its first moments (listen_attach).
    if (::chdir(a_.dir.c_str()) < 0) return sys_error("chdir " + a_.dir);
    ::unlink("attach.sock");
    return start_container();
  }();
  if (!started) {
    // (A failure before the launch leaves the cgroup made early: gone too;
    // a spare network namespace it took, which a process of the failed
    // start may have entered, too.)
    if (!a_.cgroup_made.empty()) cgroup::remove_if_empty(a_.cgroup_made);
    if (a_.netns_slot >= 0) release_spare_netns(a_.netns_spares, a_.netns_slot, false);
    std::string msg = started.error().msg;
    for (char& ch : msg)
      if (ch == '\n') ch = ' ';
    report("error " + std::to_string(started.error().err) + " " + msg);
    ::unlink("attach.sock");
    return 1;
  }
  report("ok " + std::to_string(pid_));
  store_index_ = hold_store_index(store_root());
  // A foreground run's client waits for the container now, and a CPU is
  // idle: the next create's directory is made here, not by the remover
  // as the next `run` starts (where it took the CPU from that run's early
  // monitor). The remover still makes one if a slot is free then.
  // The network namespace it took from the spares (spare.h) is kept by its
  // slot until a maker's visit: made here for any run, so that a used
  // namespace does not outlive its container.
  if (!a_.attach_fds.empty() || !a_.netns_spares.empty()) {
    std::string parent = a_.attach_fds.empty() ? "" : a_.dir.substr(0, a_.dir.find_last_of('/'));
    try {
      spare_maker_ = std::thread([this, parent, netns = a_.netns_spares, pidfd = pidfd_.get()] {
        // Work for a later run: never in the way of this one's exit, nor of
        // the next run's start on the other CPU.
        struct sched_param idle = {};
        (void)::pthread_setschedparam(::pthread_self(), SCHED_IDLE, &idle);
        // (Only if none is ready: the container's directory is one once it
        // is gone, when it is left as made.)
        if (!parent.empty()) (void)make_spare(parent, true);
        if (netns.empty()) return;
        // A foreground run that is over within moments (`run --rm IMAGE
        // true`) has it made once its client is done (finish()): made here,
        // it ran through the container's exit and the client's cleanup, and
        // took the CPU from them (A/B: -0.06 and -0.15 ms a `run --rm`).
        if (!parent.empty() && pidfd >= 0) {
          struct pollfd p = {pidfd, POLLIN, 0};
          if (::poll(&p, 1, kSpareNetnsAfterMs) > 0) {
            netns_left_ = true;
            return;
          }
        }
        if (auto r = make_spare_netns(netns); !r) log::debug("spare network namespace: " + r.error().str());
      });
    } catch (const std::system_error&) {
    }
  }
  // A container that is done within moments (`run --rm IMAGE true`) is
  // served to its end by this image: the re-exec below would be on the path
  // of its exit. One that lives on gets the small image.
  begin_serving();
  loop(now_ms() + kRelaunchAfterMs);
  if (exited_) {
    drain();
    finish();
  }
  if (!listener_)
    if (auto r = listen_attach(); !r) log::error(r.error().str());
  relaunch();
}

// attach.sock: a container that is done within its first moments never has
// one (a socket is a new inode, some 150 us on a filesystem like this VM's);
// Engine::attach waits for it that long.
Result<> Monitor::listen_attach() {
  UniqueFd l(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  struct sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  std::strcpy(addr.sun_path, "attach.sock");
  if (!l || ::bind(l.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0 || ::listen(l.get(), 16) < 0)
    return sys_error("listen on attach.sock");
  listener_ = std::move(l);
  return {};
}

// The monitor's second image (--loop): the container runs; serve it.
int Monitor::resume() {
  setup_process();
  pid_ = a_.pid;
  auto take = [](int fd, UniqueFd& into) {
    if (fd < 0) return;
    ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    into.reset(fd);
  };
  take(a_.out_fd, out_), take(a_.err_fd, err_), take(a_.in_fd, in_), take(a_.master_fd, master_);
  take(a_.listen_fd, listener_);
  store_index_ = hold_store_index(store_root());
  if (!a_.log_path.empty())
    if (auto w = LogWriter::open(a_.log_path, a_.log_max_size, a_.log_max_files, a_.log_lazy); w) log_.emplace(std::move(*w));
  serve();
}

}  // namespace

// `berth-monitor exec`: `berth exec` becomes this (it execs it in place), so
// the process that joins the container runs from a sealed copy of this small
// static binary and calls the runtime core's exec.
//   berth-monitor exec --runtime-root DIR --id ID [--tty] [--detach] [--env K=V]...
//                 [--cwd DIR] [--user UID:GID] [--gid GID]... [--cap CAP]... -- CMD ARGS...
int exec_main(int argc, char** argv) {
  runtime::reexec_sealed(argv, "berth-monitor");
  runtime::Globals g;
  runtime::ExecOptions o;
  int i = 2;
  for (; i < argc; ++i) {
    std::string f = argv[i];
    if (f == "--") {
      ++i;
      break;
    }
    bool has_value = i + 1 < argc;
    if (f == "--tty") o.tty = true;
    else if (f == "--detach") o.detach = true;
    else if (f == "--runtime-root" && has_value) g.root = argv[++i];
    else if (f == "--id" && has_value) o.id = argv[++i];
    else if (f == "--env" && has_value) o.env.emplace_back(argv[++i]);
    else if (f == "--cwd" && has_value) o.cwd = argv[++i];
    else if (f == "--user" && has_value) o.user = argv[++i];
    else if (f == "--gid" && has_value) o.additional_gids.emplace_back(argv[++i]);
    else if (f == "--cap" && has_value) o.caps.emplace_back(argv[++i]);
    else {
      std::fprintf(stderr, "berth-monitor exec: bad flag %s\n", f.c_str());
      return 125;
    }
  }
  for (; i < argc; ++i) o.args.emplace_back(argv[i]);
  if (!g.root.empty()) g.seccomp_cache = g.root + "/../seccomp-cache";
  auto r = runtime::exec(g, o);
  if (r) return *r;
  std::string m = r.error().str();
  std::fprintf(stderr, "berth: %s\n", m.c_str());
  // Docker's statuses for a command that could not run.
  if (m.find("exec: ") != std::string::npos) {
    if (m.find("not found") != std::string::npos || m.find("No such file") != std::string::npos) return 127;
    if (m.find("ermission denied") != std::string::npos) return 126;
  }
  return 125;
}

namespace {

// The sync socket's fd in an early monitor's arguments, or -1.
int sync_fd_of(const std::vector<std::string>& args) {
  for (size_t i = 0; i + 1 < args.size(); ++i)
    if (args[i] == "--sync-fd") return std::atoi(args[i + 1].c_str());
  return -1;
}

// One frame of an early monitor's sync socket (monitor.h): false if the
// socket ended first or the frame is malformed.
bool read_frame(int fd, std::string& kind, std::string& body) {
  auto read_all = [fd](char* p, size_t n) {
    for (size_t got = 0; got < n;) {
      ssize_t r = ::read(fd, p + got, n - got);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return false;
      got += static_cast<size_t>(r);
    }
    return true;
  };
  char head[17] = {};
  if (!read_all(head, 16) || head[4] != ' ' || head[15] != '\n') return false;
  char* end = nullptr;
  size_t want = std::strtoull(head + 5, &end, 10);
  if (end != head + 15 || want > kEarlyArgsMax) return false;
  kind.assign(head, 4);
  body.assign(want, '\0');
  return read_all(body.data(), want);
}

// NUL-ended arguments (an "args" or "erly" frame's body) appended to `args`.
bool append_args(std::vector<std::string>& args, const std::string& body) {
  if (body.empty()) return true;  // (an "erly" frame of a detached run with no early work)
  if (body.back() != '\0') return false;
  for (size_t at = 0; at < body.size();) {
    size_t end = body.find('\0', at);
    args.emplace_back(body, at, end - at);
    at = end + 1;
  }
  return true;
}

// The command line follows the spec within a millisecond or so: waited for
// on the CPU, yielding it to anything else that wants it, rather than asleep.
// This VM's idle CPU halts, and a halted CPU took 0.1-0.3 ms to run the
// monitor again once the frame came (traced).
void spin_for_input(int fd) {
  struct timespec start, now;
  ::clock_gettime(CLOCK_MONOTONIC, &start);
  for (;;) {
    struct pollfd p = {fd, POLLIN, 0};
    if (::poll(&p, 1, 0) != 0) return;
    ::clock_gettime(CLOCK_MONOTONIC, &now);
    if ((now.tv_sec - start.tv_sec) * 1000000000L + (now.tv_nsec - start.tv_nsec) > 2000000L) return;
    ::sched_yield();
  }
}

// --args-on-sync (EarlyMonitor): the rest of the command line comes on the
// sync socket (monitor.h). Appended to ours; false if the socket ended first
// (the command that started us gave up: we exit without a word).
// `widen` runs once the CLI is about to wait for us: when its spec has come
// (the args follow as the CLI finishes the create), or else with the args.
bool read_args_on_sync(std::vector<std::string>& args, std::string& spec_text, std::optional<oci::Spec>& spec,
                       const std::function<void()>& widen, const std::function<void()>& on_spec) {
  int fd = sync_fd_of(args);
  if (fd < 0) return false;
  for (bool have_spec = false;;) {
    std::string kind, body;
    if (!read_frame(fd, kind, body)) return false;
    if (kind == "spec" && !have_spec) {
      widen();
      // Parsed now, while the CLI finishes the create; one that does not
      // parse is left to the start, which reads the file and says why.
      have_spec = true;
      if (auto s = oci::parse_spec(body); s) spec.emplace(std::move(*s)), spec_text = std::move(body), on_spec();
      spin_for_input(fd);
      continue;
    }
    if (!have_spec) widen();
    return kind == "args" && append_args(args, body);
  }
}

// --cgroup-early PATH: the container's cgroup (cgroupfs driver), made empty
// while the CLI creates the container, so the start only limits it
// (runtime::CreateOptions::cgroup_made), and the host's cgroup layout it
// found (CreateOptions::cgroup_layout: not read twice). The device rules of
// a container without --device or --privileged go on it too (ten v1 writes,
// or v2's eBPF program): the start, finding its own the same, leaves them
// (CreateOptions::cgroup_devices_applied). Nothing if it could not be made
// (the start then makes it as usual).
struct EarlyCgroup {
  cgroup::Layout layout;
  std::optional<std::vector<oci::DeviceCgroupRule>> devices;
};
std::optional<EarlyCgroup> make_cgroup_early(const std::string& path) {
  auto layout = cgroup::detect_layout();
  if (!layout) return std::nullopt;
  auto m = cgroup::open(*layout, path);
  if (!m || !(*m)->create(nullptr)) return std::nullopt;
  EarlyCgroup made{std::move(*layout), std::nullopt};
  oci::Resources res;
  res.devices = base_device_rules(false);
  runtime::add_default_device_rules(res, oci::Spec{});
  if ((*m)->apply(res)) made.devices = std::move(res.devices);
  return made;
}

}  // namespace

int monitor_main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "exec") return exec_main(argc, argv);
  std::vector<std::string> early;
  std::vector<char*> early_argv;
  UniqueFd netns;
  std::string cgroup_path, spec_text, netns_spares;
  int netns_slot = -1;
  std::optional<EarlyCgroup> early_cgroup;
  std::optional<oci::Spec> spec;
  runtime::PreparedLaunch prepared;
  std::string prepare_root, prepare_dir;
  if (argc > 1 && std::string(argv[1]) == "--args-on-sync") {
    // (The CLI's thread that spawned us, woken on this CPU as we exec'd, is
    // moved to the CLI's own before it is joined: EarlyMonitor::spawned().
    // Yielding to it here also gave this CPU to the last run's remover, for
    // 0.15-0.75 ms in half the runs.)
    std::vector<std::string> opts(argv + 2, argv + argc);
    ignore_monitor_signals();
    // --early-on-sync: spawned before the CLI had parsed its command line,
    // the rest of the early options come first on the socket (an "erly"
    // frame); fd 4 is the starting client's socket only if they say so.
    bool on_sync = std::find(opts.begin(), opts.end(), "--early-on-sync") != opts.end();
    if (on_sync) {
      std::string kind, body;
      int fd = sync_fd_of(opts);
      if (fd < 0 || !read_frame(fd, kind, body) || kind != "erly" || !append_args(opts, body)) return 0;
      if (std::find(opts.begin(), opts.end(), "--attach-fd") == opts.end()) ::close(4);
    }
    early.emplace_back(argv[0]);
    bool make_netns = false;
    std::string cpus_after;
    for (size_t i = 0; i < opts.size(); ++i) {
      if (opts[i] == "--early-on-sync") continue;
      if (opts[i] == "--netns-early") make_netns = true;
      else if (opts[i] == "--netns-spares" && i + 1 < opts.size()) netns_spares = opts[++i];
      else if (opts[i] == "--cgroup-early" && i + 1 < opts.size()) cgroup_path = opts[++i];
      else if (opts[i] == "--cpus-after" && i + 1 < opts.size()) cpus_after = opts[++i];
      else early.emplace_back(opts[i]);
    }
    // The state root (the CLI's erly frame) and the directory: the start's
    // first steps are made as the spec comes (prepare_early below).
    std::string prepare_id;
    for (size_t i = 1; i + 1 < early.size(); ++i) {
      if (early[i] == "--runtime-root") prepare_root = early[i + 1];
      else if (early[i] == "--dir") prepare_dir = early[i + 1];
      else if (early[i] == "--id") prepare_id = early[i + 1];
    }
    // The container's network namespace, made while the CLI creates the
    // container (on the other CPU, the slowest namespace to make): unused,
    // as when the container turns out to need none, it goes with us.
    // One made ahead by the last run's monitor if there is one (spare.h).
    if (make_netns && !netns_spares.empty()) netns = claim_spare_netns(netns_spares, &netns_slot);
    if (make_netns && !netns) {
      if (auto n = runtime::make_netns(); n) netns = std::move(*n);
      else log::debug(n.error().str());
    }
    if (!cgroup_path.empty() && !(early_cgroup = make_cgroup_early(cgroup_path))) cgroup_path.clear();
    // Born away from the CLI's CPU (EarlyMonitor::spawn), where its spec is
    // read at once; then the container gets every CPU it may use. Widened
    // as the spec comes, not with the args: the affinity change often let
    // another task have this CPU for a while (0.15 ms in half the runs,
    // traced), then on the start's path, now beside the create's end.
    auto widen = [&cpus_after] {
      if (cpus_after.empty()) return;
      if (auto r = runtime::apply_cpu_affinity(cpus_after, "--cpus-after"); !r) log::debug(r.error().str());
      cpus_after.clear();
    };
    // The start's steps that need only the spec (runtime::prepare_launch:
    // its seccomp program, state directory, cgroup taken over, namespaces
    // planned), made while the CLI finishes the create and writes the row,
    // off the start's path (~0.25 ms of it here). The container's directory
    // has its name only once the row is in: nothing of it is looked at yet.
    // One that fails is dropped: the start does it all again and says why.
    auto prepare_early = [&] {
      if (prepare_root.empty() || prepare_dir.empty() || prepare_id.empty()) return;
      runtime::CreateOptions o = start_options(
          prepare_id, prepare_dir, netns ? netns.get() : -1, cgroup_path, early_cgroup ? &early_cgroup->layout : nullptr,
          early_cgroup && early_cgroup->devices ? &*early_cgroup->devices : nullptr);
      o.config_spec = &*spec;
      o.config_text = &spec_text;
      auto made = runtime::prepare_launch(start_globals(prepare_root), o);
      spec.reset();  // (taken by the preparation, whether it was made or not)
      if (!made) {
        log::debug("early start: " + made.error().str());
        return;
      }
      prepared = std::move(*made);
    };
    if (!read_args_on_sync(early, spec_text, spec, widen, prepare_early)) {
      prepared.reset();  // (its state directory, and the cgroup it took over)
      if (!cgroup_path.empty()) cgroup::remove_if_empty(cgroup_path);
      if (netns_slot >= 0) release_spare_netns(netns_spares, netns_slot, true);
      return 0;
    }
    for (auto& s : early) early_argv.push_back(s.data());
    early_argv.push_back(nullptr);
    argc = static_cast<int>(early.size());
    argv = early_argv.data();
  }
  auto a = parse_args(argc, argv);
  if (!a) {
    std::fprintf(stderr, "berth-monitor: %s\n", a.error().str().c_str());
    prepared.reset();
    if (!cgroup_path.empty()) cgroup::remove_if_empty(cgroup_path);
    if (netns_slot >= 0) release_spare_netns(netns_spares, netns_slot, true);
    return 2;
  }
  // Closed once the container has started (start_container).
  a->netns_fd = netns.release();
  if (a->netns_fd >= 0) a->netns_spares = std::move(netns_spares), a->netns_slot = netns_slot;
  a->cgroup_made = cgroup_path;
  if (early_cgroup) {
    a->cgroup_layout = std::move(early_cgroup->layout);
    a->cgroup_devices = std::move(early_cgroup->devices);
  }
  a->spec_text = std::move(spec_text);
  a->spec = std::move(spec);
  if (prepared) a->prepared = std::move(prepared), a->prepared_root = prepare_root, a->prepared_dir = prepare_dir;
  bool loop = a->loop;
  Monitor m(std::move(*a));
  return loop ? m.resume() : m.run();
}

}  // namespace berth::engine
