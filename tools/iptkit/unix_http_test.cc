#include "tools/iptkit/unix_http.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <thread>

namespace iptkit::cli {
namespace {

HttpAnswer ParseComplete(std::string_view raw, bool at_eof = false) {
  bool complete = false;
  Result<HttpAnswer> a = ParseHttpAnswer(raw, at_eof, &complete);
  EXPECT_TRUE(a.ok()) << a.status().message();
  EXPECT_TRUE(complete) << raw;
  return a.ok() ? *a : HttpAnswer{};
}

TEST(UnixHttpTest, ContentLengthFramesTheBody) {
  HttpAnswer a = ParseComplete("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}trailing");
  EXPECT_EQ(a.status, 200);
  EXPECT_EQ(a.body, "{}");
}

TEST(UnixHttpTest, IncompleteAnswersWaitAndCutAnswersFail) {
  for (std::string_view raw : {std::string_view("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab"),
                               std::string_view("HTTP/1.1 200 OK\r\nContent-"),
                               std::string_view("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n")}) {
    bool complete = true;
    Result<HttpAnswer> a = ParseHttpAnswer(raw, false, &complete);
    ASSERT_TRUE(a.ok()) << raw;
    EXPECT_FALSE(complete) << raw;
    Result<HttpAnswer> cut = ParseHttpAnswer(raw, true, &complete);
    EXPECT_FALSE(cut.ok()) << raw;
    EXPECT_EQ(cut.status().code(), StatusCode::kUnavailable);
  }
}

TEST(UnixHttpTest, ChunkedBodiesAreDecoded) {
  HttpAnswer a = ParseComplete(
      "HTTP/1.1 409 Conflict\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\nA\r\n0123456789\r\n0\r\n\r\n");
  EXPECT_EQ(a.status, 409);
  EXPECT_EQ(a.body, "abc0123456789");
}

TEST(UnixHttpTest, UnframedBodyEndsWithTheStream) {
  bool complete = true;
  ASSERT_TRUE(ParseHttpAnswer("HTTP/1.0 200 OK\r\n\r\nxyz", false, &complete).ok());
  EXPECT_FALSE(complete);
  EXPECT_EQ(ParseComplete("HTTP/1.0 200 OK\r\n\r\nxyz", true).body, "xyz");
}

TEST(UnixHttpTest, GarbageIsNamed) {
  bool complete = false;
  Result<HttpAnswer> a = ParseHttpAnswer("SSH-2.0-OpenSSH\r\n\r\n", true, &complete);
  ASSERT_FALSE(a.ok());
  EXPECT_NE(a.status().message().find("SSH-2.0"), std::string::npos) << a.status().message();
  EXPECT_FALSE(ParseHttpAnswer("HTTP/1.1 2x0 OK\r\n\r\n", true, &complete).ok());
  EXPECT_FALSE(ParseHttpAnswer("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", true, &complete).ok());
}

// A real unix socket: the request as sent, and the answer read back across several writes.
TEST(UnixHttpTest, SendsOneRequestAndReadsTheAnswer) {
  std::string path = "/tmp/iptkit-unix-http-" + std::to_string(::getpid()) + ".sock";
  ::unlink(path.c_str());
  int listener = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(listener, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(listener, 1), 0);
  std::string request;
  std::thread server([&] {
    int c = ::accept(listener, nullptr, nullptr);
    if (c < 0) return;
    char buf[4096];
    while (request.find("\r\n\r\n") == std::string::npos || request.size() < request.find("\r\n\r\n") + 4 + 7) {
      ssize_t n = ::read(c, buf, sizeof(buf));
      if (n <= 0) break;
      request.append(buf, static_cast<size_t>(n));
    }
    std::string answer = "HTTP/1.1 200 OK\r\nContent-Length: 11\r\nConnection: close\r\n\r\n{\"ok\":true}";
    for (char ch : answer) (void)!::write(c, &ch, 1);  // byte by byte: the client must reassemble
    ::close(c);
  });
  UnixHttpClient client(path, std::chrono::seconds(5));
  Result<HttpAnswer> a = client.Send("POST", "/v1/transactions?netns=x", R"({"a":1})");
  server.join();
  ::close(listener);
  ::unlink(path.c_str());
  ASSERT_TRUE(a.ok()) << a.status().message();
  EXPECT_EQ(a->status, 200);
  EXPECT_EQ(a->body, "{\"ok\":true}");
  EXPECT_EQ(request.rfind("POST /v1/transactions?netns=x HTTP/1.1\r\n", 0), 0u) << request;
  EXPECT_NE(request.find("Content-Length: 7\r\n"), std::string::npos) << request;
  EXPECT_NE(request.find("Connection: close\r\n"), std::string::npos) << request;
  EXPECT_EQ(request.substr(request.size() - 7), R"({"a":1})");
}

TEST(UnixHttpTest, NoDaemonIsUnavailable) {
  UnixHttpClient client("/nonexistent/iptkitd.sock", std::chrono::seconds(1));
  Result<HttpAnswer> a = client.Send("GET", "/v1/version", "");
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(a.status().message().find("No such file"), std::string::npos) << a.status().message();
}

}  // namespace
}  // namespace iptkit::cli
