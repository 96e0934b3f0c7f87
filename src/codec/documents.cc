// documents.cc: see documents.h.
#include "codec/documents.h"

#include <charconv>

#include "codec/reading_json.h"

namespace iot::codec {
namespace {

void IdString(JsonWriter& w, std::int64_t id) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, id);
  (void)ec;  // 24 bytes hold every int64
  w.String(std::string_view(buf, static_cast<std::size_t>(end - buf)));
}

void Time(JsonWriter& w, std::string_view key, core::Timestamp t) {
  w.Key(key);
  w.Time(t);
}

}  // namespace

void WriteReading(JsonWriter& w, const core::Reading& reading, std::optional<std::int64_t> id) {
  w.BeginObject();
  if (id) {
    w.Key("id");
    IdString(w, *id);
  }
  WriteReadingFields(w, reading);
  w.EndObject();
}

void WriteAlert(JsonWriter& w, const core::Alert& alert) {
  w.BeginObject();
  w.Key("id");
  IdString(w, alert.id);
  w.Key("device_id");
  w.String(alert.device_id);
  w.Key("sensor_type");
  w.String(alert.sensor_type);
  w.Key("value");
  w.Double(alert.value);
  w.Key("alert_type");
  w.String(alert.alert_type);
  w.Key("severity");
  w.String(alert.severity);
  w.Key("message");
  w.String(alert.message);
  Time(w, "timestamp", alert.timestamp);
  w.Key("status");
  w.String(core::AlertStatusName(alert.status));
  w.Key("threshold");
  w.Double(alert.threshold);
  Time(w, "created_at", alert.created_at);
  Time(w, "updated_at", alert.updated_at);
  w.Key("resolved_at");
  if (alert.resolved_at) {
    w.Time(*alert.resolved_at);
  } else {
    w.Null();
  }
  w.Key("count");
  w.Int(alert.count);
  w.EndObject();
}

void WriteAggregate(JsonWriter& w, const core::AggregateKey& key, const core::Accumulator& acc) {
  w.BeginObject();
  w.Key("device_id");
  w.String(key.device_id);
  w.Key("sensor_type");
  w.String(key.sensor_type);
  w.Key("window");
  w.String(core::FormatDuration(key.window));
  Time(w, "timestamp", key.window_start);
  w.Key("count");
  w.Int(acc.count);
  w.Key("sum");
  w.Double(acc.sum);
  w.Key("min");
  w.Double(acc.min);  // +inf for an empty accumulator: written as null
  w.Key("max");
  w.Double(acc.max);
  w.Key("average");
  w.Double(acc.Average());
  w.EndObject();
}

}  // namespace iot::codec
