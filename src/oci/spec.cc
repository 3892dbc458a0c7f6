#include "oci/spec.h"

#include <sys/resource.h>

#include <array>
#include <limits>
#include <memory>
#include <set>

// RapidJSON, not nlohmann::json: the monitor parses the container's spec on
// the start's path, and nlohmann's tree (a std::map and a std::string per
// key) made that 0.17-0.26 ms of it for a 5 KiB spec, 0.07-0.10 ms warm
// (measured); see docs/architecture.md.
#include <rapidjson/document.h>

#include "util/fs.h"

namespace berth::oci {

namespace {

// A value of the parsed document, read as the parser below needs it.
struct JValue {
  const rapidjson::Value* v;

  bool is_object() const { return v->IsObject(); }
  bool is_array() const { return v->IsArray(); }
  bool is_string() const { return v->IsString(); }
  bool is_boolean() const { return v->IsBool(); }
  bool is_null() const { return v->IsNull(); }
  size_t size() const { return v->IsArray() ? v->Size() : v->IsObject() ? v->MemberCount() : 0; }
  // A key given twice: the last one counts (as nlohmann's and Go's parsers have it).
  const rapidjson::Value* find(std::string_view key) const {
    const rapidjson::Value* found = nullptr;
    for (auto& m : v->GetObject())
      if (std::string_view(m.name.GetString(), m.name.GetStringLength()) == key) found = &m.value;
    return found;
  }
  bool contains(std::string_view key) const { return find(key) != nullptr; }
  JValue at(std::string_view key) const { return {find(key)}; }
  JValue at(size_t i) const { return {&(*v)[static_cast<rapidjson::SizeType>(i)]}; }
  std::string_view text() const { return {v->GetString(), v->GetStringLength()}; }
  // The keys in document order (a map built from them keeps the last of a repeated key).
  std::vector<std::string_view> keys() const {
    std::vector<std::string_view> out;
    for (auto& m : v->GetObject()) out.emplace_back(m.name.GetString(), m.name.GetStringLength());
    return out;
  }
};

// Field reader that knows where it is in the document, so every error names the
// field at fault ("linux.resources.memory.limit: expected an integer"). The
// path is put together only for an error: a reader is its value, its parent
// and its key (a literal or the document's own text) or index.
struct Reader {
  JValue j;
  std::string_view base;  // the top's name ("" for config.json)
  const Reader* parent = nullptr;
  std::string_view key;
  size_t idx = 0;

  Reader(const rapidjson::Value& v, std::string_view top) : j{&v}, base(top) {}
  Reader(JValue v, const Reader* p, std::string_view k, size_t i) : j(v), parent(p), key(k), idx(i) {}

  Reader at(std::string_view k) const { return Reader(j.at(k), this, k, 0); }
  Reader index(size_t i) const { return Reader(j.at(i), this, {}, i); }
  bool has(const char* k) const {
    if (!j.is_object()) return false;
    auto* v = j.find(k);
    return v && !v->IsNull();
  }

  std::string path() const {
    if (!parent) return std::string(base);
    std::string p = parent->path();
    if (key.data()) return p.empty() ? std::string(key) : p + "." + std::string(key);
    return p + "[" + std::to_string(idx) + "]";
  }
  std::unexpected<Error> bad(const std::string& what) const {
    return fail("config.json: " + path() + ": " + what);
  }

  Result<std::string> str() const {
    if (!j.is_string()) return bad("expected a string");
    return std::string(j.text());
  }
  Result<bool> boolean() const {
    if (!j.is_boolean()) return bad("expected true or false");
    return j.v->GetBool();
  }
  template <class T>
  Result<T> integer() const {
    if (j.v->IsUint64()) {
      auto v = j.v->GetUint64();
      if (v > static_cast<uint64_t>(std::numeric_limits<T>::max())) return bad("value out of range");
      return static_cast<T>(v);
    }
    if (j.v->IsInt64()) {
      auto v = j.v->GetInt64();
      if constexpr (std::is_unsigned_v<T>) {
        if (v < 0) return bad("must not be negative");
      } else {
        if (v < static_cast<int64_t>(std::numeric_limits<T>::min()) ||
            v > static_cast<int64_t>(std::numeric_limits<T>::max()))
          return bad("value out of range");
      }
      return static_cast<T>(v);
    }
    return bad("expected an integer");
  }
  Result<std::vector<std::string>> strings() const {
    if (!j.is_array()) return bad("expected an array of strings");
    std::vector<std::string> out;
    out.reserve(j.size());
    for (size_t i = 0; i < j.size(); ++i) out.push_back(TRY(index(i).str()));
    return out;
  }
  Result<std::map<std::string, std::string>> string_map() const {
    if (!j.is_object()) return bad("expected an object of strings");
    std::map<std::string, std::string> out;
    for (auto k : j.keys()) out[std::string(k)] = TRY(at(k).str());
    return out;
  }
  Result<> object() const {
    if (!j.is_object()) return bad("expected an object");
    return {};
  }
  Result<> array() const {
    if (!j.is_array()) return bad("expected an array");
    return {};
  }

