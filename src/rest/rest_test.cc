// Unit tests of the REST layer without sockets: errors and their details, decoding, scopes, and the Api handler
// over a service on the shared fake backend.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <future>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <thread>

#include "iptkit/dialect.h"
#include "src/backend/fake/shared_fake.h"
#include "src/base/subprocess.h"
#include "src/rest/api.h"
#include "src/rest/auth.h"
#include "src/rest/decode.h"
#include "src/rest/errors.h"
#include "src/rest/ui_assets.h"
#include "src/service/counter_sampler.h"

namespace iptkit::rest {
namespace {

using nlohmann::json;
using ::testing::Contains;
using ::testing::HasSubstr;

// ---- errors ----

TEST(ErrorsTest, OneTableMapsEveryCode) {
  EXPECT_EQ(HttpStatusFor(StatusCode::kInvalidArgument), 400);
  EXPECT_EQ(HttpStatusFor(StatusCode::kNotFound), 404);
  EXPECT_EQ(HttpStatusFor(StatusCode::kAlreadyExists), 409);
  EXPECT_EQ(HttpStatusFor(StatusCode::kAborted), 409);
  EXPECT_EQ(HttpStatusFor(StatusCode::kFailedPrecondition), 412);
  EXPECT_EQ(HttpStatusFor(StatusCode::kPermissionDenied), 403);
  EXPECT_EQ(HttpStatusFor(StatusCode::kUnavailable), 503);
  EXPECT_EQ(HttpStatusFor(StatusCode::kInternal), 500);
  EXPECT_EQ(ErrorCodeFor(StatusCode::kFailedPrecondition), "failed_precondition");
}

TEST(ErrorsTest, DetailsComeFromTheStatusPayloadNotTheMessage) {
  // A spec error of a decoded body: the decoder's pointer and the parser's token and column.
  Result<RuleBody> bad = DecodeRuleBody(R"({"spec":"-p tcp --dportx 22 -j ACCEPT"})",
                                        Location{Family::kIPv4, "filter", "INPUT"}, DecodeOptions{"", "iptkitd", 3});
  ASSERT_FALSE(bad.ok());
  HttpError e = ErrorFromStatus(bad.status());
  EXPECT_EQ(e.field, "/spec");
  EXPECT_EQ(e.token, "--dportx");
  EXPECT_EQ(e.column, 8);
  // A message that merely looks like one with a pointer and a token carries no details.
  e = ErrorFromStatus(Status::InvalidArgument("/spec: '--dportx' at column 8: unknown option"));
  EXPECT_FALSE(e.field.has_value());
  EXPECT_FALSE(e.token.has_value());
  // An op index maps to the transaction's pointer.
  e = ErrorFromStatus(Status::NotFound("chain 'X' does not exist").WithOpIndex(2), {"/ops", ""});
  EXPECT_EQ(e.http_status, 404);
  EXPECT_EQ(e.field, "/ops/2");
  // Without a pointer a single-rule request's field is given by the caller when iptables rejected the rule.
  e = ErrorFromStatus(Status::InvalidArgument("iptables rejects 1 rule(s)").WithReason("rule_rejected"), {"", "/spec"});
  EXPECT_EQ(e.field, "/spec");
  e = ErrorFromStatus(Status::NotFound("chain 'X' does not exist"), {"", "/spec"});
  EXPECT_FALSE(e.field.has_value());
  json body = json::parse(ErrorBody(e, "r-1"));
  EXPECT_EQ(body["error"]["code"], "not_found");
  EXPECT_EQ(body["error"]["details"]["request_id"], "r-1");
}

// ---- decoding ----

const DecodeOptions kOptions{"", "iptkitd", 3};
const Location kInput{Family::kIPv4, "filter", "INPUT"};

TEST(DecodeTest, RuleBodyWithOwnedMembers) {
  Result<RuleBody> b =
      DecodeRuleBody(R"({"spec":"-s 10.0.0.1 -j DROP","owner":"bans","id":"x1","ttl":60})", kInput, kOptions);
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(FormatRuleSpec(b->rule), "-s 10.0.0.1 -j DROP");
  EXPECT_EQ(b->owner, "bans");
  EXPECT_EQ(b->id, "x1");
  EXPECT_EQ(b->ttl_seconds, 60);
  // A ttl alone means the default owner.
  b = DecodeRuleBody(R"({"spec":"-j DROP","ttl":5})", kInput, kOptions);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->owner, "iptkitd");
}

// TTLs take the same forms as in the CLI and the configuration: seconds, or "90", "10m", "2h", "1d".
TEST(DecodeTest, TtlsAreSecondsOrDurations) {
  for (const auto& [ttl, seconds] : std::vector<std::pair<std::string, int64_t>>{
           {"90", 90}, {"\"90\"", 90}, {"\"90s\"", 90}, {"\"10m\"", 600}, {"\"2h\"", 7200}, {"\"1d\"", 86400}}) {
    Result<RuleBody> b = DecodeRuleBody(R"({"spec":"-j DROP","ttl":)" + ttl + "}", kInput, kOptions);
    ASSERT_TRUE(b.ok()) << ttl << ": " << b.status().ToString();
    EXPECT_EQ(b->ttl_seconds, seconds) << ttl;
  }
  Result<TransactionBody> t = DecodeTransactionBody(
      R"({"confirm_within":"2m","ops":[{"append":{"chain":"INPUT","rule":{"spec":"-j DROP","ttl":"1d"}}}]})", kOptions);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(t->confirm_within_seconds, 120);
  EXPECT_EQ(t->adds.at(0).ttl_seconds, 86400);
  EXPECT_EQ(*QuerySeconds({{"confirm_within", "10m"}}, "confirm_within", kMaxSeconds), 600);
  EXPECT_FALSE(QuerySeconds({{"confirm_within", "soon"}}, "confirm_within", kMaxSeconds).ok());
}

// Regression (issue 8, item 6): a transaction accepted a forged owner tag in an imperative op, which the
// single-rule POST refuses; a tag that is not the last match is refused too.
TEST(DecodeTest, ForgedOwnerTagsAreRefusedEverywhere) {
  const std::string tag = R"(-m comment --comment \"iptkit:zed:abc\")";
  for (const std::string& op : {R"({"append":{"chain":"INPUT","rule":{"spec":"-s 10.0.0.1 )" + tag + R"( -j DROP"}}})",
                                R"({"insert":{"chain":"INPUT","index":1,"rule":{"spec":")" + tag + R"( -j ACCEPT"}}})",
                                R"({"replace":{"chain":"INPUT","index":1,"rule":{"spec":")" + tag + R"( -j ACCEPT"}}})",
                                R"({"append":{"chain":"INPUT","rule":{"spec":")" + tag + R"( -p tcp -j DROP"}}})"}) {
    Result<TransactionBody> t = DecodeTransactionBody(R"({"ops":[{"flush":{"chain":"INPUT"}},)" + op + "]}", kOptions);
    ASSERT_FALSE(t.ok()) << op;
    EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(t.status().message(), HasSubstr("owner tag")) << op;
    EXPECT_THAT(t.status().details().field.value_or(""), ::testing::StartsWith("/ops/1/")) << op;
  }
  // A comment of one's own that merely mentions iptkit is fine.
  EXPECT_TRUE(
      DecodeTransactionBody(
          R"({"ops":[{"append":{"chain":"INPUT","rule":{"spec":"-m comment --comment \"via iptkit\" -j DROP"}}}]})",
          kOptions)
          .ok());
  // A delete of a tagged spec goes on to the writer, which names the rule's owner (412).
  EXPECT_TRUE(DecodeTransactionBody(
                  R"({"ops":[{"delete":{"chain":"INPUT","rule":{"spec":")" + tag + R"( -j ACCEPT"}}}]})", kOptions)
                  .ok());
  Result<ReplaceBody> r = DecodeReplaceBody(R"({"spec":")" + tag + R"( -j DROP"})", kInput, kOptions);
  EXPECT_FALSE(r.ok());
}

