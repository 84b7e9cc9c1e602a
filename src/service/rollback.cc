#include "src/service/rollback.h"

#include <utility>

#include "iptkit/dialect.h"
#include "src/json/json_codec.h"

namespace iptkit::service {
namespace {

using backend::TableOp;
using json::Json;

constexpr std::pair<TableOp::Kind, std::string_view> kOpNames[] = {
    {TableOp::Kind::kAppend, "append"},
    {TableOp::Kind::kInsert, "insert"},
    {TableOp::Kind::kCheck, "check"},
    {TableOp::Kind::kDelete, "delete"},
    {TableOp::Kind::kDeleteAt, "delete_at"},
    {TableOp::Kind::kReplace, "replace"},
    {TableOp::Kind::kNewChain, "new_chain"},
    {TableOp::Kind::kDeleteChain, "delete_chain"},
    {TableOp::Kind::kRenameChain, "rename_chain"},
    {TableOp::Kind::kFlush, "flush"},
    {TableOp::Kind::kZero, "zero"},
    {TableOp::Kind::kPolicy, "policy"},
};

Status Bad(const std::string& pointer, const std::string& what) {
  return Status::InvalidArgument("rollback record " + pointer + ": " + what);
}

Json RuleJson(const store::ManagedRule& r) {
  Json j;
  j["seq"] = r.seq;
  j["owner"] = r.owner;
  j["family"] = std::string(FamilyName(r.family));
  j["table"] = r.table;
  j["chain"] = r.chain;
  j["spec"] = r.spec;
  j["rule_id"] = r.rule_id;
  j["position"] = std::string(store::PositionName(r.position));
  j["deadline_ms"] = r.deadline_ms ? Json(*r.deadline_ms) : Json(nullptr);
  j["created_ms"] = r.created_ms;
  j["updated_ms"] = r.updated_ms;
  return j;
}

// nlohmann throws on type mismatches: everything is read through these.
Result<std::string> Str(const Json& j, const char* key, const std::string& p) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) return Bad(p + "/" + key, "expected a string");
  return it->get<std::string>();
}
Result<int64_t> Int(const Json& j, const char* key, const std::string& p) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number_integer()) return Bad(p + "/" + key, "expected an integer");
  return it->get<int64_t>();
}

Result<store::ManagedRule> RuleFrom(const Json& j, const std::string& p) {
  if (!j.is_object()) return Bad(p, "expected an object");
  store::ManagedRule r;
  IPTKIT_ASSIGN_OR_RETURN(r.seq, Int(j, "seq", p));
  IPTKIT_ASSIGN_OR_RETURN(r.owner, Str(j, "owner", p));
  IPTKIT_ASSIGN_OR_RETURN(std::string family, Str(j, "family", p));
  IPTKIT_ASSIGN_OR_RETURN(r.family, ParseFamily(family));
  IPTKIT_ASSIGN_OR_RETURN(r.table, Str(j, "table", p));
  IPTKIT_ASSIGN_OR_RETURN(r.chain, Str(j, "chain", p));
  IPTKIT_ASSIGN_OR_RETURN(r.spec, Str(j, "spec", p));
  IPTKIT_ASSIGN_OR_RETURN(r.rule_id, Str(j, "rule_id", p));
  IPTKIT_ASSIGN_OR_RETURN(std::string position, Str(j, "position", p));
  if (position != "first" && position != "last") return Bad(p + "/position", "expected first or last");
  r.position = position == "first" ? store::Position::kFirst : store::Position::kLast;
  auto deadline = j.find("deadline_ms");
  if (deadline != j.end() && !deadline->is_null()) {
    IPTKIT_ASSIGN_OR_RETURN(r.deadline_ms, Int(j, "deadline_ms", p));
  }
  IPTKIT_ASSIGN_OR_RETURN(r.created_ms, Int(j, "created_ms", p));
  IPTKIT_ASSIGN_OR_RETURN(r.updated_ms, Int(j, "updated_ms", p));
  return r;
}

