// Container verbs with Docker's names, flags, output and exit codes: create,
// start, run, stop, kill, rm, ps, logs, wait, rename, pause, unpause, top,
// port, and the monitor's exit command (`container cleanup`, hidden).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>

#include "cli/berth/cli.h"
#include "cli/berth/format.h"
#include "engine/attach.h"
#include "engine/engine.h"
#include "engine/logfile.h"
#include "engine/spare.h"
#include "engine/spec.h"
#include "engine/user.h"
#include "engine/volumes.h"
#include "runtime/container.h"
#include "util/fs.h"

namespace berth::cli {

using json = nlohmann::json;
using engine::Container;
using engine::Frame;

namespace {

engine::Engine& eng(Context& ctx) { return *check(ctx.engine()); }

// ------------------------------------------------------------ create flags --

struct RunFlags {
  std::string name, workdir, user, hostname, entrypoint, network, pid, ipc, uts, restart, stop_signal;
  std::string memory, memory_swap, memory_reservation, shm_size, cpuset_cpus, cpuset_mems, cpus;
  std::vector<std::string> env, env_file, labels, annotations, cap_add, cap_drop, security_opt, devices, sysctls,
      ulimits, tmpfs, volumes, publish, group_add, log_opts, blkio_read_bps, blkio_write_bps;
  std::vector<std::string> mounts, volumes_from;  // --mount, --volumes-from
  int64_t cpu_shares = 0, pids_limit = 0, blkio_weight = 0, cpu_quota = 0, cpu_period = 0;
  int stop_timeout = -1;
  std::string health_cmd, health_interval, health_timeout, health_start_period;
  int health_retries = 0;
  bool no_healthcheck = false;
  bool interactive = false, tty = false, read_only = false, privileged = false, rm = false, init = false;
  bool entrypoint_set = false;
  // run only
  bool detach = false;
  std::vector<std::string> command;  // IMAGE [COMMAND [ARG...]]
};

// CLI11 checks each new option against every one before it, so building
// create's and run's hundred-odd options was a quarter of `berth run`'s own
// instructions. Only the options a command line names are built: any option
// it does not name cannot change how it parses. Every token that begins with
// a dash counts (a short cluster like -it counts each letter), also those
// after the image (a superset is harmless); --help builds them all.
class NamedOptions {
 public:
  NamedOptions(CLI::App& app, const std::vector<std::string_view>& args) : app_(app) {
    for (auto a : args) {
      if (a == "--help" || a == "--help-all") all_ = true;
      if (a.size() < 2 || a[0] != '-') continue;
      if (a[1] == '-') {
        tokens_.emplace_back(a.substr(0, a.find('=')));
      } else {
        for (char ch : a.substr(1)) tokens_.push_back(std::string("-") + ch);
      }
    }
  }
  // `names` as CLI11 takes them: "-e,--env", "!-p,!--pause".
  bool wanted(std::string_view names) const {
    if (all_) return true;
    for (auto& n : split(names, ',')) {
      std::string_view name = n;
      if (name.starts_with("!")) name.remove_prefix(1);
      for (auto& t : tokens_)
        if (t == name) return true;
    }
    return false;
  }
  // One value (the last given wins) or, for a vector, one per occurrence.
  template <class T>
  CLI::Option* option(const char* names, T& into, const char* help) {
    if (!wanted(names)) return nullptr;
    CLI::Option* o = app_.add_option(names, into, help);
    if constexpr (std::is_same_v<T, std::vector<std::string>>) o->allow_extra_args(false);
    return o;
  }
  void flag(const char* names, bool& into, const char* help) {
    if (wanted(names)) app_.add_flag(names, into, help);
  }

