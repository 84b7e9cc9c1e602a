#include "src/fleet/http_client.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>

#include "src/base/errno_status.h"

namespace iptkit::fleet {
namespace {

constexpr size_t kMaxHead = 64 << 10;
constexpr size_t kReadSize = 64 << 10;

std::string OpensslError() {
  unsigned long e = ERR_get_error();
  if (e == 0) return "unknown TLS error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof(buf));
  ERR_clear_error();
  return buf;
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

}  // namespace

std::string Endpoint::ToString() const {
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return std::string(tls ? "https://" : "http://") + h + ":" + std::to_string(port);
}

Result<Endpoint> ParseEndpoint(std::string_view url) {
  Endpoint ep;
  std::string_view rest = url;
  auto bad = [&](std::string_view why) {
    return Status::InvalidArgument("etcd endpoint \"" + std::string(url) + "\": " + std::string(why));
  };
  if (rest.starts_with("http://")) {
    rest.remove_prefix(7);
  } else if (rest.starts_with("https://")) {
    ep.tls = true;
    rest.remove_prefix(8);
  } else {
    return bad("must start with http:// or https://");
  }
  if (rest.ends_with("/")) rest.remove_suffix(1);
  if (rest.find('/') != std::string_view::npos) return bad("must not have a path");
  std::string_view port_text;
  if (rest.starts_with("[")) {
    size_t close = rest.find(']');
    if (close == std::string_view::npos) return bad("unclosed [");
    ep.host = std::string(rest.substr(1, close - 1));
    rest.remove_prefix(close + 1);
    if (!rest.starts_with(":")) return bad("needs :PORT");
    port_text = rest.substr(1);
  } else {
    size_t colon = rest.rfind(':');
    if (colon == std::string_view::npos) return bad("needs :PORT");
    ep.host = std::string(rest.substr(0, colon));
    port_text = rest.substr(colon + 1);
  }
  if (ep.host.empty()) return bad("has no host");
  auto [p, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), ep.port);
  if (ec != std::errc() || p != port_text.data() + port_text.size() || ep.port < 1 || ep.port > 65535) {
    return bad("port must be 1..65535");
  }
  return ep;
}

Interrupter::Interrupter() : fd_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}

void Interrupter::Fire() {
  uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(fd_.get(), &one, sizeof(one));
}

void Interrupter::Reset() {
  uint64_t v;
  [[maybe_unused]] ssize_t n = read(fd_.get(), &v, sizeof(v));
}

bool Interrupter::fired() const {
  pollfd p{fd_.get(), POLLIN, 0};
  return poll(&p, 1, 0) > 0;
}

// ---- HttpStream ----

HttpStream::~HttpStream() {
  if (ssl_ != nullptr) SSL_free(ssl_);
}

Status HttpStream::Wait(short events, Clock::time_point deadline) {
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return Status::Unavailable(where_ + ": timed out");
    pollfd fds[2] = {{fd_.get(), events, 0}, {interrupter_ ? interrupter_->fd() : -1, POLLIN, 0}};
    int n = poll(fds, 2, static_cast<int>(std::min<int64_t>(left, 1 << 30)));
    if (n < 0) {
      if (errno == EINTR) continue;
      return base::ErrnoToStatus(errno, "poll " + where_);
    }
    if (fds[1].revents != 0) return Status::Unavailable(where_ + ": interrupted");
    if (fds[0].revents != 0) return Status::Ok();
  }
}

Status HttpStream::WriteAll(std::string_view data, Clock::time_point deadline) {
  while (!data.empty()) {
    if (ssl_ != nullptr) {
      ERR_clear_error();
      int n = SSL_write(ssl_, data.data(), static_cast<int>(std::min<size_t>(data.size(), 1 << 20)));
      if (n > 0) {
        data.remove_prefix(static_cast<size_t>(n));
        continue;
      }
      int err = SSL_get_error(ssl_, n);
      if (err == SSL_ERROR_WANT_READ) {
        IPTKIT_RETURN_IF_ERROR(Wait(POLLIN, deadline));
      } else if (err == SSL_ERROR_WANT_WRITE) {
        IPTKIT_RETURN_IF_ERROR(Wait(POLLOUT, deadline));
      } else {
        return Status::Unavailable(where_ + ": TLS write: " + OpensslError());
      }
      continue;
    }
    ssize_t n = send(fd_.get(), data.data(), data.size(), MSG_NOSIGNAL);
    if (n > 0) {
      data.remove_prefix(static_cast<size_t>(n));
    } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      IPTKIT_RETURN_IF_ERROR(Wait(POLLOUT, deadline));
    } else {
      return Status::Unavailable(where_ + ": send: " + std::strerror(errno));
    }
  }
  return Status::Ok();
}

