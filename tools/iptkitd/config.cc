#include "tools/iptkitd/config.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <set>

#include "src/base/duration.h"
#include "src/base/errno_status.h"
#include "src/base/unique_fd.h"

namespace iptkit::daemon {
namespace {

constexpr size_t kMaxConfigBytes = size_t{1} << 20;
// sun_path holds the path and its terminating NUL (unix(7)).
constexpr size_t kMaxSocketPath = sizeof(sockaddr_un::sun_path) - 1;

bool IsBlank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }

std::string_view Trim(std::string_view s) {
  while (!s.empty() && IsBlank(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsBlank(s.back())) s.remove_suffix(1);
  return s;
}

bool AllDigits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// Decimal digits only (no sign, no blanks), at most `max`.
bool ParseUnsigned(std::string_view s, uint64_t max, uint64_t* out) {
  if (!AllDigits(s)) return false;
  uint64_t v = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || ptr != s.data() + s.size() || v > max) return false;
  *out = v;
  return true;
}

std::string Quote(std::string_view s) { return "'" + std::string(s) + "'"; }

// The parsers below return reasons without the value; the public wrappers and ParseConfig add where and what.

Result<Listener> ListenerOrReason(std::string_view text) {
  Listener l;
  std::string_view rest = text;
  if (rest.starts_with("http://")) {
    l.tls = Listener::Tls::kOff;
    rest.remove_prefix(7);
  } else if (rest.starts_with("https://")) {
    l.tls = Listener::Tls::kOn;
    rest.remove_prefix(8);
  } else if (rest.find("://") != std::string_view::npos) {
    return Status::InvalidArgument("unknown scheme (use http:// or https://, or none)");
  }
  if (l.tls != Listener::Tls::kAuto && rest.ends_with("/")) rest.remove_suffix(1);
  if (rest.empty()) return Status::InvalidArgument("expected ADDRESS:PORT");

  std::string_view host, port;
  bool bracketed = false;
  if (rest.front() == '[') {
    const size_t close = rest.find(']');
    if (close == std::string_view::npos) return Status::InvalidArgument("missing ']' after the IPv6 address");
    host = rest.substr(1, close - 1);
    bracketed = true;
    rest.remove_prefix(close + 1);
    if (!rest.starts_with(":")) return Status::InvalidArgument("expected ':PORT' after ']'");
    port = rest.substr(1);
  } else {
    const size_t colon = rest.rfind(':');
    if (colon == std::string_view::npos) return Status::InvalidArgument("missing ':PORT'");
    host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) {
      return Status::InvalidArgument("an IPv6 address needs brackets: [ADDRESS]:PORT");
    }
  }
  uint64_t port_number = 0;
  if (!ParseUnsigned(port, 65535, &port_number)) return Status::InvalidArgument("the port must be 0..65535");
  l.port = static_cast<int>(port_number);
  if (host.empty()) return Status::InvalidArgument("missing address (use 0.0.0.0 or [::] for all addresses)");

  const std::string host_str(host);
  char buf[INET6_ADDRSTRLEN];
  in6_addr a6;
  in_addr a4;
  if (bracketed) {
    if (inet_pton(AF_INET6, host_str.c_str(), &a6) != 1) return Status::InvalidArgument("not an IPv6 address");
    l.address = inet_ntop(AF_INET6, &a6, buf, sizeof(buf));
  } else if (inet_pton(AF_INET, host_str.c_str(), &a4) == 1) {
    l.address = inet_ntop(AF_INET, &a4, buf, sizeof(buf));
  } else if (std::equal(host.begin(), host.end(), std::string_view("localhost").begin(),
                        std::string_view("localhost").end(), [](char a, char b) { return (a | 0x20) == b; })) {
    l.address = "127.0.0.1";
  } else {
    return Status::InvalidArgument("not a numeric address; host names other than localhost are not resolved");
  }
  return l;
}

Result<SocketPeer> SocketPeerOrReason(std::string_view text) {
  SocketPeer p;
  std::string_view rest = text;
  if (rest.starts_with("uid:")) {
    rest.remove_prefix(4);
  } else if (rest.starts_with("gid:")) {
    p.is_gid = true;
    rest.remove_prefix(4);
  } else {
    return Status::InvalidArgument("expected uid:N or gid:N, optionally followed by :ro or :rw");
  }
  std::string_view id = rest, mode;
  if (const size_t colon = rest.find(':'); colon != std::string_view::npos) {
    id = rest.substr(0, colon);
    mode = rest.substr(colon + 1);
    if (mode == "ro") {
      p.read_only = true;
    } else if (mode != "rw") {
      return Status::InvalidArgument("the access must be ro or rw");
    }
  }
  uint64_t n = 0;
  if (!ParseUnsigned(id, std::numeric_limits<uint32_t>::max() - 1, &n)) {
    return Status::InvalidArgument("the id must be a number 0..4294967294 (names are not looked up)");
  }
  p.id = static_cast<uint32_t>(n);
  return p;
}

