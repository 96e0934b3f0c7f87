// send_schedule.h: when the load generator's requests are due.
//
// Open loop (a target rate): request n is due at start + n / rate, whatever happened to the
// requests before it. A connection that is free claims the next slot, waits until it is due and
// sends it; a connection that comes free after its slot was due sends at once. Latency is
// measured from the slot's planned time, not from the moment the request went out, so a server
// that stalls is charged for the requests that queued behind the stall (no "coordinated
// omission": a closed-loop client would silently send fewer requests and report only the fast
// ones). Slots are shared by all connections, so a slow or reconnecting connection does not hold
// back the schedule as long as another connection is free.
//
// Closed loop (unthrottled, rate 0): every claim is due now; each connection sends its next
// request as soon as it has the answer to the previous one.
//
//   SendSchedule schedule(start, /*rate_per_s=*/200.0, start + 10s);
//   while (auto slot = schedule.Claim(Clock::now())) { wait_until(slot->planned); send(); }
//
// Threading: Claim is thread-safe and lock-free; every slot index is handed out once.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>

namespace iot::loadgen {

class SendSchedule {
 public:
  using Clock = std::chrono::steady_clock;

  struct Slot {
    std::uint64_t index = 0;      // 0, 1, 2, ... in claim order
    Clock::time_point planned;    // when the request is due; latency is measured from here
  };

  // SendSchedule plans requests from `start` at `rate_per_s` requests per second (open loop)
  // or, when rate_per_s <= 0, as fast as they are claimed (closed loop). With `end`, no request
  // is due at or after it.
  SendSchedule(Clock::time_point start, double rate_per_s, std::optional<Clock::time_point> end);

  // open_loop returns whether requests follow a planned rate.
  bool open_loop() const { return rate_per_s_ > 0; }

  // Claim hands out the next slot, or nullopt when the schedule is over: in open loop when the
  // next slot is planned at or after `end` (however late the caller is, slots planned before
  // `end` are still handed out), in closed loop when `now` is at or after `end`.
  std::optional<Slot> Claim(Clock::time_point now);

  // PlannedTime returns when slot `index` is due in open loop.
  Clock::time_point PlannedTime(std::uint64_t index) const;

 private:
  const Clock::time_point start_;
  const double rate_per_s_;
  const std::optional<Clock::time_point> end_;
  std::atomic<std::uint64_t> next_{0};
};

}  // namespace iot::loadgen
