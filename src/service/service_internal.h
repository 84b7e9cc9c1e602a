// Internal state of Service shared by service.cc (threads, queue, reads) and writer.cc (planning and committing a
// drain of the queue). Not part of any interface.
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

#include "src/service/rollback.h"
#include "src/service/service.h"
#include "src/txn/planner.h"

namespace iptkit::service {

// The principal of the daemon's own work in the audit log.
inline constexpr const char* kDaemonPrincipal = "iptkitd";

// Collectors registered with a Metrics registry may run after the service is gone; they reach it through this.
struct CollectorLink {
  std::mutex mu;
  Service* service = nullptr;  // null once the service is destroyed
};

// One unit of work for the writer: a client's request, or the daemon's own (TTL expiry, confirm rollback, owner
// reconcile / drift check). Internal items have no promise unless someone waits for them (start-up).
struct WorkItem {
  enum class Kind { kRequest, kExpire, kRollback, kReconcile };
  Kind kind = Kind::kRequest;
  ChangeRequest request;                      // kRequest; principal/action/request_id also for the others
  std::vector<store::ManagedRuleKey> expire;  // kExpire
  std::string confirm_id;                     // kRollback
  std::set<std::string> reconcile_owners;     // kReconcile; empty = every owner
  bool drift_check = false;                   // kReconcile: count what it repairs as drift
  bool repair = false;  // made by a drain to repair owned state after imperative ops (planned per attempt)
  bool skip_audit = false;
  std::optional<std::promise<Result<ChangeResult>>> promise;

  // ---- Filled while the writer handles it ----
  bool final = false;  // status/result are settled (answered after persisting)
  Status status;
  ChangeResult result;
  txn::PlanMark from, to;  // its part of the planner's journal
  // Store effects, persisted after the kernel commit.
  std::vector<store::ManagedRule> upserts;
  std::vector<store::ManagedRuleKey> removals;
  std::map<std::string, std::optional<DesiredState>> documents;  // owner → new document (nullopt: none)
  std::set<std::string> deleted_owners;
  std::optional<store::ConfirmRecord> new_confirm;
  struct Resolution {
    std::string id;
    store::ConfirmRecord::State state;
    std::string message;
  };
  std::optional<Resolution> resolve_confirm;
  std::set<std::string> touched_owners;                        // owners whose state this item changed (to re-plan)
  std::set<std::string> rule_ids;                              // ids of the managed rules it added or removed
  std::set<std::pair<Family, std::string>> imperative_tables;  // tables its imperative ops changed
  std::vector<std::string> repaired_owners;                    // kReconcile: owners whose state had to be changed
  std::string diff;                                            // its committed restore text
};

struct Service::Impl {
  Options options;
  store::Store* store = nullptr;
  Metrics* metrics = nullptr;
  EventBus* events = nullptr;

  // ---- Writer thread (only it touches these, except where a mutex is named) ----
  std::unique_ptr<backend::Backend> writer_backend;
  std::thread writer;
  int64_t next_seq = 1;                // seq of the next new managed rule
  size_t last_drain_requests = 0;      // client requests the writer took last time (group_wait's target) ...
  size_t previous_drain_requests = 0;  // ... and the time before
  std::map<Family, Ruleset> expected;  // what the kernel holds after our last commit (foreign change detection)
  txn::BatchPlanner::ShapeIndex expected_shapes;  // the planner's shape index for `expected`
  std::chrono::steady_clock::time_point next_drift;
  // Internal work that failed: not retried before this time (keyed "expire", "rollback:<id>").
  std::map<std::string, std::chrono::steady_clock::time_point> backoff;
  // Per owner, its document prepared (canonical, tagged) per family it covers, valid while the document is `source`.
  struct PreparedDocument {
    bool valid = false;
    std::optional<DesiredState> source;
    std::map<Family, DesiredState> states;
  };
  std::map<std::string, PreparedDocument> prepared_documents;
  // Every managed rule canonical with its tag (as the kernel prints it), made once per rule and id: planning an
  // owner then costs no parsing or canonicalization of its other managed rules.
  std::map<store::ManagedRuleKey, std::pair<std::string, Rule>> tagged_managed;  // key → (rule_id, rule)
  Status PrepareManagedRules(const OwnerState& state);
  // Items a drain made itself (repairs); they live until the drain's items are answered.
  std::vector<std::unique_ptr<WorkItem>> extras;

  // ---- Shared with readers: guarded by state_mu ----
  mutable std::mutex state_mu;
  std::map<std::string, OwnerState> owners;
  std::map<std::string, store::ConfirmRecord> confirms;  // pending ones

  // ---- Queue: guarded by queue_mu ----
  std::mutex queue_mu;
  std::condition_variable queue_cv;
  std::deque<std::unique_ptr<WorkItem>> queue;
  bool stopping = false;

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
  Metrics::Counter* drift_repairs = nullptr;  // {owner}
  Metrics::Counter* foreign_changes = nullptr;
  Metrics::Counter* ttl_expiries = nullptr;
  Metrics::Counter* confirm_rollbacks = nullptr;  // {result}
  Metrics::Counter* changes = nullptr;            // {action, result}
  Metrics::Gauge* queue_depth = nullptr;

  // writer.cc
  void WriterMain();
  void RunStartup();
  // Plans, commits, persists and answers `items` (the writer's drain).
  void Process(std::vector<std::unique_ptr<WorkItem>> items);
  void Drain(std::vector<WorkItem*> items, int depth);
  // Plans one item on top of the planner; on error the planner must be rolled back by the caller, `working` is
  // restored already. `undo` receives the owners' values before the item changed them.
  // With defer_owner the owners it touched are not planned (the drain plans them once for several requests).
  Status PlanItem(WorkItem& item, txn::BatchPlanner& planner, std::map<std::string, OwnerState>& working,
                  std::map<std::string, std::optional<OwnerState>>& undo, bool defer_owner);
  Status PlanOwner(const std::string& owner, const OwnerState& state, txn::BatchPlanner& planner, ChangeResult* result);
  Status PlanRollback(WorkItem& item, txn::BatchPlanner& planner, std::map<std::string, OwnerState>& working);
  void WarmCanonicalCache(const std::vector<WorkItem*>& items);
  void CheckForeignChanges(const txn::Snapshots& snapshots);
  // One store transaction: the effects of the successful items, owners left empty removed, an audit entry per
  // item.
  Status Persist(const std::vector<WorkItem*>& items, const std::set<std::string>& emptied);
  Status AppendAudit(store::Store::Tx& tx, const WorkItem& item, int64_t now);
  void Publish(const std::vector<WorkItem*>& items);
  std::vector<std::unique_ptr<WorkItem>> DueTimers();
  std::optional<std::chrono::steady_clock::time_point> NextTimer();
};

// "t-" + 16 hex digits from getrandom(2): transaction ids.
std::string NewTransactionId();

}  // namespace iptkit::service

#endif  // IPTKIT_SRC_SERVICE_SERVICE_INTERNAL_H_
