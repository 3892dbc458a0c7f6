#include "engine/engine.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstring>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <thread>

#include "cgroup/cgroup.h"
#include "cgroup/systemd.h"
#include "engine/monitor.h"
#include "engine/spare.h"
#include "engine/spec.h"
#include "engine/user.h"
#include "engine/volumes.h"
#include "image/db.h"
#include "image/store.h"
#include "runtime/container.h"
#include "runtime/state.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/syscalls.h"
#include "util/thread.h"

extern char** environ;

namespace berth::engine {

using json = nlohmann::json;
using image::Row;

namespace {

constexpr int kSchemaVersion = 2;
constexpr std::string_view kSchema = R"sql(
CREATE TABLE IF NOT EXISTS containers (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  image TEXT NOT NULL,
  image_name TEXT NOT NULL,
  created INTEGER NOT NULL,
  config TEXT NOT NULL,
  state TEXT NOT NULL,
  pid INTEGER NOT NULL DEFAULT 0,
  monitor_pid INTEGER NOT NULL DEFAULT 0,
  monitor_start INTEGER NOT NULL DEFAULT 0,
  exit_code INTEGER NOT NULL DEFAULT 0,
  started INTEGER NOT NULL DEFAULT 0,
  finished INTEGER NOT NULL DEFAULT 0,
  restart_count INTEGER NOT NULL DEFAULT 0,
  error TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS volumes (
  name TEXT PRIMARY KEY,
  created INTEGER NOT NULL,
  labels TEXT NOT NULL DEFAULT '{}',
  options TEXT NOT NULL DEFAULT '{}',
  anonymous INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS volume_users (
  volume TEXT NOT NULL REFERENCES volumes(name),
  container TEXT NOT NULL,
  PRIMARY KEY (volume, container)
);
CREATE INDEX IF NOT EXISTS volume_users_container ON volume_users(container);
)sql";

constexpr const char* kColumns =
    "id, name, image, image_name, created, config, state, pid, monitor_pid, monitor_start, exit_code, started, "
    "finished, restart_count, error";

int64_t now_ns() {
  struct timespec ts;
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

// A JSON string (util/log.h's escaping: the text is UTF-8 already, image
// references, container names and ids, numbers).
void append_json_string(std::string& out, std::string_view s) {
  out += '"';
  log::json_escape(out, s);
  out += '"';
}

// One line of Docker's event JSON (`berth events`), its keys in the order
// nlohmann's dump gave them (sorted), written directly: four of these on
// every `run --rm` were ~400 allocations as a JSON tree.
std::string event_line(const Container& c, std::string_view action,
                       const std::vector<std::pair<std::string, std::string>>& attrs) {
  int64_t t = now_ns();
  std::map<std::string_view, std::string_view> a = {{"image", c.image_name}, {"name", c.name}};
  for (auto& [k, v] : attrs) a[k] = v;
  std::string out;
  out.reserve(320);
  out += "{\"Action\":";
  append_json_string(out, action);
  out += ",\"Actor\":{\"Attributes\":{";
  bool first = true;
  for (auto& [k, v] : a) {
    if (!first) out += ',';
    first = false;
    append_json_string(out, k);
    out += ':';
    append_json_string(out, v);
  }
  out += "},\"ID\":";
  append_json_string(out, c.id);
  out += "},\"Type\":\"container\",\"from\":";
  append_json_string(out, c.image_name);
  out += ",\"id\":";
  append_json_string(out, c.id);
  out += ",\"scope\":\"local\",\"status\":";
  append_json_string(out, action);
  out += ",\"time\":" + std::to_string(t / 1000000000) + ",\"timeNano\":" + std::to_string(t) + "}\n";
  return out;
}

// j[key] if it is an object, else an empty one: read in place, where
// json::value() would copy the whole member (HostConfig's dozens of keys,
// on every run's create, start and cleanup).
const json& member(const json& j, const char* key) {
  static const json empty = json::object();
  if (!j.is_object()) return empty;
  auto it = j.find(key);
  return it != j.end() && it->is_object() ? *it : empty;
}

std::string random_hex(size_t bytes) {
  unsigned char b[64];
  (void)::getrandom(b, bytes, 0);
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < bytes; ++i) s += hex[b[i] >> 4], s += hex[b[i] & 15];
  return s;
}

bool valid_name(std::string_view n) {
  if (n.empty() || !std::isalnum(static_cast<unsigned char>(n[0]))) return false;
  for (char c : n)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '.' && c != '-') return false;
  return true;
}

// An exclusive flock on the container's directory: one command changes a
// container at a time (start vs rm vs the monitor's cleanup).
class DirLock {
 public:
  static Result<DirLock> take(const std::string& dir) {
    DirLock l;
    l.fd_.reset(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!l.fd_) return sys_error("open " + dir);
    while (::flock(l.fd_.get(), LOCK_EX) < 0)
      if (errno != EINTR) return sys_error("lock " + dir);
    return l;
  }

