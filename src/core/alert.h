// alert.h: threshold rules and the alert state machine.
//
// A rule bounds one sensor (optionally for one device): values below `min` or above `max`
// violate it. An alert is one episode of violation of one (device, sensor):
//
//   (none) --violation--> pending --violation lasting `for`--> active --back in range--> resolved
//   (none) --violation, for == 0--> active
//   pending --back in range--> (deleted: it never fired)
//
// "Back in range" uses the hysteresis band: an active alert resolves only when the value is
// within [min + hysteresis, max - hysteresis]. A violation in the other direction (low -> high)
// resolves the open alert and opens a new one. The machine is a pure function of the previous
// alert and the reading, so that replaying readings reproduces the same alerts.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/reading.h"
#include "core/result.h"
#include "core/time.h"

namespace iot::core {

// AlertRule bounds one sensor, for every device or for one. At least one of min / max is set and
// min <= max; hysteresis >= 0 (RuleSet::FromYaml enforces this for configured rules).
struct AlertRule {
  std::string sensor_type;
  std::string device_id;  // empty: every device
  std::optional<double> min;
  std::optional<double> max;
  std::string severity = "warning";
  Micros for_duration{0};
  double hysteresis = 0;
};

enum class AlertStatus { kPending, kActive, kResolved };
// AlertStatusName returns "pending", "active" or "resolved".
const char* AlertStatusName(AlertStatus s);
// ParseAlertStatus is the inverse of AlertStatusName; nullopt for any other text.
std::optional<AlertStatus> ParseAlertStatus(std::string_view s);

// AlertId is the id of an alert opened by sensor number `sensor_index` (its position in the
// reading, < 64) of the reading `message`: (message id << 6) | sensor_index. One reading may
// open an alert per sensor; a replay produces the same ids.
inline std::int64_t AlertId(MessageId message, std::size_t sensor_index) {
  return (message.value << 6) | static_cast<std::int64_t>(sensor_index & 63);
}

// Alert is the stored document of one episode. Its id is AlertId of the reading and sensor that
// opened it, so a replay produces the same id.
// AlertAck is a person's acknowledgement of a fired alert (POST /alerts/{id}/ack): "someone is
// on it". It belongs to the dashboard, not to the alerts worker, and is stored apart from the
// alert so that the worker's updates never erase it; it lasts for the alert's episode (a new
// episode is a new alert).
struct AlertAck {
  Timestamp at{};    // when it was acknowledged
  std::string by;    // who, as the client said (may be empty)
  std::string note;  // why or what is being done (may be empty)
  friend bool operator==(const AlertAck&, const AlertAck&) = default;
};

struct Alert {
  std::int64_t id = 0;
  std::string device_id;
  std::string sensor_type;
  double value = 0;          // the latest violating value
  std::string alert_type;    // "threshold_high" or "threshold_low"
  std::string severity;
  std::string message;
  Timestamp timestamp{};     // ts of the latest violating reading
  AlertStatus status = AlertStatus::kPending;
  double threshold = 0;      // the bound that was crossed
  Timestamp created_at{};    // ts of the first violating reading
  Timestamp updated_at{};    // ts of the latest reading that changed the alert
  std::optional<Timestamp> resolved_at;
  std::int64_t count = 0;    // violating readings in this episode
  // ack is filled in by the store's reads (Store::Acknowledge stores it); Apply ignores it.
  std::optional<AlertAck> ack;
  friend bool operator==(const Alert&, const Alert&) = default;
};

// RuleSet finds the rule for a (device, sensor): a device-specific rule wins over a general one.
class RuleSet {
 public:
  RuleSet() = default;
  explicit RuleSet(std::vector<AlertRule> rules);

  // Defaults builds the seed's rules from its four thresholds: general rules for
  // "temperature_c" and "humidity", severity "warning", no `for` and no hysteresis.
  static RuleSet Defaults(double temp_min, double temp_max, double humidity_min,
                          double humidity_max);
  // FromYaml parses a RULES_FILE document and returns its rules followed by those rules of
  // `defaults` whose sensor has no general (device-less) rule in the document:
  //
  //   rules:
  //     - sensor: temperature_c   # required, a valid sensor name
  //       device: dev-1           # optional: the rule applies to this device only
  //       min: -10                # optional, but at least one of min / max
  //       max: 50
  //       severity: critical      # optional, default "warning"
  //       for: 30s                # optional duration (core::ParseDuration, or 0), default 0
  //       hysteresis: 1.5         # optional, >= 0, default 0
  //
  // An empty document yields the defaults. Unknown keys, values of the wrong type, min > max, a
  // hysteresis band that leaves no value to resolve at (min + 2 * hysteresis > max), negative
  // hysteresis and two rules for the same (sensor, device) are kInvalidArgument errors whose
  // message names the rule (`rules[2].hysteresis: ...`).
  static Result<RuleSet> FromYaml(std::string_view yaml_text, const RuleSet& defaults);

  // Find returns the rule for `sensor_type` of `device_id`: a rule naming the device wins over a
  // general rule; nullptr when neither exists. The pointer lives as long as this RuleSet.
  const AlertRule* Find(std::string_view device_id, std::string_view sensor_type) const;
  // rules returns every rule, in the order given.
  const std::vector<AlertRule>& rules() const { return rules_; }

 private:
  std::vector<AlertRule> rules_;
};

// AlertTransition is the outcome of one reading for one (device, sensor).
struct AlertTransition {
  // Alerts to store (created, updated or resolved), at most two (resolve + open).
  std::vector<Alert> upserts;
  // Ids of pending alerts that never fired and must be deleted.
  std::vector<std::int64_t> deletes;
  // The open alert after this reading (pending or active), if any.
  std::optional<Alert> open;
};

// Evaluate advances the state machine of one (device, sensor) by one reading. `open` is the
// currently open (pending or active) alert of that pair, if any (a resolved alert passed here is
// treated as none); `id` is the MessageId of the reading (the id of an alert it opens).
//
// A value violates the rule when it is above `max` ("threshold_high") or below `min`
// ("threshold_low"). Then:
//   - no open alert: a new alert opens, active when for_duration is 0, pending otherwise;
//   - an open alert of the same direction: its value, timestamp, updated_at, count, message,
//     severity and threshold are refreshed; a pending one becomes active once
//     ts - created_at >= for_duration;
//   - an open alert of the other direction: an active one is resolved (resolved_at = ts), a
//     pending one is deleted (it never fired), and a new alert opens.
// A value that does not violate the rule deletes a pending alert, resolves an active one when it
// lies within [min + hysteresis, max - hysteresis], and otherwise changes nothing.
AlertTransition Evaluate(const AlertRule& rule, const std::optional<Alert>& open,
                         std::string_view device_id, std::string_view sensor_type, double value,
                         Timestamp ts, std::int64_t id);

}  // namespace iot::core
