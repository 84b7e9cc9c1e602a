// /v1/sets of iptkitd end to end (docs/rest.md "Sets"): every route against a real daemon serving a private network
// namespace, checked against the kernel with the real ipset(8); bulk loads and syncs (JSON and restore text, the
// capacity check, a bad line changing nothing), a cascading destroy through the rule writer, timeouts that expire,
// audit records, events and metrics, and the scope table of sets (docs/daemon.md "Scopes"), every cell.
#include <gtest/gtest.h>

#include <functional>
#include <future>
#include <map>
#include <thread>

#include "tests/daemon/daemon_fixture.h"
#include "tests/integration/test_util.h"

namespace iptkit::daemontest {
namespace {

using integration::Variant;

// `ipset list NAME` in the namespace (stdout), "" when it fails.
std::string IpsetList(const TestNetns& ns, const std::string& name) {
  CommandResult r = ns.Exec({"ipset", "list", name});
  return r.exit_code == 0 ? r.out : "";
}

// The members of the set as ipset lists them (first word of each member line), sorted.
std::vector<std::string> Members(const TestNetns& ns, const std::string& name) {
  std::string text = IpsetList(ns, name);
  std::vector<std::string> out;
  bool members = false;
  for (const std::string& line : Lines(text)) {
    if (line == "Members:") {
      members = true;
      continue;
    }
    if (members && !line.empty()) out.push_back(line.substr(0, line.find(' ')));
  }
  std::sort(out.begin(), out.end());
  return out;
}

// `clients` threads, each with its own keep-alive connection, send requests 0 .. clients * each - 1 (`send(http, k)`,
// which returns what is wrong with its answer, "" when nothing); the first problem of each thread, "" for none.
std::vector<std::string> FromConcurrentClients(const Daemon& daemon, int clients, int each,
                                               const std::function<std::string(HttpClient&, int)>& send) {
  std::vector<std::thread> threads;
  std::vector<std::string> wrong(clients);
  for (int t = 0; t < clients; ++t) {
    threads.emplace_back([&, t] {
      HttpClient http = daemon.Admin();
      for (int i = 0; i < each; ++i) {
        std::string problem = send(http, t * each + i);
        if (!problem.empty() && wrong[t].empty()) wrong[t] = std::move(problem);
      }
    });
  }
  for (std::thread& th : threads) th.join();
  return wrong;
}

// The result of each set_add audit record, by request id.
std::map<std::string, std::string> SetAddResults(HttpClient& admin) {
  std::map<std::string, std::string> results;
  Reply audit = admin.Get("/v1/audit?action=set_add&limit=1000");
  EXPECT_EQ(audit.status, 200) << audit.Describe();
  if (audit.status != 200) return results;
  for (const Json& e : audit.json["entries"]) {
    if (e["request_id"].is_string()) results[e["request_id"].get<std::string>()] = e["result"];
  }
  return results;
}

bool SetExists(const TestNetns& ns, const std::string& name) {
  return ns.Exec({"ipset", "list", "-n", name}).exit_code == 0;
}

// Reads /v1/events?after=0 on its own thread until the buffered text contains `needle` (or 10 s pass).
std::string EventsUntil(const Daemon& daemon, const std::string& needle) {
  HttpClient client = daemon.Admin();
  std::string buffer;
  std::promise<void> done;
  std::future<void> finished = done.get_future();
  std::thread t([&] {
    client.Stream("/v1/events?after=0", [&](std::string_view chunk) {
      buffer.append(chunk);
      return buffer.find(needle) == std::string::npos;
    });
    done.set_value();
  });
  if (finished.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
    do {
      client.Disconnect();
    } while (finished.wait_for(std::chrono::milliseconds(100)) != std::future_status::ready);
  }
  t.join();
  return buffer;
}

Json AuditEntries(HttpClient& http, const std::string& action) {
  Reply r = http.Get("/v1/audit?action=" + action);
  EXPECT_EQ(r.status, 200) << r.Describe();
  return r.json.is_object() ? r.json["entries"] : Json::array();
}

TEST(DaemonSets, CreateListAddTestDeleteFlushDestroy) {
  IPTKIT_NEW_NETNS(ns);
  ASSERT_OK_AND_ASSIGN(auto daemon, Daemon::Start(*ns));
  HttpClient http = daemon->Admin();

  Reply empty = http.Get("/v1/sets");
  ASSERT_EQ(empty.status, 200) << empty.Describe();
  EXPECT_EQ(empty.json, Json({{"sets", Json::array()}}));

  Reply created = http.Post("/v1/sets", R"({"name": "bl", "type": "hash:ip", "options": {"timeout": 0,
                                            "comment": true, "maxelem": 1024}})");
  ASSERT_EQ(created.status, 201) << created.Describe();
  EXPECT_EQ(created.json["name"], "bl");
  EXPECT_EQ(created.json["type"], "hash:ip");
  EXPECT_EQ(created.json["options"]["maxelem"], 1024);
  EXPECT_EQ(created.json["capacity"], 1024);
  EXPECT_TRUE(SetExists(*ns, "bl"));
  ExpectError(http.Post("/v1/sets", R"({"name": "bl", "type": "hash:ip"})"), 409, "already_exists");
  Reply bad_type = http.Post("/v1/sets", R"({"name": "x", "type": "hash:nope"})");
  ExpectError(bad_type, 400, "invalid_argument");
  ExpectError(http.Post("/v1/sets", R"({"name": "x", "type": "hash:ip", "options": {"frob": 1}})"), 400,
              "invalid_argument");
  ExpectError(http.Post("/v1/sets", R"({"name": "this-name-is-much-longer-than-31-chars", "type": "hash:ip"})"), 400,
              "invalid_argument");
  EXPECT_FALSE(SetExists(*ns, "x"));
  // A dry run is checked by the kernel and changes nothing.
  Reply dry = http.Post("/v1/sets?dry_run=1", R"({"name": "d", "type": "hash:net", "options": {"family": "inet6"}})");
  EXPECT_EQ(dry.status, 200) << dry.Describe();
  EXPECT_FALSE(SetExists(*ns, "d"));