Status PositiveSize(std::string_view v, size_t* out) {
  uint64_t n = 0;
  if (!ParseUnsigned(v, std::numeric_limits<size_t>::max(), &n) || n == 0) {
    return Status::InvalidArgument("expected a positive integer");
  }
  *out = static_cast<size_t>(n);
  return Status::Ok();
}

Status Number(std::string_view v, double min, double* out) {
  double d = 0;
  auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), d);
  if (v.empty() || ec != std::errc() || ptr != v.data() + v.size() || !std::isfinite(d) || d < min) {
    return Status::InvalidArgument("expected a number >= " + std::to_string(static_cast<int>(min)));
  }
  *out = d;
  return Status::Ok();
}

Status OneOf(std::string_view v, std::initializer_list<std::string_view> allowed, std::string* out) {
  if (std::find(allowed.begin(), allowed.end(), v) == allowed.end()) {
    std::string list;
    for (std::string_view a : allowed) list += (list.empty() ? "" : "|") + std::string(a);
    return Status::InvalidArgument("expected one of " + list);
  }
  *out = std::string(v);
  return Status::Ok();
}

// The same rule as ValidateOwner in src/txn (owner tags "iptkit:<owner>:<id>", docs/architecture.md §4).
bool ValidOwner(std::string_view owner) {
  return !owner.empty() && owner.size() <= 32 && std::all_of(owner.begin(), owner.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
  });
}

Status Duration(std::string_view v, std::chrono::milliseconds* out) {
  Result<std::chrono::milliseconds> d = base::ParseDuration(v);
  if (!d.ok()) return d.status();
  *out = *d;
  return Status::Ok();
}

Status SizeAtLeast(std::string_view v, size_t min, size_t* out) {
  uint64_t n = 0;
  if (!ParseUnsigned(v, std::numeric_limits<size_t>::max(), &n) || n < min) {
    return Status::InvalidArgument("expected an integer >= " + std::to_string(min));
  }
  *out = static_cast<size_t>(n);
  return Status::Ok();
}

// A duration of 100ms..1h (the HTTP timeouts).
Status Timeout(std::string_view v, std::chrono::milliseconds* out) {
  Result<std::chrono::milliseconds> d = base::ParseDuration(v);
  if (!d.ok()) return d.status();
  if (*d < std::chrono::milliseconds(100) || *d > std::chrono::hours(1)) {
    return Status::InvalidArgument("expected a duration from 100ms to 1h");
  }
  *out = *d;
  return Status::Ok();
}

struct KeySpec {
  std::string name;
  bool repeatable = false;
  std::string help;
  // Applies a value; a non-OK Status carries the reason only.
  std::function<Status(std::string_view, DaemonConfig*)> apply;
  bool is_flag = false;
};

// A name of [A-Za-z0-9._-]{1,64} (fleet group, host id, label key).
bool ValidFleetName(std::string_view s) {
  return !s.empty() && s.size() <= 64 && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == '-';
  });
}

// "a,b,c" -> {"a","b","c"}; empty items are refused.
Status CommaList(std::string_view v, const std::function<bool(std::string_view)>& valid, std::string_view what,
                 std::vector<std::string>* out) {
  std::vector<std::string> items;
  while (true) {
    size_t comma = v.find(',');
    std::string_view item = Trim(v.substr(0, comma));
    if (item.empty() || !valid(item)) return Status::InvalidArgument("expected a comma list of " + std::string(what));
    items.emplace_back(item);
    if (comma == std::string_view::npos) break;
    v.remove_prefix(comma + 1);
  }
  *out = std::move(items);
  return Status::Ok();
}

Status PathValue(std::string_view v, std::string* out) {
  if (v.empty()) return Status::InvalidArgument("expected a file path");
  *out = std::string(v);
  return Status::Ok();
}

