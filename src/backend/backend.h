// Backend: the one seam between iptkit and the kernel (leveldb's Env). Everything that reads or writes netfilter
// state goes through it; tests swap in FakeBackend (in-memory) or FaultBackend (fails on demand).
//
// A backend reads whole-family snapshots and commits whole transactions: Commit takes every table batch of a
// transaction at once (any tables, both families). What one Commit guarantees is in the backend's traits: a backend
// with atomic_across_tables commits the whole call as one kernel transaction; the others (restore: one
// "*table ... COMMIT" block given to iptables-restore --noflush per table; fake: one table swapped in at a time)
// commit table by table, each atomically, and undo the tables already committed with their guarded inverses when a
// later one fails (CommitTableByTable). Ops are exactly the iptables-restore commands; rules inside ops are model
// values printed with FormatRuleSpec.
// Thread-safety: a Backend is used by one thread at a time.
#ifndef IPTKIT_SRC_BACKEND_BACKEND_H_
#define IPTKIT_SRC_BACKEND_BACKEND_H_

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "iptkit/backend_info.h"
#include "iptkit/model.h"
#include "iptkit/status.h"

namespace iptkit::backend {

// One iptables-restore command inside a table block.
struct TableOp {
  enum class Kind {
    kAppend,       // -A CHAIN rule
    kInsert,       // -I CHAIN index rule
    kCheck,        // -C CHAIN rule      (a precondition: a miss aborts the whole block)
    kDelete,       // -D CHAIN rule      (first equal rule)
    kDeleteAt,     // -D CHAIN index     (only used where the index cannot have moved, e.g. fake tests)
    kReplace,      // -R CHAIN index rule
    kNewChain,     // -N CHAIN
    kDeleteChain,  // -X CHAIN
    kRenameChain,  // -E CHAIN arg
    kFlush,        // -F [CHAIN]
    kZero,         // -Z [CHAIN]
    kPolicy,       // -P CHAIN arg
  };
  Kind kind = Kind::kAppend;
  std::string chain;
  int index = 0;
  Rule rule;
  std::string arg;
  // kInsert: the index only says "right after the rule before it in the snapshot (or at the head)", so a backend
  // with handles may place the rule after that rule's handle even when other rules moved meanwhile (the kernel
  // refuses the op when that rule is gone). kCheck: a guard of the anchor of the insert that follows it, which that
  // insert's handle already checks. Backends without handles ignore it (iptables-restore sends `-I N`, `-C`).
  // Set by the daemon for its own placements (docs/architecture.md "Generation checks"); never by the parser.
  bool anchored = false;
  friend bool operator==(const TableOp&, const TableOp&) = default;

