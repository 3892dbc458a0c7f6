#include "runtime/seccomp.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <functional>
#include <string>

namespace berth::seccomp {
namespace {

oci::SeccompSyscall rule(std::vector<std::string> names, std::string action,
                         std::optional<unsigned> errno_ret = std::nullopt,
                         std::vector<oci::SeccompArg> args = {}) {
  oci::SeccompSyscall c;
  c.names = std::move(names);
  c.action = std::move(action);
  c.errno_ret = errno_ret;
  c.args = std::move(args);
  return c;
}

oci::SeccompArg arg(unsigned index, std::string op, uint64_t value, uint64_t value_two = 0) {
  oci::SeccompArg a;
  a.index = index;
  a.op = std::move(op);
  a.value = value;
  a.value_two = value_two;
  return a;
}

oci::Seccomp allow_by_default(std::vector<oci::SeccompSyscall> rules) {
  oci::Seccomp s;
  s.default_action = "SCMP_ACT_ALLOW";
  s.syscalls = std::move(rules);
  return s;
}

Program compile_ok(const oci::Seccomp& s) {
  auto p = compile(s);
  EXPECT_TRUE(p.has_value()) << (p ? "" : p.error().str());
  return p ? *p : Program{};
}

std::string compile_error(const oci::Seccomp& s) {
  auto p = compile(s);
  EXPECT_FALSE(p.has_value());
  return p ? std::string() : p.error().str();
}

// Installs `p` in a forked child, runs `body` there and returns the wait status.
// Exit code 100 means installation itself failed.
int in_child(const Program& p, const std::function<int()>& body) {
  pid_t pid = fork();
  if (pid == 0) {
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) _exit(101);
    auto fd = install(p);
    if (!fd) _exit(100);
    if (p.notify && !*fd) _exit(102);
    if (!p.notify && *fd) _exit(103);
    _exit(body());
  }
  int status = 0;
  EXPECT_EQ(waitpid(pid, &status, 0), pid);
  return status;
}

// 0 when the raw syscall failed with `err`, 1 when it succeeded, 2 otherwise.
int expect_errno(long rc, int err) {
  if (rc == -1 && errno == err) return 0;
  return rc == -1 ? 2 : 1;
}

::testing::AssertionResult exited(int status, int code) {
  if (WIFEXITED(status) && WEXITSTATUS(status) == code) return ::testing::AssertionSuccess();
  if (WIFSIGNALED(status)) return ::testing::AssertionFailure() << "killed by signal " << WTERMSIG(status);
  return ::testing::AssertionFailure() << "exit code " << WEXITSTATUS(status) << ", want " << code;
}

TEST(Seccomp, ErrnoRuleReturnsCustomErrno) {
  auto p = compile_ok(allow_by_default({rule({"uname"}, "SCMP_ACT_ERRNO", 77)}));
  int st = in_child(p, [] {
    if (expect_errno(syscall(SYS_uname, nullptr), 77) != 0) return 1;
    // Unfiltered syscalls keep working.
    return syscall(SYS_getppid) > 0 ? 0 : 2;
  });
  EXPECT_TRUE(exited(st, 0));
}

TEST(Seccomp, ErrnoRuleDefaultsToEperm) {
  auto p = compile_ok(allow_by_default({rule({"uname"}, "SCMP_ACT_ERRNO")}));
  EXPECT_TRUE(exited(in_child(p, [] { return expect_errno(syscall(SYS_uname, nullptr), EPERM); }), 0));
}

TEST(Seccomp, WithoutFilterSyscallSucceeds) {
  // Guards the tests above: uname(NULL) must not fail with the errnos they expect.
  Program p = compile_ok(allow_by_default({}));
  EXPECT_TRUE(exited(in_child(p, [] { return expect_errno(syscall(SYS_uname, nullptr), 77); }), 2));
}

TEST(Seccomp, DefaultErrnoRet) {
  oci::Seccomp s;
  s.default_action = "SCMP_ACT_ERRNO";
  s.default_errno_ret = 99;
  s.syscalls = {rule({"exit_group", "exit", "getpid"}, "SCMP_ACT_ALLOW")};
  auto p = compile_ok(s);
  int st = in_child(p, [] {
    if (syscall(SYS_getpid) <= 0) return 1;
    return expect_errno(syscall(SYS_getppid), 99) == 0 ? 0 : 2;
  });
  EXPECT_TRUE(exited(st, 0));
}

TEST(Seccomp, RuleWithDefaultActionIsSkipped) {
  oci::Seccomp s;
  s.default_action = "SCMP_ACT_ERRNO";
  s.syscalls = {rule({"exit_group", "exit"}, "SCMP_ACT_ALLOW"), rule({"getppid"}, "SCMP_ACT_ERRNO")};
  auto p = compile_ok(s);
  EXPECT_TRUE(exited(in_child(p, [] { return expect_errno(syscall(SYS_getppid), EPERM); }), 0));
}

TEST(Seccomp, ArgEqualityMatchesOnlyThatValue) {
  auto p = compile_ok(allow_by_default(
      {rule({"personality"}, "SCMP_ACT_ERRNO", 33, {arg(0, "SCMP_CMP_EQ", 0xffffffff)})}));
  int st = in_child(p, [] {
    if (expect_errno(syscall(SYS_personality, 0xffffffffUL), 33) != 0) return 1;
    // PER_LINUX: allowed, and harmless in the child.
    return syscall(SYS_personality, 0UL) == -1 ? 2 : 0;
  });
  EXPECT_TRUE(exited(st, 0));
}

TEST(Seccomp, ArgsOnDifferentIndexesAreAnded) {
  auto p = compile_ok(allow_by_default({rule(
      {"fcntl"}, "SCMP_ACT_ERRNO", 55, {arg(0, "SCMP_CMP_EQ", 1), arg(1, "SCMP_CMP_EQ", F_GETFD)})}));
  int st = in_child(p, [] {
    if (expect_errno(syscall(SYS_fcntl, 1, F_GETFD), 55) != 0) return 1;
    if (syscall(SYS_fcntl, 2, F_GETFD) == -1) return 2;
    if (syscall(SYS_fcntl, 1, F_GETFL) == -1) return 3;
    return 0;
  });
  EXPECT_TRUE(exited(st, 0));
}

TEST(Seccomp, ArgsOnSameIndexAreOred) {
  auto p = compile_ok(allow_by_default({rule(
      {"umask"}, "SCMP_ACT_ERRNO", 44, {arg(0, "SCMP_CMP_EQ", 0777), arg(0, "SCMP_CMP_EQ", 0700)})}));
  int st = in_child(p, [] {
    if (expect_errno(syscall(SYS_umask, 0777), 44) != 0) return 1;
    if (expect_errno(syscall(SYS_umask, 0700), 44) != 0) return 2;
    return syscall(SYS_umask, 022) == -1 ? 3 : 0;
  });
  EXPECT_TRUE(exited(st, 0));
}

TEST(Seccomp, RepeatedIndexAmongOthersStillCompiles) {
  auto p = compile(allow_by_default({rule({"fcntl"}, "SCMP_ACT_ERRNO", 55,
                                          {arg(0, "SCMP_CMP_EQ", 1), arg(0, "SCMP_CMP_EQ", 2),
                                           arg(1, "SCMP_CMP_EQ", F_GETFD)})}));
  EXPECT_TRUE(p.has_value()) << (p ? "" : p.error().str());
}

TEST(Seccomp, MaskedEqUsesValueAsMaskAndValueTwoAsDatum) {
  auto p = compile_ok(allow_by_default(
      {rule({"umask"}, "SCMP_ACT_ERRNO", 45, {arg(0, "SCMP_CMP_MASKED_EQ", 0700, 0700)})}));
  int st = in_child(p, [] {
    if (expect_errno(syscall(SYS_umask, 0777), 45) != 0) return 1;
    if (expect_errno(syscall(SYS_umask, 0755), 45) != 0) return 2;
    return syscall(SYS_umask, 0077) == -1 ? 3 : 0;
  });
  EXPECT_TRUE(exited(st, 0));
}

TEST(Seccomp, OrderingOperators) {
  auto p = compile_ok(allow_by_default({
      rule({"umask"}, "SCMP_ACT_ERRNO", 46, {arg(0, "SCMP_CMP_GT", 0700)}),
      rule({"personality"}, "SCMP_ACT_ERRNO", 47, {arg(0, "SCMP_CMP_NE", 0)}),
  }));
  int st = in_child(p, [] {
    if (expect_errno(syscall(SYS_umask, 0701), 46) != 0) return 1;
    if (syscall(SYS_umask, 0700) == -1) return 2;
    if (expect_errno(syscall(SYS_personality, 0xffffffffUL), 47) != 0) return 3;
    return syscall(SYS_personality, 0UL) == -1 ? 4 : 0;
  });
  EXPECT_TRUE(exited(st, 0));
}

TEST(Seccomp, KillKillsWithSigsys) {
  for (const char* action : {"SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP"}) {
    SCOPED_TRACE(action);
    auto p = compile_ok(allow_by_default({rule({"uname"}, action)}));
    int st = in_child(p, [] {
      syscall(SYS_uname, nullptr);
      return 0;
    });
    ASSERT_TRUE(WIFSIGNALED(st)) << "status " << st;
    EXPECT_EQ(WTERMSIG(st), SIGSYS);
  }
}

TEST(Seccomp, LogAllows) {
  auto p = compile_ok(allow_by_default({rule({"getppid"}, "SCMP_ACT_LOG")}));
  EXPECT_TRUE(exited(in_child(p, [] { return syscall(SYS_getppid) > 0 ? 0 : 1; }), 0));
}

TEST(Seccomp, UnknownSyscallIsSkipped) {
  auto p = compile_ok(allow_by_default({rule({"no_such_syscall_berth", "uname"}, "SCMP_ACT_ERRNO", 77)}));
  EXPECT_TRUE(exited(in_child(p, [] { return expect_errno(syscall(SYS_uname, nullptr), 77); }), 0));
}

TEST(Seccomp, FlagsMapToKernelBits) {
  oci::Seccomp s = allow_by_default({rule({"uname"}, "SCMP_ACT_ERRNO", 77)});
  s.flags = {"SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_TSYNC"};
  auto p = compile_ok(s);
  EXPECT_EQ(p.flags, SECCOMP_FILTER_FLAG_LOG | SECCOMP_FILTER_FLAG_SPEC_ALLOW | SECCOMP_FILTER_FLAG_TSYNC);
  EXPECT_TRUE(exited(in_child(p, [] { return expect_errno(syscall(SYS_uname, nullptr), 77); }), 0));

  s.flags = {"SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"};
  EXPECT_EQ(compile_ok(s).flags, 1u << 5);
}

TEST(Seccomp, ExtraArchitecturesAddCode) {
  oci::Seccomp s = allow_by_default({rule({"uname"}, "SCMP_ACT_ERRNO", 77)});
  auto native = compile_ok(s);
  s.architectures = {"SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64"};
  auto multi = compile_ok(s);
  EXPECT_GT(multi.filter.size(), native.filter.size());
  EXPECT_TRUE(exited(in_child(multi, [] { return expect_errno(syscall(SYS_uname, nullptr), 77); }), 0));
}

TEST(Seccomp, NotifyReturnsListener) {
  auto p = compile_ok(allow_by_default({rule({"uname"}, "SCMP_ACT_NOTIFY")}));
  EXPECT_TRUE(p.notify);
  // in_child checks that install() hands back a listener fd.
  EXPECT_TRUE(exited(in_child(p, [] { return syscall(SYS_getppid) > 0 ? 0 : 1; }), 0));
}

TEST(Seccomp, NotifyListenerReceivesTheCall) {
  auto p = compile_ok(allow_by_default({rule({"uname"}, "SCMP_ACT_NOTIFY")}));
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    auto fd = install(p);
    if (!fd || !*fd) _exit(100);
    // A thread cannot answer its own notification; a second process can.
    pid_t sup = fork();
    if (sup == 0) {
      seccomp_notif req{};
      if (ioctl(fd->get(), SECCOMP_IOCTL_NOTIF_RECV, &req) != 0) _exit(1);
      seccomp_notif_resp resp{};
      resp.id = req.id;
      resp.error = -61;
      _exit(ioctl(fd->get(), SECCOMP_IOCTL_NOTIF_SEND, &resp) == 0 ? 0 : 2);
    }
    int rc = expect_errno(syscall(SYS_uname, nullptr), 61);
    int st = 0;
    waitpid(sup, &st, 0);
    _exit(rc == 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 1);
  }
  int st = 0;
  ASSERT_EQ(waitpid(pid, &st, 0), pid);
  EXPECT_TRUE(exited(st, 0));
}

