// Owned sets of iptkitd end to end (docs/daemon.md "Owned sets"): sets in an owner's document, against a real
// daemon serving a private network namespace and checked with the real ipset(8) — created before the rules that
// use them, repaired after foreign `ipset del`/`add`/`destroy` within the drift interval, re-created after a
// restart with the time left of their timed entries, destroyed when the document drops them, refused to /v1/sets
// changes and to other owners, and a bad set in a document refused with the field named and nothing applied.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "tests/daemon/daemon_fixture.h"
#include "tests/integration/test_util.h"

namespace iptkit::daemontest {
namespace {

using integration::Variant;
using Clock = std::chrono::steady_clock;

bool SetExists(const TestNetns& ns, const std::string& name) {
  return ns.Exec({"ipset", "list", "-n", name}).exit_code == 0;
}

// Member lines of `ipset list NAME` ("192.0.2.2 timeout 599 comment \"ids\""), sorted; empty when no set.
std::vector<std::string> MemberLines(const TestNetns& ns, const std::string& name) {
  CommandResult r = ns.Exec({"ipset", "list", name});
  std::vector<std::string> out;
  if (r.exit_code != 0) return out;
  bool members = false;
  for (const std::string& line : Lines(r.out)) {
    if (line == "Members:") {
      members = true;
    } else if (members && !line.empty()) {
      out.push_back(line);
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> Members(const TestNetns& ns, const std::string& name) {
  std::vector<std::string> out;
  for (const std::string& line : MemberLines(ns, name)) out.push_back(line.substr(0, line.find(' ')));
  return out;
}

// The timeout ipset lists for `elem` (-1: no such member, or no timeout).
int TimeoutOf(const TestNetns& ns, const std::string& set, const std::string& elem) {
  for (const std::string& line : MemberLines(ns, set)) {
    if (line.substr(0, line.find(' ')) != elem) continue;
    const size_t at = line.find(" timeout ");
    if (at == std::string::npos) return -1;
    return std::stoi(line.substr(at + 9));
  }
  return -1;
}

void Ipset(const TestNetns& ns, const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"ipset"};
  argv.insert(argv.end(), args.begin(), args.end());
  CommandResult r = ns.Exec(argv);
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
}

const char* kDocument = R"({
  "chains": [{"name": "APP-IN", "rules": [{"spec": "-m set --match-set app-bl src -j DROP"}]}],
  "hooks": [{"chain": "INPUT", "position": "first", "spec": "-j APP-IN"}],
  "sets": [
    {"name": "app-bl", "type": "hash:ip", "options": {"timeout": 0, "comment": true},
     "entries": ["192.0.2.1", {"entry": "192.0.2.2", "timeout": 600, "comment": "ids"}]},
    {"name": "app-nets", "type": "hash:net", "entries": ["10.1.2.3/24", "10.9.0.0/16"]}
  ]})";

TEST(DaemonOwnedSets, CreatedRepairedRestoredAndDestroyed) {
  IPTKIT_NEW_NETNS(ns);
  ASSERT_OK_AND_ASSIGN(auto daemon, Daemon::Start(*ns, {.args = {"--drift-interval", "1s"}}));
  HttpClient http = daemon->Admin();
  Reply put = http.Put("/v1/owners/app", kDocument);
  ASSERT_EQ(put.status, 200) << put.Describe();
  EXPECT_EQ(Members(*ns, "app-bl"), (std::vector<std::string>{"192.0.2.1", "192.0.2.2"}));
  EXPECT_EQ(Members(*ns, "app-nets"), (std::vector<std::string>{"10.1.2.0/24", "10.9.0.0/16"}));
  const int t0 = TimeoutOf(*ns, "app-bl", "192.0.2.2");
  EXPECT_GE(t0, 595);
  EXPECT_LE(t0, 600);
  EXPECT_EQ(TimeoutOf(*ns, "app-bl", "192.0.2.1"), 0);  // permanent on a set with timeouts
  const std::string save = SaveText(*ns);
  EXPECT_NE(save.find("-m set --match-set app-bl src"), std::string::npos) << save;

  // The stored document holds the kernel's spelling and each timed entry's deadline.
  Reply owner = http.Get("/v1/owners/app");
  ASSERT_EQ(owner.status, 200) << owner.Describe();
  const Json& sets = owner.json["document"]["sets"];
  ASSERT_EQ(sets.size(), 2u) << owner.body;
  EXPECT_EQ(sets[1]["entries"], Json::parse(R"(["10.1.2.0/24", "10.9.0.0/16"])")) << owner.body;
  EXPECT_TRUE(sets[0]["entries"][1].contains("expires_at")) << owner.body;
  EXPECT_EQ(owner.json["in_sync"], true) << owner.body;

  // /v1/sets may not change an owned set (409), whoever asks.
  ExpectError(http.Post("/v1/sets/app-bl/entries", R"({"entry": "192.0.2.50"})"), 412, "failed_precondition");
  ExpectError(http.Post("/v1/sets/app-nets/flush", ""), 412, "failed_precondition");
  ExpectError(http.Delete("/v1/sets/app-nets"), 412, "failed_precondition");
  ExpectError(http.Post("/v1/sets", R"({"name": "app-nets", "type": "hash:ip"})"), 412, "failed_precondition");
  // Nor may another owner's document claim it.
  Reply zed = http.Put("/v1/owners/zed", R"({"chains": [], "sets": [{"name": "app-nets", "type": "hash:net"}]})");
  ExpectError(zed, 412, "failed_precondition");
  EXPECT_EQ(zed.json["error"]["details"]["field"], "/sets/0/name") << zed.body;

  // Foreign changes are repaired within the drift interval (1 s): a deleted entry comes back, a foreign one goes,
  // a timeout made longer is put back to the time left, a destroyed set is re-created and refilled.
  Ipset(*ns, {"del", "app-bl", "192.0.2.1"});
  Ipset(*ns, {"add", "app-bl", "192.0.2.77"});
  Ipset(*ns, {"add", "-exist", "app-bl", "192.0.2.2", "timeout", "5000", "comment", "ids"});
  Ipset(*ns, {"destroy", "app-nets"});
  const auto t_foreign = Clock::now();
  EXPECT_TRUE(WaitUntil(
      [&] {
        return Members(*ns, "app-bl") == std::vector<std::string>{"192.0.2.1", "192.0.2.2"} &&
               TimeoutOf(*ns, "app-bl", "192.0.2.2") <= 600 &&
               Members(*ns, "app-nets") == std::vector<std::string>{"10.1.2.0/24", "10.9.0.0/16"};
      },
      std::chrono::seconds(10)))
      << "not repaired:\n"
      << ns->Exec({"ipset", "list"}).out << daemon->Log();
  std::cout << "sets repaired after " << std::chrono::duration<double>(Clock::now() - t_foreign).count() << " s\n";
  EXPECT_EQ(TimeoutOf(*ns, "app-bl", "192.0.2.1"), 0);
  Reply metrics = http.Get("/metrics");
  EXPECT_TRUE(MetricValue(metrics.body, "iptkitd_drift_repairs_total", {{"owner", "app"}})) << metrics.body;

  // A restart re-creates what is gone, with the time left of timed entries (never more).
  http.Disconnect();
  ASSERT_STATUS_OK(daemon->Stop());
  Ipset(*ns, {"destroy", "app-nets"});
  Ipset(*ns, {"del", "app-bl", "192.0.2.2"});
  std::this_thread::sleep_for(std::chrono::seconds(3));
  ASSERT_STATUS_OK(daemon->Launch());
  EXPECT_EQ(Members(*ns, "app-nets"), (std::vector<std::string>{"10.1.2.0/24", "10.9.0.0/16"}));
  const int left = TimeoutOf(*ns, "app-bl", "192.0.2.2");
  EXPECT_GE(left, 540);
  EXPECT_LE(left, 598) << "re-added with more than the time left";
  EXPECT_EQ(MemberLines(*ns, "app-bl").size(), 2u);

  // A document without a set destroys it (after the rules that used it).
  HttpClient again = daemon->Admin();
  Reply smaller = again.Put("/v1/owners/app", R"({"chains": [],
      "sets": [{"name": "app-nets", "type": "hash:net", "entries": ["10.9.0.0/16"]}]})");
  ASSERT_EQ(smaller.status, 200) << smaller.Describe();
  EXPECT_FALSE(SetExists(*ns, "app-bl")) << daemon->Log();
  EXPECT_EQ(SaveText(*ns).find("app-bl"), std::string::npos);
  EXPECT_EQ(Members(*ns, "app-nets"), (std::vector<std::string>{"10.9.0.0/16"}));
  // Deleting the owner destroys its sets.
  ASSERT_EQ(again.Delete("/v1/owners/app").status, 200);
  EXPECT_FALSE(SetExists(*ns, "app-nets"));
}

TEST(DaemonOwnedSets, BadSetNamesTheFieldAndChangesNothing) {
  IPTKIT_NEW_NETNS(ns);
  ASSERT_OK_AND_ASSIGN(auto daemon, Daemon::Start(*ns));
  HttpClient http = daemon->Admin();
  const std::string before = SaveText(*ns);
  struct Case {
    std::string sets;
    std::string field;
  };
  const std::vector<Case> cases = {
      {R"([{"name": "ok1", "type": "hash:ip"}, {"name": "b", "type": "hash:ip", "entries": ["192.0.2.1", "nope"]}])",
       "/sets/1/entries/1"},
      {R"([{"name": "b", "type": "hash:nope"}])", "/sets/0/type"},
      {R"([{"name": "b", "type": "hash:ip", "options": {"range": "1-2"}}])", "/sets/0/options/range"},
      {R"([{"name": "b", "type": "hash:ip", "entries": [{"entry": "192.0.2.1", "timeout": 5}]}])", "/sets/0/entries/0"},
      {R"([{"name": "b", "type": "hash:ip", "options": {"family": "inet6"}, "entries": ["192.0.2.1"]}])",
       "/sets/0/entries/0"},
      {R"([{"name": "this-name-is-much-longer-than-31-chars", "type": "hash:ip"}])", "/sets/0/name"},
      {R"([{"name": "b", "type": "hash:ip", "options": {"frob": 1}}])", "/sets/0/options/frob"},
      {R"([{"name": "b", "type": "hash:ip"}, {"name": "b", "type": "hash:ip"}])", "/sets/1/name"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.sets);
    Reply r = http.Put("/v1/owners/app", R"({"chains": [{"name": "APP-IN", "rules": [{"spec": "-j RETURN"}]}],
        "sets": )" + c.sets + "}");
    ExpectError(r, 400, "invalid_argument");
    EXPECT_EQ(r.json["error"]["details"]["field"], c.field) << r.body;
    EXPECT_FALSE(SetExists(*ns, "b"));
    EXPECT_FALSE(SetExists(*ns, "ok1"));
    EXPECT_EQ(SaveText(*ns), before);
  }
  // A set too small for its entries: 412 naming the entries, nothing applied.
  Reply full = http.Put("/v1/owners/app", R"({"chains": [],
      "sets": [{"name": "b", "type": "hash:ip", "options": {"maxelem": 1}, "entries": ["192.0.2.1", "192.0.2.2"]}]})");
  ExpectError(full, 412, "failed_precondition");
  EXPECT_EQ(full.json["error"]["details"]["field"], "/sets/0/entries") << full.body;
  EXPECT_FALSE(SetExists(*ns, "b"));
  CommandResult all = ns->Exec({"ipset", "list", "-n"});
  EXPECT_EQ(all.out, "") << "a temporary set was left behind";
  // An existing set no document owns is not taken over.
  Ipset(*ns, {"create", "foreign", "hash:ip"});
  Reply taken = http.Put("/v1/owners/app", R"({"chains": [], "sets": [{"name": "foreign", "type": "hash:ip"}]})");
  ExpectError(taken, 412, "failed_precondition");
  EXPECT_EQ(taken.json["error"]["details"]["field"], "/sets/0/name") << taken.body;
  // A dry run checks and leaves nothing.
  Reply dry = http.Put("/v1/owners/app?dry_run=1", R"({
      "chains": [{"name": "APP-IN", "rules": [{"spec": "-m set --match-set app-d src -j DROP"}]}],
      "sets": [{"name": "app-d", "type": "hash:ip", "entries": ["192.0.2.1"]}]})");
  EXPECT_EQ(dry.status, 200) << dry.Describe();
  EXPECT_FALSE(SetExists(*ns, "app-d"));
  EXPECT_EQ(SaveText(*ns), before);
}

