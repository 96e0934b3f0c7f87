// Tests for codec/wire.h: binary round trips, the JSON form, and garbage payloads.
#include "codec/wire.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "codec/reading_json.h"

namespace iot::codec {
namespace {

core::Reading Sample() {
  core::Reading r;
  r.device_id = "dev-1";
  r.ts = core::ParseIso8601("2024-05-01T12:00:00.123456Z").value();
  r.sensors = {{"temperature_c", 21.5}, {"humidity", 40}};
  r.lat = 52.37;
  r.lon = 4.89;
  return r;
}

TEST(WireTest, RoundTripsATypicalReading) {
  const core::Reading r = Sample();
  const std::string payload = EncodeWire(r);
  EXPECT_EQ(static_cast<std::uint8_t>(payload[0]), kWireVersion);
  EXPECT_NE(payload[0], '{');
  auto decoded = DecodePayload(payload);
  ASSERT_TRUE(decoded.ok()) << decoded.error().message;
  EXPECT_EQ(*decoded, r);
}

TEST(WireTest, IsCompact) {
  // version, flags, ts, "dev-1", lat, lon, count, two named doubles.
  EXPECT_EQ(EncodeWire(Sample()).size(),
            1u + 1 + 8 + 2 + 5 + 8 + 8 + 2 + (2 + 13 + 8) + (2 + 8 + 8));
}

TEST(WireTest, RoundTripsWithoutPosition) {
  core::Reading r = Sample();
  r.lat.reset();
  r.lon.reset();
  auto decoded = DecodePayload(EncodeWire(r));
  ASSERT_TRUE(decoded.ok()) << decoded.error().message;
  EXPECT_EQ(*decoded, r);
  r.lon = -180;
  decoded = DecodePayload(EncodeWire(r));
  ASSERT_TRUE(decoded.ok()) << decoded.error().message;
  EXPECT_EQ(*decoded, r);
}

TEST(WireTest, RoundTripsExtremeValues) {
  core::Reading r;
  r.device_id = std::string(255, 'd');
  r.ts = core::FromUnixMicros(253'402'300'799'999'999);  // the last microsecond of 9999
  for (int i = 0; i < 255; ++i) r.sensors.push_back({"s" + std::to_string(i), i * 0.5});
  r.sensors[0].value = std::numeric_limits<double>::max();
  r.sensors[1].value = std::numeric_limits<double>::lowest();
  r.sensors[2].value = std::numeric_limits<double>::denorm_min();
  r.sensors[3].value = -0.0;
  r.sensors[4] = {std::string(255, 'n'), 1};
  r.lat = -90;
  r.lon = 180;
  auto decoded = DecodePayload(EncodeWire(r));
  ASSERT_TRUE(decoded.ok()) << decoded.error().message;
  EXPECT_EQ(*decoded, r);
  EXPECT_TRUE(std::signbit(decoded->sensors[3].value));

  r.ts = core::FromUnixMicros(0);
  decoded = DecodePayload(EncodeWire(r));
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->ts, r.ts);
}

TEST(WireTest, DecodesTheJsonFormWithItsOwnTs) {
  auto decoded = DecodePayload(
      R"({"device_id":"dev-1","ts":"2024-05-01T12:00:00.123456Z","temperature_c":21.5,)"
      R"("humidity":40,"lat":52.37,"lon":4.89})");
  ASSERT_TRUE(decoded.ok()) << decoded.error().message;
  EXPECT_EQ(*decoded, Sample());
  // No future bound and no required sensors apply on the bus.
  auto far = DecodePayload(R"({"device_id":"d","ts":"9000-01-01T00:00:00Z","co2":1})");
  ASSERT_TRUE(far.ok()) << far.error().message;
  EXPECT_EQ(far->sensors.size(), 1u);
}

TEST(WireTest, JsonFormRoundTripsEncodeReadingJson) {
  auto decoded = DecodePayload(EncodeReadingJson(Sample()));
  ASSERT_TRUE(decoded.ok()) << decoded.error().message;
  EXPECT_EQ(*decoded, Sample());
}

TEST(WireTest, RejectsInvalidJsonPayloads) {
  for (const char* bad : {"{", R"({"device_id":"d","co2":1})", R"({"device_id":"a/b","ts":"2024-05-01T12:00:00Z","co2":1})",
                          R"({"device_id":"d","ts":"2024-05-01T12:00:00Z"})"}) {
    auto r = DecodePayload(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().code, Errc::kInvalidArgument);
  }
}

TEST(WireTest, RejectsEveryTruncation) {
  const std::string payload = EncodeWire(Sample());
  for (std::size_t n = 0; n < payload.size(); ++n) {
    auto r = DecodePayload(std::string_view(payload.data(), n));
    ASSERT_FALSE(r.ok()) << "prefix of " << n << " bytes";
    EXPECT_EQ(r.error().code, Errc::kInvalidArgument);
  }
}

TEST(WireTest, RejectsTrailingBytesUnknownVersionAndFlags) {
  const std::string payload = EncodeWire(Sample());
  EXPECT_FALSE(DecodePayload(payload + '\0').ok());
  std::string v2 = payload;
  v2[0] = 0x02;
  EXPECT_FALSE(DecodePayload(v2).ok());
  std::string flags = payload;
  flags[1] = static_cast<char>(flags[1] | 0x04);
  EXPECT_FALSE(DecodePayload(flags).ok());
}

TEST(WireTest, RejectsReadingsThatBreakTheRules) {
  core::Reading nan = Sample();
  nan.sensors[0].value = std::nan("");
  EXPECT_FALSE(DecodePayload(EncodeWire(nan)).ok());
  core::Reading lat = Sample();
  lat.lat = 91;
  EXPECT_FALSE(DecodePayload(EncodeWire(lat)).ok());
  core::Reading id = Sample();
  id.device_id = "a b";
  EXPECT_FALSE(DecodePayload(EncodeWire(id)).ok());
  core::Reading dup = Sample();
  dup.sensors.push_back({"humidity", 1});
  EXPECT_FALSE(DecodePayload(EncodeWire(dup)).ok());
  core::Reading none = Sample();
  none.sensors.clear();
  EXPECT_FALSE(DecodePayload(EncodeWire(none)).ok());
  core::Reading before_epoch = Sample();
  before_epoch.ts = core::FromUnixMicros(-1);
  EXPECT_FALSE(DecodePayload(EncodeWire(before_epoch)).ok());
}

TEST(WireTest, RejectsLengthsBeyondThePayload) {
  std::string payload = EncodeWire(Sample());
  // The device id length sits after version, flags and ts.
  payload[10] = static_cast<char>(0xFF);
  payload[11] = static_cast<char>(0xFF);
  EXPECT_FALSE(DecodePayload(payload).ok());
}

TEST(WireDeathTest, EncodingWhatTheFormatCannotCarryAborts) {
  core::Reading r = Sample();
  r.device_id = std::string(256, 'd');
  EXPECT_DEATH(EncodeWire(r), "does not fit");
}

TEST(WireTest, AppendWireAppends) {
  std::string out = "prefix";
  AppendWire(out, Sample());
  EXPECT_EQ(out, "prefix" + EncodeWire(Sample()));
}

TEST(WireTest, SurvivesRandomGarbage) {
  std::mt19937 rng(12345);
  const std::string valid = EncodeWire(Sample());
  for (int i = 0; i < 20000; ++i) {
    std::string garbage;
    if (i % 2 == 0) {
      garbage.resize(rng() % 64);
      for (auto& c : garbage) c = static_cast<char>(rng());
    } else {
      garbage = valid;  // flip a few bytes of a valid payload
      for (int k = 0; k < 3; ++k) {
        garbage[rng() % garbage.size()] = static_cast<char>(rng());
      }
    }
    auto r = DecodePayload(garbage);
    if (r.ok()) {
      // Whatever decodes must re-encode to itself.
      EXPECT_EQ(DecodePayload(EncodeWire(*r)).value(), *r);
    }
  }
}

TEST(RejectedInput, RoundTripsAndIsNotAReading) {
  RejectedInput r{"devices/d1/telemetry", "mqtt: malformed_json: invalid JSON",
                  std::string("not json\0\xff", 10)};
  const std::string payload = EncodeRejected(r);
  EXPECT_TRUE(IsRejected(payload));
  auto back = DecodeRejected(payload);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->source, r.source);
  EXPECT_EQ(back->reason, r.reason);
  EXPECT_EQ(back->payload, r.payload);
  EXPECT_FALSE(DecodePayload(payload).ok());
  EXPECT_FALSE(DecodeRejected(payload.substr(0, 5)).ok());
  EXPECT_FALSE(IsRejected("{}"));
}

}  // namespace
}  // namespace iot::codec
