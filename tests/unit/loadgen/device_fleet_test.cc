#include "loadgen/device_fleet.h"

#include <map>
#include <set>
#include <string>

#include <gtest/gtest.h>
#include <simdjson.h>

namespace iot::loadgen {
namespace {

using namespace std::chrono_literals;

const core::Timestamp kNow = *core::ParseIso8601("2024-05-01T12:34:56.789123Z");

struct ParsedReading {
  std::string device_id;
  std::string ts;
  double temperature_c = 0, humidity = 0, lat = 0, lon = 0;
};

ParsedReading ToReading(simdjson::dom::element e) {
  ParsedReading r;
  EXPECT_TRUE(e.is_object());
  std::string_view text;
  EXPECT_EQ(e["device_id"].get(text), simdjson::SUCCESS);
  r.device_id = std::string(text);
  EXPECT_EQ(e["ts"].get(text), simdjson::SUCCESS);
  r.ts = std::string(text);
  EXPECT_EQ(e["temperature_c"].get(r.temperature_c), simdjson::SUCCESS);
  EXPECT_EQ(e["humidity"].get(r.humidity), simdjson::SUCCESS);
  EXPECT_EQ(e["lat"].get(r.lat), simdjson::SUCCESS);
  EXPECT_EQ(e["lon"].get(r.lon), simdjson::SUCCESS);
  EXPECT_EQ(e.get_object().size(), 6u) << "unexpected extra fields";
  return r;
}

ParsedReading ParseOne(const std::string& body) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  EXPECT_EQ(parser.parse(body).get(doc), simdjson::SUCCESS) << body;
  return ToReading(doc);
}

TEST(FormatTimestampMillis, RendersIso8601UtcWithMilliseconds) {
  EXPECT_EQ(FormatTimestampMillis(kNow), "2024-05-01T12:34:56.789Z");
  EXPECT_EQ(FormatTimestampMillis(*core::ParseIso8601("1999-12-31T23:59:59Z")),
            "1999-12-31T23:59:59.000Z");
}

TEST(DeviceFleet, NamesDevicesWithThePrefixFromOne) {
  DeviceFleet fleet({.devices = 3, .device_prefix = "dev-", .seed = 1});
  EXPECT_EQ(fleet.size(), 3);
  EXPECT_EQ(fleet.DeviceId(0), "dev-1");
  EXPECT_EQ(fleet.DeviceId(2), "dev-3");
}

TEST(DeviceFleet, SingleReadingHasTheSeedFieldsAndPlausibleValues) {
  DeviceFleet fleet({.devices = 3, .device_prefix = "dev-", .seed = 1});
  for (std::uint64_t i = 0; i < 300; ++i) {
    ParsedReading r = ParseOne(fleet.RequestBody(i, 0, kNow));
    EXPECT_EQ(r.device_id, "dev-" + std::to_string(i % 3 + 1));
    EXPECT_EQ(r.ts, "2024-05-01T12:34:56.789Z");
    ASSERT_TRUE(core::ParseIso8601(r.ts));
    EXPECT_GT(r.temperature_c, 5.0);
    EXPECT_LT(r.temperature_c, 40.0);
    EXPECT_GT(r.humidity, 5.0);
    EXPECT_LT(r.humidity, 95.0);
    EXPECT_GE(r.lat, -90.0);
    EXPECT_LE(r.lat, 90.0);
    EXPECT_GE(r.lon, -180.0);
    EXPECT_LE(r.lon, 180.0);
  }
}

TEST(DeviceFleet, KeepsEachDevicesPositionFixedWhileValuesMove) {
  DeviceFleet fleet({.devices = 2, .device_prefix = "dev-", .seed = 5});
  std::map<std::string, std::pair<double, double>> position;
  std::map<std::string, std::set<double>> temperatures;
  for (std::uint64_t i = 0; i < 100; ++i) {
    ParsedReading r = ParseOne(fleet.RequestBody(i, 0, kNow));
    auto [it, inserted] = position.try_emplace(r.device_id, r.lat, r.lon);
    if (!inserted) {
      EXPECT_EQ(it->second.first, r.lat);
      EXPECT_EQ(it->second.second, r.lon);
    }
    temperatures[r.device_id].insert(r.temperature_c);
  }
  ASSERT_EQ(position.size(), 2u);
  EXPECT_NE(position["dev-1"], position["dev-2"]);
  EXPECT_GT(temperatures["dev-1"].size(), 10u) << "the temperature should wander";
}

TEST(DeviceFleet, BatchIsAnArrayOfReadingsTakenRoundRobin) {
  DeviceFleet fleet({.devices = 4, .device_prefix = "sensor_", .seed = 9});
  const std::string body = fleet.RequestBody(/*request_index=*/1, /*batch=*/6, kNow);
  simdjson::dom::parser parser;
  simdjson::dom::array array;
  ASSERT_EQ(parser.parse(body).get(array), simdjson::SUCCESS) << body;
  ASSERT_EQ(array.size(), 6u);
  std::vector<std::string> ids;
  for (simdjson::dom::element e : array) ids.push_back(ToReading(e).device_id);
  // Request 1 of batch 6 holds readings 6..11, i.e. devices 6%4.. -> 3, 4, 1, 2, 3, 4.
  EXPECT_EQ(ids, (std::vector<std::string>{"sensor_3", "sensor_4", "sensor_1", "sensor_2",
                                           "sensor_3", "sensor_4"}));
}

TEST(DeviceFleet, SameSeedGivesSameReadings) {
  DeviceFleet a({.devices = 3, .device_prefix = "dev-", .seed = 42});
  DeviceFleet b({.devices = 3, .device_prefix = "dev-", .seed = 42});
  for (std::uint64_t i = 0; i < 20; ++i) {
    EXPECT_EQ(a.RequestBody(i, 2, kNow), b.RequestBody(i, 2, kNow));
  }
}

TEST(DeviceFleet, HotFractionOneMakesEveryTemperatureExceedTheAlertThreshold) {
  DeviceFleet fleet({.devices = 5, .device_prefix = "dev-", .seed = 3, .hot_fraction = 1.0});
  for (std::uint64_t i = 0; i < 100; ++i) {
    EXPECT_GT(ParseOne(fleet.RequestBody(i, 0, kNow)).temperature_c, 50.0);
  }
}

TEST(DeviceFleet, HotFractionSetsTheShareOfHotReadings) {
  DeviceFleet fleet({.devices = 5, .device_prefix = "dev-", .seed = 3, .hot_fraction = 0.25});
  int hot = 0;
  constexpr int kReadings = 4000;
  for (std::uint64_t i = 0; i < kReadings; ++i) {
    if (ParseOne(fleet.RequestBody(i, 0, kNow)).temperature_c > 50.0) ++hot;
  }
  // 1000 expected; the binomial standard deviation is ~27, so +-200 never fails by chance.
  EXPECT_GT(hot, 800);
  EXPECT_LT(hot, 1200);
}

TEST(DeviceFleet, EscapesAPrefixThatNeedsItInJson) {
  DeviceFleet fleet({.devices = 1, .device_prefix = "a\"b\\", .seed = 1});
  EXPECT_EQ(ParseOne(fleet.RequestBody(0, 0, kNow)).device_id, "a\"b\\1");
}

}  // namespace
}  // namespace iot::loadgen
