// kafka_test.cc: the Kafka test broker starts, carries messages (produced with acks=all and
// consumed by a consumer group, with librdkafka directly: the client the Kafka bus uses, but not
// the bus), comes back from SIGKILL on its ports with its messages and committed offsets (checked
// with kcat too), cleans up after itself, and fails loudly when its jars are missing.
#include "testing/kafka.h"

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <librdkafka/rdkafka.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testing/test_util.h"

namespace iot::testing {
namespace {

const auto* const kKafka = KafkaEnvironment::Register();

constexpr int kPartitions = 3;
constexpr int kMessages = 100;
constexpr auto kClientTimeout = std::chrono::seconds(30);
const char* const kKcat = "/usr/bin/kcat";

// CanConnect is whether a TCP connection to 127.0.0.1:port succeeds.
bool CanConnect(uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

// RunCommand runs a shell command with a 60 s limit and returns its exit code and its output
// (stdout and stderr together).
std::pair<int, std::string> RunCommand(const std::string& command) {
  std::string output;
  FILE* pipe = ::popen(("timeout 60 " + command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return {-1, "popen failed"};
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, pipe)) > 0;) output.append(buf, n);
  const int status = ::pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

struct ClientDeleter {
  void operator()(rd_kafka_t* rk) const { rd_kafka_destroy(rk); }
};
using Client = std::unique_ptr<rd_kafka_t, ClientDeleter>;

struct PartitionListDeleter {
  void operator()(rd_kafka_topic_partition_list_t* l) const {
    rd_kafka_topic_partition_list_destroy(l);
  }
};
using PartitionList = std::unique_ptr<rd_kafka_topic_partition_list_t, PartitionListDeleter>;

// NewClient makes a librdkafka client of `type` with `settings`; null (and the test fails) if
// librdkafka rejects them.
Client NewClient(rd_kafka_type_t type, const std::map<std::string, std::string>& settings,
                 void (*dr_msg_cb)(rd_kafka_t*, const rd_kafka_message_t*, void*) = nullptr,
                 void* opaque = nullptr) {
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  char err[512];
  for (const auto& [key, value] : settings) {
    if (rd_kafka_conf_set(conf, key.c_str(), value.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK) {
      ADD_FAILURE() << key << ": " << err;
      rd_kafka_conf_destroy(conf);
      return nullptr;
    }
  }
  if (dr_msg_cb != nullptr) rd_kafka_conf_set_dr_msg_cb(conf, dr_msg_cb);
  rd_kafka_conf_set_opaque(conf, opaque);
  rd_kafka_t* rk = rd_kafka_new(type, conf, err, sizeof err);
  if (rk == nullptr) {
    ADD_FAILURE() << "rd_kafka_new: " << err;
    rd_kafka_conf_destroy(conf);
    return nullptr;
  }
  if (type == RD_KAFKA_CONSUMER) rd_kafka_poll_set_consumer(rk);
  return Client(rk);
}

std::string Payload(int i) { return "message-" + std::to_string(i); }

std::set<std::string> AllPayloads() {
  std::set<std::string> all;
  for (int i = 0; i < kMessages; ++i) all.insert(Payload(i));
  return all;
}

struct Delivery {
  int delivered = 0;
  std::string first_error;
};

// Produce sends kMessages messages to `topic` with acks=all, message i to partition i % 3, and
// waits until the broker acknowledged every one.
void Produce(const std::string& bootstrap, const std::string& topic) {
  Delivery delivery;
  auto on_delivery = [](rd_kafka_t*, const rd_kafka_message_t* m, void* opaque) {
    auto* d = static_cast<Delivery*>(opaque);
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      ++d->delivered;
    } else if (d->first_error.empty()) {
      d->first_error = rd_kafka_err2str(m->err);
    }
  };
  Client producer =
      NewClient(RD_KAFKA_PRODUCER,
                {{"bootstrap.servers", bootstrap}, {"acks", "all"}, {"enable.idempotence", "true"}},
                on_delivery, &delivery);
  ASSERT_NE(producer, nullptr);
  // rd_kafka_produce rather than rd_kafka_producev: the latter's macros use C casts.
  rd_kafka_topic_t* rkt = rd_kafka_topic_new(producer.get(), topic.c_str(), nullptr);
  ASSERT_NE(rkt, nullptr);
  for (int i = 0; i < kMessages; ++i) {
    std::string key = "device-" + std::to_string(i);
    std::string value = Payload(i);
    const int rc = rd_kafka_produce(rkt, i % kPartitions, RD_KAFKA_MSG_F_COPY, value.data(),
                                    value.size(), key.data(), key.size(), nullptr);
    ASSERT_EQ(rc, 0) << rd_kafka_err2str(rd_kafka_last_error());
  }
  rd_kafka_topic_destroy(rkt);
  const auto timeout_ms = std::chrono::milliseconds(kClientTimeout).count();
  ASSERT_EQ(rd_kafka_flush(producer.get(), static_cast<int>(timeout_ms)),
            RD_KAFKA_RESP_ERR_NO_ERROR);
  EXPECT_EQ(delivery.delivered, kMessages) << delivery.first_error;
}

// NewGroupConsumer is a consumer in `group`, subscribed to `topic`, that commits only when told.
Client NewGroupConsumer(const std::string& bootstrap, const std::string& group,
                        const std::string& topic) {
  Client consumer = NewClient(RD_KAFKA_CONSUMER, {{"bootstrap.servers", bootstrap},
                                                  {"group.id", group},
                                                  {"enable.auto.commit", "false"},
                                                  {"auto.offset.reset", "earliest"}});
  if (consumer == nullptr) return nullptr;
  PartitionList topics(rd_kafka_topic_partition_list_new(1));
  rd_kafka_topic_partition_list_add(topics.get(), topic.c_str(), RD_KAFKA_PARTITION_UA);
  if (const rd_kafka_resp_err_t err = rd_kafka_subscribe(consumer.get(), topics.get()); err) {
    ADD_FAILURE() << "subscribe: " << rd_kafka_err2str(err);
    return nullptr;
  }
  return consumer;
}

// Consume polls until `n` messages arrived (or 30 s passed) and returns their payloads by
// partition. Consumer errors are transient here (librdkafka retries); the last one is reported
// if the messages do not come.
std::map<int32_t, std::vector<std::string>> Consume(rd_kafka_t* consumer, int n) {
  std::map<int32_t, std::vector<std::string>> got;
  int count = 0;
  std::string last_error = "none";
  const auto deadline = std::chrono::steady_clock::now() + kClientTimeout;
  while (count < n && std::chrono::steady_clock::now() < deadline) {
    rd_kafka_message_t* m = rd_kafka_consumer_poll(consumer, 100);
    if (m == nullptr) continue;
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      got[m->partition].emplace_back(static_cast<const char*>(m->payload), m->len);
      ++count;
    } else {
      last_error = rd_kafka_message_errstr(m);
    }
    rd_kafka_message_destroy(m);
  }
  EXPECT_EQ(count, n) << "consumer errors, the last: " << last_error;
  return got;
}

// Committed is the group's committed offset of each partition of `topic` (RD_KAFKA_OFFSET_INVALID
// for none), retried while the group coordinator is still loading after a restart.
std::map<int32_t, int64_t> Committed(rd_kafka_t* consumer, const std::string& topic) {
  std::map<int32_t, int64_t> offsets;
  PartitionList list(rd_kafka_topic_partition_list_new(kPartitions));
  for (int32_t p = 0; p < kPartitions; ++p) {
    rd_kafka_topic_partition_list_add(list.get(), topic.c_str(), p);
  }
  const auto deadline = std::chrono::steady_clock::now() + kClientTimeout;
  rd_kafka_resp_err_t err;
  while ((err = rd_kafka_committed(consumer, list.get(), 5000)) != RD_KAFKA_RESP_ERR_NO_ERROR &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // back off, then ask again
  }
  EXPECT_EQ(err, RD_KAFKA_RESP_ERR_NO_ERROR) << rd_kafka_err2str(err);
  for (int i = 0; i < list->cnt; ++i) {
    EXPECT_EQ(list->elems[i].err, RD_KAFKA_RESP_ERR_NO_ERROR) << rd_kafka_err2str(err);
    offsets[list->elems[i].partition] = list->elems[i].offset;
  }
  return offsets;
}

std::unique_ptr<KafkaBroker> MustStart() {
  auto broker = KafkaBroker::Start();
  if (!broker.ok()) {
    ADD_FAILURE() << broker.error().message;
    return nullptr;
  }
  return std::move(*broker);
}

TEST(KafkaEnvironment, SharedBrokerCarriesMessagesToAConsumerGroup) {
  const std::string bootstrap = KafkaEnvironment::BootstrapServers();
  ASSERT_FALSE(bootstrap.empty());
  EXPECT_EQ(bootstrap, "127.0.0.1:" + std::to_string(KafkaEnvironment::Broker()->port()));
  const std::string topic = KafkaEnvironment::UniqueTopicName();
  IOT_ASSERT_OK(CreateTopic(bootstrap, topic, kPartitions));

  Produce(bootstrap, topic);
  Client consumer = NewGroupConsumer(bootstrap, topic + "-group", topic);
  ASSERT_NE(consumer, nullptr);
  const auto got = Consume(consumer.get(), kMessages);
  rd_kafka_consumer_close(consumer.get());

  std::set<std::string> payloads;
  for (const auto& [partition, values] : got) payloads.insert(values.begin(), values.end());
  EXPECT_EQ(payloads, AllPayloads());
  // Message i went to partition i % 3: 34, 33 and 33 of them, in the order they were sent.
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got.at(0).size(), 34u);
  EXPECT_EQ(got.at(1).size(), 33u);
  EXPECT_EQ(got.at(2).size(), 33u);
  EXPECT_EQ(got.at(2).front(), Payload(2));
  EXPECT_EQ(got.at(2).back(), Payload(98));
}

TEST(KafkaBroker, KillThenRestartKeepsMessagesAndCommittedOffsets) {
  auto broker = MustStart();
  ASSERT_NE(broker, nullptr);
  const std::string bootstrap = broker->BootstrapServers();
  const std::string topic = "restart";
  const std::string group = "restart-group";
  IOT_ASSERT_OK(CreateTopic(bootstrap, topic, kPartitions));
  Produce(bootstrap, topic);

  // A group member takes 40 messages and commits where it stopped.
  std::set<std::string> first;
  std::map<int32_t, int64_t> committed;
  {
    Client consumer = NewGroupConsumer(bootstrap, group, topic);
    ASSERT_NE(consumer, nullptr);
    for (const auto& [partition, values] : Consume(consumer.get(), 40)) {
      first.insert(values.begin(), values.end());
    }
    ASSERT_EQ(rd_kafka_commit(consumer.get(), nullptr, /*async=*/0), RD_KAFKA_RESP_ERR_NO_ERROR);
    committed = Committed(consumer.get(), topic);
    rd_kafka_consumer_close(consumer.get());
  }
  ASSERT_EQ(first.size(), 40u);
  // Each partition's committed offset is how many of its messages were taken (no offset at all,
  // RD_KAFKA_OFFSET_INVALID, where none were).
  int64_t committed_total = 0;
  for (const auto& [partition, offset] : committed) {
    if (offset != RD_KAFKA_OFFSET_INVALID) committed_total += offset;
  }
  ASSERT_EQ(committed_total, 40);

  const pid_t old_pid = broker->pid();
  IOT_ASSERT_OK(broker->Kill());
  EXPECT_FALSE(broker->running());
  EXPECT_EQ(::kill(old_pid, 0), -1);  // reaped: no such process
  EXPECT_FALSE(CanConnect(broker->port()));

  IOT_ASSERT_OK(broker->Restart());
  EXPECT_TRUE(broker->running());
  EXPECT_NE(broker->pid(), old_pid);
  EXPECT_EQ(broker->BootstrapServers(), bootstrap);

  // The group resumes where it committed: the other 60 messages, none of the first 40 again.
  {
    Client consumer = NewGroupConsumer(bootstrap, group, topic);
    ASSERT_NE(consumer, nullptr);
    EXPECT_EQ(Committed(consumer.get(), topic), committed);
    std::set<std::string> rest;
    for (const auto& [partition, values] : Consume(consumer.get(), kMessages - 40)) {
      for (const auto& v : values) {
        EXPECT_EQ(first.count(v), 0u) << v << " was delivered again after its offset was committed";
        rest.insert(v);
      }
    }
    rd_kafka_consumer_close(consumer.get());
    std::set<std::string> all = first;
    all.insert(rest.begin(), rest.end());
    EXPECT_EQ(all, AllPayloads());
  }

  // An independent client sees the topic and all 100 messages.
  const auto [list_code, list] = RunCommand(std::string(kKcat) + " -b " + bootstrap + " -L -m 10");
  EXPECT_EQ(list_code, 0) << list;
  EXPECT_NE(list.find("topic \"restart\" with 3 partitions"), std::string::npos) << list;
  const auto [read_code, read] = RunCommand(std::string(kKcat) + " -b " + bootstrap +
                                            " -C -t restart -o beginning -e -q -f '%s\\n'");
  EXPECT_EQ(read_code, 0) << read;
  std::set<std::string> lines;
  size_t count = 0;
  for (size_t at = 0, nl; (nl = read.find('\n', at)) != std::string::npos; at = nl + 1, ++count) {
    lines.insert(read.substr(at, nl - at));
  }
  EXPECT_EQ(count, static_cast<size_t>(kMessages)) << read;
  EXPECT_EQ(lines, AllPayloads());
}

TEST(KafkaBroker, StopKeepsThePortForRestartAndDestructionRemovesTheData) {
  auto broker = MustStart();
  ASSERT_NE(broker, nullptr);
  const uint16_t port = broker->port();
  IOT_ASSERT_OK(CreateTopic(broker->BootstrapServers(), "kept", 1));

  IOT_ASSERT_OK(broker->Stop());
  EXPECT_FALSE(broker->running());
  EXPECT_EQ(broker->pid(), -1);
  EXPECT_FALSE(CanConnect(port));
  IOT_ASSERT_OK(broker->Stop());  // stopping twice is harmless

  IOT_ASSERT_OK(broker->Restart());
  EXPECT_EQ(broker->port(), port);
  EXPECT_TRUE(CanConnect(port));
  // The topic is still there: creating it again is refused.
  const Status again = CreateTopic(broker->BootstrapServers(), "kept", 1);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, Errc::kAlreadyExists) << again.error().message;

