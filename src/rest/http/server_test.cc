// The HTTP server and Api::Preflight over a service on the fake backend (no root, no namespaces): what is decided
// from a request's head, and how the server moves bytes — pipelining, Expect: 100-continue, chunked bodies, HEAD,
// HTTP/1.0, the limits of the head, and a refused request whose body is never read.
#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>

#include "src/backend/fake/shared_fake.h"
#include "src/rest/api.h"
#include "src/rest/http_server.h"

namespace iptkit::rest {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "iptkit-http-XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    kernel_ = std::make_shared<backend::SharedFake>();
    ASSERT_TRUE(kernel_->fake
                    .LoadSave(Family::kIPv4,
                              "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n")
                    .ok());
    store_ = *store::Store::Open(dir_ + "/iptkitd.db");
    service::Service::Options options;
    auto kernel = kernel_;
    options.make_backend = [kernel]() -> Result<std::unique_ptr<backend::Backend>> {
      return backend::NewSharedFakeHandle(kernel);
    };
    options.drift_interval = std::chrono::hours(1);
    options.firewall.before_commit_hook = [this] {
      if (commit_hook_) commit_hook_();
    };
    service_ = *service::Service::Start(std::move(options), store_.get(), &metrics_, &events_);
    ApiOptions api_options;
    api_options.version = "test";
    api_options.rate_limit = 0;
    api_options.max_body_bytes = 4096;
    api_ = std::make_unique<Api>(service_.get(), store_.get(), &events_, &metrics_, api_options);
    admin_ = *store_->CreateToken("admin", *store::ParseScopes({"read", "write"}), 0);
    reader_ = *store_->CreateToken("reader", *store::ParseScopes({"read"}), 0);
  }
  void TearDown() override {
    if (server_) server_->Stop();
    server_.reset();
    api_.reset();
    events_.Close();
    service_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  void Serve(HttpServerOptions options = {}) {
    options.tcp = {{"127.0.0.1", 0, false}};
    options.max_body_bytes = 4096;
    options.metrics = &metrics_;
    Result<std::unique_ptr<HttpServer>> s = HttpServer::Start(api_.get(), options);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    server_ = *std::move(s);
    const std::string& e = server_->endpoints().at(0);
    port_ = std::stoi(e.substr(e.rfind(':') + 1));
  }
  // From `source` (another loopback address is another client address).
  int Connect(const char* source = nullptr) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (source != nullptr) {
      sockaddr_in from{};
      from.sin_family = AF_INET;
      inet_pton(AF_INET, source, &from.sin_addr);
      EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof(from)), 0);
    }
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(static_cast<uint16_t>(port_));
    inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
    EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof(to)), 0);
    return fd;
  }
  static void Send(int fd, const std::string& bytes) {
    ASSERT_EQ(send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL), static_cast<ssize_t>(bytes.size()));
  }
  // What arrives until the connection closes or nothing more comes for `quiet`.
  static std::string Receive(int fd, std::chrono::milliseconds quiet = std::chrono::milliseconds(1000)) {
    std::string out;
    char buf[65536];
    for (;;) {
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(quiet.count())) <= 0) break;
      const ssize_t n = recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
    return out;
  }
  // Serves an Api whose client addresses may fail authentication twice (a refill takes 100 s), after which every
  // failure is held 200 ms; `metrics` must outlive the server.
  void ServeWithATightAuthFailureBudget(service::Metrics& metrics, std::optional<size_t> max_body_bytes = {}) {
    ApiOptions api_options;
    api_options.version = "test";
    api_options.rate_limit = 0;
    if (max_body_bytes) api_options.max_body_bytes = *max_body_bytes;
    api_options.auth_failure_rate = 0.01;
    api_options.auth_failure_burst = 2;
    api_options.auth_failure_hold = std::chrono::milliseconds(200);
    api_ = std::make_unique<Api>(service_.get(), store_.get(), &events_, &metrics, api_options);
    Serve();
  }
  // Sends blocks of 1 MiB until `limit` bytes went out or the peer refused more (closed or reset); returns how many
  // bytes were sent. Blocks while the peer keeps the connection open without reading: callers use a connection the
  // daemon is closing.
  static size_t SendUntilRefused(int fd, size_t limit) {
    const std::string block(1 << 20, ' ');
    size_t sent = 0;
    while (sent < limit) {
      const ssize_t n = send(fd, block.data(), block.size(), MSG_NOSIGNAL);
      if (n <= 0) break;
      sent += static_cast<size_t>(n);
    }
    return sent;
  }
  // Whether the connection ends (EOF or reset) within 3 s, after whatever data was still to come.
  static bool Closed(int fd) {
    char buf[4096];
    for (;;) {
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 3000) <= 0) return false;
      if (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) <= 0) return true;
    }
  }
  std::string Auth(const std::string& token) { return "Authorization: Bearer " + token + "\r\n"; }
  static bool WaitFor(const std::function<bool()>& done) {
    for (int i = 0; i < 100; ++i) {
      if (done()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return done();
  }
  static size_t Count(const std::string& text, const std::string& what) {
    size_t n = 0;
    for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
    return n;
  }

  std::string dir_;
  std::shared_ptr<backend::SharedFake> kernel_;
  std::unique_ptr<store::Store> store_;
  service::Metrics metrics_;
  service::EventBus events_;
  std::unique_ptr<service::Service> service_;
  std::unique_ptr<Api> api_;
  std::unique_ptr<HttpServer> server_;
  std::string admin_, reader_;
  int port_ = 0;
  std::function<void()> commit_hook_;  // on the writer's thread, before each kernel commit
};

HttpRequest Head(const std::string& method, const std::string& path, std::multimap<std::string, std::string> headers) {
  HttpRequest r;
  r.method = method;
  r.path = path;
  r.headers = std::move(headers);
  r.remote = "test";
  return r;
}

// ---- Api::Preflight: the answer from the head alone ----

TEST_F(ServerTest, PreflightRefusesFromTheHeadAlone) {
  const std::string rules = "/v1/ipv4/tables/filter/chains/INPUT/rules";
  Api::Preflighted p = api_->Preflight(Head("POST", rules, {{"transfer-encoding", "chunked"}}));
  ASSERT_TRUE(p.response);
  EXPECT_EQ(p.response->status, 401);
  p = api_->Preflight(Head("POST", rules, {{"authorization", "Bearer " + reader_}, {"content-length", "10"}}));
  ASSERT_TRUE(p.response);
  EXPECT_EQ(p.response->status, 403);
  p = api_->Preflight(
      Head("POST", rules,
           {{"authorization", "Bearer " + admin_}, {"content-length", "4097"}, {"content-type", "application/json"}}));
  ASSERT_TRUE(p.response);
  EXPECT_EQ(p.response->status, 413);
  EXPECT_THAT(p.response->body, HasSubstr("the body has 4097 bytes; the limit is 4096"));
  p = api_->Preflight(Head(
      "POST", rules, {{"authorization", "Bearer " + admin_}, {"content-length", "5"}, {"content-type", "text/x"}}));
  ASSERT_TRUE(p.response);
  EXPECT_EQ(p.response->status, 415);
  p = api_->Preflight(Head("PATCH", rules, {{"authorization", "Bearer " + admin_}}));
  ASSERT_TRUE(p.response);
  EXPECT_EQ(p.response->status, 405);
  p = api_->Preflight(Head("OPTIONS", rules, {}));
  ASSERT_TRUE(p.response);
  EXPECT_EQ(p.response->status, 204);
  // Refusals are counted like any answer.
  EXPECT_THAT(metrics_.Render(), HasSubstr("iptkitd_http_requests_total{method=\"POST\",route=\"/v1/{family}/tables/"
                                           "{table}/chains/{chain}/rules\",code=\"401\"} 1"));
}

TEST_F(ServerTest, PreflightAdmitsWithThePrincipalAndTheBodyLimit) {
  const std::string rules = "/v1/ipv4/tables/filter/chains/INPUT/rules";
  Api::Preflighted p = api_->Preflight(Head("POST", rules,
                                            {{"authorization", "Bearer " + admin_},
                                             {"transfer-encoding", "chunked"},
                                             {"content-type", "application/json"},
                                             {"x-request-id", "pf-1"}}));
  ASSERT_FALSE(p.response);
  EXPECT_EQ(p.admission.principal.name, "token:admin");
  EXPECT_EQ(p.admission.max_body_bytes, 4096u);
  EXPECT_EQ(p.admission.request_id, "pf-1");
  // A GET's body is not read.
  p = api_->Preflight(Head("GET", "/v1/version", {{"authorization", "Bearer " + admin_}, {"content-length", "9"}}));
  ASSERT_FALSE(p.response);
  EXPECT_EQ(p.admission.max_body_bytes, 0u);

  // Handle serves as the admitted principal without authenticating again: the token is revoked meanwhile.
  p = api_->Preflight(
      Head("POST", rules,
           {{"authorization", "Bearer " + admin_}, {"content-type", "application/json"}, {"content-length", "30"}}));
  ASSERT_FALSE(p.response);
  ASSERT_TRUE(store_->RevokeToken("admin", 1).ok());
  HttpRequest full = Head("POST", rules, {{"content-type", "application/json"}});
  full.body = R"({"spec": "-s 10.9.9.9 -j DROP"})";
  HttpResponse r = api_->Handle(full, p.admission);
  EXPECT_EQ(r.status, 200) << r.body;
  Result<store::AuditPage> audit = store_->QueryAudit({});
  ASSERT_TRUE(audit.ok());
  ASSERT_FALSE(audit->entries.empty());
  EXPECT_EQ(audit->entries.front().principal, "token:admin");
}

// ---- The server ----

TEST_F(ServerTest, PipelinedRequestsAreAnsweredInOrder) {
  Serve();
  int fd = Connect();
  const std::string get = "GET /v1/version HTTP/1.1\r\nHost: x\r\n" + Auth(admin_);
  Send(fd, get + "X-Request-Id: one\r\n\r\n" + get + "X-Request-Id: two\r\n\r\n" +
               "POST /v1/ipv4/tables/filter/chains/INPUT/rules HTTP/1.1\r\nHost: x\r\n" + Auth(admin_) +
               "Content-Type: application/json\r\nContent-Length: 30\r\nX-Request-Id: three\r\n\r\n"
               "{\"spec\":\"-s 10.0.0.1 -j DROP\"}" +
               get + "X-Request-Id: four\r\nConnection: close\r\n\r\n");
  const std::string got = Receive(fd);
  close(fd);
  EXPECT_EQ(Count(got, "HTTP/1.1 200 OK\r\n"), 4u) << got;
  const size_t one = got.find("X-Request-Id: one"), two = got.find("X-Request-Id: two"),
               three = got.find("X-Request-Id: three"), four = got.find("X-Request-Id: four");
  ASSERT_NE(four, std::string::npos) << got;
  EXPECT_LT(one, two);
  EXPECT_LT(two, three);
  EXPECT_LT(three, four);
  EXPECT_THAT(got, HasSubstr("Connection: close"));
}

// Rule changes are run by the event loop and wait for the writer without holding a worker: with one worker and the
// writer held in a commit, two POSTs wait for their answers while a GET on a third connection is served; then both
// POSTs are answered, the one whose client hung up meanwhile is dropped, and the connections serve on.
TEST_F(ServerTest, RuleChangesWaitForTheWriterWithoutHoldingAWorker) {
  std::mutex mu;
  std::condition_variable cv;
  bool held = false, released = false;
  commit_hook_ = [&] {
    std::unique_lock<std::mutex> lock(mu);
    if (released) return;
    held = true;
    cv.notify_all();
    cv.wait(lock, [&] { return released; });
  };
  HttpServerOptions options;
  options.workers = 1;
  Serve(options);
  auto post = [&](const std::string& spec, const std::string& id) {
    const std::string body = "{\"spec\":\"" + spec + "\"}";
    return "POST /v1/ipv4/tables/filter/chains/INPUT/rules HTTP/1.1\r\nHost: x\r\n" + Auth(admin_) +
           "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
           "\r\nX-Request-Id: " + id + "\r\n\r\n" + body;
  };
  const int a = Connect();
  Send(a, post("-s 10.7.0.1 -j DROP", "post-a"));
  {
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(10), [&] { return held; }));
  }
  const int gone = Connect();
  Send(gone, post("-s 10.7.0.2 -j DROP", "post-gone"));
  const int c = Connect();
  Send(c, post("-s 10.7.0.3 -j DROP", "post-c"));
  // The only worker is free: a read on another connection is answered while the POSTs wait.
  const int b = Connect();
  Send(b, "GET /v1/version HTTP/1.1\r\nHost: x\r\n" + Auth(admin_) + "Connection: close\r\n\r\n");
  const std::string version = Receive(b, std::chrono::milliseconds(5000));
  close(b);
  EXPECT_THAT(version, StartsWith("HTTP/1.1 200 OK\r\n"));
  EXPECT_THAT(version, HasSubstr("\"version\""));
  close(gone);
  {
    std::lock_guard<std::mutex> lock(mu);
    released = true;
  }
  cv.notify_all();
  for (const auto& [fd, id] : {std::pair{a, "post-a"}, std::pair{c, "post-c"}}) {
    pollfd p{fd, POLLIN, 0};
    ASSERT_EQ(poll(&p, 1, 10000), 1) << id;
    std::string got = Receive(fd, std::chrono::milliseconds(200));
    EXPECT_THAT(got, StartsWith("HTTP/1.1 200 OK\r\n")) << got;
    EXPECT_THAT(got, HasSubstr(std::string("X-Request-Id: ") + id)) << got;
    EXPECT_THAT(got, HasSubstr("\"batch_requests\"")) << got;
  }
  // The connections serve on: the next change on `a` (answered in turn), then a read.
  Send(a, post("-s 10.7.0.4 -j DROP", "post-a2") + "GET /v1/version HTTP/1.1\r\nHost: x\r\n" + Auth(admin_) +
              "X-Request-Id: get-a\r\nConnection: close\r\n\r\n");
  const std::string next = Receive(a, std::chrono::milliseconds(5000));
  close(a);
  close(c);
  EXPECT_EQ(Count(next, "HTTP/1.1 200 OK\r\n"), 2u) << next;
  EXPECT_LT(next.find("X-Request-Id: post-a2"), next.find("X-Request-Id: get-a")) << next;
  // The change whose client hung up was committed all the same.
  Result<Ruleset> listed = service_->List(Family::kIPv4, "filter");
  ASSERT_TRUE(listed.ok()) << listed.status().ToString();
  EXPECT_EQ(listed->tables.at(0).FindChain("INPUT")->rules.size(), 4u);
  // Deferred answers are counted where they are made (the one of the client that hung up too, unless the loop saw
  // the hang-up first and dropped it).
  const std::string series =
      "iptkitd_http_requests_total{method=\"POST\",route=\"/v1/{family}/tables/{table}/chains/{chain}/rules\","
      "code=\"200\"} ";
  const std::string rendered = metrics_.Render();
  const size_t at = rendered.find(series);
  ASSERT_NE(at, std::string::npos) << rendered;
  const int counted = std::atoi(rendered.c_str() + at + series.size());
  EXPECT_GE(counted, 3);
  EXPECT_LE(counted, 4);
  commit_hook_ = nullptr;  // it refers to this test's locals
}

