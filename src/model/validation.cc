// Netfilter limits and target placement rules (model.h "Netfilter facts and validation").
//
// Placement facts come from the kernel's target registrations (`.table` / `.hooks` of struct xt_target in
// net/netfilter/xt_*.c, net/ipv{4,6}/netfilter/ip*t_*.c, and checks in their checkentry functions), and were
// confirmed on Linux 6.18 with iptables 1.8.9 (legacy and nft) by adding each target to every builtin chain of
// every table inside a scratch network namespace.

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <string>
#include <string_view>

#include "iptkit/model.h"

namespace iptkit {
namespace {

// XT_EXTENSION_MAXNAMELEN (29, with the NUL) bounds chain and target names.
constexpr size_t kMaxChainName = 28;
// XT_MAX_COMMENT_LEN (256, with the NUL); the kernel truncates longer comments silently (xt_comment.h).
constexpr size_t kMaxComment = 255;
// IPSET_MAXNAMELEN (32, with the NUL).
constexpr size_t kMaxSetName = 31;
// IFNAMSIZ (16, with the NUL).
constexpr size_t kMaxInterface = 15;

std::string Quoted(std::string_view s) { return "'" + std::string(s) + "'"; }

// Names the first byte iptables-restore cannot carry ('\n', '\r', NUL), or "" when there is none.
std::string_view ForbiddenByte(std::string_view value) {
  for (char c : value) {
    if (c == '\n') return "a newline";
    if (c == '\r') return "a carriage return";
    if (c == '\0') return "a NUL byte";
  }
  return {};
}

Status CheckBytes(std::string_view what, std::string_view value) {
  std::string_view bad = ForbiddenByte(value);
  if (bad.empty()) return Status::Ok();
  return Status::InvalidArgument(std::string(what) + " contains " + std::string(bad) +
                                 " (iptables-restore cannot carry it)");
}

bool HasWhitespace(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](unsigned char c) { return std::isspace(c) != 0; });
}

// "addr[/prefix|/mask]" with a numeric address of the family. Host names are refused (resolving them would
// block on DNS and can yield several rules), and so are comma lists (iptables expands them into several rules).
Status CheckAddress(std::string_view what, std::string_view value, Family family) {
  if (value.find(',') != std::string_view::npos) {
    return Status::InvalidArgument(std::string(what) + " " + Quoted(value) +
                                   ": comma lists are not accepted (one spec = one rule; give one rule per address)");
  }
  std::string_view addr = value;
  std::string_view mask;
  if (size_t slash = value.find('/'); slash != std::string_view::npos) {
    addr = value.substr(0, slash);
    mask = value.substr(slash + 1);
  }
  int af = family == Family::kIPv4 ? AF_INET : AF_INET6;
  unsigned char buf[16];
  if (addr.empty() || inet_pton(af, std::string(addr).c_str(), buf) != 1) {
    return Status::InvalidArgument(std::string(what) + " " + Quoted(value) + ": not a numeric " +
                                   std::string(FamilyName(family)) + " address (host names are not accepted)");
  }
  if (value.find('/') == std::string_view::npos) return Status::Ok();
  int max_prefix = family == Family::kIPv4 ? 32 : 128;
  bool all_digits = !mask.empty() && mask.size() <= 3 &&
                    std::all_of(mask.begin(), mask.end(), [](unsigned char c) { return std::isdigit(c) != 0; });
  if (all_digits && std::stoi(std::string(mask)) <= max_prefix) return Status::Ok();
  // A non-contiguous mask is printed by iptables-save in address form ("/255.0.255.0").
  if (!mask.empty() && inet_pton(af, std::string(mask).c_str(), buf) == 1) return Status::Ok();
  return Status::InvalidArgument(std::string(what) + " " + Quoted(value) + ": bad mask '" + std::string(mask) +
                                 "' (expected a prefix length 0.." + std::to_string(max_prefix) +
                                 " or an address mask)");
}

