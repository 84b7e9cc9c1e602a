// A minimal HTTP/1.1 client over a unix stream socket, for `iptkit --daemon`: one request per connection
// ("Connection: close"), answers framed by Content-Length, by chunked transfer coding or by the end of the stream.
// It exists so that the CLI does not link an HTTP library with TLS and compression, whose loading alone doubled the
// start-up time of every iptkit process (the daemon's own socket needs neither).
// Thread-safety: a UnixHttpClient may be used by one thread at a time.
#ifndef IPTKIT_TOOLS_IPTKIT_UNIX_HTTP_H_
#define IPTKIT_TOOLS_IPTKIT_UNIX_HTTP_H_

#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

#include "iptkit/status.h"
#include "src/base/unique_fd.h"

namespace iptkit::cli {

struct HttpAnswer {
  int status = 0;
  std::string body;
};

class UnixHttpClient {
 public:
  // `timeout` bounds connecting, sending and each wait for more of the answer.
  UnixHttpClient(std::string socket_path, std::chrono::milliseconds timeout)
      : socket_path_(std::move(socket_path)), timeout_(timeout) {}

  // Sends METHOD TARGET (with a body of `content_type` when `json_body` is not empty) and reads the whole answer
  // (at most `max_answer_bytes`). Unavailable when the socket cannot be reached or the answer is cut or malformed.
  Result<HttpAnswer> Send(std::string_view method, std::string_view target, std::string_view json_body,
                          size_t max_answer_bytes = size_t{1} << 30,
                          std::string_view content_type = "application/json") const;

  // GET `target`, a stream of Server-Sent Events (GET /v1/events): `on_data` gets the text after "data:" of each
  // data line as it arrives, until it returns false, `stop` becomes true (checked every 100 ms), or the stream
  // ends. The answer's body may be chunked. Unavailable when the daemon cannot be reached or answers other than 200.
  // `opened` (when given) becomes true once the daemon answered 200 (the subscription is in place).
  Status StreamEvents(std::string_view target, const std::function<bool(std::string_view)>& on_data,
                      const std::atomic<bool>& stop, std::atomic<bool>* opened = nullptr) const;

 private:
  Result<base::UniqueFd> Connect() const;
  std::string socket_path_;
  std::chrono::milliseconds timeout_;
};

// Parses a complete HTTP/1.1 answer (status line, header fields, body framed as above). `at_eof` says the stream
// ended after `raw`. Sets *complete to false (and returns an empty answer) while more bytes are needed.
// Exposed for unit tests.
Result<HttpAnswer> ParseHttpAnswer(std::string_view raw, bool at_eof, bool* complete);

}  // namespace iptkit::cli

#endif  // IPTKIT_TOOLS_IPTKIT_UNIX_HTTP_H_
