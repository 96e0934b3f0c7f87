// Tests for core/window.h: window starts, window lists, accumulators and key hashing.
#include "core/window.h"

#include <gtest/gtest.h>

#include <unordered_set>

namespace iot::core {
namespace {

using std::chrono::hours;
using std::chrono::minutes;
using std::chrono::seconds;

Timestamp At(const char* iso) { return ParseIso8601(iso).value(); }

TEST(WindowStartTest, AlignsToTheEpoch) {
  EXPECT_EQ(WindowStart(At("2024-05-01T12:34:56.789Z"), minutes(1)), At("2024-05-01T12:34:00Z"));
  EXPECT_EQ(WindowStart(At("2024-05-01T12:34:56.789Z"), hours(1)), At("2024-05-01T12:00:00Z"));
  EXPECT_EQ(WindowStart(At("2024-05-01T12:34:56Z"), hours(24)), At("2024-05-01T00:00:00Z"));
}

TEST(WindowStartTest, WindowsAreHalfOpen) {
  // The first instant of a window belongs to it; the last microsecond before it does not.
  const Timestamp start = At("2024-05-01T12:35:00Z");
  EXPECT_EQ(WindowStart(start, minutes(1)), start);
  EXPECT_EQ(WindowStart(start - Micros(1), minutes(1)), start - minutes(1));
  EXPECT_EQ(WindowStart(start + minutes(1) - Micros(1), minutes(1)), start);
}

TEST(WindowStartTest, EpochIsAWindowStart) {
  EXPECT_EQ(WindowStart(FromUnixMicros(0), minutes(1)), FromUnixMicros(0));
  EXPECT_EQ(WindowStart(FromUnixMicros(59'999'999), minutes(1)), FromUnixMicros(0));
}

TEST(WindowStartTest, NegativeTimesRoundTowardsThePast) {
  EXPECT_EQ(WindowStart(FromUnixMicros(-1), minutes(1)), FromUnixMicros(-60'000'000));
  EXPECT_EQ(WindowStart(FromUnixMicros(-60'000'000), minutes(1)), FromUnixMicros(-60'000'000));
  EXPECT_EQ(WindowStart(FromUnixMicros(-60'000'001), minutes(1)), FromUnixMicros(-120'000'000));
  EXPECT_EQ(WindowStart(FromUnixMicros(-90'000'000), seconds(60)),
            FromUnixMicros(-120'000'000));
}

TEST(WindowStartTest, ExtremeTimesDoNotOverflow) {
  const Timestamp lowest = Timestamp::min();
  EXPECT_EQ(WindowStart(lowest, minutes(1)), Timestamp::min());  // no representable start
  const Timestamp highest = Timestamp::max();
  const Timestamp start = WindowStart(highest, minutes(1));
  EXPECT_LE(start, highest);
  EXPECT_LT(highest - start, minutes(1));
  EXPECT_EQ(ToUnixMicros(start) % 60'000'000, 0);
}

TEST(WindowStartTest, LateDataFallsIntoItsOwnWindow) {
  // A reading that arrives an hour late is aggregated by its own ts, not the time of arrival.
  const Timestamp late = At("2024-05-01T11:00:30Z");
  EXPECT_EQ(WindowStart(late, minutes(1)), At("2024-05-01T11:00:00Z"));
}

TEST(WindowStartTest, NonPositiveSizeReturnsTheTime) {
  const Timestamp t = At("2024-05-01T12:34:56Z");
  EXPECT_EQ(WindowStart(t, Micros(0)), t);
  EXPECT_EQ(WindowStart(t, Micros(-5)), t);
}

TEST(ParseWindowsTest, ReturnsDistinctAscendingSizes) {
  auto w = ParseWindows("1h,1m,60s, 5m ,1m");
  ASSERT_TRUE(w.ok()) << w.error().message;
  EXPECT_EQ(*w, (std::vector<Micros>{minutes(1), minutes(5), hours(1)}));
}

TEST(ParseWindowsTest, AcceptsASingleWindow) {
  auto w = ParseWindows("1m");
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(*w, std::vector<Micros>{minutes(1)});
}

TEST(ParseWindowsTest, RejectsBadLists) {
  for (const char* bad : {"", ",", "1m,", ",1m", "1m,,1h", "0s", "-1m", "1x", "m", "1 m"}) {
    auto w = ParseWindows(bad);
    ASSERT_FALSE(w.ok()) << bad;
    EXPECT_EQ(w.error().code, Errc::kInvalidArgument) << bad;
  }
}

TEST(AccumulatorTest, AddAndMergeAgree) {
  Accumulator all, a, b;
  for (double v : {3.0, -1.5, 7.25}) {
    all.Add(v);
    a.Add(v);
  }
  for (double v : {10.0, 0.0}) {
    all.Add(v);
    b.Add(v);
  }
  a.Merge(b);
  EXPECT_EQ(a, all);
  EXPECT_EQ(all.count, 5);
  EXPECT_DOUBLE_EQ(all.sum, 18.75);
  EXPECT_EQ(all.min, -1.5);
  EXPECT_EQ(all.max, 10.0);
  EXPECT_DOUBLE_EQ(all.Average(), 3.75);
}

TEST(AccumulatorTest, EmptyAverageIsZeroAndMergingEmptyChangesNothing) {
  Accumulator a;
  EXPECT_EQ(a.Average(), 0);
  a.Add(2);
  Accumulator before = a;
  a.Merge(Accumulator{});
  EXPECT_EQ(a, before);
}

TEST(AggregateKeyHashTest, EqualKeysHashEqualAndFieldsMatter) {
  const AggregateKey k{"dev-1", "temperature_c", minutes(1), At("2024-05-01T12:00:00Z")};
  AggregateKeyHash h;
  EXPECT_EQ(h(k), h(AggregateKey(k)));
  std::unordered_set<AggregateKey, AggregateKeyHash> set{k};
  AggregateKey other = k;
  other.device_id = "dev-2";
  EXPECT_FALSE(set.contains(other));
  other = k;
  other.sensor_type = "humidity";
  EXPECT_FALSE(set.contains(other));
  other = k;
  other.window = hours(1);
  EXPECT_FALSE(set.contains(other));
  other = k;
  other.window_start += minutes(1);
  EXPECT_FALSE(set.contains(other));
  EXPECT_TRUE(set.contains(k));
}

TEST(AggregateKeyHashTest, SpreadsDistinctKeys) {
  AggregateKeyHash h;
  std::unordered_set<std::size_t> hashes;
  for (int d = 0; d < 50; ++d) {
    for (int m = 0; m < 20; ++m) {
      hashes.insert(h(AggregateKey{"dev-" + std::to_string(d), "temperature_c", minutes(1),
                                   FromUnixMicros(std::int64_t{m} * 60'000'000)}));
    }
  }
  EXPECT_EQ(hashes.size(), 1000u);
}

}  // namespace
}  // namespace iot::core
