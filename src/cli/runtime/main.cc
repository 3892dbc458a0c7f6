// berth-runtime: an OCI runtime with runc's command line.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <map>

#include "cli/runtime/commands.h"
#include "cli/runtime/flags.h"
#include "oci/spec.h"
#include "runtime/container.h"
#include "runtime/sealed.h"
#include "runtime/state.h"
#include "util/fs.h"
#include "util/log.h"

#ifndef BERTH_VERSION
#define BERTH_VERSION "0.0.0"
#endif
#ifndef BERTH_COMMIT
#define BERTH_COMMIT "unknown"
#endif

extern char** environ;

namespace berth::cli {
namespace {

using runtime::Globals;

struct Command {
  const char* name;
  const char* usage;
  const char* summary;
  std::function<Result<int>(const Globals&, const std::vector<std::string>&, size_t)> run;
};

Result<std::string> one_id(const std::vector<std::string>& args, size_t pos, const char* cmd) {
  if (pos >= args.size()) return fail(std::string(cmd) + ": requires a container id");
  if (pos + 1 != args.size()) return fail(std::string(cmd) + ": takes exactly one container id");
  return args[pos];
}

std::vector<Flag> create_flags(runtime::CreateOptions& o) {
  return {string_flag({"bundle", "b"}, &o.bundle, "path to the root of the bundle directory"),
          string_flag({"console-socket"}, &o.console_socket, "unix socket to receive the pty master"),
          string_flag({"pidfd-socket"}, &o.pidfd_socket, "unix socket to receive a pidfd of the container"),
          string_flag({"pid-file"}, &o.pid_file, "file to write the container's pid to"),
          bool_flag({"no-pivot"}, &o.no_pivot, "do not use pivot_root (for ramfs roots)"),
          bool_flag({"no-new-keyring"}, &o.no_new_keyring, "do not create a new session keyring"),
          int_flag({"preserve-fds"}, &o.preserve_fds, "pass N extra fds (from 3) to the container")};
}

Result<int> cmd_create(const Globals& g, const std::vector<std::string>& args, size_t pos) {
  runtime::CreateOptions o;
  auto flags = create_flags(o);
  pos = TRY(parse_flags(args, pos, flags, "create"));
  o.id = TRY(one_id(args, pos, "create"));
  TRY(runtime::create(g, o));
  return 0;
}

Result<int> cmd_run(const Globals& g, const std::vector<std::string>& args, size_t pos) {
  runtime::CreateOptions o;
  bool detach = false, keep = false;
  auto flags = create_flags(o);
  flags.push_back(bool_flag({"detach", "d"}, &detach, "detach from the container's process"));
  flags.push_back(bool_flag({"keep"}, &keep, "do not delete the container after it exits"));
  pos = TRY(parse_flags(args, pos, flags, "run"));
  o.id = TRY(one_id(args, pos, "run"));
  if (detach && keep) return fail("run: --detach and --keep can't be used together");
  return runtime::run(g, o, detach, keep);
}

Result<int> cmd_start(const Globals& g, const std::vector<std::string>& args, size_t pos) {
  pos = TRY(parse_flags(args, pos, {}, "start"));
  TRY(runtime::start(g, TRY(one_id(args, pos, "start"))));
  return 0;
}

Result<int> cmd_state(const Globals& g, const std::vector<std::string>& args, size_t pos) {
  pos = TRY(parse_flags(args, pos, {}, "state"));
  std::string js = TRY(runtime::state(g, TRY(one_id(args, pos, "state"))));
  std::printf("%s\n", js.c_str());
  return 0;
}

Result<int> cmd_kill(const Globals& g, const std::vector<std::string>& args, size_t pos) {
  bool all = false;
  pos = TRY(parse_flags(args, pos, {bool_flag({"all", "a"}, &all, "send the signal to every process of the container")}, "kill"));
  if (pos >= args.size()) return fail("kill: requires a container id");
  if (pos + 2 < args.size()) return fail("kill: takes a container id and an optional signal");
  int sig = 15;
  if (pos + 1 < args.size()) sig = TRY(runtime::parse_signal(args[pos + 1]));
  TRY(runtime::kill(g, args[pos], sig, all));
  return 0;
}

Result<int> cmd_delete(const Globals& g, const std::vector<std::string>& args, size_t pos) {
  bool force = false;
  pos = TRY(parse_flags(args, pos, {bool_flag({"force", "f"}, &force, "kill the container first if it runs")}, "delete"));
  TRY(runtime::remove(g, TRY(one_id(args, pos, "delete")), force));
  return 0;
}

Result<int> cmd_pause(const Globals& g, const std::vector<std::string>& args, size_t pos) {
  pos = TRY(parse_flags(args, pos, {}, "pause"));
  TRY(runtime::pause(g, TRY(one_id(args, pos, "pause"))));
  return 0;
}

Result<int> cmd_resume(const Globals& g, const std::vector<std::string>& args, size_t pos) {
  pos = TRY(parse_flags(args, pos, {}, "resume"));
  TRY(runtime::resume(g, TRY(one_id(args, pos, "resume"))));
  return 0;
}

std::string json_str(std::string_view s) {
  std::string out = "\"";
  log::json_escape(out, s);
  return out + "\"";
}

Result<int> cmd_list(const Globals& g, const std::vector<std::string>& args, size_t pos) {
  std::string format = "table";
  bool quiet = false;
  pos = TRY(parse_flags(args, pos,
                        {string_flag({"format", "f"}, &format, "table or json"),
                         bool_flag({"quiet", "q"}, &quiet, "print only the ids")},
                        "list"));
  if (pos != args.size()) return fail("list: takes no arguments");
  if (format != "table" && format != "json") return fail("list: --format must be table or json, not \"" + format + "\"");
  auto entries = TRY(runtime::list(g));
  if (quiet) {
    for (auto& e : entries) std::printf("%s\n", e.id.c_str());
    return 0;
  }
  if (format == "json") {
    std::string out = "[";
    for (size_t i = 0; i < entries.size(); ++i) {
      auto& e = entries[i];
      if (i) out += ",";
      out += "{\"ociVersion\":\"1.3.0\",\"id\":" + json_str(e.id) + ",\"pid\":" + std::to_string(e.pid) +
             ",\"status\":" + json_str(e.status) + ",\"bundle\":" + json_str(e.bundle) +
             ",\"rootfs\":" + json_str(join_path(e.bundle, "rootfs")) + ",\"created\":" + json_str(e.created) +
             ",\"owner\":" + json_str(e.owner) + "}";
    }
    out += "]";
    std::printf("%s\n", entries.empty() ? "null" : out.c_str());
    return 0;
  }
  // Columns padded like Go's tabwriter (minwidth 12, padding 1), as runc prints them.
  std::vector<std::array<std::string, 6>> rows = {{"ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"}};
  for (auto& e : entries) rows.push_back({e.id, std::to_string(e.pid), e.status, e.bundle, e.created, e.owner});
  size_t w[6] = {};
  for (auto& r : rows)
    for (int i = 0; i < 6; ++i) w[i] = std::max({w[i], r[i].size() + 1, size_t{12}});
  for (auto& r : rows) {
    std::string line;
    for (int i = 0; i < 6; ++i) {
      line += r[i];
      if (i < 5) line.append(w[i] - r[i].size(), ' ');
    }
    std::printf("%s\n", line.c_str());
  }
  return 0;
}

Result<int> cmd_ps(const Globals& g, const std::vector<std::string>& args, size_t pos) {
  std::string format = "table";
  pos = TRY(parse_flags(args, pos, {string_flag({"format", "f"}, &format, "table or json")}, "ps"));
  if (pos >= args.size()) return fail("ps: requires a container id");
  if (format != "table" && format != "json") return fail("ps: --format must be table or json, not \"" + format + "\"");
  auto pids = TRY(runtime::pids(g, args[pos]));
  if (format == "json") {
    std::string out = "[";
    for (size_t i = 0; i < pids.size(); ++i) out += (i ? "," : "") + std::to_string(pids[i]);
    std::printf("%s]\n", out.c_str());
    return 0;
  }
  // Table: the host's ps with the caller's options (default -ef), filtered to
  // the container's processes by the PID column, as runc does.
  std::string cmd = "ps";
  if (pos + 1 == args.size()) cmd += " -ef";
  for (size_t i = pos + 1; i < args.size(); ++i) {
    for (char c : args[i])
      if (!std::isalnum(static_cast<unsigned char>(c)) && !std::strchr("-,=_:", c))
        return fail("ps: unsupported character in ps option \"" + args[i] + "\"");
    cmd += " " + args[i];
  }
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return sys_error("run ps");
  std::string all;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) all.append(buf, n);
  if (::pclose(p) != 0) return fail("ps " + cmd.substr(3) + " failed");
  auto lines = split(all, '\n');
  if (lines.empty()) return 0;
  auto header = split(lines[0], ' ');
  int pid_col = -1, col = 0;
  for (auto& h : header) {
    if (h.empty()) continue;
    if (h == "PID") pid_col = col;
    ++col;
  }
  if (pid_col < 0) return fail("ps: no PID column in the output of \"" + cmd + "\"");
  std::printf("%s\n", lines[0].c_str());
  for (size_t i = 1; i < lines.size(); ++i) {
    int c = 0;
    for (auto& f : split(lines[i], ' ')) {
      if (f.empty()) continue;
      if (c++ == pid_col) {
        pid_t v = static_cast<pid_t>(std::atoi(f.c_str()));
        for (pid_t q : pids)
          if (q == v) std::printf("%s\n", lines[i].c_str());
        break;
      }
    }
  }
  return 0;
}

Result<int> cmd_exec(const Globals& g, const std::vector<std::string>& args, size_t pos) {
  runtime::ExecOptions o;
  std::string cgroup_unused;
  std::vector<Flag> flags = {
      string_flag({"console-socket"}, &o.console_socket, "unix socket to receive the pty master"),
      string_flag({"pidfd-socket"}, &o.pidfd_socket, "unix socket to receive a pidfd of the process"),
      string_flag({"cwd"}, &o.cwd, "working directory in the container"),
      list_flag({"env", "e"}, &o.env, "set an environment variable"),
      bool_flag({"tty", "t"}, &o.tty, "allocate a pseudo-TTY"),
      string_flag({"user", "u"}, &o.user, "UID[:GID]"),
      list_flag({"additional-gids", "g"}, &o.additional_gids, "additional gids"),
      string_flag({"process", "p"}, &o.process_file, "path to a process.json"),
      bool_flag({"detach", "d"}, &o.detach, "detach from the process"),
      string_flag({"pid-file"}, &o.pid_file, "file to write the process id to"),
      string_flag({"process-label"}, &o.process_label, "SELinux label of the process"),
      string_flag({"apparmor"}, &o.apparmor, "AppArmor profile of the process"),
      bool_flag({"no-new-privs"}, &o.no_new_privs, "set no_new_privs"),
      list_flag({"cap", "c"}, &o.caps, "add a capability"),
      int_flag({"preserve-fds"}, &o.preserve_fds, "pass N extra fds (from 3) to the process"),
      string_flag({"cgroup"}, &cgroup_unused, "sub-cgroup to run in"),
      bool_flag({"ignore-paused"}, &o.ignore_paused, "exec even if the container is paused")};
  pos = TRY(parse_flags(args, pos, flags, "exec"));
  if (pos >= args.size()) return fail("exec: requires a container id");
  o.id = args[pos];
  o.args.assign(args.begin() + static_cast<long>(pos) + 1, args.end());
  if (!o.process_file.empty() && !o.args.empty()) return fail("exec: give either -p FILE or a command, not both");
  if (!cgroup_unused.empty()) return fail("exec: --cgroup is not supported yet");
  return runtime::exec(g, o);
}

Result<int> cmd_spec(const Globals& g, const std::vector<std::string>& args, size_t pos) {
  std::string bundle = ".";
  bool rootless = g.rootless;
  pos = TRY(parse_flags(args, pos,
                        {string_flag({"bundle", "b"}, &bundle, "where to write config.json"),
                         bool_flag({"rootless"}, &rootless, "a spec for a rootless container")},
                        "spec"));
  if (pos != args.size()) return fail("spec: takes no arguments");
  std::string path = join_path(bundle, "config.json");
  if (path_exists(path)) return fail("spec: " + path + " already exists");
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return sys_error("spec: create " + path);
  UniqueFd f(fd);
  TRY(write_fd(fd, oci::default_spec_json(rootless)));
  return 0;
}

Result<int> cmd_features(const Globals&, const std::vector<std::string>& args, size_t pos) {
  pos = TRY(parse_flags(args, pos, {}, "features"));
  std::printf("%s\n", runtime::features_json().c_str());
  return 0;
}

const std::vector<Command>& commands() {
  static const std::vector<Command> c = {
      {"create", "create [options] <container-id>", "create a container", cmd_create},
      {"start", "start <container-id>", "start a created container", cmd_start},
      {"run", "run [options] <container-id>", "create and start a container", cmd_run},
      {"state", "state <container-id>", "output the state of a container", cmd_state},
      {"list", "list [options]", "list containers", cmd_list},
      {"kill", "kill [options] <container-id> [signal]", "send a signal to the container's init", cmd_kill},
      {"delete", "delete [options] <container-id>", "delete a container", cmd_delete},
      {"exec", "exec [options] <container-id> <command> [args...]", "run a process in a container", cmd_exec},
      {"ps", "ps [options] <container-id> [ps options]", "list the processes of a container", cmd_ps},
      {"pause", "pause <container-id>", "freeze every process of a container", cmd_pause},
      {"resume", "resume <container-id>", "thaw a paused container", cmd_resume},
      {"spec", "spec [options]", "write a default config.json", cmd_spec},
      {"features", "features", "show what this runtime supports", cmd_features},
      {"events", "events [options] <container-id>", "show container events and statistics", cmd_events},
      {"update", "update [options] <container-id>", "update container resource limits", cmd_update},
  };
  return c;
}

void print_help() {
  std::printf(
      "NAME:\n   berth-runtime - an OCI runtime with runc's command line\n\n"
      "USAGE:\n   berth-runtime [global options] command [command options] [arguments...]\n\nCOMMANDS:\n");
  for (auto& c : commands()) std::printf("   %-10s %s\n", c.name, c.summary);
  std::printf(
      "\nGLOBAL OPTIONS:\n"
      "   --root value          state directory (default: \"/run/berth-runtime\")\n"
      "   --log value           log file (default: stderr)\n"
      "   --log-format value    text or json (default: \"text\")\n"
      "   --debug               enable debug logging\n"
      "   --systemd-cgroup      use the systemd cgroup driver\n"
      "   --rootless value      true, false or auto (default: \"auto\")\n"
      "   --help, -h            show help\n"
      "   --version, -v         print the version\n");
}

int real_main(int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);
  Globals g;
  std::string log_path, log_format = "text", rootless = "auto", criu;
  bool debug = false, help = false, version = false;
  std::vector<Flag> globals = {
      string_flag({"root"}, &g.root, ""),
      string_flag({"log"}, &log_path, ""),
      string_flag({"log-format"}, &log_format, ""),
      bool_flag({"debug"}, &debug, ""),
      bool_flag({"systemd-cgroup"}, &g.systemd_cgroup, ""),
      string_flag({"rootless"}, &rootless, ""),
      string_flag({"criu"}, &criu, ""),
      bool_flag({"help", "h"}, &help, ""),
      bool_flag({"version", "v"}, &version, ""),
  };
  auto pos = parse_flags(args, 1, globals, "");
  auto report = [&](const Error& e) {
    std::string m = e.str();
    if (!log_path.empty()) log::error(m);
    std::fprintf(stderr, "berth-runtime: %s\n", m.c_str());
    return 1;
  };
  if (!pos) return report(pos.error());
  if (log_format != "text" && log_format != "json")
    return report(Error{0, "--log-format: must be text or json, not \"" + log_format + "\""});
  if (!log::init(log_path, log_format == "json" ? log::Format::json : log::Format::text, debug))
    return report(Error{errno, "--log " + log_path});
  if (rootless == "true")
    g.rootless = true;
  else if (rootless == "auto")
    g.rootless = ::geteuid() != 0;
  else if (rootless != "false")
    return report(Error{0, "--rootless: must be true, false or auto, not \"" + rootless + "\""});
  if (!g.root.empty() && g.root[0] != '/') {
    char cwd[4096];
    if (::getcwd(cwd, sizeof cwd)) g.root = clean_path(join_path(cwd, g.root));
  }
  // Compiled seccomp programs are kept between containers, in the state root
  // (Docker's default profile took 9 ms to compile on every create and exec).
  // `list` skips it: its name starts with a dot, and no container may take it.
  if (!g.root.empty()) g.seccomp_cache = g.root + "/" + std::string(runtime::kSeccompCacheDir);
  if (version) {
    std::printf("berth-runtime version %s\ncommit: %s\nspec: %s\n", BERTH_VERSION, BERTH_COMMIT, oci::kSpecVersion);
    return 0;
  }
  if (help || *pos >= args.size()) {
    print_help();
    return help ? 0 : 1;
  }
  const std::string& name = args[*pos];
  if (name == "help") {
    print_help();
    return 0;
  }
  for (auto& c : commands()) {
    if (name != c.name) continue;
    for (size_t i = *pos + 1; i < args.size() && args[i] != "--"; ++i) {
      if (args[i] == "--help" || args[i] == "-h") {
        std::printf("USAGE:\n   berth-runtime %s\n\n%s\n", c.usage, c.summary);
        return 0;
      }
      if (args[i].empty() || args[i][0] != '-') break;
    }
    if (name == "exec") runtime::reexec_sealed(argv, "berth-runtime");
    auto r = c.run(g, args, *pos + 1);
    if (!r) return report(r.error());
    return *r;
  }
  return report(Error{0, "unknown command \"" + name + "\" (see berth-runtime --help)"});
}

}  // namespace
}  // namespace berth::cli

int main(int argc, char** argv) { return berth::cli::real_main(argc, argv); }
