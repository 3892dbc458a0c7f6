#include "cgroup/systemd.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cstdint>
#include <optional>

#include "cgroup/internal.h"
#include "util/fs.h"
#include "util/log.h"

namespace berth::cgroup {

namespace {

constexpr char kService[] = "org.freedesktop.systemd1";
constexpr char kObject[] = "/org/freedesktop/systemd1";
constexpr char kManagerIface[] = "org.freedesktop.systemd1.Manager";
// How long a job (start or stop of a unit) may take; runc waits as long.
constexpr int kJobTimeoutMs = 30000;

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// systemd's unit name alphabet (templates' '@' left out: a container is no instance).
Result<> check_unit_name(const std::string& unit, const std::string& what) {
  if (unit.size() > 255) return fail(what + ": unit name \"" + unit + "\" is longer than 255 bytes");
  for (unsigned char c : unit)
    if (!std::isalnum(c) && c != ':' && c != '-' && c != '_' && c != '.' && c != '\\')
      return fail(what + ": \"" + unit + "\" is not a valid systemd unit name");
  return {};
}

// A connection to systemd's manager, subscribed to its job results.
class Systemd {
 public:
  static Result<Systemd> connect() { return Systemd{TRY_CTX(dbus::Connection::system(), "systemd")}; }

  // StartTransientUnit; `accepted` is set once systemd took the unit (from
  // then on it is ours to stop), then waits for its job to finish.
  Result<> start(const std::string& unit, const dbus::Properties& props, bool& accepted) {
    TRY(subscribe());
    dbus::Writer w;
    w.str(unit);
    w.str("fail");
    dbus::write_properties(w, props);
    size_t aux = w.begin_array(8);  // a(sa(sv)): no auxiliary units
    w.end_array(aux, 8);
    auto reply = call("StartTransientUnit", "ssa(sv)a(sa(sv))", w.data());
    if (!reply && reply.error().msg.find("UnitExists") != std::string::npos) {
      // A failed unit of that name is kept until reset (an OOM-killed
      // container's scope is such a unit): reset it and try once more.
      (void)reset_failed(unit);
      reply = call("StartTransientUnit", "ssa(sv)a(sa(sv))", w.data());
    }
    if (!reply) return std::unexpected(std::move(reply).error());
    accepted = true;
    return wait_job(*reply, unit);
  }

  Result<> stop(const std::string& unit) {
    TRY(subscribe());
    dbus::Writer w;
    w.str(unit);
    w.str("replace");
    auto reply = call("StopUnit", "ss", w.data());
    if (!reply) {
      if (reply.error().msg.find("NoSuchUnit") != std::string::npos) return {};  // gone already
      return std::unexpected(std::move(reply).error());
    }
    return wait_job(*reply, unit);
  }

  Result<> reset_failed(const std::string& unit) {
    dbus::Writer w;
    w.str(unit);
    TRY(call("ResetFailedUnit", "s", w.data()));
    return {};
  }

  Result<> set_properties(const std::string& unit, const dbus::Properties& props) {
    dbus::Writer w;
    w.str(unit);
    w.boolean(true);  // runtime: gone at reboot, as the unit itself
    dbus::write_properties(w, props);
    TRY(call("SetUnitProperties", "sba(sv)", w.data()));
    return {};
  }

  // The unit's cgroup, relative to the hierarchy's root.
  Result<std::string> control_group(const std::string& unit) {
    dbus::Writer w;
    w.str(unit);
    dbus::Message reply = TRY(call("GetUnit", "s", w.data()));
    dbus::Reader r = reply.reader();
    std::string object = TRY(r.str());
    auto get = dbus::Message::call(kService, object, "org.freedesktop.DBus.Properties", "Get");
    dbus::Writer g;
    g.str(ends_with(unit, ".slice") ? "org.freedesktop.systemd1.Slice" : "org.freedesktop.systemd1.Scope");
    g.str("ControlGroup");
    get.signature = "ss";
    get.body = g.data();
    dbus::Message v = TRY(bus_.call(std::move(get)));
    dbus::Reader vr = v.reader();
    std::string type = TRY(vr.sig());
    if (type != "s") return fail("ControlGroup: not a string");
    std::string path = TRY(vr.str());
    if (path.empty() || path[0] != '/') return fail("unit " + unit + " has no cgroup");
    return path;
  }

 private:
  explicit Systemd(dbus::Connection c) : bus_(std::move(c)) {}

