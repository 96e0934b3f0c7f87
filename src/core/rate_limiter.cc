// rate_limiter.cc: see rate_limiter.h.
#include "core/rate_limiter.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <iterator>

namespace iot::core {

RateLimiter::RateLimiter(RateLimit limit) : limit_(limit) {
  if (limit_.burst <= 0) limit_.burst = limit_.rate;
  limit_.burst = std::max(limit_.burst, 1.0);
  max_per_shard_ = std::max<std::size_t>(1, limit_.max_keys / kShards);
}

void RateLimiter::Refill(Bucket& b, Timestamp now) const {
  if (now <= b.updated) return;  // the clock went back: no refill, no penalty
  const double seconds = std::chrono::duration<double>(now - b.updated).count();
  b.tokens = std::min(limit_.burst, b.tokens + seconds * limit_.rate);
  b.updated = now;
}

void RateLimiter::Sweep(Shard& shard, Timestamp now) const {
  for (auto it = shard.buckets.begin(); it != shard.buckets.end();) {
    Refill(it->second, now);
    it = it->second.tokens >= limit_.burst ? shard.buckets.erase(it) : std::next(it);
  }
}

std::optional<std::chrono::milliseconds> RateLimiter::Take(std::string_view key, Timestamp now) {
  if (!enabled()) return std::nullopt;
  Shard& shard = shards_[std::hash<std::string_view>{}(key) % kShards];
  std::lock_guard lock(shard.mu);
  auto it = shard.buckets.find(std::string(key));
  if (it == shard.buckets.end()) {
    if (shard.buckets.size() >= max_per_shard_ && now - shard.swept >= kSweepEvery) {
      shard.swept = now;
      Sweep(shard, now);
    }
    if (shard.buckets.size() >= max_per_shard_) {
      // Every bucket is still draining: the key waits like an empty bucket would.
      return std::chrono::milliseconds(
          std::max<long long>(1, std::llround(1000.0 / limit_.rate)));
    }
    it = shard.buckets.emplace(std::string(key), Bucket{limit_.burst, now}).first;
  }
  Bucket& b = it->second;
  Refill(b, now);
  if (b.tokens >= 1) {
    b.tokens -= 1;
    return std::nullopt;
  }
  const double wait = (1 - b.tokens) / limit_.rate;
  return std::chrono::milliseconds(std::max<long long>(1, std::llround(std::ceil(wait * 1000))));
}

std::size_t RateLimiter::Size() const {
  std::size_t n = 0;
  for (const Shard& s : shards_) {
    std::lock_guard lock(s.mu);
    n += s.buckets.size();
  }
  return n;
}

std::string RetryAfterSeconds(std::chrono::milliseconds wait) {
  return std::to_string(std::max<long long>(1, (wait.count() + 999) / 1000));
}

}  // namespace iot::core
