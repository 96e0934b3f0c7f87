// mongo_store.cc: MongoStore's connections, retries, indexes, retention and health.
// The write path is in mongo_store_write.cc, the queries in mongo_store_read.cc.
#include "store/mongo_store.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <mutex>
#include <random>

#include "store/mongo_store_impl.h"

namespace iot::store {

using mongo::Bson;
using mongo::Builder;
using mongo::Reply;

namespace mongo {

namespace {

// Server error codes that mean "try again": network, elections, shutdown, time limits.
bool IsTransientServerCode(std::uint32_t code) {
  switch (code) {
    case 6:      // HostUnreachable
    case 7:      // HostNotFound
    case 50:     // MaxTimeMSExpired
    case 89:     // NetworkTimeout
    case 91:     // ShutdownInProgress
    case 112:    // WriteConflict
    case 133:    // FailedToSatisfyReadPreference
    case 189:    // PrimarySteppedDown
    case 262:    // ExceededTimeLimit
    case 9001:   // SocketException
    case 10107:  // NotWritablePrimary
    case 11600:  // InterruptedAtShutdown
    case 11602:  // InterruptedDueToReplStateChange
    case 13435:  // NotPrimaryNoSecondaryOk
    case 13436:  // NotPrimaryOrSecondary
      return true;
    default:
      return false;
  }
}

}  // namespace

Error ClassifyError(const bson_error_t& error, std::string_view what) {
  bool transient = false;
  switch (error.domain) {
    case MONGOC_ERROR_STREAM:
    case MONGOC_ERROR_SERVER_SELECTION:
    case MONGOC_ERROR_PROTOCOL:
      transient = true;
      break;
    case MONGOC_ERROR_CLIENT:
      // The pool or a client is shutting down, or an authentication handshake failed midway.
      transient = error.code != MONGOC_ERROR_CLIENT_AUTHENTICATE;
      break;
    case MONGOC_ERROR_SERVER:
    case MONGOC_ERROR_QUERY:
    case MONGOC_ERROR_COMMAND:
    case MONGOC_ERROR_WRITE_CONCERN:
      transient = IsTransientServerCode(error.code);
      break;
    default:
      break;
  }
  return MakeError(transient ? Errc::kUnavailable : Errc::kInternal,
                   std::string(what) + ": " + error.message);
}

}  // namespace mongo

namespace {

std::once_flag g_mongoc_init;

// LogToSpdlog sends the driver's log to ours: errors and warnings as such, the rest at debug.
void LogToSpdlog(mongoc_log_level_t level, const char* domain, const char* message, void*) {
  // FerretDB has no endSessions command; the driver warns about it whenever a pool closes.
  if (std::string_view(message).find("endSessions") != std::string_view::npos) return;
  switch (level) {
    case MONGOC_LOG_LEVEL_ERROR:
    case MONGOC_LOG_LEVEL_CRITICAL:
      spdlog::error("mongoc {}: {}", domain, message);
      break;
    case MONGOC_LOG_LEVEL_WARNING:
      spdlog::warn("mongoc {}: {}", domain, message);
      break;
    default:
      spdlog::debug("mongoc {}: {}", domain, message);
      break;
  }
}

// Reported counts what a bulk write's reply accounts for: statements that inserted, matched,
// upserted or removed a document.
std::int64_t Reported(const bson_t* reply) {
  std::int64_t n = 0;
  for (const char* field : {"nInserted", "nMatched", "nUpserted", "nRemoved"}) {
    bson_iter_t it;
    if (mongo::Find(reply, field, &it)) n += mongo::AsInt64(it).value_or(0);
  }
  return n;
}

// FailedBulk is a bulk write that reported write errors, all of them duplicate keys.
struct FailedBulk {
  mongo::BulkOutcome outcome;
  // complete is false when the reply does not account for every statement: the server stopped
  // at a duplicate (FerretDB 1.x ends an update command at its first failing statement, reports
  // that one at index 0 whichever it was, and leaves the statements after it undone), or the
  // driver hid a network error of a later command of the bulk behind the duplicate it reports.
  bool complete = true;
};

// FinishFailedBulk decides about a bulk write that reported a failure: acceptable when every
// write error is a duplicate key (the op was done before) and no write concern failed. The bulk
// had `statements` statements; `countable` says each of them is an insert or an upsert, which
// the reply counts as inserted, matched or upserted unless it failed, so that completeness can
// be checked (a remove or a plain update may rightly affect nothing).
Result<FailedBulk> FinishFailedBulk(const bson_t* reply, const bson_error_t& error,
                                    const char* collection, std::size_t statements,
                                    bool countable) {
  FailedBulk failed_bulk;
  auto failed = [&] { return mongo::ClassifyError(error, std::string("writing to ") + collection); };
  bson_iter_t concern, item;
  if (mongo::Find(reply, "writeConcernErrors", &concern) &&
      bson_iter_type(&concern) == BSON_TYPE_ARRAY && bson_iter_recurse(&concern, &item) &&
      bson_iter_next(&item)) {
    return failed();
  }
  bson_iter_t errors;
  if (!mongo::Find(reply, "writeErrors", &errors) || bson_iter_type(&errors) != BSON_TYPE_ARRAY ||
      !bson_iter_recurse(&errors, &item)) {
    return failed();  // no write errors: the whole command failed (network, server)
  }
  auto& duplicates = failed_bulk.outcome.duplicates;
  while (bson_iter_next(&item)) {
    bson_iter_t field;
    std::int64_t code = 0, index = -1;
    if (bson_iter_recurse(&item, &field) && bson_iter_find(&field, "code")) {
      code = mongo::AsInt64(field).value_or(0);
    }
    if (bson_iter_recurse(&item, &field) && bson_iter_find(&field, "index")) {
      index = mongo::AsInt64(field).value_or(-1);
    }
    if (code != mongo::kDuplicateKey || index < 0) return failed();
    duplicates.push_back(static_cast<std::uint32_t>(index));
  }
  if (duplicates.empty()) return failed();
  // A single statement's report is exact; otherwise the counts must add up.
  failed_bulk.complete =
      statements == 1 ||
      (countable && Reported(reply) + static_cast<std::int64_t>(duplicates.size()) ==
                        static_cast<std::int64_t>(statements));
  return failed_bulk;
}

bool ValidDatabaseName(const std::string& name) {
  if (name.empty() || name.size() > 63) return false;
  return name.find_first_of("/\\. \"$*<>:|?") == std::string::npos;
}

}  // namespace

std::string PaddedId(std::int64_t value, int width) {
  std::string digits = std::to_string(value < 0 ? 0 : value);
  if (static_cast<int>(digits.size()) < width) {
    digits.insert(0, static_cast<std::size_t>(width) - digits.size(), '0');
  }
  return digits;
}

std::optional<std::int64_t> ParsePaddedId(std::string_view text) {
  std::int64_t value = 0;
  auto [p, e] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (e != std::errc() || p != text.data() + text.size() || text.empty()) return std::nullopt;
  return value;
}

std::string AggregateId(const core::AggregateKey& key) {
  std::string id = key.device_id;
  id += '/';
  id += key.sensor_type;
  id += '/';
  id += core::FormatDuration(key.window);
  id += '/';
  id += core::FormatIso8601(key.window_start);
  return id;
}

MongoStore::Impl::~Impl() {
  {
    std::lock_guard lock(health_mu);
    stopping = true;
  }
  monitor_cv.notify_all();
  if (monitor.joinable()) monitor.join();
  if (pool != nullptr) mongoc_client_pool_destroy(pool);
  if (uri != nullptr) mongoc_uri_destroy(uri);
}

void MongoStore::Impl::NoteFailure(const Error& e) {
  reachable.store(false);
  std::lock_guard lock(health_mu);
  last_error = e.message;
}

void MongoStore::Impl::NoteSuccess() { reachable.store(true); }

mongo::Collection MongoStore::Impl::Coll(mongo::Lease& lease, const char* name) {
  return mongo::Collection(
      mongoc_client_get_collection(lease.client(), options.database.c_str(), name));
}

Status MongoStore::Impl::Connect() {
  std::call_once(g_mongoc_init, [] {
    mongoc_init();
    mongoc_log_set_handler(LogToSpdlog, nullptr);
  });
  if (!ValidDatabaseName(options.database)) {
    return MakeError(Errc::kInvalidArgument, "MONGO_DB: not a valid database name: \"" +
                                                 options.database + "\"");
  }
  bson_error_t error;
  uri = mongoc_uri_new_with_error(options.url.c_str(), &error);
  if (uri == nullptr) {
    return MakeError(Errc::kInvalidArgument, std::string("MONGO_URL: ") + error.message);
  }
  // Our timeouts, unless the URL sets its own.
  auto set_default = [&](const char* key, std::chrono::milliseconds value) {
    if (mongoc_uri_get_option_as_int32(uri, key, -1) == -1) {
      mongoc_uri_set_option_as_int32(uri, key, static_cast<std::int32_t>(value.count()));
    }
  };
  set_default(MONGOC_URI_CONNECTTIMEOUTMS, options.connect_timeout);
  set_default(MONGOC_URI_SERVERSELECTIONTIMEOUTMS, options.server_selection_timeout);
  set_default(MONGOC_URI_SOCKETTIMEOUTMS, options.socket_timeout);
  if (mongoc_uri_get_appname(uri) == nullptr) mongoc_uri_set_appname(uri, options.app_name.c_str());

  pool = mongoc_client_pool_new_with_error(uri, &error);
  if (pool == nullptr) {
    return MakeError(Errc::kInvalidArgument, std::string("MONGO_URL: ") + error.message);
  }
  mongoc_client_pool_set_error_api(pool, MONGOC_ERROR_API_VERSION_2);
  mongoc_client_pool_max_size(pool, static_cast<std::uint32_t>(std::max<std::size_t>(
                                        1, options.max_pool_size)));
  return Status::Ok();
}

Result<Bson> MongoStore::Impl::Command(mongo::Lease& lease, const bson_t* command,
                                       std::string_view what) {
  mongo::Reply reply;
  bson_error_t error;
  bool ok = mongoc_client_command_simple(lease.client(), options.database.c_str(), command,
                                         nullptr, reply.out(), &error);
  if (!ok) return mongo::ClassifyError(error, what);
  return Bson::Copy(reply.get());
}

Status MongoStore::Impl::CreateIndexes() {
  struct Index {
    const char* collection;
    const char* name;
    std::vector<std::pair<const char*, int>> keys;
    bool unique = false;
    std::optional<std::int64_t> ttl_seconds;
  };
  auto Plain = [](const char* collection, const char* name,
                  std::vector<std::pair<const char*, int>> keys) {
    return Index{collection, name, std::move(keys), false, std::nullopt};
  };
  std::vector<Index> indexes = {
      // The seed's three.
      Plain(mongo::kRaw, "device_id_1_ts_-1", {{"device_id", 1}, {"ts", -1}}),
      Plain(mongo::kAlerts, "created_at_-1", {{"created_at", -1}}),
      Plain(mongo::kAggregates, "device_id_1_timestamp_-1", {{"device_id", 1}, {"timestamp", -1}}),
      // What the newest-first listings with their (time, _id) cursors need.
      Plain(mongo::kRaw, "device_id_1_ts_-1__id_-1", {{"device_id", 1}, {"ts", -1}, {"_id", -1}}),
      Plain(mongo::kRaw, "ts_-1__id_-1", {{"ts", -1}, {"_id", -1}}),
      Plain(mongo::kAggregates, "device_id_1_timestamp_-1__id_-1",
       {{"device_id", 1}, {"timestamp", -1}, {"_id", -1}}),
      Plain(mongo::kAggregates, "timestamp_-1__id_-1", {{"timestamp", -1}, {"_id", -1}}),
      Plain(mongo::kAlerts, "created_at_-1__id_-1", {{"created_at", -1}, {"_id", -1}}),
      Plain(mongo::kAlerts, "device_id_1_created_at_-1__id_-1",
       {{"device_id", 1}, {"created_at", -1}, {"_id", -1}}),
      Plain(mongo::kAlerts, "status_1", {{"status", 1}}),
      Plain(mongo::kJournal, "checkpoint_1", {{"checkpoint", 1}}),
      // GET /dlq, newest first, of every consumer or one (the _id makes each dead letter unique).
      Plain(mongo::kDeadLetters, "failed_at_-1__id_-1", {{"failed_at", -1}, {"_id", -1}}),
      Plain(mongo::kDeadLetters, "consumer_1_failed_at_-1__id_-1",
            {{"consumer", 1}, {"failed_at", -1}, {"_id", -1}}),
  };
  // Retention: TTL indexes where the server has them (see Expire for the fallback).
  if (options.retention.raw) {
    indexes.push_back({mongo::kRaw, "ts_ttl", {{"ts", 1}}, false,
                       std::chrono::duration_cast<std::chrono::seconds>(*options.retention.raw)
                           .count()});
  }
  if (!options.retention.aggregates.empty()) {
    indexes.push_back({mongo::kAggregates, "expire_at_ttl", {{"expire_at", 1}}, false, 0});
  }

  mongo::Lease lease(pool);
  ttl = true;
  for (const auto& index : indexes) {
    auto build = [&](bool with_ttl) {
      Bson cmd;
      Builder(cmd).Str("createIndexes", index.collection).Array("indexes", [&](Builder& list) {
        list.Doc("", [&](Builder& spec) {
          spec.Doc("key", [&](Builder& key) {
            for (const auto& [field, order] : index.keys) key.Int32(field, order);
          });
          spec.Str("name", index.name);
          if (index.unique) spec.Bool("unique", true);
          if (with_ttl && index.ttl_seconds) spec.Int64("expireAfterSeconds", *index.ttl_seconds);
        });
      });
      return cmd;
    };
    bool with_ttl = index.ttl_seconds.has_value() && ttl;
    Bson cmd = build(with_ttl);
    auto reply = Command(lease, cmd.get(), std::string("creating index ") + index.name);
    if (!reply && with_ttl && reply.error().message.find("not implemented") != std::string::npos) {
      // FerretDB 1.x: no TTL indexes. Keep a plain index for Expire's periodic deletes.
      spdlog::info("the MongoDB server has no TTL indexes; expired data is deleted periodically");
      ttl = false;
      cmd = build(false);
      reply = Command(lease, cmd.get(), std::string("creating index ") + index.name);
    }
    if (!reply && with_ttl &&
        (reply.error().message.find("already exists with different options") !=
             std::string::npos ||
         reply.error().message.find("Index with name") != std::string::npos)) {
      // The retention changed since the index was made: change the index in place.
      Bson mod;
      Builder(mod).Str("collMod", index.collection).Doc("index", [&](Builder& b) {
        b.Str("name", index.name).Int64("expireAfterSeconds", *index.ttl_seconds);
      });
      reply = Command(lease, mod.get(), std::string("changing index ") + index.name);
    }
    if (!reply) return reply.error();
  }
  if (!options.retention.raw) {
    // RAW_RETENTION was turned off: a TTL index left from before would keep deleting.
    Bson drop;
    Builder(drop).Str("dropIndexes", mongo::kRaw).Str("index", "ts_ttl");
    (void)Command(lease, drop.get(), "dropping index ts_ttl");  // absent: nothing to do
  }
  if (!options.retention.raw && options.retention.aggregates.empty()) ttl = false;
  return Status::Ok();
}

void MongoStore::Impl::Monitor() {
  // A client of its own that tries a server once and gives up after a short connect timeout,
  // so an outage shows within about a second instead of after the pool's server selection
  // timeout (pooled clients wait for the server to come back).
  mongoc_uri_t* probe_uri = mongoc_uri_copy(uri);
  mongoc_uri_set_option_as_bool(probe_uri, MONGOC_URI_SERVERSELECTIONTRYONCE, true);
  mongoc_uri_set_option_as_int32(probe_uri, MONGOC_URI_CONNECTTIMEOUTMS, 1000);
  mongoc_uri_set_option_as_int32(probe_uri, MONGOC_URI_SOCKETTIMEOUTMS, 2000);
  mongoc_uri_set_option_as_int32(probe_uri, MONGOC_URI_HEARTBEATFREQUENCYMS, 500);
  bson_error_t error;
  mongoc_client_t* client = mongoc_client_new_from_uri_with_error(probe_uri, &error);
  mongoc_uri_destroy(probe_uri);
  if (client != nullptr) mongoc_client_set_error_api(client, MONGOC_ERROR_API_VERSION_2);

  std::unique_lock lock(health_mu);
  while (!stopping) {
    monitor_cv.wait_for(lock, std::chrono::seconds(1), [&] { return stopping; });
    if (stopping) break;
    lock.unlock();
    Bson ping;
    Builder(ping).Int32("ping", 1);
    Reply reply;
    bool ok = client != nullptr &&
              mongoc_client_command_simple(client, options.database.c_str(), ping.get(), nullptr,
                                           reply.out(), &error);
    server_down.store(!ok);
    if (ok) {
      NoteSuccess();
    } else {
      NoteFailure(mongo::ClassifyError(error, "ping"));
    }
    lock.lock();
  }
  lock.unlock();
  if (client != nullptr) mongoc_client_destroy(client);
}

namespace {

// UnorderedBulk is one unordered bulk write on a collection; filled by the caller, run once.
class UnorderedBulk {
 public:
  explicit UnorderedBulk(mongoc_collection_t* coll) {
    Bson opts;
    Builder(opts).Bool("ordered", false);
    bulk_ = mongoc_collection_create_bulk_operation_with_opts(coll, opts.get());
    Builder(upsert_).Bool("upsert", true);
  }
  ~UnorderedBulk() { mongoc_bulk_operation_destroy(bulk_); }
  UnorderedBulk(const UnorderedBulk&) = delete;
  UnorderedBulk& operator=(const UnorderedBulk&) = delete;

