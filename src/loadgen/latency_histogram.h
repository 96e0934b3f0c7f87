// latency_histogram.h: a fixed-size log-linear latency histogram (HdrHistogram-like).
//
//   LatencyHistogram h;
//   h.Record(std::chrono::microseconds(420));
//   h.ValueAtQuantile(0.99);   // a duration >= the true 99th percentile, at most 1/64 above it
//
// Values are kept in nanoseconds in buckets whose width grows with the value: every value below
// 128 ns has its own bucket, and every power-of-two range above is split into 64 equal
// sub-buckets, so a bucket's width is at most 1/64 (1.6%) of the values it holds. Values up to
// kMaxTrackable (about 73 minutes) are tracked; larger ones are counted as kMaxTrackable. Memory
// is fixed (~19 KiB); Record is O(1) and allocation-free.
//
// Threading: not synchronized; callers guard a shared histogram with their own lock.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>

namespace iot::loadgen {

class LatencyHistogram {
 public:
  // kMaxTrackable is the largest value kept exactly in its bucket (2^42 - 1 ns).
  static constexpr std::chrono::nanoseconds kMaxTrackable{(std::int64_t{1} << 42) - 1};

  // Record adds one value; negative values count as zero, values above kMaxTrackable as
  // kMaxTrackable.
  void Record(std::chrono::nanoseconds value);

  // Merge adds every value recorded in `other`.
  void Merge(const LatencyHistogram& other);

  // Reset forgets every value.
  void Reset();

  // count returns how many values were recorded.
  std::uint64_t count() const { return count_; }

  // max returns the largest recorded value (exact, after clamping), or zero when empty.
  std::chrono::nanoseconds max() const { return std::chrono::nanoseconds(max_); }

  // ValueAtQuantile returns the value below or at which a fraction `q` (clamped to [0, 1]) of
  // the recorded values lie: the highest value of the bucket holding the value of rank
  // ceil(q * count), capped at max(). It is never below the true quantile and at most 1/64
  // above it. Returns zero when empty; q = 1 returns max().
  std::chrono::nanoseconds ValueAtQuantile(double q) const;

 private:
  static constexpr int kSubBucketBits = 7;  // 128 sub-buckets, the upper half per power of two
  static constexpr std::uint64_t kSubBucketCount = std::uint64_t{1} << kSubBucketBits;
  static constexpr std::uint64_t kSubBucketHalf = kSubBucketCount / 2;
  static constexpr int kMaxBits = 42;
  static constexpr std::size_t kBucketCount =
      kSubBucketCount + (kMaxBits - kSubBucketBits) * kSubBucketHalf;

  static std::size_t IndexOf(std::uint64_t value);
  static std::uint64_t HighestValueIn(std::size_t index);

  std::array<std::uint64_t, kBucketCount> counts_{};
  std::uint64_t count_ = 0;
  std::uint64_t max_ = 0;
};

}  // namespace iot::loadgen
