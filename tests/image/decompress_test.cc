// The decompressor and its read-ahead thread: gzip (several members, zero
// padding), zstd and plain streams come out byte for byte as gzip(1) and
// zstd(1) made them, through read() and through the Prefetcher's ring; a
// corrupt stream's error reaches the consumer; a consumer that stops early
// does not hang the producer.
#include "image/decompress.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <random>
#include <string>

#include "util/fd.h"
#include "util/fs.h"

namespace berth::image {
namespace {

class DecompressTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/berth-decompress-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    // 9 MiB that compresses a little: more than the ring holds, not a whole number of chunks.
    std::mt19937 rng(3);
    data_.resize((9 << 20) + 12345);
    for (auto& c : data_) c = static_cast<char>('a' + rng() % 7);
    ASSERT_TRUE(atomic_write_file(dir_ + "/data", data_));
  }
  void TearDown() override { (void)remove_tree(dir_); }

  // `cmd` run on the data file (e.g. "gzip -c"), its output's path.
  std::string compress(const std::string& cmd, const std::string& name) {
    std::string out = dir_ + "/" + name;
    std::string line = cmd + " < " + dir_ + "/data > " + out;
    EXPECT_EQ(std::system(line.c_str()), 0) << line;
    return out;
  }
  static Result<std::string> through_prefetcher(const std::string& path, size_t stop_after = SIZE_MAX) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    Decompressor d(fd.get(), {.what = path, .hash = false});
    TRY(d.init());
    std::string out;
    Prefetcher ahead(d);
    while (out.size() < stop_after) {
      std::string_view c = TRY(ahead.next());
      if (c.empty()) break;
      out.append(c);
    }
    return out;
  }
  static Result<std::string> through_read(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    Decompressor d(fd.get(), {.what = path});
    TRY(d.init());
    std::string out;
    for (;;) {
      std::string_view c = TRY(d.read());
      if (c.empty()) break;
      out.append(c);
    }
    if (!(d.finish() == sha256_of(out))) return fail("the hash does not cover what came out");
    return out;
  }

  std::string dir_, data_;
};

TEST_F(DecompressTest, EveryKindComesOutWhole) {
  std::string gz = compress("gzip -1 -c", "one.gz");
  // Two members and the zero padding bsdtar writes after the last.
  std::string multi = dir_ + "/multi.gz";
  std::string line = "(head -c 5000000 " + dir_ + "/data | gzip -c; tail -c +5000001 " + dir_ + "/data | gzip -c; "
                     "head -c 1000 /dev/zero) > " + multi;
  ASSERT_EQ(std::system(line.c_str()), 0);
  std::string zst = compress("zstd -q -c", "one.zst");
  for (const std::string& p : {gz, multi, zst, dir_ + "/data"}) {
    auto a = through_prefetcher(p);
    ASSERT_TRUE(a) << p << ": " << a.error().str();
    EXPECT_TRUE(*a == data_) << p << ": " << a->size() << " bytes, want " << data_.size();
    auto b = through_read(p);
    ASSERT_TRUE(b) << p << ": " << b.error().str();
    EXPECT_TRUE(*b == data_) << p;
  }
}

// A stream that is a byte range of a file (a blob inside an archive): read
// with pread from its offset, never past its end, the fd's offset untouched.
TEST_F(DecompressTest, AByteRangeOfAFile) {
  std::string gz = *read_file(compress("gzip -1 -c", "range.gz"));
  std::string head(1000, 'H'), tail(5000, 'T');
  for (const auto& [name, body] : {std::pair<std::string, std::string>{"gzip", gz}, {"plain", data_}}) {
    std::string path = dir_ + "/range-" + name;
    ASSERT_TRUE(atomic_write_file(path, head + body + tail));
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    Decompressor d(fd.get(), {.what = path, .hash = false, .offset = head.size(), .length = body.size()});
    ASSERT_TRUE(d.init());
    std::string out;
    {
      Prefetcher ahead(d);
      for (;;) {
        auto c = ahead.next();
        ASSERT_TRUE(c) << name << ": " << c.error().str();
        if (c->empty()) break;
        out.append(*c);
      }
    }
    EXPECT_TRUE(out == data_) << name << ": " << out.size() << " bytes, want " << data_.size();
    EXPECT_EQ(d.compressed(), body.size()) << name;
    EXPECT_EQ(::lseek(fd.get(), 0, SEEK_CUR), 0) << name;
  }
}

TEST_F(DecompressTest, CorruptionReachesTheConsumer) {
  std::string gz = compress("gzip -1 -c", "bad.gz");
  std::string bytes = *read_file(gz);
  for (size_t i = bytes.size() / 2; i < bytes.size() / 2 + 64; ++i) bytes[i] = static_cast<char>(~bytes[i]);
  ASSERT_TRUE(atomic_write_file(gz, bytes));
  auto a = through_prefetcher(gz);
  ASSERT_FALSE(a);
  EXPECT_NE(a.error().str().find(gz), std::string::npos) << a.error().str();
  // Truncated: the stream ends inside a member.
  ASSERT_TRUE(atomic_write_file(gz, bytes.substr(0, 1000)));
  auto t = through_prefetcher(gz);
  ASSERT_FALSE(t);
  EXPECT_NE(t.error().str().find("truncated"), std::string::npos) << t.error().str();
}

TEST_F(DecompressTest, StoppingEarlyDoesNotHang) {
  std::string gz = compress("gzip -1 -c", "early.gz");
  for (size_t stop : {size_t{0}, size_t{1}, size_t{3} << 20}) {
    auto a = through_prefetcher(gz, stop);
    ASSERT_TRUE(a) << a.error().str();
    EXPECT_EQ(*a, data_.substr(0, a->size()));
  }
}

}  // namespace
}  // namespace berth::image
