// aggregator_test.cc: the aggregator worker (services/aggregator.h) over a FakeConsumer and a real
// SqliteStore: windows of late and out-of-order readings, aggregates equal to a recomputation
// from the raw readings, undecodable records, the devices table and the processing clock.
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "core/reading.h"
#include "core/window.h"
#include "metrics/metrics.h"
#include "services/aggregator.h"
#include "services_test_util.h"

namespace iot::services {
namespace {

using namespace std::chrono_literals;
using testing::At;
using testing::FakeConsumer;
using testing::Must;
using testing::ReadingAt;

std::int64_t Id(std::int64_t offset) { return core::MessageId::Of(0, offset).value; }

class AggregatorTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_NE(store_, nullptr); }

  // Run starts an aggregator with `windows`; Feed appends readings and waits until the
  // aggregator committed all of them, so that each Feed is applied as its own batch(es).
  void Run(std::vector<core::Micros> windows) {
    aggregator_ = std::make_unique<Aggregator>(std::move(windows), consumer_, *store_, registry_,
                                               clock_);
    IOT_ASSERT_OK(aggregator_->Start());
  }
  void Feed(const std::vector<core::Reading>& readings) {
    std::int64_t last = -1;
    for (const auto& r : readings) last = consumer_.AppendReading(r);
    ASSERT_TRUE(consumer_.WaitForCommit(last + 1));
  }
  // Windows returns the aggregates of dev-1's `sensor` for `window`, by window start.
  std::map<core::Timestamp, core::Accumulator> Windows(const std::string& sensor,
                                                       core::Micros window) {
    store::AggregateQuery q;
    q.device_id = "dev-1";
    q.sensor_type = sensor;
    q.window = window;
    std::map<core::Timestamp, core::Accumulator> out;
    for (const auto& a : testing::AllAggregates(*store_, q)) out[a.key.window_start] = a.acc;
    return out;
  }

  testing::TempDir dir_;
  std::unique_ptr<store::SqliteStore> store_ = testing::OpenStore(dir_);
  FakeConsumer consumer_;
  metrics::Registry registry_;
  core::ManualClock clock_{At(0)};
  std::unique_ptr<Aggregator> aggregator_;  // destroyed (stopped) first
};

core::Accumulator Acc(std::vector<double> values) {
  core::Accumulator a;
  for (double v : values) a.Add(v);
  return a;
}

TEST_F(AggregatorTest, LateAndOutOfOrderReadingsLandInTheirWindows) {
  Run({1min, 1h});
  Feed({ReadingAt("dev-1", At(130), 10), ReadingAt("dev-1", At(70), 20),
        ReadingAt("dev-1", At(3700), 30)});
  // Late: minute 0 of hour 0 after hour 1 was seen; minute 2 again.
  Feed({ReadingAt("dev-1", At(10), 40), ReadingAt("dev-1", At(135), 50)});

  EXPECT_EQ(Windows("temperature_c", 1min),
            (std::map<core::Timestamp, core::Accumulator>{{At(0), Acc({40})},
                                                          {At(60), Acc({20})},
                                                          {At(120), Acc({10, 50})},
                                                          {At(3660), Acc({30})}}));
  EXPECT_EQ(Windows("temperature_c", 1h),
            (std::map<core::Timestamp, core::Accumulator>{{At(0), Acc({10, 20, 40, 50})},
                                                          {At(3600), Acc({30})}}));
  EXPECT_EQ(Windows("humidity", 1h),
            (std::map<core::Timestamp, core::Accumulator>{{At(0), Acc({40, 40, 40, 40})},
                                                          {At(3600), Acc({40})}}));
}

