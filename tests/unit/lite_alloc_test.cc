// The static berth's allocator (cli/berth/lite_alloc.cc) is this program's
// malloc: what it hands out is usable, aligned, kept apart, and reused.
#include <malloc.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace {

TEST(LiteAlloc, BlocksOfEverySizeAreDistinctAlignedAndKeepTheirContents) {
  std::vector<std::pair<unsigned char*, size_t>> blocks;
  for (size_t n : {0, 1, 15, 16, 17, 100, 511, 512, 513, 1000, 4096, 65535, 65536, 65537, 1 << 20}) {
    auto* p = static_cast<unsigned char*>(std::malloc(n));
    ASSERT_NE(p, nullptr) << n;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 16, 0u) << n;
    EXPECT_GE(malloc_usable_size(p), n);
    std::memset(p, static_cast<int>(n & 0xff), n);
    blocks.emplace_back(p, n);
  }
  for (auto& [p, n] : blocks) {
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(p[i], static_cast<unsigned char>(n & 0xff)) << n;
    std::free(p);
  }
}

TEST(LiteAlloc, IsThisProgramsMalloc) {
  // Its classes are multiples of 16 (glibc's would give 24 here).
  void* p = std::malloc(17);
  EXPECT_EQ(malloc_usable_size(p), 32u);
  std::free(p);
}

TEST(LiteAlloc, FreedBlocksAreReused) {
  void* a = std::malloc(40);
  std::free(a);
  void* b = std::malloc(33);  // the same class (48)
  EXPECT_EQ(a, b);
  std::free(b);
}

TEST(LiteAlloc, ReallocCallocAndAlignedBlocks) {
  char* p = static_cast<char*>(std::malloc(10));
  std::memcpy(p, "0123456789", 10);
  p = static_cast<char*>(std::realloc(p, 100000));
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(std::string(p, 10), "0123456789");
  p = static_cast<char*>(std::realloc(p, 5));
  EXPECT_EQ(std::string(p, 5), "01234");
  std::free(p);
  auto* z = static_cast<unsigned char*>(std::calloc(1000, 3));
  for (size_t i = 0; i < 3000; ++i) ASSERT_EQ(z[i], 0);
  std::free(z);
  EXPECT_EQ(std::calloc(SIZE_MAX / 2, 4), nullptr);
  for (size_t align : {32, 64, 4096, 65536}) {
    void* q = nullptr;
    ASSERT_EQ(posix_memalign(&q, align, 100), 0);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(q) % align, 0u);
    EXPECT_GE(malloc_usable_size(q), 100u);
    std::memset(q, 1, 100);
    std::free(q);
    void* r = aligned_alloc(align, align * 2);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(r) % align, 0u);
    std::free(r);
  }
  void* bad = nullptr;
  EXPECT_EQ(posix_memalign(&bad, 24, 10), EINVAL);
}

TEST(LiteAlloc, ThreadsAndForkDoNotCorruptIt) {
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([] {
      std::vector<std::string> v;
      for (int i = 0; i < 20000; ++i) {
        v.emplace_back(static_cast<size_t>(i % 700 + 20), 'x');
        if (v.size() > 50) v.erase(v.begin());
      }
    });
  for (int i = 0; i < 20; ++i) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      std::string s(5000, 'y');
      void* p = std::malloc(123);
      std::free(p);
      ::_exit(s.size() == 5000 ? 0 : 1);
    }
    int ws = 0;
    ASSERT_EQ(::waitpid(pid, &ws, 0), pid);
    EXPECT_TRUE(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
  }
  for (auto& t : ts) t.join();
}

}  // namespace
