#include "tools/iptkit/cli_format.h"

#include <fmt/format.h>

#include <map>
#include <optional>
#include <set>

#include "iptkit/dialect.h"

namespace iptkit::cli {

std::string FormatInfo(const FirewallInfo& info) {
  std::string out;
  out += fmt::format("backend: {}\n", info.backend);
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
