// Every REST endpoint of iptkitd once, with its main success path and a typical error, against the real kernel of a
// private network namespace (iptables-nft, and the basic paths on iptables-legacy too).
#include <gtest/gtest.h>

#include <future>
#include <thread>

#include "tests/daemon/daemon_fixture.h"
#include "tests/integration/test_util.h"

namespace iptkit::daemontest {
namespace {

using integration::Variant;

constexpr const char* kEmptyFilter =
    "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n";

std::vector<std::string> Specs(const Json& rules) {
  std::vector<std::string> out;
  for (const Json& r : rules) out.push_back(r.value("spec", "?"));
  return out;
}

using V = std::vector<std::string>;

// Reads GET `path` (an event stream) on its own thread until a complete `event: commit` frame arrived.
class CommitStream {
 public:
  CommitStream(const Daemon& daemon, const std::string& path) : client_(daemon.Admin()) {
    thread_ = std::thread([this, path] {
      reply_ = client_.Stream(path, [this](std::string_view chunk) {
        buffer_.append(chunk);
        size_t at = buffer_.find("event: commit\n");
        if (at == std::string::npos) return true;
        size_t end = buffer_.find("\n\n", at);
        if (end == std::string::npos) return true;
        size_t start = buffer_.rfind("id: ", at);
        frame_ = buffer_.substr(start, end + 2 - start);
        return false;
      });
      done_.set_value();
    });
  }
  ~CommitStream() {
    // The request may not have started yet when the first Disconnect comes: repeat until the thread is done.
    do {
      client_.Disconnect();
    } while (finished_.wait_for(std::chrono::milliseconds(100)) != std::future_status::ready);
    thread_.join();
  }
  // Whether the frame arrived within `timeout`.
  bool Wait(std::chrono::milliseconds timeout) {
    return finished_.wait_for(timeout) == std::future_status::ready && !frame_.empty();
  }
  // Valid after Wait returned true.
  const std::string& frame() const { return frame_; }
  const Reply& reply() const { return reply_; }

