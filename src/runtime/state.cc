#include "runtime/state.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "cgroup/cgroup.h"
#include "util/fs.h"

namespace berth::runtime {

using json = nlohmann::json;

const char* status_name(Status s) {
  switch (s) {
    case Status::creating: return "creating";
    case Status::created: return "created";
    case Status::running: return "running";
    case Status::paused: return "paused";
    case Status::stopped: return "stopped";
  }
  return "unknown";
}

Result<> check_id(std::string_view id) {
  if (id.empty()) return fail("container id must not be empty");
  if (id == "." || id == ".." || id.size() > 1024)
    return fail("invalid container id \"" + std::string(id) + "\"");
  if (id == kSeccompCacheDir) return fail("invalid container id \"" + std::string(id) + "\": reserved by berth-runtime");
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '+' || c == '-' || c == '.';
    if (!ok) return fail("invalid container id \"" + std::string(id) + "\": only [A-Za-z0-9_+.-] are allowed");
  }
  return {};
}

std::string state_dir(const std::string& root, const std::string& id) { return root + "/" + id; }

Result<> save_state(const std::string& root, const State& st) {
  json j = {{"id", st.id},
            {"pid", st.pid},
            {"pid_start", st.pid_start},
            {"bundle", st.bundle},
            {"rootfs", st.rootfs},
            {"created", st.created},
            {"owner", st.owner},
            {"cgroup_path", st.cgroup_path},
            {"systemd_cgroup", st.systemd_cgroup},
            {"annotations", st.annotations},
            {"namespaces", st.namespaces}};
  return atomic_write_file(state_dir(root, st.id) + "/state.json", j.dump());
}

Result<State> load_state(const std::string& root, const std::string& id) {
  TRY(check_id(id));
  std::string path = state_dir(root, id) + "/state.json";
  auto text = read_file(path);
  if (!text) {
    if (text.error().err == ENOENT) return fail("container \"" + id + "\" does not exist");
    return std::unexpected(std::move(text).error());
  }
  json j = json::parse(*text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return fail(path + ": corrupt state file");
  State st;
  try {
    st.id = j.at("id").get<std::string>();
    st.pid = j.at("pid").get<pid_t>();
    st.pid_start = j.at("pid_start").get<uint64_t>();
    st.bundle = j.at("bundle").get<std::string>();
    st.rootfs = j.at("rootfs").get<std::string>();
    st.created = j.at("created").get<std::string>();
    st.owner = j.value("owner", 0u);
    st.cgroup_path = j.value("cgroup_path", "");
    st.systemd_cgroup = j.value("systemd_cgroup", false);
    st.annotations = j.value("annotations", std::map<std::string, std::string>{});
    st.namespaces = j.value("namespaces", std::vector<std::string>{});
  } catch (const json::exception&) {
    return fail(path + ": corrupt state file");
  }
  return st;
}

std::vector<std::string> list_ids(const std::string& root) {
  std::vector<std::string> out;
  DIR* d = ::opendir(root.c_str());
  if (!d) return out;
  while (auto* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    if (!check_id(e->d_name)) continue;
    if (path_exists(root + "/" + e->d_name + "/state.json")) out.emplace_back(e->d_name);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

uint64_t process_start_time(pid_t pid) {
  if (pid <= 0) return 0;
  // Read into a buffer of ours: this runs on EarlyMonitor's spawning thread,
  // which allocates nothing.
  char path[64], text[1024];
  std::snprintf(path, sizeof path, "/proc/%d/stat", pid);
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  ssize_t n = ::read(fd, text, sizeof text - 1);
  ::close(fd);
  if (n <= 0) return 0;
  std::string_view all(text, static_cast<size_t>(n));
  // The command name (field 2) may hold spaces and parentheses: skip past the last ')'.
  auto close = all.rfind(')');
  if (close == std::string_view::npos || close + 2 >= all.size()) return 0;
  std::string_view rest = all.substr(close + 2);
  // rest starts at field 3 (state); start time is field 22.
  char state = rest[0];
  if (state == 'Z' || state == 'X') return 0;
  int field = 3;
  size_t pos = 0;
  while (field < 22 && pos < rest.size()) {
    pos = rest.find(' ', pos);
    if (pos == std::string_view::npos) return 0;
    ++pos;
    ++field;
  }
  uint64_t v = 0;
  for (; pos < rest.size() && rest[pos] >= '0' && rest[pos] <= '9'; ++pos) v = v * 10 + static_cast<uint64_t>(rest[pos] - '0');
  return v;
}

bool init_alive(const State& st) {
  uint64_t t = process_start_time(st.pid);
  return t != 0 && t == st.pid_start;
}

Status current_status(const std::string& root, const State& st) {
  if (!init_alive(st)) return Status::stopped;
  if (path_exists(state_dir(root, st.id) + "/start.sock")) return Status::created;
  if (!st.cgroup_path.empty()) {
    if (auto layout = cgroup::detect_layout(); layout) {
      if (auto m = cgroup::open_existing(*layout, st.cgroup_path, st.systemd_cgroup); m) {
        if (auto f = (*m)->frozen(); f && *f) return Status::paused;
      }
    }
  }
  return Status::running;
}

std::string state_json(const State& st, Status s, bool pretty) {
  json j = {{"ociVersion", "1.3.0"},
            {"id", st.id},
            {"pid", s == Status::stopped ? 0 : st.pid},
            {"status", status_name(s)},
            {"bundle", st.bundle},
            {"rootfs", st.rootfs},
            {"created", st.created},
            {"owner", ""}};
  if (!st.annotations.empty()) j["annotations"] = st.annotations;
  return pretty ? j.dump(2) : j.dump();
}

Result<> write_pid_file(const std::string& path, pid_t pid) {
  if (path.empty()) return {};
  TRY_CTX(atomic_write_file(path, std::to_string(pid), 0644), "--pid-file");
  return {};
}

std::string now_rfc3339() {
  struct timespec ts;
  ::clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  ::gmtime_r(&ts.tv_sec, &tm);
  char buf[64];
  size_t n = ::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof buf - n, ".%09ldZ", ts.tv_nsec);
  return buf;
}

bool Lock::held_elsewhere(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  return fd && ::flock(fd.get(), LOCK_EX | LOCK_NB) < 0 && errno == EWOULDBLOCK;
}

Result<Lock> Lock::acquire(const std::string& dir) {
  Lock l;
  l.fd_.reset(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!l.fd_) return sys_error("open " + dir);
  while (::flock(l.fd_.get(), LOCK_EX) < 0)
    if (errno != EINTR) return sys_error("lock " + dir);
  return l;
}

}  // namespace berth::runtime