 private:
  UniqueFd fd_;
};

Container from_row(const Row& r) {
  Container c;
  c.id = r.text(0);
  c.name = r.text(1);
  c.image_id = r.text(2);
  c.image_name = r.text(3);
  c.created = r.integer(4);
  c.config = r.text(5);
  c.state = r.text(6);
  c.pid = static_cast<pid_t>(r.integer(7));
  c.monitor_pid = static_cast<pid_t>(r.integer(8));
  c.monitor_start = static_cast<uint64_t>(r.integer(9));
  c.exit_code = static_cast<int>(r.integer(10));
  c.started = r.integer(11);
  c.finished = r.integer(12);
  c.restart_count = static_cast<int>(r.integer(13));
  c.error = r.text(14);
  return c;
}

bool process_alive(pid_t pid, uint64_t start) {
  return pid > 0 && start != 0 && runtime::process_start_time(pid) == start;
}

// The exit file the monitor writes: "<code> <unix ns>".
bool read_exit(const std::string& dir, int* code, int64_t* when) {
  auto s = read_file(dir + "/exit");
  if (!s) return false;
  long long c = 0, w = 0;
  if (std::sscanf(s->c_str(), "%lld %lld", &c, &w) != 2) return false;
  *code = static_cast<int>(c);
  *when = w;
  return true;
}

std::string hosts_file(const std::string& hostname) {
  return "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n"
         "ff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n127.0.1.1\t" +
         hostname + "\n";
}

// The host's resolv.conf without loopback servers (unreachable from a
// network namespace of its own), as Docker copies it.
std::string resolv_conf() {
  std::string out;
  auto s = read_file("/etc/resolv.conf");
  if (!s) return out;
  for (auto& line : split(*s, '\n')) {
    if (line.starts_with("nameserver") &&
        (line.find("127.") != std::string::npos || line.find("::1") != std::string::npos))
      continue;
    out += line + "\n";
  }
  while (out.ends_with("\n\n")) out.pop_back();
  return out;
}

// --log-opt max-size: "10m", "1g", "512k", "1024" (bytes), as Docker's units.
Result<int64_t> log_size(const std::string& v) {
  char* end = nullptr;
  double n = std::strtod(v.c_str(), &end);
  std::string unit = end ? end : "";
  for (auto& ch : unit) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  if (unit.size() == 2 && unit[1] == 'b') unit.pop_back();
  double mult = unit.empty() || unit == "b" ? 1 : unit == "k" ? 1e3 : unit == "m" ? 1e6 : unit == "g" ? 1e9 : -1;
  if (v.empty() || end == v.c_str() || mult < 0 || n <= 0)
    return fail("--log-opt max-size=" + v + ": expected a size such as 10m");
  return static_cast<int64_t>(n * mult);
}

// Tests kill a command at a chosen point (BERTH_FAILPOINT=name): the crash
// that repair() must clean up after, made certain rather than hoped for.
// BERTH_FAILPOINT=NAME kills the command there; NAME:stop stops it (SIGSTOP)
// for a test to act meanwhile.
void failpoint(const char* name) {
  const char* want = std::getenv("BERTH_FAILPOINT");
  if (!want) return;
  std::string_view w = want;
  if (w == name) ::raise(SIGKILL);
  if (w.starts_with(name) && w.substr(std::strlen(name)) == ":stop") ::raise(SIGSTOP);
}

}  // namespace

std::string random_name() {
  static const char* const adj[] = {"admiring", "brave",   "clever",  "dazzling", "eager",   "festive",
                                    "gallant",  "happy",   "jolly",   "keen",     "lucid",   "modest",
                                    "nifty",    "optimistic", "peaceful", "quirky", "relaxed", "serene",
                                    "trusting", "upbeat",  "vibrant", "wizardly", "youthful", "zealous"};
  static const char* const who[] = {"babbage", "curie",  "darwin",   "einstein", "feynman", "galois",
                                    "hopper",  "johnson", "kepler",  "lovelace", "meitner", "noether",
                                    "pasteur", "ritchie", "shannon", "thompson", "turing",  "wozniak",
                                    "yalow",   "lamarr",  "knuth",   "dijkstra", "hamilton", "torvalds"};
  unsigned char r[2];
  (void)::getrandom(r, 2, 0);
  return std::string(adj[r[0] % std::size(adj)]) + "_" + who[r[1] % std::size(who)];
}

Engine::~Engine() = default;

Result<std::unique_ptr<Engine>> Engine::open(image::ImageStore& store, Options o) {
  std::unique_ptr<Engine> e(new Engine());
  e->store_ = &store;
  e->db_ = &store.db();
  e->opt_ = std::move(o);
  TRY(e->db_->ensure_schema("engine", kSchema, kSchemaVersion));
  TRY(mkdir_p(e->opt_.root + "/containers", 0700));
  TRY_CTX(e->repair(), "repair containers");
  return e;
}

// A create holds an flocked marker, containers/.creating-<id>, from before
// its directory exists until its row is in: a marker whose lock is free was
// left by a create that died (kill -9), and what it made without a row (the
// directory, the rootfs mount, the image's user, its volumes) goes.
Result<> Engine::repair() {
  std::string dir = opt_.root + "/containers";
  UniqueFd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!d) return sys_error("open " + dir);
  DIR* list = ::fdopendir(::dup(d.get()));
  if (!list) return sys_error("read " + dir);
  std::vector<std::string> markers;
  std::set<std::string, std::less<>> being_removed;  // containers whose files went to the trash in the last minute
  while (struct dirent* e = ::readdir(list)) {
    std::string_view name = e->d_name;
    if (name.starts_with(".creating-")) {
      markers.emplace_back(name);
      continue;
    }
    // A removed container's files that no child removed (a crash): given a
    // minute, so that a remover at work is not raced.
    int64_t age = trash_age(name);
    if (age > 60) (void)remove_trash(dir + "/" + std::string(name));
    else if (age >= 0) being_removed.emplace(name.substr(7, name.find('.', 7) - 7));
  }
  ::closedir(list);
  // A spare whose maker died as it made it (engine/spare.h), given the same minute.
  if (DIR* n = ::opendir((dir + "/" + kSpareNursery).c_str())) {
    while (struct dirent* e = ::readdir(n))
      if (trash_age(e->d_name) > 60) (void)remove_trash(dir + "/" + kSpareNursery + "/" + e->d_name);
    ::closedir(n);
  }
  // Runtime state without a row: an --rm container whose monitor was killed
  // in the moment between the row's removal and its own (Engine::cleanup's
  // runtime_left).
  // Only this store's (a runroot may be shared by stores: its bundle is one
  // of our container directories, or its trash), and never a running one.
  // One whose container's files went to the trash in the last minute, or
  // whose lock is held, is being removed now (by a `run --rm`'s monitor
  // child: the next command back to back found it there in half the runs,
  // and removed it itself or waited for its lock): left to its remover, and
  // no query made for it.
  std::vector<std::string> states = runtime::list_ids(runtime_root());
  std::erase_if(states, [&](const std::string& id) {
    return being_removed.count(id) || runtime::Lock::held_elsewhere(runtime::state_dir(runtime_root(), id));
  });
  if (!states.empty()) {
    std::set<std::string> rows;
    TRY(db_->run("SELECT id FROM containers", {}, [&](const image::Row& r) { rows.insert(r.text(0)); }));
    runtime::Globals g;
    g.root = runtime_root();
    for (auto& id : states) {
      if (rows.count(id)) continue;
      auto st = runtime::load_state(g.root, id);
      if (!st) continue;
      std::string ours = dir + "/" + id, trash = dir + "/.trash-" + id + ".";
      if (st->bundle != ours && !st->bundle.starts_with(trash)) continue;
      (void)runtime::remove(g, id, false);
    }
  }
  for (auto& m : markers) {
    UniqueFd fd(::openat(d.get(), m.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd || ::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) continue;  // its create is running
    std::string id = m.substr(10);
    struct stat st;
    // The container's directory under its creating name (an older berth made
    // a marker file beside <id>).
    bool is_dir = ::fstat(fd.get(), &st) == 0 && S_ISDIR(st.st_mode);
    bool has_row = TRY(db_->count("SELECT count(*) FROM containers WHERE id = ?1", id)) > 0;
    if (has_row && is_dir) {
      (void)::renameat(d.get(), m.c_str(), d.get(), id.c_str());  // its maker died after the row
      continue;
    }
    if (!has_row) {
      (void)store_->remove_rootfs(id, dir + "/" + (is_dir ? m : id));
      (void)Volumes(*db_, opt_.root).release(id, true);
    }
    if (!is_dir) ::unlinkat(d.get(), m.c_str(), 0);
  }
  return {};
}

std::string Engine::container_dir(std::string_view id) const { return opt_.root + "/containers/" + std::string(id); }

std::string Engine::log_path(const Container& c) const { return c.dir + "/" + c.id + "-json.log"; }

Result<Container> Engine::load(std::string_view id) {
  std::optional<Container> out;
  TRY(db_->run(std::string("SELECT ") + kColumns + " FROM containers WHERE id = ?1", {std::string(id)},
               [&](const Row& r) { out = from_row(r); }));
  if (!out) return fail("no such container: " + std::string(id));
  out->dir = container_dir(out->id);
  return *out;
}

Result<Container> Engine::find(std::string_view key) {
  if (key.starts_with("/")) key.remove_prefix(1);
  if (key.empty()) return fail("no such container: \"\"");
  std::vector<Container> hits;
  TRY(db_->run(std::string("SELECT ") + kColumns + " FROM containers WHERE name = ?1 OR id = ?1",
               {std::string(key)}, [&](const Row& r) { hits.push_back(from_row(r)); }));
  if (hits.empty()) {
    bool hex = key.find_first_not_of("0123456789abcdef") == std::string_view::npos;
    if (hex)
      TRY(db_->run(std::string("SELECT ") + kColumns + " FROM containers WHERE substr(id, 1, ?2) = ?1",
                   {std::string(key), static_cast<int64_t>(key.size())},
                   [&](const Row& r) { hits.push_back(from_row(r)); }));
    if (hits.size() > 1) return fail("multiple containers found with provided prefix: " + std::string(key));
  }
  if (hits.empty()) return fail("no such container: " + std::string(key));
  Container c = std::move(hits.front());
  c.dir = container_dir(c.id);
  TRY(reconcile(c));
  return c;
}

Result<std::vector<Container>> Engine::list() {
  std::vector<Container> out;
  TRY(db_->run(std::string("SELECT ") + kColumns + " FROM containers ORDER BY created DESC", {},
               [&](const Row& r) { out.push_back(from_row(r)); }));
  for (auto& c : out) {
    c.dir = container_dir(c.id);
    TRY(reconcile(c));
  }
  return out;
}

// The row says running; is its init? A container whose init is gone is
// exited, with what the monitor recorded (255: no monitor saw it end, as
// after a reboot or a killed monitor). The row itself is fixed by cleanup.
Result<> Engine::reconcile(Container& c) {
  // Restarting: its cleanup waits out the back-off; killed, it restarts nothing.
  if (c.state == "restarting" && !process_alive(c.monitor_pid, c.monitor_start)) c.state = "exited";
  // A start whose CLI was killed before it recorded "running": the init tells.
  if (c.state == "created")
    if (auto st = runtime::load_state(runtime_root(), c.id); st) c.state = "running";
  if (c.state != "running" && c.state != "paused") return {};
  auto st = runtime::load_state(runtime_root(), c.id);
  if (st) {
    auto s = runtime::current_status(runtime_root(), *st);
    // The init's pid, also where the CLI was killed before recording it.
    if (s == runtime::Status::running || s == runtime::Status::paused) {
      c.state = s == runtime::Status::running ? "running" : "paused";
      if (c.pid <= 0) c.pid = st->pid;
      return {};
    }
  }
  // The monitor is about to record the exit: that is still "running" to Docker
  // until the cleanup has run; show the exit already.
  int code = 255;
  int64_t when = now_ns();
  if (read_exit(c.dir, &code, &when) || !process_alive(c.monitor_pid, c.monitor_start)) {
    c.state = "exited";
    c.exit_code = code;
    c.finished = when;
  }
  return {};
}

constexpr std::string_view kSaveState =
    "UPDATE containers SET state = ?2, pid = ?3, monitor_pid = ?4, monitor_start = ?5, exit_code = ?6, "
    "started = ?7, finished = ?8, restart_count = ?9, error = ?10 WHERE id = ?1";
constexpr std::string_view kDeleteContainer = "DELETE FROM containers WHERE id = ?1";

Result<> Engine::save_state(const Container& c) {
  return db_->exec(
      kSaveState, c.id, c.state, c.pid, c.monitor_pid, static_cast<int64_t>(c.monitor_start), c.exit_code, c.started, c.finished,
      c.restart_count, c.error);
}

void Engine::prepare_for_exit() {
  db_->prepare(kSaveState);
  db_->prepare(kDeleteContainer);
  store_->prepare_remove_rootfs();
  Volumes(*db_, opt_.root).prepare_release();
}

std::string new_container_id() { return random_hex(32); }

Result<Container> Engine::create(std::string_view name_in, std::string_view body_text,
                                 std::vector<std::string>* warnings, std::string id,
                                 const image::ImageRecord* resolved, EarlyMonitor* early) {
  (void)warnings;
  json body = json::parse(body_text, nullptr, false);
  if (body.is_discarded() || !body.is_object()) return fail("create: the request is not a JSON object");
  std::string image_name = body.value("Image", "");
  if (image_name.empty()) return fail("create: no image given");
  image::ImageRecord img = resolved ? *resolved : TRY(store_->resolve(image_name));
  std::string image_config = TRY(store_->read_config(img));
  std::vector<std::string> cmd = TRY(container_command(body_text, image_config));
  // Log options are checked now, not at the first start.
  const json& logcfg = member(member(member(body, "HostConfig"), "LogConfig"), "Config");
  for (auto& [k, v] : logcfg.items()) {
    std::string text = v.is_string() ? v.get<std::string>() : v.dump();
    bool count = !text.empty() && text.find_first_not_of("0123456789") == std::string::npos && text != "0";
    if (k == "max-size" && v.is_string()) TRY(log_size(text));
    else if (k == "max-file" && v.is_string() && count) continue;
    else return fail("--log-opt " + k + "=" + text + ": unknown or bad log option (max-size, max-file)");
  }

  Container c;
  c.id = id.size() == 64 && id.find_first_not_of("0123456789abcdef") == std::string::npos ? std::move(id)
                                                                                          : random_hex(32);
  c.name = name_in.empty() ? random_name() : std::string(name_in.starts_with("/") ? name_in.substr(1) : name_in);
  if (!valid_name(c.name))
    return fail("invalid container name \"" + c.name + "\": only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed");
  // A chosen name that is taken is an error, found before anything is made;
  // a generated one rarely is, and is drawn again when the row goes in.
  if (!name_in.empty() && TRY(db_->count("SELECT count(*) FROM containers WHERE name = ?1", c.name)) > 0)
    return fail("the container name \"/" + c.name + "\" is already in use");
  c.image_id = img.id.str();
  c.image_name = image_name;
  c.created = now_ns();
  c.state = "created";
  c.dir = container_dir(c.id);
  // The image's health check goes into the container's config (as Docker's
  // inspect shows it), field by field under what --health-* gave.
  json image_cfg = json::parse(image_config, nullptr, false);
  if (image_cfg.is_object() && image_cfg.contains("config") && image_cfg["config"].is_object()) {
    json image_hc = image_cfg["config"].value("Healthcheck", json::object());
    if (image_hc.is_object() && !image_hc.empty()) {
      json hc = body.value("Healthcheck", json::object());
      for (auto& [k, v] : image_hc.items())
        if (!hc.contains(k)) hc[k] = v;
      body["Healthcheck"] = hc;
    }
  }
  // The test's words become the monitor's arguments (C strings): a NUL in one
  // (a hostile image's HEALTHCHECK) would cut it short or split it in two.
  if (body.contains("Healthcheck") && body["Healthcheck"].is_object())
    for (auto& t : body["Healthcheck"].value("Test", json::array()))
      if (t.is_string() && t.get<std::string>().find('\0') != std::string::npos)
        return fail("image " + image_name + ": its health check holds a NUL byte");
  c.config = body.dump();

  // Nothing is left when a step fails.
  bool ok = false;
  bool rootfs_made = false;
  Volumes volumes(*db_, opt_.root);
  // The container's directory is made as containers/.creating-<id>, flocked,
  // and renamed to <id> once its row is in: repair() finds one whose maker
  // died (kill -9) and removes it, or finishes the rename if the row made it.
  // (A marker file beside the directory was one more new file per create.)
  // It is made under a name repair() takes for trash (removed once a minute
  // old) and renamed to .creating-<id> once locked: a .creating-<id> that is
  // not locked is always one whose maker died.
  std::string work = opt_.root + "/containers/.creating-" + c.id;
  std::string fresh = opt_.root + "/containers/.trash-new-" + c.id + "." + std::to_string(::time(nullptr)) + "." +
                      std::to_string(::getpid());
  // A spare (engine/spare.h) when a monitor made or recycled one: its
  // directories are there, empty, and its files (written over below).
  if (!claim_spare(opt_.root + "/containers", fresh) && ::mkdir(fresh.c_str(), 0700) < 0)
    return sys_error("mkdir " + fresh);
  UniqueFd work_fd(::open(fresh.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!work_fd || ::flock(work_fd.get(), LOCK_EX) != 0 || ::rename(fresh.c_str(), work.c_str()) != 0) {
    Error e{errno, "make " + work};
    (void)remove_tree(fresh);
    return std::unexpected(std::move(e));
  }
  struct Undo {
    std::function<void()> f;
    ~Undo() { f(); }
  } undo{[&] {
    if (ok) return;
    if (rootfs_made) (void)store_->remove_rootfs(c.id, work);
    else (void)remove_tree(work);
    (void)volumes.release(c.id, true);
  }};
  std::string hostname = body.value("Hostname", "");
  if (hostname.empty()) hostname = c.id.substr(0, 12);
  // A directory no one else sees yet: written in place, not through a rename.
  TRY(write_container_file(work + "/hostname", hostname + "\n", 0644));
  TRY(write_container_file(work + "/hosts", hosts_file(hostname), 0644));
  TRY(write_container_file(work + "/resolv.conf", resolv_conf(), 0644));

  SpecInput in;
  in.id = c.id;
  // (body has the image's health check merged in since: make_spec reads none.)
  in.body = &body;
  in.image = &image_cfg;
  in.dir = c.dir;
  in.staging = work;
  in.init_path = opt_.init_exe;
  in.systemd_cgroup = opt_.systemd_cgroup;
  if (in.systemd_cgroup && !cgroup::systemd_running())
    return fail("--cgroup-manager systemd: systemd is not running on this host (no /run/systemd/system)");
  // --network/--pid/--ipc/--uts container:NAME: that container's init, which must run.
  const json& host_cfg = member(body, "HostConfig");
  for (auto [key, type] : {std::pair{"NetworkMode", "network"}, {"PidMode", "pid"}, {"IpcMode", "ipc"},
                           {"UTSMode", "uts"}}) {
    std::string mode = host_cfg.value(key, "");
    if (!mode.starts_with("container:")) continue;
    auto other = find(mode.substr(10));
    if (!other) return std::unexpected(std::move(other).error().context(std::string("--") + type));
    if (other->state != "running" && other->state != "paused")
      return fail(std::string("--") + type + " " + mode + ": that container is not running");
    in.joined.emplace_back(type, other->pid);
  }
  // The image's /etc/passwd and /etc/group as its first container read them
  // (a new overlay's first lookups are slow: ~0.3 ms of every create here).
  std::optional<std::pair<std::string, std::string>> etc = store_->etc_files(img);
  // The spec made before the rootfs is mounted when nothing in it needs the
  // rootfs (the image's passwd kept, no volume to fill from the image), and
  // sent to the early monitor at once: it makes the start's first steps
  // (runtime::prepare_launch) while this goes on, and is done by the time
  // the command line comes (it was not, with the spec sent after the mount).
  if (etc) in.etc_passwd = std::move(etc->first), in.etc_group = std::move(etc->second);
  std::string spec;
  std::string workdir;
  bool spec_first = etc && early && early->id_ == c.id && !wants_volumes(body, image_cfg);
  if (spec_first) {
    in.workdir_to_make = &workdir;
    spec = TRY(make_spec(in));
    (void)early->send_spec(spec);
  }
  // A --rm container's upper dir goes with its first exit: volatile.
  bool transient = member(body, "HostConfig").value("AutoRemove", false);
  std::string rootfs = TRY(store_->create_rootfs(c.id, img, work, transient));
  rootfs_made = true;
  failpoint("create-after-rootfs");
  UniqueFd rootfd(::open(rootfs.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!rootfd) return sys_error("open " + rootfs);
  if (spec_first) {
    if (!workdir.empty()) TRY_CTX(mkdir_in_root(rootfd.get(), workdir, 0755), "--workdir " + workdir);
  } else {
    in.rootfs_fd = rootfd.get();
    if (!etc) {
      in.etc_passwd = TRY_CTX(read_etc(rootfd.get(), "/etc/passwd"), "--user");
      in.etc_group = TRY_CTX(read_etc(rootfd.get(), "/etc/group"), "--user");
      store_->save_etc_files(img, in.etc_passwd, in.etc_group);
    }
    in.mounts = TRY(volumes.prepare(c.id, work, body_text, image_config, rootfd.get(), [this](const std::string& n) -> Result<std::string> {
      return TRY(find(n)).dir;
    }));
    spec = TRY(make_spec(in));
    if (early && early->id_ == c.id) (void)early->send_spec(spec);
  }
  TRY(write_container_file(work + "/config.json", spec, 0600));
  for (int tries = 0;; ++tries) {
    auto inserted = db_->exec(std::string("INSERT INTO containers (") + kColumns +
                                  ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, 0, 0, 0, 0, 0, 0, '')",
                              c.id, c.name, c.image_id, c.image_name, c.created, c.config, c.state);
    if (inserted) break;
    // Another berth took the name since we checked: a generated one is drawn again.
    if (inserted.error().msg.find("UNIQUE") == std::string::npos) return std::unexpected(std::move(inserted).error());
    if (!name_in.empty() || tries > 20) return fail("the container name \"/" + c.name + "\" is already in use");
    c.name = random_name() + std::to_string(tries);
  }
  failpoint("create-after-row");
  if (::rename(work.c_str(), c.dir.c_str()) < 0) {
    Error e{errno, "rename " + work + " to " + c.dir};
    (void)db_->exec(kDeleteContainer, c.id);
    return std::unexpected(std::move(e));
  }
  ok = true;
  (void)record_event(c, "create");
  return c;
}

// posix_spawn's attributes for a monitor: a session of its own, signals
// unblocked and at their defaults, /dev/null on 0-2, and fds 3 (the sync
// socket) and 4 (the attached client) only.
struct MonitorSpawnAttrs {
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  MonitorSpawnAttrs(int sync_fd, int attach_fd) {
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    for (int fd = 0; fd < 3; ++fd) posix_spawn_file_actions_addopen(&fa, fd, "/dev/null", O_RDWR, 0);
    posix_spawn_file_actions_adddup2(&fa, sync_fd, 3);
    if (attach_fd >= 0) posix_spawn_file_actions_adddup2(&fa, attach_fd, 4);
  }
  ~MonitorSpawnAttrs() {
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
  }
  MonitorSpawnAttrs(const MonitorSpawnAttrs&) = delete;
  MonitorSpawnAttrs& operator=(const MonitorSpawnAttrs&) = delete;
};

struct Argv {
  std::vector<std::string> args;
  std::vector<char*> ptrs;
  explicit Argv(std::vector<std::string> a) : args(std::move(a)) {
    for (auto& s : args) ptrs.push_back(s.data());
    ptrs.push_back(nullptr);
  }
};

// posix_spawn (vfork-like, fast) of the monitor.
static Result<pid_t> spawn_monitor(const std::string& exe, std::vector<std::string> args, int sync_fd,
                                   int attach_fd) {
  Argv argv(std::move(args));
  MonitorSpawnAttrs sa(sync_fd, attach_fd);
  pid_t pid = 0;
  int rc = ::posix_spawn(&pid, exe.c_str(), &sa.fa, &sa.attr, argv.ptrs.data(), environ);
  if (rc != 0) return sys_error(rc, "start monitor " + exe);
  return pid;
}

// The early monitor's spawn, on a thread of its own. Everything it needs is
// made here before the thread starts (it allocates nothing), and it closes
// the monitor's ends of the sockets once the monitor has them.
struct EarlyMonitor::Spawner {
  Argv argv;
  UniqueFd theirs, attach;
  MonitorSpawnAttrs attrs;
  pthread_t thread{};
  bool running = false;
  // Set: the CPUs the thread goes to once the monitor is born (spawned()).
  std::optional<cpu_set_t> home;
  pid_t pid = -1;  // -1 if the spawn failed (start() then spawns one of its own)
  Spawner(std::vector<std::string> a, UniqueFd sync, UniqueFd att)
      : argv(std::move(a)), theirs(std::move(sync)), attach(std::move(att)), attrs(theirs.get(), attach.get()) {}
  static void* run(void* p) {
    auto* s = static_cast<Spawner*>(p);
    // (Its start time is read once it has answered, in start(): read now,
    // /proc/PID/stat waited here for the monitor's exec to finish, ~0.6 ms
    // in most runs, and the CLI then for this thread.)
    if (::posix_spawn(&s->pid, s->argv.ptrs[0], &s->attrs.fa, &s->attrs.attr, s->argv.ptrs.data(), environ) != 0)
      s->pid = -1;
    ::close(s->theirs.release());
    if (s->attach) ::close(s->attach.release());
    return nullptr;
  }
};

EarlyMonitor::EarlyMonitor() = default;

Result<EarlyMonitor> EarlyMonitor::spawn(const std::string& monitor_exe, const std::string& id,
                                         const std::string& dir, UniqueFd* attach_ours) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) return sys_error("socketpair");
  EarlyMonitor m;
  m.sync_.reset(sv[0]);
  UniqueFd theirs(sv[1]);
  // Its starting client's socket, made whether or not the run turns out to
  // be attached (configure() says). Theirs above 4, which posix_spawn's
  // dup2s to 3 and 4 would otherwise overwrite.
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) return sys_error("socketpair");
  UniqueFd attach_mine(sv[0]), attach_low(sv[1]);
  UniqueFd attach(::fcntl(attach_low.get(), F_DUPFD_CLOEXEC, 5));
  if (!attach) return sys_error("dup attach socket");
  *attach_ours = std::move(attach_mine);
  // The rest comes in the configure() frame (monitor.h); that of start()
  // says --dir again, and that one counts.
  std::vector<std::string> args = {monitor_exe, "--args-on-sync", "--early-on-sync", "--id",
                                   id,          "--dir",          dir,               "--sync-fd", "3"};
  // Spawned from a thread on a CPU other than ours (util/thread.h), with a
  // small stack (posix_spawn runs the child on one of its own): the monitor
  // is born there too, and stays there until it has its command line, when
  // it takes all of ours (--cpus-after). A socket's writer wakes its reader
  // on its own CPU when it can (a "sync" wake-up, made for a writer about to
  // wait): the spec we send while we go on with the create would otherwise
  // be read only when we next sleep, with the other CPU idle.
  cpu_set_t ours, away;
  bool steer = cpus_elsewhere(&ours, &away);
  if (steer) args.insert(args.end(), {"--cpus-after", cpu_list(ours)});
  m.id_ = id;
  m.spawner_ = std::make_unique<Spawner>(std::move(args), std::move(theirs), std::move(attach));
  Spawner& sp = *m.spawner_;
  if (steer) sp.home = ours;
  if (start_thread_on(&sp.thread, &Spawner::run, &sp, 64 << 10, steer ? &away : nullptr)) {
    sp.running = true;
  } else {
    // No thread: spawned here, as before.
    Spawner::run(&sp);
  }
  return m;
}

