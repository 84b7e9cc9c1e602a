// iptkit --daemon [SOCKET]: the command sent to a running iptkitd over its unix socket, through its REST API
// (docs/rest.md), so that --owner and --ttl work from the command line: iptkitd keeps owned rules (they survive
// reboots and foreign flushes) and removes TTL rules when their time is up.
//
// Reads are GET /v1/FAMILY (list, save, check's lookup) and GET /v1/info; every change is one POST /v1/transactions
// (owned adds and deletes are transaction ops with "owner"/"ttl"), except apply and plan, which are
// PUT /v1/owners/OWNER (plan with ?dry_run=1). restore has no REST counterpart and is refused. The socket
// authorizes by the caller's uid (iptkitd's socket_allow); no token is sent. Errors of iptkitd keep their code
// (not_found → exit 3, ...) and their message, prefixed with "iptkitd: ".
// Thread-safety: one call at a time.
#ifndef IPTKIT_TOOLS_IPTKIT_CLI_DAEMON_H_
#define IPTKIT_TOOLS_IPTKIT_CLI_DAEMON_H_

#include <istream>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <string_view>

#include "iptkit/status.h"
#include "tools/iptkit/cli_args.h"

namespace iptkit::cli {

// Runs `inv` through the iptkitd at inv.global.daemon; the exit code on success (0, or 1 for a check miss).
// `input` receives the text of a FILE argument (for marking an error in it).
Result<int> ExecuteViaDaemon(const Invocation& inv, std::istream& in, std::ostream& out, std::ostream& err,
                             std::string* input);

// One request to the iptkitd at global.daemon (?netns= added as for every command): the JSON of a 2xx answer, or
// the daemon's error (StatusFromDaemonError); Unavailable when it cannot be reached. For `iptkit --daemon set ...`.
Result<nlohmann::json> DaemonRequest(const GlobalOptions& global, const std::string& method, const std::string& path,
                                     const std::string& body = "", std::string_view content_type = "application/json");
// `text` percent-encoded for a URL query value.
std::string UrlQueryValue(std::string_view text);

// An error answer of iptkitd ({"error": {"code", "message", "details"}}) as a Status: the REST code mapped back
// (invalid_argument → InvalidArgument, not_found → NotFound, ...; rate_limited → Unavailable), details.token,
// column and field kept.
Status StatusFromDaemonError(int http_status, const std::string& body);

}  // namespace iptkit::cli

#endif  // IPTKIT_TOOLS_IPTKIT_CLI_DAEMON_H_