TEST(DecodeTest, RuleBodyErrorsNameTheMember) {
  struct Case {
    const char* body;
    const char* starts;
  } cases[] = {
      {"", "(body): expected a JSON object"},
      {"[]", "(body): expected a JSON object, got array"},
      {R"({"spec":"-j DROP","ttl":0})", "/ttl: expected an integer 1..315360000"},
      {R"({"spec":"-j DROP","ttl":"5x"})", "/ttl: '5x': expected a whole number of seconds"},
      {R"({"spec":"-j DROP","ttl":"0"})", "/ttl: '0': expected"},
      {R"({"spec":"-j DROP","ttl":"500ms"})", "/ttl: '500ms': expected"},
      {R"({"spec":"-j DROP","ttl":true})", "/ttl: expected an integer"},
      {R"({"spec":"-j DROP","owner":"Bad"})", "/owner:"},
      {R"({"spec":"-j DROP","id":"x"})", "/id: an id needs an \"owner\""},
      {R"({"spec":"-j DROP","table":"nat"})", "/table: 'nat' disagrees with the route's table 'filter'"},
      {R"({"spec":"-j DROP","netns":"other"})", "/netns: this daemon serves"},
      {R"({"spec":"-j DROP","index":2})", "/index: give the position in the URL"},
      {R"({"spec":"-s example.com -j DROP"})", "/spec:"},
      {R"({"spec":"-j DROP","x":1})", "/x: unknown field"},
      {R"({"spec":"-j DROP","spec":"-j ACCEPT"})", "/spec"},
      {R"({"spec":"-m comment --comment \"iptkit:a:b\" -j DROP"})", "/spec: the rule carries an owner tag"},
  };
  for (const Case& c : cases) {
    Result<RuleBody> b = DecodeRuleBody(c.body, kInput, kOptions);
    ASSERT_FALSE(b.ok()) << c.body;
    EXPECT_EQ(b.status().code(), StatusCode::kInvalidArgument) << c.body;
    EXPECT_THAT(b.status().message(), ::testing::StartsWith(c.starts)) << c.body;
  }
}

TEST(DecodeTest, TransactionSplitsOwnedOpsAndEnforcesLimits) {
  Result<TransactionBody> t = DecodeTransactionBody(
      R"({"ops":[{"append":{"chain":"INPUT","rule":{"spec":"-j ACCEPT"}}},
                 {"insert":{"chain":"INPUT","index":1,"rule":{"spec":"-s 1.2.3.4 -j DROP","owner":"bans","ttl":9}}},
                 {"delete":{"chain":"INPUT","rule":{"spec":"-s 5.6.7.8 -j DROP","owner":"bans"}}}],
          "confirm_within":30,"dry_run":false})",
      kOptions);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(t->ops.ops().size(), 1u);
  ASSERT_EQ(t->adds.size(), 1u);
  EXPECT_EQ(t->adds[0].position, store::Position::kFirst);
  EXPECT_EQ(t->adds[0].ttl_seconds, 9);
  ASSERT_EQ(t->deletes.size(), 1u);
  EXPECT_EQ(t->confirm_within_seconds, 30);

  auto error = [](const char* body) {
    Result<TransactionBody> r = DecodeTransactionBody(body, kOptions);
    return r.ok() ? std::string("ok") : r.status().message();
  };
  EXPECT_THAT(error(R"({"ops":[]})"), HasSubstr("/ops: no ops given"));
  EXPECT_THAT(error(R"({"ops":[{"flush":{}},{"flush":{}},{"flush":{}},{"flush":{}}]})"),
              HasSubstr("exceed this daemon's limit of 3"));
  EXPECT_THAT(error(R"({"ops":[{"insert":{"chain":"INPUT","index":2,"rule":{"spec":"-j DROP","owner":"a"}}}]})"),
              HasSubstr("/ops/0/insert/index"));
  EXPECT_THAT(error(R"({"ops":[{"replace":{"chain":"INPUT","index":1,"rule":{"spec":"-j DROP","owner":"a"}}}]})"),
              HasSubstr("/ops/0/replace/rule/owner"));
  EXPECT_THAT(error(R"({"ops":[{"append":{"chain":"INPUT"}}]})"), HasSubstr("/ops/0/append/rule"));
  EXPECT_THAT(error(R"({"ops":[{"append":{"chain":"INPUT","rule":{"spec":"-j X"}}}],"extra":1})"),
              HasSubstr("/extra: unknown field"));
}

TEST(DecodeTest, QueryParameters) {
  Query q{{"limit", "5"}, {"since", "2026-12-02T04:00:00Z"}, {"flag", ""}, {"two", "a"}, {"two", "b"}};
  EXPECT_EQ(**QueryInt(q, "limit", 1, 10), 5);
  EXPECT_FALSE(QueryInt(q, "limit", 6, 10).ok());
  EXPECT_EQ(**QueryTime(q, "since"), 1796184000000);
  EXPECT_TRUE(*QueryBool(q, "flag"));
  EXPECT_FALSE(QueryValue(q, "two").ok());
  EXPECT_THAT(CheckQuery({{"token", "x"}}, {"token"}).message(), HasSubstr("Authorization header only"));
  EXPECT_THAT(CheckQuery({{"nope", "x"}}, {"limit"}).message(), HasSubstr("unknown query parameter 'nope'"));
  EXPECT_EQ(FormatTime(1796184000123), "2026-12-02T04:00:00.123Z");
}

// ---- scopes ----

TEST(AuthTest, ScopesLimitTablesChainsOwnersAndTtl) {
  Principal p{"token:t", {}};
  p.scopes.read = true;
  service::ChangeRequest r;
  r.ops.Append(Family::kIPv4, "nat", "POSTROUTING", Rule{});
  EXPECT_EQ(AuthorizeChange(p, TouchesOf(r)).code(), StatusCode::kPermissionDenied);  // no write
  p.scopes.write = true;
  EXPECT_TRUE(AuthorizeChange(p, TouchesOf(r)).ok());
  p.scopes.tables = {"filter"};
  EXPECT_THAT(AuthorizeChange(p, TouchesOf(r)).message(), HasSubstr("may not change table nat"));
  service::ChangeRequest flush;
  flush.ops.Flush(Family::kIPv4, "filter");
  p.scopes.chains = {"INPUT"};
  EXPECT_THAT(AuthorizeChange(p, TouchesOf(flush)).message(), HasSubstr("every chain"));

  Principal bans{"token:bans", {}};
  bans.scopes.read = bans.scopes.write = true;
  bans.scopes.owners = {"bans"};
  bans.scopes.max_ttl_seconds = 60;
  service::ChangeRequest add;
  add.adds.push_back({"bans", Family::kIPv4, "filter", "INPUT", Rule{}, store::Position::kLast, 30});
  EXPECT_TRUE(AuthorizeChange(bans, TouchesOf(add)).ok());
  add.adds[0].ttl_seconds = 120;
  EXPECT_THAT(AuthorizeChange(bans, TouchesOf(add)).message(), HasSubstr("at most 60"));
  add.adds[0].ttl_seconds.reset();
  EXPECT_FALSE(AuthorizeChange(bans, TouchesOf(add)).ok());
  add.adds[0].owner = "other";
  add.adds[0].ttl_seconds = 10;
  EXPECT_THAT(AuthorizeChange(bans, TouchesOf(add)).message(), HasSubstr("owner 'other'"));
  EXPECT_FALSE(AuthorizeChange(bans, TouchesOf(r)).ok());  // unowned change
}

