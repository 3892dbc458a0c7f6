// sys::clone3_fn, the trampoline behind the runtime's vfork-style starts: the
// child runs on its own stack in our memory, we sleep until it execs or exits.
#include <gtest/gtest.h>
#include <linux/sched.h>
#include <sys/mman.h>
#include <dirent.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "util/exit.h"
#include "util/syscalls.h"

namespace {

struct Shared {
  int written = 0;
  int code = 0;
  const char* exe = nullptr;
};

struct Stack {
  static constexpr size_t kSize = 256 << 10;
  void* p = ::mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  ~Stack() { ::munmap(p, kSize); }
};

int writes_and_exits(void* arg) {
  auto* s = static_cast<Shared*>(arg);
  s->written = 42;
  return s->code;
}

int execs(void* arg) {
  auto* s = static_cast<Shared*>(arg);
  s->written = 7;
  char* argv[] = {const_cast<char*>(s->exe), nullptr};
  ::execv(s->exe, argv);
  return 127;
}

long start(Shared* s, int (*fn)(void*), Stack& st) {
  struct clone_args ca = {};
  ca.flags = CLONE_VM | CLONE_VFORK;
  ca.exit_signal = SIGCHLD;
  ca.stack = reinterpret_cast<uint64_t>(st.p);
  ca.stack_size = Stack::kSize;
  return berth::sys::clone3_fn(&ca, fn, s);
}

}  // namespace

TEST(Clone3Fn, ChildSharesMemoryAndItsExitCodeIsReaped) {
  Stack st;
  ASSERT_NE(st.p, MAP_FAILED);
  Shared s;
  s.code = 3;
  long pid = start(&s, writes_and_exits, st);
  if (pid < 0 && errno == ENOSYS) GTEST_SKIP() << "no clone3 trampoline on this architecture";
  ASSERT_GT(pid, 0) << std::strerror(errno);
  // CLONE_VFORK: the child has run to its end by the time we get here.
  EXPECT_EQ(s.written, 42);
  int ws = 0;
  ASSERT_EQ(::waitpid(static_cast<pid_t>(pid), &ws, 0), pid);
  ASSERT_TRUE(WIFEXITED(ws));
  EXPECT_EQ(WEXITSTATUS(ws), 3);
}

TEST(Clone3Fn, ParentResumesWhenTheChildExecs) {
  Stack st;
  ASSERT_NE(st.p, MAP_FAILED);
  Shared s;
  s.exe = "/bin/true";
  long pid = start(&s, execs, st);
  if (pid < 0 && errno == ENOSYS) GTEST_SKIP() << "no clone3 trampoline on this architecture";
  ASSERT_GT(pid, 0) << std::strerror(errno);
  EXPECT_EQ(s.written, 7);
  int ws = 0;
  ASSERT_EQ(::waitpid(static_cast<pid_t>(pid), &ws, 0), pid);
  ASSERT_TRUE(WIFEXITED(ws));
  EXPECT_EQ(WEXITSTATUS(ws), 0);  // /bin/true ran, not the 127 after a failed exec
}

TEST(Clone3Fn, AFailedCloneReportsErrno) {
  Stack st;
  ASSERT_NE(st.p, MAP_FAILED);
  Shared s;
  struct clone_args ca = {};
  ca.flags = CLONE_VM | CLONE_VFORK | CLONE_THREAD;  // CLONE_THREAD without CLONE_SIGHAND: EINVAL
  ca.stack = reinterpret_cast<uint64_t>(st.p);
  ca.stack_size = Stack::kSize;
  long pid = berth::sys::clone3_fn(&ca, writes_and_exits, &s);
  if (pid < 0 && errno == ENOSYS) GTEST_SKIP() << "no clone3 trampoline on this architecture";
  EXPECT_EQ(pid, -1);
  EXPECT_EQ(errno, EINVAL);
  EXPECT_EQ(s.written, 0);
}