Status CheckInterface(std::string_view what, std::string_view value) {
  if (value.empty()) return Status::InvalidArgument(std::string(what) + ": empty interface name");
  if (value.size() > kMaxInterface) {
    return Status::InvalidArgument(std::string(what) + " " + Quoted(value) + ": interface names have at most " +
                                   std::to_string(kMaxInterface) + " bytes (IFNAMSIZ)");
  }
  if (HasWhitespace(value)) {
    return Status::InvalidArgument(std::string(what) + " " + Quoted(value) + ": whitespace in interface name");
  }
  return Status::Ok();
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

Status CheckOptions(std::string_view owner, const std::vector<Option>& options) {
  for (const Option& o : options) {
    std::string what = std::string(owner) + " option '--" + o.name + "'";
    if (o.name.empty()) return Status::InvalidArgument(std::string(owner) + ": option with an empty name");
    IPTKIT_RETURN_IF_ERROR(CheckBytes(what + " name", o.name));
    if (o.name.front() == '-' || HasWhitespace(o.name)) {
      return Status::InvalidArgument(what + ": option names are given without dashes and without whitespace");
    }
    for (const std::string& v : o.values) IPTKIT_RETURN_IF_ERROR(CheckBytes(what, v));
  }
  return Status::Ok();
}

Status CheckSetName(std::string_view what, const Option& o) {
  if (o.values.empty()) return Status::Ok();
  const std::string& name = o.values.front();
  if (name.size() > kMaxSetName) {
    return Status::InvalidArgument(std::string(what) + " set name " + Quoted(name) + ": " +
                                   std::to_string(name.size()) + " bytes, at most " + std::to_string(kMaxSetName) +
                                   " (IPSET_MAXNAMELEN)");
  }
  return Status::Ok();
}

// ---- Target placement ----

enum Hook : unsigned {
  kPreRouting = 1u << 0,
  kInput = 1u << 1,
  kForward = 1u << 2,
  kOutput = 1u << 3,
  kPostRouting = 1u << 4,
  kAnyHook = 0x1f,
};

unsigned HookBit(std::string_view chain) {
  if (chain == "PREROUTING") return kPreRouting;
  if (chain == "INPUT") return kInput;
  if (chain == "FORWARD") return kForward;
  if (chain == "OUTPUT") return kOutput;
  if (chain == "POSTROUTING") return kPostRouting;
  return 0;
}

std::string HookNames(unsigned mask) {
  static constexpr std::array<std::pair<unsigned, std::string_view>, 5> kNames = {{{kPreRouting, "PREROUTING"},
                                                                                   {kInput, "INPUT"},
                                                                                   {kForward, "FORWARD"},
                                                                                   {kOutput, "OUTPUT"},
                                                                                   {kPostRouting, "POSTROUTING"}}};
  std::string out;
  for (const auto& [bit, name] : kNames) {
    if (!(mask & bit)) continue;
    if (!out.empty()) out += ", ";
    out += name;
  }
  return out;
}

enum FamilyMask : unsigned { kV4 = 1, kV6 = 2, kBothFamilies = 3 };

struct Placement {
  std::string_view target;
  std::array<std::string_view, 2> tables;  // empty entries unused; both empty = any table
  unsigned hooks;
  unsigned families;
  std::string_view source;  // where the kernel says so
};

constexpr Placement kPlacements[] = {
    {"DNAT", {"nat", ""}, kPreRouting | kOutput, kBothFamilies, "xt_nat.c"},
    {"SNAT", {"nat", ""}, kPostRouting | kInput, kBothFamilies, "xt_nat.c"},
    {"MASQUERADE", {"nat", ""}, kPostRouting, kBothFamilies, "xt_MASQUERADE.c"},
    {"REDIRECT", {"nat", ""}, kPreRouting | kOutput, kBothFamilies, "xt_REDIRECT.c"},
    {"NETMAP", {"nat", ""}, kAnyHook, kBothFamilies, "xt_NETMAP.c"},
    {"CT", {"raw", ""}, kAnyHook, kBothFamilies, "xt_CT.c"},
    {"NOTRACK", {"raw", ""}, kAnyHook, kBothFamilies, "xt_CT.c"},
    // iptables-nft translates TRACE natively (meta nftrace), where any table works; xt_TRACE is raw-only.
    {"TRACE", {"raw", ""}, kAnyHook, kBothFamilies, "xt_TRACE.c"},
    {"TPROXY", {"mangle", ""}, kPreRouting, kBothFamilies, "xt_TPROXY.c"},
    {"CHECKSUM", {"mangle", ""}, kAnyHook, kBothFamilies, "xt_CHECKSUM.c"},
    {"DSCP", {"mangle", ""}, kAnyHook, kBothFamilies, "xt_DSCP.c"},
    {"TOS", {"mangle", ""}, kAnyHook, kBothFamilies, "xt_DSCP.c"},
    {"ECN", {"mangle", ""}, kAnyHook, kV4, "ipt_ECN.c"},
    {"TTL", {"mangle", ""}, kAnyHook, kV4, "xt_HL.c"},
    {"HL", {"mangle", ""}, kAnyHook, kV6, "xt_HL.c"},
    {"SNPT", {"mangle", ""}, kInput | kPostRouting, kV6, "ip6t_NPT.c"},
    {"DNPT", {"mangle", ""}, kPreRouting | kOutput, kV6, "ip6t_NPT.c"},
    {"SECMARK", {"mangle", "security"}, kAnyHook, kBothFamilies, "xt_SECMARK.c"},
    {"CONNSECMARK", {"mangle", "security"}, kAnyHook, kBothFamilies, "xt_CONNSECMARK.c"},
    {"CLASSIFY", {"", ""}, kForward | kOutput | kPostRouting, kBothFamilies, "xt_CLASSIFY.c"},
    {"REJECT", {"filter", ""}, kInput | kForward | kOutput, kBothFamilies, "ipt_REJECT.c, ip6t_REJECT.c"},
    {"SYNPROXY", {"", ""}, kInput | kForward, kBothFamilies, "xt_SYNPROXY.c"},
};

}  // namespace

