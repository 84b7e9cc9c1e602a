// Internal state of Service, shared by its files (not part of any interface):
//   service.cc     threads, the queue, timers, start-up, answering, publishing, health, reads;
//   plan_item.cc   what one work item changes: planned on the group's simulated kernel (txn::BatchPlanner) and on
//                  the owners' working state, each owner through the pure OwnerPlanner (owner_planner.h);
//   writer.cc      the drain: plan a group of items, commit it, bisect kernel rejections, retry conflicts, persist.
#ifndef IPTKIT_SRC_SERVICE_SERVICE_INTERNAL_H_
#define IPTKIT_SRC_SERVICE_SERVICE_INTERNAL_H_

#include <chrono>
#include <condition_variable>
#include <deque>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "src/service/owned_sets.h"
#include "src/service/owner_planner.h"
#include "src/service/rollback.h"
#include "src/service/service.h"
#include "src/txn/planner.h"

namespace iptkit::service {

using Clock = std::chrono::steady_clock;

// The principal of the daemon's own work in the audit log.
inline constexpr const char* kDaemonPrincipal = "iptkitd";

// A commit that failed because another writer changed the ruleset meanwhile is planned again on a fresh read, up
// to this many times in all (docs/daemon.md "What happens to a request"); then the requests fail with Aborted.
inline constexpr int kMaxCommitAttempts = 10;
// A group of several items that met that many conflicts in a row goes on in halves.
inline constexpr int kBisectConflictsAfter = 3;

// Collectors registered with a Metrics registry may run after the service is gone; they reach it through this.
struct CollectorLink {
  std::mutex mu;
  Service* service = nullptr;  // null once the service is destroyed
};

// What one work item writes to the store once its kernel change is committed.
struct StoreEffects {
  std::vector<store::ManagedRule> upserts;
  std::vector<store::ManagedRuleKey> removals;
  std::map<std::string, std::optional<DesiredState>> documents;  // owner → new document (nullopt: none)
  std::optional<store::ConfirmRecord> new_confirm;
  struct Resolution {
    std::string id;
    store::ConfirmRecord::State state;
    std::string message;
  };
  std::optional<Resolution> resolve_confirm;
  bool empty() const {
    return upserts.empty() && removals.empty() && documents.empty() && !new_confirm && !resolve_confirm;
  }
};

// One store write: effects, owners left empty (deleted), and the audit entry.
struct StoreRecord {
  StoreEffects effects;
  std::set<std::string> emptied;
  std::optional<store::AuditEntry> audit;
  // ChangeRequest::store_meta of a request that succeeded (nullopt value: delete the key).
  std::vector<std::pair<std::string, std::optional<std::string>>> meta;
};

// One unit of work for the writer: a client's request, or the daemon's own (TTL expiry of one owner's rules, a
// confirm rollback, one owner's reconcile or drift check). Internal items have no reply unless someone waits for
// them (start-up).
struct WorkItem {
  enum class Kind { kRequest, kExpire, kRollback, kReconcile };
  Kind kind = Kind::kRequest;
  ChangeRequest request;                      // kRequest; principal/action/request_id also for the others
  std::string owner;                          // kExpire, kReconcile: the owner it is about
  std::vector<store::ManagedRuleKey> expire;  // kExpire
  std::string confirm_id;                     // kRollback
  bool drift_check = false;                   // kReconcile: count what it repairs as drift
  bool repair = false;  // made by a drain to repair owned state after imperative ops (planned per attempt)
  bool skip_audit = false;
  // Who waits for the outcome (empty: nobody): Submit's promise, SubmitAsync's callback, start-up. Called once.
  Service::Reply reply;

  bool internal() const { return kind != Kind::kRequest; }

