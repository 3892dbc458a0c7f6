// The image store: images (their manifests, configs and layer blobs in the
// content store), names and tags (in berth.db), and layers stored once each
// under layers/<chain id>/, shared by every image and container that uses
// them.
//
// On-disk layout under the store root (/var/lib/berth by default):
//   berth.db                      images, tags, repo digests, layers, mounts
//   content/sha256/<hex>          blobs (content_store.h)
//   layers/<chain hex>/           one layer, in one of two formats:
//     erofs: layer.tar (the uncompressed layer), layer.erofs (berth's EROFS
//            metadata for it, erofs.h) and diff/, where the two are mounted
//            from the layer's first use (an image mount or a container) until
//            the layer is removed
//     dir:   diff/ holds the layer unpacked (unpack.h)
//     size                        the layer's uncompressed tar bytes
//   layers/.tmp-*                 layers being made (renamed into place when whole)
//   image-mounts/<image hex>/     `image mount` points
//   ops/<random>                  a marker per running store operation, flocked
//   layer-format.probe            what the kernel was found to mount, per boot
//
// Either way layers/<chain>/diff is the overlay lower dir. New layers get the
// EROFS format where the kernel mounts it (probed once per boot:
// file-backed EROFS with sub-page blocks, under overlayfs) and the dir format
// elsewhere; StoreOptions forces one. A store may hold both.
//
// Crash safety. A layer directory is renamed into place only when complete and
// verified, and is recorded in the database in the same transaction as the
// image that needs it; blobs are committed whole (content_store.h). What a
// killed operation can leave is therefore only garbage: blobs, layer
// directories and temporaries that no row references. Each operation that can
// make garbage holds an flocked marker in ops/ while it runs; open() finds
// markers whose holder died and, when no other operation is running, removes
// every unreferenced blob, layer directory and temporary.
//
// Concurrency. Rows and the directories they name change together under an
// exclusive flock on store.lock (held briefly: downloads and unpacks happen
// before it is taken), so an rmi can never remove a layer that a concurrent
// pull is about to record. EROFS layer mounts are made and removed under it
// too.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "image/content_store.h"
#include "image/digest.h"
#include "image/manifest.h"
#include "image/reference.h"
#include "util/error.h"
#include "util/fd.h"

namespace berth::image {

class Db;

enum class LayerFormat { kAuto, kErofs, kDir };
std::string_view layer_format_name(LayerFormat f);

struct StoreOptions {
  // The format of layers this process adds: kAuto probes the kernel.
  LayerFormat layer_format = LayerFormat::kAuto;
};

// Docker's --storage-opt list ("layer-format=erofs"); unknown keys are errors.
Result<StoreOptions> parse_storage_opts(const std::vector<std::string>& opts);

struct ImageRecord {
  Digest id;        // the config digest (Docker's image ID)
  Digest manifest;  // the image manifest (for an index pulled, the platform's manifest)
  std::string manifest_type;
  Platform platform;
  std::string created;  // from the config, RFC 3339
  int64_t added = 0;    // when the store got it, unix seconds
  uint64_t size = 0;    // unpacked bytes of all layers
  std::vector<Reference> tags;
  std::vector<std::string> repo_digests;  // "localhost:5000/app@sha256:..."
  std::vector<Digest> layers;             // chain ids, bottom first
  std::vector<uint64_t> layer_sizes;      // each layer's uncompressed tar bytes, same order
};

struct LayerProgress {
  size_t index = 0, count = 0;  // which layer of how many
  Digest blob;
  std::string_view phase;  // "extracting", "done", "exists"
};
using UnpackProgressFn = std::function<void(const LayerProgress&)>;

struct RemoveResult {
  std::vector<std::string> untagged;  // names removed
  std::vector<Digest> deleted;        // images removed
};

struct DiskUsage {
  uint64_t images = 0, images_size = 0, layers_size = 0, content_size = 0, reclaimable = 0;
  uint64_t active = 0;  // images some tag or mount keeps
};

class ImageStore {
 public:
  // Opens (creating it) the store at `root` and repairs what a killed operation left.
  static Result<std::unique_ptr<ImageStore>> open(const std::string& root, const StoreOptions& o = {});
  ~ImageStore();

  const std::string& root() const { return root_; }
  // The metadata database, shared with the engine (its own tables).
  Db& db() { return *db_; }
  ContentStore& content() { return *content_; }

  // An operation in progress: while one lives, garbage collection leaves the
  // store alone. Take one before putting blobs that no image references yet.
  class Op {
   public:
    Op(Op&&) = default;
    Op& operator=(Op&&) = default;
    ~Op();