TEST(Seccomp, NotifyDefaultActionFails) {
  oci::Seccomp s;
  s.default_action = "SCMP_ACT_NOTIFY";
  EXPECT_NE(compile_error(s).find("linux.seccomp.defaultAction"), std::string::npos);
}

TEST(Seccomp, UnknownActionNamesField) {
  auto err = compile_error(allow_by_default(
      {rule({"uname"}, "SCMP_ACT_ERRNO"), rule({"getpid"}, "SCMP_ACT_BOGUS")}));
  EXPECT_NE(err.find("linux.seccomp.syscalls[1].action"), std::string::npos) << err;
  EXPECT_NE(err.find("SCMP_ACT_BOGUS"), std::string::npos) << err;

  oci::Seccomp s;
  s.default_action = "ALLOW";
  err = compile_error(s);
  EXPECT_NE(err.find("linux.seccomp.defaultAction"), std::string::npos) << err;
}

TEST(Seccomp, UnknownOperatorNamesField) {
  auto err = compile_error(
      allow_by_default({rule({"uname"}, "SCMP_ACT_ERRNO", std::nullopt,
                             {arg(0, "SCMP_CMP_EQ", 1), arg(1, "SCMP_CMP_ROUGHLY", 2)})}));
  EXPECT_NE(err.find("linux.seccomp.syscalls[0].args[1].op"), std::string::npos) << err;
}

