// sqlite_db.cc: see sqlite_db.h.
#include "bus/sqlite_db.h"

#include <utility>

namespace iot::bus {

Error SqliteError(int rc, std::string_view what, sqlite3* db) {
  Errc code = Errc::kInternal;
  switch (rc & 0xff) {
    case SQLITE_FULL:
      code = Errc::kResourceExhausted;
      break;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
    case SQLITE_PROTOCOL:
      code = Errc::kUnavailable;
      break;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      code = Errc::kCorruption;
      break;
    default:
      break;
  }
  std::string message(what);
  message += ": ";
  message += db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  return MakeError(code, std::move(message));
}

// ---- SqliteStmt ----

SqliteStmt::SqliteStmt(SqliteStmt&& o) noexcept
    : db_(std::exchange(o.db_, nullptr)), stmt_(std::exchange(o.stmt_, nullptr)) {}

SqliteStmt& SqliteStmt::operator=(SqliteStmt&& o) noexcept {
  if (this != &o) {
    sqlite3_finalize(stmt_);
    db_ = std::exchange(o.db_, nullptr);
    stmt_ = std::exchange(o.stmt_, nullptr);
  }
  return *this;
}

SqliteStmt::~SqliteStmt() { sqlite3_finalize(stmt_); }

void SqliteStmt::BindInt64(int index, std::int64_t v) { sqlite3_bind_int64(stmt_, index, v); }

void SqliteStmt::BindText(int index, std::string_view v) {
  sqlite3_bind_text64(stmt_, index, v.data(), v.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
}

void SqliteStmt::BindBlobStatic(int index, std::string_view v) {
  // A zero-length blob must not be bound as NULL: pass a valid pointer.
  static const char kEmpty = 0;
  sqlite3_bind_blob64(stmt_, index, v.empty() ? &kEmpty : v.data(), v.size(), SQLITE_STATIC);
}

Result<bool> SqliteStmt::Step() {
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return SqliteError(rc, sqlite3_sql(stmt_), db_);
}

Status SqliteStmt::Run() {
  int rc = sqlite3_step(stmt_);
  Status result = Status::Ok();
  if (rc != SQLITE_DONE && rc != SQLITE_ROW) result = SqliteError(rc, sqlite3_sql(stmt_), db_);
  Reset();
  return result;
}

void SqliteStmt::Reset() {
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
}

std::int64_t SqliteStmt::ColumnInt64(int column) const {
  return sqlite3_column_int64(stmt_, column);
}

std::string_view SqliteStmt::ColumnBlob(int column) const {
  const void* p = sqlite3_column_blob(stmt_, column);
  int n = sqlite3_column_bytes(stmt_, column);
  if (p == nullptr || n <= 0) return {};
  return {static_cast<const char*>(p), static_cast<std::size_t>(n)};
}

bool SqliteStmt::ColumnIsNull(int column) const {
  return sqlite3_column_type(stmt_, column) == SQLITE_NULL;
}

// ---- SqliteDb ----

Result<SqliteDb> SqliteDb::Open(const std::string& path, OpenMode mode, int busy_timeout_ms) {
  int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX;
  if (mode == kReadWriteCreate) flags |= SQLITE_OPEN_CREATE;
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
  SqliteDb db(raw);  // closes `raw` on every path, also when the open failed
  if (rc != SQLITE_OK) return SqliteError(rc, "open " + path, raw);
  sqlite3_extended_result_codes(raw, 1);
  sqlite3_busy_timeout(raw, busy_timeout_ms);
  return db;
}

SqliteDb::SqliteDb(SqliteDb&& o) noexcept : db_(std::exchange(o.db_, nullptr)) {}

SqliteDb& SqliteDb::operator=(SqliteDb&& o) noexcept {
  if (this != &o) {
    Close();
    db_ = std::exchange(o.db_, nullptr);
  }
  return *this;
}

SqliteDb::~SqliteDb() { Close(); }

void SqliteDb::Close() {
  if (db_ != nullptr) {
    sqlite3_close_v2(db_);
    db_ = nullptr;
  }
}

Status SqliteDb::Exec(const char* sql) {
  char* err = nullptr;
  int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &err);
  sqlite3_free(err);
  if (rc != SQLITE_OK) return SqliteError(rc, sql, db_);
  return Status::Ok();
}

Result<SqliteStmt> SqliteDb::Prepare(const char* sql) {
  sqlite3_stmt* stmt = nullptr;
  int rc = sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
  if (rc != SQLITE_OK) {
    sqlite3_finalize(stmt);
    return SqliteError(rc, sql, db_);
  }
  return SqliteStmt(db_, stmt);
}

Result<std::int64_t> SqliteDb::QueryInt64(const char* sql) {
  auto stmt = Prepare(sql);
  if (!stmt) return stmt.error();
  auto row = stmt->Step();
  if (!row) return row.error();
  if (!*row) return MakeError(Errc::kInternal, std::string(sql) + ": no row");
  return stmt->ColumnInt64(0);
}

Result<std::string> SqliteDb::QueryText(const char* sql) {
  auto stmt = Prepare(sql);
  if (!stmt) return stmt.error();
  auto row = stmt->Step();
  if (!row) return row.error();
  if (!*row) return MakeError(Errc::kInternal, std::string(sql) + ": no row");
  return std::string(stmt->ColumnBlob(0));
}

bool SqliteDb::InTransaction() const { return db_ != nullptr && sqlite3_get_autocommit(db_) == 0; }

}  // namespace iot::bus
