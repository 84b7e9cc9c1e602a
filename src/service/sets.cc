#include "src/service/sets.h"

#include <linux/futex.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "iptkit/dialect.h"
#include "src/ipset/set_json.h"

namespace iptkit::service {
namespace {

std::string Quote(std::string_view s) { return "'" + std::string(s) + "'"; }

std::string EntryDiff(std::string_view verb, std::string_view set, std::string_view elem,
                      const std::optional<uint32_t>& timeout, const std::optional<std::string>& comment) {
  std::string line = std::string(verb) + " " + std::string(set) + " " + std::string(elem);
  if (timeout) line += " timeout " + std::to_string(*timeout);
  if (comment) line += " comment \"" + *comment + "\"";
  return line;
}

// Whether `s` is printable ASCII without '"' and '\\': written into JSON as it is, no escaping.
bool PlainJson(std::string_view s) {
  for (char c : s) {
    if (c < 0x20 || c > 0x7e || c == '"' || c == '\\') return false;
  }
  return true;
}

// The data of the `set_changed` event of an entry add, as nlohmann::json::dump() would write it (members sorted),
// without building a JSON object for each add of a batch when every value is plain.
std::string AddEventData(std::string_view set, std::string_view elem, const std::optional<uint32_t>& timeout,
                         const SetCaller& who) {
  if (!PlainJson(set) || !PlainJson(elem) || !PlainJson(who.principal) || !PlainJson(who.request_id)) {
    nlohmann::json data = {{"entry", elem}, {"op", "add"}, {"set", set}};
    if (timeout) data["timeout"] = *timeout;
    data["principal"] = who.principal;
    data["request_id"] = who.request_id;
    return data.dump();
  }
  std::string out;
  out.reserve(80 + set.size() + elem.size() + who.principal.size() + who.request_id.size());
  out.append(R"({"entry":")").append(elem).append(R"(","op":"add","principal":")").append(who.principal);
  out.append(R"(","request_id":")").append(who.request_id).append(R"(","set":")").append(set).append("\"");
  if (timeout) out.append(R"(,"timeout":)").append(std::to_string(*timeout));
  out.push_back('}');
  return out;
}

std::string_view StageName(SetProgress::Stage stage) {
  switch (stage) {
    case SetProgress::Stage::kChecked:
      return "checked";
    case SetProgress::Stage::kCopied:
      return "copied";
    case SetProgress::Stage::kLoading:
      return "loading";
    case SetProgress::Stage::kSwapped:
      return "swapped";
    case SetProgress::Stage::kDone:
      return "done";
  }
  return "loading";
}

// A caller's wait for its batch: futex(2) directly. std::atomic::wait in libstdc++ 12 spins with sched_yield
// first, which on a loaded machine with 64 waiting request threads gave a seventh of the daemon's CPU to
// sched_yield (perf, iptkitd_set_bench --clients 64).
static_assert(sizeof(std::atomic<int>) == sizeof(int) && std::atomic<int>::is_always_lock_free);
void FutexWait(std::atomic<int>& word, int expected) {
  ::syscall(SYS_futex, reinterpret_cast<int*>(&word), FUTEX_WAIT_PRIVATE, expected, nullptr, nullptr, 0);
}
void FutexWake(std::atomic<int>& word, int waiters) {
  ::syscall(SYS_futex, reinterpret_cast<int*>(&word), FUTEX_WAKE_PRIVATE, waiters, nullptr, nullptr, 0);
}

}  // namespace

struct SetService::CollectorLink {
  std::mutex mu;
  const SetService* sets = nullptr;
};

SetService::SetService(std::string netns, Service* service, store::Store* store, EventBus* events, Metrics* metrics)
    : sets_(std::move(netns)), service_(service), store_(store), events_(events) {
  operations_ =
      &metrics->AddCounter("iptkitd_set_operations_total",
                           "IP set changes through the API, by operation and result (ok or error).", {"op", "result"});
  link_ = std::make_shared<CollectorLink>();
  link_->sets = this;
  std::shared_ptr<CollectorLink> link = link_;
  metrics->AddCollector([link]() -> std::vector<Metrics::Family> {
    std::lock_guard<std::mutex> lock(link->mu);
    if (link->sets == nullptr) return {};
    return link->sets->CollectMetrics();
  });
}

SetService::~SetService() {
  std::lock_guard<std::mutex> lock(link_->mu);
  link_->sets = nullptr;
}

// ---- Reads ----

Result<std::vector<SetInfo>> SetService::List(bool with_entries) const { return sets_.List("", with_entries); }

Result<SetInfo> SetService::Get(std::string_view name, bool with_entries) const {
  return sets_.Get(name, with_entries);
}

Result<bool> SetService::Test(std::string_view name, std::string_view elem) const { return sets_.Test(name, elem); }

Result<std::vector<SetRuleRef>> SetService::ReferencingRules(std::string_view name) const {
  std::vector<SetRuleRef> out;
  for (Family f : {Family::kIPv4, Family::kIPv6}) {
    IPTKIT_ASSIGN_OR_RETURN(Ruleset rs, service_->List(f));
    for (const Table& t : rs.tables) {
      for (const Chain& c : t.chains) {
        for (const Rule& r : c.rules) {
          if (RuleUsesSet(r, name)) out.push_back({f, t.name, c.name, r});
        }
      }
    }
  }
  return out;
}

std::vector<Metrics::Family> SetService::CollectMetrics() const {
  // Listing would make the kernel load ip_set (request_module) when nothing loaded it yet: a scrape changes nothing.
  struct stat st;
  if (::stat("/sys/module/ip_set", &st) != 0) return {};
  Result<std::vector<SetInfo>> list = sets_.List("", false);
  if (!list.ok()) return {};
  Metrics::Family entries{"iptkitd_set_entries", "Entries of each IP set of the served namespace.", "gauge", {}};
  Metrics::Family memory{
      "iptkitd_set_memory_bytes", "Kernel memory of each IP set (ipset's \"Size in memory\").", "gauge", {}};
  Metrics::Family refs{"iptkitd_set_references", "References to each IP set (rules and list:set sets).", "gauge", {}};
  for (const SetInfo& s : *list) {
    entries.samples.push_back({{{"set", s.name}}, static_cast<double>(s.entry_count)});
    memory.samples.push_back({{{"set", s.name}}, static_cast<double>(s.memory_bytes)});
    refs.samples.push_back({{{"set", s.name}}, static_cast<double>(s.references)});
  }
  return {entries, memory, refs};
}

// ---- Recording ----

Status SetService::Record(const SetCaller& who, const std::string& op, std::string_view set, const Status& status,
                          const std::string& diff, nlohmann::json event_data) {
  operations_->Inc({op, status.ok() ? "ok" : "error"});
  store::AuditEntry entry;
  entry.time_ms = NowMs();
  entry.principal = who.principal;
  entry.request_id = who.request_id;
  entry.action = "set_" + op;
  entry.request = who.request_json.empty() ? nlohmann::json({{"set", set}}).dump() : who.request_json;
  entry.result = status.ok() ? "ok" : std::string(StatusCodeName(status.code()));
  entry.message = status.ok() ? "" : status.message();
  entry.diff = status.ok() ? diff : "";
  // Group commit: the records of concurrent callers share one transaction (and one fsync); this returns once this
  // record is stored. A failing store keeps the records queued (they are stored with the next successful write) and
  // is reported by /healthz, as for the rule writer's duties.
  if (Status flushed = store_->StoreAudit(std::move(entry)); !flushed.ok()) {
    spdlog::warn("audit record of set {} {} is queued: {}", op, set, flushed.message());
  }
  if (status.ok()) {
    event_data["op"] = op;
    event_data["set"] = std::string(set);
    event_data["principal"] = who.principal;
    event_data["request_id"] = who.request_id;
    events_->Publish("set_changed", event_data.dump(), NowMs());
  }
  return status;
}

std::function<void(const SetProgress&)> SetService::ProgressPublisher(
    const SetCaller& who, const std::string& op, std::string_view set,
    std::function<void(const SetProgress&)> user) const {
  EventBus* events = events_;
  std::string request_id = who.request_id;
  std::string name(set);
  return [events, request_id, name, op, user = std::move(user)](const SetProgress& p) {
    nlohmann::json data = {{"op", op},       {"set", name},      {"request_id", request_id},
                           {"done", p.done}, {"total", p.total}, {"stage", StageName(p.stage)}};
    events->Publish("set_progress", data.dump(), NowMs());
    if (user) user(p);
  };
}

// ---- Changes ----

Status SetService::Create(const SetCaller& who, std::string_view name, std::string_view type, const SetOptions& options,
                          bool dry_run) {
  std::unique_lock lock(mu_);
  if (dry_run) {
    // Checked by the kernel under a temporary name, then removed.
    Result<SetInfo> existing = sets_.Get(name, false);
    if (existing.ok()) {
      return Status::AlreadyExists("set " + Quote(name) + " exists already").WithToken(std::string(name));
    }
    if (existing.status().code() != StatusCode::kNotFound) return existing.status();
    const std::string probe = std::string(kTempSetPrefix) + "dryrun00";
    IPTKIT_RETURN_IF_ERROR(sets_.Create(probe, type, options));
    return sets_.Destroy(probe);
  }
  Status s = sets_.Create(name, type, options);
  return Record(who, "create", name, s, "create " + std::string(name) + " " + std::string(type),
                {{"type", std::string(type)}});
}

Result<SetDestroyReport> SetService::Destroy(const SetCaller& who, std::string_view name, bool cascade, bool dry_run,
                                             const SubmitFn& submit) {
  std::unique_lock lock(mu_);
  SetDestroyReport report;
  IPTKIT_ASSIGN_OR_RETURN(SetInfo info, sets_.Get(name, false));
  // The kernel's count also holds references it has not dropped yet (a rule deleted a moment ago over the backend's
  // long-lived nf_tables socket): only rules that still use the set refuse here; the library's destroy waits for
  // the late ones (and refuses, naming the set, for those that stay, such as a list:set member).
  if (info.references > 0) {
    IPTKIT_ASSIGN_OR_RETURN(report.rules_deleted, ReferencingRules(name));
  }
  if (!report.rules_deleted.empty() && !cascade) {
    return Status::FailedPrecondition("set " + Quote(name) + " is in use (" +
                                      std::to_string(report.rules_deleted.size()) +
                                      " rule(s)); destroy with cascade to delete the rules that use it first")
        .WithReason("referenced")
        .WithToken(std::string(name));
  }
  if (dry_run) return report;
  if (!report.rules_deleted.empty()) {
    ChangeRequest change;
    change.action = "set_destroy_cascade";
    for (const SetRuleRef& r : report.rules_deleted) change.ops.Delete(r.family, r.table, r.chain, r.rule);
    Result<ChangeResult> done = submit(std::move(change));
    if (!done.ok()) {
      return Record(who, "destroy", name, done.status().WithContext("deleting the rules that use set " + Quote(name)),
                    "", {});
    }
  }
  Status s = sets_.Destroy(name);
  if (!s.ok() && !report.rules_deleted.empty()) {
    s = s.WithContext(std::to_string(report.rules_deleted.size()) +
                      " rule(s) that used the set were deleted, but the set was not destroyed");
  }
  std::string diff;
  for (const SetRuleRef& r : report.rules_deleted) {
    diff += std::string(r.family == Family::kIPv6 ? "-6 " : "") + "-t " + r.table + " -D " + r.chain + " " +
            FormatRuleSpec(r.rule) + "\n";
  }
  diff += "destroy " + std::string(name);
  IPTKIT_RETURN_IF_ERROR(Record(who, "destroy", name, s, diff, {{"rules_deleted", report.rules_deleted.size()}}));
  return report;
}

Result<size_t> SetService::Flush(const SetCaller& who, std::string_view name, bool dry_run) {
  std::shared_lock lock(mu_);
  IPTKIT_ASSIGN_OR_RETURN(SetInfo info, sets_.Get(name, false));
  if (dry_run) return static_cast<size_t>(info.entry_count);
  IPTKIT_RETURN_IF_ERROR(Record(who, "flush", name, sets_.Flush(name), "flush " + std::string(name),
                                {{"entries_removed", info.entry_count}}));
  return static_cast<size_t>(info.entry_count);
}

Status SetService::Rename(const SetCaller& who, std::string_view from, std::string_view to, bool dry_run) {
  std::unique_lock lock(mu_);
  if (dry_run) {
    IPTKIT_ASSIGN_OR_RETURN(SetInfo a, sets_.Get(from, false));
    if (sets_.Get(to, false).ok()) {
      return Status::AlreadyExists("set " + Quote(to) + " exists already").WithToken(std::string(to));
    }
    if (a.references > 0) {
      return Status::FailedPrecondition("set " + Quote(from) + " is in use; a referenced set cannot be renamed")
          .WithReason("referenced")
          .WithToken(std::string(from));
    }
    return Status::Ok();
  }
  return Record(who, "rename", from, sets_.Rename(from, to), "rename " + std::string(from) + " " + std::string(to),
                {{"to", std::string(to)}});
}

Status SetService::Swap(const SetCaller& who, std::string_view a, std::string_view b, bool dry_run) {
  std::unique_lock lock(mu_);
  if (dry_run) {
    IPTKIT_ASSIGN_OR_RETURN(SetInfo x, sets_.Get(a, false));
    IPTKIT_ASSIGN_OR_RETURN(SetInfo y, sets_.Get(b, false));
    if (x.type != y.type || x.options.family != y.options.family) {
      return Status::InvalidArgument("sets " + Quote(a) + " (" + x.type + ") and " + Quote(b) + " (" + y.type +
                                     ") differ in type or family: they cannot be swapped")
          .WithToken(std::string(b));
    }
    return Status::Ok();
  }
  return Record(who, "swap", a, sets_.Swap(a, b), "swap " + std::string(a) + " " + std::string(b),
                {{"with", std::string(b)}});
}

struct SetService::PendingAdd {
  SetCaller* who = nullptr;  // the caller's, which waits for the batch (its strings move into the audit record)
  Ipsets::AddRequest request;
  Status status{};
};

struct SetService::AddBatch {
  // kOpen -> kLeadOffered (the previous batch is written and stored) -> kLed (one caller took the lead) -> kDone.
  // The callers wait on `state` with a futex; the batch is shared with its leader, which wakes them after some may
  // have returned.
  enum State : int { kOpen, kLeadOffered, kLed, kDone };
  std::vector<PendingAdd> adds;  // appended under add_mu_ while open; read-only once its leader took it
  std::atomic<int> state{kOpen};
};

Status SetService::Add(SetCaller who, std::string_view name, std::string_view elem, const SetAddOptions& options,
                       bool dry_run) {
  std::shared_lock lock(mu_);
  if (dry_run) {
    IPTKIT_ASSIGN_OR_RETURN(bool in_set, sets_.Test(name, elem));
    if (in_set && options.no_refresh) {
      return Status::AlreadyExists("entry " + Quote(elem) + " is in set " + Quote(name) + " already")
          .WithToken(std::string(elem));
    }
    return Status::Ok();
  }
  std::shared_ptr<AddBatch> batch;
  size_t index = 0;
  bool lead = false;
  {
    std::lock_guard<std::mutex> adds(add_mu_);
    if (!open_batch_) {
      open_batch_ = std::make_shared<AddBatch>();
      open_batch_->adds.reserve(64);
    }
    batch = open_batch_;
    index = batch->adds.size();
    batch->adds.push_back({&who, {std::string(name), std::string(elem), options}, Status::Ok()});
    if (!add_leader_) add_leader_ = lead = true;
  }
  while (!lead) {
    int state = batch->state.load(std::memory_order_acquire);
    if (state == AddBatch::kDone) break;
    if (state == AddBatch::kLeadOffered &&
        batch->state.compare_exchange_strong(state, AddBatch::kLed, std::memory_order_acq_rel)) {
      lead = true;
      break;
    }
    FutexWait(batch->state, state);
  }
  // The batch a leader takes is the open one, which holds this caller: it is answered when LeadAdds returns.
  if (lead) LeadAdds();
  return batch->adds[index].status;
}

void SetService::LeadAdds() {
  std::shared_ptr<AddBatch> batch;
  {
    std::lock_guard<std::mutex> adds(add_mu_);
    batch = std::move(open_batch_);
    open_batch_ = nullptr;
  }
  std::vector<Ipsets::AddRequest> requests;
  requests.reserve(batch->adds.size());
  for (PendingAdd& p : batch->adds) requests.push_back(std::move(p.request));
  std::vector<Status> results = sets_.AddEach(requests);
  for (size_t i = 0; i < requests.size(); ++i) batch->adds[i].request = std::move(requests[i]);
  StoreAddBatch(*batch, results);
  // The next batch starts after this one's records are stored, not while: the store's fsync is the slower step, and
  // a batch that waits for it gathers more adds (tried: overlapping them made batches smaller and the daemon slower).
  std::shared_ptr<AddBatch> next;
  {
    std::lock_guard<std::mutex> adds(add_mu_);
    if (open_batch_) {
      next = open_batch_;
    } else {
      add_leader_ = false;
    }
  }
  if (next) {
    next->state.store(AddBatch::kLeadOffered, std::memory_order_release);
    FutexWake(next->state, 1);
  }
  batch->state.store(AddBatch::kDone, std::memory_order_release);
  FutexWake(batch->state, INT_MAX);
}

void SetService::StoreAddBatch(AddBatch& batch, const std::vector<Status>& results) {
  const int64_t now = NowMs();
  const size_t n = batch.adds.size();
  size_t failed = 0;
  // The events' data now (published once the records are stored): the audit records take the callers' strings.
  std::vector<std::string> events;
  events.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    PendingAdd& p = batch.adds[i];
    p.status = results[i];
    if (!p.status.ok()) {
      ++failed;
      continue;
    }
    const Ipsets::AddRequest& r = p.request;
    events.push_back(AddEventData(r.set, r.elem, r.options.timeout, *p.who));
  }
  if (n > failed) operations_->Inc({"add", "ok"}, static_cast<double>(n - failed));
  if (failed > 0) operations_->Inc({"add", "error"}, static_cast<double>(failed));
  // The audit records, stored in one transaction: queued in order, the last one waits for the flush that stores
  // them all (Store::StoreAudit stores everything queued before it).
  for (size_t i = 0; i < n; ++i) {
    PendingAdd& p = batch.adds[i];
    const Ipsets::AddRequest& r = p.request;
    store::AuditEntry entry;
    entry.time_ms = now;
    entry.principal = std::move(p.who->principal);
    entry.request_id = std::move(p.who->request_id);
    entry.action = "set_add";
    entry.request =
        p.who->request_json.empty() ? nlohmann::json({{"set", r.set}}).dump() : std::move(p.who->request_json);
    entry.result = p.status.ok() ? "ok" : std::string(StatusCodeName(p.status.code()));
    entry.message = p.status.ok() ? "" : p.status.message();
    entry.diff = p.status.ok() ? EntryDiff("add", r.set, r.elem, r.options.timeout, r.options.comment) : "";
    if (i + 1 < n) {
      store_->QueueAudit(std::move(entry));
    } else if (Status flushed = store_->StoreAudit(std::move(entry)); !flushed.ok()) {
      spdlog::warn("audit records of {} set add(s) are queued: {}", n, flushed.message());
    }
  }
  for (std::string& data : events) events_->Publish("set_changed", std::move(data), NowMs());
}

