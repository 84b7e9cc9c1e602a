// Listening sockets of iptkitd, each owned by exactly one daemon.
//
// TCP: SO_REUSEADDR (a restart may bind while old connections sit in TIME_WAIT) but never SO_REUSEPORT, with
// which a second daemon could bind the same port and the kernel would spread connections over both. A port in use
// is an error naming the process that holds it (found through /proc/net/tcp{,6} and /proc/PID/fd).
// Unix: a socket file on which a live process accepts connections is not replaced (an error naming it); only a
// socket nobody listens on any more (a daemon that was killed) is removed and bound anew.
// Also the process's descriptor budget: RLIMIT_NOFILE.
// Thread-safety: plain functions; call them before serving (they read /proc and may take a while).
//
//   int port = 0;
//   IPTKIT_ASSIGN_OR_RETURN(base::UniqueFd tcp, ListenTcp("127.0.0.1", 8080, &port));
//   IPTKIT_ASSIGN_OR_RETURN(UnixListener unix_socket, ListenUnix("/run/iptkitd.sock", 0660));
#ifndef IPTKIT_SRC_REST_HTTP_LISTEN_H_
#define IPTKIT_SRC_REST_HTTP_LISTEN_H_

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "iptkit/status.h"
#include "src/base/unique_fd.h"

namespace iptkit::rest::http {

// A non-blocking listening TCP socket on `address` (numeric IPv4 or IPv6) and `port` (0: any free port; the port
// bound is stored in *bound_port). FailedPrecondition naming the holder when the port is in use:
// "127.0.0.1:8080 is in use by pid 4242 (iptkitd --listen 127.0.0.1:8080 ...)".
Result<base::UniqueFd> ListenTcp(const std::string& address, int port, int* bound_port);

// "pid 4242 (iptkitd --listen 127.0.0.1:8080)" for the process holding a listening TCP socket on `port` (IPv4 or
// IPv6, any address) in this network namespace; "" when none is found (or /proc does not tell).
std::string DescribePortHolder(int port);

struct UnixListener {
  base::UniqueFd fd;  // non-blocking, listening
  ino_t inode = 0;    // of the socket file, to remove it at the end only if it is still ours
};
// A non-blocking listening unix socket at `path` with permissions `mode`. FailedPrecondition when the path holds
// something else than a socket, or a socket a live process accepts on ("... is served by pid 4242 (iptkitd ...)").
Result<UnixListener> ListenUnix(const std::string& path, uint32_t mode);

// Removes the socket file at `path` if it is still the one `listener` bound (same inode).
void RemoveUnixSocket(const std::string& path, ino_t inode);

// Raises the soft RLIMIT_NOFILE to the hard limit; returns the soft limit in effect afterwards.
uint64_t RaiseDescriptorLimit();

}  // namespace iptkit::rest::http

#endif  // IPTKIT_SRC_REST_HTTP_LISTEN_H_
