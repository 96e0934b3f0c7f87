// alerter.h: the alerts worker.
//
// Consumes readings from the bus, evaluates every sensor value against its rule (core/alert.h)
// and stores each alert's lifecycle (pending -> active -> resolved) atomically with the worker's
// checkpoint. Its state, the open alert of each (device, sensor), is restored from the store at
// start, so a replay after a crash reproduces exactly the same alerts. See worker.h for the loop.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <utility>

#include "core/alert.h"
#include "services/notifier.h"
#include "services/worker.h"

namespace iot::services {

class Alerter final : public Worker {
 public:
  // `notifier`, when given, receives every stored transition (opened, severity changed,
  // resolved) once its batch is in the store, and the open alerts at every Restore; it must
  // outlive the alerter.
  Alerter(core::RuleSet rules, bus::Consumer& consumer, store::Store& store,
          metrics::Registry& registry, WorkerTuning tuning = {}, Notifier* notifier = nullptr);
  ~Alerter() override { Stop(); }

 private:
  Status Restore() override;
  void Build(const std::vector<bus::Record>& records, store::WriteBatch& batch) override;
  void Applied() override;
  // Notice records the notification, if any, of one transition from `before` to `after`.
  void Notice(const std::optional<core::Alert>& before, const core::Alert& after);

  core::RuleSet rules_;
  // The open (pending or active) alert of each (device, sensor). Only the worker thread uses it
  // after Restore.
  std::map<std::pair<std::string, std::string>, core::Alert, std::less<>> open_;
  Notifier* notifier_;
  // The transitions of the batch Build last filled, in order; sent by Applied.
  std::vector<Notification> pending_;
  // Probe.
  metrics::Family<metrics::Counter>& transitions_;
  metrics::Gauge& open_gauge_;
};

}  // namespace iot::services
