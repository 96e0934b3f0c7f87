// documents.h: the JSON documents the dashboard API serves.
//
// Each function writes one JSON object with a JsonWriter, so that a handler can stream a list:
//
//   std::string body;
//   JsonWriter w(body);
//   w.BeginArray();
//   for (const auto& a : alerts) WriteAlert(w, a);
//   w.EndArray();
//
// Timestamps are ISO 8601 UTC strings (core::FormatIso8601); ids are decimal strings, since
// 64-bit integers do not survive JavaScript's numbers. Non-finite numbers are written as null.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "codec/json_writer.h"
#include "core/alert.h"
#include "core/reading.h"
#include "core/result.h"
#include "core/window.h"

namespace iot::codec {

// WriteReading writes {"id":"<id>","device_id":..,"ts":..,<sensors in order>,"lat":..,"lon":..};
// "id" only when `id` is given, "lat"/"lon" only when present.
void WriteReading(JsonWriter& w, const core::Reading& reading, std::optional<std::int64_t> id);

// WriteAlert writes {"id":"<id>","device_id","sensor_type","value","alert_type","severity",
// "message","timestamp","status","threshold","created_at","updated_at","resolved_at","count",
// "acknowledged","acknowledged_at","acknowledged_by","acknowledged_note"}; "resolved_at" is null
// while the alert is open, the last three are null until it is acknowledged.
void WriteAlert(JsonWriter& w, const core::Alert& alert);

// kMaxAckBy and kMaxAckNote bound the strings of an acknowledgement, in bytes.
inline constexpr std::size_t kMaxAckBy = 200;
inline constexpr std::size_t kMaxAckNote = 2000;

// ParseAlertAck reads the body of POST /alerts/{id}/ack: empty (or only whitespace), or a JSON
// object with optional string members "by" and "note" (null counts as absent). Returns an
// AlertAck with those two set (`at` is left for the caller), or kInvalidArgument with a message
// that starts with the offending member's name ("body" for the document itself): unknown
// members, other types, and strings over the bounds above are refused.
Result<core::AlertAck> ParseAlertAck(std::string_view body);

// WriteAggregate writes {"device_id","sensor_type","window":"1m","timestamp":<window start>,
// "count","sum","min","max","average"}; min and max are null for an empty accumulator.
void WriteAggregate(JsonWriter& w, const core::AggregateKey& key, const core::Accumulator& acc);

}  // namespace iot::codec
