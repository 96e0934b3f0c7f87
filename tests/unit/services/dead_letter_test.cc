// dead_letter_test.cc: the JSON form of dead letters (services/dead_letter.h), which DLQ_TOPIC
// carries and `iotd dlq replay` reads back: any payload must survive the trip byte for byte.
#include "services/dead_letter.h"

#include <gtest/gtest.h>

#include <string>

namespace iot::services {
namespace {

store::DeadLetter Letter(std::string payload) {
  store::DeadLetter dl;
  dl.consumer = "aggregator";
  dl.topic = "telemetry.raw";
  dl.partition = 5;
  dl.offset = 123456789012;
  dl.key = "dev-1";
  dl.payload = std::move(payload);
  dl.reason = "undecodable: \"quoted\" and \\ backslash";
  dl.attempts = 4;
  dl.failed_at = core::Timestamp(core::Micros(1764324000123456));
  return dl;
}

TEST(DeadLetterJson, TextPayloadIsWrittenAsTextAndReadsBackExactly) {
  auto dl = Letter("{\"device_id\":\"dev-1\",\"temperature_c\":\"hot\"}");
  std::string json = DeadLetterJson(dl);
  EXPECT_NE(json.find("\"payload_encoding\":\"utf8\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"failed_at\":\"2025-11-28T10:00:00.123456Z\""), std::string::npos) << json;
  auto back = ParseDeadLetter(json);
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(*back, dl);
}

TEST(DeadLetterJson, BinaryPayloadGoesThroughBase64ByteForByte) {
  std::string bytes;
  for (int i = 0; i < 256; ++i) bytes += static_cast<char>(i);
  for (std::size_t n : {0u, 1u, 2u, 3u, 4u, 255u, 256u}) {
    auto dl = Letter(bytes.substr(0, n) + (n > 0 ? "\xff" : ""));
    std::string json = DeadLetterJson(dl);
    auto back = ParseDeadLetter(json);
    ASSERT_TRUE(back.ok()) << back.error().message;
    EXPECT_EQ(back->payload, dl.payload) << n;
  }
  EXPECT_NE(DeadLetterJson(Letter("\x01\xff")).find("\"payload_encoding\":\"base64\""),
            std::string::npos);
}

TEST(DeadLetterJson, ABinaryKeySurvivesAndAnInvalidReasonStillGivesValidJson) {
  auto dl = Letter("x");
  dl.key = std::string("\0\xfe\x01", 3);
  dl.reason = "store: bad byte \xff here";
  std::string json = DeadLetterJson(dl);
  EXPECT_NE(json.find("\"key_encoding\":\"base64\""), std::string::npos) << json;
  EXPECT_NE(json.find("bad byte \xEF\xBF\xBD here"), std::string::npos) << json;
  auto back = ParseDeadLetter(json);
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back->key, dl.key);
}

TEST(DeadLetterJson, Base64MatchesRfc4648TestVectors) {
  EXPECT_EQ(EncodeBase64(""), "");
  EXPECT_EQ(EncodeBase64("f"), "Zg==");
  EXPECT_EQ(EncodeBase64("fo"), "Zm8=");
  EXPECT_EQ(EncodeBase64("foo"), "Zm9v");
  EXPECT_EQ(EncodeBase64("foob"), "Zm9vYg==");
  EXPECT_EQ(EncodeBase64("fooba"), "Zm9vYmE=");
  EXPECT_EQ(EncodeBase64("foobar"), "Zm9vYmFy");
  EXPECT_EQ(DecodeBase64("Zm9vYmE="), "fooba");
  for (const char* bad : {"Zg=", "Z===", "Zm9v!A==", "Zg==Zg==", "=Zg=", "Zm=v"}) {
    EXPECT_FALSE(DecodeBase64(bad).has_value()) << bad;
  }
}

TEST(DeadLetterJson, ParseRejectsWhatIsNotADeadLetterNamingTheField) {
  EXPECT_FALSE(ParseDeadLetter("not json").ok());
  EXPECT_FALSE(ParseDeadLetter("{}").ok());
  std::string json = DeadLetterJson(Letter("x"));
  std::string no_offset = json;
  no_offset.replace(no_offset.find("\"offset\""), 8, "\"offzet\"");
  auto e = ParseDeadLetter(no_offset);
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.error().message.find("offset"), std::string::npos) << e.error().message;
  std::string bad_encoding = json;
  const std::string payload_utf8 = "\"payload_encoding\":\"utf8\"";
  bad_encoding.replace(bad_encoding.find(payload_utf8), payload_utf8.size(),
                       "\"payload_encoding\":\"rot13\"");
  EXPECT_FALSE(ParseDeadLetter(bad_encoding).ok());
  std::string bad_key = json;
  const std::string key_utf8 = "\"key_encoding\":\"utf8\"";
  bad_key.replace(bad_key.find(key_utf8), key_utf8.size(), "\"key_encoding\":\"hex\"");
  EXPECT_FALSE(ParseDeadLetter(bad_key).ok());
}

}  // namespace
}  // namespace iot::services
