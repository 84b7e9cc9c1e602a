// SetService: the daemon's IP sets (docs/rest.md "Sets"): the library's Ipsets (include/iptkit/ipset.h) of the
// served network namespace, with what the daemon adds around each change — an audit record (principal, request id,
// request, result), an event (`set_changed`, and `set_progress` during bulk loads and syncs), metrics (entries,
// memory and references per set, scraped from the kernel; operations by op and result), and ordering between
// changes of the same daemon.
//
// Sets are not written by the rule writer: the kernel applies each ipset command atomically on its own, so set
// operations run on the caller's thread, concurrently. Entry adds, deletes and flushes run side by side; Load,
// Sync, Swap, Rename, Destroy and Create take the sets exclusively (an add that raced a Load's temporary copy would
// be lost by its swap). A cascading destroy deletes the referencing rules through the rule writer first (the
// caller's submit function, which checks the caller's scopes), then destroys the set, retrying up to 1 s while the
// kernel still holds the reference of a rule just deleted; when that still fails, the error says which rules were
// deleted.
// Audit records are stored by group commit (Store::StoreAudit) before the answer: many concurrent single adds share
// one SQLite transaction and one fsync. Concurrent entry adds are also collected into one batch for the kernel
// (Ipsets::AddEach): the first caller writes what is queued and the records of all of it, the others wait once.
// Thread-safety: every method may be called from any thread at once.
//
//   SetService sets("blue", store, &events, &metrics);
//   SetCaller who{"token:ids", "r-1", R"({"entry":"192.0.2.7","timeout":600})"};
//   Status added = sets.Add(who, "blocklist", "192.0.2.7", {.timeout = 600}, /*dry_run=*/false);
#ifndef IPTKIT_SRC_SERVICE_SETS_H_
#define IPTKIT_SRC_SERVICE_SETS_H_

#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "iptkit/ipset.h"
#include "iptkit/status.h"
#include "src/service/events.h"
#include "src/service/metrics.h"
#include "src/service/service.h"
#include "src/store/store.h"

namespace iptkit::service {

// Who asks, for the audit log and events.
struct SetCaller {
  std::string principal;
  std::string request_id;
  std::string request_json;  // the request as received (kept as the audit record's request)
};

// A rule a cascading destroy deleted (or, dry, would delete).
struct SetRuleRef {
  Family family = Family::kIPv4;
  std::string table;
  std::string chain;
  Rule rule;
};

struct SetDestroyReport {
  std::vector<SetRuleRef> rules_deleted;  // by cascade
};

class SetService {
 public:
  // Submits a rule change on behalf of the caller (the REST layer's SubmitChange: scopes, store check, writer).
  using SubmitFn = std::function<Result<ChangeResult>(ChangeRequest)>;

  // `netns` as Ipsets takes it ("" = the daemon's own). `service` (for a cascade's rule reads), `store`, `events`,
  // `metrics` must outlive this object. Registers a metrics collector (unregistered by the destructor).
  SetService(std::string netns, Service* service, store::Store* store, EventBus* events, Metrics* metrics);
  ~SetService();
  SetService(const SetService&) = delete;
  SetService& operator=(const SetService&) = delete;

  // ---- Reads ----
  Result<std::vector<SetInfo>> List(bool with_entries) const;
  Result<SetInfo> Get(std::string_view name, bool with_entries) const;
  Result<bool> Test(std::string_view name, std::string_view elem) const;
  // The rules (both families, every table) that use the set.
  Result<std::vector<SetRuleRef>> ReferencingRules(std::string_view name) const;

  // ---- Changes (each audited; dry runs are checked against the kernel and change nothing, and are not audited) ----
  Status Create(const SetCaller& who, std::string_view name, std::string_view type, const SetOptions& options,
                bool dry_run);
  // FailedPrecondition (reason "referenced") while rules use the set, unless `cascade`: then those rules are
  // deleted first through `submit` (one transaction), then the set.
  Result<SetDestroyReport> Destroy(const SetCaller& who, std::string_view name, bool cascade, bool dry_run,
                                   const SubmitFn& submit);
  // How many entries the set held.
  Result<size_t> Flush(const SetCaller& who, std::string_view name, bool dry_run);
  Status Rename(const SetCaller& who, std::string_view from, std::string_view to, bool dry_run);
  Status Swap(const SetCaller& who, std::string_view a, std::string_view b, bool dry_run);
  // Re-adding refreshes the timeout and replaces the comment (counters kept), unless options.no_refresh
  // (AlreadyExists).
  // `who` is taken (its strings move into the audit record).
  Status Add(SetCaller who, std::string_view name, std::string_view elem, const SetAddOptions& options, bool dry_run);
  Status Delete(const SetCaller& who, std::string_view name, std::string_view elem, bool dry_run);
  // Bulk changes; `options.progress` is wrapped: progress is also published as `set_progress` events.
  Result<SetChangeReport> Load(const SetCaller& who, std::string_view name, const std::vector<SetEntrySpec>& entries,
                               SetLoadOptions options);
  Result<SetChangeReport> Sync(const SetCaller& who, std::string_view name, const std::vector<SetEntrySpec>& entries,
                               SetSyncOptions options);

  // iptkitd_set_entries, iptkitd_set_memory_bytes, iptkitd_set_references per set (gauges), read from the kernel
  // at scrape time. Nothing when the kernel's ip_set module is not loaded (a scrape never loads it).
  std::vector<Metrics::Family> CollectMetrics() const;

  const Ipsets& ipsets() const { return sets_; }

 private:
  struct CollectorLink;
  // Audits the outcome (and counts it); publishes `set_changed` when ok; returns `status`.
  Status Record(const SetCaller& who, const std::string& op, std::string_view set, const Status& status,
                const std::string& diff, nlohmann::json event_data);
  std::function<void(const SetProgress&)> ProgressPublisher(const SetCaller& who, const std::string& op,
                                                            std::string_view set,
                                                            std::function<void(const SetProgress&)> user) const;

  // Concurrent entry adds are collected into batches: one caller at a time (the leader) takes the open batch,
  // writes it with Ipsets::AddEach, stores its audit records with one group commit (Store::StoreAudit), offers the
  // lead to the batch that gathered meanwhile (one of its callers is woken for it) and wakes the callers of its own
  // batch with one futex wake (no caller is woken for another batch).
  struct PendingAdd;
  struct AddBatch;
  void LeadAdds();
  void StoreAddBatch(AddBatch& batch, const std::vector<Status>& results);

  Ipsets sets_;
  Service* service_;
  store::Store* store_;
  EventBus* events_;
  Metrics::Counter* operations_ = nullptr;  // {op, result}
  std::shared_ptr<CollectorLink> link_;
  // Shared: entry adds, deletes, flushes. Exclusive: load, sync, swap, rename, create, destroy.
  mutable std::shared_mutex mu_;
  std::mutex add_mu_;
  std::shared_ptr<AddBatch> open_batch_;  // guarded by add_mu_: where adds queue (null: none queued)
  bool add_leader_ = false;               // guarded by add_mu_: a caller leads, or the lead is offered to open_batch_
};

}  // namespace iptkit::service

#endif  // IPTKIT_SRC_SERVICE_SETS_H_
