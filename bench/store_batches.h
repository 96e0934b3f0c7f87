// store_batches.h: the write batches the store benchmarks apply (store_bench, mongo_store_bench).
//
//   iot::bench::Generator gen;
//   store->Apply(gen.Next(10'000));       // the aggregator's next batch of 10,000 readings
//   store->Apply(gen.AlertsFor(batch, 1000));  // the alerts worker's batch for those readings
//
// Data shape: kDevices devices sending one reading per second each (temperature_c, humidity),
// aggregated into 1m and 1h windows, written the way the aggregator writes: one Apply per batch
// with the raw readings, one DeviceUpdate per device, the merged aggregate deltas, the ingest
// count and a checkpoint that advances with every batch. Deterministic: two generators produce
// the same batches, so two stores can be filled with the same data.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/alert.h"
#include "store/store.h"

namespace iot::bench {

inline constexpr int kDevices = 1000;
inline constexpr std::int64_t kStartUs = 1'700'000'000'000'000;  // minute-aligned
inline constexpr std::int64_t kIntervalUs = 1'000'000;  // one reading per second per device

inline std::string DeviceName(int d) { return "device-" + std::to_string(d); }

// Generator produces the aggregator's batches for the fleet, in time order.
class Generator {
 public:
  Generator() {
    for (int d = 0; d < kDevices; ++d) names_.push_back(DeviceName(d));
  }

  // Next returns a batch of `n` readings (n / kDevices per device, at least one each).
  store::WriteBatch Next(std::size_t n) {
    store::WriteBatch b;
    const std::int64_t first_offset = offset_;
    const std::size_t per_device = std::max<std::size_t>(1, n / kDevices);
    b.readings.reserve(per_device * kDevices);
    std::unordered_map<core::AggregateKey, core::Accumulator, core::AggregateKeyHash> deltas;
    for (std::size_t k = 0; k < per_device; ++k) {
      const std::int64_t ts_us = kStartUs + (tick_ + static_cast<std::int64_t>(k)) * kIntervalUs;
      for (int d = 0; d < kDevices; ++d) {
        store::StoredReading r;
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
      store::DeviceUpdate u;
      u.device_id = names_[static_cast<std::size_t>(d)];
      u.first_seen = b.readings[static_cast<std::size_t>(d)].reading.ts;
      const auto& last = b.readings[(per_device - 1) * kDevices + static_cast<std::size_t>(d)];
      u.last_seen = last.reading.ts;
      u.readings = static_cast<std::int64_t>(per_device);
      u.latest = last.reading;
      b.devices.push_back(std::move(u));
    }
    for (auto& [key, acc] : deltas) b.aggregates.push_back(store::AggregateDelta{key, acc});
    b.ingested = static_cast<std::int64_t>(b.readings.size());
    b.processed_at = b.readings.back().reading.ts;
    b.checkpoint = store::Checkpoint{"aggregator", 0, offset_, first_offset};
    return b;
  }

  // AlertsFor returns the alerts worker's batch for the readings of `readings`: every `every`-th
  // reading opened a temperature alert, and every other one of those alerts is already resolved,
  // so that the alert listings have something to list.
  static store::WriteBatch AlertsFor(const store::WriteBatch& readings, std::size_t every) {
    store::WriteBatch b;
    for (std::size_t i = 0; i < readings.readings.size(); i += every) {
      const store::StoredReading& r = readings.readings[i];
      core::Alert a;
      a.id = core::AlertId(r.id, 0);
      a.device_id = r.reading.device_id;
      a.sensor_type = "temperature_c";
      a.value = r.reading.sensors[0].value;
      a.alert_type = "threshold_high";
      a.severity = "warning";
      a.message = "temperature_c above 25";
      a.timestamp = r.reading.ts;
      a.threshold = 25;
      a.created_at = r.reading.ts;
      a.updated_at = r.reading.ts;
      a.count = 1;
      if ((i / every) % 2 == 0) {
        a.status = core::AlertStatus::kActive;
      } else {
        a.status = core::AlertStatus::kResolved;
        a.resolved_at = r.reading.ts + std::chrono::seconds(1);
      }
      b.alert_upserts.push_back(std::move(a));
    }
    b.checkpoint = store::Checkpoint{"alerts", 0, readings.checkpoint->next_offset,
                                     readings.checkpoint->from_offset};
    return b;
  }

  std::int64_t end_us() const { return kStartUs + tick_ * kIntervalUs; }

 private:
  std::vector<std::string> names_;
  std::int64_t offset_ = 0;
  std::int64_t tick_ = 0;
};

}  // namespace iot::bench
