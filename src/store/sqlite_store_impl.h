// sqlite_store_impl.h: the internals of SqliteStore, shared by its source files (private to
// src/store).
//
//   sqlite_store.cc        Open, the reader pool, Ping, LoadCheckpoint
//   sqlite_store_write.cc  Apply (the writer) and Expire (retention, on the writer)
//   sqlite_store_read.cc   the queries
//
// The schema and the statements are in sqlite_sql.h; the raw chunk format in raw_chunk.h.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "core/result.h"
#include "store/sqlite_conn.h"
#include "store/sqlite_store.h"

namespace iot::store {
namespace detail {

inline constexpr std::int64_t kMinI64 = std::numeric_limits<std::int64_t>::min();
inline constexpr std::int64_t kMaxI64 = std::numeric_limits<std::int64_t>::max();
inline constexpr std::int64_t kMicrosPerMinute = 60'000'000;
// How many minutes of ingest counts are kept (GetStats needs the last 5).
inline constexpr std::int64_t kIngestMinutesKept = 60;
// Key caches are dropped when they grow beyond this many entries (a memory bound).
inline constexpr std::size_t kMaxCacheEntries = 50'000;
// Entries of chunk_index_recent that trigger their move into chunk_index.
inline constexpr std::int64_t kRecentIndexRows = 32'768;
// Aggregate rows remembered as existing (the current windows of every series), see Apply.
inline constexpr std::size_t kMaxKnownAggregates = 65'536;
// Expire's transactions are bounded so that Apply never waits long for the writer: at most this
// many raw chunks deleted or trimmed (up to raw::kMaxChunkReadings readings each), or aggregate
// rows deleted, per transaction.
inline constexpr std::int64_t kExpireChunksPerTxn = 256;
inline constexpr std::int64_t kExpireAggregatesPerTxn = 4'096;

// Aggregate cursors pack (device key, sensor key, window key) into one positive int64, in this
// order of significance, so that (window_start, packed) orders like the queries' ORDER BY.
inline constexpr int kSensorBits = 24;
inline constexpr int kWindowBits = 8;
inline constexpr std::int64_t kMaxDeviceKey =
    (std::int64_t{1} << (63 - kSensorBits - kWindowBits)) - 1;
inline constexpr std::int64_t kMaxSensorKey = (std::int64_t{1} << kSensorBits) - 1;
inline constexpr std::int64_t kMaxWindowKey = (std::int64_t{1} << kWindowBits) - 1;

// FloorDiv divides rounding towards negative infinity (minutes before 1970 stay aligned).
inline std::int64_t FloorDiv(std::int64_t a, std::int64_t b) {
  std::int64_t q = a / b;
  return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

// ReadingKey orders readings as listed: (ts, id).
inline std::pair<std::int64_t, std::int64_t> ReadingKey(const StoredReading& r) {
  return {core::ToUnixMicros(r.reading.ts), r.id.value};
}

// Alert statuses as stored: 0 pending, 1 active, 2 resolved.
inline std::int64_t AlertStatusCode(core::AlertStatus s) {
  switch (s) {
    case core::AlertStatus::kPending:
      return 0;
    case core::AlertStatus::kActive:
      return 1;
    case core::AlertStatus::kResolved:
      return 2;
  }
  return 0;
}

struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept {
    return std::hash<std::string_view>{}(s);
  }
};
template <typename V>
using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;
template <typename V>
using StringViewMap = std::unordered_map<std::string_view, V, StringHash, std::equal_to<>>;

// AggregateRowKey is the primary key of an aggregated_data row.
struct AggregateRowKey {
  std::int64_t window_key, window_start, device_key, sensor_key;
  friend bool operator==(const AggregateRowKey&, const AggregateRowKey&) = default;
};
struct AggregateRowKeyHash {
  std::size_t operator()(const AggregateRowKey& k) const noexcept {
    std::uint64_t h = static_cast<std::uint64_t>(k.window_start) * 0x9E3779B97F4A7C15ull;
    h ^= static_cast<std::uint64_t>(k.device_key) + 0x632BE59BD9B4E019ull + (h << 6) + (h >> 2);
    h ^= static_cast<std::uint64_t>(k.sensor_key << 8 | k.window_key) + (h << 6) + (h >> 2);
    return static_cast<std::size_t>(h);
  }
};

// ReaderConnection is one read connection with caches of committed mappings, which never change
// once committed (keys are never deleted or reused): device key -> id, sensor key -> name,
// window key -> micros. Used by the one thread that leased it.
struct ReaderConnection {
  std::unique_ptr<sqlite::Connection> conn;
  std::unordered_map<std::int64_t, std::string> device_ids;
  std::unordered_map<std::int64_t, std::string> sensor_names;
  std::unordered_map<std::int64_t, std::int64_t> window_us;
};

}  // namespace detail

// Impl holds the connections. The writer connection and the writer's state are guarded by
// write_mu; a reader connection is used by the one thread that leased it from the pool.
struct SqliteStore::Impl {
  // DeviceState is the writer's cached view of one device row.
  struct DeviceState {
    std::int64_t key = 0;
    std::int64_t max_id = detail::kMinI64;
    bool seen = false;  // has had readings folded in (listed by Devices, counted by Stats)
  };

