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
#include <string>
#include <utility>

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
Table WithBuiltinChains(const Table& table);

// The chains of `table` as `iptables -L -n` prints them with the flags of `format`.
std::string FormatChains(Family family, const Table& table, const ListingFormat& format);

// The chains of `table` as `iptables -S` prints them: "-P CHAIN POLICY" / "-N CHAIN" lines, then the "-A" lines
// (with counters: "-c PKTS BYTES" before the target, as iptables -S -v).
std::string FormatRulesS(const Table& table, const ListingFormat& format);

// The last column of one rule's row (" tcp dpt:22 /* ssh */"), each extension's part with a leading blank.
std::string FormatRuleDetails(Family family, const Rule& rule);

}  // namespace iptkit::cli

#endif  // IPTKIT_TOOLS_IPTKIT_CLI_LISTING_H_
