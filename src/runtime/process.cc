#include "runtime/process.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <sched.h>
#include <signal.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "util/fd.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/syscalls.h"

namespace berth::runtime {

Result<> apply_rlimits(const std::vector<oci::Rlimit>& limits) {
  for (auto& l : limits) {
    int res = oci::rlimit_number(l.type);
    struct rlimit want = {l.soft, l.hard};
    if (::setrlimit(res, &want) == 0) continue;
    if (errno != EPERM) return sys_error("process.rlimits " + l.type);
    // Raising a hard limit needs CAP_SYS_RESOURCE, which some hosts (and every
    // rootless setup) lack. A limit lower than asked is still a limit, so clamp to
    // what the host allows instead of failing the container.
    struct rlimit cur;
    ::getrlimit(res, &cur);
    struct rlimit clamped = {std::min<rlim_t>(l.soft, cur.rlim_max), std::min<rlim_t>(l.hard, cur.rlim_max)};
    if (::setrlimit(res, &clamped) < 0) return sys_error("process.rlimits " + l.type);
    log::warn("process.rlimits " + l.type + ": hard limit " + std::to_string(l.hard) +
              " exceeds the host's " + std::to_string(cur.rlim_max) + ", clamped");
  }
  return {};
}

Result<std::vector<int>> parse_cpu_list(const std::string& s, const char* field) {
  std::vector<int> cpus;
  for (auto& part : split(s, ',')) {
    if (part.empty()) continue;
    auto dash = part.find('-');
    char* end = nullptr;
    long a = std::strtol(part.c_str(), &end, 10);
    long b = a;
    if (dash != std::string::npos) b = std::strtol(part.c_str() + dash + 1, &end, 10);
    if (*end != '\0' || a < 0 || b < a || b >= CPU_SETSIZE)
      return fail(std::string(field) + ": invalid cpu list \"" + s + "\"");
    for (long c = a; c <= b; ++c) cpus.push_back(static_cast<int>(c));
  }
  if (cpus.empty()) return fail(std::string(field) + ": empty cpu list");
  return cpus;
}

Result<> apply_cpu_affinity(const std::string& s, const char* field) {
  if (s.empty()) return {};
  auto cpus = TRY(parse_cpu_list(s, field));
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int c : cpus) CPU_SET(c, &set);
  if (::sched_setaffinity(0, sizeof set, &set) < 0) return sys_error(std::string(field) + " \"" + s + "\"");
  return {};
}

namespace {
struct SchedAttr {
  uint32_t size;
  uint32_t sched_policy;
  uint64_t sched_flags;
  int32_t sched_nice;
  uint32_t sched_priority;
  uint64_t sched_runtime, sched_deadline, sched_period;
};
}  // namespace

Result<> apply_scheduling(const oci::Process& p) {
  if (p.scheduler) {
    auto& s = *p.scheduler;
    SchedAttr a = {};
    a.size = sizeof a;
    static const std::pair<const char*, uint32_t> policies[] = {
        {"SCHED_OTHER", 0}, {"SCHED_FIFO", 1}, {"SCHED_RR", 2}, {"SCHED_BATCH", 3},
        {"SCHED_ISO", 4},   {"SCHED_IDLE", 5}, {"SCHED_DEADLINE", 6}};
    for (auto& [n, v] : policies)
      if (s.policy == n) a.sched_policy = v;
    static const std::pair<const char*, uint64_t> flags[] = {
        {"SCHED_FLAG_RESET_ON_FORK", 0x01}, {"SCHED_FLAG_RECLAIM", 0x02},
        {"SCHED_FLAG_DL_OVERRUN", 0x04},    {"SCHED_FLAG_KEEP_POLICY", 0x08},
        {"SCHED_FLAG_KEEP_PARAMS", 0x10},   {"SCHED_FLAG_UTIL_CLAMP_MIN", 0x20},
        {"SCHED_FLAG_UTIL_CLAMP_MAX", 0x40}};
    for (auto& f : s.flags) {
      bool known = false;
      for (auto& [n, v] : flags)
        if (f == n) a.sched_flags |= v, known = true;
      if (!known) return fail("process.scheduler.flags: unknown flag \"" + f + "\"");
    }
    a.sched_nice = s.nice;
    a.sched_priority = static_cast<uint32_t>(s.priority);
    a.sched_runtime = s.runtime;
    a.sched_deadline = s.deadline;
    a.sched_period = s.period;
    if (::syscall(SYS_sched_setattr, 0, &a, 0) < 0) return sys_error("process.scheduler " + s.policy);
  }
  if (p.io_priority) {
    int cls = p.io_priority->klass == "IOPRIO_CLASS_RT" ? 1 : p.io_priority->klass == "IOPRIO_CLASS_BE" ? 2 : 3;
    if (sys::ioprio_set(1 /* IOPRIO_WHO_PROCESS */, 0, (cls << 13) | p.io_priority->priority) < 0)
      return sys_error("process.ioPriority");
  }
  return {};
}

