#include "tools/iptkit/cli_set.h"

#include <atomic>
#include <nlohmann/json.hpp>
#include <thread>

#include "iptkit/dialect.h"
#include "iptkit/firewall.h"
#include "iptkit/ipset.h"
#include "src/ipset/set_json.h"
#include "tools/iptkit/cli_daemon.h"
#include "tools/iptkit/cli_support.h"
#include "tools/iptkit/unix_http.h"

namespace iptkit::cli {
namespace {

using nlohmann::json;

std::string SetText(const SetInfo& s, bool with_entries) {
  std::string out = "Name: " + s.name + "\nType: " + s.type + "\nRevision: " + std::to_string(s.revision) +
                    "\nHeader: " + s.header + "\nSize in memory: " + std::to_string(s.memory_bytes) +
                    "\nReferences: " + std::to_string(s.references) +
                    "\nNumber of entries: " + std::to_string(s.entry_count) + "\n";
  if (!with_entries) return out;
  out += "Members:\n";
  for (const SetEntry& e : s.entries) {
    out += e.elem;
    if (e.timeout) out += " timeout " + std::to_string(*e.timeout);
    if (e.packets) out += " packets " + std::to_string(*e.packets);
    if (e.bytes) out += " bytes " + std::to_string(*e.bytes);
    if (e.comment) out += " comment \"" + *e.comment + "\"";
    for (const std::string& x : e.extra) out += " " + x;
    if (e.nomatch) out += " nomatch";
    out += "\n";
  }
  return out;
}

// create's OPTION [VALUE] words → SetOptions; -6 means "family inet6" unless the words say otherwise.
Result<SetOptions> CreateOptions(const SetInvocation& inv) {
  IPTKIT_ASSIGN_OR_RETURN(SetOptions o, ParseSetOptions(inv.extra));
  if (o.family.empty() && inv.global.family_given && inv.global.family == Family::kIPv6) o.family = "inet6";
  return o;
}

Result<SetAddOptions> AddOptions(const SetInvocation& inv) {
  IPTKIT_ASSIGN_OR_RETURN(SetAddOptions o, ParseSetAddOptions(inv.extra));
  o.no_refresh = inv.no_refresh;
  return o;
}

// Whether a rule uses the set: -m set --match-set NAME, -j SET --add-set/--del-set/--map-set NAME.
bool References(const Rule& rule, const std::string& set) {
  auto names = [&](const std::vector<Option>& options, std::initializer_list<std::string_view> keys) {
    for (const Option& o : options) {
      for (std::string_view k : keys) {
        if (o.name == k && !o.values.empty() && o.values[0] == set) return true;
      }
    }
    return false;
  };
  for (const Match& m : rule.matches) {
    if (m.name == "set" && names(m.options, {"match-set", "set"})) return true;
  }
  return rule.target.name == "SET" && names(rule.target.options, {"add-set", "del-set", "map-set"});
}

struct CascadeRule {
  Family family;
  std::string table, chain;
  Rule rule;
};

Result<std::vector<CascadeRule>> ReferencingRules(Firewall& fw, const std::string& set) {
  std::vector<CascadeRule> out;
  for (Family f : {Family::kIPv4, Family::kIPv6}) {
    IPTKIT_ASSIGN_OR_RETURN(Ruleset rs, fw.List(f));
    for (const Table& t : rs.tables) {
      for (const Chain& c : t.chains) {
        for (const Rule& r : c.rules) {
          if (References(r, set)) out.push_back({f, t.name, c.name, r});
        }
      }
    }
  }
  return out;
}

// Progress of load/sync on stderr: a line redrawn in place on a terminal, plain lines per stage otherwise; nothing
// with -q or for fewer than 1000 entries.
class SetProgressDisplay {
 public:
  SetProgressDisplay(std::ostream& err, bool terminal, bool active, std::string what)
      : err_(err), terminal_(terminal), active_(active), what_(std::move(what)) {}
  void Update(const SetProgress& p) {
    if (!active_) return;
    if (terminal_) {
      if (p.total == 0) return;
      int percent = static_cast<int>(100.0 * static_cast<double>(p.done) / static_cast<double>(p.total));
      err_ << "\r" << what_ << ": " << p.done << "/" << p.total << " entries (" << percent << "%)" << std::flush;
      drawn_ = true;
      return;
    }
    switch (p.stage) {
      case SetProgress::Stage::kChecked:
        err_ << what_ << ": " << p.total << " entries checked\n";
        break;
      case SetProgress::Stage::kSwapped:
        err_ << what_ << ": written, swapped in\n";
        break;
      case SetProgress::Stage::kDone:
        err_ << what_ << ": done\n";
        break;
      default:
        break;
    }
  }
  void Finish() {
    if (drawn_) err_ << "\n";
    drawn_ = false;
  }

