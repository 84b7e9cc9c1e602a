#include "tools/iptkit/cli_support.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <functional>
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

namespace {

// The names of the tables `list` shows: the selected one, filter for a chain without a table, or every table
// `present` says the kernel has plus filter, in iptables' table order.
Result<std::vector<std::string>> ListedTables(const Invocation& inv,
                                              const std::function<bool(const std::string&)>& present) {
  std::vector<std::string> names;
  if (!inv.table.empty()) {
    IPTKIT_RETURN_IF_ERROR(CheckTable(inv.table));
    names.push_back(inv.table);
  } else if (!inv.chain.empty()) {
    names.push_back("filter");
  } else {
    for (const std::string& known : KnownTables()) {
      if (known == "filter" || present(known)) names.push_back(known);
    }
  }
  return names;
}

// NotFound when the invocation's chain (or its rule N) is not in `table`; `rules`: how many rules the chain holds
// (nullopt: its rules in `table`).
Status CheckListedChain(Family family, const Table& table, const Invocation& inv,
                        std::optional<size_t> rules = std::nullopt) {
  if (inv.chain.empty()) return Status::Ok();
  IPTKIT_RETURN_IF_ERROR(CheckToken("chain", inv.chain));
  const Chain* chain = table.FindChain(inv.chain);
  if (chain == nullptr) {
    return Status::NotFound("chain '" + inv.chain + "' does not exist in " + std::string(FamilyName(family)) +
                            " table " + table.name)
        .WithToken(inv.chain);
  }
  const size_t count = rules.value_or(chain->rules.size());
  if (inv.index > 0 && static_cast<size_t>(inv.index) > count) {
    return Status::NotFound("no rule " + std::to_string(inv.index) + " in chain " + inv.chain + " (it has " +
                            std::to_string(count) + " rules)")
        .WithReason(std::string(kReasonIndexOutOfRange));
  }
  return Status::Ok();
}

// The warning for a table iptkit cannot show faithfully.
void WarnUnrepresentable(Family family, const Table& table, const Invocation& inv, std::ostream& err) {
  if (table.unrepresentable_reason.empty() || inv.global.quiet) return;
  err << "iptkit: warning: " << FamilyName(family) << " table " << table.name
      << " is unrepresentable (iptkit will not rewrite it): " << table.unrepresentable_reason << "\n";
}

void WarnLossy(Family family, const std::string& table, const std::string& chain, size_t rule,
               const std::string& reason, const Invocation& inv, std::ostream& err) {
  if (inv.global.quiet) return;
  err << "iptkit: warning: " << FamilyName(family) << " " << table << " " << chain << " rule " << rule
      << " is lossy (what is shown is not the kernel's rule): " << reason << "\n";
}

}  // namespace

Result<Ruleset> SelectListing(Ruleset all, const Invocation& inv) {
  Ruleset out;
  out.family = all.family;
  IPTKIT_ASSIGN_OR_RETURN(std::vector<std::string> names,
                          ListedTables(inv, [&](const std::string& name) { return all.FindTable(name) != nullptr; }));
  for (const std::string& name : names) {
    Table table;
    table.name = name;
    if (Table* t = all.FindTable(name)) table = std::move(*t);
    out.tables.push_back(WithBuiltinChains(std::move(table)));
  }
  IPTKIT_RETURN_IF_ERROR(CheckListedChain(all.family, out.tables.front(), inv));
  return out;
}

bool ListsFromSaveText(const Invocation& inv) {
  return inv.list.rules && !inv.global.json && inv.owner.empty() && inv.index == 0 && !inv.counters &&
         inv.global.verbosity == 0;
}

Result<std::string> RenderRulesSFromSave(std::string_view save, Family family, const Invocation& inv,
                                         std::ostream& err) {
  IPTKIT_ASSIGN_OR_RETURN(std::vector<SavedTable> saved, ParseSavedTables(save));
  auto find = [&](const std::string& name) {
    return std::find_if(saved.begin(), saved.end(), [&](const SavedTable& t) { return t.table.name == name; });
  };
  IPTKIT_ASSIGN_OR_RETURN(std::vector<std::string> names,
                          ListedTables(inv, [&](const std::string& name) { return find(name) != saved.end(); }));
  std::vector<SavedTable> shown;
  for (const std::string& name : names) {
    SavedTable& t = shown.emplace_back();
    t.table.name = name;
    if (auto it = find(name); it != saved.end()) t = std::move(*it);
    t.table = WithBuiltinChains(std::move(t.table));
  }
  IPTKIT_RETURN_IF_ERROR(CheckListedChain(family, shown.front().table, inv));
  std::string out;
  ListingFormat format;
  format.chain = inv.chain;
  for (const SavedTable& t : shown) {
    WarnUnrepresentable(family, t.table, inv, err);
    for (const SavedTable::Lossy& l : t.lossy) WarnLossy(family, t.table.name, l.chain, l.rule, l.reason, inv, err);
    if (shown.size() > 1) {
      if (!out.empty()) out += "\n";
      out += "# table " + t.table.name + " (" + std::string(FamilyName(family)) + ")\n";
    }
    out += FormatRulesSFromSave(t, format);
  }
  return out;
}

