// The HTTP/1.1 request parser of iptkitd's server (RFC 9112): the head (request line and header fields) and the
// body framing (Content-Length or chunked), each under explicit limits, so that the server knows what a request
// costs before it reads more of it.
//
// The server keeps a connection's bytes in one buffer: FindHeadEnd tells when the head is complete (resuming where
// the last search stopped, so a head that arrives a byte at a time costs O(n)), CheckPartialHead refuses a head that
// grew past the limits before it is complete, ParseHead parses a complete head, and a BodyDecoder takes the body
// from the bytes after it. What follows a request in the buffer is the next request (pipelining: requests are
// answered one after the other, in order).
//
// Policy (strict where leniency lets two parsers disagree about where a request ends, i.e. request smuggling):
// - request line `METHOD SP origin-form SP HTTP/1.x`; lines end in CRLF or LF; a bare CR, a header name with
//   blanks before the colon, an obsolete folded line, or control characters in a value are 400;
// - a request line over max_line_bytes is 414; a header line over max_line_bytes, more than max_headers fields,
//   or a head over max_head_bytes is 431; HTTP versions other than 1.0 and 1.1 are 505;
// - Content-Length is decimal digits; several fields must agree; with Transfer-Encoding too it is 400; a transfer
//   coding other than `chunked` is 501; chunk sizes are 1..16 hex digits, chunk extensions are skipped (within
//   max_line_bytes), trailer fields are checked for shape and dropped.
// Thread-safety: pure functions; a BodyDecoder is used by one thread at a time.
//
//   size_t end = FindHeadEnd(buffer, 0);
//   if (end == std::string_view::npos) { if (auto p = CheckPartialHead(buffer, limits)) Refuse(*p); return; }
//   RequestHead head;
//   if (auto p = ParseHead(std::string_view(buffer).substr(0, end), limits, &head)) Refuse(*p);
//   BodyDecoder body = BodyDecoder::For(head);
//   size_t used = body.Feed(std::string_view(buffer).substr(end), &bytes, max_body, &problem);
#ifndef IPTKIT_SRC_REST_HTTP_REQUEST_PARSER_H_
#define IPTKIT_SRC_REST_HTTP_REQUEST_PARSER_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace iptkit::rest::http {

struct ParseLimits {
  size_t max_head_bytes = 16 * 1024;  // request line, header fields and the blank line after them
  size_t max_line_bytes = 8 * 1024;   // one line of the head, a chunk-size line, a trailer line
  size_t max_headers = 100;           // header fields (and trailer fields) of one request
};

// Why a request is refused: the HTTP status (400, 413, 414, 431, 501, 505) and a message for the client.
struct HttpProblem {
  int status = 400;
  std::string message;
};

struct RequestHead {
  std::string method;                               // as sent (methods are case-sensitive)
  std::string target;                               // the request-target as sent ("/v1/ipv4?netns=x")
  std::string path;                                 // percent-decoded, without the query
  std::multimap<std::string, std::string> query;    // decoded (also '+' as a blank)
  std::multimap<std::string, std::string> headers;  // names in lower case, values without surrounding blanks
  int minor_version = 1;                            // HTTP/1.0 or HTTP/1.1

  enum class Framing { kNone, kLength, kChunked };
  Framing framing = Framing::kNone;
  uint64_t content_length = 0;   // with kLength
  bool keep_alive = true;        // HTTP/1.1 unless "Connection: close"; HTTP/1.0 only with "Connection: keep-alive"
  bool expect_continue = false;  // "Expect: 100-continue"

  // Whether the request announces a body (chunked, or a Content-Length above 0).
  bool has_body() const { return framing == Framing::kChunked || (framing == Framing::kLength && content_length > 0); }
  // The first value of a header (name in lower case), or "".
  std::string Header(const std::string& name) const;
};

// The offset just past the blank line that ends the head in `buffer`, or npos when it is not there yet. `from` is
// where an earlier search of the same (grown) buffer stopped: the previous buffer size.
size_t FindHeadEnd(std::string_view buffer, size_t from);

// A head that is not complete yet but already breaks a limit: 414 when the request line has no end within
// max_line_bytes, 431 when the head passed max_head_bytes; nullopt while it may still be fine.
std::optional<HttpProblem> CheckPartialHead(std::string_view buffer, const ParseLimits& limits);

// Parses a complete head (up to and including its blank line) into *out; the problem when it is malformed or
// breaks a limit (then *out is unspecified).
std::optional<HttpProblem> ParseHead(std::string_view head, const ParseLimits& limits, RequestHead* out);

// "/a%20b" -> "/a b"; with plus_as_space also '+' -> ' '. A '%' not followed by two hex digits stays as it is.
std::string PercentDecode(std::string_view text, bool plus_as_space);

// Decodes a request body framed as the head says, from the bytes that follow the head, as they arrive.
class BodyDecoder {
 public:
  BodyDecoder() = default;  // no body: done() at once
  static BodyDecoder For(const RequestHead& head, const ParseLimits& limits = {});

  // Consumes bytes of `in` and appends the body bytes among them to *body; returns how many bytes of `in` it
  // consumed (it stops at the end of the body: what follows belongs to the next request). The body may not grow
  // beyond `limit` bytes in total: a Content-Length or chunk size that would pass it is refused (413) before its
  // bytes are taken. On a problem returns 0 and sets *problem (the decoder is then done() == false for good).
  size_t Feed(std::string_view in, std::string* body, size_t limit, std::optional<HttpProblem>* problem);

  bool done() const { return state_ == State::kDone; }
  // Body bytes decoded so far.
  uint64_t received() const { return received_; }

 private:
  enum class State { kLength, kChunkSize, kChunkData, kChunkDataEnd, kTrailer, kDone, kFailed };
  State state_ = State::kDone;
  uint64_t remaining_ = 0;  // kLength: bytes left; kChunkData: bytes left of this chunk
  uint64_t received_ = 0;
  std::string line_;  // a partial chunk-size or trailer line
  size_t trailer_bytes_ = 0;
  size_t trailers_ = 0;
  ParseLimits limits_;
};

}  // namespace iptkit::rest::http

#endif  // IPTKIT_SRC_REST_HTTP_REQUEST_PARSER_H_
