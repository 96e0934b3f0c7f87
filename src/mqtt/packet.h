// packet.h: the MQTT 5.0 packets iotd's subscriber speaks, as pure functions over bytes.
//
// Only what a QoS 0/1 subscriber needs (see client.h): it encodes CONNECT, SUBSCRIBE, PUBACK,
// PINGREQ and DISCONNECT and decodes CONNACK, SUBACK, PUBLISH, PINGRESP and DISCONNECT. Every
// property of a decoded packet is walked with its declared type (byte, two/four-byte integer,
// variable byte integer, UTF-8 string, binary data, string pair), so unknown ones are skipped
// correctly; a packet whose lengths disagree is malformed. No socket, no allocation beyond the
// encoded packet; thread-safe.
//
//   std::string_view buffer = ...;     // bytes read so far
//   FixedHeader h;
//   switch (ParseFixedHeader(buffer, max_packet, h)) {
//     case Framing::kNeedMore: read more;
//     case Framing::kMalformed: close the connection;
//     case Framing::kOk: body = buffer.substr(h.header_size, h.remaining); ...
//   }
//
// Spec: MQTT Version 5.0, OASIS Standard, 7 March 2019 (section numbers below).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace iot::mqtt {

enum class PacketType : std::uint8_t {
  kConnect = 1,
  kConnack = 2,
  kPublish = 3,
  kPuback = 4,
  kPubrec = 5,
  kPubrel = 6,
  kPubcomp = 7,
  kSubscribe = 8,
  kSuback = 9,
  kUnsubscribe = 10,
  kUnsuback = 11,
  kPingreq = 12,
  kPingresp = 13,
  kDisconnect = 14,
  kAuth = 15,
};

// kMaxRemainingLength is the largest Remaining Length a variable byte integer can carry (§1.5.5).
inline constexpr std::size_t kMaxRemainingLength = 268'435'455;

// FixedHeader is the first 2-5 bytes of every packet (§2.1.1).
struct FixedHeader {
  PacketType type{};
  std::uint8_t flags = 0;       // the low four bits of the first byte
  std::size_t remaining = 0;    // Remaining Length: the bytes after the fixed header
  std::size_t header_size = 0;  // 2..5
};

enum class Framing { kOk, kNeedMore, kMalformed };

// ParseFixedHeader reads the fixed header at the start of `buffer`. kNeedMore: the header or the
// packet is not complete yet (`out.header_size`/`remaining` are set once the header is complete);
// kMalformed: a length of more than four bytes, a packet type 0, or a packet larger than
// `max_packet` bytes (header included).
Framing ParseFixedHeader(std::string_view buffer, std::size_t max_packet, FixedHeader& out);

// AppendVarInt appends a variable byte integer (§1.5.5); `value` <= kMaxRemainingLength.
void AppendVarInt(std::string& out, std::size_t value);

struct ConnectOptions {
  std::string client_id;
  std::optional<std::string> username;
  std::optional<std::string> password;
  std::uint16_t keep_alive_s = 30;
  bool clean_start = true;
  std::uint32_t session_expiry_s = 0;     // property 0x11; 0: the session ends with the connection
  std::uint16_t receive_maximum = 65535;  // property 0x21: our window of unacknowledged QoS 1
  std::uint32_t maximum_packet_size = 0;  // property 0x27; 0: not sent (no limit)
};

std::string EncodeConnect(const ConnectOptions& o);
// EncodeSubscribe subscribes to `filters`, each with maximum QoS `qos` and No Local off.
std::string EncodeSubscribe(std::uint16_t packet_id, const std::vector<std::string>& filters,
                            std::uint8_t qos);
std::string EncodePuback(std::uint16_t packet_id);
// AppendPuback appends EncodePuback(packet_id) to `out` (the hot path: no allocation).
void AppendPuback(std::string& out, std::uint16_t packet_id);
std::string EncodePingreq();
std::string EncodeDisconnect(std::uint8_t reason = 0);

struct Connack {
  bool session_present = false;
  std::uint8_t reason = 0;                // 0 success, >= 0x80 refused (§3.2.2.2)
  std::uint16_t receive_maximum = 65535;  // the server's window for our QoS 1 PUBLISHes
  std::optional<std::uint16_t> server_keep_alive;
  std::optional<std::string> assigned_client_id;
  std::string reason_string;
  std::optional<std::uint32_t> session_expiry_s;
  std::uint8_t maximum_qos = 2;
};

struct Suback {
  std::uint16_t packet_id = 0;
  std::vector<std::uint8_t> reasons;  // per filter: granted QoS (0..2), or an error >= 0x80
  std::string reason_string;
};

// Publish views the topic and payload in the buffer it was decoded from.
struct Publish {
  std::uint8_t qos = 0;
  bool dup = false;
  bool retain = false;
  std::uint16_t packet_id = 0;  // QoS 1 and 2 only
  std::string_view topic;
  std::string_view payload;
};

struct Disconnect {
  std::uint8_t reason = 0;
  std::string reason_string;
};

// Decoders take the fixed header's flags and the packet's body (Remaining Length bytes). Any
// inconsistency is a kInvalidArgument error naming what is wrong.
Result<Connack> DecodeConnack(std::uint8_t flags, std::string_view body);
Result<Suback> DecodeSuback(std::uint8_t flags, std::string_view body);
// DecodePublish rejects QoS 3, a packet id of 0 for QoS > 0, an empty topic, wildcards in the
// topic and a Topic Alias (we announce a Topic Alias Maximum of 0, §3.3.2.3.4).
Result<Publish> DecodePublish(std::uint8_t flags, std::string_view body);
Result<Disconnect> DecodeDisconnect(std::uint8_t flags, std::string_view body);

// ReasonName is a short text for a CONNACK/SUBACK/DISCONNECT reason code, for logs.
std::string ReasonName(std::uint8_t reason);

// ValidateTopicFilter checks a subscription filter (§4.7): non-empty UTF-8 without NUL, '#'
// only as the whole last level, '+' only as a whole level, and a `$share/<group>/<filter>`
// with a non-empty group free of wildcards and a valid filter. The error says what is wrong.
Status ValidateTopicFilter(std::string_view filter);

}  // namespace iot::mqtt
