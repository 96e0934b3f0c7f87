// bus_test_util.h: helpers shared by the embedded bus tests.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "bus/bus.h"

#include "testing/test_util.h"

namespace iot::bus::testing {

using ::iot::testing::TempDir;

// KeyFor / PayloadFor name the message that is expected at `offset`.
inline std::string KeyFor(std::int64_t offset) { return "dev-" + std::to_string(offset % 7); }
inline std::string PayloadFor(std::int64_t offset) {
  return "{\"seq\":" + std::to_string(offset) + "}";
}

// Messages returns `n` messages meant for offsets first .. first + n - 1.
inline std::vector<Message> Messages(std::int64_t first, std::int64_t n) {
  std::vector<Message> out;
  for (std::int64_t i = first; i < first + n; ++i) out.push_back({KeyFor(i), PayloadFor(i)});
  return out;
}

// ProduceAndWait produces and waits for the callback.
inline Status ProduceAndWait(Producer& producer, std::vector<Message> messages) {
  // Shared: the callback may still be inside set_value when the waiter wakes up.
  auto done = std::make_shared<std::promise<Status>>();
  auto result = done->get_future();
  producer.Produce(std::move(messages), [done](Status s) { done->set_value(std::move(s)); });
  return result.get();
}

// PollUntil polls until `n` records were read, an error occurs or `timeout` passes.
inline std::vector<Record> PollUntil(Consumer& consumer, std::size_t n,
                                     std::chrono::milliseconds timeout = std::chrono::seconds(5),
                                     std::size_t max_per_poll = 1000) {
  std::vector<Record> out;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (out.size() < n && std::chrono::steady_clock::now() < deadline) {
    auto records = consumer.Poll(std::min(max_per_poll, n - out.size()),
                                 std::chrono::milliseconds(100));
    if (!records) {
      ADD_FAILURE() << "Poll: " << records.error().message;
      break;
    }
    for (auto& r : *records) out.push_back(std::move(r));
  }
  return out;
}

// ExpectMessagesAt checks that `records` are offsets first, first + 1, ... with the messages
// that Messages() made for them.
inline void ExpectMessagesAt(const std::vector<Record>& records, std::int64_t first) {
  for (std::size_t i = 0; i < records.size(); ++i) {
    const std::int64_t offset = first + static_cast<std::int64_t>(i);
    ASSERT_EQ(records[i].offset, offset);
    ASSERT_EQ(records[i].partition, 0);
    ASSERT_EQ(records[i].key, KeyFor(offset));
    ASSERT_EQ(records[i].payload, PayloadFor(offset));
  }
}

// Gate blocks whoever waits on it until it is opened; used to hold the bus's writer thread
// inside a Produce callback so that the calls queued meanwhile form one group.
class Gate {
 public:
  void Open() { opened_.set_value(); }
  void Wait() { future_.wait(); }

 private:
  std::promise<void> opened_;
  std::shared_future<void> future_ = opened_.get_future().share();
};

// HoldWriter produces `messages` with a callback that blocks the writer thread on `gate`;
// returns once the writer is blocked there. `status` receives that call's outcome.
inline void HoldWriter(Producer& producer, std::vector<Message> messages, Gate& gate,
                       Status* status) {
  auto entered = std::make_shared<std::promise<void>>();
  auto in_callback = entered->get_future();
  producer.Produce(std::move(messages), [&gate, entered, status](Status s) {
    *status = std::move(s);
    entered->set_value();
    gate.Wait();
  });
  in_callback.wait();
}

}  // namespace iot::bus::testing
