// sqlite_sql.h: the schema and the SQL statements of SqliteStore (private to src/store).
//
// Statements are `inline constexpr` so that each has one address program-wide: the
// connections' statement caches are keyed by that address (see sqlite_conn.h).
#pragma once

namespace iot::store::sql {

// kSchemaVersion is `PRAGMA user_version` of a database created by this code: kSchema, then
// kDeadLetterSchema, then kAckSchema. Version 1 was kSchema alone, version 2 had no
// acknowledgements; Open upgrades both by running what they lack.
inline constexpr int kSchemaVersion = 3;

// ---- schema -------------------------------------------------------------------------------

// Keys: devices, sensors and windows get small integer keys so that chunk and aggregate rows
// and their indexes stay small and compare fast.
//
// raw_chunks: one row per (device, Apply, time run), see raw_chunk.h, appended in chunk_id order.
// raw_by_time serves the all-devices listing. One device's chunks are found through a two-tier
// index: each Apply adds its entries to the small chunk_index_recent, and when that holds
// kRecentIndexRows (sqlite_store_impl.h) entries they are moved, in one sorted pass, into
// chunk_index. A device-ordered index receives one entry per device per Apply, each on a
// different page (the end of that device's range): the small tier keeps those pages few, and the
// move touches each device's page of the big tier once per many Applies instead of once per
// Apply. Queries read both tiers.
// All chunk indexes lead with span_class so that a scan for "chunks that may hold readings at or
// before T" is a bounded range per class: max_ts in [from, T + 2^class) (see Telemetry).
//
// aggregated_data: the primary key leads with (window_key, window_start) so that the rows of the
// current windows of all devices are adjacent: the upserts of a batch touch a few pages instead
// of one page per device. Secondary indexes only change when a row is created (the upsert of an
// existing row changes no indexed column).
//
// totals: one row of counters maintained by Apply, so GetStats never counts rows.
//
// dead_letters: see kDeadLetterSchema.
inline constexpr const char* kSchema = R"sql(
CREATE TABLE devices(
  device_key INTEGER PRIMARY KEY,
  device_id TEXT NOT NULL UNIQUE,
  first_seen INTEGER NOT NULL,
  last_seen INTEGER NOT NULL,
  readings INTEGER NOT NULL,
  latest_ts INTEGER NOT NULL,
  latest BLOB,
  max_id INTEGER NOT NULL,
  span_mask INTEGER NOT NULL);
CREATE TABLE raw_chunks(
  chunk_id INTEGER PRIMARY KEY,
  device_key INTEGER NOT NULL,
  span_class INTEGER NOT NULL,
  min_ts INTEGER NOT NULL,
  max_ts INTEGER NOT NULL,
  min_id INTEGER NOT NULL,
  max_id INTEGER NOT NULL,
  n INTEGER NOT NULL,
  data BLOB NOT NULL);
CREATE INDEX raw_by_time ON raw_chunks(span_class, max_ts, min_ts);
CREATE TABLE chunk_index(
  device_key INTEGER NOT NULL,
  span_class INTEGER NOT NULL,
  max_ts INTEGER NOT NULL,
  chunk_id INTEGER NOT NULL,
  min_ts INTEGER NOT NULL,
  PRIMARY KEY(device_key, span_class, max_ts, chunk_id)) WITHOUT ROWID;
CREATE TABLE chunk_index_recent(
  device_key INTEGER NOT NULL,
  span_class INTEGER NOT NULL,
  max_ts INTEGER NOT NULL,
  chunk_id INTEGER NOT NULL,
  min_ts INTEGER NOT NULL,
  PRIMARY KEY(device_key, span_class, max_ts, chunk_id)) WITHOUT ROWID;
CREATE TABLE sensors(sensor_key INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE windows(window_key INTEGER PRIMARY KEY, window_us INTEGER NOT NULL UNIQUE);
CREATE TABLE aggregated_data(
  window_key INTEGER NOT NULL,
  window_start INTEGER NOT NULL,
  device_key INTEGER NOT NULL,
  sensor_key INTEGER NOT NULL,
  count INTEGER NOT NULL,
  sum REAL NOT NULL,
  min REAL NOT NULL,
  max REAL NOT NULL,
  PRIMARY KEY(window_key, window_start, device_key, sensor_key)) WITHOUT ROWID;
CREATE INDEX agg_by_series ON aggregated_data(device_key, sensor_key, window_key, window_start);
CREATE INDEX agg_by_device ON aggregated_data(device_key, window_start, sensor_key, window_key);
CREATE INDEX agg_by_time ON aggregated_data(window_start, device_key, sensor_key, window_key);
CREATE TABLE alerts(
  id INTEGER PRIMARY KEY,
  device_id TEXT NOT NULL,
  sensor_type TEXT NOT NULL,
  value REAL NOT NULL,
  alert_type TEXT NOT NULL,
  severity TEXT NOT NULL,
  message TEXT NOT NULL,
  ts INTEGER NOT NULL,
  status INTEGER NOT NULL,
  threshold REAL NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  resolved_at INTEGER,
  count INTEGER NOT NULL);
CREATE INDEX alerts_by_created ON alerts(created_at);
CREATE INDEX alerts_by_device ON alerts(device_id, created_at);
CREATE INDEX alerts_by_status ON alerts(status, created_at);
CREATE TABLE checkpoints(
  consumer TEXT NOT NULL,
  partition_id INTEGER NOT NULL,
  next_offset INTEGER NOT NULL,
  PRIMARY KEY(consumer, partition_id)) WITHOUT ROWID;
CREATE TABLE ingest_minutes(minute INTEGER PRIMARY KEY, readings INTEGER NOT NULL);
CREATE TABLE totals(
  id INTEGER PRIMARY KEY CHECK (id = 1),
  devices INTEGER NOT NULL,
  readings INTEGER NOT NULL,
  aggregates INTEGER NOT NULL,
  alerts INTEGER NOT NULL,
  active_alerts INTEGER NOT NULL,
  span_mask INTEGER NOT NULL,
  first_minute INTEGER);
INSERT INTO totals VALUES(1, 0, 0, 0, 0, 0, 0, NULL);
)sql";

// dead_letters: bus records the workers gave up on, written in the transaction of the batch whose
// checkpoint moves past them, unique per (consumer, topic, partition, offset): storing one twice
// keeps the first. `key` and `payload` are BLOBs (the record's bytes, unchanged). Listed newest
// first by (failed_at, id); both indexes end with the rowid `id` implicitly. Never expired.
inline constexpr const char* kDeadLetterSchema = R"sql(
CREATE TABLE dead_letters(
  id INTEGER PRIMARY KEY,
  consumer TEXT NOT NULL,
  topic TEXT NOT NULL,
  partition_id INTEGER NOT NULL,
  record_offset INTEGER NOT NULL,
  key BLOB NOT NULL,
  payload BLOB NOT NULL,
  reason TEXT NOT NULL,
  attempts INTEGER NOT NULL,
  failed_at INTEGER NOT NULL,
  UNIQUE(consumer, topic, partition_id, record_offset));
CREATE INDEX dead_letters_by_time ON dead_letters(failed_at);
CREATE INDEX dead_letters_by_consumer ON dead_letters(consumer, failed_at);
PRAGMA user_version = 2;
)sql";