TEST(Seccomp, UnknownOperatorReportedEvenForUnknownSyscall) {
  auto err = compile_error(allow_by_default(
      {rule({"no_such_syscall_berth"}, "SCMP_ACT_ERRNO", std::nullopt, {arg(0, "EQ", 1)})}));
  EXPECT_NE(err.find("syscalls[0].args[0].op"), std::string::npos) << err;
}

TEST(Seccomp, UnknownFlagNamesField) {
  oci::Seccomp s = allow_by_default({});
  s.flags = {"SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_NOPE"};
  auto err = compile_error(s);
  EXPECT_NE(err.find("linux.seccomp.flags[1]"), std::string::npos) << err;
}

TEST(Seccomp, UnknownArchNamesField) {
  oci::Seccomp s = allow_by_default({});
  s.architectures = {"SCMP_ARCH_X86_64", "SCMP_ARCH_Z80"};
  auto err = compile_error(s);
  EXPECT_NE(err.find("linux.seccomp.architectures[1]"), std::string::npos) << err;
}

TEST(Seccomp, ErrnoRetOnlyWithErrnoOrTrace) {
  auto err = compile_error(allow_by_default({rule({"uname"}, "SCMP_ACT_KILL", 5)}));
  EXPECT_NE(err.find("linux.seccomp.syscalls[0].errnoRet"), std::string::npos) << err;

  oci::Seccomp s = allow_by_default({});
  s.default_errno_ret = 5;
  err = compile_error(s);
  EXPECT_NE(err.find("linux.seccomp.defaultErrnoRet"), std::string::npos) << err;

  EXPECT_TRUE(compile(allow_by_default({rule({"uname"}, "SCMP_ACT_TRACE", 5)})).has_value());
}

