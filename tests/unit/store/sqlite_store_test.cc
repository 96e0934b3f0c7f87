// sqlite_store_test.cc: SqliteStore passes the conformance suite, plus what only a file-backed
// store has (reopening, WAL recovery, lock contention, corrupt files, chunk boundaries).
#include "store/sqlite_store.h"
#include "testing/test_util.h"

#include <atomic>
#include <filesystem>
#include <fstream>
#include <limits>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <unistd.h>

#include "unit/store/store_conformance.h"

namespace iot::store {
namespace {

namespace fs = std::filesystem;
using testing::At;
using testing::BatchOf;
using testing::MakeAlert;
using testing::MakeDeadLetter;
using testing::MakeReading;
using testing::ReadAll;
using testing::ReadAllDeadLetters;
using testing::StoreConformance;
using testing::StoreFactory;


// NewTempDir returns a fresh, empty directory under the test temp dir.
fs::path NewTempDir() {
  static std::atomic<int> counter{0};
  fs::path dir = fs::path(::testing::TempDir()) /
                 ("iot_store_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

SqliteStoreOptions SmallOptions(const fs::path& dir) {
  SqliteStoreOptions o;
  o.path = (dir / "store.db").string();
  o.readers = 2;
  o.cache_bytes = 4 << 20;
  return o;
}

// The conformance suite's factory: one directory per store, removed after the test.
std::mutex g_dirs_mu;
std::vector<fs::path> g_dirs;

StoreFactory SqliteFactory() {
  StoreFactory f;
  f.name = "sqlite";
  f.make = [](const Retention& retention) -> std::unique_ptr<Store> {
    fs::path dir = NewTempDir();
    {
      std::lock_guard lock(g_dirs_mu);
      g_dirs.push_back(dir);
    }
    SqliteStoreOptions options = SmallOptions(dir);
    options.retention = retention;
    auto store = SqliteStore::Open(options);
    if (!store) {
      ADD_FAILURE() << store.error().message;
      return nullptr;
    }
    return std::move(*store);
  };
  f.cleanup = [] {
    std::lock_guard lock(g_dirs_mu);
    for (const auto& d : g_dirs) fs::remove_all(d);
    g_dirs.clear();
  };
  return f;
}

}  // namespace

namespace testing {
INSTANTIATE_TEST_SUITE_P(Sqlite, StoreConformance, ::testing::Values(SqliteFactory()),
                         StoreFactoryName);
}  // namespace testing

namespace {

class SqliteStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = NewTempDir(); }
  void TearDown() override { fs::remove_all(dir_); }

  std::unique_ptr<SqliteStore> Open(SqliteStoreOptions options) {
    auto store = SqliteStore::Open(options);
    if (!store) {
      ADD_FAILURE() << store.error().message;
      return nullptr;
    }
    return std::move(*store);
  }
  std::unique_ptr<SqliteStore> Open() { return Open(SmallOptions(dir_)); }

  fs::path dir_;
};

// A full batch touching every table.
WriteBatch EverythingBatch() {
  StoredReading r1 = MakeReading(1, "dev-1", At(1), 20.5, 41);
  r1.reading.lat = 10.25;
  r1.reading.lon = 20.5;
  WriteBatch b = BatchOf({r1, MakeReading(2, "dev-2", At(2)), MakeReading(3, "dev-1", At(3))});
  core::Accumulator acc;
  acc.Add(20.5);
  acc.Add(21.5);
  b.aggregates = {AggregateDelta{{"dev-1", "temperature_c", std::chrono::minutes(1), At(0)}, acc}};
  b.alert_upserts = {MakeAlert(1, "dev-1", core::AlertStatus::kActive, At(1))};
  b.dead_letters = {MakeDeadLetter("aggregator", 0, At(4), std::string("\xff\0x", 3))};
  b.ingested = 3;
  b.processed_at = At(4);
  b.checkpoint = Checkpoint{"aggregator", 2, 4, 0};
  return b;
}

// Snapshot reads everything a store exposes, for before/after comparisons.
struct Snapshot {
  std::vector<StoredReading> telemetry;
  std::vector<Aggregate> aggregates;
  std::vector<core::Alert> alerts;
  std::vector<Device> devices;
  std::vector<DeadLetter> dead_letters;
  std::optional<std::int64_t> checkpoint;
  Stats stats;
};

Snapshot Take(Store& store) {
  Snapshot s;
  s.telemetry = ReadAll(store, TelemetryQuery{});
  auto aggs = store.Aggregates(AggregateQuery{});
  EXPECT_TRUE(aggs.ok());
  if (aggs) s.aggregates = aggs->items;
  auto alerts = store.Alerts(AlertQuery{});
  EXPECT_TRUE(alerts.ok());
  if (alerts) s.alerts = alerts->items;
  auto devices = store.Devices(DeviceQuery{});
  EXPECT_TRUE(devices.ok());
  if (devices) s.devices = *devices;
  s.dead_letters = ReadAllDeadLetters(store, DeadLetterQuery{});
  auto cp = store.LoadCheckpoint("aggregator", 2);
  EXPECT_TRUE(cp.ok());
  if (cp) s.checkpoint = *cp;
  auto stats = store.GetStats(At(600));
  EXPECT_TRUE(stats.ok());
  if (stats) s.stats = *stats;
  return s;
}

void ExpectSame(const Snapshot& a, const Snapshot& b) {
  EXPECT_EQ(a.telemetry, b.telemetry);
  EXPECT_EQ(a.aggregates, b.aggregates);
  EXPECT_EQ(a.alerts, b.alerts);
  EXPECT_EQ(a.devices, b.devices);
  EXPECT_EQ(a.dead_letters, b.dead_letters);
  EXPECT_EQ(a.checkpoint, b.checkpoint);
  EXPECT_EQ(a.stats.devices, b.stats.devices);
  EXPECT_EQ(a.stats.readings, b.stats.readings);
  EXPECT_EQ(a.stats.aggregates, b.stats.aggregates);
  EXPECT_EQ(a.stats.alerts, b.stats.alerts);
  EXPECT_EQ(a.stats.active_alerts, b.stats.active_alerts);
  EXPECT_EQ(a.stats.ingest_rate_per_s, b.stats.ingest_rate_per_s);
}

TEST_F(SqliteStoreTest, ReopenAfterCloseKeepsEverything) {
  Snapshot before;
  {
    auto store = Open();
    ASSERT_NE(store, nullptr);
    IOT_ASSERT_OK(store->Apply(EverythingBatch()));
    before = Take(*store);
  }
  ASSERT_EQ(before.telemetry.size(), 3u);
  ASSERT_EQ(before.dead_letters.size(), 1u);
  ASSERT_EQ(before.checkpoint, 4);
  auto store = Open();
  ASSERT_NE(store, nullptr);
  ExpectSame(Take(*store), before);
  // The writer's key caches start empty after a reopen: new data lands on the same devices.
  IOT_ASSERT_OK(store->Apply(BatchOf({MakeReading(10, "dev-1", At(10))})));
  auto d = store->FindDevice("dev-1");
  ASSERT_TRUE(d.ok());
  ASSERT_TRUE(d->has_value());
  EXPECT_EQ((*d)->readings, 3);
  IOT_ASSERT_OK(store->Apply(BatchOf({MakeReading(1, "dev-1", At(1))})));  // a stored id
  EXPECT_EQ(ReadAll(*store, TelemetryQuery{}).size(), 4u);
}

TEST_F(SqliteStoreTest, CommittedDataIsRecoveredFromTheWalAfterACrash) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  IOT_ASSERT_OK(store->Apply(EverythingBatch()));
  Snapshot before = Take(*store);
  // While the store is open, its commits sit in the WAL file: copying the files now is what a
  // crash (kill -9) would leave behind.
  const fs::path db = dir_ / "store.db";
  const fs::path wal = dir_ / "store.db-wal";
  ASSERT_TRUE(fs::exists(wal));
  ASSERT_GT(fs::file_size(wal), 0u);
  const fs::path crash = dir_ / "crash";
  fs::create_directories(crash);
  fs::copy_file(db, crash / "store.db");
  fs::copy_file(wal, crash / "store.db-wal");