  Reply add = http.Post("/v1/sets/bl/entries", R"({"entry": "192.0.2.7", "timeout": 600, "comment": "ids"})");
  ASSERT_EQ(add.status, 200) << add.Describe();
  EXPECT_EQ(Members(*ns, "bl"), std::vector<std::string>{"192.0.2.7"});
  // Re-adding refreshes (the timeout, and the comment: an add without one leaves none); no_refresh refuses.
  EXPECT_EQ(http.Post("/v1/sets/bl/entries", R"({"entry": "192.0.2.7", "timeout": 900, "comment": "ids"})").status,
            200);
  ExpectError(http.Post("/v1/sets/bl/entries", R"({"entry": "192.0.2.7", "no_refresh": true})"), 409, "already_exists");
  ExpectError(http.Post("/v1/sets/bl/entries", R"({"entry": "2001:db8::1"})"), 400, "invalid_argument");
  ExpectError(http.Post("/v1/sets/bl/entries", R"({"entry": "192.0.2.8", "timeout": 2147484})"), 400,
              "invalid_argument");
  ExpectError(http.Post("/v1/sets/nosuch/entries", R"({"entry": "192.0.2.8"})"), 404, "not_found");
  EXPECT_EQ(http.Post("/v1/sets/bl/entries", R"({"entry": "192.0.2.8"})").status, 200);

  Reply one = http.Get("/v1/sets/bl");
  ASSERT_EQ(one.status, 200) << one.Describe();
  EXPECT_EQ(one.json["entry_count"], 2);
  ASSERT_EQ(one.json["entries"].size(), 2u) << one.body;
  bool seen = false;
  for (const Json& e : one.json["entries"]) {
    if (e["entry"] != "192.0.2.7") continue;
    seen = true;
    EXPECT_EQ(e["comment"], "ids");
    EXPECT_GT(e["timeout"].get<int>(), 600) << "the second add refreshed the timeout to 900";
  }
  EXPECT_TRUE(seen) << one.body;
  Reply header = http.Get("/v1/sets/bl?entries=0");
  ASSERT_EQ(header.status, 200) << header.Describe();
  EXPECT_FALSE(header.json.contains("entries"));
  EXPECT_GT(header.json["memory_bytes"].get<int64_t>(), 0);
  Reply list = http.Get("/v1/sets");
  ASSERT_EQ(list.status, 200);
  ASSERT_EQ(list.json["sets"].size(), 1u);
  EXPECT_EQ(list.json["sets"][0]["entry_count"], 2);
  ExpectError(http.Get("/v1/sets/nosuch"), 404, "not_found");

  Reply in = http.Get("/v1/sets/bl/test?entry=192.0.2.7");
  ASSERT_EQ(in.status, 200) << in.Describe();
  EXPECT_EQ(in.json["present"], true);
  Reply out = http.Get("/v1/sets/bl/test?entry=192.0.2.99");
  ASSERT_EQ(out.status, 200) << out.Describe();
  EXPECT_EQ(out.json["present"], false);
  ExpectError(http.Get("/v1/sets/bl/test"), 400, "invalid_argument");

  Reply del = http.Delete("/v1/sets/bl/entries", R"({"entry": "192.0.2.8"})");
  ASSERT_EQ(del.status, 200) << del.Describe();
  EXPECT_EQ(Members(*ns, "bl"), std::vector<std::string>{"192.0.2.7"});
  ExpectError(http.Delete("/v1/sets/bl/entries", R"({"entry": "192.0.2.8"})"), 404, "not_found");

  Reply flushed = http.Post("/v1/sets/bl/flush", "");
  ASSERT_EQ(flushed.status, 200) << flushed.Describe();
  EXPECT_EQ(flushed.json["entries_removed"], 1);
  EXPECT_TRUE(Members(*ns, "bl").empty());

  Reply destroyed = http.Delete("/v1/sets/bl");
  ASSERT_EQ(destroyed.status, 200) << destroyed.Describe();
  EXPECT_FALSE(SetExists(*ns, "bl"));
  ExpectError(http.Delete("/v1/sets/bl"), 404, "not_found");

  // Wrong methods and media types.
  ExpectError(http.Send(Request{"PUT", "/v1/sets/bl", "{}"}), 405, "method_not_allowed");
  ExpectError(http.Send(Request{"POST", "/v1/sets", "x", "text/plain"}), 415, "unsupported_media_type");
}

