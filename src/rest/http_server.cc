#include "src/rest/http_server.h"

#include <httplib.h>
#include <netdb.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>

#include "src/base/errno_status.h"

namespace iptkit::rest {
namespace {

// The credentials of the unix socket peer whose connection the current thread serves (set by
// OwnConnectionsServer::process_and_close_socket around the connection; the handler runs on the same thread).
thread_local std::optional<PeerCred> g_peer;

// Threads on demand up to `max`, kept afterwards; jobs beyond that wait for a free thread.
class ConnectionQueue final : public httplib::TaskQueue {
 public:
  explicit ConnectionQueue(size_t max) : max_(std::max<size_t>(1, max)) {}
  ~ConnectionQueue() override { shutdown(); }

  void enqueue(std::function<void()> fn) override {
    std::lock_guard<std::mutex> lock(mu_);
    jobs_.push_back(std::move(fn));
    if (jobs_.size() > idle_ && threads_.size() < max_) {
      threads_.emplace_back([this] { Work(); });
    } else {
      cv_.notify_one();
    }
  }
  void shutdown() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (shut_) return;
      shut_ = true;
    }
    cv_.notify_all();
    for (std::thread& t : threads_) {
      if (t.joinable()) t.join();
    }
  }

 private:
  void Work() {
    for (;;) {
      std::function<void()> job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        ++idle_;
        cv_.wait(lock, [&] { return shut_ || !jobs_.empty(); });
        --idle_;
        if (jobs_.empty()) return;  // shutting down
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      job();
    }
  }

  const size_t max_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  std::vector<std::thread> threads_;
  size_t idle_ = 0;
  bool shut_ = false;
};

