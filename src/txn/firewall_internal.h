// Internal pieces of Firewall shared by firewall.cc (Commit, Restore) and firewall_apply.cc (declarative apply):
// reading snapshots, committing planned tables with rollback, and the locked read → plan → commit sequence.
//
// Thread-safety: as Firewall (one thread at a time per Backend).
//
//   // Inside a Firewall member, with a planner that turns snapshots into per-table batches:
//   return txn::LockedCommit(backend(), options_, {Family::kIPv4}, options,
//       [&](txn::Snapshots snaps) -> Result<std::vector<txn::PlannedTable>> {
//         txn::BatchPlanner planner(&backend(), std::move(snaps));
//         IPTKIT_RETURN_IF_ERROR(planner.AddBatch(MyBatch()));
//         return planner.Finish();
//       });
#ifndef IPTKIT_SRC_TXN_FIREWALL_INTERNAL_H_
#define IPTKIT_SRC_TXN_FIREWALL_INTERNAL_H_

#include <functional>
#include <vector>

#include "iptkit/desired.h"
#include "iptkit/firewall.h"
#include "iptkit/status.h"
#include "iptkit/transaction.h"
#include "src/backend/backend.h"
#include "src/txn/planner.h"

namespace iptkit::txn {

// Reads Backend::Read(family, std::nullopt, /*fresh_counters=*/false) for each family (duplicates read once):
// planning needs no fresh counters, so a backend may answer from its snapshot cache. With a `detail` below kRules it
// asks Backend::ReadForPlan instead (only for what a transaction's ops need, see PlanDetail).
// With a narrowed `scope` it asks Backend::ReadChainsForPlan (every chain, the rules of those in scope only).
// `for_commit`: the snapshot is planned on and committed under the current lock (LockedCommit), so a backend with
// commits_plan_snapshot is always asked through ReadChainsForPlan (it keeps what it read for that commit).
Result<Snapshots> ReadSnapshots(backend::Backend& backend, const std::vector<Family>& families,
                                backend::SnapshotDetail detail = backend::SnapshotDetail::kRules,
                                const backend::ChainScope& scope = {}, bool for_commit = false);

// The least detail planning `txn` needs on `backend`: kRules unless the backend has handles (it resolves positions
// against the snapshot at commit); then kChains for appends, inserts at 1, chain creation, renames, flushes and
// policies; kPositions for inserts elsewhere and deletes / replaces by number without an expected rule; kRules for
// everything that looks at rules (delete by spec, expected rules, chain deletion, zeroing).
// A backend with commits_plan_snapshot instead (native-legacy: the plan's libiptc handle is the one committed) is
// asked the same way, except: a delete by spec needs kPositions (the chain's placeholders with the rule where it is
// byte for byte); an add that jumps to a user chain, or adds a target extension to one, needs kRules (the graph
// check sees every chain); and a transaction over several tables needs kRules of the chains it touches (the earlier
// tables' inverses re-add what they removed).
backend::SnapshotDetail PlanDetail(const Transaction& txn, const backend::BackendTraits& traits);

// The chains whose rules planning `txn` looks at: every chain unless the backend has handles; then the chains its
// rule ops (append, insert, replace, delete by number) and its -Z of one chain name; a chain only deleted from by
// spec as ChainScope::probes (the rules searched for); every chain again when it deletes or renames a chain
// (references, later ops under the new name) or zeroes a whole table. Planning never looks at the rules of other
// chains: a jump target's existence is in the chain list. With commits_plan_snapshot (see PlanDetail): a chain
// deleted from by spec stays a probe when it is in `chains` too (below kRules), every chain for an add that changes
// the jump graph, and a flushed chain's rules when the transaction spans tables.
backend::ChainScope PlanScope(const Transaction& txn, const backend::BackendTraits& traits);

// The restore text of every planned table (RenderRestoreBlock of `batch`), in order, as a CommitResult.
CommitResult RenderPlanned(const std::vector<PlannedTable>& tables, bool dry_run);

// Commits the planned tables as one Backend::Commit (options.dry_run: sends nothing and returns RenderPlanned).
// On failure nothing of the transaction is left changed (backend.h: one kernel transaction, or table by table with
// guarded rollback, CommitTableByTable); the result says which atomicity the commit had.
Result<CommitResult> CommitBatches(backend::Backend& backend, const std::vector<PlannedTable>& tables,
                                   const CommitOptions& options);

// Plans from snapshots (called with the lock held; the snapshots are the planner's to change).
using PlanFunction = std::function<Result<std::vector<PlannedTable>>(Snapshots)>;

// The whole write path: backend.Lock(fw_options.wait) held throughout; ReadSnapshots(families); plan(snapshots);
// fw_options.before_commit_hook (if set, and not for a dry run); CommitBatches. When that returns Aborted (a
// concurrent change won, e.g. the native backend's stale generation id) the whole sequence runs again, at most 5
// times in all, with jittered backoff (0.5-3 ms growing to 8-24 ms); then Aborted.
Result<CommitResult> LockedCommit(backend::Backend& backend, const FirewallOptions& fw_options,
                                  const std::vector<Family>& families, const CommitOptions& options,
                                  const PlanFunction& plan,
                                  backend::SnapshotDetail detail = backend::SnapshotDetail::kRules,
                                  const backend::ChainScope& scope = {});

// The families a desired state applies to (kBoth: IPv4 then IPv6).
std::vector<Family> DesiredFamilies(const DesiredState& desired);

// `desired` for one family, ready for PlanDeclarative: every rule validated (ValidateRule), canonicalized through
// `backend` without its tag, given its owner tag (AssignOwnerTags: a caller's tag of this owner keeps its id), and
// canonicalized again with the tag (so the plan compares with what the kernel prints). Errors name the rule
// ("ipv4 owned chain filter/MYAPP-IN rule 2: ..."). Does not call ValidateDesiredState.
Result<DesiredState> PrepareDesiredState(backend::Backend& backend, const DesiredState& desired, Family family);

}  // namespace iptkit::txn

#endif  // IPTKIT_SRC_TXN_FIREWALL_INTERNAL_H_
