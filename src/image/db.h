// A thin layer over SQLite 3 for berth's metadata (berth.db): one connection per
// process, WAL journal (readers never wait for the writer), a busy timeout so
// two berth processes queue rather than fail, and foreign keys on.
//
// Statements bind their arguments positionally: db.exec("... ?1 ... ?2", a, b).
// Writes that must land together go through transaction(), which begins with
// BEGIN IMMEDIATE (the write lock is taken up front, so two writers never
// deadlock upgrading a read lock) and rolls back when the body fails.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "util/error.h"

struct sqlite3;
struct sqlite3_stmt;

namespace berth::image {

using DbValue = std::variant<std::nullptr_t, int64_t, std::string>;

class Row {
 public:
  explicit Row(sqlite3_stmt* s) : s_(s) {}
  std::string text(int col) const;
  int64_t integer(int col) const;
  bool is_null(int col) const;

 private:
  sqlite3_stmt* s_;
};

class Db {
 public:
  // Opens (creating it 0600 if missing) the database at `path`; runs `schema`
  // (idempotent statements: CREATE TABLE IF NOT EXISTS ...) when the file's
  // user_version is below `version`, then records `version`. Bump it with
  // every schema change.
  static Result<std::unique_ptr<Db>> open(const std::string& path, std::string_view schema, int version);
  ~Db();
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  // Runs one statement, calling `row` for each result row.
  Result<> run(std::string_view sql, const std::vector<DbValue>& args,
               const std::function<void(const Row&)>& row = {});
  template <class... A>
  Result<> exec(std::string_view sql, A&&... args) {
    return run(sql, {to_value(std::forward<A>(args))...});
  }
  // The first column of the first row, if there is a row.
  template <class... A>
  Result<std::optional<std::string>> text(std::string_view sql, A&&... args) {
    std::optional<std::string> out;
    TRY(run(sql, {to_value(std::forward<A>(args))...}, [&](const Row& r) {
      if (!out) out = r.text(0);
    }));
    return out;
  }
  template <class... A>
  Result<int64_t> count(std::string_view sql, A&&... args) {
    int64_t n = 0;
    TRY(run(sql, {to_value(std::forward<A>(args))...}, [&](const Row& r) { n = r.integer(0); }));
    return n;
  }

  // Parses `sql` ahead of its first run, kept with the others (a first
  // prepare costs some 20-50 us here): for a caller with time on its hands
  // now and none later. An error is left to the run.
  void prepare(std::string_view sql) {
    Error ignored;
    (void)cached(sql, &ignored);
  }

  Result<> transaction(const std::function<Result<>()>& body);
  // For a second component sharing the file (the engine beside the image
  // store): runs `schema` when the version recorded for `name` in the
  // schema_versions table is older than `version`.
  Result<> ensure_schema(std::string_view name, std::string_view schema, int version);
  int64_t changes() const;

  // The log is checkpointed into the database off the committing command's
  // path: a commit that leaves it at kCheckpointPages or more marks it due,
  // and checkpoint_detached(), called as a command ends, closes this
  // process's connections (SQLite's state for a file must not be carried
  // into a child that opens it again) and forks a child at nice 19 that
  // checkpoints with a connection of its own. A checkpoint syncs both files:
  // 1-2 ms on this VM's disk every ~8 `run --rm`s, 10-20 ms in its slow
  // moments, paid by whichever command committed. A process that never calls
  // it still checkpoints inline at kCheckpointForcePages.
  static constexpr int kCheckpointPages = 128;
  static constexpr int kCheckpointForcePages = 1000;
  static constexpr int kCheckpointAttempts = 8;
  static void checkpoint_detached();
  // The checkpoint that child makes (and starts the log over), made here
  // with a connection of its own.
  static void checkpoint(const std::string& path);

 private:
  explicit Db(sqlite3* db) : db_(db) {}
  bool close();  // false if SQLite kept it open
  static void checkpoint_and_restart(sqlite3* db);
  std::string path_;
  static DbValue to_value(std::nullptr_t) { return nullptr; }
  static DbValue to_value(const std::string& s) { return s; }
  static DbValue to_value(std::string_view s) { return std::string(s); }
  static DbValue to_value(const char* s) { return std::string(s); }
  template <class I>
    requires std::is_integral_v<std::remove_cvref_t<I>>
  static DbValue to_value(I i) {
    return static_cast<int64_t>(i);
  }
  sqlite3_stmt* cached(std::string_view sql, Error* err);

  sqlite3* db_;
  std::vector<std::pair<std::string, sqlite3_stmt*>> stmts_;
};

}  // namespace berth::image
