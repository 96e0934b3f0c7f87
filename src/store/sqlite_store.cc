// sqlite_store.cc: SqliteStore's start-up, reader pool and small reads (see sqlite_store_impl.h).
#include "store/sqlite_store.h"

#include <algorithm>
#include <filesystem>
#include <string>

#include "store/sqlite_sql.h"
#include "store/sqlite_store_impl.h"

namespace iot::store {

using sqlite::Connection;
using sqlite::Transaction;

auto SqliteStore::Impl::Acquire() -> std::unique_ptr<Lease> {
  std::unique_lock lock(pool_mu);
  pool_cv.wait(lock, [&] { return !idle.empty(); });
  detail::ReaderConnection* r = idle.back();
  idle.pop_back();
  return std::make_unique<Lease>(*this, r);
}

void SqliteStore::Impl::Release(detail::ReaderConnection* r) {
  {
    std::lock_guard lock(pool_mu);
    idle.push_back(r);
  }
  pool_cv.notify_one();
}

namespace {

Result<std::optional<std::int64_t>> LoadCheckpointFrom(sqlite::Connection& conn,
                                                       const std::string& consumer,
                                                       std::int32_t partition) {
  auto q = conn.Prepare(sql::kLoadCheckpoint);
  if (!q) return q.error();
  q->Bind(1, consumer).Bind(2, std::int64_t{partition});
  auto row = q->Step();
  if (!row) return row.error();
  if (!*row) return std::optional<std::int64_t>();
  return std::optional<std::int64_t>(q->Int(0));
}

const char* SyncPragma(SqliteStoreOptions::Sync sync) {
  switch (sync) {
    case SqliteStoreOptions::Sync::kOff:
      return "PRAGMA synchronous = OFF";
    case SqliteStoreOptions::Sync::kNormal:
      return "PRAGMA synchronous = NORMAL";
    case SqliteStoreOptions::Sync::kFull:
      return "PRAGMA synchronous = FULL";
  }
  return "PRAGMA synchronous = NORMAL";
}

// Configure applies the per-connection pragmas. `cache_kib` is the page cache size.
Status Configure(Connection& conn, const SqliteStoreOptions& options, std::size_t cache_kib,
                 bool writer) {
  sqlite3_busy_timeout(conn.db(), options.busy_timeout_ms);
  std::string pragmas = "PRAGMA cache_size = -" +
                        std::to_string(std::max<std::size_t>(cache_kib, 64)) +
                        "; PRAGMA temp_store = MEMORY; ";
  if (writer) {
    // A checkpoint copies the WAL into the database and fsyncs it. A larger WAL copies a hot
    // page (an index leaf written by every batch) less often, but its fsync takes longer, and
    // on the same disk it delays the embedded bus's group-commit fsync, which is what POST
    // /ingest waits for: 8192 pages gave a p99 of ~23 ms at 5,000 req/s, 1024 pages ~5 ms
    // (docs/performance.md).
    pragmas += "PRAGMA wal_autocheckpoint = 1024; PRAGMA journal_size_limit = 67108864; ";
  } else {
    pragmas +=
        "PRAGMA query_only = 1; PRAGMA mmap_size = " + std::to_string(options.mmap_bytes) + "; ";
  }
  if (Status s = conn.Exec(pragmas.c_str()); !s) return s;
  return conn.Exec(SyncPragma(options.sync));
}

Status CreateOrCheckSchema(Connection& conn) {
  Transaction txn(conn);
  if (Status s = txn.Begin(/*immediate=*/true); !s) return s;
  std::int64_t version = 0;
  {
    auto q = conn.Prepare(sql::kUserVersion);
    if (!q) return q.error();
    auto row = q->Step();
    if (!row) return row.error();
    if (*row) version = q->Int(0);
  }
  if (version == 0) {
    if (Status s = conn.Exec(sql::kSchema); !s) return s;
    if (Status s = conn.Exec(sql::kDeadLetterSchema); !s) return s;
    if (Status s = conn.Exec(sql::kAckSchema); !s) return s;
  } else if (version == 1 || version == 2) {
    // Version 1 had no dead letters, version 2 no acknowledgements; the rest is unchanged.
    if (version == 1) {
      if (Status s = conn.Exec(sql::kDeadLetterSchema); !s) return s;
    }
    if (Status s = conn.Exec(sql::kAckSchema); !s) return s;
  } else if (version != sql::kSchemaVersion) {
    return MakeError(Errc::kCorruption, "store: unknown schema version " + std::to_string(version));
  }
  return txn.Commit();
}

Status CheckRetention(const Retention& retention) {
  if (retention.raw && retention.raw->count() <= 0) {
    return MakeError(Errc::kInvalidArgument, "store: raw retention must be positive");
  }
  for (const auto& [window, keep] : retention.aggregates) {
    if (window.count() <= 0 || keep.count() <= 0) {
      return MakeError(Errc::kInvalidArgument,
                       "store: aggregate retention windows and durations must be positive");
    }
  }
  return Status::Ok();
}

}  // namespace

SqliteStore::SqliteStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SqliteStore::~SqliteStore() = default;

Result<std::unique_ptr<SqliteStore>> SqliteStore::Open(const SqliteStoreOptions& options) {
  if (options.path.empty()) return MakeError(Errc::kInvalidArgument, "store: empty path");
  if (options.readers == 0) return MakeError(Errc::kInvalidArgument, "store: zero readers");
  if (Status s = CheckRetention(options.retention); !s) return s.error();
  std::filesystem::path parent = std::filesystem::path(options.path).parent_path();
  if (!parent.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(parent, ec);
    if (ec) {
      return MakeError(Errc::kUnavailable,
                       "store: cannot create " + parent.string() + ": " + ec.message());
    }
  }
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  auto writer = Connection::Open(options.path, /*create=*/true);
  if (!writer) return writer.error();
  impl->writer = std::move(*writer);
  const std::size_t writer_kib = options.cache_bytes / 2 / 1024;
  const std::size_t reader_kib = options.cache_bytes / 2 / options.readers / 1024;
  // WAL mode is persistent in the file; setting it also checks that the file is a database.
  if (Status s = impl->writer->Exec("PRAGMA journal_mode = WAL"); !s) return s.error();
  if (Status s = Configure(*impl->writer, options, writer_kib, true); !s) return s.error();
  if (Status s = CreateOrCheckSchema(*impl->writer); !s) return s.error();
  if (Status s = impl->LoadRecentIndexRows(); !s) return s.error();
  for (std::size_t i = 0; i < options.readers; ++i) {
    auto conn = Connection::Open(options.path, /*create=*/false);
    if (!conn) return conn.error();
    if (Status s = Configure(**conn, options, reader_kib, false); !s) return s.error();
    auto reader = std::make_unique<detail::ReaderConnection>();
    reader->conn = std::move(*conn);
    impl->idle.push_back(reader.get());
    impl->readers.push_back(std::move(reader));
  }
  return std::unique_ptr<SqliteStore>(new SqliteStore(std::move(impl)));
}

Status SqliteStore::Apply(const WriteBatch& batch) { return impl_->Apply(batch); }

Result<std::optional<std::int64_t>> SqliteStore::LoadCheckpoint(const std::string& consumer,
                                                                std::int32_t partition) {
  auto lease = impl_->Acquire();
  return LoadCheckpointFrom(*(*lease)->conn, consumer, partition);
}

Result<std::vector<core::Alert>> SqliteStore::OpenAlerts() { return impl_->OpenAlerts(); }

Result<Page<StoredReading>> SqliteStore::Telemetry(const TelemetryQuery& q) {
  return impl_->Telemetry(q);
}

Result<Page<Aggregate>> SqliteStore::Aggregates(const AggregateQuery& q) {
  return impl_->Aggregates(q);
}

Result<Page<core::Alert>> SqliteStore::Alerts(const AlertQuery& q) { return impl_->Alerts(q); }

Result<std::optional<core::Alert>> SqliteStore::FindAlert(std::int64_t id) {
  return impl_->FindAlert(id);
}

Result<std::optional<core::Alert>> SqliteStore::Acknowledge(std::int64_t id,
                                                            const core::AlertAck& ack) {
  return impl_->Acknowledge(id, ack);
}

Result<std::optional<Device>> SqliteStore::FindDevice(const std::string& device_id) {
  return impl_->FindDevice(device_id);
}

Result<std::vector<Device>> SqliteStore::Devices(const DeviceQuery& q) { return impl_->Devices(q); }

Result<Stats> SqliteStore::GetStats(core::Timestamp now) { return impl_->GetStats(now); }

Result<Page<DeadLetter>> SqliteStore::DeadLetters(const DeadLetterQuery& q) {
  return impl_->DeadLetters(q);
}

Result<std::int64_t> SqliteStore::Expire(core::Timestamp now) { return impl_->Expire(now); }

Status SqliteStore::Ping() {
  {
    auto lease = impl_->Acquire();
    auto q = (*lease)->conn->Prepare(sql::kPing);
    if (!q) return q.error();
    auto row = q->Step();
    if (!row) return row.error();
  }
  if (impl_->write_failing.load()) {
    std::lock_guard lock(impl_->failure_mu);
    return MakeError(Errc::kUnavailable, "store: the last write failed: " + impl_->last_failure);
  }
  return Status::Ok();
}

}  // namespace iot::store
