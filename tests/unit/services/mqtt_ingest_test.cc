// mqtt_ingest_test.cc: the pure part of MQTT ingestion: the device id from the topic, topic
// matching, and what a payload turns into on the bus (readings, and a rejected-input record
// with the reason and the original payload for what is invalid).
#include "services/mqtt_ingest.h"

#include <gtest/gtest.h>

#include "codec/wire.h"

namespace iot::services {
namespace {

TEST(MqttTopics, DeviceLevelIsTheFirstPlusAfterTheShareGroup) {
  EXPECT_EQ(DeviceLevel("devices/+/telemetry"), 1);
  EXPECT_EQ(DeviceLevel("$share/g/devices/+/telemetry"), 1);
  EXPECT_EQ(DeviceLevel("+/x/+"), 0);
  EXPECT_EQ(DeviceLevel("plant/#"), -1);
  EXPECT_EQ(StripShare("$share/g/a/+"), "a/+");
  EXPECT_EQ(TopicLevel("devices/d1/telemetry", 1), "d1");
  EXPECT_EQ(TopicLevel("devices", 1), "");
}

TEST(MqttTopics, Matching) {
  EXPECT_TRUE(TopicMatches("devices/+/telemetry", "devices/d1/telemetry"));
  EXPECT_FALSE(TopicMatches("devices/+/telemetry", "devices/d1/other"));
  EXPECT_FALSE(TopicMatches("devices/+/telemetry", "devices/d1/telemetry/x"));
  EXPECT_TRUE(TopicMatches("plant/#", "plant"));
  EXPECT_TRUE(TopicMatches("plant/#", "plant/a/b"));
  EXPECT_FALSE(TopicMatches("+/x", "$SYS/x"));
}

class MqttDecode : public ::testing::Test {
 protected:
  DecodedMessage Decode(std::string_view device, std::string_view payload) {
    return DecodeMqttPayload("devices/" + std::string(device) + "/telemetry", device, payload,
                             options_, limits_, now_);
  }
  static codec::RejectedInput Rejected(const DecodedMessage& d) {
    for (const auto& m : d.messages) {
      if (codec::IsRejected(m.payload)) return *codec::DecodeRejected(m.payload);
    }
    ADD_FAILURE() << "no rejected-input record";
    return {};
  }
  MqttIngestOptions options_;
  core::ReadingLimits limits_;
  core::Timestamp now_ = core::FromUnixMicros(1'800'000'000'000'000);
};

TEST_F(MqttDecode, TheTopicGivesTheDeviceIdWhenThePayloadHasNone) {
  auto d = Decode("d1", R"({"temperature_c": 1, "humidity": 2})");
  EXPECT_EQ(d.result, "accepted");
  ASSERT_EQ(d.messages.size(), 1u);
  EXPECT_EQ(d.messages[0].key, "d1");
  auto r = codec::DecodePayload(d.messages[0].payload);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->device_id, "d1");
  EXPECT_EQ(r->ts, now_);
}

TEST_F(MqttDecode, APayloadDeviceIdOtherThanTheTopicsIsDeadLettered) {
  auto d = Decode("d1", R"({"device_id": "d2", "temperature_c": 1, "humidity": 2})");
  EXPECT_EQ(d.result, "device_mismatch");
  EXPECT_EQ(d.readings, 0u);
  auto r = Rejected(d);
  EXPECT_EQ(r.source, "devices/d1/telemetry");
  EXPECT_NE(r.reason.find("device_mismatch"), std::string::npos);
  EXPECT_EQ(r.payload, R"({"device_id": "d2", "temperature_c": 1, "humidity": 2})");
}

TEST_F(MqttDecode, WithoutATopicDeviceThePayloadMustNameIt) {
  auto d = DecodeMqttPayload("plant/x", "", R"({"temperature_c": 1, "humidity": 2})", options_,
                             limits_, now_);
  EXPECT_EQ(d.result, "missing");
  d = DecodeMqttPayload("plant/x", "", R"({"device_id":"p1","temperature_c": 1, "humidity": 2})",
                        options_, limits_, now_);
  EXPECT_EQ(d.result, "accepted");
  EXPECT_EQ(d.messages[0].key, "p1");
}

TEST_F(MqttDecode, AnArrayKeepsItsValidReadingsAndDeadLettersTheRest) {
  auto d = Decode("d1", R"([{"temperature_c": 1, "humidity": 2}, {"temperature_c": "x"},
                           {"device_id": "d1", "temperature_c": 3, "humidity": 4}])");
  EXPECT_EQ(d.result, "partial");
  EXPECT_EQ(d.readings, 2u);
  EXPECT_EQ(d.rejected_items, 1u);
  ASSERT_EQ(d.messages.size(), 3u);
  EXPECT_NE(Rejected(d).reason.find("item 1"), std::string::npos);
}

TEST_F(MqttDecode, MalformedTooLargeAndTooManyAreDeadLettered) {
  EXPECT_EQ(Decode("d1", "not json").result, "malformed_json");
  EXPECT_EQ(Decode("d1", "[1, 2").result, "malformed_json");
  EXPECT_EQ(Decode("d1", "[]").result, "empty_batch");
  options_.max_items = 1;
  EXPECT_EQ(
      Decode("d1", R"([{"temperature_c":1,"humidity":2},{"temperature_c":1,"humidity":2}])").result,
      "too_many_items");
  options_.max_payload_bytes = 10;
  options_.max_dead_letter_payload = 4;
  auto d = Decode("d1", R"({"temperature_c": 1, "humidity": 2})");
  EXPECT_EQ(d.result, "too_large");
  auto r = Rejected(d);
  EXPECT_EQ(r.payload, "{\"te");
  EXPECT_NE(r.reason.find("cut"), std::string::npos);
}

}  // namespace
}  // namespace iot::services
