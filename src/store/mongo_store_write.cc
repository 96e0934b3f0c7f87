// mongo_store_write.cc: MongoStore::Apply without transactions (see mongo_store.h): the
// checkpoint fence, raw inserts keyed by message id and dead letters keyed by their position,
// then the batch's other effects journaled together with the checkpoint in one document, then
// applied with per-document high-water marks, then cleared.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <unordered_map>
#include <unordered_set>

#include "core/utf8.h"
#include "store/checkpoint_fence.h"
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

// HighWaterName names the high-water mark of a (consumer, partition): the field under `hw` of a
// document that holds the end offset of the last batch of it applied to the document.
std::string HighWaterName(const Checkpoint& cp) {
  return cp.consumer + "_" + std::to_string(cp.partition);
}

bool ValidConsumerName(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '-';
  });
}

// Guard says which high-water mark a write must be beyond; unset for batches without a
// checkpoint (applied as they come).
struct Guard {
  std::string name;   // HighWaterName
  std::string field;  // "hw." + name
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

bool IsText(std::string_view s) {
  while (!s.empty()) {
    std::size_t n = core::Utf8SequenceLength(s);
    if (n == 0 || s.front() == '\0') return false;
    s.remove_prefix(n);
  }
  return true;
}

// AppendTextOrBytes appends `value` as a string when it is UTF-8 text (readable in the shell),
// else as binary data; AsBytes reads either back.
void AppendTextOrBytes(Builder& b, std::string_view key, std::string_view value) {
  if (IsText(value)) {
    b.Str(key, value);
  } else {
    b.Bytes(key, value);
  }
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

std::string DeadLetterId(const DeadLetter& dl) {
  return dl.consumer + "/" + std::to_string(dl.partition) + "/" + PaddedId(dl.offset) + "/" +
         dl.topic;
}

Bson DeadLetterDoc(const DeadLetter& dl) {
  Bson doc;
  Builder b(doc);
  b.Str("_id", DeadLetterId(dl))
      .Str("consumer", dl.consumer)
      .Str("topic", dl.topic)
      .Int32("partition", dl.partition)
      .Int64("offset", dl.offset);
  AppendTextOrBytes(b, "key", dl.key);
  b.Bytes("payload", dl.payload);
  AppendTextOrBytes(b, "reason", dl.reason);
  b.Int32("attempts", dl.attempts).Date("failed_at", dl.failed_at);
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
      if (bson_iter_recurse(&journal, &field) && bson_iter_find(&field, "token")) {
        state.journal_token = std::string(mongo::AsString(field).value_or(""));
      }
    }
    return Status::Ok();
  });
  if (!s) return s.error();
  return state;
}

namespace {

// SerializeJournal cuts `ops` into journal documents of at most about kJournalPartBytes, with
// _ids unique to the attempt `token` (two writers of one checkpoint never mix their parts).
std::vector<Bson> SerializeJournal(const std::string& checkpoint, std::int64_t end,
                                   const std::string& token, const std::vector<Op>& ops) {
  std::vector<Bson> parts;
  std::size_t i = 0;
  while (i < ops.size()) {
    Bson part;
    Builder b(part);
    auto number = static_cast<std::int32_t>(parts.size());
    b.Str("_id", checkpoint + "/" + std::to_string(end) + "/" + token + "/" +
                     std::to_string(number))
        .Str("checkpoint", checkpoint)
        .Int64("end", end)
        .Str("token", token)
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
    if (!has_collection || op.kind < Op::kUpdate || op.kind > Op::kInsert) {
      return MakeError(Errc::kCorruption, "journal op without a collection or kind");
    }
    ops.push_back(std::move(op));
  }
  return ops;
}

// JournalParts selects the parts of the journal `state` names (by token; journals written before
// tokens existed by their end offset).
Bson JournalParts(const std::string& id, std::int64_t end, std::int32_t parts,
                  const std::string& token) {
  Bson filter;
  Builder b(filter);
  b.Str("checkpoint", id);
  if (!token.empty()) {
    b.Str("token", token);
  } else {
    b.Int64("end", end);
  }
  b.Doc("part", [&](Builder& p) { p.Int32("$lt", parts); });
  return filter;
}

}  // namespace

Status MongoStore::Impl::Redo(mongo::Lease& lease, const std::string& id,
                              CheckpointState& state) {
  if (!state.journal_end) return Status::Ok();
  Bson filter = JournalParts(id, *state.journal_end, state.journal_parts, state.journal_token);
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
  if (Status e = Execute(lease, ops); !e) return e;
  return ClearJournal(lease, id, state);
}

