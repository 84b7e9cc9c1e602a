#include "src/backend/native/native_backend.h"

#include <arpa/inet.h>
#include <endian.h>
#include <libmnl/libmnl.h>
#include <libnftnl/chain.h>
#include <libnftnl/common.h>
#include <libnftnl/rule.h>
#include <libnftnl/set.h>
#include <libnftnl/table.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <thread>
#include <unordered_map>

#include "iptkit/dialect.h"
#include "src/backend/legacy/xt_fingerprint.h"
#include "src/backend/native/native_read.h"
#include "src/backend/native/nft_batch.h"
#include "src/backend/native/rule_codec.h"
#include "src/backend/native/xtables.h"
#include "src/backend/ops/table_sim.h"
#include "src/backend/restore/restore_backend.h"
#include "src/base/errno_status.h"
#include "src/base/netns.h"
#include "src/dialect/typed_form.h"

namespace iptkit::backend::native {
namespace {

using TKind = TableOp::Kind;

uint16_t NfProto(Family family) { return family == Family::kIPv4 ? NFPROTO_IPV4 : NFPROTO_IPV6; }

// iptables-nft's base chains (nft.c xtables_ipv4[]): hook, priority and type per table and chain.
struct BaseSpec {
  uint32_t hook;
  int32_t prio;
  const char* type;
};
std::optional<BaseSpec> BuiltinSpec(std::string_view table, std::string_view chain) {
  struct Entry {
    const char* table;
    const char* chain;
    BaseSpec spec;
  };
  static const Entry kEntries[] = {
      {"raw", "PREROUTING", {NF_INET_PRE_ROUTING, -300, "filter"}},
      {"raw", "OUTPUT", {NF_INET_LOCAL_OUT, -300, "filter"}},
      {"mangle", "PREROUTING", {NF_INET_PRE_ROUTING, -150, "filter"}},
      {"mangle", "INPUT", {NF_INET_LOCAL_IN, -150, "filter"}},
      {"mangle", "FORWARD", {NF_INET_FORWARD, -150, "filter"}},
      {"mangle", "OUTPUT", {NF_INET_LOCAL_OUT, -150, "route"}},
      {"mangle", "POSTROUTING", {NF_INET_POST_ROUTING, -150, "filter"}},
      {"filter", "INPUT", {NF_INET_LOCAL_IN, 0, "filter"}},
      {"filter", "FORWARD", {NF_INET_FORWARD, 0, "filter"}},
      {"filter", "OUTPUT", {NF_INET_LOCAL_OUT, 0, "filter"}},
      {"security", "INPUT", {NF_INET_LOCAL_IN, 150, "filter"}},
      {"security", "FORWARD", {NF_INET_FORWARD, 150, "filter"}},
      {"security", "OUTPUT", {NF_INET_LOCAL_OUT, 150, "filter"}},
      {"nat", "PREROUTING", {NF_INET_PRE_ROUTING, -100, "nat"}},
      {"nat", "INPUT", {NF_INET_LOCAL_IN, 100, "nat"}},
      {"nat", "POSTROUTING", {NF_INET_POST_ROUTING, 100, "nat"}},
      {"nat", "OUTPUT", {NF_INET_LOCAL_OUT, -100, "nat"}},
  };
  for (const Entry& e : kEntries) {
    if (table == e.table && chain == e.chain) return e.spec;
  }
  return std::nullopt;
}

std::string Str(const char* s) { return s == nullptr ? "" : s; }

struct NftnlFree {
  void operator()(nftnl_table* p) const { nftnl_table_free(p); }
  void operator()(nftnl_chain* p) const { nftnl_chain_free(p); }
  void operator()(nftnl_rule* p) const { nftnl_rule_free(p); }
  void operator()(nftnl_set* p) const { nftnl_set_free(p); }
};
using TablePtr = std::unique_ptr<nftnl_table, NftnlFree>;
using ChainPtr = std::unique_ptr<nftnl_chain, NftnlFree>;
using RulePtr = std::unique_ptr<nftnl_rule, NftnlFree>;
using SetPtr = std::unique_ptr<nftnl_set, NftnlFree>;

// The expression names of a rule message, for the reason of a rule libnftnl cannot parse (it refuses a rule with
// an expression type it does not know).
std::string ExpressionNames(const nlmsghdr* nlh) {
  std::string names;
  const char* start = static_cast<const char*>(mnl_nlmsg_get_payload_offset(nlh, sizeof(nfgenmsg)));
  const char* end = static_cast<const char*>(mnl_nlmsg_get_payload_tail(nlh));
  int remaining = static_cast<int>(end - start);
  for (const nlattr* a = reinterpret_cast<const nlattr*>(start); mnl_attr_ok(a, remaining);
       remaining -= static_cast<int>(MNL_ALIGN(a->nla_len)), a = mnl_attr_next(a)) {
    if (mnl_attr_get_type(a) != NFTA_RULE_EXPRESSIONS) continue;
    const char* ps = static_cast<const char*>(mnl_attr_get_payload(a));
    int plen = static_cast<int>(mnl_attr_get_payload_len(a));
    for (const nlattr* elem = reinterpret_cast<const nlattr*>(ps); mnl_attr_ok(elem, plen);
         plen -= static_cast<int>(MNL_ALIGN(elem->nla_len)), elem = mnl_attr_next(elem)) {
      const char* es = static_cast<const char*>(mnl_attr_get_payload(elem));
      int elen = static_cast<int>(mnl_attr_get_payload_len(elem));
      for (const nlattr* f = reinterpret_cast<const nlattr*>(es); mnl_attr_ok(f, elen);
           elen -= static_cast<int>(MNL_ALIGN(f->nla_len)), f = mnl_attr_next(f)) {
        if (mnl_attr_get_type(f) == NFTA_EXPR_NAME) {
          if (!names.empty()) names += ",";
          names += static_cast<const char*>(mnl_attr_get_payload(f));
        }
      }
    }
  }
  return names;
}

uint64_t EchoHandle(const std::string& msg, uint16_t attr) {
  const auto* nlh = reinterpret_cast<const nlmsghdr*>(msg.data());
  const char* start = static_cast<const char*>(mnl_nlmsg_get_payload_offset(nlh, sizeof(nfgenmsg)));
  const char* end = static_cast<const char*>(mnl_nlmsg_get_payload_tail(nlh));
  int remaining = static_cast<int>(end - start);
  for (const nlattr* a = reinterpret_cast<const nlattr*>(start); mnl_attr_ok(a, remaining);
       remaining -= static_cast<int>(MNL_ALIGN(a->nla_len)), a = mnl_attr_next(a)) {
    if (mnl_attr_get_type(a) == attr && mnl_attr_get_payload_len(a) == 8) return be64toh(mnl_attr_get_u64(a));
  }
  return 0;
}

// iptables refuses these in userspace (xshared.c do_parse) for the builtin chain names.
Status CheckDirection(const std::string& chain, const Rule& rule) {
  if ((chain == "PREROUTING" || chain == "INPUT") && rule.out_interface) {
    return Status::InvalidArgument("Can't use -o with " + chain).WithToken("-o");
  }
  if ((chain == "POSTROUTING" || chain == "OUTPUT") && rule.in_interface) {
    return Status::InvalidArgument("Can't use -i with " + chain).WithToken("-i");
  }
  return Status::Ok();
}

std::string DescribeErrno(int err) {
  switch (err) {
    case ENOENT:
      return "No chain/target/match by that name";
    case ELOOP:
      return "Loop found in table";
    case EBUSY:
      return "Device or resource busy (chain in use)";
    default:
      return base::ErrnoString(err);
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------

NativeBackend::NativeBackend(BackendOptions options, NativeOptions native, base::UniqueFd netns,
                             std::unique_ptr<nft::NetlinkClient> netlink)
    : options_(std::move(options)), native_(std::move(native)), netns_(std::move(netns)), netlink_(std::move(netlink)) {
  traits_.name = "native";
  traits_.variant = "nft";
  traits_.atomic_across_tables = true;
  traits_.handles = true;
  traits_.needs_lock = false;
  traits_.rename_then_use = false;
}

NativeBackend::~NativeBackend() = default;

Result<std::unique_ptr<NativeBackend>> NativeBackend::Create(const BackendOptions& options, NativeOptions native) {
  IPTKIT_RETURN_IF_ERROR(Xtables::Instance().status());
  IPTKIT_ASSIGN_OR_RETURN(base::UniqueFd ns, base::OpenNetns(options.netns));
  auto client = nft::NetlinkClient::Open(ns.get());
  if (!client.ok()) return client.status().WithContext("opening the nf_tables netlink socket");
  std::unique_ptr<EventFeed> events;
  if (options.event_cache) native.event_cache = true;
  if (options.one_shot) native.echo_rules = false;
  if (native.event_cache) {
    IPTKIT_ASSIGN_OR_RETURN(events, EventFeed::Open(ns.get(), native.event_rcvbuf, **client));
  }
  std::unique_ptr<NativeBackend> backend(
      new NativeBackend(options, std::move(native), std::move(ns), std::move(client).value()));
  backend->events_ = std::move(events);
  return backend;
}

Result<std::unique_ptr<Backend>> NewNativeBackend(const BackendOptions& options, NativeOptions native) {
  IPTKIT_ASSIGN_OR_RETURN(std::unique_ptr<NativeBackend> b, NativeBackend::Create(options, std::move(native)));
  return std::unique_ptr<Backend>(std::move(b));
}

Result<std::unique_ptr<LockGuard>> NativeBackend::Lock(std::chrono::milliseconds) {
  return std::unique_ptr<LockGuard>(std::make_unique<LockGuard>());
}

// ---- Reading ----

const std::vector<std::string>& SaveOrder() {
  static const std::vector<std::string> kOrder = {"mangle", "security", "raw", "filter", "nat"};
  return kOrder;
}

Result<XtRule> DecodeDumpedRule(Family family, const nlmsghdr* m) {
  Result<XtRule> xt = DecodeRuleMessage(family, m);
  if (!xt.ok() && xt.status().message().find("native nft expression") != std::string::npos) {
    return Status::FailedPrecondition(xt.status().message() + " (" + ExpressionNames(m) + ")");
  }
  return xt;
}

std::string JudgeChains(const std::vector<DumpedChain>& chains,
                        const std::map<std::string, std::vector<std::string>>& sets, Table& t,
                        NativeBackend::KTable& kt) {
  std::string reason;
  std::vector<std::string> user;
  for (const DumpedChain& ci : chains) {
    if (ci.table != t.name) continue;
    if (ci.base) {
      std::optional<BaseSpec> spec = BuiltinSpec(t.name, ci.name);
      if (!spec) {
        if (reason.empty()) {
          reason = "chain " + ci.name + " is an nft base chain (hook " + nft::HookName(ci.hook) +
                   ") iptables does not manage";
        }
        continue;
      }
      if (spec->hook != ci.hook || spec->prio != ci.prio || ci.type != spec->type) {
        if (reason.empty()) {
          reason = "base chain " + ci.name + " has hook " + nft::HookName(ci.hook) + ", priority " +
                   std::to_string(ci.prio) + " and type " + ci.type + ", not iptables-nft's";
        }
        continue;
      }
      Chain* c = t.FindChain(ci.name);
      if (ci.policy && *ci.policy != NF_ACCEPT && *ci.policy != NF_DROP && reason.empty()) {
        reason = "base chain " + ci.name + " has a policy iptables cannot show";
      }
      c->policy = ci.policy && *ci.policy == NF_DROP ? "DROP" : "ACCEPT";
      c->counters = ci.counters;
      kt.chains[ci.name] = NativeBackend::KChain{ci.handle, 0, true, {}};
      continue;
    }
    if (IsBuiltinChain(t.name, ci.name)) {
      if (reason.empty()) reason = "regular chain " + ci.name + " has the name of a builtin chain";
      continue;
    }
    if (Status valid = ValidateChainName(ci.name); !valid.ok()) {
      if (reason.empty()) reason = "chain " + ci.name + ": " + valid.message();
      continue;
    }
    user.push_back(ci.name);
    kt.chains[ci.name] = NativeBackend::KChain{ci.handle, 0, false, {}};
  }
  std::sort(user.begin(), user.end());
  for (const std::string& name : user) t.chains.push_back(Chain{name, std::nullopt, {}, {}});
  if (auto it = sets.find(t.name); it != sets.end() && reason.empty()) {
    reason = "table holds nft sets (" + it->second.front() + ") iptables cannot show";
  }
  return reason;
}

namespace {

// Whether a read for `scope` lists only the chains the plan names (ChainScope::named_only).
bool ListsNamedOnly(const ChainScope& scope) { return scope.named_only && !scope.every_chain; }

// The chains a read for `scope` lists when ListsNamedOnly: those of its chains, probes and named, in order.
std::set<std::pair<std::string, std::string>> NamedChains(const ChainScope& scope) {
  std::set<std::pair<std::string, std::string>> out = scope.chains;
  for (const auto& [where, rules] : scope.probes) out.insert(where);
  out.insert(scope.named.begin(), scope.named.end());
  return out;
}

}  // namespace

Result<uint32_t> NativeBackend::DumpAtOneGeneration(Family family, const std::optional<std::string>& table,
                                                    SnapshotDetail detail, const ChainScope& scope,
                                                    DumpVisitor& visitor, bool closing_generation) {
  constexpr int kAttempts = 5;
  const uint16_t proto = NfProto(family);
  // A plan that names its chains and its tables (ChainScope::named_only with tables) lists those tables only: each
  // one a named chain answered for exists, the others asked for by name (NFT_MSG_GETTABLE with NFTA_TABLE_NAME),
  // instead of a dump of every table of the family.
  const bool tables_by_name = !table && ListsNamedOnly(scope) && !scope.tables.empty();
  for (int attempt = 1;; ++attempt) {
    ++stats_.dumps;
    visitor.Reset();
    IPTKIT_ASSIGN_OR_RETURN(uint32_t before, netlink_->GenerationId());
    auto wanted = [&](std::string_view name) { return !table || name == *table; };

    auto on_table = [&](const nlmsghdr* m) -> Status {
      TablePtr t(nftnl_table_alloc());
      if (!t || nftnl_table_nlmsg_parse(m, t.get()) < 0) return Status::Internal("cannot parse a table message");
      std::string name = Str(nftnl_table_get_str(t.get(), NFTNL_TABLE_NAME));
      if (wanted(name)) visitor.tables.insert(name);
      return Status::Ok();
    };
    Status s = tables_by_name ? Status::Ok() : netlink_->DumpMessages(NFT_MSG_GETTABLE, proto, nullptr, on_table);
    auto on_chain = [&](const nlmsghdr* m) -> Status {
      ChainPtr c(nftnl_chain_alloc());
      if (!c || nftnl_chain_nlmsg_parse(m, c.get()) < 0) return Status::Internal("cannot parse a chain message");
      DumpedChain ci;
      ci.table = Str(nftnl_chain_get_str(c.get(), NFTNL_CHAIN_TABLE));
      if (!wanted(ci.table)) return Status::Ok();
      if (tables_by_name) visitor.tables.insert(ci.table);  // a chain's table exists
      ci.name = Str(nftnl_chain_get_str(c.get(), NFTNL_CHAIN_NAME));
      ci.handle = nftnl_chain_get_u64(c.get(), NFTNL_CHAIN_HANDLE);
      if (nftnl_chain_is_set(c.get(), NFTNL_CHAIN_HOOKNUM)) {
        ci.base = true;
        ci.hook = nftnl_chain_get_u32(c.get(), NFTNL_CHAIN_HOOKNUM);
        ci.prio = nftnl_chain_get_s32(c.get(), NFTNL_CHAIN_PRIO);
        ci.type = Str(nftnl_chain_get_str(c.get(), NFTNL_CHAIN_TYPE));
        if (nftnl_chain_is_set(c.get(), NFTNL_CHAIN_POLICY)) {
          ci.policy = nftnl_chain_get_u32(c.get(), NFTNL_CHAIN_POLICY);
        }
        ci.counters.packets = nftnl_chain_get_u64(c.get(), NFTNL_CHAIN_PACKETS);
        ci.counters.bytes = nftnl_chain_get_u64(c.get(), NFTNL_CHAIN_BYTES);
      }
      visitor.chains.push_back(std::move(ci));
      return Status::Ok();
    };
    if (s.ok() && ListsNamedOnly(scope)) {
      // Only the chains the plan names, each fetched by name as iptables-nft does (a dump lists every chain of the
      // family: over 100 chains most of an append's read); one the kernel does not have is left out.
      // (A chain of a table that does not exist is not found either.)
      const std::set<std::pair<std::string, std::string>> named = NamedChains(scope);
      for (const auto& [chain_table, chain] : named) {
        if (!tables_by_name && !visitor.tables.count(chain_table)) continue;
        s = netlink_->GetMessage(
            NFT_MSG_GETCHAIN, proto,
            [&](nlmsghdr* nlh) {
              mnl_attr_put_strz(nlh, NFTA_CHAIN_TABLE, chain_table.c_str());
              mnl_attr_put_strz(nlh, NFTA_CHAIN_NAME, chain.c_str());
            },
            on_chain);
        if (s.code() == StatusCode::kNotFound) s = Status::Ok();
        if (!s.ok()) break;
      }
      if (tables_by_name) {
        std::set<std::string> listed = scope.tables;
        for (const auto& where : named) listed.insert(where.first);
        for (const std::string& name : listed) {
          if (!s.ok()) break;
          if (visitor.tables.count(name)) continue;
          s = netlink_->GetMessage(
              NFT_MSG_GETTABLE, proto, [&](nlmsghdr* nlh) { mnl_attr_put_strz(nlh, NFTA_TABLE_NAME, name.c_str()); },
              on_table);
          if (s.code() == StatusCode::kNotFound) s = Status::Ok();
        }
      }
    } else if (s.ok()) {
      s = netlink_->DumpMessages(NFT_MSG_GETCHAIN, proto, nullptr, on_chain);
    }
    // The rule dumps: one per chain (in scope) of the tables iptables knows, filtered by the kernel, as iptables-nft
    // fetches them. One dump of the whole family would be one request, but the kernel resumes a dump after every
    // filled buffer (about 32 KB) by walking the family's rules from the first one again: over 100 chains of 100
    // rules each, that walk was most of the kernel's time in a read of 10,000 rules.
    std::vector<std::pair<std::string, std::string>> rule_dumps;
    const std::vector<std::string>& known = SaveOrder();
    for (const DumpedChain& ci : visitor.chains) {
      if (std::find(known.begin(), known.end(), ci.table) == known.end()) continue;  // never shown (Dump)
      if (scope.every_chain || scope.Has(ci.table, ci.name)) rule_dumps.push_back({ci.table, ci.name});
    }
    for (size_t d = 0; s.ok() && detail != SnapshotDetail::kChains && d < rule_dumps.size(); ++d) {
      const auto& [dump_table, dump_chain] = rule_dumps[d];
      s = netlink_->DumpMessages(
          NFT_MSG_GETRULE, proto,
          [&](nlmsghdr* nlh) {
            if (!dump_table.empty()) mnl_attr_put_strz(nlh, NFTA_RULE_TABLE, dump_table.c_str());
            if (!dump_chain.empty()) mnl_attr_put_strz(nlh, NFTA_RULE_CHAIN, dump_chain.c_str());
          },
          [&](const nlmsghdr* m) -> Status {
            RuleLocation loc = RuleMessageLocation(m);
            if (!wanted(loc.table)) return Status::Ok();
            if (!dump_chain.empty() && (loc.table != dump_table || loc.chain != dump_chain)) return Status::Ok();
            return visitor.OnRule(m, loc);
          });
    }
    if (s.ok() && detail == SnapshotDetail::kRules) {
      s = netlink_->DumpMessages(NFT_MSG_GETSET, proto, nullptr, [&](const nlmsghdr* m) -> Status {
        SetPtr set(nftnl_set_alloc());
        if (!set || nftnl_set_nlmsg_parse(m, set.get()) < 0) return Status::Internal("cannot parse a set message");
        std::string tname = Str(nftnl_set_get_str(set.get(), NFTNL_SET_TABLE));
        uint32_t flags =
            nftnl_set_is_set(set.get(), NFTNL_SET_FLAGS) ? nftnl_set_get_u32(set.get(), NFTNL_SET_FLAGS) : 0;
        if (wanted(tname) && !(flags & NFT_SET_ANONYMOUS)) {
          visitor.sets[tname].push_back(Str(nftnl_set_get_str(set.get(), NFTNL_SET_NAME)));
        }
        return Status::Ok();
      });
    }
    // The caller reads the generation again after more of its own requests (ScanChains): one read then closes both.
    if (s.ok() && !closing_generation) return before;
    IPTKIT_ASSIGN_OR_RETURN(uint32_t after, netlink_->GenerationId());
    // A chain deleted after the chain dump fails its rule dump: that is a change (read again), not an error.
    if (!s.ok() && s.code() != StatusCode::kAborted && after == before) {
      return s.WithContext("reading the nf_tables ruleset");
    }
    if (!s.ok() || after != before) {
      if (attempt < kAttempts) {
        std::this_thread::sleep_for(std::chrono::microseconds(200 * attempt + (before % 7) * 50));
        continue;
      }
      return Status::Aborted("the nf_tables ruleset changed during each of " + std::to_string(kAttempts) +
                             " reads (a busy writer); retry");
    }
    return before;
  }
}

namespace {

// The model read's visitor: every rule's location, and its binary form at kRules.
struct RuleInfo {
  std::string table, chain;
  uint64_t handle = 0;
  Result<XtRule> xt = XtRule{};
};
class ModelVisitor final : public DumpVisitor {
 public:
  ModelVisitor(Family family, SnapshotDetail detail) : family_(family), detail_(detail) {}
  void Reset() override {
    DumpVisitor::Reset();
    rules.clear();
  }
  Status OnRule(const nlmsghdr* m, const RuleLocation& loc) override {
    RuleInfo& ri = rules.emplace_back();
    ri.table = std::string(loc.table);
    ri.chain = std::string(loc.chain);
    ri.handle = loc.handle;
    // At kPositions the rules are placeholders: positions and handles only.
    if (detail_ == SnapshotDetail::kRules) ri.xt = DecodeDumpedRule(family_, m);
    return Status::Ok();
  }
  std::deque<RuleInfo> rules;  // no relocation of 10,000 decoded rules while it grows

 private:
  Family family_;
  SnapshotDetail detail_;
};

}  // namespace

Result<NativeBackend::FamilyState> NativeBackend::Dump(Family family, const std::optional<std::string>& table,
                                                       SnapshotDetail detail, const ChainScope& scope,
                                                       const Probes& probes, bool closing_generation) {
  ModelVisitor dumped(family, detail);
  IPTKIT_ASSIGN_OR_RETURN(uint32_t generation,
                          DumpAtOneGeneration(family, table, detail, scope, dumped, closing_generation));
  std::deque<RuleInfo>& rules = dumped.rules;

  // The model, table by table in iptables-nft-save's order.
  FamilyState st;
  st.generation = generation;
  st.detail = detail;
  st.scope = scope;
  st.ruleset.family = family;
  struct Pending {
    Table* table;
    size_t chain;  // index in table->chains
    size_t index;  // index in the chain's rules
  };
  std::vector<Pending> where;
  // Tables first, so that pointers into st.ruleset.tables stay valid afterwards.
  for (const std::string& name : SaveOrder()) {
    if (!dumped.tables.count(name)) continue;
    IPTKIT_ASSIGN_OR_RETURN(Table t, NewTable(name));
    st.ruleset.tables.push_back(std::move(t));
    st.kernel[name].exists = true;
  }
  // Chains given with only their probed rules: each probe found byte for byte, every rule decoded to its binary
  // form (else the chain is decoded whole, which says what is wrong). hit[i]: the probe rule i equals.
  std::set<std::pair<std::string, std::string>> partial;
  std::vector<const Rule*> hit(rules.size(), nullptr);
  if (detail == SnapshotDetail::kRules && !probes.empty()) {
    std::map<std::pair<std::string, std::string>, std::set<size_t>> found;
    std::set<std::pair<std::string, std::string>> spoiled;
    for (size_t i = 0; i < rules.size(); ++i) {
      RuleInfo& ri = rules[i];
      auto p = probes.find({ri.table, ri.chain});
      if (p == probes.end()) continue;
      if (!ri.xt.ok()) {
        spoiled.insert(p->first);
        continue;
      }
      XtRule& got = *ri.xt;
      const Counters counters = got.counters;
      for (size_t k = 0; k < p->second.size() && hit[i] == nullptr; ++k) {
        got.counters = p->second[k].second.counters;
        if (got == p->second[k].second) {
          hit[i] = &p->second[k].first;
          found[p->first].insert(k);
        }
      }
      got.counters = counters;
    }
    for (const auto& [where_chain, wanted_rules] : probes) {
      if (!spoiled.count(where_chain) && found[where_chain].size() == wanted_rules.size()) {
        partial.insert(where_chain);
      }
    }
  }
  std::vector<const XtRule*> to_format;  // the decoded rules (in `rules`), in `where` order
  to_format.reserve(rules.size());
  // Room for every chain's rules up front (growing a vector of 10,000 rules copies them repeatedly).
  std::map<std::pair<std::string_view, std::string_view>, size_t> counts;
  {
    size_t* count = nullptr;
    const RuleInfo* run = nullptr;
    for (const RuleInfo& ri : rules) {
      if (run == nullptr || ri.chain != run->chain || ri.table != run->table) {
        run = &ri;
        count = &counts[{ri.table, ri.chain}];
      }
      ++*count;
    }
  }
  where.reserve(rules.size());
  for (Table& t : st.ruleset.tables) {
    KTable& kt = st.kernel[t.name];
    std::string reason = JudgeChains(dumped.chains, dumped.sets, t, kt);
    if (ListsNamedOnly(scope)) {
      // Builtin chains the plan does not name were not read: left out rather than shown with a made-up policy.
      std::erase_if(t.chains, [&](const Chain& c) { return c.builtin() && !scope.Lists(t.name, c.name); });
    }
    for (Chain& c : t.chains) {
      auto it = counts.find({t.name, c.name});
      if (it == counts.end()) continue;
      c.rules.reserve(it->second);
      if (auto kc = kt.chains.find(c.name); kc != kt.chains.end()) kc->second.rules.reserve(it->second);
    }
    // A chain's rules come one after another: its lookups are done once per run of them.
    const std::string* run = nullptr;
    auto kc = kt.chains.end();
    Chain* mc = nullptr;
    for (size_t i = 0; i < rules.size(); ++i) {
      RuleInfo& ri = rules[i];
      if (ri.table != t.name) continue;
      if (run == nullptr || ri.chain != *run) {
        run = &ri.chain;
        kc = kt.chains.find(ri.chain);
        mc = t.FindChain(ri.chain);
      }
      if (kc == kt.chains.end() || mc == nullptr) continue;  // a chain already judged above
      if (!ri.xt.ok()) {
        if (reason.empty()) {
          reason = "chain " + ri.chain + " rule " + std::to_string(mc->rules.size() + 1) + " (nft handle " +
                   std::to_string(ri.handle) + "): " + ri.xt.status().message();
        }
        continue;
      }
      kc->second.rules.push_back(Slot{ri.handle, 0, nullptr});
      mc->rules.emplace_back();
      if (detail != SnapshotDetail::kRules) continue;
      if (partial.count({ri.table, ri.chain})) {
        if (hit[i] != nullptr) {
          mc->rules.back() = *hit[i];
          mc->rules.back().counters = ri.xt->counters;
        }
        continue;
      }
      to_format.push_back(&*ri.xt);
      where.push_back(Pending{&t, static_cast<size_t>(mc - t.chains.data()), mc->rules.size() - 1});
    }
    t.unrepresentable_reason = reason;
  }
  // The models built in place, a slice of rules at a time (what a slice needs on the way is used again by the next
  // instead of growing with the table).
  IPTKIT_ASSIGN_OR_RETURN(Xtables * xt, Xtables::Instance());
  constexpr size_t kSlice = 1024;
  std::vector<const XtRule*> slice;
  std::vector<Rule*> out;
  for (size_t begin = 0; begin < to_format.size(); begin += kSlice) {
    const size_t end = std::min(to_format.size(), begin + kSlice);
    slice.assign(to_format.begin() + begin, to_format.begin() + end);
    out.clear();
    for (size_t i = begin; i < end; ++i) out.push_back(&where[i].table->chains[where[i].chain].rules[where[i].index]);
    for (auto& [k, error] : xt->ToRules(slice, out, netns_.get())) {
      const Pending& p = where[begin + k];
      if (p.table->unrepresentable_reason.empty()) {
        p.table->unrepresentable_reason =
            "chain " + p.table->chains[p.chain].name + " rule " + std::to_string(p.index + 1) + ": " + error.message();
      }
    }
  }
  // A table without a reason holds exactly its kernel rules in the model (slot i is rule i).
  return st;
}

namespace {

// Room for the rules a handle's own commits add to a kept snapshot's chain without moving every rule of it on the
// first (a chain read is reserved to its exact size).
constexpr size_t kSnapshotRoom = 64;

// A copy of a listed table for the snapshot a long-lived handle keeps, each chain with room to grow.
Table CopyWithRoom(const Table& table) {
  Table out;
  out.name = table.name;
  out.unrepresentable_reason = table.unrepresentable_reason;
  out.chains.reserve(table.chains.size());
  for (const Chain& c : table.chains) {
    Chain& kept = out.chains.emplace_back(Chain{c.name, c.policy, c.counters, {}});
    kept.rules.reserve(c.rules.size() + kSnapshotRoom);
    kept.rules.insert(kept.rules.end(), c.rules.begin(), c.rules.end());
  }
  return out;
}

void ReserveRoom(std::map<std::string, NativeBackend::KTable>& kernel) {
  for (auto& [name, kt] : kernel) {
    for (auto& [chain, kc] : kt.chains) kc.rules.reserve(kc.rules.size() + kSnapshotRoom);
  }
}

}  // namespace

Result<const NativeBackend::FamilyState*> NativeBackend::CurrentWhole(Family family) {
  auto whole = [&](const FamilyState& st) { return st.detail == SnapshotDetail::kRules && st.scope.every_chain; };
  auto it = cache_.find(family);
  if (it != cache_.end() && whole(it->second) && FreshFromEvents(family)) return &cache_.at(family);
  it = cache_.find(family);
  if (it != cache_.end() && whole(it->second)) {
    IPTKIT_ASSIGN_OR_RETURN(uint32_t gen, netlink_->GenerationId());
    if (gen == it->second.generation) {
      ++stats_.cache_hits;
      return &it->second;
    }
  }
  IPTKIT_ASSIGN_OR_RETURN(FamilyState st, Dump(family, std::nullopt, SnapshotDetail::kRules));
  Remember(family, std::move(st));
  return &cache_.at(family);
}

Result<Ruleset> NativeBackend::Read(Family family, const std::optional<std::string>& table, bool fresh_counters) {
  // The family or the table asked for; moved out of a snapshot nobody keeps.
  auto view = [&](const FamilyState& st, FamilyState* spare = nullptr) -> Ruleset {
    if (!table) return spare != nullptr ? std::move(spare->ruleset) : st.ruleset;
    Ruleset rs;
    rs.family = family;
    if (Table* t = spare != nullptr ? spare->ruleset.FindTable(*table) : nullptr) {
      rs.tables.push_back(std::move(*t));
    } else if (const Table* ct = st.ruleset.FindTable(*table)) {
      rs.tables.push_back(*ct);
    } else if (auto fresh = NewTable(*table); fresh.ok()) {
      rs.tables.push_back(*std::move(fresh));  // iptables-nft-save -t TABLE prints a table it does not have
    }
    return rs;
  };
  if (!fresh_counters) {
    IPTKIT_ASSIGN_OR_RETURN(const FamilyState* st, CurrentWhole(family));
    return view(*st);
  }
  // A listing is what the caller shows: it gets the model itself. A long-lived handle without the event cache keeps
  // a copy as its snapshot too (a plan at the same generation then reads nothing: a delete by spec right after a
  // listing finds its rule there); a one-shot process or the event cache (which keeps whole families from
  // notifications) does not pay for the copy (10,000 rules: about 7 MB of fresh pages).
  const bool keep = !options_.one_shot && !events_;
  if (table && fresh_counters) {
    IPTKIT_ASSIGN_OR_RETURN(FamilyState st, Dump(family, table, SnapshotDetail::kRules));
    Table* read = st.ruleset.FindTable(*table);
    if (!keep || read == nullptr) return view(st, &st);
    // A snapshot of that one table: it answers only plans that name their chains and look at this table alone
    // (ChainScope::named_only with tables), and it holds the rules of each of its chains.
    st.scope = ChainScope{};
    st.scope.every_chain = false;
    st.scope.named_only = true;
    st.scope.tables.insert(*table);
    for (const Chain& c : read->chains) st.scope.chains.emplace(*table, c.name);
    Table kept = CopyWithRoom(*read);
    Ruleset out = view(st, &st);  // the table read, moved out
    *read = std::move(kept);
    ReserveRoom(st.kernel);
    Remember(family, std::move(st));
    return out;
  }
  IPTKIT_ASSIGN_OR_RETURN(FamilyState st, Dump(family, std::nullopt, SnapshotDetail::kRules));
  if (!keep && !events_) return std::move(st.ruleset);
  if (!keep) {
    Ruleset out = view(st);
    Remember(family, std::move(st));
    return out;
  }
  Ruleset out = std::move(st.ruleset);
  st.ruleset = Ruleset{};
  st.ruleset.family = out.family;
  for (const Table& t : out.tables) st.ruleset.tables.push_back(CopyWithRoom(t));
  ReserveRoom(st.kernel);
  Remember(family, std::move(st));
  return out;
}

namespace {

// A plan's view of a snapshot that holds the rules it looks at: every table and chain, with the rules of the chains
// in `whole` and, of a chain in `probes`, only its rules that are the same rule (SameRule, as the delete by spec in
// Commit finds them) as one of the probes, in chain order; the other chains without rules (ChainScope: the plan
// looks at no other rule). A probe chain where some probe has no equal rule of its own (two deletes of one spec need
// two equal rules) is given whole, as a read of it would (the plan's error then says whether an owned rule equals
// the spec but for its owner tag, and which).
Ruleset ScopedView(const Ruleset& full, const std::set<std::pair<std::string, std::string>>& whole,
                   const std::map<std::pair<std::string, std::string>, std::vector<Rule>>& probes) {
  Ruleset out;
  out.family = full.family;
  out.tables.reserve(full.tables.size());
  for (const Table& t : full.tables) {
    Table& r = out.tables.emplace_back();
    r.name = t.name;
    r.unrepresentable_reason = t.unrepresentable_reason;
    r.chains.reserve(t.chains.size());
    for (const Chain& c : t.chains) {
      Chain& rc = r.chains.emplace_back(Chain{c.name, c.policy, c.counters, {}});
      if (whole.count({t.name, c.name})) {
        rc.rules = c.rules;
        continue;
      }
      auto p = probes.find({t.name, c.name});
      if (p == probes.end()) continue;
      const std::vector<Rule>& wanted = p->second;
      std::vector<bool> found(wanted.size(), false);
      for (const Rule& rule : c.rules) {
        // The probe it equals, one not found yet first.
        std::optional<size_t> equal;
        for (size_t k = 0; k < wanted.size(); ++k) {
          if (equal && (found[k] || !found[*equal])) continue;
          if (SameRule(rule, wanted[k])) equal = k;
        }
        if (!equal) continue;
        found[*equal] = true;
        rc.rules.push_back(rule);
      }
      if (std::find(found.begin(), found.end(), false) != found.end()) rc.rules = c.rules;
    }
  }
  return out;
}

}  // namespace

Result<Ruleset> NativeBackend::ReadForPlan(Family family, SnapshotDetail detail) {
  return ReadChainsForPlan(family, detail, ChainScope{});
}

Result<Ruleset> NativeBackend::ReadChainsForPlan(Family family, SnapshotDetail detail, const ChainScope& asked) {
  // A transaction that may go through the restore backend (unsupported_extensions) needs the rules themselves: that
  // backend renders guarded inverses from them.
  if (!native_.unsupported_extensions.empty()) return Read(family, std::nullopt, false);
  // The event cache keeps whole families fresh; a narrowed snapshot would only be read again whole. A plan without
  // rules reads no rules: every chain, or only those it names (ChainScope::named_only).
  ChainScope scope = asked;
  if (events_ || (detail == SnapshotDetail::kChains && !ListsNamedOnly(asked))) {
    scope = ChainScope{};
  } else if (detail == SnapshotDetail::kChains) {
    scope.named = NamedChains(asked);
    scope.chains.clear();
    scope.probes.clear();
  }
  // The probes as the kernel's rules print (Canonicalize caches them); a chain whose probes do not canonicalize is
  // given whole (the plan then says what is wrong with them).
  std::map<std::pair<std::string, std::string>, std::vector<Rule>> canonical_probes;
  std::set<std::pair<std::string, std::string>> whole_chains = asked.chains;
  if (detail == SnapshotDetail::kRules && !asked.every_chain) {
    for (const auto& [where, rules] : asked.probes) {
      if (asked.chains.count(where)) continue;
      Result<std::vector<Rule>> canon = Canonicalize(family, where.first, rules);
      if (canon.ok()) {
        canonical_probes[where] = *std::move(canon);
      } else {
        whole_chains.insert(where);
      }
    }
  }
  if (detail == SnapshotDetail::kRules && scope.every_chain) {
    if (asked.every_chain) return Read(family, std::nullopt, false);
    // The event cache keeps the whole family: the plan gets what it looks at, not a copy of every rule.
    IPTKIT_ASSIGN_OR_RETURN(const FamilyState* whole, CurrentWhole(family));
    return ScopedView(whole->ruleset, whole_chains, canonical_probes);
  }
  // Whether a cached snapshot lists every table the plan looks at: one read for a plan that named its chains and its
  // tables lists those tables only (DumpAtOneGeneration).
  auto lists_tables = [&](const FamilyState& st) {
    if (!ListsNamedOnly(st.scope) || st.scope.tables.empty()) return true;
    return ListsNamedOnly(scope) && !scope.tables.empty() &&
           std::includes(st.scope.tables.begin(), st.scope.tables.end(), scope.tables.begin(), scope.tables.end());
  };
  // Whether a cached snapshot holds what is asked: enough detail, every table and chain the plan looks up, and the
  // rules of every chain in scope.
  auto covers = [&](const FamilyState& st) {
    return st.detail >= detail && st.scope.ListsAll(scope) && lists_tables(st) &&
           (detail == SnapshotDetail::kChains || st.scope.Covers(scope));
  };
  // The cached snapshot when it is current and detailed enough, reduced to what was asked.
  auto reduce = [&](const Ruleset& full) {
    Ruleset out;
    out.family = full.family;
    out.tables.reserve(full.tables.size());
    for (const Table& t : full.tables) {
      Table r;
      r.name = t.name;
      r.unrepresentable_reason = t.unrepresentable_reason;
      r.chains.reserve(t.chains.size());
      for (const Chain& c : t.chains) {
        Chain rc{c.name, c.policy, c.counters, {}};
        if (detail == SnapshotDetail::kPositions) rc.rules.resize(c.rules.size());
        r.chains.push_back(std::move(rc));
      }
      out.tables.push_back(std::move(r));
    }
    return out;
  };
  // What the plan gets from a current snapshot that covers it: at kRules the rules of the chains it looks at only
  // (a delete by spec gets its chain's rules equal to the rule, not a copy of every rule of the chain).
  auto answer = [&](const FamilyState& st) -> Ruleset {
    if (detail == SnapshotDetail::kRules && !scope.every_chain) {
      return ScopedView(st.ruleset, whole_chains, canonical_probes);
    }
    return st.detail == detail ? st.ruleset : reduce(st.ruleset);
  };
  auto it = cache_.find(family);
  if (it != cache_.end() && covers(it->second) && FreshFromEvents(family)) return answer(cache_.at(family));
  it = cache_.find(family);
  if (it != cache_.end() && covers(it->second)) {
    IPTKIT_ASSIGN_OR_RETURN(uint32_t gen, netlink_->GenerationId());
    if (gen == it->second.generation) {
      ++stats_.cache_hits;
      return answer(it->second);
    }
  }
  // The probes' canonical and binary forms (Canonicalize caches them for the plan). A probe that does not
  // canonicalize, prints as nothing (a placeholder would equal it) or is lossy has its chain decoded whole.
  ChainScope narrowed = scope;
  Probes probes;
  if (detail == SnapshotDetail::kRules) {
    for (const auto& [where, rules] : scope.probes) {
      narrowed.probes.erase(where);
      if (scope.chains.count(where)) continue;
      Result<std::vector<Rule>> canon = Canonicalize(family, where.first, rules);
      std::vector<std::pair<Rule, XtRule>> forms;
      for (size_t k = 0; canon.ok() && k < canon->size(); ++k) {
        const Rule& c = (*canon)[k];
        if (!c.lossy.empty() || FormatRuleSpec(c).empty() || !EnsureXt(family, {&c}).ok()) break;
        std::shared_ptr<const XtRule> xt = XtOf(family, c);
        if (!xt) break;
        Result<XtRule> back = RoundTrip(*xt);
        if (!back.ok()) break;
        forms.emplace_back(c, *std::move(back));
      }
      if (canon.ok() && forms.size() == rules.size()) {
        probes[where] = std::move(forms);
        narrowed.probes[where] = rules;
      } else {
        narrowed.chains.insert(where);
      }
    }
  }
  if (detail == SnapshotDetail::kPositions && !narrowed.every_chain && narrowed.probes.empty()) {
    IPTKIT_ASSIGN_OR_RETURN(std::optional<FamilyState> scanned, ScanPositions(family, narrowed));
    if (scanned) {
      Ruleset out = scanned->ruleset;
      Remember(family, *std::move(scanned));
      return out;
    }
  }
  if (!probes.empty()) {
    IPTKIT_ASSIGN_OR_RETURN(std::optional<FamilyState> scanned, ScanProbes(family, narrowed, probes));
    if (scanned) {
      Ruleset out = scanned->ruleset;
      Remember(family, *std::move(scanned));
      return out;
    }
  }
  IPTKIT_ASSIGN_OR_RETURN(FamilyState st, Dump(family, std::nullopt, detail, narrowed, probes));
  Ruleset out = st.ruleset;
  Remember(family, std::move(st));
  return out;
}

namespace {

// Dumps the rules of one chain (filtered by the kernel; a message of another chain is skipped all the same) and
// calls `on_rule` with each message and its place.
Status DumpChainRules(nft::NetlinkClient& netlink, Family family, const std::string& table, const std::string& chain,
                      const std::function<Status(const nlmsghdr*, const RuleLocation&)>& on_rule) {
  return netlink.DumpMessages(
      NFT_MSG_GETRULE, NfProto(family),
      [&](nlmsghdr* nlh) {
        mnl_attr_put_strz(nlh, NFTA_RULE_TABLE, table.c_str());
        mnl_attr_put_strz(nlh, NFTA_RULE_CHAIN, chain.c_str());
      },
      [&](const nlmsghdr* m) -> Status {
        RuleLocation loc = RuleMessageLocation(m);
        if (loc.table != table || loc.chain != chain) return Status::Ok();
        return on_rule(m, loc);
      });
}

}  // namespace

Result<std::optional<NativeBackend::FamilyState>> NativeBackend::ScanChains(
    Family family, SnapshotDetail detail, const ChainScope& dumped, const ChainScope& scope,
    const std::vector<std::pair<std::string, std::string>>& chains, const ChainScan& scan) {
  constexpr int kAttempts = 3;
  for (int attempt = 1; attempt <= kAttempts; ++attempt) {
    // Dump's own closing read of the generation is the one after the scans (below): everything between the first
    // read and that one is of one generation.
    IPTKIT_ASSIGN_OR_RETURN(FamilyState st,
                            Dump(family, std::nullopt, detail, dumped, {}, /*closing_generation=*/false));
    bool complete = true;
    for (const auto& [table, chain] : chains) {
      iptkit::Table* mt = st.ruleset.FindTable(table);
      Chain* mc = mt == nullptr ? nullptr : mt->FindChain(chain);
      auto kt = st.kernel.find(table);
      if (mc == nullptr || kt == st.kernel.end() || !kt->second.chains.count(chain)) continue;  // the plan says so
      if (!scan(table, chain, *mt, *mc, kt->second.chains.at(chain))) {
        complete = false;
        break;
      }
    }
    if (!complete) return std::optional<FamilyState>();
    IPTKIT_ASSIGN_OR_RETURN(uint32_t now, netlink_->GenerationId());
    if (now == st.generation) {
      st.scope = scope;
      return std::optional<FamilyState>(std::move(st));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200 * attempt));
  }
  return std::optional<FamilyState>();
}

Result<std::optional<NativeBackend::FamilyState>> NativeBackend::ScanPositions(Family family, const ChainScope& scope) {
  ChainScope none = scope;
  none.named.insert(scope.chains.begin(), scope.chains.end());  // still listed (ChainScope::named_only)
  none.chains.clear();
  const std::vector<std::pair<std::string, std::string>> chains(scope.chains.begin(), scope.chains.end());
  std::vector<uint64_t> handles;
  return ScanChains(family, SnapshotDetail::kPositions, none, scope, chains,
                    [&](const std::string& table, const std::string& chain, iptkit::Table&, Chain& mc, KChain& kc) {
                      handles.clear();
                      Status s = DumpChainRules(*netlink_, family, table, chain,
                                                [&](const nlmsghdr*, const RuleLocation& loc) {
                                                  handles.push_back(loc.handle);
                                                  return Status::Ok();
                                                });
                      if (!s.ok()) return false;
                      // Placeholders: positions and handles only, as Dump gives them at kPositions.
                      mc.rules.resize(handles.size());
                      kc.rules.reserve(handles.size());
                      for (uint64_t h : handles) kc.rules.push_back(Slot{h, 0, nullptr});
                      return true;
                    });
}

Result<std::optional<NativeBackend::FamilyState>> NativeBackend::ScanProbes(Family family, const ChainScope& scope,
                                                                            const Probes& probes) {
  // Dump reads tables, chains (and sets) and the rules of scope.chains; the probe chains are scanned after it, and
  // the snapshot keeps its probes: it answers no other plan (ChainScope::Covers).
  ChainScope rest = scope;
  for (const auto& [where, rules] : scope.probes) rest.named.insert(where);  // still listed (named_only)
  rest.probes.clear();
  std::vector<std::pair<std::string, std::string>> chains;
  for (const auto& [where, forms] : probes) chains.push_back(where);
  return ScanChains(family, SnapshotDetail::kRules, rest, scope, chains,
                    [&](const std::string& table, const std::string& chain, iptkit::Table& mt, Chain& mc, KChain& kc) {
                      if (!mt.unrepresentable_reason.empty()) return true;  // refused by the plan
                      const std::vector<std::pair<Rule, XtRule>>& forms = probes.at({table, chain});
                      std::vector<bool> found(forms.size(), false);
                      bool spoiled = false;
                      ++stats_.probe_scans;
                      Status s = DumpChainRules(*netlink_, family, table, chain,
                                                [&](const nlmsghdr* m, const RuleLocation& loc) -> Status {
                                                  // Every rule is decoded, also past the equal ones: one that cannot be
                                                  // makes the table unrepresentable (the chain is then decoded whole,
                                                  // which says why), as when the chain is read.
                                                  if (spoiled) return Status::Ok();
                                                  Result<XtRule> got = DecodeRuleMessage(family, m);
                                                  if (!got.ok()) {
                                                    spoiled = true;
                                                    return Status::Ok();
                                                  }
                                                  // The probe it equals, one not found yet first (two deletes of one
                                                  // spec need two equal rules).
                                                  const Counters counters = got->counters;
                                                  std::optional<size_t> equal;
                                                  for (size_t k = 0; k < forms.size(); ++k) {
                                                    if (equal && (found[k] || !found[*equal])) continue;
                                                    got->counters = forms[k].second.counters;
                                                    if (*got == forms[k].second) equal = k;
                                                  }
                                                  if (!equal) return Status::Ok();
                                                  found[*equal] = true;
                                                  mc.rules.push_back(forms[*equal].first);
                                                  mc.rules.back().counters = counters;
                                                  kc.rules.push_back(Slot{loc.handle, 0, nullptr});
                                                  return Status::Ok();
                                                });
                      return s.ok() && !spoiled && std::find(found.begin(), found.end(), false) == found.end();
                    });
}

bool NativeBackend::Unchanged(Family family) {
  auto it = cache_.find(family);
  if (it == cache_.end() || it->second.detail != SnapshotDetail::kRules || !it->second.scope.every_chain) return false;
  if (events_) {
    // Current and unchanged: nothing foreign since (a re-read table would change what the caller kept).
    const uint64_t changes = stats_.event_table_reads + stats_.event_resyncs + stats_.event_applied;
    return FreshFromEvents(family) && changes == stats_.event_table_reads + stats_.event_resyncs + stats_.event_applied;
  }
  Result<uint32_t> gen = netlink_->GenerationId();
  return gen.ok() && *gen == it->second.generation;
}

void NativeBackend::Remember(Family family, FamilyState st) {
  const uint32_t generation = st.generation;
  cache_[family] = std::move(st);
  own_commits_.erase(family);  // read whole: every commit through `generation` is in it
  if (events_) events_->Track(family, generation);
}

namespace {

// NFTA_RULE_POSITION of a rule notification: the handle of the rule before it (nullopt: none given).
std::optional<uint64_t> NotifiedPosition(const nlmsghdr* nlh) {
  const char* start = static_cast<const char*>(mnl_nlmsg_get_payload_offset(nlh, sizeof(nfgenmsg)));
  const char* end = static_cast<const char*>(mnl_nlmsg_get_payload_tail(nlh));
  int remaining = static_cast<int>(end - start);
  for (const nlattr* a = reinterpret_cast<const nlattr*>(start); mnl_attr_ok(a, remaining);
       remaining -= static_cast<int>(MNL_ALIGN(a->nla_len)), a = mnl_attr_next(a)) {
    if (mnl_attr_get_type(a) == NFTA_RULE_POSITION && mnl_attr_get_payload_len(a) == 8) {
      return be64toh(mnl_attr_get_u64(a));
    }
  }
  return std::nullopt;
}

}  // namespace

namespace {

// Where, at or after `start` in `slots`, the kernel put a rule of another writer's transaction that went right after
// the rule before `start` (or at the head, for `start` 0) when rules later own commits added sit there (`later`):
// past each of them that the kernel put before it. A rule that existed at the transaction is before it when it sits
// before `start`; a later own rule added at the head is before it, one added at the end after it, one added right
// after or before a rule (its anchor) is on the same side as its anchor. nullopt when a side is not known (the
// placement, or an anchor that is gone) or the sides do not form one run before and one after.
std::optional<size_t> PlaceAmongLaterOwn(const std::vector<NativeBackend::Slot>& slots, size_t start,
                                         const std::map<uint64_t, NativeBackend::OwnPlacement>& later) {
  using Kind = NativeBackend::OwnPlacement::Kind;
  std::map<uint64_t, std::optional<bool>> memo;
  std::function<std::optional<bool>(uint64_t, int)> before = [&](uint64_t handle, int depth) -> std::optional<bool> {
    auto own = later.find(handle);
    if (own == later.end()) {
      for (size_t i = 0; i < slots.size(); ++i) {
        if (slots[i].handle == handle) return i < start;
      }
      return std::nullopt;  // gone since
    }
    if (auto m = memo.find(handle); m != memo.end()) return m->second;
    std::optional<bool> side;
    switch (own->second.kind) {
      case Kind::kHead:
        side = true;
        break;
      case Kind::kEnd:
        side = false;
        break;
      case Kind::kAfter:
      case Kind::kBefore:
        if (depth < 64) side = before(own->second.anchor, depth + 1);
        break;
      case Kind::kOther:
        break;
    }
    memo[handle] = side;
    return side;
  };
  size_t at = start;
  while (at < slots.size() && later.count(slots[at].handle)) {
    std::optional<bool> side = before(slots[at].handle, 0);
    if (!side) return std::nullopt;
    if (!*side) break;
    ++at;
  }
  for (size_t i = at; i < slots.size() && later.count(slots[i].handle); ++i) {
    std::optional<bool> side = before(slots[i].handle, 0);
    if (!side || *side) return std::nullopt;
  }
  return at;
}

}  // namespace

bool NativeBackend::ApplyRuleChanges(Family family, FamilyState& st, const EventFeed::RuleChanges& changes,
                                     const std::map<uint64_t, OwnPlacement>& later_own) {
  Table* table = st.ruleset.FindTable(changes.table);
  auto kt = st.kernel.find(changes.table);
  if (table == nullptr || kt == st.kernel.end() || !table->unrepresentable_reason.empty()) return false;
  if (st.detail == SnapshotDetail::kChains) return true;  // no rules held
  // Where the kernel put an added rule (nf_tables_rule_notify, at commit): right after the rule NFTA_RULE_POSITION
  // names, as the chain's list stood then (every rule the transaction adds is in it, each deletion notified before
  // is gone); without it first in the chain or last, which NLM_F_APPEND tells apart (set for an append and for a
  // replace). A replace deletes a rule of the same chain in the same transaction, after which a rule without a
  // position can be first with the flag: such a chain is read again unless it is empty (first is last). A rule
  // placed after one the transaction adds later waits for that one.
  std::set<std::string_view> deleting;
  std::set<uint64_t> added;
  for (const std::string& m : changes.messages) {
    const auto* nlh = reinterpret_cast<const nlmsghdr*>(m.data());
    const RuleLocation loc = RuleMessageLocation(nlh);
    if (NFNL_MSG_TYPE(nlh->nlmsg_type) == NFT_MSG_DELRULE) deleting.insert(loc.chain);
    if (NFNL_MSG_TYPE(nlh->nlmsg_type) == NFT_MSG_NEWRULE) added.insert(loc.handle);
  }
  std::vector<const nlmsghdr*> waiting;  // added rules whose predecessor is not placed yet
  // 1: applied, 0: waits for its predecessor, -1: cannot be applied exactly.
  auto apply = [&](const nlmsghdr* nlh) -> int {
    const RuleLocation loc = RuleMessageLocation(nlh);
    Chain* chain = table->FindChain(loc.chain);
    auto kc = kt->second.chains.find(std::string(loc.chain));
    if (chain == nullptr || kc == kt->second.chains.end() || loc.handle == 0 ||
        chain->rules.size() != kc->second.rules.size()) {
      return -1;
    }
    std::vector<Slot>& slots = kc->second.rules;
    auto at = [&](uint64_t handle) {
      return std::find_if(slots.begin(), slots.end(), [&](const Slot& s) { return s.handle == handle; });
    };
    if (NFNL_MSG_TYPE(nlh->nlmsg_type) == NFT_MSG_DELRULE) {
      auto it = at(loc.handle);
      if (it == slots.end()) return -1;
      chain->rules.erase(chain->rules.begin() + (it - slots.begin()));
      slots.erase(it);
      return 1;
    }
    if (at(loc.handle) != slots.end()) return -1;  // known already: not news after all
    size_t index = 0;
    if (std::optional<uint64_t> prev = NotifiedPosition(nlh)) {
      auto it = at(*prev);
      if (it == slots.end()) return added.count(*prev) ? 0 : -1;
      index = static_cast<size_t>(it - slots.begin()) + 1;
    } else if (nlh->nlmsg_flags & NLM_F_APPEND) {
      if (deleting.count(loc.chain) && !slots.empty()) return -1;
      // At the end of the chain as it was: after every rule but those of later own commits.
      index = slots.size();
      while (index > 0 && later_own.count(slots[index - 1].handle)) --index;
    }
    if (index < slots.size() && later_own.count(slots[index].handle)) {
      // Rules of later own commits where it goes: it goes after those the kernel put before it.
      std::optional<size_t> at = PlaceAmongLaterOwn(slots, index, later_own);
      if (!at) return -1;
      index = *at;
    }
    Rule rule;
    if (st.detail == SnapshotDetail::kRules) {
      Result<XtRule> xt = DecodeDumpedRule(family, nlh);
      if (!xt.ok()) return -1;  // the read says why the table cannot be shown
      Result<Xtables*> xtables = Xtables::Instance();
      if (!xtables.ok() || !(*xtables)->ToRules({&*xt}, {&rule}, netns_.get()).empty()) return -1;
    }
    chain->rules.insert(chain->rules.begin() + static_cast<std::ptrdiff_t>(index), std::move(rule));
    slots.insert(slots.begin() + static_cast<std::ptrdiff_t>(index), Slot{loc.handle, 0, nullptr});
    return 1;
  };
  for (const std::string& m : changes.messages) {
    const auto* nlh = reinterpret_cast<const nlmsghdr*>(m.data());
    const int done = apply(nlh);
    if (done < 0) return false;
    if (done == 0) {
      waiting.push_back(nlh);
      continue;
    }
    // A rule placed may be the predecessor some waiting rules need.
    for (bool progress = true; progress && !waiting.empty();) {
      progress = false;
      for (auto it = waiting.begin(); it != waiting.end();) {
        const int w = apply(*it);
        if (w < 0) return false;
        if (w == 0) {
          ++it;
          continue;
        }
        it = waiting.erase(it);
        progress = true;
      }
    }
  }
  return waiting.empty();
}

bool NativeBackend::FreshFromEvents(Family family) {
  if (!events_) return false;
  auto forget = [&] {
    cache_.erase(family);
    own_commits_.erase(family);
    events_->Forget(family);
    return false;
  };
  constexpr int kRounds = 5;
  constexpr std::chrono::milliseconds kCatchUp{1000};
  for (int round = 0; round < kRounds; ++round) {
    auto it = cache_.find(family);
    if (it == cache_.end()) return false;
    FamilyState& st = it->second;
    // A commit of ours moved the snapshot on in place: its own notifications are no news, in either family (the
    // drain below reads them for both; one taken for foreign would be applied a second time).
    if (!events_->tracked(family)) events_->Track(family, st.generation);
    for (const auto& [f, other] : cache_) {
      if (events_->tracked(f) && events_->valid(f) != other.generation) events_->Advance(f, other.generation);
    }
    if (!events_->Drain().ok()) return forget();
    if (events_->lost(family)) {
      // Lost notifications (the rest of that transaction, its NEWGEN) will never come: read the family whole.
      ++stats_.event_resyncs;
      if (!events_->Drain().ok()) return forget();
      Result<uint32_t> now = netlink_->GenerationId();
      if (!now.ok()) return forget();
      events_->Rebase(*now);
      Result<FamilyState> fresh = Dump(family, std::nullopt, st.detail);
      if (!fresh.ok()) return forget();
      Remember(family, *std::move(fresh));
      continue;
    }
    // The snapshot, and each table read since, is current only once the notifications up to its generation are in
    // (the kernel bumps the id before it queues them).
    uint32_t need = st.generation;
    if (uint32_t t = events_->NewestTableRead(family); t != 0 && static_cast<int32_t>(t - need) > 0) need = t;
    std::vector<OwnCommit>& own = own_commits_[family];
    for (const OwnCommit& c : own) {
      if (static_cast<int32_t>(c.generation - need) > 0) need = c.generation;  // the commits before it too
    }
    if (!events_->WaitFor(need, kCatchUp)) return forget();
    if (events_->lost(family)) continue;
    EventFeed::Changes changes = events_->Take(family);
    // Rule changes are applied from their notifications; a table where that fails is read again.
    for (const EventFeed::RuleChanges& rc : changes.pending) {
      if (changes.dirty.count(rc.table)) continue;
      std::map<uint64_t, OwnPlacement> later_own;
      for (const OwnCommit& c : own) {
        if (static_cast<int32_t>(c.generation - rc.generation) <= 0) continue;
        for (uint64_t h : c.added) {
          auto p = c.placed.find(h);
          later_own[h] = p == c.placed.end() ? OwnPlacement{} : p->second;
        }
      }
      if (ApplyRuleChanges(family, st, rc, later_own)) {
        ++stats_.event_applied;
      } else {
        changes.dirty.insert(rc.table);
      }
    }
    if (changes.dirty.empty()) {
      // Every transaction through seen() is in the snapshot: it is the kernel's state at that generation.
      own.clear();
      st.generation = events_->seen();
      events_->Advance(family, st.generation);
      ++stats_.event_hits;
      return true;
    }
    for (const std::string& name : changes.dirty) {
      ++stats_.event_table_reads;
      Result<FamilyState> part = Dump(family, name, st.detail);
      if (!part.ok()) return forget();
      // Splice the table in (or out, when it is gone), in iptables-nft-save's table order.
      std::vector<Table>& tables = st.ruleset.tables;
      tables.erase(std::remove_if(tables.begin(), tables.end(), [&](const Table& t) { return t.name == name; }),
                   tables.end());
      st.kernel.erase(name);
      if (Table* fresh = part->ruleset.FindTable(name)) {
        const std::vector<std::string>& order = SaveOrder();
        auto rank = [&](const std::string& n) { return std::find(order.begin(), order.end(), n) - order.begin(); };
        auto at = std::find_if(tables.begin(), tables.end(), [&](const Table& t) { return rank(t.name) > rank(name); });
        tables.insert(at, std::move(*fresh));
        st.kernel[name] = std::move(part->kernel[name]);
      }
      events_->TableRead(family, name, part->generation);
    }
  }
  return forget();  // a writer busier than the reads: read whole, as without the feed
}

// ---- Canonical forms ----

Result<std::vector<Rule>> NativeBackend::Canonicalize(Family family, const std::string& table,
                                                      const std::vector<Rule>& rules) {
  (void)table;  // iptables' canonical form of a rule does not depend on its table
  // Keyed by what is sent (the typed form when there is one): two typed specs that print alike (a lossy print) are
  // two kernel rules and must not share a binary form.
  std::vector<Rule> out(rules.size());
  std::vector<std::string> keys(rules.size());
  std::vector<Rule> todo;
  std::vector<size_t> todo_index;
  std::map<std::string, size_t> seen;
  for (size_t i = 0; i < rules.size(); ++i) {
    IPTKIT_RETURN_IF_ERROR(ValidateRule(rules[i], family));
    keys[i] = FormatRuleForRestore(rules[i], /*counters=*/false);
    if (canonical_.count({family, keys[i]})) continue;
    if (seen.emplace(keys[i], todo.size()).second) {
      IPTKIT_ASSIGN_OR_RETURN(Rule source, dialect::SourceForm(rules[i], family));
      todo.push_back(std::move(source));
      todo_index.push_back(i);
    }
  }
  if (!todo.empty()) {
    IPTKIT_ASSIGN_OR_RETURN(Xtables * xt, Xtables::Instance());
    std::vector<const Rule*> todo_ptrs;
    for (const Rule& r : todo) todo_ptrs.push_back(&r);
    std::vector<Result<XtRule>> parsed = xt->Parse(family, todo_ptrs, netns_.get());
    std::vector<XtRule> decoded;
    std::vector<const XtRule*> to_format;
    decoded.reserve(todo.size());
    for (size_t k = 0; k < todo.size(); ++k) {
      const std::string& spec = keys[todo_index[k]];
      if (!parsed[k].ok()) return parsed[k].status().WithContext("rule '" + spec + "'");
      parsed[k]->counters = {};
      Result<XtRule> back = RoundTrip(*parsed[k]);
      if (!back.ok()) return back.status().WithContext("rule '" + spec + "'");
      decoded.push_back(*std::move(back));
    }
    for (const XtRule& d : decoded) to_format.push_back(&d);
    std::vector<Result<Rule>> canon = xt->ToRules(to_format, netns_.get());
    for (size_t k = 0; k < todo.size(); ++k) {
      const std::string& spec = keys[todo_index[k]];
      if (!canon[k].ok()) return canon[k].status().WithContext("rule '" + spec + "'");
      canon[k]->counters = {};
      xt_[{family, spec}] = std::make_shared<const XtRule>(*std::move(parsed[k]));
      canonical_[{family, spec}] = *std::move(canon[k]);
    }
  }
  // Each canonical rule carries what was asked for as its typed form (as the restore backend's Canonicalize does),
  // so that XtOf finds the binary form parsed from it.
  for (size_t i = 0; i < rules.size(); ++i) {
    out[i] = canonical_.at({family, keys[i]});
    out[i].counters = rules[i].counters;
    out[i].typed = HasTypedForm(rules[i]) ? rules[i].typed : dialect::PrintedArgs(rules[i]);
    Rule untagged = out[i];
    untagged.ClearOwnerTag();
    out[i].typed_for = FormatRuleSpec(untagged);
  }
  return out;
}

namespace {
bool UsesIpset(const Rule& rule) {
  if (rule.target.name == "SET") return true;
  for (const Match& m : rule.matches) {
    if (m.name == "set") return true;
  }
  return false;
}
}  // namespace

Status NativeBackend::EnsureXt(Family family, const std::vector<const Rule*>& rules) {
  std::vector<Rule> todo;
  std::vector<std::string> keys;
  std::set<std::string> seen;
  for (const Rule* r : rules) {
    std::string key = FormatRuleForRestore(*r, /*counters=*/false);
    if (!seen.insert(key).second) continue;
    // The set match and target carry the kernel's index of the set, looked up by name when parsed: a set destroyed
    // and made again under the same name may have another index, so their binary form is never reused.
    if (UsesIpset(*r)) {
      xt_.erase({family, key});
    } else if (xt_.count({family, key})) {
      continue;
    }
    IPTKIT_ASSIGN_OR_RETURN(Rule source, dialect::SourceForm(*r, family));
    todo.push_back(std::move(source));
    keys.push_back(std::move(key));
  }
  if (todo.empty()) return Status::Ok();
  IPTKIT_ASSIGN_OR_RETURN(Xtables * xt, Xtables::Instance());
  std::vector<const Rule*> todo_ptrs;
  for (const Rule& r : todo) todo_ptrs.push_back(&r);
  std::vector<Result<XtRule>> parsed = xt->Parse(family, todo_ptrs, netns_.get());
  for (size_t k = 0; k < todo.size(); ++k) {
    if (!parsed[k].ok()) return parsed[k].status().WithContext("rule '" + keys[k] + "'");
    parsed[k]->counters = {};
    xt_[{family, keys[k]}] = std::make_shared<const XtRule>(*std::move(parsed[k]));
  }
  return Status::Ok();
}

Result<bool> NativeBackend::HoldsExactRule(Family family, const std::string& table, const std::string& chain,
                                           const Rule& rule) {
  if (!native_.unsupported_extensions.empty()) return false;
  IPTKIT_RETURN_IF_ERROR(EnsureXt(family, {&rule}));
  std::shared_ptr<const XtRule> xt = XtOf(family, rule);
  if (!xt) return false;
  Result<XtRule> want = RoundTrip(*xt);
  if (!want.ok()) return false;
  want->counters = {};
  bool found = false;
  Status s = DumpChainRules(*netlink_, family, table, chain, [&](const nlmsghdr* m, const RuleLocation&) -> Status {
    if (found) return Status::Ok();
    Result<XtRule> got = DecodeRuleMessage(family, m);
    if (!got.ok()) return Status::Ok();
    got->counters = {};
    found = *got == *want;
    return Status::Ok();
  });
  // A chain or table that is not there: not found this way (the caller says what is missing).
  if (!s.ok()) return false;
  return found;
}

std::shared_ptr<const XtRule> NativeBackend::XtOf(Family family, const Rule& rule) const {
  auto it = xt_.find({family, FormatRuleForRestore(rule, /*counters=*/false)});
  return it == xt_.end() ? nullptr : it->second;
}

// ---- Committing ----

std::optional<std::string> NativeBackend::NotExpressible(const std::vector<CommitTable>& tables) const {
  if (native_.unsupported_extensions.empty()) return std::nullopt;
  for (const CommitTable& ct : tables) {
    for (const TableOp& op : ct.batch.ops) {
      const bool adds = op.kind == TKind::kAppend || op.kind == TKind::kInsert || op.kind == TKind::kReplace;
      if (!adds) continue;
      for (const Match& m : op.rule.matches) {
        if (native_.unsupported_extensions.count(m.name)) return "match " + m.name + " (unsupported_extensions)";
      }
      if (native_.unsupported_extensions.count(op.rule.target.name)) {
        return "target " + op.rule.target.name + " (unsupported_extensions)";
      }
    }
  }
  return std::nullopt;
}

namespace {

// nf_tables renames a chain by its handle, which a chain created in the same batch does not have yet. Such a
// rename is folded into the creation: the chain is created under its final name and every op between creation
// and rename that names it (as its chain or as a jump/goto target) uses the final name. The result is the same
// table; the planner has already checked that the final name was free and unused until the rename.
std::vector<CommitTable> FoldRenamesOfNewChains(std::vector<CommitTable> tables) {
  for (CommitTable& ct : tables) {
    std::vector<TableOp>& ops = ct.batch.ops;
    for (size_t r = 0; r < ops.size(); ++r) {
      if (ops[r].kind != TKind::kRenameChain) continue;
      const std::string from = ops[r].chain;
      const std::string to = ops[r].arg;
      // The latest creation of `from` before the rename, with no deletion of it in between.
      std::optional<size_t> created;
      for (size_t i = 0; i < r; ++i) {
        if (ops[i].kind == TKind::kNewChain && ops[i].chain == from) created = i;
        if (ops[i].kind == TKind::kDeleteChain && (ops[i].chain == from || ops[i].chain.empty())) created.reset();
        if (ops[i].kind == TKind::kRenameChain && ops[i].chain == from) created.reset();
      }
      if (!created) continue;
      for (size_t i = *created; i < r; ++i) {
        TableOp& op = ops[i];
        if (op.chain == from) op.chain = to;
        if (op.kind == TKind::kRenameChain && op.arg == from) op.arg = to;
        if (!op.rule.target.empty() && op.rule.target.name == from) op.rule.target.name = to;
      }
      ops.erase(ops.begin() + static_cast<std::ptrdiff_t>(r));
      --r;
    }
  }
  return tables;
}

}  // namespace

Result<CommitReport> NativeBackend::CommitThroughRestore(const std::vector<CommitTable>& tables,
                                                         const std::string& why) {
  if (!restore_) {
    IPTKIT_ASSIGN_OR_RETURN(restore_, NewRestoreBackend(Variant::kNft, options_));
  }
  ++stats_.restore_fallbacks;
  cache_.clear();  // the restore backend's commits move the generation
  Result<CommitReport> report = restore_->Commit(tables);
  cache_.clear();
  if (!report.ok()) return report.status().WithContext("through the restore backend (" + why + ")");
  report->fallback_reason = why;
  return report;
}

namespace {

// Builds one batch for the tables of a Commit call on the cached snapshots (in place; the caller drops the cache
// when anything fails).
class BatchBuilder {
 public:
  struct SentOp {
    uint32_t seq;
    std::string what;  // "ipv4 filter: -A INPUT ..." for errors
  };
  struct PendingRule {
    Family family;
    std::string table, chain;
    uint32_t id;
    uint32_t seq;
    NativeBackend::OwnPlacement placement;  // its anchor, when a rule of this batch: 0 and `anchor_id`
    uint32_t anchor_id = 0;
  };
  struct PendingChain {
    Family family;
    std::string table, chain;
    uint32_t seq;
  };

  BatchBuilder(NftBatch& batch, std::map<Family, NativeBackend::FamilyState>& cache,
               const std::function<std::shared_ptr<const XtRule>(Family, const Rule&)>& xt_of, bool echo_rules)
      : batch_(batch), cache_(cache), xt_of_(xt_of), echo_rules_(echo_rules) {}

  Status AddTable(const TableBatch& tb) {
    NativeBackend::FamilyState& st = cache_.at(tb.family);
    family_ = tb.family;
    table_name_ = tb.table;
    proto_ = NfProto(tb.family);
    kt_ = &st.kernel[tb.table];
    mt_ = st.ruleset.FindTable(tb.table);
    if (mt_ == nullptr) {
      IPTKIT_ASSIGN_OR_RETURN(Table fresh, NewTable(tb.table));
      const auto& order = SaveOrder();
      auto rank = [&](const std::string& n) { return std::find(order.begin(), order.end(), n) - order.begin(); };
      auto pos = std::find_if(st.ruleset.tables.begin(), st.ruleset.tables.end(),
                              [&](const Table& t) { return rank(t.name) > rank(tb.table); });
      mt_ = &*st.ruleset.tables.insert(pos, std::move(fresh));
    }
    if (!mt_->unrepresentable_reason.empty()) {
      return Status::FailedPrecondition("table " + std::string(FamilyName(tb.family)) + " " + tb.table +
                                        " is unrepresentable (" + mt_->unrepresentable_reason +
                                        "); iptkit does not rewrite it");
    }
    where_ = std::string(FamilyName(tb.family)) + " " + tb.table;
    if (tb.flush_table) {
      // iptables-nft-restore without --noflush: the table goes (with everything in it) and comes back.
      if (kt_->exists) {
        TablePtr t(nftnl_table_alloc());
        nftnl_table_set_u32(t.get(), NFTNL_TABLE_FAMILY, proto_);
        nftnl_table_set_str(t.get(), NFTNL_TABLE_NAME, tb.table.c_str());
        Sent(batch_.AddTable(NFT_MSG_DELTABLE, proto_, 0, t.get()), "deleting the table for a whole-table restore");
      }
      *kt_ = NativeBackend::KTable{};
      IPTKIT_ASSIGN_OR_RETURN(*mt_, NewTable(tb.table));
    }
    for (size_t i = 0; i < tb.ops.size(); ++i) {
      const TableOp& op = tb.ops[i];
      Status s = Op(op, tb.with_counters);
      if (!s.ok()) {
        return s.WithContext(where_ + " op " + std::to_string(i + 1) + " (" + DescribeTableOp(op) + ")")
            .WithLocation(std::string(FamilyName(tb.family)), tb.table, op.chain);
      }
    }
    return Status::Ok();
  }

  const std::vector<SentOp>& sent() const { return sent_; }
  const std::vector<PendingRule>& pending_rules() const { return pending_rules_; }
  const std::vector<PendingChain>& pending_chains() const { return pending_chains_; }

 private:
  void Sent(uint32_t seq, std::string what) { sent_.push_back({seq, where_ + ": " + std::move(what)}); }
  // NLM_F_ECHO for the batch's first message (only BATCH_BEGIN so far): the kernel then sends the commit's generation
  // id with the answer (BatchReply::generation), which a batch starting with a delete did not get. Adds echo
  // themselves.
  uint16_t FirstEcho() const { return batch_.messages() == 1 ? NLM_F_ECHO : 0; }

  void EnsureTable() {
    if (kt_->exists) return;
    TablePtr t(nftnl_table_alloc());
    nftnl_table_set_u32(t.get(), NFTNL_TABLE_FAMILY, proto_);
    nftnl_table_set_str(t.get(), NFTNL_TABLE_NAME, table_name_.c_str());
    Sent(batch_.AddTable(NFT_MSG_NEWTABLE, proto_, NLM_F_CREATE, t.get()), "creating the table");
    kt_->exists = true;
  }

  ChainPtr BaseChain(const std::string& name, const Chain& model, bool with_counters, const Counters& counters) {
    std::optional<BaseSpec> spec = BuiltinSpec(table_name_, name);
    ChainPtr c(nftnl_chain_alloc());
    nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_FAMILY, proto_);
    nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TABLE, table_name_.c_str());
    nftnl_chain_set_str(c.get(), NFTNL_CHAIN_NAME, name.c_str());
    nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_HOOKNUM, spec->hook);
    nftnl_chain_set_s32(c.get(), NFTNL_CHAIN_PRIO, spec->prio);
    nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_POLICY, model.policy.value_or("ACCEPT") == "DROP" ? NF_DROP : NF_ACCEPT);
    nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TYPE, spec->type);
    if (with_counters) {
      nftnl_chain_set_u64(c.get(), NFTNL_CHAIN_PACKETS, counters.packets);
      nftnl_chain_set_u64(c.get(), NFTNL_CHAIN_BYTES, counters.bytes);
    }
    return c;
  }

  // The builtin chain `name` exists in the kernel after this (created with its current model policy).
  void EnsureBase(const std::string& name) {
    if (kt_->chains.count(name)) return;
    EnsureTable();
    const Chain* model = mt_->FindChain(name);
    ChainPtr c = BaseChain(name, *model, false, {});
    const uint32_t seq = batch_.AddChain(NFT_MSG_NEWCHAIN, proto_, NLM_F_CREATE | NLM_F_ECHO, c.get());
    Sent(seq, "creating builtin chain " + name);
    kt_->chains[name] = NativeBackend::KChain{0, seq, true, {}};
    pending_chains_.push_back({family_, table_name_, name, seq});
  }

  Result<NativeBackend::KChain*> KernelChain(const std::string& name, bool create_builtin) {
    if (IsBuiltinChain(table_name_, name) && create_builtin) EnsureBase(name);
    auto it = kt_->chains.find(name);
    if (it == kt_->chains.end()) {
      return Status::NotFound("chain '" + name + "' does not exist in the kernel's " + where_);
    }
    return &it->second;
  }

  RulePtr NewRule(const std::string& chain) {
    RulePtr r(nftnl_rule_alloc());
    nftnl_rule_set_u32(r.get(), NFTNL_RULE_FAMILY, proto_);
    nftnl_rule_set_str(r.get(), NFTNL_RULE_TABLE, table_name_.c_str());
    nftnl_rule_set_str(r.get(), NFTNL_RULE_CHAIN, chain.c_str());
    return r;
  }

  // The binary form of `rule` with the counters it is to be created with.
  Result<std::shared_ptr<const XtRule>> Binary(const Rule& rule) {
    std::shared_ptr<const XtRule> xt = xt_of_(family_, rule);
    if (!xt) return Status::Internal("no binary form for rule '" + FormatRuleSpec(rule) + "'");
    return xt;
  }

  // Sends NEWRULE for `xt` at 0-based position `pos` of `slots` (before its insertion), or as a replacement of the
  // rule with `replace_handle`.
  // For an anchored insert at 0-based `pos` of `chain` (applied to the model already): whether it is placed before
  // the rule after it rather than after the rule before it. An owned rule (iptkit owner tag) changes only through
  // its owner's plans, a rule without the tag may be another writer's, which it deletes whenever it likes (an
  // unowned add that iptkitd puts above the owned `last` hooks followed a foreign `-A` rule there, and the batch
  // failed with ENOENT once that rule was gone): so an insert between a rule without the tag and a tagged one names
  // the tagged one. Both places are the same in the snapshot.
  bool AnchorOnNext(const std::string& chain, size_t pos) const {
    const Chain* c = mt_->FindChain(chain);
    if (c == nullptr || pos == 0 || pos + 1 >= c->rules.size()) return false;
    return !c->rules[pos - 1].OwnerTag() && c->rules[pos + 1].OwnerTag();
  }

  Status SendRule(const std::string& chain, std::vector<NativeBackend::Slot>& slots, size_t pos,
                  std::shared_ptr<const XtRule> xt, const Counters& counters, bool append, uint64_t replace_handle,
                  const std::string& what, bool before_next = false) {
    XtRule with = *xt;
    with.counters = counters;
    RulePtr r = NewRule(chain);
    IPTKIT_RETURN_IF_ERROR(EncodeRule(with, r.get()));
    const uint32_t id = ++rule_id_;
    nftnl_rule_set_u32(r.get(), NFTNL_RULE_ID, id);
    uint16_t flags = NLM_F_CREATE | (echo_rules_ ? NLM_F_ECHO : 0);
    using Place = NativeBackend::OwnPlacement::Kind;
    NativeBackend::OwnPlacement placement;
    uint32_t anchor_id = 0;
    if (replace_handle != 0) {
      nftnl_rule_set_u64(r.get(), NFTNL_RULE_HANDLE, replace_handle);
      flags |= NLM_F_REPLACE;
    } else if (append) {
      flags |= NLM_F_APPEND;
      placement.kind = Place::kEnd;
    } else if (before_next && pos < slots.size()) {
      // Before the rule after it (nf_tables: a position without NLM_F_APPEND inserts before that rule).
      const NativeBackend::Slot& next = slots[pos];
      if (next.handle != 0) {
        nftnl_rule_set_u64(r.get(), NFTNL_RULE_POSITION, next.handle);
      } else {
        nftnl_rule_set_u32(r.get(), NFTNL_RULE_POSITION_ID, next.id);
      }
      placement = {Place::kBefore, next.handle};
      anchor_id = next.handle != 0 ? 0 : next.id;
    } else if (pos > 0) {
      // After the rule before it (nf_tables: NLM_F_APPEND with a position inserts after that rule).
      const NativeBackend::Slot& prev = slots[pos - 1];
      if (prev.handle != 0) {
        nftnl_rule_set_u64(r.get(), NFTNL_RULE_POSITION, prev.handle);
      } else {
        nftnl_rule_set_u32(r.get(), NFTNL_RULE_POSITION_ID, prev.id);
      }
      flags |= NLM_F_APPEND;
      placement = {Place::kAfter, prev.handle};
      anchor_id = prev.handle != 0 ? 0 : prev.id;
    } else {
      placement.kind = Place::kHead;
    }
    const uint32_t seq = batch_.AddRule(NFT_MSG_NEWRULE, proto_, flags, r.get());
    Sent(seq, what);
    pending_rules_.push_back({family_, table_name_, chain, id, seq, placement, anchor_id});
    NativeBackend::Slot slot{0, id, std::move(xt)};
    if (replace_handle != 0) {
      slots[pos] = std::move(slot);
    } else {
      slots.insert(slots.begin() + static_cast<std::ptrdiff_t>(pos), std::move(slot));
    }
    return Status::Ok();
  }

  void DeleteRule(const std::string& chain, const NativeBackend::Slot& slot, const std::string& what) {
    RulePtr r = NewRule(chain);
    if (slot.handle != 0) {
      nftnl_rule_set_u64(r.get(), NFTNL_RULE_HANDLE, slot.handle);
    } else {
      nftnl_rule_set_u32(r.get(), NFTNL_RULE_ID, slot.id);
    }
    Sent(batch_.AddRule(NFT_MSG_DELRULE, proto_, FirstEcho(), r.get()), what);
  }

  Status Op(const TableOp& op, bool with_counters) {
    const std::string what = DescribeTableOp(op);
    // `-c PKTS BYTES` typed on an append, insert or replace sets the new rule's counters, as iptables does.
    // (The planner keeps rule counters only for batches sent with counters; the typed tokens still say them.)
    Counters counters = with_counters ? op.rule.counters : Counters{};
    // ip6tables-nft 1.8.9 drops them (its -c is parsed after the IPv6 rule is built); the kernel is to hold what
    // iptables installs, so IPv6 does the same.
    if (family_ == Family::kIPv4 && HasTypedForm(op.rule) && op.rule.typed.size() >= 3 && op.rule.typed[0] == "-c") {
      counters = {std::strtoull(op.rule.typed[1].c_str(), nullptr, 10),
                  std::strtoull(op.rule.typed[2].c_str(), nullptr, 10)};
    }
    switch (op.kind) {
      case TKind::kAppend:
      case TKind::kInsert: {
        IPTKIT_RETURN_IF_ERROR(CheckDirection(op.chain, op.rule));
        IPTKIT_ASSIGN_OR_RETURN(std::shared_ptr<const XtRule> xt, Binary(op.rule));
        const Chain* before = mt_->FindChain(op.chain);
        if (before == nullptr) return Status::NotFound("chain '" + op.chain + "' does not exist");
        const size_t size = before->rules.size();
        IPTKIT_RETURN_IF_ERROR(ApplyTableOp(family_, *mt_, op, with_counters));
        IPTKIT_ASSIGN_OR_RETURN(NativeBackend::KChain * kc, KernelChain(op.chain, true));
        if (kc->rules.size() != size) return Status::Internal("snapshot of chain " + op.chain + " out of step");
        // Insert at 1 is always at the head: a snapshot read for it (SnapshotDetail::kChains) holds no rules.
        const bool append = op.kind == TKind::kAppend || (op.index > 1 && static_cast<size_t>(op.index) == size + 1);
        const size_t pos = append ? size : static_cast<size_t>(op.index - 1);
        return SendRule(op.chain, kc->rules, pos, std::move(xt), counters, append, 0, what,
                        !append && op.anchored && AnchorOnNext(op.chain, pos));
      }
      case TKind::kReplace: {
        IPTKIT_RETURN_IF_ERROR(CheckDirection(op.chain, op.rule));
        IPTKIT_ASSIGN_OR_RETURN(std::shared_ptr<const XtRule> xt, Binary(op.rule));
        IPTKIT_RETURN_IF_ERROR(ApplyTableOp(family_, *mt_, op, with_counters));
        IPTKIT_ASSIGN_OR_RETURN(NativeBackend::KChain * kc, KernelChain(op.chain, false));
        const size_t pos = static_cast<size_t>(op.index - 1);
        if (pos >= kc->rules.size()) return Status::Internal("snapshot of chain " + op.chain + " out of step");
        if (kc->rules[pos].handle != 0) {
          return SendRule(op.chain, kc->rules, pos, std::move(xt), counters, false, kc->rules[pos].handle, what);
        }
        DeleteRule(op.chain, kc->rules[pos], what);
        kc->rules.erase(kc->rules.begin() + static_cast<std::ptrdiff_t>(pos));
        return SendRule(op.chain, kc->rules, pos, std::move(xt), counters, false, 0, what);
      }
      case TKind::kDelete:
      case TKind::kDeleteAt: {
        const Chain* before = mt_->FindChain(op.chain);
        if (before == nullptr) return Status::NotFound("chain '" + op.chain + "' does not exist");
        const int at = op.kind == TKind::kDelete ? FindRule(*before, op.rule) : op.index - 1;
        IPTKIT_RETURN_IF_ERROR(ApplyTableOp(family_, *mt_, op, with_counters));
        IPTKIT_ASSIGN_OR_RETURN(NativeBackend::KChain * kc, KernelChain(op.chain, false));
        if (at < 0 || static_cast<size_t>(at) >= kc->rules.size()) {
          return Status::Internal("snapshot of chain " + op.chain + " out of step");
        }
        DeleteRule(op.chain, kc->rules[at], what);
        kc->rules.erase(kc->rules.begin() + at);
        return Status::Ok();
      }
      case TKind::kCheck:
        // A precondition on the snapshot the batch was planned on; the generation id keeps it true until commit.
        return ApplyTableOp(family_, *mt_, op, with_counters);
      case TKind::kNewChain: {
        IPTKIT_RETURN_IF_ERROR(ApplyTableOp(family_, *mt_, op, with_counters));
        EnsureTable();
        ChainPtr c(nftnl_chain_alloc());
        nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_FAMILY, proto_);
        nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TABLE, table_name_.c_str());
        nftnl_chain_set_str(c.get(), NFTNL_CHAIN_NAME, op.chain.c_str());
        const uint32_t seq = batch_.AddChain(NFT_MSG_NEWCHAIN, proto_, NLM_F_CREATE | NLM_F_EXCL | NLM_F_ECHO, c.get());
        Sent(seq, what);
        kt_->chains[op.chain] = NativeBackend::KChain{0, seq, false, {}};
        pending_chains_.push_back({family_, table_name_, op.chain, seq});
        return Status::Ok();
      }
      case TKind::kDeleteChain: {
        std::vector<std::string> names;
        for (const Chain& c : mt_->chains) {
          if (op.chain.empty() ? !c.builtin() : c.name == op.chain) names.push_back(c.name);
        }
        IPTKIT_RETURN_IF_ERROR(ApplyTableOp(family_, *mt_, op, with_counters));
        for (const std::string& name : names) {
          if (!kt_->chains.count(name)) continue;
          ChainPtr c(nftnl_chain_alloc());
          nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_FAMILY, proto_);
          nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TABLE, table_name_.c_str());
          nftnl_chain_set_str(c.get(), NFTNL_CHAIN_NAME, name.c_str());
          Sent(batch_.AddChain(NFT_MSG_DELCHAIN, proto_, NLM_F_NONREC, c.get()), what);
          kt_->chains.erase(name);
        }
        return Status::Ok();
      }
      case TKind::kRenameChain: {
        IPTKIT_RETURN_IF_ERROR(ApplyTableOp(family_, *mt_, op, with_counters));
        auto it = kt_->chains.find(op.chain);
        if (it == kt_->chains.end() || it->second.handle == 0) {
          return Status::Internal("chain " + op.chain + " has no kernel handle to rename it by");
        }
        ChainPtr c(nftnl_chain_alloc());
        nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_FAMILY, proto_);
        nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TABLE, table_name_.c_str());
        nftnl_chain_set_str(c.get(), NFTNL_CHAIN_NAME, op.arg.c_str());
        nftnl_chain_set_u64(c.get(), NFTNL_CHAIN_HANDLE, it->second.handle);
        Sent(batch_.AddChain(NFT_MSG_NEWCHAIN, proto_, 0, c.get()), what);
        NativeBackend::KChain moved = std::move(it->second);
        kt_->chains.erase(it);
        kt_->chains[op.arg] = std::move(moved);
        return Status::Ok();
      }
      case TKind::kFlush: {
        IPTKIT_RETURN_IF_ERROR(ApplyTableOp(family_, *mt_, op, with_counters));
        if (!kt_->exists) return Status::Ok();
        if (!op.chain.empty() && !kt_->chains.count(op.chain)) return Status::Ok();
        RulePtr r(nftnl_rule_alloc());
        nftnl_rule_set_u32(r.get(), NFTNL_RULE_FAMILY, proto_);
        nftnl_rule_set_str(r.get(), NFTNL_RULE_TABLE, table_name_.c_str());
        if (!op.chain.empty()) nftnl_rule_set_str(r.get(), NFTNL_RULE_CHAIN, op.chain.c_str());
        Sent(batch_.AddRule(NFT_MSG_DELRULE, proto_, FirstEcho(), r.get()), what);
        for (auto& [name, kc] : kt_->chains) {
          if (op.chain.empty() || name == op.chain) kc.rules.clear();
        }
        return Status::Ok();
      }
      case TKind::kZero: {
        IPTKIT_RETURN_IF_ERROR(ApplyTableOp(family_, *mt_, op, with_counters));
        // iptables-nft -Z: base chain counters by a chain update, rule counters by replacing each rule with its
        // counter zeroed (nft.c __nft_chain_zero_counters).
        for (auto& [name, kc] : kt_->chains) {
          if (!op.chain.empty() && name != op.chain) continue;
          if (kc.base && kc.handle != 0) {
            const Chain* model = mt_->FindChain(name);
            ChainPtr c = BaseChain(name, *model, true, {});
            Sent(batch_.AddChain(NFT_MSG_NEWCHAIN, proto_, NLM_F_CREATE, c.get()), what);
          }
          const Chain* model = mt_->FindChain(name);
          if (model == nullptr || model->rules.size() != kc.rules.size()) {
            return Status::Internal("snapshot of chain " + name + " out of step");
          }
          for (size_t i = 0; i < kc.rules.size(); ++i) {
            NativeBackend::Slot& slot = kc.rules[i];
            if (slot.handle == 0) continue;  // added by this batch: its counters start at zero anyway
            std::shared_ptr<const XtRule> xt = slot.xt ? slot.xt : xt_of_(family_, model->rules[i]);
            if (!xt) return Status::Internal("no binary form for rule " + std::to_string(i + 1) + " of " + name);
            IPTKIT_RETURN_IF_ERROR(SendRule(name, kc.rules, i, std::move(xt), {}, false, slot.handle, what));
          }
        }
        return Status::Ok();
      }
      case TKind::kPolicy: {
        IPTKIT_RETURN_IF_ERROR(ApplyTableOp(family_, *mt_, op, with_counters));
        EnsureTable();
        const Chain* model = mt_->FindChain(op.chain);
        ChainPtr c = BaseChain(op.chain, *model, with_counters, op.rule.counters);
        const bool exists = kt_->chains.count(op.chain) != 0;
        const uint32_t seq =
            batch_.AddChain(NFT_MSG_NEWCHAIN, proto_, exists ? 0 : (NLM_F_CREATE | NLM_F_ECHO), c.get());
        Sent(seq, what);
        if (!exists) {
          kt_->chains[op.chain] = NativeBackend::KChain{0, seq, true, {}};
          pending_chains_.push_back({family_, table_name_, op.chain, seq});
        }
        return Status::Ok();
      }
    }
    return Status::Internal("unknown op");
  }

  NftBatch& batch_;
  std::map<Family, NativeBackend::FamilyState>& cache_;
  std::function<std::shared_ptr<const XtRule>(Family, const Rule&)> xt_of_;
  bool echo_rules_;
  Family family_ = Family::kIPv4;
  std::string table_name_;
  uint16_t proto_ = NFPROTO_IPV4;
  std::string where_;
  NativeBackend::KTable* kt_ = nullptr;
  Table* mt_ = nullptr;
  uint32_t rule_id_ = 0;
  std::vector<SentOp> sent_;
  std::vector<PendingRule> pending_rules_;
  std::vector<PendingChain> pending_chains_;
};