 private:
  HttpClient client_;
  std::string buffer_, frame_;
  Reply reply_;
  std::promise<void> done_;
  std::future<void> finished_ = done_.get_future();
  std::thread thread_;
};

TEST(DaemonEndpoints, HealthVersionInfoMetricsAndListings) {
  IPTKIT_NEW_NETNS(ns);
  ASSERT_TRUE(ns->Iptables(Variant::kNft, Family::kIPv4, {"-A", "INPUT", "-s", "192.0.2.9", "-j", "ACCEPT"}).ok());
  ASSERT_TRUE(ns->Iptables(Variant::kNft, Family::kIPv6, {"-A", "INPUT", "-s", "2001:db8::9", "-j", "ACCEPT"}).ok());
  ASSERT_OK_AND_ASSIGN(auto daemon, Daemon::Start(*ns));
  EXPECT_EQ(daemon->ready()["backend"], DefaultDaemonBackend());
  EXPECT_EQ(daemon->ready()["netns"], ns->name());
  EXPECT_EQ(daemon->ready()["pid"], daemon->pid());
  HttpClient http = daemon->Admin();

  // /healthz needs no token.
  Reply health = daemon->Client("").Get("/healthz");
  ASSERT_EQ(health.status, 200) << health.Describe();
  EXPECT_EQ(health.json, Json({{"status", "ok"}}));
  ExpectError(daemon->Client("").Get("/healthz?verbose=1"), 400, "invalid_argument");

  Reply version = http.Get("/v1/version");
  ASSERT_EQ(version.status, 200) << version.Describe();
  EXPECT_EQ(version.json["api"], "v1");
  EXPECT_EQ(version.json["backend"], DefaultDaemonBackend());
  EXPECT_EQ(version.json["netns"], ns->name());
  EXPECT_FALSE(version.json["version"].get<std::string>().empty());
  EXPECT_FALSE(version.Header("X-Request-Id").empty());
  ExpectError(daemon->Client("").Get("/v1/version"), 401, "unauthenticated");

  Reply info = http.Get("/v1/info");
  ASSERT_EQ(info.status, 200) << info.Describe();
  EXPECT_EQ(info.json["backend"], DefaultDaemonBackend()) << info.body;
  EXPECT_EQ(info.json["netns"], ns->name()) << info.body;
  ExpectError(http.Get("/v1/info?netns=somewhere-else"), 400, "invalid_argument");

  Reply v4 = http.Get("/v1/ipv4");
  ASSERT_EQ(v4.status, 200) << v4.Describe();
  EXPECT_EQ(v4.json["family"], "ipv4");
  bool found = false;
  for (const Json& t : v4.json["tables"]) {
    if (t["name"] != "filter") continue;
    for (const Json& c : t["chains"]) {
      if (c["name"] == "INPUT") {
        EXPECT_EQ(Specs(c["rules"]), V{"-s 192.0.2.9/32 -j ACCEPT"});
        EXPECT_EQ(c["policy"], "ACCEPT");
        found = true;
      }
    }
  }
  EXPECT_TRUE(found) << v4.body;
  Reply v6 = http.Get("/v1/ipv6");
  ASSERT_EQ(v6.status, 200) << v6.Describe();
  EXPECT_EQ(v6.json["family"], "ipv6");
  EXPECT_NE(v6.body.find("\"-s 2001:db8::9/128 -j ACCEPT\""), std::string::npos) << v6.body;
  ExpectError(http.Get("/v1/ipv5"), 404, "not_found");

  Reply table = http.Get("/v1/ipv4/tables/filter");
  ASSERT_EQ(table.status, 200) << table.Describe();
  EXPECT_EQ(table.json["name"], "filter");
  EXPECT_EQ(table.json["family"], "ipv4");
  ASSERT_EQ(table.json["chains"].size(), 3u) << table.body;
  EXPECT_EQ(table.json["chains"][0]["name"], "INPUT");
  ExpectError(http.Get("/v1/ipv4/tables/nosuch"), 404, "not_found");

  Reply metrics = http.Get("/metrics");
  ASSERT_EQ(metrics.status, 200) << metrics.Describe();
  EXPECT_TRUE(metrics.Header("Content-Type").starts_with("text/plain")) << metrics.Header("Content-Type");
  EXPECT_NE(metrics.body.find("# TYPE iptkitd_http_requests_total counter"), std::string::npos);
  EXPECT_EQ(MetricValue(metrics.body, "iptkitd_http_requests_total",
                        {{"method", "GET"}, {"route", "/v1/info"}, {"code", "200"}}),
            1.0)
      << metrics.body;
  EXPECT_EQ(MetricValue(metrics.body, "iptkitd_http_auth_failures_total", {{"reason", "token"}}), 1.0);
  EXPECT_EQ(MetricValue(metrics.body, "iptkitd_build_info", {{"backend", DefaultDaemonBackend()}}), 1.0)
      << metrics.body;
  ExpectError(daemon->Client("").Get("/metrics"), 401, "unauthenticated");

  // Wrong method: 405 with Allow; OPTIONS: 204 with Allow.
  Reply wrong = http.Send(Request{"POST", "/v1/version", "{}"});
  ExpectError(wrong, 405, "method_not_allowed");
  EXPECT_EQ(wrong.Header("Allow"), "GET");
  Reply options = http.Send(Request{"OPTIONS", "/v1/owners/x", "", ""});
  EXPECT_EQ(options.status, 204) << options.Describe();
  EXPECT_EQ(options.Header("Allow"), "GET, PUT, DELETE");
}

TEST(DaemonEndpoints, Chains) {
  IPTKIT_NEW_NETNS(ns);
  ASSERT_OK_AND_ASSIGN(auto daemon, Daemon::Start(*ns));
  HttpClient http = daemon->Admin();
  const std::string chains = "/v1/ipv4/tables/filter/chains/";

  Reply created = http.Put(chains + "IT-WEB", "");
  ASSERT_EQ(created.status, 200) << created.Describe();
  EXPECT_EQ(created.json["changed"], true);
  EXPECT_EQ(SaveText(*ns),
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
            ":IT-WEB - [0:0]\nCOMMIT\n");
  // PUT is idempotent.
  Reply again = http.Put(chains + "IT-WEB", "{}");
  ASSERT_EQ(again.status, 200) << again.Describe();
  EXPECT_EQ(again.json["changed"], false);

  Reply get = http.Get(chains + "IT-WEB");
  ASSERT_EQ(get.status, 200) << get.Describe();
  EXPECT_EQ(get.json["name"], "IT-WEB");
  EXPECT_EQ(get.json["table"], "filter");
  EXPECT_EQ(get.json["rules"], Json::array());
  ExpectError(http.Get(chains + "IT-NOPE"), 404, "not_found");

  // A builtin chain: PUT sets its policy, and needs one.
  Reply policy = http.Put(chains + "INPUT", R"({"policy": "DROP"})");
  ASSERT_EQ(policy.status, 200) << policy.Describe();
  EXPECT_NE(SaveText(*ns).find(":INPUT DROP [0:0]\n"), std::string::npos);
  ExpectError(http.Put(chains + "INPUT", "{}"), 400, "invalid_argument");
  ExpectError(http.Put(chains + "IT-WEB", R"({"policy": "DROP"})"), 400, "invalid_argument");
  ExpectError(http.Put(chains + "INPUT", R"({"policy": "REJECT"})"), 400, "invalid_argument");
  ASSERT_EQ(http.Put(chains + "INPUT", R"({"policy": "ACCEPT"})").status, 200);

  ASSERT_EQ(http.Post(RulesPath("INPUT"), R"({"spec": "-p tcp --dport 80 -j IT-WEB"})").status, 200);
  ASSERT_EQ(http.Post(RulesPath("IT-WEB"), R"({"spec": "-j RETURN"})").status, 200);
  const std::string with_jump = SaveText(*ns);
  EXPECT_EQ(with_jump,
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
            ":IT-WEB - [0:0]\n-A INPUT -p tcp -m tcp --dport 80 -j IT-WEB\n-A IT-WEB -j RETURN\nCOMMIT\n");
  // Referenced: refused without cascade, and nothing changes.
  Reply referenced = http.Delete(chains + "IT-WEB");
  ExpectError(referenced, 412, "failed_precondition");
  EXPECT_EQ(SaveText(*ns), with_jump);
  ExpectError(http.Delete(chains + "IT-WEB?cascade=maybe"), 400, "invalid_argument");
  Reply cascade = http.Delete(chains + "IT-WEB?cascade=1");
  ASSERT_EQ(cascade.status, 200) << cascade.Describe();
  EXPECT_EQ(SaveText(*ns), kEmptyFilter);
  ExpectError(http.Delete(chains + "IT-WEB"), 404, "not_found");
}

TEST(DaemonEndpoints, Rules) {
  IPTKIT_NEW_NETNS(ns);
  ASSERT_OK_AND_ASSIGN(auto daemon, Daemon::Start(*ns));
  HttpClient http = daemon->Admin();
  const std::string rules = RulesPath("INPUT");

  Reply appended = http.Post(rules, R"({"spec": "-s 192.0.2.1 -j DROP"})");
  ASSERT_EQ(appended.status, 200) << appended.Describe();
  ASSERT_EQ(appended.json["tables"].size(), 1u) << appended.body;
  EXPECT_EQ(appended.json["tables"][0]["restore_text"], "*filter\n-A INPUT -s 192.0.2.1 -j DROP\nCOMMIT\n");
  EXPECT_EQ(appended.json["dry_run"], false);
  EXPECT_EQ(appended.json["batch_requests"], 1);
  Reply first = http.Post(rules + "?position=1", R"({"spec": "-s 192.0.2.2 -j ACCEPT"})");
  ASSERT_EQ(first.status, 200) << first.Describe();
  Reply middle = http.Post(rules + "?position=2", R"({"spec": "-p tcp --dport 22 -j ACCEPT"})");
  ASSERT_EQ(middle.status, 200) << middle.Describe();
  ExpectError(http.Post(rules + "?position=0", R"({"spec": "-j ACCEPT"})"), 400, "invalid_argument");
  EXPECT_EQ(SaveText(*ns),
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
            "-A INPUT -s 192.0.2.2/32 -j ACCEPT\n-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\n"
            "-A INPUT -s 192.0.2.1/32 -j DROP\nCOMMIT\n");

  Reply list = http.Get(rules);
  ASSERT_EQ(list.status, 200) << list.Describe();
  EXPECT_EQ(list.json["chain"], "INPUT");
  EXPECT_EQ(Specs(list.json["rules"]),
            (V{"-s 192.0.2.2/32 -j ACCEPT", "-p tcp -m tcp --dport 22 -j ACCEPT", "-s 192.0.2.1/32 -j DROP"}));
  EXPECT_EQ(list.json["rules"][2]["index"], 3);
  ExpectError(http.Get(RulesPath("NOPE")), 404, "not_found");

  Reply one = http.Get(rules + "/2");
  ASSERT_EQ(one.status, 200) << one.Describe();
  EXPECT_EQ(one.json["spec"], "-p tcp -m tcp --dport 22 -j ACCEPT");
  EXPECT_EQ(one.json["chain"], "INPUT");
  EXPECT_EQ(one.json["index"], 2);
  ExpectError(http.Get(rules + "/4"), 404, "not_found");
  ExpectError(http.Get(rules + "/0"), 404, "not_found");
  ExpectError(http.Get(rules + "/two"), 404, "not_found");

  // Replace with "expect": the rule at the index must be that one.
  Reply replaced =
      http.Put(rules + "/2", R"({"spec": "-p tcp --dport 2222 -j ACCEPT", "expect": "-p tcp --dport 22 -j ACCEPT"})");
  ASSERT_EQ(replaced.status, 200) << replaced.Describe();
  const std::string after_replace = SaveText(*ns);
  EXPECT_EQ(after_replace,
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
            "-A INPUT -s 192.0.2.2/32 -j ACCEPT\n-A INPUT -p tcp -m tcp --dport 2222 -j ACCEPT\n"
            "-A INPUT -s 192.0.2.1/32 -j DROP\nCOMMIT\n");
  ExpectError(http.Put(rules + "/2", R"({"spec": "-j ACCEPT", "expect": "-s 10.0.0.1 -j DROP"})"), 412,
              "failed_precondition");
  EXPECT_EQ(SaveText(*ns), after_replace);

  // Delete by index (with and without a matching expect).
  ExpectError(http.Delete(rules + "/1", R"({"expect": "-s 203.0.113.1 -j DROP"})"), 412, "failed_precondition");
  EXPECT_EQ(SaveText(*ns), after_replace);
  Reply by_index = http.Delete(rules + "/1", R"({"expect": {"spec": "-s 192.0.2.2/32 -j ACCEPT"}})");
  ASSERT_EQ(by_index.status, 200) << by_index.Describe();
  // Delete by spec, in the user's spelling.
  Reply by_spec = http.Delete(rules, R"({"spec": "-s 192.0.2.1 -j DROP"})");
  ASSERT_EQ(by_spec.status, 200) << by_spec.Describe();
  EXPECT_EQ(SaveText(*ns),
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
            "-A INPUT -p tcp -m tcp --dport 2222 -j ACCEPT\nCOMMIT\n");
  ExpectError(http.Delete(rules, R"({"spec": "-s 192.0.2.1 -j DROP"})"), 404, "not_found");
  Reply last = http.Delete(rules + "/1");
  ASSERT_EQ(last.status, 200) << last.Describe();
  EXPECT_EQ(SaveText(*ns), kEmptyFilter);

  // IPv6.
  ASSERT_EQ(http.Post(RulesPath("INPUT", Family::kIPv6), R"({"spec": "-s 2001:db8::1 -p ipv6-icmp -j ACCEPT"})").status,
            200);
  EXPECT_EQ(SaveText(*ns, Family::kIPv6),
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
            "-A INPUT -s 2001:db8::1/128 -p ipv6-icmp -j ACCEPT\nCOMMIT\n");
  ExpectError(http.Post(RulesPath("INPUT", Family::kIPv6), R"({"spec": "-s 192.0.2.1 -j DROP"})"), 400,
              "invalid_argument");
}

TEST(DaemonEndpoints, TransactionsDryRunAndConfirm) {
  IPTKIT_NEW_NETNS(ns);
  ASSERT_TRUE(ns->Iptables(Variant::kNft, Family::kIPv4, {"-A", "INPUT", "-i", "lo", "-j", "ACCEPT"}).ok());
  ASSERT_OK_AND_ASSIGN(auto daemon, Daemon::Start(*ns));
  HttpClient http = daemon->Admin();
  const std::string before = SaveText(*ns);
  const Json append = {{"ops", {{{"append", {{"chain", "INPUT"}, {"rule", {{"spec", "-s 198.51.100.1 -j DROP"}}}}}}}}};
  auto with = [&](const Json& extra) {
    Json j = append;
    j.update(extra);
    return j.dump();
  };

  // Dry runs (query or body) return the restore text and change nothing.
  for (const auto& [path, body] : std::vector<std::pair<std::string, std::string>>{
           {"/v1/transactions?dry_run=1", append.dump()}, {"/v1/transactions", with({{"dry_run", true}})}}) {
    Reply dry = http.Post(path, body);
    ASSERT_EQ(dry.status, 200) << dry.Describe();
    EXPECT_EQ(dry.json["dry_run"], true);
    EXPECT_EQ(dry.json["changed"], true);
    ASSERT_EQ(dry.json["tables"].size(), 1u) << dry.body;
    EXPECT_EQ(dry.json["tables"][0]["restore_text"], "*filter\n-A INPUT -s 198.51.100.1 -j DROP\nCOMMIT\n");
    EXPECT_EQ(SaveText(*ns), before);
  }

  // A transaction is all or nothing: the second op fails, the first is not applied either.
  Reply half = http.Post("/v1/transactions", R"({"ops": [
      {"append": {"chain": "INPUT", "rule": {"spec": "-s 198.51.100.2 -j DROP"}}},
      {"append": {"chain": "IT-MISSING", "rule": {"spec": "-j RETURN"}}}]})");
  ExpectError(half, 404, "not_found");
  EXPECT_EQ(half.json["error"]["details"].value("field", ""), "/ops/1") << half.body;
  EXPECT_EQ(SaveText(*ns), before);