Status MongoStore::Impl::ClearJournal(mongo::Lease& lease, const std::string& id,
                                      CheckpointState& state) {
  if (!state.journal_end) return Status::Ok();
  std::int64_t end = *state.journal_end;
  // The checkpoint first (so a crash now does not apply the journal again), then the
  // journal documents. Only this journal's mark is cleared: another writer may have committed
  // a newer one meanwhile.
  Bson clear_filter;
  Builder(clear_filter).Str("_id", id).Int64("journal.end", end);
  if (!state.journal_token.empty()) Builder(clear_filter).Str("journal.token", state.journal_token);
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
  state.journal_token.clear();
  // This journal's parts and those of attempts that never committed up to here: a journal that
  // can still commit ends beyond `end` (the checkpoint only moves forward).
  Bson parts_filter;
  Builder(parts_filter).Str("checkpoint", id).Doc("end", [&](Builder& b) {
    b.Int64("$lte", end);
  });
  auto deleted = DeleteMany(lease, mongo::kJournal, parts_filter.get());
  return deleted.status();
}

Status MongoStore::Impl::Execute(mongo::Lease& lease, const std::vector<Op>& ops) {
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
    // Devices last: a device's reading count then includes a reading only once its aggregates
    // and alerts are written, so a client that waits for the count sees them too.
    std::stable_partition(groups.begin(), groups.end(),
                          [](const auto& group) { return group.first != mongo::kDevices; });
    for (const auto& [collection, list] : groups) {
      auto outcome = Bulk(lease, collection.c_str(), list);
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

namespace {

// How many times Apply commits a batch whose checkpoint another writer keeps moving (each time to
// a position that still lets the batch through) before it answers kUnavailable.
constexpr int kCommitRounds = 3;

std::int64_t CountOf(const std::unordered_map<std::string_view, std::int64_t>& counts,
                     std::string_view device) {
  auto it = counts.find(device);
  return it == counts.end() ? 0 : it->second;
}

// InBatch says whether message `message_id` is at or beyond the stored position `next_offset`
// of the batch's partition: then only an attempt at this batch can have written it.
bool InBatch(const Checkpoint* cp, std::int64_t next_offset, std::int64_t message_id) {
  return cp != nullptr && (message_id >> 40) == cp->partition &&
         (message_id & kOffsetMask) >= next_offset;
}

// BuildOps turns the batch's effects other than raw readings and dead letters into ops:
// increments of devices, aggregates and ingest minutes, alert inserts, replacements and deletes.
// `next_offset` is the stored position (0 without a checkpoint).
std::vector<Op> BuildOps(const WriteBatch& batch, const mongo::RawOutcome& raw,
                         const std::optional<Guard>& guard, std::int64_t next_offset,
                         const Retention& retention) {
  const Checkpoint* cp = batch.checkpoint ? &*batch.checkpoint : nullptr;
  std::vector<Op> ops;
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
  for (auto& [device, f] : folds) f.readings -= CountOf(raw.repeated, device);
  std::unordered_map<std::string_view, DeviceFold> from_readings;
  for (const StoredReading* r : raw.unique) {
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
    std::int64_t readings = std::max<std::int64_t>(0, f.readings - CountOf(raw.stored, device));
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
  }

  for (const AggregateDelta& delta : batch.aggregates) {
    if (delta.acc.count <= 0) continue;
    std::string id = AggregateId(delta.key);
    Op& op = add(mongo::kAggregates, Op::kUpdate, 0, true);
    Builder(op.filter).Str("_id", id);
    op.guard = GuardOf(guard);
    std::optional<core::Timestamp> expire_at;
    for (const auto& [window, keep] : retention.aggregates) {
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
  }

  // Alerts: only the last upsert of an id in the batch matters, and an id deleted by the batch
  // ends deleted (upserts come before deletes). An alert opened by a reading of this batch is
  // new: it is inserted (a duplicate _id means this journal was applied already), which costs
  // no lookup; others are replaced, guarded by the high-water mark (kept in the alert as
  // `hw`), so that a late copy of this journal never overwrites a later batch's state.
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
  for (std::int64_t id : order) {
    if (InBatch(cp, next_offset, id >> 6)) {  // an alert id is (message id << 6) | sensor
      Op& op = add(mongo::kAlerts, Op::kInsert, 0, false);
      op.update = AlertDoc(*last[id]);
      continue;
    }
    Op& op = add(mongo::kAlerts, Op::kReplace, 0, true);
    Builder(op.filter).Str("_id", PaddedId(id));
    op.guard = GuardOf(guard);
    op.update = AlertDoc(*last[id]);
    if (guard) {
      Builder(op.update).Doc("hw", [&](Builder& b) { b.Int64(guard->name, guard->end); });
    }
  }
  for (std::int64_t id : batch.alert_deletes) {
    Op& op = add(mongo::kAlerts, Op::kDelete, 1, false);
    Builder(op.filter).Str("_id", PaddedId(id));
  }
  return ops;
}

}  // namespace

Result<mongo::RawOutcome> MongoStore::Impl::InsertRaw(mongo::Lease& lease,
                                                      const WriteBatch& batch,
                                                      std::int64_t next_offset) {
  // Each id once: duplicates within the batch are dropped here, duplicates of stored readings by
  // the server (E11000).
  mongo::RawOutcome out;
  std::unordered_set<std::int64_t> ids;
  std::vector<Bson> docs;
  docs.reserve(batch.readings.size());
  for (const StoredReading& r : batch.readings) {
    if (!ids.insert(r.id.value).second) {
      ++out.repeated[r.reading.device_id];
      continue;
    }
    docs.push_back(RawDoc(r));
    out.unique.push_back(&r);
  }
  auto inserted = Retry([&] { return InsertMany(lease, mongo::kRaw, docs); });
  if (!inserted) return inserted.error();
  const Checkpoint* cp = batch.checkpoint ? &*batch.checkpoint : nullptr;
  for (std::uint32_t index : inserted->duplicates) {
    const StoredReading& r = *out.unique[index];
    // At or beyond the checkpoint, a stored reading comes from an attempt at this position that
    // never committed (this writer's or another's): it was not counted yet.
    if (!InBatch(cp, next_offset, r.id.value)) ++out.stored[r.reading.device_id];
  }
  return out;
}

Status MongoStore::Impl::InsertDeadLetters(mongo::Lease& lease, const WriteBatch& batch) {
  if (batch.dead_letters.empty()) return Status::Ok();
  std::vector<Bson> docs;
  docs.reserve(batch.dead_letters.size());
  for (const DeadLetter& dl : batch.dead_letters) {
    if (!ValidConsumerName(dl.consumer) || dl.partition < 0) {
      return MakeError(Errc::kInvalidArgument, "invalid dead letter consumer: " + dl.consumer);
    }
    docs.push_back(DeadLetterDoc(dl));
  }
  // A duplicate _id (E11000) is a dead letter stored already: the first copy stays.
  return Retry([&] { return InsertMany(lease, mongo::kDeadLetters, docs); }).status();
}

Status MongoStore::Impl::CommitCheckpoint(mongo::Lease& lease, const Checkpoint& cp,
                                          const std::string& cp_id, const CheckpointState& state,
                                          std::int32_t parts, const std::string& token) {
  auto coll = Coll(lease, mongo::kCheckpoints);
  Bson filter, update;
  Builder f(filter);
  f.Str("_id", cp_id);
  if (state.exists) {
    f.Int64("next_offset", state.next_offset);
  } else {
    // The first commit creates the document; one that another writer created meanwhile is not
    // matched, so the upsert tries to insert a second one and fails with E11000.
    f.Doc("next_offset", [](Builder& b) { b.Bool("$exists", false); });
  }
  Builder u(update);
  u.Doc("$set", [&](Builder& b) {
    b.Str("consumer", cp.consumer).Int32("partition", cp.partition).Int64("next_offset",
                                                                          cp.next_offset);
    if (parts > 0) {
      b.Doc("journal", [&](Builder& j) {
        j.Int64("end", cp.next_offset).Int32("parts", parts).Str("token", token);
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
}

Result<bool> MongoStore::Impl::ApplyAt(mongo::Lease& lease, const WriteBatch& batch,
                                       const std::string& cp_id, CheckpointState& state) {
  const Checkpoint& cp = *batch.checkpoint;
  const std::int64_t end = cp.next_offset;
  auto remember = [&] {
    std::lock_guard lock(checkpoints_mu);
    checkpoints[cp_id] = state;
  };
  auto forget = [&] {
    std::lock_guard lock(checkpoints_mu);
    checkpoints.erase(cp_id);
  };

  // 1. Before the commit point only what is idempotent and harmless to a writer that loses the
  // race below: raw readings and dead letters, keyed by their bus position.
  auto raw = InsertRaw(lease, batch, state.next_offset);
  if (!raw) return raw.error();
  if (Crashed("raw")) return MakeError(Errc::kUnavailable, "crash_at: raw");
  if (Status s = InsertDeadLetters(lease, batch); !s) return s.error();
  if (Crashed("dead_letters")) return MakeError(Errc::kUnavailable, "crash_at: dead_letters");

  // 2. The other effects, as ops guarded by the high-water mark of this (consumer, partition).
  const std::string name = HighWaterName(cp);
  std::vector<Op> ops =
      BuildOps(batch, *raw, Guard{name, "hw." + name, end}, state.next_offset, options.retention);

  // 3. Commit: the journal of the ops, then the checkpoint moved to `end` together with the
  // journal's mark, conditionally on the position the fence was decided at.
  std::string token;
  std::vector<Bson> parts;
  if (!ops.empty()) {
    token = instance_id + "-" + std::to_string(attempts.fetch_add(1));
    parts = SerializeJournal(cp_id, end, token, ops);
    auto written = Retry([&] { return InsertMany(lease, mongo::kJournal, parts); });
    if (!written) return written.error();
  }
  const auto part_count = static_cast<std::int32_t>(parts.size());
  Status committed =
      Retry([&] { return CommitCheckpoint(lease, cp, cp_id, state, part_count, token); });
  if (!committed) {
    if (committed.error().code != Errc::kAlreadyExists) {
      forget();  // the commit may or may not have happened: read the state next time
      return committed.error();
    }
    // The checkpoint moved: another writer committed, or this commit did and its reply was lost
    // (the retry then finds the position moved). The journal's token tells them apart.
    auto reloaded = Retry([&] { return LoadState(lease, cp_id); });
    if (!reloaded) {
      forget();
      return reloaded.error();
    }
    const bool ours = !token.empty() && reloaded->journal_token == token;
    state = *reloaded;
    remember();
    if (!ours) {
      if (!token.empty()) {
        // This attempt's journal will never be applied: remove it now rather than at the next
        // ClearJournal beyond its end.
        Bson orphan;
        Builder(orphan).Str("checkpoint", cp_id).Str("token", token);
        auto deleted = DeleteMany(lease, mongo::kJournal, orphan.get());
        if (!deleted) {
          spdlog::warn("mongo store: leaving an unused journal of {} for later: {}", cp_id,
                       deleted.error().message);
        }
      }
      return false;
    }
  } else {
    state.exists = true;
    state.next_offset = end;
    if (!ops.empty()) {
      state.journal_end = end;
      state.journal_parts = part_count;
      state.journal_token = token;
    }
    remember();
  }
  if (ops.empty()) return true;
  if (Crashed("commit")) return MakeError(Errc::kUnavailable, "crash_at: commit");

  // 4. Apply the journal, then clear it. A failure leaves the journal for the next call. Every op
  // is guarded, also on this first attempt: after a rebalance the partition's new owner may
  // find this journal pending and apply it at the same time (Redo in LoadCheckpoint), and an
  // unguarded increment of ours landing after its guarded one would count twice.
  Status s = Retry([&] { return Execute(lease, ops); });
  if (s && Crashed("applied")) return MakeError(Errc::kUnavailable, "crash_at: applied");
  if (s) s = Retry([&] { return ClearJournal(lease, cp_id, state); });
  remember();
  if (!s) return s.error();
  return true;
}

Status MongoStore::Impl::Apply(const WriteBatch& batch) {
  mongo::Lease lease(pool);
  if (!batch.checkpoint) {
    // No position to fence or journal: applied as it comes (tests and tools), each op once
    // unless a failure makes the caller try again.
    auto raw = InsertRaw(lease, batch, 0);
    if (!raw) return raw.error();
    if (Crashed("raw")) return MakeError(Errc::kUnavailable, "crash_at: raw");
    if (Status s = InsertDeadLetters(lease, batch); !s) return s;
    std::vector<Op> ops = BuildOps(batch, *raw, std::nullopt, 0, options.retention);
    return Retry([&] { return Execute(lease, ops); });
  }
  const Checkpoint& cp = *batch.checkpoint;
  if (!ValidConsumerName(cp.consumer) || cp.partition < 0) {
    return MakeError(Errc::kInvalidArgument, "invalid checkpoint name: " + cp.consumer);
  }
  const std::string cp_id = CheckpointId(cp);
  CheckpointState state;
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
  // The cached state may be stale (another writer moved the checkpoint): the commit in ApplyAt
  // compares it with the stored one and, when they differ, this decides again on what it read.
  for (int round = 1;; ++round) {
    if (state.journal_end) {
      Status s = Retry([&] { return Redo(lease, cp_id, state); });
      if (!s) return s;
      std::lock_guard lock(checkpoints_mu);
      checkpoints[cp_id] = state;
    }
    const auto stored = state.exists ? std::optional<std::int64_t>(state.next_offset)
                                     : std::nullopt;
    switch (DecideFence(cp, stored)) {
      case Fence::kSkip:
        return Status::Ok();  // applied already
      case Fence::kAbort:
        return FenceError(cp, *stored);
      case Fence::kApply:
        break;
    }
    auto committed = ApplyAt(lease, batch, cp_id, state);
    if (!committed) return committed.error();
    if (*committed) return Status::Ok();
    if (round == kCommitRounds) {
      return MakeError(Errc::kUnavailable, "the checkpoint " + cp_id +
                                               " kept moving under this batch; try again");
    }
  }
}

Result<std::optional<std::int64_t>> MongoStore::Impl::LoadCheckpoint(const std::string& consumer,
                                                                     std::int32_t partition) {
  Checkpoint cp{consumer, partition, 0, 0};
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
