// The owner planner alone: no service, no threads, no store; the fake backend canonicalizes and holds the kernel.
#include "src/service/owner_planner.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "iptkit/dialect.h"
#include "src/backend/fake/fake_backend.h"
#include "src/txn/firewall_internal.h"

namespace iptkit::service {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using TKind = backend::TableOp::Kind;

constexpr Family v4 = Family::kIPv4;

Rule R(std::string_view spec) {
  Result<Rule> r = ParseRuleSpec(spec, v4);
  EXPECT_TRUE(r.ok()) << spec << ": " << r.status().ToString();
  return r.ok() ? *r : Rule{};
}

store::ManagedRule Managed(const std::string& owner, const std::string& chain, const std::string& spec, int64_t seq,
                           store::Position position = store::Position::kLast) {
  store::ManagedRule m;
  m.seq = seq;
  m.owner = owner;
  m.family = v4;
  m.table = "filter";
  m.chain = chain;
  m.spec = spec;
  m.rule_id = "r" + std::to_string(seq);
  m.position = position;
  return m;
}

OwnerState WithManaged(std::vector<store::ManagedRule> rules) {
  OwnerState state;
  for (store::ManagedRule& m : rules) state.managed[store::KeyOf(m)] = std::move(m);
  return state;
}

class OwnerPlannerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(kernel_
                    .LoadSave(v4,
                              "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
                              "-A INPUT -s 192.168.0.0/16 -j ACCEPT\nCOMMIT\n")
                    .ok());
  }
  txn::BatchPlanner Planner() {
    txn::Snapshots snapshots;
    for (Family f : {Family::kIPv4, Family::kIPv6}) {
      Result<Ruleset> rs = kernel_.Read(f);
      EXPECT_TRUE(rs.ok()) << rs.status().ToString();
      snapshots[f] = rs.ok() ? *rs : Ruleset{};
    }
    return txn::BatchPlanner(&kernel_, std::move(snapshots));
  }
  // Commits what `planner` holds to the fake kernel.
  void Commit(const txn::BatchPlanner& planner) {
    Result<CommitResult> done = txn::CommitBatches(kernel_, planner.Finish(), {});
    ASSERT_TRUE(done.ok()) << done.status().ToString();
  }
  // Another writer's commit of `ops` to filter (not through the planner).
  void CommitForeign(std::vector<backend::TableOp> ops) {
    backend::TableBatch foreign;
    foreign.family = v4;
    foreign.table = "filter";
    foreign.ops = std::move(ops);
    ASSERT_TRUE(kernel_.Commit(foreign).ok());
  }
  std::string Save() {
    Result<Ruleset> rs = kernel_.Read(v4);
    return rs.ok() ? FormatSave(*rs) : rs.status().ToString();
  }

  backend::FakeBackend kernel_;
  OwnerPlanner owners_{&kernel_};
};