  Reply multi = http.Post("/v1/transactions", R"({"ops": [
      {"create_chain": {"chain": "IT-SSH"}},
      {"append": {"chain": "IT-SSH", "rule": {"spec": "-s 10.0.0.0/8 -j ACCEPT"}}},
      {"insert": {"chain": "INPUT", "index": 1, "rule": {"spec": "-p tcp --dport 22 -j IT-SSH"}}}]})");
  ASSERT_EQ(multi.status, 200) << multi.Describe();
  EXPECT_EQ(SaveText(*ns),
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
            ":IT-SSH - [0:0]\n-A INPUT -p tcp -m tcp --dport 22 -j IT-SSH\n-A INPUT -i lo -j ACCEPT\n"
            "-A IT-SSH -s 10.0.0.0/8 -j ACCEPT\nCOMMIT\n");

  // Commit-confirm: pending, confirmed, and a second confirm finds nothing pending.
  Reply pending = http.Post("/v1/transactions", with({{"confirm_within", 60}}));
  ASSERT_EQ(pending.status, 200) << pending.Describe();
  const std::string id = pending.json["transaction"];
  EXPECT_EQ(pending.json["confirm_url"], "/v1/transactions/" + id + "/confirm");
  EXPECT_TRUE(pending.json["confirm_deadline"].is_string());
  Reply state = http.Get("/v1/transactions/" + id);
  ASSERT_EQ(state.status, 200) << state.Describe();
  EXPECT_EQ(state.json["state"], "pending");
  EXPECT_EQ(state.json["principal"], "token:admin");
  EXPECT_TRUE(state.json["resolved_at"].is_null());
  Reply confirmed = http.Post("/v1/transactions/" + id + "/confirm", "");
  ASSERT_EQ(confirmed.status, 200) << confirmed.Describe();
  EXPECT_EQ(confirmed.json["state"], "confirmed");
  EXPECT_EQ(http.Get("/v1/transactions/" + id).json["state"], "confirmed");
  ExpectError(http.Post("/v1/transactions/" + id + "/confirm", ""), 404, "not_found");
  ExpectError(http.Get("/v1/transactions/t-0000000000000000"), 404, "not_found");
  ExpectError(http.Post("/v1/transactions", with({{"confirm_within", 5}, {"dry_run", true}})), 400, "invalid_argument");
  EXPECT_NE(SaveText(*ns).find("-A INPUT -s 198.51.100.1/32 -j DROP\n"), std::string::npos);
}

