// store_conformance.cc: the Store conformance suite (see store_conformance.h).
#include "store_conformance.h"

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <tuple>
#include <utility>

#include "testing/test_util.h"

namespace iot::store::testing {
namespace {

using core::AlertStatus;
using core::Micros;
using std::chrono::hours;
using std::chrono::minutes;

using ::iot::testing::Must;

std::vector<std::int64_t> Ids(const std::vector<StoredReading>& rs) {
  std::vector<std::int64_t> out;
  for (const auto& r : rs) out.push_back(r.id.value);
  return out;
}

std::vector<std::int64_t> AlertIds(const std::vector<core::Alert>& as) {
  std::vector<std::int64_t> out;
  for (const auto& a : as) out.push_back(a.id);
  return out;
}

TelemetryQuery ForDevice(const std::string& device, std::size_t limit = 100) {
  TelemetryQuery q;
  q.device_id = device;
  q.limit = limit;
  return q;
}

// Newest-first order of readings as listed.
bool Newer(const StoredReading& a, const StoredReading& b) {
  return std::make_pair(a.reading.ts, a.id) > std::make_pair(b.reading.ts, b.id);
}

AggregateDelta Delta(const std::string& device, const std::string& sensor, Micros window,
                     core::Timestamp start, std::vector<double> values) {
  AggregateDelta d;
  d.key = core::AggregateKey{device, sensor, window, start};
  for (double v : values) d.acc.Add(v);
  return d;
}

std::vector<core::Alert> ReadAllAlerts(Store& store, AlertQuery q) {
  std::vector<core::Alert> out;
  for (int guard = 0; guard < 10000; ++guard) {
    auto page = Must(store.Alerts(q));
    out.insert(out.end(), page.items.begin(), page.items.end());
    if (!page.next) return out;
    q.after = page.next;
  }
  ADD_FAILURE() << "pagination did not end";
  return out;
}

using AggregateTuple = std::tuple<std::string, std::string, std::int64_t, std::int64_t,
                                  std::int64_t, double, double, double>;
AggregateTuple TupleOf(const Aggregate& a) {
  return {a.key.device_id,
          a.key.sensor_type,
          a.key.window.count(),
          core::ToUnixMicros(a.key.window_start),
          a.acc.count,
          a.acc.sum,
          a.acc.min,
          a.acc.max};
}

// ExpectNewestFirstAndEqualAsSets checks that `got` lists exactly `want` (each once), ordered by
// window start descending (the order among equal window starts is the implementation's).
void ExpectNewestFirstAndEqualAsSets(const std::vector<Aggregate>& got,
                                     const std::vector<Aggregate>& want) {
  for (std::size_t i = 1; i < got.size(); ++i) {
    EXPECT_GE(got[i - 1].key.window_start, got[i].key.window_start) << "at " << i;
  }
  std::multiset<AggregateTuple> g, w;
  for (const auto& a : got) g.insert(TupleOf(a));
  for (const auto& a : want) w.insert(TupleOf(a));
  EXPECT_EQ(g.size(), got.size());
  EXPECT_EQ(g, w);
}

Device DeviceOf(Store& store, const std::string& id) {
  auto d = Must(store.FindDevice(id));
  if (!d) {
    ADD_FAILURE() << "device " << id << " not found";
    return Device{};
  }
  return *d;
}

// View is everything a store shows, for checking that a refused batch changed nothing.
struct View {
  std::vector<StoredReading> telemetry;
  std::vector<Aggregate> aggregates;
  std::vector<core::Alert> alerts;  // every status, by id
  std::vector<Device> devices;
  std::vector<DeadLetter> dead_letters;
  std::optional<std::int64_t> checkpoint;  // aggregator/0
  Stats stats;
};

View ViewOf(Store& store) {
  View v;
  TelemetryQuery all;
  all.limit = 1000;
  v.telemetry = ReadAll(store, all);
  AggregateQuery aggs;
  aggs.limit = 1000;
  v.aggregates = Must(store.Aggregates(aggs)).items;
  v.alerts = Must(store.OpenAlerts());
  AlertQuery resolved;
  resolved.status = AlertStatus::kResolved;
  resolved.limit = 1000;
  for (auto& a : Must(store.Alerts(resolved)).items) v.alerts.push_back(std::move(a));
  std::sort(v.alerts.begin(), v.alerts.end(), [](const auto& x, const auto& y) {
    return x.id < y.id;
  });
  v.devices = Must(store.Devices(DeviceQuery{}));
  DeadLetterQuery dlq;
  dlq.limit = 1000;
  v.dead_letters = ReadAllDeadLetters(store, dlq);
  v.checkpoint = Must(store.LoadCheckpoint("aggregator", 0));
  v.stats = Must(store.GetStats(At(600)));
  return v;
}

void ExpectSameView(const View& got, const View& want) {
  EXPECT_EQ(got.telemetry, want.telemetry);
  EXPECT_EQ(got.aggregates, want.aggregates);
  EXPECT_EQ(got.alerts, want.alerts);
  EXPECT_EQ(got.devices, want.devices);
  EXPECT_EQ(got.dead_letters, want.dead_letters);
  EXPECT_EQ(got.checkpoint, want.checkpoint);
  EXPECT_EQ(got.stats.devices, want.stats.devices);
  EXPECT_EQ(got.stats.readings, want.stats.readings);
  EXPECT_EQ(got.stats.aggregates, want.stats.aggregates);
  EXPECT_EQ(got.stats.alerts, want.stats.alerts);
  EXPECT_EQ(got.stats.active_alerts, want.stats.active_alerts);
  EXPECT_EQ(got.stats.ingest_rate_per_s, want.stats.ingest_rate_per_s);
}

// DeadLetterKey identifies a dead letter (its unique position) for set comparisons.
std::tuple<std::string, std::string, std::int32_t, std::int64_t> DeadLetterKey(
    const DeadLetter& dl) {
  return {dl.consumer, dl.topic, dl.partition, dl.offset};
}

// ExpectNewestFirstSameDeadLetters checks that `got` lists exactly `want` (each once), ordered by
// failed_at descending (the order among equal times is the implementation's).
void ExpectNewestFirstSameDeadLetters(const std::vector<DeadLetter>& got,
                                      std::vector<DeadLetter> want) {
  for (std::size_t i = 1; i < got.size(); ++i) {
    EXPECT_GE(got[i - 1].failed_at, got[i].failed_at) << "at " << i;
  }
  std::vector<DeadLetter> sorted = got;
  auto by_key = [](const DeadLetter& x, const DeadLetter& y) {
    return DeadLetterKey(x) < DeadLetterKey(y);
  };
  std::sort(sorted.begin(), sorted.end(), by_key);
  std::sort(want.begin(), want.end(), by_key);
  EXPECT_EQ(sorted, want);
}

}  // namespace

// ---- helpers ------------------------------------------------------------------------------

std::string StoreFactoryName(const ::testing::TestParamInfo<StoreFactory>& info) {
  return info.param.name;
}

void PrintTo(const StoreFactory& factory, std::ostream* os) { *os << factory.name; }

void StoreConformance::SetUp() {
  store_ = GetParam().make(Retention{});
  ASSERT_NE(store_, nullptr);
}

std::unique_ptr<Store> StoreConformance::MakeStore(const Retention& retention) {
  auto made = GetParam().make(retention);
  EXPECT_NE(made, nullptr);
  return made;
}

void StoreConformance::TearDown() {
  store_.reset();
  if (GetParam().cleanup) GetParam().cleanup();
}

core::Timestamp At(double seconds) {
  return core::FromUnixMicros(kBaseUs + static_cast<std::int64_t>(seconds * 1e6));
}

StoredReading MakeReading(std::int64_t id, const std::string& device_id, core::Timestamp ts,
                          double temperature, double humidity) {
  StoredReading r;
  r.id = core::MessageId{id};
  r.reading.device_id = device_id;
  r.reading.ts = ts;
  r.reading.sensors = {{"temperature_c", temperature}, {"humidity", humidity}};
  return r;
}

WriteBatch BatchOf(std::vector<StoredReading> readings) {
  WriteBatch b;
  std::map<std::string, std::size_t> index;
  for (const auto& r : readings) {
    auto [it, inserted] = index.try_emplace(r.reading.device_id, b.devices.size());
    if (inserted) {
      DeviceUpdate u;
      u.device_id = r.reading.device_id;
      u.first_seen = u.last_seen = r.reading.ts;
      u.readings = 1;
      u.latest = r.reading;
      b.devices.push_back(std::move(u));
      continue;
    }
    DeviceUpdate& u = b.devices[it->second];
    ++u.readings;
    u.first_seen = std::min(u.first_seen, r.reading.ts);
    if (r.reading.ts >= u.last_seen) {
      u.last_seen = r.reading.ts;
      u.latest = r.reading;
    }
  }
  b.readings = std::move(readings);
  return b;
}

core::Alert MakeAlert(std::int64_t id, const std::string& device_id, core::AlertStatus status,
                      core::Timestamp created_at) {
  core::Alert a;
  a.id = id;
  a.device_id = device_id;
  a.sensor_type = "temperature_c";
  a.value = 55.25;
  a.alert_type = "threshold_high";
  a.severity = "critical";
  a.message = "temperature_c 55.25 above 50";
  a.timestamp = created_at + std::chrono::seconds(30);
  a.status = status;
  a.threshold = 50;
  a.created_at = created_at;
  a.updated_at = created_at + std::chrono::seconds(30);
  if (status == AlertStatus::kResolved) a.resolved_at = created_at + std::chrono::seconds(90);
  a.count = 4;
  return a;
}

DeadLetter MakeDeadLetter(const std::string& consumer, std::int64_t offset,
                          core::Timestamp failed_at, std::string payload) {
  DeadLetter dl;
  dl.consumer = consumer;
  dl.topic = "telemetry.raw";
  dl.partition = 0;
  dl.offset = offset;
  dl.key = "dev-" + std::to_string(offset);
  dl.payload = std::move(payload);
  dl.reason = "undecodable: the payload is not a JSON object";
  dl.attempts = 3;
  dl.failed_at = failed_at;
  return dl;
}

std::vector<DeadLetter> ReadAllDeadLetters(Store& store, DeadLetterQuery q) {
  std::vector<DeadLetter> out;
  for (int guard = 0; guard < 10000; ++guard) {
    auto page = Must(store.DeadLetters(q));
    EXPECT_LE(page.items.size(), q.limit);
    out.insert(out.end(), page.items.begin(), page.items.end());
    if (!page.next) return out;
    q.after = page.next;
  }
  ADD_FAILURE() << "pagination did not end";
  return out;
}

std::vector<StoredReading> ReadAll(Store& store, TelemetryQuery q) {
  std::vector<StoredReading> out;
  for (int guard = 0; guard < 100000; ++guard) {
    auto page = Must(store.Telemetry(q));
    EXPECT_LE(page.items.size(), q.limit);
    out.insert(out.end(), page.items.begin(), page.items.end());
    if (!page.next) return out;
    q.after = page.next;
  }
  ADD_FAILURE() << "pagination did not end";
  return out;
}

// ---- raw readings -------------------------------------------------------------------------

TEST_P(StoreConformance, ApplyStoresEveryFieldOfAReading) {
  StoredReading full = MakeReading(7, "dev-1", At(10), 21.25, 55.5);
  full.reading.lat = 48.8566;
  full.reading.lon = -2.3522;
  full.reading.sensors.push_back({"co2_ppm", 412.0});
  full.reading.sensors.push_back({"battery_v", -0.5});
  StoredReading bare = MakeReading(8, "dev-1", At(11), -3.0, 0.0);
  StoredReading only_lat = MakeReading(9, "dev-1", At(12));
  only_lat.reading.lat = 0.0;
  IOT_ASSERT_OK(store().Apply(BatchOf({full, bare, only_lat})));

  auto page = Must(store().Telemetry(ForDevice("dev-1")));
  EXPECT_EQ(page.items, (std::vector<StoredReading>{only_lat, bare, full}));
  EXPECT_FALSE(page.next);
}

TEST_P(StoreConformance, TelemetryListsNewestFirstWithIdsBreakingTies) {
  IOT_ASSERT_OK(store().Apply(BatchOf({MakeReading(3, "d", At(5)), MakeReading(4, "d", At(1))})));
  IOT_ASSERT_OK(store().Apply(BatchOf({MakeReading(1, "d", At(5)), MakeReading(2, "d", At(9))})));

  auto page = Must(store().Telemetry(ForDevice("d")));
  EXPECT_EQ(Ids(page.items), (std::vector<std::int64_t>{2, 3, 1, 4}));
}

TEST_P(StoreConformance, TelemetryHonoursFromInclusiveAndToExclusive) {
  std::vector<StoredReading> rs;
  for (int i = 0; i < 10; ++i) rs.push_back(MakeReading(i + 1, "d", At(i)));
  IOT_ASSERT_OK(store().Apply(BatchOf(rs)));

  TelemetryQuery q = ForDevice("d");
  q.range.from = At(3);
  q.range.to = At(7);
  auto page = Must(store().Telemetry(q));
  EXPECT_EQ(Ids(page.items), (std::vector<std::int64_t>{7, 6, 5, 4}));

  q.device_id.reset();
  page = Must(store().Telemetry(q));
  EXPECT_EQ(Ids(page.items), (std::vector<std::int64_t>{7, 6, 5, 4}));
}

TEST_P(StoreConformance, TelemetryWithoutDeviceListsEveryDeviceNewestFirst) {
  IOT_ASSERT_OK(store().Apply(BatchOf({MakeReading(1, "a", At(1)), MakeReading(2, "b", At(2)),
                                   MakeReading(3, "c", At(2)), MakeReading(4, "a", At(3))})));
  TelemetryQuery q;
  auto page = Must(store().Telemetry(q));
  EXPECT_EQ(Ids(page.items), (std::vector<std::int64_t>{4, 3, 2, 1}));
  EXPECT_EQ(page.items[1].reading.device_id, "c");
}

TEST_P(StoreConformance, CompletePageHasNoNextCursorAndFullPageLeadsToTheRest) {
  std::vector<StoredReading> rs;
  for (int i = 0; i < 5; ++i) rs.push_back(MakeReading(i + 1, "d", At(i)));
  IOT_ASSERT_OK(store().Apply(BatchOf(rs)));

  auto all = Must(store().Telemetry(ForDevice("d", 10)));
  EXPECT_EQ(all.items.size(), 5u);
  EXPECT_FALSE(all.next);

  auto first = Must(store().Telemetry(ForDevice("d", 3)));
  EXPECT_EQ(Ids(first.items), (std::vector<std::int64_t>{5, 4, 3}));
  ASSERT_TRUE(first.next);
  TelemetryQuery q = ForDevice("d", 3);
  q.after = first.next;
  auto second = Must(store().Telemetry(q));
  EXPECT_EQ(Ids(second.items), (std::vector<std::int64_t>{2, 1}));
  EXPECT_FALSE(second.next);
}

TEST_P(StoreConformance, PaginationHasNoGapsOrDuplicatesWhileNewerDataArrives) {
  std::vector<StoredReading> original;
  for (int i = 0; i < 250; ++i) {
    original.push_back(MakeReading(i + 1, i % 2 ? "odd" : "even", At(i / 2)));
  }
  IOT_ASSERT_OK(store().Apply(BatchOf(original)));
  std::vector<StoredReading> stored = original;
  double fresh_t = 500;  // newer than everything before, and increasing

  for (bool one_device : {true, false}) {
    SCOPED_TRACE(one_device ? "one device" : "all devices");
    const std::vector<StoredReading> before = stored;
    TelemetryQuery q;
    if (one_device) q.device_id = "even";
    q.limit = 40;
    std::vector<StoredReading> seen;
    std::int64_t next_id = one_device ? 1000 : 2000;
    for (int page_no = 0; page_no < 100; ++page_no) {
      auto page = Must(store().Telemetry(q));
      seen.insert(seen.end(), page.items.begin(), page.items.end());
      // Newer readings (and a second device's) arrive between pages.
      std::vector<StoredReading> fresh;
      for (int k = 0; k < 7; ++k) {
        fresh.push_back(MakeReading(next_id, k % 2 ? "odd" : "even", At(fresh_t)));
        ++next_id;
        fresh_t += 0.25;
      }
      IOT_ASSERT_OK(store().Apply(BatchOf(fresh)));
      stored.insert(stored.end(), fresh.begin(), fresh.end());
      if (!page.next) break;
      q.after = page.next;
    }
    std::vector<StoredReading> want;
    for (const auto& r : before) {
      if (!one_device || r.reading.device_id == "even") want.push_back(r);
    }
    std::sort(want.begin(), want.end(), Newer);
    EXPECT_EQ(Ids(seen), Ids(want));
  }
}

TEST_P(StoreConformance, LateAndOutOfOrderReadingsAreListedExactlyInTimeOrder) {
  // Batches as a bus would deliver them (ids ascending), with timestamps that jitter, tie, and
  // sometimes arrive hours late; then every listing is compared with a brute-force answer.
  std::mt19937_64 rng(20240611);
  const std::vector<std::string> devices = {"d0", "d1", "d2"};
  std::vector<StoredReading> all;
  std::int64_t id = 1;
  for (int batch = 0; batch < 60; ++batch) {
    std::vector<StoredReading> rs;
    auto n = std::uniform_int_distribution<int>(1, 20)(rng);
    for (int i = 0; i < n; ++i) {
      double t = batch * 2.0 + std::uniform_int_distribution<int>(0, 3)(rng) * 0.5;
      int roll = std::uniform_int_distribution<int>(0, 9)(rng);
      if (roll == 0) t -= std::uniform_int_distribution<int>(1, 7200)(rng);  // late
      if (roll == 1) t = 40;                                                 // ties
      const auto& dev = devices[std::uniform_int_distribution<std::size_t>(0, 2)(rng)];
      rs.push_back(MakeReading(id++, dev, At(t), static_cast<double>(i)));
    }
    all.insert(all.end(), rs.begin(), rs.end());
    IOT_ASSERT_OK(store().Apply(BatchOf(rs)));
  }

  struct Range {
    std::optional<double> from, to;
  };
  const std::vector<Range> ranges = {{}, {30.0, {}}, {{}, 60.0}, {-3600.0, 41.0}, {40.0, 40.5}};
  for (std::optional<std::string> device :
       {std::optional<std::string>(), std::optional<std::string>("d1")}) {
    for (const auto& range : ranges) {
      for (std::size_t limit : {std::size_t{7}, std::size_t{100}}) {
        SCOPED_TRACE(::testing::Message()
                     << "device=" << device.value_or("*") << " from=" << range.from.value_or(-1e9)
                     << " to=" << range.to.value_or(1e9) << " limit=" << limit);
        TelemetryQuery q;
        q.device_id = device;
        q.limit = limit;
        if (range.from) q.range.from = At(*range.from);
        if (range.to) q.range.to = At(*range.to);
        std::vector<StoredReading> want;
        for (const auto& r : all) {
          if (device && r.reading.device_id != *device) continue;
          if (q.range.from && r.reading.ts < *q.range.from) continue;
          if (q.range.to && r.reading.ts >= *q.range.to) continue;
          want.push_back(r);
        }
        std::sort(want.begin(), want.end(), Newer);
        auto got = ReadAll(store(), q);
        ASSERT_EQ(Ids(got), Ids(want));
        EXPECT_EQ(got, want);
      }
    }
  }
}

TEST_P(StoreConformance, ReplayedBatchWithAppliedCheckpointIsSkipped) {
  WriteBatch b = BatchOf({MakeReading(1, "d", At(1), 10), MakeReading(2, "d", At(2), 20)});
  b.aggregates = {Delta("d", "temperature_c", minutes(1), At(0), {10, 20})};
  b.ingested = 2;
  b.processed_at = At(3);
  b.checkpoint = Checkpoint{"aggregator", 0, 2, 0};
  IOT_ASSERT_OK(store().Apply(b));
  IOT_ASSERT_OK(store().Apply(b));

  // An older position with other content is skipped as well.
  WriteBatch older = BatchOf({MakeReading(5, "d", At(5))});
  older.checkpoint = Checkpoint{"aggregator", 0, 1, 0};
  IOT_ASSERT_OK(store().Apply(older));

  EXPECT_EQ(Ids(Must(store().Telemetry(ForDevice("d"))).items), (std::vector<std::int64_t>{2, 1}));
  EXPECT_EQ(DeviceOf(store(), "d").readings, 2);
  auto aggs = Must(store().Aggregates(AggregateQuery{})).items;
  ASSERT_EQ(aggs.size(), 1u);
  EXPECT_EQ(aggs[0].acc.count, 2);
  EXPECT_EQ(aggs[0].acc.sum, 30);
  auto stats = Must(store().GetStats(At(200)));
  EXPECT_EQ(stats.readings, 2);

  // The next position is applied.
  WriteBatch next = BatchOf({MakeReading(3, "d", At(3))});
  next.checkpoint = Checkpoint{"aggregator", 0, 3, 2};
  IOT_ASSERT_OK(store().Apply(next));
  EXPECT_EQ(DeviceOf(store(), "d").readings, 3);
}

TEST_P(StoreConformance, CheckpointsAreKeptPerConsumerAndPartition) {
  EXPECT_EQ(Must(store().LoadCheckpoint("aggregator", 0)), std::nullopt);

  WriteBatch b;
  b.checkpoint = Checkpoint{"aggregator", 0, 42, 0};
  IOT_ASSERT_OK(store().Apply(b));
  b.checkpoint = Checkpoint{"aggregator", 3, 7, 0};
  IOT_ASSERT_OK(store().Apply(b));
  b.checkpoint = Checkpoint{"alerts", 0, 5, 0};
  IOT_ASSERT_OK(store().Apply(b));
  b.checkpoint = Checkpoint{"aggregator", 0, 43, 42};
  IOT_ASSERT_OK(store().Apply(b));

  EXPECT_EQ(Must(store().LoadCheckpoint("aggregator", 0)), 43);
  EXPECT_EQ(Must(store().LoadCheckpoint("aggregator", 3)), 7);
  EXPECT_EQ(Must(store().LoadCheckpoint("alerts", 0)), 5);
  EXPECT_EQ(Must(store().LoadCheckpoint("alerts", 3)), std::nullopt);
}

// ---- checkpoint fencing ---------------------------------------------------------------------

// A worker that lost its partition in a rebalance while applying a batch (a zombie) must not
// apply a range that the partition's new owner applied in part: aggregates would count twice.
TEST_P(StoreConformance, BatchOverlappingTheStoredCheckpointIsAbortedAndWritesNothing) {
  WriteBatch first = BatchOf({MakeReading(1, "d", At(1), 10), MakeReading(2, "d", At(2), 20)});
  first.aggregates = {Delta("d", "temperature_c", minutes(1), At(0), {10, 20})};
  first.alert_upserts = {MakeAlert(7, "d", AlertStatus::kActive, At(1)),
                         MakeAlert(9, "d", AlertStatus::kPending, At(2))};
  first.dead_letters = {MakeDeadLetter("aggregator", 3, At(3))};
  first.ingested = 2;
  first.processed_at = At(3);
  first.checkpoint = Checkpoint{"aggregator", 0, 10, 0};
  IOT_ASSERT_OK(store().Apply(first));
  const View before = ViewOf(store());
  ASSERT_EQ(before.checkpoint, 10);

  // [5, 15) overlaps the stored 10: new readings, a new device, aggregate merges, alert changes,
  // a dead letter and an ingest count, none of which may be written.
  WriteBatch zombie =
      BatchOf({MakeReading(11, "d", At(11), 30), MakeReading(12, "e", At(12), 40)});
  zombie.aggregates = {Delta("d", "temperature_c", minutes(1), At(0), {30}),
                       Delta("e", "temperature_c", minutes(1), At(0), {40})};
  zombie.alert_upserts = {MakeAlert(7, "d", AlertStatus::kResolved, At(1)),
                          MakeAlert(8, "e", AlertStatus::kActive, At(12))};
  zombie.alert_deletes = {9};
  zombie.dead_letters = {MakeDeadLetter("aggregator", 13, At(13))};
  zombie.ingested = 2;
  zombie.processed_at = At(13);
  zombie.checkpoint = Checkpoint{"aggregator", 0, 15, 5};
  Status s = store().Apply(zombie);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, Errc::kAborted) << s.error().message;
  ExpectSameView(ViewOf(store()), before);

