// Moving images in and out: save, load, import (docker's forms).
#include <fcntl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>

#include "cli/berth/cli.h"
#include "image/archive.h"
#include "util/fs.h"

namespace berth::cli {

namespace {

void save(Context& ctx, const std::vector<std::string>& names, const std::string& output, const std::string& fmt) {
  auto format = check(image::parse_archive_format(fmt));
  std::vector<image::SaveItem> items;
  for (auto& n : names) {
    image::SaveItem item{check(ctx.image(n)), {}};
    // Saved by name: that name goes in the archive; by ID: every tag the image has (as docker save does).
    auto ref = image::Reference::parse(n);
    bool by_name = false;
    if (ref && !ref->digest)
      for (auto& t : item.image.tags)
        if (t.str() == ref->str()) by_name = true;
    if (by_name) item.names.push_back(*ref);
    else item.names = item.image.tags;
    items.push_back(std::move(item));
  }
  if (output.empty() || output == "-") {
    if (::isatty(1)) die("cowardly refusing to save to a terminal. Use the -o flag or redirect");
    check(image::save_images(*check(ctx.store()), items, format, 1));
    return;
  }
  // Written beside the target and renamed: a failed save leaves no partial file.
  std::string tmp = output + ".berth-tmp-" + std::to_string(::getpid());
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (!fd) throw Failure{Error{errno, "save: " + output}};
  auto r = image::save_images(*check(ctx.store()), items, format, fd.get());
  if (r && ::fsync(fd.get()) != 0) r = sys_error("save: fsync " + output);
  if (r && ::rename(tmp.c_str(), output.c_str()) != 0) r = sys_error("save: rename to " + output);
  if (!r) ::unlink(tmp.c_str());
  check(std::move(r));
}

void load(Context& ctx, const std::string& input, bool quiet, const std::string& platform) {
  UniqueFd owned;
  int fd = 0;
  if (!input.empty() && input != "-") {
    owned = UniqueFd(::open(input.c_str(), O_RDONLY | O_CLOEXEC));
    if (!owned) throw Failure{Error{errno, "load: " + input}};
    fd = owned.get();
  } else if (::isatty(0)) {
    die("requested load from stdin, but stdin is a terminal (use -i FILE or redirect)");
  }
  auto p = platform.empty() ? image::Platform::host() : check(image::Platform::parse(platform));
  image::UnpackProgressFn progress;
  if (!quiet)
    progress = [](const image::LayerProgress& lp) {
      if (lp.phase == "done")
        std::fprintf(stderr, "%s: Loading layer %zu/%zu\n", lp.blob.hex.substr(0, 12).c_str(), lp.index + 1, lp.count);
    };
  auto loaded = check(image::load_images(*check(ctx.store()), fd, p, progress));
  if (loaded.empty()) die("load: " + (input.empty() ? std::string("stdin") : input) + ": the archive holds no image");
  for (auto& l : loaded) {
    if (l.names.empty()) std::printf("Loaded image ID: %s\n", l.image.id.str().c_str());
    for (auto& n : l.names) std::printf("Loaded image: %s\n", n.familiar().c_str());
  }
}

void import(Context& ctx, const std::string& source, const std::string& name, const std::vector<std::string>& changes,
            const std::string& message) {
  image::ImportOptions o;
  o.changes = changes;
  o.message = message;
  if (!name.empty()) o.name = check(image::Reference::parse(name));
  UniqueFd owned;
  int fd = 0;
  if (source != "-") {
    if (source.starts_with("http://") || source.starts_with("https://"))
      die("import: " + source + ": importing from a URL is not supported; download it and give the file");
    owned = UniqueFd(::open(source.c_str(), O_RDONLY | O_CLOEXEC));
    if (!owned) throw Failure{Error{errno, "import: " + source}};
    fd = owned.get();
  }
  auto img = check(image::import_rootfs(*check(ctx.store()), fd, o));
  std::printf("%s\n", img.id.str().c_str());
}

}  // namespace

void add_transfer_commands(CLI::App& app, Context& ctx) {
  auto* image = app.get_subcommand("image");
  for (CLI::App* parent : {&app, image}) {
    auto* s = parent->add_subcommand("save", "Save one or more images to a tar archive (streamed to STDOUT by default)");
    struct SaveO {
      std::vector<std::string> names;
      std::string output, format = "docker-archive";
    };
    auto so = std::make_shared<SaveO>();
    s->add_option("-o,--output", so->output, "Write to a file, instead of STDOUT");
    s->add_option("--format", so->format, "docker-archive or oci-archive")->capture_default_str();
    s->add_option("IMAGE", so->names, "Images")->required();
    s->callback([&ctx, so] { save(ctx, so->names, so->output, so->format); });

    auto* l = parent->add_subcommand("load", "Load images from a tar archive or STDIN");
    struct LoadO {
      std::string input, platform;
      bool quiet = false;
    };
    auto lo = std::make_shared<LoadO>();
    l->add_option("-i,--input", lo->input, "Read from tar archive file, instead of STDIN");
    l->add_flag("-q,--quiet", lo->quiet, "Suppress the load output");
    l->add_option("--platform", lo->platform, "Platform to load from a multi-platform archive");
    l->callback([&ctx, lo] { load(ctx, lo->input, lo->quiet, lo->platform); });

    auto* im = parent->add_subcommand("import", "Import the contents from a tarball to create a filesystem image");
    struct ImportO {
      std::string source, name, message;
      std::vector<std::string> changes;
    };
    auto io = std::make_shared<ImportO>();
    im->add_option("-c,--change", io->changes, "Apply Dockerfile instruction to the created image")
        ->allow_extra_args(false);
    im->add_option("-m,--message", io->message, "Set commit message for imported image");
    im->add_option("file", io->source, "A tarball (plain, gzip or zstd), or - for STDIN")->required();
    im->add_option("REPOSITORY[:TAG]", io->name, "Name the image");
    im->callback([&ctx, io] { import(ctx, io->source, io->name, io->changes, io->message); });
  }
}

}  // namespace berth::cli