Result<std::optional<store::ManagedRule>> OptRuleFrom(const Json& j, const char* key, const std::string& p) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::optional<store::ManagedRule>();
  IPTKIT_ASSIGN_OR_RETURN(store::ManagedRule r, RuleFrom(*it, p + "/" + key));
  return std::optional<store::ManagedRule>(std::move(r));
}

Result<std::optional<DesiredState>> OptDocFrom(const Json& j, const char* key, const std::string& p) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::optional<DesiredState>();
  Result<DesiredState> d = json::DesiredStateFromJson(*it, json::DialectSpec());
  if (!d.ok()) return d.status().WithContext("rollback record " + p + "/" + key);
  return std::optional<DesiredState>(*std::move(d));
}

}  // namespace

std::string RollbackToJson(const Rollback& rollback) {
  Json root = Json::object();
  Json batches = Json::array();
  for (const backend::TableBatch& b : rollback.batches) {
    Json jb;
    jb["family"] = std::string(FamilyName(b.family));
    jb["table"] = b.table;
    jb["with_counters"] = b.with_counters;
    Json ops = Json::array();
    for (const TableOp& op : b.ops) {
      Json jo;
      for (const auto& [kind, name] : kOpNames) {
        if (kind == op.kind) jo["op"] = std::string(name);
      }
      jo["chain"] = op.chain;
      jo["index"] = op.index;
      jo["spec"] = FormatRuleSpec(op.rule);
      jo["arg"] = op.arg;
      jo["counters"] = Json::array({op.rule.counters.packets, op.rule.counters.bytes});
      ops.push_back(std::move(jo));
    }
    jb["ops"] = std::move(ops);
    batches.push_back(std::move(jb));
  }
  root["batches"] = std::move(batches);
  Json managed = Json::array();
  for (const auto& m : rollback.managed) {
    Json jm;
    jm["before"] = m.before ? RuleJson(*m.before) : Json(nullptr);
    jm["after"] = m.after ? RuleJson(*m.after) : Json(nullptr);
    jm["key"] = RuleJson(store::ManagedRule{0, m.key.owner, m.key.family, m.key.table, m.key.chain, m.key.spec, "",
                                            store::Position::kLast, std::nullopt, 0, 0});
    managed.push_back(std::move(jm));
  }
  root["managed"] = std::move(managed);
  Json documents = Json::array();
  for (const auto& d : rollback.documents) {
    Json jd;
    jd["owner"] = d.owner;
    jd["before"] = d.before ? json::DesiredStateToJson(*d.before, json::DialectSpec()) : Json(nullptr);
    jd["after"] = d.after ? json::DesiredStateToJson(*d.after, json::DialectSpec()) : Json(nullptr);
    documents.push_back(std::move(jd));
  }
  root["documents"] = std::move(documents);
  return json::Dump(root);
}

