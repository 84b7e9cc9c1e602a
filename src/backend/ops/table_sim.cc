#include "src/backend/ops/table_sim.h"

#include <algorithm>
#include <functional>
#include <iterator>
#include <map>
#include <set>

#include "iptkit/dialect.h"

namespace iptkit::backend {
namespace {

using Kind = TableOp::Kind;

std::string Quoted(std::string_view s) { return "'" + std::string(s) + "'"; }

Status ChainNotFound(const Table& table, std::string_view chain) {
  return Status::NotFound("chain " + Quoted(chain) + " does not exist in table " + table.name);
}

bool IsJumpToChain(const Target& target) {
  if (target.kind == Target::Kind::kGoto) return true;
  return target.kind == Target::Kind::kJump && !IsStandardVerdict(target.name) && !IsTargetExtension(target);
}

Rule WithCounters(Rule rule, bool keep) {
  if (!keep) rule.counters = {};
  return rule;
}

// iptables-save (both variants) prints user chains sorted by name after the builtin ones: libiptc keeps them
// sorted, iptables-nft sorts its chain cache the same way (nft-cache.c). Keep that order so that a chain deleted
// and re-created by a rollback prints where it was.
void InsertUserChainSorted(Table& table, Chain chain) {
  auto pos = std::find_if(table.chains.begin(), table.chains.end(),
                          [&](const Chain& c) { return !c.builtin() && c.name > chain.name; });
  table.chains.insert(pos, std::move(chain));
}

}  // namespace

Result<Table> NewTable(std::string_view name) {
  const auto& builtins = BuiltinChains(name);
  if (builtins.empty()) {
    return Status::InvalidArgument("unknown table " + Quoted(name) +
                                   " (expected filter, nat, mangle, raw or security)");
  }
  Table table;
  table.name = std::string(name);
  for (const auto& chain : builtins) table.chains.push_back(Chain{chain, "ACCEPT", {}, {}});
  return table;
}

void ResetTable(Table& table) {
  std::erase_if(table.chains, [](const Chain& c) { return !c.builtin(); });
  for (auto& chain : table.chains) {
    chain.rules.clear();
    chain.counters = {};
  }
  // A table restored whole may be missing builtin chains (a hand-written snapshot); the kernel always has them.
  for (const auto& name : BuiltinChains(table.name)) {
    if (table.FindChain(name) == nullptr) table.chains.push_back(Chain{name, "ACCEPT", {}, {}});
  }
  table.unrepresentable_reason.clear();
}

namespace {

// FormatRuleSpec prints header fields, match names and the target name verbatim, so rules that differ there never
// print the same spec; comparing them first keeps -C/-D lookups in long chains from printing every rule.
bool MaySameSpec(const Rule& a, const Rule& b) {
  if (a.source != b.source || a.destination != b.destination || a.in_interface != b.in_interface ||
      a.out_interface != b.out_interface || a.protocol != b.protocol || a.fragment != b.fragment ||
      a.target.kind != b.target.kind || a.target.name != b.target.name || a.matches.size() != b.matches.size()) {
    return false;
  }
  for (size_t i = 0; i < a.matches.size(); ++i) {
    if (a.matches[i].name != b.matches[i].name) return false;
  }
  return true;
}

}  // namespace

bool SameRule(const Rule& a, const Rule& b) {
  const bool lossy_a = !a.lossy.empty();
  const bool lossy_b = !b.lossy.empty();
  if (lossy_a || lossy_b) return lossy_a && lossy_b && a.kernel_form == b.kernel_form;
  return a == b || (MaySameSpec(a, b) && FormatRuleSpec(a) == FormatRuleSpec(b));
}

int FindRule(const Chain& chain, const Rule& rule) {
  std::optional<std::string> spec;
  const bool lossy = !rule.lossy.empty();
  for (size_t i = 0; i < chain.rules.size(); ++i) {
    const Rule& r = chain.rules[i];
    if (lossy || !r.lossy.empty()) {
      if (lossy && !r.lossy.empty() && r.kernel_form == rule.kernel_form) return static_cast<int>(i);
      continue;
    }
    if (r == rule) return static_cast<int>(i);
    if (!MaySameSpec(r, rule)) continue;
    if (!spec) spec = FormatRuleSpec(rule);
    if (FormatRuleSpec(r) == *spec) return static_cast<int>(i);
  }
  return -1;
}

bool IsTargetExtension(const Target& target) {
  if (target.kind != Target::Kind::kJump) return false;
  if (!target.options.empty()) return true;
  return iptkit::IsTargetExtension(target.name);
}

std::vector<RuleRef> FindReferences(const Table& table, std::string_view chain) {
  std::vector<RuleRef> refs;
  for (const auto& c : table.chains) {
    for (size_t i = 0; i < c.rules.size(); ++i) {
      const Target& t = c.rules[i].target;
      if (IsJumpToChain(t) && t.name == chain) refs.push_back({c.name, static_cast<int>(i + 1), c.rules[i]});
    }
  }
  return refs;
}

std::string DescribeReferences(const Table& table, const std::vector<RuleRef>& refs) {
  std::string out;
  for (const auto& ref : refs) {
    if (!out.empty()) out += "; ";
    out += table.name + " " + ref.chain + " " + std::to_string(ref.index) + ": " + FormatRuleSpec(ref.rule);
  }
  return out;
}

Status CheckRuleLocally(Family family, std::string_view table, std::string_view chain, const Rule& rule) {
  IPTKIT_RETURN_IF_ERROR(ValidateRule(rule, family));
  const Target& t = rule.target;
  if (t.kind != Target::Kind::kJump || (!IsStandardVerdict(t.name) && !IsTargetExtension(t))) return Status::Ok();
  Status s = ValidateTargetPlacement(t.name, table, IsBuiltinChain(table, chain) ? chain : "", family);
  if (s.ok()) return s;
  if (HasTypedForm(rule)) {
    for (size_t k = rule.typed.size(); k-- > 1;) {
      if (rule.typed[k] == t.name && rule.typed[k - 1].starts_with("-")) {
        return s.WithToken(t.name).WithArgument(static_cast<int>(k + 1));
      }
    }
  }
  return s.WithToken(t.name);
}

Status CheckRule(Family family, const Table& table, std::string_view chain, const Rule& rule) {
  IPTKIT_RETURN_IF_ERROR(ValidateRule(rule, family));
  const Target& t = rule.target;
  if (t.kind == Target::Kind::kNone) return Status::Ok();
  if (t.kind == Target::Kind::kJump && IsStandardVerdict(t.name)) {
    // Verdicts are allowed everywhere but DROP in nat (ValidateTargetPlacement).
    return ValidateTargetPlacement(t.name, table.name, IsBuiltinChain(table.name, chain) ? chain : "", family);
  }
  if (IsTargetExtension(t)) {
    return ValidateTargetPlacement(t.name, table.name, IsBuiltinChain(table.name, chain) ? chain : "", family);
  }
  const std::string verb = t.kind == Target::Kind::kGoto ? "goto" : "jump";
  if (IsBuiltinChain(table.name, t.name)) {
    return Status::InvalidArgument("cannot " + verb + " to builtin chain " + Quoted(t.name));
  }
  if (table.FindChain(t.name) == nullptr) {
    return Status::NotFound(verb + " target " + Quoted(t.name) + " is neither a chain of table " + table.name +
                            " nor a target extension");
  }
  return Status::Ok();
}

Status CheckTableGraph(Family family, const Table& table) {
  // Edges between user chains; builtin chains cannot be jumped to, so they only start paths.
  std::map<std::string, std::vector<std::string>> edges;
  for (const auto& c : table.chains) {
    for (const auto& r : c.rules) {
      if (IsJumpToChain(r.target) && table.FindChain(r.target.name) != nullptr) {
        edges[c.name].push_back(r.target.name);
      }
    }
  }
  // Loops: depth-first search with colors over user chains.
  std::map<std::string, int> color;  // 0 white, 1 on stack, 2 done
  std::vector<std::string> stack;
  std::string cycle;
  std::function<bool(const std::string&)> visit = [&](const std::string& name) {
    color[name] = 1;
    stack.push_back(name);
    for (const auto& next : edges[name]) {
      if (color[next] == 1) {
        auto from = std::find(stack.begin(), stack.end(), next);
        for (auto it = from; it != stack.end(); ++it) cycle += *it + " -> ";
        cycle += next;
        return true;
      }
      if (color[next] == 0 && visit(next)) return true;
    }
    stack.pop_back();
    color[name] = 2;
    return false;
  };
  for (const auto& c : table.chains) {
    if (color[c.name] == 0 && visit(c.name)) {
      return Status::InvalidArgument("jump loop in table " + table.name + ": " + cycle);
    }
  }
  // Hooks reaching each user chain.
  std::map<std::string, std::set<std::string>> reached;
  for (const auto& c : table.chains) {
    if (!c.builtin()) continue;
    std::vector<std::string> todo = {c.name};
    std::set<std::string> seen = {c.name};
    while (!todo.empty()) {
      std::string cur = todo.back();
      todo.pop_back();
      for (const auto& next : edges[cur]) {
        if (seen.insert(next).second) {
          reached[next].insert(c.name);
          todo.push_back(next);
        }
      }
    }
  }
  for (const auto& c : table.chains) {
    if (c.builtin()) continue;
    for (size_t i = 0; i < c.rules.size(); ++i) {
      const Target& t = c.rules[i].target;
      if (!IsTargetExtension(t)) continue;
      for (const auto& hook : reached[c.name]) {
        Status s = ValidateTargetPlacement(t.name, table.name, hook, family);
        if (!s.ok()) {
          return s.WithContext("rule " + std::to_string(i + 1) + " of chain " + c.name + " (" +
                               FormatRuleSpec(c.rules[i]) + ") is reached from " + hook);
        }
      }
    }
  }
  return Status::Ok();
}

Status ApplyTableOp(Family family, Table& table, const TableOp& op, bool with_counters) {
  auto find_chain = [&](std::string_view name) -> Result<Chain*> {
    Chain* c = table.FindChain(name);
    if (c == nullptr) return ChainNotFound(table, name);
    return c;
  };
  switch (op.kind) {
    case Kind::kAppend: {
      IPTKIT_ASSIGN_OR_RETURN(Chain * c, find_chain(op.chain));
      IPTKIT_RETURN_IF_ERROR(CheckRule(family, table, op.chain, op.rule));
      c->rules.push_back(WithCounters(op.rule, with_counters));
      return Status::Ok();
    }
    case Kind::kInsert: {
      IPTKIT_ASSIGN_OR_RETURN(Chain * c, find_chain(op.chain));
      if (op.index < 1 || static_cast<size_t>(op.index) > c->rules.size() + 1) {
        return Status::InvalidArgument("insert index " + std::to_string(op.index) + " out of range: chain " + op.chain +
                                       " has " + std::to_string(c->rules.size()) + " rules");
      }
      IPTKIT_RETURN_IF_ERROR(CheckRule(family, table, op.chain, op.rule));
      c->rules.insert(c->rules.begin() + (op.index - 1), WithCounters(op.rule, with_counters));
      return Status::Ok();
    }
    case Kind::kCheck:
    case Kind::kDelete: {
      IPTKIT_ASSIGN_OR_RETURN(Chain * c, find_chain(op.chain));
      int at = FindRule(*c, op.rule);
      if (at < 0 && op.kind == Kind::kCheck) {
        // -C inside a batch is a precondition (docs/architecture.md §3): its miss means the table moved under us.
        return Status::FailedPrecondition("no rule " + Quoted(FormatRuleSpec(op.rule)) + " in chain " + op.chain);
      }
      if (at < 0) {
        return Status::NotFound("no rule " + Quoted(FormatRuleSpec(op.rule)) + " in chain " + op.chain);
      }
      if (op.kind == Kind::kDelete) c->rules.erase(c->rules.begin() + at);
      return Status::Ok();
    }
    case Kind::kDeleteAt:
    case Kind::kReplace: {
      IPTKIT_ASSIGN_OR_RETURN(Chain * c, find_chain(op.chain));
      if (op.index < 1 || static_cast<size_t>(op.index) > c->rules.size()) {
        return Status::NotFound("no rule at index " + std::to_string(op.index) + ": chain " + op.chain + " has " +
                                std::to_string(c->rules.size()) + " rules");
      }
      if (op.kind == Kind::kDeleteAt) {
        c->rules.erase(c->rules.begin() + (op.index - 1));
      } else {
        IPTKIT_RETURN_IF_ERROR(CheckRule(family, table, op.chain, op.rule));
        c->rules[op.index - 1] = WithCounters(op.rule, with_counters);
      }
      return Status::Ok();
    }
    case Kind::kNewChain: {
      IPTKIT_RETURN_IF_ERROR(ValidateChainName(op.chain));
      if (table.FindChain(op.chain) != nullptr) {
        return Status::AlreadyExists("chain " + Quoted(op.chain) + " already exists in table " + table.name);
      }
      InsertUserChainSorted(table, Chain{op.chain, std::nullopt, {}, {}});
      return Status::Ok();
    }
    case Kind::kDeleteChain: {
      std::vector<std::string> names;
      if (op.chain.empty()) {  // -X without a chain: every user chain
        for (const auto& c : table.chains) {
          if (!c.builtin()) names.push_back(c.name);
        }
      } else {
        IPTKIT_ASSIGN_OR_RETURN(Chain * c, find_chain(op.chain));
        if (c->builtin()) return Status::InvalidArgument("cannot delete builtin chain " + Quoted(op.chain));
        names.push_back(op.chain);
      }
      for (const auto& name : names) {
        const Chain* c = table.FindChain(name);
        if (!c->rules.empty()) {
          return Status::FailedPrecondition("chain " + Quoted(name) + " is not empty (" +
                                            std::to_string(c->rules.size()) + " rules)");
        }
        std::vector<RuleRef> refs = FindReferences(table, name);
        std::erase_if(refs,
                      [&](const RuleRef& r) { return std::find(names.begin(), names.end(), r.chain) != names.end(); });
        if (!refs.empty()) {
          return Status::FailedPrecondition("chain " + Quoted(name) + " is referenced by " +
                                            DescribeReferences(table, refs));
        }
      }
      std::erase_if(table.chains,
                    [&](const Chain& c) { return std::find(names.begin(), names.end(), c.name) != names.end(); });
      return Status::Ok();
    }
    case Kind::kRenameChain: {
      IPTKIT_ASSIGN_OR_RETURN(Chain * c, find_chain(op.chain));
      if (c->builtin()) return Status::InvalidArgument("cannot rename builtin chain " + Quoted(op.chain));
      IPTKIT_RETURN_IF_ERROR(ValidateChainName(op.arg));
      if (table.FindChain(op.arg) != nullptr) {
        return Status::AlreadyExists("chain " + Quoted(op.arg) + " already exists in table " + table.name);
      }
      for (auto& other : table.chains) {
        for (auto& r : other.rules) {
          if (IsJumpToChain(r.target) && r.target.name == op.chain) r.target.name = op.arg;
        }
      }
      auto at = table.chains.begin() + (c - table.chains.data());
      Chain renamed = std::move(*at);
      renamed.name = op.arg;
      table.chains.erase(at);
      InsertUserChainSorted(table, std::move(renamed));
      return Status::Ok();
    }
    case Kind::kFlush:
    case Kind::kZero: {
      std::vector<Chain*> chains;
      if (op.chain.empty()) {
        for (auto& c : table.chains) chains.push_back(&c);
      } else {
        IPTKIT_ASSIGN_OR_RETURN(Chain * c, find_chain(op.chain));
        chains.push_back(c);
      }
      for (Chain* c : chains) {
        if (op.kind == Kind::kFlush) {
          c->rules.clear();
        } else {
          c->counters = {};
          for (auto& r : c->rules) r.counters = {};
        }
      }
      return Status::Ok();
    }
    case Kind::kPolicy: {
      IPTKIT_ASSIGN_OR_RETURN(Chain * c, find_chain(op.chain));
      if (!c->builtin()) {
        return Status::InvalidArgument("cannot set a policy on user chain " + Quoted(op.chain) +
                                       " (only builtin chains have one)");
      }
      if (op.arg != "ACCEPT" && op.arg != "DROP") {
        return Status::InvalidArgument("bad policy " + Quoted(op.arg) + " for chain " + op.chain +
                                       " (expected ACCEPT or DROP)");
      }
      c->policy = op.arg;
      if (with_counters) c->counters = op.rule.counters;
      return Status::Ok();
    }
  }
  return Status::Internal("unknown op kind");
}

std::string DescribeTableOp(const TableOp& op) {
  auto with_chain = [&](std::string_view flag) {
    std::string s(flag);
    if (!op.chain.empty()) s += " " + op.chain;
    return s;
  };
  switch (op.kind) {
    case Kind::kAppend:
      return with_chain("-A") + " " + FormatRuleSpec(op.rule);
    case Kind::kInsert:
      return with_chain("-I") + " " + std::to_string(op.index) + " " + FormatRuleSpec(op.rule);
    case Kind::kCheck:
      return with_chain("-C") + " " + FormatRuleSpec(op.rule);
    case Kind::kDelete:
      return with_chain("-D") + " " + FormatRuleSpec(op.rule);
    case Kind::kDeleteAt:
      return with_chain("-D") + " " + std::to_string(op.index);
    case Kind::kReplace:
      return with_chain("-R") + " " + std::to_string(op.index) + " " + FormatRuleSpec(op.rule);
    case Kind::kNewChain:
      return with_chain("-N");
    case Kind::kDeleteChain:
      return with_chain("-X");
    case Kind::kRenameChain:
      return with_chain("-E") + " " + op.arg;
    case Kind::kFlush:
      return with_chain("-F");
    case Kind::kZero:
      return with_chain("-Z");
    case Kind::kPolicy:
      return with_chain("-P") + " " + op.arg;
  }
  return "?";
}

}  // namespace iptkit::backend
