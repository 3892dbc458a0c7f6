#include "image/content_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <utility>

#include "util/fs.h"

namespace berth::image {

namespace {

Result<> fsync_dir(const std::string& dir) {
  UniqueFd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!d) return sys_error("open " + dir);
  if (::fsync(d.get()) < 0) return sys_error("fsync " + dir);
  return {};
}

std::string blob_path(const std::string& root, const Digest& d) { return root + "/" + d.algorithm + "/" + d.hex; }

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

std::string ContentStore::path(const Digest& d) const { return blob_path(root_, d); }

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

ContentStore::Writer::Writer(std::string root, std::string tmp, UniqueFd fd, std::optional<Digest> expect,
                             std::optional<uint64_t> size, std::string what)
    : root_(std::move(root)), tmp_(std::move(tmp)), fd_(std::move(fd)), expect_(std::move(expect)), size_(size),
      what_(std::move(what)), hash_(std::make_unique<Sha256>()) {}

ContentStore::Writer::Writer(Writer&& o) noexcept
    : root_(std::move(o.root_)), tmp_(std::exchange(o.tmp_, {})), fd_(std::move(o.fd_)), expect_(std::move(o.expect_)),
      size_(o.size_), what_(std::move(o.what_)), hash_(std::move(o.hash_)), written_(o.written_) {}

ContentStore::Writer::~Writer() {
  if (!tmp_.empty()) ::unlink(tmp_.c_str());
}

Result<> ContentStore::Writer::write(std::string_view data) {
  if (tmp_.empty()) return fail(what_ + ": write after commit");
  if (size_ && written_ + data.size() > *size_)
    return fail(what_ + ": more data than the " + std::to_string(*size_) + " bytes announced");
  hash_->update(data);
  written_ += data.size();
  TRY_CTX(write_fd(fd_.get(), data), what_);
  return {};
}

Result<> ContentStore::Writer::restart() {
  if (::ftruncate(fd_.get(), 0) < 0 || ::lseek(fd_.get(), 0, SEEK_SET) < 0) return sys_error(what_ + ": truncate " + tmp_);
  hash_ = std::make_unique<Sha256>();
  written_ = 0;
  return {};
}

Result<Digest> ContentStore::Writer::commit() {
  if (tmp_.empty()) return fail(what_ + ": committed twice");
  if (size_ && written_ != *size_)
    return fail(what_ + ": " + std::to_string(written_) + " bytes, " + std::to_string(*size_) + " announced (truncated?)");
  Digest got = hash_->finish();
  if (expect_ && !(got == *expect_))
    return fail(what_ + ": digest mismatch: expected " + expect_->str() + ", got " + got.str());
  if (::fsync(fd_.get()) < 0) return sys_error(what_ + ": fsync");
  if (::rename(tmp_.c_str(), blob_path(root_, got).c_str()) < 0) return sys_error(what_ + ": commit blob " + got.str());
  tmp_.clear();
  TRY(fsync_dir(root_ + "/sha256"));
  return got;
}

Result<ContentStore::Writer> ContentStore::writer(const std::optional<Digest>& expect, std::optional<uint64_t> size,
                                                  const std::string& what) {
  std::string dir = root_ + "/ingest", tmp = dir + "/" + random_name();
  // The lock, held until the blob is committed or removed, marks the file
  // as live: it is taken before the file has a name, or another berth's
  // open() could find it unlocked in between and remove it (ContentStore::open).
  UniqueFd out(::open(dir.c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600));
  if (out) {
    ::flock(out.get(), LOCK_EX);
    std::string self = "/proc/self/fd/" + std::to_string(out.get());
    if (::linkat(AT_FDCWD, self.c_str(), AT_FDCWD, tmp.c_str(), AT_SYMLINK_FOLLOW) < 0)
      return sys_error(what + ": create " + tmp);
  } else {
    // A filesystem without O_TMPFILE: named first, as close to its lock as can be.
    out.reset(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!out) return sys_error(what + ": create " + tmp);
    ::flock(out.get(), LOCK_EX);
  }
  return Writer(root_, std::move(tmp), std::move(out), expect, size, what);
}

Result<Digest> ContentStore::ingest(int fd, const std::optional<Digest>& expect, std::optional<uint64_t> size,
                                    const std::string& what) {
  Writer w = TRY(writer(expect, size, what));
  std::string buf(1 << 20, '\0');
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return sys_error(what + ": read");
    }
    if (n == 0) return w.commit();
    TRY(w.write(std::string_view(buf.data(), static_cast<size_t>(n))));
  }
}