  // Without its WAL the database file does not have the data yet: the recovery below reads it.
  const fs::path without_wal = dir_ / "without_wal";
  fs::create_directories(without_wal);
  fs::copy_file(db, without_wal / "store.db");
  {
    auto bare = Open(SmallOptions(without_wal));
    ASSERT_NE(bare, nullptr);
    EXPECT_TRUE(ReadAll(*bare, TelemetryQuery{}).empty());
  }

  auto recovered = Open(SmallOptions(crash));
  ASSERT_NE(recovered, nullptr);
  ExpectSame(Take(*recovered), before);
}

TEST_F(SqliteStoreTest, OpenUpgradesAVersion1DatabaseWithoutDeadLetters) {
  {
    auto store = Open();
    ASSERT_NE(store, nullptr);
    WriteBatch b = EverythingBatch();
    b.dead_letters.clear();
    IOT_ASSERT_OK(store->Apply(b));
  }
  {
    // What version 1 of the schema was: everything but the dead_letters and alert_acks tables.
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open((dir_ / "store.db").c_str(), &db), SQLITE_OK);
    EXPECT_EQ(sqlite3_exec(db,
                           "DROP TABLE dead_letters; DROP TABLE alert_acks; "
                           "PRAGMA user_version = 1",
                           nullptr, nullptr, nullptr),
              SQLITE_OK);
    sqlite3_close(db);
  }
  auto store = Open();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(ReadAll(*store, TelemetryQuery{}).size(), 3u);
  EXPECT_TRUE(ReadAllDeadLetters(*store, DeadLetterQuery{}).empty());
  WriteBatch next;
  next.dead_letters = EverythingBatch().dead_letters;
  next.checkpoint = Checkpoint{"aggregator", 2, 5, 4};
  IOT_ASSERT_OK(store->Apply(next));
  EXPECT_EQ(ReadAllDeadLetters(*store, DeadLetterQuery{}), next.dead_letters);
}

