// Tests of the token buckets that limit devices and clients.
#include "core/rate_limiter.h"

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <atomic>
#include <thread>
#include <vector>

namespace iot::core {
namespace {

using std::chrono::milliseconds;

const Timestamp kT0{std::chrono::seconds(1'700'000'000)};

TEST(RateLimiterTest, ABurstIsAllowedThenTheRateWithRetryAfter) {
  RateLimiter limiter({.rate = 10, .burst = 5});
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(limiter.Take("dev-1", kT0)) << i;
  auto wait = limiter.Take("dev-1", kT0);
  ASSERT_TRUE(wait);
  EXPECT_EQ(*wait, milliseconds(100));  // one token every 100 ms
  EXPECT_TRUE(limiter.Take("dev-1", kT0 + milliseconds(99)));
  EXPECT_FALSE(limiter.Take("dev-1", kT0 + milliseconds(100)));
}

TEST(RateLimiterTest, OneKeyEmptyDoesNotLimitAnother) {
  RateLimiter limiter({.rate = 1, .burst = 2});
  EXPECT_FALSE(limiter.Take("runaway", kT0));
  EXPECT_FALSE(limiter.Take("runaway", kT0));
  EXPECT_TRUE(limiter.Take("runaway", kT0));
  EXPECT_FALSE(limiter.Take("quiet", kT0));
}

TEST(RateLimiterTest, SustainedRateIsTheConfiguredOne) {
  RateLimiter limiter({.rate = 50, .burst = 1});
  int allowed = 0;
  // 10 s of a device sending every millisecond.
  for (int ms = 0; ms < 10000; ++ms) {
    if (!limiter.Take("dev", kT0 + milliseconds(ms))) ++allowed;
  }
  EXPECT_NEAR(allowed, 500, 2);
}

TEST(RateLimiterTest, RefillStopsAtTheBurst) {
  RateLimiter limiter({.rate = 10, .burst = 3});
  EXPECT_FALSE(limiter.Take("d", kT0));
  const Timestamp later = kT0 + std::chrono::hours(1);
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(limiter.Take("d", later));
  EXPECT_TRUE(limiter.Take("d", later));
}

TEST(RateLimiterTest, NoBurstGivenMeansOneSecondsWorth) {
  RateLimiter limiter({.rate = 5});
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(limiter.Take("d", kT0)) << i;
  EXPECT_TRUE(limiter.Take("d", kT0));
  RateLimiter slow({.rate = 0.5});  // below one token a second: a bucket of one
  EXPECT_FALSE(slow.Take("d", kT0));
  EXPECT_TRUE(slow.Take("d", kT0));
}

TEST(RateLimiterTest, ZeroRateMeansNoLimit) {
  RateLimiter limiter({.rate = 0, .burst = 0});
  EXPECT_FALSE(limiter.enabled());
  for (int i = 0; i < 1000; ++i) EXPECT_FALSE(limiter.Take("d", kT0));
  EXPECT_EQ(limiter.Size(), 0u);
}

TEST(RateLimiterTest, ClockGoingBackNeitherRefillsNorCrashes) {
  RateLimiter limiter({.rate = 1, .burst = 1});
  EXPECT_FALSE(limiter.Take("d", kT0));
  EXPECT_TRUE(limiter.Take("d", kT0 - std::chrono::seconds(10)));
  EXPECT_FALSE(limiter.Take("d", kT0 + std::chrono::seconds(1)));
}

TEST(RateLimiterTest, TheTableIsBoundedAndFullBucketsMakeRoom) {
  RateLimiter limiter({.rate = 10, .burst = 2, .max_keys = 160});  // 10 per shard
  std::size_t refused = 0;
  for (int i = 0; i < 2000; ++i) {
    // Each key takes one token, so its bucket is not full: it must be kept.
    if (limiter.Take("dev-" + std::to_string(i), kT0)) ++refused;
  }
  EXPECT_LE(limiter.Size(), 160u);
  EXPECT_GT(refused, 0u);  // beyond the bound, new keys wait
  // A second later every bucket has refilled: new keys get room again.
  EXPECT_FALSE(limiter.Take("newcomer", kT0 + std::chrono::seconds(1)));
  EXPECT_LE(limiter.Size(), 160u);
}

TEST(RateLimiterTest, ConcurrentTakersShareOneBucketExactly) {
  RateLimiter limiter({.rate = 0.001, .burst = 1000});
  std::atomic<int> allowed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 500; ++i) {
        if (!limiter.Take("shared", kT0)) allowed.fetch_add(1);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(allowed.load(), 1000);
}

TEST(RateLimiterTest, RetryAfterRoundsUpToWholeSeconds) {
  EXPECT_EQ(RetryAfterSeconds(milliseconds(1)), "1");
  EXPECT_EQ(RetryAfterSeconds(milliseconds(1000)), "1");
  EXPECT_EQ(RetryAfterSeconds(milliseconds(1001)), "2");
}

}  // namespace
}  // namespace iot::core
