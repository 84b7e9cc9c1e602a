// The scope model of iptkitd end to end (docs/daemon.md "Scopes": the table of scope x operation), every cell
// against a real daemon, and the leaks of issue 8 item 6: --ttl-max tokens making permanent changes, owner scopes
// jumping into another owner's chains or confirming another principal's transaction, overlapping owner prefixes,
// forged owner tags in transactions.
#include <gtest/gtest.h>

#include <functional>
#include <map>

#include "tests/daemon/daemon_fixture.h"
#include "tests/integration/test_util.h"

namespace iptkit::daemontest {
namespace {

// The columns of the table: the scopes of the tokens (all but `read` and `write` also have read and write).
enum Column { kRead, kWrite, kTable, kChain, kOwner, kTtl, kColumns };
const char* const kColumnNames[kColumns] = {"read", "write", "table:nat", "chain:FORWARD", "owner:app", "ttl-max 60"};

// What a cell expects: the status, or "anything but a scope refusal" (the writer's own rules decide).
constexpr int k200 = 200;
constexpr int k403 = 403;
constexpr int kNotScope = -1;

struct Row {
  std::string name;
  // Runs before the cell with the admin client (state the request needs); `tag` is unique per cell
  // ("<row>.<column>", used in addresses 10.<row>.<column>.1).
  std::function<void(HttpClient& admin, const std::string& ip)> setup;
  std::function<Reply(HttpClient& client, const std::string& ip, Column column)> request;
  int want[kColumns];
};

std::string Spec(const std::string& ip, const std::string& target = "DROP") { return "-s " + ip + " -j " + target; }
std::string Body(const std::string& ip, const std::string& extra = "", const std::string& target = "DROP") {
  return R"({"spec": ")" + Spec(ip, target) + "\"" + extra + "}";
}

const char* kAppDocument = R"({"chains": [{"name": "APP-IN", "rules": [{"spec": "-j RETURN"}]}]})";
const char* kZedDocument = R"({"chains": [{"name": "ZED-IN", "rules": [{"spec": "-j RETURN"}]}]})";

void MustOk(const Reply& r) { ASSERT_EQ(r.status, 200) << r.Describe(); }

std::vector<Row> Rows() {
  const std::string fwd = RulesPath("FORWARD");
  const std::string input = RulesPath("INPUT");
  const std::string post = RulesPath("POSTROUTING", Family::kIPv4, "nat");
  auto none = [](HttpClient&, const std::string&) {};
  auto append_fwd = [fwd](HttpClient& admin, const std::string& ip) { MustOk(admin.Post(fwd, Body(ip))); };
  auto owned = [](const std::string& path, const std::string& owner, const std::string& ttl) {
    return [path, owner, ttl](HttpClient& admin, const std::string& ip) {
      MustOk(admin.Post(path, Body(ip, R"(, "owner": ")" + owner + "\"" + (ttl.empty() ? "" : ", \"ttl\": " + ttl))));
    };
  };
  auto app_doc = [](HttpClient& admin, const std::string&) { MustOk(admin.Put("/v1/owners/app", kAppDocument)); };
  return {
      {"GET any resource",
       none,
       [](HttpClient& c, const std::string&, Column) { return c.Get("/v1/ipv4"); },
       {k200, k403, k200, k200, k200, k200}},
      {"append to filter FORWARD",
       none,
       [fwd](HttpClient& c, const std::string& ip, Column) { return c.Post(fwd, Body(ip)); },
       {k403, k200, k403, k200, k403, k403}},
      {"append to nat POSTROUTING",
       none,
       [post](HttpClient& c, const std::string& ip, Column) { return c.Post(post, Body(ip, "", "ACCEPT")); },
       {k403, k200, k200, k403, k403, k403}},
      {"append to filter INPUT",
       none,
       [input](HttpClient& c, const std::string& ip, Column) { return c.Post(input, Body(ip)); },
       {k403, k200, k403, k403, k403, k403}},
      {"insert at position 1 of FORWARD",
       none,
       [fwd](HttpClient& c, const std::string& ip, Column) { return c.Post(fwd + "?position=1", Body(ip)); },
       {k403, k200, k403, k200, k403, k403}},
      {"delete by spec in FORWARD",
       append_fwd,
       [fwd](HttpClient& c, const std::string& ip, Column) { return c.Delete(fwd, Body(ip)); },
       {k403, k200, k403, k200, k403, k403}},
      {"replace the rule at position 1 of FORWARD",
       append_fwd,
       [fwd](HttpClient& c, const std::string& ip, Column) { return c.Put(fwd + "/1", Body(ip, "", "ACCEPT")); },
       {k403, k200, k403, k200, k403, k403}},
      {"delete the rule at position 1 of FORWARD",
       append_fwd,
       [fwd](HttpClient& c, const std::string&, Column) { return c.Delete(fwd + "/1"); },
       {k403, k200, k403, k200, k403, k403}},
      {"set the policy of FORWARD",
       none,
       [](HttpClient& c, const std::string&, Column) {
         return c.Put("/v1/ipv4/tables/filter/chains/FORWARD", R"({"policy": "DROP"})");
       },
       {k403, k200, k403, k200, k403, k403}},
      {"create a chain in nat",
       none,
       [](HttpClient& c, const std::string& ip, Column col) {
         return c.Put("/v1/ipv4/tables/nat/chains/NEW" + std::to_string(col), "");
       },
       {k403, k200, k200, k403, k403, k403}},
      {"delete a chain in nat",
       [](HttpClient& admin, const std::string&) { MustOk(admin.Put("/v1/ipv4/tables/nat/chains/GONE", "")); },
       [](HttpClient& c, const std::string&, Column) { return c.Delete("/v1/ipv4/tables/nat/chains/GONE"); },
       {k403, k200, k200, k403, k403, k403}},
      {"flush FORWARD",
       none,
       [](HttpClient& c, const std::string&, Column) {
         return c.Post("/v1/transactions", R"({"ops": [{"flush": {"chain": "FORWARD"}}]})");
       },
       {k403, k200, k403, k200, k403, k403}},
      {"zero every chain of filter",
       none,
       [](HttpClient& c, const std::string&, Column) {
         return c.Post("/v1/transactions", R"({"ops": [{"zero": {"table": "filter"}}]})");
       },
       {k403, k200, k403, k403, k403, k403}},
      {"owned add of app without ttl (permanent)",
       none,
       [input](HttpClient& c, const std::string& ip, Column) { return c.Post(input, Body(ip, R"(, "owner": "app")")); },
       {k403, k200, k403, k403, k200, k403}},
      {"owned add of app, ttl 30",
       none,
       [input](HttpClient& c, const std::string& ip, Column) {
         return c.Post(input, Body(ip, R"(, "owner": "app", "ttl": 30)"));
       },
       {k403, k200, k403, k403, k200, k200}},
      {"owned add of app, ttl 120 (over the bound)",
       none,
       [input](HttpClient& c, const std::string& ip, Column) {
         return c.Post(input, Body(ip, R"(, "owner": "app", "ttl": "2m")"));
       },
       {k403, k200, k403, k403, k200, k403}},
      {"owned add of another owner (zed), ttl 30",
       none,
       [input](HttpClient& c, const std::string& ip, Column) {
         return c.Post(input, Body(ip, R"(, "owner": "zed", "ttl": 30)"));
       },
       {k403, k200, k403, k403, k403, k200}},
      {"owned add of app in nat POSTROUTING, ttl 30",
       none,
       [post](HttpClient& c, const std::string& ip, Column) {
         return c.Post(post, Body(ip, R"(, "owner": "app", "ttl": 30)", "ACCEPT"));
       },
       {k403, k200, k200, k403, k200, k200}},
      {"owned add of app in FORWARD, ttl 30",
       none,
       [fwd](HttpClient& c, const std::string& ip, Column) {
         return c.Post(fwd, Body(ip, R"(, "owner": "app", "ttl": 30)"));
       },
       {k403, k200, k403, k200, k200, k200}},
      {"give zed's permanent rule a ttl (it would expire)",
       owned(fwd, "zed", ""),
       [fwd](HttpClient& c, const std::string& ip, Column) {
         return c.Post(fwd, Body(ip, R"(, "owner": "zed", "ttl": 30)"));
       },
       {k403, k200, k403, k200, k403, k403}},
      {"delete zed's ttl rule",
       owned(fwd, "zed", "300"),
       [fwd](HttpClient& c, const std::string& ip, Column) { return c.Delete(fwd, Body(ip, R"(, "owner": "zed")")); },
       {k403, k200, k403, k200, k403, k200}},
      {"delete zed's permanent rule",
       owned(fwd, "zed", ""),
       [fwd](HttpClient& c, const std::string& ip, Column) { return c.Delete(fwd, Body(ip, R"(, "owner": "zed")")); },
       {k403, k200, k403, k200, k403, k403}},
      {"delete app's permanent rule",
       owned(fwd, "app", ""),
       [fwd](HttpClient& c, const std::string& ip, Column) { return c.Delete(fwd, Body(ip, R"(, "owner": "app")")); },
       {k403, k200, k403, k200, k200, k403}},
      {"replace app's document",
       none,
       [](HttpClient& c, const std::string&, Column) { return c.Put("/v1/owners/app", kAppDocument); },
       {k403, k200, k403, k403, k200, k403}},
      {"replace zed's document",
       none,
       [](HttpClient& c, const std::string&, Column) { return c.Put("/v1/owners/zed", kZedDocument); },
       {k403, k200, k403, k403, k403, k403}},
      {"remove owner app",
       app_doc,
       [](HttpClient& c, const std::string&, Column) { return c.Delete("/v1/owners/app"); },
       {k403, k200, k403, k403, k200, k403}},
      {"owned add of app jumping to app's chain APP-IN",
       app_doc,
       [input](HttpClient& c, const std::string& ip, Column) {
         return c.Post(input, Body(ip, R"(, "owner": "app", "ttl": 30)", "APP-IN"));
       },
       {k403, k200, k403, k403, k200, k200}},
      {"owned add of app jumping into zed's chain ZED-IN",
       app_doc,
       [input](HttpClient& c, const std::string& ip, Column) {
         return c.Post(input, Body(ip, R"(, "owner": "app", "ttl": 30)", "ZED-IN"));
       },
       {k403, kNotScope, k403, k403, k403, kNotScope}},
      // The request is made by the test loop: the admin commits with confirm_within, the column's token confirms.
      {"confirm the admin's pending transaction", none, nullptr, {k403, k200, k403, k403, k403, k403}},
      {"confirm its own pending transaction",
       none,
       [fwd](HttpClient& c, const std::string& ip, Column col) {
         // An op each column may make, committed with confirm_within, then confirmed by the same token.
         std::string op;
         switch (col) {
           case kTable:
             op = R"({"append": {"table": "nat", "chain": "POSTROUTING", "rule": {"spec": ")" + Spec(ip, "ACCEPT") +
                  R"("}}})";
             break;
           case kOwner:
           case kTtl:
             op = R"({"append": {"chain": "FORWARD", "rule": {"spec": ")" + Spec(ip) +
                  R"(", "owner": "app", "ttl": 30}}})";
             break;
           default:
             op = R"({"append": {"chain": "FORWARD", "rule": {"spec": ")" + Spec(ip) + R"("}}})";
         }
         Reply made = c.Post("/v1/transactions", R"({"confirm_within": 300, "ops": [)" + op + "]}");
         if (made.status != 200) return made;
         return c.Post(made.json["confirm_url"].get<std::string>(), "");
       },
       {k403, k200, k200, k200, k200, k403}},
  };
}