  // A batch that claims to start at 0 after 10 was stored is a zombie too.
  zombie.checkpoint = Checkpoint{"aggregator", 0, 11, 0};
  s = store().Apply(zombie);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, Errc::kAborted) << s.error().message;
  ExpectSameView(ViewOf(store()), before);
  EXPECT_EQ(Must(store().FindDevice("e")), std::nullopt);

  // Ending at or before the stored position: applied already, skipped whatever it starts at.
  zombie.checkpoint = Checkpoint{"aggregator", 0, 10, 5};
  IOT_ASSERT_OK(store().Apply(zombie));
  ExpectSameView(ViewOf(store()), before);
}

TEST_P(StoreConformance, BatchStartingAtOrBeyondTheStoredCheckpointIsApplied) {
  WriteBatch first = BatchOf({MakeReading(1, "d", At(1))});
  first.checkpoint = Checkpoint{"aggregator", 0, 10, 0};
  IOT_ASSERT_OK(store().Apply(first));

  // A gap (records 10 to 19 were deleted from the bus, or the worker was assigned at 20).
  WriteBatch gap = BatchOf({MakeReading(21, "d", At(21))});
  gap.aggregates = {Delta("d", "humidity", minutes(1), At(0), {40})};
  gap.checkpoint = Checkpoint{"aggregator", 0, 30, 20};
  IOT_ASSERT_OK(store().Apply(gap));
  EXPECT_EQ(Must(store().LoadCheckpoint("aggregator", 0)), 30);

  // Exactly at the stored position.
  WriteBatch next = BatchOf({MakeReading(30, "d", At(30))});
  next.aggregates = {Delta("d", "humidity", minutes(1), At(0), {42})};
  next.checkpoint = Checkpoint{"aggregator", 0, 31, 30};
  IOT_ASSERT_OK(store().Apply(next));
  EXPECT_EQ(Must(store().LoadCheckpoint("aggregator", 0)), 31);
  EXPECT_EQ(DeviceOf(store(), "d").readings, 3);
  auto aggs = Must(store().Aggregates(AggregateQuery{})).items;
  ASSERT_EQ(aggs.size(), 1u);
  EXPECT_EQ(aggs[0].acc.count, 2);

  // Nothing stored yet for another partition or consumer: applied from wherever it starts.
  WriteBatch other = BatchOf({MakeReading((std::int64_t{1} << 40) | 45, "d", At(45))});
  other.checkpoint = Checkpoint{"aggregator", 1, 50, 40};
  IOT_ASSERT_OK(store().Apply(other));
  WriteBatch alerts;
  alerts.checkpoint = Checkpoint{"alerts", 0, 5, 3};
  IOT_ASSERT_OK(store().Apply(alerts));
  EXPECT_EQ(Must(store().LoadCheckpoint("aggregator", 1)), 50);
  EXPECT_EQ(Must(store().LoadCheckpoint("alerts", 0)), 5);
  EXPECT_EQ(DeviceOf(store(), "d").readings, 4);
}