// In the order of docs/daemon-config.md's table.
const std::vector<KeySpec>& Keys() {
  static const auto*
      keys =
          new std::
              vector<KeySpec>{
                  {"netns", false, "network namespace to serve: NAME (/run/netns) or PATH (default: the daemon's own)",
                   [](std::string_view v, DaemonConfig* c) {
                     c->netns = std::string(v);
                     return Status::Ok();
                   }},
                  {"backend", false, "auto|native|nft|legacy|fake (default auto)",
                   [](std::string_view v, DaemonConfig* c) {
                     return OneOf(v, {"auto", "native", "nft", "legacy", "fake"}, &c->backend);
                   }},
                  {"listen", true, "[http://|https://]ADDR:PORT to serve on (repeatable)",
                   [](std::string_view v, DaemonConfig* c) {
                     Result<Listener> l = ListenerOrReason(v);
                     if (!l.ok()) return l.status();
                     c->listen.push_back(*l);
                     return Status::Ok();
                   }},
                  {"socket", false, "unix socket path (default: none)",
                   [](std::string_view v, DaemonConfig* c) {
                     if (v.size() > kMaxSocketPath) {
                       return Status::InvalidArgument("a unix socket path has at most " +
                                                      std::to_string(kMaxSocketPath) + " bytes");
                     }
                     c->socket = std::string(v);
                     return Status::Ok();
                   }},
                  {"socket_mode", false, "permissions of the unix socket, octal (default 0660)",
                   [](std::string_view v, DaemonConfig* c) {
                     const bool octal = !v.empty() && v.size() <= 4 &&
                                        std::all_of(v.begin(), v.end(), [](char ch) { return ch >= '0' && ch <= '7'; });
                     uint32_t mode = 0;
                     if (octal) std::from_chars(v.data(), v.data() + v.size(), mode, 8);
                     if (!octal || mode > 0777)
                       return Status::InvalidArgument("expected an octal mode 0..0777, e.g. 0660");
                     c->socket_mode = mode;
                     return Status::Ok();
                   }},
                  {"socket_allow", true, "uid:N or gid:N, optionally :ro, allowed on the unix socket (repeatable)",
                   [](std::string_view v, DaemonConfig* c) {
                     Result<SocketPeer> p = SocketPeerOrReason(v);
                     if (!p.ok()) return p.status();
                     c->socket_allow.push_back(*p);
                     return Status::Ok();
                   }},
                  {"state_dir", false, "directory of the SQLite store (default /var/lib/iptkitd)",
                   [](std::string_view v, DaemonConfig* c) {
                     if (v.empty()) return Status::InvalidArgument("must not be empty");
                     c->state_dir = std::string(v);
                     return Status::Ok();
                   }},
                  {"tls_cert", false, "PEM certificate chain for TLS listeners",
                   [](std::string_view v, DaemonConfig* c) {
                     c->tls_cert = std::string(v);
                     return Status::Ok();
                   }},
                  {"tls_key", false, "PEM private key for TLS listeners",
                   [](std::string_view v, DaemonConfig* c) {
                     c->tls_key = std::string(v);
                     return Status::Ok();
                   }},
                  {"drift_interval", false, "how often owned state is checked (default 5s)",
                   [](std::string_view v, DaemonConfig* c) { return Duration(v, &c->drift_interval); }},
                  {"group_wait", false, "group commit window under load, at most 1s (default 5ms; 0 = none)",
                   [](std::string_view v, DaemonConfig* c) {
                     if (v == "0") {
                       c->group_wait = std::chrono::milliseconds(0);
                       return Status::Ok();
                     }
                     std::chrono::milliseconds d{0};
                     IPTKIT_RETURN_IF_ERROR(Duration(v, &d));
                     if (d > std::chrono::seconds(1)) return Status::InvalidArgument("at most 1s");
                     c->group_wait = d;
                     return Status::Ok();
                   }},
                  {"wait", false, "bound on waiting for the xtables lock (default 10s)",
                   [](std::string_view v, DaemonConfig* c) { return Duration(v, &c->wait); }},
                  {"max_body_bytes", false, "request body limit in bytes (default 1048576)",
                   [](std::string_view v, DaemonConfig* c) { return PositiveSize(v, &c->max_body_bytes); }},
                  {"max_set_body_bytes", false, "body limit in bytes of set loads and syncs (default 33554432)",
                   [](std::string_view v, DaemonConfig* c) { return PositiveSize(v, &c->max_set_body_bytes); }},
                  {"max_ops", false, "ops / rules per request (default 1000)",
                   [](std::string_view v, DaemonConfig* c) { return PositiveSize(v, &c->max_ops); }},
                  {"rate_limit", false, "requests per second per principal (default 100; 0 = unlimited)",
                   [](std::string_view v, DaemonConfig* c) { return Number(v, 0, &c->rate_limit); }},
                  {"rate_burst", false, "token bucket size, >= 1 (default 200)",
                   [](std::string_view v, DaemonConfig* c) { return Number(v, 1, &c->rate_burst); }},
                  {"auth_failure_rate", false,
                   "failed authentications per second per client address before they are held (default 10; 0 = "
                   "no limit)",
                   [](std::string_view v, DaemonConfig* c) { return Number(v, 0, &c->auth_failure_rate); }},
                  {"auth_failure_burst", false, "failed authentications per client address at once, >= 1 (default 100)",
                   [](std::string_view v, DaemonConfig* c) { return Number(v, 1, &c->auth_failure_burst); }},
                  {"auth_failure_hold", false,
                   "how long a failed authentication beyond the budget waits for its 429 (default 1s; 100ms..1h)",
                   [](std::string_view v, DaemonConfig* c) { return Timeout(v, &c->auth_failure_hold); }},
                  {"max_connections", false, "TCP connections open at once, all listeners (default 1024)",
                   [](std::string_view v, DaemonConfig* c) { return PositiveSize(v, &c->max_connections); }},
                  {"max_connections_per_peer", false, "TCP connections from one address (default 128)",
                   [](std::string_view v, DaemonConfig* c) { return PositiveSize(v, &c->max_connections_per_peer); }},
                  {"max_socket_connections", false, "unix socket connections at once (default 64)",
                   [](std::string_view v, DaemonConfig* c) { return PositiveSize(v, &c->max_socket_connections); }},
                  {"max_event_streams", false, "open GET /v1/events streams (default 256)",
                   [](std::string_view v, DaemonConfig* c) { return PositiveSize(v, &c->max_event_streams); }},
                  {"event_buffer_bytes", false,
                   "bytes an event stream may fall behind before it is cut (default 1048576)",
                   [](std::string_view v, DaemonConfig* c) { return PositiveSize(v, &c->event_buffer_bytes); }},
                  {"max_header_bytes", false, "request line and header fields, >= 1024 (default 16384)",
                   [](std::string_view v, DaemonConfig* c) {
                     size_t n = 0;
                     IPTKIT_RETURN_IF_ERROR(PositiveSize(v, &n));
                     if (n < 1024) return Status::InvalidArgument("at least 1024");
                     c->max_header_bytes = n;
                     return Status::Ok();
                   }},
                  {"header_timeout", false,
                   "time to send a request's head and the TLS handshake, 100ms..1h (default 10s)",
                   [](std::string_view v, DaemonConfig* c) { return Timeout(v, &c->header_timeout); }},
                  {"body_timeout", false, "time to send an admitted body, 100ms..1h (default 30s)",
                   [](std::string_view v, DaemonConfig* c) { return Timeout(v, &c->body_timeout); }},
                  {"idle_timeout", false,
                   "how long a keep-alive connection may idle between requests, 100ms..1h (default 5s)",
                   [](std::string_view v, DaemonConfig* c) { return Timeout(v, &c->idle_timeout); }},
                  {"send_timeout", false,
                   "how long an answer may wait for the client to read it, 100ms..1h (default 10s)",
                   [](std::string_view v, DaemonConfig* c) { return Timeout(v, &c->send_timeout); }},
                  {"io_threads", false, "HTTP I/O threads, 1..64 (default 2)",
                   [](std::string_view v, DaemonConfig* c) {
                     size_t n = 0;
                     IPTKIT_RETURN_IF_ERROR(PositiveSize(v, &n));
                     if (n > 64) return Status::InvalidArgument("at most 64");
                     c->io_threads = n;
                     return Status::Ok();
                   }},
                  {"workers", false, "request handler threads for TCP (default 128)",
                   [](std::string_view v, DaemonConfig* c) { return PositiveSize(v, &c->workers); }},
                  {"socket_workers", false, "request handler threads for the unix socket (default 4)",
                   [](std::string_view v, DaemonConfig* c) { return PositiveSize(v, &c->socket_workers); }},
                  {"max_batch", false, "requests per group commit (default 1000)",
                   [](std::string_view v, DaemonConfig* c) { return PositiveSize(v, &c->max_batch); }},
                  {"log_level", false, "trace|debug|info|warn|error|off (default info)",
                   [](std::string_view v, DaemonConfig* c) {
                     return OneOf(v, {"trace", "debug", "info", "warn", "error", "off"}, &c->log_level);
                   }},
                  {"default_owner", false, "owner of TTL rules added without one (default iptkitd)",
                   [](std::string_view v, DaemonConfig* c) {
                     if (!ValidOwner(v)) return Status::InvalidArgument("an owner is 1..32 characters of [a-z0-9-]");
                     c->default_owner = std::string(v);
                     return Status::Ok();
                   }},
                  {"audit_max_age", false, "audit entries older than this are removed (default 90d)",
                   [](std::string_view v, DaemonConfig* c) { return Duration(v, &c->audit_max_age); }},
                  {"audit_max_bytes", false,
                   "the oldest audit entries are removed while the log is larger (default 268435456)",
                   [](std::string_view v, DaemonConfig* c) { return SizeAtLeast(v, 4096, &c->audit_max_bytes); }},
                  {"audit_body_bytes", false, "stored bytes of an audited request or diff, >= 256 (default 65536)",
                   [](std::string_view v, DaemonConfig* c) { return SizeAtLeast(v, 256, &c->audit_body_bytes); }},
                  {"audit_page_bytes", false, "bytes of one GET /v1/audit answer, >= 65536 (default 1048576)",
                   [](std::string_view v, DaemonConfig* c) { return SizeAtLeast(v, 65536, &c->audit_page_bytes); }},
                  {"audit_prune_interval", false, "how often audit retention is enforced (default 1m)",
                   [](std::string_view v, DaemonConfig* c) { return Duration(v, &c->audit_prune_interval); }},
                  {"ui", false, "on|off: serve the dashboard at /ui/ on the TCP listeners (default on; --no-ui: off)",
                   [](std::string_view v, DaemonConfig* c) {
                     std::string word;
                     IPTKIT_RETURN_IF_ERROR(OneOf(v, {"on", "off"}, &word));
                     c->ui = word == "on";
                     return Status::Ok();
                   }},
                  {"ui_dir", false, "directory of the dashboard's files (default " + DefaultUiDir() + ")",
                   [](std::string_view v, DaemonConfig* c) {
                     if (v.empty() || v.front() != '/') return Status::InvalidArgument("expected an absolute path");
                     c->ui_dir = std::string(v);
                     return Status::Ok();
                   }},
                  {"ui_allowed_host", true,
                   "a Host name the dashboard is served for, besides localhost and the listeners' addresses "
                   "(repeatable)",
                   [](std::string_view v, DaemonConfig* c) {
                     const bool ok =
                         !v.empty() && v.size() <= 253 && std::all_of(v.begin(), v.end(), [](unsigned char ch) {
                           return std::isalnum(ch) || ch == '.' || ch == '-' || ch == ':';
                         });
                     if (!ok) return Status::InvalidArgument("expected a host name or address without port");
                     std::string host(v);
                     std::transform(host.begin(), host.end(), host.begin(),
                                    [](unsigned char ch) { return std::tolower(ch); });
                     c->ui_allowed_hosts.push_back(std::move(host));
                     return Status::Ok();
                   }},
                  {"counter_interval", false, "how often rule counters are sampled for rates (default 5s; 0 = never)",
                   [](std::string_view v, DaemonConfig* c) {
                     if (v == "0") {
                       c->counter_interval = std::chrono::milliseconds(0);
                       return Status::Ok();
                     }
                     std::chrono::milliseconds d{0};
                     IPTKIT_RETURN_IF_ERROR(Duration(v, &d));
                     if (d < std::chrono::milliseconds(100))
                       return Status::InvalidArgument("expected 0 or at least 100ms");
                     c->counter_interval = d;
                     return Status::Ok();
                   }},
                  {"agent", false, "fleet mode: follow a group's desired state in etcd (docs/fleet.md)",
                   [](std::string_view v, DaemonConfig* c) {
                     if (v != "true" && v != "false") return Status::InvalidArgument("expected true or false");
                     c->agent = v == "true";
                     return Status::Ok();
                   },
                   /*is_flag=*/true},
                  {"etcd", false, "etcd endpoints for --agent: URL[,URL...] (http:// or https://)",
                   [](std::string_view v, DaemonConfig* c) {
                     return CommaList(
                         v, [](std::string_view u) { return u.starts_with("http://") || u.starts_with("https://"); },
                         "http:// or https:// URLs", &c->etcd);
                   }},
                  {"prefix", false, "etcd key prefix of the fleet (default /iptkit)",
                   [](std::string_view v, DaemonConfig* c) {
                     if (v.empty() || v.front() != '/' || v.back() == '/' || v.find('\n') != std::string_view::npos) {
                       return Status::InvalidArgument(
                           "expected a prefix that starts with '/' and does not end with '/'");
                     }
                     c->prefix = std::string(v);
                     return Status::Ok();
                   }},
                  {"group", false, "the fleet group this host follows, [A-Za-z0-9._-]{1,64}",
                   [](std::string_view v, DaemonConfig* c) {
                     if (!ValidFleetName(v)) return Status::InvalidArgument("expected [A-Za-z0-9._-]{1,64}");
                     c->group = std::string(v);
                     return Status::Ok();
                   }},
                  {"host_id", false, "this host's id in the fleet (default: the host name)",
                   [](std::string_view v, DaemonConfig* c) {
                     if (!ValidFleetName(v)) return Status::InvalidArgument("expected [A-Za-z0-9._-]{1,64}");
                     c->host_id = std::string(v);
                     return Status::Ok();
                   }},
                  {"label", true, "k=v label of this host in its fleet report (repeatable)",
                   [](std::string_view v, DaemonConfig* c) {
                     size_t eq = v.find('=');
                     if (eq == std::string_view::npos || !ValidFleetName(v.substr(0, eq)) ||
                         v.find_first_of("\n\"") != std::string_view::npos) {
                       return Status::InvalidArgument("expected KEY=VALUE with KEY of [A-Za-z0-9._-]{1,64}");
                     }
                     c->label.emplace_back(v);
                     return Status::Ok();
                   }},
                  {"etcd_user", false, "etcd user name (default: no etcd auth)",
                   [](std::string_view v, DaemonConfig* c) {
                     if (v.empty()) return Status::InvalidArgument("expected a user name");
                     c->etcd_user = std::string(v);
                     return Status::Ok();
                   }},
                  {"etcd_password_file", false, "file whose first line is the etcd user's password",
                   [](std::string_view v, DaemonConfig* c) { return PathValue(v, &c->etcd_password_file); }},
                  {"etcd_ca", false, "CA certificates (PEM) for https:// etcd endpoints (default: the system's)",
                   [](std::string_view v, DaemonConfig* c) { return PathValue(v, &c->etcd_ca); }},
                  {"etcd_cert", false, "client certificate (PEM) for etcd, with etcd_key",
                   [](std::string_view v, DaemonConfig* c) { return PathValue(v, &c->etcd_cert); }},
                  {"etcd_key", false, "client private key (PEM) for etcd",
                   [](std::string_view v, DaemonConfig* c) { return PathValue(v, &c->etcd_key); }},
                  {"agent_owners", false, "owners the agent may change, comma list (default: any)",
                   [](std::string_view v, DaemonConfig* c) {
                     return CommaList(v, ValidOwner, "owners of [a-z0-9-]{1,32}", &c->agent_owners);
                   }},
                  {"agent_tables", false, "tables the agent may change, comma list (default: any)",
                   [](std::string_view v, DaemonConfig* c) {
                     return CommaList(
                         v,
                         [](std::string_view t) {
                           return t == "filter" || t == "nat" || t == "mangle" || t == "raw" || t == "security";
                         },
                         "filter|nat|mangle|raw|security", &c->agent_tables);
                   }},
                  {"agent_max_ttl", false, "longest TTL of a fleet rule (default: no bound)",
                   [](std::string_view v, DaemonConfig* c) { return Duration(v, &c->agent_max_ttl); }},
                  {"max_removals", false, "owners one etcd change may remove without .force (default 5)",
                   [](std::string_view v, DaemonConfig* c) { return SizeAtLeast(v, 0, &c->max_removals); }},
                  {"report_ttl", false, "lease TTL of this host's fleet report, 1s..1h (default 10s)",
                   [](std::string_view v, DaemonConfig* c) {
                     Result<std::chrono::milliseconds> d = base::ParseDuration(v);
                     if (!d.ok()) return d.status();
                     if (*d < std::chrono::seconds(1) || *d > std::chrono::hours(1)) {
                       return Status::InvalidArgument("expected a duration from 1s to 1h");
                     }
                     c->report_ttl = *d;
                     return Status::Ok();
                   }},
              };
  return *keys;
}

