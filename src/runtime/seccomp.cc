#include "runtime/seccomp.h"

#include <linux/seccomp.h>
#include <seccomp.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string_view>

#include "util/fs.h"
#include "util/log.h"

#ifndef SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
#define SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (1UL << 5)
#endif
#ifndef SECCOMP_FILTER_FLAG_TSYNC_ESRCH
#define SECCOMP_FILTER_FLAG_TSYNC_ESRCH (1UL << 4)
#endif

namespace berth::seccomp {
namespace {

constexpr std::string_view kPrefix = "config.json: linux.seccomp.";

// Releases the libseccomp context on every path out of compile().
struct Ctx {
  scmp_filter_ctx ctx = nullptr;
  ~Ctx() {
    if (ctx) seccomp_release(ctx);
  }
};

struct ArchName {
  std::string_view name;
  uint32_t arch;
};
constexpr std::array kArchs = {
    ArchName{"SCMP_ARCH_X86", SCMP_ARCH_X86},
    ArchName{"SCMP_ARCH_X86_64", SCMP_ARCH_X86_64},
    ArchName{"SCMP_ARCH_X32", SCMP_ARCH_X32},
    ArchName{"SCMP_ARCH_ARM", SCMP_ARCH_ARM},
    ArchName{"SCMP_ARCH_AARCH64", SCMP_ARCH_AARCH64},
    ArchName{"SCMP_ARCH_MIPS", SCMP_ARCH_MIPS},
    ArchName{"SCMP_ARCH_MIPS64", SCMP_ARCH_MIPS64},
    ArchName{"SCMP_ARCH_MIPS64N32", SCMP_ARCH_MIPS64N32},
    ArchName{"SCMP_ARCH_MIPSEL", SCMP_ARCH_MIPSEL},
    ArchName{"SCMP_ARCH_MIPSEL64", SCMP_ARCH_MIPSEL64},
    ArchName{"SCMP_ARCH_MIPSEL64N32", SCMP_ARCH_MIPSEL64N32},
    ArchName{"SCMP_ARCH_PPC", SCMP_ARCH_PPC},
    ArchName{"SCMP_ARCH_PPC64", SCMP_ARCH_PPC64},
    ArchName{"SCMP_ARCH_PPC64LE", SCMP_ARCH_PPC64LE},
    ArchName{"SCMP_ARCH_S390", SCMP_ARCH_S390},
    ArchName{"SCMP_ARCH_S390X", SCMP_ARCH_S390X},
    ArchName{"SCMP_ARCH_PARISC", SCMP_ARCH_PARISC},
    ArchName{"SCMP_ARCH_PARISC64", SCMP_ARCH_PARISC64},
    ArchName{"SCMP_ARCH_RISCV64", SCMP_ARCH_RISCV64},
};

struct OpName {
  std::string_view name;
  scmp_compare op;
};
constexpr std::array kOps = {
    OpName{"SCMP_CMP_NE", SCMP_CMP_NE},         OpName{"SCMP_CMP_LT", SCMP_CMP_LT},
    OpName{"SCMP_CMP_LE", SCMP_CMP_LE},         OpName{"SCMP_CMP_EQ", SCMP_CMP_EQ},
    OpName{"SCMP_CMP_GE", SCMP_CMP_GE},         OpName{"SCMP_CMP_GT", SCMP_CMP_GT},
    OpName{"SCMP_CMP_MASKED_EQ", SCMP_CMP_MASKED_EQ},
};

struct FlagName {
  std::string_view name;
  unsigned flag;
};
constexpr std::array kFlags = {
    FlagName{"SECCOMP_FILTER_FLAG_TSYNC", SECCOMP_FILTER_FLAG_TSYNC},
    FlagName{"SECCOMP_FILTER_FLAG_LOG", SECCOMP_FILTER_FLAG_LOG},
    FlagName{"SECCOMP_FILTER_FLAG_SPEC_ALLOW", SECCOMP_FILTER_FLAG_SPEC_ALLOW},
    FlagName{"SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV", SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV},
};

constexpr std::array<std::string_view, 9> kActions = {
    "SCMP_ACT_KILL",  "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP",
    "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE",        "SCMP_ACT_ALLOW",       "SCMP_ACT_LOG",
    "SCMP_ACT_NOTIFY",
};

std::string quoted(std::string_view s) {
  std::string q = "\"";
  q += s;
  q += '"';
  return q;
}

// `field` names the action's place in the spec; `errno_field` the errnoRet beside it.
Result<uint32_t> parse_action(const std::string& name, std::optional<unsigned> errno_ret,
                              const std::string& field, const std::string& errno_field) {
  std::optional<uint32_t> act;
  bool takes_errno = false;
  if (name == "SCMP_ACT_KILL" || name == "SCMP_ACT_KILL_THREAD") {
    act = SCMP_ACT_KILL_THREAD;
  } else if (name == "SCMP_ACT_KILL_PROCESS") {
    act = SCMP_ACT_KILL_PROCESS;
  } else if (name == "SCMP_ACT_TRAP") {
    act = SCMP_ACT_TRAP;
  } else if (name == "SCMP_ACT_ERRNO") {
    act = SCMP_ACT_ERRNO(errno_ret.value_or(EPERM));
    takes_errno = true;
  } else if (name == "SCMP_ACT_TRACE") {
    act = SCMP_ACT_TRACE(errno_ret.value_or(EPERM));
    takes_errno = true;
  } else if (name == "SCMP_ACT_ALLOW") {
    act = SCMP_ACT_ALLOW;
  } else if (name == "SCMP_ACT_LOG") {
    act = SCMP_ACT_LOG;
  } else if (name == "SCMP_ACT_NOTIFY") {
    act = SCMP_ACT_NOTIFY;
  }
  if (!act) return fail(std::string(kPrefix) + field + ": unknown action " + quoted(name));
  if (errno_ret && !takes_errno)
    return fail(std::string(kPrefix) + errno_field + ": only valid with SCMP_ACT_ERRNO or SCMP_ACT_TRACE, not " +
                name);
  return *act;
}

Result<scmp_compare> parse_op(const std::string& name, const std::string& field) {
  for (const auto& o : kOps)
    if (o.name == name) return o.op;
  return fail(std::string(kPrefix) + field + ": unknown operator " + quoted(name));
}

Result<std::vector<sock_filter>> export_bpf(scmp_filter_ctx ctx) {
  UniqueFd fd(::memfd_create("berth-seccomp", MFD_CLOEXEC));
  if (!fd) return sys_error("memfd_create");
  if (int rc = seccomp_export_bpf(ctx, fd.get()); rc < 0) return sys_error(-rc, "export seccomp filter");
  off_t size = ::lseek(fd.get(), 0, SEEK_END);
  if (size < 0) return sys_error("lseek seccomp filter");
  if (size % sizeof(sock_filter) != 0) return fail("export seccomp filter: truncated program");
  std::vector<sock_filter> prog(static_cast<size_t>(size) / sizeof(sock_filter));
  auto* p = reinterpret_cast<char*>(prog.data());
  size_t done = 0;
  while (done < static_cast<size_t>(size)) {
    ssize_t n = ::pread(fd.get(), p + done, static_cast<size_t>(size) - done, static_cast<off_t>(done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return sys_error("read seccomp filter");
    }
    if (n == 0) return fail("read seccomp filter: short read");
    done += static_cast<size_t>(n);
  }
  return prog;
}

}  // namespace

Result<Program> compile(const oci::Seccomp& s) {
  Program prog;

  if (s.default_action == "SCMP_ACT_NOTIFY")
    return fail(std::string(kPrefix) + "defaultAction: SCMP_ACT_NOTIFY cannot be the default action");
  uint32_t def = TRY(parse_action(s.default_action, s.default_errno_ret, "defaultAction", "defaultErrnoRet"));

  for (size_t i = 0; i < s.flags.size(); ++i) {
    bool found = false;
    for (const auto& f : kFlags) {
      if (f.name == s.flags[i]) {
        prog.flags |= f.flag;
        found = true;
      }
    }
    if (!found)
      return fail(std::string(kPrefix) + "flags[" + std::to_string(i) + "]: unknown flag " + quoted(s.flags[i]));
  }

  Ctx c;
  c.ctx = seccomp_init(def);
  if (!c.ctx) return fail(std::string(kPrefix) + "defaultAction: libseccomp rejected " + s.default_action);

  // no_new_privs follows process.noNewPrivileges, which the runtime applies itself.
  if (int rc = seccomp_attr_set(c.ctx, SCMP_FLTATR_CTL_NNP, 0); rc < 0)
    return sys_error(-rc, "seccomp: clear no_new_privs attribute");

  // A binary tree of the syscall numbers, not a list tried in turn. The
  // kernel runs the program once for every syscall number as it installs it
  // (to cache the ones it always allows): over Docker's default profile's
  // list that was 0.35 ms of every container's start, measured.
  if (int rc = seccomp_attr_set(c.ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2); rc < 0)
    return sys_error(-rc, "seccomp: ask for a binary tree");

  for (size_t i = 0; i < s.architectures.size(); ++i) {
    std::optional<uint32_t> arch;
    for (const auto& a : kArchs)
      if (a.name == s.architectures[i]) arch = a.arch;
    std::string field = "architectures[" + std::to_string(i) + "]";
    if (!arch) return fail(std::string(kPrefix) + field + ": unknown architecture " + quoted(s.architectures[i]));
    // The native arch is already in a fresh context, and profiles may repeat one.
    int rc = seccomp_arch_add(c.ctx, *arch);
    if (rc < 0 && rc != -EEXIST) return sys_error(-rc, std::string(kPrefix) + field + ": add " + s.architectures[i]);
  }

  for (size_t i = 0; i < s.syscalls.size(); ++i) {
    const auto& call = s.syscalls[i];
    std::string at = "syscalls[" + std::to_string(i) + "]";
    uint32_t act = TRY(parse_action(call.action, call.errno_ret, at + ".action", at + ".errnoRet"));
    if (act == SCMP_ACT_NOTIFY) prog.notify = true;

    std::vector<scmp_arg_cmp> cmps;
    std::array<unsigned, 6> per_index{};
    bool repeated_index = false;
    for (size_t k = 0; k < call.args.size(); ++k) {
      const auto& a = call.args[k];
      std::string field = at + ".args[" + std::to_string(k) + "]";
      scmp_compare op = TRY(parse_op(a.op, field + ".op"));
      if (a.index >= per_index.size())
        return fail(std::string(kPrefix) + field + ".index: must be between 0 and 5");
      if (++per_index[a.index] > 1) repeated_index = true;
      scmp_arg_cmp cmp{};
      cmp.arg = a.index;
      cmp.op = op;
      cmp.datum_a = a.value;
      cmp.datum_b = op == SCMP_CMP_MASKED_EQ ? a.value_two : a.value;
      cmps.push_back(cmp);
    }

    // libseccomp refuses to add the default action as a rule; such rules are no-ops anyway.
    if (act == def) continue;

    for (const auto& name : call.names) {
      int nr = seccomp_syscall_resolve_name(name.c_str());
      if (nr == __NR_SCMP_ERROR) {
        log::debug("seccomp: skipping unknown syscall \"" + name + "\"");
        continue;
      }
      auto add = [&](const scmp_arg_cmp* v, unsigned n) -> Result<> {
        if (int rc = seccomp_rule_add_array(c.ctx, act, nr, n, v); rc < 0)
          return sys_error(-rc, std::string(kPrefix) + at + ": add rule for " + quoted(name));
        return {};
      };
      // libseccomp cannot compare one argument twice in a rule; as runc does, such
      // entries become one rule per comparison, so any of them matching applies.
      if (repeated_index) {
        for (const auto& cmp : cmps) TRY(add(&cmp, 1));
      } else {
        TRY(add(cmps.data(), static_cast<unsigned>(cmps.size())));
      }
    }
  }

  prog.filter = TRY_CTX(export_bpf(c.ctx), "seccomp");
  if (prog.filter.size() > BPF_MAXINSNS)
    return fail(std::string(kPrefix) + "syscalls: the filter has " + std::to_string(prog.filter.size()) +
                " instructions, more than the kernel's limit of " + std::to_string(BPF_MAXINSNS));
  return prog;
}

namespace {

// Every field of the profile, length-prefixed: what a cache entry must match.
std::string canonical(const oci::Seccomp& s) {
  std::string out;
  auto put = [&](std::string_view v) {
    out += std::to_string(v.size());
    out += ':';
    out += v;
  };
  auto put_num = [&](uint64_t v) { put(std::to_string(v)); };
  put(s.default_action);
  put(s.default_errno_ret ? std::to_string(*s.default_errno_ret) : "-");
  put_num(s.architectures.size());
  for (auto& a : s.architectures) put(a);
  put_num(s.flags.size());
  for (auto& f : s.flags) put(f);
  put(s.listener_path);
  put(s.listener_metadata);
  put_num(s.syscalls.size());
  for (auto& c : s.syscalls) {
    put_num(c.names.size());
    for (auto& n : c.names) put(n);
    put(c.action);
    put(c.errno_ret ? std::to_string(*c.errno_ret) : "-");
    put_num(c.args.size());
    for (auto& a : c.args) {
      put_num(a.index);
      put_num(a.value);
      put_num(a.value_two);
      put(a.op);
    }
  }
  return out;
}

// FNV-1a: names the cache file only; the entry's full profile text decides.
uint64_t fnv1a(std::string_view s) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

}  // namespace

Result<Program> compile_cached(const oci::Seccomp& s, const std::string& dir) {
  std::string key = canonical(s);
  char name[32];
  std::snprintf(name, sizeof name, "%016llx", static_cast<unsigned long long>(fnv1a(key)));
  std::string path = dir + "/" + name;
  // Entry: "berth-seccomp-2\n" <flags> <notify> <key length>\n <key> <filter bytes>.
  // (-1's entries are lists, compiled before the binary tree.)
  const std::string magic = "berth-seccomp-2\n";
  if (auto data = read_file(path); data && data->starts_with(magic)) {
    unsigned flags = 0, notify = 0;
    unsigned long long klen = 0;
    int used = 0;
    const char* head = data->c_str() + magic.size();
    if (std::sscanf(head, "%u %u %llu\n%n", &flags, &notify, &klen, &used) == 3 && used > 0) {
      size_t at = magic.size() + static_cast<size_t>(used);
      if (data->size() >= at + klen && data->compare(at, klen, key) == 0 &&
          (data->size() - at - klen) % sizeof(sock_filter) == 0) {
        Program p;
        p.flags = flags;
        p.notify = notify != 0;
        size_t n = (data->size() - at - klen) / sizeof(sock_filter);
        p.filter.resize(n);
        std::memcpy(p.filter.data(), data->data() + at + klen, n * sizeof(sock_filter));
        return p;
      }
    }
  }
  Program p = TRY(compile(s));
  if (mkdir_p(dir, 0700)) {
    std::string entry = magic + std::to_string(p.flags) + " " + std::to_string(p.notify ? 1 : 0) + " " +
                        std::to_string(key.size()) + "\n" + key;
    entry.append(reinterpret_cast<const char*>(p.filter.data()), p.filter.size() * sizeof(sock_filter));
    if (auto r = atomic_write_file(path, entry, 0600); !r) log::debug("seccomp cache: " + r.error().str());
  }
  return p;
}

Result<UniqueFd> install(const Program& p) {
  sock_fprog fprog{};
  fprog.len = static_cast<unsigned short>(p.filter.size());
  fprog.filter = const_cast<sock_filter*>(p.filter.data());
  unsigned long flags = p.flags;
  if (p.notify) {
    flags |= SECCOMP_FILTER_FLAG_NEW_LISTENER;
    // The kernel refuses TSYNC with a listener unless a sync failure is reported
    // as ESRCH, since the return value is the listener fd.
    if (flags & SECCOMP_FILTER_FLAG_TSYNC) flags |= SECCOMP_FILTER_FLAG_TSYNC_ESRCH;
  }
  long rc = ::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &fprog);
  if (rc < 0) return sys_error("seccomp");
  if (p.notify) return UniqueFd(static_cast<int>(rc));
  // With TSYNC, a positive result is the id of a thread that could not be synchronised.
  if (rc > 0) return sys_error(ESRCH, "seccomp: synchronise thread " + std::to_string(rc));
  return UniqueFd();
}

std::vector<std::string> known_actions() {
  return {kActions.begin(), kActions.end()};
}

std::vector<std::string> known_operators() {
  std::vector<std::string> v;
  for (const auto& o : kOps) v.emplace_back(o.name);
  return v;
}

std::vector<std::string> known_archs() {
  std::vector<std::string> v;
  for (const auto& a : kArchs) v.emplace_back(a.name);
  return v;
}

std::vector<std::string> known_flags() {
  std::vector<std::string> v;
  for (const auto& f : kFlags) v.emplace_back(f.name);
  return v;
}

}  // namespace berth::seccomp
