#include "tools/iptkit/cli_set_args.h"

#include <cmath>
#include <cstdlib>
#include <map>

namespace iptkit::cli {
namespace {

struct SetOptionSpec {
  std::string_view flag;
  std::string_view help;
};

struct SetCommandSpec {
  SetVerb verb;
  std::string_view name;  // "list"
  std::string_view usage;
  std::string_view summary;
  std::string_view description;
  size_t min_positionals, max_positionals;  // SIZE_MAX: any number
  std::vector<SetOptionSpec> options;       // besides --dry-run (every command)
  std::vector<std::pair<std::string_view, std::string_view>> arguments;
  std::vector<std::string_view> examples;
};

constexpr size_t kAny = static_cast<size_t>(-1);

const std::vector<SetCommandSpec>& SetCommands() {
  static const std::vector<SetCommandSpec> kCommands = {
      {SetVerb::kList,
       "list",
       "set list [NAME] [--terse]",
       "list the IP sets (or one) with their entries",
       "Lists every set (or NAME): type, header options, size in memory, references, and the entries with their "
       "timeouts, counters and comments.",
       0,
       1,
       {{"--terse", "headers only, no entries"}},
       {{"NAME", "one set (default: all)"}},
       {"iptkit set list", "iptkit --json set list blocklist"}},
      {SetVerb::kCreate,
       "create",
       "set create NAME TYPE [OPTION [VALUE]]...",
       "create an IP set",
       "Creates a set. TYPE: hash:ip, hash:net, hash:ip,port, hash:net,port, hash:ip,port,ip, hash:ip,port,net, "
       "hash:net,iface, hash:ip,mark, hash:net,net, hash:net,port,net, hash:ip,mac, hash:mac, bitmap:ip, "
       "bitmap:ip,mac, bitmap:port, list:set. OPTIONS as ipset's: family inet|inet6, hashsize N, maxelem N, "
       "timeout N, counters, comment, skbinfo, netmask N, range FROM-TO (bitmaps), size N (list:set).",
       2,
       kAny,
       {},
       {{"NAME", "up to 31 characters"}, {"TYPE", "the set type"}, {"OPTION", "create options"}},
       {"iptkit set create blocklist hash:ip timeout 0 maxelem 200000",
        "iptkit set create ports bitmap:port range 1-1024 counters"}},
      {SetVerb::kAdd,
       "add",
       "set add NAME ENTRY [timeout N] [comment TEXT] [--no-refresh]",
       "add an entry",
       "Adds ENTRY. Re-adding an entry refreshes its timeout and replaces its comment (its counters are kept); "
       "--no-refresh fails on an existing entry instead. timeout: 0 to 2147483 seconds.",
       2,
       kAny,
       {{"--no-refresh", "fail when the entry is in the set"}},
       {{"NAME", "the set"}, {"ENTRY", "192.0.2.7, 10.0.0.0/8, 192.0.2.7,tcp:80, ..."}},
       {"iptkit set add blocklist 192.0.2.7 timeout 600 comment \"ids alert\"",
        "iptkit set add --no-refresh blocklist 192.0.2.7"}},
      {SetVerb::kDel,
       "del",
       "set del NAME ENTRY",
       "delete an entry",
       "Deletes ENTRY from the set (exit 3 when it is not in the set).",
       2,
       2,
       {},
       {{"NAME", "the set"}, {"ENTRY", "the entry"}},
       {"iptkit set del blocklist 192.0.2.7", "iptkit set del --dry-run blocklist 192.0.2.7"}},
      {SetVerb::kTest,
       "test",
       "set test NAME ENTRY",
       "test whether an entry is in a set (exit 0/1)",
       "Exit 0 when ENTRY is in the set (for hash:net: covered by an entry), 1 when it is not.",
       2,
       2,
       {},
       {{"NAME", "the set"}, {"ENTRY", "the entry"}},
       {"iptkit set test blocklist 192.0.2.7", "iptkit set test nets 10.1.2.3 && echo listed"}},
      {SetVerb::kLoad,
       "load",
       "set load NAME FILE|- [--grow]",
       "add many entries in one operation",
       "Adds the entries of FILE (- = stdin), one per line: ENTRY [timeout N] [comment TEXT] (or ipset's "
       "`add NAME ENTRY ...`); blank and # lines are skipped. Checks current + new <= maxelem first. The entries "
       "go into a temporary copy of the set that is swapped in: a rejected line (named) leaves the set as it was. "
       "Progress on a terminal.",
       2,
       2,
       {{"--grow", "when the set is too small: rebuild it with a larger maxelem/hashsize"}},
       {{"NAME", "the set"}, {"FILE", "the entries, - for stdin"}},
       {"iptkit set load blocklist feed.txt", "generate | iptkit set load --grow blocklist -"}},
      {SetVerb::kSync,
       "sync",
       "set sync NAME FILE|- [--diff]",
       "make a set hold exactly these entries",
       "The set becomes exactly the entries of FILE: a temporary set iptkit-tmp-<8hex> with every create option "
       "of the set is filled and swapped in atomically (rules never see a partial set), the old content "
       "destroyed. --diff adds and deletes only the difference instead (counters of kept entries stay).",
       2,
       2,
       {{"--diff", "apply only the difference (for small changes)"}},
       {{"NAME", "the set"}, {"FILE", "the entries, - for stdin"}},
       {"iptkit set sync blocklist feed.txt", "iptkit set sync --diff allow - < allow.txt"}},
      {SetVerb::kFlush,
       "flush",
       "set flush NAME",
       "remove every entry of a set",
       "Removes every entry.",
       1,
       1,
       {},
       {{"NAME", "the set"}},
       {"iptkit set flush blocklist", "iptkit set flush --dry-run blocklist"}},
      {SetVerb::kSwap,
       "swap",
       "set swap A B",
       "exchange the contents of two sets",
       "Exchanges the contents (and create options) of two sets of the same type and family, atomically for the "
       "rules that use them.",
       2,
       2,
       {},
       {{"A", "a set"}, {"B", "another set"}},
       {"iptkit set swap blocklist blocklist-new", "iptkit set swap --dry-run a b"}},
      {SetVerb::kRename,
       "rename",
       "set rename FROM TO",
       "rename a set",
       "Renames a set; refused while a rule or a list:set uses it.",
       2,
       2,
       {},
       {{"FROM", "the set"}, {"TO", "its new name"}},
       {"iptkit set rename bl blocklist", "iptkit set rename --dry-run a b"}},
      {SetVerb::kDestroy,
       "destroy",
       "set destroy NAME [--cascade]",
       "destroy a set",
       "Destroys a set; refused while a rule references it, unless --cascade: the rules that reference it (-m set "
       "--match-set NAME, -j SET --add-set/--del-set NAME, IPv4 and IPv6) are deleted first, then the set.",
       1,
       1,
       {{"--cascade", "delete the rules that reference the set first"}},
       {{"NAME", "the set"}},
       {"iptkit set destroy blocklist", "iptkit set destroy --cascade --dry-run blocklist"}},
  };
  return kCommands;
}

const SetCommandSpec* FindSetCommand(std::string_view name) {
  for (const SetCommandSpec& c : SetCommands()) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

constexpr SetOptionSpec kDryRun = {"--dry-run", "check everything against the kernel; change nothing"};

std::string Row(std::string_view label, std::string_view help, size_t width) {
  std::string out = "  " + std::string(label);
  if (out.size() < width + 2) {
    out += std::string(width + 2 - out.size(), ' ');
  } else {
    out += "  ";
  }
  return out + std::string(help) + "\n";
}

// Options taking a value among the globals.
bool GlobalTakesValue(std::string_view a) {
  return a == "--netns" || a == "--backend" || a == "--wait" || a == "-t" || a == "--table";
}

Status Usage(std::string message, const std::vector<std::string>& args, size_t index) {
  Status s = Status::InvalidArgument(std::move(message));
  if (index < args.size()) s = s.WithToken(args[index]).WithArgument(static_cast<int>(index) + 1);
  return s;
}

}  // namespace

bool IsSetCommandLine(const std::vector<std::string>& args) {
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") return false;
    if (GlobalTakesValue(a)) {
      ++i;
      continue;
    }
    if (a == "--daemon" && i + 1 < args.size() && args[i + 1].find('/') != std::string::npos) {
      ++i;
      continue;
    }
    if (a.size() > 1 && a[0] == '-') continue;
    return a == "set";
  }
  return false;
}

std::vector<std::pair<std::string, std::string>> SetCommandSummaries() {
  std::vector<std::pair<std::string, std::string>> out;
  for (const SetCommandSpec& c : SetCommands()) out.emplace_back("set " + std::string(c.name), c.summary);
  return out;
}

std::string SetCommandHelp(std::string_view command) {
  std::string_view sub =
      command.substr(command.find(' ') == std::string_view::npos ? command.size() : command.find(' ') + 1);
  const SetCommandSpec* c = FindSetCommand(sub);
  if (c == nullptr) {
    std::string out = "Usage: iptkit set SUBCOMMAND [OPTIONS] [ARGUMENTS]\n\nIP sets (ipset's words):\n";
    for (const SetCommandSpec& s : SetCommands()) out += Row("set " + std::string(s.name), s.summary, 14);
    out += "\nRun 'iptkit set SUBCOMMAND --help' for one of them.\n";
    return out;
  }
  std::string out = "Usage: iptkit " + std::string(c->usage) + "\n\n" + std::string(c->description) + "\n";
  if (!c->arguments.empty()) {
    out += "\nArguments:\n";
    for (const auto& [name, help] : c->arguments) out += Row(name, help, 22);
  }
  out += "\nOptions:\n";
  out += Row(kDryRun.flag, kDryRun.help, 22);
  for (const SetOptionSpec& o : c->options) out += Row(o.flag, o.help, 22);
  out += "\nExamples:\n";
  for (std::string_view e : c->examples) out += "  " + std::string(e) + "\n";
  out +=
      "\nGlobal options (--netns, --json, -q, -v; --backend and --wait for --cascade) and exit codes: iptkit "
      "--help\n";
  return out;
}

Result<SetInvocation> ParseSetCommandLine(const std::vector<std::string>& args) {
  SetInvocation inv;
  inv.args = args;
  bool help = false;
  bool seen_set = false;
  const SetCommandSpec* command = nullptr;
  std::vector<std::pair<std::string, size_t>> positionals;
  std::string backend;
  size_t backend_index = 0;
  std::optional<std::string> wait;
  size_t wait_index = 0;
  bool only_positionals = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    // After the ENTRY of add, and among create's OPTIONS, words are ipset's (timeout, comment TEXT): positionals.
    if (only_positionals || a.size() < 2 || a[0] != '-' ||
        (command != nullptr && positionals.size() >= 2 &&
         (command->verb == SetVerb::kCreate || command->verb == SetVerb::kAdd) && a.rfind("--", 0) != 0)) {
      if (!seen_set) {
        seen_set = true;  // "set" (IsSetCommandLine made sure)
        continue;
      }
      if (command == nullptr) {
        command = FindSetCommand(a);
        if (command == nullptr) {
          return Usage("unknown set command '" + a +
                           "' (expected list, create, add, del, test, load, sync, flush, swap, rename or destroy)",
                       args, i);
        }
        continue;
      }
      positionals.push_back({a, i});
      continue;
    }
    std::string name = a, value;
    bool has_value = false;
    if (size_t eq = a.find('='); a.rfind("--", 0) == 0 && eq != std::string::npos) {
      name = a.substr(0, eq);
      value = a.substr(eq + 1);
      has_value = true;
    }
    auto take_value = [&]() -> Result<std::string> {
      if (has_value) return value;
      if (i + 1 >= args.size()) return Usage(name + " needs a value", args, i);
      return args[++i];
    };
    auto option_of = [&](SetVerb verb) { return command != nullptr && command->verb == verb; };
    if (name == "--") {
      only_positionals = true;
    } else if (name == "-h" || name == "--help") {
      help = true;
    } else if (name == "--json") {
      inv.global.json = true;
    } else if (name == "-q" || name == "--quiet") {
      inv.global.quiet = true;
    } else if (name == "-v" || name == "--verbose") {
      ++inv.global.verbosity;
    } else if (name == "-4" || name == "--ipv4") {
      inv.global.family = Family::kIPv4;
      inv.global.family_given = true;
    } else if (name == "-6" || name == "--ipv6") {
      inv.global.family = Family::kIPv6;
      inv.global.family_given = true;
    } else if (name == "--netns") {
      IPTKIT_ASSIGN_OR_RETURN(inv.global.netns, take_value());
    } else if (name == "--backend") {
      IPTKIT_ASSIGN_OR_RETURN(backend, take_value());
      backend_index = i;
    } else if (name == "--wait") {
      IPTKIT_ASSIGN_OR_RETURN(wait, take_value());
      wait_index = i;
    } else if (name == "-t" || name == "--table") {
      return Usage(name + " does not apply to set commands: sets belong to no table", args, i);
    } else if (name == "--daemon") {
      // --daemon [SOCKET]: the socket is the next word when it is a path.
      inv.global.daemon = std::string(kDefaultDaemonSocket);
      if (has_value) {
        inv.global.daemon = value;
      } else if (i + 1 < args.size() && args[i + 1].find('/') != std::string::npos) {
        inv.global.daemon = args[++i];
      }
    } else if (name == "--dry-run") {
      inv.dry_run = true;
    } else if (name == "--no-refresh" && option_of(SetVerb::kAdd)) {
      inv.no_refresh = true;
    } else if (name == "--grow" && option_of(SetVerb::kLoad)) {
      inv.grow = true;
    } else if (name == "--diff" && option_of(SetVerb::kSync)) {
      inv.diff = true;
    } else if (name == "--cascade" && option_of(SetVerb::kDestroy)) {
      inv.cascade = true;
    } else if (name == "--terse" && option_of(SetVerb::kList)) {
      inv.terse = true;
    } else {
      return Usage("unknown option '" + a + "'" +
                       (command != nullptr ? " for set " + std::string(command->name) : std::string()) +
                       " (see iptkit set " + (command != nullptr ? std::string(command->name) + " " : "") + "--help)",
                   args, i);
    }
  }
  if (help) {
    inv.verb = SetVerb::kHelp;
    inv.text = SetCommandHelp(command == nullptr ? "set" : "set " + std::string(command->name));
    return inv;
  }
  if (command == nullptr) {
    return Usage(
        "set: expected list, create, add, del, test, load, sync, flush, swap, rename or destroy "
        "(see iptkit set --help)",
        args, args.size());
  }
  inv.verb = command->verb;
  if (positionals.size() < command->min_positionals) {
    return Usage(
        "set " + std::string(command->name) + ": missing arguments (usage: iptkit " + std::string(command->usage) + ")",
        args, args.size());
  }
  if (command->max_positionals != kAny && positionals.size() > command->max_positionals) {
    const auto& extra = positionals[command->max_positionals];
    return Usage("set " + std::string(command->name) + ": unexpected argument '" + extra.first + "' (usage: iptkit " +
                     std::string(command->usage) + ")",
                 args, extra.second);
  }
  if (!positionals.empty()) inv.name = positionals[0].first;
  if (positionals.size() > 1) inv.arg = positionals[1].first;
  for (size_t k = 2; k < positionals.size(); ++k) inv.extra.push_back(positionals[k].first);
  if (!backend.empty()) {
    static const std::map<std::string, BackendKind, std::less<>> kBackends = {
        {"auto", BackendKind::kAuto}, {"nft", BackendKind::kNft}, {"legacy", BackendKind::kLegacy}};
    auto it = kBackends.find(backend);
    if (it == kBackends.end()) {
      return Usage("--backend '" + backend + "': expected auto, nft or legacy", args, backend_index);
    }
    inv.global.backend = it->second;
  }
  if (wait) {
    char* end = nullptr;
    double seconds = std::strtod(wait->c_str(), &end);
    if (wait->empty() || *end != '\0' || !std::isfinite(seconds) || seconds < 0 || seconds > 3600) {
      return Usage("--wait '" + *wait + "': expected seconds from 0 to 3600", args, wait_index);
    }
    inv.global.wait = WaitMilliseconds(seconds);
  }
  return inv;
}

}  // namespace iptkit::cli