bool EarlyMonitor::configure(bool attached, const std::string& netns, const std::string& cgroup,
                             const std::string& runtime_root) {
  attached_ = attached;
  std::string body;
  auto add = [&body](std::string_view a) {
    body.append(a);
    body.push_back('\0');
  };
  if (attached) add("--attach-fd"), add("4");
  if (!netns.empty()) add("--netns-early"), add("--netns-spares"), add(netns);
  if (!cgroup.empty()) add("--cgroup-early"), add(cgroup);
  // (The args frame says it again, the same.)
  if (!runtime_root.empty()) add("--runtime-root"), add(runtime_root);
  // Buffered in the socket if the monitor is not running yet.
  return send_frame("erly", body);
}

bool EarlyMonitor::spawned() {
  if (spawner_) {
    // Woken from posix_spawn (a vfork) as the monitor execs, the thread
    // waits on the monitor's CPU behind it (busy making the network
    // namespace and the cgroup), where it was pinned: allowed every CPU of
    // ours again, the one we leave idle as we wait here takes it. (The
    // monitor is long born: the join comes after the store and the create.)
    if (spawner_->running && spawner_->home)
      (void)::pthread_setaffinity_np(spawner_->thread, sizeof *spawner_->home, &*spawner_->home);
    if (spawner_->running) ::pthread_join(spawner_->thread, nullptr);
    pid_ = spawner_->pid;
    spawner_.reset();
  }
  return pid_ > 0;
}

