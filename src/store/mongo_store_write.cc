// mongo_store_write.cc: MongoStore::Apply without transactions (see mongo_store.h):
// raw inserts keyed by message id, then the batch's other effects journaled together with the
// checkpoint in one document, then applied with per-document high-water marks, then cleared.
#include <algorithm>
#include <unordered_map>
#include <unordered_set>

#include "store/mongo_store_impl.h"

namespace iot::store {

using mongo::Bson;
using mongo::Builder;
using mongo::Op;

namespace {

constexpr std::int64_t kOffsetMask = (std::int64_t{1} << 40) - 1;
// A journal document holds ops up to about this many bytes (BSON documents are at most 16 MiB).
constexpr std::size_t kJournalPartBytes = 8 << 20;
constexpr std::size_t kAveragesPerQuery = 1000;

std::string CheckpointId(const Checkpoint& cp) {
  return cp.consumer + "/" + std::to_string(cp.partition);
}

// HighWaterField is the field of a document that holds the end offset of the last batch of
// this (consumer, partition) applied to it.
std::string HighWaterField(const Checkpoint& cp) {
  return "hw." + cp.consumer + "_" + std::to_string(cp.partition);
}

bool ValidConsumerName(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '-';
  });
}

// Guard says which high-water mark an increment must be beyond; unset for batches without a
// checkpoint (applied as they come).
struct Guard {
  std::string field;
  std::int64_t end = 0;
};

// GuardOf builds {<guard.field>: {$not: {$gte: end}}}: added to an op's filter, the op applies
// only if this batch has not been applied to the document yet. With upsert, a document that has
// it already makes the server try to insert a second one with the same _id: E11000, "done".
Bson GuardOf(const std::optional<Guard>& guard) {
  Bson doc;
  if (guard) {
    Builder(doc).Doc(guard->field, [&](Builder& f) {
      f.Doc("$not", [&](Builder& n) { n.Int64("$gte", guard->end); });
    });
  }
  return doc;
}

Bson RawDoc(const StoredReading& r) {
  Bson doc;
  Builder b(doc);
  b.Int64("_id", r.id.value);
  AppendReading(b, r.reading);
  return doc;
}

// DeviceFold is what a batch changes in one device's document.
struct DeviceFold {
  core::Timestamp first = core::Timestamp::max();
  core::Timestamp last = core::Timestamp::min();
  std::int64_t readings = 0;
  const core::Reading* latest = nullptr;
};

}  // namespace

void AppendReading(Builder& b, const core::Reading& reading) {
  b.Str("device_id", reading.device_id).Date("ts", reading.ts);
  for (const auto& sensor : reading.sensors) b.Double(sensor.name, sensor.value);
  if (reading.lat) b.Double("lat", *reading.lat);
  if (reading.lon) b.Double("lon", *reading.lon);
}

Bson AlertDoc(const core::Alert& a) {
  Bson doc;
  Builder b(doc);
  b.Str("_id", PaddedId(a.id))
      .Str("device_id", a.device_id)
      .Str("sensor_type", a.sensor_type)
      .Double("value", a.value)
      .Str("alert_type", a.alert_type)
      .Str("severity", a.severity)
      .Str("message", a.message)
      .Date("timestamp", a.timestamp)
      .Str("status", core::AlertStatusName(a.status))
      .Double("threshold", a.threshold)
      .Date("created_at", a.created_at)
      .Date("updated_at", a.updated_at);
  if (a.resolved_at) {
    b.Date("resolved_at", *a.resolved_at);
  } else {
    b.Null("resolved_at");
  }
  b.Int64("count", a.count);
  return doc;
}

// ---- checkpoints and the journal ------------------------------------------------------------

