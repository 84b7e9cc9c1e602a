#include "src/rest/http/request_parser.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

namespace iptkit::rest::http {
namespace {

using ::testing::HasSubstr;
using ::testing::Pair;
using ::testing::UnorderedElementsAre;

// Parses `text`, which must hold a complete head; the problem's status, 0 when it parsed.
int Status(const std::string& text, RequestHead* head = nullptr, const ParseLimits& limits = {}) {
  RequestHead local;
  const size_t end = FindHeadEnd(text, 0);
  EXPECT_NE(end, std::string::npos) << "incomplete head: " << text;
  if (end == std::string::npos) return -1;
  std::optional<HttpProblem> p = ParseHead(std::string_view(text).substr(0, end), limits, head ? head : &local);
  if (p) {
    EXPECT_FALSE(p->message.empty());
  }
  return p ? p->status : 0;
}

TEST(RequestParserTest, ParsesRequestLineQueryAndHeaders) {
  RequestHead h;
  ASSERT_EQ(Status("GET /v1/ipv4/tables/filter/chains/two%20words/rules?dry_run=1&a+b=c%2Bd&flag&&x=1&x=2 HTTP/1.1\r\n"
                   "Host: localhost\r\nX-Request-Id:   abc  \r\nAuthorization: Bearer t\r\n\r\n",
                   &h),
            0);
  EXPECT_EQ(h.method, "GET");
  EXPECT_EQ(h.path, "/v1/ipv4/tables/filter/chains/two words/rules");
  EXPECT_THAT(h.query, UnorderedElementsAre(Pair("dry_run", "1"), Pair("a b", "c+d"), Pair("flag", ""), Pair("x", "1"),
                                            Pair("x", "2")));
  EXPECT_EQ(h.Header("x-request-id"), "abc");
  EXPECT_EQ(h.Header("authorization"), "Bearer t");
  EXPECT_EQ(h.Header("host"), "localhost");
  EXPECT_EQ(h.minor_version, 1);
  EXPECT_TRUE(h.keep_alive);
  EXPECT_EQ(h.framing, RequestHead::Framing::kNone);
  EXPECT_FALSE(h.has_body());
  EXPECT_FALSE(h.expect_continue);
}

TEST(RequestParserTest, AcceptsBareLineFeeds) {
  RequestHead h;
  ASSERT_EQ(Status("POST /x HTTP/1.1\nContent-Length: 2\n\n{}", &h), 0);
  EXPECT_EQ(h.framing, RequestHead::Framing::kLength);
  EXPECT_EQ(h.content_length, 2u);
}

TEST(RequestParserTest, FindHeadEndResumesAndStopsAtTheFirstRequest) {
  const std::string two = "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
  EXPECT_EQ(FindHeadEnd(two, 0), two.find("GET /b"));
  // A byte at a time, each search resuming where the last stopped.
  std::string grown;
  size_t end = std::string::npos;
  for (char c : two) {
    const size_t before = grown.size();
    grown += c;
    end = FindHeadEnd(grown, before);
    if (end != std::string::npos) break;
  }
  EXPECT_EQ(end, two.find("GET /b"));
  EXPECT_EQ(FindHeadEnd("GET / HTTP/1.1\r\nHost: x\r\n", 0), std::string::npos);
  EXPECT_EQ(FindHeadEnd("GET / HTTP/1.1\n\r\n", 0), 17u);
}

TEST(RequestParserTest, BadRequestLines) {
  EXPECT_EQ(Status("GARBAGE\r\n\r\n"), 400);
  EXPECT_EQ(Status("GET\r\n\r\n"), 400);
  EXPECT_EQ(Status("GET /v1/version HTTP/1.1 extra\r\n\r\n"), 400);
  EXPECT_EQ(Status("GET  /v1/version HTTP/1.1\r\n\r\n"), 400);
  EXPECT_EQ(Status("GET /v1/version  HTTP/1.1\r\n\r\n"), 400);
  EXPECT_EQ(Status("GET v1/version HTTP/1.1\r\n\r\n"), 400);
  EXPECT_EQ(Status("GET http://host/v1/version HTTP/1.1\r\n\r\n"), 400);
  EXPECT_EQ(Status("OPTIONS * HTTP/1.1\r\n\r\n"), 400);
  EXPECT_EQ(Status("GET /v1/version http/1.1\r\n\r\n"), 400);
  EXPECT_EQ(Status("GET /v1/version HTTP/1\r\n\r\n"), 400);
  EXPECT_EQ(Status("GET /v1/version HTTP/2.0\r\n\r\n"), 505);
  EXPECT_EQ(Status("GET /v1/version HTTP/1.2\r\n\r\n"), 505);
  EXPECT_EQ(Status("G(T /v1/version HTTP/1.1\r\n\r\n"), 400);
  EXPECT_EQ(Status("GET /v1/ver\rsion HTTP/1.1\r\n\r\n"), 400);
  EXPECT_EQ(Status("GET /v1/\x01version HTTP/1.1\r\n\r\n"), 400);
  EXPECT_EQ(Status("GET /v1/\xc3\xa9 HTTP/1.1\r\n\r\n"), 400);
  EXPECT_EQ(Status("GET /v1/a%00b HTTP/1.1\r\n\r\n"), 400);
  RequestHead h;
  ASSERT_EQ(Status("GET /a%2 HTTP/1.0\r\n\r\n", &h), 0);  // not an escape: kept
  EXPECT_EQ(h.path, "/a%2");
  EXPECT_EQ(h.minor_version, 0);
  EXPECT_FALSE(h.keep_alive);
  // Methods are tokens; which ones are served is the server's business.
  EXPECT_EQ(Status("FOO /x HTTP/1.1\r\n\r\n"), 0);
}

TEST(RequestParserTest, BadHeaderFields) {
  EXPECT_EQ(Status("GET / HTTP/1.1\r\nBadHeaderWithoutColon\r\n\r\n"), 400);
  EXPECT_EQ(Status("GET / HTTP/1.1\r\nHost : x\r\n\r\n"), 400);
  EXPECT_EQ(Status("GET / HTTP/1.1\r\n: x\r\n\r\n"), 400);
  EXPECT_EQ(Status("GET / HTTP/1.1\r\nX-A: 1\r\n  continued\r\n\r\n"), 400);
  EXPECT_EQ(Status("GET / HTTP/1.1\r\nX-A: a\x01z\r\n\r\n"), 400);
  EXPECT_EQ(Status(std::string("GET / HTTP/1.1\r\nX-A: a") + '\0' + "z\r\n\r\n"), 400);
  EXPECT_EQ(Status("GET / HTTP/1.1\r\nX-A: a\rb\r\n\r\n"), 400);
  EXPECT_EQ(Status("GET / HTTP/1.1\r\nX-A: tab\there, obs-text \xe9\r\n\r\n"), 0);
  EXPECT_EQ(Status("GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n"), 0);
  EXPECT_EQ(Status("GET / HTTP/1.1\r\nExpect: something-else\r\n\r\n"), 417);
}

TEST(RequestParserTest, HeaderLimits) {
  const ParseLimits limits{.max_head_bytes = 1024, .max_line_bytes = 256, .max_headers = 5};
  std::string many = "GET / HTTP/1.1\r\n";
  for (int i = 0; i < 6; ++i) many += "X-" + std::to_string(i) + ": v\r\n";
  EXPECT_EQ(Status(many + "\r\n", nullptr, limits), 431);
  EXPECT_EQ(Status("GET / HTTP/1.1\r\nX-Long: " + std::string(300, 'h') + "\r\n\r\n", nullptr, limits), 431);
  EXPECT_EQ(Status("GET /" + std::string(300, 'p') + " HTTP/1.1\r\n\r\n", nullptr, limits), 414);
  std::string big = "GET / HTTP/1.1\r\n";
  for (int i = 0; i < 5; ++i) big += "X-" + std::to_string(i) + ": " + std::string(200, 'v') + "\r\n";
  EXPECT_EQ(Status(big + "\r\n", nullptr, limits), 431);

  // Before the head is complete.
  EXPECT_FALSE(CheckPartialHead("GET /" + std::string(200, 'p'), limits));
  std::optional<HttpProblem> p = CheckPartialHead("GET /" + std::string(300, 'p'), limits);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->status, 414);
  p = CheckPartialHead("GET / HTTP/1.1\r\nX-Long: " + std::string(300, 'h'), limits);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->status, 431);
  std::string partial = "GET / HTTP/1.1\r\n";
  while (partial.size() <= 1024) partial += "X-A: " + std::string(100, 'v') + "\r\n";
  p = CheckPartialHead(partial, limits);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->status, 431);
  EXPECT_THAT(p->message, HasSubstr("1024"));
}

