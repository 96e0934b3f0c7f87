// alert.cc: threshold rules, their YAML form and the alert state machine (see alert.h).
#include "core/alert.h"

#include <yaml-cpp/yaml.h>

#include <charconv>
#include <cmath>
#include <set>
#include <utility>

namespace iot::core {
namespace {

// FormatNumber renders `v` in the shortest form that reads back as the same double.
std::string FormatNumber(double v) {
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  if (ec != std::errc()) return "?";
  return std::string(buf, end);
}

std::string Message(std::string_view sensor, double value, bool high, double threshold) {
  std::string m(sensor);
  m += ' ';
  m += FormatNumber(value);
  m += high ? " above max " : " below min ";
  m += FormatNumber(threshold);
  return m;
}

enum class Violation { kNone, kHigh, kLow };

Violation Check(const AlertRule& rule, double value) {
  if (rule.max && value > *rule.max) return Violation::kHigh;
  if (rule.min && value < *rule.min) return Violation::kLow;
  return Violation::kNone;
}

// InResolveBand reports whether `value` lies within [min + hysteresis, max - hysteresis].
bool InResolveBand(const AlertRule& rule, double value) {
  if (rule.min && value < *rule.min + rule.hysteresis) return false;
  if (rule.max && value > *rule.max - rule.hysteresis) return false;
  return true;
}

// Refresh records a violating reading on `a` (new or open, same direction).
void Refresh(Alert& a, const AlertRule& rule, Violation v, double value, Timestamp ts) {
  const bool high = v == Violation::kHigh;
  a.value = value;
  a.alert_type = high ? "threshold_high" : "threshold_low";
  a.severity = rule.severity;
  a.threshold = high ? *rule.max : *rule.min;
  a.message = Message(a.sensor_type, value, high, a.threshold);
  a.timestamp = ts;
  a.updated_at = ts;
  ++a.count;
  if (a.status == AlertStatus::kPending && ts - a.created_at >= rule.for_duration) {
    a.status = AlertStatus::kActive;
  }
}

Alert Open(const AlertRule& rule, std::string_view device_id, std::string_view sensor_type,
           Violation v, double value, Timestamp ts, std::int64_t id) {
  Alert a;
  a.id = id;
  a.device_id = std::string(device_id);
  a.sensor_type = std::string(sensor_type);
  a.status = AlertStatus::kPending;
  a.created_at = ts;
  Refresh(a, rule, v, value, ts);  // sets count = 1 and activates when for_duration is 0
  return a;
}

// --- YAML -------------------------------------------------------------------------------------

Error RuleError(std::size_t index, std::string_view key, std::string_view what) {
  std::string m = "rules[" + std::to_string(index) + "]";
  if (!key.empty()) {
    m += '.';
    m += key;
  }
  m += ": ";
  m += what;
  return MakeError(Errc::kInvalidArgument, std::move(m));
}

// ScalarString reads a scalar as text (quoted or plain).
std::optional<std::string> ScalarString(const YAML::Node& n) {
  if (!n.IsScalar()) return std::nullopt;
  return n.Scalar();
}

// ScalarNumber reads a plain (unquoted) scalar as a finite number.
std::optional<double> ScalarNumber(const YAML::Node& n) {
  if (!n.IsScalar() || n.Tag() == "!") return std::nullopt;
  const std::string& s = n.Scalar();
  std::string_view text = s;
  if (!text.empty() && text.front() == '+') text.remove_prefix(1);
  double v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty() || !std::isfinite(v)) {
    return std::nullopt;
  }
  return v;
}

Result<AlertRule> ParseRule(const YAML::Node& node, std::size_t index) {
  if (!node.IsMap()) return RuleError(index, "", "a rule must be a mapping");
  AlertRule rule;
  bool has_sensor = false;
  for (const auto& kv : node) {
    auto key_text = ScalarString(kv.first);
    if (!key_text) return RuleError(index, "", "keys must be plain names");
    const std::string& key = *key_text;
    const YAML::Node& v = kv.second;
    if (key == "sensor") {
      auto s = ScalarString(v);
      if (!s) return RuleError(index, key, "must be a string");
      if (!IsValidSensorName(*s, ReadingLimits{}.max_sensor_name_length)) {
        return RuleError(index, key, "'" + *s + "' is not a valid sensor name");
      }
      rule.sensor_type = *s;
      has_sensor = true;
    } else if (key == "device") {
      auto s = ScalarString(v);
      if (!s) return RuleError(index, key, "must be a string");
      if (!IsValidDeviceId(*s, ReadingLimits{}.max_device_id_length)) {
        return RuleError(index, key, "'" + *s + "' is not a valid device id");
      }
      rule.device_id = *s;
    } else if (key == "min" || key == "max") {
      auto d = ScalarNumber(v);
      if (!d) return RuleError(index, key, "must be a finite number");
      (key == "min" ? rule.min : rule.max) = *d;
    } else if (key == "severity") {
      auto s = ScalarString(v);
      if (!s || s->empty()) return RuleError(index, key, "must be a non-empty string");
      rule.severity = *s;
    } else if (key == "for") {
      auto s = ScalarString(v);
      if (!s) return RuleError(index, key, "must be a duration such as 30s or 5m");
      if (*s == "0") {
        rule.for_duration = Micros{0};
      } else if (auto d = ParseDuration(*s)) {
        rule.for_duration = *d;
      } else {
        return RuleError(index, key, "'" + *s + "' is not a duration such as 30s or 5m");
      }
    } else if (key == "hysteresis") {
      auto d = ScalarNumber(v);
      if (!d) return RuleError(index, key, "must be a finite number");
      if (*d < 0) return RuleError(index, key, "must be >= 0");
      rule.hysteresis = *d;
    } else {
      return RuleError(index, key, "unknown key");
    }
  }
  if (!has_sensor) return RuleError(index, "sensor", "is required");
  if (!rule.min && !rule.max) return RuleError(index, "min", "a rule needs min, max or both");
  if (rule.min && rule.max && *rule.min > *rule.max) {
    return RuleError(index, "min", "must not be greater than max");
  }
  if (rule.min && rule.max && *rule.min + 2 * rule.hysteresis > *rule.max) {
    return RuleError(index, "hysteresis",
                     "is too large: no value lies within [min + hysteresis, max - hysteresis]");
  }
  return rule;
}

}  // namespace

