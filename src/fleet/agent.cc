#include "src/fleet/agent.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>
#include <utility>

#include "iptkit/dialect.h"
#include "iptkit/ipset.h"
#include "src/fleet/prefix_watcher.h"
#include "src/fleet/set_doc.h"
#include "src/json/json_codec.h"

namespace iptkit::fleet {
namespace {

using Json = nlohmann::json;

constexpr char kAppliedMeta[] = "fleet:applied:";
constexpr char kRevisionMeta[] = "fleet:revision";
constexpr size_t kMaxParallel = 64;
constexpr std::chrono::seconds kDefaultCanaryTimeout{120};
// How often a host whose canary gate is open looks at the canaries' reports.
constexpr std::chrono::milliseconds kGatePoll{250};
// The name prefix of a set a document's new type or options are built in before the swap (Rebuild); 8 hex digits
// follow. Not iptkit-tmp-: a Sync of the set service drops unreferenced iptkit-tmp- sets, also one being built here.
constexpr char kRebuildPrefix[] = "iptkit-fl-";

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

// A document's "canary" ("k=v") and "canary_timeout" (seconds, 1..86400), both optional.
Status CheckCanary(const std::string& key, const Json& j) {
  if (auto c = j.find("canary");
      c != j.end() && (!c->is_string() || c->get<std::string>().find('=') == std::string::npos ||
                       c->get<std::string>().front() == '=')) {
    return Bad(key, "/canary must be a label \"k=v\"");
  }
  if (auto t = j.find("canary_timeout");
      t != j.end() && (!t->is_number_unsigned() || t->get<uint64_t>() < 1 || t->get<uint64_t>() > 86400)) {
    return Bad(key, "/canary_timeout must be 1..86400 (seconds)");
  }
  return Status::Ok();
}

Result<RuleDoc> ParseRuleDoc(const std::string& key, const std::string& text) {
  Json j = Json::parse(text, nullptr, false);
  if (!j.is_object()) return Bad(key, "not a JSON object");
  IPTKIT_RETURN_IF_ERROR(CheckCanary(key, j));
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
    static const std::set<std::string> known = {"owner",    "family",     "table",  "chain",         "spec",
                                                "position", "expires_at", "canary", "canary_timeout"};
    if (!known.contains(name)) return Bad(key, "/" + name + ": unknown field");
  }
  return d;
}

bool InScope(const std::vector<std::string>& allowed, const std::string& name) {
  return allowed.empty() || std::find(allowed.begin(), allowed.end(), name) != allowed.end();
}

// The canary label a document names (docs/fleet.md "Canary rollout").
struct Canary {
  std::string label;  // k=v
  std::chrono::seconds timeout = kDefaultCanaryTimeout;
};

// A document's "canary" and "canary_timeout"; nullopt when it names none (or is not JSON: then its own parse fails
// and reports it). A malformed canary is the document's error, reported by its parser.
std::optional<Canary> CanaryOf(const std::string& value) {
  if (value.find("\"canary\"") == std::string::npos) return std::nullopt;
  Json j = Json::parse(value, nullptr, false);
  if (!j.is_object()) return std::nullopt;
  auto c = j.find("canary");
  if (c == j.end() || !c->is_string() || c->get<std::string>().find('=') == std::string::npos) return std::nullopt;
  Canary out{c->get<std::string>(), kDefaultCanaryTimeout};
  if (auto t = j.find("canary_timeout");
      t != j.end() && t->is_number_unsigned() && t->get<uint64_t>() >= 1 && t->get<uint64_t>() <= 86400) {
    out.timeout = std::chrono::seconds(t->get<int64_t>());
  }
  return out;
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
  service::SetService* sets = nullptr;  // nullptr: set documents are refused
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
  // gates_only: only the transactions behind an open canary gate (the 250 ms polls between retries).
  void Pass(const PrefixWatcher::Snapshot& snap, bool gates_only = false);

  // Canary rollout (docs/fleet.md): the gate of one key's revision on a host without the document's label.
  struct Gate {
    int64_t revision = 0;
    std::string label;  // k=v
    std::chrono::seconds timeout{0};
    std::chrono::steady_clock::time_point opened;
    std::set<std::string> canaries;  // hosts seen with the label since the gate opened
    std::string state;               // "waiting", "passed", "failed"
    std::string detail;
  };
  std::map<std::string, Gate> gates;  // guarded by mu; touched by the applier only
  bool HasLabel(const std::string& label) const {
    const size_t eq = label.find('=');
    auto it = options.labels.find(label.substr(0, eq));
    return it != options.labels.end() && it->second == label.substr(eq + 1);
  }
  // The reports of this group's hosts (host id -> report); nullopt when etcd cannot be read.
  std::optional<std::map<std::string, Json>> ReadReports();
  void EvaluateGate(const std::string& key, Gate& gate, const std::optional<std::map<std::string, Json>>& reports);

  // How to put a set back as it was before ApplySet.
  struct SetUndo {
    std::string name;
    bool created = false;           // destroy it
    std::optional<SetInfo> before;  // or restore this (with entries)
  };
  // Makes the set what the document says, through a temporary set and a swap (the set service's Sync; when the
  // live set's type or create options differ, a new set built aside and swapped in).
  Result<SetUndo> ApplySet(const service::SetCaller& who, const SetDoc& doc);
  // Destroys the sets a Rebuild interrupted by a crash left behind (kRebuildPrefix, referenced by nothing).
  void DropLeftoverRebuilds();
  Status Rebuild(const service::SetCaller& who, const std::string& name, const std::string& type,
                 const SetOptions& options, const std::vector<SetEntrySpec>& entries);
  void UndoSets(const std::string& principal, std::vector<SetUndo>& undos);
  // Submits a group's request; rule deletes that find their rule gone already (its TTL passed) are dropped.
  Status SubmitGroupRequest(const service::ChangeRequest& request);
  void RunApplier();
  void RunReporter();
  std::string ReportJson() const;
};

void Agent::Impl::Pass(const PrefixWatcher::Snapshot& snap, bool gates_only) {
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

  const std::string owners_dir = group_prefix + "owners/";
  const std::string rules_dir = group_prefix + "rules/";
  const std::string sets_dir = group_prefix + "sets/";
  const int64_t now_s = service::NowMs() / 1000;

  // The keys of one etcd transaction (one mod_revision) are applied together: one request to the writer (one
  // audit record, one commit), the sets of the transaction before it; when any of them fails, none is applied.
  struct SetWork {
    std::string key;  // the set document
    SetDoc doc;
  };
  struct Group {
    int64_t revision = 0;
    service::ChangeRequest request;
    std::vector<std::pair<std::string, std::optional<Applied>>> records;  // key -> applied on success, or gone
    std::map<std::string, std::string> values;                            // key -> value (for the audit record)
    std::vector<SetWork> sets;
    std::vector<std::pair<std::string, std::string>> set_destroys;  // key, set name
    std::map<std::string, Status> key_errors;                       // keys that could not be prepared
    std::map<std::string, Canary> canaries;                         // keys of documents that name a canary label
    bool waiting = false;                                           // for canaries: not applied yet
    Status status;                                                  // of the group
  };
  std::map<int64_t, Group> groups;
  auto group_of = [&](int64_t revision) -> Group& {
    Group& g = groups[revision];
    g.revision = revision;
    return g;
  };

  std::set<std::string> live_owners;
  for (const service::OwnerView& o : service->Owners()) live_owners.insert(o.owner);

  for (const std::string& key : gone) {
    const Applied& a = applied_now[key];
    auto d = snap.deleted.find(key);
    Group& g = group_of(d != snap.deleted.end() ? d->second : snap.revision);
    g.records.push_back({key, std::nullopt});
    g.values[key] = "";
    if (a.kind == "owner") {
      if (live_owners.contains(a.owner)) g.request.delete_owners.push_back(a.owner);
    } else if (a.kind == "rule") {
      Family family = a.family == "ipv6" ? Family::kIPv6 : Family::kIPv4;
      Result<Rule> rule = ParseRuleSpec(a.spec, family);
      if (rule.ok()) g.request.deletes.push_back({a.owner, family, a.table, a.chain, *rule});
    } else if (a.kind == "set") {
      g.set_destroys.push_back({key, a.owner});
    }
    // "chunk": nothing of its own to remove.
  }

  // Set documents, with their chunks: one unit keyed by the document.
  for (const auto& [key, kv] : snap.kvs) {
    if (!key.starts_with(sets_dir)) continue;
    const std::string rest = key.substr(sets_dir.size());
    if (rest.find('/') != std::string::npos) continue;
    const std::string chunk_prefix = key + "/chunk/";
    std::vector<const KeyValue*> chunks;
    for (auto c = snap.kvs.lower_bound(chunk_prefix); c != snap.kvs.end() && c->first.starts_with(chunk_prefix); ++c) {
      chunks.push_back(&c->second);
    }
    bool current = applied_now.contains(key) && applied_now[key].revision == kv.mod_revision;
    for (const KeyValue* c : chunks) {
      current = current && applied_now.contains(c->key) && applied_now[c->key].revision == c->mod_revision;
    }
    if (current) continue;
    Group& g = group_of(kv.mod_revision);
    g.values[key] = kv.value;
    if (std::optional<Canary> c = CanaryOf(kv.value); c) g.canaries[key] = *c;
    auto fail = [&](const Status& s) { g.key_errors[key] = s; };
    if (sets == nullptr) {
      fail(Status::FailedPrecondition("etcd key " + key +
                                      ": this daemon serves no IP sets (its backend is not the "
                                      "kernel's)"));
      continue;
    }
    Result<SetDoc> doc = ParseSetDoc(rest, kv.value);
    if (!doc.ok()) {
      fail(Bad(key, doc.status().message()));
      continue;
    }
    if (doc->chunks) {
      // Chunk N is `KEY/chunk/N`, N = 0..count-1; others are not part of this version of the set.
      std::vector<std::string> values;
      for (size_t i = 0; i < doc->chunks->count; ++i) {
        auto c = snap.kvs.find(chunk_prefix + std::to_string(i));
        if (c == snap.kvs.end()) break;
        values.push_back(c->second.value);
      }
      Result<std::vector<SetEntrySpec>> entries = AssembleChunks(*doc, values);
      if (!entries.ok()) {
        fail(Status(entries.status().code(), "etcd key " + key + ": " + entries.status().message()));
        continue;
      }
      doc->entries = *std::move(entries);
    }
    g.records.push_back({key, Applied{.revision = kv.mod_revision,
                                      .kind = "set",
                                      .owner = doc->name,
                                      .family = "",
                                      .table = "",
                                      .chain = "",
                                      .spec = ""}});
    for (const KeyValue* c : chunks) {
      g.records.push_back({c->key, Applied{.revision = c->mod_revision,
                                           .kind = "chunk",
                                           .owner = doc->name,
                                           .family = "",
                                           .table = "",
                                           .chain = "",
                                           .spec = ""}});
    }
    g.sets.push_back({key, *std::move(doc)});
  }

  for (const auto& [key, kv] : snap.kvs) {
    auto it = applied_now.find(key);
    if (it != applied_now.end() && it->second.revision == kv.mod_revision) continue;
    // Set documents and their chunks: the units above. A chunk without its document waits for it (pending,
    // not an error: `iptkit fleet put` writes the chunks first).
    if (key.starts_with(sets_dir)) continue;
    if (!key.starts_with(owners_dir) && !key.starts_with(rules_dir)) continue;  // marker, .force, later layouts
    Group& g = group_of(kv.mod_revision);
    g.values[key] = kv.value;
    if (std::optional<Canary> c = CanaryOf(kv.value); c) g.canaries[key] = *c;
    auto fail = [&](const Status& s) { g.key_errors[key] = s; };
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
      if (Status s = CheckCanary(key, j); !s.ok()) {
        fail(s);
        continue;
      }
      j.erase("canary");
      j.erase("canary_timeout");
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
      g.request.put_owners.push_back(*std::move(doc));
      g.records.push_back({key, Applied{.revision = kv.mod_revision,
                                        .kind = "owner",
                                        .owner = owner,
                                        .family = "",
                                        .table = "",
                                        .chain = "",
                                        .spec = ""}});
      continue;
    }
    // rules/ID
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
          g.request.deletes.push_back({old.owner, f, old.table, old.chain, *r});
        }
      }
    }
    // An expired rule is applied as "absent" (the TTL expiry removed it, or it never needed adding).
    if (ttl > 0) g.request.adds.push_back({d->owner, d->family, d->table, d->chain, *rule, d->position, ttl});
    g.records.push_back({key, Applied{.revision = kv.mod_revision,
                                      .kind = "rule",
                                      .owner = d->owner,
                                      .family = d->family_name,
                                      .table = d->table,
                                      .chain = d->chain,
                                      .spec = d->spec}});
  }

  // Canary gates: a group with a document naming a label this host lacks waits until every canary (a host of
  // the group with the label) reports that key applied at its revision; a canary's failure, or the gate's
  // timeout, fails it (the rollout stops there for that revision).
  std::map<std::string, Gate> gates_now;
  {
    std::lock_guard<std::mutex> lock(mu);
    gates_now = gates;
  }
  std::optional<std::map<std::string, Json>> reports;
  bool reports_read = false;
  for (auto& [rev, g] : groups) {
    if (!g.key_errors.empty()) continue;
    for (const auto& [key, c] : g.canaries) {
      if (HasLabel(c.label)) continue;
      if (!reports_read) {
        reports_read = true;
        reports = ReadReports();
      }
      Gate& gate = gates_now[key];
      if (gate.revision != rev || gate.label != c.label) {
        gate = Gate{.revision = rev,
                    .label = c.label,
                    .timeout = c.timeout,
                    .opened = std::chrono::steady_clock::now(),
                    .canaries = {},
                    .state = "waiting",
                    .detail = ""};
      }
      if (gate.state == "waiting") EvaluateGate(key, gate, reports);
      if (gate.state == "failed") {
        g.status = Status::FailedPrecondition("etcd key " + key + ": the canary gate failed: " + gate.detail)
                       .WithReason("canary_failed");
        g.key_errors[key] = g.status;
        break;
      }
      if (gate.state == "waiting") g.waiting = true;
    }
  }
  // Gates of keys that moved on or went are dropped.
  for (auto it = gates_now.begin(); it != gates_now.end();) {
    auto kv = snap.kvs.find(it->first);
    it = kv != snap.kvs.end() && kv->second.mod_revision == it->second.revision ? std::next(it) : gates_now.erase(it);
  }
  std::erase_if(groups, [](const auto& e) { return e.second.waiting && e.second.status.ok(); });
  if (gates_only) {
    std::erase_if(groups, [&](const auto& e) {
      return std::none_of(e.second.canaries.begin(), e.second.canaries.end(),
                          [&](const auto& c) { return !HasLabel(c.second.label); });
    });
  }

  // The sets there will be: the kernel's and those this pass applies. A document that uses any other set fails
  // (reported, retried) instead of reaching the kernel.
  // Listed only when some rule of the pass uses a set (a kernel read per pass otherwise).
  auto sets_used = [](const Group& g) {
    std::set<std::string> out;
    auto add = [&](const Rule& r) {
      for (std::string& name : SetsUsedBy(r)) out.insert(std::move(name));
    };
    for (const DesiredState& d : g.request.put_owners) {
      for (const OwnedChain& c : d.chains) {
        for (const Rule& r : c.rules) add(r);
      }
      for (const HookRule& h : d.hooks) add(h.rule);
    }
    for (const service::ManagedAdd& a : g.request.adds) add(a.rule);
    return out;
  };
  std::set<std::string> known_sets;
  bool sets_listed = false;
  const bool any_set_used =
      std::any_of(groups.begin(), groups.end(), [&](const auto& e) { return !sets_used(e.second).empty(); });
  if (sets != nullptr && any_set_used) {
    if (Result<std::vector<SetInfo>> listed = sets->List(false); listed.ok()) {
      sets_listed = true;
      for (const SetInfo& s : *listed) known_sets.insert(s.name);
    }
  }
  for (const auto& [rev, g] : groups) {
    for (const SetWork& s : g.sets) known_sets.insert(s.doc.name);
  }

  for (auto& [rev, g] : groups) {
    const bool several = g.values.size() > 1;
    if (!g.key_errors.empty()) {
      auto first = g.key_errors.begin();
      g.status = first->second;
      for (const auto& [key, value] : g.values) {
        if (g.key_errors.contains(key)) continue;
        g.key_errors[key] = Status(first->second.code(), "not applied: " + first->first + " of the same etcd " +
                                                             "transaction (revision " + std::to_string(rev) +
                                                             ") failed: " + first->second.message());
      }
      continue;
    }
    if (sets_listed) {
      std::string missing;
      for (const std::string& name : sets_used(g)) {
        if (!known_sets.contains(name)) missing = name;
      }
      if (!missing.empty()) {
        g.status = Status::FailedPrecondition("uses the IP set '" + missing +
                                              "', which does not exist (retried until it does)")
                       .WithReason("missing_set");
        continue;
      }
    }
    g.request.principal = Principal(rev);
    if (several) {
      g.request.action = "fleet_txn";
      g.request.request_id = "etcd:" + group_prefix + "@" + std::to_string(rev);
      Json keys = Json::object();
      for (const auto& [key, value] : g.values) {
        if (value.empty()) {
          keys[key] = nullptr;
        } else {
          Json v = Json::parse(value, nullptr, false);
          keys[key] =
              v.is_discarded() || value.size() > (64 << 10) ? Json("(" + std::to_string(value.size()) + " bytes)") : v;
        }
      }
      g.request.request_json = Json{{"etcd_revision", rev}, {"keys", keys}}.dump();
    } else {
      const std::string& key = g.values.begin()->first;
      const std::string& value = g.values.begin()->second;
      const Applied* gone_rec = applied_now.contains(key) && !snap.kvs.contains(key) ? &applied_now[key] : nullptr;
      g.request.request_id = "etcd:" + key + "@" + std::to_string(rev);
      if (gone_rec != nullptr) {
        g.request.action = gone_rec->kind == "owner"  ? "fleet_delete_owner"
                           : gone_rec->kind == "rule" ? "fleet_delete_rule"
                                                      : "fleet_delete_set";
        g.request.request_json = Json{{"etcd_key", key}, {"delete", gone_rec->owner}}.dump();
      } else {
        g.request.action = key.starts_with(owners_dir)  ? "fleet_put_owner"
                           : key.starts_with(rules_dir) ? "fleet_rule"
                                                        : "fleet_set";
        g.request.request_json = value.size() > (64 << 10) ? "" : value;
      }
    }
    for (const auto& [key, record] : g.records) {
      g.request.store_meta.push_back(
          {kAppliedMeta + key, record ? std::optional<std::string>(record->ToJson()) : std::nullopt});
    }
  }

  // Sets first, each group's in turn (a failing set undoes the group's sets before it).
  std::map<int64_t, std::vector<SetUndo>> undos;
  for (auto& [rev, g] : groups) {
    if (!g.status.ok()) continue;
    for (const SetWork& s : g.sets) {
      service::SetCaller who{Principal(rev), g.request.request_id, ""};
      Result<SetUndo> undo = ApplySet(who, s.doc);
      if (!undo.ok()) {
        g.status = Status(undo.status().code(), "etcd key " + s.key + ": " + undo.status().message());
        g.key_errors[s.key] = g.status;
        break;
      }
      undos[rev].push_back(*std::move(undo));
    }
    if (!g.status.ok()) UndoSets(Principal(rev), undos[rev]);
  }

  // Then the rules: the groups' requests submitted together, so the writer plans and commits them as one group
  // commit; each group fails alone.
  std::vector<Group*> submit;
  for (auto& [rev, g] : groups) {
    if (g.status.ok()) submit.push_back(&g);
  }
  // The pass's revision goes with the first request's audit record (no SQLite transaction of its own).
  bool revision_stored = false;
  if (!submit.empty()) {
    submit.front()->request.store_meta.push_back({kRevisionMeta, std::to_string(snap.revision)});
    revision_stored = true;
  }
  for (size_t begin = 0; begin < submit.size(); begin += kMaxParallel) {
    std::vector<std::thread> threads;
    for (size_t i = begin; i < std::min(submit.size(), begin + kMaxParallel); ++i) {
      threads.emplace_back([&, i] { submit[i]->status = SubmitGroupRequest(submit[i]->request); });
    }
    for (std::thread& t : threads) t.join();
  }
  for (auto& [rev, g] : groups) {
    if (!g.status.ok() && undos.contains(rev)) UndoSets(Principal(rev), undos[rev]);
  }
  // Sets whose document is gone, after the rules that used them.
  for (auto& [rev, g] : groups) {
    if (!g.status.ok()) continue;
    for (const auto& [key, name] : g.set_destroys) {
      service::SetCaller who{Principal(rev), g.request.request_id, ""};
      Result<service::SetDestroyReport> r =
          sets == nullptr ? Result<service::SetDestroyReport>(service::SetDestroyReport{})
                          : sets->Destroy(who, name, /*cascade=*/false, /*dry_run=*/false, nullptr);
      if (!r.ok() && r.status().code() != StatusCode::kNotFound) {
        // Still applied: recorded again, reported, retried.
        g.key_errors[key] = Status(r.status().code(), "etcd key " + key + ": " + r.status().message());
        (void)store->PutMeta(kAppliedMeta + key, applied_now[key].ToJson());
      }
    }
  }

  std::lock_guard<std::mutex> lock(mu);
  for (auto& [rev, g] : groups) {
    for (const auto& [key, record] : g.records) {
      auto own = g.key_errors.find(key);
      if (g.status.ok() && own == g.key_errors.end()) {
        if (record) {
          applied[key] = *record;
        } else {
          applied.erase(key);
        }
        errors.erase(key);
      }
    }
    for (const auto& [key, value] : g.values) {
      auto own = g.key_errors.find(key);
      if (g.status.ok() && own == g.key_errors.end()) continue;
      const Status& s = own != g.key_errors.end() ? own->second : g.status;
      std::string message = s.message();
      if (own == g.key_errors.end() && g.values.size() > 1) {
        message = "not applied with the other keys of etcd transaction " + std::to_string(rev) + ": " + message;
      }
      errors[key] = {rev, message};
      spdlog::warn("fleet: {} at revision {}: {}", key, rev, message);
    }
  }
  for (auto& [key, e] : new_errors) {
    spdlog::warn("fleet: {} at revision {}: {}", key, e.revision, e.error);
    errors[key] = std::move(e);
  }
  gates = std::move(gates_now);
  // Errors of keys that are gone (and were never applied) go with them.
  for (auto it = errors.begin(); it != errors.end();) {
    it = snap.kvs.contains(it->first) || applied.contains(it->first) ? std::next(it) : errors.erase(it);
  }
  last_error.clear();
  seen_revision = snap.revision;
  if (Status s = revision_stored && submit.front()->status.ok()
                     ? Status::Ok()
                     : store->PutMeta(kRevisionMeta, std::to_string(snap.revision));
      !s.ok()) {
    spdlog::warn("fleet: cannot store the revision: {}", s.ToString());
  }
  MarkDirty();
}

