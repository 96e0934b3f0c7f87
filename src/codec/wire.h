// wire.h: the payload of a reading on the bus.
//
// Ingest publishes readings with EncodeWire, a compact binary form; workers read payloads with
// DecodePayload, which also accepts the JSON form (a payload whose first byte is '{'), so that
// messages produced by other tools or by hand (kafka-console-producer) are understood too; a JSON
// payload must carry its ts (see DecodeTimedReading).
//
// Binary layout (version 1), all integers and doubles little-endian:
//
//   u8  version = 0x01          (never '{', which starts the JSON form)
//   u8  flags                   bit 0: lat present, bit 1: lon present, other bits 0
//   i64 ts                      microseconds since the Unix epoch
//   u16 device_id length (at most 255), then that many bytes
//   f64 lat                     when flag bit 0
//   f64 lon                     when flag bit 1
//   u16 sensor count (at most 255), then per sensor: u16 name length (at most 255), name bytes,
//       f64 value
//
// The payload ends exactly after the last sensor. Thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/reading.h"
#include "core/result.h"

namespace iot::codec {

// kWireVersion is the first byte of the binary form.
inline constexpr std::uint8_t kWireVersion = 0x01;

// WireLimits returns the limits a decoded payload is validated against: what the binary form can
// carry (names up to 255 bytes, up to 255 sensors), no required sensor and no bound on the future.
// Ingest validated the reading against its own, stricter limits before publishing it.
const core::ReadingLimits& WireLimits();

// EncodeWire renders `reading` in the binary form. The reading must satisfy
// core::ValidateReading with WireLimits() (every reading that ingest accepted does); a reading
// whose lengths do not fit the format is a programming error and aborts.
std::string EncodeWire(const core::Reading& reading);

// AppendWire appends the binary form of `reading` to `out`; same contract as EncodeWire.
void AppendWire(std::string& out, const core::Reading& reading);

// DecodePayload decodes a bus payload in either form and checks it with core::ValidateReading
// against WireLimits(). Anything else (empty, truncated, trailing bytes, unknown version or flags,
// invalid JSON, an invalid reading) is a kInvalidArgument error; it never reads outside `payload`.
Result<core::Reading> DecodePayload(std::string_view payload);

// --- Rejected input (MQTT ingestion, docs/mqtt.md) ---------------------------------------------
//
// A message that MQTT ingestion could not accept (bad JSON, schema, device mismatch, too large)
// goes onto the bus as a rejected-input record, so that it becomes durable with the same
// guarantee as a reading before the broker gets its PUBACK, on either bus. The aggregator stores
// it as a dead letter (GET /dlq, and DLQ_TOPIC on Kafka); the alerts worker and the live stream
// skip it. DecodePayload reports it as an unknown version.
//
//   u8  kRejectedVersion = 0x02
//   u16 source length, then the source (the MQTT topic)
//   u16 reason length, then the reason (at most 65535 bytes; longer is cut)
//   the original payload, to the end
inline constexpr std::uint8_t kRejectedVersion = 0x02;

struct RejectedInput {
  std::string source;
  std::string reason;
  std::string payload;
};

std::string EncodeRejected(const RejectedInput& r);
// IsRejected tells a rejected-input record by its first byte.
inline bool IsRejected(std::string_view payload) {
  return !payload.empty() && static_cast<std::uint8_t>(payload.front()) == kRejectedVersion;
}
// DecodeRejected reads a rejected-input record; kInvalidArgument when truncated.
Result<RejectedInput> DecodeRejected(std::string_view payload);

}  // namespace iot::codec
