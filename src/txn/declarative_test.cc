#include "src/txn/declarative.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "iptkit/dialect.h"
#include "iptkit/firewall.h"
#include "src/backend/fake/fake_backend.h"
#include "src/backend/ops/table_sim.h"

namespace iptkit::txn {
namespace {

using backend::TableOp;
using ::testing::HasSubstr;

constexpr Family kV4 = Family::kIPv4;
constexpr char kOwner[] = "myapp";

// ---- Rule builders (no parser: the planner is tested on model values) ----

Rule Accept(const std::string& src) {
  Rule r;
  r.source = Field{src};
  r.target = Target::Jump("ACCEPT");
  return r;
}
Rule Drop(const std::string& src) {
  Rule r;
  r.source = Field{src};
  r.target = Target::Jump("DROP");
  return r;
}
Rule JumpTo(const std::string& chain) {
  Rule r;
  r.target = Target::Jump(chain);
  return r;
}
Rule Tagged(Rule r, const std::string& owner, const std::string& id) {
  r.SetOwnerTag({owner, id});
  return r;
}
Rule Counted(Rule r, uint64_t packets) {
  r.counters = {packets, packets * 100};
  return r;
}
// A rule of `owner` as the kernel holds it after an earlier apply: tagged with the derived id.
Rule Owned(Rule r, const std::string& table, const std::string& chain, const std::string& owner = kOwner) {
  std::string id = DeriveRuleId(table, chain, FormatRuleSpec(r));
  r.SetOwnerTag({owner, id});
  return r;
}

// ---- Kernel simulation: the fake backend's table semantics ----

Table& TableOf(Ruleset& rs, const std::string& name) {
  if (Table* t = rs.FindTable(name)) return *t;
  rs.tables.push_back(*backend::NewTable(name));
  return rs.tables.back();
}

Chain& ChainOf(Ruleset& rs, const std::string& table, const std::string& chain) {
  Table& t = TableOf(rs, table);
  if (Chain* c = t.FindChain(chain)) return *c;
  t.chains.push_back(Chain{chain, std::nullopt, {}, {}});
  return t.chains.back();
}

// Applies the plan's batches in order, each atomically, as iptables-restore --noflush would.
Status ApplyBatches(Ruleset& rs, const DeclarativePlan& plan) {
  for (const auto& batch : plan.batches) {
    Table copy = TableOf(rs, batch.table);
    for (const TableOp& op : batch.ops) {
      Status s = backend::ApplyTableOp(rs.family, copy, op, false);
      if (!s.ok()) return s.WithContext(backend::DescribeTableOp(op));
    }
    TableOf(rs, batch.table) = std::move(copy);
  }
  return Status::Ok();
}

Result<DeclarativePlan> Converge(Ruleset& rs, DesiredState desired) {
  IPTKIT_RETURN_IF_ERROR(AssignOwnerTags(desired));
  IPTKIT_ASSIGN_OR_RETURN(DeclarativePlan plan, PlanDeclarative(rs, desired));
  IPTKIT_RETURN_IF_ERROR(ApplyBatches(rs, plan));
  return plan;
}

int CountOps(const DeclarativePlan& plan, TableOp::Kind kind) {
  int n = 0;
  for (const auto& b : plan.batches) {
    n +=
        static_cast<int>(std::count_if(b.ops.begin(), b.ops.end(), [&](const TableOp& op) { return op.kind == kind; }));
  }
  return n;
}

std::vector<std::string> Specs(const Chain& chain) {
  std::vector<std::string> out;
  for (const Rule& r : chain.rules) out.push_back(FormatRuleSpec(r));
  return out;
}
std::vector<std::string> SpecsWithoutTags(const Chain& chain) {
  std::vector<std::string> out;
  for (Rule r : chain.rules) {
    if (r.OwnerTag()) r.matches.pop_back();
    out.push_back(FormatRuleSpec(r));
  }
  return out;
}
std::vector<std::string> Specs(const std::vector<Rule>& rules) {
  std::vector<std::string> out;
  for (const Rule& r : rules) out.push_back(FormatRuleSpec(r));
  return out;
}

// The rules of a chain that `owner` did not tag, with their counters.
std::vector<std::pair<std::string, Counters>> ForeignRules(const Chain& chain, const std::string& owner = kOwner) {
  std::vector<std::pair<std::string, Counters>> out;
  for (const Rule& r : chain.rules) {
    auto tag = r.OwnerTag();
    if (!tag || tag->owner != owner) out.push_back({FormatRuleSpec(r), r.counters});
  }
  return out;
}

// A filter table with an admin's policy and foreign rules (counted) in INPUT and FORWARD and a foreign user chain.
Ruleset AdminRuleset() {
  Ruleset rs;
  rs.family = kV4;
  Table& filter = TableOf(rs, "filter");
  filter.FindChain("INPUT")->policy = "DROP";
  filter.FindChain("INPUT")->counters = {11, 1100};
  ChainOf(rs, "filter", "ADMIN").rules = {Counted(Accept("192.0.2.7/32"), 5)};
  filter.FindChain("INPUT")->rules = {Counted(JumpTo("ADMIN"), 3), Counted(Accept("198.51.100.0/24"), 4)};
  filter.FindChain("FORWARD")->rules = {Counted(Drop("203.0.113.0/24"), 9)};
  return rs;
}

DesiredState Want(std::vector<OwnedChain> chains, std::vector<HookRule> hooks = {}) {
  DesiredState d;
  d.owner = kOwner;
  d.chains = std::move(chains);
  d.hooks = std::move(hooks);
  return d;
}

std::vector<Rule> Numbered(int n, int changed = -1) {
  std::vector<Rule> rules;
  for (int i = 1; i <= n; ++i) {
    rules.push_back(Accept("10.0." + std::to_string(i) + (i == changed ? ".128/25" : ".0/24")));
  }
  return rules;
}

// ---- Names, owners, ids ----

// ViewOwnerTag reads exactly the tags Rule::OwnerTag reads (the planners use it instead, for speed).
TEST(OwnerTest, ViewOwnerTagAgreesWithOwnerTag) {
  auto comment = [](Rule r, const std::string& text, bool negated = false) {
    r.matches.push_back(Match{"comment", {Option{"comment", negated, {text}}}});
    return r;
  };
  Rule two_values = Accept("10.0.0.1/32");
  two_values.matches.push_back(Match{"comment", {Option{"comment", false, {"iptkit:web:a", "x"}}}});
  Rule not_last = comment(Accept("10.0.0.1/32"), "iptkit:web:a");
  not_last.matches.push_back(Match{"tcp", {Option{"dport", false, {"22"}}}});
  const std::vector<Rule> rules = {
      Accept("10.0.0.1/32"),
      Tagged(Accept("10.0.0.1/32"), "web", "r1"),
      comment(Accept("10.0.0.1/32"), "iptkit:web:"),
      comment(Accept("10.0.0.1/32"), "iptkit::id"),
      comment(Accept("10.0.0.1/32"), "iptkit:web"),
      comment(Accept("10.0.0.1/32"), "iptkit:a:b:c"),
      comment(Accept("10.0.0.1/32"), "web:r1"),
      comment(Accept("10.0.0.1/32"), "iptkit:web:r1", /*negated=*/true),
      two_values,
      not_last,
  };
  for (const Rule& r : rules) {
    std::optional<Rule::Tag> tag = r.OwnerTag();
    std::optional<TagView> view = ViewOwnerTag(r);
    ASSERT_EQ(tag.has_value(), view.has_value()) << FormatRuleSpec(r);
    if (!tag) continue;
    EXPECT_EQ(tag->owner, view->owner) << FormatRuleSpec(r);
    EXPECT_EQ(tag->id, view->id) << FormatRuleSpec(r);
  }
}

TEST(OwnerTest, PrefixIsUpperCaseOwnerAndDash) {
  EXPECT_EQ(OwnerChainPrefix("myapp"), "MYAPP-");
  EXPECT_EQ(OwnerChainPrefix("kube-proxy2"), "KUBE-PROXY2-");
}

TEST(OwnerTest, ValidateOwner) {
  EXPECT_TRUE(ValidateOwner("a").ok());
  EXPECT_TRUE(ValidateOwner("my-app-2").ok());
  EXPECT_TRUE(ValidateOwner(std::string(32, 'x')).ok());
  for (std::string bad : {"", "MyApp", "my_app", "my app", "my:app", "ü"}) {
    Status s = ValidateOwner(bad);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(s.message(), HasSubstr("'" + bad + "'"));
  }
  EXPECT_EQ(ValidateOwner(std::string(33, 'x')).code(), StatusCode::kInvalidArgument);
}

TEST(RuleIdTest, DerivedIdIsStableBase32OfFnv1a) {
  std::string id = DeriveRuleId("filter", "MYAPP-IN", "-s 10.0.0.0/8 -j ACCEPT");
  EXPECT_EQ(id.size(), 13u);
  EXPECT_EQ(id.find_first_not_of("abcdefghijklmnopqrstuvwxyz234567"), std::string::npos);
  EXPECT_EQ(id, DeriveRuleId("filter", "MYAPP-IN", "-s 10.0.0.0/8 -j ACCEPT"));
  EXPECT_NE(id, DeriveRuleId("nat", "MYAPP-IN", "-s 10.0.0.0/8 -j ACCEPT"));
  EXPECT_NE(id, DeriveRuleId("filter", "MYAPP-OUT", "-s 10.0.0.0/8 -j ACCEPT"));
  EXPECT_NE(id, DeriveRuleId("filter", "MYAPP-IN", "-s 10.0.0.0/8 -j DROP"));
  // Fields are separated: ("ab", "c") and ("a", "bc") differ.
  EXPECT_NE(DeriveRuleId("ab", "c", "x"), DeriveRuleId("a", "bc", "x"));
  // Pinned (FNV-1a 64 of "filter\0MYAPP-IN\0-j ACCEPT" = 0x8760c0b0caa823b7, computed independently): ids of
  // rules already in kernels must never change between versions.
  EXPECT_EQ(DeriveRuleId("filter", "MYAPP-IN", "-j ACCEPT"), "ioygawdfkqi5x");
}

TEST(RuleIdTest, ValidateRuleId) {
  EXPECT_TRUE(ValidateRuleId("ssh").ok());
  EXPECT_TRUE(ValidateRuleId("Web_1.v2-x").ok());
  EXPECT_TRUE(ValidateRuleId(std::string(26, 'a')).ok());
  EXPECT_EQ(ValidateRuleId("").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateRuleId(std::string(27, 'a')).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateRuleId("a:b").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateRuleId("a b").code(), StatusCode::kInvalidArgument);
}

TEST(ValidateDesiredTest, AcceptsAWellFormedState) {
  DesiredState d = Want({{"filter", "MYAPP-IN", {Accept("10.0.0.0/8"), JumpTo("MYAPP-SUB")}},
                         {"filter", "MYAPP-SUB", {Tagged(Drop("10.1.0.0/16"), kOwner, "mine")}}},
                        {{"filter", "INPUT", HookRule::Position::kFirst, JumpTo("MYAPP-IN")}});
  EXPECT_TRUE(ValidateDesiredState(d).ok()) << ValidateDesiredState(d).ToString();
}

TEST(ValidateDesiredTest, RejectsBadOwnerAndChainNames) {
  struct Case {
    DesiredState desired;
    std::string expect;
  };
  std::vector<Case> cases;
  cases.push_back({Want({{"filter", "OTHER-IN", {}}}), "must start with 'MYAPP-'"});
  cases.push_back({Want({{"filter", "MYAPP-", {}}}), "must start with 'MYAPP-'"});
  cases.push_back({Want({{"filter", "myapp-in", {}}}), "must start with 'MYAPP-'"});
  // 29 bytes: prefix + name over the kernel's 28-byte chain name limit.
  cases.push_back({Want({{"filter", "MYAPP-" + std::string(23, 'X'), {}}}), "MYAPP-XXXX"});
  cases.push_back({Want({{"filter", "MYAPP-A B", {}}}), "MYAPP-A B"});
  cases.push_back({Want({{"filtre", "MYAPP-IN", {}}}), "unknown table 'filtre'"});
  cases.push_back({Want({{"filter", "MYAPP-IN", {}}, {"filter", "MYAPP-IN", {}}}), "listed twice"});
  cases.push_back({Want({}, {{"filter", "PREROUTING", HookRule::Position::kFirst, JumpTo("ACCEPT")}}),
                   "not a builtin chain of table filter"});
  cases.push_back(
      {Want({}, {{"filter", "MYAPP-IN", HookRule::Position::kFirst, JumpTo("ACCEPT")}}), "not a builtin chain"});
  cases.push_back(
      {Want({{"filter", "MYAPP-IN", {Tagged(Accept("10.0.0.0/8"), "other", "x")}}}), "tag of owner 'other'"});
  cases.push_back(
      {Want({{"filter", "MYAPP-IN", {Tagged(Accept("10.0.0.0/8"), kOwner, "bad id!")}}}), "rule id 'bad id!'"});
  cases.push_back({Want({{"filter", "MYAPP-IN", {JumpTo("MYAPP-GONE")}}}), "jumps to 'MYAPP-GONE'"});
  cases.push_back(
      {Want({{"nat", "MYAPP-IN", {}}}, {{"filter", "INPUT", HookRule::Position::kFirst, JumpTo("MYAPP-IN")}}),
       "not an owned chain of table filter"});
  for (const Case& c : cases) {
    Status s = ValidateDesiredState(c.desired);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << c.expect;
    EXPECT_THAT(s.message(), HasSubstr(c.expect));
  }
  DesiredState bad_owner = Want({});
  bad_owner.owner = "My_App";
  EXPECT_EQ(ValidateDesiredState(bad_owner).code(), StatusCode::kInvalidArgument);
  // The planner refuses what validation refuses.
  Ruleset rs = AdminRuleset();
  EXPECT_EQ(PlanDeclarative(rs, cases[0].desired).status().code(), StatusCode::kInvalidArgument);
}

TEST(AssignOwnerTagsTest, TagIsLastKeepsCallerIdsAndSuffixesCopies) {
  Rule with_comment = Accept("10.0.0.0/8");
  with_comment.matches.push_back({"comment", {{"comment", false, {"ssh from lan"}}}});
  DesiredState d = Want({{"filter",
                          "MYAPP-IN",
                          {with_comment, Tagged(Drop("10.9.0.0/16"), kOwner, "blocked"), Accept("10.0.0.0/8"),
                           Accept("10.0.0.0/8"), with_comment}}},
                        {{"filter", "INPUT", HookRule::Position::kFirst, JumpTo("MYAPP-IN")},
                         {"filter", "INPUT", HookRule::Position::kLast, JumpTo("MYAPP-IN")}});
  ASSERT_TRUE(AssignOwnerTags(d).ok());
  const auto& rules = d.chains[0].rules;
  std::string comment_id = DeriveRuleId("filter", "MYAPP-IN", FormatRuleSpec(with_comment));
  std::string plain_id = DeriveRuleId("filter", "MYAPP-IN", "-s 10.0.0.0/8 -j ACCEPT");
  EXPECT_EQ(rules[0].OwnerTag(), (Rule::Tag{kOwner, comment_id}));
  EXPECT_EQ(rules[0].matches.size(), 2u);  // the user's comment stays, the tag comes after it
  EXPECT_EQ(rules[0].matches[0].options[0].values[0], "ssh from lan");
  EXPECT_EQ(rules[1].OwnerTag(), (Rule::Tag{kOwner, "blocked"}));
  EXPECT_EQ(rules[2].OwnerTag(), (Rule::Tag{kOwner, plain_id}));
  EXPECT_EQ(rules[3].OwnerTag(), (Rule::Tag{kOwner, plain_id + "-2"}));
  EXPECT_EQ(rules[4].OwnerTag(), (Rule::Tag{kOwner, comment_id + "-2"}));
  EXPECT_EQ(FormatRuleSpec(rules[2]), "-s 10.0.0.0/8 -m comment --comment \"iptkit:myapp:" + plain_id + "\" -j ACCEPT");
  // Hooks of one builtin chain share the uniqueness scope.
  std::string hook_id = DeriveRuleId("filter", "INPUT", "-j MYAPP-IN");
  EXPECT_EQ(d.hooks[0].rule.OwnerTag()->id, hook_id);
  EXPECT_EQ(d.hooks[1].rule.OwnerTag()->id, hook_id + "-2");
  // Idempotent: tagging tagged rules changes nothing.
  DesiredState again = d;
  ASSERT_TRUE(AssignOwnerTags(again).ok());
  EXPECT_EQ(again, d);
}

TEST(AssignOwnerTagsTest, RefusesOtherOwnersTagAndOverlongCopyIds) {
  DesiredState other = Want({{"filter", "MYAPP-IN", {Tagged(Accept("10.0.0.0/8"), "other", "x")}}});
  EXPECT_EQ(AssignOwnerTags(other).code(), StatusCode::kInvalidArgument);
  Rule long_id = Tagged(Accept("10.0.0.0/8"), kOwner, std::string(26, 'a'));
  DesiredState dup = Want({{"filter", "MYAPP-IN", {long_id, long_id}}});
  Status s = AssignOwnerTags(dup);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("exceed 26"));
}

// ---- The planner ----

TEST(PlanDeclarativeTest, FreshApplyCreatesChainsBeforeJumpsAndIsIdempotent) {
  Ruleset rs = AdminRuleset();
  const Ruleset before = rs;
  DesiredState want = Want({{"filter", "MYAPP-IN", {Accept("10.0.0.0/8"), JumpTo("MYAPP-SUB")}},
                            {"filter", "MYAPP-SUB", {Drop("10.1.0.0/16")}}},
                           {{"filter", "INPUT", HookRule::Position::kFirst, JumpTo("MYAPP-IN")}});
  auto plan = Converge(rs, want);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  ASSERT_EQ(plan->batches.size(), 1u);
  const auto& ops = plan->batches[0].ops;
  ASSERT_GE(ops.size(), 2u);
  EXPECT_EQ(ops[0].kind, TableOp::Kind::kNewChain);
  EXPECT_EQ(ops[1].kind, TableOp::Kind::kNewChain);
  EXPECT_EQ(CountOps(*plan, TableOp::Kind::kDelete), 0);
  EXPECT_THAT(plan->steps[0].description, HasSubstr("create chain filter MYAPP-IN"));

  const Table& filter = *rs.FindTable("filter");
  EXPECT_EQ(SpecsWithoutTags(*filter.FindChain("MYAPP-IN")),
            (std::vector<std::string>{"-s 10.0.0.0/8 -j ACCEPT", "-j MYAPP-SUB"}));
  EXPECT_EQ(SpecsWithoutTags(*filter.FindChain("INPUT")),
            (std::vector<std::string>{"-j MYAPP-IN", "-j ADMIN", "-s 198.51.100.0/24 -j ACCEPT"}));
  EXPECT_EQ(ForeignRules(*filter.FindChain("INPUT")), ForeignRules(*before.FindTable("filter")->FindChain("INPUT")));
  EXPECT_EQ(filter.FindChain("INPUT")->policy, "DROP");

  auto second = Converge(rs, want);
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_TRUE(second->empty());
  EXPECT_TRUE(second->steps.empty());
}

TEST(PlanDeclarativeTest, ChangingOneRuleOfHundredTouchesOnlyThatRule) {
  Ruleset rs = AdminRuleset();
  ASSERT_TRUE(Converge(rs, Want({{"filter", "MYAPP-IN", Numbered(100)}})).ok());
  auto& chain = *rs.FindTable("filter")->FindChain("MYAPP-IN");
  for (size_t i = 0; i < chain.rules.size(); ++i) chain.rules[i].counters = {i + 1, (i + 1) * 60};
  const Chain before = chain;

  auto plan = Converge(rs, Want({{"filter", "MYAPP-IN", Numbered(100, /*changed=*/50)}}));
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(CountOps(*plan, TableOp::Kind::kDelete), 1);
  EXPECT_EQ(CountOps(*plan, TableOp::Kind::kInsert), 1);
  EXPECT_EQ(CountOps(*plan, TableOp::Kind::kAppend), 0);
  EXPECT_EQ(plan->steps.size(), 2u);
  // The insert goes at 50, guarded by the rule it follows.
  const auto& ops = plan->batches[0].ops;
  ASSERT_EQ(ops.size(), 3u);
  EXPECT_EQ(ops[0].kind, TableOp::Kind::kDelete);
  EXPECT_EQ(ops[0].rule, before.rules[49]);
  EXPECT_EQ(ops[1].kind, TableOp::Kind::kCheck);
  EXPECT_EQ(ops[1].rule, before.rules[48]);
  EXPECT_EQ(ops[2].kind, TableOp::Kind::kInsert);
  EXPECT_EQ(ops[2].index, 50);

  const Chain& after = *rs.FindTable("filter")->FindChain("MYAPP-IN");
  ASSERT_EQ(after.rules.size(), 100u);
  for (size_t i = 0; i < 100; ++i) {
    if (i == 49) {
      EXPECT_EQ(after.rules[i].source->value, "10.0.50.128/25");
      EXPECT_EQ(after.rules[i].counters, Counters{});
    } else {
      EXPECT_EQ(after.rules[i], before.rules[i]) << i;
      EXPECT_EQ(after.rules[i].counters, before.rules[i].counters) << "rule " << i + 1 << " lost its counters";
    }
  }
}

TEST(PlanDeclarativeTest, InsertInTheMiddleAndAppendAtTheEnd) {
  Ruleset rs = AdminRuleset();
  std::vector<Rule> five = Numbered(5);
  ASSERT_TRUE(Converge(rs, Want({{"filter", "MYAPP-IN", five}})).ok());
  std::vector<Rule> seven = five;
  seven.insert(seven.begin() + 2, Drop("10.9.9.0/24"));
  seven.push_back(Drop("10.9.10.0/24"));
  auto plan = Converge(rs, Want({{"filter", "MYAPP-IN", seven}}));
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(CountOps(*plan, TableOp::Kind::kDelete), 0);
  EXPECT_EQ(CountOps(*plan, TableOp::Kind::kInsert), 1);
  EXPECT_EQ(CountOps(*plan, TableOp::Kind::kAppend), 1);
  EXPECT_THAT(plan->steps[0].description, HasSubstr("insert filter MYAPP-IN 3: -s 10.9.9.0/24"));
  EXPECT_EQ(SpecsWithoutTags(*rs.FindTable("filter")->FindChain("MYAPP-IN")), Specs(seven));
}

TEST(PlanDeclarativeTest, ReorderMovesOnlyWhatLeavesTheCommonSubsequence) {
  Ruleset rs = AdminRuleset();
  std::vector<Rule> r = Numbered(6);  // a b c d e f
  ASSERT_TRUE(Converge(rs, Want({{"filter", "MYAPP-IN", r}})).ok());
  std::vector<Rule> moved = {r[0], r[4], r[1], r[2], r[3], r[5]};  // e moved up: 1 delete + 1 insert
  auto plan = Converge(rs, Want({{"filter", "MYAPP-IN", moved}}));
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(CountOps(*plan, TableOp::Kind::kDelete), 1);
  EXPECT_EQ(CountOps(*plan, TableOp::Kind::kInsert), 1);
  EXPECT_EQ(SpecsWithoutTags(*rs.FindTable("filter")->FindChain("MYAPP-IN")), Specs(moved));

  // From a e b c d f to f e d c b a: the longest common subsequence has 2 rules (e.g. "e d"), so 4 move.
  std::vector<Rule> reversed(r.rbegin(), r.rend());
  plan = Converge(rs, Want({{"filter", "MYAPP-IN", reversed}}));
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(CountOps(*plan, TableOp::Kind::kDelete), 4);
  EXPECT_EQ(CountOps(*plan, TableOp::Kind::kInsert) + CountOps(*plan, TableOp::Kind::kAppend), 4);
  EXPECT_EQ(SpecsWithoutTags(*rs.FindTable("filter")->FindChain("MYAPP-IN")), Specs(reversed));
  EXPECT_TRUE(Converge(rs, Want({{"filter", "MYAPP-IN", reversed}}))->empty());
}

TEST(PlanDeclarativeTest, DuplicateRulesGetDistinctTagsAndConverge) {
  Ruleset rs = AdminRuleset();
  Rule a = Accept("10.0.0.0/8"), b = Drop("10.1.0.0/16");
  ASSERT_TRUE(Converge(rs, Want({{"filter", "MYAPP-IN", {a, b, a}}})).ok());
  auto& chain = *rs.FindTable("filter")->FindChain("MYAPP-IN");
  for (size_t i = 0; i < chain.rules.size(); ++i) chain.rules[i].counters = {i + 1, 1};
  ASSERT_EQ(chain.rules.size(), 3u);
  EXPECT_NE(chain.rules[0], chain.rules[2]);  // distinct tags: "-D spec" names exactly one rule

  // Drop the first copy of a: the copy ids shift, so the second copy is re-created; b keeps its counters.
  auto plan = Converge(rs, Want({{"filter", "MYAPP-IN", {b, a}}}));
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  const Chain& after = *rs.FindTable("filter")->FindChain("MYAPP-IN");
  EXPECT_EQ(SpecsWithoutTags(after), Specs(std::vector<Rule>{b, a}));
  EXPECT_EQ(after.rules[0].counters.packets, 2u);
  EXPECT_TRUE(Converge(rs, Want({{"filter", "MYAPP-IN", {b, a}}}))->empty());

  // Back to three copies at the front.
  plan = Converge(rs, Want({{"filter", "MYAPP-IN", {a, a, b, a}}}));
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(SpecsWithoutTags(*rs.FindTable("filter")->FindChain("MYAPP-IN")), Specs(std::vector<Rule>{a, a, b, a}));
  EXPECT_TRUE(Converge(rs, Want({{"filter", "MYAPP-IN", {a, a, b, a}}}))->empty());
}

TEST(PlanDeclarativeTest, KernelCopiesOfOneOwnedRuleCollapseInTheRightOrder) {
  // A foreign tool copied our tagged rule: [x, y, x] with the same tag twice. `-D spec` removes the FIRST copy,
  // so a plan that kept the first x and deleted the last would leave [y, x].
  Ruleset rs = AdminRuleset();
  Rule x = Owned(Accept("10.0.0.0/8"), "filter", "MYAPP-IN"), y = Owned(Drop("10.1.0.0/16"), "filter", "MYAPP-IN");
  ChainOf(rs, "filter", "MYAPP-IN").rules = {Counted(x, 1), Counted(y, 2), Counted(x, 3)};
  auto plan = Converge(rs, Want({{"filter", "MYAPP-IN", {Accept("10.0.0.0/8"), Drop("10.1.0.0/16")}}}));
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  const Chain& after = *rs.FindTable("filter")->FindChain("MYAPP-IN");
  EXPECT_EQ(Specs(after), Specs(std::vector<Rule>{x, y}));
  EXPECT_TRUE(Converge(rs, Want({{"filter", "MYAPP-IN", {Accept("10.0.0.0/8"), Drop("10.1.0.0/16")}}}))->empty());

  // [x, x] wanted [x]: the last copy (counters 3) survives.
  ChainOf(rs, "filter", "MYAPP-IN").rules = {Counted(x, 1), Counted(x, 3)};
  ASSERT_TRUE(Converge(rs, Want({{"filter", "MYAPP-IN", {Accept("10.0.0.0/8")}}})).ok());
  ASSERT_EQ(rs.FindTable("filter")->FindChain("MYAPP-IN")->rules.size(), 1u);
  EXPECT_EQ(rs.FindTable("filter")->FindChain("MYAPP-IN")->rules[0].counters.packets, 3u);
}

TEST(PlanDeclarativeTest, HooksFirstAndLastAroundForeignRules) {
  Ruleset rs = AdminRuleset();
  const Ruleset before = rs;
  DesiredState want = Want({{"filter", "MYAPP-IN", {Accept("10.0.0.0/8")}}, {"filter", "MYAPP-LOG", {}}},
                           {{"filter", "INPUT", HookRule::Position::kFirst, JumpTo("MYAPP-IN")},
                            {"filter", "INPUT", HookRule::Position::kLast, JumpTo("MYAPP-LOG")},
                            {"filter", "INPUT", HookRule::Position::kFirst, Drop("10.66.0.0/16")}});
  auto plan = Converge(rs, want);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  const Chain& input = *rs.FindTable("filter")->FindChain("INPUT");
  EXPECT_EQ(SpecsWithoutTags(input), (std::vector<std::string>{"-j MYAPP-IN", "-s 10.66.0.0/16 -j DROP", "-j ADMIN",
                                                               "-s 198.51.100.0/24 -j ACCEPT", "-j MYAPP-LOG"}));
  EXPECT_EQ(ForeignRules(input), ForeignRules(*before.FindTable("filter")->FindChain("INPUT")));
  EXPECT_TRUE(Converge(rs, want)->empty());

  // Into an empty builtin chain: first hooks in order, then last hooks.
  Ruleset empty;
  empty.family = kV4;
  ASSERT_TRUE(Converge(empty, want).ok());
  EXPECT_EQ(SpecsWithoutTags(*empty.FindTable("filter")->FindChain("INPUT")),
            (std::vector<std::string>{"-j MYAPP-IN", "-s 10.66.0.0/16 -j DROP", "-j MYAPP-LOG"}));
  EXPECT_TRUE(Converge(empty, want)->empty());
}

TEST(PlanDeclarativeTest, HookPushedDownByForeignInsertIsMovedBackWithoutTouchingIt) {
  Ruleset rs = AdminRuleset();
  DesiredState want = Want({{"filter", "MYAPP-IN", {Accept("10.0.0.0/8")}}},
                           {{"filter", "INPUT", HookRule::Position::kFirst, JumpTo("MYAPP-IN")}});
  ASSERT_TRUE(Converge(rs, want).ok());
  // docker-style `-I INPUT 1`.
  Chain& input = *rs.FindTable("filter")->FindChain("INPUT");
  Rule intruder = Counted(JumpTo("ADMIN"), 42);
  intruder.in_interface = Field{"docker0"};
  input.rules.insert(input.rules.begin(), intruder);
  const Chain drifted = input;

  auto plan = Converge(rs, want);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(CountOps(*plan, TableOp::Kind::kDelete), 1);
  EXPECT_EQ(CountOps(*plan, TableOp::Kind::kInsert) + CountOps(*plan, TableOp::Kind::kAppend), 1);
  for (const auto& op : plan->batches[0].ops) {
    if (op.kind != TableOp::Kind::kCheck) {
      EXPECT_NE(op.rule, intruder) << backend::DescribeTableOp(op);
    }
  }
  const Chain& repaired = *rs.FindTable("filter")->FindChain("INPUT");
  EXPECT_EQ(SpecsWithoutTags(repaired)[0], "-j MYAPP-IN");
  EXPECT_EQ(repaired.rules[1], intruder);
  EXPECT_EQ(repaired.rules[1].counters.packets, 42u);
  EXPECT_EQ(ForeignRules(repaired), ForeignRules(drifted));
  EXPECT_TRUE(Converge(rs, want)->empty());
}

// Regression: two owners with `first` hooks in one chain each moved their hook above the other's on every
// apply (each treated the other's hook as a foreign rule), so a daemon's drift check repaired both forever.
TEST(PlanDeclarativeTest, TwoOwnersFirstHooksShareTheTopWithoutMovingEachOther) {
  Ruleset rs = AdminRuleset();
  DesiredState mine = Want({}, {{"filter", "INPUT", HookRule::Position::kFirst, Drop("10.1.0.0/16")}});
  DesiredState other = mine;
  other.owner = "other";
  other.hooks = {{"filter", "INPUT", HookRule::Position::kFirst, Drop("10.2.0.0/16")},
                 {"filter", "INPUT", HookRule::Position::kLast, Drop("10.3.0.0/16")}};
  ASSERT_TRUE(Converge(rs, mine).ok());
  ASSERT_TRUE(Converge(rs, other).ok());
  const std::vector<std::string> settled = SpecsWithoutTags(*rs.FindTable("filter")->FindChain("INPUT"));
  EXPECT_EQ(settled.front(), "-s 10.2.0.0/16 -j DROP");  // the newer first hook went on top
  EXPECT_EQ(settled[1], "-s 10.1.0.0/16 -j DROP");
  EXPECT_EQ(settled.back(), "-s 10.3.0.0/16 -j DROP");
  for (int round = 0; round < 3; ++round) {
    auto a = Converge(rs, mine);
    auto b = Converge(rs, other);
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_TRUE(a->empty()) << "round " << round;
    EXPECT_TRUE(b->empty()) << "round " << round;
  }
  // A rule without a tag above them is still drift for both.
  Chain& input = *rs.FindTable("filter")->FindChain("INPUT");
  input.rules.insert(input.rules.begin(), Accept("10.9.0.0/16"));
  ASSERT_TRUE(Converge(rs, mine).ok());
  ASSERT_TRUE(Converge(rs, other).ok());
  const std::vector<std::string> repaired = SpecsWithoutTags(*rs.FindTable("filter")->FindChain("INPUT"));
  EXPECT_EQ(repaired[2], "-s 10.9.0.0/16 -j ACCEPT");
}

// Without foreign rules a builtin chain is one segment; a new last hook still goes after the other owners' rules
// (before this, it went to the top, above another owner's first hook, where an unowned append that the daemon puts
// above all last hooks then left it out of place).
TEST(PlanDeclarativeTest, NewLastHookGoesAfterOtherOwnersRulesWithoutForeignRules) {
  Ruleset rs;
  rs.family = kV4;
  TableOf(rs, "filter");
  DesiredState other = Want({}, {{"filter", "INPUT", HookRule::Position::kFirst, Drop("10.2.0.0/16")}});
  other.owner = "other";
  ASSERT_TRUE(Converge(rs, other).ok());
  DesiredState mine = Want({}, {{"filter", "INPUT", HookRule::Position::kFirst, Drop("10.1.0.0/16")},
                                {"filter", "INPUT", HookRule::Position::kLast, Drop("10.3.0.0/16")}});
  auto plan = Converge(rs, mine);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(SpecsWithoutTags(*rs.FindTable("filter")->FindChain("INPUT")),
            (std::vector<std::string>{"-s 10.1.0.0/16 -j DROP", "-s 10.2.0.0/16 -j DROP", "-s 10.3.0.0/16 -j DROP"}));
  EXPECT_TRUE(Converge(rs, mine)->empty());
  EXPECT_TRUE(Converge(rs, other)->empty());
  // A second last hook follows the first one.
  mine.hooks.push_back({"filter", "INPUT", HookRule::Position::kLast, Drop("10.4.0.0/16")});
  ASSERT_TRUE(Converge(rs, mine).ok());
  EXPECT_EQ(SpecsWithoutTags(*rs.FindTable("filter")->FindChain("INPUT")).back(), "-s 10.4.0.0/16 -j DROP");
  EXPECT_TRUE(Converge(rs, other)->empty());
}

TEST(PlanDeclarativeTest, ForeignRulesAndPoliciesSurviveApplyChangeAndRemove) {
  Ruleset rs = AdminRuleset();
  const Ruleset original = rs;
  // A second owner's state must survive too.
  ChainOf(rs, "filter", "OTHER-IN").rules = {Tagged(Accept("10.5.0.0/16"), "other", "o1")};
  rs.FindTable("filter")->FindChain("FORWARD")->rules.push_back(Tagged(JumpTo("OTHER-IN"), "other", "o2"));
  const Ruleset with_other = rs;

  auto check_foreign = [&](const char* stage) {
    for (const Chain& c : with_other.FindTable("filter")->chains) {
      const Chain* now = rs.FindTable("filter")->FindChain(c.name);
      ASSERT_NE(now, nullptr) << stage << " " << c.name;
      EXPECT_EQ(ForeignRules(*now), ForeignRules(c)) << stage << " " << c.name;
      EXPECT_EQ(now->policy, c.policy) << stage;
      EXPECT_EQ(now->counters, c.counters) << stage;
    }
  };
  DesiredState v1 = Want({{"filter", "MYAPP-IN", Numbered(4)}, {"filter", "MYAPP-OUT", {Drop("10.7.0.0/16")}}},
                         {{"filter", "INPUT", HookRule::Position::kFirst, JumpTo("MYAPP-IN")},
                          {"filter", "FORWARD", HookRule::Position::kLast, JumpTo("MYAPP-OUT")}});
  ASSERT_TRUE(Converge(rs, v1).ok());
  check_foreign("apply");
  DesiredState v2 = Want({{"filter", "MYAPP-IN", Numbered(3, 2)}},
                         {{"filter", "INPUT", HookRule::Position::kLast, JumpTo("MYAPP-IN")}});
  ASSERT_TRUE(Converge(rs, v2).ok());
  check_foreign("change");
  EXPECT_EQ(rs.FindTable("filter")->FindChain("MYAPP-OUT"), nullptr);
  auto removed = Converge(rs, Want({}));
  ASSERT_TRUE(removed.ok()) << removed.status().ToString();
  check_foreign("remove");
  // Nothing of ours is left: the table is what it was, counters included.
  const Table& now = *rs.FindTable("filter");
  const Table& was = *with_other.FindTable("filter");
  EXPECT_EQ(now, was);
  for (const Chain& c : was.chains) {
    for (size_t i = 0; i < c.rules.size(); ++i) {
      EXPECT_EQ(now.FindChain(c.name)->rules[i].counters, c.rules[i].counters);
    }
  }
  EXPECT_TRUE(Converge(rs, Want({}))->empty());
  (void)original;
}

TEST(PlanDeclarativeTest, StaleChainsAreRemovedAfterTheRulesThatReferenceThem) {
  Ruleset rs = AdminRuleset();
  DesiredState v1 = Want({{"filter", "MYAPP-IN", {Accept("10.0.0.0/8"), JumpTo("MYAPP-A")}},
                          {"filter", "MYAPP-A", {JumpTo("MYAPP-B")}},
                          {"filter", "MYAPP-B", {Drop("10.2.0.0/16")}}},
                         {{"filter", "INPUT", HookRule::Position::kFirst, JumpTo("MYAPP-IN")},
                          {"filter", "OUTPUT", HookRule::Position::kFirst, JumpTo("MYAPP-B")}});
  ASSERT_TRUE(Converge(rs, v1).ok());
  // Drop A and B: the jump in MYAPP-IN, the OUTPUT hook and A's jump to B all go before -X A and -X B. The
  // simulation refuses -X of a referenced or non-empty chain, so success proves the order.
  DesiredState v2 = Want({{"filter", "MYAPP-IN", {Accept("10.0.0.0/8")}}},
                         {{"filter", "INPUT", HookRule::Position::kFirst, JumpTo("MYAPP-IN")}});
  auto plan = PlanDeclarative(rs, [&] {
    DesiredState d = v2;
    EXPECT_TRUE(AssignOwnerTags(d).ok());
    return d;
  }());
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  const auto& ops = plan->batches[0].ops;
  auto first_x =
      std::find_if(ops.begin(), ops.end(), [](const TableOp& op) { return op.kind == TableOp::Kind::kDeleteChain; });
  ASSERT_NE(first_x, ops.end());
  EXPECT_TRUE(
      std::all_of(first_x, ops.end(), [](const TableOp& op) { return op.kind == TableOp::Kind::kDeleteChain; }));
  EXPECT_EQ(CountOps(*plan, TableOp::Kind::kDeleteChain), 2);
  ASSERT_TRUE(ApplyBatches(rs, *plan).ok());
  EXPECT_EQ(rs.FindTable("filter")->FindChain("MYAPP-A"), nullptr);
  EXPECT_EQ(rs.FindTable("filter")->FindChain("MYAPP-B"), nullptr);
  EXPECT_TRUE(rs.FindTable("filter")->FindChain("OUTPUT")->rules.empty());
  EXPECT_TRUE(Converge(rs, v2)->empty());
}

TEST(PlanDeclarativeTest, StaleChainUsedByForeignRuleIsEmptiedAndKeptWithWarning) {
  Ruleset rs = AdminRuleset();
  ASSERT_TRUE(Converge(rs, Want({{"filter", "MYAPP-IN", {Accept("10.0.0.0/8")}}})).ok());
  rs.FindTable("filter")->FindChain("FORWARD")->rules.push_back(JumpTo("MYAPP-IN"));  // an admin's jump
  auto plan = Converge(rs, Want({}));
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(CountOps(*plan, TableOp::Kind::kDeleteChain), 0);
  ASSERT_EQ(plan->warnings.size(), 1u);
  EXPECT_THAT(plan->warnings[0], HasSubstr("MYAPP-IN"));
  ASSERT_NE(rs.FindTable("filter")->FindChain("MYAPP-IN"), nullptr);
  EXPECT_TRUE(rs.FindTable("filter")->FindChain("MYAPP-IN")->rules.empty());
  auto again = Converge(rs, Want({}));
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->empty());
  EXPECT_EQ(again->warnings.size(), 1u);
}

