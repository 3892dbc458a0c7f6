#include "harness.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#ifndef BERTH_IT_RUNTIME
#error "BERTH_IT_RUNTIME must be defined (path of berth-runtime)"
#endif
#ifndef BERTH_IT_HELPER
#error "BERTH_IT_HELPER must be defined (path of berth-test-helper)"
#endif

namespace berth::it {

namespace {

// A child that inherits an ignored SIGPIPE keeps it ignored across exec: the
// children reset it. Ignored here so a test never dies writing to a closed pipe.
[[maybe_unused]] const bool kSigpipeIgnored = [] {
  ::signal(SIGPIPE, SIG_IGN);
  return true;
}();

int pidfd_open(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

std::string env_or(const char* name, const char* def) {
  const char* v = ::getenv(name);
  return v && *v ? v : def;
}

std::string shorten(const std::string& s, size_t max = 4000) {
  if (s.size() <= max) return s;
  return s.substr(0, max) + "...[" + std::to_string(s.size() - max) + " more bytes]";
}

int test_counter = 0;

struct MountEntry {
  std::string mountpoint, fstype, super_opts;
};

std::string unescape_mountinfo(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      int v = 0;
      bool ok = true;
      for (int k = 1; k <= 3; ++k) {
        if (i + k >= s.size() || s[i + k] < '0' || s[i + k] > '7') ok = false;
        else v = v * 8 + (s[i + k] - '0');
      }
      if (ok) {
        out += static_cast<char>(v);
        i += 3;
        continue;
      }
    }
    out += s[i];
  }
  return out;
}

std::vector<MountEntry> host_mounts() {
  std::vector<MountEntry> out;
  for (auto& line : split_lines(read_file("/proc/self/mountinfo"))) {
    std::istringstream is(line);
    std::vector<std::string> f;
    std::string w;
    while (is >> w) f.push_back(w);
    size_t dash = 0;
    for (size_t i = 6; i < f.size(); ++i)
      if (f[i] == "-") {
        dash = i;
        break;
      }
    if (dash == 0 || dash + 3 >= f.size()) continue;
    MountEntry e;
    e.mountpoint = unescape_mountinfo(f[4]);
    e.fstype = f[dash + 1];
    e.super_opts = f[dash + 3];
    out.push_back(e);
  }
  return out;
}

std::vector<std::string> cgroup_roots() {
  std::vector<std::string> out;
  for (auto& m : host_mounts())
    if ((m.fstype == "cgroup" || m.fstype == "cgroup2") && m.mountpoint.rfind("/sys/fs/cgroup", 0) == 0)
      out.push_back(m.mountpoint);
  return out;
}

void copy_file(const std::string& from, const std::string& to, mode_t mode) {
  std::string data = read_file(from);
  if (data.empty()) throw std::runtime_error("cannot read " + from);
  write_file(to, data, mode);
  ::chmod(to.c_str(), mode);
}

int rm_entry(const char* p, const struct stat*, int type, struct FTW*) {
  if (type == FTW_DP)
    ::rmdir(p);
  else
    ::unlink(p);
  return 0;
}

void remove_tree(const std::string& dir) {
  // Physical walk that stays on the temp dir's filesystem: never follows a link a
  // hostile rootfs planted and never descends into something mounted there.
  ::nftw(dir.c_str(), rm_entry, 32, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

std::vector<pid_t> cgroup_procs(const std::string& dir) {
  std::vector<pid_t> out;
  for (auto& l : split_lines(read_file(dir + "/cgroup.procs")))
    if (!l.empty()) out.push_back(static_cast<pid_t>(std::atoi(l.c_str())));
  return out;
}

// Removes a cgroup dir of ours and everything beneath it. Processes still in
// it were started by this test (through the runtime): thawed and killed.
void remove_cgroup_tree(const std::string& dir) {
  if (DIR* d = ::opendir(dir.c_str())) {
    std::vector<std::string> subs;
    while (auto* e = ::readdir(d)) {
      if (e->d_type != DT_DIR || !std::strcmp(e->d_name, ".") || !std::strcmp(e->d_name, "..")) continue;
      subs.push_back(dir + "/" + e->d_name);
    }
    ::closedir(d);
    for (auto& s : subs) remove_cgroup_tree(s);
  }
  if (::rmdir(dir.c_str()) == 0 || errno == ENOENT) return;
  if (exists(dir + "/freezer.state")) write_file(dir + "/freezer.state", "THAWED");
  if (exists(dir + "/cgroup.freeze")) write_file(dir + "/cgroup.freeze", "0");
  for (pid_t p : cgroup_procs(dir)) ::kill(p, SIGKILL);
  wait_until([&] { return ::rmdir(dir.c_str()) == 0 || errno == ENOENT; }, 5, 0.05);
}

}  // namespace

const std::string& runtime_path() {
  static const std::string p = env_or("BERTH_IT_RUNTIME", BERTH_IT_RUNTIME);
  return p;
}
const std::string& helper_path() {
  static const std::string p = env_or("BERTH_IT_HELPER", BERTH_IT_HELPER);
  return p;
}
const std::string& busybox_path() {
  static const std::string p = env_or("BERTH_IT_BUSYBOX", "/bin/busybox");
  return p;
}

// ------------------------------------------------------------- processes --

std::string ProcResult::desc() const {
  std::string s = cmdline + "\n  -> ";
  if (timed_out)
    s += "TIMED OUT (killed)";
  else
    s += "exit " + std::to_string(code);
  s += "\n  stdout: " + shorten(out) + "\n  stderr: " + shorten(err);
  return s;
}

Proc spawn(const std::vector<std::string>& argv, const std::string& out_path, const std::string& err_path,
           const SpawnOptions& o) {
  Proc p;
  p.out_path = out_path;
  p.err_path = err_path;
  for (auto& a : argv) p.cmdline += (p.cmdline.empty() ? "" : " ") + a;
  int ofd = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  int efd = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  int nfd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (ofd < 0 || efd < 0 || nfd < 0) throw std::runtime_error("spawn: cannot open output files");
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    // Only async-signal-safe calls from here on.
    if (!o.cwd.empty() && ::chdir(o.cwd.c_str()) < 0) _exit(126);
    int tmp[64];
    size_t n = o.fds.size() < 64 ? o.fds.size() : 64;
    for (size_t i = 0; i < n; ++i) tmp[i] = ::fcntl(o.fds[i].first, F_DUPFD_CLOEXEC, 200);
    ::dup2(nfd, 0);
    ::dup2(ofd, 1);
    ::dup2(efd, 2);
    for (size_t i = 0; i < n; ++i)
      if (tmp[i] >= 0) ::dup2(tmp[i], o.fds[i].second);
    struct sigaction sa;
    std::memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    for (int s = 1; s < NSIG; ++s) ::sigaction(s, &sa, nullptr);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execv(args[0], args.data());
    _exit(127);
  }
  ::close(ofd);
  ::close(efd);
  ::close(nfd);
  p.pid = pid;
  p.pidfd = pidfd_open(pid);
  return p;
}

bool Proc::running() const {
  if (pid <= 0) return false;
  siginfo_t si;
  std::memset(&si, 0, sizeof si);
  if (::waitid(P_PID, static_cast<id_t>(pid), &si, WEXITED | WNOHANG | WNOWAIT) < 0) return false;
  return si.si_pid == 0;
}

ProcResult Proc::wait(double timeout_s) {
  ProcResult r;
  r.cmdline = cmdline;
  r.out_path = out_path;
  r.err_path = err_path;
  if (pid <= 0) return r;
  if (pidfd >= 0) {
    struct pollfd pfd = {pidfd, POLLIN, 0};
    int n;
    do {
      n = ::poll(&pfd, 1, static_cast<int>(timeout_s * 1000));
    } while (n < 0 && errno == EINTR);
    if (n == 0) {
      r.timed_out = true;
      ::kill(pid, SIGKILL);
    }
  } else {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    while (running() && std::chrono::steady_clock::now() < deadline) sleep_ms(10);
    if (running()) {
      r.timed_out = true;
      ::kill(pid, SIGKILL);
    }
  }
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(st)) r.code = WEXITSTATUS(st);
  if (WIFSIGNALED(st)) r.code = 128 + WTERMSIG(st);
  if (pidfd >= 0) ::close(pidfd);
  pidfd = -1;
  pid = -1;
  r.out = read_file(out_path);
  r.err = read_file(err_path);
  return r;
}