TEST(DaemonSets, TimeoutsReallyExpire) {
  IPTKIT_NEW_NETNS(ns);
  ASSERT_OK_AND_ASSIGN(auto daemon, Daemon::Start(*ns));
  HttpClient http = daemon->Admin();
  ASSERT_EQ(http.Post("/v1/sets", R"({"name": "t", "type": "hash:ip", "options": {"timeout": 0}})").status, 201);
  ASSERT_EQ(http.Post("/v1/sets/t/entries", R"({"entry": "192.0.2.1", "timeout": 1})").status, 200);
  ASSERT_EQ(http.Post("/v1/sets/t/entries", R"({"entry": "192.0.2.2"})").status, 200);
  EXPECT_TRUE(
      WaitUntil([&] { return Members(*ns, "t") == std::vector<std::string>{"192.0.2.2"}; }, std::chrono::seconds(10)))
      << IpsetList(*ns, "t");
  // A set without timeout support refuses a timeout.
  ASSERT_EQ(http.Post("/v1/sets", R"({"name": "p", "type": "hash:ip"})").status, 201);
  ExpectError(http.Post("/v1/sets/p/entries", R"({"entry": "192.0.2.1", "timeout": 5})"), 400);
}

TEST(DaemonSets, RenameSwapAndCascadingDestroy) {
  IPTKIT_NEW_NETNS(ns);
  ASSERT_OK_AND_ASSIGN(auto daemon, Daemon::Start(*ns));
  HttpClient http = daemon->Admin();
  ASSERT_EQ(http.Post("/v1/sets", R"({"name": "a", "type": "hash:ip", "options": {"timeout": 0}})").status, 201);
  ASSERT_EQ(http.Post("/v1/sets", R"({"name": "b", "type": "hash:ip", "options": {"timeout": 0}})").status, 201);
  ASSERT_EQ(http.Post("/v1/sets/a/entries", R"({"entry": "192.0.2.1"})").status, 200);
  ASSERT_EQ(http.Post("/v1/sets/b/entries", R"({"entry": "192.0.2.2"})").status, 200);

  Reply swapped = http.Post("/v1/sets/a/swap", R"({"with": "b"})");
  ASSERT_EQ(swapped.status, 200) << swapped.Describe();
  EXPECT_EQ(Members(*ns, "a"), std::vector<std::string>{"192.0.2.2"});
  EXPECT_EQ(Members(*ns, "b"), std::vector<std::string>{"192.0.2.1"});
  // Swap preserves timeout support: "a" still takes timeouts.
  EXPECT_EQ(http.Post("/v1/sets/a/entries", R"({"entry": "192.0.2.3", "timeout": 60})").status, 200);
  ASSERT_EQ(http.Post("/v1/sets", R"({"name": "n", "type": "hash:net"})").status, 201);
  ExpectError(http.Post("/v1/sets/a/swap", R"({"with": "n"})"), 400);

  Reply renamed = http.Post("/v1/sets/b/rename", R"({"to": "c"})");
  ASSERT_EQ(renamed.status, 200) << renamed.Describe();
  EXPECT_FALSE(SetExists(*ns, "b"));
  EXPECT_TRUE(SetExists(*ns, "c"));
  ExpectError(http.Post("/v1/sets/c/rename", R"({"to": "a"})"), 409, "already_exists");

  // A rule uses "a" (added through the daemon's own writer and its long-lived backend).
  ASSERT_EQ(http.Post(RulesPath("INPUT"), R"({"spec": "-m set --match-set a src -j DROP"})").status, 200);
  ASSERT_EQ(
      http.Post(RulesPath("PREROUTING", Family::kIPv4, "raw"), R"({"spec": "-m set --match-set a dst -j ACCEPT"})")
          .status,
      200);
  Reply refused = http.Delete("/v1/sets/a");
  ExpectError(refused, 412, "failed_precondition");
  EXPECT_EQ(refused.json["error"]["details"]["reason"], "referenced") << refused.body;
  ExpectError(http.Post("/v1/sets/a/rename", R"({"to": "z"})"), 412, "failed_precondition");
  EXPECT_TRUE(SetExists(*ns, "a"));

  Reply dry = http.Delete("/v1/sets/a?cascade=1&dry_run=1");
  ASSERT_EQ(dry.status, 200) << dry.Describe();
  EXPECT_EQ(dry.json["rules_deleted"].size(), 2u) << dry.body;
  EXPECT_TRUE(SetExists(*ns, "a"));

  Reply cascade = http.Delete("/v1/sets/a?cascade=1");
  ASSERT_EQ(cascade.status, 200) << cascade.Describe();
  ASSERT_EQ(cascade.json["rules_deleted"].size(), 2u) << cascade.body;
  std::vector<std::string> deleted;
  for (const Json& r : cascade.json["rules_deleted"])
    deleted.push_back(r["table"].get<std::string>() + " " + r["spec"].get<std::string>());
  std::sort(deleted.begin(), deleted.end());
  EXPECT_EQ(deleted, (std::vector<std::string>{"filter -m set --match-set a src -j DROP",
                                               "raw -m set --match-set a dst -j ACCEPT"}));
  EXPECT_FALSE(SetExists(*ns, "a"));
  EXPECT_EQ(SaveText(*ns).find("match-set a "), std::string::npos) << SaveText(*ns);
  EXPECT_EQ(SaveText(*ns, Family::kIPv4, Variant::kNft, "raw").find("match-set a "), std::string::npos);

  // Destroy right after deleting the last referencing rule through the daemon's long-lived handle (the native
  // backend's persistent netlink socket: the kernel drops the set's reference later). The same name each round,
  // re-created after another set took its old kernel index: a compiled match cached across rounds would point at
  // that other set (the rule must name c0 in iptables-save).
  for (int i = 0; i < 5; ++i) {
    const std::string set = "c0";
    const std::string rule = R"({"spec": "-m set --match-set )" + set + R"( src -j DROP"})";
    if (i > 0) {
      Reply pad = http.Post("/v1/sets", R"({"name": "pad)" + std::to_string(i) + R"(", "type": "hash:ip"})");
      ASSERT_TRUE(pad.status == 200 || pad.status == 201) << pad.Describe();
    }
    Reply made = i == 0 ? http.Post("/v1/sets/c/rename", R"({"to": "c0"})")
                        : http.Post("/v1/sets", R"({"name": ")" + set + R"(", "type": "hash:ip"})");
    ASSERT_TRUE(made.status == 200 || made.status == 201) << made.Describe();
    Reply added = http.Post(RulesPath("FORWARD"), rule);
    ASSERT_EQ(added.status, 200) << "round " << i << ": " << added.Describe();
    EXPECT_NE(SaveText(*ns).find("-A FORWARD -m set --match-set c0 src -j DROP"), std::string::npos)
        << "round " << i << ":\n"
        << SaveText(*ns);
    Reply deleted = http.Delete(RulesPath("FORWARD"), rule);
    ASSERT_EQ(deleted.status, 200) << "round " << i << ": " << deleted.Describe();
    Reply gone = http.Delete("/v1/sets/" + set);
    ASSERT_EQ(gone.status, 200) << "round " << i << ": " << gone.Describe();
  }
  for (int i = 1; i < 5; ++i) EXPECT_EQ(http.Delete("/v1/sets/pad" + std::to_string(i)).status, 200);
}

