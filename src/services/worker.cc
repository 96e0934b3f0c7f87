#include "services/worker.h"

#include <algorithm>
#include <future>

#include <pthread.h>

#include <spdlog/spdlog.h>

#include "codec/wire.h"
#include "services/dead_letter.h"

namespace iot::services {

// kRejectedConsumer is the consumer of the dead letters MQTT ingestion rejected (wire.h).
constexpr const char* kRejectedConsumer = "ingest";
namespace {

bool IsOutage(Errc code) {
  return code == Errc::kUnavailable || code == Errc::kResourceExhausted ||
         code == Errc::kDeadlineExceeded;
}

}  // namespace

WorkerOptions OptionsFor(std::string name, const WorkerTuning& tuning) {
  WorkerOptions o;
  o.name = std::move(name);
  o.max_batch = tuning.max_batch;
  o.max_retries = tuning.max_retries;
  o.topic = tuning.topic;
  if (tuning.linger) o.linger = *tuning.linger;
  return o;
}

Worker::Worker(WorkerOptions options, bus::Consumer& consumer, store::Store& store,
               metrics::Registry& registry, bus::Producer* dead_letters)
    : options_(std::move(options)),
      consumer_(consumer),
      store_(store),
      dead_letter_producer_(dead_letters),
      records_(registry.AddCounter(options_.name + "_records_total",
                                   "Bus records applied to the store")),
      batches_(registry.AddCounter(options_.name + "_batches_total",
                                   "Write batches applied to the store")),
      retries_(registry.AddCounter(options_.name + "_store_retries_total",
                                   "Write batches retried after a store failure")),
      decode_errors_(registry.AddCounter(
          options_.name + "_decode_errors_total",
          "Bus records that could not be decoded or were invalid (dead-lettered)")),
      dead_letters_(registry.AddCounterFamily(
          options_.name + "_dead_letters_total",
          "Records given up on and kept as dead letters, by cause (undecodable, store)",
          {"cause"})),
      aborted_(registry.AddCounter(options_.name + "_aborted_batches_total",
                                   "Batches dropped because another worker had applied part of "
                                   "their range (re-read from the stored checkpoint)")),
      rebalances_(registry.AddCounter(options_.name + "_rebalances_total",
                                      "Partition assignments received from the bus")),
      apply_seconds_(registry.AddHistogram(options_.name + "_apply_seconds",
                                           "Time to apply one write batch to the store",
                                           metrics::LatencyBuckets())),
      batch_records_(registry.AddHistogram(options_.name + "_batch_records",
                                           "Bus records per write batch",
                                           {1, 10, 100, 1000, 10000, 50000, 100000})),
      lag_(registry.AddGaugeFamily(options_.name + "_consumer_lag",
                                   "Records on the bus not yet consumed by this worker, per "
                                   "assigned partition",
                                   {"partition"})),
      position_(registry.AddGaugeFamily(options_.name + "_committed_offset",
                                        "The next bus offset to apply: everything before it is "
                                        "in the store",
                                        {"partition"})) {}

Worker::~Worker() { Stop(); }

Status Worker::Start() {
  if (Status s = Restore(); !s) return s;
  if (Status s = consumer_.Subscribe(*this); !s) return s;
  spdlog::info("{} worker started", options_.name);
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), options_.name.substr(0, 15).c_str());
    Run();
  });
  return Status::Ok();
}

void Worker::Stop() {
  if (stopped_) return;
  stopped_ = true;
  stopping_.store(true);
  consumer_.Wakeup();
  if (thread_.joinable()) thread_.join();
  consumer_.Close();
}

// ---- assignment -----------------------------------------------------------------------------

Result<std::optional<std::int64_t>> Worker::StartOffset(std::int32_t partition) {
  auto cp = store_.LoadCheckpoint(options_.name, partition);
  if (!cp) return cp.error();
  // No checkpoint: the store has nothing of this partition, so read all of it.
  const std::int64_t next = cp->value_or(0);
  next_[partition] = next;
  position_.With({std::to_string(partition)}).Set(static_cast<double>(next));
  return std::optional<std::int64_t>(next);
}

