// `-u user[:group]` resolved against the container's own /etc/passwd and
// /etc/group, read through the rootfs fd (openat2 RESOLVE_IN_ROOT: a symlinked
// /etc/passwd cannot lead to the host's), as Docker and runc's libcontainer/user do.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>

#include "util/error.h"

namespace berth::engine {

struct ExecUser {
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> additional_gids;  // groups from /etc/group listing the user, plus group_add
  std::string home = "/";             // from passwd; "/" when unknown
};

// `spec` is Docker's --user: "", "name", "uid", "name:group", "uid:gid", "name:gid"...
// Numeric ids need no passwd entry (uid not in passwd: gid 0, home "/"); a name
// missing from the container's files is an error naming it
// ("unable to find user app: no matching entries in passwd file").
// `group_add` (--group-add) are names or numbers resolved in /etc/group.
// Missing /etc/passwd or /etc/group are treated as empty files.
Result<ExecUser> resolve_user(int rootfd, std::string_view spec, const std::vector<std::string>& group_add = {});

// The same, against the text of those two files (a missing one as "").
Result<ExecUser> resolve_user_in(std::string_view passwd, std::string_view group, std::string_view spec,
                                 const std::vector<std::string>& group_add = {});

// One of them read through the rootfs fd as resolve_user reads it: missing
// reads as "", anything but a regular file of at most 4 MiB is an error.
Result<std::string> read_etc(int rootfd, const std::string& path);

}  // namespace berth::engine
