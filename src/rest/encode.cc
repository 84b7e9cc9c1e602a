#include "src/rest/encode.h"

#include <algorithm>
#include <map>
#include <tuple>

#include "iptkit/json.h"
#include "src/rest/decode.h"

namespace iptkit::rest {
namespace {

using json::Json;

Json TablesJson(const std::vector<TableCommit>& tables) {
  Json out = Json::array();
  for (const TableCommit& t : tables) {
    out.push_back(
        {{"family", std::string(FamilyName(t.family))}, {"table", t.table}, {"restore_text", t.restore_text}});
  }
  return out;
}

Json StepsJson(const std::vector<PlanStep>& steps) {
  Json out = Json::array();
  for (const PlanStep& s : steps) {
    out.push_back({{"family", std::string(FamilyName(s.family))}, {"table", s.table}, {"description", s.description}});
  }
  return out;
}

}  // namespace

Json ManagedJson(const service::ManagedRuleView& v) {
  const store::ManagedRule& r = v.rule;
  Json j;
  j["owner"] = r.owner;
  j["family"] = std::string(FamilyName(r.family));
  j["table"] = r.table;
  j["chain"] = r.chain;
  j["spec"] = r.spec;
  j["id"] = r.rule_id;
  j["position"] = std::string(store::PositionName(r.position));
  if (v.ttl_remaining_seconds) {
    j["ttl_remaining"] = *v.ttl_remaining_seconds;
    j["expires_at"] = FormatTime(*r.deadline_ms);
  } else {
    j["ttl_remaining"] = nullptr;
  }
  j["created_at"] = FormatTime(r.created_ms);
  j["updated_at"] = FormatTime(r.updated_ms);
  return j;
}

Json ResultJson(const service::ChangeResult& r) {
  Json j;
  j["transaction"] = r.id;
  j["dry_run"] = r.dry_run;
  j["changed"] = r.changed;
  j["batch_requests"] = r.batch_requests;
  j["tables"] = TablesJson(r.tables);
  j["steps"] = StepsJson(r.steps);
  j["warnings"] = r.warnings;
  Json managed = Json::array();
  for (const auto& m : r.managed) managed.push_back(ManagedJson(m));
  j["managed"] = managed;
  if (r.confirm_deadline_ms) {
    j["confirm_deadline"] = FormatTime(*r.confirm_deadline_ms);
    j["confirm_url"] = "/v1/transactions/" + r.id + "/confirm";
  }
  return j;
}

Json ConfirmJson(const store::ConfirmRecord& c) {
  Json j;
  j["transaction"] = c.id;
  j["state"] = std::string(store::ConfirmStateName(c.state));
  j["deadline"] = FormatTime(c.deadline_ms);
  // The time left by the daemon's clock, so that a client counts down without trusting its own clock.
  if (c.state == store::ConfirmRecord::State::kPending) {
    j["remaining_ms"] = std::max<int64_t>(0, c.deadline_ms - service::NowMs());
  }
  j["principal"] = c.principal;
  j["request_id"] = c.request_id;
  j["created_at"] = FormatTime(c.created_ms);
  j["resolved_at"] = c.resolved_ms ? Json(FormatTime(*c.resolved_ms)) : Json(nullptr);
  j["message"] = c.message;
  return j;
}

Json OwnerJson(const service::OwnerView& o, bool with_drift) {
  Json j;
  j["owner"] = o.owner;
  j["document"] = o.document ? json::DesiredStateToJson(*o.document, json::DialectSpec()) : Json(nullptr);
  Json managed = Json::array();
  for (const auto& m : o.managed) managed.push_back(ManagedJson(m));
  j["managed"] = managed;
  if (with_drift) {
    j["in_sync"] = o.drift.empty();
    j["drift"] = StepsJson(o.drift);
  }
  return j;
}

Json AuditEntryJson(const store::AuditEntry& e) {
  Json j;
  j["id"] = e.id;
  j["time"] = FormatTime(e.time_ms);
  j["principal"] = e.principal;
  j["request_id"] = e.request_id;
  j["action"] = e.action;
  Result<Json> request =
      e.request.empty() || e.request_original_bytes ? Result<Json>(Json(e.request)) : json::Parse(e.request);
  j["request"] = e.request.empty() ? Json(nullptr) : request.ok() ? *request : Json(e.request);
  j["result"] = e.result;
  j["message"] = e.message;
  j["diff"] = e.diff;
  // Only for truncated texts: their size before the store cut them.
  if (e.request_original_bytes) j["request_bytes"] = *e.request_original_bytes;
  if (e.message_original_bytes) j["message_bytes"] = *e.message_original_bytes;
  if (e.diff_original_bytes) j["diff_bytes"] = *e.diff_original_bytes;
  return j;
}

Json AnnotatedRuleset(const Ruleset& rs, const std::vector<service::ManagedRuleView>& views) {
  Json j = json::RulesetToJson(rs, json::DialectSpec());
  std::map<std::tuple<std::string, std::string, std::string, std::string>, const service::ManagedRuleView*> managed;
  for (const service::ManagedRuleView& v : views) {
    if (v.rule.family != rs.family) continue;
    managed.emplace(std::make_tuple(v.rule.table, v.rule.chain, v.rule.owner, v.rule.rule_id), &v);
  }
  for (Json& t : j["tables"]) {
    for (Json& c : t["chains"]) {
      for (Json& r : c["rules"]) {
        if (!r.contains("owner")) continue;
        auto it = managed.find({t["name"].get<std::string>(), c["name"].get<std::string>(),
                                r["owner"].get<std::string>(), r["id"].get<std::string>()});
        if (it == managed.end()) continue;
        r["managed"] = true;
        r["ttl_remaining"] =
            it->second->ttl_remaining_seconds ? Json(*it->second->ttl_remaining_seconds) : Json(nullptr);
        if (it->second->rule.deadline_ms) r["expires_at"] = FormatTime(*it->second->rule.deadline_ms);
      }
    }
  }
  return j;
}

}  // namespace iptkit::rest