 private:
  std::ostream& err_;
  const bool terminal_;
  const bool active_;
  const std::string what_;
  bool drawn_ = false;
};

// Runs the command; returns the exit code, or the error.
Result<int> Execute(const SetInvocation& inv, std::istream& in, std::ostream& out, std::ostream& err,
                    const Environment& env) {
  Ipsets sets(inv.global.netns);
  const bool json_out = inv.global.json;
  json doc = {{"command", "set"}, {"set", inv.name}, {"dry_run", inv.dry_run}};
  auto done = [&](const std::string& verb, const std::string& text) {
    doc["op"] = verb;
    if (json_out) {
      out << doc.dump(2) << "\n";
    } else if (!text.empty()) {
      out << text << "\n";
    }
    return kExitOk;
  };
  const std::string would = inv.dry_run ? "would " : "";
  switch (inv.verb) {
    case SetVerb::kHelp:
      out << inv.text;
      return kExitOk;
    case SetVerb::kList: {
      IPTKIT_ASSIGN_OR_RETURN(std::vector<SetInfo> list, sets.List(inv.name, !inv.terse));
      if (json_out) {
        json arr = json::array();
        for (const SetInfo& s : list) arr.push_back(SetInfoToJson(s, !inv.terse));
        out << json({{"sets", arr}}).dump(2) << "\n";
      } else {
        for (size_t i = 0; i < list.size(); ++i) out << (i ? "\n" : "") << SetText(list[i], !inv.terse);
      }
      return kExitOk;
    }
    case SetVerb::kCreate: {
      IPTKIT_ASSIGN_OR_RETURN(SetOptions options, CreateOptions(inv));
      if (inv.dry_run) {
        // Checked by the kernel under a temporary name, then removed.
        auto existing = sets.Get(inv.name, false);
        if (existing.ok()) return Status::AlreadyExists("set '" + inv.name + "' exists already").WithToken(inv.name);
        if (existing.status().code() != StatusCode::kNotFound) return existing.status();
        std::string probe = std::string(kTempSetPrefix) + "dryrun00";
        IPTKIT_RETURN_IF_ERROR(sets.Create(probe, inv.arg, options));
        IPTKIT_RETURN_IF_ERROR(sets.Destroy(probe));
      } else {
        IPTKIT_RETURN_IF_ERROR(sets.Create(inv.name, inv.arg, options));
      }
      doc["type"] = inv.arg;
      return done("create", inv.dry_run || inv.global.verbosity > 0
                                ? would + "create set " + inv.name + " (" + inv.arg + ")"
                                : "");
    }
    case SetVerb::kAdd: {
      IPTKIT_ASSIGN_OR_RETURN(SetAddOptions options, AddOptions(inv));
      doc["entry"] = inv.arg;
      if (options.timeout) doc["timeout"] = *options.timeout;
      if (options.comment) doc["comment"] = *options.comment;
      if (inv.dry_run) {
        IPTKIT_ASSIGN_OR_RETURN(bool in_set, sets.Test(inv.name, inv.arg));
        if (in_set && options.no_refresh) {
          return Status::AlreadyExists("entry '" + inv.arg + "' is in set '" + inv.name + "' already")
              .WithToken(inv.arg);
        }
        doc["refresh"] = in_set;
        return done("add", "would " + std::string(in_set ? "refresh " : "add ") + inv.arg + " in set " + inv.name);
      }
      IPTKIT_RETURN_IF_ERROR(sets.Add(inv.name, inv.arg, options));
      return done("add", inv.global.verbosity > 0 ? "added " + inv.arg + " to set " + inv.name : "");
    }
    case SetVerb::kDel: {
      doc["entry"] = inv.arg;
      if (inv.dry_run) {
        IPTKIT_ASSIGN_OR_RETURN(bool in_set, sets.Test(inv.name, inv.arg));
        if (!in_set) {
          return Status::NotFound("entry '" + inv.arg + "' is not in set '" + inv.name + "'").WithToken(inv.arg);
        }
        return done("del", "would delete " + inv.arg + " from set " + inv.name);
      }
      IPTKIT_RETURN_IF_ERROR(sets.Delete(inv.name, inv.arg));
      return done("del", inv.global.verbosity > 0 ? "deleted " + inv.arg + " from set " + inv.name : "");
    }
    case SetVerb::kTest: {
      IPTKIT_ASSIGN_OR_RETURN(bool in_set, sets.Test(inv.name, inv.arg));
      doc["entry"] = inv.arg;
      doc["present"] = in_set;
      done("test", inv.global.quiet ? "" : inv.arg + (in_set ? " is in set " : " is NOT in set ") + inv.name);
      return in_set ? kExitOk : kExitCheckMiss;
    }
    case SetVerb::kLoad:
    case SetVerb::kSync: {
      const bool load = inv.verb == SetVerb::kLoad;
      IPTKIT_ASSIGN_OR_RETURN(std::string text, ReadInput(inv.arg, in));
      IPTKIT_ASSIGN_OR_RETURN(std::vector<SetEntrySpec> entries, ParseSetEntries(text, inv.name));
      SetProgressDisplay progress(err, env.stderr_is_terminal, !inv.global.quiet && entries.size() >= 1000,
                                  "set " + std::string(load ? "load " : "sync ") + inv.name);
      auto callback = [&](const SetProgress& p) { progress.Update(p); };
      Result<SetChangeReport> report = Status::Internal("not run");
      if (load) {
        report = sets.Load(inv.name, entries, {.grow = inv.grow, .dry_run = inv.dry_run, .progress = callback});
      } else {
        report = sets.Sync(inv.name, entries, {.minimal_diff = inv.diff, .dry_run = inv.dry_run, .progress = callback});
      }
      progress.Finish();
      if (!report.ok()) return report.status();
      doc["report"] = SetChangeReportToJson(*report);
      std::string summary =
          "set " + inv.name + ": " + would + "add " + std::to_string(report->added) + ", refresh " +
          std::to_string(report->refreshed) + (load ? "" : ", remove " + std::to_string(report->removed)) + "; " +
          std::to_string(report->entries_after) + " entries" +
          (report->grown_maxelem ? ", maxelem grown to " + std::to_string(*report->grown_maxelem) : "");
      return done(load ? "load" : "sync", summary);
    }
    case SetVerb::kFlush:
      if (inv.dry_run) {
        IPTKIT_ASSIGN_OR_RETURN(SetInfo info, sets.Get(inv.name, false));
        return done("flush", "would remove " + std::to_string(info.entry_count) + " entries of set " + inv.name);
      }
      IPTKIT_RETURN_IF_ERROR(sets.Flush(inv.name));
      return done("flush", "");
    case SetVerb::kSwap:
    case SetVerb::kRename: {
      const bool swap = inv.verb == SetVerb::kSwap;
      doc["other"] = inv.arg;
      if (inv.dry_run) {
        IPTKIT_ASSIGN_OR_RETURN(SetInfo a, sets.Get(inv.name, false));
        auto b = sets.Get(inv.arg, false);
        if (swap) {
          if (!b.ok()) return b.status();
          if (a.type != b->type || a.options.family != b->options.family) {
            return Status::InvalidArgument("sets '" + inv.name + "' (" + a.type + ") and '" + inv.arg + "' (" +
                                           b->type + ") differ in type or family: they cannot be swapped")
                .WithToken(inv.arg);
          }
        } else {
          if (b.ok()) return Status::AlreadyExists("set '" + inv.arg + "' exists already").WithToken(inv.arg);
          if (a.references > 0) {
            return Status::FailedPrecondition("set '" + inv.name + "' is in use; a referenced set cannot be renamed")
                .WithReason("referenced")
                .WithToken(inv.name);
          }
        }
        return done(swap ? "swap" : "rename", std::string("would ") + (swap ? "swap sets " : "rename set ") + inv.name +
                                                  (swap ? " and " : " to ") + inv.arg);
      }
      IPTKIT_RETURN_IF_ERROR(swap ? sets.Swap(inv.name, inv.arg) : sets.Rename(inv.name, inv.arg));
      return done(swap ? "swap" : "rename", "");
    }
    case SetVerb::kDestroy: {
      IPTKIT_ASSIGN_OR_RETURN(SetInfo info, sets.Get(inv.name, false));
      json removed = json::array();
      std::string text;
      if (inv.cascade && info.references > 0) {
        FirewallOptions options;
        options.netns = inv.global.netns;
        options.backend = inv.global.backend;
        options.wait = inv.global.wait;
        IPTKIT_ASSIGN_OR_RETURN(std::unique_ptr<Firewall> fw, Firewall::Open(options));
        IPTKIT_ASSIGN_OR_RETURN(std::vector<CascadeRule> rules, ReferencingRules(*fw, inv.name));
        Transaction txn;
        for (const CascadeRule& r : rules) {
          txn.Delete(r.family, r.table, r.chain, r.rule);
          std::string line = std::string(r.family == Family::kIPv6 ? "-6 " : "") + "-t " + r.table + " -D " + r.chain +
                             " " + FormatRuleSpec(r.rule);
          removed.push_back(line);
          text += would + "delete rule: " + line + "\n";
        }
        if (!inv.dry_run && !rules.empty()) {
          auto committed = fw->Commit(txn);
          if (!committed.ok())
            return committed.status().WithContext("deleting the rules that use set '" + inv.name + "'");
        }
      } else if (info.references > 0 && inv.dry_run) {
        return Status::FailedPrecondition("set '" + inv.name + "' is in use (" + std::to_string(info.references) +
                                          " reference(s)); --cascade deletes the rules that use it first")
            .WithReason("referenced")
            .WithToken(inv.name);
      }
      doc["rules_deleted"] = removed;
      if (inv.dry_run) return done("destroy", text + "would destroy set " + inv.name);
      Status destroyed = sets.Destroy(inv.name);
      if (!destroyed.ok()) {
        if (!removed.empty()) {
          return destroyed.WithContext(std::to_string(removed.size()) +
                                       " referencing rule(s) were deleted, but the set was not destroyed");
        }
        if (destroyed.details().reason == std::optional<std::string>("referenced")) {
          return destroyed.WithContext("add --cascade to delete the rules that use it first");
        }
        return destroyed;
      }
      return done("destroy", inv.global.verbosity > 0 ? text + "destroyed set " + inv.name : "");
    }
  }
  return kExitOk;
}

// ---- Through iptkitd (--daemon): the same commands as REST requests on its unix socket (docs/rest.md "Sets") ----

// While iptkitd runs a large load or sync: its `set_progress` events of that set and op (GET /v1/events on the same
// socket, on a thread of its own) drive `display`. Best effort: without events the command simply shows none.
class DaemonProgressFeed {
 public:
  DaemonProgressFeed(const GlobalOptions& g, const std::string& set, const std::string& op,
                     SetProgressDisplay& display) {
    std::string target = "/v1/events";
    if (!g.netns.empty()) target += "?netns=" + UrlQueryValue(g.netns);
    std::string socket = g.daemon.value_or(std::string(kDefaultDaemonSocket));
    thread_ = std::thread([this, socket, target, set, op, &display] {
      UnixHttpClient client(socket, std::chrono::seconds(5));
      (void)client.StreamEvents(
          target,
          [&](std::string_view data) {
            json j = json::parse(std::string(data), nullptr, /*allow_exceptions=*/false);
            if (!j.is_object() || j.value("set", "") != set || j.value("op", "") != op) return true;
            const std::string stage = j.value("stage", "");
            SetProgress p;
            p.stage = stage == "checked"   ? SetProgress::Stage::kChecked
                      : stage == "copied"  ? SetProgress::Stage::kCopied
                      : stage == "swapped" ? SetProgress::Stage::kSwapped
                      : stage == "done"    ? SetProgress::Stage::kDone
                                           : SetProgress::Stage::kLoading;
            p.done = j.value("done", size_t{0});
            p.total = j.value("total", size_t{0});
            display.Update(p);
            return p.stage != SetProgress::Stage::kDone;
          },
          stop_, &opened_);
      finished_ = true;
    });
    // The request goes out once the subscription is in place (or after 1 s without it), so that no event is missed.
    for (int i = 0; i < 100 && !opened_ && !finished_; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ~DaemonProgressFeed() { Stop(); }
  // Waits briefly for the last events (the answer may overtake them), then ends the stream.
  void Stop() {
    if (!thread_.joinable()) return;
    for (int i = 0; i < 50 && opened_ && !finished_; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    stop_ = true;
    thread_.join();
  }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<bool> opened_{false};
  std::atomic<bool> finished_{false};
  std::thread thread_;
};

Result<int> ExecuteViaDaemon(const SetInvocation& inv, std::istream& in, std::ostream& out, std::ostream& err,
                             const Environment& env) {
  const GlobalOptions& g = inv.global;
  const bool json_out = g.json;
  const std::string base = "/v1/sets/" + UrlQueryValue(inv.name);
  const std::string dry = inv.dry_run ? "dry_run=1" : "";
  auto query = [](std::string path, const std::vector<std::string>& params) {
    char sep = '?';
    for (const std::string& p : params) {
      if (p.empty()) continue;
      path += sep + p;
      sep = '&';
    }
    return path;
  };
  json doc = {{"command", "set"}, {"set", inv.name}, {"dry_run", inv.dry_run}};
  auto done = [&](const std::string& verb, const std::string& text) {
    doc["op"] = verb;
    if (json_out) {
      out << doc.dump(2) << "\n";
    } else if (!text.empty()) {
      out << text << "\n";
    }
    return kExitOk;
  };
  const std::string would = inv.dry_run ? "would " : "";
  switch (inv.verb) {
    case SetVerb::kHelp:
      out << inv.text;
      return kExitOk;
    case SetVerb::kList: {
      const std::string entries = inv.terse ? "entries=0" : "entries=1";
      std::vector<SetInfo> list;
      if (inv.name.empty()) {
        IPTKIT_ASSIGN_OR_RETURN(json j, DaemonRequest(g, "GET", query("/v1/sets", {entries})));
        for (const json& s : j["sets"]) list.push_back(SetInfoFromJson(s));
      } else {
        IPTKIT_ASSIGN_OR_RETURN(json j, DaemonRequest(g, "GET", query(base, {entries})));
        list.push_back(SetInfoFromJson(j));
      }
      if (json_out) {
        json arr = json::array();
        for (const SetInfo& s : list) arr.push_back(SetInfoToJson(s, !inv.terse));
        out << json({{"sets", arr}}).dump(2) << "\n";
      } else {
        for (size_t i = 0; i < list.size(); ++i) out << (i ? "\n" : "") << SetText(list[i], !inv.terse);
      }
      return kExitOk;
    }
    case SetVerb::kCreate: {
      IPTKIT_ASSIGN_OR_RETURN(SetOptions options, CreateOptions(inv));
      json body = {{"name", inv.name}, {"type", inv.arg}, {"options", SetOptionsToJson(options)}};
      IPTKIT_RETURN_IF_ERROR(DaemonRequest(g, "POST", query("/v1/sets", {dry}), body.dump()).status());
      doc["type"] = inv.arg;
      return done("create",
                  inv.dry_run || g.verbosity > 0 ? would + "create set " + inv.name + " (" + inv.arg + ")" : "");
    }
    case SetVerb::kAdd: {
      IPTKIT_ASSIGN_OR_RETURN(SetAddOptions options, AddOptions(inv));
      json body = {{"entry", inv.arg}};
      if (options.timeout) body["timeout"] = *options.timeout;
      if (options.comment) body["comment"] = *options.comment;
      if (options.no_refresh) body["no_refresh"] = true;
      IPTKIT_RETURN_IF_ERROR(DaemonRequest(g, "POST", query(base + "/entries", {dry}), body.dump()).status());
      doc["entry"] = inv.arg;
      if (options.timeout) doc["timeout"] = *options.timeout;
      if (options.comment) doc["comment"] = *options.comment;
      return done("add", inv.dry_run || g.verbosity > 0 ? would + "add " + inv.arg + " to set " + inv.name : "");
    }
    case SetVerb::kDel: {
      json body = {{"entry", inv.arg}};
      IPTKIT_RETURN_IF_ERROR(DaemonRequest(g, "DELETE", query(base + "/entries", {dry}), body.dump()).status());
      doc["entry"] = inv.arg;
      return done("del", inv.dry_run || g.verbosity > 0 ? would + "delete " + inv.arg + " from set " + inv.name : "");
    }
    case SetVerb::kTest: {
      IPTKIT_ASSIGN_OR_RETURN(json j, DaemonRequest(g, "GET", base + "/test?entry=" + UrlQueryValue(inv.arg)));
      const bool in_set = j.value("present", false);
      doc["entry"] = inv.arg;
      doc["present"] = in_set;
      done("test", g.quiet ? "" : inv.arg + (in_set ? " is in set " : " is NOT in set ") + inv.name);
      return in_set ? kExitOk : kExitCheckMiss;
    }
    case SetVerb::kLoad:
    case SetVerb::kSync: {
      const bool load = inv.verb == SetVerb::kLoad;
      IPTKIT_ASSIGN_OR_RETURN(std::string text, ReadInput(inv.arg, in));
      // Checked here first (line numbers of this file), then sent as restore text: the daemon names the same lines.
      IPTKIT_ASSIGN_OR_RETURN(std::vector<SetEntrySpec> entries, ParseSetEntries(text, inv.name));
      const std::string path = query(base + (load ? "/load" : "/sync"),
                                     {dry, load && inv.grow ? "grow=1" : "", !load && inv.diff ? "mode=minimal" : ""});
      // Progress as the daemon reports it (a bar on a terminal, plain lines otherwise), as for a local load.
      const bool show = !g.quiet && entries.size() >= 1000;
      SetProgressDisplay progress(err, env.stderr_is_terminal, show,
                                  "set " + std::string(load ? "load " : "sync ") + inv.name);
      std::optional<DaemonProgressFeed> feed;
      if (show) feed.emplace(g, inv.name, load ? "load" : "sync", progress);
      Result<json> answered = DaemonRequest(g, "POST", path, text, "text/plain");
      if (feed) feed->Stop();
      progress.Finish();
      IPTKIT_ASSIGN_OR_RETURN(json j, std::move(answered));
      const json& r = j["report"];
      doc["report"] = r;
      std::string summary =
          "set " + inv.name + ": " + would + "add " + std::to_string(r.value("added", 0)) + ", refresh " +
          std::to_string(r.value("refreshed", 0)) + (load ? "" : ", remove " + std::to_string(r.value("removed", 0))) +
          "; " + std::to_string(r.value("entries_after", 0)) + " entries" +
          (r.contains("grown_maxelem") ? ", maxelem grown to " + std::to_string(r["grown_maxelem"].get<uint64_t>())
                                       : "");
      return done(load ? "load" : "sync", summary);
    }
    case SetVerb::kFlush: {
      IPTKIT_ASSIGN_OR_RETURN(json j, DaemonRequest(g, "POST", query(base + "/flush", {dry})));
      return done("flush", inv.dry_run ? "would remove " + std::to_string(j.value("entries_removed", 0)) +
                                             " entries of set " + inv.name
                                       : "");
    }
    case SetVerb::kSwap:
    case SetVerb::kRename: {
      const bool swap = inv.verb == SetVerb::kSwap;
      json body = {{swap ? "with" : "to", inv.arg}};
      IPTKIT_RETURN_IF_ERROR(
          DaemonRequest(g, "POST", query(base + (swap ? "/swap" : "/rename"), {dry}), body.dump()).status());
      doc["other"] = inv.arg;
      return done(swap ? "swap" : "rename", inv.dry_run
                                                ? std::string("would ") + (swap ? "swap sets " : "rename set ") +
                                                      inv.name + (swap ? " and " : " to ") + inv.arg
                                                : "");
    }
    case SetVerb::kDestroy: {
      IPTKIT_ASSIGN_OR_RETURN(json j, DaemonRequest(g, "DELETE", query(base, {dry, inv.cascade ? "cascade=1" : ""})));
      json removed = json::array();
      std::string text;
      for (const json& r : j["rules_deleted"]) {
        std::string line = std::string(r.value("family", "") == "ipv6" ? "-6 " : "") + "-t " + r.value("table", "") +
                           " -D " + r.value("chain", "") + " " + r.value("spec", "");
        removed.push_back(line);
        text += would + "delete rule: " + line + "\n";
      }
      doc["rules_deleted"] = removed;
      if (inv.dry_run) return done("destroy", text + "would destroy set " + inv.name);
      return done("destroy", g.verbosity > 0 ? text + "destroyed set " + inv.name : "");
    }
  }
  return kExitOk;
}

}  // namespace

int RunSetCommand(const SetInvocation& inv, std::istream& in, std::ostream& out, std::ostream& err,
                  const Environment& env) {
  Result<int> code = inv.global.daemon ? ExecuteViaDaemon(inv, in, out, err, env) : Execute(inv, in, out, err, env);
  out.flush();
  if (!code.ok()) {
    // An error about one word of the command line (the entry, a create option): mark it there.
    Status status = code.status();
    if (status.details().token && !status.details().argument) {
      for (size_t i = 0; i < inv.args.size(); ++i) {
        if (inv.args[i] == *status.details().token) {
          status = status.WithArgument(static_cast<int>(i) + 1);
          break;
        }
      }
    }
    err << FormatError(status, inv.args);
    return ExitCodeFor(status);
  }
  return *code;
}

int SetMain(const std::vector<std::string>& args, std::istream& in, std::ostream& out, std::ostream& err,
            const Environment& env) {
  Result<SetInvocation> inv = ParseSetCommandLine(args);
  if (!inv.ok()) {
    err << FormatError(inv.status(), args);
    return ExitCodeFor(inv.status());
  }
  return RunSetCommand(*inv, in, out, err, env);
}

}  // namespace iptkit::cli
