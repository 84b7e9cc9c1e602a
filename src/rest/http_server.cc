#include "src/rest/http_server.h"

#include <pthread.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <thread>

#include "src/rest/http/event_loop.h"
#include "src/rest/http/listen.h"
#include "src/rest/http/transport.h"
#include "src/rest/http/worker_pool.h"

namespace iptkit::rest {

struct HttpServer::Impl {
  http::ServerShared shared;
  std::vector<std::unique_ptr<http::ListenSocket>> listeners;
  std::vector<std::unique_ptr<http::EventLoop>> loops;
  std::vector<std::thread> threads;
  std::string unix_path;
  ino_t unix_inode = 0;
  bool stopped = false;
};

HttpServer::HttpServer() : impl_(std::make_unique<Impl>()) {}

HttpServer::~HttpServer() { Stop(); }

size_t HttpServer::tcp_connection_cap() const { return impl_->shared.tcp_cap.load(); }

Result<std::unique_ptr<HttpServer>> HttpServer::Start(Api* api, const HttpServerOptions& options) {
  IPTKIT_ASSIGN_OR_RETURN(std::unique_ptr<HttpServer> http, Bind(options));
  IPTKIT_RETURN_IF_ERROR(http->Serve(api));
  return http;
}

Result<std::unique_ptr<HttpServer>> HttpServer::Bind(const HttpServerOptions& options) {
  std::unique_ptr<HttpServer> http(new HttpServer());
  Impl& impl = *http->impl_;
  http::ServerShared& s = impl.shared;
  s.options = options;
  s.options.io_threads = std::clamp<size_t>(options.io_threads, 1, 64);
  s.limits.max_head_bytes = std::max<size_t>(options.max_header_bytes, 1024);
  s.limits.max_line_bytes = s.limits.max_head_bytes / 2;
  s.linger_bytes = std::max<size_t>(8 << 20, options.max_body_bytes + (1 << 20));

  // Descriptors: everything beyond the reserve and the unix socket's share may go to TCP connections.
  const uint64_t limit = http::RaiseDescriptorLimit();
  s.fixed_descriptors = options.reserved_descriptors + 3 * s.options.io_threads + options.tcp.size() + 16;
  s.RefreshCaps();
  if (!options.tcp.empty() && s.tcp_cap.load() == 0) {
    return Status::FailedPrecondition("the file descriptor limit (RLIMIT_NOFILE " + std::to_string(limit) +
                                      ") leaves no room for TCP connections beside the " +
                                      std::to_string(s.fixed_descriptors + s.unix_cap.load()) +
                                      " this daemon keeps for other uses");
  }

  if (options.metrics != nullptr) {
    s.connections = &options.metrics->AddGauge("iptkitd_http_connections", "Open HTTP connections, by listener kind.",
                                               {"listener"});
    s.streams = &options.metrics->AddGauge("iptkitd_event_streams", "Open event streams (GET /v1/events).", {});
    s.limit_hits = &options.metrics->AddCounter(
        "iptkitd_http_limit_hits_total",
        "Connections or requests refused or closed by a limit of the HTTP layer, by limit (configuration key).",
        {"limit"});
    s.connections->Add({"tcp"}, 0);
    if (!options.unix_socket.empty()) s.connections->Add({"unix"}, 0);
    s.streams->Add({}, 0);
  }

  for (const TcpListener& l : options.tcp) {
    if (l.tls && !s.tls) {
      if (options.tls_cert.empty() || options.tls_key.empty()) {
        const std::string name = l.address.find(':') != std::string::npos ? "[" + l.address + "]" : l.address;
        return Status::InvalidArgument("listen " + name + ":" + std::to_string(l.port) +
                                       ": TLS needs tls_cert and tls_key");
      }
      IPTKIT_ASSIGN_OR_RETURN(s.tls, http::TlsContext::Load(options.tls_cert, options.tls_key));
    }
  }
  for (const TcpListener& l : options.tcp) {
    int port = 0;
    IPTKIT_ASSIGN_OR_RETURN(base::UniqueFd fd, http::ListenTcp(l.address, l.port, &port));
    auto socket = std::make_unique<http::ListenSocket>();
    socket->fd = std::move(fd);
    socket->tls = l.tls;
    impl.listeners.push_back(std::move(socket));
    const std::string name = l.address.find(':') != std::string::npos ? "[" + l.address + "]" : l.address;
    http->endpoints_.push_back((l.tls ? "https://" : "http://") + name + ":" + std::to_string(port));
  }
  if (!options.unix_socket.empty()) {
    IPTKIT_ASSIGN_OR_RETURN(http::UnixListener u, http::ListenUnix(options.unix_socket, options.socket_mode));
    auto socket = std::make_unique<http::ListenSocket>();
    socket->fd = std::move(u.fd);
    socket->unix_socket = true;
    impl.listeners.push_back(std::move(socket));
    impl.unix_path = options.unix_socket;
    impl.unix_inode = u.inode;
    http->endpoints_.push_back("unix:" + options.unix_socket);
  }
  return http;
}

Status HttpServer::Serve(Api* api) {
  Impl& impl = *impl_;
  http::ServerShared& s = impl.shared;
  const HttpServerOptions& options = s.options;
  if (impl.stopped || !impl.loops.empty()) return Status::FailedPrecondition("HttpServer::Serve: called twice");
  s.api = api;
  s.tcp_workers = std::make_unique<http::WorkerPool>("http-worker", std::max<size_t>(1, options.workers));
  s.unix_workers = std::make_unique<http::WorkerPool>("socket-worker", std::max<size_t>(1, options.socket_workers));

  std::vector<const http::ListenSocket*> listeners;
  for (const auto& l : impl.listeners) listeners.push_back(l.get());
  for (size_t i = 0; i < s.options.io_threads; ++i) {
    auto loop = std::make_unique<http::EventLoop>(&s, listeners);
    IPTKIT_RETURN_IF_ERROR(loop->Init());
    impl.loops.push_back(std::move(loop));
  }
  for (auto& loop : impl.loops) s.loops.push_back(loop.get());
  for (auto& loop : impl.loops) {
    http::EventLoop* raw = loop.get();
    impl.threads.emplace_back([raw] { raw->Run(); });
    pthread_setname_np(impl.threads.back().native_handle(), "http-io");
  }
  return Status::Ok();
}

void HttpServer::Stop() {
  Impl& impl = *impl_;
  if (impl.stopped) return;
  impl.stopped = true;
  impl.shared.stopping.store(true);
  for (auto& loop : impl.loops) loop->Wake();
  for (std::thread& t : impl.threads) {
    if (t.joinable()) t.join();
  }
  // Handlers still running return into loops that no longer read their mailboxes (dropped with them).
  if (impl.shared.tcp_workers) impl.shared.tcp_workers->Stop();
  if (impl.shared.unix_workers) impl.shared.unix_workers->Stop();
  impl.loops.clear();
  impl.listeners.clear();
  if (!impl.unix_path.empty()) http::RemoveUnixSocket(impl.unix_path, impl.unix_inode);
}

}  // namespace iptkit::rest