  Result<dbus::Message> call(const char* method, const char* sig, const std::string& body) {
    auto m = dbus::Message::call(kService, kObject, kManagerIface, method);
    m.signature = sig;
    m.body = body;
    return bus_.call(std::move(m));
  }

  // Job results come as signals: asked for before the first job only (an
  // update sets properties and needs none).
  Result<> subscribe() {
    if (subscribed_) return {};
    TRY_CTX(bus_.add_match("type='signal',sender='org.freedesktop.systemd1',"
                           "interface='org.freedesktop.systemd1.Manager',member='JobRemoved',"
                           "path='/org/freedesktop/systemd1'"),
            "systemd: subscribe to job results");
    // systemd sends job signals only while somebody subscribed.
    TRY_CTX(call("Subscribe", "", {}), "systemd");
    subscribed_ = true;
    return {};
  }

  // Waits for JobRemoved of the job in `reply` (an object path).
  Result<> wait_job(const dbus::Message& reply, const std::string& unit) {
    dbus::Reader r = reply.reader();
    std::string job = TRY(r.str());
    for (;;) {
      dbus::Message s = TRY_CTX(bus_.next_signal(kJobTimeoutMs), "unit " + unit + ": job " + job);
      if (s.member != "JobRemoved" || s.interface != kManagerIface || s.signature != "uoss") continue;
      dbus::Reader sr = s.reader();
      (void)TRY(sr.u32());
      std::string removed = TRY(sr.str());
      (void)TRY(sr.str());
      std::string result = TRY(sr.str());
      if (removed != job) continue;
      if (result != "done") return fail("unit " + unit + ": job " + result);
      return {};
    }
  }

  dbus::Connection bus_;
  bool subscribed_ = false;
};

// A process that keeps a new scope populated until the container's own is in
// it: systemd refuses a scope without a process, and stops one that empties.
// It waits for its pipe to close and dies with us.
class Holder {
 public:
  static Result<Holder> spawn() {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) < 0) return sys_error("pipe");
    pid_t parent = ::getpid();
    pid_t pid = ::fork();
    if (pid < 0) {
      int e = errno;
      ::close(p[0]), ::close(p[1]);
      return sys_error(e, "fork");
    }
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(0);
      ::close(p[1]);
      char c;
      while (::read(p[0], &c, 1) < 0 && errno == EINTR) {
      }
      ::_exit(0);
    }
    ::close(p[0]);
    Holder h;
    h.pid_ = pid;
    h.fd_.reset(p[1]);
    return h;
  }
  Holder() = default;
  Holder(Holder&& o) noexcept : pid_(std::exchange(o.pid_, -1)), fd_(std::move(o.fd_)) {}
  Holder& operator=(Holder&& o) noexcept {
    release();
    pid_ = std::exchange(o.pid_, -1);
    fd_ = std::move(o.fd_);
    return *this;
  }
  ~Holder() { release(); }
  pid_t pid() const { return pid_; }
  void release() {
    if (pid_ < 0) return;
    fd_.reset();
    while (::waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
  }

 private:
  pid_t pid_ = -1;
  UniqueFd fd_;
};

class SystemdManager final : public Manager {
 public:
  SystemdManager(const Layout& layout, SystemdUnit unit, std::string path, std::unique_ptr<Manager> fs)
      : layout_(layout), unit_(std::move(unit)), path_(std::move(path)), fs_(std::move(fs)) {}

  // (Where systemd does not run, the caller said so already: runtime's systemd_cgroup.)
  // (Nothing is made ahead of a systemd unit: `adopt` never applies.)
  Result<> create(const oci::Resources* res, bool) override {
    Systemd sd = TRY(Systemd::connect());
    bool scope = !ends_with(unit_.name, ".slice");
    dbus::Properties props = {{"Description", std::string("berth container ") + unit_.name}};
    if (scope) {
      holder_ = TRY(Holder::spawn());
      props.push_back({"Slice", unit_.slice});
      props.push_back({"PIDs", std::vector<uint32_t>{static_cast<uint32_t>(holder_.pid())}});
    }
    props.push_back({"Delegate", true});
    props.push_back({"DefaultDependencies", false});
    for (const char* a : {"MemoryAccounting", "CPUAccounting", "TasksAccounting", "IOAccounting"})
      props.push_back({a, true});
    if (res)
      for (auto& p : unit_properties(*res, layout_.mode)) props.push_back(std::move(p));
    bool accepted = false, have_cgroup = false;
    auto made = [&]() -> Result<> {
      TRY_CTX(sd.start(unit_.name, props, accepted), "systemd unit " + unit_.name);
      path_ = TRY_CTX(sd.control_group(unit_.name), "systemd unit " + unit_.name);
      fs_ = TRY(open(layout_, path_));
      have_cgroup = true;
      return fs_->create(res);
    }();
    if (!made) {
      // A unit systemd took whose job then failed or timed out may still be
      // loaded: it goes too. One it refused (a live unit of that name is
      // another container's) is not touched.
      if (have_cgroup) (void)fs_->destroy();
      if (accepted) {
        (void)sd.stop(unit_.name);
        (void)sd.reset_failed(unit_.name);
      }
      holder_.release();
    }
    return made;
  }