Status SetService::Delete(const SetCaller& who, std::string_view name, std::string_view elem, bool dry_run) {
  std::shared_lock lock(mu_);
  if (dry_run) {
    IPTKIT_ASSIGN_OR_RETURN(bool in_set, sets_.Test(name, elem));
    if (!in_set) {
      return Status::NotFound("entry " + Quote(elem) + " is not in set " + Quote(name)).WithToken(std::string(elem));
    }
    return Status::Ok();
  }
  return Record(who, "delete", name, sets_.Delete(name, elem), EntryDiff("del", name, elem, {}, {}),
                {{"entry", std::string(elem)}});
}

Result<SetChangeReport> SetService::Load(const SetCaller& who, std::string_view name,
                                         const std::vector<SetEntrySpec>& entries, SetLoadOptions options) {
  std::unique_lock lock(mu_);
  options.progress = ProgressPublisher(who, "load", name, std::move(options.progress));
  const bool dry = options.dry_run;
  Result<SetChangeReport> report = sets_.Load(name, entries, options);
  if (dry) return report;
  Status s = report.ok() ? Status::Ok() : report.status();
  IPTKIT_RETURN_IF_ERROR(
      Record(who, "load", name, s,
             report.ok() ? "load " + std::string(name) + ": " + std::to_string(entries.size()) + " entries" : "",
             report.ok() ? nlohmann::json({{"report", SetChangeReportToJson(*report)}}) : nlohmann::json::object()));
  return report;
}

Result<SetChangeReport> SetService::Sync(const SetCaller& who, std::string_view name,
                                         const std::vector<SetEntrySpec>& entries, SetSyncOptions options) {
  std::unique_lock lock(mu_);
  options.progress = ProgressPublisher(who, "sync", name, std::move(options.progress));
  const bool dry = options.dry_run;
  Result<SetChangeReport> report = sets_.Sync(name, entries, options);
  if (dry) return report;
  Status s = report.ok() ? Status::Ok() : report.status();
  IPTKIT_RETURN_IF_ERROR(
      Record(who, "sync", name, s,
             report.ok() ? "sync " + std::string(name) + ": " + std::to_string(entries.size()) + " entries" : "",
             report.ok() ? nlohmann::json({{"report", SetChangeReportToJson(*report)}}) : nlohmann::json::object()));
  return report;
}

}  // namespace iptkit::service
