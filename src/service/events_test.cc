#include "src/service/events.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace iptkit::service {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

std::vector<uint64_t> Ids(const EventBus::Batch& batch) {
  std::vector<uint64_t> ids;
  for (const Event& e : batch.events) ids.push_back(e.id);
  return ids;
}

TEST(EventBusTest, IdsStartAtOneAndIncreaseByOne) {
  EventBus bus;
  EXPECT_EQ(bus.last_id(), 0u);
  EXPECT_EQ(bus.Publish("a", "{}", 10), 1u);
  EXPECT_EQ(bus.Publish("b", "{\"x\":1}", 20), 2u);
  EXPECT_EQ(bus.last_id(), 2u);
  EventBus::Batch batch = bus.WaitAfter(0, milliseconds(0));
  ASSERT_EQ(batch.events.size(), 2u);
  EXPECT_EQ(batch.events[0].id, 1u);
  EXPECT_EQ(batch.events[0].type, "a");
  EXPECT_EQ(batch.events[0].data, "{}");
  EXPECT_EQ(batch.events[0].time_ms, 10);
  EXPECT_EQ(batch.events[1].id, 2u);
  EXPECT_EQ(batch.events[1].type, "b");
  EXPECT_EQ(batch.events[1].time_ms, 20);
  EXPECT_FALSE(batch.missed);
  EXPECT_FALSE(batch.closed);
}

TEST(EventBusTest, ReturnsOnlyNewerEventsUpToMaxOldestFirst) {
  EventBus bus;
  for (int i = 0; i < 10; ++i) bus.Publish("t", std::to_string(i), i);
  EXPECT_EQ(Ids(bus.WaitAfter(7, milliseconds(0))), (std::vector<uint64_t>{8, 9, 10}));
  EXPECT_EQ(Ids(bus.WaitAfter(2, milliseconds(0), 3)), (std::vector<uint64_t>{3, 4, 5}));
  EXPECT_TRUE(bus.WaitAfter(10, milliseconds(0)).events.empty());
}

TEST(EventBusTest, TimesOutWithAnEmptyBatch) {
  EventBus bus;
  bus.Publish("t", "{}", 0);
  const auto start = Clock::now();
  EventBus::Batch batch = bus.WaitAfter(1, milliseconds(100));
  const auto elapsed = Clock::now() - start;
  EXPECT_TRUE(batch.events.empty());
  EXPECT_FALSE(batch.missed);
  EXPECT_FALSE(batch.closed);
  EXPECT_GE(elapsed, milliseconds(100));
  EXPECT_LT(elapsed, milliseconds(2000));
}

TEST(EventBusTest, WaiterWakesOnPublish) {
  EventBus bus;
  std::thread publisher([&] {
    std::this_thread::sleep_for(milliseconds(50));
    bus.Publish("late", "{}", 0);
  });
  const auto start = Clock::now();
  EventBus::Batch batch = bus.WaitAfter(0, milliseconds(10000));
  EXPECT_LT(Clock::now() - start, milliseconds(5000));
  publisher.join();
  ASSERT_EQ(batch.events.size(), 1u);
  EXPECT_EQ(batch.events[0].type, "late");
}

TEST(EventBusTest, RingOverflowReportsMissedAndContinuesFromTheOldestHeld) {
  EventBus bus(4);
  for (int i = 0; i < 10; ++i) bus.Publish("t", "{}", i);  // holds 7..10
  EventBus::Batch batch = bus.WaitAfter(2, milliseconds(0));
  EXPECT_TRUE(batch.missed);
  EXPECT_EQ(Ids(batch), (std::vector<uint64_t>{7, 8, 9, 10}));
  EXPECT_TRUE(bus.WaitAfter(0, milliseconds(0)).missed);
  // Exactly at the edge: 6 was seen, 7 is the oldest held; nothing was missed.
  batch = bus.WaitAfter(6, milliseconds(0));
  EXPECT_FALSE(batch.missed);
  EXPECT_EQ(Ids(batch), (std::vector<uint64_t>{7, 8, 9, 10}));
  batch = bus.WaitAfter(5, milliseconds(0), 2);
  EXPECT_TRUE(batch.missed);
  EXPECT_EQ(Ids(batch), (std::vector<uint64_t>{7, 8}));
}

TEST(EventBusTest, ZeroCapacityKeepsOne) {
  EventBus bus(0);
  bus.Publish("t", "{}", 0);
  bus.Publish("t", "{}", 0);
  EventBus::Batch batch = bus.WaitAfter(0, milliseconds(0));
  EXPECT_TRUE(batch.missed);
  EXPECT_EQ(Ids(batch), (std::vector<uint64_t>{2}));
}

