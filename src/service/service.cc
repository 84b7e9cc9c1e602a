// Service: start-up, the writer loop and its timers, the queue, answering and reporting (events, metrics, health),
// reads (service.h). What a work item plans is in plan_item.cc, the drain (commit, bisect, retry, persist) in
// writer.cc.
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

// Backoff of failed internal work: the first retry after `first`, each further one after twice the last, at most
// `most` (docs/daemon.md "Owners fail alone").
Clock::duration Backoff(int failures, Clock::duration first, Clock::duration most) {
  Clock::duration d = first;
  for (int i = 1; i < failures && d < most; ++i) d *= 2;
  return std::min(d, most);
}

// Most group_wait periods the group commit window lasts while requests keep arriving (WriterMain).
constexpr int kGroupWaitRounds = 4;

constexpr auto kTimerRetryFirst = std::chrono::milliseconds(100);
constexpr auto kTimerRetryMost = std::chrono::seconds(5);
constexpr auto kOwnerRetryFirst = std::chrono::seconds(1);
constexpr auto kOwnerRetryMost = std::chrono::seconds(60);
constexpr auto kStoreRetryFirst = std::chrono::seconds(1);
constexpr auto kStoreRetryMost = std::chrono::seconds(10);

int64_t Millis(Clock::duration d) { return std::chrono::duration_cast<std::chrono::milliseconds>(d).count(); }

}  // namespace

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string NewTransactionId() {
  // Every request gets one: getrandom(2) is called for 32 ids at a time (per thread), not once per request.
  thread_local unsigned char pool[256];
  thread_local size_t used = sizeof(pool);
  if (used == sizeof(pool)) {
    size_t got = 0;
    while (got < sizeof(pool)) {
      const ssize_t n = getrandom(pool + got, sizeof(pool) - got, 0);
      if (n > 0) got += static_cast<size_t>(n);
    }
    used = 0;
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id = "t-0123456789abcdef";
  for (size_t i = 0; i < 8; ++i) {
    const unsigned char b = pool[used + i];
    id[2 + 2 * i] = kHex[b >> 4];
    id[3 + 2 * i] = kHex[b & 0xf];
  }
  // Used bytes are wiped: no later reader of the pool's memory learns an id from it.
  std::fill(pool + used, pool + used + 8, 0);
  used += 8;
  return id;
}

std::unique_ptr<WorkItem> InternalItem(WorkItem::Kind kind, const std::string& action) {
  auto item = std::make_unique<WorkItem>();
  item->kind = kind;
  item->request.principal = kDaemonPrincipal;
  item->request.action = action;
  item->result.id = NewTransactionId();
  return item;
}

// ---- Timers ----

bool Service::Impl::RetryDue(const std::string& key, Clock::time_point now) const {
  auto it = retries.find(key);
  return it == retries.end() || it->second.at <= now;
}

std::optional<Clock::time_point> Service::Impl::NextTimer() {
  std::optional<Clock::time_point> next = next_drift;
  const int64_t now_ms = NowMs();
  const Clock::time_point now = Clock::now();
  auto consider = [&](Clock::time_point at) {
    if (!next || at < *next) next = at;
  };
  auto deadline = [&](int64_t deadline_ms, const std::string& retry_key) {
    Clock::time_point at = now + std::chrono::milliseconds(std::max<int64_t>(0, deadline_ms - now_ms));
    auto r = retries.find(retry_key);
    if (r != retries.end()) at = std::max(at, r->second.at);
    consider(at);
  };
  for (const auto& [key, retry] : retries) {
    if (key.starts_with("owner:") || (key == "store" && (!pending_records.empty() || audit_queued))) consider(retry.at);
  }
  std::lock_guard<std::mutex> lock(state_mu);
  for (const auto& [owner, state] : owners) {
    std::optional<int64_t> first;
    for (const auto& [key, rule] : state.managed) {
      if (rule.deadline_ms && (!first || *rule.deadline_ms < *first)) first = rule.deadline_ms;
    }
    if (first) deadline(*first, "expire:" + owner);
  }
  for (const auto& [id, record] : confirms) deadline(record.deadline_ms, "rollback:" + id);
  return next;
}

std::vector<std::unique_ptr<WorkItem>> Service::Impl::DueTimers(bool deadlines_only) {
  // Expiries and rollbacks first, then the owners' reconciles (drift checks and retries of failed owners).
  std::vector<std::unique_ptr<WorkItem>> items;
  const int64_t now_ms = NowMs();
  const Clock::time_point now = Clock::now();
  const bool drift = !deadlines_only && now >= next_drift;
  if (drift) next_drift = now + options.drift_interval;
  std::vector<std::unique_ptr<WorkItem>> reconcile;
  std::lock_guard<std::mutex> lock(state_mu);
  for (const auto& [owner, state] : owners) {
    if (RetryDue("expire:" + owner, now)) {
      auto expire = InternalItem(WorkItem::Kind::kExpire, "ttl_expire");
      expire->owner = owner;
      for (const auto& [key, rule] : state.managed) {
        if (rule.deadline_ms && *rule.deadline_ms <= now_ms) expire->expire.push_back(key);
      }
      if (!expire->expire.empty()) items.push_back(std::move(expire));
    }
    // A failing owner is tried again when its backoff says so, not at every drift check.
    const std::string key = "owner:" + owner;
    const bool failing = retries.count(key) > 0;
    if ((drift && !failing) || (failing && !deadlines_only && RetryDue(key, now))) {
      auto check = InternalItem(WorkItem::Kind::kReconcile, "drift_repair");
      check->owner = owner;
      check->drift_check = true;
      reconcile.push_back(std::move(check));
    }
  }
  for (const auto& [id, record] : confirms) {
    if (record.deadline_ms > now_ms || !RetryDue("rollback:" + id, now)) continue;
    auto rollback = InternalItem(WorkItem::Kind::kRollback, "confirm_rollback");
    rollback->confirm_id = id;
    rollback->request.request_id = record.request_id;
    items.push_back(std::move(rollback));
  }
  if (drift && reconcile.empty()) {
    // No owner to check: the drift check still reads the kernel (for foreign_change), through an item of nobody.
    auto check = InternalItem(WorkItem::Kind::kReconcile, "drift_repair");
    check->drift_check = true;
    reconcile.push_back(std::move(check));
  }
  for (auto& r : reconcile) items.push_back(std::move(r));
  return items;
}

// ---- Writer loop ----

void Service::Impl::WriterMain() {
  RunStartup();
  for (;;) {
    std::vector<std::unique_ptr<WorkItem>> requests;
    {
      std::unique_lock<std::mutex> lock(queue_mu);
      for (;;) {
        // While a pass's write is in flight, the next pass starts only when as many client requests are queued
        // as that pass answers (at most max_batch): a cohort of clients as large as the one being stored. Starting
        // with fewer would split the in-flight pass's clients (about to send again) from the next commit, and with
        // a closed loop of clients every commit would carry half of them (measured: the daemon bench's 64 clients
        // went from 54 to 32 per commit and lost half their rate); a commit costs about the same for 1 or 64
        // requests. Clients that alternate in two cohorts (the soak's 16 commit about 7 at a time) have the other
        // cohort queued by then, and its pass is planned and committed while the store writes. The write runs
        // off the writer's thread, and its pass is answered from there as soon as it is stored.
        const size_t wanted =
            in_flight && !store_writer->Done() ? std::clamp<size_t>(in_flight_clients, 1, options.max_batch) : 1;
        if (stopping || queue.size() >= wanted) break;
        std::optional<Clock::time_point> next = NextTimer();
        if (next && *next <= Clock::now()) break;
        if (in_flight && store_writer->Done()) {
          // The last pass's records are stored: answer it now (new work does not wait for its write).
          lock.unlock();
          FinishInFlight(nullptr);
          lock.lock();
          continue;
        }
        wake_at = wanted;
        if (next) {
          queue_cv.wait_until(lock, *next);
        } else {
          queue_cv.wait(lock);
        }
      }
      if (stopping) break;
      // Group commit window (Options::group_wait): the clients the last drain answered are about to send again.
      // Clients that keep sending alternate in cohorts (those answered by one drain queue up during the next):
      // waiting for as many as the last two drains took lets them share one commit. No more clients can send than
      // were waiting for an answer at once lately (peak_outstanding): once that many are queued, the window closes
      // (else every pass of a closed loop of clients waited out the whole window for requests that could not
      // come). Those still waiting for the store write of the pass before are waited for (within the window): the
      // two cohorts then merge into one commit again.
      // The window slides while the cohort keeps arriving: it closes once `target` requests are queued, after a
      // group_wait in which no request came, or after kGroupWaitRounds of them in all. On a loaded machine the 64
      // round trips of the daemon bench's cohort took longer than one group_wait from the first to the last, and
      // a window that closed then split the cohort in two (two commits, each costing the kernel about as much as
      // one of all of them, and the halves kept alternating).
      if (options.group_wait.count() > 0 && last_drain_requests > 1 && !queue.empty()) {
        const size_t target =
            std::min({last_drain_requests + previous_drain_requests, options.max_batch, peak_outstanding});
        wake_at = target;
        for (int round = 0; round < kGroupWaitRounds; ++round) {
          const size_t before = queue.size();
          queue_cv.wait_for(lock, options.group_wait, [&] { return stopping || queue.size() >= target; });
          if (stopping || queue.size() >= target || queue.size() == before) break;
        }
        if (stopping) break;
      }
      while (!queue.empty() && requests.size() < options.max_batch) {
        requests.push_back(std::move(queue.front()));
        queue.pop_front();
      }
      peak_outstanding = outstanding;
      queue_depth->Set({}, static_cast<double>(queue.size()));
    }
    previous_drain_requests = last_drain_requests;
    last_drain_requests = requests.size();
    // The records the store could not take yet go first (also when nothing else is due).
    if ((!pending_records.empty() || audit_queued) && RetryDue("store", Clock::now())) {
      FinishInFlight(nullptr);
      NoteStore(WriteRecords({}));
    }
    // Expiries and rollbacks before the requests; the owners' drift checks after them.
    std::vector<std::unique_ptr<WorkItem>> timers = DueTimers();
    std::vector<std::unique_ptr<WorkItem>> items;
    for (auto& t : timers) {
      if (t->kind != WorkItem::Kind::kReconcile) items.push_back(std::move(t));
    }
    for (auto& r : requests) items.push_back(std::move(r));
    for (auto& t : timers) {
      if (t) items.push_back(std::move(t));
    }
    if (items.empty()) continue;
    // The pipeline: this pass is planned and committed while the store writes the records of the last one; the
    // last one is answered (in order, before this one) once they are stored, and then this one's records go.
    auto batch = std::make_unique<PendingBatch>();
    current_batch = batch.get();
    Execute(std::move(items));
    current_batch = nullptr;
    {
      std::vector<WorkItem*> ptrs;
      for (auto& item : batch->items) ptrs.push_back(item.get());
      // The clients' part before their answers (what health says after a request: a missing tool, an owner that
      // applies again); the daemon's own work is reported once its audit entries are stored (Settle).
      NoteOutcomes(ptrs, /*internal=*/false);
    }
    if (!FinishInFlight(batch.get())) StartPersist(std::move(batch));
  }
  FinishInFlight(nullptr);
  std::deque<std::unique_ptr<WorkItem>> left;
  {
    std::lock_guard<std::mutex> lock(queue_mu);
    left.swap(queue);
  }
  for (auto& item : left) {
    if (item->reply) std::exchange(item->reply, nullptr)(Status::Unavailable("iptkitd is stopping"));
  }
  if (!pending_records.empty()) {
    spdlog::error(
        "stopping with {} record(s) of the daemon's own work that the store could not take; the kernel "
        "holds their changes, and the next start repeats what they recorded",
        pending_records.size());
  }
}

void Service::Impl::Process(std::vector<std::unique_ptr<WorkItem>> items) {
  FinishInFlight(nullptr);
  PendingBatch batch;
  current_batch = &batch;
  Execute(std::move(items));
  current_batch = nullptr;
  std::vector<WorkItem*> ptrs;
  for (auto& item : batch.items) ptrs.push_back(item.get());
  NoteOutcomes(ptrs, /*internal=*/false);
  Settle(batch, WriteRecords(batch.records));
}

void Service::Impl::Execute(std::vector<std::unique_ptr<WorkItem>> items) {
  if (items.empty()) return;
  std::vector<WorkItem*> ptrs;
  for (auto& item : items) ptrs.push_back(item.get());
  WarmCanonicalCache(ptrs);
  // TTL expiries and confirm rollbacks that are due go first. With client work in the same pass they share its
  // commit (planned before it, on the same read): a commit costs the kernel about the same for one op or sixty,
  // and next to a steady stream of TTL rules nearly every pass had an expiry, so passes made two commits. When the
  // shared commit meets another writer's change, Drain goes on with the daemon's own work alone, first. Alone, they
  // commit without waiting for a read: their ops name the rules by spec (a rule another writer moved is still
  // found; one it removed makes the commit fail and the expiry read and plan again), so they take effect as soon
  // as the writer gets to them, also when another writer keeps changing the ruleset and every read costs. While
  // client work keeps meeting conflicts, the ones that fall due meanwhile commit between its attempts
  // (RunDueDeadlines).
  std::vector<WorkItem*> timers, rest;
  for (WorkItem* item : ptrs) {
    const bool timer = item->kind == WorkItem::Kind::kExpire || item->kind == WorkItem::Kind::kRollback;
    (timer ? timers : rest).push_back(item);
  }
  if (rest.empty()) {
    if (!timers.empty()) Drain(timers, /*repairs=*/false, kMaxCommitAttempts, /*optimistic=*/true);
  } else {
    std::vector<WorkItem*> all = timers;
    all.insert(all.end(), rest.begin(), rest.end());
    Drain(all, /*repairs=*/true);
  }
  for (auto& extra : extras) ptrs.push_back(extra.get());

  // Failures are audited too (successes have their records in the batch already).
  std::vector<WorkItem*> failed;
  for (WorkItem* item : ptrs) {
    if (!item->final) {
      // Drain settles every item; this is a bug, and said so.
      spdlog::error("internal error: the writer left {} {} unanswered", item->request.action, item->result.id);
      item->final = true;
      item->status = Status::Internal("the writer left the request unanswered");
    }
    if (!item->status.ok() && !item->skip_audit) failed.push_back(item);
  }
  PendingBatch& batch = *current_batch;
  for (StoreRecord& r : Records(failed, {})) batch.records.push_back(std::move(r));
  for (auto& item : items) batch.items.push_back(std::move(item));
  for (auto& extra : extras) batch.items.push_back(std::move(extra));
  extras.clear();
}

bool Service::Impl::FinishInFlight(PendingBatch* next) {
  if (!in_flight) return false;
  const auto t0 = Clock::now();
  const Status persisted = store_writer->Wait();
  drain_phase_seconds->Observe({"store_wait"}, std::chrono::duration<double>(Clock::now() - t0).count());
  std::unique_ptr<PendingBatch> batch = std::move(in_flight);
  if (persisted.ok()) RecordsWritten(in_flight_pending, in_flight_flush_audit);
  if (persisted.ok()) {
    NoteStore(persisted);  // answered already, on the store writer's thread
    NoteInternalOutcomes(*batch);
    return false;
  }
  const bool undo_next = batch->clients && next != nullptr;
  Settle(*batch, persisted, undo_next ? next : nullptr);
  return undo_next;
}

void Service::Impl::StartPersist(std::unique_ptr<PendingBatch> batch) {
  if (batch->records.empty() && pending_records.empty() && !audit_queued) {
    Settle(*batch, Status::Ok());
    return;
  }
  // The write gets copies of what the writer thread may change meanwhile; the records themselves stay in the
  // batch, which nobody changes until the write is waited for.
  // Once stored, the batch is answered on the store writer's thread at once (the writer is busy with the next
  // pass); a failed write is settled by the writer (FinishInFlight).
  PendingBatch* stored = batch.get();
  in_flight = std::move(batch);
  in_flight_pending = pending_records.size();
  in_flight_flush_audit = audit_queued;
  in_flight_clients = static_cast<size_t>(std::count_if(in_flight->items.begin(), in_flight->items.end(),
                                                        [](const auto& item) { return !item->internal(); }));
  store_writer->Start([this, stored, pending = pending_records, flush_audit = audit_queued]() -> Status {
    const auto t0 = Clock::now();
    Status s = WriteRecordsTo(*store, options.before_store_write, pending, stored->records, flush_audit);
    drain_phase_seconds->Observe({"store"}, std::chrono::duration<double>(Clock::now() - t0).count());
    if (s.ok()) Answer(*stored);
    return s;
  });
}

void Service::Impl::NoteInternalOutcomes(PendingBatch& batch) {
  std::vector<WorkItem*> ptrs;
  for (auto& item : batch.items) ptrs.push_back(item.get());
  NoteOutcomes(ptrs, /*internal=*/true);
}

void Service::Impl::Settle(PendingBatch& batch, const Status& persisted, PendingBatch* next) {
  NoteStore(persisted);
  if (persisted.ok()) {
    NoteInternalOutcomes(batch);
    Answer(batch);
    return;
  }
  if (!batch.clients) {
    // Only the daemon's own work: the kernel change stays (an expired rule must go, an unconfirmed change must
    // roll back even on a full disk) and its records wait in memory until the store can be written again.
    spdlog::error(
        "store write failed: keeping {} record(s) of the daemon's own work in memory until it can be "
        "written: {}",
        batch.records.size(), persisted.ToString());
    KeepPending(std::move(batch.records));
    NoteInternalOutcomes(batch);
    Answer(batch);
    return;
  }
  // Nothing is answered before it is stored: the kernel holds what the store does not, so the change is undone
  // (the batch planned on top of it first, each newest commit and table first), the state in memory goes back to
  // what the store holds, and the requests fail. The daemon's own work in them (TTL expiry, a confirm rollback,
  // repairs) is done again at once on what is left: the expiries and rollbacks are due still, and a drift check of
  // every owner runs next.
  std::vector<PendingBatch*> undone = {next, &batch};
  std::erase(undone, nullptr);
  std::string result = "undone in the kernel";
  {
    Result<std::unique_ptr<backend::LockGuard>> relock = writer_backend->Lock(options.firewall.wait);
    for (PendingBatch* b : undone) {
      for (auto commit = b->undo.rbegin(); commit != b->undo.rend(); ++commit) {
        for (auto table = commit->rbegin(); table != commit->rend(); ++table) {
          if (table->ops.empty() && !table->flush_table) continue;
          Status s = writer_backend->Commit(*table);
          if (!s.ok()) result = "NOT undone in the kernel (" + s.ToString() + ")";
        }
      }
    }
  }
  expected.clear();
  expected_shapes.clear();
  {
    std::lock_guard<std::mutex> lock(state_mu);
    for (PendingBatch* b : undone) {
      for (auto& [owner, before] : b->owners_before) {
        if (before) {
          owners[owner] = *before;
        } else {
          owners.erase(owner);
        }
      }
      for (auto& [id, before] : b->confirms_before) {
        if (before) {
          confirms[id] = *before;
        } else {
          confirms.erase(id);
        }
      }
    }
  }
  next_drift = Clock::now();
  spdlog::error("store write failed after a commit; the requests' change was {}: {}", result, persisted.ToString());
  for (PendingBatch* b : undone) {
    std::vector<WorkItem*> failed;
    for (auto& item : b->items) {
      if (!item->status.ok()) {
        failed.push_back(item.get());  // failed on its own: audited as such
        continue;
      }
      if (item->internal()) {
        // Done again (see above): neither published nor audited as done.
        item->status = Status::Unavailable("undone: the store could not record it (" + persisted.message() + ")");
        item->skip_audit = true;
        continue;
      }
      if (item->request.dry_run) continue;
      item->status = Status::Unavailable("the change was committed but could not be stored (" + persisted.message() +
                                         "); it was " + result)
                         .WithReason("store");
      failed.push_back(item.get());
    }
    KeepPending(Records(failed, {}));
  }
  for (auto it = undone.rbegin(); it != undone.rend(); ++it) {
    NoteInternalOutcomes(**it);
    Answer(**it);
  }
}

void Service::Impl::Answer(PendingBatch& batch) {
  std::vector<WorkItem*> ptrs;
  for (auto& item : batch.items) ptrs.push_back(item.get());
  Publish(ptrs);
  {
    // Before the answers, so that a client answered here is not counted as waiting when it sends again.
    size_t answered = 0;
    for (WorkItem* item : ptrs) answered += item->reply && item->kind == WorkItem::Kind::kRequest ? 1 : 0;
    std::lock_guard<std::mutex> lock(queue_mu);
    outstanding -= std::min(outstanding, answered);
  }
  for (WorkItem* item : ptrs) {
    if (!item->reply) continue;
    Service::Reply reply = std::exchange(item->reply, nullptr);
    if (item->status.ok()) {
      reply(std::move(item->result));
    } else {
      reply(item->status);
    }
  }
}

// ---- The store writer ----

StoreWriter::StoreWriter(std::function<void()> on_done) : on_done_(std::move(on_done)) {
  thread_ = std::thread([this] {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return exit_ || (job_ != nullptr); });
      if (job_ == nullptr) return;
      std::function<Status()> job = std::move(job_);
      job_ = nullptr;
      lock.unlock();
      Status s = job();
      lock.lock();
      status_ = std::move(s);
      done_ = true;
      cv_.notify_all();
      lock.unlock();
      if (on_done_) on_done_();
      lock.lock();
    }
  });
}

