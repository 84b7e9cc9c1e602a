// The bytes of HTTP/1.1 responses for iptkitd's server: a whole response (status line, headers, body), the head of
// an event stream (chunked), chunks, and the JSON errors the HTTP layer answers itself (a malformed request, a limit)
// in the same shape as the Api's ({"error":{"code","message","details"}}, X-Request-Id, Cache-Control).
// Thread-safety: pure functions.
//
//   std::string bytes = SerializeResponse(api->Handle(req), {.head_only = false, .keep_alive = true});
#ifndef IPTKIT_SRC_REST_HTTP_RESPONSE_H_
#define IPTKIT_SRC_REST_HTTP_RESPONSE_H_

#include <string>
#include <string_view>

#include "src/rest/api.h"

namespace iptkit::rest::http {

// "OK", "Not Found", ... ("Unknown" for a status without one here).
std::string_view ReasonPhrase(int status);

struct Framing {
  bool head_only = false;  // a HEAD request: headers (with Content-Length) but no body
  bool keep_alive = true;  // else "Connection: close"
  bool http10 = false;     // the request was HTTP/1.0: "Connection: keep-alive" when keeping it
};

// The whole response with Content-Length. Header values have CR and LF replaced by blanks.
std::string SerializeResponse(const HttpResponse& response, const Framing& framing);
// The head of a streamed response: chunked for HTTP/1.1, until the connection closes for HTTP/1.0.
std::string SerializeStreamHead(const HttpResponse& response, bool http10);
// `data` as one chunk ("" gives the last chunk, "0\r\n\r\n").
std::string Chunk(std::string_view data);

// An error the HTTP layer answers itself: `status` (400, 408, 413, 414, 417, 431, 501, 503, 505), a message, the
// request id (a new one when "").
HttpResponse ProblemResponse(int status, const std::string& message, const std::string& request_id = "");

}  // namespace iptkit::rest::http

#endif  // IPTKIT_SRC_REST_HTTP_RESPONSE_H_
