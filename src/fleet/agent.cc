#include "src/fleet/agent.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>
#include <utility>

#include "iptkit/dialect.h"
#include "src/fleet/prefix_watcher.h"
#include "src/json/json_codec.h"

namespace iptkit::fleet {
namespace {

using Json = nlohmann::json;

constexpr char kAppliedMeta[] = "fleet:applied:";
constexpr char kRevisionMeta[] = "fleet:revision";
constexpr size_t kMaxParallel = 64;

bool ValidName(std::string_view s) {
  return !s.empty() && s.size() <= 64 && std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
  });
}

// What this host applied for one key (the store's meta value, JSON).
struct Applied {
  int64_t revision = 0;
  std::string kind;  // "owner" or "rule"
  std::string owner;
  // kind "rule": its identity, to remove it when the key goes or changes.
  std::string family, table, chain, spec;

  std::string ToJson() const {
    Json j = {{"rev", revision}, {"kind", kind}, {"owner", owner}};
    if (kind == "rule") {
      j["family"] = family;
      j["table"] = table;
      j["chain"] = chain;
      j["spec"] = spec;
    }
    return j.dump();
  }
  static std::optional<Applied> FromJson(const std::string& text) {
    Json j = Json::parse(text, nullptr, false);
    if (!j.is_object()) return std::nullopt;
    Applied a;
    a.revision = j.value("rev", int64_t{0});
    a.kind = j.value("kind", "");
    a.owner = j.value("owner", "");
    a.family = j.value("family", "");
    a.table = j.value("table", "");
    a.chain = j.value("chain", "");
    a.spec = j.value("spec", "");
    return a;
  }
};

// A TTL rule document (docs/fleet.md).
struct RuleDoc {
  std::string owner;
  Family family = Family::kIPv4;
  std::string family_name = "ipv4";
  std::string table = "filter";
  std::string chain;
  std::string spec;
  store::Position position = store::Position::kLast;
  int64_t expires_at = 0;  // Unix seconds
};

Status Bad(const std::string& key, const std::string& why) {
  return Status::InvalidArgument("etcd key " + key + ": " + why);
}

Result<RuleDoc> ParseRuleDoc(const std::string& key, const std::string& text) {
  Json j = Json::parse(text, nullptr, false);
  if (!j.is_object()) return Bad(key, "not a JSON object");
  RuleDoc d;
  auto str = [&](const char* name, std::string* out, bool required) -> Status {
    auto it = j.find(name);
    if (it == j.end()) return required ? Bad(key, std::string("/") + name + " is required") : Status::Ok();
    if (!it->is_string()) return Bad(key, std::string("/") + name + " must be a string");
    *out = it->get<std::string>();
    return Status::Ok();
  };
  IPTKIT_RETURN_IF_ERROR(str("owner", &d.owner, true));
  IPTKIT_RETURN_IF_ERROR(str("family", &d.family_name, false));
  IPTKIT_RETURN_IF_ERROR(str("table", &d.table, false));
  IPTKIT_RETURN_IF_ERROR(str("chain", &d.chain, true));
  IPTKIT_RETURN_IF_ERROR(str("spec", &d.spec, true));
  std::string position = "last";
  IPTKIT_RETURN_IF_ERROR(str("position", &position, false));
  if (Status s = ValidateOwner(d.owner); !s.ok()) return Bad(key, "/owner: " + s.message());
  if (d.family_name == "ipv4") {
    d.family = Family::kIPv4;
  } else if (d.family_name == "ipv6") {
    d.family = Family::kIPv6;
  } else {
    return Bad(key, "/family must be ipv4 or ipv6");
  }
  if (position == "first") {
    d.position = store::Position::kFirst;
  } else if (position != "last") {
    return Bad(key, "/position must be first or last");
  }
  auto it = j.find("expires_at");
  if (it == j.end() || !it->is_number_integer()) return Bad(key, "/expires_at must be an integer (Unix seconds)");
  d.expires_at = it->get<int64_t>();
  for (const auto& [name, value] : j.items()) {
    static const std::set<std::string> known = {"owner", "family", "table", "chain", "spec", "position", "expires_at"};
    if (!known.contains(name)) return Bad(key, "/" + name + ": unknown field");
  }
  return d;
}