void Agent::Impl::DropLeftoverRebuilds() {
  if (sets == nullptr) return;
  Result<std::vector<SetInfo>> listed = sets->List(/*with_entries=*/false);
  if (!listed.ok()) return;
  const service::SetCaller who{"etcd:" + (options.etcd.user.empty() ? std::string("anonymous") : options.etcd.user), "",
                               ""};
  for (const SetInfo& s : *listed) {
    if (!s.name.starts_with(kRebuildPrefix) || s.references != 0) continue;
    Status gone = sets->Destroy(who, s.name, /*cascade=*/false, /*dry_run=*/false, nullptr).status();
    if (gone.ok()) {
      spdlog::info("fleet: destroyed {}, a set an interrupted rebuild left behind", s.name);
    } else {
      spdlog::warn("fleet: cannot destroy {}, left behind by an interrupted rebuild: {}", s.name, gone.ToString());
    }
  }
}

Status Agent::Impl::Rebuild(const service::SetCaller& who, const std::string& name, const std::string& type,
                            const SetOptions& options, const std::vector<SetEntrySpec>& entries) {
  static std::atomic<uint32_t> counter{0};
  char tmp[32];
  std::snprintf(tmp, sizeof(tmp), "%s%08x", kRebuildPrefix,
                static_cast<unsigned>((static_cast<uint64_t>(service::NowMs()) * 2654435761u) ^ counter.fetch_add(1)));
  IPTKIT_RETURN_IF_ERROR(sets->Create(who, tmp, type, options, false));
  Status s = sets->Load(who, tmp, entries, {}).status();
  if (s.ok()) s = sets->Swap(who, name, tmp, false);
  (void)sets->Destroy(who, tmp, /*cascade=*/false, /*dry_run=*/false, nullptr);
  return s;
}

