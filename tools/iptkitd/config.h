// DaemonConfig: the settings of iptkitd, read from its configuration file (docs/daemon-config.md is the reference of
// every key) and overridden by command-line flags. Every key has exactly one flag (`rate_burst` is `--rate-burst`),
// and a flag's value goes through the same parser and checks as the key's (ApplyConfigValue).
//
// The file format: one `key = value` per line; blank lines are ignored; '#' starts a comment on a line of its own or
// after whitespace (`listen = 127.0.0.1:8080  # local`; `netns = a#b` keeps the '#'); keys and values are trimmed.
// A value in double quotes is taken verbatim between them, with \" and \\ as the only escapes (for leading or
// trailing blanks, or " #"). `listen` and `socket_allow` may repeat and append; any other key given twice is an
// error. Errors are InvalidArgument "FILE:LINE: KEY 'VALUE': reason"; nothing is partially applied.
// Parsing never touches the system (no DNS, no file checks beyond reading the file itself).
// Thread-safety: stateless functions.
//
//   IPTKIT_ASSIGN_OR_RETURN(DaemonConfig config, LoadConfigFile("/etc/iptkit/iptkitd.conf"));
//   for (const std::string& flag : listen_flags) {
//     IPTKIT_ASSIGN_OR_RETURN(Listener l, ParseListener(flag));
//     config.listen.push_back(l);
//   }
//   IPTKIT_RETURN_IF_ERROR(ValidateConfig(config));
#ifndef IPTKIT_TOOLS_IPTKITD_CONFIG_H_
#define IPTKIT_TOOLS_IPTKITD_CONFIG_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "iptkit/status.h"

namespace iptkit::daemon {

// Who may use the unix socket, matched against the peer's SO_PEERCRED uid or gid.
// Text form: "uid:0", "gid:27:ro", "uid:1000:rw" (rw is the default). Ids are numeric (no NSS lookups).
struct SocketPeer {
  bool is_gid = false;     // match the peer's gid instead of its uid
  uint32_t id = 0;         // 0..4294967294 ((uid_t)-1 is not an id)
  bool read_only = false;  // only GET requests

  friend bool operator==(const SocketPeer&, const SocketPeer&) = default;
};

// One TCP listener. Text form: "127.0.0.1:8080", "[::1]:8080", "localhost:8080", "http://127.0.0.1:8080" (tls kOff),
// "https://0.0.0.0:8443" (tls kOn); an optional trailing "/" after a URL. The host is a numeric IPv4 or IPv6 address
// (IPv6 in brackets) or "localhost"; other host names are refused because they would need DNS.
struct Listener {
  // kAuto: TLS unless the address is loopback (see UsesTls).
  enum class Tls { kAuto, kOff, kOn };
  Tls tls = Tls::kAuto;
  std::string address;  // numeric IPv4, or IPv6 without brackets in inet_ntop form; "localhost" becomes 127.0.0.1
  int port = 0;         // 0..65535; 0 = any free port

