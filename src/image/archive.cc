#include "image/archive.h"

#include <archive.h>
#include <archive_entry.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <thread>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "image/decompress.h"
#include "image/layer_writer.h"
#include "image/tar_source.h"
#include "util/fs.h"

namespace berth::image {

using json = nlohmann::json;

namespace {

constexpr uint64_t kSmallFile = 4u << 20;  // JSON documents kept in memory while loading

struct WriteFree {
  void operator()(archive* a) const { archive_write_free(a); }
};
struct ReadFree {
  void operator()(archive* a) const { archive_read_free(a); }
};

class TarOut {
 public:
  explicit TarOut(int fd) : a_(archive_write_new()) {
    archive_write_set_format_pax_restricted(a_.get());
    archive_write_set_bytes_per_block(a_.get(), 10240);
    ok_ = archive_write_open_fd(a_.get(), fd) == ARCHIVE_OK;
  }
  Result<> check() {
    if (!ok_) return fail(std::string("write archive: ") + archive_error_string(a_.get()));
    return {};
  }
  Result<> header(const std::string& name, uint64_t size, bool dir = false) {
    TRY(check());
    archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, name.c_str());
    archive_entry_set_filetype(e, dir ? AE_IFDIR : AE_IFREG);
    archive_entry_set_perm(e, dir ? 0755 : 0644);
    archive_entry_set_size(e, static_cast<la_int64_t>(size));
    archive_entry_set_mtime(e, 0, 0);
    int rc = archive_write_header(a_.get(), e);
    archive_entry_free(e);
    if (rc < ARCHIVE_WARN) return fail("write archive entry " + name + ": " + archive_error_string(a_.get()));
    return {};
  }
  Result<> data(std::string_view d, const std::string& name) {
    if (d.empty()) return {};
    if (archive_write_data(a_.get(), d.data(), d.size()) != static_cast<la_ssize_t>(d.size()))
      return fail("write archive entry " + name + ": " + archive_error_string(a_.get()));
    return {};
  }
  Result<> file(const std::string& name, std::string_view d) {
    TRY(header(name, d.size()));
    return data(d, name);
  }
  Result<> blob_file(const std::string& name, ContentStore& cs, const Digest& d) {
    uint64_t size = TRY(cs.size(d));
    UniqueFd fd = TRY(cs.open_blob(d));
    TRY(header(name, size));
    std::vector<char> buf(1 << 17);
    uint64_t left = size;
    while (left) {
      ssize_t n = ::read(fd.get(), buf.data(), std::min<uint64_t>(buf.size(), left));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return n < 0 ? sys_error("read blob " + d.str()) : fail("blob " + d.str() + ": shorter than its size");
      TRY(data({buf.data(), static_cast<size_t>(n)}, name));
      left -= static_cast<uint64_t>(n);
    }
    return {};
  }
  Result<> close() {
    if (archive_write_close(a_.get()) != ARCHIVE_OK)
      return fail(std::string("write archive: ") + archive_error_string(a_.get()));
    return {};
  }

