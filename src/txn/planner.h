// Planner (internal): turns a Transaction into per-table backend batches, validated locally against snapshots,
// each with the guarded inverse batch that undoes it (docs/architecture.md §3-§4).
//
// Planning is pure apart from one Backend::Canonicalize call per (family, table): it simulates every op on a
// copy of the snapshot, so everything iptables would reject for state reasons (missing chain or jump target,
// referenced chain, policy on a user chain, index out of range, target not allowed in the table/hook) fails
// here with the op named, before anything is sent.
//
// Thread-safety: free functions; the Backend is used by the calling thread only.
//
//   IPTKIT_ASSIGN_OR_RETURN(auto snapshots, ReadSnapshots(backend, InvolvedFamilies(txn)));
//   IPTKIT_ASSIGN_OR_RETURN(std::vector<PlannedTable> plan, PlanTransaction(backend, txn, snapshots));
//   IPTKIT_ASSIGN_OR_RETURN(CommitResult done, CommitBatches(backend, plan, {}));   // firewall_internal.h
#ifndef IPTKIT_SRC_TXN_PLANNER_H_
#define IPTKIT_SRC_TXN_PLANNER_H_

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <unordered_set>
#include <vector>

#include "iptkit/model.h"
#include "iptkit/status.h"
#include "iptkit/transaction.h"
#include "src/backend/backend.h"

namespace iptkit::txn {

// Whole-family snapshots as read from the backend (Backend::Read(family)). A table missing from a snapshot is
// planned as freshly created (builtin chains, policy ACCEPT), which is what the kernel does on first use.
using Snapshots = std::map<Family, Ruleset>;

// One table's part of a transaction.
// A table's batch with its guarded inverse (backend.h CommitTable).
using PlannedTable = backend::CommitTable;

// Families in order of first appearance in `txn`.
std::vector<Family> InvolvedFamilies(const Transaction& txn);

// Plans any number of transactions and raw batches, one after the other, on one simulated state (the snapshots,
// changed in place), so that each is validated against the state the ones before it leave behind. This is how the
// daemon's group commit turns many requests into one commit per table (docs/architecture.md §5), and how Firewall plans
// a single transaction, restore or declarative apply.
//
// Each Add* is all or nothing: on error the simulated state and everything planned are as before the call. A
// savepoint (Mark) lets the caller undo several successful Adds (RollbackTo), e.g. a request whose later part
// failed, or a dry run. Finish() returns one PlannedTable per table touched (in order of first touch; tables that
// zero counters last), whose batch is every planned op of that table in order and whose inverse undoes them all.
// Cost: O(ops) per Add (plus one Backend::Canonicalize call per table of a transaction, and a graph check of each
// touched table); no table is copied.
// Thread-safety: one thread at a time; `backend` is used by that thread only.
//
//   BatchPlanner planner(&backend, std::move(snapshots));
//   for (const Transaction& txn : requests) results.push_back(planner.AddTransaction(txn));   // each fails alone
//   IPTKIT_ASSIGN_OR_RETURN(CommitResult done, CommitBatches(backend, planner.Finish(), {}));
struct PlanMark {
  size_t entries = 0;  // journal length
};
class BatchPlanner {
 public:
  // For each chain, the shapes (a hash of the fields equal specs share) of every rule it held since first asked:
  // a superset of its current rules' shapes. Kept by a caller that plans on this planner's TakeState() again.
  using ShapeIndex = std::map<std::tuple<Family, std::string, std::string>, std::unordered_set<uint64_t>>;

  // `snapshots` as read from the backend (a family missing from it cannot be planned: Internal). `backend` is
  // used for canonicalization only (AddTransaction); it may be null when only AddBatch is used. `shapes` must be
  // empty or the TakeShapes() of the planner whose TakeState() `snapshots` is.
  BatchPlanner(backend::Backend* backend, Snapshots snapshots, ShapeIndex shapes = {});

  // Whether ops by position (delete / replace N) are sent as such (-D N, -R N) instead of by spec: only when the
  // backend applies them to the very snapshot the plan was made on. Default: BackendTraits::handles (it resolves
  // positions against that snapshot). PlanTransaction also sets it for commits_plan_snapshot backends (its snapshot
  // was read by LockedCommit under the lock the commit holds).
  void set_by_position(bool by_position) { by_position_ = by_position; }

  // A savepoint: RollbackTo(mark) undoes everything planned after it.
  using Mark = PlanMark;
  Mark mark() const { return Mark{journal_.size()}; }
  void RollbackTo(Mark mark);

  // Where a rule that op `op_number` (1-based) of a transaction appends (`index` 0) or inserts (`index` N, already
  // checked to be in range) lands in `chain` as it stands in the simulation: returns the index to insert at (0:
  // append). The daemon uses it to keep its owners' `first` and `last` hooks at the top and bottom of builtin
  // chains (an unowned `-I 1` goes below them, an unowned `-A` above the `last` ones).
  using Placement =
      std::function<int(Family family, const Table& table, const Chain& chain, size_t op_number, int index)>;

