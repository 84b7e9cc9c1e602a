#include "tools/iptkit/cli_runner.h"

#include <linux/capability.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <utility>

#include "iptkit/desired.h"
#include "iptkit/dialect.h"
#include "iptkit/json.h"
#include "iptkit/model.h"
#include "iptkit/transaction.h"
#include "tools/iptkit/cli_daemon.h"
#include "tools/iptkit/cli_format.h"
#include "tools/iptkit/cli_listing.h"
#include "tools/iptkit/cli_progress.h"
#include "tools/iptkit/cli_set.h"
#include "tools/iptkit/cli_support.h"

namespace iptkit::cli {
namespace {

constexpr JsonFormat kPretty{.indent = 2};

// nlohmann-json throws; this adapter turns its errors into Status.
Result<nlohmann::json> ParseJsonText(const std::string& text) {
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    return Status::Internal(std::string("library produced invalid JSON: ") + e.what());
  }
}

// Whether the process holds capability `cap` in its effective set.
bool HasCapability(int cap) {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  if (syscall(SYS_capget, &header, data) != 0) return false;
  return (data[cap / 32].effective & (1u << (cap % 32))) != 0;
}

// Reading or changing netfilter needs CAP_NET_ADMIN (iptables-save too); entering a namespace CAP_SYS_ADMIN.
Status CheckPrivileges(const Invocation& inv, const Environment& env) {
  const bool net_admin = env.has_net_admin.value_or(HasCapability(CAP_NET_ADMIN));
  if (!net_admin) {
    return Status::PermissionDenied(
        "iptkit needs root (or the CAP_NET_ADMIN capability) to read or change iptables rules; run it as root, "
        "or through a running iptkitd that allows your user: iptkit --daemon [SOCKET] ...");
  }
  if (!inv.global.netns.empty() && !env.has_sys_admin.value_or(HasCapability(CAP_SYS_ADMIN))) {
    return Status::PermissionDenied("entering network namespace '" + inv.global.netns +
                                    "' needs root (the CAP_SYS_ADMIN capability)");
  }
  return Status::Ok();
}

// The list as JSON: the selected tables (what SelectListing returned), narrowed as NarrowListJson says.
Result<std::string> ListJson(const Ruleset& selected, const Invocation& inv) {
  IPTKIT_ASSIGN_OR_RETURN(nlohmann::json doc, ParseJsonText(RulesetToJson(selected)));
  NarrowListJson(doc, inv);
  return doc.dump(2) + "\n";
}

// The sets the rules of `rulesets` use, looked up in the namespace; a failed look-up is a warning (nothing shown).
std::vector<SetUse> LookedUp(std::vector<SetUse> uses, const Invocation& inv, std::ostream& err) {
  if (Status s = LookUpSets(Ipsets(inv.global.netns), uses); !s.ok()) {
    if (!inv.global.quiet) err << "iptkit: warning: could not list the IP sets the rules use: " << s.message() << "\n";
    return {};
  }
  return uses;
}

std::vector<SetUse> UsedSets(const std::vector<const Ruleset*>& rulesets, const Invocation& inv, std::ostream& err) {
  return LookedUp(SetsReferenced(rulesets), inv, err);
}

// `text` (a JSON object) with "sets": the sets used (when any).
Result<std::string> WithSets(const std::string& text, const std::vector<SetUse>& uses) {
  if (uses.empty()) return text;
  IPTKIT_ASSIGN_OR_RETURN(nlohmann::json doc, ParseJsonText(text));
  doc["sets"] = SetUsesJson(uses);
  return doc.dump(2) + "\n";
}

// Output of a changing command. Dry run: the exact restore text (or JSON). Done: nothing, the text with -v, or
// JSON.
void PrintCommit(const Invocation& inv, const CommitResult& result, std::ostream& out) {
  if (inv.global.json) {
    out << CommitResultToJson(result, kPretty) << "\n";
  } else if (inv.dry_run || inv.global.verbosity > 0) {
    out << FormatCommitText(result);
    if (inv.unique && result.tables.empty()) out << "an equal rule is in the chain already: nothing to add\n";
  }
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
      IPTKIT_ASSIGN_OR_RETURN(Rule rule, ParseSpec(inv, /*expect=*/false));
      if (inv.kind == CommandKind::kAppend) {
        inv.unique ? txn.AppendUnique(family, table, inv.chain, std::move(rule))
                   : txn.Append(family, table, inv.chain, std::move(rule));
      }
      if (inv.kind == CommandKind::kInsert) {
        inv.unique ? txn.InsertUnique(family, table, inv.chain, inv.index, std::move(rule))
                   : txn.Insert(family, table, inv.chain, inv.index, std::move(rule));
      }
      if (inv.kind == CommandKind::kDelete) txn.Delete(family, table, inv.chain, std::move(rule));
      break;
    }
    case CommandKind::kDeleteAt:
    case CommandKind::kReplace: {
      IPTKIT_RETURN_IF_ERROR(CheckChain(table, inv.chain));
      std::optional<Rule> expect;
      if (inv.expect) {
        IPTKIT_ASSIGN_OR_RETURN(expect, ParseSpec(inv, /*expect=*/true));
      }
      if (inv.kind == CommandKind::kDeleteAt) {
        txn.DeleteAt(family, table, inv.chain, inv.index, std::move(expect));
      } else {
        IPTKIT_ASSIGN_OR_RETURN(Rule rule, ParseSpec(inv, /*expect=*/false));
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
                                       "; only builtin chains have a policy")
            .WithToken(inv.chain);
      }
      txn.SetPolicy(family, table, inv.chain, inv.arg);
      break;
    default:
      return Status::Internal("not a transaction command");
  }
  return txn;
}