TEST(RequestParserTest, ContentLengthAndTransferEncoding) {
  RequestHead h;
  EXPECT_EQ(Status("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", &h), 0);
  EXPECT_EQ(h.content_length, 5u);
  EXPECT_TRUE(h.has_body());
  EXPECT_EQ(Status("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", &h), 0);
  EXPECT_FALSE(h.has_body());
  EXPECT_EQ(Status("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"), 400);
  EXPECT_EQ(Status("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n"), 400);
  EXPECT_EQ(Status("POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n"), 400);
  EXPECT_EQ(Status("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"), 400);
  EXPECT_EQ(Status("POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n"), 400);
  EXPECT_EQ(Status("POST / HTTP/1.1\r\nContent-Length: \r\n\r\n"), 400);
  EXPECT_EQ(Status("POST / HTTP/1.1\r\nContent-Length: 1234567890123456789\r\n\r\n"), 400);
  EXPECT_EQ(Status("POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"), 400);
  EXPECT_EQ(Status("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"), 501);
  EXPECT_EQ(Status("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"), 501);
  EXPECT_EQ(Status("POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n"), 501);
  EXPECT_EQ(Status("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n", &h), 0);
  EXPECT_EQ(h.framing, RequestHead::Framing::kChunked);
  EXPECT_TRUE(h.has_body());
}