TEST(PlanDeclarativeTest, ForeignRuleInsideOwnedChainIsKeptAndPlannedAround) {
  Ruleset rs = AdminRuleset();
  std::vector<Rule> r = Numbered(3);
  DesiredState want =
      Want({{"filter", "MYAPP-IN", r}}, {{"filter", "INPUT", HookRule::Position::kFirst, JumpTo("MYAPP-IN")}});
  ASSERT_TRUE(Converge(rs, want).ok());
  Chain& chain = *rs.FindTable("filter")->FindChain("MYAPP-IN");
  Rule admin = Counted(Drop("192.0.2.66/32"), 8);
  chain.rules.insert(chain.rules.begin() + 1, admin);  // iptables -I MYAPP-IN 2 ...

  std::vector<Rule> changed = {Drop("10.8.0.0/16"), r[0], Drop("10.9.0.0/16"), r[2]};
  auto plan = Converge(rs, Want({{"filter", "MYAPP-IN", changed}}, want.hooks));
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(plan->warnings.size(), 1u);
  for (const auto& op : plan->batches[0].ops) {
    if (op.kind != TableOp::Kind::kCheck) {
      EXPECT_NE(op.rule, admin);
    }
  }
  const Chain& after = *rs.FindTable("filter")->FindChain("MYAPP-IN");
  // New rules go right after their desired predecessor; the foreign rule stays behind the rule it followed.
  EXPECT_EQ(SpecsWithoutTags(after),
            (std::vector<std::string>{"-s 10.8.0.0/16 -j DROP", "-s 10.0.1.0/24 -j ACCEPT", "-s 10.9.0.0/16 -j DROP",
                                      "-s 192.0.2.66/32 -j DROP", "-s 10.0.3.0/24 -j ACCEPT"}));
  EXPECT_EQ(after.rules[3].counters.packets, 8u);
  EXPECT_TRUE(Converge(rs, Want({{"filter", "MYAPP-IN", changed}}, want.hooks))->empty());
}

