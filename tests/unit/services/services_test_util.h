// services_test_util.h: fakes and helpers shared by the services tests.
//
//   - TempDir, OpenStore: a real SqliteStore in a fresh directory, removed afterwards.
//   - EventLog: an ordered record of what the fakes saw ("poll 3", "apply-ok 5", "commit 5"), so a
//     test can assert the order of consume, apply and commit.
//   - FakeConsumer: an in-memory bus::Consumer of partition 0 whose offsets are the indexes of
//     its log; records Seek and Commit calls and lets a test wait for a commit.
//   - FlakyStore: a store::Store that forwards to a real store but fails Apply (kUnavailable) as
//     often as the test says, recording every attempt.
//   - T0 / At / ReadingAt: fixed times and readings (FakeConsumer::AppendReading publishes them in
//     the wire form, as ingest does).
//   - MakeRequest / Serve / Get / Header: run a request through an http::Router's handler and
//     capture its response.
//   - AllTelemetry / AllAggregates / AllAlerts: every item of a listing, paging with the cursor.
//   - MetricValue: one series of a metrics::Registry, read from its exposition.
//
// Every wait has a deadline (kWaitLimit); nothing sleeps hoping that another thread got there.
// IOT_ASSERT_OK(status) fails the test with the error's code and message.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "bus/bus.h"
#include "codec/wire.h"
#include "core/reading.h"
#include "core/result.h"
#include "core/time.h"
#include "http/response.h"
#include "http/router.h"
#include "metrics/metrics.h"
#include "store/sqlite_store.h"
#include "store/store.h"

#include "testing/test_util.h"

