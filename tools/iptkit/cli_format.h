// Human-readable output of the iptkit CLI: the `list` table, `info`, plans and commit texts.
// Thread-safety: stateless functions.
#ifndef IPTKIT_TOOLS_IPTKIT_CLI_FORMAT_H_
#define IPTKIT_TOOLS_IPTKIT_CLI_FORMAT_H_

#include <string>

#include "iptkit/desired.h"
#include "iptkit/firewall.h"
#include "iptkit/model.h"
#include "iptkit/transaction.h"

namespace iptkit::cli {

// Like `iptables -L -n -v --line-numbers`, one block per chain, but each rule as its canonical spec:
//
//   # table filter (ipv4)
//   Chain INPUT (policy DROP 12 packets, 3456 bytes)
//   num      pkts      bytes  rule
//   1           0          0  -s 10.0.0.0/8 -p tcp -m tcp --dport 22 -j ACCEPT
//
//   Chain MYAPP-IN (1 references)
//   ...
// Without `counters` the pkts/bytes columns and the policy counters are left out.
std::string FormatListing(const Ruleset& ruleset, bool counters);

// `info` as text: backend, namespace, per variant its version and tables with rule counts, foreign nft base
// chains, warnings.
std::string FormatInfo(const FirewallInfo& info);

// The restore text of every table of a commit, in commit order. When the commit spans both families, each block
// is preceded by a comment line "# ipv4" / "# ipv6" (iptables-restore ignores comment lines).
std::string FormatCommitText(const CommitResult& result);
std::string FormatCommitText(const std::vector<TableCommit>& tables);

// A plan for people: one line per step ("ipv4 filter: insert MYAPP-IN 3: -s ..."), then warnings as
// "warning: ..." lines; "no changes" when nothing would change.
std::string FormatPlan(const ApplyPlan& plan);

}  // namespace iptkit::cli

#endif  // IPTKIT_TOOLS_IPTKIT_CLI_FORMAT_H_
