#include "image/pull.h"

#include <mutex>

#include "image/parallel.h"

namespace berth::image {

Result<PullResult> pull(ImageStore& store, const Reference& ref, const PullOptions& o, const TransferFn& events) {
  auto op = TRY(store.begin_op());
  ContentStore& cs = store.content();
  std::mutex ev_mu;
  auto emit = [&](const Digest& d, std::string_view status, uint64_t done = 0, uint64_t total = 0) {
    if (!events) return;
    std::lock_guard g(ev_mu);
    events({d, status, done, total});
  };
  std::vector<Digest> fetched;  // blobs this pull added (removed again on failure unless an image keeps them)
  std::vector<Digest> unpacked;  // layers this pull unpacked (removed again on failure unless recorded)
  std::mutex fetched_mu;
  std::optional<Digest> previous;
  if (!ref.digest)
    if (auto prev = store.resolve(ref.str())) previous = prev->id;

  auto body = [&]() -> Result<PullResult> {
    auto reg = TRY(Registry::connect(ref, o.registry));
    std::string name = ref.familiar();
    FetchedManifest top = TRY(reg->manifest(ref.digest ? ref.digest->str() : ref.tag, accepted_manifest_types()));
    std::string type = TRY_CTX(sniff_media_type(top.bytes, top.media_type), name);
    auto put = [&](const std::string& bytes, const Digest& d) -> Result<> {
      bool had = cs.has(d);
      TRY(cs.put(bytes, d, "manifest of " + name));
      if (!had) fetched.push_back(d);
      return {};
    };
    TRY(put(top.bytes, top.digest));
    FetchedManifest chosen = top;
    if (is_index_type(type)) {
      Index idx = TRY_CTX(parse_index(top.bytes), name);
      Descriptor d = TRY_CTX(select_platform(idx, o.platform), name);
      chosen = TRY(reg->manifest(d.digest.str(), accepted_manifest_types()));
      type = TRY_CTX(sniff_media_type(chosen.bytes, chosen.media_type), name);
      if (!is_manifest_type(type)) return fail(name + ": the index for " + o.platform.str() + " names another index");
      TRY(put(chosen.bytes, chosen.digest));
    }
    Manifest m = TRY_CTX(parse_manifest(chosen.bytes), name);
    // The config first: it names the diff_ids, and a wrong platform is refused
    // before any layer is fetched.
    bool had_config = cs.has(m.config.digest);
    TRY(reg->fetch_blob(m.config.digest, m.config.size, cs, "config of " + name));
    if (!had_config) fetched.push_back(m.config.digest);
    ImageConfig cfg = TRY_CTX(parse_config(TRY(cs.read(m.config.digest))), "config of " + name);
    if (!cfg.platform.architecture.empty() && !cfg.platform.matches(o.platform) && !is_index_type(top.media_type))
      return fail(name + ": the image is for " + cfg.platform.str() + ", not " + o.platform.str() +
                  " (use --platform)");

    if (cfg.diff_ids.size() != m.layers.size())
      return fail(name + ": the manifest lists " + std::to_string(m.layers.size()) + " layers, the config " +
                  std::to_string(cfg.diff_ids.size()) + " diff_ids");
    std::vector<Digest> chain = chain_ids(cfg.diff_ids);
    for (size_t i = 0; i < m.layers.size(); ++i)
      emit(m.layers[i].digest, cs.has(m.layers[i].digest) ? "Already exists"
                               : i < static_cast<size_t>(o.parallel) ? "Pulling fs layer"
                                                                     : "Waiting");
    TRY(parallel_for(m.layers.size(), static_cast<unsigned>(o.parallel), [&](size_t i) -> Result<> {
      const Descriptor& l = m.layers[i];
      if (cs.has(l.digest)) return {};
      std::string what = "layer " + std::to_string(i + 1) + " of " + name;
      TRY(reg->fetch_blob(l.digest, l.size, cs, what, [&](const Digest& d, uint64_t done, uint64_t total) {
        emit(d, "Downloading", done, total);
      }));
      {
        std::lock_guard g(fetched_mu);
        fetched.push_back(l.digest);
      }
      emit(l.digest, "Download complete", l.size, l.size);
      // Unpacked here, while the other blobs still download.
      emit(l.digest, "Extracting");
      if (TRY(store.prepare_layer(chain[i], l, cfg.diff_ids[i], what))) {
        std::lock_guard g(fetched_mu);
        unpacked.push_back(chain[i]);
      }
      emit(l.digest, "Pull complete");
      return {};
    }));

    std::vector<Reference> tags;
    if (!ref.tag.empty()) tags.push_back(ref);
    std::string repo_digest = ref.repository() + "@" + top.digest.str();
    PullResult out;
    out.digest = top.digest;
    out.image = TRY(store.commit(chosen.digest, tags, repo_digest, [&](const LayerProgress& p) {
      if (p.phase == "extracting") emit(p.blob, "Extracting");
      else if (p.phase == "done") emit(p.blob, "Pull complete");
    }));
    out.updated = !(previous && *previous == out.image.id);
    return out;
  };
  auto r = body();
  auto discarded = store.discard_blobs(fetched);
  if (discarded) discarded = store.discard_layers(unpacked);
  if (r && !discarded) return std::unexpected(std::move(discarded).error());
  return r;
}

Result<PushResult> push(ImageStore& store, const ImageRecord& image, const Reference& dest, const PullOptions& o,
                        const TransferFn& events) {
  if (dest.tag.empty() && !dest.digest) return fail("push " + dest.str() + ": a tag is needed");
  ContentStore& cs = store.content();
  std::string mbytes = TRY(store.read_manifest(image));
  Manifest m = TRY(parse_manifest(mbytes));
  auto reg = TRY(Registry::connect(dest, o.registry));
  // A repository of the same registry the image came from: blobs can be mounted from it.
  std::optional<std::string> mount_from;
  for (auto& rd : image.repo_digests) {
    auto at = rd.find('@');
    auto r = Reference::parse(rd.substr(0, at));
    if (r && r->domain == dest.domain && r->path != dest.path) mount_from = r->path;
  }
  std::mutex ev_mu;
  auto emit = [&](const Digest& d, std::string_view status, uint64_t done = 0, uint64_t total = 0) {
    if (!events) return;
    std::lock_guard g(ev_mu);
    events({d, status, done, total});
  };
  for (auto& l : m.layers) emit(l.digest, "Preparing");
  TRY(parallel_for(m.layers.size(), static_cast<unsigned>(o.parallel), [&](size_t i) -> Result<> {
    const Descriptor& l = m.layers[i];
    if (!cs.has(l.digest))
      return fail("push " + dest.familiar() + ": layer " + l.digest.str() + " is not in the store");
    if (TRY(reg->has_blob(l.digest))) {
      emit(l.digest, "Layer already exists");
      return {};
    }
    auto how = TRY(reg->push_blob(l.digest, cs, mount_from, [&](const Digest& d, uint64_t done, uint64_t total) {
      emit(d, "Pushing", done, total);
    }));
    emit(l.digest, how == Registry::Pushed::kMounted ? "Mounted from " + *mount_from
                   : how == Registry::Pushed::kExisted ? std::string("Layer already exists")
                                                       : std::string("Pushed"));
    return {};
  }));
  TRY(reg->push_blob(m.config.digest, cs));
  std::string tag = dest.digest ? dest.digest->str() : dest.tag;
  PushResult out;
  out.digest = TRY(reg->put_manifest(tag, image.manifest_type, mbytes));
  out.size = mbytes.size();
  TRY(store.add_repo_digest(image, dest.repository() + "@" + out.digest.str()));
  return out;
}

}  // namespace berth::image
