// store_bench.cc: SqliteStore write throughput and query latency.
//
//   store_bench                                   # defaults: ~1 minute
//   IOT_STORE_BENCH_READINGS=10000000 store_bench # query benchmarks over 10 million readings
//   IOT_STORE_BENCH_DIR=/mnt/ssd store_bench      # where the databases go (default: $TMPDIR)
//
// Data shape: 1,000 devices sending one reading per second each (temperature_c, humidity),
// aggregated into 1m and 1h windows, written the way the aggregator writes: one Apply per batch
// with the raw readings, one DeviceUpdate per device, the merged aggregate deltas, the ingest
// count and a checkpoint.
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
#include <unordered_map>
#include <vector>

#include <benchmark/benchmark.h>
#include <unistd.h>

#include "store/sqlite_store.h"

namespace iot::store {
namespace {

namespace fs = std::filesystem;

constexpr int kDevices = 1000;
constexpr std::int64_t kStartUs = 1'700'000'000'000'000;  // minute-aligned
constexpr std::int64_t kIntervalUs = 1'000'000;           // one reading per second per device

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

std::string DeviceName(int d) { return "device-" + std::to_string(d); }

// Generator produces the aggregator's batches for the fleet, in time order.
class Generator {
 public:
  Generator() {
    for (int d = 0; d < kDevices; ++d) names_.push_back(DeviceName(d));
  }

  // Next returns a batch of `n` readings (n / kDevices per device).
  WriteBatch Next(std::size_t n) {
    WriteBatch b;
    const std::size_t per_device = std::max<std::size_t>(1, n / kDevices);
    b.readings.reserve(per_device * kDevices);
    std::unordered_map<core::AggregateKey, core::Accumulator, core::AggregateKeyHash> deltas;
    for (std::size_t k = 0; k < per_device; ++k) {
      const std::int64_t ts_us = kStartUs + (tick_ + static_cast<std::int64_t>(k)) * kIntervalUs;
      for (int d = 0; d < kDevices; ++d) {
        StoredReading r;
        r.id = core::MessageId::Of(0, offset_++);
        r.reading.device_id = names_[static_cast<std::size_t>(d)];
        // Devices are not synchronized: spread them over the second.
        r.reading.ts = core::FromUnixMicros(ts_us + d * 997);
        double temp = 20 + static_cast<double>((offset_ * 7919) % 1000) / 100.0;
        double hum = 40 + static_cast<double>((offset_ * 104729) % 2000) / 100.0;
        r.reading.sensors = {{"temperature_c", temp}, {"humidity", hum}};
        for (const auto& s : r.reading.sensors) {
          for (core::Micros w :
               {core::Micros(std::chrono::minutes(1)), core::Micros(std::chrono::hours(1))}) {
            core::Timestamp start = core::FromUnixMicros(
                core::ToUnixMicros(r.reading.ts) - (core::ToUnixMicros(r.reading.ts) % w.count()));
            deltas[core::AggregateKey{r.reading.device_id, s.name, w, start}].Add(s.value);
          }
        }
        b.readings.push_back(std::move(r));
      }
    }
    tick_ += static_cast<std::int64_t>(per_device);
    // One DeviceUpdate per device: its readings of the batch are the last per_device ones.
    for (int d = 0; d < kDevices; ++d) {
      DeviceUpdate u;
      u.device_id = names_[static_cast<std::size_t>(d)];
      u.first_seen = b.readings[static_cast<std::size_t>(d)].reading.ts;
      const auto& last = b.readings[(per_device - 1) * kDevices + static_cast<std::size_t>(d)];
      u.last_seen = last.reading.ts;
      u.readings = static_cast<std::int64_t>(per_device);
      u.latest = last.reading;
      b.devices.push_back(std::move(u));
    }
    for (auto& [key, acc] : deltas) b.aggregates.push_back(AggregateDelta{key, acc});
    b.ingested = static_cast<std::int64_t>(b.readings.size());
    b.processed_at = b.readings.back().reading.ts;
    b.checkpoint = Checkpoint{"aggregator", 0, offset_};
    return b;
  }

  std::int64_t end_us() const { return kStartUs + tick_ * kIntervalUs; }

 private:
  std::vector<std::string> names_;
  std::int64_t offset_ = 0;
  std::int64_t tick_ = 0;
};

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
                     std::numeric_limits<std::int64_t>::max()};
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
