#include "mqtt/packet.h"

#include <fmt/format.h>

namespace iot::mqtt {
namespace {

Error Bad(std::string message) { return Error{Errc::kInvalidArgument, std::move(message)}; }

void Append16(std::string& out, std::uint16_t v) {
  out += static_cast<char>(v >> 8);
  out += static_cast<char>(v & 0xff);
}

void Append32(std::string& out, std::uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out += static_cast<char>((v >> shift) & 0xff);
}

void AppendString(std::string& out, std::string_view s) {
  Append16(out, static_cast<std::uint16_t>(s.size()));
  out.append(s);
}

// Packet wraps a variable header + payload in its fixed header.
std::string Packet(PacketType type, std::uint8_t flags, std::string_view body) {
  std::string out;
  out.reserve(body.size() + 5);
  out += static_cast<char>((static_cast<std::uint8_t>(type) << 4) | flags);
  AppendVarInt(out, body.size());
  out.append(body);
  return out;
}

// Reader walks a packet body; every read checks the bounds and sets `ok` false on overrun.
class Reader {
 public:
  explicit Reader(std::string_view data) : data_(data) {}
  bool ok() const { return ok_; }
  bool empty() const { return data_.empty(); }
  std::size_t size() const { return data_.size(); }
  std::string_view Rest() { return Take(data_.size()); }

  std::uint8_t U8() {
    auto s = Take(1);
    return s.empty() ? 0 : static_cast<std::uint8_t>(s[0]);
  }
  std::uint16_t U16() {
    auto s = Take(2);
    if (s.size() < 2) return 0;
    return static_cast<std::uint16_t>((static_cast<std::uint8_t>(s[0]) << 8) |
                                      static_cast<std::uint8_t>(s[1]));
  }
  std::uint32_t U32() {
    auto s = Take(4);
    std::uint32_t v = 0;
    for (char c : s) v = (v << 8) | static_cast<std::uint8_t>(c);
    return s.size() == 4 ? v : 0;
  }
  std::size_t VarInt() {
    std::size_t value = 0;
    for (int i = 0; i < 4; ++i) {
      auto s = Take(1);
      if (s.empty()) return 0;
      auto b = static_cast<std::uint8_t>(s[0]);
      value |= static_cast<std::size_t>(b & 0x7f) << (7 * i);
      if ((b & 0x80) == 0) return value;
    }
    ok_ = false;  // a fifth byte
    return 0;
  }
  std::string_view String() { return Take(U16()); }
  std::string_view Take(std::size_t n) {
    if (!ok_ || n > data_.size()) {
      ok_ = false;
      data_ = {};
      return {};
    }
    auto s = data_.substr(0, n);
    data_.remove_prefix(n);
    return s;
  }

