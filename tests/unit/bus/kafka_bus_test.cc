// kafka_bus_test.cc: the Kafka bus (bus/kafka_bus.h) against a real Apache Kafka broker (3.9,
// KRaft, started by tests/testing/kafka.h): topics, acknowledged production keyed by device,
// routing headers, consumer groups with start offsets from the owner, rebalances between two
// members, lag, back-pressure, and a broker that dies and comes back.
//
// One process runs every case (one broker start), see CMakeLists.txt.
#include "bus/kafka_bus.h"

#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "testing/kafka.h"
#include "testing/test_util.h"

namespace iot::bus {
namespace {

using namespace std::chrono_literals;
using ::iot::testing::KafkaEnvironment;

const auto* const kKafka = KafkaEnvironment::Register();

KafkaOptions Options(const std::string& bootstrap) {
  KafkaOptions o;
  o.bootstrap_servers = bootstrap;
  o.client_id = "iotd-test";
  return o;
}

std::unique_ptr<KafkaProducer> MakeProducer(const std::string& bootstrap, const std::string& topic,
                                        std::size_t max_pending = 100000) {
  KafkaProducerOptions o;
  o.kafka = Options(bootstrap);
  o.topic = topic;
  o.delivery_timeout = 5s;
  o.max_pending = max_pending;
  o.health_interval = 200ms;
  auto p = KafkaProducer::Create(o);
  EXPECT_TRUE(p.ok()) << p.error().message;
  return p.ok() ? std::move(*p) : nullptr;
}

std::unique_ptr<KafkaConsumer> MakeConsumer(const std::string& bootstrap, const std::string& topic,
                                        const std::string& group) {
  KafkaConsumerOptions o;
  o.kafka = Options(bootstrap);
  o.topic = topic;
  o.group = group;
  o.session_timeout = 6s;
  auto c = KafkaConsumer::Create(o);
  EXPECT_TRUE(c.ok()) << c.error().message;
  return c.ok() ? std::move(*c) : nullptr;
}

// ProduceAll produces `messages` and waits for the callback.
Status ProduceAll(Producer& producer, std::vector<Message> messages) {
  std::promise<Status> promise;
  auto done = promise.get_future();
  producer.Produce(std::move(messages), [&promise](Status s) { promise.set_value(s); });
  if (done.wait_for(30s) != std::future_status::ready) {
    return MakeError(Errc::kDeadlineExceeded, "no delivery report within 30 s");
  }
  return done.get();
}

// Listener answers start offsets from a map (nullopt when absent) and records what happens.
class Listener final : public AssignmentListener {
 public:
  std::map<std::int32_t, std::int64_t> starts;
  std::set<std::int32_t> assigned;
  int assignments = 0, revocations = 0;

  Result<std::optional<std::int64_t>> StartOffset(std::int32_t partition) override {
    auto it = starts.find(partition);
    if (it == starts.end()) return std::optional<std::int64_t>();
    return std::optional<std::int64_t>(it->second);
  }
  void Assigned(const std::vector<std::int32_t>& partitions) override {
    ++assignments;
    assigned.insert(partitions.begin(), partitions.end());
  }
  void Revoked(const std::vector<std::int32_t>& partitions) override {
    ++revocations;
    for (auto p : partitions) assigned.erase(p);
  }
};

// PollUntil polls `consumer` until `n` records arrived in all (or 30 s passed).
std::vector<Record> PollUntil(Consumer& consumer, std::size_t n) {
  std::vector<Record> out;
  auto deadline = std::chrono::steady_clock::now() + 30s;
  while (out.size() < n && std::chrono::steady_clock::now() < deadline) {
    auto polled = consumer.Poll(1000, 100ms);
    if (!polled) continue;
    out.insert(out.end(), polled->begin(), polled->end());
  }
  return out;
}

std::vector<Message> Readings(int devices, int per_device) {
  std::vector<Message> messages;
  for (int i = 0; i < per_device; ++i) {
    for (int d = 0; d < devices; ++d) {
      messages.push_back(Message{"dev-" + std::to_string(d), "reading " + std::to_string(i)});
    }
  }
  return messages;
}

TEST(KafkaBus, EnsureTopicsCreatesWhatIsMissingOnceAndNamesWhatIsMissingWhenNotAllowedTo) {
  const std::string& bootstrap = KafkaEnvironment::BootstrapServers();
  ASSERT_FALSE(bootstrap.empty());
  const std::string a = KafkaEnvironment::UniqueTopicName("a");
  const std::string b = KafkaEnvironment::UniqueTopicName("b");
  auto missing = EnsureTopics(Options(bootstrap), {{a, 3, 1}}, /*create=*/false, 10s);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, Errc::kNotFound);
  EXPECT_NE(missing.error().message.find(a), std::string::npos) << missing.error().message;
  EXPECT_NE(missing.error().message.find("KAFKA_CREATE_TOPICS"), std::string::npos);

