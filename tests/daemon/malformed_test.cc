// More than a thousand generated malformed requests against a running iptkitd: every answer is a 4xx with the JSON
// error body, the kernel state of both families stays byte-identical, and the daemon keeps serving.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <functional>

#include "tests/daemon/daemon_fixture.h"
#include "tests/integration/test_util.h"

namespace iptkit::daemontest {
namespace {

using integration::Variant;

struct Case {
  std::string method;
  std::string path;
  std::string body;
  std::string content_type = "application/json";
  std::string why;
};

// One raw HTTP/1.1 exchange on a fresh TCP connection (for requests httplib::Client cannot send): the reply's
// status (0 when none came within 5 s) and body.
Reply RawExchange(const std::string& endpoint, const std::string& bytes) {
  Reply reply;
  reply.request = "raw " + bytes.substr(0, 60);
  const std::string hostport = endpoint.substr(std::string("http://").size());
  const std::string host = hostport.substr(0, hostport.rfind(':'));
  const int port = std::stoi(hostport.substr(hostport.rfind(':') + 1));
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, host.c_str(), &addr.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    reply.error = std::string("connect: ") + std::strerror(errno);
    close(fd);
    return reply;
  }
  size_t sent = 0;
  while (sent < bytes.size()) {
    ssize_t n = send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
  // No half-close: httplib drops a connection whose peer shut down its side before the answer was written.
  std::string in;
  char buf[8192];
  size_t want = std::string::npos;  // bytes of the whole answer, once the headers are in
  while (in.size() < want) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 5000) <= 0) break;
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    in.append(buf, static_cast<size_t>(n));
    size_t head_end = in.find("\r\n\r\n");
    if (want == std::string::npos && head_end != std::string::npos) {
      size_t length = 0;
      size_t at = in.find("Content-Length: ");
      if (at != std::string::npos && at < head_end) length = std::stoul(in.substr(at + 16));
      want = head_end + 4 + length;
    }
  }
  close(fd);
  if (!in.starts_with("HTTP/1.1 ") || in.size() < 12) {
    reply.error = in.empty() ? "connection closed without an answer" : "not HTTP: " + in.substr(0, 80);
    return reply;
  }
  reply.status = std::stoi(in.substr(9, 3));
  size_t head_end = in.find("\r\n\r\n");
  reply.body = head_end == std::string::npos ? "" : in.substr(head_end + 4);
  reply.json = Json::parse(reply.body, nullptr, false);
  return reply;
}

std::string Repeat(const std::string& s, size_t n) {
  std::string out;
  for (size_t i = 0; i < n; ++i) out += s;
  return out;
}

