// RestoreBackend's canonical forms and lossy prints (restore_backend.h): everything it does in its private scratch
// network namespace.
//
// A rule's canonical form is what the save tool prints after loading the rule as the user typed it. Loading is done
// in the scratch namespace (one restore for many rules), and the kernel forms of the loaded rules are read back there
// too: through netlink on nft (nft::NetlinkClient::Dump with rule forms), from the x_tables blob on legacy
// (legacy::RuleForms). When the printed form differs from the typed text, it is loaded as well and the two kernel
// forms compared: a printed form that does not load back to the typed rule's kernel form is lossy.
#include <algorithm>
#include <map>
#include <regex>
#include <set>

#include "iptkit/dialect.h"
#include "src/backend/legacy/xt_rules.h"
#include "src/backend/ops/table_sim.h"
#include "src/backend/restore/local_canonical.h"
#include "src/backend/restore/restore_backend.h"
#include "src/backend/restore/restore_internal.h"
#include "src/backend/restore/tool_errors.h"

namespace iptkit::backend {

using base::Cmd;
using base::SubprocessResult;
using restore_internal::RunFailure;
using restore_internal::SplitLines;
using restore_internal::Trim;

namespace {

constexpr const char* kIpset = "/usr/sbin/ipset";
constexpr const char* kNfacct = "/usr/sbin/nfacct";
// printed_forms_ is dropped whole when it grows past this (a daemon adding ever new addresses must not grow without
// bound); it is only a cache.
constexpr size_t kMaxPrintedForms = 200000;

// The user chains a rule jumps or goes to.
std::optional<std::string> ChainTarget(const Rule& rule) {
  const Target& t = rule.target;
  if (t.kind == Target::Kind::kGoto) return t.name;
  if (t.kind != Target::Kind::kJump || !t.options.empty() || IsStandardVerdict(t.name)) return std::nullopt;
  if (iptkit::IsTargetExtension(t.name)) return std::nullopt;
  return t.name;
}

// ipset names a rule uses: -m set --match-set NAME ..., -j SET --add-set/--del-set/--map-set NAME ...
std::vector<std::string> SetsOf(const Rule& rule) {
  std::vector<std::string> names;
  for (const Match& m : rule.matches) {
    if (m.name != "set") continue;
    for (const Option& o : m.options) {
      if (o.name == "match-set" && !o.values.empty()) names.push_back(o.values[0]);
    }
  }
  if (rule.target.kind == Target::Kind::kJump && rule.target.name == "SET") {
    for (const Option& o : rule.target.options) {
      if ((o.name == "add-set" || o.name == "del-set" || o.name == "map-set") && !o.values.empty()) {
        names.push_back(o.values[0]);
      }
    }
  }
  return names;
}

std::vector<std::string> NfacctOf(const Rule& rule) {
  std::vector<std::string> names;
  for (const Match& m : rule.matches) {
    if (m.name != "nfacct") continue;
    for (const Option& o : m.options) {
      if (o.name == "nfacct-name" && !o.values.empty()) names.push_back(o.values[0]);
    }
  }
  return names;
}

// Rate estimators a rule's rateest match needs (xt_rateest looks them up by name when the rule is loaded: an
// estimator exists only while a RATEEST rule defines it, in the same network namespace).
std::vector<std::string> EstimatorsOf(const Rule& rule) {
  std::vector<std::string> names;
  for (const Match& m : rule.matches) {
    if (m.name != "rateest") continue;
    for (const Option& o : m.options) {
      if ((o.name == "rateest" || o.name == "rateest1" || o.name == "rateest2") && !o.values.empty()) {
        names.push_back(o.values[0]);
      }
    }
  }
  return names;
}

// An ipset create line without its random "initval 0x..." (differs per creation, not per definition).
std::string WithoutInitval(std::string line) {
  static const std::regex kInitval(" initval 0x[0-9a-fA-F]+");
  return std::regex_replace(line, kInitval, "");
}

std::string NftFamily(Family family) { return family == Family::kIPv4 ? "ip" : "ip6"; }

// The error about one rule iptables refused: iptables' own reason, naming the argument it is about.
Status RuleRefused(const Status& failure, const std::vector<std::string>& args) {
  if (failure.code() == StatusCode::kUnavailable || failure.code() == StatusCode::kPermissionDenied) return failure;
  std::string reason = CleanToolMessage(failure.message());
  if (reason.empty()) reason = "the kernel refused the rule (iptables-legacy gives no reason; see dmesg)";
  Status s = Status::InvalidArgument(reason).WithReason("rule_rejected");
  if (std::optional<size_t> at = QuotedArgument(reason, args)) {
    s = Status::InvalidArgument("'" + args[*at] + "' (argument " + std::to_string(*at + 1) + "): " + reason)
            .WithToken(args[*at])
            .WithArgument(static_cast<int>(*at + 1))
            .WithReason("rule_rejected");
  }
  return s;
}

// The arguments of a restore text, for naming the one an error is about.
std::vector<std::string> ArgsOf(const std::string& text) {
  std::vector<std::string> args;
  Result<std::vector<Token>> tokens = LexRestoreLine(text);
  if (!tokens.ok()) return args;
  for (const Token& t : *tokens) args.push_back(t.text);
  return args;
}

}  // namespace

// ---- The scratch namespace ----

Status RestoreBackend::EnsureScratch(Family family, const std::vector<const Rule*>& rules) {
  // Set definitions from the target netns; a scratch netns holding a different definition under the same name is
  // replaced (a set referenced by rules there cannot be destroyed).
  std::map<std::string, std::string> wanted_sets;
  std::set<std::string> wanted_nfacct;
  for (const Rule* rule : rules) {
    for (const std::string& name : SetsOf(*rule)) wanted_sets[name];
    for (const std::string& name : NfacctOf(*rule)) wanted_nfacct.insert(name);
  }
  for (auto& [name, create] : wanted_sets) {
    base::SubprocessOptions cmd = Cmd(kIpset, {"ipset", "save", name});
    IPTKIT_ASSIGN_OR_RETURN(SubprocessResult r, Run(std::move(cmd), netns_.get()));
    if (r.exit_code != 0) {
      return Status::NotFound("set '" + name + "' does not exist (ipset: " + CleanToolMessage(r.stderr_text) + ")")
          .WithToken(name);
    }
    std::vector<std::string> lines = SplitLines(r.stdout_text);
    if (lines.empty() || !lines[0].starts_with("create ")) {
      return Status::Internal("ipset save " + name + " printed no create line: " + r.stdout_text.substr(0, 200));
    }
    create = lines[0];
  }
  bool conflict = false;
  for (const auto& [name, create] : wanted_sets) {
    auto it = scratch_sets_.find(name);
    if (it != scratch_sets_.end() && it->second != WithoutInitval(create)) conflict = true;
  }
  if (conflict || !scratch_) {
    IPTKIT_ASSIGN_OR_RETURN(base::ScratchNetns fresh, base::ScratchNetns::Create());
    scratch_netlink_.reset();
    scratch_probe_.reset();
    scratch_.emplace(std::move(fresh));
    scratch_sets_.clear();
    scratch_nfacct_.clear();
  }
  std::string ipset_input;
  std::vector<std::string> new_sets;
  for (const auto& [name, create] : wanted_sets) {
    if (scratch_sets_.count(name)) continue;
    ipset_input += create + "\n";
    new_sets.push_back(name);
  }
  if (!ipset_input.empty()) {
    base::SubprocessOptions cmd = Cmd(kIpset, {"ipset", "restore"}).Stdin(ipset_input);
    const std::string what = base::DescribeCommand(cmd);
    IPTKIT_ASSIGN_OR_RETURN(SubprocessResult r, Run(std::move(cmd), scratch_->fd()));
    if (r.exit_code != 0) return RunFailure(what + " (copying sets into the scratch netns)", r);
    for (const std::string& name : new_sets) scratch_sets_[name] = WithoutInitval(wanted_sets[name]);
  }
  for (const std::string& name : wanted_nfacct) {
    if (scratch_nfacct_.count(name)) continue;
    base::SubprocessOptions cmd = Cmd(kNfacct, {"nfacct", "add", name});
    const std::string what = base::DescribeCommand(cmd);
    IPTKIT_ASSIGN_OR_RETURN(SubprocessResult r, Run(std::move(cmd), scratch_->fd()));
    if (r.exit_code != 0) return RunFailure(what + " (in the scratch netns)", r);
    scratch_nfacct_.insert(name);
  }
  return Status::Ok();
}

Result<std::vector<std::string>> RestoreBackend::ScratchForms(Family family, const std::string& table,
                                                              const std::string& chain) {
  if (variant_ == Variant::kNft) {
    if (!scratch_netlink_) {
      auto client = nft::NetlinkClient::Open(scratch_->fd());
      if (!client.ok()) return client.status().WithContext("opening netlink in the scratch netns");
      scratch_netlink_ = std::move(client).value();
    }
    IPTKIT_ASSIGN_OR_RETURN(nft::KernelView view, scratch_netlink_->Dump(family, table, /*rule_forms=*/true));
    std::vector<std::string> forms;
    auto t = view.find({NftFamily(family), table});
    if (t == view.end()) return forms;
    auto c = t->second.chains.find(chain);
    if (c == t->second.chains.end()) return forms;
    for (nft::KernelRule& r : c->second.rule_list) forms.push_back(std::move(r.form));
    return forms;
  }
  if (!scratch_probe_) {
    auto probe = legacy::XtablesProbe::Open(scratch_->fd());
    if (!probe.ok()) return probe.status().WithContext("opening the x_tables probe in the scratch netns");
    scratch_probe_ = std::move(probe).value();
  }
  IPTKIT_ASSIGN_OR_RETURN(legacy::Fingerprint fp, scratch_probe_->Read(family));
  for (const legacy::TableFingerprint& t : fp) {
    if (t.name != table) continue;
    IPTKIT_ASSIGN_OR_RETURN(legacy::ChainRuleForms forms, legacy::RuleForms(family, t));
    return std::move(forms[chain]);
  }
  return std::vector<std::string>{};
}

Result<RestoreBackend::ScratchResult> RestoreBackend::RunInScratch(Family family, const std::string& table,
                                                                   const std::vector<ScratchRule>& rules,
                                                                   bool want_printed) {
  ScratchResult result;
  result.status.assign(rules.size(), Status::Ok());
  result.forms.assign(rules.size(), "");
  result.printed.assign(rules.size(), Rule{});
  if (rules.empty()) return result;
  std::vector<const Rule*> models;
  for (const ScratchRule& r : rules) models.push_back(r.model);
  IPTKIT_RETURN_IF_ERROR(EnsureScratch(family, models));
  // Legacy: the children use a private lock file, never the host's xtables lock (which our own caller may hold).
  if (variant_ == Variant::kLegacy) IPTKIT_RETURN_IF_ERROR(PrivateLockFile().status());

  // The holder chain H and, before it (legacy checks entries in blob order, where user chains are sorted by name;
  // nft in batch order), the chain E of the rate estimators the rules need. Names none of the rules jumps to.
  std::set<std::string> targets;
  std::map<std::string, std::pair<std::string, std::string>> estimators;  // name → interval, ewmalog
  for (const Rule* m : models) {
    if (auto chain = ChainTarget(*m)) targets.insert(*chain);
    for (const std::string& name : EstimatorsOf(*m)) estimators.emplace(name, std::make_pair("1s", "2s"));
  }
  for (const Rule* m : models) {  // a RATEEST rule of the batch defines its estimator: use its parameters
    if (m->target.kind != Target::Kind::kJump || m->target.name != "RATEEST") continue;
    std::string name, interval, ewmalog;
    for (const Option& o : m->target.options) {
      if (o.values.empty()) continue;
      if (o.name == "rateest-name") name = o.values[0];
      if (o.name == "rateest-interval") interval = o.values[0];
      if (o.name == "rateest-ewmalog") ewmalog = o.values[0];
    }
    auto it = estimators.find(name);
    if (it != estimators.end() && !interval.empty() && !ewmalog.empty()) it->second = {interval, ewmalog};
  }
  std::string suffix;
  for (int i = 2; targets.count("IPTKIT-E" + suffix) || targets.count("IPTKIT-H" + suffix); ++i) {
    suffix = "-" + std::to_string(i);
  }
  const std::string est_chain = "IPTKIT-E" + suffix;
  const std::string holder = "IPTKIT-H" + suffix;
  auto block = [&](const std::vector<size_t>& which) {
    std::string text = "*" + table + "\n:" + est_chain + " - [0:0]\n:" + holder + " - [0:0]\n";
    for (const std::string& t : targets) text += ":" + t + " - [0:0]\n";
    std::set<std::string> needed;
    for (size_t i : which) {
      for (const std::string& name : EstimatorsOf(*models[i])) needed.insert(name);
    }
    for (const std::string& name : needed) {
      const auto& [interval, ewmalog] = estimators.at(name);
      text += "-A " + est_chain + " -j RATEEST --rateest-name " + QuoteRestoreArgument(name) + " --rateest-interval " +
              QuoteRestoreArgument(interval) + " --rateest-ewmalog " + QuoteRestoreArgument(ewmalog) + "\n";
    }
    for (size_t i : which) text += "-A " + holder + (rules[i].text.empty() ? "" : " " + rules[i].text) + "\n";
    return text + "COMMIT\n";
  };
  // Without --noflush: the scratch table is replaced, so leftovers of earlier calls are gone.
  // A failure carries iptables' own stderr (RuleRefused cleans it), not the message about iptkit's batch line.
  auto load = [&](const std::vector<size_t>& which) {
    std::string err;
    Status s = RunRestore(family, table, block(which), /*noflush=*/false, /*counters=*/false, scratch_->fd(), &err);
    if (s.ok() || s.code() == StatusCode::kUnavailable || s.code() == StatusCode::kPermissionDenied) return s;
    return Status(s.code(), err.empty() ? s.message() : err);
  };

  std::vector<size_t> all(rules.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = i;
  std::vector<size_t> good;
  Status loaded = load(all);
  if (loaded.ok()) {
    good = all;
  } else {
    if (loaded.code() == StatusCode::kUnavailable || loaded.code() == StatusCode::kPermissionDenied) return loaded;
    // Bisect: the rules iptables refuses alone get its message about them alone.
    std::function<void(const std::vector<size_t>&, const Status&)> split = [&](const std::vector<size_t>& which,
                                                                               const Status& failure) {
      if (which.size() == 1) {
        result.status[which[0]] = failure;
        return;
      }
      std::vector<size_t> halves[2] = {std::vector<size_t>(which.begin(), which.begin() + which.size() / 2),
                                       std::vector<size_t>(which.begin() + which.size() / 2, which.end())};
      bool any_failed = false;
      for (const std::vector<size_t>& half : halves) {
        Status s = load(half);
        if (s.ok()) continue;
        any_failed = true;
        split(half, s);
      }
      if (!any_failed) {  // refused only together
        for (size_t i : which) result.status[i] = failure;
      }
    };
    split(all, loaded);
    for (size_t i : all) {
      if (result.status[i].ok()) good.push_back(i);
    }
    if (good.empty()) return result;
    Status again = load(good);
    if (!again.ok()) {
      return again.WithContext("loading the " + std::to_string(good.size()) + " rules iptables accepts one by one");
    }
  }
  IPTKIT_ASSIGN_OR_RETURN(std::vector<std::string> forms, ScratchForms(family, table, holder));
  if (forms.size() != good.size()) {
    return Status::Internal("the scratch netns holds " + std::to_string(forms.size()) + " rules for " +
                            std::to_string(good.size()) + " loaded into table " + table);
  }
  for (size_t k = 0; k < good.size(); ++k) result.forms[good[k]] = std::move(forms[k]);
  if (want_printed) {
    IPTKIT_ASSIGN_OR_RETURN(SaveOutput save, RunSave(variant_, family, table, scratch_->fd(), /*strict=*/true));
    const Table* t = save.ruleset.FindTable(table);
    if (t != nullptr && !t->unrepresentable_reason.empty()) {
      return Status::InvalidArgument("iptables cannot print these rules faithfully: " + t->unrepresentable_reason)
          .WithReason("rule_rejected");
    }
    const Chain* c = t == nullptr ? nullptr : t->FindChain(holder);
    if (c == nullptr || c->rules.size() != good.size()) {
      return Status::Internal("canonicalization read back " + std::to_string(c ? c->rules.size() : 0) + " rules for " +
                              std::to_string(good.size()) + " specs in table " + table);
    }
    for (size_t k = 0; k < good.size(); ++k) {
      result.printed[good[k]] = c->rules[k];
      result.printed[good[k]].counters = {};
    }
  }
  return result;
}

// ---- Lossy prints ----

Status RestoreBackend::LearnPrintedForms(Family family, const std::string& table,
                                         const std::vector<std::pair<std::string, const Rule*>>& texts) {
  std::vector<ScratchRule> todo;
  std::set<std::string> seen;
  for (const auto& [text, model] : texts) {
    if (printed_forms_.count({family, table, text}) || !seen.insert(text).second) continue;
    todo.push_back({text, model});
  }
  if (todo.empty()) return Status::Ok();
  if (printed_forms_.size() + todo.size() > kMaxPrintedForms) printed_forms_.clear();
  IPTKIT_ASSIGN_OR_RETURN(ScratchResult loaded, RunInScratch(family, table, todo, /*want_printed=*/false));
  for (size_t i = 0; i < todo.size(); ++i) {
    PrintedForm& p = printed_forms_[{family, table, todo[i].text}];
    if (loaded.status[i].ok()) {
      p.form = std::move(loaded.forms[i]);
    } else {
      p.refused = CleanToolMessage(loaded.status[i].message());
      if (p.refused.empty()) p.refused = "the kernel refuses it";
    }
  }
  return Status::Ok();
}

Status RestoreBackend::MarkLossyRules(Family family, Table& table, const KernelRuleForms& kernel) {
  const std::string tool = IptablesToolPath(variant_, family, "-save");
  const std::string tool_name = tool.substr(tool.rfind('/') + 1);
  // Pass 1: the printed forms whose kernel form is not known yet.
  std::vector<std::pair<std::string, const Rule*>> texts;
  for (const Chain& c : table.chains) {
    auto k = kernel.find(c.name);
    if (k == kernel.end() || k->second.size() != c.rules.size()) continue;  // unrepresentable by count
    for (size_t i = 0; i < c.rules.size(); ++i) {
      if (!k->second[i].lossy.empty()) continue;
      texts.emplace_back(FormatRuleSpec(c.rules[i]), &c.rules[i]);
    }
  }
  IPTKIT_RETURN_IF_ERROR(
      LearnPrintedForms(family, table.name, texts)
          .WithContext("checking that " + tool_name + " prints table " + table.name + " faithfully"));
  // Pass 2: compare.
  for (Chain& c : table.chains) {
    auto k = kernel.find(c.name);
    if (k == kernel.end() || k->second.size() != c.rules.size()) continue;
    for (size_t i = 0; i < c.rules.size(); ++i) {
      Rule& rule = c.rules[i];
      const KernelRuleView& kr = k->second[i];
      rule.lossy.clear();
      rule.kernel_form.clear();
      if (!kr.lossy.empty()) {
        rule.lossy = "it uses " + kr.lossy + ", which " + tool_name + " cannot show (it prints '-A " + c.name +
                     (FormatRuleSpec(rule).empty() ? "" : " ") + FormatRuleSpec(rule) + "')";
        rule.kernel_form = kr.form;
        continue;
      }
      const std::string text = FormatRuleSpec(rule);
      auto p = printed_forms_.find({family, table.name, text});
      if (p == printed_forms_.end()) continue;  // cannot happen: learned above
      const std::string printed = "'-A " + c.name + (text.empty() ? "" : " ") + text + "'";
      if (!p->second.refused.empty()) {
        rule.lossy = tool_name + " prints it as " + printed + ", which iptables refuses (" + p->second.refused + ")";
      } else if (p->second.form != kr.form) {
        rule.lossy = tool_name + " prints it as " + printed + ", which loads as a different rule";
      } else {
        continue;
      }
      rule.kernel_form = kr.form;
    }
  }
  return Status::Ok();
}

// ---- Canonicalize ----

Result<std::vector<Rule>> RestoreBackend::Canonicalize(Family family, const std::string& table,
                                                       const std::vector<Rule>& rules) {
  if (BuiltinChains(table).empty()) return Status::InvalidArgument("unknown table '" + table + "'");
  std::vector<std::string> keys(rules.size());
  std::vector<size_t> todo;                  // first rule of each uncached text
  std::map<std::string, size_t> todo_index;  // text → position in todo
  for (size_t i = 0; i < rules.size(); ++i) {
    // The table's part of the target placement (a user chain of the scratch netns has no hook): iptables would
    // refuse the rule there with a kernel error naming iptkit's own chain.
    IPTKIT_RETURN_IF_ERROR(CheckRuleLocally(family, table, "", rules[i]));
    keys[i] = FormatRuleForRestore(rules[i], /*counters=*/false);
    if (canonical_cache_.count({family, table, keys[i]})) continue;
    if (std::optional<Rule> local = LocalCanonicalRule(family, rules[i])) {
      // Printed forms of these rules load back to the same kernel rule (local_canonical.h).
      local->typed.clear();
      local->typed_for.clear();
      canonical_outputs_.insert({family, table, FormatRuleSpec(*local)});
      canonical_cache_[{family, table, keys[i]}] = *std::move(local);
      ++local_canonicalized_;
      continue;
    }
    if (todo_index.emplace(keys[i], todo.size()).second) todo.push_back(i);
  }
  if (!todo.empty()) {
    // 1. The rules as typed: their printed forms and their kernel forms.
    std::vector<ScratchRule> typed;
    for (size_t i : todo) typed.push_back({keys[i], &rules[i]});
    IPTKIT_ASSIGN_OR_RETURN(ScratchResult loaded, RunInScratch(family, table, typed, /*want_printed=*/true));
    size_t refused = 0;
    std::optional<Status> first;
    for (size_t k = 0; k < todo.size(); ++k) {
      if (loaded.status[k].ok()) continue;
      ++refused;
      const Rule& rule = rules[todo[k]];
      if (!first) first = RuleRefused(loaded.status[k], HasTypedForm(rule) ? rule.typed : ArgsOf(keys[todo[k]]));
    }
    // 2. The printed forms that differ from what was typed: do they load back to the same kernel rule? (For the
    //    rules iptables accepts: they are cached even when another rule is refused, so that a caller looking for
    //    the refused one rule by rule finds the others cached.)
    std::vector<std::pair<std::string, const Rule*>> printed;
    for (size_t k = 0; k < todo.size(); ++k) {
      if (!loaded.status[k].ok()) continue;
      const std::string text = FormatRuleSpec(loaded.printed[k]);
      if (text == keys[todo[k]]) {
        printed_forms_[{family, table, text}] = PrintedForm{loaded.forms[k], ""};
      } else {
        printed.emplace_back(text, &loaded.printed[k]);
      }
    }
    IPTKIT_RETURN_IF_ERROR(LearnPrintedForms(family, table, printed));
    const std::string tool = IptablesToolPath(variant_, family, "-save");
    const std::string tool_name = tool.substr(tool.rfind('/') + 1);
    for (size_t k = 0; k < todo.size(); ++k) {
      if (!loaded.status[k].ok()) continue;
      Rule r = std::move(loaded.printed[k]);
      const std::string text = FormatRuleSpec(r);
      const PrintedForm& p = printed_forms_.at({family, table, text});
      if (!p.refused.empty() || p.form != loaded.forms[k]) {
        r.lossy = tool_name + " prints it as '" + text + "', which " +
                  (p.refused.empty() ? "loads as a different rule" : "iptables refuses (" + p.refused + ")");
        r.kernel_form = loaded.forms[k];
      }
      canonical_outputs_.insert({family, table, text});
      canonical_cache_[{family, table, keys[todo[k]]}] = std::move(r);
    }
    if (first) {
      if (refused == 1) return *first;
      return first->WithContext("(1 of " + std::to_string(refused) + " rules iptables refuses)");
    }
  }
  // Each canonical rule carries what was asked for as its typed form: the typed form, or for a rule without one
  // (built field by field, e.g. from JSON) its printed form. That is what is sent, never the canonical print.
  std::vector<Rule> out(rules.size());
  for (size_t i = 0; i < rules.size(); ++i) {
    out[i] = canonical_cache_.at({family, table, keys[i]});
    out[i].counters = rules[i].counters;
    if (HasTypedForm(rules[i])) {
      out[i].typed = rules[i].typed;
    } else {
      Rule untagged = rules[i];
      untagged.ClearOwnerTag();
      out[i].typed = ArgsOf(FormatRuleSpec(untagged));
    }
    Rule untagged = out[i];
    untagged.ClearOwnerTag();
    out[i].typed_for = FormatRuleSpec(untagged);
  }
  return out;
}

}  // namespace iptkit::backend
