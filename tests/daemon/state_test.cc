// The daemon's own state over time, against the real kernel: TTL expiry (also across a restart), owned state that
// survives a restart and a flush, drift repair after a foreign flush, and commit-confirm rollbacks (also at start-up).
#include <gtest/gtest.h>

#include <thread>

#include "tests/daemon/daemon_fixture.h"
#include "tests/integration/test_util.h"

namespace iptkit::daemontest {
namespace {

using integration::Variant;
using Clock = std::chrono::steady_clock;

constexpr const char* kEmptyFilter =
    "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n";

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Flushes and deletes every chain of the filter table by hand, as a reboot would leave it.
void FlushFilterByHand(const TestNetns& ns) {
  for (const auto& args : {std::vector<std::string>{"-F"}, std::vector<std::string>{"-X"}}) {
    CommandResult r = ns.Iptables(Variant::kNft, Family::kIPv4, args);
    ASSERT_TRUE(r.ok()) << r.Describe();
  }
}

TEST(DaemonState, TtlRuleExpires) {
  IPTKIT_NEW_NETNS(ns);
  ASSERT_OK_AND_ASSIGN(auto daemon, Daemon::Start(*ns));
  HttpClient http = daemon->Admin();
  const auto t0 = Clock::now();
  Reply added = http.Post(RulesPath("INPUT"), R"({"spec": "-s 203.0.113.7 -j DROP", "ttl": 2})");
  ASSERT_EQ(added.status, 200) << added.Describe();
  ASSERT_EQ(added.json["managed"].size(), 1u) << added.body;
  const Json& managed = added.json["managed"][0];
  EXPECT_EQ(managed["owner"], "iptkitd");
  EXPECT_EQ(managed["ttl_remaining"], 2);
  EXPECT_TRUE(managed["expires_at"].is_string());
  const std::string id = managed["id"];
  EXPECT_EQ(SaveText(*ns),
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
            "-A INPUT -s 203.0.113.7/32 -m comment --comment \"iptkit:iptkitd:" +
                id + "\" -j DROP\nCOMMIT\n");

  // GET shows the time left.
  Reply listed = http.Get(RulesPath("INPUT") + "/1");
  ASSERT_EQ(listed.status, 200) << listed.Describe();
  EXPECT_EQ(listed.json["managed"], true) << listed.body;
  EXPECT_GE(listed.json["ttl_remaining"].get<int>(), 1) << listed.body;
  EXPECT_LE(listed.json["ttl_remaining"].get<int>(), 2) << listed.body;
  EXPECT_EQ(listed.json["expires_at"], managed["expires_at"]);
  Reply owner = http.Get("/v1/owners/iptkitd");
  ASSERT_EQ(owner.status, 200) << owner.Describe();
  ASSERT_EQ(owner.json["managed"].size(), 1u);
  EXPECT_TRUE(owner.json["managed"][0]["ttl_remaining"].is_number());

  ASSERT_TRUE(WaitUntil([&] { return TaggedLines(SaveText(*ns), "iptkitd").empty(); }, std::chrono::seconds(6)))
      << "the rule with ttl 2 is still there after 6 s";
  EXPECT_GE(Seconds(Clock::now() - t0), 1.5) << "removed before its TTL passed";
  EXPECT_EQ(SaveText(*ns), kEmptyFilter);

  // The audit entry is stored after the kernel commit (by the store writer), and the expiry counted after that.
  Reply audit;
  WaitUntil(
      [&] {
        audit = http.Get("/v1/audit?action=ttl_expire");
        return audit.status == 200 && audit.json["entries"].size() == 1u &&
               MetricValue(http.Get("/metrics").body, "iptkitd_ttl_expiries_total") == 1.0;
      },
      std::chrono::seconds(5));
  ASSERT_EQ(audit.status, 200) << audit.Describe();
  ASSERT_EQ(audit.json["entries"].size(), 1u) << audit.body;
  EXPECT_EQ(audit.json["entries"][0]["principal"], "iptkitd");
  EXPECT_EQ(audit.json["entries"][0]["result"], "ok");
  EXPECT_NE(audit.json["entries"][0]["diff"].get<std::string>().find("-s 203.0.113.7/32"), std::string::npos)
      << audit.body;
  Reply metrics = http.Get("/metrics");
  EXPECT_EQ(MetricValue(metrics.body, "iptkitd_ttl_expiries_total"), 1.0) << metrics.body;
  ExpectError(http.Get("/v1/owners/iptkitd"), 404, "not_found");
}

TEST(DaemonState, RepeatedTtlAddRefreshesTheDeadline) {
  IPTKIT_NEW_NETNS(ns);
  ASSERT_OK_AND_ASSIGN(auto daemon, Daemon::Start(*ns));
  HttpClient http = daemon->Admin();
  const auto t0 = Clock::now();
  Reply first = http.Post(RulesPath("INPUT"), R"({"spec": "-s 203.0.113.8 -j DROP", "ttl": 3})");
  ASSERT_EQ(first.status, 200) << first.Describe();
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  // The same add, spelled differently.
  Reply second = http.Post(RulesPath("INPUT"), R"({"spec": "-j DROP -s 203.0.113.8/32", "ttl": 3})");
  const auto t1 = Clock::now();
  ASSERT_EQ(second.status, 200) << second.Describe();
  const Json& m1 = first.json["managed"][0];
  const Json& m2 = second.json["managed"][0];
  EXPECT_EQ(m2["id"], m1["id"]);
  EXPECT_EQ(m2["created_at"], m1["created_at"]);
  EXPECT_GT(m2["expires_at"].get<std::string>(), m1["expires_at"].get<std::string>());
  const std::string save = SaveText(*ns);
  EXPECT_EQ(TaggedLines(save, "iptkitd").size(), 1u) << save;
  Reply owner = http.Get("/v1/owners/iptkitd");
  ASSERT_EQ(owner.json["managed"].size(), 1u) << owner.body;
  EXPECT_EQ(owner.json["managed"][0]["expires_at"], m2["expires_at"]);

  // Past the first deadline (t0 + 3 s) the rule is still there; it goes at the second (t1 + 3 s).
  std::this_thread::sleep_until(t0 + std::chrono::milliseconds(3600));
  EXPECT_EQ(TaggedLines(SaveText(*ns), "iptkitd").size(), 1u) << "expired at the first deadline";
  ASSERT_TRUE(WaitUntil([&] { return TaggedLines(SaveText(*ns), "iptkitd").empty(); }, std::chrono::seconds(5)));
  EXPECT_GE(Seconds(Clock::now() - t1), 2.5);
  EXPECT_EQ(SaveText(*ns), kEmptyFilter);
}

TEST(DaemonState, ExpiredTtlIsNotRestoredAfterRestart) {
  IPTKIT_NEW_NETNS(ns);
  ASSERT_OK_AND_ASSIGN(auto daemon, Daemon::Start(*ns));
  HttpClient http = daemon->Admin();
  const auto t0 = Clock::now();
  Reply temporary = http.Post(RulesPath("INPUT"), R"({"spec": "-s 203.0.113.9 -j DROP", "ttl": 3})");
  ASSERT_EQ(temporary.status, 200) << temporary.Describe();
  Reply permanent = http.Post(RulesPath("INPUT"), R"({"spec": "-s 198.51.100.9 -j ACCEPT", "owner": "keep"})");
  ASSERT_EQ(permanent.status, 200) << permanent.Describe();
  const std::string keep_id = permanent.json["managed"][0]["id"];
  EXPECT_EQ(TaggedLines(SaveText(*ns), "iptkitd").size(), 1u);
  http.Disconnect();
  ASSERT_STATUS_OK(daemon->Stop());
  ASSERT_LT(Clock::now(), t0 + std::chrono::seconds(3)) << "stopped after the deadline: the start-up is not tested";

  // A "reboot": the kernel forgets everything; the TTL passes while the daemon is down.
  FlushFilterByHand(*ns);
  ASSERT_EQ(SaveText(*ns), kEmptyFilter);
  std::this_thread::sleep_until(t0 + std::chrono::milliseconds(3500));
  ASSERT_STATUS_OK(daemon->Launch());
  EXPECT_EQ(SaveText(*ns),
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
            "-A INPUT -s 198.51.100.9/32 -m comment --comment \"iptkit:keep:" +
                keep_id + "\" -j ACCEPT\nCOMMIT\n");
  HttpClient again = daemon->Admin();
  ExpectError(again.Get("/v1/owners/iptkitd"), 404, "not_found");
  Reply keep = again.Get("/v1/owners/keep");
  ASSERT_EQ(keep.status, 200) << keep.Describe();
  EXPECT_EQ(keep.json["in_sync"], true);
  Reply audit = again.Get("/v1/audit?action=ttl_expire");
  ASSERT_EQ(audit.json["entries"].size(), 1u) << audit.body;
  EXPECT_EQ(audit.json["entries"][0]["principal"], "iptkitd");
  // Nothing is left to expire later.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(TaggedLines(SaveText(*ns), "keep").size(), 1u);
}

TEST(DaemonState, OwnedStateIsReappliedAfterRestartAndFlush) {
  IPTKIT_NEW_NETNS(ns);
  ASSERT_OK_AND_ASSIGN(auto daemon, Daemon::Start(*ns));
  HttpClient http = daemon->Admin();
  Reply put = http.Put("/v1/owners/app", R"({
      "chains": [{"name": "APP-IN", "rules": [{"spec": "-p tcp --dport 443 -j ACCEPT"}, {"spec": "-j RETURN"}]}],
      "hooks": [{"chain": "INPUT", "position": "first", "spec": "-j APP-IN"}]})");
  ASSERT_EQ(put.status, 200) << put.Describe();
  Reply managed = http.Post(RulesPath("INPUT"), R"({"spec": "-s 192.0.2.44 -j DROP", "owner": "app"})");
  ASSERT_EQ(managed.status, 200) << managed.Describe();
  const std::string applied = SaveText(*ns);
  ASSERT_EQ(TaggedLines(applied, "app").size(), 4u) << applied;
  http.Disconnect();
  ASSERT_STATUS_OK(daemon->Stop());