TEST(DaemonEndpoints, Owners) {
  IPTKIT_NEW_NETNS(ns);
  // No drift repair during the test: GET must show the drift made by hand.
  ASSERT_OK_AND_ASSIGN(auto daemon, Daemon::Start(*ns, {.args = {"--drift-interval", "1h"}}));
  HttpClient http = daemon->Admin();
  ASSERT_TRUE(ns->Iptables(Variant::kNft, Family::kIPv4, {"-A", "INPUT", "-i", "lo", "-j", "ACCEPT"}).ok());
  const Json doc = Json::parse(R"({
      "chains": [{"name": "WEB-IN", "rules": [{"spec": "-p tcp --dport 80 -j ACCEPT"}, {"spec": "-j RETURN"}]}],
      "hooks": [{"chain": "INPUT", "position": "first", "spec": "-j WEB-IN"}]})");

  Reply put = http.Put("/v1/owners/web", doc.dump());
  ASSERT_EQ(put.status, 200) << put.Describe();
  EXPECT_EQ(put.json["changed"], true);
  EXPECT_FALSE(put.json["steps"].empty()) << put.body;
  const std::string applied = SaveText(*ns);
  std::vector<std::string> tagged = TaggedLines(applied, "web");
  ASSERT_EQ(tagged.size(), 3u) << applied;
  EXPECT_TRUE(tagged[0].starts_with("-A INPUT -m comment --comment \"iptkit:web:")) << tagged[0];
  EXPECT_TRUE(tagged[0].ends_with("\" -j WEB-IN")) << tagged[0];
  EXPECT_TRUE(tagged[1].starts_with("-A WEB-IN -p tcp -m tcp --dport 80 -m comment --comment \"iptkit:web:"));
  EXPECT_TRUE(tagged[2].starts_with("-A WEB-IN -m comment --comment \"iptkit:web:")) << tagged[2];
  EXPECT_NE(applied.find(":WEB-IN - [0:0]\n"), std::string::npos);
  EXPECT_NE(applied.find("-A INPUT -i lo -j ACCEPT\n"), std::string::npos);
  // The same document again: nothing to do.
  Reply same = http.Put("/v1/owners/web", doc.dump());
  ASSERT_EQ(same.status, 200) << same.Describe();
  EXPECT_EQ(same.json["changed"], false);
  EXPECT_EQ(SaveText(*ns), applied);

  Reply get = http.Get("/v1/owners/web");
  ASSERT_EQ(get.status, 200) << get.Describe();
  EXPECT_EQ(get.json["owner"], "web");
  EXPECT_EQ(get.json["in_sync"], true);
  EXPECT_EQ(get.json["drift"], Json::array());
  EXPECT_EQ(get.json["document"]["owner"], "web") << get.body;

  // Drift made by hand shows up.
  ASSERT_TRUE(ns->Iptables(Variant::kNft, Family::kIPv4, {"-D", "INPUT", "1"}).ok());
  Reply drift = http.Get("/v1/owners/web");
  ASSERT_EQ(drift.status, 200) << drift.Describe();
  EXPECT_EQ(drift.json["in_sync"], false);
  EXPECT_FALSE(drift.json["drift"].empty()) << drift.body;
  ASSERT_EQ(http.Put("/v1/owners/web", doc.dump()).status, 200);
  EXPECT_EQ(SaveText(*ns), applied);
  EXPECT_EQ(http.Get("/v1/owners/web").json["in_sync"], true);

  Reply all = http.Get("/v1/owners");
  ASSERT_EQ(all.status, 200) << all.Describe();
  ASSERT_EQ(all.json["owners"].size(), 1u) << all.body;
  EXPECT_EQ(all.json["owners"][0]["owner"], "web");
  EXPECT_FALSE(all.json["owners"][0].contains("in_sync"));

  ExpectError(http.Put("/v1/owners/web", R"({"owner": "other", "chains": []})"), 400, "invalid_argument");
  ExpectError(http.Put("/v1/owners/web", R"({"hooks": []})"), 400, "invalid_argument");
  ExpectError(http.Get("/v1/owners/nobody"), 404, "not_found");
  ExpectError(http.Get("/v1/owners/Not_An_Owner"), 404, "not_found");
  EXPECT_EQ(SaveText(*ns), applied);

  Reply del = http.Delete("/v1/owners/web");
  ASSERT_EQ(del.status, 200) << del.Describe();
  EXPECT_EQ(SaveText(*ns),
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
            "-A INPUT -i lo -j ACCEPT\nCOMMIT\n");
  ExpectError(http.Delete("/v1/owners/web"), 404, "not_found");
  EXPECT_EQ(http.Get("/v1/owners").json["owners"], Json::array());
}

