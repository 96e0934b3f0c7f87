// window.h: tumbling windows and their accumulators.
//
// A window size (1m, 1h, ...) divides time into half-open intervals [start, start + size) aligned
// to the Unix epoch. An Accumulator keeps count, sum, min and max of the values that fall into one
// window of one sensor of one device; accumulators merge, which is how deltas are applied.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"
#include "core/time.h"

namespace iot::core {

// WindowStart returns the start of the window of `size` that contains `t`, that is `t` rounded
// down (towards the past, also before 1970) to a multiple of `size`. A non-positive `size` returns
// `t` unchanged; a window starting before the first representable instant returns
// Timestamp::min().
Timestamp WindowStart(Timestamp t, Micros size);

// ParseWindows parses a comma-separated list such as "1m,1h" (spaces around items allowed) into
// distinct, ascending sizes. An empty list or an item that core::ParseDuration rejects is a
// kInvalidArgument error.
Result<std::vector<Micros>> ParseWindows(std::string_view text);

struct Accumulator {
  std::int64_t count = 0;
  double sum = 0;
  double min = std::numeric_limits<double>::infinity();
  double max = -std::numeric_limits<double>::infinity();

  void Add(double v) {
    ++count;
    sum += v;
    if (v < min) min = v;
    if (v > max) max = v;
  }
  void Merge(const Accumulator& o) {
    count += o.count;
    sum += o.sum;
    if (o.min < min) min = o.min;
    if (o.max > max) max = o.max;
  }
  double Average() const { return count == 0 ? 0 : sum / static_cast<double>(count); }
  friend bool operator==(const Accumulator&, const Accumulator&) = default;
};

// AggregateKey names one window of one sensor of one device.
struct AggregateKey {
  std::string device_id;
  std::string sensor_type;
  Micros window{};
  Timestamp window_start{};
  friend bool operator==(const AggregateKey&, const AggregateKey&) = default;
  friend auto operator<=>(const AggregateKey&, const AggregateKey&) = default;
};

// AggregateKeyHash hashes every field of an AggregateKey, for unordered containers.
struct AggregateKeyHash {
  std::size_t operator()(const AggregateKey& k) const noexcept;
};

}  // namespace iot::core
