// store.h: where readings, aggregates and alerts are kept, and how they are read back.
//
// Workers write through `Apply`, which applies a WriteBatch atomically together with the
// worker's checkpoint (its position on the bus): after a crash, a worker resumes from its
// checkpoint and nothing is counted twice or missed. A batch whose checkpoint is not beyond the
// stored one has already been applied and is skipped. The dashboard reads through the queries.
// Implementations: `sqlite_store.cc` (embedded) and, later, `mongo_store.cc`; both pass the
// conformance suite in tests/unit/store/.
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <utility>
#include <string>
#include <vector>

#include "core/alert.h"
#include "core/reading.h"
#include "core/result.h"
#include "core/time.h"
#include "core/window.h"

namespace iot::store {

struct StoredReading {
  core::MessageId id;
  core::Reading reading;
  friend bool operator==(const StoredReading&, const StoredReading&) = default;
};

// AggregateDelta is merged into the stored aggregate of its key (created when missing).
struct AggregateDelta {
  core::AggregateKey key;
  core::Accumulator acc;
};

struct Aggregate {
  core::AggregateKey key;
  core::Accumulator acc;
  friend bool operator==(const Aggregate&, const Aggregate&) = default;
};

// Checkpoint is a worker's position on the bus: everything before `next_offset` is applied.
//
// `from_offset` is where the batch starts: the position the worker had when it polled the batch
// (its previous checkpoint, or where it was assigned the partition). It fences a worker that lost
// its partition to another (a Kafka rebalance while it was applying): see Store::Apply.
struct Checkpoint {
  std::string consumer;  // "aggregator" or "alerts"
  std::int32_t partition = 0;
  std::int64_t next_offset = 0;
  std::int64_t from_offset = 0;
};

// DeadLetter is a bus record that could not be processed (undecodable, invalid, or refused by the
// store every time it was tried). Kept in the store for GET /dlq, atomically with the checkpoint
// that moves past the record, and also published to DLQ_TOPIC when the bus is Kafka.
struct DeadLetter {
  std::string consumer;        // the worker that gave up on it: "aggregator" or "alerts"
  std::string topic;           // the source topic (TELEMETRY_TOPIC; "embedded" for the embedded bus)
  std::int32_t partition = 0;  // the source partition and offset; (consumer, topic, partition,
  std::int64_t offset = 0;     // offset) is unique: storing the same dead letter twice keeps one
  std::string key;             // the record's key (the device id when ingest produced it)
  std::string payload;         // the record's bytes, unchanged (may be binary or invalid UTF-8)
  std::string reason;          // why it failed, for people: "undecodable: ..." / "store: ..."
  std::int32_t attempts = 0;   // how many times it was tried
  core::Timestamp failed_at{}; // when it was given up
  friend bool operator==(const DeadLetter&, const DeadLetter&) = default;
};

// DeviceUpdate folds a worker's readings of one device into the devices table.
struct DeviceUpdate {
  std::string device_id;
  core::Timestamp first_seen{};  // smallest ts seen in this batch
  core::Timestamp last_seen{};   // largest ts seen in this batch
  std::int64_t readings = 0;
  // The reading with the largest ts of this batch; replaces the stored latest one when newer.
  core::Reading latest;
};

struct WriteBatch {
  std::vector<StoredReading> readings;
  std::vector<DeviceUpdate> devices;
  std::vector<AggregateDelta> aggregates;
  std::vector<core::Alert> alert_upserts;
  std::vector<std::int64_t> alert_deletes;
  std::vector<DeadLetter> dead_letters;
  // ingested counts readings per minute of processing time, for the ingest rate in /stats.
  std::int64_t ingested = 0;
  core::Timestamp processed_at{};
  std::optional<Checkpoint> checkpoint;
};

// Cursor continues a newest-first listing after the last item of the previous page.
// It is opaque to clients (see EncodeCursor in the dashboard service).
struct Cursor {
  std::int64_t ts_us = 0;  // the sort time of the last item
  std::int64_t id = 0;     // tie-breaker: the id of the last item
  std::string key = {};       // a tie-breaker that is not a number (MongoDB aggregates' _id), or empty
};

struct TimeRange {
  std::optional<core::Timestamp> from;  // inclusive
  std::optional<core::Timestamp> to;    // exclusive
};

template <typename T>
struct Page {
  std::vector<T> items;
  std::optional<Cursor> next;  // set only when more items follow
};

// `device_prefix` in a query keeps only the items of devices whose id starts with it (a read
// token's scope, docs/security.md); with `device_id` too, both must hold. Filtered in the query,
// so pages stay full and cursors stay right.
struct TelemetryQuery {
  std::optional<std::string> device_id;
  std::optional<std::string> device_prefix = {};
  TimeRange range;                 // on ts
  std::size_t limit = 100;
  std::optional<Cursor> after;
};

struct AggregateQuery {
  std::optional<std::string> device_id;
  std::optional<std::string> device_prefix = {};
  std::optional<std::string> sensor_type;
  std::optional<core::Micros> window;
  TimeRange range;                 // on window start
  std::size_t limit = 100;
  std::optional<Cursor> after;     // ts_us = window start; id = an implementation-defined tiebreak
};

struct AlertQuery {
  std::optional<std::string> device_id;
  std::optional<std::string> device_prefix = {};
  std::optional<core::AlertStatus> status;  // nullopt: active and resolved (never pending)
  TimeRange range;                          // on created_at
  std::size_t limit = 100;
  std::optional<Cursor> after;
};

struct DeadLetterQuery {
  std::optional<std::string> consumer;
  TimeRange range;                 // on failed_at
  std::size_t limit = 100;
  std::optional<Cursor> after;     // ts_us = failed_at; id/key: an implementation-defined tiebreak
};

struct Device {
  std::string device_id;
  core::Timestamp first_seen{};
  core::Timestamp last_seen{};
  std::int64_t readings = 0;
  core::Reading latest;
  friend bool operator==(const Device&, const Device&) = default;
};

struct DeviceQuery {
  std::size_t limit = 100;
  std::optional<std::string> after;  // device ids are listed in ascending order
  std::optional<std::string> prefix;
};

// Stats: `alerts` counts alerts that fired (active or resolved, never pending); `devices` those
// with readings; the ingest rate ignores minutes before the first reading was processed.
struct Stats {
  std::int64_t devices = 0;
  std::int64_t readings = 0;
  std::int64_t aggregates = 0;
  std::int64_t alerts = 0;
  std::int64_t active_alerts = 0;
  // readings processed in the last complete minutes (up to 5) divided by their seconds
  double ingest_rate_per_s = 0;
};

// Retention says how long data is kept (RAW_RETENTION, AGG_RETENTION); unset keeps it forever.
struct Retention {
  std::optional<core::Micros> raw;  // on a reading's ts
  // (window size, how long) on an aggregate's window start; windows not listed are kept forever.
  std::vector<std::pair<core::Micros, core::Micros>> aggregates;
  bool empty() const { return !raw && aggregates.empty(); }
};

class Store {
 public:
  virtual ~Store() = default;

