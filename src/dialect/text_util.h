// Small text helpers shared by the dialect lexer, parser and printer.
#ifndef IPTKIT_SRC_DIALECT_TEXT_UTIL_H_
#define IPTKIT_SRC_DIALECT_TEXT_UTIL_H_

#include <cstdint>
#include <string>
#include <string_view>

namespace iptkit::dialect {

// Bytes the restore format cannot carry: a line break ends the line, NUL ends the C string iptables reads.
inline bool IsForbiddenByte(char c) { return c == '\0' || c == '\n' || c == '\r'; }
// Index of the first forbidden byte, or npos.
size_t FindForbiddenByte(std::string_view s);
// "a newline", "a carriage return", "a NUL byte".
std::string DescribeForbiddenByte(char c);

// Whether libxtables' xtables_save_string() prints `value` bare: non-empty and only [A-Za-z0-9_-].
bool IsSaveStringBare(std::string_view value);
// Appends `value` as xtables_save_string() prints it (without its leading space): bare when IsSaveStringBare,
// else in double quotes with '"', '\\' and '\'' escaped by a backslash (libxtables/xtables.c, v1.8.9).
// With force_quote the quoted form is used even for a bare-safe value.
void AppendSaveString(std::string& out, std::string_view value, bool force_quote = false);
// Appends `value` in double quotes, escaping '"' and '\\' (libxt_string.c print_string, libxt_LED.c).
void AppendDoubleQuoted(std::string& out, std::string_view value);

// Appends counters as iptables-save prints them: "[packets:bytes]".
void AppendSaveCounters(std::string& out, uint64_t packets, uint64_t bytes);

// Token classes shared by the parser and the printer (so that what the printer leaves bare parses back as the
// same value).
// "-s", "--source", "-j", ... : the options of the rule header and of the rule itself (iptables.c
// original_opts that may appear in a rule spec).
bool IsHeaderOptionToken(std::string_view token);
// "-x", "--name", "--name=value": a token the parser reads as an option when it is not quoted. A '-' followed
// by a digit ("-1") is a value.
bool LooksLikeOption(std::string_view token);

}  // namespace iptkit::dialect

#endif  // IPTKIT_SRC_DIALECT_TEXT_UTIL_H_
