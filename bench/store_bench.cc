// store_bench.cc: SqliteStore write throughput and query latency.
//
//   store_bench                                   # defaults: ~1 minute
//   IOT_STORE_BENCH_READINGS=10000000 store_bench # query benchmarks over 10 million readings
//   IOT_STORE_BENCH_DIR=/mnt/ssd store_bench      # where the databases go (default: $TMPDIR)
//
// Data shape (bench/store_batches.h): 1,000 devices sending one reading per second each
// (temperature_c, humidity), aggregated into 1m and 1h windows, written the way the aggregator
// writes: one Apply per batch with the raw readings, one DeviceUpdate per device, the merged
// aggregate deltas, the ingest count and a checkpoint.
//
// BM_Apply reports readings/s (items_per_second). The query benchmarks run against one store
// pre-filled with IOT_STORE_BENCH_READINGS readings (default 2,000,000) and report mean
// latency plus p50/p99 counters in microseconds.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>
#include <unistd.h>

#include "store/sqlite_store.h"
#include "store_batches.h"

namespace iot::store {
namespace {

namespace fs = std::filesystem;

using bench::DeviceName;
using bench::Generator;
using bench::kDevices;
using bench::kIntervalUs;
using bench::kStartUs;

std::size_t EnvSize(const char* name, std::size_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  return static_cast<std::size_t>(std::strtoull(v, nullptr, 10));
}

fs::path BenchDir(const std::string& name) {
  const char* base = std::getenv("IOT_STORE_BENCH_DIR");
  fs::path dir = base != nullptr ? fs::path(base) : fs::temp_directory_path();
  dir /= "iot_store_bench_" + std::to_string(::getpid()) + "_" + name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

std::unique_ptr<SqliteStore> OpenStore(const fs::path& dir) {
  SqliteStoreOptions o;
  o.path = (dir / "store.db").string();
  auto store = SqliteStore::Open(o);
  if (!store) {
    std::fprintf(stderr, "open failed: %s\n", store.error().message.c_str());
    std::abort();
  }
  return std::move(*store);
}

double ResidentMiB() {
  std::ifstream statm("/proc/self/statm");
  long pages = 0, resident = 0;
  statm >> pages >> resident;
  return static_cast<double>(resident) * static_cast<double>(::sysconf(_SC_PAGESIZE)) / (1 << 20);
}

// ---- write throughput -----------------------------------------------------------------------

void BM_Apply(benchmark::State& state) {
  const auto batch_size = static_cast<std::size_t>(state.range(0));
  fs::path dir = BenchDir("apply_" + std::to_string(batch_size));
  auto store = OpenStore(dir);
  Generator gen;
  std::int64_t readings = 0;
  for (auto _ : state) {
    state.PauseTiming();
    WriteBatch b = gen.Next(batch_size);
    state.ResumeTiming();
    Status s = store->Apply(b);
    if (!s) state.SkipWithError(s.error().message.c_str());
    readings += static_cast<std::int64_t>(b.readings.size());
  }
  state.SetItemsProcessed(readings);
  state.counters["db_MiB"] = static_cast<double>(fs::file_size(dir / "store.db")) / (1 << 20);
  store.reset();
  fs::remove_all(dir);
}
BENCHMARK(BM_Apply)->Arg(1000)->Iterations(300)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Apply)->Arg(10000)->Iterations(150)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Apply)->Arg(50000)->Iterations(40)->Unit(benchmark::kMillisecond)->UseRealTime();

// ---- queries over a pre-filled store ------------------------------------------------------

struct Filled {
  fs::path dir;
  std::unique_ptr<SqliteStore> store;
  std::int64_t end_us = 0;
  std::size_t readings = 0;
  double fill_seconds = 0;
};

Filled& FilledStore() {
  static Filled* filled = [] {
    auto* f = new Filled;
    f->dir = BenchDir("queries");
    f->readings = EnvSize("IOT_STORE_BENCH_READINGS", 2'000'000);
    {
      auto store = OpenStore(f->dir);
      Generator gen;
      auto start = std::chrono::steady_clock::now();
      for (std::size_t done = 0; done < f->readings; done += 10'000) {
        Status s = store->Apply(gen.Next(10'000));
        if (!s) {
          std::fprintf(stderr, "fill failed: %s\n", s.error().message.c_str());
          std::abort();
        }
      }
      f->fill_seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      f->end_us = gen.end_us();
    }
    // Reopen, as a restarted process would (cold caches).
    f->store = OpenStore(f->dir);
    std::atexit([] {
      FilledStore().store.reset();
      fs::remove_all(FilledStore().dir);
    });
    return f;
  }();
  return *filled;
}

// Latencies collects per-query latencies for percentile counters.
class Latencies {
 public:
  void Add(std::chrono::steady_clock::duration d) {
    us_.push_back(std::chrono::duration<double, std::micro>(d).count());
  }
  void Report(benchmark::State& state) {
    if (us_.empty()) return;
    std::sort(us_.begin(), us_.end());
    auto at = [&](double p) {
      return us_[std::min(us_.size() - 1,
                          static_cast<std::size_t>(p * static_cast<double>(us_.size())))];
    };
    state.counters["p50_us"] = at(0.50);
    state.counters["p99_us"] = at(0.99);
    state.counters["max_us"] = us_.back();
  }

 private:
  std::vector<double> us_;
};

template <typename Fn>
void RunQueries(benchmark::State& state, Fn fn) {
  Filled& f = FilledStore();
  std::mt19937_64 rng(42);
  Latencies lat;
  for (auto _ : state) {
    auto start = std::chrono::steady_clock::now();
    std::size_t n = fn(*f.store, rng, f.end_us);
    lat.Add(std::chrono::steady_clock::now() - start);
    benchmark::DoNotOptimize(n);
  }
  lat.Report(state);
  state.counters["stored_readings"] = static_cast<double>(f.readings);
}

std::string RandomDevice(std::mt19937_64& rng) {
  return DeviceName(std::uniform_int_distribution<int>(0, kDevices - 1)(rng));
}

template <typename T>
std::size_t Count(const Result<Page<T>>& page) {
  if (!page) {
    std::fprintf(stderr, "query failed: %s\n", page.error().message.c_str());
    std::abort();
  }
  return page->items.size();
}

void BM_TelemetryDeviceNewest(benchmark::State& state) {
  RunQueries(state, [](Store& s, std::mt19937_64& rng, std::int64_t) {
    TelemetryQuery q;
    q.device_id = RandomDevice(rng);
    q.limit = 100;
    return Count(s.Telemetry(q));
  });
}
BENCHMARK(BM_TelemetryDeviceNewest)->Unit(benchmark::kMicrosecond)->Iterations(3000);

void BM_TelemetryDeviceCursorDeep(benchmark::State& state) {
  // A page starting at a random point of the device's history (a cursor or `to`).
  RunQueries(state, [](Store& s, std::mt19937_64& rng, std::int64_t end_us) {
    TelemetryQuery q;
    q.device_id = RandomDevice(rng);
    q.limit = 100;
    q.after = Cursor{std::uniform_int_distribution<std::int64_t>(kStartUs, end_us)(rng),
                     std::numeric_limits<std::int64_t>::max(),
                     {}};
    return Count(s.Telemetry(q));
  });
}
BENCHMARK(BM_TelemetryDeviceCursorDeep)->Unit(benchmark::kMicrosecond)->Iterations(3000);

void BM_TelemetryDeviceTenMinuteRange(benchmark::State& state) {
  RunQueries(state, [](Store& s, std::mt19937_64& rng, std::int64_t end_us) {
    TelemetryQuery q;
    q.device_id = RandomDevice(rng);
    q.limit = 1000;
    std::int64_t from = std::uniform_int_distribution<std::int64_t>(kStartUs, end_us)(rng);
    q.range.from = core::FromUnixMicros(from);
    q.range.to = core::FromUnixMicros(from + 600 * kIntervalUs);
    return Count(s.Telemetry(q));
  });
}
BENCHMARK(BM_TelemetryDeviceTenMinuteRange)->Unit(benchmark::kMicrosecond)->Iterations(1000);

void BM_TelemetryAllDevicesNewest(benchmark::State& state) {
  RunQueries(state, [](Store& s, std::mt19937_64&, std::int64_t) {
    TelemetryQuery q;
    q.limit = 100;
    return Count(s.Telemetry(q));
  });
}
BENCHMARK(BM_TelemetryAllDevicesNewest)->Unit(benchmark::kMicrosecond)->Iterations(300);

void BM_AggregatesDevice(benchmark::State& state) {
  RunQueries(state, [](Store& s, std::mt19937_64& rng, std::int64_t) {
    AggregateQuery q;
    q.device_id = RandomDevice(rng);
    q.limit = 100;
    return Count(s.Aggregates(q));
  });
}
BENCHMARK(BM_AggregatesDevice)->Unit(benchmark::kMicrosecond)->Iterations(3000);

void BM_AggregatesDeviceSensorWindow(benchmark::State& state) {
  RunQueries(state, [](Store& s, std::mt19937_64& rng, std::int64_t) {
    AggregateQuery q;
    q.device_id = RandomDevice(rng);
    q.sensor_type = "temperature_c";
    q.window = std::chrono::minutes(1);
    q.limit = 100;
    return Count(s.Aggregates(q));
  });
}
BENCHMARK(BM_AggregatesDeviceSensorWindow)->Unit(benchmark::kMicrosecond)->Iterations(3000);

void BM_GetStats(benchmark::State& state) {
  RunQueries(state, [](Store& s, std::mt19937_64&, std::int64_t end_us) {
    auto stats = s.GetStats(core::FromUnixMicros(end_us));
    return stats ? static_cast<std::size_t>(stats->readings) : 0;
  });
}
BENCHMARK(BM_GetStats)->Unit(benchmark::kMicrosecond)->Iterations(1000);

// BM_Open measures start-up on the filled store; it also reports the fill rate and the
// process's resident memory.
void BM_Open(benchmark::State& state) {
  Filled& f = FilledStore();
  for (auto _ : state) {
    auto store = OpenStore(f.dir);
    auto stats = store->GetStats(core::FromUnixMicros(f.end_us));
    benchmark::DoNotOptimize(stats);
  }
  state.counters["fill_readings_per_s"] = static_cast<double>(f.readings) / f.fill_seconds;
  state.counters["db_MiB"] = static_cast<double>(fs::file_size(f.dir / "store.db")) / (1 << 20);
  state.counters["rss_MiB"] = ResidentMiB();
}
BENCHMARK(BM_Open)->Unit(benchmark::kMillisecond)->Iterations(20);

}  // namespace
}  // namespace iot::store

BENCHMARK_MAIN();
