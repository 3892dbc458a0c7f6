// cp, diff and export: Docker's verbs on a container's files (engine/copy.h),
// at the top level and under `container`.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <cstdio>

#include "cli/berth/cli.h"
#include "engine/copy.h"
#include "engine/engine.h"
#include "engine/volumes.h"
#include "util/fs.h"

namespace berth::cli {

using json = nlohmann::json;

namespace {

// Docker's splitCpArg: "CTR:PATH" names a container unless the argument is an
// absolute path or starts with "." (./file:name is a local file).
std::pair<std::string, std::string> split_cp_arg(const std::string& arg) {
  if (arg.starts_with("/")) return {"", arg};
  auto colon = arg.find(':');
  if (colon == std::string::npos || arg.starts_with(".")) return {"", arg};
  return {arg.substr(0, colon), arg.substr(colon + 1)};
}

engine::Container container(Context& ctx, const std::string& name) { return check(check(ctx.engine())->find(name)); }

// The files the engine bind-mounts into a container (engine/spec.cc): copied
// out from where they are, and left out of `diff` with their mount points.
std::vector<std::pair<std::string, std::string>> mounted_files(const engine::Container& c) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const char* f : {"hostname", "hosts", "resolv.conf"})
    if (path_exists(c.dir + "/" + f)) out.emplace_back(std::string("/etc/") + f, c.dir + "/" + f);
  return out;
}

// Its volumes and binds (mounts.json, Docker's inspect "Mounts"): directories
// are looked into, a bound file is read as the container sees it.
void add_mounts(const engine::Container& c, engine::CopyOptions& o) {
  auto text = engine::mounts_json(c.dir);
  if (!text) return;  // no mounts
  json mounts = json::parse(*text, nullptr, false);
  if (!mounts.is_array()) return;
  for (auto& m : mounts) {
    std::string type = m.value("Type", ""), src = m.value("Source", ""), dst = m.value("Destination", "");
    if ((type != "bind" && type != "volume") || src.empty() || dst.empty()) continue;
    struct stat st;
    if (::stat(src.c_str(), &st) < 0) continue;  // a bind source gone since: the mount point is what is left
    if (S_ISDIR(st.st_mode))
      o.mounts.push_back({dst, src, m.value("RW", true)});
    else if (S_ISREG(st.st_mode))
      o.mounted_files.emplace_back(dst, src);
  }
}

void cp(Context& ctx, const std::vector<std::string>& args, engine::CopyOptions o) {
  auto [src_ctr, src] = split_cp_arg(args.at(0));
  auto [dst_ctr, dst] = split_cp_arg(args.at(1));
  if (!src_ctr.empty() && !dst_ctr.empty()) die("copying between containers is not supported", 125);
  if (src_ctr.empty() && dst_ctr.empty()) die("must specify at least one container source", 125);
  if (src.empty() || dst.empty()) die("empty path: " + (src.empty() ? args[0] : args[1]), 125);
  o.container = src_ctr.empty() ? dst_ctr : src_ctr;
  engine::Container c = container(ctx, o.container);
  std::string rootfs = check(check(ctx.engine())->rootfs(c));
  o.mounted_files = mounted_files(c);
  add_mounts(c, o);
  // Docker's rule: a --read-only container takes no files, whether it runs or not.
  if (src_ctr.empty()) {
    json body = json::parse(c.config, nullptr, false);
    if (body.is_object() && body.value("HostConfig", json::object()).value("ReadonlyRootfs", false))
      die("container rootfs is marked read-only: " + o.container);
  }
  if (!src_ctr.empty()) {
    if (dst == "-") {
      if (::isatty(1)) die("cowardly refusing to write a tar stream to a terminal");
      check(engine::copy_from_container(rootfs, src, 1, o));
    } else {
      check(engine::copy_out(rootfs, src, dst, o));
    }
  } else if (src == "-") {
    check(engine::copy_to_container(rootfs, dst, 0, o));
  } else {
    check(engine::copy_in(src, rootfs, dst, o));
  }
}