TEST_F(OwnerPlannerTest, PlansAnOwnerWithStructuredStepsAndConverges) {
  OwnerState state = WithManaged({Managed("web", "INPUT", "-s 10.0.0.1/32 -j DROP", 1, store::Position::kFirst),
                                  Managed("web", "WEB-IN", "-p tcp -m tcp --dport 443 -j ACCEPT", 2)});
  txn::BatchPlanner planner = Planner();
  Result<OwnerPlan> plan = owners_.Plan("web", state, planner);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_TRUE(plan->changed);
  // The steps carry what they are about as fields: no caller parses the descriptions.
  bool created = false, first = false, in_chain = false;
  for (const PlanStep& step : plan->steps) {
    if (step.kind == PlanStep::Kind::kCreateChain) {
      created = true;
      EXPECT_EQ(step.chain, "WEB-IN");
      EXPECT_EQ(step.rule_id, "");
    } else if (step.chain == "INPUT") {
      first = true;
      EXPECT_EQ(step.kind, PlanStep::Kind::kInsert);
      EXPECT_EQ(step.owner, "web");
      EXPECT_EQ(step.rule_id, "r1");
    } else if (step.chain == "WEB-IN") {
      in_chain = true;
      EXPECT_EQ(step.owner, "web");
      EXPECT_EQ(step.rule_id, "r2");
    }
  }
  EXPECT_TRUE(created && first && in_chain);
  Commit(planner);
  EXPECT_THAT(Save(), HasSubstr("-A INPUT -s 10.0.0.1/32 -m comment --comment \"iptkit:web:r1\" -j DROP\n"
                                "-A INPUT -s 192.168.0.0/16 -j ACCEPT\n"));
  // Planned again on the result: nothing to do.
  txn::BatchPlanner again = Planner();
  Result<OwnerPlan> none = owners_.Plan("web", state, again);
  ASSERT_TRUE(none.ok()) << none.status().ToString();
  EXPECT_FALSE(none->changed);
  EXPECT_TRUE(none->steps.empty());
  EXPECT_TRUE(again.empty());
  // Where its hooks are, for placing unowned rules around them.
  EXPECT_EQ(owners_.HookPosition(v4, "filter", "INPUT", "web", "r1"), HookRule::Position::kFirst);
  EXPECT_EQ(owners_.HookPosition(v4, "filter", "INPUT", "web", "nope"), std::nullopt);
  EXPECT_EQ(owners_.HookPosition(v4, "filter", "INPUT", "zed", "r1"), std::nullopt);
}

TEST_F(OwnerPlannerTest, AFailingOwnerLeavesThePlannerAsItWasAndOthersPlanOnIt) {
  // "app" jumps to a chain that does not exist (a foreign chain that disappeared).
  OwnerState app = WithManaged({Managed("app", "INPUT", "-j DOCKER-USER", 1)});
  OwnerState web = WithManaged({Managed("web", "INPUT", "-s 10.9.9.9/32 -j DROP", 2)});
  txn::BatchPlanner planner = Planner();
  ASSERT_TRUE(owners_.Plan("web", web, planner).ok());
  const txn::PlanMark after_web = planner.mark();
  Result<OwnerPlan> failed = owners_.Plan("app", app, planner);
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.status().details().owner, "app");
  EXPECT_THAT(failed.status().message(), HasSubstr("owner 'app'"));
  EXPECT_THAT(failed.status().message(), HasSubstr("DOCKER-USER"));
  EXPECT_EQ(planner.mark().entries, after_web.entries);
  Commit(planner);
  EXPECT_THAT(Save(), HasSubstr("iptkit:web:r2"));
  EXPECT_THAT(Save(), Not(HasSubstr("iptkit:app:")));
}

TEST_F(OwnerPlannerTest, AHookPushedDownByAForeignInsertMovesBackWithItsCounters) {
  OwnerState state = WithManaged({Managed("web", "INPUT", "-s 10.0.0.1/32 -j DROP", 1, store::Position::kFirst)});
  {
    txn::BatchPlanner planner = Planner();
    ASSERT_TRUE(owners_.Plan("web", state, planner).ok());
    Commit(planner);
  }
  ASSERT_TRUE(kernel_.AddPacketCounts(v4, "filter", "INPUT", 1, 42, 4200).ok());
  CommitForeign({backend::TableOp::Make(TKind::kInsert, "INPUT", R("-s 172.16.0.1/32 -j ACCEPT"), 1)});

  txn::BatchPlanner planner = Planner();
  Result<OwnerPlan> plan = owners_.Plan("web", state, planner);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  std::vector<txn::PlannedTable> planned = planner.Finish();
  ASSERT_EQ(planned.size(), 1u);
  EXPECT_TRUE(planned[0].batch.with_counters);
  Commit(planner);
  Result<Ruleset> rs = kernel_.Read(v4);
  ASSERT_TRUE(rs.ok());
  const Chain* input = rs->FindTable("filter")->FindChain("INPUT");
  ASSERT_EQ(input->rules.size(), 3u) << FormatSave(*rs);
  EXPECT_EQ(input->rules[0].OwnerTag(), (Rule::Tag{"web", "r1"}));
  EXPECT_EQ(input->rules[0].counters.packets, 42u) << "the moved hook lost its counters";
  EXPECT_EQ(input->rules[0].counters.bytes, 4200u);
  EXPECT_EQ(input->rules[1].counters.packets, 0u);
}

