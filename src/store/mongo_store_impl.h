// mongo_store_impl.h: the inside of MongoStore, shared by mongo_store.cc (connections, retries,
// indexes, retention, health), mongo_store_write.cc (Apply and its journal) and
// mongo_store_read.cc (the queries). Not part of the store's interface.
#pragma once

#include <mongoc/mongoc.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "store/mongo_bson.h"
#include "store/mongo_store.h"

namespace iot::store {

namespace mongo {

// Collection names: the seed's three, and the store's own.
inline constexpr const char* kRaw = "telemetry_raw";
inline constexpr const char* kAggregates = "aggregated_data";
inline constexpr const char* kAlerts = "alerts";
inline constexpr const char* kDevices = "devices";
inline constexpr const char* kCheckpoints = "checkpoints";
inline constexpr const char* kJournal = "journal";
inline constexpr const char* kMinutes = "ingest_minutes";
inline constexpr const char* kDeadLetters = "dead_letters";
// alert_acks: {_id: the alert's _id, at, by, note}, written by the dashboard only (see
// Store::Acknowledge); the alerts worker replaces alert documents and would erase a field.
inline constexpr const char* kAlertAcks = "alert_acks";

inline constexpr int kDuplicateKey = 11000;

// ClassifyError turns a driver or server error into an Error: kUnavailable for what may succeed
// when tried again (no server, network, failover, shutdown), kInternal otherwise.
Error ClassifyError(const bson_error_t& error, std::string_view what);

// Lease is one client taken from the pool for the duration of a call.
class Lease {
 public:
  explicit Lease(mongoc_client_pool_t* pool) : pool_(pool), client_(mongoc_client_pool_pop(pool)) {}
  ~Lease() { mongoc_client_pool_push(pool_, client_); }
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;
  mongoc_client_t* client() { return client_; }

 private:
  mongoc_client_pool_t* pool_;
  mongoc_client_t* client_;
};

struct CollectionDeleter {
  void operator()(mongoc_collection_t* c) const { mongoc_collection_destroy(c); }
};
using Collection = std::unique_ptr<mongoc_collection_t, CollectionDeleter>;

// Op is one write of a batch's effects, kept in the journal until it is applied.
struct Op {
  // kInsert inserts `update` as a new document; a duplicate _id (E11000) counts as done.
  enum Kind : std::int32_t { kUpdate = 0, kReplace = 1, kDelete = 2, kInsert = 3 };
  std::string collection;
  Kind kind = kUpdate;
  // phase orders the ops: every phase-0 op runs before any phase-1 op.
  std::int32_t phase = 0;
  bool upsert = false;
  Bson filter;
  // guard is always added to the filter: {hw.<consumer>_<partition>: {$not: {$gte: end}}}, so
  // that a journal applied twice (a retry, a redo after a crash, or two writers at once after a
  // rebalance) changes each document once. Empty for ops that are idempotent by themselves and
  // for batches without a checkpoint.
  Bson guard;
  Bson update;  // the update document, the replacement or the inserted document; empty: delete
};

// BulkOutcome lists the ops of a bulk write that failed with a duplicate key (already done).
struct BulkOutcome {
  std::vector<std::uint32_t> duplicates;  // indexes into the bulk's ops
};

// RawOutcome is what inserting a batch's raw readings found; it points into the batch.
struct RawOutcome {
  std::vector<const StoredReading*> unique;  // each message id once, in batch order
  // Per device: readings whose id came earlier in the batch, and readings stored (and counted)
  // before this batch.
  std::unordered_map<std::string_view, std::int64_t> repeated;
  std::unordered_map<std::string_view, std::int64_t> stored;
};

}  // namespace mongo

struct MongoStore::Impl {
  MongoStoreOptions options;
  mongoc_uri_t* uri = nullptr;
  mongoc_client_pool_t* pool = nullptr;
  bool ttl = false;  // the server accepted TTL indexes
  // Update and delete statements per write command. FerretDB 1.x (SQLite backend) holds one
  // pooled connection per statement until the command ends and hangs once its pool of 100 is
  // exhausted, so against FerretDB commands are cut into small ones.
  std::size_t statements_per_command = 10000;

