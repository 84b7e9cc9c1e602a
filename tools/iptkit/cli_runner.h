// Runs a parsed iptkit command against a Firewall and prints its result.
//
// Output goes to `out` (human text, or JSON with --json); errors are one line "iptkit: <message>" on `err`.
// The return value is the process exit code:
//   0 ok · 1 check: rule absent · 2 usage or bad input (InvalidArgument) · 3 not found · 4 precondition or
//   conflict (FailedPrecondition, AlreadyExists, Aborted) · 5 busy (Unavailable) · 6 permission · 10 internal.
// Thread-safety: as the Firewall used.
//
//   std::vector<std::string> args = {"--backend", "fake", "append", "INPUT", "-j", "ACCEPT"};
//   int code = iptkit::cli::Main(args, std::cin, std::cout, std::cerr);
#ifndef IPTKIT_TOOLS_IPTKIT_CLI_RUNNER_H_
#define IPTKIT_TOOLS_IPTKIT_CLI_RUNNER_H_

#include <istream>
#include <ostream>
#include <string>
#include <vector>

#include "iptkit/firewall.h"
#include "iptkit/status.h"
#include "tools/iptkit/cli_args.h"

namespace iptkit::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitCheckMiss = 1;
inline constexpr int kExitInvalid = 2;
inline constexpr int kExitNotFound = 3;
inline constexpr int kExitConflict = 4;
inline constexpr int kExitBusy = 5;
inline constexpr int kExitPermission = 6;
inline constexpr int kExitInternal = 10;

int ExitCodeFor(StatusCode code);

// Runs `inv`. With `firewall` null a Firewall is opened from inv.global; tests pass their own (e.g. one over the
// fake backend that persists across several calls). `in` is read for FILE "-".
int Run(const Invocation& inv, Firewall* firewall, std::istream& in, std::ostream& out, std::ostream& err);

// ParseCommandLine + Run.
int Main(const std::vector<std::string>& args, std::istream& in, std::ostream& out, std::ostream& err,
         Firewall* firewall = nullptr);

}  // namespace iptkit::cli

#endif  // IPTKIT_TOOLS_IPTKIT_CLI_RUNNER_H_