StoreWriter::~StoreWriter() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    exit_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void StoreWriter::Start(std::function<Status()> write) {
  std::lock_guard<std::mutex> lock(mu_);
  job_ = std::move(write);
  busy_ = true;
  done_ = false;
  cv_.notify_all();
}

bool StoreWriter::Done() {
  std::lock_guard<std::mutex> lock(mu_);
  return !busy_ || done_;
}

Status StoreWriter::Wait() {
  std::unique_lock<std::mutex> lock(mu_);
  if (!busy_) return Status::Ok();
  cv_.wait(lock, [&] { return done_; });
  busy_ = false;
  return status_;
}

// ---- Outcomes, health ----

void Service::Impl::NoteOutcomes(const std::vector<WorkItem*>& items, bool internal) {
  const Clock::time_point now = Clock::now();
  for (const WorkItem* item : items) {
    if (item->internal() != internal) continue;
    // A tool that cannot be run fails any work that needed it (a canonicalization in a scratch namespace too).
    if (item->status.details().reason == "tool_missing") NoteBackend(item->status, /*commit=*/true);
    if (!item->internal() && item->status.ok() && !item->request.dry_run) {
      // A committed request planned its owners' whole state: an owner that was failing applies again (say, its
      // broken rule was just deleted) without waiting for its next retry.
      for (const std::string& owner : item->touched_owners) {
        if (retries.count("owner:" + owner)) NoteOwner(owner, Status::Ok(), ActionOf(*item));
      }
    }
    if (!item->internal() || item->skip_audit) continue;
    for (const auto& [owner, status] : item->owner_failures) NoteOwner(owner, status, ActionOf(*item));
    if (item->kind == WorkItem::Kind::kReconcile) {
      if (!item->owner.empty()) NoteOwner(item->owner, item->status, ActionOf(*item));
      continue;
    }
    const std::string key =
        item->kind == WorkItem::Kind::kRollback ? "rollback:" + item->confirm_id : "expire:" + item->owner;
    if (item->status.ok()) {
      if (retries.erase(key) > 0) spdlog::info("{} works again", key);
      std::lock_guard<std::mutex> lock(health_mu);
      failing_timers.erase(key);
      continue;
    }
    Retry& r = retries[key];
    ++r.failures;
    r.status = item->status;
    r.at = now + Backoff(r.failures, kTimerRetryFirst, kTimerRetryMost);
    spdlog::error("{} failed (attempt {}, next in {} ms): {}", ActionOf(*item), r.failures, Millis(r.at - now),
                  item->status.ToString());
    std::lock_guard<std::mutex> lock(health_mu);
    failing_timers[key] = item->status;
  }
  UpdateHealthGauge();
}

