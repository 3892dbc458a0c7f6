// berth: Docker's verbs and habits, daemonless. This file holds the global
// options and the one place errors are printed; the verbs live in one file per
// group (images.cc, system.cc).
#include <malloc.h>
#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <stdexcept>

#include <climits>
#include <unistd.h>

#include "cli/berth/cli.h"
#include "cli/berth/format.h"
#include "engine/engine.h"
#include "image/db.h"
#include "image/template.h"
#include "util/exit.h"
#include "util/fs.h"
#include "util/log.h"

namespace berth::cli {

Result<image::ImageStore*> Context::store() {
  if (!store_) store_ = TRY(image::ImageStore::open(root, TRY(image::parse_storage_opts(storage_opts))));
  return store_.get();
}

// The template a missing image `name` would be made from (busybox, debian
// with the tag latest), or "".
static std::string template_for(std::string_view name) {
  auto ref = image::Reference::parse(name);
  if (ref && ref->domain == "docker.io" && ref->tag == "latest" && !ref->digest &&
      ref->path.starts_with("library/") && image::is_template(ref->path.substr(8)))
    return ref->path.substr(8);
  return "";
}

Result<image::ImageRecord> Context::image(std::string_view name) {
  image::ImageStore* s = TRY(store());
  // here_or_in_full() has just found it.
  if (resolved_ && resolved_->first == name) return resolved_->second;
  auto rec = s->resolve(name);
  if (rec) return rec;
  if (std::string t = template_for(name); !t.empty()) {
#ifdef BERTH_LITE
    // Making it writes layers: berth-full's work, and it runs the whole command.
    throw RunInFull{};
#endif
    return image::create_from_template(*s, t, *image::Reference::parse(name));
  }
  return rec;
}

void Context::here_or_in_full(std::string_view name) {
#ifdef BERTH_LITE
  auto s = store();
  if (!s) return;
  if (auto rec = (*s)->resolve(name)) {
    resolved_.emplace(std::string(name), std::move(*rec));
    return;
  }
  if (!template_for(name).empty()) throw RunInFull{};
#else
  (void)name;
#endif
}

std::string Context::config_dir() const {
  if (!config.empty()) return config;
  if (const char* d = std::getenv("DOCKER_CONFIG"); d && *d) return d;
  const char* home = std::getenv("HOME");
  return std::string(home && *home ? home : "/root") + "/.docker";
}

Context::~Context() = default;
Context::Context() = default;

// berth-monitor is installed beside berth (or in ../libexec/berth).
static std::string self_dir() {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return "/usr/local/bin";
  std::string p(buf, static_cast<size_t>(n));
  return p.substr(0, p.rfind('/'));
}

std::string Context::monitor_exe() const {
  std::string dir = self_dir();
  std::string exe = dir + "/berth-monitor";
  if (!path_exists(exe) && path_exists(dir + "/../libexec/berth/berth-monitor"))
    exe = dir + "/../libexec/berth/berth-monitor";
  return exe;
}

Result<engine::Engine*> Context::engine() {
  if (!engine_) {
    image::ImageStore* s = TRY(store());
    engine::Options o;
    o.root = root;
    o.runroot = runroot;
    std::string dir = self_dir();
    o.berth_exe = dir + "/berth";
    o.monitor_exe = monitor_exe();
    o.init_exe = dir + "/berth-init";
    if (!path_exists(o.init_exe) && path_exists(dir + "/../libexec/berth/berth-init"))
      o.init_exe = dir + "/../libexec/berth/berth-init";
    o.systemd_cgroup = cgroup_manager == "systemd";
    o.defer_removal = true;  // emptied by a child as berth exits (main)
    engine_ = TRY(engine::Engine::open(*s, std::move(o)));
  }
  return engine_.get();
}

namespace {

// The groups of verbs a command needs: building CLI11's parsers for all
// eighty-odd verbs took about 2 ms of every command. A verb not listed here
// (none given, --help, a typo) gets them all, so help and errors are whole.
enum Groups : int {
  kImages = 1, kTransfer = 2, kRegistry = 4, kSystem = 8, kContainers = 16, kCopy = 32, kVolumes = 64, kAll = 127
};
int groups_for(std::string_view verb) {
  // transfer and registry add to the `image` group, copy to `container`.
  constexpr int image_group = kImages | kTransfer | kRegistry;
  constexpr int container_group = kContainers | kCopy;
  static const std::pair<std::string_view, int> verbs[] = {
      {"image", image_group}, {"images", kImages}, {"history", kImages}, {"tag", kImages}, {"rmi", kImages},
      {"inspect", kImages | kContainers}, {"save", kImages | kTransfer}, {"load", kImages | kTransfer},
      {"import", kImages | kTransfer}, {"pull", kImages | kRegistry}, {"push", kImages | kRegistry},
      {"login", kImages | kRegistry}, {"logout", kImages | kRegistry}, {"system", kSystem}, {"info", kSystem},
      {"version", kSystem},
      {"volume", kVolumes}, {"container", container_group}, {"cp", container_group}, {"diff", container_group},
      {"export", container_group}, {"run", kContainers}, {"create", kContainers}, {"start", kContainers},
      {"stop", kContainers}, {"restart", kContainers}, {"kill", kContainers}, {"rm", kContainers},
      {"pause", kContainers}, {"unpause", kContainers}, {"wait", kContainers}, {"rename", kContainers},
      {"ps", kContainers}, {"logs", kContainers}, {"top", kContainers}, {"port", kContainers},
      {"exec", kContainers}, {"attach", kContainers}, {"console", kContainers}, {"events", kContainers},
      {"stats", kContainers}, {"commit", kContainers}, {"clone", kContainers}};
  for (auto& [name, g] : verbs)
    if (name == verb) return g;
  return kAll;
}

// The verb and sub-verb: the first two words that are not global options
// (nor their values); `debug`: -D/--debug came before the verb.
struct CommandLine {
  std::string verb, subverb;
  bool debug = false;
  std::optional<std::string> root;  // --root's, if given
};
CommandLine command_line(int argc, char** argv) {
  CommandLine cl;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--root" && i + 1 < argc) cl.root = argv[i + 1];
    else if (a.starts_with("--root=")) cl.root = std::string(a.substr(7));
    if (a == "--root" || a == "--runroot" || a == "--config" || a == "--storage-opt" || a == "--cgroup-manager") {
      ++i;
      continue;
    }
    if ((a == "-D" || a == "--debug") && cl.verb.empty()) cl.debug = true;
    if (a.starts_with("-")) continue;
    if (cl.verb.empty()) cl.verb = a;
    else {
      cl.subverb = a;
      break;
    }
  }
  return cl;
}

#ifdef BERTH_LITE
// The static `berth` (src/CMakeLists.txt) runs a command itself unless it
// needs what only berth-full links: libcurl (the registry), ISA-L's gzip and
// libarchive's disk side with its ACLs (archives in and out, layers written).
bool full_only(const CommandLine& cl) {
  static const std::string_view full[] = {"pull", "push", "login", "logout", "save", "load", "import",
                                          "export", "cp", "diff", "commit"};
  auto in = [](std::string_view w) {
    for (auto f : full)
      if (w == f) return true;
    return false;
  };
  if (in(cl.verb)) return true;
  // `image create` makes layers; the rest of `image` only reads and removes.
  if (cl.verb == "image") return in(cl.subverb) || cl.subverb == "create";
  if (cl.verb == "container") return in(cl.subverb);
  return false;
}

// berth-full is installed beside berth: its monitors' exit command is
// the berth beside it. $BERTH_FULL_EXEC marks the exec, so that a berth-full
// that is this binary again (a copy, a link) is an error, not a loop.
[[noreturn]] void exec_full(char** argv) {
  std::string exe = self_dir() + "/berth-full";
  if (std::getenv("BERTH_FULL_EXEC")) {
    std::fprintf(stderr, "berth: %s is not the full build of berth (it execs itself)\n", exe.c_str());
    std::exit(125);
  }
  ::setenv("BERTH_FULL_EXEC", "1", 1);
  std::fflush(nullptr);
  ::execv(exe.c_str(), argv);
  std::fprintf(stderr, "berth: exec %s: %s\n", exe.c_str(), std::strerror(errno));
  std::exit(125);
}
#endif

int run(int argc, char** argv) {
  // Never destroyed: freeing a hundred options' worth of CLI11 as the process
  // ends is time (0.1-0.2 ms of `run --rm` here) spent on nothing.
  CLI::App& app = *new CLI::App{"berth: containers, daemonless", "berth"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Show every command's options");
  app.set_version_flag("-v,--version", std::string("berth version ") + BERTH_VERSION + ", commit " + BERTH_COMMIT);
  // Not destroyed either, but where the command goes on in berth-full:
  // closing the store (SQLite's statements and connection) and the rest took
  // ~0.12 ms of every `run` here, as the process was about to end anyway.
  Context& ctx = *new Context;
  ctx.args.assign(argv + 1, argv + argc);
  CommandLine cl = command_line(argc, argv);
  if (cl.debug) log::init("", log::Format::text, true);
  ctx.verb = cl.verb;
  ctx.subverb = cl.subverb;
  const char* env_root = std::getenv("BERTH_ROOT");
  ctx.root = env_root && *env_root ? env_root : "/var/lib/berth";
  // `run`'s monitor loads (its exec and libc's start, ~1 ms here) while
  // CLI11 parses the command line; EarlyStart tells it the rest. Not taken
  // (help, a bad flag), it ends as its socket closes, reaped on the way out.
  // (Its directory from the --root that CLI11 will find: EarlyStart checks.)
  if (cl.verb == "run" || (cl.verb == "container" && cl.subverb == "run")) {
    ctx.early_id = engine::new_container_id();
    ctx.early_dir = cl.root.value_or(ctx.root) + "/containers/" + ctx.early_id;
    if (auto m = engine::EarlyMonitor::spawn(ctx.monitor_exe(), ctx.early_id, ctx.early_dir, &ctx.early_attach); m)
      ctx.early_monitor = std::make_unique<engine::EarlyMonitor>(std::move(*m));
  }
  struct ReapEarly {
    Context* ctx;
    ~ReapEarly() {
      if (ctx) ctx->early_monitor.reset();
    }
  } reap_early{&ctx};
  app.add_option("--root", ctx.root, "Where berth keeps images and containers")->capture_default_str();
  const char* env_runroot = std::getenv("BERTH_RUNROOT");
  ctx.runroot = env_runroot && *env_runroot ? env_runroot : "/run/berth";
  app.add_option("--runroot", ctx.runroot, "Where berth keeps state that a reboot clears")->capture_default_str();
  if (const char* env_opts = std::getenv("BERTH_STORAGE_OPT"); env_opts && *env_opts)
    ctx.storage_opts.push_back(env_opts);
  app.add_option("--storage-opt", ctx.storage_opts, "Storage option for layers this command adds (layer-format=erofs|dir)")
      ->take_all();
  if (const char* env_cg = std::getenv("BERTH_CGROUP_MANAGER"); env_cg && *env_cg) {
    ctx.cgroup_manager = env_cg;
    if (ctx.cgroup_manager != "cgroupfs" && ctx.cgroup_manager != "systemd") {
      std::fprintf(stderr, "berth: $BERTH_CGROUP_MANAGER \"%s\": expected cgroupfs or systemd\n", env_cg);
      return 125;
    }
  }
  app.add_option("--cgroup-manager", ctx.cgroup_manager, "Cgroup driver of the containers this command makes")
      ->check(CLI::IsMember({"cgroupfs", "systemd"}))
      ->capture_default_str();
  app.add_flag("-D,--debug", ctx.debug, "Debug output");
  app.add_option("--config", ctx.config, "Location of client config files (default $DOCKER_CONFIG or ~/.docker)");
  int groups = groups_for(ctx.verb);
  ctx.one_verb = groups != kAll && !(ctx.verb == "container" && ctx.subverb.empty());
  if (groups & kImages) add_image_commands(app, ctx);
  if (groups & kTransfer) add_transfer_commands(app, ctx);
  if (groups & kRegistry) add_registry_commands(app, ctx);
  if (groups & kSystem) add_system_commands(app, ctx);
  if (groups & kContainers) add_container_commands(app, ctx);
  if (groups & kCopy) add_copy_commands(app, ctx);
  if (groups & kVolumes) add_volume_commands(app, ctx);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "berth: %s\nSee 'berth --help'.\n", e.what());
    return 125;  // docker's status for its own usage errors
  } catch (const TemplateError& e) {
    std::fprintf(stderr, "berth: template: %s\n", e.what());
    return 1;
  } catch (const RunInFull&) {
    reap_early.ctx = nullptr;
    ctx.early_monitor.reset();
    delete &ctx;  // (berth-full opens the store afresh)
    return kRunInFull;
  } catch (const Failure& f) {
    // An empty error is a status to pass on (the container's exit code).
    if (f.error.err || !f.error.msg.empty()) std::fprintf(stderr, "berth: %s\n", f.error.str().c_str());
    return f.status;
  }
  std::fflush(stdout);
  return ctx.exit_status;
}

}  // namespace
}  // namespace berth::cli