  // Lease hands a reader back to the pool when it goes out of scope.
  class Lease {
   public:
    Lease(Impl& impl, detail::ReaderConnection* reader) : impl_(impl), reader_(reader) {}
    ~Lease() { impl_.Release(reader_); }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    detail::ReaderConnection& operator*() const { return *reader_; }
    detail::ReaderConnection* operator->() const { return reader_; }

   private:
    Impl& impl_;
    detail::ReaderConnection* reader_;
  };

  // TotalsDelta is the counter changes of one Apply, written to the totals row at its end.
  struct TotalsDelta {
    std::int64_t devices = 0;
    std::int64_t readings = 0;
    std::int64_t aggregates = 0;
    std::int64_t alerts = 0;
    std::int64_t active_alerts = 0;
    std::int64_t span_mask = 0;
    std::optional<std::int64_t> minute;
  };

  // DeviceFold is what one Apply folds into one device row.
  struct DeviceFold {
    DeviceState* state = nullptr;
    bool has_data = false;  // from a DeviceUpdate or from readings
    std::int64_t first = detail::kMaxI64;
    std::int64_t last = detail::kMinI64;
    std::int64_t readings = 0;
    const core::Reading* latest = nullptr;
    std::int64_t latest_ts = detail::kMinI64;
    std::int64_t max_id = detail::kMinI64;
    std::int64_t span_mask = 0;
    std::int64_t dropped = 0;  // duplicate readings not stored
  };

  SqliteStoreOptions options;

  // ---- writer state (write_mu) ----
  std::mutex write_mu;
  std::unique_ptr<sqlite::Connection> writer;
  detail::StringMap<DeviceState> device_cache;
  detail::StringMap<std::int64_t> sensor_cache;
  std::unordered_map<std::int64_t, std::int64_t> window_cache;
  std::unordered_set<detail::AggregateRowKey, detail::AggregateRowKeyHash> known_aggregates;
  std::int64_t recent_index_rows = 0;  // rows in chunk_index_recent
  // Set when an Apply failed for a reason other than its input, cleared by a successful one.
  std::atomic<bool> write_failing{false};
  std::mutex failure_mu;
  std::string last_failure;

  // ---- reader pool ----
  std::vector<std::unique_ptr<detail::ReaderConnection>> readers;
  std::mutex pool_mu;
  std::condition_variable pool_cv;
  std::vector<detail::ReaderConnection*> idle;

  // Acquire waits for an idle reader connection.
  std::unique_ptr<Lease> Acquire();
  void Release(detail::ReaderConnection* r);

  // ---- writer (sqlite_store_write.cc; write_mu held) ----

