// Image references: parsing follows Docker's grammar (distribution/reference)
// and its normalization (ParseNormalizedNamed), so that a name means here what
// it means to `docker pull`.
#include "image/reference.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>

namespace berth::image {

namespace {

constexpr std::string_view kDefaultDomain = "docker.io";
constexpr size_t kNameMax = 255;
constexpr size_t kTagMax = 128;

bool lower_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
bool alnum(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; }

// path-component := [a-z0-9]+ ((\.|_|__|-+) [a-z0-9]+)*
bool valid_path_component(std::string_view c) {
  size_t i = 0;
  for (;;) {
    size_t start = i;
    while (i < c.size() && lower_alnum(c[i])) ++i;
    if (i == start) return false;  // empty, or a separator at the start or doubled
    if (i == c.size()) return true;
    size_t sep = i;
    while (i < c.size() && !lower_alnum(c[i])) ++i;
    std::string_view s = c.substr(sep, i - sep);
    bool ok = s == "." || s == "_" || s == "__" || s.find_first_not_of('-') == std::string_view::npos;
    if (!ok) return false;
  }
}

// domain := (component ('.' component)* | '[' ipv6 ']') (':' port)?
// component := [a-zA-Z0-9] | [a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]
bool valid_domain(std::string_view d) {
  std::string_view host = d, port;
  if (d.starts_with('[')) {
    size_t close = d.find(']');
    if (close == std::string_view::npos || close == 1) return false;
    if (d.substr(1, close - 1).find_first_not_of("0123456789abcdefABCDEF:") != std::string_view::npos) return false;
    host = {};
    std::string_view rest = d.substr(close + 1);
    if (!rest.empty()) {
      if (rest[0] != ':') return false;
      port = rest.substr(1);
      if (port.empty()) return false;
    }
  } else if (size_t colon = d.find(':'); colon != std::string_view::npos) {
    host = d.substr(0, colon);
    port = d.substr(colon + 1);
    if (port.empty()) return false;
  }
  if (port.find_first_not_of("0123456789") != std::string_view::npos) return false;
  if (!d.starts_with('[')) {
    if (host.empty()) return false;
    size_t i = 0;
    while (i <= host.size()) {
      size_t dot = host.find('.', i);
      std::string_view c = host.substr(i, dot == std::string_view::npos ? std::string_view::npos : dot - i);
      if (c.empty() || !alnum(c.front()) || !alnum(c.back())) return false;
      for (char ch : c)
        if (!alnum(ch) && ch != '-') return false;
      if (dot == std::string_view::npos) break;
      i = dot + 1;
    }
  }
  return true;
}

// tag := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
bool valid_tag(std::string_view t) {
  if (t.empty() || t.size() > kTagMax || t[0] == '.' || t[0] == '-') return false;
  for (char c : t)
    if (!alnum(c) && c != '_' && c != '.' && c != '-') return false;
  return true;
}

// Docker reads a first component as a domain only when it looks like one: a
// '.' or ':' in it, "localhost", or upper case (which a path may not have).
bool looks_like_domain(std::string_view c) {
  if (c == "localhost" || c.find_first_of(".:") != std::string_view::npos) return true;
  for (char ch : c)
    if (std::isupper(static_cast<unsigned char>(ch))) return true;
  return false;
}

}  // namespace

Result<Reference> Reference::parse(std::string_view s) {
  auto bad = [&](std::string_view why) { return fail("reference \"" + std::string(s) + "\": " + std::string(why)); };
  if (s.empty()) return bad("empty");
  // A bare image ID is not a name (Docker refuses it for the same reason).
  if (s.size() == 64 && s.find_first_not_of("0123456789abcdef") == std::string_view::npos)
    return bad("a 64-character hex string is an ID, not a repository name");

  Reference r;
  std::string_view name = s;
  if (size_t at = name.find('@'); at != std::string_view::npos) {
    auto d = Digest::parse(name.substr(at + 1));
    if (!d) return std::unexpected(std::move(d).error().context("reference \"" + std::string(s) + "\""));
    r.digest = *d;
    name = name.substr(0, at);
  }
  // The tag's ':' is the one after the last '/' (an earlier one is a port).
  size_t slash = name.rfind('/');
  size_t colon = name.find(':', slash == std::string_view::npos ? 0 : slash);
  if (colon != std::string_view::npos) {
    std::string_view tag = name.substr(colon + 1);
    if (!valid_tag(tag)) return bad("invalid tag \"" + std::string(tag) + "\"");
    r.tag = tag;
    name = name.substr(0, colon);
  }
  if (name.empty()) return bad("no repository name");

  std::string_view rest = name;
  size_t first = name.find('/');
  if (first != std::string_view::npos && looks_like_domain(name.substr(0, first))) {
    std::string_view domain = name.substr(0, first);
    if (!valid_domain(domain)) return bad("invalid registry domain \"" + std::string(domain) + "\"");
    r.domain = domain == "index.docker.io" ? std::string(kDefaultDomain) : std::string(domain);
    rest = name.substr(first + 1);
  } else {
    r.domain = kDefaultDomain;
  }
  for (char c : rest)
    if (std::isupper(static_cast<unsigned char>(c))) return bad("repository name must be lowercase");
  for (size_t i = 0;;) {
    size_t next = rest.find('/', i);
    std::string_view c = rest.substr(i, next == std::string_view::npos ? std::string_view::npos : next - i);
    if (c.empty()) return bad("empty path component");
    if (!valid_path_component(c)) return bad("invalid path component \"" + std::string(c) + "\"");
    if (next == std::string_view::npos) break;
    i = next + 1;
  }
  r.path = rest;
  if (r.domain == kDefaultDomain && r.path.find('/') == std::string::npos) r.path = "library/" + r.path;
  if (r.tag.empty() && !r.digest) r.tag = "latest";
  if (r.repository().size() > kNameMax)
    return bad("repository name longer than " + std::to_string(kNameMax) + " characters");
  return r;
}

std::string Reference::repository() const { return domain + "/" + path; }

namespace {

std::string with_tag_and_digest(std::string s, const Reference& r) {
  if (!r.tag.empty()) s += ":" + r.tag;
  if (r.digest) s += "@" + r.digest->str();
  return s;
}

}  // namespace

std::string Reference::str() const { return with_tag_and_digest(repository(), *this); }

std::string Reference::familiar_repository() const {
  if (domain != kDefaultDomain) return repository();
  std::string_view p = path;
  if (p.starts_with("library/") && p.find('/', 8) == std::string_view::npos) p.remove_prefix(8);
  return std::string(p);
}

std::string Reference::familiar() const { return with_tag_and_digest(familiar_repository(), *this); }

std::string Reference::manifest_ref() const { return !tag.empty() ? tag : (digest ? digest->str() : "latest"); }

bool Reference::loopback() const {
  std::string host = domain;
  if (host.starts_with('[')) {
    host = host.substr(1, host.find(']') - 1);
  } else if (size_t colon = host.find(':'); colon != std::string::npos) {
    host.resize(colon);
  }
  for (char& c : host) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (host == "localhost") return true;
  unsigned char a[16];
  if (::inet_pton(AF_INET, host.c_str(), a) == 1) return a[0] == 127;
  if (::inet_pton(AF_INET6, host.c_str(), a) == 1) {
    static const unsigned char kLoop6[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    return std::equal(a, a + 16, kLoop6);
  }
  return false;
}

}  // namespace berth::image
