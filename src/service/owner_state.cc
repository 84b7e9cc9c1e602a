#include "src/service/owner_state.h"

#include <algorithm>
#include <set>
#include <tuple>

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

bool PrefixesOverlap(std::string_view owner_a, std::string_view owner_b) {
  const std::string a = OwnerChainPrefix(owner_a);
  const std::string b = OwnerChainPrefix(owner_b);
  return a.size() <= b.size() ? b.compare(0, a.size(), a) == 0 : a.compare(0, b.size(), b) == 0;
}

Status CheckNewOwner(std::string_view owner, const std::map<std::string, OwnerState>& owners) {
  auto self = owners.find(std::string(owner));
  if (self != owners.end() && !self->second.empty()) return Status::Ok();
  for (const auto& [other, state] : owners) {
    if (state.empty() || other == owner || !PrefixesOverlap(owner, other)) continue;
    return Status::FailedPrecondition("owner '" + std::string(owner) + "': its chain prefix '" +
                                      OwnerChainPrefix(owner) + "' overlaps the prefix '" + OwnerChainPrefix(other) +
                                      "' of owner '" + other +
                                      "' (a chain could belong to both); choose an owner name whose prefix neither "
                                      "starts nor is the start of another owner's");
  }
  return Status::Ok();
}

Status CheckTtlBounded(const store::ManagedRule* existing, bool removing) {
  if (existing == nullptr || existing->deadline_ms) return Status::Ok();
  return Status::PermissionDenied(std::string(removing ? "removing" : "giving a ttl to") +
                                  " the permanent managed rule '" + existing->spec + "' of owner '" + existing->owner +
                                  "' is not a TTL-bounded change (this token has a ttl limit)");
}

Rule::Tag ManagedTag(const store::ManagedRule& rule) { return Rule::Tag{rule.owner, rule.rule_id}; }

std::optional<int64_t> TtlRemainingSeconds(const store::ManagedRule& rule, int64_t now_ms) {
  if (!rule.deadline_ms) return std::nullopt;
  const int64_t left = *rule.deadline_ms - now_ms;
  return left <= 0 ? 0 : (left + 999) / 1000;
}

Result<DesiredState> AssembleEffectiveState(std::string_view owner, Family family, const DesiredState* document,
                                            const std::map<store::ManagedRuleKey, store::ManagedRule>& managed,
                                            const ManagedRuleSource& rule_of) {
  DesiredState out;
  out.owner = std::string(owner);
  out.families = family == Family::kIPv4 ? DesiredState::Families::kIPv4 : DesiredState::Families::kIPv6;
  if (document != nullptr) {
    out.chains = document->chains;
    out.hooks = document->hooks;
  }
  // (table, chain, id) of the document's tagged rules: a managed rule with the same tag in the same chain is that
  // document rule (equal specs derive equal ids) and is not listed twice.
  std::set<std::tuple<std::string, std::string, std::string>> document_tags;
  for (const OwnedChain& c : out.chains) {
    for (const Rule& r : c.rules) {
      if (auto tag = r.OwnerTag()) document_tags.insert({c.table, c.name, tag->id});
    }
  }
  for (const HookRule& h : out.hooks) {
    if (auto tag = h.rule.OwnerTag()) document_tags.insert({h.table, h.chain, tag->id});
  }

  // Managed rules of this family, split by position; first ones newest first, last ones oldest first.
  std::vector<const store::ManagedRule*> first, last;
  for (const auto& [key, rule] : managed) {
    if (rule.family != family || document_tags.count({rule.table, rule.chain, rule.rule_id})) continue;
    (rule.position == store::Position::kFirst ? first : last).push_back(&rule);
  }
  std::sort(first.begin(), first.end(), [](auto* a, auto* b) { return a->seq > b->seq; });
  std::sort(last.begin(), last.end(), [](auto* a, auto* b) { return a->seq < b->seq; });

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
    IPTKIT_ASSIGN_OR_RETURN(Rule rule, rule_of(*m));
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
    IPTKIT_ASSIGN_OR_RETURN(Rule rule, rule_of(*m));
    if (IsBuiltinChain(m->table, m->chain)) {
      out.hooks.push_back(HookRule{m->table, m->chain, HookRule::Position::kLast, std::move(rule)});
    } else {
      chain_of(*m).rules.push_back(std::move(rule));
    }
  }
  return out;
}

Result<Rule> ParseManagedRule(const store::ManagedRule& m) {
  Result<Rule> rule = ParseRuleSpec(m.spec, m.family);
  if (!rule.ok()) {
    return rule.status().WithContext("stored managed rule of owner '" + m.owner + "' in " + m.table + "/" + m.chain);
  }
  rule->SetOwnerTag(ManagedTag(m));
  return rule;
}

Result<DesiredState> EffectiveState(std::string_view owner, const OwnerState& state, Family family) {
  const bool covers = state.document && DocumentCovers(*state.document, family);
  return AssembleEffectiveState(owner, family, covers ? &*state.document : nullptr, state.managed, ParseManagedRule);
}

}  // namespace iptkit::service
