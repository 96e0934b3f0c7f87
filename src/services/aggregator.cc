#include "services/aggregator.h"

#include <unordered_map>

#include "codec/wire.h"
#include "core/window.h"

namespace iot::services {

Aggregator::Aggregator(std::vector<core::Micros> windows, bus::Consumer& consumer,
                       store::Store& store, metrics::Registry& registry, const core::Clock& clock,
                       WorkerTuning tuning)
    : Worker(OptionsFor("aggregator", tuning), consumer, store, registry, tuning.dead_letters),
      windows_(std::move(windows)),
      clock_(clock) {}

namespace {

// Cell accumulates one (sensor, window, window start) of one device within a batch.
struct Cell {
  std::string sensor;
  core::Micros window;
  core::Timestamp start;
  core::Accumulator acc;
};

// DeviceCells is everything one batch does to one device. A device has few live cells (sensors
// x windows, a few more with late data), so a linear scan beats hashing the whole key per value:
// one hash per reading instead of one per (sensor, window).
struct DeviceCells {
  std::size_t update;  // index in WriteBatch::devices
  std::size_t latest;  // index in WriteBatch::readings of the device's newest reading
  std::vector<Cell> cells;

  core::Accumulator& Find(const std::string& sensor, core::Micros window, core::Timestamp start) {
    for (auto& c : cells) {
      if (c.window == window && c.start == start && c.sensor == sensor) return c.acc;
    }
    return cells.emplace_back(Cell{sensor, window, start, {}}).acc;
  }
};

}  // namespace

void Aggregator::Build(const std::vector<bus::Record>& records, store::WriteBatch& batch) {
  std::unordered_map<std::string, DeviceCells> devices;
  batch.readings.reserve(records.size());
  for (const auto& record : records) {
    if (codec::IsRejected(record.payload)) {  // MQTT input ingest could not accept
      RejectedInput(record, batch);
      continue;
    }
    auto decoded = codec::DecodePayload(record.payload);
    if (!decoded) {
      DeadLetter(record, "undecodable: " + decoded.error().message, batch);
      continue;
    }
    core::Reading& reading = *decoded;
    auto [it, inserted] = devices.try_emplace(reading.device_id);
    DeviceCells& cells = it->second;
    if (inserted) {
      cells.update = batch.devices.size();
      store::DeviceUpdate u;
      u.device_id = reading.device_id;
      u.first_seen = reading.ts;
      u.last_seen = reading.ts;
      u.readings = 1;
      cells.latest = batch.readings.size();
      batch.devices.push_back(std::move(u));
    } else {
      auto& u = batch.devices[cells.update];
      ++u.readings;
      if (reading.ts < u.first_seen) u.first_seen = reading.ts;
      // Ties go to the later offset: the newest message wins.
      if (reading.ts >= u.last_seen) {
        u.last_seen = reading.ts;
        cells.latest = batch.readings.size();
      }
    }
    for (auto window : windows_) {
      const core::Timestamp start = core::WindowStart(reading.ts, window);
      for (const auto& sensor : reading.sensors) {
        cells.Find(sensor.name, window, start).Add(sensor.value);
      }
    }
    batch.readings.push_back(
        store::StoredReading{IdOf(record), std::move(reading)});
  }
  for (auto& [device_id, cells] : devices) {
    batch.devices[cells.update].latest = batch.readings[cells.latest].reading;
    for (auto& c : cells.cells) {
      batch.aggregates.push_back(store::AggregateDelta{
          core::AggregateKey{device_id, std::move(c.sensor), c.window, c.start}, c.acc});
    }
  }
  batch.ingested = static_cast<std::int64_t>(batch.readings.size());
  batch.processed_at = clock_.Now();
}

}  // namespace iot::services
