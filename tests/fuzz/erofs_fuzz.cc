// libFuzzer target for berth's EROFS writer (issue 6): any bytes, taken as a
// layer tar, either fail to index with an error or give a metadata image that
// the in-process reader (erofs_check) accepts: every inode, directory entry,
// xattr and chunk in bounds and consistent, no chunk beyond the tar. A writer
// output the checker refuses, or a crash, is a finding.
//
// Built with clang (tests/fuzz/CMakeLists.txt) and run for a fixed count by
// ctest from a seed corpus of tars made by tests/fuzz/seeds.py.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "image/erofs.h"

namespace {

int memfd_with(const uint8_t* data, size_t size) {
  int fd = ::memfd_create("tar", MFD_CLOEXEC);
  if (fd < 0) std::abort();
  size_t off = 0;
  while (off < size) {
    ssize_t n = ::write(fd, data + off, size - off);
    if (n <= 0) std::abort();
    off += static_cast<size_t>(n);
  }
  return fd;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  int tar = memfd_with(data, size);
  int meta = ::memfd_create("meta", MFD_CLOEXEC);
  if (meta < 0) std::abort();
  // Small chunks now and then, so multi-chunk files are exercised too.
  berth::image::ErofsOptions o;
  o.what = "fuzz";
  o.max_chunk_bits = size % 3 == 0 ? 1 : 31;
  auto st = berth::image::erofs_write(tar, meta, o);
  if (st) {
    auto ok = berth::image::erofs_check("/proc/self/fd/" + std::to_string(meta), size);
    if (!ok) {
      std::fprintf(stderr, "erofs_check refused what erofs_write made: %s\n", ok.error().str().c_str());
      std::abort();
    }
  }
  ::close(tar);
  ::close(meta);
  return 0;
}