  // ---- Filled while the writer handles it ----
  bool final = false;  // status/result are settled (answered after persisting)
  Status status;
  ChangeResult result;
  txn::PlanMark from, to;  // its part of the planner's journal
  StoreEffects effects;    // persisted after the kernel commit
  std::set<std::string> deleted_owners;
  std::set<std::string> touched_owners;                        // owners whose state this item changed (to re-plan)
  std::set<std::string> rule_ids;                              // ids of the managed rules it added or removed
  std::set<std::pair<Family, std::string>> imperative_tables;  // tables its imperative ops changed
  std::vector<std::string> repaired_owners;                    // kReconcile: owners whose state had to be changed
  // Owners this internal item could not plan (their error): reported and retried with backoff, while the item
  // itself did what it could without them (kExpire, kRollback) or failed (kReconcile).
  std::map<std::string, Status> owner_failures;
  std::string diff;  // its committed restore text
};

// The work of one pass of the writer (Execute) whose kernel changes are committed and whose records wait to be
// stored (docs/daemon.md "Durability"). Its items are answered once the records are stored (Settle); when that
// fails and a client's change is among them, its commits are undone in the kernel, newest first, and the owners'
// and confirms' state in memory goes back to what it was before it.
struct PendingBatch {
  std::vector<std::unique_ptr<WorkItem>> items;  // every item to answer (the drains' repairs included)
  std::vector<StoreRecord> records;              // in commit order, then the audit entries of failed items
  // Per successful commit, in commit order: the inverse of each table batch (in the order committed).
  std::vector<std::vector<backend::TableBatch>> undo;
  bool clients = false;  // a client's committed change is among the records
  // Values before the batch first changed them (nullopt: absent).
  std::map<std::string, std::optional<OwnerState>> owners_before;
  std::map<std::string, std::optional<store::ConfirmRecord>> confirms_before;
};

// The thread that writes a PendingBatch's records while the writer goes on with the next pass (one at a time).
class StoreWriter {
 public:
  // `on_done` is called on the thread after each write (the writer's wake-up).
  explicit StoreWriter(std::function<void()> on_done);
  ~StoreWriter();  // waits for the write in progress
  StoreWriter(const StoreWriter&) = delete;
  StoreWriter& operator=(const StoreWriter&) = delete;
  // Starts `write` on the thread; the one started before must have been Wait()ed for.
  void Start(std::function<Status()> write);
  // Waits for the write Start began and returns its status.
  Status Wait();
  // Whether the write Start began has finished (Wait returns at once).
  bool Done();

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::function<void()> on_done_;
  std::function<Status()> job_;
  bool busy_ = false;  // a job was started and not waited for
  bool done_ = false;  // ... and it finished with status_
  Status status_;
  bool exit_ = false;
  std::thread thread_;
};

struct Service::Impl {
  Options options;
  // SetCounterFeed's feed (empty: CollectMetrics reads the kernel).
  std::mutex feed_mu;
  Service::CounterFeed counter_feed;
  store::Store* store = nullptr;
  Metrics* metrics = nullptr;
  EventBus* events = nullptr;

  // ---- Writer thread (only it touches these, except where a mutex is named) ----
  std::unique_ptr<backend::Backend> writer_backend;
  std::unique_ptr<OwnerPlanner> owner_planner;
  std::unique_ptr<OwnedSets> owned_sets;  // made on first use (owners with sets): the served netns's
  OwnedSets& OwnedSetsFor() {
    if (!owned_sets) owned_sets = std::make_unique<OwnedSets>(options.firewall.netns);
    return *owned_sets;
  }
  std::thread writer;
  int64_t next_seq = 1;                // seq of the next new managed rule
  size_t last_drain_requests = 0;      // client requests the writer took last time (group_wait's target) ...
  size_t previous_drain_requests = 0;  // ... and the time before
  std::map<Family, Ruleset> expected;  // what the kernel holds after our last commit (foreign change detection)
  txn::BatchPlanner::ShapeIndex expected_shapes;  // the planner's shape index for `expected`
  // Tables unrepresentable as of the last trusted read, with the reason (see ReadState).
  std::map<std::pair<Family, std::string>, std::string> unrepresentable;
  bool backend_vouches = false;     // Backend::Unchanged was true after some read
  std::set<Family> fresh_expected;  // families of `expected` read just now (after a race): planned on without asking
  Clock::time_point next_drift;
  // Internal work that failed, retried with backoff: "expire:<owner>", "rollback:<id>", "owner:<owner>" (its
  // reconcile), "store" (writing the pending records).
  struct Retry {
    int failures = 0;
    Clock::time_point at;
    Status status;
  };
  std::map<std::string, Retry> retries;
  // State records (without their audit entries) of internal work committed while the store could not be
  // written, oldest first. Their audit entries wait in the store's backlog (Store::QueueAudit).
  std::deque<StoreRecord> pending_records;
  bool audit_queued = false;  // KeepPending queued audit entries that no write has stored yet
  // Items a drain made itself (repairs); they live until the drain's items are answered.
  std::vector<std::unique_ptr<WorkItem>> extras;
  // The pass being executed (its drains add their commits and records to it), and the one before it whose records
  // the store writer is writing (nullptr: none).
  PendingBatch* current_batch = nullptr;
  std::unique_ptr<PendingBatch> in_flight;
  size_t in_flight_pending = 0;        // records of pending_records in its write
  bool in_flight_flush_audit = false;  // its write stores the audit backlog
  size_t in_flight_clients = 0;        // client requests it answers
  std::unique_ptr<StoreWriter> store_writer;