TEST(DaemonSets, BulkLoadAndSync) {
  IPTKIT_NEW_NETNS(ns);
  ASSERT_OK_AND_ASSIGN(auto daemon, Daemon::Start(*ns));
  HttpClient http = daemon->Admin();
  ASSERT_EQ(http.Post("/v1/sets", R"({"name": "big", "type": "hash:ip", "options": {"maxelem": 262144, "timeout": 0}})")
                .status,
            201);
  // 100,000 entries as restore text (ipset's own `add` lines, some with a timeout; plain lines for other sets).
  std::string text, plain;
  for (int i = 0; i < 100000; ++i) {
    const std::string elem = "10." + std::to_string(i >> 16) + "." + std::to_string((i >> 8) & 255) + "." +
                             std::to_string(i & 255) + (i % 10 == 0 ? " timeout 3600" : "") + "\n";
    text += "add big " + elem;
    plain += elem;
  }
  Reply load = http.Send(Request{"POST", "/v1/sets/big/load", text, "text/plain"});
  ASSERT_EQ(load.status, 200) << load.Describe();
  EXPECT_EQ(load.json["report"]["added"], 100000) << load.body;
  EXPECT_EQ(load.json["report"]["entries_after"], 100000) << load.body;
  Reply header = http.Get("/v1/sets/big?entries=0");
  EXPECT_EQ(header.json["entry_count"], 100000) << header.body;

  // A bad line at entry 99,999: the set is unchanged, the error names the line.
  std::string bad = text;
  bad.replace(bad.find("add big 10.1.134.158"), 20, "add big 10.1.134.999");
  ASSERT_EQ(http.Post("/v1/sets/big/flush", "").status, 200);
  ASSERT_EQ(http.Post("/v1/sets/big/entries", R"({"entry": "192.0.2.1"})").status, 200);
  Reply rejected = http.Send(Request{"POST", "/v1/sets/big/load", bad, "text/plain"});
  ExpectError(rejected, 400, "invalid_argument");
  EXPECT_NE(rejected.body.find("99999"), std::string::npos) << rejected.body;
  EXPECT_EQ(rejected.json["error"]["details"]["line"], 99999) << rejected.body;  // structured, not parsed
  EXPECT_EQ(Members(*ns, "big"), std::vector<std::string>{"192.0.2.1"});

  // Into a default set (65,536): refused before anything, unchanged; with grow: done through a bigger set.
  ASSERT_EQ(http.Post("/v1/sets", R"({"name": "small", "type": "hash:ip", "options": {"timeout": 0}})").status, 201);
  ASSERT_EQ(http.Post("/v1/sets/small/entries", R"({"entry": "192.0.2.1"})").status, 200);
  Reply full = http.Send(Request{"POST", "/v1/sets/small/load", plain, "text/plain"});
  ExpectError(full, 412, "failed_precondition");
  EXPECT_EQ(full.json["error"]["details"]["reason"], "set_full") << full.body;
  EXPECT_EQ(Members(*ns, "small"), std::vector<std::string>{"192.0.2.1"});
  Reply grown = http.Send(Request{"POST", "/v1/sets/small/load?grow=1", plain, "text/plain"});
  ASSERT_EQ(grown.status, 200) << grown.Describe();
  EXPECT_TRUE(grown.json["report"].contains("grown_maxelem")) << grown.body;
  EXPECT_EQ(http.Get("/v1/sets/small?entries=0").json["entry_count"], 100001);

  // JSON bodies: an array, or {"entries": [...]}; strings or objects.
  ASSERT_EQ(http.Post("/v1/sets", R"({"name": "j", "type": "hash:net", "options": {"comment": true}})").status, 201);
  Reply json_load = http.Post("/v1/sets/j/load", R"(["10.0.0.0/24", {"entry": "10.1.0.0/16", "comment": "office"}])");
  ASSERT_EQ(json_load.status, 200) << json_load.Describe();
  EXPECT_EQ(Members(*ns, "j"), (std::vector<std::string>{"10.0.0.0/24", "10.1.0.0/16"}));
  Reply bad_json = http.Post("/v1/sets/j/load", R"({"entries": ["10.2.0.0/16", {"entry": "nonsense"}]})");
  ExpectError(bad_json, 400, "invalid_argument");
  EXPECT_EQ(Members(*ns, "j"), (std::vector<std::string>{"10.0.0.0/24", "10.1.0.0/16"}));
  ExpectError(http.Post("/v1/sets/j/load", R"({"entries": [7]})"), 400, "invalid_argument");
  ExpectError(http.Send(Request{"POST", "/v1/sets/j/load", "x", "application/xml"}), 415, "unsupported_media_type");

  // Sync: exactly these entries, through a temporary set and swap; or the minimal difference.
  Reply sync = http.Post("/v1/sets/j/sync", R"(["10.1.0.0/16", "10.3.0.0/16"])");
  ASSERT_EQ(sync.status, 200) << sync.Describe();
  EXPECT_EQ(sync.json["report"]["swapped"], true) << sync.body;
  EXPECT_EQ(sync.json["report"]["removed"], 1) << sync.body;
  EXPECT_EQ(Members(*ns, "j"), (std::vector<std::string>{"10.1.0.0/16", "10.3.0.0/16"}));
  Reply minimal =
      http.Send(Request{"POST", "/v1/sets/j/sync?mode=minimal", "10.3.0.0/16\n10.4.0.0/16\n", "text/plain"});
  ASSERT_EQ(minimal.status, 200) << minimal.Describe();
  EXPECT_EQ(minimal.json["report"]["swapped"], false) << minimal.body;
  EXPECT_EQ(minimal.json["report"]["added"], 1) << minimal.body;
  EXPECT_EQ(minimal.json["report"]["removed"], 1) << minimal.body;
  EXPECT_EQ(Members(*ns, "j"), (std::vector<std::string>{"10.3.0.0/16", "10.4.0.0/16"}));
  ExpectError(http.Post("/v1/sets/j/sync?mode=fast", "[]"), 400, "invalid_argument");
  Reply dry = http.Post("/v1/sets/j/sync?dry_run=1", "[]");
  ASSERT_EQ(dry.status, 200) << dry.Describe();
  EXPECT_EQ(dry.json["report"]["removed"], 2) << dry.body;
  EXPECT_EQ(Members(*ns, "j").size(), 2u);
  // No temporary set is left behind, nor listed.
  for (const Json& s : http.Get("/v1/sets").json["sets"]) {
    EXPECT_FALSE(s["name"].get<std::string>().starts_with("iptkit-tmp-")) << s;
  }
  EXPECT_EQ(ns->Exec({"ipset", "list", "-n"}).out.find("iptkit-tmp-"), std::string::npos);
}

