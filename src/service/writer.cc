// The writer's drain (service.h has the contract, docs/daemon.md the semantics), in the shape of leveldb's
// DBImpl::Write + BuildBatchGroup: the drain plans a group of work items on one simulated kernel (plan_item.cc
// says what each item changes; owners are planned by the OwnerPlanner), commits the group, and then only
//  - retries on a fresh read when another writer changed the ruleset meanwhile (bounded: kMaxCommitAttempts),
//  - bisects a group the kernel rejected so that only the guilty items fail,
//  - persists the items' records and lets Process answer them.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>
#include <thread>
#include <utility>

#include "iptkit/dialect.h"
#include "iptkit/json.h"
#include "src/backend/ops/table_sim.h"
#include "src/service/service_internal.h"
#include "src/txn/firewall_internal.h"

namespace iptkit::service {
namespace {

constexpr Family kFamilies[] = {Family::kIPv4, Family::kIPv6};

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

// A failed commit another writer may have caused: a `-C` guard that missed, a rule or chain gone or there
// already. Whether one did is decided by reading the kernel again.
bool MaybeRace(StatusCode code) {
  return code == StatusCode::kFailedPrecondition || code == StatusCode::kNotFound ||
         code == StatusCode::kAlreadyExists || code == StatusCode::kAborted;
}

// What the audit log shows as the request of the daemon's own work.
std::string InternalRequestJson(const WorkItem& item) {
  nlohmann::ordered_json j;
  j["kind"] = ActionOf(item);
  if (item.kind == WorkItem::Kind::kExpire) {
    nlohmann::ordered_json rules = nlohmann::ordered_json::array();
    for (const store::ManagedRuleKey& k : item.effects.removals) {
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
    j["owner"] = item.owner;
    j["owners"] = item.repaired_owners;
  }
  if (!item.owner_failures.empty()) {
    nlohmann::ordered_json failed = nlohmann::ordered_json::object();
    for (const auto& [owner, s] : item.owner_failures) failed[owner] = s.ToString();
    j["owners_failed"] = failed;
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
  if (!r.ops.empty() || r.put_owner || r.delete_owner || !r.put_owners.empty() || !r.delete_owners.empty() ||
      r.confirm || r.dry_run || r.confirm_within_seconds || r.authorize || (r.adds.empty() && r.deletes.empty())) {
    return false;
  }
  std::set<std::string> owners;
  for (const ManagedAdd& a : r.adds) owners.insert(a.owner);
  for (const ManagedDelete& d : r.deletes) owners.insert(d.owner);
  return owners.size() == 1;
}

// Splits one owner's plan among the deferred requests it was made for, by the structured ids of ops and steps: an
// op or step about a rule with the id of a request's managed rule belongs to that request, everything else (chain
// creation, guards, moved hooks) to the first request.
void Attribute(const std::string& owner, const std::vector<txn::PlannedTable>& planned, const ChangeResult& combined,
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
        b.with_counters = p.batch.with_counters;
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
  for (const PlanStep& step : combined.steps) {
    WorkItem* item = step.owner == owner && !step.rule_id.empty() ? owner_of(step.rule_id) : items.front();
    item->result.steps.push_back(step);
  }
  for (const std::string& w : combined.warnings) items.front()->result.warnings.push_back(w);
  for (WorkItem* item : items) item->result.changed = !item->result.tables.empty();
}

// Whether an item's imperative ops may disturb owned state, so that the owners are planned again in its commit
// (PlanGroup's repairs). A client's adds and deletes cannot: deletes of owned rules are refused, unowned inserts and
// appends in builtin chains are placed around the owned hooks (UnownedPlacement), and a rule added to an owned
// chain is foreign there and stays where it is (docs/declarative.md); nor can new chains, policies or zeroed
// counters. A flush, a deleted chain (with cascade: the rules jumping to it) or a renamed chain can, and so can the
// daemon's own imperative work (a confirm rollback re-applies anything). Planning every owner for every unowned add
// was most of the plan time next to a foreign writer.
bool MayDisturbOwners(const WorkItem& item) {
  if (item.imperative_tables.empty()) return false;
  if (item.kind != WorkItem::Kind::kRequest) return true;
  return std::any_of(item.request.ops.ops().begin(), item.request.ops.ops().end(), [](const Op& op) {
    return op.kind == Op::Kind::kFlush || op.kind == Op::Kind::kDeleteChain || op.kind == Op::Kind::kRenameChain;
  });
}

// In iptkitd every insert is placed relative to the rule before it: an owner's rules by their order, an unowned
// insert below the owned `first` hooks or at the position the client gave, which names the rule it goes after as
// the writer planned it (docs/daemon.md "Where unowned rules go"). So inserts are anchored (TableOp::anchored):
// on the native backend the batch then needs no generation check unless something else in it does (a replace or
// delete by position, which the planner guards with `-C`, or a flush), and another writer's unrelated commit does
// not make it stale.
void AnchorInserts(std::vector<txn::PlannedTable>& planned) {
  for (txn::PlannedTable& p : planned) {
    for (backend::TableOp& op : p.batch.ops) {
      if (op.kind == backend::TableOp::Kind::kInsert) op.anchored = true;
    }
  }
}

void Fail(const std::vector<WorkItem*>& items, const Status& status) {
  for (WorkItem* item : items) {
    item->status = status;
    item->final = true;
  }
}

}  // namespace

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

// ---- Reading the kernel ----

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

std::set<Family> Service::Impl::NeededFamilies(const std::vector<WorkItem*>& items) const {
  std::set<Family> out;
  const std::set<Family> all(std::begin(kFamilies), std::end(kFamilies));
  for (const WorkItem* item : items) {
    if (item->final) continue;
    switch (item->kind) {
      case WorkItem::Kind::kRequest: {
        const ChangeRequest& r = item->request;
        for (const Op& op : r.ops.ops()) out.insert(op.family);
        for (const ManagedAdd& a : r.adds) out.insert(a.family);
        for (const ManagedDelete& d : r.deletes) out.insert(d.family);
        if (r.put_owner || r.delete_owner || !r.put_owners.empty() || !r.delete_owners.empty() || r.confirm) {
          return all;
        }
        break;
      }
      case WorkItem::Kind::kExpire:
        for (const store::ManagedRuleKey& k : item->expire) out.insert(k.family);
        break;
      case WorkItem::Kind::kRollback:
      case WorkItem::Kind::kReconcile:
        return all;  // a drift check looks at everything
    }
  }
  // Owners are planned in every family they have state in (their repairs after imperative ops, deferred plans).
  std::lock_guard<std::mutex> lock(state_mu);
  for (const auto& [owner, state] : owners) {
    for (Family f : kFamilies) {
      if (state.document && DocumentCovers(*state.document, f)) out.insert(f);
    }
    for (const auto& [key, rule] : state.managed) out.insert(key.family);
    if (out.size() == all.size()) break;
  }
  return out;
}

Result<txn::Snapshots> Service::Impl::ReadState(txn::BatchPlanner::ShapeIndex* shapes, const std::set<Family>& needed,
                                                std::set<std::pair<Family, std::string>>* newly_unrepresentable) {
  // Our own simulation of the kernel after the last drain serves as the snapshot of a family while the backend
  // vouches that nothing changed since (nft generation id, legacy fingerprint): no copy of a 20,000-rule ruleset,
  // no compare. A family the group does not touch (no request names it, no owner has state in it) keeps that
  // simulation even when something changed: nothing is planned there that is not guarded, and the drift checks
  // read every family.
  txn::Snapshots out = std::move(expected);
  *shapes = std::move(expected_shapes);
  expected.clear();
  expected_shapes.clear();
  std::vector<Family> read;
  for (Family f : kFamilies) {
    if (out.count(f) && (fresh_expected.count(f) || !needed.count(f) || writer_backend->Unchanged(f))) continue;
    read.push_back(f);
  }
  fresh_expected.clear();
  if (read.empty()) return out;
  std::map<Family, bool> vouched;
  Result<txn::Snapshots> fresh = ReadToPlan(read, &vouched);
  if (!fresh.ok()) return fresh.status();
  for (Family f : read) {
    auto it = out.find(f);
    if (it != out.end()) expected[f] = std::move(it->second);
  }
  CheckForeignChanges(*fresh);  // against what we expected of the families read; clears `expected`
  TrustMarks(*fresh, read, vouched, newly_unrepresentable);
  for (Family f : read) {
    out[f] = std::move((*fresh)[f]);
    std::erase_if(*shapes, [&](const auto& e) { return std::get<0>(e.first) == f; });
  }
  return out;
}

Result<txn::Snapshots> Service::Impl::ReadToPlan(const std::vector<Family>& families, std::map<Family, bool>* vouched) {
  // On the native backend with its event cache, Unchanged right after a read that another writer's commit followed
  // re-reads the tables it touched into the backend's snapshot and says no: that snapshot is then newer than the
  // read, and a commit planned on the read would place its inserts next to, and delete by position, the rules of
  // the newer one (an owner's rule landed before the rule it was to follow, a delete by number took the rule above
  // the one planned). So such a read is made again: the next one is that snapshot.
  Result<txn::Snapshots> fresh = Status::Internal("not read");
  int moved_reads = 0;
  for (int i = 0; i < kMaxCommitAttempts; ++i) {
    fresh = txn::ReadSnapshots(*writer_backend, families);
    if (!fresh.ok()) {
      // A dump that raced another writer's commit (nft: "changed during the dump") is read again.
      if (fresh.status().code() != StatusCode::kAborted) return fresh.status();
      commit_retries->Inc();
      continue;
    }
    vouched->clear();
    bool moved = false, any = false;
    for (Family f : families) {
      const bool v = writer_backend->Unchanged(f);
      (*vouched)[f] = v;
      moved = moved || !v;
      any = any || v;
    }
    // Only a backend whose commit resolves the plan against its own snapshot (handles) needs it; at most 3 such
    // reads (a writer that commits faster than a read completes leaves the read as it was).
    if (!moved || !writer_backend->traits().handles || !(backend_vouches || any) || ++moved_reads > 2) break;
    spdlog::debug("another writer committed right after the read; reading again");
  }
  return fresh;
}

void Service::Impl::TrustMarks(txn::Snapshots& snapshots, const std::vector<Family>& read,
                               const std::map<Family, bool>& vouched_reads,
                               std::set<std::pair<Family, std::string>>* newly_unrepresentable) {
  // Unrepresentable tables. On nft the rule count of each chain is cross-checked over netlink after iptables-save
  // printed it, and another writer's change in between looks the same as a lossy table. A read the backend vouches
  // for right after it (Backend::Unchanged: nothing changed during or since) is trusted; in a read it does not
  // vouch for, the marks are those of the last trusted read. A backend that never vouches for a read is trusted
  // when two reads in a row agree (Drain reads again before failing anything because of a new mark).
  for (Family f : read) {
    auto v = vouched_reads.find(f);
    const bool vouched = v != vouched_reads.end() && v->second;
    if (vouched) backend_vouches = true;
    for (Table& t : snapshots[f].tables) {
      const std::pair<Family, std::string> key{f, t.name};
      auto known = unrepresentable.find(key);
      if (vouched || !backend_vouches) {
        if (t.unrepresentable_reason.empty()) {
          if (known != unrepresentable.end()) unrepresentable.erase(known);
        } else {
          if (known == unrepresentable.end() && !backend_vouches && newly_unrepresentable != nullptr) {
            newly_unrepresentable->insert(key);
          }
          unrepresentable[key] = t.unrepresentable_reason;
        }
      } else if (known != unrepresentable.end()) {
        if (t.unrepresentable_reason.empty()) t.unrepresentable_reason = known->second;
      } else if (!t.unrepresentable_reason.empty()) {
        spdlog::debug("{} {} looked unrepresentable in a read that raced another writer ({}); not taken as such",
                      FamilyName(f), t.name, t.unrepresentable_reason);
        t.unrepresentable_reason.clear();
      }
    }
    // Tables gone from the family are no longer unrepresentable.
    std::erase_if(unrepresentable, [&](const auto& e) {
      return e.first.first == f && snapshots[f].FindTable(e.first.second) == nullptr;
    });
  }
}

// ---- Planning a group ----

Service::Impl::PlannedGroup Service::Impl::PlanGroup(const std::vector<WorkItem*>& items, txn::BatchPlanner& planner,
                                                     std::map<std::string, OwnerState>& working, bool repairs) {
  PlannedGroup group;
  bool imperative = false;
  // Requests whose owner is planned once at the end (Deferrable), per owner in order of first appearance, with
  // each owner's state before the first of them.
  std::vector<std::string> deferred_owners;
  std::map<std::string, std::vector<WorkItem*>> deferred;
  std::map<std::string, std::optional<OwnerState>> deferred_before;
  for (WorkItem* item : items) {
    if (item->final) continue;
    const txn::PlanMark mark = planner.mark();
    std::map<std::string, std::optional<OwnerState>> undo;
    const bool defer = Deferrable(*item);
    if (defer) {
      // The owner's state before its first deferred request (a failed request leaves it as it was).
      const std::string& owner =
          item->request.adds.empty() ? item->request.deletes.front().owner : item->request.adds.front().owner;
      if (!deferred_before.count(owner)) {
        auto it = working.find(owner);
        deferred_before[owner] = it == working.end() ? std::nullopt : std::optional<OwnerState>(it->second);
      }
    }
    Status s = PlanItem(*item, planner, working, undo, defer);
    if (!s.ok()) {
      item->status = s;
      item->final = true;
      continue;
    }
    if (defer) {
      const std::string& owner = *item->touched_owners.begin();
      if (!deferred.count(owner)) deferred_owners.push_back(owner);
      deferred[owner].push_back(item);
      group.committing.push_back(item);
      continue;
    }
    item->from = mark;
    item->to = planner.mark();
    item->result.tables = planner.Render(item->from, item->to);
    item->result.changed = !item->result.tables.empty();
    if (item->kind == WorkItem::Kind::kRequest && item->request.dry_run) {
      planner.RollbackTo(mark);
      for (auto& [owner, before] : undo) {
        if (before) {
          working[owner] = *before;
        } else {
          working.erase(owner);
        }
      }
      item->final = true;
      continue;
    }
    if (MayDisturbOwners(*item)) imperative = true;
    group.committing.push_back(item);
  }
  // Each owner of deferred requests planned once; when that fails, its requests are planned one by one again so
  // that only the guilty ones fail.
  for (const std::string& owner : deferred_owners) {
    std::vector<WorkItem*>& mine = deferred[owner];
    const txn::PlanMark mark = planner.mark();
    ChangeResult combined;
    // Only the managed rules these requests changed are planned, when the owner allows it (PlanOwnerChanges).
    std::vector<OwnerPlanner::ManagedChange> changes;
    if (const std::optional<OwnerState>& before = deferred_before[owner]) {
      std::set<store::ManagedRuleKey> keys;
      for (const WorkItem* item : mine) {
        for (const store::ManagedRule& r : item->effects.upserts) keys.insert(store::KeyOf(r));
        for (const store::ManagedRuleKey& k : item->effects.removals) keys.insert(k);
      }
      const OwnerState& now = working[owner];
      for (const store::ManagedRuleKey& k : keys) {
        OwnerPlanner::ManagedChange& c = changes.emplace_back();
        if (auto it = before->managed.find(k); it != before->managed.end()) c.before = it->second;
        if (auto it = now.managed.find(k); it != now.managed.end()) c.after = it->second;
      }
    }
    if (PlanOwnerChanges(owner, deferred_before[owner] ? &changes : nullptr, working[owner], planner, &combined).ok()) {
      Attribute(owner, planner.Finish(mark, planner.mark()), combined, mine);
      continue;
    }
    const std::optional<OwnerState>& before = deferred_before[owner];
    if (before) {
      working[owner] = *before;
    } else {
      working.erase(owner);
    }
    std::erase_if(group.committing, [&](WorkItem* w) { return std::find(mine.begin(), mine.end(), w) != mine.end(); });
    for (WorkItem* item : mine) {
      const txn::PlanMark one = planner.mark();
      std::map<std::string, std::optional<OwnerState>> undo;
      Status alone = PlanItem(*item, planner, working, undo, /*defer_owner=*/false);
      if (!alone.ok()) {
        item->status = alone;
        item->final = true;
        continue;
      }
      item->from = one;
      item->to = planner.mark();
      item->result.tables = planner.Render(item->from, item->to);
      item->result.changed = !item->result.tables.empty();
      group.committing.push_back(item);
    }
  }
  // Imperative ops of this group may have disturbed owned state (a flush of a chain holding owned rules): repair it
  // in the same commit, so that no packet sees the owned rules out of place. One item per owner, so that an owner
  // whose state cannot be applied is left to its own retries without holding up the others.
  if (imperative && repairs) {
    group.planned_repairs = true;
    for (const auto& [owner, state] : working) {
      if (state.empty() || retries.count("owner:" + owner)) continue;
      std::unique_ptr<WorkItem> repair = InternalItem(WorkItem::Kind::kReconcile, "drift_repair");
      repair->owner = owner;
      repair->drift_check = true;
      repair->repair = true;
      const txn::PlanMark mark = planner.mark();
      std::map<std::string, std::optional<OwnerState>> undo;
      Status s = PlanItem(*repair, planner, working, undo, /*defer_owner=*/false);
      if (!s.ok()) {
        spdlog::warn("repairing owner {} after imperative changes failed (its drift check retries): {}", owner,
                     s.ToString());
        continue;
      }
      if (planner.mark().entries == mark.entries) continue;
      repair->from = mark;
      repair->to = planner.mark();
      repair->result.tables = planner.Render(repair->from, repair->to);
      repair->result.changed = true;
      group.committing.push_back(repair.get());
      group.repairs.push_back(std::move(repair));
    }
  }
  return group;
}

// ---- Drain: plan, commit, bisect, persist ----

void Service::Impl::RunDueDeadlines() {
  if (running_deadlines) return;
  std::vector<std::unique_ptr<WorkItem>> due = DueTimers(/*deadlines_only=*/true);
  if (due.empty()) return;
  running_deadlines = true;
  std::vector<std::unique_ptr<WorkItem>> outer;  // the repairs of the drain that is waiting
  outer.swap(extras);
  Execute(std::move(due));  // into the same batch: stored and answered with the drain that is waiting
  extras.swap(outer);
  running_deadlines = false;
}

void Service::Impl::Drain(const std::vector<WorkItem*>& items, bool repairs, int budget, bool optimistic) {
  int attempts = 0;
  const bool clients = std::any_of(items.begin(), items.end(), [](const WorkItem* w) { return !w->internal(); });
  for (;;) {
    std::vector<WorkItem*> open;
    for (WorkItem* item : items) {
      if (!item->final) open.push_back(item);
    }
    if (open.empty()) return;
    // TTL expiries and confirm rollbacks do not wait for a run of conflicts of client work to end.
    if (attempts > 0 && clients) RunDueDeadlines();
    ++attempts;

    Result<std::unique_ptr<backend::LockGuard>> lock = writer_backend->Lock(options.firewall.wait);
    if (!lock.ok()) {
      NoteBackend(lock.status(), /*commit=*/false);
      return Fail(open, lock.status());
    }
    const auto t_read = Clock::now();
    txn::BatchPlanner::ShapeIndex shapes;
    std::set<std::pair<Family, std::string>> newly_unrepresentable;
    // An optimistic first attempt plans on the simulation of the last drain as it is (reading only what is not
    // there): its ops must not depend on positions another writer may have shifted (see Process).
    const std::set<Family> needed = optimistic && attempts == 1 ? std::set<Family>{} : NeededFamilies(open);
    Result<txn::Snapshots> snapshots = ReadState(&shapes, needed, &newly_unrepresentable);
    if (!snapshots.ok()) {
      NoteBackend(snapshots.status(), /*commit=*/false);
      return Fail(open, snapshots.status());
    }
    NoteBackend(Status::Ok(), /*commit=*/false);
    txn::BatchPlanner planner(writer_backend.get(), *std::move(snapshots), std::move(shapes));
    std::map<std::string, OwnerState> working;
    {
      std::lock_guard<std::mutex> guard(state_mu);
      working = owners;
    }
    const auto t_plan = Clock::now();
    PlannedGroup group = PlanGroup(open, planner, working, repairs);
    if (!newly_unrepresentable.empty() && attempts < budget) {
      // Work refused because of a table only this read found unrepresentable: read again (the table is taken as
      // unrepresentable only when the next read says so too) and plan the whole group again.
      std::vector<WorkItem*> blocked;
      for (WorkItem* item : open) {
        if (item->final && item->status.details().reason == "unrepresentable") blocked.push_back(item);
      }
      if (!blocked.empty()) {
        for (WorkItem* item : blocked) {
          item->final = false;
          item->status = Status::Ok();
        }
        commit_retries->Inc();
        spdlog::info("{} work item(s) met a table newly reported unrepresentable; reading again", blocked.size());
        continue;  // `expected` is empty: the next attempt reads
      }
    }
    if (group.committing.empty()) {
      expected_shapes = planner.TakeShapes();
      expected = std::move(planner).TakeState();
      return;
    }

    std::vector<txn::PlannedTable> planned = planner.Finish();
    AnchorInserts(planned);
    const auto t0 = Clock::now();
    Status committed = Status::Ok();
    if (!planner.empty()) {
      if (options.firewall.before_commit_hook) options.firewall.before_commit_hook();
      committed = txn::CommitBatches(*writer_backend, planned, {}).status();
    }
    commit_seconds->Observe({}, std::chrono::duration<double>(Clock::now() - t0).count());

    if (committed.ok()) {
      if (!planner.empty()) {
        NoteBackend(Status::Ok(), /*commit=*/true);
        batch_requests->Observe({}, static_cast<double>(group.committing.size()));
      }
      commits->Inc({"ok"});
      for (WorkItem* item : group.committing) {
        item->result.batch_requests = group.committing.size();
        item->diff = JoinDiff(item->result.tables);
      }
      expected_shapes = planner.TakeShapes();
      expected = std::move(planner).TakeState();
      lock->reset();
      std::set<std::string> emptied;
      for (WorkItem* item : group.committing) {
        for (const std::string& owner : item->touched_owners) {
          auto it = working.find(owner);
          if (it == working.end() || it->second.empty()) emptied.insert(owner);
        }
      }
      // The records are stored by the pass's batch (Settle), while the writer goes on; the items are answered
      // after that. What undoes this commit, and the state in memory before it, go with them.
      PendingBatch& batch = *current_batch;
      for (StoreRecord& r : Records(group.committing, emptied)) batch.records.push_back(std::move(r));
      std::vector<backend::TableBatch> inverse;
      for (const txn::PlannedTable& p : planned) inverse.push_back(p.inverse);
      batch.undo.push_back(std::move(inverse));
      if (std::any_of(group.committing.begin(), group.committing.end(),
                      [](const WorkItem* w) { return !w->internal(); })) {
        batch.clients = true;
      }
      {
        auto secs = [](Clock::duration d) { return std::chrono::duration<double>(d).count(); };
        drain_phase_seconds->Observe({"read"}, secs(t_plan - t_read));
        drain_phase_seconds->Observe({"plan"}, secs(t0 - t_plan));
        drain_phase_seconds->Observe({"commit"}, secs(Clock::now() - t0));
      }
      if (spdlog::should_log(spdlog::level::debug)) {
        auto ms = [](Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); };
        spdlog::debug("drain of {} item(s), attempt {}: read {:.1f} ms, plan {:.1f} ms, commit {:.1f} ms",
                      group.committing.size(), attempts, ms(t_plan - t_read), ms(t0 - t_plan), ms(Clock::now() - t0));
      }
      for (WorkItem* item : group.committing) {
        for (const store::ManagedRuleKey& key : item->effects.removals) owner_planner->ForgetRule(key);
      }
      // Sets the documents dropped go now that the rules that used them are gone.
      const std::vector<std::string> dropped_sets = OwnedSets::Dropped(owners, working);
      {
        std::lock_guard<std::mutex> guard(state_mu);
        // Moved, not copied (an owner may hold thousands of managed rules): `working` is not used after this.
        std::set<std::string> updated;
        for (WorkItem* item : group.committing) {
          for (const std::string& owner : item->touched_owners) {
            if (!updated.insert(owner).second) continue;
            auto was = owners.find(owner);
            if (!batch.owners_before.count(owner)) {
              batch.owners_before[owner] =
                  was == owners.end() ? std::nullopt : std::optional<OwnerState>(std::move(was->second));
            }
            auto it = working.find(owner);
            if (it == working.end() || it->second.empty()) {
              owners.erase(owner);
              owner_planner->Forget(owner);
            } else {
              owners[owner] = std::move(it->second);
            }
          }
          for (const std::string* id : {item->effects.new_confirm ? &item->effects.new_confirm->id : nullptr,
                                        item->effects.resolve_confirm ? &item->effects.resolve_confirm->id : nullptr}) {
            if (id == nullptr || batch.confirms_before.count(*id)) continue;
            auto was = confirms.find(*id);
            batch.confirms_before[*id] =
                was == confirms.end() ? std::nullopt : std::optional<store::ConfirmRecord>(was->second);
          }
          if (item->effects.new_confirm) confirms[item->effects.new_confirm->id] = *item->effects.new_confirm;
          if (item->effects.resolve_confirm) confirms.erase(item->effects.resolve_confirm->id);
        }
      }
      if (!dropped_sets.empty()) (void)OwnedSetsFor().Destroy(dropped_sets);
      for (WorkItem* item : group.committing) item->final = true;
      for (auto& repair : group.repairs) extras.push_back(std::move(repair));
      return;
    }

    commits->Inc({"error"});
    NoteBackend(committed, /*commit=*/true);
    const StatusCode code = committed.code();
    // Another writer's change in between is a race, not the requests' fault: it shows as a difference between
    // the state we planned on and a fresh read. Then the group is planned again on that read.
    bool race = false;
    if (MaybeRace(code)) {
      // Only the families the committed tables are in are read again (and planned on afresh); the others keep
      // the simulation, which the next attempt's ReadState checks with the backend as usual.
      std::vector<Family> touched;
      for (const txn::PlannedTable& p : planned) {
        if (std::find(touched.begin(), touched.end(), p.batch.family) == touched.end()) {
          touched.push_back(p.batch.family);
        }
      }
      planner.RollbackTo({});
      txn::Snapshots before = std::move(planner).TakeState();
      std::map<Family, bool> vouched;
      Result<txn::Snapshots> now = ReadToPlan(touched, &vouched);
      race = !now.ok();
      if (now.ok()) {
        for (Family f : touched) race = race || !DifferingTables(before[f], (*now)[f]).empty();
        for (Family f : touched) expected[f] = std::move(before[f]);
        CheckForeignChanges(*now);  // publishes what changed, clears `expected`
        if (race) {
          // This read is the next attempt's snapshot (with the marks ReadState would give it); a new mark of a
          // backend that never vouches makes the next attempt read once more.
          std::set<std::pair<Family, std::string>> newly;
          TrustMarks(*now, touched, vouched, &newly);
          for (auto& [f, rs] : before) {
            if (!now->count(f)) (*now)[f] = std::move(rs);  // untouched families: the simulation, as it was
          }
          if (newly.empty()) {
            fresh_expected.insert(touched.begin(), touched.end());
            expected = *std::move(now);
          }
        }
      }
    }
    if (!race) expected.clear();
    expected_shapes.clear();
    std::vector<WorkItem*> committing;
    for (WorkItem* item : group.committing) {
      if (!item->repair) committing.push_back(item);
    }
    if (race) {
      if (attempts < budget) {
        commit_retries->Inc();
        // The daemon's own work (a TTL that passed, a rollback) is not held up by the clients' conflicts: it goes
        // first, on its own.
        std::vector<WorkItem*> internal, clients;
        for (WorkItem* item : committing) (item->internal() ? internal : clients).push_back(item);
        if (!internal.empty() && !clients.empty()) {
          spdlog::info("commit raced another writer ({}); the daemon's own work goes first, alone",
                       committed.ToString());
          Drain(internal, repairs, budget - attempts);
          Drain(clients, repairs, budget - attempts);
          return;
        }
        if (committing.size() > 1 && attempts >= kBisectConflictsAfter) {
          // The conflicts keep coming: go on in halves (with what is left of the budget), so that a request whose
          // ops keep meeting another writer's changes does not take the others down with it.
          spdlog::info("commit of {} work items raced another writer {} times ({}); going on in halves",
                       committing.size(), attempts, committed.ToString());
          std::vector<WorkItem*> a(committing.begin(), committing.begin() + committing.size() / 2);
          std::vector<WorkItem*> b(committing.begin() + committing.size() / 2, committing.end());
          Drain(a, repairs, budget - attempts);
          Drain(b, repairs, budget - attempts);
          return;
        }
        spdlog::info("commit raced another writer ({}); planning again on a fresh read (attempt {} of {})",
                     committed.ToString(), attempts + 1, budget);
        std::this_thread::sleep_for(std::chrono::milliseconds(attempts));
        continue;
      }
      // The message names only the request's own ops: iptables' message quotes a line of the group's batch,
      // which may be another principal's.
      for (WorkItem* item : committing) {
        item->status = Status::Aborted("the ruleset was changed by another writer during each of " +
                                       std::to_string(kMaxCommitAttempts) + " attempts to commit this request; retry" +
                                       (committing.size() == 1 ? ": " + committed.message() : std::string()));
        item->final = true;
      }
      return;
    }
    if (code == StatusCode::kUnavailable || code == StatusCode::kPermissionDenied) return Fail(committing, committed);
    Bisect(committing, committed, group.planned_repairs);
    return;
  }
}

void Service::Impl::Bisect(const std::vector<WorkItem*>& committing, const Status& rejected, bool planned_repairs) {
  if (committing.size() == 1) {
    // Alone with repairs of owned state, the repair may be what the kernel refused: the request again without it.
    if (planned_repairs) return Drain(committing, /*repairs=*/false);
    committing.front()->status = rejected;
    committing.front()->final = true;
    return;
  }
  spdlog::warn("commit of {} work items rejected ({}); bisecting", committing.size(), rejected.ToString());
  std::vector<WorkItem*> a(committing.begin(), committing.begin() + committing.size() / 2);
  std::vector<WorkItem*> b(committing.begin() + committing.size() / 2, committing.end());
  Drain(a, planned_repairs);
  Drain(b, planned_repairs);
}

// ---- Store records ----

std::optional<store::AuditEntry> Service::Impl::AuditOf(const WorkItem& item, int64_t now) {
  if (item.kind == WorkItem::Kind::kRequest && item.request.dry_run) return std::nullopt;
  if (item.skip_audit) return std::nullopt;
  // The daemon's own work is audited when it changed something or failed.
  if (item.internal() && item.status.ok() && !item.result.changed && item.effects.empty() &&
      item.owner_failures.empty()) {
    return std::nullopt;
  }
  store::AuditEntry entry;
  entry.time_ms = now;
  entry.principal = item.request.principal.empty() ? kDaemonPrincipal : item.request.principal;
  entry.request_id = item.request.request_id.empty() ? item.result.id : item.request.request_id;
  entry.action = ActionOf(item);
  entry.request = item.request.request_json;
  if (entry.request.empty() && item.internal()) entry.request = InternalRequestJson(item);
  entry.result = item.status.ok() ? "ok" : std::string(StatusCodeName(item.status.code()));
  entry.message = item.status.ok() ? "" : item.status.message();
  entry.diff = item.diff;
  return entry;
}

std::vector<StoreRecord> Service::Impl::Records(const std::vector<WorkItem*>& items,
                                                const std::set<std::string>& emptied) {
  const int64_t now = NowMs();
  std::vector<StoreRecord> out;
  for (const WorkItem* item : items) {
    StoreRecord r;
    if (item->status.ok()) r.effects = item->effects;
    if (item->status.ok() && !item->request.dry_run) r.meta = item->request.store_meta;
    r.audit = AuditOf(*item, now);
    if (r.effects.empty() && !r.audit && r.meta.empty()) continue;
    out.push_back(std::move(r));
  }
  if (!emptied.empty()) {
    StoreRecord r;
    r.emptied = emptied;  // owners left without a document and managed rules are gone
    out.push_back(std::move(r));
  }
  return out;
}

namespace {

// Errors a record may meet when it is written after the fact (a pending record of the daemon's own work): the
// state it removes is gone already, the state it resolves resolved. They do not stop the rest.
bool Benign(const Status& s) {
  return s.ok() || s.code() == StatusCode::kNotFound || s.code() == StatusCode::kFailedPrecondition ||
         s.code() == StatusCode::kAlreadyExists;
}

Status WriteRecord(store::Store::Tx& tx, const StoreRecord& r, bool lenient) {
  const int64_t now = r.audit ? r.audit->time_ms : NowMs();
  auto check = [&](const Status& s) { return lenient && Benign(s) ? Status::Ok() : s; };
  for (const store::ManagedRuleKey& key : r.effects.removals) {
    Status s = tx.DeleteManagedRule(key);
    if (!s.ok() && s.code() != StatusCode::kNotFound) IPTKIT_RETURN_IF_ERROR(check(s));
  }
  for (const store::ManagedRule& rule : r.effects.upserts) IPTKIT_RETURN_IF_ERROR(check(tx.RestoreManagedRule(rule)));
  for (const auto& [owner, doc] : r.effects.documents) {
    std::optional<std::string> text;
    if (doc) text = DesiredStateToJson(*doc);
    IPTKIT_RETURN_IF_ERROR(check(tx.PutOwner(owner, text, now)));
  }
  if (r.effects.new_confirm) IPTKIT_RETURN_IF_ERROR(check(tx.PutConfirm(*r.effects.new_confirm)));
  if (r.effects.resolve_confirm) {
    const StoreEffects::Resolution& res = *r.effects.resolve_confirm;
    IPTKIT_RETURN_IF_ERROR(check(tx.ResolveConfirm(res.id, res.state, now, res.message)));
  }
  for (const std::string& owner : r.emptied) {
    Status s = tx.DeleteOwner(owner);
    if (!s.ok() && s.code() != StatusCode::kNotFound) IPTKIT_RETURN_IF_ERROR(check(s));
  }
  if (r.audit) IPTKIT_RETURN_IF_ERROR(tx.AppendAudit(*r.audit).status());
  for (const auto& [key, value] : r.meta) {
    IPTKIT_RETURN_IF_ERROR(value ? tx.PutMeta(key, *value) : tx.DeleteMeta(key));
  }
  return Status::Ok();
}

}  // namespace

Status Service::Impl::WriteRecordsTo(store::Store& store, const std::function<Status()>& hook,
                                     const std::deque<StoreRecord>& pending, const std::vector<StoreRecord>& records,
                                     bool flush_audit) {
  if (records.empty() && pending.empty() && !flush_audit) return Status::Ok();
  if (hook) IPTKIT_RETURN_IF_ERROR(hook());
  // Store::Write stores the store's audit backlog (QueueAudit) first when it can.
  Status s = store.Write([&](store::Store::Tx& tx) -> Status {
    for (const StoreRecord& r : pending) IPTKIT_RETURN_IF_ERROR(WriteRecord(tx, r, /*lenient=*/true));
    for (const StoreRecord& r : records) IPTKIT_RETURN_IF_ERROR(WriteRecord(tx, r, /*lenient=*/false));
    return Status::Ok();
  });
  // Empty already when Write stored it. (When this fails after Write, the pending records are written again
  // later: leniently, so that is harmless.)
  if (s.ok() && flush_audit) s = store.FlushAuditBacklog();
  return s;
}

void Service::Impl::RecordsWritten(size_t pending_written, bool flushed_audit) {
  if (pending_written > 0) {
    spdlog::warn("wrote {} record(s) of the daemon's own work that waited for the store", pending_written);
    pending_records.erase(pending_records.begin(),
                          pending_records.begin() + static_cast<std::ptrdiff_t>(pending_written));
    store_pending->Set({}, static_cast<double>(pending_records.size()));
    std::lock_guard<std::mutex> lock(health_mu);
    pending_count = pending_records.size();
  }
  if (flushed_audit && audit_queued) {
    spdlog::warn("stored the audit entries of the daemon's own work that waited for the store");
    audit_queued = false;
  }
}

Status Service::Impl::WriteRecords(const std::vector<StoreRecord>& records) {
  Status s = WriteRecordsTo(*store, options.before_store_write, pending_records, records, audit_queued);
  if (s.ok()) RecordsWritten(pending_records.size(), audit_queued);
  return s;
}

void Service::Impl::KeepPending(std::vector<StoreRecord> records) {
  // The audit entries wait in the store's backlog (bounded there: the oldest go first, counted in
  // iptkitd_audit_dropped_total); the state records wait here, never dropped: there are never more of them than
  // managed rules and confirms, and they decide what the store says after a restart.
  for (StoreRecord& r : records) {
    if (r.audit) {
      store->QueueAudit(*std::move(r.audit));
      r.audit.reset();
      audit_queued = true;
    }
    if (!r.effects.empty() || !r.emptied.empty() || !r.meta.empty()) pending_records.push_back(std::move(r));
  }
  store_pending->Set({}, static_cast<double>(pending_records.size()));
  std::lock_guard<std::mutex> lock(health_mu);
  pending_count = pending_records.size();
}

}  // namespace iptkit::service
