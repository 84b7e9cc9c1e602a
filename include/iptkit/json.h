// JSON forms of the iptkit model, shaped like libnftables-json (reference: docs/json.md): the same
// element shapes on input and output, a batch is an ordered list of ops applied as one transaction.
//
// A rule carries both its spec (the iptables-save text, dialect.h) and structured fields; input may give either,
// and when both are given they must agree. Unknown fields are errors. Every error is InvalidArgument and starts
// with the JSON pointer of the offending value ("/ops/3/append/rule/matches/0/options/1/values: expected array
// of strings"); malformed JSON names the byte offset.
// Thread-safety: all functions are safe to call concurrently. None throws.
//
//   auto txn = iptkit::TransactionFromJson(R"({"ops":[{"append":{"chain":"INPUT",
//                                              "rule":{"spec":"-p tcp --dport 22 -j ACCEPT"}}}]})");
//   if (!txn.ok()) return Fail(txn.status());
//   auto done = firewall->Commit(*txn);
//   std::cout << iptkit::RulesetToJson(*firewall->List(iptkit::Family::kIPv4), {.indent = 2});
#ifndef IPTKIT_JSON_H_
#define IPTKIT_JSON_H_

#include <optional>
#include <string>
#include <string_view>

#include "iptkit/backend_info.h"
#include "iptkit/desired.h"
#include "iptkit/model.h"
#include "iptkit/status.h"
#include "iptkit/transaction.h"

namespace iptkit {

struct JsonFormat {
  int indent = -1;  // -1: one line; >= 0: pretty-printed with that many spaces per level
};

// Where a rule sits, for RuleToJson; unset members are not printed.
struct RuleLocation {
  std::optional<Family> family;
  std::string table;
  std::string chain;
  int index = 0;  // 1-based position in the chain; 0 = not printed
};

// {"family","tables":[{"name","chains":[{"name","policy","counters","rules":[rule...]}]}]}; rules carry their
// 1-based "index" and counters; builtin chains carry "policy" and "counters".
std::string RulesetToJson(const Ruleset& ruleset, const JsonFormat& format = {});

// One rule: location fields (when given), "spec", the structured fields, "counters", and "owner"/"id" when the
// rule carries an owner tag.
std::string RuleToJson(const Rule& rule, const RuleLocation& location = {}, const JsonFormat& format = {});
// Parses one rule object. "family", when present, must equal `family`; "table", "chain", "index" and
// "counters" are accepted (so listing output can be fed back) and "counters" is kept in Rule::counters.
Result<Rule> RuleFromJson(std::string_view json, Family family);

// {"ops":[{"append":{"family","table","chain","rule":{...}}}, ...]}; family defaults to ipv4, table to filter.
Result<Transaction> TransactionFromJson(std::string_view json);
std::string TransactionToJson(const Transaction& txn, const JsonFormat& format = {});

// {"owner","family":"ipv4|ipv6|both","chains":[{"table","name","rules":[{"spec"}...]}],
//  "hooks":[{"table","chain","position":"first|last","spec"}]}.
Result<DesiredState> DesiredStateFromJson(std::string_view json);
std::string DesiredStateToJson(const DesiredState& desired, const JsonFormat& format = {});

// Output only.
std::string CommitResultToJson(const CommitResult& result, const JsonFormat& format = {});
std::string ApplyPlanToJson(const ApplyPlan& plan, const JsonFormat& format = {});
std::string FirewallInfoToJson(const FirewallInfo& info, const JsonFormat& format = {});

}  // namespace iptkit

#endif  // IPTKIT_JSON_H_