TEST_P(StoreConformance, ReadingsWithAStoredMessageIdAreNotStoredTwice) {
  std::vector<StoredReading> first, second;
  for (int i = 1; i <= 5; ++i) first.push_back(MakeReading(i, "d", At(i)));
  for (int i = 4; i <= 8; ++i) second.push_back(MakeReading(i, "d", At(i)));
  second.push_back(MakeReading(8, "d", At(8)));  // twice in one batch
  IOT_ASSERT_OK(store().Apply(BatchOf(first)));
  IOT_ASSERT_OK(store().Apply(BatchOf(second)));

  EXPECT_EQ(Ids(ReadAll(store(), ForDevice("d", 3))),
            (std::vector<std::int64_t>{8, 7, 6, 5, 4, 3, 2, 1}));
  EXPECT_EQ(DeviceOf(store(), "d").readings, 8);
  EXPECT_EQ(Must(store().GetStats(At(100))).readings, 8);
}

TEST_P(StoreConformance, DuplicatesOfOlderIdsAreDroppedAfterNewerIdsWereStored) {
  auto range = [](int lo, int hi) {
    std::vector<StoredReading> rs;
    for (int i = lo; i <= hi; ++i) rs.push_back(MakeReading(i, "d", At(i)));
    return rs;
  };
  IOT_ASSERT_OK(store().Apply(BatchOf(range(1, 10))));
  IOT_ASSERT_OK(store().Apply(BatchOf(range(20, 30))));
  IOT_ASSERT_OK(store().Apply(BatchOf(range(5, 25))));  // 5..10 and 20..25 are stored already

  std::vector<std::int64_t> want;
  for (int i = 30; i >= 1; --i) want.push_back(i);
  EXPECT_EQ(Ids(ReadAll(store(), ForDevice("d", 100))), want);
  EXPECT_EQ(DeviceOf(store(), "d").readings, 30);
}

