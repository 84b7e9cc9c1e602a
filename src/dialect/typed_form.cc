#include "src/dialect/typed_form.h"

#include <optional>

#include "iptkit/dialect.h"

namespace iptkit::dialect {

Result<Rule> SourceForm(const Rule& rule, Family family) {
  if (!HasTypedForm(rule)) return rule;
  std::vector<std::string> args = rule.typed;
  if (args.size() >= 3 && args[0] == "-c") args.erase(args.begin(), args.begin() + 3);
  IPTKIT_ASSIGN_OR_RETURN(Rule typed, ParseRuleArgs(args, family));
  if (std::optional<Rule::Tag> tag = rule.OwnerTag()) typed.SetOwnerTag(*tag);
  return typed;
}

std::vector<std::string> PrintedArgs(const Rule& rule) {
  Rule untagged = rule;
  untagged.ClearOwnerTag();
  std::vector<std::string> args;
  Result<std::vector<Token>> tokens = LexRestoreLine(FormatRuleSpec(untagged));
  if (tokens.ok()) {
    for (const Token& t : *tokens) args.push_back(t.text);
  }
  return args;
}

}  // namespace iptkit::dialect
