#include "loadgen/device_fleet.h"

#include <algorithm>
#include <iterator>

#include <fmt/format.h>

namespace iot::loadgen {
namespace {

// The fleet sits around Berlin; each device is placed within ±0.25° of the centre.
constexpr double kCentreLat = 52.52;
constexpr double kCentreLon = 13.405;
constexpr double kSpreadDegrees = 0.25;
constexpr double kTemperatureMean = 22.0;
constexpr double kHumidityMean = 55.0;
// Mean reversion per step and step noise keep the walks near their baselines.
constexpr double kReversion = 0.1;
constexpr double kTemperatureNoise = 0.3;
constexpr double kHumidityNoise = 1.0;

std::string JsonString(std::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += fmt::format("\\u{:04x}", static_cast<unsigned>(static_cast<unsigned char>(c)));
        } else {
          out += c;
        }
    }
  }
  out += '"';
  return out;
}

std::uint64_t SeedOrRandom(std::uint64_t seed) {
  if (seed != 0) return seed;
  std::random_device device;
  return (std::uint64_t{device()} << 32) ^ device();
}

}  // namespace

std::string FormatTimestampMillis(core::Timestamp t) {
  using namespace std::chrono;
  const auto ms = floor<milliseconds>(t);
  const auto day = floor<days>(ms);
  const year_month_day ymd{day};
  const hh_mm_ss hms{ms - day};
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", static_cast<int>(ymd.year()),
                     static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                     hms.hours().count(), hms.minutes().count(), hms.seconds().count(),
                     hms.subseconds().count());
}

DeviceFleet::DeviceFleet(FleetOptions options)
    : rng_(SeedOrRandom(options.seed)),
      hot_fraction_(std::clamp(options.hot_fraction, 0.0, 1.0)),
      prefix_(std::move(options.device_prefix)) {
  const int n = std::max(1, options.devices);
  std::uniform_real_distribution<double> spread(-kSpreadDegrees, kSpreadDegrees);
  std::uniform_real_distribution<double> temperature_offset(-3.0, 3.0);
  std::uniform_real_distribution<double> humidity_offset(-10.0, 10.0);
  devices_.resize(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    Device& d = devices_[static_cast<std::size_t>(i)];
    d.id_json = JsonString(DeviceId(i));
    d.lat = kCentreLat + spread(rng_);
    d.lon = kCentreLon + spread(rng_);
    d.temperature_base = kTemperatureMean + temperature_offset(rng_);
    d.humidity_base = kHumidityMean + humidity_offset(rng_);
    d.temperature = d.temperature_base;
    d.humidity = d.humidity_base;
  }
}

std::string DeviceFleet::DeviceId(int index) const {
  return prefix_ + std::to_string(index + 1);
}

void DeviceFleet::AppendReading(int index, core::Timestamp now, std::string& out) {
  double temperature = 0;
  double humidity = 0;
  double lat = 0;
  double lon = 0;
  const std::string* id_json = nullptr;
  {
    std::lock_guard lock(mu_);
    Device& d = devices_.at(static_cast<std::size_t>(index));
    std::normal_distribution<double> t_noise(0.0, kTemperatureNoise);
    std::normal_distribution<double> h_noise(0.0, kHumidityNoise);
    d.temperature += kReversion * (d.temperature_base - d.temperature) + t_noise(rng_);
    d.temperature = std::clamp(d.temperature, 5.0, 40.0);
    d.humidity += kReversion * (d.humidity_base - d.humidity) + h_noise(rng_);
    d.humidity = std::clamp(d.humidity, 5.0, 95.0);
    temperature = d.temperature;
    humidity = d.humidity;
    if (hot_fraction_ > 0 && std::uniform_real_distribution<double>(0.0, 1.0)(rng_) < hot_fraction_) {
      // Strictly above the default TEMP_MAX_THRESHOLD of 50 even after rounding to 2 decimals.
      temperature = std::uniform_real_distribution<double>(50.5, 60.0)(rng_);
    }
    lat = d.lat;
    lon = d.lon;
    id_json = &d.id_json;  // immutable after construction
  }
  fmt::format_to(std::back_inserter(out),
                 R"({{"device_id":{},"ts":"{}","temperature_c":{:.2f},"humidity":{:.2f},)"
                 R"("lat":{:.5f},"lon":{:.5f}}})",
                 *id_json, FormatTimestampMillis(now), temperature, humidity, lat, lon);
}

std::string DeviceFleet::RequestBody(std::uint64_t request_index, int batch, core::Timestamp now) {
  const auto n = static_cast<std::uint64_t>(devices_.size());
  std::string out;
  if (batch <= 0) {
    out.reserve(160);
    AppendReading(static_cast<int>(request_index % n), now, out);
    return out;
  }
  const auto b = static_cast<std::uint64_t>(batch);
  out.reserve(160 * b + 2);
  out += '[';
  for (std::uint64_t j = 0; j < b; ++j) {
    if (j != 0) out += ',';
    AppendReading(static_cast<int>((request_index * b + j) % n), now, out);
  }
  out += ']';
  return out;
}

}  // namespace iot::loadgen