  Status Insert(const bson_t* doc) {
    return Added(mongoc_bulk_operation_insert_with_opts(bulk_, doc, nullptr, &error_), true);
  }
  Status Update(const bson_t* filter, const bson_t* update, bool upsert) {
    return Added(mongoc_bulk_operation_update_one_with_opts(bulk_, filter, update, Opts(upsert),
                                                            &error_),
                 upsert);
  }
  Status Replace(const bson_t* filter, const bson_t* replacement, bool upsert) {
    return Added(mongoc_bulk_operation_replace_one_with_opts(bulk_, filter, replacement,
                                                             Opts(upsert), &error_),
                 upsert);
  }
  Status Remove(const bson_t* filter) {
    return Added(mongoc_bulk_operation_remove_one_with_opts(bulk_, filter, nullptr, &error_),
                 false);
  }

  // Execute sends it; duplicate keys are reported in the outcome (see FinishFailedBulk).
  Result<FailedBulk> Execute(const char* collection) {
    mongo::Reply reply;
    bson_error_t error;
    if (mongoc_bulk_operation_execute(bulk_, reply.out(), &error) != 0) return FailedBulk{};
    return FinishFailedBulk(reply.get(), error, collection, statements_, countable_);
  }

 private:
  const bson_t* Opts(bool upsert) const { return upsert ? upsert_.get() : nullptr; }
  Status Added(bool ok, bool countable) {
    if (!ok) return MakeError(Errc::kInternal, std::string("bulk write: ") + error_.message);
    ++statements_;
    countable_ = countable_ && countable;
    return Status::Ok();
  }