TEST(DaemonMalformed, ThousandBadRequestsChangeNothing) {
  IPTKIT_NEW_NETNS(ns);
  ASSERT_OK_AND_ASSIGN(auto daemon, Daemon::Start(*ns, {.args = {"--max-body-bytes", "4096"}}));
  HttpClient http = daemon->Admin();
  const std::string rules = RulesPath("INPUT");
  const std::string rules6 = RulesPath("INPUT", Family::kIPv6);
  const std::string chains = "/v1/ipv4/tables/filter/chains/";

  // A baseline worth protecting: foreign rules and chains in both families, and an owner.
  ASSERT_EQ(http.Put(chains + "IT-WEB", "").status, 200);
  ASSERT_EQ(http.Post(RulesPath("IT-WEB"), R"({"spec": "-s 10.0.0.0/8 -j ACCEPT"})").status, 200);
  ASSERT_EQ(http.Post(rules, R"({"spec": "-i lo -j ACCEPT"})").status, 200);
  ASSERT_EQ(http.Post(rules, R"({"spec": "-p tcp --dport 80 -j IT-WEB"})").status, 200);
  ASSERT_EQ(http.Post(rules6, R"({"spec": "-s 2001:db8::1 -j DROP"})").status, 200);
  Reply base = http.Put("/v1/owners/base", R"({"family": "both",
      "chains": [{"name": "BASE-IN", "rules": [{"spec": "-p tcp --dport 22 -j ACCEPT"}]}],
      "hooks": [{"chain": "INPUT", "position": "last", "spec": "-j BASE-IN"}]})");
  ASSERT_EQ(base.status, 200) << base.Describe();
  const std::string before4 = SaveText(*ns, Family::kIPv4);
  const std::string before6 = SaveText(*ns, Family::kIPv6);
  ASSERT_EQ(TaggedLines(before4, "base").size(), 2u) << before4;
  ASSERT_EQ(TaggedLines(before6, "base").size(), 2u) << before6;

  std::vector<Case> cases;
  auto add = [&](const std::string& method, const std::string& path, const std::string& body, const std::string& why,
                 const std::string& content_type = "application/json") {
    cases.push_back({method, path, body, content_type, why});
  };

  // Every route that takes a body.
  struct BodyRoute {
    std::string method, path;
  };
  const std::vector<BodyRoute> body_routes = {
      {"POST", rules},
      {"DELETE", rules},
      {"PUT", rules + "/1"},
      {"DELETE", rules + "/1"},
      {"PUT", chains + "IT-NEW"},
      {"PUT", chains + "INPUT"},
      {"POST", "/v1/transactions"},
      {"PUT", "/v1/owners/fuzz"},
      {"POST", rules6},
      {"POST", "/v1/transactions/t-0123456789abcdef/confirm"},
  };

  // 1. Bodies that are not a JSON object any route accepts: broken syntax, other JSON values, other formats.
  const std::vector<std::string> not_objects = {
      "{",
      "}",
      "[",
      "]",
      R"({"spec":})",
      "{'spec':'-j DROP'}",
      R"({"spec":"-j DROP",})",
      R"({"spec" "-j DROP"})",
      R"({"spec":"-j DROP")",
      R"({"spec":"\x"})",
      R"({"spec":"\ud800"})",
      "{\"spec\":\"-j DROP \xff\"}",
      R"({"ttl": NaN})",
      R"({"spec": "-j DROP", "ttl": Infinity})",
      "/* comment */ {}",
      R"({"spec":"-j DROP"}{})",
      "{} x",
      Repeat("[", 1000),
      "hello",
      "<rule spec='-j DROP'/>",
      "spec=-j+DROP",
      "\x01\x02\x03",
      "nul",
      "tru",
      "[]",
      "[{}]",
      "5",
      "-1",
      "\"x\"",
      "\"\"",
      "true",
      "false",
      "null",
      "1e999",
      R"({"a": 1, "a": 2})",
      R"({"netns": "elsewhere"})",
      R"({"bogus": 1})",
      "---\nspec: -j DROP\n",
      "\xef\xbb\xbf[]",
  };
  for (const BodyRoute& r : body_routes) {
    for (const std::string& b : not_objects) add(r.method, r.path, b, "not an acceptable JSON object");
  }
  // Empty bodies where one is required.
  for (const BodyRoute& r : std::vector<BodyRoute>{{"POST", rules},
                                                   {"DELETE", rules},
                                                   {"PUT", rules + "/1"},
                                                   {"POST", "/v1/transactions"},
                                                   {"PUT", "/v1/owners/fuzz"}}) {
    add(r.method, r.path, "", "empty body");
  }

  // 2. Rule objects with wrong types or unknown fields, in every place a rule goes.
  const std::vector<std::string> bad_rules = {
      R"({"spec": 5})",
      R"({"spec": null})",
      R"({"spec": ["-j", "DROP"]})",
      R"({"spec": {"x": 1}})",
      R"({"spec": true})",
      R"({"spec": "-j DROP", "bogus": 1})",
      R"({"specs": "-j DROP"})",
      R"({"spec": "-j DROP", "Spec": "-j ACCEPT"})",
      R"({"src": "10.0.0.1"})",
      R"({"src": {"addr": 5}})",
      R"({"src": {"addr": "10.0.0.1", "bogus": 1}})",
      R"({"src": {"addr": "not-an-address"}})",
      R"({"protocol": "tcp"})",
      R"({"target": "DROP"})",
      R"({"target": {"name": 5}})",
      R"({"target": {"name": "DROP", "kind": "leap"}})",
      R"({"matches": {}})",
      R"({"matches": [5]})",
      R"({"matches": [{"name": "tcp", "options": "dport"}]})",
      R"({"matches": [{"options": []}]})",
      R"({"spec": "-j DROP", "target": {"name": "ACCEPT"}})",
      R"({"spec": "-j DROP", "ttl": "5 s"})",
      R"({"spec": "-j DROP", "ttl": "soon"})",
      R"({"spec": "-j DROP", "ttl": -1})",
      R"({"spec": "-j DROP", "ttl": 0})",
      R"({"spec": "-j DROP", "ttl": 1.5})",
      R"({"spec": "-j DROP", "ttl": 1e30})",
      R"({"spec": "-j DROP", "ttl": 315360001})",
      R"({"spec": "-j DROP", "owner": 5})",
      R"({"spec": "-j DROP", "owner": "BAD OWNER"})",
      R"({"spec": "-j DROP", "owner": ""})",
      R"({"spec": "-j DROP", "owner": ")" + Repeat("a", 33) + R"("})",
      R"({"spec": "-j DROP", "id": "x"})",
      R"({"spec": "-j DROP", "owner": "fuzz", "id": "bad id!"})",
      R"({"spec": "-j DROP", "family": "ipv5"})",
      R"({"spec": "-j DROP", "counters": "many"})",
      R"({"spec": "-j DROP", "netns": "elsewhere", "owner": 1})",
  };
  struct Place {
    std::string method, path;
    std::function<std::string(const std::string&)> wrap;
    std::string name;
  };
  const std::vector<Place> places = {
      {"POST", rules, [](const std::string& r) { return r; }, "POST rules"},
      {"DELETE", rules, [](const std::string& r) { return r; }, "DELETE rules"},
      {"PUT", rules + "/1", [](const std::string& r) { return r; }, "PUT rules/1"},
      {"DELETE", rules + "/1", [](const std::string& r) { return R"({"expect": )" + r + "}"; }, "expect"},
      {"POST", "/v1/transactions",
       [](const std::string& r) { return R"({"ops": [{"append": {"chain": "INPUT", "rule": )" + r + "}}]}"; },
       "txn append"},
      {"POST", "/v1/transactions",
       [](const std::string& r) {
         return R"({"ops": [{"insert": {"chain": "INPUT", "index": 1, "rule": )" + r + "}}]}";
       },
       "txn insert"},
      {"POST", "/v1/transactions",
       [](const std::string& r) { return R"({"ops": [{"delete": {"chain": "INPUT", "rule": )" + r + "}}]}"; },
       "txn delete"},
      {"POST", "/v1/transactions",
       [](const std::string& r) {
         return R"({"ops": [{"append": {"chain": "INPUT", "rule": {"spec": "-s 192.0.2.250 -j DROP"}}},
                            {"append": {"chain": "INPUT", "rule": )" +
                r + "}}]}";
       },
       "txn second op"},
      {"PUT", "/v1/owners/fuzz",
       [](const std::string& r) { return R"({"chains": [{"name": "FUZZ-IN", "rules": [)" + r + "]}]}"; },
       "owner chain rule"},
      {"PUT", "/v1/owners/fuzz",
       [](const std::string& r) {
         Json j = Json::parse(r, nullptr, false);
         if (!j.is_object()) return std::string("{");
         j["chain"] = "INPUT";
         return R"({"chains": [], "hooks": [)" + j.dump() + "]}";
       },
       "owner hook"},
      {"POST", rules6, [](const std::string& r) { return r; }, "POST rules ipv6"},
  };
  for (const Place& p : places) {
    for (const std::string& r : bad_rules) add(p.method, p.path, p.wrap(r), p.name + ": bad rule object");
  }

  // 3. Rule specs the parser, the validator or iptables refuses: unknown options, host names, comma lists,
  // newlines, length limits, target placement.
  const std::vector<std::string> bad_specs = {
      "-j",
      "-s",
      "-s 192.0.2.1,192.0.2.2 -j DROP",
      "-d 10.0.0.1,10.0.0.2 -j DROP",
      "-s example.com -j DROP",
      "-d localhost -j ACCEPT",
      "-s 999.1.1.1 -j DROP",
      "-s 10.0.0.1/33 -j DROP",
      "-s 2001:db8::1 -j DROP",
      "-p tcp --dport 70000 -j ACCEPT",
      "-p tcp --dport 22,80 -j ACCEPT",
      "-p tcp --frobnicate -j ACCEPT",
      "--frobnicate",
      "-m nosuchmatch -j ACCEPT",
      "-m comment --comment \"a\nb\" -j ACCEPT",
      "-m comment --comment \"a\rb\" -j ACCEPT",
      std::string("-m comment --comment a") + '\0' + "b -j ACCEPT",
      "-m comment --comment " + Repeat("x", 256) + " -j ACCEPT",
      "-p tcp -j DNAT --to-destination 10.0.0.1",
      "-j MASQUERADE",
      "-p tcp -j REDIRECT --to-ports 8080",
      "-j SNAT --to-source 192.0.2.1",
      "-p tcp -j TPROXY --on-port 8080",
      "-A INPUT -j DROP",
      "-I INPUT 1 -j DROP",
      "-i " + Repeat("e", 16) + " -j DROP",
      "-i eth0 eth1 -j DROP",
      "-j ACCEPT -j DROP",
      "-p tcp -p udp -j ACCEPT",
      "-s ! 10.0.0.1 -j DROP",
      "-m conntrack --ctstate BOGUS -j ACCEPT",
      "-j REJECT --reject-with bogus",
      "-m mark --mark 0xzz -j ACCEPT",
      "-m set --match-set no-such-set src -j DROP",
      "-p tcp --dport -1 -j ACCEPT",
      "-m limit --limit 1/fortnight -j ACCEPT",
      "-j \"ACCEPT",
  };
  const std::vector<Place> spec_places = [&] {
    std::vector<Place> out = places;
    out.pop_back();  // ipv6 separately below
    out.push_back({"POST", rules,
                   [](const std::string& r) {
                     Json j = Json::parse(r);
                     j["owner"] = "fuzz";
                     return j.dump();
                   },
                   "POST owned rule"});
    out.push_back({"POST", rules,
                   [](const std::string& r) {
                     Json j = Json::parse(r);
                     j["ttl"] = 60;
                     return j.dump();
                   },
                   "POST ttl rule"});
    return out;
  }();
  for (const Place& p : spec_places) {
    for (const std::string& s : bad_specs) add(p.method, p.path, p.wrap(Json{{"spec", s}}.dump()), p.name + ": " + s);
  }
  for (const std::string& s : std::vector<std::string>{"-s 10.0.0.1 -j DROP", "-p icmp -j ACCEPT", "-f -j DROP",
                                                       "-s 2001:db8::1,2001:db8::2 -j DROP", "-d ipv6.example -j DROP",
                                                       "-s 2001:db8::/129 -j DROP"}) {
    const std::string rule = Json{{"spec", s}}.dump();
    add("POST", rules6, rule, "ipv6: " + s);
    add("DELETE", rules6, rule, "ipv6 delete: " + s);
    add("POST", "/v1/transactions",
        R"({"ops": [{"append": {"family": "ipv6", "chain": "INPUT", "rule": )" + rule + "}}]}", "ipv6 txn: " + s);
    add("PUT", "/v1/owners/fuzz", R"({"family": "ipv6", "chains": [{"name": "FUZZ-IN", "rules": [)" + rule + "]}]}",
        "ipv6 owner: " + s);
  }
  // An owner tag in a spec given to the rule routes.
  for (const std::string& path : {rules, rules6}) {
    add("POST", path, R"({"spec": "-m comment --comment iptkit:fuzz:abc -j ACCEPT"})", "owner tag in spec");
    add("DELETE", path, R"({"spec": "-m comment --comment iptkit:base:abc -j ACCEPT"})", "owner tag in delete");
  }

  // 4. Transactions and documents that are well-formed JSON but wrong.
  const std::string ok_op = R"({"append": {"chain": "INPUT", "rule": {"spec": "-s 192.0.2.251 -j DROP"}}})";
  const std::vector<std::string> bad_transactions = {
      R"({"ops": 5})",
      R"({"ops": "x"})",
      R"({"ops": {}})",
      R"({"ops": []})",
      R"({"ops": [5]})",
      R"({"ops": [{}]})",
      R"({"ops": [{"append": {}}]})",
      R"({"ops": [{"append": {"chain": "INPUT"}, "insert": {}}]})",
      R"({"ops": [{"frobnicate": {"chain": "INPUT"}}]})",
      R"({"ops": [{"append": {"chain": 5, "rule": {}}}]})",
      R"({"ops": [{"append": {"chain": "INPUT", "rule": {}, "bogus": 1}}]})",
      R"({"ops": [{"delete_chain": {"chain": "INPUT"}}]})",
      R"({"ops": [{"delete_chain": {"chain": "IT-NOPE"}}]})",
      R"({"ops": [{"rename_chain": {"chain": "INPUT", "new_name": "X"}}]})",
      R"({"ops": [{"rename_chain": {"chain": "IT-WEB", "new_name": "ACCEPT"}}]})",
      R"({"ops": [{"rename_chain": {"chain": "IT-WEB"}}]})",
      R"({"ops": [{"policy": {"chain": "IT-WEB", "policy": "DROP"}}]})",
      R"({"ops": [{"policy": {"chain": "INPUT", "policy": "REJECT"}}]})",
      R"({"ops": [{"policy": {"chain": "INPUT"}}]})",
      R"({"ops": [{"create_chain": {"chain": "IT-WEB"}}]})",
      R"({"ops": [{"create_chain": {"chain": "-bad"}}]})",
      R"({"ops": [{"create_chain": {"chain": "A-CHAIN-NAME-LONGER-THAN-28-BYTES"}}]})",
      R"({"ops": [{"create_chain": {"chain": "DNAT"}}]})",
      R"({"ops": [{"create_chain": {"chain": "two words"}}]})",
      R"({"ops": [{"insert": {"chain": "INPUT", "index": 0, "rule": {}}}]})",
      R"({"ops": [{"insert": {"chain": "INPUT", "index": 99, "rule": {}}}]})",
      R"({"ops": [{"insert": {"chain": "INPUT", "index": "1", "rule": {}}}]})",
      R"({"ops": [{"delete": {"chain": "INPUT", "index": 99}}]})",
      R"({"ops": [{"delete": {"chain": "INPUT", "index": 1, "expect": {"spec": "-s 203.0.113.9 -j DROP"}}}]})",
      R"({"ops": [{"replace": {"chain": "INPUT", "index": 99, "rule": {}}}]})",
      R"({"ops": [{"flush": {"table": "nosuch"}}]})",
      R"({"ops": [{"zero": {"chain": "NOPE"}}]})",
      R"({"ops": [{"append": {"family": "ipv5", "chain": "INPUT", "rule": {}}}]})",
      R"({"ops": [{"append": {"table": "nosuch", "chain": "INPUT", "rule": {}}}]})",
      R"({"ops": [{"append": {"table": "nat", "chain": "FORWARD", "rule": {}}}]})",
      R"({"ops": [{"append": {"chain": "INPUT", "rule": {"spec": "-j IT-NOPE"}}}]})",
      R"({"ops": [{"append": {"chain": "INPUT", "rule": {"spec": "-s 203.0.113.9 -j DROP", "owner": "fuzz"}}}],
          "confirm_within": 0})",
      R"({"ops": [)" + ok_op + R"(], "confirm_within": "5 s"})",
      R"({"ops": [)" + ok_op + R"(], "confirm_within": -1})",
      R"({"ops": [)" + ok_op + R"(], "confirm_within": 1.5})",
      R"({"ops": [)" + ok_op + R"(], "dry_run": "yes"})",
      R"({"ops": [)" + ok_op + R"(], "dry_run": 1})",
      R"({"ops": [)" + ok_op + R"(], "confirm_within": 5,
          "dry_run": true})",
      R"({"ops": [)" + ok_op + R"(], "netns": "elsewhere"})",
      R"({"ops": [)" + ok_op + R"(], "bogus": true})",
      R"({"ops": [{"insert": {"chain": "INPUT", "index": 2, "rule": {"spec": "-j DROP", "owner": "fuzz"}}}]})",
      R"({"ops": [{"replace": {"chain": "INPUT", "index": 1, "rule": {"spec": "-j DROP", "owner": "fuzz"}}}]})",
      R"({"ops": [{"append": {"chain": "IT-WEB", "rule": {"spec": "-j DROP", "owner": "fuzz"}}}]})",
      R"({"ops": [{"append": {"chain": "BASE-IN", "rule": {"spec": "-j DROP", "owner": "fuzz"}}}]})",
      R"({"ops": [{"delete": {"chain": "INPUT", "rule": {"spec": "-j DROP", "owner": "fuzz", "ttl": 5}}}]})",
      R"({"ops": [{"delete": {"chain": "INPUT", "rule": {"spec": "-s 203.0.113.9 -j DROP", "owner": "base"}}}]})",
      R"({"ops": [{"flush": {"chain": "INPUT"}}, {"append": {"chain": "IT-NOPE", "rule": {}}}]})",
      R"({"ops": [{"policy": {"chain": "INPUT", "policy": "DROP"}}, {"delete_chain": {"chain": "IT-NOPE"}}]})",
      R"({"ops": [{"delete_chain": {"chain": "IT-WEB", "cascade": true}}, {"create_chain": {"chain": "-x"}}]})",
      R"({"ops": [{"append": {"chain": "INPUT", "rule": {"spec": "-s 203.0.113.9 -j DROP", "owner": "base"}}},
                  {"zero": {"chain": "NOPE"}}]})",
  };
  for (const std::string& t : bad_transactions) {
    add("POST", "/v1/transactions", t, "transaction");
    add("POST", "/v1/transactions?dry_run=1", t, "dry-run transaction");
  }
  // Only the kernel refuses xt_owner in INPUT (writer_test.cc): a commit, not a plan, fails.
  add("POST", "/v1/transactions",
      R"({"ops": [{"append": {"chain": "INPUT", "rule": {"spec": "-m owner --uid-owner 0 -j ACCEPT"}}}]})",
      "kernel-rejected rule");
  const std::vector<std::string> bad_documents = {
      R"({"chains": 5})",
      R"({"chains": [5]})",
      R"({"chains": [{}]})",
      R"({"chains": [{"name": "OTHER-IN", "rules": []}]})",
      R"({"chains": [{"name": "FUZZ-", "rules": []}]})",
      R"({"chains": [{"name": "FUZZ-A", "rules": 5}]})",
      R"({"chains": [{"name": "FUZZ-A", "table": "nosuch", "rules": []}]})",
      R"({"chains": [{"name": "FUZZ-THIS-NAME-IS-FAR-TOO-LONG", "rules": []}]})",
      R"({"chains": [], "hooks": [{"chain": "IT-WEB", "spec": "-j ACCEPT"}]})",
      R"({"chains": [], "hooks": [{"chain": "INPUT", "position": "middle", "spec": "-j ACCEPT"}]})",
      R"({"chains": [], "hooks": [{"chain": "INPUT", "spec": "-j FUZZ-MISSING"}]})",
      R"({"chains": [], "hooks": [{"table": "nat", "chain": "INPUT", "spec": "-j DROP"}]})",
      R"({"chains": [], "hooks": [{"spec": "-j ACCEPT"}]})",
      R"({"chains": [], "family": "ipv5"})",
      R"({"chains": [], "family": "both", "hooks": [{"chain": "INPUT", "spec": "-s 10.0.0.1 -j DROP"}]})",
      R"({"chains": [{"name": "FUZZ-A", "rules": []}, {"name": "FUZZ-A", "rules": []}]})",
      R"({"chains": [], "netns": "elsewhere"})",
      R"({"chains": [], "bogus": 1})",
      R"({"owner": 5, "chains": []})",
      R"({"owner": "base", "chains": []})",
      R"({"chains": [{"name": "FUZZ-A", "rules": [{"spec": "-j FUZZ-A"}]}],
          "hooks": [{"chain": "INPUT", "spec": "-j FUZZ-A"}]})",
      R"({"chains": [{"name": "FUZZ-A", "rules": [{"spec": "-j FUZZ-B"}]},
                     {"name": "FUZZ-B", "rules": [{"spec": "-j FUZZ-A"}]}],
          "hooks": [{"chain": "INPUT", "spec": "-j FUZZ-A"}]})",
      R"({"chains": [{"name": "FUZZ-A", "rules": [{"spec": "-j ACCEPT", "counters": {"packets": 1, "bytes": 1},
          "index": 1, "chain": "FUZZ-A"}]}]})",
  };
  for (const std::string& d : bad_documents) {
    add("PUT", "/v1/owners/fuzz", d, "owner document");
    add("PUT", "/v1/owners/fuzz?dry_run=1", d, "dry-run owner document");
  }
  // Chains: bad names and bodies.
  for (const char* name :
       {"-bad", "!x", "ACCEPT", "DNAT", "RETURN", "two%20words", "A-CHAIN-NAME-LONGER-THAN-28-BYTES"}) {
    add("PUT", chains + name, "", "bad chain name " + std::string(name));
  }
  for (const char* b : {R"({"policy": 5})", R"({"policy": "drop"})", R"({"policy": null})",
                        R"({"policy": "ACCEPT", "x": 1})", R"({"policy": ["DROP"]})"}) {
    add("PUT", chains + "INPUT", b, "bad policy body");
  }
  add("PUT", chains + "IT-NEW", R"({"policy": "ACCEPT"})", "policy for a user chain");
  add("PUT", "/v1/ipv4/tables/nat/chains/POSTROUTING", "", "builtin chain without a policy");
  add("PUT", "/v1/ipv4/tables/nosuch/chains/X", "", "unknown table");
  // Owned rules are changed through their owner only.
  const std::string hook = TaggedLines(before4, "base")[0];  // "-A INPUT ... -j BASE-IN"
  const std::string hook_spec = hook.substr(std::string("-A INPUT ").size());
  add("DELETE", rules, Json{{"spec", hook_spec}}.dump(), "imperative delete of an owned rule");
  add("POST", "/v1/transactions",
      Json{{"ops", {{{"delete", {{"chain", "INPUT"}, {"rule", {{"spec", hook_spec}}}}}}}}}.dump(),
      "imperative delete of an owned rule in a transaction");
  add("DELETE", rules + "/3", "", "imperative delete of an owned rule by index");
  add("DELETE", rules + "/3", Json{{"expect", hook_spec}}.dump(), "imperative delete of an owned rule with expect");
  add("DELETE", "/v1/owners/nobody", "", "unknown owner");
  add("POST", "/v1/transactions/t-nosuch/confirm", "", "unknown transaction");
  add("POST", "/v1/transactions/t-nosuch/confirm", "{}", "unknown transaction");

  // 5. Bodies beyond --max-body-bytes 4096 (well-formed otherwise).
  for (size_t size : {4097, 5000, 65536, 1 << 20}) {
    std::string big = R"({"spec": "-j DROP", "pad": ")" + Repeat("x", size) + "\"}";
    for (const BodyRoute& r : body_routes) add(r.method, r.path, big, "oversized " + std::to_string(size));
  }

  // 6. Valid bodies with the wrong Content-Type.
  const std::vector<std::pair<BodyRoute, std::string>> valid = {
      {{"POST", rules}, R"({"spec": "-s 192.0.2.201 -j DROP"})"},
      {{"DELETE", rules}, R"({"spec": "-i lo -j ACCEPT"})"},
      {{"PUT", rules + "/1"}, R"({"spec": "-j ACCEPT"})"},
      {{"DELETE", rules + "/1"}, R"({"expect": "-i lo -j ACCEPT"})"},
      {{"PUT", chains + "IT-NEW"}, "{}"},
      {{"PUT", chains + "INPUT"}, R"({"policy": "DROP"})"},
      {{"POST", "/v1/transactions"}, R"({"ops": [)" + ok_op + "]}"},
      {{"PUT", "/v1/owners/fuzz"}, R"({"chains": [{"name": "FUZZ-IN", "rules": []}]})"},
      {{"POST", rules6}, R"({"spec": "-s 2001:db8::2 -j DROP"})"},
  };
  for (const auto& [route, body] : valid) {
    for (const char* type :
         {"text/plain", "application/x-www-form-urlencoded", "multipart/form-data", "application/jsonx",
          "application/json-patch+json", "text/json", "application/xml", "json", "", "application/javascript"}) {
      add(route.method, route.path, body, std::string("content type '") + type + "'", type);
    }
  }

  // 7. Unknown routes, with every method.
  const std::vector<std::string> unknown_routes = {
      "/",
      "/v1",
      "/v1/",
      "/v2/version",
      "/v1/versions",
      "/v1/ipv4/tables",
      "/v1/ipv4/tables/",
      "/v1/ipv4/tables/nosuch/chains/INPUT",
      "/v1/ipv4/tables/filter/chains",
      "/v1/ipv4/tables/filter/chains/INPUT/rules/1/x",
      "/v1/ipv4/tables/filter/chains/INPUT/rule",
      "/v1/inet",
      "/v1/IPV4",
      "/v1/transactions/",
      "/v1/owners/",
      "/healthz/",
      "/metrics.json",
      "/v1/zones",
      "/v1/desired",
      "/v1/ipv4/tables/filter/chains//rules",
      "/v1/owners/UPPER",
      "/v1/owners/" + Repeat("a", 40),
      "/v1/ipv4/tables/filter/chains/INPUT/rules/99999999999",
      "/v1/ipv4/tables/filter/chains/INPUT/rules/-1",
      "/.env",
      "/v1/events/x",
      "/v1/audit/1",
      "/v1/ipv4/tables/filter/chains/INPUT/rules/1.5",
  };
  for (const std::string& path : unknown_routes) {
    add("GET", path, "", "unknown route");
    add("POST", path, "{}", "unknown route");
    add("PUT", path, "{}", "unknown route");
    add("DELETE", path, "", "unknown route");
  }

  // 8. Methods a route does not take.
  const std::vector<std::pair<std::string, std::string>> wrong_methods = {
      {"POST", "/healthz"},
      {"PUT", "/healthz"},
      {"DELETE", "/v1/version"},
      {"POST", "/v1/info"},
      {"PUT", "/metrics"},
      {"DELETE", "/v1/ipv4"},
      {"POST", "/v1/ipv6"},
      {"POST", "/v1/ipv4/tables/filter"},
      {"PATCH", rules},
      {"PATCH", chains + "INPUT"},
      {"POST", chains + "INPUT"},
      {"POST", rules + "/1"},
      {"PUT", "/v1/transactions"},
      {"DELETE", "/v1/transactions/t-x"},
      {"GET", "/v1/transactions/t-x/confirm"},
      {"PUT", "/v1/owners"},
      {"POST", "/v1/owners/x"},
      {"DELETE", "/v1/audit"},
      {"POST", "/v1/events"},
      {"PATCH", "/v1/owners/x"},
      {"PUT", rules},
      {"DELETE", "/v1/owners"},
      {"POST", "/metrics"},
  };
  for (const auto& [method, path] : wrong_methods) {
    add(method, path, "", "wrong method");
    add(method, path, R"({"spec": "-j DROP"})", "wrong method with a body");
  }

  // 9. Bad query parameters and values (the bodies are valid).
  const std::string ok_rule = R"({"spec": "-s 192.0.2.202 -j DROP"})";
  for (const char* q : {"?position=0", "?position=-1", "?position=abc", "?position=1.5", "?position=99999999999",
                        "?position=", "?position=1&position=2", "?position=first", "?dry_run=maybe", "?dry_run=2",
                        "?dry_run=1&dry_run=0", "?bogus=1", "?netns=elsewhere", "?token=x", "?access_token=x",
                        "?api_key=x", "?cascade=1", "?confirm_within=5"}) {
    add("POST", rules + q, ok_rule, std::string("query ") + q);
  }
  for (const char* q : {"?position=2", "?position=0", "?position=middle"}) {
    add("POST", rules + q, R"({"spec": "-s 192.0.2.203 -j DROP", "owner": "fuzz"})", std::string("owned ") + q);
  }
  for (const char* q : {"?cascade=maybe", "?cascade=1&cascade=0", "?dry_run=x", "?force=1", "?cascade=2"}) {
    add("DELETE", chains + "IT-WEB" + q, "", std::string("delete chain ") + q);
  }
  for (const char* q : {"?dry_run=perhaps", "?position=1", "?cascade=1"}) {
    add("PUT", chains + "IT-NEW" + q, "", std::string("put chain ") + q);
  }
  const std::string ok_doc = R"({"chains": [{"name": "FUZZ-IN", "rules": []}]})";
  for (const char* q :
       {"?confirm_within=0", "?confirm_within=-5", "?confirm_within=abc", "?confirm_within=315360001", "?dry_run=x",
        "?confirm_within=5&dry_run=1", "?confirm_within=1&confirm_within=2", "?position=1"}) {
    add("PUT", std::string("/v1/owners/fuzz") + q, ok_doc, std::string("owner ") + q);
  }
  for (const char* q : {"?dry_run=x", "?dry_run=1&dry_run=0", "?confirm_within=0", "?confirm_within=x",
                        "?confirm_within=5&dry_run=1", "?confirm_within=5&confirm_within=6", "?position=1"}) {
    add("POST", std::string("/v1/transactions") + q, R"({"ops": [)" + ok_op + "]}", std::string("transaction ") + q);
  }
  add("POST", "/v1/transactions?confirm_within=6", R"({"confirm_within": 5, "ops": [)" + ok_op + "]}",
      "confirm_within in query and body disagree");
  for (const char* q : {"?dry_run=x", "?position=1", "?expect=x"}) {
    add("DELETE", rules + "/1" + q, "", std::string("delete rule ") + q);
    add("PUT", rules + "/1" + q, R"({"spec": "-j ACCEPT"})", std::string("replace rule ") + q);
  }
  for (const char* q : {"?limit=0", "?limit=1001", "?limit=-1", "?limit=x", "?before=0", "?before=x", "?since=x",
                        "?until=2026-13-01T00:00:00Z", "?since=2026-01-01", "?result=maybe", "?limit=1&limit=2",
                        "?sort=asc", "?until=2026-01-01T25:00:00Z"}) {
    add("GET", std::string("/v1/audit") + q, "", std::string("audit ") + q);
  }
  for (const char* q : {"?after=-1", "?after=x", "?foo=1", "?after=1&after=2"}) {
    add("GET", std::string("/v1/events") + q, "", std::string("events ") + q);
  }
  for (const char* q : {"?netns=elsewhere", "?table=filter", "?family=ipv6"}) {
    add("GET", std::string("/v1/ipv4") + q, "", std::string("listing ") + q);
    add("GET", rules + q, "", std::string("rules listing ") + q);
    add("GET", std::string("/v1/owners") + q, "", std::string("owners ") + q);
    add("GET", std::string("/v1/version") + q, "", std::string("version ") + q);
    add("GET", std::string("/metrics") + q, "", std::string("metrics ") + q);
  }

  ASSERT_GE(cases.size(), 1000u);
  size_t failures = 0;
  auto check = [&](const Reply& r, const std::string& why) {
    const bool ok = r.status >= 400 && r.status < 500 && r.is_json() && r.json.is_object() &&
                    r.json.contains("error") && r.json["error"].is_object() && r.json["error"].contains("code") &&
                    r.json["error"]["code"].is_string() && r.json["error"].contains("message") &&
                    r.json["error"]["message"].is_string() && r.json["error"].contains("details") &&
                    r.json["error"]["details"].is_object();
    if (ok) return;
    if (++failures <= 40) ADD_FAILURE() << why << ": " << r.Describe();
  };
  for (const Case& c : cases) {
    Request req(c.method, c.path, c.body, c.content_type);
    Reply r = http.Send(req);
    check(r, c.why + " [" + c.body.substr(0, 200) + "]");
  }

  // 10. Requests httplib::Client would not send: broken request lines, headers, chunking, lengths.
  const std::string auth = "Authorization: Bearer " + daemon->admin_token() + "\r\n";
  const std::vector<std::string> raw = {
      "GARBAGE\r\n\r\n",
      "GET\r\n\r\n",
      "GET /v1/version HTTP/1.1 extra\r\nHost: x\r\n" + auth + "\r\n",
      "POST /v1/transactions HTTP/1.1\r\nHost: x\r\n" + auth +
          "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
      "POST /v1/transactions HTTP/1.1\r\nHost: x\r\n" + auth +
          "Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n" + Repeat(" ", 5000),
      "GET /v1/version HTTP/1.1\r\nHost: x\r\nBadHeaderWithoutColon\r\n\r\n",
      "POST /v1/transactions HTTP/1.1\r\nHost: x\r\n" + auth + "Content-Type: application/json\r\n" +
          "Content-Length: 4\r\n\r\n{\"op",
      "POST " + rules + " HTTP/1.1\r\nHost: x\r\n" + auth + "Content-Type: application/json\r\n" +
          "Transfer-Encoding: chunked\r\n\r\n" + "2000\r\n" + Repeat("x", 0x2000) + "\r\n0\r\n\r\n",
      "GET /v1/version HTTP/1.1\r\nHost: x\r\n" + auth + "X-Long: " + Repeat("h", 10000) + "\r\n\r\n",
      "GET /v1/version HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer\r\n\r\n",
  };
  for (const std::string& bytes : raw) check(RawExchange(daemon->endpoint(), bytes), "raw request");
  RecordProperty("malformed_requests", static_cast<int>(cases.size() + raw.size()));
  std::cout << "sent " << cases.size() + raw.size() << " malformed requests\n";
  EXPECT_EQ(failures, 0u) << "of " << cases.size() + raw.size() << " malformed requests";

  // Nothing changed, and the daemon still serves.
  EXPECT_EQ(SaveText(*ns, Family::kIPv4), before4);
  EXPECT_EQ(SaveText(*ns, Family::kIPv6), before6);
  EXPECT_EQ(daemon->Client("").Get("/healthz").status, 200);
  Reply listing = http.Get("/v1/ipv4");
  EXPECT_EQ(listing.status, 200) << listing.Describe();
  Reply owner = http.Get("/v1/owners/base");
  ASSERT_EQ(owner.status, 200) << owner.Describe();
  EXPECT_EQ(owner.json["in_sync"], true) << owner.body;
  ExpectError(http.Get("/v1/owners/fuzz"), 404, "not_found");
  EXPECT_TRUE(daemon->running());
}

