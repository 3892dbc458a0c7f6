// Registry verbs: pull, push, login, logout (Docker's output).
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "cli/berth/cli.h"
#include "cli/berth/progress.h"
#include "image/pull.h"
#include "image/registry.h"

namespace berth::cli {

namespace {

bool fs_is_dir(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

struct RegistryFlags {
  std::string tls_verify = "true";  // podman's --tls-verify
  std::string cert_dir;             // podman's --cert-dir: <dir>/*.crt trusted for this registry
  std::string platform;
};

image::PullOptions options(const Context& ctx, const RegistryFlags& f, const std::string& domain) {
  image::PullOptions o;
  o.registry.auth_file = ctx.config_dir() + "/config.json";
  if (f.tls_verify == "false") o.registry.insecure.push_back(domain);
  else if (f.tls_verify != "true") die("--tls-verify: expected true or false, not \"" + f.tls_verify + "\"");
  if (!f.platform.empty()) o.platform = check(image::Platform::parse(f.platform));
  if (!f.cert_dir.empty()) {
    // certs.d's layout is <dir>/<host[:port]>/*.crt; --cert-dir names the inner directory.
    if (!fs_is_dir(f.cert_dir)) die("--cert-dir " + f.cert_dir + ": not a directory");
    o.registry.extra_ca_dir = f.cert_dir;
  }
  return o;
}

void pull(Context& ctx, const std::string& name, const RegistryFlags& f, bool quiet) {
  auto ref = check(image::Reference::parse(name));
  auto o = options(ctx, f, ref.domain);
  if (!quiet) {
    if (ref.digest) std::printf("%s: Pulling from %s\n", ref.digest->str().c_str(), ref.path.c_str());
    else std::printf("%s: Pulling from %s\n", ref.tag.c_str(), ref.path.c_str());
    std::fflush(stdout);
  }
  LayerProgress progress(stdout);
  image::TransferFn events;
  if (!quiet) events = [&progress](const image::TransferEvent& e) { progress(e); };
  auto r = check(image::pull(*check(ctx.store()), ref, o, events));
  if (!quiet) {
    std::printf("Digest: %s\n", r.digest.str().c_str());
    std::printf("Status: %s for %s\n", r.updated ? "Downloaded newer image" : "Image is up to date",
                ref.familiar().c_str());
  }
  std::printf("%s\n", ref.str().c_str());
}

void push(Context& ctx, const std::string& name, const RegistryFlags& f, bool quiet) {
  auto ref = check(image::Reference::parse(name));
  auto img = check(ctx.image(name));
  auto o = options(ctx, f, ref.domain);
  if (!quiet) std::printf("The push refers to repository [%s]\n", ref.repository().c_str());
  std::fflush(stdout);
  LayerProgress progress(stdout);
  image::TransferFn events;
  if (!quiet) events = [&progress](const image::TransferEvent& e) { progress(e); };
  auto r = check(image::push(*check(ctx.store()), img, ref, o, events));
  std::printf("%s: digest: %s size: %llu\n", ref.tag.empty() ? ref.digest->str().c_str() : ref.tag.c_str(),
              r.digest.str().c_str(), static_cast<unsigned long long>(r.size));
}

std::string prompt(const char* what, bool secret) {
  std::fprintf(stderr, "%s: ", what);
  termios old {};
  bool tty = ::isatty(0) && secret && ::tcgetattr(0, &old) == 0;
  if (tty) {
    termios quiet = old;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    ::tcsetattr(0, TCSANOW, &quiet);
  }
  std::string line;
  std::getline(std::cin, line);
  if (tty) {
    ::tcsetattr(0, TCSANOW, &old);
    std::fprintf(stderr, "\n");
  }
  return line;
}

std::string server_domain(const std::string& server) {
  if (server.empty()) return "docker.io";
  std::string s = server;
  for (auto* p : {"https://", "http://"})
    if (s.starts_with(p)) s.erase(0, std::string(p).size());
  if (auto slash = s.find('/'); slash != std::string::npos) s.resize(slash);
  if (s == "index.docker.io" || s == "registry-1.docker.io") s = "docker.io";
  return s;
}

void login(Context& ctx, const std::string& server, std::string user, std::string password, bool password_stdin,
           const RegistryFlags& f) {
  std::string domain = server_domain(server);
  if (password_stdin) {
    if (!password.empty()) die("--password and --password-stdin are mutually exclusive");
    if (user.empty()) die("must provide --username with --password-stdin");
    std::getline(std::cin, password);
    while (!password.empty() && (password.back() == '\n' || password.back() == '\r')) password.pop_back();
  }
  if (!password.empty() && !password_stdin)
    std::fprintf(stderr, "WARNING! Using --password via the CLI is insecure. Use --password-stdin.\n");
  if (user.empty()) user = prompt("Username", false);
  if (password.empty()) password = prompt("Password", true);
  if (user.empty()) die("login: username is empty");
  auto o = options(ctx, f, domain);
  check(image::login(domain, user, password, o.registry));
  std::printf("Login Succeeded\n");
}

void logout(Context& ctx, const std::string& server) {
  std::string domain = server_domain(server);
  image::RegistryOptions o;
  o.auth_file = ctx.config_dir() + "/config.json";
  check(image::logout(domain, o));
  std::printf("Removing login credentials for %s\n", domain.c_str());
}

void add_registry_flags(CLI::App& c, RegistryFlags& f, bool platform) {
  c.add_option("--tls-verify", f.tls_verify, "Require HTTPS and verify certificates (true|false)")
      ->expected(0, 1)
      ->default_str("true");
  c.add_option("--cert-dir", f.cert_dir, "Trust the certificates (*.crt) in this directory for the registry");
  if (platform) c.add_option("--platform", f.platform, "Pull this platform (os/arch[/variant])");
}

}  // namespace

void add_registry_commands(CLI::App& app, Context& ctx) {
  auto* image = app.get_subcommand("image");
  for (CLI::App* parent : {&app, image}) {
    auto* p = parent->add_subcommand("pull", "Download an image from a registry");
    struct O {
      std::string name;
      RegistryFlags f;
      bool quiet = false;
    };
    auto po = std::make_shared<O>();
    p->add_flag("-q,--quiet", po->quiet, "Suppress verbose output");
    add_registry_flags(*p, po->f, true);
    p->add_option("NAME[:TAG|@DIGEST]", po->name, "Image")->required();
    p->callback([&ctx, po] { pull(ctx, po->name, po->f, po->quiet); });

    auto* s = parent->add_subcommand("push", "Upload an image to a registry");
    auto so = std::make_shared<O>();
    s->add_flag("-q,--quiet", so->quiet, "Suppress verbose output");
    add_registry_flags(*s, so->f, false);
    s->add_option("NAME[:TAG]", so->name, "Image")->required();
    s->callback([&ctx, so] { push(ctx, so->name, so->f, so->quiet); });
  }
  auto* l = app.add_subcommand("login", "Log in to a registry");
  struct L {
    std::string server, user, password;
    bool password_stdin = false;
    RegistryFlags f;
  };
  auto lo = std::make_shared<L>();
  l->add_option("-u,--username", lo->user, "Username");
  l->add_option("-p,--password", lo->password, "Password");
  l->add_flag("--password-stdin", lo->password_stdin, "Take the password from stdin");
  add_registry_flags(*l, lo->f, false);
  l->add_option("SERVER", lo->server, "Registry (default docker.io)");
  l->callback([&ctx, lo] { login(ctx, lo->server, lo->user, lo->password, lo->password_stdin, lo->f); });

  auto* out = app.add_subcommand("logout", "Log out from a registry");
  auto server = std::make_shared<std::string>();
  out->add_option("SERVER", *server, "Registry (default docker.io)");
  out->callback([&ctx, server] { logout(ctx, *server); });
}

}  // namespace berth::cli
