// worker.h: the consume -> apply -> commit loop shared by the aggregator and the alerts worker.
//
// A Worker owns one thread. On Start it loads its checkpoint from the store and seeks the
// consumer there, so that it resumes exactly after the last batch the store applied. Then it
// loops: poll up to `max_batch` records, let the subclass turn them into a WriteBatch, apply the
// batch atomically with the new checkpoint, and tell the bus (Commit). When the store fails the
// same batch is retried with exponential backoff until it succeeds or the worker stops; nothing
// is consumed meanwhile. Stop wakes the poll, lets the batch in hand finish (or abandons its
// retries: the batch is replayed at the next start), and joins the thread.
#pragma once

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "bus/bus.h"
#include "core/result.h"
#include "metrics/metrics.h"
#include "store/store.h"

namespace iot::services {

struct WorkerOptions {
  std::string name;  // the consumer name of the checkpoint: "aggregator" or "alerts"
  std::size_t max_batch = 200000;
  std::chrono::milliseconds poll_timeout{200};
  // A poll that returns fewer than `min_batch` records waits up to `linger` for more, so that
  // a steady trickle is applied in fewer, larger transactions (less CPU per reading) at the
  // price of up to `linger` more staleness on the dashboard.
  std::size_t min_batch = 50000;
  std::chrono::milliseconds linger{200};
  std::chrono::milliseconds min_backoff{50};
  std::chrono::milliseconds max_backoff{5000};
};

class Worker {
 public:
  Worker(WorkerOptions options, bus::Consumer& consumer, store::Store& store,
         metrics::Registry& registry);
  virtual ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Start restores the position and the subclass's state, then starts the thread.
  Status Start();
  // Stop ends the thread; safe to call twice.
  void Stop();
  // Healthy is false while the store keeps failing.
  bool Healthy() const { return healthy_.load(); }

 protected:
  // Restore loads the subclass's state from the store (called by Start, before the thread).
  virtual Status Restore() { return Status::Ok(); }
  // Build appends the effect of `records` (in offset order) to `batch`.
  virtual void Build(const std::vector<bus::Record>& records, store::WriteBatch& batch) = 0;

  store::Store& store() { return store_; }
  const std::string& name() const { return options_.name; }
  // CountDecodeError records a message that could not be decoded (logged, counted, skipped).
  void CountDecodeError(const bus::Record& record, const Error& error);

 private:
  void Run();
  // Linger waits up to options_.linger, then appends what the bus has meanwhile to `records`.
  void Linger(std::vector<bus::Record>& records);
  // ApplyWithRetry returns false when the worker was stopped before the store took the batch.
  bool ApplyWithRetry(const store::WriteBatch& batch);

  WorkerOptions options_;
  bus::Consumer& consumer_;
  store::Store& store_;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> healthy_{true};
  // Probe.
  metrics::Counter& records_;
  metrics::Counter& batches_;
  metrics::Counter& retries_;
  metrics::Counter& decode_errors_;
  metrics::Histogram& apply_seconds_;
  metrics::Histogram& batch_records_;
  metrics::Gauge& lag_;
  metrics::Gauge& position_;
};

}  // namespace iot::services