// A connection's socket as httplib's Stream, with poll(2) timeouts and a read buffer (httplib reads request lines
// a byte at a time).
class FdStream final : public httplib::Stream {
 public:
  FdStream(int fd, time_t read_timeout_sec, time_t write_timeout_sec)
      : fd_(fd),
        read_ms_(static_cast<int>(read_timeout_sec * 1000)),
        write_ms_(static_cast<int>(write_timeout_sec * 1000)) {}
  bool is_readable() const override { return begin_ < end_ || Wait(POLLIN, read_ms_); }
  bool is_writable() const override { return Wait(POLLOUT, write_ms_); }
  ssize_t read(char* ptr, size_t size) override {
    if (begin_ == end_) {
      if (!Wait(POLLIN, read_ms_)) return -1;
      ssize_t n;
      do {
        n = ::recv(fd_, buffer_, sizeof(buffer_), 0);
      } while (n < 0 && errno == EINTR);
      if (n <= 0) return n;
      begin_ = 0;
      end_ = static_cast<size_t>(n);
    }
    const size_t take = std::min(size, end_ - begin_);
    std::memcpy(ptr, buffer_ + begin_, take);
    begin_ += take;
    return static_cast<ssize_t>(take);
  }
  ssize_t write(const char* ptr, size_t size) override {
    if (!is_writable()) return -1;
    for (;;) {
      ssize_t n = ::send(fd_, ptr, size, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      return n;
    }
  }
  void get_remote_ip_and_port(std::string& ip, int& port) const override { Address(true, ip, port); }
  void get_local_ip_and_port(std::string& ip, int& port) const override { Address(false, ip, port); }
  socket_t socket() const override { return fd_; }

 private:
  // The peer's (or our) numeric address and port; "unix" and 0 on a unix socket.
  void Address(bool peer, std::string& ip, int& port) const {
    sockaddr_storage addr{};
    socklen_t len = sizeof(addr);
    auto* sa = reinterpret_cast<sockaddr*>(&addr);
    ip = "unix";
    port = 0;
    if ((peer ? ::getpeername(fd_, sa, &len) : ::getsockname(fd_, sa, &len)) != 0) return;
    char host[NI_MAXHOST] = "";
    char serv[NI_MAXSERV] = "";
    if (addr.ss_family != AF_INET && addr.ss_family != AF_INET6) return;
    if (getnameinfo(sa, len, host, sizeof(host), serv, sizeof(serv), NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
      ip = host;
      port = std::atoi(serv);
    }
  }
  bool Wait(short events, int timeout_ms) const {
    pollfd p{fd_, events, 0};
    for (;;) {
      int n = ::poll(&p, 1, timeout_ms);
      if (n < 0 && errno == EINTR) continue;
      return n > 0 && (p.revents & (events | POLLHUP)) != 0;
    }
  }
  int fd_;
  int read_ms_;
  int write_ms_;
  char buffer_[4096];
  size_t begin_ = 0, end_ = 0;
};

// httplib::Server whose connections this file serves itself: plain TCP, and the unix socket, whose peers it
// identifies (SO_PEERCRED, SO_PEERGROUPS). httplib 0.11 hands each accepted socket to the private virtual
// process_and_close_socket; overriding it is the one place that sees the descriptor. The keep-alive loop is what
// httplib's own does (httplib.h process_server_socket_core) over FdStream, except that waiting for the next
// request checks for Stop every 100 ms (httplib's waits out the keep-alive timeout, which held a SIGTERM up for
// 5 s per idle client). TLS listeners use httplib::SSLServer as it is.
class OwnConnectionsServer final : public httplib::Server {
 public:
  explicit OwnConnectionsServer(bool unix_peers) : unix_peers_(unix_peers) {}
  // See Relistening below.
  void RaiseBacklog() {
    const socket_t sock = svr_sock_;
    if (sock != INVALID_SOCKET) ::listen(sock, SOMAXCONN);
  }

 private:
  bool process_and_close_socket(socket_t sock) override {
    bool ret = false;
    std::optional<PeerCred> peer;
    if (unix_peers_) {
      peer = PeerOf(sock);
      if (!peer) {
        ::close(sock);
        return false;
      }
    }
    g_peer = peer;
    size_t count = keep_alive_max_count_;
    while (svr_sock_ != INVALID_SOCKET && count > 0 && WaitForRequest(sock)) {
      // One stream per request, as httplib does: what it buffered beyond the request is dropped with it. That
      // loses pipelined requests (so does httplib), but also whatever a failed request left unread (a body after
      // a refused content type, the rest of a malformed request line) instead of parsing it as the next request.
      FdStream strm(sock, read_timeout_sec_, write_timeout_sec_);
      bool closed = false;
      ret = process_request(strm, count == 1, closed, nullptr);
      if (!ret || closed) break;
      --count;
    }
    g_peer.reset();
    ::shutdown(sock, SHUT_RDWR);
    ::close(sock);
    return ret;
  }
  static std::optional<PeerCred> PeerOf(int sock) {
    ucred uc{};
    socklen_t len = sizeof(uc);
    if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &uc, &len) != 0) return std::nullopt;
    PeerCred cred;
    cred.uid = uc.uid;
    cred.gid = uc.gid;
    cred.pid = uc.pid;
    gid_t groups[256];
    socklen_t glen = sizeof(groups);
    if (getsockopt(sock, SOL_SOCKET, SO_PEERGROUPS, groups, &glen) == 0) {
      for (size_t i = 0; i < glen / sizeof(gid_t); ++i) cred.groups.push_back(groups[i]);
    }
    return cred;
  }
  // Whether the next request starts within the keep-alive timeout (checking for Stop every 100 ms).
  bool WaitForRequest(int sock) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(keep_alive_timeout_sec_);
    while (svr_sock_ != INVALID_SOCKET && std::chrono::steady_clock::now() < until) {
      pollfd p{sock, POLLIN, 0};
      int n = ::poll(&p, 1, 100);
      if (n > 0) return (p.revents & POLLIN) != 0;
      if (n < 0 && errno != EINTR) return false;
    }
    return false;
  }

  const bool unix_peers_;
};

// httplib 0.11 listens with a backlog of 5 (CPPHTTPLIB_LISTEN_BACKLOG, compiled into Debian's shared library):
// 64 clients connecting at once overflowed it (ListenOverflows, SYN retries after 1 s). listen(2) again on the
// bound socket raises it; svr_sock_ is protected, hence these subclasses.
template <typename Base>
class Relistening : public Base {
 public:
  using Base::Base;
  void RaiseBacklog() {
    const socket_t sock = this->svr_sock_;
    if (sock != INVALID_SOCKET) ::listen(sock, SOMAXCONN);
  }
};
using TlsServer = Relistening<httplib::SSLServer>;

