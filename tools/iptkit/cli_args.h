// The iptkit command line: argv → Invocation (what to do), with no side effects.
//
// Grammar (DESIGN.md §6b; docs/cli.md is the reference):
//   iptkit [GLOBAL...] COMMAND [COMMAND OPTIONS...] [POSITIONALS...] [--] [RULESPEC...]
// Rule commands (check, append, insert, delete, replace) end with a RULESPEC in iptables syntax. It contains
// dash options of its own (`-s`, `-j`, `--dport`), so it is never given to the option parser: the command line
// is split at the chain (and index) argument; everything after it is the raw RULESPEC (a leading `--` is
// dropped). Command options, including the global ones, must therefore come before the chain.
// Thread-safety: stateless functions.
//
//   auto inv = iptkit::cli::ParseCommandLine({"-6", "append", "-t", "mangle", "PREROUTING", "-j", "ACCEPT"});
//   // inv->kind == CommandKind::kAppend, inv->table == "mangle", inv->spec == {"-j", "ACCEPT"}
#ifndef IPTKIT_TOOLS_IPTKIT_CLI_ARGS_H_
#define IPTKIT_TOOLS_IPTKIT_CLI_ARGS_H_

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "iptkit/firewall.h"
#include "iptkit/model.h"
#include "iptkit/status.h"

namespace iptkit::cli {

enum class CommandKind {
  kHelp,  // --help / --version: print `text` and exit 0
  kInfo,
  kList,
  kSave,
  kRestore,
  kCheck,
  kAppend,
  kInsert,
  kDelete,    // by spec
  kDeleteAt,  // by index, optionally --expect RULESPEC
  kReplace,
  kChainCreate,
  kChainDelete,
  kChainRename,
  kChainFlush,
  kChainZero,
  kChainPolicy,
  kPlan,
  kApply,
  kTxn,
};

struct GlobalOptions {
  std::string netns;  // "" = the caller's network namespace
  BackendKind backend = BackendKind::kAuto;
  Family family = Family::kIPv4;
  bool json = false;
  std::chrono::milliseconds wait = std::chrono::seconds(10);
  int verbosity = 0;  // -v, -vv
};

struct Invocation {
  GlobalOptions global;
  CommandKind kind = CommandKind::kHelp;
  std::string text;               // kHelp: what to print
  std::string table;              // "" when not given: list/save mean all tables, rule/chain commands "filter"
  std::string chain;              // rule and chain commands; list's optional CHAIN
  int index = 0;                  // insert, delete-at, replace (1-based)
  std::vector<std::string> spec;  // RULESPEC tokens, raw
  std::optional<std::vector<std::string>> expect;  // delete-at/replace --expect RULESPEC
  std::string arg;        // rename: new name; policy: ACCEPT|DROP; restore/plan/apply/txn: FILE ("-" = stdin)
  bool counters = false;  // list, save, restore
  bool noflush = false;   // restore
  bool dry_run = false;   // every changing command
  bool cascade = false;   // chain delete

  // The table a rule/chain command acts on.
  std::string TableOrFilter() const { return table.empty() ? "filter" : table; }
};

// Parses the arguments after argv[0]. Usage errors are InvalidArgument naming the offending argument.
Result<Invocation> ParseCommandLine(const std::vector<std::string>& args);

// Whether the command changes the firewall (and so takes --dry-run).
bool IsChangingCommand(CommandKind kind);

}  // namespace iptkit::cli

#endif  // IPTKIT_TOOLS_IPTKIT_CLI_ARGS_H_