TEST(PlanDeclarativeTest, OurRulesOutsideDesiredPlacesAreRemovedOthersOwnersUntouched) {
  Ruleset rs = AdminRuleset();
  Chain& input = *rs.FindTable("filter")->FindChain("INPUT");
  input.rules.push_back(Owned(Accept("10.3.0.0/16"), "filter", "INPUT"));  // an old hook of ours
  input.rules.push_back(Tagged(Accept("10.4.0.0/16"), "other", "keep"));   // another owner's
  ChainOf(rs, "filter", "ADMIN").rules.push_back(Owned(Drop("10.5.0.0/16"), "filter", "ADMIN"));
  // A chain with our prefix that holds only a foreign rule and nothing of ours jumps to: not ours.
  ChainOf(rs, "filter", "MYAPP-ADMIN").rules = {Drop("10.6.0.0/16")};
  auto plan = Converge(rs, Want({}));
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(CountOps(*plan, TableOp::Kind::kDelete), 2);
  EXPECT_EQ(CountOps(*plan, TableOp::Kind::kDeleteChain), 0);
  const Table& t = *rs.FindTable("filter");
  EXPECT_EQ(SpecsWithoutTags(*t.FindChain("INPUT")).size(), 3u);
  EXPECT_EQ(t.FindChain("INPUT")->rules.back().OwnerTag()->owner, "other");
  EXPECT_EQ(t.FindChain("ADMIN")->rules.size(), 1u);
  ASSERT_NE(t.FindChain("MYAPP-ADMIN"), nullptr);
}

