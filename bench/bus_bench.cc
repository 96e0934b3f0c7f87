// bus_bench.cc: throughput of the embedded bus (src/bus/embedded_bus.h).
//
//   BM_ProduceBatches/<threads>/<batch>   durable messages/s when `threads` callers produce
//                                         batches of `batch` messages (~80-byte payloads), each
//                                         keeping 4 calls in flight (ingest's batch endpoint)
//   BM_ProduceSingles/<threads>           durable messages/s when `threads` callers each produce
//                                         one message and wait for it (HTTP connections)
//   BM_Consume                            records/s read by one consumer polling 1,000 at a time
//
// Every produce benchmark uses Sync::kFull (an fsync per group commit) unless its name says
// kNormal. Files go to $BUS_BENCH_DIR (default: the temp directory). Run with
// --benchmark_repetitions=N to get medians; each benchmark already repeats 5 times and reports
// mean, median and stddev. The counters show the average group size (messages per commit).
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <semaphore>
#include <string>
#include <thread>
#include <vector>

#include "bus/embedded_bus.h"

namespace iot::bus {
namespace {

using Sync = EmbeddedBusOptions::Sync;

std::string BenchDir() {
  const char* env = std::getenv("BUS_BENCH_DIR");
  return env != nullptr ? env : std::filesystem::temp_directory_path().string();
}

// ScratchBus is a bus in a fresh file, deleted afterwards.
class ScratchBus {
 public:
  explicit ScratchBus(Sync sync) {
    static std::atomic<int> counter{0};
    path_ = BenchDir() + "/iot_bus_bench_" + std::to_string(::getpid()) + "_" +
            std::to_string(counter++) + ".db";
    Remove();
    EmbeddedBusOptions options;
    options.path = path_;
    options.sync = sync;
    auto bus = EmbeddedBus::Open(options);
    if (!bus) {
      std::fprintf(stderr, "open %s: %s\n", path_.c_str(), bus.error().message.c_str());
      std::abort();
    }
    bus_ = std::move(*bus);
  }
  ~ScratchBus() {
    bus_->Close();
    bus_.reset();
    Remove();
  }
  EmbeddedBus& bus() { return *bus_; }

 private:
  void Remove() {
    for (const char* suffix : {"", "-wal", "-shm", ".lock"}) {
      std::error_code ec;
      std::filesystem::remove(path_ + suffix, ec);
    }
  }
  std::string path_;
  std::shared_ptr<EmbeddedBus> bus_;
};

// BuildBatch builds `n` messages like ingest's: the device id as key, an ~80-byte JSON reading.
std::vector<Message> BuildBatch(std::size_t n, std::size_t seed) {
  std::vector<Message> batch;
  batch.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    char key[32];
    std::snprintf(key, sizeof key, "sensor-%04zu", (seed + i) % 10000);
    char payload[128];
    std::snprintf(payload, sizeof payload,
                  "{\"device_id\":\"%s\",\"ts\":1700000000%06zu,\"temperature_c\":21.5,"
                  "\"humidity\":40.1}",
                  key, i);
    batch.push_back({key, payload});
  }
  return batch;
}

// MakeBatch copies a prebuilt batch: callers pay for the messages' memory as ingest does, not
// for formatting them.
std::vector<Message> MakeBatch(std::size_t n) {
  thread_local std::vector<Message> prototype;
  thread_local std::size_t seed = std::hash<std::thread::id>{}(std::this_thread::get_id());
  if (prototype.size() != n) prototype = BuildBatch(n, seed);
  return prototype;
}

void ReportGroups(benchmark::State& state, const EmbeddedBus& bus) {
  const auto stats = bus.GetStats();
  if (stats.groups_committed > 0) {
    state.counters["msgs_per_commit"] = static_cast<double>(stats.messages_committed) /
                                        static_cast<double>(stats.groups_committed);
  }
  if (stats.groups_failed > 0 || stats.messages_rejected > 0) state.SkipWithError("produce failed");
}

void ProduceBatches(benchmark::State& state, Sync sync) {
  const auto threads = static_cast<int>(state.range(0));
  const auto batch = static_cast<std::size_t>(state.range(1));
  constexpr int kInFlight = 4;
  const std::size_t calls_per_thread = std::max<std::size_t>(1, 200'000 / batch / threads);
  ScratchBus scratch(sync);
  auto producer = scratch.bus().NewProducer();
  std::atomic<bool> failed{false};
  for (auto _ : state) {
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&] {
        std::counting_semaphore<kInFlight> in_flight(kInFlight);
        for (std::size_t i = 0; i < calls_per_thread; ++i) {
          in_flight.acquire();
          producer->Produce(MakeBatch(batch),
                            [&](Status s) {
                              if (!s) failed = true;
                              in_flight.release();
                            });
        }
        for (int k = 0; k < kInFlight; ++k) in_flight.acquire();
      });
    }
    for (auto& w : workers) w.join();
  }
  if (failed) state.SkipWithError("a produce call failed");
  state.SetItemsProcessed(state.iterations() *
                          static_cast<std::int64_t>(calls_per_thread * batch) * threads);
  ReportGroups(state, scratch.bus());
}