// ---- aggregates ---------------------------------------------------------------------------

TEST_P(StoreConformance, AggregatesMergeCountSumMinMaxExactlyAcrossBatches) {
  WriteBatch b1;
  b1.aggregates = {Delta("d", "temperature_c", minutes(1), At(0), {1.25, 2.25})};
  WriteBatch b2;
  b2.aggregates = {Delta("d", "temperature_c", minutes(1), At(0), {0.5, 7.5, 2.0})};
  b2.checkpoint = Checkpoint{"aggregator", 0, 10, 0};
  IOT_ASSERT_OK(store().Apply(b1));
  IOT_ASSERT_OK(store().Apply(b2));
  IOT_ASSERT_OK(store().Apply(b2));  // replay: skipped

  auto page = Must(store().Aggregates(AggregateQuery{}));
  ASSERT_EQ(page.items.size(), 1u);
  const Aggregate& a = page.items[0];
  EXPECT_EQ(a.key, (core::AggregateKey{"d", "temperature_c", minutes(1), At(0)}));
  EXPECT_EQ(a.acc.count, 5);
  EXPECT_EQ(a.acc.sum, 13.5);
  EXPECT_EQ(a.acc.min, 0.5);
  EXPECT_EQ(a.acc.max, 7.5);
}

TEST_P(StoreConformance, AggregatesFilterByDeviceSensorWindowAndRange) {
  std::vector<Aggregate> all;
  WriteBatch b;
  for (std::string device : {"d1", "d2"}) {
    for (std::string sensor : {"temperature_c", "humidity"}) {
      for (Micros window : {Micros(minutes(1)), Micros(hours(1))}) {
        for (int i = 0; i < 3; ++i) {
          auto start = At(3600.0 * i);
          b.aggregates.push_back(Delta(device, sensor, window, start, {1.0 * i, 2.0}));
          all.push_back(Aggregate{b.aggregates.back().key, b.aggregates.back().acc});
        }
      }
    }
  }
  IOT_ASSERT_OK(store().Apply(b));

  for (std::optional<std::string> device :
       {std::optional<std::string>(), std::optional<std::string>("d2")}) {
    for (std::optional<std::string> sensor :
         {std::optional<std::string>(), std::optional<std::string>("humidity")}) {
      for (std::optional<Micros> window :
           {std::optional<Micros>(), std::optional<Micros>(hours(1))}) {
        for (bool ranged : {false, true}) {
          SCOPED_TRACE(::testing::Message()
                       << device.value_or("*") << " " << sensor.value_or("*") << " "
                       << (window ? window->count() : 0) << " " << ranged);
          AggregateQuery q;
          q.device_id = device;
          q.sensor_type = sensor;
          q.window = window;
          q.limit = 1000;
          if (ranged) {
            q.range.from = At(3600);
            q.range.to = At(7200);
          }
          std::vector<Aggregate> want;
          for (const auto& a : all) {
            if (device && a.key.device_id != *device) continue;
            if (sensor && a.key.sensor_type != *sensor) continue;
            if (window && a.key.window != *window) continue;
            if (ranged && (a.key.window_start < At(3600) || a.key.window_start >= At(7200))) {
              continue;
            }
            want.push_back(a);
          }
          ExpectNewestFirstAndEqualAsSets(Must(store().Aggregates(q)).items, want);
        }
      }
    }
  }

  AggregateQuery unknown;
  unknown.device_id = "nope";
  EXPECT_TRUE(Must(store().Aggregates(unknown)).items.empty());
  unknown.device_id.reset();
  unknown.sensor_type = "pressure";
  EXPECT_TRUE(Must(store().Aggregates(unknown)).items.empty());
  unknown.sensor_type.reset();
  unknown.window = minutes(5);
  EXPECT_TRUE(Must(store().Aggregates(unknown)).items.empty());
}

TEST_P(StoreConformance, AggregatePagesHaveNoGapsOrDuplicatesWithTiedWindowStarts) {
  std::vector<Aggregate> all;
  WriteBatch b;
  for (std::string device : {"a", "b", "c"}) {
    for (std::string sensor : {"temperature_c", "humidity"}) {
      for (Micros window : {Micros(minutes(1)), Micros(hours(1))}) {
        for (int i = 0; i < 5; ++i) {
          b.aggregates.push_back(Delta(device, sensor, window, At(60.0 * i), {1.0 * i}));
          all.push_back(Aggregate{b.aggregates.back().key, b.aggregates.back().acc});
        }
      }
    }
  }
  IOT_ASSERT_OK(store().Apply(b));

  for (std::optional<std::string> device :
       {std::optional<std::string>(), std::optional<std::string>("b")}) {
    AggregateQuery q;
    q.device_id = device;
    q.limit = 7;
    std::vector<Aggregate> got;
    for (int page_no = 0; page_no < 100; ++page_no) {
      auto page = Must(store().Aggregates(q));
      got.insert(got.end(), page.items.begin(), page.items.end());
      // Newer windows open between pages; they belong before the first page.
      WriteBatch fresh;
      fresh.aggregates = {
          Delta(device.value_or("a"), "humidity", minutes(1), At(6000.0 + page_no * 60), {1})};
      IOT_ASSERT_OK(store().Apply(fresh));
      if (!page.next) break;
      q.after = page.next;
    }
    std::vector<Aggregate> want;
    for (const auto& a : all) {
      if (!device || a.key.device_id == *device) want.push_back(a);
    }
    ExpectNewestFirstAndEqualAsSets(got, want);
  }
}

// ---- alerts -------------------------------------------------------------------------------

TEST_P(StoreConformance, AlertUpsertReplacesTheWholeAlert) {
  core::Alert pending = MakeAlert(100, "d", AlertStatus::kPending, At(10));
  WriteBatch b1;
  b1.alert_upserts = {pending};
  IOT_ASSERT_OK(store().Apply(b1));

  core::Alert resolved = MakeAlert(100, "d", AlertStatus::kResolved, At(10));
  resolved.value = 61.5;
  resolved.message = "back in range";
  resolved.severity = "warning";
  resolved.count = 17;
  resolved.threshold = 60;
  WriteBatch b2;
  b2.alert_upserts = {resolved};
  IOT_ASSERT_OK(store().Apply(b2));

  AlertQuery q;
  q.status = AlertStatus::kResolved;
  EXPECT_EQ(Must(store().Alerts(q)).items, (std::vector<core::Alert>{resolved}));
  q.status = AlertStatus::kPending;
  EXPECT_TRUE(Must(store().Alerts(q)).items.empty());
}

TEST_P(StoreConformance, AlertDeleteRemovesTheAlert) {
  WriteBatch b1;
  b1.alert_upserts = {MakeAlert(1, "d", AlertStatus::kPending, At(1)),
                      MakeAlert(2, "d", AlertStatus::kActive, At(2))};
  IOT_ASSERT_OK(store().Apply(b1));
  WriteBatch b2;
  b2.alert_deletes = {1, 999};  // deleting an unknown id is not an error
  IOT_ASSERT_OK(store().Apply(b2));

  EXPECT_EQ(AlertIds(Must(store().OpenAlerts())), (std::vector<std::int64_t>{2}));
  AlertQuery q;
  q.status = AlertStatus::kPending;
  EXPECT_TRUE(Must(store().Alerts(q)).items.empty());
}

TEST_P(StoreConformance, AlertListingExcludesPendingUnlessAskedFor) {
  WriteBatch b;
  b.alert_upserts = {MakeAlert(1, "d", AlertStatus::kPending, At(3)),
                     MakeAlert(2, "d", AlertStatus::kActive, At(2)),
                     MakeAlert(3, "d", AlertStatus::kResolved, At(1))};
  IOT_ASSERT_OK(store().Apply(b));

  AlertQuery q;
  EXPECT_EQ(AlertIds(Must(store().Alerts(q)).items), (std::vector<std::int64_t>{2, 3}));
  q.device_id = "d";
  EXPECT_EQ(AlertIds(Must(store().Alerts(q)).items), (std::vector<std::int64_t>{2, 3}));
  q.status = AlertStatus::kPending;
  EXPECT_EQ(AlertIds(Must(store().Alerts(q)).items), (std::vector<std::int64_t>{1}));
  q.device_id.reset();
  EXPECT_EQ(AlertIds(Must(store().Alerts(q)).items), (std::vector<std::int64_t>{1}));
  q.status = AlertStatus::kActive;
  EXPECT_EQ(AlertIds(Must(store().Alerts(q)).items), (std::vector<std::int64_t>{2}));
}

