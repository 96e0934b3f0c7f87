// Tests for codec/documents.h: the dashboard's JSON documents.
#include "codec/documents.h"

#include <gtest/gtest.h>

namespace iot::codec {
namespace {

core::Timestamp At(const char* iso) { return core::ParseIso8601(iso).value(); }

TEST(WriteReadingTest, WritesIdAsStringAndSensorsInOrder) {
  core::Reading r;
  r.device_id = "dev-1";
  r.ts = At("2024-05-01T12:00:00Z");
  r.sensors = {{"temperature_c", 21.5}, {"humidity", 40}};
  r.lat = 1.5;
  r.lon = 2.5;
  std::string out;
  JsonWriter w(out);
  WriteReading(w, r, std::int64_t{1} << 40 | 7);
  EXPECT_EQ(out,
            R"({"id":"1099511627783","device_id":"dev-1","ts":"2024-05-01T12:00:00Z",)"
            R"("temperature_c":21.5,"humidity":40,"lat":1.5,"lon":2.5})");
}

TEST(WriteReadingTest, OmitsAbsentIdAndPosition) {
  core::Reading r;
  r.device_id = "d";
  r.ts = At("2024-05-01T12:00:00.25Z");
  r.sensors = {{"co2", 400}};
  std::string out;
  JsonWriter w(out);
  WriteReading(w, r, std::nullopt);
  EXPECT_EQ(out, R"({"device_id":"d","ts":"2024-05-01T12:00:00.250000Z","co2":400})");
}

core::Alert SampleAlert() {
  core::Alert a;
  a.id = 42;
  a.device_id = "dev-1";
  a.sensor_type = "temperature_c";
  a.value = 55.2;
  a.alert_type = "threshold_high";
  a.severity = "warning";
  a.message = "temperature_c 55.2 above max 50";
  a.timestamp = At("2024-05-01T12:01:00Z");
  a.status = core::AlertStatus::kActive;
  a.threshold = 50;
  a.created_at = At("2024-05-01T12:00:00Z");
  a.updated_at = At("2024-05-01T12:01:00Z");
  a.count = 3;
  return a;
}

TEST(WriteAlertTest, WritesEveryFieldWithNullResolvedAtWhileOpen) {
  std::string out;
  JsonWriter w(out);
  WriteAlert(w, SampleAlert());
  EXPECT_EQ(out,
            R"({"id":"42","device_id":"dev-1","sensor_type":"temperature_c","value":55.2,)"
            R"("alert_type":"threshold_high","severity":"warning",)"
            R"("message":"temperature_c 55.2 above max 50","timestamp":"2024-05-01T12:01:00Z",)"
            R"("status":"active","threshold":50,"created_at":"2024-05-01T12:00:00Z",)"
            R"("updated_at":"2024-05-01T12:01:00Z","resolved_at":null,"count":3,)"
            R"("acknowledged":false,"acknowledged_at":null,"acknowledged_by":null,)"
            R"("acknowledged_note":null})");
}

TEST(WriteAlertTest, WritesTheAcknowledgement) {
  core::Alert a = SampleAlert();
  a.ack = core::AlertAck{At("2024-05-01T12:03:00Z"), "ops \"on call\"", "fan replaced"};
  std::string out;
  JsonWriter w(out);
  WriteAlert(w, a);
  EXPECT_NE(out.find(R"("count":3,"acknowledged":true,"acknowledged_at":"2024-05-01T12:03:00Z",)"
                     R"("acknowledged_by":"ops \"on call\"","acknowledged_note":"fan replaced"})"),
            std::string::npos)
      << out;
}

TEST(WriteAlertTest, WritesResolvedAt) {
  core::Alert a = SampleAlert();
  a.status = core::AlertStatus::kResolved;
  a.resolved_at = At("2024-05-01T12:02:00Z");
  std::string out;
  JsonWriter w(out);
  WriteAlert(w, a);
  EXPECT_NE(out.find(R"("status":"resolved")"), std::string::npos);
  EXPECT_NE(out.find(R"("resolved_at":"2024-05-01T12:02:00Z")"), std::string::npos);
}

TEST(WriteAggregateTest, WritesTheWindowAndStatistics) {
  core::AggregateKey key{"dev-1", "humidity", std::chrono::hours(1), At("2024-05-01T12:00:00Z")};
  core::Accumulator acc;
  acc.Add(40);
  acc.Add(45);
  std::string out;
  JsonWriter w(out);
  WriteAggregate(w, key, acc);
  EXPECT_EQ(out,
            R"({"device_id":"dev-1","sensor_type":"humidity","window":"1h",)"
            R"("timestamp":"2024-05-01T12:00:00Z","count":2,"sum":85,"min":40,"max":45,)"
            R"("average":42.5})");
}

TEST(WriteAggregateTest, EmptyAccumulatorHasNullMinMax) {
  core::AggregateKey key{"d", "co2", std::chrono::minutes(1), At("2024-05-01T12:00:00Z")};
  std::string out;
  JsonWriter w(out);
  WriteAggregate(w, key, core::Accumulator{});
  EXPECT_NE(out.find(R"("count":0,"sum":0,"min":null,"max":null,"average":0)"), std::string::npos)
      << out;
}

TEST(DocumentsTest, ListsAreCommaSeparated) {
  std::string out;
  JsonWriter w(out);
  w.BeginArray();
  core::AggregateKey key{"d", "co2", std::chrono::minutes(1), At("2024-05-01T12:00:00Z")};
  core::Accumulator acc;
  acc.Add(1);
  WriteAggregate(w, key, acc);
  WriteAggregate(w, key, acc);
  w.EndArray();
  EXPECT_EQ(out.front(), '[');
  EXPECT_NE(out.find("},{"), std::string::npos);
  EXPECT_EQ(out.back(), ']');
}

}  // namespace
}  // namespace iot::codec