void Service::Impl::NoteOwner(const std::string& owner, const Status& status, const std::string& action) {
  const std::string key = "owner:" + owner;
  nlohmann::ordered_json data;
  data["owner"] = owner;
  if (status.ok()) {
    if (retries.erase(key) == 0) return;
    spdlog::warn("owner {}: its state applies again", owner);
    {
      std::lock_guard<std::mutex> lock(health_mu);
      failing_owners.erase(owner);
      owners_failing->Set({}, static_cast<double>(failing_owners.size()));
    }
    events->Publish("owner_recovered", data.dump(), NowMs());
    return;
  }
  bool known;
  {
    std::lock_guard<std::mutex> lock(state_mu);
    known = owners.count(owner) > 0;
  }
  if (!known) return;  // gone meanwhile: nothing to retry
  const Clock::time_point now = Clock::now();
  Retry& r = retries[key];
  ++r.failures;
  r.status = status;
  r.at = now + Backoff(r.failures, kOwnerRetryFirst, kOwnerRetryMost);
  owner_failures->Inc({owner});
  spdlog::error("owner {}: {} failed (failure {}, retried in {} ms; the other owners go on): {}", owner, action,
                r.failures, Millis(r.at - now), status.ToString());
  {
    std::lock_guard<std::mutex> lock(health_mu);
    failing_owners[owner] = status;
    owners_failing->Set({}, static_cast<double>(failing_owners.size()));
  }
  data["action"] = action;
  data["code"] = std::string(StatusCodeName(status.code()));
  data["message"] = status.message();
  data["failures"] = r.failures;
  data["retry_in_ms"] = Millis(r.at - now);
  events->Publish("owner_failed", data.dump(), NowMs());
}