  FlushFilterByHand(*ns);
  ASSERT_TRUE(ns->Iptables(Variant::kNft, Family::kIPv4, {"-A", "INPUT", "-s", "192.0.2.99", "-j", "ACCEPT"}).ok());
  ASSERT_STATUS_OK(daemon->Launch());

  // Expected: what was applied, with the foreign rule after the owner's first hook and before its last rule.
  std::string expected;
  for (const std::string& line : Lines(applied)) {
    expected += line + "\n";
    if (line.starts_with("-A INPUT ") && line.ends_with(" -j APP-IN"))
      expected += "-A INPUT -s 192.0.2.99/32 -j ACCEPT\n";
  }
  EXPECT_EQ(SaveText(*ns), expected);
  HttpClient again = daemon->Admin();
  Reply owner = again.Get("/v1/owners/app");
  ASSERT_EQ(owner.status, 200) << owner.Describe();
  EXPECT_EQ(owner.json["in_sync"], true) << owner.body;
  EXPECT_EQ(owner.json["managed"].size(), 1u);
  Reply audit = again.Get("/v1/audit?action=reconcile");
  ASSERT_EQ(audit.status, 200) << audit.Describe();
  ASSERT_EQ(audit.json["entries"].size(), 1u) << audit.body;
  EXPECT_EQ(audit.json["entries"][0]["principal"], "iptkitd");
}

TEST(DaemonState, ForeignFlushIsRepaired) {
  IPTKIT_NEW_NETNS(ns);
  ASSERT_OK_AND_ASSIGN(auto daemon, Daemon::Start(*ns, {.args = {"--drift-interval", "1s"}}));
  HttpClient http = daemon->Admin();
  Reply put = http.Put("/v1/owners/guard", R"({
      "chains": [{"name": "GUARD-IN", "rules": [{"spec": "-s 10.0.0.0/8 -j DROP"}]}],
      "hooks": [{"chain": "INPUT", "position": "first", "spec": "-j GUARD-IN"}]})");
  ASSERT_EQ(put.status, 200) << put.Describe();
  const std::string applied = SaveText(*ns);
  ASSERT_TRUE(ns->Iptables(Variant::kNft, Family::kIPv4, {"-A", "INPUT", "-s", "192.0.2.98", "-j", "ACCEPT"}).ok());
  EXPECT_FALSE(MetricValue(http.Get("/metrics").body, "iptkitd_drift_repairs_total", {{"owner", "guard"}}));