TEST_F(ServerTest, ExpectContinueOnlyOnceAdmitted) {
  Serve();
  const std::string rules = "POST /v1/ipv4/tables/filter/chains/INPUT/rules HTTP/1.1\r\nHost: x\r\n";
  const std::string body = "{\"spec\":\"-s 10.0.0.2 -j DROP\"}";
  // Admitted: 100 Continue, then the body, then the answer on the same connection.
  int fd = Connect();
  Send(fd, rules + Auth(admin_) + "Content-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: " +
               std::to_string(body.size()) + "\r\n\r\n");
  EXPECT_EQ(Receive(fd, std::chrono::milliseconds(500)), "HTTP/1.1 100 Continue\r\n\r\n");
  Send(fd, body);
  std::string got = Receive(fd, std::chrono::milliseconds(500));
  EXPECT_THAT(got, StartsWith("HTTP/1.1 200 OK\r\n"));
  EXPECT_THAT(got, Not(HasSubstr("Connection: close")));
  close(fd);
  // Refused: the final answer at once, no 100, and the connection closes (the body is not wanted).
  fd = Connect();
  Send(fd, rules + "Content-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 29\r\n\r\n");
  got = Receive(fd, std::chrono::milliseconds(500));
  EXPECT_THAT(got, StartsWith("HTTP/1.1 401 Unauthorized\r\n"));
  EXPECT_THAT(got, HasSubstr("Connection: close\r\n"));
  close(fd);
}

