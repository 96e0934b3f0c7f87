#include "store/sqlite_conn.h"

#include <string>

namespace iot::store::sqlite {

Error ErrorFrom(int rc, sqlite3* db, std::string_view context) {
  Errc code;
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_CANTOPEN:
    case SQLITE_NOMEM:
    case SQLITE_PROTOCOL:
    case SQLITE_READONLY:
      code = Errc::kUnavailable;
      break;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      code = Errc::kCorruption;
      break;
    default:
      code = Errc::kInternal;
      break;
  }
  std::string message(context);
  message += ": ";
  message += sqlite3_errstr(rc);
  if (db != nullptr && sqlite3_errcode(db) != SQLITE_OK) {
    message += " (";
    message += sqlite3_errmsg(db);
    message += ")";
  }
  return MakeError(code, std::move(message));
}

// ---- Query ---------------------------------------------------------------------------------

Query::Query(Query&& o) noexcept : db_(o.db_), stmt_(o.stmt_), bind_rc_(o.bind_rc_) {
  o.stmt_ = nullptr;
}

Query::~Query() {
  if (stmt_ != nullptr) {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
}

void Query::Check(int rc) {
  if (rc != SQLITE_OK && bind_rc_ == SQLITE_OK) bind_rc_ = rc;
}

Query& Query::Bind(int index, std::int64_t v) {
  Check(sqlite3_bind_int64(stmt_, index, v));
  return *this;
}

Query& Query::Bind(int index, double v) {
  Check(sqlite3_bind_double(stmt_, index, v));
  return *this;
}

Query& Query::Bind(int index, std::string_view text) {
  Check(sqlite3_bind_text64(stmt_, index, text.data(), text.size(), SQLITE_STATIC, SQLITE_UTF8));
  return *this;
}

Query& Query::BindBlob(int index, std::string_view bytes) {
  // A zero-length blob must still be a blob, not NULL: give SQLite a non-null pointer.
  const char* data = bytes.empty() ? "" : bytes.data();
  Check(sqlite3_bind_blob64(stmt_, index, data, bytes.size(), SQLITE_STATIC));
  return *this;
}

Query& Query::BindNull(int index) {
  Check(sqlite3_bind_null(stmt_, index));
  return *this;
}

Result<bool> Query::Step() {
  if (bind_rc_ != SQLITE_OK) return ErrorFrom(bind_rc_, db_, "bind");
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return ErrorFrom(rc, db_, sqlite3_sql(stmt_));
}

Status Query::Run() {
  while (true) {
    auto row = Step();
    if (!row) return row.error();
    if (!*row) return Status::Ok();
  }
}

std::string_view Query::Text(int col) const {
  const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, col));
  int n = sqlite3_column_bytes(stmt_, col);
  return p == nullptr ? std::string_view() : std::string_view(p, static_cast<std::size_t>(n));
}

std::string_view Query::Blob(int col) const {
  const auto* p = static_cast<const char*>(sqlite3_column_blob(stmt_, col));
  int n = sqlite3_column_bytes(stmt_, col);
  return p == nullptr ? std::string_view() : std::string_view(p, static_cast<std::size_t>(n));
}

// ---- Connection ----------------------------------------------------------------------------

Result<std::unique_ptr<Connection>> Connection::Open(const std::string& path, bool create) {
  sqlite3* db = nullptr;
  int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE;
  if (create) flags |= SQLITE_OPEN_CREATE;
  int rc = sqlite3_open_v2(path.c_str(), &db, flags, nullptr);
  if (rc != SQLITE_OK) {
    Error e = ErrorFrom(rc, db, "open " + path);
    sqlite3_close_v2(db);
    return e;
  }
  return std::unique_ptr<Connection>(new Connection(db));
}

Connection::~Connection() {
  for (auto& [sql, stmts] : cache_) {
    for (sqlite3_stmt* s : stmts) sqlite3_finalize(s);
  }
  sqlite3_close_v2(db_);
}

Status Connection::Exec(const char* sql) {
  char* message = nullptr;
  int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &message);
  if (rc == SQLITE_OK) return Status::Ok();
  std::string context = message != nullptr ? message : sql;
  sqlite3_free(message);
  return ErrorFrom(rc, nullptr, context);
}

Result<Query> Connection::Prepare(const char* sql, std::size_t slot) {
  auto& stmts = cache_[sql];
  if (stmts.size() <= slot) stmts.resize(slot + 1, nullptr);
  if (stmts[slot] == nullptr) {
    int rc = sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmts[slot], nullptr);
    if (rc != SQLITE_OK) return ErrorFrom(rc, db_, sql);
  }
  return Query(db_, stmts[slot]);
}

// ---- Transaction ---------------------------------------------------------------------------

namespace {
constexpr const char* kBegin = "BEGIN";
constexpr const char* kBeginImmediate = "BEGIN IMMEDIATE";
constexpr const char* kCommit = "COMMIT";
constexpr const char* kRollback = "ROLLBACK";
}  // namespace

Status Transaction::Begin(bool immediate) {
  auto q = conn_.Prepare(immediate ? kBeginImmediate : kBegin);
  if (!q) return q.error();
  if (Status s = q->Run(); !s) return s;
  open_ = true;
  return Status::Ok();
}

Status Transaction::Commit() {
  auto q = conn_.Prepare(kCommit);
  if (!q) return q.error();
  if (Status s = q->Run(); !s) return s;
  open_ = false;
  return Status::Ok();
}

Transaction::~Transaction() {
  // A failed COMMIT may leave the transaction open (e.g. SQLITE_BUSY); sqlite3_get_autocommit
  // tells whether there is still something to roll back.
  if (open_ && sqlite3_get_autocommit(conn_.db()) == 0) {
    if (auto q = conn_.Prepare(kRollback); q) (void)q->Run();
  }
}

}  // namespace iot::store::sqlite