TEST_F(SqliteStoreTest, OpenUpgradesAVersion2DatabaseWithoutAcknowledgements) {
  core::Alert alert;
  {
    auto store = Open();
    ASSERT_NE(store, nullptr);
    WriteBatch b = EverythingBatch();
    ASSERT_FALSE(b.alert_upserts.empty());
    alert = b.alert_upserts.back();
    alert.status = core::AlertStatus::kActive;
    b.alert_upserts = {alert};
    IOT_ASSERT_OK(store->Apply(b));
  }
  {
    // What version 2 of the schema was: everything but the alert_acks table.
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open((dir_ / "store.db").c_str(), &db), SQLITE_OK);
    EXPECT_EQ(sqlite3_exec(db, "DROP TABLE alert_acks; PRAGMA user_version = 2", nullptr, nullptr,
                           nullptr),
              SQLITE_OK);
    sqlite3_close(db);
  }
  auto store = Open();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(ReadAll(*store, TelemetryQuery{}).size(), 3u);
  auto found = store->FindAlert(alert.id);
  ASSERT_TRUE(found.ok());
  EXPECT_EQ(*found, std::optional<core::Alert>(alert));
  const core::AlertAck ack{core::FromUnixMicros(1'700'000'000'000'000), "me", ""};
  auto acked = store->Acknowledge(alert.id, ack);
  ASSERT_TRUE(acked.ok() && acked->has_value());
  EXPECT_EQ((*acked)->ack, std::optional<core::AlertAck>(ack));
}

TEST_F(SqliteStoreTest, OpenCreatesMissingDirectories) {
  SqliteStoreOptions o = SmallOptions(dir_ / "a" / "b");
  auto store = Open(o);
  ASSERT_NE(store, nullptr);
  EXPECT_TRUE(fs::exists(dir_ / "a" / "b" / "store.db"));
}

TEST_F(SqliteStoreTest, OpenRejectsAFileThatIsNotADatabase) {
  {
    std::ofstream out(dir_ / "store.db");
    out << std::string(8192, 'x');
  }
  auto store = SqliteStore::Open(SmallOptions(dir_));
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.error().code, Errc::kCorruption);
}

TEST_F(SqliteStoreTest, OpenRejectsInvalidOptions) {
  SqliteStoreOptions o = SmallOptions(dir_);
  o.readers = 0;
  auto store = SqliteStore::Open(o);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.error().code, Errc::kInvalidArgument);
  o = SqliteStoreOptions{};
  store = SqliteStore::Open(o);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.error().code, Errc::kInvalidArgument);

  o = SmallOptions(dir_);
  o.retention.raw = core::Micros(0);
  store = SqliteStore::Open(o);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.error().code, Errc::kInvalidArgument);
  o.retention.raw.reset();
  o.retention.aggregates = {{std::chrono::minutes(1), core::Micros(-5)}};
  store = SqliteStore::Open(o);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.error().code, Errc::kInvalidArgument);
}

