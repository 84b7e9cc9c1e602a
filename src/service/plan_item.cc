// What one work item changes, planned on the group's simulated kernel and the owners' working state
// (service_internal.h). Owners are planned one at a time by the OwnerPlanner: an owner that cannot be planned
// fails only the work that is about it.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <functional>
#include <map>
#include <optional>
#include <utility>

#include "iptkit/dialect.h"
#include "iptkit/json.h"
#include "src/backend/ops/table_sim.h"
#include "src/service/service_internal.h"
#include "src/txn/declarative.h"

namespace iptkit::service {
namespace {

constexpr Family kFamilies[] = {Family::kIPv4, Family::kIPv6};

std::string Where(Family f, const std::string& table, const std::string& chain) {
  return std::string(FamilyName(f)) + " " + table + "/" + chain;
}

// An owner's state, remembering its value before this item first changed it (for the item's undo).
OwnerState& Modify(std::map<std::string, OwnerState>& working, const std::string& owner,
                   std::map<std::string, std::optional<OwnerState>>& undo) {
  auto it = working.find(owner);
  if (!undo.count(owner)) undo[owner] = it == working.end() ? std::nullopt : std::optional<OwnerState>(it->second);
  return working[owner];
}

void Undo(std::map<std::string, OwnerState>& working, std::map<std::string, std::optional<OwnerState>>& undo) {
  for (auto& [owner, before] : undo) {
    if (before) {
      working[owner] = std::move(*before);
    } else {
      working.erase(owner);
    }
  }
  undo.clear();
}

void ResetForPlanning(WorkItem& item) {
  item.status = Status::Ok();
  std::string id = std::move(item.result.id);
  item.result = ChangeResult{};
  item.result.id = std::move(id);
  item.result.dry_run = item.request.dry_run;
  item.effects = StoreEffects{};
  item.deleted_owners.clear();
  item.touched_owners.clear();
  item.imperative_tables.clear();
  item.rule_ids.clear();
  item.repaired_owners.clear();
  item.owner_failures.clear();
  item.diff.clear();
}

// A chain named with an owner's prefix is that owner's (declarative.md "Owned chains"): made outside the owner it
// would be removed by the owner's next apply.
Status CheckChainNames(const Transaction& ops, const std::map<std::string, OwnerState>& working) {
  for (size_t i = 0; i < ops.ops().size(); ++i) {
    const Op& op = ops.ops()[i];
    const std::string* name = op.kind == Op::Kind::kCreateChain   ? &op.chain
                              : op.kind == Op::Kind::kRenameChain ? &op.new_name
                                                                  : nullptr;
    if (name == nullptr) continue;
    for (const auto& [owner, state] : working) {
      const std::string prefix = OwnerChainPrefix(owner);
      if (state.empty() || name->size() <= prefix.size() || name->compare(0, prefix.size(), prefix) != 0) continue;
      return Status::FailedPrecondition("op " + std::to_string(i + 1) + " (" + std::string(OpKindName(op.kind)) + " " +
                                        *name + "): chains named '" + prefix + "...' belong to owner '" + owner +
                                        "'; give the chain in its document (PUT /v1/owners/" + owner + ")")
          .WithOpIndex(static_cast<int>(i))
          .WithOwner(owner);
    }
  }
  return Status::Ok();
}

}  // namespace

// ---- Canonicalization cache warm-up ----

void Service::Impl::WarmCanonicalCache(const std::vector<WorkItem*>& items) {
  // Rules per (family, table), each as it will be canonicalized during planning: untagged first, then the
  // managed and document rules with their tags. One Backend::Canonicalize call per group; a group that fails is
  // split in halves so that one bad rule (it fails again, alone, when its request is planned) does not keep the
  // others out of the cache.
  using Groups = std::map<std::pair<Family, std::string>, std::vector<Rule>>;
  auto run = [this](Groups& groups) {
    std::function<void(Family, const std::string&, const std::vector<Rule>&)> warm =
        [&](Family family, const std::string& table, const std::vector<Rule>& rules) {
          if (rules.empty()) return;
          if (writer_backend->Canonicalize(family, table, rules).ok() || rules.size() == 1) return;
          std::vector<Rule> a(rules.begin(), rules.begin() + rules.size() / 2);
          std::vector<Rule> b(rules.begin() + rules.size() / 2, rules.end());
          warm(family, table, a);
          warm(family, table, b);
        };
    for (auto& [where, rules] : groups) warm(where.first, where.second, rules);
  };
  Groups untagged;
  struct Tagged {
    Family family;
    std::string table, chain, owner;
    Rule rule;  // untagged
    std::optional<std::string> id;
  };
  std::vector<Tagged> tagged;
  auto add = [&](Family family, const std::string& table, Rule rule) {
    if (ValidateRule(rule, family).ok()) untagged[{family, table}].push_back(std::move(rule));
  };
  auto add_owned = [&](Family family, const std::string& table, const std::string& chain, const std::string& owner,
                       Rule rule) {
    std::optional<std::string> id;
    if (auto tag = rule.OwnerTag(); tag && tag->owner == owner) {
      id = tag->id;
      rule.matches.pop_back();
    }
    add(family, table, rule);
    tagged.push_back({family, table, chain, owner, std::move(rule), id});
  };
  for (const WorkItem* item : items) {
    if (item->kind != WorkItem::Kind::kRequest) continue;
    const ChangeRequest& r = item->request;
    for (const Op& op : r.ops.ops()) {
      const bool has_rule = op.kind == Op::Kind::kAppend || op.kind == Op::Kind::kInsert ||
                            op.kind == Op::Kind::kDelete || op.kind == Op::Kind::kReplace;
      if (has_rule) add(op.family, op.table, op.rule);
      if (op.expect) add(op.family, op.table, *op.expect);
    }
    for (const ManagedAdd& a : r.adds) add_owned(a.family, a.table, a.chain, a.owner, a.rule);
    for (const ManagedDelete& d : r.deletes) add_owned(d.family, d.table, d.chain, d.owner, d.rule);
    std::vector<const DesiredState*> docs;
    if (r.put_owner) docs.push_back(&*r.put_owner);
    for (const DesiredState& d : r.put_owners) docs.push_back(&d);
    for (const DesiredState* doc : docs) {
      for (Family family : kFamilies) {
        if (!DocumentCovers(*doc, family)) continue;
        for (const OwnedChain& c : doc->chains) {
          for (const Rule& rule : c.rules) add_owned(family, c.table, c.name, doc->owner, rule);
        }
        for (const HookRule& h : doc->hooks) add_owned(family, h.table, h.chain, doc->owner, h.rule);
      }
    }
  }
  run(untagged);
  Groups with_tags;
  for (Tagged& t : tagged) {
    Result<std::vector<Rule>> canon = writer_backend->Canonicalize(t.family, t.table, {t.rule});  // cached now
    if (!canon.ok()) continue;
    Rule rule = canon->front();
    const std::string id = t.id ? *t.id : txn::DeriveRuleId(t.table, t.chain, FormatRuleSpec(rule));
    rule.SetOwnerTag({t.owner, id});
    with_tags[{t.family, t.table}].push_back(std::move(rule));
  }
  run(with_tags);
}

// ---- Owners ----

Status Service::Impl::PlanOwner(const std::string& owner, const OwnerState& state, txn::BatchPlanner& planner,
                                ChangeResult* result) {
  IPTKIT_ASSIGN_OR_RETURN(OwnerPlan plan, owner_planner->Plan(owner, state, planner));
  if (result != nullptr) {
    for (PlanStep& s : plan.steps) result->steps.push_back(std::move(s));
    for (std::string& w : plan.warnings) result->warnings.push_back(std::move(w));
  }
  return Status::Ok();
}

Status Service::Impl::PlanOwnerChanges(const std::string& owner,
                                       const std::vector<OwnerPlanner::ManagedChange>* changes, const OwnerState& state,
                                       txn::BatchPlanner& planner, ChangeResult* result) {
  if (changes != nullptr && !retries.count("owner:" + owner)) {
    Result<std::optional<OwnerPlan>> plan = owner_planner->PlanChanges(owner, state, *changes, planner);
    // An error is left to the full plan, which says what is wrong with the owner as a whole.
    if (plan.ok() && *plan) {
      if (result != nullptr) {
        for (PlanStep& s : (*plan)->steps) result->steps.push_back(std::move(s));
        for (std::string& w : (*plan)->warnings) result->warnings.push_back(std::move(w));
      }
      return Status::Ok();
    }
  }
  return PlanOwner(owner, state, planner, result);
}

txn::BatchPlanner::Placement Service::Impl::UnownedPlacement(std::vector<std::string>* warnings) const {
  const OwnerPlanner* owners = owner_planner.get();
  return [owners, warnings](Family family, const Table& table, const Chain& chain, size_t op_number, int index) -> int {
    if (!IsBuiltinChain(table.name, chain.name)) return index;
    // Owned hooks keep their places (docs/daemon.md "Where unowned rules go"): the tagged rules at the top of the
    // chain that are not known `last` hooks stay above the new rule, the tagged rules at the bottom that are not
    // known `first` hooks stay below it. Moving them instead would make the owners' next plan delete and insert
    // them back (their counters and the packets in between).
    // Tags are read as views (no copies): a chain may hold hundreds of owned rules to walk past for each add.
    auto position = [&](const txn::TagView& tag) {
      return owners->HookPosition(family, table.name, chain.name, tag.owner, tag.id);
    };
    const int n = static_cast<int>(chain.rules.size());
    const OwnerPlanner::HookCount known = owners->HookCounts(family, table.name, chain.name);
    size_t firsts = 0, lasts = 0;  // known hooks passed
    int lo = 1;
    for (int i = 0; i < n; ++i) {
      const std::optional<txn::TagView> tag = txn::ViewOwnerTag(chain.rules[i]);
      if (!tag) break;
      const std::optional<HookRule::Position> p = position(*tag);
      if (p != HookRule::Position::kLast) lo = i + 2;
      if (p == HookRule::Position::kFirst) ++firsts;
    }
    int hi = n + 1;
    for (int i = n - 1; i >= 0; --i) {
      const std::optional<txn::TagView> tag = txn::ViewOwnerTag(chain.rules[i]);
      if (!tag) break;
      const std::optional<HookRule::Position> p = position(*tag);
      if (p != HookRule::Position::kFirst) hi = i + 1;
      if (p == HookRule::Position::kLast) ++lasts;
    }
    // Hooks another writer's rule pushed out of place (a foreign `-I 1` above first hooks, an `-A` below last
    // hooks) stay where they are until their owner's drift check (daemon.md "Owners"); a known first hook there
    // still stays above the new rule and a known last hook below it. Else the new rule would sit between a first
    // hook and the top of the chain once the foreign rule is gone, and the drift check would move every hook past it.
    // (Walked only until every known hook of the chain was seen: with none out of place, not at all.)
    for (int i = lo - 1; firsts < known.first && i < hi - 1; ++i) {
      const std::optional<txn::TagView> tag = txn::ViewOwnerTag(chain.rules[i]);
      if (tag && position(*tag) == HookRule::Position::kFirst) {
        lo = i + 2;
        ++firsts;
      }
    }
    for (int i = hi - 2; lasts < known.last && i >= lo - 1; --i) {
      const std::optional<txn::TagView> tag = txn::ViewOwnerTag(chain.rules[i]);
      if (tag && position(*tag) == HookRule::Position::kLast) {
        hi = i + 1;
        ++lasts;
      }
    }
    const int asked = index == 0 ? n + 1 : index;
    const int at = hi < lo ? lo : std::clamp(asked, lo, hi);
    if (at != asked && warnings != nullptr) {
      const std::string where = std::string(FamilyName(family)) + " " + table.name + " " + chain.name;
      warnings->push_back("op " + std::to_string(op_number) + ": the rule went to position " + std::to_string(at) +
                          " of " + where +
                          (at > asked ? ", below the owned rules that stay first (" + std::to_string(lo - 1) + ")"
                                      : ", above the owned rules that stay last (" + std::to_string(n + 1 - hi) + ")") +
                          ", not to " + (index == 0 ? std::string("the end") : "position " + std::to_string(index)));
    }
    return at == n + 1 ? 0 : at;
  };
}

// ---- One item ----

Status Service::Impl::PlanItem(WorkItem& item, txn::BatchPlanner& planner, std::map<std::string, OwnerState>& working,
                               std::map<std::string, std::optional<OwnerState>>& undo, bool defer_owner) {
  ResetForPlanning(item);
  undo.clear();
  const txn::PlanMark start = planner.mark();
  Status s;
  switch (item.kind) {
    case WorkItem::Kind::kRequest:
      s = PlanRequest(item, planner, working, undo, defer_owner);
      break;
    case WorkItem::Kind::kExpire:
      s = PlanExpire(item, planner, working, undo);
      break;
    case WorkItem::Kind::kRollback:
      for (const auto& [owner, state] : working) undo.emplace(owner, state);  // PlanRollback may change any
      s = PlanRollback(item, planner, working);
      break;
    case WorkItem::Kind::kReconcile:
      s = PlanReconcile(item, planner, working);
      break;
  }
  if (!s.ok()) {
    planner.RollbackTo(start);
    Undo(working, undo);
  }
  // Owned sets a document's plan created (for its rules to be planned) go again when it is not committed after all.
  if (owned_sets) {
    std::vector<std::string> made = owned_sets->TakeCreated();
    const bool dry = item.kind == WorkItem::Kind::kRequest && item.request.dry_run;
    if (!made.empty() && (!s.ok() || dry)) (void)owned_sets->Destroy(made);
  }
  return s;
}

Status Service::Impl::PlanRequest(WorkItem& item, txn::BatchPlanner& planner,
                                  std::map<std::string, OwnerState>& working,
                                  std::map<std::string, std::optional<OwnerState>>& undo, bool defer_owner) {
  ChangeRequest& r = item.request;
  const txn::PlanMark start = planner.mark();
  const int64_t now = NowMs();
  // A deferred request only adds or deletes managed rules of one owner (Deferrable): its undo is the entries it
  // changed, put back by `journal` when it fails, instead of a copy of the owner's whole state (with thousands of
  // managed rules, that copy per request was most of the plan time of a drain of owned adds).
  struct Journal {
    std::map<std::string, OwnerState>* working = nullptr;
    std::vector<std::tuple<std::string, store::ManagedRuleKey, std::optional<store::ManagedRule>>> entries;
    bool keep = false;
    ~Journal() {
      if (keep) return;
      for (auto it = entries.rbegin(); it != entries.rend(); ++it) {
        auto& [owner, key, before] = *it;
        auto& managed = (*working)[owner].managed;
        if (before) {
          managed[key] = std::move(*before);
        } else {
          managed.erase(key);
        }
      }
    }
  } journal;
  journal.working = &working;
  auto managed_of = [&](const std::string& owner) -> std::map<store::ManagedRuleKey, store::ManagedRule>& {
    if (!defer_owner) return Modify(working, owner, undo).managed;
    if (!working.count(owner) && !undo.count(owner)) undo[owner] = std::nullopt;  // Undo erases it again
    return working[owner].managed;
  };
  auto remember = [&](const std::string& owner, const store::ManagedRuleKey& key,
                      const std::map<store::ManagedRuleKey, store::ManagedRule>& managed) {
    if (!defer_owner) return;
    auto it = managed.find(key);
    journal.entries.emplace_back(owner, key,
                                 it == managed.end() ? std::nullopt : std::optional<store::ManagedRule>(it->second));
  };
  if (!r.ops.empty()) {
    IPTKIT_RETURN_IF_ERROR(CheckChainNames(r.ops, working));
    // On a backend with handles the planner removes rules by position (kDeleteAt, kReplace), without the rule:
    // those are found on a copy of the state before the request, advanced op by op.
    std::map<Family, Ruleset> before;
    for (const Op& op : r.ops.ops()) {
      if (op.kind != Op::Kind::kDeleteAt && op.kind != Op::Kind::kReplace) continue;
      for (Family f : {Family::kIPv4, Family::kIPv6}) {
        if (before.count(f) != 0) continue;
        if (Result<const Ruleset*> current = planner.Current(f); current.ok()) before.emplace(f, **current);
      }
      break;
    }
    IPTKIT_RETURN_IF_ERROR(planner.AddTransaction(r.ops, UnownedPlacement(&item.result.warnings)));
    for (const txn::PlannedTable& p : planner.Finish(start, planner.mark())) {
      item.imperative_tables.insert({p.batch.family, p.batch.table});
      auto family_before = before.find(p.batch.family);
      Table* table_before = family_before == before.end() ? nullptr : family_before->second.FindTable(p.batch.table);
      for (const backend::TableOp& op : p.batch.ops) {
        std::optional<Rule> removed;
        if (op.kind == backend::TableOp::Kind::kDelete) removed = op.rule;
        if (table_before != nullptr) {
          const bool by_position =
              op.kind == backend::TableOp::Kind::kDeleteAt || op.kind == backend::TableOp::Kind::kReplace;
          const Chain* chain = by_position ? table_before->FindChain(op.chain) : nullptr;
          if (chain != nullptr && op.index >= 1 && static_cast<size_t>(op.index) <= chain->rules.size()) {
            removed = chain->rules[static_cast<size_t>(op.index) - 1];
          }
          if (!backend::ApplyTableOp(p.batch.family, *table_before, op, false).ok()) table_before = nullptr;
        }
        if (!removed) continue;
        auto tag = removed->OwnerTag();
        auto owner = tag ? working.find(tag->owner) : working.end();
        if (owner == working.end() || owner->second.empty()) continue;
        return Status::FailedPrecondition(
                   "the rule '" + FormatRuleSpec(*removed) + "' in " + Where(p.batch.family, p.batch.table, op.chain) +
                   " belongs to owner '" + tag->owner + "' (id " + tag->id +
                   "); change it through its owner (DELETE with \"owner\", or PUT /v1/owners/" + tag->owner + ")")
            .WithOwner(tag->owner);
      }
    }
  }
  for (const ManagedAdd& a : r.adds) {
    const std::string where = "owned add to " + Where(a.family, a.table, a.chain);
    IPTKIT_RETURN_IF_ERROR(ValidateOwner(a.owner).WithContext(where));
    IPTKIT_RETURN_IF_ERROR(CheckManagedPlacement(a.owner, a.table, a.chain).WithContext(where));
    Rule untagged = a.rule;
    std::optional<std::string> id;
    if (auto tag = untagged.OwnerTag()) {
      if (tag->owner != a.owner) {
        return Status::InvalidArgument(where + ": the rule carries the tag of owner '" + tag->owner + "'");
      }
      IPTKIT_RETURN_IF_ERROR(txn::ValidateRuleId(tag->id).WithContext(where));
      id = tag->id;
      untagged.matches.pop_back();
    }
    if (a.ttl_seconds && *a.ttl_seconds <= 0) {
      return Status::InvalidArgument(where + ": ttl must be at least 1 second");
    }
    IPTKIT_RETURN_IF_ERROR(ValidateRule(untagged, a.family).WithContext(where));
    IPTKIT_RETURN_IF_ERROR(CheckJumpTarget(a.owner, untagged, working, where));
    Result<std::vector<Rule>> canon = writer_backend->Canonicalize(a.family, a.table, {untagged});
    if (!canon.ok()) return canon.status().WithContext(where);
    const std::string spec = FormatRuleSpec(canon->front());
    store::ManagedRuleKey key{a.owner, a.family, a.table, a.chain, spec};
    IPTKIT_RETURN_IF_ERROR(CheckNewOwner(a.owner, working).WithContext(where));
    std::map<store::ManagedRuleKey, store::ManagedRule>& managed = managed_of(a.owner);
    auto it = managed.find(key);
    if (r.ttl_bounded) {
      IPTKIT_RETURN_IF_ERROR(
          CheckTtlBounded(it == managed.end() ? nullptr : &it->second, /*removing=*/false).WithContext(where));
    }
    store::ManagedRule rec;
    if (it != managed.end()) {
      rec = it->second;
    } else {
      rec.seq = next_seq++;
      rec.owner = a.owner;
      rec.family = a.family;
      rec.table = a.table;
      rec.chain = a.chain;
      rec.spec = spec;
      rec.rule_id = txn::DeriveRuleId(a.table, a.chain, spec);
      rec.created_ms = now;
    }
    if (id) rec.rule_id = *id;
    rec.position = a.position;
    rec.deadline_ms = a.ttl_seconds ? std::optional<int64_t>(now + *a.ttl_seconds * 1000) : std::nullopt;
    rec.updated_ms = now;
    remember(a.owner, key, managed);
    managed[key] = rec;
    item.effects.upserts.push_back(rec);
    item.rule_ids.insert(rec.rule_id);
    item.touched_owners.insert(a.owner);
    item.result.managed.push_back({rec, TtlRemainingSeconds(rec, now)});
  }
  for (const ManagedDelete& d : r.deletes) {
    const std::string where = "owned delete in " + Where(d.family, d.table, d.chain);
    IPTKIT_RETURN_IF_ERROR(ValidateOwner(d.owner).WithContext(where));
    Rule untagged = d.rule;
    if (auto tag = untagged.OwnerTag(); tag && tag->owner == d.owner) untagged.matches.pop_back();
    IPTKIT_RETURN_IF_ERROR(ValidateRule(untagged, d.family).WithContext(where));
    Result<std::vector<Rule>> canon = writer_backend->Canonicalize(d.family, d.table, {untagged});
    if (!canon.ok()) return canon.status().WithContext(where);
    store::ManagedRuleKey key{d.owner, d.family, d.table, d.chain, FormatRuleSpec(canon->front())};
    auto owner = working.find(d.owner);
    if (owner == working.end() || owner->second.managed.count(key) == 0) {
      return Status::NotFound(where + ": owner '" + d.owner + "' has no managed rule '" + key.spec + "'");
    }
    if (r.ttl_bounded) {
      IPTKIT_RETURN_IF_ERROR(CheckTtlBounded(&owner->second.managed.at(key), /*removing=*/true).WithContext(where));
    }
    item.rule_ids.insert(owner->second.managed.at(key).rule_id);
    std::map<store::ManagedRuleKey, store::ManagedRule>& managed = managed_of(d.owner);
    remember(d.owner, key, managed);
    managed.erase(key);
    item.effects.removals.push_back(key);
    item.touched_owners.insert(d.owner);
  }
  auto put_owner = [&](DesiredState doc) -> Status {  // a copy: owned sets are made canonical in it
    const std::string& owner = doc.owner;
    IPTKIT_RETURN_IF_ERROR(txn::ValidateDesiredState(doc));
    IPTKIT_RETURN_IF_ERROR(CheckNewOwner(owner, working));
    IPTKIT_RETURN_IF_ERROR(CheckJumpTargets(doc, working));
    if (!doc.sets.empty()) {
      // Checked by the kernel, made canonical, created (before the rules that use them are planned) and filled.
      IPTKIT_RETURN_IF_ERROR(OwnedSetsFor().Prepare(doc, working, now));
      if (!r.dry_run) IPTKIT_RETURN_IF_ERROR(OwnedSetsFor().Ensure(doc, now).status());
    }
    Modify(working, owner, undo).document = doc;
    item.effects.documents[owner] = doc;
    item.touched_owners.insert(owner);
    return Status::Ok();
  };
  auto delete_owner = [&](const std::string& name) -> Status {
    auto owner = working.find(name);
    if (owner == working.end() || owner->second.empty()) {
      return Status::NotFound("owner '" + name + "' has no state");
    }
    OwnerState& state = Modify(working, name, undo);
    for (const auto& [key, rule] : state.managed) item.effects.removals.push_back(key);
    state = OwnerState{};
    item.deleted_owners.insert(name);
    item.touched_owners.insert(name);
    return Status::Ok();
  };
  if (r.put_owner) IPTKIT_RETURN_IF_ERROR(put_owner(*r.put_owner));
  if (r.delete_owner) IPTKIT_RETURN_IF_ERROR(delete_owner(*r.delete_owner));
  for (const DesiredState& doc : r.put_owners) IPTKIT_RETURN_IF_ERROR(put_owner(doc));
  for (const std::string& name : r.delete_owners) IPTKIT_RETURN_IF_ERROR(delete_owner(name));
  if (defer_owner) {
    journal.keep = true;
    return Status::Ok();  // the drain plans the owner once for all its deferred requests
  }
  for (const std::string& owner : item.touched_owners) {
    IPTKIT_RETURN_IF_ERROR(PlanOwner(owner, working[owner], planner, &item.result));
  }
  if (r.authorize) {
    std::set<ChangedChain> touched;
    for (const txn::PlannedTable& p : planner.Finish(start, planner.mark())) {
      for (const backend::TableOp& op : p.batch.ops) {
        if (op.kind == backend::TableOp::Kind::kCheck) continue;
        touched.insert({p.batch.family, p.batch.table, op.chain});
        if (op.kind == backend::TableOp::Kind::kRenameChain) touched.insert({p.batch.family, p.batch.table, op.arg});
      }
    }
    IPTKIT_RETURN_IF_ERROR(r.authorize(std::vector<ChangedChain>(touched.begin(), touched.end())));
  }
  if (r.confirm) {
    std::lock_guard<std::mutex> lock(state_mu);
    if (confirms.find(*r.confirm) == confirms.end()) {
      return Status::NotFound("no pending transaction '" + *r.confirm + "' (unknown, or resolved already)");
    }
    item.effects.resolve_confirm =
        StoreEffects::Resolution{*r.confirm, store::ConfirmRecord::State::kConfirmed, "confirmed by " + r.principal};
  }
  if (r.confirm_within_seconds) {
    Rollback rollback;
    std::vector<txn::PlannedTable> mine = planner.Finish(start, planner.mark());
    for (auto it = mine.rbegin(); it != mine.rend(); ++it) {
      if (!it->inverse.ops.empty()) rollback.batches.push_back(it->inverse);
    }
    for (const auto& [owner, before] : undo) {
      const OwnerState empty;
      const OwnerState& old = before ? *before : empty;
      const OwnerState& now_state = working[owner];
      std::set<store::ManagedRuleKey> keys;
      for (const auto& [k, v] : old.managed) keys.insert(k);
      for (const auto& [k, v] : now_state.managed) keys.insert(k);
      for (const store::ManagedRuleKey& k : keys) {
        auto b = old.managed.find(k);
        auto a = now_state.managed.find(k);
        std::optional<store::ManagedRule> bv =
            b == old.managed.end() ? std::nullopt : std::optional<store::ManagedRule>(b->second);
        std::optional<store::ManagedRule> av =
            a == now_state.managed.end() ? std::nullopt : std::optional<store::ManagedRule>(a->second);
        if (bv != av) rollback.managed.push_back({k, bv, av});
      }
      if (old.document != now_state.document) rollback.documents.push_back({owner, old.document, now_state.document});
    }
    store::ConfirmRecord record;
    record.id = item.result.id;
    record.deadline_ms = now + *r.confirm_within_seconds * 1000;
    record.principal = r.principal;
    record.request_id = r.request_id;
    record.rollback = RollbackToJson(rollback);
    record.created_ms = now;
    item.effects.new_confirm = record;
    item.result.confirm_deadline_ms = record.deadline_ms;
  }
  return Status::Ok();
}

Status Service::Impl::PlanExpire(WorkItem& item, txn::BatchPlanner& planner, std::map<std::string, OwnerState>& working,
                                 std::map<std::string, std::optional<OwnerState>>& undo) {
  const int64_t now = NowMs();
  auto owner = working.find(item.owner);
  if (owner == working.end()) return Status::Ok();
  std::vector<store::ManagedRule> expired;
  for (const store::ManagedRuleKey& key : item.expire) {
    auto it = owner->second.managed.find(key);
    if (it == owner->second.managed.end() || !it->second.deadline_ms || *it->second.deadline_ms > now) continue;
    expired.push_back(it->second);
  }
  if (expired.empty()) return Status::Ok();
  OwnerState& state = Modify(working, item.owner, undo);
  for (const store::ManagedRule& rule : expired) {
    state.managed.erase(store::KeyOf(rule));
    item.effects.removals.push_back(store::KeyOf(rule));
  }
  item.touched_owners.insert(item.owner);
  std::vector<OwnerPlanner::ManagedChange> changes;
  for (const store::ManagedRule& rule : expired) changes.push_back({rule, std::nullopt});
  Status planned = PlanOwnerChanges(item.owner, &changes, state, planner, &item.result);
  if (planned.ok()) return Status::Ok();
  // The owner cannot be applied as a whole (one of its other rules is broken, e.g. it jumps to a chain that is
  // gone): a TTL must not outlive its deadline because of that, so the expired rules leave the kernel on their own.
  // The owner is reported and retried as any owner whose state cannot be applied.
  item.owner_failures[item.owner] = planned;
  for (const store::ManagedRule& rule : expired) {
    IPTKIT_ASSIGN_OR_RETURN(const Ruleset* current, planner.Current(rule.family));
    const Table* table = current->FindTable(rule.table);
    const Chain* chain = table != nullptr ? table->FindChain(rule.chain) : nullptr;
    if (chain == nullptr) continue;
    const Rule::Tag tag = ManagedTag(rule);
    for (const Rule& kernel : chain->rules) {
      if (kernel.OwnerTag() != tag) continue;
      backend::TableBatch batch;
      batch.family = rule.family;
      batch.table = rule.table;
      Rule spec = kernel;
      spec.counters = {};
      batch.ops.push_back(backend::TableOp::Make(backend::TableOp::Kind::kDelete, rule.chain, spec));
      IPTKIT_RETURN_IF_ERROR(planner.AddBatch(std::move(batch)));
      break;
    }
  }
  item.result.warnings.push_back("owner '" + item.owner + "' cannot be applied (" + planned.message() +
                                 "); only its expired rules were removed");
  return Status::Ok();
}

Status Service::Impl::PlanRollback(WorkItem& item, txn::BatchPlanner& planner,
                                   std::map<std::string, OwnerState>& working) {
  store::ConfirmRecord record;
  {
    std::lock_guard<std::mutex> lock(state_mu);
    auto it = confirms.find(item.confirm_id);
    if (it == confirms.end()) return Status::NotFound("no pending transaction '" + item.confirm_id + "'");
    record = it->second;
  }
  IPTKIT_ASSIGN_OR_RETURN(Rollback rollback, RollbackFromJson(record.rollback));
  std::vector<std::string> skipped;
  for (const backend::TableBatch& batch : rollback.batches) {
    if (planner.AddBatch(batch).ok()) continue;
    // Something changed since: undo what still applies, op by op (each guarded as the whole was).
    for (const backend::TableOp& op : batch.ops) {
      backend::TableBatch one = batch;
      one.ops = {op};
      Status s = planner.AddBatch(std::move(one));
      if (!s.ok()) {
        skipped.push_back(std::string(FamilyName(batch.family)) + " " + batch.table + " '" +
                          backend::DescribeTableOp(op) + "' (" + s.message() + ")");
      }
    }
  }
  for (const Rollback::ManagedChange& m : rollback.managed) {
    OwnerState& state = working[m.key.owner];
    auto it = state.managed.find(m.key);
    std::optional<store::ManagedRule> current =
        it == state.managed.end() ? std::nullopt : std::optional<store::ManagedRule>(it->second);
    if (current != m.after) {
      skipped.push_back("managed rule " + Where(m.key.family, m.key.table, m.key.chain) + " '" + m.key.spec +
                        "' of owner '" + m.key.owner + "' (changed since)");
      continue;
    }
    if (m.before) {
      state.managed[m.key] = *m.before;
      item.effects.upserts.push_back(*m.before);
    } else {
      state.managed.erase(m.key);
      item.effects.removals.push_back(m.key);
    }
    item.touched_owners.insert(m.key.owner);
  }
  for (const Rollback::DocumentChange& d : rollback.documents) {
    OwnerState& state = working[d.owner];
    if (state.document != d.after) {
      skipped.push_back("document of owner '" + d.owner + "' (changed since)");
      continue;
    }
    state.document = d.before;
    item.effects.documents[d.owner] = d.before;
    item.touched_owners.insert(d.owner);
  }
  // The inverse ops above already undid the transaction in the kernel; planning the owners again only repairs
  // what changed since. An owner that cannot be planned does not hold up the rollback (it is reported and retried).
  for (const std::string& owner : item.touched_owners) {
    Status s = PlanOwner(owner, working[owner], planner, &item.result);
    if (!s.ok()) item.owner_failures[owner] = s;
  }
  std::string message = "rolled back: not confirmed by the deadline";
  if (!skipped.empty()) {
    message += "; not undone because they changed since: ";
    for (size_t i = 0; i < skipped.size(); ++i) message += (i ? "; " : "") + skipped[i];
  }
  item.effects.resolve_confirm = StoreEffects::Resolution{record.id, store::ConfirmRecord::State::kRolledBack, message};
  item.result.warnings.push_back(message);
  return Status::Ok();
}

Status Service::Impl::PlanReconcile(WorkItem& item, txn::BatchPlanner& planner,
                                    std::map<std::string, OwnerState>& working) {
  auto it = working.find(item.owner);
  if (it == working.end() || it->second.empty()) return Status::Ok();
  bool repaired = false;
  if (it->second.document && !it->second.document->sets.empty()) {
    // The owner's sets first: its rules are planned against them.
    IPTKIT_ASSIGN_OR_RETURN(repaired, OwnedSetsFor().Ensure(*it->second.document, NowMs()));
  }
  const txn::PlanMark before = planner.mark();
  IPTKIT_RETURN_IF_ERROR(PlanOwner(item.owner, it->second, planner, &item.result));
  if (repaired || planner.mark().entries != before.entries) item.repaired_owners.push_back(item.owner);
  return Status::Ok();
}

}  // namespace iptkit::service
