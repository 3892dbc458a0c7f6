// What every engine test fixture does: run the `berth` binary under test
// (BERTH_CLI) with the test's own --root and --runroot, and check at TearDown
// that no mount is left under the test's directory.
#pragma once

#include <fcntl.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "util/fs.h"

namespace berth::test {

struct Out {
  int code = -1;
  std::string out, err;
};

// A fresh /tmp/berth-NAME-XXXXXX for a test (`dir`), with the paths of its
// --root and --runroot beneath.
inline bool make_test_dirs(const std::string& name, std::string& dir, std::string& root, std::string& runroot) {
  std::string tmpl = "/tmp/berth-" + name + "-XXXXXX";
  if (!::mkdtemp(tmpl.data())) return false;
  dir = tmpl;
  root = dir + "/root";
  runroot = dir + "/run";
  return true;
}

// `berth --root ROOT --runroot RUNROOT ARGS...`: its exit status (128 + the
// signal that killed it), stdout and stderr (caught in SCRATCH.out and
// SCRATCH.err, removed after). Stdin is the file `input`, or /dev/null.
// `exe` in place of the berth under test: run_berth_exe.
inline Out run_berth_exe(const std::string& exe, const std::string& root, const std::string& runroot,
                         const std::string& scratch, const std::vector<std::string>& args,
                         const std::string& input = "") {
  std::string out = scratch + ".out", err = scratch + ".err";
  std::vector<std::string> argv = {exe, "--root", root, "--runroot", runroot};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char*> a;
  for (auto& s : argv) a.push_back(s.data());
  a.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    int fds[3] = {::open(input.empty() ? "/dev/null" : input.c_str(), O_RDONLY),
                  ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644),
                  ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644)};
    for (int i = 0; i < 3; ++i) ::dup2(fds[i], i);
    ::execv(a[0], a.data());
    _exit(127);
  }
  int st = 0;
  ::waitpid(pid, &st, 0);
  Out r;
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  r.out = read_file(out).value_or("");
  r.err = read_file(err).value_or("");
  ::unlink(out.c_str()), ::unlink(err.c_str());
  return r;
}
inline Out run_berth(const std::string& root, const std::string& runroot, const std::string& scratch,
                     const std::vector<std::string>& args, const std::string& input = "") {
  return run_berth_exe(BERTH_CLI, root, runroot, scratch, args, input);
}

// Unmounts (detached) every mount point under `dir`; returns how many there were.
inline size_t umount_under(const std::string& dir) {
  size_t n = 0;
  for (auto& line : split(read_file("/proc/self/mountinfo").value_or(""), '\n')) {
    auto f = split(line, ' ');
    if (f.size() > 4 && f[4].starts_with(dir)) ++n, ::umount2(f[4].c_str(), MNT_DETACH);
  }
  return n;
}

// A removed container's files go to the trash, which a child of the removing
// berth empties as that berth exits (util/fs.h trash_tree): waits (at most
// 20 s) until no trash is left under root/containers; false if some is.
inline bool wait_for_trash(const std::string& root) {
  for (int i = 0; i < 2000; ++i) {
    bool left = false;
    std::error_code ec;
    // (Spares are made under trash names in the nursery, engine/spare.h.)
    for (auto* d : {"/containers", "/containers/.spare-nursery"})
      for (auto& e : std::filesystem::directory_iterator(root + d, ec))
        left |= e.path().filename().string().starts_with(".trash-");
    if (!left) return true;
    ::usleep(10000);
  }
  return false;
}

// Once every container is removed, nothing of a test may be left mounted
// under `dir` but the store's EROFS layers, which stay mounted until their
// layer goes, and spare network namespaces (engine/spare.h) not yet taken
// (a taken one's mount goes as its taker's container runs: a used namespace
// must not outlive its container); then everything there is unmounted.
inline void expect_only_layer_mounts(const std::string& dir, const std::string& root) {
  // (Its taker's thread may still be at it as the last command returns.)
  auto taken_left = [&] {
    for (auto& line : split(read_file("/proc/self/mountinfo").value_or(""), '\n')) {
      auto f = split(line, ' ');
      if (f.size() > 4 && f[4].starts_with(dir + "/") && f[4].find("/netns/spare-") != std::string::npos &&
          !path_exists(f[4] + ".ready"))
        return true;
    }
    return false;
  };
  for (int i = 0; i < 200 && taken_left(); ++i) ::usleep(10000);
  std::set<std::string> seen;
  for (auto& line : split(read_file("/proc/self/mountinfo").value_or(""), '\n')) {
    auto f = split(line, ' ');
    if (f.size() <= 4 || !f[4].starts_with(dir + "/")) continue;
    bool layer = f[4].starts_with(root + "/layers/") && f[4].ends_with("/diff") &&
                 path_exists(f[4].substr(0, f[4].size() - 5) + "/layer.erofs");
    auto slot = f[4].rfind("/netns/spare-");
    bool spare_netns = slot != std::string::npos && line.find(" - nsfs ") != std::string::npos &&
                       path_exists(f[4] + ".ready");
    if (slot != std::string::npos && line.find(" - nsfs ") != std::string::npos)
      EXPECT_TRUE(spare_netns) << "a taken spare network namespace is still kept: " << f[4];
    else
      EXPECT_TRUE(layer) << "a mount is left: " << f[4];
    EXPECT_TRUE(seen.insert(f[4]).second) << "mounted twice: " << f[4];
  }
  umount_under(dir);
}

// A test with its own --root and --runroot (in /tmp/berth-NAME-XXXXXX) that
// removes every container it made at the end and checks no mount is left.
class BerthFixture : public ::testing::Test {
 protected:
  explicit BerthFixture(std::string name) : name_(std::move(name)) {}
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (mounts, cgroups, namespaces)";
    ASSERT_TRUE(make_test_dirs(name_, dir_, root_, runroot_));
  }
  void TearDown() override {
    if (dir_.empty()) return;
    for (auto& id : split(berth({"ps", "-aq", "--no-trunc"}).out, '\n'))
      if (!id.empty()) berth({"rm", "-f", id});
    EXPECT_TRUE(wait_for_trash(root_)) << "removed containers' files are left";
    expect_only_layer_mounts(dir_, root_);
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  // berth with this test's roots; stdin from the file `input` (or /dev/null).
  Out berth(const std::vector<std::string>& args, const std::string& input = "") {
    return run_berth(root_, runroot_, dir_ + "/io" + std::to_string(seq_++), args, input);
  }

  std::string name_, dir_, root_, runroot_;
  std::atomic<int> seq_{0};
};

}  // namespace berth::test
