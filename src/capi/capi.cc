// The C ABI (include/iptkit/c/iptkit.h) over the public C++ API. Every entry point catches everything (no
// exception crosses the ABI), checks its pointers and handles, and reports through Finish (handles.h).
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "iptkit/c/iptkit.h"
#include "iptkit/dialect.h"
#include "iptkit/firewall.h"
#include "iptkit/ipset.h"
#include "iptkit/json.h"
#include "src/capi/handles.h"
#include "src/ipset/set_json.h"

using iptkit::Family;
using iptkit::Result;
using iptkit::Status;
using iptkit::capi::Accessor;
using iptkit::capi::Entry;
using iptkit::capi::Kind;
using iptkit::capi::Object;

// The C handle types are opaque: only their names exist.
struct iptkit_firewall;
struct iptkit_ruleset;
struct iptkit_txn;
struct iptkit_error;

namespace iptkit::capi {
namespace {

struct FirewallObject : Object {
  std::unique_ptr<Firewall> firewall;
  Family family = Family::kIPv4;
  std::string netns;
  std::string backend_name;  // filled on first iptkit_firewall_backend
};

struct RuleEntry {
  size_t chain = 0;     // index into RulesetObject::chains
  size_t position = 0;  // 1-based in its chain
  const Rule* rule = nullptr;
  std::string spec;
  std::string owner;  // "" when untagged
};
struct ChainEntry {
  size_t table = 0;
  const Chain* chain = nullptr;
};
struct RulesetObject : Object {
  Ruleset ruleset;
  std::vector<ChainEntry> chains;
  std::vector<RuleEntry> rules;
};

struct TxnObject : Object {
  uintptr_t firewall_handle = 0;  // resolved at commit: a closed firewall cannot commit
  Family family = Family::kIPv4;
  Transaction txn;
};

uintptr_t H(const void* handle) { return reinterpret_cast<uintptr_t>(handle); }

Result<std::shared_ptr<FirewallObject>> GetFirewall(iptkit_firewall* fw) {
  return ResolveAs<FirewallObject>(fw, Kind::kFirewall);
}
Result<std::shared_ptr<RulesetObject>> GetRuleset(const iptkit_ruleset* rs) {
  return ResolveAs<RulesetObject>(rs, Kind::kRuleset);
}
Result<std::shared_ptr<TxnObject>> GetTxn(const iptkit_txn* txn) { return ResolveAs<TxnObject>(txn, Kind::kTxn); }

Status NotNull(const void* p, const char* what) {
  if (p == nullptr) return Status::InvalidArgument(std::string(what) + " is NULL");
  return Status::Ok();
}

Result<Family> FamilyOf(int family) {
  if (family == IPTKIT_FAMILY_IPV4) return Family::kIPv4;
  if (family == IPTKIT_FAMILY_IPV6) return Family::kIPv6;
  return Status::InvalidArgument("family " + std::to_string(family) +
                                 " is not IPTKIT_FAMILY_IPV4 (4) or IPTKIT_FAMILY_IPV6 (6)");
}

Result<BackendKind> BackendOf(int backend) {
  switch (backend) {
    case IPTKIT_BACKEND_AUTO:
      return BackendKind::kAuto;
    case IPTKIT_BACKEND_NFT:
      return BackendKind::kNft;
    case IPTKIT_BACKEND_LEGACY:
      return BackendKind::kLegacy;
    case IPTKIT_BACKEND_NATIVE:
      return BackendKind::kNative;
    case IPTKIT_BACKEND_FAKE:
      return BackendKind::kFake;
    case IPTKIT_BACKEND_NATIVE_LEGACY:
      return BackendKind::kNativeLegacy;
  }
  return Status::InvalidArgument("backend " + std::to_string(backend) + " is not one of IPTKIT_BACKEND_*");
}

std::string TableOr(const char* table) { return table == nullptr ? "filter" : table; }

Result<std::string> ChainArg(const char* chain) {
  if (chain == nullptr) return Status::InvalidArgument("chain is NULL");
  return std::string(chain);
}

Result<Rule> Spec(const char* spec, Family family, const char* what = "spec") {
  if (spec == nullptr) return Status::InvalidArgument(std::string(what) + " is NULL");
  auto rule = ParseRuleSpec(spec, family);
  if (!rule.ok()) return rule.status().WithContext(what);
  return rule;
}

Result<std::optional<Rule>> Expect(const char* expect, Family family) {
  if (expect == nullptr) return std::optional<Rule>();
  IPTKIT_ASSIGN_OR_RETURN(Rule rule, Spec(expect, family, "expect"));
  return std::optional<Rule>(std::move(rule));
}

Status Position(int position) {
  if (position < 1) return Status::InvalidArgument("position " + std::to_string(position) + " is not >= 1");
  return Status::Ok();
}

// A malloc'd copy for a `char **out`.
Status Out(char** out, const std::string& text) {
  char* copy = static_cast<char*>(std::malloc(text.size() + 1));
  if (copy == nullptr) return Status::Internal("out of memory");
  std::memcpy(copy, text.data(), text.size() + 1);
  *out = copy;
  return Status::Ok();
}

Status SetuidCheck() {
  if (::getuid() != ::geteuid() || ::getgid() != ::getegid()) {
    return Status::PermissionDenied(
        "iptkit_open: the real and effective user or group ids of this process differ (a setuid or setgid "
        "program): iptables' libxtables would _exit(111) in such a process; call setresgid(0, 0, 0) and "
        "setresuid(0, 0, 0) first (after checking that the caller may do what it asks)");
  }
  return Status::Ok();
}

// Builds a transaction from one op and commits it.
Status CommitOne(iptkit_firewall* fw, const std::function<Status(Transaction&, Family)>& build) {
  IPTKIT_ASSIGN_OR_RETURN(auto f, GetFirewall(fw));
  Transaction txn;
  IPTKIT_RETURN_IF_ERROR(build(txn, f->family));
  std::lock_guard<std::mutex> lock(f->mu);
  return f->firewall->Commit(txn).status();
}

Status AddToTxn(iptkit_txn* handle, const std::function<Status(Transaction&, Family)>& build) {
  IPTKIT_ASSIGN_OR_RETURN(auto t, GetTxn(handle));
  std::lock_guard<std::mutex> lock(t->mu);
  Transaction one;
  IPTKIT_RETURN_IF_ERROR(build(one, t->family));
  for (const Op& op : one.ops()) t->txn.Add(op);
  return Status::Ok();
}

// The ops of the C API, each adding to a Transaction.
std::function<Status(Transaction&, Family)> AppendOp(const char* table, const char* chain, const char* spec) {
  return [=](Transaction& txn, Family family) -> Status {
    IPTKIT_ASSIGN_OR_RETURN(std::string c, ChainArg(chain));
    IPTKIT_ASSIGN_OR_RETURN(Rule rule, Spec(spec, family));
    txn.Append(family, TableOr(table), c, std::move(rule));
    return Status::Ok();
  };
}
std::function<Status(Transaction&, Family)> InsertOp(const char* table, const char* chain, int position,
                                                     const char* spec) {
  return [=](Transaction& txn, Family family) -> Status {
    IPTKIT_ASSIGN_OR_RETURN(std::string c, ChainArg(chain));
    IPTKIT_RETURN_IF_ERROR(Position(position));
    IPTKIT_ASSIGN_OR_RETURN(Rule rule, Spec(spec, family));
    txn.Insert(family, TableOr(table), c, position, std::move(rule));
    return Status::Ok();
  };
}
std::function<Status(Transaction&, Family)> DeleteOp(const char* table, const char* chain, const char* spec) {
  return [=](Transaction& txn, Family family) -> Status {
    IPTKIT_ASSIGN_OR_RETURN(std::string c, ChainArg(chain));
    IPTKIT_ASSIGN_OR_RETURN(Rule rule, Spec(spec, family));
    txn.Delete(family, TableOr(table), c, std::move(rule));
    return Status::Ok();
  };
}
std::function<Status(Transaction&, Family)> DeleteAtOp(const char* table, const char* chain, int position,
                                                       const char* expect) {
  return [=](Transaction& txn, Family family) -> Status {
    IPTKIT_ASSIGN_OR_RETURN(std::string c, ChainArg(chain));
    IPTKIT_RETURN_IF_ERROR(Position(position));
    IPTKIT_ASSIGN_OR_RETURN(std::optional<Rule> e, Expect(expect, family));
    txn.DeleteAt(family, TableOr(table), c, position, std::move(e));
    return Status::Ok();
  };
}
std::function<Status(Transaction&, Family)> ReplaceOp(const char* table, const char* chain, int position,
                                                      const char* spec, const char* expect) {
  return [=](Transaction& txn, Family family) -> Status {
    IPTKIT_ASSIGN_OR_RETURN(std::string c, ChainArg(chain));
    IPTKIT_RETURN_IF_ERROR(Position(position));
    IPTKIT_ASSIGN_OR_RETURN(Rule rule, Spec(spec, family));
    IPTKIT_ASSIGN_OR_RETURN(std::optional<Rule> e, Expect(expect, family));
    txn.Replace(family, TableOr(table), c, position, std::move(rule), std::move(e));
    return Status::Ok();
  };
}
std::function<Status(Transaction&, Family)> ChainCreateOp(const char* table, const char* chain) {
  return [=](Transaction& txn, Family family) -> Status {
    IPTKIT_ASSIGN_OR_RETURN(std::string c, ChainArg(chain));
    txn.CreateChain(family, TableOr(table), c);
    return Status::Ok();
  };
}
std::function<Status(Transaction&, Family)> ChainDeleteOp(const char* table, const char* chain, int cascade) {
  return [=](Transaction& txn, Family family) -> Status {
    IPTKIT_ASSIGN_OR_RETURN(std::string c, ChainArg(chain));
    txn.DeleteChain(family, TableOr(table), c, cascade != 0);
    return Status::Ok();
  };
}
std::function<Status(Transaction&, Family)> ChainRenameOp(const char* table, const char* chain, const char* new_name) {
  return [=](Transaction& txn, Family family) -> Status {
    IPTKIT_ASSIGN_OR_RETURN(std::string c, ChainArg(chain));
    IPTKIT_RETURN_IF_ERROR(NotNull(new_name, "new_name"));
    txn.RenameChain(family, TableOr(table), c, new_name);
    return Status::Ok();
  };
}
std::function<Status(Transaction&, Family)> FlushOp(const char* table, const char* chain) {
  return [=](Transaction& txn, Family family) -> Status {
    txn.Flush(family, TableOr(table), chain == nullptr ? "" : chain);
    return Status::Ok();
  };
}
std::function<Status(Transaction&, Family)> ZeroOp(const char* table, const char* chain) {
  return [=](Transaction& txn, Family family) -> Status {
    txn.Zero(family, TableOr(table), chain == nullptr ? "" : chain);
    return Status::Ok();
  };
}
std::function<Status(Transaction&, Family)> PolicyOp(const char* table, const char* chain, const char* policy) {
  return [=](Transaction& txn, Family family) -> Status {
    IPTKIT_ASSIGN_OR_RETURN(std::string c, ChainArg(chain));
    IPTKIT_RETURN_IF_ERROR(NotNull(policy, "policy"));
    const std::string p = policy;
    if (p != "ACCEPT" && p != "DROP") {
      return Status::InvalidArgument("policy '" + p + "' is not ACCEPT or DROP").WithToken(p);
    }
    txn.SetPolicy(family, TableOr(table), c, p);
    return Status::Ok();
  };
}

Result<std::shared_ptr<RulesetObject>> MakeRuleset(Ruleset ruleset) {
  auto object = std::make_shared<RulesetObject>();
  object->ruleset = std::move(ruleset);
  for (size_t t = 0; t < object->ruleset.tables.size(); ++t) {
    for (const iptkit::Chain& chain : object->ruleset.tables[t].chains) {
      const size_t chain_index = object->chains.size();
      object->chains.push_back({t, &chain});
      for (size_t r = 0; r < chain.rules.size(); ++r) {
        RuleEntry entry;
        entry.chain = chain_index;
        entry.position = r + 1;
        entry.rule = &chain.rules[r];
        entry.spec = FormatRuleSpec(chain.rules[r]);
        if (auto tag = chain.rules[r].OwnerTag()) entry.owner = tag->owner;
        object->rules.push_back(std::move(entry));
      }
    }
  }
  return object;
}

// Index checks of the ruleset accessors.
Result<const RuleEntry*> RuleAt(const RulesetObject& rs, size_t rule) {
  if (rule >= rs.rules.size()) {
    return Status::InvalidArgument("rule index " + std::to_string(rule) + " is out of range (the ruleset has " +
                                   std::to_string(rs.rules.size()) + " rules)");
  }
  return &rs.rules[rule];
}
Result<const ChainEntry*> ChainAt(const RulesetObject& rs, size_t chain) {
  if (chain >= rs.chains.size()) {
    return Status::InvalidArgument("chain index " + std::to_string(chain) + " is out of range (the ruleset has " +
                                   std::to_string(rs.chains.size()) + " chains)");
  }
  return &rs.chains[chain];
}

template <typename T, typename F>
T WithRule(const iptkit_ruleset* handle, size_t rule, T fallback, F&& fn) {
  return Accessor<T>(fallback, [&]() -> Result<T> {
    IPTKIT_ASSIGN_OR_RETURN(auto rs, GetRuleset(handle));
    IPTKIT_ASSIGN_OR_RETURN(const RuleEntry* entry, RuleAt(*rs, rule));
    return fn(*rs, *entry);
  });
}
template <typename T, typename F>
T WithChain(const iptkit_ruleset* handle, size_t chain, T fallback, F&& fn) {
  return Accessor<T>(fallback, [&]() -> Result<T> {
    IPTKIT_ASSIGN_OR_RETURN(auto rs, GetRuleset(handle));
    IPTKIT_ASSIGN_OR_RETURN(const ChainEntry* entry, ChainAt(*rs, chain));
    return fn(*rs, *entry);
  });
}

Status SetName(const char* name) { return NotNull(name, "set name"); }

}  // namespace
}  // namespace iptkit::capi