void diff(Context& ctx, const std::string& name) {
  engine::Container c = container(ctx, name);
  image::ImageStore* store = check(ctx.store());
  auto lowers = check(store->mounted_layer_dirs(check(store->resolve(c.image_id))));
  std::vector<std::string> hidden = {"/sbin/berth-init"};
  for (auto& [path, file] : mounted_files(c)) hidden.push_back(path);
  std::string out;
  for (auto& [kind, path] : check(engine::diff(c.dir + "/upper", lowers, hidden)))
    out += std::string(1, kind) + " " + path + "\n";
  std::fwrite(out.data(), 1, out.size(), stdout);
}

void export_container(Context& ctx, const std::string& name, const std::string& output) {
  engine::Container c = container(ctx, name);
  bool to_stdout = output.empty() || output == "-";
  if (to_stdout && ::isatty(1)) die("cowardly refusing to save to a terminal. Use the -o flag or redirect");
  // (Before the output is made: a rootfs that cannot be mounted leaves no file.)
  std::string rootfs = check(check(ctx.engine())->rootfs(c));
  if (to_stdout) {
    check(engine::export_rootfs(rootfs, 1, name));
    return;
  }
  UniqueFd fd(::open(output.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd) throw Failure{Error{errno, "export: " + output}};
  auto r = engine::export_rootfs(rootfs, fd.get(), name);
  if (!r) ::unlink(output.c_str());  // no partial archive left
  check(std::move(r));
}

}  // namespace

void add_copy_commands(CLI::App& app, Context& ctx) {
  CLI::App* group = app.get_subcommand("container");
  // As add_container_commands: each verb at the top level and under
  // `container`, with its options only when it is the verb being run.
  auto both = [&](const std::string& verb, const std::string& help, const std::function<void(CLI::App&)>& setup) {
    for (auto [parent, wanted] :
         {std::pair{&app, ctx.verb == verb}, std::pair{group, ctx.verb == "container" && ctx.subverb == verb}}) {
      if (!wanted && ctx.one_verb) continue;
      CLI::App* c = parent->add_subcommand(verb, help);
      if (wanted)
        setup(*c);
      else
        c->allow_extras();
    }
  };
  both("cp", "Copy files/folders between a container and the local filesystem", [&ctx](CLI::App& c) {
    auto o = std::make_shared<engine::CopyOptions>();
    auto args = std::make_shared<std::vector<std::string>>();
    auto quiet = std::make_shared<bool>(false);
    c.add_flag("-a,--archive", o->archive, "Archive mode (copy all uid/gid information)");
    c.add_flag("-L,--follow-link", o->follow_link, "Always follow symbol link in SRC_PATH");
    c.add_flag("-q,--quiet", *quiet, "Suppress progress output during copy (there is none)");
    c.add_option("SRC_PATH DEST_PATH", *args, "CONTAINER:SRC_PATH DEST_PATH|-, or SRC_PATH|- CONTAINER:DEST_PATH")
        ->required()
        ->expected(2);
    c.callback([&ctx, o, args] { cp(ctx, *args, *o); });
  });
  both("diff", "Inspect changes to files or directories on a container's filesystem", [&ctx](CLI::App& c) {
    auto name = std::make_shared<std::string>();
    c.add_option("CONTAINER", *name, "Container")->required();
    c.callback([&ctx, name] { diff(ctx, *name); });
  });
  both("export", "Export a container's filesystem as a tar archive", [&ctx](CLI::App& c) {
    auto name = std::make_shared<std::string>();
    auto output = std::make_shared<std::string>();
    c.add_option("-o,--output", *output, "Write to a file, instead of STDOUT");
    c.add_option("CONTAINER", *name, "Container")->required();
    c.callback([&ctx, name, output] { export_container(ctx, *name, *output); });
  });
}

}  // namespace berth::cli
