// Checks and conversions shared by the local runner (cli_runner.cc) and the iptkitd client (cli_daemon.cc): argument
// checks, the RULESPEC as a validated Rule, reading FILE arguments, the listing, and the owner of a rule that a
// delete without owner missed.
// Thread-safety: stateless functions.
#ifndef IPTKIT_TOOLS_IPTKIT_CLI_SUPPORT_H_
#define IPTKIT_TOOLS_IPTKIT_CLI_SUPPORT_H_

#include <istream>
#include <map>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "iptkit/model.h"
#include "iptkit/status.h"
#include "tools/iptkit/cli_args.h"
#include "tools/iptkit/cli_listing.h"

namespace iptkit::cli {

// A table, chain or token argument: no newline, CR or NUL (they would forge restore lines), a known table, a
// builtin chain or a valid user chain name.
Status CheckToken(std::string_view what, std::string_view value);
Status CheckTable(std::string_view table);
Status CheckChain(std::string_view table, std::string_view chain);
Status CheckUserChain(std::string_view table, std::string_view chain);

// The RULESPEC of `inv` (or its --expect RULESPEC) as a validated Rule for its family, table and chain. Errors name
// the argument with details.token and details.argument = its 1-based position in inv.args; an iptkit option found
// inside the RULESPEC is told to go before CHAIN; an empty RULESPEC needs --match-all.
Result<Rule> ParseSpec(const Invocation& inv, bool expect);

// FILE ("-" = stdin) as text; InvalidArgument naming the file when it cannot be read.
Result<std::string> ReadInput(const std::string& file, std::istream& in);

// `rule` without its owner tag (unchanged when it has none).
Rule WithoutOwnerTag(const Rule& rule);

// The first rule of `chain` that equals `canonical` except for an owner tag: the owned rule a delete by spec
// without the owner did not match. {0, nullopt} when there is none.
std::pair<int, std::optional<Rule::Tag>> FindOwnedTwin(const Chain& chain, const Rule& canonical);

// FailedPrecondition saying who owns rule `index` of `chain` and how to change it (details.owner set).
Status OwnedRuleError(const std::string& table, const std::string& chain, int index, const Rule::Tag& tag,
                      bool through_daemon);

// The text of `list` for `all` (every table the kernel holds, of inv.global.family): the tables, chain and rule
// the invocation selects, as iptables -L -n or -S shows them (builtin chains always present). Warnings (a table
// iptkit cannot read faithfully) go to `err` unless quiet. NotFound for a chain or rule number that does not exist.
// `notes`: text appended to rows, keyed by (table, chain, 1-based rule number).
using RowNotes = std::map<std::tuple<std::string, std::string, int>, std::string>;
Result<std::string> RenderListing(Ruleset all, const Invocation& inv, const RowNotes& notes, std::ostream& err);
// The same for tables SelectListing already selected.
std::string RenderSelectedListing(const Ruleset& selected, const Invocation& inv, const RowNotes& notes,
                                  std::ostream& err);

// The tables `list`/`save` show: the selected one (as a fresh table when the kernel does not have it yet), or
// every table of `all` plus filter, in iptables' table order. NotFound for a user chain or rule N that is missing.
// The tables are moved out of `all` (pass a copy, or std::move it when it is not used afterwards).
Result<Ruleset> SelectListing(Ruleset all, const Invocation& inv);

// Whether `list` is printed from the save text (RenderRulesSFromSave): -S without counters, rule number, owner or
// JSON. The others are printed from the model.
bool ListsFromSaveText(const Invocation& inv);
// RenderListing's text for such an invocation, from `save` (Firewall::Save of the tables listed: inv.table, filter
// for a chain alone, or all): the same bytes, the same warnings and errors, without a model rule.
Result<std::string> RenderRulesSFromSave(std::string_view save, Family family, const Invocation& inv,
                                         std::ostream& err);

// `list` (text) from the rules handed over one at a time (Backend::ReadRules): the tables listed (WithBuiltinChains,
// without rules), each one's text as FormatChains / FormatRulesS print it, its lossy rules and the sets the listed
// rules use (SetsReferenced, for the table form only).
struct RulesListing {
  Family family = Family::kIPv4;
  std::vector<Table> tables;
  std::vector<std::string> texts;  // one per table
  std::vector<ListingCollector::Lossy> lossy;
  std::vector<SetUse> sets;
};
// nullopt when a table cannot be shown faithfully and --allow-lossy is not given: the model's listing
// (Firewall::List) refuses it with the reason. NotFound as SelectListing.
Result<std::optional<RulesListing>> ListFromRules(backend::Backend& backend, Family family,
                                                  const std::optional<std::string>& table, const Invocation& inv);
// RenderSelectedListing's text and warnings for such a listing.
std::string RenderRulesListing(const RulesListing& listing, const Invocation& inv, std::ostream& err);

// Narrows a JSON listing ({"family", "tables": [...]}) to what the invocation selects: only CHAIN, only rule N,
// only the rules of --owner (rules keep their "index", chains without such rules are dropped); drops "counters"
// unless -v or --counters.
void NarrowListJson(nlohmann::json& doc, const Invocation& inv);

}  // namespace iptkit::cli

#endif  // IPTKIT_TOOLS_IPTKIT_CLI_SUPPORT_H_