// Regression (issue 8, item 6): a --ttl-max token could set a policy or flush (only adds were checked); an owner
// scope could jump into another owner's chains and confirm another principal's transaction.
TEST(AuthTest, TtlBoundAllowsOnlyTtlBoundedChangesAndOwnersJumpOnlyIntoTheirChains) {
  Principal temp{"token:temp", {}};
  temp.scopes.read = temp.scopes.write = true;
  temp.scopes.max_ttl_seconds = 60;
  auto refused = [&](const service::ChangeRequest& r) { return AuthorizeChange(temp, TouchesOf(r)).code(); };
  service::ChangeRequest policy;
  policy.ops.SetPolicy(Family::kIPv4, "filter", "INPUT", "DROP");
  EXPECT_EQ(refused(policy), StatusCode::kPermissionDenied);
  service::ChangeRequest flush;
  flush.ops.Flush(Family::kIPv4, "filter");
  EXPECT_EQ(refused(flush), StatusCode::kPermissionDenied);
  service::ChangeRequest confirm;
  confirm.confirm = "t-1";
  EXPECT_EQ(refused(confirm), StatusCode::kPermissionDenied);
  service::ChangeRequest del;
  del.deletes.push_back({"zed", Family::kIPv4, "filter", "INPUT", Rule{}});
  EXPECT_TRUE(AuthorizeChange(temp, TouchesOf(del)).ok());  // the writer refuses it when the rule is permanent
  EXPECT_TRUE(TtlBounded(temp));

  Principal app{"token:app", {}};
  app.scopes.read = app.scopes.write = true;
  app.scopes.owners = {"app"};
  service::ChangeRequest jump;
  Rule to_zed;
  to_zed.target = Target::Jump("ZED-IN");
  jump.adds.push_back({"app", Family::kIPv4, "filter", "INPUT", to_zed, store::Position::kLast, std::nullopt});
  EXPECT_THAT(AuthorizeChange(app, TouchesOf(jump)).message(), HasSubstr("not to 'ZED-IN'"));
  jump.adds[0].rule.target = Target::Goto("ZED-IN");
  EXPECT_FALSE(AuthorizeChange(app, TouchesOf(jump)).ok());
  for (const char* ok : {"APP-IN", "ACCEPT", "LOG", "RETURN"}) {
    jump.adds[0].rule.target = Target::Jump(ok);
    EXPECT_TRUE(AuthorizeChange(app, TouchesOf(jump)).ok()) << ok;
  }
  store::ConfirmRecord theirs;
  theirs.id = "t-1";
  theirs.principal = "token:admin";
  EXPECT_EQ(AuthorizeConfirm(app, theirs).code(), StatusCode::kPermissionDenied);
  theirs.principal = "token:app";
  EXPECT_TRUE(AuthorizeConfirm(app, theirs).ok());
  Principal admin{"token:admin", {}};
  admin.scopes.write = true;
  theirs.principal = "token:other";
  EXPECT_TRUE(AuthorizeConfirm(admin, theirs).ok());
}

// The daemon's own request ids: "r-" and 16 hex digits, none twice (a counter through a bijection), from many
// threads at once; a valid id the client gave is kept.
TEST(RequestIdTest, DaemonIdsAreWellFormedAndUnique) {
  std::vector<std::vector<std::string>> made(4);
  std::vector<std::thread> threads;
  for (auto& ids : made) {
    threads.emplace_back([&ids] {
      for (int i = 0; i < 5000; ++i) ids.push_back(Api::RequestId(""));
    });
  }
  for (std::thread& t : threads) t.join();
  std::set<std::string> unique;
  for (const auto& ids : made) {
    for (const std::string& id : ids) {
      ASSERT_EQ(id.size(), 18u) << id;
      ASSERT_EQ(id.substr(0, 2), "r-") << id;
      ASSERT_TRUE(std::all_of(id.begin() + 2, id.end(), [](char c) { return std::isxdigit(c) && !std::isupper(c); }))
          << id;
      unique.insert(id);
    }
  }
  EXPECT_EQ(unique.size(), 20000u);
  EXPECT_EQ(Api::RequestId("ci-42"), "ci-42");
  EXPECT_NE(Api::RequestId("has space"), "has space");
}

TEST(AuthTest, SocketPeersByUidAndGroups) {
  std::vector<SocketRule> allow = {{false, 1000, true}, {true, 27, false}};
  PeerCred reader{1000, 1000, 42, {}};
  Result<Principal> p = PeerPrincipal(reader, allow);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->name, "uid:1000");
  EXPECT_TRUE(p->scopes.read);
  EXPECT_FALSE(p->scopes.write);
  PeerCred member{1000, 1000, 42, {5, 27}};  // read-only by uid, read-write by a supplementary group
  EXPECT_TRUE(PeerPrincipal(member, allow)->scopes.write);
  PeerCred stranger{2000, 2000, 43, {}};
  EXPECT_EQ(PeerPrincipal(stranger, allow).status().code(), StatusCode::kPermissionDenied);
}

// ---- the Api over a service on the fake backend ----

class ApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "iptkit-rest-XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    kernel_ = std::make_shared<backend::SharedFake>();
    ASSERT_TRUE(kernel_->fake
                    .LoadSave(Family::kIPv4,
                              "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n"
                              ":OUTPUT ACCEPT [0:0]\n-A INPUT -s 192.168.0.0/16 -j ACCEPT\n"
                              "COMMIT\n")
                    .ok());
    store_ = *store::Store::Open(dir_ + "/iptkitd.db");
    service::Service::Options options;
    auto kernel = kernel_;
    options.make_backend = [kernel]() -> Result<std::unique_ptr<backend::Backend>> {
      return backend::NewSharedFakeHandle(kernel);
    };
    options.drift_interval = std::chrono::hours(1);
    service_ = *service::Service::Start(std::move(options), store_.get(), &metrics_, &events_);
    ApiOptions api_options;
    api_options.version = "test";
    api_options.rate_limit = 1000;
    api_options.rate_burst = 1000;
    api_options.max_body_bytes = 4096;
    api_options.socket_allow = {{false, 0, false}};
    // A refill that takes 100 s: within a test, a client address has exactly 5 failures before it is held.
    api_options.auth_failure_rate = 0.01;
    api_options.auth_failure_burst = 5;
    api_ = std::make_unique<Api>(service_.get(), store_.get(), &events_, &metrics_, api_options);
    admin_ = *store_->CreateToken("admin", *store::ParseScopes({"read", "write"}), 0);
    reader_ = *store_->CreateToken("reader", *store::ParseScopes({"read"}), 0);
  }
  void TearDown() override {
    api_.reset();
    events_.Close();
    service_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  HttpResponse Call(const std::string& method, const std::string& path, const std::string& body = "",
                    const std::string& token = "", Query query = {}) {
    HttpRequest req;
    req.method = method;
    req.path = path;
    req.query = std::move(query);
    req.body = body;
    if (!body.empty()) req.headers.emplace("content-type", "application/json");
    const std::string& t = token.empty() ? admin_ : token;
    if (t != "-") req.headers.emplace("authorization", "Bearer " + t);
    return api_->Handle(req);
  }
  std::string Kernel() {
    std::lock_guard<std::mutex> lock(kernel_->mu);
    return FormatSave(*kernel_->fake.Read(Family::kIPv4));
  }

  std::string dir_;
  std::shared_ptr<backend::SharedFake> kernel_;
  std::unique_ptr<store::Store> store_;
  service::Metrics metrics_;
  service::EventBus events_;
  std::unique_ptr<service::Service> service_;
  std::unique_ptr<Api> api_;
  std::string admin_, reader_;
};