// alert_acks: acknowledgements of alerts (POST /alerts/{id}/ack), one per alert, written by the
// dashboard and never by Apply, so that the alerts worker's upserts cannot erase them; alert
// reads join them in. The alert's id is the key (no foreign key: an alert is never deleted once
// it fired, and acknowledging checks that it did).
inline constexpr const char* kAckSchema = R"sql(
CREATE TABLE alert_acks(
  alert_id INTEGER PRIMARY KEY,
  ack_at INTEGER NOT NULL,
  ack_by TEXT NOT NULL,
  ack_note TEXT NOT NULL);
PRAGMA user_version = 3;
)sql";

// ---- statements (static storage: the statement caches are keyed by address) ----------------

inline constexpr const char* kUserVersion = "PRAGMA user_version";

inline constexpr const char* kLoadCheckpoint =
    "SELECT next_offset FROM checkpoints WHERE consumer = ?1 AND partition_id = ?2";
inline constexpr const char* kStoreCheckpoint =
    "INSERT INTO checkpoints(consumer, partition_id, next_offset) VALUES(?1, ?2, ?3) "
    "ON CONFLICT(consumer, partition_id) DO UPDATE SET next_offset = excluded.next_offset";

inline constexpr const char* kFindDeviceState =
    "SELECT device_key, max_id, first_seen <= last_seen FROM devices WHERE device_id = ?1";
