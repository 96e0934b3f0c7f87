#include "services/worker.h"

#include <algorithm>
#include <condition_variable>
#include <mutex>

#include <pthread.h>

#include <spdlog/spdlog.h>

namespace iot::services {

Worker::Worker(WorkerOptions options, bus::Consumer& consumer, store::Store& store,
               metrics::Registry& registry)
    : options_(std::move(options)),
      consumer_(consumer),
      store_(store),
      records_(registry.AddCounter(options_.name + "_records_total",
                                   "Bus records applied to the store")),
      batches_(registry.AddCounter(options_.name + "_batches_total",
                                   "Write batches applied to the store")),
      retries_(registry.AddCounter(options_.name + "_store_retries_total",
                                   "Write batches retried after a store failure")),
      decode_errors_(registry.AddCounter(options_.name + "_decode_errors_total",
                                         "Bus records that could not be decoded (skipped)")),
      apply_seconds_(registry.AddHistogram(options_.name + "_apply_seconds",
                                           "Time to apply one write batch to the store",
                                           metrics::LatencyBuckets())),
      batch_records_(registry.AddHistogram(options_.name + "_batch_records",
                                           "Bus records per write batch",
                                           {1, 10, 100, 1000, 10000, 50000, 100000})),
      lag_(registry.AddGauge(options_.name + "_consumer_lag",
                             "Records on the bus not yet consumed by this worker")),
      position_(registry.AddGauge(options_.name + "_committed_offset",
                                  "The next bus offset to apply: everything before it is in "
                                  "the store")) {}

Worker::~Worker() { Stop(); }

Status Worker::Start() {
  auto cp = store_.LoadCheckpoint(options_.name, 0);
  if (!cp) return cp.status();
  std::int64_t next = cp->value_or(0);
  if (Status s = consumer_.Seek(0, next); !s) return s;
  if (Status s = Restore(); !s) return s;
  position_.Set(static_cast<double>(next));
  spdlog::info("{} worker starting at offset {}", options_.name, next);
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), options_.name.substr(0, 15).c_str());
    Run();
  });
  return Status::Ok();
}

void Worker::Stop() {
  stopping_.store(true);
  consumer_.Wakeup();
  if (thread_.joinable()) thread_.join();
}

void Worker::CountDecodeError(const bus::Record& record, const Error& error) {
  decode_errors_.Inc();
  spdlog::error("{}: skipping undecodable record partition={} offset={}: {}", options_.name,
                record.partition, record.offset, error.message);
}

void Worker::Run() {
  while (!stopping_.load()) {
    auto polled = consumer_.Poll(options_.max_batch, options_.poll_timeout);
    lag_.Set(static_cast<double>(consumer_.Lag()));
    if (!polled) {
      spdlog::warn("{}: poll failed: {}", options_.name, polled.error().message);
      std::this_thread::sleep_for(options_.min_backoff);
      continue;
    }
    auto& records = *polled;
    if (records.empty()) continue;
    if (records.size() < options_.min_batch && options_.linger.count() > 0) {
      Linger(records);
    }
    store::WriteBatch batch;
    Build(records, batch);
    const auto& last = records.back();
    batch.checkpoint = store::Checkpoint{options_.name, last.partition, last.offset + 1};
    if (!ApplyWithRetry(batch)) return;
    position_.Set(static_cast<double>(last.offset + 1));
    records_.Inc(static_cast<double>(records.size()));
    batches_.Inc();
    batch_records_.Observe(static_cast<double>(records.size()));
    if (Status s = consumer_.Commit(last.partition, last.offset + 1); !s) {
      spdlog::warn("{}: commit to the bus failed (the store has the checkpoint): {}",
                   options_.name, s.error().message);
    }
  }
}

void Worker::Linger(std::vector<bus::Record>& records) {
  auto deadline = std::chrono::steady_clock::now() + options_.linger;
  while (!stopping_.load() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (stopping_.load() || records.size() >= options_.max_batch) return;
  auto more = consumer_.Poll(options_.max_batch - records.size(), std::chrono::milliseconds(0));
  if (!more) return;  // the next Poll reports it; apply what we have
  records.insert(records.end(), std::make_move_iterator(more->begin()),
                 std::make_move_iterator(more->end()));
}

bool Worker::ApplyWithRetry(const store::WriteBatch& batch) {
  auto backoff = options_.min_backoff;
  while (true) {
    auto start = std::chrono::steady_clock::now();
    Status s = store_.Apply(batch);
    if (s.ok()) {
      apply_seconds_.Observe(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
      healthy_.store(true);
      return true;
    }
    healthy_.store(false);
    retries_.Inc();
    spdlog::warn("{}: store apply failed, retrying in {} ms: {}", options_.name, backoff.count(),
                 s.error().message);
    // Sleep in small steps so that Stop is not delayed by a long backoff.
    auto until = std::chrono::steady_clock::now() + backoff;
    while (std::chrono::steady_clock::now() < until) {
      if (stopping_.load()) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    backoff = std::min(backoff * 2, options_.max_backoff);
  }
}

}  // namespace iot::services