  // Checkpoint state per (consumer, partition), as last read or written.
  struct CheckpointState {
    bool exists = false;
    std::int64_t next_offset = 0;
    std::optional<std::int64_t> journal_end;  // a committed batch not yet fully applied
    std::int32_t journal_parts = 0;
    std::string journal_token;  // which attempt wrote the journal (empty in older journals)
  };
  std::mutex checkpoints_mu;
  std::map<std::string, CheckpointState> checkpoints;

  // Journal tokens: this instance's random id and a counter, unique per Apply attempt.
  std::string instance_id;
  std::atomic<std::uint64_t> attempts{0};

  // Health, kept by a monitor thread that pings the server every second.
  std::atomic<bool> reachable{false};
  // server_down is the monitor's last answer: its ping failed. Retry then stops retrying, so an
  // outage reaches the callers (the workers pause and back off) instead of being waited out.
  std::atomic<bool> server_down{false};
  std::mutex health_mu;
  std::string last_error;
  std::condition_variable monitor_cv;
  bool stopping = false;
  std::thread monitor;

  ~Impl();

  // Crashed reports whether the crash_at test hook stops Apply at `step`.
  bool Crashed(std::string_view step) const { return options.crash_at && options.crash_at(step); }

  // ---- mongo_store.cc: connections, retries, indexes, health ----
  Status Connect();
  Status CreateIndexes();
  void Monitor();
  void NoteFailure(const Error& e);
  void NoteSuccess();
  mongo::Collection Coll(mongo::Lease& lease, const char* name);
  // AttachAcks fills in the acknowledgements of `alerts` from alert_acks, with one query
  // (mongo_store_read.cc).
  Status AttachAcks(mongo::Lease& lease, std::vector<core::Alert>& alerts);
  // Retry runs `fn` (which returns a Status or Result) until it succeeds, fails with an error
  // other than kUnavailable, max_attempts are used up, or the health monitor finds the server
  // down; backoff doubles with full jitter.
  template <typename F>
  auto Retry(F&& fn) -> decltype(fn());
  // Command runs a database command and returns its reply.
  Result<mongo::Bson> Command(mongo::Lease& lease, const bson_t* command, std::string_view what);
  // Bulk runs `ops` of one collection (each filter with its guard) as one unordered bulk write;
  // duplicate-key errors are reported in the outcome, every other write error fails the call.
  Result<mongo::BulkOutcome> Bulk(mongo::Lease& lease, const char* collection,
                                  const std::vector<const mongo::Op*>& ops);
  Result<mongo::BulkOutcome> InsertMany(mongo::Lease& lease, const char* collection,
                                        const std::vector<mongo::Bson>& docs);
  Result<std::int64_t> Count(mongo::Lease& lease, const char* collection, const bson_t* filter);
  Result<std::int64_t> DeleteMany(mongo::Lease& lease, const char* collection,
                                  const bson_t* filter);
  // Find runs a query and calls `row` for each document.
  template <typename Row>  // Status(const bson_t*)
  Status Find(mongo::Lease& lease, const char* collection, const bson_t* filter,
              const bson_t* opts, Row&& row);