inline constexpr const char* kInsertDevice =
    "INSERT INTO devices(device_id, first_seen, last_seen, readings, latest_ts, latest, max_id, "
    "span_mask) VALUES(?1, ?2, ?3, 0, ?3, NULL, ?3, 0)";
inline constexpr const char* kFoldDevice =
    "UPDATE devices SET first_seen = min(first_seen, ?2), last_seen = max(last_seen, ?3), "
    "readings = readings + ?4, "
    "latest = CASE WHEN ?5 >= latest_ts THEN ?6 ELSE latest END, "
    "latest_ts = max(latest_ts, ?5), max_id = max(max_id, ?7), span_mask = span_mask | ?8 "
    "WHERE device_key = ?1";

inline constexpr const char* kInsertChunk =
    "INSERT INTO raw_chunks(device_key, span_class, min_ts, max_ts, min_id, max_id, n, data) "
    "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
inline constexpr const char* kIndexChunk =
    "INSERT INTO chunk_index_recent(device_key, span_class, max_ts, chunk_id, min_ts) "
    "VALUES(?1, ?2, ?3, ?4, ?5)";
inline constexpr const char* kCountRecentIndex = "SELECT count(*) FROM chunk_index_recent";
inline constexpr const char* kMergeRecentIndex =
    "INSERT INTO chunk_index SELECT * FROM chunk_index_recent";
inline constexpr const char* kClearRecentIndex = "DELETE FROM chunk_index_recent";
// Chunks of a device whose id range overlaps [?3, ?2] (the duplicate check's slow path).
inline constexpr const char* kChunksOverlappingIds =
    "SELECT data FROM raw_chunks WHERE chunk_id IN ("
    "SELECT chunk_id FROM chunk_index WHERE device_key = ?1 UNION ALL "
    "SELECT chunk_id FROM chunk_index_recent WHERE device_key = ?1) "
    "AND min_id <= ?2 AND max_id >= ?3";

inline constexpr const char* kFindSensor = "SELECT sensor_key FROM sensors WHERE name = ?1";
inline constexpr const char* kInsertSensor = "INSERT INTO sensors(name) VALUES(?1)";
inline constexpr const char* kSensorName = "SELECT name FROM sensors WHERE sensor_key = ?1";
inline constexpr const char* kFindWindow = "SELECT window_key FROM windows WHERE window_us = ?1";
inline constexpr const char* kInsertWindow = "INSERT INTO windows(window_us) VALUES(?1)";
inline constexpr const char* kWindowMicros = "SELECT window_us FROM windows WHERE window_key = ?1";

// Aggregates are merged with an UPDATE when the row is known to exist (the common case: the
// current windows), else created with an INSERT that does nothing on conflict (then UPDATE).
// This is about twice as fast as an upsert with RETURNING, which is needed to count new rows.
inline constexpr const char* kInsertAggregate =
    "INSERT INTO aggregated_data(window_key, window_start, device_key, sensor_key, count, sum, "
    "min, max) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING";
inline constexpr const char* kMergeAggregate =
    "UPDATE aggregated_data SET count = count + ?5, sum = sum + ?6, min = min(min, ?7), "
    "max = max(max, ?8) "
    "WHERE window_key = ?1 AND window_start = ?2 AND device_key = ?3 AND sensor_key = ?4";

inline constexpr const char* kAlertStatus = "SELECT status FROM alerts WHERE id = ?1";
inline constexpr const char* kUpsertAlert =
    "INSERT INTO alerts(id, device_id, sensor_type, value, alert_type, severity, message, ts, "
    "status, threshold, created_at, updated_at, resolved_at, count) "
    "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) "
    "ON CONFLICT(id) DO UPDATE SET device_id = excluded.device_id, "
    "sensor_type = excluded.sensor_type, value = excluded.value, "
    "alert_type = excluded.alert_type, severity = excluded.severity, "
    "message = excluded.message, ts = excluded.ts, status = excluded.status, "
    "threshold = excluded.threshold, created_at = excluded.created_at, "
    "updated_at = excluded.updated_at, resolved_at = excluded.resolved_at, "
    "count = excluded.count";
inline constexpr const char* kDeleteAlert = "DELETE FROM alerts WHERE id = ?1";

