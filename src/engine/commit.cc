// `berth commit` and `container prune`: the container verbs that make or drop
// images and many containers at once (engine.h).
#include <ctime>
#include <nlohmann/json.hpp>

#include "engine/engine.h"
#include "image/archive.h"
#include "image/layer_writer.h"
#include "image/manifest.h"
#include "image/store.h"
#include "runtime/container.h"

namespace berth::engine {

using json = nlohmann::json;

Result<std::string> Engine::commit(const std::string& key, const CommitOptions& o) {
  Container c = TRY(find(key));
  std::optional<image::Reference> ref;
  if (!o.reference.empty()) ref = TRY_CTX(image::Reference::parse(o.reference), "commit");
  image::ImageRecord img = TRY(store_->resolve(c.image_id));
  json base = json::parse(TRY(store_->read_config(img)), nullptr, false);
  image::Manifest manifest = TRY(image::parse_manifest(TRY(store_->read_manifest(img))));
  if (!base.is_object()) return fail("image " + img.id.hex.substr(0, 12) + ": its config is not an object");

  // Docker pauses the container while its upper dir is read, so the layer is
  // one moment's state.
  runtime::Globals g;
  g.root = runtime_root();
  bool paused = false;
  if (o.pause && c.state == "running") paused = static_cast<bool>(runtime::pause(g, c.id));
  struct Resume {
    std::function<void()> f;
    ~Resume() { f(); }
  } resume{[&] {
    if (paused) (void)runtime::resume(g, c.id);
  }};

  auto op = TRY(store_->begin_op());
  image::ContentStore& cs = store_->content();
  std::vector<image::Digest> made;
  auto body = [&]() -> Result<std::string> {
    auto w = TRY(image::LayerWriter::create(cs, "commit " + c.name));
    TRY(w->tree(c.dir + "/upper", true));
    image::LayerBlob layer = TRY(w->finish());
    made.push_back(layer.descriptor.digest);
    if (paused) (void)runtime::resume(g, c.id), paused = false;

    // The image's config, then what the container was created with, then --change.
    json cfg = base.value("config", json::object());
    json created_with = json::parse(c.config, nullptr, false);
    if (created_with.is_object())
      for (auto* k : {"Cmd", "Entrypoint", "Env", "WorkingDir", "User", "Labels", "ExposedPorts", "Volumes",
                      "StopSignal", "Healthcheck"})
        if (created_with.contains(k) && !created_with[k].is_null() &&
            !(created_with[k].is_object() && created_with[k].empty()))
          cfg[k] = created_with[k];
    cfg = json::parse(TRY(image::apply_changes(cfg.dump(), o.changes)), nullptr, false);
    std::string now = image::rfc3339(::time(nullptr));
    json out = base;
    out["config"] = cfg;
    out["created"] = now;
    if (!o.author.empty()) out["author"] = o.author;
    out["rootfs"]["type"] = "layers";
    out["rootfs"]["diff_ids"].push_back(layer.diff_id.str());
    json h = {{"created", now}, {"created_by", "berth commit " + c.name}};
    if (!o.author.empty()) h["author"] = o.author;
    if (!o.message.empty()) h["comment"] = o.message;
    out["history"].push_back(h);
    std::string config_text = out.dump();
    image::Descriptor cd{std::string(image::media::kOciConfig),
                         TRY(cs.put(config_text, std::nullopt, "image config")), config_text.size()};
    made.push_back(cd.digest);
    std::vector<image::Descriptor> layers = manifest.layers;
    layers.push_back(layer.descriptor);
    image::Digest md = TRY(cs.put(image::make_manifest(cd, layers), std::nullopt, "manifest"));
    made.push_back(md);
    std::vector<image::Reference> names;
    if (ref) names.push_back(*ref);
    image::ImageRecord rec = TRY(store_->commit(md, names));
    return rec.id.str();
  };
  auto r = body();
  // What the new image does not keep (all of it, on failure) goes again.
  auto discarded = store_->discard_blobs(made);
  if (r && !discarded) return std::unexpected(std::move(discarded).error());
  if (r) (void)record_event(c, "commit");
  return r;
}

Result<std::vector<std::string>> Engine::prune() {
  std::vector<std::string> removed;
  for (auto& c : TRY(list())) {
    if (c.state != "exited" && c.state != "created") continue;
    if (auto r = remove(c.id, false, false); r) removed.push_back(c.id);
  }
  return removed;
}

}  // namespace berth::engine