TEST(DaemonSets, AuditEventsAndMetrics) {
  IPTKIT_NEW_NETNS(ns);
  ASSERT_OK_AND_ASSIGN(auto daemon, Daemon::Start(*ns));
  HttpClient http = daemon->Admin();
  ASSERT_EQ(http.Post("/v1/sets", R"({"name": "m", "type": "hash:ip", "options": {"timeout": 0}})").status, 201);
  ASSERT_EQ(http.Send(Request{"POST",
                              "/v1/sets/m/entries",
                              R"({"entry": "192.0.2.5", "timeout": 300})",
                              "application/json",
                              {{"X-Request-Id", "set-add-1"}}})
                .status,
            200);
  ExpectError(http.Post("/v1/sets/m/entries", R"({"entry": "bogus"})"), 400);
  std::string lines;
  for (int i = 0; i < 2000; ++i) lines += "198.51." + std::to_string(i / 256) + "." + std::to_string(i % 256) + "\n";
  ASSERT_EQ(http.Send(Request{"POST", "/v1/sets/m/load", lines, "text/plain"}).status, 200);

  Json adds = AuditEntries(http, "set_add");
  ASSERT_EQ(adds.size(), 2u) << adds;
  EXPECT_EQ(adds[1]["request_id"], "set-add-1");
  EXPECT_EQ(adds[1]["result"], "ok");
  EXPECT_EQ(adds[1]["principal"], "token:admin");
  EXPECT_EQ(adds[1]["diff"], "add m 192.0.2.5 timeout 300");
  EXPECT_EQ(adds[0]["result"], "INVALID_ARGUMENT");
  EXPECT_EQ(AuditEntries(http, "set_create").size(), 1u);
  EXPECT_EQ(AuditEntries(http, "set_load").size(), 1u);

  std::string events = EventsUntil(*daemon, "\"stage\":\"done\"");
  EXPECT_NE(events.find("event: set_changed\n"), std::string::npos) << events;
  EXPECT_NE(events.find("\"request_id\":\"set-add-1\""), std::string::npos) << events;
  EXPECT_NE(events.find("event: set_progress\n"), std::string::npos) << events;

  std::string metrics = http.Get("/metrics").body;
  EXPECT_EQ(MetricValue(metrics, "iptkitd_set_entries", {{"set", "m"}}), 2001.0) << metrics;
  EXPECT_GT(MetricValue(metrics, "iptkitd_set_memory_bytes", {{"set", "m"}}).value_or(0), 0.0) << metrics;
  EXPECT_EQ(MetricValue(metrics, "iptkitd_set_operations_total", {{"op", "add"}, {"result", "ok"}}), 1.0);
  EXPECT_EQ(MetricValue(metrics, "iptkitd_set_operations_total", {{"op", "add"}, {"result", "error"}}), 1.0);
}