// exit_deferring_unmap: the status and stdio as from main's return, and the
// keeper that takes the address space over ends with us, holding no copy of
// our fds (the reader of our stdout sees its end at our exit).
TEST(ExitDeferringUnmap, ExitsWithTheStatusAndTheKeeperEndsWithUs) {
  {
    // No keeper where clone3 or CLONE_CLEAR_SIGHAND is refused (an old
    // kernel, a seccomp profile): the exit is then plain, nothing to test.
    Stack st;
    ASSERT_NE(st.p, MAP_FAILED);
    Shared s;
    struct clone_args ca = {};
    ca.flags = CLONE_VM | CLONE_VFORK | CLONE_CLEAR_SIGHAND;
    ca.exit_signal = SIGCHLD;
    ca.stack = reinterpret_cast<uint64_t>(st.p);
    ca.stack_size = Stack::kSize;
    long pid = berth::sys::clone3_fn(&ca, writes_and_exits, &s);
    if (pid < 0) GTEST_SKIP() << "clone3 with CLONE_CLEAR_SIGHAND: " << std::strerror(errno);
    ::waitpid(static_cast<pid_t>(pid), nullptr, 0);
  }
  // The keeper comes back here when our child is gone, so it can be counted;
  // whatever is left of ours at the end (a keeper that was not killed) is.
  ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  struct Unreap {
    ~Unreap() {
      ::prctl(PR_SET_CHILD_SUBREAPER, 0);
      std::string self = std::to_string(::getpid());
      if (DIR* d = ::opendir("/proc")) {
        while (auto* e = ::readdir(d)) {
          std::ifstream st(std::string("/proc/") + e->d_name + "/stat");
          std::string line;
          if (!std::getline(st, line)) continue;
          auto close = line.rfind(')');
          if (close == std::string::npos) continue;
          std::istringstream rest(line.substr(close + 2));
          std::string state, ppid;
          rest >> state >> ppid;
          if (ppid == self) ::kill(std::atoi(e->d_name), SIGKILL);
        }
        ::closedir(d);
      }
      while (::waitpid(-1, nullptr, WNOHANG) > 0) {
      }
    }
  } unreap;
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::dup2(p[1], 1);
    ::close(p[0]);
    ::close(p[1]);
    std::printf("buffered");  // in stdio's buffer until the exit flushes it
    berth::exit_deferring_unmap(7);
  }
  ::close(p[1]);
  std::string out;
  char buf[256];
  // Its end within 10 s (it would not come while a keeper held a copy).
  for (int waited = 0;;) {
    struct pollfd pf = {p[0], POLLIN, 0};
    int r = ::poll(&pf, 1, 100);
    if (r == 0) {
      waited += 100;
      ASSERT_LT(waited, 10000) << "no end of file on the child's stdout";
      continue;
    }
    ssize_t n = ::read(p[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) break;
    ASSERT_GT(n, 0) << std::strerror(errno);
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(p[0]);
  EXPECT_EQ(out, "buffered");
  int ws = 0;
  ASSERT_EQ(::waitpid(child, &ws, 0), child);
  ASSERT_TRUE(WIFEXITED(ws));
  EXPECT_EQ(WEXITSTATUS(ws), 7);
  // The keeper: killed by our child's death (or, if that came before it
  // armed the signal, done by itself); either way it does not stay.
  pid_t keeper = -1;
  for (int waited = 0; waited < 5000 && keeper <= 0; waited += 10) {
    keeper = ::waitpid(-1, &ws, WNOHANG);
    if (keeper == 0) ::usleep(10000);
    if (keeper < 0) break;
  }
  if (!berth::sys::kHaveClone3Fn) return;
  ASSERT_GT(keeper, 0) << "no keeper came back to be reaped: " << std::strerror(errno);
  EXPECT_NE(keeper, child);
  EXPECT_TRUE((WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL) || (WIFEXITED(ws) && WEXITSTATUS(ws) == 0)) << ws;
}