// Regression (issue 8, item 6): every cell of the scope table of docs/daemon.md against a real daemon.
TEST(DaemonScopes, EveryCellOfTheScopeTable) {
  IPTKIT_NEW_NETNS(ns);
  ASSERT_OK_AND_ASSIGN(auto daemon, Daemon::Start(*ns));
  const std::vector<std::vector<std::string>> scopes = {
      {"read"},
      {"write"},
      {"read", "write", "table:nat"},
      {"read", "write", "chain:FORWARD"},
      {"read", "write", "owner:app"},
      {"read", "write"},
  };
  std::vector<HttpClient> clients;
  for (int c = 0; c < kColumns; ++c) {
    ASSERT_OK_AND_ASSIGN(std::string token, daemon->CreateToken("col" + std::to_string(c), scopes[c],
                                                                c == kTtl ? std::optional<int64_t>(60) : std::nullopt));
    clients.push_back(daemon->Client(token));
  }
  HttpClient admin = daemon->Admin();
  MustOk(admin.Put("/v1/owners/app", kAppDocument));
  MustOk(admin.Put("/v1/owners/zed", kZedDocument));

  std::vector<Row> rows = Rows();
  int cells = 0;
  for (size_t r = 0; r < rows.size(); ++r) {
    for (int c = 0; c < kColumns; ++c) {
      const std::string ip = "10." + std::to_string(r + 1) + "." + std::to_string(c + 1) + ".1";
      const std::string cell = "row '" + rows[r].name + "', column " + kColumnNames[c];
      HttpClient setup = daemon->Admin();
      rows[r].setup(setup, ip);
      if (::testing::Test::HasFatalFailure()) return;
      Reply reply;
      if (rows[r].request) {
        reply = rows[r].request(clients[c], ip, static_cast<Column>(c));
      } else {
        // The confirm row.
        Reply made = admin.Post("/v1/transactions", R"({"confirm_within": 300, "ops": [{"append": {"chain":
            "FORWARD", "rule": {"spec": ")" + Spec(ip, "ACCEPT") +
                                                        R"("}}}]})");
        ASSERT_EQ(made.status, 200) << made.Describe();
        reply = clients[c].Post(made.json["confirm_url"].get<std::string>(), "");
      }
      const int want = rows[r].want[c];
      ++cells;
      if (want == kNotScope) {
        EXPECT_NE(reply.status, 403) << cell << ": " << reply.Describe();
        EXPECT_NE(reply.status, 0) << cell << ": " << reply.Describe();
      } else if (want == k403) {
        ExpectError(reply, 403, "permission_denied");
        if (reply.status != 403) ADD_FAILURE() << cell;
      } else {
        EXPECT_EQ(reply.status, want) << cell << ": " << reply.Describe();
      }
    }
  }
  EXPECT_EQ(cells, static_cast<int>(rows.size()) * kColumns);
}