   private:
    friend class ImageStore;
    Op() = default;
    std::string path_;
    UniqueFd fd_;
  };
  Result<Op> begin_op();

  // Records the image whose manifest (already in the content store, with its
  // config and layer blobs) is `manifest`: unpacks the layers missing from the
  // store (in parallel), then in one transaction adds the image, points `tags`
  // at it (moving them from another image) and adds `repo_digest` if set.
  Result<ImageRecord> commit(const Digest& manifest, const std::vector<Reference>& tags,
                             const std::optional<std::string>& repo_digest = std::nullopt,
                             const UnpackProgressFn& progress = {});

  // Unpacks one layer blob (in the content store) as `chain`, unless the
  // store has that layer already (false). Safe to call from several threads
  // and processes at once; pull calls it as each blob arrives, so downloads
  // and unpacks overlap. commit() records what it made.
  Result<bool> prepare_layer(const Digest& chain, const Descriptor& blob, const Digest& diff_id,
                             const std::string& what);

  // A layer made from a blob while the blob is still arriving. A load meets an
  // archive's blobs before the manifests that say which are layers, so each
  // large blob's bytes also go through feed() into a layer of their own,
  // inflated, hashed and indexed on other threads as they come. Handed to the
  // store with keep_early_layer, it is adopted by prepare_layer when that blob
  // is a layer whose diff_id is what came out; anything else (not a layer, a
  // failure, another diff_id) is removed, and prepare_layer works as if there
  // had been none.
  class EarlyLayer {
   public:
    ~EarlyLayer();
    EarlyLayer(const EarlyLayer&) = delete;
    EarlyLayer& operator=(const EarlyLayer&) = delete;
    // The next bytes of the blob. Never fails: a layer that cannot take them
    // is simply not adopted.
    void feed(std::string_view data);
    // The blob's bytes are all in: the layer finishes on its own.
    void end();

   private:
    friend class ImageStore;
    struct Impl;
    EarlyLayer();
    std::unique_ptr<Impl> d_;
  };
  // An early layer for one blob, fed by the caller (nullptr where new layers
  // are not EROFS: the dir format is unpacked once the diff_id is known; and
  // where one cannot be made: it is only a head start).
  Result<std::unique_ptr<EarlyLayer>> start_early_layer(const std::string& what);
  // The same for a blob that is the `length` bytes at `offset` in the file
  // `fd` (an archive on disk): read from there on threads of its own, nothing
  // to feed. nullptr also when as many early layers as CPUs are still busy.
  Result<std::unique_ptr<EarlyLayer>> start_early_layer(const std::string& what, int fd, uint64_t offset,
                                                        uint64_t length);
  // The blob has arrived whole as `blob`: its layer finishes on its own.
  void keep_early_layer(const Digest& blob, std::unique_ptr<EarlyLayer> layer);
  // Waits for and removes every early layer prepare_layer did not adopt.
  void discard_early_layers();
  // How many early layers prepare_layer adopted (for tests).
  uint64_t early_layers_adopted() const { return early_adopted_; }

  // Finds an image by name ("busybox", "app:1", "localhost:5000/x@sha256:..."),
  // by ID or by a unique ID prefix of 4 or more hex digits (with or without "sha256:").
  Result<ImageRecord> resolve(std::string_view name) const;
  Result<std::vector<ImageRecord>> list() const;
  Result<> tag(const ImageRecord& image, const Reference& name);
  // Records that `name` ("repo@sha256:...") is this image in a registry (after a push).
  Result<> add_repo_digest(const ImageRecord& image, const std::string& name);

  // `docker rmi`: a name removes that tag, and the image with its last name; an
  // ID removes the image (refused when several names point at it, unless
  // `force`). An image that is mounted (`image mount`) or used by a container is
  // refused unless `force`; forced, an image containers use loses its names
  // and stays, dangling, while they do (Docker's behaviour).
  Result<RemoveResult> remove(std::string_view name, bool force);
  // Dangling images (no tag), or with `all` every image nothing uses.
  Result<RemoveResult> prune(bool all);
  Result<DiskUsage> disk_usage() const;

  // The format new layers get: the one forced by the options, else erofs when
  // this kernel mounts berth's EROFS layers (probed once per boot, the result
  // kept in layer-format.probe), else dir.
  Result<LayerFormat> layer_format();

  // Layer directories of an image, top layer first: overlay's lowerdir order.
  // An EROFS layer's directory has its files only while mounted: see
  // mounted_layer_dirs.
  std::vector<std::string> layer_dirs(const ImageRecord& image) const;
  // The same, for reading while the image is in use (a container's, mounted):
  // EROFS layers that a reboot unmounted are mounted again.
  Result<std::vector<std::string>> mounted_layer_dirs(const ImageRecord& image);