inline constexpr const char* kInsertDeadLetter =
    "INSERT INTO dead_letters(consumer, topic, partition_id, record_offset, key, payload, reason, "
    "attempts, failed_at) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT DO NOTHING";

inline constexpr const char* kAddIngest =
    "INSERT INTO ingest_minutes(minute, readings) VALUES(?1, ?2) "
    "ON CONFLICT(minute) DO UPDATE SET readings = readings + excluded.readings";
inline constexpr const char* kPruneIngest = "DELETE FROM ingest_minutes WHERE minute < ?1";

inline constexpr const char* kUpdateTotals =
    "UPDATE totals SET devices = devices + ?1, readings = readings + ?2, "
    "aggregates = aggregates + ?3, alerts = alerts + ?4, active_alerts = active_alerts + ?5, "
    "span_mask = span_mask | ?6, "
    "first_minute = min(coalesce(first_minute, ?7), coalesce(?7, first_minute)) WHERE id = 1";

// Retention (Expire). Chunks of span class ?1 wholly before the cutoff ?2 (max_ts < cutoff), at
// most ?3; and chunks of class ?1 that straddle it (min_ts < cutoff <= max_ts), which all have
// max_ts < cutoff + 2^class, so ?3 = cutoff + 2^class - 1 bounds the scan; at most ?4.
inline constexpr const char* kExpiredChunks =
    "SELECT chunk_id, device_key, max_ts, n FROM raw_chunks INDEXED BY raw_by_time "
    "WHERE span_class = ?1 AND max_ts < ?2 LIMIT ?3";
inline constexpr const char* kStraddlingChunks =
    "SELECT chunk_id, device_key, max_ts, data FROM raw_chunks INDEXED BY raw_by_time "
    "WHERE span_class = ?1 AND max_ts >= ?2 AND max_ts <= ?3 AND min_ts < ?2 LIMIT ?4";
inline constexpr const char* kDeleteChunk = "DELETE FROM raw_chunks WHERE chunk_id = ?1";
// Index entries of one chunk: ?1 device key, ?2 span class, ?3 max_ts, ?4 chunk id.
inline constexpr const char* kUnindexChunk =
    "DELETE FROM chunk_index "
    "WHERE device_key = ?1 AND span_class = ?2 AND max_ts = ?3 AND chunk_id = ?4";
inline constexpr const char* kUnindexRecentChunk =
    "DELETE FROM chunk_index_recent "
    "WHERE device_key = ?1 AND span_class = ?2 AND max_ts = ?3 AND chunk_id = ?4";
// A trimmed chunk keeps its max_ts and span class (it spans less than before, so still less
// than 2^class): only min_ts changes in its index entries (?5).
inline constexpr const char* kTrimChunk =
    "UPDATE raw_chunks SET min_ts = ?2, min_id = ?3, max_id = ?4, n = ?5, data = ?6 "
    "WHERE chunk_id = ?1";
inline constexpr const char* kReindexChunk =
    "UPDATE chunk_index SET min_ts = ?5 "
    "WHERE device_key = ?1 AND span_class = ?2 AND max_ts = ?3 AND chunk_id = ?4";
inline constexpr const char* kReindexRecentChunk =
    "UPDATE chunk_index_recent SET min_ts = ?5 "
    "WHERE device_key = ?1 AND span_class = ?2 AND max_ts = ?3 AND chunk_id = ?4";
// Aggregates of window key ?1 whose window starts before ?2, at most ?3 rows.
inline constexpr const char* kExpireAggregates =
    "DELETE FROM aggregated_data WHERE (window_key, window_start, device_key, sensor_key) IN ("
    "SELECT window_key, window_start, device_key, sensor_key FROM aggregated_data "
    "WHERE window_key = ?1 AND window_start < ?2 LIMIT ?3)";

// Reads.
inline constexpr const char* kDeviceForQuery =
    "SELECT device_key, span_mask FROM devices WHERE device_id = ?1";
inline constexpr const char* kDeviceId = "SELECT device_id FROM devices WHERE device_key = ?1";
inline constexpr const char* kGlobalSpanMask = "SELECT span_mask FROM totals WHERE id = 1";
// Chunk scans for one span class, newest max_ts first: ?2/?1 class (and device), [lo, hi].
inline constexpr const char* kChunksOfDevice =
    "SELECT chunk_id, max_ts, min_ts FROM chunk_index "
    "WHERE device_key = ?1 AND span_class = ?2 AND max_ts >= ?3 AND max_ts <= ?4 "
    "ORDER BY max_ts DESC";
