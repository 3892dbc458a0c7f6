// `berth system df`, `berth info`, `berth version`.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <functional>
#include <nlohmann/json.hpp>

#include "cgroup/cgroup.h"
#include "cli/berth/cli.h"
#include "cli/berth/format.h"
#include "engine/engine.h"
#include "engine/volumes.h"
#include "util/fs.h"

namespace berth::cli {

using json = nlohmann::json;

namespace {

// Containers: their writable layers; those not running are reclaimable (prune).
json containers_row(Context& ctx, const std::function<std::string(uint64_t, uint64_t)>& pct) {
  auto list = check(check(ctx.engine())->list());
  uint64_t size = 0, reclaimable = 0, active = 0;
  for (auto& c : list) {
    uint64_t n = tree_bytes(c.dir + "/upper");
    size += n;
    bool running = c.state == "running" || c.state == "paused" || c.state == "restarting";
    active += running;
    if (!running) reclaimable += n;
  }
  return {{"Type", "Containers"}, {"TotalCount", std::to_string(list.size())}, {"Active", std::to_string(active)},
          {"Size", human_size(double(size))}, {"Reclaimable", human_size(double(reclaimable)) + pct(reclaimable, size)}};
}

// Local volumes: their data; those no container uses are reclaimable.
json volumes_row(Context& ctx, const std::function<std::string(uint64_t, uint64_t)>& pct) {
  engine::Volumes volumes(check(ctx.store())->db(), ctx.root);
  auto list = check(volumes.list());
  uint64_t size = 0, reclaimable = 0, active = 0;
  for (auto& v : list) {
    uint64_t n = tree_bytes(v.mountpoint);
    size += n;
    bool used = !check(volumes.users(v.name)).empty();
    active += used;
    if (!used) reclaimable += n;
  }
  return {{"Type", "Local Volumes"}, {"TotalCount", std::to_string(list.size())}, {"Active", std::to_string(active)},
          {"Size", human_size(double(size))}, {"Reclaimable", human_size(double(reclaimable)) + pct(reclaimable, size)}};
}

void system_df(Context& ctx, const std::string& format) {
  image::ImageStore* s = check(ctx.store());
  image::DiskUsage u = check(s->disk_usage());
  std::function<std::string(uint64_t, uint64_t)> pct = [](uint64_t part, uint64_t whole) {
    return whole ? " (" + std::to_string(part * 100 / whole) + "%)" : std::string();
  };
  std::vector<json> rows = {
      {{"Type", "Images"}, {"TotalCount", std::to_string(u.images)}, {"Active", std::to_string(u.active)},
       {"Size", human_size(double(u.layers_size))},
       {"Reclaimable", human_size(double(u.reclaimable)) + pct(u.reclaimable, u.layers_size)}},
      containers_row(ctx, pct),
      volumes_row(ctx, pct),
      {{"Type", "Build Cache"}, {"TotalCount", "0"}, {"Active", "0"}, {"Size", "0B"}, {"Reclaimable", "0B"}},
  };
  if (format.empty()) {
    Table t({"TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"});
    for (auto& r : rows)
      t.add({r["Type"], r["TotalCount"], r["Active"], r["Size"], r["Reclaimable"]});
    std::fputs(t.str().c_str(), stdout);
  } else {
    std::fputs(render(format, rows).c_str(), stdout);
  }
}

void info(Context& ctx, const std::string& format) {
  image::ImageStore* s = check(ctx.store());
  // A forced format this kernel cannot mount is an error for pulls, not for info.
  auto lf = s->layer_format();
  std::string format_name = lf ? std::string(image::layer_format_name(*lf)) : "unusable (" + lf.error().str() + ")";
  auto layout = cgroup::detect_layout();
  std::string mode = !layout ? "unknown" : layout->mode == cgroup::Mode::unified ? "2" : "1";
  auto containers = check(check(ctx.engine())->list());
  size_t running = 0, paused = 0;
  for (auto& c : containers) running += c.state == "running", paused += c.state == "paused";
  json j = {
      {"Containers", containers.size()},
      {"ContainersRunning", running},
      {"ContainersPaused", paused},
      {"ContainersStopped", containers.size() - running - paused},
      {"Images", check(s->list()).size()},
      {"Driver", "overlay"},
      {"DriverStatus", {{"Layer format", format_name}, {"Backing root", s->root()}}},
      {"CgroupVersion", mode},
      {"CgroupDriver", ctx.cgroup_manager},
      {"DockerRootDir", s->root()},
      {"ServerVersion", BERTH_VERSION},
      {"OperatingSystem", "Linux"},
  };
  if (!format.empty()) {
    std::fputs(render(format, {j}).c_str(), stdout);
    return;
  }
  std::printf("Containers: %zu\n Running: %zu\n Paused: %zu\n Stopped: %zu\nImages: %zu\n", containers.size(), running,
              paused, containers.size() - running - paused, j["Images"].get<size_t>());
  std::printf("Server Version: %s\nStorage Driver: overlay\n Layer format: %s\n Root Dir: %s\nCgroup Driver: %s\n"
              "Cgroup Version: %s\n",
              BERTH_VERSION, format_name.c_str(), s->root().c_str(), ctx.cgroup_manager.c_str(), mode.c_str());
}

}  // namespace

void add_system_commands(CLI::App& app, Context& ctx) {
  auto* sys = app.add_subcommand("system", "Manage berth");
  sys->require_subcommand(1);
  auto* df = sys->add_subcommand("df", "Show disk usage");
  auto df_format = std::make_shared<std::string>();
  df->add_option("--format", *df_format, "Format output: json or a Go template");
  df->callback([&ctx, df_format] { system_df(ctx, *df_format); });

  for (const char* name : {"info"}) {
    auto* in = app.add_subcommand(name, "Display system-wide information");
    auto f = std::make_shared<std::string>();
    in->add_option("-f,--format", *f, "Format output: json or a Go template");
    in->callback([&ctx, f] { info(ctx, *f); });
  }
  auto* ver = app.add_subcommand("version", "Show the berth version");
  ver->callback([] { std::printf("berth version %s\ncommit: %s\n", BERTH_VERSION, BERTH_COMMIT); });
}

}  // namespace berth::cli
