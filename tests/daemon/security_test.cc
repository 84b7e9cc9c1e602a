// Authentication and authorization of iptkitd end to end: bearer tokens and their scopes on TCP, SO_PEERCRED on
// the unix socket (also from other uids), TLS, and the refusal to serve plain HTTP beyond loopback.
#include <grp.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "tests/daemon/daemon_fixture.h"
#include "tests/integration/test_util.h"

namespace iptkit::daemontest {
namespace {

using integration::Variant;

const char* kDocument = R"({"chains": [{"name": "X-IN", "rules": [{"spec": "-j RETURN"}]}]})";

TEST(DaemonSecurity, TokensAndScopes) {
  IPTKIT_NEW_NETNS(ns);
  ASSERT_OK_AND_ASSIGN(auto daemon, Daemon::Start(*ns));
  ASSERT_OK_AND_ASSIGN(std::string reader_token, daemon->CreateToken("reader", {"read"}));
  ASSERT_OK_AND_ASSIGN(std::string writer_token, daemon->CreateToken("writer", {"write"}));
  ASSERT_OK_AND_ASSIGN(std::string nat_token, daemon->CreateToken("natonly", {"write", "read", "table:nat"}));
  ASSERT_OK_AND_ASSIGN(std::string bans_token, daemon->CreateToken("bans", {"read", "write", "owner:bans"}));
  ASSERT_OK_AND_ASSIGN(std::string ttl_token, daemon->CreateToken("temp", {"read", "write"}, 60));
  ASSERT_OK_AND_ASSIGN(std::string gone_token, daemon->CreateToken("gone", {"read", "write"}));
  HttpClient admin = daemon->Admin();
  const std::string rules = RulesPath("INPUT");
  ASSERT_EQ(admin.Post(rules, R"({"spec": "-i lo -j ACCEPT"})").status, 200);
  const std::string before = SaveText(*ns);
  const std::string before6 = SaveText(*ns, Family::kIPv6);

  // 401: no token, an unknown one, another scheme, a revoked one.
  Reply none = daemon->Client("").Get("/v1/ipv4");
  ExpectError(none, 401, "unauthenticated");
  EXPECT_EQ(none.Header("WWW-Authenticate"), "Bearer realm=\"iptkitd\"");
  ExpectError(daemon->Client("iptk_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa").Get("/v1/ipv4"), 401, "unauthenticated");
  ExpectError(
      daemon->Client("").Send(Request{"GET", "/v1/ipv4", "", "", {{"Authorization", "Basic YWRtaW46YWRtaW4="}}}), 401,
      "unauthenticated");
  ExpectError(daemon->Client("").Post(rules, R"({"spec": "-j DROP"})"), 401, "unauthenticated");
  HttpClient gone = daemon->Client(gone_token);
  ASSERT_EQ(gone.Get("/v1/ipv4").status, 200);
  ASSERT_STATUS_OK(daemon->RevokeToken("gone"));
  ExpectError(gone.Get("/v1/ipv4"), 401, "unauthenticated");
  ExpectError(gone.Post(rules, R"({"spec": "-j DROP"})"), 401, "unauthenticated");

  // Read-only: reads work, every change is refused and nothing changes.
  HttpClient reader = daemon->Client(reader_token);
  EXPECT_EQ(reader.Get("/v1/ipv4").status, 200);
  EXPECT_EQ(reader.Get("/v1/audit").status, 200);
  ExpectError(reader.Post(rules, R"({"spec": "-s 192.0.2.1 -j DROP"})"), 403, "permission_denied");
  ExpectError(reader.Post("/v1/transactions", R"({"ops": [{"flush": {}}]})"), 403, "permission_denied");
  ExpectError(reader.Put("/v1/owners/x", kDocument), 403, "permission_denied");
  ExpectError(reader.Put("/v1/ipv4/tables/filter/chains/INPUT", R"({"policy": "DROP"})"), 403, "permission_denied");
  ExpectError(reader.Delete(rules + "/1"), 403, "permission_denied");
  // Write without read: no reads.
  ExpectError(daemon->Client(writer_token).Get("/v1/ipv4"), 403, "permission_denied");
  EXPECT_EQ(SaveText(*ns), before);

  // table:nat: the filter table is out of scope, also as part of a transaction.
  HttpClient nat = daemon->Client(nat_token);
  ExpectError(nat.Post(rules, R"({"spec": "-s 192.0.2.1 -j DROP"})"), 403, "permission_denied");
  ExpectError(nat.Post("/v1/transactions", R"({"ops": [
      {"append": {"table": "nat", "chain": "POSTROUTING", "rule": {"spec": "-o lo -j MASQUERADE"}}},
      {"append": {"chain": "INPUT", "rule": {"spec": "-j DROP"}}}]})"),
              403, "permission_denied");
  EXPECT_EQ(SaveText(*ns), before);
  Reply nat_ok = nat.Post(RulesPath("POSTROUTING", Family::kIPv4, "nat"), R"({"spec": "-o lo -j MASQUERADE"})");
  ASSERT_EQ(nat_ok.status, 200) << nat_ok.Describe();
  EXPECT_EQ(SaveText(*ns, Family::kIPv4, Variant::kNft, "nat"),
            "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
            "-A POSTROUTING -o lo -j MASQUERADE\nCOMMIT\n");
  EXPECT_EQ(SaveText(*ns, Family::kIPv4, Variant::kNft, "filter"), before);