 private:
  std::unique_ptr<archive, WriteFree> a_;
  bool ok_ = false;
};

// The uncompressed layer as a tar entry: its size, recorded when the store
// unpacked it, goes in the header before the data streams through the
// decompressor; the diff_id is checked at the end (a blob changed on disk
// fails the save).
Result<> write_uncompressed_layer(TarOut& out, ContentStore& cs, const Descriptor& blob, const Digest& diff_id,
                                  uint64_t size, const std::string& name) {
  UniqueFd fd = TRY(cs.open_blob(blob.digest));
  TRY(out.header(name, size));
  Decompressor d(fd.get(), {200, 1ull << 30, "layer " + blob.digest.str()});
  TRY(d.init());
  for (;;) {
    auto chunk = TRY(d.read());
    if (chunk.empty()) break;
    if (d.uncompressed() > size) return fail("layer " + blob.digest.str() + ": longer than its recorded size");
    TRY(out.data(chunk, name));
  }
  if (d.uncompressed() != size || !(d.finish() == diff_id))
    return fail("layer " + blob.digest.str() + ": does not match its diff_id");
  return {};
}

Result<> save_docker(ImageStore& store, const std::vector<SaveItem>& items, TarOut& out) {
  ContentStore& cs = store.content();
  json manifest = json::array(), repositories = json::object();
  std::set<std::string> written;
  for (auto& item : items) {
    Manifest m = TRY(parse_manifest(TRY(store.read_manifest(item.image))));
    ImageConfig cfg = TRY(parse_config(TRY(store.read_config(item.image))));
    std::string config_name = item.image.id.hex + ".json";
    if (written.insert(config_name).second) TRY(out.blob_file(config_name, cs, item.image.id));
    json layers = json::array();
    for (size_t i = 0; i < m.layers.size(); ++i) {
      std::string name = cfg.diff_ids[i].hex + "/layer.tar";
      if (i >= item.image.layer_sizes.size()) return fail("image " + item.image.id.str() + ": layer sizes missing");
      if (written.insert(name).second)
        TRY(write_uncompressed_layer(out, cs, m.layers[i], cfg.diff_ids[i], item.image.layer_sizes[i], name));
      layers.push_back(name);
    }
    json tags = json::array();
    for (auto& n : item.names) {
      tags.push_back(n.familiar());
      if (!cfg.diff_ids.empty()) repositories[n.familiar_repository()][n.tag] = cfg.diff_ids.back().hex;
    }
    manifest.push_back({{"Config", config_name}, {"RepoTags", tags.empty() ? json(nullptr) : tags}, {"Layers", layers}});
  }
  TRY(out.file("manifest.json", manifest.dump()));
  if (!repositories.empty()) TRY(out.file("repositories", repositories.dump()));
  return {};
}

Result<> save_oci(ImageStore& store, const std::vector<SaveItem>& items, TarOut& out) {
  ContentStore& cs = store.content();
  TRY(out.file("oci-layout", R"({"imageLayoutVersion":"1.0.0"})"));
  TRY(out.header("blobs", 0, true));
  TRY(out.header("blobs/sha256", 0, true));
  std::set<std::string> written;
  auto blob = [&](const Digest& d) -> Result<> {
    if (!written.insert(d.hex).second) return {};
    return out.blob_file("blobs/sha256/" + d.hex, cs, d);
  };
  json manifests = json::array();
  for (auto& item : items) {
    Manifest m = TRY(parse_manifest(TRY(store.read_manifest(item.image))));
    TRY(blob(item.image.manifest));
    TRY(blob(m.config.digest));
    for (auto& l : m.layers) TRY(blob(l.digest));
    json desc = {{"mediaType", item.image.manifest_type},
                 {"digest", item.image.manifest.str()},
                 {"size", TRY(cs.size(item.image.manifest))}};
    if (item.names.empty()) manifests.push_back(desc);
    for (auto& n : item.names) {
      json d = desc;
      d["annotations"] = {{"io.containerd.image.name", n.str()}, {"org.opencontainers.image.ref.name", n.tag}};
      manifests.push_back(d);
    }
  }
  json index = {{"schemaVersion", 2}, {"mediaType", media::kOciIndex}, {"manifests", manifests}};
  return out.file("index.json", index.dump());
}

// ------------------------------------------------------------------ load --

struct ArchiveFiles {
  std::map<std::string, Digest> blobs;       // entry name -> content digest
  std::map<std::string, std::string> small;  // entry name -> bytes (JSON documents)
};

std::string clean_name(std::string n) {
  while (n.starts_with("./")) n.erase(0, 2);
  return n;
}

// Runs `f` and returns what it returns; with `behind`, on a thread of its own
// at nice +10: what a load waits for is its early layers, so storing blobs
// takes the CPU time they leave (a synth load 4% faster, debian 5%). A thread
// of its own because lowering a thread's priority is for good without
// CAP_SYS_NICE, and threads started later would inherit it.
template <typename F>
auto behind_early_layers(bool behind, F&& f) -> decltype(f()) {
  if (!behind) return f();
  std::optional<decltype(f())> r;
  std::thread t([&] {
    errno = 0;
    int was = ::getpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()));
    if (errno == 0) (void)::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), std::min(was + 10, 19));
    r.emplace(f());
  });
  t.join();
  return std::move(*r);
}

