// The iptables-save / iptables-restore text dialect: lexing exactly as iptables-restore does, parsing into the
// model, and printing back exactly as iptables-save (v1.8.9) prints.
//
// Thread-safety: all functions are safe to call concurrently.
//
//   auto rule = iptkit::ParseRuleSpec("-p tcp --dport 22 -s 1.2.3.4 -j ACCEPT", iptkit::Family::kIPv4);
//   // *rule: source 1.2.3.4, protocol tcp, match tcp{dport 22}, target ACCEPT
//   iptkit::FormatRuleSpec(*rule);  // "-s 1.2.3.4 -p tcp -m tcp --dport 22 -j ACCEPT"
//   auto rs = iptkit::ParseSave(text, iptkit::Family::kIPv4);
//   iptkit::FormatSave(*rs) == text;  // for any iptables-save output without the "#" comment lines
#ifndef IPTKIT_DIALECT_H_
#define IPTKIT_DIALECT_H_

#include <string>
#include <string_view>
#include <vector>

#include "iptkit/model.h"
#include "iptkit/status.h"

namespace iptkit {

// One token of a restore line, unquoted, with the byte column (0-based) where it starts in the line.
struct Token {
  std::string text;
  size_t column = 0;
  bool quoted = false;  // written with double quotes in the input
  friend bool operator==(const Token&, const Token&) = default;
};

// Splits one line the way iptables-restore does (xshared.c add_param_to_argv, v1.8.9): blanks separate tokens,
// double quotes group, a backslash escapes the next character only inside quotes; single quotes are ordinary;
// `""` is an empty token and a closing quote ends its token (`"ab"cd` is two tokens).
// Errors (unterminated quote, a NUL/CR/newline byte) name the column. Columns in error messages are 1-based
// ("column 1" is the first byte); Token::column is 0-based.
Result<std::vector<Token>> LexRestoreLine(std::string_view line);

// Parses a rule spec: the text after "-A CHAIN " (or what a user types after the chain on the command line).
// Accepts user input forms (implicit protocol match for `-p tcp --dport 22`, long option names such as
// --source, getopt abbreviations and "--opt=value", options in any order) and iptables-save's form. Extension
// options are known from the system's libxtables; an extension that cannot be loaded in-process is parsed
// generically. No canonicalization beyond iptables' own parsing (no "/32", no hex marks: the backend's job).
// Rejects host names, comma lists of addresses, unknown extensions/options, missing values, `-f` in IPv6,
// newline/CR/NUL; the message names the token and its column.
Result<Rule> ParseRuleSpec(std::string_view spec, Family family);
// The same from already split arguments (a CLI's argv after the chain name). Errors name the argument.
Result<Rule> ParseRuleArgs(const std::vector<std::string>& args, Family family);

// Prints a rule spec as iptables-save prints it (without "-A CHAIN "): header fields in save order, matches,
// target, values quoted the way each extension's save function quotes them. One deliberate difference: a value
// that iptables would print raw but that would not read back as the same single value (blanks, a '"', empty,
// "!", "-j"-like first values, option-like later values) is quoted, so the text is always a faithful restore line.
std::string FormatRuleSpec(const Rule& rule);

// Whether rule.typed is the typed form of `rule` (Rule::typed_for matches the rule without its owner tag).
bool HasTypedForm(const Rule& rule);
// What iptkit sends to iptables-restore for a rule (without "-A CHAIN"): its typed form, every argument quoted as
// QuoteRestoreArgument does, followed by the owner tag if the rule has one (`-m comment --comment "iptkit:o:id"`);
// FormatRuleSpec(rule) when the rule has no typed form. Reading the text back (ParseRuleSpec, or iptables-restore)
// gives exactly the arguments the user typed. Without `counters`, a typed `-c PKTS BYTES` is left out (-C and -D
// refuse it; a restore with counters gives them as "[p:b]").
std::string FormatRuleForRestore(const Rule& rule, bool counters = true);
// One argument as iptables-restore reads it back unchanged (xshared.c add_param_to_argv, v1.8.9): bare when it has
// no blank, tab or double quote and is not empty, else in double quotes with '"' and '\\' escaped.
std::string QuoteRestoreArgument(std::string_view argument);

// Parses iptables-save / ip6tables-save output (with or without "-c" counters; "#" comment lines ignored).
// Errors name the line number and the token.
struct ParseSaveOptions {
  // Accept iptables-restore --noflush input as well: `-A` to chains the text does not declare (they exist in
  // the kernel), and builtin chains declared with policy "-" (keep the current policy; Chain::policy is "-").
  bool restore_input = false;
  // The number of the text's first line in errors (for a part of a larger text).
  int first_line = 1;
  // Rules carry their typed form (Rule::typed): the text is the user's own (a file to restore), not a save of the
  // kernel, whose printed form may be lossy.
  bool keep_tokens = false;
};
Result<Ruleset> ParseSave(std::string_view text, Family family, const ParseSaveOptions& options = {});

struct SaveFormatOptions {
  bool counters = false;  // print "[packets:bytes]" before each rule (iptables-save -c)
  // Mark what the text does not show faithfully with comment lines (iptables-restore skips them): after a rule
  // marked lossy "# iptkit: lossy rule N of CHAIN: <why>", after the "*table" line of a table with an
  // unrepresentable_reason "# iptkit: unrepresentable table: <why>".
  bool mark_lossy = false;
};
// Prints a ruleset as iptables-save (without the "# Generated" / "# Completed" comment lines).
// Chain lines always carry "[p:b]" like iptables-save does ("[0:0]" without counters).
std::string FormatSave(const Ruleset& ruleset, const SaveFormatOptions& options = {});

// Quotes one value for a restore line if it needs it (xtables_save_string rules: [A-Za-z0-9_-]+ stays bare,
// anything else in double quotes with '"', '\\' and '\'' escaped).
std::string QuoteRestoreToken(std::string_view value);

}  // namespace iptkit

#endif  // IPTKIT_DIALECT_H_
