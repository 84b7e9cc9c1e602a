#include "tools/iptkit/cli_format.h"

#include <fmt/format.h>

#include <map>
#include <optional>
#include <set>

#include "iptkit/dialect.h"

namespace iptkit::cli {
namespace {

// How many rules of the table jump or go to each chain (the "(N references)" of iptables -L).
std::map<std::string, size_t> CountReferences(const Table& table) {
  std::map<std::string, size_t> refs;
  for (const Chain& chain : table.chains) {
    for (const Rule& rule : chain.rules) {
      if (!rule.target.empty()) ++refs[rule.target.name];
    }
  }
  return refs;
}

}  // namespace

std::string FormatListing(const Ruleset& ruleset, bool counters) {
  std::string out;
  for (const Table& table : ruleset.tables) {
    if (!out.empty()) out += "\n";
    out += fmt::format("# table {} ({})\n", table.name, FamilyName(ruleset.family));
    if (!table.unrepresentable_reason.empty()) {
      out += fmt::format("# warning: unrepresentable, iptkit will not rewrite it: {}\n", table.unrepresentable_reason);
    }
    std::map<std::string, size_t> refs = CountReferences(table);
    bool first = true;
    for (const Chain& chain : table.chains) {
      if (!first) out += "\n";
      first = false;
      if (chain.builtin()) {
        if (counters) {
          out += fmt::format("Chain {} (policy {} {} packets, {} bytes)\n", chain.name, *chain.policy,
                             chain.counters.packets, chain.counters.bytes);
        } else {
          out += fmt::format("Chain {} (policy {})\n", chain.name, *chain.policy);
        }
      } else {
        out += fmt::format("Chain {} ({} references)\n", chain.name, refs[chain.name]);
      }
      out += counters ? fmt::format("{:<4} {:>10} {:>12}  {}\n", "num", "pkts", "bytes", "rule")
                      : fmt::format("{:<4} {}\n", "num", "rule");
      size_t num = 0;
      for (const Rule& rule : chain.rules) {
        ++num;
        std::string spec = FormatRuleSpec(rule);
        out += counters
                   ? fmt::format("{:<4} {:>10} {:>12}  {}\n", num, rule.counters.packets, rule.counters.bytes, spec)
                   : fmt::format("{:<4} {}\n", num, spec);
      }
    }
  }
  return out;
}

std::string FormatInfo(const FirewallInfo& info) {
  std::string out;
  out += fmt::format("backend: {}\n", info.backend);
  if (!info.backend_reason.empty()) out += fmt::format("backend chosen: {}\n", info.backend_reason);
  out += fmt::format("netns: {}\n", info.netns.empty() ? "(caller's)" : info.netns);
  for (const VariantTables& variant : info.variants) {
    out +=
        fmt::format("variant {}: {}\n", variant.variant, variant.version.empty() ? "(not installed)" : variant.version);
    if (variant.tables.empty()) out += "  no tables\n";
    for (const VariantTables::TableRules& t : variant.tables) {
      out += fmt::format("  {} {}: {} rules{}\n", FamilyName(t.family), t.table, t.rules,
                         t.representable ? "" : " (unrepresentable)");
    }
  }
  if (!info.foreign_nft.empty()) {
    out += "foreign nft base chains:\n";
    for (const ForeignNftChain& c : info.foreign_nft) {
      out += fmt::format("  {} {} {}: hook {} priority {}\n", c.family, c.table, c.chain, c.hook, c.priority);
    }
  }
  for (const std::string& w : info.warnings) out += fmt::format("warning: {}\n", w);
  return out;
}

std::string FormatCommitText(const std::vector<TableCommit>& tables) {
  std::set<Family> families;
  for (const TableCommit& t : tables) families.insert(t.family);
  std::string out;
  std::optional<Family> last;
  for (const TableCommit& t : tables) {
    if (families.size() > 1 && last != t.family) out += fmt::format("# {}\n", FamilyName(t.family));
    last = t.family;
    out += t.restore_text;
    if (!t.restore_text.empty() && t.restore_text.back() != '\n') out += "\n";
  }
  return out;
}

std::string FormatCommitText(const CommitResult& result) { return FormatCommitText(result.tables); }

std::string FormatPlan(const ApplyPlan& plan) {
  std::string out;
  if (plan.steps.empty()) out += "no changes\n";
  for (const PlanStep& step : plan.steps) {
    out += fmt::format("{} {}: {}\n", FamilyName(step.family), step.table, step.description);
  }
  for (const std::string& w : plan.warnings) out += fmt::format("warning: {}\n", w);
  return out;
}

}  // namespace iptkit::cli