void Service::Impl::NoteBackend(const Status& status, bool commit) {
  const bool ours = status.code() == StatusCode::kUnavailable || status.code() == StatusCode::kInternal ||
                    status.code() == StatusCode::kPermissionDenied;
  if (!status.ok() && !ours) return;  // a request's own error says nothing about the backend
  std::lock_guard<std::mutex> lock(health_mu);
  Status& last = commit ? backend_status : read_status;
  if (status.ok()) {
    if (!last.ok()) spdlog::warn("the backend {} again", commit ? "commits" : "reads");
  } else if (last.ok()) {
    spdlog::error("the backend failed to {}: {}", commit ? "commit" : "read", status.ToString());
  }
  last = status;
}

void Service::Impl::NoteStore(const Status& status) {
  const Clock::time_point now = Clock::now();
  if (status.ok()) {
    if (!pending_records.empty() || audit_queued) return;
    if (retries.erase("store") > 0) spdlog::warn("the store can be written again");
    std::lock_guard<std::mutex> lock(health_mu);
    store_status = Status::Ok();
    return;
  }
  Retry& r = retries["store"];
  ++r.failures;
  r.status = status;
  r.at = now + Backoff(r.failures, kStoreRetryFirst, kStoreRetryMost);
  store_failures->Inc();
  spdlog::error(
      "the store cannot be written (failure {}): {}; requests fail until it can, the daemon's own work "
      "goes on and its records wait in memory",
      r.failures, status.ToString());
  bool first;
  {
    std::lock_guard<std::mutex> lock(health_mu);
    first = store_status.ok();
    store_status = status;
  }
  if (first) {
    nlohmann::ordered_json data;
    data["message"] = status.message();
    events->Publish("store_failing", data.dump(), NowMs());
  }
}

