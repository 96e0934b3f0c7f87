// bus.h: the message bus between ingest and the workers.
//
// Ingest produces messages (a key, the device id, and a payload, an encoded reading); workers
// consume them in order per partition, at least once. Two implementations: `embedded_bus.cc`
// (an append-only log in a SQLite file, group-committed, for `iotd all`, one partition) and
// `kafka_bus.cc` (Apache Kafka through librdkafka, partitions spread over a consumer group).
// Consumers never commit by themselves: a worker stores its position with its output (see
// store.h, Checkpoint) and answers `AssignmentListener::StartOffset` from it; `Commit`
// additionally tells the bus (Kafka's consumer group) how far the worker got.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/result.h"
#include "core/time.h"

namespace iot::bus {

// Headers a message may carry (Kafka record headers; the embedded bus has none). `iotd dlq replay`
// sets them on a dead letter it republishes, so that only the worker that gave up on it processes
// it again, under its original message id (nothing is stored twice).
struct Routing {
  std::string only_for;             // header "iotd-for": a consumer name, or empty for every one
  std::optional<std::int64_t> id;   // header "iotd-message-id": the original core::MessageId
  friend bool operator==(const Routing&, const Routing&) = default;
};

struct Message {
  std::string key;      // the device id: one device's messages keep their order
  std::string payload;  // an encoded reading (codec/wire.h)
  Routing routing = {};
};

// Record is a consumed message with its position.
struct Record {
  std::int32_t partition = 0;
  std::int64_t offset = 0;
  core::Timestamp appended_at{};  // when the bus made it durable
  std::string key;
  std::string payload;
  Routing routing = {};
};

// AssignmentListener is how a consumer's owner learns which partitions it reads (a Kafka consumer
// group moves partitions between replicas) and tells where each one starts. Its methods are called
// on the thread that polls, from within Poll (Kafka) or Subscribe (embedded), never concurrently.
class AssignmentListener {
 public:
  virtual ~AssignmentListener() = default;
  // StartOffset returns where `partition` resumes: the owner's checkpoint, or nullopt for the
  // bus's own position (the group's committed offset, else the earliest record). An error is
  // retried with backoff (the partition cannot be read before its position is known).
  virtual Result<std::optional<std::int64_t>> StartOffset(std::int32_t partition) = 0;
  // Assigned: `partitions` are read from now on, from their start offsets.
  virtual void Assigned(const std::vector<std::int32_t>& partitions) = 0;
  // Revoked: `partitions` go to another consumer when this call returns. The owner finishes
  // (or abandons) what it polled from them before returning; later records of them are not
  // returned by Poll.
  virtual void Revoked(const std::vector<std::int32_t>& partitions) = 0;
};

struct PartitionLag {
  std::int32_t partition = 0;
  std::int64_t lag = 0;  // records appended to the partition but not yet polled
};

// Producer makes messages durable.
//
// Thread-safe. `Produce` returns at once; `done` is called exactly once, on an internal thread,
// with Ok after every message of the call is durable (all or nothing), or with kUnavailable /
// kResourceExhausted when the bus cannot take them (the caller answers 503), or with
// kInvalidArgument for a call that can never fit. A call refused at once (closed, full, too
// large) gets its callback on the calling thread before Produce returns.
class Producer {
 public:
  virtual ~Producer() = default;
  using Callback = std::function<void(Status)>;
  virtual void Produce(std::vector<Message> messages, Callback done) = 0;
  // Ready reports whether the bus can accept messages now.
  virtual bool Ready() const = 0;
  // Flush waits until everything produced so far has been answered, up to `timeout`.
  virtual Status Flush(std::chrono::milliseconds timeout) = 0;
};

// Consumer reads records in offset order per partition.
//
// Not thread-safe: one thread polls. `Poll` waits up to `timeout` for records and returns at most
// `max_records` (an empty vector on timeout). A position below the retained data continues at
// the first stored record; once the bus is closed and everything was read, Poll returns
// kUnavailable.
class Consumer {
 public:
  virtual ~Consumer() = default;
  virtual Result<std::vector<Record>> Poll(std::size_t max_records,
                                           std::chrono::milliseconds timeout) = 0;
  // Subscribe starts reading, with `listener` told of assignments (it must outlive the
  // consumer). Call once, before the first Poll.
  virtual Status Subscribe(AssignmentListener& listener) = 0;
  // Seek makes the next Poll of `partition` start at `next_offset`.
  virtual Status Seek(std::int32_t partition, std::int64_t next_offset) = 0;
  // Commit tells the bus that everything before `next_offset` of `partition` is done.
  virtual Status Commit(std::int32_t partition, std::int64_t next_offset) = 0;
  // Lag is the number of records appended but not yet polled, over all assigned partitions.
  virtual std::int64_t Lag() const = 0;
  // Lags is Lag per assigned partition.
  virtual std::vector<PartitionLag> Lags() const { return {PartitionLag{0, Lag()}}; }
  // Wakeup makes a blocked Poll return early (from any thread), for shutdown.
  virtual void Wakeup() = 0;
  // Close ends the subscription (a Kafka consumer leaves its group, so its partitions move at
  // once); the listener is not called any more. Called once the polling thread has stopped.
  virtual void Close() {}
};

}  // namespace iot::bus
