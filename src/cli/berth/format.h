// Output in Docker's forms: human sizes ("4.26MB"), times ("2 hours ago"),
// aligned tables, and --format: "json" (one JSON object per line), "table"
// (the default table) or a Go-template subset ({{.Field}}, {{.A.B}},
// {{json .}}, {{json .Field}}, a leading "table " for a header row, \t and \n).
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace berth::cli {

// A --format template that does not parse or does not fit the data: main
// prints it as one line.
struct TemplateError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// Writes s to stdout as it is (no newline added).
void print(const std::string& s);

// Docker's units.HumanSizeWithPrecision(n, 3): decimal units, 3 significant digits.
std::string human_size(double bytes);
// Docker's units.HumanDuration + " ago".
std::string time_ago(int64_t unix_seconds);
// "2026-11-23T02:00:00Z" -> unix seconds (0 when malformed).
int64_t parse_rfc3339(std::string_view s);

class Table {
 public:
  explicit Table(std::vector<std::string> header) : header_(std::move(header)) {}
  void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  // Columns padded to the widest cell plus three spaces, as docker's tabwriter does.
  std::string str() const;

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

// Renders each of `rows` with `format` ("json", a template); `headers` maps a
// template field to its table header for "table ..." formats.
std::string render(std::string_view format, const std::vector<nlohmann::json>& rows);

}  // namespace berth::cli
