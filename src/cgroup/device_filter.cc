#include "cgroup/device_filter.h"

#include <linux/bpf.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>

namespace berth::cgroup {

namespace {

static_assert(sizeof(BpfInsn) == sizeof(struct bpf_insn), "BpfInsn must match struct bpf_insn");

// Registers the program keeps the request in, loaded once at the top. r1 holds
// the context on entry and is reused as scratch afterwards; r0 is the verdict.
constexpr uint8_t kCtx = 1, kScratch = 1, kType = 2, kAccess = 3, kMajor = 4, kMinor = 5;

BpfInsn insn(uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm) {
  return BpfInsn{code, dst, src, off, imm};
}

// One request shape a rule matches: the type bit (0: both), major and minor
// (nullopt: any), the access bits, and what a match decides.
struct Exception {
  bool allow;
  uint32_t type;
  std::optional<uint32_t> major, minor;
  uint32_t access;
};

// Parsed rules after the last reset: the default and the exceptions in the
// order they were written.
struct Rules {
  bool default_allow = false;
  std::vector<Exception> exceptions;
};

// Major and minor are u32 in the context, and the kernel's are far smaller
// (12 and 20 bits), so a value above INT32_MAX can never match anything. The
// program compares against a sign-extended 32-bit immediate, which is exact
// only up to INT32_MAX: such a rule is dropped rather than emitted wrongly.
constexpr int64_t kMaxId = INT32_MAX;

Result<Rules> parse(const std::vector<oci::DeviceCgroupRule>& rules) {
  Rules out;
  for (size_t i = 0; i < rules.size(); ++i) {
    const auto& r = rules[i];
    std::string where = "linux.resources.devices[" + std::to_string(i) + "]: ";
    uint32_t type = 0;
    if (r.type == "c") {
      type = BPF_DEVCG_DEV_CHAR;
    } else if (r.type == "b") {
      type = BPF_DEVCG_DEV_BLOCK;
    } else if (!r.type.empty() && r.type != "a") {
      return fail(where + "unknown device type \"" + r.type + "\" (expected a, b or c)");
    }
    uint32_t access = 0;
    for (char c : r.access) {
      if (c == 'r') {
        access |= BPF_DEVCG_ACC_READ;
      } else if (c == 'w') {
        access |= BPF_DEVCG_ACC_WRITE;
      } else if (c == 'm') {
        access |= BPF_DEVCG_ACC_MKNOD;
      } else {
        return fail(where + "unknown access \"" + r.access + "\" (expected letters of rwm)");
      }
    }
    if (access == 0) access = BPF_DEVCG_ACC_READ | BPF_DEVCG_ACC_WRITE | BPF_DEVCG_ACC_MKNOD;

    // Negative (the spec's -1, or absent) is the wildcard, as in cgroup.cc's v1 rules.
    std::optional<uint32_t> major, minor;
    if (r.major && *r.major >= 0) {
      if (*r.major > kMaxId) continue;
      major = static_cast<uint32_t>(*r.major);
    }
    if (r.minor && *r.minor >= 0) {
      if (*r.minor > kMaxId) continue;
      minor = static_cast<uint32_t>(*r.minor);
    }

    // "a" for every device is v1's reset: the access letters don't matter there
    // either (devices.allow ignores everything after the "a").
    if (type == 0 && !major && !minor) {
      out.default_allow = r.allow;
      out.exceptions.clear();
      continue;
    }
    out.exceptions.push_back(Exception{r.allow, type, major, minor, access});
  }
  return out;
}

}  // namespace

// The program:
//   r2 = ctx->access_type; r4 = ctx->major; r5 = ctx->minor
//   r3 = r2 >> 16 (access bits); r2 &= 0xffff (type bit)
//   then one block per exception, the last written first, each falling through
//   to the next on a mismatch:
//     if r2 != type goto next           (left out for type a)
//     if r4 != major goto next          (left out for a wildcard)
//     if r5 != minor goto next          (left out for a wildcard)
//     r1 = r3 & ~access; if r1 != 0 goto next   (allow: nothing outside the rule)
//     r1 = r3 & access;  if r1 == 0 goto next   (deny: anything inside the rule)
//     r0 = allow; exit
//   r0 = default; exit
// Jumps only go forward, so the verifier sees a DAG of at most a few
// instructions per rule; 32-bit ALU results are zero-extended, so the 64-bit
// compares against non-negative immediates are exact.
Result<std::vector<BpfInsn>> compile_device_filter(
    const std::vector<oci::DeviceCgroupRule>& rules) {
  Rules parsed = TRY(parse(rules));

  std::vector<BpfInsn> p;
  p.push_back(insn(BPF_LDX | BPF_MEM | BPF_W, kType, kCtx,
                   offsetof(struct bpf_cgroup_dev_ctx, access_type), 0));
  p.push_back(
      insn(BPF_LDX | BPF_MEM | BPF_W, kMajor, kCtx, offsetof(struct bpf_cgroup_dev_ctx, major), 0));
  p.push_back(
      insn(BPF_LDX | BPF_MEM | BPF_W, kMinor, kCtx, offsetof(struct bpf_cgroup_dev_ctx, minor), 0));
  p.push_back(insn(BPF_ALU | BPF_MOV | BPF_X, kAccess, kType, 0, 0));
  p.push_back(insn(BPF_ALU | BPF_RSH | BPF_K, kAccess, 0, 0, 16));
  p.push_back(insn(BPF_ALU | BPF_AND | BPF_K, kType, 0, 0, 0xffff));

  for (auto it = parsed.exceptions.rbegin(); it != parsed.exceptions.rend(); ++it) {
    const Exception& e = *it;
    // Each block is built with its jumps aimed at its own end, which is where
    // the next block (or the default) begins: off = end - (pc + 1).
    struct Jump {
      uint8_t op, reg;
      int32_t imm;
    };
    std::vector<Jump> checks;
    if (e.type) checks.push_back({BPF_JNE, kType, static_cast<int32_t>(e.type)});
    if (e.major) checks.push_back({BPF_JNE, kMajor, static_cast<int32_t>(*e.major)});
    if (e.minor) checks.push_back({BPF_JNE, kMinor, static_cast<int32_t>(*e.minor)});
    size_t len = checks.size() + 3 /* access test */ + 2 /* verdict */;
    size_t end = p.size() + len;
    for (const Jump& j : checks) {
      auto off = static_cast<int16_t>(end - (p.size() + 1));
      p.push_back(insn(BPF_JMP | j.op | BPF_K, j.reg, 0, off, j.imm));
    }
    p.push_back(insn(BPF_ALU | BPF_MOV | BPF_X, kScratch, kAccess, 0, 0));
    if (e.allow) {
      p.push_back(insn(BPF_ALU | BPF_AND | BPF_K, kScratch, 0, 0, static_cast<int32_t>(~e.access)));
      p.push_back(insn(BPF_JMP | BPF_JNE | BPF_K, kScratch, 0,
                       static_cast<int16_t>(end - (p.size() + 1)), 0));
    } else {
      p.push_back(insn(BPF_ALU | BPF_AND | BPF_K, kScratch, 0, 0, static_cast<int32_t>(e.access)));
      p.push_back(insn(BPF_JMP | BPF_JEQ | BPF_K, kScratch, 0,
                       static_cast<int16_t>(end - (p.size() + 1)), 0));
    }
    p.push_back(insn(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, e.allow ? 1 : 0));
    p.push_back(insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0));
  }
  p.push_back(insn(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, parsed.default_allow ? 1 : 0));
  p.push_back(insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0));
  // A block is at most 8 instructions and the kernel takes a million: the
  // 16-bit jump offsets (each within one block) can't overflow.
  return p;
}

