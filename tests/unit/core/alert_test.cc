// Tests for core/alert.h: statuses, rule sets (incl. YAML) and the alert state machine.
#include "core/alert.h"

#include <gtest/gtest.h>

#include <map>

namespace iot::core {
namespace {

using std::chrono::seconds;

const Timestamp kT0 = FromUnixMicros(1'714'564'800'000'000);  // 2024-05-01T12:00:00Z

Timestamp T(int s) { return kT0 + seconds(s); }

AlertRule Rule(double min, double max, Micros for_duration = Micros{0}, double hysteresis = 0) {
  AlertRule r;
  r.sensor_type = "temperature_c";
  r.min = min;
  r.max = max;
  r.for_duration = for_duration;
  r.hysteresis = hysteresis;
  return r;
}

// Machine drives Evaluate for one (device, sensor) and applies its outcome to an in-memory store,
// as the alerts worker does.
class Machine {
 public:
  explicit Machine(AlertRule rule) : rule_(std::move(rule)) {}

  AlertTransition Feed(double value, Timestamp ts, std::int64_t id) {
    AlertTransition t = Evaluate(rule_, open_, "dev-1", "temperature_c", value, ts, id);
    for (const auto& a : t.upserts) store_[a.id] = a;
    for (auto id_to_delete : t.deletes) store_.erase(id_to_delete);
    open_ = t.open;
    return t;
  }

  const std::optional<Alert>& open() const { return open_; }
  const std::map<std::int64_t, Alert>& store() const { return store_; }

 private:
  AlertRule rule_;
  std::optional<Alert> open_;
  std::map<std::int64_t, Alert> store_;
};

TEST(AlertStatusTest, NamesRoundTrip) {
  for (auto s : {AlertStatus::kPending, AlertStatus::kActive, AlertStatus::kResolved}) {
    EXPECT_EQ(ParseAlertStatus(AlertStatusName(s)), s);
  }
  EXPECT_STREQ(AlertStatusName(AlertStatus::kActive), "active");
  EXPECT_EQ(ParseAlertStatus("Active"), std::nullopt);
  EXPECT_EQ(ParseAlertStatus(""), std::nullopt);
}

TEST(EvaluateTest, InRangeWithoutOpenAlertDoesNothing) {
  Machine m(Rule(-10, 50));
  auto t = m.Feed(20, T(0), 1);
  EXPECT_TRUE(t.upserts.empty());
  EXPECT_TRUE(t.deletes.empty());
  EXPECT_FALSE(t.open.has_value());
}

TEST(EvaluateTest, BoundsThemselvesAreInRange) {
  Machine m(Rule(-10, 50));
  EXPECT_FALSE(m.Feed(50, T(0), 1).open.has_value());
  EXPECT_FALSE(m.Feed(-10, T(1), 2).open.has_value());
}

TEST(EvaluateTest, ViolationOpensAnActiveAlertDescribingIt) {
  Machine m(Rule(-10, 50));
  auto t = m.Feed(55.2, T(0), 42);
  ASSERT_EQ(t.upserts.size(), 1u);
  const Alert& a = t.upserts[0];
  EXPECT_EQ(a.id, 42);
  EXPECT_EQ(a.device_id, "dev-1");
  EXPECT_EQ(a.sensor_type, "temperature_c");
  EXPECT_EQ(a.value, 55.2);
  EXPECT_EQ(a.alert_type, "threshold_high");
  EXPECT_EQ(a.severity, "warning");
  EXPECT_EQ(a.message, "temperature_c 55.2 above max 50");
  EXPECT_EQ(a.threshold, 50);
  EXPECT_EQ(a.status, AlertStatus::kActive);
  EXPECT_EQ(a.timestamp, T(0));
  EXPECT_EQ(a.created_at, T(0));
  EXPECT_EQ(a.updated_at, T(0));
  EXPECT_EQ(a.resolved_at, std::nullopt);
  EXPECT_EQ(a.count, 1);
  EXPECT_EQ(t.open, a);
}

TEST(EvaluateTest, LowViolationNamesTheMinimum) {
  AlertRule rule = Rule(0, 100);
  rule.sensor_type = "humidity";
  auto t = Evaluate(rule, std::nullopt, "dev-1", "humidity", -3, T(0), 7);
  ASSERT_EQ(t.upserts.size(), 1u);
  EXPECT_EQ(t.upserts[0].alert_type, "threshold_low");
  EXPECT_EQ(t.upserts[0].message, "humidity -3 below min 0");
  EXPECT_EQ(t.upserts[0].threshold, 0);
}

TEST(EvaluateTest, RepeatedViolationUpdatesTheSameAlert) {
  Machine m(Rule(-10, 50));
  m.Feed(55, T(0), 1);
  auto t = m.Feed(60.5, T(10), 2);
  ASSERT_EQ(t.upserts.size(), 1u);
  const Alert& a = t.upserts[0];
  EXPECT_EQ(a.id, 1);
  EXPECT_EQ(a.value, 60.5);
  EXPECT_EQ(a.count, 2);
  EXPECT_EQ(a.timestamp, T(10));
  EXPECT_EQ(a.updated_at, T(10));
  EXPECT_EQ(a.created_at, T(0));
  EXPECT_EQ(a.message, "temperature_c 60.5 above max 50");
  EXPECT_EQ(m.store().size(), 1u);
}

TEST(EvaluateTest, BackInRangeResolvesTheActiveAlert) {
  Machine m(Rule(-10, 50));
  m.Feed(55, T(0), 1);
  auto t = m.Feed(20, T(30), 2);
  ASSERT_EQ(t.upserts.size(), 1u);
  EXPECT_EQ(t.upserts[0].id, 1);
  EXPECT_EQ(t.upserts[0].status, AlertStatus::kResolved);
  EXPECT_EQ(t.upserts[0].resolved_at, T(30));
  EXPECT_EQ(t.upserts[0].updated_at, T(30));
  EXPECT_EQ(t.upserts[0].value, 55);  // the last violating value stays
  EXPECT_EQ(t.upserts[0].count, 1);
  EXPECT_FALSE(t.open.has_value());
  // The next violation is a new episode.
  auto next = m.Feed(51, T(40), 3);
  ASSERT_EQ(next.upserts.size(), 1u);
  EXPECT_EQ(next.upserts[0].id, 3);
  EXPECT_EQ(m.store().size(), 2u);
}

TEST(EvaluateTest, WithForDurationTheAlertIsPendingUntilItLastsLongEnough) {
  Machine m(Rule(-10, 50, seconds(30)));
  auto t = m.Feed(55, T(0), 1);
  ASSERT_EQ(t.upserts.size(), 1u);
  EXPECT_EQ(t.upserts[0].status, AlertStatus::kPending);
  EXPECT_EQ(m.Feed(56, T(29), 2).open->status, AlertStatus::kPending);
  auto fired = m.Feed(57, T(30), 3);
  ASSERT_EQ(fired.upserts.size(), 1u);
  EXPECT_EQ(fired.upserts[0].status, AlertStatus::kActive);
  EXPECT_EQ(fired.upserts[0].id, 1);
  EXPECT_EQ(fired.upserts[0].count, 3);
  EXPECT_EQ(fired.upserts[0].created_at, T(0));
}

TEST(EvaluateTest, PendingAlertBackInRangeIsDeleted) {
  Machine m(Rule(-10, 50, seconds(30), 2));
  m.Feed(55, T(0), 1);
  // 49 is inside [min, max] though not inside the hysteresis band: a pending alert never fired,
  // so returning to range is enough.
  auto t = m.Feed(49, T(10), 2);
  EXPECT_TRUE(t.upserts.empty());
  EXPECT_EQ(t.deletes, std::vector<std::int64_t>{1});
  EXPECT_FALSE(t.open.has_value());
  EXPECT_TRUE(m.store().empty());
}

TEST(EvaluateTest, ActiveAlertStaysOpenInsideTheHysteresisBand) {
  Machine m(Rule(-10, 50, Micros{0}, 1.5));
  m.Feed(55, T(0), 1);
  auto t = m.Feed(49, T(10), 2);  // in range, but above max - hysteresis = 48.5
  EXPECT_TRUE(t.upserts.empty());
  EXPECT_TRUE(t.deletes.empty());
  ASSERT_TRUE(t.open.has_value());
  EXPECT_EQ(t.open->status, AlertStatus::kActive);
  EXPECT_EQ(t.open->updated_at, T(0));  // nothing changed
  auto resolved = m.Feed(48.5, T(20), 3);
  ASSERT_EQ(resolved.upserts.size(), 1u);
  EXPECT_EQ(resolved.upserts[0].status, AlertStatus::kResolved);
  EXPECT_EQ(resolved.upserts[0].resolved_at, T(20));
}

TEST(EvaluateTest, LowAlertResolvesAboveMinPlusHysteresis) {
  Machine m(Rule(-10, 50, Micros{0}, 1));
  m.Feed(-12, T(0), 1);
  EXPECT_TRUE(m.Feed(-9.5, T(1), 2).open.has_value());
  auto t = m.Feed(-9, T(2), 3);
  ASSERT_EQ(t.upserts.size(), 1u);
  EXPECT_EQ(t.upserts[0].status, AlertStatus::kResolved);
}

TEST(EvaluateTest, DirectionFlipResolvesAndOpensANewAlert) {
  Machine m(Rule(-10, 50));
  m.Feed(-20, T(0), 1);
  auto t = m.Feed(60, T(5), 2);
  ASSERT_EQ(t.upserts.size(), 2u);
  EXPECT_EQ(t.upserts[0].id, 1);
  EXPECT_EQ(t.upserts[0].alert_type, "threshold_low");
  EXPECT_EQ(t.upserts[0].status, AlertStatus::kResolved);
  EXPECT_EQ(t.upserts[0].resolved_at, T(5));
  EXPECT_EQ(t.upserts[1].id, 2);
  EXPECT_EQ(t.upserts[1].alert_type, "threshold_high");
  EXPECT_EQ(t.upserts[1].status, AlertStatus::kActive);
  EXPECT_EQ(t.upserts[1].count, 1);
  EXPECT_EQ(t.open, t.upserts[1]);
}

TEST(EvaluateTest, DirectionFlipOfAPendingAlertDeletesIt) {
  Machine m(Rule(-10, 50, seconds(60)));
  m.Feed(-20, T(0), 1);
  auto t = m.Feed(60, T(5), 2);
  EXPECT_EQ(t.deletes, std::vector<std::int64_t>{1});
  ASSERT_EQ(t.upserts.size(), 1u);
  EXPECT_EQ(t.upserts[0].id, 2);
  EXPECT_EQ(t.upserts[0].status, AlertStatus::kPending);
  EXPECT_EQ(m.store().size(), 1u);
}

TEST(EvaluateTest, OneSidedRuleIgnoresTheOtherSide) {
  AlertRule rule;
  rule.sensor_type = "temperature_c";
  rule.max = 50;
  rule.hysteresis = 5;
  Machine m(rule);
  EXPECT_FALSE(m.Feed(-1000, T(0), 1).open.has_value());
  m.Feed(51, T(1), 2);
  EXPECT_TRUE(m.Feed(46, T(2), 3).open.has_value());
  EXPECT_FALSE(m.Feed(-1000, T(3), 4).open.has_value());
}

TEST(EvaluateTest, ResolvedAlertPassedAsOpenCountsAsNone) {
  Machine m(Rule(-10, 50));
  m.Feed(55, T(0), 1);
  Alert resolved = m.Feed(20, T(1), 2).upserts.at(0);
  auto t = Evaluate(Rule(-10, 50), resolved, "dev-1", "temperature_c", 60, T(2), 3);
  ASSERT_EQ(t.upserts.size(), 1u);
  EXPECT_EQ(t.upserts[0].id, 3);
}

TEST(EvaluateTest, ReplayingReadingsReproducesTheSameAlerts) {
  const AlertRule rule = Rule(-10, 50, seconds(10), 1);
  struct In {
    double v;
    int s;
  };
  const In readings[] = {{20, 0},  {55, 1},  {56, 5},  {57, 12}, {49.5, 13}, {48, 14},
                         {-20, 20}, {-25, 21}, {60, 40}, {61, 55}, {0, 60},   {51, 70}};
  auto run = [&] {
    Machine m(rule);
    std::int64_t id = 100;
    std::vector<AlertTransition> out;
    for (const auto& r : readings) out.push_back(m.Feed(r.v, T(r.s), id++));
    return std::make_pair(out, m.store());
  };
  auto [first, store1] = run();
  auto [second, store2] = run();
  ASSERT_EQ(first.size(), second.size());
  for (std::size_t i = 0; i < first.size(); ++i) {
    EXPECT_EQ(first[i].upserts, second[i].upserts) << i;
    EXPECT_EQ(first[i].deletes, second[i].deletes) << i;
    EXPECT_EQ(first[i].open, second[i].open) << i;
  }
  EXPECT_EQ(store1, store2);
  // The episodes: 55..57 fired (pending -> active), resolved at 48; -20 (pending) deleted by the
  // flip to 60; 60..61 fired, resolved at 0; 51 pending.
  ASSERT_EQ(store1.size(), 3u);
  EXPECT_EQ(store1.at(101).status, AlertStatus::kResolved);
  EXPECT_EQ(store1.at(101).count, 3);
  EXPECT_EQ(store1.at(101).resolved_at, T(14));
  EXPECT_EQ(store1.at(108).status, AlertStatus::kResolved);
  EXPECT_EQ(store1.at(108).resolved_at, T(60));
  EXPECT_EQ(store1.at(111).status, AlertStatus::kPending);
}

TEST(RuleSetTest, DefaultsCoverTemperatureAndHumidity) {
  RuleSet rules = RuleSet::Defaults(-10, 50, 0, 100);
  const AlertRule* t = rules.Find("dev-1", "temperature_c");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->min, -10);
  EXPECT_EQ(t->max, 50);
  EXPECT_EQ(t->severity, "warning");
  EXPECT_EQ(t->for_duration, Micros{0});
  const AlertRule* h = rules.Find("dev-1", "humidity");
  ASSERT_NE(h, nullptr);
  EXPECT_EQ(h->min, 0);
  EXPECT_EQ(h->max, 100);
  EXPECT_EQ(rules.Find("dev-1", "co2"), nullptr);
}

TEST(RuleSetTest, DeviceRuleWinsOverGeneralRule) {
  AlertRule general = Rule(-10, 50);
  AlertRule special = Rule(0, 30);
  special.device_id = "freezer-1";
  RuleSet rules({general, special});
  EXPECT_EQ(rules.Find("freezer-1", "temperature_c")->max, 30);
  EXPECT_EQ(rules.Find("other", "temperature_c")->max, 50);
}

const RuleSet kDefaults = RuleSet::Defaults(-10, 50, 0, 100);

TEST(RuleSetYamlTest, ParsesEveryKey) {
  auto rules = RuleSet::FromYaml(R"(
rules:
  - sensor: temperature_c
    device: dev-1
    min: -5
    max: 40.5
    severity: critical
    for: 30s
    hysteresis: 1.5
  - sensor: co2
    max: 1000
)",
                                 kDefaults);
  ASSERT_TRUE(rules.ok()) << rules.error().message;
  const AlertRule* r = rules->Find("dev-1", "temperature_c");
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->device_id, "dev-1");
  EXPECT_EQ(r->min, -5);
  EXPECT_EQ(r->max, 40.5);
  EXPECT_EQ(r->severity, "critical");
  EXPECT_EQ(r->for_duration, seconds(30));
  EXPECT_EQ(r->hysteresis, 1.5);
  const AlertRule* co2 = rules->Find("dev-9", "co2");
  ASSERT_NE(co2, nullptr);
  EXPECT_EQ(co2->min, std::nullopt);
  EXPECT_EQ(co2->max, 1000);
  EXPECT_EQ(co2->severity, "warning");
  EXPECT_EQ(co2->hysteresis, 0);
  // A device rule does not replace the default for other devices.
  ASSERT_NE(rules->Find("dev-2", "temperature_c"), nullptr);
  EXPECT_EQ(rules->Find("dev-2", "temperature_c")->max, 50);
  EXPECT_EQ(rules->Find("dev-2", "humidity")->max, 100);
}

