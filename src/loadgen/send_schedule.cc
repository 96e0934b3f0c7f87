#include "loadgen/send_schedule.h"

namespace iot::loadgen {

SendSchedule::SendSchedule(Clock::time_point start, double rate_per_s,
                           std::optional<Clock::time_point> end)
    : start_(start), rate_per_s_(rate_per_s), end_(end) {}

SendSchedule::Clock::time_point SendSchedule::PlannedTime(std::uint64_t index) const {
  const std::chrono::duration<double> offset(static_cast<double>(index) / rate_per_s_);
  return start_ + std::chrono::round<Clock::duration>(offset);
}

std::optional<SendSchedule::Slot> SendSchedule::Claim(Clock::time_point now) {
  if (!open_loop()) {
    if (end_ && now >= *end_) return std::nullopt;
    return Slot{next_.fetch_add(1, std::memory_order_relaxed), now};
  }
  const std::uint64_t index = next_.fetch_add(1, std::memory_order_relaxed);
  const Clock::time_point planned = PlannedTime(index);
  if (end_ && planned >= *end_) return std::nullopt;
  return Slot{index, planned};
}

}  // namespace iot::loadgen
