#include "tools/iptkit/cli_runner.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <sstream>
#include <utility>

#include "iptkit/desired.h"
#include "iptkit/dialect.h"
#include "iptkit/json.h"
#include "iptkit/model.h"
#include "iptkit/transaction.h"
#include "tools/iptkit/cli_format.h"

namespace iptkit::cli {
namespace {

constexpr JsonFormat kPretty{.indent = 2};

// Tokens that end up in restore lines: a newline or CR would let them forge extra lines (DESIGN.md §3).
Status CheckToken(std::string_view what, std::string_view value) {
  size_t bad = value.find_first_of(std::string_view("\n\r\0", 3));
  if (bad != std::string_view::npos) {
    return Status::InvalidArgument(std::string(what) + " '" + std::string(value.substr(0, bad)) +
                                   "...': contains a newline, CR or NUL byte at byte " + std::to_string(bad));
  }
  return Status::Ok();
}

Status CheckTable(std::string_view table) {
  IPTKIT_RETURN_IF_ERROR(CheckToken("table", table));
  for (const std::string& known : KnownTables()) {
    if (known == table) return Status::Ok();
  }
  return Status::InvalidArgument("unknown table '" + std::string(table) +
                                 "' (expected raw, mangle, filter, nat or security)");
}

// A chain argument: a builtin chain of the table, or a valid user chain name.
Status CheckChain(std::string_view table, std::string_view chain) {
  IPTKIT_RETURN_IF_ERROR(CheckToken("chain", chain));
  if (IsBuiltinChain(table, chain)) return Status::Ok();
  return ValidateChainName(chain);
}

// A user chain argument (create, delete, rename).
Status CheckUserChain(std::string_view table, std::string_view chain) {
  IPTKIT_RETURN_IF_ERROR(CheckToken("chain", chain));
  if (IsBuiltinChain(table, chain)) {
    return Status::InvalidArgument("chain '" + std::string(chain) + "' is a builtin chain of table " +
                                   std::string(table));
  }
  return ValidateChainName(chain);
}

// RULESPEC tokens → a validated Rule for `table`/`chain`.
Result<Rule> ParseSpec(const std::vector<std::string>& spec, Family family, std::string_view table,
                       std::string_view chain, std::string_view what) {
  for (size_t i = 0; i < spec.size(); ++i) {
    std::string name = std::string(what) + " argument " + std::to_string(i + 1);
    if (i > 0 && spec[i - 1].size() > 1 && spec[i - 1][0] == '-') name += " (value of " + spec[i - 1] + ")";
    IPTKIT_RETURN_IF_ERROR(CheckToken(name, spec[i]));
  }
  Result<Rule> rule = ParseRuleArgs(spec, family);
  if (!rule.ok()) return rule.status().WithContext(what);
  IPTKIT_RETURN_IF_ERROR(ValidateRule(*rule, family).WithContext(what));
  if (rule->target.kind == Target::Kind::kJump) {
    std::string_view hook = IsBuiltinChain(table, chain) ? chain : std::string_view();
    IPTKIT_RETURN_IF_ERROR(ValidateTargetPlacement(rule->target.name, table, hook, family).WithContext(what));
  }
  return rule;
}

Result<std::string> ReadInput(const std::string& file, std::istream& in) {
  if (file == "-") {
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (in.bad()) return Status::InvalidArgument("cannot read stdin");
    return text;
  }
  std::ifstream stream(file, std::ios::binary);
  if (!stream) return Status::InvalidArgument("cannot open '" + file + "': " + std::strerror(errno));
  std::string text((std::istreambuf_iterator<char>(stream)), std::istreambuf_iterator<char>());
  if (stream.bad()) return Status::InvalidArgument("cannot read '" + file + "'");
  return text;
}

// nlohmann-json throws; this adapter turns its errors into Status.
Result<nlohmann::json> ParseJsonText(const std::string& text) {
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    return Status::Internal(std::string("library produced invalid JSON: ") + e.what());
  }
}

void RemoveKeyRecursively(nlohmann::json& node, const std::string& key) {
  if (node.is_object()) {
    node.erase(key);
    for (auto& [k, v] : node.items()) RemoveKeyRecursively(v, key);
  } else if (node.is_array()) {
    for (auto& v : node) RemoveKeyRecursively(v, key);
  }
}

// The listed part of `all`: every table, one table, or one chain of it.
Result<Ruleset> SelectListing(Ruleset all, const Invocation& inv) {
  if (inv.table.empty()) return all;
  Ruleset out;
  out.family = all.family;
  const Table* table = all.FindTable(inv.table);
  if (table == nullptr) {
    // The table does not exist in the kernel yet: an empty listing, or NotFound for a user chain in it.
    if (!inv.chain.empty() && !IsBuiltinChain(inv.table, inv.chain)) {
      return Status::NotFound("chain '" + inv.chain + "' does not exist in table " + inv.table);
    }
    return out;
  }
  Table selected = *table;
  if (!inv.chain.empty()) {
    const Chain* chain = table->FindChain(inv.chain);
    if (chain == nullptr) {
      return Status::NotFound("chain '" + inv.chain + "' does not exist in table " + inv.table);
    }
    selected.chains = {*chain};
  }
  out.tables.push_back(std::move(selected));
  return out;
}

// Output of a changing command. Dry run: the exact restore text (or JSON). Done: nothing, the text with -v, or
// JSON.
Status PrintCommit(const Invocation& inv, const CommitResult& result, std::ostream& out) {
  if (inv.global.json) {
    out << CommitResultToJson(result, kPretty) << "\n";
  } else if (inv.dry_run || inv.global.verbosity > 0) {
    out << FormatCommitText(result);
  }
  return Status::Ok();
}

Result<Transaction> BuildTransaction(const Invocation& inv) {
  const Family family = inv.global.family;
  const std::string table = inv.TableOrFilter();
  IPTKIT_RETURN_IF_ERROR(CheckTable(table));
  Transaction txn;
  switch (inv.kind) {
    case CommandKind::kAppend:
    case CommandKind::kInsert:
    case CommandKind::kDelete: {
      IPTKIT_RETURN_IF_ERROR(CheckChain(table, inv.chain));
      IPTKIT_ASSIGN_OR_RETURN(Rule rule, ParseSpec(inv.spec, family, table, inv.chain, "RULESPEC"));
      if (inv.kind == CommandKind::kAppend) txn.Append(family, table, inv.chain, std::move(rule));
      if (inv.kind == CommandKind::kInsert) txn.Insert(family, table, inv.chain, inv.index, std::move(rule));
      if (inv.kind == CommandKind::kDelete) txn.Delete(family, table, inv.chain, std::move(rule));
      break;
    }
    case CommandKind::kDeleteAt:
    case CommandKind::kReplace: {
      IPTKIT_RETURN_IF_ERROR(CheckChain(table, inv.chain));
      std::optional<Rule> expect;
      if (inv.expect) {
        IPTKIT_ASSIGN_OR_RETURN(expect, ParseSpec(*inv.expect, family, table, inv.chain, "--expect"));
      }
      if (inv.kind == CommandKind::kDeleteAt) {
        txn.DeleteAt(family, table, inv.chain, inv.index, std::move(expect));
      } else {
        IPTKIT_ASSIGN_OR_RETURN(Rule rule, ParseSpec(inv.spec, family, table, inv.chain, "RULESPEC"));
        txn.Replace(family, table, inv.chain, inv.index, std::move(rule), std::move(expect));
      }
      break;
    }
    case CommandKind::kChainCreate:
      IPTKIT_RETURN_IF_ERROR(CheckUserChain(table, inv.chain));
      txn.CreateChain(family, table, inv.chain);
      break;
    case CommandKind::kChainDelete:
      IPTKIT_RETURN_IF_ERROR(CheckUserChain(table, inv.chain));
      txn.DeleteChain(family, table, inv.chain, inv.cascade);
      break;
    case CommandKind::kChainRename:
      IPTKIT_RETURN_IF_ERROR(CheckUserChain(table, inv.chain));
      IPTKIT_RETURN_IF_ERROR(CheckUserChain(table, inv.arg).WithContext("new name"));
      txn.RenameChain(family, table, inv.chain, inv.arg);
      break;
    case CommandKind::kChainFlush:
    case CommandKind::kChainZero:
      if (!inv.chain.empty()) IPTKIT_RETURN_IF_ERROR(CheckChain(table, inv.chain));
      if (inv.kind == CommandKind::kChainFlush) txn.Flush(family, table, inv.chain);
      if (inv.kind == CommandKind::kChainZero) txn.Zero(family, table, inv.chain);
      break;
    case CommandKind::kChainPolicy:
      IPTKIT_RETURN_IF_ERROR(CheckToken("chain", inv.chain));
      if (!IsBuiltinChain(table, inv.chain)) {
        return Status::InvalidArgument("policy: chain '" + inv.chain + "' is not a builtin chain of table " + table +
                                       "; only builtin chains have a policy");
      }
      txn.SetPolicy(family, table, inv.chain, inv.arg);
      break;
    default:
      return Status::Internal("not a transaction command");
  }
  return txn;
}

// Runs the command; returns the exit code for success paths (0, or 1 for a check miss).
Result<int> Execute(const Invocation& inv, Firewall& fw, std::istream& in, std::ostream& out) {
  const Family family = inv.global.family;
  const CommitOptions commit_options{.dry_run = inv.dry_run};
  switch (inv.kind) {
    case CommandKind::kInfo: {
      IPTKIT_ASSIGN_OR_RETURN(FirewallInfo info, fw.Info());
      out << (inv.global.json ? FirewallInfoToJson(info, kPretty) + "\n" : FormatInfo(info));
      return kExitOk;
    }

    case CommandKind::kList: {
      if (!inv.table.empty()) IPTKIT_RETURN_IF_ERROR(CheckTable(inv.table));
      if (!inv.chain.empty()) IPTKIT_RETURN_IF_ERROR(CheckToken("chain", inv.chain));
      std::optional<std::string> table;
      if (!inv.table.empty()) table = inv.table;
      IPTKIT_ASSIGN_OR_RETURN(Ruleset all, fw.List(family, table));
      IPTKIT_ASSIGN_OR_RETURN(Ruleset selected, SelectListing(std::move(all), inv));
      const bool counters = inv.counters || inv.global.verbosity > 0;
      if (inv.global.json) {
        IPTKIT_ASSIGN_OR_RETURN(nlohmann::json doc, ParseJsonText(RulesetToJson(selected)));
        if (!counters) RemoveKeyRecursively(doc, "counters");
        out << doc.dump(2) << "\n";
      } else {
        out << FormatListing(selected, counters);
      }
      return kExitOk;
    }

    case CommandKind::kSave: {
      std::optional<std::string> table;
      if (!inv.table.empty()) {
        IPTKIT_RETURN_IF_ERROR(CheckTable(inv.table));
        table = inv.table;
      }
      IPTKIT_ASSIGN_OR_RETURN(std::string text, fw.Save(family, table, inv.counters));
      if (inv.global.json) {
        nlohmann::json doc = {{"family", FamilyName(family)}, {"text", text}};
        if (table) doc["table"] = *table;
        out << doc.dump(2) << "\n";
      } else {
        out << text;
      }
      return kExitOk;
    }

    case CommandKind::kRestore: {
      IPTKIT_ASSIGN_OR_RETURN(std::string text, ReadInput(inv.arg, in));
      Firewall::RestoreOptions options;
      options.noflush = inv.noflush;
      options.counters = inv.counters;
      options.dry_run = inv.dry_run;
      IPTKIT_ASSIGN_OR_RETURN(CommitResult result, fw.Restore(family, text, options));
      IPTKIT_RETURN_IF_ERROR(PrintCommit(inv, result, out));
      return kExitOk;
    }

    case CommandKind::kCheck: {
      const std::string table = inv.TableOrFilter();
      IPTKIT_RETURN_IF_ERROR(CheckTable(table));
      IPTKIT_RETURN_IF_ERROR(CheckChain(table, inv.chain));
      IPTKIT_ASSIGN_OR_RETURN(Rule rule, ParseSpec(inv.spec, family, table, inv.chain, "RULESPEC"));
      IPTKIT_ASSIGN_OR_RETURN(bool present, fw.Check(family, table, inv.chain, rule));
      if (inv.global.json) {
        out << nlohmann::json({{"present", present}}).dump() << "\n";
      } else if (inv.global.verbosity > 0) {
        out << (present ? "present\n" : "absent\n");
      }
      return present ? kExitOk : kExitCheckMiss;
    }

    case CommandKind::kPlan:
    case CommandKind::kApply: {
      IPTKIT_ASSIGN_OR_RETURN(std::string text, ReadInput(inv.arg, in));
      Result<DesiredState> desired = DesiredStateFromJson(text);
      if (!desired.ok()) return desired.status().WithContext(inv.arg);
      Result<ApplyPlan> plan =
          inv.kind == CommandKind::kPlan ? fw.PlanApply(*desired) : fw.Apply(*desired, commit_options);
      if (!plan.ok()) return plan.status();
      if (inv.global.json) {
        out << ApplyPlanToJson(*plan, kPretty) << "\n";
      } else if (inv.kind == CommandKind::kPlan) {
        out << FormatPlan(*plan);
        if (inv.global.verbosity > 0) out << FormatCommitText(plan->tables);
      } else if (inv.dry_run) {
        out << FormatCommitText(plan->tables);
      } else if (inv.global.verbosity > 0) {
        out << FormatPlan(*plan) << FormatCommitText(plan->tables);
      } else {
        // Quiet on success, but never silent about what the user must know (e.g. the other iptables variant
        // holds rules on the same hooks: they judge packets too).
        for (const std::string& w : plan->warnings) out << "warning: " << w << "\n";
      }
      return kExitOk;
    }

    case CommandKind::kTxn: {
      IPTKIT_ASSIGN_OR_RETURN(std::string text, ReadInput(inv.arg, in));
      Result<Transaction> txn = TransactionFromJson(text);
      if (!txn.ok()) return txn.status().WithContext(inv.arg);
      IPTKIT_ASSIGN_OR_RETURN(CommitResult result, fw.Commit(*txn, commit_options));
      IPTKIT_RETURN_IF_ERROR(PrintCommit(inv, result, out));
      return kExitOk;
    }

    default: {
      IPTKIT_ASSIGN_OR_RETURN(Transaction txn, BuildTransaction(inv));
      IPTKIT_ASSIGN_OR_RETURN(CommitResult result, fw.Commit(txn, commit_options));
      IPTKIT_RETURN_IF_ERROR(PrintCommit(inv, result, out));
      return kExitOk;
    }
  }
}

// "iptkit: <message>" on one line: iptables' stderr inside a message may span lines.
void PrintError(const Status& status, std::ostream& err) {
  std::string message = status.message().empty() ? std::string(StatusCodeName(status.code())) : status.message();
  while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) message.pop_back();
  std::string line;
  for (char c : message) {
    if (c == '\n') {
      line += " | ";
    } else if (c != '\r') {
      line += c;
    }
  }
  err << "iptkit: " << line << "\n";
}

}  // namespace