TEST(RuleSetYamlTest, GeneralRuleReplacesTheDefaultOfItsSensorOnly) {
  auto rules = RuleSet::FromYaml("rules:\n  - sensor: humidity\n    min: 10\n    max: 90\n",
                                 kDefaults);
  ASSERT_TRUE(rules.ok()) << rules.error().message;
  EXPECT_EQ(rules->rules().size(), 2u);
  EXPECT_EQ(rules->Find("d", "humidity")->min, 10);
  EXPECT_EQ(rules->Find("d", "temperature_c")->max, 50);
}

TEST(RuleSetYamlTest, EmptyDocumentGivesTheDefaults) {
  for (const char* doc : {"", "rules:\n", "rules: []\n", "# nothing\n"}) {
    auto rules = RuleSet::FromYaml(doc, kDefaults);
    ASSERT_TRUE(rules.ok()) << doc << ": " << rules.error().message;
    EXPECT_EQ(rules->rules().size(), 2u) << doc;
  }
}

TEST(RuleSetYamlTest, ForZeroMeansImmediately) {
  auto rules = RuleSet::FromYaml("rules:\n  - {sensor: co2, max: 1, for: 0}\n", RuleSet());
  ASSERT_TRUE(rules.ok()) << rules.error().message;
  EXPECT_EQ(rules->Find("d", "co2")->for_duration, Micros{0});
}