TEST(PlanDeclarativeTest, UnrepresentableTableIsNeverRewritten) {
  Ruleset rs = AdminRuleset();
  rs.FindTable("filter")->unrepresentable_reason = "iptables-nft-save shows 2 rules in INPUT, the kernel has 3";
  auto plan = PlanDeclarative(rs, [] {
    DesiredState d = Want({{"filter", "MYAPP-IN", {Accept("10.0.0.0/8")}}});
    EXPECT_TRUE(AssignOwnerTags(d).ok());
    return d;
  }());
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(plan.status().message(), HasSubstr("table filter (ipv4)"));
  EXPECT_THAT(plan.status().message(), HasSubstr("the kernel has 3"));

  // Our state in it counts too (removal would rewrite it).
  rs.FindTable("filter")->FindChain("INPUT")->rules.push_back(Owned(Accept("10.3.0.0/16"), "filter", "INPUT"));
  EXPECT_EQ(PlanDeclarative(rs, Want({})).status().code(), StatusCode::kFailedPrecondition);

  // An unrepresentable table the owner has nothing in does not block others.
  Ruleset other = AdminRuleset();
  TableOf(other, "nat").unrepresentable_reason = "lossy";
  Ruleset copy = other;
  auto ok = Converge(copy, Want({{"filter", "MYAPP-IN", {Accept("10.0.0.0/8")}}}));
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  for (const auto& b : ok->batches) EXPECT_NE(b.table, "nat");
}