Status ValidateChainName(std::string_view name) {
  if (name.empty()) return Status::InvalidArgument("chain name is empty");
  IPTKIT_RETURN_IF_ERROR(CheckBytes("chain name " + Quoted(name), name));
  if (name.size() > kMaxChainName) {
    return Status::InvalidArgument("chain name " + Quoted(name) + " is " + std::to_string(name.size()) +
                                   " bytes, at most " + std::to_string(kMaxChainName) + " are allowed");
  }
  if (name.front() == '-' || name.front() == '!') {
    return Status::InvalidArgument("chain name " + Quoted(name) + " may not start with '" + name.front() + "'");
  }
  if (HasWhitespace(name)) return Status::InvalidArgument("chain name " + Quoted(name) + " contains whitespace");
  if (IsStandardVerdict(name) || IsTargetExtension(name)) {
    return Status::InvalidArgument("chain name " + Quoted(name) + " clashes with a target name");
  }
  return Status::Ok();
}

Status ValidateRule(const Rule& rule, Family family) {
  struct HeaderField {
    const std::optional<Field>& field;
    std::string_view what;
  };
  for (const HeaderField& h :
       {HeaderField{rule.source, "source (-s)"}, HeaderField{rule.destination, "destination (-d)"},
        HeaderField{rule.in_interface, "in interface (-i)"}, HeaderField{rule.out_interface, "out interface (-o)"},
        HeaderField{rule.protocol, "protocol (-p)"}, HeaderField{rule.fragment, "fragment (-f)"}}) {
    if (h.field) IPTKIT_RETURN_IF_ERROR(CheckBytes(h.what, h.field->value));
  }
  if (rule.source) IPTKIT_RETURN_IF_ERROR(CheckAddress("source (-s)", rule.source->value, family));
  if (rule.destination) IPTKIT_RETURN_IF_ERROR(CheckAddress("destination (-d)", rule.destination->value, family));
  if (rule.in_interface) IPTKIT_RETURN_IF_ERROR(CheckInterface("in interface (-i)", rule.in_interface->value));
  if (rule.out_interface) IPTKIT_RETURN_IF_ERROR(CheckInterface("out interface (-o)", rule.out_interface->value));
  if (rule.protocol) {
    const std::string& p = rule.protocol->value;
    if (p.empty() || HasWhitespace(p))
      return Status::InvalidArgument("protocol (-p) " + Quoted(p) + " is not a protocol");
    // ip6tables accepts `-p icmp` (and 1), but ICMPv4 never appears in IPv6 packets: the rule would never match.
    if (family == Family::kIPv6 && (EqualsIgnoreCase(p, "icmp") || p == "1")) {
      return Status::InvalidArgument("protocol (-p) " + Quoted(p) +
                                     " never matches IPv6 packets; use ipv6-icmp (icmpv6, 58)");
    }
  }
  if (rule.fragment) {
    if (family == Family::kIPv6) {
      return Status::InvalidArgument("fragment (-f) exists only for IPv4; use -m frag in IPv6");
    }
    if (!rule.fragment->value.empty()) return Status::InvalidArgument("fragment (-f) takes no value");
  }
  for (const Match& m : rule.matches) {
    if (m.name.empty()) return Status::InvalidArgument("match with an empty name");
    std::string what = "match '" + m.name + "'";
    IPTKIT_RETURN_IF_ERROR(CheckBytes(what + " name", m.name));
    if (HasWhitespace(m.name)) return Status::InvalidArgument(what + ": whitespace in match name");
    IPTKIT_RETURN_IF_ERROR(CheckOptions(what, m.options));
    for (const Option& o : m.options) {
      if (m.name == "comment" && o.name == "comment") {
        for (const std::string& v : o.values) {
          if (v.size() > kMaxComment) {
            return Status::InvalidArgument(what + " option '--comment': " + std::to_string(v.size()) +
                                           " bytes, at most " + std::to_string(kMaxComment) +
                                           " (the kernel would truncate it)");
          }
        }
      }
      if (m.name == "set" && o.name == "match-set") {
        IPTKIT_RETURN_IF_ERROR(CheckSetName(what + " option '--match-set':", o));
      }
    }
  }
  const Target& t = rule.target;
  if (t.kind == Target::Kind::kNone) {
    if (!t.name.empty() || !t.options.empty()) {
      return Status::InvalidArgument("target " + Quoted(t.name) + " has no kind (jump or goto)");
    }
    return Status::Ok();
  }
  std::string what = std::string(t.kind == Target::Kind::kGoto ? "goto" : "target") + " " + Quoted(t.name);
  if (t.name.empty()) return Status::InvalidArgument("target with an empty name");
  IPTKIT_RETURN_IF_ERROR(CheckBytes(what, t.name));
  if (t.kind == Target::Kind::kGoto) {
    if (!t.options.empty()) return Status::InvalidArgument(what + ": goto takes no options");
    // -g names a user chain; a verdict or extension cannot be the destination of a goto.
    return ValidateChainName(t.name).WithContext("goto");
  }
  if (t.name.size() > kMaxChainName || HasWhitespace(t.name) || t.name.front() == '-' || t.name.front() == '!') {
    return Status::InvalidArgument(what + " is not a valid target or chain name");
  }
  IPTKIT_RETURN_IF_ERROR(CheckOptions(what, t.options));
  if (t.name == "SET") {
    for (const Option& o : t.options) {
      if (o.name == "add-set" || o.name == "del-set" || o.name == "map-set") {
        IPTKIT_RETURN_IF_ERROR(CheckSetName(what + " option '--" + o.name + "':", o));
      }
    }
  }
  return Status::Ok();
}