// Whether a large blob is worth an early layer: not when the store has the
// blob already (its layer came with it), and only when its first bytes are
// gzip, zstd or a tar header (`fd` >= 0: read at `off`).
bool may_be_new_layer(const ContentStore& cs, const std::string& name, int fd, uint64_t off) {
  if (name.starts_with("blobs/sha256/"))
    if (auto d = Digest::parse("sha256:" + name.substr(13)); d && cs.has(*d)) return false;
  if (fd < 0) return true;
  unsigned char h[512] = {};
  if (::pread(fd, h, sizeof h, static_cast<off_t>(off)) != static_cast<ssize_t>(sizeof h)) return false;
  return (h[0] == 0x1f && h[1] == 0x8b) || (h[0] == 0x28 && h[1] == 0xb5 && h[2] == 0x2f && h[3] == 0xfd) ||
         std::memcmp(h + 257, "ustar", 5) == 0;
}

// An OCI layout's blobs are named by their digest: the bytes must match it.
Result<std::optional<Digest>> entry_digest(const std::string& name) {
  if (!name.starts_with("blobs/sha256/")) return std::nullopt;
  auto d = Digest::parse("sha256:" + name.substr(13));
  if (!d) return fail("archive: entry " + name + ": not a sha256 digest");
  return *d;
}

// The next regular file's header (nullptr at the end); other entries are skipped.
template <typename FailFn>
Result<archive_entry*> next_file(archive* a, const FailFn& archive_fail) {
  for (;;) {
    archive_entry* e = nullptr;
    int r = archive_read_next_header(a, &e);
    if (r == ARCHIVE_EOF) return nullptr;
    if (r < ARCHIVE_WARN) return archive_fail("read");
    if (archive_entry_filetype(e) == AE_IFREG) return e;
  }
}

la_ssize_t read_decompressed(archive*, void* self, const void** buf) {
  auto* d = static_cast<std::pair<Decompressor*, std::optional<Error>>*>(self);
  auto r = d->first->read();
  if (!r) {
    d->second = r.error();
    return -1;
  }
  *buf = r->data();
  return static_cast<la_ssize_t>(r->size());
}

// Blobs this large may be layers: they are made into early layers as they are
// read (ImageStore::EarlyLayer), so inflating overlaps reading and storing.
constexpr uint64_t kEarlyLayerMin = 1 << 20;

// An archive as a stream (a pipe, or compressed): every regular file read
// through libarchive into the content store; a large one is also fed to an
// early layer as it passes.
Result<ArchiveFiles> read_archive_stream(ImageStore& store, int fd, std::vector<Digest>& ingested) {
  ContentStore& cs = store.content();
  ArchiveFiles files;
  // Nothing checks the archive's own digest: its blobs are hashed as they are stored.
  Decompressor dec(fd, {.max_ratio = 1000, .ratio_floor = 1ull << 40, .what = "archive", .hash = false});
  TRY(dec.init());
  std::pair<Decompressor*, std::optional<Error>> ctx{&dec, std::nullopt};
  std::unique_ptr<archive, ReadFree> a(archive_read_new());
  archive_read_support_format_tar(a.get());
  auto archive_fail = [&](const std::string& doing) -> std::unexpected<Error> {
    if (ctx.second) return std::unexpected(*ctx.second);
    const char* m = archive_error_string(a.get());
    return fail("archive: " + doing + ": " + (m ? m : "unknown error"));
  };
  if (archive_read_open(a.get(), &ctx, nullptr, read_decompressed, nullptr) != ARCHIVE_OK)
    return archive_fail("not a tar archive");
  std::vector<char> buf(1 << 17);
  for (;;) {
    archive_entry* e = TRY(next_file(a.get(), archive_fail));
    if (!e) break;
    std::string name = clean_name(archive_entry_pathname(e) ? archive_entry_pathname(e) : "");
    la_int64_t size = archive_entry_size(e);
    std::optional<Digest> expect = TRY(entry_digest(name));
    auto w = TRY(cs.writer(expect, static_cast<uint64_t>(size), "archive entry " + name));
    std::string kept;
    bool keep = static_cast<uint64_t>(size) <= kSmallFile;
    std::unique_ptr<ImageStore::EarlyLayer> early;
    if (static_cast<uint64_t>(size) >= kEarlyLayerMin && may_be_new_layer(cs, name, -1, 0))
      early = TRY(store.start_early_layer("archive entry " + name));
    for (;;) {
      la_ssize_t n = archive_read_data(a.get(), buf.data(), buf.size());
      if (n < 0) return archive_fail("entry " + name);
      if (n == 0) break;
      std::string_view chunk(buf.data(), static_cast<size_t>(n));
      TRY(w.write(chunk));
      if (early) early->feed(chunk);
      if (keep) kept.append(chunk);
    }
    // The layer finishes while the blob is made durable.
    if (early) early->end();
    Digest d = TRY(w.commit());
    store.keep_early_layer(d, std::move(early));
    ingested.push_back(d);
    files.blobs[name] = d;
    if (keep) files.small[name] = std::move(kept);
  }
  return files;
}


