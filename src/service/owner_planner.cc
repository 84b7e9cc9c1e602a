#include "src/service/owner_planner.h"

#include <utility>

#include "iptkit/dialect.h"
#include "src/txn/declarative.h"
#include "src/txn/firewall_internal.h"

namespace iptkit::service {
namespace {

constexpr Family kFamilies[] = {Family::kIPv4, Family::kIPv6};

bool HasPrefix(std::string_view name, std::string_view prefix) {
  return name.size() > prefix.size() && name.substr(0, prefix.size()) == prefix;
}

}  // namespace

Status OwnerPlanner::PrepareDocument(const std::string& owner, const OwnerState& state) {
  auto it = documents_.find(owner);
  if (it != documents_.end() && it->second.source == state.document) return Status::Ok();
  PreparedDocument prepared;
  prepared.source = state.document;
  if (state.document) {
    for (Family family : kFamilies) {
      if (!DocumentCovers(*state.document, family)) continue;
      DesiredState part = *state.document;
      part.families = family == Family::kIPv4 ? DesiredState::Families::kIPv4 : DesiredState::Families::kIPv6;
      IPTKIT_ASSIGN_OR_RETURN(prepared.states[family], txn::PrepareDesiredState(*backend_, part, family));
    }
  }
  documents_[owner] = std::move(prepared);
  return Status::Ok();
}

Status OwnerPlanner::PrepareManagedRules(const OwnerState& state) {
  // The rules not canonicalized yet (or with a new id), per (family, table): one Backend::Canonicalize call each.
  std::map<std::pair<Family, std::string>, std::vector<const store::ManagedRule*>> todo;
  for (const auto& [key, rule] : state.managed) {
    auto it = tagged_.find(key);
    if (it == tagged_.end() || it->second.first != rule.rule_id) todo[{rule.family, rule.table}].push_back(&rule);
  }
  for (const auto& [where, rules] : todo) {
    std::vector<Rule> tagged;
    tagged.reserve(rules.size());
    for (const store::ManagedRule* m : rules) {
      IPTKIT_ASSIGN_OR_RETURN(Rule r, ParseManagedRule(*m));
      tagged.push_back(std::move(r));
    }
    Result<std::vector<Rule>> canonical = backend_->Canonicalize(where.first, where.second, tagged);
    if (!canonical.ok()) {
      return canonical.status().WithContext("managed rules in " + std::string(FamilyName(where.first)) + " " +
                                            where.second);
    }
    for (size_t i = 0; i < rules.size(); ++i) {
      Rule& r = (*canonical)[i];
      if (r.OwnerTag() != ManagedTag(*rules[i])) {
        return Status::Internal("the backend did not keep the owner tag as the last match of " +
                                FormatRuleSpec(tagged[i]));
      }
      r.counters = {};
      tagged_[store::KeyOf(*rules[i])] = {rules[i]->rule_id, std::move(r)};
    }
  }
  return Status::Ok();
}

void OwnerPlanner::RememberHooks(const std::string& owner, Family family, const DesiredState& effective) {
  auto& mine = hooks_[owner];
  std::erase_if(mine, [&](const auto& e) { return std::get<0>(e.first) == family; });
  for (const HookRule& h : effective.hooks) {
    if (auto tag = h.rule.OwnerTag()) mine[{family, h.table, h.chain, tag->owner, tag->id}] = h.position;
  }
}

Result<OwnerPlan> OwnerPlanner::Plan(const std::string& owner, const OwnerState& state, txn::BatchPlanner& planner) {
  const std::string context = "owner '" + owner + "'";
  auto failed = [&](const Status& s) { return s.WithContext(context).WithOwner(owner); };
  if (Status s = PrepareDocument(owner, state); !s.ok()) return failed(s);
  if (Status s = PrepareManagedRules(state); !s.ok()) return failed(s);
  const ManagedRuleSource cached = [&](const store::ManagedRule& m) -> Result<Rule> {
    return tagged_.at(store::KeyOf(m)).second;
  };
  const PreparedDocument& document = documents_.at(owner);
  const txn::PlanMark start = planner.mark();
  auto undo = [&](const Status& s) {
    planner.RollbackTo(start);
    return failed(s);
  };
  OwnerPlan out;
  for (Family family : kFamilies) {
    auto part = document.states.find(family);
    Result<DesiredState> effective = AssembleEffectiveState(
        owner, family, part == document.states.end() ? nullptr : &part->second, state.managed, cached);
    if (!effective.ok()) return undo(effective.status());
    RememberHooks(owner, family, *effective);
    Result<const Ruleset*> current = planner.Current(family);
    if (!current.ok()) return undo(current.status());
    // PlanDeclarative validates the effective state (chain names, hooks, jumps into owned chains) first.
    Result<txn::DeclarativePlan> plan = txn::PlanDeclarative(**current, *effective);
    if (!plan.ok()) return undo(plan.status());
    for (backend::TableBatch& batch : plan->batches) {
      batch.family = family;
      // The owner's rules are placed relative to each other (a new rule right after its desired predecessor, a
      // `first` hook at the head or after the hook before it), never at an absolute position, and the plan's only
      // `-C` guards are those of such an insert's predecessor: on a backend with handles the insert names it, so
      // neither needs the snapshot's generation (TableOp::anchored, docs/architecture.md "Generation checks").
      for (backend::TableOp& op : batch.ops) {
        if (op.kind == backend::TableOp::Kind::kInsert || op.kind == backend::TableOp::Kind::kCheck) op.anchored = true;
      }
      const std::string table = batch.table;
      Status added = planner.AddBatch(std::move(batch));
      if (!added.ok()) return undo(added.WithContext("in " + std::string(FamilyName(family)) + " " + table));
    }
    for (PlanStep& s : plan->steps) out.steps.push_back(std::move(s));
    for (std::string& w : plan->warnings) out.warnings.push_back(std::move(w));
  }
  out.changed = planner.mark().entries != start.entries;
  return out;
}

void OwnerPlanner::Forget(const std::string& owner) {
  documents_.erase(owner);
  hooks_.erase(owner);
  std::erase_if(tagged_, [&](const auto& e) { return e.first.owner == owner; });
}

void OwnerPlanner::ForgetRule(const store::ManagedRuleKey& key) { tagged_.erase(key); }

std::optional<HookRule::Position> OwnerPlanner::HookPosition(Family family, std::string_view table,
                                                             std::string_view chain, std::string_view owner,
                                                             std::string_view id) const {
  auto mine = hooks_.find(owner);
  if (mine == hooks_.end()) return std::nullopt;
  using View = std::tuple<Family, std::string_view, std::string_view, std::string_view, std::string_view>;
  auto it = mine->second.find(View{family, table, chain, owner, id});
  if (it == mine->second.end()) return std::nullopt;
  return it->second;
}

Status CheckJumpTarget(std::string_view owner, const Rule& rule, const std::map<std::string, OwnerState>& owners,
                       const std::string& where) {
  if (rule.target.kind == Target::Kind::kNone) return Status::Ok();
  const std::string& target = rule.target.name;
  if (HasPrefix(target, OwnerChainPrefix(owner))) return Status::Ok();
  for (const auto& [other, state] : owners) {
    if (other == owner || state.empty() || !HasPrefix(target, OwnerChainPrefix(other))) continue;
    return Status::InvalidArgument(where + ": the rule '" + FormatRuleSpec(rule) + "' " +
                                   (rule.target.kind == Target::Kind::kGoto ? "goes" : "jumps") + " to chain '" +
                                   target + "' of owner '" + other + "'; an owner's rules may only jump into its own " +
                                   "chains and foreign ones (a change of owner '" + other +
                                   "' would break this owner's rules)")
        .WithOwner(std::string(owner));
  }
  return Status::Ok();
}

Status CheckJumpTargets(const DesiredState& document, const std::map<std::string, OwnerState>& owners) {
  for (const OwnedChain& c : document.chains) {
    for (size_t i = 0; i < c.rules.size(); ++i) {
      IPTKIT_RETURN_IF_ERROR(
          CheckJumpTarget(document.owner, c.rules[i], owners,
                          "owned chain " + c.table + "/" + c.name + " rule " + std::to_string(i + 1)));
    }
  }
  for (size_t i = 0; i < document.hooks.size(); ++i) {
    const HookRule& h = document.hooks[i];
    IPTKIT_RETURN_IF_ERROR(CheckJumpTarget(document.owner, h.rule, owners,
                                           "hook " + std::to_string(i + 1) + " in " + h.table + "/" + h.chain));
  }
  return Status::Ok();
}

}  // namespace iptkit::service
