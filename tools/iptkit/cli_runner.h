// Runs a parsed iptkit command against a Firewall (or, with --daemon, through iptkitd: cli_daemon.h) and prints
// its result.
//
// Output goes to `out` (human text, or JSON with --json); progress and warnings about the listing go to `err`.
// An error is printed to `err` as "iptkit: <message>"; when it is about one argument of the command line (the
// payload names it, StatusDetails::argument), two more lines show the command line with that argument marked.
// The return value is the process exit code:
//   0 ok · 1 check: rule absent · 2 usage or bad input (InvalidArgument) · 3 not found, or an index past the end of
//   the chain (insert, delete and replace alike) · 4 precondition or conflict (FailedPrecondition, AlreadyExists,
//   Aborted) · 5 busy (Unavailable) · 6 permission · 10 internal.
// Thread-safety: as the Firewall used.
//
//   std::vector<std::string> args = {"--backend", "fake", "append", "INPUT", "-j", "ACCEPT"};
//   int code = iptkit::cli::Main(args, std::cin, std::cout, std::cerr);
#ifndef IPTKIT_TOOLS_IPTKIT_CLI_RUNNER_H_
#define IPTKIT_TOOLS_IPTKIT_CLI_RUNNER_H_

#include <istream>
#include <optional>
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
// The exit code of an error: by its code, except that an index past the end of a chain (details.reason
// kReasonIndexOutOfRange) is kExitNotFound for insert, delete and replace alike.
int ExitCodeFor(const Status& status);

// What the runner needs to know about its process besides the streams; tests set it.
struct Environment {
  bool stderr_is_terminal = false;  // progress as a bar instead of lines
  // Whether the process may read and change netfilter (root or CAP_NET_ADMIN) and enter other network namespaces
  // (CAP_SYS_ADMIN); unset: asked of the kernel (capget). Not checked for the fake backend or with --daemon.
  std::optional<bool> has_net_admin;
  std::optional<bool> has_sys_admin;
};

// The error as printed: "iptkit: <message>\n", plus the command line with the argument the error names marked
// (when details.argument and details.token name an argument of `args`).
std::string FormatError(const Status& status, const std::vector<std::string>& args);

// Runs `inv`. With `firewall` null a Firewall is opened from inv.global (or iptkitd is asked, with --daemon); tests
// pass their own (e.g. one over the fake backend that persists across several calls). `in` is read for FILE "-".
int Run(const Invocation& inv, Firewall* firewall, std::istream& in, std::ostream& out, std::ostream& err,
        const Environment& env = {});

// ParseCommandLine + Run.
int Main(const std::vector<std::string>& args, std::istream& in, std::ostream& out, std::ostream& err,
         Firewall* firewall = nullptr, const Environment& env = {});

}  // namespace iptkit::cli

#endif  // IPTKIT_TOOLS_IPTKIT_CLI_RUNNER_H_
