#include "image/content_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/file.h>
#include <unistd.h>

#include "util/fs.h"

namespace berth::image {
namespace {

class Store : public ::testing::Test {
 protected:
  void SetUp() override {
    char t[] = "/tmp/berth-cs-XXXXXX";
    ASSERT_TRUE(::mkdtemp(t));
    root_ = t;
  }
  void TearDown() override { (void)remove_tree(root_); }
  std::vector<std::string> ingest_files() {
    std::vector<std::string> out;
    if (DIR* d = ::opendir((root_ + "/content/ingest").c_str())) {
      while (auto* e = ::readdir(d))
        if (e->d_name[0] != '.') out.push_back(e->d_name);
      ::closedir(d);
    }
    return out;
  }
  std::string root_;
};

TEST_F(Store, StoresUnderTheDigestAndReadsBack) {
  auto cs = ContentStore::open(root_);
  ASSERT_TRUE(cs);
  auto d = cs->put("hello", sha256_of("hello"));
  ASSERT_TRUE(d) << d.error().str();
  EXPECT_EQ(*d, sha256_of("hello"));
  EXPECT_TRUE(cs->has(*d));
  EXPECT_EQ(cs->path(*d), root_ + "/content/sha256/" + d->hex);
  EXPECT_EQ(*cs->read(*d), "hello");
  EXPECT_EQ(*cs->size(*d), 5u);
  auto all = cs->list();
  ASSERT_TRUE(all);
  EXPECT_EQ(all->size(), 1u);
  EXPECT_TRUE(ingest_files().empty());
  ASSERT_TRUE(cs->remove(*d));
  EXPECT_FALSE(cs->has(*d));
  EXPECT_TRUE(cs->remove(*d));  // already gone: fine
}

TEST_F(Store, NeverStoresABlobWithTheWrongDigestOrSize) {
  auto cs = ContentStore::open(root_);
  ASSERT_TRUE(cs);
  auto bad = cs->put("tampered", sha256_of("original"), "layer 1 of x");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().str().find("layer 1 of x: digest mismatch"), std::string::npos) << bad.error().str();
  EXPECT_FALSE(cs->has(sha256_of("tampered")));
  EXPECT_FALSE(cs->has(sha256_of("original")));
  EXPECT_TRUE(ingest_files().empty());
  EXPECT_TRUE(cs->list()->empty());

  // A stream longer or shorter than announced.
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  ASSERT_EQ(::write(p[1], "0123456789", 10), 10);
  ::close(p[1]);
  auto longer = cs->ingest(p[0], std::nullopt, 4, "config");
  ::close(p[0]);
  ASSERT_FALSE(longer);
  EXPECT_NE(longer.error().str().find("more data than the 4 bytes"), std::string::npos) << longer.error().str();
  ASSERT_EQ(::pipe(p), 0);
  ASSERT_EQ(::write(p[1], "01", 2), 2);
  ::close(p[1]);
  auto shorter = cs->ingest(p[0], std::nullopt, 4, "config");
  ::close(p[0]);
  ASSERT_FALSE(shorter);
  EXPECT_NE(shorter.error().str().find("truncated"), std::string::npos) << shorter.error().str();
  EXPECT_TRUE(ingest_files().empty());
  EXPECT_TRUE(cs->list()->empty());
}

TEST_F(Store, OpeningRemovesAbandonedIngestsButNotLiveOnes) {
  ASSERT_TRUE(ContentStore::open(root_));
  std::string dead = root_ + "/content/ingest/dead", live = root_ + "/content/ingest/live";
  ASSERT_TRUE(atomic_write_file(dead, "partial"));
  ASSERT_TRUE(atomic_write_file(live, "partial"));
  // A writer still at work holds its lock (from another open file description).
  int fd = ::open(live.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX), 0);
  ASSERT_TRUE(ContentStore::open(root_));
  EXPECT_FALSE(path_exists(dead));
  EXPECT_TRUE(path_exists(live));
  ::close(fd);
}

TEST_F(Store, ReadRefusesOversizedBlobs) {
  auto cs = ContentStore::open(root_);
  ASSERT_TRUE(cs);
  auto d = cs->put(std::string(100, 'x'));
  ASSERT_TRUE(d);
  auto r = cs->read(*d, 10);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().str().find("more than the 10 allowed"), std::string::npos);
}

}  // namespace
}  // namespace berth::image