TEST_F(ApiTest, AuthenticationAndRouting) {
  EXPECT_EQ(Call("GET", "/healthz", "", "-").status, 200);
  HttpResponse r = Call("GET", "/v1/ipv4", "", "-");
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(json::parse(r.body)["error"]["code"], "unauthenticated");
  EXPECT_EQ(Call("GET", "/v1/ipv4", "", "iptk_wrong").status, 401);
  EXPECT_EQ(Call("GET", "/v1/ipv4").status, 200);
  EXPECT_EQ(Call("GET", "/v1/ipv5").status, 404);
  EXPECT_EQ(Call("GET", "/nope").status, 404);
  // Routing splits the path into at most as many segments as the longest route has (without allocating): longer
  // paths, an empty parameter segment, a trailing slash and a path without its leading slash match nothing.
  r = Call("GET", "/v1/ipv4/tables/filter/chains/INPUT/rules/1");  // the longest route, its four parameters
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(json::parse(r.body)["family"], "ipv4");
  EXPECT_EQ(json::parse(r.body)["table"], "filter");
  EXPECT_EQ(json::parse(r.body)["chain"], "INPUT");
  EXPECT_EQ(Call("GET", "/v1/ipv4/tables/filter/chains/INPUT/rules/1/x").status, 404);
  EXPECT_EQ(Call("GET", "/v1/ipv4/tables/filter/chains/INPUT/rules/1/x/y/z/w").status, 404);
  EXPECT_EQ(json::parse(Call("GET", "/v1/ipv4/tables/filter/chains/INPUT/rules/1/x/y/z/w").body)["error"]["message"],
            "no such route: /v1/ipv4/tables/filter/chains/INPUT/rules/1/x/y/z/w");
  EXPECT_EQ(Call("GET", "/v1/ipv4/tables//chains/INPUT").status, 404);
  EXPECT_EQ(Call("GET", "/v1/ipv4/").status, 404);
  EXPECT_EQ(Call("GET", "v1/ipv4").status, 404);
  EXPECT_EQ(Call("GET", "/v1/ipv4/tables/filter/chains/INPUT").status, 200);
  EXPECT_EQ(json::parse(Call("GET", "/v1/ipv4/tables/filter/chains/INPUT/rules").body)["chain"], "INPUT");
  r = Call("PATCH", "/v1/ipv4");
  EXPECT_EQ(r.status, 405);
  bool allow = false;
  for (auto& [k, v] : r.headers) allow = allow || (k == "Allow" && v == "GET");
  EXPECT_TRUE(allow);
  EXPECT_EQ(Call("POST", "/v1/ipv4/tables/filter/chains/INPUT/rules", R"({"spec":"-j DROP"})", reader_).status, 403);
  // Revoked at once.
  ASSERT_TRUE(store_->RevokeToken("reader", 1).ok());
  EXPECT_EQ(Call("GET", "/v1/ipv4", "", reader_).status, 401);
  // Unix socket peers need no token.
  HttpRequest peer;
  peer.method = "GET";
  peer.path = "/v1/version";
  peer.peer = PeerCred{0, 0, 1, {}};
  EXPECT_EQ(api_->Handle(peer).status, 200);
  peer.peer = PeerCred{4242, 4242, 1, {}};
  EXPECT_EQ(api_->Handle(peer).status, 403);
}

// A client address that failed to authenticate more often than its budget gets 429 (Retry-After, held, its
// connection closed by the HTTP layer) instead of 401 — and only that address, and only for failures: a valid token
// from it still works, also one created after failed lookups from it (no cache may remember a secret as unknown).
TEST_F(ApiTest, FailedAuthenticationsPastTheBudgetOfAnAddressAreHeldAndOthersAreNot) {
  const std::string rules = "/v1/ipv4/tables/filter/chains/INPUT/rules";
  auto from = [&](const std::string& remote, const std::string& token, const std::string& method = "POST") {
    HttpRequest req;
    req.method = method;
    req.path = rules;
    req.remote = remote;
    if (method == "POST") {
      req.body = R"({"spec":"-s 198.51.100.9/32 -j DROP"})";
      req.headers.emplace("content-type", "application/json");
    }
    if (!token.empty()) req.headers.emplace("authorization", token);
    return api_->Handle(req);
  };
  const std::string before = Kernel();
  // Bad tokens, a missing header and a malformed one all spend the budget of 5.
  const std::vector<std::string> bad = {"Bearer iptk_aaaa", "", "Basic YTpi", "Bearer iptk_bbbb", "Bearer "};
  for (const std::string& auth : bad) {
    HttpResponse r = from("192.0.2.7:40000", auth);
    EXPECT_EQ(r.status, 401) << auth;
    EXPECT_EQ(r.hold.count(), 0);
  }
  HttpResponse held = from("192.0.2.7:40001", "Bearer iptk_cccc");
  EXPECT_EQ(held.status, 429);
  EXPECT_EQ(json::parse(held.body)["error"]["code"], "auth_failures_exceeded");
  EXPECT_EQ(held.hold, std::chrono::milliseconds(1000));
  const auto retry =
      std::find_if(held.headers.begin(), held.headers.end(), [](const auto& h) { return h.first == "Retry-After"; });
  ASSERT_NE(retry, held.headers.end());
  EXPECT_GE(std::stoi(retry->second), 1);
  EXPECT_EQ(from("192.0.2.7:40002", "").status, 429);           // another port of the same address: the same budget
  EXPECT_EQ(from("[::ffff:192.0.2.7]:40003", "").status, 429);  // and as an IPv4-mapped IPv6 address
  // Another address is not affected; an IPv6 /64 is one address.
  EXPECT_EQ(from("192.0.2.8:40000", "Bearer iptk_dddd").status, 401);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(from("2001:db8:1:2::" + std::to_string(i + 1) + ":443", "").status, 401);
  EXPECT_EQ(from("2001:db8:1:2:ffff::9:443", "").status, 429);
  EXPECT_EQ(from("2001:db8:1:3::1:443", "").status, 401);
  // A valid token from the held address is served.
  EXPECT_EQ(from("192.0.2.7:40004", "Bearer " + admin_, "GET").status, 200);
  // A token created after its secret's kind failed from there authenticates at once, from there too.
  const std::string fresh = *store_->CreateToken("fresh", *store::ParseScopes({"read"}), 0);
  EXPECT_EQ(from("192.0.2.7:40005", "Bearer " + fresh, "GET").status, 200);
  EXPECT_EQ(from("192.0.2.7:40006", "Bearer " + fresh + "x", "GET").status, 429);
  EXPECT_EQ(Kernel(), before);
  // In-process callers (no remote end) are not budgeted.
  for (int i = 0; i < 10; ++i) EXPECT_EQ(Call("GET", "/v1/ipv4", "", "iptk_wrong").status, 401);
}

// Answers made before authentication (404, 405, OPTIONS, a token in the query) spend the same budget when no live
// token came with them: past it they are held 429s, per address; a live token is never held, whatever it asks;
// unix socket peers and in-process callers are never charged.
TEST_F(ApiTest, AnswersBeforeAuthenticationSpendTheBudgetUnlessALiveTokenCameWithThem) {
  auto from = [&](const std::string& remote, const std::string& method, const std::string& path,
                  const std::string& auth, Query query = {}) {
    HttpRequest req;
    req.method = method;
    req.path = path;
    req.query = std::move(query);
    req.remote = remote;
    if (!auth.empty()) req.headers.emplace("authorization", auth);
    return api_->Handle(req);
  };
  // Within the budget of 5: the usual answers, each charged (a bad token too, on a wrong path).
  EXPECT_EQ(from("192.0.2.20:1", "GET", "/v1/nowhere", "").status, 404);
  EXPECT_EQ(from("192.0.2.20:2", "GET", "/v1/nowhere", "Bearer iptk_bad").status, 404);
  EXPECT_EQ(from("192.0.2.20:3", "PATCH", "/v1/version", "").status, 405);
  EXPECT_EQ(from("192.0.2.20:4", "OPTIONS", "/v1/version", "").status, 204);
  EXPECT_EQ(from("192.0.2.20:5", "GET", "/v1/version", "", {{"token", "x"}}).status, 400);
  // Past it: held 429s, for a wrong path as for a 401.
  HttpResponse held = from("192.0.2.20:6", "GET", "/v1/nowhere", "");
  EXPECT_EQ(held.status, 429);
  EXPECT_EQ(json::parse(held.body)["error"]["code"], "auth_failures_exceeded");
  EXPECT_EQ(held.hold, std::chrono::milliseconds(1000));
  EXPECT_EQ(from("192.0.2.20:7", "OPTIONS", "/v1/version", "").status, 429);
  EXPECT_EQ(from("192.0.2.20:8", "GET", "/v1/version", "").status, 429);
  // A live token from the held address is never held: a wrong path is its 404, a wrong method its 405.
  for (int i = 0; i < 10; ++i) {
    HttpResponse r = from("192.0.2.20:9", "GET", "/v1/nowhere", "Bearer " + admin_);
    EXPECT_EQ(r.status, 404);
    EXPECT_EQ(r.hold.count(), 0);
  }
  EXPECT_EQ(from("192.0.2.20:9", "PATCH", "/v1/version", "Bearer " + reader_).status, 405);
  EXPECT_EQ(from("192.0.2.20:9", "OPTIONS", "/v1/version", "Bearer " + reader_).status, 204);
  // Another address is answered at once.
  HttpResponse other = from("192.0.2.21:1", "GET", "/v1/nowhere", "");
  EXPECT_EQ(other.status, 404);
  EXPECT_EQ(other.hold.count(), 0);
  // /healthz needs no token and is not charged: its 200 stays within the budget of a fresh address.
  for (int i = 0; i < 10; ++i) EXPECT_EQ(from("192.0.2.22:1", "GET", "/healthz", "").status, 200);
  EXPECT_EQ(from("192.0.2.22:1", "GET", "/v1/nowhere", "").status, 404);
  // Unix socket peers and in-process callers are never charged.
  for (int i = 0; i < 10; ++i) {
    HttpRequest peer;
    peer.method = "GET";
    peer.path = "/v1/nowhere";
    peer.remote = "unix:uid=4242";
    peer.peer = PeerCred{4242, 4242, 1, {}};
    EXPECT_EQ(api_->Handle(peer).status, 404);
    EXPECT_EQ(Call("GET", "/v1/nowhere", "", "-").status, 404);
  }
  // The HTTP layer's refused heads: charged whatever they carry, per address, unix socket peers never.
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(api_->ChargeRefusedHead("192.0.2.23:1", "HTTP 400: bad", "r-1"));
  std::optional<HttpResponse> refused = api_->ChargeRefusedHead("192.0.2.23:2", "HTTP 400: bad", "r-2");
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 429);
  EXPECT_GT(refused->hold.count(), 0);
  EXPECT_EQ(from("192.0.2.23:3", "GET", "/v1/nowhere", "").status, 429);  // one budget with the Api's answers
  EXPECT_FALSE(api_->ChargeRefusedHead("", "HTTP 400: bad", "r-3"));
}