// A delete by spec found nothing: when an owned rule equals the spec but for its owner tag, say who owns it.
Status ExplainMissedDelete(Firewall& fw, const Invocation& inv, const Status& missed) {
  if (missed.code() != StatusCode::kNotFound) return missed;
  const std::string table = inv.TableOrFilter();
  Result<Rule> rule = ParseSpec(inv, /*expect=*/false);
  if (!rule.ok()) return missed;
  Result<Rule> canonical = fw.Canonicalize(inv.global.family, table, *rule);
  Result<Ruleset> current = fw.List(inv.global.family, table, {.allow_lossy = true});
  if (!canonical.ok() || !current.ok()) return missed;
  const Table* t = current->FindTable(table);
  const Chain* chain = t == nullptr ? nullptr : t->FindChain(inv.chain);
  if (chain == nullptr) return missed;
  auto [index, tag] = FindOwnedTwin(*chain, *canonical);
  if (!tag) return missed;
  return OwnedRuleError(table, inv.chain, index, *tag, /*through_daemon=*/false);
}

// FILE as errors name it.
std::string InputName(const std::string& file) { return file == "-" ? "stdin" : file; }

size_t DesiredRuleCount(const DesiredState& desired) {
  size_t n = desired.hooks.size();
  for (const OwnedChain& c : desired.chains) n += c.rules.size();
  return n;
}

