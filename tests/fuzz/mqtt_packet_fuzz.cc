// mqtt_packet_fuzz.cc: the MQTT packet codec (src/mqtt/packet.h) on arbitrary bytes, read the way
// the client reads a broker's stream: frame after frame, each body given to its decoder. Nothing
// may crash, read out of bounds or loop; a decoded PUBLISH's views lie inside the input.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "mqtt/packet.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace iot::mqtt;
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  while (!rest.empty()) {
    FixedHeader h;
    if (ParseFixedHeader(rest, 1 << 20, h) != Framing::kOk) break;
    const std::string_view body = rest.substr(h.header_size, h.remaining);
    switch (h.type) {
      case PacketType::kConnack:
        (void)DecodeConnack(h.flags, body);
        break;
      case PacketType::kSuback:
        (void)DecodeSuback(h.flags, body);
        break;
      case PacketType::kDisconnect:
        (void)DecodeDisconnect(h.flags, body);
        break;
      case PacketType::kPublish: {
        auto p = DecodePublish(h.flags, body);
        if (p.ok()) {
          const char* begin = body.data();
          const char* end = body.data() + body.size();
          if (p->topic.data() < begin || p->topic.data() + p->topic.size() > end ||
              p->payload.data() < begin || p->payload.data() + p->payload.size() > end) {
            __builtin_trap();
          }
        }
        break;
      }
      default:
        break;
    }
    rest.remove_prefix(h.header_size + h.remaining);
  }
  (void)ValidateTopicFilter(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
