// HttpServer: the listeners of iptkitd — TCP (plain HTTP on loopback, HTTPS elsewhere) and a unix socket whose
// peers are identified by SO_PEERCRED/SO_PEERGROUPS — serving one Api with an event-driven HTTP/1.1 server of its
// own (src/rest/http/): a few I/O threads with epoll and non-blocking sockets (TLS with OpenSSL on the same loops)
// move bytes and enforce the limits; request handlers run on a bounded worker pool, the unix socket's on workers of
// its own so that root can always get in. Event streams are written by the I/O loops and hold no worker.
//
// What a request costs before it is trusted (docs/daemon.md "Connections and limits"):
// - a connection: a descriptor, counted against max_connections (TCP), max_connections_per_peer (per client
//   address) or max_socket_connections (unix); beyond them it is answered 503 and closed at once. The caps are
//   lowered to fit RLIMIT_NOFILE (raised to its hard limit at Start) minus a reserve for the unix socket, the
//   writer's iptables-restore children and SQLite, so those never see EMFILE;
// - the head: at most max_header_bytes (431) within header_timeout of its first byte (408); an idle keep-alive
//   connection is closed after idle_timeout; a TLS handshake must finish within header_timeout;
// - the body: Api::Preflight decides from the head alone (401, 403, 404, 405, 413, 415, 429 are answered without
//   reading the body; a connection with body bytes still unread is then closed); an admitted body is read within
//   its limit (Content-Length checked first, chunked counted while decoding) and within body_timeout;
// - a failed authentication past its client address's budget (ApiOptions::auth_failure_rate): its 429 carries a
//   hold (HttpResponse::hold), during which the connection is neither read nor written; then it is sent and the
//   connection closed, so that a client flooding bad tokens gets one answer per connection per hold;
// - the answer: a response or event stream that accepts no bytes for send_timeout is dropped; an event stream that
//   falls event_buffer_bytes behind is cut with the reason (service::EventBus).
// Thread-safety: Start/Stop from one thread. Stop returns promptly (idle, slow and streaming connections are just
// closed; requests in a worker get a short grace to be answered).
//
//   IPTKIT_ASSIGN_OR_RETURN(auto http, HttpServer::Start(&api, {.tcp = {{"127.0.0.1", 8080, false}}}));
//   for (const std::string& e : http->endpoints()) std::cout << e << "\n";   // "http://127.0.0.1:8080"
#ifndef IPTKIT_SRC_REST_HTTP_SERVER_H_
#define IPTKIT_SRC_REST_HTTP_SERVER_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "iptkit/status.h"
#include "src/rest/api.h"
#include "src/service/metrics.h"

namespace iptkit::rest {

struct TcpListener {
  std::string address;  // numeric IPv4 or IPv6 (no brackets)
  int port = 0;         // 0: any free port (see endpoints())
  bool tls = false;
};

struct HttpServerOptions {
  std::vector<TcpListener> tcp;
  // Path; "" = none. A socket file nobody listens on is replaced; a served one, or any other file, is an error.
  std::string unix_socket;
  uint32_t socket_mode = 0660;
  std::string tls_cert, tls_key;  // PEM files, needed when a listener has tls

  size_t max_body_bytes = 1 << 20;        // as the Api's: a lingering close discards at least this much more
  size_t max_connections = 1024;          // TCP connections open at once, all listeners together
  size_t max_connections_per_peer = 128;  // TCP connections open at once from one client address
  size_t max_socket_connections = 64;     // unix socket connections open at once
  size_t max_header_bytes = 16 * 1024;    // request line and header fields (a line: at most half of it)
  std::chrono::milliseconds header_timeout = std::chrono::seconds(10);  // the head, from its first byte; TLS handshake
  std::chrono::milliseconds body_timeout = std::chrono::seconds(30);    // the whole body, once admitted
  std::chrono::milliseconds idle_timeout = std::chrono::seconds(5);     // keep-alive between requests
  std::chrono::milliseconds send_timeout = std::chrono::seconds(10);    // an answer the client accepts no bytes of
  std::chrono::milliseconds sse_keepalive = std::chrono::seconds(15);   // comment on an idle event stream
  size_t io_threads = 2;                                                // I/O loops
  size_t workers = 128;       // request handler threads for TCP (started on demand)
  size_t socket_workers = 4;  // request handler threads reserved for the unix socket
  // Descriptors kept free for everything else (writer's children, SQLite, netlink, scratch namespaces).
  size_t reserved_descriptors = 128;
  service::Metrics* metrics = nullptr;  // optional: connection and limit counters
};

class HttpServer {
 public:
  // Binds every listener (errors name it: "listen 0.0.0.0:443: ...", and the process holding a port in use) and
  // loads the TLS certificate, without serving yet: connections wait in the listen queue until Serve. The daemon
  // binds first, so that a second daemon fails before it touches anything.
  static Result<std::unique_ptr<HttpServer>> Bind(const HttpServerOptions& options);
  // Starts the I/O loops and workers; `api` must outlive Stop.
  Status Serve(Api* api);
  // Bind, then Serve.
  static Result<std::unique_ptr<HttpServer>> Start(Api* api, const HttpServerOptions& options);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  void Stop();
  // "http://127.0.0.1:40123", "https://[::]:8443", "unix:/run/iptkitd.sock" — with the ports actually bound.
  const std::vector<std::string>& endpoints() const { return endpoints_; }
  // The TCP connection cap in effect (max_connections, lowered to fit the descriptor limit).
  size_t tcp_connection_cap() const;

  struct Impl;

 private:
  HttpServer();
  std::unique_ptr<Impl> impl_;
  std::vector<std::string> endpoints_;
};

}  // namespace iptkit::rest

#endif  // IPTKIT_SRC_REST_HTTP_SERVER_H_