Result<Agent::Impl::SetUndo> Agent::Impl::ApplySet(const service::SetCaller& who, const SetDoc& doc) {
  SetUndo undo;
  undo.name = doc.name;
  Result<SetInfo> live = sets->Get(doc.name, /*with_entries=*/true);
  if (!live.ok() && live.status().code() != StatusCode::kNotFound) return live.status();
  if (!live.ok()) {
    IPTKIT_RETURN_IF_ERROR(sets->Create(who, doc.name, doc.type, doc.options, false));
    undo.created = true;
    if (Status s = sets->Sync(who, doc.name, doc.entries, {}).status(); !s.ok()) {
      (void)sets->Destroy(who, doc.name, /*cascade=*/false, /*dry_run=*/false, nullptr);
      return s;
    }
    return undo;
  }
  undo.before = *std::move(live);
  if (SetMatchesDoc(*undo.before, doc)) {
    IPTKIT_RETURN_IF_ERROR(sets->Sync(who, doc.name, doc.entries, {}).status());
  } else {
    IPTKIT_RETURN_IF_ERROR(Rebuild(who, doc.name, doc.type, doc.options, doc.entries));
  }
  return undo;
}

void Agent::Impl::UndoSets(const std::string& principal, std::vector<SetUndo>& undos) {
  service::SetCaller who{principal, "fleet-undo", ""};
  for (auto it = undos.rbegin(); it != undos.rend(); ++it) {
    Status s;
    if (it->created) {
      s = sets->Destroy(who, it->name, /*cascade=*/false, /*dry_run=*/false, nullptr).status();
    } else if (it->before) {
      std::vector<SetEntrySpec> entries;
      entries.reserve(it->before->entries.size());
      for (const SetEntry& e : it->before->entries) entries.push_back({e.elem, e.timeout, e.comment, 0});
      Result<SetInfo> live = sets->Get(it->name, false);
      if (live.ok() && live->type == it->before->type && live->options == it->before->options) {
        s = sets->Sync(who, it->name, entries, {}).status();
      } else {
        s = Rebuild(who, it->name, it->before->type, it->before->options, entries);
      }
    }
    if (!s.ok()) spdlog::warn("fleet: cannot put the set {} back: {}", it->name, s.ToString());
  }
  undos.clear();
}

