// Service: the daemon's core (docs/daemon.md), independent of HTTP. It owns the writer thread,
// which alone writes netfilter state through its backend: requests are queued, the writer drains the queue and
// plans every queued request on one simulated state (txn::BatchPlanner), each validated against what the requests
// before it leave behind, then commits one batch per table (group commit) and answers every request with its own
// result. A request that fails validation fails alone; when the kernel rejects a commit, the writer bisects the
// batch so that only the guilty requests fail. Nothing is answered before the store holds the change: the store
// write of one pass (one transaction for all its commits) runs on a thread of its own, which answers the pass;
// the writer plans and commits the next pass meanwhile when a full batch is queued, and answers follow commit order.
//
// Besides requests the writer runs timers: managed rules whose TTL passed are removed; commit-confirm
// transactions whose deadline passed unconfirmed are rolled back; every drift interval the owners' state is
// compared with the kernel and repaired (someone ran `iptables -F`, a firewall manager reloaded). At start,
// before serving anything: expired rules are removed, overdue confirms rolled back, and every owner re-applied.
// These duties are independent: each owner is reconciled on its own (one whose state cannot be applied is
// reported and retried with backoff, the others go on), and TTL expiry and confirm rollbacks take effect in the
// kernel even when the store cannot record them (the records wait in memory, bounded). GetHealth() says what is
// failing.
//
// Reads (List, Info, owner diffs, rule counters for metrics) use a second backend (one read at a time) so that a
// long listing never holds up commits.
// Thread-safety: every public method is safe to call from any thread; Submit blocks until the writer answered,
// SubmitAsync returns at once and answers through its callback.
//
//   Service::Options options;
//   options.make_backend = [] { return backend::MakeBackend(BackendKind::kAuto, {.netns = "blue"}); };
//   IPTKIT_ASSIGN_OR_RETURN(auto service, Service::Start(std::move(options), store.get(), &metrics, &events));
//   ChangeRequest req;
//   req.principal = "token:ci";
//   req.ops.Append(Family::kIPv4, "filter", "INPUT", rule);
//   Result<ChangeResult> done = service->Submit(std::move(req));
#ifndef IPTKIT_SRC_SERVICE_SERVICE_H_
#define IPTKIT_SRC_SERVICE_SERVICE_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "iptkit/desired.h"
#include "iptkit/firewall.h"
#include "iptkit/model.h"
#include "iptkit/status.h"
#include "iptkit/transaction.h"
#include "src/backend/backend.h"
#include "src/service/events.h"
#include "src/service/metrics.h"
#include "src/service/owner_state.h"
#include "src/store/store.h"

namespace iptkit::service {

// Adds a rule to an owner's managed rules (or refreshes it: the same owner, family, table, chain and canonical
// spec is the same add) and applies the owner's state.
struct ManagedAdd {
  std::string owner;
  Family family = Family::kIPv4;
  std::string table = "filter";
  std::string chain;
  Rule rule;  // without a tag, or with this owner's tag (its id is then kept)
  store::Position position = store::Position::kLast;
  std::optional<int64_t> ttl_seconds;  // > 0; nullopt: permanent
};

// Removes a managed rule (identified as for ManagedAdd) and applies the owner's state. NotFound when absent.
struct ManagedDelete {
  std::string owner;
  Family family = Family::kIPv4;
  std::string table = "filter";
  std::string chain;
  Rule rule;
};

// A chain a planned kernel change touches; chain "" means every chain of the table (a flush or zero of it).
struct ChangedChain {
  Family family = Family::kIPv4;
  std::string table;
  std::string chain;
  friend auto operator<=>(const ChangedChain&, const ChangedChain&) = default;
};

// One request. Its parts are planned in this order: `ops` (imperative, on any rule except owned ones), managed
// adds and deletes, the owner document change, the confirmation. All parts succeed together or the request fails.
struct ChangeRequest {
  // For the audit log.
  std::string principal;
  std::string request_id;
  std::string action;        // "append", "transaction", "put_owner", ...
  std::string request_json;  // the request as received