// The max_set_body_bytes key (--max-set-body-bytes) bounds the body of a set load (413 beyond it, nothing loaded).
TEST(DaemonSetsConfig, MaxSetBodyBytesIsApplied) {
  IPTKIT_NEW_NETNS(ns);
  ASSERT_OK_AND_ASSIGN(auto daemon,
                       Daemon::Start(*ns, {.args = {"--max-body-bytes", "1000", "--max-set-body-bytes", "4000"}}));
  HttpClient http = daemon->Admin();
  ASSERT_EQ(http.Post("/v1/sets", R"({"name": "s", "type": "hash:ip"})").status, 201);
  auto body = [](int n) {
    std::string text;
    for (int i = 0; i < n; ++i) text += "198.51." + std::to_string(i / 250) + "." + std::to_string(i % 250 + 1) + "\n";
    return text;
  };
  const std::string fits = body(200);  // about 3,000 bytes: over max_body_bytes, under max_set_body_bytes
  ASSERT_GT(fits.size(), 1000u);
  ASSERT_LT(fits.size(), 4000u);
  Reply ok = http.Send(Request{"POST", "/v1/sets/s/load", fits, "text/plain"});
  EXPECT_EQ(ok.status, 200) << ok.Describe();
  const std::string too_big = body(400);
  ASSERT_GT(too_big.size(), 4000u);
  Reply refused = http.Send(Request{"POST", "/v1/sets/s/load", too_big, "text/plain"});
  ExpectError(refused, 413);
  EXPECT_EQ(Members(*ns, "s").size(), 200u);
}

}  // namespace
}  // namespace iptkit::daemontest
