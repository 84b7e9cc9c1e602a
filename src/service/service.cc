// Service: start-up, the writer loop and its timers, the queue, reads (service.h). Planning and committing a
// drain are in writer.cc.
#include "src/service/service.h"

#include <spdlog/spdlog.h>
#include <sys/random.h>

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <utility>

#include "iptkit/json.h"
#include "src/service/service_internal.h"

namespace iptkit::service {
namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kInternalRetry = std::chrono::seconds(5);

std::unique_ptr<WorkItem> Internal(WorkItem::Kind kind, const std::string& action) {
  auto item = std::make_unique<WorkItem>();
  item->kind = kind;
  item->request.principal = kDaemonPrincipal;
  item->request.action = action;
  item->result.id = NewTransactionId();
  return item;
}

}  // namespace

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string NewTransactionId() {
  unsigned char bytes[8] = {};
  size_t got = 0;
  while (got < sizeof(bytes)) {
    ssize_t n = getrandom(bytes + got, sizeof(bytes) - got, 0);
    if (n > 0) got += static_cast<size_t>(n);
  }
  char hex[17];
  for (size_t i = 0; i < sizeof(bytes); ++i) std::snprintf(hex + 2 * i, 3, "%02x", bytes[i]);
  return std::string("t-") + hex;
}

// ---- Writer loop ----

std::optional<Clock::time_point> Service::Impl::NextTimer() {
  std::optional<Clock::time_point> next = next_drift;
  const int64_t now_ms = NowMs();
  const Clock::time_point now = Clock::now();
  auto consider = [&](int64_t deadline_ms, const std::string& backoff_key) {
    Clock::time_point at = now + std::chrono::milliseconds(std::max<int64_t>(0, deadline_ms - now_ms));
    auto b = backoff.find(backoff_key);
    if (b != backoff.end()) at = std::max(at, b->second);
    if (!next || at < *next) next = at;
  };
  std::lock_guard<std::mutex> lock(state_mu);
  for (const auto& [owner, state] : owners) {
    for (const auto& [key, rule] : state.managed) {
      if (rule.deadline_ms) consider(*rule.deadline_ms, "expire");
    }
  }
  for (const auto& [id, record] : confirms) consider(record.deadline_ms, "rollback:" + id);
  return next;
}

std::vector<std::unique_ptr<WorkItem>> Service::Impl::DueTimers() {
  std::vector<std::unique_ptr<WorkItem>> items;
  const int64_t now_ms = NowMs();
  const Clock::time_point now = Clock::now();
  auto ready = [&](const std::string& key) {
    auto b = backoff.find(key);
    return b == backoff.end() || b->second <= now;
  };
  {
    std::lock_guard<std::mutex> lock(state_mu);
    if (ready("expire")) {
      auto expire = Internal(WorkItem::Kind::kExpire, "ttl_expire");
      for (const auto& [owner, state] : owners) {
        for (const auto& [key, rule] : state.managed) {
          if (rule.deadline_ms && *rule.deadline_ms <= now_ms) expire->expire.push_back(key);
        }
      }
      if (!expire->expire.empty()) items.push_back(std::move(expire));
    }
    for (const auto& [id, record] : confirms) {
      if (record.deadline_ms > now_ms || !ready("rollback:" + id)) continue;
      auto rollback = Internal(WorkItem::Kind::kRollback, "confirm_rollback");
      rollback->confirm_id = id;
      rollback->request.request_id = record.request_id;
      items.push_back(std::move(rollback));
    }
  }
  if (now >= next_drift) {
    auto drift = Internal(WorkItem::Kind::kReconcile, "drift_repair");
    drift->drift_check = true;
    items.push_back(std::move(drift));
    next_drift = now + options.drift_interval;
  }
  return items;
}

