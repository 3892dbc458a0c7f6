// update and events: the verbs that change and read a running container's
// cgroup.
#include <poll.h>
#include <time.h>

#include <algorithm>

#include "cgroup/cgroup.h"
#include "runtime/container.h"
#include "runtime/state.h"
#include "util/fs.h"

namespace berth::runtime {

namespace {

// The cgroup of a container that is not stopped; `st` receives its state.
Result<std::unique_ptr<cgroup::Manager>> live_cgroup(const Globals& g, const std::string& id, const char* verb,
                                                     State& st) {
  st = TRY(load_state(g.root, id));
  Status s = current_status(g.root, st);
  if (s == Status::stopped) return fail(std::string(verb) + ": container \"" + id + "\" is stopped");
  if (st.cgroup_path.empty()) return fail(std::string(verb) + ": container \"" + id + "\" has no cgroup");
  cgroup::Layout layout = TRY(cgroup::detect_layout());
  return cgroup::open_existing(layout, st.cgroup_path, st.systemd_cgroup);
}

std::string event(const char* type, const std::string& id, const std::string& data) {
  // The id passed check_id at create: no character needs escaping.
  std::string s = std::string("{\"type\":\"") + type + "\",\"id\":\"" + id + "\"";
  if (!data.empty()) s += ",\"data\":" + data;
  return s + "}";
}

int64_t now_ms() {
  struct timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

}  // namespace

Result<> update(const Globals& g, const std::string& id, const oci::Resources& res) {
  State st;
  auto cg = TRY(live_cgroup(g, id, "update", st));
  return cg->apply(res);
}

Result<std::string> stats_event(const Globals& g, const std::string& id) {
  State st;
  auto cg = TRY(live_cgroup(g, id, "events", st));
  cgroup::Stats s = TRY(cg->stats());
  return event("stats", id, cgroup::stats_json(s));
}

Result<> events(const Globals& g, const std::string& id, int interval_ms,
                const std::function<void(const std::string&)>& emit) {
  State st;
  auto cg = TRY(live_cgroup(g, id, "events", st));
  // Without a memory controller there is nothing to watch; stats still flow.
  auto watcher = cg->watch_oom();
  int64_t next = now_ms();
  auto drain = [&]() -> Result<> {
    if (!watcher || !*watcher) return {};
    uint64_t n = TRY((*watcher)->take());
    for (uint64_t i = 0; i < n; ++i) emit(event("oom", id, ""));
    return {};
  };
  for (;;) {
    // An OOM kill of the init stops the container: report it before ending.
    if (current_status(g.root, st) == Status::stopped) return drain();
    int64_t now = now_ms();
    if (now >= next) {
      if (auto s = cg->stats(); s) emit(event("stats", id, cgroup::stats_json(*s)));
      next = now + interval_ms;
    }
    // Wake at the next sample, and at least every 100 ms to notice a stop.
    int wait = static_cast<int>(std::min<int64_t>(next - now_ms(), 100));
    if (wait < 0) wait = 0;
    if (watcher && *watcher) {
      struct pollfd p = {(*watcher)->fd(), POLLIN, 0};
      if (::poll(&p, 1, wait) > 0) TRY(drain());
    } else {
      struct timespec ts = {wait / 1000, (wait % 1000) * 1000000L};
      ::nanosleep(&ts, nullptr);
    }
  }
}

}  // namespace berth::runtime
