#include "src/backend/fake/fake_backend.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "iptkit/dialect.h"
#include "src/backend/backend_test_util.h"

namespace iptkit::backend {
namespace {

using backend_test::R;
using backend_test::TOp;
using ::testing::HasSubstr;
using Kind = TableOp::Kind;

constexpr Family v4 = Family::kIPv4;
constexpr Family v6 = Family::kIPv6;

TableBatch Batch(std::string table, std::vector<TableOp> ops, Family family = v4) {
  TableBatch b;
  b.family = family;
  b.table = std::move(table);
  b.ops = std::move(ops);
  return b;
}

constexpr std::string_view kBase =
    "*filter\n"
    ":INPUT DROP [0:0]\n"
    ":FORWARD ACCEPT [0:0]\n"
    ":OUTPUT ACCEPT [0:0]\n"
    ":FOO - [0:0]\n"
    "-A INPUT -s 10.0.0.0/8 -j ACCEPT\n"
    "-A INPUT -j FOO\n"
    "-A FOO -p tcp -m tcp --dport 22 -j ACCEPT\n"
    "COMMIT\n";

class FakeBackendTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(fake_.LoadSave(v4, kBase).ok()); }
  std::string Save(Family family = v4, bool counters = false) {
    Result<Ruleset> rs = fake_.Read(family);
    EXPECT_TRUE(rs.ok()) << rs.status().ToString();
    return rs.ok() ? FormatSave(*rs, {.counters = counters}) : "";
  }
  // A copy: Read returns a temporary.
  Chain ChainOf(std::string_view chain, std::string_view table = "filter") {
    Result<Ruleset> rs = fake_.Read(v4, std::string(table));
    const Chain* c = rs.ok() ? rs->tables[0].FindChain(chain) : nullptr;
    EXPECT_NE(c, nullptr) << chain;
    return c == nullptr ? Chain{} : *c;
  }
  Status Commit(std::vector<TableOp> ops, std::string table = "filter") {
    return fake_.Commit(Batch(std::move(table), std::move(ops)));
  }
  FakeBackend fake_;
};

TEST_F(FakeBackendTest, ReadsWhatWasLoaded) {
  EXPECT_EQ(Save(), kBase);
  EXPECT_EQ(fake_.traits().name, "fake");
}

TEST_F(FakeBackendTest, UnusedTableReadsAsFreshButDoesNotAppear) {
  Result<Ruleset> nat = fake_.Read(v4, "nat");
  ASSERT_TRUE(nat.ok());
  EXPECT_EQ(FormatSave(*nat),
            "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
            ":POSTROUTING ACCEPT [0:0]\nCOMMIT\n");
  EXPECT_EQ(Save(), kBase);
  EXPECT_EQ(fake_.Read(v4, "bogus").status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(fake_.Read(v6)->tables.empty());
}

TEST_F(FakeBackendTest, TableAppearsOnFirstUseInSaveOrder) {
  ASSERT_TRUE(Commit({TOp(Kind::kAppend, "PREROUTING", "-j NOTRACK")}, "raw").ok());
  Result<Ruleset> rs = fake_.Read(v4);
  ASSERT_EQ(rs->tables.size(), 2u);
  EXPECT_EQ(rs->tables[0].name, "raw");  // iptables-nft-save order: raw, mangle, filter, nat, security
  EXPECT_EQ(rs->tables[1].name, "filter");
}

TEST_F(FakeBackendTest, AppendInsertStoreCanonicalRules) {
  ASSERT_TRUE(Commit({TOp(Kind::kAppend, "OUTPUT", "-d 192.168.1.7 -j ACCEPT"),
                      TOp(Kind::kInsert, "OUTPUT", "-d 10.1.2.3/8 -j DROP", 1),
                      TOp(Kind::kInsert, "OUTPUT", "-d 172.16.0.0/255.240.0.0 -j DROP", 3)})
                  .ok());
  const Chain out = ChainOf("OUTPUT");
  ASSERT_EQ(out.rules.size(), 3u);
  EXPECT_EQ(FormatRuleSpec(out.rules[0]), "-d 10.0.0.0/8 -j DROP");
  EXPECT_EQ(FormatRuleSpec(out.rules[1]), "-d 192.168.1.7/32 -j ACCEPT");
  EXPECT_EQ(FormatRuleSpec(out.rules[2]), "-d 172.16.0.0/12 -j DROP");
}

TEST_F(FakeBackendTest, DeleteAndCheckMatchByCanonicalSpec) {
  ASSERT_TRUE(Commit({TOp(Kind::kAppend, "OUTPUT", "-d 1.2.3.4 -j ACCEPT")}).ok());
  EXPECT_TRUE(Commit({TOp(Kind::kCheck, "OUTPUT", "-d 1.2.3.4/32 -j ACCEPT")}).ok());
  ASSERT_TRUE(Commit({TOp(Kind::kDelete, "OUTPUT", "-d 1.2.3.4/255.255.255.255 -j ACCEPT")}).ok());
  EXPECT_EQ(Save(), kBase);
}

TEST_F(FakeBackendTest, FailingOpLeavesEverythingUnchangedAndIsNamed) {
  Status s = Commit({TOp(Kind::kNewChain, "BAR"), TOp(Kind::kAppend, "BAR", "-j ACCEPT"),
                     TOp(Kind::kDelete, "INPUT", "-s 1.1.1.1/32 -j DROP")});
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("line 3 (-D INPUT -s 1.1.1.1/32 -j DROP)"));
  EXPECT_THAT(s.message(), HasSubstr("ipv4 table filter"));
  EXPECT_EQ(Save(), kBase);
  EXPECT_EQ(fake_.commit_calls(), 1);
  EXPECT_TRUE(fake_.committed().empty());
}

