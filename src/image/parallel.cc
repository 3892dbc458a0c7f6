#include "image/parallel.h"

#include <algorithm>
#include <atomic>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

namespace berth::image {

Result<> parallel_for(size_t n, unsigned threads, const std::function<Result<>(size_t)>& fn) {
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex mu;
  std::optional<Error> first;
  auto work = [&] {
    for (size_t i; !failed && (i = next++) < n;) {
      auto r = fn(i);
      if (!r) {
        std::lock_guard g(mu);
        if (!first) first = r.error();
        failed = true;
      }
    }
  };
  size_t extra = n ? std::min<size_t>(n, std::max(1u, threads)) - 1 : 0;
  std::vector<std::thread> pool;
  for (size_t t = 0; t < extra; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  if (first) return std::unexpected(*first);
  return {};
}

}  // namespace berth::image
