// time.h: timestamps, durations and the clock.
//
// A Timestamp is a point in UTC with microsecond resolution. Time is always injected through
// `Clock` so that tests control it; production code uses `SystemClock()`.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace iot::core {

using Micros = std::chrono::microseconds;
using Timestamp = std::chrono::sys_time<Micros>;

inline Timestamp FromUnixMicros(std::int64_t us) { return Timestamp(Micros(us)); }
inline std::int64_t ToUnixMicros(Timestamp t) { return t.time_since_epoch().count(); }

// ParseIso8601 parses `YYYY-MM-DDTHH:MM:SS[.f{1,9}][Z|+HH:MM|-HH:MM]` strictly (also with a
// space or lower-case 't' for 'T' and a lower-case 'z'). A timestamp without an offset is UTC.
// Fractions beyond microseconds are truncated. Returns nullopt for anything else, including
// out-of-range fields (month 13, Feb 30, hour 24) and years outside 1970..9999.
std::optional<Timestamp> ParseIso8601(std::string_view text);

// FormatIso8601 renders `t` as `YYYY-MM-DDTHH:MM:SS.ffffffZ` when it has a fraction of a second
// and `YYYY-MM-DDTHH:MM:SSZ` otherwise.
std::string FormatIso8601(Timestamp t);

// ParseDuration parses durations such as "500ms", "30s", "1m", "1h", "7d", "2w" (one number and
// one unit). Returns nullopt for anything else, for zero and for negative values.
std::optional<Micros> ParseDuration(std::string_view text);

// FormatDuration renders a duration in the largest unit that divides it ("1m", "1h", "90s").
std::string FormatDuration(Micros d);

// Clock gives the current time; tests substitute a manual clock.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual Timestamp Now() const = 0;
};

// SystemClock returns the process-wide real clock.
const Clock& SystemClock();

// ManualClock is a clock that only moves when told to; for tests.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(Timestamp start) : now_(start) {}
  Timestamp Now() const override { return now_; }
  void Set(Timestamp t) { now_ = t; }
  void Advance(Micros d) { now_ += d; }

 private:
  Timestamp now_;
};

}  // namespace iot::core
