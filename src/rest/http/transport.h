// Transport: the byte stream of one accepted connection, plain or TLS (OpenSSL, non-blocking), for the I/O loops of
// iptkitd's HTTP server. Every call returns at once: kWantRead / kWantWrite say which readiness of the socket to wait
// for before calling again (TLS may need to read in order to write, and the other way round).
// Thread-safety: one thread at a time per Transport; a TlsContext is shared read-only by all.
//
//   IPTKIT_ASSIGN_OR_RETURN(auto tls, TlsContext::Load("cert.pem", "key.pem"));
//   Transport t(fd, tls.get());
//   IoResult r = t.Handshake();  // until kOk, waiting for what it wants
//   r = t.Read(buf, sizeof(buf));
#ifndef IPTKIT_SRC_REST_HTTP_TRANSPORT_H_
#define IPTKIT_SRC_REST_HTTP_TRANSPORT_H_

#include <cstddef>
#include <memory>
#include <string>

#include "iptkit/status.h"

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;

namespace iptkit::rest::http {

// A server certificate chain and key (PEM), TLS 1.2 and later, no renegotiation, no compression.
class TlsContext {
 public:
  // InvalidArgument naming both files and OpenSSL's reason when they cannot be loaded or do not match.
  static Result<std::unique_ptr<TlsContext>> Load(const std::string& cert_file, const std::string& key_file);
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;
  SSL_CTX* get() const { return ctx_; }

 private:
  explicit TlsContext(SSL_CTX* ctx) : ctx_(ctx) {}
  SSL_CTX* ctx_;
};

enum class Io {
  kOk,         // `bytes` moved (Read: 0 < bytes), or the handshake is done
  kWantRead,   // nothing now: call again once the socket is readable
  kWantWrite,  // nothing now: call again once the socket is writable
  kEof,        // the peer closed its side (orderly)
  kError,      // the connection is broken (reset, TLS error): close it
};
struct IoResult {
  Io status = Io::kOk;
  size_t bytes = 0;
};

class Transport {
 public:
  // `fd` (non-blocking, not owned) with TLS when `tls` is not null (then Handshake first).
  Transport(int fd, const TlsContext* tls);
  ~Transport();
  Transport(const Transport&) = delete;
  Transport& operator=(const Transport&) = delete;

  bool tls() const { return ssl_ != nullptr; }
  IoResult Handshake();
  IoResult Read(char* buffer, size_t size);
  IoResult Write(const char* data, size_t size);
  // Sends FIN (plain) or close_notify (TLS) once; reading stays possible.
  void ShutdownWrite();
  // Decrypted bytes waiting inside OpenSSL (the socket may not be readable although Read would return data).
  bool HasPending() const;

 private:
  IoResult TlsResult(int ret, size_t bytes);
  int fd_;
  SSL* ssl_ = nullptr;
  bool tls_failed_ = false;  // TLS wanted but SSL_new failed: every call fails
  bool shut_ = false;
};

}  // namespace iptkit::rest::http

#endif  // IPTKIT_SRC_REST_HTTP_TRANSPORT_H_