// RawConnection is another process's view of the file (here: another connection).
struct RawConnection {
  explicit RawConnection(const fs::path& path) {
    EXPECT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  }
  ~RawConnection() { sqlite3_close(db); }
  int Exec(const char* sql) { return sqlite3_exec(db, sql, nullptr, nullptr, nullptr); }
  sqlite3* db = nullptr;
};

TEST_F(SqliteStoreTest, ReadsProceedWhileAnotherWriterHoldsTheLockAndWritesReportUnavailable) {
  SqliteStoreOptions o = SmallOptions(dir_);
  o.busy_timeout_ms = 20;
  auto store = Open(o);
  ASSERT_NE(store, nullptr);
  IOT_ASSERT_OK(store->Apply(BatchOf({MakeReading(1, "d", At(1))})));

  RawConnection other(dir_ / "store.db");
  ASSERT_EQ(other.Exec("BEGIN IMMEDIATE; UPDATE totals SET readings = readings WHERE id = 1"),
            SQLITE_OK);

  // Reads see the last commit without waiting for the writer.
  EXPECT_EQ(ReadAll(*store, TelemetryQuery{}).size(), 1u);
  IOT_ASSERT_OK(store->Ping());
  // Writes cannot take the lock: retry later.
  Status s = store->Apply(BatchOf({MakeReading(2, "d", At(2))}));
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, Errc::kUnavailable);
  EXPECT_FALSE(store->Ping().ok());

  ASSERT_EQ(other.Exec("ROLLBACK"), SQLITE_OK);
  IOT_ASSERT_OK(store->Apply(BatchOf({MakeReading(2, "d", At(2))})));
  IOT_ASSERT_OK(store->Ping());
  EXPECT_EQ(ReadAll(*store, TelemetryQuery{}).size(), 2u);
}

TEST_F(SqliteStoreTest, ApplyThatFailsMidwayLeavesNothingBehind) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  // The alert is written after the readings, the dead letter and the new devices; its NaN value
  // violates a NOT NULL constraint, so the whole transaction rolls back.
  WriteBatch bad = EverythingBatch();
  bad.alert_upserts[0].value = std::numeric_limits<double>::quiet_NaN();
  ASSERT_FALSE(store->Apply(bad).ok());
  auto cp = store->LoadCheckpoint("aggregator", 2);
  ASSERT_TRUE(cp.ok());
  EXPECT_EQ(*cp, std::nullopt);
  EXPECT_TRUE(ReadAll(*store, TelemetryQuery{}).empty());
  EXPECT_TRUE(ReadAllDeadLetters(*store, DeadLetterQuery{}).empty());

  // Keys the failed Apply created must not be reused by the next one.
  IOT_ASSERT_OK(store->Apply(EverythingBatch()));
  EXPECT_EQ(ReadAllDeadLetters(*store, DeadLetterQuery{}), EverythingBatch().dead_letters);
  auto stats = store->GetStats(At(600));
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->devices, 2);
  EXPECT_EQ(stats->readings, 3);
  auto d = store->FindDevice("dev-1");
  ASSERT_TRUE(d.ok());
  ASSERT_TRUE(d->has_value());
  EXPECT_EQ((*d)->readings, 2);
  TelemetryQuery q;
  q.device_id = "dev-1";
  EXPECT_EQ(ReadAll(*store, q).size(), 2u);
}

TEST_F(SqliteStoreTest, CorruptChunkIsReportedNotReturned) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  IOT_ASSERT_OK(store->Apply(BatchOf({MakeReading(1, "d", At(1)), MakeReading(2, "d", At(2))})));
  RawConnection other(dir_ / "store.db");
  ASSERT_EQ(other.Exec("UPDATE raw_chunks SET data = x'01ff'"), SQLITE_OK);

  TelemetryQuery q;
  q.device_id = "d";
  auto page = store->Telemetry(q);
  ASSERT_FALSE(page.ok());
  EXPECT_EQ(page.error().code, Errc::kCorruption);
}

