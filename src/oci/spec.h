// The OCI runtime-spec (v1.3.0) config.json, as plain structs.
//
// Only this header is included widely; the JSON parser lives in spec.cc so the
// nlohmann headers stay out of every other translation unit.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "util/error.h"

namespace berth::oci {

inline constexpr const char* kSpecVersion = "1.3.0";

struct Mount {
  std::string destination;
  std::string type;
  std::string source;
  std::vector<std::string> options;
  struct IdMap {
    uint32_t container_id = 0, host_id = 0, size = 0;
  };
  std::vector<IdMap> uid_mappings, gid_mappings;
};

struct Rlimit {
  std::string type;
  uint64_t hard = 0, soft = 0;
};

struct User {
  uint32_t uid = 0, gid = 0;
  std::optional<uint32_t> umask;
  std::vector<uint32_t> additional_gids;
  std::string username;
};

struct Capabilities {
  std::vector<std::string> bounding, effective, inheritable, permitted, ambient;
};

struct ConsoleSize {
  unsigned height = 0, width = 0;
};

struct IoPriority {
  std::string klass;  // IOPRIO_CLASS_RT | IOPRIO_CLASS_BE | IOPRIO_CLASS_IDLE
  int priority = 0;
};

struct Scheduler {
  std::string policy;  // SCHED_OTHER ...
  int nice = 0, priority = 0;
  std::vector<std::string> flags;
  uint64_t runtime = 0, deadline = 0, period = 0;
};

struct CpuAffinity {
  std::string initial, final;
};

struct Process {
  bool terminal = false;
  std::optional<ConsoleSize> console_size;
  User user;
  std::vector<std::string> args;
  std::string command_line;  // Windows only; refused
  std::vector<std::string> env;
  std::string cwd = "/";
  std::optional<Capabilities> capabilities;
  std::vector<Rlimit> rlimits;
  bool no_new_privileges = false;
  std::string apparmor_profile;
  std::optional<int> oom_score_adj;
  std::string selinux_label;
  std::optional<IoPriority> io_priority;
  std::optional<Scheduler> scheduler;
  std::optional<CpuAffinity> exec_cpu_affinity;
};

struct Hook {
  std::string path;
  std::vector<std::string> args, env;
  std::optional<int> timeout;
};

struct Hooks {
  std::vector<Hook> prestart, create_runtime, create_container, start_container, poststart,
      poststop;
};

struct Namespace {
  std::string type;  // pid network mount ipc uts user cgroup time
  std::string path;
};

struct IdMapping {
  uint32_t container_id = 0, host_id = 0, size = 0;
};

struct Device {
  std::string type;  // c b u p
  std::string path;
  int64_t major = 0, minor = 0;
  std::optional<uint32_t> file_mode;
  std::optional<uint32_t> uid, gid;
};

struct DeviceCgroupRule {
  bool allow = false;
  std::string type;  // a c b
  std::optional<int64_t> major, minor;
  std::string access;
  bool operator==(const DeviceCgroupRule&) const = default;
};

struct WeightDevice {
  int64_t major = 0, minor = 0;
  std::optional<uint16_t> weight, leaf_weight;
};
struct ThrottleDevice {
  int64_t major = 0, minor = 0;
  uint64_t rate = 0;
};
struct HugepageLimit {
  std::string page_size;
  uint64_t limit = 0;
};

struct Resources {
  std::vector<DeviceCgroupRule> devices;
  struct Memory {
    std::optional<int64_t> limit, reservation, swap, kernel, kernel_tcp;
    std::optional<uint64_t> swappiness;
    std::optional<bool> disable_oom_killer, use_hierarchy, check_before_update;
  };
  std::optional<Memory> memory;
  struct Cpu {
    std::optional<uint64_t> shares;
    std::optional<int64_t> quota;
    std::optional<uint64_t> burst, period;
    std::optional<int64_t> realtime_runtime;
    std::optional<uint64_t> realtime_period;
    std::string cpus, mems;
    std::optional<int64_t> idle;
  };
  std::optional<Cpu> cpu;
  struct Pids {
    int64_t limit = 0;
  };
  std::optional<Pids> pids;
  struct BlockIo {
    std::optional<uint16_t> weight, leaf_weight;
    std::vector<WeightDevice> weight_device;
    std::vector<ThrottleDevice> throttle_read_bps, throttle_write_bps, throttle_read_iops,
        throttle_write_iops;
  };
  std::optional<BlockIo> block_io;
  std::vector<HugepageLimit> hugepage_limits;
  struct Network {
    std::optional<uint32_t> class_id;
    std::vector<std::pair<std::string, uint32_t>> priorities;
  };
  std::optional<Network> network;
  std::map<std::string, std::pair<std::optional<uint32_t>, std::optional<uint32_t>>> rdma;
  std::map<std::string, std::string> unified;
};

struct SeccompArg {
  unsigned index = 0;
  uint64_t value = 0, value_two = 0;
  std::string op;
};
struct SeccompSyscall {
  std::vector<std::string> names;
  std::string action;
  std::optional<unsigned> errno_ret;
  std::vector<SeccompArg> args;
};
struct Seccomp {
  std::string default_action;
  std::optional<unsigned> default_errno_ret;
  std::vector<std::string> architectures;
  std::vector<std::string> flags;
  std::string listener_path;
  std::string listener_metadata;
  std::vector<SeccompSyscall> syscalls;
};

struct TimeOffset {
  int64_t secs = 0;
  uint32_t nanosecs = 0;
};

struct NetDevice {
  std::string name;
};

struct Linux {
  std::vector<Namespace> namespaces;
  std::vector<IdMapping> uid_mappings, gid_mappings;
  std::map<std::string, TimeOffset> time_offsets;  // "monotonic", "boottime"
  std::vector<Device> devices;
  std::string cgroups_path;
  std::optional<Resources> resources;
  std::string rootfs_propagation;
  std::vector<std::string> masked_paths, readonly_paths;
  std::string mount_label;
  std::map<std::string, std::string> sysctl;
  std::optional<Seccomp> seccomp;
  std::optional<std::string> personality_domain;
  std::vector<std::string> personality_flags;
  std::map<std::string, NetDevice> net_devices;
  std::string intel_rdt_clos;  // refused if set: not supported
  bool has_intel_rdt = false;
};

struct Spec {
  std::string oci_version;
  std::string root_path;
  bool root_readonly = false;
  std::vector<Mount> mounts;
  std::optional<Process> process;
  std::string hostname, domainname;
  Hooks hooks;
  std::map<std::string, std::string> annotations;
  std::optional<Linux> linux;

  // Namespace entry of the given type, or nullptr.
  const Namespace* ns(std::string_view type) const;
};

// Parses and validates a config.json document. Errors name the offending field:
//   config.json: process.args: must be a non-empty array of strings
Result<Spec> parse_spec(std::string_view json);
// Reads <bundle>/config.json.
Result<Spec> load_spec(const std::string& bundle);
// Parses a process.json (runc exec -p).
Result<Process> parse_process(std::string_view json);
// Parses a linux.resources document (runc update -r).
Result<Resources> parse_resources(std::string_view json);

// The default config.json of `berth-runtime spec` (runc's shape).
std::string default_spec_json(bool rootless);

// Capability names known to this build, in kernel order ("CAP_CHOWN", ...).
const std::vector<std::string>& known_capabilities();
int capability_number(std::string_view name);  // -1 if unknown

// Rlimit name ("RLIMIT_NOFILE") to resource number, -1 if unknown.
int rlimit_number(std::string_view name);

}  // namespace berth::oci
