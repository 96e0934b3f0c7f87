#include "services/alerter.h"

#include <algorithm>
#include <unordered_map>

#include "codec/wire.h"

namespace iot::services {

Alerter::Alerter(core::RuleSet rules, bus::Consumer& consumer, store::Store& store,
                 metrics::Registry& registry, WorkerTuning tuning, Notifier* notifier)
    : Worker(OptionsFor("alerts", tuning), consumer, store, registry, tuning.dead_letters),
      rules_(std::move(rules)),
      notifier_(notifier),
      transitions_(registry.AddCounterFamily(
          "alerts_transitions_total",
          "Alert documents written, by their status (deleted: a pending alert that never "
          "fired)",
          {"status"})),
      open_gauge_(registry.AddGauge("alerts_open", "Alerts currently pending or active")) {}

Status Alerter::Restore() {
  auto open = store().OpenAlerts();
  if (!open) return open.status();
  open_.clear();
  pending_.clear();
  if (notifier_) notifier_->SetActive(*open);
  for (auto& alert : *open) {
    auto key = std::make_pair(alert.device_id, alert.sensor_type);
    open_[std::move(key)] = std::move(alert);
  }
  open_gauge_.Set(static_cast<double>(open_.size()));
  return Status::Ok();
}

void Alerter::Notice(const std::optional<core::Alert>& before, const core::Alert& after) {
  // Pending alerts have not fired: they are not notified.
  if (after.status == core::AlertStatus::kResolved) {
    pending_.push_back(Notification{AlertEvent::kResolved, after, {}});
  } else if (after.status == core::AlertStatus::kActive) {
    const bool was_active =
        before && before->id == after.id && before->status == core::AlertStatus::kActive;
    if (!was_active) {
      pending_.push_back(Notification{AlertEvent::kOpened, after, {}});
    } else if (before->severity != after.severity) {
      pending_.push_back(Notification{AlertEvent::kSeverityChanged, after, before->severity});
    }
  }
}

void Alerter::Applied() {
  if (!notifier_) return;
  for (const auto& n : pending_) notifier_->Notify(n);
  pending_.clear();
}

void Alerter::Build(const std::vector<bus::Record>& records, store::WriteBatch& batch) {
  // The latest version of every alert touched by this batch, by id.
  std::unordered_map<std::int64_t, std::size_t> upsert_index;
  pending_.clear();
  for (const auto& record : records) {
    // MQTT input ingest could not accept: the aggregator keeps it as a dead letter.
    if (codec::IsRejected(record.payload)) continue;
    auto decoded = codec::DecodePayload(record.payload);
    if (!decoded) {
      DeadLetter(record, "undecodable: " + decoded.error().message, batch);
      continue;
    }
    const core::Reading& reading = *decoded;
    const auto message_id = IdOf(record);
    for (std::size_t index = 0; index < reading.sensors.size(); ++index) {
      const auto& sensor = reading.sensors[index];
      const core::AlertRule* rule = rules_.Find(reading.device_id, sensor.name);
      auto key = std::make_pair(reading.device_id, sensor.name);
      auto it = open_.find(key);
      if (rule == nullptr && it == open_.end()) continue;
      std::optional<core::Alert> current;
      if (it != open_.end()) current = it->second;
      if (rule == nullptr) continue;  // the rule was removed: the open alert stays as it is
      auto t = core::Evaluate(*rule, current, reading.device_id, sensor.name, sensor.value,
                              reading.ts, core::AlertId(message_id, index));
      for (auto& alert : t.upserts) {
        if (notifier_) Notice(current, alert);
        transitions_.With({core::AlertStatusName(alert.status)}).Inc();
        auto [pos, inserted] = upsert_index.try_emplace(alert.id, batch.alert_upserts.size());
        if (inserted) {
          batch.alert_upserts.push_back(std::move(alert));
        } else {
          batch.alert_upserts[pos->second] = std::move(alert);
        }
      }
      for (auto deleted : t.deletes) {
        transitions_.With({"deleted"}).Inc();
        batch.alert_deletes.push_back(deleted);
      }
      if (t.open) {
        open_[std::move(key)] = std::move(*t.open);
      } else if (it != open_.end()) {
        open_.erase(it);
      }
    }
  }
  // A pending alert created and deleted within this batch must not be written.
  if (!batch.alert_deletes.empty()) {
    std::erase_if(batch.alert_upserts, [&](const core::Alert& a) {
      return std::find(batch.alert_deletes.begin(), batch.alert_deletes.end(), a.id) !=
             batch.alert_deletes.end();
    });
  }
  open_gauge_.Set(static_cast<double>(open_.size()));
}

}  // namespace iot::services
