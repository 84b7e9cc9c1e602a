// Declarative desired state of one owner: the chains it owns with their rules, and hook rules that jump into
// them from builtin chains. Apply computes the minimal change (a longest-common-subsequence diff per chain, so
// unchanged rules keep their counters) and never touches a rule it does not own (docs/architecture.md §4).
//
//   iptkit::DesiredState want;
//   want.owner = "myapp";
//   want.chains.push_back({"filter", "MYAPP-IN", {*ParseRuleSpec("-p tcp --dport 22 -j ACCEPT", v4)}});
//   want.hooks.push_back({"filter", "INPUT", HookRule::Position::kFirst, *ParseRuleSpec("-j MYAPP-IN", v4)});
//   auto plan = firewall->PlanApply(want);     // what would change, and the exact restore text
//   auto done = firewall->Apply(want);
#ifndef IPTKIT_DESIRED_H_
#define IPTKIT_DESIRED_H_

#include <string>
#include <vector>

#include "iptkit/model.h"
#include "iptkit/set_types.h"
#include "iptkit/transaction.h"

namespace iptkit {

struct OwnedChain {
  std::string table = "filter";
  std::string name;         // must start with the owner's chain prefix (upper-case owner + "-")
  std::vector<Rule> rules;  // desired order; duplicates allowed; without owner tags (iptkit adds them)
  friend bool operator==(const OwnedChain&, const OwnedChain&) = default;
};

struct HookRule {
  enum class Position { kFirst, kLast };
  std::string table = "filter";
  std::string chain;  // a builtin chain
  Position position = Position::kFirst;
  Rule rule;  // usually "-j OWNED-CHAIN", possibly with matches
  friend bool operator==(const HookRule&, const HookRule&) = default;
};

// An entry of an owned set. `timeout` is the timeout as the document gives it; iptkitd turns it into the absolute
// `expires_ms` when it accepts the document, and re-adds the entry (after a foreign delete, at start-up) with the
// time left until then, never more.
struct OwnedSetEntry {
  std::string elem{};
  std::optional<uint32_t> timeout{};     // seconds (0 = permanent on a set with timeout support)
  std::optional<std::string> comment{};  // sets with comment support
  std::optional<int64_t> expires_ms{};   // ms since 1970, set by iptkitd from `timeout`
  friend bool operator==(const OwnedSetEntry&, const OwnedSetEntry&) = default;
};

// An IP set an owner's document owns (iptkitd, docs/daemon.md "Owned sets"): created before the owner's rules
// that use it, destroyed after them, re-created and refilled when something else changed it.
struct OwnedSet {
  std::string name{};  // up to 31 characters
  std::string type{};  // "hash:ip", ...
  SetOptions options{};
  std::vector<OwnedSetEntry> entries{};
  friend bool operator==(const OwnedSet&, const OwnedSet&) = default;
};

struct DesiredState {
  std::string owner;  // [a-z0-9-]{1,32}
  enum class Families { kIPv4, kIPv6, kBoth };
  Families families = Families::kIPv4;
  std::vector<OwnedChain> chains;  // an owned chain absent here is removed (after its hooks)
  std::vector<HookRule> hooks;
  std::vector<OwnedSet> sets{};  // applied by iptkitd only; the library's Apply refuses a state with sets
  friend bool operator==(const DesiredState&, const DesiredState&) = default;
};

// "MYAPP-" for owner "myapp".
std::string OwnerChainPrefix(std::string_view owner);
Status ValidateOwner(std::string_view owner);

// One step of a plan, for people: "insert filter MYAPP-IN 3: -s 10.0.0.0/8 ... -j ACCEPT", and the same as fields
// for programs (which never parse the description): what kind of change, in which chain, and for a rule of an
// owner that owner and the rule's id (its tag "iptkit:<owner>:<rule_id>"). Producers fill what they know.
struct PlanStep {
  enum class Kind { kOther, kCreateChain, kDeleteChain, kInsert, kAppend, kDelete };
  Family family = Family::kIPv4;
  std::string table;
  std::string description;
  Kind kind = Kind::kOther;
  std::string chain = {};
  std::string owner = {};
  std::string rule_id = {};
  friend bool operator==(const PlanStep&, const PlanStep&) = default;
};

struct ApplyPlan {
  std::vector<PlanStep> steps;        // empty when nothing changes
  std::vector<TableCommit> tables;    // exact restore text per table
  std::vector<std::string> warnings;  // e.g. the other iptables variant holds rules on the same hooks
  bool changed() const { return !steps.empty(); }
};

}  // namespace iptkit

#endif  // IPTKIT_DESIRED_H_