Result<> apply_personality(const oci::Linux& l) {
  if (!l.personality_domain) return {};
  if (!l.personality_flags.empty())
    return fail("linux.personality.flags: no flags are supported");
  unsigned long persona = *l.personality_domain == "LINUX32" ? PER_LINUX32 : PER_LINUX;
  if (::personality(persona) < 0) return sys_error("linux.personality " + *l.personality_domain);
  return {};
}

namespace {

uint64_t cap_mask(const std::vector<std::string>& names) {
  uint64_t m = 0;
  for (auto& n : names) m |= 1ULL << oci::capability_number(n);
  return m;
}

int last_cap() {
  static int last = [] {
    auto v = read_file("/proc/sys/kernel/cap_last_cap");
    return v ? std::atoi(v->c_str()) : 40;
  }();
  return last;
}

Result<> capset_sets(uint64_t eff, uint64_t perm, uint64_t inh) {
  struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct data[2] = {};
  data[0].effective = static_cast<uint32_t>(eff);
  data[1].effective = static_cast<uint32_t>(eff >> 32);
  data[0].permitted = static_cast<uint32_t>(perm);
  data[1].permitted = static_cast<uint32_t>(perm >> 32);
  data[0].inheritable = static_cast<uint32_t>(inh);
  data[1].inheritable = static_cast<uint32_t>(inh >> 32);
  if (::syscall(SYS_capset, &hdr, data) < 0) return sys_error("capset");
  return {};
}

}  // namespace

Result<> apply_user_and_caps(const oci::Process& p) {
  oci::Capabilities none;
  const oci::Capabilities& c = p.capabilities ? *p.capabilities : none;
  uint64_t bounding = cap_mask(c.bounding);
  // Bounding set first: dropping needs CAP_SETPCAP, which the user switch may take.
  for (int cap = 0; cap <= last_cap(); ++cap) {
    if (bounding & (1ULL << cap)) continue;
    if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
      return sys_error("drop capability " + std::to_string(cap) + " from the bounding set");
  }
  if (::prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0) return sys_error("prctl(PR_SET_KEEPCAPS)");

  // Exactly the configured supplementary groups: nothing inherited from the
  // runtime (CVE-2023-25173 class). Denied by a user namespace's setgroups=deny.
  std::vector<gid_t> groups(p.user.additional_gids.begin(), p.user.additional_gids.end());
  if (::setgroups(groups.size(), groups.data()) < 0) {
    bool denied = false;
    if (errno == EPERM)
      if (auto s = read_file("/proc/self/setgroups"); s && s->rfind("deny", 0) == 0) denied = true;
    if (!denied || !groups.empty()) return sys_error("setgroups (process.user.additionalGids)");
  }
  if (::setresgid(p.user.gid, p.user.gid, p.user.gid) < 0)
    return sys_error("setgid " + std::to_string(p.user.gid) + " (process.user.gid)");
  if (::setresuid(p.user.uid, p.user.uid, p.user.uid) < 0)
    return sys_error("setuid " + std::to_string(p.user.uid) + " (process.user.uid)");

  uint64_t inh = cap_mask(c.inheritable);
  TRY_CTX(capset_sets(cap_mask(c.effective), cap_mask(c.permitted), inh), "process.capabilities");
  if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
    return sys_error("clear ambient capabilities");
  for (auto& n : c.ambient) {
    // An ambient capability must be permitted and inheritable; runc skips the
    // others with a warning rather than failing.
    if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, oci::capability_number(n), 0, 0) < 0)
      log::warn("process.capabilities.ambient: cannot raise " + n + ": " + std::strerror(errno));
  }
  if (::prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) < 0) return sys_error("prctl(PR_SET_KEEPCAPS)");
  // The config's, else 0022 as runc and Docker give (not the caller's).
  ::umask(p.user.umask ? static_cast<mode_t>(*p.user.umask) : 0022);
  if (p.no_new_privileges && ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
    return sys_error("prctl(PR_SET_NO_NEW_PRIVS)");
  return {};
}