void Worker::Assigned(const std::vector<std::int32_t>& partitions) {
  rebalances_.Inc();
  for (auto p : partitions) {
    spdlog::info("{}: partition {} starts at offset {}", options_.name, p, next_[p]);
  }
  // Another worker may have changed the open alerts of these partitions while they were away.
  while (!stopping_.load()) {
    Status s = Restore();
    if (s) break;
    spdlog::warn("{}: cannot restore state after an assignment, retrying: {}", options_.name,
                 s.error().message);
    Sleep(options_.min_backoff * 10);
  }
}

void Worker::Revoked(const std::vector<std::int32_t>& partitions) {
  // Finish what was polled from them before another worker starts on them.
  Flush(&partitions);
  for (auto p : partitions) {
    next_.erase(p);
    lag_.With({std::to_string(p)}).Set(0);
  }
}

// ---- the loop -------------------------------------------------------------------------------

void Worker::Run() {
  while (!stopping_.load()) {
    auto polled = consumer_.Poll(options_.max_batch, options_.poll_timeout);
    UpdateLag();
    if (!polled) {
      spdlog::warn("{}: poll failed: {}", options_.name, polled.error().message);
      Sleep(options_.min_backoff);
      continue;
    }
    if (polled->empty()) continue;
    held_.insert(held_.end(), std::make_move_iterator(polled->begin()),
                 std::make_move_iterator(polled->end()));
    if (held_.size() < options_.min_batch && options_.linger.count() > 0) Linger();
    if (!Flush(nullptr)) return;
  }
}

void Worker::UpdateLag() {
  for (const auto& l : consumer_.Lags()) {
    lag_.With({std::to_string(l.partition)}).Set(static_cast<double>(l.lag));
  }
}

void Worker::Linger() {
  if (!Sleep(options_.linger) || held_.size() >= options_.max_batch) return;
  auto more = consumer_.Poll(options_.max_batch - held_.size(), std::chrono::milliseconds(0));
  if (!more) return;  // the next Poll reports it; apply what we have
  held_.insert(held_.end(), std::make_move_iterator(more->begin()),
               std::make_move_iterator(more->end()));
}

bool Worker::Flush(const std::vector<std::int32_t>* partitions) {
  // Split held_ by partition, keeping each partition's order; keep what is not flushed now.
  std::map<std::int32_t, std::vector<bus::Record>> by_partition;
  std::vector<bus::Record> kept;
  for (auto& r : held_) {
    bool selected = !partitions || std::find(partitions->begin(), partitions->end(),
                                             r.partition) != partitions->end();
    if (selected) {
      by_partition[r.partition].push_back(std::move(r));
    } else {
      kept.push_back(std::move(r));
    }
  }
  held_ = std::move(kept);
  for (auto& [partition, records] : by_partition) {
    auto next = next_.find(partition);
    if (next == next_.end()) continue;  // not ours (any more)
    // Records before the position were applied already (a seek back re-delivers them).
    std::erase_if(records, [&](const bus::Record& r) { return r.offset < next->second; });
    if (records.empty()) continue;
    if (!ApplyPartition(partition, records)) return false;
  }
  return true;
}