  // Apply runs ApplyLocked and, when it fails, resets the writer's state to the database's.
  Status Apply(const WriteBatch& batch);
  Status ApplyLocked(const WriteBatch& batch);
  // ClearWriterCaches forgets every cached key (after a rollback, keys created by the failed
  // transaction no longer exist).
  void ClearWriterCaches();
  // LoadRecentIndexRows reads the size of the recent chunk index tier (small: at most about
  // kRecentIndexRows rows), after Open and after a rolled-back Apply.
  Status LoadRecentIndexRows();
  // MergeRecentIndexIfFull moves the recent tier into chunk_index when it is full.
  Status MergeRecentIndexIfFull();
  // DeviceKey returns the device's state, creating its row when missing. The pointer stays
  // valid until the caches are cleared (only between Applies).
  Result<DeviceState*> DeviceKey(std::string_view device_id);
  Result<std::int64_t> SensorKey(std::string_view name);
  Result<std::int64_t> WindowKey(std::int64_t window_us);
  // DropStored removes from `group` (one device, sorted by id) the readings whose ids are
  // already stored in a chunk of that device whose id range overlaps the group's. Returns how
  // many it removed.
  Result<std::int64_t> DropStored(std::int64_t device_key,
                                  std::vector<const StoredReading*>& group);
  // WriteReadings stores the batch's raw readings in chunks and records, per device, what the
  // device row must learn (max id, span classes, duplicates dropped).
  Status WriteReadings(const WriteBatch& batch, detail::StringViewMap<DeviceFold>& folds,
                       TotalsDelta& totals);
  // FoldDevices applies DeviceUpdates (merged per device) and the chunk bookkeeping to the
  // device rows.
  Status FoldDevices(detail::StringViewMap<DeviceFold>& folds, TotalsDelta& totals);
  Status WriteAggregates(const WriteBatch& batch, TotalsDelta& totals);
  Result<std::optional<std::int64_t>> StoredAlertStatus(std::int64_t id);
  Status WriteAlerts(const WriteBatch& batch, TotalsDelta& totals);
  Status WriteDeadLetters(const WriteBatch& batch);
  Status WriteIngest(const WriteBatch& batch, TotalsDelta& totals);
  Status WriteTotals(const TotalsDelta& t);

  // ---- retention (sqlite_store_write.cc) ----

  // ExpireStep is what one bounded Expire transaction did.
  struct ExpireStep {
    std::int64_t deleted = 0;  // raw readings or aggregate rows
    bool more = false;         // it stopped at its bound: more may be left
  };
  // Expire runs bounded transactions, each taking write_mu, until nothing older than the
  // retention is left; returns the raw readings and aggregate rows deleted.
  Result<std::int64_t> Expire(core::Timestamp now);
  // ExpireRawStep deletes chunks wholly before `cutoff` and trims chunks straddling it, at most
  // kExpireChunksPerTxn, in one transaction (write_mu held).
  Result<ExpireStep> ExpireRawStep(std::int64_t cutoff);
  // ExpireAggregatesStep deletes at most kExpireAggregatesPerTxn rows of window `window_us`
  // whose window starts before `cutoff`, in one transaction (write_mu held).
  Result<ExpireStep> ExpireAggregatesStep(std::int64_t window_us, std::int64_t cutoff);
  // TrimChunk rewrites chunk `chunk_id` (`blob`) without its readings older than `cutoff`;
  // returns how many it dropped.
  Result<std::int64_t> TrimChunk(std::int64_t chunk_id, std::int64_t device_key, int span_class,
                                 std::int64_t max_ts, std::string_view blob, std::int64_t cutoff);

  // Acknowledge writes an acknowledgement on the writer (write_mu), then reads the alert back.
  Result<std::optional<core::Alert>> Acknowledge(std::int64_t id, const core::AlertAck& ack);

  // ---- queries (sqlite_store_read.cc) ----
  Result<Page<StoredReading>> Telemetry(const TelemetryQuery& query);
  Result<Page<Aggregate>> Aggregates(const AggregateQuery& query);
  Result<Page<core::Alert>> Alerts(const AlertQuery& query);
  Result<std::vector<core::Alert>> OpenAlerts();
  Result<std::optional<Device>> FindDevice(const std::string& device_id);
  Result<std::optional<core::Alert>> FindAlert(std::int64_t id);
  Result<std::vector<Device>> Devices(const DeviceQuery& query);
  Result<Stats> GetStats(core::Timestamp now);
  Result<Page<DeadLetter>> DeadLetters(const DeadLetterQuery& query);
};

}  // namespace iot::store