// Regression (issue 8, item 6): a transaction accepted a forged "iptkit:OTHER:id" tag in an imperative op (the
// single-rule POST refused it), so a client could plant a rule that another owner's apply then treats as its own.
TEST(DaemonScopes, TransactionsRefuseForgedOwnerTags) {
  IPTKIT_NEW_NETNS(ns);
  ASSERT_OK_AND_ASSIGN(auto daemon, Daemon::Start(*ns));
  HttpClient admin = daemon->Admin();
  MustOk(admin.Put("/v1/owners/zed", kZedDocument));
  const std::string before = SaveText(*ns);
  for (const std::string& spec : {std::string(R"(-s 10.0.0.1 -m comment --comment \"iptkit:zed:abcdef\" -j DROP)"),
                                  std::string(R"(-m comment --comment \"iptkit:zed:abcdef\" -p tcp -j DROP)")}) {
    Reply r = admin.Post("/v1/transactions",
                         R"({"ops": [{"append": {"chain": "INPUT", "rule": {"spec": ")" + spec + R"("}}}]})");
    ExpectError(r, 400, "invalid_argument");
    EXPECT_NE(r.body.find("owner tag"), std::string::npos) << r.body;
    EXPECT_EQ(r.json["error"]["details"]["field"], "/ops/0/append/rule/spec") << r.body;
    // The single-rule route refuses the same.
    ExpectError(admin.Post(RulesPath("INPUT"), R"({"spec": ")" + spec + "\"}"), 400, "invalid_argument");
  }
  EXPECT_EQ(SaveText(*ns), before);
}