// Concurrent adds share one kernel batch and one audit transaction (SetService collects them); each request still
// gets its own answer, its own audit record (request id, result) and its entry.
TEST(DaemonSets, ConcurrentAddsEachGetTheirOwnAnswerAndAuditRecord) {
  IPTKIT_NEW_NETNS(ns);
  ASSERT_OK_AND_ASSIGN(auto daemon, Daemon::Start(*ns));
  HttpClient admin = daemon->Admin();
  ASSERT_EQ(admin.Post("/v1/sets", R"({"name": "c", "type": "hash:ip", "options": {"timeout": 0}})").status, 201);
  constexpr int kClients = 24, kEach = 4;
  auto bad = [](int k) { return k % 7 == 3; };
  for (const std::string& w : FromConcurrentClients(*daemon, kClients, kEach, [&](HttpClient&http, int k) {
         const std::string entry = bad(k) ? "bogus-" + std::to_string(k) : "10.7.0." + std::to_string(k);
         Reply r = http.Send(Request{"POST",
                                     "/v1/sets/c/entries",
                                     R"({"entry": ")" + entry + R"(", "timeout": 60})",
                                     "application/json",
                                     {{"X-Request-Id", "cc-" + std::to_string(k)}}});
         return r.status == (bad(k) ? 400 : 200) ? std::string() : entry + ": " + r.Describe();
       })) {
    EXPECT_EQ(w, "");
  }
  std::vector<std::string> want;
  for (int k = 0; k < kClients * kEach; ++k) {
    if (!bad(k)) want.push_back("10.7.0." + std::to_string(k));
  }
  std::sort(want.begin(), want.end());
  EXPECT_EQ(Members(*ns, "c"), want);
  std::map<std::string, std::string> results = SetAddResults(admin);
  ASSERT_EQ(results.size(), size_t{kClients * kEach});
  for (int k = 0; k < kClients * kEach; ++k) {
    EXPECT_EQ(results["cc-" + std::to_string(k)], bad(k) ? "INVALID_ARGUMENT" : "ok") << k;
  }
}

// Concurrent adds that the kernel or libipset refuse, in the batches of adds that succeed: a comment for a set
// without comment support (400), an existing entry with no_refresh (409), an address of the other family (400).
// Each fails alone, with an answer naming its own entry and an audit record of its own; every other add of the
// batch is stored (no_refresh adds of new entries too) and counted once in the operations metric.
TEST(DaemonSets, RefusedAddsFailAloneInConcurrentBatches) {
  IPTKIT_NEW_NETNS(ns);
  ASSERT_OK_AND_ASSIGN(auto daemon, Daemon::Start(*ns));
  HttpClient admin = daemon->Admin();
  ASSERT_EQ(admin.Post("/v1/sets", R"({"name": "r", "type": "hash:ip", "options": {"timeout": 0}})").status, 201);
  ASSERT_EQ(admin.Post("/v1/sets/r/entries", R"({"entry": "10.8.255.1"})").status, 200);
  constexpr int kClients = 24, kEach = 6;
  struct Add {
    std::string entry;
    std::string body;
    int status;
  };
  auto add = [](int k) -> Add {
    const std::string own = "10.8.0." + std::to_string(k);
    if (k % 9 == 4) return {own, R"({"entry": ")" + own + R"(", "timeout": 60, "comment": "c"})", 400};
    if (k % 11 == 6) return {"10.8.255.1", R"({"entry": "10.8.255.1", "no_refresh": true})", 409};
    if (k % 13 == 8) {
      return {"2001:db8::" + std::to_string(k), R"({"entry": "2001:db8::)" + std::to_string(k) + R"("})", 400};
    }
    if (k % 7 == 2) return {own, R"({"entry": ")" + own + R"(", "timeout": 60, "no_refresh": true})", 200};
    return {own, R"({"entry": ")" + own + R"(", "timeout": 60})", 200};
  };
  for (const std::string& w : FromConcurrentClients(*daemon, kClients, kEach, [&](HttpClient&http, int k) {
         const Add a = add(k);
         Reply r = http.Send(Request{
             "POST", "/v1/sets/r/entries", a.body, "application/json", {{"X-Request-Id", "rf-" + std::to_string(k)}}});
         std::string problem;
         if (r.status != a.status) {
           problem = "status";
         } else if (a.status != 200 &&
                    (!r.json.is_object() || r.json["error"]["details"]["token"] != a.entry ||
                     r.json["error"]["message"].get<std::string>().find("'" + a.entry + "'") == std::string::npos)) {
           problem = "error does not name the entry";
         }
         return problem.empty() ? problem : std::to_string(k) + " " + problem + ": " + r.Describe();
       })) {
    EXPECT_EQ(w, "");
  }
  std::vector<std::string> want = {"10.8.255.1"};
  int ok = 0;
  for (int k = 0; k < kClients * kEach; ++k) {
    if (add(k).status == 200) {
      want.push_back(add(k).entry);
      ++ok;
    }
  }
  std::sort(want.begin(), want.end());
  EXPECT_EQ(Members(*ns, "r"), want);
  std::map<std::string, std::string> results = SetAddResults(admin);
  for (int k = 0; k < kClients * kEach; ++k) {
    const int status = add(k).status;
    EXPECT_EQ(results["rf-" + std::to_string(k)], status == 200   ? "ok"
                                                  : status == 409 ? "ALREADY_EXISTS"
                                                                  : "INVALID_ARGUMENT")
        << k;
  }
  std::string metrics = admin.Get("/metrics").body;
  EXPECT_EQ(MetricValue(metrics, "iptkitd_set_operations_total", {{"op", "add"}, {"result", "ok"}}), ok + 1.0);
  EXPECT_EQ(MetricValue(metrics, "iptkitd_set_operations_total", {{"op", "add"}, {"result", "error"}}),
            kClients * kEach - ok + 0.0);
}