TEST_F(SqliteStoreTest, LargeBatchesSplitIntoManyChunksReadBackExactly) {
  // One device: 3,000 readings 1 ms apart (more than a chunk holds), a cluster an hour earlier
  // and one two days later; then a second batch overlapping the first in time.
  auto store = Open();
  ASSERT_NE(store, nullptr);
  std::vector<StoredReading> batch1, batch2, all;
  std::int64_t id = 1;
  for (int i = 0; i < 3000; ++i) batch1.push_back(MakeReading(id++, "d", At(i * 0.001)));
  for (int i = 0; i < 50; ++i) batch1.push_back(MakeReading(id++, "d", At(-3600 + i)));
  batch1.push_back(MakeReading(id++, "d", At(2 * 86400)));
  for (int i = 0; i < 500; ++i) batch2.push_back(MakeReading(id++, "d", At(i * 0.006 + 0.0005)));
  IOT_ASSERT_OK(store->Apply(BatchOf(batch1)));
  IOT_ASSERT_OK(store->Apply(BatchOf(batch2)));
  all = batch1;
  all.insert(all.end(), batch2.begin(), batch2.end());
  std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) {
    return std::make_pair(a.reading.ts, a.id) > std::make_pair(b.reading.ts, b.id);
  });

  for (std::size_t limit : {std::size_t{1}, std::size_t{333}, std::size_t{5000}}) {
    TelemetryQuery q;
    q.device_id = "d";
    q.limit = limit;
    q.range.from = At(-1800);
    q.range.to = At(2.5);
    std::vector<StoredReading> want;
    for (const auto& r : all) {
      if (r.reading.ts >= At(-1800) && r.reading.ts < At(2.5)) want.push_back(r);
    }
    if (limit == 1) {
      // One page of one reading at a time would take thousands of queries: check the first
      // few pages only.
      TelemetryQuery page_q = q;
      for (std::size_t i = 0; i < 20; ++i) {
        auto page = store->Telemetry(page_q);
        ASSERT_TRUE(page.ok());
        ASSERT_EQ(page->items.size(), 1u);
        EXPECT_EQ(page->items[0], want[i]);
        page_q.after = page->next;
      }
      continue;
    }
    EXPECT_EQ(ReadAll(*store, q), want) << "limit " << limit;
  }
  auto stats = store->GetStats(At(0));
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->readings, static_cast<std::int64_t>(all.size()));
}

// CountRows counts the rows of `table` through a separate connection.
std::int64_t CountRows(const fs::path& db, const std::string& table) {
  RawConnection conn(db);
  sqlite3_stmt* stmt = nullptr;
  std::string sql = "SELECT count(*) FROM " + table;
  EXPECT_EQ(sqlite3_prepare_v2(conn.db, sql.c_str(), -1, &stmt, nullptr), SQLITE_OK);
  std::int64_t n = -1;
  if (sqlite3_step(stmt) == SQLITE_ROW) n = sqlite3_column_int64(stmt, 0);
  sqlite3_finalize(stmt);
  return n;
}

TEST_F(SqliteStoreTest, ChunksStayFindableWhenTheRecentIndexIsMergedIntoTheMainIndex) {
  // Readings three hours apart get a chunk each: one batch puts more entries into the recent
  // index tier than it holds (detail::kRecentIndexRows), which moves them into the main tier;
  // later batches start a new recent tier. Every listing must see both tiers.
  constexpr double kGap = 3 * 3600.0;
  auto store = Open();
  ASSERT_NE(store, nullptr);
  std::vector<StoredReading> all;
  std::int64_t id = 1;
  for (int i = 0; i < 40000; ++i) all.push_back(MakeReading(id++, "d", At(i * kGap)));
  IOT_ASSERT_OK(store->Apply(BatchOf(all)));
  for (int b = 0; b < 3; ++b) {
    std::vector<StoredReading> more;
    for (int i = 0; i < 5; ++i) {
      // Newer readings, and late ones that fall between the old ones.
      more.push_back(MakeReading(id++, "d", At(40000 * kGap + b * 10 + i)));
      more.push_back(MakeReading(id++, "d", At((b * 5 + i) * kGap + 1)));
    }
    IOT_ASSERT_OK(store->Apply(BatchOf(more)));
    all.insert(all.end(), more.begin(), more.end());
  }
  const fs::path db = dir_ / "store.db";
  EXPECT_GE(CountRows(db, "chunk_index"), 40000);
  EXPECT_GT(CountRows(db, "chunk_index_recent"), 0);  // the later batches' chunks
  std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) {
    return std::make_pair(a.reading.ts, a.id) > std::make_pair(b.reading.ts, b.id);
  });

  TelemetryQuery q;
  q.device_id = "d";
  q.limit = 25;
  auto first = store->Telemetry(q);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->items, std::vector<StoredReading>(all.begin(), all.begin() + 25));
  // The oldest readings: old ones from the main tier, late ones from the recent tier.
  q.range.to = At(20 * kGap);
  q.limit = 7;
  std::vector<StoredReading> want;
  for (const auto& r : all) {
    if (r.reading.ts < At(20 * kGap)) want.push_back(r);
  }
  EXPECT_EQ(ReadAll(*store, q), want);
  // After a reopen the recent tier is picked up again.
  store.reset();
  store = Open();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(ReadAll(*store, q), want);
  IOT_ASSERT_OK(store->Apply(BatchOf({MakeReading(id, "d", At(5))})));
  auto stats = store->GetStats(At(0));
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->readings, static_cast<std::int64_t>(all.size()) + 1);
}

