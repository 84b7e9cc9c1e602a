#include "src/service/owner_state.h"

#include <algorithm>

#include "iptkit/dialect.h"

namespace iptkit::service {

bool DocumentCovers(const DesiredState& document, Family family) {
  switch (document.families) {
    case DesiredState::Families::kIPv4:
      return family == Family::kIPv4;
    case DesiredState::Families::kIPv6:
      return family == Family::kIPv6;
    case DesiredState::Families::kBoth:
      return true;
  }
  return false;
}

Status CheckManagedPlacement(std::string_view owner, std::string_view table, std::string_view chain) {
  if (BuiltinChains(table).empty()) return Status::InvalidArgument("unknown table '" + std::string(table) + "'");
  if (IsBuiltinChain(table, chain)) return Status::Ok();
  const std::string prefix = OwnerChainPrefix(owner);
  if (chain.size() > prefix.size() && chain.substr(0, prefix.size()) == prefix) return Status::Ok();
  return Status::InvalidArgument("chain '" + std::string(chain) + "' is neither a builtin chain of table " +
                                 std::string(table) + " nor a chain of owner '" + std::string(owner) +
                                 "' (its chains start with '" + prefix + "'): owned rules cannot go there");
}

Rule::Tag ManagedTag(const store::ManagedRule& rule) { return Rule::Tag{rule.owner, rule.rule_id}; }

std::optional<int64_t> TtlRemainingSeconds(const store::ManagedRule& rule, int64_t now_ms) {
  if (!rule.deadline_ms) return std::nullopt;
  const int64_t left = *rule.deadline_ms - now_ms;
  return left <= 0 ? 0 : (left + 999) / 1000;
}

Result<DesiredState> EffectiveState(std::string_view owner, const OwnerState& state, Family family) {
  DesiredState out;
  out.owner = std::string(owner);
  out.families = family == Family::kIPv4 ? DesiredState::Families::kIPv4 : DesiredState::Families::kIPv6;
  if (state.document && DocumentCovers(*state.document, family)) {
    out.chains = state.document->chains;
    out.hooks = state.document->hooks;
  }

  // Managed rules of this family, split by position; first ones newest first, last ones oldest first.
  std::vector<const store::ManagedRule*> first, last;
  for (const auto& [key, rule] : state.managed) {
    if (rule.family != family) continue;
    (rule.position == store::Position::kFirst ? first : last).push_back(&rule);
  }
  std::sort(first.begin(), first.end(), [](auto* a, auto* b) { return a->seq > b->seq; });
  std::sort(last.begin(), last.end(), [](auto* a, auto* b) { return a->seq < b->seq; });

  auto parse = [&](const store::ManagedRule& m) -> Result<Rule> {
    Result<Rule> rule = ParseRuleSpec(m.spec, family);
    if (!rule.ok()) {
      return rule.status().WithContext("stored managed rule of owner '" + m.owner + "' in " + m.table + "/" +
                                       m.chain);
    }
    rule->SetOwnerTag(ManagedTag(m));
    return rule;
  };
  auto chain_of = [&](const store::ManagedRule& m) -> OwnedChain& {
    for (OwnedChain& c : out.chains) {
      if (c.table == m.table && c.name == m.chain) return c;
    }
    out.chains.push_back(OwnedChain{m.table, m.chain, {}});
    return out.chains.back();
  };

  std::vector<HookRule> first_hooks;
  std::map<std::pair<std::string, std::string>, std::vector<Rule>> chain_first;
  for (const store::ManagedRule* m : first) {
    IPTKIT_ASSIGN_OR_RETURN(Rule rule, parse(*m));
    if (IsBuiltinChain(m->table, m->chain)) {
      first_hooks.push_back(HookRule{m->table, m->chain, HookRule::Position::kFirst, std::move(rule)});
    } else {
      chain_of(*m);  // the chain exists in the effective state even if only managed rules are in it
      chain_first[{m->table, m->chain}].push_back(std::move(rule));
    }
  }
  for (auto& [where, rules] : chain_first) {
    for (OwnedChain& c : out.chains) {
      if (c.table == where.first && c.name == where.second) c.rules.insert(c.rules.begin(), rules.begin(), rules.end());
    }
  }
  out.hooks.insert(out.hooks.begin(), first_hooks.begin(), first_hooks.end());
  for (const store::ManagedRule* m : last) {
    IPTKIT_ASSIGN_OR_RETURN(Rule rule, parse(*m));
    if (IsBuiltinChain(m->table, m->chain)) {
      out.hooks.push_back(HookRule{m->table, m->chain, HookRule::Position::kLast, std::move(rule)});
    } else {
      chain_of(*m).rules.push_back(std::move(rule));
    }
  }
  return out;
}

}  // namespace iptkit::service