// docs/daemon.md "Owners": imperative changes of owned rules are refused with 412; an imperative flush of a chain
// holding owned rules is repaired in the same commit.
TEST(DaemonEndpoints, ImperativeChangesOfOwnedRules) {
  IPTKIT_NEW_NETNS(ns);
  ASSERT_OK_AND_ASSIGN(auto daemon, Daemon::Start(*ns, {.args = {"--drift-interval", "1h"}}));
  HttpClient http = daemon->Admin();
  const std::string rules = RulesPath("INPUT");
  ASSERT_EQ(http.Post(rules, R"({"spec": "-i lo -j ACCEPT"})").status, 200);
  Reply owned = http.Post(rules, R"({"spec": "-s 192.0.2.66 -j DROP", "owner": "ops"})");
  ASSERT_EQ(owned.status, 200) << owned.Describe();
  const std::string applied = SaveText(*ns);
  const std::vector<std::string> tagged = TaggedLines(applied, "ops");
  ASSERT_EQ(tagged.size(), 1u) << applied;
  const std::string tagged_spec = tagged[0].substr(std::string("-A INPUT ").size());
  ASSERT_EQ(http.Get(rules + "/2").json["spec"], tagged_spec);

  ExpectError(http.Delete(rules + "/2"), 412, "failed_precondition");
  // A spec with an owner tag is refused already by the rule route (give "owner" instead).
  ExpectError(http.Delete(rules, Json{{"spec", tagged_spec}}.dump()), 400, "invalid_argument");
  ExpectError(http.Post("/v1/transactions",
                        Json{{"ops", {{{"delete", {{"chain", "INPUT"}, {"rule", {{"spec", tagged_spec}}}}}}}}}.dump()),
              412, "failed_precondition");
  ExpectError(http.Post("/v1/transactions", Json{{"ops", {{{"delete", {{"chain", "INPUT"}, {"index", 2}}}}}}}.dump()),
              412, "failed_precondition");
  EXPECT_EQ(SaveText(*ns), applied);
  Reply replaced = http.Put(rules + "/2", R"({"spec": "-s 192.0.2.67 -j DROP"})");
  ExpectError(replaced, 412, "failed_precondition");
  EXPECT_EQ(SaveText(*ns), applied);
  // Through its owner it goes.
  Reply removed = http.Delete(rules, R"({"spec": "-s 192.0.2.66 -j DROP", "owner": "ops"})");
  ASSERT_EQ(removed.status, 200) << removed.Describe();
  EXPECT_EQ(SaveText(*ns),
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
            "-A INPUT -i lo -j ACCEPT\nCOMMIT\n");

  // A flush of INPUT takes the foreign rule; the owned one is put back in the same commit.
  ASSERT_EQ(http.Post(rules, R"({"spec": "-s 192.0.2.66 -j DROP", "owner": "ops"})").status, 200);
  Reply flushed = http.Post("/v1/transactions", R"({"ops": [{"flush": {"chain": "INPUT"}}]})");
  ASSERT_EQ(flushed.status, 200) << flushed.Describe();
  EXPECT_EQ(SaveText(*ns),
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n" + tagged[0] + "\nCOMMIT\n");
  EXPECT_EQ(http.Get("/v1/owners/ops").json["in_sync"], true);
}

// Regression: responses were written as two segments (headers, body) without TCP_NODELAY, so on a keep-alive
// connection every answer waited for the client's delayed ACK: 40 ms per request.
TEST(DaemonEndpoints, KeepAliveAnswersAreNotDelayed) {
  IPTKIT_NEW_NETNS(ns);
  ASSERT_OK_AND_ASSIGN(auto daemon, Daemon::Start(*ns));
  HttpClient http = daemon->Admin();
  ASSERT_EQ(http.Get("/v1/version").status, 200);
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 100; ++i) ASSERT_EQ(http.Get("/v1/version").status, 200);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(seconds, 2.0) << "100 keep-alive requests took " << seconds << " s";
}