// An uncompressed archive in a regular file: entries' data is read where it
// lies (pread), never through libarchive, and a large blob's early layer
// reads it on threads of its own while this one stores it.
Result<ArchiveFiles> read_archive_file(ImageStore& store, int fd, uint64_t start, uint64_t file_size,
                                       std::vector<Digest>& ingested) {
  ContentStore& cs = store.content();
  ArchiveFiles files;
  PreadSource src{.fd = fd, .start = start, .size = file_size};
  std::unique_ptr<archive, ReadFree> a(archive_read_new());
  archive_read_support_format_tar(a.get());
  set_pread_source(a.get(), src);
  auto archive_fail = [&](const std::string& doing) -> std::unexpected<Error> {
    if (src.error) return std::unexpected(Error(*src.error).context("archive"));
    const char* m = archive_error_string(a.get());
    return fail("archive: " + doing + ": " + (m ? m : "unknown error"));
  };
  if (archive_read_open1(a.get()) != ARCHIVE_OK) return archive_fail("not a tar archive");
  // The headers first (the data is skipped by seeking), so every large blob's
  // early layer can start before any blob is stored: small blobs' fsyncs and
  // large blobs' copies then overlap the inflating.
  struct Entry {
    std::string name;
    uint64_t off = 0, size = 0;
    std::unique_ptr<ImageStore::EarlyLayer> early;
  };
  std::vector<Entry> entries;
  for (;;) {
    archive_entry* e = TRY(next_file(a.get(), archive_fail));
    if (!e) break;
    Entry en{clean_name(archive_entry_pathname(e) ? archive_entry_pathname(e) : ""), entry_data_offset(a.get(), src),
             static_cast<uint64_t>(std::max<la_int64_t>(archive_entry_size(e), 0))};
    if (en.off > file_size || en.size > file_size - en.off) return fail("archive: entry " + en.name + ": truncated");
    // A sparse entry's bytes are not where its data lies (a stream expands its holes): none in an image archive.
    if (archive_entry_sparse_count(e) > 0) return fail("archive: entry " + en.name + ": sparse files are not supported");
    if (archive_read_data_skip(a.get()) < ARCHIVE_WARN) return archive_fail("entry " + en.name);
    entries.push_back(std::move(en));
  }
  // The stream ends where the reader stopped: a caller's fd (stdin redirected
  // from a file) is left after the archive, as a read() would have.
  (void)::lseek(fd, static_cast<off_t>(src.start + static_cast<uint64_t>(archive_filter_bytes(a.get(), 0))), SEEK_SET);
  // As many as the store runs at once now; the others as earlier ones finish.
  auto start_early = [&](Entry& en) -> Result<> {
    if (en.size >= kEarlyLayerMin && !en.early && may_be_new_layer(cs, en.name, fd, en.off))
      en.early = TRY(store.start_early_layer("archive entry " + en.name, fd, en.off, en.size));
    return {};
  };
  for (auto& en : entries) TRY(start_early(en));
  bool started_early = std::any_of(entries.begin(), entries.end(), [](const Entry& en) { return en.early != nullptr; });
  for (auto& en : entries) {
    const std::string& name = en.name;
    std::string what = "archive entry " + name;
    uint64_t size = en.size, off = en.off;
    std::optional<Digest> expect = TRY(entry_digest(name));
    TRY(start_early(en));
    std::string kept;
    Digest d = TRY(behind_early_layers(started_early, [&]() -> Result<Digest> {
      if (size > kSmallFile) return cs.ingest_range(fd, off, size, expect, what);
      kept.resize(size);
      for (uint64_t got = 0; got < size;) {
        ssize_t n = ::pread(fd, kept.data() + got, size - got, static_cast<off_t>(off + got));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return n < 0 ? sys_error("archive: entry " + name) : fail("archive: entry " + name + ": truncated");
        got += static_cast<uint64_t>(n);
      }
      return cs.put(kept, expect, what);
    }));
    if (size <= kSmallFile) files.small[name] = std::move(kept);
    store.keep_early_layer(d, std::move(en.early));
    ingested.push_back(d);
    files.blobs[name] = d;
  }
  return files;
}

