// Tests of the process_* metrics read from /proc/self.
#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <optional>
#include <sstream>
#include <string>

#include "metrics/metrics.h"

namespace iot::metrics {
namespace {

// SampleValue returns the value of the unlabelled sample `name` in an exposition.
std::optional<double> SampleValue(const std::string& exposition, const std::string& name) {
  std::istringstream in(exposition);
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with(name + " ")) return std::stod(line.substr(name.size() + 1));
  }
  return std::nullopt;
}

double NowSeconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

TEST(ProcessMetricsTest, ExposesPlausibleValuesForThisProcess) {
  Registry r;
  AddProcessMetrics(r);
  const std::string text = r.Expose();
  EXPECT_GT(SampleValue(text, "process_resident_memory_bytes").value_or(0), 1024 * 1024);
  EXPECT_GE(SampleValue(text, "process_virtual_memory_bytes").value_or(0),
            SampleValue(text, "process_resident_memory_bytes").value_or(-1));
  EXPECT_GE(SampleValue(text, "process_cpu_seconds_total").value_or(-1), 0);
  const double start = SampleValue(text, "process_start_time_seconds").value_or(0);
  EXPECT_GT(start, 1.5e9);  // after 2017
  EXPECT_LE(start, NowSeconds() + 1);
  EXPECT_GE(SampleValue(text, "process_open_fds").value_or(0), 3);  // stdin, stdout, stderr
  EXPECT_GE(SampleValue(text, "process_max_fds").value_or(0),
            SampleValue(text, "process_open_fds").value_or(1));
  EXPECT_NE(text.find("# TYPE process_cpu_seconds_total counter\n"), std::string::npos);
}

TEST(ProcessMetricsTest, OpenFdsFollowsDescriptorsOpenedAndClosed) {
  Registry r;
  AddProcessMetrics(r);
  const double before = SampleValue(r.Expose(), "process_open_fds").value_or(-1);
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  EXPECT_EQ(SampleValue(r.Expose(), "process_open_fds").value_or(-1), before + 2);
  close(fds[0]);
  close(fds[1]);
  EXPECT_EQ(SampleValue(r.Expose(), "process_open_fds").value_or(-1), before);
}

TEST(ProcessMetricsTest, CpuSecondsGrowWithWork) {
  Registry r;
  AddProcessMetrics(r);
  const double before = SampleValue(r.Expose(), "process_cpu_seconds_total").value_or(-1);
  // Burn CPU until the counter moves (one clock tick, usually 10ms); bounded by a deadline.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  volatile double sink = 0;
  double after = before;
  while (after <= before && std::chrono::steady_clock::now() < deadline) {
    for (int i = 0; i < 100000; ++i) sink = sink + i;
    after = SampleValue(r.Expose(), "process_cpu_seconds_total").value_or(-1);
  }
  EXPECT_GT(after, before);
}

}  // namespace
}  // namespace iot::metrics