bool InScope(const std::vector<std::string>& allowed, const std::string& name) {
  return allowed.empty() || std::find(allowed.begin(), allowed.end(), name) != allowed.end();
}

}  // namespace

Status ValidateAgentOptions(const AgentOptions& o) {
  if (o.etcd.endpoints.empty()) return Status::InvalidArgument("etcd: at least one endpoint is needed");
  for (const std::string& e : o.etcd.endpoints) IPTKIT_RETURN_IF_ERROR(ParseEndpoint(e).status());
  if (o.prefix.empty() || o.prefix.front() != '/' || o.prefix.back() == '/') {
    return Status::InvalidArgument("prefix '" + o.prefix + "': must start with '/' and not end with '/'");
  }
  if (!ValidName(o.group)) return Status::InvalidArgument("group '" + o.group + "': expected [A-Za-z0-9._-]{1,64}");
  if (!ValidName(o.host_id)) {
    return Status::InvalidArgument("host id '" + o.host_id + "': expected [A-Za-z0-9._-]{1,64}");
  }
  for (const auto& [k, v] : o.labels) {
    if (!ValidName(k)) return Status::InvalidArgument("label '" + k + "': expected [A-Za-z0-9._-]{1,64}");
  }
  for (const std::string& owner : o.owners) IPTKIT_RETURN_IF_ERROR(ValidateOwner(owner));
  if (o.max_ttl_seconds && *o.max_ttl_seconds <= 0) return Status::InvalidArgument("max TTL must be > 0");
  if (o.report_ttl.count() < 1) return Status::InvalidArgument("report TTL must be at least 1 s");
  return Status::Ok();
}

struct Agent::Impl {
  AgentOptions options;
  service::Service* service = nullptr;
  store::Store* store = nullptr;
  std::string group_prefix;  // PREFIX/groups/GROUP/
  std::string host_key;      // PREFIX/hosts/HOST_ID
  std::unique_ptr<EtcdClient> watch_etcd;
  std::unique_ptr<EtcdClient> report_etcd;
  std::unique_ptr<PrefixWatcher> watcher;
  std::thread applier;
  std::thread reporter;

  mutable std::mutex mu;
  std::condition_variable cv;
  bool stop = false;
  std::optional<PrefixWatcher::Snapshot> latest;   // not yet applied
  std::optional<PrefixWatcher::Snapshot> current;  // the last one applied (kept for retries)
  std::map<std::string, Applied> applied;
  std::map<std::string, AgentStatus::KeyError> errors;
  std::string last_error;
  bool connected = false;
  int64_t pass_revision = 0;  // the revision of the last pass
  int64_t seen_revision = 0;  // the revision of the last pass that was not refused (the .force rule)
  uint64_t report_version = 1;

  void MarkDirty() {
    ++report_version;
    cv.notify_all();
  }

  std::string Principal(int64_t revision) const {
    return "etcd:" + (options.etcd.user.empty() ? std::string("anonymous") : options.etcd.user) + "@" +
           std::to_string(revision);
  }

  // One pass over a snapshot: applies every key whose revision differs from the applied one.
  void Pass(const PrefixWatcher::Snapshot& snap);
  void RunApplier();
  void RunReporter();
  std::string ReportJson() const;
};