Result<MongoStore::Impl::CheckpointState> MongoStore::Impl::LoadState(mongo::Lease& lease,
                                                                      const std::string& id) {
  Bson filter;
  Builder(filter).Str("_id", id);
  Bson opts;
  Builder(opts).Int64("limit", 1);
  CheckpointState state;
  Status s = Find(lease, mongo::kCheckpoints, filter.get(), opts.get(), [&](const bson_t* doc) {
    state.exists = true;
    bson_iter_t it;
    if (mongo::Find(doc, "next_offset", &it)) state.next_offset = mongo::AsInt64(it).value_or(0);
    bson_iter_t journal, field;
    if (mongo::Find(doc, "journal", &journal) && bson_iter_type(&journal) == BSON_TYPE_DOCUMENT) {
      if (bson_iter_recurse(&journal, &field) && bson_iter_find(&field, "end")) {
        state.journal_end = mongo::AsInt64(field);
      }
      if (bson_iter_recurse(&journal, &field) && bson_iter_find(&field, "parts")) {
        state.journal_parts = static_cast<std::int32_t>(mongo::AsInt64(field).value_or(0));
      }
    }
    return Status::Ok();
  });
  if (!s) return s.error();
  return state;
}

namespace {

// SerializeJournal cuts `ops` into journal documents of at most about kJournalPartBytes.
std::vector<Bson> SerializeJournal(const std::string& checkpoint, std::int64_t end,
                                   const std::vector<Op>& ops) {
  std::vector<Bson> parts;
  std::size_t i = 0;
  while (i < ops.size()) {
    Bson part;
    Builder b(part);
    auto number = static_cast<std::int32_t>(parts.size());
    b.Str("_id", checkpoint + "/" + std::to_string(end) + "/" + std::to_string(number))
        .Str("checkpoint", checkpoint)
        .Int64("end", end)
        .Int32("part", number);
    std::size_t bytes = 0;
    b.Array("ops", [&](Builder& list) {
      while (i < ops.size() && (bytes == 0 || bytes < kJournalPartBytes)) {
        const Op& op = ops[i++];
        bytes += op.filter.get()->len + op.guard.get()->len + op.update.get()->len + 64;
        list.Doc("", [&](Builder& o) {
          o.Str("c", op.collection)
              .Int32("k", op.kind)
              .Int32("p", op.phase)
              .Bool("up", op.upsert)
              .Binary("q", op.filter.get())
              .Binary("g", op.guard.get())
              .Binary("u", op.update.get());
        });
      }
    });
    parts.push_back(std::move(part));
  }
  return parts;
}

Result<std::vector<Op>> ParseJournal(const bson_t* part) {
  std::vector<Op> ops;
  bson_iter_t list, item;
  if (!mongo::Find(part, "ops", &list) || bson_iter_type(&list) != BSON_TYPE_ARRAY ||
      !bson_iter_recurse(&list, &item)) {
    return MakeError(Errc::kCorruption, "journal document without ops");
  }
  while (bson_iter_next(&item)) {
    bson_iter_t field;
    if (bson_iter_type(&item) != BSON_TYPE_DOCUMENT || !bson_iter_recurse(&item, &field)) {
      return MakeError(Errc::kCorruption, "journal op is not a document");
    }
    Op op;
    bool has_collection = false;
    while (bson_iter_next(&field)) {
      std::string_view key = bson_iter_key(&field);
      if (key == "c") {
        auto c = mongo::AsString(field);
        if (c) op.collection = std::string(*c);
        has_collection = c.has_value();
      } else if (key == "k") {
        op.kind = static_cast<Op::Kind>(mongo::AsInt64(field).value_or(0));
      } else if (key == "p") {
        op.phase = static_cast<std::int32_t>(mongo::AsInt64(field).value_or(0));
      } else if (key == "up") {
        op.upsert = bson_iter_type(&field) == BSON_TYPE_BOOL && bson_iter_bool(&field);
      } else if (key == "q") {
        op.filter = Bson::FromIter(field);
      } else if (key == "g") {
        op.guard = Bson::FromIter(field);
      } else if (key == "u") {
        op.update = Bson::FromIter(field);
      }
    }
    if (!has_collection || op.kind < Op::kUpdate || op.kind > Op::kDelete) {
      return MakeError(Errc::kCorruption, "journal op without a collection or kind");
    }
    ops.push_back(std::move(op));
  }
  return ops;
}

}  // namespace