// QueryInt runs a one-value query through a separate connection.
std::int64_t QueryInt(const fs::path& db, const std::string& sql) {
  RawConnection conn(db);
  sqlite3_stmt* stmt = nullptr;
  EXPECT_EQ(sqlite3_prepare_v2(conn.db, sql.c_str(), -1, &stmt, nullptr), SQLITE_OK) << sql;
  std::int64_t n = -1;
  if (sqlite3_step(stmt) == SQLITE_ROW) n = sqlite3_column_int64(stmt, 0);
  sqlite3_finalize(stmt);
  return n;
}

// ExpectChunkIndexesConsistent checks that every raw chunk has exactly one entry, matching its
// row, in one of the two index tiers, that no entry points nowhere, and that the totals count
// the readings the chunks hold.
void ExpectChunkIndexesConsistent(const fs::path& db) {
  for (const char* tier : {"chunk_index", "chunk_index_recent"}) {
    SCOPED_TRACE(tier);
    EXPECT_EQ(QueryInt(db, std::string("SELECT count(*) FROM ") + tier +
                               " i WHERE NOT EXISTS (SELECT 1 FROM raw_chunks c WHERE "
                               "c.chunk_id = i.chunk_id AND c.device_key = i.device_key AND "
                               "c.span_class = i.span_class AND c.max_ts = i.max_ts AND "
                               "c.min_ts = i.min_ts)"),
              0);
  }
  EXPECT_EQ(QueryInt(db, "SELECT count(*) FROM raw_chunks"),
            QueryInt(db, "SELECT count(*) FROM chunk_index") +
                QueryInt(db, "SELECT count(*) FROM chunk_index_recent"));
  EXPECT_EQ(QueryInt(db, "SELECT sum(n) FROM raw_chunks"),
            QueryInt(db, "SELECT readings FROM totals"));
}

