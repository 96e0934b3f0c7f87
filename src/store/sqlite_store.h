// sqlite_store.h: the embedded Store, kept in one SQLite database file (WAL mode).
//
// Used by `iotd all` with STORE=sqlite; the file lives in DATA_DIR. Layout and the reasons for
// it are in src/store/README.md; in short:
//
//   - raw readings are stored per device in compact chunks (one BLOB per device and batch, see
//     raw_chunk.h), indexed by (device, time), which keeps Apply at one row per device rather
//     than one row per reading;
//   - aggregates, alerts, devices and checkpoints are ordinary tables; counters for /stats are
//     maintained by Apply, so nothing scans the raw data at start-up or for statistics.
//
//   SqliteStoreOptions options;
//   options.path = data_dir + "/store.db";
//   auto store = SqliteStore::Open(options);   // Result<std::unique_ptr<SqliteStore>>
//   if (!store) return store.error();
//   Status s = (*store)->Apply(batch);
//
// Guarantees beyond store.h:
//   - Idempotence of raw readings: a batch whose checkpoint is not beyond the stored one is
//     skipped entirely. For any batch, a reading whose MessageId is already stored for the same
//     device is dropped (found through the device's highest stored id, and by decoding the
//     device's chunks whose id range overlaps the batch's when ids arrive out of order); duplicate
//     ids within one batch are stored once. The same MessageId under two different device ids is
//     not detected (ids are assigned per bus message, so this does not happen).
//   - Device counters: `readings` of a device grows by its DeviceUpdate's count minus the
//     duplicates dropped for that device; a device with readings but no DeviceUpdate in the batch
//     is folded from its readings.
//   - Telemetry returns exactly the newest readings in (ts desc, id desc) order whatever the
//     arrival order; cursors are (ts, id) of the last item and stay correct while data arrives.
//     Aggregates are ordered by (window start desc, device, sensor, window) and the cursor's id
//     packs (device key, sensor key, window key). Alerts are ordered by (created_at desc, id
//     desc). `next` is set only when at least one more item exists.
//   - Within one Apply, alert upserts are applied before alert deletes; aggregate deltas with a
//     count of 0 are ignored.
//   - Stats: `devices` counts devices that have had readings (a device only named by an
//     aggregate or an alert is not listed), `alerts` counts alerts that fired (active or
//     resolved, not pending), `ingest_rate_per_s` averages the last complete minutes (at most
//     5, none before the first minute with an ingest count).
//   - Checkpoint fencing (store.h) is decided inside the Apply's transaction, on the stored
//     checkpoint itself: an aborted batch writes nothing.
//   - Dead letters are written in the Apply's transaction (so with its checkpoint), once per
//     (consumer, topic, partition, offset): a second copy is ignored, the first kept. Key and
//     payload are kept byte for byte. Listed by (failed_at desc, id desc), the cursor's id being
//     the row id. Expire never deletes them.
//   - Readers see whole Applies only (snapshot isolation).
//   - Retention (`options.retention`, applied by Expire): a raw reading with ts < now - raw is
//     deleted, exactly, also from a chunk that holds newer readings (the chunk is re-encoded
//     without it); an aggregate row of a listed window whose start < now - its keep is deleted.
//     Stats `readings` and `aggregates` go down by what was deleted; device rows, their
//     `readings` counters and `devices` stay. Expire works in transactions of at most
//     kExpireChunksPerTxn chunks or kExpireAggregatesPerTxn rows and releases the writer between
//     them, so Applies interleave; readers see each such transaction whole. When a step fails,
//     the steps before it stay done and the error is returned. A reading deleted by Expire and
//     then delivered again (a bus replay) is stored again; the next Expire deletes it.
//
// Lifecycle: Open creates the schema (or checks its version) and returns a ready store; the
// destructor closes every connection (SQLite then checkpoints and removes the WAL). Nothing runs in
// the background: Expire runs on the caller's thread (iotd calls it every RETENTION_INTERVAL).
//
// Thread-safety: every method may be called from any thread. Apply and Expire are serialized on
// one writer connection; queries run on a pool of `readers` read connections and never wait for
// a writer (WAL snapshot isolation), only for a free reader connection.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "core/result.h"
#include "store/store.h"

namespace iot::store {

struct SqliteStoreOptions {
  // path is the database file (e.g. DATA_DIR/store.db); its directory is created if missing.
  std::string path;
  // sync is `PRAGMA synchronous`. kNormal (the default) in WAL mode never corrupts the database
  // and loses nothing on a process crash; a power loss may lose the last transactions, which the
  // workers replay from the bus (their checkpoint is in the same transactions).
  enum class Sync { kOff, kNormal, kFull } sync = Sync::kNormal;
  // cache_bytes is the page-cache budget: half for the writer connection, the other half shared
  // equally by the reader connections.
  std::size_t cache_bytes = 16 << 20;
  // readers is the number of read connections (at least 1).
  std::size_t readers = 4;
  // mmap_bytes is `PRAGMA mmap_size` of the reader connections (0: no memory mapping; mapped
  // pages count in the process's resident memory).
  std::size_t mmap_bytes = 0;
  // busy_timeout_ms is how long a connection waits for a lock held by another process before
  // an operation fails with kUnavailable.
  int busy_timeout_ms = 5000;
  // retention is what Expire deletes (store.h); empty: Expire deletes nothing. Every duration
  // must be positive.
  Retention retention;
};

class SqliteStore final : public Store {
 public:
  // Open opens or creates the database at `options.path`. kInvalidArgument for an empty path,
  // zero readers or a retention duration or window that is not positive, kCorruption when the
  // file is not a database of a known schema version, kUnavailable when it cannot be opened.
  static Result<std::unique_ptr<SqliteStore>> Open(const SqliteStoreOptions& options);

  ~SqliteStore() override;
  SqliteStore(const SqliteStore&) = delete;
  SqliteStore& operator=(const SqliteStore&) = delete;

  Status Apply(const WriteBatch& batch) override;
  Result<std::optional<std::int64_t>> LoadCheckpoint(const std::string& consumer,
                                                     std::int32_t partition) override;
  Result<std::vector<core::Alert>> OpenAlerts() override;
  Result<Page<StoredReading>> Telemetry(const TelemetryQuery& q) override;
  Result<Page<Aggregate>> Aggregates(const AggregateQuery& q) override;
  Result<Page<core::Alert>> Alerts(const AlertQuery& q) override;
  Result<std::optional<Device>> FindDevice(const std::string& device_id) override;
  Result<std::optional<core::Alert>> FindAlert(std::int64_t id) override;
  Result<std::optional<core::Alert>> Acknowledge(std::int64_t id,
                                                 const core::AlertAck& ack) override;
  Result<std::vector<Device>> Devices(const DeviceQuery& q) override;
  Result<Stats> GetStats(core::Timestamp now) override;
  Result<Page<DeadLetter>> DeadLetters(const DeadLetterQuery& q) override;
  // Expire applies `options.retention` (see the guarantees above); it may take the writer several
  // times, briefly each.
  Result<std::int64_t> Expire(core::Timestamp now) override;
  // Ping reads from the database and fails when the last Apply failed for a reason other than
  // its input (an I/O error, a full disk), until an Apply succeeds again.
  Status Ping() override;

 private:
  struct Impl;
  explicit SqliteStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace iot::store
