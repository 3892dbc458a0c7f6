#include "image/tar_source.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace berth::image {
namespace {

la_ssize_t pread_read(struct archive* a, void* data, const void** out) {
  auto* s = static_cast<PreadSource*>(data);
  s->buf.resize(64 * 1024);
  for (;;) {
    ssize_t n = ::pread(s->fd, s->buf.data(), s->buf.size(), static_cast<off_t>(s->pos));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      s->error = Error{errno, "read tar"};
      archive_set_error(a, errno, "read tar");
      return ARCHIVE_FATAL;
    }
    s->pos += static_cast<uint64_t>(n);
    *out = s->buf.data();
    return n;
  }
}

la_int64_t pread_skip(struct archive*, void* data, la_int64_t request) {
  auto* s = static_cast<PreadSource*>(data);
  uint64_t n = std::min<uint64_t>(static_cast<uint64_t>(request), s->size - std::min(s->pos, s->size));
  s->pos += n;
  return static_cast<la_int64_t>(n);
}

}  // namespace

void set_pread_source(struct archive* a, PreadSource& src) {
  src.pos = src.start;
  archive_read_set_callback_data(a, &src);
  archive_read_set_read_callback(a, pread_read);
  archive_read_set_skip_callback(a, pread_skip);
}

uint64_t entry_data_offset(struct archive* a, const PreadSource& src) {
  return src.start + static_cast<uint64_t>(archive_filter_bytes(a, 0));
}

}  // namespace berth::image
