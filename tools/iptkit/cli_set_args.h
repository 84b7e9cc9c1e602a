// `iptkit set ...`: the ipset commands of the CLI (docs/cli.md, "Sets"): argv → SetInvocation, and their help.
//
// The words follow ipset(8) so that people type what they know: `iptkit set create blocklist hash:ip timeout 0`,
// `iptkit set add blocklist 192.0.2.7 timeout 600 comment "ids"`. The global options of iptkit (--netns, --json,
// -q, -v, --backend and --wait for --cascade) go before or after `set`.
// Thread-safety: stateless functions.
#ifndef IPTKIT_TOOLS_IPTKIT_CLI_SET_ARGS_H_
#define IPTKIT_TOOLS_IPTKIT_CLI_SET_ARGS_H_

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "iptkit/status.h"
#include "tools/iptkit/cli_args.h"

namespace iptkit::cli {

enum class SetVerb { kHelp, kList, kCreate, kAdd, kDel, kTest, kLoad, kSync, kFlush, kSwap, kRename, kDestroy };

struct SetInvocation {
  GlobalOptions global;
  SetVerb verb = SetVerb::kHelp;
  std::string text;                // kHelp: what to print
  std::string name;                // the set
  std::string arg;                 // create: TYPE; add/del/test: ENTRY; load/sync: FILE; swap/rename: the other set
  std::vector<std::string> extra;  // create: OPTION [VALUE]...; add: timeout N / comment TEXT
  bool dry_run = false;
  bool no_refresh = false;        // add
  bool grow = false;              // load
  bool diff = false;              // sync: minimal difference instead of a swap
  bool cascade = false;           // destroy
  bool terse = false;             // list: without entries
  std::vector<std::string> args;  // the command line as given
};

// Whether the command of the command line (the first word that is not an option or an option's value) is `set`.
bool IsSetCommandLine(const std::vector<std::string>& args);
// Usage errors are InvalidArgument with details.token and details.argument.
Result<SetInvocation> ParseSetCommandLine(const std::vector<std::string>& args);

// The rows `iptkit --help` lists under "Commands:" ("set list", summary).
std::vector<std::pair<std::string, std::string>> SetCommandSummaries();
// `iptkit set SUB --help` ("set add"); `iptkit set --help` for "set".
std::string SetCommandHelp(std::string_view command);

}  // namespace iptkit::cli

#endif  // IPTKIT_TOOLS_IPTKIT_CLI_SET_ARGS_H_
