#include "image/template.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "image/layer_writer.h"
#include "util/fs.h"

namespace berth::image {

namespace {

constexpr const char* kPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// Runs argv (fixed programs, no shell) and returns its stdout.
Result<std::string> capture(const std::vector<std::string>& argv) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return sys_error("pipe");
  pid_t pid = ::fork();
  if (pid < 0) return sys_error("fork");
  if (pid == 0) {
    ::dup2(p[1], 1);
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    _exit(127);
  }
  ::close(p[1]);
  UniqueFd r(p[0]);
  auto out = read_fd(r.get());
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  if (!out) return std::unexpected(std::move(out).error());
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) return fail(argv[0] + ": failed (status " + std::to_string(st) + ")");
  return out;
}

Result<ImageRecord> store_image(ImageStore& store, const LayerBlob& layer, const std::string& config,
                                const std::string& created_by, int64_t created, const Reference& name) {
  ContentStore& cs = store.content();
  std::string cfg = make_config(config, {layer.diff_id}, {created_by}, rfc3339(created));
  Descriptor cd{std::string(media::kOciConfig), TRY(cs.put(cfg, std::nullopt, "image config")), cfg.size()};
  std::string manifest = make_manifest(cd, {layer.descriptor});
  Digest md = TRY(cs.put(manifest, std::nullopt, "manifest"));
  return store.commit(md, {name});
}

Result<ImageRecord> busybox(ImageStore& store, const Reference& name, const TemplateOptions& o) {
  UniqueFd bb(::open(o.busybox.c_str(), O_RDONLY | O_CLOEXEC));
  if (!bb) return sys_error("busybox template: " + o.busybox + " (install busybox-static)");
  struct stat st {};
  if (::fstat(bb.get(), &st) != 0) return sys_error("stat " + o.busybox);
  // Both runs of busybox before the operation starts: a child forked while an
  // operation's marker is locked holds that lock until it execs, and a repair
  // running then (the parent killed) would take the operation for a live one.
  std::string applets = TRY_CTX(capture({o.busybox, "--list-full"}), "busybox template");
  std::string version = TRY(capture({o.busybox})).substr(0, 64);
  auto op = TRY(store.begin_op());
  auto w = TRY(LayerWriter::create(store.content(), "busybox template layer"));
  // Every entry carries the binary's mtime: the same binary makes the same layer.
  EntryMeta dir{0755, 0, 0, st.st_mtime}, file{0644, 0, 0, st.st_mtime};
  for (const char* d : {"bin", "dev", "etc", "home", "proc", "root", "sbin", "sys", "tmp", "usr", "usr/bin",
                        "usr/sbin", "var", "var/tmp", "var/log"}) {
    EntryMeta m = dir;
    if (std::string_view(d) == "tmp" || std::string_view(d) == "var/tmp") m.mode = 01777;
    if (std::string_view(d) == "root") m.mode = 0700;
    TRY(w->dir(d, m));
  }
  TRY(w->file_from_fd("bin/busybox", bb.get(), static_cast<uint64_t>(st.st_size), EntryMeta{0755, 0, 0, st.st_mtime}));
  for (auto& line : split(applets, '\n')) {
    if (line.empty() || line == "bin/busybox" || line.find("..") != std::string::npos) continue;
    TRY(w->symlink(line, "/bin/busybox", file));
  }
  TRY(w->file("etc/passwd",
               "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n", file));
  TRY(w->file("etc/group", "root:x:0:\nnogroup:x:65534:\n", file));
  TRY(w->file("etc/hostname", "busybox\n", file));
  // As distribution images have them: an engine mounts its own over these,
  // and where the image has none it must first make one in the container's
  // layer (copying /etc up; three new files per start).
  TRY(w->file("etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n", file));
  TRY(w->file("etc/resolv.conf", "", file));
  LayerBlob layer = TRY(w->finish());
  nlohmann::json config = {{"Env", {kPath}}, {"Cmd", {"sh"}}};
  auto nl = version.find('\n');
  if (nl != std::string::npos) version.resize(nl);
  return store_image(store, layer, config.dump(), "berth image create busybox (" + version + ")", st.st_mtime, name);
}

Result<ImageRecord> debian(ImageStore& store, const Reference& name, const TemplateOptions& o) {
  if (::access("/usr/sbin/debootstrap", X_OK) != 0) return fail("debian template: debootstrap is not installed");
  auto op = TRY(store.begin_op());
  std::string tmp = store.root() + "/layers/.tmp-debootstrap-" + std::to_string(::getpid());
  TRY(mkdir_p(tmp, 0755));
  struct Remove {
    std::string p;
    ~Remove() {
      detach_mounts_beneath(p);  // debootstrap's /proc and /sys, should it die first
      (void)remove_tree(p);
    }
  } cleanup{tmp};
  std::vector<std::string> argv = {"/usr/sbin/debootstrap", "--variant=minbase", o.suite, tmp + "/rootfs"};
  if (!o.mirror.empty()) argv.push_back(o.mirror);
  TRY_CTX(capture(argv), "debian template (debootstrap " + o.suite + ")");
  // What debootstrap leaves that an image should not carry.
  (void)remove_tree(tmp + "/rootfs/var/cache/apt/archives");
  (void)remove_tree(tmp + "/rootfs/var/lib/apt/lists");
  (void)remove_tree(tmp + "/rootfs/debootstrap");
  auto w = TRY(LayerWriter::create(store.content(), "debian template layer"));
  TRY(w->tree(tmp + "/rootfs"));
  LayerBlob layer = TRY(w->finish());
  nlohmann::json config = {{"Env", {kPath}}, {"Cmd", {"bash"}}};
  return store_image(store, layer, config.dump(), "berth image create debian --suite " + o.suite,
                     ::time(nullptr), name);
}

}  // namespace

bool is_template(std::string_view n) { return n == "busybox" || n == "debian"; }

Result<ImageRecord> create_from_template(ImageStore& store, std::string_view t, const Reference& name,
                                         const TemplateOptions& o) {
  if (t == "busybox") return busybox(store, name, o);
  if (t == "debian") return debian(store, name, o);
  return fail("unknown image template \"" + std::string(t) + "\" (there are: busybox, debian)");
}

}  // namespace berth::image