TEST_F(SqliteStoreTest, ExpireInManySmallTransactionsKeepsBothChunkIndexTiersConsistent) {
  // 40,000 readings three hours apart (a chunk each: more than the recent tier holds, so they
  // move to the main tier) and a dense run across the cutoff, then late and new readings in the
  // recent tier, again with a dense run across the cutoff. Expire deletes about half the chunks
  // (many times kExpireChunksPerTxn) and trims the two dense runs' chunks.
  constexpr double kGap = 3 * 3600.0;
  constexpr double kCutoff = 20000 * kGap + 1800;
  SqliteStoreOptions options = SmallOptions(dir_);
  options.retention.raw = std::chrono::hours(1);
  auto store = Open(options);
  ASSERT_NE(store, nullptr);
  std::vector<StoredReading> all;
  std::int64_t id = 1;
  {
    std::vector<StoredReading> big;
    for (int i = 0; i < 40000; ++i) big.push_back(MakeReading(id++, "d", At(i * kGap)));
    for (int i = -50; i < 50; ++i) big.push_back(MakeReading(id++, "e", At(kCutoff + i)));
    IOT_ASSERT_OK(store->Apply(BatchOf(big)));
    all.insert(all.end(), big.begin(), big.end());
  }
  const fs::path db = dir_ / "store.db";
  ASSERT_GE(CountRows(db, "chunk_index"), 40000);
  {
    std::vector<StoredReading> more;
    for (int i = 0; i < 20; ++i) more.push_back(MakeReading(id++, "d", At(i * 2000 * kGap + 1)));
    for (int i = -30; i < 30; ++i) more.push_back(MakeReading(id++, "d", At(kCutoff + i + 0.5)));
    more.push_back(MakeReading(id++, "e", At(41000 * kGap)));
    IOT_ASSERT_OK(store->Apply(BatchOf(more)));
    all.insert(all.end(), more.begin(), more.end());
  }
  ASSERT_GT(CountRows(db, "chunk_index_recent"), 0);

  const core::Timestamp cutoff = At(kCutoff);
  std::int64_t old = 0;
  for (const auto& r : all) old += r.reading.ts < cutoff ? 1 : 0;
  auto deleted = store->Expire(cutoff + std::chrono::hours(1));
  ASSERT_TRUE(deleted.ok()) << deleted.error().message;
  EXPECT_EQ(*deleted, old);

  EXPECT_EQ(QueryInt(db, "SELECT count(*) FROM raw_chunks WHERE min_ts < " +
                             std::to_string(core::ToUnixMicros(cutoff))),
            0);
  ExpectChunkIndexesConsistent(db);
  std::vector<StoredReading> kept;
  for (const auto& r : all) {
    if (r.reading.ts >= cutoff) kept.push_back(r);
  }
  std::sort(kept.begin(), kept.end(), [](const auto& a, const auto& b) {
    return std::make_pair(a.reading.ts, a.id) > std::make_pair(b.reading.ts, b.id);
  });
  TelemetryQuery q;
  q.limit = 5000;
  q.range.to = At(kCutoff + 100);
  std::vector<StoredReading> want;
  for (const auto& r : kept) {
    if (r.reading.ts < At(kCutoff + 100)) want.push_back(r);
  }
  ASSERT_EQ(want.size(), 80u);  // the two dense runs' newer halves
  EXPECT_EQ(ReadAll(*store, q), want);
  q.device_id = "d";
  std::erase_if(want, [](const auto& r) { return r.reading.device_id != "d"; });
  EXPECT_EQ(ReadAll(*store, q), want);
  auto stats = store->GetStats(At(0));
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->readings, static_cast<std::int64_t>(kept.size()));

  // The writer's count of the recent tier stayed right: further Applies and a reopen agree.
  IOT_ASSERT_OK(store->Apply(BatchOf({MakeReading(id++, "d", At(kCutoff + 7))})));
  store.reset();
  store = Open(options);
  ASSERT_NE(store, nullptr);
  IOT_ASSERT_OK(store->Apply(BatchOf({MakeReading(id++, "d", At(kCutoff + 8))})));
  ExpectChunkIndexesConsistent(db);
  auto again = store->Expire(cutoff + std::chrono::hours(1));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, 0);
}

TEST_F(SqliteStoreTest, ExpireDeletesMoreAggregatesThanOneTransactionHolds) {
  SqliteStoreOptions options = SmallOptions(dir_);
  options.retention.aggregates = {{std::chrono::minutes(1), std::chrono::hours(1)}};
  auto store = Open(options);
  ASSERT_NE(store, nullptr);
  WriteBatch b;
  core::Accumulator acc;
  acc.Add(1);
  for (int d = 0; d < 40; ++d) {
    for (std::string sensor : {"temperature_c", "humidity"}) {
      for (int m = 0; m <= 120; ++m) {
        b.aggregates.push_back(AggregateDelta{
            {"dev-" + std::to_string(d), sensor, std::chrono::minutes(1), At(60.0 * m)}, acc});
      }
    }
  }
  IOT_ASSERT_OK(store->Apply(b));
  // Window starts before 2h - 1h: minutes 0..59.
  const std::int64_t old = 40 * 2 * 60;
  ASSERT_GT(old, 4096);
  auto deleted = store->Expire(At(7200));
  ASSERT_TRUE(deleted.ok()) << deleted.error().message;
  EXPECT_EQ(*deleted, old);
  const fs::path db = dir_ / "store.db";
  EXPECT_EQ(QueryInt(db, "SELECT count(*) FROM aggregated_data"), 40 * 2 * 61);
  EXPECT_EQ(QueryInt(db, "SELECT count(*) FROM aggregated_data WHERE window_start < " +
                             std::to_string(core::ToUnixMicros(At(3600)))),
            0);
  auto stats = store->GetStats(At(7200));
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->aggregates, 40 * 2 * 61);
}

