#include "image/manifest.h"

#include <sys/utsname.h>

#include <nlohmann/json.hpp>

namespace berth::image {

using json = nlohmann::json;

namespace {

const json* member(const json& j, const char* key) {
  auto it = j.find(key);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

std::string string_member(const json& j, const char* key) {
  const json* v = member(j, key);
  return v && v->is_string() ? v->get<std::string>() : std::string();
}

Result<json> parse_json(std::string_view doc, const char* what) {
  json j = json::parse(doc, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return fail(std::string(what) + ": not valid JSON");
  if (!j.is_object()) return fail(std::string(what) + ": expected a JSON object");
  return j;
}

std::map<std::string, std::string> string_map(const json& j, const char* key) {
  std::map<std::string, std::string> out;
  const json* m = member(j, key);
  if (!m || !m->is_object()) return out;
  for (auto& [k, v] : m->items())
    if (v.is_string()) out[k] = v.get<std::string>();
  return out;
}

Result<Descriptor> parse_descriptor(const json& j, const std::string& where) {
  if (!j.is_object()) return fail(where + ": expected an object");
  Descriptor d;
  d.media_type = string_member(j, "mediaType");
  const json* dg = member(j, "digest");
  if (!dg || !dg->is_string()) return fail(where + ".digest: missing");
  d.digest = TRY_CTX(Digest::parse(dg->get<std::string>()), where + ".digest");
  const json* sz = member(j, "size");
  if (!sz || !sz->is_number_integer() || sz->get<int64_t>() < 0)
    return fail(where + ".size: expected a non-negative integer");
  d.size = sz->get<uint64_t>();
  if (const json* p = member(j, "platform"); p && p->is_object()) {
    Platform pl;
    pl.os = string_member(*p, "os");
    pl.architecture = string_member(*p, "architecture");
    pl.variant = string_member(*p, "variant");
    d.platform = pl;
  }
  d.annotations = string_map(j, "annotations");
  return d;
}

// Normalizes arm64 (variant v8 is its default) for comparisons.
std::string effective_variant(const Platform& p) {
  if (p.architecture == "arm64" && p.variant.empty()) return "v8";
  return p.variant;
}

}  // namespace

const std::vector<std::string>& accepted_manifest_types() {
  static const std::vector<std::string> types = {
      std::string(media::kOciIndex), std::string(media::kOciManifest),
      std::string(media::kDockerList), std::string(media::kDockerManifest)};
  return types;
}

bool is_index_type(std::string_view t) { return t == media::kOciIndex || t == media::kDockerList; }
bool is_manifest_type(std::string_view t) {
  return t == media::kOciManifest || t == media::kDockerManifest;
}

Result<Compression> layer_compression(std::string_view t) {
  if (t == media::kOciLayerGzip || t == media::kDockerLayer) return Compression::kGzip;
  if (t == media::kOciLayerZstd) return Compression::kZstd;
  if (t == media::kOciLayer || t == "application/vnd.docker.image.rootfs.diff.tar")
    return Compression::kNone;
  if (t == media::kDockerForeignLayer || t.starts_with("application/vnd.oci.image.layer.nondistributable"))
    return fail("layer media type \"" + std::string(t) + "\": non-distributable layers are not supported");
  return fail("unknown layer media type \"" + std::string(t) + "\"");
}

Platform Platform::host() {
  Platform p;
  struct utsname u {};
  uname(&u);
  std::string_view m = u.machine;
  if (m == "x86_64") p.architecture = "amd64";
  else if (m == "aarch64") p.architecture = "arm64", p.variant = "v8";
  else if (m == "i686" || m == "i386") p.architecture = "386";
  else if (m.starts_with("armv7")) p.architecture = "arm", p.variant = "v7";
  else if (m == "ppc64le" || m == "s390x" || m == "riscv64") p.architecture = std::string(m);
  else p.architecture = std::string(m);
  return p;
}

Result<Platform> Platform::parse(std::string_view s) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    size_t slash = s.find('/', start);
    parts.emplace_back(s.substr(start, slash == std::string_view::npos ? s.npos : slash - start));
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  Platform p;
  if (parts.size() == 1) {
    p.architecture = parts[0];
  } else if (parts.size() <= 3) {
    p.os = parts[0];
    p.architecture = parts[1];
    if (parts.size() == 3) p.variant = parts[2];
  } else {
    return fail("platform \"" + std::string(s) + "\": expected os/arch[/variant]");
  }
  for (auto& part : parts)
    if (part.empty()) return fail("platform \"" + std::string(s) + "\": empty component");
  if (p.architecture == "x86_64") p.architecture = "amd64";
  if (p.architecture == "aarch64") p.architecture = "arm64";
  return p;
}

std::string Platform::str() const {
  std::string s = os + "/" + architecture;
  if (!variant.empty()) s += "/" + variant;
  return s;
}

bool Platform::matches(const Platform& want) const {
  if (os != want.os || architecture != want.architecture) return false;
  return want.variant.empty() || effective_variant(*this) == effective_variant(want);
}

Result<std::string> sniff_media_type(std::string_view doc, std::string_view declared) {
  if (is_index_type(declared) || is_manifest_type(declared)) return std::string(declared);
  json j = TRY(parse_json(doc, "manifest"));
  std::string mt = string_member(j, "mediaType");
  if (is_index_type(mt) || is_manifest_type(mt)) return mt;
  if (!mt.empty()) return fail("manifest: unknown media type \"" + mt + "\"");
  if (!declared.empty() && declared != "application/json" && declared != "text/plain" &&
      declared != "application/octet-stream")
    return fail("manifest: unknown media type \"" + std::string(declared) + "\"");
  if (member(j, "manifests")) return std::string(media::kOciIndex);
  if (member(j, "layers")) return std::string(media::kOciManifest);
  if (member(j, "fsLayers")) return fail("manifest: Docker schema 1 manifests are not supported");
  return fail("manifest: neither an index nor an image manifest");
}

Result<Index> parse_index(std::string_view doc) {
  json j = TRY(parse_json(doc, "index"));
  Index idx;
  idx.media_type = string_member(j, "mediaType");
  if (idx.media_type.empty()) idx.media_type = media::kOciIndex;
  const json* ms = member(j, "manifests");
  if (!ms || !ms->is_array()) return fail("index.manifests: expected an array");
  for (size_t i = 0; i < ms->size(); ++i)
    idx.manifests.push_back(TRY(parse_descriptor((*ms)[i], "index.manifests[" + std::to_string(i) + "]")));
  idx.annotations = string_map(j, "annotations");
  return idx;
}

Result<Manifest> parse_manifest(std::string_view doc) {
  json j = TRY(parse_json(doc, "manifest"));
  Manifest m;
  m.media_type = string_member(j, "mediaType");
  if (m.media_type.empty()) m.media_type = media::kOciManifest;
  if (!is_manifest_type(m.media_type))
    return fail("manifest: unknown media type \"" + m.media_type + "\"");
  const json* cfg = member(j, "config");
  if (!cfg) return fail("manifest.config: missing");
  m.config = TRY(parse_descriptor(*cfg, "manifest.config"));
  const json* ls = member(j, "layers");
  if (!ls || !ls->is_array()) return fail("manifest.layers: expected an array");
  for (size_t i = 0; i < ls->size(); ++i) {
    std::string where = "manifest.layers[" + std::to_string(i) + "]";
    Descriptor d = TRY(parse_descriptor((*ls)[i], where));
    TRY_CTX(layer_compression(d.media_type), where);
    m.layers.push_back(std::move(d));
  }
  return m;
}

Result<ImageConfig> parse_config(std::string_view doc) {
  json j = TRY(parse_json(doc, "image config"));
  ImageConfig c;
  c.platform.os = string_member(j, "os");
  c.platform.architecture = string_member(j, "architecture");
  c.platform.variant = string_member(j, "variant");
  c.created = string_member(j, "created");
  const json* rootfs = member(j, "rootfs");
  if (!rootfs || !rootfs->is_object()) return fail("image config.rootfs: missing");
  const json* ids = member(*rootfs, "diff_ids");
  if (!ids || !ids->is_array()) return fail("image config.rootfs.diff_ids: expected an array");
  for (size_t i = 0; i < ids->size(); ++i) {
    if (!(*ids)[i].is_string()) return fail("image config.rootfs.diff_ids: expected strings");
    c.diff_ids.push_back(TRY_CTX(Digest::parse((*ids)[i].get<std::string>()),
                                 "image config.rootfs.diff_ids[" + std::to_string(i) + "]"));
  }
  if (const json* h = member(j, "history"); h && h->is_array()) {
    for (auto& e : *h) {
      if (!e.is_object()) continue;
      HistoryEntry he;
      he.created = string_member(e, "created");
      he.created_by = string_member(e, "created_by");
      he.comment = string_member(e, "comment");
      const json* el = member(e, "empty_layer");
      he.empty_layer = el && el->is_boolean() && el->get<bool>();
      c.history.push_back(std::move(he));
    }
  }
  return c;
}

Result<Descriptor> select_platform(const Index& index, const Platform& want) {
  std::string seen;
  for (auto& d : index.manifests) {
    if (!d.platform) continue;
    if (d.platform->matches(want) && is_manifest_type(d.media_type.empty() ? std::string(media::kOciManifest) : d.media_type))
      return d;
    if (!seen.empty()) seen += ", ";
    seen += d.platform->str();
  }
  // An index without platforms holding one manifest (as some tools write
  // them) means that manifest.
  if (index.manifests.size() == 1 && !index.manifests[0].platform) return index.manifests[0];
  return fail("no manifest for platform " + want.str() + (seen.empty() ? "" : " (there are: " + seen + ")"));
}

std::vector<Digest> chain_ids(const std::vector<Digest>& diff_ids) {
  std::vector<Digest> out;
  for (auto& d : diff_ids) {
    if (out.empty()) out.push_back(d);
    else out.push_back(sha256_of(out.back().str() + " " + d.str()));
  }
  return out;
}

namespace {
json descriptor_to_json(const Descriptor& d) {
  json j = json::object();
  j["mediaType"] = d.media_type;
  j["digest"] = d.digest.str();
  j["size"] = d.size;
  if (d.platform) {
    json p = {{"architecture", d.platform->architecture}, {"os", d.platform->os}};
    if (!d.platform->variant.empty()) p["variant"] = d.platform->variant;
    j["platform"] = p;
  }
  if (!d.annotations.empty()) j["annotations"] = d.annotations;
  return j;
}
}  // namespace

std::string descriptor_json(const Descriptor& d) { return descriptor_to_json(d).dump(); }

std::string make_manifest(const Descriptor& config, const std::vector<Descriptor>& layers) {
  json j = json::object();
  j["schemaVersion"] = 2;
  j["mediaType"] = media::kOciManifest;
  j["config"] = descriptor_to_json(config);
  json ls = json::array();
  for (auto& l : layers) ls.push_back(descriptor_to_json(l));
  j["layers"] = ls;
  return j.dump();
}

}  // namespace berth::image
