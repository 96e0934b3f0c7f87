// alerter_test.cc: the alerts worker (services/alerter.h) over a FakeConsumer and a real
// SqliteStore: the alert lifecycle across restarts and crashes, pending alerts with `for`, and
// per-device rules.
//
// "Restart" is a new Alerter (and a new consumer holding the whole log, as the bus would) on the
// same store: it must resume from the store's checkpoint and open alerts, nothing else.
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "core/alert.h"
#include "core/reading.h"
#include "metrics/metrics.h"
#include "services/alerter.h"
#include "services_test_util.h"

namespace iot::services {
namespace {

using namespace std::chrono_literals;
using core::AlertStatus;
using testing::At;
using testing::FakeConsumer;
using testing::FlakyStore;
using testing::Must;
using testing::ReadingAt;

// Id is the id of an alert opened by sensor `sensor` (temperature_c is 0 in ReadingAt) of the
// reading at `offset`.
std::int64_t Id(std::int64_t offset, std::size_t sensor = 0) {
  return core::AlertId(core::MessageId::Of(0, offset), sensor);
}

core::RuleSet SeedRules() { return core::RuleSet::Defaults(-10, 50, 0, 100); }

core::AlertRule Rule(std::string sensor, std::optional<double> min, std::optional<double> max,
                     std::string device = {}) {
  core::AlertRule r;
  r.sensor_type = std::move(sensor);
  r.device_id = std::move(device);
  r.min = min;
  r.max = max;
  return r;
}

class AlerterTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_NE(store_, nullptr); }

  // RunOnce starts an Alerter with `rules` on the store, over a new consumer holding `log`,
  // waits until it committed the whole log and stops it: one run of the process.
  void RunOnce(const core::RuleSet& rules, const std::vector<core::Reading>& log) {
    FakeConsumer consumer;
    for (const auto& r : log) consumer.AppendReading(r);
    metrics::Registry registry;
    Alerter alerter(rules, consumer, *store_, registry);
    IOT_ASSERT_OK(alerter.Start());
    const auto end = static_cast<std::int64_t>(log.size());
    ASSERT_EQ(consumer.Seeks().size(), 1u);
    // Nothing is committed when the checkpoint already covers the whole log.
    if (consumer.Seeks()[0].second < end) {
      ASSERT_TRUE(consumer.WaitForCommit(end));
    }
    alerter.Stop();
  }

  // Listed returns the listed alerts of `status` (default: active and resolved), by id.
  std::map<std::int64_t, core::Alert> Listed(std::optional<AlertStatus> status = std::nullopt) {
    store::AlertQuery q;
    q.status = status;
    std::map<std::int64_t, core::Alert> out;
    for (auto& a : testing::AllAlerts(*store_, q)) out[a.id] = a;
    return out;
  }

  testing::TempDir dir_;
  std::unique_ptr<store::SqliteStore> store_ = testing::OpenStore(dir_);
};

TEST_F(AlerterTest, ARestartRestoresOpenAlertsAndContinuesTheSameEpisode) {
  std::vector<core::Reading> log = {ReadingAt("dev-1", At(0), 60)};
  RunOnce(SeedRules(), log);
  auto first = Listed();
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first.begin()->second.status, AlertStatus::kActive);

  log.push_back(ReadingAt("dev-1", At(10), 70));
  log.push_back(ReadingAt("dev-1", At(20), 20));
  RunOnce(SeedRules(), log);

  auto alerts = Listed();
  ASSERT_EQ(alerts.size(), 1u);  // the same episode, not a second alert
  const core::Alert& a = alerts.begin()->second;
  EXPECT_EQ(a.id, Id(0));
  EXPECT_EQ(a.status, AlertStatus::kResolved);
  EXPECT_EQ(a.count, 2);
  EXPECT_EQ(a.value, 70);
  EXPECT_EQ(a.created_at, At(0));
  EXPECT_EQ(a.timestamp, At(10));
  EXPECT_EQ(a.resolved_at, At(20));
  EXPECT_TRUE(Must(store_->OpenAlerts()).empty());
}