bool Worker::ApplyPartition(std::int32_t partition, std::vector<bus::Record>& records) {
  Error refusal;
  switch (Attempt(partition, records, &refusal)) {
    case Outcome::kApplied:
      return true;
    case Outcome::kAborted:
      Resync(partition);
      return true;
    case Outcome::kStopped:
      return false;
    case Outcome::kRefused:
      break;
  }
  // The store keeps refusing the batch: find the records it refuses, one at a time.
  spdlog::error("{}: the store refused a batch of partition {} ({} records) {} times: {}; "
                "applying its records one by one",
                options_.name, partition, records.size(), 1 + options_.max_retries,
                refusal.message);
  for (const auto& record : records) {
    if (record.offset < next_[partition]) continue;
    std::vector<bus::Record> one{record};
    switch (Attempt(partition, one, &refusal)) {
      case Outcome::kApplied:
        continue;
      case Outcome::kAborted:
        Resync(partition);
        return true;
      case Outcome::kStopped:
        return false;
      case Outcome::kRefused:
        break;
    }
    // Give up on this record: keep it as a dead letter, with the checkpoint past it.
    store::WriteBatch batch;
    store::DeadLetter dl;
    dl.consumer = options_.name;
    dl.topic = options_.topic;
    dl.partition = record.partition;
    dl.offset = record.offset;
    dl.key = record.key;
    dl.payload = record.payload;
    dl.reason = "store: " + refusal.message;
    dl.attempts = 1 + options_.max_retries;
    dl.failed_at = core::SystemClock().Now();
    spdlog::error("{}: dead letter partition={} offset={}: {}", options_.name, record.partition,
                  record.offset, dl.reason);
    batch.dead_letters.push_back(std::move(dl));
    batch.checkpoint =
        store::Checkpoint{options_.name, partition, record.offset + 1, next_[partition]};
    if (!Publish(batch)) return false;
    // Storing a dead letter is not refused for the record's sake: retry it like an outage.
    while (true) {
      Status s = store_.Apply(batch);
      if (s) break;
      if (s.error().code == Errc::kAborted) {
        Resync(partition);
        return true;
      }
      healthy_.store(false);
      retries_.Inc();
      spdlog::warn("{}: storing a dead letter failed, retrying: {}", options_.name,
                   s.error().message);
      if (!Sleep(options_.max_backoff)) return false;
    }
    healthy_.store(true);
    dead_letters_.With({"store"}).Inc();
    next_[partition] = record.offset + 1;
    position_.With({std::to_string(partition)}).Set(static_cast<double>(record.offset + 1));
    (void)consumer_.Commit(partition, record.offset + 1);
    // The refused attempts may have left effects in the subclass's state.
    (void)Restore();
  }
  return true;
}

Worker::Outcome Worker::Attempt(std::int32_t partition, const std::vector<bus::Record>& records,
                                Error* refusal) {
  // Records replayed for another worker (iotd dlq replay) move the checkpoint and nothing else.
  std::vector<bus::Record> mine;
  mine.reserve(records.size());
  for (const auto& r : records) {
    if (r.routing.only_for.empty() || r.routing.only_for == options_.name) mine.push_back(r);
  }
  store::WriteBatch batch;
  Build(mine, batch);
  const std::int64_t next = records.back().offset + 1;
  batch.checkpoint = store::Checkpoint{options_.name, partition, next, next_[partition]};
  if (!Publish(batch)) return Outcome::kStopped;
  Outcome outcome = Commit(batch, refusal);
  if (outcome != Outcome::kApplied) {
    // Build may have changed the subclass's state for effects the store did not take.
    (void)Restore();
    return outcome;
  }
  next_[partition] = next;
  position_.With({std::to_string(partition)}).Set(static_cast<double>(next));
  records_.Inc(static_cast<double>(records.size()));
  batches_.Inc();
  batch_records_.Observe(static_cast<double>(records.size()));
  for (const auto& dl : batch.dead_letters) {
    if (dl.consumer == kRejectedConsumer) {
      dead_letters_.With({"rejected_input"}).Inc();
      continue;
    }
    decode_errors_.Inc();
    dead_letters_.With({"undecodable"}).Inc();
  }
  if (Status s = consumer_.Commit(partition, next); !s) {
    spdlog::warn("{}: commit to the bus failed (the store has the checkpoint): {}",
                 options_.name, s.error().message);
  }
  Applied();
  return Outcome::kApplied;
}