TEST(DaemonEndpoints, AuditFiltersAndPaging) {
  IPTKIT_NEW_NETNS(ns);
  ASSERT_OK_AND_ASSIGN(auto daemon, Daemon::Start(*ns));
  HttpClient http = daemon->Admin();
  auto with_id = [&](const std::string& method, const std::string& path, const std::string& body,
                     const std::string& request_id) {
    return http.Send(Request{method, path, body, "application/json", {{"X-Request-Id", request_id}}});
  };
  ASSERT_EQ(with_id("POST", RulesPath("INPUT"), R"({"spec": "-s 192.0.2.1 -j DROP"})", "audit-1").status, 200);
  Reply failed = with_id("DELETE", RulesPath("INPUT"), R"({"spec": "-s 192.0.2.99 -j DROP"})", "audit-2");
  ExpectError(failed, 404, "not_found");
  EXPECT_EQ(failed.Header("X-Request-Id"), "audit-2");
  ASSERT_EQ(with_id("POST", RulesPath("INPUT"), R"({"spec": "-s 192.0.2.3 -j DROP"})", "audit-3").status, 200);
  ASSERT_EQ(with_id("PUT", "/v1/ipv4/tables/filter/chains/IT-A", "", "audit-4").status, 200);

  Reply one = http.Get("/v1/audit?request_id=audit-1");
  ASSERT_EQ(one.status, 200) << one.Describe();
  ASSERT_EQ(one.json["entries"].size(), 1u) << one.body;
  const Json& e1 = one.json["entries"][0];
  EXPECT_EQ(e1["principal"], "token:admin");
  EXPECT_EQ(e1["action"], "append");
  EXPECT_EQ(e1["result"], "ok");
  EXPECT_EQ(e1["request"], Json({{"spec", "-s 192.0.2.1 -j DROP"}}));
  EXPECT_NE(e1["diff"].get<std::string>().find("-A INPUT -s 192.0.2.1 -j DROP"), std::string::npos) << e1;

  Reply errors = http.Get("/v1/audit?result=error");
  ASSERT_EQ(errors.status, 200) << errors.Describe();
  ASSERT_EQ(errors.json["entries"].size(), 1u) << errors.body;
  EXPECT_EQ(errors.json["entries"][0]["request_id"], "audit-2");
  EXPECT_EQ(errors.json["entries"][0]["result"], "NOT_FOUND");
  EXPECT_EQ(errors.json["entries"][0]["action"], "delete");

  Reply appends = http.Get("/v1/audit?action=append&result=ok&principal=token:admin");
  ASSERT_EQ(appends.status, 200) << appends.Describe();
  std::vector<std::string> ids;
  for (const Json& e : appends.json["entries"]) ids.push_back(e["request_id"]);
  EXPECT_EQ(ids, (V{"audit-3", "audit-1"}));  // newest first
  EXPECT_EQ(http.Get("/v1/audit?principal=token:nobody").json["entries"], Json::array());
  EXPECT_EQ(http.Get("/v1/audit?since=2999-01-01T00:00:00Z").json["entries"], Json::array());
  EXPECT_EQ(http.Get("/v1/audit?until=2000-01-01T00:00:00Z").json["entries"], Json::array());

  // Paging with limit and next_before gives exactly the unpaged list.
  Reply everything = http.Get("/v1/audit");
  ASSERT_EQ(everything.status, 200) << everything.Describe();
  ASSERT_EQ(everything.json["entries"].size(), 4u) << everything.body;
  EXPECT_TRUE(everything.json["next_before"].is_null());
  std::vector<int64_t> all_ids, paged_ids;
  for (const Json& e : everything.json["entries"]) all_ids.push_back(e["id"]);
  std::string page = "/v1/audit?limit=1";
  for (int i = 0; i < 10; ++i) {
    Reply r = http.Get(page);
    ASSERT_EQ(r.status, 200) << r.Describe();
    for (const Json& e : r.json["entries"]) paged_ids.push_back(e["id"]);
    if (r.json["next_before"].is_null()) break;
    EXPECT_EQ(r.json["entries"].size(), 1u);
    page = "/v1/audit?limit=1&before=" + std::to_string(r.json["next_before"].get<int64_t>());
  }
  EXPECT_EQ(paged_ids, all_ids);

  ExpectError(http.Get("/v1/audit?limit=0"), 400, "invalid_argument");
  ExpectError(http.Get("/v1/audit?limit=1001"), 400, "invalid_argument");
  ExpectError(http.Get("/v1/audit?since=yesterday"), 400, "invalid_argument");
  ExpectError(http.Get("/v1/audit?result=maybe"), 400, "invalid_argument");
  ExpectError(http.Get("/v1/audit?flavour=vanilla"), 400, "invalid_argument");
}