TEST_F(AggregatorTest, AggregatesEqualARecomputationFromTheRawReadings) {
  const std::vector<core::Micros> windows = {1min, 5min};
  Run(windows);
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> device(0, 2), second(0, 599), micros(0, 999'999),
      quarter(-80, 240), extra(0, 3);
  std::vector<core::Reading> readings;
  for (int i = 0; i < 200; ++i) {
    core::Reading r;
    r.device_id = "dev-" + std::to_string(device(rng));
    r.ts = At(second(rng)) + core::Micros(micros(rng));
    // Multiples of 0.25 add up exactly, whatever the order of the additions.
    r.sensors = {{"temperature_c", quarter(rng) * 0.25}, {"humidity", quarter(rng) * 0.25}};
    if (extra(rng) == 0) r.sensors.push_back({"pressure", quarter(rng) * 0.25});
    readings.push_back(std::move(r));
  }
  // Two batches: the second one merges into windows the first one created.
  Feed(std::vector<core::Reading>(readings.begin(), readings.begin() + 100));
  Feed(std::vector<core::Reading>(readings.begin() + 100, readings.end()));

  store::TelemetryQuery all;
  all.limit = 100;
  auto raw = testing::AllTelemetry(*store_, all);
  ASSERT_EQ(raw.size(), readings.size());
  std::map<core::AggregateKey, core::Accumulator> expected;
  for (const auto& stored : raw) {
    for (const auto& sensor : stored.reading.sensors) {
      for (auto w : windows) {
        core::AggregateKey key{stored.reading.device_id, sensor.name, w,
                               core::WindowStart(stored.reading.ts, w)};
        expected[key].Add(sensor.value);
      }
    }
  }
  std::map<core::AggregateKey, core::Accumulator> actual;
  for (const auto& a : testing::AllAggregates(*store_, {})) {
    EXPECT_TRUE(actual.emplace(a.key, a.acc).second) << "listed twice: " << a.key.device_id;
  }
  EXPECT_EQ(actual, expected);
}

TEST_F(AggregatorTest, UndecodableRecordsAreSkippedCountedAndDoNotBlockTheFollowingOnes) {
  Run({1min});
  // A batch of nothing but poison still moves the checkpoint.
  consumer_.Append("dev-1", "not a reading");
  ASSERT_TRUE(consumer_.WaitForCommit(1));
  EXPECT_EQ(Must(store_->LoadCheckpoint("aggregator", 0)), 1);

  consumer_.AppendReading(ReadingAt("dev-1", At(1), 10));
  consumer_.Append("dev-1", R"({"device_id":"dev-1","temperature_c":1})");  // JSON without ts
  consumer_.Append("dev-1", std::string("\x01\x00", 2));                   // truncated wire
  // The JSON form with its ts (kafka-console-producer) is a reading like the wire form.
  consumer_.Append("dev-1", R"({"device_id":"dev-1","ts":"2024-01-01T00:00:02Z",)"
                            R"("temperature_c":20,"humidity":40})");
  ASSERT_TRUE(consumer_.WaitForCommit(5));

  auto raw = testing::AllTelemetry(*store_, {});
  ASSERT_EQ(raw.size(), 2u);
  EXPECT_EQ(raw[0].id.value, Id(4));
  EXPECT_EQ(raw[0].reading, ReadingAt("dev-1", At(2), 20));
  EXPECT_EQ(raw[1].id.value, Id(1));
  EXPECT_EQ(testing::MetricValue(registry_, "aggregator_decode_errors_total"), 3);
  EXPECT_EQ(Windows("temperature_c", 1min),
            (std::map<core::Timestamp, core::Accumulator>{{At(0), Acc({10, 20})}}));
  auto device = Must(store_->FindDevice("dev-1"));
  ASSERT_TRUE(device.has_value());
  EXPECT_EQ(device->readings, 2);
  EXPECT_EQ(Must(store_->LoadCheckpoint("aggregator", 0)), 5);
}

TEST_F(AggregatorTest, DevicesKeepFirstAndLastSeenByTimestampAndTheNewestReadingAsLatest) {
  Run({1min});
  Feed({ReadingAt("dev-1", At(100), 1)});
  // Newest first, then a late one, then one as new as the newest: the later message wins a tie.
  Feed({ReadingAt("dev-1", At(200), 3), ReadingAt("dev-1", At(50), 2),
        ReadingAt("dev-1", At(200), 4)});
  auto device = Must(store_->FindDevice("dev-1"));
  ASSERT_TRUE(device.has_value());
  EXPECT_EQ(device->first_seen, At(50));
  EXPECT_EQ(device->last_seen, At(200));
  EXPECT_EQ(device->readings, 4);
  EXPECT_EQ(device->latest, ReadingAt("dev-1", At(200), 4));

  Feed({ReadingAt("dev-1", At(150), 5)});  // a late batch does not replace the latest reading
  device = Must(store_->FindDevice("dev-1"));
  ASSERT_TRUE(device.has_value());
  EXPECT_EQ(device->first_seen, At(50));
  EXPECT_EQ(device->last_seen, At(200));
  EXPECT_EQ(device->readings, 5);
  EXPECT_EQ(device->latest, ReadingAt("dev-1", At(200), 4));
  EXPECT_FALSE(Must(store_->FindDevice("dev-2")).has_value());
}

TEST_F(AggregatorTest, ProcessingTimeComesFromTheInjectedClock) {
  clock_.Set(At(10));  // minute 0 of T0
  Run({1min});
  std::vector<core::Reading> readings;
  for (int i = 0; i < 120; ++i) readings.push_back(ReadingAt("dev-1", At(i), 1));
  Feed(readings);
  // 120 readings processed in minute 0: 2 per second once that minute is complete.
  auto during = Must(store_->GetStats(At(59)));
  EXPECT_EQ(during.readings, 120);
  EXPECT_EQ(during.ingest_rate_per_s, 0);
  auto after = Must(store_->GetStats(At(61)));
  EXPECT_DOUBLE_EQ(after.ingest_rate_per_s, 2.0);
}

}  // namespace
}  // namespace iot::services
