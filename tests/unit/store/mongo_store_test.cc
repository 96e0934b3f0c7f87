// mongo_store_test.cc: the MongoDB store against a real MongoDB wire-protocol server (FerretDB):
// the conformance suite every store passes, then what is particular to MongoDB: the documents
// other tools read, idempotence across a crash between the steps of Apply, and outages.
#include "store/mongo_store.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

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

// AggregatorBatch builds what the aggregator writes for messages [first, end) of partition 0:
// readings of four devices, their DeviceUpdates, 1m aggregates, the ingest count, the checkpoint.
WriteBatch AggregatorBatch(std::int64_t first, std::int64_t end) {
  std::vector<StoredReading> readings;
  for (std::int64_t i = first; i < end; ++i) {
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
  b.ingested = end - first;
  b.processed_at = At(600);
  b.checkpoint = Checkpoint{"aggregator", 0, end};
  return b;
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

  // Everything once: 150 readings, each device's count, aggregates equal to a recomputation.
  TelemetryQuery all;
  all.limit = 1000;
  auto stored = ReadAll(*store, all);
  ASSERT_EQ(stored.size(), 150u);
  std::set<std::int64_t> ids;
  for (const auto& r : stored) ids.insert(r.id.value);
  EXPECT_EQ(ids.size(), 150u);
  WriteBatch everything = AggregatorBatch(0, 150);
  for (int d = 0; d < 4; ++d) {
    auto device = Must(store->FindDevice("d" + std::to_string(d)));
    ASSERT_TRUE(device.has_value());
    EXPECT_EQ(device->readings, 150 / 4 + (d < 150 % 4 ? 1 : 0)) << "device d" << d;
    // The newest reading of device d is message 148 + d, or 144 + d when that is past 149.
    EXPECT_EQ(device->latest.ts, At(148 + d < 150 ? 148 + d : 144 + d));
  }
  AggregateQuery aq;
  aq.limit = 1000;
  auto aggs = Must(store->Aggregates(aq)).items;
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
  Stats stats = Must(store->GetStats(At(60.0 * 11)));
  EXPECT_EQ(stats.readings, 150);
  EXPECT_EQ(stats.devices, 4);
  // The ingest counts of minute 10 (processed_at) add up to the 150 readings: (150) / 60 s.
  EXPECT_DOUBLE_EQ(stats.ingest_rate_per_s, 150.0 / 60.0);
}

INSTANTIATE_TEST_SUITE_P(Steps, MongoCrashTest,
                         ::testing::Values("raw", "commit", "apply:devices",
                                           "apply:aggregated_data", "apply:ingest_minutes",
                                           "applied"),
                         [](const ::testing::TestParamInfo<std::string>& p) {
                           std::string name = p.param;
                           for (char& c : name) {
                             if (c == ':') c = '_';
                           }
                           return name;
                         });

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