  const auto t0 = Clock::now();
  CommandResult flushed = ns->Iptables(Variant::kNft, Family::kIPv4, {"-F", "INPUT"});
  ASSERT_TRUE(flushed.ok()) << flushed.Describe();
  ASSERT_TRUE(WaitUntil([&] { return SaveText(*ns) == applied; }, std::chrono::seconds(5)))
      << "not repaired within 5 s:\n"
      << SaveText(*ns);
  std::cout << "repaired after " << Seconds(Clock::now() - t0) << " s\n";

  // The repair's audit entry is stored after the kernel commit (by the store writer), and counted after that.
  Reply audit;
  WaitUntil(
      [&] {
        audit = http.Get("/v1/audit?action=drift_repair");
        return audit.status == 200 && !audit.json["entries"].empty() &&
               MetricValue(http.Get("/metrics").body, "iptkitd_drift_repairs_total", {{"owner", "guard"}})
                       .value_or(0) >= 1.0;
      },
      std::chrono::seconds(5));
  Reply metrics = http.Get("/metrics");
  EXPECT_GE(MetricValue(metrics.body, "iptkitd_drift_repairs_total", {{"owner", "guard"}}).value_or(0), 1.0)
      << metrics.body;
  EXPECT_GE(MetricValue(metrics.body, "iptkitd_foreign_changes_total").value_or(0), 1.0);
  ASSERT_EQ(audit.status, 200) << audit.Describe();
  ASSERT_GE(audit.json["entries"].size(), 1u) << audit.body;
  EXPECT_EQ(audit.json["entries"][0]["principal"], "iptkitd");
  EXPECT_EQ(audit.json["entries"][0]["result"], "ok");
  EXPECT_NE(audit.json["entries"][0]["diff"].get<std::string>().find("-j GUARD-IN"), std::string::npos) << audit.body;
  EXPECT_EQ(http.Get("/v1/owners/guard").json["in_sync"], true);
}