  // The op from its parts; the ones a kind does not use stay empty:
  //   TableOp::Make(Kind::kInsert, "INPUT", rule, 3), TableOp::Make(Kind::kPolicy, "INPUT", {}, 0, "DROP").
  static TableOp Make(Kind kind, std::string chain, Rule rule = {}, int index = 0, std::string arg = {}) {
    TableOp op;
    op.kind = kind;
    op.chain = std::move(chain);
    op.index = index;
    op.rule = std::move(rule);
    op.arg = std::move(arg);
    return op;
  }
};

struct TableBatch {
  Family family = Family::kIPv4;
  std::string table;
  std::vector<TableOp> ops;
  // Restore counters "[p:b]" given on rules (only for whole-table restore with counters).
  bool with_counters = false;
  // Replace the whole table (no --noflush semantics): the batch starts from an empty table. Used by
  // `restore` without --noflush and by its rollback to a pre-image.
  bool flush_table = false;
};

// Renders a batch as the restore block iptkit sends: "*table\n<one line per op>\nCOMMIT\n". Never emits
// builtin-chain declarations (they would reset an admin's policy, docs/architecture.md §3); with flush_table it
// declares the chains of the new table the way iptables-save does, which is what a whole-table restore means.
std::string RenderRestoreBlock(const TableBatch& batch);
// One op as a restore line ("-A INPUT -s 1.2.3.4/32 -j ACCEPT").
std::string RenderRestoreLine(const TableOp& op);

// One table's part of a transaction as Commit receives it.
struct CommitTable {
  // What is sent: one atomic commit of the table (or part of one kernel transaction, see BackendTraits).
  TableBatch batch;
  // Undoes `batch` when committed right after it; used by backends that commit table by table, to roll back when a
  // later table fails. Guarded: every op that removes a rule names it by spec (or is preceded by `-C CHAIN spec`),
  // so on a table that changed in the meantime the inverse fails as a whole instead of removing a foreign rule.
  // Re-added rules carry the counters of the snapshot (with_counters is set); packets counted between the snapshot
  // and the rollback are lost. A flush_table batch's inverse is the table's pre-image (a flush_table batch itself).
  TableBatch inverse;
  // `batch` zeroes counters (-Z); the old counters cannot be restored by `inverse`.
  bool irreversible = false;
};

// What a backend guarantees and needs; callers decide by these, never by comparing names.
struct BackendTraits {
  std::string name;     // "nft", "legacy", "fake" (for messages, logs and `info`)
  std::string variant;  // the iptables variant whose rules it reads and writes: "nft", "legacy"; "" for the fake
  // One Commit is one kernel transaction across every table and family in it; otherwise table by table.
  bool atomic_across_tables = false;
  // Rules carry kernel handles; delete and replace name the rule itself, not its position or spec.
  bool handles = false;
  // Read → plan → Commit must hold Lock() to exclude other writers (legacy's xtables lock).
  bool needs_lock = false;
  // A chain renamed by one op may be used by a later op of the same commit (iptables-nft-restore 1.8.9 rejects
  // that at COMMIT with "No chain/target/match by that name").
  bool rename_then_use = true;
  // Under Lock(), Commit edits the very table state the last ReadChainsForPlan returned (native-legacy: the libiptc
  // handle that read it, as iptables-legacy commits what it read; the kernel refuses it when another writer changed
  // the table's size meanwhile, which is Aborted). A plan on such a snapshot may address rules by position and read
  // only the chains its ops name, as with handles.
  bool commits_plan_snapshot = false;
};

// How a Commit went.
struct CommitReport {
  bool atomic_across_tables = false;  // the whole call was one kernel transaction
  std::string backend;                // the backend that committed it (traits().name)
  // Set when a backend handed the whole call to another one (the native backend to the restore backend for ops it
  // cannot express): why.
  std::string fallback_reason;
};

// How much of a snapshot a plan needs (Backend::ReadForPlan).
enum class SnapshotDetail {
  kChains,     // every table and chain (names, policies), no rules: appends, inserts at the head, chain ops
  kPositions,  // every chain with one placeholder Rule{} per rule it holds: ops by position without an expected rule
  kRules,      // every rule as a model value (Read)
};

// Which chains' rules a plan looks at (Backend::ReadChainsForPlan). Every chain of the family (of `tables`, when
// given) is in the snapshot (names, policies: a jump target's existence needs no rules) unless `named_only` says
// the plan looks up no other; only the chains in scope carry their rules at the detail asked.
struct ChainScope {
  bool every_chain = true;                               // the rules of every chain
  std::set<std::pair<std::string, std::string>> chains;  // else: (table, chain) whose rules are read
  // Chains (not in `chains`) whose rules the plan only searches for these rules, as the user gave them (delete by
  // spec). A backend that can compare binary forms may give such a chain with only the rules that are, byte for
  // byte, one of these (as the canonical rule) and Rule{} placeholders for the others; when one of them is not
  // found that way it gives the chain's rules decoded, as for `chains`. (A chain in `chains` too, asked at a detail
  // below kRules, is given the same way: its placeholders show these rules where they are.)
  std::map<std::pair<std::string, std::string>, std::vector<Rule>> probes;
  // false: the plan needs no positions in the chains of `probes` that are not in `chains` (it only deletes from them
  // by spec, and it is never undone op by op: a transaction of one table). A backend may then give such a chain
  // with only its rules that are, byte for byte, one of the probes, in chain order, without placeholders; positions
  // and sizes of that chain in the snapshot (and so the plan's inverse ops on it) mean nothing, and a Commit of the
  // plan deletes by spec the first rule that is byte for byte the rule (the one the plan found).
  bool probe_positions = true;
  // Not empty: the tables the plan touches (every table of its ops); a backend may leave the family's other tables
  // out of the snapshot (native-legacy reads only these, as iptables-legacy reads only the table it changes).
  std::set<std::string> tables;
  // true (with every_chain false): the plan looks up no chain but those of `chains`, `probes` and `named` (as
  // iptables-nft fetches only the chains a command names); a backend may leave every other chain out of the
  // snapshot, builtin ones too (a chain asked for that the kernel does not have is absent, or a builtin chain
  // iptables-nft would create). `named`: chains whose existence (or policy) alone the plan needs: a jump target, a
  // chain to create, a chain whose policy is set.
  bool named_only = false;
  std::set<std::pair<std::string, std::string>> named;
  bool Has(const std::string& table, const std::string& chain) const {
    return every_chain || chains.count({table, chain}) != 0 || probes.count({table, chain}) != 0;
  }
  // Whether a snapshot read with this scope lists the chain (every chain, unless named_only).
  bool Lists(const std::string& table, const std::string& chain) const {
    return !named_only || Has(table, chain) || named.count({table, chain}) != 0;
  }
  // Whether a snapshot read with this scope lists every chain a plan with scope `other` may look up.
  bool ListsAll(const ChainScope& other) const {
    if (!named_only) return true;
    if (!other.named_only) return false;
    for (const auto& c : other.chains) {
      if (!Lists(c.first, c.second)) return false;
    }
    for (const auto& [c, rules] : other.probes) {
      if (!Lists(c.first, c.second)) return false;
    }
    for (const auto& c : other.named) {
      if (!Lists(c.first, c.second)) return false;
    }
    return true;
  }
  // Whether a snapshot read with this scope holds every chain `other` asks for (one read with probes holds
  // placeholders, and answers nothing else).
  bool Covers(const ChainScope& other) const {
    if (!ListsAll(other)) return false;
    if (every_chain) return true;
    if (other.every_chain || !probes.empty()) return false;
    for (const auto& c : other.chains) {
      if (!chains.count(c)) return false;
    }
    for (const auto& [c, rules] : other.probes) {
      if (!chains.count(c)) return false;
    }
    return true;
  }
  static ChainScope One(std::string table, std::string chain) {
    ChainScope s;
    s.every_chain = false;
    s.tables.insert(table);
    s.chains.emplace(std::move(table), std::move(chain));
    return s;
  }
};

// What Backend::ReadSaveText returns: the save text and what it was printed from.
struct SaveText {
  std::string text;  // FormatSave of the read (mark_lossy), with or without counters as asked
  // The tables printed, for the caller's lossy checks: every table with its unrepresentable_reason and chains; rules
  // only where the backend built them (a backend that prints straight from the kernel's form leaves the chains
  // empty, and then none of its rules is lossy).
  Ruleset read;
};

// Receives the rules of a read one at a time (Backend::ReadRules): chain after chain, each chain's rules in their
// order (the chains in the backend's order, which need not be the model's). `rule` is valid only during the call.
class RuleVisitor {
 public:
  virtual ~RuleVisitor() = default;
  virtual void OnRule(const std::string& table, const std::string& chain, const Rule& rule) = 0;
  // The read starts again (the ruleset changed while it was read): forget every rule handed over so far.
  virtual void Reset() = 0;
};

class LockGuard {
 public:
  virtual ~LockGuard() = default;
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual const BackendTraits& traits() const = 0;