 private:
  CLI::App& app_;
  bool all_ = false;
  std::vector<std::string> tokens_;
};

void add_create_flags(CLI::App& c, RunFlags& f, const std::vector<std::string_view>& args) {
  NamedOptions add(c, args);
  c.set_help_flag("--help", "Print usage");  // -h is --hostname here, as in Docker
  add.option("--name", f.name, "Assign a name to the container");
  add.option("-e,--env", f.env, "Set environment variables");
  add.option("--env-file", f.env_file, "Read in a file of environment variables");
  add.option("-w,--workdir", f.workdir, "Working directory inside the container");
  add.option("-u,--user", f.user, "Username or UID (format: <name|uid>[:<group|gid>])");
  add.option("-h,--hostname", f.hostname, "Container host name");
  if (auto* o = add.option("--entrypoint", f.entrypoint, "Overwrite the default ENTRYPOINT of the image"))
    o->each([&f](const std::string&) { f.entrypoint_set = true; });
  add.option("-l,--label", f.labels, "Set meta data on a container");
  add.option("--annotation", f.annotations, "Add an annotation to the container (passed through to the OCI runtime)");
  add.flag("-i,--interactive", f.interactive, "Keep STDIN open even if not attached");
  add.flag("-t,--tty", f.tty, "Allocate a pseudo-TTY");
  add.flag("--read-only", f.read_only, "Mount the container's root filesystem as read only");
  add.flag("--privileged", f.privileged, "Give extended privileges to this container");
  add.flag("--rm", f.rm, "Automatically remove the container when it exits");
  add.flag("--init", f.init, "Run an init inside the container that forwards signals and reaps processes");
  add.option("--cap-add", f.cap_add, "Add Linux capabilities");
  add.option("--cap-drop", f.cap_drop, "Drop Linux capabilities");
  add.option("--security-opt", f.security_opt, "Security Options");
  add.option("--device", f.devices, "Add a host device to the container");
  add.option("--sysctl", f.sysctls, "Sysctl options");
  add.option("--ulimit", f.ulimits, "Ulimit options");
  add.option("--tmpfs", f.tmpfs, "Mount a tmpfs directory");
  add.option("-v,--volume", f.volumes, "Bind mount a volume");
  add.option("--mount", f.mounts, "Attach a filesystem mount to the container");
  add.option("--volumes-from", f.volumes_from, "Mount volumes from the specified container(s)");
  add.option("-p,--publish", f.publish, "Publish a container's port(s) to the host");
  add.option("--group-add", f.group_add, "Add additional groups to join");
  add.option("--log-opt", f.log_opts, "Log driver options (max-size, max-file)");
  add.option("--network,--net", f.network, "Connect a container to a network (none, host, container:NAME)");
  add.option("--pid", f.pid, "PID namespace to use");
  add.option("--ipc", f.ipc, "IPC mode to use");
  add.option("--uts", f.uts, "UTS namespace to use");
  add.option("--restart", f.restart, "Restart policy to apply when a container exits");
  add.option("--stop-signal", f.stop_signal, "Signal to stop the container");
  add.option("--stop-timeout", f.stop_timeout, "Timeout (in seconds) to stop a container");
  add.option("-m,--memory", f.memory, "Memory limit");
  add.option("--memory-swap", f.memory_swap, "Swap limit equal to memory plus swap: '-1' to enable unlimited swap");
  add.option("--memory-reservation", f.memory_reservation, "Memory soft limit");
  add.option("--shm-size", f.shm_size, "Size of /dev/shm");
  add.option("--cpus", f.cpus, "Number of CPUs");
  add.option("-c,--cpu-shares", f.cpu_shares, "CPU shares (relative weight)");
  add.option("--cpu-quota", f.cpu_quota, "Limit CPU CFS (Completely Fair Scheduler) quota");
  add.option("--cpu-period", f.cpu_period, "Limit CPU CFS (Completely Fair Scheduler) period");
  add.option("--cpuset-cpus", f.cpuset_cpus, "CPUs in which to allow execution (0-3, 0,1)");
  add.option("--cpuset-mems", f.cpuset_mems, "MEMs in which to allow execution (0-3, 0,1)");
  add.option("--pids-limit", f.pids_limit, "Tune container pids limit (set -1 for unlimited)");
  add.option("--blkio-weight", f.blkio_weight, "Block IO (relative weight), between 10 and 1000, or 0 to disable");
  add.option("--device-read-bps", f.blkio_read_bps, "Limit read rate (bytes per second) from a device");
  add.option("--device-write-bps", f.blkio_write_bps, "Limit write rate (bytes per second) to a device");
  add.option("--health-cmd", f.health_cmd, "Command to run to check health");
  add.option("--health-interval", f.health_interval, "Time between running the check (ms|s|m|h)");
  add.option("--health-timeout", f.health_timeout, "Maximum time to allow one check to run (ms|s|m|h)");
  add.option("--health-start-period", f.health_start_period, "Start period for the container to initialize");
  add.option("--health-retries", f.health_retries, "Consecutive failures needed to report unhealthy");
  add.flag("--no-healthcheck", f.no_healthcheck, "Disable any container-specified HEALTHCHECK");
  c.add_option("IMAGE", f.command, "Image, then the command and its arguments")->required();
  // Everything after the image is the container's command, flags included.
  c.positionals_at_end();
  c.prefix_command();
}

// With prefix_command, CLI11 sets aside a flag it does not know instead of failing.
void reject_unknown(const CLI::App& c) {
  for (auto& r : c.remaining())
    if (r.starts_with("-")) die("unknown flag: " + r + "\nSee 'berth " + c.get_name() + " --help'.", 125);
}

// Docker's RAMInBytes: "512m", "1g", "1024" (bytes), units of 1024.
int64_t ram_bytes(const std::string& s, const char* flag) {
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  std::string unit(end ? end : "");
  for (auto& ch : unit) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  if (unit.size() == 2 && unit[1] == 'b') unit.pop_back();
  double m = 1;
  if (unit.empty() || unit == "b") m = 1;
  else if (unit == "k") m = 1024;
  else if (unit == "m") m = 1024.0 * 1024;
  else if (unit == "g") m = 1024.0 * 1024 * 1024;
  else if (unit == "t") m = 1024.0 * 1024 * 1024 * 1024;
  else m = -1;
  if (s.empty() || end == s.c_str() || m < 0 || v < 0)
    die("invalid argument \"" + s + "\" for \"" + flag + "\" flag: invalid size: '" + s + "'", 125);
  return static_cast<int64_t>(v * m);
}

std::map<std::string, std::string> key_values(const std::vector<std::string>& list, const char* flag) {
  std::map<std::string, std::string> out;
  for (auto& kv : list) {
    auto eq = kv.find('=');
    if (kv.empty() || eq == 0) die(std::string("invalid argument \"") + kv + "\" for \"" + flag + "\" flag", 125);
    out[kv.substr(0, eq)] = eq == std::string::npos ? "" : kv.substr(eq + 1);
  }
  return out;
}

// --mount type=bind|volume|tmpfs,source=S,target=T[,readonly][,...] as the
// API's HostConfig.Mounts entries, with Docker's keys and their aliases.
json mount_flags(const std::vector<std::string>& flags) {
  json out = json::array();
  for (auto& flag : flags) {
    auto bad = [&](const std::string& why) {
      die("invalid argument \"" + flag + "\" for \"--mount\" flag: " + why, 125);
    };
    json m = {{"Type", "volume"}}, bind = json::object(), vol = json::object(), tmpfs = json::object();
    for (auto& field : split(flag, ',')) {
      auto eq = field.find('=');
      std::string k = field.substr(0, eq), v = eq == std::string::npos ? "" : field.substr(eq + 1);
      bool yes = eq == std::string::npos || v == "true" || v == "1";
      if ((k == "readonly" || k == "ro" || k == "volume-nocopy") && !yes && v != "false" && v != "0")
        bad("invalid value for " + k + ": " + v);
      if (k == "type") m["Type"] = v;
      else if (k == "source" || k == "src") m["Source"] = v;
      else if (k == "target" || k == "destination" || k == "dst") m["Target"] = v;
      else if (k == "readonly" || k == "ro") m["ReadOnly"] = yes;
      else if (k == "bind-propagation") bind["Propagation"] = v;
      else if (k == "volume-nocopy") vol["NoCopy"] = yes;
      else if (k == "volume-driver") vol["DriverConfig"]["Name"] = v;
      else if (k == "volume-label")
        for (auto& [lk, lv] : key_values({v}, "--mount")) vol["Labels"][lk] = lv;
      else if (k == "volume-opt")
        for (auto& [ok, ov] : key_values({v}, "--mount")) vol["DriverConfig"]["Options"][ok] = ov;
      else if (k == "tmpfs-size") tmpfs["SizeBytes"] = ram_bytes(v, "--mount");
      else if (k == "tmpfs-mode") tmpfs["Mode"] = std::strtol(v.c_str(), nullptr, 8);
      else if (k != "consistency") bad("unexpected key '" + k + "' in '" + field + "'");
    }
    if (m.value("Target", "").empty()) bad("target is required");
    if (!bind.empty()) m["BindOptions"] = bind;
    if (!vol.empty()) m["VolumeOptions"] = vol;
    if (!tmpfs.empty()) m["TmpfsOptions"] = tmpfs;
    out.push_back(m);
  }
  return out;
}

// Docker's create body from the flags.
json create_body(const RunFlags& f) {
  json b;
  b["Image"] = f.command.at(0);
  if (f.command.size() > 1) b["Cmd"] = std::vector<std::string>(f.command.begin() + 1, f.command.end());
  std::vector<std::string> env;
  for (auto& file : f.env_file) {
    auto text = read_file(file);
    if (!text) die("open " + file + ": " + text.error().str(), 125);
    for (auto& line : split(*text, '\n')) {
      if (line.empty() || line[0] == '#') continue;
      env.push_back(line);
    }
  }
  for (auto& e : f.env) {
    if (e.find('=') == std::string::npos) {
      // "-e NAME": the caller's value, or nothing when it has none (Docker).
      if (const char* v = std::getenv(e.c_str())) env.push_back(e + "=" + v);
      continue;
    }
    env.push_back(e);
  }
  if (!env.empty()) b["Env"] = env;
  if (!f.workdir.empty()) b["WorkingDir"] = f.workdir;
  if (!f.user.empty()) b["User"] = f.user;
  if (!f.hostname.empty()) b["Hostname"] = f.hostname;
  if (f.entrypoint_set)
    b["Entrypoint"] = f.entrypoint.empty() ? std::vector<std::string>{} : std::vector<std::string>{f.entrypoint};
  b["Labels"] = key_values(f.labels, "--label");
  b["Tty"] = f.tty;
  b["OpenStdin"] = f.interactive;
  b["StdinOnce"] = f.interactive && !f.detach;
  b["AttachStdin"] = f.interactive && !f.detach;
  b["AttachStdout"] = !f.detach;
  b["AttachStderr"] = !f.detach;
  if (!f.stop_signal.empty()) b["StopSignal"] = f.stop_signal;
  if (f.stop_timeout >= 0) b["StopTimeout"] = f.stop_timeout;
  if (f.no_healthcheck) {
    b["Healthcheck"] = {{"Test", {"NONE"}}};
  } else {
    json hc = json::object();
    if (!f.health_cmd.empty()) hc["Test"] = {"CMD-SHELL", f.health_cmd};
    auto dur = [](const std::string& v, const char* flag) -> int64_t {
      auto t = engine::parse_log_time(v, 0);  // a duration d parses as 0 - d
      if (!t || *t > 0) die(std::string("invalid argument \"") + v + "\" for \"" + flag + "\" flag", 125);
      return -*t;
    };
    if (!f.health_interval.empty()) hc["Interval"] = dur(f.health_interval, "--health-interval");
    if (!f.health_timeout.empty()) hc["Timeout"] = dur(f.health_timeout, "--health-timeout");
    if (!f.health_start_period.empty()) hc["StartPeriod"] = dur(f.health_start_period, "--health-start-period");
    if (f.health_retries > 0) hc["Retries"] = f.health_retries;
    if (!hc.empty()) b["Healthcheck"] = hc;
  }
  json h;
  // The terminal's size from the first instant (the pty is made with it),
  // not only once the attached client sends it: a quick `stty size` sees it.
  if (f.tty)
    if (struct winsize ws = {}; ::ioctl(0, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0)
      h["ConsoleSize"] = {ws.ws_row, ws.ws_col};
  h["AutoRemove"] = f.rm;
  h["Privileged"] = f.privileged;
  h["ReadonlyRootfs"] = f.read_only;
  h["Init"] = f.init;
  h["CapAdd"] = f.cap_add;
  h["CapDrop"] = f.cap_drop;
  h["SecurityOpt"] = f.security_opt;
  h["GroupAdd"] = f.group_add;
  h["Binds"] = f.volumes;
  h["Mounts"] = mount_flags(f.mounts);
  h["VolumesFrom"] = f.volumes_from;
  h["NetworkMode"] = f.network.empty() ? "none" : f.network;
  if (!f.pid.empty()) h["PidMode"] = f.pid;
  if (!f.ipc.empty()) h["IpcMode"] = f.ipc;
  if (!f.uts.empty()) h["UTSMode"] = f.uts;
  h["Annotations"] = key_values(f.annotations, "--annotation");
  h["Sysctls"] = key_values(f.sysctls, "--sysctl");
  json tmpfs = json::object();
  for (auto& t : f.tmpfs) {
    auto colon = t.find(':');
    tmpfs[t.substr(0, colon)] = colon == std::string::npos ? "" : t.substr(colon + 1);
  }
  h["Tmpfs"] = tmpfs;
  json devices = json::array();
  for (auto& d : f.devices) {
    auto parts = split(d, ':');
    std::string perms = "rwm";
    if (parts.size() == 3) perms = parts[2];
    else if (parts.size() == 2 && parts[1].find('/') == std::string::npos) perms = parts[1], parts.pop_back();
    devices.push_back({{"PathOnHost", parts[0]},
                       {"PathInContainer", parts.size() > 1 ? parts[1] : parts[0]},
                       {"CgroupPermissions", perms}});
  }
  h["Devices"] = devices;
  json ulimits = json::array();
  for (auto& u : f.ulimits) {
    auto eq = u.find('=');
    if (eq == std::string::npos) die("invalid argument \"" + u + "\" for \"--ulimit\" flag", 125);
    std::string vals = u.substr(eq + 1);
    auto colon = vals.find(':');
    char* e1 = nullptr;
    char* e2 = nullptr;
    long long soft = std::strtoll(vals.c_str(), &e1, 10);
    long long hard = colon == std::string::npos ? soft : std::strtoll(vals.c_str() + colon + 1, &e2, 10);
    if (e1 == vals.c_str() || (colon != std::string::npos && *e2) || (colon == std::string::npos && *e1) || soft > hard)
      die("invalid argument \"" + u + "\" for \"--ulimit\" flag", 125);
    ulimits.push_back({{"Name", u.substr(0, eq)}, {"Soft", soft}, {"Hard", hard}});
  }
  h["Ulimits"] = ulimits;
  if (!f.memory.empty()) h["Memory"] = ram_bytes(f.memory, "--memory");
  if (!f.memory_swap.empty()) h["MemorySwap"] = f.memory_swap == "-1" ? -1 : ram_bytes(f.memory_swap, "--memory-swap");
  if (!f.memory_reservation.empty()) h["MemoryReservation"] = ram_bytes(f.memory_reservation, "--memory-reservation");
  if (!f.shm_size.empty()) h["ShmSize"] = ram_bytes(f.shm_size, "--shm-size");
  if (!f.cpus.empty()) {
    char* end = nullptr;
    double cpus = std::strtod(f.cpus.c_str(), &end);
    if (*end || cpus <= 0) die("invalid argument \"" + f.cpus + "\" for \"--cpus\" flag", 125);
    h["NanoCpus"] = static_cast<int64_t>(cpus * 1e9);
  }
  if (f.cpu_shares) h["CpuShares"] = f.cpu_shares;
  if (f.cpu_quota) h["CpuQuota"] = f.cpu_quota;
  if (f.cpu_period) h["CpuPeriod"] = f.cpu_period;
  if (!f.cpuset_cpus.empty()) h["CpusetCpus"] = f.cpuset_cpus;
  if (!f.cpuset_mems.empty()) h["CpusetMems"] = f.cpuset_mems;
  if (f.pids_limit) h["PidsLimit"] = f.pids_limit;
  if (f.blkio_weight) h["BlkioWeight"] = f.blkio_weight;
  auto rates = [&](const std::vector<std::string>& list, const char* flag) {
    json out = json::array();
    for (auto& r : list) {
      auto colon = r.rfind(':');
      if (colon == std::string::npos) die(std::string("invalid argument \"") + r + "\" for \"" + flag + "\" flag", 125);
      out.push_back({{"Path", r.substr(0, colon)}, {"Rate", ram_bytes(r.substr(colon + 1), flag)}});
    }
    return out;
  };
  h["BlkioDeviceReadBps"] = rates(f.blkio_read_bps, "--device-read-bps");
  h["BlkioDeviceWriteBps"] = rates(f.blkio_write_bps, "--device-write-bps");
  std::string policy = f.restart.empty() ? "no" : f.restart;
  json rp = {{"Name", policy.substr(0, policy.find(':'))}, {"MaximumRetryCount", 0}};
  if (auto colon = policy.find(':'); colon != std::string::npos) rp["MaximumRetryCount"] = std::atoi(policy.c_str() + colon + 1);
  std::string pn = rp["Name"];
  if (pn != "no" && pn != "always" && pn != "on-failure" && pn != "unless-stopped")
    die("invalid restart policy \"" + policy + "\"", 125);
  if (f.rm && pn != "no") die("conflicting options: cannot specify both --restart and --rm", 125);
  h["RestartPolicy"] = rp;
  json lc = {{"Type", "json-file"}, {"Config", key_values(f.log_opts, "--log-opt")}};
  h["LogConfig"] = lc;
  b["HostConfig"] = h;
  return b;
}

Container do_create(Context& ctx, const RunFlags& f, std::string id = {}, engine::EarlyMonitor* early = nullptr) {
  if (!f.publish.empty())
    die("-p/--publish: port publishing needs the bridge network, which berth does not have yet (use --network host)",
        125);
  // Before anything is read (an --env-file may be a pipe).
  ctx.here_or_in_full(f.command[0]);
  json body = create_body(f);
  // A missing busybox/debian image is made from its template first.
  auto img = ctx.image(f.command[0]);
  if (!img) throw Failure{img.error(), 125};
  std::vector<std::string> warnings;
  auto c = eng(ctx).create(f.name, body.dump(), &warnings, std::move(id), &*img, early);
  if (!c) throw Failure{c.error(), 125};
  for (auto& w : warnings) std::fprintf(stderr, "WARNING: %s\n", w.c_str());
  return *c;
}

// ------------------------------------------------------------- attaching --

// The caller's terminal in raw mode while attached with -t; restored on exit.
class RawTerminal {
 public:
  explicit RawTerminal(bool on) {
    if (!on || !::isatty(0) || ::tcgetattr(0, &saved_) != 0) return;
    struct termios raw = saved_;
    // Output processing off too (as Docker's): the container's own pty
    // already turns "\n" into "\r\n".
    ::cfmakeraw(&raw);
    if (::tcsetattr(0, TCSANOW, &raw) == 0) active_ = true;
  }
  ~RawTerminal() {
    if (active_) ::tcsetattr(0, TCSANOW, &saved_);
  }

 private:
  struct termios saved_ {};
  bool active_ = false;
};

std::string window_size() {
  struct winsize ws = {};
  if (::ioctl(0, TIOCGWINSZ, &ws) != 0 || ws.ws_row == 0) return "";
  return std::to_string(ws.ws_row) + " " + std::to_string(ws.ws_col);
}

bool send_all(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

// Docker's --detach-keys: comma-separated keys, each "ctrl-X" (X a letter or
// one of @ [ \ ] ^ _) or a single character. Without the flag, "detachKeys"
// of the client's config.json, as Docker's CLI; else ctrl-p,ctrl-q.
std::string detach_keys(const Context& ctx, std::string spec) {
  if (spec.empty())
    if (auto text = read_file(ctx.config_dir() + "/config.json")) {
      json cfg = json::parse(*text, nullptr, false);
      if (cfg.is_object() && cfg.contains("detachKeys") && cfg["detachKeys"].is_string())
        spec = cfg["detachKeys"].get<std::string>();
    }
  if (spec.empty()) return "\x10\x11";
  std::string out;
  for (auto& key : split(spec, ',')) {
    std::string k = key;
    for (auto& ch : k) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    if (k.size() == 1) {
      out += key[0];
    } else if (k.size() == 6 && k.starts_with("ctrl-")) {
      char c = k[5];
      if (c >= 'a' && c <= 'z') out += static_cast<char>(c - 'a' + 1);
      else if (c == '@') out += '\0';
      else if (c >= '[' && c <= '_') out += static_cast<char>(c - '[' + 27);
      else die("invalid detach keys (" + spec + ") provided", 125);
    } else {
      die("invalid detach keys (" + spec + ") provided", 125);
    }
  }
  return out;
}

// Copies the container's output to ours and our stdin to it until the
// monitor closes the connection, or has sent the exit when we clean up;
// returns the exit code it reported (-1: none, -2: detached with the detach
// keys), and in `exit_ns` when the container ended (0 if not said). Signals
// go to the container (Docker's sig-proxy).
int attach_loop(Context& ctx, const std::string& id, int sock, bool stdin_on, bool tty, bool* cleanup_self,
                const std::string& keys, int64_t* exit_ns = nullptr, bool removes = false) {
  // Without a tty, signals go to the container (Docker's sig-proxy); with
  // one, keys reach it through the pty and a signal ends only us, as Docker's.
  sigset_t sigs, old;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGWINCH);
  if (!tty)
    for (int s : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2}) sigaddset(&sigs, s);
  ::sigprocmask(SIG_BLOCK, &sigs, &old);
  UniqueFd sfd(::signalfd(-1, &sigs, SFD_CLOEXEC));
  RawTerminal raw(tty && stdin_on);
  if (tty)
    if (auto ws = window_size(); !ws.empty()) send_all(sock, engine::frame(Frame::kResize, ws));
  engine::FrameReader in;
  int code = -1;
  bool stdin_open = stdin_on;
  // Input that may begin the detach keys waits here until it does or does not.
  std::string held;
  for (;;) {
    struct pollfd p[3] = {{sock, POLLIN, 0}, {sfd.get(), POLLIN, 0}, {stdin_open ? 0 : -1, POLLIN, 0}};
    if (::poll(p, 3, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (p[1].revents) {
      struct signalfd_siginfo si;
      if (::read(sfd.get(), &si, sizeof si) == sizeof si) {
        if (si.ssi_signo == SIGWINCH) {
          if (auto ws = window_size(); !ws.empty()) send_all(sock, engine::frame(Frame::kResize, ws));
        } else if (!tty) {
          (void)eng(ctx).kill(id, static_cast<int>(si.ssi_signo));
        }
      }
    }
    if (p[2].revents) {
      char buf[16 << 10];
      ssize_t n = ::read(0, buf, sizeof buf);
      if (n <= 0) {
        stdin_open = false;
        send_all(sock, engine::frame(Frame::kCloseStdin, ""));
      } else {
        std::string data(buf, static_cast<size_t>(n));
        if (tty && !keys.empty()) {
          // Docker's detach keys: held back while they match, sent on when
          // the sequence breaks, never sent when it completes.
          std::string out;
          for (char ch : data) {
            if (ch == keys[held.size()]) {
              held += ch;
              if (held.size() == keys.size()) {
                // What came before the keys in the same read still goes.
                if (!out.empty()) send_all(sock, engine::frame(Frame::kStdin, out));
                ::sigprocmask(SIG_SETMASK, &old, nullptr);
                return -2;
              }
              continue;
            }
            out += held;
            held.clear();
            if (ch == keys[0] && keys.size() > 1) held += ch;
            else out += ch;
          }
          data = std::move(out);
          if (data.empty()) continue;
        }
        send_all(sock, engine::frame(Frame::kStdin, data));
      }
    }
    if (p[0].revents) {
      char buf[32 << 10];
      ssize_t n = ::read(sock, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      in.feed(buf, static_cast<size_t>(n));
      Frame type;
      std::string payload;
      bool done = false;
      while (in.next(&type, &payload)) {
        if (type == Frame::kStdout) (void)write_fd(1, payload);
        else if (type == Frame::kStderr) (void)write_fd(2, payload);
        else if (type == Frame::kExit) {
          // "<code> <unix ns>"
          char* end = nullptr;
          code = static_cast<int>(std::strtol(payload.c_str(), &end, 10));
          if (exit_ns) *exit_ns = end && *end == ' ' ? std::strtoll(end + 1, nullptr, 10) : 0;
          // We record the exit (and remove a --rm container) ourselves: one
          // process fewer than the monitor's exit command. Saying that it
          // goes lets the monitor unmount its rootfs as we record it.
          if (cleanup_self)
            *cleanup_self = send_all(sock, engine::frame(Frame::kCleanupByClient, removes ? "rm" : ""));
          // The exit is the last frame, and the container is reaped: the
          // monitor's last steps (closing up, its own exit) are not ours
          // to wait for.
          done = cleanup_self && *cleanup_self;
        }
      }
      if (done) break;
    }
  }
  ::sigprocmask(SIG_SETMASK, &old, nullptr);
  return code;
}

// Docker's statuses for a command that could not run: 127 not found, 126 not executable.
int start_failure_status(const Error& e) {
  std::string m = e.str();
  if (m.find("exec: ") != std::string::npos) {
    if (m.find("not found") != std::string::npos || m.find("No such file") != std::string::npos) return 127;
    if (m.find("ermission denied") != std::string::npos || m.find("is a directory") != std::string::npos) return 126;
  }
  return 125;
}

// What a foreground start's cleanup depends on: whether the container
// restarts (then the monitor's exit command does it), and whether it goes
// with its exit (--rm).
struct ExitPolicy {
  bool restarts = false, removed = false;
};
ExitPolicy exit_policy(const Container& c) {
  json body = json::parse(c.config, nullptr, false);
  if (!body.is_object()) return {};
  const json host = body.value("HostConfig", json::object());
  return {host.value("RestartPolicy", json::object()).value("Name", "no") != "no", host.value("AutoRemove", false)};
}

// The attach socket of a foreground start: ours, and the end the monitor gets.
struct AttachPair {
  UniqueFd ours, theirs;
  AttachPair() {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) die("socketpair failed", 125);
    ours.reset(sv[0]);
    theirs.reset(sv[1]);
  }
};

// `run`'s monitor, started before anything else (engine::EarlyMonitor, by
// main as the command line is parsed): it loads on the other CPU while we
// open the store and make the container. If it cannot be started, start()
// spawns one as `start` does.
struct EarlyStart {
  std::string id;  // the container's, for create()
  bool attached;
  UniqueFd ours;  // our end of its starting client's socket, when attached
  std::optional<engine::EarlyMonitor> monitor;
  EarlyStart(Context& ctx, bool attached_, const std::string& network) : attached(attached_) {
    // (Spawned for a directory under another root than CLI11 found, it goes.)
    if (ctx.early_monitor && ctx.early_dir == ctx.root + "/containers/" + ctx.early_id) {
      monitor.emplace(std::move(*ctx.early_monitor));
      id = ctx.early_id;
      ours = std::move(ctx.early_attach);
    } else {
      id = engine::new_container_id();
      if (auto m = engine::EarlyMonitor::spawn(ctx.monitor_exe(), id, ctx.root + "/containers/" + id, &ours); m)
        monitor.emplace(std::move(*m));
    }
    ctx.early_monitor.reset();
    if (!attached) ours.reset();
    if (!monitor) return;
    // Its network namespace, one made ahead if there is one (engine/spare.h).
    std::string netns;
    if (network != "host" && !network.starts_with("container:"))
      netns = ctx.runroot + "/" + engine::kSpareNetnsDir;
    // Its cgroup too, under the cgroupfs driver (a systemd unit is made in one call).
    std::string cgroup = ctx.cgroup_manager == "cgroupfs" ? engine::container_cgroup_path(id, false) : "";
    if (!monitor->configure(attached, netns, cgroup, engine::runtime_state_root(ctx.runroot))) monitor.reset();
  }
  // Started (its spawning thread joined), or null.
  engine::EarlyMonitor* get() { return monitor && monitor->spawned() ? &*monitor : nullptr; }
  // Not waited for: create() only sends it the spec, which waits then.
  engine::EarlyMonitor* pending() { return monitor ? &*monitor : nullptr; }
};

// Starts `c` attached (foreground run, start -a): returns its exit code.
// `fresh`: `c` was created by this command (run), whose EarlyStart `early` is.
int start_attached(Context& ctx, const Container& c, bool stdin_on, bool tty, const std::string& keys,
                   bool fresh = false, EarlyStart* early = nullptr) {
  engine::EarlyMonitor* m = early && early->attached ? early->get() : nullptr;
  UniqueFd ours;
  auto started = [&] {
    if (m) {
      ours = std::move(early->ours);
      auto r = eng(ctx).start(c.id, -1, fresh, m);
      bool lost = m->lost();
      // Not taken over (someone else started it meanwhile): it goes now, and
      // with it the other end of our attach socket.
      early->monitor.reset();
      // Found dead before it was told what to run: a monitor of our own.
      if (r || !lost) return r;
    }
    AttachPair made;
    ours.reset(made.ours.release());
    return eng(ctx).start(c.id, made.theirs.get(), fresh);
  }();
  if (!started) throw Failure{started.error(), start_failure_status(started.error())};
  // With a restart policy the monitor's exit command restarts it, as
  // Docker's daemon would; we only report the exit.
  bool cleanup_self = false;
  int64_t exit_ns = 0;
  ExitPolicy policy = exit_policy(c);
  int code = attach_loop(ctx, c.id, ours.get(), stdin_on, tty, policy.restarts ? nullptr : &cleanup_self, keys,
                         &exit_ns, policy.removed);
  if (code == -2) return 0;
  // The monitor has sent the exit, so the container is reaped: the cleanup is ours.
  if (cleanup_self) {
    bool runtime_left = false;
    // The exit as the frame said it (a monitor of an older berth sends no
    // time: now); its exit file comes after the frame.
    if (exit_ns <= 0) {
      struct timespec ts;
      ::clock_gettime(CLOCK_REALTIME, &ts);
      exit_ns = static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
    }
    engine::Engine::Exit exit{code, exit_ns};
    bool recorded = true;
    if (auto r = eng(ctx).cleanup(c.id, &runtime_left, &exit); !r) {
      std::fprintf(stderr, "berth: %s\n", r.error().str().c_str());
      recorded = false;
    }
    // The removed files (and an --rm container's runtime state and cgroup) go
    // to the monitor, which is about to exit anyway: off our path, and no
    // remover of our own to start (main's empty_trash_detached has the rest).
    std::vector<std::string> trash = take_trash();
    std::string list = runtime_left ? "runtime\n" : "";
    for (auto& p : trash) list += p + "\n";
    // Handing it over tells the monitor the exit is recorded (it then writes
    // no exit file): not after a cleanup that failed.
    if (!list.empty() && (!recorded || !send_all(ours.get(), engine::frame(Frame::kRemoveTrash, list)))) {
      restore_trash(std::move(trash));
      if (runtime_left) (void)eng(ctx).remove_runtime(c.id);
    }
  }
  if (code == -1) {
    // The monitor went away without a word (killed): the store knows the rest.
    auto w = eng(ctx).wait(c.id);
    return w ? *w : 125;
  }
  return code;
}

// --------------------------------------------------------------------- ps --

std::string short_id(const std::string& id) { return id.substr(0, 12); }

// " (healthy)", " (unhealthy)", " (health: starting)" for a running container with a check.
std::string health_suffix(const Container& c) {
  if (c.state != "running") return "";
  auto h = read_file(c.dir + "/health.json");
  if (!h) return "";
  json j = json::parse(*h, nullptr, false);
  std::string st = j.is_object() ? j.value("Status", "") : "";
  if (st == "starting") return " (health: starting)";
  return st.empty() ? "" : " (" + st + ")";
}

std::string status_text(const Container& c) {
  auto ago = [](int64_t ns) {
    std::string s = time_ago(ns / 1000000000);
    return s.ends_with(" ago") ? s.substr(0, s.size() - 4) : s;
  };
  if (c.state == "running") return "Up " + ago(c.started) + health_suffix(c);
  if (c.state == "paused") return "Up " + ago(c.started) + " (Paused)";
  if (c.state == "restarting") return "Restarting (" + std::to_string(c.exit_code) + ") " + time_ago(c.finished / 1000000000);
  if (c.state == "exited") return "Exited (" + std::to_string(c.exit_code) + ") " + time_ago(c.finished / 1000000000);
  if (c.state == "created") return "Created";
  return c.state;
}

std::string command_text(const Container& c, bool no_trunc) {
  json body = json::parse(c.config, nullptr, false);
  std::vector<std::string> args;
  if (body.is_object()) {
    for (auto* k : {"Entrypoint", "Cmd"})
      if (body.contains(k) && body[k].is_array())
        for (auto& a : body[k]) args.push_back(a.get<std::string>());
  }
  std::string s;
  for (auto& a : args) s += (s.empty() ? "" : " ") + a;
  if (!no_trunc && s.size() > 20) s = s.substr(0, 19) + "…";
  return "\"" + s + "\"";
}

// Docker's SIZE: the writable layer, then the image under it ("virtual").
std::string size_text(Context& ctx, const Container& c) {
  uint64_t rw = tree_bytes(c.dir + "/upper");
  uint64_t image = 0;
  if (auto s = ctx.store(); s)
    if (auto img = (*s)->resolve(c.image_id); img) image = img->size;
  return human_size(static_cast<double>(rw)) + " (virtual " + human_size(static_cast<double>(rw + image)) + ")";
}

struct PsOptions {
  bool all = false, quiet = false, no_trunc = false, latest = false, size = false;
  int last = -1;
  std::string format;
  std::vector<std::string> filters;
};

void ps(Context& ctx, const PsOptions& o) {
  auto list = check(eng(ctx).list());
  std::vector<std::pair<std::string, std::string>> filters;
  for (auto& f : o.filters) {
    auto eq = f.find('=');
    std::string k = f.substr(0, eq);
    if (eq == std::string::npos || (k != "status" && k != "name" && k != "id" && k != "label" && k != "ancestor" &&
                                    k != "exited"))
      die("invalid filter '" + f + "' (supported: status=, name=, id=, label=, ancestor=, exited=)", 125);
    filters.emplace_back(k, f.substr(eq + 1));
  }
  bool all = o.all || o.latest || o.last > 0;
  for (auto& [k, v] : filters) all |= k == "status" || k == "exited";
  std::vector<json> rows;
  int n = 0;
  for (auto& c : list) {
    if (!all && c.state != "running" && c.state != "paused" && c.state != "restarting") continue;
    json body = json::parse(c.config, nullptr, false);
    json labels = body.is_object() ? body.value("Labels", json::object()) : json::object();
    bool keep = true;
    std::map<std::string, bool> any;  // filters of one key are ORed, keys ANDed (Docker)
    for (auto& [k, v] : filters) {
      bool m = false;
      if (k == "status") m = c.state == v;
      else if (k == "name") m = c.name.find(v) != std::string::npos;
      else if (k == "id") m = c.id.starts_with(v);
      else if (k == "exited") m = c.state == "exited" && std::to_string(c.exit_code) == v;
      else if (k == "ancestor") m = c.image_name == v || c.image_id.find(v) != std::string::npos;
      else if (k == "label") {
        auto eq = v.find('=');
        std::string lk = v.substr(0, eq);
        m = labels.contains(lk) && (eq == std::string::npos || labels[lk] == v.substr(eq + 1));
      }
      any[k] = any[k] || m;
    }
    for (auto& [k, m] : any) keep &= m;
    if (!keep) continue;
    if ((o.latest && n >= 1) || (o.last > 0 && n >= o.last)) break;
    ++n;
    std::string label_text;
    for (auto& [lk, lv] : labels.items()) label_text += (label_text.empty() ? "" : ",") + lk + "=" + lv.get<std::string>();
    rows.push_back({{"ID", o.no_trunc ? c.id : short_id(c.id)},
                    {"Image", c.image_name},
                    {"Command", command_text(c, o.no_trunc)},
                    {"CreatedAt", c.created / 1000000000},
                    {"RunningFor", time_ago(c.created / 1000000000)},
                    {"Status", status_text(c)},
                    {"State", c.state},
                    {"Ports", ""},
                    {"Names", c.name},
                    {"Labels", label_text},
                    {"Mounts", ""},
                    {"Networks", ""},
                    {"Size", o.size ? size_text(ctx, c) : ""}});
  }
  if (o.quiet) {
    for (auto& r : rows) print(r["ID"].get<std::string>() + "\n");
    return;
  }
  if (!o.format.empty() && o.format != "table") {
    print(render(o.format, rows));
    return;
  }
  std::vector<std::string> header = {"CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"};
  if (o.size) header.push_back("SIZE");
  Table t(header);
  for (auto& r : rows) {
    std::vector<std::string> cells = {r["ID"], r["Image"], r["Command"], r["RunningFor"], r["Status"], r["Ports"], r["Names"]};
    if (o.size) cells.push_back(r["Size"]);
    t.add(cells);
  }
  print(t.str());
}

// ------------------------------------------------------------------- logs --

struct LogsOptions {
  bool follow = false, timestamps = false;
  std::string since, until, tail = "all";
  std::string name;
};

void logs(Context& ctx, const LogsOptions& o) {
  Container c = check(eng(ctx).find(o.name));
  engine::LogReadOptions r;
  struct timespec ts;
  ::clock_gettime(CLOCK_REALTIME, &ts);
  int64_t now = static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
  if (!o.since.empty()) {
    auto t = engine::parse_log_time(o.since, now);
    if (!t) die("invalid value for \"since\": " + t.error().str(), 125);
    r.since_ns = *t;
  }
  if (!o.until.empty()) {
    auto t = engine::parse_log_time(o.until, now);
    if (!t) die("invalid value for \"until\": " + t.error().str(), 125);
    r.until_ns = *t;
  }
  if (o.tail != "all") {
    char* end = nullptr;
    long long n = std::strtoll(o.tail.c_str(), &end, 10);
    if (o.tail.empty() || *end || n < 0) die("invalid value for \"tail\": \"" + o.tail + "\"", 125);
    r.tail = static_cast<uint64_t>(n);
  }
  r.follow = o.follow;
  if (o.follow) {
    std::string id = c.id;
    r.keep_following = [&ctx, id] {
      auto now = eng(ctx).find(id);
      return now && (now->state == "running" || now->state == "paused" || now->state == "restarting");
    };
  }
  std::string path = eng(ctx).log_path(c);
  if (!path_exists(path) && !o.follow) return;
  check(engine::read_logs(path, r, [&](const engine::LogEntry& e) {
    std::string line = o.timestamps ? engine::format_log_time(e.time_ns) + " " + e.text : e.text;
    (void)write_fd(e.stream == "stderr" ? 2 : 1, line);
  }));
}

// ------------------------------------------------------------------ verbs --

// Runs `fn` for each name; prints each name done (Docker's habit for
// stop/kill/rm/...), collects the errors into one failure.
void each(const std::vector<std::string>& names, const std::function<Result<>(const std::string&)>& fn,
          bool echo = true) {
  std::string errors;
  for (auto& n : names) {
    auto r = fn(n);
    if (!r) errors += r.error().str() + "\n";
    else if (echo) print(n + "\n");
  }
  if (!errors.empty()) {
    errors.pop_back();
    die(errors);
  }
}

int signal_number(const std::string& s) {
  auto r = runtime::parse_signal(s);
  if (!r) die("invalid signal: " + s, 125);
  return *r;
}

// ------------------------------------------------------------------ stats --

struct Sample {
  uint64_t cpu_ns = 0, mem = 0, mem_limit = 0, pids = 0, blk_read = 0, blk_write = 0, net_rx = 0, net_tx = 0;
  int64_t at_ns = 0;
};

// One reading of a container's cgroup counters (the runtime's stats event)
// and of its network namespace's interfaces (/proc/PID/net/dev, lo left out).
std::optional<Sample> sample(Context& ctx, const Container& c) {
  runtime::Globals g;
  g.root = eng(ctx).runtime_root();
  auto ev = runtime::stats_event(g, c.id);
  if (!ev) return std::nullopt;
  json j = json::parse(*ev, nullptr, false);
  if (!j.is_object()) return std::nullopt;
  json d = j.value("data", json::object());
  Sample s;
  struct timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  s.at_ns = static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
  json cpu = d.value("cpu", json::object()), usage = cpu.value("usage", json::object());
  s.cpu_ns = usage.value("total", uint64_t{0});
  json mem = d.value("memory", json::object()), mu = mem.value("usage", json::object());
  // Docker's "usage": without the page cache that can be dropped (inactive_file).
  json raw = mem.value("raw", json::object());
  uint64_t inactive = raw.value("total_inactive_file", raw.value("inactive_file", uint64_t{0}));
  s.mem = mu.value("usage", uint64_t{0});
  s.mem = s.mem > inactive ? s.mem - inactive : s.mem;
  s.mem_limit = mu.value("limit", uint64_t{0});
  uint64_t host = static_cast<uint64_t>(::sysconf(_SC_PHYS_PAGES)) * static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  if (s.mem_limit == 0 || s.mem_limit > host) s.mem_limit = host;
  s.pids = d.value("pids", json::object()).value("current", uint64_t{0});
  json blk = d.value("blkio", json::object());
  for (auto& e : blk.value("ioServiceBytesRecursive", json::array())) {
    std::string op = e.value("op", "");
    for (auto& ch : op) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    if (op == "read") s.blk_read += e.value("value", uint64_t{0});
    if (op == "write") s.blk_write += e.value("value", uint64_t{0});
  }
  if (auto dev = read_file("/proc/" + std::to_string(c.pid) + "/net/dev"); dev)
    for (auto& line : split(*dev, '\n')) {
      auto colon = line.find(':');
      if (colon == std::string::npos) continue;
      std::string name = line.substr(0, colon);
      name.erase(0, name.find_first_not_of(' '));
      if (name == "lo") continue;
      unsigned long long v[9] = {};
      if (std::sscanf(line.c_str() + colon + 1, "%llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
                      &v[3], &v[4], &v[5], &v[6], &v[7], &v[8]) == 9)
        s.net_rx += v[0], s.net_tx += v[8];
    }
  return s;
}

void stats(Context& ctx, const std::vector<std::string>& names, bool all, bool no_stream, const std::string& format) {
  auto pick = [&]() {
    std::vector<Container> out;
    if (!names.empty()) {
      for (auto& n : names) out.push_back(check(eng(ctx).find(n)));
    } else {
      for (auto& c : check(eng(ctx).list()))
        if (all || c.state == "running" || c.state == "paused") out.push_back(c);
    }
    return out;
  };
  std::map<std::string, Sample> last;
  for (auto& c : pick())
    if (auto s = sample(ctx, c)) last[c.id] = *s;
  for (;;) {
    ::usleep(no_stream ? 500000 : 1000000);
    std::vector<json> rows;
    for (auto& c : pick()) {
      auto s = sample(ctx, c);
      json r = {{"ID", c.id.substr(0, 12)}, {"Container", c.id.substr(0, 12)}, {"Name", c.name}};
      if (!s || (c.state != "running" && c.state != "paused")) {
        r.update({{"CPUPerc", "0.00%"}, {"MemUsage", "0B / 0B"}, {"MemPerc", "0.00%"}, {"NetIO", "0B / 0B"},
                  {"BlockIO", "0B / 0B"}, {"PIDs", "0"}});
        rows.push_back(r);
        continue;
      }
      double cpu = 0;
      if (auto it = last.find(c.id); it != last.end() && s->at_ns > it->second.at_ns && s->cpu_ns >= it->second.cpu_ns)
        cpu = 100.0 * static_cast<double>(s->cpu_ns - it->second.cpu_ns) / static_cast<double>(s->at_ns - it->second.at_ns);
      last[c.id] = *s;
      char pct[32], mpct[32];
      std::snprintf(pct, sizeof pct, "%.2f%%", cpu);
      std::snprintf(mpct, sizeof mpct, "%.2f%%", 100.0 * static_cast<double>(s->mem) / static_cast<double>(s->mem_limit));
      auto bin = [](uint64_t b) {  // Docker prints memory in binary units
        const char* u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
        double v = static_cast<double>(b);
        int i = 0;
        while (v >= 1024 && i < 4) v /= 1024, ++i;
        char out[32];
        std::snprintf(out, sizeof out, i ? "%.4g%s" : "%.0f%s", v, u[i]);
        return std::string(out);
      };
      r.update({{"CPUPerc", pct},
                {"MemUsage", bin(s->mem) + " / " + bin(s->mem_limit)},
                {"MemPerc", mpct},
                {"NetIO", human_size(static_cast<double>(s->net_rx)) + " / " + human_size(static_cast<double>(s->net_tx))},
                {"BlockIO", human_size(static_cast<double>(s->blk_read)) + " / " + human_size(static_cast<double>(s->blk_write))},
                {"PIDs", std::to_string(s->pids)}});
      rows.push_back(r);
    }
    std::string text;
    if (!format.empty() && format != "table") {
      text = render(format, rows);
    } else {
      Table t({"CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O", "BLOCK I/O", "PIDS"});
      for (auto& r : rows)
        t.add({r["ID"], r["Name"], r["CPUPerc"], r["MemUsage"], r["MemPerc"], r["NetIO"], r["BlockIO"], r["PIDs"]});
      text = t.str();
    }
    // Live: the table redrawn in place, as Docker's.
    if (!no_stream) text = "\033[2J\033[H" + text;
    print(text);
    std::fflush(stdout);
    if (no_stream) return;
  }
}

// ----------------------------------------------------------------- events --

// `berth events`: the store's event log. Without --until it follows the log
// (as Docker streams) until interrupted; with --until it stops there.
void events(Context& ctx, const std::string& since, const std::string& until, const std::vector<std::string>& filters,
            const std::string& format) {
  struct timespec ts;
  ::clock_gettime(CLOCK_REALTIME, &ts);
  int64_t now = static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
  auto when = [&](const std::string& v, const char* flag) -> int64_t {
    auto t = engine::parse_log_time(v, now);
    if (!t) die(std::string("invalid value for \"") + flag + "\": " + t.error().str(), 125);
    return *t;
  };
  int64_t from = since.empty() ? now : when(since, "--since");
  std::optional<int64_t> to;
  if (!until.empty()) to = when(until, "--until");
  std::map<std::string, std::vector<std::string>> f;
  for (auto& x : filters) {
    auto eq = x.find('=');
    std::string k = x.substr(0, eq);
    if (eq == std::string::npos || (k != "container" && k != "event" && k != "image" && k != "label" && k != "type"))
      die("invalid filter '" + x + "' (supported: container=, event=, image=, label=, type=)", 125);
    f[k].push_back(x.substr(eq + 1));
  }
  auto keep = [&](const json& e) {
    for (auto& [k, vs] : f) {
      bool any = false;
      for (auto& v : vs) {
        const json& a = e["Actor"]["Attributes"];
        if (k == "container") any |= e.value("id", "").starts_with(v) || a.value("name", "") == v;
        else if (k == "event") any |= e.value("Action", "") == v;
        else if (k == "image") any |= a.value("image", "") == v;
        else if (k == "type") any |= e.value("Type", "") == v;
        else if (k == "label") any |= a.contains(v.substr(0, v.find('=')));
      }
      if (!any) return false;
    }
    return true;
  };
  std::string path = eng(ctx).events_path();
  auto show = [&](const json& e) {
    if (format == "json" || (!format.empty() && format != "json")) {
      print(render(format.empty() ? "json" : format, {e}));
      return;
    }
    int64_t t = e.value("timeNano", int64_t{0});
    std::string attrs;
    for (auto& [k, v] : e["Actor"]["Attributes"].items())
      attrs += (attrs.empty() ? "" : ", ") + k + "=" + v.get<std::string>();
    print(engine::format_log_time(t) + " " + e.value("Type", "") + " " + e.value("Action", "") + " " +
          e.value("id", "") + " (" + attrs + ")\n");
  };
  // Follow the log by polling its size; a rotation starts it over.
  off_t offset = 0;
  std::string partial;
  bool first = true;
  for (;;) {
    for (const std::string& p : first ? std::vector<std::string>{path + ".1", path} : std::vector<std::string>{path}) {
      UniqueFd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
      if (!fd) continue;
      struct stat st;
      ::fstat(fd.get(), &st);
      if (p == path && st.st_size < offset) offset = 0;  // rotated
      off_t at = p == path ? offset : 0;
      std::string data;
      char buf[65536];
      ssize_t n;
      while ((n = ::pread(fd.get(), buf, sizeof buf, at)) > 0) data.append(buf, static_cast<size_t>(n)), at += n;
      if (p == path) offset = at;
      partial += data;
      size_t nl;
      while ((nl = partial.find('\n')) != std::string::npos) {
        json e = json::parse(partial.substr(0, nl), nullptr, false);
        partial.erase(0, nl + 1);
        if (!e.is_object()) continue;
        int64_t t = e.value("timeNano", int64_t{0});
        if (t < from || (to && t > *to) || !keep(e)) continue;
        show(e);
      }
    }
    first = false;
    std::fflush(stdout);
    ::clock_gettime(CLOCK_REALTIME, &ts);
    if (to && static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec > *to) return;
    ::usleep(100000);
  }
}

}  // namespace

void add_container_commands(CLI::App& app, Context& ctx) {
  auto* group = app.add_subcommand("container", "Manage containers");
  ctx.inspect_container = [&ctx](const std::string& name) -> std::optional<std::string> {
    auto e = ctx.engine();
    if (!e) return std::nullopt;
    auto c = (*e)->find(name);
    if (!c) return std::nullopt;
    auto j = (*e)->inspect(*c);
    if (!j) return std::nullopt;
    return *j;
  };
  ctx.inspect_volume = [&ctx](const std::string& name) -> std::optional<std::string> {
    auto s = ctx.store();
    if (!s) return std::nullopt;
    auto v = engine::Volumes((*s)->db(), ctx.root).get(name);
    if (!v) return std::nullopt;
    return engine::volume_json(*v);
  };
  // Each verb at the top level and under `container` (Docker's two spellings).
  // Only the verb being run gets its options: making CLI11 options for every
  // verb took several milliseconds of every command. The others are listed
  // (for --help) without them.
  auto both = [&](const std::string& name, const std::vector<std::string>& alts, const std::string& help,
                  const std::function<void(CLI::App&)>& setup) {
    auto add = [&](CLI::App& parent, const std::string& verb, bool wanted) {
      if (!wanted && ctx.one_verb) return;
      CLI::App* c = parent.add_subcommand(verb, help);
      if (wanted) setup(*c);
      else c->allow_extras();
    };
    add(app, name, ctx.verb == name);
    for (auto& a : alts) add(*group, a, ctx.verb == "container" && ctx.subverb == a);
  };

  both("create", {"create"}, "Create a new container", [&ctx](CLI::App& c) {
    auto f = std::make_shared<RunFlags>();
    add_create_flags(c, *f, ctx.args);
    c.callback([&ctx, f, &c] {
      reject_unknown(c);
      print(do_create(ctx, *f).id + "\n");
    });
  });
  both("run", {"run"}, "Create and run a new container from an image", [&ctx](CLI::App& c) {
    auto f = std::make_shared<RunFlags>();
    add_create_flags(c, *f, ctx.args);
    c.add_flag("-d,--detach", f->detach, "Run container in background and print container ID");
    auto keys = std::make_shared<std::string>();
    c.add_option("--detach-keys", *keys, "Override the key sequence for detaching a container");
    c.callback([&ctx, f, &c, keys] {
      reject_unknown(c);
      EarlyStart early(ctx, !f->detach, f->network);
      std::string detach = detach_keys(ctx, *keys);
      Container ct = do_create(ctx, *f, early.id, early.pending());
      if (f->detach) {
        auto s = eng(ctx).start(ct.id, -1, true, early.get());
        if (!s) {
          if (f->rm) (void)eng(ctx).remove(ct.id, true, false);
          throw Failure{s.error(), start_failure_status(s.error())};
        }
        print(ct.id + "\n");
        return;
      }
      int code;
      try {
        code = start_attached(ctx, ct, f->interactive, f->tty, detach, true, &early);
      } catch (const Failure&) {
        // A container that could not start is still there, as with Docker; --rm removes it.
        if (f->rm) (void)eng(ctx).remove(ct.id, true, false);
        throw;
      }
      ctx.exit_status = code;
    });
  });
  both("start", {"start"}, "Start one or more stopped containers", [&ctx](CLI::App& c) {
    auto names = std::make_shared<std::vector<std::string>>();
    auto attach = std::make_shared<bool>(false);
    auto interactive = std::make_shared<bool>(false);
    c.add_flag("-a,--attach", *attach, "Attach STDOUT/STDERR and forward signals");
    c.add_flag("-i,--interactive", *interactive, "Attach container's STDIN");
    auto keys = std::make_shared<std::string>();
    c.add_option("--detach-keys", *keys, "Override the key sequence for detaching a container");
    c.add_option("CONTAINER", *names, "Containers")->required();
    c.callback([&ctx, names, attach, interactive, keys] {
      if (*attach || *interactive) {
        if (names->size() != 1) die("you cannot start and attach multiple containers at once", 125);
        std::string detach = detach_keys(ctx, *keys);
        Container ct = check(eng(ctx).find(names->front()));
        json body = json::parse(ct.config, nullptr, false);
        bool tty = body.is_object() && body.value("Tty", false);
        int code = start_attached(ctx, ct, *interactive, tty, detach);
        ctx.exit_status = code;
        return;
      }
      each(*names, [&ctx](const std::string& n) -> Result<> {
        auto r = eng(ctx).start(n);
        if (!r) return std::unexpected(std::move(r).error());
        return {};
      });
    });
  });
  both("stop", {"stop"}, "Stop one or more running containers", [&ctx](CLI::App& c) {
    auto names = std::make_shared<std::vector<std::string>>();
    auto timeout = std::make_shared<int>(-1);
    c.add_option("-t,--time,--timeout", *timeout, "Seconds to wait before killing the container");
    c.add_option("CONTAINER", *names, "Containers")->required();
    c.callback([&ctx, names, timeout] {
      each(*names, [&](const std::string& n) { return eng(ctx).stop(n, *timeout); });
    });
  });
  both("restart", {"restart"}, "Restart one or more containers", [&ctx](CLI::App& c) {
    auto names = std::make_shared<std::vector<std::string>>();
    auto timeout = std::make_shared<int>(-1);
    c.add_option("-t,--time,--timeout", *timeout, "Seconds to wait before killing the container");
    c.add_option("CONTAINER", *names, "Containers")->required();
    c.callback([&ctx, names, timeout] {
      each(*names, [&](const std::string& n) -> Result<> {
        TRY(eng(ctx).stop(n, *timeout));
        TRY(eng(ctx).start(n));
        return {};
      });
    });
  });
  both("kill", {"kill"}, "Kill one or more running containers", [&ctx](CLI::App& c) {
    auto names = std::make_shared<std::vector<std::string>>();
    auto sig = std::make_shared<std::string>("KILL");
    c.add_option("-s,--signal", *sig, "Signal to send to the container");
    c.add_option("CONTAINER", *names, "Containers")->required();
    c.callback([&ctx, names, sig] {
      int s = signal_number(*sig);
      each(*names, [&](const std::string& n) { return eng(ctx).kill(n, s); });
    });
  });
  both("rm", {"rm", "remove"}, "Remove one or more containers", [&ctx](CLI::App& c) {
    auto names = std::make_shared<std::vector<std::string>>();
    auto force = std::make_shared<bool>(false);
    auto volumes = std::make_shared<bool>(false);
    c.add_flag("-f,--force", *force, "Force the removal of a running container (uses SIGKILL)");
    c.add_flag("-v,--volumes", *volumes, "Remove anonymous volumes associated with the container");
    c.add_option("CONTAINER", *names, "Containers")->required();
    c.callback([&ctx, names, force, volumes] {
      each(*names, [&](const std::string& n) { return eng(ctx).remove(n, *force, *volumes); });
    });
  });
  for (auto [verb, help] : {std::pair{"pause", "Pause all processes within one or more containers"},
                            std::pair{"unpause", "Unpause all processes within one or more containers"}}) {
    both(verb, {verb}, help, [&ctx, v = std::string(verb)](CLI::App& c) {
      auto names = std::make_shared<std::vector<std::string>>();
      c.add_option("CONTAINER", *names, "Containers")->required();
      c.callback([&ctx, names, v] {
        each(*names, [&](const std::string& n) { return v == "pause" ? eng(ctx).pause(n) : eng(ctx).unpause(n); });
      });
    });
  }
  both("wait", {"wait"}, "Block until one or more containers stop, then print their exit codes", [&ctx](CLI::App& c) {
    auto names = std::make_shared<std::vector<std::string>>();
    c.add_option("CONTAINER", *names, "Containers")->required();
    c.callback([&ctx, names] {
      each(*names, [&](const std::string& n) -> Result<> {
        int code = TRY(eng(ctx).wait(n));
        print(std::to_string(code) + "\n");
        return {};
      }, false);
    });
  });
  both("rename", {"rename"}, "Rename a container", [&ctx](CLI::App& c) {
    auto args = std::make_shared<std::vector<std::string>>();
    c.add_option("CONTAINER NEW_NAME", *args, "Container and its new name")->required()->expected(2);
    c.callback([&ctx, args] { check(eng(ctx).rename((*args)[0], (*args)[1])); });
  });
  both("ps", {"ls", "list", "ps"}, "List containers", [&ctx](CLI::App& c) {
    auto o = std::make_shared<PsOptions>();
    c.add_flag("-a,--all", o->all, "Show all containers (default shows just running)");
    c.add_flag("-q,--quiet", o->quiet, "Only display container IDs");
    c.add_flag("--no-trunc", o->no_trunc, "Don't truncate output");
    c.add_flag("-l,--latest", o->latest, "Show the latest created container (includes all states)");
    c.add_option("-n,--last", o->last, "Show n last created containers (includes all states)");
    c.add_flag("-s,--size", o->size, "Display total file sizes");
    c.add_option("--format", o->format, "Format output: table, json or a Go template");
    c.add_option("-f,--filter", o->filters, "Filter output based on conditions provided")->allow_extra_args(false);
    c.callback([&ctx, o] { ps(ctx, *o); });
  });
  both("logs", {"logs"}, "Fetch the logs of a container", [&ctx](CLI::App& c) {
    auto o = std::make_shared<LogsOptions>();
    c.add_flag("-f,--follow", o->follow, "Follow log output");
    c.add_flag("-t,--timestamps", o->timestamps, "Show timestamps");
    c.add_option("--since", o->since, "Show logs since timestamp or relative (e.g. 42m)");
    c.add_option("--until", o->until, "Show logs before a timestamp or relative (e.g. 42m)");
    c.add_option("-n,--tail", o->tail, "Number of lines to show from the end of the logs");
    c.add_option("CONTAINER", o->name, "Container")->required();
    c.callback([&ctx, o] { logs(ctx, *o); });
  });
  both("top", {"top"}, "Display the running processes of a container", [&ctx](CLI::App& c) {
    auto name = std::make_shared<std::string>();
    c.add_option("CONTAINER", *name, "Container")->required();
    c.callback([&ctx, name] {
      Container ct = check(eng(ctx).find(*name));
      if (ct.state != "running" && ct.state != "paused") die("container " + *name + " is not running");
      Table t({"PID", "USER", "TIME", "COMMAND"});
      for (pid_t p : eng(ctx).pids(ct)) {
        auto stat = read_file("/proc/" + std::to_string(p) + "/status");
        auto cmd = read_file("/proc/" + std::to_string(p) + "/cmdline");
        if (!stat || !cmd) continue;
        std::string uid = "0";
        for (auto& l : split(*stat, '\n'))
          if (l.starts_with("Uid:")) uid = split(l.substr(5), '\t').front();
        for (auto& ch : *cmd)
          if (ch == '\0') ch = ' ';
        while (!cmd->empty() && cmd->back() == ' ') cmd->pop_back();
        t.add({std::to_string(p), uid, "", *cmd});
      }
      print(t.str());
    });
  });
  both("port", {"port"}, "List port mappings or a specific mapping for the container", [&ctx](CLI::App& c) {
    auto name = std::make_shared<std::string>();
    c.add_option("CONTAINER", *name, "Container")->required();
    c.callback([&ctx, name] { (void)check(eng(ctx).find(*name)); });  // no published ports without the bridge network
  });
  for (auto [verb, help] : {std::pair{"attach", "Attach local standard input, output, and error streams to a running container"},
                            std::pair{"console", "Attach to a container's console (its pty), as LXC's console"}}) {
    both(verb, {verb}, help, [&ctx](CLI::App& c) {
      struct O {
        std::string name, keys;
        bool no_stdin = false;
      };
      auto o = std::make_shared<O>();
      c.add_flag("--no-stdin", o->no_stdin, "Do not attach STDIN");
      c.add_option("--sig-proxy", "Proxy all received signals to the process (default true)");
      c.add_option("--detach-keys", o->keys, "Override the key sequence for detaching a container");
      c.add_option("CONTAINER", o->name, "Container")->required();
      c.callback([&ctx, o, &c] {
        std::string detach = detach_keys(ctx, o->keys);
        Container ct = check(eng(ctx).find(o->name));
        if (c.get_name() == "console" && !json::parse(ct.config, nullptr, false).value("Tty", false))
          die("container " + o->name + " has no console: it was not started with -t", 1);
        UniqueFd s = check(eng(ctx).attach(ct));
        json body = json::parse(ct.config, nullptr, false);
        bool tty = body.is_object() && body.value("Tty", false);
        bool in = !o->no_stdin && body.is_object() && body.value("OpenStdin", false);
        int code = attach_loop(ctx, ct.id, s.get(), in, tty, nullptr, detach);
        if (code == -2) return;  // detached
        if (code == -1) code = check(eng(ctx).wait(ct.id));
        ctx.exit_status = code;
        return;
      });
    });
  }
  both("stats", {"stats"}, "Display a live stream of container(s) resource usage statistics", [&ctx](CLI::App& c) {
    struct O {
      std::vector<std::string> names;
      bool all = false, no_stream = false, no_trunc = false;
      std::string format;
    };
    auto o = std::make_shared<O>();
    c.add_flag("-a,--all", o->all, "Show all containers (default shows just running)");
    c.add_flag("--no-stream", o->no_stream, "Disable streaming stats and only pull the first result");
    c.add_flag("--no-trunc", o->no_trunc, "Do not truncate output");
    c.add_option("--format", o->format, "Format output: table, json or a Go template");
    c.add_option("CONTAINER", o->names, "Containers");
    c.callback([&ctx, o] { stats(ctx, o->names, o->all, o->no_stream, o->format); });
  });
  both("commit", {"commit"}, "Create a new image from a container's changes", [&ctx](CLI::App& c) {
    struct O {
      std::vector<std::string> args;
      engine::Engine::CommitOptions opt;
      bool no_pause = false;
    };
    auto o = std::make_shared<O>();
    c.add_option("-c,--change", o->opt.changes, "Apply Dockerfile instruction to the created image")
        ->allow_extra_args(false);
    c.add_option("-m,--message", o->opt.message, "Commit message");
    c.add_option("-a,--author", o->opt.author, "Author (e.g., \"John Hannibal Smith <hannibal@a-team.com>\")");
    c.add_flag("!-p,!--pause", o->opt.pause, "Pause container during commit (default true)")->default_str("true");
    c.add_option("CONTAINER [REPOSITORY[:TAG]]", o->args, "Container and the new image's name")->required()->expected(1, 2);
    c.callback([&ctx, o] {
      if (o->args.size() > 1) o->opt.reference = o->args[1];
      print(check(eng(ctx).commit(o->args[0], o->opt)) + "\n");
    });
  });
  {
    bool wanted = ctx.verb == "container" && ctx.subverb == "prune";
    auto* c = group->add_subcommand("prune", "Remove all stopped containers");
    if (wanted) {
      auto force = std::make_shared<bool>(false);
      c->add_flag("-f,--force", *force, "Do not prompt for confirmation");
      c->callback([&ctx, force] {
        if (!*force) {
          std::fprintf(stderr, "WARNING! This will remove all stopped containers.\nAre you sure you want to continue? [y/N] ");
          char answer[16] = {};
          if (!std::fgets(answer, sizeof answer, stdin) || (answer[0] != 'y' && answer[0] != 'Y')) return;
        }
        auto removed = check(eng(ctx).prune());
        std::string out = "Deleted Containers:\n";
        for (auto& id : removed) out += id + "\n";
        print(out + "\nTotal reclaimed space: 0B\n");
      });
    } else {
      c->allow_extras();
    }
  }
  both("clone", {"clone"}, "Copy a stopped container, writable layer and all, into a new one (as LXC's clone)",
       [&ctx](CLI::App& c) {
         auto args = std::make_shared<std::vector<std::string>>();
         c.add_option("CONTAINER NEW_NAME", *args, "The container and the new one's name")->required()->expected(2);
         c.callback([&ctx, args] { print(check(eng(ctx).clone((*args)[0], (*args)[1])).id + "\n"); });
       });
  both("events", {}, "Get real time events from the server", [&ctx](CLI::App& c) {
    struct O {
      std::string since, until, format;
      std::vector<std::string> filters;
    };
    auto o = std::make_shared<O>();
    c.add_option("--since", o->since, "Show all events created since timestamp");
    c.add_option("--until", o->until, "Stream events until this timestamp");
    c.add_option("-f,--filter", o->filters, "Filter output (container=, event=, image=, label=, type=)")
        ->allow_extra_args(false);
    c.add_option("--format", o->format, "Format output: json or a Go template");
    c.callback([&ctx, o] { events(ctx, o->since, o->until, o->filters, o->format); });
  });
  both("exec", {"exec"}, "Execute a command in a running container", [&ctx](CLI::App& c) {
    struct O {
      bool detach = false, interactive = false, tty = false, privileged = false;
      std::vector<std::string> env, env_file;
      std::string workdir, user;
      std::vector<std::string> command;
    };
    auto o = std::make_shared<O>();
    c.add_flag("-d,--detach", o->detach, "Detached mode: run command in the background");
    c.add_flag("-i,--interactive", o->interactive, "Keep STDIN open even if not attached");
    c.add_flag("-t,--tty", o->tty, "Allocate a pseudo-TTY");
    c.add_flag("--privileged", o->privileged, "Give extended privileges to the command");
    c.add_option("-e,--env", o->env, "Set environment variables")->allow_extra_args(false);
    c.add_option("--env-file", o->env_file, "Read in a file of environment variables")->allow_extra_args(false);
    c.add_option("-w,--workdir", o->workdir, "Working directory inside the container");
    c.add_option("-u,--user", o->user, "Username or UID (format: <name|uid>[:<group|gid>])");
    c.add_option("CONTAINER", o->command, "Container, then the command and its arguments")->required();
    c.positionals_at_end();
    c.prefix_command();
    c.callback([&ctx, o, &c] {
      reject_unknown(c);
      if (o->command.size() < 2) die("exec requires at least 2 arguments: CONTAINER COMMAND [ARG...]", 125);
      auto found = eng(ctx).find(o->command[0]);
      if (!found) throw Failure{found.error(), 125};
      Container ct = *found;
      if (ct.state == "paused") die("container " + o->command[0] + " is paused, unpause the container before exec", 125);
      if (ct.state != "running") die("container " + ct.id.substr(0, 12) + " is not running", 125);
      std::vector<std::string> args = {eng(ctx).monitor_exe(), "exec", "--runtime-root", eng(ctx).runtime_root(),
                                       "--id", ct.id};
      if (o->tty) args.push_back("--tty");
      if (o->detach) args.push_back("--detach");
      RunFlags envs;
      envs.env = o->env;
      envs.env_file = o->env_file;
      envs.command = {"x"};
      json b = create_body(envs);
      for (auto& e : b.value("Env", std::vector<std::string>{})) args.insert(args.end(), {"--env", e});
      if (!o->workdir.empty()) args.insert(args.end(), {"--cwd", o->workdir});
      if (!o->user.empty()) {
        auto u = eng(ctx).resolve_user(ct, o->user);
        if (!u) throw Failure{u.error(), 125};
        args.insert(args.end(), {"--user", std::to_string(u->uid) + ":" + std::to_string(u->gid)});
        for (auto g : u->additional_gids) args.insert(args.end(), {"--gid", std::to_string(g)});
      }
      if (o->privileged)
        for (auto& cap : engine::all_capabilities()) args.insert(args.end(), {"--cap", cap});
      args.push_back("--");
      args.insert(args.end(), o->command.begin() + 1, o->command.end());
      // Without -i the command's stdin is /dev/null, as Docker's.
      if (!o->interactive) {
        int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (null >= 0) ::dup2(null, 0), ::close(null);
      }
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      std::fflush(stdout);
      ::execv(argv[0], argv.data());
      die("exec " + args[0] + ": " + std::strerror(errno), 125);
    });
  });
  auto* cleanup = group->add_subcommand("cleanup", "The monitor's exit command")->group("");
  auto id = std::make_shared<std::string>();
  cleanup->add_option("ID", *id)->required();
  cleanup->callback([&ctx, id] { check(eng(ctx).cleanup(*id)); });
}

}  // namespace berth::cli