TEST(RequestParserTest, KeepAlive) {
  RequestHead h;
  ASSERT_EQ(Status("GET / HTTP/1.1\r\nConnection: close\r\n\r\n", &h), 0);
  EXPECT_FALSE(h.keep_alive);
  ASSERT_EQ(Status("GET / HTTP/1.1\r\nConnection: Keep-Alive, Close\r\n\r\n", &h), 0);
  EXPECT_FALSE(h.keep_alive);
  ASSERT_EQ(Status("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", &h), 0);
  EXPECT_TRUE(h.keep_alive);
  ASSERT_EQ(Status("GET / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n", &h), 0);
  EXPECT_FALSE(h.expect_continue);  // HTTP/1.0 clients do not wait for 100
}

// ---- Bodies ----

RequestHead Head(const std::string& text) {
  RequestHead h;
  EXPECT_EQ(Status(text, &h), 0) << text;
  return h;
}

struct Decoded {
  std::string body;
  size_t used = 0;
  bool done = false;
  int status = 0;  // of a problem
  std::string message;
};

Decoded Decode(const RequestHead& head, const std::string& bytes, size_t limit = 1 << 20, bool bytewise = false) {
  Decoded out;
  BodyDecoder d = BodyDecoder::For(head);
  std::optional<HttpProblem> problem;
  if (bytewise) {
    for (size_t i = 0; i < bytes.size() && !d.done() && !problem; ++i) {
      out.used += d.Feed(std::string_view(bytes).substr(i, 1), &out.body, limit, &problem);
    }
  } else {
    out.used = d.Feed(bytes, &out.body, limit, &problem);
  }
  out.done = d.done();
  if (problem) {
    out.status = problem->status;
    out.message = problem->message;
  }
  return out;
}

