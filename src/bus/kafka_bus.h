// kafka_bus.h: the bus on Apache Kafka (BUS=kafka), through librdkafka.
//
//   KafkaOptions o{.bootstrap_servers = "kafka:9092"};
//   IOT_RETURN_IF_ERROR(EnsureTopics(o, {{"telemetry.raw", 6, 1}}, /*create=*/true, 30s));
//   auto producer = KafkaProducer::Create({.kafka = o, .topic = "telemetry.raw"});
//   auto consumer = KafkaConsumer::Create({.kafka = o, .topic = "telemetry.raw",
//                                          .group = "iotd-aggregator"});
//
// KafkaProducer keys every message by its key (the device id: one device's readings land on one
// partition and keep their order), with an idempotent producer and acks=all, so the done callback
// reports Ok only once every replica in sync has the message. It refuses at once (kUnavailable)
// while the broker is unreachable, and (kResourceExhausted) when more than max_pending messages
// wait for their acknowledgement, so ingest answers 503 instead of queueing without bound.
//
// KafkaConsumer reads one topic in a consumer group. Partitions are assigned by the group; the
// AssignmentListener (the worker) says where each starts (its checkpoint in the store, which is
// the truth; the group's committed offsets are only a copy for tools such as
// kafka-consumer-groups.sh) and is told before partitions are revoked, so that it can finish what
// it holds. Offsets are never committed automatically.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "bus/bus.h"
#include "core/result.h"

namespace iot::bus {

struct KafkaOptions {
  std::string bootstrap_servers;  // KAFKA_BOOTSTRAP_SERVERS: host:port[,host:port...]
  std::string client_id = "iotd";
  // librdkafka properties (KAFKA_CONFIG), applied after iotd's own defaults, so they win: TLS and
  // SASL settings, or tuning (see docs/kafka.md).
  std::vector<std::pair<std::string, std::string>> properties;
};

// ParseKafkaProperties parses "key=value;key=value" (KAFKA_CONFIG); whitespace around keys and
// values is trimmed; an entry without '=' is an error naming it.
Result<std::vector<std::pair<std::string, std::string>>> ParseKafkaProperties(
    const std::string& text);

struct TopicSpec {
  std::string name;
  int partitions = 6;
  int replication_factor = 1;
};

// EnsureTopics checks that every topic exists, creating the missing ones when `create` is set.
// It waits up to `timeout` for the cluster to answer. Errors: kUnavailable (no broker answered),
// kNotFound (a topic is missing and `create` is off: the message says how to create it), or the
// broker's reason for refusing to create one.
Status EnsureTopics(const KafkaOptions& options, const std::vector<TopicSpec>& topics, bool create,
                    std::chrono::milliseconds timeout);

struct KafkaProducerOptions {
  KafkaOptions kafka;
  std::string topic;
  std::chrono::milliseconds linger{5};         // KAFKA_LINGER: wait to fill a batch
  std::size_t batch_bytes = 1024 * 1024;       // KAFKA_BATCH_BYTES: per partition request
  std::string compression = "lz4";             // KAFKA_COMPRESSION: none|gzip|snappy|lz4|zstd
  std::chrono::milliseconds delivery_timeout{10000};  // KAFKA_DELIVERY_TIMEOUT
  std::size_t max_pending = 500000;            // KAFKA_MAX_PENDING: unacknowledged messages
  std::chrono::milliseconds health_interval{1000};  // how often Ready() is refreshed
};

// KafkaProducer implements Producer on one topic. Thread-safe. Two threads of its own: one serves
// delivery reports (the done callbacks run there), one refreshes the broker's health once per
// health_interval (a metadata request).
class KafkaProducer final : public Producer {
 public:
  static Result<std::unique_ptr<KafkaProducer>> Create(const KafkaProducerOptions& options);
  ~KafkaProducer() override;
  KafkaProducer(const KafkaProducer&) = delete;
  KafkaProducer& operator=(const KafkaProducer&) = delete;

  void Produce(std::vector<Message> messages, Callback done) override;
  // Ready: the last metadata request succeeded and the topic has a leader for every partition.
  bool Ready() const override { return ready_.load(std::memory_order_relaxed); }
  Status Flush(std::chrono::milliseconds timeout) override;
  // Pending is how many produced messages wait for their acknowledgement.
  std::int64_t Pending() const { return pending_.load(std::memory_order_relaxed); }

  struct Impl;

 private:
  explicit KafkaProducer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  std::atomic<bool>& ready_;
  std::atomic<std::int64_t>& pending_;
};

struct KafkaConsumerOptions {
  KafkaOptions kafka;
  std::string topic;
  std::string group;  // the consumer group id: one per role (aggregator, alerts)
  // How long the group waits for a silent member (a killed process) before moving its partitions.
  std::chrono::milliseconds session_timeout{10000};  // KAFKA_SESSION_TIMEOUT
  // Commit waits for the broker's answer (iotd dlq replay) instead of returning at once.
  bool synchronous_commit = false;
  // from_latest: a partition without a committed offset (and no StartOffset) starts at its end,
  // not at its earliest record (the dashboard's live stream, which commits nothing).
  bool from_latest = false;
};

// KafkaConsumer implements Consumer on one topic in one group. Not thread-safe except Wakeup,
// Lag and Lags: one thread polls (and gets the listener's calls).
class KafkaConsumer final : public Consumer {
 public:
  static Result<std::unique_ptr<KafkaConsumer>> Create(const KafkaConsumerOptions& options);
  ~KafkaConsumer() override;
  KafkaConsumer(const KafkaConsumer&) = delete;
  KafkaConsumer& operator=(const KafkaConsumer&) = delete;

  Status Subscribe(AssignmentListener& listener) override;
  Result<std::vector<Record>> Poll(std::size_t max_records,
                                   std::chrono::milliseconds timeout) override;
  Status Seek(std::int32_t partition, std::int64_t next_offset) override;
  // Commit stores the offset in the group, asynchronously unless synchronous_commit (for the
  // workers it is a copy for tools; the store holds their position).
  Status Commit(std::int32_t partition, std::int64_t next_offset) override;
  std::int64_t Lag() const override;
  std::vector<PartitionLag> Lags() const override;
  void Wakeup() override;
  // EndOffsets asks the broker for the next offset of every partition of the topic (where the
  // records produced so far end).
  Result<std::map<std::int32_t, std::int64_t>> EndOffsets(std::chrono::milliseconds timeout);
  // Close leaves the group at once (its partitions move to the other members without waiting for
  // the session timeout); the listener is not called any more. Poll fails afterwards.
  void Close() override;

  struct Impl;

 private:
  explicit KafkaConsumer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace iot::bus