TEST(DaemonEndpoints, EventStreamDeliversCommits) {
  IPTKIT_NEW_NETNS(ns);
  ASSERT_OK_AND_ASSIGN(auto daemon, Daemon::Start(*ns));
  HttpClient http = daemon->Admin();
  ExpectError(http.Get("/v1/events?after=-1"), 400, "invalid_argument");

  std::string frame;
  {
    CommitStream stream(*daemon, "/v1/events");
    // The stream is registered once its request was handled (counted in the metrics); then make a change.
    ASSERT_TRUE(WaitUntil(
        [&] {
          return MetricValue(http.Get("/metrics").body, "iptkitd_http_requests_total",
                             {{"route", "/v1/events"}, {"code", "200"}})
              .has_value();
        },
        std::chrono::seconds(10)));
    Reply change = http.Send(Request{"POST",
                                     RulesPath("INPUT"),
                                     R"({"spec": "-s 192.0.2.7 -j DROP"})",
                                     "application/json",
                                     {{"X-Request-Id", "sse-1"}}});
    ASSERT_EQ(change.status, 200) << change.Describe();
    ASSERT_TRUE(stream.Wait(std::chrono::seconds(10))) << "no commit event within 10 s";
    EXPECT_EQ(stream.reply().status, 200) << stream.reply().Describe();
    frame = stream.frame();
  }
  ASSERT_TRUE(frame.starts_with("id: ")) << frame;
  const std::vector<std::string> lines = Lines(frame);
  ASSERT_GE(lines.size(), 3u) << frame;
  EXPECT_EQ(lines[1], "event: commit");
  ASSERT_TRUE(lines[2].starts_with("data: ")) << frame;
  Json data = Json::parse(lines[2].substr(6), nullptr, false);
  ASSERT_TRUE(data.is_object()) << frame;
  EXPECT_EQ(data["request_id"], "sse-1");
  EXPECT_EQ(data["action"], "append");
  EXPECT_EQ(data["principal"], "token:admin");
  ASSERT_EQ(data["tables"].size(), 1u) << frame;
  EXPECT_EQ(data["tables"][0]["restore_text"], "*filter\n-A INPUT -s 192.0.2.7 -j DROP\nCOMMIT\n");

  // Resuming from an earlier id (?after=N) replays the frame.
  const int64_t id = std::stoll(lines[0].substr(4));
  CommitStream replay(*daemon, "/v1/events?after=" + std::to_string(id - 1));
  ASSERT_TRUE(replay.Wait(std::chrono::seconds(10))) << "?after=" << id - 1 << " did not replay the commit event";
  EXPECT_EQ(replay.frame(), frame);
}

