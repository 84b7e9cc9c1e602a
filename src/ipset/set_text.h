// The text forms libipset speaks: its `list` output (parsed into SetInfo) and the command lines iptkit writes
// (create/add/del lines), with the checks that keep a value from breaking out of its line.
// Thread-safety: stateless functions.
#ifndef IPTKIT_SRC_IPSET_SET_TEXT_H_
#define IPTKIT_SRC_IPSET_SET_TEXT_H_

#include <string>
#include <string_view>
#include <vector>

#include "iptkit/ipset.h"
#include "iptkit/status.h"

namespace iptkit::ipset {

// Parses the output of `ipset list` (plain format, one block per set).
Result<std::vector<SetInfo>> ParseListOutput(std::string_view text);
// The create options in a header line ("family inet hashsize 1024 maxelem 65536 timeout 0 comment ...").
SetOptions ParseHeader(std::string_view header);
// Splits a line at blanks; "..." is one token (without the quotes).
std::vector<std::string> SplitTokens(std::string_view line);

// InvalidArgument unless `name` can name a set (1..31 bytes, no blank, quote or control character, no leading '-').
Status CheckSetName(std::string_view name);
// InvalidArgument unless `elem` can be written as one token.
Status CheckElem(std::string_view elem);
Status CheckComment(std::string_view comment);
Status CheckTimeout(int64_t timeout);
// Checks elem, timeout and comment; errors name spec.line (when not 0) and the element.
Status CheckEntrySpec(const SetEntrySpec& spec);

// "create NAME TYPE OPTIONS\n"; InvalidArgument names an option `type` does not take (details.field).
Result<std::string> CreateLine(std::string_view name, std::string_view type, const SetOptions& options);
// "add NAME ELEM [timeout N] [comment "C"]\n".
std::string AddLine(std::string_view name, const SetEntrySpec& spec);
// An add line that recreates a listed entry (timeout left, counters, comment, skbinfo, nomatch).
std::string CopyLine(std::string_view name, const SetEntry& entry);

bool IsHashType(std::string_view type);
// SetInfo::Capacity.
uint64_t CapacityOf(const SetInfo& set);

}  // namespace iptkit::ipset

#endif  // IPTKIT_SRC_IPSET_SET_TEXT_H_