void Service::Impl::UpdateHealthGauge() {
  const store::StoreHealth store_health = store->Health();
  bool ok = store_health.ok() && store_health.audit_backlog == 0;
  {
    std::lock_guard<std::mutex> lock(health_mu);
    ok = ok && load_status.ok() && failing_owners.empty() && failing_timers.empty() && store_status.ok() &&
         pending_count == 0 && backend_status.ok() && read_status.ok();
  }
  healthy->Set({}, ok ? 1 : 0);
}

void Service::Impl::Publish(const std::vector<WorkItem*>& items) {
  const int64_t now = NowMs();
  // One event per kind of owner reconcile for the whole drain.
  std::map<bool, std::pair<nlohmann::ordered_json, nlohmann::ordered_json>> reconciled;  // drift? → owners, tables
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
        if (item->result.changed || !item->effects.upserts.empty() || !item->effects.removals.empty()) {
          data["principal"] = item->request.principal;
          data["request_id"] = item->request.request_id;
          data["action"] = item->request.action;
          data["tables"] = tables;
          if (item->result.confirm_deadline_ms) data["confirm_deadline_ms"] = *item->result.confirm_deadline_ms;
          events->Publish("commit", data.dump(), now);
        }
        break;
      case WorkItem::Kind::kExpire: {
        if (item->effects.removals.empty()) break;
        ttl_expiries->Inc({}, static_cast<double>(item->effects.removals.size()));
        nlohmann::ordered_json rules = nlohmann::ordered_json::array();
        for (const store::ManagedRuleKey& k : item->effects.removals) {
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
        data["message"] = item->effects.resolve_confirm ? item->effects.resolve_confirm->message : "";
        data["tables"] = tables;
        spdlog::warn("transaction {} was not confirmed in time: rolled back", item->confirm_id);
        events->Publish("confirm_rolled_back", data.dump(), now);
        break;
      case WorkItem::Kind::kReconcile: {
        if (item->repaired_owners.empty()) break;
        auto& [owners_json, tables_json] = reconciled[item->drift_check];
        if (owners_json.is_null()) {
          owners_json = nlohmann::ordered_json::array();
          tables_json = nlohmann::ordered_json::array();
        }
        for (const std::string& owner : item->repaired_owners) {
          owners_json.push_back(owner);
          if (item->drift_check) {
            drift_repairs->Inc({owner});
            spdlog::warn("owner {}: owned rules or chains were changed by someone else; repaired", owner);
          }
        }
        for (auto& t : tables) tables_json.push_back(t);
        break;
      }
    }
  }
  for (auto& [drift, parts] : reconciled) {
    nlohmann::ordered_json data;
    data["id"] = NewTransactionId();
    data["owners"] = parts.first;
    data["tables"] = parts.second;
    if (!drift) spdlog::info("re-applied the state of {} owner(s)", parts.first.size());
    events->Publish(drift ? "drift_repaired" : "reconciled", data.dump(), now);
  }
}