void Agent::Impl::Pass(const PrefixWatcher::Snapshot& snap) {
  const std::string marker = group_prefix + ".group";
  const std::string force_key = group_prefix + ".force";
  std::map<std::string, Applied> applied_now;
  int64_t seen;
  {
    std::lock_guard<std::mutex> lock(mu);
    pass_revision = snap.revision;
    applied_now = applied;
    seen = seen_revision;
    if (!snap.kvs.contains(marker)) {
      last_error = "the marker key " + marker + " does not exist: nothing is applied (docs/fleet.md)";
      MarkDirty();
      return;
    }
  }

  struct Work {
    std::string key;
    int64_t revision = 0;
    service::ChangeRequest request;
    std::optional<Applied> record;  // what to store as applied on success (nullopt: the key is gone)
  };
  std::vector<Work> work;
  std::map<std::string, AgentStatus::KeyError> new_errors;

  // Removals first counted: owners this agent applied whose key is gone.
  std::vector<std::string> gone;
  size_t owners_gone = 0;
  for (const auto& [key, a] : applied_now) {
    if (!snap.kvs.contains(key)) {
      gone.push_back(key);
      if (a.kind == "owner") ++owners_gone;
    }
  }
  if (owners_gone > options.max_removals) {
    auto f = snap.kvs.find(force_key);
    if (f == snap.kvs.end() || f->second.mod_revision <= seen) {
      std::lock_guard<std::mutex> lock(mu);
      last_error = "refused: removing " + std::to_string(owners_gone) + " owners at revision " +
                   std::to_string(snap.revision) + " exceeds max_removals " + std::to_string(options.max_removals) +
                   "; write " + force_key + " in the same etcd transaction to force it";
      MarkDirty();
      return;
    }
  }

  for (const std::string& key : gone) {
    const Applied& a = applied_now[key];
    Work w;
    w.key = key;
    w.revision = snap.revision;
    w.request.principal = Principal(snap.revision);
    w.request.request_id = "etcd:" + key + "@" + std::to_string(snap.revision);
    if (a.kind == "owner") {
      w.request.action = "fleet_delete_owner";
      w.request.delete_owner = a.owner;
      w.request.request_json = Json{{"etcd_key", key}, {"delete_owner", a.owner}}.dump();
    } else {
      Family family = a.family == "ipv6" ? Family::kIPv6 : Family::kIPv4;
      Result<Rule> rule = ParseRuleSpec(a.spec, family);
      if (rule.ok()) {
        w.request.action = "fleet_delete_rule";
        w.request.deletes.push_back({a.owner, family, a.table, a.chain, *rule});
        w.request.request_json = Json{{"etcd_key", key}, {"delete_rule", a.spec}}.dump();
      }
    }
    w.request.store_meta.push_back({kAppliedMeta + key, std::nullopt});
    work.push_back(std::move(w));
  }

  const std::string owners_dir = group_prefix + "owners/";
  const std::string rules_dir = group_prefix + "rules/";
  const std::string sets_dir = group_prefix + "sets/";
  const int64_t now_s = service::NowMs() / 1000;
  for (const auto& [key, kv] : snap.kvs) {
    auto it = applied_now.find(key);
    if (it != applied_now.end() && it->second.revision == kv.mod_revision) continue;
    auto fail = [&](const Status& s) { new_errors[key] = {kv.mod_revision, s.message()}; };
    Work w;
    w.key = key;
    w.revision = kv.mod_revision;
    w.request.principal = Principal(kv.mod_revision);
    w.request.request_id = "etcd:" + key + "@" + std::to_string(kv.mod_revision);
    w.request.request_json = kv.value;
    if (key.starts_with(owners_dir)) {
      const std::string owner = key.substr(owners_dir.size());
      if (Status s = ValidateOwner(owner); !s.ok()) {
        fail(Bad(key, "the owner name: " + s.message()));
        continue;
      }
      if (!InScope(options.owners, owner)) {
        fail(Status::PermissionDenied("etcd key " + key + ": owner '" + owner + "' is outside this agent's scope"));
        continue;
      }
      json::Json j = json::Json::parse(kv.value, nullptr, false);
      if (!j.is_object()) {
        fail(Bad(key, "not a JSON object"));
        continue;
      }
      if (auto o = j.find("owner"); o == j.end()) {
        j["owner"] = owner;
      } else if (!o->is_string() || o->get<std::string>() != owner) {
        fail(Bad(key, "/owner must equal the owner named in the key ('" + owner + "')"));
        continue;
      }
      Result<DesiredState> doc = json::DesiredStateFromJson(j, json::DialectSpec());
      if (!doc.ok()) {
        fail(Bad(key, doc.status().message()));
        continue;
      }
      std::string outside;
      for (const OwnedChain& c : doc->chains) {
        if (!InScope(options.tables, c.table)) outside = c.table;
      }
      for (const HookRule& h : doc->hooks) {
        if (!InScope(options.tables, h.table)) outside = h.table;
      }
      if (!outside.empty()) {
        fail(Status::PermissionDenied("etcd key " + key + ": table '" + outside + "' is outside this agent's scope"));
        continue;
      }
      w.request.action = "fleet_put_owner";
      w.request.put_owner = *std::move(doc);
      w.record = Applied{.revision = kv.mod_revision,
                         .kind = "owner",
                         .owner = owner,
                         .family = "",
                         .table = "",
                         .chain = "",
                         .spec = ""};
    } else if (key.starts_with(rules_dir)) {
      if (!ValidName(key.substr(rules_dir.size()))) {
        fail(Bad(key, "a rule id is [A-Za-z0-9._-]{1,64}"));
        continue;
      }
      Result<RuleDoc> d = ParseRuleDoc(key, kv.value);
      if (!d.ok()) {
        fail(d.status());
        continue;
      }
      if (!InScope(options.owners, d->owner) || !InScope(options.tables, d->table)) {
        fail(Status::PermissionDenied("etcd key " + key + ": owner '" + d->owner + "' or table '" + d->table +
                                      "' is outside this agent's scope"));
        continue;
      }
      Result<Rule> rule = ParseRuleSpec(d->spec, d->family);
      if (!rule.ok()) {
        fail(Bad(key, "/spec: " + rule.status().message()));
        continue;
      }
      const int64_t ttl = d->expires_at - now_s;
      if (options.max_ttl_seconds && ttl > *options.max_ttl_seconds) {
        fail(Status::PermissionDenied("etcd key " + key + ": expires in " + std::to_string(ttl) +
                                      " s, more than this agent's max TTL of " +
                                      std::to_string(*options.max_ttl_seconds) + " s"));
        continue;
      }
      // A changed rule replaces the one applied before (its identity may differ).
      if (it != applied_now.end() && it->second.kind == "rule") {
        const Applied& old = it->second;
        Family f = old.family == "ipv6" ? Family::kIPv6 : Family::kIPv4;
        if (Result<Rule> r = ParseRuleSpec(old.spec, f); r.ok()) {
          if (old.owner != d->owner || old.family != d->family_name || old.table != d->table || old.chain != d->chain ||
              old.spec != d->spec || ttl <= 0) {
            w.request.deletes.push_back({old.owner, f, old.table, old.chain, *r});
          }
        }
      }
      w.request.action = "fleet_rule";
      if (ttl > 0) {
        w.request.adds.push_back({d->owner, d->family, d->table, d->chain, *rule, d->position, ttl});
      }
      // An expired rule is applied as "absent" (the TTL expiry removed it, or it never needed adding).
      w.record = Applied{.revision = kv.mod_revision,
                         .kind = "rule",
                         .owner = d->owner,
                         .family = d->family_name,
                         .table = d->table,
                         .chain = d->chain,
                         .spec = d->spec};
    } else if (key.starts_with(sets_dir)) {
      fail(Status::FailedPrecondition("etcd key " + key + ": set documents are not supported by this agent yet"));
      continue;
    } else {
      continue;  // the marker, .force, and keys of later versions of the layout
    }
    w.request.store_meta.push_back({kAppliedMeta + key, w.record->ToJson()});
    work.push_back(std::move(w));
  }

  // Submitted together, so the writer plans and commits them as one group; each fails alone.
  std::vector<Status> results(work.size());
  for (size_t begin = 0; begin < work.size(); begin += kMaxParallel) {
    std::vector<std::thread> threads;
    for (size_t i = begin; i < std::min(work.size(), begin + kMaxParallel); ++i) {
      threads.emplace_back([&, i] {
        if (work[i].request.action.empty()) {  // a rule removal whose recorded spec no longer parses
          results[i] = Status::Ok();
          return;
        }
        Result<service::ChangeResult> r = service->Submit(work[i].request);
        if (!r.ok() && r.status().code() == StatusCode::kNotFound && work[i].record &&
            !work[i].request.deletes.empty()) {
          // The rule this key replaces is gone already (its TTL passed): only the new one remains to add.
          service::ChangeRequest again = work[i].request;
          again.deletes.clear();
          r = service->Submit(std::move(again));
        }
        Status s = r.status();
        // Removing what is gone already is done.
        if (!s.ok() && s.code() == StatusCode::kNotFound && !work[i].record) s = Status::Ok();
        results[i] = s;
      });
    }
    for (std::thread& t : threads) t.join();
  }

  std::lock_guard<std::mutex> lock(mu);
  for (size_t i = 0; i < work.size(); ++i) {
    const Work& w = work[i];
    if (results[i].ok()) {
      if (w.record) {
        applied[w.key] = *w.record;
      } else {
        applied.erase(w.key);
      }
      errors.erase(w.key);
    } else {
      errors[w.key] = {w.revision, results[i].message()};
      spdlog::warn("fleet: {} at revision {}: {}", w.key, w.revision, results[i].ToString());
    }
  }
  for (auto& [key, e] : new_errors) {
    spdlog::warn("fleet: {} at revision {}: {}", key, e.revision, e.error);
    errors[key] = std::move(e);
  }
  // Errors of keys that are gone (and were never applied) go with them.
  for (auto it = errors.begin(); it != errors.end();) {
    it = snap.kvs.contains(it->first) || applied.contains(it->first) ? std::next(it) : errors.erase(it);
  }
  last_error.clear();
  seen_revision = snap.revision;
  if (Status s = store->PutMeta(kRevisionMeta, std::to_string(snap.revision)); !s.ok()) {
    spdlog::warn("fleet: cannot store the revision: {}", s.ToString());
  }
  MarkDirty();
}

