// mongo_store_test.cc: the MongoDB store against a real MongoDB wire-protocol server (FerretDB):
// the conformance suite every store passes, then what is particular to MongoDB: the documents
// other tools read, idempotence across a crash between the steps of Apply, and outages.
#include "store/mongo_store.h"

#include <gtest/gtest.h>
#include <mongoc/mongoc.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "store/mongo_bson.h"
#include "testing/ferretdb.h"
#include "testing/test_util.h"
#include "unit/store/store_conformance.h"

namespace iot::store::testing {
namespace {

using ::iot::testing::FerretDbEnvironment;
using ::iot::testing::FerretDbServer;
using ::iot::testing::Must;

const auto* const kFerretDb = FerretDbEnvironment::Register();

MongoStoreOptions OptionsFor(const std::string& url, const std::string& db) {
  MongoStoreOptions o;
  o.url = url;
  o.database = db;
  o.max_pool_size = 4;
  o.server_selection_timeout = std::chrono::milliseconds(1000);
  o.connect_timeout = std::chrono::milliseconds(1000);
  o.max_attempts = 2;
  o.initial_backoff = std::chrono::milliseconds(10);
  return o;
}

std::unique_ptr<Store> MakeMongo(const Retention& retention) {
  MongoStoreOptions o = OptionsFor(FerretDbEnvironment::Url(), FerretDbEnvironment::UniqueDatabaseName("conf"));
  o.retention = retention;
  auto store = MongoStore::Open(o);
  EXPECT_TRUE(store.ok()) << store.error().message;
  if (!store) return nullptr;
  return std::move(*store);
}

INSTANTIATE_TEST_SUITE_P(Mongo, StoreConformance,
                         ::testing::Values(StoreFactory{"mongodb", MakeMongo, nullptr}),
                         StoreFactoryName);

// ---- exactly-once without transactions: a crash between any two steps of Apply ---------------

// kAlertMessage opens an alert (a fresh insert in the batch that holds it) that kResolveMessage
// resolves (a replacement); messages 20 mod 25 are undecodable and become dead letters.
constexpr std::int64_t kAlertMessage = 50;
constexpr std::int64_t kResolveMessage = 120;
constexpr std::int64_t kAlertId = kAlertMessage << 6;  // core::AlertId of its first sensor
bool IsDeadLetter(std::int64_t message) { return message % 25 == 20; }

// AggregatorBatch builds what the aggregator writes for messages [first, end) of partition 0:
// readings of four devices, their DeviceUpdates, 1m aggregates, the alert's changes, the dead
// letters, the ingest count, the checkpoint.
WriteBatch AggregatorBatch(std::int64_t first, std::int64_t end) {
  std::vector<StoredReading> readings;
  std::vector<DeadLetter> dead_letters;
  for (std::int64_t i = first; i < end; ++i) {
    if (IsDeadLetter(i)) {
      std::string payload = "\xff\xfe" + std::to_string(i);
      dead_letters.push_back(MakeDeadLetter("aggregator", i, At(600), payload));
      continue;
    }
    readings.push_back(MakeReading(i, "d" + std::to_string(i % 4), At(static_cast<double>(i)),
                                   static_cast<double>(i % 13), 40.0 + static_cast<double>(i % 3)));
  }
  WriteBatch b = BatchOf(readings);
  std::map<core::AggregateKey, core::Accumulator> aggs;
  for (const auto& r : readings) {
    for (const auto& s : r.reading.sensors) {
      core::AggregateKey key{r.reading.device_id, s.name, std::chrono::minutes(1),
                             core::WindowStart(r.reading.ts, std::chrono::minutes(1))};
      aggs[key].Add(s.value);
    }
  }
  for (const auto& [key, acc] : aggs) b.aggregates.push_back(AggregateDelta{key, acc});
  const std::string alert_device = "d" + std::to_string(kAlertMessage % 4);
  if (first <= kAlertMessage && kAlertMessage < end) {
    b.alert_upserts.push_back(
        MakeAlert(kAlertId, alert_device, core::AlertStatus::kActive, At(kAlertMessage)));
  }
  if (first <= kResolveMessage && kResolveMessage < end) {
    b.alert_upserts.push_back(
        MakeAlert(kAlertId, alert_device, core::AlertStatus::kResolved, At(kAlertMessage)));
  }
  b.dead_letters = std::move(dead_letters);
  b.ingested = end - first;
  b.processed_at = At(600);
  b.checkpoint = Checkpoint{"aggregator", 0, end, first};
  return b;
}

// ExpectEachMessageCountedOnce checks that the store holds messages [0, end) of partition 0 as
// if each AggregatorBatch had been applied exactly once: every reading and dead letter once, each
// device's count and latest reading, aggregates equal to a recomputation, the alert's last state,
// the ingest rate.
void ExpectEachMessageCountedOnce(Store& store, std::int64_t end) {
  const WriteBatch everything = AggregatorBatch(0, end);
  TelemetryQuery all;
  all.limit = 1000;
  auto stored = ReadAll(store, all);
  std::set<std::int64_t> ids, want_ids;
  for (const auto& r : stored) ids.insert(r.id.value);
  for (const auto& r : everything.readings) want_ids.insert(r.id.value);
  EXPECT_EQ(stored.size(), everything.readings.size());
  EXPECT_EQ(ids, want_ids);
  for (const auto& u : everything.devices) {
    auto device = Must(store.FindDevice(u.device_id));
    ASSERT_TRUE(device.has_value()) << u.device_id;
    EXPECT_EQ(device->readings, u.readings) << "device " << u.device_id;
    EXPECT_EQ(device->latest.ts, u.latest.ts) << "device " << u.device_id;
  }
  AggregateQuery aq;
  aq.limit = 1000;
  auto aggs = Must(store.Aggregates(aq)).items;
  ASSERT_EQ(aggs.size(), everything.aggregates.size());
  for (const auto& want : everything.aggregates) {
    auto got = std::find_if(aggs.begin(), aggs.end(),
                            [&](const Aggregate& a) { return a.key == want.key; });
    ASSERT_NE(got, aggs.end());
    EXPECT_EQ(got->acc.count, want.acc.count) << want.key.device_id << " " << want.key.sensor_type;
    EXPECT_DOUBLE_EQ(got->acc.sum, want.acc.sum);
    EXPECT_EQ(got->acc.min, want.acc.min);
    EXPECT_EQ(got->acc.max, want.acc.max);
  }
  AlertQuery alerts;
  alerts.limit = 1000;
  EXPECT_EQ(Must(store.Alerts(alerts)).items,
            std::vector<core::Alert>{everything.alert_upserts.back()});
  DeadLetterQuery dlq;
  dlq.limit = 1000;
  auto dead = ReadAllDeadLetters(store, dlq);
  std::sort(dead.begin(), dead.end(),
            [](const DeadLetter& a, const DeadLetter& b) { return a.offset < b.offset; });
  EXPECT_EQ(dead, everything.dead_letters);
  Stats stats = Must(store.GetStats(At(60.0 * 11)));
  EXPECT_EQ(stats.readings, static_cast<std::int64_t>(everything.readings.size()));
  EXPECT_EQ(stats.devices, static_cast<std::int64_t>(everything.devices.size()));
  // The ingest counts of minute 10 (processed_at) add up to every message: end / 60 s.
  EXPECT_DOUBLE_EQ(stats.ingest_rate_per_s, static_cast<double>(end) / 60.0);
  EXPECT_EQ(Must(store.LoadCheckpoint("aggregator", 0)), end);
}

class MongoCrashTest : public ::testing::TestWithParam<std::string> {};

TEST_P(MongoCrashTest, ACrashAtAnyStepThenRestartCountsEverythingExactlyOnce) {
  const std::string db = FerretDbEnvironment::UniqueDatabaseName("crash");
  const WriteBatch first = AggregatorBatch(40, 100);  // the batch after (0, 40)
  const WriteBatch second = AggregatorBatch(100, 150);
  {
    MongoStoreOptions o = OptionsFor(FerretDbEnvironment::Url(), db);
    const std::string step = GetParam();
    auto armed = std::make_shared<bool>(false);
    o.crash_at = [step, armed](std::string_view at) { return *armed && at == step; };
    auto crashing = Must(MongoStore::Open(o));
    IOT_ASSERT_OK(crashing->Apply(AggregatorBatch(0, 40)));  // an earlier batch, fully applied
    *armed = true;
    Status s = crashing->Apply(first);
    ASSERT_FALSE(s.ok()) << "the hook did not stop Apply at " << step;
  }
  // The restarted process: resume where the store's checkpoint says, as the workers do.
  auto store = Must(MongoStore::Open(OptionsFor(FerretDbEnvironment::Url(), db)));
  auto resume = Must(store->LoadCheckpoint("aggregator", 0));
  ASSERT_TRUE(resume.has_value());
  if (*resume < 100) {
    // The bus redelivers from the checkpoint: the rest of the crashed batch, cut differently.
    IOT_ASSERT_OK(store->Apply(AggregatorBatch(40, 70)));
    IOT_ASSERT_OK(store->Apply(AggregatorBatch(70, 100)));
  }
  IOT_ASSERT_OK(store->Apply(second));
  IOT_ASSERT_OK(store->Apply(second));  // a replay of an applied batch changes nothing
  ExpectEachMessageCountedOnce(*store, 150);
}

std::string StepName(const ::testing::TestParamInfo<std::string>& p) {
  std::string name = p.param;
  for (char& c : name) {
    if (c == ':') c = '_';
  }
  return name;
}

INSTANTIATE_TEST_SUITE_P(Steps, MongoCrashTest,
                         ::testing::Values("raw", "dead_letters", "commit", "apply:devices",
                                           "apply:aggregated_data", "apply:ingest_minutes",
                                           "apply:alerts", "applied"),
                         StepName);

// ---- two writers of one partition (a Kafka rebalance) ----------------------------------------

// A worker that lost its partition in a rebalance may still be applying a journal it committed
// when the partition's new owner loads the checkpoint, finds that journal pending and applies it
// too (Redo). Both apply every op guarded by the batch's high-water mark, so each document changes
// once whichever lands first. The hook runs the new owner's LoadCheckpoint at `step` of the old
// owner's Apply, which then carries on.
class MongoRebalanceTest : public ::testing::TestWithParam<std::string> {};

TEST_P(MongoRebalanceTest, AJournalAppliedByTheOldAndTheNewOwnerAtOnceCountsOnce) {
  const std::string db = FerretDbEnvironment::UniqueDatabaseName("rebalance");
  auto new_owner = Must(MongoStore::Open(OptionsFor(FerretDbEnvironment::Url(), db)));
  const std::string step = GetParam();
  auto armed = std::make_shared<bool>(false);
  Store* taking_over = new_owner.get();
  std::optional<Result<std::optional<std::int64_t>>> taken_over_at;
  MongoStoreOptions o = OptionsFor(FerretDbEnvironment::Url(), db);
  o.crash_at = [&, step, armed](std::string_view at) {
    if (!*armed || at != step) return false;
    *armed = false;
    taken_over_at = taking_over->LoadCheckpoint("aggregator", 0);
    return false;
  };
  auto old_owner = Must(MongoStore::Open(o));
  IOT_ASSERT_OK(old_owner->Apply(AggregatorBatch(0, 40)));
  *armed = true;
  IOT_ASSERT_OK(old_owner->Apply(AggregatorBatch(40, 100)));
  ASSERT_TRUE(taken_over_at.has_value()) << "the hook did not run at " << step;
  ASSERT_TRUE(taken_over_at->ok()) << taken_over_at->error().message;
  EXPECT_EQ(**taken_over_at, 100);
  IOT_ASSERT_OK(new_owner->Apply(AggregatorBatch(100, 150)));
  ExpectEachMessageCountedOnce(*new_owner, 150);
}

INSTANTIATE_TEST_SUITE_P(Steps, MongoRebalanceTest,
                         ::testing::Values("commit", "apply:devices", "apply:aggregated_data",
                                           "apply:alerts"),
                         StepName);

// ---- a server that stops in the middle of a write command -----------------------------------

// DoFirstStatementOf does to database `db` what a server that stops in the middle of the pending
// journal's command on `collection` leaves behind: that command's first statement done, the
// others not (FerretDB runs the statements of a command one after the other). Returns false when
// the journal has no update of `collection`.
bool DoFirstStatementOf(const std::string& db, const std::string& collection) {
  mongo::Bson filter, update;
  bool found = false;
  mongoc_client_t* client = mongoc_client_new(FerretDbEnvironment::Url().c_str());
  if (client == nullptr) return false;
  mongoc_collection_t* journal = mongoc_client_get_collection(client, db.c_str(), "journal");
  mongo::Bson query, opts;
  mongo::Builder(query).Str("checkpoint", "aggregator/0");
  mongo::Builder(opts).Doc("sort", [](mongo::Builder& b) { b.Int32("part", 1); });
  mongoc_cursor_t* cursor =
      mongoc_collection_find_with_opts(journal, query.get(), opts.get(), nullptr);
  const bson_t* part = nullptr;
  while (!found && mongoc_cursor_next(cursor, &part)) {
    bson_iter_t ops, op, field;
    if (!mongo::Find(part, "ops", &ops) || !bson_iter_recurse(&ops, &op)) continue;
    while (!found && bson_iter_next(&op)) {
      if (!bson_iter_recurse(&op, &field)) continue;
      std::string c;
      std::int64_t kind = -1;
      mongo::Bson q, g, u;
      while (bson_iter_next(&field)) {
        std::string_view key = bson_iter_key(&field);
        if (key == "c") c = std::string(mongo::AsString(field).value_or(""));
        if (key == "k") kind = mongo::AsInt64(field).value_or(-1);
        if (key == "q") q = mongo::Bson::FromIter(field);
        if (key == "g") g = mongo::Bson::FromIter(field);
        if (key == "u") u = mongo::Bson::FromIter(field);
      }
      if (c != collection || kind != 0) continue;  // 0: an update
      bson_concat(filter.get(), q.get());
      bson_concat(filter.get(), g.get());
      update = std::move(u);
      found = true;
    }
  }
  mongoc_cursor_destroy(cursor);
  mongoc_collection_destroy(journal);
  if (found) {
    mongoc_collection_t* target = mongoc_client_get_collection(client, db.c_str(),
                                                               collection.c_str());
    mongo::Bson upsert;
    mongo::Builder(upsert).Bool("upsert", true);
    bson_error_t error;
    found = mongoc_collection_update_one(target, filter.get(), update.get(), upsert.get(),
                                         nullptr, &error);
    EXPECT_TRUE(found) << error.message;
    mongoc_collection_destroy(target);
  }
  mongoc_client_destroy(client);
  return found;
}

// A server that stops in the middle of a command of the journal (an outage) has done the
// command's first statements. Applying the journal again, its first statement is a duplicate
// (the high-water mark), at which FerretDB ends the whole command and reports index 0: the
// statements after it must still be done, not taken as done.
class MongoStoppedMidCommandTest : public ::testing::TestWithParam<std::string> {};

TEST_P(MongoStoppedMidCommandTest, TheRestOfTheCommandIsDoneWhenTheJournalIsAppliedAgain) {
  const std::string db = FerretDbEnvironment::UniqueDatabaseName("midcmd");
  {
    MongoStoreOptions o = OptionsFor(FerretDbEnvironment::Url(), db);
    auto armed = std::make_shared<bool>(false);
    o.crash_at = [armed](std::string_view at) { return *armed && at == "commit"; };
    auto crashing = Must(MongoStore::Open(o));
    IOT_ASSERT_OK(crashing->Apply(AggregatorBatch(0, 40)));
    *armed = true;
    ASSERT_FALSE(crashing->Apply(AggregatorBatch(40, 100)).ok());
  }
  ASSERT_TRUE(DoFirstStatementOf(db, GetParam())) << "no pending update of " << GetParam();
  auto store = Must(MongoStore::Open(OptionsFor(FerretDbEnvironment::Url(), db)));
  EXPECT_EQ(Must(store->LoadCheckpoint("aggregator", 0)), 100);  // applies the journal again
  IOT_ASSERT_OK(store->Apply(AggregatorBatch(100, 150)));
  ExpectEachMessageCountedOnce(*store, 150);
}

INSTANTIATE_TEST_SUITE_P(Collections, MongoStoppedMidCommandTest,
                         ::testing::Values("devices", "aggregated_data"));

// A writer whose cached checkpoint is stale (the partition moved to another writer and back, or
// it is a zombie) learns the stored position when its commit fails, and then answers exactly:
// skipped when the batch was applied, kAborted when it was applied in part.
TEST(MongoStoreTest, AWriterWithAStaleCheckpointIsSkippedOrAbortedAtItsCommit) {
  const std::string db = FerretDbEnvironment::UniqueDatabaseName("stale");
  auto a = Must(MongoStore::Open(OptionsFor(FerretDbEnvironment::Url(), db)));
  auto b = Must(MongoStore::Open(OptionsFor(FerretDbEnvironment::Url(), db)));
  EXPECT_EQ(Must(a->LoadCheckpoint("aggregator", 0)), std::nullopt);
  IOT_ASSERT_OK(b->Apply(AggregatorBatch(0, 40)));
  // a believes nothing is stored: its first commit finds the checkpoint created meanwhile.
  IOT_ASSERT_OK(a->Apply(AggregatorBatch(0, 40)));

  // b owns the partition now; a still believes in 40.
  ASSERT_EQ(Must(b->LoadCheckpoint("aggregator", 0)), 40);
  IOT_ASSERT_OK(b->Apply(AggregatorBatch(40, 70)));
  Status s = a->Apply(AggregatorBatch(40, 100));
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, Errc::kAborted) << s.error().message;
  // a learnt 70; b moves on to 100, and a's [70, 100) is then skipped.
  IOT_ASSERT_OK(b->Apply(AggregatorBatch(70, 100)));
  IOT_ASSERT_OK(a->Apply(AggregatorBatch(70, 100)));
  IOT_ASSERT_OK(b->Apply(AggregatorBatch(100, 150)));
  // a's refused attempts left raw readings and dead letters of their range, which are keyed by
  // their bus position: b stored and counted each of them once.
  ExpectEachMessageCountedOnce(*b, 150);
  EXPECT_EQ(Must(a->LoadCheckpoint("aggregator", 0)), 150);
}

TEST(MongoStoreTest, AnUnreachableServerFailsOpenWithUnavailable) {
  MongoStoreOptions o = OptionsFor("mongodb://127.0.0.1:1/", "x");
  o.server_selection_timeout = std::chrono::milliseconds(200);
  auto store = MongoStore::Open(o);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.error().code, Errc::kUnavailable) << store.error().message;
}