  // Apply writes `batch` atomically with its checkpoint. With S the stored next offset of the
  // checkpoint's (consumer, partition):
  //   - next_offset <= S: the batch was applied already; skipped (Ok).
  //   - from_offset <  S < next_offset: another worker applied part of this range (it owns the
  //     partition now, or owned it): nothing is written, kAborted; the caller reloads the
  //     checkpoint and polls again from there.
  //   - otherwise (from_offset >= S, or no checkpoint stored yet) the batch is applied.
  // Raw readings are idempotent on their MessageId (a duplicate is neither stored nor counted in
  // Device::readings). Alert upserts are applied before alert deletes. Dead letters are
  // idempotent on (consumer, topic, partition, offset). kUnavailable means: retry later.
  virtual Status Apply(const WriteBatch& batch) = 0;

  // LoadCheckpoint returns the next offset to consume, or nullopt when the consumer never ran.
  virtual Result<std::optional<std::int64_t>> LoadCheckpoint(const std::string& consumer,
                                                             std::int32_t partition) = 0;

  // OpenAlerts returns every pending or active alert (the alerts worker's state at start-up).
  virtual Result<std::vector<core::Alert>> OpenAlerts() = 0;

  virtual Result<Page<StoredReading>> Telemetry(const TelemetryQuery& q) = 0;
  virtual Result<Page<Aggregate>> Aggregates(const AggregateQuery& q) = 0;
  virtual Result<Page<core::Alert>> Alerts(const AlertQuery& q) = 0;
  virtual Result<std::optional<Device>> FindDevice(const std::string& device_id) = 0;
  // FindAlert returns alert `id` when it has fired (active or resolved), else nullopt (unknown
  // or still pending, as the listings do).
  virtual Result<std::optional<core::Alert>> FindAlert(std::int64_t id) = 0;
  // Acknowledge stores `ack` for alert `id` when it has fired and has no acknowledgement yet (the
  // first one is kept: acknowledging twice changes nothing), and returns the alert with its
  // acknowledgement; nullopt when FindAlert would. Every alert the store returns (Alerts,
  // FindAlert) carries its acknowledgement; OpenAlerts need not.
  virtual Result<std::optional<core::Alert>> Acknowledge(std::int64_t id,
                                                         const core::AlertAck& ack) = 0;
  virtual Result<std::vector<Device>> Devices(const DeviceQuery& q) = 0;
  virtual Result<Stats> GetStats(core::Timestamp now) = 0;
  // DeadLetters lists dead letters newest first (failed_at, then a tiebreak), for GET /dlq.
  virtual Result<Page<DeadLetter>> DeadLetters(const DeadLetterQuery& q) = 0;

  // Expire deletes what the store's Retention (an option of each implementation) no longer keeps:
  // raw readings with ts < now - raw, aggregates whose window start < now - their window's time.
  // Device rows and their counters stay (Device::readings counts readings ever stored). Returns
  // how many raw readings and aggregates were deleted; a store that leaves the deletion to its
  // database (a MongoDB TTL index) may return 0 for what the database deletes by itself.
  virtual Result<std::int64_t> Expire(core::Timestamp now) = 0;

  // Ping answers Ok when the store can serve reads and writes (readiness).
  virtual Status Ping() = 0;
};

}  // namespace iot::store