struct ErrorCase {
  std::string name;
  std::vector<TableOp> ops;
  StatusCode code;
  std::string message_part;
};

TEST_F(FakeBackendTest, ErrorsNameTheOpAndHaveSpecificCodes) {
  const std::vector<ErrorCase> cases = {
      {"check miss", {TOp(Kind::kCheck, "INPUT", "-j DROP")}, StatusCode::kFailedPrecondition, "-C INPUT -j DROP"},
      {"delete missing", {TOp(Kind::kDelete, "INPUT", "-j DROP")}, StatusCode::kNotFound, "no rule '-j DROP'"},
      {"missing chain", {TOp(Kind::kAppend, "NOPE", "-j DROP")}, StatusCode::kNotFound, "chain 'NOPE'"},
      {"new existing", {TOp(Kind::kNewChain, "FOO")}, StatusCode::kAlreadyExists, "-N FOO"},
      {"delete non-empty", {TOp(Kind::kDeleteChain, "FOO")}, StatusCode::kFailedPrecondition, "not empty"},
      {"delete referenced",
       {TOp(Kind::kFlush, "FOO"), TOp(Kind::kDeleteChain, "FOO")},
       StatusCode::kFailedPrecondition,
       "referenced by filter INPUT 2: -j FOO"},
      {"delete builtin", {TOp(Kind::kDeleteChain, "INPUT")}, StatusCode::kInvalidArgument, "builtin"},
      {"delete absent", {TOp(Kind::kDeleteChain, "GONE")}, StatusCode::kNotFound, "GONE"},
      {"rename onto existing",
       {TOp(Kind::kNewChain, "BAR"), TOp(Kind::kRenameChain, "BAR", "", 0, "FOO")},
       StatusCode::kAlreadyExists,
       "-E BAR FOO"},
      {"rename builtin", {TOp(Kind::kRenameChain, "INPUT", "", 0, "IN")}, StatusCode::kInvalidArgument, "builtin"},
      {"policy on user chain", {TOp(Kind::kPolicy, "FOO", "", 0, "DROP")}, StatusCode::kInvalidArgument, "-P FOO"},
      {"bad policy", {TOp(Kind::kPolicy, "INPUT", "", 0, "REJECT")}, StatusCode::kInvalidArgument, "REJECT"},
      {"jump to missing chain", {TOp(Kind::kAppend, "INPUT", "-j NOPE")}, StatusCode::kNotFound, "NOPE"},
      {"goto builtin", {TOp(Kind::kAppend, "FOO", "-g OUTPUT")}, StatusCode::kInvalidArgument, "builtin"},
      {"insert too far", {TOp(Kind::kInsert, "INPUT", "-j DROP", 4)}, StatusCode::kInvalidArgument, "index 4"},
      {"insert zero", {TOp(Kind::kInsert, "INPUT", "-j DROP", 0)}, StatusCode::kInvalidArgument, "index 0"},
      {"delete-at too far", {TOp(Kind::kDeleteAt, "INPUT", "", 3)}, StatusCode::kNotFound, "-D INPUT 3"},
      {"replace too far", {TOp(Kind::kReplace, "FOO", "-j DROP", 2)}, StatusCode::kNotFound, "index 2"},
      {"DNAT in filter",
       {TOp(Kind::kAppend, "INPUT", "-p tcp -j DNAT --to-destination 10.0.0.1")},
       StatusCode::kInvalidArgument,
       "DNAT"},
      {"bad chain name", {TOp(Kind::kNewChain, "-bad")}, StatusCode::kInvalidArgument, "-bad"},
      {"jump loop",
       {TOp(Kind::kNewChain, "BAR"), TOp(Kind::kAppend, "BAR", "-j FOO"), TOp(Kind::kAppend, "FOO", "-j BAR")},
       StatusCode::kInvalidArgument,
       "loop"},
  };
  for (const auto& c : cases) {
    Status s = Commit(c.ops);
    EXPECT_EQ(s.code(), c.code) << c.name << ": " << s.ToString();
    EXPECT_THAT(s.message(), HasSubstr(c.message_part)) << c.name;
    EXPECT_EQ(Save(), kBase) << c.name;
  }
}

