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
const char* AlertStatusName(AlertStatus s);
std::optional<AlertStatus> ParseAlertStatus(std::string_view s);

// Alert is the stored document of one episode. Its id is the MessageId of the reading that
// opened it, so a replay produces the same id.
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
  friend bool operator==(const Alert&, const Alert&) = default;
};

// RuleSet finds the rule for a (device, sensor): a device-specific rule wins over a general one.
class RuleSet {
 public:
  RuleSet() = default;
  explicit RuleSet(std::vector<AlertRule> rules);

  // Defaults builds the seed's rules from its four thresholds.
  static RuleSet Defaults(double temp_min, double temp_max, double humidity_min,
                          double humidity_max);
  // FromYaml parses a RULES_FILE document (format in docs/alerts.md) and appends the defaults
  // for sensors it does not mention when `defaults` is given.
  static Result<RuleSet> FromYaml(std::string_view yaml_text);

  const AlertRule* Find(std::string_view device_id, std::string_view sensor_type) const;
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
// currently open (pending or active) alert of that pair, if any; `id` is the MessageId of the
// reading (the id of an alert it opens).
AlertTransition Evaluate(const AlertRule& rule, const std::optional<Alert>& open,
                         std::string_view device_id, std::string_view sensor_type, double value,
                         Timestamp ts, std::int64_t id);

}  // namespace iot::core