  // ---- Shared with readers: guarded by state_mu ----
  mutable std::mutex state_mu;
  std::map<std::string, OwnerState> owners;
  std::map<std::string, store::ConfirmRecord> confirms;  // pending ones

  // ---- Health facts: guarded by health_mu ----
  mutable std::mutex health_mu;
  Status load_status;                            // loading the store at start-up
  std::map<std::string, Status> failing_owners;  // owner → why its state cannot be applied
  std::map<std::string, Status> failing_timers;  // "expire:<owner>", "rollback:<id>" → why
  Status store_status;                           // the last store write, when it failed
  size_t pending_count = 0;                      // pending_records.size()
  // The backend's last commit (and last lock/read), when it failed for a reason that is not a request's own
  // (Unavailable, Internal, PermissionDenied: a missing tool, the lock, permissions); cleared by a success of the
  // same kind.
  Status backend_status;
  Status read_status;

  // ---- Queue: guarded by queue_mu ----
  std::mutex queue_mu;
  std::condition_variable queue_cv;
  std::deque<std::unique_ptr<WorkItem>> queue;
  bool stopping = false;
  // Clients' requests submitted and not answered yet (queued, being planned, or waiting for their store write),
  // and the most there were at once since the writer last took requests: how many clients are sending. The group
  // commit window waits for at most that many to be queued (no more can come while they wait for their answers).
  size_t outstanding = 0;
  size_t peak_outstanding = 0;
  // Submit wakes the writer only once the queue holds this many: the writer sets it to what its wait waits for
  // (a group commit's cohort), so that 64 clients wake it once per pass instead of once per request (each wake-up
  // of a waiting thread costs a context switch, and on a virtual machine an interrupt, on the 2 CPUs the clients
  // and the daemon share).
  size_t wake_at = 1;

  // ---- Start-up ----
  mutable std::mutex startup_mu;
  std::condition_variable startup_cv;
  bool started = false;
  Status startup_status;

  // ---- Reader ----
  std::mutex reader_mu;
  std::unique_ptr<Firewall> reader;

  std::shared_ptr<CollectorLink> collector_link;

  // ---- Metrics owned by the service ----
  Metrics::Counter* commits = nullptr;           // {result}
  Metrics::Histogram* batch_requests = nullptr;  // requests per commit
  Metrics::Histogram* commit_seconds = nullptr;
  // Time a drain attempt spent per phase on the writer thread: read, plan, commit (kernel), store.
  Metrics::Histogram* drain_phase_seconds = nullptr;  // {phase}
  Metrics::Counter* commit_retries = nullptr;         // conflicts retried inside the daemon
  Metrics::Counter* drift_repairs = nullptr;          // {owner}
  Metrics::Counter* foreign_changes = nullptr;
  Metrics::Counter* ttl_expiries = nullptr;
  Metrics::Counter* confirm_rollbacks = nullptr;  // {result}
  Metrics::Counter* changes = nullptr;            // {action, result}
  Metrics::Gauge* queue_depth = nullptr;
  Metrics::Counter* owner_failures = nullptr;  // {owner}
  Metrics::Gauge* owners_failing = nullptr;
  Metrics::Counter* store_failures = nullptr;
  Metrics::Gauge* store_pending = nullptr;
  Metrics::Gauge* healthy = nullptr;

