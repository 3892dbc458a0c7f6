// Runs independent jobs (layer downloads, layer unpacks) on a few threads.
#pragma once

#include <cstddef>
#include <functional>

#include "util/error.h"

namespace berth::image {

// Runs fn(i) for every i in [0, n) on up to `threads` threads (the caller's
// among them). After the first failure no new job starts; that error is
// returned once the running ones end.
Result<> parallel_for(size_t n, unsigned threads, const std::function<Result<>(size_t)>& fn);

}  // namespace berth::image