void Service::Impl::RunStartup() {
  Status first_error;
  auto note = [&](const Status& s) {
    if (!s.ok() && first_error.ok()) first_error = s;
  };
  // Load the store.
  Status loaded_ok;
  auto note_load = [&](const Status& s) {
    note(s);
    if (!s.ok() && loaded_ok.ok()) loaded_ok = s;
  };
  {
    std::map<std::string, OwnerState> loaded;
    Result<std::vector<store::OwnerRecord>> records = store->ListOwners();
    note_load(records.status());
    if (records.ok()) {
      for (const store::OwnerRecord& r : *records) {
        OwnerState& state = loaded[r.owner];
        if (!r.document) continue;
        Result<DesiredState> doc = DesiredStateFromJson(*r.document);
        if (!doc.ok()) {
          note_load(doc.status().WithContext("the stored document of owner '" + r.owner + "'"));
          continue;
        }
        state.document = *std::move(doc);
      }
    }
    Result<std::vector<store::ManagedRule>> managed = store->ListManagedRules();
    note_load(managed.status());
    if (managed.ok()) {
      for (const store::ManagedRule& m : *managed) {
        loaded[m.owner].managed[store::KeyOf(m)] = m;
        next_seq = std::max(next_seq, m.seq + 1);
      }
    }
    Result<std::vector<store::ConfirmRecord>> pending = store->ListConfirms(/*pending_only=*/true);
    note_load(pending.status());
    std::lock_guard<std::mutex> lock(state_mu);
    std::erase_if(loaded, [](const auto& e) { return e.second.empty(); });
    owners = std::move(loaded);
    if (pending.ok()) {
      for (const store::ConfirmRecord& c : *pending) confirms[c.id] = c;
    }
  }
  {
    std::lock_guard<std::mutex> lock(health_mu);
    load_status = loaded_ok;
  }
  spdlog::info("loaded {} owner(s) and {} pending confirm(s) from the store", owners.size(), confirms.size());

  // 1. Rules whose TTL passed while the daemon was down go before anything else; 2. overdue confirms roll back;
  // 3. every owner's state is applied again (a reboot or a foreign flush removed it), each owner on its own.
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
  // Each group is processed on its own, in order; their errors are start-up errors (and health problems).
  auto run = [&](std::vector<std::unique_ptr<WorkItem>> group) {
    std::vector<std::future<Result<ChangeResult>>> results;
    for (auto& item : group) {
      auto promise = std::make_shared<std::promise<Result<ChangeResult>>>();
      results.push_back(promise->get_future());
      item->reply = [promise](Result<ChangeResult> r) { promise->set_value(std::move(r)); };
    }
    Process(std::move(group));
    for (auto& r : results) note(r.get().status());
  };
  run(std::move(expire));
  run(std::move(rollback));
  std::vector<std::unique_ptr<WorkItem>> reconcile;
  {
    std::lock_guard<std::mutex> lock(state_mu);
    for (const auto& [owner, state] : owners) {
      auto item = InternalItem(WorkItem::Kind::kReconcile, "reconcile");
      item->owner = owner;
      reconcile.push_back(std::move(item));
    }
  }
  run(std::move(reconcile));
  next_drift = Clock::now() + options.drift_interval;
  if (!first_error.ok()) spdlog::error("start-up: {}", first_error.ToString());
  UpdateHealthGauge();
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
  impl->owner_planner = std::make_unique<OwnerPlanner>(impl->writer_backend.get());
  Impl* raw = impl.get();
  impl->store_writer = std::make_unique<StoreWriter>([raw] {
    std::lock_guard<std::mutex> lock(raw->queue_mu);
    raw->queue_cv.notify_all();
  });
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
  impl->drain_phase_seconds = &metrics->AddHistogram(
      "iptkitd_drain_phase_seconds",
      "Time the writer spent on one drain attempt, by phase: read (the kernel), plan, commit (the kernel), store.",
      {"phase"}, {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1});
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
  impl->commit_retries =
      &metrics->AddCounter("iptkitd_commit_retries_total",
                           "Commits (and reads) planned again because another writer changed the ruleset meanwhile.");
  impl->owner_failures = &metrics->AddCounter(
      "iptkitd_owner_failures_total", "Failed reconciles of an owner's state (start-up, drift check, retry), by owner.",
      {"owner"});
  impl->owners_failing =
      &metrics->AddGauge("iptkitd_owners_failing", "Owners whose state cannot be applied now (retried with backoff).");
  impl->store_failures = &metrics->AddCounter("iptkitd_store_write_failures_total", "Failed writes of the store.");
  impl->store_pending = &metrics->AddGauge("iptkitd_store_pending_records",
                                           "State records of the daemon's own work waiting in memory for the store.");
  impl->healthy = &metrics->AddGauge("iptkitd_healthy", "1 when /healthz says ok, else 0.");

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
  impl_->store_writer.reset();  // idle: the writer waited for its last write
}

