// reading.cc: validity rules of a Reading (see reading.h).
#include "core/reading.h"

#include <array>
#include <cmath>
#include <cstdint>
#include <string>

namespace iot::core {
namespace {

// Character classes, as one table lookup per byte (validation runs for every reading).
enum CharClass : std::uint8_t {
  kDeviceIdChar = 1,     // [A-Za-z0-9._:@~-]
  kSensorNameStart = 2,  // [A-Za-z_]
  kSensorNameChar = 4,   // [A-Za-z0-9_]
};

constexpr std::array<std::uint8_t, 256> MakeCharClasses() {
  std::array<std::uint8_t, 256> t{};
  for (int c = 0; c < 256; ++c) {
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    const bool digit = c >= '0' && c <= '9';
    std::uint8_t v = 0;
    if (alpha || digit || c == '.' || c == '_' || c == ':' || c == '@' || c == '~' || c == '-') {
      v |= kDeviceIdChar;
    }
    if (alpha || c == '_') v |= kSensorNameStart;
    if (alpha || digit || c == '_') v |= kSensorNameChar;
    t[static_cast<std::size_t>(c)] = v;
  }
  return t;
}

constexpr std::array<std::uint8_t, 256> kCharClasses = MakeCharClasses();

bool Is(char c, CharClass cls) { return (kCharClasses[static_cast<unsigned char>(c)] & cls) != 0; }

bool IsDeviceIdChar(char c) { return Is(c, kDeviceIdChar); }
bool IsSensorNameStart(char c) { return Is(c, kSensorNameStart); }
bool IsSensorNameChar(char c) { return Is(c, kSensorNameChar); }

// The names that the JSON form of a reading uses for its own fields; a sensor can never carry
// one of them, or its JSON document would be ambiguous.
bool IsReservedName(std::string_view name) {
  return name == "device_id" || name == "ts" || name == "lat" || name == "lon" || name == "id" ||
         name == "_id";
}

// The range of timestamps that ParseIso8601 accepts: 1970-01-01T00:00:00Z to the end of 9999.
constexpr Timestamp kEarliestTs{};
constexpr Timestamp kLatestTs{Micros{253402300799999999}};

FieldError Err(std::string_view field, const char* code, std::string message) {
  return FieldError{std::string(field), code, std::move(message)};
}

// LaterThan reports whether `ts` lies more than `allowed` after `now`, without overflowing for
// timestamps near the ends of the representable range.
bool LaterThan(Timestamp ts, Timestamp now, Micros allowed) {
  if (ts <= now) return false;
  const std::int64_t t = ToUnixMicros(ts);
  const std::int64_t n = ToUnixMicros(now);
  // t > n, so t - n is positive; compute it in unsigned arithmetic to stay defined.
  const auto diff = static_cast<std::uint64_t>(t) - static_cast<std::uint64_t>(n);
  return allowed.count() < 0 || diff > static_cast<std::uint64_t>(allowed.count());
}

}  // namespace

const SensorValue* Reading::Find(std::string_view name) const {
  for (const auto& s : sensors) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

bool IsValidDeviceId(std::string_view id, std::size_t max_length) {
  if (id.empty() || id.size() > max_length) return false;
  for (char c : id) {
    if (!IsDeviceIdChar(c)) return false;
  }
  return true;
}

bool IsValidSensorName(std::string_view name, std::size_t max_length) {
  if (name.empty() || name.size() > max_length || !IsSensorNameStart(name[0])) return false;
  for (char c : name) {
    if (!IsSensorNameChar(c)) return false;
  }
  return true;
}

std::optional<FieldError> ValidateReading(const Reading& reading, const ReadingLimits& limits,
                                          Timestamp now) {
  const std::string& id = reading.device_id;
  if (id.empty()) return Err("device_id", "invalid_format", "device_id must not be empty");
  if (id.size() > limits.max_device_id_length) {
    return Err("device_id", "too_long",
               "device_id is longer than " + std::to_string(limits.max_device_id_length) +
                   " characters");
  }
  if (!IsValidDeviceId(id, limits.max_device_id_length)) {
    return Err("device_id", "invalid_format",
               "device_id may only contain letters, digits and . _ : @ ~ -");
  }

  if (reading.ts < kEarliestTs || reading.ts > kLatestTs) {
    return Err("ts", "out_of_range", "ts must be within the years 1970 to 9999");
  }
  if (LaterThan(reading.ts, now, limits.max_future)) {
    return Err("ts", "out_of_range", "ts is too far in the future");
  }

  if (reading.lat) {
    if (!std::isfinite(*reading.lat)) return Err("lat", "not_finite", "lat must be finite");
    if (*reading.lat < -90 || *reading.lat > 90) {
      return Err("lat", "out_of_range", "lat must be within [-90, 90]");
    }
  }
  if (reading.lon) {
    if (!std::isfinite(*reading.lon)) return Err("lon", "not_finite", "lon must be finite");
    if (*reading.lon < -180 || *reading.lon > 180) {
      return Err("lon", "out_of_range", "lon must be within [-180, 180]");
    }
  }

  const auto& sensors = reading.sensors;
  // The count is checked first so that the duplicate check below stays bounded.
  if (sensors.size() > limits.max_sensors) {
    return Err("sensors", "too_many_fields",
               "a reading may carry at most " + std::to_string(limits.max_sensors) + " sensors");
  }
  for (std::size_t i = 0; i < sensors.size(); ++i) {
    const SensorValue& s = sensors[i];
    if (s.name.size() > limits.max_sensor_name_length) {
      return Err(s.name, "too_long",
                 "sensor name is longer than " + std::to_string(limits.max_sensor_name_length) +
                     " characters");
    }
    if (!IsValidSensorName(s.name, limits.max_sensor_name_length) || IsReservedName(s.name)) {
      return Err(s.name, "invalid_format",
                 "sensor names must match [A-Za-z_][A-Za-z0-9_]* and not be a reserved field");
    }
    for (std::size_t j = 0; j < i; ++j) {
      if (sensors[j].name == s.name) {
        return Err(s.name, "duplicate_field", "sensor appears more than once");
      }
    }
    if (!std::isfinite(s.value)) return Err(s.name, "not_finite", "sensor value must be finite");
  }
  for (const auto& required : limits.required_sensors) {
    if (reading.Find(required) == nullptr) {
      return Err(required, "missing", required + " is required");
    }
  }
  if (sensors.empty()) return Err("sensors", "missing", "a reading needs at least one sensor value");
  return std::nullopt;
}

}  // namespace iot::core