EarlyMonitor::EarlyMonitor(EarlyMonitor&& o) noexcept
    : pid_(std::exchange(o.pid_, -1)),
      id_(std::move(o.id_)),
      attached_(o.attached_),
      sync_(std::move(o.sync_)),
      spawner_(std::move(o.spawner_)) {}

void EarlyMonitor::reap() {
  if (!spawned()) return;
  sync_.reset();
  int ws;
  while (::waitpid(pid_, &ws, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
}

bool EarlyMonitor::send_frame(const char* kind, const std::string& body) {
  char head[17];
  std::snprintf(head, sizeof head, "%.4s %010zu\n", kind, body.size());
  std::string msg = head + body;
  for (size_t off = 0; off < msg.size();) {
    ssize_t n = ::send(sync_.get(), msg.data() + off, msg.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

bool EarlyMonitor::send_spec(const std::string& spec) {
  if (!spawned() || spec.empty() || spec.size() > kEarlyArgsMax) return false;
  return send_frame("spec", spec);
}

// Never told what to run: the end of its socket ends it at once.
EarlyMonitor::~EarlyMonitor() { reap(); }

Result<Container> Engine::start(const std::string& key, int attach_fd, bool fresh, EarlyMonitor* early) {
  // With `early`, the caller's attach socket (if any) went to it: attach_fd is -1.
  if (early && !early->spawned()) early = nullptr;
  if (fresh) failpoint("start-fresh");
  // Fresh: `key` is the id this process just made, and its directory follows.
  std::string id = key;
  if (!fresh) {
    Container last = TRY(find(key));
    id = last.id;
    // The last run's monitor writes its exit record after the exit frame a
    // foreground run took the exit from: gone first (unlocked, a moment at
    // most), or the record would land in this run's directory. Not when this
    // is that monitor, become the exit command, nor one that restarts it.
    if (last.state == "exited" && last.monitor_pid != ::getpid()) (void)wait_monitor(last, 2000);
  }
  DirLock lock = TRY(DirLock::take(container_dir(id)));
  Container c = TRY(load(id));
  TRY(reconcile(c));
  if (c.state == "running" || c.state == "paused") return c;  // Docker: starting a running container is a no-op
  // Started for another container (not ours to use): a monitor of our own.
  if (early && early->id_ != c.id) {
    if (early->attached_) return fail("start " + c.id.substr(0, 12) + ": its monitor was started for another container");
    early = nullptr;
  }
  // A fresh container that someone started or removed meanwhile is not fresh.
  if (fresh && (c.state != "created" || c.started != 0)) fresh = false;
  if (!fresh) {
    image::ImageRecord img = TRY(store_->resolve(c.image_id));
    TRY(store_->mount_rootfs(img, c.dir));
    // Volumes with a filesystem of their own (--opt) that a reboot unmounted.
    TRY(Volumes(*db_, opt_.root).mount_held(c.id));
    // What the last run left: its runtime state, its exit record.
    runtime::Globals g;
    g.root = runtime_root();
    (void)runtime::remove(g, c.id, true);
    ::unlink((c.dir + "/exit").c_str());
    ::unlink(stopped_marker(c).c_str());
    ::unlink((c.dir + "/health.json").c_str());
  }
  json body = json::parse(c.config, nullptr, false);
  const json& host = member(body, "HostConfig");

  // The monitor's command line after its id and fds (--sync-fd, --attach-fd).
  std::vector<std::string> args = {"--runtime-root", runtime_root(), "--dir", c.dir, "--log", log_path(c)};
  const json& logcfg = member(member(host, "LogConfig"), "Config");
  if (logcfg.contains("max-size") && logcfg["max-size"].is_string())
    args.insert(args.end(), {"--log-max-size", std::to_string(TRY(log_size(logcfg["max-size"].get<std::string>())))});
  if (logcfg.contains("max-file") && logcfg["max-file"].is_string()) {
    std::string n = logcfg["max-file"].get<std::string>();
    if (n.empty() || n.find_first_not_of("0123456789") != std::string::npos || std::stoll(n) < 1)
      return fail("--log-opt max-file=" + n + ": expected a positive number");
    args.insert(args.end(), {"--log-max-files", n});
  }
  // A --rm container's log goes with it: made only if it prints something.
  if (host.value("AutoRemove", false)) args.push_back("--log-lazy");
  if (body.value("OpenStdin", false)) args.push_back("--stdin");
  // The health check (the image's merged in at create), Docker's defaults for what is unset.
  json hc = body.value("Healthcheck", json::object());
  if (hc.contains("Test") && hc["Test"].is_array() && !hc["Test"].empty() && hc["Test"][0] != "NONE") {
    for (auto& t : hc["Test"])
      if (t.is_string()) args.insert(args.end(), {"--health-test", t.get<std::string>()});
    auto ms = [&](const char* key, int64_t def) {
      int64_t ns = hc.value(key, int64_t{0});
      return std::to_string(ns > 0 ? ns / 1000000 : def);
    };
    int retries = hc.value("Retries", 0);
    args.insert(args.end(), {"--health-interval-ms", ms("Interval", 30000), "--health-timeout-ms",
                             ms("Timeout", 30000), "--health-start-period-ms", ms("StartPeriod", 0),
                             "--health-retries", std::to_string(retries > 0 ? retries : 3)});
  }
  args.insert(args.end(), {"--", opt_.berth_exe, "--root", opt_.root, "--runroot", opt_.runroot, "container",
                           "cleanup", c.id});

  // An argument is a C string on an exec's command line and NUL-ended on an
  // early monitor's socket: one holding a NUL (a hostile image's health
  // check) would be cut short, or read as more arguments.
  for (auto& a : args)
    if (a.find('\0') != std::string::npos)
      return fail("start " + c.id.substr(0, 12) + ": a monitor argument holds a NUL byte (its health check?)");
  UniqueFd sync;
  pid_t mpid = 0;
  uint64_t mstart = 0;
  if (early) {
    // Each argument with its NUL.
    std::string body;
    for (auto& a : args) body.append(a).push_back('\0');
    if (body.size() > kEarlyArgsMax) return fail("start " + c.id.substr(0, 12) + ": the monitor's command line is too long");
    if (!early->send_frame("args", body)) {
      // It died (killed) before it was told what to run: reaped, and a
      // monitor of our own instead, unless it held the attach socket.
      early->reap();
      early->lost_ = true;
      if (early->attached_)
        return fail("start " + c.id.substr(0, 12) + ": its monitor exited before it was told what to run");
      early = nullptr;
    } else {
      mpid = std::exchange(early->pid_, -1);
      sync = std::move(early->sync_);
    }
  }
  if (!early) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) return sys_error("socketpair");
    sync.reset(sv[0]);
    UniqueFd theirs(sv[1]);
    std::vector<std::string> head = {opt_.monitor_exe, "--id", c.id, "--sync-fd", "3"};
    if (attach_fd >= 0) head.insert(head.end(), {"--attach-fd", "4"});
    args.insert(args.begin(), head.begin(), head.end());
    mpid = TRY(spawn_monitor(opt_.monitor_exe, std::move(args), theirs.get(), attach_fd));
    mstart = runtime::process_start_time(mpid);
  }

  // The monitor takes some ms to answer, and we have nothing else to do.
  prepare_for_exit();
  std::string line;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(sync.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    line.append(buf, static_cast<size_t>(n));
    if (line.find('\n') != std::string::npos) break;
  }
  if (auto nl = line.find('\n'); nl != std::string::npos) line.resize(nl);
  if (!line.starts_with("ok ")) {
    // "error <errno> <message>"
    int err_no = 0;
    std::string err = "the monitor exited before starting the container";
    if (line.starts_with("error ")) {
      err_no = std::atoi(line.c_str() + 6);
      auto sp = line.find(' ', 6);
      err = sp == std::string::npos ? "" : line.substr(sp + 1);
    }
    c.error = err;
    (void)save_state(c);
    // The monitor has exited (or will, now that we close the sync socket): reap it.
    sync.reset();
    int ws;
    ::waitpid(mpid, &ws, 0);
    return std::unexpected(Error{0, err + (err_no ? std::string(": ") + std::strerror(err_no) : "")});
  }
  c.pid = static_cast<pid_t>(std::atoi(line.c_str() + 3));
  if (mstart == 0) mstart = runtime::process_start_time(mpid);
  c.monitor_pid = mpid;
  c.monitor_start = mstart;
  c.state = "running";
  c.started = now_ns();
  c.finished = 0;
  c.exit_code = 0;
  c.error.clear();
  TRY(save_state(c));
  (void)record_event(c, "start");
  return c;
}

Result<> Engine::kill(const std::string& key, int sig) {
  Container c = TRY(find(key));
  if (c.state != "running" && c.state != "paused")
    return fail("cannot kill container " + key + ": container " + c.id.substr(0, 12) + " is not running");
  runtime::Globals g;
  g.root = runtime_root();
  // A signal that ends it is a stop by the user: no restart policy brings it back (Docker).
  if (sig == SIGKILL || sig == SIGTERM || sig == SIGINT || sig == SIGQUIT)
    (void)atomic_write_file(stopped_marker(c), "", 0600);
  TRY(runtime::kill(g, c.id, sig, false));
  return record_event(c, "kill", {{"signal", std::to_string(sig)}});
}

// Waits for the monitor (and the cleanup it became) to exit.
Result<> Engine::wait_monitor(const Container& c, int timeout_ms) {
  if (!process_alive(c.monitor_pid, c.monitor_start)) return {};
  UniqueFd fd(sys::pidfd_open(c.monitor_pid, 0));
  if (!fd || !process_alive(c.monitor_pid, c.monitor_start)) return {};
  struct pollfd p = {fd.get(), POLLIN, 0};
  int n = ::poll(&p, 1, timeout_ms);
  if (n == 0) return fail("container " + c.id.substr(0, 12) + ": its monitor did not finish");
  return {};
}

Result<> Engine::stop(const std::string& key, int timeout_s) {
  Container c = TRY(find(key));
  TRY(atomic_write_file(stopped_marker(c), "", 0600));
  if (c.state == "restarting") {
    // Its cleanup waits out the back-off and sees the marker.
    TRY(wait_monitor(c, 70000));
    return record_event(c, "stop");
  }
  if (c.state != "running" && c.state != "paused") return {};  // Docker: stopping a stopped container succeeds
  json body = json::parse(c.config, nullptr, false);
  int sig = SIGTERM;
  if (body.is_object() && body.contains("StopSignal") && body["StopSignal"].is_string())
    sig = TRY(runtime::parse_signal(body["StopSignal"].get<std::string>()));
  if (timeout_s < 0 && body.is_object() && body.contains("StopTimeout") && body["StopTimeout"].is_number_integer())
    timeout_s = body["StopTimeout"].get<int>();
  if (timeout_s < 0) timeout_s = 10;
  runtime::Globals g;
  g.root = runtime_root();
  if (c.state == "paused") (void)runtime::resume(g, c.id);
  auto st = runtime::load_state(g.root, c.id);
  if (st && runtime::init_alive(*st)) {
    (void)runtime::kill(g, c.id, sig, false);
    UniqueFd fd(sys::pidfd_open(st->pid, 0));
    struct pollfd p = {fd.get(), POLLIN, 0};
    if (fd && runtime::init_alive(*st) && ::poll(&p, 1, timeout_s * 1000) == 0)
      (void)runtime::kill(g, c.id, SIGKILL, true);
  }
  TRY(wait_monitor(c, 30000));
  return record_event(c, "stop");
}

Result<int> Engine::wait(const std::string& key) {
  Container c = TRY(find(key));
  for (;;) {
    if (c.state != "running" && c.state != "paused" && c.state != "restarting") return c.exit_code;
    if (process_alive(c.monitor_pid, c.monitor_start)) {
      TRY(wait_monitor(c, -1));
    } else {
      // No monitor (killed): wait for the init itself.
      auto st = runtime::load_state(runtime_root(), c.id);
      if (st && runtime::init_alive(*st)) {
        UniqueFd fd(sys::pidfd_open(st->pid, 0));
        struct pollfd p = {fd.get(), POLLIN, 0};
        if (fd && runtime::init_alive(*st)) ::poll(&p, 1, -1);
      }
    }
    auto again = find(c.id);
    if (!again) return c.exit_code;  // removed (--rm): its last exit code
    c = std::move(*again);
    if (c.state == "running" && !process_alive(c.monitor_pid, c.monitor_start)) {
      // The monitor is gone and the init still runs: poll.
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
}

Result<> Engine::remove_locked(Container& c, bool volumes, bool keep_runtime) {
  runtime::Globals g;
  g.root = runtime_root();
  if (!keep_runtime) {
    if (auto r = runtime::remove(g, c.id, true); !r && runtime::load_state(g.root, c.id))
      return std::unexpected(std::move(r).error());
    // A cgroup made early for a start that never came (its early monitor
    // killed): empty, and no runtime state names it.
    if (!opt_.systemd_cgroup && c.started == 0) cgroup::remove_if_empty(container_cgroup_path(c.id, false));
  }
  // Its row goes in the transaction that lets its image go (a commit fewer);
  // killed after its directory went to the trash, both rows stay, and the
  // next rm removes them.
  TRY(store_->remove_rootfs(c.id, c.dir, opt_.defer_removal, [&]() -> Result<> {
    failpoint("remove-after-rootfs");
    return db_->exec(kDeleteContainer, c.id);
  }));
  // Its anonymous volumes go with rm -v, and always with --rm (Docker).
  if (!volumes) {
    json body = json::parse(c.config, nullptr, false);
    volumes = member(body, "HostConfig").value("AutoRemove", false);
  }
  return Volumes(*db_, opt_.root).release(c.id, volumes);
}

Result<std::string> Engine::rootfs(const Container& c) {
  std::string path = c.dir + "/rootfs";
  if (is_mount_root(path)) return path;
  // Mounted as `start` mounts it, under the container's lock: a start or
  // rm meanwhile comes first, and then it is mounted or gone.
  DirLock lock = TRY(DirLock::take(container_dir(c.id)));
  Container now = TRY(load(c.id));
  image::ImageRecord img = TRY(store_->resolve(now.image_id));
  return store_->mount_rootfs(img, now.dir);
}

Result<> Engine::remove_runtime(const std::string& id) {
  runtime::Globals g;
  g.root = runtime_root();
  return runtime::remove(g, id, true);
}

Result<> Engine::remove(const std::string& key, bool force, bool volumes) {
  Container c = TRY(find(key));
  if (c.state == "restarting" && !force)
    return fail("cannot remove container \"/" + c.name +
                "\": container is restarting: stop the container before removing or force remove");
  if ((c.state == "running" || c.state == "paused") && !force)
    return fail("cannot remove container \"/" + c.name + "\": container is " + c.state +
                ": stop the container before removing or force remove");
  if (c.state == "running" || c.state == "paused") {
    runtime::Globals g;
    g.root = runtime_root();
    if (c.state == "paused") (void)runtime::resume(g, c.id);
    (void)runtime::kill(g, c.id, SIGKILL, true);
    (void)wait_monitor(c, 10000);
  }
  // A removal killed after the directory went to the trash left the row
  // alone: there is nothing to lock, and the row goes now.
  auto lock = DirLock::take(c.dir);
  if (!lock && lock.error().err != ENOENT) return std::unexpected(std::move(lock).error());
  auto again = load(c.id);
  if (!again) return {};  // its cleanup removed it (--rm)
  TRY(remove_locked(*again, volumes));
  return record_event(*again, "destroy");
}

Result<> Engine::pause(const std::string& key) {
  Container c = TRY(find(key));
  if (c.state != "running") return fail("container " + key + " is not running");
  runtime::Globals g;
  g.root = runtime_root();
  TRY(runtime::pause(g, c.id));
  c.state = "paused";
  TRY(save_state(c));
  return record_event(c, "pause");
}

Result<> Engine::unpause(const std::string& key) {
  Container c = TRY(find(key));
  if (c.state != "paused") return fail("container " + key + " is not paused");
  runtime::Globals g;
  g.root = runtime_root();
  TRY(runtime::resume(g, c.id));
  c.state = "running";
  TRY(save_state(c));
  return record_event(c, "unpause");
}

Result<> Engine::rename(const std::string& key, const std::string& new_name) {
  Container c = TRY(find(key));
  std::string n = new_name.starts_with("/") ? new_name.substr(1) : new_name;
  if (!valid_name(n)) return fail("invalid container name \"" + n + "\": only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed");
  if (TRY(db_->count("SELECT count(*) FROM containers WHERE name = ?1", n)) > 0)
    return fail("the container name \"/" + n + "\" is already in use");
  TRY(db_->exec("UPDATE containers SET name = ?2 WHERE id = ?1", c.id, n));
  std::string old = c.name;
  c.name = n;
  return record_event(c, "rename", {{"oldName", "/" + old}});
}

std::vector<pid_t> Engine::pids(const Container& c) {
  runtime::Globals g;
  g.root = runtime_root();
  auto p = runtime::pids(g, c.id);
  return p ? *p : std::vector<pid_t>{};
}

Result<ExecUser> Engine::resolve_user(const Container& c, const std::string& spec) {
  std::string rootfs = c.dir + "/rootfs";
  UniqueFd fd(::open(rootfs.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return sys_error("open " + rootfs);
  return TRY_CTX(engine::resolve_user(fd.get(), spec), "--user");
}

namespace {

// Docker's restart policy: whether a container that exited with `code` after
// `restart_count` restarts starts again. A container stopped by a user (stop,
// kill, rm -f) is not restarted.
bool should_restart(const json& host, int code, int restart_count, bool stopped_by_user) {
  if (stopped_by_user) return false;
  json rp = host.value("RestartPolicy", json::object());
  std::string name = rp.value("Name", "no");
  if (name == "always" || name == "unless-stopped") return true;
  if (name != "on-failure" || code == 0) return false;
  int max = rp.value("MaximumRetryCount", 0);
  return max <= 0 || restart_count < max;
}

}  // namespace

std::string Engine::stopped_marker(const Container& c) const { return c.dir + "/stopped-by-user"; }

Result<> Engine::cleanup(const std::string& id, bool* runtime_left, const Exit* exit) {
  // (A foreground run's cleanup only, which is given the exit: the exit
  // command, started with the run's environment, is not stopped there.)
  if (exit) failpoint("cleanup-by-client");
  int64_t delay_ms = 0;
  {
    auto locked = DirLock::take(container_dir(id));
    if (!locked && locked.error().err == ENOENT) return {};  // removed meanwhile
    DirLock lock = TRY(std::move(locked));
    auto loaded = load(id);
    if (!loaded) return {};
    Container c = std::move(*loaded);
    json body = json::parse(c.config, nullptr, false);
    const json& host = member(body, "HostConfig");
    bool auto_remove = host.value("AutoRemove", false);
    // An --rm container's id is never used again: its runtime state and
    // cgroup may go after its row.
    bool leave = runtime_left && auto_remove;
    runtime::Globals g;
    g.root = runtime_root();
    if (!leave) (void)runtime::remove(g, c.id, true);
    int code = 255;
    int64_t when = now_ns();
    if (exit) code = exit->code, when = exit->when;
    else read_exit(c.dir, &code, &when);
    c.state = "exited";
    c.exit_code = code;
    c.finished = when;
    c.pid = 0;
    std::string die = event_line(c, "die", {{"exitCode", std::to_string(code)}});
    if (auto_remove) {
      // Both events in one write once it is gone (the die alone if not).
      if (leave) *runtime_left = true;  // also where the removal fails half-way
      // (An --rm container's anonymous volumes go with it: `volumes` set.)
      if (auto r = remove_locked(c, true, leave); !r) {
        (void)append_events(die);
        return r;
      }
      return append_events(die + event_line(c, "destroy", {}));
    }
    TRY(append_events(die));
    if (!should_restart(host, code, c.restart_count, path_exists(stopped_marker(c)))) return save_state(c);
    // Docker's back-off: 100 ms, doubled after each run shorter than 10 s,
    // at most a minute; a run of 10 s or more starts it over.
    int64_t backoff = 100;
    if (auto s = read_file(c.dir + "/restart-backoff"); s) backoff = std::atoll(s->c_str());
    if (c.started && c.finished - c.started >= 10'000'000'000LL) backoff = 100;
    delay_ms = std::max<int64_t>(backoff, 100);
    TRY(atomic_write_file(c.dir + "/restart-backoff", std::to_string(std::min<int64_t>(delay_ms * 2, 60000)), 0600));
    c.state = "restarting";
    ++c.restart_count;
    TRY(save_state(c));
  }
  // Waits unlocked, so that stop and rm -f can cancel the restart meanwhile.
  for (int64_t waited = 0; waited < delay_ms; waited += 50) {
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min<int64_t>(50, delay_ms - waited)));
    auto c = load(id);
    if (!c || c->state != "restarting" || path_exists(stopped_marker(*c))) return {};
  }
  auto r = start(id);
  if (!r) {
    // Recorded as exited with the start's error; the policy ends here.
    auto c = load(id);
    if (c && c->state == "restarting") {
      c->state = "exited";
      c->error = r.error().str();
      (void)save_state(*c);
    }
    return std::unexpected(std::move(r).error());
  }
  return {};
}

std::string Engine::events_path() const { return opt_.root + "/events.log"; }

// One line of Docker's event JSON appended to events.log (O_APPEND: lines
// from several berth processes never interleave). At 1 MiB the log moves to
// events.log.1, so it keeps between 1 and 2 MiB of history.
Result<> Engine::record_event(const Container& c, std::string_view action,
                              const std::vector<std::pair<std::string, std::string>>& attrs) {
  return append_events(event_line(c, action, attrs));
}

Result<> Engine::append_events(const std::string& line) {
  std::string path = events_path();
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && st.st_size > (1 << 20)) ::rename(path.c_str(), (path + ".1").c_str());
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600));
  if (!fd) return sys_error("open " + path);
  return write_fd(fd.get(), line);
}

Result<UniqueFd> Engine::attach(const Container& c) {
  if (c.state != "running" && c.state != "paused")
    return fail("you cannot attach to a stopped container, start it first");
  // Through the directory's fd: the socket's absolute path may not fit a socket address.
  UniqueFd dir(::open(c.dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!dir) return sys_error("open " + c.dir);
  struct sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "/proc/self/fd/%d/attach.sock", dir.get());
  // The monitor binds attach.sock a quarter second after the start (a
  // container done by then never needs one): a client that comes earlier waits.
  for (int waited = 0;; waited += 10) {
    UniqueFd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!s) return sys_error("socket");
    if (::connect(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) return s;
    if ((errno != ENOENT && errno != ECONNREFUSED) || waited >= 2000)
      return sys_error("attach to container " + c.id.substr(0, 12) + ": its monitor does not answer");
    // Done within its first moments: there is nothing to attach to.
    if (!process_alive(c.monitor_pid, c.monitor_start))
      return fail("you cannot attach to a stopped container, start it first");
    ::usleep(10000);
  }
}

Result<std::string> Engine::inspect(const Container& c) {
  json body = json::parse(c.config, nullptr, false);
  if (!body.is_object()) body = json::object();
  json host = body.value("HostConfig", json::object());
  json cfg = body;
  cfg.erase("HostConfig");
  std::vector<std::string> cmd;
  if (auto img = store_->resolve(c.image_id); img)
    if (auto ic = store_->read_config(*img); ic)
      if (auto a = container_command(c.config, *ic); a) cmd = *a;
  auto t = [](int64_t ns) -> std::string {
    if (ns == 0) return "0001-01-01T00:00:00Z";
    time_t s = ns / 1000000000;
    struct tm tm;
    gmtime_r(&s, &tm);
    char b[64];
    std::snprintf(b, sizeof b, "%04d-%02d-%02dT%02d:%02d:%02d.%09lldZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                  tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<long long>(ns % 1000000000));
    return b;
  };
  json j;
  j["Id"] = c.id;
  j["Created"] = t(c.created);
  j["Path"] = cmd.empty() ? "" : cmd[0];
  j["Args"] = cmd.size() > 1 ? std::vector<std::string>(cmd.begin() + 1, cmd.end()) : std::vector<std::string>{};
  bool running = c.state == "running" || c.state == "paused";
  j["State"] = {{"Status", c.state},
                {"Running", running},
                {"Paused", c.state == "paused"},
                {"Restarting", c.state == "restarting"},
                {"OOMKilled", false},
                {"Dead", false},
                {"Pid", running ? c.pid : 0},
                {"ExitCode", c.exit_code},
                {"Error", c.error},
                {"StartedAt", t(c.started)},
                {"FinishedAt", t(c.finished)}};
  if (auto h = read_file(c.dir + "/health.json"); h && (c.state == "running" || c.state == "paused")) {
    json hj = json::parse(*h, nullptr, false);
    if (hj.is_object()) j["State"]["Health"] = hj;
  }
  j["Image"] = c.image_id;
  j["ResolvConfPath"] = c.dir + "/resolv.conf";
  j["HostnamePath"] = c.dir + "/hostname";
  j["HostsPath"] = c.dir + "/hosts";
  j["LogPath"] = log_path(c);
  j["Name"] = "/" + c.name;
  j["RestartCount"] = c.restart_count;
  j["Driver"] = "overlay2";
  j["Platform"] = "linux";
  j["HostConfig"] = host;
  j["GraphDriver"] = {{"Name", "overlay2"},
                      {"Data", {{"MergedDir", c.dir + "/rootfs"}, {"UpperDir", c.dir + "/upper"},
                                {"WorkDir", c.dir + "/work"}}}};
  // As create resolved them (mounts.json); from the binds for a container made before.
  auto saved = mounts_json(c.dir);
  json mounts = saved ? json::parse(*saved, nullptr, false) : json::array();
  if (!mounts.is_array()) mounts = json::array();
  for (auto& b : saved ? json::array() : host.value("Binds", json::array())) {
    if (!b.is_string()) continue;
    auto parts = split(b.get<std::string>(), ':');
    if (parts.size() < 2) continue;
    bool ro = parts.size() > 2 && parts[2].find("ro") != std::string::npos;
    mounts.push_back({{"Type", "bind"},
                      {"Source", parts[0]},
                      {"Destination", parts[1]},
                      {"Mode", parts.size() > 2 ? parts[2] : ""},
                      {"RW", !ro}, {"Propagation", "rprivate"}});
  }
  j["Mounts"] = mounts;
  if (!cfg.contains("Hostname")) cfg["Hostname"] = c.id.substr(0, 12);
  cfg["Image"] = c.image_name;
  j["Config"] = cfg;
  j["NetworkSettings"] = {{"Networks", json::object()}, {"Ports", json::object()}};
  return j.dump();
}

}  // namespace berth::engine
