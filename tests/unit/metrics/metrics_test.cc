// Tests of metric types, families, registration rules and the text exposition.
#include "metrics/metrics.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace iot::metrics {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string Number(double v) {
  std::string s;
  AppendNumber(s, v);
  return s;
}

TEST(AppendNumberTest, WritesIntegersWithoutFractionOrExponent) {
  EXPECT_EQ(Number(0), "0");
  EXPECT_EQ(Number(-0.0), "0");
  EXPECT_EQ(Number(1), "1");
  EXPECT_EQ(Number(-42), "-42");
  EXPECT_EQ(Number(1e6), "1000000");
  EXPECT_EQ(Number(123456789012345.0), "123456789012345");
}

TEST(AppendNumberTest, WritesFractionsInShortestRoundTripForm) {
  EXPECT_EQ(Number(0.5), "0.5");
  EXPECT_EQ(Number(0.1), "0.1");
  EXPECT_EQ(Number(0.0001), "0.0001");
  EXPECT_EQ(Number(0.1 + 0.2), "0.30000000000000004");
  EXPECT_EQ(Number(1e-05), "1e-05");
  EXPECT_EQ(Number(2.5e20), "2.5e+20");
  EXPECT_EQ(std::stod(Number(1.0 / 3)), 1.0 / 3);
  EXPECT_EQ(std::stod(Number(1e-9)), 1e-9);
  EXPECT_EQ(std::stod(Number(1e300)), 1e300);
}

