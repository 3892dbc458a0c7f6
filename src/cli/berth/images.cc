// Image verbs with Docker's names, flags and output: images, image inspect,
// history, tag, rmi, image prune, plus podman's image mount/umount and berth's
// image create (offline templates).
#include <fnmatch.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <set>
#include <unistd.h>

#include "cli/berth/cli.h"
#include "engine/engine.h"
#include "cli/berth/format.h"
#include "image/template.h"

namespace berth::cli {

using json = nlohmann::json;
using image::ImageRecord;
using image::Reference;

namespace {

std::string short_id(const image::Digest& d) { return d.hex.substr(0, 12); }

std::string created_at(const std::string& rfc) {
  int64_t t = parse_rfc3339(rfc);
  if (!t) return "";
  char buf[64];
  time_t tt = t;
  struct tm tm {};
  gmtime_r(&tt, &tm);
  strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S +0000 UTC", &tm);
  return buf;
}

// Runs `setup` for `name` at the top level (when `top` is set) and under `image`.
void both(CLI::App& app, CLI::App& image, const std::string& top, const std::vector<std::string>& names,
          const std::string& help, const std::function<void(CLI::App&)>& setup) {
  if (!top.empty()) setup(*app.add_subcommand(top, help));
  for (auto& n : names) setup(*image.add_subcommand(n, help));
}

// ---------------------------------------------------------------- images --

struct ImagesOptions {
  bool all = false, quiet = false, no_trunc = false, digests = false;
  std::string format;
  std::vector<std::string> filters;
  std::string repo;
};

void images(Context& ctx, const ImagesOptions& o) {
  auto list = check(check(ctx.store())->list());
  std::optional<bool> dangling;
  std::vector<std::string> refs;
  std::vector<std::pair<std::string, std::optional<std::string>>> labels;  // key, value if given
  std::optional<int64_t> before, since;  // created, exclusive bounds
  image::ImageStore& store = *check(ctx.store());
  auto created_of = [&](const std::string& name) { return parse_rfc3339(check(ctx.image(name)).created); };
  for (auto& f : o.filters) {
    auto eq = f.find('=');
    std::string k = f.substr(0, eq), v = eq == std::string::npos ? "" : f.substr(eq + 1);
    if (k == "dangling" && (v == "true" || v == "false")) dangling = v == "true";
    else if (k == "reference" && !v.empty()) refs.push_back(v);
    else if (k == "label" && !v.empty()) {
      auto veq = v.find('=');
      labels.emplace_back(v.substr(0, veq), veq == std::string::npos ? std::nullopt
                                                                     : std::optional<std::string>(v.substr(veq + 1)));
    } else if (k == "before" && !v.empty()) before = created_of(v);
    else if (k == "since" && !v.empty()) since = created_of(v);
    else die("invalid filter '" + f + "' (supported: dangling=true|false, reference=PATTERN, label=KEY[=VALUE], before=IMAGE, since=IMAGE)");
  }
  // Labels live in each image's config: read only when a label filter asks.
  auto has_labels = [&](const ImageRecord& img) {
    if (labels.empty()) return true;
    json cfg = json::parse(store.read_config(img).value_or("{}"), nullptr, false);
    const json* l = nullptr;
    if (cfg.is_object() && cfg.contains("config") && cfg["config"].is_object() && cfg["config"].contains("Labels"))
      l = &cfg["config"]["Labels"];
    for (auto& [key, value] : labels) {
      if (!l || !l->is_object() || !l->contains(key)) return false;
      if (value && (!(*l)[key].is_string() || (*l)[key].get<std::string>() != *value)) return false;
    }
    return true;
  };
  if (!o.repo.empty()) refs.push_back(o.repo.find(':') == std::string::npos ? o.repo + ":*" : o.repo);
  std::vector<json> rows;
  std::set<std::string> seen_ids;
  for (auto& img : list) {
    bool is_dangling = img.tags.empty();
    if (dangling && *dangling != is_dangling) continue;
    int64_t created_at_s = parse_rfc3339(img.created);
    if ((before && created_at_s >= *before) || (since && created_at_s <= *since) || !has_labels(img)) continue;
    std::vector<std::pair<std::string, std::string>> names;  // repository, tag
    for (auto& t : img.tags) names.emplace_back(t.familiar_repository(), t.tag);
    // Untagged but known to a registry (pulled by digest, or its tag moved on):
    // Docker shows the repository with no tag.
    for (auto& rd : img.repo_digests)
      if (names.empty() || names.back().second == "<none>")
        if (auto r = Reference::parse(rd.substr(0, rd.find('@'))))
          if (std::none_of(names.begin(), names.end(), [&](auto& n) { return n.first == r->familiar_repository(); }))
            names.emplace_back(r->familiar_repository(), "<none>");
    if (names.empty()) names.emplace_back("<none>", "<none>");
    for (auto& [repo, tag] : names) {
      if (!refs.empty()) {
        bool match = false;
        for (auto& pat : refs) {
          std::string full = repo + ":" + tag;
          if (fnmatch(pat.c_str(), full.c_str(), 0) == 0 || fnmatch(pat.c_str(), repo.c_str(), 0) == 0) match = true;
        }
        if (!match || repo == "<none>") continue;
      }
      std::string digest = "<none>";
      for (auto& rd : img.repo_digests) {
        auto at = rd.find('@');
        auto r = Reference::parse(rd.substr(0, at));
        if (r && r->familiar_repository() == repo) digest = rd.substr(at + 1);
      }
      int64_t created = parse_rfc3339(img.created);
      std::string size = human_size(double(img.size));
      rows.push_back({{"Containers", "N/A"},
                      {"CreatedAt", created_at(img.created)},
                      {"CreatedSince", time_ago(created)},
                      {"Digest", digest},
                      {"ID", o.no_trunc ? img.id.str() : short_id(img.id)},
                      {"Repository", repo},
                      {"SharedSize", "N/A"},
                      {"Size", size},
                      {"Tag", tag},
                      {"UniqueSize", "N/A"},
                      {"VirtualSize", size}});
    }
  }
  if (o.quiet) {
    for (auto& r : rows)
      if (seen_ids.insert(r["ID"].get<std::string>()).second) print(r["ID"].get<std::string>() + "\n");
    return;
  }
  if (!o.format.empty() && o.format != "table") {
    print(render(o.format, rows));
    return;
  }
  std::vector<std::string> header = {"REPOSITORY", "TAG"};
  if (o.digests) header.push_back("DIGEST");
  for (auto* h : {"IMAGE ID", "CREATED", "SIZE"}) header.push_back(h);
  Table t(header);
  for (auto& r : rows) {
    std::vector<std::string> cells = {r["Repository"], r["Tag"]};
    if (o.digests) cells.push_back(r["Digest"]);
    for (auto* k : {"ID", "CreatedSince", "Size"}) cells.push_back(r[k]);
    t.add(cells);
  }
  print(t.str());
}

// --------------------------------------------------------------- inspect --

json inspect_json(image::ImageStore& store, const ImageRecord& img) {
  json cfg = json::parse(check(store.read_config(img)), nullptr, false);
  if (cfg.is_discarded()) cfg = json::object();
  json tags = json::array(), digests = json::array(), layers = json::array();
  for (auto& t : img.tags) tags.push_back(t.familiar());
  for (auto& d : img.repo_digests) {
    auto at = d.find('@');
    auto r = Reference::parse(d.substr(0, at));
    digests.push_back(r ? r->familiar_repository() + d.substr(at) : d);
  }
  if (cfg.contains("rootfs") && cfg["rootfs"].contains("diff_ids")) layers = cfg["rootfs"]["diff_ids"];
  std::string lower;
  auto dirs = store.layer_dirs(img);
  for (size_t i = 0; i < dirs.size(); ++i) lower += (i ? ":" : "") + dirs[i];
  auto get = [&](const char* k) { return cfg.contains(k) ? cfg[k] : json(""); };
  return {{"Id", img.id.str()},
          {"RepoTags", tags},
          {"RepoDigests", digests},
          {"Parent", ""},
          {"Comment", get("comment")},
          {"Created", get("created")},
          {"DockerVersion", get("docker_version")},
          {"Author", get("author")},
          {"Config", cfg.contains("config") ? cfg["config"] : json(nullptr)},
          {"Architecture", img.platform.architecture},
          {"Variant", img.platform.variant.empty() ? json(nullptr) : json(img.platform.variant)},
          {"Os", img.platform.os},
          {"Size", img.size},
          {"GraphDriver", {{"Name", "overlay"}, {"Data", {{"LowerDir", lower}}}}},
          {"RootFS", {{"Type", "layers"}, {"Layers", layers}}},
          {"Metadata", {{"LastTagTime", ""}}},
          {"Descriptor", {{"mediaType", img.manifest_type}, {"digest", img.manifest.str()}}}};
}

// `containers`: the top-level `inspect`, where a container of that name comes first.
void inspect(Context& ctx, const std::vector<std::string>& names, const std::string& format, bool containers) {
  json out = json::array();
  std::string errors;
  for (auto& n : names) {
    if (containers && ctx.inspect_container)
      if (auto c = ctx.inspect_container(n)) {
        out.push_back(json::parse(*c));
        continue;
      }
    auto img = ctx.image(n);
    if (!img) {
      if (containers && ctx.inspect_volume)
        if (auto v = ctx.inspect_volume(n)) {
          out.push_back(json::parse(*v));
          continue;
        }
      errors += (containers ? "no such object: " + n : img.error().str()) + "\n";
      continue;
    }
    out.push_back(inspect_json(*check(ctx.store()), *img));
  }
  if (format.empty() || format == "json") print(out.dump(4) + "\n");
  else {
    std::vector<json> rows(out.begin(), out.end());
    print(render(format, rows));
  }
  if (!errors.empty()) {
    errors.pop_back();
    die(errors);
  }
}

// --------------------------------------------------------------- history --

void history(Context& ctx, const std::string& name, bool quiet, bool no_trunc, bool human,
             const std::string& format) {
  auto img = check(ctx.image(name));
  image::ImageStore& store = *check(ctx.store());
  auto cfg = check(image::parse_config(check(store.read_config(img))));
  std::vector<json> rows;
  // Newest first; the image ID goes on the newest entry, "<missing>" on the rest (as Docker).
  size_t layer = img.layers.size();
  const std::vector<uint64_t>& sizes = img.layer_sizes;
  auto hist = cfg.history;
  if (hist.empty())
    for (size_t i = 0; i < img.layers.size(); ++i) hist.push_back({"", "", "", false});
  for (size_t i = hist.size(); i-- > 0;) {
    auto& h = hist[i];
    uint64_t size = 0;
    if (!h.empty_layer && layer > 0) size = sizes[--layer];
    std::string id = i + 1 == hist.size() ? (no_trunc ? img.id.str() : short_id(img.id)) : "<missing>";
    std::string by = h.created_by;
    if (!no_trunc && by.size() > 45) by = by.substr(0, 44) + "…";
    int64_t t = parse_rfc3339(h.created);
    rows.push_back({{"ID", id},
                    {"CreatedSince", human ? time_ago(t) : h.created},
                    {"CreatedAt", h.created},
                    {"CreatedBy", by},
                    {"Size", human ? human_size(double(size)) : std::to_string(size)},
                    {"Comment", h.comment}});
  }
  if (quiet) {
    for (auto& r : rows) print(r["ID"].get<std::string>() + "\n");
    return;
  }
  if (!format.empty()) {
    print(render(format, rows));
    return;
  }
  Table t({"IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"});
  for (auto& r : rows) t.add({r["ID"], r["CreatedSince"], r["CreatedBy"], r["Size"], r["Comment"]});
  print(t.str());
}

// ------------------------------------------------------------ tag / rmi --

void tag(Context& ctx, const std::string& src, const std::string& dst) {
  auto img = check(ctx.image(src));
  auto ref = check(Reference::parse(dst));
  check(check(ctx.store())->tag(img, ref));
}

// Docker: not even --force removes the image of a running container.
std::string running_user(Context& ctx, const std::string& name) {
  auto img = ctx.image(name);
  if (!img) return "";
  for (auto& c : check(check(ctx.engine())->list()))
    if (c.image_id == img->id.str() && (c.state == "running" || c.state == "paused" || c.state == "restarting"))
      return "unable to delete " + img->id.hex.substr(0, 12) +
             " (cannot be forced) - image is being used by running container " + c.id.substr(0, 12);
  return "";
}

void rmi(Context& ctx, const std::vector<std::string>& names, bool force) {
  std::string errors;
  for (auto& n : names) {
    if (force)
      if (std::string busy = running_user(ctx, n); !busy.empty()) {
        errors += busy + "\n";
        continue;
      }
    auto r = check(ctx.store())->remove(n, force);
    if (!r) {
      errors += r.error().str() + "\n";
      continue;
    }
    for (auto& u : r->untagged) print("Untagged: " + u + "\n");
    for (auto& d : r->deleted) print("Deleted: " + d.str() + "\n");
  }
  if (!errors.empty()) {
    errors.pop_back();
    die(errors);
  }
}

void prune(Context& ctx, bool all, bool force) {
  if (!force) {
    std::fprintf(stderr, "WARNING! This will remove %s.\nAre you sure you want to continue? [y/N] ",
                 all ? "all images without at least one container associated to them" : "all dangling images");
    std::string answer;
    std::getline(std::cin, answer);
    if (answer != "y" && answer != "Y" && answer != "yes") return;
  }
  image::ImageStore& store = *check(ctx.store());
  uint64_t before = check(store.disk_usage()).layers_size;
  auto r = check(store.prune(all));
  uint64_t after = check(store.disk_usage()).layers_size;
  if (!r.untagged.empty() || !r.deleted.empty()) {
    print("Deleted Images:\n");
    for (auto& u : r.untagged) print("untagged: " + u + "\n");
    for (auto& d : r.deleted) print("deleted: " + d.str() + "\n");
    print("\n");
  }
  print("Total reclaimed space: " + human_size(double(before > after ? before - after : 0)) + "\n");
}

// ----------------------------------------------------- mount / create --

void mount(Context& ctx, const std::vector<std::string>& names, const std::string& format) {
  image::ImageStore& store = *check(ctx.store());
  if (names.empty()) {
    std::vector<json> rows;
    for (auto& [img, path] : check(store.mounts())) {
      std::string name = img.tags.empty() ? "<none>" : img.tags[0].familiar();
      rows.push_back({{"id", img.id.hex}, {"Repositories", name}, {"mountpoint", path}});
    }
    if (format == "json") {
      print(json(rows).dump(4) + "\n");
      return;
    }
    for (auto& r : rows)
      print(r["id"].get<std::string>().substr(0, 12) + " " + r["Repositories"].get<std::string>() + " " +
            r["mountpoint"].get<std::string>() + "\n");
    return;
  }
  for (auto& n : names) print(check(store.mount(check(ctx.image(n)))) + "\n");
}

void umount(Context& ctx, const std::vector<std::string>& names, bool all) {
  image::ImageStore& store = *check(ctx.store());
  if (all && names.empty()) {
    for (auto& [img, path] : check(store.mounts())) {
      check(store.umount(img, true));
      print(img.id.hex + "\n");
    }
    return;
  }
  if (names.empty()) die("image umount: give an image, or --all");
  for (auto& n : names) {
    auto img = check(store.resolve(n));
    if (!check(store.umount(img, all))) die("image " + n + " is not mounted");
    print(img.id.hex + "\n");
  }
}

void create(Context& ctx, const std::string& tmpl, std::string name, const image::TemplateOptions& o) {
  if (name.empty()) name = tmpl + ":latest";
  auto ref = check(Reference::parse(name));
  auto img = check(image::create_from_template(*check(ctx.store()), tmpl, ref, o));
  print(img.id.str() + "\n");
}

}  // namespace

void add_image_commands(CLI::App& app, Context& ctx) {
  auto* image = app.add_subcommand("image", "Manage images");
  image->require_subcommand(1);

  both(app, *image, "images", {"ls", "list"}, "List images", [&ctx](CLI::App& c) {
    auto o = std::make_shared<ImagesOptions>();
    c.add_flag("-a,--all", o->all, "Show all images");
    c.add_flag("-q,--quiet", o->quiet, "Only show image IDs");
    c.add_flag("--no-trunc", o->no_trunc, "Don't truncate output");
    c.add_flag("--digests", o->digests, "Show digests");
    c.add_option("--format", o->format, "Format output: table, json or a Go template");
    c.add_option("-f,--filter", o->filters, "Filter output (dangling=, reference=, label=, before=, since=)")
        ->allow_extra_args(false);
    c.add_option("REPOSITORY", o->repo, "Only images of this repository[:tag]");
    c.callback([&ctx, o] { images(ctx, *o); });
  });
  for (bool top : {true, false}) {
    CLI::App& c = top ? *app.add_subcommand("inspect", "Return low-level information on containers or images")
                      : *image->add_subcommand("inspect", "Display detailed information on images");
    auto names = std::make_shared<std::vector<std::string>>();
    auto format = std::make_shared<std::string>();
    c.add_option("-f,--format", *format, "Format output: json or a Go template");
    c.add_option(top ? "NAME" : "IMAGE", *names, top ? "Containers or images" : "Images")->required();
    c.callback([&ctx, names, format, top] { inspect(ctx, *names, *format, top); });
  }
  both(app, *image, "history", {"history"}, "Show the history of an image", [&ctx](CLI::App& c) {
    struct O {
      std::string name, format;
      bool quiet = false, no_trunc = false, human = true;
    };
    auto o = std::make_shared<O>();
    c.add_flag("-q,--quiet", o->quiet, "Only show image IDs");
    c.add_flag("--no-trunc", o->no_trunc, "Don't truncate output");
    c.add_flag("-H,--human", o->human, "Print sizes and dates in human readable format")->default_str("true");
    c.add_option("--format", o->format, "Format output: json or a Go template");
    c.add_option("IMAGE", o->name, "Image")->required();
    c.callback([&ctx, o] { history(ctx, o->name, o->quiet, o->no_trunc, o->human, o->format); });
  });
  both(app, *image, "tag", {"tag"}, "Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE", [&ctx](CLI::App& c) {
    auto args = std::make_shared<std::vector<std::string>>();
    c.add_option("SOURCE_IMAGE TARGET_IMAGE", *args, "Source and target")->required()->expected(2);
    c.callback([&ctx, args] { tag(ctx, (*args)[0], (*args)[1]); });
  });
  both(app, *image, "rmi", {"rm", "remove"}, "Remove one or more images", [&ctx](CLI::App& c) {
    auto names = std::make_shared<std::vector<std::string>>();
    auto force = std::make_shared<bool>(false);
    c.add_flag("-f,--force", *force, "Force removal of the image");
    c.add_option("IMAGE", *names, "Images")->required();
    c.callback([&ctx, names, force] { rmi(ctx, *names, *force); });
  });
  both(app, *image, "", {"prune"}, "Remove unused images", [&ctx](CLI::App& c) {
    auto all = std::make_shared<bool>(false), force = std::make_shared<bool>(false);
    c.add_flag("-a,--all", *all, "Remove all unused images, not just dangling ones");
    c.add_flag("-f,--force", *force, "Do not prompt for confirmation");
    c.callback([&ctx, all, force] { prune(ctx, *all, *force); });
  });
  both(app, *image, "", {"mount"}, "Mount an image's root filesystem read-only and print where", [&ctx](CLI::App& c) {
    auto names = std::make_shared<std::vector<std::string>>();
    auto format = std::make_shared<std::string>();
    c.add_option("--format", *format, "With no image: list mounts (json)");
    c.add_option("IMAGE", *names, "Images");
    c.callback([&ctx, names, format] { mount(ctx, *names, *format); });
  });
  both(app, *image, "", {"umount", "unmount"}, "Unmount an image's root filesystem", [&ctx](CLI::App& c) {
    auto names = std::make_shared<std::vector<std::string>>();
    auto all = std::make_shared<bool>(false);
    c.add_flag("-a,--all", *all, "Unmount every mount of the images (or of every image)");
    c.add_option("IMAGE", *names, "Images");
    c.callback([&ctx, names, all] { umount(ctx, *names, *all); });
  });
  both(app, *image, "", {"create"}, "Make an image from a template (busybox, debian)", [&ctx](CLI::App& c) {
    struct O {
      std::string tmpl, name;
      image::TemplateOptions t;
    };
    auto o = std::make_shared<O>();
    c.add_option("-t,--tag", o->name, "Name the image (default TEMPLATE:latest)");
    c.add_option("--suite", o->t.suite, "debian: the suite to bootstrap")->capture_default_str();
    c.add_option("--mirror", o->t.mirror, "debian: the mirror debootstrap uses");
    c.add_option("--busybox", o->t.busybox, "busybox: the static binary to use")->capture_default_str();
    c.add_option("TEMPLATE", o->tmpl, "busybox or debian")->required();
    c.callback([&ctx, o] { create(ctx, o->tmpl, o->name, o->t); });
  });
}

}  // namespace berth::cli