  // ---- service.cc ----
  void WriterMain();
  void RunStartup();
  // Plans, commits, persists and answers `items` (the writer's drain), all before it returns (start-up).
  void Process(std::vector<std::unique_ptr<WorkItem>> items);
  // Plans and commits `items` into current_batch (their records and undo collected there, to be stored and
  // answered by Settle). Nested calls (RunDueDeadlines) add to the same batch.
  void Execute(std::vector<std::unique_ptr<WorkItem>> items);
  // The pipeline of WriterMain: waits for the in-flight batch's store write and settles it. `next` is the batch
  // executed meanwhile (planned on top of it): when the in-flight batch's clients' changes are undone, so is
  // `next` (settled here, failed; then the call returns true and `next` must not be stored).
  bool FinishInFlight(PendingBatch* next);
  // Hands `batch` to the store writer (or settles it at once when it has nothing to store).
  void StartPersist(std::unique_ptr<PendingBatch> batch);
  // The store write of `batch` ended with `persisted`: answers its items; on failure keeps the records of the
  // daemon's own work in memory, or, when a client's change is among them, undoes `batch` (and `next` first, see
  // FinishInFlight) and fails its clients.
  void Settle(PendingBatch& batch, const Status& persisted, PendingBatch* next = nullptr);
  // Publishes and answers the items of a settled batch (NoteOutcomes is the writer's, before). Any thread: on
  // the store writer's after a successful write.
  void Answer(PendingBatch& batch);
  void Publish(const std::vector<WorkItem*>& items);
  // Outcomes of internal work: failures are retried with backoff and reported, successes clear them.
  // `internal`: of the daemon's own items (failures retried and reported), else of the clients' requests.
  void NoteOutcomes(const std::vector<WorkItem*>& items, bool internal);
  void NoteInternalOutcomes(PendingBatch& batch);
  void NoteOwner(const std::string& owner, const Status& status, const std::string& action);
  void NoteBackend(const Status& status, bool commit);
  void NoteStore(const Status& status);
  void UpdateHealthGauge();
  // The daemon's own work that is due: TTL expiries and confirm rollbacks, then (unless `deadlines_only`) the
  // owners' drift checks and reconcile retries.
  std::vector<std::unique_ptr<WorkItem>> DueTimers(bool deadlines_only = false);
  // While a drain of client work retries after conflicts: the TTL expiries and confirm rollbacks that fell due
  // meanwhile, planned, committed and answered now (Process), so that no queue of client work and no run of
  // conflicts holds them up. Not nested; called between attempts, with no backend lock held.
  void RunDueDeadlines();
  bool running_deadlines = false;
  std::optional<Clock::time_point> NextTimer();
  bool RetryDue(const std::string& key, Clock::time_point now) const;

  // ---- plan_item.cc ----
  // Plans one item on top of the planner and the owners' working state; on error both are as before and the
  // caller marks the item failed. `undo` receives the owners' values before the item changed them. With
  // defer_owner the owners a request touched are not planned (the drain plans them once for several requests).
  Status PlanItem(WorkItem& item, txn::BatchPlanner& planner, std::map<std::string, OwnerState>& working,
                  std::map<std::string, std::optional<OwnerState>>& undo, bool defer_owner);
  Status PlanRequest(WorkItem& item, txn::BatchPlanner& planner, std::map<std::string, OwnerState>& working,
                     std::map<std::string, std::optional<OwnerState>>& undo, bool defer_owner);
  Status PlanExpire(WorkItem& item, txn::BatchPlanner& planner, std::map<std::string, OwnerState>& working,
                    std::map<std::string, std::optional<OwnerState>>& undo);
  Status PlanRollback(WorkItem& item, txn::BatchPlanner& planner, std::map<std::string, OwnerState>& working);
  Status PlanReconcile(WorkItem& item, txn::BatchPlanner& planner, std::map<std::string, OwnerState>& working);
  // One owner through the OwnerPlanner; its steps and warnings go to `result` (when given).
  Status PlanOwner(const std::string& owner, const OwnerState& state, txn::BatchPlanner& planner, ChangeResult* result);
  // The same for an owner whose state changed by `changes` (managed rules added, removed or refreshed) since it
  // was planned: only those are planned (OwnerPlanner::PlanChanges) while the owner is not failing and they can be,
  // else (or with `changes` null: the owner is new) the owner in full (PlanOwner). A rule of the owner that another
  // writer moved or removed is then repaired by its drift check, not by every client's add (docs/daemon.md "Drift").
  Status PlanOwnerChanges(const std::string& owner, const std::vector<OwnerPlanner::ManagedChange>* changes,
                          const OwnerState& state, txn::BatchPlanner& planner, ChangeResult* result);
  // Where an unowned append/insert lands in a builtin chain: below every owner's `first` hooks, above the `last`
  // ones (txn::BatchPlanner::Placement); `warnings` gets a line when that is not where the request asked.
  txn::BatchPlanner::Placement UnownedPlacement(std::vector<std::string>* warnings) const;
  void WarmCanonicalCache(const std::vector<WorkItem*>& items);

