// The counter sampler alone: a scripted reader stands in for the kernel, a scripted clock for time.
#include "src/service/counter_sampler.h"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>

#include "iptkit/dialect.h"

namespace iptkit::service {
namespace {

using namespace std::chrono_literals;

Rule R(std::string_view spec, uint64_t packets, uint64_t bytes = 0) {
  Result<Rule> r = ParseRuleSpec(spec, Family::kIPv4);
  EXPECT_TRUE(r.ok()) << spec << ": " << r.status().ToString();
  Rule rule = r.ok() ? *r : Rule{};
  rule.counters = {packets, bytes};
  return rule;
}

Ruleset Filter(std::vector<Rule> input) {
  Ruleset rs;
  Table t;
  t.name = "filter";
  Chain c;
  c.name = "INPUT";
  c.policy = "ACCEPT";
  c.rules = std::move(input);
  t.chains.push_back(std::move(c));
  rs.tables.push_back(std::move(t));
  return rs;
}

struct Script {
  Ruleset v4;
  int64_t now = 1'000'000;
  bool fail = false;
};

CounterSampler Make(Script* s, CounterSamplerOptions options = {}) {
  return CounterSampler(
      options,
      [s](Family f) -> Result<Ruleset> {
        if (s->fail) return Status::Unavailable("kernel read failed");
        if (f == Family::kIPv6) {
          Ruleset empty;
          empty.family = Family::kIPv6;
          return empty;
        }
        return s->v4;
      },
      [s] { return s->now; });
}

TEST(CounterSampler, RatesComeFromTheLastTwoSamples) {
  Script s;
  CounterSampler sampler = Make(&s);
  EXPECT_EQ(sampler.Rates(Family::kIPv4, "filter", "INPUT").status().code(), StatusCode::kUnavailable);
  s.v4 = Filter({R("-s 10.0.0.1 -j ACCEPT", 10, 1000), R("-j DROP", 0)});
  ASSERT_TRUE(sampler.SampleNow().ok());
  s.now += 5000;
  s.v4 = Filter({R("-s 10.0.0.1 -j ACCEPT", 60, 6000), R("-j DROP", 5)});
  ASSERT_TRUE(sampler.SampleNow().ok());
  Result<ChainRates> r = sampler.Rates(Family::kIPv4, "filter", "INPUT");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->rules.size(), 2u);
  EXPECT_EQ(r->rules[0].spec, FormatRuleSpec(R("-s 10.0.0.1 -j ACCEPT", 0)));
  EXPECT_EQ(r->rules[0].samples.size(), 2u);
  EXPECT_DOUBLE_EQ(r->rules[0].packets_per_second, 10.0);
  EXPECT_DOUBLE_EQ(r->rules[0].bytes_per_second, 1000.0);
  EXPECT_DOUBLE_EQ(r->rules[1].packets_per_second, 1.0);
  EXPECT_EQ(r->sampled_at_ms, s.now);
  EXPECT_EQ(sampler.Rates(Family::kIPv4, "filter", "NOPE").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(sampler.Rates(Family::kIPv6, "filter", "INPUT").status().code(), StatusCode::kNotFound);
}

TEST(CounterSampler, AMovedRuleKeepsItsHistoryAndAZeroedOneStartsOver) {
  Script s;
  CounterSampler sampler = Make(&s);
  s.v4 = Filter({R("-s 10.0.0.1 -j ACCEPT", 10), R("-s 10.0.0.2 -j ACCEPT", 20)});
  ASSERT_TRUE(sampler.SampleNow().ok());
  s.now += 1000;
  // A rule inserted at the top moves both down; the second one was zeroed.
  s.v4 = Filter({R("-j LOG", 0), R("-s 10.0.0.1 -j ACCEPT", 15), R("-s 10.0.0.2 -j ACCEPT", 1)});
  ASSERT_TRUE(sampler.SampleNow().ok());
  Result<ChainRates> r = sampler.Rates(Family::kIPv4, "filter", "INPUT");
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->rules.size(), 3u);
  EXPECT_EQ(r->rules[0].samples.size(), 1u);
  EXPECT_EQ(r->rules[1].index, 2);
  EXPECT_EQ(r->rules[1].samples.size(), 2u);
  EXPECT_DOUBLE_EQ(r->rules[1].packets_per_second, 5.0);
  EXPECT_EQ(r->rules[2].samples.size(), 1u) << "counters went down: a new history";
  EXPECT_DOUBLE_EQ(r->rules[2].packets_per_second, 0.0);
}

TEST(CounterSampler, TwinRulesAreFollowedInOrderAndDeletedOnesForgotten) {
  Script s;
  CounterSampler sampler = Make(&s);
  s.v4 = Filter({R("-j ACCEPT", 1), R("-j ACCEPT", 100), R("-j DROP", 7)});
  ASSERT_TRUE(sampler.SampleNow().ok());
  s.now += 1000;
  s.v4 = Filter({R("-j ACCEPT", 2), R("-j ACCEPT", 103)});
  ASSERT_TRUE(sampler.SampleNow().ok());
  Result<ChainRates> r = sampler.Rates(Family::kIPv4, "filter", "INPUT");
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->rules.size(), 2u);
  EXPECT_DOUBLE_EQ(r->rules[0].packets_per_second, 1.0);
  EXPECT_DOUBLE_EQ(r->rules[1].packets_per_second, 3.0);
}

