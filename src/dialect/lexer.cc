// Tokenizing and quoting of restore lines, byte for byte as iptables 1.8.9 does it.

#include <string>
#include <string_view>
#include <vector>

#include "iptkit/dialect.h"
#include "src/dialect/text_util.h"

namespace iptkit {

// Mirrors iptables/xshared.c add_param_to_argv() (v1.8.9):
// - outside quotes, ' ', '\t' (and '\n', refused here) end a token; runs of blanks are one separator;
// - '"' opens a quote anywhere in a token ("ab"cd" continues the token "ab..."), and a closing '"' ends the
//   token immediately, so `"ab"cd` is two tokens and `""` is one empty token;
// - inside quotes a backslash takes the next byte literally; outside quotes it is an ordinary byte;
// - single quotes are ordinary bytes.
// iptables silently accepts an unterminated quote (the rest of the line becomes the token); we refuse it.
Result<std::vector<Token>> LexRestoreLine(std::string_view line) {
  std::vector<Token> tokens;
  std::string current;
  bool in_token = false;  // add_param_to_argv's "param.len > 0", but also true for an open (possibly empty) quote
  bool quote_open = false;
  bool quoted = false;
  bool escaped = false;
  size_t token_start = 0;
  size_t quote_start = 0;

  for (size_t i = 0; i < line.size(); ++i) {
    char c = line[i];
    if (c == '\0' || c == '\n' || c == '\r') {
      return Status::InvalidArgument("restore line contains " + dialect::DescribeForbiddenByte(c) + " at column " +
                                     std::to_string(i + 1) + " (the restore format cannot carry it)");
    }
    if (quote_open) {
      if (escaped) {
        current.push_back(c);
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        // The closing quote ends the token, even an empty one.
        quote_open = false;
        tokens.push_back(Token{std::move(current), token_start, true});
        current.clear();
        in_token = false;
        quoted = false;
      } else {
        current.push_back(c);
      }
      continue;
    }
    if (c == '"') {
      if (!in_token) token_start = i;
      in_token = true;
      quote_open = true;
      quoted = true;
      quote_start = i;
      continue;
    }
    if (c == ' ' || c == '\t') {
      if (in_token) {
        tokens.push_back(Token{std::move(current), token_start, quoted});
        current.clear();
        in_token = false;
        quoted = false;
      }
      continue;
    }
    if (!in_token) token_start = i;
    in_token = true;
    current.push_back(c);
  }
  if (quote_open) {
    return Status::InvalidArgument("unterminated double quote opened at column " + std::to_string(quote_start + 1));
  }
  if (in_token) tokens.push_back(Token{std::move(current), token_start, quoted});
  return tokens;
}

std::string QuoteRestoreToken(std::string_view value) {
  std::string out;
  dialect::AppendSaveString(out, value);
  return out;
}

}  // namespace iptkit