// The budget itself, with the clock given: per address, refilled at the rate, a bounded table of addresses.
TEST(AuthFailureBudgetTest, PerAddressBucketsRefillAndTheTableIsBounded) {
  using Clock = AuthFailureBudget::Clock;
  const Clock::time_point t0 = Clock::now();
  AuthFailureBudget budget({.rate = 2, .burst = 3, .max_keys = 2});
  int retry = 0;
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(budget.Charge("a", t0, &retry));
  EXPECT_FALSE(budget.Charge("a", t0, &retry));
  EXPECT_EQ(retry, 1);
  EXPECT_TRUE(budget.Charge("b", t0, &retry));                                   // another address
  EXPECT_TRUE(budget.Charge("a", t0 + std::chrono::milliseconds(500), &retry));  // one refilled at 2 per second
  EXPECT_FALSE(budget.Charge("a", t0 + std::chrono::milliseconds(500), &retry));
  // The table is full ("a", "b"): new addresses share one overflow bucket of the same size.
  EXPECT_EQ(budget.keys(), 2u);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(budget.Charge("c" + std::to_string(i), t0, &retry));
  EXPECT_FALSE(budget.Charge("c9", t0, &retry));
  EXPECT_EQ(budget.keys(), 2u);
  // Once the buckets have refilled, their addresses are forgotten and new ones get buckets of their own.
  const Clock::time_point later = t0 + std::chrono::seconds(10);
  EXPECT_TRUE(budget.Charge("d", later, &retry));
  EXPECT_EQ(budget.keys(), 1u);
  for (int i = 0; i < 2; ++i) EXPECT_TRUE(budget.Charge("d", later, &retry));
  EXPECT_FALSE(budget.Charge("d", later, &retry));
  // No budget at all with a rate of 0.
  AuthFailureBudget off({.rate = 0, .burst = 1});
  for (int i = 0; i < 100; ++i) EXPECT_TRUE(off.Charge("a", t0, &retry));
  // Keys: the address without the port; IPv4-mapped IPv6 as IPv4; IPv6 by its /64.
  EXPECT_EQ(AuthFailureBudget::PeerKey("192.0.2.1:5555"), "192.0.2.1");
  EXPECT_EQ(AuthFailureBudget::PeerKey("::ffff:192.0.2.1:5555"), "192.0.2.1");
  EXPECT_EQ(AuthFailureBudget::PeerKey("2001:db8:1:2:3:4:5:6:443"), "2001:db8:1:2::/64");
  EXPECT_EQ(AuthFailureBudget::PeerKey("[2001:db8::1]:443"), "2001:db8::/64");
  EXPECT_EQ(AuthFailureBudget::PeerKey("unix:uid=0"), "unix");
}

TEST_F(ApiTest, RuleLifecycleAndErrorsChangeNothing) {
  const std::string rules = "/v1/ipv4/tables/filter/chains/INPUT/rules";
  HttpResponse r = Call("POST", rules, R"({"spec":"-s 10.0.0.1 -j DROP"})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_THAT(Kernel(), HasSubstr("-A INPUT -s 10.0.0.1/32 -j DROP"));
  r = Call("POST", rules, R"({"spec":"-s 10.0.0.2 -j DROP"})", "", {{"position", "1"}});
  ASSERT_EQ(r.status, 200) << r.body;
  r = Call("GET", rules + "/1");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(json::parse(r.body)["spec"], "-s 10.0.0.2/32 -j DROP");
  r = Call("PUT", rules + "/1", R"({"spec":"-s 10.0.0.3 -j DROP","expect":"-s 10.0.0.2/32 -j DROP"})");
  ASSERT_EQ(r.status, 200) << r.body;
  r = Call("PUT", rules + "/1", R"({"spec":"-s 10.0.0.4 -j DROP","expect":"-s 10.0.0.2/32 -j DROP"})");
  EXPECT_EQ(r.status, 412) << r.body;
  r = Call("DELETE", rules, R"({"spec":"-s 10.0.0.1/32 -j DROP"})");
  ASSERT_EQ(r.status, 200) << r.body;
  r = Call("DELETE", rules + "/1");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Kernel(),
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
            "-A INPUT -s 192.168.0.0/16 -j ACCEPT\nCOMMIT\n");

  const std::string before = Kernel();
  r = Call("POST", rules, R"({"spec":"-p tcp --dportx 22 -j ACCEPT"})");
  EXPECT_EQ(r.status, 400);
  json e = json::parse(r.body)["error"];
  EXPECT_EQ(e["details"]["field"], "/spec");
  EXPECT_EQ(e["details"]["token"], "--dportx");
  EXPECT_EQ(e["details"]["column"], 8);
  EXPECT_EQ(Call("POST", rules, "x", "", {}).status, 400);
  HttpRequest wrong_type;
  wrong_type.method = "POST";
  wrong_type.path = rules;
  wrong_type.body = R"({"spec":"-j DROP"})";
  wrong_type.headers = {{"authorization", "Bearer " + admin_}, {"content-type", "text/plain"}};
  EXPECT_EQ(api_->Handle(wrong_type).status, 415);
  EXPECT_EQ(Call("POST", rules, std::string(5000, ' ')).status, 413);
  EXPECT_EQ(Call("GET", "/v1/ipv4/tables/filter/chains/NOPE").status, 404);
  EXPECT_EQ(Call("GET", "/v1/ipv4/tables/bogus").status, 404);
  EXPECT_EQ(Call("GET", "/v1/ipv4", "", "", {{"token", "abc"}}).status, 400);
  EXPECT_EQ(Kernel(), before);
}