  // A snapshot of every table of the family (or only `table`), with counters. Never partial: when the save
  // tool fails or prints one of the warnings that mean its output is incomplete, this fails. A table whose
  // save text is not faithful (nft: rule count differs from the kernel's) is returned with
  // Table::unrepresentable_reason set.
  // With fresh_counters = false the backend may return a cached snapshot that is exactly the kernel's current
  // ruleset except for counters, which may be stale (enough for planning; nft: the generation id proves it).
  virtual Result<Ruleset> Read(Family family, const std::optional<std::string>& table = std::nullopt,
                               bool fresh_counters = true) = 0;

  // The text FormatSave prints for Read(family, table) (mark_lossy; "[p:b]" counters when `counters`), with what
  // it was printed from. The default does exactly that; a backend may print without building the model (the native
  // backend does: byte for byte the same text).
  virtual Result<SaveText> ReadSaveText(Family family, const std::optional<std::string>& table, bool counters);

  // Read(family, table) handed to `visitor` rule by rule; returns the tables and chains read (unrepresentable_reason
  // set as Read sets it) without their rules. The default walks Read's model; a backend may hold only a slice of
  // rules at a time (the native backend does).
  virtual Result<Ruleset> ReadRules(Family family, const std::optional<std::string>& table, RuleVisitor& visitor);

  // A snapshot of the family to plan on (counters may be stale), with only the `detail` the plan needs. Backends with
  // handles (BackendTraits::handles) resolve positions against the snapshot at commit and may skip what the plan does
  // not need (the native backend then reads no rules for an append); a table's unrepresentable_reason is only known
  // at kRules. The default is Read(family, nullopt, false).
  virtual Result<Ruleset> ReadForPlan(Family family, SnapshotDetail detail) {
    (void)detail;
    return Read(family, std::nullopt, /*fresh_counters=*/false);
  }

