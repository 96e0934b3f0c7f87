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

#include "codec/json_writer.h"
#include "core/alert.h"
#include "core/reading.h"
#include "core/window.h"

namespace iot::codec {

// WriteReading writes {"id":"<id>","device_id":..,"ts":..,<sensors in order>,"lat":..,"lon":..};
// "id" only when `id` is given, "lat"/"lon" only when present.
void WriteReading(JsonWriter& w, const core::Reading& reading, std::optional<std::int64_t> id);

// WriteAlert writes {"id":"<id>","device_id","sensor_type","value","alert_type","severity",
// "message","timestamp","status","threshold","created_at","updated_at","resolved_at","count"};
// "resolved_at" is null while the alert is open.
void WriteAlert(JsonWriter& w, const core::Alert& alert);

// WriteAggregate writes {"device_id","sensor_type","window":"1m","timestamp":<window start>,
// "count","sum","min","max","average"}; min and max are null for an empty accumulator.
void WriteAggregate(JsonWriter& w, const core::AggregateKey& key, const core::Accumulator& acc);

}  // namespace iot::codec
