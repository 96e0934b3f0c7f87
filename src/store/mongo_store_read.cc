// mongo_store_read.cc: MongoStore's queries. Every listing is newest first on (time, _id) with
// a keyset cursor, served by the indexes made in mongo_store.cc; every value in a filter is typed
// BSON built from the query's fields, never text.
#include <algorithm>
#include <unordered_map>
#include <limits>

#include "store/mongo_store_impl.h"

namespace iot::store {

using mongo::Bson;
using mongo::Builder;

namespace {

constexpr std::int64_t kMicrosPerMinute = 60'000'000;

bool IsReadingBookkeeping(std::string_view key) { return key == "_id" || key == "hw"; }

Error Corrupt(std::string_view collection, std::string_view what) {
  return MakeError(Errc::kCorruption, std::string(collection) + ": " + std::string(what));
}

// AppendRange adds {field: {$gte: from, $lt: to}} when the range has a bound.
// PrefixUpper is the smallest string above every string starting with `prefix` (nullopt: none).
std::optional<std::string> PrefixUpper(std::string next) {
  while (!next.empty() && static_cast<unsigned char>(next.back()) == 0xff) next.pop_back();
  if (next.empty()) return std::nullopt;
  next.back() = static_cast<char>(static_cast<unsigned char>(next.back()) + 1);
  return next;
}

// AppendDevice adds a query's device filter: its device_id, or the range of ids that start with
// its device_prefix (a read token's scope; the device_id indexes serve it). Returns false when
// the two contradict each other: nothing can match.
template <typename Q>
bool AppendDevice(Builder& b, const Q& q) {
  if (q.device_id) {
    if (q.device_prefix && !q.device_id->starts_with(*q.device_prefix)) return false;
    b.Str("device_id", *q.device_id);
  } else if (q.device_prefix && !q.device_prefix->empty()) {
    auto upper = PrefixUpper(*q.device_prefix);
    b.Doc("device_id", [&](Builder& r) {
      r.Str("$gte", *q.device_prefix);
      if (upper) r.Str("$lt", *upper);
    });
  }
  return true;
}

void AppendRange(Builder& b, const char* field, const TimeRange& range) {
  if (!range.from && !range.to) return;
  b.Doc(field, [&](Builder& r) {
    if (range.from) r.Date("$gte", *range.from);
    if (range.to) r.Date("$lt", *range.to);
  });
}

// AppendAfter adds the keyset condition "strictly after the cursor" in (field desc, _id desc)
// order: {$or: [{field: {$lt: t}}, {field: t, _id: {$lt: id}}]}.
template <typename AppendId>
void AppendAfter(Builder& b, const char* field, core::Timestamp t, const AppendId& append_id) {
  b.Array("$or", [&](Builder& list) {
    list.Doc("", [&](Builder& older) {
      older.Doc(field, [&](Builder& c) { c.Date("$lt", t); });
    });
    list.Doc("", [&](Builder& tie) {
      tie.Date(field, t).Doc("_id", [&](Builder& c) { append_id(c); });
    });
  });
}

Bson NewestFirst(const char* field, std::size_t limit) {
  Bson opts;
  Builder(opts)
      .Doc("sort", [&](Builder& b) { b.Int32(field, -1).Int32("_id", -1); })
      .Int64("limit", static_cast<std::int64_t>(limit) + 1);
  return opts;
}

// Cut keeps `limit` items and sets `next` from the last one when more were found.
template <typename T, typename CursorOf>
Page<T> Cut(std::vector<T> items, std::size_t limit, const CursorOf& cursor_of) {
  Page<T> page;
  if (items.size() > limit) {
    items.resize(limit);
    page.next = cursor_of(items.back());
  }
  page.items = std::move(items);
  return page;
}

Result<Device> DeviceFrom(const bson_t* doc) {
  Device d;
  bson_iter_t it;
  if (!bson_iter_init(&it, doc)) return Corrupt(mongo::kDevices, "unreadable document");
  bool has_id = false;
  while (bson_iter_next(&it)) {
    std::string_view key = bson_iter_key(&it);
    if (key == "_id") {
      if (auto s = mongo::AsString(it)) {
        d.device_id = std::string(*s);
        has_id = true;
      }
    } else if (key == "first_seen") {
      d.first_seen = mongo::AsDate(it).value_or(core::Timestamp{});
    } else if (key == "last_seen") {
      d.last_seen = mongo::AsDate(it).value_or(core::Timestamp{});
    } else if (key == "readings") {
      d.readings = mongo::AsInt64(it).value_or(0);
    } else if (key == "latest") {
      // {ts, seq, reading}: see the device update in mongo_store_write.cc.
      bson_iter_t field;
      if (bson_iter_type(&it) == BSON_TYPE_DOCUMENT && bson_iter_recurse(&it, &field) &&
          bson_iter_find(&field, "reading")) {
        Bson latest = Bson::FromIter(field);
        auto r = ReadingFrom(latest.get());
        if (!r) return r.error();
        d.latest = std::move(*r);
      }
    }
  }
  if (!has_id) return Corrupt(mongo::kDevices, "document without a string _id");
  return d;
}

}  // namespace

Result<core::Reading> ReadingFrom(const bson_t* doc) {
  core::Reading r;
  bson_iter_t it;
  if (!bson_iter_init(&it, doc)) return Corrupt(mongo::kRaw, "unreadable document");
  bool has_device = false, has_ts = false;
  while (bson_iter_next(&it)) {
    std::string_view key = bson_iter_key(&it);
    if (IsReadingBookkeeping(key)) continue;
    if (key == "device_id") {
      if (auto s = mongo::AsString(it)) {
        r.device_id = std::string(*s);
        has_device = true;
      }
    } else if (key == "ts") {
      if (auto t = mongo::AsDate(it)) {
        r.ts = *t;
        has_ts = true;
      }
    } else if (key == "lat") {
      r.lat = mongo::AsDouble(it);
    } else if (key == "lon") {
      r.lon = mongo::AsDouble(it);
    } else if (auto v = mongo::AsDouble(it)) {
      r.sensors.push_back(core::SensorValue{std::string(key), *v});
    }
  }
  if (!has_device || !has_ts) return Corrupt(mongo::kRaw, "reading without device_id or ts");
  return r;
}

Result<core::Alert> AlertFrom(const bson_t* doc) {
  core::Alert a;
  bson_iter_t it;
  if (!bson_iter_init(&it, doc)) return Corrupt(mongo::kAlerts, "unreadable document");
  auto text = [&](std::string& out) { out = std::string(mongo::AsString(it).value_or("")); };
  auto date = [&](core::Timestamp& out) { out = mongo::AsDate(it).value_or(core::Timestamp{}); };
  bool has_id = false;
  while (bson_iter_next(&it)) {
    std::string_view key = bson_iter_key(&it);
    if (key == "_id") {
      auto id_text = mongo::AsString(it);
      auto id = id_text ? ParsePaddedId(*id_text) : mongo::AsInt64(it);
      has_id = id.has_value();
      a.id = id.value_or(0);
    } else if (key == "device_id") {
      text(a.device_id);
    } else if (key == "sensor_type") {
      text(a.sensor_type);
    } else if (key == "value") {
      a.value = mongo::AsDouble(it).value_or(0);
    } else if (key == "alert_type") {
      text(a.alert_type);
    } else if (key == "severity") {
      text(a.severity);
    } else if (key == "message") {
      text(a.message);
    } else if (key == "timestamp") {
      date(a.timestamp);
    } else if (key == "status") {
      auto status = core::ParseAlertStatus(mongo::AsString(it).value_or(""));
      if (!status) return Corrupt(mongo::kAlerts, "unknown status");
      a.status = *status;
    } else if (key == "threshold") {
      a.threshold = mongo::AsDouble(it).value_or(0);
    } else if (key == "created_at") {
      date(a.created_at);
    } else if (key == "updated_at") {
      date(a.updated_at);
    } else if (key == "resolved_at") {
      a.resolved_at = mongo::AsDate(it);
    } else if (key == "count") {
      a.count = mongo::AsInt64(it).value_or(0);
    }
  }
  if (!has_id) return Corrupt(mongo::kAlerts, "alert without a decimal _id");
  return a;
}

Result<DeadLetter> DeadLetterFrom(const bson_t* doc) {
  DeadLetter dl;
  bson_iter_t it;
  if (!bson_iter_init(&it, doc)) return Corrupt(mongo::kDeadLetters, "unreadable document");
  bool has_offset = false, has_payload = false;
  while (bson_iter_next(&it)) {
    std::string_view key = bson_iter_key(&it);
    if (key == "consumer") {
      dl.consumer = std::string(mongo::AsString(it).value_or(""));
    } else if (key == "topic") {
      dl.topic = std::string(mongo::AsString(it).value_or(""));
    } else if (key == "partition") {
      dl.partition = static_cast<std::int32_t>(mongo::AsInt64(it).value_or(0));
    } else if (key == "offset") {
      auto offset = mongo::AsInt64(it);
      has_offset = offset.has_value();
      dl.offset = offset.value_or(0);
    } else if (key == "key") {
      dl.key = std::string(mongo::AsBytes(it).value_or(""));
    } else if (key == "payload") {
      auto payload = mongo::AsBytes(it);
      has_payload = payload.has_value();
      dl.payload = std::string(payload.value_or(""));
    } else if (key == "reason") {
      dl.reason = std::string(mongo::AsBytes(it).value_or(""));
    } else if (key == "attempts") {
      dl.attempts = static_cast<std::int32_t>(mongo::AsInt64(it).value_or(0));
    } else if (key == "failed_at") {
      dl.failed_at = mongo::AsDate(it).value_or(core::Timestamp{});
    }
  }
  if (!has_offset || !has_payload) {
    return Corrupt(mongo::kDeadLetters, "dead letter without offset or payload");
  }
  return dl;
}

Result<std::vector<core::Alert>> MongoStore::OpenAlerts() {
  Bson filter;
  Builder(filter).Doc("status", [](Builder& b) {
    b.Array("$in", [](Builder& list) { list.Str("", "pending").Str("", "active"); });
  });
  mongo::Lease lease(impl_->pool);
  std::vector<core::Alert> out;
  Status s = impl_->Retry([&] {
    out.clear();
    return impl_->Find(lease, mongo::kAlerts, filter.get(), nullptr, [&](const bson_t* doc) {
      auto a = AlertFrom(doc);
      if (!a) return Status(a.error());
      out.push_back(std::move(*a));
      return Status::Ok();
    });
  });
  if (!s) return s.error();
  return out;
}

Result<Page<StoredReading>> MongoStore::Telemetry(const TelemetryQuery& q) {
  Bson filter;
  Builder b(filter);
  if (!AppendDevice(b, q)) return Page<StoredReading>{};
  AppendRange(b, "ts", q.range);
  if (q.after) {
    AppendAfter(b, "ts", core::FromUnixMicros(q.after->ts_us),
                [&](Builder& c) { c.Int64("$lt", q.after->id); });
  }
  Bson opts = NewestFirst("ts", q.limit);
  mongo::Lease lease(impl_->pool);
  std::vector<StoredReading> items;
  Status s = impl_->Retry([&] {
    items.clear();
    return impl_->Find(lease, mongo::kRaw, filter.get(), opts.get(), [&](const bson_t* doc) {
      bson_iter_t it;
      if (!mongo::Find(doc, "_id", &it)) return Status(Corrupt(mongo::kRaw, "no _id"));
      auto id = mongo::AsInt64(it);
      auto r = ReadingFrom(doc);
      if (!id || !r) return Status(Corrupt(mongo::kRaw, "unreadable reading"));
      items.push_back(StoredReading{core::MessageId{*id}, std::move(*r)});
      return Status::Ok();
    });
  });
  if (!s) return s.error();
  return Cut(std::move(items), q.limit, [](const StoredReading& r) {
    return Cursor{core::ToUnixMicros(r.reading.ts), r.id.value, {}};
  });
}

Result<Page<Aggregate>> MongoStore::Aggregates(const AggregateQuery& q) {
  Bson filter;
  Builder b(filter);
  if (!AppendDevice(b, q)) return Page<Aggregate>{};
  if (q.sensor_type) b.Str("sensor_type", *q.sensor_type);
  if (q.window) b.Str("window", core::FormatDuration(*q.window));
  AppendRange(b, "timestamp", q.range);
  if (q.after) {
    AppendAfter(b, "timestamp", core::FromUnixMicros(q.after->ts_us),
                [&](Builder& c) { c.Str("$lt", q.after->key); });
  }
  Bson opts = NewestFirst("timestamp", q.limit);
  mongo::Lease lease(impl_->pool);
  std::vector<std::pair<Aggregate, std::string>> items;
  Status s = impl_->Retry([&] {
    items.clear();
    return impl_->Find(lease, mongo::kAggregates, filter.get(), opts.get(),
                       [&](const bson_t* doc) {
      Aggregate a;
      std::string id;
      bson_iter_t it;
      if (!bson_iter_init(&it, doc)) return Status(Corrupt(mongo::kAggregates, "unreadable"));
      while (bson_iter_next(&it)) {
        std::string_view key = bson_iter_key(&it);
        if (key == "_id") {
          id = std::string(mongo::AsString(it).value_or(""));
        } else if (key == "device_id") {
          a.key.device_id = std::string(mongo::AsString(it).value_or(""));
        } else if (key == "sensor_type") {
          a.key.sensor_type = std::string(mongo::AsString(it).value_or(""));
        } else if (key == "window") {
          auto w = core::ParseDuration(mongo::AsString(it).value_or(""));
          if (!w) return Status(Corrupt(mongo::kAggregates, "bad window"));
          a.key.window = *w;
        } else if (key == "timestamp") {
          a.key.window_start = mongo::AsDate(it).value_or(core::Timestamp{});
        } else if (key == "count") {
          a.acc.count = mongo::AsInt64(it).value_or(0);
        } else if (key == "sum") {
          a.acc.sum = mongo::AsDouble(it).value_or(0);
        } else if (key == "min") {
          a.acc.min = mongo::AsDouble(it).value_or(a.acc.min);
        } else if (key == "max") {
          a.acc.max = mongo::AsDouble(it).value_or(a.acc.max);
        }
      }
      items.emplace_back(std::move(a), std::move(id));
      return Status::Ok();
    });
  });
  if (!s) return s.error();
  auto page = Cut(std::move(items), q.limit, [](const std::pair<Aggregate, std::string>& a) {
    return Cursor{core::ToUnixMicros(a.first.key.window_start), 0, a.second};
  });
  Page<Aggregate> out;
  out.next = std::move(page.next);
  out.items.reserve(page.items.size());
  for (auto& [a, id] : page.items) out.items.push_back(std::move(a));
  return out;
}

// AttachAcks fills in the acknowledgements of `alerts` from alert_acks, with one query (the
// collection holds only acknowledged alerts: a handful, so FerretDB's scan of it for $in is cheap).
Status MongoStore::Impl::AttachAcks(mongo::Lease& lease, std::vector<core::Alert>& alerts) {
  if (alerts.empty()) return Status::Ok();
  std::unordered_map<std::string, core::Alert*> by_id;
  Bson filter;
  Builder(filter).Doc("_id", [&](Builder& b) {
    b.Array("$in", [&](Builder& list) {
      for (core::Alert& a : alerts) {
        auto [it, inserted] = by_id.emplace(PaddedId(a.id), &a);
        if (inserted) list.Str("", it->first);
      }
    });
  });
  return Find(lease, mongo::kAlertAcks, filter.get(), nullptr, [&](const bson_t* doc) {
    bson_iter_t it;
    if (!bson_iter_init(&it, doc)) return Status(Corrupt(mongo::kAlertAcks, "unreadable"));
    core::AlertAck ack;
    core::Alert* alert = nullptr;
    while (bson_iter_next(&it)) {
      std::string_view key = bson_iter_key(&it);
      if (key == "_id") {
        auto found = by_id.find(std::string(mongo::AsString(it).value_or("")));
        if (found != by_id.end()) alert = found->second;
      } else if (key == "at") {
        ack.at = mongo::AsDate(it).value_or(core::Timestamp{});
      } else if (key == "by") {
        ack.by = std::string(mongo::AsString(it).value_or(""));
      } else if (key == "note") {
        ack.note = std::string(mongo::AsString(it).value_or(""));
      }
    }
    if (alert) alert->ack = std::move(ack);
    return Status::Ok();
  });
}

Result<std::optional<core::Alert>> MongoStore::FindAlert(std::int64_t id) {
  Bson filter;
  Builder(filter).Str("_id", PaddedId(id));
  mongo::Lease lease(impl_->pool);
  std::vector<core::Alert> found;
  Status s = impl_->Retry([&] {
    found.clear();
    Status read = impl_->Find(lease, mongo::kAlerts, filter.get(), nullptr,
                              [&](const bson_t* doc) {
                                auto a = AlertFrom(doc);
                                if (!a) return Status(a.error());
                                if (a->status != core::AlertStatus::kPending) {
                                  found.push_back(std::move(*a));
                                }
                                return Status::Ok();
                              });
    if (!read) return read;
    return impl_->AttachAcks(lease, found);
  });
  if (!s) return s.error();
  if (found.empty()) return std::optional<core::Alert>();
  return std::optional<core::Alert>(std::move(found.front()));
}

Result<std::optional<core::Alert>> MongoStore::Acknowledge(std::int64_t id,
                                                           const core::AlertAck& ack) {
  auto alert = FindAlert(id);
  if (!alert || !*alert || (*alert)->ack) return alert;
  // First acknowledgement wins: $setOnInsert writes nothing when one exists; two concurrent
  // upserts of one _id may race to E11000, which means another one was stored first.
  Bson filter, update, opts;
  Builder(filter).Str("_id", PaddedId(id));
  Builder(update).Doc("$setOnInsert", [&](Builder& b) {
    b.Date("at", ack.at).Str("by", ack.by).Str("note", ack.note);
  });
  Builder(opts).Bool("upsert", true);
  mongo::Lease lease(impl_->pool);
  Status s = impl_->Retry([&]() -> Status {
    auto coll = impl_->Coll(lease, mongo::kAlertAcks);
    bson_error_t error;
    if (!mongoc_collection_update_one(coll.get(), filter.get(), update.get(), opts.get(), nullptr,
                                      &error) &&
        error.code != mongo::kDuplicateKey) {
      return mongo::ClassifyError(error, "acknowledging alert " + std::to_string(id));
    }
    return Status::Ok();
  });
  if (!s) return s.error();
  return FindAlert(id);
}

Result<Page<core::Alert>> MongoStore::Alerts(const AlertQuery& q) {
  Bson filter;
  Builder b(filter);
  if (!AppendDevice(b, q)) return Page<core::Alert>{};
  if (q.status) {
    b.Str("status", core::AlertStatusName(*q.status));
  } else {
    b.Doc("status", [](Builder& s) {
      s.Array("$in", [](Builder& list) { list.Str("", "active").Str("", "resolved"); });
    });
  }
  AppendRange(b, "created_at", q.range);
  if (q.after) {
    AppendAfter(b, "created_at", core::FromUnixMicros(q.after->ts_us),
                [&](Builder& c) { c.Str("$lt", PaddedId(q.after->id)); });
  }
  Bson opts = NewestFirst("created_at", q.limit);
  mongo::Lease lease(impl_->pool);
  std::vector<core::Alert> items;
  Status s = impl_->Retry([&] {
    items.clear();
    return impl_->Find(lease, mongo::kAlerts, filter.get(), opts.get(), [&](const bson_t* doc) {
      auto a = AlertFrom(doc);
      if (!a) return Status(a.error());
      items.push_back(std::move(*a));
      return Status::Ok();
    });
  });
  if (!s) return s.error();
  if (Status acks = impl_->Retry([&] { return impl_->AttachAcks(lease, items); }); !acks) {
    return acks.error();
  }
  return Cut(std::move(items), q.limit, [](const core::Alert& a) {
    return Cursor{core::ToUnixMicros(a.created_at), a.id, {}};
  });
}

Result<Page<DeadLetter>> MongoStore::DeadLetters(const DeadLetterQuery& q) {
  Bson filter;
  Builder b(filter);
  if (q.consumer) b.Str("consumer", *q.consumer);
  AppendRange(b, "failed_at", q.range);
  if (q.after) {
    AppendAfter(b, "failed_at", core::FromUnixMicros(q.after->ts_us),
                [&](Builder& c) { c.Str("$lt", q.after->key); });
  }
  Bson opts = NewestFirst("failed_at", q.limit);
  mongo::Lease lease(impl_->pool);
  std::vector<std::pair<DeadLetter, std::string>> items;
  Status s = impl_->Retry([&] {
    items.clear();
    return impl_->Find(lease, mongo::kDeadLetters, filter.get(), opts.get(),
                       [&](const bson_t* doc) {
      bson_iter_t it;
      auto id = mongo::Find(doc, "_id", &it) ? mongo::AsString(it) : std::nullopt;
      if (!id) return Status(Corrupt(mongo::kDeadLetters, "dead letter without a string _id"));
      auto dl = DeadLetterFrom(doc);
      if (!dl) return Status(dl.error());
      items.emplace_back(std::move(*dl), std::string(*id));
      return Status::Ok();
    });
  });
  if (!s) return s.error();
  auto page = Cut(std::move(items), q.limit, [](const std::pair<DeadLetter, std::string>& d) {
    return Cursor{core::ToUnixMicros(d.first.failed_at), 0, d.second};
  });
  Page<DeadLetter> out;
  out.next = std::move(page.next);
  out.items.reserve(page.items.size());
  for (auto& [dl, id] : page.items) out.items.push_back(std::move(dl));
  return out;
}

Result<std::optional<Device>> MongoStore::FindDevice(const std::string& device_id) {
  Bson filter;
  Builder(filter).Str("_id", device_id);
  Bson opts;
  Builder(opts).Int64("limit", 1);
  mongo::Lease lease(impl_->pool);
  std::optional<Device> found;
  Status s = impl_->Retry([&] {
    found.reset();
    return impl_->Find(lease, mongo::kDevices, filter.get(), opts.get(), [&](const bson_t* doc) {
      auto d = DeviceFrom(doc);
      if (!d) return Status(d.error());
      found = std::move(*d);
      return Status::Ok();
    });
  });
  if (!s) return s.error();
  return found;
}

Result<std::vector<Device>> MongoStore::Devices(const DeviceQuery& q) {
  Bson filter;
  Builder b(filter);
  // Ascending byte order of _id; a prefix is the range [prefix, prefix with its last byte + 1).
  std::optional<std::string> lower, upper;
  if (q.prefix && !q.prefix->empty()) {
    lower = *q.prefix;
    std::string next = *q.prefix;
    while (!next.empty() && static_cast<unsigned char>(next.back()) == 0xff) next.pop_back();
    if (!next.empty()) {
      next.back() = static_cast<char>(static_cast<unsigned char>(next.back()) + 1);
      upper = next;
    }
  }
  if (lower || upper || q.after) {
    b.Doc("_id", [&](Builder& r) {
      if (q.after && (!lower || *q.after >= *lower)) {
        r.Str("$gt", *q.after);
      } else if (lower) {
        r.Str("$gte", *lower);
      }
      if (upper) r.Str("$lt", *upper);
    });
  }
  Bson opts;
  Builder(opts)
      .Doc("sort", [](Builder& s) { s.Int32("_id", 1); })
      .Int64("limit", static_cast<std::int64_t>(q.limit));
  mongo::Lease lease(impl_->pool);
  std::vector<Device> out;
  Status s = impl_->Retry([&] {
    out.clear();
    return impl_->Find(lease, mongo::kDevices, filter.get(), opts.get(), [&](const bson_t* doc) {
      auto d = DeviceFrom(doc);
      if (!d) return Status(d.error());
      out.push_back(std::move(*d));
      return Status::Ok();
    });
  });
  if (!s) return s.error();
  return out;
}

Result<Stats> MongoStore::GetStats(core::Timestamp now) {
  mongo::Lease lease(impl_->pool);
  Stats stats;
  auto count = [&](const char* collection, const bson_t* filter, std::int64_t& out) {
    auto n = impl_->Retry([&] { return impl_->Count(lease, collection, filter); });
    if (!n) return n.status();
    out = *n;
    return Status::Ok();
  };
  Bson fired, active;
  Builder(fired).Doc("status", [](Builder& s) {
    s.Array("$in", [](Builder& list) { list.Str("", "active").Str("", "resolved"); });
  });
  Builder(active).Str("status", "active");
  if (Status s = count(mongo::kDevices, nullptr, stats.devices); !s) return s.error();
  if (Status s = count(mongo::kRaw, nullptr, stats.readings); !s) return s.error();
  if (Status s = count(mongo::kAggregates, nullptr, stats.aggregates); !s) return s.error();
  if (Status s = count(mongo::kAlerts, fired.get(), stats.alerts); !s) return s.error();
  if (Status s = count(mongo::kAlerts, active.get(), stats.active_alerts); !s) return s.error();

  // The ingest rate: the last complete minutes, at most 5, none before the first minute with
  // an ingest count.
  std::int64_t now_us = core::ToUnixMicros(now);
  std::int64_t current = now_us / kMicrosPerMinute - (now_us % kMicrosPerMinute < 0 ? 1 : 0);
  std::int64_t first = std::numeric_limits<std::int64_t>::max();  // max: no minute yet
  std::int64_t total = 0;
  Bson all;
  Bson first_opts;
  Builder(first_opts)
      .Doc("sort", [](Builder& s) { s.Int32("_id", 1); })
      .Int64("limit", 1);
  Status s = impl_->Retry([&] {
    first = std::numeric_limits<std::int64_t>::max();
    return impl_->Find(lease, mongo::kMinutes, all.get(), first_opts.get(),
                       [&](const bson_t* doc) {
      bson_iter_t it;
      if (mongo::Find(doc, "_id", &it)) {
        first = ParsePaddedId(mongo::AsString(it).value_or("")).value_or(first);
      }
      return Status::Ok();
    });
  });
  if (!s) return s.error();
  if (first != std::numeric_limits<std::int64_t>::max()) {
    std::int64_t start = std::max(current - 5, first);
    if (start < current) {
      Bson window;
      Builder(window).Doc("_id", [&](Builder& r) {
        r.Str("$gte", PaddedId(start, 12)).Str("$lt", PaddedId(current, 12));
      });
      s = impl_->Retry([&] {
        total = 0;
        return impl_->Find(lease, mongo::kMinutes, window.get(), nullptr, [&](const bson_t* doc) {
          bson_iter_t it;
          if (mongo::Find(doc, "n", &it)) total += mongo::AsInt64(it).value_or(0);
          return Status::Ok();
        });
      });
      if (!s) return s.error();
      stats.ingest_rate_per_s =
          static_cast<double>(total) / static_cast<double>((current - start) * 60);
    }
  }
  return stats;
}

}  // namespace iot::store