void Service::Impl::WriterMain() {
  RunStartup();
  for (;;) {
    std::vector<std::unique_ptr<WorkItem>> requests;
    {
      std::unique_lock<std::mutex> lock(queue_mu);
      for (;;) {
        if (stopping || !queue.empty()) break;
        std::optional<Clock::time_point> next = NextTimer();
        if (next && *next <= Clock::now()) break;
        if (next) {
          queue_cv.wait_until(lock, *next);
        } else {
          queue_cv.wait(lock);
        }
      }
      if (stopping) break;
      // Group commit window (Options::group_wait): the clients the last drain answered are about to send again.
      // Clients that keep sending alternate in cohorts (those answered by one drain queue up during the next):
      // waiting for as many as the last two drains took lets them share one commit.
      if (options.group_wait.count() > 0 && last_drain_requests > 1 && !queue.empty()) {
        const size_t target = std::min(last_drain_requests + previous_drain_requests, options.max_batch);
        queue_cv.wait_for(lock, options.group_wait, [&] { return stopping || queue.size() >= target; });
        if (stopping) break;
      }
      while (!queue.empty() && requests.size() < options.max_batch) {
        requests.push_back(std::move(queue.front()));
        queue.pop_front();
      }
      queue_depth->Set({}, static_cast<double>(queue.size()));
    }
    previous_drain_requests = last_drain_requests;
    last_drain_requests = requests.size();
    // Expiries and rollbacks before the requests; the drift check (if due) after them.
    std::vector<std::unique_ptr<WorkItem>> items = DueTimers();
    std::unique_ptr<WorkItem> drift;
    if (!items.empty() && items.back()->kind == WorkItem::Kind::kReconcile) {
      drift = std::move(items.back());
      items.pop_back();
    }
    for (auto& r : requests) items.push_back(std::move(r));
    if (drift) items.push_back(std::move(drift));
    Process(std::move(items));
  }
  std::deque<std::unique_ptr<WorkItem>> left;
  {
    std::lock_guard<std::mutex> lock(queue_mu);
    left.swap(queue);
  }
  for (auto& item : left) {
    if (item->promise) item->promise->set_value(Status::Unavailable("iptkitd is stopping"));
  }
}

void Service::Impl::Process(std::vector<std::unique_ptr<WorkItem>> items) {
  if (items.empty()) return;
  std::vector<WorkItem*> ptrs;
  for (auto& item : items) ptrs.push_back(item.get());
  WarmCanonicalCache(ptrs);
  Drain(ptrs, 0);
  for (auto& extra : extras) ptrs.push_back(extra.get());

  // Failures are audited too (successes were persisted with their commit).
  const int64_t now = NowMs();
  std::vector<WorkItem*> failed;
  for (WorkItem* item : ptrs) {
    if (!item->final) {
      item->final = true;
      item->status = Status::Internal("the writer left the request unanswered");
    }
    if (!item->status.ok() && !item->skip_audit) failed.push_back(item);
  }
  if (!failed.empty()) {
    Status s = store->Write([&](store::Store::Tx& tx) -> Status {
      for (WorkItem* item : failed) IPTKIT_RETURN_IF_ERROR(AppendAudit(tx, *item, now));
      return Status::Ok();
    });
    if (!s.ok()) spdlog::error("writing {} audit entries failed: {}", failed.size(), s.ToString());
  }
  Publish(ptrs);
  for (WorkItem* item : ptrs) {
    if (item->kind != WorkItem::Kind::kRequest && !item->skip_audit) {
      const std::string key = item->kind == WorkItem::Kind::kRollback ? "rollback:" + item->confirm_id : "expire";
      if (!item->status.ok()) {
        spdlog::error("{} failed: {}", item->request.action, item->status.ToString());
        if (item->kind != WorkItem::Kind::kReconcile) backoff[key] = Clock::now() + kInternalRetry;
      } else {
        backoff.erase(key);
      }
    }
    if (item->promise) {
      if (item->status.ok()) {
        item->promise->set_value(item->result);
      } else {
        item->promise->set_value(item->status);
      }
      item->promise.reset();
    }
  }
  extras.clear();
}