namespace {

// A command touches a few hundred KB of heap (CLI11's options, SQLite's page
// cache, JSON documents): the heap grows 512 KiB at a time and is never
// trimmed, so a few brk calls in all. (It was also faulted in at once with
// MADV_POPULATE_WRITE; a fault costs ~1.5 us here, and populating the whole
// pad cost more than the ~60 faults it saved.)
// (The static berth has an allocator of its own, lite_alloc.cc, and links
// none of glibc's.)
void tune_heap() {
#ifndef BERTH_LITE
  constexpr size_t kPad = 512 << 10;
  ::mallopt(M_TOP_PAD, kPad);
  ::mallopt(M_TRIM_THRESHOLD, 2 * kPad);
#endif
}

}  // namespace

int main(int argc, char** argv) {
#ifdef BERTH_LITE
  if (berth::cli::full_only(berth::cli::command_line(argc, argv))) berth::cli::exec_full(argv);
#else
  // (Exec'd by berth: what it runs from here, monitors and their exit
  // commands included, may exec berth-full again.)
  ::unsetenv("BERTH_FULL_EXEC");
#endif
  tune_heap();
  int status = berth::cli::run(argc, argv);
#ifdef BERTH_LITE
  // Everything this process made is undone (the early monitor, the store
  // closed): berth-full runs the command from the start.
  if (status == berth::cli::kRunInFull) berth::cli::exec_full(argv);
#endif
  // Removed containers' files, and a checkpoint of the store's log if one
  // is due (image/db.h), off the caller's path.
  berth::empty_trash_detached();
  berth::image::Db::checkpoint_detached();
  // And the unmapping of this 10 MB binary (~0.3 ms): after our caller has
  // our exit status.
  berth::exit_deferring_unmap(status);
}
