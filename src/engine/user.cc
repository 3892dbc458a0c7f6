// resolve_user follows runc's libcontainer/user GetExecUser and
// GetAdditionalGroups, which is what Docker calls for --user and --group-add.
#include "engine/user.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <optional>

#include "util/fd.h"
#include "util/fs.h"

namespace berth::engine {
namespace {

// An image's passwd is a few KiB; the cap keeps a hostile one from filling memory.
constexpr off_t kMaxFile = 4 << 20;
constexpr int64_t kMaxId = INT32_MAX;  // runc's maxID: ids above it are refused

struct PasswdEntry {
  std::string name;
  int64_t uid, gid;
  std::string home;
};

struct GroupEntry {
  std::string name;
  int64_t gid;
  std::vector<std::string> members;
};

}  // namespace

// Reads `path` of the rootfs. Missing reads as empty, as runc does.
Result<std::string> read_etc(int rootfd, const std::string& path) {
  // O_PATH first: opening a FIFO for reading would block and a device's open may
  // act, so the type is checked before the file is opened for real.
  auto pfd = open_in_root(rootfd, path, O_PATH);
  if (!pfd) {
    if (pfd.error().err == ENOENT || pfd.error().err == ENOTDIR) return std::string();
    return std::unexpected(std::move(pfd).error());
  }
  struct stat st;
  if (::fstat(pfd->get(), &st) < 0) return sys_error("stat " + path + " in rootfs");
  if (!S_ISREG(st.st_mode)) return fail(path + " in rootfs is not a regular file");
  if (st.st_size > kMaxFile) return fail(path + " in rootfs is larger than 4 MiB");
  // Reopening the O_PATH fd re-resolves nothing: it is the file just checked.
  UniqueFd fd(::open(fd_path(pfd->get()).c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return sys_error("open " + path + " in rootfs");
  std::string out;
  char buf[8192];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return sys_error("read " + path + " in rootfs");
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    // It may have grown since the fstat.
    if (out.size() > static_cast<size_t>(kMaxFile)) return fail(path + " in rootfs is larger than 4 MiB");
  }
  return out;
}

namespace {

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// An id field of passwd/group: digits within range, else the line is skipped
// (runc reads a bad number as 0, which would make the entry root).
std::optional<int64_t> file_id(std::string_view s) {
  int64_t v = 0;
  if (!all_digits(s)) return std::nullopt;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || v > kMaxId) return std::nullopt;
  return v;
}

// A user or group of the spec is numeric as for Go's strconv.Atoi ("-1" is a
// number, out of range); a number too big for int64 reads as -1, out of range too.
std::optional<int64_t> spec_id(std::string_view s) {
  if (!all_digits(s.starts_with('-') ? s.substr(1) : s)) return std::nullopt;
  int64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  return ec == std::errc() ? v : -1;
}

Result<uint32_t> checked_id(std::string_view what, int64_t v) {
  if (v < 0 || v > kMaxId)
    return fail(std::string(what) + ": uids and gids must be in range 0-" + std::to_string(kMaxId));
  return static_cast<uint32_t>(v);
}

// Calls f(fields) for each line that is not blank or a comment.
template <class F>
void for_each_entry(std::string_view data, F&& f) {
  for (auto& raw : split(data, '\n')) {
    std::string_view line = raw;
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) line.remove_suffix(1);
    while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) line.remove_prefix(1);
    if (line.empty() || line.front() == '#') continue;
    f(split(line, ':'));
  }
}

// name:password:uid:gid:gecos:home:shell
std::vector<PasswdEntry> parse_passwd(std::string_view data) {
  std::vector<PasswdEntry> out;
  for_each_entry(data, [&](const std::vector<std::string>& f) {
    if (f.size() < 4) return;
    auto uid = file_id(f[2]), gid = file_id(f[3]);
    if (!uid || !gid) return;
    out.push_back({f[0], *uid, *gid, f.size() > 5 ? f[5] : ""});
  });
  return out;
}