// ---- The scope table of sets (docs/daemon.md "Scopes") ----

enum Column { kRead, kWrite, kTable, kOwner, kTtl, kSet, kColumns };
const char* const kColumnNames[kColumns] = {"read", "write", "table:nat", "owner:app", "ttl-max 60", "set:bl"};
constexpr int kOk = 200;  // any 2xx
constexpr int k403 = 403;
constexpr int k412 = 412;  // refused whoever asks (an owned set)

struct Row {
  std::string name;
  std::function<void(HttpClient& admin)> setup;
  std::function<Reply(HttpClient& client)> request;
  int want[kColumns];
};

void MustOk(const Reply& r) { ASSERT_TRUE(r.status >= 200 && r.status < 300) << r.Describe(); }

std::vector<Row> Rows() {
  auto none = [](HttpClient&) {};
  auto entry_in_bl = [](HttpClient& admin) { MustOk(admin.Post("/v1/sets/bl/entries", R"({"entry": "192.0.2.9"})")); };
  auto owned_os = [](HttpClient& admin) {
    MustOk(admin.Put("/v1/owners/app", R"({"chains": [], "sets": [{"name": "os", "type": "hash:ip",
        "options": {"timeout": 0}, "entries": ["192.0.2.8"]}]})"));
  };
  auto rule_uses_bl = [](HttpClient& admin) {
    MustOk(admin.Post(RulesPath("INPUT"), R"({"spec": "-m set --match-set bl src -j DROP"})"));
  };
  return {
      {"GET /v1/sets, a set, a test",
       none,
       [](HttpClient& c) {
         Reply r = c.Get("/v1/sets");
         if (r.status != 200) return r;
         r = c.Get("/v1/sets/bl");
         if (r.status != 200) return r;
         return c.Get("/v1/sets/bl/test?entry=192.0.2.1");
       },
       {kOk, k403, kOk, kOk, kOk, kOk}},
      {"create set bl",
       [](HttpClient& admin) { MustOk(admin.Delete("/v1/sets/bl")); },
       [](HttpClient& c) { return c.Post("/v1/sets", R"({"name": "bl", "type": "hash:ip"})"); },
       {k403, kOk, k403, k403, k403, kOk}},
      {"create set zz",
       [](HttpClient& admin) { MustOk(admin.Delete("/v1/sets/zz")); },
       [](HttpClient& c) { return c.Post("/v1/sets", R"({"name": "zz", "type": "hash:ip"})"); },
       {k403, kOk, k403, k403, k403, k403}},
      {"add to bl, timeout 30 s",
       none,
       [](HttpClient& c) { return c.Post("/v1/sets/bl/entries", R"({"entry": "192.0.2.1", "timeout": 30})"); },
       {k403, kOk, k403, k403, kOk, kOk}},
      {"add to bl, no timeout (permanent)",
       none,
       [](HttpClient& c) { return c.Post("/v1/sets/bl/entries", R"({"entry": "192.0.2.1"})"); },
       {k403, kOk, k403, k403, k403, kOk}},
      {"add to bl, timeout 2 min (over the bound)",
       none,
       [](HttpClient& c) { return c.Post("/v1/sets/bl/entries", R"({"entry": "192.0.2.1", "timeout": 120})"); },
       {k403, kOk, k403, k403, k403, kOk}},
      {"add to zz, timeout 30 s",
       none,
       [](HttpClient& c) { return c.Post("/v1/sets/zz/entries", R"({"entry": "192.0.2.1", "timeout": 30})"); },
       {k403, kOk, k403, k403, kOk, k403}},
      {"delete an entry of bl",
       entry_in_bl,
       [](HttpClient& c) { return c.Delete("/v1/sets/bl/entries", R"({"entry": "192.0.2.9"})"); },
       {k403, kOk, k403, k403, k403, kOk}},
      {"delete an entry of bl that has a timeout (5 min)",
       [](HttpClient& admin) {
         MustOk(admin.Post("/v1/sets/bl/entries", R"({"entry": "192.0.2.9", "timeout": 300})"));
       },
       [](HttpClient& c) { return c.Delete("/v1/sets/bl/entries", R"({"entry": "192.0.2.9"})"); },
       {k403, kOk, k403, k403, kOk, kOk}},
      {"flush bl",
       entry_in_bl,
       [](HttpClient& c) { return c.Post("/v1/sets/bl/flush", ""); },
       {k403, kOk, k403, k403, k403, kOk}},
      {"load bl",
       none,
       [](HttpClient& c) { return c.Post("/v1/sets/bl/load", R"(["192.0.2.3"])"); },
       {k403, kOk, k403, k403, k403, kOk}},
      {"sync bl",
       none,
       [](HttpClient& c) { return c.Post("/v1/sets/bl/sync", R"(["192.0.2.3"])"); },
       {k403, kOk, k403, k403, k403, kOk}},
      {"swap bl and zz",
       none,
       [](HttpClient& c) { return c.Post("/v1/sets/bl/swap", R"({"with": "zz"})"); },
       {k403, kOk, k403, k403, k403, k403}},
      {"rename bl to bl2",
       none,
       [](HttpClient& c) { return c.Post("/v1/sets/bl/rename", R"({"to": "bl2"})"); },
       {k403, kOk, k403, k403, k403, k403}},
      {"destroy bl", none, [](HttpClient& c) { return c.Delete("/v1/sets/bl"); }, {k403, kOk, k403, k403, k403, kOk}},
      {"destroy bl with cascade (a rule in filter INPUT uses it)",
       rule_uses_bl,
       [](HttpClient& c) { return c.Delete("/v1/sets/bl?cascade=1"); },
       {k403, kOk, k403, k403, k403, k403}},
      {"append a rule to filter INPUT",
       none,
       [](HttpClient& c) { return c.Post(RulesPath("INPUT"), R"({"spec": "-s 192.0.2.4 -j DROP"})"); },
       {k403, kOk, k403, k403, k403, k403}},
      {"add to os (owned by app's document), timeout 30 s",
       owned_os,
       [](HttpClient& c) { return c.Post("/v1/sets/os/entries", R"({"entry": "192.0.2.1", "timeout": 30})"); },
       {k403, k412, k403, k403, k412, k403}},
      {"destroy os (owned by app's document)",
       owned_os,
       [](HttpClient& c) { return c.Delete("/v1/sets/os"); },
       {k403, k412, k403, k403, k403, k403}},
      {"PUT /v1/owners/app declaring set os",
       none,
       [](HttpClient& c) {
         return c.Put("/v1/owners/app", R"({"chains": [], "sets": [{"name": "os", "type": "hash:ip"}]})");
       },
       {k403, kOk, k403, kOk, k403, k403}},
      {"owned add of app, ttl 30 s",
       none,
       [](HttpClient& c) {
         return c.Post(RulesPath("INPUT"), R"({"spec": "-s 192.0.2.4 -j DROP", "owner": "app", "ttl": 30})");
       },
       {k403, kOk, k403, kOk, kOk, k403}},
  };
}

