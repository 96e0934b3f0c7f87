// worker_test.cc: the consume -> apply -> commit loop (services/worker.h), through the Aggregator
// (its production options) and through RawWorker, the smallest Worker, whose options a test
// chooses (long backoffs, long polls).
//
// The bus is a FakeConsumer and the store a FlakyStore in front of a real SqliteStore, so that a
// test sees the order of polls, apply attempts and commits, and still checks the stored result.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <chrono>
#include <string>
#include <vector>

#include "codec/wire.h"
#include "core/reading.h"
#include "core/window.h"
#include "metrics/metrics.h"
#include "services/aggregator.h"
#include "services/alerter.h"
#include "services/dead_letter.h"
#include "services/worker.h"
#include "services_test_util.h"

namespace iot::services {
namespace {

using namespace std::chrono_literals;
using testing::At;
using testing::FakeConsumer;
using testing::FlakyStore;
using testing::Must;
using testing::ReadingAt;

std::int64_t Id(std::int64_t offset) { return core::MessageId::Of(0, offset).value; }

// RawWorker stores every decodable record as a raw reading and nothing else.
class RawWorker final : public Worker {
 public:
  RawWorker(WorkerOptions options, bus::Consumer& consumer, store::Store& store,
            metrics::Registry& registry, bus::Producer* dead_letters = nullptr)
      : Worker(std::move(options), consumer, store, registry, dead_letters) {}
  ~RawWorker() override { Stop(); }

 private:
  void Build(const std::vector<bus::Record>& records, store::WriteBatch& batch) override {
    for (const auto& record : records) {
      auto decoded = codec::DecodePayload(record.payload);
      if (!decoded) {
        DeadLetter(record, "undecodable: " + decoded.error().message, batch);
        continue;
      }
      batch.readings.push_back(store::StoredReading{IdOf(record), std::move(*decoded)});
    }
  }
};

// QuickOptions: no linger, short polls and backoffs, so that loop tests run fast.
WorkerOptions QuickOptions() {
  WorkerOptions o;
  o.name = "raw";
  o.max_batch = 1000;
  o.poll_timeout = 20ms;
  o.min_batch = 1;
  o.linger = 0ms;
  o.min_backoff = 1ms;
  o.max_backoff = 5ms;
  return o;
}

class WorkerTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_NE(real_, nullptr); }

  // AppendReadings appends one reading of dev-1 per temperature, 10 s apart from `first_s`.
  void AppendReadings(std::int64_t first_s, std::vector<double> temperatures) {
    for (double t : temperatures) {
      consumer_.AppendReading(ReadingAt("dev-1", At(first_s), t));
      first_s += 10;
    }
  }

  testing::TempDir dir_;
  std::unique_ptr<store::SqliteStore> real_ = testing::OpenStore(dir_);
  testing::EventLog log_;
  FlakyStore flaky_{*real_, &log_};
  FakeConsumer consumer_{&log_};
  metrics::Registry registry_;
  core::ManualClock clock_{At(0)};
};