// Reads every regular file of the archive into the content store.
// `ingested` collects every blob put, also when reading fails half way.
Result<ArchiveFiles> read_archive(ImageStore& store, int fd, std::vector<Digest>& ingested) {
  struct stat st;
  off_t start = ::lseek(fd, 0, SEEK_CUR);
  if (start >= 0 && ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && start <= st.st_size) {
    unsigned char m[4] = {};
    ssize_t n = ::pread(fd, m, sizeof m, start);
    bool compressed = (n >= 2 && m[0] == 0x1f && m[1] == 0x8b) ||
                      (n == 4 && m[0] == 0x28 && m[1] == 0xb5 && m[2] == 0x2f && m[3] == 0xfd);
    if (!compressed) return read_archive_file(store, fd, static_cast<uint64_t>(start), static_cast<uint64_t>(st.st_size), ingested);
  }
  return read_archive_stream(store, fd, ingested);
}

std::string sniff_layer_type(ContentStore& cs, const Digest& d) {
  auto fd = cs.open_blob(d);
  unsigned char m[4] = {};
  if (fd && ::pread(fd->get(), m, 4, 0) == 4) {
    if (m[0] == 0x1f && m[1] == 0x8b) return std::string(media::kOciLayerGzip);
    if (m[0] == 0x28 && m[1] == 0xb5 && m[2] == 0x2f && m[3] == 0xfd) return std::string(media::kOciLayerZstd);
  }
  return std::string(media::kOciLayer);
}

Result<std::vector<std::pair<Digest, std::vector<Reference>>>> docker_images(ContentStore& cs, const ArchiveFiles& f,
                                                                             std::vector<Digest>& made) {
  json manifest = json::parse(f.small.at("manifest.json"), nullptr, false);
  if (!manifest.is_array()) return fail("archive: manifest.json: expected an array");
  std::vector<std::pair<Digest, std::vector<Reference>>> out;
  for (size_t i = 0; i < manifest.size(); ++i) {
    const json& m = manifest[i];
    std::string where = "archive: manifest.json[" + std::to_string(i) + "]";
    if (!m.is_object() || !m.contains("Config") || !m["Config"].is_string() || !m.contains("Layers") ||
        !m["Layers"].is_array())
      return fail(where + ": expected Config and Layers");
    std::string cname = clean_name(m["Config"].get<std::string>());
    auto cfg = f.blobs.find(cname);
    if (cfg == f.blobs.end()) return fail(where + ": config " + cname + " is not in the archive");
    Descriptor cd{std::string(media::kOciConfig), cfg->second, TRY(cs.size(cfg->second))};
    std::vector<Descriptor> layers;
    for (auto& l : m["Layers"]) {
      if (!l.is_string()) return fail(where + ".Layers: expected strings");
      std::string lname = clean_name(l.get<std::string>());
      auto b = f.blobs.find(lname);
      if (b == f.blobs.end()) return fail(where + ": layer " + lname + " is not in the archive");
      layers.push_back({sniff_layer_type(cs, b->second), b->second, TRY(cs.size(b->second))});
    }
    std::string doc = make_manifest(cd, layers);
    Digest md = TRY(cs.put(doc, std::nullopt, "manifest"));
    made.push_back(md);
    std::vector<Reference> names;
    if (m.contains("RepoTags") && m["RepoTags"].is_array())
      for (auto& t : m["RepoTags"])
        if (t.is_string()) names.push_back(TRY_CTX(Reference::parse(t.get<std::string>()), where + ".RepoTags"));
    out.emplace_back(md, std::move(names));
  }
  return out;
}