// Api::HandleAsync (what the HTTP event loop runs itself): a rule change is queued and answered later through the
// callback with the same answer Handle gives (status, body, X-Request-Id), an error of the request itself now;
// routes that are not Api::Inline are answered now.
TEST_F(ApiTest, RuleChangesAreAnsweredThroughTheCallbackAndErrorsAtOnce) {
  const std::string rules = "/v1/ipv4/tables/filter/chains/INPUT/rules";
  auto request = [&](const std::string& method, const std::string& path, const std::string& body) {
    HttpRequest req;
    req.method = method;
    req.path = path;
    req.body = body;
    if (!body.empty()) req.headers.emplace("content-type", "application/json");
    req.headers.emplace("authorization", "Bearer " + admin_);
    req.headers.emplace("x-request-id", "async-1");
    return req;
  };
  EXPECT_TRUE(Api::Inline(request("POST", rules, "")));
  EXPECT_TRUE(Api::Inline(request("DELETE", rules, "")));
  EXPECT_TRUE(Api::Inline(request("PUT", rules + "/1", "")));
  EXPECT_FALSE(Api::Inline(request("GET", rules, "")));
  EXPECT_FALSE(Api::Inline(request("GET", rules + "/1", "")));
  EXPECT_FALSE(Api::Inline(request("POST", "/v1/transactions", "")));
  EXPECT_FALSE(Api::Inline(request("PUT", "/v1/owners/app", "")));

  const HttpRequest add = request("POST", rules, R"({"spec":"-s 10.6.0.1 -j DROP"})");
  Api::Preflighted p = api_->Preflight(add);
  ASSERT_FALSE(p.response);
  std::promise<HttpResponse> answered;
  std::atomic<int> calls{0};
  std::optional<HttpResponse> now = api_->HandleAsync(add, p.admission, [&](Api::Answer answer) {
    if (calls++ == 0) answered.set_value(answer());
  });
  EXPECT_FALSE(now.has_value());
  HttpResponse r = answered.get_future().get();
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body)["tables"][0]["restore_text"], "*filter\n-A INPUT -s 10.6.0.1/32 -j DROP\nCOMMIT\n");
  EXPECT_THAT(r.headers, Contains(std::pair<std::string, std::string>("X-Request-Id", "async-1")));
  EXPECT_THAT(Kernel(), HasSubstr("-A INPUT -s 10.6.0.1/32 -j DROP"));
  EXPECT_EQ(calls.load(), 1);

  // The writer's refusal comes through the callback too (a chain that does not exist: 404).
  const HttpRequest missing = request("POST", "/v1/ipv4/tables/filter/chains/NOPE/rules", R"({"spec":"-j DROP"})");
  p = api_->Preflight(missing);
  ASSERT_FALSE(p.response);
  std::promise<HttpResponse> refused;
  now = api_->HandleAsync(missing, p.admission, [&](Api::Answer answer) { refused.set_value(answer()); });
  EXPECT_FALSE(now.has_value());
  r = refused.get_future().get();
  EXPECT_EQ(r.status, 404) << r.body;
  EXPECT_EQ(json::parse(r.body)["error"]["details"]["request_id"], "async-1") << r.body;

  // A spec that does not parse is answered now, without a callback.
  const HttpRequest bad = request("POST", rules, R"({"spec":"-p tcp --dportx 22 -j ACCEPT"})");
  p = api_->Preflight(bad);
  ASSERT_FALSE(p.response);
  bool called = false;
  now = api_->HandleAsync(bad, p.admission, [&](Api::Answer) { called = true; });
  ASSERT_TRUE(now.has_value());
  EXPECT_EQ(now->status, 400);
  EXPECT_FALSE(called);
  // Not inline: answered now.
  const HttpRequest get = request("GET", rules, "");
  p = api_->Preflight(get);
  now = api_->HandleAsync(get, p.admission, [&](Api::Answer) { called = true; });
  ASSERT_TRUE(now.has_value());
  EXPECT_EQ(now->status, 200);
  EXPECT_FALSE(called);
}

// A table whose specs would not restore the kernel's rules is refused by every read (412 naming the rule and
// why) unless ?allow_lossy=true, which shows it with the rule's `lossy` reason.
TEST_F(ApiTest, ReadsRefuseALossyTableUnlessAllowed) {
  {
    std::lock_guard<std::mutex> lock(kernel_->mu);
    Ruleset rs = *kernel_->fake.Read(Family::kIPv4);
    Rule& rule = rs.FindTable("filter")->FindChain("INPUT")->rules[0];
    rule.lossy = "iptables-legacy-save prints it as '-s 192.168.0.0/16 -j ACCEPT', which loads as a different rule";
    rule.kernel_form = "kernel bytes";
    kernel_->fake.SetRuleset(std::move(rs));
  }
  for (const std::string path :
       {"/v1/ipv4", "/v1/ipv4/tables/filter", "/v1/ipv4/tables/filter/chains/INPUT",
        "/v1/ipv4/tables/filter/chains/INPUT/rules", "/v1/ipv4/tables/filter/chains/INPUT/rules/1"}) {
    HttpResponse refused = Call("GET", path);
    EXPECT_EQ(refused.status, 412) << path << ": " << refused.body;
    EXPECT_THAT(refused.body, HasSubstr("\"lossy\"")) << path;
    EXPECT_THAT(refused.body, HasSubstr("loads as a different rule")) << path;
    HttpResponse allowed = Call("GET", path, "", "", {{"allow_lossy", "true"}});
    EXPECT_EQ(allowed.status, 200) << path << ": " << allowed.body;
    EXPECT_THAT(allowed.body, HasSubstr("\"lossy\"")) << path;
  }
  EXPECT_EQ(Call("GET", "/v1/ipv4", "", "", {{"allow_lossy", "maybe"}}).status, 400);
}

TEST_F(ApiTest, ThousandMalformedRequestsAreAll4xxAndChangeNothing) {
  const std::string before = Kernel();
  std::mt19937 rng(7);
  const std::vector<std::string> paths = {"/v1/ipv4/tables/filter/chains/INPUT/rules", "/v1/transactions",
                                          "/v1/owners/x", "/v1/ipv4/tables/filter/chains/INPUT",
                                          "/v1/ipv4/tables/filter/chains/INPUT/rules/1"};
  const std::vector<std::string> bodies = {"{",
                                           "[]",
                                           "null",
                                           "1",
                                           R"({"spec":1})",
                                           R"({"spec":"-j"})",
                                           R"({"spec":"-s a.b -j DROP"})",
                                           R"({"spec":"-s 1.1.1.1,2.2.2.2 -j DROP"})",
                                           R"({"ops":"x"})",
                                           R"({"ops":[{"bogus":{}}]})",
                                           R"({"ops":[{"append":{"chain":"NOPE","rule":{"spec":"-j ACCEPT"}}}]})",
                                           R"({"chains":1})",
                                           R"({"policy":"MAYBE"})",
                                           R"({"spec":"-j DROP","ttl":-1})",
                                           R"({"unknown":true})",
                                           R"({"spec":"-m comment --comment \"a\nb\" -j DROP"})",
                                           "\xff\xfe",
                                           R"({"spec":"-j DROP"}trailing)"};
  const std::vector<std::string> methods = {"POST", "PUT", "DELETE"};
  int n = 0;
  for (; n < 1000; ++n) {
    HttpResponse r = Call(methods[rng() % methods.size()], paths[rng() % paths.size()], bodies[rng() % bodies.size()]);
    ASSERT_GE(r.status, 400) << n << " " << r.body;
    ASSERT_LT(r.status, 500) << n << " " << r.body;
    json e = json::parse(r.body);
    ASSERT_TRUE(e["error"].contains("code") && e["error"].contains("message") && e["error"].contains("details"));
  }
  EXPECT_EQ(Kernel(), before);
  EXPECT_EQ(Call("GET", "/healthz").status, 200);
}

// Regression (issue 8, item 3): an audit page was built whole from up to 1,000 entries of any size. A page now
// ends before it would pass audit_page_bytes (with at least one entry), and the cursor goes on from there.
TEST_F(ApiTest, AuditPagesAreBoundedInBytes) {
  ASSERT_TRUE(store_
                  ->Write([](store::Store::Tx& tx) -> Status {
                    for (int i = 0; i < 60; ++i) {
                      store::AuditEntry e;
                      e.time_ms = 1000 + i;
                      e.principal = "uid:0";
                      e.action = "append";
                      e.result = "ok";
                      e.diff = std::string(10000, 'a' + i % 26);
                      IPTKIT_RETURN_IF_ERROR(tx.AppendAudit(e).status());
                    }
                    return Status::Ok();
                  })
                  .ok());
  ApiOptions options;
  options.rate_limit = 0;
  options.audit_page_bytes = 65536;
  Api small(service_.get(), store_.get(), &events_, &metrics_, options);
  std::set<int64_t> seen;
  Query query = {{"limit", "1000"}};
  int pages = 0;
  for (; pages < 100; ++pages) {
    HttpRequest req;
    req.method = "GET";
    req.path = "/v1/audit";
    req.query = query;
    req.headers.emplace("authorization", "Bearer " + admin_);
    HttpResponse r = small.Handle(req);
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_LE(r.body.size(), 65536u);
    json page = json::parse(r.body);
    for (const json& e : page["entries"]) EXPECT_TRUE(seen.insert(e["id"].get<int64_t>()).second);
    if (page["next_before"].is_null()) break;
    query = {{"limit", "1000"}, {"before", std::to_string(page["next_before"].get<int64_t>())}};
  }
  EXPECT_EQ(seen.size(), 60u);
  EXPECT_GE(pages, 9);
}

