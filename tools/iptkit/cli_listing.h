// `iptkit list` output: the layout of `iptables -L -n [-v] [-x] [--line-numbers]` and of `iptables -S [-v]`,
// computed from the model (so it works the same on every backend and for rules read through iptkitd).
//
// The columns target, prot, opt, in, out, source and destination are exactly iptables 1.8.9's. The last column
// holds what each extension's print function shows ("tcp dpt:22", "ctstate RELATED,ESTABLISHED", "/* comment */",
// "reject-with icmp-port-unreachable"); iptkit knows the printers of the common extensions (see kPrinted in
// cli_listing.cc) and shows any other extension as its iptables-save options ("hashlimit --hashlimit-upto 5/sec").
// Thread-safety: stateless functions.
//
//   ListingFormat format{.counters = true, .line_numbers = true};
//   std::cout << FormatChains(Family::kIPv4, WithBuiltinChains(*ruleset.FindTable("filter")), format);
#ifndef IPTKIT_TOOLS_IPTKIT_CLI_LISTING_H_
#define IPTKIT_TOOLS_IPTKIT_CLI_LISTING_H_

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "iptkit/ipset.h"
#include "iptkit/model.h"
#include "iptkit/status.h"
#include "src/backend/backend.h"

namespace iptkit::cli {

struct ListingFormat {
  bool counters = false;      // -v: pkts/bytes, in/out columns, policy counters (iptables -S -v: "-c P B")
  bool exact = false;         // -x: exact counters instead of K/M/G
  bool line_numbers = false;  // --line-numbers
  std::string chain = {};     // only this chain ("" = every chain)
  int rule = 0;               // only rule N of `chain`, without the chain header (0 = every rule)
  std::string owner = {};     // only the rules whose owner tag names this owner; chains without any are left out
  // Text appended to a rule's row, keyed by (chain, 1-based rule number): the TTL of a rule iptkitd manages.
  std::map<std::pair<std::string, int>, std::string> notes = {};
};

// `table` with every builtin chain of its name (policy ACCEPT, counters 0) that it lacks, in hook order before
// the user chains: iptables-nft creates base chains on first use, and a table the kernel does not have yet lists
// as iptables -L shows it (empty builtin chains).
Table WithBuiltinChains(Table table);

// The chains of `table` as `iptables -L -n` prints them with the flags of `format`.
std::string FormatChains(Family family, const Table& table, const ListingFormat& format);

// The chains of `table` as `iptables -S` prints them: "-P CHAIN POLICY" / "-N CHAIN" lines, then the "-A" lines
// (with counters: "-c PKTS BYTES" before the target, as iptables -S -v).
std::string FormatRulesS(const Table& table, const ListingFormat& format);

// ---- `iptkit list -S` from the save text, without the model ----
// iptables -S prints the rule lines iptables-save prints; so the save text (Firewall::Save, which the native backend
// prints straight from the kernel's binary rules) gives `list -S` without decoding a rule into the model.

// One table of a save text in FormatSave's form: its chains without rules (policy and counters of the ":CHAIN"
// lines), the reason of its "# iptkit: unrepresentable table" line, and its "-A" lines as they are.
struct SavedTable {
  Table table;
  std::vector<std::string_view> rule_lines;  // "-A CHAIN ...", without the newline (views into the text)
  struct Lossy {
    std::string chain;
    int rule = 0;  // 1-based
    std::string reason;
  };
  std::vector<Lossy> lossy;  // the "# iptkit: lossy rule N of CHAIN: why" marks
};

// The tables of `text` in its order. InvalidArgument for a line FormatSave does not print (the counters' form
// "[P:B] -A ..." included: `list -S -v` is printed from the model).
Result<std::vector<SavedTable>> ParseSavedTables(std::string_view text);

// FormatRulesS of the table `saved` holds (give it WithBuiltinChains's chains) for `format`'s chain; the rule lines
// are the saved ones byte for byte. format.counters, format.rule and format.owner must be unset.
std::string FormatRulesSFromSave(const SavedTable& saved, const ListingFormat& format);

// The last column of one rule's row (" tcp dpt:22 /* ssh */"), each extension's part with a leading blank.
std::string FormatRuleDetails(Family family, const Rule& rule);

// ---- The IP sets a ruleset references (`iptkit list`, `iptkit info`) ----

struct SetUse {
  std::string name;
  std::optional<SetInfo> info;  // nullopt: no such set in the kernel (a restore or rule would fail on it)
  struct Place {
    Family family = Family::kIPv4;
    std::string table;
    std::string chain;
    int rule = 0;  // 1-based
  };
  std::vector<Place> used_by;
};

// Every set the rules of `rulesets` use (SetsUsedBy), by name, with the rules using it; `info` left empty.
std::vector<SetUse> SetsReferenced(const std::vector<const Ruleset*>& rulesets);
// Fills each `info` from `sets` (without entries); a set the kernel does not have stays nullopt. Other errors
// (no permission, no ip_set module) are returned.
Status LookUpSets(const Ipsets& sets, std::vector<SetUse>& uses);
// "\nSets used by these rules:\n  blocklist  hash:ip  3 entries  filter INPUT 1\n  gone  MISSING  filter INPUT 2\n"
// ("" when no rule uses a set).
std::string FormatSetUses(const std::vector<SetUse>& uses);
// [{"name", "missing", "type", "entry_count", "references", "used_by": [{"family","table","chain","rule"}]}].
nlohmann::json SetUsesJson(const std::vector<SetUse>& uses);

// ---- `iptkit list` from rules handed over one at a time (Backend::ReadRules) ----

// What FormatChains (or FormatRulesS) prints for the tables listed, collected rule by rule as the rules are handed
// over, without keeping them: each chain's rows, how many rules jump to each chain, the lossy rules and the sets the
// rules use. Format then prints a table from its chains (WithBuiltinChains of the read's table without rules) and
// the collected rows: byte for byte what FormatChains / FormatRulesS print for the table with its rules.
class ListingCollector final : public backend::RuleVisitor {
 public:
  // `tables`: the tables listed (others' rules are passed by); `rules_s`: the iptables -S form.
  ListingCollector(Family family, std::vector<std::string> tables, ListingFormat format, bool rules_s);