Result<std::string> RenderListing(Ruleset all, const Invocation& inv, const RowNotes& notes, std::ostream& err) {
  IPTKIT_ASSIGN_OR_RETURN(Ruleset selected, SelectListing(std::move(all), inv));
  return RenderSelectedListing(selected, inv, notes, err);
}

namespace {

// The listing format the command line asks for (-v / -c, -x, --line-numbers, the chain, the rule, --owner).
ListingFormat FormatOf(const Invocation& inv) {
  ListingFormat format;
  format.counters = inv.counters || inv.global.verbosity > 0;
  format.exact = inv.list.exact;
  format.line_numbers = inv.list.line_numbers;
  format.chain = inv.chain;
  format.rule = inv.index;
  format.owner = inv.owner;
  return format;
}

}  // namespace

std::string RenderSelectedListing(const Ruleset& selected, const Invocation& inv, const RowNotes& notes,
                                  std::ostream& err) {
  std::string out;
  const bool several = selected.tables.size() > 1;
  for (const Table& table : selected.tables) {
    WarnUnrepresentable(selected.family, table, inv, err);
    for (const Chain& chain : table.chains) {
      for (size_t i = 0; i < chain.rules.size(); ++i) {
        if (!chain.rules[i].lossy.empty())
          WarnLossy(selected.family, table.name, chain.name, i + 1, chain.rules[i].lossy, inv, err);
      }
    }
    ListingFormat format = FormatOf(inv);
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

Result<std::optional<RulesListing>> ListFromRules(backend::Backend& backend, Family family,
                                                  const std::optional<std::string>& table, const Invocation& inv) {
  ListingFormat format = FormatOf(inv);
  // The tables listed are known once the read says which the kernel has: collect every table iptables knows.
  ListingCollector collector(family, KnownTables(), format, inv.list.rules);
  if (!inv.list.rules) collector.CollectSets();
  IPTKIT_ASSIGN_OR_RETURN(Ruleset read, backend.ReadRules(family, table, collector));
  read.family = family;
  // A table that cannot be shown faithfully is refused by the model's listing, with the reason (Firewall::List).
  if (!inv.allow_lossy) {
    if (!collector.lossy().empty()) return std::optional<RulesListing>();
    for (const Table& t : read.tables) {
      if (!t.unrepresentable_reason.empty()) return std::optional<RulesListing>();
    }
  }
  IPTKIT_ASSIGN_OR_RETURN(std::vector<std::string> names,
                          ListedTables(inv, [&](const std::string& name) { return read.FindTable(name) != nullptr; }));
  RulesListing out;
  out.family = family;
  for (const std::string& name : names) {
    Table t;
    t.name = name;
    if (Table* kernel = read.FindTable(name)) t = std::move(*kernel);
    out.tables.push_back(WithBuiltinChains(std::move(t)));
  }
  const Table& first = out.tables.front();
  IPTKIT_RETURN_IF_ERROR(CheckListedChain(family, first, inv, collector.RuleCount(first.name, inv.chain)));
  for (const Table& t : out.tables) out.texts.push_back(collector.Format(t));
  for (const ListingCollector::Lossy& l : collector.lossy()) {
    if (std::find(names.begin(), names.end(), l.table) != names.end()) out.lossy.push_back(l);
  }
  // The places of each set in the listing's order (the rules were handed over in the backend's chain order).
  std::map<std::pair<std::string_view, std::string_view>, size_t> order;
  for (const Table& t : out.tables) {
    for (const Chain& c : t.chains)
      order.emplace(std::pair<std::string_view, std::string_view>(t.name, c.name), order.size());
  }
  std::vector<SetUse> sets = collector.SetUses();
  for (SetUse& use : sets) {
    std::erase_if(use.used_by, [&](const SetUse::Place& p) { return !order.count({p.table, p.chain}); });
    std::stable_sort(use.used_by.begin(), use.used_by.end(), [&](const SetUse::Place& a, const SetUse::Place& b) {
      const size_t x = order.at({a.table, a.chain}), y = order.at({b.table, b.chain});
      return x != y ? x < y : a.rule < b.rule;
    });
    if (!use.used_by.empty()) out.sets.push_back(std::move(use));
  }
  return std::optional<RulesListing>(std::move(out));
}

std::string RenderRulesListing(const RulesListing& listing, const Invocation& inv, std::ostream& err) {
  std::string out;
  const bool several = listing.tables.size() > 1;
  for (size_t i = 0; i < listing.tables.size(); ++i) {
    const Table& table = listing.tables[i];
    WarnUnrepresentable(listing.family, table, inv, err);
    for (const ListingCollector::Lossy& l : listing.lossy) {
      if (l.table == table.name) WarnLossy(listing.family, l.table, l.chain, l.rule, l.reason, inv, err);
    }
    if (several) {
      if (!out.empty()) out += "\n";
      out += "# table " + table.name + " (" + std::string(FamilyName(listing.family)) + ")\n";
    }
    out += listing.texts[i];
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
