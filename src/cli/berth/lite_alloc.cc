// The static berth's memory allocator, in place of glibc's malloc.
//
// A `run` makes ~5,800 allocations (CLI11's option tree, SQLite preparing
// its statements, the JSON of the create body and the spec), nearly all of
// them in a process a few milliseconds old: glibc's malloc then goes to its
// slow path for most (its per-thread cache is empty), and that was ~0.3 ms
// of every `run` here (a bump allocator that never frees, tried in an A/B:
// 0.27 ms faster). This one keeps free lists of blocks by size class and
// carves new blocks from 1 MiB regions in order; it never coalesces, which
// suits a command that lives a moment (a long one, `logs -f`, reuses its
// classes' blocks). Blocks of over 64 KiB are mappings of their own.
//
// Every block has a 16-byte header before it: its class, or for a mapping
// its length, or for an over-aligned block the offset back to the block it
// was cut from. One lock serializes it (the CLI is one thread but for a
// moment or two); fork takes it first, so a child never inherits it held.
// Only berth (the static CLI) links it: berth-full, which pulls and unpacks
// on many threads, keeps glibc's.
#include <pthread.h>
#include <sys/mman.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace {

constexpr size_t kHeader = 16;
constexpr size_t kSmallStep = 16;
constexpr size_t kSmallMax = 512;                         // classes of 16, 32, ... 512
constexpr size_t kSmallClasses = kSmallMax / kSmallStep;  // 32
constexpr size_t kLargeMax = 64 << 10;                    // then 1, 2, ... 64 KiB
constexpr size_t kClasses = kSmallClasses + 7;
constexpr size_t kRegion = 1 << 20;
// Header tags beyond the classes.
constexpr uint64_t kMapped = 1ull << 62;   // | the mapping's length
constexpr uint64_t kAligned = 1ull << 61;  // | the offset to the real block

struct Header {
  uint64_t tag;
  uint64_t spare;
};

struct FreeBlock {
  FreeBlock* next;
};

FreeBlock* free_lists[kClasses];
char* cursor = nullptr;
char* region_end = nullptr;
std::atomic_flag busy = ATOMIC_FLAG_INIT;

struct Guard {
  Guard() {
    while (busy.test_and_set(std::memory_order_acquire)) {
    }
  }
  ~Guard() { busy.clear(std::memory_order_release); }
};

size_t class_of(size_t n) {
  if (n <= kSmallMax) return n == 0 ? 0 : (n - 1) / kSmallStep;
  size_t c = kSmallClasses, size = 1024;
  while (size < n) size <<= 1, ++c;
  return c;
}

size_t class_size(size_t c) { return c < kSmallClasses ? (c + 1) * kSmallStep : size_t(1024) << (c - kSmallClasses); }

Header* header_of(void* p) { return reinterpret_cast<Header*>(static_cast<char*>(p) - kHeader); }

void* map_block(size_t n) {
  size_t len = (n + kHeader + 4095) & ~size_t(4095);
  void* m = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) {
    errno = ENOMEM;
    return nullptr;
  }
  auto* h = static_cast<Header*>(m);
  h->tag = kMapped | len;
  return static_cast<char*>(m) + kHeader;
}

// Under the lock.
void* carve(size_t c) {
  size_t need = kHeader + class_size(c);
  if (!cursor || static_cast<size_t>(region_end - cursor) < need) {
    // What is left of the region goes to waste (at most a block's size).
    void* m = ::mmap(nullptr, kRegion, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) {
      errno = ENOMEM;
      return nullptr;
    }
    cursor = static_cast<char*>(m);
    region_end = cursor + kRegion;
  }
  auto* h = reinterpret_cast<Header*>(cursor);
  h->tag = c;
  void* p = cursor + kHeader;
  cursor += need;
  return p;
}

void* allocate(size_t n) {
  if (n > kLargeMax) return map_block(n);
  size_t c = class_of(n);
  Guard g;
  if (FreeBlock* b = free_lists[c]) {
    free_lists[c] = b->next;
    return b;
  }
  return carve(c);
}

size_t usable(void* p) {
  Header* h = header_of(p);
  if (h->tag & kMapped) return (h->tag & ~kMapped) - kHeader;
  if (h->tag & kAligned) {
    char* base = static_cast<char*>(p) - (h->tag & ~kAligned);
    return usable(base) - (static_cast<char*>(p) - base);
  }
  return class_size(h->tag);
}

void release(void* p) {
  Header* h = header_of(p);
  if (h->tag & kMapped) {
    ::munmap(h, h->tag & ~kMapped);
    return;
  }
  if (h->tag & kAligned) return release(static_cast<char*>(p) - (h->tag & ~kAligned));
  Guard g;
  auto* b = static_cast<FreeBlock*>(p);
  b->next = free_lists[h->tag];
  free_lists[h->tag] = b;
}

void* allocate_aligned(size_t align, size_t n) {
  if (align <= kHeader) return allocate(n);
  if (align & (align - 1)) {
    errno = EINVAL;
    return nullptr;
  }
  // Cut from a block big enough for the alignment and a header in front.
  char* base = static_cast<char*>(allocate(n + align + kHeader));
  if (!base) return nullptr;
  auto at = reinterpret_cast<uintptr_t>(base + kHeader);
  auto* p = reinterpret_cast<char*>((at + align - 1) & ~(uintptr_t(align) - 1));
  header_of(p)->tag = kAligned | static_cast<uint64_t>(p - base);
  return p;
}

void lock_for_fork() {
  while (busy.test_and_set(std::memory_order_acquire)) {
  }
}
void unlock_after_fork() { busy.clear(std::memory_order_release); }

// Registered before main: fork() holds the lock across the copy.
[[gnu::constructor]] void register_fork_handlers() {
  ::pthread_atfork(lock_for_fork, unlock_after_fork, unlock_after_fork);
}

}  // namespace

extern "C" {

void* malloc(size_t n) { return allocate(n); }

void free(void* p) {
  if (p) release(p);
}

void* calloc(size_t count, size_t size) {
  size_t n;
  if (__builtin_mul_overflow(count, size, &n)) {
    errno = ENOMEM;
    return nullptr;
  }
  void* p = allocate(n);
  if (p) std::memset(p, 0, n);
  return p;
}

void* realloc(void* p, size_t n) {
  if (!p) return allocate(n);
  if (n == 0) {
    release(p);
    return nullptr;
  }
  size_t have = usable(p);
  if (n <= have && !(header_of(p)->tag & (kMapped | kAligned))) return p;
  void* q = allocate(n);
  if (!q) return nullptr;
  std::memcpy(q, p, have < n ? have : n);
  release(p);
  return q;
}

void* memalign(size_t align, size_t n) { return allocate_aligned(align, n); }
void* aligned_alloc(size_t align, size_t n) { return allocate_aligned(align, n); }
int posix_memalign(void** out, size_t align, size_t n) {
  if (align < sizeof(void*) || (align & (align - 1))) return EINVAL;
  void* p = allocate_aligned(align, n);
  if (!p) return ENOMEM;
  *out = p;
  return 0;
}
void* valloc(size_t n) { return allocate_aligned(4096, n); }
void* pvalloc(size_t n) { return allocate_aligned(4096, (n + 4095) & ~size_t(4095)); }
size_t malloc_usable_size(void* p) { return p ? usable(p) : 0; }

}  // extern "C"
