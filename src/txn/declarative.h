// Declarative apply, the pure part: validation of a DesiredState, owner tags and rule ids, and the planner that
// turns (snapshot, desired state) into ordered per-table restore ops (docs/declarative.md).
//
// Nothing here does I/O; Firewall::PlanApply / Apply (firewall_apply.cc) canonicalize, lock, read, call
// PlanDeclarative and commit. Every function is safe to call concurrently on distinct arguments.
//
//   txn::DesiredState want = ...;                       // rules canonical (as the kernel prints them)
//   IPTKIT_RETURN_IF_ERROR(txn::ValidateDesiredState(want));
//   IPTKIT_RETURN_IF_ERROR(txn::AssignOwnerTags(want));  // then canonicalize again, tag included
//   IPTKIT_ASSIGN_OR_RETURN(auto plan, txn::PlanDeclarative(snapshot_v4, want));
//   for (const auto& batch : plan.batches) Commit(batch);
#ifndef IPTKIT_SRC_TXN_DECLARATIVE_H_
#define IPTKIT_SRC_TXN_DECLARATIVE_H_

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "iptkit/desired.h"
#include "iptkit/model.h"
#include "iptkit/status.h"
#include "src/backend/backend.h"

namespace iptkit::txn {

// Longest id in an owner tag "iptkit:<owner>:<id>" (docs/architecture.md §4).
inline constexpr size_t kMaxRuleIdLength = 26;

// The stable id of a rule the caller gave no id: the 64-bit FNV-1a hash of "table\0chain\0spec" in lower-case
// RFC 4648 base32 without padding (13 characters of [a-z2-7]). `spec` is the canonical spec WITHOUT the tag.
std::string DeriveRuleId(std::string_view table, std::string_view chain, std::string_view canonical_untagged_spec);

// Ids a caller may put into a tag: 1..26 characters of [A-Za-z0-9._-].
Status ValidateRuleId(std::string_view id);

// Checks the shape of a desired state, before any canonicalization: the owner name; every owned chain is in a
// known table, starts with the owner's prefix, has something after it, passes ValidateChainName and appears
// once; every hook sits in a builtin chain of its table; no rule carries another owner's tag or a malformed id of
// this owner; a rule that jumps or goes to a chain with the owner's prefix names an owned chain of the same
// table (an undesired owned chain is removed by the same apply). Errors are InvalidArgument naming the chain,
// hook or rule.
Status ValidateDesiredState(const DesiredState& desired);

// Gives every rule of `desired` its owner tag, as the last match. Rules must already be canonical; a rule that
// carries a tag of this owner keeps that id, any other gets DeriveRuleId(table, chain, untagged spec). Ids are
// made unique per (table, chain) — hooks of one builtin chain count together — by suffixing the 2nd, 3rd ...
// equal (spec, id) with "-2", "-3", ..., so that every owned rule of a chain has a distinct spec and
// `-D CHAIN spec` removes exactly the intended rule. InvalidArgument when a suffixed id would exceed 26 chars.
Status AssignOwnerTags(DesiredState& desired);

// Rule::OwnerTag without copies: views into `rule`'s last match (valid while the rule is unchanged). Planners ask
// this of every rule of the chains they look at.
struct TagView {
  std::string_view owner;
  std::string_view id;
};
std::optional<TagView> ViewOwnerTag(const Rule& rule);

// The change that brings one family's tables to the desired state.
struct DeclarativePlan {
  std::vector<backend::TableBatch> batches;  // only tables that change, in KnownTables() order
  std::vector<PlanStep> steps;               // one per op but `-C` guards, with kind, chain, owner and rule id
  std::vector<std::string> warnings;         // e.g. a stale owned chain kept because a foreign rule uses it
  bool empty() const { return batches.empty(); }
};

// Plans `desired` against `current` (one family, as Backend::Read returns it: rules as the kernel prints them).
// `desired` must have passed ValidateDesiredState and carry canonical, tagged rules (AssignOwnerTags); its
// `families` field is ignored — the family is current.family.
//
// Semantics (docs/declarative.md):
//  - A rule is ours when its last match is the tag "iptkit:<owner>:<id>"; every other rule is foreign and is
//    never deleted, replaced or moved.
//  - Kernel chain C is owned when it starts with the owner's prefix and all its rules are ours (an empty chain
//    too) or one of our rules jumps/goes to it. Owned chains absent from `desired` are emptied (by spec) and
//    removed (-X) after every rule of ours that references them is gone; one that still holds or is referenced by
//    foreign rules is emptied of our rules, kept, and reported in `warnings`.
//  - Desired chains: missing ones are created (-N) first. Per chain the kernel's rules of ours are diffed
//    against the desired list by longest common subsequence over canonical specs (specs are unique per chain,
//    so this is a longest increasing subsequence, O(n log n)): unmatched kernel rules are deleted by spec
//    (`-D CHAIN spec`), front to back, then missing rules are inserted (`-I CHAIN n`, `-A` at the end) in final
//    order, each `-I` after a kept rule guarded by `-C` of that rule. Matched rules are never touched, so they
//    keep their counters; a rule of ours that has to move (deleted and inserted back elsewhere in the chain, e.g.
//    a hook pushed below a foreign rule) goes back in with the counters it had: such a batch has with_counters
//    set (packets counted between the read and the commit are lost). Foreign rules inside a desired chain stay where
//    they are; a new rule goes right after its desired predecessor (the first one at position 1).
//  - Builtin chains: the hooks with position kFirst must be the chain's first rules, before any foreign rule
//    (index 1, 2, ... in desired order); kLast hooks its last rules, after any foreign rule. A hook found
//    behind a foreign rule (e.g. docker's `-I FORWARD 1`) is drift: it is deleted and inserted back in place.
//    Here "foreign" means without any iptkit tag: other owners' rules may interleave with ours (each owner
//    insisting on being first would make two owners move each other's hooks forever).
//    Rules of ours in builtin chains that are not desired hooks are deleted, as are rules of ours in any other
//    chain that is neither desired nor owned.
//  - Duplicate copies of one of our rules in a chain (only a foreign tool copying them makes those) are
//    collapsed: every copy but the last is deleted, since `-D spec` always removes the first copy.
//  - A table with unrepresentable_reason set that the desired state names, or whose snapshot holds rules or
//    chains of ours, fails the whole plan with FailedPrecondition naming the table: it is never rewritten.
//  - When the kernel already matches, the plan is empty.
Result<DeclarativePlan> PlanDeclarative(const Ruleset& current, const DesiredState& desired);

}  // namespace iptkit::txn

#endif  // IPTKIT_SRC_TXN_DECLARATIVE_H_