Result<size_t> HttpStream::ReadRaw(char* buf, size_t size, Clock::time_point deadline) {
  for (;;) {
    if (interrupter_ != nullptr && interrupter_->fired()) return Status::Unavailable(where_ + ": interrupted");
    if (ssl_ != nullptr) {
      ERR_clear_error();
      int n = SSL_read(ssl_, buf, static_cast<int>(size));
      if (n > 0) return static_cast<size_t>(n);
      int err = SSL_get_error(ssl_, n);
      if (err == SSL_ERROR_ZERO_RETURN) return size_t{0};
      if (err == SSL_ERROR_WANT_READ) {
        IPTKIT_RETURN_IF_ERROR(Wait(POLLIN, deadline));
      } else if (err == SSL_ERROR_WANT_WRITE) {
        IPTKIT_RETURN_IF_ERROR(Wait(POLLOUT, deadline));
      } else if (err == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
        return size_t{0};  // EOF without close_notify: the server closed the connection
      } else {
        return Status::Unavailable(where_ + ": TLS read: " + OpensslError());
      }
      continue;
    }
    ssize_t n = recv(fd_.get(), buf, size, 0);
    if (n >= 0) return static_cast<size_t>(n);
    if (errno == EAGAIN || errno == EINTR) {
      IPTKIT_RETURN_IF_ERROR(Wait(POLLIN, deadline));
      continue;
    }
    return Status::Unavailable(where_ + ": recv: " + std::strerror(errno));
  }
}

Status HttpStream::Fill(Clock::time_point deadline) {
  if (eof_) return Status::Unavailable(where_ + ": connection closed in the middle of the response");
  char buf[kReadSize];
  IPTKIT_ASSIGN_OR_RETURN(size_t n, ReadRaw(buf, sizeof(buf), deadline));
  if (n == 0) {
    eof_ = true;
    if (until_close_) return Status::Ok();
    return Status::Unavailable(where_ + ": connection closed in the middle of the response");
  }
  pending_.append(buf, n);
  return Status::Ok();
}

Result<bool> HttpStream::Next(std::string* out, Clock::time_point deadline) {
  for (;;) {
    if (done_) return false;
    if (until_close_) {
      if (pending_.empty()) IPTKIT_RETURN_IF_ERROR(Fill(deadline));
      if (pending_.empty() && eof_) {
        done_ = true;
        return false;
      }
      out->append(pending_);
      pending_.clear();
      return true;
    }
    if (remaining_ > 0) {
      if (pending_.empty()) IPTKIT_RETURN_IF_ERROR(Fill(deadline));
      size_t take = std::min(remaining_, pending_.size());
      out->append(pending_, 0, take);
      pending_.erase(0, take);
      remaining_ -= take;
      if (remaining_ == 0 && !chunked_) done_ = true;
      return true;
    }
    if (!chunked_) {
      done_ = true;
      return false;
    }
    // The CRLF after a chunk's data (absent before the first chunk), then the next chunk-size line.
    size_t eol;
    while ((eol = pending_.find("\r\n")) == std::string::npos) {
      if (pending_.size() > 1024) return Status::Unavailable(where_ + ": bad chunked encoding");
      IPTKIT_RETURN_IF_ERROR(Fill(deadline));
    }
    if (eol == 0) {
      pending_.erase(0, 2);
      continue;
    }
    std::string_view line(pending_.data(), eol);
    line = line.substr(0, line.find(';'));
    size_t size = 0;
    auto [p, ec] = std::from_chars(line.data(), line.data() + line.size(), size, 16);
    if (ec != std::errc() || p != line.data() + line.size() || size > (size_t{1} << 31)) {
      return Status::Unavailable(where_ + ": bad chunk size");
    }
    pending_.erase(0, eol + 2);
    if (size == 0) {
      done_ = true;  // trailers are not read: the connection is closed anyway
      return false;
    }
    remaining_ = size;
  }
}