Status Agent::Impl::SubmitGroupRequest(const service::ChangeRequest& request) {
  Result<service::ChangeResult> r = service->Submit(request);
  if (!r.ok() && r.status().code() == StatusCode::kNotFound && !request.deletes.empty()) {
    service::ChangeRequest again = request;
    again.deletes.clear();
    for (const service::ManagedDelete& d : request.deletes) {
      service::ChangeRequest probe;
      probe.principal = request.principal;
      probe.action = "fleet_probe";
      probe.dry_run = true;
      probe.deletes = {d};
      if (service->Submit(std::move(probe)).status().code() != StatusCode::kNotFound) again.deletes.push_back(d);
    }
    r = service->Submit(std::move(again));
  }
  return r.status();
}

std::optional<std::map<std::string, Json>> Agent::Impl::ReadReports() {
  const std::string hosts = options.prefix + "/hosts/";
  Result<RangeResult> r = report_etcd->Range(hosts, PrefixEnd(hosts));
  if (!r.ok()) return std::nullopt;
  std::map<std::string, Json> out;
  for (const KeyValue& kv : r->kvs) {
    Json j = Json::parse(kv.value, nullptr, false);
    if (!j.is_object() || j.value("group", "") != options.group) continue;
    out[kv.key.substr(hosts.size())] = std::move(j);
  }
  return out;
}

