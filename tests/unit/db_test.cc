#include "image/db.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include "util/fs.h"

namespace berth::image {
namespace {

class DbTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char t[] = "/tmp/berth-db-XXXXXX";
    ASSERT_TRUE(::mkdtemp(t));
    dir_ = t;
    path_ = dir_ + "/test.db";
  }
  void TearDown() override { (void)remove_tree(dir_); }
  // The log's last frame, from its index's header (SQLite's wal-index
  // format: mxFrame at offset 16).
  uint32_t log_frames() {
    std::string shm = read_file(path_ + "-shm").value_or("");
    uint32_t frames = ~0u;
    if (shm.size() >= 20) std::memcpy(&frames, shm.data() + 16, 4);
    return frames;
  }
  std::string dir_, path_;
};

constexpr std::string_view kSchema = "CREATE TABLE IF NOT EXISTS t(x BLOB);";

// A checkpoint that another connection's commits keep overtaking (as back
// to back `run`s do: each commits while the last one's checkpointer copies
// the log and syncs) still starts the log over, once the commits pause,
// rather than leaving it long for every next command to fork a checkpointer
// of its own.
TEST_F(DbTest, CheckpointStartsTheLogOverOnceCommitsPause) {
  auto db = Db::open(path_, kSchema, 1);
  ASSERT_TRUE(db) << db.error().str();
  for (int i = 0; i < Db::kCheckpointPages + 20; ++i)
    ASSERT_TRUE((*db)->exec("INSERT INTO t VALUES(zeroblob(3000))"));
  ASSERT_GE(log_frames(), uint32_t(Db::kCheckpointPages));
  std::atomic<bool> stop = false;
  std::atomic<int> commits = 0;
  std::thread writer([&] {
    auto w = Db::open(path_, kSchema, 1);
    if (!w) return;
    while (!stop) {
      if ((*w)->exec("INSERT INTO t VALUES(1)")) ++commits;
      std::this_thread::sleep_for(std::chrono::microseconds(300));
    }
  });
  // The writer stops 60 ms on, the checkpoint meanwhile on its way.
  std::thread stopper([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(60));
    stop = true;
  });
  Db::checkpoint(path_);
  stopper.join();
  writer.join();
  EXPECT_GT(commits.load(), 20) << "the writer did not overtake the checkpoint";
  EXPECT_LT(log_frames(), uint32_t(Db::kCheckpointPages)) << "the log was not started over";
  auto n = (*db)->count("SELECT count(*) FROM t");
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, Db::kCheckpointPages + 20 + commits.load());
}

}  // namespace
}  // namespace berth::image
