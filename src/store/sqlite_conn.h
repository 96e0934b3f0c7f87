// sqlite_conn.h: a small RAII layer over the SQLite C API, private to SqliteStore.
//
// A Connection owns one sqlite3 handle and a cache of prepared statements keyed by the address
// of their SQL text (which must therefore be a string with static storage, e.g. a constexpr
// const char*). A Query is one use of a cached statement: it binds, steps, reads columns, and
// resets the statement when it goes out of scope, so a cached statement is always clean.
//
//   static constexpr const char* kFind = "SELECT device_key FROM devices WHERE device_id = ?1";
//   auto q = conn.Prepare(kFind);
//   if (!q) return q.error();
//   q->Bind(1, device_id);
//   auto row = q->Step();                // Result<bool>: true when a row is available
//   if (!row) return row.error();
//   if (*row) key = q->Int(0);
//
// Errors map SQLite result codes to Errc: busy, locked, I/O, full, cannot-open and out of
// memory -> kUnavailable (retry later); corrupt / not-a-database -> kCorruption; anything else
// (misuse, constraint, schema) -> kInternal.
//
// Threading: connections are opened in SQLite's multi-thread mode (no per-connection mutex), so
// a Connection, its statements and its Queries are used by one thread at a time; SqliteStore
// guarantees that with its writer mutex and its reader pool.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <sqlite3.h>

#include "core/result.h"

namespace iot::store::sqlite {

// ErrorFrom builds the Error for SQLite result code `rc` (extended codes allowed), prefixed with
// `context` and, when `db` is given, the connection's last error message.
Error ErrorFrom(int rc, sqlite3* db, std::string_view context);

class Connection;

// Query binds and steps one cached statement. Movable, not copyable; resets the statement (and
// clears its bindings) on destruction. Text and blobs are bound without copying: they must stay
// alive and unchanged until the Query is destroyed.
class Query {
 public:
  Query(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  Query(Query&& o) noexcept;
  Query& operator=(Query&&) = delete;
  Query(const Query&) = delete;
  Query& operator=(const Query&) = delete;
  ~Query();

  // Bind sets parameter `index` (1-based). A failing bind is reported by the next Step/Run.
  Query& Bind(int index, std::int64_t v);
  Query& Bind(int index, double v);
  Query& Bind(int index, std::string_view text);
  Query& BindBlob(int index, std::string_view bytes);
  Query& BindNull(int index);

  // Step advances: true when a row is available, false when the statement is done.
  Result<bool> Step();
  // Run steps to completion, ignoring rows.
  Status Run();

  // Column accessors for the current row (0-based). Text and blob views stay valid until the
  // next Step or the destruction of the Query.
  std::int64_t Int(int col) const { return sqlite3_column_int64(stmt_, col); }
  double Real(int col) const { return sqlite3_column_double(stmt_, col); }
  bool IsNull(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }
  std::string_view Text(int col) const;
  std::string_view Blob(int col) const;

 private:
  void Check(int rc);

  sqlite3* db_;
  sqlite3_stmt* stmt_;
  int bind_rc_ = SQLITE_OK;
};

// Connection owns an sqlite3 handle and its statement cache. Not thread-safe (see above).
class Connection {
 public:
  // Open opens (and with `create`, creates) the database file at `path` in multi-thread mode
  // with extended result codes.
  static Result<std::unique_ptr<Connection>> Open(const std::string& path, bool create);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  sqlite3* db() const { return db_; }

  // Exec runs one or more statements that return no rows (schema, pragmas), uncached.
  Status Exec(const char* sql);

  // Prepare returns a Query over the cached statement for `sql` (prepared on first use). `sql`
  // must have static storage duration: the cache is keyed by its address. `slot` selects one of
  // several independent instances of the same statement, for simultaneous use (e.g. k
  // interleaved index scans); a slot must not be in use by another live Query.
  Result<Query> Prepare(const char* sql, std::size_t slot = 0);

 private:
  explicit Connection(sqlite3* db) : db_(db) {}

  sqlite3* db_;
  std::unordered_map<const char*, std::vector<sqlite3_stmt*>> cache_;
};

// Transaction scopes one SQLite transaction: Begin starts it (BEGIN, or BEGIN IMMEDIATE to take
// the write lock at once), Commit ends it, and the destructor rolls back one that was begun but
// not committed (also after a failed Commit). Queries used inside must be destroyed first.
class Transaction {
 public:
  explicit Transaction(Connection& conn) : conn_(conn) {}
  ~Transaction();
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;

  Status Begin(bool immediate);
  Status Commit();

 private:
  Connection& conn_;
  bool open_ = false;
};

}  // namespace iot::store::sqlite
