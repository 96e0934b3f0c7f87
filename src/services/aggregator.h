// aggregator.h: the aggregator worker.
//
// Consumes readings from the bus and, in one atomic write per batch: stores every raw reading
// (idempotent on its MessageId), folds them into the devices table, and merges per-window deltas
// (count, sum, min, max) into the tumbling-window aggregates of every (device, sensor, window).
// A late or out-of-order reading updates the window it belongs to. See worker.h for the loop.
#pragma once

#include <vector>

#include "core/time.h"
#include "services/worker.h"

namespace iot::services {

class Aggregator final : public Worker {
 public:
  Aggregator(std::vector<core::Micros> windows, bus::Consumer& consumer, store::Store& store,
             metrics::Registry& registry, const core::Clock& clock, WorkerTuning tuning = {});
  ~Aggregator() override { Stop(); }

 private:
  void Build(const std::vector<bus::Record>& records, store::WriteBatch& batch) override;

  std::vector<core::Micros> windows_;
  const core::Clock& clock_;
};

}  // namespace iot::services