// Regression (issue 8, item 7): with the state directory gone, writes answered 200 (into an unlinked database).
TEST_F(ApiTest, ChangesAreRefusedAndHealthIsNotOkWhenTheStoreCannotKeepThem) {
  ASSERT_EQ(Call("GET", "/v1/version").status, 200);
  std::filesystem::remove_all(dir_);
  HttpResponse r = Call("POST", "/v1/ipv4/tables/filter/chains/INPUT/rules", R"({"spec":"-s 10.0.0.1 -j DROP"})");
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_THAT(r.body, HasSubstr("was removed"));
  // A dry run stores nothing and still works; reads too.
  EXPECT_EQ(Call("POST", "/v1/ipv4/tables/filter/chains/INPUT/rules", R"({"spec":"-s 10.0.0.1 -j DROP"})", "",
                 {{"dry_run", "1"}})
                .status,
            200);
  EXPECT_EQ(Call("GET", "/v1/ipv4").status, 200);
  HttpResponse health = Call("GET", "/healthz", "", "-");
  EXPECT_EQ(health.status, 503);
  EXPECT_EQ(json::parse(health.body)["status"], "unhealthy");
}

TEST_F(ApiTest, OwnersTransactionsAuditAndMetrics) {
  HttpResponse r =
      Call("PUT", "/v1/owners/web",
           R"({"chains":[{"table":"filter","name":"WEB-IN","rules":[{"spec":"-p tcp --dport 443 -j ACCEPT"}]}],
                            "hooks":[{"table":"filter","chain":"INPUT","position":"first","spec":"-j WEB-IN"}]})");
  ASSERT_EQ(r.status, 200) << r.body;
  r = Call("GET", "/v1/owners/web");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body)["in_sync"], true);
  EXPECT_EQ(Call("PUT", "/v1/owners/web", R"({"owner":"other","chains":[]})").status, 400);
  r = Call("POST", "/v1/transactions",
           R"({"ops":[{"policy":{"chain":"FORWARD","policy":"DROP"}}],"confirm_within":60})");
  ASSERT_EQ(r.status, 200) << r.body;
  const std::string id = json::parse(r.body)["transaction"];
  r = Call("GET", "/v1/transactions/" + id);
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(json::parse(r.body)["state"], "pending");
  r = Call("POST", "/v1/transactions/" + id + "/confirm");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body)["state"], "confirmed");
  r = Call("GET", "/v1/audit", "", "", {{"limit", "2"}});
  ASSERT_EQ(r.status, 200);
  json page = json::parse(r.body);
  EXPECT_EQ(page["entries"].size(), 2u);
  ASSERT_FALSE(page["next_before"].is_null());
  r = Call("GET", "/v1/audit", "", "", {{"before", std::to_string(page["next_before"].get<int64_t>())}});
  EXPECT_GE(json::parse(r.body)["entries"].size(), 1u);
  r = Call("GET", "/metrics");
  ASSERT_EQ(r.status, 200);
  EXPECT_THAT(r.body, HasSubstr("iptkitd_owned_rule_packets_total{owner=\"web\""));
  EXPECT_THAT(r.body, HasSubstr("iptkitd_http_requests_total{"));
  r = Call("DELETE", "/v1/owners/web");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_THAT(Kernel(), ::testing::Not(HasSubstr("WEB-IN")));
}

// Regression: scopes were checked only against what a request names, so a table:nat token's PUT of an owner
// document with a nat chain removed the owner's filter chains, and a chain-scoped token's cascading delete removed
// rules elsewhere. The writer now checks every chain the planned change touches.
TEST_F(ApiTest, ScopesCoverWhatThePlanTouchesNotJustWhatIsNamed) {
  ASSERT_EQ(Call("PUT", "/v1/owners/app",
                 R"({"chains":[{"table":"filter","name":"APP-IN","rules":[{"spec":"-j ACCEPT"}]}],
                     "hooks":[{"table":"filter","chain":"INPUT","position":"first","spec":"-j APP-IN"}]})")
                .status,
            200);
  const std::string before = Kernel();
  const std::string nat = *store_->CreateToken("nat", *store::ParseScopes({"read", "write", "table:nat"}), 0);
  HttpResponse r = Call("PUT", "/v1/owners/app", R"({"chains":[{"table":"nat","name":"APP-NAT","rules":[]}]})", nat);
  EXPECT_EQ(r.status, 403) << r.body;
  EXPECT_THAT(r.body, HasSubstr("filter"));
  EXPECT_EQ(Call("DELETE", "/v1/owners/app", "", nat).status, 403);
  EXPECT_EQ(Kernel(), before);

  ASSERT_EQ(Call("PUT", "/v1/ipv4/tables/filter/chains/FOO").status, 200);
  ASSERT_EQ(Call("POST", "/v1/ipv4/tables/filter/chains/INPUT/rules", R"({"spec":"-j FOO"})").status, 200);
  const std::string with_foo = Kernel();
  const std::string foo = *store_->CreateToken("foo", *store::ParseScopes({"read", "write", "chain:FOO"}), 0);
  r = Call("DELETE", "/v1/ipv4/tables/filter/chains/FOO", "", foo, {{"cascade", "1"}});
  EXPECT_EQ(r.status, 403) << r.body;
  EXPECT_THAT(r.body, HasSubstr("INPUT"));
  EXPECT_EQ(Kernel(), with_foo);

  store::Scopes bounded = *store::ParseScopes({"read", "write"});
  bounded.max_ttl_seconds = 60;
  const std::string ttl = *store_->CreateToken("ttl", bounded, 0);
  EXPECT_EQ(Call("PUT", "/v1/owners/other", R"({"chains":[]})", ttl).status, 403);
}

TEST_F(ApiTest, ChainsNamedWithAnOwnersPrefixAreTheOwners) {
  ASSERT_EQ(
      Call("POST", "/v1/ipv4/tables/filter/chains/INPUT/rules", R"({"spec":"-s 10.0.0.1 -j DROP","owner":"oapi"})")
          .status,
      200);
  HttpResponse r = Call("PUT", "/v1/ipv4/tables/filter/chains/OAPI-REF");
  EXPECT_EQ(r.status, 412) << r.body;
  EXPECT_THAT(r.body, HasSubstr("belong to owner 'oapi'"));
  EXPECT_EQ(Call("PUT", "/v1/ipv4/tables/filter/chains/OTHER-REF").status, 200);
}

// The daemon's whole /metrics output (every family the service and the API register, with owned-rule counters)
// passes `promtool check metrics` (Debian's prometheus package).
TEST_F(ApiTest, MetricsPassPromtool) {
  if (!std::filesystem::exists("/usr/bin/promtool")) GTEST_SKIP() << "promtool not installed";
  ASSERT_EQ(
      Call("POST", "/v1/ipv4/tables/filter/chains/INPUT/rules", R"({"spec":"-s 10.0.0.9 -j DROP","ttl":60})").status,
      200);
  ASSERT_EQ(Call("GET", "/v1/ipv4").status, 200);
  ASSERT_EQ(Call("GET", "/nope").status, 404);
  HttpResponse r = Call("GET", "/metrics");
  ASSERT_EQ(r.status, 200);
  EXPECT_THAT(r.body, HasSubstr("iptkitd_owned_rule_bytes_total{owner=\"iptkitd\""));
  auto check = base::RunSubprocess(
      base::Cmd("/usr/bin/promtool", {"promtool", "check", "metrics"}).Stdin(r.body).Timeout(std::chrono::seconds(30)));
  ASSERT_TRUE(check.ok()) << check.status().ToString();
  EXPECT_EQ(check->exit_code, 0) << check->stdout_text << check->stderr_text;
  EXPECT_EQ(check->stdout_text + check->stderr_text, "") << r.body;
}

