#include "image/content_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <random>

#include "util/fs.h"

namespace berth::image {

namespace {

Result<> fsync_dir(const std::string& dir) {
  UniqueFd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!d) return sys_error("open " + dir);
  if (::fsync(d.get()) < 0) return sys_error("fsync " + dir);
  return {};
}

std::string random_name() {
  static thread_local std::mt19937_64 rng(std::random_device{}() ^ static_cast<uint64_t>(::getpid()));
  char buf[32];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(rng()));
  return buf;
}

}  // namespace

Result<ContentStore> ContentStore::open(const std::string& root) {
  std::string content = root + "/content";
  TRY(mkdir_p(content + "/sha256", 0700));
  TRY(mkdir_p(content + "/ingest", 0700));
  // Ingest files no live writer holds are what a killed writer left.
  if (DIR* d = ::opendir((content + "/ingest").c_str())) {
    while (auto* e = ::readdir(d)) {
      if (e->d_name[0] == '.') continue;
      std::string p = content + "/ingest/" + e->d_name;
      UniqueFd f(::open(p.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
      if (f && ::flock(f.get(), LOCK_EX | LOCK_NB) == 0) ::unlink(p.c_str());
    }
    ::closedir(d);
  }
  return ContentStore(content);
}

std::string ContentStore::path(const Digest& d) const { return root_ + "/" + d.algorithm + "/" + d.hex; }

bool ContentStore::has(const Digest& d) const { return path_exists(path(d)); }

Result<uint64_t> ContentStore::size(const Digest& d) const {
  struct stat st;
  if (::stat(path(d).c_str(), &st) < 0) return sys_error("blob " + d.str());
  return static_cast<uint64_t>(st.st_size);
}

Result<UniqueFd> ContentStore::open_blob(const Digest& d) const {
  UniqueFd fd(::open(path(d).c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return sys_error("blob " + d.str());
  return fd;
}

Result<std::string> ContentStore::read(const Digest& d, uint64_t max) const {
  uint64_t n = TRY(size(d));
  if (n > max) return fail("blob " + d.str() + ": " + std::to_string(n) + " bytes, more than the " + std::to_string(max) + " allowed");
  UniqueFd fd = TRY(open_blob(d));
  return read_fd(fd.get());
}

template <class Fill>
Result<Digest> ContentStore::ingest_with(const std::optional<Digest>& expect, std::optional<uint64_t> size,
                                         const std::string& what, Fill&& fill) {
  std::string tmp = root_ + "/ingest/" + random_name();
  UniqueFd out(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!out) return sys_error(what + ": create " + tmp);
  // Held until the blob is committed or removed: marks the file as live.
  ::flock(out.get(), LOCK_EX);
  auto r = [&]() -> Result<Digest> {
    Sha256 h;
    uint64_t total = 0;
    auto sink = [&](const char* p, size_t n) -> Result<> {
      if (size && total + n > *size)
        return fail(what + ": more data than the " + std::to_string(*size) + " bytes announced");
      h.update(p, n);
      total += n;
      TRY_CTX(write_fd(out.get(), std::string_view(p, n)), what);
      return {};
    };
    TRY(fill(sink));
    if (size && total != *size)
      return fail(what + ": " + std::to_string(total) + " bytes, " + std::to_string(*size) + " announced (truncated?)");
    Digest got = h.finish();
    if (expect && !(got == *expect))
      return fail(what + ": digest mismatch: expected " + expect->str() + ", got " + got.str());
    if (::fsync(out.get()) < 0) return sys_error(what + ": fsync");
    if (::rename(tmp.c_str(), path(got).c_str()) < 0) return sys_error(what + ": commit blob " + got.str());
    TRY(fsync_dir(root_ + "/sha256"));
    return got;
  }();
  if (!r) ::unlink(tmp.c_str());
  return r;
}

Result<Digest> ContentStore::ingest(int fd, const std::optional<Digest>& expect, std::optional<uint64_t> size,
                                    const std::string& what) {
  return ingest_with(expect, size, what, [&](auto& sink) -> Result<> {
    std::string buf(1 << 20, '\0');
    for (;;) {
      ssize_t n = ::read(fd, buf.data(), buf.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        return sys_error(what + ": read");
      }
      if (n == 0) return {};
      TRY(sink(buf.data(), static_cast<size_t>(n)));
    }
  });
}

Result<Digest> ContentStore::put(std::string_view data, const std::optional<Digest>& expect, const std::string& what) {
  return ingest_with(expect, data.size(), what,
                     [&](auto& sink) -> Result<> { return sink(data.data(), data.size()); });
}

Result<> ContentStore::remove(const Digest& d) {
  if (::unlink(path(d).c_str()) < 0 && errno != ENOENT) return sys_error("remove blob " + d.str());
  return {};
}

Result<std::vector<Digest>> ContentStore::list() const {
  std::vector<Digest> out;
  DIR* d = ::opendir((root_ + "/sha256").c_str());
  if (!d) return sys_error("open " + root_ + "/sha256");
  while (auto* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    // Anything that is not a well-formed digest is not ours: skip it.
    if (auto dg = Digest::parse(std::string("sha256:") + e->d_name)) out.push_back(*dg);
  }
  ::closedir(d);
  return out;
}

}  // namespace berth::image
