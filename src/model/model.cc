#include "iptkit/model.h"

#include <algorithm>

namespace iptkit {

std::string_view FamilyName(Family family) { return family == Family::kIPv4 ? "ipv4" : "ipv6"; }

Result<Family> ParseFamily(std::string_view name) {
  if (name == "ipv4" || name == "4" || name == "inet") return Family::kIPv4;
  if (name == "ipv6" || name == "6" || name == "inet6") return Family::kIPv6;
  return Status::InvalidArgument("unknown family '" + std::string(name) + "' (expected ipv4 or ipv6)");
}

namespace {

constexpr std::string_view kTagPrefix = "iptkit:";

// Splits "iptkit:<owner>:<id>"; nullopt when the comment is not an owner tag.
std::optional<Rule::Tag> ParseTagComment(std::string_view comment) {
  if (comment.substr(0, kTagPrefix.size()) != kTagPrefix) return std::nullopt;
  comment.remove_prefix(kTagPrefix.size());
  size_t colon = comment.find(':');
  if (colon == std::string_view::npos || colon == 0) return std::nullopt;
  return Rule::Tag{std::string(comment.substr(0, colon)), std::string(comment.substr(colon + 1))};
}

bool IsTagMatch(const Match& m) {
  return m.name == "comment" && m.options.size() == 1 && m.options[0].name == "comment" && !m.options[0].negated &&
         m.options[0].values.size() == 1 && ParseTagComment(m.options[0].values[0]).has_value();
}

}  // namespace

std::optional<Rule::Tag> Rule::OwnerTag() const {
  if (matches.empty() || !IsTagMatch(matches.back())) return std::nullopt;
  return ParseTagComment(matches.back().options[0].values[0]);
}

void Rule::SetOwnerTag(const Tag& tag) {
  ClearOwnerTag();
  lossy.clear();
  kernel_form.clear();
  matches.push_back(Match{"comment", {Option{"comment", false, {std::string(kTagPrefix) + tag.owner + ":" + tag.id}}}});
}

void Rule::ClearOwnerTag() {
  // `typed` never holds the tag and `typed_for` is the spec without it, so both stay valid.
  if (matches.empty() || !IsTagMatch(matches.back())) return;
  matches.pop_back();
  lossy.clear();
  kernel_form.clear();
}

const Chain* Table::FindChain(std::string_view name) const {
  auto it = std::find_if(chains.begin(), chains.end(), [&](const Chain& c) { return c.name == name; });
  return it == chains.end() ? nullptr : &*it;
}
Chain* Table::FindChain(std::string_view name) {
  return const_cast<Chain*>(static_cast<const Table*>(this)->FindChain(name));
}

const Table* Ruleset::FindTable(std::string_view name) const {
  auto it = std::find_if(tables.begin(), tables.end(), [&](const Table& t) { return t.name == name; });
  return it == tables.end() ? nullptr : &*it;
}
Table* Ruleset::FindTable(std::string_view name) {
  return const_cast<Table*>(static_cast<const Ruleset*>(this)->FindTable(name));
}

const std::vector<std::string>& KnownTables() {
  static const std::vector<std::string> kTables = {"raw", "mangle", "filter", "nat", "security"};
  return kTables;
}

const std::vector<std::string>& BuiltinChains(std::string_view table) {
  static const std::vector<std::string> kFilter = {"INPUT", "FORWARD", "OUTPUT"};
  static const std::vector<std::string> kNat = {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"};
  static const std::vector<std::string> kMangle = {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"};
  static const std::vector<std::string> kRaw = {"PREROUTING", "OUTPUT"};
  static const std::vector<std::string> kNone;
  if (table == "filter" || table == "security") return kFilter;
  if (table == "nat") return kNat;
  if (table == "mangle") return kMangle;
  if (table == "raw") return kRaw;
  return kNone;
}

bool IsBuiltinChain(std::string_view table, std::string_view chain) {
  const auto& chains = BuiltinChains(table);
  return std::find(chains.begin(), chains.end(), chain) != chains.end();
}

namespace {

// Target extensions iptables 1.8.9 can load (libxt_*/libipt_*/libip6t_* with upper-case names): iptables refuses
// chain names that xtables_find_target() resolves ("chain name may not clash with target name").
constexpr std::string_view kTargetExtensions[] = {
    "AUDIT",  "CHECKSUM",   "CLASSIFY", "CLUSTERIP", "CONNMARK", "CONNSECMARK", "CT",      "DNAT",
    "DNPT",   "DSCP",       "ECN",      "HL",        "HMARK",    "IDLETIMER",   "LED",     "LOG",
    "MARK",   "MASQUERADE", "NETMAP",   "NFLOG",     "NFQUEUE",  "NOTRACK",     "RATEEST", "REDIRECT",
    "REJECT", "SECMARK",    "SET",      "SNAT",      "SNPT",     "SYNPROXY",    "TCPMSS",  "TCPOPTSTRIP",
    "TEE",    "TOS",        "TPROXY",   "TRACE",     "TTL",      "ULOG",
};

}  // namespace

bool IsTargetExtension(std::string_view name) {
  return std::find(std::begin(kTargetExtensions), std::end(kTargetExtensions), name) != std::end(kTargetExtensions);
}

bool IsStandardVerdict(std::string_view name) {
  return name == "ACCEPT" || name == "DROP" || name == "RETURN" || name == "QUEUE";
}

}  // namespace iptkit