Result<std::string> HttpStream::ReadAll(size_t max_bytes, Clock::time_point deadline) {
  std::string body;
  for (;;) {
    IPTKIT_ASSIGN_OR_RETURN(bool more, Next(&body, deadline));
    if (!more) return body;
    if (body.size() > max_bytes) {
      return Status::Unavailable(where_ + ": response larger than " + std::to_string(max_bytes) + " bytes");
    }
  }
}

// ---- HttpClient ----

Result<std::unique_ptr<HttpClient>> HttpClient::Create(const TlsFiles& tls) {
  std::unique_ptr<HttpClient> client(new HttpClient());
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (ctx == nullptr) return Status::Internal("SSL_CTX_new: " + OpensslError());
  client->ctx_ = ctx;
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  if (!tls.ca_file.empty()) {
    if (SSL_CTX_load_verify_locations(ctx, tls.ca_file.c_str(), nullptr) != 1) {
      return Status::InvalidArgument("cannot load CA file " + tls.ca_file + ": " + OpensslError());
    }
  } else {
    SSL_CTX_set_default_verify_paths(ctx);
  }
  if (tls.cert_file.empty() != tls.key_file.empty()) {
    return Status::InvalidArgument("a client certificate needs both a certificate and a key file");
  }
  if (!tls.cert_file.empty()) {
    if (SSL_CTX_use_certificate_chain_file(ctx, tls.cert_file.c_str()) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, tls.key_file.c_str(), SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
      return Status::InvalidArgument("cannot load client certificate " + tls.cert_file + " / key " + tls.key_file +
                                     ": " + OpensslError());
    }
  }
  return client;
}

HttpClient::~HttpClient() {
  if (ctx_ != nullptr) SSL_CTX_free(ctx_);
}