  void OnRule(const std::string& table, const std::string& chain, const Rule& rule) override;
  void Reset() override;

  // Also collect the sets the rules use (SetUses); off by default.
  void CollectSets() { want_sets_ = true; }
  size_t RuleCount(const std::string& table, const std::string& chain) const;
  std::string Format(const Table& table) const;
  struct Lossy {
    std::string table, chain;
    int rule = 0;  // 1-based
    std::string reason;
  };
  const std::vector<Lossy>& lossy() const { return lossy_; }
  // SetsReferenced of the listed tables' rules.
  std::vector<SetUse> SetUses() const;

 private:
  struct Rows {
    std::string text;
    int count = 0;
    bool owned = false;  // a rule of format.owner's (every rule when no owner is asked)
  };
  Family family_;
  std::vector<std::string> tables_;
  ListingFormat format_;
  bool rules_s_;
  bool want_sets_ = false;
  std::map<std::string, Rows> chains_;                                            // "table\0chain"
  std::map<std::string, std::map<std::string, size_t, std::less<>>> references_;  // table → target → rules
  std::vector<Lossy> lossy_;
  std::vector<SetUse> sets_;
  std::map<std::string, size_t> set_index_;
  // The chain of the previous rule (rules come chain by chain).
  Rows* run_ = nullptr;
  std::map<std::string, size_t, std::less<>>* run_references_ = nullptr;
  std::string run_table_, run_chain_;
};

}  // namespace iptkit::cli

#endif  // IPTKIT_TOOLS_IPTKIT_CLI_LISTING_H_