TEST(PlanDeclarativeTest, PlanCoversSeveralTablesInKnownOrder) {
  Ruleset rs = AdminRuleset();
  DesiredState want = Want({{"nat", "MYAPP-DNAT", {Accept("10.0.0.0/8")}}, {"filter", "MYAPP-IN", {}}},
                           {{"nat", "PREROUTING", HookRule::Position::kFirst, JumpTo("MYAPP-DNAT")},
                            {"raw", "PREROUTING", HookRule::Position::kLast, Accept("10.0.0.0/8")}});
  auto plan = Converge(rs, want);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  std::vector<std::string> tables;
  for (const auto& b : plan->batches) tables.push_back(b.table);
  EXPECT_EQ(tables, (std::vector<std::string>{"raw", "filter", "nat"}));
  EXPECT_TRUE(Converge(rs, want)->empty());
  ASSERT_TRUE(Converge(rs, Want({})).ok());
  EXPECT_TRUE(rs.FindTable("nat")->FindChain("PREROUTING")->rules.empty());
  EXPECT_EQ(rs.FindTable("nat")->FindChain("MYAPP-DNAT"), nullptr);
}

// Real-world rulesets (the shared corpus): apply, re-apply, change and remove an owner's state; every foreign
// rule, policy and counter stays, and removal gives back the original tables.
TEST(PlanDeclarativeCorpusTest, ApplyAndRemoveLeaveRealRulesetsIntact) {
  const std::filesystem::path dir = std::filesystem::path(IPTKIT_CORPUS_DIR) / "valid";
  if (!std::filesystem::is_directory(dir)) GTEST_SKIP() << "no corpus at " << dir;
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string ext = entry.path().extension();
    if (ext != ".v4" && ext != ".v6") continue;
    SCOPED_TRACE(entry.path().filename().string());
    const Family family = ext == ".v4" ? Family::kIPv4 : Family::kIPv6;
    std::ifstream in(entry.path());
    std::stringstream text;
    text << in.rdbuf();
    auto parsed = ParseSave(text.str(), family);
    if (!parsed.ok()) continue;  // the dialect's own tests cover parse failures
    ++files;
    Ruleset rs = *parsed;
    const Ruleset original = rs;
    const std::string net = family == Family::kIPv4 ? "10.0.0.0/8" : "fd00::/8";
    Rule src = Accept(net);
    DesiredState v1 = Want({{"filter", "MYAPP-IN", {src, Drop(net), JumpTo("MYAPP-SUB")}},
                            {"filter", "MYAPP-SUB", {Accept(net)}},
                            {"raw", "MYAPP-RAW", {Accept(net)}}},
                           {{"filter", "INPUT", HookRule::Position::kFirst, JumpTo("MYAPP-IN")},
                            {"filter", "FORWARD", HookRule::Position::kLast, JumpTo("MYAPP-IN")},
                            {"raw", "PREROUTING", HookRule::Position::kFirst, JumpTo("MYAPP-RAW")}});
    v1.families = family == Family::kIPv4 ? DesiredState::Families::kIPv4 : DesiredState::Families::kIPv6;
    rs.family = family;
    auto applied = Converge(rs, v1);
    ASSERT_TRUE(applied.ok()) << applied.status().ToString();
    auto again = Converge(rs, v1);
    ASSERT_TRUE(again.ok()) << again.status().ToString();
    EXPECT_TRUE(again->empty());
    DesiredState v2 = Want({{"filter", "MYAPP-IN", {Drop(net), src}}},
                           {{"filter", "INPUT", HookRule::Position::kLast, JumpTo("MYAPP-IN")}});
    ASSERT_TRUE(Converge(rs, v2).ok());
    for (const Table& t : original.tables) {
      for (const Chain& c : t.chains) {
        const Chain* now = rs.FindTable(t.name)->FindChain(c.name);
        ASSERT_NE(now, nullptr) << t.name << " " << c.name;
        EXPECT_EQ(ForeignRules(*now), ForeignRules(c)) << t.name << " " << c.name;
      }
    }
    auto removed = Converge(rs, Want({}));
    ASSERT_TRUE(removed.ok()) << removed.status().ToString();
    for (const Table& t : original.tables) {
      ASSERT_NE(rs.FindTable(t.name), nullptr);
      EXPECT_EQ(*rs.FindTable(t.name), t) << t.name;
    }
  }
  EXPECT_GT(files, 0);
}