  Transaction ops;
  std::vector<ManagedAdd> adds;
  std::vector<ManagedDelete> deletes;
  std::optional<DesiredState> put_owner;    // replaces that owner's document
  std::optional<std::string> delete_owner;  // removes the owner: document and managed rules
  // More owner documents and removals in the same request, all or nothing with its other parts (the fleet agent
  // applies the keys of one etcd transaction as one request). Planned after put_owner/delete_owner, in order.
  std::vector<DesiredState> put_owners;
  std::vector<std::string> delete_owners;
  std::optional<std::string> confirm;  // id of a pending commit-confirm transaction

  // Called by the writer, after planning, with every chain the request's kernel change touches (a rule added,
  // deleted or moved there; the chain created, deleted, renamed, flushed, zeroed, its policy set) — also what
  // follows from the current state, such as the chains an owner's new document drops, or the rules a cascading
  // chain delete removes elsewhere. A non-OK Status fails the request and nothing of it is committed. This is how
  // scope checks that depend on the current state are exact.
  std::function<Status(const std::vector<ChangedChain>&)> authorize;

  // The principal may make only TTL-bounded changes (a token with --ttl-max): the writer refuses to refresh a
  // permanent managed rule with a ttl (it would expire) or to delete one (owner_state.h CheckTtlBounded).
  bool ttl_bounded = false;

  // Meta keys of the store (Store::PutMeta) written in the same store transaction as this request's audit record
  // when the request succeeds (a nullopt value deletes the key): the fleet agent's applied etcd revisions.
  std::vector<std::pair<std::string, std::optional<std::string>>> store_meta;

  bool dry_run = false;  // plan only; nothing is committed or stored (the audit log is not written either)
  // Commit now, roll back unless confirmed within this many seconds (> 0). Not with dry_run or confirm.
  std::optional<int64_t> confirm_within_seconds;
};

// A managed rule as it stands after the request.
struct ManagedRuleView {
  store::ManagedRule rule;
  std::optional<int64_t> ttl_remaining_seconds;  // rounded up; nullopt when permanent
};

struct ChangeResult {
  std::string id;  // transaction id: the request id, unique per daemon run
  bool dry_run = false;
  bool changed = false;             // something was committed (or would be, for a dry run)
  std::vector<TableCommit> tables;  // this request's own restore lines, per table
  std::vector<PlanStep> steps;      // owner changes, for people
  std::vector<std::string> warnings;
  std::vector<ManagedRuleView> managed;  // the managed rules this request added or refreshed
  size_t batch_requests = 0;             // how many requests shared the commit (1 = alone)
  std::optional<int64_t> confirm_deadline_ms;
};

// What GET /v1/owners/OWNER shows.
struct OwnerView {
  std::string owner;
  std::optional<DesiredState> document;
  std::vector<ManagedRuleView> managed;
  // The live difference between the kernel and the owner's state (empty when in sync); only from GetOwner.
  std::vector<PlanStep> drift;
};

struct ConfirmView {
  store::ConfirmRecord record;
};

// Whether the daemon does its duties (docs/daemon.md "Health"): what GET /healthz reports.
struct Health {
  enum class State {
    kStarting,   // the start-up sequence has not finished
    kOk,         // nothing below
    kUnhealthy,  // at least one problem
  };
  State state = State::kStarting;
  struct Problem {
    // "startup" (the store could not be loaded), "owner" (an owner's state cannot be applied: its start-up
    // reconcile or drift repair failed; retried with backoff), "timer" (a TTL expiry or confirm rollback failed;
    // retried), "store" (the store cannot be written; the daemon's own records wait in memory), "backend" (the
    // last commit or read failed for a reason that is not the request's: a missing tool, the lock, permissions).
    std::string check;
    std::string subject;  // the owner, "expire:OWNER" or "rollback:ID", "commit" or "read"; "" for the others
    Status status;        // why
    // For people, without rules (an unauthenticated /healthz shows it): "owner app: its state cannot be applied
    // (NOT_FOUND); retried with backoff, the reason is in the audit log", "backend commit: cannot run ...".
    std::string Describe() const;
  };
  std::vector<Problem> problems;
};

class Service {
 public:
  struct Options {
    // Makes a backend for the served netns; called twice (the writer's and the reader's). Required.
    std::function<Result<std::unique_ptr<backend::Backend>>()> make_backend;
    FirewallOptions firewall;  // netns (for Info), wait bound; the backend comes from make_backend
    std::chrono::milliseconds drift_interval = std::chrono::seconds(5);
    size_t max_batch = 1000;  // requests planned into one commit at most
    // Group commit window: when the last commit served several requests and fewer than that many are queued, the
    // writer waits up to this long for more (the answered clients' next requests) before planning, and as long
    // again while more keep coming (at most 4 times in all); 0 = never. Under load commits then carry all clients
    // instead of alternating halves; alone, a request never waits.
    std::chrono::milliseconds group_wait = std::chrono::milliseconds(5);
    // Longest time Start waits for the start-up reconcile before serving anyway (it goes on in the writer).
    std::chrono::milliseconds startup_wait = std::chrono::seconds(60);
    // Test hook: called right before each store write of the writer's records, on the thread that writes them; a
    // status that is not OK fails that write as a failing disk would (nothing of it is stored).
    std::function<Status()> before_store_write;
  };

