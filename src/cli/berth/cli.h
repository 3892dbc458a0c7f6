// Shared pieces of the `berth` command line: the global options, the lazily
// opened store, and the verbs' registration functions (one file per group of
// verbs, as Docker groups them). CLI11 stays out of this header: each verb file
// includes it itself.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "image/store.h"
#include "util/error.h"
#include "util/fd.h"

namespace CLI {
class App;
}
namespace berth::engine {
class Engine;
class EarlyMonitor;
}

namespace berth::cli {

struct Context {
  Context();
  ~Context();
  std::string root;  // --root, $BERTH_ROOT, /var/lib/berth
  bool debug = false;
  // --cgroup-manager, $BERTH_CGROUP_MANAGER: "cgroupfs" (the default) or "systemd".
  std::string cgroup_manager = "cgroupfs";
  std::string config;  // --config: where config.json (credentials) lives
  // --config, else $DOCKER_CONFIG, else ~/.docker: Docker's client config dir.
  std::string config_dir() const;
  // The first two words of the command line that are not global options
  // ("container", "ls"): the verb being run.
  std::string verb, subverb;
  // The whole command line (argv[1..]): a verb with a hundred options builds
  // only those it names (see wanted_flags in containers.cc).
  std::vector<std::string_view> args;
  // The container verbs other than the one being run are left out of CLI11
  // (each empty subcommand still cost some 20 us): true when a known verb
  // names the command, false for help, a bare `container` and typos.
  bool one_verb = false;
  // The status a verb passes on without an error of its own (a foreground
  // container's exit code), set by its callback: returned, not thrown (a
  // throw unwinds through a large binary's tables on every `run`).
  int exit_status = 0;
  std::string runroot; // --runroot, $BERTH_RUNROOT, /run/berth: state that a reboot clears
  // --storage-opt (repeatable) and $BERTH_STORAGE_OPT: "layer-format=erofs|dir".
  std::vector<std::string> storage_opts;
  // Opened on first use, so `berth --help` and `berth version` touch nothing.
  Result<image::ImageStore*> store();
  // An image by name or ID; a missing "busybox" or "debian" (with the tag
  // latest) is made from its template first, so berth works offline at once.
  Result<image::ImageRecord> image(std::string_view name);
  // The static berth hands the whole command to berth-full (throws
  // RunInFull) when image `name` must first be made from its template;
  // berth-full, which makes it, goes on.
  void here_or_in_full(std::string_view name);
  Result<engine::Engine*> engine();
  // berth-monitor beside us (or in ../libexec/berth), without opening anything.
  std::string monitor_exe() const;
  // A container's inspect document, if `name` is a container (set by the
  // container verbs; the top-level `inspect` asks it before the images).
  std::function<std::optional<std::string>(const std::string&)> inspect_container;
  // A volume's, for a name that is neither a container nor an image (Docker's order).
  std::function<std::optional<std::string>(const std::string&)> inspect_volume;
  // `run`'s monitor, spawned by main before the command line is parsed (it
  // loads meanwhile), for the container early_id in early_dir, with our end of its
  // starting client's socket: taken by `run` (containers.cc's EarlyStart).
  std::unique_ptr<engine::EarlyMonitor> early_monitor;
  std::string early_id, early_dir;
  UniqueFd early_attach;

 private:
  std::optional<std::pair<std::string, image::ImageRecord>> resolved_;  // here_or_in_full's
  std::unique_ptr<image::ImageStore> store_;
  std::unique_ptr<engine::Engine> engine_;
};

// The verb's failure: printed as one line by main, exit status 1.
struct Failure {
  Error error;
  int status = 1;
};

// Thrown by the static `berth` (BERTH_LITE) when a command turns out to need
// what only berth-full has (an image to make from its template): run() returns
// kRunInFull once everything the command made is undone, and main execs
// berth-full with the same command line.
struct RunInFull {};
constexpr int kRunInFull = 1 << 16;

// Throws Failure on error; the verbs are callbacks that cannot return one.
template <class T>
T check(Result<T> r) {
  if (!r) throw Failure{std::move(r).error()};
  if constexpr (!std::is_void_v<T>) return std::move(r).value();
}
[[noreturn]] inline void die(std::string msg, int status = 1) { throw Failure{Error{0, std::move(msg)}, status}; }

void add_image_commands(CLI::App& app, Context& ctx);
void add_system_commands(CLI::App& app, Context& ctx);
// After add_image_commands (adds to its `image` group too).
void add_transfer_commands(CLI::App& app, Context& ctx);
void add_registry_commands(CLI::App& app, Context& ctx);
void add_container_commands(CLI::App& app, Context& ctx);
void add_copy_commands(CLI::App& app, Context& ctx);  // after add_container_commands: cp, diff, export
void add_volume_commands(CLI::App& app, Context& ctx);

}  // namespace berth::cli