TEST(DaemonEndpoints, LegacyBackendBasics) {
  IPTKIT_NEW_NETNS(ns);
  IPTKIT_REQUIRE_VARIANT(*ns, Variant::kLegacy, Family::kIPv4);
  IPTKIT_REQUIRE_VARIANT(*ns, Variant::kLegacy, Family::kIPv6);
  DaemonOptions options;
  options.backend = "legacy";
  ASSERT_OK_AND_ASSIGN(auto daemon, Daemon::Start(*ns, options));
  EXPECT_EQ(daemon->ready()["backend"], "legacy");
  HttpClient http = daemon->Admin();
  EXPECT_EQ(http.Get("/v1/version").json["backend"], "legacy");
  auto save = [&] { return SaveText(*ns, Family::kIPv4, Variant::kLegacy, "filter"); };

  ASSERT_EQ(http.Post(RulesPath("INPUT"), R"({"spec": "-s 192.0.2.1 -j DROP"})").status, 200);
  ASSERT_EQ(http.Post(RulesPath("INPUT") + "?position=1", R"({"spec": "-p tcp --dport 22 -j ACCEPT"})").status, 200);
  EXPECT_EQ(save(),
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
            "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\n-A INPUT -s 192.0.2.1/32 -j DROP\nCOMMIT\n");
  Reply list = http.Get(RulesPath("INPUT"));
  ASSERT_EQ(list.status, 200) << list.Describe();
  EXPECT_EQ(Specs(list.json["rules"]), (V{"-p tcp -m tcp --dport 22 -j ACCEPT", "-s 192.0.2.1/32 -j DROP"}));
  ASSERT_EQ(http.Delete(RulesPath("INPUT"), R"({"spec": "-s 192.0.2.1/32 -j DROP"})").status, 200);
  ExpectError(http.Delete(RulesPath("INPUT"), R"({"spec": "-s 192.0.2.1/32 -j DROP"})"), 404, "not_found");
  EXPECT_EQ(save(),
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
            "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\nCOMMIT\n");

  Reply put = http.Put("/v1/owners/app", R"({"chains": [{"name": "APP-IN", "rules": [{"spec": "-j RETURN"}]}],
                                          "hooks": [{"chain": "INPUT", "position": "last", "spec": "-j APP-IN"}]})");
  ASSERT_EQ(put.status, 200) << put.Describe();
  const std::string owned = save();
  std::vector<std::string> tagged = TaggedLines(owned, "app");
  ASSERT_EQ(tagged.size(), 2u) << owned;
  EXPECT_TRUE(tagged[0].starts_with("-A INPUT -m comment --comment \"iptkit:app:")) << tagged[0];
  EXPECT_TRUE(tagged[1].starts_with("-A APP-IN -m comment --comment \"iptkit:app:")) << tagged[1];
  EXPECT_NE(owned.find("-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\n-A INPUT -m comment"), std::string::npos) << owned;
  EXPECT_EQ(http.Get("/v1/owners/app").json["in_sync"], true);
  ASSERT_EQ(http.Delete("/v1/owners/app").status, 200);
  EXPECT_EQ(save(),
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
            "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\nCOMMIT\n");
}

}  // namespace
}  // namespace iptkit::daemontest