namespace {

long sys_bpf(int cmd, union bpf_attr* attr) { return ::syscall(SYS_bpf, cmd, attr, sizeof(*attr)); }

// The one line for a bpf() that fails before the program ever reaches the
// verifier: no bpf() at all, or no right to load or attach.
std::string bpf_hint(int err) {
  if (err == ENOSYS)
    return "this kernel has no bpf() (CONFIG_BPF_SYSCALL), so no cgroup v2 device control";
  if (err == EPERM)
    return "bpf() needs CAP_BPF or CAP_SYS_ADMIN in the initial user namespace "
           "(and, before Linux 5.11, enough RLIMIT_MEMLOCK)";
  return "";
}

std::unexpected<Error> bpf_error(int err, std::string what) {
  std::string hint = bpf_hint(err);
  if (!hint.empty()) what += ": " + hint;
  return sys_error(err, std::move(what));
}

// What EBADF from a query or attach means: the fd is open, but not on a
// cgroup2 directory (a v1 hierarchy's, or no cgroup at all).
const std::string kNotCgroup2 = "not a cgroup v2 directory";

// The line of a verifier log that says why: the last one, less the statistics
// ("processed N insns ...") the kernel ends every log with.
std::string verifier_reason(const std::string& log) {
  size_t end = log.size();
  while (end > 0) {
    size_t begin = log.rfind('\n', end - 1);
    begin = begin == std::string::npos ? 0 : begin + 1;
    std::string line = log.substr(begin, end - begin);
    end = begin > 0 ? begin - 1 : 0;
    if (!line.empty() && !line.starts_with("processed ")) return line;
  }
  return "";
}

Result<UniqueFd> load(const std::vector<BpfInsn>& prog) {
  static const char kLicense[] = "GPL";
  auto attempt = [&](char* log, uint32_t log_size) {
    union bpf_attr attr;
    std::memset(&attr, 0, sizeof(attr));
    attr.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
    attr.insns = reinterpret_cast<uintptr_t>(prog.data());
    attr.insn_cnt = static_cast<uint32_t>(prog.size());
    attr.license = reinterpret_cast<uintptr_t>(kLicense);
    std::strncpy(attr.prog_name, "berth_devices", sizeof(attr.prog_name) - 1);
    if (log) {
      attr.log_buf = reinterpret_cast<uintptr_t>(log);
      attr.log_size = log_size;
      attr.log_level = 1;
    }
    // The kernel always hands out bpf fds close-on-exec.
    return static_cast<int>(sys_bpf(BPF_PROG_LOAD, &attr));
  };
  const std::string what = "load the cgroup device filter";
  // Without a log first: a log that turns out too small fails the load itself
  // (ENOSPC), and a verifier that passes has nothing worth reading.
  int fd = attempt(nullptr, 0);
  if (fd >= 0) return UniqueFd(fd);
  int err = errno;
  if (err != EINVAL && err != EACCES) return bpf_error(err, what);
  std::string log(64 * 1024, '\0');
  fd = attempt(log.data(), static_cast<uint32_t>(log.size()));
  if (fd >= 0) return UniqueFd(fd);  // passed the second time: take it
  std::string why = verifier_reason(log.c_str());
  return sys_error(err, why.empty() ? what : what + ": verifier: " + why);
}

// The ids of the device programs attached to the cgroup itself (not inherited),
// and the attach flags they were attached with.
struct Attached {
  std::vector<uint32_t> ids;
  uint32_t flags = 0;
};

Result<Attached> query(int cgroup_dir) {
  // A cgroup holds at most 64 programs per attach type (BPF_CGROUP_MAX_PROGS);
  // grow on ENOSPC anyway, in case that changes.
  std::vector<uint32_t> ids(64);
  for (;;) {
    union bpf_attr attr;
    std::memset(&attr, 0, sizeof(attr));
    attr.query.target_fd = static_cast<uint32_t>(cgroup_dir);
    attr.query.attach_type = BPF_CGROUP_DEVICE;
    attr.query.prog_ids = reinterpret_cast<uintptr_t>(ids.data());
    attr.query.prog_cnt = static_cast<uint32_t>(ids.size());
    if (sys_bpf(BPF_PROG_QUERY, &attr) == 0) {
      ids.resize(attr.query.prog_cnt);
      return Attached{std::move(ids), attr.query.attach_flags};
    }
    if (errno == EBADF)
      return sys_error(EBADF, "query the cgroup's device filters: " + kNotCgroup2);
    if (errno != ENOSPC || attr.query.prog_cnt <= ids.size())
      return bpf_error(errno, "query the cgroup's device filters");
    ids.resize(attr.query.prog_cnt);
  }
}

}  // namespace

