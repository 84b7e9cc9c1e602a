// HttpClient: a small blocking HTTP/1.1 client for the etcd JSON gateway: one request per TCP (or TLS) connection,
// `Connection: close`, a JSON body out, a bounded response in: either whole (Post) or as a stream of body bytes
// (OpenStream + Next, for etcd's NDJSON watch stream). Every wait is bounded by a deadline or ended by the
// Interrupter, so a thread blocked in a watch can be stopped from another one.
//
// Memory: a response head is at most 64 KiB, a whole body at most `max_body`, a stream hands out what one read(2)
// returned (at most 64 KiB) at a time; chunked encoding is decoded with the same bounds.
// Thread-safety: an HttpClient is immutable after Create and safe to share; one Stream belongs to one thread.
// Interrupter::Fire may be called from any thread.
//
//   IPTKIT_ASSIGN_OR_RETURN(auto client, HttpClient::Create({}));
//   IPTKIT_ASSIGN_OR_RETURN(Endpoint ep, ParseEndpoint("http://127.0.0.1:2379"));
//   IPTKIT_ASSIGN_OR_RETURN(HttpResponse r, client->Post(ep, "/v3/kv/range", body, {}, deadline, nullptr));
#ifndef IPTKIT_SRC_FLEET_HTTP_CLIENT_H_
#define IPTKIT_SRC_FLEET_HTTP_CLIENT_H_

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "iptkit/status.h"
#include "src/base/unique_fd.h"

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;

namespace iptkit::fleet {

using Clock = std::chrono::steady_clock;

// http://HOST:PORT or https://HOST:PORT (HOST a name, an IPv4 address or a bracketed IPv6 address; a trailing "/"
// is allowed, any other path is not).
struct Endpoint {
  bool tls = false;
  std::string host;
  int port = 0;
  std::string ToString() const;
};
// InvalidArgument naming the URL and what is wrong.
Result<Endpoint> ParseEndpoint(std::string_view url);

// Wakes every wait of the calls given it (an eventfd); stays fired until Reset.
class Interrupter {
 public:
  Interrupter();
  void Fire();
  void Reset();
  bool fired() const;
  int fd() const { return fd_.get(); }

 private:
  base::UniqueFd fd_;
};

struct TlsFiles {
  std::string ca_file;    // verifies the server (and its name); "" = the system's trust store
  std::string cert_file;  // client certificate chain (PEM); with key_file
  std::string key_file;
};

struct HttpResponse {
  int status = 0;
  std::string body;
};

using Headers = std::vector<std::pair<std::string, std::string>>;

class HttpClient;

// A response being read: status known, the body handed out piece by piece.
class HttpStream {
 public:
  ~HttpStream();
  HttpStream(const HttpStream&) = delete;
  HttpStream& operator=(const HttpStream&) = delete;
  int status() const { return status_; }
  // Appends the next body bytes to *out. Returns false at the end of the body. Unavailable when the connection
  // breaks, the deadline passes or the interrupter fires.
  Result<bool> Next(std::string* out, Clock::time_point deadline);
  // The rest of the body, at most max_bytes (else Unavailable: "response larger than N bytes").
  Result<std::string> ReadAll(size_t max_bytes, Clock::time_point deadline);

 private:
  friend class HttpClient;
  HttpStream() = default;
  Result<size_t> ReadRaw(char* buf, size_t size, Clock::time_point deadline);
  Status Fill(Clock::time_point deadline);  // reads more into pending_
  Status WriteAll(std::string_view data, Clock::time_point deadline);
  Status Wait(short events, Clock::time_point deadline);

  base::UniqueFd fd_;
  SSL* ssl_ = nullptr;
  const Interrupter* interrupter_ = nullptr;
  std::string where_;  // "http://host:port/path" for messages
  int status_ = 0;
  bool chunked_ = false;
  bool until_close_ = false;
  size_t remaining_ = 0;  // of the current chunk, or of the Content-Length body
  bool done_ = false;
  bool eof_ = false;
  std::string pending_;  // bytes read but not yet handed out
};

class HttpClient {
 public:
  // InvalidArgument when the TLS files cannot be loaded (naming them and OpenSSL's reason).
  static Result<std::unique_ptr<HttpClient>> Create(const TlsFiles& tls);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Connects, sends `POST path` with the JSON body and reads the response head. Unavailable when the endpoint
  // cannot be reached, the deadline passes or `interrupter` (may be null) fires.
  Result<std::unique_ptr<HttpStream>> OpenStream(const Endpoint& endpoint, std::string_view path, std::string_view body,
                                                 const Headers& headers, Clock::time_point deadline,
                                                 const Interrupter* interrupter) const;
  // OpenStream + ReadAll(max_body).
  Result<HttpResponse> Post(const Endpoint& endpoint, std::string_view path, std::string_view body,
                            const Headers& headers, Clock::time_point deadline, const Interrupter* interrupter,
                            size_t max_body = size_t{64} << 20) const;

 private:
  HttpClient() = default;
  SSL_CTX* ctx_ = nullptr;
};

}  // namespace iptkit::fleet

#endif  // IPTKIT_SRC_FLEET_HTTP_CLIENT_H_