Result<ChangeResult> Service::Submit(ChangeRequest request) {
  auto promise = std::make_shared<std::promise<Result<ChangeResult>>>();
  std::future<Result<ChangeResult>> result = promise->get_future();
  SubmitAsync(std::move(request), [promise](Result<ChangeResult> r) { promise->set_value(std::move(r)); });
  return result.get();
}

void Service::SubmitAsync(ChangeRequest request, Reply reply) {
  if (request.confirm_within_seconds) {
    Status refused;
    if (*request.confirm_within_seconds <= 0) {
      refused = Status::InvalidArgument("confirm_within must be at least 1 second");
    } else if (request.dry_run) {
      refused = Status::InvalidArgument("confirm_within and dry_run exclude each other");
    } else if (request.confirm) {
      refused = Status::InvalidArgument("a confirmation cannot itself need one");
    }
    if (!refused.ok()) return reply(refused);
  }
  auto item = std::make_unique<WorkItem>();
  item->request = std::move(request);
  item->result.id = NewTransactionId();
  item->reply = std::move(reply);
  bool wake = false;
  {
    std::unique_lock<std::mutex> lock(impl_->queue_mu);
    if (impl_->stopping) {
      lock.unlock();
      return item->reply(Status::Unavailable("iptkitd is stopping"));
    }
    impl_->queue.push_back(std::move(item));
    impl_->queue_depth->Set({}, static_cast<double>(impl_->queue.size()));
    impl_->peak_outstanding = std::max(impl_->peak_outstanding, ++impl_->outstanding);
    wake = impl_->queue.size() >= impl_->wake_at;
  }
  if (wake) impl_->queue_cv.notify_one();
}