// ---- Firewall::PlanApply / Apply over the fake backend ----

class FirewallApplyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto fake = std::make_unique<backend::FakeBackend>();
    fake_ = fake.get();
    fake_->SetRuleset(AdminRuleset());
    fw_ = Firewall::WithBackend(std::move(fake));
  }
  Result<Rule> Parse(std::string_view spec) { return ParseRuleSpec(spec, kV4); }
  DesiredState Desired() {
    DesiredState d;
    d.owner = kOwner;
    d.chains.push_back(
        {"filter", "MYAPP-IN", {*Parse("-s 10.0.0.1 -p tcp --dport 22 -j ACCEPT"), *Parse("-j RETURN")}});
    d.hooks.push_back({"filter", "INPUT", HookRule::Position::kFirst, *Parse("-j MYAPP-IN")});
    return d;
  }

  backend::FakeBackend* fake_ = nullptr;
  std::unique_ptr<Firewall> fw_;
};

TEST_F(FirewallApplyTest, PlanShowsTextAndChangesNothingApplyConvergesOnce) {
  auto plan = fw_->PlanApply(Desired());
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_TRUE(plan->changed());
  ASSERT_EQ(plan->tables.size(), 1u);
  EXPECT_THAT(plan->tables[0].restore_text, HasSubstr("*filter\n-N MYAPP-IN\n"));
  EXPECT_THAT(plan->tables[0].restore_text,
              HasSubstr("-A MYAPP-IN -s 10.0.0.1/32 -p tcp -m tcp --dport 22 -m comment --comment \"iptkit:myapp:"));
  EXPECT_EQ(fake_->commit_calls(), 0);

  auto done = fw_->Apply(Desired());
  ASSERT_TRUE(done.ok()) << done.status().ToString();
  EXPECT_EQ(done->tables.size(), 1u);
  EXPECT_EQ(fake_->commit_calls(), 1);
  auto save = fw_->Save(kV4, "filter");
  ASSERT_TRUE(save.ok());
  EXPECT_THAT(*save, HasSubstr("-A INPUT -m comment --comment \"iptkit:myapp:"));
  EXPECT_THAT(*save, HasSubstr(":INPUT DROP"));

  auto again = fw_->Apply(Desired());
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_FALSE(again->changed());
  EXPECT_TRUE(again->tables.empty());
  EXPECT_EQ(fake_->commit_calls(), 1);
}