Result<Rollback> RollbackFromJson(std::string_view text) {
  IPTKIT_ASSIGN_OR_RETURN(Json root, json::Parse(text));
  if (!root.is_object()) return Bad("", "expected an object");
  Rollback out;
  auto list = [&](const char* key) -> Result<const Json*> {
    auto it = root.find(key);
    if (it == root.end() || !it->is_array()) return Bad(std::string("/") + key, "expected an array");
    return &*it;
  };
  IPTKIT_ASSIGN_OR_RETURN(const Json* batches, list("batches"));
  for (size_t i = 0; i < batches->size(); ++i) {
    const Json& jb = (*batches)[i];
    const std::string p = "/batches/" + std::to_string(i);
    if (!jb.is_object()) return Bad(p, "expected an object");
    backend::TableBatch b;
    IPTKIT_ASSIGN_OR_RETURN(std::string family, Str(jb, "family", p));
    IPTKIT_ASSIGN_OR_RETURN(b.family, ParseFamily(family));
    IPTKIT_ASSIGN_OR_RETURN(b.table, Str(jb, "table", p));
    auto wc = jb.find("with_counters");
    b.with_counters = wc != jb.end() && wc->is_boolean() && wc->get<bool>();
    auto ops = jb.find("ops");
    if (ops == jb.end() || !ops->is_array()) return Bad(p + "/ops", "expected an array");
    for (size_t k = 0; k < ops->size(); ++k) {
      const Json& jo = (*ops)[k];
      const std::string op_p = p + "/ops/" + std::to_string(k);
      if (!jo.is_object()) return Bad(op_p, "expected an object");
      TableOp op;
      IPTKIT_ASSIGN_OR_RETURN(std::string name, Str(jo, "op", op_p));
      bool known = false;
      for (const auto& [kind, n] : kOpNames) {
        if (n == name) {
          op.kind = kind;
          known = true;
        }
      }
      if (!known) return Bad(op_p + "/op", "unknown op '" + name + "'");
      IPTKIT_ASSIGN_OR_RETURN(op.chain, Str(jo, "chain", op_p));
      IPTKIT_ASSIGN_OR_RETURN(int64_t index, Int(jo, "index", op_p));
      op.index = static_cast<int>(index);
      IPTKIT_ASSIGN_OR_RETURN(std::string spec, Str(jo, "spec", op_p));
      IPTKIT_ASSIGN_OR_RETURN(op.arg, Str(jo, "arg", op_p));
      const bool takes_rule = op.kind == TableOp::Kind::kAppend || op.kind == TableOp::Kind::kInsert ||
                              op.kind == TableOp::Kind::kCheck || op.kind == TableOp::Kind::kDelete ||
                              op.kind == TableOp::Kind::kReplace;
      if (takes_rule) {
        Result<Rule> rule = ParseRuleSpec(spec, b.family);
        if (!rule.ok()) return rule.status().WithContext("rollback record " + op_p + "/spec");
        op.rule = *std::move(rule);
      }
      auto counters = jo.find("counters");
      if (counters != jo.end() && counters->is_array() && counters->size() == 2 &&
          (*counters)[0].is_number_unsigned() && (*counters)[1].is_number_unsigned()) {
        op.rule.counters = {(*counters)[0].get<uint64_t>(), (*counters)[1].get<uint64_t>()};
      }
      b.ops.push_back(std::move(op));
    }
    out.batches.push_back(std::move(b));
  }
  IPTKIT_ASSIGN_OR_RETURN(const Json* managed, list("managed"));
  for (size_t i = 0; i < managed->size(); ++i) {
    const Json& jm = (*managed)[i];
    const std::string p = "/managed/" + std::to_string(i);
    if (!jm.is_object() || !jm.contains("key")) return Bad(p, "expected an object with a key");
    IPTKIT_ASSIGN_OR_RETURN(store::ManagedRule key, RuleFrom(jm["key"], p + "/key"));
    Rollback::ManagedChange change;
    change.key = store::KeyOf(key);
    IPTKIT_ASSIGN_OR_RETURN(change.before, OptRuleFrom(jm, "before", p));
    IPTKIT_ASSIGN_OR_RETURN(change.after, OptRuleFrom(jm, "after", p));
    out.managed.push_back(std::move(change));
  }
  IPTKIT_ASSIGN_OR_RETURN(const Json* documents, list("documents"));
  for (size_t i = 0; i < documents->size(); ++i) {
    const Json& jd = (*documents)[i];
    const std::string p = "/documents/" + std::to_string(i);
    if (!jd.is_object()) return Bad(p, "expected an object");
    Rollback::DocumentChange change;
    IPTKIT_ASSIGN_OR_RETURN(change.owner, Str(jd, "owner", p));
    IPTKIT_ASSIGN_OR_RETURN(change.before, OptDocFrom(jd, "before", p));
    IPTKIT_ASSIGN_OR_RETURN(change.after, OptDocFrom(jd, "after", p));
    out.documents.push_back(std::move(change));
  }
  return out;
}

}  // namespace iptkit::service