  // Plans `txn` as PlanTransaction documents (validation, one canonicalization call per table, position ops
  // rendered race-free, cascade, the nft rename rule); errors start with the op ("op 3 (delete_chain ...): ...").
  // With `placement`, appends and inserts go where it says.
  Status AddTransaction(const Transaction& txn, const Placement& placement = nullptr);
  // Plans a raw batch as PlanBatch documents (rules must already be as the kernel prints them). A flush_table batch
  // must be the first thing planned for its table (FailedPrecondition otherwise). Errors name the op
  // ("ipv4 filter op 4 (-D INPUT -j FOO): ...").
  Status AddBatch(backend::TableBatch batch);

  // The simulated state of `family` after everything planned so far (the snapshot when nothing was). Internal
  // error for a family that was not in the snapshots.
  Result<const Ruleset*> Current(Family family) const;
  bool empty() const { return journal_.empty(); }
  // The simulated state of every family, and the shape index that goes with it; the planner is spent afterwards.
  Snapshots TakeState() && { return std::move(state_); }
  ShapeIndex TakeShapes() { return std::move(shapes_); }

  // One PlannedTable per table touched since `from` (default: everything), as described above.
  std::vector<PlannedTable> Finish(Mark from = {}) const { return Finish(from, mark()); }
  // The same for what was planned between two marks only (e.g. one request of a group commit, whose inverse
  // undoes just that request).
  std::vector<PlannedTable> Finish(Mark from, Mark to) const;
  // The forward ops planned between two marks, rendered per table ("*table ... COMMIT"), in order of first touch.
  std::vector<TableCommit> Render(Mark from, Mark to) const;

 private:
  struct Entry {
    Family family = Family::kIPv4;
    std::string table;
    std::optional<backend::TableOp> op;     // the forward op; nullopt for a table reset (flush_table batch)
    std::vector<backend::TableOp> inverse;  // undoes `op`, run in order
    std::optional<Table> preimage;          // the table before a reset, or before it was created (nullopt table)
    bool created = false;                   // the table was absent from the snapshot and was created here
    bool zeroes = false;                    // op is -Z: its inverse cannot give the counters back
    bool with_counters = false;             // op comes from a batch with counters
  };
  // The simulated table, created (as the kernel does on first use) when absent; records the creation.
  Result<Table*> Touch(Family family, const std::string& table);
  Status Emit(Family family, Table& table, backend::TableOp op, bool with_counters);
  void Undo(const Entry& entry);

  backend::Backend* backend_;
  bool by_position_ = false;
  Snapshots state_;
  ShapeIndex shapes_;  // see Emit
  std::vector<Entry> journal_;
  Status poisoned_;  // set when an undo failed: nothing planned can be trusted, every later call fails
};

// Plans `txn` against `snapshots` (which must hold every family InvolvedFamilies names):
// - ops are grouped by (family, table) in order of first appearance, keeping op order within a table; tables
//   whose batch zeroes counters are moved after the others (stable), so a failure of a later table can roll back
//   everything except zeroed counters as often as possible;
// - rules (and `expect` rules) are validated (ValidateRule) and canonicalized with one backend.Canonicalize call
//   per table; a rule equals another when their canonical specs (FormatRuleSpec) are equal;
// - position-based ops are rendered race-free: DeleteAt N (expecting S, or S = the snapshot's rule at N) becomes
//   `-C CHAIN S` + `-D CHAIN S`, only when the first occurrence of S in the chain is at N (else
//   FailedPrecondition); Replace N becomes `-C CHAIN old` + `-D CHAIN old` + `-I CHAIN N new` under the same rule;
// - DeleteChain of a referenced chain fails with FailedPrecondition listing every referencing rule (table, chain,
//   index, spec); with `cascade` those rules are deleted by spec and the chain is flushed in the same batch.
// Error codes: InvalidArgument (bad names, rule, policy value, target placement, insert index, op on a builtin
// chain that needs a user chain), NotFound (chain/rule/index missing), AlreadyExists (chain exists),
// FailedPrecondition (chain not empty/referenced, snapshot moved, table unrepresentable). Messages start with the
// op: "op 3 (delete_chain ipv4 filter FOO): ...".
// Equivalent to BatchPlanner(&backend, snapshots).AddTransaction(txn) then Finish(), with ops by position sent as
// such also on a commits_plan_snapshot backend (the snapshots must then come from LockedCommit's read).
Result<std::vector<PlannedTable>> PlanTransaction(backend::Backend& backend, const Transaction& txn,
                                                  Snapshots snapshots);

// Validates a raw batch by simulating it on the snapshot of its table (missing in `snapshot` = fresh table) and
// computes its inverse, without canonicalizing (rules must already be as the kernel prints them). For
// flush_table batches the inverse is the pre-image of the table (FailedPrecondition when the snapshot's table is
// unrepresentable); for --noflush batches it is the guarded inverse described at PlannedTable. Errors name the op
// ("op 4 (-D INPUT -j FOO): ...").
Result<PlannedTable> PlanBatch(const Ruleset& snapshot, backend::TableBatch batch);

// The table of `snapshot` named `table`, or a fresh one (builtin chains, policy ACCEPT) when it is absent.
// InvalidArgument for a table name iptables does not know.
Result<Table> SnapshotTable(const Ruleset& snapshot, const std::string& table);

}  // namespace iptkit::txn

#endif  // IPTKIT_SRC_TXN_PLANNER_H_
