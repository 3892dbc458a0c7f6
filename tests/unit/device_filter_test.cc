#include "cgroup/device_filter.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/bpf.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <string_view>

namespace berth::cgroup {
namespace {

using Rules = std::vector<oci::DeviceCgroupRule>;

oci::DeviceCgroupRule rule(bool allow, std::string type, std::optional<int64_t> major,
                           std::optional<int64_t> minor, std::string access = "") {
  oci::DeviceCgroupRule r;
  r.allow = allow;
  r.type = std::move(type);
  r.major = major;
  r.minor = minor;
  r.access = std::move(access);
  return r;
}
oci::DeviceCgroupRule allow(std::string type, std::optional<int64_t> major = std::nullopt,
                            std::optional<int64_t> minor = std::nullopt, std::string access = "") {
  return rule(true, std::move(type), major, minor, std::move(access));
}
oci::DeviceCgroupRule deny(std::string type, std::optional<int64_t> major = std::nullopt,
                           std::optional<int64_t> minor = std::nullopt, std::string access = "") {
  return rule(false, std::move(type), major, minor, std::move(access));
}

uint32_t access_bits(std::string_view a) {
  uint32_t bits = 0;
  for (char c : a) {
    if (c == 'r') bits |= BPF_DEVCG_ACC_READ;
    if (c == 'w') bits |= BPF_DEVCG_ACC_WRITE;
    if (c == 'm') bits |= BPF_DEVCG_ACC_MKNOD;
  }
  return bits;
}

// An interpreter for the part of eBPF the compiler emits: 32- and 64-bit
// MOV/AND/RSH, loads from the context, forward JA/JEQ/JNE and EXIT. It checks
// what the verifier would (registers read only after written, loads only from
// the context, jumps forward and in bounds, r0 set at exit) and fails the test
// on anything else. Returns r0, or nullopt after a failure.
std::optional<uint64_t> run(const std::vector<BpfInsn>& prog, const bpf_cgroup_dev_ctx& ctx) {
  std::array<uint64_t, 11> reg{};
  std::array<bool, 11> init{};
  std::array<bool, 11> is_ctx{};
  init[1] = is_ctx[1] = true;
  auto set = [&](unsigned r, uint64_t v) {
    reg[r] = v;
    init[r] = true;
    is_ctx[r] = false;
  };
  for (size_t pc = 0; pc < prog.size(); ++pc) {
    const BpfInsn& i = prog[pc];
    unsigned cls = BPF_CLASS(i.code), op = BPF_OP(i.code), src = BPF_SRC(i.code);
    if (i.dst_reg > 10 || i.src_reg > 10) {
      ADD_FAILURE() << "pc " << pc << ": bad register";
      return std::nullopt;
    }
    if (cls == BPF_LDX) {
      if (i.code != (BPF_LDX | BPF_MEM | BPF_W) || !is_ctx[i.src_reg]) {
        ADD_FAILURE() << "pc " << pc << ": load other than a u32 from the context";
        return std::nullopt;
      }
      const char* base = reinterpret_cast<const char*>(&ctx);
      if (i.off < 0 || i.off % 4 != 0 || static_cast<size_t>(i.off) + 4 > sizeof(ctx)) {
        ADD_FAILURE() << "pc " << pc << ": context offset " << i.off;
        return std::nullopt;
      }
      uint32_t v;
      std::memcpy(&v, base + i.off, 4);
      set(i.dst_reg, v);
      continue;
    }
    if (cls == BPF_ALU || cls == BPF_ALU64) {
      uint64_t operand;
      if (src == BPF_X) {
        if (!init[i.src_reg] || is_ctx[i.src_reg]) {
          ADD_FAILURE() << "pc " << pc << ": reads r" << int(i.src_reg) << " before it is set";
          return std::nullopt;
        }
        operand = reg[i.src_reg];
      } else {
        operand = static_cast<uint64_t>(static_cast<int64_t>(i.imm));
      }
      if (op != BPF_MOV && (!init[i.dst_reg] || is_ctx[i.dst_reg])) {
        ADD_FAILURE() << "pc " << pc << ": reads r" << int(i.dst_reg) << " before it is set";
        return std::nullopt;
      }
      uint64_t v;
      if (op == BPF_MOV) {
        v = operand;
      } else if (op == BPF_AND) {
        v = reg[i.dst_reg] & operand;
      } else if (op == BPF_RSH) {
        v = cls == BPF_ALU ? static_cast<uint32_t>(reg[i.dst_reg]) >> (operand & 31)
                           : reg[i.dst_reg] >> (operand & 63);
      } else {
        ADD_FAILURE() << "pc " << pc << ": ALU op " << op;
        return std::nullopt;
      }
      set(i.dst_reg, cls == BPF_ALU ? static_cast<uint32_t>(v) : v);
      continue;
    }
    if (cls == BPF_JMP) {
      if (op == BPF_EXIT) {
        if (!init[0]) {
          ADD_FAILURE() << "pc " << pc << ": exit without r0";
          return std::nullopt;
        }
        return reg[0];
      }
      if (i.off < 0 || pc + 1 + i.off >= prog.size()) {
        ADD_FAILURE() << "pc " << pc << ": jump " << i.off << " backwards or out of the program";
        return std::nullopt;
      }
      bool taken;
      if (op == BPF_JA) {
        taken = true;
      } else {
        if (!init[i.dst_reg] || (src == BPF_X && !init[i.src_reg])) {
          ADD_FAILURE() << "pc " << pc << ": compares an unset register";
          return std::nullopt;
        }
        uint64_t a = reg[i.dst_reg];
        uint64_t b =
            src == BPF_X ? reg[i.src_reg] : static_cast<uint64_t>(static_cast<int64_t>(i.imm));
        if (op == BPF_JEQ) {
          taken = a == b;
        } else if (op == BPF_JNE) {
          taken = a != b;
        } else {
          ADD_FAILURE() << "pc " << pc << ": jump op " << op;
          return std::nullopt;
        }
      }
      if (taken) pc += i.off;
      continue;
    }
    ADD_FAILURE() << "pc " << pc << ": instruction class " << cls;
    return std::nullopt;
  }
  ADD_FAILURE() << "ran off the end of the program";
  return std::nullopt;
}

// Whether `prog` lets a request for `access` ("rwm" letters) on device
// `type` ('b' or 'c') major:minor through.
bool allows(const std::vector<BpfInsn>& prog, char type, uint32_t major, uint32_t minor,
            std::string_view access) {
  uint32_t t = type == 'b' ? BPF_DEVCG_DEV_BLOCK : BPF_DEVCG_DEV_CHAR;
  bpf_cgroup_dev_ctx ctx{(access_bits(access) << 16) | t, major, minor};
  auto r0 = run(prog, ctx);
  EXPECT_TRUE(r0 == 0u || r0 == 1u) << "r0 is neither 0 nor 1";
  return r0 == 1u;
}

std::vector<BpfInsn> compile(const Rules& rules) {
  auto p = compile_device_filter(rules);
  EXPECT_TRUE(p) << p.error().str();
  return p ? *p : std::vector<BpfInsn>{};
}

// The device rules runc gives every container: nothing but the usual
// character devices.
Rules runc_defaults() {
  return {deny("a"),
          allow("c", 1, 3, "rwm"),
          allow("c", 1, 5, "rwm"),
          allow("c", 1, 7, "rwm"),
          allow("c", 5, 0, "rwm"),
          allow("c", 5, 1, "rwm"),
          allow("c", 5, 2, "rwm"),
          allow("c", 1, 8, "rwm"),
          allow("c", 1, 9, "rwm"),
          allow("c", 136, std::nullopt, "rwm"),
          allow("c", 10, 200, "rwm")};
}

TEST(DeviceFilter, NoRulesDeniesEverything) {
  auto p = compile({});
  EXPECT_FALSE(allows(p, 'c', 1, 3, "r"));
  EXPECT_FALSE(allows(p, 'b', 8, 0, "m"));
}

TEST(DeviceFilter, RuncDefaultList) {
  auto p = compile(runc_defaults());
  EXPECT_TRUE(allows(p, 'c', 1, 3, "rwm"));  // /dev/null
  EXPECT_TRUE(allows(p, 'c', 1, 5, "r"));    // /dev/zero
  EXPECT_TRUE(allows(p, 'c', 1, 9, "rw"));   // /dev/urandom
  EXPECT_TRUE(allows(p, 'c', 5, 2, "rw"));   // /dev/ptmx
  EXPECT_TRUE(allows(p, 'c', 136, 0, "rw"));
  EXPECT_TRUE(allows(p, 'c', 136, 4095, "rwm"));
  EXPECT_TRUE(allows(p, 'c', 10, 200, "rw"));  // /dev/net/tun
  EXPECT_FALSE(allows(p, 'c', 1, 1, "r"));     // /dev/mem
  EXPECT_FALSE(allows(p, 'c', 1, 4, "r"));
  EXPECT_FALSE(allows(p, 'c', 10, 229, "rw"));  // /dev/fuse
  EXPECT_FALSE(allows(p, 'b', 1, 3, "r"));      // right numbers, wrong type
  EXPECT_FALSE(allows(p, 'b', 136, 0, "r"));
  EXPECT_FALSE(allows(p, 'b', 8, 0, "rw"));
  EXPECT_FALSE(allows(p, 'c', 4, 0, "w"));
}

TEST(DeviceFilter, AllowAllThenDenyOne) {
  auto p = compile({allow("a"), deny("c", 1, 5, "rwm")});
  EXPECT_FALSE(allows(p, 'c', 1, 5, "r"));
  EXPECT_FALSE(allows(p, 'c', 1, 5, "m"));
  EXPECT_TRUE(allows(p, 'c', 1, 3, "rw"));
  EXPECT_TRUE(allows(p, 'b', 1, 5, "r"));
  EXPECT_TRUE(allows(p, 'b', 8, 0, "rwm"));
}

TEST(DeviceFilter, Wildcards) {
  auto p = compile({deny("a"), allow("c", std::nullopt, 5, "rw"), allow("b", 8, -1, "r"),
                    allow("a", 4, std::nullopt, "w"), allow("c", -1, -1, "m")});
  EXPECT_TRUE(allows(p, 'c', 1, 5, "rw"));
  EXPECT_TRUE(allows(p, 'c', 77, 5, "r"));
  EXPECT_FALSE(allows(p, 'c', 77, 6, "r"));
  EXPECT_FALSE(allows(p, 'b', 1, 5, "r"));
  EXPECT_TRUE(allows(p, 'b', 8, 0, "r"));
  EXPECT_TRUE(allows(p, 'b', 8, 17, "r"));
  EXPECT_FALSE(allows(p, 'b', 8, 17, "w"));
  // Type "a" with a major is an exception for both types, not a reset.
  EXPECT_TRUE(allows(p, 'b', 4, 1, "w"));
  EXPECT_TRUE(allows(p, 'c', 4, 64, "w"));
  EXPECT_FALSE(allows(p, 'c', 4, 64, "r"));
  // mknod of any character device, nothing else.
  EXPECT_TRUE(allows(p, 'c', 200, 200, "m"));
  EXPECT_FALSE(allows(p, 'b', 200, 200, "m"));
  EXPECT_FALSE(allows(p, 'c', 200, 200, "rm"));
}

TEST(DeviceFilter, AccessSubsets) {
  // An allow rule must cover every access asked for.
  auto p = compile({deny("a"), allow("c", 1, 3, "rw")});
  EXPECT_TRUE(allows(p, 'c', 1, 3, "r"));
  EXPECT_TRUE(allows(p, 'c', 1, 3, "w"));
  EXPECT_TRUE(allows(p, 'c', 1, 3, "rw"));
  EXPECT_FALSE(allows(p, 'c', 1, 3, "m"));
  EXPECT_FALSE(allows(p, 'c', 1, 3, "rwm"));
  // A deny rule takes a request that asks for any of its accesses.
  auto q = compile({allow("a"), deny("c", 1, 3, "w")});
  EXPECT_TRUE(allows(q, 'c', 1, 3, "r"));
  EXPECT_TRUE(allows(q, 'c', 1, 3, "m"));
  EXPECT_FALSE(allows(q, 'c', 1, 3, "w"));
  EXPECT_FALSE(allows(q, 'c', 1, 3, "rw"));
  // Letters in any order, repeated; empty means all three.
  auto r = compile({deny("a"), allow("c", 1, 3, "wmrw"), allow("c", 1, 5, "")});
  EXPECT_TRUE(allows(r, 'c', 1, 3, "rwm"));
  EXPECT_TRUE(allows(r, 'c', 1, 5, "rwm"));
}

TEST(DeviceFilter, LastMatchWins) {
  auto p = compile({deny("a"), allow("c", 1, 3, "r"), deny("c", 1, 3, "r")});
  EXPECT_FALSE(allows(p, 'c', 1, 3, "r"));
  auto q = compile({deny("a"), deny("c", 1, 3, "r"), allow("c", 1, 3, "r")});
  EXPECT_TRUE(allows(q, 'c', 1, 3, "r"));
  // A narrower rule written later carves out of a wider one, and the other way round.
  auto r = compile({allow("a"), deny("c", 1, std::nullopt), allow("c", 1, 3, "r")});
  EXPECT_TRUE(allows(r, 'c', 1, 3, "r"));
  EXPECT_FALSE(allows(r, 'c', 1, 3, "w"));
  EXPECT_FALSE(allows(r, 'c', 1, 5, "r"));
  auto s = compile({deny("a"), allow("c", 1, 3, "rw"), deny("c", 1, std::nullopt, "w")});
  EXPECT_TRUE(allows(s, 'c', 1, 3, "r"));
  EXPECT_FALSE(allows(s, 'c', 1, 3, "rw"));
}

TEST(DeviceFilter, ResetForgetsEarlierRules) {
  auto p = compile({allow("c", 1, 3), allow("a")});
  EXPECT_TRUE(allows(p, 'b', 8, 0, "rwm"));
  auto q = compile({allow("a"), deny("c", 1, 3), allow("a")});
  EXPECT_TRUE(allows(q, 'c', 1, 3, "r"));
  // A reset takes no notice of access letters (v1 ignores them too), and an
  // empty type is "a".
  auto r = compile({allow("c", 1, 3), deny("a", std::nullopt, std::nullopt, "r")});
  EXPECT_FALSE(allows(r, 'c', 1, 3, "w"));
  auto s = compile({deny("a"), allow("c", 1, 3), allow("", -1, std::nullopt, "r")});
  EXPECT_TRUE(allows(s, 'b', 9, 9, "w"));
  // A reset leaves only the two instructions that return the default.
  auto t = compile({allow("c", 1, 3), deny("b", 8, 0), deny("a")});
  auto u = compile({});
  EXPECT_EQ(t.size(), u.size());
}

TEST(DeviceFilter, ImpossibleNumbersMatchNothing) {
  auto p = compile({deny("a"), allow("c", int64_t{1} << 40, 3), allow("c", 1, int64_t{1} << 33)});
  EXPECT_EQ(p.size(), compile({}).size());
  EXPECT_FALSE(allows(p, 'c', 1, 3, "r"));
  auto q = compile({deny("a"), allow("c", INT32_MAX, 0)});
  EXPECT_TRUE(allows(q, 'c', INT32_MAX, 0, "r"));
  EXPECT_FALSE(allows(q, 'c', 0xffffffffu, 0, "r"));
}

TEST(DeviceFilter, RejectsBadLetters) {
  auto bad_type = compile_device_filter({deny("a"), allow("x", 1, 3)});
  ASSERT_FALSE(bad_type);
  EXPECT_NE(bad_type.error().msg.find("linux.resources.devices[1]"), std::string::npos)
      << bad_type.error().msg;
  EXPECT_NE(bad_type.error().msg.find("\"x\""), std::string::npos) << bad_type.error().msg;
  EXPECT_FALSE(compile_device_filter({allow("u", 1, 3)}));  // "u" is for linux.devices only
  EXPECT_FALSE(compile_device_filter({allow("cc", 1, 3)}));

  auto bad_access =
      compile_device_filter({deny("a"), allow("c", 1, 3, "r"), allow("c", 1, 5, "rwx")});
  ASSERT_FALSE(bad_access);
  EXPECT_NE(bad_access.error().msg.find("linux.resources.devices[2]"), std::string::npos)
      << bad_access.error().msg;
  EXPECT_NE(bad_access.error().msg.find("\"rwx\""), std::string::npos) << bad_access.error().msg;
  // Checked even in a rule a later reset would drop, and in a reset itself.
  EXPECT_FALSE(compile_device_filter({allow("c", 1, 3, "R"), deny("a")}));
  EXPECT_FALSE(compile_device_filter({deny("a", std::nullopt, std::nullopt, "q")}));
}

// v1's devices.allow/deny written in order, modelled directly: the program
// must agree with it on every request, for many rule lists.
bool model(const Rules& rules, char type, uint32_t major, uint32_t minor, uint32_t access) {
  bool def = false;
  std::vector<const oci::DeviceCgroupRule*> ex;
  auto wild = [](const std::optional<int64_t>& v) { return !v || *v < 0; };
  for (auto& r : rules) {
    if ((r.type.empty() || r.type == "a") && wild(r.major) && wild(r.minor)) {
      def = r.allow;
      ex.clear();
    } else {
      ex.push_back(&r);
    }
  }
  for (auto it = ex.rbegin(); it != ex.rend(); ++it) {
    const auto& r = **it;
    if (!r.type.empty() && r.type != "a" && r.type[0] != type) continue;
    if (!wild(r.major) && *r.major != major) continue;
    if (!wild(r.minor) && *r.minor != minor) continue;
    uint32_t a = r.access.empty() ? access_bits("rwm") : access_bits(r.access);
    if (r.allow ? (access & ~a) == 0 : (access & a) != 0) return r.allow;
  }
  return def;
}

TEST(DeviceFilter, AgreesWithV1Model) {
  std::mt19937 rng(20240611);
  const std::array<std::string, 4> types = {"a", "", "b", "c"};
  const std::array<std::optional<int64_t>, 4> nums = {std::nullopt, -1, 1, 2};
  const std::array<std::string, 8> accesses = {"", "r", "w", "m", "rw", "rm", "wm", "rwm"};
  for (int round = 0; round < 500; ++round) {
    Rules rules;
    int n = 1 + static_cast<int>(rng() % 7);
    for (int i = 0; i < n; ++i)
      rules.push_back(rule(rng() % 2, types[rng() % types.size()], nums[rng() % nums.size()],
                           nums[rng() % nums.size()], accesses[rng() % accesses.size()]));
    auto p = compile(rules);
    for (char type : {'b', 'c'})
      for (uint32_t major : {1u, 2u, 3u})
        for (uint32_t minor : {1u, 2u, 3u})
          for (size_t a = 1; a < accesses.size(); ++a)
            ASSERT_EQ(allows(p, type, major, minor, accesses[a]),
                      model(rules, type, major, minor, access_bits(accesses[a])))
                << "round " << round << ", request " << type << " " << major << ":" << minor << " "
                << accesses[a];
  }
}

// --- With the kernel: needs root and a cgroup2 mount at /sys/fs/cgroup/unified.

constexpr const char* kUnified = "/sys/fs/cgroup/unified";

bool is_cgroup2(const char* path) {
  struct statfs s;
  return ::statfs(path, &s) == 0 && s.f_type == CGROUP2_SUPER_MAGIC;
}

// Removes the test's cgroup on every way out of the test. rmdir can see EBUSY
// for a moment after the last task in it was reaped.
struct RemoveCgroup {
  std::string dir;
  ~RemoveCgroup() {
    for (int i = 0; i < 1000; ++i) {
      if (::rmdir(dir.c_str()) == 0 || errno == ENOENT) return;
      if (errno != EBUSY) break;
      struct timespec ts = {0, 1000000};
      ::nanosleep(&ts, nullptr);
    }
    ADD_FAILURE() << "rmdir " << dir << ": " << std::strerror(errno);
  }
};

std::string describe(int result) {
  return result == 0 ? "opened" : result == 1 ? "EPERM" : "other error";
}

// Forks a child that joins `cgroup` and opens /dev/null read-write and
// /dev/zero read-only; its exit code says what each open did (0 opened,
// 1 EPERM, 2 another error), as "null: X, zero: Y". The child is always reaped
// before this returns.
std::string probe(const std::string& cgroup) {
  std::string procs = cgroup + "/cgroup.procs";
  pid_t pid = ::fork();
  if (pid < 0) return std::string("fork: ") + std::strerror(errno);
  if (pid == 0) {
    char buf[32];
    int len = std::snprintf(buf, sizeof(buf), "%d", static_cast<int>(::getpid()));
    int fd = ::open(procs.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0 || ::write(fd, buf, len) != len) ::_exit(100);
    ::close(fd);
    auto attempt = [](const char* dev, int flags) {
      int f = ::open(dev, flags | O_CLOEXEC);
      if (f >= 0) {
        ::close(f);
        return 0;
      }
      return errno == EPERM ? 1 : 2;
    };
    int null_r = attempt("/dev/null", O_RDWR);
    int zero_r = attempt("/dev/zero", O_RDONLY);
    ::_exit(null_r * 3 + zero_r);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status)) return "child died: status " + std::to_string(status);
  int code = WEXITSTATUS(status);
  if (code == 100) return "child could not join " + cgroup;
  return "null: " + describe(code / 3) + ", zero: " + describe(code % 3);
}

// "N programs, multi" or "N programs, single": what is attached to the cgroup
// itself, and whether in BPF_F_ALLOW_MULTI mode.
std::string attached(int cgroup_fd) {
  union bpf_attr attr;
  std::memset(&attr, 0, sizeof(attr));
  attr.query.target_fd = static_cast<uint32_t>(cgroup_fd);
  attr.query.attach_type = BPF_CGROUP_DEVICE;
  if (::syscall(SYS_bpf, BPF_PROG_QUERY, &attr, sizeof(attr)) != 0)
    return std::string("query: ") + std::strerror(errno);
  return std::to_string(attr.query.prog_cnt) + " programs, " +
         (attr.query.attach_flags & BPF_F_ALLOW_MULTI ? "multi" : "single");
}

TEST(DeviceFilterRoot, AttachesAndReplaces) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root";
  if (!is_cgroup2(kUnified)) GTEST_SKIP() << kUnified << " is not a cgroup2 mount";