  // ---- mongo_store_write.cc ----
  Status Apply(const WriteBatch& batch);
  // ApplyAt writes a checkpointed batch that the fence let through at `state` (no journal
  // pending): true when it committed; false when the checkpoint had moved (another writer), with
  // `state` read again from the database.
  Result<bool> ApplyAt(mongo::Lease& lease, const WriteBatch& batch, const std::string& cp_id,
                       CheckpointState& state);
  // CommitCheckpoint moves the checkpoint from `state` to `end` with the journal (`parts`
  // documents of attempt `token`, none when parts is 0); kAlreadyExists when it had moved.
  Status CommitCheckpoint(mongo::Lease& lease, const Checkpoint& cp, const std::string& cp_id,
                          const CheckpointState& state, std::int32_t parts,
                          const std::string& token);
  // InsertRaw inserts the batch's readings; `next_offset` is the stored position of its
  // checkpoint (see RawOutcome::stored).
  Result<mongo::RawOutcome> InsertRaw(mongo::Lease& lease, const WriteBatch& batch,
                                      std::int64_t next_offset);
  Status InsertDeadLetters(mongo::Lease& lease, const WriteBatch& batch);
  Result<CheckpointState> LoadState(mongo::Lease& lease, const std::string& id);
  Status Redo(mongo::Lease& lease, const std::string& id, CheckpointState& state);
  Status ClearJournal(mongo::Lease& lease, const std::string& id, CheckpointState& state);
  // Execute applies ops phase by phase, each with its guard.
  Status Execute(mongo::Lease& lease, const std::vector<mongo::Op>& ops);
  Status UpdateAverages(mongo::Lease& lease, const std::vector<std::string>& keys);
  Result<std::optional<std::int64_t>> LoadCheckpoint(const std::string& consumer,
                                                     std::int32_t partition);
  Result<std::int64_t> Expire(core::Timestamp now);
};

// Documents (mongo_store_write.cc writes them, mongo_store_read.cc reads them back).
// AppendReading appends device_id, ts, each sensor in order, lat and lon (when present).
void AppendReading(mongo::Builder& b, const core::Reading& reading);
// ReadingFrom reads those fields back; any other field that holds a number is a sensor, other
// fields (_id, bookkeeping) are skipped.
Result<core::Reading> ReadingFrom(const bson_t* doc);
mongo::Bson AlertDoc(const core::Alert& alert);
mongo::Bson DeadLetterDoc(const DeadLetter& dl);
Result<DeadLetter> DeadLetterFrom(const bson_t* doc);
// DeadLetterId is the _id of a dead letter, "<consumer>/<partition>/<offset, 19 digits>/<topic>":
// unique per (consumer, topic, partition, offset), since consumer names have no '/' and the topic
// comes last.
std::string DeadLetterId(const DeadLetter& dl);
Result<core::Alert> AlertFrom(const bson_t* doc);

// PaddedId renders a non-negative number as a zero-padded decimal string of `width` digits, so
// that string order is numeric order. Alerts and ingest minutes use it as their _id: FerretDB's
// SQLite backend passes a filter down to SQL only when it is exactly {_id: <string or
// ObjectId>}, and otherwise decodes every document of the collection to filter it itself.
// ParsePaddedId is its inverse (nullopt for anything else).
std::string PaddedId(std::int64_t value, int width = 19);
std::optional<std::int64_t> ParsePaddedId(std::string_view text);

// AggregateId is the _id of an aggregate document: "<device>/<sensor>/<window>/<start>", unique
// per (device, sensor, window, window start) and readable in the database.
std::string AggregateId(const core::AggregateKey& key);

template <typename Row>
Status MongoStore::Impl::Find(mongo::Lease& lease, const char* collection, const bson_t* filter,
                              const bson_t* opts, Row&& row) {
  auto coll = Coll(lease, collection);
  mongoc_cursor_t* cursor = mongoc_collection_find_with_opts(coll.get(), filter, opts, nullptr);
  const bson_t* doc = nullptr;
  Status status;
  while (mongoc_cursor_next(cursor, &doc)) {
    status = row(doc);
    if (!status) break;
  }
  bson_error_t error;
  if (status && mongoc_cursor_error(cursor, &error)) {
    status = mongo::ClassifyError(error, std::string("reading ") + collection);
  }
  mongoc_cursor_destroy(cursor);
  return status;
}

template <typename F>
auto MongoStore::Impl::Retry(F&& fn) -> decltype(fn()) {
  auto backoff = options.initial_backoff;
  for (int attempt = 1;; ++attempt) {
    auto result = fn();
    if (result) {
      NoteSuccess();
      return result;
    }
    if (result.error().code != Errc::kUnavailable || attempt >= options.max_attempts ||
        server_down.load()) {
      if (result.error().code == Errc::kUnavailable) NoteFailure(result.error());
      return result;
    }
    // Jitter: a random wait in [backoff / 2, backoff], so that replicas do not retry in step.
    thread_local std::minstd_rand random(std::random_device{}());
    auto wait = backoff / 2 + std::chrono::milliseconds(
                                  static_cast<std::int64_t>(random() % (backoff.count() / 2 + 1)));
    std::this_thread::sleep_for(wait);
    backoff = std::min(backoff * 2, options.max_backoff);
  }
}

}  // namespace iot::store