Result<Digest> ContentStore::ingest_range(int fd, uint64_t offset, uint64_t size, const std::optional<Digest>& expect,
                                          const std::string& what) {
  Writer w = TRY(writer(expect, size, what));
  TRY(w.copy_range(fd, offset, size));
  return w.commit();
}

Result<> ContentStore::Writer::copy_range(int src, uint64_t offset, uint64_t size) {
  constexpr size_t kBuf = 1 << 20, kBlock = 4096;
  if (tmp_.empty() || written_ != 0) return fail(what_ + ": copy into a used writer");
  if (size_ && size != *size_) return fail(what_ + ": " + std::to_string(size) + " bytes, " + std::to_string(*size_) + " announced");
  // Page-aligned, as O_DIRECT wants.
  void* mem = ::mmap(nullptr, kBuf, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (mem == MAP_FAILED) return sys_error(what_ + ": copy buffer");
  struct Unmap {
    void* p;
    ~Unmap() { ::munmap(p, kBuf); }
  } unmap{mem};
  char* buf = static_cast<char*>(mem);
  // Written around the page cache where the filesystem allows: a large blob
  // is read back rarely (save, push), and copying it into fresh page-cache
  // pages costs more CPU here than the write (a synth load's blob: 0.5 s).
  int flags = ::fcntl(fd_.get(), F_GETFL);
  bool direct = size >= kBuf && flags >= 0 && ::fcntl(fd_.get(), F_SETFL, flags | O_DIRECT) == 0;
  for (uint64_t done = 0; done < size;) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(kBuf, size - done)), got = 0;
    while (got < want) {  // whole chunks: every write but the last starts block-aligned
      ssize_t n = ::pread(src, buf + got, want - got, static_cast<off_t>(offset + done + got));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return sys_error(what_ + ": read");
      if (n == 0) return fail(what_ + ": truncated (" + std::to_string(done + got) + " of " + std::to_string(size) + " bytes)");
      got += static_cast<size_t>(n);
    }
    hash_->update(std::string_view(buf, got));
    size_t len = got;
    if (direct && len % kBlock) {  // the last chunk, padded; cut back below
      std::memset(buf + len, 0, kBlock - len % kBlock);
      len += kBlock - len % kBlock;
    }
    for (size_t at = 0; at < len;) {
      ssize_t n = ::pwrite(fd_.get(), buf + at, len - at, static_cast<off_t>(done + at));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && direct && errno == EINVAL && at == 0) {
        // This filesystem takes no direct writes after all: the page cache.
        direct = false;
        (void)::fcntl(fd_.get(), F_SETFL, flags);
        len = got;
        continue;
      }
      if (n < 0) return sys_error(what_ + ": write " + tmp_);
      at += static_cast<size_t>(n);
    }
    done += got;
    written_ = done;
  }
  if (direct) {
    (void)::fcntl(fd_.get(), F_SETFL, flags);
    if (::ftruncate(fd_.get(), static_cast<off_t>(size)) < 0) return sys_error(what_ + ": truncate " + tmp_);
  }
  return {};
}

Result<Digest> ContentStore::put(std::string_view data, const std::optional<Digest>& expect, const std::string& what) {
  Writer w = TRY(writer(expect, data.size(), what));
  TRY(w.write(data));
  return w.commit();
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
