// sqlite_store_write.cc: SqliteStore::Apply and Expire, the writer (see sqlite_store_impl.h).
//
// One Apply is one IMMEDIATE transaction on the writer connection: check the checkpoint (skip
// or abort the batch, see checkpoint_fence.h), write the raw chunks (after dropping duplicate
// ids), the dead letters, fold the devices, merge the aggregates, write the alerts, the ingest
// count, the totals and the checkpoint, commit. Any failure rolls it all back and resets the
// writer's caches to what the database holds.
//
// Expire (retention) also writes on the writer connection, in short transactions of its own:
// it deletes the raw chunks wholly older than the cutoff, re-encodes those that straddle it,
// deletes old aggregate rows of the windows listed, and lowers the totals accordingly.
#include <algorithm>
#include <string>
#include <string_view>
#include <vector>

#include "store/checkpoint_fence.h"
#include "store/raw_chunk.h"
#include "store/sqlite_sql.h"
#include "store/sqlite_store_impl.h"

namespace iot::store {

using detail::AggregateRowKey;
using detail::AlertStatusCode;
using detail::FloorDiv;
using detail::kIngestMinutesKept;
using detail::kMaxCacheEntries;
using detail::kMaxDeviceKey;
using detail::kMaxI64;
using detail::kMaxKnownAggregates;
using detail::kMaxSensorKey;
using detail::kMaxWindowKey;
using detail::kMicrosPerMinute;
using detail::kMinI64;
using detail::kRecentIndexRows;
using detail::ReadingKey;
using detail::StringViewMap;
using sqlite::Transaction;

Status SqliteStore::Impl::Apply(const WriteBatch& batch) {
  std::lock_guard lock(write_mu);
  Status s = ApplyLocked(batch);
  if (s.ok()) {
    write_failing.store(false);
    return s;
  }
  // A fenced batch is refused before anything is written: the caches are still right.
  if (s.error().code == Errc::kAborted) return s;
  // The transaction was rolled back: keys created in it no longer exist.
  ClearWriterCaches();
  if (!LoadRecentIndexRows().ok()) recent_index_rows = kRecentIndexRows;  // merge soon: harmless
  if (s.error().code == Errc::kUnavailable || s.error().code == Errc::kCorruption) {
    std::lock_guard failure_lock(failure_mu);
    last_failure = s.error().message;
    write_failing.store(true);
  }
  return s;
}

Result<std::optional<core::Alert>> SqliteStore::Impl::Acknowledge(std::int64_t id,
                                                                  const core::AlertAck& ack) {
  {
    std::lock_guard lock(write_mu);
    auto q = writer->Prepare(sql::kAcknowledgeAlert);
    if (!q) return q.error();
    q->Bind(1, id).Bind(2, core::ToUnixMicros(ack.at)).Bind(3, ack.by).Bind(4, ack.note);
    if (auto row = q->Step(); !row) return row.error();
  }
  return FindAlert(id);
}

void SqliteStore::Impl::ClearWriterCaches() {
  device_cache.clear();
  sensor_cache.clear();
  window_cache.clear();
  known_aggregates.clear();
}

Status SqliteStore::Impl::LoadRecentIndexRows() {
  auto q = writer->Prepare(sql::kCountRecentIndex);
  if (!q) return q.error();
  auto row = q->Step();
  if (!row) return row.error();
  recent_index_rows = *row ? q->Int(0) : 0;
  return Status::Ok();
}

Status SqliteStore::Impl::MergeRecentIndexIfFull() {
  if (recent_index_rows < kRecentIndexRows) return Status::Ok();
  {
    auto q = writer->Prepare(sql::kMergeRecentIndex);
    if (!q) return q.error();
    if (Status s = q->Run(); !s) return s;
  }
  auto q = writer->Prepare(sql::kClearRecentIndex);
  if (!q) return q.error();
  if (Status s = q->Run(); !s) return s;
  recent_index_rows = 0;
  return Status::Ok();
}

auto SqliteStore::Impl::DeviceKey(std::string_view device_id) -> Result<DeviceState*> {
  if (auto it = device_cache.find(device_id); it != device_cache.end()) return &it->second;
  DeviceState state;
  {
    auto q = writer->Prepare(sql::kFindDeviceState);
    if (!q) return q.error();
    q->Bind(1, device_id);
    auto row = q->Step();
    if (!row) return row.error();
    if (*row) {
      state.key = q->Int(0);
      state.max_id = q->Int(1);
      state.seen = q->Int(2) != 0;
    }
  }
  if (state.key == 0) {
    auto q = writer->Prepare(sql::kInsertDevice);
    if (!q) return q.error();
    q->Bind(1, device_id).Bind(2, kMaxI64).Bind(3, kMinI64);
    if (Status s = q->Run(); !s) return s.error();
    state.key = sqlite3_last_insert_rowid(writer->db());
  }
  if (state.key > kMaxDeviceKey) {
    return MakeError(Errc::kResourceExhausted, "store: too many devices");
  }
  return &device_cache.emplace(std::string(device_id), state).first->second;
}

Result<std::int64_t> SqliteStore::Impl::SensorKey(std::string_view name) {
  if (auto it = sensor_cache.find(name); it != sensor_cache.end()) return it->second;
  std::int64_t key = 0;
  {
    auto q = writer->Prepare(sql::kFindSensor);
    if (!q) return q.error();
    q->Bind(1, name);
    auto row = q->Step();
    if (!row) return row.error();
    if (*row) key = q->Int(0);
  }
  if (key == 0) {
    auto q = writer->Prepare(sql::kInsertSensor);
    if (!q) return q.error();
    q->Bind(1, name);
    if (Status s = q->Run(); !s) return s.error();
    key = sqlite3_last_insert_rowid(writer->db());
  }
  if (key > kMaxSensorKey) return MakeError(Errc::kResourceExhausted, "store: too many sensors");
  sensor_cache.emplace(std::string(name), key);
  return key;
}

Result<std::int64_t> SqliteStore::Impl::WindowKey(std::int64_t window_us) {
  if (auto it = window_cache.find(window_us); it != window_cache.end()) return it->second;
  std::int64_t key = 0;
  {
    auto q = writer->Prepare(sql::kFindWindow);
    if (!q) return q.error();
    q->Bind(1, window_us);
    auto row = q->Step();
    if (!row) return row.error();
    if (*row) key = q->Int(0);
  }
  if (key == 0) {
    auto q = writer->Prepare(sql::kInsertWindow);
    if (!q) return q.error();
    q->Bind(1, window_us);
    if (Status s = q->Run(); !s) return s.error();
    key = sqlite3_last_insert_rowid(writer->db());
  }
  if (key > kMaxWindowKey) {
    return MakeError(Errc::kResourceExhausted, "store: too many window sizes");
  }
  window_cache.emplace(window_us, key);
  return key;
}

Result<std::int64_t> SqliteStore::Impl::DropStored(std::int64_t device_key,
                                                   std::vector<const StoredReading*>& group) {
  std::vector<std::int64_t> ids;
  ids.reserve(group.size());
  for (const auto* r : group) ids.push_back(r->id.value);
  std::vector<bool> stored(group.size(), false);
  auto q = writer->Prepare(sql::kChunksOverlappingIds);
  if (!q) return q.error();
  q->Bind(1, device_key).Bind(2, ids.back()).Bind(3, ids.front());
  while (true) {
    auto row = q->Step();
    if (!row) return row.error();
    if (!*row) break;
    auto dec = raw::ChunkDecoder::Open(q->Blob(0));
    if (!dec) return dec.error();
    while (true) {
      auto more = dec->Next();
      if (!more) return more.error();
      if (!*more) break;
      auto it = std::lower_bound(ids.begin(), ids.end(), dec->id());
      if (it != ids.end() && *it == dec->id())
        stored[static_cast<std::size_t>(it - ids.begin())] = true;
    }
  }
  std::int64_t dropped = 0;
  std::size_t out = 0;
  for (std::size_t i = 0; i < group.size(); ++i) {
    if (stored[i]) {
      ++dropped;
    } else {
      group[out++] = group[i];
    }
  }
  group.resize(out);
  return dropped;
}

Status SqliteStore::Impl::WriteReadings(const WriteBatch& batch, StringViewMap<DeviceFold>& folds,
                                        TotalsDelta& totals) {
  if (batch.readings.empty()) return Status::Ok();
  StringViewMap<std::vector<const StoredReading*>> groups;
  for (const auto& r : batch.readings) groups[r.reading.device_id].push_back(&r);

  std::string blob;
  for (auto& [device_id, group] : groups) {
    auto state = DeviceKey(device_id);
    if (!state) return state.error();
    DeviceFold& fold = folds[device_id];
    fold.state = *state;

    // Duplicate ids within the batch: keep the first occurrence.
    std::stable_sort(group.begin(), group.end(),
                     [](const auto* a, const auto* b) { return a->id < b->id; });
    auto last = std::unique(group.begin(), group.end(),
                            [](const auto* a, const auto* b) { return a->id == b->id; });
    fold.dropped += static_cast<std::int64_t>(group.end() - last);
    group.erase(last, group.end());
    // Ids already stored: all new ids above the device's highest id is the common case.
    if (group.front()->id.value <= (*state)->max_id) {
      auto dropped = DropStored((*state)->key, group);
      if (!dropped) return dropped.error();
      fold.dropped += *dropped;
      if (group.empty()) continue;
    }
    fold.max_id = std::max(fold.max_id, group.back()->id.value);

    if (!fold.has_data) {
      // No DeviceUpdate for this device: fold its readings.
      fold.has_data = true;
      fold.readings = static_cast<std::int64_t>(group.size());
      for (const auto* r : group) {
        std::int64_t ts = core::ToUnixMicros(r->reading.ts);
        fold.first = std::min(fold.first, ts);
        fold.last = std::max(fold.last, ts);
        if (ts >= fold.latest_ts) {
          fold.latest_ts = ts;
          fold.latest = &r->reading;
        }
      }
      fold.dropped = 0;
    }

    std::sort(group.begin(), group.end(),
              [](const auto* a, const auto* b) { return ReadingKey(*a) < ReadingKey(*b); });
    for (auto run : raw::SplitIntoChunks(group)) {
      std::int64_t min_ts = core::ToUnixMicros(run.front()->reading.ts);
      std::int64_t max_ts = core::ToUnixMicros(run.back()->reading.ts);
      std::int64_t min_id = kMaxI64;
      std::int64_t max_id = kMinI64;
      for (const auto* r : run) {
        min_id = std::min(min_id, r->id.value);
        max_id = std::max(max_id, r->id.value);
      }
      int span_class = raw::SpanClass(min_ts, max_ts);
      fold.span_mask |= std::int64_t{1} << span_class;
      blob.clear();
      raw::EncodeChunk(run, blob);
      auto q = writer->Prepare(sql::kInsertChunk);
      if (!q) return q.error();
      q->Bind(1, (*state)->key)
          .Bind(2, std::int64_t{span_class})
          .Bind(3, min_ts)
          .Bind(4, max_ts)
          .Bind(5, min_id)
          .Bind(6, max_id)
          .Bind(7, static_cast<std::int64_t>(run.size()))
          .BindBlob(8, blob);
      if (Status s = q->Run(); !s) return s;
      auto index = writer->Prepare(sql::kIndexChunk);
      if (!index) return index.error();
      index->Bind(1, (*state)->key)
          .Bind(2, std::int64_t{span_class})
          .Bind(3, max_ts)
          .Bind(4, static_cast<std::int64_t>(sqlite3_last_insert_rowid(writer->db())))
          .Bind(5, min_ts);
      if (Status s = index->Run(); !s) return s;
      ++recent_index_rows;
    }
    totals.readings += static_cast<std::int64_t>(group.size());
    totals.span_mask |= fold.span_mask;
  }
  return Status::Ok();
}

Status SqliteStore::Impl::FoldDevices(StringViewMap<DeviceFold>& folds, TotalsDelta& totals) {
  std::string latest_blob;
  for (auto& [device_id, fold] : folds) {
    if (fold.state == nullptr) {
      auto state = DeviceKey(device_id);
      if (!state) return state.error();
      fold.state = *state;
    }
    DeviceState& state = *fold.state;
    if (!fold.has_data) continue;  // its readings were all duplicates
    latest_blob = fold.latest != nullptr ? raw::EncodeReading(*fold.latest) : std::string();
    auto q = writer->Prepare(sql::kFoldDevice);
    if (!q) return q.error();
    q->Bind(1, state.key)
        .Bind(2, fold.first)
        .Bind(3, fold.last)
        .Bind(4, std::max<std::int64_t>(0, fold.readings - fold.dropped))
        .Bind(5, fold.latest_ts)
        .Bind(7, fold.max_id)
        .Bind(8, fold.span_mask);
    if (fold.latest != nullptr) {
      q->BindBlob(6, latest_blob);
    } else {
      q->BindNull(6);
    }
    if (Status s = q->Run(); !s) return s;
    if (!state.seen && fold.first <= fold.last) {
      state.seen = true;
      ++totals.devices;
    }
    state.max_id = std::max(state.max_id, fold.max_id);
  }
  return Status::Ok();
}

Status SqliteStore::Impl::WriteAggregates(const WriteBatch& batch, TotalsDelta& totals) {
  for (const auto& delta : batch.aggregates) {
    if (delta.acc.count <= 0) continue;  // an empty delta changes nothing
    auto device = DeviceKey(delta.key.device_id);
    if (!device) return device.error();
    auto sensor = SensorKey(delta.key.sensor_type);
    if (!sensor) return sensor.error();
    auto window = WindowKey(delta.key.window.count());
    if (!window) return window.error();
    AggregateRowKey key{*window, core::ToUnixMicros(delta.key.window_start), (*device)->key,
                        *sensor};
    auto run = [&](const char* statement) -> Result<std::int64_t> {
      auto q = writer->Prepare(statement);
      if (!q) return q.error();
      q->Bind(1, key.window_key)
          .Bind(2, key.window_start)
          .Bind(3, key.device_key)
          .Bind(4, key.sensor_key)
          .Bind(5, delta.acc.count)
          .Bind(6, delta.acc.sum)
          .Bind(7, delta.acc.min)
          .Bind(8, delta.acc.max);
      if (Status s = q->Run(); !s) return s.error();
      return sqlite3_changes64(writer->db());
    };
    if (!known_aggregates.contains(key)) {
      auto inserted = run(sql::kInsertAggregate);
      if (!inserted) return inserted.error();
      if (known_aggregates.size() >= kMaxKnownAggregates) known_aggregates.clear();
      known_aggregates.insert(key);
      if (*inserted == 1) {
        ++totals.aggregates;
        continue;
      }
    }
    auto merged = run(sql::kMergeAggregate);
    if (!merged) return merged.error();
    if (*merged != 1) return MakeError(Errc::kInternal, "aggregate row missing on merge");
  }
  return Status::Ok();
}

Result<std::optional<std::int64_t>> SqliteStore::Impl::StoredAlertStatus(std::int64_t id) {
  auto q = writer->Prepare(sql::kAlertStatus);
  if (!q) return q.error();
  q->Bind(1, id);
  auto row = q->Step();
  if (!row) return row.error();
  if (!*row) return std::optional<std::int64_t>();
  return std::optional<std::int64_t>(q->Int(0));
}

Status SqliteStore::Impl::WriteAlerts(const WriteBatch& batch, TotalsDelta& totals) {
  // Stats count alerts that fired (active or resolved): a pending alert is not one yet.
  const std::int64_t pending = AlertStatusCode(core::AlertStatus::kPending);
  const std::int64_t active = AlertStatusCode(core::AlertStatus::kActive);
  auto fired = [&](const std::optional<std::int64_t>& s) { return s && *s != pending ? 1 : 0; };
  for (const auto& a : batch.alert_upserts) {
    auto old = StoredAlertStatus(a.id);
    if (!old) return old.error();
    std::int64_t status = AlertStatusCode(a.status);
    totals.alerts += fired(status) - fired(*old);
    totals.active_alerts += (status == active ? 1 : 0) - (*old == active ? 1 : 0);
    auto q = writer->Prepare(sql::kUpsertAlert);
    if (!q) return q.error();
    q->Bind(1, a.id)
        .Bind(2, a.device_id)
        .Bind(3, a.sensor_type)
        .Bind(4, a.value)
        .Bind(5, a.alert_type)
        .Bind(6, a.severity)
        .Bind(7, a.message)
        .Bind(8, core::ToUnixMicros(a.timestamp))
        .Bind(9, status)
        .Bind(10, a.threshold)
        .Bind(11, core::ToUnixMicros(a.created_at))
        .Bind(12, core::ToUnixMicros(a.updated_at))
        .Bind(14, a.count);
    if (a.resolved_at) {
      q->Bind(13, core::ToUnixMicros(*a.resolved_at));
    } else {
      q->BindNull(13);
    }
    if (Status s = q->Run(); !s) return s;
  }
  for (std::int64_t id : batch.alert_deletes) {
    auto old = StoredAlertStatus(id);
    if (!old) return old.error();
    if (!*old) continue;
    totals.alerts -= fired(*old);
    if (*old == active) --totals.active_alerts;
    auto q = writer->Prepare(sql::kDeleteAlert);
    if (!q) return q.error();
    q->Bind(1, id);
    if (Status s = q->Run(); !s) return s;
  }
  return Status::Ok();
}

Status SqliteStore::Impl::WriteDeadLetters(const WriteBatch& batch) {
  for (const DeadLetter& dl : batch.dead_letters) {
    auto q = writer->Prepare(sql::kInsertDeadLetter);
    if (!q) return q.error();
    q->Bind(1, dl.consumer)
        .Bind(2, dl.topic)
        .Bind(3, std::int64_t{dl.partition})
        .Bind(4, dl.offset)
        .BindBlob(5, dl.key)
        .BindBlob(6, dl.payload)
        .Bind(7, dl.reason)
        .Bind(8, std::int64_t{dl.attempts})
        .Bind(9, core::ToUnixMicros(dl.failed_at));
    if (Status s = q->Run(); !s) return s;  // a duplicate is ignored (ON CONFLICT DO NOTHING)
  }
  return Status::Ok();
}

Status SqliteStore::Impl::WriteIngest(const WriteBatch& batch, TotalsDelta& totals) {
  if (batch.ingested <= 0) return Status::Ok();
  std::int64_t minute = FloorDiv(core::ToUnixMicros(batch.processed_at), kMicrosPerMinute);
  totals.minute = minute;
  {
    auto q = writer->Prepare(sql::kAddIngest);
    if (!q) return q.error();
    q->Bind(1, minute).Bind(2, batch.ingested);
    if (Status s = q->Run(); !s) return s;
  }
  auto q = writer->Prepare(sql::kPruneIngest);
  if (!q) return q.error();
  q->Bind(1, minute - kIngestMinutesKept);
  return q->Run();
}

Status SqliteStore::Impl::WriteTotals(const TotalsDelta& t) {
  auto q = writer->Prepare(sql::kUpdateTotals);
  if (!q) return q.error();
  q->Bind(1, t.devices)
      .Bind(2, t.readings)
      .Bind(3, t.aggregates)
      .Bind(4, t.alerts)
      .Bind(5, t.active_alerts)
      .Bind(6, t.span_mask);
  if (t.minute) {
    q->Bind(7, *t.minute);
  } else {
    q->BindNull(7);
  }
  return q->Run();
}

Status SqliteStore::Impl::ApplyLocked(const WriteBatch& batch) {
  if (device_cache.size() + sensor_cache.size() >= kMaxCacheEntries) ClearWriterCaches();
  Transaction txn(*writer);
  if (Status s = txn.Begin(/*immediate=*/true); !s) return s;
  if (batch.checkpoint) {
    auto q = writer->Prepare(sql::kLoadCheckpoint);
    if (!q) return q.error();
    q->Bind(1, batch.checkpoint->consumer).Bind(2, std::int64_t{batch.checkpoint->partition});
    auto row = q->Step();
    if (!row) return row.error();
    const std::optional<std::int64_t> stored =
        *row ? std::optional<std::int64_t>(q->Int(0)) : std::nullopt;
    switch (DecideFence(*batch.checkpoint, stored)) {
      case Fence::kSkip:
        return Status::Ok();  // applied already
      case Fence::kAbort:
        return FenceError(*batch.checkpoint, *stored);
      case Fence::kApply:
        break;
    }
  }

  TotalsDelta totals;
  StringViewMap<DeviceFold> folds;
  for (const auto& u : batch.devices) {
    DeviceFold& f = folds[u.device_id];
    std::int64_t latest_ts = core::ToUnixMicros(u.latest.ts);
    f.has_data = true;
    f.first = std::min(f.first, core::ToUnixMicros(u.first_seen));
    f.last = std::max(f.last, core::ToUnixMicros(u.last_seen));
    f.readings += u.readings;
    if (f.latest == nullptr || latest_ts >= f.latest_ts) {
      f.latest = &u.latest;
      f.latest_ts = latest_ts;
    }
  }
  if (Status s = WriteReadings(batch, folds, totals); !s) return s;
  if (Status s = WriteDeadLetters(batch); !s) return s;
  if (Status s = FoldDevices(folds, totals); !s) return s;
  if (Status s = WriteAggregates(batch, totals); !s) return s;
  if (Status s = WriteAlerts(batch, totals); !s) return s;
  if (Status s = WriteIngest(batch, totals); !s) return s;
  if (Status s = WriteTotals(totals); !s) return s;
  if (Status s = MergeRecentIndexIfFull(); !s) return s;
  if (batch.checkpoint) {
    auto q = writer->Prepare(sql::kStoreCheckpoint);
    if (!q) return q.error();
    q->Bind(1, batch.checkpoint->consumer)
        .Bind(2, std::int64_t{batch.checkpoint->partition})
        .Bind(3, batch.checkpoint->next_offset);
    if (Status s = q->Run(); !s) return s;
  }
  return txn.Commit();
}

// ---- retention --------------------------------------------------------------------------
//
// Expire never holds the writer for long: each step is one transaction bounded in chunks or
// rows, and write_mu is released between steps so that Applies interleave. Steps only delete
// or shrink rows and never create keys, so a failed step leaves the writer's caches valid
// (recent_index_rows is adjusted after the commit; known_aggregates only loses entries).

namespace {

// CutoffOf returns now - keep, or kMinI64 (nothing is older) when that underflows.
std::int64_t CutoffOf(core::Timestamp now, core::Micros keep) {
  std::int64_t now_us = core::ToUnixMicros(now);
  std::int64_t keep_us = keep.count();
  if (keep_us > 0 && now_us < detail::kMinI64 + keep_us) return detail::kMinI64;
  return now_us - keep_us;
}

}  // namespace

Result<std::int64_t> SqliteStore::Impl::Expire(core::Timestamp now) {
  std::int64_t deleted = 0;
  auto run = [&](auto step) -> Status {
    while (true) {
      Result<ExpireStep> r = [&] {
        std::lock_guard lock(write_mu);
        return step();
      }();
      if (!r) return r.error();
      deleted += r->deleted;
      if (!r->more) return Status::Ok();
    }
  };
  const Retention& retention = options.retention;
  if (retention.raw) {
    const std::int64_t cutoff = CutoffOf(now, *retention.raw);
    if (Status s = run([&] { return ExpireRawStep(cutoff); }); !s) return s.error();
  }
  for (const auto& [window, keep] : retention.aggregates) {
    const std::int64_t cutoff = CutoffOf(now, keep);
    const std::int64_t window_us = window.count();
    if (Status s = run([&] { return ExpireAggregatesStep(window_us, cutoff); }); !s) {
      return s.error();
    }
  }
  return deleted;
}

Result<std::int64_t> SqliteStore::Impl::TrimChunk(std::int64_t chunk_id, std::int64_t device_key,
                                                  int span_class, std::int64_t max_ts,
                                                  std::string_view blob, std::int64_t cutoff) {
  auto dec = raw::ChunkDecoder::Open(blob);
  if (!dec) return dec.error();
  std::vector<StoredReading> kept;
  std::int64_t dropped = 0;
  while (true) {
    auto more = dec->Next();
    if (!more) return more.error();
    if (!*more) break;
    if (dec->ts() < cutoff) {
      ++dropped;
    } else {
      kept.push_back(dec->Materialize(""));  // chunks do not store the device id
    }
  }
  // The query found min_ts < cutoff <= max_ts, so something is dropped and something is kept;
  // anything else means the row does not describe its blob.
  if (dropped == 0 || kept.empty()) {
    return MakeError(Errc::kCorruption, "raw chunk " + std::to_string(chunk_id) +
                                            ": its time range does not match its readings");
  }
  std::vector<const StoredReading*> sorted;
  sorted.reserve(kept.size());
  for (const auto& r : kept) sorted.push_back(&r);
  std::sort(sorted.begin(), sorted.end(),
            [](const auto* a, const auto* b) { return ReadingKey(*a) < ReadingKey(*b); });
  std::int64_t min_id = kMaxI64;
  std::int64_t max_id = kMinI64;
  for (const auto* r : sorted) {
    min_id = std::min(min_id, r->id.value);
    max_id = std::max(max_id, r->id.value);
  }
  const std::int64_t min_ts = core::ToUnixMicros(sorted.front()->reading.ts);
  std::string data;
  raw::EncodeChunk(sorted, data);
  {
    auto q = writer->Prepare(sql::kTrimChunk);
    if (!q) return q.error();
    q->Bind(1, chunk_id)
        .Bind(2, min_ts)
        .Bind(3, min_id)
        .Bind(4, max_id)
        .Bind(5, static_cast<std::int64_t>(sorted.size()))
        .BindBlob(6, data);
    if (Status s = q->Run(); !s) return s.error();
  }
  // The chunk's entry is in one of the two index tiers.
  for (const char* statement : {sql::kReindexChunk, sql::kReindexRecentChunk}) {
    auto q = writer->Prepare(statement);
    if (!q) return q.error();
    q->Bind(1, device_key)
        .Bind(2, std::int64_t{span_class})
        .Bind(3, max_ts)
        .Bind(4, chunk_id)
        .Bind(5, min_ts);
    if (Status s = q->Run(); !s) return s.error();
  }
  return dropped;
}

auto SqliteStore::Impl::ExpireRawStep(std::int64_t cutoff) -> Result<ExpireStep> {
  ExpireStep step;
  if (cutoff == kMinI64) return step;
  Transaction txn(*writer);
  if (Status s = txn.Begin(/*immediate=*/true); !s) return s.error();
  std::uint64_t mask = 0;
  {
    auto q = writer->Prepare(sql::kGlobalSpanMask);
    if (!q) return q.error();
    auto row = q->Step();
    if (!row) return row.error();
    if (*row) mask = static_cast<std::uint64_t>(q->Int(0));
  }

  struct Chunk {
    std::int64_t id, device_key, max_ts, n;
    int span_class;
    std::string data;  // only for chunks to trim
  };
  std::vector<Chunk> expired, straddling;
  std::int64_t budget = detail::kExpireChunksPerTxn;
  for (int c = 0; c < 64 && budget > 0; ++c) {
    if (((mask >> c) & 1) == 0) continue;
    {
      auto q = writer->Prepare(sql::kExpiredChunks);
      if (!q) return q.error();
      q->Bind(1, std::int64_t{c}).Bind(2, cutoff).Bind(3, budget);
      while (true) {
        auto row = q->Step();
        if (!row) return row.error();
        if (!*row) break;
        expired.push_back(Chunk{q->Int(0), q->Int(1), q->Int(2), q->Int(3), c, {}});
        --budget;
      }
    }
    if (budget == 0) break;
    const std::int64_t reach =
        c >= 63 || cutoff > kMaxI64 - ((std::int64_t{1} << c) - 1)
            ? kMaxI64
            : cutoff + ((std::int64_t{1} << c) - 1);
    auto q = writer->Prepare(sql::kStraddlingChunks);
    if (!q) return q.error();
    q->Bind(1, std::int64_t{c}).Bind(2, cutoff).Bind(3, reach).Bind(4, budget);
    while (true) {
      auto row = q->Step();
      if (!row) return row.error();
      if (!*row) break;
      straddling.push_back(Chunk{q->Int(0), q->Int(1), q->Int(2), 0, c, std::string(q->Blob(3))});
      --budget;
    }
  }
  step.more = budget == 0;

  std::int64_t unindexed_recent = 0;
  for (const Chunk& chunk : expired) {
    {
      auto q = writer->Prepare(sql::kDeleteChunk);
      if (!q) return q.error();
      q->Bind(1, chunk.id);
      if (Status s = q->Run(); !s) return s.error();
    }
    for (const char* statement : {sql::kUnindexChunk, sql::kUnindexRecentChunk}) {
      auto q = writer->Prepare(statement);
      if (!q) return q.error();
      q->Bind(1, chunk.device_key)
          .Bind(2, std::int64_t{chunk.span_class})
          .Bind(3, chunk.max_ts)
          .Bind(4, chunk.id);
      if (Status s = q->Run(); !s) return s.error();
      if (statement == sql::kUnindexRecentChunk) {
        unindexed_recent += sqlite3_changes64(writer->db());
      }
    }
    step.deleted += chunk.n;
  }
  for (const Chunk& chunk : straddling) {
    auto dropped =
        TrimChunk(chunk.id, chunk.device_key, chunk.span_class, chunk.max_ts, chunk.data, cutoff);
    if (!dropped) return dropped.error();
    step.deleted += *dropped;
  }
  if (step.deleted > 0) {
    TotalsDelta totals;
    totals.readings = -step.deleted;
    if (Status s = WriteTotals(totals); !s) return s.error();
  }
  if (Status s = txn.Commit(); !s) return s.error();
  recent_index_rows = std::max<std::int64_t>(0, recent_index_rows - unindexed_recent);
  return step;
}

auto SqliteStore::Impl::ExpireAggregatesStep(std::int64_t window_us, std::int64_t cutoff)
    -> Result<ExpireStep> {
  ExpireStep step;
  if (cutoff == kMinI64) return step;
  Transaction txn(*writer);
  if (Status s = txn.Begin(/*immediate=*/true); !s) return s.error();
  std::int64_t window_key = 0;
  {
    // Looked up, not created: a window size never stored has nothing to expire.
    auto q = writer->Prepare(sql::kFindWindow);
    if (!q) return q.error();
    q->Bind(1, window_us);
    auto row = q->Step();
    if (!row) return row.error();
    if (!*row) return step;
    window_key = q->Int(0);
  }
  {
    auto q = writer->Prepare(sql::kExpireAggregates);
    if (!q) return q.error();
    q->Bind(1, window_key).Bind(2, cutoff).Bind(3, detail::kExpireAggregatesPerTxn);
    if (Status s = q->Run(); !s) return s.error();
    step.deleted = sqlite3_changes64(writer->db());
  }
  step.more = step.deleted == detail::kExpireAggregatesPerTxn;
  if (step.deleted > 0) {
    TotalsDelta totals;
    totals.aggregates = -step.deleted;
    if (Status s = WriteTotals(totals); !s) return s.error();
  }
  // Apply merges into rows it knows exist with a plain UPDATE: forget the deleted ones first
  // (also when the commit fails: forgetting is always safe).
  std::erase_if(known_aggregates, [&](const AggregateRowKey& k) {
    return k.window_key == window_key && k.window_start < cutoff;
  });
  if (Status s = txn.Commit(); !s) return s.error();
  return step;
}

}  // namespace iot::store
