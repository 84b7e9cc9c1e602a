// nlohmann-json level codec of the iptkit model (docs/json.md), for the public string API
// (include/iptkit/json.h) and for adapters that already hold parsed JSON (the REST layer).
//
// Exceptions from nlohmann-json never leave this layer: parse and type errors become InvalidArgument Statuses
// whose message starts with the JSON pointer of the offending value. Objects are nlohmann::ordered_json so
// output keeps the documented key order.
// Thread-safety: stateless functions; safe to call concurrently.
//
//   IPTKIT_ASSIGN_OR_RETURN(json::Json doc, json::Parse(body));
//   IPTKIT_ASSIGN_OR_RETURN(Op op, json::OpFromJson(doc, "", json::DialectSpec()));
//   std::string out = json::Dump(json::RulesetToJson(ruleset, json::DialectSpec()), -1);
#ifndef IPTKIT_SRC_JSON_JSON_CODEC_H_
#define IPTKIT_SRC_JSON_JSON_CODEC_H_

#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "iptkit/backend_info.h"
#include "iptkit/desired.h"
#include "iptkit/json.h"
#include "iptkit/model.h"
#include "iptkit/status.h"
#include "iptkit/transaction.h"

namespace iptkit::json {

using Json = nlohmann::ordered_json;

// How the "spec" member of a rule is printed and parsed. The public API binds it to FormatRuleSpec /
// ParseRuleSpec (DialectSpec()); tests may bind simpler functions. A null `format` omits "spec" on output; a null
// `parse` makes "spec" on input an error.
struct SpecCodec {
  std::function<std::string(const Rule&)> format;
  std::function<Result<Rule>(std::string_view spec, Family family)> parse;
};
// FormatRuleSpec / ParseRuleSpec from dialect.h (defined in dialect_spec.cc, so the codec itself does not
// depend on the dialect library at link time).
const SpecCodec& DialectSpec();

// Parses JSON text. Syntax errors name the byte offset; a key repeated inside one object is an error naming its
// pointer (nlohmann would silently keep the last one).
Result<Json> Parse(std::string_view text);
// Serializes; indent -1 = one line. Invalid UTF-8 in strings (possible in kernel comments) is replaced by U+FFFD
// rather than thrown.
std::string Dump(const Json& value, int indent = -1);

// "null", "boolean", "number", "string", "array" or "object", for error messages.
std::string_view JsonTypeName(const Json& value);

// "/a/b" + token, escaping '~' and '/' (RFC 6901).
std::string PointerJoin(std::string_view pointer, std::string_view token);

// ---- Rules ----
struct RuleOutput {
  RuleLocation location;
  bool counters = true;  // print "counters"
};
Json RuleToJson(const Rule& rule, const RuleOutput& output, const SpecCodec& spec);

// A rule object as read from input, with the location members it may carry.
struct RuleInput {
  Rule rule;
  std::optional<Family> family;
  std::optional<std::string> table;
  std::optional<std::string> chain;
  std::optional<int> index;
};
enum class RuleKeys {
  kLocated,  // accepts "family", "table", "chain", "index", "counters", "owner", "id" besides the rule itself
  kBare,     // only "spec" and the structured fields (rules of a desired state)
};
// Parses a rule object at `pointer`: "spec" and/or the structured fields (both must agree), then ValidateRule.
Result<RuleInput> RuleFromJson(const Json& value, Family family, const std::string& pointer, const SpecCodec& spec,
                               RuleKeys keys = RuleKeys::kLocated);

// ---- Rulesets, transactions, desired state ----
Json RulesetToJson(const Ruleset& ruleset, const SpecCodec& spec);

Json OpToJson(const Op& op, const SpecCodec& spec);
// One op object {"<verb>": {...}} at `pointer`.
Result<Op> OpFromJson(const Json& value, const std::string& pointer, const SpecCodec& spec);
Json TransactionToJson(const Transaction& txn, const SpecCodec& spec);
Result<Transaction> TransactionFromJson(const Json& value, const SpecCodec& spec);

Json DesiredStateToJson(const DesiredState& desired, const SpecCodec& spec);
Result<DesiredState> DesiredStateFromJson(const Json& value, const SpecCodec& spec);

// ---- Results (output only) ----
Json CommitResultToJson(const CommitResult& result);
Json ApplyPlanToJson(const ApplyPlan& plan);
Json FirewallInfoToJson(const FirewallInfo& info);

}  // namespace iptkit::json

#endif  // IPTKIT_SRC_JSON_JSON_CODEC_H_