TEST_F(FakeBackendTest, TargetPlacementFollowsHooksThroughUserChains) {
  // MASQUERADE is allowed in nat POSTROUTING only: in a user chain it is fine until PREROUTING jumps there.
  ASSERT_TRUE(Commit({TOp(Kind::kNewChain, "MASQ"), TOp(Kind::kAppend, "MASQ", "-j MASQUERADE"),
                      TOp(Kind::kAppend, "POSTROUTING", "-j MASQ")},
                     "nat")
                  .ok());
  Status s = Commit({TOp(Kind::kAppend, "PREROUTING", "-j MASQ")}, "nat");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
  EXPECT_THAT(s.message(), HasSubstr("PREROUTING"));
}

TEST_F(FakeBackendTest, RenameKeepsJumpsPointingAtTheChain) {
  ASSERT_TRUE(Commit({TOp(Kind::kRenameChain, "FOO", "", 0, "BAR")}).ok());
  EXPECT_EQ(Save(),
            "*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:BAR - [0:0]\n"
            "-A INPUT -s 10.0.0.0/8 -j ACCEPT\n-A INPUT -j BAR\n-A BAR -p tcp -m tcp --dport 22 -j ACCEPT\n"
            "COMMIT\n");
}

TEST_F(FakeBackendTest, UserChainsAreKeptSortedLikeIptablesSave) {
  ASSERT_TRUE(Commit({TOp(Kind::kNewChain, "ZED"), TOp(Kind::kNewChain, "ALPHA")}).ok());
  const Table t = fake_.Read(v4)->tables[0];
  std::vector<std::string> names;
  for (const auto& c : t.chains) names.push_back(c.name);
  EXPECT_EQ(names, (std::vector<std::string>{"INPUT", "FORWARD", "OUTPUT", "ALPHA", "FOO", "ZED"}));
}

TEST_F(FakeBackendTest, DeleteAtReplaceFlushAndDeleteAllChains) {
  ASSERT_TRUE(Commit({TOp(Kind::kReplace, "INPUT", "-s 10.0.0.0/8 -j DROP", 1), TOp(Kind::kDeleteAt, "INPUT", "", 2),
                      TOp(Kind::kFlush, ""), TOp(Kind::kDeleteChain, "")})
                  .ok());
  EXPECT_EQ(Save(), "*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n");
}

TEST_F(FakeBackendTest, CountersSurviveOtherChangesAndAreZeroed) {
  ASSERT_TRUE(fake_.AddPacketCounts(v4, "filter", "INPUT", 1, 5, 500).ok());
  ASSERT_TRUE(Commit({TOp(Kind::kInsert, "INPUT", "-j LOG", 1), TOp(Kind::kAppend, "INPUT", "-j DROP")}).ok());
  const Chain in = ChainOf("INPUT");
  EXPECT_EQ(in.rules[1].counters, (Counters{5, 500}));
  EXPECT_EQ(in.rules[0].counters, (Counters{0, 0}));
  ASSERT_TRUE(Commit({TOp(Kind::kZero, "INPUT")}).ok());
  EXPECT_EQ(ChainOf("INPUT").rules[1].counters, (Counters{0, 0}));
  EXPECT_EQ(fake_.AddPacketCounts(v4, "filter", "INPUT", 9, 1, 1).code(), StatusCode::kNotFound);
}

TEST_F(FakeBackendTest, CountersFromTheBatchOnlyWithCounters) {
  TableOp op = TOp(Kind::kAppend, "OUTPUT", "-j ACCEPT");
  op.rule.counters = {7, 70};
  TableBatch b = Batch("filter", {op});
  ASSERT_TRUE(fake_.Commit(b).ok());
  b.with_counters = true;
  ASSERT_TRUE(fake_.Commit(b).ok());
  const Chain out = ChainOf("OUTPUT");
  EXPECT_EQ(out.rules[0].counters, (Counters{0, 0}));
  EXPECT_EQ(out.rules[1].counters, (Counters{7, 70}));
}