// The rules of INPUT as `-A` lines' specs, in order.
std::vector<std::string> InputSpecs(backend::FakeBackend& kernel) {
  std::vector<std::string> out;
  Result<Ruleset> rs = kernel.Read(v4);
  EXPECT_TRUE(rs.ok()) << rs.status().ToString();
  if (!rs.ok()) return out;
  for (const Rule& r : rs->FindTable("filter")->FindChain("INPUT")->rules) out.push_back(FormatRuleSpec(r));
  return out;
}

TEST_F(OwnerPlannerTest, ChangedManagedRulesArePlannedAloneAndDriftIsLeftToTheFullPlan) {
  const store::ManagedRule r1 = Managed("web", "INPUT", "-s 10.0.0.1/32 -j DROP", 1, store::Position::kFirst);
  const store::ManagedRule r2 = Managed("web", "INPUT", "-s 10.0.0.2/32 -j DROP", 2);
  const store::ManagedRule r3 = Managed("web", "INPUT", "-s 10.0.0.3/32 -j DROP", 3, store::Position::kFirst);
  const store::ManagedRule r4 = Managed("web", "INPUT", "-s 10.0.0.4/32 -j DROP", 4);
  {
    txn::BatchPlanner planner = Planner();
    ASSERT_TRUE(owners_.Plan("web", WithManaged({r1, r2}), planner).ok());
    Commit(planner);
  }
  ASSERT_TRUE(kernel_.AddPacketCounts(v4, "filter", "INPUT", 1, 42, 4200).ok());
  // Another writer puts a rule above the first hook and one below the last hook: both hooks are out of place.
  CommitForeign({backend::TableOp::Make(TKind::kInsert, "INPUT", R("-s 172.16.0.1/32 -j ACCEPT"), 1),
                 backend::TableOp::Make(TKind::kAppend, "INPUT", R("-s 172.16.0.2/32 -j ACCEPT"))});

  // r2 goes, r3 (first) and r4 (last) come: only those three are planned, the hooks out of place stay there.
  const OwnerState after = WithManaged({r1, r3, r4});
  txn::BatchPlanner planner = Planner();
  Result<std::optional<OwnerPlan>> plan =
      owners_.PlanChanges("web", after, {{r2, std::nullopt}, {std::nullopt, r3}, {std::nullopt, r4}}, planner);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  ASSERT_TRUE(plan->has_value()) << "planned in full";
  ASSERT_EQ((*plan)->steps.size(), 3u);
  EXPECT_EQ((*plan)->steps[0].kind, PlanStep::Kind::kDelete);
  EXPECT_EQ((*plan)->steps[0].rule_id, "r2");
  EXPECT_EQ((*plan)->steps[1].kind, PlanStep::Kind::kInsert);
  EXPECT_EQ((*plan)->steps[1].rule_id, "r3");
  EXPECT_EQ((*plan)->steps[2].kind, PlanStep::Kind::kAppend);
  EXPECT_EQ((*plan)->steps[2].rule_id, "r4");
  for (const PlanStep& step : (*plan)->steps) EXPECT_EQ(step.owner, "web");
  EXPECT_TRUE((*plan)->changed);
  std::vector<txn::PlannedTable> planned = planner.Finish();
  ASSERT_EQ(planned.size(), 1u);
  EXPECT_EQ(planned[0].batch.ops.size(), 3u) << "an op that is not about a changed rule";
  Commit(planner);
  EXPECT_EQ(InputSpecs(kernel_), (std::vector<std::string>{
                                     "-s 10.0.0.3/32 -m comment --comment \"iptkit:web:r3\" -j DROP",
                                     "-s 172.16.0.1/32 -j ACCEPT",
                                     "-s 10.0.0.1/32 -m comment --comment \"iptkit:web:r1\" -j DROP",
                                     "-s 192.168.0.0/16 -j ACCEPT",
                                     "-s 172.16.0.2/32 -j ACCEPT",
                                     "-s 10.0.0.4/32 -m comment --comment \"iptkit:web:r4\" -j DROP",
                                 }));
  // Unowned rules are placed around the hooks as they are now.
  EXPECT_EQ(owners_.HookPosition(v4, "filter", "INPUT", "web", "r3"), HookRule::Position::kFirst);
  EXPECT_EQ(owners_.HookPosition(v4, "filter", "INPUT", "web", "r4"), HookRule::Position::kLast);
  EXPECT_EQ(owners_.HookPosition(v4, "filter", "INPUT", "web", "r2"), std::nullopt);
  const OwnerPlanner::HookCount counted = owners_.HookCounts(v4, "filter", "INPUT");
  EXPECT_EQ(counted.first, 2u);  // r1, r3
  EXPECT_EQ(counted.last, 1u);   // r4

  // The full plan (a drift check) moves r1 back to the top, with its counters.
  txn::BatchPlanner full = Planner();
  ASSERT_TRUE(owners_.Plan("web", after, full).ok());
  Commit(full);
  Result<Ruleset> rs = kernel_.Read(v4);
  ASSERT_TRUE(rs.ok());
  const Chain* input = rs->FindTable("filter")->FindChain("INPUT");
  ASSERT_EQ(input->rules.size(), 6u) << FormatSave(*rs);
  EXPECT_EQ(input->rules[0].OwnerTag(), (Rule::Tag{"web", "r3"}));
  EXPECT_EQ(input->rules[1].OwnerTag(), (Rule::Tag{"web", "r1"}));
  EXPECT_EQ(input->rules[1].counters.packets, 42u);
  EXPECT_EQ(FormatRuleSpec(input->rules[2]), "-s 172.16.0.1/32 -j ACCEPT");
  // A refreshed rule (its deadline alone changed) that the kernel holds: nothing to do.
  store::ManagedRule refreshed = r4;
  refreshed.deadline_ms = 123;
  txn::BatchPlanner again = Planner();
  Result<std::optional<OwnerPlan>> none = owners_.PlanChanges("web", after, {{r4, refreshed}}, again);
  ASSERT_TRUE(none.ok() && none->has_value());
  EXPECT_FALSE((*none)->changed);
  EXPECT_TRUE(again.empty());
}