  Result<> apply(const oci::Resources& res) override {
    TRY(fs_->apply(res));
    dbus::Properties props = unit_properties(res, layout_.mode);
    if (props.empty()) return {};
    // The cgroup has the new limits; systemd's record of them follows, so a
    // daemon-reload does not put the old ones back.
    Systemd sd = TRY(Systemd::connect());
    TRY_CTX(sd.set_properties(unit_.name, props), "systemd unit " + unit_.name);
    return {};
  }

  void joined() override { holder_.release(); }
  Result<> add_pid(pid_t pid) override { return fs_->add_pid(pid); }
  UniqueFd dir_fd() override { return fs_->dir_fd(); }
  Result<std::vector<pid_t>> pids() override { return fs_->pids(); }
  Result<> freeze(bool frozen) override { return fs_->freeze(frozen); }
  Result<bool> frozen() override { return fs_->frozen(); }
  Result<> kill_all(int sig) override { return fs_->kill_all(sig); }

  Result<> destroy() override {
    holder_.release();
    // cgroupfs first: it kills what is left and removes what the container
    // made beneath its cgroup, so the unit stops at once (no SIGTERM and
    // TimeoutStopSec wait from systemd).
    auto r = fs_->destroy();
    if (systemd_running()) {
      auto sd = Systemd::connect();
      if (!sd) return std::unexpected(std::move(sd).error());
      if (auto s = sd->stop(unit_.name); !s) return std::unexpected(std::move(s).error().context("stop " + unit_.name));
      (void)sd->reset_failed(unit_.name);  // NoSuchUnit unless it failed
    }
    return r;
  }

  Result<Stats> stats() override { return fs_->stats(); }
  Result<std::unique_ptr<OomWatcher>> watch_oom() override { return fs_->watch_oom(); }
  const std::string& path() const override { return path_; }
  std::string dir(const std::string& controller) const override { return fs_->dir(controller); }
  Mode mode() const override { return layout_.mode; }

 private:
  Layout layout_;
  SystemdUnit unit_;
  std::string path_;
  std::unique_ptr<Manager> fs_;
  Holder holder_;
};

}  // namespace

bool systemd_running() { return ::access("/run/systemd/system", F_OK) == 0; }

Result<std::string> expand_slice(const std::string& slice) {
  if (!ends_with(slice, ".slice") || slice.find('/') != std::string::npos)
    return fail("\"" + slice + "\" is not a slice unit name");
  if (slice == "-.slice") return std::string("/");
  std::string base = slice.substr(0, slice.size() - 6);
  if (base.empty() || base.front() == '-' || base.back() == '-' || base.find("--") != std::string::npos)
    return fail("\"" + slice + "\" is not a valid slice name");
  std::string path, prefix;
  for (auto& part : split(base, '-')) {
    prefix += (prefix.empty() ? "" : "-") + part;
    path += "/" + prefix + ".slice";
  }
  return path;
}

Result<SystemdUnit> parse_systemd_path(const std::string& cgroups_path, const std::string& id, bool rootless) {
  std::string what = "linux.cgroupsPath \"" + cgroups_path + "\"";
  std::string slice, prefix = "berth", name = id;
  if (!cgroups_path.empty()) {
    auto parts = split(cgroups_path, ':');
    if (parts.size() != 3 || parts[2].empty() || cgroups_path.find('/') != std::string::npos)
      return fail(what + ": the systemd driver takes \"slice:prefix:name\"");
    slice = parts[0], prefix = parts[1], name = parts[2];
  }
  SystemdUnit u;
  u.slice = slice.empty() ? (rootless ? "user.slice" : "system.slice") : slice;
  TRY_CTX(expand_slice(u.slice), what);
  if (ends_with(name, ".slice")) {
    u.name = name;
    TRY_CTX(expand_slice(u.name), what);
  } else {
    u.name = (prefix.empty() ? "" : prefix + "-") + name + ".scope";
  }
  TRY(check_unit_name(u.name, what));
  return u;
}