void Service::Impl::Publish(const std::vector<WorkItem*>& items) {
  const int64_t now = NowMs();
  for (const WorkItem* item : items) {
    const std::string result = item->status.ok() ? "ok" : "error";
    if (item->kind == WorkItem::Kind::kRequest && !item->request.dry_run) {
      changes->Inc({item->request.action.empty() ? "transaction" : item->request.action, result});
    }
    if (!item->status.ok() || item->skip_audit) continue;
    nlohmann::ordered_json data;
    data["id"] = item->result.id;
    nlohmann::ordered_json tables = nlohmann::ordered_json::array();
    for (const TableCommit& t : item->result.tables) {
      tables.push_back(
          {{"family", std::string(FamilyName(t.family))}, {"table", t.table}, {"restore_text", t.restore_text}});
    }
    switch (item->kind) {
      case WorkItem::Kind::kRequest:
        if (item->request.dry_run) break;
        if (item->request.confirm) {
          data["confirmed"] = *item->request.confirm;
          events->Publish("confirmed", data.dump(), now);
        }
        if (item->result.changed || !item->upserts.empty() || !item->removals.empty()) {
          data["principal"] = item->request.principal;
          data["request_id"] = item->request.request_id;
          data["action"] = item->request.action;
          data["tables"] = tables;
          if (item->result.confirm_deadline_ms) data["confirm_deadline_ms"] = *item->result.confirm_deadline_ms;
          events->Publish("commit", data.dump(), now);
        }
        break;
      case WorkItem::Kind::kExpire: {
        if (item->removals.empty()) break;
        ttl_expiries->Inc({}, static_cast<double>(item->removals.size()));
        nlohmann::ordered_json rules = nlohmann::ordered_json::array();
        for (const store::ManagedRuleKey& k : item->removals) {
          rules.push_back({{"owner", k.owner},
                           {"family", std::string(FamilyName(k.family))},
                           {"table", k.table},
                           {"chain", k.chain},
                           {"spec", k.spec}});
          spdlog::info("TTL of owner {} rule in {} {}/{} passed: {}", k.owner, FamilyName(k.family), k.table, k.chain,
                       k.spec);
        }
        data["rules"] = rules;
        data["tables"] = tables;
        events->Publish("ttl_expired", data.dump(), now);
        break;
      }
      case WorkItem::Kind::kRollback:
        confirm_rollbacks->Inc();
        data["transaction"] = item->confirm_id;
        data["message"] = item->resolve_confirm ? item->resolve_confirm->message : "";
        data["tables"] = tables;
        spdlog::warn("transaction {} was not confirmed in time: rolled back", item->confirm_id);
        events->Publish("confirm_rolled_back", data.dump(), now);
        break;
      case WorkItem::Kind::kReconcile:
        if (item->repaired_owners.empty()) break;
        data["owners"] = item->repaired_owners;
        data["tables"] = tables;
        if (item->drift_check) {
          for (const std::string& owner : item->repaired_owners) {
            drift_repairs->Inc({owner});
            spdlog::warn("owner {}: owned rules or chains were changed by someone else; repaired", owner);
          }
          events->Publish("drift_repaired", data.dump(), now);
        } else {
          spdlog::info("re-applied the state of {} owner(s)", item->repaired_owners.size());
          events->Publish("reconciled", data.dump(), now);
        }
        break;
    }
  }
}

