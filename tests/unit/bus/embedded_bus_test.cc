// embedded_bus_test.cc: the embedded bus's delivery contract (order, group commit, durability,
// failures, back-pressure, consumers, retention). The kill -9 test is embedded_bus_crash_test.cc.
#include "bus/embedded_bus.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <atomic>
#include <chrono>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

#include "bus_test_util.h"

namespace iot::bus {
namespace {

using namespace std::chrono_literals;
using testing::ExpectMessagesAt;
using testing::Gate;
using testing::HoldWriter;
using testing::Messages;
using testing::PollUntil;
using testing::ProduceAndWait;

class EmbeddedBusTest : public ::testing::Test {
 protected:
  EmbeddedBusTest() { options_.path = dir_.path() + "/bus.db"; }

  std::shared_ptr<EmbeddedBus> Open() {
    auto bus = EmbeddedBus::Open(options_);
    EXPECT_TRUE(bus.ok()) << bus.error().message;
    return bus.ok() ? *bus : nullptr;
  }

  testing::TempDir dir_;
  EmbeddedBusOptions options_;
};

TEST_F(EmbeddedBusTest, OffsetsAreDenseAndInProduceOrder) {
  auto bus = Open();
  auto producer = bus->NewProducer();
  EXPECT_TRUE(ProduceAndWait(*producer, Messages(0, 1)));
  EXPECT_TRUE(ProduceAndWait(*producer, Messages(1, 5)));
  EXPECT_TRUE(ProduceAndWait(*producer, {}));  // an empty call is answered and takes no offset
  EXPECT_TRUE(ProduceAndWait(*producer, Messages(6, 10)));
  EXPECT_EQ(bus->EndOffset(), 16);

  auto consumer = bus->NewConsumer("aggregator");
  auto records = PollUntil(*consumer, 16);
  ASSERT_EQ(records.size(), 16u);
  ExpectMessagesAt(records, 0);
  EXPECT_EQ(consumer->Lag(), 0);
  auto more = consumer->Poll(10, 0ms);
  ASSERT_TRUE(more.ok());
  EXPECT_TRUE(more->empty());
  EXPECT_EQ(bus->GetStats().messages_committed, 16u);
}

TEST_F(EmbeddedBusTest, ConcurrentProducersShareGroupCommits) {
  std::mutex mu;
  std::vector<GroupCommitInfo> commits;
  options_.on_group_commit = [&](const GroupCommitInfo& info) {
    std::lock_guard lock(mu);
    commits.push_back(info);
  };
  auto bus = Open();
  auto producer = bus->NewProducer();
  Gate gate;
  Status first;
  HoldWriter(*producer, Messages(0, 1), gate, &first);

  // While the writer is held, 8 threads queue 25 single-message calls each.
  constexpr int kThreads = 8;
  constexpr int kCallsPerThread = 25;
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kCallsPerThread; ++i) {
        producer->Produce({{"dev", "x"}}, [&ok](Status s) { ok += s.ok() ? 1 : 0; });
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(bus->GetStats().pending_calls, static_cast<std::size_t>(kThreads * kCallsPerThread));
  gate.Open();
  ASSERT_TRUE(producer->Flush(5s));

  EXPECT_TRUE(first);
  EXPECT_EQ(ok.load(), kThreads * kCallsPerThread);
  const auto stats = bus->GetStats();
  EXPECT_EQ(stats.calls_committed, 1u + kThreads * kCallsPerThread);
  EXPECT_EQ(stats.groups_committed, 2u);  // the held call, then everything queued behind it
  std::lock_guard lock(mu);
  ASSERT_EQ(commits.size(), 2u);
  EXPECT_EQ(commits[1].calls, static_cast<std::size_t>(kThreads * kCallsPerThread));
  EXPECT_EQ(commits[1].messages, static_cast<std::size_t>(kThreads * kCallsPerThread));
  EXPECT_TRUE(commits[1].ok);
  EXPECT_GT(commits[1].bytes, 0u);
  EXPECT_GE(commits[1].latency_seconds, commits[1].commit_seconds);
}

TEST_F(EmbeddedBusTest, TailingConsumerSeesEveryMessageOnceInEachProducersOrder) {
  auto bus = Open();
  auto producer = bus->NewProducer();
  constexpr int kThreads = 4;
  constexpr int kCalls = 200;
  constexpr int kPerCall = 5;
  constexpr std::size_t kTotal = kThreads * kCalls * kPerCall;
  auto consumer = bus->NewConsumer("aggregator");
  auto tail = std::async(std::launch::async, [&] { return PollUntil(*consumer, kTotal, 20s, 97); });
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int c = 0; c < kCalls; ++c) {
        std::vector<Message> messages;
        for (int m = 0; m < kPerCall; ++m) {
          messages.push_back({"producer-" + std::to_string(t), std::to_string(c * kPerCall + m)});
        }
        producer->Produce(std::move(messages), [](Status s) { EXPECT_TRUE(s); });
      }
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_TRUE(producer->Flush(10s));
  const auto records = tail.get();
  ASSERT_EQ(records.size(), kTotal);
  std::vector<int> next_seq(kThreads, 0);
  for (std::size_t i = 0; i < records.size(); ++i) {
    ASSERT_EQ(records[i].offset, static_cast<std::int64_t>(i));
    const int t = std::stoi(records[i].key.substr(std::string("producer-").size()));
    ASSERT_EQ(records[i].payload, std::to_string(next_seq[t]++)) << "producer " << t;
  }
}

TEST_F(EmbeddedBusTest, MaxGroupMessagesBoundsOneCommit) {
  options_.max_group_messages = 10;
  auto bus = Open();
  auto producer = bus->NewProducer();
  Gate gate;
  Status first;
  HoldWriter(*producer, Messages(0, 1), gate, &first);
  for (int i = 0; i < 45; ++i) producer->Produce(Messages(1 + i, 1), [](Status) {});
  producer->Produce(Messages(46, 25), [](Status) {});  // larger than a group: still taken alone
  gate.Open();
  ASSERT_TRUE(producer->Flush(5s));
  // 1 held + 45 singles in groups of 10 (5 groups) + the large call on its own.
  EXPECT_EQ(bus->GetStats().groups_committed, 1u + 5u + 1u);
  auto consumer = bus->NewConsumer("");
  auto records = PollUntil(*consumer, 71);
  ASSERT_EQ(records.size(), 71u);
  ExpectMessagesAt(records, 0);
}

TEST_F(EmbeddedBusTest, AcknowledgedMessagesSurviveReopenAndOffsetsContinue) {
  {
    auto bus = Open();
    auto producer = bus->NewProducer();
    ASSERT_TRUE(ProduceAndWait(*producer, Messages(0, 30)));
    ASSERT_TRUE(ProduceAndWait(*producer, Messages(30, 12)));
  }
  auto bus = Open();
  EXPECT_EQ(bus->EndOffset(), 42);
  auto producer = bus->NewProducer();
  ASSERT_TRUE(ProduceAndWait(*producer, Messages(42, 8)));
  auto consumer = bus->NewConsumer("aggregator");
  auto records = PollUntil(*consumer, 50);
  ASSERT_EQ(records.size(), 50u);
  ExpectMessagesAt(records, 0);
}

TEST_F(EmbeddedBusTest, AppendedAtIsTheCommitTimeFromTheClock) {
  core::ManualClock clock(core::FromUnixMicros(1'700'000'000'000'000));
  options_.clock = &clock;
  auto bus = Open();
  auto producer = bus->NewProducer();
  ASSERT_TRUE(ProduceAndWait(*producer, Messages(0, 1)));
  clock.Advance(5s);
  ASSERT_TRUE(ProduceAndWait(*producer, Messages(1, 1)));
  auto consumer = bus->NewConsumer("");
  auto records = PollUntil(*consumer, 2);
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0].appended_at, core::FromUnixMicros(1'700'000'000'000'000));
  EXPECT_EQ(records[1].appended_at, core::FromUnixMicros(1'700'000'005'000'000));
}

TEST_F(EmbeddedBusTest, FailedCommitFailsEveryCallOfTheGroupAndHidesItsMessages) {
  options_.max_db_bytes = 256 * 1024;  // a disk budget that a 2 MB call cannot fit in
  std::mutex mu;
  std::vector<GroupCommitInfo> commits;
  options_.on_group_commit = [&](const GroupCommitInfo& info) {
    std::lock_guard lock(mu);
    commits.push_back(info);
  };
  auto bus = Open();
  auto producer = bus->NewProducer();
  Gate gate;
  Status first;
  HoldWriter(*producer, Messages(0, 1), gate, &first);
  std::promise<Status> small_done;
  std::promise<Status> big_done;
  producer->Produce(Messages(1, 1), [&](Status s) { small_done.set_value(s); });
  producer->Produce({{"dev", std::string(2 << 20, 'x')}},
                    [&](Status s) { big_done.set_value(s); });
  gate.Open();
  const Status small = small_done.get_future().get();
  const Status big = big_done.get_future().get();

  EXPECT_TRUE(first);
  ASSERT_FALSE(small.ok());
  EXPECT_EQ(small.error().code, Errc::kResourceExhausted);
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(big.error().code, Errc::kResourceExhausted);
  EXPECT_EQ(bus->EndOffset(), 1);

  // The bus keeps working, and the failed group's offsets are reused.
  ASSERT_TRUE(ProduceAndWait(*producer, Messages(1, 3)));
  EXPECT_EQ(bus->EndOffset(), 4);
  auto consumer = bus->NewConsumer("");
  auto records = PollUntil(*consumer, 4);
  ASSERT_EQ(records.size(), 4u);
  ExpectMessagesAt(records, 0);
  auto more = consumer->Poll(10, 0ms);
  ASSERT_TRUE(more.ok());
  EXPECT_TRUE(more->empty());

  const auto stats = bus->GetStats();
  EXPECT_EQ(stats.groups_failed, 1u);
  EXPECT_EQ(stats.messages_failed, 2u);
  std::lock_guard lock(mu);
  ASSERT_EQ(commits.size(), 3u);
  EXPECT_FALSE(commits[1].ok);
  EXPECT_EQ(commits[1].calls, 2u);
}

TEST_F(EmbeddedBusTest, FullQueueRefusesAtOnceWithResourceExhausted) {
  options_.max_pending_messages = 10;
  auto bus = Open();
  auto producer = bus->NewProducer();
  Gate gate;
  Status first;
  HoldWriter(*producer, Messages(0, 1), gate, &first);  // answered: no longer pending
  std::atomic<int> accepted_ok{0};
  producer->Produce(Messages(1, 4), [&](Status s) { accepted_ok += s.ok() ? 1 : 0; });
  producer->Produce(Messages(5, 6), [&](Status s) { accepted_ok += s.ok() ? 1 : 0; });
  EXPECT_FALSE(producer->Ready());

  // The refusal is immediate: the callback has run when Produce returns.
  std::optional<Status> refused;
  producer->Produce(Messages(11, 1), [&](Status s) { refused = s; });
  ASSERT_TRUE(refused.has_value());
  ASSERT_FALSE(refused->ok());
  EXPECT_EQ(refused->error().code, Errc::kResourceExhausted);

  std::optional<Status> too_big;
  producer->Produce(Messages(11, 11), [&](Status s) { too_big = s; });
  ASSERT_TRUE(too_big.has_value());
  ASSERT_FALSE(too_big->ok());
  EXPECT_EQ(too_big->error().code, Errc::kInvalidArgument);

  gate.Open();
  ASSERT_TRUE(producer->Flush(5s));
  EXPECT_EQ(accepted_ok.load(), 2);
  EXPECT_TRUE(producer->Ready());
  EXPECT_TRUE(ProduceAndWait(*producer, Messages(11, 1)));
  EXPECT_EQ(bus->GetStats().messages_rejected, 12u);
  EXPECT_EQ(bus->EndOffset(), 12);
}

TEST_F(EmbeddedBusTest, CloseCommitsPendingCallsThenRefuses) {
  auto bus = Open();
  auto producer = bus->NewProducer();
  Gate gate;
  Status first;
  HoldWriter(*producer, Messages(0, 1), gate, &first);
  std::atomic<int> ok{0};
  for (int i = 1; i <= 100; ++i) {
    producer->Produce(Messages(i, 1), [&](Status s) { ok += s.ok() ? 1 : 0; });
  }
  std::thread closer([&] { bus->Close(); });
  gate.Open();
  closer.join();
  EXPECT_EQ(ok.load(), 100);
  EXPECT_FALSE(producer->Ready());
  std::optional<Status> after;
  producer->Produce(Messages(101, 1), [&](Status s) { after = s; });
  ASSERT_TRUE(after.has_value());
  ASSERT_FALSE(after->ok());
  EXPECT_EQ(after->error().code, Errc::kUnavailable);
  bus.reset();

  auto reopened = Open();
  EXPECT_EQ(reopened->EndOffset(), 101);
  auto consumer = reopened->NewConsumer("");
  auto records = PollUntil(*consumer, 101);
  ASSERT_EQ(records.size(), 101u);
  ExpectMessagesAt(records, 0);
}

TEST_F(EmbeddedBusTest, ProducersAndConsumersOutliveTheBusObject) {
  auto bus = Open();
  auto producer = bus->NewProducer();
  auto consumer = bus->NewConsumer("aggregator");
  ASSERT_TRUE(ProduceAndWait(*producer, Messages(0, 3)));
  bus.reset();  // closes

  EXPECT_EQ(ProduceAndWait(*producer, Messages(3, 1)).error().code, Errc::kUnavailable);
  // What is stored can still be read; then the consumer reports the closed bus.
  auto records = consumer->Poll(10, 1s);
  ASSERT_TRUE(records.ok());
  ASSERT_EQ(records->size(), 3u);
  ExpectMessagesAt(*records, 0);
  auto after = consumer->Poll(10, 1s);
  ASSERT_FALSE(after.ok());
  EXPECT_EQ(after.error().code, Errc::kUnavailable);
}

TEST_F(EmbeddedBusTest, PollWaitsForDataProducedLater) {
  auto bus = Open();
  auto consumer = bus->NewConsumer("alerts");
  auto empty = consumer->Poll(10, 0ms);
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());

  auto polled = std::async(std::launch::async, [&] { return consumer->Poll(10, 10s); });
  auto producer = bus->NewProducer();
  ASSERT_TRUE(ProduceAndWait(*producer, Messages(0, 2)));
  auto records = polled.get();
  ASSERT_TRUE(records.ok());
  // The poll returns as soon as the first commit is visible, with what it holds.
  ASSERT_EQ(records->size(), 2u);
  ExpectMessagesAt(*records, 0);
}

TEST_F(EmbeddedBusTest, WakeupInterruptsABlockedPoll) {
  auto bus = Open();
  auto consumer = bus->NewConsumer("alerts");
  auto polled = std::async(std::launch::async, [&] { return consumer->Poll(10, 1h); });
  consumer->Wakeup();
  ASSERT_EQ(polled.wait_for(10s), std::future_status::ready);
  auto records = polled.get();
  ASSERT_TRUE(records.ok());
  EXPECT_TRUE(records->empty());
}

TEST_F(EmbeddedBusTest, SeekRepositionsAlsoIntoTheMiddleOfAFrame) {
  auto bus = Open();
  auto producer = bus->NewProducer();
  ASSERT_TRUE(ProduceAndWait(*producer, Messages(0, 100)));  // one frame
  ASSERT_TRUE(ProduceAndWait(*producer, Messages(100, 20)));
  auto consumer = bus->NewConsumer("aggregator");

  ASSERT_TRUE(consumer->Seek(0, 37));
  EXPECT_EQ(consumer->Lag(), 120 - 37);
  auto records = consumer->Poll(10, 1s);
  ASSERT_TRUE(records.ok());
  ASSERT_EQ(records->size(), 10u);
  ExpectMessagesAt(*records, 37);

  ASSERT_TRUE(consumer->Seek(0, 5));  // backwards, within the frame read last
  records = consumer->Poll(3, 1s);
  ASSERT_TRUE(records.ok());
  ASSERT_EQ(records->size(), 3u);
  ExpectMessagesAt(*records, 5);

  ASSERT_TRUE(consumer->Seek(0, 95));  // forwards, across the frame boundary
  records = consumer->Poll(10, 1s);
  ASSERT_TRUE(records.ok());
  ASSERT_EQ(records->size(), 10u);
  ExpectMessagesAt(*records, 95);

  EXPECT_EQ(consumer->Seek(0, 121).error().code, Errc::kInvalidArgument);
  EXPECT_EQ(consumer->Seek(0, -1).error().code, Errc::kInvalidArgument);
  EXPECT_EQ(consumer->Seek(1, 0).error().code, Errc::kInvalidArgument);
  EXPECT_TRUE(consumer->Seek(0, 120));
  EXPECT_EQ(consumer->Lag(), 0);
}

TEST_F(EmbeddedBusTest, SmallPollsReadManyFramesInOrder) {
  options_.max_frame_bytes = 64;  // a few messages per frame when calls share a group
  auto bus = Open();
  auto producer = bus->NewProducer();
  for (int i = 0; i < 30; ++i) producer->Produce(Messages(i * 7, 7), [](Status) {});
  ASSERT_TRUE(producer->Flush(5s));
  auto consumer = bus->NewConsumer("");
  auto records = PollUntil(*consumer, 210, 5s, /*max_per_poll=*/4);
  ASSERT_EQ(records.size(), 210u);
  ExpectMessagesAt(records, 0);
}

TEST_F(EmbeddedBusTest, GroupsKeepIndependentCommittedOffsetsAcrossRestarts) {
  {
    auto bus = Open();
    auto producer = bus->NewProducer();
    ASSERT_TRUE(ProduceAndWait(*producer, Messages(0, 20)));
    auto aggregator = bus->NewConsumer("aggregator");
    auto alerts = bus->NewConsumer("alerts");
    ASSERT_EQ(PollUntil(*aggregator, 20).size(), 20u);
    ASSERT_TRUE(aggregator->Commit(0, 12));
    ASSERT_TRUE(alerts->Commit(0, 3));
    EXPECT_EQ(alerts->Commit(0, 21).error().code, Errc::kInvalidArgument);
    EXPECT_EQ(alerts->Commit(1, 3).error().code, Errc::kInvalidArgument);
  }
  auto bus = Open();
  auto aggregator = bus->NewConsumer("aggregator");
  auto alerts = bus->NewConsumer("alerts");
  auto fresh = bus->NewConsumer("archiver");
  EXPECT_EQ(aggregator->Lag(), 8);
  EXPECT_EQ(alerts->Lag(), 17);
  EXPECT_EQ(fresh->Lag(), 20);
  auto a = aggregator->Poll(100, 1s);
  ASSERT_TRUE(a.ok());
  ASSERT_EQ(a->size(), 8u);
  ExpectMessagesAt(*a, 12);
  auto b = alerts->Poll(100, 1s);
  ASSERT_TRUE(b.ok());
  ASSERT_EQ(b->size(), 17u);
  ExpectMessagesAt(*b, 3);
}

TEST_F(EmbeddedBusTest, RegisteredGroupHoldsRetentionAcrossRestartsBeforeItCommits) {
  {
    auto bus = Open();
    auto producer = bus->NewProducer();
    ASSERT_TRUE(ProduceAndWait(*producer, Messages(0, 10)));
    auto late = bus->NewConsumer("late");  // registered, never commits
  }
  auto bus = Open();
  auto aggregator = bus->NewConsumer("aggregator");
  ASSERT_TRUE(aggregator->Commit(0, 10));
  ASSERT_TRUE(bus->ApplyRetention());
  EXPECT_EQ(bus->BeginOffset(), 0);
  auto late = bus->NewConsumer("late");
  auto records = PollUntil(*late, 10);
  ASSERT_EQ(records.size(), 10u);
  ExpectMessagesAt(records, 0);
}

TEST_F(EmbeddedBusTest, AnonymousConsumerCannotCommit) {
  auto bus = Open();
  auto consumer = bus->NewConsumer("");
  EXPECT_EQ(consumer->Commit(0, 0).error().code, Errc::kInvalidArgument);
}

TEST_F(EmbeddedBusTest, RetentionDeletesOnlyFramesEveryGroupCommitted) {
  auto bus = Open();
  auto producer = bus->NewProducer();
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(ProduceAndWait(*producer, Messages(i * 10, 10)));
  auto aggregator = bus->NewConsumer("aggregator");
  auto alerts = bus->NewConsumer("alerts");
  ASSERT_TRUE(aggregator->Commit(0, 55));
  ASSERT_TRUE(alerts->Commit(0, 30));
  ASSERT_TRUE(bus->ApplyRetention());
  // Frames [0,10) [10,20) [20,30) are below both; [30,40) is what alerts reads next.
  EXPECT_EQ(bus->BeginOffset(), 30);
  EXPECT_EQ(bus->GetStats().messages_deleted, 30u);
  ASSERT_TRUE(alerts->Seek(0, 30));
  auto kept = PollUntil(*alerts, 70);
  ASSERT_EQ(kept.size(), 70u);
  ExpectMessagesAt(kept, 30);

  ASSERT_TRUE(alerts->Commit(0, 100));
  ASSERT_TRUE(bus->ApplyRetention());
  EXPECT_EQ(bus->BeginOffset(), 50);  // aggregator still needs [55, 60)

  // A reader positioned in the deleted range continues at the first stored offset.
  auto reader = bus->NewConsumer("");
  ASSERT_TRUE(reader->Seek(0, 0));
  auto records = reader->Poll(5, 1s);
  ASSERT_TRUE(records.ok());
  ASSERT_EQ(records->size(), 5u);
  ExpectMessagesAt(*records, 50);
}

TEST_F(EmbeddedBusTest, OffsetsKeepIncreasingAfterRetentionEmptiedTheLog) {
  {
    auto bus = Open();
    auto producer = bus->NewProducer();
    ASSERT_TRUE(ProduceAndWait(*producer, Messages(0, 25)));
    auto consumer = bus->NewConsumer("aggregator");
    ASSERT_TRUE(consumer->Commit(0, 25));
    ASSERT_TRUE(bus->ApplyRetention());
    EXPECT_EQ(bus->BeginOffset(), 25);
    EXPECT_EQ(bus->EndOffset(), 25);
  }
  auto bus = Open();
  EXPECT_EQ(bus->BeginOffset(), 25);
  EXPECT_EQ(bus->EndOffset(), 25);
  auto producer = bus->NewProducer();
  ASSERT_TRUE(ProduceAndWait(*producer, Messages(25, 5)));
  auto consumer = bus->NewConsumer("aggregator");
  auto records = PollUntil(*consumer, 5);
  ASSERT_EQ(records.size(), 5u);
  ExpectMessagesAt(records, 25);
}

TEST_F(EmbeddedBusTest, MinEndOffsetMovesTheEndOfAnOlderLogForGood) {
  // A bus.db older than its consumers' positions (the store restored without it): new records
  // get offsets at or past those positions, not offsets the consumers already passed.
  {
    auto bus = Open();
    auto producer = bus->NewProducer();
    ASSERT_TRUE(ProduceAndWait(*producer, Messages(0, 10)));
  }
  options_.min_end_offset = 100;
  {
    auto bus = Open();
    EXPECT_EQ(bus->FoundEndOffset(), 10);
    EXPECT_EQ(bus->EndOffset(), 100);
    EXPECT_EQ(bus->BeginOffset(), 0);  // the older records stay readable
    auto producer = bus->NewProducer();
    ASSERT_TRUE(ProduceAndWait(*producer, Messages(100, 5)));
    auto consumer = bus->NewConsumer("");
    ASSERT_TRUE(consumer->Seek(0, 100));
    auto records = PollUntil(*consumer, 5);
    ASSERT_EQ(records.size(), 5u);
    ExpectMessagesAt(records, 100);
  }
  options_.min_end_offset = 50;  // below the end: no effect; the moved end was persisted
  auto bus = Open();
  EXPECT_EQ(bus->FoundEndOffset(), 105);
  EXPECT_EQ(bus->EndOffset(), 105);
}

TEST_F(EmbeddedBusTest, MinEndOffsetOnAFreshFile) {
  options_.min_end_offset = 7;
  {
    auto bus = Open();
    EXPECT_EQ(bus->FoundEndOffset(), 0);
    EXPECT_EQ(bus->BeginOffset(), 7);
    auto producer = bus->NewProducer();
    ASSERT_TRUE(ProduceAndWait(*producer, Messages(7, 3)));
  }
  options_.min_end_offset = 0;
  auto bus = Open();
  EXPECT_EQ(bus->EndOffset(), 10);
  auto consumer = bus->NewConsumer("aggregator");
  auto records = PollUntil(*consumer, 3);
  ASSERT_EQ(records.size(), 3u);
  ExpectMessagesAt(records, 7);
}

TEST_F(EmbeddedBusTest, WithoutGroupsNothingIsDeleted) {
  auto bus = Open();
  auto producer = bus->NewProducer();
  ASSERT_TRUE(ProduceAndWait(*producer, Messages(0, 10)));
  auto reader = bus->NewConsumer("");  // anonymous readers do not hold back retention...
  ASSERT_TRUE(bus->ApplyRetention());
  EXPECT_EQ(bus->BeginOffset(), 0);  // ...and nothing is deleted without a registered group
  EXPECT_EQ(PollUntil(*reader, 10).size(), 10u);
}

TEST_F(EmbeddedBusTest, RetentionRunsPeriodically) {
  options_.retention_check_interval = 5ms;
  auto bus = Open();
  auto producer = bus->NewProducer();
  ASSERT_TRUE(ProduceAndWait(*producer, Messages(0, 10)));
  ASSERT_TRUE(ProduceAndWait(*producer, Messages(10, 10)));
  auto consumer = bus->NewConsumer("aggregator");
  ASSERT_TRUE(consumer->Commit(0, 10));
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (bus->BeginOffset() != 10 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_EQ(bus->BeginOffset(), 10);
}

TEST_F(EmbeddedBusTest, RetentionInManySmallTransactionsDeletesEverything) {
  options_.max_frame_bytes = 1;
  auto bus = Open();
  auto producer = bus->NewProducer();
  // 600 frames (one per call): more than one retention transaction deletes.
  for (int i = 0; i < 600; ++i) producer->Produce(Messages(i, 1), [](Status) {});
  ASSERT_TRUE(producer->Flush(5s));
  auto consumer = bus->NewConsumer("aggregator");
  ASSERT_TRUE(consumer->Commit(0, 600));
  ASSERT_TRUE(bus->ApplyRetention());
  EXPECT_EQ(bus->BeginOffset(), 600);
  EXPECT_EQ(bus->GetStats().messages_deleted, 600u);
}

TEST_F(EmbeddedBusTest, SecondOpenOfTheSameFileIsRefused) {
  auto bus = Open();
  auto second = EmbeddedBus::Open(options_);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().code, Errc::kUnavailable);
  bus->Close();
  auto third = EmbeddedBus::Open(options_);  // Close releases the file
  EXPECT_TRUE(third.ok());
}

TEST_F(EmbeddedBusTest, OpenRefusesAFileThatIsNotABus) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(options_.path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "CREATE TABLE readings(x)", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  auto bus = EmbeddedBus::Open(options_);
  ASSERT_FALSE(bus.ok());
  EXPECT_EQ(bus.error().code, Errc::kCorruption);
}

TEST_F(EmbeddedBusTest, OpenRefusesBadOptionsAndMissingDirectories) {
  EmbeddedBusOptions options;
  EXPECT_EQ(EmbeddedBus::Open(options).error().code, Errc::kInvalidArgument);
  options.path = dir_.path() + "/missing/bus.db";
  EXPECT_EQ(EmbeddedBus::Open(options).error().code, Errc::kUnavailable);
  options.path = options_.path;
  options.max_pending_messages = 0;
  EXPECT_EQ(EmbeddedBus::Open(options).error().code, Errc::kInvalidArgument);
}

TEST_F(EmbeddedBusTest, CloseFromACallbackOnlyRequestsTheStop) {
  auto bus = Open();
  auto producer = bus->NewProducer();
  std::promise<void> closed;
  producer->Produce(Messages(0, 1), [&](Status) {
    bus->Close();  // must not wait for the writer thread it runs on
    closed.set_value();
  });
  ASSERT_EQ(closed.get_future().wait_for(10s), std::future_status::ready);
  bus->Close();
  EXPECT_EQ(ProduceAndWait(*producer, Messages(1, 1)).error().code, Errc::kUnavailable);
}

}  // namespace
}  // namespace iot::bus