namespace iot::services::testing {

// kWaitLimit bounds every wait for another thread; reaching it fails the test.
inline constexpr std::chrono::seconds kWaitLimit{5};

// T0 is 2024-01-01T00:00:00Z, aligned to every window size the tests use.
inline core::Timestamp T0() { return core::FromUnixMicros(1'704'067'200'000'000); }
// At returns T0 + `seconds`.
inline core::Timestamp At(std::int64_t seconds) { return T0() + std::chrono::seconds(seconds); }

using ::iot::testing::Must;
using ::iot::testing::TempDir;

// OpenStore opens (or reopens) the SQLite store of `dir`; nullptr (and a test failure) on error.
inline std::unique_ptr<store::SqliteStore> OpenStore(const TempDir& dir) {
  store::SqliteStoreOptions options;
  options.path = dir.path() + "/store.db";
  options.sync = store::SqliteStoreOptions::Sync::kOff;
  options.readers = 2;
  auto s = store::SqliteStore::Open(options);
  if (!s) {
    ADD_FAILURE() << "cannot open the store: " << s.error().message;
    return nullptr;
  }
  return std::move(*s);
}

// ReadingAt builds a reading of the seed's two sensors.
inline core::Reading ReadingAt(const std::string& device, core::Timestamp ts, double temperature,
                               double humidity = 40) {
  core::Reading r;
  r.device_id = device;
  r.ts = ts;
  r.sensors = {{"temperature_c", temperature}, {"humidity", humidity}};
  return r;
}

// EventLog is a thread-safe, ordered list of events.
class EventLog {
 public:
  void Add(std::string event) {
    std::lock_guard lock(mu_);
    events_.push_back(std::move(event));
  }
  std::vector<std::string> Events() const {
    std::lock_guard lock(mu_);
    return events_;
  }

 private:
  mutable std::mutex mu_;
  std::vector<std::string> events_;
};

// FakeConsumer serves an in-memory log of partition 0 (offset = index in the log).
//
// Poll waits (up to its timeout, or until Wakeup / Append) for records at the position and
// returns at most max_records of them; a non-empty poll is logged as "poll <n>". Seek moves the
// position, Commit records "commit <offset>". Thread-safe.
class FakeConsumer final : public bus::Consumer {
 public:
  explicit FakeConsumer(EventLog* log = nullptr) : log_(log) {}

  // Append adds a record with `payload` at the next offset; returns that offset.
  std::int64_t Append(std::string key, std::string payload, bus::Routing routing = {}) {
    std::lock_guard lock(mu_);
    bus::Record r;
    r.partition = 0;
    r.offset = static_cast<std::int64_t>(records_.size());
    r.key = std::move(key);
    r.payload = std::move(payload);
    r.routing = std::move(routing);
    records_.push_back(std::move(r));
    cv_.notify_all();
    return records_.back().offset;
  }
  // AppendReading appends the wire form of `reading` (as ingest publishes it).
  std::int64_t AppendReading(const core::Reading& reading) {
    return Append(reading.device_id, codec::EncodeWire(reading));
  }
  // FailNextPolls makes the next `n` polls return kUnavailable.
  void FailNextPolls(int n) {
    std::lock_guard lock(mu_);
    poll_failures_ = n;
  }

  Result<std::vector<bus::Record>> Poll(std::size_t max_records,
                                        std::chrono::milliseconds timeout) override {
    std::unique_lock lock(mu_);
    if (poll_failures_ > 0) {
      --poll_failures_;
      return MakeError(Errc::kUnavailable, "fake poll failure");
    }
    cv_.wait_for(lock, timeout, [&] { return woken_ || Available() > 0; });
    woken_ = false;
    std::vector<bus::Record> out;
    while (out.size() < max_records && Available() > 0) {
      out.push_back(records_[static_cast<std::size_t>(position_++)]);
    }
    if (!out.empty() && log_) log_->Add("poll " + std::to_string(out.size()));
    return out;
  }
  // Subscribe assigns partition 0 at once, like the embedded bus.
  Status Subscribe(bus::AssignmentListener& listener) override {
    auto start = listener.StartOffset(0);
    if (!start) return start.status();
    if (*start) {
      if (Status s = Seek(0, **start); !s) return s;
    }
    listener.Assigned({0});
    return Status::Ok();
  }
  Status Seek(std::int32_t partition, std::int64_t next_offset) override {
    std::lock_guard lock(mu_);
    seeks_.emplace_back(partition, next_offset);
    position_ = next_offset;
    return Status::Ok();
  }
  Status Commit(std::int32_t partition, std::int64_t next_offset) override {
    std::lock_guard lock(mu_);
    commits_.emplace_back(partition, next_offset);
    if (log_) log_->Add("commit " + std::to_string(next_offset));
    cv_.notify_all();
    if (fail_commits_) return MakeError(Errc::kUnavailable, "fake commit failure");
    return Status::Ok();
  }
  std::int64_t Lag() const override {
    std::lock_guard lock(mu_);
    return Available();
  }
  void Wakeup() override {
    std::lock_guard lock(mu_);
    woken_ = true;
    cv_.notify_all();
  }

  // WaitForCommit waits until a commit reached `next_offset`; false after kWaitLimit.
  bool WaitForCommit(std::int64_t next_offset) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, kWaitLimit, [&] {
      return std::any_of(commits_.begin(), commits_.end(),
                         [&](const auto& c) { return c.second >= next_offset; });
    });
  }

  std::vector<std::pair<std::int32_t, std::int64_t>> Seeks() const {
    std::lock_guard lock(mu_);
    return seeks_;
  }
  std::vector<std::pair<std::int32_t, std::int64_t>> Commits() const {
    std::lock_guard lock(mu_);
    return commits_;
  }
  // Position is the offset the next Poll starts at.
  std::int64_t Position() const {
    std::lock_guard lock(mu_);
    return position_;
  }
  void set_fail_commits(bool fail) {
    std::lock_guard lock(mu_);
    fail_commits_ = fail;
  }

 private:
  std::int64_t Available() const {
    return static_cast<std::int64_t>(records_.size()) - position_;
  }

  EventLog* log_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<bus::Record> records_;
  std::int64_t position_ = 0;
  bool woken_ = false;
  bool fail_commits_ = false;
  int poll_failures_ = 0;
  std::vector<std::pair<std::int32_t, std::int64_t>> seeks_;
  std::vector<std::pair<std::int32_t, std::int64_t>> commits_;
};

// FlakyStore forwards to `inner` but fails the next `failures` Apply calls with kUnavailable.
//
// Every Apply attempt is recorded (its batch, its outcome and when it started) and logged as
// "apply-fail <checkpoint>" or "apply-ok <checkpoint>". `on_failure`, when set, runs on the
// worker's thread after each failed attempt. LoadCheckpoint can be made to fail. Thread-safe.
class FlakyStore final : public store::Store {
 public:
  struct Attempt {
    std::vector<std::int64_t> reading_ids;
    std::optional<std::int64_t> checkpoint;
    bool ok = false;
    std::chrono::steady_clock::time_point at;
  };

  FlakyStore(store::Store& inner, EventLog* log = nullptr) : inner_(inner), log_(log) {}

  // FailApplies makes the next `n` Apply calls fail (a large n: until told otherwise).
  void FailApplies(int n) {
    std::lock_guard lock(mu_);
    failures_ = n;
  }
  // RefuseReading makes every Apply whose batch holds reading `id` fail with kInvalidArgument,
  // as a store does with a document it will never take.
  void RefuseReading(std::int64_t id) {
    std::lock_guard lock(mu_);
    refused_.push_back(id);
  }
  void set_fail_load_checkpoint(bool fail) {
    std::lock_guard lock(mu_);
    fail_load_checkpoint_ = fail;
  }
  void set_on_failure(std::function<void()> fn) {
    std::lock_guard lock(mu_);
    on_failure_ = std::move(fn);
  }