void Service::Impl::RunStartup() {
  Status first_error;
  auto note = [&](const Status& s) {
    if (!s.ok() && first_error.ok()) first_error = s;
  };
  // Load the store.
  {
    std::map<std::string, OwnerState> loaded;
    Result<std::vector<store::OwnerRecord>> records = store->ListOwners();
    note(records.status());
    if (records.ok()) {
      for (const store::OwnerRecord& r : *records) {
        OwnerState& state = loaded[r.owner];
        if (!r.document) continue;
        Result<DesiredState> doc = DesiredStateFromJson(*r.document);
        if (!doc.ok()) {
          note(doc.status().WithContext("the stored document of owner '" + r.owner + "'"));
          continue;
        }
        state.document = *std::move(doc);
      }
    }
    Result<std::vector<store::ManagedRule>> managed = store->ListManagedRules();
    note(managed.status());
    if (managed.ok()) {
      for (const store::ManagedRule& m : *managed) {
        loaded[m.owner].managed[store::KeyOf(m)] = m;
        next_seq = std::max(next_seq, m.seq + 1);
      }
    }
    Result<std::vector<store::ConfirmRecord>> pending = store->ListConfirms(/*pending_only=*/true);
    note(pending.status());
    std::lock_guard<std::mutex> lock(state_mu);
    std::erase_if(loaded, [](const auto& e) { return e.second.empty(); });
    owners = std::move(loaded);
    if (pending.ok()) {
      for (const store::ConfirmRecord& c : *pending) confirms[c.id] = c;
    }
  }
  spdlog::info("loaded {} owner(s) and {} pending confirm(s) from the store", owners.size(), confirms.size());

  // 1. Rules whose TTL passed while the daemon was down go before anything else; 2. overdue confirms roll back;
  // 3. every owner's state is applied again (a reboot or a foreign flush removed it).
  next_drift = Clock::now() + options.drift_interval;
  std::vector<std::unique_ptr<WorkItem>> timers = DueTimers();
  std::vector<std::unique_ptr<WorkItem>> expire, rollback;
  for (auto& item : timers) {
    if (item->kind == WorkItem::Kind::kExpire) {
      expire.push_back(std::move(item));
    } else if (item->kind == WorkItem::Kind::kRollback) {
      rollback.push_back(std::move(item));
    }
  }
  // Each group is processed on its own, in order; their errors are start-up errors.
  auto run = [&](std::vector<std::unique_ptr<WorkItem>> group) {
    std::vector<std::future<Result<ChangeResult>>> results;
    for (auto& item : group) {
      item->promise.emplace();
      results.push_back(item->promise->get_future());
    }
    Process(std::move(group));
    for (auto& r : results) note(r.get().status());
  };
  run(std::move(expire));
  run(std::move(rollback));
  std::vector<std::unique_ptr<WorkItem>> reconcile;
  reconcile.push_back(Internal(WorkItem::Kind::kReconcile, "reconcile"));
  run(std::move(reconcile));
  next_drift = Clock::now() + options.drift_interval;
  if (!first_error.ok()) spdlog::error("start-up: {}", first_error.ToString());
  std::lock_guard<std::mutex> lock(startup_mu);
  started = true;
  startup_status = first_error;
  startup_cv.notify_all();
}

// ---- Service ----

