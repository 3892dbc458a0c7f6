#include "engine/seccomp_profile.h"

#include <sys/utsname.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "util/fs.h"

namespace berth::engine {

using json = nlohmann::json;

namespace {

bool has(const std::vector<std::string>& caps, std::string_view c) {
  return std::find(caps.begin(), caps.end(), c) != caps.end();
}

// The architectures a filter must cover: a 32-bit system call entry bypasses
// rules written for the native one alone.
std::vector<std::string> host_arches() {
#if defined(__x86_64__)
  return {"SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"};
#elif defined(__aarch64__)
  return {"SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"};
#else
  return {};
#endif
}

std::string native_arch() {
  auto a = host_arches();
  return a.empty() ? "" : a.front();
}

// Docker's default policy as rules over an allowing default.
json default_profile(const std::vector<std::string>& caps) {
  struct Group {
    std::vector<const char*> any_of;  // capabilities that allow the calls (none: never allowed)
    std::vector<const char*> calls;
  };
  static const Group groups[] = {
      {{}, {"add_key", "request_key", "keyctl", "lookup_dcookie", "nfsservctl", "sysfs", "_sysctl", "uselib",
            "ustat", "vm86", "vm86old", "get_kernel_syms", "query_module", "create_module", "io_uring_setup",
            "io_uring_enter", "io_uring_register"}},
      {{"CAP_SYS_PACCT"}, {"acct"}},
      {{"CAP_SYS_ADMIN", "CAP_BPF"}, {"bpf"}},
      {{"CAP_SYS_TIME"}, {"clock_adjtime", "clock_adjtime64", "clock_settime", "clock_settime64", "settimeofday", "stime"}},
      {{"CAP_SYS_MODULE"}, {"delete_module", "finit_module", "init_module"}},
      {{"CAP_SYS_NICE"}, {"get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node", "move_pages"}},
      {{"CAP_SYS_RAWIO"}, {"ioperm", "iopl"}},
      {{"CAP_SYS_PTRACE"}, {"kcmp", "process_vm_readv", "process_vm_writev", "ptrace", "pidfd_getfd", "userfaultfd"}},
      {{"CAP_SYS_BOOT"}, {"kexec_file_load", "kexec_load", "reboot"}},
      {{"CAP_SYS_ADMIN"}, {"mount", "umount", "umount2", "pivot_root", "setns", "unshare", "swapon", "swapoff",
                           "quotactl", "quotactl_fd", "fsopen", "fsconfig", "fsmount", "fspick", "move_mount",
                           "open_tree", "mount_setattr", "lookup_dcookie", "fanotify_init"}},
      {{"CAP_DAC_READ_SEARCH"}, {"open_by_handle_at", "name_to_handle_at"}},
      {{"CAP_SYS_ADMIN", "CAP_PERFMON"}, {"perf_event_open"}},
      {{"CAP_SYSLOG", "CAP_SYS_ADMIN"}, {"syslog"}},
  };
  // Built by moves into preallocated containers: nlohmann's nested
  // initializer lists copy every level (this was 80 us of every `run` here).
  auto str = [](const char* v) { return json(json::string_t(v)); };
  auto one = [](json v) {
    json a(json::value_t::array);
    a.get_ref<json::array_t&>().push_back(std::move(v));
    return a;
  };
  auto rule = [&](json names, const char* action, int errno_ret) {
    json r(json::value_t::object);
    auto& o = r.get_ref<json::object_t&>();
    o.emplace("names", std::move(names));
    o.emplace("action", str(action));
    o.emplace("errnoRet", errno_ret);
    return r;
  };
  json denied(json::value_t::array);
  auto& names = denied.get_ref<json::array_t&>();
  names.reserve(96);
  for (auto& g : groups) {
    bool allowed = std::any_of(g.any_of.begin(), g.any_of.end(), [&](const char* c) { return has(caps, c); });
    if (allowed) continue;
    for (auto* c : g.calls) names.push_back(str(c));
  }
  json syscalls(json::value_t::array);
  auto& calls = syscalls.get_ref<json::array_t&>();
  calls.reserve(9);
  calls.push_back(rule(std::move(denied), "SCMP_ACT_ERRNO", 1));
  if (!has(caps, "CAP_SYS_ADMIN")) {
    // New namespaces through clone: refused flag by flag (MASKED_EQ tests
    // `arg & value == valueTwo`); clone3's flags are out of a filter's reach,
    // so it answers ENOSYS and libc falls back to clone.
    for (uint64_t flag : {0x00020000ull, 0x02000000ull, 0x04000000ull, 0x08000000ull, 0x10000000ull, 0x20000000ull,
                          0x40000000ull}) {
      json r = rule(one(str("clone")), "SCMP_ACT_ERRNO", 1);
      json arg(json::value_t::object);
      auto& a = arg.get_ref<json::object_t&>();
      a.emplace("index", 0);
      a.emplace("value", flag);
      a.emplace("valueTwo", flag);
      a.emplace("op", str("SCMP_CMP_MASKED_EQ"));
      r.get_ref<json::object_t&>().emplace("args", one(std::move(arg)));
      calls.push_back(std::move(r));
    }
    calls.push_back(rule(one(str("clone3")), "SCMP_ACT_ERRNO", 38));
  }
  json arches(json::value_t::array);
  for (auto& a : host_arches()) arches.get_ref<json::array_t&>().push_back(json(std::move(a)));
  json out(json::value_t::object);
  auto& o = out.get_ref<json::object_t&>();
  o.emplace("defaultAction", str("SCMP_ACT_ALLOW"));
  o.emplace("architectures", std::move(arches));
  o.emplace("syscalls", std::move(syscalls));
  return out;
}

// "6.1.0-13-amd64" >= "5.8"?
bool kernel_at_least(const std::string& want) {
  struct utsname u;
  if (::uname(&u) != 0) return true;
  int a = 0, b = 0, x = 0, y = 0;
  std::sscanf(u.release, "%d.%d", &a, &b);
  std::sscanf(want.c_str(), "%d.%d", &x, &y);
  return a > x || (a == x && b >= y);
}

// A profile in Docker's format (or OCI's, which is a subset) for this
// container: rules kept or dropped by their includes/excludes.
Result<json> from_file(const std::string& path, const std::vector<std::string>& caps) {
  std::string text = TRY_CTX(read_file(path), "--security-opt seccomp");
  json p = json::parse(text, nullptr, false);
  if (!p.is_object()) return fail("--security-opt seccomp=" + path + ": not a JSON object");
  if (!p.contains("defaultAction") || !p["defaultAction"].is_string())
    return fail("--security-opt seccomp=" + path + ": defaultAction is required");
  json out = {{"defaultAction", p["defaultAction"]}};
  if (p.contains("defaultErrnoRet")) out["defaultErrnoRet"] = p["defaultErrnoRet"];
  if (p.contains("flags")) out["flags"] = p["flags"];
  std::vector<std::string> arches;
  std::string native = native_arch();
  if (p.contains("archMap") && p["archMap"].is_array()) {
    for (auto& m : p["archMap"])
      if (m.value("architecture", "") == native) {
        arches.push_back(native);
        for (auto& sub : m.value("subArchitectures", json::array())) arches.push_back(sub.get<std::string>());
      }
  } else if (p.contains("architectures") && p["architectures"].is_array()) {
    for (auto& a : p["architectures"]) arches.push_back(a.get<std::string>());
  }
  if (!arches.empty()) out["architectures"] = arches;
  json calls = json::array();
  for (auto& s : p.value("syscalls", json::array())) {
    if (!s.is_object()) return fail("--security-opt seccomp=" + path + ": a syscalls entry is not an object");
    json inc = s.value("includes", json::object()), exc = s.value("excludes", json::object());
    bool keep = true;
    for (auto& c : inc.value("caps", json::array())) keep &= has(caps, c.get<std::string>());
    for (auto& c : exc.value("caps", json::array())) keep &= !has(caps, c.get<std::string>());
    json inc_arches = inc.value("arches", json::array()), exc_arches = exc.value("arches", json::array());
    std::string short_arch = native == "SCMP_ARCH_X86_64" ? "amd64" : native == "SCMP_ARCH_AARCH64" ? "arm64" : "";
    if (!inc_arches.empty())
      keep &= std::any_of(inc_arches.begin(), inc_arches.end(), [&](const json& a) { return a == short_arch; });
    for (auto& a : exc_arches) keep &= a != short_arch;
    if (inc.contains("minKernel") && inc["minKernel"].is_string()) keep &= kernel_at_least(inc["minKernel"]);
    if (!keep) continue;
    json r = json::object();
    if (s.contains("names")) r["names"] = s["names"];
    else if (s.contains("name")) r["names"] = json::array({s["name"]});
    else return fail("--security-opt seccomp=" + path + ": a syscalls entry names no system call");
    r["action"] = s.value("action", "");
    if (s.contains("errnoRet")) r["errnoRet"] = s["errnoRet"];
    if (s.contains("args") && s["args"].is_array()) r["args"] = s["args"];
    calls.push_back(r);
  }
  out["syscalls"] = calls;
  return out;
}

}  // namespace

Result<std::optional<json>> seccomp_profile(std::string_view profile, const std::vector<std::string>& caps) {
  if (profile == "unconfined") return std::optional<json>();
  if (profile.empty()) return std::optional<json>(default_profile(caps));
  return std::optional<json>(TRY(from_file(std::string(profile), caps)));
}

}  // namespace berth::engine