bool Service::started() const {
  std::lock_guard<std::mutex> lock(impl_->startup_mu);
  return impl_->started;
}

Status Service::startup_status() const {
  std::lock_guard<std::mutex> lock(impl_->startup_mu);
  return impl_->startup_status;
}

Health Service::GetHealth() const {
  Health health;
  if (!started()) return health;
  std::lock_guard<std::mutex> lock(impl_->health_mu);
  if (!impl_->load_status.ok()) health.problems.push_back({"startup", "", impl_->load_status});
  for (const auto& [owner, status] : impl_->failing_owners) health.problems.push_back({"owner", owner, status});
  for (const auto& [key, status] : impl_->failing_timers) health.problems.push_back({"timer", key, status});
  // The store's own facts (its files removed or replaced, its last write failed, audit entries waiting in its
  // backlog) and the writer's (its last write failed, state records waiting here).
  const store::StoreHealth store = impl_->store->Health();
  if (!store.ok()) {
    health.problems.push_back({"store", "", Status::Unavailable(store.problem)});
  } else if (!impl_->store_status.ok()) {
    health.problems.push_back({"store", "", impl_->store_status});
  }
  if (impl_->pending_count > 0 || store.audit_backlog > 0) {
    health.problems.push_back(
        {"store", "",
         Status::Unavailable(std::to_string(impl_->pending_count) + " state record(s) and " +
                             std::to_string(store.audit_backlog) + " audit entries wait in memory to be stored")});
  }
  if (!impl_->backend_status.ok()) health.problems.push_back({"backend", "commit", impl_->backend_status});
  if (!impl_->read_status.ok()) health.problems.push_back({"backend", "read", impl_->read_status});
  health.state = health.problems.empty() ? Health::State::kOk : Health::State::kUnhealthy;
  return health;
}

std::string Health::Problem::Describe() const {
  const std::string head = subject.empty() ? check : check + " " + subject;
  const std::string code(StatusCodeName(status.code()));
  // Owners' and timers' errors quote their rules: those are for the audit log, the events and the log.
  if (check == "owner") {
    return head + ": its state cannot be applied (" + code + "); retried with backoff, the reason is in the audit log";
  }
  if (check == "timer") return head + ": failed (" + code + "); retried, the reason is in the audit log";
  return head + ": " + status.message();
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

std::optional<std::string> Service::SetOwner(std::string_view set) const {
  std::lock_guard<std::mutex> lock(impl_->state_mu);
  for (const auto& [owner, state] : impl_->owners) {
    if (!state.document) continue;
    for (const OwnedSet& s : state.document->sets) {
      if (s.name == set) return owner;
    }
  }
  return std::nullopt;
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

void Service::SetCounterFeed(CounterFeed feed) {
  std::lock_guard<std::mutex> lock(impl_->feed_mu);
  impl_->counter_feed = std::move(feed);
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
  CounterFeed feed;
  {
    std::lock_guard<std::mutex> lock(impl_->feed_mu);
    feed = impl_->counter_feed;
  }
  for (Family family : {Family::kIPv4, Family::kIPv6}) {
    std::shared_ptr<const Ruleset> rs = feed ? feed(family) : nullptr;
    if (!rs) {
      Result<Ruleset> read = List(family);
      if (!read.ok()) continue;
      rs = std::make_shared<const Ruleset>(*std::move(read));
    }
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
  Metrics::Family dropped{
      "iptkitd_audit_dropped_total",
      "Audit entries dropped from the store's full in-memory backlog while it could not be written.",
      "counter",
      {{{}, static_cast<double>(impl_->store->Health().audit_dropped)}}};
  return {managed, packets, bytes, dropped};
}

}  // namespace iptkit::service