HttpRequest FromHttplib(const httplib::Request& in) {
  HttpRequest out;
  out.method = in.method;
  out.path = in.path;
  for (const auto& [k, v] : in.params) out.query.emplace(k, v);
  for (const auto& [k, v] : in.headers) {
    std::string name = k;
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
    if (name == "remote_addr" || name == "remote_port") continue;  // httplib's own, not the client's
    out.headers.emplace(std::move(name), v);
  }
  out.body = in.body;
  out.peer = g_peer;
  out.remote =
      g_peer ? "unix:uid=" + std::to_string(g_peer->uid) : in.remote_addr + ":" + std::to_string(in.remote_port);
  return out;
}

void ToHttplib(HttpResponse&& in, httplib::Response& out) {
  out.status = in.status;
  for (auto& [k, v] : in.headers) out.set_header(k, v);
  if (in.stream) {
    auto stream = std::move(in.stream);
    out.set_chunked_content_provider(in.content_type, [stream](size_t, httplib::DataSink& sink) {
      bool more = stream([&](std::string_view chunk) { return sink.write(chunk.data(), chunk.size()); });
      if (!more) sink.done();
      return true;
    });
    return;
  }
  out.set_content(std::move(in.body), in.content_type);
}

void Configure(httplib::Server& server, Api* api, const HttpServerOptions& options) {
  const size_t max_connections = options.max_connections;
  server.new_task_queue = [max_connections] { return new ConnectionQueue(max_connections); };
  server.set_payload_max_length(options.max_body_bytes);
  // httplib writes a response's headers and body with two send(2) calls; with Nagle's algorithm the body then waits
  // for the ACK of the headers, which a keep-alive client delays (delayed ACK): +40 ms per request. The flag is set
  // on the listening socket and inherited by accepted ones (tcp(7)); a unix socket ignores it.
  server.set_tcp_nodelay(true);
  server.set_keep_alive_max_count(10000);
  server.set_keep_alive_timeout(5);
  server.set_read_timeout(10, 0);
  server.set_write_timeout(10, 0);
  auto handler = [api](const httplib::Request& req, httplib::Response& res) {
    ToHttplib(api->Handle(FromHttplib(req)), res);
  };
  // A POST/PUT/PATCH/DELETE without Content-Length and not chunked has no body; httplib would try to read one
  // until the connection closes (read_content_without_length) and answer 400 after the read timeout. Such
  // requests (curl -X DELETE, most clients' bodyless DELETE) are answered before httplib reads.
  server.set_pre_routing_handler([api](const httplib::Request& req, httplib::Response& res) {
    const bool may_have_body =
        req.method == "POST" || req.method == "PUT" || req.method == "PATCH" || req.method == "DELETE";
    if (!may_have_body || req.has_header("Content-Length")) return httplib::Server::HandlerResponse::Unhandled;
    if (req.get_header_value("Transfer-Encoding").find("chunked") != std::string::npos) {
      return httplib::Server::HandlerResponse::Unhandled;
    }
    ToHttplib(api->Handle(FromHttplib(req)), res);
    return httplib::Server::HandlerResponse::Handled;
  });
  const std::string any = ".*";
  server.Get(any, handler);
  server.Post(any, handler);
  server.Put(any, handler);
  server.Delete(any, handler);
  server.Patch(any, handler);
  server.Options(any, handler);
  // Errors httplib answers itself (413 beyond max_body_bytes, 400 for a malformed request line): a JSON body
  // and the headers every answer of the Api carries.
  httplib::Server::HandlerWithResponse on_error = [](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    std::string code = res.status == 413 ? "payload_too_large" : res.status == 404 ? "not_found" : "bad_request";
    std::string message = res.status == 413 ? "the request body is larger than this daemon accepts"
                                            : "malformed HTTP request (status " + std::to_string(res.status) + ")";
    const std::string request_id = Api::RequestId(req.get_header_value("X-Request-Id"));
    res.set_header("X-Request-Id", request_id);
    res.set_header("Cache-Control", "no-store");
    res.set_content(ErrorBody(MakeError(res.status, code, message), request_id), "application/json");
    return httplib::Server::HandlerResponse::Handled;
  };
  server.set_error_handler(on_error);
  server.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "unknown exception";
    try {
      if (ep) std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    spdlog::error("exception in a request handler: {}", what);
    res.status = 500;
    res.set_content(ErrorBody(MakeError(500, "internal", "internal error: " + what)), "application/json");
  });
}

}  // namespace