int ExitCodeFor(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return kExitOk;
    case StatusCode::kInvalidArgument:
      return kExitInvalid;
    case StatusCode::kNotFound:
      return kExitNotFound;
    case StatusCode::kAlreadyExists:
    case StatusCode::kFailedPrecondition:
    case StatusCode::kAborted:
      return kExitConflict;
    case StatusCode::kUnavailable:
      return kExitBusy;
    case StatusCode::kPermissionDenied:
      return kExitPermission;
    case StatusCode::kInternal:
      return kExitInternal;
  }
  return kExitInternal;
}

int Run(const Invocation& inv, Firewall* firewall, std::istream& in, std::ostream& out, std::ostream& err) {
  std::unique_ptr<Firewall> owned;
  if (firewall == nullptr && inv.kind != CommandKind::kHelp) {
    FirewallOptions options;
    options.netns = inv.global.netns;
    options.backend = inv.global.backend;
    options.wait = inv.global.wait;
    Result<std::unique_ptr<Firewall>> opened = Firewall::Open(options);
    if (!opened.ok()) {
      PrintError(opened.status(), err);
      return ExitCodeFor(opened.status().code());
    }
    owned = std::move(opened).value();
    firewall = owned.get();
  }
  Result<int> code = inv.kind == CommandKind::kHelp ? Result<int>(kExitOk) : Execute(inv, *firewall, in, out);
  if (inv.kind == CommandKind::kHelp) out << inv.text;
  out.flush();
  if (!code.ok()) {
    PrintError(code.status(), err);
    return ExitCodeFor(code.status().code());
  }
  return *code;
}

int Main(const std::vector<std::string>& args, std::istream& in, std::ostream& out, std::ostream& err,
         Firewall* firewall) {
  Result<Invocation> inv = ParseCommandLine(args);
  if (!inv.ok()) {
    PrintError(inv.status(), err);
    return ExitCodeFor(inv.status().code());
  }
  return Run(*inv, firewall, in, out, err);
}

}  // namespace iptkit::cli