TEST(DaemonState, CommitConfirmRollsBackUnlessConfirmed) {
  IPTKIT_NEW_NETNS(ns);
  ASSERT_OK_AND_ASSIGN(auto daemon, Daemon::Start(*ns));
  HttpClient http = daemon->Admin();
  ASSERT_EQ(http.Post(RulesPath("INPUT"), R"({"spec": "-i lo -j ACCEPT"})").status, 200);
  const std::string before = SaveText(*ns);
  const std::string before6 = SaveText(*ns, Family::kIPv6);

  // Not confirmed: the lock-out (policy DROP) and its rule go again.
  Reply risky = http.Post("/v1/transactions", R"({"confirm_within": 2, "ops": [
      {"policy": {"chain": "INPUT", "policy": "DROP"}},
      {"append": {"chain": "INPUT", "rule": {"spec": "-s 192.0.2.50 -j ACCEPT"}}}]})");
  ASSERT_EQ(risky.status, 200) << risky.Describe();
  const std::string risky_id = risky.json["transaction"];
  // Confirmed in time: stays (IPv6, so that the IPv4 text must equal `before` exactly).
  Reply safe = http.Post("/v1/transactions", R"({"confirm_within": 2, "ops": [
      {"append": {"family": "ipv6", "chain": "INPUT", "rule": {"spec": "-s 2001:db8::51 -j ACCEPT"}}}]})");
  ASSERT_EQ(safe.status, 200) << safe.Describe();
  const std::string safe_id = safe.json["transaction"];
  EXPECT_EQ(SaveText(*ns),
            "*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
            "-A INPUT -i lo -j ACCEPT\n-A INPUT -s 192.0.2.50/32 -j ACCEPT\nCOMMIT\n");
  Reply confirmed = http.Post("/v1/transactions/" + safe_id + "/confirm", "");
  ASSERT_EQ(confirmed.status, 200) << confirmed.Describe();
  EXPECT_EQ(http.Get("/v1/transactions/" + risky_id).json["state"], "pending");

  ASSERT_TRUE(WaitUntil([&] { return http.Get("/v1/transactions/" + risky_id).json["state"] == "rolled_back"; },
                        std::chrono::seconds(6)));
  EXPECT_EQ(SaveText(*ns), before);
  Reply state = http.Get("/v1/transactions/" + risky_id);
  EXPECT_TRUE(state.json["resolved_at"].is_string()) << state.body;
  EXPECT_NE(state.json["message"].get<std::string>().find("rolled back"), std::string::npos) << state.body;
  ExpectError(http.Post("/v1/transactions/" + risky_id + "/confirm", ""), 404, "not_found");

  // Past its deadline the confirmed one is still there.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_EQ(http.Get("/v1/transactions/" + safe_id).json["state"], "confirmed");
  const std::string after6 = SaveText(*ns, Family::kIPv6);
  EXPECT_NE(after6.find("-A INPUT -s 2001:db8::51/128 -j ACCEPT\n"), std::string::npos) << after6;
  EXPECT_NE(after6, before6);
  EXPECT_EQ(SaveText(*ns), before);

  Reply metrics = http.Get("/metrics");
  EXPECT_EQ(MetricValue(metrics.body, "iptkitd_confirm_rollbacks_total"), 1.0) << metrics.body;
  Reply audit = http.Get("/v1/audit?action=confirm_rollback");
  ASSERT_EQ(audit.json["entries"].size(), 1u) << audit.body;
  EXPECT_EQ(audit.json["entries"][0]["principal"], "iptkitd");
}

