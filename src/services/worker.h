// worker.h: the consume -> apply -> commit loop shared by the aggregator and the alerts worker.
//
// A Worker owns one thread. It subscribes its consumer with itself as the AssignmentListener: each
// partition it is given resumes at the checkpoint the store holds for (worker, partition), so it
// continues exactly after the last batch the store applied, whoever applied it. Then it loops:
// poll up to `max_batch` records, turn each partition's records into a WriteBatch (the subclass's
// Build), apply it atomically with that partition's new checkpoint, and tell the bus (Commit).
//
// Failures:
//  - the store is unavailable (an outage): the same batch is retried with exponential backoff
//    until it succeeds or the worker stops; nothing is consumed meanwhile (the partition pauses);
//  - the store refuses the batch for another reason: retried `max_retries` times with backoff and
//    jitter, then its records are applied one at a time, and a record the store still refuses
//    becomes a dead letter (reason "store: ...", attempts = 1 + max_retries);
//  - a record that cannot be decoded or is invalid becomes a dead letter at once (attempts 1):
//    decoding is deterministic, trying again cannot change the outcome;
//  - the store reports that another worker applied part of the range (kAborted, after a
//    rebalance this worker missed): the batch is dropped and the partition re-read from the
//    stored checkpoint.
// Dead letters are stored with the batch's checkpoint (GET /dlq) and, when a dead-letter producer
// is given (Kafka's DLQ_TOPIC), published there first. Processing never stops on one record.
//
// When partitions are revoked (a rebalance) the worker first applies what it polled from them.
// Stop wakes the poll, lets the batch in hand finish (or abandons its retries: the batch is
// replayed at the next start), joins the thread and closes the consumer.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bus/bus.h"
#include "core/reading.h"
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
  // MAX_RETRIES: how often a batch the store refuses (not an outage) is tried again.
  int max_retries = 3;
  // The source topic named in dead letters (TELEMETRY_TOPIC; "embedded" for the embedded bus).
  std::string topic = "embedded";
};

// WorkerTuning is what the aggregator and alerts worker take from the configuration.
struct WorkerTuning {
  std::size_t max_batch = 200000;
  int max_retries = 3;
  std::string topic = "embedded";
  bus::Producer* dead_letters = nullptr;  // DLQ_TOPIC (Kafka), or none
  std::optional<std::chrono::milliseconds> linger;  // the default when unset
};

// OptionsFor is the WorkerOptions of worker `name` with `tuning` applied.
WorkerOptions OptionsFor(std::string name, const WorkerTuning& tuning);

class Worker : private bus::AssignmentListener {
 public:
  // `dead_letters`, when given, receives every dead letter (as JSON, see dead_letter.h) before
  // the checkpoint moves past it. Everything given must outlive the worker.
  Worker(WorkerOptions options, bus::Consumer& consumer, store::Store& store,
         metrics::Registry& registry, bus::Producer* dead_letters = nullptr);
  ~Worker() override;
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Start restores the subclass's state, subscribes, then starts the thread.
  Status Start();
  // Stop ends the thread and closes the consumer; safe to call twice.
  void Stop();
  // Healthy is false while the store keeps failing.
  bool Healthy() const { return healthy_.load(); }

 protected:
  // Restore loads the subclass's state from the store: called by Start, and again on the worker
  // thread whenever partitions are assigned or a batch could not be applied (the subclass's
  // state may then hold effects the store does not have).
  virtual Status Restore() { return Status::Ok(); }
  // Build appends the effect of `records` (one partition, in offset order) to `batch`; a record
  // it cannot process goes to DeadLetter.
  virtual void Build(const std::vector<bus::Record>& records, store::WriteBatch& batch) = 0;
  // Applied is called on the worker thread after the store has applied the batch Build last
  // filled (once per applied batch; a batch the store refused is rebuilt before it is tried
  // again), for effects that must follow the commit, such as notifications.
  virtual void Applied() {}

  store::Store& store() { return store_; }
  const std::string& name() const { return options_.name; }
  // DeadLetter adds `record` to the batch's dead letters with `reason` (logged).
  void DeadLetter(const bus::Record& record, std::string reason, store::WriteBatch& batch);
  // RejectedInput adds a rejected-input record (codec/wire.h: what MQTT ingestion could not
  // accept) to the batch's dead letters as consumer "ingest", with the MQTT topic as its topic,
  // the original payload and the reason ingest gave. Only the aggregator calls it, so that each
  // is stored once.
  void RejectedInput(const bus::Record& record, store::WriteBatch& batch);
  // IdOf is the record's message id: its position, or the original one of a replayed dead
  // letter (so that it is stored once).
  static core::MessageId IdOf(const bus::Record& record) {
    return record.routing.id ? core::MessageId{*record.routing.id}
                             : core::MessageId::Of(record.partition, record.offset);
  }

 private:
  enum class Outcome { kApplied, kAborted, kRefused, kStopped };

  // bus::AssignmentListener, called on the worker thread from within Poll.
  Result<std::optional<std::int64_t>> StartOffset(std::int32_t partition) override;
  void Assigned(const std::vector<std::int32_t>& partitions) override;
  void Revoked(const std::vector<std::int32_t>& partitions) override;

  void Run();
  // Linger waits up to options_.linger, then appends what the bus has meanwhile to held_.
  void Linger();
  // Flush applies the held records of `partitions` (all when null), one batch per partition;
  // false when the worker was stopped first.
  bool Flush(const std::vector<std::int32_t>* partitions);
  // ApplyPartition applies `records` of one partition, dead-lettering what the store refuses.
  bool ApplyPartition(std::int32_t partition, std::vector<bus::Record>& records);
  // Attempt builds and applies `records` as one batch with its checkpoint.
  Outcome Attempt(std::int32_t partition, const std::vector<bus::Record>& records,
                  Error* refusal);
  // Commit applies `batch`: outages are retried until Stop, other refusals max_retries times.
  Outcome Commit(store::WriteBatch& batch, Error* refusal);
  // Publish sends the batch's dead letters to the dead-letter producer, retrying until Stop.
  bool Publish(const store::WriteBatch& batch);
  // Resync re-reads the checkpoint of `partition` after kAborted and seeks there.
  void Resync(std::int32_t partition);
  // Sleep waits `d` in small steps; false when the worker is stopping.
  bool Sleep(std::chrono::milliseconds d);
  std::chrono::milliseconds Jitter(std::chrono::milliseconds backoff);
  void UpdateLag();

  WorkerOptions options_;
  bus::Consumer& consumer_;
  store::Store& store_;
  bus::Producer* dead_letter_producer_;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> healthy_{true};
  bool stopped_ = false;
  // The partitions this worker reads, each with the offset its next batch starts from (the
  // stored checkpoint, then the end of each applied batch). The worker thread only.
  std::map<std::int32_t, std::int64_t> next_;
  std::vector<bus::Record> held_;  // polled but not yet applied
  std::minstd_rand random_{std::random_device{}()};
  // Probe.
  metrics::Counter& records_;
  metrics::Counter& batches_;
  metrics::Counter& retries_;
  metrics::Counter& decode_errors_;
  metrics::Family<metrics::Counter>& dead_letters_;
  metrics::Counter& aborted_;
  metrics::Counter& rebalances_;
  metrics::Histogram& apply_seconds_;
  metrics::Histogram& batch_records_;
  metrics::Family<metrics::Gauge>& lag_;
  metrics::Family<metrics::Gauge>& position_;
};

}  // namespace iot::services
