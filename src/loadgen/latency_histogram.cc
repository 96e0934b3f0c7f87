#include "loadgen/latency_histogram.h"

#include <algorithm>
#include <bit>
#include <cmath>

namespace iot::loadgen {

std::size_t LatencyHistogram::IndexOf(std::uint64_t value) {
  if (value < kSubBucketCount) return static_cast<std::size_t>(value);
  // shift >= 1 brings the value into [kSubBucketHalf, kSubBucketCount).
  const int shift = static_cast<int>(std::bit_width(value)) - kSubBucketBits;
  const std::uint64_t top = value >> shift;
  return static_cast<std::size_t>(kSubBucketCount +
                                  static_cast<std::uint64_t>(shift - 1) * kSubBucketHalf +
                                  (top - kSubBucketHalf));
}

std::uint64_t LatencyHistogram::HighestValueIn(std::size_t index) {
  if (index < kSubBucketCount) return index;
  const std::size_t k = index - kSubBucketCount;
  const auto shift = static_cast<int>(k / kSubBucketHalf) + 1;
  const std::uint64_t top = k % kSubBucketHalf + kSubBucketHalf;
  return ((top + 1) << shift) - 1;
}

void LatencyHistogram::Record(std::chrono::nanoseconds value) {
  const auto clamped = static_cast<std::uint64_t>(
      std::clamp<std::int64_t>(value.count(), 0, kMaxTrackable.count()));
  ++counts_[IndexOf(clamped)];
  ++count_;
  max_ = std::max(max_, clamped);
}

void LatencyHistogram::Merge(const LatencyHistogram& other) {
  for (std::size_t i = 0; i < kBucketCount; ++i) counts_[i] += other.counts_[i];
  count_ += other.count_;
  max_ = std::max(max_, other.max_);
}

void LatencyHistogram::Reset() {
  counts_.fill(0);
  count_ = 0;
  max_ = 0;
}

std::chrono::nanoseconds LatencyHistogram::ValueAtQuantile(double q) const {
  if (count_ == 0) return std::chrono::nanoseconds(0);
  q = std::clamp(q, 0.0, 1.0);
  const auto rank = std::max<std::uint64_t>(
      1, static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(count_))));
  std::uint64_t seen = 0;
  for (std::size_t i = 0; i < kBucketCount; ++i) {
    seen += counts_[i];
    if (seen >= rank) {
      return std::chrono::nanoseconds(static_cast<std::int64_t>(std::min(HighestValueIn(i), max_)));
    }
  }
  return max();
}

}  // namespace iot::loadgen