TEST(DaemonState, OverdueConfirmIsRolledBackAtStartup) {
  IPTKIT_NEW_NETNS(ns);
  ASSERT_OK_AND_ASSIGN(auto daemon, Daemon::Start(*ns));
  HttpClient http = daemon->Admin();
  ASSERT_EQ(http.Post(RulesPath("INPUT"), R"({"spec": "-i lo -j ACCEPT"})").status, 200);
  const std::string before = SaveText(*ns);
  const auto t0 = Clock::now();
  Reply risky = http.Post("/v1/transactions", R"({"confirm_within": 3, "ops": [
      {"policy": {"chain": "INPUT", "policy": "DROP"}},
      {"append": {"chain": "INPUT", "rule": {"spec": "-s 192.0.2.60 -j ACCEPT"}}}]})");
  ASSERT_EQ(risky.status, 200) << risky.Describe();
  const std::string id = risky.json["transaction"];
  const std::string applied = SaveText(*ns);
  ASSERT_NE(applied, before);
  http.Disconnect();
  const auto stopping = Clock::now();
  ASSERT_STATUS_OK(daemon->Stop());
  EXPECT_LT(Seconds(Clock::now() - stopping), 2.0) << "SIGTERM took long";
  ASSERT_LT(Clock::now(), t0 + std::chrono::seconds(3)) << "stopped after the deadline";

  std::this_thread::sleep_until(t0 + std::chrono::milliseconds(3500));
  EXPECT_EQ(SaveText(*ns), applied) << "nobody rolls back while the daemon is down";
  ASSERT_STATUS_OK(daemon->Launch());
  EXPECT_EQ(SaveText(*ns), before);
  Reply state = daemon->Admin().Get("/v1/transactions/" + id);
  ASSERT_EQ(state.status, 200) << state.Describe();
  EXPECT_EQ(state.json["state"], "rolled_back");
}

// Regression: on SIGTERM the TCP listeners waited for idle keep-alive connections until their keep-alive timeout
// (5 s: httplib's keep-alive wait does not look at stop()), and the writer still ran its timers meanwhile. Plain
// TCP connections are now served by http_server.cc's own loop (which checks for Stop every 100 ms) and the writer
// stops first.
TEST(DaemonState, SigtermWithAnIdleKeepAliveClientIsPrompt) {
  IPTKIT_NEW_NETNS(ns);
  ASSERT_OK_AND_ASSIGN(auto daemon, Daemon::Start(*ns));
  HttpClient http = daemon->Admin();
  ASSERT_EQ(http.Get("/v1/version").status, 200);  // the connection stays open, idle
  const auto t0 = Clock::now();
  ASSERT_STATUS_OK(daemon->Stop());
  EXPECT_LT(Seconds(Clock::now() - t0), 2.0) << "SIGTERM took " << Seconds(Clock::now() - t0) << " s";
}

}  // namespace
}  // namespace iptkit::daemontest