TEST_F(ServerTest, ChunkedBodies) {
  Serve();
  const std::string rules = "POST /v1/ipv4/tables/filter/chains/INPUT/rules HTTP/1.1\r\nHost: x\r\n" + Auth(admin_) +
                            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
  int fd = Connect();
  Send(fd, rules + "a\r\n{\"spec\":\"-\r\n14;ext=1\r\ns 10.0.0.3 -j DROP\"}\r\n0\r\nX-Trailer: 1\r\n\r\n");
  std::string got = Receive(fd, std::chrono::milliseconds(500));
  EXPECT_THAT(got, StartsWith("HTTP/1.1 200 OK\r\n"));
  EXPECT_THAT(got, HasSubstr("-A INPUT -s 10.0.0.3/32 -j DROP"));
  // Beyond max_body_bytes (4096): 413 at the chunk that passes it, and the connection closes.
  Send(fd, rules + "800\r\n" + std::string(0x800, ' ') + "\r\n" + "801\r\n");
  got = Receive(fd, std::chrono::milliseconds(500));
  EXPECT_THAT(got, StartsWith("HTTP/1.1 413 Content Too Large\r\n"));
  EXPECT_THAT(got, HasSubstr("\"code\":\"payload_too_large\""));
  EXPECT_THAT(got, HasSubstr("at least 4097 bytes; the limit is 4096"));
  EXPECT_TRUE(Closed(fd));
  close(fd);
  // A malformed chunk size.
  fd = Connect();
  Send(fd, rules + "zz\r\n{}\r\n0\r\n\r\n");
  got = Receive(fd, std::chrono::milliseconds(500));
  EXPECT_THAT(got, StartsWith("HTTP/1.1 400 Bad Request\r\n"));
  EXPECT_THAT(got, HasSubstr("malformed chunk size"));
  close(fd);
}

