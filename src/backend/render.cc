// Rendering of TableBatches as iptables-restore input (docs/architecture.md §3).
//
// Encoding (shared with src/txn/planner.cc PreimageBatch): in a flush_table batch the kPolicy ops declare the
// builtin chains (policy counters in op.rule.counters) and the kNewChain ops declare user chains; everything is
// printed the way iptables-save prints a table: builtin chains in hook order, then user chains in op order, then
// the other ops. A builtin chain without a kPolicy op is declared "ACCEPT [0:0]": a flush_table batch starts
// from an empty table (backend.h), and only a declaration makes both variants agree on that (iptables-legacy-
// restore keeps an undeclared builtin chain's old policy, iptables-nft-restore recreates it with ACCEPT).
// Incremental batches (--noflush) never declare chains: there a declaration resets a builtin chain's policy and
// counters and flushes a user chain; they use -N and -P.
#include <string>

#include "iptkit/dialect.h"
#include "src/backend/backend.h"

namespace iptkit::backend {
namespace {

std::string CounterText(const Counters& c) {
  return "[" + std::to_string(c.packets) + ":" + std::to_string(c.bytes) + "]";
}

// "-A CHAIN" + " spec" (no trailing blank for an empty spec). The spec is what the user typed when the rule still
// has its typed form (so the kernel gets what `iptables -A` would install), else the printed form. With
// `typed_counters`, a typed `-c PKTS BYTES` goes along (as `iptables -A -c` sets the counters; -C and -D refuse it,
// and a batch with counters gives them as "[p:b]").
std::string WithSpec(std::string head, const Rule& rule, bool typed_counters = false) {
  std::string spec = FormatRuleForRestore(rule, typed_counters);
  if (!spec.empty()) head += " " + spec;
  return head;
}

bool CarriesCounters(TableOp::Kind kind) {
  return kind == TableOp::Kind::kAppend || kind == TableOp::Kind::kInsert || kind == TableOp::Kind::kReplace;
}

bool IsDeclaration(const TableBatch& batch, const TableOp& op) {
  return batch.flush_table && (op.kind == TableOp::Kind::kPolicy || op.kind == TableOp::Kind::kNewChain);
}

}  // namespace

namespace {

std::string RenderLine(const TableOp& op, bool typed_counters) {
  using K = TableOp::Kind;
  const std::string index = std::to_string(op.index);
  switch (op.kind) {
    case K::kAppend:
      return WithSpec("-A " + op.chain, op.rule, typed_counters);
    case K::kInsert:
      return WithSpec("-I " + op.chain + " " + index, op.rule, typed_counters);
    case K::kCheck:
      return WithSpec("-C " + op.chain, op.rule);
    case K::kDelete:
      return WithSpec("-D " + op.chain, op.rule);
    case K::kDeleteAt:
      return "-D " + op.chain + " " + index;
    case K::kReplace:
      return WithSpec("-R " + op.chain + " " + index, op.rule, typed_counters);
    case K::kNewChain:
      return "-N " + op.chain;
    case K::kDeleteChain:
      return "-X " + op.chain;
    case K::kRenameChain:
      return "-E " + op.chain + " " + op.arg;
    case K::kFlush:
      return op.chain.empty() ? "-F" : "-F " + op.chain;
    case K::kZero:
      return op.chain.empty() ? "-Z" : "-Z " + op.chain;
    case K::kPolicy:
      return "-P " + op.chain + " " + op.arg;
  }
  return "";
}

}  // namespace

std::string RenderRestoreLine(const TableOp& op) { return RenderLine(op, /*typed_counters=*/true); }

std::string RenderRestoreBlock(const TableBatch& batch) {
  std::string out = "*" + batch.table + "\n";
  if (batch.flush_table) {
    const Counters zero;
    // Builtin chains: the last kPolicy op of each wins, as it would with -P lines.
    for (const std::string& builtin : BuiltinChains(batch.table)) {
      const TableOp* policy = nullptr;
      for (const TableOp& op : batch.ops) {
        if (op.kind == TableOp::Kind::kPolicy && op.chain == builtin) policy = &op;
      }
      out += ":" + builtin + " " + (policy ? policy->arg : std::string("ACCEPT")) + " " +
             CounterText(policy && batch.with_counters ? policy->rule.counters : zero) + "\n";
    }
    for (const TableOp& op : batch.ops) {
      if (op.kind == TableOp::Kind::kNewChain) {
        out += ":" + op.chain + " - [0:0]\n";
      } else if (op.kind == TableOp::Kind::kPolicy && !IsBuiltinChain(batch.table, op.chain)) {
        // Not a builtin of a known table: declare it as given and let iptables judge.
        out += ":" + op.chain + " " + op.arg + " " + CounterText(batch.with_counters ? op.rule.counters : zero) + "\n";
      }
    }
  }
  for (const TableOp& op : batch.ops) {
    if (IsDeclaration(batch, op)) continue;
    if (batch.with_counters && CarriesCounters(op.kind)) out += CounterText(op.rule.counters) + " ";
    out += RenderLine(op, /*typed_counters=*/!batch.with_counters);
    out += "\n";
  }
  out += "COMMIT\n";
  return out;
}

}  // namespace iptkit::backend
