// rate_limiter.h: token buckets per key (a device id, a client address), so that one runaway
// device or client cannot take the capacity the others need.
//
// Each key has a bucket of `burst` tokens, refilled at `rate` tokens per second; taking a token
// from an empty bucket is refused with the time until one is there (for Retry-After):
//
//   RateLimiter limiter({.rate = 10, .burst = 20});
//   if (auto wait = limiter.Take("dev-1", clock.Now())) return TooManyRequests(*wait);
//
// Memory is bounded: at most `max_keys` buckets are kept. A bucket that has refilled to full
// holds no information (a new one would be the same), so when the table is full those are
// dropped; if every bucket is still draining, the new key is refused until one refills — a flood
// of distinct keys then limits itself instead of growing the table.
//
// Thread-safe: the keys are spread over shards, each with its own mutex.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "core/time.h"

namespace iot::core {

struct RateLimit {
  double rate = 0;   // tokens per second; 0: no limit
  double burst = 0;  // the bucket's size; 0: one second's worth (the rate); at least 1
  std::size_t max_keys = 100000;
};

class RateLimiter {
 public:
  explicit RateLimiter(RateLimit limit);

  // enabled is false for rate 0: Take then always allows.
  bool enabled() const { return limit_.rate > 0; }

  // Take takes one token of `key` at `now`. Returns nullopt when allowed, otherwise how long
  // until a token is available (at least 1 ms).
  std::optional<std::chrono::milliseconds> Take(std::string_view key, Timestamp now);

  // Size returns the number of buckets kept (for tests and metrics).
  std::size_t Size() const;

 private:
  struct Bucket {
    double tokens;
    Timestamp updated;
  };
  struct Shard {
    mutable std::mutex mu;
    std::unordered_map<std::string, Bucket> buckets;
    Timestamp swept{};  // the last Sweep: at most one per kSweepEvery, it walks the shard
  };
  static constexpr std::chrono::milliseconds kSweepEvery{100};
  static constexpr std::size_t kShards = 16;

  // Refill brings `b` up to `now`.
  void Refill(Bucket& b, Timestamp now) const;
  // Sweep drops the buckets of `shard` that are full at `now`.
  void Sweep(Shard& shard, Timestamp now) const;

  RateLimit limit_;
  std::size_t max_per_shard_;
  std::array<Shard, kShards> shards_;
};

// RetryAfterSeconds renders a wait as a Retry-After value: whole seconds, rounded up, at least 1.
std::string RetryAfterSeconds(std::chrono::milliseconds wait);

}  // namespace iot::core