TEST_P(StoreConformance, AlertsFilterAndPaginateNewestFirstByCreatedAtThenId) {
  std::vector<core::Alert> all;
  const AlertStatus statuses[] = {AlertStatus::kPending, AlertStatus::kActive,
                                  AlertStatus::kResolved};
  for (int i = 0; i < 30; ++i) {
    // created_at ties in pairs; ids are not in created_at order.
    all.push_back(MakeAlert(1000 - 7 * i, i % 3 == 0 ? "d1" : "d2", statuses[i % 3],
                            At((i % 15) / 2 * 10.0)));
  }
  WriteBatch b;
  b.alert_upserts = all;
  IOT_ASSERT_OK(store().Apply(b));

  for (std::optional<std::string> device :
       {std::optional<std::string>(), std::optional<std::string>("d2")}) {
    for (std::optional<AlertStatus> status :
         {std::optional<AlertStatus>(), std::optional<AlertStatus>(AlertStatus::kResolved),
          std::optional<AlertStatus>(AlertStatus::kPending)}) {
      for (bool ranged : {false, true}) {
        AlertQuery q;
        q.device_id = device;
        q.status = status;
        q.limit = 4;
        if (ranged) {
          q.range.from = At(20);
          q.range.to = At(50);
        }
        std::vector<core::Alert> want;
        for (const auto& a : all) {
          if (device && a.device_id != *device) continue;
          if (status ? a.status != *status : a.status == AlertStatus::kPending) continue;
          if (ranged && (a.created_at < At(20) || a.created_at >= At(50))) continue;
          want.push_back(a);
        }
        std::sort(want.begin(), want.end(), [](const auto& x, const auto& y) {
          return std::make_pair(x.created_at, x.id) > std::make_pair(y.created_at, y.id);
        });
        EXPECT_EQ(ReadAllAlerts(store(), q), want)
            << device.value_or("*") << " " << (status ? static_cast<int>(*status) : -1) << " "
            << ranged;
      }
    }
  }
}

// A read token's scope (docs/security.md): only devices whose id starts with the prefix, with
// pages that stay full and cursors that continue right although other devices' items lie
// between them.
TEST_P(StoreConformance, DevicePrefixKeepsOnlyTheScopedDevicesAndPagesStayFull) {
  const std::vector<std::string> devices = {"site-a-1", "site-b-1", "site-a-2", "site-ab",
                                            "site-a_x", "other"};
  std::vector<StoredReading> rs;
  WriteBatch b;
  std::int64_t id = 1;
  for (int i = 0; i < 60; ++i) {
    const std::string& dev = devices[static_cast<std::size_t>(i) % devices.size()];
    rs.push_back(MakeReading(id++, dev, At(i)));
    b.aggregates.push_back(Delta(dev, "temperature_c", Micros(minutes(1)), At(60.0 * i), {1.0}));
    b.alert_upserts.push_back(MakeAlert(5000 + i, dev, AlertStatus::kActive, At(i)));
  }
  IOT_ASSERT_OK(store().Apply(b));
  IOT_ASSERT_OK(store().Apply(BatchOf(rs)));
  auto in_scope = [](const std::string& d) { return d.starts_with("site-a-"); };

  TelemetryQuery tq;
  tq.device_prefix = "site-a-";
  tq.limit = 3;
  std::vector<std::int64_t> want_readings;
  for (auto it = rs.rbegin(); it != rs.rend(); ++it) {
    if (in_scope(it->reading.device_id)) want_readings.push_back(it->id.value);
  }
  auto first = Must(store().Telemetry(tq));
  EXPECT_EQ(first.items.size(), 3u);
  EXPECT_EQ(Ids(ReadAll(store(), tq)), want_readings);

  AggregateQuery aq;
  aq.device_prefix = "site-a-";
  aq.limit = 4;
  std::vector<std::string> got_devices;
  std::size_t aggregates = 0;
  for (int guard = 0; guard < 100; ++guard) {
    auto page = Must(store().Aggregates(aq));
    if (page.next) {
      EXPECT_EQ(page.items.size(), aq.limit);
    }
    for (const auto& a : page.items) {
      EXPECT_TRUE(in_scope(a.key.device_id)) << a.key.device_id;
      ++aggregates;
    }
    if (!page.next) break;
    aq.after = page.next;
  }
  EXPECT_EQ(aggregates, 20u);

  AlertQuery lq;
  lq.device_prefix = "site-a-";
  lq.limit = 7;
  auto alerts = ReadAllAlerts(store(), lq);
  EXPECT_EQ(alerts.size(), 20u);
  for (const auto& a : alerts) EXPECT_TRUE(in_scope(a.device_id)) << a.device_id;

  // A device id outside the prefix gives nothing; inside, that device's items.
  tq = TelemetryQuery{};
  tq.device_id = "site-b-1";
  tq.device_prefix = "site-a-";
  EXPECT_TRUE(Must(store().Telemetry(tq)).items.empty());
  aq = AggregateQuery{};
  aq.device_id = "other";
  aq.device_prefix = "site-a-";
  EXPECT_TRUE(Must(store().Aggregates(aq)).items.empty());
  lq = AlertQuery{};
  lq.device_id = "site-a-2";
  lq.device_prefix = "site-a-";
  EXPECT_EQ(ReadAllAlerts(store(), lq).size(), 10u);
}

TEST_P(StoreConformance, OpenAlertsReturnsPendingAndActiveAlerts) {
  WriteBatch b;
  b.alert_upserts = {MakeAlert(1, "d1", AlertStatus::kPending, At(1)),
                     MakeAlert(2, "d1", AlertStatus::kActive, At(2)),
                     MakeAlert(3, "d2", AlertStatus::kResolved, At(3)),
                     MakeAlert(4, "d2", AlertStatus::kActive, At(4))};
  IOT_ASSERT_OK(store().Apply(b));

  auto open = Must(store().OpenAlerts());
  std::sort(open.begin(), open.end(), [](const auto& x, const auto& y) { return x.id < y.id; });
  EXPECT_EQ(open,
            (std::vector<core::Alert>{b.alert_upserts[0], b.alert_upserts[1], b.alert_upserts[3]}));
}

TEST_P(StoreConformance, AcknowledgeKeepsTheFirstAcknowledgementAndEveryReadCarriesIt) {
  WriteBatch b;
  b.alert_upserts = {MakeAlert(1, "d1", AlertStatus::kActive, At(1)),
                     MakeAlert(2, "d1", AlertStatus::kResolved, At(2)),
                     MakeAlert(3, "d2", AlertStatus::kPending, At(3))};
  IOT_ASSERT_OK(store().Apply(b));
  const core::AlertAck first{At(100), "ops on call", "fan replaced"};
  const core::AlertAck second{At(200), "someone else", ""};

  core::Alert want = b.alert_upserts[0];
  want.ack = first;
  EXPECT_EQ(Must(store().Acknowledge(1, first)), std::optional<core::Alert>(want));
  EXPECT_EQ(Must(store().Acknowledge(1, second)), std::optional<core::Alert>(want));
  EXPECT_EQ(Must(store().FindAlert(1)), std::optional<core::Alert>(want));
  EXPECT_EQ(Must(store().FindAlert(2)), std::optional<core::Alert>(b.alert_upserts[1]));

  // Listings carry it, whichever filter they use.
  for (std::optional<std::string> device :
       {std::optional<std::string>(), std::optional<std::string>("d1")}) {
    AlertQuery q;
    q.device_id = device;
    EXPECT_EQ(Must(store().Alerts(q)).items,
              (std::vector<core::Alert>{b.alert_upserts[1], want}));
    q.status = AlertStatus::kActive;
    EXPECT_EQ(Must(store().Alerts(q)).items, (std::vector<core::Alert>{want}));
  }

  // A resolved alert may be acknowledged too; a pending or unknown one may not.
  core::Alert resolved = b.alert_upserts[1];
  resolved.ack = second;
  EXPECT_EQ(Must(store().Acknowledge(2, second)), std::optional<core::Alert>(resolved));
  EXPECT_EQ(Must(store().Acknowledge(3, first)), std::nullopt);
  EXPECT_EQ(Must(store().FindAlert(3)), std::nullopt);
  EXPECT_EQ(Must(store().Acknowledge(999, first)), std::nullopt);
  EXPECT_EQ(Must(store().FindAlert(999)), std::nullopt);
}

TEST_P(StoreConformance, AnAcknowledgementSurvivesTheAlertsWorkersUpdates) {
  WriteBatch b1;
  b1.alert_upserts = {MakeAlert(7, "d", AlertStatus::kActive, At(1))};
  IOT_ASSERT_OK(store().Apply(b1));
  const core::AlertAck ack{At(50), "me", "looking"};
  ASSERT_TRUE(Must(store().Acknowledge(7, ack)).has_value());

  // The worker replaces the alert twice (a new count, then resolved), knowing nothing of the ack.
  core::Alert updated = MakeAlert(7, "d", AlertStatus::kActive, At(1));
  updated.count = 9;
  updated.severity = "warning";
  WriteBatch b2;
  b2.alert_upserts = {updated};
  IOT_ASSERT_OK(store().Apply(b2));
  core::Alert resolved = MakeAlert(7, "d", AlertStatus::kResolved, At(1));
  WriteBatch b3;
  b3.alert_upserts = {resolved};
  IOT_ASSERT_OK(store().Apply(b3));

  resolved.ack = ack;
  EXPECT_EQ(Must(store().FindAlert(7)), std::optional<core::Alert>(resolved));
  AlertQuery q;
  EXPECT_EQ(Must(store().Alerts(q)).items, (std::vector<core::Alert>{resolved}));
}