  std::vector<Attempt> Attempts() const {
    std::lock_guard lock(mu_);
    return attempts_;
  }
  // WaitForFailures waits until at least `n` Apply calls failed; false after kWaitLimit.
  bool WaitForFailures(int n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, kWaitLimit, [&] {
      return std::count_if(attempts_.begin(), attempts_.end(),
                           [](const Attempt& a) { return !a.ok; }) >= n;
    });
  }

  Status Apply(const store::WriteBatch& batch) override {
    Attempt attempt;
    attempt.at = std::chrono::steady_clock::now();
    for (const auto& r : batch.readings) attempt.reading_ids.push_back(r.id.value);
    if (batch.checkpoint) attempt.checkpoint = batch.checkpoint->next_offset;
    const std::string cp = attempt.checkpoint ? std::to_string(*attempt.checkpoint) : "none";
    bool fail = false;
    bool refuse = false;
    std::function<void()> hook;
    {
      std::lock_guard lock(mu_);
      for (auto id : attempt.reading_ids) {
        refuse = refuse || std::find(refused_.begin(), refused_.end(), id) != refused_.end();
      }
      if (refuse) {
        attempts_.push_back(attempt);
        if (log_) log_->Add("apply-refused " + cp);
        cv_.notify_all();
        return MakeError(Errc::kInvalidArgument, "fake refusal of a reading");
      }
      if (failures_ > 0) {
        --failures_;
        fail = true;
        hook = on_failure_;
        attempts_.push_back(std::move(attempt));
        if (log_) log_->Add("apply-fail " + cp);
        cv_.notify_all();
      }
    }
    if (fail) {
      if (hook) hook();
      return MakeError(Errc::kUnavailable, "fake store outage");
    }
    Status s = inner_.Apply(batch);
    std::lock_guard lock(mu_);
    attempt.ok = s.ok();
    attempts_.push_back(std::move(attempt));
    if (log_) log_->Add((s.ok() ? "apply-ok " : "apply-fail ") + cp);
    cv_.notify_all();
    return s;
  }
  Result<std::optional<std::int64_t>> LoadCheckpoint(const std::string& consumer,
                                                     std::int32_t partition) override {
    {
      std::lock_guard lock(mu_);
      if (fail_load_checkpoint_) return MakeError(Errc::kUnavailable, "fake store outage");
    }
    return inner_.LoadCheckpoint(consumer, partition);
  }
  Result<std::vector<core::Alert>> OpenAlerts() override { return inner_.OpenAlerts(); }
  Result<store::Page<store::StoredReading>> Telemetry(const store::TelemetryQuery& q) override {
    return inner_.Telemetry(q);
  }
  Result<store::Page<store::Aggregate>> Aggregates(const store::AggregateQuery& q) override {
    return inner_.Aggregates(q);
  }
  Result<store::Page<core::Alert>> Alerts(const store::AlertQuery& q) override {
    return inner_.Alerts(q);
  }
  Result<std::optional<core::Alert>> FindAlert(std::int64_t id) override {
    return inner_.FindAlert(id);
  }
  Result<std::optional<core::Alert>> Acknowledge(std::int64_t id,
                                                 const core::AlertAck& ack) override {
    return inner_.Acknowledge(id, ack);
  }
  Result<std::optional<store::Device>> FindDevice(const std::string& device_id) override {
    return inner_.FindDevice(device_id);
  }
  Result<std::vector<store::Device>> Devices(const store::DeviceQuery& q) override {
    return inner_.Devices(q);
  }
  Result<store::Stats> GetStats(core::Timestamp now) override { return inner_.GetStats(now); }
  Result<store::Page<store::DeadLetter>> DeadLetters(const store::DeadLetterQuery& q) override {
    return inner_.DeadLetters(q);
  }
  Result<std::int64_t> Expire(core::Timestamp now) override { return inner_.Expire(now); }
  Status Ping() override { return inner_.Ping(); }

 private:
  store::Store& inner_;
  EventLog* log_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  int failures_ = 0;
  bool fail_load_checkpoint_ = false;
  std::vector<std::int64_t> refused_;
  std::function<void()> on_failure_;
  std::vector<Attempt> attempts_;
};

