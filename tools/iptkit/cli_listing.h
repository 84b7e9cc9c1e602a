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
#include <utility>
#include <vector>

#include "iptkit/ipset.h"
#include "iptkit/model.h"

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

}  // namespace iptkit::cli

#endif  // IPTKIT_TOOLS_IPTKIT_CLI_LISTING_H_
