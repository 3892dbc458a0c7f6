// A libarchive read source over a regular file, read with pread from a start
// offset (the fd's own offset is left alone) and skipped by seeking, so a tar
// reader that skips entries' data never reads it.
#pragma once

#include <archive.h>

#include <cstdint>
#include <optional>
#include <string>

#include "util/error.h"

namespace berth::image {

struct PreadSource {
  int fd = -1;
  uint64_t start = 0;  // where the tar begins in the file
  uint64_t size = 0;   // the file's size
  uint64_t pos = 0;    // absolute offset of the next read
  std::string buf;
  std::optional<Error> error;  // what a failed read met
};

// Points `a` (not yet opened) at `src`, which must outlive it; src.pos starts at src.start.
void set_pread_source(struct archive* a, PreadSource& src);

// Where the data of the entry whose header was just read begins in the file:
// the reader has consumed that header and nothing of the data.
uint64_t entry_data_offset(struct archive* a, const PreadSource& src);

}  // namespace berth::image
