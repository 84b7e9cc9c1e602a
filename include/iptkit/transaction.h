// Transaction: an ordered list of rule and chain operations committed as one unit.
//
// Each table changes in one atomic kernel commit. A transaction over several tables (or IPv4 and IPv6) commits
// table by table and, if the kernel rejects a later table, undoes the earlier ones with guarded inverse
// operations, so a failed transaction changes nothing (docs/architecture.md §4). Everything is validated locally first
// (chains and jump targets exist, targets allowed in their table/hook) and nothing is sent when that fails.
// A Transaction is a plain value; build it on one thread.
//
//   iptkit::Transaction txn;
//   txn.Append(Family::kIPv4, "filter", "INPUT", *iptkit::ParseRuleSpec("-p tcp --dport 22 -j ACCEPT", v4));
//   txn.SetPolicy(Family::kIPv4, "filter", "INPUT", "DROP");
//   auto result = firewall->Commit(txn);              // or Commit(txn, {.dry_run = true}) for the plan
#ifndef IPTKIT_TRANSACTION_H_
#define IPTKIT_TRANSACTION_H_

#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "iptkit/model.h"

namespace iptkit {

struct Op {
  // Verbs as everywhere in iptkit (CLI subcommand, REST route, JSON op).
  enum class Kind {
    kAppend,       // rule → end of chain
    kInsert,       // rule → at index (1-based; index = size+1 appends)
    kDelete,       // the first rule equal to `rule` (by canonical spec)
    kDeleteAt,     // the rule at index; when `expect` is set it must be that rule, else FailedPrecondition
    kReplace,      // the rule at index becomes `rule`; `expect` as for kDeleteAt
    kCreateChain,  // user chain `chain`
    kDeleteChain,  // user chain `chain`; must be empty and unreferenced unless `cascade`
    kRenameChain,  // user chain `chain` → `new_name`
    kFlush,        // all rules of `chain`, or of every chain of the table when chain is empty
    kZero,         // counters of `chain`, or of the whole table when chain is empty
    kPolicy,       // builtin chain `chain` gets policy `policy` (ACCEPT or DROP)
  };
  Kind kind = Kind::kAppend;
  Family family = Family::kIPv4;
  std::string table = "filter";
  std::string chain;
  int index = 0;               // kInsert, kDeleteAt, kReplace
  Rule rule;                   // kAppend, kInsert, kDelete, kReplace
  std::optional<Rule> expect;  // kDeleteAt, kReplace: the rule expected at `index`
  std::string new_name;        // kRenameChain
  std::string policy;          // kPolicy
  bool cascade = false;        // kDeleteChain: also delete the rules that jump to the chain
  // kAppend, kInsert: add nothing when an equal rule (same canonical spec) is already anywhere in the chain, as
  // go-iptables' AppendUnique and Kubernetes' EnsureRule. The check and the add are one transaction: on
  // iptables-legacy the xtables lock is held from the read to the commit, so no other iptables writer can add
  // the rule in between; on iptables-nft (no lock) another writer can still add it between iptkit's read and its
  // commit, and the chain then holds it twice.
  bool unique = false;
  friend bool operator==(const Op&, const Op&) = default;
};

// StatusDetails::reason of an op whose index is past the end of its chain (insert N > rules + 1; delete or replace
// N > rules). The status code differs (InvalidArgument for insert, NotFound for delete and replace); the reason is
// the same, so that callers can treat all three alike (the CLI gives them one exit code).
inline constexpr std::string_view kReasonIndexOutOfRange = "index_out_of_range";

// "append", "insert", ... (the JSON op names).
std::string_view OpKindName(Op::Kind kind);

class Transaction {
 public:
  Transaction& Append(Family f, std::string table, std::string chain, Rule rule);
  Transaction& Insert(Family f, std::string table, std::string chain, int index, Rule rule);
  // Append / Insert with Op::unique set: nothing is added when an equal rule is already in the chain.
  Transaction& AppendUnique(Family f, std::string table, std::string chain, Rule rule);
  Transaction& InsertUnique(Family f, std::string table, std::string chain, int index, Rule rule);
  Transaction& Delete(Family f, std::string table, std::string chain, Rule rule);
  Transaction& DeleteAt(Family f, std::string table, std::string chain, int index,
                        std::optional<Rule> expect = std::nullopt);
  Transaction& Replace(Family f, std::string table, std::string chain, int index, Rule rule,
                       std::optional<Rule> expect = std::nullopt);
  Transaction& CreateChain(Family f, std::string table, std::string chain);
  Transaction& DeleteChain(Family f, std::string table, std::string chain, bool cascade = false);
  Transaction& RenameChain(Family f, std::string table, std::string chain, std::string new_name);
  Transaction& Flush(Family f, std::string table, std::string chain = "");
  Transaction& Zero(Family f, std::string table, std::string chain = "");
  Transaction& SetPolicy(Family f, std::string table, std::string chain, std::string policy);
  Transaction& Add(Op op);

  const std::vector<Op>& ops() const { return ops_; }
  bool empty() const { return ops_.empty(); }

 private:
  std::vector<Op> ops_;
};

// How far a commit got, for callers that show progress of large changes (the CLI's restore and apply). Stages come
// in this order; kParsed and kCanonicalized only where they apply (Restore, Apply), kCommitting and kCommitted not
// for a dry run or when nothing changes.
struct CommitProgress {
  enum class Stage {
    kParsed,         // the input text was parsed: `rules` rules
    kCanonicalized,  // the input rules were canonicalized: `rules` rules
    kSnapshotRead,   // the current rules were read (under the lock on iptables-legacy)
    kPlanned,        // the change was planned: `tables` table commits of `ops` ops in all
    kCommitting,     // those are being sent
    kCommitted,      // ... and were committed
  };
  Stage stage = Stage::kPlanned;
  size_t rules = 0;
  size_t tables = 0;
  size_t ops = 0;
};

struct CommitOptions {
  // Called on the committing thread at each stage (CommitProgress); it must not call back into the Firewall.
  std::function<void(const CommitProgress&)> progress = nullptr;
  bool dry_run = false;  // validate and render, send nothing
};

// What one table's commit sent (or, for a dry run, would send).
struct TableCommit {
  Family family = Family::kIPv4;
  std::string table;
  std::string restore_text;  // the exact "*table ... COMMIT" block given to iptables-restore --noflush
};

struct CommitResult {
  std::vector<TableCommit> tables;  // in commit order
  bool dry_run = false;
  // The whole commit was one kernel transaction (one table, or a backend atomic across tables); otherwise each
  // table was committed atomically on its own, and packets between two of those commits saw new and old tables.
  bool atomic_across_tables = false;
  std::string backend;  // the backend that committed it ("nft", "legacy", "fake"); empty for a dry run
  // For a failed multi-table commit that was rolled back this stays empty: the call returns the error instead.
};

}  // namespace iptkit

#endif  // IPTKIT_TRANSACTION_H_
