// The MQTT 5 packet codec: framing and remaining-length bounds, each decoder on valid and
// malformed input, properties skipped by their declared types, topic filter validation.
#include "mqtt/packet.h"

#include <gtest/gtest.h>

namespace iot::mqtt {
namespace {

std::string Bytes(std::initializer_list<int> b) {
  std::string s;
  for (int x : b) s += static_cast<char>(x);
  return s;
}

TEST(MqttFraming, RemainingLengthRoundTripsAtTheBoundsOfEachSize) {
  for (std::size_t v :
       {std::size_t{0}, std::size_t{127}, std::size_t{128}, std::size_t{16383}, std::size_t{16384},
        std::size_t{2097151}, std::size_t{2097152}, kMaxRemainingLength}) {
    std::string packet(1, static_cast<char>(0x30));
    AppendVarInt(packet, v);
    FixedHeader h;
    EXPECT_EQ(ParseFixedHeader(packet, 0, h), v == 0 ? Framing::kOk : Framing::kNeedMore) << v;
    EXPECT_EQ(h.remaining, v);
    EXPECT_EQ(h.header_size, packet.size());
  }
}

TEST(MqttFraming, AFifthLengthByteIsMalformed) {
  FixedHeader h;
  EXPECT_EQ(ParseFixedHeader(Bytes({0x30, 0xff, 0xff, 0xff, 0xff, 0x01}), 0, h),
            Framing::kMalformed);
}

TEST(MqttFraming, IncompleteHeaderOrBodyNeedsMore) {
  FixedHeader h;
  EXPECT_EQ(ParseFixedHeader("", 0, h), Framing::kNeedMore);
  EXPECT_EQ(ParseFixedHeader(Bytes({0x30}), 0, h), Framing::kNeedMore);
  EXPECT_EQ(ParseFixedHeader(Bytes({0x30, 0x80}), 0, h), Framing::kNeedMore);
  EXPECT_EQ(ParseFixedHeader(Bytes({0x30, 0x03, 0x00}), 0, h), Framing::kNeedMore);
  EXPECT_EQ(ParseFixedHeader(Bytes({0xd0, 0x00}), 0, h), Framing::kOk);
  EXPECT_EQ(h.type, PacketType::kPingresp);
}

TEST(MqttFraming, PacketTypeZeroAndPacketsAboveTheLimitAreMalformed) {
  FixedHeader h;
  EXPECT_EQ(ParseFixedHeader(Bytes({0x00, 0x00}), 0, h), Framing::kMalformed);
  EXPECT_EQ(ParseFixedHeader(Bytes({0x30, 0x80, 0x01}), 100, h), Framing::kMalformed);
  EXPECT_EQ(ParseFixedHeader(Bytes({0x30, 0x62}), 100, h), Framing::kNeedMore);  // 2 + 98
}

TEST(MqttEncode, ConnectCarriesVersion5FlagsAndProperties) {
  ConnectOptions o;
  o.client_id = "c1";
  o.username = "u";
  o.password = "p";
  o.keep_alive_s = 30;
  o.clean_start = false;
  o.session_expiry_s = 3600;
  o.receive_maximum = 500;
  const std::string p = EncodeConnect(o);
  FixedHeader h;
  ASSERT_EQ(ParseFixedHeader(p, 0, h), Framing::kOk);
  EXPECT_EQ(h.type, PacketType::kConnect);
  const std::string body = p.substr(h.header_size);
  EXPECT_EQ(body.substr(0, 7), Bytes({0, 4, 'M', 'Q', 'T', 'T', 5}));
  EXPECT_EQ(static_cast<unsigned char>(body[7]), 0xc0);  // user name, password, no clean start
  EXPECT_EQ(body.substr(8, 2), Bytes({0, 30}));
  EXPECT_EQ(body.substr(10, 9), Bytes({8, 0x11, 0, 0, 0x0e, 0x10, 0x21, 0x01, 0xf4}));
  EXPECT_EQ(body.substr(19), Bytes({0, 2, 'c', '1', 0, 1, 'u', 0, 1, 'p'}));
}

TEST(MqttEncode, SubscribePubackPingDisconnect) {
  // Options 0x11: maximum QoS 1, Retain Handling 1 (retained messages only for a new
  // subscription, so that a resumed session does not get them again).
  EXPECT_EQ(EncodeSubscribe(7, {"a/+"}, 1), Bytes({0x82, 9, 0, 7, 0, 0, 3, 'a', '/', '+', 0x11}));
  EXPECT_EQ(EncodePuback(0x1234), Bytes({0x40, 2, 0x12, 0x34}));
  EXPECT_EQ(EncodePingreq(), Bytes({0xc0, 0}));
  EXPECT_EQ(EncodeDisconnect(), Bytes({0xe0, 0}));
}

TEST(MqttDecode, ConnackWithPropertiesOfEveryType) {
  // session present, success; properties: receive maximum (2 bytes), assigned client id
  // (string), a user property (string pair), maximum QoS (byte), maximum packet size (4 bytes).
  std::string props = Bytes({0x21, 0, 10, 0x12, 0,    2, 'i',  'd', 0x26, 0,    1,
                             'k',  0, 1,  'v',  0x24, 1, 0x27, 0,   0,    0x10, 0});
  std::string body = Bytes({1, 0}) + static_cast<char>(props.size()) + props;
  auto c = DecodeConnack(0, body);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_TRUE(c->session_present);
  EXPECT_EQ(c->reason, 0);
  EXPECT_EQ(c->receive_maximum, 10);
  EXPECT_EQ(c->assigned_client_id, "id");
  EXPECT_EQ(c->maximum_qos, 1);
}

TEST(MqttDecode, MalformedConnacksAreErrors) {
  EXPECT_FALSE(DecodeConnack(0, Bytes({0})).ok());
  EXPECT_FALSE(DecodeConnack(1, Bytes({0, 0, 0})).ok());
  EXPECT_FALSE(DecodeConnack(0, Bytes({2, 0, 0})).ok());              // reserved ack flag
  EXPECT_FALSE(DecodeConnack(0, Bytes({0, 0, 5, 0x21, 0})).ok());     // properties overrun
  EXPECT_FALSE(DecodeConnack(0, Bytes({0, 0, 2, 0x7f, 0})).ok());     // unknown property
  EXPECT_FALSE(DecodeConnack(0, Bytes({0, 0, 3, 0x21, 0, 0})).ok());  // receive maximum 0
  EXPECT_FALSE(DecodeConnack(0, Bytes({0, 0, 0, 9})).ok());           // trailing byte
}

TEST(MqttDecode, PublishQos1WithPropertiesAndPayload) {
  // topic "d/x", packet id 5, properties: payload format (byte) + content type (string).
  std::string body = Bytes({0, 3, 'd', '/', 'x', 0, 5, 6, 0x01, 1, 0x03, 0, 1, 'j'}) + "{}";
  auto p = DecodePublish(0x02 | 0x08, body);
  ASSERT_TRUE(p.ok()) << p.error().message;
  EXPECT_EQ(p->qos, 1);
  EXPECT_TRUE(p->dup);
  EXPECT_EQ(p->packet_id, 5);
  EXPECT_EQ(p->topic, "d/x");
  EXPECT_EQ(p->payload, "{}");
}

TEST(MqttDecode, MalformedPublishesAreErrors) {
  EXPECT_FALSE(DecodePublish(0x06, Bytes({0, 1, 'a', 0, 1, 0})).ok());        // QoS 3
  EXPECT_FALSE(DecodePublish(0x02, Bytes({0, 1, 'a', 0, 0, 0})).ok());        // packet id 0
  EXPECT_FALSE(DecodePublish(0x08, Bytes({0, 1, 'a', 0})).ok());              // DUP on QoS 0
  EXPECT_FALSE(DecodePublish(0x00, Bytes({0, 5, 'a'})).ok());                 // topic overrun
  EXPECT_FALSE(DecodePublish(0x00, Bytes({0, 0, 0})).ok());                   // empty topic
  EXPECT_FALSE(DecodePublish(0x00, Bytes({0, 1, '+', 0})).ok());              // wildcard
  EXPECT_FALSE(DecodePublish(0x00, Bytes({0, 1, 'a', 3, 0x23, 0, 1})).ok());  // topic alias
  EXPECT_FALSE(DecodePublish(0x00, Bytes({0, 1, 'a', 9, 0x01})).ok());        // props overrun
  EXPECT_FALSE(DecodePublish(0x00, Bytes({0, 1, 'a', 0x80, 0x80, 0x80, 0x80, 0x01})).ok());
}

TEST(MqttDecode, SubackAndDisconnect) {
  auto s = DecodeSuback(0, Bytes({0, 1, 0, 1, 0x87}));
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->packet_id, 1);
  EXPECT_EQ(s->reasons, (std::vector<std::uint8_t>{1, 0x87}));
  EXPECT_FALSE(DecodeSuback(0, Bytes({0, 1, 0})).ok());  // no reason codes
  auto d = DecodeDisconnect(0, Bytes({0x8e, 4, 0x1f, 0, 1, 'x'}));
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->reason, 0x8e);
  EXPECT_EQ(d->reason_string, "x");
  EXPECT_FALSE(DecodeDisconnect(0, Bytes({0x8e, 9})).ok());
}

TEST(MqttTopicFilter, Validation) {
  for (const char* ok : {"devices/+/telemetry", "#", "a/#", "+", "$share/g/devices/+/x", "a//b"}) {
    EXPECT_TRUE(ValidateTopicFilter(ok).ok()) << ok;
  }
  for (const char* bad :
       {"", "a/#/b", "a#", "a/b+", "$share/g", "$share//a", "$share/g+/a", "$share/g/"}) {
    EXPECT_FALSE(ValidateTopicFilter(bad).ok()) << bad;
  }
}

}  // namespace
}  // namespace iot::mqtt