void BM_ProduceBatches(benchmark::State& state) { ProduceBatches(state, Sync::kFull); }
void BM_ProduceBatches_kNormal(benchmark::State& state) { ProduceBatches(state, Sync::kNormal); }

void BM_ProduceSingles(benchmark::State& state) {
  const auto threads = static_cast<int>(state.range(0));
  constexpr int kCallsPerThread = 300;
  ScratchBus scratch(Sync::kFull);
  auto producer = scratch.bus().NewProducer();
  std::atomic<bool> failed{false};
  for (auto _ : state) {
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&] {
        std::binary_semaphore answered(0);
        for (int i = 0; i < kCallsPerThread; ++i) {
          producer->Produce(MakeBatch(1),
                            [&](Status s) {
                              if (!s) failed = true;
                              answered.release();
                            });
          answered.acquire();
        }
      });
    }
    for (auto& w : workers) w.join();
  }
  if (failed) state.SkipWithError("a produce call failed");
  state.SetItemsProcessed(state.iterations() * kCallsPerThread * threads);
  ReportGroups(state, scratch.bus());
}

void BM_Consume(benchmark::State& state) {
  constexpr std::size_t kMessages = 1'000'000;
  ScratchBus scratch(Sync::kOff);
  {
    auto producer = scratch.bus().NewProducer();
    for (std::size_t i = 0; i < kMessages / 1000; ++i) {
      producer->Produce(BuildBatch(1000, i), [](Status) {});
    }
    if (!producer->Flush(std::chrono::minutes(5))) state.SkipWithError("prefill failed");
  }
  for (auto _ : state) {
    auto consumer = scratch.bus().NewConsumer("");
    std::size_t read = 0;
    while (read < kMessages) {
      auto records = consumer->Poll(1000, std::chrono::milliseconds(0));
      if (!records || records->empty()) {
        state.SkipWithError("poll failed");
        break;
      }
      read += records->size();
      benchmark::DoNotOptimize(records->back().payload.data());
    }
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(kMessages));
}

BENCHMARK(BM_ProduceBatches)
    ->Args({1, 1000})
    ->Args({2, 1000})
    ->Args({4, 1000})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond)
    ->Repetitions(5)
    ->ReportAggregatesOnly(true);
BENCHMARK(BM_ProduceBatches_kNormal)
    ->Args({2, 1000})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond)
    ->Repetitions(5)
    ->ReportAggregatesOnly(true);
BENCHMARK(BM_ProduceSingles)
    ->Arg(1)
    ->Arg(64)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond)
    ->Repetitions(5)
    ->ReportAggregatesOnly(true);
BENCHMARK(BM_Consume)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond)
    ->Repetitions(5)
    ->ReportAggregatesOnly(true);

}  // namespace
}  // namespace iot::bus

BENCHMARK_MAIN();