TEST_F(FirewallApplyTest, UserSpellingDoesNotChurnAndCountersSurvive) {
  ASSERT_TRUE(fw_->Apply(Desired()).ok());
  ASSERT_TRUE(fake_->AddPacketCounts(kV4, "filter", "MYAPP-IN", 2, 7, 700).ok());
  DesiredState d = Desired();
  // Same rules, spelled as the kernel prints them, plus one new rule in the middle.
  d.chains[0].rules = {*Parse("-s 10.0.0.1/32 -p tcp -m tcp --dport 22 -j ACCEPT"), *Parse("-s 10.0.0.2 -j DROP"),
                       *Parse("-j RETURN")};
  auto plan = fw_->Apply(d);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  ASSERT_EQ(plan->steps.size(), 1u);
  EXPECT_THAT(plan->steps[0].description,
              HasSubstr("insert filter MYAPP-IN 2: -s 10.0.0.2/32 -m comment --comment \"iptkit:myapp:"));
  auto rs = fw_->List(kV4, "filter");
  ASSERT_TRUE(rs.ok());
  const Chain* chain = rs->FindTable("filter")->FindChain("MYAPP-IN");
  ASSERT_EQ(chain->rules.size(), 3u);
  EXPECT_EQ(chain->rules[2].counters.packets, 7u);
}

