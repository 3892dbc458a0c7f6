// Docker's volumes, local driver only: a volume is a directory
// <root>/volumes/<name>/_data (volumes/ 0701, _data 0755) and a row in
// berth.db's `volumes` table (the engine's schema, engine.cc); `volume_users`
// says which containers hold it, so `volume rm` refuses a volume in use.
//
// A container's mounts (binds, volumes, --mount tmpfs) are resolved once, at
// create (Volumes::prepare): named volumes are made when missing, anonymous
// ones (`-v /path`, image VOLUMEs) get a random name and the label
// com.docker.volume.anonymous, and an empty volume is filled with what the
// image has at its destination (copy-up). The result is kept in the
// container's directory as mounts.json, in the form of Docker's inspect
// "Mounts", for inspect and --volumes-from.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "util/error.h"

namespace berth::image {
class Db;
}

namespace berth::engine {

struct Volume {
  std::string name;
  int64_t created = 0;  // unix ns
  std::map<std::string, std::string> labels, options;  // options: the local driver's type, device, o
  bool anonymous = false;
  std::string mountpoint;  // <root>/volumes/<name>/_data
};

// One mount of a container, as Docker's inspect reports it.
struct MountPoint {
  std::string type;         // "bind", "volume" or "tmpfs"
  std::string name;         // a volume's name
  std::string source;       // host path (a volume's mountpoint); empty for tmpfs
  std::string destination;  // absolute, clean
  std::string mode;         // -v's mode as given ("ro", "z", ...); "z" for a -v volume without one
  bool rw = true;
  std::string propagation;  // binds: "rprivate" unless given
  std::vector<std::string> tmpfs_options;  // size=, mode=
};

struct PruneResult {
  std::vector<std::string> removed;
  uint64_t bytes = 0;
};

// Whether Volumes::prepare would mount anything for this create body and
// image config (both as parsed): false lets a create make its spec before
// the rootfs is there, since nothing needs to be filled from it.
bool wants_volumes(const nlohmann::json& body, const nlohmann::json& image_config);

class Volumes {
 public:
  // `root`: the store root (volumes live in root/volumes).
  Volumes(image::Db& db, std::string root);

  // `volume create`: an existing volume of that name is returned as it is
  // (Docker). An empty name draws a random one.
  Result<Volume> create(std::string name, const std::map<std::string, std::string>& labels,
                        const std::map<std::string, std::string>& options);
  Result<Volume> get(const std::string& name);
  // Sorted by name.
  Result<std::vector<Volume>> list();
  // The containers (IDs) holding the volume.
  Result<std::vector<std::string>> users(const std::string& name);
  // Refused while a container holds it; `force` ignores a missing volume.
  Result<> remove(const std::string& name, bool force);
  // Volumes no container holds: anonymous ones only unless `all`, and only
  // those `keep` accepts.
  Result<PruneResult> prune(bool all, const std::function<bool(const Volume&)>& keep);

  // The mounts of a new container from Docker's create body (HostConfig
  // Binds, Mounts, VolumesFrom) and the image config's Volumes: checks them,
  // makes and holds its volumes, copies the image's content (seen through
  // `rootfs_fd`) into empty ones, and writes `dir`/mounts.json (when there
  // are mounts). Sorted so
  // that a parent is mounted before what lies under it. `container_dir`
  // finds the directory of a container named by --volumes-from. On failure
  // the caller calls release(id, true).
  Result<std::vector<MountPoint>> prepare(const std::string& id, const std::string& dir, std::string_view body,
                                          std::string_view image_config, int rootfs_fd,
                                          const std::function<Result<std::string>(const std::string&)>& container_dir);
  // Mounts the --opt filesystems of the volumes container `id` holds that are
  // not mounted (a reboot took them): before the container starts again.
  Result<> mount_held(const std::string& id);
  // The container is gone: it holds its volumes no more; its anonymous ones
  // that nothing else holds are removed when `remove_anonymous` (rm -v, --rm).
  Result<> release(const std::string& id, bool remove_anonymous);
  // What release will ask of the database first, parsed now (Db::prepare).
  void prepare_release();

 private:
  Result<Volume> hold(std::string name, const std::map<std::string, std::string>& labels,
                      const std::map<std::string, std::string>& options, bool anonymous, const std::string& user);
  Result<> remove_unlocked(const Volume& v);

  image::Db& db_;
  std::string root_;
  std::string dir_;  // root/volumes
};

// Docker's inspect "Mounts" of a container made with prepare(); an error when
// it has no mounts.json (no mounts, or made before volumes existed).
Result<std::string> mounts_json(const std::string& container_dir);
// Docker's inspect document of a volume.
std::string volume_json(const Volume& v);

}  // namespace berth::engine