Result<std::unique_ptr<Service>> Service::Start(Options options, store::Store* store, Metrics* metrics,
                                                EventBus* events) {
  if (!options.make_backend) return Status::InvalidArgument("Service::Options::make_backend is required");
  if (options.drift_interval <= std::chrono::milliseconds(0)) {
    return Status::InvalidArgument("the drift interval must be positive");
  }
  if (options.max_batch == 0) options.max_batch = 1;
  std::unique_ptr<Service> service(new Service());
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->store = store;
  impl->metrics = metrics;
  impl->events = events;
  IPTKIT_ASSIGN_OR_RETURN(impl->writer_backend, options.make_backend());
  IPTKIT_ASSIGN_OR_RETURN(std::unique_ptr<backend::Backend> reader_backend, options.make_backend());
  FirewallOptions reader_options = options.firewall;
  reader_options.before_commit_hook = nullptr;
  impl->reader = Firewall::WithBackend(std::move(reader_backend), reader_options);
  service->backend_name_ = impl->writer_backend->traits().name;

  impl->commits = &metrics->AddCounter("iptkitd_commits_total", "Kernel commits of the writer, by result.", {"result"});
  impl->batch_requests = &metrics->AddHistogram("iptkitd_group_commit_requests",
                                                "Requests (the daemon's own work included) sent in one group commit.",
                                                {}, {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024});
  impl->commit_seconds =
      &metrics->AddHistogram("iptkitd_commit_duration_seconds", "Time to commit one group (every table it changes).",
                             {}, {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10});
  impl->drift_repairs =
      &metrics->AddCounter("iptkitd_drift_repairs_total",
                           "Repairs of an owner's rules or chains after someone else changed them.", {"owner"});
  impl->foreign_changes = &metrics->AddCounter("iptkitd_foreign_changes_total",
                                               "Changes of the ruleset by other writers that the daemon noticed.");
  impl->ttl_expiries = &metrics->AddCounter("iptkitd_ttl_expiries_total", "Managed rules removed at their TTL.");
  impl->confirm_rollbacks = &metrics->AddCounter(
      "iptkitd_confirm_rollbacks_total", "Commit-confirm transactions rolled back because no confirmation came.");
  impl->changes = &metrics->AddCounter("iptkitd_changes_total", "Change requests handled, by action and result.",
                                       {"action", "result"});
  impl->queue_depth = &metrics->AddGauge("iptkitd_queue_depth", "Requests waiting for the writer.");

  auto link = std::make_shared<CollectorLink>();
  link->service = service.get();
  metrics->AddCollector([link]() -> std::vector<Metrics::Family> {
    std::lock_guard<std::mutex> lock(link->mu);
    if (link->service == nullptr) return {};
    return link->service->CollectMetrics();
  });
  impl->collector_link = link;

  service->impl_ = std::move(impl);
  Impl* p = service->impl_.get();
  p->writer = std::thread([p] { p->WriterMain(); });
  std::unique_lock<std::mutex> lock(p->startup_mu);
  p->startup_cv.wait_for(lock, options.startup_wait, [p] { return p->started; });
  return service;
}

Service::~Service() {
  if (impl_ == nullptr) return;
  if (impl_->collector_link) {
    std::lock_guard<std::mutex> lock(impl_->collector_link->mu);
    impl_->collector_link->service = nullptr;
  }
  Stop();
}

void Service::Stop() {
  {
    std::lock_guard<std::mutex> lock(impl_->queue_mu);
    impl_->stopping = true;
  }
  impl_->queue_cv.notify_all();
  if (impl_->writer.joinable()) impl_->writer.join();
}

Result<ChangeResult> Service::Submit(ChangeRequest request) {
  if (request.confirm_within_seconds) {
    if (*request.confirm_within_seconds <= 0) {
      return Status::InvalidArgument("confirm_within must be at least 1 second");
    }
    if (request.dry_run) return Status::InvalidArgument("confirm_within and dry_run exclude each other");
    if (request.confirm) return Status::InvalidArgument("a confirmation cannot itself need one");
  }
  auto item = std::make_unique<WorkItem>();
  item->request = std::move(request);
  item->result.id = NewTransactionId();
  item->promise.emplace();
  std::future<Result<ChangeResult>> result = item->promise->get_future();
  {
    std::lock_guard<std::mutex> lock(impl_->queue_mu);
    if (impl_->stopping) return Status::Unavailable("iptkitd is stopping");
    impl_->queue.push_back(std::move(item));
    impl_->queue_depth->Set({}, static_cast<double>(impl_->queue.size()));
  }
  impl_->queue_cv.notify_one();
  return result.get();
}

bool Service::started() const {
  std::lock_guard<std::mutex> lock(impl_->startup_mu);
  return impl_->started;
}

Status Service::startup_status() const {
  std::lock_guard<std::mutex> lock(impl_->startup_mu);
  return impl_->startup_status;
}

// ---- Reads ----

Result<Ruleset> Service::List(Family family, const std::optional<std::string>& table, const ListOptions& options) {
  std::lock_guard<std::mutex> lock(impl_->reader_mu);
  return impl_->reader->List(family, table, options);
}

Result<FirewallInfo> Service::Info() {
  std::lock_guard<std::mutex> lock(impl_->reader_mu);
  return impl_->reader->Info();
}