TEST_F(ApiTest, EventStreamDeliversCommits) {
  HttpRequest req;
  req.method = "GET";
  req.path = "/v1/events";
  req.headers = {{"authorization", "Bearer " + admin_}};
  HttpResponse stream = api_->Handle(req);
  ASSERT_TRUE(stream.events);
  ASSERT_EQ(Call("POST", "/v1/ipv4/tables/filter/chains/INPUT/rules", R"({"spec":"-j ACCEPT"})").status, 200);
  std::string got;
  EXPECT_EQ(stream.events->Read(1 << 20, &got), service::EventBus::Subscription::kOpen);
  EXPECT_THAT(got, HasSubstr("event: commit\n"));
  EXPECT_THAT(got, HasSubstr("\"action\":\"append\""));
}

// ---- the dashboard's files and the rates behind its graphs ----

std::string HeaderOf(const HttpResponse& r, const std::string& name) {
  for (const auto& [k, v] : r.headers) {
    if (k == name) return v;
  }
  return "";
}

TEST(UiAssetsTest, ServesOnlyTheTreeWithItsPolicyAndOnlyForAllowedHosts) {
  std::string tmpl = (std::filesystem::temp_directory_path() / "iptkit-ui-XXXXXX").string();
  ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
  const std::filesystem::path dir = tmpl;
  std::filesystem::create_directories(dir / "ui" / "views");
  auto write = [](const std::filesystem::path& p, const std::string& text) { std::ofstream(p) << text; };
  write(dir / "ui" / "index.html", "<!doctype html>");
  write(dir / "ui" / "views" / "a.js", "export {};");
  write(dir / "ui" / ".secret.js", "no");
  write(dir / "ui" / "notes.txt.bak", "no");
  write(dir / "outside.js", "no");
  std::filesystem::create_symlink(dir / "outside.js", dir / "ui" / "link.js");
  const std::string root = (dir / "ui").string();
  const std::vector<std::string> hosts = {"localhost", "127.0.0.1", "::1"};
  auto get = [&](const std::string& path, const std::string& host = "127.0.0.1:8080") {
    HttpRequest req;
    req.method = "GET";
    req.path = path;
    req.headers.emplace("host", host);
    return ServeUi(root, hosts, req);
  };

  HttpResponse r = get("/ui/");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "<!doctype html>");
  EXPECT_EQ(r.content_type, "text/html; charset=utf-8");
  EXPECT_THAT(HeaderOf(r, "Content-Security-Policy"), HasSubstr("script-src 'self'"));
  EXPECT_THAT(HeaderOf(r, "Content-Security-Policy"), HasSubstr("frame-ancestors 'none'"));
  EXPECT_EQ(HeaderOf(r, "X-Content-Type-Options"), "nosniff");
  r = get("/ui/views/a.js", "[::1]:8080");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.content_type, "text/javascript; charset=utf-8");
  EXPECT_EQ(get("/ui").status, 308);
  EXPECT_EQ(HeaderOf(get("/ui"), "Location"), "/ui/");
  for (const std::string bad : {"/ui/../outside.js", "/ui/views/../../outside.js", "/ui/.secret.js", "/ui/link.js",
                                "/ui/notes.txt.bak", "/ui/views", "/ui/views/", "/ui//index.html", "/ui/nope.js"}) {
    EXPECT_EQ(get(bad).status, 404) << bad;
  }
  // DNS rebinding: a page of another name that resolves to us.
  EXPECT_EQ(get("/ui/", "attacker.example").status, 421);
  EXPECT_EQ(get("/ui/", "").status, 421);
  EXPECT_EQ(get("/ui/", "LOCALHOST:80").status, 200);
  // Not on the unix socket, not when off, nothing but GET and HEAD.
  HttpRequest socket_req;
  socket_req.method = "GET";
  socket_req.path = "/ui/";
  socket_req.peer = PeerCred{};
  EXPECT_EQ(ServeUi(root, hosts, socket_req).status, 404);
  EXPECT_EQ(ServeUi("", hosts, socket_req).status, 404);
  HttpRequest post = socket_req;
  post.peer.reset();
  post.method = "POST";
  post.headers.emplace("host", "localhost");
  EXPECT_EQ(ServeUi(root, hosts, post).status, 405);
  EXPECT_EQ(HostOf("[fe80::1]:443"), "fe80::1");
  EXPECT_EQ(HostOf(" Example.COM:8080 "), "example.com");
  std::filesystem::remove_all(dir);
}

// /metrics and the rates are one feed: with a counter feed installed, the owned rules' counters come from it, not
// from a kernel read per scrape.
TEST_F(ApiTest, MetricsTakeRuleCountersFromTheCounterFeed) {
  ASSERT_EQ(Call("POST", "/v1/ipv4/tables/filter/chains/INPUT/rules", R"({"spec":"-s 10.9.9.9 -j DROP","owner":"web"})")
                .status,
            200);
  auto owned_packets = [&] {
    const std::string body = Call("GET", "/metrics").body;
    const size_t at = body.find("iptkitd_owned_rule_packets_total{owner=\"web\"");
    if (at == std::string::npos) return std::string("missing:\n") + body;
    const size_t end = body.find('\n', at);
    return body.substr(body.rfind(' ', end) + 1, end - body.rfind(' ', end) - 1);
  };
  EXPECT_EQ(owned_packets(), "0") << "the fake kernel's counters";
  service::Service* service = service_.get();
  service_->SetCounterFeed([service](Family f) -> std::shared_ptr<const Ruleset> {
    Result<Ruleset> rs = service->List(f);
    if (!rs.ok()) return nullptr;
    for (Table& t : rs->tables) {
      for (Chain& c : t.chains) {
        for (Rule& r : c.rules) r.counters = {777, 7770};
      }
    }
    return std::make_shared<const Ruleset>(*std::move(rs));
  });
  EXPECT_EQ(owned_packets(), "777");
  service_->SetCounterFeed(nullptr);
  EXPECT_EQ(owned_packets(), "0");
}

TEST_F(ApiTest, RatesComeFromTheSamplerAndTheDashboardNeedsNoToken) {
  EXPECT_EQ(Call("GET", "/v1/ipv4/tables/filter/chains/INPUT/rates").status, 503) << "sampling is off here";
  service::Service* service = service_.get();
  service::CounterSampler sampler({}, [service](Family f) { return service->List(f); });
  ASSERT_TRUE(sampler.SampleNow().ok());
  ApiOptions options;
  options.counters = &sampler;
  Api api(service_.get(), store_.get(), &events_, &metrics_, options);
  HttpRequest req;
  req.method = "GET";
  req.path = "/v1/ipv4/tables/filter/chains/INPUT/rates";
  req.headers.emplace("authorization", "Bearer " + admin_);
  HttpResponse r = api.Handle(req);
  ASSERT_EQ(r.status, 200) << r.body;
  json body = json::parse(r.body);
  EXPECT_EQ(body["chain"], "INPUT");
  EXPECT_EQ(body["interval_ms"], 5000);
  ASSERT_EQ(body["rules"].size(), 1u);
  EXPECT_EQ(body["rules"][0]["spec"], "-s 192.168.0.0/16 -j ACCEPT");
  EXPECT_EQ(body["rules"][0]["samples"].size(), 1u);
  EXPECT_EQ(HeaderOf(r, "X-Content-Type-Options"), "nosniff");
  req.query = {{"first", "2"}};
  r = api.Handle(req);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_TRUE(json::parse(r.body)["rules"].empty()) << "a window past the only rule";
  req.query = {{"first", "0"}};
  EXPECT_EQ(api.Handle(req).status, 400);
  req.query = {};
  req.path = "/v1/ipv4/tables/filter/chains/NOPE/rates";
  EXPECT_EQ(api.Handle(req).status, 404);
  req.headers.clear();
  req.path = "/v1/ipv4/tables/filter/chains/INPUT/rates";
  EXPECT_EQ(api.Handle(req).status, 401);
  // No dashboard configured: /ui/ is 404 without a token, like any unknown path.
  req.path = "/ui/";
  EXPECT_EQ(api.Handle(req).status, 404);
}

}  // namespace
}  // namespace iptkit::rest