TEST_F(FakeBackendTest, FlushTableBatchReplacesTheTable) {
  ASSERT_TRUE(Commit({TOp(Kind::kAppend, "POSTROUTING", "-j MASQUERADE")}, "nat").ok());
  TableBatch b = Batch("filter", {TOp(Kind::kPolicy, "INPUT", "", 0, "ACCEPT"), TOp(Kind::kNewChain, "NEW"),
                                  TOp(Kind::kAppend, "NEW", "-j RETURN")});
  b.flush_table = true;
  ASSERT_TRUE(fake_.Commit(b).ok());
  Result<Ruleset> rs = fake_.Read(v4);
  EXPECT_EQ(FormatSave(*rs),
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:NEW - [0:0]\n"
            "-A NEW -j RETURN\nCOMMIT\n"
            "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
            "-A POSTROUTING -j MASQUERADE\nCOMMIT\n");
}

TEST_F(FakeBackendTest, UnknownTableIsRefused) {
  EXPECT_EQ(Commit({TOp(Kind::kFlush, "")}, "bogus").code(), StatusCode::kInvalidArgument);
}

TEST(FakeCanonicalTest, AddressesAsTheKernelPrintsThem) {
  FakeBackend fake;
  struct Case {
    Family family;
    std::string in;
    std::string out;
  };
  const std::vector<Case> cases = {
      {v4, "-s 1.2.3.4 -j ACCEPT", "-s 1.2.3.4/32 -j ACCEPT"},
      {v4, "-s 10.1.2.3/8 -j ACCEPT", "-s 10.0.0.0/8 -j ACCEPT"},
      {v4, "! -d 192.168.7.9/255.255.255.0 -j ACCEPT", "! -d 192.168.7.0/24 -j ACCEPT"},
      {v4, "-s 0.0.0.0/0 -j ACCEPT", "-j ACCEPT"},
      {v4, "-p tcp --dport 22 -s 1.2.3.4 -j ACCEPT", "-s 1.2.3.4/32 -p tcp -m tcp --dport 22 -j ACCEPT"},
      {v6, "-s 2001:db8::1 -j ACCEPT", "-s 2001:db8::1/128 -j ACCEPT"},
      {v6, "-d 2001:DB8:0:0:1::5/64 -j DROP", "-d 2001:db8::/64 -j DROP"},
  };
  for (const auto& c : cases) {
    Result<std::vector<Rule>> out = fake.Canonicalize(c.family, "filter", {R(c.in, c.family)});
    ASSERT_TRUE(out.ok()) << c.in << ": " << out.status().ToString();
    EXPECT_EQ(FormatRuleSpec(out->at(0)), c.out) << c.in;
  }
  EXPECT_EQ(fake.Canonicalize(v4, "bogus", {}).status().code(), StatusCode::kInvalidArgument);
}

TEST(FakeCanonicalTest, MalformedAddressIsInvalidArgument) {
  Rule rule;
  rule.source = Field{"1.2.3.999"};
  rule.target = Target::Jump("ACCEPT");
  Result<Rule> out = FakeCanonicalRule(v4, rule);
  EXPECT_EQ(out.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(out.status().message(), HasSubstr("1.2.3.999"));
}

TEST(FakeBackendMiscTest, LockGuardAndInfo) {
  FakeBackend fake;
  EXPECT_FALSE(fake.locked());
  {
    Result<std::unique_ptr<LockGuard>> guard = fake.Lock(std::chrono::milliseconds(10));
    ASSERT_TRUE(guard.ok());
    EXPECT_TRUE(fake.locked());
  }
  EXPECT_FALSE(fake.locked());
  ASSERT_TRUE(fake.Commit(Batch("filter", {TOp(Kind::kAppend, "INPUT", "-j ACCEPT")})).ok());
  ASSERT_TRUE(fake.MarkUnrepresentable(v6, "nat", "lossy").ok());
  Result<FirewallInfo> info = fake.Info();
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->backend, "fake");
  ASSERT_EQ(info->variants.size(), 1u);
  ASSERT_EQ(info->variants[0].tables.size(), 2u);
  EXPECT_EQ(info->variants[0].tables[0].table, "filter");
  EXPECT_EQ(info->variants[0].tables[0].rules, 1u);
  EXPECT_FALSE(info->variants[0].tables[1].representable);
  EXPECT_EQ(fake.Read(v6)->tables[0].unrepresentable_reason, "lossy");
  std::unique_ptr<Backend> plain = NewFakeBackend();
  EXPECT_EQ(plain->traits().name, "fake");
}

}  // namespace
}  // namespace iptkit::backend
