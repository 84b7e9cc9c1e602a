// Helpers shared by the restore backend's files (restore_backend.cc: reads and commits; canonicalize.cc: scratch
// namespace, canonical forms, lossy prints). Internal.
#ifndef IPTKIT_SRC_BACKEND_RESTORE_RESTORE_INTERNAL_H_
#define IPTKIT_SRC_BACKEND_RESTORE_RESTORE_INTERNAL_H_

#include <string>
#include <string_view>
#include <vector>

#include "iptkit/status.h"
#include "src/base/subprocess.h"

namespace iptkit::backend::restore_internal {

// `s` without leading and trailing blanks, tabs and line breaks.
std::string Trim(std::string_view s);
// The lines of `text` (without their '\n'; no empty last line for a text ending in '\n').
std::vector<std::string> SplitLines(std::string_view text);
// A tool that exited non-zero: PermissionDenied (not root), Unavailable (xtables lock busy), else Internal, each
// naming `what` (the command) and its stderr.
Status RunFailure(const std::string& what, const base::SubprocessResult& r);

}  // namespace iptkit::backend::restore_internal

#endif  // IPTKIT_SRC_BACKEND_RESTORE_RESTORE_INTERNAL_H_