dbus::Properties unit_properties(const oci::Resources& res, Mode mode) {
  bool v2 = mode == Mode::unified;
  auto limit = [](int64_t v) -> uint64_t { return v < 0 ? UINT64_MAX : static_cast<uint64_t>(v); };
  dbus::Properties p;
  if (res.memory) {
    auto& m = *res.memory;
    if (m.limit && *m.limit != 0) p.push_back({v2 ? "MemoryMax" : "MemoryLimit", limit(*m.limit)});
    if (v2 && m.reservation && *m.reservation != 0) p.push_back({"MemoryLow", limit(*m.reservation)});
    // OCI's swap is memory plus swap; v2's swap limit is the swap alone.
    if (v2 && m.swap && *m.swap < 0) p.push_back({"MemorySwapMax", UINT64_MAX});
    else if (v2 && m.swap && m.limit && *m.limit > 0 && *m.swap >= *m.limit)
      p.push_back({"MemorySwapMax", static_cast<uint64_t>(*m.swap - *m.limit)});
  }
  if (res.cpu) {
    auto& c = *res.cpu;
    if (c.shares && *c.shares) p.push_back({v2 ? "CPUWeight" : "CPUShares", v2 ? shares_to_weight(*c.shares) : *c.shares});
    uint64_t period = c.period && *c.period ? *c.period : 100000;
    if (c.period && *c.period) p.push_back({"CPUQuotaPeriodUSec", period});
    if (c.quota && *c.quota < 0) {
      p.push_back({"CPUQuotaPerSecUSec", UINT64_MAX});
    } else if (c.quota && *c.quota > 0) {
      // systemd keeps the quota as a percentage of a CPU: round up to 10 ms
      // per second, so the cgroup gets at least what was asked.
      uint64_t per_sec = static_cast<uint64_t>(*c.quota) * 1000000 / period;
      if (per_sec % 10000) per_sec += 10000 - per_sec % 10000;
      p.push_back({"CPUQuotaPerSecUSec", per_sec});
    }
    auto mask = [](const std::string& list) -> std::optional<std::vector<uint8_t>> {
      auto ids = detail::parse_list(list);
      if (!ids) return std::nullopt;  // the cgroupfs write names the bad value
      std::vector<uint8_t> bits;
      for (unsigned i : *ids) {
        if (i / 8 >= bits.size()) bits.resize(i / 8 + 1);
        bits[i / 8] |= static_cast<uint8_t>(1u << (i % 8));
      }
      return bits;
    };
    if (v2 && !c.cpus.empty())
      if (auto b = mask(c.cpus)) p.push_back({"AllowedCPUs", std::move(*b)});
    if (v2 && !c.mems.empty())
      if (auto b = mask(c.mems)) p.push_back({"AllowedMemoryNodes", std::move(*b)});
  }
  if (res.pids && res.pids->limit != 0) p.push_back({"TasksMax", limit(res.pids->limit)});
  if (res.block_io && res.block_io->weight && *res.block_io->weight)
    p.push_back({v2 ? "IOWeight" : "BlockIOWeight",
                 v2 ? blkio_to_io_weight(*res.block_io->weight) : uint64_t{*res.block_io->weight}});
  return p;
}

Result<std::unique_ptr<Manager>> open_systemd(const Layout& layout, const SystemdUnit& unit) {
  std::string path = ends_with(unit.name, ".slice") ? TRY(expand_slice(unit.name))
                                                     : TRY(expand_slice(unit.slice)) + "/" + unit.name;
  if (path.rfind("//", 0) == 0) path = path.substr(1);  // in -.slice
  auto fs = TRY(open(layout, path));
  return std::unique_ptr<Manager>(new SystemdManager(layout, unit, path, std::move(fs)));
}

Result<std::unique_ptr<Manager>> reopen_systemd(const Layout& layout, const std::string& path) {
  std::string p = clean_path("/" + path);
  size_t slash = p.find_last_of('/');
  SystemdUnit unit;
  unit.name = p.substr(slash + 1);
  std::string parent = p.substr(0, slash);
  unit.slice = parent.empty() ? "-.slice" : parent.substr(parent.find_last_of('/') + 1);
  TRY(check_unit_name(unit.name, "cgroup " + path));
  auto fs = TRY(open(layout, p));
  return std::unique_ptr<Manager>(new SystemdManager(layout, unit, p, std::move(fs)));
}

}  // namespace berth::cgroup
