// process_metrics.cc: the standard process_* metrics, read from /proc at scrape time.
#include <sys/resource.h>
#include <unistd.h>

#include <charconv>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "metrics/metrics.h"

namespace iot::metrics {
namespace {

std::string ReadFile(const char* path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// StatFields returns the fields of /proc/self/stat after the command name, so that index 0 is
// field 3 ("state") of proc(5). The command name may contain spaces and parentheses: it ends at
// the last ')'.
std::vector<std::string> StatFields() {
  const std::string stat = ReadFile("/proc/self/stat");
  std::vector<std::string> fields;
  const auto close = stat.rfind(')');
  if (close == std::string::npos) return fields;
  std::istringstream in(stat.substr(close + 1));
  for (std::string f; in >> f;) fields.push_back(std::move(f));
  return fields;
}

// StatField returns field `n` (1-based, as numbered in proc(5)) of /proc/self/stat.
std::optional<double> StatField(const std::vector<std::string>& fields, std::size_t n) {
  if (n < 3 || n - 3 >= fields.size()) return std::nullopt;
  const std::string& f = fields[n - 3];
  unsigned long long v = 0;
  auto [ptr, ec] = std::from_chars(f.data(), f.data() + f.size(), v);
  if (ec != std::errc() || ptr != f.data() + f.size()) return std::nullopt;
  return static_cast<double>(v);
}

double ClockTicks() { return static_cast<double>(sysconf(_SC_CLK_TCK)); }
double PageSize() { return static_cast<double>(sysconf(_SC_PAGESIZE)); }

double BootTimeSeconds() {
  std::istringstream in(ReadFile("/proc/stat"));
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with("btime ")) return std::stod(line.substr(6));
  }
  return 0;
}

double OpenFds() {
  std::error_code ec;
  double n = 0;
  for (std::filesystem::directory_iterator it("/proc/self/fd", ec), end; !ec && it != end;
       it.increment(ec)) {
    ++n;
  }
  // The iterator's own descriptor is listed too.
  return n > 0 ? n - 1 : 0;
}

double MaxFds() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return 0;
  return static_cast<double>(limit.rlim_cur);
}

}  // namespace

void AddProcessMetrics(Registry& registry) {
  // Fields of /proc/self/stat (proc(5)): 14 utime, 15 stime, 22 starttime (ticks after boot),
  // 23 vsize (bytes), 24 rss (pages).
  const double start = [] {
    auto t = StatField(StatFields(), 22);
    return t ? BootTimeSeconds() + *t / ClockTicks() : 0;
  }();
  registry.AddCallbackGauge("process_resident_memory_bytes", "Resident memory size in bytes.",
                            [] { return StatField(StatFields(), 24).value_or(0) * PageSize(); });
  registry.AddCallbackGauge("process_virtual_memory_bytes", "Virtual memory size in bytes.",
                            [] { return StatField(StatFields(), 23).value_or(0); });
  registry.AddCallbackCounter("process_cpu_seconds_total",
                              "Total user and system CPU time spent in seconds.", [] {
                                const auto fields = StatFields();
                                return (StatField(fields, 14).value_or(0) +
                                        StatField(fields, 15).value_or(0)) /
                                       ClockTicks();
                              });
  registry.AddCallbackGauge("process_start_time_seconds",
                            "Start time of the process since unix epoch in seconds.",
                            [start] { return start; });
  registry.AddCallbackGauge("process_open_fds", "Number of open file descriptors.", OpenFds);
  registry.AddCallbackGauge("process_max_fds", "Maximum number of open file descriptors.",
                            MaxFds);
}

}  // namespace iot::metrics