  // `image mount`: a read-only view of the rootfs, counted (each mount needs an umount).
  Result<std::string> mount(const ImageRecord& image);
  // Returns false when the image was not mounted.
  Result<bool> umount(const ImageRecord& image, bool all = false);
  Result<std::vector<std::pair<ImageRecord, std::string>>> mounts() const;

  // A container's root filesystem: an overlay of the image's layers with its
  // own upper and work dirs under `dir` (dir/upper, dir/work), mounted on
  // dir/rootfs, which is returned. `user` (a container ID) keeps the image in
  // use until remove_rootfs; rmi refuses it meanwhile. A `transient` rootfs
  // (a --rm container: its upper dir goes with its first exit) is mounted
  // `volatile`, so unmounting it does not sync the upper filesystem.
  Result<std::string> create_rootfs(const std::string& user, const ImageRecord& image, const std::string& dir,
                                    bool transient = false);
  // The image's /etc/passwd and /etc/group as a container of it first read
  // them (kept beside its top layer, which fixes them: layers never change),
  // if one did; save_etc_files keeps them (best effort).
  std::optional<std::pair<std::string, std::string>> etc_files(const ImageRecord& image) const;
  void save_etc_files(const ImageRecord& image, std::string_view passwd, std::string_view group) const;
  // Mounts a container rootfs made by create_rootfs again (after a reboot)
  // unless it is mounted, volatile again if it was; returns dir/rootfs.
  Result<std::string> mount_rootfs(const ImageRecord& image, const std::string& dir);
  // Unmounts and removes `dir`, and lets the image go. `later`: `dir` goes to
  // the trash (trash_tree), removed by whoever empties it. `with`: the
  // caller's own change to the database, made in the same transaction as the
  // image's release (the container's row going with it: a commit fewer).
  Result<> remove_rootfs(const std::string& user, const std::string& dir, bool later = false,
                         const std::function<Result<>()>& with = {});
  // What remove_rootfs will ask of the database, parsed now (Db::prepare).
  void prepare_remove_rootfs();

  // Every blob the store keeps for an image: its manifests (an image loaded or
  // pulled in several forms has several), config and layer blobs.
  Result<std::vector<Digest>> blobs(const ImageRecord& image) const;
  // The raw blob of an image's manifest or config.
  Result<std::string> read_config(const ImageRecord& image) const;
  Result<std::string> read_manifest(const ImageRecord& image) const;

  // Removes those of `blobs` that no image references (what a failed or
  // finished load put that no image kept).
  Result<> discard_blobs(const std::vector<Digest>& blobs);
  // Removes those of the layers `chains` (made by prepare_layer) that no image records.
  Result<> discard_layers(const std::vector<Digest>& chains);
  // Removes unreferenced blobs, layer dirs and temporaries when no operation is running.
  Result<> collect_garbage();

 private:
  ImageStore() = default;
  Result<> repair();
  Result<UniqueFd> lock() const;
  Result<> unpack_missing(const Manifest& m, const ImageConfig& config, const std::vector<Digest>& chain,
                          const UnpackProgressFn& progress, std::vector<Digest>* made);
  Result<std::optional<ImageRecord>> load(const std::string& id) const;
  Result<> delete_image(const std::string& id, RemoveResult* out);
  Result<> drop_unreferenced();
  Result<bool> in_use(const std::string& id) const;
  Result<> mount_layers(const ImageRecord& image);
  Result<> remove_layer_dir(const std::string& hex);
  Result<LayerFormat> probe_layer_format();
  std::unique_ptr<EarlyLayer> take_early_layer(const Digest& blob);
  Result<std::unique_ptr<EarlyLayer>> early_from_pipe(const std::string& what);
  Result<std::unique_ptr<EarlyLayer>> early_from_range(const std::string& what, int fd, uint64_t offset,
                                                       uint64_t length);

  std::string root_;
  std::unique_ptr<ContentStore> content_;
  std::unique_ptr<Db> db_;
  StoreOptions opts_;
  LayerFormat format_ = LayerFormat::kAuto;  // resolved on first use
  std::mutex format_mu_;
  std::mutex early_mu_;
  std::atomic<int> early_busy_{0};  // early layers inflating (each is joined before the store goes)
  std::atomic<uint64_t> early_adopted_{0};
  std::vector<std::pair<Digest, std::unique_ptr<EarlyLayer>>> early_;  // by blob
};

}  // namespace berth::image