  // owner:bans: only the owner's own state.
  HttpClient bans = daemon->Client(bans_token);
  ExpectError(bans.Post(rules, R"({"spec": "-s 203.0.113.5 -j DROP"})"), 403, "permission_denied");
  ExpectError(bans.Post(rules, R"({"spec": "-s 203.0.113.5 -j DROP", "owner": "other"})"), 403, "permission_denied");
  ExpectError(bans.Put("/v1/owners/other", kDocument), 403, "permission_denied");
  EXPECT_EQ(SaveText(*ns, Family::kIPv4, Variant::kNft, "filter"), before);
  Reply owned = bans.Post(rules, R"({"spec": "-s 203.0.113.5 -j DROP", "owner": "bans"})");
  ASSERT_EQ(owned.status, 200) << owned.Describe();
  ASSERT_EQ(owned.json["managed"].size(), 1u) << owned.body;
  EXPECT_EQ(owned.json["managed"][0]["owner"], "bans");
  // A ttl without an owner is the scoped owner's.
  Reply owned_ttl = bans.Post(rules, R"({"spec": "-s 203.0.113.6 -j DROP", "ttl": 300})");
  ASSERT_EQ(owned_ttl.status, 200) << owned_ttl.Describe();
  EXPECT_EQ(owned_ttl.json["managed"][0]["owner"], "bans");
  std::vector<std::string> tagged = TaggedLines(SaveText(*ns), "bans");
  ASSERT_EQ(tagged.size(), 2u);
  EXPECT_TRUE(tagged[0].starts_with("-A INPUT -s 203.0.113.5/32 -m comment --comment \"iptkit:bans:")) << tagged[0];
  EXPECT_TRUE(tagged[1].starts_with("-A INPUT -s 203.0.113.6/32 -m comment --comment \"iptkit:bans:")) << tagged[1];

