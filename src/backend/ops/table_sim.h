// Table-level semantics of iptables-restore commands on the model: what each op does to a table, as iptables and
// the kernel do it. Production code, not a test double: the transaction planner (src/txn/planner.h) simulates
// batches with it to validate them locally and to derive their inverses, the restore backend updates its snapshot
// cache with it, the daemon writer plans on it, and FakeBackend commits with it — so all agree on what iptables
// accepts.
//
// The rules follow iptables 1.8.9 / the kernel: -C/-D match the first rule that is the same (SameRule: the same
// canonical spec, or for lossy rules the same kernel form; counters ignored); -I N accepts 1..size+1 (iptables-nft
// nft_rule_insert, libiptc iptc_insert_entry); -X needs an empty, unreferenced user chain; -E refuses an existing name
// and keeps jumps pointing at the renamed chain (the kernel links jumps to the chain, not its name); -P only on builtin
// chains with ACCEPT or DROP; jumps need an existing user chain, a standard verdict or a target extension allowed in
// the table/hook (ValidateTargetPlacement, also for every builtin hook reaching a user chain, as the kernel's
// mark_source_chains/xt_check_target does); jump loops are refused (ELOOP).
// Thread-safety: pure functions on values.
//
//   IPTKIT_ASSIGN_OR_RETURN(Table t, NewTable("filter"));
//   IPTKIT_RETURN_IF_ERROR(ApplyTableOp(Family::kIPv4, t, {.kind = TableOp::Kind::kNewChain, .chain = "FOO"}, false));
#ifndef IPTKIT_SRC_BACKEND_OPS_TABLE_SIM_H_
#define IPTKIT_SRC_BACKEND_OPS_TABLE_SIM_H_

#include <string>
#include <string_view>
#include <vector>

#include "iptkit/model.h"
#include "iptkit/status.h"
#include "src/backend/backend.h"

namespace iptkit::backend {

// A table as the kernel creates it on first use: builtin chains in hook order, policy ACCEPT, no rules.
// InvalidArgument for a table name iptables does not know.
Result<Table> NewTable(std::string_view name);

// What a whole-table restore (no --noflush) starts from: user chains deleted, builtin chains emptied with their
// counters zeroed; builtin policies stay (iptables-restore changes them only through a chain declaration).
void ResetTable(Table& table);

// -C/-D equality, as iptables compares kernel rules: equal canonical specs (FormatRuleSpec) for faithful rules —
// a faithful rule's printed form loads back to its kernel form, so equal texts are equal kernel rules; for rules
// marked lossy (Rule::lossy), equal kernel forms (Rule::kernel_form), and a lossy rule never equals a faithful one
// (its kernel form is not what any text loads to). Counters are ignored.
bool SameRule(const Rule& a, const Rule& b);
// 0-based index of the first rule of `chain` equal to `rule`, or -1.
int FindRule(const Chain& chain, const Rule& rule);

// Whether a jump target is a target extension (LOG, DNAT, ...) rather than a chain: it has options, or it is one
// of the target extensions iptables 1.8.9 ships.
bool IsTargetExtension(const Target& target);

// A rule that jumps or goes to a chain.
struct RuleRef {
  std::string chain;
  int index = 0;  // 1-based
  Rule rule;
};
// Every rule of `table` whose -j/-g names `chain`, in table order.
std::vector<RuleRef> FindReferences(const Table& table, std::string_view chain);
// "filter INPUT 3: -j FOO; filter OUTPUT 1: -j FOO".
std::string DescribeReferences(const Table& table, const std::vector<RuleRef>& refs);

// The checks of a rule meant for `chain` of `table` that need no table state, the same for every entry point
// (transactions, owned rules, declarative apply, restore) and done before anything runs iptables: ValidateRule, and
// its target's placement (ValidateTargetPlacement: the table, and the hook when `chain` is a builtin chain of it;
// "" checks the table only). A placement error names the target argument (StatusDetails token, and argument when
// the rule has its typed form).
Status CheckRuleLocally(Family family, std::string_view table, std::string_view chain, const Rule& rule);

// Whether `rule` may sit in `chain` of `table` as far as its target is concerned: a -g/-j to a chain needs an
// existing user chain (NotFound; InvalidArgument for a builtin one), a target extension must be allowed in the
// table, and in its hook when `chain` is builtin (ValidateTargetPlacement). Also checks ValidateRule.
Status CheckRule(Family family, const Table& table, std::string_view chain, const Rule& rule);

// Checks the whole table the way the kernel does at commit: no jump loops between user chains (InvalidArgument
// naming the cycle), and every target extension in a user chain is allowed in each builtin hook that reaches it.
Status CheckTableGraph(Family family, const Table& table);

// Applies one op in place. On error `table` is unchanged and the Status (without the op; callers prefix it with
// DescribeTableOp) says what was wrong: FailedPrecondition (-C miss: the guard of a position-based op),
// NotFound (chain, rule to delete, index), AlreadyExists (-N/-E onto an existing
// chain), FailedPrecondition (-X of a non-empty or referenced chain), InvalidArgument (builtin chain where a user
// chain is needed, bad policy, bad name, insert index, target placement). Rules are taken as given (callers
// canonicalize); their counters are kept only when `with_counters`. A -P op of a with_counters batch also sets
// the chain's policy counters from op.rule.counters.
Status ApplyTableOp(Family family, Table& table, const TableOp& op, bool with_counters);

// The op as a restore line, for messages: "-A INPUT -s 1.2.3.4/32 -j ACCEPT", "-P INPUT DROP".
std::string DescribeTableOp(const TableOp& op);

}  // namespace iptkit::backend

#endif  // IPTKIT_SRC_BACKEND_OPS_TABLE_SIM_H_
