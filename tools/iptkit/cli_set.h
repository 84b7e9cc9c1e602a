// Runs `iptkit set ...` (cli_set_args.h) through the library's Ipsets (include/iptkit/ipset.h) and prints the
// result: human text, or JSON with --json. Errors go to `err` as "iptkit: <message>" with the exit codes of
// cli_runner.h (test: 0 in the set, 1 not in it).
// Thread-safety: stateless.
#ifndef IPTKIT_TOOLS_IPTKIT_CLI_SET_H_
#define IPTKIT_TOOLS_IPTKIT_CLI_SET_H_

#include <istream>
#include <ostream>
#include <string>
#include <vector>

#include "tools/iptkit/cli_runner.h"
#include "tools/iptkit/cli_set_args.h"

namespace iptkit::cli {

int RunSetCommand(const SetInvocation& inv, std::istream& in, std::ostream& out, std::ostream& err,
                  const Environment& env);
// ParseSetCommandLine + RunSetCommand.
int SetMain(const std::vector<std::string>& args, std::istream& in, std::ostream& out, std::ostream& err,
            const Environment& env);

}  // namespace iptkit::cli

#endif  // IPTKIT_TOOLS_IPTKIT_CLI_SET_H_