TEST_F(WorkerTest, AggregatorRetriesTheSameBatchWithBackoffAndConsumesNothingMeanwhile) {
  AppendReadings(0, {1, 2, 3});
  flaky_.FailApplies(3);
  // Records that arrive during the outage must wait for the next batch.
  std::atomic<bool> appended{false};
  flaky_.set_on_failure([&] {
    if (!appended.exchange(true)) AppendReadings(30, {4, 5});
  });

  Aggregator aggregator({1min}, consumer_, flaky_, registry_, clock_);
  IOT_ASSERT_OK(aggregator.Start());
  ASSERT_TRUE(consumer_.WaitForCommit(5));
  aggregator.Stop();

  EXPECT_EQ(log_.Events(),
            (std::vector<std::string>{"poll 3", "apply-fail 3", "apply-fail 3", "apply-fail 3",
                                      "apply-ok 3", "commit 3", "poll 2", "apply-ok 5",
                                      "commit 5"}));
  auto attempts = flaky_.Attempts();
  ASSERT_EQ(attempts.size(), 5u);
  for (std::size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(attempts[i].reading_ids, (std::vector<std::int64_t>{Id(0), Id(1), Id(2)})) << i;
    EXPECT_EQ(attempts[i].checkpoint, 3) << i;
  }
  // The default backoff starts at 50 ms and doubles (lower bounds only: sleeps never end early).
  EXPECT_GE(attempts[1].at - attempts[0].at, 50ms);
  EXPECT_GE(attempts[2].at - attempts[1].at, 100ms);
  EXPECT_GE(attempts[3].at - attempts[2].at, 200ms);
  EXPECT_EQ(testing::MetricValue(registry_, "aggregator_store_retries_total"), 3);
  EXPECT_EQ(testing::MetricValue(registry_, "aggregator_records_total"), 5);
  EXPECT_EQ(testing::MetricValue(registry_, "aggregator_batches_total"), 2);

  // Nothing lost, nothing counted twice.
  store::AggregateQuery q;
  q.device_id = "dev-1";
  q.sensor_type = "temperature_c";
  auto aggregates = testing::AllAggregates(*real_, q);
  ASSERT_EQ(aggregates.size(), 1u);
  EXPECT_EQ(aggregates[0].key.window_start, At(0));
  EXPECT_EQ(aggregates[0].acc.count, 5);
  EXPECT_EQ(aggregates[0].acc.sum, 15);
  EXPECT_EQ(aggregates[0].acc.min, 1);
  EXPECT_EQ(aggregates[0].acc.max, 5);
  auto device = Must(real_->FindDevice("dev-1"));
  ASSERT_TRUE(device.has_value());
  EXPECT_EQ(device->readings, 5);
  EXPECT_EQ(Must(real_->LoadCheckpoint("aggregator", 0)), 5);
}

TEST_F(WorkerTest, IsUnhealthyWhileTheStoreFailsAndHealthyAgainAfter) {
  AppendReadings(0, {1});
  flaky_.FailApplies(1000000);
  Aggregator aggregator({1min}, consumer_, flaky_, registry_, clock_);
  EXPECT_TRUE(aggregator.Healthy());
  IOT_ASSERT_OK(aggregator.Start());
  ASSERT_TRUE(flaky_.WaitForFailures(2));
  EXPECT_FALSE(aggregator.Healthy());
  EXPECT_TRUE(consumer_.Commits().empty());

  flaky_.FailApplies(0);
  ASSERT_TRUE(consumer_.WaitForCommit(1));
  EXPECT_TRUE(aggregator.Healthy());
}

TEST_F(WorkerTest, StopDuringRetriesReturnsPromptlyAndLeavesTheBatchUnapplied) {
  AppendReadings(0, {1, 2});
  flaky_.FailApplies(1000000);
  WorkerOptions options = QuickOptions();
  options.min_backoff = 30s;  // Stop must not wait for it
  options.max_backoff = 30s;
  {
    RawWorker worker(options, consumer_, flaky_, registry_);
    IOT_ASSERT_OK(worker.Start());
    ASSERT_TRUE(flaky_.WaitForFailures(1));
    auto start = std::chrono::steady_clock::now();
    worker.Stop();
    EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  }
  EXPECT_EQ(flaky_.Attempts().size(), 1u);
  EXPECT_TRUE(consumer_.Commits().empty());
  EXPECT_FALSE(Must(real_->LoadCheckpoint("raw", 0)).has_value());
  EXPECT_TRUE(testing::AllTelemetry(*real_, {}).empty());

  // The abandoned batch is replayed by the next run.
  FakeConsumer replay;
  replay.AppendReading(ReadingAt("dev-1", At(0), 1));
  replay.AppendReading(ReadingAt("dev-1", At(10), 2));
  metrics::Registry registry;
  RawWorker worker(QuickOptions(), replay, *real_, registry);
  IOT_ASSERT_OK(worker.Start());
  ASSERT_TRUE(replay.WaitForCommit(2));
  worker.Stop();
  EXPECT_EQ(testing::AllTelemetry(*real_, {}).size(), 2u);
}

TEST_F(WorkerTest, StopWakesABlockedPoll) {
  WorkerOptions options = QuickOptions();
  options.poll_timeout = 60s;
  RawWorker worker(options, consumer_, flaky_, registry_);
  IOT_ASSERT_OK(worker.Start());
  auto start = std::chrono::steady_clock::now();
  worker.Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
}

