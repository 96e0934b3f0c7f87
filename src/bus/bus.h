// bus.h: the message bus between ingest and the workers.
//
// Ingest produces messages (a key, the device id, and a payload, an encoded reading); workers
// consume them in order per partition, at least once. Two implementations: `embedded_bus.cc`
// (an append-only log in a SQLite file, group-committed, for `iotd all`) and, later,
// `kafka_bus.cc`. Consumers never commit by themselves: a worker stores its position with its
// output (see store.h, Checkpoint) and calls `Seek` on start-up; `Commit` additionally tells the
// bus (Kafka's consumer group) how far the worker got.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/result.h"
#include "core/time.h"

namespace iot::bus {

struct Message {
  std::string key;      // the device id: one device's messages keep their order
  std::string payload;  // an encoded reading (codec/reading_codec.h)
};

// Record is a consumed message with its position.
struct Record {
  std::int32_t partition = 0;
  std::int64_t offset = 0;
  core::Timestamp appended_at{};  // when the bus made it durable
  std::string key;
  std::string payload;
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
  // Seek makes the next Poll of `partition` start at `next_offset`.
  virtual Status Seek(std::int32_t partition, std::int64_t next_offset) = 0;
  // Commit tells the bus that everything before `next_offset` of `partition` is done.
  virtual Status Commit(std::int32_t partition, std::int64_t next_offset) = 0;
  // Lag is the number of records appended but not yet polled, over all assigned partitions.
  virtual std::int64_t Lag() const = 0;
  // Wakeup makes a blocked Poll return early (from any thread), for shutdown.
  virtual void Wakeup() = 0;
};

}  // namespace iot::bus
