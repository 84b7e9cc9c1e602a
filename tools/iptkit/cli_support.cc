#include "tools/iptkit/cli_support.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "iptkit/dialect.h"
#include "iptkit/transaction.h"
#include "tools/iptkit/cli_listing.h"

namespace iptkit::cli {
namespace {

std::string_view CommandWord(CommandKind kind) {
  switch (kind) {
    case CommandKind::kCheck:
      return "check";
    case CommandKind::kAppend:
      return "append";
    case CommandKind::kInsert:
      return "insert";
    case CommandKind::kDelete:
    case CommandKind::kDeleteAt:
      return "delete";
    case CommandKind::kReplace:
      return "replace";
    default:
      return "COMMAND";
  }
}

// `s` about spec argument `index` (0-based within the spec starting at inv.args[begin]).
Status AtArgument(Status s, size_t begin, size_t index, const std::string& token) {
  StatusDetails d = s.details();
  d.token = token;
  d.argument = static_cast<int>(begin + index) + 1;
  return s.WithDetails(std::move(d));
}

}  // namespace

Status CheckToken(std::string_view what, std::string_view value) {
  size_t bad = value.find_first_of(std::string_view("\n\r\0", 3));
  if (bad != std::string_view::npos) {
    return Status::InvalidArgument(std::string(what) + " '" + std::string(value.substr(0, bad)) +
                                   "...': contains a newline, CR or NUL byte at byte " + std::to_string(bad))
        .WithToken(std::string(value));
  }
  return Status::Ok();
}

Status CheckTable(std::string_view table) {
  IPTKIT_RETURN_IF_ERROR(CheckToken("table", table));
  for (const std::string& known : KnownTables()) {
    if (known == table) return Status::Ok();
  }
  return Status::InvalidArgument("unknown table '" + std::string(table) +
                                 "' (expected raw, mangle, filter, nat or security)")
      .WithToken(std::string(table));
}

Status CheckChain(std::string_view table, std::string_view chain) {
  IPTKIT_RETURN_IF_ERROR(CheckToken("chain", chain));
  if (IsBuiltinChain(table, chain)) return Status::Ok();
  return ValidateChainName(chain).WithToken(std::string(chain));
}

Status CheckUserChain(std::string_view table, std::string_view chain) {
  IPTKIT_RETURN_IF_ERROR(CheckToken("chain", chain));
  if (IsBuiltinChain(table, chain)) {
    return Status::InvalidArgument("chain '" + std::string(chain) + "' is a builtin chain of table " +
                                   std::string(table))
        .WithToken(std::string(chain));
  }
  return ValidateChainName(chain).WithToken(std::string(chain));
}

Result<Rule> ParseSpec(const Invocation& inv, bool expect) {
  const std::vector<std::string>& spec = expect ? *inv.expect : inv.spec;
  const size_t begin = expect ? inv.expect_begin : inv.spec_begin;
  const std::string what = expect ? "--expect" : "RULESPEC";
  const std::string table = inv.TableOrFilter();
  const Family family = inv.global.family;
  if (spec.empty() && !expect && !inv.match_all) {
    return Status::InvalidArgument("empty RULESPEC: that rule would match every packet" +
                                   std::string(inv.kind == CommandKind::kCheck ? "" : " and has no target") +
                                   "; give --match-all before CHAIN if you mean it (iptkit " +
                                   std::string(CommandWord(inv.kind)) + " --match-all " + inv.chain + ")");
  }
  for (size_t i = 0; i < spec.size(); ++i) {
    std::string name = what + " argument " + std::to_string(i + 1);
    if (i > 0 && spec[i - 1].size() > 1 && spec[i - 1][0] == '-') name += " (value of " + spec[i - 1] + ")";
    Status token = CheckToken(name, spec[i]);
    if (!token.ok()) return AtArgument(token, begin, i, spec[i]);
  }
  Result<Rule> rule = ParseRuleArgs(spec, family);
  if (!rule.ok()) {
    Status s = rule.status();
    const StatusDetails& d = s.details();
    // The parser numbers the RULESPEC's arguments from 1; make it the position on the command line.
    if (d.argument && *d.argument >= 1 && static_cast<size_t>(*d.argument) <= spec.size()) {
      const size_t index = static_cast<size_t>(*d.argument) - 1;
      if (IsIptkitOption(spec[index], inv.kind)) {
        return AtArgument(
            Status::InvalidArgument("'" + spec[index] + "' is an iptkit option, but it comes after CHAIN, in the " +
                                    what + ": iptkit options go before CHAIN (iptkit " +
                                    std::string(CommandWord(inv.kind)) + " " + spec[index] + " " + inv.chain + " ...)"),
            begin, index, spec[index]);
      }
      if (spec[index] == "--expect") {
        return AtArgument(Status::InvalidArgument("--expect goes with a rule number: delete CHAIN N --expect "
                                                  "RULESPEC, replace CHAIN N RULESPEC --expect OLD-RULESPEC"),
                          begin, index, spec[index]);
      }
      return AtArgument(s.WithContext(what), begin, index, spec[index]);
    }
    return s.WithContext(what);
  }
  IPTKIT_RETURN_IF_ERROR(ValidateRule(*rule, family).WithContext(what));
  if (rule->target.kind == Target::Kind::kJump) {
    std::string_view hook = IsBuiltinChain(table, inv.chain) ? std::string_view(inv.chain) : std::string_view();
    Status placement = ValidateTargetPlacement(rule->target.name, table, hook, family).WithContext(what);
    if (!placement.ok()) {
      // Mark the target name on the command line.
      for (size_t i = 0; i + 1 < spec.size(); ++i) {
        if ((spec[i] == "-j" || spec[i] == "--jump") && spec[i + 1] == rule->target.name) {
          return AtArgument(placement, begin, i + 1, spec[i + 1]);
        }
      }
      return placement;
    }
  }
  return rule;
}

Result<std::string> ReadInput(const std::string& file, std::istream& in) {
  if (file == "-") {
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (in.bad()) return Status::InvalidArgument("cannot read stdin");
    return text;
  }
  std::ifstream stream(file, std::ios::binary);
  if (!stream) return Status::InvalidArgument("cannot open '" + file + "': " + std::strerror(errno));
  std::string text((std::istreambuf_iterator<char>(stream)), std::istreambuf_iterator<char>());
  if (stream.bad()) return Status::InvalidArgument("cannot read '" + file + "'");
  return text;
}

Rule WithoutOwnerTag(const Rule& rule) {
  Rule out = rule;
  if (rule.OwnerTag() && !out.matches.empty()) out.matches.pop_back();
  return out;
}

std::pair<int, std::optional<Rule::Tag>> FindOwnedTwin(const Chain& chain, const Rule& canonical) {
  const std::string wanted = FormatRuleSpec(canonical);
  int index = 0;
  for (const Rule& r : chain.rules) {
    ++index;
    std::optional<Rule::Tag> tag = r.OwnerTag();
    if (tag && FormatRuleSpec(WithoutOwnerTag(r)) == wanted) return {index, tag};
  }
  return {0, std::nullopt};
}

Status OwnedRuleError(const std::string& table, const std::string& chain, int index, const Rule::Tag& tag,
                      bool through_daemon) {
  std::string how = through_daemon ? "give --owner " + tag.owner + " to delete it"
                                   : "change it through its owner: iptkit --daemon --owner " + tag.owner +
                                         " delete ... for a rule iptkitd keeps, or a new document for "
                                         "iptkit apply";
  return Status::FailedPrecondition("the rule is owned by '" + tag.owner + "': rule " + std::to_string(index) + " of " +
                                    table + " " + chain + " carries the owner tag iptkit:" + tag.owner + ":" + tag.id +
                                    ", which a RULESPEC without owner does not match; " + how)
      .WithOwner(tag.owner)
      .WithReason("owned");
}

Result<Ruleset> SelectListing(Ruleset all, const Invocation& inv) {
  Ruleset out;
  out.family = all.family;
  std::vector<std::string> names;
  if (!inv.table.empty()) {
    IPTKIT_RETURN_IF_ERROR(CheckTable(inv.table));
    names.push_back(inv.table);
  } else if (!inv.chain.empty()) {
    names.push_back("filter");
  } else {
    for (const std::string& known : KnownTables()) {
      if (known == "filter" || all.FindTable(known) != nullptr) names.push_back(known);
    }
  }
  for (const std::string& name : names) {
    Table table;
    table.name = name;
    if (Table* t = all.FindTable(name)) table = std::move(*t);
    out.tables.push_back(WithBuiltinChains(std::move(table)));
  }
  if (!inv.chain.empty()) {
    IPTKIT_RETURN_IF_ERROR(CheckToken("chain", inv.chain));
    const Table& table = out.tables.front();
    const Chain* chain = table.FindChain(inv.chain);
    if (chain == nullptr) {
      return Status::NotFound("chain '" + inv.chain + "' does not exist in " + std::string(FamilyName(all.family)) +
                              " table " + table.name)
          .WithToken(inv.chain);
    }
    if (inv.index > 0 && static_cast<size_t>(inv.index) > chain->rules.size()) {
      return Status::NotFound("no rule " + std::to_string(inv.index) + " in chain " + inv.chain + " (it has " +
                              std::to_string(chain->rules.size()) + " rules)")
          .WithReason(std::string(kReasonIndexOutOfRange));
    }
  }
  return out;
}

Result<std::string> RenderListing(Ruleset all, const Invocation& inv, const RowNotes& notes, std::ostream& err) {
  IPTKIT_ASSIGN_OR_RETURN(Ruleset selected, SelectListing(std::move(all), inv));
  return RenderSelectedListing(selected, inv, notes, err);
}

std::string RenderSelectedListing(const Ruleset& selected, const Invocation& inv, const RowNotes& notes,
                                  std::ostream& err) {
  std::string out;
  const bool several = selected.tables.size() > 1;
  for (const Table& table : selected.tables) {
    if (!table.unrepresentable_reason.empty() && !inv.global.quiet) {
      err << "iptkit: warning: " << FamilyName(selected.family) << " table " << table.name
          << " is unrepresentable (iptkit will not rewrite it): " << table.unrepresentable_reason << "\n";
    }
    for (const Chain& chain : table.chains) {
      for (size_t i = 0; i < chain.rules.size() && !inv.global.quiet; ++i) {
        if (chain.rules[i].lossy.empty()) continue;
        err << "iptkit: warning: " << FamilyName(selected.family) << " " << table.name << " " << chain.name << " rule "
            << i + 1 << " is lossy (what is shown is not the kernel's rule): " << chain.rules[i].lossy << "\n";
      }
    }
    ListingFormat format;
    format.counters = inv.counters || inv.global.verbosity > 0;
    format.exact = inv.list.exact;
    format.line_numbers = inv.list.line_numbers;
    format.chain = inv.chain;
    format.rule = inv.index;
    format.owner = inv.owner;
    for (const auto& [key, note] : notes) {
      if (std::get<0>(key) == table.name) format.notes[{std::get<1>(key), std::get<2>(key)}] = note;
    }
    std::string text = inv.list.rules ? FormatRulesS(table, format) : FormatChains(selected.family, table, format);
    if (several) {
      if (!out.empty()) out += "\n";
      out += "# table " + table.name + " (" + std::string(FamilyName(selected.family)) + ")\n";
    }
    out += text;
  }
  return out;
}

void NarrowListJson(nlohmann::json& doc, const Invocation& inv) {
  if (!doc.contains("tables") || !doc["tables"].is_array()) return;
  for (auto& table : doc["tables"]) {
    nlohmann::json chains = nlohmann::json::array();
    for (auto& chain : table["chains"]) {
      if (!inv.chain.empty() && chain.value("name", "") != inv.chain) continue;
      nlohmann::json rules = nlohmann::json::array();
      for (auto& rule : chain["rules"]) {
        if (inv.index > 0 && rule.value("index", 0) != inv.index) continue;
        if (!inv.owner.empty() && rule.value("owner", "") != inv.owner) continue;
        rules.push_back(rule);
      }
      if (!inv.owner.empty() && rules.empty()) continue;
      chain["rules"] = std::move(rules);
      chains.push_back(chain);
    }
    table["chains"] = std::move(chains);
  }
  if (!(inv.counters || inv.global.verbosity > 0)) {
    for (auto& table : doc["tables"]) {
      for (auto& chain : table["chains"]) {
        chain.erase("counters");
        for (auto& rule : chain["rules"]) rule.erase("counters");
      }
    }
  }
}

}  // namespace iptkit::cli