TEST_F(AlerterTest, ReplayingAfterACrashGivesTheSameAlertsAsAnUninterruptedRun) {
  const std::vector<core::Reading> log = {
      ReadingAt("dev-1", At(0), 60),  ReadingAt("dev-1", At(10), 65),
      ReadingAt("dev-1", At(20), 70), ReadingAt("dev-1", At(30), 20),  // resolves
      ReadingAt("dev-1", At(40), 55),                                  // a new episode
      ReadingAt("dev-2", At(50), 20, -5)};                             // humidity too low

  // The reference: one uninterrupted run on another store.
  testing::TempDir ref_dir;
  auto ref = testing::OpenStore(ref_dir);
  ASSERT_NE(ref, nullptr);
  {
    FakeConsumer consumer;
    for (const auto& r : log) consumer.AppendReading(r);
    metrics::Registry registry;
    Alerter alerter(SeedRules(), consumer, *ref, registry);
    IOT_ASSERT_OK(alerter.Start());
    ASSERT_TRUE(consumer.WaitForCommit(6));
  }
  auto expected = testing::AllAlerts(*ref, {});
  ASSERT_EQ(expected.size(), 3u);

  // The crash: the first two readings are applied, then the store fails until the process dies.
  {
    FlakyStore flaky(*store_);
    FakeConsumer consumer;
    metrics::Registry registry;
    Alerter alerter(SeedRules(), consumer, flaky, registry);
    IOT_ASSERT_OK(alerter.Start());
    consumer.AppendReading(log[0]);
    consumer.AppendReading(log[1]);
    ASSERT_TRUE(consumer.WaitForCommit(2));
    flaky.FailApplies(1000000);
    for (std::size_t i = 2; i < log.size(); ++i) consumer.AppendReading(log[i]);
    ASSERT_TRUE(flaky.WaitForFailures(1));
  }  // Stop abandons the batch in hand
  EXPECT_EQ(Must(store_->LoadCheckpoint("alerts", 0)), 2);

  // The restart replays the rest of the log (and only that) from the store's checkpoint.
  RunOnce(SeedRules(), log);
  EXPECT_EQ(testing::AllAlerts(*store_, {}), expected);
  EXPECT_EQ(Must(store_->OpenAlerts()), Must(ref->OpenAlerts()));

  // Running again over the same log changes nothing.
  RunOnce(SeedRules(), log);
  EXPECT_EQ(testing::AllAlerts(*store_, {}), expected);
}

TEST_F(AlerterTest, APendingAlertFiresAfterItsForDurationAlsoAcrossRestarts) {
  auto rule = Rule("temperature_c", std::nullopt, 50);
  rule.for_duration = 30s;
  const core::RuleSet rules({rule});

  std::vector<core::Reading> log = {ReadingAt("dev-1", At(0), 60)};
  RunOnce(rules, log);
  EXPECT_TRUE(Listed().empty());  // pending alerts are not listed by default
  auto pending = Listed(AlertStatus::kPending);
  ASSERT_EQ(pending.size(), 1u);
  EXPECT_EQ(pending.begin()->first, Id(0));
  EXPECT_EQ(Must(store_->OpenAlerts()).size(), 1u);
  EXPECT_EQ(Must(store_->GetStats(At(60))).alerts, 0);

  log.push_back(ReadingAt("dev-1", At(10), 61));  // 10 s: still pending
  log.push_back(ReadingAt("dev-1", At(30), 62));  // 30 s after the first violation: fires
  RunOnce(rules, log);
  EXPECT_TRUE(Listed(AlertStatus::kPending).empty());
  auto active = Listed(AlertStatus::kActive);
  ASSERT_EQ(active.size(), 1u);
  const core::Alert& a = active.begin()->second;
  EXPECT_EQ(a.id, Id(0));
  EXPECT_EQ(a.created_at, At(0));
  EXPECT_EQ(a.count, 3);
  EXPECT_EQ(a.value, 62);
  EXPECT_EQ(Must(store_->GetStats(At(60))).alerts, 1);
}

TEST_F(AlerterTest, APendingAlertThatNeverFiresLeavesNothing) {
  auto rule = Rule("temperature_c", std::nullopt, 50);
  rule.for_duration = 30s;
  const core::RuleSet rules({rule});

  std::vector<core::Reading> log = {ReadingAt("dev-1", At(0), 60)};
  RunOnce(rules, log);
  ASSERT_EQ(Listed(AlertStatus::kPending).size(), 1u);

  // One batch: back in range (deletes the stored pending alert), a short violation that opens
  // and closes a pending alert within the batch, then a new episode under its reading's id.
  log.push_back(ReadingAt("dev-1", At(10), 40));
  log.push_back(ReadingAt("dev-1", At(20), 70));
  log.push_back(ReadingAt("dev-1", At(25), 40));
  log.push_back(ReadingAt("dev-1", At(40), 70));
  RunOnce(rules, log);
  EXPECT_TRUE(Listed().empty());
  auto pending = Listed(AlertStatus::kPending);
  ASSERT_EQ(pending.size(), 1u);
  EXPECT_EQ(pending.begin()->first, Id(4));
  EXPECT_EQ(pending.begin()->second.count, 1);
  EXPECT_EQ(pending.begin()->second.created_at, At(40));
  auto open = Must(store_->OpenAlerts());
  ASSERT_EQ(open.size(), 1u);
  EXPECT_EQ(open[0].id, Id(4));
}

