// Firewall: queries, Commit and Restore (declarative PlanApply/Apply live in firewall_apply.cc, Open in
// firewall_open.cc so that users of WithBackend do not need the backend factory).
#include "iptkit/firewall.h"

#include <algorithm>
#include <chrono>
#include <random>
#include <thread>
#include <utility>

#include "iptkit/dialect.h"
#include "src/backend/backend.h"
#include "src/backend/ops/table_sim.h"
#include "src/txn/firewall_internal.h"

namespace iptkit {

namespace txn {

Result<Snapshots> ReadSnapshots(backend::Backend& backend, const std::vector<Family>& families,
                                backend::SnapshotDetail detail) {
  Snapshots snapshots;
  for (Family family : families) {
    if (snapshots.count(family) != 0) continue;
    // Planning needs no fresh counters: a backend may answer from its snapshot cache (nft generation id).
    Result<Ruleset> rs = detail == backend::SnapshotDetail::kRules
                             ? backend.Read(family, std::nullopt, /*fresh_counters=*/false)
                             : backend.ReadForPlan(family, detail);
    if (!rs.ok()) return rs.status().WithContext("reading the " + std::string(FamilyName(family)) + " snapshot");
    rs->family = family;
    snapshots.emplace(family, *std::move(rs));
  }
  return snapshots;
}

namespace {

bool Empty(const backend::TableBatch& batch) { return batch.ops.empty() && !batch.flush_table; }

}  // namespace

CommitResult RenderPlanned(const std::vector<PlannedTable>& tables, bool dry_run) {
  CommitResult result;
  result.dry_run = dry_run;
  for (const auto& t : tables) {
    if (Empty(t.batch)) continue;
    result.tables.push_back({t.batch.family, t.batch.table, backend::RenderRestoreBlock(t.batch)});
  }
  return result;
}

Result<CommitResult> CommitBatches(backend::Backend& backend, const std::vector<PlannedTable>& tables,
                                   const CommitOptions& options) {
  CommitResult result = RenderPlanned(tables, options.dry_run);
  if (options.dry_run) return result;
  IPTKIT_ASSIGN_OR_RETURN(backend::CommitReport report, backend.Commit(tables));
  result.atomic_across_tables = report.atomic_across_tables;
  result.backend = report.backend;
  return result;
}

backend::SnapshotDetail PlanDetail(const Transaction& txn, const backend::BackendTraits& traits) {
  using D = backend::SnapshotDetail;
  if (!traits.handles) return D::kRules;
  D need = D::kChains;
  for (const Op& op : txn.ops()) {
    switch (op.kind) {
      case Op::Kind::kAppend:
        if (op.unique) return D::kRules;  // looks for an equal rule
        break;
      case Op::Kind::kCreateChain:
      case Op::Kind::kRenameChain:
      case Op::Kind::kFlush:
      case Op::Kind::kPolicy:
        break;
      case Op::Kind::kInsert:
        if (op.unique) return D::kRules;
        if (op.index != 1) need = std::max(need, D::kPositions);
        break;
      case Op::Kind::kDeleteAt:
      case Op::Kind::kReplace:
        need = std::max(need, op.expect ? D::kRules : D::kPositions);
        break;
      case Op::Kind::kDelete:
      case Op::Kind::kDeleteChain:
      case Op::Kind::kZero:
        return D::kRules;
    }
  }
  return need;
}

Result<CommitResult> LockedCommit(backend::Backend& backend, const FirewallOptions& fw_options,
                                  const std::vector<Family>& families, const CommitOptions& options,
                                  const PlanFunction& plan, backend::SnapshotDetail detail) {
  // Aborted means a concurrent change won between read and commit (e.g. the native backend's stale generation id):
  // read, plan and commit again, a few times, with jittered backoff.
  constexpr int kAttempts = 5;
  for (int attempt = 1;; ++attempt) {
    Result<CommitResult> done = [&]() -> Result<CommitResult> {
      IPTKIT_ASSIGN_OR_RETURN(std::unique_ptr<backend::LockGuard> lock, backend.Lock(fw_options.wait));
      IPTKIT_ASSIGN_OR_RETURN(Snapshots snapshots, ReadSnapshots(backend, families, detail));
      if (options.progress) {
        CommitProgress progress;
        progress.stage = CommitProgress::Stage::kSnapshotRead;
        options.progress(progress);
      }
      IPTKIT_ASSIGN_OR_RETURN(std::vector<PlannedTable> planned, plan(std::move(snapshots)));
      if (!options.dry_run && fw_options.before_commit_hook) fw_options.before_commit_hook();
      if (!options.progress) return CommitBatches(backend, planned, options);
      CommitProgress progress;
      progress.stage = CommitProgress::Stage::kPlanned;
      for (const PlannedTable& t : planned) {
        if (Empty(t.batch)) continue;
        ++progress.tables;
        progress.ops += t.batch.ops.size();
      }
      options.progress(progress);
      if (options.dry_run || progress.tables == 0) return CommitBatches(backend, planned, options);
      progress.stage = CommitProgress::Stage::kCommitting;
      options.progress(progress);
      IPTKIT_ASSIGN_OR_RETURN(CommitResult result, CommitBatches(backend, planned, options));
      progress.stage = CommitProgress::Stage::kCommitted;
      options.progress(progress);
      return result;
    }();
    if (done.ok() || done.status().code() != StatusCode::kAborted) return done;
    if (attempt == kAttempts) {
      return done.status().WithContext("gave up after " + std::to_string(kAttempts) + " attempts");
    }
    static thread_local std::minstd_rand jitter(std::random_device{}());
    const int base_us = 500 << attempt;
    std::this_thread::sleep_for(std::chrono::microseconds(base_us / 2 + static_cast<int>(jitter() % base_us)));
  }
}

}  // namespace txn

namespace {

using backend::TableOp;

// The batch a restore of `table` (parsed from the user's text) sends.
Result<backend::TableBatch> RestoreBatch(Family family, const Table& table, const Table& current,
                                         const Firewall::RestoreOptions& options) {
  backend::TableBatch batch;
  batch.family = family;
  batch.table = table.name;
  batch.flush_table = !options.noflush;
  batch.with_counters = options.counters;
  for (const auto& chain : table.chains) {
    const bool builtin = IsBuiltinChain(table.name, chain.name);
    if (chain.builtin() != builtin) {
      return Status::InvalidArgument(
          "table " + table.name + ": chain " + chain.name +
          (builtin ? " is builtin and needs a policy" : " is not builtin; use '-' as policy"));
    }
    if (builtin) {
      // A whole-table restore sets every declared policy. With --noflush the declarations are ignored: a
      // builtin declaration there would reset an admin's policy (docs/architecture.md §3); policies change only by -P.
      if (!options.noflush) {
        TableOp op = TableOp::Make(TableOp::Kind::kPolicy, chain.name, {}, 0, *chain.policy);
        op.rule.counters = chain.counters;
        batch.ops.push_back(std::move(op));
      }
    } else if (!options.noflush || current.FindChain(chain.name) == nullptr) {
      // --noflush: an existing user chain is appended to, never flushed (unlike iptables-restore's ":NAME -").
      batch.ops.push_back(TableOp::Make(TableOp::Kind::kNewChain, chain.name));
    }
  }
  for (const auto& chain : table.chains) {
    for (Rule rule : chain.rules) {
      if (!options.counters) rule.counters = {};
      batch.ops.push_back(TableOp::Make(TableOp::Kind::kAppend, chain.name, std::move(rule)));
    }
  }
  return batch;
}

}  // namespace

Firewall::Firewall(std::unique_ptr<backend::Backend> backend, FirewallOptions options)
    : backend_(std::move(backend)), options_(std::move(options)) {}

Firewall::~Firewall() = default;

std::unique_ptr<Firewall> Firewall::WithBackend(std::unique_ptr<backend::Backend> backend,
                                                const FirewallOptions& options) {
  return std::unique_ptr<Firewall>(new Firewall(std::move(backend), options));
}

Result<Ruleset> Firewall::List(Family family, std::optional<std::string> table) {
  return backend_->Read(family, table);
}

Result<std::string> Firewall::Save(Family family, std::optional<std::string> table, bool counters) {
  IPTKIT_ASSIGN_OR_RETURN(Ruleset rs, backend_->Read(family, table));
  return FormatSave(rs, {.counters = counters});
}

Result<bool> Firewall::Check(Family family, const std::string& table, const std::string& chain, const Rule& rule) {
  IPTKIT_RETURN_IF_ERROR(ValidateRule(rule, family));
  IPTKIT_ASSIGN_OR_RETURN(std::vector<Rule> canon, backend_->Canonicalize(family, table, {rule}));
  IPTKIT_ASSIGN_OR_RETURN(Ruleset rs, backend_->Read(family, table));
  const Table* t = rs.FindTable(table);
  const Chain* c = t == nullptr ? nullptr : t->FindChain(chain);
  if (c == nullptr) {
    return Status::NotFound("chain '" + chain + "' does not exist in " + std::string(FamilyName(family)) + " " + table);
  }
  return backend::FindRule(*c, canon.front()) >= 0;
}

Result<FirewallInfo> Firewall::Info() {
  IPTKIT_ASSIGN_OR_RETURN(FirewallInfo info, backend_->Info());
  if (info.backend.empty()) info.backend = backend_->traits().name;
  info.netns = options_.netns;
  return info;
}

Result<Rule> Firewall::Canonicalize(Family family, const std::string& table, const Rule& rule) {
  IPTKIT_RETURN_IF_ERROR(ValidateRule(rule, family));
  IPTKIT_ASSIGN_OR_RETURN(std::vector<Rule> canon, backend_->Canonicalize(family, table, {rule}));
  if (canon.size() != 1) return Status::Internal("backend returned " + std::to_string(canon.size()) + " rules");
  return std::move(canon.front());
}

Result<CommitResult> Firewall::Commit(const Transaction& txn, const CommitOptions& options) {
  if (txn.empty()) {
    CommitResult nothing;
    nothing.dry_run = options.dry_run;
    nothing.atomic_across_tables = true;
    return nothing;
  }
  return txn::LockedCommit(
      *backend_, options_, txn::InvolvedFamilies(txn), options,
      [&](txn::Snapshots snapshots) { return txn::PlanTransaction(*backend_, txn, std::move(snapshots)); },
      txn::PlanDetail(txn, backend_->traits()));
}

Result<CommitResult> Firewall::Restore(Family family, std::string_view text, const RestoreOptions& options) {
  IPTKIT_ASSIGN_OR_RETURN(Ruleset parsed, ParseSave(text, family, {.restore_input = options.noflush}));
  if (parsed.tables.empty()) return Status::InvalidArgument("restore text names no table (no '*table' line)");
  if (options.progress) {
    CommitProgress progress;
    progress.stage = CommitProgress::Stage::kParsed;
    for (const Table& t : parsed.tables) {
      for (const Chain& c : t.chains) progress.rules += c.rules.size();
    }
    options.progress(progress);
  }
  for (size_t i = 0; i < parsed.tables.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      if (parsed.tables[i].name == parsed.tables[j].name) {
        return Status::InvalidArgument("restore text names table " + parsed.tables[i].name + " twice");
      }
    }
  }
  return txn::LockedCommit(
      *backend_, options_, {family}, CommitOptions{.progress = options.progress, .dry_run = options.dry_run},
      [&](txn::Snapshots snapshots) -> Result<std::vector<txn::PlannedTable>> {
        // Every batch is built against the table as read (each table is named once), then planned.
        std::vector<backend::TableBatch> batches;
        for (const auto& table : parsed.tables) {
          IPTKIT_ASSIGN_OR_RETURN(Table current, txn::SnapshotTable(snapshots.at(family), table.name));
          IPTKIT_ASSIGN_OR_RETURN(backend::TableBatch batch, RestoreBatch(family, table, current, options));
          batches.push_back(std::move(batch));
        }
        txn::BatchPlanner planner(backend_.get(), std::move(snapshots));
        for (backend::TableBatch& batch : batches) {
          batch.family = family;
          IPTKIT_RETURN_IF_ERROR(planner.AddBatch(std::move(batch)));
        }
        return planner.Finish();
      });
}

}  // namespace iptkit