// Regression (issue 8, item 6): owner "a" (chains A-...) and owner "a-b" (chains A-B-...) were both accepted, and
// "a" could write into and delete the chains of "a-b".
TEST(DaemonScopes, OverlappingOwnerPrefixesAreRefused) {
  IPTKIT_NEW_NETNS(ns);
  ASSERT_OK_AND_ASSIGN(auto daemon, Daemon::Start(*ns));
  HttpClient admin = daemon->Admin();
  MustOk(admin.Put("/v1/owners/a-b", R"({"chains": [{"name": "A-B-IN", "rules": [{"spec": "-j RETURN"}]}]})"));
  const std::string before = SaveText(*ns);
  // A longer or a shorter prefix of an existing owner's, by document or by a managed rule.
  Reply shorter = admin.Put("/v1/owners/a", R"({"chains": [{"name": "A-X", "rules": [{"spec": "-j RETURN"}]}]})");
  ExpectError(shorter, 412, "failed_precondition");
  EXPECT_NE(shorter.body.find("'A-B-' of owner 'a-b'"), std::string::npos) << shorter.body;
  ExpectError(admin.Post(RulesPath("INPUT"), R"({"spec": "-s 10.9.9.9 -j DROP", "owner": "a"})"), 412,
              "failed_precondition");
  ExpectError(admin.Post(RulesPath("INPUT"), R"({"spec": "-s 10.9.9.9 -j DROP", "owner": "a-b-c", "ttl": 60})"), 412,
              "failed_precondition");
  EXPECT_EQ(SaveText(*ns), before);
  // Owners whose prefixes do not overlap are fine ("ab" has "AB-"), and so is the existing owner itself.
  MustOk(admin.Post(RulesPath("INPUT"), R"({"spec": "-s 10.9.9.9 -j DROP", "owner": "ab"})"));
  MustOk(admin.Post(RulesPath("INPUT"), R"({"spec": "-s 10.9.9.8 -j DROP", "owner": "a-b"})"));
  // Once a-b is gone, a may come.
  MustOk(admin.Delete("/v1/owners/a-b"));
  MustOk(admin.Put("/v1/owners/a", R"({"chains": [{"name": "A-X", "rules": [{"spec": "-j RETURN"}]}]})"));
}

// Regression (issue 8, item 9): "bearer" was refused; RFC 7235 makes the scheme case-insensitive.
TEST(DaemonScopes, BearerSchemeIsCaseInsensitive) {
  IPTKIT_NEW_NETNS(ns);
  ASSERT_OK_AND_ASSIGN(auto daemon, Daemon::Start(*ns));
  HttpClient anon = daemon->Client("");
  for (const std::string scheme : {"bearer ", "BEARER ", "Bearer  ", "bEaReR\t"}) {
    Reply r = anon.Send(Request{"GET", "/v1/version", "", "", {{"Authorization", scheme + daemon->admin_token()}}});
    EXPECT_EQ(r.status, 200) << "'" << scheme << "': " << r.Describe();
  }
  for (const std::string& bad :
       std::vector<std::string>{"Bearer", "Bearer ", "Bearerx " + daemon->admin_token(), "Basic x"}) {
    ExpectError(anon.Send(Request{"GET", "/v1/version", "", "", {{"Authorization", bad}}}), 401, "unauthenticated");
  }
}

}  // namespace
}  // namespace iptkit::daemontest