TEST_F(AlerterTest, ADeviceRuleWinsOverTheGeneralRuleForItsSensorOnly) {
  auto general = Rule("temperature_c", std::nullopt, 50);
  auto hot = Rule("temperature_c", std::nullopt, 80, "dev-hot");
  hot.severity = "critical";
  const core::RuleSet rules({general, hot, Rule("humidity", 0, 100)});

  RunOnce(rules, {ReadingAt("dev-hot", At(0), 60),    // within its own bound
                  ReadingAt("dev-cold", At(1), 60),   // above the general bound
                  ReadingAt("dev-hot", At(2), 90),    // above its own bound
                  ReadingAt("dev-hot", At(3), 70, 120)});  // back in range; humidity too high

  std::map<std::pair<std::string, std::string>, core::Alert> by_pair;
  for (auto& a : testing::AllAlerts(*store_, {})) {
    EXPECT_TRUE(by_pair.emplace(std::make_pair(a.device_id, a.sensor_type), a).second);
  }
  ASSERT_EQ(by_pair.size(), 3u);
  const auto& cold = by_pair.at({"dev-cold", "temperature_c"});
  EXPECT_EQ(cold.threshold, 50);
  EXPECT_EQ(cold.severity, "warning");
  EXPECT_EQ(cold.status, AlertStatus::kActive);
  const auto& hot_temp = by_pair.at({"dev-hot", "temperature_c"});
  EXPECT_EQ(hot_temp.id, Id(2));
  EXPECT_EQ(hot_temp.threshold, 80);
  EXPECT_EQ(hot_temp.severity, "critical");
  EXPECT_EQ(hot_temp.status, AlertStatus::kResolved);
  const auto& hot_humidity = by_pair.at({"dev-hot", "humidity"});
  EXPECT_EQ(hot_humidity.threshold, 100);
  EXPECT_EQ(hot_humidity.status, AlertStatus::kActive);
}

TEST_F(AlerterTest, AReadingThatBreaksTwoRulesOpensTwoAlerts) {
  // Alert ids are unique per (reading, sensor): the two episodes are stored side by side.
  std::vector<core::Reading> log = {ReadingAt("dev-1", At(0), 60, 120)};
  RunOnce(SeedRules(), log);
  std::map<std::string, core::Alert> by_sensor;
  for (auto& a : testing::AllAlerts(*store_, {})) by_sensor[a.sensor_type] = a;
  ASSERT_EQ(by_sensor.size(), 2u);
  EXPECT_EQ(by_sensor.at("temperature_c").status, AlertStatus::kActive);
  EXPECT_EQ(by_sensor.at("humidity").status, AlertStatus::kActive);
  EXPECT_NE(by_sensor.at("temperature_c").id, by_sensor.at("humidity").id);

  // Each episode then goes on by itself: the temperature comes back, the humidity does not.
  log.push_back(ReadingAt("dev-1", At(10), 20, 130));
  RunOnce(SeedRules(), log);
  by_sensor.clear();
  for (auto& a : testing::AllAlerts(*store_, {})) by_sensor[a.sensor_type] = a;
  ASSERT_EQ(by_sensor.size(), 2u);
  EXPECT_EQ(by_sensor.at("temperature_c").status, AlertStatus::kResolved);
  EXPECT_EQ(by_sensor.at("temperature_c").value, 60);
  EXPECT_EQ(by_sensor.at("humidity").status, AlertStatus::kActive);
  EXPECT_EQ(by_sensor.at("humidity").value, 130);
  EXPECT_EQ(by_sensor.at("humidity").count, 2);
}

TEST_F(AlerterTest, AnOpenAlertStaysAsItIsWhenItsRuleIsRemoved) {
  std::vector<core::Reading> log = {ReadingAt("dev-1", At(0), 60)};
  RunOnce(SeedRules(), log);
  log.push_back(ReadingAt("dev-1", At(10), 20));
  RunOnce(core::RuleSet({Rule("humidity", 0, 100)}), log);
  auto alerts = Listed();
  ASSERT_EQ(alerts.size(), 1u);
  EXPECT_EQ(alerts.begin()->second.status, AlertStatus::kActive);
  EXPECT_EQ(alerts.begin()->second.count, 1);
}

TEST_F(AlerterTest, OneBatchWritesAnEpisodeOnceAndSkipsUndecodableRecords) {
  FakeConsumer consumer;
  consumer.AppendReading(ReadingAt("dev-1", At(0), 60));
  consumer.Append("dev-1", "garbage");
  consumer.AppendReading(ReadingAt("dev-1", At(1), 62));
  consumer.AppendReading(ReadingAt("dev-1", At(2), 61));
  metrics::Registry registry;
  Alerter alerter(SeedRules(), consumer, *store_, registry);
  IOT_ASSERT_OK(alerter.Start());
  ASSERT_TRUE(consumer.WaitForCommit(4));
  alerter.Stop();
  EXPECT_EQ(testing::MetricValue(registry, "alerts_decode_errors_total"), 1);
  EXPECT_EQ(testing::MetricValue(registry, "alerts_open"), 1);
  auto alerts = Listed();
  ASSERT_EQ(alerts.size(), 1u);
  const core::Alert& a = alerts.begin()->second;
  EXPECT_EQ(a.id, Id(0));
  EXPECT_EQ(a.count, 3);
  EXPECT_EQ(a.value, 61);
  EXPECT_EQ(a.timestamp, At(2));
}

}  // namespace
}  // namespace iot::services
