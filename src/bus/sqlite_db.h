// sqlite_db.h: a minimal RAII wrapper over the SQLite C API, private to the embedded bus.
//
// SqliteDb owns one connection, SqliteStmt one prepared statement. Failures come back as
// `Status`/`Result` with the SQLite error mapped to an `Errc` (SQLITE_FULL -> kResourceExhausted,
// busy / I/O errors -> kUnavailable, corruption -> kCorruption, anything else -> kInternal).
//
//   auto db = SqliteDb::Open("/data/bus.db", SqliteDb::kReadWriteCreate);
//   if (!db) return db.error();
//   auto stmt = db->Prepare("SELECT count FROM frames WHERE base_offset = ?1");
//
// Threading: a connection is opened in SQLite's multi-thread mode (no internal mutex), so a
// SqliteDb and its statements must be used by one thread at a time. Statements must be
// destroyed before their connection.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "core/result.h"

namespace iot::bus {

// SqliteError builds an Error for SQLite result code `rc` (extended codes allowed), prefixed
// with `what` and, when `db` is given, its last error message.
Error SqliteError(int rc, std::string_view what, sqlite3* db = nullptr);

class SqliteStmt {
 public:
  SqliteStmt() = default;
  SqliteStmt(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  SqliteStmt(SqliteStmt&& o) noexcept;
  SqliteStmt& operator=(SqliteStmt&& o) noexcept;
  SqliteStmt(const SqliteStmt&) = delete;
  SqliteStmt& operator=(const SqliteStmt&) = delete;
  ~SqliteStmt();

  // Bind* set parameter `index` (1-based). A blob bound with BindBlobStatic must stay alive and
  // unchanged until the statement is reset.
  void BindInt64(int index, std::int64_t v);
  void BindText(int index, std::string_view v);
  void BindBlobStatic(int index, std::string_view v);

  // Step advances the statement: true when a row is available, false when it is done.
  Result<bool> Step();
  // Run steps a statement that returns no rows to completion and resets it.
  Status Run();
  // Reset makes the statement ready to run again and clears its bindings.
  void Reset();

  std::int64_t ColumnInt64(int column) const;
  // ColumnBlob returns the blob (or text) of `column`, valid until the next Step or Reset.
  std::string_view ColumnBlob(int column) const;
  bool ColumnIsNull(int column) const;

 private:
  sqlite3* db_ = nullptr;
  sqlite3_stmt* stmt_ = nullptr;
};

class SqliteDb {
 public:
  enum OpenMode { kReadWriteCreate, kReadWrite };

  // Open opens (or with kReadWriteCreate creates) the database at `path` and sets a busy
  // timeout of `busy_timeout_ms`.
  static Result<SqliteDb> Open(const std::string& path, OpenMode mode, int busy_timeout_ms);

  SqliteDb() = default;
  SqliteDb(SqliteDb&& o) noexcept;
  SqliteDb& operator=(SqliteDb&& o) noexcept;
  SqliteDb(const SqliteDb&) = delete;
  SqliteDb& operator=(const SqliteDb&) = delete;
  ~SqliteDb();

  // Exec runs one or more statements that return no rows of interest.
  Status Exec(const char* sql);
  // QueryInt64 runs a statement and returns the first column of its first row (error when it
  // returns no row).
  Result<std::int64_t> QueryInt64(const char* sql);
  // QueryText is QueryInt64 for a text column.
  Result<std::string> QueryText(const char* sql);
  Result<SqliteStmt> Prepare(const char* sql);

  // InTransaction reports whether a transaction is open (no autocommit).
  bool InTransaction() const;
  // Close closes the connection; statements prepared on it must be gone.
  void Close();

  sqlite3* get() const { return db_; }

 private:
  explicit SqliteDb(sqlite3* db) : db_(db) {}
  sqlite3* db_ = nullptr;
};

}  // namespace iot::bus
