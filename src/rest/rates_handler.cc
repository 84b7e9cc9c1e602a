// GET /v1/FAMILY/tables/TABLE/chains/CHAIN/rates: the chain's rule counters as sampled by the daemon
// (service/counter_sampler.h), with packet and byte rates. Served from memory: viewers never read the kernel.
#include <cstdint>
#include <optional>

#include "src/rest/handlers.h"

namespace iptkit::rest {

HttpResponse RatesHandler(const HandlerEnv& env, Call& call) {
  if (Status s = CheckQuery(env, call, {"first", "count"}); !s.ok()) return StatusResponse(call, s);
  // A window of the chain (what a page has on screen): rules first..first+count-1.
  Result<std::optional<int64_t>> first = QueryInt(call.req.query, "first", 1, 1 << 30);
  if (!first.ok()) return StatusResponse(call, first.status());
  Result<std::optional<int64_t>> count = QueryInt(call.req.query, "count", 1, 1 << 30);
  if (!count.ok()) return StatusResponse(call, count.status());
  const int64_t from = first->value_or(1);
  const int64_t to = count->has_value() ? from + **count - 1 : INT64_MAX;
  if (env.counters == nullptr) {
    return StatusResponse(call, Status::Unavailable("counter sampling is off (counter_interval 0)"));
  }
  Result<service::ChainRates> rates = env.counters->Rates(CallFamily(call), call.Param("table"), call.Param("chain"));
  if (!rates.ok()) return StatusResponse(call, rates.status());
  json::Json rules = json::Json::array();
  for (const service::RuleRates& r : rates->rules) {
    if (r.index < from || r.index > to) continue;
    json::Json samples = json::Json::array();
    for (const service::CounterSample& s : r.samples) samples.push_back({s.time_ms, s.packets, s.bytes});
    rules.push_back({{"index", r.index},
                     {"spec", r.spec},
                     {"packets_per_second", r.packets_per_second},
                     {"bytes_per_second", r.bytes_per_second},
                     {"samples", std::move(samples)}});
  }
  return JsonResponse({{"family", call.Param("family")},
                       {"table", rates->table},
                       {"chain", rates->chain},
                       {"interval_ms", rates->interval.count()},
                       {"sampled_at", FormatTime(rates->sampled_at_ms)},
                       {"truncated", rates->truncated},
                       {"rules", std::move(rules)}});
}

}  // namespace iptkit::rest