// ---- dead letters -------------------------------------------------------------------------

TEST_P(StoreConformance, DeadLettersAreStoredWithTheirCheckpointByteForByteAndOnce) {
  // Every byte value, NUL included, and sequences that are not UTF-8.
  std::string payload;
  for (int i = 0; i < 256; ++i) payload += static_cast<char>(i);
  payload += "\xc3\x28\xed\xa0\x80\xf8";
  DeadLetter dl = MakeDeadLetter("aggregator", 3, At(10), payload);
  dl.key = std::string("k\0\xff", 3);
  WriteBatch b;
  b.dead_letters = {dl};
  b.checkpoint = Checkpoint{"aggregator", 0, 4, 0};
  IOT_ASSERT_OK(store().Apply(b));
  EXPECT_EQ(Must(store().LoadCheckpoint("aggregator", 0)), 4);
  DeadLetterQuery all;
  EXPECT_EQ(ReadAllDeadLetters(store(), all), (std::vector<DeadLetter>{dl}));

  // A replay of the batch is skipped, with a dead letter it did not have before.
  b.dead_letters.push_back(MakeDeadLetter("aggregator", 2, At(11)));
  IOT_ASSERT_OK(store().Apply(b));
  // The same record given up on again (by another attempt, twice in one batch): the first kept.
  DeadLetter again = dl;
  again.reason = "store: unavailable";
  again.attempts = 5;
  again.failed_at = At(20);
  again.payload = "other";
  WriteBatch later;
  later.dead_letters = {again, again};
  later.checkpoint = Checkpoint{"aggregator", 0, 6, 4};
  IOT_ASSERT_OK(store().Apply(later));
  EXPECT_EQ(Must(store().LoadCheckpoint("aggregator", 0)), 6);
  EXPECT_EQ(ReadAllDeadLetters(store(), all), (std::vector<DeadLetter>{dl}));

  // The same offset of another consumer, topic or partition is another dead letter.
  DeadLetter other_consumer = dl, other_topic = dl, other_partition = dl;
  other_consumer.consumer = "alerts";
  other_topic.topic = "telemetry.other";
  other_partition.partition = 1;
  WriteBatch others;
  others.dead_letters = {other_consumer, other_topic, other_partition};
  IOT_ASSERT_OK(store().Apply(others));
  ExpectNewestFirstSameDeadLetters(ReadAllDeadLetters(store(), all),
                                   {dl, other_consumer, other_topic, other_partition});
}

TEST_P(StoreConformance, DeadLettersListNewestFirstWithFiltersAndStablePages) {
  std::vector<DeadLetter> all;
  for (int i = 0; i < 12; ++i) {
    // failed_at ties in threes; offsets are not in time order.
    all.push_back(MakeDeadLetter("aggregator", 100 - 3 * i, At(100 + (i % 6) / 3 * 10.0 + i / 6)));
  }
  for (int i = 0; i < 5; ++i) all.push_back(MakeDeadLetter("alerts", i, At(100 + i * 5.0)));
  // Seven at one instant: pages of three cut through them.
  for (int i = 0; i < 7; ++i) all.push_back(MakeDeadLetter("alerts", 50 + i, At(50)));
  WriteBatch b;
  b.dead_letters = all;
  IOT_ASSERT_OK(store().Apply(b));

  for (std::optional<std::string> consumer :
       {std::optional<std::string>(), std::optional<std::string>("alerts"),
        std::optional<std::string>("aggregator"), std::optional<std::string>("nobody")}) {
    for (bool ranged : {false, true}) {
      std::vector<DeadLetter> want;
      for (const auto& dl : all) {
        if (consumer && dl.consumer != *consumer) continue;
        if (ranged && (dl.failed_at < At(50) || dl.failed_at >= At(110))) continue;
        want.push_back(dl);
      }
      DeadLetterQuery q;
      q.consumer = consumer;
      if (ranged) {
        q.range.from = At(50);
        q.range.to = At(110);
      }
      q.limit = 1000;
      const auto whole = ReadAllDeadLetters(store(), q);
      ExpectNewestFirstSameDeadLetters(whole, want);
      for (std::size_t limit : {1u, 3u}) {
        q.limit = limit;
        // The same list, cut into pages with no gaps or repeats, also among equal times.
        EXPECT_EQ(ReadAllDeadLetters(store(), q), whole)
            << consumer.value_or("*") << " " << ranged << " " << limit;
      }
    }
  }

  DeadLetterQuery first;
  first.limit = 3;
  auto page = Must(store().DeadLetters(first));
  ASSERT_EQ(page.items.size(), 3u);
  EXPECT_EQ(page.items[0].failed_at, At(120));
  ASSERT_TRUE(page.next.has_value());
  DeadLetterQuery exact;
  exact.limit = all.size();
  EXPECT_FALSE(Must(store().DeadLetters(exact)).next.has_value());
}

TEST_P(StoreConformance, ExpireKeepsDeadLetters) {
  Retention retention;
  retention.raw = std::chrono::hours(1);
  retention.aggregates = {{minutes(1), std::chrono::hours(1)}};
  auto s = MakeStore(retention);
  WriteBatch b;
  b.dead_letters = {MakeDeadLetter("aggregator", 1, At(-1e6))};
  IOT_ASSERT_OK(s->Apply(b));
  (void)Must(s->Expire(At(1e8)));
  EXPECT_EQ(ReadAllDeadLetters(*s, DeadLetterQuery{}), b.dead_letters);
}

// ---- devices ------------------------------------------------------------------------------

TEST_P(StoreConformance, DevicesTrackFirstSeenLastSeenReadingsAndLatest) {
  StoredReading newest = MakeReading(2, "d", At(20), 30.5, 45);
  newest.reading.lat = 1.5;
  IOT_ASSERT_OK(store().Apply(BatchOf({MakeReading(1, "d", At(10)), newest})));
  IOT_ASSERT_OK(store().Apply(BatchOf({MakeReading(3, "d", At(5))})));  // late: latest stays

  Device d = DeviceOf(store(), "d");
  EXPECT_EQ(d.device_id, "d");
  EXPECT_EQ(d.first_seen, At(5));
  EXPECT_EQ(d.last_seen, At(20));
  EXPECT_EQ(d.readings, 3);
  EXPECT_EQ(d.latest, newest.reading);

  StoredReading newer = MakeReading(4, "d", At(30), 31, 44);
  IOT_ASSERT_OK(store().Apply(BatchOf({newer})));
  d = DeviceOf(store(), "d");
  EXPECT_EQ(d.last_seen, At(30));
  EXPECT_EQ(d.readings, 4);
  EXPECT_EQ(d.latest, newer.reading);
}

TEST_P(StoreConformance, UnknownDeviceIsAbsentEverywhere) {
  IOT_ASSERT_OK(store().Apply(BatchOf({MakeReading(1, "known", At(1))})));
  EXPECT_EQ(Must(store().FindDevice("unknown")), std::nullopt);
  EXPECT_TRUE(Must(store().Telemetry(ForDevice("unknown"))).items.empty());
  AggregateQuery aq;
  aq.device_id = "unknown";
  EXPECT_TRUE(Must(store().Aggregates(aq)).items.empty());
  AlertQuery alq;
  alq.device_id = "unknown";
  EXPECT_TRUE(Must(store().Alerts(alq)).items.empty());
}

TEST_P(StoreConformance, DevicesAreListedAscendingWithPrefixAndAfter) {
  std::vector<StoredReading> rs;
  std::int64_t id = 1;
  for (std::string dev : {"b", "a.b", "ab", "a", "a_b", "axb", "a.c", "c-1"}) {
    rs.push_back(MakeReading(id++, dev, At(1)));
  }
  IOT_ASSERT_OK(store().Apply(BatchOf(rs)));
  auto names = [&](const DeviceQuery& q) {
    std::vector<std::string> out;
    for (const auto& d : Must(store().Devices(q))) out.push_back(d.device_id);
    return out;
  };

  DeviceQuery q;
  EXPECT_EQ(names(q),
            (std::vector<std::string>{"a", "a.b", "a.c", "a_b", "ab", "axb", "b", "c-1"}));
  q.limit = 3;
  EXPECT_EQ(names(q), (std::vector<std::string>{"a", "a.b", "a.c"}));
  q.after = "a.c";
  EXPECT_EQ(names(q), (std::vector<std::string>{"a_b", "ab", "axb"}));
  q = DeviceQuery{};
  q.prefix = "a.";
  EXPECT_EQ(names(q), (std::vector<std::string>{"a.b", "a.c"}));
  q.after = "a.b";
  EXPECT_EQ(names(q), (std::vector<std::string>{"a.c"}));
  q.after = "0";  // before the prefix: the prefix decides
  EXPECT_EQ(names(q), (std::vector<std::string>{"a.b", "a.c"}));
  q = DeviceQuery{};
  q.prefix = "a_";  // '_' is literal, not a wildcard
  EXPECT_EQ(names(q), (std::vector<std::string>{"a_b"}));
  q.prefix = "zz";
  EXPECT_TRUE(names(q).empty());
}