TEST(EventBusTest, CloseWakesEveryWaiterAndLaterWaitsReturnAtOnce) {
  EventBus bus;
  constexpr int kWaiters = 4;
  std::atomic<int> woke{0};
  std::vector<std::thread> waiters;
  for (int i = 0; i < kWaiters; ++i) {
    waiters.emplace_back([&] {
      EventBus::Batch batch = bus.WaitAfter(0, milliseconds(60000));
      EXPECT_TRUE(batch.closed);
      EXPECT_TRUE(batch.events.empty());
      ++woke;
    });
  }
  std::this_thread::sleep_for(milliseconds(50));
  const auto start = Clock::now();
  bus.Close();
  for (auto& t : waiters) t.join();
  EXPECT_LT(Clock::now() - start, milliseconds(5000));
  EXPECT_EQ(woke.load(), kWaiters);

  const auto later = Clock::now();
  EXPECT_TRUE(bus.WaitAfter(0, milliseconds(60000)).closed);
  EXPECT_LT(Clock::now() - later, milliseconds(1000));
  bus.Close();  // idempotent
}

TEST(EventBusTest, ClosedWaitsStillDeliverRemainingEvents) {
  EventBus bus;
  bus.Publish("a", "{}", 0);
  bus.Close();
  bus.Publish("b", "{}", 0);
  EventBus::Batch batch = bus.WaitAfter(0, milliseconds(60000));
  EXPECT_TRUE(batch.closed);
  EXPECT_EQ(Ids(batch), (std::vector<uint64_t>{1, 2}));
}

// Every waiter sees every event exactly once, in order, when the ring holds them all.
TEST(EventBusTest, SeveralPublishersAndWaiters) {
  constexpr int kPublishers = 4, kPerPublisher = 2000, kWaiters = 3;
  constexpr uint64_t kTotal = kPublishers * kPerPublisher;
  EventBus bus(kTotal);
  std::vector<std::vector<uint64_t>> seen(kWaiters);
  std::vector<std::set<std::string>> payloads(kWaiters);
  std::vector<std::thread> threads;
  for (int w = 0; w < kWaiters; ++w) {
    threads.emplace_back([&, w] {
      uint64_t after = 0;
      while (after < kTotal) {
        EventBus::Batch batch = bus.WaitAfter(after, milliseconds(10000), 100);
        EXPECT_FALSE(batch.missed);
        if (batch.events.empty()) break;  // a timeout: the test failed
        for (const Event& e : batch.events) {
          seen[w].push_back(e.id);
          payloads[w].insert(e.data);
          after = e.id;
        }
      }
    });
  }
  for (int p = 0; p < kPublishers; ++p) {
    threads.emplace_back([&, p] {
      for (int i = 0; i < kPerPublisher; ++i) bus.Publish("t", std::to_string(p) + ":" + std::to_string(i), i);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(bus.last_id(), kTotal);
  for (int w = 0; w < kWaiters; ++w) {
    ASSERT_EQ(seen[w].size(), kTotal) << "waiter " << w;
    for (uint64_t i = 0; i < kTotal; ++i) ASSERT_EQ(seen[w][i], i + 1) << "waiter " << w;
    EXPECT_EQ(payloads[w].size(), kTotal);
  }
}

// With a small ring, slow waiters fall behind: each batch is consecutive, and a gap is always flagged as missed.
TEST(EventBusTest, SmallRingUnderLoadFlagsEveryGap) {
  constexpr int kPublishers = 3, kPerPublisher = 5000, kWaiters = 3;
  constexpr uint64_t kTotal = kPublishers * kPerPublisher;
  EventBus bus(16);
  std::vector<std::thread> threads;
  std::atomic<int> gaps_without_missed{0}, bad_batches{0};
  for (int w = 0; w < kWaiters; ++w) {
    threads.emplace_back([&] {
      uint64_t after = 0;
      while (after < kTotal) {
        EventBus::Batch batch = bus.WaitAfter(after, milliseconds(10000), 8);
        if (batch.events.empty()) break;
        if (!batch.missed && batch.events.front().id != after + 1) ++gaps_without_missed;
        for (size_t i = 1; i < batch.events.size(); ++i) {
          if (batch.events[i].id != batch.events[i - 1].id + 1) ++bad_batches;
        }
        after = batch.events.back().id;
      }
      EXPECT_EQ(after, kTotal);
    });
  }
  for (int p = 0; p < kPublishers; ++p) {
    threads.emplace_back([&] {
      for (int i = 0; i < kPerPublisher; ++i) bus.Publish("t", "{}", i);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(gaps_without_missed.load(), 0);
  EXPECT_EQ(bad_batches.load(), 0);
}

TEST(FormatSseTest, FormatsOneMessage) {
  Event e{.id = 42, .time_ms = 1, .type = "rule_added", .data = R"({"chain":"INPUT"})"};
  EXPECT_EQ(FormatSse(e), "id: 42\nevent: rule_added\ndata: {\"chain\":\"INPUT\"}\n\n");
}

TEST(FormatSseTest, NewlinesCannotForgeFields) {
  Event e{.id = 1, .time_ms = 0, .type = "a\nb", .data = "{}\r\nid: 999\n\ndata: x"};
  EXPECT_EQ(FormatSse(e), "id: 1\nevent: a b\ndata: {}  id: 999  data: x\n\n");
}

}  // namespace
}  // namespace iptkit::service