  mongoc_bulk_operation_t* bulk_;
  Bson upsert_;
  bson_error_t error_{};
  std::size_t statements_ = 0;
  bool countable_ = true;  // every statement an insert or an upsert
};

// Idempotent says whether running `op` again after it was done changes nothing: a guarded op
// (its high-water mark stops it), an insert (a duplicate), a replacement or a delete.
bool Idempotent(const mongo::Op& op) {
  return op.kind != mongo::Op::kUpdate || !bson_empty(op.guard.get());
}

// BulkCommand runs ops[begin, end) as one unordered bulk write. When the reply does not account
// for every op (a duplicate stopped the server part way, see FailedBulk), the ops are run again
// one per command, whose reply is exact: those done already are duplicates again (their guard),
// the others are done now.
Result<mongo::BulkOutcome> BulkCommand(mongoc_collection_t* coll, const char* collection,
                                       const std::vector<const mongo::Op*>& ops,
                                       std::size_t begin, std::size_t end) {
  UnorderedBulk bulk(coll);
  for (std::size_t i = begin; i < end; ++i) {
    const mongo::Op* op = ops[i];
    Bson combined;
    const bson_t* filter = op->filter.get();
    if (!bson_empty(op->guard.get())) {
      bson_concat(combined.get(), op->filter.get());
      bson_concat(combined.get(), op->guard.get());
      filter = combined.get();
    }
    Status added;
    switch (op->kind) {
      case mongo::Op::kUpdate:
        added = bulk.Update(filter, op->update.get(), op->upsert);
        break;
      case mongo::Op::kReplace:
        added = bulk.Replace(filter, op->update.get(), op->upsert);
        break;
      case mongo::Op::kDelete:
        added = bulk.Remove(filter);
        break;
      case mongo::Op::kInsert:
        added = bulk.Insert(op->update.get());
        break;
    }
    if (!added) return added.error();
  }
  auto done = bulk.Execute(collection);
  if (!done) return done.error();
  if (done->complete) return std::move(done->outcome);
  for (std::size_t i = begin; i < end; ++i) {
    if (!Idempotent(*ops[i])) {
      return MakeError(Errc::kInternal,
                       std::string("a duplicate key stopped a bulk write to ") + collection +
                           " part way, and it has unguarded updates that cannot be run again");
    }
  }
  mongo::BulkOutcome outcome;
  for (std::size_t i = begin; i < end; ++i) {
    auto one = BulkCommand(coll, collection, ops, i, i + 1);
    if (!one) return one.error();
    if (!one->duplicates.empty()) {
      outcome.duplicates.push_back(static_cast<std::uint32_t>(i - begin));
    }
  }
  return outcome;
}

}  // namespace

Result<mongo::BulkOutcome> MongoStore::Impl::Bulk(mongo::Lease& lease, const char* collection,
                                                  const std::vector<const mongo::Op*>& ops) {
  mongo::BulkOutcome outcome;
  auto coll = Coll(lease, collection);
  const std::size_t step = std::max<std::size_t>(1, statements_per_command);
  for (std::size_t begin = 0; begin < ops.size(); begin += step) {
    std::size_t end = std::min(ops.size(), begin + step);
    auto part = BulkCommand(coll.get(), collection, ops, begin, end);
    if (!part) return part.error();
    for (std::uint32_t index : part->duplicates) {
      outcome.duplicates.push_back(static_cast<std::uint32_t>(begin) + index);
    }
  }
  return outcome;
}

Result<mongo::BulkOutcome> MongoStore::Impl::InsertMany(mongo::Lease& lease,
                                                        const char* collection,
                                                        const std::vector<Bson>& docs) {
  if (docs.empty()) return mongo::BulkOutcome{};
  auto coll = Coll(lease, collection);
  UnorderedBulk bulk(coll.get());
  for (const Bson& doc : docs) {
    if (Status s = bulk.Insert(doc.get()); !s) return s.error();
  }
  auto done = bulk.Execute(collection);
  if (!done) return done.error();
  if (!done->complete) {
    // Some documents were neither inserted nor found there already: inserting them all again
    // (Retry) is harmless, the stored ones are duplicates.
    return MakeError(Errc::kUnavailable, std::string("a bulk insert into ") + collection +
                                             " stopped part way; try again");
  }
  return std::move(done->outcome);
}

Result<std::int64_t> MongoStore::Impl::Count(mongo::Lease& lease, const char* collection,
                                             const bson_t* filter) {
  Bson cmd;
  Builder b(cmd);
  b.Str("count", collection);
  if (filter != nullptr) b.Append("query", filter);
  auto reply = Command(lease, cmd.get(), std::string("counting ") + collection);
  if (!reply) return reply.error();
  bson_iter_t it;
  if (!mongo::Find(reply->get(), "n", &it)) {
    return MakeError(Errc::kInternal, std::string("count of ") + collection + " has no n");
  }
  return mongo::AsInt64(it).value_or(0);
}

Result<std::int64_t> MongoStore::Impl::DeleteMany(mongo::Lease& lease, const char* collection,
                                                  const bson_t* filter) {
  auto coll = Coll(lease, collection);
  mongo::Reply reply;
  bson_error_t error;
  if (!mongoc_collection_delete_many(coll.get(), filter, nullptr, reply.out(), &error)) {
    return mongo::ClassifyError(error, std::string("deleting from ") + collection);
  }
  bson_iter_t it;
  if (mongo::Find(reply.get(), "deletedCount", &it)) return mongo::AsInt64(it).value_or(0);
  return std::int64_t{0};
}

Result<std::int64_t> MongoStore::Impl::Expire(core::Timestamp now) {
  if (ttl) return std::int64_t{0};  // the server's TTL monitor deletes them
  std::int64_t deleted = 0;
  mongo::Lease lease(pool);
  if (options.retention.raw) {
    Bson filter;
    Builder(filter).Doc("ts", [&](Builder& b) { b.Date("$lt", now - *options.retention.raw); });
    auto n = Retry([&] { return DeleteMany(lease, mongo::kRaw, filter.get()); });
    if (!n) return n.error();
    deleted += *n;
  }
  if (!options.retention.aggregates.empty()) {
    Bson filter;
    Builder(filter).Doc("expire_at", [&](Builder& b) { b.Date("$lt", now); });
    auto n = Retry([&] { return DeleteMany(lease, mongo::kAggregates, filter.get()); });
    if (!n) return n.error();
    deleted += *n;
  }
  return deleted;
}

// ---- MongoStore -----------------------------------------------------------------------------

Result<std::unique_ptr<MongoStore>> MongoStore::Open(const MongoStoreOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  if (impl->options.max_attempts < 1) impl->options.max_attempts = 1;
  {
    std::random_device random;
    impl->instance_id = fmt::format("{:08x}{:08x}", random(), random());
  }
  if (Status s = impl->Connect(); !s) return s.error();
  // The first contact: ping with retries, so a server that is still starting gets a moment.
  {
    Bson ping;
    Builder(ping).Int32("ping", 1);
    mongo::Lease lease(impl->pool);
    auto reply = impl->Retry([&] { return impl->Command(lease, ping.get(), "ping"); });
    if (!reply) {
      return MakeError(reply.error().code, "cannot reach MongoDB at " + options.url + ": " +
                                               reply.error().message);
    }
  }
  {
    Bson info;
    Builder(info).Int32("buildInfo", 1);
    mongo::Lease lease(impl->pool);
    auto reply = impl->Retry([&] { return impl->Command(lease, info.get(), "buildInfo"); });
    bson_iter_t it;
    if (reply && mongo::Find(reply->get(), "ferretdbVersion", &it)) {
      impl->statements_per_command = 50;
      spdlog::info("the MongoDB server is FerretDB {}; writing in commands of {} statements",
                   mongo::AsString(it).value_or("?"), impl->statements_per_command);
    }
  }
  if (Status s = impl->Retry([&] { return impl->CreateIndexes(); }); !s) return s.error();
  impl->reachable.store(true);
  impl->monitor = std::thread([p = impl.get()] { p->Monitor(); });
  return std::unique_ptr<MongoStore>(new MongoStore(std::move(impl)));
}

MongoStore::MongoStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
MongoStore::~MongoStore() = default;

Status MongoStore::Apply(const WriteBatch& batch) { return impl_->Apply(batch); }

Result<std::optional<std::int64_t>> MongoStore::LoadCheckpoint(const std::string& consumer,
                                                               std::int32_t partition) {
  return impl_->LoadCheckpoint(consumer, partition);
}

Result<std::int64_t> MongoStore::Expire(core::Timestamp now) { return impl_->Expire(now); }

Status MongoStore::Ping() {
  if (impl_->reachable.load()) return Status::Ok();
  std::lock_guard lock(impl_->health_mu);
  return MakeError(Errc::kUnavailable, "MongoDB is unreachable: " + impl_->last_error);
}

}  // namespace iot::store