TEST_F(WorkerTest, StartSeeksToTheStoredCheckpointAndCommitsLastOffsetPlusOne) {
  store::WriteBatch done;
  done.checkpoint = store::Checkpoint{"aggregator", 0, 3, 0};
  IOT_ASSERT_OK(real_->Apply(done));
  AppendReadings(0, {1, 2, 3, 4, 5, 6, 7, 8});  // offsets 0..7; 0..2 are already applied

  Aggregator aggregator({1min}, consumer_, flaky_, registry_, clock_);
  IOT_ASSERT_OK(aggregator.Start());
  EXPECT_EQ(consumer_.Seeks(), (std::vector<std::pair<std::int32_t, std::int64_t>>{{0, 3}}));
  ASSERT_TRUE(consumer_.WaitForCommit(8));
  aggregator.Stop();

  std::vector<std::int64_t> applied;
  for (const auto& attempt : flaky_.Attempts()) {
    ASSERT_TRUE(attempt.ok);
    ASSERT_FALSE(attempt.reading_ids.empty());
    // The checkpoint is the offset after the batch's last record.
    EXPECT_EQ(attempt.checkpoint, attempt.reading_ids.back() - Id(0) + 1);
    applied.insert(applied.end(), attempt.reading_ids.begin(), attempt.reading_ids.end());
  }
  EXPECT_EQ(applied, (std::vector<std::int64_t>{Id(3), Id(4), Id(5), Id(6), Id(7)}));
  EXPECT_EQ(Must(real_->LoadCheckpoint("aggregator", 0)), 8);
  auto device = Must(real_->FindDevice("dev-1"));
  ASSERT_TRUE(device.has_value());
  EXPECT_EQ(device->readings, 5);
  EXPECT_EQ(device->first_seen, At(30));
}

TEST_F(WorkerTest, StartWithoutACheckpointSeeksToTheBeginning) {
  Aggregator aggregator({1min}, consumer_, flaky_, registry_, clock_);
  IOT_ASSERT_OK(aggregator.Start());
  EXPECT_EQ(consumer_.Seeks(), (std::vector<std::pair<std::int32_t, std::int64_t>>{{0, 0}}));
}

TEST_F(WorkerTest, EachWorkerResumesFromItsOwnCheckpoint) {
  store::WriteBatch agg_done;
  agg_done.checkpoint = store::Checkpoint{"aggregator", 0, 3, 0};
  IOT_ASSERT_OK(real_->Apply(agg_done));
  store::WriteBatch alerts_done;
  alerts_done.checkpoint = store::Checkpoint{"alerts", 0, 6, 0};
  IOT_ASSERT_OK(real_->Apply(alerts_done));

  FakeConsumer alerts_consumer;
  Alerter alerter(core::RuleSet::Defaults(-10, 50, 0, 100), alerts_consumer, flaky_, registry_);
  IOT_ASSERT_OK(alerter.Start());
  EXPECT_EQ(alerts_consumer.Seeks(), (std::vector<std::pair<std::int32_t, std::int64_t>>{{0, 6}}));
  Aggregator aggregator({1min}, consumer_, flaky_, registry_, clock_);
  IOT_ASSERT_OK(aggregator.Start());
  EXPECT_EQ(consumer_.Seeks(), (std::vector<std::pair<std::int32_t, std::int64_t>>{{0, 3}}));
}

TEST_F(WorkerTest, StartFailsWithoutStartingWhenTheCheckpointCannotBeLoaded) {
  AppendReadings(0, {1});
  flaky_.set_fail_load_checkpoint(true);
  Aggregator aggregator({1min}, consumer_, flaky_, registry_, clock_);
  Status s = aggregator.Start();
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, Errc::kUnavailable);
  EXPECT_TRUE(consumer_.Seeks().empty());
  aggregator.Stop();
  EXPECT_EQ(consumer_.Position(), 0);  // nothing was polled
  EXPECT_TRUE(log_.Events().empty());
}