using namespace iptkit::capi;  // NOLINT(google-build-using-namespace): the C entry points below

extern "C" {

const char* iptkit_version(void) { return IPTKIT_VERSION_STRING; }

const char* iptkit_status_name(int code) {
  if (code < IPTKIT_OK || code > IPTKIT_EINTERNAL) return "UNKNOWN";
  return iptkit::StatusCodeName(static_cast<iptkit::StatusCode>(code)).data();
}

// ---- Errors ----

int iptkit_last_error_code(void) { return last_error_code(); }
const char* iptkit_last_error_message(void) { return last_error_message(); }
const char* iptkit_last_error_detail(const char* name) { return last_error_detail(name); }
void iptkit_clear_error(void) { SetLastError(Status::Ok()); }

int iptkit_error_code(const iptkit_error* error) {
  try {
    auto e = ResolveAs<ErrorObject>(error, Kind::kError);
    return e.ok() ? static_cast<int>((*e)->status.code()) : IPTKIT_EINVAL;
  } catch (...) {
    return IPTKIT_EINTERNAL;
  }
}
const char* iptkit_error_message(const iptkit_error* error) {
  try {
    auto e = ResolveAs<ErrorObject>(error, Kind::kError);
    return e.ok() ? (*e)->status.message().c_str() : nullptr;
  } catch (...) {
    return nullptr;
  }
}
const char* iptkit_error_detail(const iptkit_error* error, const char* name) {
  try {
    if (name == nullptr) return nullptr;
    auto e = ResolveAs<ErrorObject>(error, Kind::kError);
    if (!e.ok()) return nullptr;
    auto it = (*e)->details.find(name);
    return it == (*e)->details.end() ? nullptr : it->second.c_str();
  } catch (...) {
    return nullptr;
  }
}
int iptkit_error_free(iptkit_error* error) {
  if (error == nullptr) return IPTKIT_OK;
  try {
    return Unregister(H(error), Kind::kError).ok() ? IPTKIT_OK : IPTKIT_EINVAL;
  } catch (...) {
    return IPTKIT_EINTERNAL;
  }
}

void iptkit_string_free(char* string) { std::free(string); }

// ---- Opening ----

int iptkit_open(iptkit_firewall** out, const char* netns, int backend, int family, iptkit_error** err) {
  return Entry(err, [&]() -> Status {
    IPTKIT_RETURN_IF_ERROR(NotNull(out, "out"));
    *out = nullptr;
    IPTKIT_ASSIGN_OR_RETURN(iptkit::BackendKind kind, BackendOf(backend));
    IPTKIT_ASSIGN_OR_RETURN(Family f, FamilyOf(family));
    IPTKIT_RETURN_IF_ERROR(SetuidCheck());
    iptkit::FirewallOptions options;
    options.netns = netns == nullptr ? "" : netns;
    options.backend = kind;
    IPTKIT_ASSIGN_OR_RETURN(std::unique_ptr<iptkit::Firewall> firewall, iptkit::Firewall::Open(options));
    auto object = std::make_shared<FirewallObject>();
    object->firewall = std::move(firewall);
    object->family = f;
    object->netns = options.netns;
    *out = reinterpret_cast<iptkit_firewall*>(Register(Kind::kFirewall, std::move(object)));
    return Status::Ok();
  });
}

int iptkit_close(iptkit_firewall* fw) {
  if (fw == nullptr) return IPTKIT_OK;
  return Entry(nullptr, [&]() -> Status { return Unregister(H(fw), Kind::kFirewall).status(); });
}

const char* iptkit_firewall_backend(iptkit_firewall* fw) {
  return Accessor<const char*>(nullptr, [&]() -> Result<const char*> {
    IPTKIT_ASSIGN_OR_RETURN(auto f, GetFirewall(fw));
    std::lock_guard<std::mutex> lock(f->mu);
    if (f->backend_name.empty()) {
      IPTKIT_ASSIGN_OR_RETURN(iptkit::FirewallInfo info, f->firewall->Info());
      f->backend_name = info.backend;
    }
    return f->backend_name.c_str();
  });
}

int iptkit_firewall_family(iptkit_firewall* fw) {
  return Accessor<int>(-1, [&]() -> Result<int> {
    IPTKIT_ASSIGN_OR_RETURN(auto f, GetFirewall(fw));
    return f->family == Family::kIPv4 ? IPTKIT_FAMILY_IPV4 : IPTKIT_FAMILY_IPV6;
  });
}

int iptkit_firewall_info_json(iptkit_firewall* fw, char** out, iptkit_error** err) {
  return Entry(err, [&]() -> Status {
    IPTKIT_RETURN_IF_ERROR(NotNull(out, "out"));
    *out = nullptr;
    IPTKIT_ASSIGN_OR_RETURN(auto f, GetFirewall(fw));
    std::lock_guard<std::mutex> lock(f->mu);
    IPTKIT_ASSIGN_OR_RETURN(iptkit::FirewallInfo info, f->firewall->Info());
    return Out(out, iptkit::FirewallInfoToJson(info));
  });
}

// ---- Reading ----

int iptkit_ruleset_list(iptkit_firewall* fw, const char* table, iptkit_ruleset** out, iptkit_error** err) {
  return Entry(err, [&]() -> Status {
    IPTKIT_RETURN_IF_ERROR(NotNull(out, "out"));
    *out = nullptr;
    IPTKIT_ASSIGN_OR_RETURN(auto f, GetFirewall(fw));
    std::optional<std::string> t;
    if (table != nullptr) t = table;
    iptkit::Ruleset ruleset;
    {
      std::lock_guard<std::mutex> lock(f->mu);
      IPTKIT_ASSIGN_OR_RETURN(ruleset, f->firewall->List(f->family, t));
    }
    IPTKIT_ASSIGN_OR_RETURN(auto object, MakeRuleset(std::move(ruleset)));
    *out = reinterpret_cast<iptkit_ruleset*>(Register(Kind::kRuleset, std::move(object)));
    return Status::Ok();
  });
}

int iptkit_ruleset_list_json(iptkit_firewall* fw, const char* table, char** out, iptkit_error** err) {
  return Entry(err, [&]() -> Status {
    IPTKIT_RETURN_IF_ERROR(NotNull(out, "out"));
    *out = nullptr;
    IPTKIT_ASSIGN_OR_RETURN(auto f, GetFirewall(fw));
    std::optional<std::string> t;
    if (table != nullptr) t = table;
    std::lock_guard<std::mutex> lock(f->mu);
    IPTKIT_ASSIGN_OR_RETURN(iptkit::Ruleset ruleset, f->firewall->List(f->family, t));
    return Out(out, iptkit::RulesetToJson(ruleset));
  });
}

int iptkit_ruleset_save(iptkit_firewall* fw, const char* table, int counters, char** out, iptkit_error** err) {
  return Entry(err, [&]() -> Status {
    IPTKIT_RETURN_IF_ERROR(NotNull(out, "out"));
    *out = nullptr;
    IPTKIT_ASSIGN_OR_RETURN(auto f, GetFirewall(fw));
    std::optional<std::string> t;
    if (table != nullptr) t = table;
    std::lock_guard<std::mutex> lock(f->mu);
    IPTKIT_ASSIGN_OR_RETURN(std::string text, f->firewall->Save(f->family, t, counters != 0));
    return Out(out, text);
  });
}

int iptkit_ruleset_free(iptkit_ruleset* rs) {
  if (rs == nullptr) return IPTKIT_OK;
  return Entry(nullptr, [&]() -> Status { return Unregister(H(rs), Kind::kRuleset).status(); });
}

size_t iptkit_ruleset_table_count(const iptkit_ruleset* rs) {
  return Accessor<size_t>(0, [&]() -> Result<size_t> {
    IPTKIT_ASSIGN_OR_RETURN(auto r, GetRuleset(rs));
    return r->ruleset.tables.size();
  });
}
const char* iptkit_ruleset_table_name(const iptkit_ruleset* rs, size_t table) {
  return Accessor<const char*>(nullptr, [&]() -> Result<const char*> {
    IPTKIT_ASSIGN_OR_RETURN(auto r, GetRuleset(rs));
    if (table >= r->ruleset.tables.size()) {
      return Status::InvalidArgument("table index " + std::to_string(table) + " is out of range (the ruleset has " +
                                     std::to_string(r->ruleset.tables.size()) + " tables)");
    }
    return r->ruleset.tables[table].name.c_str();
  });
}

size_t iptkit_ruleset_chain_count(const iptkit_ruleset* rs) {
  return Accessor<size_t>(0, [&]() -> Result<size_t> {
    IPTKIT_ASSIGN_OR_RETURN(auto r, GetRuleset(rs));
    return r->chains.size();
  });
}
const char* iptkit_ruleset_chain_table(const iptkit_ruleset* rs, size_t chain) {
  return WithChain<const char*>(rs, chain, nullptr, [](const RulesetObject& r, const ChainEntry& c) {
    return Result<const char*>(r.ruleset.tables[c.table].name.c_str());
  });
}
const char* iptkit_ruleset_chain_name(const iptkit_ruleset* rs, size_t chain) {
  return WithChain<const char*>(rs, chain, nullptr, [](const RulesetObject&, const ChainEntry& c) {
    return Result<const char*>(c.chain->name.c_str());
  });
}
const char* iptkit_ruleset_chain_policy(const iptkit_ruleset* rs, size_t chain) {
  return WithChain<const char*>(rs, chain, nullptr, [](const RulesetObject&, const ChainEntry& c) {
    return Result<const char*>(c.chain->policy ? c.chain->policy->c_str() : nullptr);
  });
}
int iptkit_ruleset_chain_counters(const iptkit_ruleset* rs, size_t chain, uint64_t* packets, uint64_t* bytes) {
  return Entry(nullptr, [&]() -> Status {
    IPTKIT_ASSIGN_OR_RETURN(auto r, GetRuleset(rs));
    IPTKIT_ASSIGN_OR_RETURN(const ChainEntry* c, ChainAt(*r, chain));
    if (packets != nullptr) *packets = c->chain->counters.packets;
    if (bytes != nullptr) *bytes = c->chain->counters.bytes;
    return Status::Ok();
  });
}

size_t iptkit_ruleset_rule_count(const iptkit_ruleset* rs) {
  return Accessor<size_t>(0, [&]() -> Result<size_t> {
    IPTKIT_ASSIGN_OR_RETURN(auto r, GetRuleset(rs));
    return r->rules.size();
  });
}
const char* iptkit_ruleset_rule_table(const iptkit_ruleset* rs, size_t rule) {
  return WithRule<const char*>(rs, rule, nullptr, [](const RulesetObject& r, const RuleEntry& e) {
    return Result<const char*>(r.ruleset.tables[r.chains[e.chain].table].name.c_str());
  });
}
const char* iptkit_ruleset_rule_chain(const iptkit_ruleset* rs, size_t rule) {
  return WithRule<const char*>(rs, rule, nullptr, [](const RulesetObject& r, const RuleEntry& e) {
    return Result<const char*>(r.chains[e.chain].chain->name.c_str());
  });
}
size_t iptkit_ruleset_rule_position(const iptkit_ruleset* rs, size_t rule) {
  return WithRule<size_t>(rs, rule, 0,
                          [](const RulesetObject&, const RuleEntry& e) { return Result<size_t>(e.position); });
}
const char* iptkit_ruleset_rule_spec(const iptkit_ruleset* rs, size_t rule) {
  return WithRule<const char*>(
      rs, rule, nullptr, [](const RulesetObject&, const RuleEntry& e) { return Result<const char*>(e.spec.c_str()); });
}
int iptkit_ruleset_rule_counters(const iptkit_ruleset* rs, size_t rule, uint64_t* packets, uint64_t* bytes) {
  return Entry(nullptr, [&]() -> Status {
    IPTKIT_ASSIGN_OR_RETURN(auto r, GetRuleset(rs));
    IPTKIT_ASSIGN_OR_RETURN(const RuleEntry* e, RuleAt(*r, rule));
    if (packets != nullptr) *packets = e->rule->counters.packets;
    if (bytes != nullptr) *bytes = e->rule->counters.bytes;
    return Status::Ok();
  });
}
const char* iptkit_ruleset_rule_field(const iptkit_ruleset* rs, size_t rule, int field, int* negated) {
  if (negated != nullptr) *negated = 0;
  return WithRule<const char*>(rs, rule, nullptr, [&](const RulesetObject&, const RuleEntry& e) -> Result<const char*> {
    const iptkit::Rule& r = *e.rule;
    const std::optional<iptkit::Field>* f = nullptr;
    switch (field) {
      case IPTKIT_FIELD_SOURCE:
        f = &r.source;
        break;
      case IPTKIT_FIELD_DESTINATION:
        f = &r.destination;
        break;
      case IPTKIT_FIELD_IN_INTERFACE:
        f = &r.in_interface;
        break;
      case IPTKIT_FIELD_OUT_INTERFACE:
        f = &r.out_interface;
        break;
      case IPTKIT_FIELD_PROTOCOL:
        f = &r.protocol;
        break;
      case IPTKIT_FIELD_FRAGMENT:
        f = &r.fragment;
        break;
      default:
        return Status::InvalidArgument("field " + std::to_string(field) + " is not one of IPTKIT_FIELD_*");
    }
    if (!f->has_value()) return static_cast<const char*>(nullptr);
    if (negated != nullptr) *negated = (*f)->negated ? 1 : 0;
    return (*f)->value.c_str();
  });
}
const char* iptkit_ruleset_rule_target(const iptkit_ruleset* rs, size_t rule, int* kind) {
  if (kind != nullptr) *kind = IPTKIT_TARGET_NONE;
  return WithRule<const char*>(rs, rule, nullptr, [&](const RulesetObject&, const RuleEntry& e) -> Result<const char*> {
    const iptkit::Target& t = e.rule->target;
    if (t.kind == iptkit::Target::Kind::kNone) return static_cast<const char*>(nullptr);
    if (kind != nullptr) *kind = t.kind == iptkit::Target::Kind::kJump ? IPTKIT_TARGET_JUMP : IPTKIT_TARGET_GOTO;
    return t.name.c_str();
  });
}
size_t iptkit_ruleset_rule_match_count(const iptkit_ruleset* rs, size_t rule) {
  return WithRule<size_t>(
      rs, rule, 0, [](const RulesetObject&, const RuleEntry& e) { return Result<size_t>(e.rule->matches.size()); });
}
const char* iptkit_ruleset_rule_match_name(const iptkit_ruleset* rs, size_t rule, size_t match) {
  return WithRule<const char*>(rs, rule, nullptr, [&](const RulesetObject&, const RuleEntry& e) -> Result<const char*> {
    if (match >= e.rule->matches.size()) {
      return Status::InvalidArgument("match index " + std::to_string(match) + " is out of range (the rule has " +
                                     std::to_string(e.rule->matches.size()) + " matches)");
    }
    return e.rule->matches[match].name.c_str();
  });
}
const char* iptkit_ruleset_rule_owner(const iptkit_ruleset* rs, size_t rule) {
  return WithRule<const char*>(rs, rule, nullptr, [](const RulesetObject&, const RuleEntry& e) {
    return Result<const char*>(e.owner.empty() ? nullptr : e.owner.c_str());
  });
}
int iptkit_ruleset_rule_json(const iptkit_ruleset* rs, size_t rule, char** out, iptkit_error** err) {
  return Entry(err, [&]() -> Status {
    IPTKIT_RETURN_IF_ERROR(NotNull(out, "out"));
    *out = nullptr;
    IPTKIT_ASSIGN_OR_RETURN(auto r, GetRuleset(rs));
    IPTKIT_ASSIGN_OR_RETURN(const RuleEntry* e, RuleAt(*r, rule));
    iptkit::RuleLocation location;
    location.family = r->ruleset.family;
    location.table = r->ruleset.tables[r->chains[e->chain].table].name;
    location.chain = r->chains[e->chain].chain->name;
    location.index = static_cast<int>(e->position);
    return Out(out, iptkit::RuleToJson(*e->rule, location));
  });
}

// ---- Single changes ----

int iptkit_rule_check(iptkit_firewall* fw, const char* table, const char* chain, const char* spec, int* found,
                      iptkit_error** err) {
  return Entry(err, [&]() -> Status {
    IPTKIT_RETURN_IF_ERROR(NotNull(found, "found"));
    *found = 0;
    IPTKIT_ASSIGN_OR_RETURN(auto f, GetFirewall(fw));
    IPTKIT_ASSIGN_OR_RETURN(std::string c, ChainArg(chain));
    IPTKIT_ASSIGN_OR_RETURN(iptkit::Rule rule, Spec(spec, f->family));
    std::lock_guard<std::mutex> lock(f->mu);
    IPTKIT_ASSIGN_OR_RETURN(bool present, f->firewall->Check(f->family, TableOr(table), c, rule));
    *found = present ? 1 : 0;
    return Status::Ok();
  });
}
int iptkit_rule_append(iptkit_firewall* fw, const char* table, const char* chain, const char* spec,
                       iptkit_error** err) {
  return Entry(err, [&] { return CommitOne(fw, AppendOp(table, chain, spec)); });
}
int iptkit_rule_insert(iptkit_firewall* fw, const char* table, const char* chain, int position, const char* spec,
                       iptkit_error** err) {
  return Entry(err, [&] { return CommitOne(fw, InsertOp(table, chain, position, spec)); });
}
int iptkit_rule_delete(iptkit_firewall* fw, const char* table, const char* chain, const char* spec,
                       iptkit_error** err) {
  return Entry(err, [&] { return CommitOne(fw, DeleteOp(table, chain, spec)); });
}
int iptkit_rule_delete_at(iptkit_firewall* fw, const char* table, const char* chain, int position, const char* expect,
                          iptkit_error** err) {
  return Entry(err, [&] { return CommitOne(fw, DeleteAtOp(table, chain, position, expect)); });
}
int iptkit_rule_replace(iptkit_firewall* fw, const char* table, const char* chain, int position, const char* spec,
                        const char* expect, iptkit_error** err) {
  return Entry(err, [&] { return CommitOne(fw, ReplaceOp(table, chain, position, spec, expect)); });
}
int iptkit_chain_create(iptkit_firewall* fw, const char* table, const char* chain, iptkit_error** err) {
  return Entry(err, [&] { return CommitOne(fw, ChainCreateOp(table, chain)); });
}
int iptkit_chain_delete(iptkit_firewall* fw, const char* table, const char* chain, int cascade, iptkit_error** err) {
  return Entry(err, [&] { return CommitOne(fw, ChainDeleteOp(table, chain, cascade)); });
}
int iptkit_chain_rename(iptkit_firewall* fw, const char* table, const char* chain, const char* new_name,
                        iptkit_error** err) {
  return Entry(err, [&] { return CommitOne(fw, ChainRenameOp(table, chain, new_name)); });
}
int iptkit_chain_flush(iptkit_firewall* fw, const char* table, const char* chain, iptkit_error** err) {
  return Entry(err, [&] { return CommitOne(fw, FlushOp(table, chain)); });
}
int iptkit_chain_zero(iptkit_firewall* fw, const char* table, const char* chain, iptkit_error** err) {
  return Entry(err, [&] { return CommitOne(fw, ZeroOp(table, chain)); });
}
int iptkit_chain_set_policy(iptkit_firewall* fw, const char* table, const char* chain, const char* policy,
                            iptkit_error** err) {
  return Entry(err, [&] { return CommitOne(fw, PolicyOp(table, chain, policy)); });
}

// ---- Transactions ----

int iptkit_txn_begin(iptkit_firewall* fw, iptkit_txn** out, iptkit_error** err) {
  return Entry(err, [&]() -> Status {
    IPTKIT_RETURN_IF_ERROR(NotNull(out, "out"));
    *out = nullptr;
    IPTKIT_ASSIGN_OR_RETURN(auto f, GetFirewall(fw));
    auto object = std::make_shared<TxnObject>();
    object->firewall_handle = H(fw);
    object->family = f->family;
    *out = reinterpret_cast<iptkit_txn*>(Register(Kind::kTxn, std::move(object)));
    return Status::Ok();
  });
}
int iptkit_txn_append(iptkit_txn* txn, const char* table, const char* chain, const char* spec, iptkit_error** err) {
  return Entry(err, [&] { return AddToTxn(txn, AppendOp(table, chain, spec)); });
}
int iptkit_txn_insert(iptkit_txn* txn, const char* table, const char* chain, int position, const char* spec,
                      iptkit_error** err) {
  return Entry(err, [&] { return AddToTxn(txn, InsertOp(table, chain, position, spec)); });
}
int iptkit_txn_delete(iptkit_txn* txn, const char* table, const char* chain, const char* spec, iptkit_error** err) {
  return Entry(err, [&] { return AddToTxn(txn, DeleteOp(table, chain, spec)); });
}
int iptkit_txn_delete_at(iptkit_txn* txn, const char* table, const char* chain, int position, const char* expect,
                         iptkit_error** err) {
  return Entry(err, [&] { return AddToTxn(txn, DeleteAtOp(table, chain, position, expect)); });
}
int iptkit_txn_replace(iptkit_txn* txn, const char* table, const char* chain, int position, const char* spec,
                       const char* expect, iptkit_error** err) {
  return Entry(err, [&] { return AddToTxn(txn, ReplaceOp(table, chain, position, spec, expect)); });
}
int iptkit_txn_chain_create(iptkit_txn* txn, const char* table, const char* chain, iptkit_error** err) {
  return Entry(err, [&] { return AddToTxn(txn, ChainCreateOp(table, chain)); });
}
int iptkit_txn_chain_delete(iptkit_txn* txn, const char* table, const char* chain, int cascade, iptkit_error** err) {
  return Entry(err, [&] { return AddToTxn(txn, ChainDeleteOp(table, chain, cascade)); });
}
int iptkit_txn_chain_rename(iptkit_txn* txn, const char* table, const char* chain, const char* new_name,
                            iptkit_error** err) {
  return Entry(err, [&] { return AddToTxn(txn, ChainRenameOp(table, chain, new_name)); });
}
int iptkit_txn_chain_flush(iptkit_txn* txn, const char* table, const char* chain, iptkit_error** err) {
  return Entry(err, [&] { return AddToTxn(txn, FlushOp(table, chain)); });
}
int iptkit_txn_chain_zero(iptkit_txn* txn, const char* table, const char* chain, iptkit_error** err) {
  return Entry(err, [&] { return AddToTxn(txn, ZeroOp(table, chain)); });
}
int iptkit_txn_chain_set_policy(iptkit_txn* txn, const char* table, const char* chain, const char* policy,
                                iptkit_error** err) {
  return Entry(err, [&] { return AddToTxn(txn, PolicyOp(table, chain, policy)); });
}
int iptkit_txn_set_family(iptkit_txn* txn, int family, iptkit_error** err) {
  return Entry(err, [&]() -> Status {
    IPTKIT_ASSIGN_OR_RETURN(auto t, GetTxn(txn));
    IPTKIT_ASSIGN_OR_RETURN(Family f, FamilyOf(family));
    std::lock_guard<std::mutex> lock(t->mu);
    t->family = f;
    return Status::Ok();
  });
}
int iptkit_txn_add_json(iptkit_txn* txn, const char* json, iptkit_error** err) {
  return Entry(err, [&]() -> Status {
    IPTKIT_RETURN_IF_ERROR(NotNull(json, "json"));
    IPTKIT_ASSIGN_OR_RETURN(auto t, GetTxn(txn));
    IPTKIT_ASSIGN_OR_RETURN(iptkit::Transaction parsed, iptkit::TransactionFromJson(json));
    std::lock_guard<std::mutex> lock(t->mu);
    for (const iptkit::Op& op : parsed.ops()) t->txn.Add(op);
    return Status::Ok();
  });
}
size_t iptkit_txn_op_count(const iptkit_txn* txn) {
  return Accessor<size_t>(0, [&]() -> Result<size_t> {
    IPTKIT_ASSIGN_OR_RETURN(auto t, GetTxn(txn));
    std::lock_guard<std::mutex> lock(t->mu);
    return t->txn.ops().size();
  });
}

namespace {
Status CommitTxn(iptkit_txn* txn, bool dry_run, char** out) {
  IPTKIT_ASSIGN_OR_RETURN(auto t, GetTxn(txn));
  iptkit::Transaction copy;
  {
    std::lock_guard<std::mutex> lock(t->mu);
    copy = t->txn;
  }
  // The firewall must still be open: its handle resolves (not closed by another thread meanwhile).
  IPTKIT_ASSIGN_OR_RETURN(auto f, GetFirewall(reinterpret_cast<iptkit_firewall*>(t->firewall_handle)));
  iptkit::CommitOptions options;
  options.dry_run = dry_run;
  std::lock_guard<std::mutex> lock(f->mu);
  IPTKIT_ASSIGN_OR_RETURN(iptkit::CommitResult result, f->firewall->Commit(copy, options));
  if (out != nullptr) {
    std::string text;
    for (const iptkit::TableCommit& table : result.tables) text += table.restore_text;
    return Out(out, text);
  }
  return Status::Ok();
}
}  // namespace

int iptkit_txn_dry_run(iptkit_txn* txn, char** out, iptkit_error** err) {
  return Entry(err, [&]() -> Status {
    IPTKIT_RETURN_IF_ERROR(NotNull(out, "out"));
    *out = nullptr;
    return CommitTxn(txn, true, out);
  });
}
int iptkit_txn_commit(iptkit_txn* txn, iptkit_error** err) {
  return Entry(err, [&] { return CommitTxn(txn, false, nullptr); });
}
int iptkit_txn_free(iptkit_txn* txn) {
  if (txn == nullptr) return IPTKIT_OK;
  return Entry(nullptr, [&]() -> Status { return Unregister(H(txn), Kind::kTxn).status(); });
}

// ---- Declarative ----

int iptkit_apply_json(iptkit_firewall* fw, const char* desired_json, int dry_run, char** plan_json,
                      iptkit_error** err) {
  return Entry(err, [&]() -> Status {
    if (plan_json != nullptr) *plan_json = nullptr;
    IPTKIT_RETURN_IF_ERROR(NotNull(desired_json, "desired_json"));
    IPTKIT_ASSIGN_OR_RETURN(auto f, GetFirewall(fw));
    IPTKIT_ASSIGN_OR_RETURN(iptkit::DesiredState desired, iptkit::DesiredStateFromJson(desired_json));
    std::lock_guard<std::mutex> lock(f->mu);
    iptkit::Result<iptkit::ApplyPlan> plan =
        dry_run != 0 ? f->firewall->PlanApply(desired) : f->firewall->Apply(desired);
    IPTKIT_RETURN_IF_ERROR(plan.status());
    if (plan_json != nullptr) return Out(plan_json, iptkit::ApplyPlanToJson(*plan));
    return Status::Ok();
  });
}

// ---- IP sets ----

namespace {
Result<iptkit::Ipsets> SetsOf(iptkit_firewall* fw) {
  IPTKIT_ASSIGN_OR_RETURN(auto f, GetFirewall(fw));
  return iptkit::Ipsets(f->netns);
}
Status SetTimeout(uint32_t timeout, std::optional<uint32_t>& out) {
  if (timeout == IPTKIT_SET_NO_TIMEOUT) return Status::Ok();
  if (timeout > iptkit::kMaxSetTimeout) {
    return Status::InvalidArgument("timeout " + std::to_string(timeout) + " is more than ipset's limit of " +
                                   std::to_string(iptkit::kMaxSetTimeout) + " seconds");
  }
  out = timeout;
  return Status::Ok();
}
}  // namespace

int iptkit_set_create(iptkit_firewall* fw, const char* name, const char* type, uint32_t timeout, iptkit_error** err) {
  return Entry(err, [&]() -> Status {
    IPTKIT_RETURN_IF_ERROR(SetName(name));
    IPTKIT_RETURN_IF_ERROR(NotNull(type, "set type"));
    iptkit::SetOptions options;
    IPTKIT_RETURN_IF_ERROR(SetTimeout(timeout, options.timeout));
    options.comment = true;  // so that iptkit_set_add can always take a comment
    IPTKIT_ASSIGN_OR_RETURN(auto f, GetFirewall(fw));
    // Address sets hold addresses of the firewall's family; other types take no family option.
    const std::string t = type;
    if (f->family == Family::kIPv6 && t.starts_with("hash:") && t != "hash:mac") options.family = "inet6";
    return iptkit::Ipsets(f->netns).Create(name, type, options);
  });
}
int iptkit_set_create_options(iptkit_firewall* fw, const char* name, const char* type, const char* options,
                              iptkit_error** err) {
  return Entry(err, [&]() -> Status {
    IPTKIT_RETURN_IF_ERROR(SetName(name));
    IPTKIT_RETURN_IF_ERROR(NotNull(type, "set type"));
    IPTKIT_RETURN_IF_ERROR(NotNull(options, "options"));
    std::vector<std::string> words;
    std::istringstream in(options);
    for (std::string w; in >> w;) words.push_back(w);
    IPTKIT_ASSIGN_OR_RETURN(iptkit::SetOptions parsed, iptkit::ParseSetOptions(words));
    IPTKIT_ASSIGN_OR_RETURN(auto f, GetFirewall(fw));
    return iptkit::Ipsets(f->netns).Create(name, type, parsed);
  });
}
int iptkit_set_destroy(iptkit_firewall* fw, const char* name, iptkit_error** err) {
  return Entry(err, [&]() -> Status {
    IPTKIT_RETURN_IF_ERROR(SetName(name));
    IPTKIT_ASSIGN_OR_RETURN(iptkit::Ipsets sets, SetsOf(fw));
    return sets.Destroy(name);
  });
}
int iptkit_set_flush(iptkit_firewall* fw, const char* name, iptkit_error** err) {
  return Entry(err, [&]() -> Status {
    IPTKIT_RETURN_IF_ERROR(SetName(name));
    IPTKIT_ASSIGN_OR_RETURN(iptkit::Ipsets sets, SetsOf(fw));
    return sets.Flush(name);
  });
}
int iptkit_set_add(iptkit_firewall* fw, const char* name, const char* elem, uint32_t timeout, const char* comment,
                   iptkit_error** err) {
  return Entry(err, [&]() -> Status {
    IPTKIT_RETURN_IF_ERROR(SetName(name));
    IPTKIT_RETURN_IF_ERROR(NotNull(elem, "elem"));
    iptkit::SetAddOptions options;
    IPTKIT_RETURN_IF_ERROR(SetTimeout(timeout, options.timeout));
    if (comment != nullptr) options.comment = comment;
    IPTKIT_ASSIGN_OR_RETURN(iptkit::Ipsets sets, SetsOf(fw));
    return sets.Add(name, elem, options);
  });
}
int iptkit_set_delete(iptkit_firewall* fw, const char* name, const char* elem, iptkit_error** err) {
  return Entry(err, [&]() -> Status {
    IPTKIT_RETURN_IF_ERROR(SetName(name));
    IPTKIT_RETURN_IF_ERROR(NotNull(elem, "elem"));
    IPTKIT_ASSIGN_OR_RETURN(iptkit::Ipsets sets, SetsOf(fw));
    return sets.Delete(name, elem);
  });
}
int iptkit_set_test(iptkit_firewall* fw, const char* name, const char* elem, int* found, iptkit_error** err) {
  return Entry(err, [&]() -> Status {
    IPTKIT_RETURN_IF_ERROR(NotNull(found, "found"));
    *found = 0;
    IPTKIT_RETURN_IF_ERROR(SetName(name));
    IPTKIT_RETURN_IF_ERROR(NotNull(elem, "elem"));
    IPTKIT_ASSIGN_OR_RETURN(iptkit::Ipsets sets, SetsOf(fw));
    IPTKIT_ASSIGN_OR_RETURN(bool present, sets.Test(name, elem));
    *found = present ? 1 : 0;
    return Status::Ok();
  });
}
int iptkit_set_list_json(iptkit_firewall* fw, const char* name, char** out, iptkit_error** err) {
  return Entry(err, [&]() -> Status {
    IPTKIT_RETURN_IF_ERROR(NotNull(out, "out"));
    *out = nullptr;
    IPTKIT_ASSIGN_OR_RETURN(iptkit::Ipsets sets, SetsOf(fw));
    IPTKIT_ASSIGN_OR_RETURN(std::vector<iptkit::SetInfo> list, sets.List(name == nullptr ? "" : name, true));
    nlohmann::json j = nlohmann::json::array();
    for (const iptkit::SetInfo& s : list) j.push_back(iptkit::SetInfoToJson(s, /*with_entries=*/true));
    return Out(out, j.dump());
  });
}

}  // extern "C"