const char* AlertStatusName(AlertStatus s) {
  switch (s) {
    case AlertStatus::kPending: return "pending";
    case AlertStatus::kActive: return "active";
    case AlertStatus::kResolved: return "resolved";
  }
  return "unknown";
}

std::optional<AlertStatus> ParseAlertStatus(std::string_view s) {
  if (s == "pending") return AlertStatus::kPending;
  if (s == "active") return AlertStatus::kActive;
  if (s == "resolved") return AlertStatus::kResolved;
  return std::nullopt;
}

RuleSet::RuleSet(std::vector<AlertRule> rules) : rules_(std::move(rules)) {}

RuleSet RuleSet::Defaults(double temp_min, double temp_max, double humidity_min,
                          double humidity_max) {
  std::vector<AlertRule> rules(2);
  rules[0].sensor_type = "temperature_c";
  rules[0].min = temp_min;
  rules[0].max = temp_max;
  rules[1].sensor_type = "humidity";
  rules[1].min = humidity_min;
  rules[1].max = humidity_max;
  return RuleSet(std::move(rules));
}

Result<RuleSet> RuleSet::FromYaml(std::string_view yaml_text, const RuleSet& defaults) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml_text));
  } catch (const YAML::Exception& e) {
    return MakeError(Errc::kInvalidArgument, std::string("rules: invalid YAML: ") + e.what());
  }
  std::vector<AlertRule> rules;
  if (root.IsDefined() && !root.IsNull()) {
    if (!root.IsMap()) {
      return MakeError(Errc::kInvalidArgument, "rules: the document must be a mapping with 'rules'");
    }
    for (const auto& kv : root) {
      if (!kv.first.IsScalar() || kv.first.Scalar() != "rules") {
        return MakeError(Errc::kInvalidArgument,
                         "rules: unknown top-level key (only 'rules' is allowed)");
      }
    }
    const YAML::Node list = root["rules"];
    if (!list.IsNull()) {
      if (!list.IsSequence()) {
        return MakeError(Errc::kInvalidArgument, "rules: 'rules' must be a list");
      }
      std::set<std::pair<std::string, std::string>> seen;
      for (std::size_t i = 0; i < list.size(); ++i) {
        auto rule = ParseRule(list[i], i);
        if (!rule) return rule.error();
        if (!seen.emplace(rule->sensor_type, rule->device_id).second) {
          return RuleError(i, "sensor", "a rule for this sensor and device exists already");
        }
        rules.push_back(std::move(*rule));
      }
    }
  }
  for (const auto& d : defaults.rules()) {
    bool replaced = false;
    for (const auto& r : rules) {
      if (r.device_id.empty() && r.sensor_type == d.sensor_type) replaced = true;
    }
    if (!replaced) rules.push_back(d);
  }
  return RuleSet(std::move(rules));
}

const AlertRule* RuleSet::Find(std::string_view device_id, std::string_view sensor_type) const {
  const AlertRule* general = nullptr;
  for (const auto& r : rules_) {
    if (r.sensor_type != sensor_type) continue;
    if (r.device_id == device_id) return &r;
    if (r.device_id.empty() && general == nullptr) general = &r;
  }
  return general;
}

AlertTransition Evaluate(const AlertRule& rule, const std::optional<Alert>& open,
                         std::string_view device_id, std::string_view sensor_type, double value,
                         Timestamp ts, std::int64_t id) {
  AlertTransition out;
  const Violation v = Check(rule, value);
  const bool has_open = open && open->status != AlertStatus::kResolved;

  if (!has_open) {
    if (v != Violation::kNone) {
      out.open = Open(rule, device_id, sensor_type, v, value, ts, id);
      out.upserts.push_back(*out.open);
    }
    return out;
  }

  const bool open_high = open->alert_type == "threshold_high";
  if (v == Violation::kNone) {
    if (open->status == AlertStatus::kPending) {
      out.deletes.push_back(open->id);  // back in range before it fired
    } else if (InResolveBand(rule, value)) {
      Alert resolved = *open;
      resolved.status = AlertStatus::kResolved;
      resolved.resolved_at = ts;
      resolved.updated_at = ts;
      out.upserts.push_back(std::move(resolved));
    } else {
      out.open = open;  // inside the hysteresis band: nothing changes
    }
    return out;
  }

  if ((v == Violation::kHigh) == open_high) {
    Alert updated = *open;
    Refresh(updated, rule, v, value, ts);
    out.upserts.push_back(updated);
    out.open = std::move(updated);
    return out;
  }

  // The value crossed to the other side: close this episode and open the next.
  if (open->status == AlertStatus::kPending) {
    out.deletes.push_back(open->id);
  } else {
    Alert resolved = *open;
    resolved.status = AlertStatus::kResolved;
    resolved.resolved_at = ts;
    resolved.updated_at = ts;
    out.upserts.push_back(std::move(resolved));
  }
  out.open = Open(rule, device_id, sensor_type, v, value, ts, id);
  out.upserts.push_back(*out.open);
  return out;
}

}  // namespace iot::core
