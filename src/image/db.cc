#include "image/db.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <utility>
#include <vector>

#include "util/fd.h"
#include "util/fs.h"

namespace berth::image {

namespace {
Error db_error(sqlite3* db, std::string what) {
  return Error{0, std::move(what) + ": " + sqlite3_errmsg(db)};
}

// This process's open connections (checkpoint_detached closes them).
std::vector<Db*>& open_dbs() {
  static std::vector<Db*> dbs;
  return dbs;
}

// The database whose log is due for a checkpoint (Db::checkpoint_detached).
std::string g_checkpoint_due;

int on_commit(void* path, sqlite3* db, const char* name, int pages) {
  if (pages >= Db::kCheckpointForcePages) (void)sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
  else if (pages >= Db::kCheckpointPages) g_checkpoint_due = *static_cast<const std::string*>(path);
  return SQLITE_OK;
}
}  // namespace

void Db::checkpoint_detached() {
  if (g_checkpoint_due.empty()) return;
  std::string path = std::exchange(g_checkpoint_due, {});
  // One at a time: the child keeps this lock (the fork shares it) until it
  // is done, and a command that finds it held leaves the work to it.
  UniqueFd lock(::open((path + "-checkpoint.lock").c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!lock || ::flock(lock.get(), LOCK_EX | LOCK_NB) != 0) return;
  bool closed = true;
  for (Db* d : open_dbs()) closed = d->close() && closed;
  if (!closed) return;
  std::fflush(nullptr);
  if (::fork() != 0) return;  // (or it failed: a later command does it)
  // Nothing of the caller's but the lock (a caller reading the command's
  // output to its end, or a monitor waiting for its socket to close, does
  // not wait for this), at nice 19; nobody's ^C ends it half-way (a
  // checkpoint is restartable anyway).
  detach_from_caller(lock.release());
  (void)::setpriority(PRIO_PROCESS, 0, 19);
  checkpoint(path);
  ::_exit(0);
}

void Db::checkpoint(const std::string& path) {
  sqlite3* raw = nullptr;
  if (sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr) == SQLITE_OK) {
    sqlite3_busy_timeout(raw, 2000);
    // As every connection of ours (Db::open): its close, often the last one,
    // would checkpoint again and delete the log and its index, which the
    // next command then made anew (two new files, the log's first header
    // synced, the index rebuilt) instead of finding them.
    sqlite3_db_config(raw, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
    int persist = 1;
    sqlite3_file_control(raw, "main", SQLITE_FCNTL_PERSIST_WAL, &persist);
    checkpoint_and_restart(raw);
  }
  sqlite3_close(raw);  // (also one that failed to open)
}

namespace {

// One value of a one-row, one-column statement (a pragma), or -1.
int64_t pragma_value(sqlite3* db, const char* sql) {
  sqlite3_stmt* s = nullptr;
  int64_t v = -1;
  if (sqlite3_prepare_v2(db, sql, -1, &s, nullptr) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
    v = sqlite3_column_int64(s, 0);
  sqlite3_finalize(s);
  return v;
}

int record_pages(void* out, sqlite3*, const char*, int pages) {
  *static_cast<int*>(out) = pages;
  return SQLITE_OK;
}

}  // namespace

// Copies the log into the database and starts it over. A log is started
// over only by a write that finds every frame of it copied; a command that
// commits between the copy and that write appends to the log instead, and
// it stays long. Back to back, the next command's commits came during the
// copy (its two syncs) most of the time, and each of the next commands, its
// commit still finding the log long, forked a checkpointer of its own (39
// in 100 `run --rm`s here, 1.1 ms of CPU each). So this one tries again,
// each time once nothing has been committed for a while.
void Db::checkpoint_and_restart(sqlite3* db) {
  // A read first: the connection finds the log (WAL mode) as it starts one.
  // (This pragma reads the header: the schema is not parsed.)
  int64_t version = pragma_value(db, "PRAGMA user_version");
  if (version < 0 || sqlite3_exec(db, "PRAGMA synchronous=NORMAL", nullptr, nullptr, nullptr) != SQLITE_OK) return;
  std::string same = "BEGIN IMMEDIATE; PRAGMA user_version=" + std::to_string(version) + "; COMMIT";
  int pages = -1;
  sqlite3_wal_hook(db, record_pages, &pages);
  for (int attempt = 0; attempt < kCheckpointAttempts; ++attempt) {
    if (attempt > 0) {
      // Until no one has committed for 2 ms (at most 100 ms): data_version
      // changes when another connection commits.
      int64_t seen = pragma_value(db, "PRAGMA data_version");
      for (int quiet = 0, waited = 0; quiet < 4 && waited < 200; ++waited) {
        struct timespec half_ms = {0, 500'000};
        ::nanosleep(&half_ms, nullptr);
        int64_t now = pragma_value(db, "PRAGMA data_version");
        quiet = now == seen ? quiet + 1 : 0;
        seen = now;
      }
    }
    int log = 0, done = 0;
    if (sqlite3_wal_checkpoint_v2(db, "main", SQLITE_CHECKPOINT_PASSIVE, &log, &done) != SQLITE_OK) return;
    if (log < kCheckpointPages) return;  // started over meanwhile
    if (done != log) continue;           // a reader still needs part of it
    // All of the log is in the database now: the next transaction starts
    // it over from its first frame, and at synchronous=NORMAL the writer
    // that does so syncs the new header (and the directory): two fsyncs,
    // 0.5-2 ms on this disk, inside the next command's first write (a
    // `run`'s create, traced). Written here instead, by a transaction that
    // changes nothing (user_version set to what it is), off that path.
    pages = -1;
    if (sqlite3_exec(db, same.c_str(), nullptr, nullptr, nullptr) != SQLITE_OK) {
      (void)sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
      return;
    }
    // Its one frame is the whole log when it started the log over.
    if (pages >= 0 && pages < kCheckpointPages) return;
  }
}

std::string Row::text(int col) const {
  const unsigned char* t = sqlite3_column_text(s_, col);
  return t ? std::string(reinterpret_cast<const char*>(t), sqlite3_column_bytes(s_, col)) : std::string();
}
int64_t Row::integer(int col) const { return sqlite3_column_int64(s_, col); }
bool Row::is_null(int col) const { return sqlite3_column_type(s_, col) == SQLITE_NULL; }

Result<std::unique_ptr<Db>> Db::open(const std::string& path, std::string_view schema, int version) {
  // Created here with 0600 before SQLite opens it (SQLite would use 0644).
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return sys_error("open " + path);
  ::close(fd);
  // Every allocation of SQLite's updated its statistics under a global
  // mutex; nothing reads them. (Refused, harmlessly, once SQLite is running.)
  static const bool configured = [] {
    (void)sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    return true;
  }();
  (void)configured;
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr);
  std::unique_ptr<Db> db(new Db(raw));
  open_dbs().push_back(db.get());
  if (rc != SQLITE_OK) return std::unexpected(db_error(raw, "open " + path));
  // Room in the connection's own slab (lookaside) for what preparing a
  // run's statements and loading the schema allocate, instead of malloc for
  // most of it: SQLite's default (100 slots) ran out at once, and its
  // parser made a quarter of a `run`'s ~5,800 mallocs (counted).
  (void)sqlite3_db_config(raw, SQLITE_DBCONFIG_LOOKASIDE, nullptr, 1200, 1000);
  sqlite3_busy_timeout(raw, 30000);
  // The last connection to close would checkpoint the WAL into the database
  // (an fsync or two) and delete it, and the next command would make it
  // again: with many short commands (every `run` is two processes) that was
  // most of their time. The WAL is checkpointed when it grows instead. But
  // the first connection of a process that finds no other open reads the
  // whole WAL to rebuild its index (recovery), so it is kept short: a
  // checkpoint every 128 pages (512 KiB) rather than SQLite's 1000, made
  // off the path (checkpoint_detached, db.h).
  sqlite3_db_config(raw, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
  int persist = 1;
  sqlite3_file_control(raw, "main", SQLITE_FCNTL_PERSIST_WAL, &persist);
  db->path_ = path;
  sqlite3_wal_hook(raw, on_commit, &db->path_);
  // synchronous=NORMAL in WAL mode: a committed transaction survives a crash of
  // the process (what the kill tests play); a power cut may lose the last one,
  // never corrupt the database. Both pragmas are per connection.
  char* msg = nullptr;
  // Several berths opening a new store at once: switching it to WAL answers
  // "database is locked" at once, not after the busy timeout. Waited out
  // here, up to the same 30 s.
  struct timespec start;
  ::clock_gettime(CLOCK_MONOTONIC, &start);
  auto busy = [&](int rc, std::string_view msg = {}) {
    bool locked = (rc & 0xff) == SQLITE_BUSY || msg.find("database is locked") != std::string_view::npos;
    struct timespec now;
    ::clock_gettime(CLOCK_MONOTONIC, &now);
    if (!locked || now.tv_sec - start.tv_sec >= 30) return false;
    ::usleep(2000);
    return true;
  };
  auto exec = [&](const std::string& sql) -> Result<> {
    for (;;) {
      int rc = sqlite3_exec(raw, sql.c_str(), nullptr, nullptr, &msg);
      if (rc == SQLITE_OK) return {};
      if (busy(rc)) {
        sqlite3_free(msg);
        msg = nullptr;
        continue;
      }
      Error e{0, path + ": " + (msg ? msg : "failed")};
      sqlite3_free(msg);
      return std::unexpected(std::move(e));
    }
  };
  TRY(exec("PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;"));
  // The schema runs only when the file's user_version is older than `version`
  // (a new file is 0): parsing it on every open was a good part of a short
  // command's time. WAL mode is a property of the file, set once with it.
  for (;;) {
    int64_t have = 0;
    auto read = db->run("PRAGMA user_version", {}, [&](const Row& r) { have = r.integer(0); });
    if (!read) {
      if (busy(sqlite3_errcode(raw))) continue;
      return std::unexpected(std::move(read).error());
    }
    if (have >= version) break;
    TRY(exec("PRAGMA journal_mode=WAL;"));
    auto made = db->transaction([&]() -> Result<> {
      // Another berth may have made it meanwhile (the lock is ours now).
      int64_t now = 0;
      TRY(db->run("PRAGMA user_version", {}, [&](const Row& r) { now = r.integer(0); }));
      if (now >= version) return {};
      TRY(exec(std::string(schema)));
      return exec("PRAGMA user_version=" + std::to_string(version) + ";");
    });
    if (!made) {
      if (busy(sqlite3_errcode(raw), made.error().msg)) continue;
      return std::unexpected(std::move(made).error());
    }
    break;
  }
  return db;
}

Result<> Db::ensure_schema(std::string_view name, std::string_view schema, int version) {
  int64_t have = 0;
  // No table yet is version 0.
  (void)run("SELECT version FROM schema_versions WHERE name = ?1", {std::string(name)},
            [&](const Row& r) { have = r.integer(0); });
  if (have >= version) return {};
  return transaction([&]() -> Result<> {
    std::string sql = "CREATE TABLE IF NOT EXISTS schema_versions (name TEXT PRIMARY KEY, version INTEGER NOT NULL);";
    sql += schema;
    char* msg = nullptr;
    if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &msg) != SQLITE_OK) {
      Error e{0, std::string(name) + " schema: " + (msg ? msg : "failed")};
      sqlite3_free(msg);
      return std::unexpected(std::move(e));
    }
    return exec("INSERT OR REPLACE INTO schema_versions (name, version) VALUES (?1, ?2)", name, version);
  });
}

bool Db::close() {
  if (!db_) return true;
  for (auto& [sql, s] : stmts_) sqlite3_finalize(s);
  stmts_.clear();
  if (sqlite3_close(db_) != SQLITE_OK) return false;  // (a statement still open: kept)
  db_ = nullptr;
  return true;
}

Db::~Db() {
  close();
  std::erase(open_dbs(), this);
}

sqlite3_stmt* Db::cached(std::string_view sql, Error* err) {
  for (auto& [text, s] : stmts_)
    if (text == sql) return s;
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()), &s, nullptr) != SQLITE_OK) {
    *err = db_error(db_, "prepare \"" + std::string(sql) + "\"");
    return nullptr;
  }
  stmts_.emplace_back(std::string(sql), s);
  return s;
}

