#include "tools/iptkit/cli_args.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <string_view>
#include <utility>

namespace iptkit::cli {
namespace {

constexpr std::string_view kVersion = "iptkit 0.1.0";

// Options (global or of a rule command) that consume the next argument. Used to find where the command word and
// the chain argument are before the option parser sees anything (see the header).
bool TakesValue(std::string_view arg) {
  return arg == "--netns" || arg == "--backend" || arg == "--wait" || arg == "-t" || arg == "--table";
}

bool IsOptionLike(std::string_view arg) { return arg.size() > 1 && arg[0] == '-'; }

bool IsUnsignedNumber(std::string_view arg) {
  return !arg.empty() && arg.size() <= 9 &&
         std::all_of(arg.begin(), arg.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// Raw values of the global options, filled by whichever (sub)command they were given to.
struct GlobalValues {
  std::string netns;
  std::string backend = "auto";
  double wait_seconds = 10;
  bool v4 = false;
  bool v6 = false;
  bool json = false;
  int verbosity = 0;
};

// The global options are added to the root and to every subcommand (rather than CLI11's fallthrough): CLI11
// classifies "-4"/"-6" as positional numbers in an app that does not define them itself.
void AddGlobalOptions(CLI::App* app, GlobalValues* g) {
  app->add_option("--netns", g->netns, "network namespace: a name (/run/netns/NAME) or a path (/proc/PID/ns/net)")
      ->type_name("NAME|PATH");
  app->add_option("--backend", g->backend,
                  "backend: auto (the iptables variant holding rules; native on nf_tables), native, nft, legacy, fake")
      ->check(CLI::IsMember({"auto", "native", "nft", "legacy", "fake"}))
      ->type_name("KIND");
  app->add_flag("-4,--ipv4", g->v4, "IPv4 (default)");
  app->add_flag("-6,--ipv6", g->v6, "IPv6");
  app->add_flag("--json", g->json, "JSON output");
  app->add_option("--wait", g->wait_seconds, "bound on waiting for the xtables lock (default 10)")
      ->check(CLI::Range(0.0, 3600.0))
      ->type_name("SECONDS");
  app->add_flag_function(
      "-v,--verbose", [g](std::int64_t n) { g->verbosity += static_cast<int>(n); },
      "more detail (the restore text sent, counters)");
}

void AddTableOption(CLI::App* app, Invocation* inv) {
  app->add_option("-t,--table", inv->table, "table (default filter)")->type_name("TABLE");
}

void AddDryRun(CLI::App* app, Invocation* inv) {
  app->add_flag("--dry-run", inv->dry_run, "validate and print the exact restore text; change nothing");
}

enum class Split { kNone, kRule, kRuleIndex, kDelete };

// Which rule commands end in a raw RULESPEC, and what precedes it.
Split SplitKind(std::string_view command) {
  if (command == "check" || command == "append") return Split::kRule;
  if (command == "insert" || command == "replace") return Split::kRuleIndex;
  if (command == "delete") return Split::kDelete;
  return Split::kNone;
}

// Drops one leading "--" separator.
std::vector<std::string> SpecTokens(std::vector<std::string>::const_iterator begin,
                                    std::vector<std::string>::const_iterator end) {
  if (begin != end && *begin == "--") ++begin;
  return std::vector<std::string>(begin, end);
}

// Splits `tail` at a token "--expect": RULESPEC before, expected RULESPEC after.
Status SplitExpect(const std::vector<std::string>& tail, bool allow_spec, Invocation* inv) {
  auto it = std::find(tail.begin(), tail.end(), "--expect");
  if (!allow_spec && it != tail.begin()) {
    return Status::InvalidArgument("unexpected argument '" + tail.front() +
                                   "' after the index: delete CHAIN N takes no RULESPEC (use --expect RULESPEC)");
  }
  inv->spec = SpecTokens(tail.begin(), it);
  if (it != tail.end()) {
    inv->expect = SpecTokens(it + 1, tail.end());
    if (inv->expect->empty()) return Status::InvalidArgument("--expect needs a RULESPEC");
  }
  return Status::Ok();
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

Result<Invocation> ParseCommandLine(const std::vector<std::string>& args) {
  Invocation inv;
  GlobalValues g;

  // 1. Find the command word and, for rule commands, where the RULESPEC starts.
  size_t command_pos = 0;
  while (command_pos < args.size() && IsOptionLike(args[command_pos]) && args[command_pos] != "--") {
    command_pos += TakesValue(args[command_pos]) ? 2 : 1;
  }
  if (command_pos >= args.size()) {
    // No command: name an unknown option rather than CLI11's "A subcommand is required".
    static const std::vector<std::string_view> kGlobalFlags = {"-4", "-6",        "--ipv4", "--ipv6", "--json",
                                                               "-v", "--verbose", "-h",     "--help", "--version"};
    for (size_t i = 0; i < args.size(); i += TakesValue(args[i]) ? 2 : 1) {
      std::string_view arg = args[i];
      std::string_view name = arg.substr(0, arg.find('='));
      bool known = TakesValue(name) || std::find(kGlobalFlags.begin(), kGlobalFlags.end(), name) != kGlobalFlags.end();
      if (!known && arg.find_first_not_of('v', 1) != std::string_view::npos) {
        return Status::InvalidArgument("unknown option '" + std::string(arg) + "' (see iptkit --help)");
      }
    }
  }
  static const std::vector<std::string_view> kCommands = {"info",   "list",   "save",   "restore", "check",
                                                          "append", "insert", "delete", "replace", "chain",
                                                          "plan",   "apply",  "txn"};
  if (command_pos < args.size() &&
      std::find(kCommands.begin(), kCommands.end(), args[command_pos]) == kCommands.end()) {
    return Status::InvalidArgument("unknown command '" + args[command_pos] + "' (see iptkit --help)");
  }
  size_t head_end = args.size();
  std::vector<std::string> tail;
  Split split = command_pos < args.size() ? SplitKind(args[command_pos]) : Split::kNone;
  bool delete_at = false;
  if (split != Split::kNone) {
    size_t chain_pos = command_pos + 1;
    while (chain_pos < args.size() && IsOptionLike(args[chain_pos]) && args[chain_pos] != "--") {
      chain_pos += TakesValue(args[chain_pos]) ? 2 : 1;
    }
    if (chain_pos < args.size() && args[chain_pos] != "--") {
      head_end = chain_pos + 1;
      if (split == Split::kRuleIndex && head_end < args.size() && !IsOptionLike(args[head_end])) {
        ++head_end;
      } else if (split == Split::kDelete && head_end < args.size() && IsUnsignedNumber(args[head_end])) {
        delete_at = true;
        ++head_end;
      }
      tail.assign(args.begin() + static_cast<std::ptrdiff_t>(std::min(head_end, args.size())), args.end());
      head_end = std::min(head_end, args.size());
    }
  }

  // 2. Parse the head with CLI11.
  CLI::App app{"iptkit: manage iptables rules (DESIGN.md §6b; see docs/cli.md)", "iptkit"};
  app.set_version_flag("--version", std::string(kVersion));
  app.require_subcommand(1);
  AddGlobalOptions(&app, &g);

  auto* info = app.add_subcommand("info", "backend in use, iptables variants and their tables, foreign nft chains");
  AddGlobalOptions(info, &g);

  auto* list = app.add_subcommand("list", "rules as a table (like iptables -L -n -v --line-numbers), or JSON");
  AddGlobalOptions(list, &g);
  list->add_option("TABLE", inv.table, "only this table");
  list->add_option("CHAIN", inv.chain, "only this chain");
  list->add_flag("-c,--counters", inv.counters, "show packet and byte counters");

  auto* save = app.add_subcommand("save", "canonical iptables-save text");
  AddGlobalOptions(save, &g);
  save->add_option("TABLE", inv.table, "only this table");
  save->add_flag("-c,--counters", inv.counters, "include counters");

  auto* restore = app.add_subcommand("restore", "load iptables-restore text as one transaction");
  AddGlobalOptions(restore, &g);
  restore->add_option("FILE", inv.arg, "file to read, or - for stdin")->required();
  restore->add_flag("-n,--noflush", inv.noflush, "add to the tables instead of replacing them");
  restore->add_flag("-c,--counters", inv.counters, "restore the [packets:bytes] counters of the text");
  AddDryRun(restore, &inv);

  std::map<std::string, CLI::App*> rule_commands;
  auto add_rule_command = [&](const std::string& name, const std::string& help, bool with_index) {
    auto* sub = app.add_subcommand(name, help);
    AddGlobalOptions(sub, &g);
    AddTableOption(sub, &inv);
    if (name != "check") AddDryRun(sub, &inv);
    sub->add_option("CHAIN", inv.chain, "chain")->required();
    if (with_index) {
      sub->add_option("N", inv.index, "rule number (1-based)")->required()->check(CLI::Range(1, 99999999));
    }
    sub->footer("RULESPEC follows CHAIN" + std::string(with_index ? " N" : "") +
                " (optionally after --), in iptables syntax: -s 10.0.0.0/8 -p tcp --dport 22 -j ACCEPT\n");
    rule_commands[name] = sub;
    return sub;
  };
  add_rule_command("check", "exit 0 if the rule is in the chain, 1 if not", false);
  add_rule_command("append", "append a rule", false);
  add_rule_command("insert", "insert a rule at position N", true);
  add_rule_command("delete", "delete the first rule equal to RULESPEC, or rule N [--expect RULESPEC]", delete_at);
  add_rule_command("replace", "replace rule N [--expect OLD-RULESPEC]", true);

  auto* chain = app.add_subcommand("chain", "chain operations");
  AddGlobalOptions(chain, &g);
  chain->require_subcommand(1);
  std::string second;
  auto add_chain_command = [&](const std::string& name, const std::string& help, bool chain_required) {
    auto* sub = chain->add_subcommand(name, help);
    AddGlobalOptions(sub, &g);
    AddTableOption(sub, &inv);
    AddDryRun(sub, &inv);
    auto* opt = sub->add_option("CHAIN", inv.chain, chain_required ? "chain" : "chain (default: every chain)");
    if (chain_required) opt->required();
    return sub;
  };
  auto* chain_create = add_chain_command("create", "create a user chain", true);
  auto* chain_delete = add_chain_command("delete", "delete an empty, unreferenced user chain", true);
  chain_delete->add_flag("--cascade", inv.cascade, "also delete the rules that jump to it");
  auto* chain_rename = add_chain_command("rename", "rename a user chain: CHAIN NEW", true);
  chain_rename->add_option("NEW", inv.arg, "new name")->required();
  auto* chain_flush = add_chain_command("flush", "delete every rule of CHAIN (or of the table)", false);
  auto* chain_zero = add_chain_command("zero", "zero the counters of CHAIN (or of the table)", false);
  auto* chain_policy = add_chain_command("policy", "set the policy of a builtin chain: CHAIN ACCEPT|DROP", true);
  chain_policy->add_option("POLICY", second, "ACCEPT or DROP")->required();

  auto add_file_command = [&](const std::string& name, const std::string& help, bool changing) {
    auto* sub = app.add_subcommand(name, help);
    AddGlobalOptions(sub, &g);
    sub->add_option("FILE", inv.arg, "JSON file, or - for stdin")->required();
    if (changing) AddDryRun(sub, &inv);
    return sub;
  };
  auto* plan = add_file_command("plan", "show what apply would change (declarative desired state)", false);
  auto* apply = add_file_command("apply", "make an owner's chains match the desired state", true);
  auto* txn = add_file_command("txn", "commit a JSON batch of ops as one transaction", true);

  std::vector<std::string> reversed(args.rbegin() + static_cast<std::ptrdiff_t>(args.size() - head_end), args.rend());
  try {
    app.parse(reversed);
  } catch (const CLI::CallForHelp&) {
    inv.kind = CommandKind::kHelp;
    inv.text = app.help();
    return inv;
  } catch (const CLI::CallForAllHelp&) {
    inv.kind = CommandKind::kHelp;
    inv.text = app.help("", CLI::AppFormatMode::All);
    return inv;
  } catch (const CLI::CallForVersion&) {
    inv.kind = CommandKind::kHelp;
    inv.text = std::string(kVersion) + "\n";
    return inv;
  } catch (const CLI::ParseError& e) {
    std::string what = e.what();
    if (what.empty()) what = e.get_name();
    return Status::InvalidArgument(what + " (see iptkit --help)");
  }

  // 3. Globals.
  if (g.v4 && g.v6) return Status::InvalidArgument("-4 and -6 are exclusive");
  inv.global.family = g.v6 ? Family::kIPv6 : Family::kIPv4;
  inv.global.netns = g.netns;
  inv.global.json = g.json;
  inv.global.verbosity = g.verbosity;
  if (!std::isfinite(g.wait_seconds)) return Status::InvalidArgument("--wait: not a number");
  inv.global.wait = std::chrono::milliseconds(static_cast<int64_t>(std::llround(g.wait_seconds * 1000)));
  static const std::map<std::string, BackendKind> kBackends = {{"auto", BackendKind::kAuto},
                                                               {"native", BackendKind::kNative},
                                                               {"nft", BackendKind::kNft},
                                                               {"legacy", BackendKind::kLegacy},
                                                               {"fake", BackendKind::kFake}};
  inv.global.backend = kBackends.at(g.backend);

  // 4. The command.
  if (info->parsed()) {
    inv.kind = CommandKind::kInfo;
  } else if (list->parsed()) {
    inv.kind = CommandKind::kList;
  } else if (save->parsed()) {
    inv.kind = CommandKind::kSave;
  } else if (restore->parsed()) {
    inv.kind = CommandKind::kRestore;
  } else if (plan->parsed()) {
    inv.kind = CommandKind::kPlan;
  } else if (apply->parsed()) {
    inv.kind = CommandKind::kApply;
  } else if (txn->parsed()) {
    inv.kind = CommandKind::kTxn;
  } else if (chain->parsed()) {
    if (chain_create->parsed()) inv.kind = CommandKind::kChainCreate;
    if (chain_delete->parsed()) inv.kind = CommandKind::kChainDelete;
    if (chain_rename->parsed()) inv.kind = CommandKind::kChainRename;
    if (chain_flush->parsed()) inv.kind = CommandKind::kChainFlush;
    if (chain_zero->parsed()) inv.kind = CommandKind::kChainZero;
    if (chain_policy->parsed()) {
      inv.kind = CommandKind::kChainPolicy;
      // Both `policy CHAIN DROP` (iptables -P order) and `policy DROP CHAIN` (DESIGN.md §6b) are accepted;
      // ACCEPT/DROP can never be a chain name, so the order is unambiguous.
      if ((inv.chain == "ACCEPT" || inv.chain == "DROP") && second != "ACCEPT" && second != "DROP") {
        std::swap(inv.chain, second);
      }
      if (second != "ACCEPT" && second != "DROP") {
        return Status::InvalidArgument("policy '" + second + "': expected ACCEPT or DROP");
      }
      inv.arg = second;
    }
  } else {
    for (const auto& [name, sub] : rule_commands) {
      if (!sub->parsed()) continue;
      if (name == "check") inv.kind = CommandKind::kCheck;
      if (name == "append") inv.kind = CommandKind::kAppend;
      if (name == "insert") inv.kind = CommandKind::kInsert;
      if (name == "replace") inv.kind = CommandKind::kReplace;
      if (name == "delete") inv.kind = delete_at ? CommandKind::kDeleteAt : CommandKind::kDelete;
    }
    if (inv.kind == CommandKind::kDeleteAt) {
      IPTKIT_RETURN_IF_ERROR(SplitExpect(tail, /*allow_spec=*/false, &inv));
    } else if (inv.kind == CommandKind::kReplace) {
      IPTKIT_RETURN_IF_ERROR(SplitExpect(tail, /*allow_spec=*/true, &inv));
    } else {
      inv.spec = SpecTokens(tail.begin(), tail.end());
    }
  }
  if (inv.kind == CommandKind::kHelp) return Status::Internal("no command recognized");
  return inv;
}

}  // namespace iptkit::cli