// Whether the meaning of `op` depends on the snapshot it was planned on in a way the kernel does not check at
// commit (docs/architecture.md "Generation checks"). Ops that name what they touch by kernel handle stay right
// when another writer committed in between, or the kernel refuses them (ENOENT when the rule, the chain or the
// anchor is gone; EEXIST, EBUSY): an append, an insert at the head or after an anchor (TableOp::anchored), a delete
// by spec (the first equal rule's handle: a rule of that content goes), a new chain (NLM_F_EXCL), a deleted chain
// (the kernel refuses one that is not empty or still referenced), a rename and a policy. Snapshot-bound: a `-C`
// precondition, an insert at an absolute position, a delete or replace by position, a flush, -Z (it re-sends
// the rules the snapshot has) and a whole-table restore. A batch with any of them carries the generation id.
bool NeedsSnapshot(const TableOp& op) {
  switch (op.kind) {
    case TKind::kAppend:
    case TKind::kDelete:
    case TKind::kNewChain:
    case TKind::kRenameChain:
    case TKind::kPolicy:
      return false;
    case TKind::kDeleteChain:
      return op.chain.empty();  // -X of every user chain: those of the snapshot
    case TKind::kInsert:
      return op.index > 1 && !op.anchored;
    case TKind::kCheck:
      return !op.anchored;
    case TKind::kDeleteAt:
    case TKind::kReplace:
    case TKind::kFlush:
    case TKind::kZero:
      return true;
  }
  return true;
}

}  // namespace