const RequestHead& Chunked() {
  static const RequestHead h = Head("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
  return h;
}

TEST(BodyDecoderTest, ContentLengthStopsAtTheEndOfTheBody) {
  const RequestHead h = Head("POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\n");
  Decoded d = Decode(h, "{\"a\"GET /next HTTP/1.1\r\n\r\n");
  EXPECT_TRUE(d.done);
  EXPECT_EQ(d.body, "{\"a\"");
  EXPECT_EQ(d.used, 4u);
  d = Decode(h, "{\"");
  EXPECT_FALSE(d.done);
  EXPECT_EQ(d.used, 2u);
  d = Decode(h, "{\"a\"", 3);
  EXPECT_EQ(d.status, 413);
  EXPECT_EQ(d.body, "");  // refused before taking any of it
  EXPECT_TRUE(BodyDecoder().done());
  EXPECT_TRUE(BodyDecoder::For(Head("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n")).done());
}

TEST(BodyDecoderTest, Chunked) {
  const std::string wire = "4\r\nWiki\r\n6;name=value;x\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\n\r\nNEXT";
  for (bool bytewise : {false, true}) {
    Decoded d = Decode(Chunked(), wire, 1 << 20, bytewise);
    EXPECT_TRUE(d.done) << bytewise;
    EXPECT_EQ(d.status, 0) << d.message;
    EXPECT_EQ(d.body, "Wikipedia in \r\n\r\nchunks.");
    EXPECT_EQ(d.used, wire.find("NEXT")) << bytewise;
  }
  // Bare LF line ends, upper-case hex, blanks before an extension, trailers.
  Decoded d = Decode(Chunked(), "A \n0123456789\n0\nX-Trailer: 1\nChecksum: abc\n\n");
  EXPECT_TRUE(d.done);
  EXPECT_EQ(d.body, "0123456789");
}

TEST(BodyDecoderTest, MalformedChunkSizes) {
  for (const char* bad : {"zz\r\n{}\r\n0\r\n\r\n", "\r\n", "-1\r\n", "0x10\r\n", " 5\r\nhello\r\n", "5 x\r\n", "+5\r\n",
                          "12345678901234567\r\n", "5\r\r\nhello\r\n", ";ext\r\n"}) {
    Decoded d = Decode(Chunked(), bad);
    EXPECT_EQ(d.status, 400) << bad;
    EXPECT_FALSE(d.done) << bad;
  }
  // Chunk data longer than its size, or not followed by CRLF.
  EXPECT_EQ(Decode(Chunked(), "3\r\nabcd\r\n0\r\n\r\n").status, 400);
  EXPECT_EQ(Decode(Chunked(), "3\r\nabc\r\r0\r\n\r\n").status, 400);
  // A chunk-size line (extension) beyond the line limit.
  EXPECT_EQ(Decode(Chunked(), "5;" + std::string(9000, 'e') + "\r\n").status, 400);
  // Sixteen hex digits are fine as syntax, but such a chunk exceeds any limit.
  EXPECT_EQ(Decode(Chunked(), "FFFFFFFFFFFFFFFF\r\n").status, 413);
}

TEST(BodyDecoderTest, MalformedTrailers) {
  EXPECT_EQ(Decode(Chunked(), "0\r\nno colon here\r\n\r\n").status, 400);
  EXPECT_EQ(Decode(Chunked(), "0\r\nBad Name: x\r\n\r\n").status, 400);
  std::string many = "0\r\n";
  for (int i = 0; i < 101; ++i) many += "T" + std::to_string(i) + ": x\r\n";
  EXPECT_EQ(Decode(Chunked(), many + "\r\n").status, 431);
  EXPECT_EQ(Decode(Chunked(), "0\r\nT: " + std::string(9000, 'x') + "\r\n\r\n").status, 431);
}

TEST(BodyDecoderTest, ChunkedBodyIsCountedWhileDecoding) {
  // Each chunk is checked against the limit before its bytes are taken.
  Decoded d = Decode(Chunked(), "3\r\nabc\r\n3\r\ndef\r\n3\r\nghi\r\n0\r\n\r\n", 8);
  EXPECT_EQ(d.status, 413);
  EXPECT_EQ(d.body, "abcdef");
  EXPECT_THAT(d.message, HasSubstr("the limit is 8"));
  d = Decode(Chunked(), "2000\r\n" + std::string(0x2000, 'x') + "\r\n0\r\n\r\n", 4096);
  EXPECT_EQ(d.status, 413);
  EXPECT_EQ(d.body, "");
  d = Decode(Chunked(), "3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n", 6);
  EXPECT_TRUE(d.done);
  EXPECT_EQ(d.body, "abcdef");
}

TEST(BodyDecoderTest, ProblemsAreFinal) {
  BodyDecoder d = BodyDecoder::For(Chunked());
  std::string body;
  std::optional<HttpProblem> problem;
  EXPECT_EQ(d.Feed("zz\r\n", &body, 100, &problem), 0u);
  ASSERT_TRUE(problem);
  problem.reset();
  EXPECT_EQ(d.Feed("3\r\nabc\r\n0\r\n\r\n", &body, 100, &problem), 0u);
  EXPECT_FALSE(d.done());
  EXPECT_EQ(body, "");
}

}  // namespace
}  // namespace iptkit::rest::http