TEST_F(OwnerPlannerTest, ChangesThatOnlyTheFullPlanCanPlaceAreLeftToIt) {
  const store::ManagedRule r1 = Managed("web", "INPUT", "-s 10.0.0.1/32 -j DROP", 1);
  const store::ManagedRule r2 = Managed("web", "INPUT", "-s 10.0.0.2/32 -j DROP", 2);
  auto in_full = [&](const OwnerState& state, const std::vector<OwnerPlanner::ManagedChange>& changes) {
    txn::BatchPlanner planner = Planner();
    Result<std::optional<OwnerPlan>> plan = owners_.PlanChanges("web", state, changes, planner);
    EXPECT_TRUE(plan.ok()) << plan.status().ToString();
    EXPECT_TRUE(planner.empty()) << "planned something and then asked for the full plan";
    return plan.ok() && !plan->has_value();
  };
  // Never planned in full: nothing is known of where its rules are.
  EXPECT_TRUE(in_full(WithManaged({r1}), {{std::nullopt, r1}}));
  {
    txn::BatchPlanner planner = Planner();
    ASSERT_TRUE(owners_.Plan("web", WithManaged({r1}), planner).ok());
    Commit(planner);
  }
  // A rule of an owned chain (placed among the document's rules and foreign ones).
  const store::ManagedRule in_chain = Managed("web", "WEB-IN", "-s 10.0.0.3/32 -j DROP", 3);
  EXPECT_TRUE(in_full(WithManaged({r1, in_chain}), {{std::nullopt, in_chain}}));
  // A rule that changes its position.
  store::ManagedRule moved = r1;
  moved.position = store::Position::kFirst;
  EXPECT_TRUE(in_full(WithManaged({moved}), {{r1, moved}}));
  // A new rule the kernel holds already (its tag is there).
  store::ManagedRule again = r2;
  again.rule_id = r1.rule_id;
  EXPECT_TRUE(in_full(WithManaged({r1, again}), {{std::nullopt, again}}));
  // A refreshed rule the kernel does not hold (another writer deleted it).
  EXPECT_TRUE(in_full(WithManaged({r1, r2}), {{r2, r2}}));
  // A document that changed.
  OwnerState with_document = WithManaged({r1, r2});
  with_document.document = DesiredState{"web", DesiredState::Families::kIPv4, {}, {}};
  EXPECT_TRUE(in_full(with_document, {{std::nullopt, r2}}));
  // A forgotten owner (and its hooks).
  owners_.Forget("web");
  EXPECT_EQ(owners_.HookCounts(v4, "filter", "INPUT").last, 0u);
  EXPECT_TRUE(in_full(WithManaged({r1, r2}), {{std::nullopt, r2}}));
}