TEST_F(WorkerTest, APollFailureIsRetriedAndLosesNothing) {
  consumer_.FailNextPolls(3);
  AppendReadings(0, {1, 2});
  RawWorker worker(QuickOptions(), consumer_, flaky_, registry_);
  IOT_ASSERT_OK(worker.Start());
  ASSERT_TRUE(consumer_.WaitForCommit(2));
  worker.Stop();
  EXPECT_EQ(testing::AllTelemetry(*real_, {}).size(), 2u);
}

TEST_F(WorkerTest, ABusCommitFailureDoesNotStopTheWorker) {
  consumer_.set_fail_commits(true);
  RawWorker worker(QuickOptions(), consumer_, flaky_, registry_);
  IOT_ASSERT_OK(worker.Start());
  AppendReadings(0, {1});
  ASSERT_TRUE(consumer_.WaitForCommit(1));
  AppendReadings(10, {2});
  ASSERT_TRUE(consumer_.WaitForCommit(2));
  worker.Stop();
  EXPECT_EQ(Must(real_->LoadCheckpoint("raw", 0)), 2);
  EXPECT_EQ(testing::AllTelemetry(*real_, {}).size(), 2u);
}


// ---- dead letters, fencing, routing ---------------------------------------------------------

// CapturingProducer keeps what it is given and acknowledges it at once.
class CapturingProducer final : public bus::Producer {
 public:
  void Produce(std::vector<bus::Message> messages, Callback done) override {
    {
      std::lock_guard lock(mu_);
      for (auto& m : messages) messages_.push_back(std::move(m));
    }
    done(Status::Ok());
  }
  bool Ready() const override { return true; }
  Status Flush(std::chrono::milliseconds) override { return Status::Ok(); }
  std::vector<bus::Message> Messages() const {
    std::lock_guard lock(mu_);
    return messages_;
  }

 private:
  mutable std::mutex mu_;
  std::vector<bus::Message> messages_;
};

std::vector<store::DeadLetter> AllDeadLetters(store::Store& s) {
  store::DeadLetterQuery q;
  q.limit = 1000;
  return Must(s.DeadLetters(q)).items;
}

std::vector<std::int64_t> StoredIds(store::Store& s) {
  std::vector<std::int64_t> ids;
  for (const auto& r : testing::AllTelemetry(s, {})) ids.push_back(r.id.value);
  std::sort(ids.begin(), ids.end());
  return ids;
}

TEST_F(WorkerTest, AnUndecodableRecordBecomesADeadLetterAtOnceAndTheOthersAreApplied) {
  AppendReadings(0, {1});
  const std::string garbage = std::string("\x01\xff") + "{not a reading";
  consumer_.Append("dev-x", garbage);
  AppendReadings(20, {3});
  CapturingProducer dlq;
  RawWorker worker(QuickOptions(), consumer_, flaky_, registry_, &dlq);
  IOT_ASSERT_OK(worker.Start());
  ASSERT_TRUE(consumer_.WaitForCommit(3));
  worker.Stop();

  EXPECT_EQ(StoredIds(*real_), (std::vector<std::int64_t>{Id(0), Id(2)}));
  auto letters = AllDeadLetters(*real_);
  ASSERT_EQ(letters.size(), 1u);
  EXPECT_EQ(letters[0].consumer, "raw");
  EXPECT_EQ(letters[0].topic, "embedded");
  EXPECT_EQ(letters[0].partition, 0);
  EXPECT_EQ(letters[0].offset, 1);
  EXPECT_EQ(letters[0].key, "dev-x");
  EXPECT_EQ(letters[0].payload, garbage);  // byte for byte
  EXPECT_EQ(letters[0].attempts, 1);       // decoding again cannot change the outcome
  EXPECT_EQ(letters[0].reason.rfind("undecodable: ", 0), 0u) << letters[0].reason;
  // One attempt: nothing retried.
  EXPECT_EQ(flaky_.Attempts().size(), 1u);
  // The dead-letter topic got the same dead letter, as JSON that reads back exactly.
  auto published = dlq.Messages();
  ASSERT_EQ(published.size(), 1u);
  EXPECT_EQ(published[0].key, "dev-x");
  auto parsed = ParseDeadLetter(published[0].payload);
  ASSERT_TRUE(parsed.ok()) << parsed.error().message;
  EXPECT_EQ(*parsed, letters[0]);
  EXPECT_EQ(testing::MetricValue(registry_, "raw_dead_letters_total{cause=\"undecodable\"}"), 1);
}