Result<std::vector<std::pair<Digest, std::vector<Reference>>>> oci_images(ContentStore& cs, const ArchiveFiles& f,
                                                                          const Platform& platform) {
  Index index = TRY_CTX(parse_index(f.small.at("index.json")), "archive: index.json");
  std::map<std::string, std::pair<Digest, std::vector<Reference>>> by_manifest;
  std::vector<std::string> order;
  for (auto& d : index.manifests) {
    Descriptor m = d;
    std::string type = m.media_type;
    for (int depth = 0; is_index_type(type) || type.empty(); ++depth) {
      if (depth > 4) return fail("archive: index.json: indexes nested too deep");
      std::string doc = TRY_CTX(cs.read(m.digest), "archive: blob " + m.digest.str());
      type = TRY(sniff_media_type(doc, type));
      if (!is_index_type(type)) break;
      m = TRY(select_platform(TRY(parse_index(doc)), platform));
      type = m.media_type;
    }
    if (!cs.has(m.digest)) return fail("archive: manifest " + m.digest.str() + " is not in the archive");
    auto [it, fresh] = by_manifest.try_emplace(m.digest.str(), m.digest, std::vector<Reference>{});
    if (fresh) order.push_back(m.digest.str());
    std::optional<Reference> name;
    if (auto n = d.annotations.find("io.containerd.image.name"); n != d.annotations.end())
      name = TRY_CTX(Reference::parse(n->second), "archive: index.json annotation io.containerd.image.name");
    else if (auto r = d.annotations.find("org.opencontainers.image.ref.name");
             r != d.annotations.end() && r->second.find_first_of("/:") != std::string::npos)
      if (auto ref = Reference::parse(r->second)) name = *ref;
    if (name) it->second.second.push_back(*name);
  }
  std::vector<std::pair<Digest, std::vector<Reference>>> out;
  for (auto& k : order) out.push_back(by_manifest[k]);
  return out;
}

}  // namespace

Result<ArchiveFormat> parse_archive_format(std::string_view s) {
  if (s == "docker-archive" || s == "docker") return ArchiveFormat::kDockerArchive;
  if (s == "oci-archive" || s == "oci") return ArchiveFormat::kOciArchive;
  return fail("unknown archive format \"" + std::string(s) + "\" (docker-archive or oci-archive)");
}

Result<> save_images(ImageStore& store, const std::vector<SaveItem>& items, ArchiveFormat format, int out_fd) {
  TarOut out(out_fd);
  if (format == ArchiveFormat::kDockerArchive) TRY(save_docker(store, items, out));
  else TRY(save_oci(store, items, out));
  return out.close();
}

Result<std::vector<LoadedImage>> load_images(ImageStore& store, int in_fd, const Platform& platform,
                                             const UnpackProgressFn& progress) {
  auto op = TRY(store.begin_op());
  ContentStore& cs = store.content();
  std::vector<Digest> made;
  auto body = [&]() -> Result<std::vector<LoadedImage>> {
    ArchiveFiles f = TRY(read_archive(store, in_fd, made));
    std::vector<std::pair<Digest, std::vector<Reference>>> images;
    if (f.small.count("manifest.json")) images = TRY(docker_images(cs, f, made));
    else if (f.small.count("index.json")) images = TRY(oci_images(cs, f, platform));
    else return fail("archive: neither a docker-archive (manifest.json) nor an OCI archive (index.json)");
    std::vector<LoadedImage> out;
    for (auto& [md, names] : images) {
      ImageRecord rec = TRY(store.commit(md, names, std::nullopt, progress));
      out.push_back({std::move(rec), names});
    }
    return out;
  };
  auto r = body();
  store.discard_early_layers();
  // Whatever this load put that no image kept (legacy files, or everything on failure).
  auto discarded = store.discard_blobs(made);
  if (r && !discarded) return std::unexpected(std::move(discarded).error());
  return r;
}

