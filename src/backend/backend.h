// Backend: the one seam between iptkit and the kernel (leveldb's Env). Everything that reads or writes netfilter
// state goes through it; tests swap in FakeBackend (in-memory) or FaultBackend (fails on demand).
//
// A backend reads whole-family snapshots and commits one table at a time, atomically: every op of a TableBatch
// takes effect or none does (restore backend: one "*table ... COMMIT" block given to iptables-restore --noflush;
// fake: applied to a copy, swapped in on success). Ops are exactly the iptables-restore commands; rules inside
// ops are model values printed with FormatRuleSpec.
// Thread-safety: a Backend is used by one thread at a time.
#ifndef IPTKIT_SRC_BACKEND_BACKEND_H_
#define IPTKIT_SRC_BACKEND_BACKEND_H_

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "iptkit/firewall.h"
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
// builtin-chain declarations (they would reset an admin's policy, DESIGN.md §5); with flush_table it declares
// the chains of the new table the way iptables-save does, which is what a whole-table restore means.
std::string RenderRestoreBlock(const TableBatch& batch);
// One op as a restore line ("-A INPUT -s 1.2.3.4/32 -j ACCEPT").
std::string RenderRestoreLine(const TableOp& op);

class LockGuard {
 public:
  virtual ~LockGuard() = default;
};

class Backend {
 public:
  virtual ~Backend() = default;

  // "nft", "legacy", "fake".
  virtual std::string name() const = 0;

  // A snapshot of every table of the family (or only `table`), with counters. Never partial: when the save
  // tool fails or prints one of the warnings that mean its output is incomplete, this fails. A table whose
  // save text is not faithful (nft: rule count differs from the kernel's) is returned with
  // Table::unrepresentable_reason set.
  // With fresh_counters = false the backend may return a cached snapshot that is exactly the kernel's current
  // ruleset except for counters, which may be stale (enough for planning; nft: the generation id proves it).
  virtual Result<Ruleset> Read(Family family, const std::optional<std::string>& table = std::nullopt,
                               bool fresh_counters = true) = 0;

  // Whether the kernel still holds exactly the family's ruleset as this backend last read or committed it (counters
  // aside), so that a caller who kept its own copy of that state (the daemon's writer) may plan on it without a
  // Read. Cheap (nft: the generation id; legacy: the x_tables fingerprint, with the same conditions as a cached
  // Read). false means "not known", never an error of the kernel's; the default is false.
  virtual bool Unchanged(Family family) { return false; }

  // Applies one batch atomically. On failure nothing of the table changed; the Status names the failing op
  // (its restore line) and carries the tool's stderr.
  virtual Status Commit(const TableBatch& batch) = 0;

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

struct BackendOptions {
  std::string netns;  // "" = caller's, NAME or PATH
  std::chrono::milliseconds wait = std::chrono::seconds(10);
  // The xtables lock iptables-legacy serializes on (per mount namespace). Configurable for tests.
  std::string xtables_lock_path = "/run/xtables.lock";
};

// Creates the backend for `kind` (kAuto detects the variant holding rules). Defined in backend_factory.cc.
Result<std::unique_ptr<Backend>> MakeBackend(BackendKind kind, const BackendOptions& options);

}  // namespace iptkit::backend

#endif  // IPTKIT_SRC_BACKEND_BACKEND_H_
