// Docker's `cp`, `diff` and `export` for containers, on the container's files
// as the host sees them: the rootfs overlay mounted on containers/<id>/rootfs
// and its upper dir. `cp` also sees the container's volumes and directory
// binds (CopyOptions::mounts: a path under a mount's destination is resolved
// in its source) and its bound files (/etc/hosts); tmpfs mounts and mounts
// the container made itself live in its namespace only and are not seen.
//
// Every path inside the container is resolved in-root (util/fs.h,
// RESOLVE_IN_ROOT, and RESOLVE_NO_XDEV): a symlink in the container leads at
// most to the container's own root. Tar streams copied in are hostile: an
// entry name is never absolute once applied, ".." is refused, no entry goes
// through a symlink (parents are resolved with RESOLVE_NO_SYMLINKS, a symlink
// in the way is replaced, files are created O_EXCL|O_NOFOLLOW), hardlinks
// must name a file the same stream extracted, and an existing directory is
// never replaced by a non-directory (nor the other way round), as Docker's
// NoOverwriteDirNonDir.
//
// Names, as Docker's (archive.CopyInfo / PrepareArchiveCopy):
//   cp CTR:/etc/hosts ./x      ./x a directory: ./x/hosts; else the file ./x
//   cp ./dir CTR:/tmp/         /tmp exists: /tmp/dir; /tmp/new missing: /tmp/new
//   cp CTR:/dir/. ./out        the contents of /dir into ./out (made if missing)
//   cp CTR:/f -                a tar of "f" on stdout; cp - CTR:/dir extracts stdin
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "util/error.h"
#include "util/fd.h"

namespace berth::engine {

struct CopyOptions {
  // -a: files copied in keep the uid/gid they had (the tar entry's); without
  // it they are owned by root (0:0) in the container. Files copied out are
  // owned by the caller either way, as Docker's.
  bool archive = false;
  // -L: a symlink as the source's last component is followed (its target is
  // copied under the link's name). A trailing "/" follows it too.
  bool follow_link = false;
  // Names the container in errors ("no such file in container web: /nope").
  std::string container = "container";
  // Files the engine bind-mounts into the container (/etc/hosts -> the
  // container directory's hosts): a source that is one of them is read from
  // the host file, what the container sees, not from the mount point beneath.
  std::vector<std::pair<std::string, std::string>> mounted_files;
  // Volumes and directory binds: a container path at or under `destination`
  // is resolved in-root in `source` (a symlink there leads at most to the
  // mount's own root). Copying into a read-only one is refused, as Docker's.
  struct Mount {
    std::string destination, source;
    bool rw = true;
  };
  std::vector<Mount> mounts;
};

// An O_PATH fd on a container's mounted rootfs; a clear error when the mount
// is gone (after a reboot, until the container starts again).
Result<UniqueFd> open_rootfs(const std::string& rootfs_dir, std::string_view container = "container");

// `src_path` in the container as a tar stream on `out_tar_fd` (Docker's GET
// /containers/{id}/archive: the entry is named by the path's last component).
Result<> copy_from_container(const std::string& rootfs_dir, std::string_view src_path, int out_tar_fd,
                             const CopyOptions& o = {});
// Extracts the tar stream (plain, gzip, zstd, xz or bzip2) read from
// `in_tar_fd` into the directory `dst_path` of the container, which must exist.
Result<> copy_to_container(const std::string& rootfs_dir, std::string_view dst_path, int in_tar_fd,
                           const CopyOptions& o = {});
// `cp CTR:SRC HOST_DST`.
Result<> copy_out(const std::string& rootfs_dir, std::string_view src_path, const std::string& host_dst,
                  const CopyOptions& o = {});
// `cp HOST_SRC CTR:DST`.
Result<> copy_in(const std::string& host_src, const std::string& rootfs_dir, std::string_view dst_path,
                 const CopyOptions& o = {});

// Docker's `diff`: 'A' added, 'C' changed, 'D' deleted, with absolute paths,
// read from the overlay's upper dir against the image's layer dirs
// (`lower_dirs`, top layer first, as ImageStore::layer_dirs gives them). A
// whiteout (0:0 character device) is a deletion; anything else is a change
// when the lower layers have that path, an addition otherwise. A directory in
// both is a change when something beneath it is listed or its mode or owner
// differ (one only copied up is not). `hidden`: the engine's own mount points
// (Docker keeps those in its init layer), left out. Parents before their
// children, names sorted.
Result<std::vector<std::pair<char, std::string>>> diff(const std::string& upper_dir,
                                                       const std::vector<std::string>& lower_dirs,
                                                       const std::vector<std::string>& hidden = {});

// Docker's `export`: a tar (pax) of the whole merged rootfs on `out_fd`, entries
// named relative to the root ("bin/busybox"), owners, modes, times, xattrs and
// hardlinks as they are.
Result<> export_rootfs(const std::string& rootfs_dir, int out_fd, std::string_view container);

}  // namespace berth::engine