namespace {

// Whether a batch with counters re-adds a rule it deletes (a moved rule: FreshenMovedCounters). Asked before the
// batch is copied for that, so that a batch of plain appends (a group commit of 64 adds) is not copied per commit.
bool MovesRules(const std::vector<CommitTable>& tables) {
  for (const CommitTable& t : tables) {
    if (!t.batch.with_counters || t.batch.flush_table) continue;
    const bool deletes = std::any_of(t.batch.ops.begin(), t.batch.ops.end(),
                                     [](const TableOp& op) { return op.kind == TKind::kDelete; });
    const bool adds = std::any_of(t.batch.ops.begin(), t.batch.ops.end(), [](const TableOp& op) {
      return op.kind == TKind::kAppend || op.kind == TKind::kInsert;
    });
    if (deletes && adds) return true;
  }
  return false;
}

}  // namespace

bool NativeBackend::FreshenMovedCounters(std::vector<CommitTable>& tables) {
  // (family, table, chain) → the ops re-adding a rule the same batch deletes: by the rule's handle in the snapshot
  // (the first rule equal to it, the one the delete by spec removes there), else with the rule's binary form, to
  // be found in a dump of the chain.
  struct Chained {
    std::map<uint64_t, std::vector<TableOp*>> by_handle;
    std::vector<std::pair<TableOp*, XtRule>> by_form;
  };
  std::map<std::tuple<Family, std::string, std::string>, Chained> wanted;
  bool any = false;
  for (CommitTable& t : tables) {
    if (!t.batch.with_counters || t.batch.flush_table) continue;
    for (TableOp& op : t.batch.ops) {
      if (op.kind != TKind::kAppend && op.kind != TKind::kInsert) continue;
      const bool moved = std::any_of(t.batch.ops.begin(), t.batch.ops.end(), [&](const TableOp& d) {
        return d.kind == TKind::kDelete && d.chain == op.chain && d.rule == op.rule;
      });
      if (!moved) continue;
      any = true;
      Chained& c = wanted[{t.batch.family, t.batch.table, op.chain}];
      std::optional<uint64_t> handle;
      if (auto st = cache_.find(t.batch.family); st != cache_.end() && st->second.detail == SnapshotDetail::kRules) {
        const Table* table = st->second.ruleset.FindTable(t.batch.table);
        auto kt = st->second.kernel.find(t.batch.table);
        const Chain* chain = table != nullptr ? table->FindChain(op.chain) : nullptr;
        if (chain != nullptr && kt != st->second.kernel.end()) {
          auto kc = kt->second.chains.find(op.chain);
          for (size_t i = 0; kc != kt->second.chains.end() && kc->second.rules.size() == chain->rules.size() &&
                             i < chain->rules.size();
               ++i) {
            if (chain->rules[i] == op.rule && kc->second.rules[i].handle != 0) {
              handle = kc->second.rules[i].handle;
              break;
            }
          }
        }
      }
      if (handle) {
        c.by_handle[*handle].push_back(&op);
        continue;
      }
      if (!EnsureXt(t.batch.family, {&op.rule}).ok()) continue;
      std::shared_ptr<const XtRule> xt = XtOf(t.batch.family, op.rule);
      if (!xt) continue;
      Result<XtRule> back = RoundTrip(*xt);  // as the kernel gives it back
      if (back.ok()) c.by_form.emplace_back(&op, *std::move(back));
    }
  }
  for (auto& [where, c] : wanted) {
    const auto& [family, table, chain] = where;
    // A rule gone meanwhile keeps the snapshot's counters (its delete then fails the batch anyway).
    for (const auto& [handle, ops] : c.by_handle) {
      (void)netlink_->GetMessage(
          NFT_MSG_GETRULE, NfProto(family),
          [&](nlmsghdr* nlh) {
            mnl_attr_put_strz(nlh, NFTA_RULE_TABLE, table.c_str());
            mnl_attr_put_strz(nlh, NFTA_RULE_CHAIN, chain.c_str());
            mnl_attr_put_u64(nlh, NFTA_RULE_HANDLE, htobe64(handle));
          },
          [&](const nlmsghdr* m) {
            if (Result<XtRule> got = DecodeRuleMessage(family, m); got.ok()) {
              for (TableOp* op : ops) op->rule.counters = got->counters;
            }
            return Status::Ok();
          });
    }
    if (c.by_form.empty()) continue;
    // Not in the snapshot: the first rule of the chain equal to it.
    std::vector<bool> done(c.by_form.size(), false);
    (void)DumpChainRules(*netlink_, family, table, chain, [&](const nlmsghdr* m, const RuleLocation&) {
      Result<XtRule> got = DecodeRuleMessage(family, m);
      if (!got.ok()) return Status::Ok();
      const Counters counters = got->counters;
      for (size_t k = 0; k < c.by_form.size(); ++k) {
        if (done[k]) continue;
        got->counters = c.by_form[k].second.counters;
        if (*got == c.by_form[k].second) {
          c.by_form[k].first->rule.counters = counters;
          done[k] = true;
        }
      }
      return Status::Ok();
    });
  }
  return any;
}

