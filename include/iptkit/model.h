// The iptables data model: families, tables, chains, rules, matches, targets, counters.
//
// Plain value types with value equality; no I/O. A Rule mirrors what `iptables-save` prints for it, in order:
// the header fields (-s -d -i -o -p -f, each possibly negated), the ordered list of matches (`-m NAME` with
// generic options, so every extension round-trips without per-extension code), then the target (`-j NAME
// [options]`, `-g CHAIN`, or none). Counters are carried but never take part in equality.
// Thread-safety: values; concurrent reads are fine, writes need external synchronization.
//
//   iptkit::Rule rule;
//   rule.protocol = iptkit::Field{"tcp"};
//   rule.matches.push_back({"tcp", {{"dport", false, {"22"}}}});
//   rule.target = iptkit::Target::Jump("ACCEPT");
//   // FormatRuleSpec(rule) == "-p tcp -m tcp --dport 22 -j ACCEPT"  (see dialect.h)
#ifndef IPTKIT_MODEL_H_
#define IPTKIT_MODEL_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "iptkit/status.h"

namespace iptkit {

enum class Family { kIPv4, kIPv6 };

// "ipv4" / "ipv6".
std::string_view FamilyName(Family family);
// Accepts "ipv4"/"4"/"inet" and "ipv6"/"6"/"inet6".
Result<Family> ParseFamily(std::string_view name);

struct Counters {
  uint64_t packets = 0;
  uint64_t bytes = 0;
  friend bool operator==(const Counters&, const Counters&) = default;
};

// One option of a match or target: `[!] --name [value ...]`. Values are unquoted (the dialect layer quotes
// them exactly as iptables-save does).
struct Option {
  std::string name;  // without the leading dashes: "dport", "ctstate", "log-prefix"
  bool negated = false;
  std::vector<std::string> values;
  friend bool operator==(const Option&, const Option&) = default;
};

// `-m NAME [options]`.
struct Match {
  std::string name;
  std::vector<Option> options;
  friend bool operator==(const Match&, const Match&) = default;
};

// `-j NAME [options]` (a builtin verdict, an extension target or a user chain), `-g CHAIN`, or none.
struct Target {
  enum class Kind { kNone, kJump, kGoto };
  Kind kind = Kind::kNone;
  std::string name;
  std::vector<Option> options;

  static Target Jump(std::string name, std::vector<Option> options = {}) {
    return Target{Kind::kJump, std::move(name), std::move(options)};
  }
  static Target Goto(std::string chain) { return Target{Kind::kGoto, std::move(chain), {}}; }
  bool empty() const { return kind == Kind::kNone; }
  friend bool operator==(const Target&, const Target&) = default;
};

// A header field with its negation: `! -s 10.0.0.0/8`.
struct Field {
  std::string value;
  bool negated = false;
  friend bool operator==(const Field&, const Field&) = default;
};

// A rule has two forms. Its fields are the printed form: what iptables-save prints for the rule in the kernel, and
// what FormatRuleSpec gives (see dialect.h); they are for display and comparison. The typed form is what the user
// wrote (`typed`): iptkit sends that to iptables, so that the kernel holds exactly what `iptables -A CHAIN <typed>`
// would install, also for the few extensions whose printed form does not load back to the same kernel rule.
//
// Equality (operator==) compares the fields only: header fields, matches and target. Counters, the typed form and
// the lossy mark never take part in it. Which rule of a chain `-C`/`-D` find is a different question with a
// different answer for lossy rules: see backend::SameRule (src/backend/ops/table_sim.h) — equal canonical specs,
// or for rules marked lossy, equal kernel forms.
struct Rule {
  std::optional<Field> source;         // -s, e.g. "10.0.0.0/8"
  std::optional<Field> destination;    // -d
  std::optional<Field> in_interface;   // -i, "eth+" wildcard allowed
  std::optional<Field> out_interface;  // -o
  std::optional<Field> protocol;       // -p, name or number as given/printed
  std::optional<Field> fragment;       // -f (IPv4 only); value is empty
  std::vector<Match> matches;
  Target target;
  Counters counters;  // not part of equality

  // ---- The typed form and the lossy mark (none of them take part in equality) ----
  // The arguments the user typed after the chain name, without the owner tag, exactly as ParseRuleSpec /
  // ParseRuleArgs (and ParseSave with keep_tokens) read them; `-c PKTS BYTES` (also in `counters`), when given, comes
  // first in that spelling, because only append, insert and replace send it, as in iptables. Valid only
  // while `typed_for` is FormatRuleSpec of the rule without its owner tag: a rule whose fields were changed otherwise
  // since is sent in its printed form. Backends' Canonicalize carry both over to the canonical rule; SetOwnerTag
  // keeps them valid (HasTypedForm in dialect.h tells). Empty for rules read from the kernel and rules built field by
  // field.
  std::vector<std::string> typed;
  std::string typed_for;
  // Set (to why, e.g. "iptables-legacy-save prints it as '-p tcp -m tcp', which loads as another rule") by a
  // backend on a rule it read or canonicalized whose printed form does not load back to the same kernel rule.
  // Such a rule is shown but never rewritten from its printed form; Save/List refuse its table unless asked.
  std::string lossy;
  // The kernel form of a lossy rule: opaque bytes of the backend that read or canonicalized it. Lossy rules are
  // compared by it (a lossy rule never equals a faithful one). Empty for faithful rules.
  std::string kernel_form;