TEST_F(ServerTest, UnauthenticatedBodiesAreNotRead) {
  Serve();
  int fd = Connect();
  Send(fd,
       "POST /v1/transactions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\n"
       "\r\n" +
           std::string(1000, ' '));
  const std::string got = Receive(fd, std::chrono::milliseconds(500));
  EXPECT_THAT(got, StartsWith("HTTP/1.1 401 Unauthorized\r\n"));
  EXPECT_THAT(got, HasSubstr("Connection: close\r\n"));
  // The daemon shut its side; it discards a little of what still comes, then closes.
  EXPECT_LT(SendUntilRefused(fd, size_t{100} << 20), size_t{32} << 20);
  close(fd);
}

// A client address past its budget of failed authentications: its failing requests (inline rule changes, requests
// for a worker, and one whose body is still on the way) are answered 429 after the hold, nothing more of the
// connection is read (a pipelined request is never answered), and the connection is closed; a valid token from the
// same address is served as usual.
TEST_F(ServerTest, FailedAuthenticationsPastTheBudgetAreHeldThenClosed) {
  service::Metrics metrics;
  ServeWithATightAuthFailureBudget(metrics, 4096);
  const std::string body = R"({"spec":"-j DROP"})";
  const std::string post =
      "POST /v1/ipv4/tables/filter/chains/INPUT/rules HTTP/1.1\r\nHost: x\r\n" + Auth("iptk_notatoken") +
      "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  int fd = Connect();
  for (int i = 0; i < 2; ++i) {
    Send(fd, post);
    const std::string got = Receive(fd);
    EXPECT_THAT(got, StartsWith("HTTP/1.1 401 Unauthorized\r\n"));
    EXPECT_THAT(got, Not(HasSubstr("Connection: close\r\n")));
  }
  // The third, with a valid request pipelined behind it.
  Send(fd, post + "GET /v1/version HTTP/1.1\r\nHost: x\r\n" + Auth(admin_) + "\r\n");
  std::string got = Receive(fd, std::chrono::milliseconds(5000));
  EXPECT_THAT(got, StartsWith("HTTP/1.1 429 Too Many Requests\r\n"));
  EXPECT_THAT(got, HasSubstr("Retry-After: "));
  EXPECT_THAT(got, HasSubstr("Connection: close\r\n"));
  EXPECT_THAT(got, HasSubstr("auth_failures_exceeded"));
  EXPECT_EQ(got.find("HTTP/1.1", 1), std::string::npos) << got;  // the pipelined request was not read
  close(fd);
  // A request for a worker (a read), without a token.
  fd = Connect();
  Send(fd, "GET /v1/ipv4 HTTP/1.1\r\nHost: x\r\n\r\n");
  got = Receive(fd, std::chrono::milliseconds(5000));
  EXPECT_THAT(got, StartsWith("HTTP/1.1 429 Too Many Requests\r\n"));
  EXPECT_TRUE(Closed(fd));
  close(fd);
  // A body still on the way is not read: the connection closes after the held answer.
  fd = Connect();
  Send(fd, "POST /v1/transactions HTTP/1.1\r\nHost: x\r\n" + Auth("iptk_notatoken") +
               "Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n" + std::string(1000, ' '));
  EXPECT_LT(SendUntilRefused(fd, size_t{100} << 20), size_t{32} << 20);
  close(fd);
  // A valid token from the same address.
  fd = Connect();
  Send(fd, "GET /v1/version HTTP/1.1\r\nHost: x\r\n" + Auth(admin_) + "\r\n");
  EXPECT_THAT(Receive(fd, std::chrono::milliseconds(500)), StartsWith("HTTP/1.1 200 OK\r\n"));
  close(fd);
}