Result<CommitReport> NativeBackend::Commit(const std::vector<CommitTable>& tables) {
  CommitReport report;
  report.backend = traits_.name;
  report.atomic_across_tables = true;
  std::vector<const CommitTable*> work;
  for (const CommitTable& t : tables) {
    if (!t.batch.ops.empty() || t.batch.flush_table) work.push_back(&t);
  }
  if (work.empty()) return report;
  if (std::optional<std::string> why = NotExpressible(tables)) return CommitThroughRestore(tables, *why);
  if (events_ && !freshening_counters_ && MovesRules(tables)) {
    // The event-fed snapshot's counters are those of its last read: a moved rule goes back with the kernel's.
    std::vector<CommitTable> fresh = tables;
    if (FreshenMovedCounters(fresh)) {
      freshening_counters_ = true;
      Result<CommitReport> done = Commit(fresh);
      freshening_counters_ = false;
      return done;
    }
  }
  bool renames = false;
  for (const CommitTable* t : work) {
    for (const TableOp& op : t->batch.ops) renames |= op.kind == TKind::kRenameChain;
  }
  if (renames) {
    std::vector<CommitTable> folded = FoldRenamesOfNewChains(tables);
    bool changed = false;
    for (size_t i = 0; i < folded.size(); ++i) changed |= folded[i].batch.ops.size() != tables[i].batch.ops.size();
    if (changed) return Commit(folded);
  }

  // The snapshots the ops refer to: those the caller planned on (cached by its Read), else the kernel's now.
  std::set<Family> families;
  for (const CommitTable* t : work) families.insert(t->batch.family);
  for (Family f : families) {
    if (!cache_.count(f)) IPTKIT_RETURN_IF_ERROR(Read(f, std::nullopt, false).status());
  }
  const uint32_t generation = cache_.at(*families.begin()).generation;
  // Zeroing replaces every rule from its binary form, which only a snapshot with those rules has.
  for (const CommitTable* t : work) {
    for (const TableOp& op : t->batch.ops) {
      if (op.kind != TKind::kZero) continue;
      const FamilyState& st = cache_.at(t->batch.family);
      const bool has_rules = st.detail == SnapshotDetail::kRules &&
                             (op.chain.empty() ? st.scope.every_chain : st.scope.Has(t->batch.table, op.chain));
      if (!has_rules) {
        IPTKIT_RETURN_IF_ERROR(Read(t->batch.family, std::nullopt, false).status());
        if (cache_.at(t->batch.family).generation != generation) {
          cache_.clear();
          return Status::Aborted("the nf_tables ruleset changed while reading it for -Z; re-read and retry");
        }
      }
    }
  }
  for (Family f : families) {
    if (cache_.at(f).generation != generation) {
      cache_.clear();
      ++stats_.stale_generation;
      return Status::Aborted("the IPv4 and IPv6 snapshots are of different nf_tables generations; re-read and retry");
    }
  }

  // Binary forms of every rule the batch adds (canonical rules are normally known from Canonicalize).
  for (Family f : families) {
    std::vector<const Rule*> rules;
    for (const CommitTable* t : work) {
      if (t->batch.family != f) continue;
      for (const TableOp& op : t->batch.ops) {
        if (op.kind == TKind::kAppend || op.kind == TKind::kInsert || op.kind == TKind::kReplace) {
          rules.push_back(&op.rule);
        }
        if (op.kind == TKind::kZero) {
          // -Z re-sends the rules of the chains it zeroes.
          if (const Table* table = cache_.at(f).ruleset.FindTable(t->batch.table)) {
            for (const Chain& c : table->chains) {
              if (!op.chain.empty() && c.name != op.chain) continue;
              for (const Rule& r : c.rules) rules.push_back(&r);
            }
          }
        }
      }
    }
    IPTKIT_RETURN_IF_ERROR(EnsureXt(f, rules));
  }

  size_t ops = 0;
  for (const CommitTable* t : work) ops += t->batch.ops.size();
  // The generation id goes with the batch only when some op's meaning depends on the snapshot (NeedsSnapshot):
  // a batch of handle-anchored ops stays right when another writer committed since the read, so a foreign writer
  // that commits every few milliseconds does not make it stale. Such a batch that meets a change it cannot take
  // fails in the kernel (ENOENT, EEXIST, EBUSY: NotFound, AlreadyExists, FailedPrecondition below) and nothing
  // of it is committed.
  bool snapshot_bound = false;
  for (const CommitTable* t : work) {
    snapshot_bound =
        snapshot_bound || t->batch.flush_table || std::any_of(t->batch.ops.begin(), t->batch.ops.end(), NeedsSnapshot);
  }
  const bool checked = native_.check_generation && snapshot_bound;
  if (checked) {
    ++stats_.checked_batches;
  } else {
    ++stats_.anchored_batches;
  }
  NftBatch batch(netlink_->ReserveSeqs(static_cast<uint32_t>(4 * ops + 64)), batch_storage_);
  batch.Begin(checked ? std::optional<uint32_t>(generation) : std::nullopt);
  BatchBuilder builder(
      batch, cache_, [this](Family f, const Rule& r) { return XtOf(f, r); }, native_.echo_rules);
  for (const CommitTable* t : work) {
    Status s = builder.AddTable(t->batch);
    if (!s.ok()) {
      cache_.clear();  // simulated in place
      return s;
    }
  }
  batch.End();
  if (batch.payload_messages() == 0) return report;  // only preconditions: nothing for the kernel to do

  ++stats_.batches;
  Result<nft::NetlinkClient::BatchReply> reply = netlink_->SendBatch(batch.data(), batch.messages());
  if (!reply.ok()) {
    cache_.clear();
    return reply.status();
  }
  if (!reply->errors.empty()) {
    cache_.clear();
    const auto [seq, err] = reply->errors.front();
    if (seq == batch.begin_seq() && err == ERESTART) {
      ++stats_.stale_generation;
      return Status::Aborted("the nf_tables ruleset changed since generation " + std::to_string(generation) +
                             " was read; nothing was committed (re-read and retry)");
    }
    std::string what = "the batch";
    for (const auto& sent : builder.sent()) {
      if (sent.seq == seq) what = sent.what;
    }
    const std::string message = "kernel rejected " + what + ": " + DescribeErrno(err) + "; nothing was committed";
    if (err == EPERM || err == EACCES) return Status::PermissionDenied(message);
    if (err == ENOMEM || err == ENOBUFS) return Status::Unavailable(message);
    // What another writer's commit since the read can cause (a rule, chain or anchor gone; a chain there already,
    // or no longer empty): told apart from a rejection of the batch itself by the caller's fresh read.
    if (err == ENOENT) return Status::NotFound(message + " (changed since the read?)");
    if (err == EEXIST) return Status::AlreadyExists(message + " (changed since the read?)");
    if (err == EBUSY || err == ENOTEMPTY) return Status::FailedPrecondition(message + " (changed since the read?)");
    return Status::InvalidArgument(message);
  }
  uint32_t next = generation + 1;
  if (next == 0) next = 1;
  if (reply->overrun) {
    cache_.clear();
    Result<uint32_t> after = netlink_->GenerationId();
    if (after.ok() && *after == generation) {
      return Status::Unavailable(
          "the kernel's answer to the batch was lost (receive queue overflow); it did not "
          "commit");
    }
    return report;
  }
  // Handles of what the batch created, from the kernel's echoes.
  bool complete = true;
  for (const auto& p : builder.pending_rules()) {
    auto echo = reply->echoes.find(p.seq);
    uint64_t handle = echo == reply->echoes.end() ? 0 : EchoHandle(echo->second, NFTA_RULE_HANDLE);
    auto& kc = cache_.at(p.family).kernel[p.table].chains[p.chain];
    for (Slot& slot : kc.rules) {
      if (slot.handle == 0 && slot.id == p.id) {
        slot.handle = handle;
        slot.id = 0;
      }
    }
    if (handle == 0) complete = false;
  }
  for (const auto& p : builder.pending_chains()) {
    auto echo = reply->echoes.find(p.seq);
    uint64_t handle = echo == reply->echoes.end() ? 0 : EchoHandle(echo->second, NFTA_CHAIN_HANDLE);
    auto& kt = cache_.at(p.family).kernel[p.table];
    if (auto it = kt.chains.find(p.chain); it != kt.chains.end() && it->second.id == p.seq) {
      it->second.handle = handle;
      it->second.id = 0;
    }
    if (handle == 0) complete = false;
  }
  // Ours, and only ours, when the id moved by exactly one: every commit moves it by one, so nobody else committed
  // between the snapshot and now (with or without the id in the batch), and the snapshot updated in place is the
  // kernel's. The commit's id comes with the batch's answer when the batch's first message asked for an echo (an
  // add: no round trip). Otherwise the event feed, which trusts a snapshot's id without asking the kernel, has it
  // asked for; without the feed the snapshot is kept as of `next` unasked, because every later use of the cache
  // compares that id with the kernel's first (Read, ReadChainsForPlan, Unchanged: a foreign commit before ours left
  // the kernel beyond `next`, so the snapshot is read again), and a batch carrying it is refused as stale.
  std::optional<uint32_t> after = reply->generation;
  if (!after && events_) {
    Result<uint32_t> asked = netlink_->GenerationId();
    if (!asked.ok()) {
      cache_.clear();
      return report;
    }
    after = *asked;
  }
  if (complete && events_ && after && *after != next) {
    // Another writer committed between the snapshot and this commit (the batch is anchored by handles): the
    // snapshot, updated in place, is kept, and the other writer's changes are applied to it from their
    // notifications (FreshFromEvents; the feed knows this commit's by the socket's port id) instead of reading
    // the family again. `after` is this commit's generation, or a later one when the kernel was asked for it.
    ++stats_.event_kept_commits;
    OwnCommit own{*after, reply->generation.has_value(), {}, {}};
    std::map<uint32_t, uint64_t> by_id;  // NFTA_RULE_ID → handle of the rules the batch added
    for (const auto& p : builder.pending_rules()) {
      if (auto echo = reply->echoes.find(p.seq); echo != reply->echoes.end()) {
        const uint64_t handle = EchoHandle(echo->second, NFTA_RULE_HANDLE);
        own.added.insert(handle);
        by_id[p.id] = handle;
      }
    }
    for (const auto& p : builder.pending_rules()) {
      auto handle = by_id.find(p.id);
      if (!own.exact || handle == by_id.end()) continue;
      OwnPlacement placement = p.placement;
      if (p.anchor_id != 0) {
        auto anchor = by_id.find(p.anchor_id);
        placement.anchor = anchor == by_id.end() ? 0 : anchor->second;
      }
      if ((placement.kind == OwnPlacement::Kind::kAfter || placement.kind == OwnPlacement::Kind::kBefore) &&
          placement.anchor == 0) {
        placement.kind = OwnPlacement::Kind::kOther;
      }
      own.placed[handle->second] = placement;
    }
    for (const auto& [f, st] : cache_) own_commits_[f].push_back(own);
    return report;
  }
  if (!complete || (after && *after != next)) {
    cache_.clear();
    return report;
  }
  for (auto it = cache_.begin(); it != cache_.end();) {
    if (it->second.generation == generation) {
      it->second.generation = next;
      ++it;
    } else {
      it = cache_.erase(it);
    }
  }
  return report;
}

