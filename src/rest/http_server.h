// HttpServer: the listeners of iptkitd — TCP (plain HTTP on loopback, HTTPS elsewhere; cpp-httplib with OpenSSL)
// and a unix socket whose peers are identified by SO_PEERCRED — all serving one Api. Only bytes move here: every
// request becomes an HttpRequest for Api::Handle.
//
// Concurrency: each listener serves up to `max_connections` connections at once, one thread each (threads are
// made on demand and kept); a handler waiting for the writer blocks only its own connection. More connections
// wait in the accept queue. Keep-alive is on; an idle connection is closed after 5 s.
// Thread-safety: Start/Stop from one thread. Stop returns once every connection ended: close the EventBus first
// so that event streams end.
//
//   IPTKIT_ASSIGN_OR_RETURN(auto http, HttpServer::Start(&api, {.tcp = {{"127.0.0.1", 8080, false}}}));
//   for (const std::string& e : http->endpoints()) std::cout << e << "\n";   // "http://127.0.0.1:8080"
#ifndef IPTKIT_SRC_REST_HTTP_SERVER_H_
#define IPTKIT_SRC_REST_HTTP_SERVER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "iptkit/status.h"
#include "src/rest/api.h"

namespace iptkit::rest {

struct TcpListener {
  std::string address;  // numeric IPv4 or IPv6 (no brackets)
  int port = 0;         // 0: any free port (see endpoints())
  bool tls = false;
};

struct HttpServerOptions {
  std::vector<TcpListener> tcp;
  std::string unix_socket;  // path; "" = none. A stale socket file there is replaced; any other file is an error.
  uint32_t socket_mode = 0660;
  std::string tls_cert, tls_key;  // PEM files, needed when a listener has tls
  size_t max_connections = 256;   // per listener
  size_t max_body_bytes = 1 << 20;
};

class HttpServer {
 public:
  // Binds every listener (errors name it: "listen 0.0.0.0:443: ...") and starts serving.
  static Result<std::unique_ptr<HttpServer>> Start(Api* api, const HttpServerOptions& options);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  void Stop();
  // "http://127.0.0.1:40123", "https://[::]:8443", "unix:/run/iptkitd.sock" — with the ports actually bound.
  const std::vector<std::string>& endpoints() const { return endpoints_; }

  struct Listener;

 private:
  HttpServer() = default;
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::vector<std::string> endpoints_;
  std::string unix_socket_;
  bool stopped_ = false;
};

}  // namespace iptkit::rest

#endif  // IPTKIT_SRC_REST_HTTP_SERVER_H_
