// What the iptables tools say on stderr, made into errors a user can act on (internal to the restore backend).
//
// iptables-restore wraps its reason in its own banner ("iptables-restore v1.8.9 (nf_tables): "), the number of a
// line of a batch the user never wrote ("Error occurred at line: 3", "line 3: ", "iptables-restore: line 3
// failed"), a usage hint ("Try `iptables-restore -h' or 'iptables-restore --help' for more information.") and, for
// a rule loaded to canonicalize it, the name of iptkit's scratch chain. The user needs iptables' own reason and the
// argument it is about.
// Thread-safety: pure functions.
//
//   CleanToolMessage("iptables-restore v1.8.9 (nf_tables): invalid port/service `65536' specified\n"
//                    "Error occurred at line: 2\nTry `iptables-restore -h' or ...")
//   // "invalid port/service `65536' specified"
//   QuotedArgument("invalid port/service `65536' specified", {"-p", "tcp", "--dport", "65536"})  // 3
#ifndef IPTKIT_SRC_BACKEND_RESTORE_TOOL_ERRORS_H_
#define IPTKIT_SRC_BACKEND_RESTORE_TOOL_ERRORS_H_

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace iptkit::backend {

// iptables' reason without the banner, line numbers, the usage hint and the ": rule in chain NAME" suffix of
// iptables-nft's kernel errors, on one line ("; " between what were lines). "" when nothing is left (legacy's bare
// "line N failed", whose reason only the kernel log has).
std::string CleanToolMessage(std::string_view stderr_text);

// Index of the argument `message` quotes the way iptables quotes offending values (`x', "x", 'x'); the earliest
// quoted one in the message, the longest on a tie. nullopt when none is quoted.
std::optional<size_t> QuotedArgument(std::string_view message, const std::vector<std::string>& args);

}  // namespace iptkit::backend

#endif  // IPTKIT_SRC_BACKEND_RESTORE_TOOL_ERRORS_H_