 private:
  std::string_view data_;
  bool ok_ = true;
};

// Property is one decoded property: its id and its value as an integer or bytes.
struct Property {
  std::uint32_t id = 0;
  std::uint32_t number = 0;
  std::string_view text;
};

// ReadProperties walks the property list at `r` (its length, then the properties) and calls
// `on` for each. False when the list is malformed or a property id is unknown (§2.2.2.2: a
// protocol error).
template <typename F>
bool ReadProperties(Reader& r, F&& on) {
  const std::size_t length = r.VarInt();
  if (!r.ok()) return false;
  Reader p(r.Take(length));
  if (!r.ok()) return false;
  while (!p.empty()) {
    Property prop;
    prop.id = static_cast<std::uint32_t>(p.VarInt());
    switch (prop.id) {
      case 0x01:
      case 0x17:
      case 0x19:
      case 0x24:
      case 0x25:
      case 0x28:
      case 0x29:
      case 0x2A:
        prop.number = p.U8();
        break;
      case 0x13:
      case 0x21:
      case 0x22:
      case 0x23:
        prop.number = p.U16();
        break;
      case 0x02:
      case 0x11:
      case 0x18:
      case 0x27:
        prop.number = p.U32();
        break;
      case 0x0B:
        prop.number = static_cast<std::uint32_t>(p.VarInt());
        break;
      case 0x03:
      case 0x08:
      case 0x12:
      case 0x15:
      case 0x1A:
      case 0x1C:
      case 0x1F:
      case 0x09:
      case 0x16:
        prop.text = p.String();
        break;
      case 0x26:  // user property: a string pair
        prop.text = p.String();
        (void)p.String();
        break;
      default:
        return false;
    }
    if (!p.ok()) return false;
    on(prop);
  }
  return true;
}

bool HasWildcard(std::string_view s) { return s.find_first_of("+#") != std::string_view::npos; }

}  // namespace

Framing ParseFixedHeader(std::string_view buffer, std::size_t max_packet, FixedHeader& out) {
  if (buffer.empty()) return Framing::kNeedMore;
  const auto first = static_cast<std::uint8_t>(buffer[0]);
  if ((first >> 4) == 0) return Framing::kMalformed;
  std::size_t value = 0;
  std::size_t i = 1;
  for (;; ++i) {
    if (i > 4) return Framing::kMalformed;
    if (i >= buffer.size()) return Framing::kNeedMore;
    const auto b = static_cast<std::uint8_t>(buffer[i]);
    value |= static_cast<std::size_t>(b & 0x7f) << (7 * (i - 1));
    if ((b & 0x80) == 0) break;
  }
  out.type = static_cast<PacketType>(first >> 4);
  out.flags = first & 0x0f;
  out.remaining = value;
  out.header_size = i + 1;
  if (max_packet > 0 && out.header_size + out.remaining > max_packet) return Framing::kMalformed;
  if (buffer.size() < out.header_size + out.remaining) return Framing::kNeedMore;
  return Framing::kOk;
}

void AppendVarInt(std::string& out, std::size_t value) {
  do {
    auto b = static_cast<std::uint8_t>(value & 0x7f);
    value >>= 7;
    if (value > 0) b |= 0x80;
    out += static_cast<char>(b);
  } while (value > 0);
}

std::string EncodeConnect(const ConnectOptions& o) {
  std::string body;
  AppendString(body, "MQTT");
  body += static_cast<char>(5);  // protocol version
  std::uint8_t flags = 0;
  if (o.clean_start) flags |= 0x02;
  if (o.password) flags |= 0x40;
  if (o.username) flags |= 0x80;
  body += static_cast<char>(flags);
  Append16(body, o.keep_alive_s);
  std::string props;
  if (o.session_expiry_s > 0) {
    props += static_cast<char>(0x11);
    Append32(props, o.session_expiry_s);
  }
  if (o.receive_maximum != 65535) {
    props += static_cast<char>(0x21);
    Append16(props, o.receive_maximum);
  }
  if (o.maximum_packet_size > 0) {
    props += static_cast<char>(0x27);
    Append32(props, o.maximum_packet_size);
  }
  AppendVarInt(body, props.size());
  body += props;
  AppendString(body, o.client_id);
  if (o.username) AppendString(body, *o.username);
  if (o.password) AppendString(body, *o.password);
  return Packet(PacketType::kConnect, 0, body);
}

std::string EncodeSubscribe(std::uint16_t packet_id, const std::vector<std::string>& filters,
                            std::uint8_t qos) {
  std::string body;
  Append16(body, packet_id);
  body += '\0';  // no properties
  for (const auto& f : filters) {
    AppendString(body, f);
    // Maximum QoS; Retain Handling 1: retained messages only when the subscription is new, so
    // that a resumed session does not take them again at every reconnect.
    body += static_cast<char>((qos & 0x03) | 0x10);
  }
  return Packet(PacketType::kSubscribe, 0x02, body);
}

std::string EncodePuback(std::uint16_t packet_id) {
  // Reason 0 (success) with no properties may be left out (§3.4.2.1): 4 bytes in all.
  std::string body;
  Append16(body, packet_id);
  return Packet(PacketType::kPuback, 0, body);
}

void AppendPuback(std::string& out, std::uint16_t packet_id) {
  out += static_cast<char>(static_cast<std::uint8_t>(PacketType::kPuback) << 4);
  out += static_cast<char>(2);
  Append16(out, packet_id);
}

std::string EncodePingreq() { return Packet(PacketType::kPingreq, 0, {}); }

std::string EncodeDisconnect(std::uint8_t reason) {
  if (reason == 0) return Packet(PacketType::kDisconnect, 0, {});
  std::string body(1, static_cast<char>(reason));
  return Packet(PacketType::kDisconnect, 0, body);
}

Result<Connack> DecodeConnack(std::uint8_t flags, std::string_view body) {
  if (flags != 0) return Bad("CONNACK with reserved flags set");
  Reader r(body);
  Connack c;
  const std::uint8_t ack_flags = r.U8();
  if (ack_flags & 0xfe) return Bad("CONNACK with reserved acknowledge flags set");
  c.session_present = (ack_flags & 1) != 0;
  c.reason = r.U8();
  if (!r.ok()) return Bad("CONNACK too short");
  bool ok = ReadProperties(r, [&c](const Property& p) {
    switch (p.id) {
      case 0x21:
        c.receive_maximum = static_cast<std::uint16_t>(p.number);
        break;
      case 0x13:
        c.server_keep_alive = static_cast<std::uint16_t>(p.number);
        break;
      case 0x12:
        c.assigned_client_id = std::string(p.text);
        break;
      case 0x1F:
        c.reason_string = std::string(p.text);
        break;
      case 0x11:
        c.session_expiry_s = p.number;
        break;
      case 0x24:
        c.maximum_qos = static_cast<std::uint8_t>(p.number);
        break;
      default:
        break;
    }
  });
  // A refusal from an MQTT 3.1.1 broker is 4 bytes with no properties (it answers a version 5
  // CONNECT with reason 1, "unacceptable protocol version").
  if (!ok && body.size() == 2) return c;
  if (!ok) return Bad("CONNACK with malformed properties");
  if (!r.empty()) return Bad("CONNACK with trailing bytes");
  if (c.receive_maximum == 0) return Bad("CONNACK with a Receive Maximum of 0");
  return c;
}

Result<Suback> DecodeSuback(std::uint8_t flags, std::string_view body) {
  if (flags != 0) return Bad("SUBACK with reserved flags set");
  Reader r(body);
  Suback s;
  s.packet_id = r.U16();
  if (!r.ok()) return Bad("SUBACK too short");
  if (!ReadProperties(r, [&s](const Property& p) {
        if (p.id == 0x1F) s.reason_string = std::string(p.text);
      })) {
    return Bad("SUBACK with malformed properties");
  }
  for (char c : r.Rest()) s.reasons.push_back(static_cast<std::uint8_t>(c));
  if (s.reasons.empty()) return Bad("SUBACK without reason codes");
  return s;
}

Result<Publish> DecodePublish(std::uint8_t flags, std::string_view body) {
  Publish p;
  p.retain = (flags & 0x01) != 0;
  p.qos = static_cast<std::uint8_t>((flags >> 1) & 0x03);
  p.dup = (flags & 0x08) != 0;
  if (p.qos == 3) return Bad("PUBLISH with QoS 3");
  if (p.qos == 0 && p.dup) return Bad("PUBLISH with QoS 0 and DUP set");
  Reader r(body);
  p.topic = r.String();
  if (p.qos > 0) p.packet_id = r.U16();
  if (!r.ok()) return Bad("PUBLISH too short");
  if (p.qos > 0 && p.packet_id == 0) return Bad("PUBLISH with packet identifier 0");
  bool alias = false;
  if (!ReadProperties(r, [&alias](const Property& prop) {
        if (prop.id == 0x23) alias = true;
      })) {
    return Bad("PUBLISH with malformed properties");
  }
  if (alias) return Bad("PUBLISH with a Topic Alias (none was allowed)");
  if (p.topic.empty()) return Bad("PUBLISH with an empty topic");
  if (HasWildcard(p.topic) || p.topic.find('\0') != std::string_view::npos) {
    return Bad("PUBLISH with a wildcard or NUL in its topic");
  }
  p.payload = r.Rest();
  return p;
}

Result<Disconnect> DecodeDisconnect(std::uint8_t flags, std::string_view body) {
  if (flags != 0) return Bad("DISCONNECT with reserved flags set");
  Disconnect d;
  if (body.empty()) return d;
  Reader r(body);
  d.reason = r.U8();
  if (r.empty()) return d;
  if (!ReadProperties(r,
                      [&d](const Property& p) {
                        if (p.id == 0x1F) d.reason_string = std::string(p.text);
                      }) ||
      !r.empty()) {
    return Bad("DISCONNECT with malformed properties");
  }
  return d;
}

std::string ReasonName(std::uint8_t reason) {
  const char* name = nullptr;
  switch (reason) {
    case 0x00:
      name = "success";
      break;
    case 0x01:
      name = "unacceptable protocol version (the broker does not speak MQTT 5)";
      break;
    case 0x02:
      name = "client identifier not valid";
      break;
    case 0x04:
      name = "bad user name or password";
      break;
    case 0x05:
      name = "not authorized";
      break;
    case 0x80:
      name = "unspecified error";
      break;
    case 0x81:
      name = "malformed packet";
      break;
    case 0x82:
      name = "protocol error";
      break;
    case 0x83:
      name = "implementation specific error";
      break;
    case 0x84:
      name = "unsupported protocol version (the broker does not speak MQTT 5)";
      break;
    case 0x85:
      name = "client identifier not valid";
      break;
    case 0x86:
      name = "bad user name or password";
      break;
    case 0x87:
      name = "not authorized";
      break;
    case 0x88:
      name = "server unavailable";
      break;
    case 0x89:
      name = "server busy";
      break;
    case 0x8A:
      name = "banned";
      break;
    case 0x8B:
      name = "server shutting down";
      break;
    case 0x8C:
      name = "bad authentication method";
      break;
    case 0x8D:
      name = "keep alive timeout";
      break;
    case 0x8E:
      name = "session taken over (another client connected with the same client id)";
      break;
    case 0x8F:
      name = "topic filter invalid";
      break;
    case 0x93:
      name = "receive maximum exceeded";
      break;
    case 0x95:
      name = "packet too large";
      break;
    case 0x97:
      name = "quota exceeded";
      break;
    case 0x9E:
      name = "shared subscriptions not supported";
      break;
    case 0xA2:
      name = "wildcard subscriptions not supported";
      break;
    default:
      break;
  }
  return name ? fmt::format("0x{:02X} {}", reason, name) : fmt::format("0x{:02X}", reason);
}

Status ValidateTopicFilter(std::string_view filter) {
  auto bad = [filter](const char* why) {
    return MakeError(Errc::kInvalidArgument,
                     fmt::format("invalid MQTT topic filter '{}': {}", filter, why));
  };
  if (filter.empty()) return bad("empty");
  if (filter.size() > 65535) return bad("longer than 65535 bytes");
  if (filter.find('\0') != std::string_view::npos) return bad("contains NUL");
  std::string_view rest = filter;
  if (rest.starts_with("$share/")) {
    rest.remove_prefix(7);
    const auto slash = rest.find('/');
    if (slash == std::string_view::npos || slash == 0) {
      return bad("$share/ needs a group name and a filter: $share/<group>/<filter>");
    }
    if (HasWildcard(rest.substr(0, slash))) return bad("a share group may not hold + or #");
    rest.remove_prefix(slash + 1);
    if (rest.empty()) return bad("$share/<group>/ without a filter");
  }
  std::size_t start = 0;
  while (true) {
    const auto slash = rest.find('/', start);
    const auto level =
        rest.substr(start, slash == std::string_view::npos ? rest.npos : slash - start);
    if (level.find('#') != std::string_view::npos) {
      if (level != "#" || slash != std::string_view::npos)
        return bad("# must be the whole last level");
    }
    if (level.find('+') != std::string_view::npos && level != "+") {
      return bad("+ must be a whole level");
    }
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return Status::Ok();
}

}  // namespace iot::mqtt
