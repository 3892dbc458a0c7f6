// pull and push: moving an image between a registry and the store.
//
// A pull fetches the manifest (resolving an index to the wanted platform),
// the config and the layer blobs (several at once, as Docker does), then
// hands the manifest to ImageStore::commit, which unpacks the layers that are
// new. Blobs the store already has are not fetched again. A pull that fails
// removes the blobs it fetched and no image keeps; a pull that is killed
// leaves them to the store's repair.
#pragma once

#include <functional>
#include <string>
#include <string_view>

#include "image/manifest.h"
#include "image/reference.h"
#include "image/registry.h"
#include "image/store.h"
#include "util/error.h"

namespace berth::image {

// One line of a layer's progress, in Docker's words: "Pulling fs layer",
// "Waiting", "Downloading", "Download complete", "Extracting", "Pull complete",
// "Already exists"; for push "Preparing", "Pushing", "Pushed", "Layer already
// exists", "Mounted from <repo>". `done`/`total` are bytes where they apply.
struct TransferEvent {
  Digest blob;
  std::string_view status;
  uint64_t done = 0, total = 0;
};
using TransferFn = std::function<void(const TransferEvent&)>;

struct PullOptions {
  Platform platform = Platform::host();
  RegistryOptions registry;
  int parallel = 3;  // blobs fetched at once (Docker's max-concurrent-downloads)
};

struct PullResult {
  ImageRecord image;
  Digest digest;        // what the registry calls the image: the index or manifest digest
  bool updated = true;  // false when the store had this exact image under this name already
};

Result<PullResult> pull(ImageStore& store, const Reference& ref, const PullOptions& o, const TransferFn& events = {});

struct PushResult {
  Digest digest;  // of the manifest pushed
  uint64_t size = 0;
};

// Pushes `image` as `dest`: layer blobs (skipped when the registry has them,
// mounted across repositories of the same registry when the image came from
// one), the config, then the manifest under dest's tag.
Result<PushResult> push(ImageStore& store, const ImageRecord& image, const Reference& dest, const PullOptions& o,
                        const TransferFn& events = {});

}  // namespace berth::image