  // ReadForPlan narrowed to the chains of `scope`: every table and chain of the family, and the rules (at `detail`)
  // of the chains in scope only; a chain out of scope shows no rules (whatever it holds), and a table's
  // unrepresentable_reason only judges its chains and the chains in scope. Planning an op on chain C needs C's rules
  // only, as iptables itself reads only the chain it changes. Backends with handles may read just that (the native
  // backend dumps the rules of each chain in scope); the default is ReadForPlan(family, detail), the whole family.
  virtual Result<Ruleset> ReadChainsForPlan(Family family, SnapshotDetail detail, const ChainScope& scope) {
    (void)scope;
    return ReadForPlan(family, detail);
  }

  // A fast path of `check`: true when `table`/`chain` holds a rule whose binary form is exactly the one `rule` (a
  // canonical rule, as Canonicalize returns it) is written as, compared the way iptables -C compares rules (their
  // binary forms, nft.c nft_rule_cmp) but byte for byte; false when it found none that way or cannot compare so.
  // False is not an answer: iptables may call rules equal that differ in bytes it ignores, so the caller then
  // decides on the decoded rules. The default is false.
  virtual Result<bool> HoldsExactRule(Family family, const std::string& table, const std::string& chain,
                                      const Rule& rule) {
    (void)family, (void)table, (void)chain, (void)rule;
    return false;
  }

  // Whether the kernel still holds exactly the family's ruleset as this backend last read or committed it (counters
  // aside), so that a caller who kept its own copy of that state (the daemon's writer) may plan on it without a
  // Read. Cheap (nft: the generation id; legacy: the x_tables fingerprint, with the same conditions as a cached
  // Read). false means "not known", never an error of the kernel's; the default is false.
  virtual bool Unchanged(Family family) { return false; }

  // Commits every batch of a transaction, in order (batches without ops are skipped). On failure nothing of the
  // transaction is left changed: with atomic_across_tables nothing was committed; otherwise the tables committed
  // before the failing one were undone with their inverses (CommitTableByTable has the exact contract and the error
  // texts). The Status names the failing op (its restore line) and carries the tool's stderr.
  virtual Result<CommitReport> Commit(const std::vector<CommitTable>& tables) = 0;
  // One table alone (its inverse unused): Commit({{.batch = batch}}). Derived classes say `using Backend::Commit;`.
  Status Commit(const TableBatch& batch);

  // Canonical forms (as this backend's save would print them) of rules meant for `table`. Rules may jump to
  // chains that do not exist yet. Results are cached per distinct spec. Errors name the rule's spec and carry
  // iptables' own message (unknown option, bad value...).
  virtual Result<std::vector<Rule>> Canonicalize(Family family, const std::string& table,
                                                 const std::vector<Rule>& rules) = 0;

  // Serializes read → plan → commit against other writers of this variant for the guard's lifetime
  // (legacy: flock on the xtables lock; nft: no-op, correctness comes from -C preconditions).
  // Times out with Unavailable after `wait`.
  virtual Result<std::unique_ptr<LockGuard>> Lock(std::chrono::milliseconds wait) = 0;

  // Variants, their tables and rule counts, foreign nft chains.
  virtual Result<FirewallInfo> Info() = 0;
};

// Commit for backends that commit table by table: commits tables[0], tables[1], ... in order with `commit_one`
// (atomic per table), skipping batches without ops. A lone table's error is returned as it is. When table k of
// several fails, commits the inverse batches of the tables committed before it, newest first, and returns table
// k's error (same code, same details) prefixed with which table failed, e.g. "commit of ipv4 nat (table 2 of 2) failed,
// ipv4 filter rolled back: <error>". If an inverse fails too, returns Internal naming the original error, each failed
// inverse and which tables are left changed; the other inverses are still attempted.
Result<CommitReport> CommitTableByTable(const std::vector<CommitTable>& tables, const std::string& backend_name,
                                        const std::function<Status(const TableBatch&)>& commit_one);

struct BackendOptions {
  std::string netns;  // "" = caller's, NAME or PATH
  std::chrono::milliseconds wait = std::chrono::seconds(10);
  // The xtables lock iptables-legacy serializes on (per mount namespace). Configurable for tests.
  std::string xtables_lock_path = "/run/xtables.lock";
  // Native backend: keep cached snapshots fresh from nf_tables' change notifications (long-lived users).
  bool event_cache = false;
  // Native backend: no echo of the rules a commit adds (FirewallOptions::one_shot).
  bool one_shot = false;
};

// Creates the backend for `kind` (kAuto detects the variant holding rules). Defined in backend_factory.cc.
Result<std::unique_ptr<Backend>> MakeBackend(BackendKind kind, const BackendOptions& options);

}  // namespace iptkit::backend

#endif  // IPTKIT_SRC_BACKEND_BACKEND_H_