const KeySpec* FindKey(std::string_view name) {
  for (const KeySpec& k : Keys()) {
    if (k.name == name) return &k;
  }
  return nullptr;
}

// The value part of a line (after '='): a quoted string, or the text up to a comment, trimmed.
Result<std::string> ParseValue(std::string_view raw) {
  raw = Trim(raw);
  if (!raw.starts_with("\"")) {
    for (size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] == '#' && (i == 0 || IsBlank(raw[i - 1]))) {
        raw = raw.substr(0, i);
        break;
      }
    }
    return std::string(Trim(raw));
  }
  std::string value;
  size_t i = 1;
  for (;; ++i) {
    if (i >= raw.size()) return Status::InvalidArgument("missing closing '\"'");
    const char c = raw[i];
    if (c == '"') break;
    if (c == '\\') {
      if (i + 1 >= raw.size() || (raw[i + 1] != '"' && raw[i + 1] != '\\')) {
        return Status::InvalidArgument("only \\\" and \\\\ may follow a backslash in a quoted value");
      }
      value += raw[++i];
      continue;
    }
    value += c;
  }
  const std::string_view after = Trim(raw.substr(i + 1));
  if (!after.empty() && after.front() != '#') return Status::InvalidArgument("text after the closing '\"'");
  return value;
}

}  // namespace