inline constexpr const char* kRecentChunksOfDevice =
    "SELECT chunk_id, max_ts, min_ts FROM chunk_index_recent "
    "WHERE device_key = ?1 AND span_class = ?2 AND max_ts >= ?3 AND max_ts <= ?4 "
    "ORDER BY max_ts DESC";
inline constexpr const char* kChunksByTime =
    "SELECT chunk_id, max_ts, min_ts FROM raw_chunks INDEXED BY raw_by_time "
    "WHERE span_class = ?2 AND max_ts >= ?3 AND max_ts <= ?4 ORDER BY max_ts DESC";
inline constexpr const char* kChunkData =
    "SELECT device_key, data FROM raw_chunks WHERE chunk_id = ?1";

// Aggregates: ?1 device key, ?2 sensor key, ?3 window key (NULL: any), window_start in
// [?4, ?5], strictly after the cursor (?6 window_start, ?7 device, ?8 sensor, ?9 window) in
// descending order, ?10 rows.
#define IOT_AGG_COLUMNS \
  "SELECT window_start, device_key, sensor_key, window_key, count, sum, min, max "
#define IOT_AGG_AFTER                              \
  " AND window_start >= ?4 AND window_start <= ?5" \
  " AND (window_start, device_key, sensor_key, window_key) < (?6, ?7, ?8, ?9)"
inline constexpr const char* kAggregatesOfSeries = IOT_AGG_COLUMNS
    "FROM aggregated_data INDEXED BY agg_by_series "
    "WHERE device_key = ?1 AND sensor_key = ?2 AND window_key = ?3" IOT_AGG_AFTER
    " ORDER BY window_start DESC LIMIT ?10";
inline constexpr const char* kAggregatesOfDevice = IOT_AGG_COLUMNS
    "FROM aggregated_data INDEXED BY agg_by_device "
    "WHERE device_key = ?1" IOT_AGG_AFTER
    " AND (?2 IS NULL OR sensor_key = ?2) AND (?3 IS NULL OR window_key = ?3)"
    " ORDER BY window_start DESC, sensor_key DESC, window_key DESC LIMIT ?10";
inline constexpr const char* kAggregatesByTime = IOT_AGG_COLUMNS
    "FROM aggregated_data INDEXED BY agg_by_time WHERE 1" IOT_AGG_AFTER
    " AND (?2 IS NULL OR sensor_key = ?2) AND (?3 IS NULL OR window_key = ?3)"
    " ORDER BY window_start DESC, device_key DESC, sensor_key DESC, window_key DESC LIMIT ?10";
#undef IOT_AGG_COLUMNS
#undef IOT_AGG_AFTER

// Alerts: ?1 device id, ?2 status (NULL: active or resolved), created_at in [?3, ?4], strictly
// after the cursor (?5 created_at, ?6 id) in descending order, ?7 rows.
// Columns 14-16 are the acknowledgement (NULL when there is none).
#define IOT_ALERT_COLUMNS                                                                 \
  "SELECT id, device_id, sensor_type, value, alert_type, severity, message, ts, status, " \
  "threshold, created_at, updated_at, resolved_at, count, ack_at, ack_by, ack_note FROM alerts "
#define IOT_ALERT_ACKS " LEFT JOIN alert_acks ON alert_acks.alert_id = alerts.id "
#define IOT_ALERT_AFTER                                                        \
  " AND created_at >= ?3 AND created_at <= ?4 AND (created_at, id) < (?5, ?6)" \
  " ORDER BY created_at DESC, id DESC LIMIT ?7"
inline constexpr const char* kAlertsOfDevice = IOT_ALERT_COLUMNS
    "INDEXED BY alerts_by_device" IOT_ALERT_ACKS "WHERE device_id = ?1"
    " AND (CASE WHEN ?2 IS NULL THEN status <> 0 ELSE status = ?2 END)" IOT_ALERT_AFTER;
inline constexpr const char* kAlertsWithStatus = IOT_ALERT_COLUMNS
    "INDEXED BY alerts_by_status" IOT_ALERT_ACKS "WHERE status = ?2" IOT_ALERT_AFTER;