// Runs the command; returns the exit code for success paths (0, or 1 for a check miss).
// `input` receives the text of a FILE argument (for marking an error in it).
Result<int> Execute(const Invocation& inv, Firewall& fw, std::istream& in, std::ostream& out, std::ostream& err,
                    const Environment& env, std::string* input) {
  const Family family = inv.global.family;
  switch (inv.kind) {
    case CommandKind::kInfo: {
      IPTKIT_ASSIGN_OR_RETURN(FirewallInfo info, fw.Info());
      // The sets the rules of both families use (a missing one named).
      std::vector<Ruleset> both;
      for (Family f : {Family::kIPv4, Family::kIPv6}) {
        Result<Ruleset> rs = fw.List(f, std::nullopt, {.allow_lossy = true});
        if (!rs.ok()) continue;
        both.push_back(*std::move(rs));
        both.back().family = f;
      }
      std::vector<const Ruleset*> ptrs;
      for (const Ruleset& r : both) ptrs.push_back(&r);
      const std::vector<SetUse> uses = UsedSets(ptrs, inv, err);
      if (inv.global.json) {
        IPTKIT_ASSIGN_OR_RETURN(std::string text, WithSets(FirewallInfoToJson(info, kPretty) + "\n", uses));
        out << text;
      } else {
        out << FormatInfo(info) << FormatSetUses(uses);
      }
      return kExitOk;
    }

    case CommandKind::kList: {
      if (!inv.table.empty()) IPTKIT_RETURN_IF_ERROR(CheckTable(inv.table));
      std::optional<std::string> table;
      if (!inv.table.empty()) table = inv.table;
      if (table == std::nullopt && !inv.chain.empty()) table = "filter";
      if (ListsFromSaveText(inv)) {
        // iptables -S prints iptables-save's rule lines: no rule is decoded into the model.
        IPTKIT_ASSIGN_OR_RETURN(std::string save, fw.Save(family, table, {.allow_lossy = inv.allow_lossy}));
        IPTKIT_ASSIGN_OR_RETURN(std::string text, RenderRulesSFromSave(save, family, inv, err));
        out << text;
        return kExitOk;
      }
      if (!inv.global.json) {
        // Printed as the rules are read, a slice at a time, without a model of the whole table.
        IPTKIT_ASSIGN_OR_RETURN(std::optional<RulesListing> listing, ListFromRules(fw.backend(), family, table, inv));
        if (listing) {
          const std::vector<SetUse> uses = LookedUp(std::move(listing->sets), inv, err);
          out << RenderRulesListing(*listing, inv, err) << FormatSetUses(uses);
          return kExitOk;
        }
      }
      IPTKIT_ASSIGN_OR_RETURN(Ruleset all, fw.List(family, table, {.allow_lossy = inv.allow_lossy}));
      all.family = family;
      IPTKIT_ASSIGN_OR_RETURN(Ruleset selected, SelectListing(std::move(all), inv));
      // The sets the listed rules use (the -S form stays exactly iptables -S).
      std::vector<SetUse> uses;
      if (inv.global.json || !inv.list.rules) uses = UsedSets({&selected}, inv, err);
      if (inv.global.json) {
        IPTKIT_ASSIGN_OR_RETURN(std::string text, ListJson(selected, inv));
        IPTKIT_ASSIGN_OR_RETURN(text, WithSets(text, uses));
        out << text;
      } else {
        out << RenderSelectedListing(selected, inv, {}, err) << FormatSetUses(uses);
      }
      return kExitOk;
    }

    case CommandKind::kSave: {
      std::optional<std::string> table;
      if (!inv.table.empty()) {
        IPTKIT_RETURN_IF_ERROR(CheckTable(inv.table));
        table = inv.table;
      }
      IPTKIT_ASSIGN_OR_RETURN(std::string text,
                              fw.Save(family, table, {.counters = inv.counters, .allow_lossy = inv.allow_lossy}));
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
      *input = text;
      ProgressDisplay progress(err, env.stderr_is_terminal, inv.global.quiet, "restore");
      Firewall::RestoreOptions options;
      options.noflush = inv.noflush;
      options.counters = inv.counters;
      options.dry_run = inv.dry_run;
      options.progress = progress.Callback();
      Result<CommitResult> result = fw.Restore(family, text, options);
      progress.Finish(result.ok());
      if (!result.ok()) return result.status();
      PrintCommit(inv, *result, out);
      return kExitOk;
    }

    case CommandKind::kCheck: {
      const std::string table = inv.TableOrFilter();
      IPTKIT_RETURN_IF_ERROR(CheckTable(table));
      IPTKIT_RETURN_IF_ERROR(CheckChain(table, inv.chain));
      IPTKIT_ASSIGN_OR_RETURN(Rule rule, ParseSpec(inv, /*expect=*/false));
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
      *input = text;
      Result<DesiredState> desired = DesiredStateFromJson(text);
      if (!desired.ok()) return desired.status().WithContext(InputName(inv.arg));
      ProgressDisplay progress(err, env.stderr_is_terminal, inv.global.quiet || inv.kind == CommandKind::kPlan,
                               "apply");
      const size_t rules = DesiredRuleCount(*desired);
      progress.Start(rules, "checking " + std::to_string(rules) + " rules");
      CommitOptions options{.progress = progress.Callback(), .dry_run = inv.dry_run};
      Result<ApplyPlan> plan = inv.kind == CommandKind::kPlan ? fw.PlanApply(*desired) : fw.Apply(*desired, options);
      progress.Finish(plan.ok());
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
      } else if (!inv.global.quiet) {
        // Quiet on success, but never silent about what the user must know (e.g. the other iptables variant
        // holds rules on the same hooks: they judge packets too).
        for (const std::string& w : plan->warnings) out << "warning: " << w << "\n";
      }
      return kExitOk;
    }

    case CommandKind::kTxn: {
      IPTKIT_ASSIGN_OR_RETURN(std::string text, ReadInput(inv.arg, in));
      *input = text;
      Result<Transaction> txn = TransactionFromJson(text);
      if (!txn.ok()) return txn.status().WithContext(InputName(inv.arg));
      IPTKIT_ASSIGN_OR_RETURN(CommitResult result, fw.Commit(*txn, {.dry_run = inv.dry_run}));
      PrintCommit(inv, result, out);
      return kExitOk;
    }

    default: {
      IPTKIT_ASSIGN_OR_RETURN(Transaction txn, BuildTransaction(inv));
      Result<CommitResult> result = fw.Commit(txn, {.dry_run = inv.dry_run});
      if (!result.ok()) {
        if (inv.kind == CommandKind::kDelete) return ExplainMissedDelete(fw, inv, result.status());
        return result.status();
      }
      PrintCommit(inv, *result, out);
      return kExitOk;
    }
  }
}

