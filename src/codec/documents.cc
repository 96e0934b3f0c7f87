// documents.cc: see documents.h.
#include "codec/documents.h"

#include <charconv>

#include <simdjson.h>

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
  w.Key("acknowledged");
  w.Bool(alert.ack.has_value());
  w.Key("acknowledged_at");
  if (alert.ack) {
    w.Time(alert.ack->at);
  } else {
    w.Null();
  }
  w.Key("acknowledged_by");
  if (alert.ack) {
    w.String(alert.ack->by);
  } else {
    w.Null();
  }
  w.Key("acknowledged_note");
  if (alert.ack) {
    w.String(alert.ack->note);
  } else {
    w.Null();
  }
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

Result<core::AlertAck> ParseAlertAck(std::string_view body) {
  core::AlertAck ack;
  if (body.find_first_not_of(" \t\r\n") == std::string_view::npos) return ack;
  simdjson::dom::parser parser;
  simdjson::padded_string padded(body);
  simdjson::dom::element doc;
  if (parser.parse(padded).get(doc) != simdjson::SUCCESS) {
    return MakeError(Errc::kInvalidArgument, "body: not valid JSON");
  }
  simdjson::dom::object object;
  if (doc.get_object().get(object) != simdjson::SUCCESS) {
    return MakeError(Errc::kInvalidArgument, "body: must be a JSON object");
  }
  for (auto [key, value] : object) {
    std::string* out = key == "by" ? &ack.by : key == "note" ? &ack.note : nullptr;
    const std::size_t max = key == "by" ? kMaxAckBy : kMaxAckNote;
    if (!out) {
      return MakeError(Errc::kInvalidArgument,
                       std::string(key) + ": unknown member (only \"by\" and \"note\")");
    }
    if (value.is_null()) continue;
    std::string_view text;
    if (value.get_string().get(text) != simdjson::SUCCESS) {
      return MakeError(Errc::kInvalidArgument, std::string(key) + ": must be a string");
    }
    if (text.size() > max) {
      return MakeError(Errc::kInvalidArgument,
                       std::string(key) + ": at most " + std::to_string(max) + " bytes");
    }
    *out = std::string(text);
  }
  return ack;
}

}  // namespace iot::codec
