// Firewall: the entry point of the iptkit library. One Firewall manages the iptables rules of one network
// namespace (the caller's, or one named by --netns NAME|PATH) through one backend.
//
// Reads return structured rulesets (or canonical iptables-save text); every change is a Transaction
// (docs/architecture.md §4). Declarative desired state goes through PlanApply / Apply.
// Thread-safety: a Firewall is not thread-safe; use one per thread or serialize calls (the daemon has one
// writer thread). Different Firewall objects may be used concurrently: the kernel commit is atomic per table and
// iptkit guards position-based edits with `-C` preconditions.
//
//   auto fw = iptkit::Firewall::Open({.netns = "blue"});
//   if (!fw.ok()) return Fail(fw.status());
//   auto rules = (*fw)->List(iptkit::Family::kIPv4, "filter");
//   iptkit::Transaction txn;
//   txn.Append(iptkit::Family::kIPv4, "filter", "INPUT", *iptkit::ParseRuleSpec("-j ACCEPT", v4));
//   auto done = (*fw)->Commit(txn);
#ifndef IPTKIT_FIREWALL_H_
#define IPTKIT_FIREWALL_H_

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "iptkit/backend_info.h"
#include "iptkit/desired.h"
#include "iptkit/model.h"
#include "iptkit/status.h"
#include "iptkit/transaction.h"

namespace iptkit {

namespace backend {
class Backend;
}

struct FirewallOptions {
  // Network namespace: "" = the caller's; a name (as `ip netns`, /run/netns/NAME) or a path (/proc/PID/ns/net).
  std::string netns;
  BackendKind backend = BackendKind::kAuto;
  // Bound for the xtables lock and iptables' own --wait; a timeout is Unavailable ("busy"), never a hang.
  std::chrono::milliseconds wait = std::chrono::seconds(10);
  // Native backend, long-lived users (iptkitd): follow nf_tables' change notifications to know when the snapshot
  // a transaction is planned on is still current, instead of asking the kernel before each transaction; tables
  // another writer changed are read again. Costs a second socket; a process doing one operation gains nothing.
  bool event_cache = false;
  // Native backend, processes that commit once and exit (the iptkit CLI): the kernel is not asked to echo the
  // rules a commit adds (NLM_F_ECHO), which it builds and sends back only so that the snapshot learns their
  // handles for later calls; after such a commit the snapshot is dropped (a later call reads the kernel again).
  // Errors are reported as before: the batch's answer is read either way.
  bool one_shot = false;
  // Test hook: called after the snapshot was read and before the first commit of a transaction (used by the
  // concurrency tests to slip in a foreign writer). Not for production use.
  std::function<void()> before_commit_hook;
};

// What List and Save do with a table they cannot show faithfully: one holding a rule whose printed form loads as
// another rule (Rule::lossy, e.g. iptables-legacy prints `-p tcp -m tcp ! --sport :` as the match-all
// `-p tcp -m tcp`), or an unrepresentable table (Table::unrepresentable_reason, e.g. an nft rule with a set lookup
// that iptables-nft-save prints as `-A INPUT -j DROP`). Restoring such a text elsewhere installs other rules.
struct ListOptions {
  // Such a table is refused (FailedPrecondition naming the table, chain, rule and why; StatusDetails reason
  // "lossy" or "unrepresentable") unless set; then it is returned with the marks, and Save marks its lines
  // (SaveFormatOptions::mark_lossy).
  bool allow_lossy = false;
};
struct SaveOptions {
  bool counters = false;     // "[packets:bytes]" before each rule, as iptables-save -c
  bool allow_lossy = false;  // as ListOptions::allow_lossy
};

class Firewall {
 public:
  static Result<std::unique_ptr<Firewall>> Open(const FirewallOptions& options = {});
  // For tests and embedding: a Firewall over a given backend (internal type; see src/backend/backend.h).
  static std::unique_ptr<Firewall> WithBackend(std::unique_ptr<backend::Backend> backend,
                                               const FirewallOptions& options = {});
  ~Firewall();
  Firewall(const Firewall&) = delete;
  Firewall& operator=(const Firewall&) = delete;

  // ---- Query ----
  // Every table of the family (or one), with counters.
  Result<Ruleset> List(Family family, std::optional<std::string> table = std::nullopt, const ListOptions& options = {});
  // Canonical iptables-save text (without "#" comment lines, but for the lossy marks of allow_lossy).
  Result<std::string> Save(Family family, std::optional<std::string> table, const SaveOptions& options);
  // Save(family, table, {.counters = counters}).
  Result<std::string> Save(Family family, std::optional<std::string> table = std::nullopt, bool counters = false);
  // Whether the chain holds the rule, as `iptables -C` with the same arguments would find it (backend::SameRule:
  // the same canonical spec, or for a rule whose printed form is lossy, the same kernel rule). `-c` is refused,
  // as iptables does.
  Result<bool> Check(Family family, const std::string& table, const std::string& chain, const Rule& rule);
  Result<FirewallInfo> Info();
  // The rule as the kernel would print it (canonical spec); e.g. adds "/32" and "-m tcp".
  Result<Rule> Canonicalize(Family family, const std::string& table, const Rule& rule);

  // ---- Change ----
  Result<CommitResult> Commit(const Transaction& txn, const CommitOptions& options = {});
  // Replaces the tables named in `text` (iptables-restore format) — or, with noflush, adds to them — as one
  // transaction. Each rule goes through the same checks as an appended one and is sent as written. Tables that are
  // unrepresentable are refused, and so is replacing a table that holds a lossy rule (its undo would rewrite the rule
  // from its printed form). Errors about a rule name its line of `text` (StatusDetails line).
  struct RestoreOptions {
    std::function<void(const CommitProgress&)> progress = nullptr;  // as CommitOptions::progress
    bool noflush = false;
    bool counters = false;  // take "[p:b]" from the text
    bool dry_run = false;
  };
  Result<CommitResult> Restore(Family family, std::string_view text, const RestoreOptions& options);

  // ---- Declarative ----
  Result<ApplyPlan> PlanApply(const DesiredState& desired);
  Result<ApplyPlan> Apply(const DesiredState& desired, const CommitOptions& options = {});

  backend::Backend& backend() { return *backend_; }

 private:
  Firewall(std::unique_ptr<backend::Backend> backend, FirewallOptions options);
  std::unique_ptr<backend::Backend> backend_;
  FirewallOptions options_;
};

}  // namespace iptkit

#endif  // IPTKIT_FIREWALL_H_
