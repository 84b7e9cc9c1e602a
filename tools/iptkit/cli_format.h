// Human-readable output of the iptkit CLI: `info`, plans and commit texts (the listing is cli_listing.h).
// Thread-safety: stateless functions.
#ifndef IPTKIT_TOOLS_IPTKIT_CLI_FORMAT_H_
#define IPTKIT_TOOLS_IPTKIT_CLI_FORMAT_H_

#include <string>

#include "iptkit/desired.h"
#include "iptkit/firewall.h"
#include "iptkit/model.h"
#include "iptkit/transaction.h"

namespace iptkit::cli {

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