// "  <shown>\n  <carets under [begin, begin + length)>\n", cut to a window around the mark when long.
std::string MarkedLine(std::string shown, size_t mark_begin, size_t mark_length) {
  mark_length = std::max<size_t>(mark_length, 1);
  constexpr size_t kContext = 50;
  if (shown.size() > 2 * kContext + mark_length + 8) {
    size_t from = mark_begin > kContext ? mark_begin - kContext : 0;
    size_t to = std::min(shown.size(), mark_begin + mark_length + kContext);
    // Cut between words.
    if (from > 0) from = std::min(shown.find(' ', from) + 1, mark_begin);
    if (to < shown.size()) to = std::max(shown.rfind(' ', to), mark_begin + mark_length);
    std::string window = (from > 0 ? "..." : "") + shown.substr(from, to - from) + (to < shown.size() ? "..." : "");
    mark_begin = mark_begin - from + (from > 0 ? 3 : 0);
    shown = window;
  }
  return "  " + shown + "\n  " + std::string(mark_begin, ' ') + std::string(mark_length, '^') + "\n";
}

// The part of the user's input file an error is about: its line (details.line) or, in a JSON document, the string
// at details.field; with the token at details.column marked. "" when the payload names neither.
std::string InputExcerpt(const Status& status, const std::string& file, const std::string& text) {
  const StatusDetails& d = status.details();
  if (text.empty()) return "";
  const std::string name = InputName(file);
  std::string shown;
  std::string where;
  if (d.line && *d.line >= 1) {
    size_t start = 0;
    for (int n = 1; n < *d.line && start != std::string::npos; ++n) {
      start = text.find('\n', start);
      if (start != std::string::npos) ++start;
    }
    if (start == std::string::npos || start > text.size()) return "";
    shown = text.substr(start, text.find('\n', start) - start);
    where = name + ":" + std::to_string(*d.line) + ": ";
  } else if (d.field && !d.field->empty()) {
    // nlohmann-json throws on a malformed pointer; this adapter keeps that inside.
    try {
      nlohmann::json doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
      nlohmann::json::json_pointer pointer(*d.field);
      if (doc.is_discarded() || !doc.contains(pointer) || !doc.at(pointer).is_string()) return "";
      shown = doc.at(pointer).get<std::string>();
    } catch (const nlohmann::json::exception&) {
      return "";
    }
    where = name + " " + *d.field + ": ";
  } else {
    return "";
  }
  if (shown.find_first_of(std::string_view("\r\0", 2)) != std::string::npos) return "";
  if (d.column && d.token && *d.column >= 1 && static_cast<size_t>(*d.column) - 1 + d.token->size() <= shown.size() &&
      shown.compare(static_cast<size_t>(*d.column) - 1, d.token->size(), *d.token) == 0) {
    return MarkedLine(where + shown, where.size() + static_cast<size_t>(*d.column) - 1, d.token->size());
  }
  return "  " + where + shown + "\n";
}

