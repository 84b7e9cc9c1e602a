// The extensions a read prints without libxtables: for the commonest matches (tcp and udp ports, comments), the save
// text and the model Match are computed here from the binary payload, byte for byte what the extension's own save
// function prints (libxt_tcp.c tcp_save, libxt_udp.c udp_save, libxt_comment.c comment_save, iptables 1.8.9) and
// what the text parser gives for that text. Xtables::Format and Xtables::ToRules take them from here instead of
// printing each payload through libxtables into a capture and, for the model, parsing that text again: at 10,000
// rules whose ports and comments all differ, no payload repeats and no cache helps. Payloads outside what is
// covered here (a TCP option or flags, another revision) go through libxtables as before. The same three are
// parsed here in their common forms (DirectParseMatch).
// Thread-safety: pure functions; SetDirectExtensions is for tests (process-wide, not synchronized with readers).
//
//   std::string text;
//   if (DirectMatchCovered(ext)) AppendDirectMatchText(ext, text);   // " -m tcp --dport 22"
#ifndef IPTKIT_SRC_BACKEND_NATIVE_XT_DIRECT_H_
#define IPTKIT_SRC_BACKEND_NATIVE_XT_DIRECT_H_

#include <optional>
#include <string>

#include "iptkit/model.h"
#include "src/backend/native/xt_rule.h"

namespace iptkit::backend::native {

// Whether `ext` (a match of a rule) is printed here: tcp, udp or comment, revision 0, with a payload the functions
// below print exactly as libxtables does (and, for a comment, whose text parses back to itself).
bool DirectMatchCovered(const XtExtension& ext);

// Appends " -m NAME OPTIONS" for a covered `ext`, as libxtables' save prints it after the rule's header.
void AppendDirectMatchText(const XtExtension& ext, std::string& out);

// The Match ParseRuleSpec gives for AppendDirectMatchText's text of a covered `ext`.
Match DirectMatch(const XtExtension& ext);

// The payload libxtables' parse gives for `match` (the options of one -m tcp / udp / comment, as the rule parser
// produced them), built here for the forms covered: ports as decimal "N" or "N:M" (N <= M) in each of --sport /
// --dport (or --source-port / --destination-port) at most once, negated or not; one un-negated --comment of at most
// XT_MAX_COMMENT_LEN - 1 bytes. nullopt for anything else: another extension, a service name, a port range
// written otherwise, a TCP option or flags, and every error, which libxtables then reports as before.
// So a one-rule `-p tcp --dport 22` command neither loads libxt_tcp.so nor runs its parser.
std::optional<XtExtension> DirectParseMatch(const Match& match);

// Tests: off, every extension goes through libxtables (to compare both ways on the same payloads). On by default.
void SetDirectExtensions(bool on);

}  // namespace iptkit::backend::native

#endif  // IPTKIT_SRC_BACKEND_NATIVE_XT_DIRECT_H_