namespace {

std::vector<ManagedRuleView> Views(const OwnerState& state, int64_t now) {
  std::vector<ManagedRuleView> out;
  for (const auto& [key, rule] : state.managed) out.push_back({rule, TtlRemainingSeconds(rule, now)});
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.rule.seq < b.rule.seq; });
  return out;
}

}  // namespace

std::vector<OwnerView> Service::Owners() const {
  const int64_t now = NowMs();
  std::lock_guard<std::mutex> lock(impl_->state_mu);
  std::vector<OwnerView> out;
  for (const auto& [owner, state] : impl_->owners) out.push_back({owner, state.document, Views(state, now), {}});
  return out;
}

Result<OwnerView> Service::GetOwner(const std::string& owner) {
  OwnerState state;
  {
    std::lock_guard<std::mutex> lock(impl_->state_mu);
    auto it = impl_->owners.find(owner);
    if (it == impl_->owners.end()) return Status::NotFound("owner '" + owner + "' has no state");
    state = it->second;
  }
  OwnerView view{owner, state.document, Views(state, NowMs()), {}};
  for (Family family : {Family::kIPv4, Family::kIPv6}) {
    IPTKIT_ASSIGN_OR_RETURN(DesiredState effective, EffectiveState(owner, state, family));
    std::lock_guard<std::mutex> lock(impl_->reader_mu);
    IPTKIT_ASSIGN_OR_RETURN(ApplyPlan plan, impl_->reader->PlanApply(effective));
    for (PlanStep& s : plan.steps) view.drift.push_back(std::move(s));
  }
  return view;
}

std::vector<ManagedRuleView> Service::ManagedRules() const {
  const int64_t now = NowMs();
  std::lock_guard<std::mutex> lock(impl_->state_mu);
  std::vector<ManagedRuleView> out;
  for (const auto& [owner, state] : impl_->owners) {
    for (ManagedRuleView& v : Views(state, now)) out.push_back(std::move(v));
  }
  return out;
}

Result<store::ConfirmRecord> Service::GetConfirm(const std::string& id) {
  IPTKIT_ASSIGN_OR_RETURN(std::optional<store::ConfirmRecord> record, impl_->store->GetConfirm(id));
  if (!record) return Status::NotFound("no transaction '" + id + "' with confirm_within");
  return *record;
}

std::vector<Metrics::Family> Service::CollectMetrics() {
  // Rules carrying the tag of an owner the daemon manages: their kernel counters (one read with counters per
  // family), and the number of managed rules per owner.
  std::set<std::string> known;
  Metrics::Family managed{
      "iptkitd_managed_rules", "Managed rules (added through the API with an owner) per owner.", "gauge", {}};
  {
    std::lock_guard<std::mutex> lock(impl_->state_mu);
    for (const auto& [owner, state] : impl_->owners) {
      known.insert(owner);
      managed.samples.push_back({{{"owner", owner}}, static_cast<double>(state.managed.size())});
    }
  }
  Metrics::Family packets{
      "iptkitd_owned_rule_packets_total", "Packets matched by owned rules (kernel counters).", "counter", {}};
  Metrics::Family bytes{
      "iptkitd_owned_rule_bytes_total", "Bytes matched by owned rules (kernel counters).", "counter", {}};
  for (Family family : {Family::kIPv4, Family::kIPv6}) {
    Result<Ruleset> rs = List(family);
    if (!rs.ok()) continue;
    for (const Table& t : rs->tables) {
      for (const Chain& c : t.chains) {
        for (const Rule& r : c.rules) {
          auto tag = r.OwnerTag();
          if (!tag || !known.count(tag->owner)) continue;
          std::vector<std::pair<std::string, std::string>> labels = {{"owner", tag->owner},
                                                                     {"family", std::string(FamilyName(family))},
                                                                     {"table", t.name},
                                                                     {"chain", c.name},
                                                                     {"rule_id", tag->id}};
          packets.samples.push_back({labels, static_cast<double>(r.counters.packets)});
          bytes.samples.push_back({labels, static_cast<double>(r.counters.bytes)});
        }
      }
    }
  }
  return {managed, packets, bytes};
}

}  // namespace iptkit::service
