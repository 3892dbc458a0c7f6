#include "cli/berth/format.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>
#include <stdexcept>

namespace berth::cli {

using json = nlohmann::json;

void print(const std::string& s) { std::fwrite(s.data(), 1, s.size(), stdout); }

std::string human_size(double bytes) {
  static const char* units[] = {"B", "kB", "MB", "GB", "TB", "PB"};
  int i = 0;
  while (bytes >= 1000 && i < 5) {
    bytes /= 1000;
    ++i;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g%s", bytes, units[i]);
  return buf;
}

std::string time_ago(int64_t t) {
  if (t <= 0) return "N/A";
  double s = std::difftime(std::time(nullptr), static_cast<time_t>(t));
  if (s < 0) s = 0;
  auto n = [](double v, const char* unit) {
    long k = static_cast<long>(v);
    return std::to_string(k) + " " + unit + (k == 1 ? "" : "s");
  };
  long secs = static_cast<long>(s), mins = secs / 60, hours = std::lround(s / 3600);
  std::string d;
  if (s < 1) d = "Less than a second";
  else if (secs < 60) d = n(secs, "second");
  else if (mins == 1) d = "About a minute";
  else if (mins < 60) d = n(mins, "minute");
  else if (hours == 1) d = "About an hour";
  else if (hours < 48) d = n(hours, "hour");
  else if (hours < 24 * 7 * 2) d = n(hours / 24, "day");
  else if (hours < 24 * 30 * 2) d = n(hours / 24 / 7, "week");
  else if (hours < 24 * 365 * 2) d = n(hours / 24 / 30, "month");
  else d = n(hours / 24 / 365, "year");
  return d + " ago";
}

int64_t parse_rfc3339(std::string_view s) {
  struct tm tm {};
  std::string str(s);
  const char* end = strptime(str.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
  if (!end) return 0;
  return static_cast<int64_t>(timegm(&tm));
}

std::string Table::str() const {
  std::vector<size_t> w(header_.size(), 0);
  auto widen = [&](const std::vector<std::string>& r) {
    for (size_t i = 0; i < r.size() && i < w.size(); ++i) w[i] = std::max(w[i], r[i].size());
  };
  widen(header_);
  for (auto& r : rows_) widen(r);
  std::string out;
  auto line = [&](const std::vector<std::string>& r) {
    std::string l;
    for (size_t i = 0; i < r.size(); ++i) {
      l += r[i];
      if (i + 1 < r.size()) l.append(w[i] - r[i].size() + 3, ' ');
    }
    out += l + "\n";
  };
  line(header_);
  for (auto& r : rows_) line(r);
  return out;
}

namespace {

std::string unescape(std::string_view f) {
  std::string out;
  for (size_t i = 0; i < f.size(); ++i) {
    if (f[i] == '\\' && i + 1 < f.size() && (f[i + 1] == 't' || f[i + 1] == 'n')) {
      out += f[i + 1] == 't' ? '\t' : '\n';
      ++i;
    } else {
      out += f[i];
    }
  }
  return out;
}

const json* field(const json& row, std::string_view path) {
  const json* cur = &row;
  if (path == ".") return cur;
  if (!path.starts_with(".")) throw TemplateError("expected a field (.Name), got \"" + std::string(path) + "\"");
  size_t i = 1;
  while (i <= path.size()) {
    size_t dot = path.find('.', i);
    std::string key(path.substr(i, dot == std::string_view::npos ? std::string_view::npos : dot - i));
    if (!cur->is_object() || !cur->contains(key))
      throw TemplateError("can't evaluate field " + key);
    cur = &(*cur)[key];
    if (dot == std::string_view::npos) break;
    i = dot + 1;
  }
  return cur;
}

std::string plain(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_null()) return "<no value>";
  if (v.is_array()) {
    std::string s = "[";
    for (size_t i = 0; i < v.size(); ++i) s += (i ? " " : "") + plain(v[i]);
    return s + "]";
  }
  if (v.is_object()) {
    std::string s = "map[";
    bool first = true;
    for (auto& [k, x] : v.items()) {
      s += (first ? "" : " ") + k + ":" + plain(x);
      first = false;
    }
    return s + "]";
  }
  return v.dump();
}

std::string trim(std::string s) {
  while (!s.empty() && s.front() == ' ') s.erase(0, 1);
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

std::string expand(const std::string& tpl, const json& row) {
  std::string out;
  size_t i = 0;
  while (i < tpl.size()) {
    size_t open = tpl.find("{{", i);
    if (open == std::string::npos) {
      out += tpl.substr(i);
      break;
    }
    out += tpl.substr(i, open - i);
    size_t close = tpl.find("}}", open);
    if (close == std::string::npos) throw TemplateError("unclosed action");
    std::string action = trim(tpl.substr(open + 2, close - open - 2));
    if (action.starts_with("json ")) out += field(row, trim(action.substr(5)))->dump();
    else if (action.starts_with("upper ") || action.starts_with("lower ")) {
      std::string v = plain(*field(row, trim(action.substr(6))));
      bool up = action[0] == 'u';
      for (auto& c : v) c = static_cast<char>(up ? std::toupper(static_cast<unsigned char>(c)) : std::tolower(static_cast<unsigned char>(c)));
      out += v;
    } else if (action.starts_with("len ")) {
      const json* v = field(row, trim(action.substr(4)));
      if (!v->is_array() && !v->is_object() && !v->is_string())
        throw TemplateError("len of " + trim(action.substr(4)) + ": not a list, map or string");
      out += std::to_string(v->is_string() ? v->get<std::string>().size() : v->size());
    } else out += plain(*field(row, action));
    i = close + 2;
  }
  return out;
}

// The table header docker prints for a field: "Repository" -> "REPOSITORY",
// "CreatedSince" -> "CREATED", "ID" -> "IMAGE ID".
std::string header_of(std::string action) {
  if (action.starts_with("json ")) action = trim(action.substr(5));
  if (action.starts_with(".")) action.erase(0, 1);
  if (action == "ID") return "IMAGE ID";
  if (action == "CreatedSince") return "CREATED";
  if (action == "CreatedAt") return "CREATED AT";
  std::string h;
  for (size_t i = 0; i < action.size(); ++i) {
    char c = action[i];
    if (i && std::isupper(static_cast<unsigned char>(c)) && std::islower(static_cast<unsigned char>(action[i - 1])))
      h += ' ';
    h += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  return h;
}

}  // namespace

std::string render(std::string_view format, const std::vector<json>& rows) {
  std::string out;
  if (format == "json") {
    for (auto& r : rows) out += r.dump() + "\n";
    return out;
  }
  std::string tpl = unescape(format);
  bool table = false;
  if (tpl.starts_with("table")) {
    table = true;
    tpl = trim(tpl.substr(5));
  }
  if (!table) {
    for (auto& r : rows) out += expand(tpl, r) + "\n";
    return out;
  }
  // A table: the template's tab-separated cells become aligned columns.
  std::string header_tpl;
  {
    size_t i = 0;
    while (i < tpl.size()) {
      size_t open = tpl.find("{{", i);
      if (open == std::string::npos) {
        header_tpl += tpl.substr(i);
        break;
      }
      header_tpl += tpl.substr(i, open - i);
      size_t close = tpl.find("}}", open);
      if (close == std::string::npos) throw TemplateError("unclosed action");
      header_tpl += header_of(trim(tpl.substr(open + 2, close - open - 2)));
      i = close + 2;
    }
  }
  auto cells = [](const std::string& line) {
    std::vector<std::string> c;
    size_t s = 0;
    while (true) {
      size_t t = line.find('\t', s);
      c.push_back(line.substr(s, t == std::string::npos ? std::string::npos : t - s));
      if (t == std::string::npos) break;
      s = t + 1;
    }
    return c;
  };
  Table t(cells(header_tpl));
  for (auto& r : rows) t.add(cells(expand(tpl, r)));
  return t.str();
}

}  // namespace berth::cli
