#include "runtime/netdev.h"

#include <fcntl.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "util/fd.h"

namespace berth::runtime {

namespace {

bool valid_ifname(const std::string& n) {
  if (n.empty() || n.size() >= IFNAMSIZ || n == "." || n == "..") return false;
  for (char c : n)
    if (c == '/' || c == ':' || c <= ' ') return false;
  return true;
}

void add_attr(std::string& buf, unsigned short type, const void* data, size_t len) {
  struct rtattr rta;
  rta.rta_type = type;
  rta.rta_len = static_cast<unsigned short>(RTA_LENGTH(len));
  buf.append(reinterpret_cast<const char*>(&rta), sizeof rta);
  buf.append(static_cast<const char*>(data), len);
  buf.append(RTA_ALIGN(rta.rta_len) - rta.rta_len, '\0');
}

Result<> set_link(int sock, int ifindex, int netns_fd, const std::string& new_name, uint32_t seq) {
  std::string body;
  struct ifinfomsg ifi = {};
  ifi.ifi_family = AF_UNSPEC;
  ifi.ifi_index = ifindex;
  body.append(reinterpret_cast<const char*>(&ifi), sizeof ifi);
  uint32_t fd = static_cast<uint32_t>(netns_fd);
  add_attr(body, IFLA_NET_NS_FD, &fd, sizeof fd);
  if (!new_name.empty()) add_attr(body, IFLA_IFNAME, new_name.c_str(), new_name.size() + 1);
  struct nlmsghdr nh = {};
  nh.nlmsg_len = static_cast<uint32_t>(NLMSG_LENGTH(body.size()));
  nh.nlmsg_type = RTM_NEWLINK;
  nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
  nh.nlmsg_seq = seq;
  std::string msg(reinterpret_cast<const char*>(&nh), sizeof nh);
  msg += body;
  if (::send(sock, msg.data(), msg.size(), 0) < 0) return sys_error("netlink send");
  char reply[4096];
  ssize_t n = ::recv(sock, reply, sizeof reply, 0);
  if (n < 0) return sys_error("netlink recv");
  auto* rh = reinterpret_cast<struct nlmsghdr*>(reply);
  if (n >= static_cast<ssize_t>(sizeof *rh) && rh->nlmsg_type == NLMSG_ERROR) {
    auto* err = static_cast<struct nlmsgerr*>(NLMSG_DATA(rh));
    if (err->error != 0) return sys_error(-err->error, "move");
  }
  return {};
}

}  // namespace

Result<> move_net_devices(const std::map<std::string, oci::NetDevice>& devices, pid_t pid) {
  if (devices.empty()) return {};
  std::map<std::string, int> index;
  for (auto& [host, d] : devices) {
    if (!valid_ifname(host)) return fail("linux.netDevices: invalid interface name \"" + host + "\"");
    if (!d.name.empty() && !valid_ifname(d.name))
      return fail("linux.netDevices." + host + ".name: invalid interface name \"" + d.name + "\"");
    unsigned i = ::if_nametoindex(host.c_str());
    if (i == 0) return fail("linux.netDevices: no interface \"" + host + "\" on the host");
    index[host] = static_cast<int>(i);
  }
  UniqueFd ns(::open(("/proc/" + std::to_string(pid) + "/ns/net").c_str(), O_RDONLY | O_CLOEXEC));
  if (!ns) return sys_error("open the container's network namespace");
  UniqueFd sock(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
  if (!sock) return sys_error("netlink socket");
  uint32_t seq = 1;
  for (auto& [host, d] : devices) {
    if (auto r = set_link(sock.get(), index[host], ns.get(), d.name, seq++); !r)
      return std::unexpected(std::move(r).error().context("linux.netDevices: " + host));
  }
  return {};
}

}  // namespace berth::runtime
