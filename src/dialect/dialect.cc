// The public entry points of the dialect: rule specs and iptables-save text.

#include "iptkit/dialect.h"

#include <charconv>
#include <string>
#include <string_view>
#include <vector>

#include "src/dialect/extensions.h"
#include "src/dialect/rule_parser.h"
#include "src/dialect/text_util.h"

namespace iptkit {

Result<Rule> ParseRuleSpec(std::string_view spec, Family family) {
  IPTKIT_ASSIGN_OR_RETURN(std::vector<Token> tokens, LexRestoreLine(spec));
  return dialect::ParseRuleTokens(tokens, family, dialect::SystemExtensions(), dialect::TokenLocation::kColumn);
}

Result<Rule> ParseRuleArgs(const std::vector<std::string>& args, Family family) {
  std::vector<Token> tokens;
  tokens.reserve(args.size());
  for (size_t i = 0; i < args.size(); ++i) tokens.push_back(Token{args[i], i, false});
  return dialect::ParseRuleTokens(tokens, family, dialect::SystemExtensions(), dialect::TokenLocation::kArgument);
}

namespace {

constexpr size_t kMaxChainName = 28;  // XT_EXTENSION_MAXNAMELEN - 1

std::optional<uint64_t> ParseU64(std::string_view s) {
  uint64_t v = 0;
  if (s.empty()) return std::nullopt;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || ptr != s.data() + s.size()) return std::nullopt;
  return v;
}

// "[packets:bytes]".
std::optional<Counters> ParseCounters(std::string_view s) {
  if (s.size() < 5 || s.front() != '[' || s.back() != ']') return std::nullopt;
  s = s.substr(1, s.size() - 2);
  size_t colon = s.find(':');
  if (colon == std::string_view::npos) return std::nullopt;
  auto p = ParseU64(s.substr(0, colon));
  auto b = ParseU64(s.substr(colon + 1));
  if (!p || !b) return std::nullopt;
  return Counters{*p, *b};
}

bool IsKnownTable(std::string_view name) {
  for (const std::string& t : KnownTables()) {
    if (t == name) return true;
  }
  return false;
}

class SaveParser {
 public:
  SaveParser(std::string_view text, Family family, const ParseSaveOptions& options) : text_(text), options_(options) {
    ruleset_.family = family;
    line_no_ = options.first_line > 0 ? static_cast<size_t>(options.first_line - 1) : 0;
  }

  Result<Ruleset> Parse() {
    size_t start = 0;
    while (start < text_.size()) {
      size_t end = text_.find('\n', start);
      if (end == std::string_view::npos) end = text_.size();
      ++line_no_;
      Status status = Line(text_.substr(start, end - start));
      if (!status.ok()) return status.WithContext("line " + std::to_string(line_no_)).WithLine(line_no_);
      start = end + 1;
    }
    if (table_) {
      return Status::InvalidArgument("table '" + table_->name + "' (opened on line " + std::to_string(table_line_) +
                                     ") has no COMMIT");
    }
    return std::move(ruleset_);
  }

 private:
  Status Line(std::string_view line) {
    if (line.find_first_not_of(" \t") == std::string_view::npos) return Status::Ok();
    if (line[0] == '#') return Status::Ok();
    size_t bad = dialect::FindForbiddenByte(line);
    if (bad != std::string_view::npos) {
      return Status::InvalidArgument("contains " + dialect::DescribeForbiddenByte(line[bad]) + " at column " +
                                     std::to_string(bad + 1));
    }
    if (line[0] == '*') return OpenTable(line.substr(1));
    if (!table_) return Status::InvalidArgument("'" + std::string(line.substr(0, 40)) + "' outside a *table block");
    if (line == "COMMIT") {
      ruleset_.tables.push_back(std::move(*table_));
      table_.reset();
      return Status::Ok();
    }
    if (line[0] == ':') return DeclareChain(line);
    return RuleLine(line);
  }

  Status OpenTable(std::string_view name) {
    if (table_) {
      return Status::InvalidArgument("'*" + std::string(name) + "' before COMMIT of table '" + table_->name + "'");
    }
    if (!IsKnownTable(name)) return Status::InvalidArgument("unknown table '" + std::string(name) + "'");
    if (ruleset_.FindTable(name) != nullptr) {
      return Status::InvalidArgument("table '" + std::string(name) + "' appears twice");
    }
    table_.emplace();
    table_->name = std::string(name);
    table_line_ = line_no_;
    return Status::Ok();
  }