// An argument as a shell would need it quoted, for showing the command line.
std::string ShellQuote(const std::string& arg) {
  if (!arg.empty() &&
      arg.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./:=,+@%^") ==
          std::string::npos) {
    return arg;
  }
  std::string out = "'";
  for (char c : arg) {
    if (c == '\'') {
      out += "'\\''";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\0') {
      out += "\\0";
    } else {
      out += c;
    }
  }
  return out + "'";
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

int ExitCodeFor(const Status& status) {
  if (status.details().reason == kReasonIndexOutOfRange) return kExitNotFound;
  return ExitCodeFor(status.code());
}

std::string FormatError(const Status& status, const std::vector<std::string>& args) {
  std::string message = status.message().empty() ? std::string(StatusCodeName(status.code())) : status.message();
  while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) message.pop_back();
  // One line: iptables' stderr inside a message may span lines.
  std::string line;
  for (char c : message) {
    if (c == '\n') {
      line += " | ";
    } else if (c != '\r') {
      line += c;
    }
  }
  std::string out = "iptkit: " + line + "\n";

  const StatusDetails& d = status.details();
  if (!d.argument || !d.token || *d.argument < 1 || static_cast<size_t>(*d.argument) > args.size() ||
      args[*d.argument - 1] != *d.token) {
    return out;
  }
  // The command line with the argument marked.
  std::string shown = "iptkit";
  size_t mark_begin = 0;
  size_t mark_length = 0;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string quoted = ShellQuote(args[i]);
    shown += " ";
    if (i + 1 == static_cast<size_t>(*d.argument)) {
      mark_begin = shown.size();
      mark_length = quoted.size();
    }
    shown += quoted;
  }
  out += MarkedLine(shown, mark_begin, mark_length);
  return out;
}

int Run(const Invocation& inv, Firewall* firewall, std::istream& in, std::ostream& out, std::ostream& err,
        const Environment& env) {
  std::string input;  // the FILE argument's text, once read
  auto fail = [&](const Status& status) {
    out.flush();
    err << FormatError(status, inv.args) << InputExcerpt(status, inv.arg, input);
    return ExitCodeFor(status);
  };
  if (inv.kind == CommandKind::kHelp) {
    out << inv.text;
    out.flush();
    return kExitOk;
  }
  Result<int> code = kExitOk;
  if (firewall == nullptr && inv.global.daemon) {
    code = ExecuteViaDaemon(inv, in, out, err, &input);
  } else {
    std::unique_ptr<Firewall> owned;
    if (firewall == nullptr) {
      if (inv.global.backend != BackendKind::kFake) {
        Status privileges = CheckPrivileges(inv, env);
        if (!privileges.ok()) return fail(privileges);
      }
      FirewallOptions options;
      options.netns = inv.global.netns;
      options.backend = inv.global.backend;
      options.wait = inv.global.wait;
      options.one_shot = true;  // one command, then exit: nothing learns from the kernel's echo of an add
      Result<std::unique_ptr<Firewall>> opened = Firewall::Open(options);
      if (!opened.ok()) return fail(opened.status());
      owned = std::move(opened).value();
      firewall = owned.get();
    }
    code = Execute(inv, *firewall, in, out, err, env, &input);
  }
  out.flush();
  if (!code.ok()) return fail(code.status());
  return *code;
}

int Main(const std::vector<std::string>& args, std::istream& in, std::ostream& out, std::ostream& err,
         Firewall* firewall, const Environment& env) {
  if (IsSetCommandLine(args)) return SetMain(args, in, out, err, env);  // iptkit set ...: cli_set.h
  if (!args.empty() && args[0] == "fleet") {
    // main.cc executes iptkit-fleet (cli_fleet.h) for it; this library does not link the etcd client.
    err << "iptkit: fleet: run by the iptkit-fleet program, installed beside iptkit\n";
    return kExitInternal;
  }
  Result<Invocation> inv = ParseCommandLine(args);
  if (!inv.ok()) {
    err << FormatError(inv.status(), args);
    return ExitCodeFor(inv.status());
  }
  return Run(*inv, firewall, in, out, err, env);
}

}  // namespace iptkit::cli