Result<> attach_device_filter(int cgroup_dir, const std::vector<oci::DeviceCgroupRule>& rules) {
  auto prog = TRY(compile_device_filter(rules));
  UniqueFd fd = TRY(load(prog));
  Attached old = TRY(query(cgroup_dir));

  // Programs attached with BPF_F_ALLOW_MULTI all run and must all allow, so the
  // new one is added beside the old ones and they go after it: in between the
  // cgroup gets the stricter of both, never nothing. A cgroup whose program was
  // attached by someone else without ALLOW_MULTI takes no second program
  // (EPERM); attaching with that program's own flags replaces it in one step.
  bool multi = old.ids.empty() || (old.flags & BPF_F_ALLOW_MULTI);
  union bpf_attr attr;
  std::memset(&attr, 0, sizeof(attr));
  attr.target_fd = static_cast<uint32_t>(cgroup_dir);
  attr.attach_bpf_fd = static_cast<uint32_t>(fd.get());
  attr.attach_type = BPF_CGROUP_DEVICE;
  attr.attach_flags = multi ? BPF_F_ALLOW_MULTI : old.flags;
  if (sys_bpf(BPF_PROG_ATTACH, &attr) != 0) {
    int err = errno;
    if (err == EBADF) return sys_error(err, "attach the cgroup device filter: " + kNotCgroup2);
    return bpf_error(err, "attach the cgroup device filter");
  }
  if (!multi) return {};

  // The cgroup keeps its own reference to an attached program, so the new one
  // stays after `fd` closes; the old ones are detached by fd, found by id.
  for (uint32_t id : old.ids) {
    std::memset(&attr, 0, sizeof(attr));
    attr.prog_id = id;
    UniqueFd old_fd(static_cast<int>(sys_bpf(BPF_PROG_GET_FD_BY_ID, &attr)));
    if (!old_fd) {
      if (errno == ENOENT) continue;  // gone already (detached by someone else)
      return bpf_error(errno, "open the old cgroup device filter (id " + std::to_string(id) + ")");
    }
    std::memset(&attr, 0, sizeof(attr));
    attr.target_fd = static_cast<uint32_t>(cgroup_dir);
    attr.attach_bpf_fd = static_cast<uint32_t>(old_fd.get());
    attr.attach_type = BPF_CGROUP_DEVICE;
    if (sys_bpf(BPF_PROG_DETACH, &attr) != 0 && errno != ENOENT)
      return bpf_error(errno,
                       "detach the old cgroup device filter (id " + std::to_string(id) + ")");
  }
  return {};
}

}  // namespace berth::cgroup