void Agent::Impl::RunApplier() {
  std::unique_lock<std::mutex> lock(mu);
  for (;;) {
    bool retry = false;
    cv.wait_for(lock, options.retry_interval, [&] { return stop || latest.has_value(); });
    if (stop) return;
    if (!latest) {
      retry = current.has_value() && (!errors.empty() || !last_error.empty());
      if (!retry) continue;
      latest = current;
    }
    PrefixWatcher::Snapshot snap = *std::move(latest);
    latest.reset();
    lock.unlock();
    Pass(snap);
    lock.lock();
    current = std::move(snap);
  }
}

std::string Agent::Impl::ReportJson() const {
  Json applied_json = Json::object();
  for (const auto& [key, a] : applied) applied_json[key] = a.revision;
  Json errors_json = Json::object();
  for (const auto& [key, e] : errors) errors_json[key] = {{"revision", e.revision}, {"error", e.error}};
  Json labels = Json::object();
  for (const auto& [k, v] : options.labels) labels[k] = v;
  Json j = {{"host_id", options.host_id}, {"group", options.group},        {"labels", labels},
            {"backend", options.backend}, {"version", options.version},    {"revision", pass_revision},
            {"applied", applied_json},    {"errors", errors_json},         {"last_error", last_error},
            {"connected", connected},     {"updated_ms", service::NowMs()}};
  return j.dump();
}