ProcResult run(const std::vector<std::string>& argv, const std::string& out_path, const std::string& err_path,
               const SpawnOptions& o) {
  Proc p = spawn(argv, out_path, err_path, o);
  return p.wait(o.timeout_s);
}

// ----------------------------------------------------------------- utils --

std::string read_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  std::string s;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    s.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return s;
}

bool exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

void write_file(const std::string& path, const std::string& data, mode_t mode) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) throw std::runtime_error("write_file " + path + ": " + std::strerror(errno));
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    off += static_cast<size_t>(n);
  }
  ::close(fd);
}

void mkdirs(const std::string& path, mode_t mode) {
  std::string cur;
  for (size_t i = 0; i <= path.size(); ++i) {
    if (i == path.size() || (path[i] == '/' && i > 0)) {
      cur = path.substr(0, i);
      if (::mkdir(cur.c_str(), mode) < 0 && errno != EEXIST)
        throw std::runtime_error("mkdir " + cur + ": " + std::strerror(errno));
    }
  }
}

std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t\r\n");
  if (a == std::string::npos) return "";
  size_t b = s.find_last_not_of(" \t\r\n");
  return s.substr(a, b - a + 1);
}

std::vector<std::string> split_lines(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (c == '\n') {
      if (!cur.empty() && cur.back() == '\r') cur.pop_back();
      out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

bool contains(const std::string& hay, const std::string& needle) { return hay.find(needle) != std::string::npos; }

int count_of(const std::string& hay, const std::string& needle) {
  int n = 0;
  for (size_t p = hay.find(needle); p != std::string::npos; p = hay.find(needle, p + needle.size())) ++n;
  return n;
}

void sleep_ms(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

bool wait_until(const std::function<bool()>& pred, double timeout_s, double interval_s) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  for (;;) {
    if (pred()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::duration<double>(interval_s));
  }
}

std::string readlink_str(const std::string& path) {
  char buf[4096];
  ssize_t n = ::readlink(path.c_str(), buf, sizeof buf - 1);
  if (n < 0) return "";
  return std::string(buf, static_cast<size_t>(n));
}

bool pid_alive(pid_t pid) {
  if (pid <= 0) return false;
  std::string st = read_file("/proc/" + std::to_string(pid) + "/stat");
  if (st.empty()) return false;
  auto close = st.rfind(')');
  if (close == std::string::npos || close + 2 >= st.size()) return false;
  char s = st[close + 2];
  return s != 'Z' && s != 'X';
}

std::string sha256_of(const std::string& path) {
  char out[] = "/tmp/berth-it-sha-XXXXXX";
  int fd = ::mkstemp(out);
  if (fd < 0) return "";
  ::close(fd);
  auto r = run({"/usr/bin/sha256sum", path}, out, "/dev/null");
  ::unlink(out);
  if (r.code != 0) return "";
  return r.out.substr(0, r.out.find(' '));
}

std::string kv(const std::string& text, const std::string& key) {
  for (auto& l : split_lines(text)) {
    // key=value may appear after other fields on the line ("a=1 b=2").
    size_t pos = 0;
    while ((pos = l.find(key + "=", pos)) != std::string::npos) {
      if (pos == 0 || l[pos - 1] == ' ') {
        std::string v = l.substr(pos + key.size() + 1);
        return v;
      }
      pos += key.size();
    }
  }
  return "";
}

std::string status_field(const std::string& text, const std::string& key) {
  for (auto& l : split_lines(text))
    if (l.rfind(key + ":", 0) == 0) return trim(l.substr(key.size() + 1));
  return "";
}

// ---------------------------------------------------------------- bundle --

void Bundle::save() const { write_file(dir + "/config.json", config.dump(2)); }

void Bundle::args(const std::vector<std::string>& a) { config["process"]["args"] = a; }

void Bundle::drop_mount(const std::string& dest) {
  json keep = json::array();
  for (auto& m : config["mounts"])
    if (m.value("destination", "") != dest) keep.push_back(m);
  config["mounts"] = keep;
}

void Bundle::remove_namespace(const std::string& type) {
  json keep = json::array();
  for (auto& n : config["linux"]["namespaces"])
    if (n.value("type", "") != type) keep.push_back(n);
  config["linux"]["namespaces"] = keep;
}

void Bundle::add_namespace(const json& ns) {
  remove_namespace(ns.at("type").get<std::string>());
  config["linux"]["namespaces"].push_back(ns);
}

int listen_unix(const std::string& p) {
  int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un a = {};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, p.c_str(), sizeof a.sun_path - 1);
  if (::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0 || ::listen(s, 4) < 0) {
    ::close(s);
    return -1;
  }
  return s;
}

int recv_fd_from(int listener, int timeout_ms, std::string* payload) {
  struct pollfd p = {listener, POLLIN, 0};
  if (::poll(&p, 1, timeout_ms) <= 0) return -1;
  int c = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
  if (c < 0) return -1;
  char data[8192];
  struct iovec iov = {data, sizeof data};
  alignas(struct cmsghdr) char ctrl[CMSG_SPACE(sizeof(int))];
  struct msghdr m = {};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = ctrl;
  m.msg_controllen = sizeof ctrl;
  struct pollfd q = {c, POLLIN, 0};
  int fd = -1;
  ssize_t n = -1;
  if (::poll(&q, 1, timeout_ms) > 0 && (n = ::recvmsg(c, &m, MSG_CMSG_CLOEXEC)) >= 0) {
    if (payload) payload->assign(data, static_cast<size_t>(n));
    for (auto* cm = CMSG_FIRSTHDR(&m); cm; cm = CMSG_NXTHDR(&m, cm))
      if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) std::memcpy(&fd, CMSG_DATA(cm), sizeof fd);
  }
  ::close(c);
  return fd;
}