// ---- Info ----

Result<FirewallInfo> NativeBackend::Info() {
  FirewallInfo info;
  info.backend = traits_.name;
  info.backend_reason = native_.reason_at_info ? native_.reason_at_info() : native_.reason;
  info.netns = options_.netns;
  VariantTables nft_tables;
  nft_tables.variant = "nft";
  nft_tables.version = std::string("iptables v") + IPTKIT_IPTABLES_VERSION + " (nf_tables)";
  for (Family family : {Family::kIPv4, Family::kIPv6}) {
    Result<Ruleset> rs = Read(family, std::nullopt, false);
    if (!rs.ok()) {
      info.warnings.push_back("nft " + std::string(FamilyName(family)) + ": " + rs.status().message());
      continue;
    }
    for (const Table& t : rs->tables) {
      VariantTables::TableRules tr;
      tr.family = family;
      tr.table = t.name;
      for (const Chain& c : t.chains) tr.rules += c.rules.size();
      tr.representable = t.unrepresentable_reason.empty();
      if (!tr.representable) {
        info.warnings.push_back(std::string(FamilyName(family)) + " " + t.name +
                                " is unrepresentable: " + t.unrepresentable_reason);
      }
      nft_tables.tables.push_back(tr);
    }
  }
  info.variants.push_back(std::move(nft_tables));

  VariantTables legacy_tables;
  legacy_tables.variant = "legacy";
  legacy_tables.version = std::string("iptables v") + IPTKIT_IPTABLES_VERSION + " (legacy)";
  size_t legacy_rules = 0;
  Result<std::unique_ptr<legacy::XtablesProbe>> probe = legacy::XtablesProbe::Open(netns_.get());
  for (Family family : {Family::kIPv4, Family::kIPv6}) {
    if (!probe.ok()) {
      info.warnings.push_back("legacy: " + probe.status().message());
      break;
    }
    Result<legacy::Fingerprint> fp = (*probe)->Read(family);
    if (!fp.ok()) {
      info.warnings.push_back("legacy " + std::string(FamilyName(family)) + ": " + fp.status().message());
      continue;
    }
    for (const legacy::TableFingerprint& t : *fp) {
      legacy_tables.tables.push_back({family, t.name, t.rules, true});
      legacy_rules += t.rules;
    }
  }
  if (legacy_rules > 0) {
    info.warnings.push_back("iptables-legacy also holds " + std::to_string(legacy_rules) +
                            " rule(s); they judge packets too (an ACCEPT here does not override a DROP there)");
  }
  info.variants.push_back(std::move(legacy_tables));

  // Base chains of every nf_tables family that are not iptables-nft's builtin chains.
  Status chains = netlink_->DumpMessages(NFT_MSG_GETCHAIN, NFPROTO_UNSPEC, nullptr, [&](const nlmsghdr* m) -> Status {
    ChainPtr c(nftnl_chain_alloc());
    if (!c || nftnl_chain_nlmsg_parse(m, c.get()) < 0) return Status::Ok();
    if (!nftnl_chain_is_set(c.get(), NFTNL_CHAIN_HOOKNUM)) return Status::Ok();
    const uint32_t fam = nftnl_chain_get_u32(c.get(), NFTNL_CHAIN_FAMILY);
    std::string family = fam == NFPROTO_IPV4     ? "ip"
                         : fam == NFPROTO_IPV6   ? "ip6"
                         : fam == NFPROTO_INET   ? "inet"
                         : fam == NFPROTO_ARP    ? "arp"
                         : fam == NFPROTO_BRIDGE ? "bridge"
                         : fam == NFPROTO_NETDEV ? "netdev"
                                                 : std::to_string(fam);
    std::string table = Str(nftnl_chain_get_str(c.get(), NFTNL_CHAIN_TABLE));
    std::string name = Str(nftnl_chain_get_str(c.get(), NFTNL_CHAIN_NAME));
    if ((family == "ip" || family == "ip6") && BuiltinSpec(table, name)) return Status::Ok();
    info.foreign_nft.push_back(ForeignNftChain{family, table, name,
                                               nft::HookName(nftnl_chain_get_u32(c.get(), NFTNL_CHAIN_HOOKNUM)),
                                               nftnl_chain_get_s32(c.get(), NFTNL_CHAIN_PRIO)});
    return Status::Ok();
  });
  if (!chains.ok()) info.warnings.push_back("nft base chains: " + chains.message());
  if (!info.foreign_nft.empty()) {
    info.warnings.push_back(std::to_string(info.foreign_nft.size()) +
                            " nft base chain(s) of other tools also judge packets (see foreign_nft)");
  }
  return info;
}

}  // namespace iptkit::backend::native