void Agent::Impl::RunReporter() {
  const auto ttl = options.report_ttl;
  const auto keepalive_every = std::max<std::chrono::milliseconds>(ttl / 3, std::chrono::milliseconds(200));
  int64_t lease = 0;
  uint64_t reported = 0;
  auto next_keepalive = std::chrono::steady_clock::now();
  std::chrono::milliseconds backoff(100);
  std::unique_lock<std::mutex> lock(mu);
  while (!stop) {
    std::string report;
    bool dirty = reported != report_version;
    uint64_t version = report_version;
    if (dirty || lease == 0) report = ReportJson();
    lock.unlock();
    Status s;
    if (lease == 0) {
      Result<int64_t> granted = report_etcd->LeaseGrant(ttl.count());
      s = granted.status();
      if (granted.ok()) lease = *granted;
      next_keepalive = std::chrono::steady_clock::now() + keepalive_every;
    } else if (std::chrono::steady_clock::now() >= next_keepalive) {
      Result<int64_t> kept = report_etcd->LeaseKeepAlive(lease);
      s = kept.status();
      if (s.code() == StatusCode::kNotFound) lease = 0;  // expired during an outage: a new one, and put again
      next_keepalive = std::chrono::steady_clock::now() + keepalive_every;
    }
    if (s.ok() && lease != 0 && !report.empty()) {
      Result<int64_t> put = report_etcd->Put(host_key, report, lease);
      s = put.status();
      if (s.code() == StatusCode::kNotFound) lease = 0;
    }
    lock.lock();
    if (s.ok() && lease != 0 && !report.empty()) reported = version;
    if (!s.ok()) {
      if (lease == 0) reported = 0;
      spdlog::debug("fleet: report: {}", s.ToString());
      cv.wait_for(lock, backoff, [&] { return stop; });
      backoff = std::min<std::chrono::milliseconds>(backoff * 2, std::chrono::seconds(2));
      continue;
    }
    if (lease == 0) reported = 0;
    backoff = std::chrono::milliseconds(100);
    auto until = next_keepalive;
    cv.wait_until(lock, until, [&] { return stop || reported != report_version; });
  }
  lock.unlock();
  // A clean stop takes the report away at once (a crash leaves it to the lease's TTL).
  report_etcd->ResetInterrupt();
  if (lease != 0) (void)report_etcd->LeaseRevoke(lease);
}

