#include "loadgen/latency_histogram.h"

#include <random>
#include <vector>

#include <gtest/gtest.h>

namespace iot::loadgen {
namespace {

using std::chrono::microseconds;
using std::chrono::milliseconds;
using std::chrono::nanoseconds;

// The documented contract: never below the true quantile, at most 1/64 above it.
void ExpectWithinBucketPrecision(nanoseconds reported, nanoseconds truth) {
  EXPECT_GE(reported.count(), truth.count());
  EXPECT_LE(static_cast<double>(reported.count()), static_cast<double>(truth.count()) * (1 + 1.0 / 64));
}

TEST(LatencyHistogram, EmptyHistogramReportsZero) {
  LatencyHistogram h;
  EXPECT_EQ(h.count(), 0u);
  EXPECT_EQ(h.ValueAtQuantile(0.5), nanoseconds(0));
  EXPECT_EQ(h.max(), nanoseconds(0));
}

TEST(LatencyHistogram, PercentilesOfAUniformDistributionAreWithinBucketPrecision) {
  LatencyHistogram h;
  // 1 us .. 100 ms in steps of 1 us, shuffled: the true q-quantile is ceil(q * n) us.
  std::vector<int> values(100'000);
  for (int i = 0; i < 100'000; ++i) values[static_cast<std::size_t>(i)] = i + 1;
  std::shuffle(values.begin(), values.end(), std::mt19937(7));
  for (int v : values) h.Record(microseconds(v));

  EXPECT_EQ(h.count(), 100'000u);
  EXPECT_EQ(h.max(), microseconds(100'000));
  ExpectWithinBucketPrecision(h.ValueAtQuantile(0.50), microseconds(50'000));
  ExpectWithinBucketPrecision(h.ValueAtQuantile(0.90), microseconds(90'000));
  ExpectWithinBucketPrecision(h.ValueAtQuantile(0.99), microseconds(99'000));
  ExpectWithinBucketPrecision(h.ValueAtQuantile(0.001), microseconds(100));
  EXPECT_EQ(h.ValueAtQuantile(1.0), microseconds(100'000));
}

TEST(LatencyHistogram, SmallValuesAreExact) {
  LatencyHistogram h;
  for (int v = 0; v < 128; ++v) h.Record(nanoseconds(v));
  EXPECT_EQ(h.ValueAtQuantile(0.5), nanoseconds(63));  // rank 64 of 0..127
  EXPECT_EQ(h.ValueAtQuantile(0.0), nanoseconds(0));
  EXPECT_EQ(h.max(), nanoseconds(127));
}

TEST(LatencyHistogram, ATailValueShowsOnlyAboveItsRank) {
  LatencyHistogram h;
  for (int i = 0; i < 99; ++i) h.Record(milliseconds(1));
  h.Record(milliseconds(100));
  ExpectWithinBucketPrecision(h.ValueAtQuantile(0.50), milliseconds(1));
  ExpectWithinBucketPrecision(h.ValueAtQuantile(0.99), milliseconds(1));
  EXPECT_EQ(h.ValueAtQuantile(0.995), milliseconds(100));
  EXPECT_EQ(h.max(), milliseconds(100));
}

TEST(LatencyHistogram, PercentileNeverExceedsTheMaximum) {
  LatencyHistogram h;
  h.Record(microseconds(1000));  // its bucket reaches above 1000 us
  EXPECT_EQ(h.ValueAtQuantile(0.5), microseconds(1000));
}

TEST(LatencyHistogram, ClampsOutOfRangeValues) {
  LatencyHistogram h;
  h.Record(nanoseconds(-5));
  h.Record(std::chrono::hours(1000));
  EXPECT_EQ(h.count(), 2u);
  EXPECT_EQ(h.ValueAtQuantile(0.5), nanoseconds(0));
  EXPECT_EQ(h.max(), LatencyHistogram::kMaxTrackable);
  EXPECT_EQ(h.ValueAtQuantile(1.0), LatencyHistogram::kMaxTrackable);
}

TEST(LatencyHistogram, MergeEqualsRecordingEverythingInOne) {
  LatencyHistogram a, b, all;
  for (int i = 1; i <= 1000; ++i) {
    (i % 3 == 0 ? a : b).Record(microseconds(i * 7));
    all.Record(microseconds(i * 7));
  }
  a.Merge(b);
  EXPECT_EQ(a.count(), all.count());
  EXPECT_EQ(a.max(), all.max());
  for (double q : {0.1, 0.5, 0.9, 0.99}) EXPECT_EQ(a.ValueAtQuantile(q), all.ValueAtQuantile(q));
}

TEST(LatencyHistogram, ResetForgetsEverything) {
  LatencyHistogram h;
  h.Record(milliseconds(3));
  h.Reset();
  EXPECT_EQ(h.count(), 0u);
  EXPECT_EQ(h.max(), nanoseconds(0));
  h.Record(microseconds(5));
  EXPECT_EQ(h.ValueAtQuantile(1.0), microseconds(5));
}

}  // namespace
}  // namespace iot::loadgen