  IOT_ASSERT_OK(EnsureTopics(Options(bootstrap), {{a, 3, 1}, {b, 2, 1}}, true, 30s));
  IOT_ASSERT_OK(EnsureTopics(Options(bootstrap), {{a, 3, 1}, {b, 2, 1}}, true, 30s));  // again
  IOT_ASSERT_OK(EnsureTopics(Options(bootstrap), {{a, 3, 1}}, /*create=*/false, 10s));
  // The partitions exist: a key lands on each of them eventually.
  auto producer = MakeProducer(bootstrap, a);
  ASSERT_NE(producer, nullptr);
  IOT_ASSERT_OK(ProduceAll(*producer, Readings(30, 1)));
  auto consumer = MakeConsumer(bootstrap, a, "g-" + a);
  Listener listener;
  IOT_ASSERT_OK(consumer->Subscribe(listener));
  std::set<std::int32_t> partitions;
  for (const auto& r : PollUntil(*consumer, 30)) partitions.insert(r.partition);
  EXPECT_EQ(partitions, (std::set<std::int32_t>{0, 1, 2}));
}

TEST(KafkaBus, AcknowledgedMessagesAreAllConsumedEachDeviceOnOnePartitionInOrder) {
  const std::string& bootstrap = KafkaEnvironment::BootstrapServers();
  const std::string topic = KafkaEnvironment::UniqueTopicName();
  IOT_ASSERT_OK(testing::CreateTopic(bootstrap, topic, 4));
  auto producer = MakeProducer(bootstrap, topic);
  ASSERT_NE(producer, nullptr);
  EXPECT_TRUE(producer->Ready());
  auto messages = Readings(20, 25);  // 500
  messages[7].routing = Routing{"alerts", 123456789};
  IOT_ASSERT_OK(ProduceAll(*producer, messages));
  EXPECT_EQ(producer->Pending(), 0);

  auto consumer = MakeConsumer(bootstrap, topic, "g-" + topic);
  Listener listener;
  IOT_ASSERT_OK(consumer->Subscribe(listener));
  auto records = PollUntil(*consumer, 500);
  ASSERT_EQ(records.size(), 500u);
  EXPECT_EQ(listener.assigned, (std::set<std::int32_t>{0, 1, 2, 3}));
  std::map<std::string, std::set<std::int32_t>> partitions_of;
  std::map<std::string, std::vector<std::string>> order_of;
  std::set<std::pair<std::int32_t, std::int64_t>> positions;
  int routed = 0;
  for (const auto& r : records) {
    partitions_of[r.key].insert(r.partition);
    order_of[r.key].push_back(r.payload);
    EXPECT_TRUE(positions.insert({r.partition, r.offset}).second) << "a record came twice";
    EXPECT_GT(r.appended_at.time_since_epoch().count(), 0);
    if (r.routing.id) {
      ++routed;
      EXPECT_EQ(r.key, messages[7].key);
      EXPECT_EQ(r.routing, (Routing{"alerts", 123456789}));
    }
  }
  EXPECT_EQ(routed, 1);
  ASSERT_EQ(order_of.size(), 20u);
  for (const auto& [key, payloads] : order_of) {
    EXPECT_EQ(partitions_of[key].size(), 1u) << key;
    ASSERT_EQ(payloads.size(), 25u);
    for (int i = 0; i < 25; ++i) EXPECT_EQ(payloads[i], "reading " + std::to_string(i)) << key;
  }
  EXPECT_EQ(consumer->Lag(), 0);
}

TEST(KafkaBus, TheOwnersStartOffsetsWinAndCommitsAreWhereANewMemberStartsOtherwise) {
  const std::string& bootstrap = KafkaEnvironment::BootstrapServers();
  const std::string topic = KafkaEnvironment::UniqueTopicName();
  IOT_ASSERT_OK(testing::CreateTopic(bootstrap, topic, 1));
  auto producer = MakeProducer(bootstrap, topic);
  IOT_ASSERT_OK(ProduceAll(*producer, Readings(1, 10)));
  const std::string group = "g-" + topic;
  {
    auto consumer = MakeConsumer(bootstrap, topic, group);
    Listener listener;
    listener.starts[0] = 6;  // the store's checkpoint
    IOT_ASSERT_OK(consumer->Subscribe(listener));
    auto records = PollUntil(*consumer, 4);
    ASSERT_EQ(records.size(), 4u);
    EXPECT_EQ(records.front().offset, 6);
    EXPECT_EQ(records.back().offset, 9);
    // Seek moves an assigned partition back.
    IOT_ASSERT_OK(consumer->Seek(0, 8));
    records = PollUntil(*consumer, 2);
    ASSERT_EQ(records.size(), 2u);
    EXPECT_EQ(records.front().offset, 8);
    IOT_ASSERT_OK(consumer->Commit(0, 7));
    // An asynchronous commit: Close waits for it.
    consumer->Close();
    EXPECT_FALSE(consumer->Poll(10, 10ms).ok());
  }
  auto consumer = MakeConsumer(bootstrap, topic, group);
  Listener listener;  // no checkpoint: the group's committed offset
  IOT_ASSERT_OK(consumer->Subscribe(listener));
  auto records = PollUntil(*consumer, 3);
  ASSERT_EQ(records.size(), 3u);
  EXPECT_EQ(records.front().offset, 7);
}

TEST(KafkaBus, TwoMembersOfAGroupSplitThePartitionsAndTheLeaverHandsItsOnesOver) {
  const std::string& bootstrap = KafkaEnvironment::BootstrapServers();
  const std::string topic = KafkaEnvironment::UniqueTopicName();
  IOT_ASSERT_OK(testing::CreateTopic(bootstrap, topic, 4));
  const std::string group = "g-" + topic;
  auto first = MakeConsumer(bootstrap, topic, group);
  auto second = MakeConsumer(bootstrap, topic, group);
  Listener l1, l2;
  IOT_ASSERT_OK(first->Subscribe(l1));
  auto deadline = std::chrono::steady_clock::now() + 30s;
  while (std::chrono::steady_clock::now() < deadline && l1.assigned.size() != 4) {
    (void)first->Poll(100, 50ms);
  }
  ASSERT_EQ(l1.assigned.size(), 4u);
  // Both poll (rebalances are served inside Poll) until the group has settled on a split.
  IOT_ASSERT_OK(second->Subscribe(l2));
  deadline = std::chrono::steady_clock::now() + 60s;
  while (std::chrono::steady_clock::now() < deadline &&
         !(l1.assigned.size() == 2 && l2.assigned.size() == 2)) {
    (void)first->Poll(100, 50ms);
    (void)second->Poll(100, 50ms);
  }
  ASSERT_EQ(l1.assigned.size(), 2u);
  ASSERT_EQ(l2.assigned.size(), 2u);
  std::set<std::int32_t> all = l1.assigned;
  all.insert(l2.assigned.begin(), l2.assigned.end());
  EXPECT_EQ(all, (std::set<std::int32_t>{0, 1, 2, 3}));
  EXPECT_GE(l1.revocations, 1);  // it had all four before the second joined

  // The second leaves (Close): the first gets everything back without waiting for a timeout.
  second->Close();
  deadline = std::chrono::steady_clock::now() + 30s;
  while (std::chrono::steady_clock::now() < deadline && l1.assigned.size() != 4) {
    (void)first->Poll(100, 50ms);
  }
  EXPECT_EQ(l1.assigned.size(), 4u);
}

TEST(KafkaBus, LagIsWhatIsAppendedButNotYetPolledPerPartition) {
  const std::string& bootstrap = KafkaEnvironment::BootstrapServers();
  const std::string topic = KafkaEnvironment::UniqueTopicName();
  IOT_ASSERT_OK(testing::CreateTopic(bootstrap, topic, 1));
  auto producer = MakeProducer(bootstrap, topic);
  IOT_ASSERT_OK(ProduceAll(*producer, Readings(1, 4)));
  auto consumer = MakeConsumer(bootstrap, topic, "g-" + topic);
  Listener listener;
  IOT_ASSERT_OK(consumer->Subscribe(listener));
  ASSERT_EQ(PollUntil(*consumer, 4).size(), 4u);
  IOT_ASSERT_OK(ProduceAll(*producer, Readings(1, 10)));
  // The watermark comes with fetch responses: take records one at a time until the lag shows
  // exactly what is left.
  auto deadline = std::chrono::steady_clock::now() + 20s;
  std::size_t taken = 0;
  bool exact = false;
  while (std::chrono::steady_clock::now() < deadline && taken < 9) {
    auto lags = consumer->Lags();
    if (taken > 0 && lags.size() == 1 && lags[0].partition == 0 &&
        lags[0].lag == 10 - static_cast<std::int64_t>(taken)) {
      exact = true;
      break;
    }
    auto polled = consumer->Poll(1, 100ms);
    if (polled.ok()) taken += polled->size();
  }
  ASSERT_TRUE(exact) << "lag " << consumer->Lag() << " after taking " << taken << " of 10";
  EXPECT_EQ(consumer->Lag(), 10 - static_cast<std::int64_t>(taken));
  PollUntil(*consumer, 10 - taken);
  EXPECT_EQ(consumer->Lag(), 0);
}

TEST(KafkaBus, MoreUnacknowledgedMessagesThanAllowedAreRefusedWhole) {
  const std::string& bootstrap = KafkaEnvironment::BootstrapServers();
  const std::string topic = KafkaEnvironment::UniqueTopicName();
  IOT_ASSERT_OK(testing::CreateTopic(bootstrap, topic, 1));
  auto producer = MakeProducer(bootstrap, topic, /*max_pending=*/100);
  auto refused = ProduceAll(*producer, Readings(1, 101));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, Errc::kResourceExhausted);
  IOT_ASSERT_OK(ProduceAll(*producer, Readings(1, 100)));
  // Nothing of the refused call reached the topic.
  auto consumer = MakeConsumer(bootstrap, topic, "g-" + topic);
  Listener listener;
  IOT_ASSERT_OK(consumer->Subscribe(listener));
  auto records = PollUntil(*consumer, 101);
  EXPECT_EQ(records.size(), 100u);
}