// AllTelemetry / AllAggregates / AllAlerts page through a listing until its end.
inline std::vector<store::StoredReading> AllTelemetry(store::Store& s, store::TelemetryQuery q) {
  std::vector<store::StoredReading> out;
  for (int guard = 0; guard < 10000; ++guard) {
    auto page = Must(s.Telemetry(q));
    out.insert(out.end(), page.items.begin(), page.items.end());
    if (!page.next) return out;
    q.after = page.next;
  }
  ADD_FAILURE() << "telemetry paging did not end";
  return out;
}
inline std::vector<store::Aggregate> AllAggregates(store::Store& s, store::AggregateQuery q) {
  std::vector<store::Aggregate> out;
  for (int guard = 0; guard < 10000; ++guard) {
    auto page = Must(s.Aggregates(q));
    out.insert(out.end(), page.items.begin(), page.items.end());
    if (!page.next) return out;
    q.after = page.next;
  }
  ADD_FAILURE() << "aggregate paging did not end";
  return out;
}
inline std::vector<core::Alert> AllAlerts(store::Store& s, store::AlertQuery q) {
  std::vector<core::Alert> out;
  for (int guard = 0; guard < 10000; ++guard) {
    auto page = Must(s.Alerts(q));
    out.insert(out.end(), page.items.begin(), page.items.end());
    if (!page.next) return out;
    q.after = page.next;
  }
  ADD_FAILURE() << "alert paging did not end";
  return out;
}

// MakeRequest builds a request; a body gets the given Content-Type (when not empty).
inline http::Request MakeRequest(http::beast::http::verb method, const std::string& target,
                                 std::string body = {}, const std::string& content_type = {}) {
  http::Request req{method, target, 11};
  if (!content_type.empty()) req.set(http::beast::http::field::content_type, content_type);
  req.body() = std::move(body);
  req.prepare_payload();
  return req;
}

class Call;
inline std::shared_ptr<Call> Serve(const http::Router& router, http::Request request);

// Call is one request handed to a router's handler. It keeps the request and the path
// parameters alive until the handler answers (the Handler contract) and captures the answers.
class Call {
 public:
  // Answered reports whether the handler called `respond` (or the router answered itself).
  bool Answered() const {
    std::lock_guard lock(mu_);
    return answers_ > 0;
  }
  // Answers counts the calls of `respond` (the contract: exactly one).
  int Answers() const {
    std::lock_guard lock(mu_);
    return answers_;
  }
  // Response returns the (last) answer; a default response when there is none.
  http::Response Response() const {
    std::lock_guard lock(mu_);
    return response_.value_or(http::Response{});
  }

 private:
  friend std::shared_ptr<Call> Serve(const http::Router& router, http::Request request);
  void Answer(http::Response r) {
    std::lock_guard lock(mu_);
    ++answers_;
    response_ = std::move(r);
  }

  http::Request request_;
  http::PathParams params_;
  mutable std::mutex mu_;
  int answers_ = 0;
  std::optional<http::Response> response_;
};

// Serve looks `request` up in `router` and runs the handler it finds; when the router answers
// itself (404, 405, 400) that is the answer. The handler may answer later (see Call).
inline std::shared_ptr<Call> Serve(const http::Router& router, http::Request request) {
  auto call = std::make_shared<Call>();
  call->request_ = std::move(request);
  auto target = call->request_.target();
  auto found = router.Find(call->request_.method(), std::string_view(target.data(), target.size()));
  if (auto* r = std::get_if<http::Response>(&found)) {
    call->Answer(std::move(*r));
    return call;
  }
  auto& match = std::get<http::Router::Match>(found);
  call->params_ = match.params;
  (*match.handler)(call->request_, call->params_,
                   [call](http::Response r) { call->Answer(std::move(r)); });
  return call;
}

// Get serves GET `target` and returns the answer, which must have been given at once.
inline http::Response Get(const http::Router& router, const std::string& target) {
  auto call = Serve(router, MakeRequest(http::beast::http::verb::get, target));
  EXPECT_EQ(call->Answers(), 1) << target;
  return call->Response();
}

// Header returns the value of header `name` of `r` ("" when absent).
inline std::string Header(const http::Response& r, std::string_view name) {
  auto it = r.find(http::beast::string_view(name.data(), name.size()));
  if (it == r.end()) return {};
  auto v = it->value();
  return std::string(v.data(), v.size());
}

// MetricValue returns the value of the series `series` (e.g. `x_total` or
// `x_total{reason="missing"}`) in `registry`'s exposition; nullopt when it is not exposed.
inline std::optional<double> MetricValue(const metrics::Registry& registry,
                                         std::string_view series) {
  std::istringstream in(registry.Expose());
  std::string line;
  while (std::getline(in, line)) {
    if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 &&
        line[series.size()] == ' ') {
      return std::stod(line.substr(series.size() + 1));
    }
  }
  return std::nullopt;
}

}  // namespace iot::services::testing
