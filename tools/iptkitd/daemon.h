// iptkitd's program logic (docs/daemon.md): the command line (docs/cli.md) on top of the config file, the
// `token` subcommands, and the daemon's run: store, service, API, listeners, until SIGTERM/SIGINT.
// main.cc only forwards argv; everything here returns an exit code and writes to the given streams.
#ifndef IPTKIT_TOOLS_IPTKITD_DAEMON_H_
#define IPTKIT_TOOLS_IPTKITD_DAEMON_H_

#include <iosfwd>
#include <string>
#include <vector>

namespace iptkit::daemon {

// Exit codes: 0 ok; 1 runtime failure (a listener, the store, the backend); 2 bad command line or config.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

// `args` without argv[0].
int Main(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace iptkit::daemon

#endif  // IPTKIT_TOOLS_IPTKITD_DAEMON_H_