TEST(CounterSampler, MemoryIsBoundedBySamplesAndRules) {
  Script s;
  CounterSampler sampler = Make(&s, {.interval = 1s, .max_samples = 3, .max_rules = 2});
  s.v4 = Filter({R("-s 10.0.0.1 -j ACCEPT", 1), R("-s 10.0.0.2 -j ACCEPT", 1), R("-s 10.0.0.3 -j ACCEPT", 1)});
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(sampler.SampleNow().ok());
    s.now += 1000;
  }
  Result<ChainRates> r = sampler.Rates(Family::kIPv4, "filter", "INPUT");
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->truncated);
  ASSERT_EQ(r->rules.size(), 3u);
  EXPECT_EQ(r->rules[0].samples.size(), 3u);
  EXPECT_EQ(r->rules[1].samples.size(), 3u);
  EXPECT_TRUE(r->rules[2].samples.empty()) << "the third rule is beyond max_rules";
}

TEST(CounterSampler, LatestIsTheLastSampledRuleset) {
  Script s;
  CounterSampler sampler = Make(&s);
  EXPECT_EQ(sampler.Latest(Family::kIPv4), nullptr);
  s.v4 = Filter({R("-j ACCEPT", 42, 4200)});
  ASSERT_TRUE(sampler.SampleNow().ok());
  std::shared_ptr<const Ruleset> latest = sampler.Latest(Family::kIPv4);
  ASSERT_NE(latest, nullptr);
  EXPECT_EQ(latest->tables.at(0).chains.at(0).rules.at(0).counters.packets, 42u);
  s.fail = true;
  EXPECT_FALSE(sampler.SampleNow().ok());
  EXPECT_EQ(sampler.Latest(Family::kIPv4), latest) << "a failed read keeps the last sample";
}

TEST(CounterSampler, AFailedReadKeepsThePreviousSamples) {
  Script s;
  CounterSampler sampler = Make(&s);
  s.v4 = Filter({R("-j ACCEPT", 1)});
  ASSERT_TRUE(sampler.SampleNow().ok());
  s.fail = true;
  s.now += 1000;
  EXPECT_EQ(sampler.SampleNow().code(), StatusCode::kUnavailable);
  Result<ChainRates> r = sampler.Rates(Family::kIPv4, "filter", "INPUT");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->rules.at(0).samples.size(), 1u);
}

TEST(CounterSampler, TheThreadSamplesEveryInterval) {
  Script s;
  s.v4 = Filter({R("-j ACCEPT", 1)});
  CounterSampler sampler = Make(&s, {.interval = 10ms});
  sampler.Start();
  bool sampled = false;
  for (int i = 0; i < 500 && !sampled; ++i) {
    std::this_thread::sleep_for(10ms);
    sampled = sampler.Rates(Family::kIPv4, "filter", "INPUT").ok();
  }
  sampler.Stop();
  EXPECT_TRUE(sampled);
}

// The sampling thread reads at a lower CPU priority than the rest of the process (the writer, the requests).
TEST(CounterSampler, TheThreadSamplesAtALowerPriority) {
  const int mine = getpriority(PRIO_PROCESS, static_cast<id_t>(gettid()));
  std::atomic<int> seen{-100};
  CounterSampler sampler(
      {.interval = 10ms, .nice = 5},
      [&](Family) -> Result<Ruleset> {
        seen = getpriority(PRIO_PROCESS, static_cast<id_t>(gettid()));
        return Ruleset{};
      },
      [] { return int64_t{1'000'000}; });
  sampler.Start();
  for (int i = 0; i < 500 && seen == -100; ++i) std::this_thread::sleep_for(10ms);
  sampler.Stop();
  EXPECT_EQ(seen, std::min(mine + 5, 19));
}

}  // namespace
}  // namespace iptkit::service