Status MongoStore::Impl::Redo(mongo::Lease& lease, const std::string& id,
                              CheckpointState& state) {
  if (!state.journal_end) return Status::Ok();
  std::int64_t end = *state.journal_end;
  Bson filter;
  Builder(filter).Str("checkpoint", id).Int64("end", end).Doc("part", [&](Builder& b) {
    b.Int32("$lt", state.journal_parts);
  });
  Bson opts;
  Builder(opts).Doc("sort", [](Builder& b) { b.Int32("part", 1); });
  std::vector<Op> ops;
  std::int32_t parts = 0;
  Status s = Find(lease, mongo::kJournal, filter.get(), opts.get(), [&](const bson_t* doc) {
    auto part = ParseJournal(doc);
    if (!part) return Status(part.error());
    ++parts;
    for (auto& op : *part) ops.push_back(std::move(op));
    return Status::Ok();
  });
  if (!s) return s;
  if (parts != state.journal_parts) {
    return MakeError(Errc::kCorruption, "the journal of " + id + " has " + std::to_string(parts) +
                                            " of its " + std::to_string(state.journal_parts) +
                                            " parts");
  }
  if (Status e = Execute(lease, ops, /*guarded=*/true); !e) return e;
  return ClearJournal(lease, id, state);
}

Status MongoStore::Impl::ClearJournal(mongo::Lease& lease, const std::string& id,
                                      CheckpointState& state) {
  if (!state.journal_end) return Status::Ok();
  std::int64_t end = *state.journal_end;
  // The checkpoint first (so a crash now does not apply the journal again), then the
  // journal documents.
  Bson clear_filter;
  Builder(clear_filter).Str("_id", id).Int64("journal.end", end);
  Bson clear;
  Builder(clear).Doc("$unset", [](Builder& b) { b.Str("journal", ""); });
  auto coll = Coll(lease, mongo::kCheckpoints);
  bson_error_t error;
  if (!mongoc_collection_update_one(coll.get(), clear_filter.get(), clear.get(), nullptr, nullptr,
                                    &error)) {
    return mongo::ClassifyError(error, "clearing the journal of " + id);
  }
  state.journal_end.reset();
  state.journal_parts = 0;
  Bson parts_filter;
  Builder(parts_filter).Str("checkpoint", id);
  auto deleted = DeleteMany(lease, mongo::kJournal, parts_filter.get());
  return deleted.status();
}

Status MongoStore::Impl::Execute(mongo::Lease& lease, const std::vector<Op>& ops, bool guarded) {
  std::vector<std::string> aggregate_ids;
  for (std::int32_t phase : {0, 1}) {
    // One bulk write per collection, in the order the collections first appear.
    std::vector<std::pair<std::string, std::vector<const Op*>>> groups;
    for (const Op& op : ops) {
      if (op.phase != phase) continue;
      auto g = std::find_if(groups.begin(), groups.end(),
                            [&](const auto& group) { return group.first == op.collection; });
      if (g == groups.end()) {
        groups.emplace_back(op.collection, std::vector<const Op*>{});
        g = groups.end() - 1;
      }
      g->second.push_back(&op);
      if (op.collection == mongo::kAggregates && op.kind == Op::kUpdate) {
        bson_iter_t it;
        if (mongo::Find(op.filter.get(), "_id", &it)) {
          if (auto id = mongo::AsString(it)) aggregate_ids.emplace_back(*id);
        }
      }
    }
    for (const auto& [collection, list] : groups) {
      auto outcome = Bulk(lease, collection.c_str(), list, guarded);
      if (!outcome) return outcome.error();
      if (Crashed("apply:" + collection)) {
        return MakeError(Errc::kInternal, "crash_at: apply:" + collection);
      }
    }
  }
  return UpdateAverages(lease, aggregate_ids);
}