TEST(Seccomp, KnownNames) {
  auto has = [](const std::vector<std::string>& v, const char* s) {
    return std::find(v.begin(), v.end(), s) != v.end();
  };
  EXPECT_TRUE(has(known_actions(), "SCMP_ACT_NOTIFY"));
  EXPECT_TRUE(has(known_actions(), "SCMP_ACT_KILL_PROCESS"));
  EXPECT_EQ(known_actions().size(), 9u);
  EXPECT_TRUE(has(known_operators(), "SCMP_CMP_MASKED_EQ"));
  EXPECT_EQ(known_operators().size(), 7u);
  EXPECT_TRUE(has(known_archs(), "SCMP_ARCH_X86_64"));
  EXPECT_TRUE(has(known_archs(), "SCMP_ARCH_AARCH64"));
  EXPECT_TRUE(has(known_flags(), "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"));
}

}  // namespace
}  // namespace berth::seccomp

namespace berth::seccomp {
namespace {

// The cache returns what compile() returns, from the file the second time, and
// never a program compiled from another profile, even under the same name.
TEST(SeccompCache, SameProgramAndNeverAnotherProfiles) {
  char tmpl[] = "/tmp/berth-seccomp-cache-XXXXXX";
  ASSERT_TRUE(::mkdtemp(tmpl));
  std::string dir = std::string(tmpl) + "/cache";
  auto a = allow_by_default({rule({"uname"}, "SCMP_ACT_ERRNO", 77)});
  auto b = allow_by_default({rule({"uname"}, "SCMP_ACT_ERRNO", 78)});
  Program direct = compile_ok(a);
  auto first = compile_cached(a, dir);
  ASSERT_TRUE(first) << first.error().str();
  auto again = compile_cached(a, dir);
  ASSERT_TRUE(again);
  auto same = [](const Program& x, const Program& y) {
    return x.flags == y.flags && x.notify == y.notify && x.filter.size() == y.filter.size() &&
           std::equal(x.filter.begin(), x.filter.end(), y.filter.begin(), [](const sock_filter& p, const sock_filter& q) {
             return p.code == q.code && p.jt == q.jt && p.jf == q.jf && p.k == q.k;
           });
  };
  EXPECT_TRUE(same(direct, *first));
  EXPECT_TRUE(same(direct, *again));
  // Plant b's name with a's entry: a lookup for b must not take a's program.
  std::vector<std::string> names;
  for (auto& e : std::filesystem::directory_iterator(dir)) names.push_back(e.path().string());
  ASSERT_EQ(names.size(), 1u);
  auto bp = compile_cached(b, dir);  // writes b's entry
  ASSERT_TRUE(bp);
  for (auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().string() != names[0]) std::filesystem::copy_file(names[0], e.path(), std::filesystem::copy_options::overwrite_existing);
  auto b_again = compile_cached(b, dir);
  ASSERT_TRUE(b_again);
  EXPECT_TRUE(same(compile_ok(b), *b_again));
  EXPECT_FALSE(same(direct, *b_again));
  // It still filters as compiled.
  EXPECT_TRUE(exited(in_child(*again, [] { return expect_errno(syscall(SYS_uname, nullptr), 77); }), 0));
  std::filesystem::remove_all(tmpl);
}

}  // namespace
}  // namespace berth::seccomp
