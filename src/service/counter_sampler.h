// CounterSampler: the rule counters of the served namespace, sampled at a fixed interval into a bounded ring per
// rule, so that packet and byte rates can be served (`GET .../chains/CHAIN/rates`, the dashboard's rate graphs)
// without every viewer reading the kernel. One read per family per interval, whatever the number of viewers.
//
// A rule is followed from sample to sample by its chain and canonical spec (the n-th rule with the same spec in a
// chain is the n-th again), so a rule that moves keeps its history; a rule that disappears is forgotten at the next
// sample. A rule whose counters went down (zeroed, or deleted and added again) starts a new history.
// Memory is bounded: at most `max_samples` samples per rule and `max_rules` rules (beyond, rules are listed
// without samples and `truncated` is set).
//
// Thread-safety: every public method is thread-safe. The sampling thread runs from Start to Stop (or destruction).
//
//   CounterSampler sampler({.interval = 5s}, [&](Family f) { return service->List(f, std::nullopt, opts); });
//   sampler.Start();
//   Result<ChainRates> r = sampler.Rates(Family::kIPv4, "filter", "INPUT");
#ifndef IPTKIT_SRC_SERVICE_COUNTER_SAMPLER_H_
#define IPTKIT_SRC_SERVICE_COUNTER_SAMPLER_H_

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "iptkit/model.h"
#include "iptkit/status.h"

namespace iptkit::service {

struct CounterSample {
  int64_t time_ms = 0;  // when the kernel was read, ms since the Unix epoch
  uint64_t packets = 0;
  uint64_t bytes = 0;
};

struct RuleRates {
  int index = 0;                       // 1-based position at the last sample
  std::string spec;                    // canonical spec (the key)
  std::vector<CounterSample> samples;  // oldest first; empty when not tracked (see ChainRates::truncated)
  // Per second, between the last two samples; 0 with fewer than two.
  double packets_per_second = 0;
  double bytes_per_second = 0;
};

struct ChainRates {
  Family family = Family::kIPv4;
  std::string table;
  std::string chain;
  std::chrono::milliseconds interval{0};
  int64_t sampled_at_ms = 0;  // time of the last sample of this family; 0 before the first
  bool truncated = false;     // more rules than max_rules: some are listed without samples
  std::vector<RuleRates> rules;
};

struct CounterSamplerOptions {
  std::chrono::milliseconds interval = std::chrono::seconds(5);
  size_t max_samples = 60;     // per rule (5 minutes at the default interval)
  size_t max_rules = 200'000;  // followed in all, both families
  // Added to the sampling thread's nice value (Linux schedules threads one by one): a sample of a large ruleset
  // decodes every rule, and on a busy machine the writer and the request threads go first (0: as the process).
  int nice = 10;
};

class CounterSampler {
 public:
  // Reads one family's whole ruleset with counters; called from the sampling thread only.
  using Reader = std::function<Result<Ruleset>(Family)>;
  // Returns the wall clock in ms since the Unix epoch (tests pass their own).
  using Clock = std::function<int64_t()>;

  CounterSampler(CounterSamplerOptions options, Reader reader, Clock clock = nullptr);
  ~CounterSampler();  // Stop()
  CounterSampler(const CounterSampler&) = delete;
  CounterSampler& operator=(const CounterSampler&) = delete;

  // Starts the sampling thread (one sample at once, then one per interval). Idempotent.
  void Start();
  void Stop();

  // Takes one sample of both families now (what the thread does every interval). A family whose read fails keeps
  // its previous samples; the error is returned (the other family is still sampled).
  Status SampleNow();

  // The chain's rules with their samples as of the last sample. NotFound when the chain was not in the last
  // sample of its family (or no sample was taken yet: then the message says so).
  Result<ChainRates> Rates(Family family, const std::string& table, const std::string& chain) const;

  // The family's ruleset (with counters) as read at the last sample; nullptr before the first. What /metrics
  // reports (Service::SetCounterFeed), so that its counters and the rates are one feed.
  std::shared_ptr<const Ruleset> Latest(Family family) const;

  std::chrono::milliseconds interval() const { return options_.interval; }

 private:
  struct Followed {
    std::string spec;
    int index = 0;
    std::deque<CounterSample> samples;  // empty when beyond max_rules
  };
  // (table, chain) -> rules in chain order.
  using ChainKey = std::tuple<std::string, std::string>;
  struct FamilyState {
    int64_t sampled_at_ms = 0;
    std::shared_ptr<const Ruleset> latest;
    size_t followed = 0;     // rules with samples
    bool truncated = false;  // some rules were left without samples (max_rules)
    std::map<ChainKey, std::vector<Followed>> chains;
  };

  void Run();
  // Replaces the family's state by `ruleset` read at `now`, carrying each followed rule's history over.
  void Absorb(Family family, const Ruleset& ruleset, int64_t now);

  const CounterSamplerOptions options_;
  const Reader reader_;
  const Clock clock_;

  mutable std::mutex mu_;
  FamilyState families_[2];  // by Family (kIPv4, kIPv6)

  std::mutex run_mu_;
  std::condition_variable run_cv_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace iptkit::service

#endif  // IPTKIT_SRC_SERVICE_COUNTER_SAMPLER_H_
