// `berth system df`, `berth info`, `berth version`.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cgroup/cgroup.h"
#include "cli/berth/cli.h"
#include "cli/berth/format.h"

namespace berth::cli {

using json = nlohmann::json;

namespace {

void system_df(Context& ctx, const std::string& format) {
  image::ImageStore* s = check(ctx.store());
  image::DiskUsage u = check(s->disk_usage());
  auto pct = [](uint64_t part, uint64_t whole) {
    return whole ? " (" + std::to_string(part * 100 / whole) + "%)" : std::string();
  };
  std::vector<json> rows = {
      {{"Type", "Images"}, {"TotalCount", std::to_string(u.images)}, {"Active", std::to_string(u.active)},
       {"Size", human_size(double(u.layers_size))},
       {"Reclaimable", human_size(double(u.reclaimable)) + pct(u.reclaimable, u.layers_size)}},
      {{"Type", "Containers"}, {"TotalCount", "0"}, {"Active", "0"}, {"Size", "0B"}, {"Reclaimable", "0B"}},
      {{"Type", "Local Volumes"}, {"TotalCount", "0"}, {"Active", "0"}, {"Size", "0B"}, {"Reclaimable", "0B"}},
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
  auto layout = cgroup::detect_layout();
  std::string mode = !layout ? "unknown" : layout->mode == cgroup::Mode::unified ? "2" : "1";
  json j = {
      {"Images", check(s->list()).size()},
      {"Driver", "overlay"},
      {"DriverStatus", {{"Layer format", "dir"}, {"Backing root", s->root()}}},
      {"CgroupVersion", mode},
      {"DockerRootDir", s->root()},
      {"ServerVersion", BERTH_VERSION},
      {"OperatingSystem", "Linux"},
  };
  if (!format.empty()) {
    std::fputs(render(format, {j}).c_str(), stdout);
    return;
  }
  std::printf("Server Version: %s\nStorage Driver: overlay\n Layer format: dir\n Root Dir: %s\nCgroup Version: %s\nImages: %zu\n",
              BERTH_VERSION, s->root().c_str(), mode.c_str(), j["Images"].get<size_t>());
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