Result<std::string> apply_changes(const std::string& config_json, const std::vector<std::string>& changes) {
  json c = json::parse(config_json, nullptr, false);
  if (!c.is_object()) c = json::object();
  auto words = [](const std::string& v) -> json {
    json parsed = json::parse(v, nullptr, false);
    if (parsed.is_array()) {
      for (auto& x : parsed)
        if (!x.is_string()) return json();
      return parsed;
    }
    return json::array({"/bin/sh", "-c", v});
  };
  for (auto& ch : changes) {
    auto sp = ch.find_first_of(" \t");
    std::string ins = ch.substr(0, sp), arg = sp == std::string::npos ? "" : ch.substr(sp + 1);
    for (auto& x : ins) x = static_cast<char>(std::toupper(static_cast<unsigned char>(x)));
    while (!arg.empty() && (arg[0] == ' ' || arg[0] == '\t')) arg.erase(0, 1);
    auto bad = [&] { return fail("--change \"" + ch + "\": invalid " + ins + " instruction"); };
    if (ins == "CMD" || ins == "ENTRYPOINT") {
      json w = words(arg);
      if (w.is_null()) return bad();
      c[ins == "CMD" ? "Cmd" : "Entrypoint"] = w;
    } else if (ins == "ENV" || ins == "LABEL") {
      auto eq = arg.find('=');
      auto sp2 = arg.find(' ');
      std::string k, v;
      if (eq != std::string::npos && (sp2 == std::string::npos || eq < sp2)) k = arg.substr(0, eq), v = arg.substr(eq + 1);
      else if (sp2 != std::string::npos) k = arg.substr(0, sp2), v = arg.substr(sp2 + 1);
      else return bad();
      if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
      if (ins == "ENV") {
        json env = c.contains("Env") && c["Env"].is_array() ? c["Env"] : json::array();
        json out = json::array();
        for (auto& e : env)
          if (e.is_string() && !e.get<std::string>().starts_with(k + "=")) out.push_back(e);
        out.push_back(k + "=" + v);
        c["Env"] = out;
      } else {
        c["Labels"][k] = v;
      }
    } else if (ins == "EXPOSE") {
      if (arg.empty()) return bad();
      for (auto& p : split(arg, ' '))
        if (!p.empty()) c["ExposedPorts"][p.find('/') == std::string::npos ? p + "/tcp" : p] = json::object();
    } else if (ins == "VOLUME") {
      json w = json::parse(arg, nullptr, false);
      if (!w.is_array()) w = json::array({arg});
      for (auto& v : w) c["Volumes"][v.get<std::string>()] = json::object();
    } else if (ins == "USER" || ins == "WORKDIR" || ins == "STOPSIGNAL") {
      if (arg.empty()) return bad();
      c[ins == "USER" ? "User" : ins == "WORKDIR" ? "WorkingDir" : "StopSignal"] = arg;
    } else {
      return fail("--change \"" + ch + "\": unsupported instruction " + ins +
                  " (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR)");
    }
  }
  return c.dump();
}

Result<ImageRecord> import_rootfs(ImageStore& store, int in_fd, const ImportOptions& o) {
  std::string config = TRY(apply_changes("{}", o.changes));
  auto op = TRY(store.begin_op());
  ContentStore& cs = store.content();
  std::vector<Digest> made;
  auto body = [&]() -> Result<ImageRecord> {
    Digest blob = TRY(cs.ingest(in_fd, std::nullopt, std::nullopt, "imported tarball"));
    made.push_back(blob);
    UniqueFd fd = TRY(cs.open_blob(blob));
    Decompressor d(fd.get(), {200, 1ull << 30, "imported tarball"});
    TRY(d.init());
    TRY(d.drain());
    Digest diff_id = d.finish();
    std::string type = d.kind() == Decompressor::Kind::kGzip   ? std::string(media::kOciLayerGzip)
                       : d.kind() == Decompressor::Kind::kZstd ? std::string(media::kOciLayerZstd)
                                                               : std::string(media::kOciLayer);
    std::string created = rfc3339(::time(nullptr));
    std::string cfg = make_config(config, {diff_id}, {"berth import"}, created);
    if (!o.message.empty()) {
      json j = json::parse(cfg);
      j["history"][0]["comment"] = o.message;
      cfg = j.dump();
    }
    Descriptor cd{std::string(media::kOciConfig), TRY(cs.put(cfg, std::nullopt, "image config")), cfg.size()};
    made.push_back(cd.digest);
    Digest md = TRY(cs.put(make_manifest(cd, {{type, blob, TRY(cs.size(blob))}}), std::nullopt, "manifest"));
    made.push_back(md);
    std::vector<Reference> names;
    if (o.name) names.push_back(*o.name);
    return store.commit(md, names);
  };
  auto r = body();
  auto discarded = store.discard_blobs(made);
  if (r && !discarded) return std::unexpected(std::move(discarded).error());
  return r;
}

}  // namespace berth::image