Result<> apply_lsm_labels(const oci::Process& p) {
  if (!p.selinux_label.empty()) {
    if (::access("/sys/fs/selinux/enforce", F_OK) == 0 || ::access("/proc/thread-self/attr/exec", W_OK) == 0) {
      auto r = write_file("/proc/thread-self/attr/exec", p.selinux_label);
      if (!r) return std::unexpected(std::move(r).error().context("process.selinuxLabel"));
    } else {
      log::debug("process.selinuxLabel ignored: SELinux is not enabled");
    }
  }
  if (!p.apparmor_profile.empty()) {
    auto enabled = read_file("/sys/module/apparmor/parameters/enabled");
    if (enabled && !enabled->empty() && (*enabled)[0] == 'Y') {
      auto r = write_file("/proc/thread-self/attr/apparmor/exec", "exec " + p.apparmor_profile);
      if (!r) return std::unexpected(std::move(r).error().context("process.apparmorProfile"));
    } else {
      log::debug("process.apparmorProfile ignored: AppArmor is not enabled");
    }
  }
  return {};
}

Result<std::string> lookup_executable(const std::string& arg0, const std::vector<std::string>& env) {
  auto executable = [](const std::string& p) {
    struct stat st;
    return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(p.c_str(), X_OK) == 0;
  };
  if (arg0.find('/') != std::string::npos) {
    if (executable(arg0)) return arg0;
    return sys_error(errno == 0 ? EACCES : errno, "exec: \"" + arg0 + "\"");
  }
  std::string path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  for (auto& e : env)
    if (e.rfind("PATH=", 0) == 0) path = e.substr(5);
  for (auto& dir : split(path, ':')) {
    std::string cand = join_path(dir.empty() ? "." : dir, arg0);
    if (executable(cand)) return cand;
  }
  return fail("exec: \"" + arg0 + "\": executable file not found in $PATH");
}

namespace {
void close_range_except(int first, std::vector<int> keep, unsigned flags) {
  int lo = first;
  std::sort(keep.begin(), keep.end());
  for (int k : keep) {
    if (k < lo) continue;
    if (k > lo) sys::close_range(static_cast<unsigned>(lo), static_cast<unsigned>(k - 1), flags);
    lo = k + 1;
  }
  sys::close_range(static_cast<unsigned>(lo), ~0U, flags);
}
}  // namespace

void close_fds_except(int preserve_fds, const std::vector<int>& keep) {
  close_range_except(3 + preserve_fds, keep, 0);
}

void prepare_fds_for_exec(int preserve_fds, const std::vector<int>& keep) {
  int first = 3 + preserve_fds;
  // Everything from `first` up becomes close-on-exec, except what we still need
  // until the execve (and those are CLOEXEC already).
  close_range_except(first, keep, CLOSE_RANGE_CLOEXEC);
  for (int fd = 3; fd < first; ++fd) {
    int fl = ::fcntl(fd, F_GETFD);
    if (fl >= 0) ::fcntl(fd, F_SETFD, fl & ~FD_CLOEXEC);
  }
}

namespace {
// The kernel's struct sigaction, for the raw rt_sigaction: glibc's wrapper
// refuses its own two signals (32 and 33).
struct KernelSigaction {
  void (*handler)(int);
  unsigned long flags;
  void (*restorer)();
  uint64_t mask;
};
}  // namespace

uint64_t signals_not_default() {
  // Asked of the kernel signal by signal: 64 cheap calls, where formatting
  // /proc/thread-self/status to read its SigIgn and SigCgt took ~60 us here.
  KernelSigaction old = {};
  uint64_t mask = 0;
  for (int s = 1; s <= 64; ++s) {
    if (s == SIGKILL || s == SIGSTOP) continue;
    if (::syscall(SYS_rt_sigaction, s, nullptr, &old, sizeof old.mask) != 0) return ~uint64_t{0};
    if (old.handler != SIG_DFL) mask |= uint64_t{1} << (s - 1);
  }
  return mask;
}

Error exec_process(const std::string& path, const oci::Process& p, uint64_t reset, bool all_blocked) {
  sigset_t mask;
  if (all_blocked)
    sigfillset(&mask);
  else
    sigemptyset(&mask);
  // The raw call: glibc's refuses its own two (32 and 33), which would stay
  // ignored in the container if the caller ignored them.
  KernelSigaction dfl = {SIG_DFL, 0, nullptr, 0};
  for (int s = 1; s < NSIG && s <= 64; ++s)
    if (s != SIGKILL && s != SIGSTOP && (reset & (uint64_t{1} << (s - 1))))
      ::syscall(SYS_rt_sigaction, s, &dfl, nullptr, sizeof dfl.mask);
  ::sigprocmask(SIG_SETMASK, &mask, nullptr);
  std::vector<char*> argv, envp;
  for (auto& a : p.args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (auto& e : p.env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  ::execve(path.c_str(), argv.data(), envp.data());
  return Error{errno, "exec \"" + p.args[0] + "\""};
}

}  // namespace berth::runtime