TEST(CheckJumpTargetTest, AnOwnerMayNotJumpIntoAnotherOwnersChains) {
  std::map<std::string, OwnerState> owners;
  owners["zed"].document = DesiredState{"zed", DesiredState::Families::kIPv4, {{"filter", "ZED-IN", {}}}, {}};
  owners["a-b"].document = DesiredState{"a-b", DesiredState::Families::kIPv4, {{"filter", "A-B-IN", {}}}, {}};
  owners["gone"];  // no state: its prefix is nobody's

  Status s = CheckJumpTarget("app", R("-j ZED-IN"), owners, "owned add to ipv4 filter/INPUT");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("owned add to ipv4 filter/INPUT"));
  EXPECT_THAT(s.message(), HasSubstr("chain 'ZED-IN' of owner 'zed'"));
  EXPECT_EQ(CheckJumpTarget("app", R("-g ZED-IN"), owners, "x").code(), StatusCode::kInvalidArgument);
  // Its own chains, foreign chains, verdicts and owners without state are fine.
  EXPECT_TRUE(CheckJumpTarget("zed", R("-j ZED-IN"), owners, "x").ok());
  EXPECT_TRUE(CheckJumpTarget("app", R("-j APP-IN"), owners, "x").ok());
  EXPECT_TRUE(CheckJumpTarget("app", R("-j DOCKER-USER"), owners, "x").ok());
  EXPECT_TRUE(CheckJumpTarget("app", R("-j GONE-IN"), owners, "x").ok());
  EXPECT_TRUE(CheckJumpTarget("app", R("-s 10.0.0.0/8 -j DROP"), owners, "x").ok());
  // Overlapping prefixes: "A-B-X" has the prefix of owner "a-b" itself.
  EXPECT_TRUE(CheckJumpTarget("a-b", R("-j A-B-X"), owners, "x").ok());

  DesiredState doc{"app", DesiredState::Families::kIPv4, {{"filter", "APP-IN", {R("-j ZED-IN")}}}, {}};
  Status d = CheckJumpTargets(doc, owners);
  EXPECT_EQ(d.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(d.message(), HasSubstr("owned chain filter/APP-IN rule 1"));
}

}  // namespace
}  // namespace iptkit::service