  friend bool operator==(const Listener&, const Listener&) = default;
};

Result<Listener> ParseListener(std::string_view text);
// The text form that parses back to `l`: "https://[::1]:8443", "127.0.0.1:8080" (no scheme for kAuto).
std::string FormatListener(const Listener& l);
// 127.0.0.0/8 (also IPv4-mapped, ::ffff:127.x.y.z), ::1, "localhost".
bool IsLoopback(const Listener& l);
// Whether the listener speaks TLS: kOn, or kAuto on a non-loopback address.
bool UsesTls(const Listener& l);

Result<SocketPeer> ParseSocketPeer(std::string_view text);
// "uid:0", "gid:27:ro".
std::string FormatSocketPeer(const SocketPeer& p);

// "250ms", "5s", "2m", "1h", or a plain integer = seconds. Integers only, no blanks; must be > 0.
Result<std::chrono::milliseconds> ParseDuration(std::string_view text);

// Where `cmake --install` puts the dashboard's files (PREFIX/share/iptkit/ui).
std::string DefaultUiDir();

// Defaults are the values used when a key is absent. Each field names its key.
struct DaemonConfig {
  std::string netns;                           // netns: a name under /run/netns or a path; "" = the daemon's own
  std::string backend = "auto";                // backend: auto|native|nft|legacy|fake (fake: in-memory, for tests)
  std::vector<Listener> listen;                // listen (repeatable)
  std::string socket;                          // socket: unix socket path (at most 107 bytes); "" = none
  uint32_t socket_mode = 0660;                 // socket_mode: octal, at most 0777
  std::vector<SocketPeer> socket_allow;        // socket_allow (repeatable)
  std::string state_dir = "/var/lib/iptkitd";  // state_dir: SQLite store; not empty
  std::string tls_cert;                        // tls_cert: PEM certificate chain file; "" = none
  std::string tls_key;                         // tls_key: PEM private key file; "" = none
  std::chrono::milliseconds drift_interval = std::chrono::seconds(5);  // drift_interval: drift check period
  std::chrono::milliseconds wait = std::chrono::seconds(10);           // wait: bound on waiting for the xtables lock
  // group_wait: how long the writer, under load, waits for the clients its last commit answered before the next
  // commit ("0" = never waits); at most 1s.
  std::chrono::milliseconds group_wait = std::chrono::milliseconds(5);
  size_t max_body_bytes = 1 << 20;       // max_body_bytes: request body limit; > 0
  size_t max_set_body_bytes = 32 << 20;  // max_set_body_bytes: body limit of set loads and syncs; > 0
  size_t max_ops = 1000;                 // max_ops: ops / rules per request; > 0
  double rate_limit = 100;               // rate_limit: requests per second per principal, >= 0; 0 = unlimited
  double rate_burst = 200;               // rate_burst: token bucket size, >= 1
  size_t max_connections = 1024;         // max_connections: TCP connections open at once, all listeners; > 0
  // Failed authentications per client address (docs/daemon.md "Failed authentications"):
  double auth_failure_rate = 10;    // auth_failure_rate: per second, >= 0; 0 = no budget
  double auth_failure_burst = 100;  // auth_failure_burst: at once, >= 1
  std::chrono::milliseconds auth_failure_hold = std::chrono::seconds(1);  // auth_failure_hold: 100ms..1h
  // HTTP limits (docs/daemon.md "Connections and limits"):
  size_t max_connections_per_peer = 128;  // max_connections_per_peer: TCP connections from one address; > 0
  size_t max_socket_connections = 64;     // max_socket_connections: unix socket connections at once; > 0
  size_t max_event_streams = 256;         // max_event_streams: open GET /v1/events streams; > 0
  size_t event_buffer_bytes = 1 << 20;    // event_buffer_bytes: how far (bytes) an event stream may fall behind; > 0
  size_t max_header_bytes = 16 * 1024;    // max_header_bytes: request line and header fields; >= 1024
  std::chrono::milliseconds header_timeout = std::chrono::seconds(10);  // header_timeout: the head (and TLS handshake)
  std::chrono::milliseconds body_timeout = std::chrono::seconds(30);    // body_timeout: an admitted body
  std::chrono::milliseconds idle_timeout = std::chrono::seconds(5);     // idle_timeout: keep-alive between requests
  std::chrono::milliseconds send_timeout = std::chrono::seconds(10);  // send_timeout: an answer not read by the client
  size_t io_threads = 2;                                              // io_threads: HTTP I/O threads; 1..64
  size_t workers = 128;                                               // workers: request handler threads for TCP; > 0
  size_t socket_workers = 4;              // socket_workers: request handler threads for the unix socket; > 0
  size_t max_batch = 1000;                // max_batch: requests per group commit; > 0
  std::string log_level = "info";         // log_level: trace|debug|info|warn|error|off
  std::string default_owner = "iptkitd";  // default_owner: owner of TTL rules added without one; [a-z0-9-]{1,32}
  // Audit log (docs/daemon.md "Audit log retention").
  std::chrono::milliseconds audit_max_age = std::chrono::hours(24 * 90);  // audit_max_age: entries older go
  size_t audit_max_bytes = size_t{256} << 20;  // audit_max_bytes: oldest entries go while the log is larger; > 0
  size_t audit_body_bytes = 64 << 10;          // audit_body_bytes: stored bytes of a request or diff; >= 256
  size_t audit_page_bytes = 1 << 20;           // audit_page_bytes: bytes of one GET /v1/audit answer; >= 65536
  std::chrono::milliseconds audit_prune_interval = std::chrono::minutes(1);  // audit_prune_interval
  // The dashboard (docs/dashboard.md).
  bool ui = true;                       // ui: on|off — serve it at /ui/ on the TCP listeners (--no-ui: off)
  std::string ui_dir = DefaultUiDir();  // ui_dir: its files
  // ui_allowed_host (repeatable): Host names it is served for besides localhost, the loopback addresses and the
  // listeners' addresses. Lower case.
  std::vector<std::string> ui_allowed_hosts;
  // counter_interval: how often rule counters are sampled for rates (GET .../rates); 0 = never.
  std::chrono::milliseconds counter_interval = std::chrono::seconds(5);
  // Fleet mode (docs/fleet.md): desired state from etcd.
  bool agent = false;                          // agent: true|false (flag --agent without a value)
  std::vector<std::string> etcd;               // etcd: URL[,URL...] (http:// or https://)
  std::string prefix = "/iptkit";              // prefix: etcd key prefix, starts with '/', no trailing '/'
  std::string group;                           // group: the group this host follows, [A-Za-z0-9._-]{1,64}
  std::string host_id;                         // host_id: default the host name
  std::vector<std::string> label;              // label: k=v (repeatable)
  std::string etcd_user;                       // etcd_user: "" = no etcd auth
  std::string etcd_password_file;              // etcd_password_file: the etcd user's password (first line)
  std::string etcd_ca;                         // etcd_ca: CA file for https:// endpoints ("" = system trust store)
  std::string etcd_cert;                       // etcd_cert: client certificate (PEM), with etcd_key
  std::string etcd_key;                        // etcd_key
  std::vector<std::string> agent_owners;       // agent_owners: owners the agent may change (comma list; empty = any)
  std::vector<std::string> agent_tables;       // agent_tables: tables the agent may change (comma list; empty = any)
  std::chrono::milliseconds agent_max_ttl{0};  // agent_max_ttl: longest TTL of a fleet rule (0 = no bound)
  size_t max_removals = 5;                     // max_removals: owners one etcd change may remove without .force
  std::chrono::milliseconds report_ttl = std::chrono::seconds(10);  // report_ttl: lease of PREFIX/hosts/ID

