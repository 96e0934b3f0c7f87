// reading.h: a device's reading and the rules that make it valid.
//
// A Reading is what a device sends: a device id, a timestamp, an optional position and one or
// more sensor values (the seed's `temperature_c` and `humidity`, and any other numeric field).
// `ValidateReading` checks it against `ReadingLimits`; the JSON codec builds Readings and calls it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/time.h"

namespace iot::core {

// SensorValue is one measured quantity, named after the JSON field that carried it.
struct SensorValue {
  std::string name;
  double value = 0;
  friend bool operator==(const SensorValue&, const SensorValue&) = default;
};

// MessageId identifies a reading from the moment the bus accepted it: (partition << 40) | offset.
// It makes stored readings idempotent across replays.
struct MessageId {
  std::int64_t value = 0;
  static MessageId Of(std::int32_t partition, std::int64_t offset) {
    return MessageId{(static_cast<std::int64_t>(partition) << 40) | offset};
  }
  friend auto operator<=>(const MessageId&, const MessageId&) = default;
};

struct Reading {
  std::string device_id;
  Timestamp ts;
  std::optional<double> lat;
  std::optional<double> lon;
  // sensors holds the values in the order the device sent them; names are unique.
  std::vector<SensorValue> sensors;

  const SensorValue* Find(std::string_view name) const;
  friend bool operator==(const Reading&, const Reading&) = default;
};

// ReadingLimits bounds what a reading may contain. Defaults are documented in docs/api.md.
struct ReadingLimits {
  std::size_t max_device_id_length = 128;
  std::size_t max_sensor_name_length = 64;
  std::size_t max_sensors = 32;
  // required_sensors must be present in every reading (the seed requires both).
  std::vector<std::string> required_sensors = {"temperature_c", "humidity"};
  // max_future is how far past the time of receipt a reading's ts may be.
  Micros max_future = std::chrono::minutes(5);
  // default_device_id, when not empty, is the device_id of a reading that carries none (MQTT
  // ingestion: the device id taken from the topic); empty: device_id is required.
  std::string default_device_id;
};

// FieldError says which field of a reading is wrong and why. `code` is a stable identifier
// (e.g. "missing", "wrong_type", "not_finite", "out_of_range", "too_long", "invalid_format").
struct FieldError {
  std::string field;
  std::string code;
  std::string message;
};

// IsValidDeviceId: 1..max characters of [A-Za-z0-9._:@~-]. Anything else (including '$', '/',
// spaces and control characters) is rejected so that an id is always safe in a URL path and can
// never be mistaken for query syntax by any store.
bool IsValidDeviceId(std::string_view id, std::size_t max_length);

// IsValidSensorName: 1..max characters of [A-Za-z_][A-Za-z0-9_]*.
bool IsValidSensorName(std::string_view name, std::size_t max_length);

// ValidateReading checks the semantic rules: device id format, sensor names and count, required
// sensors, finite values, lat in [-90, 90], lon in [-180, 180], ts not later than now + max_future.
// Returns the first violation, or nullopt when the reading is valid. Codes:
//   device_id: "invalid_format" (empty or a character outside the set), "too_long";
//   ts: "out_of_range" (later than now + max_future, or outside the years 1970..9999 that
//     ParseIso8601 accepts);
//   lat / lon: "not_finite", "out_of_range";
//   a sensor (field = its name): "too_long", "invalid_format" (bad name, or one of the reserved
//     names device_id, ts, lat, lon, id, _id), "duplicate_field", "not_finite";
//   "sensors": "too_many_fields" (more than max_sensors), "missing" (no sensor at all);
//   a required sensor (field = its name): "missing".
std::optional<FieldError> ValidateReading(const Reading& reading, const ReadingLimits& limits,
                                          Timestamp now);

}  // namespace iot::core