  std::string dir = std::string(kUnified) + "/berth-devfilter-test-" + std::to_string(::getpid());
  ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0) << "mkdir " << dir << ": " << std::strerror(errno);
  RemoveCgroup cleanup{dir};
  UniqueFd cg(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  ASSERT_TRUE(cg) << "open " << dir << ": " << std::strerror(errno);

  // The verifier takes every block shape the compiler makes; each attach
  // replaces the one before.
  Rules shapes = runc_defaults();
  for (auto r : {deny("c", 1, 1, "w"), allow("a", 4, std::nullopt, "r"), allow("b", -1, 0, "m"),
                 deny("", 7, 7, "rwm"), allow("c", std::nullopt, std::nullopt, "m")})
    shapes.push_back(r);
  auto shaped = attach_device_filter(cg.get(), shapes);
  ASSERT_TRUE(shaped) << shaped.error().str();
  EXPECT_EQ(attached(cg.get()), "1 programs, multi");

  auto first = attach_device_filter(cg.get(), {deny("a"), allow("c", 1, 3, "rw")});
  ASSERT_TRUE(first) << first.error().str();
  EXPECT_EQ(attached(cg.get()), "1 programs, multi");
  EXPECT_EQ(probe(dir), "null: opened, zero: EPERM");

  auto update =
      attach_device_filter(cg.get(), {deny("a"), allow("c", 1, 3, "rw"), allow("c", 1, 5, "r")});
  ASSERT_TRUE(update) << update.error().str();
  EXPECT_EQ(attached(cg.get()), "1 programs, multi");
  EXPECT_EQ(probe(dir), "null: opened, zero: opened");

  // Last match wins in the kernel too: read of /dev/null allowed, its write not.
  auto narrowed = attach_device_filter(cg.get(), {allow("a"), deny("c", 1, 3, "w")});
  ASSERT_TRUE(narrowed) << narrowed.error().str();
  EXPECT_EQ(attached(cg.get()), "1 programs, multi");
  EXPECT_EQ(probe(dir), "null: EPERM, zero: opened");

  // A program someone else attached without BPF_F_ALLOW_MULTI leaves no room
  // for a second one: it is replaced instead. Ours goes first (a cgroup keeps
  // the mode it has while any program is attached), then an allow-all goes on
  // in single mode.
  {
    union bpf_attr attr;
    uint32_t id = 0;
    std::memset(&attr, 0, sizeof(attr));
    attr.query.target_fd = static_cast<uint32_t>(cg.get());
    attr.query.attach_type = BPF_CGROUP_DEVICE;
    attr.query.prog_ids = reinterpret_cast<uintptr_t>(&id);
    attr.query.prog_cnt = 1;
    ASSERT_EQ(::syscall(SYS_bpf, BPF_PROG_QUERY, &attr, sizeof(attr)), 0) << std::strerror(errno);
    std::memset(&attr, 0, sizeof(attr));
    attr.prog_id = id;
    UniqueFd ours(static_cast<int>(::syscall(SYS_bpf, BPF_PROG_GET_FD_BY_ID, &attr, sizeof(attr))));
    ASSERT_TRUE(ours) << std::strerror(errno);
    std::memset(&attr, 0, sizeof(attr));
    attr.target_fd = static_cast<uint32_t>(cg.get());
    attr.attach_bpf_fd = static_cast<uint32_t>(ours.get());
    attr.attach_type = BPF_CGROUP_DEVICE;
    ASSERT_EQ(::syscall(SYS_bpf, BPF_PROG_DETACH, &attr, sizeof(attr)), 0) << std::strerror(errno);

    auto allow_all = compile_device_filter({allow("a")});
    ASSERT_TRUE(allow_all);
    static const char kLicense[] = "GPL";
    std::memset(&attr, 0, sizeof(attr));
    attr.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
    attr.insns = reinterpret_cast<uintptr_t>(allow_all->data());
    attr.insn_cnt = static_cast<uint32_t>(allow_all->size());
    attr.license = reinterpret_cast<uintptr_t>(kLicense);
    UniqueFd prog(static_cast<int>(::syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof(attr))));
    ASSERT_TRUE(prog) << "load: " << std::strerror(errno);
    std::memset(&attr, 0, sizeof(attr));
    attr.target_fd = static_cast<uint32_t>(cg.get());
    attr.attach_bpf_fd = static_cast<uint32_t>(prog.get());
    attr.attach_type = BPF_CGROUP_DEVICE;
    ASSERT_EQ(::syscall(SYS_bpf, BPF_PROG_ATTACH, &attr, sizeof(attr)), 0) << std::strerror(errno);
  }
  EXPECT_EQ(attached(cg.get()), "1 programs, single");
  EXPECT_EQ(probe(dir), "null: opened, zero: opened");
  auto over_single = attach_device_filter(cg.get(), {deny("a"), allow("c", 1, 3, "rw")});
  ASSERT_TRUE(over_single) << over_single.error().str();
  EXPECT_EQ(attached(cg.get()), "1 programs, single");
  EXPECT_EQ(probe(dir), "null: opened, zero: EPERM");

  // A directory that is not a cgroup2 one gets a clear error.
  UniqueFd tmp(::open("/tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  ASSERT_TRUE(tmp);
  auto wrong = attach_device_filter(tmp.get(), {deny("a")});
  ASSERT_FALSE(wrong);
  EXPECT_NE(wrong.error().str().find("cgroup"), std::string::npos) << wrong.error().str();
}

}  // namespace
}  // namespace berth::cgroup