  // --ttl-max 60: adds need a ttl of at most 60 s.
  HttpClient temp = daemon->Client(ttl_token);
  const std::string mid = SaveText(*ns);
  ExpectError(temp.Post(rules, R"({"spec": "-s 198.51.100.1 -j DROP", "ttl": 120})"), 403, "permission_denied");
  ExpectError(temp.Post(rules, R"({"spec": "-s 198.51.100.1 -j DROP"})"), 403, "permission_denied");
  ExpectError(temp.Post(rules, R"({"spec": "-s 198.51.100.1 -j DROP", "owner": "temp"})"), 403, "permission_denied");
  ExpectError(temp.Post("/v1/transactions", R"({"ops": [{"append": {"chain": "INPUT", "rule":
      {"spec": "-s 198.51.100.1 -j DROP", "ttl": 61}}}]})"),
              403, "permission_denied");
  EXPECT_EQ(SaveText(*ns), mid);
  Reply short_ttl = temp.Post(rules, R"({"spec": "-s 198.51.100.1 -j DROP", "ttl": 30})");
  ASSERT_EQ(short_ttl.status, 200) << short_ttl.Describe();
  ASSERT_EQ(short_ttl.json["managed"].size(), 1u) << short_ttl.body;
  EXPECT_EQ(short_ttl.json["managed"][0]["owner"], "iptkitd");
  EXPECT_LE(short_ttl.json["managed"][0]["ttl_remaining"].get<int>(), 30);
  EXPECT_EQ(TaggedLines(SaveText(*ns), "iptkitd").size(), 1u);

  // Tokens never go in the URL.
  ExpectError(admin.Get("/v1/ipv4?token=" + daemon->admin_token()), 400, "invalid_argument");
  ExpectError(admin.Get("/v1/audit?access_token=x"), 400, "invalid_argument");
  ExpectError(admin.Post(rules + "?api_key=x", R"({"spec": "-j DROP"})"), 400, "invalid_argument");
  // Only in the URL (no header): refused with 400 too (docs/daemon.md "Security").
  Reply url_only = daemon->Client("").Get("/v1/ipv4?token=" + daemon->admin_token());
  ExpectError(url_only, 400, "invalid_argument");
  EXPECT_NE(url_only.json["error"]["message"].get<std::string>().find("Authorization header"), std::string::npos)
      << url_only.body;
  EXPECT_EQ(SaveText(*ns, Family::kIPv6), before6);

  Reply metrics = admin.Get("/metrics");
  EXPECT_GE(MetricValue(metrics.body, "iptkitd_http_auth_failures_total", {{"reason", "scope"}}).value_or(0), 15.0)
      << metrics.body;
  EXPECT_GE(MetricValue(metrics.body, "iptkitd_http_auth_failures_total", {{"reason", "token"}}).value_or(0), 6.0);
}

TEST(DaemonSecurity, RateLimitPerPrincipal) {
  IPTKIT_NEW_NETNS(ns);
  ASSERT_OK_AND_ASSIGN(auto daemon, Daemon::Start(*ns, {.args = {"--rate-limit", "1", "--rate-burst", "3"}}));
  ASSERT_OK_AND_ASSIGN(std::string other_token, daemon->CreateToken("other", {"read"}));
  HttpClient admin = daemon->Admin();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(admin.Get("/v1/version").status, 200) << i;
  Reply limited = admin.Get("/v1/version");
  ExpectError(limited, 429, "rate_limited");
  EXPECT_FALSE(limited.Header("Retry-After").empty());
  // Per principal: another token still gets through; /healthz is not limited.
  EXPECT_EQ(daemon->Client(other_token).Get("/v1/version").status, 200);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(daemon->Client("").Get("/healthz").status, 200);
}

// The HTTP status iptkitd gives `uid` (in a forked child with that uid/gid and no groups) for one request on the
// unix socket; -errno when the child could not connect.
int StatusAsUid(const std::string& socket_path, uid_t uid, const std::string& method, const std::string& path,
                const std::string& body = "") {
  std::string request = method + " " + path + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n";
  if (!body.empty()) request += "Content-Type: application/json\r\n";
  if (method != "GET") request += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  request += "\r\n" + body;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof(addr.sun_path)) return -ENAMETOOLONG;
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
  int out[2];
  if (pipe(out) != 0) return -errno;
  pid_t pid = fork();
  if (pid == 0) {
    close(out[0]);
    if (setgroups(0, nullptr) != 0 || setresgid(uid, uid, uid) != 0 || setresuid(uid, uid, uid) != 0) _exit(2);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0) _exit(3);
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      int e = errno;
      (void)!write(out[1], &e, sizeof(e));
      _exit(4);
    }
    size_t sent = 0;
    while (sent < request.size()) {
      ssize_t n = write(fd, request.data() + sent, request.size() - sent);
      if (n <= 0) _exit(5);
      sent += static_cast<size_t>(n);
    }
    char buf[4096];
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0) (void)!write(out[1], buf, static_cast<size_t>(n));
    _exit(0);
  }
  close(out[1]);
  std::string response;
  char buf[4096];
  ssize_t n;
  while ((n = read(out[0], buf, sizeof(buf))) > 0) response.append(buf, static_cast<size_t>(n));
  close(out[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 4 && response.size() == sizeof(int)) {
    int e = 0;
    std::memcpy(&e, response.data(), sizeof(e));
    return -e;
  }
  if (!response.starts_with("HTTP/1.1 ") || response.size() < 12) return -EPROTO;
  return std::stoi(response.substr(9, 3));
}