// UpdateAverages sets `average` = sum / count on the given aggregates. Update operators cannot
// divide (pipeline updates can, but FerretDB 1.x has none), so this reads the new count and sum
// back and writes their quotient. The filter is the _id alone, the only filter FerretDB's SQLite
// backend passes down to SQL (it decodes every document to evaluate any other). Only a rebalance of Kafka partitions can
// make two writers merge into one aggregate at the same time; then `average` may lag until the
// aggregate's next merge. The API never reads it: it divides sum by count itself.
Status MongoStore::Impl::UpdateAverages(mongo::Lease& lease, const std::vector<std::string>& ids) {
  for (std::size_t start = 0; start < ids.size(); start += kAveragesPerQuery) {
    std::size_t stop = std::min(ids.size(), start + kAveragesPerQuery);
    Bson filter;
    Builder(filter).Doc("_id", [&](Builder& b) {
      b.Array("$in", [&](Builder& list) {
        for (std::size_t i = start; i < stop; ++i) list.Str("", ids[i]);
      });
    });
    Bson opts;
    // One reply holds them all: no server-side cursor stays open while the updates below run.
    Builder(opts)
        .Doc("projection", [](Builder& b) { b.Int32("count", 1).Int32("sum", 1); })
        .Int64("batchSize", static_cast<std::int64_t>(kAveragesPerQuery));
    std::vector<Op> sets;
    Status s = Find(lease, mongo::kAggregates, filter.get(), opts.get(), [&](const bson_t* doc) {
      bson_iter_t id, count, sum;
      if (!mongo::Find(doc, "_id", &id) || !mongo::Find(doc, "count", &count) ||
          !mongo::Find(doc, "sum", &sum)) {
        return Status::Ok();
      }
      auto c = mongo::AsInt64(count);
      auto total = mongo::AsDouble(sum);
      auto key = mongo::AsString(id);
      if (!c || !total || !key || *c <= 0) return Status::Ok();
      Op op;
      op.collection = mongo::kAggregates;
      Builder(op.filter).Str("_id", *key);
      Builder(op.update).Doc("$set", [&](Builder& b) {
        b.Double("average", *total / static_cast<double>(*c));
      });
      sets.push_back(std::move(op));
      return Status::Ok();
    });
    if (!s) return s;
    std::vector<const Op*> list;
    for (const Op& op : sets) list.push_back(&op);
    auto outcome = Bulk(lease, mongo::kAggregates, list);
    if (!outcome) return outcome.error();
  }
  return Status::Ok();
}

// ---- Apply ----------------------------------------------------------------------------------

