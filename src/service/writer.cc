// The writer thread's work: draining the queue into one plan per commit, committing, bisecting kernel
// rejections, persisting, answering (service.h has the contract, docs/daemon.md the semantics).
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>
#include <utility>

#include "iptkit/dialect.h"
#include "iptkit/json.h"
#include "src/backend/ops/table_sim.h"
#include "src/service/service_internal.h"
#include "src/txn/declarative.h"
#include "src/txn/firewall_internal.h"

namespace iptkit::service {
namespace {

using Clock = std::chrono::steady_clock;
constexpr Family kFamilies[] = {Family::kIPv4, Family::kIPv6};
constexpr int kMaxAttempts = 3;

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
  item.upserts.clear();
  item.removals.clear();
  item.documents.clear();
  item.deleted_owners.clear();
  item.new_confirm.reset();
  item.resolve_confirm.reset();
  item.touched_owners.clear();
  item.imperative_tables.clear();
  item.rule_ids.clear();
  item.repaired_owners.clear();
  item.diff.clear();
}

// Tables whose content differs between what we expect and what was read (chains compared by name, rules
// without counters).
std::vector<std::string> DifferingTables(const Ruleset& expected, const Ruleset& actual) {
  std::vector<std::string> out;
  auto same_table = [](const Table* a, const Table* b) {
    auto empty_default = [](const Table* t) {
      if (t == nullptr) return true;
      for (const Chain& c : t->chains) {
        if (!c.rules.empty() || !c.builtin() || *c.policy != "ACCEPT") return false;
      }
      return true;
    };
    if (a == nullptr || b == nullptr) return empty_default(a) && empty_default(b);
    if (a->chains.size() != b->chains.size()) return false;
    for (const Chain& c : a->chains) {
      const Chain* d = b->FindChain(c.name);
      if (d == nullptr || !(c == *d)) return false;
    }
    return true;
  };
  for (const Table& t : expected.tables) {
    if (!same_table(&t, actual.FindTable(t.name))) out.push_back(t.name);
  }
  for (const Table& t : actual.tables) {
    if (expected.FindTable(t.name) == nullptr && !same_table(nullptr, &t)) out.push_back(t.name);
  }
  return out;
}

bool Retriable(StatusCode code) {
  return code == StatusCode::kFailedPrecondition || code == StatusCode::kNotFound ||
         code == StatusCode::kAlreadyExists || code == StatusCode::kAborted;
}

std::string ActionOf(const WorkItem& item) {
  switch (item.kind) {
    case WorkItem::Kind::kRequest:
      return item.request.action.empty() ? "transaction" : item.request.action;
    case WorkItem::Kind::kExpire:
      return "ttl_expire";
    case WorkItem::Kind::kRollback:
      return "confirm_rollback";
    case WorkItem::Kind::kReconcile:
      return item.drift_check ? "drift_repair" : "reconcile";
  }
  return "unknown";
}

// What the audit log shows as the request of the daemon's own work.
std::string InternalRequestJson(const WorkItem& item) {
  nlohmann::ordered_json j;
  j["kind"] = ActionOf(item);
  if (item.kind == WorkItem::Kind::kExpire) {
    nlohmann::ordered_json rules = nlohmann::ordered_json::array();
    for (const store::ManagedRuleKey& k : item.removals) {
      rules.push_back({{"owner", k.owner},
                       {"family", std::string(FamilyName(k.family))},
                       {"table", k.table},
                       {"chain", k.chain},
                       {"spec", k.spec}});
    }
    j["rules"] = rules;
  } else if (item.kind == WorkItem::Kind::kRollback) {
    j["id"] = item.confirm_id;
  } else if (item.kind == WorkItem::Kind::kReconcile) {
    j["owners"] = item.repaired_owners;
  }
  return j.dump();
}

std::string JoinDiff(const std::vector<TableCommit>& tables) {
  std::string out;
  for (const TableCommit& t : tables) {
    out += "# " + std::string(FamilyName(t.family)) + "\n" + t.restore_text;
  }
  return out;
}

// Whether a request's owned changes may be planned together with the other such requests of the drain for the
// same owner (one declarative plan of the owner instead of one per request): it only adds or deletes managed
// rules of one owner, and needs nothing exact about its own part (no dry run, no commit-confirm, no post-plan
// scope check).
bool Deferrable(const WorkItem& item) {
  if (item.kind != WorkItem::Kind::kRequest) return false;
  const ChangeRequest& r = item.request;
  if (!r.ops.empty() || r.put_owner || r.delete_owner || r.confirm || r.dry_run || r.confirm_within_seconds ||
      r.authorize || (r.adds.empty() && r.deletes.empty())) {
    return false;
  }
  std::set<std::string> owners;
  for (const ManagedAdd& a : r.adds) owners.insert(a.owner);
  for (const ManagedDelete& d : r.deletes) owners.insert(d.owner);
  return owners.size() == 1;
}

// Splits one owner's plan among the deferred requests it was made for: an op or step about a rule carrying the
// tag of a request's managed rule belongs to that request, everything else (chain creation, guards, moved hooks)
// to the first request.
void Attribute(const std::string& owner, const std::vector<txn::PlannedTable>& planned,
               const std::vector<PlanStep>& steps, const std::vector<std::string>& warnings,
               const std::vector<WorkItem*>& items) {
  auto owner_of = [&](const std::string& id) -> WorkItem* {
    for (WorkItem* item : items) {
      if (item->rule_ids.count(id)) return item;
    }
    return items.front();
  };
  std::map<WorkItem*, std::vector<backend::TableBatch>> batches;
  for (const txn::PlannedTable& p : planned) {
    for (const backend::TableOp& op : p.batch.ops) {
      auto tag = op.rule.OwnerTag();
      WorkItem* item = tag && tag->owner == owner ? owner_of(tag->id) : items.front();
      std::vector<backend::TableBatch>& mine = batches[item];
      if (mine.empty() || mine.back().family != p.batch.family || mine.back().table != p.batch.table) {
        backend::TableBatch b;
        b.family = p.batch.family;
        b.table = p.batch.table;
        mine.push_back(std::move(b));
      }
      mine.back().ops.push_back(op);
    }
  }
  for (auto& [item, list] : batches) {
    for (const backend::TableBatch& b : list) {
      item->result.tables.push_back({b.family, b.table, backend::RenderRestoreBlock(b)});
    }
  }
  const std::string tag_prefix = "iptkit:" + owner + ":";
  for (const PlanStep& step : steps) {
    WorkItem* item = items.front();
    if (size_t at = step.description.find(tag_prefix); at != std::string::npos) {
      const size_t from = at + tag_prefix.size();
      item = owner_of(step.description.substr(from, step.description.find('"', from) - from));
    }
    item->result.steps.push_back(step);
  }
  for (const std::string& w : warnings) items.front()->result.warnings.push_back(w);
  for (WorkItem* item : items) item->result.changed = !item->result.tables.empty();
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
    if (r.put_owner) {
      for (Family family : kFamilies) {
        if (!DocumentCovers(*r.put_owner, family)) continue;
        for (const OwnedChain& c : r.put_owner->chains) {
          for (const Rule& rule : c.rules) add_owned(family, c.table, c.name, r.put_owner->owner, rule);
        }
        for (const HookRule& h : r.put_owner->hooks) add_owned(family, h.table, h.chain, r.put_owner->owner, h.rule);
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

// ---- Planning one item ----

Status Service::Impl::PrepareManagedRules(const OwnerState& state) {
  // The rules not canonicalized yet (or with a new id), per (family, table): one Backend::Canonicalize call each.
  std::map<std::pair<Family, std::string>, std::vector<const store::ManagedRule*>> todo;
  for (const auto& [key, rule] : state.managed) {
    auto it = tagged_managed.find(key);
    if (it == tagged_managed.end() || it->second.first != rule.rule_id)
      todo[{rule.family, rule.table}].push_back(&rule);
  }
  for (const auto& [where, rules] : todo) {
    std::vector<Rule> tagged;
    tagged.reserve(rules.size());
    for (const store::ManagedRule* m : rules) {
      IPTKIT_ASSIGN_OR_RETURN(Rule r, ParseManagedRule(*m));
      tagged.push_back(std::move(r));
    }
    Result<std::vector<Rule>> canonical = writer_backend->Canonicalize(where.first, where.second, tagged);
    if (!canonical.ok()) {
      return canonical.status().WithContext("managed rules of owner '" + rules.front()->owner + "' in " +
                                            std::string(FamilyName(where.first)) + " " + where.second);
    }
    for (size_t i = 0; i < rules.size(); ++i) {
      Rule& r = (*canonical)[i];
      if (r.OwnerTag() != ManagedTag(*rules[i])) {
        return Status::Internal("the backend did not keep the owner tag as the last match of " +
                                FormatRuleSpec(tagged[i]));
      }
      r.counters = {};
      tagged_managed[store::KeyOf(*rules[i])] = {rules[i]->rule_id, std::move(r)};
    }
  }
  return Status::Ok();
}

Status Service::Impl::PlanOwner(const std::string& owner, const OwnerState& state, txn::BatchPlanner& planner,
                                ChangeResult* result) {
  const std::string context = "owner '" + owner + "'";
  // The document, prepared per family while it stays the same (documents change rarely, managed rules often).
  PreparedDocument& document = prepared_documents[owner];
  if (!document.valid || document.source != state.document) {
    document.valid = false;
    document.states.clear();
    if (state.document) {
      for (Family family : kFamilies) {
        if (!DocumentCovers(*state.document, family)) continue;
        DesiredState part = *state.document;
        part.families = family == Family::kIPv4 ? DesiredState::Families::kIPv4 : DesiredState::Families::kIPv6;
        Result<DesiredState> ready = txn::PrepareDesiredState(*writer_backend, part, family);
        if (!ready.ok()) return ready.status().WithContext(context);
        document.states[family] = *std::move(ready);
      }
    }
    document.source = state.document;
    document.valid = true;
  }
  IPTKIT_RETURN_IF_ERROR(PrepareManagedRules(state).WithContext(context));
  const ManagedRuleSource cached = [&](const store::ManagedRule& m) -> Result<Rule> {
    return tagged_managed.at(store::KeyOf(m)).second;
  };
  for (Family family : kFamilies) {
    auto part = document.states.find(family);
    IPTKIT_ASSIGN_OR_RETURN(
        DesiredState effective,
        AssembleEffectiveState(owner, family, part == document.states.end() ? nullptr : &part->second, state.managed,
                               cached));
    IPTKIT_ASSIGN_OR_RETURN(const Ruleset* current, planner.Current(family));
    // PlanDeclarative validates the effective state (chain names, hooks, jumps into owned chains) first.
    Result<txn::DeclarativePlan> plan = txn::PlanDeclarative(*current, effective);
    if (!plan.ok()) return plan.status().WithContext(context);
    for (backend::TableBatch& batch : plan->batches) {
      batch.family = family;
      const std::string table = batch.table;
      Status added = planner.AddBatch(std::move(batch));
      if (!added.ok()) return added.WithContext(context + " in " + std::string(FamilyName(family)) + " " + table);
    }
    if (result != nullptr) {
      for (PlanStep& s : plan->steps) result->steps.push_back(std::move(s));
      for (std::string& w : plan->warnings) result->warnings.push_back(std::move(w));
    }
  }
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
      item.upserts.push_back(*m.before);
    } else {
      state.managed.erase(m.key);
      item.removals.push_back(m.key);
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
    item.documents[d.owner] = d.before;
    item.touched_owners.insert(d.owner);
  }
  for (const std::string& owner : item.touched_owners) {
    IPTKIT_RETURN_IF_ERROR(PlanOwner(owner, working[owner], planner, &item.result));
  }
  std::string message = "rolled back: not confirmed by the deadline";
  if (!skipped.empty()) {
    message += "; not undone because they changed since: ";
    for (size_t i = 0; i < skipped.size(); ++i) message += (i ? "; " : "") + skipped[i];
  }
  item.resolve_confirm = WorkItem::Resolution{record.id, store::ConfirmRecord::State::kRolledBack, message};
  item.result.warnings.push_back(message);
  return Status::Ok();
}

Status Service::Impl::PlanItem(WorkItem& item, txn::BatchPlanner& planner, std::map<std::string, OwnerState>& working,
                               std::map<std::string, std::optional<OwnerState>>& undo, bool defer_owner) {
  ResetForPlanning(item);
  undo.clear();
  const txn::PlanMark start = planner.mark();
  const int64_t now = NowMs();
  // On failure the owners go back to what they were; the caller rolls the planner back.
  auto fail = [&](Status s) {
    Undo(working, undo);
    return s;
  };

  switch (item.kind) {
    case WorkItem::Kind::kRequest: {
      ChangeRequest& r = item.request;
      if (!r.ops.empty()) {
        // A chain named with an owner's prefix is that owner's (declarative.md "Owned chains"): made outside the
        // owner it would be removed by the owner's next apply.
        for (size_t i = 0; i < r.ops.ops().size(); ++i) {
          const Op& op = r.ops.ops()[i];
          const std::string* name = op.kind == Op::Kind::kCreateChain   ? &op.chain
                                    : op.kind == Op::Kind::kRenameChain ? &op.new_name
                                                                        : nullptr;
          if (name == nullptr) continue;
          for (const auto& [owner, state] : working) {
            const std::string prefix = OwnerChainPrefix(owner);
            if (state.empty() || name->size() <= prefix.size() || name->compare(0, prefix.size(), prefix) != 0) {
              continue;
            }
            return fail(Status::FailedPrecondition("op " + std::to_string(i + 1) + " (" +
                                                   std::string(OpKindName(op.kind)) + " " + *name +
                                                   "): chains named '" + prefix + "...' belong to owner '" + owner +
                                                   "'; give the chain in its document (PUT /v1/owners/" + owner + ")"));
          }
        }
        Status s = planner.AddTransaction(r.ops);
        if (!s.ok()) return fail(s);
        for (const txn::PlannedTable& p : planner.Finish(start, planner.mark())) {
          item.imperative_tables.insert({p.batch.family, p.batch.table});
          for (const backend::TableOp& op : p.batch.ops) {
            if (op.kind != backend::TableOp::Kind::kDelete) continue;
            auto tag = op.rule.OwnerTag();
            auto owner = tag ? working.find(tag->owner) : working.end();
            if (owner == working.end() || owner->second.empty()) continue;
            return fail(Status::FailedPrecondition(
                "the rule '" + FormatRuleSpec(op.rule) + "' in " + Where(p.batch.family, p.batch.table, op.chain) +
                " belongs to owner '" + tag->owner + "' (id " + tag->id +
                "); change it through its owner (DELETE with \"owner\", or PUT /v1/owners/" + tag->owner + ")"));
          }
        }
      }
      for (const ManagedAdd& a : r.adds) {
        const std::string where = "owned add to " + Where(a.family, a.table, a.chain);
        Status s = ValidateOwner(a.owner);
        if (s.ok()) s = CheckManagedPlacement(a.owner, a.table, a.chain);
        if (!s.ok()) return fail(s.WithContext(where));
        Rule untagged = a.rule;
        std::optional<std::string> id;
        if (auto tag = untagged.OwnerTag()) {
          if (tag->owner != a.owner) {
            return fail(Status::InvalidArgument(where + ": the rule carries the tag of owner '" + tag->owner + "'"));
          }
          s = txn::ValidateRuleId(tag->id);
          if (!s.ok()) return fail(s.WithContext(where));
          id = tag->id;
          untagged.matches.pop_back();
        }
        if (a.ttl_seconds && *a.ttl_seconds <= 0) {
          return fail(Status::InvalidArgument(where + ": ttl must be at least 1 second"));
        }
        s = ValidateRule(untagged, a.family);
        if (!s.ok()) return fail(s.WithContext(where));
        Result<std::vector<Rule>> canon = writer_backend->Canonicalize(a.family, a.table, {untagged});
        if (!canon.ok()) return fail(canon.status().WithContext(where));
        const std::string spec = FormatRuleSpec(canon->front());
        store::ManagedRuleKey key{a.owner, a.family, a.table, a.chain, spec};
        if (s = CheckNewOwner(a.owner, working); !s.ok()) return fail(s.WithContext(where));
        OwnerState& state = Modify(working, a.owner, undo);
        auto it = state.managed.find(key);
        if (r.ttl_bounded) {
          s = CheckTtlBounded(it == state.managed.end() ? nullptr : &it->second, /*removing=*/false);
          if (!s.ok()) return fail(s.WithContext(where));
        }
        store::ManagedRule rec;
        if (it != state.managed.end()) {
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
        state.managed[key] = rec;
        item.upserts.push_back(rec);
        item.rule_ids.insert(rec.rule_id);
        item.touched_owners.insert(a.owner);
        item.result.managed.push_back({rec, TtlRemainingSeconds(rec, now)});
      }
      for (const ManagedDelete& d : r.deletes) {
        const std::string where = "owned delete in " + Where(d.family, d.table, d.chain);
        Status s = ValidateOwner(d.owner);
        if (!s.ok()) return fail(s.WithContext(where));
        Rule untagged = d.rule;
        if (auto tag = untagged.OwnerTag(); tag && tag->owner == d.owner) untagged.matches.pop_back();
        s = ValidateRule(untagged, d.family);
        if (!s.ok()) return fail(s.WithContext(where));
        Result<std::vector<Rule>> canon = writer_backend->Canonicalize(d.family, d.table, {untagged});
        if (!canon.ok()) return fail(canon.status().WithContext(where));
        store::ManagedRuleKey key{d.owner, d.family, d.table, d.chain, FormatRuleSpec(canon->front())};
        auto owner = working.find(d.owner);
        if (owner == working.end() || owner->second.managed.count(key) == 0) {
          return fail(Status::NotFound(where + ": owner '" + d.owner + "' has no managed rule '" + key.spec + "'"));
        }
        if (r.ttl_bounded) {
          s = CheckTtlBounded(&owner->second.managed.at(key), /*removing=*/true);
          if (!s.ok()) return fail(s.WithContext(where));
        }
        item.rule_ids.insert(owner->second.managed.at(key).rule_id);
        Modify(working, d.owner, undo).managed.erase(key);
        item.removals.push_back(key);
        item.touched_owners.insert(d.owner);
      }
      if (r.put_owner) {
        const std::string& owner = r.put_owner->owner;
        Status s = txn::ValidateDesiredState(*r.put_owner);
        if (s.ok()) s = CheckNewOwner(owner, working);
        if (!s.ok()) return fail(s);
        Modify(working, owner, undo).document = *r.put_owner;
        item.documents[owner] = *r.put_owner;
        item.touched_owners.insert(owner);
      }
      if (r.delete_owner) {
        auto owner = working.find(*r.delete_owner);
        if (owner == working.end() || owner->second.empty()) {
          return fail(Status::NotFound("owner '" + *r.delete_owner + "' has no state"));
        }
        OwnerState& state = Modify(working, *r.delete_owner, undo);
        for (const auto& [key, rule] : state.managed) item.removals.push_back(key);
        state = OwnerState{};
        item.deleted_owners.insert(*r.delete_owner);
        item.touched_owners.insert(*r.delete_owner);
      }
      if (defer_owner) return Status::Ok();  // the drain plans the owner once for all its deferred requests
      for (const std::string& owner : item.touched_owners) {
        Status s = PlanOwner(owner, working[owner], planner, &item.result);
        if (!s.ok()) return fail(s);
      }
      if (r.authorize) {
        std::set<ChangedChain> touched;
        for (const txn::PlannedTable& p : planner.Finish(start, planner.mark())) {
          for (const backend::TableOp& op : p.batch.ops) {
            if (op.kind == backend::TableOp::Kind::kCheck) continue;
            touched.insert({p.batch.family, p.batch.table, op.chain});
            if (op.kind == backend::TableOp::Kind::kRenameChain)
              touched.insert({p.batch.family, p.batch.table, op.arg});
          }
        }
        Status allowed = r.authorize(std::vector<ChangedChain>(touched.begin(), touched.end()));
        if (!allowed.ok()) return fail(allowed);
      }
      if (r.confirm) {
        std::lock_guard<std::mutex> lock(state_mu);
        auto it = confirms.find(*r.confirm);
        if (it == confirms.end()) {
          return fail(Status::NotFound("no pending transaction '" + *r.confirm + "' (unknown, or resolved already)"));
        }
        item.resolve_confirm =
            WorkItem::Resolution{*r.confirm, store::ConfirmRecord::State::kConfirmed, "confirmed by " + r.principal};
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
          if (old.document != now_state.document) {
            rollback.documents.push_back({owner, old.document, now_state.document});
          }
        }
        store::ConfirmRecord record;
        record.id = item.result.id;
        record.deadline_ms = now + *r.confirm_within_seconds * 1000;
        record.principal = r.principal;
        record.request_id = r.request_id;
        record.rollback = RollbackToJson(rollback);
        record.created_ms = now;
        item.new_confirm = record;
        item.result.confirm_deadline_ms = record.deadline_ms;
      }
      return Status::Ok();
    }
    case WorkItem::Kind::kExpire: {
      for (const store::ManagedRuleKey& key : item.expire) {
        auto owner = working.find(key.owner);
        if (owner == working.end()) continue;
        auto it = owner->second.managed.find(key);
        if (it == owner->second.managed.end() || !it->second.deadline_ms || *it->second.deadline_ms > now) continue;
        Modify(working, key.owner, undo).managed.erase(key);
        item.removals.push_back(key);
        item.touched_owners.insert(key.owner);
      }
      for (const std::string& owner : item.touched_owners) {
        Status s = PlanOwner(owner, working[owner], planner, &item.result);
        if (!s.ok()) return fail(s);
      }
      return Status::Ok();
    }
    case WorkItem::Kind::kRollback: {
      for (const auto& [owner, state] : working) undo.emplace(owner, state);  // PlanRollback may change any
      Status s = PlanRollback(item, planner, working);
      if (!s.ok()) return fail(s);
      return Status::Ok();
    }
    case WorkItem::Kind::kReconcile: {
      std::vector<std::string> owners;
      for (const auto& [owner, state] : working) {
        if (item.reconcile_owners.empty() || item.reconcile_owners.count(owner)) owners.push_back(owner);
      }
      for (const std::string& owner : owners) {
        const txn::PlanMark before = planner.mark();
        Status s = PlanOwner(owner, working[owner], planner, &item.result);
        if (!s.ok()) return fail(s);
        if (planner.mark().entries != before.entries) item.repaired_owners.push_back(owner);
      }
      return Status::Ok();
    }
  }
  return Status::Internal("unknown work item");
}

// ---- Foreign changes ----

void Service::Impl::CheckForeignChanges(const txn::Snapshots& snapshots) {
  for (const auto& [family, actual] : snapshots) {
    auto it = expected.find(family);
    if (it == expected.end()) continue;
    std::vector<std::string> tables = DifferingTables(it->second, actual);
    if (tables.empty()) continue;
    std::string list;
    nlohmann::ordered_json names = nlohmann::ordered_json::array();
    for (const std::string& t : tables) {
      list += (list.empty() ? "" : ", ") + t;
      names.push_back(t);
    }
    spdlog::info("foreign change detected in {} tables {}", FamilyName(family), list);
    foreign_changes->Inc();
    nlohmann::ordered_json data;
    data["family"] = std::string(FamilyName(family));
    data["tables"] = names;
    events->Publish("foreign_change", data.dump(), NowMs());
  }
  expected.clear();
}

// ---- Drain: plan, commit, bisect ----

void Service::Impl::Drain(std::vector<WorkItem*> items, int depth) {
  std::vector<WorkItem*> open;
  for (WorkItem* item : items) {
    if (!item->final) open.push_back(item);
  }
  if (open.empty()) return;

  auto fail_all = [&](const std::vector<WorkItem*>& which, const Status& status) {
    for (WorkItem* item : which) {
      item->status = status;
      item->final = true;
    }
  };

  for (int attempt = 1; attempt <= kMaxAttempts; ++attempt) {
    Result<std::unique_ptr<backend::LockGuard>> lock = writer_backend->Lock(options.firewall.wait);
    if (!lock.ok()) return fail_all(open, lock.status());
    // Our own simulation of the kernel after the last drain serves as the snapshot while the backend vouches that
    // nothing changed since (nft generation id, legacy fingerprint): no copy of a 20,000-rule ruleset, no compare.
    txn::Snapshots snapshots;
    txn::BatchPlanner::ShapeIndex shapes;
    const bool reuse =
        expected.size() == std::size(kFamilies) &&
        std::all_of(std::begin(kFamilies), std::end(kFamilies), [&](Family f) { return writer_backend->Unchanged(f); });
    if (reuse) {
      snapshots = std::move(expected);
      shapes = std::move(expected_shapes);
      expected.clear();
    } else {
      Result<txn::Snapshots> read = txn::ReadSnapshots(*writer_backend, {Family::kIPv4, Family::kIPv6});
      if (!read.ok()) return fail_all(open, read.status());
      CheckForeignChanges(*read);
      snapshots = *std::move(read);
    }

    expected_shapes.clear();
    txn::BatchPlanner planner(writer_backend.get(), std::move(snapshots), std::move(shapes));
    std::map<std::string, OwnerState> working;
    {
      std::lock_guard<std::mutex> guard(state_mu);
      working = owners;
    }
    std::vector<WorkItem*> committing;
    bool imperative = false;
    // Requests whose owner is planned once at the end (Deferrable), per owner in order of first appearance, with
    // each owner's state before the first of them.
    std::vector<std::string> deferred_owners;
    std::map<std::string, std::vector<WorkItem*>> deferred;
    std::map<std::string, std::optional<OwnerState>> deferred_before;
    for (WorkItem* item : open) {
      if (item->final) continue;
      const txn::PlanMark mark = planner.mark();
      std::map<std::string, std::optional<OwnerState>> undo;
      const bool defer = Deferrable(*item);
      Status s = PlanItem(*item, planner, working, undo, defer);
      if (!s.ok()) {
        planner.RollbackTo(mark);
        item->status = s;
        item->final = true;
        continue;
      }
      if (defer) {
        const std::string& owner = *item->touched_owners.begin();
        if (!deferred.count(owner)) {
          deferred_owners.push_back(owner);
          deferred_before[owner] = undo.count(owner) ? undo.at(owner) : std::optional<OwnerState>(working[owner]);
        }
        deferred[owner].push_back(item);
        committing.push_back(item);
        continue;
      }
      item->from = mark;
      item->to = planner.mark();
      item->result.tables = planner.Render(item->from, item->to);
      item->result.changed = !item->result.tables.empty();
      if (item->kind == WorkItem::Kind::kRequest && item->request.dry_run) {
        planner.RollbackTo(mark);
        Undo(working, undo);
        item->final = true;
        continue;
      }
      if (!item->imperative_tables.empty()) imperative = true;
      committing.push_back(item);
    }
    // Each owner of deferred requests planned once; when that fails, its requests are planned one by one again so
    // that only the guilty ones fail.
    for (const std::string& owner : deferred_owners) {
      std::vector<WorkItem*>& items = deferred[owner];
      const txn::PlanMark mark = planner.mark();
      ChangeResult combined;
      Status s = PlanOwner(owner, working[owner], planner, &combined);
      if (s.ok()) {
        Attribute(owner, planner.Finish(mark, planner.mark()), combined.steps, combined.warnings, items);
        continue;
      }
      planner.RollbackTo(mark);
      const std::optional<OwnerState>& before = deferred_before[owner];
      if (before) {
        working[owner] = *before;
      } else {
        working.erase(owner);
      }
      std::erase_if(committing, [&](WorkItem* w) { return std::find(items.begin(), items.end(), w) != items.end(); });
      for (WorkItem* item : items) {
        const txn::PlanMark one = planner.mark();
        std::map<std::string, std::optional<OwnerState>> undo;
        Status alone = PlanItem(*item, planner, working, undo, /*defer_owner=*/false);
        if (!alone.ok()) {
          planner.RollbackTo(one);
          item->status = alone;
          item->final = true;
          continue;
        }
        item->from = one;
        item->to = planner.mark();
        item->result.tables = planner.Render(item->from, item->to);
        item->result.changed = !item->result.tables.empty();
        committing.push_back(item);
      }
    }
    // Imperative ops of this drain may have disturbed owned state (a flush, an `-I 1` above first hooks): repair
    // it in the same commit, so that no packet sees the owned rules out of place.
    if (imperative && !working.empty()) {
      auto repair = std::make_unique<WorkItem>();
      repair->kind = WorkItem::Kind::kReconcile;
      repair->drift_check = true;
      repair->repair = true;
      repair->request.principal = kDaemonPrincipal;
      repair->request.action = "drift_repair";
      repair->result.id = NewTransactionId();
      const txn::PlanMark mark = planner.mark();
      std::map<std::string, std::optional<OwnerState>> undo;
      Status s = PlanItem(*repair, planner, working, undo, /*defer_owner=*/false);
      if (!s.ok()) {
        planner.RollbackTo(mark);
        spdlog::error("repairing owned state after imperative changes failed: {}", s.ToString());
      } else if (planner.mark().entries != mark.entries) {
        repair->from = mark;
        repair->to = planner.mark();
        repair->result.tables = planner.Render(repair->from, repair->to);
        repair->result.changed = true;
        committing.push_back(repair.get());
        extras.push_back(std::move(repair));
      }
    }
    if (committing.empty()) {
      expected_shapes = planner.TakeShapes();
      expected = std::move(planner).TakeState();
      return;
    }

    std::vector<txn::PlannedTable> planned = planner.Finish();
    const auto t0 = Clock::now();
    Status committed = Status::Ok();
    if (!planner.empty()) {
      if (options.firewall.before_commit_hook) options.firewall.before_commit_hook();
      Result<CommitResult> done = txn::CommitBatches(*writer_backend, planned, {});
      committed = done.status();
    }
    commit_seconds->Observe({}, std::chrono::duration<double>(Clock::now() - t0).count());
    if (committed.ok()) {
      commits->Inc({"ok"});
      if (!planner.empty()) batch_requests->Observe({}, static_cast<double>(committing.size()));
      for (WorkItem* item : committing) {
        item->result.batch_requests = committing.size();
        item->diff = JoinDiff(item->result.tables);
      }
      expected_shapes = planner.TakeShapes();
      expected = std::move(planner).TakeState();
      lock->reset();
      std::set<std::string> emptied;
      for (WorkItem* item : committing) {
        for (const std::string& owner : item->touched_owners) {
          auto it = working.find(owner);
          if (it == working.end() || it->second.empty()) emptied.insert(owner);
        }
      }
      Status persisted = Persist(committing, emptied);
      if (!persisted.ok()) {
        // The kernel holds what the store does not: undo it (newest table first) and fail the requests.
        std::string undone = "undone in the kernel";
        Result<std::unique_ptr<backend::LockGuard>> relock = writer_backend->Lock(options.firewall.wait);
        for (auto it = planned.rbegin(); it != planned.rend(); ++it) {
          if (it->inverse.ops.empty() && !it->inverse.flush_table) continue;
          Status s = writer_backend->Commit(it->inverse);
          if (!s.ok()) undone = "NOT undone in the kernel (" + s.ToString() + ")";
        }
        expected.clear();
        spdlog::error("store write failed after a commit; the change was {}: {}", undone, persisted.ToString());
        fail_all(committing, Status::Internal("the change was committed but could not be stored (" +
                                              persisted.ToString() + "); it was " + undone));
        return;
      }
      for (WorkItem* item : committing) {
        for (const store::ManagedRuleKey& key : item->removals) tagged_managed.erase(key);
      }
      {
        std::lock_guard<std::mutex> guard(state_mu);
        for (WorkItem* item : committing) {
          for (const std::string& owner : item->touched_owners) {
            auto it = working.find(owner);
            if (it == working.end() || it->second.empty()) {
              owners.erase(owner);
              prepared_documents.erase(owner);
            } else {
              owners[owner] = it->second;
            }
          }
          if (item->new_confirm) confirms[item->new_confirm->id] = *item->new_confirm;
          if (item->resolve_confirm) confirms.erase(item->resolve_confirm->id);
        }
      }
      for (WorkItem* item : committing) item->final = true;
      return;
    }
    commits->Inc({"error"});
    expected.clear();
    const StatusCode code = committed.code();
    if (code == StatusCode::kInvalidArgument) {
      if (committing.size() == 1) return fail_all(committing, committed);
      // The kernel (or iptables) rejected something that planned fine: find the guilty requests by halves.
      lock->reset();
      std::vector<WorkItem*> clients;
      for (WorkItem* item : committing) {
        if (item->repair) {
          // Planned again by each half.
          item->final = true;
          item->skip_audit = true;
          item->status = Status::Aborted("superseded by the bisection");
        } else {
          clients.push_back(item);
        }
      }
      spdlog::warn("commit of {} requests rejected ({}); bisecting", clients.size(), committed.ToString());
      if (clients.size() <= 1) return fail_all(clients, committed);
      std::vector<WorkItem*> a(clients.begin(), clients.begin() + clients.size() / 2);
      std::vector<WorkItem*> b(clients.begin() + clients.size() / 2, clients.end());
      Drain(a, depth + 1);
      Drain(b, depth + 1);
      return;
    }
    if (Retriable(code) && attempt < kMaxAttempts) {
      spdlog::info("commit raced a concurrent change ({}); re-reading (attempt {})", committed.ToString(), attempt + 1);
      continue;
    }
    if (Retriable(code)) {
      return fail_all(committing, Status::Aborted("the ruleset changed concurrently " + std::to_string(kMaxAttempts) +
                                                  " times while committing; retry: " + committed.message()));
    }
    return fail_all(committing, committed);
  }
}

// ---- Persist, publish, answer ----

Status Service::Impl::Persist(const std::vector<WorkItem*>& items, const std::set<std::string>& emptied) {
  const int64_t now = NowMs();
  return store->Write([&](store::Store::Tx& tx) -> Status {
    for (const WorkItem* item : items) {
      if (!item->status.ok()) continue;
      for (const store::ManagedRuleKey& key : item->removals) {
        Status s = tx.DeleteManagedRule(key);
        if (!s.ok() && s.code() != StatusCode::kNotFound) return s;
      }
      for (const store::ManagedRule& rule : item->upserts) IPTKIT_RETURN_IF_ERROR(tx.RestoreManagedRule(rule));
      for (const auto& [owner, doc] : item->documents) {
        std::optional<std::string> text;
        if (doc) text = DesiredStateToJson(*doc);
        IPTKIT_RETURN_IF_ERROR(tx.PutOwner(owner, text, now));
      }
      if (item->new_confirm) IPTKIT_RETURN_IF_ERROR(tx.PutConfirm(*item->new_confirm));
      if (item->resolve_confirm) {
        IPTKIT_RETURN_IF_ERROR(tx.ResolveConfirm(item->resolve_confirm->id, item->resolve_confirm->state, now,
                                                 item->resolve_confirm->message));
      }
    }
    // Owners left without a document and managed rules are gone.
    for (const std::string& owner : emptied) {
      Status s = tx.DeleteOwner(owner);
      if (!s.ok() && s.code() != StatusCode::kNotFound) return s;
    }
    for (const WorkItem* item : items) IPTKIT_RETURN_IF_ERROR(AppendAudit(tx, *item, now));
    return Status::Ok();
  });
}

Status Service::Impl::AppendAudit(store::Store::Tx& tx, const WorkItem& item, int64_t now) {
  if (item.kind == WorkItem::Kind::kRequest && item.request.dry_run) return Status::Ok();
  if (item.skip_audit) return Status::Ok();
  // The daemon's own work is audited when it changed something or failed.
  if (item.kind != WorkItem::Kind::kRequest && item.status.ok() && !item.result.changed && item.upserts.empty() &&
      item.removals.empty() && !item.resolve_confirm) {
    return Status::Ok();
  }
  store::AuditEntry entry;
  entry.time_ms = now;
  entry.principal = item.request.principal.empty() ? kDaemonPrincipal : item.request.principal;
  entry.request_id = item.request.request_id.empty() ? item.result.id : item.request.request_id;
  entry.action = ActionOf(item);
  entry.request = item.request.request_json;
  if (entry.request.empty() && item.kind != WorkItem::Kind::kRequest) entry.request = InternalRequestJson(item);
  entry.result = item.status.ok() ? "ok" : std::string(StatusCodeName(item.status.code()));
  entry.message = item.status.ok() ? "" : item.status.message();
  entry.diff = item.diff;
  return tx.AppendAudit(entry).status();
}

}  // namespace iptkit::service