  // ":NAME POLICY [packets:bytes]"; POLICY is "-" for user-defined chains.
  Status DeclareChain(std::string_view line) {
    IPTKIT_ASSIGN_OR_RETURN(std::vector<Token> tokens, LexRestoreLine(line));
    if (tokens.size() < 2 || tokens.size() > 3) {
      return Status::InvalidArgument("chain line must be ':NAME POLICY [packets:bytes]'");
    }
    Chain chain;
    chain.name = tokens[0].text.substr(1);
    if (chain.name.empty() || chain.name.size() > kMaxChainName) {
      return Status::InvalidArgument("'" + tokens[0].text + "' at column 1: chain name must be 1 to 28 bytes");
    }
    if (table_->FindChain(chain.name) != nullptr) {
      return Status::InvalidArgument("chain '" + chain.name + "' declared twice");
    }
    const Token& policy = tokens[1];
    bool builtin = IsBuiltinChain(table_->name, chain.name);
    if (builtin) {
      if (policy.text == "-" && options_.restore_input) {
        chain.policy = "-";  // iptables-restore: keep the current policy
      } else if (policy.text != "ACCEPT" && policy.text != "DROP") {
        return Status::InvalidArgument("'" + policy.text + "' at column " + std::to_string(policy.column + 1) +
                                       ": builtin chain " + chain.name + " needs policy ACCEPT or DROP");
      } else {
        chain.policy = policy.text;
      }
    } else if (policy.text != "-") {
      return Status::InvalidArgument("'" + policy.text + "' at column " + std::to_string(policy.column + 1) +
                                     ": user-defined chain " + chain.name + " has no policy (write '-')");
    }
    if (tokens.size() == 3) {
      auto counters = ParseCounters(tokens[2].text);
      if (!counters) {
        return Status::InvalidArgument("'" + tokens[2].text + "' at column " + std::to_string(tokens[2].column + 1) +
                                       ": counters must be [packets:bytes]");
      }
      chain.counters = *counters;
    }
    table_->chains.push_back(std::move(chain));
    return Status::Ok();
  }

  // "[packets:bytes] -A CHAIN spec" (counters optional).
  Status RuleLine(std::string_view line) {
    IPTKIT_ASSIGN_OR_RETURN(std::vector<Token> tokens, LexRestoreLine(line));
    size_t i = 0;
    std::optional<Counters> counters;
    if (!tokens.empty() && !tokens[0].quoted && !tokens[0].text.empty() && tokens[0].text[0] == '[') {
      counters = ParseCounters(tokens[0].text);
      if (!counters) {
        return Status::InvalidArgument("'" + tokens[0].text + "' at column 1: counters must be [packets:bytes]");
      }
      ++i;
    }
    if (i >= tokens.size() || tokens[i].quoted || (tokens[i].text != "-A" && tokens[i].text != "--append")) {
      const Token& t = tokens[std::min(i, tokens.size() - 1)];
      return Status::InvalidArgument("'" + t.text + "' at column " + std::to_string(t.column + 1) +
                                     ": expected '-A CHAIN' (save text holds only appended rules)");
    }
    if (i + 1 >= tokens.size()) {
      return Status::InvalidArgument("'" + tokens[i].text + "' at column " + std::to_string(tokens[i].column + 1) +
                                     ": missing chain name");
    }
    const Token& chain_token = tokens[i + 1];
    Chain* chain = table_->FindChain(chain_token.text);
    if (chain == nullptr && options_.restore_input && !chain_token.quoted) {
      // iptables-restore --noflush input may append to chains that exist in the kernel without declaring them.
      Chain undeclared;
      undeclared.name = chain_token.text;
      if (IsBuiltinChain(table_->name, undeclared.name)) undeclared.policy = "-";
      table_->chains.push_back(std::move(undeclared));
      chain = &table_->chains.back();
    }
    if (chain == nullptr) {
      return Status::InvalidArgument("'" + chain_token.text + "' at column " + std::to_string(chain_token.column + 1) +
                                     ": chain not declared in table " + table_->name);
    }
    std::span<const Token> spec(tokens.data() + i + 2, tokens.size() - i - 2);
    IPTKIT_ASSIGN_OR_RETURN(Rule rule, dialect::ParseRuleTokens(spec, ruleset_.family, dialect::SystemExtensions(),
                                                                dialect::TokenLocation::kColumn, options_.keep_tokens));
    if (counters) rule.counters = *counters;
    chain->rules.push_back(std::move(rule));
    return Status::Ok();
  }

  std::string_view text_;
  ParseSaveOptions options_;
  Ruleset ruleset_;
  std::optional<Table> table_;  // the open "*table" block
  size_t table_line_ = 0;
  size_t line_no_ = 0;
};

}  // namespace

Result<Ruleset> ParseSave(std::string_view text, Family family, const ParseSaveOptions& options) {
  return SaveParser(text, family, options).Parse();
}

}  // namespace iptkit
