// File helpers. Every path that comes from a container or an image goes through
// the *_in_root functions, which resolve with openat2(RESOLVE_IN_ROOT) so that
// no symlink or ".." can lead outside the root directory fd.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>

#include "util/error.h"
#include "util/fd.h"

namespace berth {

Result<std::string> read_file(const std::string& path);
Result<std::string> read_fd(int fd);
// Writes `data` to an existing file (cgroupfs, procfs) in one write(2).
Result<> write_file(const std::string& path, std::string_view data);
Result<> write_fd(int fd, std::string_view data);
// Writes via a temp file in the same directory and a rename (atomic, not durable).
Result<> atomic_write_file(const std::string& path, std::string_view data, mode_t mode = 0600);
// Makes `path` (O_EXCL, no symlink followed) with `data` and exactly `mode`
// (not narrowed by the caller's umask): for a directory no other process
// sees yet, where a rename buys nothing.
Result<> write_new_file(const std::string& path, std::string_view data, mode_t mode = 0600);
Result<> mkdir_p(const std::string& path, mode_t mode = 0755);
// Whether `path` under `dirfd` ("" for `dirfd` itself) is the root of a mount,
// no symlink followed: statx's STATX_ATTR_MOUNT_ROOT (a bind mount from the same
// filesystem has its parent's st_dev). False if it cannot be looked at.
bool is_mount_root(int dirfd, const char* path);
bool is_mount_root(const std::string& path);
// Removes a directory tree without following symlinks or descending into
// another mount (EBUSY: whatever is mounted inside is left alone).
Result<> remove_tree(const std::string& path);
// remove_tree for trash (trash_tree's), whose mounts are ours too: a mount
// point in it is detached (MNT_DETACH), and the directory under it removed.
Result<> remove_trash(const std::string& path);
// Removal off the caller's path (a `run --rm` waited some 1-2 ms on it here:
// every freed block of a directory is a discard on a filesystem mounted with
// online discard). trash_tree renames `path` at once to a hidden sibling,
// .trash-<name>.<unix seconds>.<pid>, so that nothing sees it any more, and
// keeps the new name; empty_trash removes what was kept, now;
// empty_trash_detached hands it to a child of its own, in a session of its
// own with nothing of the caller's open, and returns at once (for a
// single-threaded process about to exit: the CLI). What a crash leaves,
// trash_age() tells; whoever lists the parent removes it (Engine::repair).
Result<> trash_tree(const std::string& path);
void empty_trash();
void empty_trash_detached();
// In a child forked to work on after its caller ends: a session of its own
// (not its terminal's signals), /dev/null on 0-2 (not the pipes a caller
// reads to their end), and no other fd of the caller's (not its sockets, not
// its locks) but `keep`, which becomes fd 3 (-1: none).
void detach_from_caller(int keep = -1);
// What trash_tree kept, handed over (the list is left empty): a foreground
// `run` gives it to the container's monitor, which removes it as it exits.
std::vector<std::string> take_trash();
// Gives back what could not be handed over.
void restore_trash(std::vector<std::string> paths);
// Seconds since a name made by trash_tree was made; -1 for any other name.
int64_t trash_age(std::string_view name);
bool path_exists(const std::string& path);
// Unmounts (MNT_DETACH) every mount at or beneath `dir` in this mount
// namespace, deepest first: what a killed helper left in berth's own
// temporaries. Never give it a path berth did not make.
void detach_mounts_beneath(const std::string& dir);
// Bytes of the regular files and symlinks beneath `dir` (not following
// symlinks, not crossing mounts): what `du --apparent-size` counts.
uint64_t tree_bytes(const std::string& dir);

// "/a//b/../c/" -> "/a/c" lexically (no filesystem access).
std::string clean_path(std::string_view path);
std::string join_path(std::string_view a, std::string_view b);

// Opens `path` beneath `rootfd` as if rootfd were "/" (RESOLVE_IN_ROOT,
// RESOLVE_NO_MAGICLINKS). `extra` adds RESOLVE_* flags such as RESOLVE_NO_SYMLINKS.
Result<UniqueFd> open_in_root(int rootfd, std::string_view path, int flags,
                              unsigned long long extra_resolve = 0, mode_t mode = 0);
// Creates every missing directory of `path` beneath rootfd and returns an O_PATH fd
// to the last one.
Result<UniqueFd> mkdir_in_root(int rootfd, std::string_view path, mode_t mode = 0755);
// Makes sure `path` exists beneath rootfd as a directory (dir=true) or a regular file,
// creating it (and its parents) if missing; returns an O_PATH fd to it.
Result<UniqueFd> ensure_in_root(int rootfd, std::string_view path, bool dir);

// "/proc/self/fd/N" for acting on an fd through path-taking syscalls.
std::string fd_path(int fd);

std::vector<std::string> split(std::string_view s, char sep);

}  // namespace berth
