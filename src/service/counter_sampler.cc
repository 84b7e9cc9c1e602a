#include "src/service/counter_sampler.h"

#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <utility>

#include "iptkit/dialect.h"

namespace iptkit::service {
namespace {

int64_t WallClockMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

size_t Slot(Family family) { return family == Family::kIPv4 ? 0 : 1; }

}  // namespace

CounterSampler::CounterSampler(CounterSamplerOptions options, Reader reader, Clock clock)
    : options_(options), reader_(std::move(reader)), clock_(clock ? std::move(clock) : Clock(&WallClockMs)) {}

CounterSampler::~CounterSampler() { Stop(); }

void CounterSampler::Start() {
  std::lock_guard<std::mutex> lock(run_mu_);
  if (thread_.joinable() || stopping_) return;
  thread_ = std::thread([this] { Run(); });
}

void CounterSampler::Stop() {
  {
    std::lock_guard<std::mutex> lock(run_mu_);
    stopping_ = true;
  }
  run_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void CounterSampler::Run() {
  if (options_.nice != 0) {
    // setpriority(2) with a thread id changes that thread only (see the NOTES there). Best effort: raising the
    // nice value is always allowed; lowering it may not be, and then the thread runs as the process does.
    const id_t tid = static_cast<id_t>(gettid());
    errno = 0;
    const int now = getpriority(PRIO_PROCESS, tid);
    if (errno == 0) (void)setpriority(PRIO_PROCESS, tid, now + options_.nice);
  }
  std::unique_lock<std::mutex> lock(run_mu_);
  while (!stopping_) {
    lock.unlock();
    (void)SampleNow();  // a failed read keeps the previous samples; the next interval tries again
    lock.lock();
    run_cv_.wait_for(lock, options_.interval, [this] { return stopping_; });
  }
}

Status CounterSampler::SampleNow() {
  Status first_error = Status::Ok();
  for (Family family : {Family::kIPv4, Family::kIPv6}) {
    Result<Ruleset> ruleset = reader_(family);
    const int64_t now = clock_();
    if (!ruleset.ok()) {
      if (first_error.ok()) first_error = ruleset.status();
      continue;
    }
    Absorb(family, *ruleset, now);
    auto latest = std::make_shared<const Ruleset>(*std::move(ruleset));
    std::lock_guard<std::mutex> lock(mu_);
    families_[Slot(family)].latest = std::move(latest);
  }
  return first_error;
}

void CounterSampler::Absorb(Family family, const Ruleset& ruleset, int64_t now) {
  std::lock_guard<std::mutex> lock(mu_);
  FamilyState& state = families_[Slot(family)];
  std::map<ChainKey, std::vector<Followed>> next;
  // The other family's rules count against max_rules too; this family's are counted again below.
  size_t followed = families_[1 - Slot(family)].followed;
  bool truncated = false;
  for (const Table& table : ruleset.tables) {
    for (const Chain& chain : table.chains) {
      ChainKey key{table.name, chain.name};
      // The previous histories of this chain, by spec, in chain order: the n-th rule with a spec takes the n-th
      // history with that spec.
      std::map<std::string, std::deque<std::deque<CounterSample>*>> previous;
      auto old = state.chains.find(key);
      if (old != state.chains.end()) {
        for (Followed& f : old->second) previous[f.spec].push_back(&f.samples);
      }
      std::vector<Followed>& out = next[key];
      out.reserve(chain.rules.size());
      int index = 0;
      for (const Rule& rule : chain.rules) {
        Followed f;
        f.spec = FormatRuleSpec(rule);
        f.index = ++index;
        auto prev = previous.find(f.spec);
        if (prev != previous.end() && !prev->second.empty()) {
          f.samples = std::move(*prev->second.front());
          prev->second.pop_front();
        }
        // Counters that went down: zeroed, or another rule with the same spec. Start over.
        if (!f.samples.empty() &&
            (rule.counters.packets < f.samples.back().packets || rule.counters.bytes < f.samples.back().bytes)) {
          f.samples.clear();
        }
        if (f.samples.empty() && followed >= options_.max_rules) {
          truncated = true;  // a new rule beyond the bound: listed without samples
        } else {
          ++followed;
          f.samples.push_back({now, rule.counters.packets, rule.counters.bytes});
          while (f.samples.size() > options_.max_samples) f.samples.pop_front();
        }
        out.push_back(std::move(f));
      }
    }
  }
  state.chains = std::move(next);
  state.sampled_at_ms = now;
  state.followed = followed - families_[1 - Slot(family)].followed;
  state.truncated = truncated;
}

std::shared_ptr<const Ruleset> CounterSampler::Latest(Family family) const {
  std::lock_guard<std::mutex> lock(mu_);
  return families_[Slot(family)].latest;
}

Result<ChainRates> CounterSampler::Rates(Family family, const std::string& table, const std::string& chain) const {
  std::lock_guard<std::mutex> lock(mu_);
  const FamilyState& state = families_[Slot(family)];
  if (state.sampled_at_ms == 0) {
    return Status::Unavailable("no counter sample of " + std::string(FamilyName(family)) + " was taken yet");
  }
  auto it = state.chains.find(ChainKey{table, chain});
  if (it == state.chains.end()) {
    return Status::NotFound("chain '" + chain + "' was not in table " + table + " at the last counter sample");
  }
  ChainRates out;
  out.family = family;
  out.table = table;
  out.chain = chain;
  out.interval = options_.interval;
  out.sampled_at_ms = state.sampled_at_ms;
  out.truncated = state.truncated;
  out.rules.reserve(it->second.size());
  for (const Followed& f : it->second) {
    RuleRates r;
    r.index = f.index;
    r.spec = f.spec;
    r.samples.assign(f.samples.begin(), f.samples.end());
    if (f.samples.size() >= 2) {
      const CounterSample& a = f.samples[f.samples.size() - 2];
      const CounterSample& b = f.samples.back();
      const double seconds = static_cast<double>(b.time_ms - a.time_ms) / 1000.0;
      if (seconds > 0) {
        r.packets_per_second = static_cast<double>(b.packets - a.packets) / seconds;
        r.bytes_per_second = static_cast<double>(b.bytes - a.bytes) / seconds;
      }
    }
    out.rules.push_back(std::move(r));
  }
  return out;
}

}  // namespace iptkit::service
