#include "src/rest/http/transport.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

#include <cerrno>

namespace iptkit::rest::http {
namespace {

// OpenSSL's error queue as text ("error:0A000086:SSL routines::certificate verify failed; ..."), emptied.
std::string OpenSslErrors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    out += (out.empty() ? "" : "; ") + std::string(buf);
  }
  return out.empty() ? "unknown OpenSSL error" : out;
}

}  // namespace

Result<std::unique_ptr<TlsContext>> TlsContext::Load(const std::string& cert_file, const std::string& key_file) {
  ERR_clear_error();
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (ctx == nullptr) return Status::Internal("TLS: SSL_CTX_new: " + OpenSslErrors());
  std::unique_ptr<TlsContext> out(new TlsContext(ctx));
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  // Client-initiated renegotiation costs the server a handshake each time, for nothing; compression leaks
  // secrets (CRIME); an unexpected EOF after a complete response is a client that hung up, not an error.
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_IGNORE_UNEXPECTED_EOF |
                               SSL_OP_CIPHER_SERVER_PREFERENCE);
  // Partial writes with a buffer that may move between retries (our output buffer grows); idle connections
  // give their read and write buffers back (about 34 KiB each).
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
  static const unsigned char kSessionContext[] = "iptkitd";
  SSL_CTX_set_session_id_context(ctx, kSessionContext, sizeof(kSessionContext) - 1);
  const std::string what = "cannot load the TLS certificate '" + cert_file + "' and key '" + key_file + "'";
  if (SSL_CTX_use_certificate_chain_file(ctx, cert_file.c_str()) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx, key_file.c_str(), SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(ctx) != 1) {
    return Status::InvalidArgument(what + ": " + OpenSslErrors());
  }
  return out;
}

TlsContext::~TlsContext() { SSL_CTX_free(ctx_); }

Transport::Transport(int fd, const TlsContext* tls) : fd_(fd) {
  if (tls != nullptr) {
    ssl_ = SSL_new(tls->get());
    tls_failed_ = ssl_ == nullptr;
    if (ssl_ != nullptr) {
      SSL_set_fd(ssl_, fd);
      SSL_set_accept_state(ssl_);
    }
  }
}

Transport::~Transport() {
  if (ssl_ != nullptr) SSL_free(ssl_);
}

IoResult Transport::TlsResult(int ret, size_t bytes) {
  if (ret == 1) return {Io::kOk, bytes};
  switch (SSL_get_error(ssl_, ret)) {
    case SSL_ERROR_WANT_READ:
      return {Io::kWantRead, 0};
    case SSL_ERROR_WANT_WRITE:
      return {Io::kWantWrite, 0};
    case SSL_ERROR_ZERO_RETURN:
      return {Io::kEof, 0};
    case SSL_ERROR_SYSCALL:
      ERR_clear_error();
      return {errno == 0 ? Io::kEof : Io::kError, 0};
    default:
      ERR_clear_error();
      return {Io::kError, 0};
  }
}

IoResult Transport::Handshake() {
  if (tls_failed_) return {Io::kError, 0};
  if (!tls()) return {Io::kOk, 0};
  ERR_clear_error();
  errno = 0;
  return TlsResult(SSL_do_handshake(ssl_), 0);
}

IoResult Transport::Read(char* buffer, size_t size) {
  if (tls_failed_) return {Io::kError, 0};
  if (ssl_ != nullptr) {
    ERR_clear_error();
    errno = 0;
    size_t got = 0;
    const int ret = SSL_read_ex(ssl_, buffer, size, &got);
    return TlsResult(ret, got);
  }
  for (;;) {
    const ssize_t n = ::recv(fd_, buffer, size, 0);
    if (n > 0) return {Io::kOk, static_cast<size_t>(n)};
    if (n == 0) return {Io::kEof, 0};
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return {Io::kWantRead, 0};
    return {Io::kError, 0};
  }
}

IoResult Transport::Write(const char* data, size_t size) {
  if (tls_failed_) return {Io::kError, 0};
  if (ssl_ != nullptr) {
    ERR_clear_error();
    errno = 0;
    size_t put = 0;
    const int ret = SSL_write_ex(ssl_, data, size, &put);
    return TlsResult(ret, put);
  }
  for (;;) {
    const ssize_t n = ::send(fd_, data, size, MSG_NOSIGNAL);
    if (n >= 0) return {Io::kOk, static_cast<size_t>(n)};
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return {Io::kWantWrite, 0};
    return {Io::kError, 0};
  }
}

void Transport::ShutdownWrite() {
  if (shut_) return;
  shut_ = true;
  if (ssl_ != nullptr) {
    ERR_clear_error();
    // One try: a close_notify that does not fit the socket buffer now is not waited for.
    if (SSL_is_init_finished(ssl_)) SSL_shutdown(ssl_);
    ERR_clear_error();
  }
  ::shutdown(fd_, SHUT_WR);
}

bool Transport::HasPending() const { return ssl_ != nullptr && SSL_pending(ssl_) > 0; }

}  // namespace iptkit::rest::http