// ------------------------------------------------------------------ fixture --

void BerthTest::SetUp() {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root";
  if (!exists(busybox_path())) GTEST_SKIP() << "needs " << busybox_path() << " (apt-get install busybox-static)";
  if (!exists(runtime_path())) GTEST_SKIP() << "berth-runtime not built at " << runtime_path();
  if (!exists(helper_path())) GTEST_SKIP() << "berth-test-helper not built at " << helper_path();
  char t[] = "/tmp/berth-it-XXXXXX";
  ASSERT_NE(::mkdtemp(t), nullptr) << std::strerror(errno);
  tmp_ = t;
  ::chmod(tmp_.c_str(), 0711);
  root_ = tmp_ + "/state";
  runtime_ = runtime_path();
  cg_prefix_ = "/berth-it-" + std::to_string(::getpid()) + "-" + std::to_string(++test_counter);
}

void BerthTest::TearDown() {
  if (tmp_.empty()) return;
  // Children we started and that still run (a foreground run, a create that
  // hangs): ours to kill.
  for (auto& p : procs_)
    if (p.pid > 0) {
      if (p.running()) ::kill(p.pid, SIGKILL);
      p.wait(5);
    }
  procs_.clear();
  for (int fd : fds_) ::close(fd);
  fds_.clear();
  // Every container in our --root.
  if (DIR* d = ::opendir(root_.c_str())) {
    std::vector<std::string> ids;
    while (auto* e = ::readdir(d))
      if (e->d_name[0] != '.') ids.emplace_back(e->d_name);
    ::closedir(d);
    for (auto& id : ids) {
      auto r = rt({"delete", "--force", id}, {.fds = {}, .timeout_s = 20, .cwd = ""});
      if (r.code != 0) std::fprintf(stderr, "[teardown] %s\n", r.desc().c_str());
    }
  }
  cleanup_cgroups();
  for (auto it = mounts_.rbegin(); it != mounts_.rend(); ++it) ::umount2(it->c_str(), MNT_DETACH);
  mounts_.clear();
  remove_tree(tmp_);
  if (exists(tmp_)) std::fprintf(stderr, "[teardown] could not remove %s\n", tmp_.c_str());
  tmp_.clear();
}