TEST(DaemonMalformed, SpecErrorNamesFieldTokenAndColumn) {
  IPTKIT_NEW_NETNS(ns);
  ASSERT_OK_AND_ASSIGN(auto daemon, Daemon::Start(*ns));
  HttpClient http = daemon->Admin();
  const std::string spec = "-p tcp --dport 22 --frobnicate -j ACCEPT";
  Reply r = http.Post(RulesPath("INPUT"), Json{{"spec", spec}}.dump());
  ExpectError(r, 400, "invalid_argument");
  const Json& details = r.json["error"]["details"];
  EXPECT_EQ(details.value("field", ""), "/spec") << r.body;
  EXPECT_EQ(details.value("token", ""), "--frobnicate") << r.body;
  EXPECT_EQ(details.value("column", 0), static_cast<int>(spec.find("--frobnicate")) + 1) << r.body;

  // Inside a transaction the field is the op's rule.
  Reply t =
      http.Post("/v1/transactions",
                Json{{"ops", {{{"append", {{"chain", "INPUT"}, {"rule", {{"spec", "-s 10.0.0.1 -q 5"}}}}}}}}}.dump());
  ExpectError(t, 400, "invalid_argument");
  const Json& td = t.json["error"]["details"];
  EXPECT_TRUE(td.value("field", "").starts_with("/ops/0/append/rule")) << t.body;
  EXPECT_EQ(td.value("token", ""), "-q") << t.body;
  EXPECT_EQ(td.value("column", 0), 13) << t.body;  // "-s 10.0.0.1 " is 12 bytes
}

}  // namespace
}  // namespace iptkit::daemontest
