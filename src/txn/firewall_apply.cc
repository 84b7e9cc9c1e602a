// Firewall::PlanApply / Firewall::Apply: declarative apply over the backend (docs/declarative.md).
//
// Sequence: validate the desired state; canonicalize its rules per (family, table) through the backend — first
// without tags (the derived rule id hashes the canonical untagged spec), then with the tags, so the kernel's own
// printing of the tag is what the plan compares; then, under the backend lock (txn::LockedCommit): read the
// snapshots, plan (txn::PlanDeclarative), simulate each table's batch and derive its guarded inverse
// (txn::PlanBatch), and commit table by table with rollback. Canonicalization runs before the lock is taken: a
// backend may canonicalize by running iptables itself (e.g. in a scratch netns), which on legacy contends for the
// same xtables lock.
#include <algorithm>
#include <cctype>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "iptkit/dialect.h"
#include "iptkit/firewall.h"
#include "src/backend/backend.h"
#include "src/backend/ops/table_sim.h"
#include "src/txn/declarative.h"
#include "src/txn/firewall_internal.h"
#include "src/txn/planner.h"

namespace iptkit {

std::vector<Family> txn::DesiredFamilies(const DesiredState& desired) {
  switch (desired.families) {
    case DesiredState::Families::kIPv4:
      return {Family::kIPv4};
    case DesiredState::Families::kIPv6:
      return {Family::kIPv6};
    case DesiredState::Families::kBoth:
      return {Family::kIPv4, Family::kIPv6};
  }
  return {Family::kIPv4};
}

namespace {

// A rule of the desired state with where it sits, for error messages.
struct RuleSlot {
  Rule* rule;
  std::string where;
};

// Canonicalizes the rules of every slot in place, one Backend::Canonicalize call per table (on failure, one per rule
// until the refused one is found, so that its error names where it is).
Status CanonicalizeSlots(backend::Backend& backend, Family family,
                         std::map<std::string, std::vector<RuleSlot>>& slots) {
  for (auto& [table, list] : slots) {
    std::vector<Rule> rules;
    rules.reserve(list.size());
    for (const RuleSlot& s : list) rules.push_back(*s.rule);
    auto canonical = backend.Canonicalize(family, table, rules);
    if (!canonical.ok()) {
      for (const RuleSlot& s : list) {
        auto one = backend.Canonicalize(family, table, {*s.rule});
        if (!one.ok()) return one.status().WithContext(std::string(FamilyName(family)) + " " + s.where);
      }
      return canonical.status().WithContext(std::string(FamilyName(family)) + " table " + table);
    }
    if (canonical->size() != list.size()) {
      return Status::Internal("backend " + backend.traits().name + " canonicalized " + std::to_string(list.size()) +
                              " rules of " + std::string(FamilyName(family)) + " table " + table + " into " +
                              std::to_string(canonical->size()));
    }
    for (size_t i = 0; i < list.size(); ++i) *list[i].rule = std::move((*canonical)[i]);
  }
  return Status::Ok();
}

}  // namespace

Result<DesiredState> txn::PrepareDesiredState(backend::Backend& backend, const DesiredState& desired, Family family) {
  DesiredState out = desired;
  std::map<std::string, std::vector<RuleSlot>> slots;  // by table
  std::map<const Rule*, std::string> chain_of;         // for the local checks: the chain each rule goes to
  for (OwnedChain& chain : out.chains) {
    for (size_t i = 0; i < chain.rules.size(); ++i) {
      slots[chain.table].push_back(
          {&chain.rules[i], "owned chain " + chain.table + "/" + chain.name + " rule " + std::to_string(i + 1)});
      chain_of[&chain.rules[i]] = chain.name;
    }
  }
  for (size_t i = 0; i < out.hooks.size(); ++i) {
    HookRule& hook = out.hooks[i];
    slots[hook.table].push_back({&hook.rule, "hook " + std::to_string(i + 1) + " in " + hook.table + "/" + hook.chain});
    chain_of[&hook.rule] = hook.chain;
  }
  const std::string fam(FamilyName(family));

  // Pass 1: untagged. A caller's tag (validated: this owner's) is put back afterwards so its id is kept.
  std::vector<std::optional<Rule::Tag>> caller_tags;
  for (auto& [table, list] : slots) {
    for (RuleSlot& s : list) {
      // The same local checks as every other entry point (table_sim.h), before anything runs iptables.
      IPTKIT_RETURN_IF_ERROR(
          backend::CheckRuleLocally(family, table, chain_of.at(s.rule), *s.rule).WithContext(fam + " " + s.where));
      caller_tags.push_back(s.rule->OwnerTag());
      if (caller_tags.back()) s.rule->ClearOwnerTag();
    }
  }
  IPTKIT_RETURN_IF_ERROR(CanonicalizeSlots(backend, family, slots));
  size_t k = 0;
  for (auto& [table, list] : slots) {
    for (RuleSlot& s : list) {
      if (caller_tags[k]) s.rule->SetOwnerTag(*caller_tags[k]);
      ++k;
    }
  }
  IPTKIT_RETURN_IF_ERROR(txn::AssignOwnerTags(out).WithContext(fam));

  // Pass 2: with the tags, as the kernel will print them.
  std::vector<Rule::Tag> assigned;
  for (auto& [table, list] : slots) {
    for (RuleSlot& s : list) assigned.push_back(*s.rule->OwnerTag());
  }
  IPTKIT_RETURN_IF_ERROR(CanonicalizeSlots(backend, family, slots));
  k = 0;
  for (auto& [table, list] : slots) {
    for (RuleSlot& s : list) {
      if (s.rule->OwnerTag() != assigned[k]) {
        return Status::Internal("backend " + backend.traits().name +
                                " did not keep the owner tag as the last match of " + fam + " " + s.where + ": " +
                                FormatRuleSpec(*s.rule));
      }
      ++k;
    }
  }
  return out;
}

namespace {

// nft family names whose hooks see packets of `family`.
bool NftFamilyCovers(const std::string& nft_family, Family family) {
  return nft_family == "inet" || nft_family == (family == Family::kIPv4 ? "ip" : "ip6");
}

// Rules outside this backend's variant that judge the same packets (docs/architecture.md §3: both variants' rules
// apply).
void AddCoexistenceWarnings(backend::Backend& backend, const std::vector<txn::PlannedTable>& tables,
                            std::vector<std::string>& warnings) {
  auto info = backend.Info();
  if (!info.ok()) return;  // advisory only
  std::set<std::pair<Family, std::string>> touched;
  std::set<std::pair<Family, std::string>> hooks;  // (family, lower-case builtin chain)
  for (const txn::PlannedTable& t : tables) {
    touched.insert({t.batch.family, t.batch.table});
    for (const backend::TableOp& op : t.batch.ops) {
      if (!IsBuiltinChain(t.batch.table, op.chain)) continue;
      std::string hook = op.chain;
      std::transform(hook.begin(), hook.end(), hook.begin(), [](unsigned char c) { return std::tolower(c); });
      hooks.insert({t.batch.family, hook});
    }
  }
  for (const VariantTables& variant : info->variants) {
    if (variant.variant == backend.traits().variant) continue;
    for (const auto& t : variant.tables) {
      if (t.rules > 0 && touched.count({t.family, t.table})) {
        warnings.push_back("iptables-" + variant.variant + " also holds " + std::to_string(t.rules) + " rule(s) in " +
                           std::string(FamilyName(t.family)) + " table " + t.table +
                           "; they judge the same packets as the rules applied here");
      }
    }
  }
  for (const ForeignNftChain& c : info->foreign_nft) {
    for (const auto& [family, hook] : hooks) {
      if (c.hook == hook && NftFamilyCovers(c.family, family)) {
        warnings.push_back("nft chain " + c.family + " " + c.table + " " + c.chain + " (hook " + c.hook +
                           ", priority " + std::to_string(c.priority) + ") also judges " +
                           std::string(FamilyName(family)) + " packets on this hook");
        break;
      }
    }
  }
}

}  // namespace

Result<ApplyPlan> Firewall::PlanApply(const DesiredState& desired) {
  return Apply(desired, CommitOptions{.dry_run = true});
}

Result<ApplyPlan> Firewall::Apply(const DesiredState& desired, const CommitOptions& options) {
  if (!desired.sets.empty()) {
    return Status::InvalidArgument("owned sets are applied by iptkitd (PUT /v1/owners); use Ipsets for sets here")
        .WithField("/sets");
  }
  IPTKIT_RETURN_IF_ERROR(txn::ValidateDesiredState(desired));
  const std::vector<Family> families = txn::DesiredFamilies(desired);
  std::map<Family, DesiredState> prepared;
  for (Family family : families) {
    IPTKIT_ASSIGN_OR_RETURN(prepared[family], txn::PrepareDesiredState(*backend_, desired, family));
  }
  if (options.progress) {
    CommitProgress progress;
    progress.stage = CommitProgress::Stage::kCanonicalized;
    for (const auto& [family, state] : prepared) {
      for (const auto& chain : state.chains) progress.rules += chain.rules.size();
      progress.rules += state.hooks.size();
    }
    options.progress(progress);
  }

  ApplyPlan plan;
  std::vector<txn::PlannedTable> planned;
  auto planner = [&](txn::Snapshots snapshots) -> Result<std::vector<txn::PlannedTable>> {
    plan.steps.clear();
    plan.warnings.clear();
    txn::BatchPlanner batches(backend_.get(), std::move(snapshots));
    for (Family family : families) {
      // Each family is planned against its snapshot as read: the batches of one family touch distinct tables.
      IPTKIT_ASSIGN_OR_RETURN(const Ruleset* snapshot, batches.Current(family));
      IPTKIT_ASSIGN_OR_RETURN(txn::DeclarativePlan dp, txn::PlanDeclarative(*snapshot, prepared.at(family)));
      for (backend::TableBatch& batch : dp.batches) {
        const std::string label = std::string(FamilyName(family)) + " " + batch.table;
        batch.family = family;
        Status added = batches.AddBatch(std::move(batch));
        if (!added.ok()) return added.WithContext("apply of owner '" + desired.owner + "' in " + label);
      }
      for (PlanStep& s : dp.steps) plan.steps.push_back(std::move(s));
      for (std::string& w : dp.warnings) plan.warnings.push_back(std::move(w));
    }
    planned = batches.Finish();
    return planned;
  };
  IPTKIT_ASSIGN_OR_RETURN(CommitResult done, txn::LockedCommit(*backend_, options_, families, options, planner));
  plan.tables = std::move(done.tables);
  // Info() reads both variants (several save runs on the restore backend): only when something changes.
  if (plan.changed()) AddCoexistenceWarnings(*backend_, planned, plan.warnings);
  return plan;
}

}  // namespace iptkit
