#include "runtime/namespaces.h"

#include <fcntl.h>
#include <linux/nsfs.h>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "util/fs.h"
#include "util/syscalls.h"

namespace berth::runtime {

namespace {
struct NsInfo {
  const char* type;
  const char* proc;
  int flag;
};
constexpr NsInfo kNs[] = {
    {"pid", "pid", CLONE_NEWPID},       {"network", "net", CLONE_NEWNET}, {"mount", "mnt", CLONE_NEWNS},
    {"ipc", "ipc", CLONE_NEWIPC},       {"uts", "uts", CLONE_NEWUTS},     {"user", "user", CLONE_NEWUSER},
    {"cgroup", "cgroup", CLONE_NEWCGROUP}, {"time", "time", CLONE_NEWTIME},
};
}  // namespace

int ns_flag(std::string_view type) {
  for (auto& n : kNs)
    if (type == n.type) return n.flag;
  return 0;
}

const char* ns_proc_name(std::string_view type) {
  for (auto& n : kNs)
    if (type == n.type) return n.proc;
  return "";
}

Result<UniqueFd> open_ns(const oci::Namespace& ns) {
  UniqueFd fd(::open(ns.path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return sys_error("linux.namespaces: " + ns.type + " namespace " + ns.path);
  int t = ::ioctl(fd.get(), NS_GET_NSTYPE);
  if (t < 0) return fail("linux.namespaces: " + ns.path + " is not a namespace file");
  if (t != ns_flag(ns.type))
    return fail("linux.namespaces: " + ns.path + " is not a " + ns.type + " namespace");
  return fd;
}

static std::string map_text(const std::vector<oci::IdMapping>& m) {
  std::string s;
  for (auto& e : m)
    s += std::to_string(e.container_id) + " " + std::to_string(e.host_id) + " " + std::to_string(e.size) + "\n";
  return s;
}

Result<> write_id_maps(pid_t pid, const std::vector<oci::IdMapping>& uids,
                       const std::vector<oci::IdMapping>& gids, bool deny_setgroups) {
  std::string base = "/proc/" + std::to_string(pid);
  if (deny_setgroups) TRY_CTX(write_file(base + "/setgroups", "deny"), "user namespace setgroups");
  TRY_CTX(write_file(base + "/uid_map", map_text(uids)), "linux.uidMappings");
  TRY_CTX(write_file(base + "/gid_map", map_text(gids)), "linux.gidMappings");
  return {};
}

Result<UniqueFd> make_netns() {
  // The calling thread's (a thread's namespaces are its own): only it goes
  // into the new one, and comes back.
  UniqueFd ours(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  if (!ours) return sys_error("open /proc/thread-self/ns/net");
  if (::unshare(CLONE_NEWNET) < 0) return sys_error("unshare network namespace");
  UniqueFd made(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  int err = errno;
  auto up = made ? loopback_up() : Result<>{};
  // Back to ours whatever happened: staying in the new one would cut this
  // process off from the host's network.
  if (::setns(ours.get(), CLONE_NEWNET) < 0) {
    std::perror("berth: return to the host's network namespace");
    std::abort();
  }
  if (!made) return sys_error(err, "open the new network namespace");
  if (!up) return std::unexpected(std::move(up).error());
  return made;
}

Result<> loopback_up() {
  // A unix socket: the interface ioctls reach the device through any family,
  // and this one is there whatever the kernel was built without.
  UniqueFd sock(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!sock) return sys_error("loopback: socket");
  struct ifreq ifr = {};
  std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  if (::ioctl(sock.get(), SIOCGIFFLAGS, &ifr) < 0) return sys_error("loopback: get flags of lo");
  if (ifr.ifr_flags & IFF_UP) return {};
  ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP | IFF_RUNNING);
  if (::ioctl(sock.get(), SIOCSIFFLAGS, &ifr) < 0) return sys_error("loopback: set lo up");
  return {};
}

Result<> write_time_offsets(const std::map<std::string, oci::TimeOffset>& offs) {
  std::string s;
  for (auto& [clock, o] : offs)
    s += clock + " " + std::to_string(o.secs) + " " + std::to_string(o.nanosecs) + "\n";
  if (s.empty()) return {};
  // One clock per write: the kernel parses a single line at a time here.
  for (auto& line : split(s, '\n'))
    if (!line.empty()) TRY_CTX(write_file("/proc/self/timens_offsets", line), "linux.timeOffsets");
  return {};
}

}  // namespace berth::runtime
