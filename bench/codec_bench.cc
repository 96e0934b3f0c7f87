// codec_bench.cc: throughput of the reading codec on the ingest and worker hot paths.
//
// Reports ns per reading (items_per_second is readings/s) for DecodeReading of one ~90-byte
// object, DecodeBatch of 1000 such objects (JSON array and NDJSON), EncodeWire, DecodePayload and
// EncodeReadingJson. Run: build/.../bench/codec_bench
#include <benchmark/benchmark.h>

#include <string>
#include <variant>
#include <vector>

#include "codec/reading_json.h"
#include "codec/wire.h"
#include "core/reading.h"
#include "core/time.h"

namespace iot::codec {
namespace {

const core::Timestamp kNow = core::ParseIso8601("2024-05-01T12:00:00Z").value();

// Reading i of a typical device fleet, in the JSON form a device sends (~90 bytes).
std::string DeviceJson(int i) {
  return "{\"device_id\":\"device-" + std::to_string(10000 + i % 1000) +
         "\",\"ts\":\"2024-05-01T11:59:58.123Z\",\"temperature_c\":" +
         std::to_string(20 + i % 15) + ".25,\"humidity\":" + std::to_string(40 + i % 30) + ".5}";
}

std::string ArrayBody(int n) {
  std::string body = "[";
  for (int i = 0; i < n; ++i) {
    if (i > 0) body += ',';
    body += DeviceJson(i);
  }
  body += ']';
  return body;
}

std::string NdjsonBody(int n) {
  std::string body;
  for (int i = 0; i < n; ++i) {
    body += DeviceJson(i);
    body += '\n';
  }
  return body;
}

void BM_DecodeReading(benchmark::State& state) {
  const std::string json = DeviceJson(7);
  const core::ReadingLimits limits;
  for (auto _ : state) {
    auto r = DecodeReading(json, limits, kNow);
    if (r.index() != 0) state.SkipWithError("decode failed");
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(json.size()));
}
BENCHMARK(BM_DecodeReading);

void BM_DecodeBatch(benchmark::State& state) {
  const auto format = state.range(0) == 0 ? BatchFormat::kJsonArray : BatchFormat::kNdjson;
  const std::string body = format == BatchFormat::kJsonArray ? ArrayBody(1000) : NdjsonBody(1000);
  const core::ReadingLimits limits;
  for (auto _ : state) {
    auto r = DecodeBatch(body, format, limits, kNow, 1000);
    if (r.index() != 0 || std::get<0>(r).size() != 1000) state.SkipWithError("decode failed");
    benchmark::DoNotOptimize(r);
  }
  state.SetLabel(format == BatchFormat::kJsonArray ? "json array" : "ndjson");
  state.SetItemsProcessed(state.iterations() * 1000);
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(body.size()));
}
BENCHMARK(BM_DecodeBatch)->Arg(0)->Arg(1);

core::Reading SampleReading() {
  auto r = DecodeReading(DeviceJson(7), core::ReadingLimits{}, kNow);
  auto reading = std::get<core::Reading>(std::move(r));
  reading.lat = 52.37;
  reading.lon = 4.89;
  return reading;
}

void BM_EncodeWire(benchmark::State& state) {
  const core::Reading reading = SampleReading();
  for (auto _ : state) {
    std::string payload = EncodeWire(reading);
    benchmark::DoNotOptimize(payload);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_EncodeWire);

void BM_DecodePayloadBinary(benchmark::State& state) {
  const std::string payload = EncodeWire(SampleReading());
  for (auto _ : state) {
    auto r = DecodePayload(payload);
    if (!r) state.SkipWithError("decode failed");
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_DecodePayloadBinary);

void BM_DecodePayloadJson(benchmark::State& state) {
  const std::string payload = EncodeReadingJson(SampleReading());
  for (auto _ : state) {
    auto r = DecodePayload(payload);
    if (!r) state.SkipWithError("decode failed");
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_DecodePayloadJson);

void BM_EncodeReadingJson(benchmark::State& state) {
  const core::Reading reading = SampleReading();
  for (auto _ : state) {
    std::string json = EncodeReadingJson(reading);
    benchmark::DoNotOptimize(json);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_EncodeReadingJson);

}  // namespace
}  // namespace iot::codec

BENCHMARK_MAIN();
