#include "engine/spec.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "engine/seccomp_profile.h"
#include "engine/user.h"
#include "runtime/process.h"
#include "util/fs.h"

namespace berth::engine {

using json = nlohmann::json;

namespace {

// Moby's default capability set.
const char* const kDefaultCaps[] = {"CAP_CHOWN",  "CAP_DAC_OVERRIDE", "CAP_FSETID",           "CAP_FOWNER",
                                    "CAP_MKNOD",  "CAP_NET_RAW",      "CAP_SETGID",           "CAP_SETUID",
                                    "CAP_SETFCAP", "CAP_SETPCAP",     "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT",
                                    "CAP_KILL",   "CAP_AUDIT_WRITE"};

// Capabilities by number, as the kernel numbers them.
const char* const kCapNames[] = {
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
    "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN",
    "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE"};

// The capabilities berth can give, for --privileged and --cap-add ALL: those
// the running kernel has and berth itself holds in its bounding set (a
// machine may withhold some, such as CAP_SYS_RESOURCE on this VM): a process
// cannot grant what it lacks.
std::vector<std::string> all_caps() {
  int last = 40;
  if (auto s = read_file("/proc/sys/kernel/cap_last_cap"); s) last = std::atoi(s->c_str());
  uint64_t bounding = ~uint64_t{0};
  if (auto st = read_file("/proc/self/status"); st)
    for (auto& line : split(*st, '\n'))
      if (line.starts_with("CapBnd:")) bounding = std::strtoull(line.c_str() + 7, nullptr, 16);
  std::vector<std::string> out;
  for (int i = 0; i < static_cast<int>(std::size(kCapNames)) && i <= last; ++i)
    if (bounding & (uint64_t{1} << i)) out.push_back(kCapNames[i]);
  return out;
}

// "sys_admin", "CAP_SYS_ADMIN", "ALL" -> "CAP_SYS_ADMIN" / "ALL"; `adding`:
// a capability berth does not hold itself is an error too.
Result<std::string> cap_name(std::string c, bool adding) {
  for (auto& ch : c) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  if (c == "ALL") return c;
  if (!c.starts_with("CAP_")) c = "CAP_" + c;
  if (std::find(std::begin(kCapNames), std::end(kCapNames), c) == std::end(kCapNames))
    return fail("unknown capability: \"" + c + "\"");
  if (adding) {
    auto held = all_caps();
    if (std::find(held.begin(), held.end(), c) == held.end())
      return fail(c + ": not in berth's own bounding set (this host withholds it), so no container can have it");
  }
  return c;
}

std::vector<std::string> strings(const json& j, const char* key) {
  std::vector<std::string> out;
  if (j.contains(key) && j[key].is_array())
    for (auto& v : j[key])
      if (v.is_string()) out.push_back(v.get<std::string>());
  return out;
}
std::string str(const json& j, const char* key) {
  return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : std::string();
}
int64_t num(const json& j, const char* key) {
  return j.contains(key) && j[key].is_number_integer() ? j[key].get<int64_t>() : 0;
}
bool flag(const json& j, const char* key) { return j.contains(key) && j[key].is_boolean() && j[key].get<bool>(); }

json parse(std::string_view text, const char* what) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return json::object();
  (void)what;
  return j;
}

// "KEY=value" lists merged by key, later ones winning, order of first appearance kept.
std::vector<std::string> merge_env(const std::vector<std::string>& base, const std::vector<std::string>& over) {
  std::vector<std::string> out;
  std::map<std::string, size_t> at;
  for (auto* list : {&base, &over})
    for (auto& e : *list) {
      std::string k = e.substr(0, e.find('='));
      if (auto it = at.find(k); it != at.end()) out[it->second] = e;
      else at[k] = out.size(), out.push_back(e);
    }
  return out;
}

json mount(const char* dest, const char* type, const char* src, std::vector<std::string> opts) {
  return json{{"destination", dest}, {"type", type}, {"source", src}, {"options", std::move(opts)}};
}

}  // namespace

std::vector<std::string> all_capabilities() { return all_caps(); }

namespace {
// Entrypoint and Cmd of the image under the body's (ic: the image's "config").
Result<std::vector<std::string>> command_of(const json& body, const json& ic) {
  std::vector<std::string> entry = strings(ic, "Entrypoint"), cmd = strings(ic, "Cmd");
  if (body.contains("Entrypoint") && body["Entrypoint"].is_array()) {
    entry = strings(body, "Entrypoint");
    cmd.clear();  // an entrypoint given replaces the image's command too, as Docker does
  }
  if (body.contains("Cmd") && body["Cmd"].is_array() && !body["Cmd"].empty()) cmd = strings(body, "Cmd");
  std::vector<std::string> args = entry;
  args.insert(args.end(), cmd.begin(), cmd.end());
  if (args.empty()) return fail("no command specified");
  return args;
}
}  // namespace

