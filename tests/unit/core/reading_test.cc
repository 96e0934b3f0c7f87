// Tests for core/reading.h: device ids, sensor names and ValidateReading.
#include "core/reading.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>

namespace iot::core {
namespace {

const Timestamp kNow = FromUnixMicros(1'714'564'800'000'000);  // 2024-05-01T12:00:00Z

Reading Valid() {
  Reading r;
  r.device_id = "dev-1";
  r.ts = kNow - std::chrono::seconds(1);
  r.sensors = {{"temperature_c", 21.5}, {"humidity", 40}};
  return r;
}

TEST(DeviceIdTest, AcceptsTheDocumentedCharacterSet) {
  EXPECT_TRUE(IsValidDeviceId("dev-1", 128));
  EXPECT_TRUE(IsValidDeviceId("A.b_c:d@e~f-9", 128));
  EXPECT_TRUE(IsValidDeviceId(std::string(128, 'x'), 128));
}

TEST(DeviceIdTest, RejectsEmptyTooLongAndUnsafeCharacters) {
  EXPECT_FALSE(IsValidDeviceId("", 128));
  EXPECT_FALSE(IsValidDeviceId(std::string(129, 'x'), 128));
  for (std::string bad : std::initializer_list<std::string>{"$ne", "a/b", "a b", "a\nb", "a\"b", "a\\b", "a?b", "a#b", "a%20",
                          "caf\xc3\xa9", std::string("a\0b", 3)}) {
    EXPECT_FALSE(IsValidDeviceId(bad, 128)) << bad;
  }
}

TEST(SensorNameTest, AcceptsIdentifiers) {
  EXPECT_TRUE(IsValidSensorName("temperature_c", 64));
  EXPECT_TRUE(IsValidSensorName("_x", 64));
  EXPECT_TRUE(IsValidSensorName("co2", 64));
  EXPECT_TRUE(IsValidSensorName(std::string(64, 'a'), 64));
}

TEST(SensorNameTest, RejectsNonIdentifiers) {
  for (std::string bad : std::initializer_list<std::string>{"", "2x", "temp-c", "temp.c", "a b", "$where", std::string(65, 'a')}) {
    EXPECT_FALSE(IsValidSensorName(bad, 64)) << bad;
  }
}

TEST(ValidateReadingTest, AcceptsAValidReading) {
  EXPECT_EQ(ValidateReading(Valid(), ReadingLimits{}, kNow), std::nullopt);
  Reading r = Valid();
  r.lat = -90;
  r.lon = 180;
  r.sensors.push_back({"co2", 400});
  EXPECT_EQ(ValidateReading(r, ReadingLimits{}, kNow), std::nullopt);
}

TEST(ValidateReadingTest, AcceptsTsUpToMaxFutureAhead) {
  Reading r = Valid();
  r.ts = kNow + std::chrono::minutes(5);
  EXPECT_EQ(ValidateReading(r, ReadingLimits{}, kNow), std::nullopt);
}

struct BadCase {
  const char* name;
  void (*mutate)(Reading&);
  std::string field;
  std::string code;
};

const BadCase kBadCases[] = {
    {"EmptyDeviceId", [](Reading& r) { r.device_id.clear(); }, "device_id", "invalid_format"},
    {"LongDeviceId", [](Reading& r) { r.device_id = std::string(129, 'd'); }, "device_id",
     "too_long"},
    {"DollarDeviceId", [](Reading& r) { r.device_id = "$ne"; }, "device_id", "invalid_format"},
    {"SlashDeviceId", [](Reading& r) { r.device_id = "a/b"; }, "device_id", "invalid_format"},
    {"TsTooFarAhead", [](Reading& r) { r.ts = kNow + std::chrono::minutes(5) + Micros(1); }, "ts",
     "out_of_range"},
    {"TsBefore1970", [](Reading& r) { r.ts = FromUnixMicros(-1); }, "ts", "out_of_range"},
    {"LatTooLarge", [](Reading& r) { r.lat = 90.000001; }, "lat", "out_of_range"},
    {"LatTooSmall", [](Reading& r) { r.lat = -91; }, "lat", "out_of_range"},
    {"LatNan", [](Reading& r) { r.lat = std::nan(""); }, "lat", "not_finite"},
    {"LonTooLarge", [](Reading& r) { r.lon = 180.5; }, "lon", "out_of_range"},
    {"LonInfinite", [](Reading& r) { r.lon = -std::numeric_limits<double>::infinity(); }, "lon",
     "not_finite"},
    {"SensorNan", [](Reading& r) { r.sensors[0].value = std::nan(""); }, "temperature_c",
     "not_finite"},
    {"SensorInfinite",
     [](Reading& r) { r.sensors[1].value = std::numeric_limits<double>::infinity(); }, "humidity",
     "not_finite"},
    {"SensorBadName", [](Reading& r) { r.sensors.push_back({"co-2", 1}); }, "co-2",
     "invalid_format"},
    {"SensorReservedName", [](Reading& r) { r.sensors.push_back({"lat", 1}); }, "lat",
     "invalid_format"},
    {"SensorLongName", [](Reading& r) { r.sensors.push_back({std::string(65, 's'), 1}); },
     std::string(65, 's'), "too_long"},
    {"SensorDuplicate", [](Reading& r) { r.sensors.push_back({"humidity", 1}); }, "humidity",
     "duplicate_field"},
    {"MissingRequired", [](Reading& r) { r.sensors.erase(r.sensors.begin()); }, "temperature_c",
     "missing"},
    {"TooManySensors",
     [](Reading& r) {
       for (int i = 0; i < 31; ++i) r.sensors.push_back({"s" + std::to_string(i), 1});
     },
     "sensors", "too_many_fields"},
};

class ValidateReadingBadTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(ValidateReadingBadTest, NamesTheFieldAndTheReason) {
  const BadCase& c = GetParam();
  Reading r = Valid();
  c.mutate(r);
  auto err = ValidateReading(r, ReadingLimits{}, kNow);
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(err->field, c.field);
  EXPECT_EQ(err->code, c.code);
  EXPECT_FALSE(err->message.empty());
}

INSTANTIATE_TEST_SUITE_P(Cases, ValidateReadingBadTest, ::testing::ValuesIn(kBadCases),
                         [](const auto& param_info) { return std::string(param_info.param.name); });

TEST(ValidateReadingTest, ThirtyTwoSensorsAreAllowedByDefault) {
  Reading r = Valid();
  for (int i = 0; i < 30; ++i) r.sensors.push_back({"s" + std::to_string(i), 1});
  EXPECT_EQ(r.sensors.size(), 32u);
  EXPECT_EQ(ValidateReading(r, ReadingLimits{}, kNow), std::nullopt);
}

TEST(ValidateReadingTest, NoRequiredSensorsStillNeedsOneSensor) {
  ReadingLimits limits;
  limits.required_sensors.clear();
  Reading r = Valid();
  r.sensors = {{"co2", 1}};
  EXPECT_EQ(ValidateReading(r, limits, kNow), std::nullopt);
  r.sensors.clear();
  auto err = ValidateReading(r, limits, kNow);
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(err->field, "sensors");
  EXPECT_EQ(err->code, "missing");
}

TEST(ValidateReadingTest, FarFutureNowDisablesTheFutureBound) {
  Reading r = Valid();
  r.ts = FromUnixMicros(253'402'300'799'999'999);  // 9999-12-31T23:59:59.999999Z
  EXPECT_EQ(ValidateReading(r, ReadingLimits{}, Timestamp::max()), std::nullopt);
  r.ts += Micros(1);
  ASSERT_TRUE(ValidateReading(r, ReadingLimits{}, Timestamp::max()).has_value());
}

TEST(ValidateReadingTest, FindReturnsTheNamedSensor) {
  Reading r = Valid();
  ASSERT_NE(r.Find("humidity"), nullptr);
  EXPECT_EQ(r.Find("humidity")->value, 40);
  EXPECT_EQ(r.Find("pressure"), nullptr);
}

}  // namespace
}  // namespace iot::core
