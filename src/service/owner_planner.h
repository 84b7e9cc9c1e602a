// OwnerPlanner: plans one owner at a time — the owner's effective state (its document and managed rules,
// owner_state.h) against the simulated kernel of a txn::BatchPlanner — and adds the change to that planner.
// Pure: no threads, no store, no clock; the backend is used for canonicalization only (Backend::Canonicalize), so
// the fake backend is all a test needs (owner_planner_test.cc).
//
// An owner's plan fails on its own: Plan() leaves the BatchPlanner as it was and the error names the owner (in the
// message and as StatusDetails::owner), so the caller can plan every other owner as if it were not there.
//
// It keeps per owner what is costly to redo for each plan: the document prepared per family (canonical and tagged,
// txn::PrepareDesiredState) while it stays the same, and every managed rule canonical with its tag. It also
// remembers which tagged rules of the builtin chains are `first` and which `last` hooks (HookPosition), so that
// unowned inserts can be placed around them.
// Thread-safety: one thread at a time.
//
//   OwnerPlanner owners(&backend);
//   txn::BatchPlanner planner(&backend, std::move(snapshots));
//   Result<OwnerPlan> plan = owners.Plan("web", state, planner);   // on error the planner is unchanged
//   ... txn::CommitBatches(backend, planner.Finish(), {}) ...
#ifndef IPTKIT_SRC_SERVICE_OWNER_PLANNER_H_
#define IPTKIT_SRC_SERVICE_OWNER_PLANNER_H_

#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "iptkit/desired.h"
#include "iptkit/model.h"
#include "iptkit/status.h"
#include "src/backend/backend.h"
#include "src/service/owner_state.h"
#include "src/store/store.h"
#include "src/txn/planner.h"

namespace iptkit::service {

// What planning one owner added to the BatchPlanner.
struct OwnerPlan {
  std::vector<PlanStep> steps;  // with kind, chain, owner and rule id (never parse their descriptions)
  std::vector<std::string> warnings;
  bool changed = false;  // the planner holds new ops (the kernel differs from the owner's state)
};

class OwnerPlanner {
 public:
  // `backend` canonicalizes the owner's rules; it must outlive the planner.
  explicit OwnerPlanner(backend::Backend* backend) : backend_(backend) {}

  // Adds to `planner` what brings the kernel (as `planner` simulates it, both families) to `state`: the minimal
  // change of txn::PlanDeclarative. All or nothing: on error `planner` is as before the call. Errors name the owner.
  Result<OwnerPlan> Plan(const std::string& owner, const OwnerState& state, txn::BatchPlanner& planner);

  // One managed rule that changed since the owner's state was last planned: its value before (nullopt: it is new)
  // and after (nullopt: removed). A rule whose deadline alone changed (a repeated add) has both, equal otherwise.
  struct ManagedChange {
    std::optional<store::ManagedRule> before;
    std::optional<store::ManagedRule> after;
  };
  // Adds to `planner` only what `changes` change, for an owner whose other state is as it was when last planned:
  // each new managed rule of a builtin chain is inserted at the head of the chain (`first`: the newest first rule
  // of an owner is its first) or appended (`last`: the newest last rule is its last), each removed one is deleted
  // (every copy of it), a refreshed one is left alone. Nothing else of the owner is looked at: a rule of it that
  // another writer moved or removed meanwhile stays as it is until the owner is planned in full (Plan: its drift
  // check, a change of its document, a repair after imperative ops). That is what the full plan would do too when
  // nothing drifted, at the cost of the changed rules instead of every rule of the owner and of the chains it sits
  // in. `state` is the owner's state after the changes.
  // nullopt (nothing added to `planner`) when the changes cannot be planned so and the caller plans the owner in
  // full: the owner was not planned in full before (since this planner knows it), its document changed, a changed
  // rule sits in a user chain, is one of the document's rules, or changed its position or id; a new rule is in the
  // kernel already; a refreshed rule is not there exactly once as it should be. All or nothing as Plan.
  Result<std::optional<OwnerPlan>> PlanChanges(const std::string& owner, const OwnerState& state,
                                               const std::vector<ManagedChange>& changes, txn::BatchPlanner& planner);

  // Drops what is cached for an owner (its state is gone) or for one managed rule (removed).
  void Forget(const std::string& owner);
  void ForgetRule(const store::ManagedRuleKey& key);

  // How many `first` and `last` hooks of all owners HookPosition knows in a builtin chain (a caller that found that
  // many walks no further).
  struct HookCount {
    size_t first = 0;
    size_t last = 0;
  };
  HookCount HookCounts(Family family, std::string_view table, std::string_view chain) const;

  // Whether the rule tagged `tag` in a builtin chain is a `first` or `last` hook of its owner, as of that owner's
  // last Plan (nullopt: not known — an owner never planned, or not one of its hooks).
  std::optional<HookRule::Position> HookPosition(Family family, std::string_view table, std::string_view chain,
                                                 std::string_view owner, std::string_view id) const;

 private:
  struct PreparedDocument {
    std::optional<DesiredState> source;     // the document these were made from
    std::map<Family, DesiredState> states;  // per family it covers: canonical, tagged
  };
  Status PrepareDocument(const std::string& owner, const OwnerState& state);
  Status PrepareManagedRules(const OwnerState& state);
  Status PrepareManagedRules(const std::vector<const store::ManagedRule*>& rules);
  void RememberHooks(const std::string& owner, Family family, const DesiredState& effective);

  backend::Backend* backend_;
  std::map<std::string, PreparedDocument> documents_;
  // Owners planned in full (Plan) since they were last forgotten: PlanChanges plans only changes of these.
  std::set<std::string, std::less<>> planned_;
  // Every managed rule canonical with its tag (as the kernel prints it), made once per rule and id.
  std::map<store::ManagedRuleKey, std::pair<std::string, Rule>> tagged_;  // key → (rule_id, rule)
  // (family, table, chain, owner, id) → position of every hook of the owners planned.
  // Looked up without copies (std::less<>: by views) for each owned rule an unowned add has to place itself around.
  using HookKey = std::tuple<Family, std::string, std::string, std::string, std::string>;
  std::map<std::string, std::map<HookKey, HookRule::Position, std::less<>>, std::less<>> hooks_;  // by owner
  // (family, table, chain) → how many of the hooks in hooks_ are there, by position.
  std::map<std::tuple<Family, std::string, std::string>, HookCount, std::less<>> hook_counts_;
  void CountHook(const HookKey& key, HookRule::Position position, int delta);
};

// An owner's rules may not jump (or go) into a chain another owner owns: a chain named with the prefix of an owner
// in `owners` that has state, other than `owner` (a change of that owner could remove the chain and break this
// owner's state, and that owner's plan would treat the jump as foreign). InvalidArgument naming `where`, the
// rule, the chain and its owner. Chains with this owner's own prefix and foreign chains (DOCKER-USER) pass.
Status CheckJumpTarget(std::string_view owner, const Rule& rule, const std::map<std::string, OwnerState>& owners,
                       const std::string& where);
// The same for every rule of a document.
Status CheckJumpTargets(const DesiredState& document, const std::map<std::string, OwnerState>& owners);

}  // namespace iptkit::service

#endif  // IPTKIT_SRC_SERVICE_OWNER_PLANNER_H_