  friend bool operator==(const DaemonConfig&, const DaemonConfig&) = default;
};

// One configuration key and its flag, for `--help` and the docs test: every key is a flag "--" + name with '_'
// replaced by '-'.
struct ConfigKey {
  std::string name;  // "rate_burst"
  std::string flag;  // "--rate-burst"
  bool repeatable = false;
  std::string help;      // one line, with the default
  bool is_flag = false;  // the flag takes no value and means "true" (agent)
};
// Every key, in the order of docs/daemon-config.md.
const std::vector<ConfigKey>& ConfigKeys();

// Applies one value of `key` to `config` exactly as a line of the file would (a repeatable key appends).
// InvalidArgument with the reason only ("expected a number >= 1"); callers say where ("FILE:LINE: key 'v': ",
// "--flag 'v': "). An unknown key is InvalidArgument "unknown key".
Status ApplyConfigValue(std::string_view key, std::string_view value, DaemonConfig* config);

// Parses `text` on top of `base`: keys present replace base's values, repeatable keys append to them. `file_name`
// only prefixes error messages. Does not call ValidateConfig (flags may still complete the configuration).
Result<DaemonConfig> ParseConfig(std::string_view text, std::string_view file_name, DaemonConfig base = {});

// Reads and parses the file at `path` (a regular file of at most 1 MiB). A missing file is NotFound naming the path.
Result<DaemonConfig> LoadConfigFile(const std::string& path, DaemonConfig base = {});

// Checks the whole configuration (after flags were applied); InvalidArgument naming the offending listener or key:
// at least one listener or a socket; tls_cert and tls_key together or neither; no listener twice; plain HTTP (kOff)
// only on loopback; a TLS listener (kOn, or kAuto on a non-loopback address) needs tls_cert and tls_key; agent
// needs etcd and group, etcd_cert and etcd_key go together.
// Does not check that files exist.
Status ValidateConfig(const DaemonConfig& config);

}  // namespace iptkit::daemon

#endif  // IPTKIT_TOOLS_IPTKITD_CONFIG_H_