TEST(DaemonSecurity, UnixSocketAuthorizesPeers) {
  IPTKIT_NEW_NETNS(ns);
  DaemonOptions socket_only;
  socket_only.listen = {};
  ASSERT_OK_AND_ASSIGN(auto daemon, Daemon::Create(*ns, socket_only));
  const std::string sock = daemon->dir() + "/sock";
  auto launch = [&](std::vector<std::string> allow) {
    daemon->options().args = {"--socket", sock, "--socket-mode", "0666"};
    for (const std::string& a : allow) {
      daemon->options().args.push_back("--socket-allow");
      daemon->options().args.push_back(a);
    }
    return daemon->Launch();
  };
  const std::string rules = RulesPath("INPUT");

  // uid:0 (we are root): no token needed.
  ASSERT_STATUS_OK(launch({"uid:0"}));
  ASSERT_EQ(daemon->endpoint(), "unix:" + sock);
  HttpClient root = daemon->Client("");
  Reply version = root.Get("/v1/version");
  ASSERT_EQ(version.status, 200) << version.Describe();
  EXPECT_EQ(version.json["netns"], ns->name());
  Reply added = root.Post(rules, R"({"spec": "-s 192.0.2.1 -j DROP"})");
  ASSERT_EQ(added.status, 200) << added.Describe();
  EXPECT_EQ(SaveText(*ns),
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
            "-A INPUT -s 192.0.2.1/32 -j DROP\nCOMMIT\n");
  Reply audit = root.Get("/v1/audit?limit=1");
  ASSERT_EQ(audit.status, 200) << audit.Describe();
  EXPECT_EQ(audit.json["entries"][0]["principal"], "uid:0");
  struct stat st {};
  ASSERT_EQ(stat(sock.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0666u);
  ASSERT_STATUS_OK(daemon->Stop());
  const std::string state = SaveText(*ns);

  // Only uid 12345 may connect: root is refused.
  ASSERT_STATUS_OK(launch({"uid:12345"}));
  HttpClient refused = daemon->Client("");
  ExpectError(refused.Get("/v1/version"), 403, "permission_denied");
  ExpectError(refused.Post(rules, R"({"spec": "-s 192.0.2.2 -j DROP"})"), 403, "permission_denied");
  EXPECT_EQ(daemon->Client("").Get("/healthz").status, 200);
  ASSERT_STATUS_OK(daemon->Stop());

  // Read-only root.
  ASSERT_STATUS_OK(launch({"uid:0:ro"}));
  HttpClient ro = daemon->Client("");
  EXPECT_EQ(ro.Get("/v1/ipv4").status, 200);
  ExpectError(ro.Post(rules, R"({"spec": "-s 192.0.2.2 -j DROP"})"), 403, "permission_denied");
  ExpectError(ro.Delete(rules + "/1"), 403, "permission_denied");
  EXPECT_EQ(SaveText(*ns), state);
  ASSERT_STATUS_OK(daemon->Stop());

  // Other uids, connecting for real (SO_PEERCRED): 12345 read-only, 23456 not at all.
  ASSERT_EQ(chmod(daemon->dir().c_str(), 0711), 0);
  ASSERT_STATUS_OK(launch({"uid:0", "uid:12345:ro"}));
  EXPECT_EQ(StatusAsUid(sock, 12345, "GET", "/v1/version"), 200);
  EXPECT_EQ(StatusAsUid(sock, 12345, "POST", rules, R"({"spec": "-s 192.0.2.3 -j DROP"})"), 403);
  EXPECT_EQ(StatusAsUid(sock, 23456, "GET", "/v1/version"), 403);
  EXPECT_EQ(StatusAsUid(sock, 23456, "GET", "/healthz"), 200);
  EXPECT_EQ(SaveText(*ns), state);
  ASSERT_STATUS_OK(daemon->Stop());
  // Gone with the daemon.
  EXPECT_NE(access(sock.c_str(), F_OK), 0);
}

TEST(DaemonSecurity, TlsListener) {
  IPTKIT_NEW_NETNS(ns);
  DaemonOptions tls;
  tls.listen = {"https://127.0.0.1:0"};
  ASSERT_OK_AND_ASSIGN(auto daemon, Daemon::Create(*ns, tls));
  const std::string cert = daemon->dir() + "/cert.pem", key = daemon->dir() + "/key.pem";
  CommandResult made =
      integration::RunCommand({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
                               "-addext", "subjectAltName=IP:127.0.0.1", "-days", "1", "-keyout", key, "-out", cert});
  if (made.exit_code == -1) GTEST_SKIP() << "no openssl binary: " << made.err;
  ASSERT_TRUE(made.ok()) << made.Describe();
  daemon->options().args = {"--tls-cert", cert, "--tls-key", key};
  ASSERT_STATUS_OK(daemon->Launch());
  const std::string endpoint = daemon->endpoint();
  ASSERT_TRUE(endpoint.starts_with("https://127.0.0.1:")) << endpoint;

  HttpClient verified(endpoint, daemon->admin_token());
  verified.VerifyWith(cert);
  Reply version = verified.Get("/v1/version");
  ASSERT_EQ(version.status, 200) << version.Describe();
  EXPECT_EQ(version.json["api"], "v1");
  HttpClient unverified(endpoint, daemon->admin_token());
  EXPECT_EQ(unverified.Get("/v1/ipv4").status, 200);
  ExpectError(HttpClient(endpoint).Get("/v1/version"), 401, "unauthenticated");
  Reply added = verified.Post(RulesPath("INPUT"), R"({"spec": "-s 192.0.2.1 -j DROP"})");
  ASSERT_EQ(added.status, 200) << added.Describe();
  EXPECT_NE(SaveText(*ns).find("-A INPUT -s 192.0.2.1/32 -j DROP\n"), std::string::npos);

  // Plain HTTP to the TLS port gets no HTTP answer.
  const std::string plain = "http://" + endpoint.substr(std::string("https://").size());
  Reply refused = HttpClient(plain, daemon->admin_token()).Get("/v1/version");
  EXPECT_EQ(refused.status, 0) << refused.Describe();
  // The daemon still serves TLS afterwards.
  EXPECT_EQ(verified.Get("/v1/version").status, 200);
}

TEST(DaemonSecurity, RefusesPlainHttpBeyondLoopback) {
  IPTKIT_NEW_NETNS(ns);
  char pattern[] = "/tmp/iptkitd-refuse-XXXXXX";
  ASSERT_NE(mkdtemp(pattern), nullptr);
  const std::string dir = pattern;
  struct Case {
    std::vector<std::string> flags;
    std::string names;  // what the message must name
  };
  const std::vector<Case> cases = {
      {{"--listen", "0.0.0.0:0"}, "0.0.0.0:0"},
      {{"--listen", "127.0.0.1:0", "--listen", "0.0.0.0:0"}, "0.0.0.0:0"},
      {{"--listen", "[::]:0"}, "[::]:0"},
      {{"--listen", "https://127.0.0.1:0"}, "127.0.0.1:0"},
      {{"--listen", "http://0.0.0.0:0", "--tls-cert", dir + "/c.pem", "--tls-key", dir + "/k.pem"}, "0.0.0.0:0"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> args = {"--netns",      ns->name(),     "--state-dir",
                                     dir + "/state", "--ready-file", dir + "/ready"};
    args.insert(args.end(), c.flags.begin(), c.flags.end());
    CommandResult r = Daemon::RunBinary(args, std::chrono::seconds(10));
    EXPECT_NE(r.exit_code, 0) << r.Describe();
    EXPECT_NE(r.err.find(c.names), std::string::npos) << r.Describe();
    EXPECT_NE(access((dir + "/ready").c_str(), F_OK), 0) << "it started: " << r.Describe();
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

}  // namespace
}  // namespace iptkit::daemontest
