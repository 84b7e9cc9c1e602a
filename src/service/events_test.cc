#include "src/service/events.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
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

// ---- Subscriptions ----

#define ASSERT_OK_AND_ASSIGN(lhs, expr)                                                \
  auto lhs##_result = (expr);                                                          \
  ASSERT_TRUE(lhs##_result.ok()) << #expr << ": " << lhs##_result.status().ToString(); \
  auto lhs = std::move(lhs##_result).value()

// Reads everything a subscription has now.
std::string ReadAll(EventBus::Subscription& sub, EventBus::Subscription::State* state = nullptr) {
  std::string out;
  EventBus::Subscription::State st = sub.Read(1 << 20, &out);
  if (state != nullptr) *state = st;
  return out;
}

TEST(SubscriptionTest, ReadsEventsAfterItsStartAndWakesOnPublish) {
  EventBus bus;
  bus.Publish("a", "{}", 0);
  bus.Publish("b", "{}", 0);
  ASSERT_OK_AND_ASSIGN(sub, bus.Subscribe(1));
  std::atomic<int> wakes{0};
  sub->SetWaker([&] { ++wakes; });
  EXPECT_EQ(ReadAll(*sub), "id: 2\nevent: b\ndata: {}\n\n");
  EXPECT_EQ(sub->last_id(), 2u);
  EXPECT_EQ(ReadAll(*sub), "");
  bus.Publish("c", "{\"x\":1}", 0);
  EXPECT_EQ(wakes.load(), 1);
  EventBus::Subscription::State state;
  EXPECT_EQ(ReadAll(*sub, &state), "id: 3\nevent: c\ndata: {\"x\":1}\n\n");
  EXPECT_EQ(state, EventBus::Subscription::kOpen);
  // After Close: what is left, then kFinished.
  bus.Publish("d", "{}", 0);
  bus.Close();
  EXPECT_EQ(wakes.load(), 3);
  EXPECT_EQ(ReadAll(*sub, &state), "id: 4\nevent: d\ndata: {}\n\n");
  EXPECT_EQ(state, EventBus::Subscription::kFinished);
}

TEST(SubscriptionTest, AnAfterBeyondTheLastIdMeansFromNow) {
  EventBus bus;
  bus.Publish("a", "{}", 0);
  ASSERT_OK_AND_ASSIGN(sub, bus.Subscribe(99));
  EXPECT_EQ(sub->last_id(), 1u);
  EXPECT_EQ(ReadAll(*sub), "");
  bus.Publish("b", "{}", 0);
  EXPECT_EQ(ReadAll(*sub), "id: 2\nevent: b\ndata: {}\n\n");
}

TEST(SubscriptionTest, ReadStopsAroundMaxBytesAtWholeFrames) {
  EventBus bus;
  for (int i = 0; i < 10; ++i) bus.Publish("t", std::string(100, 'x'), 0);
  ASSERT_OK_AND_ASSIGN(sub, bus.Subscribe(0));
  std::string out;
  EXPECT_EQ(sub->Read(250, &out), EventBus::Subscription::kOpen);
  EXPECT_EQ(sub->last_id(), 3u);  // each frame is 123 bytes: stop once 250 are reached
  EXPECT_TRUE(out.ends_with("\n\n"));
  out.clear();
  EXPECT_EQ(sub->Read(1, &out), EventBus::Subscription::kOpen);  // at least one frame
  EXPECT_EQ(sub->last_id(), 4u);
}

TEST(SubscriptionTest, AStartBeyondTheRingOrTheBacklogBoundSaysEventsWereDropped) {
  EventBus bus(EventBusOptions{.capacity = 4, .max_backlog_bytes = 1000});
  for (int i = 0; i < 10; ++i) bus.Publish("t", "{}", 0);  // holds 7..10
  ASSERT_OK_AND_ASSIGN(sub, bus.Subscribe(2));
  std::string out = ReadAll(*sub);
  EXPECT_TRUE(out.starts_with(": some events were dropped from the buffer before they could be sent\n\n")) << out;
  EXPECT_NE(out.find("id: 7\n"), std::string::npos) << out;
  EXPECT_EQ(sub->last_id(), 10u);

  EventBus big(EventBusOptions{.max_backlog_bytes = 500});
  for (int i = 0; i < 10; ++i) big.Publish("t", std::string(100, 'x'), 0);  // 123 bytes each
  ASSERT_OK_AND_ASSIGN(late, big.Subscribe(0));
  out = ReadAll(*late);
  EXPECT_TRUE(out.starts_with(": some events were dropped")) << out;
  EXPECT_EQ(out.find("id: 6\n"), std::string::npos) << out;
  EXPECT_NE(out.find("id: 7\n"), std::string::npos) << out;  // 7..10: 492 bytes
}

TEST(SubscriptionTest, ASubscriberThatFallsBehindIsCutWithTheReason) {
  EventBus bus(EventBusOptions{.max_backlog_bytes = 1000});
  ASSERT_OK_AND_ASSIGN(slow, bus.Subscribe(0));
  ASSERT_OK_AND_ASSIGN(fast, bus.Subscribe(0));
  std::atomic<int> wakes{0};
  slow->SetWaker([&] { ++wakes; });
  for (int i = 0; i < 20; ++i) {
    bus.Publish("t", std::string(100, 'x'), 0);
    ReadAll(*fast);
  }
  EXPECT_TRUE(slow->cut());
  EXPECT_FALSE(fast->cut());
  EXPECT_EQ(wakes.load(), 20);
  EventBus::Subscription::State state;
  std::string out = ReadAll(*slow, &state);
  EXPECT_EQ(state, EventBus::Subscription::kCut);
  EXPECT_TRUE(
      out.starts_with(": disconnected: this stream was too slow: it fell 1107 bytes of events behind (the "
                      "limit is 1000); reconnect with Last-Event-ID: 0\n"))
      << out;
  EXPECT_NE(out.find("event: disconnect\ndata: {\"reason\":\"slow_consumer\","), std::string::npos) << out;
  EXPECT_TRUE(out.ends_with(",\"last_event_id\":0}\n\n")) << out;
  EXPECT_EQ(fast->last_id(), 20u);
}

TEST(SubscriptionTest, TheReaderMayCutItForItsOwnReason) {
  EventBus bus;
  ASSERT_OK_AND_ASSIGN(sub, bus.Subscribe(0));
  bus.Publish("t", "{}", 0);
  sub->Cut("it accepted no data for 10 s");
  sub->Cut("ignored: cut already");
  EXPECT_TRUE(sub->cut());
  EventBus::Subscription::State state;
  std::string out = ReadAll(*sub, &state);
  EXPECT_EQ(state, EventBus::Subscription::kCut);
  EXPECT_TRUE(
      out.starts_with(": disconnected: this stream was too slow: it accepted no data for 10 s; reconnect "
                      "with Last-Event-ID: 0\n"))
      << out;
}

TEST(SubscriptionTest, UnreadEventsLeavingTheRingCutTheSubscriber) {
  EventBus bus(EventBusOptions{.capacity = 4, .max_backlog_bytes = 1 << 20});
  ASSERT_OK_AND_ASSIGN(sub, bus.Subscribe(0));
  bus.Publish("t", "{}", 0);
  ReadAll(*sub);
  for (int i = 0; i < 5; ++i) bus.Publish("t", "{}", 0);
  EventBus::Subscription::State state;
  std::string out = ReadAll(*sub, &state);
  EXPECT_EQ(state, EventBus::Subscription::kCut);
  EXPECT_NE(out.find("were dropped from the daemon's buffer; reconnect with Last-Event-ID: 1\n"), std::string::npos)
      << out;
}

TEST(SubscriptionTest, TheRingIsBoundedByBytes) {
  EventBus bus(EventBusOptions{.capacity = 1000, .max_bytes = 10000});
  for (int i = 0; i < 100; ++i) bus.Publish("t", std::string(1000, 'x'), 0);
  EventBus::Batch batch = bus.WaitAfter(0, std::chrono::milliseconds(0), 1000);
  EXPECT_TRUE(batch.missed);
  EXPECT_LE(batch.events.size(), 4u);
  EXPECT_GE(batch.events.size(), 1u);
  EXPECT_EQ(batch.events.back().id, 100u);
  // An event larger than the bound is still kept.
  bus.Publish("t", std::string(50000, 'y'), 0);
  batch = bus.WaitAfter(100, std::chrono::milliseconds(0));
  ASSERT_EQ(batch.events.size(), 1u);
  EXPECT_EQ(batch.events[0].data.size(), 50000u);
}

TEST(SubscriptionTest, SubscribersAreBoundedAndReleased) {
  EventBus bus(EventBusOptions{.max_subscribers = 2});
  ASSERT_OK_AND_ASSIGN(a, bus.Subscribe(0));
  {
    ASSERT_OK_AND_ASSIGN(b, bus.Subscribe(0));
    EXPECT_EQ(bus.subscribers(), 2u);
    Result<std::unique_ptr<EventBus::Subscription>> c = bus.Subscribe(0);
    ASSERT_FALSE(c.ok());
    EXPECT_EQ(c.status().code(), StatusCode::kUnavailable);
    EXPECT_THAT(c.status().message(), ::testing::HasSubstr("max_event_streams"));
  }
  EXPECT_EQ(bus.subscribers(), 1u);
  EXPECT_TRUE(bus.Subscribe(0).ok());
}

TEST(SubscriptionTest, PublishersAndReadersOnManyThreads) {
  constexpr int kPublishers = 3, kPerPublisher = 2000, kReaders = 4;
  constexpr uint64_t kTotal = kPublishers * kPerPublisher;
  EventBus bus(EventBusOptions{.capacity = kTotal, .max_bytes = 64 << 20, .max_backlog_bytes = 64 << 20});
  std::vector<std::thread> threads;
  std::atomic<int> bad{0};
  for (int r = 0; r < kReaders; ++r) {
    auto sub = bus.Subscribe(0);
    ASSERT_TRUE(sub.ok());
    threads.emplace_back([&bad, sub = std::shared_ptr<EventBus::Subscription>(std::move(*sub))] {
      std::mutex mu;
      std::condition_variable cv;
      bool woken = false;
      sub->SetWaker([&] {
        std::lock_guard<std::mutex> lock(mu);
        woken = true;
        cv.notify_one();
      });
      uint64_t expect = 1;
      for (;;) {
        std::string out;
        EventBus::Subscription::State st = sub->Read(4096, &out);
        for (size_t at = out.find("id: "); at != std::string::npos; at = out.find("\nid: ", at + 1)) {
          const size_t digits = out[at] == '\n' ? at + 5 : at + 4;
          if (std::stoull(out.substr(digits)) != expect) ++bad;
          ++expect;
        }
        if (st != EventBus::Subscription::kOpen) break;
        if (out.empty()) {
          std::unique_lock<std::mutex> lock(mu);
          cv.wait_for(lock, std::chrono::milliseconds(100), [&] { return woken; });
          woken = false;
        }
      }
      if (expect != kTotal + 1) ++bad;
      sub->SetWaker(nullptr);
    });
  }
  std::vector<std::thread> publishers;
  for (int p = 0; p < kPublishers; ++p) {
    publishers.emplace_back([&] {
      for (int i = 0; i < kPerPublisher; ++i) bus.Publish("t", "{}", i);
    });
  }
  for (auto& t : publishers) t.join();
  bus.Close();
  for (auto& t : threads) t.join();
  EXPECT_EQ(bad.load(), 0);
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