// Requests answered before authentication spend the same budget: without a token, wrong paths (404) and malformed
// request lines (400, refused by the HTTP layer, on a loop or on a worker that read them pipelined) are answered
// 429 after the hold past it, and the connection closed; another address still gets its 404 at once, and a valid
// token to a wrong path from the held address is answered 404 on its kept-alive connection.
TEST_F(ServerTest, AnswersBeforeAuthenticationPastTheBudgetAreHeld) {
  service::Metrics metrics;
  ServeWithATightAuthFailureBudget(metrics);
  const std::string nowhere = "GET /v1/nowhere HTTP/1.1\r\nHost: x\r\n\r\n";
  int fd = Connect("127.0.0.1");
  for (int i = 0; i < 2; ++i) {
    Send(fd, nowhere);
    const std::string got = Receive(fd);
    EXPECT_THAT(got, StartsWith("HTTP/1.1 404 Not Found\r\n"));
    EXPECT_THAT(got, Not(HasSubstr("Connection: close\r\n")));
  }
  Send(fd, nowhere);
  std::string got = Receive(fd, std::chrono::milliseconds(5000));
  EXPECT_THAT(got, StartsWith("HTTP/1.1 429 Too Many Requests\r\n"));
  EXPECT_THAT(got, HasSubstr("auth_failures_exceeded"));
  EXPECT_THAT(got, HasSubstr("Connection: close\r\n"));
  EXPECT_TRUE(Closed(fd));
  close(fd);
  // A malformed request line from the held address: held too (refused by the loop).
  fd = Connect("127.0.0.1");
  Send(fd, "GARBAGE\r\n\r\n");
  got = Receive(fd, std::chrono::milliseconds(5000));
  EXPECT_THAT(got, StartsWith("HTTP/1.1 429 Too Many Requests\r\n"));
  EXPECT_THAT(got, HasSubstr("HTTP 400"));
  close(fd);
  // A valid token to a wrong path is never held, and its connection stays open; a malformed line pipelined behind
  // it (refused by the worker that read it) is held.
  fd = Connect("127.0.0.1");
  Send(fd, "GET /v1/nowhere HTTP/1.1\r\nHost: x\r\n" + Auth(admin_) + "\r\n");
  got = Receive(fd, std::chrono::milliseconds(500));
  EXPECT_THAT(got, StartsWith("HTTP/1.1 404 Not Found\r\n"));
  EXPECT_THAT(got, Not(HasSubstr("Connection: close\r\n")));
  Send(fd, "GET /v1/version HTTP/1.1\r\nHost: x\r\n" + Auth(admin_) + "\r\nGARBAGE\r\n\r\n");
  got = Receive(fd, std::chrono::milliseconds(5000));
  EXPECT_THAT(got, StartsWith("HTTP/1.1 200 OK\r\n"));
  const size_t second = got.find("HTTP/1.1", 1);
  ASSERT_NE(second, std::string::npos) << got;
  EXPECT_THAT(got.substr(second), StartsWith("HTTP/1.1 429 Too Many Requests\r\n"));
  close(fd);
  // Another address: its 404 at once.
  fd = Connect("127.0.0.2");
  Send(fd, nowhere);
  EXPECT_THAT(Receive(fd, std::chrono::milliseconds(500)), StartsWith("HTTP/1.1 404 Not Found\r\n"));
  close(fd);
  // Malformed request lines spend a fresh address's budget: two 400s, then its next wrong path is held.
  for (int i = 0; i < 2; ++i) {
    fd = Connect("127.0.0.3");
    Send(fd, "GARBAGE\r\n\r\n");
    EXPECT_THAT(Receive(fd), StartsWith("HTTP/1.1 400 Bad Request\r\n"));
    close(fd);
  }
  fd = Connect("127.0.0.3");
  Send(fd, nowhere);
  EXPECT_THAT(Receive(fd, std::chrono::milliseconds(5000)), StartsWith("HTTP/1.1 429 Too Many Requests\r\n"));
  close(fd);
}

