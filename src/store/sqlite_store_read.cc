// sqlite_store_read.cc: SqliteStore's queries (see sqlite_store_impl.h).
//
// Every query runs on a leased reader connection; queries made of several statements run in one
// read transaction so that they see one snapshot. Nothing here waits for the writer.
#include <algorithm>
#include <bit>
#include <string>
#include <vector>

#include "store/raw_chunk.h"
#include "store/sqlite_sql.h"
#include "store/sqlite_store_impl.h"

namespace iot::store {

using detail::AlertStatusCode;
using detail::FloorDiv;
using detail::kMaxCacheEntries;
using detail::kMaxI64;
using detail::kMaxSensorKey;
using detail::kMaxWindowKey;
using detail::kMicrosPerMinute;
using detail::kMinI64;
using detail::kSensorBits;
using detail::kWindowBits;
using detail::ReaderConnection;
using detail::ReadingKey;
using sqlite::Connection;
using sqlite::Query;
using sqlite::Transaction;

namespace {

std::int64_t PackAggregateId(std::int64_t device, std::int64_t sensor, std::int64_t window) {
  return (device << (kSensorBits + kWindowBits)) | (sensor << kWindowBits) | window;
}

Result<core::AlertStatus> StatusFromCode(std::int64_t code) {
  switch (code) {
    case 0:
      return core::AlertStatus::kPending;
    case 1:
      return core::AlertStatus::kActive;
    case 2:
      return core::AlertStatus::kResolved;
    default:
      return MakeError(Errc::kCorruption, "alerts: unknown status code");
  }
}

// SaturatingAdd returns a + b (b >= 0) clamped to kMaxI64.
std::int64_t SaturatingAdd(std::int64_t a, std::int64_t b) {
  return a > kMaxI64 - b ? kMaxI64 : a + b;
}

std::int64_t ToInt64(std::size_t n) {
  return n > static_cast<std::size_t>(kMaxI64) ? kMaxI64 : static_cast<std::int64_t>(n);
}

// Bounds turns a TimeRange and a cursor's time into an inclusive [lo, hi] range of micros;
// lo > hi means empty.
struct Bounds {
  std::int64_t lo = kMinI64;
  std::int64_t hi = kMaxI64;
};
Bounds BoundsOf(const TimeRange& range, const std::optional<Cursor>& after) {
  Bounds b;
  if (range.from) b.lo = core::ToUnixMicros(*range.from);
  if (range.to) {
    std::int64_t to = core::ToUnixMicros(*range.to);
    if (to == kMinI64) {
      b.lo = 1;
      b.hi = 0;
      return b;
    }
    b.hi = to - 1;
  }
  if (after) b.hi = std::min(b.hi, after->ts_us);
  return b;
}

// OutsidePrefix reports whether a query's device_id contradicts its device_prefix (an empty
// answer), and Scoped whether the prefix must be checked item by item (no device_id given).
template <typename Q>
bool OutsidePrefix(const Q& q) {
  return q.device_id && q.device_prefix && !q.device_id->starts_with(*q.device_prefix);
}
template <typename Q>
bool Scoped(const Q& q) {
  return !q.device_id && q.device_prefix && !q.device_prefix->empty();
}

// PrefixEnd returns the smallest string greater than every string starting with `prefix`, or
// nullopt when there is none (the prefix is all 0xff bytes).
std::optional<std::string> PrefixEnd(std::string prefix) {
  while (!prefix.empty()) {
    auto& last = reinterpret_cast<unsigned char&>(prefix.back());
    if (last != 0xff) {
      ++last;
      return prefix;
    }
    prefix.pop_back();
  }
  return std::nullopt;
}

// DeviceIdOf, SensorNameOf and WindowMicrosOf map keys back to what they stand for, through the
// reader's caches.
// CachedName looks `key` up in `cache`, else runs `query` (one text column) and caches it.
Result<std::string> CachedName(ReaderConnection& r,
                               std::unordered_map<std::int64_t, std::string>& cache,
                               const char* query, std::int64_t key, const char* missing) {
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  if (cache.size() >= kMaxCacheEntries) cache.clear();
  auto q = r.conn->Prepare(query);
  if (!q) return q.error();
  q->Bind(1, key);
  auto row = q->Step();
  if (!row) return row.error();
  if (!*row) return MakeError(Errc::kCorruption, missing);
  return cache.emplace(key, std::string(q->Text(0))).first->second;
}

Result<std::string> DeviceIdOf(ReaderConnection& r, std::int64_t key) {
  return CachedName(r, r.device_ids, sql::kDeviceId, key, "raw chunk of an unknown device");
}

Result<std::string> SensorNameOf(ReaderConnection& r, std::int64_t key) {
  return CachedName(r, r.sensor_names, sql::kSensorName, key, "aggregate of an unknown sensor");
}

Result<std::int64_t> WindowMicrosOf(ReaderConnection& r, std::int64_t key) {
  if (auto it = r.window_us.find(key); it != r.window_us.end()) return it->second;
  auto q = r.conn->Prepare(sql::kWindowMicros);
  if (!q) return q.error();
  q->Bind(1, key);
  auto row = q->Step();
  if (!row) return row.error();
  if (!*row) return MakeError(Errc::kCorruption, "aggregate of an unknown window");
  return r.window_us.emplace(key, q->Int(0)).first->second;
}

// LookupKey runs a "SELECT key FROM dict WHERE value = ?1" statement; 0 when absent.
template <typename T>
Result<std::int64_t> LookupKey(Connection& conn, const char* sql_text, const T& value) {
  auto q = conn.Prepare(sql_text);
  if (!q) return q.error();
  q->Bind(1, value);
  auto row = q->Step();
  if (!row) return row.error();
  return *row ? q->Int(0) : std::int64_t{0};
}

// AlertFromRow and DeviceFromRow convert the rows of the alert and device queries.
Result<core::Alert> AlertFromRow(const Query& q) {
  core::Alert a;
  a.id = q.Int(0);
  a.device_id = std::string(q.Text(1));
  a.sensor_type = std::string(q.Text(2));
  a.value = q.Real(3);
  a.alert_type = std::string(q.Text(4));
  a.severity = std::string(q.Text(5));
  a.message = std::string(q.Text(6));
  a.timestamp = core::FromUnixMicros(q.Int(7));
  auto status = StatusFromCode(q.Int(8));
  if (!status) return status.error();
  a.status = *status;
  a.threshold = q.Real(9);
  a.created_at = core::FromUnixMicros(q.Int(10));
  a.updated_at = core::FromUnixMicros(q.Int(11));
  if (!q.IsNull(12)) a.resolved_at = core::FromUnixMicros(q.Int(12));
  a.count = q.Int(13);
  if (!q.IsNull(14)) {
    a.ack = core::AlertAck{core::FromUnixMicros(q.Int(14)), std::string(q.Text(15)),
                           std::string(q.Text(16))};
  }
  return a;
}

Result<Device> DeviceFromRow(const Query& q) {
  Device d;
  d.device_id = std::string(q.Text(0));
  d.first_seen = core::FromUnixMicros(q.Int(1));
  d.last_seen = core::FromUnixMicros(q.Int(2));
  d.readings = q.Int(3);
  if (q.IsNull(5)) {
    d.latest.device_id = d.device_id;
    d.latest.ts = core::FromUnixMicros(q.Int(4));
  } else {
    auto latest = raw::DecodeReading(q.Blob(5), d.device_id);
    if (!latest) return latest.error();
    d.latest = std::move(*latest);
  }
  return d;
}

}  // namespace

Result<Page<StoredReading>> SqliteStore::Impl::Telemetry(const TelemetryQuery& query) {
  Page<StoredReading> page;
  Bounds b = BoundsOf(query.range, query.after);
  if (query.limit == 0 || b.lo > b.hi || OutsidePrefix(query)) return page;
  auto lease = Acquire();
  ReaderConnection& reader = **lease;
  Connection& conn = *reader.conn;
  Transaction txn(conn);
  if (Status s = txn.Begin(false); !s) return s.error();

  std::int64_t device_key = 0;
  std::uint64_t mask = 0;
  std::string device_id;
  {
    auto q = conn.Prepare(query.device_id ? sql::kDeviceForQuery : sql::kGlobalSpanMask);
    if (!q) return q.error();
    if (query.device_id) q->Bind(1, *query.device_id);
    auto row = q->Step();
    if (!row) return row.error();
    if (!*row) return page;  // unknown device
    if (query.device_id) {
      device_key = q->Int(0);
      mask = static_cast<std::uint64_t>(q->Int(1));
      device_id = *query.device_id;
    } else {
      mask = static_cast<std::uint64_t>(q->Int(0));
    }
  }

  // One index scan per span class present, merged by max_ts descending. A chunk of class c
  // spans less than 2^c us, so a chunk holding a reading at or before hi has
  // max_ts < hi + 2^c: each scan starts there and reads few chunks beyond hi.
  struct Stream {
    Query q;
    std::int64_t chunk_id = 0;
    std::int64_t max_ts = 0;
    std::int64_t min_ts = 0;
    bool live = false;
  };
  auto advance = [](Stream& s) -> Status {
    auto row = s.q.Step();
    if (!row) return row.error();
    s.live = *row;
    if (s.live) {
      s.chunk_id = s.q.Int(0);
      s.max_ts = s.q.Int(1);
      s.min_ts = s.q.Int(2);
    }
    return Status::Ok();
  };
  // One device's chunks are in two index tiers: scan both.
  std::vector<const char*> scans;
  if (query.device_id) {
    scans = {sql::kChunksOfDevice, sql::kRecentChunksOfDevice};
  } else {
    scans = {sql::kChunksByTime};
  }
  std::vector<Stream> streams;
  streams.reserve(static_cast<std::size_t>(std::popcount(mask)) * scans.size());
  for (int c = 0; c < 64; ++c) {
    if (((mask >> c) & 1) == 0) continue;
    std::int64_t reach =
        b.hi == kMaxI64 ? kMaxI64 : SaturatingAdd(b.hi, (std::int64_t{1} << c) - 1);
    for (const char* scan : scans) {
      auto q = conn.Prepare(scan, static_cast<std::size_t>(c));
      if (!q) return q.error();
      q->Bind(1, device_key).Bind(2, std::int64_t{c}).Bind(3, b.lo).Bind(4, reach);
      streams.push_back(Stream{std::move(*q)});
      if (Status s = advance(streams.back()); !s) return s.error();
    }
  }

  // Keep the best limit + 1 readings in a min-heap (front: the oldest kept); the extra one
  // tells whether a next page exists.
  const std::size_t keep = std::min(query.limit, std::numeric_limits<std::size_t>::max() - 1) + 1;
  auto newer = [](const StoredReading& a, const StoredReading& b2) {
    return ReadingKey(a) > ReadingKey(b2);
  };
  std::vector<StoredReading>& heap = page.items;
  while (true) {
    Stream* next = nullptr;
    for (auto& s : streams) {
      if (s.live && (next == nullptr || s.max_ts > next->max_ts)) next = &s;
    }
    if (next == nullptr) break;
    // Every reading not yet seen has ts <= next->max_ts.
    if (heap.size() == keep && core::ToUnixMicros(heap.front().reading.ts) > next->max_ts) break;
    if (next->min_ts <= b.hi) {
      auto q = conn.Prepare(sql::kChunkData);
      if (!q) return q.error();
      q->Bind(1, next->chunk_id);
      auto row = q->Step();
      if (!row) return row.error();
      if (!*row) return MakeError(Errc::kInternal, "raw chunk vanished during a read");
      std::string_view chunk_device = device_id;
      std::string name;
      if (!query.device_id) {
        auto id = DeviceIdOf(reader, q->Int(0));
        if (!id) return id.error();
        name = std::move(*id);
        chunk_device = name;
        // A read token's scope: other devices' chunks are skipped whole.
        if (Scoped(query) && !name.starts_with(*query.device_prefix)) {
          if (Status s = advance(*next); !s) return s.error();
          continue;
        }
      }
      auto dec = raw::ChunkDecoder::Open(q->Blob(1));
      if (!dec) return dec.error();
      while (true) {
        auto more = dec->Next();
        if (!more) return more.error();
        if (!*more) break;
        std::int64_t ts = dec->ts();
        if (ts < b.lo || ts > b.hi) continue;
        if (query.after && ts == query.after->ts_us && dec->id() >= query.after->id) continue;
        std::pair<std::int64_t, std::int64_t> key{ts, dec->id()};
        if (heap.size() == keep && key <= ReadingKey(heap.front())) continue;
        heap.push_back(dec->Materialize(chunk_device));
        std::push_heap(heap.begin(), heap.end(), newer);
        if (heap.size() > keep) {
          std::pop_heap(heap.begin(), heap.end(), newer);
          heap.pop_back();
        }
      }
    }
    if (Status s = advance(*next); !s) return s.error();
  }
  std::sort(heap.begin(), heap.end(), newer);
  if (heap.size() > query.limit) {
    heap.resize(query.limit);
    auto [ts, id] = ReadingKey(heap.back());
    page.next = Cursor{ts, id, {}};
  }
  return page;
}

Result<Page<Aggregate>> SqliteStore::Impl::Aggregates(const AggregateQuery& query) {
  Page<Aggregate> page;
  Bounds b = BoundsOf(query.range, query.after);
  if (query.limit == 0 || b.lo > b.hi) return page;
  if (OutsidePrefix(query)) return page;
  auto lease = Acquire();
  ReaderConnection& reader = **lease;
  Connection& conn = *reader.conn;
  Transaction txn(conn);
  if (Status s = txn.Begin(false); !s) return s.error();

  std::int64_t device = 0, sensor = 0, window = 0;
  if (query.device_id) {
    auto key = LookupKey(conn, sql::kDeviceForQuery, *query.device_id);
    if (!key) return key.error();
    if (*key == 0) return page;
    device = *key;
  }
  if (query.sensor_type) {
    auto key = LookupKey(conn, sql::kFindSensor, *query.sensor_type);
    if (!key) return key.error();
    if (*key == 0) return page;
    sensor = *key;
  }
  if (query.window) {
    auto key = LookupKey(conn, sql::kFindWindow, std::int64_t{query.window->count()});
    if (!key) return key.error();
    if (*key == 0) return page;
    window = *key;
  }
  const char* statement = !query.device_id                    ? sql::kAggregatesByTime
                          : query.sensor_type && query.window ? sql::kAggregatesOfSeries
                                                              : sql::kAggregatesOfDevice;
  auto q = conn.Prepare(statement);
  if (!q) return q.error();
  if (query.device_id) q->Bind(1, device);
  if (query.sensor_type) q->Bind(2, sensor);
  if (query.window) q->Bind(3, window);
  q->Bind(4, b.lo).Bind(5, b.hi);
  if (query.after) {
    std::int64_t packed = query.after->id;
    q->Bind(6, query.after->ts_us)
        .Bind(7, packed >> (kSensorBits + kWindowBits))
        .Bind(8, (packed >> kWindowBits) & kMaxSensorKey)
        .Bind(9, packed & kMaxWindowKey);
  } else {
    q->Bind(6, kMaxI64).Bind(7, kMaxI64).Bind(8, kMaxI64).Bind(9, kMaxI64);
  }
  // With a scope, rows of other devices are skipped while stepping, so no LIMIT in SQL.
  q->Bind(10, Scoped(query) ? kMaxI64 : SaturatingAdd(ToInt64(query.limit), 1));
  std::int64_t last_packed = 0;
  while (true) {
    auto row = q->Step();
    if (!row) return row.error();
    if (!*row) break;
    if (Scoped(query)) {
      auto scoped_id = DeviceIdOf(reader, q->Int(1));
      if (!scoped_id) return scoped_id.error();
      if (!scoped_id->starts_with(*query.device_prefix)) continue;
    }
    if (page.items.size() == query.limit) {
      page.next = Cursor{core::ToUnixMicros(page.items.back().key.window_start), last_packed, {}};
      break;
    }
    Aggregate a;
    a.key.window_start = core::FromUnixMicros(q->Int(0));
    auto device_id = DeviceIdOf(reader, q->Int(1));
    if (!device_id) return device_id.error();
    auto sensor_name = SensorNameOf(reader, q->Int(2));
    if (!sensor_name) return sensor_name.error();
    auto window_us = WindowMicrosOf(reader, q->Int(3));
    if (!window_us) return window_us.error();
    a.key.device_id = std::move(*device_id);
    a.key.sensor_type = std::move(*sensor_name);
    a.key.window = core::Micros(*window_us);
    a.acc.count = q->Int(4);
    a.acc.sum = q->Real(5);
    a.acc.min = q->Real(6);
    a.acc.max = q->Real(7);
    last_packed = PackAggregateId(q->Int(1), q->Int(2), q->Int(3));
    page.items.push_back(std::move(a));
  }
  return page;
}

Result<Page<core::Alert>> SqliteStore::Impl::Alerts(const AlertQuery& query) {
  Page<core::Alert> page;
  Bounds b = BoundsOf(query.range, query.after);
  if (query.limit == 0 || b.lo > b.hi) return page;
  if (OutsidePrefix(query)) return page;
  auto lease = Acquire();
  Connection& conn = *(*lease)->conn;
  const char* statement = query.device_id ? sql::kAlertsOfDevice
                          : query.status  ? sql::kAlertsWithStatus
                                          : sql::kAlertsAll;
  auto q = conn.Prepare(statement);
  if (!q) return q.error();
  if (query.device_id) q->Bind(1, *query.device_id);
  if (query.status) q->Bind(2, AlertStatusCode(*query.status));
  q->Bind(3, b.lo).Bind(4, b.hi);
  if (query.after) {
    q->Bind(5, query.after->ts_us).Bind(6, query.after->id);
  } else {
    q->Bind(5, kMaxI64).Bind(6, kMaxI64);
  }
  q->Bind(7, Scoped(query) ? kMaxI64 : SaturatingAdd(ToInt64(query.limit), 1));
  while (true) {
    auto row = q->Step();
    if (!row) return row.error();
    if (!*row) break;
    auto alert = AlertFromRow(*q);
    if (!alert) return alert.error();
    if (Scoped(query) && !alert->device_id.starts_with(*query.device_prefix)) continue;
    if (page.items.size() == query.limit) {
      const auto& last = page.items.back();
      page.next = Cursor{core::ToUnixMicros(last.created_at), last.id, {}};
      break;
    }
    page.items.push_back(std::move(*alert));
  }
  return page;
}

Result<std::optional<core::Alert>> SqliteStore::Impl::FindAlert(std::int64_t id) {
  auto lease = Acquire();
  auto q = (*lease)->conn->Prepare(sql::kFindAlert);
  if (!q) return q.error();
  q->Bind(1, id);
  auto row = q->Step();
  if (!row) return row.error();
  if (!*row) return std::optional<core::Alert>();
  auto alert = AlertFromRow(*q);
  if (!alert) return alert.error();
  return std::optional<core::Alert>(std::move(*alert));
}

Result<Page<DeadLetter>> SqliteStore::Impl::DeadLetters(const DeadLetterQuery& query) {
  Page<DeadLetter> page;
  Bounds b = BoundsOf(query.range, query.after);
  if (query.limit == 0 || b.lo > b.hi) return page;
  auto lease = Acquire();
  auto q = (*lease)->conn->Prepare(query.consumer ? sql::kDeadLettersOfConsumer
                                                  : sql::kDeadLetters);
  if (!q) return q.error();
  if (query.consumer) q->Bind(1, *query.consumer);
  q->Bind(2, b.lo).Bind(3, b.hi);
  if (query.after) {
    q->Bind(4, query.after->ts_us).Bind(5, query.after->id);
  } else {
    q->Bind(4, kMaxI64).Bind(5, kMaxI64);
  }
  q->Bind(6, SaturatingAdd(ToInt64(query.limit), 1));
  std::int64_t last_id = 0;
  while (true) {
    auto row = q->Step();
    if (!row) return row.error();
    if (!*row) break;
    if (page.items.size() == query.limit) {
      page.next = Cursor{core::ToUnixMicros(page.items.back().failed_at), last_id, {}};
      break;
    }
    DeadLetter dl;
    last_id = q->Int(0);
    dl.consumer = std::string(q->Text(1));
    dl.topic = std::string(q->Text(2));
    dl.partition = static_cast<std::int32_t>(q->Int(3));
    dl.offset = q->Int(4);
    dl.key = std::string(q->Blob(5));
    dl.payload = std::string(q->Blob(6));
    dl.reason = std::string(q->Text(7));
    dl.attempts = static_cast<std::int32_t>(q->Int(8));
    dl.failed_at = core::FromUnixMicros(q->Int(9));
    page.items.push_back(std::move(dl));
  }
  return page;
}

Result<std::vector<core::Alert>> SqliteStore::Impl::OpenAlerts() {
  auto lease = Acquire();
  auto q = (*lease)->conn->Prepare(sql::kOpenAlerts);
  if (!q) return q.error();
  std::vector<core::Alert> out;
  while (true) {
    auto row = q->Step();
    if (!row) return row.error();
    if (!*row) break;
    auto alert = AlertFromRow(*q);
    if (!alert) return alert.error();
    out.push_back(std::move(*alert));
  }
  return out;
}

Result<std::optional<Device>> SqliteStore::Impl::FindDevice(const std::string& device_id) {
  auto lease = Acquire();
  auto q = (*lease)->conn->Prepare(sql::kFindDevice);
  if (!q) return q.error();
  q->Bind(1, device_id);
  auto row = q->Step();
  if (!row) return row.error();
  if (!*row) return std::optional<Device>();
  auto d = DeviceFromRow(*q);
  if (!d) return d.error();
  return std::optional<Device>(std::move(*d));
}

Result<std::vector<Device>> SqliteStore::Impl::Devices(const DeviceQuery& query) {
  std::vector<Device> out;
  if (query.limit == 0) return out;
  // The listing starts after `after` or at `prefix`, whichever is later, and ends before the
  // first id that no longer starts with `prefix`. Comparisons are byte-wise (BINARY).
  std::string lower = query.prefix.value_or("");
  bool strict = false;
  if (query.after && *query.after >= lower) {
    lower = *query.after;
    strict = true;
  }
  std::optional<std::string> upper;
  if (query.prefix && !query.prefix->empty()) upper = PrefixEnd(*query.prefix);
  const char* statement = strict ? (upper ? sql::kDevicesGtLt : sql::kDevicesGt)
                                 : (upper ? sql::kDevicesGeLt : sql::kDevicesGe);
  auto lease = Acquire();
  auto q = (*lease)->conn->Prepare(statement);
  if (!q) return q.error();
  q->Bind(1, lower);
  if (upper) q->Bind(2, *upper);
  q->Bind(3, ToInt64(query.limit));
  while (true) {
    auto row = q->Step();
    if (!row) return row.error();
    if (!*row) break;
    auto d = DeviceFromRow(*q);
    if (!d) return d.error();
    out.push_back(std::move(*d));
  }
  return out;
}

Result<Stats> SqliteStore::Impl::GetStats(core::Timestamp now) {
  auto lease = Acquire();
  Connection& conn = *(*lease)->conn;
  Transaction txn(conn);
  if (Status s = txn.Begin(false); !s) return s.error();
  Stats stats;
  std::optional<std::int64_t> first_minute;
  {
    auto q = conn.Prepare(sql::kTotals);
    if (!q) return q.error();
    auto row = q->Step();
    if (!row) return row.error();
    if (!*row) return MakeError(Errc::kCorruption, "totals row missing");
    stats.devices = q->Int(0);
    stats.readings = q->Int(1);
    stats.aggregates = q->Int(2);
    stats.alerts = q->Int(3);
    stats.active_alerts = q->Int(4);
    if (!q->IsNull(5)) first_minute = q->Int(5);
  }
  // The rate covers the last complete minutes, at most 5, and none before the first minute
  // in which anything was ingested (so a fresh store is not averaged over idle minutes).
  std::int64_t current = FloorDiv(core::ToUnixMicros(now), kMicrosPerMinute);
  if (first_minute) {
    std::int64_t start = std::max(current - 5, *first_minute);
    if (start < current) {
      auto q = conn.Prepare(sql::kIngestSum);
      if (!q) return q.error();
      q->Bind(1, start).Bind(2, current);
      auto row = q->Step();
      if (!row) return row.error();
      double total = *row ? q->Real(0) : 0;
      stats.ingest_rate_per_s = total / static_cast<double>((current - start) * 60);
    }
  }
  return stats;
}

}  // namespace iot::store