  const pid_t pid = broker->pid();
  const std::string root = broker->root_dir();
  ASSERT_GT(pid, 0);
  ASSERT_TRUE(std::filesystem::exists(broker->data_dir()));
  ASSERT_TRUE(std::filesystem::exists(root + "/kafka.log"));
  broker.reset();
  EXPECT_EQ(::kill(pid, 0), -1);  // reaped: no such process
  EXPECT_EQ(errno, ESRCH);
  EXPECT_FALSE(std::filesystem::exists(root));
}

TEST(KafkaBroker, MissingJarsFailNamingTheBuildScript) {
  const char* old = std::getenv("KAFKA_LIBS");
  const std::string saved = old == nullptr ? "" : old;
  ::setenv("KAFKA_LIBS", "/nonexistent/kafka/libs", 1);
  auto broker = KafkaBroker::Start();
  if (old == nullptr) {
    ::unsetenv("KAFKA_LIBS");
  } else {
    ::setenv("KAFKA_LIBS", saved.c_str(), 1);
  }
  ASSERT_FALSE(broker.ok());
  EXPECT_EQ(broker.error().code, Errc::kNotFound);
  EXPECT_NE(broker.error().message.find("scripts/kafka.sh build"), std::string::npos)
      << broker.error().message;
}

TEST(CreateTopic, RefusesAnExistingTopicAndAnInvalidName) {
  const std::string bootstrap = KafkaEnvironment::BootstrapServers();
  ASSERT_FALSE(bootstrap.empty());
  const std::string topic = KafkaEnvironment::UniqueTopicName();
  IOT_ASSERT_OK(CreateTopic(bootstrap, topic, 2));
  const Status again = CreateTopic(bootstrap, topic, 2);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, Errc::kAlreadyExists) << again.error().message;
  const Status invalid = CreateTopic(bootstrap, "no spaces allowed", 1);
  ASSERT_FALSE(invalid.ok());
  EXPECT_EQ(invalid.error().code, Errc::kInvalidArgument) << invalid.error().message;
}

TEST(KafkaEnvironment, TopicNamesAreUniqueAndValid) {
  const std::string a = KafkaEnvironment::UniqueTopicName();
  const std::string b = KafkaEnvironment::UniqueTopicName();
  EXPECT_NE(a, b);
  for (const auto& name : {a, b, KafkaEnvironment::UniqueTopicName(std::string(300, 'x'))}) {
    EXPECT_LE(name.size(), 249u);
    EXPECT_EQ(name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                     "0123456789_-"),
              std::string::npos)
        << name;
  }
}

}  // namespace
}  // namespace iot::testing