Result<std::vector<std::string>> container_command(std::string_view body_text, std::string_view image_text) {
  json body = parse(body_text, "body");
  json img = parse(image_text, "image config");
  return command_of(body, img.contains("config") && img["config"].is_object() ? img["config"] : json::object());
}

std::string container_cgroup_path(const std::string& id, bool systemd) {
  return systemd ? "system.slice:berth:" + id : "/berth-" + id;
}

Result<std::string> make_spec(const SpecInput& in) {
  static const json none = json::object();
  const json& body = in.body && in.body->is_object() ? *in.body : none;
  json host = body.contains("HostConfig") && body["HostConfig"].is_object() ? body["HostConfig"] : json::object();
  const json& img = in.image && in.image->is_object() ? *in.image : none;
  json ic = img.contains("config") && img["config"].is_object() ? img["config"] : json::object();
  bool privileged = flag(host, "Privileged");
  bool tty = flag(body, "Tty");

  json spec = {{"ociVersion", "1.3.0"}};
  // process
  json proc;
  proc["terminal"] = tty;
  if (tty && host.contains("ConsoleSize") && host["ConsoleSize"].is_array() && host["ConsoleSize"].size() == 2 &&
      host["ConsoleSize"][0].is_number_unsigned() && host["ConsoleSize"][0].get<unsigned>() > 0)
    proc["consoleSize"] = {{"height", host["ConsoleSize"][0]}, {"width", host["ConsoleSize"][1]}};
  std::vector<std::string> args = TRY(command_of(body, ic));
  if (flag(host, "Init")) {
    // berth's init as PID 1 (bind-mounted below): it reaps and forwards signals.
    if (in.init_path.empty() || !path_exists(in.init_path)) return fail("--init: berth-init is not installed");
    args.insert(args.begin(), {"/sbin/berth-init", "--"});
  }
  proc["args"] = std::move(args);
  std::string hostname = str(body, "Hostname");
  if (hostname.empty()) hostname = in.id.substr(0, 12);
  std::vector<std::string> env = strings(ic, "Env");
  bool has_path = false;
  for (auto& e : merge_env(env, strings(body, "Env"))) has_path |= e.starts_with("PATH=");
  std::vector<std::string> base = {};
  if (!has_path) base.push_back("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
  base.push_back("HOSTNAME=" + hostname);
  if (tty) base.push_back("TERM=xterm");
  env = merge_env(merge_env(base, env), strings(body, "Env"));

  std::string user = str(body, "User");
  if (user.empty()) user = str(ic, "User");
  ExecUser eu = TRY_CTX(resolve_user_in(in.etc_passwd, in.etc_group, user, strings(host, "GroupAdd")), "--user");
  proc["user"] = {{"uid", eu.uid}, {"gid", eu.gid}};
  // The primary group first among the supplementary ones, as Docker does
  // (`id` then shows groups=), then those /etc/group and --group-add give.
  std::vector<gid_t> gids = {eu.gid};
  for (gid_t g : eu.additional_gids)
    if (g != eu.gid) gids.push_back(g);
  proc["user"]["additionalGids"] = gids;
  bool has_home = false;
  for (auto& e : env) has_home |= e.starts_with("HOME=");
  if (!has_home) env.push_back("HOME=" + eu.home);
  proc["env"] = env;

  std::string cwd = str(body, "WorkingDir");
  if (cwd.empty()) cwd = str(ic, "WorkingDir");
  if (cwd.empty()) cwd = "/";
  if (cwd[0] != '/') return fail("--workdir \"" + cwd + "\": the working directory must be an absolute path");
  // Docker makes a missing working directory; inside the rootfs only.
  if (cwd != "/" && in.rootfs_fd < 0 && in.workdir_to_make) *in.workdir_to_make = cwd;
  else if (cwd != "/") TRY_CTX(mkdir_in_root(in.rootfs_fd, cwd, 0755), "--workdir " + cwd);
  proc["cwd"] = cwd;

  std::vector<std::string> caps;
  if (privileged) {
    caps = all_caps();
  } else {
    std::set<std::string> set(std::begin(kDefaultCaps), std::end(kDefaultCaps));
    bool all = false;
    for (auto& c : strings(host, "CapDrop")) {
      std::string n = TRY_CTX(cap_name(c, false), "--cap-drop");
      if (n == "ALL") set.clear();
      else set.erase(n);
    }
    for (auto& c : strings(host, "CapAdd")) {
      std::string n = TRY_CTX(cap_name(c, true), "--cap-add");
      if (n == "ALL") all = true;
      else set.insert(n);
    }
    if (all)
      for (auto& c : all_caps()) set.insert(c);
    caps.assign(set.begin(), set.end());
  }
  // Docker gives a non-root user no effective capabilities of its own
  // (ambient none); the bounding set is what it may gain through exec.
  json cj = {{"bounding", caps}, {"permitted", caps}, {"effective", caps}};
  if (eu.uid != 0) cj = {{"bounding", caps}};
  proc["capabilities"] = cj;
  bool nnp = false;
  std::string seccomp;  // "": Docker's default profile
  for (auto& o : strings(host, "SecurityOpt")) {
    if (o == "no-new-privileges" || o == "no-new-privileges:true" || o == "no-new-privileges=true") nnp = true;
    else if (o == "no-new-privileges:false" || o == "no-new-privileges=false") nnp = false;
    else if (o.starts_with("seccomp=") || o.starts_with("seccomp:")) seccomp = o.substr(8);
    else if (o.starts_with("label=") || o.starts_with("label:") || o.starts_with("apparmor="))
      continue;  // no LSM on this host's containers
    else return fail("--security-opt \"" + o + "\": unknown option");
  }
  std::optional<json> filter;
  if (!privileged) filter = TRY(seccomp_profile(seccomp, caps));
  proc["noNewPrivileges"] = nnp;
  json rl = json::array();
  for (auto& u : host.value("Ulimits", json::array())) {
    std::string name = u.value("Name", "");
    std::string up;
    for (char ch : name) up += static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    if (up == "NPROC" || up == "NOFILE" || up == "CORE" || up == "MEMLOCK" || up == "STACK" || up == "CPU" ||
        up == "FSIZE" || up == "DATA" || up == "RSS" || up == "AS" || up == "LOCKS" || up == "SIGPENDING" ||
        up == "MSGQUEUE" || up == "NICE" || up == "RTPRIO" || up == "RTTIME")
      rl.push_back({{"type", "RLIMIT_" + up}, {"soft", u.value("Soft", int64_t{0})}, {"hard", u.value("Hard", int64_t{0})}});
    else return fail("--ulimit \"" + name + "\": unknown limit");
  }
  if (!rl.empty()) proc["rlimits"] = rl;
  spec["process"] = std::move(proc);

  spec["root"] = {{"path", "rootfs"}, {"readonly", flag(host, "ReadonlyRootfs")}};
  spec["hostname"] = hostname;

  // mounts, Docker's defaults
  std::string shm = "size=67108864";
  if (int64_t s = num(host, "ShmSize"); s > 0) shm = "size=" + std::to_string(s);
  json mounts = json::array({
      mount("/proc", "proc", "proc", {"nosuid", "noexec", "nodev"}),
      mount("/dev", "tmpfs", "tmpfs", {"nosuid", "strictatime", "mode=755", "size=65536k"}),
      mount("/dev/pts", "devpts", "devpts", {"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}),
      mount("/sys", "sysfs", "sysfs", {"nosuid", "noexec", "nodev", privileged ? "rw" : "ro"}),
      mount("/sys/fs/cgroup", "cgroup", "cgroup", {"nosuid", "noexec", "nodev", "relatime", privileged ? "rw" : "ro"}),
      mount("/dev/mqueue", "mqueue", "mqueue", {"nosuid", "noexec", "nodev"}),
      mount("/dev/shm", "tmpfs", "shm", {"nosuid", "noexec", "nodev", "mode=1777", shm}),
  });
  // --tmpfs, then binds, volumes and --mount tmpfs (a parent before what lies
  // under it), then /etc/hostname, hosts and resolv.conf unless one is mounted
  // by the user: they come last so that a volume on /etc does not hide them.
  std::set<std::string> user_dests;
  // A named copy: iterating over a temporary's items() would dangle.
  const json tmpfs_opts = host.value("Tmpfs", json::object());
  for (auto& [dest, opts] : tmpfs_opts.items()) {
    if (dest.empty() || dest[0] != '/') return fail("--tmpfs \"" + dest + "\": the path must be absolute");
    std::vector<std::string> o = {"nosuid", "nodev", "noexec"};
    if (opts.is_string())
      for (auto& x : split(opts.get<std::string>(), ','))
        if (!x.empty()) o.push_back(x);
    mounts.push_back({{"destination", dest}, {"type", "tmpfs"}, {"source", "tmpfs"}, {"options", o}});
    user_dests.insert(clean_path(dest));
  }
  for (auto& m : in.mounts) {
    std::vector<std::string> o;
    if (m.type == "tmpfs") {
      o = {"nosuid", "nodev", "noexec"};
      o.insert(o.end(), m.tmpfs_options.begin(), m.tmpfs_options.end());
    } else {
      // Docker's default propagation for volumes too.
      o = {"rbind", m.propagation.empty() ? "rprivate" : m.propagation};
    }
    o.push_back(m.rw ? "rw" : "ro");
    mounts.push_back({{"destination", m.destination},
                      {"type", m.type == "tmpfs" ? "tmpfs" : "bind"},
                      {"source", m.type == "tmpfs" ? "tmpfs" : m.source},
                      {"options", o}});
    user_dests.insert(m.destination);
  }
  bool ro_root = flag(host, "ReadonlyRootfs");
  if (flag(host, "Init"))
    mounts.push_back({{"destination", "/sbin/berth-init"}, {"type", "bind"}, {"source", in.init_path},
                      {"options", {"bind", "ro", "nosuid", "nodev"}}});
  for (auto* f : {"hostname", "hosts", "resolv.conf"}) {
    std::string src = in.dir + "/" + f;
    if (!path_exists((in.staging.empty() ? in.dir : in.staging) + "/" + f) ||
        user_dests.contains(std::string("/etc/") + f))
      continue;
    mounts.push_back({{"destination", std::string("/etc/") + f}, {"type", "bind"}, {"source", src},
                      {"options", {"rbind", "rprivate", ro_root ? "ro" : "rw"}}});
  }
  spec["mounts"] = std::move(mounts);

  // linux
  json linux;
  json ns = json::array();
  auto ns_mode = [&](const char* key, const char* type, bool default_new) -> Result<> {
    std::string mode = str(host, key);
    if (mode == "host") return {};
    if (mode.starts_with("container:")) {
      for (auto& [t, pid] : in.joined)
        if (t == type) {
          ns.push_back({{"type", type}, {"path", "/proc/" + std::to_string(pid) + "/ns/" + (std::string(type) == "network" ? "net" : type)}});
          return {};
        }
      return fail(std::string("--") + key + " " + mode + ": that container is not running");
    }
    if (!mode.empty() && mode != "private" && mode != "none" && mode != "default" && mode != "bridge" &&
        mode != "shareable")
      return fail(std::string("--") + key + " \"" + mode + "\": unknown mode");
    if (default_new) ns.push_back({{"type", type}});
    return {};
  };
  ns.push_back({{"type", "mount"}});
  TRY(ns_mode("PidMode", "pid", true));
  TRY(ns_mode("IpcMode", "ipc", true));
  TRY(ns_mode("UTSMode", "uts", true));
  TRY(ns_mode("NetworkMode", "network", true));
  ns.push_back({{"type", "cgroup"}});
  linux["namespaces"] = std::move(ns);
  // A shared uts namespace has no hostname of ours to set.
  if (str(host, "UTSMode") == "host" || str(host, "UTSMode").starts_with("container:")) spec.erase("hostname");

  json res;
  if (int64_t m = num(host, "Memory"); m > 0) {
    res["memory"]["limit"] = m;
    int64_t swap = num(host, "MemorySwap");
    if (swap == 0) swap = 2 * m;  // Docker: as much swap as memory
    if (swap > 0 && swap < m) return fail("--memory-swap must be larger than --memory");
    res["memory"]["swap"] = swap;
  } else if (num(host, "MemorySwap") > 0) {
    return fail("--memory-swap needs --memory");
  }
  if (int64_t r = num(host, "MemoryReservation"); r > 0) res["memory"]["reservation"] = r;
  if (int64_t s = num(host, "CpuShares"); s > 0) res["cpu"]["shares"] = s;
  if (int64_t n = num(host, "NanoCpus"); n > 0) {
    res["cpu"]["period"] = 100000;
    res["cpu"]["quota"] = n / 10000;  // ns of CPU per s -> us per 100 ms period
  }
  if (int64_t q = num(host, "CpuQuota"); q > 0) res["cpu"]["quota"] = q;
  if (int64_t p = num(host, "CpuPeriod"); p > 0) res["cpu"]["period"] = p;
  if (auto c = str(host, "CpusetCpus"); !c.empty()) res["cpu"]["cpus"] = c;
  if (auto c = str(host, "CpusetMems"); !c.empty()) res["cpu"]["mems"] = c;
  if (host.contains("PidsLimit") && host["PidsLimit"].is_number_integer() && host["PidsLimit"].get<int64_t>() != 0)
    res["pids"]["limit"] = host["PidsLimit"].get<int64_t>();
  if (int64_t w = num(host, "BlkioWeight"); w > 0) res["blockIO"]["weight"] = w;
  auto throttle = [&](const char* key, const char* oci_key, const char* field) -> Result<> {
    for (auto& t : host.value(key, json::array())) {
      std::string path = t.value("Path", "");
      struct stat st;
      if (::stat(path.c_str(), &st) != 0 || !S_ISBLK(st.st_mode))
        return fail(std::string("--device-") + oci_key + " " + path + ": not a block device");
      res["blockIO"][oci_key].push_back(
          {{"major", major(st.st_rdev)}, {"minor", minor(st.st_rdev)}, {"rate", t.value(field, int64_t{0})}});
    }
    return {};
  };
  TRY(throttle("BlkioDeviceReadBps", "throttleReadBpsDevice", "Rate"));
  TRY(throttle("BlkioDeviceWriteBps", "throttleWriteBpsDevice", "Rate"));
  TRY(throttle("BlkioDeviceReadIOps", "throttleReadIOPSDevice", "Rate"));
  TRY(throttle("BlkioDeviceWriteIOps", "throttleWriteIOPSDevice", "Rate"));

  json devrules = json::array();
  for (auto& r : base_device_rules(privileged)) devrules.push_back({{"allow", r.allow}, {"access", r.access}});
  json devices = json::array();
  for (auto& d : host.value("Devices", json::array())) {
    std::string src = d.value("PathOnHost", ""), dst = d.value("PathInContainer", "");
    std::string perms = d.value("CgroupPermissions", "rwm");
    if (dst.empty()) dst = src;
    struct stat st;
    if (::stat(src.c_str(), &st) != 0) return fail("--device " + src + ": no such device");
    if (!S_ISCHR(st.st_mode) && !S_ISBLK(st.st_mode)) return fail("--device " + src + ": not a device node");
    const char* type = S_ISCHR(st.st_mode) ? "c" : "b";
    devices.push_back({{"path", dst}, {"type", type}, {"major", major(st.st_rdev)}, {"minor", minor(st.st_rdev)},
                       {"fileMode", st.st_mode & 07777}, {"uid", 0}, {"gid", 0}});
    devrules.push_back({{"allow", true}, {"type", type}, {"major", major(st.st_rdev)}, {"minor", minor(st.st_rdev)},
                        {"access", perms}});
  }
  if (!devices.empty()) linux["devices"] = std::move(devices);
  res["devices"] = std::move(devrules);
  linux["resources"] = std::move(res);
  // The systemd form tells the runtime (launch) which driver the container has.
  linux["cgroupsPath"] = container_cgroup_path(in.id, in.systemd_cgroup);

  json sysctl = json::object();
  // A named copy: iterating over a temporary's items() would dangle.
  const json sysctls = host.value("Sysctls", json::object());
  for (auto& [k, v] : sysctls.items())
    if (v.is_string()) sysctl[k] = v;
  if (!sysctl.empty()) linux["sysctl"] = sysctl;
  if (!privileged) {
    linux["maskedPaths"] = {"/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys",
                            "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
                            "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap"};
    linux["readonlyPaths"] = {"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"};
  }
  if (filter) linux["seccomp"] = std::move(*filter);
  spec["linux"] = std::move(linux);

  json ann = json::object();
  // A named copy: iterating over a temporary's items() would dangle.
  const json annotations = host.value("Annotations", json::object());
  for (auto& [k, v] : annotations.items())
    if (v.is_string()) ann[k] = v;
  // berth-init starts with every signal blocked, so that a `stop` in its
  // first half millisecond is not lost (runtime/process.h).
  if (flag(host, "Init")) ann[runtime::kBlockSignalsAnnotation] = "true";
  if (!ann.empty()) spec["annotations"] = ann;
  // Compact: written by every create and read by every start (4 KB less than indented).
  return spec.dump();
}

}  // namespace berth::engine