void Agent::Impl::EvaluateGate(const std::string& key, Gate& gate,
                               const std::optional<std::map<std::string, Json>>& reports) {
  const size_t eq = gate.label.find('=');
  const std::string k = gate.label.substr(0, eq), v = gate.label.substr(eq + 1);
  if (reports) {
    for (const auto& [id, r] : *reports) {
      const Json& labels = r.contains("labels") && r["labels"].is_object() ? r["labels"] : Json::object();
      if (labels.contains(k) && labels[k] == v) gate.canaries.insert(id);
    }
  }
  std::string pending;
  for (const std::string& id : gate.canaries) {
    if (!reports) {
      pending = id + " (the reports cannot be read)";
      continue;
    }
    auto r = reports->find(id);
    if (r == reports->end()) {
      pending = id + " (no report: down?)";
      continue;
    }
    const Json& applied_r = r->second.contains("applied") ? r->second["applied"] : Json::object();
    if (applied_r.is_object() && applied_r.value(key, int64_t{0}) == gate.revision) continue;
    const Json& errors_r = r->second.contains("errors") ? r->second["errors"] : Json::object();
    if (errors_r.is_object() && errors_r.contains(key) && errors_r[key].is_object() &&
        errors_r[key].value("revision", int64_t{0}) == gate.revision) {
      gate.state = "failed";
      gate.detail = "canary " + id + " (" + gate.label + ") failed revision " + std::to_string(gate.revision) + ": " +
                    errors_r[key].value("error", "");
      return;
    }
    pending = id;
  }
  if (!gate.canaries.empty() && pending.empty()) {
    gate.state = "passed";
    gate.detail.clear();
    return;
  }
  if (std::chrono::steady_clock::now() - gate.opened >= gate.timeout) {
    gate.state = "failed";
    gate.detail = "timed out after " + std::to_string(gate.timeout.count()) + " s waiting for " +
                  (gate.canaries.empty() ? "a canary host with label " + gate.label : "canary " + pending) +
                  " to apply revision " + std::to_string(gate.revision);
    return;
  }
  gate.detail = gate.canaries.empty() ? "no canary host with label " + gate.label + " reports yet"
                                      : "waiting for canary " + pending;
}