TEST(AppendNumberTest, WritesSpecialValuesAsPrometheusSpellsThem) {
  EXPECT_EQ(Number(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(Number(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(Number(std::nan("")), "NaN");
}

TEST(CounterTest, IncAddsAndIgnoresNegativeAndNaN) {
  Counter c;
  c.Inc();
  c.Inc(2.5);
  c.Inc(-10);
  c.Inc(std::nan(""));
  EXPECT_EQ(c.Value(), 3.5);
}

TEST(GaugeTest, SetAndAddMoveTheValueBothWays) {
  Gauge g;
  g.Set(10);
  g.Add(-3);
  g.Add(0.5);
  EXPECT_EQ(g.Value(), 7.5);
}

TEST(HistogramTest, SnapshotHasCumulativeBucketsWithInclusiveUpperBounds) {
  Histogram h({1, 2, 5});
  for (double v : {0.5, 1.0, 1.5, 2.0, 3.0, 100.0}) h.Observe(v);
  const Histogram::Snapshot s = h.TakeSnapshot();
  EXPECT_EQ(s.bounds, (std::vector<double>{1, 2, 5}));
  EXPECT_EQ(s.cumulative, (std::vector<std::uint64_t>{2, 4, 5, 6}));
  EXPECT_EQ(s.count, 6u);
  EXPECT_EQ(s.sum, 108.0);
}

TEST(HistogramTest, IgnoresNaNObservations) {
  Histogram h({1});
  h.Observe(std::nan(""));
  h.Observe(std::numeric_limits<double>::infinity());
  const Histogram::Snapshot s = h.TakeSnapshot();
  EXPECT_EQ(s.count, 1u);
  EXPECT_EQ(s.cumulative, (std::vector<std::uint64_t>{0, 1}));
}

TEST(HistogramTest, RejectsUnsortedOrNonFiniteBounds) {
  EXPECT_THROW(Histogram({2, 1}), std::invalid_argument);
  EXPECT_THROW(Histogram({1, 1}), std::invalid_argument);
  EXPECT_THROW(Histogram({std::nan("")}), std::invalid_argument);
  EXPECT_THROW(Histogram({-std::numeric_limits<double>::infinity(), 1}), std::invalid_argument);
  EXPECT_NO_THROW(Histogram({1, std::numeric_limits<double>::infinity()}));
  EXPECT_NO_THROW(Histogram({}));
}

TEST(LatencyBucketsTest, SpansHundredMicrosecondsToTenSecondsIncreasing) {
  const auto b = LatencyBuckets();
  ASSERT_FALSE(b.empty());
  EXPECT_EQ(b.front(), 0.0001);
  EXPECT_EQ(b.back(), 10);
  for (std::size_t i = 1; i < b.size(); ++i) EXPECT_LT(b[i - 1], b[i]);
  EXPECT_NO_THROW(Histogram{b});
}

TEST(RegistryTest, ExposesUnlabelledCounterWithHelpAndType) {
  Registry r;
  Counter& c = r.AddCounter("jobs_done_total", "Jobs done.");
  c.Inc(3);
  EXPECT_EQ(r.Expose(),
            "# HELP jobs_done_total Jobs done.\n"
            "# TYPE jobs_done_total counter\n"
            "jobs_done_total 3\n");
}

TEST(RegistryTest, ExposesUnlabelledMetricsAsZeroBeforeFirstUpdate) {
  Registry r;
  r.AddGauge("queue_depth", "Depth.");
  EXPECT_THAT(r.Expose(), HasSubstr("\nqueue_depth 0\n"));
}

TEST(RegistryTest, ExposesFamiliesInRegistrationOrderAndSeriesSortedByLabels) {
  Registry r;
  auto& requests = r.AddCounterFamily("requests_total", "Requests.", {"route", "code"});
  r.AddGauge("b_gauge", "B.").Set(-1.5);
  requests.With({"/x", "500"}).Inc();
  requests.With({"/a", "200"}).Inc(2);
  EXPECT_EQ(r.Expose(),
            "# HELP requests_total Requests.\n"
            "# TYPE requests_total counter\n"
            "requests_total{route=\"/a\",code=\"200\"} 2\n"
            "requests_total{route=\"/x\",code=\"500\"} 1\n"
            "# HELP b_gauge B.\n"
            "# TYPE b_gauge gauge\n"
            "b_gauge -1.5\n");
}

TEST(RegistryTest, EscapesLabelValuesAndHelpText) {
  Registry r;
  r.AddGaugeFamily("g", "Line one\nback\\slash \"quoted\"", {"v"})
      .With({"a\\b\"c\nd"})
      .Set(1);
  EXPECT_EQ(r.Expose(),
            "# HELP g Line one\\nback\\\\slash \"quoted\"\n"
            "# TYPE g gauge\n"
            "g{v=\"a\\\\b\\\"c\\nd\"} 1\n");
}

TEST(RegistryTest, ReplacesMalformedUtf8InLabelValuesAndKeepsWellFormedText) {
  Registry r;
  auto& f = r.AddGaugeFamily("g", "G.", {"v"});
  f.With({"temp \xc2\xb0" "C \xe6\xb8\xa9"}).Set(1);   // well-formed: kept as is
  f.With({"bad \xff \xc3"}).Set(2);                   // stray byte, truncated sequence
  f.With({"\xed\xa0\x80 \xc0\xaf"}).Set(3);         // surrogate, overlong '/'
  const std::string text = r.Expose();
  EXPECT_THAT(text, HasSubstr("g{v=\"temp \xc2\xb0" "C \xe6\xb8\xa9\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("g{v=\"bad \xef\xbf\xbd \xef\xbf\xbd\"} 2\n"));
  EXPECT_THAT(text, HasSubstr(
      "g{v=\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd \xef\xbf\xbd\xef\xbf\xbd\"} 3\n"));
}

TEST(RegistryTest, ExposesHistogramBucketsSumAndCount) {
  Registry r;
  auto& h = r.AddHistogramFamily("latency_seconds", "Latency.", {0.005, 0.5, 1}, {"op"});
  auto& reads = h.With({"read"});
  reads.Observe(0.00390625);
  reads.Observe(0.25);
  reads.Observe(7);
  EXPECT_EQ(r.Expose(),
            "# HELP latency_seconds Latency.\n"
            "# TYPE latency_seconds histogram\n"
            "latency_seconds_bucket{op=\"read\",le=\"0.005\"} 1\n"
            "latency_seconds_bucket{op=\"read\",le=\"0.5\"} 2\n"
            "latency_seconds_bucket{op=\"read\",le=\"1\"} 2\n"
            "latency_seconds_bucket{op=\"read\",le=\"+Inf\"} 3\n"
            "latency_seconds_sum{op=\"read\"} 7.25390625\n"
            "latency_seconds_count{op=\"read\"} 3\n");
}

TEST(RegistryTest, ExposesUnlabelledHistogramWithOnlyTheLeLabel) {
  Registry r;
  r.AddHistogram("size_bytes", "Size.", {1000}).Observe(10);
  EXPECT_THAT(r.Expose(), HasSubstr("size_bytes_bucket{le=\"1000\"} 1\n"
                                    "size_bytes_bucket{le=\"+Inf\"} 1\n"
                                    "size_bytes_sum 10\n"
                                    "size_bytes_count 1\n"));
}

TEST(RegistryTest, EvaluatesCallbackGaugesAtEachExposition) {
  Registry r;
  double depth = 1;
  r.AddCallbackGauge("depth", "Depth.", [&depth] { return depth; });
  EXPECT_THAT(r.Expose(), HasSubstr("\ndepth 1\n"));
  depth = 7;
  EXPECT_THAT(r.Expose(), HasSubstr("\ndepth 7\n"));
}

TEST(RegistryTest, ExposesCallbackCounterAsCounter) {
  Registry r;
  r.AddCallbackCounter("ticks_total", "Ticks.", [] { return 5.0; });
  EXPECT_THAT(r.Expose(), HasSubstr("# TYPE ticks_total counter\nticks_total 5\n"));
}

TEST(FamilyTest, WithReturnsTheSameSeriesForTheSameLabelValues) {
  Registry r;
  auto& f = r.AddCounterFamily("x_total", "X.", {"a", "b"});
  Counter& first = f.With({"1", "2"});
  std::string a = "1";
  std::string b = "2";
  EXPECT_EQ(&f.With({a, b}), &first);
  EXPECT_NE(&f.With({"2", "1"}), &first);
  EXPECT_NE(&f.With({"1", ""}), &first);
  EXPECT_EQ(f.labels(), (std::vector<std::string>{"a", "b"}));
}

TEST(FamilyTest, WithRejectsWrongNumberOfLabelValues) {
  Registry r;
  auto& f = r.AddGaugeFamily("g", "G.", {"a"});
  EXPECT_THROW(f.With({}), std::invalid_argument);
  EXPECT_THROW(f.With({"1", "2"}), std::invalid_argument);
}

TEST(RegistryTest, RejectsCounterNamesWithoutTotalSuffix) {
  Registry r;
  EXPECT_THROW(r.AddCounter("requests", "R."), std::invalid_argument);
  EXPECT_THROW(r.AddCounterFamily("requests", "R.", {"a"}), std::invalid_argument);
  EXPECT_THROW(r.AddCallbackCounter("cpu_seconds", "C.", [] { return 0.0; }),
               std::invalid_argument);
}

TEST(RegistryTest, RejectsInvalidMetricAndLabelNames) {
  Registry r;
  EXPECT_THROW(r.AddGauge("", "E."), std::invalid_argument);
  EXPECT_THROW(r.AddGauge("1abc", "E."), std::invalid_argument);
  EXPECT_THROW(r.AddGauge("a-b", "E."), std::invalid_argument);
  EXPECT_THROW(r.AddGaugeFamily("g1", "E.", {"bad-label"}), std::invalid_argument);
  EXPECT_THROW(r.AddGaugeFamily("g2", "E.", {"__reserved"}), std::invalid_argument);
  EXPECT_THROW(r.AddGaugeFamily("g3", "E.", {"a", "a"}), std::invalid_argument);
  EXPECT_THROW(r.AddGaugeFamily("g4", "E.", {"0a"}), std::invalid_argument);
  EXPECT_THROW(r.AddHistogramFamily("h", "E.", {1}, {"le"}), std::invalid_argument);
  EXPECT_NO_THROW(r.AddGauge("ns:sub_name", "Colons are allowed."));
  EXPECT_NO_THROW(r.AddGaugeFamily("g5", "E.", {"_ok", "Ok9"}));
}

TEST(RegistryTest, RejectsDuplicateNamesIncludingHistogramSeriesNames) {
  Registry r;
  r.AddGauge("dup", "D.");
  EXPECT_THROW(r.AddGauge("dup", "D."), std::invalid_argument);
  EXPECT_THROW(r.AddCallbackGauge("dup", "D.", [] { return 0.0; }), std::invalid_argument);
  r.AddHistogram("wait_seconds", "W.", {1});
  EXPECT_THROW(r.AddGauge("wait_seconds_count", "W."), std::invalid_argument);
  EXPECT_THROW(r.AddCounter("wait_seconds_sum", "W."), std::invalid_argument);
  r.AddGauge("lat_count", "L.");
  EXPECT_THROW(r.AddHistogram("lat", "L.", {1}), std::invalid_argument);
  // A failed registration leaves nothing behind.
  EXPECT_NO_THROW(r.AddHistogram("lat2", "L.", {1}));
  EXPECT_THAT(r.Expose(), Not(HasSubstr("# HELP lat ")));
}

TEST(RegistryTest, RejectsInvalidHistogramBuckets) {
  Registry r;
  EXPECT_THROW(r.AddHistogram("h1", "H.", {3, 2}), std::invalid_argument);
  EXPECT_THROW(r.AddHistogramFamily("h2", "H.", {std::nan("")}, {"a"}), std::invalid_argument);
}

TEST(ConcurrencyTest, ConcurrentUpdatesAreAllCounted) {
  Registry r;
  Counter& counter = r.AddCounter("c_total", "C.");
  Gauge& gauge = r.AddGauge("g", "G.");
  Histogram& histogram = r.AddHistogram("h", "H.", {0.5});
  auto& family = r.AddCounterFamily("f_total", "F.", {"shard"});
  constexpr int kThreads = 4;
  constexpr int kIterations = 50000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const std::string shard = std::to_string(t % 2);
      for (int i = 0; i < kIterations; ++i) {
        counter.Inc();
        gauge.Add(1);
        histogram.Observe(i % 2 == 0 ? 0.25 : 1.0);
        family.With({shard}).Inc();
        if (i % 10000 == 0) (void)r.Expose();  // scrapes race with updates
      }
    });
  }
  for (auto& t : threads) t.join();
  constexpr double kTotal = double{kThreads} * kIterations;
  EXPECT_EQ(counter.Value(), kTotal);
  EXPECT_EQ(gauge.Value(), kTotal);
  const auto s = histogram.TakeSnapshot();
  EXPECT_EQ(s.count, static_cast<std::uint64_t>(kTotal));
  EXPECT_EQ(s.cumulative[0], static_cast<std::uint64_t>(kTotal / 2));
  EXPECT_EQ(family.With({"0"}).Value() + family.With({"1"}).Value(), kTotal);
}

TEST(ConcurrencyTest, ConcurrentWithCreatesOneSeriesPerLabelValues) {
  Registry r;
  auto& family = r.AddGaugeFamily("g", "G.", {"k"});
  constexpr int kThreads = 4;
  std::vector<std::vector<Gauge*>> seen(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) seen[t].push_back(&family.With({std::to_string(i)}));
    });
  }
  for (auto& t : threads) t.join();
  for (int t = 1; t < kThreads; ++t) EXPECT_EQ(seen[t], seen[0]);
}

}  // namespace
}  // namespace iot::metrics