TEST_F(SqliteStoreTest, ApplyAndExpireFromTwoThreadsKeepTheTotalsExact) {
  // One thread applies batches of new readings (kept) and late ones (expired); another expires
  // meanwhile. After a last Expire only the new readings are left, and the totals agree.
  SqliteStoreOptions options = SmallOptions(dir_);
  options.retention.raw = std::chrono::hours(1);
  auto store = Open(options);
  ASSERT_NE(store, nullptr);
  const core::Timestamp now = At(100000);
  constexpr int kBatches = 60;
  std::atomic<bool> done{false};
  std::vector<StoredReading> fresh;
  const std::vector<std::string> devices = {"d0", "d1", "d2", "d3", "d4"};
  std::thread writer([&] {
    std::int64_t id = 1;
    for (int b = 0; b < kBatches; ++b) {
      std::vector<StoredReading> rs;
      for (int i = 0; i < 50; ++i) {
        const std::string& device = devices[static_cast<std::size_t>(i % 5)];
        rs.push_back(MakeReading(id++, device, At(100000 - 3600 + b * 50 + i)));
        fresh.push_back(rs.back());
        rs.push_back(MakeReading(id++, device, At(100000 - 3600 - 1 - b * 50 - i)));
      }
      EXPECT_TRUE(store->Apply(BatchOf(rs)).ok());
    }
    done.store(true);
  });
  std::int64_t deleted = 0;
  while (!done.load()) {
    auto n = store->Expire(now);
    if (!n.ok()) {
      ADD_FAILURE() << n.error().message;  // no ASSERT: the writer thread must be joined
      break;
    }
    deleted += *n;
  }
  writer.join();
  auto last = store->Expire(now);
  ASSERT_TRUE(last.ok());
  deleted += *last;
  EXPECT_EQ(deleted, kBatches * 50);

  std::sort(fresh.begin(), fresh.end(), [](const auto& a, const auto& b) {
    return std::make_pair(a.reading.ts, a.id) > std::make_pair(b.reading.ts, b.id);
  });
  TelemetryQuery q;
  q.limit = 1000;
  EXPECT_EQ(ReadAll(*store, q), fresh);
  auto stats = store->GetStats(now);
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->readings, kBatches * 50);
  ExpectChunkIndexesConsistent(dir_ / "store.db");
}

TEST_F(SqliteStoreTest, ReadersSeeWholeBatchesWhileAWriterApplies) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  constexpr int kBatches = 40;
  constexpr int kPerBatch = 30;  // 3 devices x 10 readings
  std::atomic<bool> done{false};
  std::thread writer([&] {
    std::int64_t id = 1;
    for (int b = 0; b < kBatches; ++b) {
      const std::int64_t from = id;
      std::vector<StoredReading> rs;
      for (int i = 0; i < kPerBatch; ++i) {
        rs.push_back(MakeReading(id, "d" + std::to_string(i % 3), At(static_cast<double>(id))));
        ++id;
      }
      WriteBatch batch = BatchOf(rs);
      batch.checkpoint = Checkpoint{"aggregator", 0, id, from};
      EXPECT_TRUE(store->Apply(batch).ok());
    }
    done.store(true);
  });
  auto reader = [&] {
    int checks = 0;
    while (!done.load() || checks < 5) {
      ++checks;
      auto stats = store->GetStats(At(0));
      ASSERT_TRUE(stats.ok());
      EXPECT_EQ(stats->readings % kPerBatch, 0) << "a batch was seen half applied";
      TelemetryQuery q;
      q.device_id = "d1";
      q.limit = 1000;
      auto page = store->Telemetry(q);
      ASSERT_TRUE(page.ok());
      EXPECT_EQ(page->items.size() % (kPerBatch / 3), 0u) << "a batch was seen half applied";
      for (std::size_t i = 1; i < page->items.size(); ++i) {
        EXPECT_GT(page->items[i - 1].reading.ts, page->items[i].reading.ts);
      }
    }
  };
  std::thread r1(reader), r2(reader);
  writer.join();
  r1.join();
  r2.join();
  auto stats = store->GetStats(At(0));
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->readings, kBatches * kPerBatch);
}

}  // namespace
}  // namespace iot::store