void BerthTest::cleanup_cgroups() {
  for (auto& r : cgroup_roots()) {
    std::string dir = r + cg_prefix_;
    if (exists(dir)) remove_cgroup_tree(dir);
  }
}

std::string BerthTest::new_out_file(const std::string& tag) { return tmp_ + "/io-" + std::to_string(++seq_) + "-" + tag; }

Bundle& BerthTest::make_bundle(const std::string& id, const std::vector<std::string>& args, bool save) {
  Bundle b;
  b.id = id;
  std::string name = id;
  for (auto& c : name)
    if (c == '/' || c == '.') c = '_';
  b.dir = tmp_ + "/b-" + name;
  b.rootfs = b.dir + "/rootfs";
  b.cgroup_path = cg_prefix_ + "/" + name;
  mkdirs(b.rootfs, 0755);
  ::chmod(b.dir.c_str(), 0755);
  ::chmod(b.rootfs.c_str(), 0755);
  for (const char* d : {"bin", "proc", "sys", "dev", "etc", "tmp", "root", "var", "mnt"})
    ::mkdir((b.rootfs + "/" + d).c_str(), 0755);
  ::chmod((b.rootfs + "/tmp").c_str(), 01777);
  ::chmod((b.rootfs + "/root").c_str(), 0700);
  copy_file(busybox_path(), b.rootfs + "/bin/busybox", 0755);
  copy_file(helper_path(), b.rootfs + "/bin/berth-test-helper", 0755);
  for (const char* a : {"sh", "cat", "echo", "mkdir", "sleep", "usleep", "ls", "true", "false", "touch", "rm",
                        "id", "env", "hostname", "readlink", "kill", "test", "printf", "wc", "grep", "head", "stat",
                        "seq", "uname", "rmdir"})
    ::symlink("busybox", (b.rootfs + "/bin/" + a).c_str());
  write_file(b.rootfs + "/etc/passwd",
             "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n");
  write_file(b.rootfs + "/etc/group", "root:x:0:\nnogroup:x:65534:\n");

  auto r = run({runtime_, "spec", "--bundle", b.dir}, new_out_file("spec.out"), new_out_file("spec.err"));
  if (r.code != 0) throw std::runtime_error("spec failed: " + r.desc());
  b.config = json::parse(read_file(b.dir + "/config.json"));
  b.config["process"]["terminal"] = false;
  b.config["process"]["args"] = args;
  b.config["linux"]["cgroupsPath"] = b.cgroup_path;
  if (save) b.save();
  bundles_.push_back(std::move(b));
  return bundles_.back();
}