// name:password:gid:member,member...
std::vector<GroupEntry> parse_group(std::string_view data) {
  std::vector<GroupEntry> out;
  for_each_entry(data, [&](const std::vector<std::string>& f) {
    if (f.size() < 3) return;
    auto gid = file_id(f[2]);
    if (!gid) return;
    out.push_back({f[0], *gid, f.size() > 3 && !f[3].empty() ? split(f[3], ',') : std::vector<std::string>{}});
  });
  return out;
}

void add_unique(std::vector<gid_t>& v, gid_t g) {
  if (std::find(v.begin(), v.end(), g) == v.end()) v.push_back(g);
}

}  // namespace

Result<ExecUser> resolve_user(int rootfd, std::string_view spec, const std::vector<std::string>& group_add) {
  std::string passwd = TRY(read_etc(rootfd, "/etc/passwd"));
  std::string group = TRY(read_etc(rootfd, "/etc/group"));
  return resolve_user_in(passwd, group, spec, group_add);
}

Result<ExecUser> resolve_user_in(std::string_view passwd_text, std::string_view group_text, std::string_view spec,
                                 const std::vector<std::string>& group_add) {
  // "user[:group]"; like runc, anything after a second ':' is ignored.
  size_t colon = spec.find(':');
  std::string_view user_arg = spec.substr(0, colon);
  std::string_view group_arg = colon == std::string_view::npos ? "" : spec.substr(colon + 1);
  group_arg = group_arg.substr(0, group_arg.find(':'));
  auto uid_arg = spec_id(user_arg);
  auto gid_arg = spec_id(group_arg);

  auto passwd = parse_passwd(passwd_text);
  auto groups = parse_group(group_text);

  ExecUser u;
  // A numeric user is always a uid, even if some entry is named like a number;
  // no user means root. The first matching entry wins.
  auto pw = std::find_if(passwd.begin(), passwd.end(), [&](const PasswdEntry& e) {
    if (user_arg.empty()) return e.uid == 0;
    return uid_arg ? e.uid == *uid_arg : e.name == user_arg;
  });
  const PasswdEntry* matched = pw == passwd.end() ? nullptr : &*pw;
  if (matched) {
    u.uid = static_cast<uid_t>(matched->uid);
    u.gid = static_cast<gid_t>(matched->gid);
    if (!matched->home.empty()) u.home = matched->home;
  } else if (!user_arg.empty()) {
    if (!uid_arg)
      return fail("unable to find user " + std::string(user_arg) + ": no matching entries in passwd file");
    u.uid = TRY(checked_id("user " + std::string(user_arg), *uid_arg));
  }

  if (!group_arg.empty()) {
    auto gr = std::find_if(groups.begin(), groups.end(), [&](const GroupEntry& g) {
      return gid_arg ? g.gid == *gid_arg : g.name == group_arg;
    });
    if (gr != groups.end()) {
      u.gid = static_cast<gid_t>(gr->gid);
    } else {
      if (!gid_arg)
        return fail("unable to find group " + std::string(group_arg) + ": no matching entries in group file");
      u.gid = TRY(checked_id("group " + std::string(group_arg), *gid_arg));
    }
  } else if (matched) {
    // Supplementary groups come only with the implicit form: "user:group" sets
    // exactly that group, as in runc and Docker.
    for (auto& g : groups)
      if (std::find(g.members.begin(), g.members.end(), matched->name) != g.members.end())
        add_unique(u.additional_gids, static_cast<gid_t>(g.gid));
  }

  // --group-add: a group's name or its gid as written in /etc/group, else a bare number.
  for (auto& ag : group_add) {
    auto gr = std::find_if(groups.begin(), groups.end(),
                           [&](const GroupEntry& g) { return g.name == ag || std::to_string(g.gid) == ag; });
    if (gr != groups.end()) {
      add_unique(u.additional_gids, static_cast<gid_t>(gr->gid));
      continue;
    }
    auto gid = spec_id(ag);
    if (!gid) return fail("unable to find group " + ag + ": no matching entries in group file");
    add_unique(u.additional_gids, TRY(checked_id("group " + ag, *gid)));
  }
  return u;
}

}  // namespace berth::engine