  // ---- writer.cc ----
  // Plans, commits and persists `items` until every one is final (answered after persisting): conflicts with other
  // writers are retried on a fresh read, kernel rejections bisected. With `repairs`, owned state that the group's
  // imperative ops disturb is repaired in the same commit.
  // `budget`: commit attempts left to the items (kMaxCommitAttempts in all). With `optimistic` the first attempt
  // plans on the simulation of the last drain without asking the backend whether it is current (a conflict then
  // reads); only for work whose ops are guarded by their specs (TTL expiry, confirm rollback).
  void Drain(const std::vector<WorkItem*>& items, bool repairs, int budget = kMaxCommitAttempts,
             bool optimistic = false);
  struct PlannedGroup {
    std::vector<WorkItem*> committing;               // planned into the planner, in order
    std::vector<std::unique_ptr<WorkItem>> repairs;  // made for this attempt (also in committing)
    bool planned_repairs = false;                    // repairs were planned (even if none changed anything)
  };
  // Plans every open item of `items` on `planner`/`working`; items that fail validation (or dry runs) are final.
  PlannedGroup PlanGroup(const std::vector<WorkItem*>& items, txn::BatchPlanner& planner,
                         std::map<std::string, OwnerState>& working, bool repairs);
  // A commit of `committing` was rejected (not by a race): finds the guilty items by halves.
  void Bisect(const std::vector<WorkItem*>& committing, const Status& rejected, bool planned_repairs);
  // The kernel as the writer plans on it: its own simulation when the backend vouches that nothing changed, else a
  // fresh read (retried when the dump raced a change; a table newly reported unrepresentable is read again).
  // Families `needed` are read unless the backend vouches for our simulation; the others keep the simulation.
  // Tables that this read found unrepresentable and the last one did not go to `newly_unrepresentable`.
  Result<txn::Snapshots> ReadState(txn::BatchPlanner::ShapeIndex* shapes, const std::set<Family>& needed,
                                   std::set<std::pair<Family, std::string>>* newly_unrepresentable);
  // Reads `families` to plan on (retried when a dump raced a change). `vouched`: per family, whether the backend
  // vouches that nothing changed during or since the read (Backend::Unchanged, asked once, right after it). On a
  // backend with handles that vouches, a family it does not vouch for is read again (bounded): its answer means
  // another writer committed after the read, and the backend's own snapshot, on which its commit resolves the
  // plan's positions, then holds that change while the read does not.
  Result<txn::Snapshots> ReadToPlan(const std::vector<Family>& families, std::map<Family, bool>* vouched);
  // Applies the trusted marks of unrepresentable tables to a read of `read` (see writer.cc); `vouched` as
  // ReadToPlan gives it.
  void TrustMarks(txn::Snapshots& snapshots, const std::vector<Family>& read, const std::map<Family, bool>& vouched,
                  std::set<std::pair<Family, std::string>>* newly_unrepresentable);
  // The families a group must see as they are now: the ones its items name, and those owners have state in.
  std::set<Family> NeededFamilies(const std::vector<WorkItem*>& items) const;
  void CheckForeignChanges(const txn::Snapshots& snapshots);
  // Records of the items (effects and audit entries) and the owners left empty.
  std::vector<StoreRecord> Records(const std::vector<WorkItem*>& items, const std::set<std::string>& emptied);
  // Writes the pending records, then `records`, in one store transaction; on success nothing is pending.
  Status WriteRecords(const std::vector<StoreRecord>& records);
  // What WriteRecords does, split for the store writer: the write itself (any thread; `pending` is a copy of the
  // pending records, `flush_audit` whether audit entries were queued) and the bookkeeping after it (writer thread:
  // `pending_written` records of pending_records were part of the write).
  static Status WriteRecordsTo(store::Store& store, const std::function<Status()>& hook,
                               const std::deque<StoreRecord>& pending, const std::vector<StoreRecord>& records,
                               bool flush_audit);
  void RecordsWritten(size_t pending_written, bool flushed_audit);
  // Keeps records in memory (bounded) until the store can be written again.
  void KeepPending(std::vector<StoreRecord> records);
  std::optional<store::AuditEntry> AuditOf(const WorkItem& item, int64_t now);
};

// "t-" + 16 hex digits from getrandom(2): transaction ids.
std::string NewTransactionId();

// The action a work item is audited as: the request's, or "ttl_expire", "confirm_rollback", "drift_repair",
// "reconcile".
std::string ActionOf(const WorkItem& item);

// The daemon's own work item of `kind`, audited as `action`.
std::unique_ptr<WorkItem> InternalItem(WorkItem::Kind kind, const std::string& action);

}  // namespace iptkit::service

#endif  // IPTKIT_SRC_SERVICE_SERVICE_INTERNAL_H_
