// OwnerState: what the daemon keeps per owner — its declarative document (PUT /v1/owners/OWNER) and its managed
// rules (rules added through the API with an owner, optionally with a TTL) — and the effective desired state the
// two make together, which is what the daemon applies and repairs (docs/daemon.md "Owners").
//
// Placement of managed rules in the effective state of one family:
//  - in a builtin chain: a hook. kFirst rules come first (newest first, like repeated `-I CHAIN 1`), then the
//    document's hooks, then kLast rules (oldest first, like repeated `-A CHAIN`);
//  - in a chain with the owner's prefix: a rule of that owned chain, kFirst rules before the document's rules of
//    the chain (newest first) and kLast ones after them; the chain is part of the effective state while the
//    document lists it or a managed rule sits in it.
// Every managed rule carries its stored id as its owner tag, so its tag (and its counters) stay the same while the
// rule exists.
// Thread-safety: values and pure functions.
//
//   OwnerState state;
//   state.managed[store::KeyOf(rule)] = rule;
//   IPTKIT_ASSIGN_OR_RETURN(DesiredState v4, EffectiveState("myapp", state, Family::kIPv4));
//   // then txn::PrepareDesiredState + txn::PlanDeclarative
#ifndef IPTKIT_SRC_SERVICE_OWNER_STATE_H_
#define IPTKIT_SRC_SERVICE_OWNER_STATE_H_

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "iptkit/desired.h"
#include "iptkit/model.h"
#include "iptkit/status.h"
#include "src/store/store.h"

namespace iptkit::service {

struct OwnerState {
  std::optional<DesiredState> document;
  std::map<store::ManagedRuleKey, store::ManagedRule> managed;
  bool empty() const { return !document && managed.empty(); }
  friend bool operator==(const OwnerState&, const OwnerState&) = default;
};

// Whether the document covers `family`.
bool DocumentCovers(const DesiredState& document, Family family);

// A managed rule may sit in a builtin chain of its table or in a chain named with the owner's prefix
// (OwnerChainPrefix). InvalidArgument naming the chain otherwise (foreign user chains such as DOCKER-USER are not
// supported: their content is not the owner's to order).
Status CheckManagedPlacement(std::string_view owner, std::string_view table, std::string_view chain);

// Chain ownership: chain C belongs to owner O when C starts with O's prefix (OwnerChainPrefix(O), "MYAPP-") and
// has more after it. Two owners' prefixes overlap when one starts with the other (owner "a" has "A-", owner "a-b"
// has "A-B-": chain A-B-IN would belong to both), so an owner whose prefix overlaps the prefix of an owner that
// has state is refused: then every chain belongs to at most one owner.
bool PrefixesOverlap(std::string_view owner_a, std::string_view owner_b);
// OK when `owner` has state in `owners` already or overlaps none of the owners there that have state;
// FailedPrecondition naming both owners and their prefixes otherwise.
Status CheckNewOwner(std::string_view owner, const std::map<std::string, OwnerState>& owners);

// A TTL-bounded change (ChangeRequest::ttl_bounded) may add or refresh a managed rule with a deadline and remove
// one that has a deadline; it may not make a permanent managed rule temporary (it would expire) nor remove one.
// `existing` is the managed rule with the same key before the change (nullptr: none). PermissionDenied otherwise.
Status CheckTtlBounded(const store::ManagedRule* existing, bool removing);

// The effective desired state of one family (families = that family), as described above; rules of managed
// entries are parsed from their stored specs (ParseManagedRule). InvalidArgument when a stored spec does not parse
// (a corrupt store).
Result<DesiredState> EffectiveState(std::string_view owner, const OwnerState& state, Family family);

// The same from parts: `document` is the document's part for this family (nullptr: none), possibly already
// prepared (canonical and tagged), and each managed rule's Rule comes from `rule_of` (the writer passes its cache
// of canonical tagged rules). A managed rule whose tag (same table, chain and id) a document rule carries is that
// rule and is left out.
using ManagedRuleSource = std::function<Result<Rule>(const store::ManagedRule&)>;
Result<DesiredState> AssembleEffectiveState(std::string_view owner, Family family, const DesiredState* document,
                                            const std::map<store::ManagedRuleKey, store::ManagedRule>& managed,
                                            const ManagedRuleSource& rule_of);
// The stored spec parsed, with the rule's owner tag.
Result<Rule> ParseManagedRule(const store::ManagedRule& rule);

// The owner tag a managed rule carries in the kernel.
Rule::Tag ManagedTag(const store::ManagedRule& rule);

// Seconds until the rule's deadline, rounded up (0 when passed); nullopt for a permanent rule.
std::optional<int64_t> TtlRemainingSeconds(const store::ManagedRule& rule, int64_t now_ms);

}  // namespace iptkit::service

#endif  // IPTKIT_SRC_SERVICE_OWNER_STATE_H_