TEST_F(ServerTest, HeadLimitsAndTimeouts) {
  HttpServerOptions options;
  options.max_header_bytes = 2048;
  options.header_timeout = std::chrono::milliseconds(500);
  Serve(options);
  int fd = Connect();
  Send(fd, "GET /v1/version HTTP/1.1\r\nX-Big: " + std::string(1500, 'x') + "\r\nX-More: " + std::string(900, 'y'));
  std::string got = Receive(fd, std::chrono::milliseconds(500));
  EXPECT_THAT(got, StartsWith("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
  EXPECT_THAT(got, HasSubstr("\"code\":\"header_fields_too_large\""));
  EXPECT_THAT(got, HasSubstr("X-Request-Id: r-"));
  close(fd);
  fd = Connect();
  Send(fd, "GET /" + std::string(1100, 'p'));
  EXPECT_THAT(Receive(fd, std::chrono::milliseconds(500)), StartsWith("HTTP/1.1 414 URI Too Long\r\n"));
  close(fd);
  // A head that does not complete within header_timeout.
  fd = Connect();
  Send(fd, "GET /v1/version HTTP/1.1\r\n");
  got = Receive(fd, std::chrono::milliseconds(2000));
  EXPECT_THAT(got, StartsWith("HTTP/1.1 408 Request Timeout\r\n"));
  EXPECT_THAT(got, HasSubstr("did not arrive within 500 ms"));
  close(fd);
  EXPECT_THAT(metrics_.Render(), HasSubstr("iptkitd_http_limit_hits_total{limit=\"header_timeout\"} 1"));
}

TEST_F(ServerTest, HeadHttp10AndUnknownMethods) {
  Serve();
  int fd = Connect();
  Send(fd, "HEAD /v1/version HTTP/1.1\r\nHost: x\r\n" + Auth(admin_) + "\r\n");
  std::string got = Receive(fd, std::chrono::milliseconds(500));
  EXPECT_THAT(got, StartsWith("HTTP/1.1 200 OK\r\n"));
  EXPECT_THAT(got, HasSubstr("Content-Length: "));
  EXPECT_TRUE(got.ends_with("\r\n\r\n")) << got;  // no body
  // HTTP/1.0 without keep-alive: answered, then closed.
  Send(fd, "GET /healthz HTTP/1.0\r\n\r\n");
  got = Receive(fd, std::chrono::milliseconds(500));
  EXPECT_THAT(got, StartsWith("HTTP/1.1 200 OK\r\n"));
  EXPECT_THAT(got, HasSubstr("Connection: close\r\n"));
  EXPECT_TRUE(Closed(fd));
  close(fd);
  fd = Connect();
  Send(fd, "TRACE /v1/version HTTP/1.1\r\nX-Request-Id: tr-1\r\n\r\n");
  got = Receive(fd, std::chrono::milliseconds(500));
  EXPECT_THAT(got, StartsWith("HTTP/1.1 400 Bad Request\r\n"));
  EXPECT_THAT(got, HasSubstr("X-Request-Id: tr-1\r\n"));
  EXPECT_THAT(got, HasSubstr("\"request_id\":\"tr-1\""));
  close(fd);
}

// A stream whose client stops reading is cut after send_timeout without progress, with the reason, and the notice
// gets a send_timeout of its own to be read.
TEST_F(ServerTest, AStreamNotReadForSendTimeoutIsCutWithTheReason) {
  HttpServerOptions options;
  options.send_timeout = std::chrono::milliseconds(1000);
  Serve(options);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int small = 4096;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(static_cast<uint16_t>(port_));
  inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof(to)), 0);
  Send(fd, "GET /v1/events HTTP/1.1\r\n" + Auth(admin_) + "\r\n");
  ASSERT_TRUE(WaitFor([&] { return events_.subscribers() == 1; }));
  // 600 kB of events: more than the socket buffers hold, less than event_buffer_bytes (1 MiB).
  for (int i = 0; i < 10; ++i) events_.Publish("big", "\"" + std::string(60000, 'x') + "\"", 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  EXPECT_EQ(events_.subscribers(), 0u);
  const std::string got = Receive(fd);
  close(fd);
  EXPECT_THAT(got, StartsWith("HTTP/1.1 200 OK\r\n"));
  EXPECT_THAT(got, HasSubstr(": disconnected: this stream was too slow: it accepted no data for 1 s; reconnect with "
                             "Last-Event-ID: "));
  EXPECT_TRUE(got.ends_with("\r\n0\r\n\r\n")) << got.substr(got.size() > 300 ? got.size() - 300 : 0);
  EXPECT_THAT(metrics_.Render(), HasSubstr("iptkitd_http_limit_hits_total{limit=\"send_timeout\"} 1"));
}

TEST_F(ServerTest, StopIsPromptWithIdleSlowAndStreamingClients) {
  Serve();
  std::vector<int> fds;
  for (int i = 0; i < 20; ++i) fds.push_back(Connect());  // idle
  for (int i = 0; i < 20; ++i) {                          // slow heads
    fds.push_back(Connect());
    Send(fds.back(), "GET /v1/version HTTP/1.1\r\nX-A: ");
  }
  for (int i = 0; i < 20; ++i) {  // event streams
    fds.push_back(Connect());
    Send(fds.back(), "GET /v1/events HTTP/1.1\r\n" + Auth(admin_) + "\r\n");
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(events_.subscribers(), 20u);
  const auto t0 = std::chrono::steady_clock::now();
  server_->Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(1000));
  EXPECT_EQ(events_.subscribers(), 0u);
  for (int fd : fds) {
    EXPECT_TRUE(Closed(fd));
    close(fd);
  }
}

}  // namespace
}  // namespace iptkit::rest