TEST_P(StoreConformance, DeviceIdsWithPunctuationAreMatchedLiterally) {
  const std::string odd = "a.b:c@d~e-f_g";
  IOT_ASSERT_OK(store().Apply(
      BatchOf({MakeReading(1, odd, At(1)), MakeReading(2, "aXb:c@d~e-f_g", At(2)),
               MakeReading(3, "a.b:c@d~e-f_gh", At(3)), MakeReading(4, "a.b:c@d~e-fXg", At(4))})));
  WriteBatch b;
  b.aggregates = {Delta(odd, "humidity", minutes(1), At(0), {1}),
                  Delta("a.b:c@d~e-fXg", "humidity", minutes(1), At(0), {2})};
  b.alert_upserts = {MakeAlert(10, odd, AlertStatus::kActive, At(1)),
                     MakeAlert(11, "aXb:c@d~e-f_g", AlertStatus::kActive, At(1))};
  IOT_ASSERT_OK(store().Apply(b));

  EXPECT_EQ(DeviceOf(store(), odd).readings, 1);
  EXPECT_EQ(Ids(Must(store().Telemetry(ForDevice(odd))).items), (std::vector<std::int64_t>{1}));
  AggregateQuery aq;
  aq.device_id = odd;
  auto aggs = Must(store().Aggregates(aq)).items;
  ASSERT_EQ(aggs.size(), 1u);
  EXPECT_EQ(aggs[0].key.device_id, odd);
  AlertQuery alq;
  alq.device_id = odd;
  EXPECT_EQ(AlertIds(Must(store().Alerts(alq)).items), (std::vector<std::int64_t>{10}));
  DeviceQuery dq;
  dq.prefix = "a.b:c@d~e-f_";
  std::vector<std::string> listed;
  for (const auto& d : Must(store().Devices(dq))) listed.push_back(d.device_id);
  EXPECT_EQ(listed, (std::vector<std::string>{odd, "a.b:c@d~e-f_gh"}));
}

// ---- stats --------------------------------------------------------------------------------

TEST_P(StoreConformance, StatsCountDevicesReadingsAggregatesAndFiredAlerts) {
  WriteBatch b = BatchOf(
      {MakeReading(1, "d1", At(1)), MakeReading(2, "d1", At(2)), MakeReading(3, "d2", At(3))});
  b.aggregates = {Delta("d1", "humidity", minutes(1), At(0), {1}),
                  Delta("d1", "humidity", minutes(1), At(60), {1}),
                  Delta("d2", "humidity", minutes(1), At(0), {1})};
  b.alert_upserts = {MakeAlert(1, "d1", AlertStatus::kPending, At(1)),
                     MakeAlert(2, "d1", AlertStatus::kActive, At(2)),
                     MakeAlert(3, "d2", AlertStatus::kActive, At(3)),
                     MakeAlert(4, "d2", AlertStatus::kResolved, At(4)),
                     MakeAlert(5, "d2", AlertStatus::kPending, At(5))};  // has not fired
  IOT_ASSERT_OK(store().Apply(b));
  WriteBatch b2;
  b2.aggregates = {Delta("d1", "humidity", minutes(1), At(0), {5})};  // merges: no new row
  b2.alert_upserts = {MakeAlert(3, "d2", AlertStatus::kResolved, At(3))};
  b2.alert_deletes = {1};
  IOT_ASSERT_OK(store().Apply(b2));

  Stats s = Must(store().GetStats(At(10)));
  EXPECT_EQ(s.devices, 2);
  EXPECT_EQ(s.readings, 3);
  EXPECT_EQ(s.aggregates, 3);
  EXPECT_EQ(s.alerts, 3);
  EXPECT_EQ(s.active_alerts, 1);
  EXPECT_EQ(s.ingest_rate_per_s, 0);
}

TEST_P(StoreConformance, IngestRateAveragesTheLastFiveCompleteMinutes) {
  // Minute m is [m, m + 1) minutes after kBaseUs (which is minute-aligned).
  auto minute = [](int m, double extra_s = 0) { return At(60.0 * m + extra_s); };
  auto ingest = [&](int m, std::int64_t n) {
    WriteBatch b;
    b.ingested = n;
    b.processed_at = minute(m, 12.5);
    IOT_ASSERT_OK(store().Apply(b));
  };
  ingest(0, 9000);  // more than 5 minutes before "now": outside the window
  ingest(4, 300);
  ingest(6, 400);
  ingest(6, 200);
  ingest(9, 1200);
  ingest(10, 6000);  // the current, incomplete minute: not counted

  Stats s = Must(store().GetStats(minute(10, 30)));
  EXPECT_DOUBLE_EQ(s.ingest_rate_per_s, (0 + 600 + 0 + 0 + 1200) / 300.0);
  // Minutes 4..8 complete at 9:00.
  s = Must(store().GetStats(minute(9)));
  EXPECT_DOUBLE_EQ(s.ingest_rate_per_s, (300 + 0 + 600 + 0 + 0) / 300.0);
}

TEST_P(StoreConformance, IngestRateOfAYoungStoreAveragesOnlyTheMinutesSinceItsFirstIngest) {
  WriteBatch b;
  b.ingested = 1200;
  b.processed_at = At(60.0 * 7 + 1);
  IOT_ASSERT_OK(store().Apply(b));
  b.ingested = 600;
  b.processed_at = At(60.0 * 8 + 1);
  IOT_ASSERT_OK(store().Apply(b));

  // At 9:10, minutes 7 and 8 are complete: 1800 readings in 120 s.
  EXPECT_DOUBLE_EQ(Must(store().GetStats(At(60.0 * 9 + 10))).ingest_rate_per_s, 15.0);
  // During minute 7 nothing is complete yet.
  EXPECT_EQ(Must(store().GetStats(At(60.0 * 7 + 30))).ingest_rate_per_s, 0);
}

// ---- retention ----------------------------------------------------------------------------

namespace {

// AtUs returns kBaseUs + `us` exactly (At's double seconds cannot name every microsecond).
core::Timestamp AtUs(std::int64_t us) { return core::FromUnixMicros(kBaseUs + us); }

Retention KeepRaw(Micros keep) {
  Retention r;
  r.raw = keep;
  return r;
}

// Kept returns the readings of `all` (of `device`, when given) with ts >= cutoff, newest first.
std::vector<StoredReading> Kept(const std::vector<StoredReading>& all, core::Timestamp cutoff,
                                const std::optional<std::string>& device = std::nullopt) {
  std::vector<StoredReading> out;
  for (const auto& r : all) {
    if (r.reading.ts < cutoff) continue;
    if (device && r.reading.device_id != *device) continue;
    out.push_back(r);
  }
  std::sort(out.begin(), out.end(), Newer);
  return out;
}

std::vector<Aggregate> AllAggregates(Store& store) {
  AggregateQuery q;
  q.limit = 100000;
  return Must(store.Aggregates(q)).items;
}

}  // namespace