TEST_F(FirewallApplyTest, BothFamiliesAndErrorsNameTheRule) {
  DesiredState d = Desired();
  d.families = DesiredState::Families::kBoth;
  d.chains[0].rules = {*Parse("-p tcp --dport 22 -j ACCEPT")};
  auto done = fw_->Apply(d);
  ASSERT_TRUE(done.ok()) << done.status().ToString();
  ASSERT_EQ(done->tables.size(), 2u);
  EXPECT_EQ(done->tables[0].family, Family::kIPv4);
  EXPECT_EQ(done->tables[1].family, Family::kIPv6);
  bool v6 = false;
  for (const auto& s : done->steps) v6 = v6 || s.family == Family::kIPv6;
  EXPECT_TRUE(v6);
  EXPECT_FALSE(fw_->Apply(d)->changed());

  DesiredState bad = Desired();
  bad.owner = "Bad Owner";
  EXPECT_EQ(fw_->Apply(bad).status().code(), StatusCode::kInvalidArgument);
  DesiredState jump = Desired();
  jump.chains[0].rules.push_back(*Parse("-j MYAPP-MISSING"));
  auto refused = fw_->Apply(jump);
  EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.status().message(), HasSubstr("MYAPP-MISSING"));
}

TEST_F(FirewallApplyTest, UnrepresentableTableRefusedWithoutCommit) {
  ASSERT_TRUE(fake_->MarkUnrepresentable(kV4, "filter", "rule count differs").ok());
  auto done = fw_->Apply(Desired());
  EXPECT_EQ(done.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(done.status().message(), HasSubstr("rule count differs"));
  EXPECT_EQ(fake_->commit_calls(), 0);
}

TEST(FirewallApplyRaceTest, ForeignInsertBetweenReadAndCommitIsNeverDeleted) {
  auto fake = std::make_unique<backend::FakeBackend>();
  backend::FakeBackend* raw = fake.get();
  raw->SetRuleset(AdminRuleset());
  bool armed = false;
  Rule intruder = Drop("203.0.113.99/32");
  FirewallOptions options;
  options.before_commit_hook = [&] {
    if (!armed) return;
    armed = false;
    backend::TableBatch batch;
    batch.family = kV4;
    batch.table = "filter";
    batch.ops.push_back(TableOp::Make(TableOp::Kind::kInsert, "INPUT", intruder, 1));
    ASSERT_TRUE(raw->Commit(batch).ok());
  };
  auto fw = Firewall::WithBackend(std::move(fake), options);
  DesiredState v1 = Want({{"filter", "MYAPP-IN", {Accept("10.0.0.0/8")}}},
                         {{"filter", "INPUT", HookRule::Position::kFirst, JumpTo("MYAPP-IN")},
                          {"filter", "INPUT", HookRule::Position::kFirst, Drop("10.66.0.0/16")}});
  ASSERT_TRUE(fw->Apply(v1).ok());
  // The plan deletes both hooks and the chain while a foreign -I INPUT 1 lands after the snapshot was read.
  armed = true;
  auto done = fw->Apply(Want({}));
  ASSERT_TRUE(done.ok()) << done.status().ToString();
  auto rs = fw->List(kV4, "filter");
  ASSERT_TRUE(rs.ok());
  const Chain& input = *rs->FindTable("filter")->FindChain("INPUT");
  EXPECT_EQ(Specs(input),
            (std::vector<std::string>{"-s 203.0.113.99/32 -j DROP", "-j ADMIN", "-s 198.51.100.0/24 -j ACCEPT"}));
  EXPECT_EQ(rs->FindTable("filter")->FindChain("MYAPP-IN"), nullptr);
}

}  // namespace
}  // namespace iptkit::txn