ProcResult BerthTest::rt(const std::vector<std::string>& args, const SpawnOptions& o) {
  Proc p = rt_spawn(args, o);
  return p.wait(o.timeout_s);
}

Proc BerthTest::rt_spawn(const std::vector<std::string>& args, const SpawnOptions& o) {
  std::vector<std::string> argv = {runtime_, "--root", root_};
  argv.insert(argv.end(), args.begin(), args.end());
  std::string tag = args.empty() ? "rt" : args[0];
  return spawn(argv, new_out_file(tag + ".out"), new_out_file(tag + ".err"), o);
}

ProcResult BerthTest::create(Bundle& b, const std::vector<std::string>& extra, const SpawnOptions& o) {
  std::vector<std::string> a = {"create", "--bundle", b.dir};
  a.insert(a.end(), extra.begin(), extra.end());
  a.push_back(b.id);
  return rt(a, o);
}

ProcResult BerthTest::run_fg(Bundle& b, const std::vector<std::string>& extra, const SpawnOptions& o) {
  std::vector<std::string> a = {"run", "--bundle", b.dir};
  a.insert(a.end(), extra.begin(), extra.end());
  a.push_back(b.id);
  return rt(a, o);
}

ProcResult BerthTest::create_and_start(Bundle& b, const std::vector<std::string>& extra) {
  auto c = create(b, extra);
  EXPECT_EQ(c.code, 0) << c.desc();
  if (c.code != 0) return c;
  auto s = rt({"start", b.id});
  EXPECT_EQ(s.code, 0) << s.desc();
  if (s.code != 0) c.code = s.code;
  return c;
}

std::optional<json> BerthTest::state(const std::string& id, std::string* err) {
  auto r = rt({"state", id});
  if (r.code != 0) {
    if (err) *err = r.err;
    return std::nullopt;
  }
  try {
    return json::parse(r.out);
  } catch (const std::exception& e) {
    if (err) *err = std::string("unparsable state: ") + e.what() + ": " + r.out;
    return std::nullopt;
  }
}

std::string BerthTest::status(const std::string& id) {
  auto s = state(id);
  if (!s) return "";
  return s->value("status", "");
}

bool BerthTest::wait_status(const std::string& id, const std::string& want, double timeout_s) {
  return wait_until([&] { return status(id) == want; }, timeout_s, 0.05);
}

pid_t BerthTest::init_pid(const std::string& id) {
  auto s = state(id);
  if (!s) return -1;
  return s->value("pid", -1);
}

std::vector<std::string> BerthTest::cgroup_dirs(const std::string& cgpath) const {
  std::vector<std::string> out;
  for (auto& r : cgroup_roots())
    if (exists(r + cgpath)) out.push_back(r + cgpath);
  return out;
}

bool BerthTest::cgroup_v1(const std::string& controller) const {
  for (auto& m : host_mounts()) {
    if (m.fstype != "cgroup") continue;
    for (auto& o : split_lines([&] {
           std::string s = m.super_opts;
           for (auto& c : s)
             if (c == ',') c = '\n';
           return s;
         }()))
      if (o == controller) return true;
  }
  return false;
}

std::string BerthTest::cgroup_file(const std::string& controller, const std::string& cgpath,
                                   const std::string& file) const {
  for (auto& m : host_mounts()) {
    if (m.fstype != "cgroup") continue;
    std::string s = "," + m.super_opts + ",";
    if (contains(s, "," + controller + ",")) return m.mountpoint + cgpath + "/" + file;
  }
  for (auto& m : host_mounts())
    if (m.fstype == "cgroup2" && m.mountpoint.rfind("/sys/fs/cgroup", 0) == 0)
      return m.mountpoint + cgpath + "/" + file;
  return "";
}

std::vector<std::string> BerthTest::root_entries() const {
  std::vector<std::string> out;
  if (DIR* d = ::opendir(root_.c_str())) {
    while (auto* e = ::readdir(d))
      if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, "..")) out.emplace_back(e->d_name);
    ::closedir(d);
  }
  return out;
}

}  // namespace berth::it