Result<Listener> ParseListener(std::string_view text) {
  Result<Listener> l = ListenerOrReason(text);
  if (!l.ok()) return Status::InvalidArgument("listener " + Quote(text) + ": " + l.status().message());
  return l;
}

std::string FormatListener(const Listener& l) {
  std::string out = l.tls == Listener::Tls::kOff ? "http://" : l.tls == Listener::Tls::kOn ? "https://" : "";
  if (l.address.find(':') != std::string::npos) {
    out += "[" + l.address + "]";
  } else {
    out += l.address;
  }
  return out + ":" + std::to_string(l.port);
}

bool IsLoopback(const Listener& l) {
  if (l.address == "localhost") return true;
  in_addr a4;
  if (inet_pton(AF_INET, l.address.c_str(), &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
  in6_addr a6;
  if (inet_pton(AF_INET6, l.address.c_str(), &a6) != 1) return false;
  if (IN6_IS_ADDR_LOOPBACK(&a6)) return true;
  return IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127;
}

bool UsesTls(const Listener& l) {
  switch (l.tls) {
    case Listener::Tls::kOn:
      return true;
    case Listener::Tls::kOff:
      return false;
    case Listener::Tls::kAuto:
      break;
  }
  return !IsLoopback(l);
}

Result<SocketPeer> ParseSocketPeer(std::string_view text) {
  Result<SocketPeer> p = SocketPeerOrReason(text);
  if (!p.ok()) return Status::InvalidArgument("socket peer " + Quote(text) + ": " + p.status().message());
  return p;
}

std::string FormatSocketPeer(const SocketPeer& p) {
  return std::string(p.is_gid ? "gid:" : "uid:") + std::to_string(p.id) + (p.read_only ? ":ro" : "");
}

Result<std::chrono::milliseconds> ParseDuration(std::string_view text) {
  Result<std::chrono::milliseconds> d = base::ParseDuration(text);
  if (!d.ok()) return Status::InvalidArgument("duration " + d.status().message());
  return d;
}

#ifndef IPTKIT_UI_DIR
#define IPTKIT_UI_DIR "/usr/local/share/iptkit/ui"
#endif

std::string DefaultUiDir() { return IPTKIT_UI_DIR; }

const std::vector<ConfigKey>& ConfigKeys() {
  static const auto* keys = [] {
    auto* out = new std::vector<ConfigKey>;
    for (const KeySpec& k : Keys()) {
      std::string flag = "--" + k.name;
      std::replace(flag.begin(), flag.end(), '_', '-');
      out->push_back({k.name, flag, k.repeatable, k.help, k.is_flag});
    }
    return out;
  }();
  return *keys;
}

Status ApplyConfigValue(std::string_view key, std::string_view value, DaemonConfig* config) {
  const KeySpec* spec = FindKey(key);
  if (spec == nullptr) return Status::InvalidArgument("unknown key");
  if (value.find('\0') != std::string_view::npos) return Status::InvalidArgument("NUL byte in the value");
  return spec->apply(value, config);
}

Result<DaemonConfig> ParseConfig(std::string_view text, std::string_view file_name, DaemonConfig base) {
  DaemonConfig config = std::move(base);
  std::map<std::string, int, std::less<>> first_line;  // non-repeatable keys seen so far
  int line_number = 0;
  while (!text.empty()) {
    ++line_number;
    const size_t eol = text.find('\n');
    std::string_view line = text.substr(0, eol);
    text.remove_prefix(eol == std::string_view::npos ? text.size() : eol + 1);

    line = Trim(line);
    if (line.empty() || line.front() == '#') continue;
    const std::string where = std::string(file_name) + ":" + std::to_string(line_number) + ": ";
    if (line.find('\0') != std::string_view::npos) return Status::InvalidArgument(where + "NUL byte in the line");
    const size_t eq = line.find('=');
    if (eq == std::string_view::npos) {
      return Status::InvalidArgument(where + "expected 'key = value', got " + Quote(line));
    }
    const std::string_view key = Trim(line.substr(0, eq));
    if (key.empty()) return Status::InvalidArgument(where + "missing key before '=' in " + Quote(line));
    const KeySpec* spec = FindKey(key);
    if (spec == nullptr) {
      return Status::InvalidArgument(where + std::string(key) + " " + Quote(Trim(line.substr(eq + 1))) +
                                     ": unknown key");
    }
    Result<std::string> value = ParseValue(line.substr(eq + 1));
    if (!value.ok()) {
      return Status::InvalidArgument(where + std::string(key) + " " + Quote(Trim(line.substr(eq + 1))) + ": " +
                                     value.status().message());
    }
    if (!spec->repeatable) {
      auto [it, inserted] = first_line.emplace(std::string(key), line_number);
      if (!inserted) {
        return Status::InvalidArgument(where + std::string(key) + " " + Quote(*value) +
                                       ": key given twice (first on line " + std::to_string(it->second) + ")");
      }
    }
    if (Status s = spec->apply(*value, &config); !s.ok()) {
      return Status::InvalidArgument(where + std::string(key) + " " + Quote(*value) + ": " + s.message());
    }
  }
  return config;
}

Result<DaemonConfig> LoadConfigFile(const std::string& path, DaemonConfig base) {
  base::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return base::ErrnoToStatus(errno, "config file " + path);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return base::ErrnoToStatus(errno, "config file " + path);
  if (!S_ISREG(st.st_mode)) return Status::InvalidArgument("config file " + path + ": not a regular file");
  std::string text;
  char buf[8192];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return base::ErrnoToStatus(errno, "config file " + path);
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
    if (text.size() > kMaxConfigBytes) {
      return Status::InvalidArgument("config file " + path + ": larger than " + std::to_string(kMaxConfigBytes) +
                                     " bytes");
    }
  }
  return ParseConfig(text, path, std::move(base));
}

Status ValidateConfig(const DaemonConfig& config) {
  if (config.listen.empty() && config.socket.empty()) {
    return Status::InvalidArgument("nothing to serve: set at least one listen address or a socket");
  }
  if (config.tls_cert.empty() != config.tls_key.empty()) {
    return Status::InvalidArgument(config.tls_cert.empty() ? "tls_key is set but tls_cert is not"
                                                           : "tls_cert is set but tls_key is not");
  }
  if (config.agent && (config.etcd.empty() || config.group.empty())) {
    return Status::InvalidArgument("agent needs etcd and group");
  }
  if (config.etcd_cert.empty() != config.etcd_key.empty()) {
    return Status::InvalidArgument("etcd_cert and etcd_key go together");
  }
  const bool have_tls = !config.tls_cert.empty();
  std::set<std::pair<std::string, int>> bound;
  for (const Listener& l : config.listen) {
    const std::string name = "listener " + FormatListener(l);
    // Port 0 picks a fresh port per bind, so two of them never collide.
    if (l.port != 0 && !bound.emplace(l.address, l.port).second) {
      return Status::InvalidArgument(name + ": address and port given twice");
    }
    if (l.tls == Listener::Tls::kOff && !IsLoopback(l)) {
      return Status::InvalidArgument(name +
                                     ": plain HTTP is only allowed on a loopback address; use https:// "
                                     "with tls_cert and tls_key");
    }
    if (UsesTls(l) && !have_tls) {
      return Status::InvalidArgument(name + ": TLS needs tls_cert and tls_key" +
                                     (l.tls == Listener::Tls::kAuto ? " (a non-loopback address requires TLS)" : ""));
    }
  }
  return Status::Ok();
}

}  // namespace iptkit::daemon
