#include "tools/iptkit/cli_args.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <utility>

#include "src/base/duration.h"
#include "tools/iptkit/cli_set_args.h"

namespace iptkit::cli {
namespace {

constexpr std::string_view kVersion = "iptkit 0.1.0";

// ---- The option and command tables: the parser and the help texts both come from them ----

enum class Opt {
  kNetns,
  kBackend,
  kIPv4,
  kIPv6,
  kJson,
  kWait,
  kVerbose,
  kQuiet,
  kDaemon,
  kTable,
  kHelp,
  kVersion,
  kDryRun,
  kUnique,
  kMatchAll,
  kOwner,
  kTtl,
  kCounters,
  kNoflush,
  kCascade,
  kNumeric,
  kExact,
  kLineNumbers,
  kRules,
  kAllowLossy,
};

struct OptionSpec {
  Opt id;
  std::string_view short_name;  // "-t", or ""
  std::string_view long_name;   // "--table"
  std::string_view value;       // "TABLE" when the option takes a value; "[SOCKET]": an optional value
  std::string_view help;
};

// Global options: accepted before the command and after it (before CHAIN for rule commands).
const std::vector<OptionSpec>& GlobalOptionSpecs() {
  static const std::vector<OptionSpec> kSpecs = {
      {Opt::kTable, "-t", "--table", "TABLE",
       "table: filter (default), nat, mangle, raw or security; also after the command"},
      {Opt::kIPv4, "-4", "--ipv4", "", "IPv4 (default)"},
      {Opt::kIPv6, "-6", "--ipv6", "", "IPv6 (not with plan, apply, txn: their JSON names the family)"},
      {Opt::kNetns, "", "--netns", "NAME|PATH",
       "network namespace: a name as `ip netns` uses it, or a path such as /proc/PID/ns/net"},
      {Opt::kBackend, "", "--backend", "KIND",
       "auto (default: the iptables variant that holds rules, in-process: native or native-legacy), native (nf_tables "
       "over netlink, in-process), native-legacy (x_tables through libiptc, in-process), nft (iptables-nft-restore), "
       "legacy (iptables-legacy-restore), or fake (in memory)"},
      {Opt::kDaemon, "", "--daemon", "[SOCKET]",
       "send the command to a running iptkitd over its unix socket (default /run/iptkitd.sock); SOCKET is taken "
       "from the next argument when it contains a '/', or as --daemon=SOCKET"},
      {Opt::kJson, "", "--json", "", "JSON output"},
      {Opt::kWait, "", "--wait", "SECONDS", "bound on waiting for the xtables lock (default 10)"},
      {Opt::kVerbose, "-v", "--verbose", "", "more detail: the restore text that was committed; counters in list"},
      {Opt::kQuiet, "-q", "--quiet", "", "no progress display and no warnings"},
      {Opt::kHelp, "-h", "--help", "", "help; iptkit COMMAND --help for one command"},
      {Opt::kVersion, "", "--version", "", "print the version"},
  };
  return kSpecs;
}

// Options of single commands.
const std::vector<OptionSpec>& CommandOptionSpecs() {
  static const std::vector<OptionSpec> kSpecs = {
      {Opt::kDryRun, "", "--dry-run", "", "validate and print the exact restore text; change nothing"},
      {Opt::kUnique, "", "--unique", "",
       "add the rule only when no equal rule is in the chain yet (checked and added in one transaction)"},
      {Opt::kMatchAll, "", "--match-all", "", "allow an empty RULESPEC: a rule that matches every packet"},
      {Opt::kOwner, "", "--owner", "NAME", "the owner of the rule (with --daemon: a rule iptkitd keeps)"},
      {Opt::kTtl, "", "--ttl", "DURATION",
       "with --daemon: iptkitd removes the rule after DURATION (90, 90s, 10m, 2h, 1d)"},
      {Opt::kCounters, "-c", "--counters", "", "counters"},
      {Opt::kNoflush, "-n", "--noflush", "", "add to the tables instead of replacing them"},
      {Opt::kCascade, "", "--cascade", "", "also delete the rules that jump to the chain, in the same commit"},
      {Opt::kNumeric, "-n", "--numeric", "", "numeric output (always: iptkit never resolves names)"},
      {Opt::kExact, "-x", "--exact", "", "exact counters instead of K/M/G (with -v)"},
      {Opt::kLineNumbers, "", "--line-numbers", "", "number the rules"},
      {Opt::kRules, "-S", "--rules", "", "print rules as iptables -S does (-P, -N, -A lines)"},
      {Opt::kAllowLossy, "", "--allow-lossy", "",
       "also show tables whose text would not restore the same rules (an nft set lookup, a lossy print), with "
       "those rules marked; refused with exit 4 otherwise"},
  };
  return kSpecs;
}

const OptionSpec& SpecOf(Opt id) {
  for (const auto* table : {&GlobalOptionSpecs(), &CommandOptionSpecs()}) {
    for (const OptionSpec& s : *table) {
      if (s.id == id) return s;
    }
  }
  return GlobalOptionSpecs().front();  // unreachable: every Opt is in a table
}

// How a command's arguments end.
enum class Tail {
  kPositionals,  // only positionals (FILE, CHAIN, ...)
  kRule,         // CHAIN RULESPEC (check, append)
  kRuleMaybeN,   // CHAIN [N] RULESPEC (insert; N defaults to 1 as iptables -I)
  kRuleN,        // CHAIN N RULESPEC [--expect OLD] (replace)
  kDelete,       // CHAIN RULESPEC | CHAIN N [--expect RULESPEC]
};

struct Positional {
  std::string_view name;
  std::string_view help;
};

struct CommandSpec {
  std::string_view name;  // "append", "chain create"
  CommandKind kind;
  std::string_view usage;  // after "iptkit "
  std::string_view summary;
  std::string_view description;
  Tail tail = Tail::kPositionals;
  size_t min_positionals = 0;
  size_t max_positionals = 0;
  std::vector<Positional> positionals = {};  // for the help text
  std::vector<Opt> options = {};             // command options (besides the global ones)
  bool uses_table = false;                   // -t applies
  std::vector<std::string_view> examples = {};
};

constexpr std::string_view kRulespecHelp =
    "the rule in iptables syntax, exactly what follows -A CHAIN for iptables (-s 10.0.0.0/8 -p tcp --dport 22 -j "
    "ACCEPT); everything after CHAIN, optionally after --";

const std::vector<CommandSpec>& Commands() {
  static const std::vector<CommandSpec> kCommands = {
      {.name = "info",
       .kind = CommandKind::kInfo,
       .usage = "info",
       .summary = "backend in use, iptables variants and their tables, foreign nft chains",
       .description = "Shows the backend in use, the namespace, for both iptables variants their version and the "
                      "tables they hold with rule counts, nft base chains of other tools, and warnings.",
       .examples = {"iptkit info", "iptkit --netns blue --json info"}},
      {.name = "list",
       .kind = CommandKind::kList,
       .usage = "list [OPTIONS] [TABLE] [CHAIN [N]]",
       .summary = "rules as iptables -L -n shows them (-v, -x, --line-numbers, -S), or JSON",
       .description = "Lists the rules like iptables -L -n (with -v: counters, in and out; --line-numbers: rule "
                      "numbers; -S: as iptables -S). Without TABLE or -t every table the kernel holds; builtin chains "
                      "are always shown, empty ones too.",
       .max_positionals = 3,
       .positionals = {{"TABLE", "only this table (or -t TABLE)"},
                       {"CHAIN", "only this chain"},
                       {"N", "only rule N of CHAIN"}},
       .options = {Opt::kNumeric, Opt::kExact, Opt::kLineNumbers, Opt::kRules, Opt::kCounters, Opt::kOwner,
                   Opt::kAllowLossy},
       .uses_table = true,
       .examples = {"iptkit list -v --line-numbers INPUT", "iptkit -t nat list -S POSTROUTING"}},
      {.name = "save",
       .kind = CommandKind::kSave,
       .usage = "save [OPTIONS] [TABLE]",
       .summary = "canonical iptables-save text",
       .description = "Prints the rules as iptables-save does (without its # comment lines). A table holding a rule "
                      "that text cannot show faithfully (restoring it would install another rule) is refused with "
                      "exit 4 naming the rule and why; --allow-lossy prints it with \"# iptkit:\" comment lines "
                      "marking such rules.",
       .max_positionals = 1,
       .positionals = {{"TABLE", "only this table (or -t TABLE)"}},
       .options = {Opt::kCounters, Opt::kAllowLossy},
       .uses_table = true,
       .examples = {"iptkit save > rules.v4", "iptkit -6 save -c filter"}},
      {.name = "restore",
       .kind = CommandKind::kRestore,
       .usage = "restore [OPTIONS] FILE|-",
       .summary = "load iptables-restore text as one transaction",
       .description = "Loads iptables-restore text: all tables or nothing. Without --noflush each table named in "
                      "the text is replaced whole. Large inputs show progress on stderr (a bar on a terminal).",
       .min_positionals = 1,
       .max_positionals = 1,
       .positionals = {{"FILE", "the text to load, or - for stdin"}},
       .options = {Opt::kNoflush, Opt::kCounters, Opt::kDryRun},
       .examples = {"iptkit restore rules.v4", "iptkit -6 restore --noflush - < extra.v6"}},
      {.name = "check",
       .kind = CommandKind::kCheck,
       .usage = "check [OPTIONS] CHAIN [--] RULESPEC...",
       .summary = "exit 0 if the rule is in the chain, 1 if not (iptables -C)",
       .description = "Exit 0 if an equal rule is in CHAIN, 1 if not; prints nothing.",
       .tail = Tail::kRule,
       .positionals = {{"CHAIN", "the chain to look in"}, {"RULESPEC", kRulespecHelp}},
       .options = {Opt::kMatchAll},
       .uses_table = true,
       .examples = {"iptkit check INPUT -p tcp --dport 22 -j ACCEPT && echo present",
                    "iptkit -t nat check POSTROUTING -o eth0 -j MASQUERADE"}},
      {.name = "append",
       .kind = CommandKind::kAppend,
       .usage = "append [OPTIONS] CHAIN [--] RULESPEC...",
       .summary = "append a rule (iptables -A)",
       .description = "Appends the rule to the end of CHAIN. With --unique nothing is added when an equal rule is "
                      "already in the chain.",
       .tail = Tail::kRule,
       .positionals = {{"CHAIN", "the chain to append to"}, {"RULESPEC", kRulespecHelp}},
       .options = {Opt::kDryRun, Opt::kUnique, Opt::kMatchAll, Opt::kOwner, Opt::kTtl},
       .uses_table = true,
       .examples = {"iptkit append INPUT -s 10.0.0.0/8 -p tcp --dport 22 -j ACCEPT",
                    "iptkit -t nat append --unique POSTROUTING -o eth0 -j MASQUERADE"}},
      {.name = "insert",
       .kind = CommandKind::kInsert,
       .usage = "insert [OPTIONS] CHAIN [N] [--] RULESPEC...",
       .summary = "insert a rule at position N (iptables -I)",
       .description = "Inserts the rule at position N of CHAIN (default 1; N = rules + 1 appends). With --unique "
                      "nothing is added when an equal rule is already anywhere in the chain.",
       .tail = Tail::kRuleMaybeN,
       .positionals = {{"CHAIN", "the chain to insert into"},
                       {"N", "the position, 1-based (default 1)"},
                       {"RULESPEC", kRulespecHelp}},
       .options = {Opt::kDryRun, Opt::kUnique, Opt::kMatchAll, Opt::kOwner, Opt::kTtl},
       .uses_table = true,
       .examples = {"iptkit insert INPUT -i lo -j ACCEPT", "iptkit insert --unique INPUT 2 -s 192.0.2.7 -j DROP"}},
      {.name = "delete",
       .kind = CommandKind::kDelete,
       .usage = "delete [OPTIONS] CHAIN [--] RULESPEC... | delete [OPTIONS] CHAIN N [--expect RULESPEC...]",
       .summary = "delete a rule by spec, or rule N (iptables -D)",
       .description = "Deletes the first rule equal to RULESPEC, or rule N; with --expect only if rule N is that "
                      "rule.",
       .tail = Tail::kDelete,
       .positionals = {{"CHAIN", "the chain to delete from"},
                       {"RULESPEC", kRulespecHelp},
                       {"N", "the rule number, 1-based"},
                       {"--expect RULESPEC", "delete rule N only if it is this rule"}},
       .options = {Opt::kDryRun, Opt::kMatchAll, Opt::kOwner},
       .uses_table = true,
       .examples = {"iptkit delete INPUT -s 10.0.0.0/8 -p tcp --dport 22 -j ACCEPT",
                    "iptkit delete INPUT 3 --expect -s 10.0.0.0/8 -p tcp --dport 22 -j ACCEPT"}},
      {.name = "replace",
       .kind = CommandKind::kReplace,
       .usage = "replace [OPTIONS] CHAIN N [--] RULESPEC... [--expect OLD-RULESPEC...]",
       .summary = "replace rule N (iptables -R)",
       .description = "Rule N of CHAIN becomes RULESPEC; with --expect only if rule N is OLD-RULESPEC.",
       .tail = Tail::kRuleN,
       .positionals = {{"CHAIN", "the chain"},
                       {"N", "the rule number, 1-based"},
                       {"RULESPEC", kRulespecHelp},
                       {"--expect OLD-RULESPEC", "replace rule N only if it is this rule"}},
       .options = {Opt::kDryRun, Opt::kMatchAll},
       .uses_table = true,
       .examples = {"iptkit replace INPUT 2 -p tcp --dport 2222 -j ACCEPT",
                    "iptkit replace INPUT 2 -p tcp --dport 2222 -j ACCEPT --expect -p tcp --dport 22 -j ACCEPT"}},
      {.name = "chain create",
       .kind = CommandKind::kChainCreate,
       .usage = "chain create [OPTIONS] CHAIN",
       .summary = "create a user chain (iptables -N)",
       .description = "Creates the user chain CHAIN.",
       .min_positionals = 1,
       .max_positionals = 1,
       .positionals = {{"CHAIN", "the new chain: 1-28 bytes, not a target name"}},
       .options = {Opt::kDryRun},
       .uses_table = true,
       .examples = {"iptkit chain create MYAPP-IN", "iptkit -t nat chain create MYAPP-DNAT"}},
      {.name = "chain delete",
       .kind = CommandKind::kChainDelete,
       .usage = "chain delete [OPTIONS] CHAIN",
       .summary = "delete an empty, unreferenced user chain (iptables -X)",
       .description = "Deletes the user chain CHAIN; it must be empty and unreferenced unless --cascade is given.",
       .min_positionals = 1,
       .max_positionals = 1,
       .positionals = {{"CHAIN", "the user chain"}},
       .options = {Opt::kDryRun, Opt::kCascade},
       .uses_table = true,
       .examples = {"iptkit chain delete MYAPP-IN", "iptkit chain delete --cascade MYAPP-IN"}},
      {.name = "chain rename",
       .kind = CommandKind::kChainRename,
       .usage = "chain rename [OPTIONS] CHAIN NEW",
       .summary = "rename a user chain (iptables -E)",
       .description = "Renames the user chain CHAIN to NEW; rules that jump to it follow.",
       .min_positionals = 2,
       .max_positionals = 2,
       .positionals = {{"CHAIN", "the user chain"}, {"NEW", "its new name"}},
       .options = {Opt::kDryRun},
       .uses_table = true,
       .examples = {"iptkit chain rename MYAPP-IN MYAPP-INPUT", "iptkit -t nat chain rename OLD NEW"}},
      {.name = "chain flush",
       .kind = CommandKind::kChainFlush,
       .usage = "chain flush [OPTIONS] [CHAIN]",
       .summary = "delete every rule of CHAIN, or of the table (iptables -F)",
       .description = "Deletes every rule of CHAIN, or of every chain of the table when CHAIN is left out.",
       .max_positionals = 1,
       .positionals = {{"CHAIN", "the chain (default: every chain of the table)"}},
       .options = {Opt::kDryRun},
       .uses_table = true,
       .examples = {"iptkit chain flush MYAPP-IN", "iptkit -t nat chain flush"}},
      {.name = "chain zero",
       .kind = CommandKind::kChainZero,
       .usage = "chain zero [OPTIONS] [CHAIN]",
       .summary = "zero the counters of CHAIN, or of the table (iptables -Z)",
       .description = "Zeroes the packet and byte counters of CHAIN, or of every chain of the table.",
       .max_positionals = 1,
       .positionals = {{"CHAIN", "the chain (default: every chain of the table)"}},
       .options = {Opt::kDryRun},
       .uses_table = true,
       .examples = {"iptkit chain zero INPUT", "iptkit -t mangle chain zero"}},
      {.name = "chain policy",
       .kind = CommandKind::kChainPolicy,
       .usage = "chain policy [OPTIONS] CHAIN ACCEPT|DROP",
       .summary = "set the policy of a builtin chain (iptables -P)",
       .description = "Sets the policy of the builtin chain CHAIN (also accepted in the order POLICY CHAIN).",
       .min_positionals = 2,
       .max_positionals = 2,
       .positionals = {{"CHAIN", "a builtin chain"}, {"POLICY", "ACCEPT or DROP"}},
       .options = {Opt::kDryRun},
       .uses_table = true,
       .examples = {"iptkit chain policy FORWARD DROP", "iptkit -6 chain policy INPUT ACCEPT"}},
      {.name = "plan",
       .kind = CommandKind::kPlan,
       .usage = "plan FILE.json|-",
       .summary = "show what apply would change (declarative desired state)",
       .description = "Prints what apply would change, one step per line (no changes: 'no changes').",
       .min_positionals = 1,
       .max_positionals = 1,
       .positionals = {{"FILE", "the desired state of one owner (JSON), or - for stdin"}},
       .examples = {"iptkit plan myapp.json", "iptkit -v plan - < myapp.json"}},
      {.name = "apply",
       .kind = CommandKind::kApply,
       .usage = "apply [OPTIONS] FILE.json|-",
       .summary = "make an owner's chains match the desired state",
       .description = "Makes the owner's chains and hooks match the document with the smallest change. Large "
                      "documents show progress on stderr (a bar on a terminal).",
       .min_positionals = 1,
       .max_positionals = 1,
       .positionals = {{"FILE", "the desired state of one owner (JSON), or - for stdin"}},
       .options = {Opt::kDryRun},
       .examples = {"iptkit apply myapp.json", "iptkit -v apply --dry-run myapp.json"}},
      {.name = "txn",
       .kind = CommandKind::kTxn,
       .usage = "txn [OPTIONS] FILE.json|-",
       .summary = "commit a JSON batch of ops as one transaction",
       .description = "Commits the ops of the JSON document as one transaction.",
       .min_positionals = 1,
       .max_positionals = 1,
       .positionals = {{"FILE", "{\"ops\": [...]} (JSON), or - for stdin"}},
       .options = {Opt::kDryRun},
       .examples = {"iptkit txn ops.json", "iptkit txn --dry-run - < ops.json"}},
  };
  return kCommands;
}

constexpr std::string_view kExitCodes =
    "Exit codes:\n"
    "  0   success\n"
    "  1   check: the rule is not in the chain\n"
    "  2   usage error or bad input; nothing was changed\n"
    "  3   a table, chain or rule does not exist, or index N is past the end of the chain\n"
    "  4   precondition or conflict: chain exists, chain not empty or referenced, rule N is not the expected one,\n"
    "      the rule belongs to an owner, the table is unrepresentable, a concurrent change won\n"
    "  5   busy: the xtables lock was held past --wait, or iptkitd is not reachable\n"
    "  6   permission denied: not root, no CAP_NET_ADMIN\n"
    "  10  internal error\n";

// ---- Small helpers ----

bool IsOptionLike(std::string_view arg) { return arg.size() > 1 && arg[0] == '-'; }

bool IsUnsignedNumber(std::string_view arg) {
  return !arg.empty() && arg.size() <= 9 &&
         std::all_of(arg.begin(), arg.end(), [](char c) { return c >= '0' && c <= '9'; });
}

bool IsKnownTable(std::string_view name) {
  const auto& tables = KnownTables();
  return std::find(tables.begin(), tables.end(), name) != tables.end();
}

std::string OptionLabel(const OptionSpec& s) {
  std::string label;
  if (!s.short_name.empty()) label += std::string(s.short_name) + ", ";
  label += s.long_name;
  if (!s.value.empty()) label += " " + std::string(s.value);
  return label;
}

// A line "  LABEL   help" with the help wrapped at 118 columns, continuation lines indented.
std::string HelpRow(std::string_view label, std::string_view help, size_t width) {
  std::string out = "  " + std::string(label);
  size_t col = out.size();
  const size_t indent = width + 4;
  if (col + 2 > indent) {
    out += "\n";
    col = 0;
  }
  out += std::string(indent - col, ' ');
  col = indent;
  size_t pos = 0;
  while (pos < help.size()) {
    size_t end = help.find(' ', pos);
    if (end == std::string_view::npos) end = help.size();
    std::string_view word = help.substr(pos, end - pos);
    if (col > indent && col + 1 + word.size() > 118) {
      out += "\n" + std::string(indent, ' ');
      col = indent;
    } else if (col > indent) {
      out += " ";
      ++col;
    }
    out += word;
    col += word.size();
    pos = end + 1;
  }
  return out + "\n";
}

// `text` wrapped at 118 columns.
std::string Wrap(std::string_view text) {
  std::string out;
  size_t col = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find(' ', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view word = text.substr(pos, end - pos);
    if (col > 0 && col + 1 + word.size() > 118) {
      out += "\n";
      col = 0;
    } else if (col > 0) {
      out += " ";
      ++col;
    }
    out += word;
    col += word.size();
    pos = end + 1;
  }
  return out;
}

const CommandSpec* FindCommand(std::string_view name) {
  for (const CommandSpec& c : Commands()) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

// ---- The parser ----

class Parser {
 public:
  explicit Parser(const std::vector<std::string>& args) : args_(args) { inv_.args = args; }

  Result<Invocation> Run();

 private:
  Status Usage(const std::string& message, size_t index) const {
    Status s = Status::InvalidArgument(message);
    if (index < args_.size()) s = s.WithToken(args_[index]).WithArgument(static_cast<int>(index) + 1);
    return s;
  }
  std::string SeeHelp() const {
    return command_ == nullptr ? " (see iptkit --help)" : " (see iptkit " + std::string(command_->name) + " --help)";
  }

  // Parses the option at args_[*i] (advancing *i past its value). `command_` null: before the command.
  Status ParseOption(size_t* i);
  Status Apply(const OptionSpec& spec, std::optional<std::string> value, size_t index, size_t value_index);
  const OptionSpec* Lookup(std::string_view name, bool* known_elsewhere) const;
  Status ParseRuleTail(size_t i);
  Status Finish(std::vector<std::pair<std::string, size_t>> positionals);

  const std::vector<std::string>& args_;
  Invocation inv_;
  const CommandSpec* command_ = nullptr;
  bool help_ = false;
  bool version_ = false;
  bool v4_ = false;
  size_t family_index_ = 0;
  size_t table_index_ = std::string::npos;
  std::string backend_ = "auto";
  size_t backend_index_ = std::string::npos;
  std::optional<std::string> wait_;
  size_t wait_index_ = 0;
  std::optional<size_t> owner_index_;
  std::optional<size_t> ttl_index_;
};

const OptionSpec* Parser::Lookup(std::string_view name, bool* known_elsewhere) const {
  *known_elsewhere = false;
  for (const OptionSpec& s : GlobalOptionSpecs()) {
    if (s.short_name == name || s.long_name == name) return &s;
  }
  for (const OptionSpec& s : CommandOptionSpecs()) {
    if (s.short_name != name && s.long_name != name) continue;
    if (command_ != nullptr &&
        std::find(command_->options.begin(), command_->options.end(), s.id) != command_->options.end()) {
      return &s;
    }
    *known_elsewhere = true;
  }
  return nullptr;
}

Status Parser::ParseOption(size_t* i) {
  const size_t index = *i;
  const std::string& arg = args_[index];
  std::vector<std::pair<std::string, std::optional<std::string>>> items;  // name, attached value
  if (arg.rfind("--", 0) == 0) {
    size_t eq = arg.find('=');
    if (eq == std::string::npos) {
      items.push_back({arg, std::nullopt});
    } else {
      items.push_back({arg.substr(0, eq), arg.substr(eq + 1)});
    }
  } else {
    // Short options, possibly combined as iptables users type them: -nvx, -vv, -tnat.
    for (size_t k = 1; k < arg.size(); ++k) {
      std::string name = std::string("-") + arg[k];
      bool elsewhere = false;
      const OptionSpec* spec = Lookup(name, &elsewhere);
      if (spec != nullptr && !spec->value.empty() && k + 1 < arg.size()) {
        items.push_back({name, arg.substr(k + 1)});
        break;
      }
      items.push_back({name, std::nullopt});
    }
  }
  for (auto& [name, attached] : items) {
    bool elsewhere = false;
    const OptionSpec* spec = Lookup(name, &elsewhere);
    if (spec == nullptr) {
      const bool first = &name == &items.front().first;
      std::string what = items.size() > 1 && !first ? "'" + name + "' in '" + arg + "'" : "'" + arg + "'";
      if (elsewhere) {
        std::string where = command_ == nullptr ? "before the command" : "to " + std::string(command_->name);
        return Usage("option " + what + " does not apply " + where + SeeHelp(), index);
      }
      return Usage("unknown option " + what + SeeHelp(), index);
    }
    std::optional<std::string> value = attached;
    if (spec->value == "[SOCKET]") {
      // An optional value: only attached, or the next argument when it looks like a path.
      if (!value && index + 1 < args_.size() && args_[index + 1].find('/') != std::string::npos &&
          !IsOptionLike(args_[index + 1])) {
        value = args_[++*i];
      }
    } else if (!spec->value.empty() && !value) {
      if (*i + 1 >= args_.size()) {
        return Usage("option '" + name + "' needs a value (" + std::string(spec->value) + ")" + SeeHelp(), index);
      }
      value = args_[++*i];
    } else if (spec->value.empty() && value) {
      return Usage("option '" + name + "' takes no value", index);
    }
    IPTKIT_RETURN_IF_ERROR(Apply(*spec, std::move(value), index, attached ? index : *i));
  }
  ++*i;
  return Status::Ok();
}

Status Parser::Apply(const OptionSpec& spec, std::optional<std::string> value, size_t index, size_t value_index) {
  GlobalOptions& g = inv_.global;
  switch (spec.id) {
    case Opt::kNetns:
      g.netns = *value;
      break;
    case Opt::kBackend:
      backend_ = *value;
      backend_index_ = value_index;
      break;
    case Opt::kIPv4:
    case Opt::kIPv6:
      if (spec.id == Opt::kIPv4) v4_ = true;
      if (spec.id == Opt::kIPv6) g.family = Family::kIPv6;
      if (v4_ && g.family == Family::kIPv6) return Usage("-4 and -6 are exclusive", index);
      g.family_given = true;
      family_index_ = index;
      break;
    case Opt::kJson:
      g.json = true;
      break;
    case Opt::kWait:
      wait_ = *value;
      wait_index_ = value_index;
      break;
    case Opt::kVerbose:
      ++g.verbosity;
      break;
    case Opt::kQuiet:
      g.quiet = true;
      break;
    case Opt::kDaemon:
      g.daemon = value.value_or(std::string(kDefaultDaemonSocket));
      if (g.daemon->empty()) return Usage("--daemon=: the socket path is empty", index);
      break;
    case Opt::kTable:
      inv_.table = *value;
      table_index_ = index;
      break;
    case Opt::kHelp:
      help_ = true;
      break;
    case Opt::kVersion:
      version_ = true;
      break;
    case Opt::kDryRun:
      inv_.dry_run = true;
      break;
    case Opt::kUnique:
      inv_.unique = true;
      break;
    case Opt::kMatchAll:
      inv_.match_all = true;
      break;
    case Opt::kOwner:
      inv_.owner = *value;
      owner_index_ = index;
      break;
    case Opt::kTtl: {
      Result<int64_t> ttl = base::ParseSeconds(*value, kMaxTtlSeconds);
      if (!ttl.ok()) return Usage("--ttl: " + ttl.status().message(), value_index);
      inv_.ttl_seconds = *ttl;
      ttl_index_ = index;
      break;
    }
    case Opt::kCounters:
      inv_.counters = true;
      break;
    case Opt::kNoflush:
      inv_.noflush = true;
      break;
    case Opt::kCascade:
      inv_.cascade = true;
      break;
    case Opt::kNumeric:
      inv_.list.numeric = true;
      break;
    case Opt::kExact:
      inv_.list.exact = true;
      break;
    case Opt::kLineNumbers:
      inv_.list.line_numbers = true;
      break;
    case Opt::kRules:
      inv_.list.rules = true;
      break;
    case Opt::kAllowLossy:
      inv_.allow_lossy = true;
      break;
  }
  return Status::Ok();
}

// Drops one leading "--" separator.
std::vector<std::string> SpecTokens(const std::vector<std::string>& args, size_t begin, size_t end, size_t* start) {
  if (begin < end && args[begin] == "--") ++begin;
  *start = begin;
  return std::vector<std::string>(args.begin() + static_cast<std::ptrdiff_t>(begin),
                                  args.begin() + static_cast<std::ptrdiff_t>(end));
}

Status Parser::ParseRuleTail(size_t i) {
  const Tail tail = command_->tail;
  // Options up to CHAIN.
  while (i < args_.size() && IsOptionLike(args_[i]) && args_[i] != "--") {
    IPTKIT_RETURN_IF_ERROR(ParseOption(&i));
  }
  if (help_ || version_) return Status::Ok();
  if (i >= args_.size() || args_[i] == "--") {
    return Usage(std::string(command_->name) + ": CHAIN is missing" + SeeHelp(), i);
  }
  inv_.chain = args_[i++];
  bool by_index = false;
  if (i < args_.size() && IsUnsignedNumber(args_[i]) &&
      (tail == Tail::kRuleMaybeN || tail == Tail::kRuleN || tail == Tail::kDelete)) {
    long n = std::strtol(args_[i].c_str(), nullptr, 10);
    if (n < 1) return Usage("rule number '" + args_[i] + "': rule numbers start at 1", i);
    inv_.index = static_cast<int>(n);
    by_index = true;
    ++i;
  } else if (tail == Tail::kRuleN) {
    std::string what = i < args_.size() ? "'" + args_[i] + "' is not a rule number" : "the rule number N is missing";
    return Usage("replace CHAIN N RULESPEC: " + what + SeeHelp(), i);
  } else if (tail == Tail::kRuleMaybeN) {
    inv_.index = 1;  // iptables -I CHAIN RULESPEC inserts at the top
  }
  // A lone --help after CHAIN is help, as with iptables.
  if (i + 1 == args_.size() && (args_[i] == "--help" || args_[i] == "-h")) {
    help_ = true;
    return Status::Ok();
  }
  const size_t end = args_.size();
  if (tail == Tail::kDelete) inv_.kind = by_index ? CommandKind::kDeleteAt : CommandKind::kDelete;
  if (tail == Tail::kRuleN || (tail == Tail::kDelete && by_index)) {
    size_t expect = i;
    while (expect < end && args_[expect] != "--expect") ++expect;
    if (tail == Tail::kDelete && expect != i) {
      return Usage("unexpected argument '" + args_[i] +
                       "' after the rule number: delete CHAIN N takes no RULESPEC (use --expect RULESPEC)",
                   i);
    }
    inv_.spec = SpecTokens(args_, i, expect, &inv_.spec_begin);
    if (expect < end) {
      inv_.expect = SpecTokens(args_, expect + 1, end, &inv_.expect_begin);
      if (inv_.expect->empty()) return Usage("--expect needs a RULESPEC", expect);
    }
  } else {
    inv_.spec = SpecTokens(args_, i, end, &inv_.spec_begin);
  }
  return Status::Ok();
}

Status Parser::Finish(std::vector<std::pair<std::string, size_t>> positionals) {
  const CommandSpec& c = *command_;
  if (positionals.size() > c.max_positionals) {
    return Usage("unexpected argument '" + positionals[c.max_positionals].first + "'" + SeeHelp(),
                 positionals[c.max_positionals].second);
  }
  if (positionals.size() < c.min_positionals) {
    return Usage(
        std::string(c.name) + ": " + std::string(c.positionals[positionals.size()].name) + " is missing" + SeeHelp(),
        args_.size());
  }
  auto at = [&](size_t k) -> const std::string& { return positionals[k].first; };
  switch (c.kind) {
    case CommandKind::kList: {
      size_t k = 0;
      if (table_index_ == std::string::npos && k < positionals.size() && IsKnownTable(at(k))) inv_.table = at(k++);
      if (k < positionals.size()) inv_.chain = at(k++);
      if (k < positionals.size()) {
        if (!IsUnsignedNumber(at(k)) || std::strtol(at(k).c_str(), nullptr, 10) < 1) {
          return Usage("list: '" + at(k) + "' is not a rule number (1, 2, ...)", positionals[k].second);
        }
        inv_.index = static_cast<int>(std::strtol(at(k).c_str(), nullptr, 10));
        ++k;
      }
      if (k < positionals.size()) {
        return Usage("unexpected argument '" + at(k) + "'" + SeeHelp(), positionals[k].second);
      }
      break;
    }
    case CommandKind::kSave:
      if (!positionals.empty()) {
        if (table_index_ != std::string::npos) {
          return Usage("save: give the table once (-t TABLE or TABLE)", positionals[0].second);
        }
        inv_.table = at(0);
      }
      break;
    case CommandKind::kRestore:
    case CommandKind::kPlan:
    case CommandKind::kApply:
    case CommandKind::kTxn:
      inv_.arg = at(0);
      break;
    case CommandKind::kChainRename:
      inv_.chain = at(0);
      inv_.arg = at(1);
      break;
    case CommandKind::kChainPolicy: {
      std::string chain = at(0);
      std::string policy = at(1);
      size_t policy_index = positionals[1].second;
      // Both `policy CHAIN DROP` (iptables -P order) and `policy DROP CHAIN` are accepted; ACCEPT/DROP can never be
      // a chain name, so the order is unambiguous.
      if ((chain == "ACCEPT" || chain == "DROP") && policy != "ACCEPT" && policy != "DROP") {
        std::swap(chain, policy);
        policy_index = positionals[0].second;
      }
      if (policy != "ACCEPT" && policy != "DROP") {
        return Usage("policy '" + policy + "': expected ACCEPT or DROP", policy_index);
      }
      inv_.chain = chain;
      inv_.arg = policy;
      break;
    }
    default:
      if (!positionals.empty()) inv_.chain = at(0);
      break;
  }
  return Status::Ok();
}

Result<Invocation> Parser::Run() {
  size_t i = 0;
  while (i < args_.size() && IsOptionLike(args_[i]) && args_[i] != "--") {
    IPTKIT_RETURN_IF_ERROR(ParseOption(&i));
  }
  if (i < args_.size() && args_[i] != "--") {
    std::string name = args_[i];
    if (name == "chain") {
      if (i + 1 < args_.size() && !IsOptionLike(args_[i + 1])) {
        name += " " + args_[i + 1];
        command_ = FindCommand(name);
        if (command_ == nullptr) {
          return Usage(
              "unknown chain command '" + args_[i + 1] + "' (expected create, delete, rename, flush, zero or policy)",
              i + 1);
        }
        i += 2;
      } else if (!help_ && !(i + 1 < args_.size() && (args_[i + 1] == "--help" || args_[i + 1] == "-h"))) {
        return Usage("chain: expected create, delete, rename, flush, zero or policy" + SeeHelp(), i + 1);
      } else {
        help_ = true;
        ++i;
      }
    } else {
      command_ = FindCommand(name);
      if (command_ == nullptr) return Usage("unknown command '" + name + "'" + SeeHelp(), i);
      ++i;
    }
  } else if (i < args_.size()) {
    return Usage("'--' before the command" + SeeHelp(), i);
  }

  std::vector<std::pair<std::string, size_t>> positionals;
  if (command_ != nullptr) {
    inv_.kind = command_->kind;
    if (command_->tail != Tail::kPositionals) {
      IPTKIT_RETURN_IF_ERROR(ParseRuleTail(i));
    } else {
      bool only_positionals = false;
      while (i < args_.size()) {
        if (!only_positionals && args_[i] == "--") {
          only_positionals = true;
          ++i;
        } else if (!only_positionals && IsOptionLike(args_[i])) {
          IPTKIT_RETURN_IF_ERROR(ParseOption(&i));
        } else {
          positionals.push_back({args_[i], i});
          ++i;
        }
      }
    }
  }

  if (version_) {
    inv_.kind = CommandKind::kHelp;
    inv_.text = std::string(kVersion) + "\n";
    return std::move(inv_);
  }
  if (help_) {
    inv_.kind = CommandKind::kHelp;
    inv_.text = command_ == nullptr ? RootHelp() : CommandHelp(command_->name);
    return std::move(inv_);
  }
  if (command_ == nullptr) return Usage("no command given (see iptkit --help)", args_.size());
  if (command_->tail == Tail::kPositionals) IPTKIT_RETURN_IF_ERROR(Finish(std::move(positionals)));

  // Globals that need checking once everything is read.
  static const std::map<std::string, BackendKind, std::less<>> kBackends = {
      {"auto", BackendKind::kAuto}, {"native", BackendKind::kNative}, {"native-legacy", BackendKind::kNativeLegacy},
      {"nft", BackendKind::kNft},   {"legacy", BackendKind::kLegacy}, {"fake", BackendKind::kFake}};
  if (inv_.global.daemon && backend_index_ != std::string::npos) {
    return Usage("--backend does not apply with --daemon: iptkitd uses its own backend", backend_index_ - 1);
  }
  auto backend = kBackends.find(backend_);
  if (backend == kBackends.end()) {
    return Usage("--backend '" + backend_ + "': expected auto, native, native-legacy, nft, legacy or fake",
                 backend_index_);
  }
  inv_.global.backend = backend->second;
  if (wait_) {
    char* end = nullptr;
    double seconds = std::strtod(wait_->c_str(), &end);
    if (wait_->empty() || end == nullptr || *end != '\0' || !std::isfinite(seconds) || seconds < 0 || seconds > 3600) {
      return Usage("--wait '" + *wait_ + "': expected seconds from 0 to 3600", wait_index_);
    }
    inv_.global.wait = WaitMilliseconds(seconds);
  }
  const CommandKind kind = inv_.kind;
  if (table_index_ != std::string::npos && !command_->uses_table) {
    return Usage("-t/--table does not apply to " + std::string(command_->name) +
                     (kind == CommandKind::kRestore ? ": the text names its tables (*filter ...)"
                                                    : ": the JSON names the table of each op"),
                 table_index_);
  }
  if (inv_.global.family_given &&
      (kind == CommandKind::kPlan || kind == CommandKind::kApply || kind == CommandKind::kTxn)) {
    return Usage(std::string(inv_.global.family == Family::kIPv6 ? "-6" : "-4") + " does not apply to " +
                     std::string(command_->name) + ": the family comes from the JSON (\"family\": \"ipv6\")",
                 family_index_);
  }
  if (ttl_index_ && !inv_.global.daemon) {
    return Usage("--ttl needs a running iptkitd, which removes the rule when the time is up: add --daemon [SOCKET]",
                 *ttl_index_);
  }
  if (owner_index_ && !inv_.global.daemon && kind != CommandKind::kList) {
    return Usage("--owner with " + std::string(command_->name) +
                     " needs a running iptkitd, which keeps owned rules: add --daemon [SOCKET] (without it, owners "
                     "change their rules with apply)",
                 *owner_index_);
  }
  if (kind == CommandKind::kList && inv_.index > 0 && inv_.chain.empty()) {
    return Usage("list: a rule number needs a CHAIN", args_.size());
  }
  return std::move(inv_);
}

}  // namespace

bool IsChangingCommand(CommandKind kind) {
  switch (kind) {
    case CommandKind::kRestore:
    case CommandKind::kAppend:
    case CommandKind::kInsert:
    case CommandKind::kDelete:
    case CommandKind::kDeleteAt:
    case CommandKind::kReplace:
    case CommandKind::kChainCreate:
    case CommandKind::kChainDelete:
    case CommandKind::kChainRename:
    case CommandKind::kChainFlush:
    case CommandKind::kChainZero:
    case CommandKind::kChainPolicy:
    case CommandKind::kApply:
    case CommandKind::kTxn:
      return true;
    default:
      return false;
  }
}

bool IsIptkitOption(std::string_view token, CommandKind kind) {
  std::string_view name = token.substr(0, token.find('='));
  if (name.empty() || name == "-" || name == "--") return false;
  for (const OptionSpec& s : GlobalOptionSpecs()) {
    if (name == s.short_name || name == s.long_name) return true;
  }
  if (kind == CommandKind::kDeleteAt) kind = CommandKind::kDelete;
  for (const CommandSpec& c : Commands()) {
    if (c.kind != kind) continue;
    for (Opt id : c.options) {
      const OptionSpec& s = SpecOf(id);
      if (name == s.short_name || name == s.long_name) return true;
    }
  }
  return false;
}

Result<Invocation> ParseCommandLine(const std::vector<std::string>& args) { return Parser(args).Run(); }

std::vector<std::string> CommandNames() {
  std::vector<std::string> out;
  for (const CommandSpec& c : Commands()) out.emplace_back(c.name);
  return out;
}

std::string RootHelp() {
  std::string out;
  out +=
      "iptkit: the iptables rules of one network namespace, changed in atomic transactions (docs/cli.md, "
      "iptkit(8))\n\n";
  out += "Usage: iptkit [GLOBAL OPTIONS] COMMAND [OPTIONS] [ARGUMENTS] [--] [RULESPEC...]\n\n";
  out += "Commands:\n";
  for (const CommandSpec& c : Commands()) out += HelpRow(c.name, c.summary, 14);
  for (const auto& [name, summary] : SetCommandSummaries()) out += HelpRow(name, summary, 14);
  out += "\nGlobal options (before the command, or after it before CHAIN):\n";
  for (const OptionSpec& s : GlobalOptionSpecs()) out += HelpRow(OptionLabel(s), s.help, 22);
  out +=
      "\nRULESPEC is iptables syntax (-s 10.0.0.0/8 -p tcp --dport 22 -j ACCEPT) and comes last: iptkit's own\n"
      "options go before CHAIN.\n\n";
  out += kExitCodes;
  out += "\nRun 'iptkit COMMAND --help' for the arguments, options and examples of one command.\n";
  return out;
}

std::string CommandHelp(std::string_view command) {
  if (command == "set" || command.rfind("set ", 0) == 0) return SetCommandHelp(command);
  const CommandSpec* c = FindCommand(command);
  if (c == nullptr) return RootHelp();
  std::string out = "Usage: iptkit " + std::string(c->usage) + "\n\n" + Wrap(c->description) + "\n";
  if (!c->positionals.empty()) {
    out += "\nArguments:\n";
    for (const Positional& p : c->positionals) out += HelpRow(p.name, p.help, 22);
  }
  std::vector<const OptionSpec*> options;
  if (c->uses_table) options.push_back(&SpecOf(Opt::kTable));
  if (c->kind == CommandKind::kList) options.push_back(&SpecOf(Opt::kVerbose));
  for (Opt id : c->options) options.push_back(&SpecOf(id));
  if (!options.empty()) {
    out += "\nOptions:\n";
    for (const OptionSpec* s : options) {
      std::string_view help = s->help;
      if (s->id == Opt::kCounters && c->kind == CommandKind::kList) help = "the same as -v";
      if (s->id == Opt::kCounters && c->kind == CommandKind::kSave) help = "[packets:bytes] before each rule";
      if (s->id == Opt::kCounters && c->kind == CommandKind::kRestore) help = "restore the [packets:bytes] of the text";
      if (s->id == Opt::kVerbose && c->kind == CommandKind::kList) help = "counters, in and out columns";
      if (s->id == Opt::kOwner && c->kind == CommandKind::kList) help = "only the rules of this owner";
      if (s->id == Opt::kOwner && c->kind == CommandKind::kDelete) {
        help = "with --daemon: delete this owner's rule (without it, an owned rule is not deleted)";
      }
      out += HelpRow(OptionLabel(*s), help, 22);
    }
  }
  out += "\nExamples:\n";
  for (std::string_view e : c->examples) out += "  " + std::string(e) + "\n";
  out +=
      "\nGlobal options (-t, -4/-6, --netns, --backend, --daemon, --json, --wait, -v, -q) and exit codes: iptkit "
      "--help\n";
  return out;
}

}  // namespace iptkit::cli