inline constexpr const char* kAlertsAll = IOT_ALERT_COLUMNS
    "INDEXED BY alerts_by_created" IOT_ALERT_ACKS "WHERE status <> 0" IOT_ALERT_AFTER;
inline constexpr const char* kOpenAlerts = IOT_ALERT_COLUMNS
    "INDEXED BY alerts_by_status" IOT_ALERT_ACKS "WHERE status IN (0, 1) ORDER BY id";
// A fired alert by id: ?1 id.
inline constexpr const char* kFindAlert =
    IOT_ALERT_COLUMNS IOT_ALERT_ACKS "WHERE id = ?1 AND status <> 0";
#undef IOT_ALERT_COLUMNS
#undef IOT_ALERT_ACKS
#undef IOT_ALERT_AFTER
// Acknowledges alert ?1 (at ?2, by ?3, note ?4) when it has fired; a second acknowledgement
// keeps the first.
inline constexpr const char* kAcknowledgeAlert =
    "INSERT INTO alert_acks(alert_id, ack_at, ack_by, ack_note) "
    "SELECT id, ?2, ?3, ?4 FROM alerts WHERE id = ?1 AND status <> 0 "
    "ON CONFLICT(alert_id) DO NOTHING";

// Dead letters: ?1 consumer, failed_at in [?2, ?3], strictly after the cursor (?4 failed_at,
// ?5 id) in descending order, ?6 rows.
#define IOT_DEAD_LETTER_COLUMNS                                                             \
  "SELECT id, consumer, topic, partition_id, record_offset, key, payload, reason, attempts, " \
  "failed_at FROM dead_letters "
#define IOT_DEAD_LETTER_AFTER                                                  \
  " failed_at >= ?2 AND failed_at <= ?3 AND (failed_at, id) < (?4, ?5)" \
  " ORDER BY failed_at DESC, id DESC LIMIT ?6"
inline constexpr const char* kDeadLetters =
    IOT_DEAD_LETTER_COLUMNS "INDEXED BY dead_letters_by_time WHERE" IOT_DEAD_LETTER_AFTER;
inline constexpr const char* kDeadLettersOfConsumer = IOT_DEAD_LETTER_COLUMNS
    "INDEXED BY dead_letters_by_consumer WHERE consumer = ?1 AND" IOT_DEAD_LETTER_AFTER;
#undef IOT_DEAD_LETTER_COLUMNS
#undef IOT_DEAD_LETTER_AFTER

#define IOT_DEVICE_COLUMNS \
  "SELECT device_id, first_seen, last_seen, readings, latest_ts, latest FROM devices "
inline constexpr const char* kFindDevice =
    IOT_DEVICE_COLUMNS "WHERE device_id = ?1 AND first_seen <= last_seen";
// Device listings: ?1 lower bound (inclusive or exclusive), ?2 exclusive upper bound, ?3 rows.
inline constexpr const char* kDevicesGe = IOT_DEVICE_COLUMNS
    "WHERE device_id >= ?1 AND first_seen <= last_seen "
    "ORDER BY device_id LIMIT ?3";
inline constexpr const char* kDevicesGt = IOT_DEVICE_COLUMNS
    "WHERE device_id > ?1 AND first_seen <= last_seen "
    "ORDER BY device_id LIMIT ?3";
inline constexpr const char* kDevicesGeLt = IOT_DEVICE_COLUMNS
    "WHERE device_id >= ?1 AND device_id < ?2 AND first_seen <= last_seen "
    "ORDER BY device_id LIMIT ?3";
inline constexpr const char* kDevicesGtLt = IOT_DEVICE_COLUMNS
    "WHERE device_id > ?1 AND device_id < ?2 AND first_seen <= last_seen "
    "ORDER BY device_id LIMIT ?3";
#undef IOT_DEVICE_COLUMNS

inline constexpr const char* kTotals =
    "SELECT devices, readings, aggregates, alerts, active_alerts, first_minute FROM totals "
    "WHERE id = 1";
inline constexpr const char* kIngestSum =
    "SELECT total(readings) FROM ingest_minutes WHERE minute >= ?1 AND minute < ?2";
inline constexpr const char* kPing = "SELECT id FROM totals WHERE id = 1";

}  // namespace iot::store::sql