Status ValidateTargetPlacement(std::string_view name, std::string_view table, std::string_view hook, Family family) {
  if (BuiltinChains(table).empty()) return Status::InvalidArgument("unknown table " + Quoted(table));
  unsigned hook_bit = 0;
  if (!hook.empty()) {
    if (!IsBuiltinChain(table, hook)) {
      return Status::InvalidArgument(Quoted(hook) + " is not a builtin chain of table " + std::string(table));
    }
    hook_bit = HookBit(hook);
  }
  if (name == "DROP" && table == "nat") {
    // iptables refuses it in userspace (iptables/xshared.c: "The nat table is not intended for filtering, the use
    // of DROP is therefore inhibited"); so does iptkit, before anything is sent.
    return Status::InvalidArgument(
        "target 'DROP' is not allowed in table nat: the nat table is not intended for "
        "filtering (iptables inhibits DROP there)");
  }
  auto it = std::find_if(std::begin(kPlacements), std::end(kPlacements),
                         [&](const Placement& p) { return p.target == name; });
  if (it == std::end(kPlacements)) return Status::Ok();  // verdict, unrestricted extension, or user chain
  const Placement& p = *it;
  unsigned fam_bit = family == Family::kIPv4 ? kV4 : kV6;
  if (!(p.families & fam_bit)) {
    return Status::InvalidArgument("target " + Quoted(name) + " does not exist for " + std::string(FamilyName(family)) +
                                   " (" + std::string(p.source) + ")");
  }
  bool any_table = p.tables[0].empty();
  bool table_ok = any_table || p.tables[0] == table || (!p.tables[1].empty() && p.tables[1] == table);
  std::string place = hook.empty() ? "table " + std::string(table) : std::string(table) + " " + std::string(hook);
  if (!table_ok) {
    std::string allowed(p.tables[0]);
    if (!p.tables[1].empty()) allowed += " or " + std::string(p.tables[1]);
    return Status::InvalidArgument("target " + Quoted(name) + " is only valid in table " + allowed + ", not in " +
                                   place + " (" + std::string(p.source) + ")");
  }
  if (hook_bit != 0 && !(p.hooks & hook_bit)) {
    return Status::InvalidArgument("target " + Quoted(name) + " is not allowed in " + place +
                                   "; allowed chains: " + HookNames(p.hooks) + " (" + std::string(p.source) + ")");
  }
  return Status::Ok();
}

}  // namespace iptkit