Status MongoStore::Impl::Apply(const WriteBatch& batch) {
  mongo::Lease lease(pool);
  std::optional<Guard> guard;
  std::string cp_id;
  CheckpointState state;
  if (batch.checkpoint) {
    const Checkpoint& cp = *batch.checkpoint;
    if (!ValidConsumerName(cp.consumer) || cp.partition < 0) {
      return MakeError(Errc::kInvalidArgument, "invalid checkpoint name: " + cp.consumer);
    }
    cp_id = CheckpointId(cp);
    {
      std::lock_guard lock(checkpoints_mu);
      auto cached = checkpoints.find(cp_id);
      if (cached != checkpoints.end()) state = cached->second;
    }
    if (!state.exists) {
      auto loaded = Retry([&] { return LoadState(lease, cp_id); });
      if (!loaded) return loaded.error();
      state = *loaded;
    }
    if (state.journal_end) {
      Status s = Retry([&] { return Redo(lease, cp_id, state); });
      if (!s) return s;
      std::lock_guard lock(checkpoints_mu);
      checkpoints[cp_id] = state;
    }
    if (state.exists && cp.next_offset <= state.next_offset) return Status::Ok();  // applied
    guard = Guard{HighWaterField(cp), cp.next_offset};
  }

  // 1. Raw readings, each once: duplicates within the batch are dropped here, duplicates of
  // stored readings by the server (E11000).
  std::unordered_map<std::string_view, std::int64_t> repeated;  // per device, within the batch
  std::unordered_map<std::string_view, std::int64_t> stored;    // per device, stored before
  std::unordered_set<std::int64_t> ids;
  std::vector<Bson> docs;
  std::vector<const StoredReading*> unique;
  docs.reserve(batch.readings.size());
  for (const StoredReading& r : batch.readings) {
    if (!ids.insert(r.id.value).second) {
      ++repeated[r.reading.device_id];
      continue;
    }
    docs.push_back(RawDoc(r));
    unique.push_back(&r);
  }
  auto inserted = Retry([&] { return InsertMany(lease, mongo::kRaw, docs); });
  if (!inserted) return inserted.error();
  if (Crashed("raw")) return MakeError(Errc::kUnavailable, "crash_at: raw");
  for (std::uint32_t index : inserted->duplicates) {
    const StoredReading& r = *unique[index];
    // At or beyond the checkpoint, a stored reading comes from an attempt at this position that
    // never committed: it was not counted yet.
    bool uncounted = batch.checkpoint && (r.id.value >> 40) == batch.checkpoint->partition &&
                     (r.id.value & kOffsetMask) >= state.next_offset;
    if (!uncounted) ++stored[r.reading.device_id];
  }
  auto count_of = [](const auto& map, std::string_view device) -> std::int64_t {
    auto it = map.find(device);
    return it == map.end() ? 0 : it->second;
  };

  // 2. The other effects, as ops.
  std::vector<Op> ops;
  bool increments = false;
  auto add = [&](const char* collection, Op::Kind kind, std::int32_t phase, bool upsert) -> Op& {
    Op& op = ops.emplace_back();
    op.collection = collection;
    op.kind = kind;
    op.phase = phase;
    op.upsert = upsert;
    return op;
  };
  const bool has_time = batch.processed_at != core::Timestamp{};

  // Devices: from the batch's DeviceUpdates (whose counts include every reading of the batch),
  // or folded from the readings of a device that has none.
  std::unordered_map<std::string_view, DeviceFold> folds;
  for (const DeviceUpdate& u : batch.devices) {
    DeviceFold& f = folds[u.device_id];
    f.first = std::min(f.first, u.first_seen);
    f.last = std::max(f.last, u.last_seen);
    f.readings += u.readings;
    f.latest = &u.latest;
  }
  for (auto& [device, f] : folds) f.readings -= count_of(repeated, device);
  std::unordered_map<std::string_view, DeviceFold> from_readings;
  for (const StoredReading* r : unique) {
    if (folds.contains(r->reading.device_id)) continue;
    DeviceFold& f = from_readings[r->reading.device_id];
    f.first = std::min(f.first, r->reading.ts);
    f.last = std::max(f.last, r->reading.ts);
    ++f.readings;
    if (f.latest == nullptr || r->reading.ts >= f.latest->ts) f.latest = &r->reading;
  }
  folds.merge(from_readings);
  for (const auto& [device, f] : folds) {
    if (f.first > f.last) continue;
    std::int64_t readings = std::max<std::int64_t>(0, f.readings - count_of(stored, device));
    Op& op = add(mongo::kDevices, Op::kUpdate, 0, true);
    Builder(op.filter).Str("_id", device);
    op.guard = GuardOf(guard);
    // `latest` is the newest reading by (ts, batch): $max compares the sub-documents field by
    // field, so a later ts wins, and on equal ts the later batch (its end offset, `seq`).
    const std::int64_t seq = guard ? guard->end : 0;
    Builder(op.update)
        .Doc("$min", [&](Builder& b) { b.Date("first_seen", f.first); })
        .Doc("$max", [&](Builder& b) {
          b.Date("last_seen", f.last);
          if (f.latest != nullptr) {
            b.Doc("latest", [&](Builder& l) {
              l.Date("ts", f.latest->ts).Int64("seq", seq).Doc("reading", [&](Builder& r) {
                AppendReading(r, *f.latest);
              });
            });
          }
        })
        .Doc("$inc", [&](Builder& b) { b.Int64("readings", readings); })
        .Doc("$setOnInsert", [&](Builder& b) { b.Str("device_id", device); });
    if (guard) {
      Builder(op.update).Doc("$set", [&](Builder& b) { b.Int64(guard->field, guard->end); });
    }
    increments = true;
  }

  for (const AggregateDelta& delta : batch.aggregates) {
    if (delta.acc.count <= 0) continue;
    std::string id = AggregateId(delta.key);
    Op& op = add(mongo::kAggregates, Op::kUpdate, 0, true);
    Builder(op.filter).Str("_id", id);
    op.guard = GuardOf(guard);
    std::optional<core::Timestamp> expire_at;
    for (const auto& [window, keep] : options.retention.aggregates) {
      if (window == delta.key.window) expire_at = delta.key.window_start + keep;
    }
    Builder(op.update)
        .Doc("$inc", [&](Builder& b) {
          b.Int64("count", delta.acc.count).Double("sum", delta.acc.sum);
        })
        .Doc("$min", [&](Builder& b) { b.Double("min", delta.acc.min); })
        .Doc("$max", [&](Builder& b) { b.Double("max", delta.acc.max); })
        .Doc("$setOnInsert", [&](Builder& b) {
          b.Str("device_id", delta.key.device_id)
              .Str("sensor_type", delta.key.sensor_type)
              .Str("window", core::FormatDuration(delta.key.window))
              .Date("timestamp", delta.key.window_start);
          if (expire_at) b.Date("expire_at", *expire_at);
        });
    if (guard || has_time) {
      Builder(op.update).Doc("$set", [&](Builder& b) {
        if (has_time) b.Date("updated_at", batch.processed_at);
        if (guard) b.Int64(guard->field, guard->end);
      });
    }
    increments = true;
  }

  if (batch.ingested > 0 && has_time) {
    std::int64_t minute = core::ToUnixMicros(batch.processed_at) / 60'000'000;
    if (core::ToUnixMicros(batch.processed_at) % 60'000'000 < 0) --minute;
    Op& op = add(mongo::kMinutes, Op::kUpdate, 0, true);
    Builder(op.filter).Str("_id", PaddedId(minute, 12));
    op.guard = GuardOf(guard);
    Builder(op.update).Doc("$inc", [&](Builder& b) { b.Int64("n", batch.ingested); });
    if (guard) {
      Builder(op.update).Doc("$set", [&](Builder& b) { b.Int64(guard->field, guard->end); });
    }
    increments = true;
  }

  // Alerts: only the last upsert of an id in the batch matters, and an id deleted by the batch
  // ends deleted (upserts come before deletes). An alert opened by a reading of this batch is
  // new: it is inserted (one bulk insert, where replacing costs a lookup per alert), and
  // replaced only if an earlier attempt at this batch stored it already.
  std::unordered_set<std::int64_t> deleted(batch.alert_deletes.begin(), batch.alert_deletes.end());
  std::unordered_map<std::int64_t, const core::Alert*> last;
  std::vector<std::int64_t> order;
  for (const core::Alert& alert : batch.alert_upserts) {
    if (deleted.contains(alert.id)) continue;
    auto [it, inserted_now] = last.try_emplace(alert.id, &alert);
    if (inserted_now) {
      order.push_back(alert.id);
    } else {
      it->second = &alert;
    }
  }
  auto opened_in_batch = [&](std::int64_t alert_id) {
    if (!batch.checkpoint) return false;
    std::int64_t message = alert_id >> 6;
    return (message >> 40) == batch.checkpoint->partition &&
           (message & kOffsetMask) >= state.next_offset;
  };
  std::vector<Bson> fresh;
  std::vector<const core::Alert*> fresh_alerts;
  for (std::int64_t id : order) {
    if (opened_in_batch(id)) {
      fresh.push_back(AlertDoc(*last[id]));
      fresh_alerts.push_back(last[id]);
      continue;
    }
    Op& op = add(mongo::kAlerts, Op::kReplace, 0, true);
    Builder(op.filter).Str("_id", PaddedId(id));
    op.update = AlertDoc(*last[id]);
  }
  if (!fresh.empty()) {
    auto stored_fresh = Retry([&] { return InsertMany(lease, mongo::kAlerts, fresh); });
    if (!stored_fresh) return stored_fresh.error();
    for (std::uint32_t index : stored_fresh->duplicates) {
      Op& op = add(mongo::kAlerts, Op::kReplace, 0, true);
      Builder(op.filter).Str("_id", PaddedId(fresh_alerts[index]->id));
      op.update = AlertDoc(*fresh_alerts[index]);
    }
  }
  for (std::int64_t id : batch.alert_deletes) {
    Op& op = add(mongo::kAlerts, Op::kDelete, 1, false);
    Builder(op.filter).Str("_id", PaddedId(id));
  }

  if (!batch.checkpoint) return Retry([&] { return Execute(lease, ops, false); });

  // 3. Commit. Increments need the journal; replacements and deletes can simply be applied
  // before the checkpoint moves (doing them twice after a crash changes nothing).
  const std::int64_t end = batch.checkpoint->next_offset;
  std::vector<Bson> parts;
  if (increments) {
    parts = SerializeJournal(cp_id, end, ops);
    Bson stale;
    Builder(stale).Str("checkpoint", cp_id);
    auto cleared = Retry([&] { return DeleteMany(lease, mongo::kJournal, stale.get()); });
    if (!cleared) return cleared.error();
    auto written = Retry([&] { return InsertMany(lease, mongo::kJournal, parts); });
    if (!written) return written.error();
  } else if (Status s = Retry([&] { return Execute(lease, ops, false); }); !s) {
    return s;
  }

  Status committed = Retry([&]() -> Status {
    auto coll = Coll(lease, mongo::kCheckpoints);
    Bson filter, update;
    Builder f(filter);
    f.Str("_id", cp_id);
    if (state.exists) f.Int64("next_offset", state.next_offset);
    Builder u(update);
    u.Doc("$set", [&](Builder& b) {
      b.Str("consumer", batch.checkpoint->consumer)
          .Int32("partition", batch.checkpoint->partition)
          .Int64("next_offset", end);
      if (increments) {
        b.Doc("journal", [&](Builder& j) {
          j.Int64("end", end).Int32("parts", static_cast<std::int32_t>(parts.size()));
        });
      }
    });
    Bson opts;
    Builder(opts).Bool("upsert", !state.exists);
    mongo::Reply reply;
    bson_error_t error;
    if (!mongoc_collection_update_one(coll.get(), filter.get(), update.get(), opts.get(),
                                      reply.out(), &error)) {
      if (error.code == mongo::kDuplicateKey) {
        return MakeError(Errc::kAlreadyExists, "the checkpoint " + cp_id + " moved");
      }
      return mongo::ClassifyError(error, "committing the checkpoint " + cp_id);
    }
    bson_iter_t it;
    std::int64_t matched = 0, upserted = 0;
    if (mongo::Find(reply.get(), "matchedCount", &it)) matched = mongo::AsInt64(it).value_or(0);
    if (mongo::Find(reply.get(), "upsertedCount", &it)) upserted = mongo::AsInt64(it).value_or(0);
    if (matched + upserted == 0) {
      return MakeError(Errc::kAlreadyExists, "the checkpoint " + cp_id + " moved");
    }
    return Status::Ok();
  });
  if (!committed) {
    // Another writer moved the checkpoint, or the commit's reply was lost: read it again next
    // time, and let the worker retry (the batch is then skipped or applied, as the state says).
    std::lock_guard lock(checkpoints_mu);
    checkpoints.erase(cp_id);
    if (committed.error().code == Errc::kAlreadyExists) {
      return MakeError(Errc::kUnavailable, committed.error().message);
    }
    return committed;
  }
  state.exists = true;
  state.next_offset = end;
  if (increments) {
    state.journal_end = end;
    state.journal_parts = static_cast<std::int32_t>(parts.size());
  }
  {
    std::lock_guard lock(checkpoints_mu);
    checkpoints[cp_id] = state;
  }
  if (!increments) return Status::Ok();
  if (Crashed("commit")) return MakeError(Errc::kUnavailable, "crash_at: commit");

  // 4. Apply the journal, then clear it. A failure leaves the journal for the next call. The
  // first attempt needs no guards (nothing of a journal committed just now can have been
  // applied), which keeps every filter a plain _id; a retry after a partial failure does.
  bool first_attempt = true;
  Status s = Retry([&] {
    bool guarded = !first_attempt;
    first_attempt = false;
    return Execute(lease, ops, guarded);
  });
  if (s && Crashed("applied")) return MakeError(Errc::kUnavailable, "crash_at: applied");
  if (s) s = Retry([&] { return ClearJournal(lease, cp_id, state); });
  std::lock_guard lock(checkpoints_mu);
  checkpoints[cp_id] = state;
  return s;
}

Result<std::optional<std::int64_t>> MongoStore::Impl::LoadCheckpoint(const std::string& consumer,
                                                                     std::int32_t partition) {
  Checkpoint cp{consumer, partition, 0};
  std::string id = CheckpointId(cp);
  mongo::Lease lease(pool);
  auto loaded = Retry([&] { return LoadState(lease, id); });
  if (!loaded) return loaded.error();
  CheckpointState state = *loaded;
  if (state.journal_end) {
    if (Status s = Retry([&] { return Redo(lease, id, state); }); !s) return s.error();
  }
  {
    std::lock_guard lock(checkpoints_mu);
    checkpoints[id] = state;
  }
  if (!state.exists) return std::optional<std::int64_t>();
  return std::optional<std::int64_t>(state.next_offset);
}

}  // namespace iot::store