TEST_F(WorkerTest, ARecordTheStoreRefusesIsRetriedMaxRetriesTimesThenDeadLettered) {
  AppendReadings(0, {1, 2, 3});
  flaky_.RefuseReading(Id(1));
  WorkerOptions o = QuickOptions();
  o.max_retries = 2;
  RawWorker worker(o, consumer_, flaky_, registry_);
  IOT_ASSERT_OK(worker.Start());
  ASSERT_TRUE(consumer_.WaitForCommit(3));
  worker.Stop();

  // The whole batch 1 + max_retries times, then record by record: 0 applied, 1 refused
  // 1 + max_retries times and stored as a dead letter, 2 applied.
  EXPECT_EQ(log_.Events(),
            (std::vector<std::string>{"poll 3", "apply-refused 3", "apply-refused 3",
                                      "apply-refused 3", "apply-ok 1", "commit 1",
                                      "apply-refused 2", "apply-refused 2", "apply-refused 2",
                                      "apply-ok 2", "commit 2", "apply-ok 3", "commit 3"}));
  EXPECT_EQ(StoredIds(*real_), (std::vector<std::int64_t>{Id(0), Id(2)}));
  auto letters = AllDeadLetters(*real_);
  ASSERT_EQ(letters.size(), 1u);
  EXPECT_EQ(letters[0].offset, 1);
  EXPECT_EQ(letters[0].attempts, 3);
  EXPECT_EQ(letters[0].reason, "store: fake refusal of a reading");
  EXPECT_EQ(Must(real_->LoadCheckpoint("raw", 0)), 3);
  EXPECT_EQ(testing::MetricValue(registry_, "raw_dead_letters_total{cause=\"store\"}"), 1);
}

TEST_F(WorkerTest, ABatchAnotherWorkerAppliedInPartIsDroppedAndReadAgainFromTheStoredCheckpoint) {
  RawWorker worker(QuickOptions(), consumer_, flaky_, registry_);
  IOT_ASSERT_OK(worker.Start());  // no checkpoint: this worker starts at 0
  // Meanwhile another worker (after a rebalance this one missed) applied offsets 0..4.
  store::WriteBatch other;
  other.checkpoint = store::Checkpoint{"raw", 0, 5, 0};
  IOT_ASSERT_OK(real_->Apply(other));
  AppendReadings(0, {1, 2, 3, 4, 5, 6, 7, 8});
  ASSERT_TRUE(consumer_.WaitForCommit(8));
  worker.Stop();

  // Its batch 0..7 was refused as a whole (nothing of 0..4 stored twice), then 5..7 applied.
  EXPECT_EQ(StoredIds(*real_), (std::vector<std::int64_t>{Id(5), Id(6), Id(7)}));
  auto seeks = consumer_.Seeks();
  ASSERT_FALSE(seeks.empty());
  EXPECT_EQ(seeks.back(), (std::pair<std::int32_t, std::int64_t>{0, 5}));
  EXPECT_EQ(Must(real_->LoadCheckpoint("raw", 0)), 8);
  EXPECT_EQ(testing::MetricValue(registry_, "raw_aborted_batches_total"), 1);
}

TEST_F(WorkerTest, ARecordReplayedForAnotherWorkerOnlyMovesTheCheckpoint) {
  // iotd dlq replay addresses a dead letter to the worker that gave up on it, under its id.
  const auto reading = ReadingAt("dev-1", At(0), 1);
  consumer_.Append("dev-1", codec::EncodeWire(reading), bus::Routing{"someone-else", Id(77)});
  consumer_.Append("dev-1", codec::EncodeWire(reading), bus::Routing{"raw", Id(78)});
  RawWorker worker(QuickOptions(), consumer_, flaky_, registry_);
  IOT_ASSERT_OK(worker.Start());
  ASSERT_TRUE(consumer_.WaitForCommit(2));
  worker.Stop();
  EXPECT_EQ(StoredIds(*real_), (std::vector<std::int64_t>{Id(78)}));
  EXPECT_EQ(Must(real_->LoadCheckpoint("raw", 0)), 2);
}

}  // namespace
}  // namespace iot::services
