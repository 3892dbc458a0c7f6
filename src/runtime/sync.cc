#include "runtime/sync.h"

#include <sys/socket.h>
#include <sys/uio.h>

#include <cstring>

namespace berth::runtime {

namespace {
struct Header {
  Msg type;
  uint32_t pad;
  int64_t value;
};
constexpr size_t kMaxText = 8192;

Result<> sendmsg_fd(int sock, const void* data, size_t len, int fd) {
  struct iovec iov = {const_cast<void*>(data), len};
  struct msghdr mh = {};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  alignas(struct cmsghdr) char cbuf[CMSG_SPACE(sizeof(int))] = {};
  if (fd >= 0) {
    mh.msg_control = cbuf;
    mh.msg_controllen = sizeof cbuf;
    struct cmsghdr* c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &fd, sizeof(int));
  }
  for (;;) {
    if (::sendmsg(sock, &mh, MSG_NOSIGNAL) >= 0) return {};
    if (errno != EINTR) return sys_error("sendmsg");
  }
}

Result<size_t> recvmsg_fd(int sock, void* data, size_t len, UniqueFd* fd) {
  struct iovec iov = {data, len};
  struct msghdr mh = {};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  alignas(struct cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * 4)];
  mh.msg_control = cbuf;
  mh.msg_controllen = sizeof cbuf;
  ssize_t n;
  int resets = 0;
  do {
    n = ::recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
    // A peer that exits with our message unread in its queue leaves ECONNRESET
    // pending on our side, reported once, ahead of what it sent us before it
    // exited (its error report): read on to get that.
  } while (n < 0 && (errno == EINTR || (errno == ECONNRESET && resets++ == 0)));
  if (n < 0) return sys_error("recvmsg");
  for (struct cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int got;
      std::memcpy(&got, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      // Keep the first descriptor; close any extra a peer pushed on us.
      if (fd && !*fd)
        fd->reset(got);
      else
        ::close(got);
    }
  }
  return static_cast<size_t>(n);
}
}  // namespace

Result<> send_msg(int sock, Msg type, int64_t value, std::string_view text, int fd) {
  char buf[sizeof(Header) + kMaxText];
  Header h{type, 0, value};
  std::memcpy(buf, &h, sizeof h);
  size_t tl = std::min(text.size(), kMaxText);
  std::memcpy(buf + sizeof h, text.data(), tl);
  return sendmsg_fd(sock, buf, sizeof h + tl, fd);
}

Result<Message> recv_msg(int sock) {
  char buf[sizeof(Header) + kMaxText];
  Message m;
  size_t n = TRY(recvmsg_fd(sock, buf, sizeof buf, &m.fd));
  if (n == 0) return fail("container process exited during setup");
  if (n < sizeof(Header)) return fail("short message on the sync socket");
  Header h;
  std::memcpy(&h, buf, sizeof h);
  m.type = h.type;
  m.value = h.value;
  m.text.assign(buf + sizeof h, n - sizeof h);
  return m;
}

Result<Message> expect_msg(int sock, Msg want) {
  Message m = TRY(recv_msg(sock));
  if (m.type == Msg::kError) return std::unexpected(Error{static_cast<int>(m.value), m.text});
  if (m.type != want) return fail("unexpected message on the sync socket");
  return m;
}

Result<> send_fd(int sock, int fd, std::string_view payload) {
  std::string p(payload.empty() ? std::string_view("\0", 1) : payload);
  return sendmsg_fd(sock, p.data(), p.size(), fd);
}

Result<UniqueFd> recv_fd(int sock, std::string* payload) {
  char buf[4096];
  UniqueFd fd;
  size_t n = TRY(recvmsg_fd(sock, buf, sizeof buf, &fd));
  if (!fd) return fail("no descriptor received");
  if (payload) payload->assign(buf, n);
  return fd;
}

}  // namespace berth::runtime
