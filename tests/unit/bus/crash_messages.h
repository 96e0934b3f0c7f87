// crash_messages.h: the messages that crash_producer writes and embedded_bus_crash_test checks.
//
// The message meant for offset `o` is fully determined by `o`, so that the test can verify the
// payload stored at every offset, including those the producer never saw acknowledged.
#pragma once

#include <cstdint>
#include <string>

namespace iot::bus::testing {

inline std::string CrashKey(std::int64_t offset) { return "dev-" + std::to_string(offset % 11); }

// CrashPayload varies in size (20 .. 620 bytes) so that frames span several database pages.
inline std::string CrashPayload(std::int64_t offset) {
  std::string payload = "{\"seq\":" + std::to_string(offset) + ",\"pad\":\"";
  payload.append(static_cast<std::size_t>((offset * 7919) % 600), 'x');
  payload += "\"}";
  return payload;
}

}  // namespace iot::bus::testing
