#include "services/aggregator.h"

#include <unordered_map>

#include "codec/wire.h"
#include "core/window.h"

namespace iot::services {

Aggregator::Aggregator(std::vector<core::Micros> windows, bus::Consumer& consumer,
                       store::Store& store, metrics::Registry& registry, const core::Clock& clock,
                       std::size_t max_batch)
    : Worker(WorkerOptions{.name = "aggregator", .max_batch = max_batch}, consumer, store,
             registry),
      windows_(std::move(windows)),
      clock_(clock) {}

void Aggregator::Build(const std::vector<bus::Record>& records, store::WriteBatch& batch) {
  std::unordered_map<core::AggregateKey, core::Accumulator, core::AggregateKeyHash> deltas;
  std::unordered_map<std::string, std::size_t> device_index;  // device id -> batch.devices index
  batch.readings.reserve(records.size());
  for (const auto& record : records) {
    auto decoded = codec::DecodePayload(record.payload);
    if (!decoded) {
      CountDecodeError(record, decoded.error());
      continue;
    }
    core::Reading& reading = *decoded;
    for (const auto& sensor : reading.sensors) {
      for (auto window : windows_) {
        core::AggregateKey key{reading.device_id, sensor.name, window,
                               core::WindowStart(reading.ts, window)};
        deltas[std::move(key)].Add(sensor.value);
      }
    }
    auto [it, inserted] = device_index.try_emplace(reading.device_id, batch.devices.size());
    if (inserted) {
      store::DeviceUpdate u;
      u.device_id = reading.device_id;
      u.first_seen = reading.ts;
      u.last_seen = reading.ts;
      u.readings = 1;
      u.latest = reading;
      batch.devices.push_back(std::move(u));
    } else {
      auto& u = batch.devices[it->second];
      ++u.readings;
      if (reading.ts < u.first_seen) u.first_seen = reading.ts;
      // Ties go to the later offset: the newest message wins.
      if (reading.ts >= u.last_seen) {
        u.last_seen = reading.ts;
        u.latest = reading;
      }
    }
    batch.readings.push_back(
        store::StoredReading{core::MessageId::Of(record.partition, record.offset),
                             std::move(reading)});
  }
  batch.aggregates.reserve(deltas.size());
  for (auto& [key, acc] : deltas) batch.aggregates.push_back(store::AggregateDelta{key, acc});
  batch.ingested = static_cast<std::int64_t>(batch.readings.size());
  batch.processed_at = clock_.Now();
}

}  // namespace iot::services
