// device_fleet.h: the simulated devices whose readings the load generator sends.
//
//   DeviceFleet fleet({.devices = 10, .device_prefix = "dev-", .seed = 42});
//   std::string body = fleet.RequestBody(/*request_index=*/7, /*batch=*/0, now);
//   // {"device_id":"dev-8","ts":"2024-05-01T12:00:00.123Z","temperature_c":22.41,
//   //  "humidity":55.02,"lat":52.5213,"lon":13.4101}
//
// Each device has a fixed position (lat/lon near a common centre) and two values that move as a
// mean-reverting random walk: temperature around 22 °C (each device has its own baseline within
// ±3 °C) and humidity around 55 % (baseline within ±10 %). They stay well inside the seed's
// default alert thresholds (-10..50 °C, 0..100 %) unless `hot_fraction` asks for out-of-range
// readings: such a reading reports a temperature in [50.5, 60) without disturbing the walk.
// Requests take readings from the devices round-robin, so every device reports equally often.
//
// Threading: all members are thread-safe (one internal lock around the random state).
#pragma once

#include <cstdint>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "core/time.h"

namespace iot::loadgen {

struct FleetOptions {
  int devices = 10;                     // >= 1
  std::string device_prefix = "dev-";  // device i (0-based) is named prefix + (i + 1)
  std::uint64_t seed = 0;               // 0 = seeded from std::random_device
  double hot_fraction = 0.0;            // in [0, 1]
};

class DeviceFleet {
 public:
  explicit DeviceFleet(FleetOptions options);

  // size returns the number of devices.
  int size() const { return static_cast<int>(devices_.size()); }

  // DeviceId returns the id of device `index` (0-based): prefix + (index + 1).
  std::string DeviceId(int index) const;

  // RequestBody returns the JSON body of request number `request_index`: with batch == 0 one
  // reading object of device (request_index mod size), otherwise an array of `batch` readings
  // of the devices (request_index * batch + j) mod size, j = 0..batch-1. Every reading carries
  // `now` as its ts, formatted by FormatTimestampMillis.
  std::string RequestBody(std::uint64_t request_index, int batch, core::Timestamp now);

  // AppendReading appends the JSON object of the next reading of device `index` to `out`.
  void AppendReading(int index, core::Timestamp now, std::string& out);

 private:
  struct Device {
    std::string id_json;  // the id as a JSON string literal, quotes included
    double lat = 0, lon = 0;
    double temperature_base = 0, humidity_base = 0;
    double temperature = 0, humidity = 0;
  };

  std::mutex mu_;
  std::mt19937_64 rng_;  // guarded by mu_
  double hot_fraction_;
  std::string prefix_;
  std::vector<Device> devices_;  // values guarded by mu_
};

// FormatTimestampMillis renders `t` as ISO 8601 UTC with milliseconds:
// "YYYY-MM-DDTHH:MM:SS.mmmZ" (truncated, not rounded).
std::string FormatTimestampMillis(core::Timestamp t);

}  // namespace iot::loadgen
