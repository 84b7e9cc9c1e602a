// The iptkit command line: argv → Invocation (what to do), with no side effects, and the help texts.
//
// Grammar (docs/cli.md is the reference):
//   iptkit [GLOBAL...] COMMAND [OPTIONS...] [ARGUMENTS...] [--] [RULESPEC...]
// Global options may come before the command or after it. Rule commands (check, append, insert, delete, replace)
// end with a RULESPEC in iptables syntax; it contains dash options of its own (`-s`, `-j`, `--dport`), so it is never
// given to the option parser: the command line is split at the chain (and index) argument and everything after it
// is the raw RULESPEC (a leading `--` is dropped). iptkit's own options therefore go before CHAIN; the runner says
// so when one turns up inside a RULESPEC. The table may be given before the command, as iptables users type it:
// `iptkit -t nat append POSTROUTING ...` and `iptkit append -t nat POSTROUTING ...` are the same.
// Thread-safety: stateless functions.
//
//   auto inv = iptkit::cli::ParseCommandLine({"-6", "-t", "mangle", "append", "PREROUTING", "-j", "ACCEPT"});
//   // inv->kind == CommandKind::kAppend, inv->table == "mangle", inv->spec == {"-j", "ACCEPT"}
#ifndef IPTKIT_TOOLS_IPTKIT_CLI_ARGS_H_
#define IPTKIT_TOOLS_IPTKIT_CLI_ARGS_H_

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "iptkit/firewall.h"
#include "iptkit/model.h"
#include "iptkit/status.h"

namespace iptkit::cli {

// Where iptkitd listens when --daemon is given without a socket.
inline constexpr std::string_view kDefaultDaemonSocket = "/run/iptkitd.sock";
// The longest --ttl (as the REST API: 10 years).
inline constexpr int64_t kMaxTtlSeconds = 315360000;

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
  bool family_given = false;  // -4 or -6 was given
  bool json = false;
  std::chrono::milliseconds wait = std::chrono::seconds(10);
  int verbosity = 0;   // -v, -vv
  bool quiet = false;  // -q: no progress, no warnings
  // --daemon [SOCKET]: send the command to a running iptkitd over its unix socket (the path; set when given).
  std::optional<std::string> daemon;
};

// How `list` prints (iptables -L flags).
struct ListFormat {
  bool numeric = false;       // -n: accepted for iptables' sake; iptkit never resolves names
  bool exact = false;         // -x: exact counters instead of K/M/G
  bool line_numbers = false;  // --line-numbers
  bool rules = false;         // -S: iptables -S lines instead of the table
};

struct Invocation {
  GlobalOptions global;
  CommandKind kind = CommandKind::kHelp;
  std::string text;               // kHelp: what to print
  std::string table;              // "" when not given: list/save mean all tables, rule/chain commands "filter"
  std::string chain;              // rule and chain commands; list's optional CHAIN
  int index = 0;                  // insert (default 1), delete-at, replace, list of one rule (1-based)
  std::vector<std::string> spec;  // RULESPEC tokens, raw
  std::optional<std::vector<std::string>> expect;  // delete-at/replace --expect RULESPEC
  std::string arg;           // rename: new name; policy: ACCEPT|DROP; restore/plan/apply/txn: FILE ("-" = stdin)
  bool counters = false;     // list (as -v), save, restore
  bool noflush = false;      // restore
  bool dry_run = false;      // every changing command
  bool cascade = false;      // chain delete
  bool allow_lossy = false;  // list, save: also tables that iptables-save cannot show faithfully (marked)
  bool unique = false;       // append, insert: add only when no equal rule is in the chain
  bool match_all = false;    // rule commands: an empty RULESPEC is meant (a rule that matches every packet)
  std::string owner;         // --owner: list filter; with --daemon the owner of added/deleted rules
  std::optional<int64_t> ttl_seconds;  // --ttl (with --daemon)
  ListFormat list;

  // The command line as given (without argv[0]) and where the RULESPEC and the --expect RULESPEC start in it, so
  // that an error about one of their arguments can mark it.
  std::vector<std::string> args;
  size_t spec_begin = 0;
  size_t expect_begin = 0;

  // The table a rule/chain command acts on.
  std::string TableOrFilter() const { return table.empty() ? "filter" : table; }
};

// Parses the arguments after argv[0]. Usage errors are InvalidArgument naming the offending argument, with
// details.token and details.argument (its 1-based position in `args`).
Result<Invocation> ParseCommandLine(const std::vector<std::string>& args);

// Whether the command changes the firewall (and so takes --dry-run).
bool IsChangingCommand(CommandKind kind);

// Whether `token` ("--dry-run", "-t", "--table=nat", ...) is an option iptkit takes for `kind` (a global option or
// one of the command's): when one turns up inside a RULESPEC the user meant it for iptkit, and is told that iptkit
// options go before CHAIN.
bool IsIptkitOption(std::string_view token, CommandKind kind);

// `iptkit --help` and `iptkit COMMAND --help` ("chain create" for the chain commands).
std::string RootHelp();
std::string CommandHelp(std::string_view command);
// Every command as `iptkit --help` lists it ("info", ..., "chain create", ...).
std::vector<std::string> CommandNames();

// --wait SECONDS (finite, 0..3600, checked by the caller) in milliseconds, rounded to the nearest. Not std::llround:
// that one symbol made every iptkit process load libm.
inline std::chrono::milliseconds WaitMilliseconds(double seconds) {
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000 + 0.5));
}

}  // namespace iptkit::cli

#endif  // IPTKIT_TOOLS_IPTKIT_CLI_ARGS_H_