TEST_P(StoreConformance, ExpireDeletesExactlyTheRawReadingsOlderThanTheCutoff) {
  auto s = MakeStore(KeepRaw(hours(1)));
  ASSERT_NE(s, nullptr);
  const core::Timestamp now = At(10000);
  const core::Timestamp cutoff = At(10000 - 3600);
  std::vector<StoredReading> all;
  std::int64_t id = 1;
  auto add = [&](std::vector<StoredReading>& batch, const std::string& device,
                 core::Timestamp ts) {
    batch.push_back(MakeReading(id, device, ts, static_cast<double>(id % 97)));
    ++id;
  };
  auto apply = [&](std::vector<StoredReading> batch) {
    all.insert(all.end(), batch.begin(), batch.end());
    IOT_ASSERT_OK(s->Apply(BatchOf(std::move(batch))));
  };

  // One batch per device straddling the cutoff, with readings exactly at it, one microsecond
  // before it and ties on the cutoff.
  {
    std::vector<StoredReading> b;
    for (std::string device : {"a", "b", "c"}) {
      for (int t = 6300; t <= 6500; t += 10) add(b, device, At(t));
      add(b, device, cutoff);
      add(b, device, AtUs(6400'000'000 - 1));
    }
    apply(b);
  }
  // Wholly old batches.
  {
    std::vector<StoredReading> b;
    for (int t = 100; t < 200; t += 10) {
      add(b, "a", At(t));
      add(b, "b", At(t + 1));
    }
    apply(b);
  }
  // Out-of-order arrivals: ids ascending, times jumping across the cutoff.
  {
    std::vector<StoredReading> b;
    add(b, "a", At(9000));
    add(b, "a", At(50));
    add(b, "b", At(6399.5));
    add(b, "c", At(7000));
    add(b, "c", At(6000));
    add(b, "a", cutoff);
    add(b, "b", At(9999));
    apply(b);
  }
  // A device with readings 80 minutes apart (each alone in its storage unit, in most layouts),
  // all old but the one at `now`: far more than one small unit of work.
  {
    std::vector<StoredReading> b;
    for (int k = 299; k >= 0; --k) add(b, "sparse", At(10000.0 - 4800.0 * k));
    apply(b);
  }
  // A large batch of one device, half of it before the cutoff.
  {
    std::vector<StoredReading> b;
    for (int k = 0; k < 1500; ++k) add(b, "dense", At(6000 + k * 0.5));
    apply(b);
  }
  std::int64_t old = 0;
  for (const auto& r : all) old += r.reading.ts < cutoff ? 1 : 0;
  ASSERT_GT(old, 400);

  const std::vector<Device> devices_before = Must(s->Devices(DeviceQuery{}));
  const Stats stats_before = Must(s->GetStats(now));
  auto first_dense = Must(s->Telemetry(ForDevice("dense", 5)));
  ASSERT_TRUE(first_dense.next);

  EXPECT_EQ(Must(s->Expire(now)), old);

  const std::vector<std::optional<std::string>> listings = {
      std::nullopt, "a", "b", "c", "sparse", "dense"};
  for (const auto& device : listings) {
    SCOPED_TRACE(device.value_or("*"));
    TelemetryQuery q;
    q.device_id = device;
    q.limit = 7;
    auto got = ReadAll(*s, q);
    auto want = Kept(all, cutoff, device);
    ASSERT_EQ(Ids(got), Ids(want));
    EXPECT_EQ(got, want);
  }
  // A cursor taken before the expiry goes on where it was.
  TelemetryQuery rest = ForDevice("dense", 50);
  rest.after = first_dense.next;
  auto want_dense = Kept(all, cutoff, "dense");
  EXPECT_EQ(Ids(ReadAll(*s, rest)),
            Ids(std::vector<StoredReading>(want_dense.begin() + 5, want_dense.end())));
  // A range across the cutoff.
  TelemetryQuery ranged = ForDevice("a");
  ranged.range.from = At(0);
  ranged.range.to = At(6401);
  std::vector<StoredReading> want_ranged;
  for (const auto& r : Kept(all, cutoff, "a")) {
    if (r.reading.ts < At(6401)) want_ranged.push_back(r);
  }
  EXPECT_EQ(Ids(Must(s->Telemetry(ranged)).items), Ids(want_ranged));

  Stats stats = Must(s->GetStats(now));
  EXPECT_EQ(stats.readings, static_cast<std::int64_t>(all.size()) - old);
  EXPECT_EQ(stats.readings, stats_before.readings - old);
  EXPECT_EQ(stats.devices, stats_before.devices);
  EXPECT_EQ(Must(s->Devices(DeviceQuery{})), devices_before);  // rows and counters stay

  // Again: nothing left to delete.
  EXPECT_EQ(Must(s->Expire(now)), 0);
  EXPECT_EQ(Ids(ReadAll(*s, TelemetryQuery{})), Ids(Kept(all, cutoff)));
  EXPECT_EQ(Must(s->GetStats(now)).readings, stats.readings);

  // Later, the cutoff moves on; new readings are stored and listed as usual.
  std::vector<StoredReading> b;
  add(b, "a", At(12000));
  add(b, "dense", At(6500));
  apply(b);
  const core::Timestamp later_cutoff = At(6600);
  std::int64_t more = 0;
  for (const auto& r : all) more += r.reading.ts >= cutoff && r.reading.ts < later_cutoff ? 1 : 0;
  EXPECT_EQ(Must(s->Expire(At(6600 + 3600))), more);
  EXPECT_EQ(Ids(ReadAll(*s, TelemetryQuery{})), Ids(Kept(all, later_cutoff)));
  EXPECT_EQ(Ids(ReadAll(*s, ForDevice("dense", 9))), Ids(Kept(all, later_cutoff, "dense")));
  EXPECT_EQ(Must(s->GetStats(now)).readings,
            static_cast<std::int64_t>(Kept(all, later_cutoff).size()));
  ASSERT_EQ(devices_before.front().device_id, "a");
  EXPECT_EQ(DeviceOf(*s, "a").readings, devices_before.front().readings + 1);
}

TEST_P(StoreConformance, ExpireDeletesAggregatesOnlyOfListedWindowsOlderThanTheirKeep) {
  Retention r;
  r.aggregates = {{Micros(minutes(1)), Micros(hours(1))},
                  {Micros(minutes(5)), Micros(hours(2))},
                  {Micros(hours(24)), Micros(hours(1))}};  // listed, never stored
  auto s = MakeStore(r);
  ASSERT_NE(s, nullptr);
  const core::Timestamp now = At(7200);
  WriteBatch b = BatchOf({MakeReading(1, "d1", At(-90000)), MakeReading(2, "d2", At(10))});
  std::vector<Aggregate> all;
  auto add = [&](const std::string& device, const std::string& sensor, Micros window, double t) {
    b.aggregates.push_back(Delta(device, sensor, window, At(t), {t, t + 1}));
    all.push_back(Aggregate{b.aggregates.back().key, b.aggregates.back().acc});
  };
  for (std::string device : {"d1", "d2"}) {
    for (std::string sensor : {"temperature_c", "humidity"}) {
      for (int m = 0; m <= 120; m += 10) add(device, sensor, minutes(1), 60.0 * m);
    }
    for (int h = -2; h <= 2; ++h) add(device, "humidity", hours(1), 3600.0 * h);  // not listed
    for (int k = -2; k < 2; ++k) add(device, "humidity", minutes(5), 300.0 * k);
  }
  IOT_ASSERT_OK(s->Apply(b));

  // 1m: starts before now - 1h = At(3600); 5m: starts before now - 2h = At(0).
  auto expired = [&](const Aggregate& a) {
    if (a.key.window == minutes(1)) return a.key.window_start < At(3600);
    if (a.key.window == minutes(5)) return a.key.window_start < At(0);
    return false;
  };
  std::vector<Aggregate> want;
  for (const auto& a : all) {
    if (!expired(a)) want.push_back(a);
  }
  const auto deleted = static_cast<std::int64_t>(all.size() - want.size());
  ASSERT_EQ(deleted, 2 * 2 * 6 + 2 * 2);
  const Stats before = Must(s->GetStats(now));

  EXPECT_EQ(Must(s->Expire(now)), deleted);
  ExpectNewestFirstAndEqualAsSets(AllAggregates(*s), want);
  Stats after = Must(s->GetStats(now));
  EXPECT_EQ(after.aggregates, before.aggregates - deleted);
  EXPECT_EQ(after.aggregates, static_cast<std::int64_t>(want.size()));
  // Raw readings have no retention here.
  EXPECT_EQ(Ids(ReadAll(*s, TelemetryQuery{})), (std::vector<std::int64_t>{2, 1}));
  EXPECT_EQ(after.readings, 2);

  EXPECT_EQ(Must(s->Expire(now)), 0);
  ExpectNewestFirstAndEqualAsSets(AllAggregates(*s), want);

  // A late delta for an expired window starts a new row; one for a kept window merges.
  WriteBatch late;
  late.aggregates = {Delta("d1", "temperature_c", minutes(1), At(0), {7}),
                     Delta("d1", "temperature_c", minutes(1), At(3600), {7})};
  IOT_ASSERT_OK(s->Apply(late));
  AggregateQuery q;
  q.device_id = "d1";
  q.sensor_type = "temperature_c";
  q.window = minutes(1);
  q.range.to = At(3601);
  auto items = Must(s->Aggregates(q)).items;
  ASSERT_EQ(items.size(), 2u);
  EXPECT_EQ(items[0].key.window_start, At(3600));
  EXPECT_EQ(items[0].acc.count, 3);
  EXPECT_EQ(items[1].key.window_start, At(0));
  EXPECT_EQ(items[1].acc.count, 1);
  EXPECT_EQ(items[1].acc.sum, 7);
  EXPECT_EQ(Must(s->GetStats(now)).aggregates, after.aggregates + 1);
}

TEST_P(StoreConformance, ExpireCountsRawReadingsAndAggregatesTogether) {
  Retention r;
  r.raw = Micros(hours(1));
  r.aggregates = {{Micros(minutes(1)), Micros(hours(1))}};
  auto s = MakeStore(r);
  ASSERT_NE(s, nullptr);
  WriteBatch b = BatchOf({MakeReading(1, "d", At(0)), MakeReading(2, "d", At(1)),
                          MakeReading(3, "d", At(4000))});
  b.aggregates = {Delta("d", "humidity", minutes(1), At(0), {1}),
                  Delta("d", "humidity", minutes(1), At(3960), {1})};
  IOT_ASSERT_OK(s->Apply(b));

  EXPECT_EQ(Must(s->Expire(At(3600 + 60))), 3);
  EXPECT_EQ(Ids(ReadAll(*s, TelemetryQuery{})), (std::vector<std::int64_t>{3}));
  EXPECT_EQ(AllAggregates(*s).size(), 1u);
  Stats stats = Must(s->GetStats(At(4000)));
  EXPECT_EQ(stats.readings, 1);
  EXPECT_EQ(stats.aggregates, 1);
  EXPECT_EQ(stats.devices, 1);
  EXPECT_EQ(DeviceOf(*s, "d").readings, 3);
  EXPECT_EQ(DeviceOf(*s, "d").first_seen, At(0));
}

TEST_P(StoreConformance, ExpireWithoutRetentionDeletesNothing) {
  WriteBatch b = BatchOf({MakeReading(1, "d", At(-1e6)), MakeReading(2, "d", At(1))});
  b.aggregates = {Delta("d", "humidity", minutes(1), At(-1e6), {1})};
  IOT_ASSERT_OK(store().Apply(b));

  EXPECT_EQ(Must(store().Expire(At(1e8))), 0);
  EXPECT_EQ(Ids(ReadAll(store(), TelemetryQuery{})), (std::vector<std::int64_t>{2, 1}));
  EXPECT_EQ(AllAggregates(store()).size(), 1u);
  Stats stats = Must(store().GetStats(At(1e8)));
  EXPECT_EQ(stats.readings, 2);
  EXPECT_EQ(stats.aggregates, 1);
}

TEST_P(StoreConformance, PingSucceedsOnAHealthyStore) { IOT_ASSERT_OK(store().Ping()); }

}  // namespace iot::store::testing
