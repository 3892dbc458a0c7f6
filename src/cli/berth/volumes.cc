// Volume verbs with Docker's names, flags and output: volume create, ls,
// inspect, rm, prune (engine/volumes.h does the work).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/berth/cli.h"
#include "cli/berth/format.h"
#include "engine/engine.h"
#include "engine/volumes.h"
#include "image/store.h"

namespace berth::cli {

using json = nlohmann::json;
using engine::Volume;

namespace {

// The volumes of the store; opening the engine first makes its tables.
engine::Volumes volumes(Context& ctx) {
  (void)check(ctx.engine());
  return engine::Volumes(check(ctx.store())->db(), ctx.root);
}

// "k=v" flags (--label, --opt) as a map; "k" alone is an empty value.
std::map<std::string, std::string> pairs(const std::vector<std::string>& flags, const char* flag) {
  std::map<std::string, std::string> out;
  for (auto& f : flags) {
    std::string key = f.substr(0, f.find('='));
    if (key.empty()) die("invalid argument \"" + f + "\" for \"" + flag + "\" flag", 125);
    out[key] = key.size() < f.size() ? f.substr(key.size() + 1) : "";
  }
  return out;
}

std::string labels_text(const Volume& v) {
  std::string s;
  for (auto& [k, val] : v.labels) s += (s.empty() ? "" : ",") + k + "=" + val;
  return s;
}

// --filter KEY=VALUE for ls (dangling, name, label, driver) and prune (label, label!=, all).
struct Filters {
  std::vector<std::pair<std::string, std::string>> list;
  std::optional<bool> all;

  Filters(const std::vector<std::string>& given, const std::vector<std::string>& keys) {
    for (auto& f : given) {
      bool negated = f.starts_with("label!=");
      auto eq = negated ? 6 : f.find('=');
      std::string k = negated ? "label!=" : f.substr(0, eq);
      if (eq == std::string::npos || std::find(keys.begin(), keys.end(), k) == keys.end())
        die("invalid filter '" + f + "'", 125);
      std::string v = f.substr(eq + 1);
      if (k == "all" || k == "dangling") {
        if (v != "true" && v != "false" && v != "1" && v != "0")
          die("invalid filter '" + f + "': expected true or false", 125);
        if (k == "all") all = v == "true" || v == "1";
      }
      list.emplace_back(k, v);
    }
  }