struct YamlErrorCase {
  const char* name;
  const char* yaml;
  const char* expected_in_message;
};

const YamlErrorCase kYamlErrors[] = {
    {"NotYaml", "rules: [\n", "invalid YAML"},
    {"NotAMapping", "- a\n- b\n", "mapping"},
    {"UnknownTopLevelKey", "rule:\n  - sensor: x\n", "unknown top-level key"},
    {"RulesNotAList", "rules: 5\n", "list"},
    {"RuleNotAMapping", "rules:\n  - 5\n", "rules[0]"},
    {"MissingSensor", "rules:\n  - max: 5\n", "rules[0].sensor"},
    {"BadSensorName", "rules:\n  - {sensor: temp-c, max: 5}\n", "rules[0].sensor"},
    {"SensorNotScalar", "rules:\n  - {sensor: [a], max: 5}\n", "rules[0].sensor"},
    {"BadDevice", "rules:\n  - {sensor: co2, device: a/b, max: 5}\n", "rules[0].device"},
    {"NoBounds", "rules:\n  - {sensor: co2}\n", "rules[0].min"},
    {"MinNotNumber", "rules:\n  - {sensor: co2, min: low}\n", "rules[0].min"},
    {"MaxQuoted", "rules:\n  - {sensor: co2, max: \"5\"}\n", "rules[0].max"},
    {"MaxInfinite", "rules:\n  - {sensor: co2, max: .inf}\n", "rules[0].max"},
    {"MinAboveMax", "rules:\n  - {sensor: co2, min: 6, max: 5}\n", "rules[0].min"},
    {"NegativeHysteresis", "rules:\n  - {sensor: co2, max: 5, hysteresis: -1}\n",
     "rules[0].hysteresis"},
    {"HysteresisTooWide", "rules:\n  - {sensor: co2, min: 0, max: 5, hysteresis: 3}\n",
     "rules[0].hysteresis"},
    {"BadFor", "rules:\n  - {sensor: co2, max: 5, for: soon}\n", "rules[0].for"},
    {"EmptySeverity", "rules:\n  - {sensor: co2, max: 5, severity: \"\"}\n", "rules[0].severity"},
    {"UnknownKey", "rules:\n  - {sensor: co2, max: 5, maximum: 6}\n", "rules[0].maximum"},
    {"SecondRuleBad", "rules:\n  - {sensor: co2, max: 5}\n  - {sensor: co2, max: x}\n",
     "rules[1].max"},
    {"DuplicateRule", "rules:\n  - {sensor: co2, max: 5}\n  - {sensor: co2, max: 6}\n",
     "rules[1]"},
};

class RuleSetYamlErrorTest : public ::testing::TestWithParam<YamlErrorCase> {};

TEST_P(RuleSetYamlErrorTest, IsAnInvalidArgumentNamingTheRuleAndKey) {
  auto rules = RuleSet::FromYaml(GetParam().yaml, kDefaults);
  ASSERT_FALSE(rules.ok());
  EXPECT_EQ(rules.error().code, Errc::kInvalidArgument);
  EXPECT_NE(rules.error().message.find(GetParam().expected_in_message), std::string::npos)
      << rules.error().message;
}

INSTANTIATE_TEST_SUITE_P(Cases, RuleSetYamlErrorTest, ::testing::ValuesIn(kYamlErrors),
                         [](const auto& param_info) { return std::string(param_info.param.name); });

}  // namespace
}  // namespace iot::core
