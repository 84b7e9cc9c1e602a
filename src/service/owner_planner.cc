#include "src/service/owner_planner.h"

#include <algorithm>
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
  std::vector<const store::ManagedRule*> rules;
  rules.reserve(state.managed.size());
  for (const auto& [key, rule] : state.managed) rules.push_back(&rule);
  return PrepareManagedRules(rules);
}

Status OwnerPlanner::PrepareManagedRules(const std::vector<const store::ManagedRule*>& all) {
  // The rules not canonicalized yet (or with a new id), per (family, table): one Backend::Canonicalize call each.
  std::map<std::pair<Family, std::string>, std::vector<const store::ManagedRule*>> todo;
  for (const store::ManagedRule* rule : all) {
    auto it = tagged_.find(store::KeyOf(*rule));
    if (it == tagged_.end() || it->second.first != rule->rule_id) todo[{rule->family, rule->table}].push_back(rule);
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

void OwnerPlanner::CountHook(const HookKey& key, HookRule::Position position, int delta) {
  HookCount& count = hook_counts_[{std::get<0>(key), std::get<1>(key), std::get<2>(key)}];
  size_t& n = position == HookRule::Position::kFirst ? count.first : count.last;
  n = delta > 0 ? n + 1 : n - 1;
}

void OwnerPlanner::RememberHooks(const std::string& owner, Family family, const DesiredState& effective) {
  auto& mine = hooks_[owner];
  std::erase_if(mine, [&](const auto& e) {
    if (std::get<0>(e.first) != family) return false;
    CountHook(e.first, e.second, -1);
    return true;
  });
  for (const HookRule& h : effective.hooks) {
    auto tag = h.rule.OwnerTag();
    if (!tag) continue;
    HookKey key{family, h.table, h.chain, tag->owner, tag->id};
    auto [it, added] = mine.emplace(key, h.position);
    if (!added) CountHook(key, it->second, -1);
    it->second = h.position;
    CountHook(key, h.position, +1);
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
  planned_.insert(owner);
  return out;
}

Result<std::optional<OwnerPlan>> OwnerPlanner::PlanChanges(const std::string& owner, const OwnerState& state,
                                                           const std::vector<ManagedChange>& changes,
                                                           txn::BatchPlanner& planner) {
  const std::optional<OwnerPlan> in_full;  // the answer "plan the owner in full"
  if (!planned_.count(owner)) return in_full;
  auto document = documents_.find(owner);
  if (document == documents_.end() || document->second.source != state.document) return in_full;
  const std::string context = "owner '" + owner + "'";
  auto failed = [&](const Status& s) { return s.WithContext(context).WithOwner(owner); };

  // The changes per (family, table, chain), each a builtin chain; a document rule with the tag of a changed rule
  // is that rule (AssembleEffectiveState), which only the full plan sorts out.
  using Where = std::tuple<Family, std::string, std::string>;
  std::map<Where, std::vector<const ManagedChange*>> by_chain;
  std::vector<const store::ManagedRule*> added;
  for (const ManagedChange& c : changes) {
    const store::ManagedRule* any = c.after ? &*c.after : c.before ? &*c.before : nullptr;
    if (any == nullptr) continue;
    if (!IsBuiltinChain(any->table, any->chain)) return in_full;
    if (c.before && c.after &&
        (c.before->position != c.after->position || c.before->rule_id != c.after->rule_id ||
         c.before->seq != c.after->seq || c.before->spec != c.after->spec)) {
      return in_full;
    }
    if (auto part = document->second.states.find(any->family); part != document->second.states.end()) {
      for (const HookRule& h : part->second.hooks) {
        if (h.table != any->table || h.chain != any->chain) continue;
        std::optional<txn::TagView> tag = txn::ViewOwnerTag(h.rule);
        for (const std::optional<store::ManagedRule>* m : {&c.before, &c.after}) {
          if (*m && tag && tag->id == (*m)->rule_id) return in_full;
        }
      }
    }
    by_chain[{any->family, any->table, any->chain}].push_back(&c);
    if (c.after) added.push_back(&*c.after);
  }
  if (Status s = PrepareManagedRules(added); !s.ok()) return failed(s);

  // The ops per (family, table), in order: deletes, then the new `first` rules oldest first (each goes to the head,
  // so the newest ends up first), then the new `last` rules oldest first (each appended).
  std::map<std::pair<Family, std::string>, std::vector<backend::TableOp>> ops;
  OwnerPlan out;
  for (const auto& [where, mine] : by_chain) {
    const auto& [family, table, chain] = where;
    Result<const Ruleset*> current = planner.Current(family);
    if (!current.ok()) return failed(current.status());
    const Table* kt = (*current)->FindTable(table);
    const Chain* kc = kt != nullptr ? kt->FindChain(chain) : nullptr;
    static const std::vector<Rule> kNoRules;
    const std::vector<Rule>& rules = kc != nullptr ? kc->rules : kNoRules;
    // Where the kernel holds rules tagged (owner, id) for the ids of the changed rules: one walk of the chain.
    std::map<std::string_view, std::vector<size_t>> found;
    for (const ManagedChange* c : mine) {
      for (const std::optional<store::ManagedRule>* m : {&c->before, &c->after}) {
        if (*m) found.emplace((*m)->rule_id, std::vector<size_t>{});
      }
    }
    for (size_t i = 0; i < rules.size(); ++i) {
      std::optional<txn::TagView> tag = txn::ViewOwnerTag(rules[i]);
      if (!tag || tag->owner != owner) continue;
      if (auto it = found.find(tag->id); it != found.end()) it->second.push_back(i);
    }
    auto tagged_at = [&](const std::string& id) -> const std::vector<size_t>& { return found.at(id); };
    std::vector<backend::TableOp>& table_ops = ops[{family, table}];
    std::vector<const store::ManagedRule*> first, last;
    for (const ManagedChange* c : mine) {
      if (c->before && c->after) {
        // Refreshed: nothing to do when the kernel holds it, once, as it should be.
        const std::vector<size_t>& at = tagged_at(c->after->rule_id);
        if (at.size() != 1) return in_full;
        Rule there = rules[at.front()];
        there.counters = {};
        if (!(there == tagged_.at(store::KeyOf(*c->after)).second)) return in_full;
        continue;
      }
      if (c->after) {
        if (!tagged_at(c->after->rule_id).empty()) return in_full;
        (c->after->position == store::Position::kFirst ? first : last).push_back(&*c->after);
        continue;
      }
      for (size_t i : tagged_at(c->before->rule_id)) {
        backend::TableOp op = backend::TableOp::Make(backend::TableOp::Kind::kDelete, chain, rules[i]);
        op.rule.counters = {};
        const std::string spec = FormatRuleSpec(op.rule);
        out.steps.push_back({family, table,
                             "delete " + table + " " + chain + " rule " + std::to_string(i + 1) + ": " + spec,
                             PlanStep::Kind::kDelete, chain, owner, c->before->rule_id});
        table_ops.push_back(std::move(op));
      }
    }
    auto by_seq = [](const store::ManagedRule* a, const store::ManagedRule* b) { return a->seq < b->seq; };
    std::sort(first.begin(), first.end(), by_seq);
    std::sort(last.begin(), last.end(), by_seq);
    for (const std::vector<const store::ManagedRule*>* list : {&first, &last}) {
      const bool head = list == &first;
      for (const store::ManagedRule* m : *list) {
        const Rule& rule = tagged_.at(store::KeyOf(*m)).second;
        backend::TableOp op = backend::TableOp::Make(
            head ? backend::TableOp::Kind::kInsert : backend::TableOp::Kind::kAppend, chain, rule, head ? 1 : 0);
        op.anchored = head;  // at the head: names no other rule (as Plan's inserts, see there)
        const std::string spec = FormatRuleSpec(rule);
        out.steps.push_back(
            {family, table,
             (head ? "insert " + table + " " + chain + " 1: " : "append " + table + " " + chain + ": ") + spec,
             head ? PlanStep::Kind::kInsert : PlanStep::Kind::kAppend, chain, owner, m->rule_id});
        table_ops.push_back(std::move(op));
      }
    }
  }

  const txn::PlanMark start = planner.mark();
  for (auto& [where, table_ops] : ops) {
    if (table_ops.empty()) continue;
    backend::TableBatch batch;
    batch.family = where.first;
    batch.table = where.second;
    batch.ops = std::move(table_ops);
    Status added_batch = planner.AddBatch(std::move(batch));
    if (!added_batch.ok()) {
      planner.RollbackTo(start);
      return failed(added_batch.WithContext("in " + std::string(FamilyName(where.first)) + " " + where.second));
    }
  }
  // Where its hooks are now, for placing unowned rules around them.
  auto& hooks = hooks_[owner];
  for (const ManagedChange& c : changes) {
    if (!c.before) continue;
    auto it = hooks.find(HookKey{c.before->family, c.before->table, c.before->chain, owner, c.before->rule_id});
    if (it == hooks.end()) continue;
    CountHook(it->first, it->second, -1);
    hooks.erase(it);
  }
  for (const ManagedChange& c : changes) {
    if (!c.after) continue;
    HookKey key{c.after->family, c.after->table, c.after->chain, owner, c.after->rule_id};
    const HookRule::Position position =
        c.after->position == store::Position::kFirst ? HookRule::Position::kFirst : HookRule::Position::kLast;
    auto [it, added] = hooks.emplace(key, position);
    if (!added) CountHook(key, it->second, -1);
    it->second = position;
    CountHook(key, position, +1);
  }
  out.changed = planner.mark().entries != start.entries;
  return std::optional<OwnerPlan>(std::move(out));
}

void OwnerPlanner::Forget(const std::string& owner) {
  planned_.erase(owner);
  documents_.erase(owner);
  if (auto mine = hooks_.find(owner); mine != hooks_.end()) {
    for (const auto& [key, position] : mine->second) CountHook(key, position, -1);
    hooks_.erase(mine);
  }
  std::erase_if(tagged_, [&](const auto& e) { return e.first.owner == owner; });
}

void OwnerPlanner::ForgetRule(const store::ManagedRuleKey& key) { tagged_.erase(key); }

OwnerPlanner::HookCount OwnerPlanner::HookCounts(Family family, std::string_view table, std::string_view chain) const {
  using View = std::tuple<Family, std::string_view, std::string_view>;
  auto it = hook_counts_.find(View{family, table, chain});
  return it == hook_counts_.end() ? HookCount{} : it->second;
}

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