  // Optional fields: leave `out` untouched when absent or null.
  template <class T>
  Result<> opt_int(const char* key, std::optional<T>& out) const {
    if (has(key)) out = TRY(at(key).template integer<T>());
    return {};
  }
  template <class T>
  Result<> opt_int(const char* key, T& out) const {
    if (has(key)) out = TRY(at(key).template integer<T>());
    return {};
  }
  Result<> opt_str(const char* key, std::string& out) const {
    if (has(key)) out = TRY(at(key).str());
    return {};
  }
  Result<> opt_bool(const char* key, bool& out) const {
    if (has(key)) out = TRY(at(key).boolean());
    return {};
  }
  Result<> opt_bool(const char* key, std::optional<bool>& out) const {
    if (has(key)) out = TRY(at(key).boolean());
    return {};
  }
  Result<> opt_strings(const char* key, std::vector<std::string>& out) const {
    if (has(key)) out = TRY(at(key).strings());
    return {};
  }
};

Result<std::vector<IdMapping>> parse_idmaps(const Reader& r) {
  TRY(r.array());
  std::vector<IdMapping> out;
  for (size_t i = 0; i < r.j.size(); ++i) {
    Reader e = r.index(i);
    TRY(e.object());
    IdMapping m;
    if (!e.has("containerID") || !e.has("hostID") || !e.has("size"))
      return e.bad("containerID, hostID and size are required");
    m.container_id = TRY(e.at("containerID").integer<uint32_t>());
    m.host_id = TRY(e.at("hostID").integer<uint32_t>());
    m.size = TRY(e.at("size").integer<uint32_t>());
    if (m.size == 0) return e.bad("size must be greater than 0");
    out.push_back(m);
  }
  return out;
}

Result<User> parse_user(const Reader& r) {
  TRY(r.object());
  User u;
  TRY(r.opt_int("uid", u.uid));
  TRY(r.opt_int("gid", u.gid));
  TRY(r.opt_int("umask", u.umask));
  if (r.has("additionalGids")) {
    Reader g = r.at("additionalGids");
    TRY(g.array());
    for (size_t i = 0; i < g.j.size(); ++i) u.additional_gids.push_back(TRY(g.index(i).integer<uint32_t>()));
  }
  TRY(r.opt_str("username", u.username));
  return u;
}

Result<Process> parse_process_at(const Reader& r) {
  TRY(r.object());
  Process p;
  TRY(r.opt_bool("terminal", p.terminal));
  if (r.has("consoleSize")) {
    Reader c = r.at("consoleSize");
    TRY(c.object());
    ConsoleSize cs;
    if (!c.has("height") || !c.has("width")) return c.bad("height and width are required");
    cs.height = TRY(c.at("height").integer<unsigned>());
    cs.width = TRY(c.at("width").integer<unsigned>());
    p.console_size = cs;
  }
  if (!r.has("user")) return r.bad("user is required");
  p.user = TRY(parse_user(r.at("user")));
  TRY(r.opt_strings("args", p.args));
  TRY(r.opt_str("commandLine", p.command_line));
  if (p.args.empty()) return r.bad("args must be a non-empty array of strings");
  TRY(r.opt_strings("env", p.env));
  for (size_t i = 0; i < p.env.size(); ++i)
    if (p.env[i].find('=') == std::string::npos || p.env[i].front() == '=')
      return r.at("env").index(i).bad("\"" + p.env[i] + "\" is not of the form NAME=value");
  if (!r.has("cwd")) return r.bad("cwd is required");
  p.cwd = TRY(r.at("cwd").str());
  if (p.cwd.empty() || p.cwd[0] != '/') return r.at("cwd").bad("\"" + p.cwd + "\" is not an absolute path");
  if (r.has("capabilities")) {
    Reader c = r.at("capabilities");
    TRY(c.object());
    Capabilities caps;
    const std::pair<const char*, std::vector<std::string>*> sets[] = {
        {"bounding", &caps.bounding},       {"effective", &caps.effective},
        {"inheritable", &caps.inheritable}, {"permitted", &caps.permitted},
        {"ambient", &caps.ambient}};
    for (auto& [key, out] : sets) {
      TRY(c.opt_strings(key, *out));
      for (size_t i = 0; i < out->size(); ++i)
        if (capability_number((*out)[i]) < 0)
          return c.at(key).index(i).bad("unknown capability \"" + (*out)[i] + "\"");
    }
    p.capabilities = std::move(caps);
  }
  if (r.has("rlimits")) {
    Reader rl = r.at("rlimits");
    TRY(rl.array());
    std::set<std::string> seen;
    for (size_t i = 0; i < rl.j.size(); ++i) {
      Reader e = rl.index(i);
      TRY(e.object());
      Rlimit l;
      if (!e.has("type") || !e.has("hard") || !e.has("soft")) return e.bad("type, hard and soft are required");
      l.type = TRY(e.at("type").str());
      if (rlimit_number(l.type) < 0) return e.at("type").bad("unknown rlimit \"" + l.type + "\"");
      if (!seen.insert(l.type).second) return e.at("type").bad("duplicate rlimit \"" + l.type + "\"");
      l.hard = TRY(e.at("hard").integer<uint64_t>());
      l.soft = TRY(e.at("soft").integer<uint64_t>());
      if (l.soft > l.hard) return e.bad("soft limit exceeds hard limit");
      p.rlimits.push_back(l);
    }
  }
  TRY(r.opt_bool("noNewPrivileges", p.no_new_privileges));
  TRY(r.opt_str("apparmorProfile", p.apparmor_profile));
  TRY(r.opt_int("oomScoreAdj", p.oom_score_adj));
  if (p.oom_score_adj && (*p.oom_score_adj < -1000 || *p.oom_score_adj > 1000))
    return r.at("oomScoreAdj").bad("must be between -1000 and 1000");
  TRY(r.opt_str("selinuxLabel", p.selinux_label));
  if (r.has("ioPriority")) {
    Reader io = r.at("ioPriority");
    TRY(io.object());
    IoPriority prio;
    if (!io.has("class")) return io.bad("class is required");
    prio.klass = TRY(io.at("class").str());
    if (prio.klass != "IOPRIO_CLASS_RT" && prio.klass != "IOPRIO_CLASS_BE" && prio.klass != "IOPRIO_CLASS_IDLE")
      return io.at("class").bad("unknown class \"" + prio.klass + "\"");
    TRY(io.opt_int("priority", prio.priority));
    if (prio.priority < 0 || prio.priority > 7) return io.at("priority").bad("must be between 0 and 7");
    p.io_priority = prio;
  }
  if (r.has("scheduler")) {
    Reader s = r.at("scheduler");
    TRY(s.object());
    Scheduler sch;
    if (!s.has("policy")) return s.bad("policy is required");
    sch.policy = TRY(s.at("policy").str());
    static const std::set<std::string> policies = {"SCHED_OTHER", "SCHED_FIFO",  "SCHED_RR",
                                                   "SCHED_BATCH", "SCHED_ISO",   "SCHED_IDLE",
                                                   "SCHED_DEADLINE"};
    if (!policies.count(sch.policy)) return s.at("policy").bad("unknown policy \"" + sch.policy + "\"");
    TRY(s.opt_int("nice", sch.nice));
    TRY(s.opt_int("priority", sch.priority));
    TRY(s.opt_strings("flags", sch.flags));
    TRY(s.opt_int("runtime", sch.runtime));
    TRY(s.opt_int("deadline", sch.deadline));
    TRY(s.opt_int("period", sch.period));
    p.scheduler = sch;
  }
  if (r.has("execCPUAffinity")) {
    Reader a = r.at("execCPUAffinity");
    TRY(a.object());
    CpuAffinity aff;
    TRY(a.opt_str("initial", aff.initial));
    TRY(a.opt_str("final", aff.final));
    p.exec_cpu_affinity = aff;
  }
  return p;
}

Result<Hook> parse_hook(const Reader& r) {
  TRY(r.object());
  Hook h;
  if (!r.has("path")) return r.bad("path is required");
  h.path = TRY(r.at("path").str());
  if (h.path.empty() || h.path[0] != '/') return r.at("path").bad("\"" + h.path + "\" is not an absolute path");
  TRY(r.opt_strings("args", h.args));
  TRY(r.opt_strings("env", h.env));
  if (r.has("timeout")) {
    h.timeout = TRY(r.at("timeout").integer<int>());
    if (*h.timeout <= 0) return r.at("timeout").bad("must be greater than zero");
  }
  return h;
}

Result<std::vector<DeviceCgroupRule>> parse_device_rules(const Reader& r) {
  TRY(r.array());
  std::vector<DeviceCgroupRule> out;
  for (size_t i = 0; i < r.j.size(); ++i) {
    Reader e = r.index(i);
    TRY(e.object());
    DeviceCgroupRule d;
    if (!e.has("allow")) return e.bad("allow is required");
    d.allow = TRY(e.at("allow").boolean());
    TRY(e.opt_str("type", d.type));
    if (!d.type.empty() && d.type != "a" && d.type != "b" && d.type != "c")
      return e.at("type").bad("\"" + d.type + "\" is not one of a, b, c");
    TRY(e.opt_int("major", d.major));
    TRY(e.opt_int("minor", d.minor));
    TRY(e.opt_str("access", d.access));
    for (char c : d.access)
      if (c != 'r' && c != 'w' && c != 'm') return e.at("access").bad("\"" + d.access + "\" is not a subset of rwm");
    out.push_back(std::move(d));
  }
  return out;
}

Result<std::vector<ThrottleDevice>> parse_throttle(const Reader& r) {
  TRY(r.array());
  std::vector<ThrottleDevice> out;
  for (size_t i = 0; i < r.j.size(); ++i) {
    Reader e = r.index(i);
    TRY(e.object());
    ThrottleDevice t;
    if (!e.has("major") || !e.has("minor") || !e.has("rate")) return e.bad("major, minor and rate are required");
    t.major = TRY(e.at("major").integer<int64_t>());
    t.minor = TRY(e.at("minor").integer<int64_t>());
    t.rate = TRY(e.at("rate").integer<uint64_t>());
    out.push_back(t);
  }
  return out;
}

Result<Resources> parse_resources_at(const Reader& r) {
  TRY(r.object());
  Resources res;
  if (r.has("devices")) res.devices = TRY(parse_device_rules(r.at("devices")));
  if (r.has("memory")) {
    Reader m = r.at("memory");
    TRY(m.object());
    Resources::Memory mem;
    TRY(m.opt_int("limit", mem.limit));
    TRY(m.opt_int("reservation", mem.reservation));
    TRY(m.opt_int("swap", mem.swap));
    TRY(m.opt_int("kernel", mem.kernel));
    TRY(m.opt_int("kernelTCP", mem.kernel_tcp));
    TRY(m.opt_int("swappiness", mem.swappiness));
    if (mem.swappiness && *mem.swappiness > 100) return m.at("swappiness").bad("must be between 0 and 100");
    TRY(m.opt_bool("disableOOMKiller", mem.disable_oom_killer));
    TRY(m.opt_bool("useHierarchy", mem.use_hierarchy));
    TRY(m.opt_bool("checkBeforeUpdate", mem.check_before_update));
    res.memory = mem;
  }
  if (r.has("cpu")) {
    Reader c = r.at("cpu");
    TRY(c.object());
    Resources::Cpu cpu;
    TRY(c.opt_int("shares", cpu.shares));
    TRY(c.opt_int("quota", cpu.quota));
    TRY(c.opt_int("burst", cpu.burst));
    TRY(c.opt_int("period", cpu.period));
    TRY(c.opt_int("realtimeRuntime", cpu.realtime_runtime));
    TRY(c.opt_int("realtimePeriod", cpu.realtime_period));
    TRY(c.opt_str("cpus", cpu.cpus));
    TRY(c.opt_str("mems", cpu.mems));
    TRY(c.opt_int("idle", cpu.idle));
    res.cpu = cpu;
  }
  if (r.has("pids")) {
    Reader p = r.at("pids");
    TRY(p.object());
    Resources::Pids pids;
    if (p.has("limit")) pids.limit = TRY(p.at("limit").integer<int64_t>());
    res.pids = pids;
  }
  if (r.has("blockIO")) {
    Reader b = r.at("blockIO");
    TRY(b.object());
    Resources::BlockIo bio;
    TRY(b.opt_int("weight", bio.weight));
    TRY(b.opt_int("leafWeight", bio.leaf_weight));
    if (b.has("weightDevice")) {
      Reader wd = b.at("weightDevice");
      TRY(wd.array());
      for (size_t i = 0; i < wd.j.size(); ++i) {
        Reader e = wd.index(i);
        TRY(e.object());
        WeightDevice w;
        if (!e.has("major") || !e.has("minor")) return e.bad("major and minor are required");
        w.major = TRY(e.at("major").integer<int64_t>());
        w.minor = TRY(e.at("minor").integer<int64_t>());
        TRY(e.opt_int("weight", w.weight));
        TRY(e.opt_int("leafWeight", w.leaf_weight));
        bio.weight_device.push_back(w);
      }
    }
    if (b.has("throttleReadBpsDevice")) bio.throttle_read_bps = TRY(parse_throttle(b.at("throttleReadBpsDevice")));
    if (b.has("throttleWriteBpsDevice")) bio.throttle_write_bps = TRY(parse_throttle(b.at("throttleWriteBpsDevice")));
    if (b.has("throttleReadIOPSDevice")) bio.throttle_read_iops = TRY(parse_throttle(b.at("throttleReadIOPSDevice")));
    if (b.has("throttleWriteIOPSDevice"))
      bio.throttle_write_iops = TRY(parse_throttle(b.at("throttleWriteIOPSDevice")));
    res.block_io = bio;
  }
  if (r.has("hugepageLimits")) {
    Reader h = r.at("hugepageLimits");
    TRY(h.array());
    for (size_t i = 0; i < h.j.size(); ++i) {
      Reader e = h.index(i);
      TRY(e.object());
      HugepageLimit l;
      if (!e.has("pageSize") || !e.has("limit")) return e.bad("pageSize and limit are required");
      l.page_size = TRY(e.at("pageSize").str());
      l.limit = TRY(e.at("limit").integer<uint64_t>());
      res.hugepage_limits.push_back(l);
    }
  }
  if (r.has("network")) {
    Reader n = r.at("network");
    TRY(n.object());
    Resources::Network net;
    TRY(n.opt_int("classID", net.class_id));
    if (n.has("priorities")) {
      Reader p = n.at("priorities");
      TRY(p.array());
      for (size_t i = 0; i < p.j.size(); ++i) {
        Reader e = p.index(i);
        TRY(e.object());
        if (!e.has("name") || !e.has("priority")) return e.bad("name and priority are required");
        net.priorities.emplace_back(TRY(e.at("name").str()), TRY(e.at("priority").integer<uint32_t>()));
      }
    }
    res.network = net;
  }
  if (r.has("rdma")) {
    Reader rd = r.at("rdma");
    TRY(rd.object());
    for (std::string_view key : rd.j.keys()) {
      Reader e = rd.at(key);
      TRY(e.object());
      auto& slot = res.rdma[std::string(key)];
      TRY(e.opt_int("hcaHandles", slot.first));
      TRY(e.opt_int("hcaObjects", slot.second));
    }
  }
  if (r.has("unified")) res.unified = TRY(r.at("unified").string_map());
  return res;
}

Result<Seccomp> parse_seccomp(const Reader& r) {
  TRY(r.object());
  Seccomp s;
  if (!r.has("defaultAction")) return r.bad("defaultAction is required");
  s.default_action = TRY(r.at("defaultAction").str());
  TRY(r.opt_int("defaultErrnoRet", s.default_errno_ret));
  TRY(r.opt_strings("architectures", s.architectures));
  TRY(r.opt_strings("flags", s.flags));
  TRY(r.opt_str("listenerPath", s.listener_path));
  TRY(r.opt_str("listenerMetadata", s.listener_metadata));
  if (r.has("syscalls")) {
    Reader sc = r.at("syscalls");
    TRY(sc.array());
    for (size_t i = 0; i < sc.j.size(); ++i) {
      Reader e = sc.index(i);
      TRY(e.object());
      SeccompSyscall call;
      if (!e.has("names") || !e.has("action")) return e.bad("names and action are required");
      call.names = TRY(e.at("names").strings());
      if (call.names.empty()) return e.at("names").bad("must not be empty");
      call.action = TRY(e.at("action").str());
      TRY(e.opt_int("errnoRet", call.errno_ret));
      if (e.has("args")) {
        Reader a = e.at("args");
        TRY(a.array());
        for (size_t k = 0; k < a.j.size(); ++k) {
          Reader ae = a.index(k);
          TRY(ae.object());
          SeccompArg arg;
          if (!ae.has("index") || !ae.has("value") || !ae.has("op")) return ae.bad("index, value and op are required");
          arg.index = TRY(ae.at("index").integer<unsigned>());
          if (arg.index > 5) return ae.at("index").bad("must be between 0 and 5");
          arg.value = TRY(ae.at("value").integer<uint64_t>());
          TRY(ae.opt_int("valueTwo", arg.value_two));
          arg.op = TRY(ae.at("op").str());
          call.args.push_back(arg);
        }
      }
      s.syscalls.push_back(std::move(call));
    }
  }
  return s;
}

const std::set<std::string>& namespace_types() {
  static const std::set<std::string> t = {"pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time"};
  return t;
}

Result<Linux> parse_linux(const Reader& r) {
  TRY(r.object());
  Linux l;
  if (r.has("namespaces")) {
    Reader ns = r.at("namespaces");
    TRY(ns.array());
    std::set<std::string> seen;
    for (size_t i = 0; i < ns.j.size(); ++i) {
      Reader e = ns.index(i);
      TRY(e.object());
      Namespace n;
      if (!e.has("type")) return e.bad("type is required");
      n.type = TRY(e.at("type").str());
      if (!namespace_types().count(n.type)) return e.at("type").bad("unknown namespace type \"" + n.type + "\"");
      if (!seen.insert(n.type).second) return e.at("type").bad("duplicate namespace \"" + n.type + "\"");
      TRY(e.opt_str("path", n.path));
      if (!n.path.empty() && n.path[0] != '/') return e.at("path").bad("\"" + n.path + "\" is not an absolute path");
      l.namespaces.push_back(std::move(n));
    }
  }
  if (r.has("uidMappings")) l.uid_mappings = TRY(parse_idmaps(r.at("uidMappings")));
  if (r.has("gidMappings")) l.gid_mappings = TRY(parse_idmaps(r.at("gidMappings")));
  if (r.has("timeOffsets")) {
    Reader t = r.at("timeOffsets");
    TRY(t.object());
    for (std::string_view key : t.j.keys()) {
      if (key != "monotonic" && key != "boottime")
        return t.bad("unknown clock \"" + std::string(key) + "\" (monotonic or boottime)");
      Reader e = t.at(key);
      TRY(e.object());
      TimeOffset off;
      TRY(e.opt_int("secs", off.secs));
      TRY(e.opt_int("nanosecs", off.nanosecs));
      if (off.nanosecs >= 1000000000u) return e.at("nanosecs").bad("must be below 1000000000");
      l.time_offsets[std::string(key)] = off;
    }
  }
  if (r.has("devices")) {
    Reader d = r.at("devices");
    TRY(d.array());
    for (size_t i = 0; i < d.j.size(); ++i) {
      Reader e = d.index(i);
      TRY(e.object());
      Device dev;
      if (!e.has("type") || !e.has("path")) return e.bad("type and path are required");
      dev.type = TRY(e.at("type").str());
      if (dev.type != "c" && dev.type != "b" && dev.type != "u" && dev.type != "p")
        return e.at("type").bad("\"" + dev.type + "\" is not one of c, b, u, p");
      dev.path = TRY(e.at("path").str());
      if (dev.path.empty() || dev.path[0] != '/') return e.at("path").bad("\"" + dev.path + "\" is not an absolute path");
      TRY(e.opt_int("major", dev.major));
      TRY(e.opt_int("minor", dev.minor));
      if (dev.type != "p" && (!e.has("major") || !e.has("minor")))
        return e.bad("major and minor are required for device " + dev.path);
      TRY(e.opt_int("fileMode", dev.file_mode));
      TRY(e.opt_int("uid", dev.uid));
      TRY(e.opt_int("gid", dev.gid));
      l.devices.push_back(std::move(dev));
    }
  }
  TRY(r.opt_str("cgroupsPath", l.cgroups_path));
  if (r.has("resources")) l.resources = TRY(parse_resources_at(r.at("resources")));
  TRY(r.opt_str("rootfsPropagation", l.rootfs_propagation));
  if (!l.rootfs_propagation.empty()) {
    static const std::set<std::string> props = {"shared", "slave", "private", "unbindable",
                                                "rshared", "rslave", "rprivate", "runbindable"};
    if (!props.count(l.rootfs_propagation))
      return r.at("rootfsPropagation").bad("unknown propagation \"" + l.rootfs_propagation + "\"");
  }
  TRY(r.opt_strings("maskedPaths", l.masked_paths));
  TRY(r.opt_strings("readonlyPaths", l.readonly_paths));
  TRY(r.opt_str("mountLabel", l.mount_label));
  if (r.has("sysctl")) l.sysctl = TRY(r.at("sysctl").string_map());
  if (r.has("seccomp")) l.seccomp = TRY(parse_seccomp(r.at("seccomp")));
  if (r.has("personality")) {
    Reader p = r.at("personality");
    TRY(p.object());
    if (!p.has("domain")) return p.bad("domain is required");
    l.personality_domain = TRY(p.at("domain").str());
    if (*l.personality_domain != "LINUX" && *l.personality_domain != "LINUX32")
      return p.at("domain").bad("unknown domain \"" + *l.personality_domain + "\" (LINUX or LINUX32)");
    TRY(p.opt_strings("flags", l.personality_flags));
  }
  if (r.has("netDevices")) {
    Reader nd = r.at("netDevices");
    TRY(nd.object());
    for (std::string_view key : nd.j.keys()) {
      Reader e = nd.at(key);
      TRY(e.object());
      NetDevice d;
      TRY(e.opt_str("name", d.name));
      l.net_devices[std::string(key)] = d;
    }
  }
  if (r.has("intelRdt")) l.has_intel_rdt = true;
  return l;
}

Result<std::vector<Mount::IdMap>> parse_mount_idmaps(const Reader& r) {
  auto maps = TRY(parse_idmaps(r));
  std::vector<Mount::IdMap> out;
  for (auto& m : maps) out.push_back({m.container_id, m.host_id, m.size});
  return out;
}

// The document, parsed strictly: UTF-8 checked, nothing after the value, no
// comments, and iteratively (no recursion for an attacker's nesting to exhaust
// the stack). Its strings point into it, and its readers into those.
Result<std::unique_ptr<rapidjson::Document>> parse_json(std::string_view text, const char* what) {
  auto d = std::make_unique<rapidjson::Document>();
  constexpr unsigned kFlags = rapidjson::kParseValidateEncodingFlag | rapidjson::kParseIterativeFlag;
  d->Parse<kFlags>(text.data(), text.size());
  if (d->HasParseError()) return fail(std::string(what) + ": not valid JSON");
  return d;
}

}  // namespace

const Namespace* Spec::ns(std::string_view type) const {
  if (!linux) return nullptr;
  for (auto& n : linux->namespaces)
    if (n.type == type) return &n;
  return nullptr;
}

Result<Spec> parse_spec(std::string_view text) {
  auto doc = TRY(parse_json(text, "config.json"));
  Reader r(*doc, "");
  if (!doc->IsObject()) return fail("config.json: expected a JSON object");
  Spec s;
  if (!r.has("ociVersion")) return fail("config.json: ociVersion is required");
  s.oci_version = TRY(r.at("ociVersion").str());
  if (s.oci_version.empty() || s.oci_version[0] != '1')
    return fail("config.json: ociVersion: unsupported version \"" + s.oci_version + "\" (1.x)");
  if (!r.has("root")) return fail("config.json: root is required");
  {
    Reader root = r.at("root");
    TRY(root.object());
    if (!root.has("path")) return root.bad("path is required");
    s.root_path = TRY(root.at("path").str());
    if (s.root_path.empty()) return root.at("path").bad("must not be empty");
    TRY(root.opt_bool("readonly", s.root_readonly));
  }
  if (r.has("mounts")) {
    Reader m = r.at("mounts");
    TRY(m.array());
    for (size_t i = 0; i < m.j.size(); ++i) {
      Reader e = m.index(i);
      TRY(e.object());
      Mount mt;
      if (!e.has("destination")) return e.bad("destination is required");
      mt.destination = TRY(e.at("destination").str());
      if (mt.destination.empty()) return e.at("destination").bad("must not be empty");
      TRY(e.opt_str("type", mt.type));
      TRY(e.opt_str("source", mt.source));
      TRY(e.opt_strings("options", mt.options));
      if (e.has("uidMappings")) mt.uid_mappings = TRY(parse_mount_idmaps(e.at("uidMappings")));
      if (e.has("gidMappings")) mt.gid_mappings = TRY(parse_mount_idmaps(e.at("gidMappings")));
      s.mounts.push_back(std::move(mt));
    }
  }
  if (r.has("process")) s.process = TRY(parse_process_at(r.at("process")));
  TRY(r.opt_str("hostname", s.hostname));
  TRY(r.opt_str("domainname", s.domainname));
  if (r.has("hooks")) {
    Reader h = r.at("hooks");
    TRY(h.object());
    const std::pair<const char*, std::vector<Hook>*> kinds[] = {
        {"prestart", &s.hooks.prestart},
        {"createRuntime", &s.hooks.create_runtime},
        {"createContainer", &s.hooks.create_container},
        {"startContainer", &s.hooks.start_container},
        {"poststart", &s.hooks.poststart},
        {"poststop", &s.hooks.poststop}};
    for (auto& [key, out] : kinds) {
      if (!h.has(key)) continue;
      Reader list = h.at(key);
      TRY(list.array());
      for (size_t i = 0; i < list.j.size(); ++i) out->push_back(TRY(parse_hook(list.index(i))));
    }
  }
  if (r.has("annotations")) s.annotations = TRY(r.at("annotations").string_map());
  if (r.has("linux")) s.linux = TRY(parse_linux(r.at("linux")));

  // Cross-field rules.
  if (s.process && !s.process->command_line.empty())
    return fail("config.json: process.commandLine: only supported on Windows");
  const Namespace* user = s.ns("user");
  bool new_user = user && user->path.empty();
  if (new_user && (s.linux->uid_mappings.empty() || s.linux->gid_mappings.empty()))
    return fail("config.json: linux.uidMappings/gidMappings: required with a new user namespace");
  if (!new_user && s.linux && (!s.linux->uid_mappings.empty() || !s.linux->gid_mappings.empty()))
    return fail("config.json: linux.uidMappings/gidMappings: set without a new user namespace");
  const Namespace* uts = s.ns("uts");
  if ((!s.hostname.empty() || !s.domainname.empty()) && !uts)
    return fail("config.json: hostname: setting it needs a uts namespace");
  if (s.linux && !s.linux->time_offsets.empty()) {
    const Namespace* t = s.ns("time");
    if (!t || !t->path.empty())
      return fail("config.json: linux.timeOffsets: set without a new time namespace");
  }
  if (s.linux && s.linux->has_intel_rdt)
    return fail("config.json: linux.intelRdt: not supported by berth-runtime");
  if (s.linux && !s.linux->net_devices.empty()) {
    const Namespace* n = s.ns("network");
    if (!n) return fail("config.json: linux.netDevices: needs a network namespace");
  }
  return s;
}

Result<Spec> load_spec(const std::string& bundle) {
  std::string path = join_path(bundle, "config.json");
  auto text = read_file(path);
  if (!text) return std::unexpected(std::move(text).error());
  return parse_spec(*text);
}

Result<Process> parse_process(std::string_view text) {
  auto doc = TRY(parse_json(text, "process.json"));
  Reader r(*doc, "process");
  auto p = parse_process_at(r);
  if (!p) {
    // Reuse the config.json wording but name the right file.
    std::string m = p.error().msg;
    if (m.rfind("config.json: ", 0) == 0) m = "process.json: " + m.substr(13);
    return fail(m);
  }
  return p;
}

Result<Resources> parse_resources(std::string_view text) {
  auto doc = TRY(parse_json(text, "resources"));
  Reader r(*doc, "linux.resources");
  auto res = parse_resources_at(r);
  if (!res) {
    // Not config.json: the error names the field alone, the caller the file.
    std::string m = res.error().msg;
    if (m.rfind("config.json: ", 0) == 0) m = m.substr(13);
    return fail(m);
  }
  return res;
}

const std::vector<std::string>& known_capabilities() {
  static const std::vector<std::string> caps = {
      "CAP_CHOWN",           "CAP_DAC_OVERRIDE",   "CAP_DAC_READ_SEARCH", "CAP_FOWNER",
      "CAP_FSETID",          "CAP_KILL",           "CAP_SETGID",          "CAP_SETUID",
      "CAP_SETPCAP",         "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
      "CAP_NET_ADMIN",       "CAP_NET_RAW",        "CAP_IPC_LOCK",        "CAP_IPC_OWNER",
      "CAP_SYS_MODULE",      "CAP_SYS_RAWIO",      "CAP_SYS_CHROOT",      "CAP_SYS_PTRACE",
      "CAP_SYS_PACCT",       "CAP_SYS_ADMIN",      "CAP_SYS_BOOT",        "CAP_SYS_NICE",
      "CAP_SYS_RESOURCE",    "CAP_SYS_TIME",       "CAP_SYS_TTY_CONFIG",  "CAP_MKNOD",
      "CAP_LEASE",           "CAP_AUDIT_WRITE",    "CAP_AUDIT_CONTROL",   "CAP_SETFCAP",
      "CAP_MAC_OVERRIDE",    "CAP_MAC_ADMIN",      "CAP_SYSLOG",          "CAP_WAKE_ALARM",
      "CAP_BLOCK_SUSPEND",   "CAP_AUDIT_READ",     "CAP_PERFMON",         "CAP_BPF",
      "CAP_CHECKPOINT_RESTORE"};
  return caps;
}

int capability_number(std::string_view name) {
  auto& caps = known_capabilities();
  for (size_t i = 0; i < caps.size(); ++i)
    if (caps[i] == name) return static_cast<int>(i);
  return -1;
}

int rlimit_number(std::string_view name) {
  static const std::array<std::pair<const char*, int>, 16> table = {{
      {"RLIMIT_CPU", RLIMIT_CPU},         {"RLIMIT_FSIZE", RLIMIT_FSIZE},
      {"RLIMIT_DATA", RLIMIT_DATA},       {"RLIMIT_STACK", RLIMIT_STACK},
      {"RLIMIT_CORE", RLIMIT_CORE},       {"RLIMIT_RSS", RLIMIT_RSS},
      {"RLIMIT_NPROC", RLIMIT_NPROC},     {"RLIMIT_NOFILE", RLIMIT_NOFILE},
      {"RLIMIT_MEMLOCK", RLIMIT_MEMLOCK}, {"RLIMIT_AS", RLIMIT_AS},
      {"RLIMIT_LOCKS", RLIMIT_LOCKS},     {"RLIMIT_SIGPENDING", RLIMIT_SIGPENDING},
      {"RLIMIT_MSGQUEUE", RLIMIT_MSGQUEUE}, {"RLIMIT_NICE", RLIMIT_NICE},
      {"RLIMIT_RTPRIO", RLIMIT_RTPRIO},   {"RLIMIT_RTTIME", RLIMIT_RTTIME},
  }};
  for (auto& [n, v] : table)
    if (name == n) return v;
  return -1;
}

}  // namespace berth::oci
