// The public string API (include/iptkit/json.h) over the nlohmann-level codec.
#include "iptkit/json.h"

#include "src/json/json_codec.h"

namespace iptkit {

std::string RulesetToJson(const Ruleset& ruleset, const JsonFormat& format) {
  return json::Dump(json::RulesetToJson(ruleset, json::DialectSpec()), format.indent);
}

std::string RuleToJson(const Rule& rule, const RuleLocation& location, const JsonFormat& format) {
  json::RuleOutput output;
  output.location = location;
  return json::Dump(json::RuleToJson(rule, output, json::DialectSpec()), format.indent);
}

Result<Rule> RuleFromJson(std::string_view text, Family family) {
  IPTKIT_ASSIGN_OR_RETURN(json::Json doc, json::Parse(text));
  IPTKIT_ASSIGN_OR_RETURN(json::RuleInput in, json::RuleFromJson(doc, family, "", json::DialectSpec()));
  return std::move(in.rule);
}

Result<Transaction> TransactionFromJson(std::string_view text) {
  IPTKIT_ASSIGN_OR_RETURN(json::Json doc, json::Parse(text));
  return json::TransactionFromJson(doc, json::DialectSpec());
}

std::string TransactionToJson(const Transaction& txn, const JsonFormat& format) {
  return json::Dump(json::TransactionToJson(txn, json::DialectSpec()), format.indent);
}

Result<DesiredState> DesiredStateFromJson(std::string_view text) {
  IPTKIT_ASSIGN_OR_RETURN(json::Json doc, json::Parse(text));
  return json::DesiredStateFromJson(doc, json::DialectSpec());
}

std::string DesiredStateToJson(const DesiredState& desired, const JsonFormat& format) {
  return json::Dump(json::DesiredStateToJson(desired, json::DialectSpec()), format.indent);
}

std::string CommitResultToJson(const CommitResult& result, const JsonFormat& format) {
  return json::Dump(json::CommitResultToJson(result), format.indent);
}

std::string ApplyPlanToJson(const ApplyPlan& plan, const JsonFormat& format) {
  return json::Dump(json::ApplyPlanToJson(plan), format.indent);
}

std::string FirewallInfoToJson(const FirewallInfo& info, const JsonFormat& format) {
  return json::Dump(json::FirewallInfoToJson(info), format.indent);
}

}  // namespace iptkit