Result<> Db::run(std::string_view sql, const std::vector<DbValue>& args,
                 const std::function<void(const Row&)>& row) {
  Error err;
  sqlite3_stmt* s = cached(sql, &err);
  if (!s) return std::unexpected(std::move(err));
  sqlite3_reset(s);
  sqlite3_clear_bindings(s);
  for (size_t i = 0; i < args.size(); ++i) {
    int idx = static_cast<int>(i + 1);
    if (auto* v = std::get_if<int64_t>(&args[i])) sqlite3_bind_int64(s, idx, *v);
    else if (auto* t = std::get_if<std::string>(&args[i]))
      sqlite3_bind_text(s, idx, t->data(), static_cast<int>(t->size()), SQLITE_TRANSIENT);
    else sqlite3_bind_null(s, idx);
  }
  while (true) {
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
      if (row) row(Row(s));
      continue;
    }
    if (rc == SQLITE_DONE) break;
    Error e = db_error(db_, "berth.db");
    sqlite3_reset(s);
    return std::unexpected(std::move(e));
  }
  sqlite3_reset(s);
  return {};
}

Result<> Db::transaction(const std::function<Result<>()>& body) {
  TRY(exec("BEGIN IMMEDIATE"));
  Result<> r = body();
  if (!r) {
    (void)exec("ROLLBACK");
    return r;
  }
  if (auto c = exec("COMMIT"); !c) {
    (void)exec("ROLLBACK");
    return c;
  }
  return {};
}

int64_t Db::changes() const { return sqlite3_changes64(db_); }

}  // namespace berth::image
