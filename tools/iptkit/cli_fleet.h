// Runs `iptkit fleet ...` (docs/cli.md "Fleet", docs/fleet.md): writes and reads a group's keys in etcd and tells
// whether the group's hosts applied a revision.
//
//   iptkit fleet [--etcd URL[,URL...]] [--prefix P] [--etcd-user U --etcd-password-file F]
//                [--etcd-ca F] [--etcd-cert F --etcd-key F] COMMAND
//     put GROUP KEY FILE|-         KEY: .group, owners/OWNER, rules/ID; prints the revision
//     get GROUP [KEY]              the value of KEY, or every key of the group (JSON)
//     delete GROUP KEY [--force]   KEY may end in "/" (a prefix: owners/); --force writes GROUP/.force with it
//     status GROUP                 the hosts of the group and how far each got (JSON)
//     wait GROUP [--revision R] [--timeout D] [--hosts N]
//                                  until every reporting host of GROUP (at least N) has applied R (default: now)
// Exit codes: 0 done; 1 wait: a host failed a key at R (reported in its errors); 2 bad usage; 3 get: no such key;
// 5 etcd unreachable or wait timed out; 6 etcd refused (auth).
// Thread-safety: stateless.
#ifndef IPTKIT_TOOLS_IPTKIT_CLI_FLEET_H_
#define IPTKIT_TOOLS_IPTKIT_CLI_FLEET_H_

#include <istream>
#include <ostream>
#include <string>
#include <vector>

namespace iptkit::cli {

bool IsFleetCommandLine(const std::vector<std::string>& args);  // args[0] == "fleet"
int FleetMain(const std::vector<std::string>& args, std::istream& in, std::ostream& out, std::ostream& err);

}  // namespace iptkit::cli

#endif  // IPTKIT_TOOLS_IPTKIT_CLI_FLEET_H_
