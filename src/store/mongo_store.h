// mongo_store.h: the Store kept in MongoDB (STORE=mongodb), through the official C driver.
//
// Collections in database MONGO_DB, with the seed's names and document shapes
// (docs/storage.md has every field and index):
//
//   telemetry_raw    one document per reading: _id = message id (int64), device_id, ts (date),
//                    every sensor as a field of its own, lat, lon
//   aggregated_data  one document per (device, sensor, window, window start): device_id,
//                    sensor_type, window, timestamp (date, the window start), count, sum, min,
//                    max, average, updated_at
//   alerts           one document per alert: _id = alert id (int64) and the seed's fields, plus
//                    threshold, created_at, updated_at, resolved_at, count
//   devices          one document per device: first_seen, last_seen, readings, latest
//   checkpoints      one document per (consumer, partition): next_offset and the pending batch
//   ingest_minutes   readings processed per minute, for the ingest rate of /stats
//   dead_letters     one document per record a worker gave up on: _id = "<consumer>/<partition>/
//                    <offset>/<topic>", the fields of store::DeadLetter, payload as binary
//
// MongoDB has multi-document transactions only on replica sets and FerretDB has none, so Apply
// does not rely on them. Instead (docs/storage.md, "Exactly-once without transactions"):
//
//   0. the checkpoint fence (store.h) is decided on the checkpoint as last read or written by this
//      instance, which another writer may have moved since: step 2 finds out;
//   1. raw readings and dead letters are inserted in unordered bulk inserts keyed by their bus
//      position, so a replay's duplicates fail with E11000 and count as already done;
//   2. every other effect of the batch (aggregate, device, ingest-rate increments; alert inserts,
//      replacements and deletes) is written as a journal, then the checkpoint moves to the
//      batch's end with the journal's mark, conditionally on the offset the fence was decided at:
//      the commit point. When that compare fails, the checkpoint is read again and the fence
//      decided again on it: skipped (Ok), refused (kAborted), or committed at the new offset;
//   3. the journal is applied with update operators, every write guarded by a per-document
//      high-water mark `hw.<consumer>_<partition>` (the batch's end offset), so applying the same
//      journal twice changes nothing: after a crash, and also when a rebalance has the old and the
//      new owner of a partition apply it at the same time;
//   4. the journal is cleared.
//
//   A journal found at start-up (LoadCheckpoint) or by the next Apply of the same consumer and
//   partition is applied again first. Device reading counts stay exact because a duplicate raw
//   insert whose offset is at or beyond the consumer's checkpoint came from an attempt that never
//   committed, and is counted. Dead letters keep the first copy stored; Expire never deletes
//   them.
//
// Transient errors (no server, a network error, a primary stepping down) are retried inside each
// call with exponential backoff and jitter up to `max_attempts`, then surface as kUnavailable,
// which the workers retry. Once the health check (Ping) finds the server down, they surface
// after the attempt that failed: an outage reaches the workers, which pause and back off.
//
// Thread-safety: every method may be called from any thread; each call takes a client from a
// pool of `max_pool_size` connections.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <string_view>
#include <memory>
#include <string>

#include "core/result.h"
#include "store/store.h"

namespace iot::store {

struct MongoStoreOptions {
  std::string url = "mongodb://mongo:27017";  // MONGO_URL; its own URI options win over ours
  std::string database = "iotdb";             // MONGO_DB
  // max_pool_size is the number of connections the process may open (its threads that use the
  // store: HTTP threads, workers, retention).
  std::size_t max_pool_size = 16;
  // Timeouts set on the URI unless it sets them itself.
  std::chrono::milliseconds connect_timeout{3000};           // connectTimeoutMS
  std::chrono::milliseconds server_selection_timeout{3000};  // serverSelectionTimeoutMS
  std::chrono::milliseconds socket_timeout{120000};          // socketTimeoutMS: big bulk writes
  // Retries of transient errors inside one call: attempts in all, and the first backoff (doubled
  // each time, with jitter, at most max_backoff).
  int max_attempts = 4;
  std::chrono::milliseconds initial_backoff{50};
  std::chrono::milliseconds max_backoff{1000};
  Retention retention;
  // crash_at is for fault-injection tests only: Apply calls it at each step ("raw" after the raw
  // inserts, "dead_letters" after the dead letters, "commit" after the checkpoint and journal
  // are written, "apply:<collection>" after each collection's writes, "applied" before the
  // journal is cleared) and, when it returns true, stops there with an error as if the process
  // had died at that point.
  std::function<bool(std::string_view step)> crash_at;
  // app_name is shown by the server in its logs and currentOp.
  std::string app_name = "iotd";
};

class MongoStore final : public Store {
 public:
  // Open checks the URL, connects, and creates the collections' indexes (idempotently).
  // kInvalidArgument for a malformed URL or database name, kUnavailable when the server cannot
  // be reached within the timeouts.
  static Result<std::unique_ptr<MongoStore>> Open(const MongoStoreOptions& options);

  ~MongoStore() override;
  MongoStore(const MongoStore&) = delete;
  MongoStore& operator=(const MongoStore&) = delete;

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
  Result<std::int64_t> Expire(core::Timestamp now) override;
  // Ping reports the last result of the health check, a `ping` sent every second on a
  // connection of its own that gives up quickly (so it never blocks the caller).
  Status Ping() override;

 private:
  struct Impl;
  explicit MongoStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace iot::store