TEST(DaemonSets, ScopeTableEveryCell) {
  IPTKIT_NEW_NETNS(ns);
  ASSERT_OK_AND_ASSIGN(auto daemon, Daemon::Start(*ns));
  HttpClient admin = daemon->Admin();
  std::vector<HttpClient> clients;
  const std::vector<std::vector<std::string>> scopes = {{"read"},
                                                        {"write"},
                                                        {"read", "write", "table:nat"},
                                                        {"read", "write", "owner:app"},
                                                        {"read", "write"},
                                                        {"read", "write", "set:bl"}};
  for (int c = 0; c < kColumns; ++c) {
    ASSERT_OK_AND_ASSIGN(std::string token, daemon->CreateToken("col" + std::to_string(c), scopes[c],
                                                                c == kTtl ? std::optional<int64_t>(60) : std::nullopt));
    clients.push_back(daemon->Client(token));
  }
  // Every cell starts from: sets bl and zz (hash:ip with timeout support, empty), no rules.
  auto reset = [&] {
    for (const char* name : {"bl", "zz", "bl2"}) {
      Reply r = admin.Delete(std::string("/v1/sets/") + name + "?cascade=1");
      ASSERT_TRUE(r.status == 200 || r.status == 404) << r.Describe();
    }
    MustOk(admin.Post("/v1/transactions", R"({"ops": [{"flush": {"table": "filter"}}]})"));
    Reply owner = admin.Delete("/v1/owners/app");
    ASSERT_TRUE(owner.status == 200 || owner.status == 404) << owner.Describe();
    MustOk(admin.Post("/v1/sets", R"({"name": "bl", "type": "hash:ip", "options": {"timeout": 0}})"));
    MustOk(admin.Post("/v1/sets", R"({"name": "zz", "type": "hash:ip", "options": {"timeout": 0}})"));
  };
  for (const Row& row : Rows()) {
    for (int c = 0; c < kColumns; ++c) {
      SCOPED_TRACE(row.name + " / " + kColumnNames[c]);
      reset();
      if (HasFatalFailure()) return;
      row.setup(admin);
      if (HasFatalFailure()) return;
      Reply r = row.request(clients[c]);
      if (row.want[c] == k403 || row.want[c] == k412) {
        EXPECT_EQ(r.status, row.want[c]) << r.Describe();
      } else {
        EXPECT_TRUE(r.status >= 200 && r.status < 300) << r.Describe();
      }
    }
  }
}

}  // namespace
}  // namespace iptkit::daemontest
