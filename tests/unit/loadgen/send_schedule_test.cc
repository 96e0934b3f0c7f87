#include "loadgen/send_schedule.h"

#include <algorithm>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace iot::loadgen {
namespace {

using namespace std::chrono_literals;
using Clock = SendSchedule::Clock;

TEST(SendSchedule, OpenLoopSpacesSlotsByTheInverseRate) {
  const Clock::time_point start{};
  SendSchedule schedule(start, 200.0, std::nullopt);  // one every 5 ms
  ASSERT_TRUE(schedule.open_loop());
  for (std::uint64_t i = 0; i < 5; ++i) {
    auto slot = schedule.Claim(start);
    ASSERT_TRUE(slot);
    EXPECT_EQ(slot->index, i);
    EXPECT_EQ(slot->planned, start + i * 5ms);
  }
}

TEST(SendSchedule, OpenLoopHandsOutNoSlotPlannedAtOrAfterTheEnd) {
  const Clock::time_point start{};
  SendSchedule schedule(start, 100.0, start + 1s);
  int slots = 0;
  // The caller claims late (after the end): slots planned before the end are still due.
  while (auto slot = schedule.Claim(start + 5s)) {
    EXPECT_LT(slot->planned, start + 1s);
    ++slots;
  }
  EXPECT_EQ(slots, 100);
}

TEST(SendSchedule, OpenLoopPlanIsIndependentOfWhenSlotsAreClaimed) {
  const Clock::time_point start{};
  SendSchedule schedule(start, 10.0, std::nullopt);
  auto late = schedule.Claim(start + 10s);
  ASSERT_TRUE(late);
  EXPECT_EQ(late->planned, start);  // latency of a late send is measured from here
}

TEST(SendSchedule, ClosedLoopPlansEverySlotAtTheClaimTime) {
  const Clock::time_point start{};
  SendSchedule schedule(start, 0.0, start + 1s);
  EXPECT_FALSE(schedule.open_loop());
  auto first = schedule.Claim(start + 10ms);
  auto second = schedule.Claim(start + 20ms);
  ASSERT_TRUE(first);
  ASSERT_TRUE(second);
  EXPECT_EQ(first->planned, start + 10ms);
  EXPECT_EQ(second->planned, start + 20ms);
  EXPECT_EQ(second->index, 1u);
  EXPECT_FALSE(schedule.Claim(start + 1s));
}

TEST(SendSchedule, ConcurrentClaimsGetDistinctSlots) {
  const Clock::time_point start{};
  SendSchedule schedule(start, 1000.0, start + 20s);  // 20000 slots
  std::vector<std::uint64_t> a, b;
  auto claim_all = [&](std::vector<std::uint64_t>& out) {
    while (auto slot = schedule.Claim(start)) out.push_back(slot->index);
  };
  std::thread t1(claim_all, std::ref(a));
  std::thread t2(claim_all, std::ref(b));
  t1.join();
  t2.join();
  std::vector<std::uint64_t> all = a;
  all.insert(all.end(), b.begin(), b.end());
  std::sort(all.begin(), all.end());
  ASSERT_EQ(all.size(), 20'000u);
  for (std::size_t i = 0; i < all.size(); ++i) ASSERT_EQ(all[i], i);
}

}  // namespace
}  // namespace iot::loadgen