Worker::Outcome Worker::Commit(store::WriteBatch& batch, Error* refusal) {
  auto backoff = options_.min_backoff;
  int refusals = 0;
  while (true) {
    auto start = std::chrono::steady_clock::now();
    Status s = store_.Apply(batch);
    if (s.ok()) {
      apply_seconds_.Observe(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
      healthy_.store(true);
      return Outcome::kApplied;
    }
    if (s.error().code == Errc::kAborted) {
      aborted_.Inc();
      spdlog::warn("{}: {}", options_.name, s.error().message);
      return Outcome::kAborted;
    }
    retries_.Inc();
    if (IsOutage(s.error().code)) {
      healthy_.store(false);
    } else if (++refusals > options_.max_retries) {
      *refusal = s.error();
      return Outcome::kRefused;
    }
    auto wait = Jitter(backoff);
    spdlog::warn("{}: store apply failed, retrying in {} ms: {}", options_.name, wait.count(),
                 s.error().message);
    if (!Sleep(wait)) return Outcome::kStopped;
    backoff = std::min(backoff * 2, options_.max_backoff);
  }
}

bool Worker::Publish(const store::WriteBatch& batch) {
  if (!dead_letter_producer_ || batch.dead_letters.empty()) return true;
  std::vector<bus::Message> messages;
  for (const auto& dl : batch.dead_letters) {
    messages.push_back(bus::Message{dl.key, DeadLetterJson(dl)});
  }
  auto backoff = options_.min_backoff;
  while (!stopping_.load()) {
    std::promise<Status> promise;
    auto done = promise.get_future();
    dead_letter_producer_->Produce(messages, [&promise](Status s) { promise.set_value(s); });
    Status s = done.get();
    if (s) return true;
    spdlog::warn("{}: publishing {} dead letters failed, retrying: {}", options_.name,
                 messages.size(), s.error().message);
    if (!Sleep(Jitter(backoff))) return false;
    backoff = std::min(backoff * 2, options_.max_backoff);
  }
  return false;
}

void Worker::Resync(std::int32_t partition) {
  // Drop what is held of the partition: it is read again from the stored checkpoint.
  std::erase_if(held_, [&](const bus::Record& r) { return r.partition == partition; });
  while (!stopping_.load()) {
    auto cp = store_.LoadCheckpoint(options_.name, partition);
    if (cp) {
      const std::int64_t next = cp->value_or(0);
      next_[partition] = next;
      position_.With({std::to_string(partition)}).Set(static_cast<double>(next));
      if (Status s = consumer_.Seek(partition, next); !s) {
        spdlog::warn("{}: seeking partition {} to {} failed: {}", options_.name, partition, next,
                     s.error().message);
      }
      (void)Restore();
      return;
    }
    spdlog::warn("{}: reloading the checkpoint of partition {} failed, retrying: {}",
                 options_.name, partition, cp.error().message);
    Sleep(options_.max_backoff);
  }
}

void Worker::DeadLetter(const bus::Record& record, std::string reason, store::WriteBatch& batch) {
  spdlog::error("{}: dead letter partition={} offset={}: {}", options_.name, record.partition,
                record.offset, reason);
  store::DeadLetter dl;
  dl.consumer = options_.name;
  dl.topic = options_.topic;
  dl.partition = record.partition;
  dl.offset = record.offset;
  dl.key = record.key;
  dl.payload = record.payload;
  dl.reason = std::move(reason);
  dl.attempts = 1;
  dl.failed_at = core::SystemClock().Now();
  batch.dead_letters.push_back(std::move(dl));
}

void Worker::RejectedInput(const bus::Record& record, store::WriteBatch& batch) {
  auto rejected = codec::DecodeRejected(record.payload);
  if (!rejected) {
    DeadLetter(record, "undecodable: " + rejected.error().message, batch);
    return;
  }
  store::DeadLetter dl;
  dl.consumer = kRejectedConsumer;
  dl.topic = std::move(rejected->source);
  dl.partition = record.partition;
  dl.offset = record.offset;
  dl.key = record.key;
  dl.payload = std::move(rejected->payload);
  dl.reason = std::move(rejected->reason);
  dl.attempts = 1;
  dl.failed_at = record.appended_at.time_since_epoch().count() > 0 ? record.appended_at
                                                                  : core::SystemClock().Now();
  batch.dead_letters.push_back(std::move(dl));
}

bool Worker::Sleep(std::chrono::milliseconds d) {
  auto until = std::chrono::steady_clock::now() + d;
  while (std::chrono::steady_clock::now() < until) {
    if (stopping_.load()) return false;
    std::this_thread::sleep_for(std::min(d, std::chrono::milliseconds(10)));
  }
  return !stopping_.load();
}

std::chrono::milliseconds Worker::Jitter(std::chrono::milliseconds backoff) {
  // Up to half again, at random, so that workers that failed together do not retry together;
  // never less than the backoff itself.
  std::uniform_int_distribution<std::int64_t> d(0, backoff.count() / 2);
  return backoff + std::chrono::milliseconds(d(random_));
}

}  // namespace iot::services