TEST(MongoStoreTest, BadUrlsAndDatabaseNamesAreInvalidArguments) {
  EXPECT_EQ(MongoStore::Open(OptionsFor("http://x", "db")).error().code, Errc::kInvalidArgument);
  for (const char* db : {"", "a.b", "a$b", "a/b", "a b"}) {
    EXPECT_EQ(MongoStore::Open(OptionsFor(FerretDbEnvironment::Url(), db)).error().code,
              Errc::kInvalidArgument)
        << db;
  }
}

TEST(MongoStoreTest, DeviceIdsThatLookLikeOperatorsAreMatchedLiterally) {
  auto store = Must(MongoStore::Open(
      OptionsFor(FerretDbEnvironment::Url(), FerretDbEnvironment::UniqueDatabaseName("inj"))));
  IOT_ASSERT_OK(store->Apply(BatchOf({MakeReading(1, "a.b", At(1)), MakeReading(2, "ab", At(2))})));
  for (const char* id : {"{\"$gt\": \"\"}", "$gt", "a.b$c", "a", ".*", "a.c"}) {
    EXPECT_EQ(Must(store->FindDevice(id)), std::nullopt) << id;
    TelemetryQuery q;
    q.device_id = id;
    EXPECT_TRUE(Must(store->Telemetry(q)).items.empty()) << id;
  }
  EXPECT_TRUE(Must(store->FindDevice("a.b")).has_value());
  DeviceQuery prefix;
  prefix.prefix = "a.";
  auto listed = Must(store->Devices(prefix));
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0].device_id, "a.b");
}

TEST(MongoStoreTest, PingReportsAnOutageWithinSecondsAndRecovers) {
  auto server = Must(FerretDbServer::Start());
  auto store = Must(MongoStore::Open(OptionsFor(server->Url(), "ping")));
  IOT_ASSERT_OK(store->Ping());
  IOT_ASSERT_OK(server->Stop());
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (store->Ping().ok() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_FALSE(store->Ping().ok());
  EXPECT_EQ(store->Ping().error().code, Errc::kUnavailable);
  IOT_ASSERT_OK(server->Restart());
  deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  while (!store->Ping().ok() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  IOT_ASSERT_OK(store->Ping());
  IOT_ASSERT_OK(store->Apply(BatchOf({MakeReading(1, "d", At(1))})));
}

}  // namespace
}  // namespace iot::store::testing