void Agent::Impl::RunApplier() {
  DropLeftoverRebuilds();
  std::unique_lock<std::mutex> lock(mu);
  auto last_pass = std::chrono::steady_clock::now();
  for (;;) {
    const bool gate_open =
        std::any_of(gates.begin(), gates.end(), [](const auto& g) { return g.second.state == "waiting"; });
    const auto retry_at = last_pass + options.retry_interval;
    cv.wait_until(lock, gate_open ? std::min(retry_at, std::chrono::steady_clock::now() + kGatePoll) : retry_at,
                  [&] { return stop || latest.has_value(); });
    if (stop) return;
    // Failed keys are retried every retry_interval; between retries, an open gate is polled on its own.
    bool gates_only = false;
    if (!latest) {
      if (!current.has_value()) continue;
      const bool retry_due = std::chrono::steady_clock::now() >= retry_at;
      if (retry_due && (!errors.empty() || !last_error.empty() || gate_open)) {
        latest = current;
      } else if (gate_open) {
        latest = current;
        gates_only = true;
      } else {
        if (retry_due) last_pass = std::chrono::steady_clock::now();
        continue;
      }
    }
    PrefixWatcher::Snapshot snap = *std::move(latest);
    latest.reset();
    if (!gates_only) last_pass = std::chrono::steady_clock::now();
    lock.unlock();
    Pass(snap, gates_only);
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
  Json gates_json = Json::object();
  for (const auto& [key, g] : gates) {
    if (g.state == "passed") continue;
    gates_json[key] = {{"revision", g.revision}, {"label", g.label}, {"state", g.state}, {"detail", g.detail}};
  }
  Json j = {{"host_id", options.host_id}, {"group", options.group},        {"labels", labels},
            {"backend", options.backend}, {"version", options.version},    {"revision", pass_revision},
            {"applied", applied_json},    {"errors", errors_json},         {"last_error", last_error},
            {"connected", connected},     {"updated_ms", service::NowMs()}};
  if (!gates_json.empty()) j["canary_gates"] = gates_json;
  if (watcher) j["watch"] = {{"resyncs", watcher->resyncs()}, {"compacted", watcher->compactions()}};
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

Result<std::unique_ptr<Agent>> Agent::Start(AgentOptions options, service::Service* service, store::Store* store,
                                            service::SetService* sets) {
  IPTKIT_RETURN_IF_ERROR(ValidateAgentOptions(options));
  std::unique_ptr<Agent> agent(new Agent());
  agent->impl_ = std::make_unique<Impl>();
  Impl& impl = *agent->impl_;
  impl.options = std::move(options);
  impl.service = service;
  impl.sets = sets;
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