  // Loads the store, starts the writer and runs the start-up sequence (see above) before returning. `store`,
  // `metrics` and `events` must outlive the service.
  static Result<std::unique_ptr<Service>> Start(Options options, store::Store* store, Metrics* metrics,
                                                EventBus* events);
  ~Service();  // Stop()
  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;

  // Stops the writer after the request being planned; queued requests get Unavailable. Idempotent.
  void Stop();

  // Queues the request and waits for its result. Errors: the request's own (InvalidArgument, NotFound, ...), with
  // the message naming the op (and only this request's ops); Unavailable when stopping, the lock is busy, a tool is
  // missing or the store cannot be written (then nothing of the request stays in the kernel); Aborted when other
  // writers changed the ruleset during each of kMaxCommitAttempts (10) attempts.
  Result<ChangeResult> Submit(ChangeRequest request);
  // The same without waiting: `reply` is called exactly once with what Submit would return, on the thread that
  // answers the request (the writer's or the store writer's, after the change is stored) or, when the request is
  // refused before it is queued, before SubmitAsync returns. It must not block and must not call back into the
  // Service (it runs while a pass's other answers wait): hand the result on (an HTTP server's event loop writes it).
  using Reply = std::function<void(Result<ChangeResult>)>;
  void SubmitAsync(ChangeRequest request, Reply reply);

  // ---- Reads (reader backend) ----
  Result<Ruleset> List(Family family, const std::optional<std::string>& table = std::nullopt,
                       const ListOptions& options = {});
  Result<FirewallInfo> Info();
  // Every owner with its document and managed rules (no drift).
  std::vector<OwnerView> Owners() const;
  // The owner whose document declares the IP set `set`, if any (copies nothing: asked for every set change).
  std::optional<std::string> SetOwner(std::string_view set) const;
  // One owner with the live drift. NotFound for an unknown owner.
  Result<OwnerView> GetOwner(const std::string& owner);
  // Managed rules of every owner, with time left.
  std::vector<ManagedRuleView> ManagedRules() const;
  Result<store::ConfirmRecord> GetConfirm(const std::string& id);

  // Metric families computed at scrape time: managed rules per owner, and the kernel's packet/byte counters of
  // every rule that carries the tag of a known owner (one read with counters per family, or the counter feed's
  // latest sample). Registered as a collector of the Metrics registry by Start.
  std::vector<Metrics::Family> CollectMetrics();
  // Where CollectMetrics takes rule counters from instead of reading the kernel at every scrape: the daemon's
  // counter sampler (counter_sampler.h), so that /metrics and the rates are one feed. A family for which the feed
  // returns nullptr (no sample yet) is read. Thread-safe; the feed is called from scraping threads.
  using CounterFeed = std::function<std::shared_ptr<const Ruleset>(Family)>;
  void SetCounterFeed(CounterFeed feed);

  std::string backend_name() const { return backend_name_; }
  // True once the start-up sequence completed (successfully or not); its error, if any.
  bool started() const;
  Status startup_status() const;
  // What is wrong now, if anything (never blocks on the writer).
  Health GetHealth() const;

  struct Impl;

 private:
  Service() = default;
  std::unique_ptr<Impl> impl_;
  std::string backend_name_;
};

// Milliseconds since the Unix epoch.
int64_t NowMs();

}  // namespace iptkit::service

#endif  // IPTKIT_SRC_SERVICE_SERVICE_H_
