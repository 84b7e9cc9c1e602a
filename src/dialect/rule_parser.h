// The rule-spec parser behind ParseRuleSpec / ParseRuleArgs / ParseSave, with the extension catalog injectable.
#ifndef IPTKIT_SRC_DIALECT_RULE_PARSER_H_
#define IPTKIT_SRC_DIALECT_RULE_PARSER_H_

#include <span>

#include "iptkit/dialect.h"
#include "iptkit/model.h"
#include "src/dialect/extensions.h"

namespace iptkit::dialect {

// How error messages locate a token: "at column N" (Token::column + 1, a restore line or spec string) or
// "(argument N)" (Token::column + 1 is the 1-based argv index).
enum class TokenLocation { kColumn, kArgument };

// Parses the tokens of one rule spec (everything after "-A CHAIN"). Follows iptables 1.8.9 command parsing
// (xshared.c do_parse/command_default): header options, "!" before the option it negates, `-m` loading a
// match, `-j`/`-g`, and each "--option" going to the most recently loaded match or target that has it (getopt
// merges each new extension's options first), else to the implicitly loaded protocol match. Long options may be
// abbreviated as getopt_long allows; the model always holds the full name.
// With keep_typed the rule carries its typed form (Rule::typed: the tokens' texts without the owner tag and -c).
Result<Rule> ParseRuleTokens(std::span<const Token> tokens, Family family, const ExtensionCatalog& catalog,
                             TokenLocation location, bool keep_typed = true);

}  // namespace iptkit::dialect

#endif  // IPTKIT_SRC_DIALECT_RULE_PARSER_H_