  // Values of one key are ORed, keys ANDed (Docker); label!= must hold for each.
  bool match(const Volume& v, bool dangling) const {
    std::map<std::string, bool> any;
    for (auto& [k, val] : list) {
      auto eq = val.find('=');
      std::string lk = val.substr(0, eq);
      bool has = v.labels.contains(lk) && (eq == std::string::npos || v.labels.at(lk) == val.substr(eq + 1));
      if (k == "label!=") {
        if (has) return false;
        continue;
      }
      bool m = k == "dangling" ? dangling == (val == "true" || val == "1")
               : k == "name"   ? v.name.find(val) != std::string::npos
               : k == "driver" ? val == "local"
               : k == "label"  ? has
                               : true;
      any[k] = any[k] || m;
    }
    return std::all_of(any.begin(), any.end(), [](auto& p) { return p.second; });
  }
};

void ls(Context& ctx, bool quiet, const std::string& format, const std::vector<std::string>& filter_flags) {
  Filters filters(filter_flags, {"dangling", "name", "label", "driver"});
  engine::Volumes vols = volumes(ctx);
  std::vector<json> rows;
  for (auto& v : check(vols.list())) {
    size_t links = check(vols.users(v.name)).size();
    if (!filters.match(v, links == 0)) continue;
    rows.push_back({{"Name", v.name},
                    {"Driver", "local"},
                    {"Scope", "local"},
                    {"Mountpoint", v.mountpoint},
                    {"Labels", labels_text(v)},
                    {"Links", std::to_string(links)},
                    {"Size", "N/A"},
                    {"Group", "N/A"},
                    {"Availability", "N/A"},
                    {"Status", "N/A"}});
  }
  if (quiet) {
    for (auto& r : rows) print(r["Name"].get<std::string>() + "\n");
    return;
  }
  if (!format.empty() && format != "table") {
    print(render(format, rows));
    return;
  }
  Table t({"DRIVER", "VOLUME NAME"});
  for (auto& r : rows) t.add({r["Driver"], r["Name"]});
  print(t.str());
}

void inspect(Context& ctx, const std::vector<std::string>& names, const std::string& format) {
  engine::Volumes vols = volumes(ctx);
  json out = json::array();
  std::string errors;
  for (auto& n : names) {
    auto v = vols.get(n);
    if (!v) errors += v.error().str() + "\n";
    else out.push_back(json::parse(engine::volume_json(*v)));
  }
  if (format.empty() || format == "json") print(out.dump(4) + "\n");
  else print(render(format, std::vector<json>(out.begin(), out.end())));
  if (!errors.empty()) {
    errors.pop_back();
    die(errors);
  }
}

void prune(Context& ctx, bool all, bool force, const std::vector<std::string>& filter_flags) {
  Filters filters(filter_flags, {"label", "label!=", "all"});
  all = filters.all.value_or(all);
  if (!force) {
    std::fprintf(stderr,
                 "WARNING! This will remove %s local volumes not used by at least one container.\n"
                 "Are you sure you want to continue? [y/N] ",
                 all ? "all" : "anonymous");
    std::string answer;
    std::getline(std::cin, answer);
    if (answer != "y" && answer != "Y" && answer != "yes") return;
  }
  auto r = check(volumes(ctx).prune(all, [&](const Volume& v) { return filters.match(v, true); }));
  if (!r.removed.empty()) {
    print("Deleted Volumes:\n");
    for (auto& n : r.removed) print(n + "\n");
    print("\n");
  }
  print("Total reclaimed space: " + human_size(static_cast<double>(r.bytes)) + "\n");
}

}  // namespace

void add_volume_commands(CLI::App& app, Context& ctx) {
  auto* group = app.add_subcommand("volume", "Manage volumes");
  group->require_subcommand(1);
  // Only the verb being run gets its options (as the container verbs).
  auto verb = [&](const std::vector<std::string>& names, const std::string& help,
                  const std::function<void(CLI::App&)>& setup) {
    CLI::App* c = group->add_subcommand(names[0], help);
    for (size_t i = 1; i < names.size(); ++i) c->alias(names[i]);
    if (ctx.verb == "volume" && std::find(names.begin(), names.end(), ctx.subverb) != names.end()) setup(*c);
    else c->allow_extras();
  };

  verb({"create"}, "Create a volume", [&ctx](CLI::App& c) {
    struct O {
      std::string name, driver = "local";
      std::vector<std::string> labels, opts;
    };
    auto o = std::make_shared<O>();
    c.add_option("-d,--driver", o->driver, "Specify volume driver name")->capture_default_str();
    c.add_option("--label", o->labels, "Set metadata for a volume")->allow_extra_args(false);
    c.add_option("-o,--opt", o->opts, "Set driver specific options (type, device, o)")->allow_extra_args(false);
    c.add_option("VOLUME", o->name, "Volume name (default: a random one)");
    c.callback([&ctx, o] {
      if (o->driver != "local")
        die("create " + o->name + ": error looking up volume plugin " + o->driver + ": plugin \"" + o->driver +
            "\" not found");
      auto v = check(volumes(ctx).create(o->name, pairs(o->labels, "--label"), pairs(o->opts, "--opt")));
      print(v.name + "\n");
    });
  });
  verb({"ls", "list"}, "List volumes", [&ctx](CLI::App& c) {
    auto quiet = std::make_shared<bool>(false);
    auto format = std::make_shared<std::string>();
    auto filters = std::make_shared<std::vector<std::string>>();
    c.add_flag("-q,--quiet", *quiet, "Only display volume names");
    c.add_option("--format", *format, "Format output: table, json or a Go template");
    c.add_option("-f,--filter", *filters, "Provide filter values (dangling=, name=, label=, driver=)")
        ->allow_extra_args(false);
    c.callback([&ctx, quiet, format, filters] { ls(ctx, *quiet, *format, *filters); });
  });
  verb({"inspect"}, "Display detailed information on one or more volumes", [&ctx](CLI::App& c) {
    auto names = std::make_shared<std::vector<std::string>>();
    auto format = std::make_shared<std::string>();
    c.add_option("-f,--format", *format, "Format output: json or a Go template");
    c.add_option("VOLUME", *names, "Volumes")->required();
    c.callback([&ctx, names, format] { inspect(ctx, *names, *format); });
  });
  verb({"rm", "remove"}, "Remove one or more volumes", [&ctx](CLI::App& c) {
    auto names = std::make_shared<std::vector<std::string>>();
    auto force = std::make_shared<bool>(false);
    c.add_flag("-f,--force", *force, "Force the removal of one or more volumes");
    c.add_option("VOLUME", *names, "Volumes")->required();
    c.callback([&ctx, names, force] {
      engine::Volumes vols = volumes(ctx);
      std::string errors;
      for (auto& n : *names) {
        if (auto r = vols.remove(n, *force); !r) errors += r.error().str() + "\n";
        else print(n + "\n");
      }
      if (!errors.empty()) {
        errors.pop_back();
        die(errors);
      }
    });
  });
  verb({"prune"}, "Remove unused local volumes", [&ctx](CLI::App& c) {
    auto all = std::make_shared<bool>(false), force = std::make_shared<bool>(false);
    auto filters = std::make_shared<std::vector<std::string>>();
    c.add_flag("-a,--all", *all, "Remove all unused volumes, not just anonymous ones");
    c.add_flag("-f,--force", *force, "Do not prompt for confirmation");
    c.add_option("--filter", *filters, "Provide filter values (label=, label!=, all=)")->allow_extra_args(false);
    c.callback([&ctx, all, force, filters] { prune(ctx, *all, *force, *filters); });
  });
}

}  // namespace berth::cli
