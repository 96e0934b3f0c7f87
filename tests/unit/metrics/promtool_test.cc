// Validates the exposition with the real `promtool check metrics` (Debian's prometheus package).
// The test fails, rather than skips, when promtool is missing: the format is only trusted
// because the reference tool accepts it.
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <limits>
#include <string>

#include "metrics/metrics.h"

namespace iot::metrics {
namespace {

constexpr const char* kPromtool = "/usr/bin/promtool";

struct CheckResult {
  int exit_code = -1;
  std::string output;
};

// PromtoolCheck runs `promtool check metrics` with `exposition` on its stdin.
CheckResult PromtoolCheck(const std::string& exposition) {
  const std::string path = ::testing::TempDir() + "metrics_" + std::to_string(getpid()) + "_" +
                           ::testing::UnitTest::GetInstance()->current_test_info()->name();
  {
    std::ofstream out(path, std::ios::binary);
    out << exposition;
  }
  const std::string command = std::string(kPromtool) + " check metrics < '" + path + "' 2>&1";
  CheckResult result;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return result;
  std::array<char, 4096> buf{};
  for (std::size_t n; (n = fread(buf.data(), 1, buf.size(), pipe)) > 0;) {
    result.output.append(buf.data(), n);
  }
  const int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::remove(path.c_str());
  return result;
}

class PromtoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(access(kPromtool, X_OK), 0)
        << kPromtool << " is missing: install Debian's prometheus package";
  }
};

TEST_F(PromtoolTest, AcceptsEveryMetricKindWithTrickyLabelValues) {
  Registry r;
  r.AddCounter("events_total", "Events seen, with \"quotes\", a back\\slash\nand a newline.")
      .Inc(1e20);
  auto& requests = r.AddCounterFamily("http_requests_total", "Requests.",
                                      {"route", "method", "code"});
  requests.With({"/devices/{device_id}/telemetry", "GET", "200"}).Inc();
  requests.With({"quote\" back\\slash", "new\nline", "}{,=\t"}).Inc(2);
  requests.With({"", "温度 °C", "\xff\xfe broken utf-8 \xc3"}).Inc(0.5);
  r.AddGauge("temperature_celsius", "Temperature.").Set(-12.75);
  auto& gauges = r.AddGaugeFamily("special_values", "Infinities and NaN.", {"kind"});
  gauges.With({"pos"}).Set(std::numeric_limits<double>::infinity());
  gauges.With({"neg"}).Set(-std::numeric_limits<double>::infinity());
  gauges.With({"nan"}).Set(std::numeric_limits<double>::quiet_NaN());
  gauges.With({"tiny"}).Set(1e-300);
  r.AddGaugeFamily("never_used", "A family without series.", {"x"});
  r.AddHistogram("request_duration_seconds", "Latency.", LatencyBuckets()).Observe(0.003);
  auto& sizes = r.AddHistogramFamily("body_size_bytes", "Body sizes.", {64, 1024, 65536},
                                     {"route"});
  sizes.With({"/ingest"}).Observe(100);
  sizes.With({"/ingest\"\n"}).Observe(1e9);
  r.AddCallbackGauge("queue_depth", "Depth.", [] { return 3.0; });
  r.AddCallbackCounter("ticks_total", "Ticks.", [] { return 0.1; });
  AddProcessMetrics(r);

  const CheckResult result = PromtoolCheck(r.Expose());
  EXPECT_EQ(result.exit_code, 0) << result.output << "\n--- exposition ---\n" << r.Expose();
  EXPECT_EQ(result.output, "");
}

TEST_F(PromtoolTest, RejectsABrokenExposition) {
  // Proves that the check above can fail: an unescaped newline in a label value and a counter
  // without the _total suffix.
  EXPECT_NE(PromtoolCheck("# TYPE x counter\nx{a=\"1\n\"} 1\n").exit_code, 0);
  EXPECT_NE(PromtoolCheck("# HELP x X.\n# TYPE x counter\nx 1\n").exit_code, 0);
}

}  // namespace
}  // namespace iot::metrics