Result<std::unique_ptr<Agent>> Agent::Start(AgentOptions options, service::Service* service, store::Store* store) {
  IPTKIT_RETURN_IF_ERROR(ValidateAgentOptions(options));
  std::unique_ptr<Agent> agent(new Agent());
  agent->impl_ = std::make_unique<Impl>();
  Impl& impl = *agent->impl_;
  impl.options = std::move(options);
  impl.service = service;
  impl.store = store;
  impl.group_prefix = impl.options.prefix + "/groups/" + impl.options.group + "/";
  impl.host_key = impl.options.prefix + "/hosts/" + impl.options.host_id;
  IPTKIT_ASSIGN_OR_RETURN(impl.watch_etcd, EtcdClient::Create(impl.options.etcd));
  IPTKIT_ASSIGN_OR_RETURN(impl.report_etcd, EtcdClient::Create(impl.options.etcd));
  // What this host applied before (the service re-applied it already from its own store).
  IPTKIT_ASSIGN_OR_RETURN(auto metas, store->ListMeta(kAppliedMeta));
  for (const auto& [meta_key, value] : metas) {
    std::optional<Applied> a = Applied::FromJson(value);
    if (a) impl.applied[meta_key.substr(sizeof(kAppliedMeta) - 1)] = *a;
  }
  IPTKIT_ASSIGN_OR_RETURN(std::optional<std::string> rev, store->GetMeta(kRevisionMeta));
  if (rev) impl.seen_revision = std::atoll(rev->c_str());
  impl.watcher =
      std::make_unique<PrefixWatcher>(impl.watch_etcd.get(), impl.group_prefix,
                                      PrefixWatcher::Callbacks{.on_state =
                                                                   [&impl](const PrefixWatcher::Snapshot& s) {
                                                                     std::lock_guard<std::mutex> lock(impl.mu);
                                                                     impl.latest = s;
                                                                     impl.connected = true;
                                                                     impl.cv.notify_all();
                                                                   },
                                                               .on_connection =
                                                                   [&impl](const Status& s) {
                                                                     std::lock_guard<std::mutex> lock(impl.mu);
                                                                     if (impl.connected != s.ok()) {
                                                                       impl.connected = s.ok();
                                                                       if (!s.ok())
                                                                         spdlog::warn("fleet: etcd: {}", s.ToString());
                                                                       impl.MarkDirty();
                                                                     }
                                                                   }});
  impl.applier = std::thread([&impl] { impl.RunApplier(); });
  impl.reporter = std::thread([&impl] { impl.RunReporter(); });
  impl.watcher->Start();
  spdlog::info("fleet: agent {} watching {} on {}", impl.options.host_id, impl.group_prefix,
               impl.options.etcd.endpoints.front());
  return agent;
}

Agent::~Agent() { Stop(); }

void Agent::Stop() {
  if (!impl_) return;
  if (impl_->watcher) impl_->watcher->Stop();
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->stop = true;
  }
  impl_->cv.notify_all();
  impl_->report_etcd->Interrupt();  // a report call waiting for an unreachable etcd
  if (impl_->applier.joinable()) impl_->applier.join();
  if (impl_->reporter.joinable()) impl_->reporter.join();
}

AgentStatus Agent::GetStatus() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  AgentStatus s;
  s.connected = impl_->connected;
  s.revision = impl_->pass_revision;
  for (const auto& [key, a] : impl_->applied) s.applied[key] = a.revision;
  s.errors = impl_->errors;
  s.last_error = impl_->last_error;
  return s;
}

}  // namespace iptkit::fleet