  friend bool operator==(const Rule& a, const Rule& b) {
    return a.source == b.source && a.destination == b.destination && a.in_interface == b.in_interface &&
           a.out_interface == b.out_interface && a.protocol == b.protocol && a.fragment == b.fragment &&
           a.matches == b.matches && a.target == b.target;
  }

  // The owner tag (docs/architecture.md §4): the last match is `-m comment --comment "iptkit:<owner>:<id>"`.
  struct Tag {
    std::string owner;
    std::string id;
    friend bool operator==(const Tag&, const Tag&) = default;
  };
  std::optional<Tag> OwnerTag() const;
  // Appends (or replaces) the owner tag as the last match. The typed form stays valid (it never holds the tag); the
  // lossy mark is cleared (it described the rule with its old tag: canonicalize again).
  void SetOwnerTag(const Tag& tag);
  // Removes the owner tag (the last match) if there is one; as SetOwnerTag for the typed form and the lossy mark.
  void ClearOwnerTag();
};

struct Chain {
  std::string name;
  // Builtin chains have a policy ("ACCEPT" or "DROP"); user-defined chains have none ("-" in save text).
  std::optional<std::string> policy;
  Counters counters;  // builtin chains only (policy counters)
  std::vector<Rule> rules;

  bool builtin() const { return policy.has_value(); }
  friend bool operator==(const Chain& a, const Chain& b) {
    return a.name == b.name && a.policy == b.policy && a.rules == b.rules;
  }
};

struct Table {
  std::string name;           // filter, nat, mangle, raw, security
  std::vector<Chain> chains;  // in save order: builtin chains first, then user chains as iptables-save lists them
  // Set when iptables-save cannot show this table faithfully (save failed, or its rule count differs from the
  // kernel's); iptkit then refuses to rewrite it. Empty when representable.
  std::string unrepresentable_reason;

  const Chain* FindChain(std::string_view name) const;
  Chain* FindChain(std::string_view name);
  friend bool operator==(const Table& a, const Table& b) { return a.name == b.name && a.chains == b.chains; }
};

// All tables of one family, in save order.
struct Ruleset {
  Family family = Family::kIPv4;
  std::vector<Table> tables;

  const Table* FindTable(std::string_view name) const;
  Table* FindTable(std::string_view name);
  friend bool operator==(const Ruleset&, const Ruleset&) = default;
};

// ---- Netfilter facts and validation (model/validation.cc) ----

// The tables iptables knows, in the order iptables-nft-save prints them.
const std::vector<std::string>& KnownTables();
// Builtin chains of a table in hook order; empty for an unknown table.
const std::vector<std::string>& BuiltinChains(std::string_view table);
bool IsBuiltinChain(std::string_view table, std::string_view chain);
// ACCEPT, DROP, RETURN, QUEUE (the verdicts that are not extensions).
bool IsStandardVerdict(std::string_view name);
// The target extensions iptables 1.8.9 ships (extensions/libxt_*, libipt_*, libip6t_* with upper-case names: LOG,
// DNAT, MARK, ...). The one list iptkit has: `-j NAME` is an extension when NAME is in it (or has options), else a
// jump to a user chain, and chain names may not clash with it ("chain name may not clash with target name").
bool IsTargetExtension(std::string_view name);

// Chain names: 1..28 bytes, not starting with '-' or '!', no whitespace, not a standard verdict or the name of a
// known target extension (DNAT, LOG, ...). Errors name the chain.
Status ValidateChainName(std::string_view name);
// Checks every value of the rule: no '\n', '\r' or NUL anywhere; comments <= 255 bytes; set names <= 31 bytes;
// interface names <= 15 bytes; -s/-d one numeric address of the family with optional /prefix or /mask (host
// names and comma lists refused: one spec = one rule); -f only for IPv4; `-p icmp` refused in IPv6 (it never
// matches; use ipv6-icmp/icmpv6/58). Errors name the field or option.
Status ValidateRule(const Rule& rule, Family family);
// Whether target `name` may be used in `table` on builtin chain `hook` (DNAT only in nat PREROUTING/OUTPUT, ...).
// `hook` empty means "from a user chain": only the table is checked. Error names target, table and hook.
// Unknown tables and chains that are not builtins of the table are refused too.
Status ValidateTargetPlacement(std::string_view name, std::string_view table, std::string_view hook, Family family);

}  // namespace iptkit

#endif  // IPTKIT_MODEL_H_