Result<std::unique_ptr<HttpStream>> HttpClient::OpenStream(const Endpoint& endpoint, std::string_view path,
                                                           std::string_view body, const Headers& headers,
                                                           Clock::time_point deadline,
                                                           const Interrupter* interrupter) const {
  std::unique_ptr<HttpStream> s(new HttpStream());
  s->interrupter_ = interrupter;
  s->where_ = endpoint.ToString() + std::string(path);
  if (interrupter != nullptr && interrupter->fired()) return Status::Unavailable(s->where_ + ": interrupted");

  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* res = nullptr;
  std::string port = std::to_string(endpoint.port);
  int gai = getaddrinfo(endpoint.host.c_str(), port.c_str(), &hints, &res);
  if (gai != 0) return Status::Unavailable(s->where_ + ": cannot resolve host: " + gai_strerror(gai));
  Status last = Status::Unavailable(s->where_ + ": no address");
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    base::UniqueFd fd(socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol));
    if (!fd.valid()) {
      last = base::ErrnoToStatus(errno, "socket");
      continue;
    }
    if (connect(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
      last = Status::Unavailable(s->where_ + ": connect: " + std::strerror(errno));
      continue;
    }
    s->fd_ = std::move(fd);
    Status w = s->Wait(POLLOUT, deadline);
    int err = 0;
    socklen_t len = sizeof(err);
    if (w.ok()) getsockopt(s->fd_.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (w.ok() && err == 0) {
      last = Status::Ok();
      break;
    }
    last = w.ok() ? Status::Unavailable(s->where_ + ": connect: " + std::strerror(err)) : w;
    s->fd_.reset();
    if (!w.ok() && interrupter != nullptr && interrupter->fired()) break;
  }
  freeaddrinfo(res);
  IPTKIT_RETURN_IF_ERROR(last);
  int one = 1;
  setsockopt(s->fd_.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

  if (endpoint.tls) {
    s->ssl_ = SSL_new(ctx_);
    if (s->ssl_ == nullptr) return Status::Internal("SSL_new: " + OpensslError());
    SSL_set_fd(s->ssl_, s->fd_.get());
    SSL_set_tlsext_host_name(s->ssl_, endpoint.host.c_str());
    X509_VERIFY_PARAM* param = SSL_get0_param(s->ssl_);
    in6_addr a6;
    in_addr a4;
    if (inet_pton(AF_INET, endpoint.host.c_str(), &a4) == 1 || inet_pton(AF_INET6, endpoint.host.c_str(), &a6) == 1) {
      X509_VERIFY_PARAM_set1_ip_asc(param, endpoint.host.c_str());
    } else {
      X509_VERIFY_PARAM_set1_host(param, endpoint.host.c_str(), 0);
    }
    for (;;) {
      ERR_clear_error();
      int r = SSL_connect(s->ssl_);
      if (r == 1) break;
      int err = SSL_get_error(s->ssl_, r);
      if (err == SSL_ERROR_WANT_READ) {
        IPTKIT_RETURN_IF_ERROR(s->Wait(POLLIN, deadline));
      } else if (err == SSL_ERROR_WANT_WRITE) {
        IPTKIT_RETURN_IF_ERROR(s->Wait(POLLOUT, deadline));
      } else {
        long verify = SSL_get_verify_result(s->ssl_);
        std::string why = verify != X509_V_OK ? X509_verify_cert_error_string(verify) : OpensslError();
        return Status::Unavailable(s->where_ + ": TLS handshake: " + why);
      }
    }
  }

  std::string request =
      "POST " + std::string(path) + " HTTP/1.1\r\nHost: " + endpoint.host + ":" + port +
      "\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
      "\r\n";
  for (const auto& [name, value] : headers) request += name + ": " + value + "\r\n";
  request += "\r\n";
  request.append(body);
  IPTKIT_RETURN_IF_ERROR(s->WriteAll(request, deadline));

  // The head.
  size_t end;
  while ((end = s->pending_.find("\r\n\r\n")) == std::string::npos) {
    if (s->pending_.size() > kMaxHead) return Status::Unavailable(s->where_ + ": response head too large");
    IPTKIT_RETURN_IF_ERROR(s->Fill(deadline));
  }
  std::string head = s->pending_.substr(0, end);
  s->pending_.erase(0, end + 4);
  std::string_view h(head);
  size_t eol = h.find("\r\n");
  std::string_view status_line = h.substr(0, eol);
  if (!status_line.starts_with("HTTP/1.") || status_line.size() < 12) {
    return Status::Unavailable(s->where_ + ": not an HTTP response");
  }
  auto [p, ec] = std::from_chars(status_line.data() + 9, status_line.data() + 12, s->status_);
  if (ec != std::errc()) return Status::Unavailable(s->where_ + ": bad HTTP status line");
  bool have_length = false;
  while (eol != std::string_view::npos) {
    h.remove_prefix(eol + 2);
    eol = h.find("\r\n");
    std::string_view line = h.substr(0, eol);
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    std::string name = Lower(Trim(line.substr(0, colon)));
    std::string_view value = Trim(line.substr(colon + 1));
    if (name == "transfer-encoding" && Lower(value).find("chunked") != std::string::npos) {
      s->chunked_ = true;
    } else if (name == "content-length") {
      auto [q, ec2] = std::from_chars(value.data(), value.data() + value.size(), s->remaining_);
      if (ec2 != std::errc()) return Status::Unavailable(s->where_ + ": bad Content-Length");
      have_length = true;
    }
  }
  if (s->chunked_) {
    s->remaining_ = 0;
  } else if (!have_length) {
    s->until_close_ = true;
  } else if (s->remaining_ == 0) {
    s->done_ = true;
  }
  return s;
}

Result<HttpResponse> HttpClient::Post(const Endpoint& endpoint, std::string_view path, std::string_view body,
                                      const Headers& headers, Clock::time_point deadline,
                                      const Interrupter* interrupter, size_t max_body) const {
  IPTKIT_ASSIGN_OR_RETURN(auto stream, OpenStream(endpoint, path, body, headers, deadline, interrupter));
  HttpResponse r;
  r.status = stream->status();
  IPTKIT_ASSIGN_OR_RETURN(r.body, stream->ReadAll(max_body, deadline));
  return r;
}

}  // namespace iptkit::fleet