struct HttpServer::Listener {
  std::unique_ptr<httplib::Server> server;
  std::thread thread;
};

Result<std::unique_ptr<HttpServer>> HttpServer::Start(Api* api, const HttpServerOptions& options) {
  std::unique_ptr<HttpServer> http(new HttpServer());
  for (const TcpListener& l : options.tcp) {
    const std::string name = l.address.find(':') != std::string::npos ? "[" + l.address + "]" : l.address;
    const std::string what = "listen " + name + ":" + std::to_string(l.port);
    std::unique_ptr<httplib::Server> server;
    if (l.tls) {
      if (options.tls_cert.empty() || options.tls_key.empty()) {
        return Status::InvalidArgument(what + ": TLS needs tls_cert and tls_key");
      }
      auto ssl = std::make_unique<TlsServer>(options.tls_cert.c_str(), options.tls_key.c_str());
      if (!ssl->is_valid()) {
        return Status::InvalidArgument(what + ": cannot load the TLS certificate '" + options.tls_cert + "' and key '" +
                                       options.tls_key + "'");
      }
      server = std::move(ssl);
    } else {
      server = std::make_unique<OwnConnectionsServer>(/*unix_peers=*/false);
    }
    Configure(*server, api, options);
    int port = l.port;
    const int flags = AI_NUMERICHOST | AI_PASSIVE;
    if (l.port == 0) {
      port = server->bind_to_any_port(l.address, flags);
      if (port < 0) return base::ErrnoToStatus(errno, what);
    } else if (!server->bind_to_port(l.address, l.port, flags)) {
      return base::ErrnoToStatus(errno == 0 ? EADDRINUSE : errno, what);
    }
    if (l.tls) {
      static_cast<TlsServer*>(server.get())->RaiseBacklog();
    } else {
      static_cast<OwnConnectionsServer*>(server.get())->RaiseBacklog();
    }
    auto listener = std::make_unique<Listener>();
    listener->server = std::move(server);
    httplib::Server* raw = listener->server.get();
    listener->thread = std::thread([raw] { raw->listen_after_bind(); });
    http->listeners_.push_back(std::move(listener));
    http->endpoints_.push_back((l.tls ? "https://" : "http://") + name + ":" + std::to_string(port));
  }
  if (!options.unix_socket.empty()) {
    const std::string& path = options.unix_socket;
    const std::string what = "listen unix:" + path;
    struct stat st {};
    if (lstat(path.c_str(), &st) == 0) {
      if (!S_ISSOCK(st.st_mode)) return Status::FailedPrecondition(what + ": exists and is not a socket");
      if (unlink(path.c_str()) != 0) return base::ErrnoToStatus(errno, what + ": removing the stale socket");
    }
    auto server = std::make_unique<OwnConnectionsServer>(/*unix_peers=*/true);
    Configure(*server, api, options);
    server->set_address_family(AF_UNIX);
    // Created with no permissions for anyone but the owner until chmod below sets the configured mode.
    const mode_t old_mask = umask(0177);
    const bool bound = server->bind_to_port(path, 80);
    const int bind_errno = errno;
    umask(old_mask);
    if (!bound) return base::ErrnoToStatus(bind_errno == 0 ? EADDRINUSE : bind_errno, what);
    server->RaiseBacklog();
    if (chmod(path.c_str(), options.socket_mode) != 0) return base::ErrnoToStatus(errno, what + ": chmod");
    auto listener = std::make_unique<Listener>();
    listener->server = std::move(server);
    httplib::Server* raw = listener->server.get();
    listener->thread = std::thread([raw] { raw->listen_after_bind(); });
    http->listeners_.push_back(std::move(listener));
    http->endpoints_.push_back("unix:" + path);
    http->unix_socket_ = path;
  }
  return http;
}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::Stop() {
  if (stopped_) return;
  stopped_ = true;
  for (auto& l : listeners_) l->server->stop();
  for (auto& l : listeners_) {
    if (l->thread.joinable()) l->thread.join();
  }
  if (!unix_socket_.empty()) unlink(unix_socket_.c_str());
}

}  // namespace iptkit::rest
