// Unit tests of the runtime's pure pieces: option parsing, signals, ids,
// sysctl policy, paths, the CLI flag parser.
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/runtime/flags.h"
#include "runtime/container.h"
#include "runtime/init.h"
#include "runtime/mounts.h"
#include "runtime/process.h"
#include "runtime/state.h"
#include "util/fs.h"

namespace berth {
namespace {

TEST(MountOptions, FlagsPropagationRecursiveAndData) {
  auto o = runtime::parse_mount_options({"rbind", "ro", "nosuid", "rprivate", "rnoexec", "size=64k", "mode=755"});
  ASSERT_TRUE(o);
  EXPECT_TRUE(o->bind);
  EXPECT_TRUE(o->recursive);
  EXPECT_EQ(o->flags, static_cast<unsigned long>(MS_RDONLY | MS_NOSUID));
  EXPECT_EQ(o->propagation, static_cast<unsigned long>(MS_PRIVATE | MS_REC));
  EXPECT_EQ(o->rec_attr_set, static_cast<uint64_t>(MOUNT_ATTR_NOEXEC));
  EXPECT_EQ(o->data, "size=64k,mode=755");
  auto rw = runtime::parse_mount_options({"ro", "rw"});
  ASSERT_TRUE(rw);
  EXPECT_EQ(rw->flags & MS_RDONLY, 0u);
  auto id = runtime::parse_mount_options({"bind", "idmap", "tmpcopyup"});
  ASSERT_TRUE(id);
  EXPECT_TRUE(id->idmap);
  EXPECT_TRUE(id->tmpcopyup);
  EXPECT_FALSE(id->recursive);
}

TEST(Signals, NamesNumbersAndPrefixes) {
  EXPECT_EQ(*runtime::parse_signal("KILL"), SIGKILL);
  EXPECT_EQ(*runtime::parse_signal("SIGTERM"), SIGTERM);
  EXPECT_EQ(*runtime::parse_signal("sigusr1"), SIGUSR1);
  EXPECT_EQ(*runtime::parse_signal("9"), 9);
  EXPECT_EQ(*runtime::parse_signal("RTMIN+2"), SIGRTMIN + 2);
  for (auto bad : {"", "FOO", "0", "65", "9x", "RTMIN+99"}) {
    auto r = runtime::parse_signal(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_NE(r.error().msg.find("unknown signal") == std::string::npos && *bad, true);
  }
}

TEST(Ids, RuncRules) {
  EXPECT_TRUE(runtime::check_id("abc-1.2_3+4"));
  for (auto bad : {"", ".", "..", "../x", "a/b", "a b", "x\n"}) EXPECT_FALSE(runtime::check_id(bad)) << bad;
}

TEST(Sysctl, OnlyNamespacedKeysOfOwnedNamespaces) {
  oci::Spec s;
  s.linux = oci::Linux{};
  s.linux->namespaces = {{"network", ""}, {"ipc", ""}};
  EXPECT_EQ(*runtime::sysctl_path(s, "net.ipv4.ip_forward"), "sys/net/ipv4/ip_forward");
  EXPECT_EQ(*runtime::sysctl_path(s, "kernel.shmmax"), "sys/kernel/shmmax");
  EXPECT_EQ(*runtime::sysctl_path(s, "fs.mqueue.msg_max"), "sys/fs/mqueue/msg_max");
  EXPECT_FALSE(runtime::sysctl_path(s, "kernel.core_pattern"));
  EXPECT_FALSE(runtime::sysctl_path(s, "kernel.hostname"));  // no uts namespace
  EXPECT_FALSE(runtime::sysctl_path(s, "net/../kernel/core_pattern"));
  EXPECT_FALSE(runtime::sysctl_path(s, "vm.overcommit_memory"));
  oci::Spec host;
  host.linux = oci::Linux{};
  EXPECT_FALSE(runtime::sysctl_path(host, "net.ipv4.ip_forward"));
}

TEST(CpuList, Parses) {
  auto c = runtime::parse_cpu_list("0-2,5", "f");
  ASSERT_TRUE(c);
  EXPECT_EQ(*c, (std::vector<int>{0, 1, 2, 5}));
  EXPECT_FALSE(runtime::parse_cpu_list("3-1", "f"));
  EXPECT_FALSE(runtime::parse_cpu_list("x", "f"));
}

TEST(Paths, CleanAndJoin) {
  EXPECT_EQ(clean_path("/a//b/../c/"), "/a/c");
  EXPECT_EQ(clean_path("/../.."), "/");
  EXPECT_EQ(clean_path("a/../../b"), "../b");
  EXPECT_EQ(join_path("/x/", "/y"), "/x/y");
}

TEST(InRoot, SymlinksStayInsideTheRoot) {
  char tmpl[] = "/tmp/berth-root-XXXXXX";
  ASSERT_TRUE(::mkdtemp(tmpl));
  std::string root = tmpl;
  ASSERT_EQ(::symlink("/etc", (root + "/etc-link").c_str()), 0);
  ASSERT_EQ(::symlink("../../../../etc", (root + "/up").c_str()), 0);
  UniqueFd rfd(::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  // Both links resolve to <root>/etc, which does not exist: never the host's /etc.
  EXPECT_FALSE(open_in_root(rfd.get(), "/etc-link/passwd", O_RDONLY));
  EXPECT_FALSE(open_in_root(rfd.get(), "/up/passwd", O_RDONLY));
  auto made = mkdir_in_root(rfd.get(), "/up/sub");
  ASSERT_TRUE(made) << made.error().str();
  struct stat st;
  EXPECT_EQ(::stat((root + "/etc/sub").c_str(), &st), 0);  // created inside the root
  // Once there, it is resolved whole (the fast path): the same directory.
  auto again = mkdir_in_root(rfd.get(), "/up/sub");
  ASSERT_TRUE(again) << again.error().str();
  struct stat got;
  ASSERT_EQ(::fstat(again->get(), &got), 0);
  EXPECT_EQ(got.st_ino, st.st_ino);
  // A file in the way is an error either way, not a directory made elsewhere.
  ASSERT_TRUE(atomic_write_file(root + "/etc/plain", "x"));
  EXPECT_FALSE(mkdir_in_root(rfd.get(), "/etc-link/plain/deeper"));
  auto f = ensure_in_root(rfd.get(), "/etc-link/file", false);
  ASSERT_TRUE(f);
  EXPECT_EQ(::stat((root + "/etc/file").c_str(), &st), 0);
  EXPECT_NE(::stat("/etc/sub", &st), 0);
  (void)remove_tree(root);
}

TEST(StateDoc, RuncShape) {
  runtime::State st;
  st.id = "c1";
  st.pid = 42;
  st.bundle = "/b";
  st.rootfs = "/b/rootfs";
  st.created = "2024-01-01T00:00:00Z";
  st.annotations["k"] = "v";
  std::string j = runtime::state_json(st, runtime::Status::running, false);
  EXPECT_NE(j.find("\"status\":\"running\""), std::string::npos);
  EXPECT_NE(j.find("\"pid\":42"), std::string::npos);
  EXPECT_NE(j.find("\"annotations\":{\"k\":\"v\"}"), std::string::npos);
  std::string stopped = runtime::state_json(st, runtime::Status::stopped, false);
  EXPECT_NE(stopped.find("\"pid\":0"), std::string::npos);
}

TEST(Flags, GoFlagConventions) {
  std::string bundle, log;
  bool detach = false;
  std::vector<std::string> env;
  std::vector<cli::Flag> f = {cli::string_flag({"bundle", "b"}, &bundle, ""), cli::bool_flag({"detach", "d"}, &detach, ""),
                              cli::list_flag({"env", "e"}, &env, "")};
  std::vector<std::string> a = {"x", "-bundle", "/b", "--detach=true", "-e", "A=1", "--env=B=2", "id", "-c", "z"};
  auto pos = cli::parse_flags(a, 1, f, "t");
  ASSERT_TRUE(pos);
  EXPECT_EQ(*pos, 7u);  // stops at the first positional argument
  EXPECT_EQ(bundle, "/b");
  EXPECT_TRUE(detach);
  EXPECT_EQ(env, (std::vector<std::string>{"A=1", "B=2"}));
  std::vector<std::string> bad = {"x", "--bogus"};
  auto e = cli::parse_flags(bad, 1, f, "run");
  ASSERT_FALSE(e);
  EXPECT_NE(e.error().msg.find("-bogus"), std::string::npos);
  std::vector<std::string> missing = {"x", "--bundle"};
  EXPECT_FALSE(cli::parse_flags(missing, 1, f, "run"));
  std::vector<std::string> badbool = {"x", "--detach=maybe"};
  EXPECT_FALSE(cli::parse_flags(badbool, 1, f, "run"));
}

TEST(Features, DocumentsWhatIsBuilt) {
  std::string f = runtime::features_json();
  EXPECT_NE(f.find("\"ociVersionMax\": \"1.3.0\""), std::string::npos);
  EXPECT_NE(f.find("\"SCMP_ACT_NOTIFY\""), std::string::npos);
  EXPECT_NE(f.find("\"rro\""), std::string::npos);
  EXPECT_NE(f.find("\"time\""), std::string::npos);
}

}  // namespace
}  // namespace berth

namespace berth {
namespace {

// trash_tree renames at once; empty_trash_detached removes in a child and
// returns before that child is done; trash_age reads the name's time.
TEST(Trash, RenamedAtOnceRemovedByAChild) {
  char tmpl[] = "/tmp/berth-trash-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  std::string root = tmpl;
  std::string victim = root + "/c1";
  ASSERT_TRUE(mkdir_p(victim + "/upper/a/b"));
  ASSERT_TRUE(atomic_write_file(victim + "/upper/a/b/f", "data"));
  ::symlink("/etc/passwd", (victim + "/upper/link").c_str());
  ASSERT_TRUE(trash_tree(victim));
  EXPECT_FALSE(path_exists(victim));
  std::vector<std::string> names;
  DIR* d = ::opendir(root.c_str());
  while (auto* e = ::readdir(d))
    if (e->d_name[0] != '.' || std::string_view(e->d_name).starts_with(".trash-")) names.emplace_back(e->d_name);
  ::closedir(d);
  ASSERT_EQ(names.size(), 1u);
  EXPECT_TRUE(names[0].starts_with(".trash-c1.")) << names[0];
  EXPECT_GE(trash_age(names[0]), 0);
  EXPECT_LE(trash_age(names[0]), 2);
  // A path that is not there: nothing to do.
  EXPECT_TRUE(trash_tree(root + "/nothing"));
  empty_trash_detached();
  bool gone = false;
  for (int i = 0; i < 500 && !gone; ++i) {
    gone = !path_exists(root + "/" + names[0]);
    if (!gone) ::usleep(10000);
  }
  EXPECT_TRUE(gone) << "the child did not remove the trash";
  EXPECT_TRUE(path_exists("/etc/passwd"));  // a symlink is removed, never followed
  // Synchronous emptying, and names that are not trash.
  ASSERT_TRUE(mkdir_p(root + "/c2/x"));
  ASSERT_TRUE(trash_tree(root + "/c2"));
  empty_trash();
  ASSERT_EQ(::rmdir(root.c_str()), 0) << "left in " << root;
  EXPECT_EQ(trash_age("c1"), -1);
  EXPECT_EQ(trash_age(".trash-c1"), -1);
  EXPECT_EQ(trash_age(".trash-c1.x.1"), -1);
  EXPECT_GE(trash_age(".trash-c1.1000.1"), 1000);
}

}  // namespace
}  // namespace berth