TEST(KafkaBus, AnUnreachableBrokerIsRefusedAtOnceAndABrokerBackIsUsedAgain) {
  auto broker = testing::KafkaBroker::Start();
  ASSERT_TRUE(broker.ok()) << broker.error().message;
  const std::string bootstrap = (*broker)->BootstrapServers();
  const std::string topic = "outage";
  IOT_ASSERT_OK(EnsureTopics(Options(bootstrap), {{topic, 2, 1}}, true, 30s));
  auto producer = MakeProducer(bootstrap, topic);
  ASSERT_TRUE(producer->Ready());
  IOT_ASSERT_OK(ProduceAll(*producer, Readings(4, 5)));

  IOT_ASSERT_OK((*broker)->Kill());
  auto deadline = std::chrono::steady_clock::now() + 20s;
  while (producer->Ready() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_FALSE(producer->Ready());
  auto start = std::chrono::steady_clock::now();
  auto refused = ProduceAll(*producer, Readings(1, 1));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, Errc::kUnavailable);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);  // at once, not after a timeout

  IOT_ASSERT_OK((*broker)->Restart());
  deadline = std::chrono::steady_clock::now() + 30s;
  while (!producer->Ready() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_TRUE(producer->Ready());
  IOT_ASSERT_OK(ProduceAll(*producer, Readings(4, 5)));
  // Everything acknowledged before and after is there.
  auto consumer = MakeConsumer(bootstrap, topic, "g-outage");
  Listener listener;
  IOT_ASSERT_OK(consumer->Subscribe(listener));
  EXPECT_EQ(PollUntil(*consumer, 40).size(), 40u);
}

TEST(KafkaBus, ParseKafkaPropertiesTrimsAndNamesWhatIsMalformed) {
  auto p = ParseKafkaProperties(" security.protocol = SSL ;ssl.ca.location=/etc/ca.pem;; ");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(*p, (std::vector<std::pair<std::string, std::string>>{
                    {"security.protocol", "SSL"}, {"ssl.ca.location", "/etc/ca.pem"}}));
  auto bad = ParseKafkaProperties("a=b;oops");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("oops"), std::string::npos);
  // A property librdkafka does not know fails at creation, naming it.
  KafkaProducerOptions o;
  o.kafka.bootstrap_servers = "127.0.0.1:1";
  o.kafka.properties = {{"no.such.property", "1"}};
  o.topic = "t";
  auto made = KafkaProducer::Create(o);
  ASSERT_FALSE(made.ok());
  EXPECT_NE(made.error().message.find("no.such.property"), std::string::npos);
}

}  // namespace
}  // namespace iot::bus
