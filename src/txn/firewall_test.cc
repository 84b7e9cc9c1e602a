#include "iptkit/firewall.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <utility>

#include "src/backend/ops/table_sim.h"
#include "src/txn/firewall_internal.h"
#include "src/txn/txn_test_util.h"

namespace iptkit {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using txn_test::R;
using txn_test::TOp;
using txn_test::v4;
using txn_test::v6;
using TKind = backend::TableOp::Kind;

class FirewallTest : public txn_test::FirewallFixture {
 protected:
  Status CommitStatus(const Transaction& txn) { return fw_->Commit(txn).status(); }
};

// ---- Each op kind ----

TEST_F(FirewallTest, AppendAndInsert) {
  Transaction txn;
  txn.Append(v4, "filter", "INPUT", R("-s 1.2.3.4 -j ACCEPT"))
      .Insert(v4, "filter", "INPUT", 1, R("-p udp --dport 53 -j ACCEPT"));
  Result<CommitResult> r = fw_->Commit(txn);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_FALSE(r->dry_run);
  ASSERT_EQ(r->tables.size(), 1u);
  EXPECT_EQ(r->tables[0].table, "filter");
  EXPECT_THAT(Specs(v4, "filter", "INPUT"),
              ElementsAre("-p udp -m udp --dport 53 -j ACCEPT", "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                          "-p tcp -m tcp --dport 22 -j SSH", "-s 10.0.0.0/8 -j ACCEPT", "-j LOGDROP",
                          "-s 1.2.3.4/32 -j ACCEPT"));
  // Untouched rules keep their counters.
  EXPECT_EQ(ChainOf(v4, "filter", "INPUT").rules[1].counters, (Counters{1, 100}));
}

TEST_F(FirewallTest, DeleteBySpecMatchesTheCanonicalForm) {
  Transaction txn;
  txn.Delete(v4, "filter", "SSH", R("-s 192.168.0.0/255.255.0.0 -j ACCEPT"));
  ASSERT_TRUE(CommitStatus(txn).ok());
  EXPECT_TRUE(Specs(v4, "filter", "SSH").empty());
}

TEST_F(FirewallTest, DeleteAtWithAndWithoutExpect) {
  Transaction txn;
  txn.DeleteAt(v4, "filter", "INPUT", 3, R("-s 10.0.0.0/8 -j ACCEPT")).DeleteAt(v4, "filter", "LOGDROP", 2);
  ASSERT_TRUE(CommitStatus(txn).ok());
  EXPECT_THAT(Specs(v4, "filter", "INPUT"), ElementsAre("-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                                                        "-p tcp -m tcp --dport 22 -j SSH", "-j LOGDROP"));
  EXPECT_THAT(Specs(v4, "filter", "LOGDROP"), ElementsAre("-j LOG --log-prefix \"drop: \""));
}

TEST_F(FirewallTest, Replace) {
  Transaction txn;
  txn.Replace(v4, "filter", "INPUT", 3, R("-s 10.0.0.0/16 -j ACCEPT"), R("-s 10.0.0.0/8 -j ACCEPT"));
  ASSERT_TRUE(CommitStatus(txn).ok());
  EXPECT_EQ(Specs(v4, "filter", "INPUT")[2], "-s 10.0.0.0/16 -j ACCEPT");
  EXPECT_EQ(Specs(v4, "filter", "INPUT").size(), 4u);
}

TEST_F(FirewallTest, ChainLifecycle) {
  Transaction txn;
  txn.CreateChain(v4, "filter", "WEB")
      .Append(v4, "filter", "WEB", R("-p tcp --dport 443 -j ACCEPT"))
      .Append(v4, "filter", "INPUT", R("-j WEB"))
      .RenameChain(v4, "filter", "WEB", "HTTPS");
  ASSERT_TRUE(CommitStatus(txn).ok());
  EXPECT_EQ(Specs(v4, "filter", "INPUT").back(), "-j HTTPS");
  EXPECT_THAT(Specs(v4, "filter", "HTTPS"), ElementsAre("-p tcp -m tcp --dport 443 -j ACCEPT"));

  Transaction del;
  del.Delete(v4, "filter", "INPUT", R("-j HTTPS")).Flush(v4, "filter", "HTTPS").DeleteChain(v4, "filter", "HTTPS");
  ASSERT_TRUE(CommitStatus(del).ok());
  EXPECT_EQ(SaveAll(), before_);
}

TEST_F(FirewallTest, FlushZeroPolicy) {
  Transaction txn;
  txn.Flush(v4, "filter", "SSH").Zero(v4, "filter", "INPUT").SetPolicy(v4, "filter", "INPUT", "ACCEPT");
  ASSERT_TRUE(CommitStatus(txn).ok());
  EXPECT_TRUE(Specs(v4, "filter", "SSH").empty());
  const Chain& input = ChainOf(v4, "filter", "INPUT");
  EXPECT_EQ(*input.policy, "ACCEPT");
  EXPECT_EQ(input.counters, (Counters{0, 0}));
  for (const auto& r : input.rules) EXPECT_EQ(r.counters, (Counters{0, 0}));
  EXPECT_EQ(ChainOf(v4, "filter", "OUTPUT").rules[0].counters.packets, 3u);  // other chains keep counters

  Transaction all;
  all.Flush(v6, "filter");
  ASSERT_TRUE(CommitStatus(all).ok());
  EXPECT_TRUE(Specs(v6, "filter", "INPUT").empty());
}

TEST_F(FirewallTest, JumpToChainCreatedEarlierInTheSameTransaction) {
  Transaction txn;
  txn.CreateChain(v4, "filter", "LATE").Append(v4, "filter", "INPUT", R("-j LATE"));
  EXPECT_TRUE(CommitStatus(txn).ok());

  Transaction wrong_order;
  wrong_order.Append(v4, "filter", "INPUT", R("-j LATER")).CreateChain(v4, "filter", "LATER");
  Status s = CommitStatus(wrong_order);
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("op 1 (append ipv4 filter INPUT)"));
}

TEST_F(FirewallTest, EmptyTransactionSendsNothing) {
  Result<CommitResult> r = fw_->Commit(Transaction{});
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->tables.empty());
  EXPECT_EQ(fault_->commit_calls(), 0);
}

// ---- Validation ----

TEST_F(FirewallTest, ValidationErrorsHaveSpecificCodesAndSendNothing) {
  Rule newline_comment = R("-j ACCEPT");
  newline_comment.matches.push_back(Match{"comment", {Option{"comment", false, {"a\nb"}}}});
  Rule fragment_v6 = R("-j ACCEPT", v6);
  fragment_v6.fragment = Field{};

  struct Case {
    std::string name;
    Transaction txn;
    StatusCode code;
    std::string part;
  };
  std::vector<Case> cases;
  auto add = [&](std::string name, StatusCode code, std::string part) -> Transaction& {
    return cases.emplace_back(Case{std::move(name), {}, code, std::move(part)}).txn;
  };
  add("missing chain", StatusCode::kNotFound, "chain 'NOPE'").Append(v4, "filter", "NOPE", R("-j ACCEPT"));
  add("jump to missing chain", StatusCode::kNotFound, "NOPE").Append(v4, "filter", "INPUT", R("-j NOPE"));
  add("insert index 0", StatusCode::kInvalidArgument, "index 0").Insert(v4, "filter", "INPUT", 0, R("-j ACCEPT"));
  add("insert index too big", StatusCode::kInvalidArgument, "out of range 1..5")
      .Insert(v4, "filter", "INPUT", 6, R("-j ACCEPT"));
  add("delete missing rule", StatusCode::kNotFound, "no rule '-j DROP'").Delete(v4, "filter", "INPUT", R("-j DROP"));
  add("delete-at too big", StatusCode::kNotFound, "no rule at index 9").DeleteAt(v4, "filter", "INPUT", 9);
  add("delete-at wrong expect", StatusCode::kFailedPrecondition, "expected '-j DROP'")
      .DeleteAt(v4, "filter", "INPUT", 1, R("-j DROP"));
  add("replace wrong expect", StatusCode::kFailedPrecondition, "is '-j LOGDROP'")
      .Replace(v4, "filter", "INPUT", 4, R("-j ACCEPT"), R("-j DROP"));
  add("delete-at of a duplicate", StatusCode::kFailedPrecondition, "also occurs earlier, at 4")
      .Append(v4, "filter", "INPUT", R("-j LOGDROP"))
      .DeleteAt(v4, "filter", "INPUT", 5);
  add("create existing", StatusCode::kAlreadyExists, "'SSH' already exists").CreateChain(v4, "filter", "SSH");
  add("create bad name", StatusCode::kInvalidArgument, "")
      .CreateChain(v4, "filter", "THIS-NAME-IS-LONGER-THAN-28-BYTES");
  add("create target name", StatusCode::kInvalidArgument, "").CreateChain(v4, "filter", "DNAT");
  add("delete builtin", StatusCode::kInvalidArgument, "builtin chain 'INPUT'").DeleteChain(v4, "filter", "INPUT");
  add("delete missing chain", StatusCode::kNotFound, "GONE").DeleteChain(v4, "filter", "GONE");
  add("delete non-empty", StatusCode::kFailedPrecondition, "not empty")
      .CreateChain(v4, "filter", "FULL")
      .Append(v4, "filter", "FULL", R("-j ACCEPT"))
      .DeleteChain(v4, "filter", "FULL");
  add("rename onto existing", StatusCode::kAlreadyExists, "'LOGDROP'").RenameChain(v4, "filter", "SSH", "LOGDROP");
  add("rename builtin", StatusCode::kInvalidArgument, "builtin").RenameChain(v4, "filter", "INPUT", "IN");
  add("policy on user chain", StatusCode::kInvalidArgument, "user chain 'SSH'").SetPolicy(v4, "filter", "SSH", "DROP");
  add("bad policy", StatusCode::kInvalidArgument, "'RETURN'").SetPolicy(v4, "filter", "INPUT", "RETURN");
  add("DNAT in filter", StatusCode::kInvalidArgument, "DNAT")
      .Append(v4, "filter", "INPUT", R("-p tcp -j DNAT --to-destination 10.0.0.1"));
  add("MASQUERADE in PREROUTING", StatusCode::kInvalidArgument, "MASQUERADE")
      .Append(v4, "nat", "PREROUTING", R("-j MASQUERADE"));
  add("unknown table", StatusCode::kInvalidArgument, "'bogus'").Flush(v4, "bogus");
  add("newline in comment", StatusCode::kInvalidArgument, "op 1 (append")
      .Append(v4, "filter", "INPUT", newline_comment);
  add("-f in IPv6", StatusCode::kInvalidArgument, "").Append(v6, "filter", "INPUT", fragment_v6);
  add("jump loop", StatusCode::kInvalidArgument, "loop")
      .Append(v4, "filter", "SSH", R("-j LOGDROP"))
      .Append(v4, "filter", "LOGDROP", R("-j SSH"));
  add("later op fails, earlier table ok", StatusCode::kNotFound, "op 2 (append ipv4 nat POSTROUTING2)")
      .Append(v4, "filter", "INPUT", R("-j ACCEPT"))
      .Append(v4, "nat", "POSTROUTING2", R("-j ACCEPT"));
  for (const auto& c : cases) {
    Status s = CommitStatus(c.txn);
    EXPECT_EQ(s.code(), c.code) << c.name << ": " << s.ToString();
    EXPECT_THAT(s.message(), HasSubstr(c.part)) << c.name;
    EXPECT_EQ(fault_->commit_calls(), 0) << c.name;
  }
  EXPECT_EQ(SaveAll(), before_);
}

TEST_F(FirewallTest, UnrepresentableTableIsNotRewritten) {
  ASSERT_TRUE(fake_->MarkUnrepresentable(v4, "nat", "rule count differs from the kernel's").ok());
  Transaction txn;
  txn.Append(v4, "nat", "POSTROUTING", R("-j MASQUERADE"));
  Status s = CommitStatus(txn);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("rule count differs"));
  EXPECT_EQ(fault_->commit_calls(), 0);
}

TEST_F(FirewallTest, DeletingAReferencedChainListsEveryReference) {
  Transaction txn;
  txn.DeleteChain(v4, "filter", "SSH");
  Status s = CommitStatus(txn);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("referenced by 2 rule(s): filter INPUT 2: -p tcp -m tcp --dport 22 -j SSH; "
                                     "filter OUTPUT 1: -j SSH"));
  EXPECT_THAT(s.message(), HasSubstr("op 1 (delete_chain ipv4 filter SSH)"));
  EXPECT_EQ(fault_->commit_calls(), 0);
}

TEST_F(FirewallTest, CascadeDeletesReferencesInTheSameCommit) {
  Transaction txn;
  txn.DeleteChain(v4, "filter", "SSH", /*cascade=*/true);
  Result<CommitResult> r = fw_->Commit(txn);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(fault_->commit_calls(), 1);
  EXPECT_THAT(Specs(v4, "filter", "INPUT"), ElementsAre("-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                                                        "-s 10.0.0.0/8 -j ACCEPT", "-j LOGDROP"));
  EXPECT_TRUE(Specs(v4, "filter", "OUTPUT").empty());
  EXPECT_EQ(fake_->Read(v4, "filter")->tables[0].FindChain("SSH"), nullptr);
  EXPECT_EQ(ChainOf(v4, "filter", "INPUT").rules[2].counters, (Counters{1, 100}));
}

// ---- Dry run ----

TEST_F(FirewallTest, DryRunReturnsTheExactTextAndSendsNothing) {
  bool hook_called = false;
  hook_ = [&] { hook_called = true; };
  Transaction txn;
  txn.Append(v4, "filter", "INPUT", R("-s 1.2.3.4 -j ACCEPT"))
      .DeleteAt(v4, "filter", "INPUT", 3, R("-s 10.0.0.0/8 -j ACCEPT"))
      .Append(v4, "nat", "POSTROUTING", R("-o eth1 -j MASQUERADE"))
      .SetPolicy(v4, "filter", "INPUT", "ACCEPT")
      .CreateChain(v4, "filter", "NEW");
  Result<CommitResult> r = fw_->Commit(txn, {.dry_run = true});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->dry_run);
  ASSERT_EQ(r->tables.size(), 2u);
  EXPECT_EQ(r->tables[0].family, v4);
  EXPECT_EQ(r->tables[0].table, "filter");
  EXPECT_EQ(r->tables[0].restore_text,
            "*filter\n"
            "-A INPUT -s 1.2.3.4/32 -j ACCEPT\n"
            "-C INPUT -s 10.0.0.0/8 -j ACCEPT\n"
            "-D INPUT -s 10.0.0.0/8 -j ACCEPT\n"
            "-P INPUT ACCEPT\n"
            "-N NEW\n"
            "COMMIT\n");
  EXPECT_EQ(r->tables[1].table, "nat");
  EXPECT_EQ(r->tables[1].restore_text, "*nat\n-A POSTROUTING -o eth1 -j MASQUERADE\nCOMMIT\n");
  EXPECT_EQ(fault_->commit_calls(), 0);
  EXPECT_FALSE(hook_called);
  EXPECT_EQ(SaveAll(), before_);
}

TEST_F(FirewallTest, CommitReturnsWhatWasSent) {
  Transaction txn;
  txn.Append(v6, "filter", "OUTPUT", R("-d 2001:db8::1 -j DROP", v6));
  Result<CommitResult> r = fw_->Commit(txn);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->tables.size(), 1u);
  EXPECT_EQ(r->tables[0].family, v6);
  EXPECT_EQ(r->tables[0].restore_text, "*filter\n-A OUTPUT -d 2001:db8::1/128 -j DROP\nCOMMIT\n");
}

// CommitOptions::progress / RestoreOptions::progress: every stage in order, one commit pair per table.
TEST_F(FirewallTest, ProgressReportsEveryStageInOrder) {
  using Stage = CommitProgress::Stage;
  std::vector<std::string> seen;
  auto record = [&seen](const CommitProgress& p) {
    switch (p.stage) {
      case Stage::kParsed:
        seen.push_back("parsed " + std::to_string(p.rules));
        break;
      case Stage::kCanonicalized:
        seen.push_back("canonicalized " + std::to_string(p.rules));
        break;
      case Stage::kSnapshotRead:
        seen.push_back("read");
        break;
      case Stage::kPlanned:
        seen.push_back("planned " + std::to_string(p.tables) + " " + std::to_string(p.ops));
        break;
      case Stage::kCommitting:
      case Stage::kCommitted:
        seen.push_back(std::string(p.stage == Stage::kCommitting ? "committing " : "committed ") +
                       std::to_string(p.tables) + " " + std::to_string(p.ops));
        break;
    }
  };
  Transaction txn;
  txn.Append(v4, "filter", "INPUT", R("-j ACCEPT"))
      .Append(v4, "filter", "OUTPUT", R("-j ACCEPT"))
      .Append(v4, "nat", "POSTROUTING", R("-o eth1 -j MASQUERADE"));
  ASSERT_TRUE(fw_->Commit(txn, {.progress = record}).ok());
  EXPECT_THAT(seen, ElementsAre("read", "planned 2 3", "committing 2 3", "committed 2 3"));

  seen.clear();
  ASSERT_TRUE(fw_->Commit(txn, {.progress = record, .dry_run = true}).ok());
  EXPECT_THAT(seen, ElementsAre("read", "planned 2 3"));

  seen.clear();
  Firewall::RestoreOptions restore;
  restore.noflush = true;
  restore.progress = record;
  ASSERT_TRUE(fw_->Restore(v4, "*raw\n-A PREROUTING -j ACCEPT\n-A OUTPUT -j ACCEPT\nCOMMIT\n", restore).ok());
  EXPECT_THAT(seen, ElementsAre("parsed 2", "read", "planned 1 2", "committing 1 2", "committed 1 2"));

  seen.clear();
  DesiredState desired;
  desired.owner = "prog";
  desired.chains.push_back({"filter", "PROG-IN", {R("-j RETURN"), R("-j ACCEPT")}});
  ASSERT_TRUE(fw_->Apply(desired, {.progress = record}).ok());
  ASSERT_EQ(seen.size(), 5u);
  EXPECT_EQ(seen[0], "canonicalized 2");
  EXPECT_EQ(seen[1], "read");
}

TEST_F(FirewallTest, ZeroingTableCommitsAfterTheOthers) {
  Transaction txn;
  txn.Zero(v4, "filter").Append(v4, "nat", "POSTROUTING", R("-o eth1 -j MASQUERADE"));
  Result<CommitResult> r = fw_->Commit(txn, {.dry_run = true});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->tables.size(), 2u);
  EXPECT_EQ(r->tables[0].table, "nat");
  EXPECT_EQ(r->tables[1].restore_text, "*filter\n-Z\nCOMMIT\n");
}

// ---- Multi-table failure and rollback ----

Transaction BigTransaction() {
  Transaction txn;
  txn.Append(v4, "filter", "INPUT", R("-s 1.2.3.4 -j ACCEPT"))
      .Append(v4, "filter", "INPUT", R("-j LOGDROP"))  // a duplicate: its inverse must remove this one
      .Insert(v4, "filter", "INPUT", 1, R("-p udp --dport 53 -j ACCEPT"))
      .Delete(v4, "filter", "INPUT", R("-s 10.0.0.0/8 -j ACCEPT"))
      .Replace(v4, "filter", "LOGDROP", 1, R("-j LOG --log-prefix \"dropped: \""))
      .CreateChain(v4, "filter", "WEB")
      .Append(v4, "filter", "WEB", R("-p tcp --dport 443 -j ACCEPT"))
      .Append(v4, "filter", "FORWARD", R("-j WEB"))
      .RenameChain(v4, "filter", "LOGDROP", "LOGDROP2")
      .DeleteChain(v4, "filter", "SSH", true)
      .SetPolicy(v4, "filter", "INPUT", "ACCEPT")
      .Flush(v6, "filter")
      .SetPolicy(v6, "filter", "FORWARD", "ACCEPT")
      .Append(v4, "nat", "POSTROUTING", R("-o eth1 -j MASQUERADE"));
  return txn;
}

TEST_F(FirewallTest, FailureOfALaterTableRollsBackEveryEarlierTableExactly) {
  fault_->FailTableCommits(v4, "nat", Status::InvalidArgument("iptables-restore: line 2 failed"));
  Status s = CommitStatus(BigTransaction());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
  EXPECT_THAT(s.message(), HasSubstr("commit of ipv4 nat (table 3 of 3) failed"));
  EXPECT_THAT(s.message(), HasSubstr("rolled back ipv6 filter, ipv4 filter"));
  EXPECT_THAT(s.message(), HasSubstr("line 2 failed"));
  EXPECT_EQ(fault_->commit_calls(), 5);  // 3 forward (the last failed) + 2 inverses
  EXPECT_EQ(SaveAll(), before_);         // byte-identical, counters and policies included
}

TEST_F(FirewallTest, RollbackAlsoAcrossSuccessfulCommitsOfTheSameTransaction) {
  // Transaction commits v4 filter, then v6 filter fails.
  fault_->FailTableCommits(v6, "filter", Status::Unavailable("xtables lock busy"));
  Status s = CommitStatus(BigTransaction());
  EXPECT_EQ(s.code(), StatusCode::kUnavailable);
  EXPECT_THAT(s.message(), HasSubstr("ipv6 filter (table 2 of 3) failed, rolled back ipv4 filter"));
  EXPECT_EQ(SaveAll(), before_);
}

TEST_F(FirewallTest, FailedInverseIsInternalAndSaysWhatIsLeft) {
  fault_->FailTableCommits(v4, "nat", Status::InvalidArgument("kernel rejected nat"));
  // Commits: 1 v4 filter, 2 v6 filter, 3 nat (fails), 4 inverse v6 filter (fails), 5 inverse v4 filter.
  fault_->FailNthCommit(4, Status::FailedPrecondition("-C guard missed"));
  Status s = CommitStatus(BigTransaction());
  EXPECT_EQ(s.code(), StatusCode::kInternal) << s.ToString();
  EXPECT_THAT(s.message(), HasSubstr("kernel rejected nat"));
  EXPECT_THAT(s.message(), HasSubstr("rollback of ipv6 filter failed: FAILED_PRECONDITION: -C guard missed"));
  EXPECT_THAT(s.message(), HasSubstr("left changed: ipv6 filter"));
  EXPECT_THAT(s.message(), HasSubstr("rolled back: ipv4 filter"));
  EXPECT_EQ(fault_->commit_calls(), 5);
  EXPECT_EQ(Save(v4, true), before_.substr(0, Save(v4, true).size()));
  EXPECT_NE(SaveAll(), before_);
}

TEST_F(FirewallTest, RollbackInverseIsGuardedAgainstForeignChanges) {
  // A foreign writer deletes the rule iptkit appended before the rollback runs: the guarded inverse refuses
  // instead of deleting something else.
  fault_->FailTableCommits(v4, "nat", Status::InvalidArgument("nat rejected"));
  fault_->SetBeforeCommit([&](const backend::TableBatch& b) {
    if (b.table == "nat") Foreign(TOp(TKind::kDelete, "INPUT", "-s 1.2.3.4/32 -j ACCEPT"));
  });
  Transaction txn;
  txn.Append(v4, "filter", "INPUT", R("-s 1.2.3.4 -j ACCEPT")).Append(v4, "nat", "POSTROUTING", R("-j MASQUERADE"));
  Status s = CommitStatus(txn);
  EXPECT_EQ(s.code(), StatusCode::kInternal);
  EXPECT_THAT(s.message(), HasSubstr("left changed: ipv4 filter"));
  EXPECT_EQ(SaveAll(), before_);  // the foreign delete happened to undo it; nothing else was touched
}

TEST_F(FirewallTest, ZeroedCountersAreReportedWhenRollingBack) {
  fault_->FailTableCommits(v4, "nat", Status::InvalidArgument("nat rejected"));
  Transaction txn;
  txn.Zero(v4, "filter", "SSH").Zero(v4, "nat");  // both zero: nat still commits last
  txn.Append(v4, "nat", "POSTROUTING", R("-j MASQUERADE"));
  Status s = CommitStatus(txn);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("counters zeroed in ipv4 filter could not be restored"));
}

// ---- Position guards against a concurrent writer ----

TEST_F(FirewallTest, DeleteAtDeletesTheRightRuleAfterAForeignInsert) {
  hook_ = [&] { Foreign(TOp(TKind::kInsert, "INPUT", "-s 6.6.6.6/32 -j DROP", 1)); };
  Transaction txn;
  txn.DeleteAt(v4, "filter", "INPUT", 3, R("-s 10.0.0.0/8 -j ACCEPT"));
  ASSERT_TRUE(CommitStatus(txn).ok());
  EXPECT_THAT(Specs(v4, "filter", "INPUT"),
              ElementsAre("-s 6.6.6.6/32 -j DROP", "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                          "-p tcp -m tcp --dport 22 -j SSH", "-j LOGDROP"));
}

TEST_F(FirewallTest, DeleteAtWithoutExpectUsesTheSnapshotsRule) {
  hook_ = [&] { Foreign(TOp(TKind::kInsert, "INPUT", "-s 6.6.6.6/32 -j DROP", 1)); };
  Transaction txn;
  txn.DeleteAt(v4, "filter", "INPUT", 3);
  ASSERT_TRUE(CommitStatus(txn).ok());
  EXPECT_THAT(Specs(v4, "filter", "INPUT"),
              ElementsAre("-s 6.6.6.6/32 -j DROP", "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                          "-p tcp -m tcp --dport 22 -j SSH", "-j LOGDROP"));
}

TEST_F(FirewallTest, ReplaceReplacesTheRightRuleAfterAForeignInsert) {
  hook_ = [&] { Foreign(TOp(TKind::kInsert, "INPUT", "-s 6.6.6.6/32 -j DROP", 1)); };
  Transaction txn;
  txn.Replace(v4, "filter", "INPUT", 3, R("-s 10.0.0.0/16 -j ACCEPT"), R("-s 10.0.0.0/8 -j ACCEPT"));
  ASSERT_TRUE(CommitStatus(txn).ok());
  std::vector<std::string> specs = Specs(v4, "filter", "INPUT");
  EXPECT_EQ(std::count(specs.begin(), specs.end(), "-s 10.0.0.0/8 -j ACCEPT"), 0);
  EXPECT_EQ(std::count(specs.begin(), specs.end(), "-s 10.0.0.0/16 -j ACCEPT"), 1);
  EXPECT_EQ(specs[0], "-s 6.6.6.6/32 -j DROP");
  EXPECT_EQ(specs.size(), 5u);
}

TEST_F(FirewallTest, ExpectedRuleGoneMeansFailedPreconditionAndNothingElseChanges) {
  hook_ = [&] {
    // The foreign writer replaces rule 3: position 3 now holds a different rule.
    Foreign(TOp(TKind::kReplace, "INPUT", "-s 172.16.0.0/12 -j ACCEPT", 3));
  };
  Transaction txn;
  txn.DeleteAt(v4, "filter", "INPUT", 3, R("-s 10.0.0.0/8 -j ACCEPT"));
  Status s = CommitStatus(txn);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.ToString();
  EXPECT_THAT(s.message(), HasSubstr("-C INPUT -s 10.0.0.0/8 -j ACCEPT"));
  EXPECT_THAT(Specs(v4, "filter", "INPUT"),
              ElementsAre("-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT", "-p tcp -m tcp --dport 22 -j SSH",
                          "-s 172.16.0.0/12 -j ACCEPT", "-j LOGDROP"));
}

TEST_F(FirewallTest, LockIsHeldFromReadToCommit) {
  bool seen = false;
  hook_ = [&] {
    seen = true;
    EXPECT_TRUE(fake_->locked());
  };
  Transaction txn;
  txn.Append(v4, "filter", "INPUT", R("-j ACCEPT"));
  ASSERT_TRUE(CommitStatus(txn).ok());
  EXPECT_TRUE(seen);
  EXPECT_FALSE(fake_->locked());
}

TEST_F(FirewallTest, SnapshotReadFailureIsReported) {
  fault_->FailReads(Status::Internal("iptables-save printed 'Parsing nftables rule failed'"));
  Transaction txn;
  txn.Append(v4, "filter", "INPUT", R("-j ACCEPT"));
  Status s = CommitStatus(txn);
  EXPECT_EQ(s.code(), StatusCode::kInternal);
  EXPECT_THAT(s.message(), HasSubstr("reading the ipv4 snapshot"));
  EXPECT_EQ(fault_->commit_calls(), 0);
}

// ---- Restore ----

constexpr std::string_view kRestoreText =
    "*filter\n"
    ":INPUT ACCEPT [0:0]\n"
    ":FORWARD DROP [0:0]\n"
    ":OUTPUT ACCEPT [0:0]\n"
    ":NEW - [0:0]\n"
    "-A INPUT -j NEW\n"
    "-A NEW -s 192.0.2.0/24 -j ACCEPT\n"
    "COMMIT\n"
    "*nat\n"
    ":PREROUTING ACCEPT [0:0]\n"
    ":INPUT ACCEPT [0:0]\n"
    ":OUTPUT ACCEPT [0:0]\n"
    ":POSTROUTING ACCEPT [0:0]\n"
    "COMMIT\n";

TEST_F(FirewallTest, RestoreReplacesTheNamedTables) {
  ASSERT_TRUE(fake_
                  ->Commit([] {
                    backend::TableBatch b;
                    b.table = "raw";
                    b.ops.push_back(TOp(TKind::kAppend, "PREROUTING", "-j NOTRACK"));
                    return b;
                  }())
                  .ok());
  Result<CommitResult> r = fw_->Restore(v4, kRestoreText, {});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->tables.size(), 2u);
  Result<std::string> raw = fw_->Save(v4, "raw");
  ASSERT_TRUE(raw.ok());
  EXPECT_THAT(*raw, HasSubstr("-A PREROUTING -j NOTRACK"));  // tables the text does not name stay
  Result<Ruleset> rs = fake_->Read(v4);
  rs->tables.erase(rs->tables.begin());  // raw
  EXPECT_EQ(FormatSave(*rs), kRestoreText);
}

TEST_F(FirewallTest, RestoreWithCountersTakesThem) {
  std::string text =
      "*filter\n:INPUT ACCEPT [10:1000]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n"
      "[5:500] -A INPUT -j ACCEPT\nCOMMIT\n";
  ASSERT_TRUE(fw_->Restore(v4, text, {.counters = true}).ok());
  Result<std::string> saved = fw_->Save(v4, "filter", true);
  ASSERT_TRUE(saved.ok());
  EXPECT_EQ(*saved, text);
  ASSERT_TRUE(fw_->Restore(v4, text, {}).ok());
  EXPECT_THAT(*fw_->Save(v4, "filter", true), HasSubstr("[0:0] -A INPUT -j ACCEPT"));
}

TEST_F(FirewallTest, RestoreFailureRollsBackToThePreimage) {
  fault_->FailTableCommits(v4, "nat", Status::InvalidArgument("nat rejected"));
  Status s = fw_->Restore(v4, kRestoreText, {}).status();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("rolled back ipv4 filter"));
  EXPECT_EQ(SaveAll(), before_);  // counters included: the pre-image is restored with counters
  ASSERT_EQ(fault_->attempted().size(), 3u);
  EXPECT_TRUE(fault_->attempted()[2].flush_table);
  EXPECT_TRUE(fault_->attempted()[2].with_counters);
}

TEST_F(FirewallTest, RestoreDryRunAndValidation) {
  Result<CommitResult> r = fw_->Restore(v4, kRestoreText, {.dry_run = true});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->dry_run);
  EXPECT_EQ(r->tables.size(), 2u);
  EXPECT_EQ(fault_->commit_calls(), 0);

  std::string bad = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j MISSING\nCOMMIT\n";
  EXPECT_EQ(fw_->Restore(v4, bad, {}).status().code(), StatusCode::kNotFound);
  std::string dnat = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp -j DNAT --to-destination 10.0.0.1\nCOMMIT\n";
  EXPECT_EQ(fw_->Restore(v4, dnat, {}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(fw_->Restore(v4, "# nothing\n", {}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(fault_->commit_calls(), 0);
  EXPECT_EQ(SaveAll(), before_);
}

TEST_F(FirewallTest, RestoreRefusesUnrepresentableTables) {
  ASSERT_TRUE(fake_->MarkUnrepresentable(v4, "nat", "lossy save").ok());
  EXPECT_EQ(fw_->Restore(v4, kRestoreText, {}).status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(fw_->Restore(v4, kRestoreText, {.noflush = true}).status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(fault_->commit_calls(), 0);
}

TEST_F(FirewallTest, RestoreNoflushAppendsCreatesAndNeverDeclaresChains) {
  std::string text =
      "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:NEW - [0:0]\n:SSH - [0:0]\n"
      "-A INPUT -j NEW\n-A NEW -j RETURN\n-A SSH -s 172.16.0.0/12 -j ACCEPT\nCOMMIT\n";
  Result<CommitResult> dry = fw_->Restore(v4, text, {.noflush = true, .dry_run = true});
  ASSERT_TRUE(dry.ok()) << dry.status().ToString();
  ASSERT_EQ(dry->tables.size(), 1u);
  EXPECT_EQ(dry->tables[0].restore_text,
            "*filter\n-N NEW\n-A INPUT -j NEW\n-A NEW -j RETURN\n-A SSH -s 172.16.0.0/12 -j ACCEPT\nCOMMIT\n");

  ASSERT_TRUE(fw_->Restore(v4, text, {.noflush = true}).ok());
  EXPECT_EQ(*ChainOf(v4, "filter", "INPUT").policy, "DROP");  // the admin's policy stays
  EXPECT_THAT(Specs(v4, "filter", "SSH"),
              ElementsAre("-s 192.168.0.0/16 -j ACCEPT", "-s 172.16.0.0/12 -j ACCEPT"));  // not flushed
  EXPECT_EQ(Specs(v4, "filter", "INPUT").back(), "-j NEW");
  EXPECT_EQ(ChainOf(v4, "filter", "SSH").rules[0].counters.packets, 5u);  // counters survive
}

TEST_F(FirewallTest, RestoreNoflushRollsBackWithGuardedInverse) {
  fault_->FailTableCommits(v4, "nat", Status::InvalidArgument("nat rejected"));
  std::string text =
      "*filter\n:NEW - [0:0]\n:SSH - [0:0]\n-A NEW -j RETURN\n-A SSH -s 172.16.0.0/12 -j ACCEPT\nCOMMIT\n"
      "*nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -o eth9 -j MASQUERADE\nCOMMIT\n";
  Status s = fw_->Restore(v4, text, {.noflush = true}).status();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
  EXPECT_EQ(SaveAll(), before_);
  EXPECT_FALSE(fault_->attempted()[2].flush_table);  // the inverse of a noflush restore is op by op
}

// ---- Queries ----

TEST_F(FirewallTest, ListSaveCheckCanonicalizeInfo) {
  Result<Ruleset> all = fw_->List(v4);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->tables.size(), 2u);
  Result<Ruleset> nat = fw_->List(v4, "nat");
  ASSERT_TRUE(nat.ok());
  ASSERT_EQ(nat->tables.size(), 1u);
  EXPECT_EQ(nat->tables[0].chains[3].rules[0].counters, (Counters{9, 900}));

  EXPECT_EQ(*fw_->Save(v4), txn_test::kBaseV4);
  EXPECT_THAT(*fw_->Save(v4, "filter", true), HasSubstr("[1:100] -A INPUT -m conntrack"));

  EXPECT_TRUE(*fw_->Check(v4, "filter", "SSH", R("-s 192.168.0.0/16 -j ACCEPT")));
  EXPECT_FALSE(*fw_->Check(v4, "filter", "SSH", R("-s 192.168.1.1 -j ACCEPT")));
  EXPECT_TRUE(*fw_->Check(v4, "filter", "INPUT", R("-s 10.0.0.0/255.0.0.0 -j ACCEPT")));
  EXPECT_EQ(fw_->Check(v4, "filter", "NOPE", R("-j ACCEPT")).status().code(), StatusCode::kNotFound);

  Result<Rule> canon = fw_->Canonicalize(v4, "filter", R("-p tcp --dport 22 -s 1.2.3.4 -j ACCEPT"));
  ASSERT_TRUE(canon.ok());
  EXPECT_EQ(FormatRuleSpec(*canon), "-s 1.2.3.4/32 -p tcp -m tcp --dport 22 -j ACCEPT");

  Result<FirewallInfo> info = fw_->Info();
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->backend, "fake");
  EXPECT_EQ(info->netns, "test-ns");
  EXPECT_EQ(&fw_->backend(), fault_);
}

// ---- Issue 9: lossy tables, one validation path, errors with structure ----

TEST_F(FirewallTest, ListAndSaveRefuseALossyTableUnlessAllowed) {
  Ruleset rs = *fake_->Read(v4);
  Rule& lossy = rs.FindTable("filter")->FindChain("INPUT")->rules[1];
  lossy.lossy = "iptables-legacy-save prints it as '-p tcp -m tcp', which loads as a different rule";
  lossy.kernel_form = "kernel bytes";
  fake_->SetRuleset(std::move(rs));

  Result<Ruleset> listed = fw_->List(v4);
  ASSERT_FALSE(listed.ok());
  EXPECT_EQ(listed.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(listed.status().details().reason, "lossy");
  EXPECT_EQ(listed.status().details().table, "filter");
  EXPECT_EQ(listed.status().details().chain, "INPUT");
  EXPECT_EQ(listed.status().details().rule, 2);
  EXPECT_THAT(listed.status().message(), HasSubstr("loads as a different rule"));
  // Other tables of the family are not affected.
  EXPECT_TRUE(fw_->List(v4, "nat").ok());

  Result<std::string> saved = fw_->Save(v4, "filter");
  ASSERT_FALSE(saved.ok());
  EXPECT_EQ(saved.status().code(), StatusCode::kFailedPrecondition);
  saved = fw_->Save(v4, "filter", SaveOptions{.allow_lossy = true});
  ASSERT_TRUE(saved.ok()) << saved.status().ToString();
  EXPECT_THAT(*saved, HasSubstr("\n# iptkit: lossy rule 2 of INPUT: iptables-legacy-save prints it as"));
  listed = fw_->List(v4, "filter", {.allow_lossy = true});
  ASSERT_TRUE(listed.ok());
  EXPECT_FALSE(listed->FindTable("filter")->FindChain("INPUT")->rules[1].lossy.empty());

  // An unrepresentable table is refused the same way.
  rs = *fake_->Read(v4);
  rs.FindTable("nat")->unrepresentable_reason = "an nft set lookup";
  fake_->SetRuleset(std::move(rs));
  saved = fw_->Save(v4, "nat");
  ASSERT_FALSE(saved.ok());
  EXPECT_EQ(saved.status().details().reason, "unrepresentable");
}

TEST_F(FirewallTest, TargetPlacementIsCheckedForEveryEntryPointNamingTheTarget) {
  Transaction txn;
  txn.Append(v4, "filter", "INPUT", R("-p tcp -j DNAT --to-destination 10.0.0.1"));
  Status s = CommitStatus(txn);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
  EXPECT_EQ(s.details().token, "DNAT") << s.ToString();
  EXPECT_EQ(s.message().find("IPTKIT"), std::string::npos) << s.ToString();
  EXPECT_EQ(s.message().find("line"), std::string::npos) << s.ToString();
  // The same check for a restore text, naming its line.
  Result<CommitResult> restored =
      fw_->Restore(v4, "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\n-A INPUT -j MASQUERADE\nCOMMIT\n", {});
  ASSERT_FALSE(restored.ok());
  EXPECT_EQ(restored.status().details().line, 4) << restored.status().ToString();
  EXPECT_EQ(restored.status().details().token, "MASQUERADE") << restored.status().ToString();
  EXPECT_EQ(SaveAll(), before_);
}

TEST_F(FirewallTest, CountersGoOnlyWithAddingOps) {
  Transaction txn;
  txn.Append(v4, "filter", "INPUT", R("-c 7 9 -s 192.0.2.10 -j ACCEPT"));
  // Accepted (the restore backend sends it as typed, -c first, as `iptables -A INPUT -c 7 9 ...`; the kernel test
  // is tests/integration/differential_test.cc).
  Result<CommitResult> r = fw_->Commit(txn);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  // -C and -D refuse -c, as iptables does.
  Result<bool> found = fw_->Check(v4, "filter", "INPUT", R("-c 7 9 -s 192.0.2.10 -j ACCEPT"));
  ASSERT_FALSE(found.ok());
  EXPECT_EQ(found.status().details().token, "-c");
  Transaction del;
  del.Delete(v4, "filter", "INPUT", R("-c 7 9 -s 192.0.2.10 -j ACCEPT"));
  EXPECT_EQ(CommitStatus(del).code(), StatusCode::kInvalidArgument);
}

// ---- What a plan reads on a backend that commits the snapshot it planned on (native-legacy) ----

backend::BackendTraits CommitsPlanSnapshot() {
  backend::BackendTraits traits;
  traits.name = "native-legacy";
  traits.needs_lock = true;
  traits.commits_plan_snapshot = true;
  return traits;
}

std::set<std::pair<std::string, std::string>> Chains(const backend::ChainScope& scope) { return scope.chains; }

TEST(PlanScopeTest, SingleChainOpsReadOnlyTheirChainAndNoRulesForAnAppend) {
  using D = backend::SnapshotDetail;
  const backend::BackendTraits traits = CommitsPlanSnapshot();
  Transaction append;
  append.Append(v4, "filter", "INPUT", R("-s 1.2.3.4 -j ACCEPT"));
  EXPECT_EQ(txn::PlanDetail(append, traits), D::kChains);
  backend::ChainScope scope = txn::PlanScope(append, traits);
  EXPECT_FALSE(scope.every_chain);
  EXPECT_EQ(Chains(scope), (std::set<std::pair<std::string, std::string>>{{"filter", "INPUT"}}));
  EXPECT_FALSE(scope.Has("filter", "FORWARD"));
  EXPECT_EQ(scope.tables, std::set<std::string>{"filter"});  // the other tables are not read at all

  Transaction insert;
  insert.Insert(v4, "filter", "INPUT", 3, R("-s 1.2.3.4 -j ACCEPT"));
  EXPECT_EQ(txn::PlanDetail(insert, traits), D::kPositions);

  // A delete by spec searches its chain for the rule (a probe), also when the same chain gets an append.
  Transaction both;
  both.Append(v4, "filter", "INPUT", R("-s 1.2.3.4 -j ACCEPT"));
  both.Delete(v4, "filter", "INPUT", R("-s 5.6.7.8 -j ACCEPT"));
  EXPECT_EQ(txn::PlanDetail(both, traits), D::kPositions);
  scope = txn::PlanScope(both, traits);
  EXPECT_FALSE(scope.every_chain);
  ASSERT_EQ(scope.probes.count({"filter", "INPUT"}), 1u);
  EXPECT_EQ(scope.probes.at({"filter", "INPUT"}).size(), 1u);
  // One table: never undone op by op, so a chain only deleted from by spec needs no placeholder per rule.
  EXPECT_FALSE(scope.probe_positions);
  Transaction two_tables;
  two_tables.Delete(v4, "filter", "INPUT", R("-s 5.6.7.8 -j ACCEPT"));
  two_tables.Append(v4, "mangle", "PREROUTING", R("-j ACCEPT"));
  scope = txn::PlanScope(two_tables, traits);
  ASSERT_EQ(scope.probes.count({"filter", "INPUT"}), 1u);
  EXPECT_TRUE(scope.probe_positions);  // the inverse re-inserts the deleted rule where it was
  EXPECT_EQ(scope.tables, (std::set<std::string>{"filter", "mangle"}));
  // An op that reads no chain's rules still names its table.
  Transaction policy;
  policy.SetPolicy(v4, "nat", "PREROUTING", "DROP");
  EXPECT_EQ(txn::PlanScope(policy, traits).tables, std::set<std::string>{"nat"});

  Transaction by_number;
  by_number.DeleteAt(v4, "filter", "INPUT", 2);
  by_number.Replace(v4, "filter", "INPUT", 1, R("-j DROP"));
  EXPECT_EQ(txn::PlanDetail(by_number, traits), D::kPositions);
  EXPECT_EQ(Chains(txn::PlanScope(by_number, traits)),
            (std::set<std::pair<std::string, std::string>>{{"filter", "INPUT"}}));
}

// A backend with handles is told which chains the plan looks up at all (ChainScope::named_only): the chains of its
// ops, a jump target, a chain to create or whose policy is set; an op that needs every chain says so.
TEST(PlanScopeTest, ThePlanNamesEveryChainItLooksUp) {
  backend::BackendTraits traits;
  traits.name = "native";
  traits.handles = true;
  traits.atomic_across_tables = true;
  using Where = std::set<std::pair<std::string, std::string>>;
  Transaction txn;
  txn.Append(v4, "filter", "c50", R("-j c51"));
  txn.Append(v4, "filter", "c50", R("-g c52"));
  txn.Append(v4, "filter", "c50", R("-j LOG"));
  txn.Insert(v4, "filter", "INPUT", 1, R("-j ACCEPT"));
  txn.CreateChain(v4, "filter", "NEW");
  txn.SetPolicy(v4, "filter", "FORWARD", "DROP");
  txn.Flush(v4, "filter", "c53");
  backend::ChainScope scope = txn::PlanScope(txn, traits);
  EXPECT_FALSE(scope.every_chain);
  EXPECT_TRUE(scope.named_only);
  EXPECT_EQ(scope.chains, (Where{{"filter", "c50"}, {"filter", "INPUT"}}));
  EXPECT_EQ(scope.named,
            (Where{{"filter", "c51"}, {"filter", "c52"}, {"filter", "NEW"}, {"filter", "FORWARD"}, {"filter", "c53"}}));
  EXPECT_TRUE(scope.Lists("filter", "c52"));
  EXPECT_FALSE(scope.Lists("filter", "OUTPUT"));
  // Deleting or renaming a chain looks at every chain.
  Transaction drop;
  drop.DeleteChain(v4, "filter", "c50");
  EXPECT_FALSE(txn::PlanScope(drop, traits).named_only);
  EXPECT_TRUE(txn::PlanScope(drop, traits).Lists("filter", "OUTPUT"));
  // A snapshot of the named chains lists what a plan of a subset looks up, never what one of every chain does.
  Transaction sub;
  sub.Append(v4, "filter", "c50", R("-j c51"));
  EXPECT_TRUE(scope.ListsAll(txn::PlanScope(sub, traits)));
  EXPECT_FALSE(txn::PlanScope(sub, traits).ListsAll(scope));
  EXPECT_FALSE(scope.ListsAll(txn::PlanScope(drop, traits)));
  EXPECT_TRUE(txn::PlanScope(drop, traits).ListsAll(scope));
}

TEST(PlanScopeTest, WhatNeedsMoreThanOneChainReadsMore) {
  using D = backend::SnapshotDetail;
  const backend::BackendTraits traits = CommitsPlanSnapshot();
  // A jump to a user chain: the graph check (loops) sees every chain.
  Transaction jump;
  jump.Append(v4, "filter", "INPUT", R("-j MYCHAIN"));
  EXPECT_EQ(txn::PlanDetail(jump, traits), D::kRules);
  EXPECT_TRUE(txn::PlanScope(jump, traits).every_chain);
  // A target extension in a user chain: which hooks reach it.
  Transaction log;
  log.Append(v4, "filter", "MYCHAIN", R("-j LOG"));
  EXPECT_TRUE(txn::PlanScope(log, traits).every_chain);
  // In a builtin chain it is checked there.
  Transaction log_builtin;
  log_builtin.Append(v4, "filter", "INPUT", R("-j LOG"));
  EXPECT_FALSE(txn::PlanScope(log_builtin, traits).every_chain);
  // Two tables commit one by one; the first one's inverse needs the rules it would put back or take away.
  Transaction two_tables;
  two_tables.Append(v4, "filter", "INPUT", R("-j ACCEPT"));
  two_tables.Append(v4, "mangle", "PREROUTING", R("-j ACCEPT"));
  EXPECT_EQ(txn::PlanDetail(two_tables, traits), D::kRules);
  EXPECT_EQ(Chains(txn::PlanScope(two_tables, traits)),
            (std::set<std::pair<std::string, std::string>>{{"filter", "INPUT"}, {"mangle", "PREROUTING"}}));
  Transaction unique;
  unique.AppendUnique(v4, "filter", "INPUT", R("-j ACCEPT"));
  EXPECT_EQ(txn::PlanDetail(unique, traits), D::kRules);
  Transaction drop_chain;
  drop_chain.DeleteChain(v4, "filter", "MYCHAIN");
  EXPECT_TRUE(txn::PlanScope(drop_chain, traits).every_chain);
  // A backend with neither handles nor commits_plan_snapshot always reads every rule.
  backend::BackendTraits restore;
  restore.needs_lock = true;
  Transaction append;
  append.Append(v4, "filter", "INPUT", R("-j ACCEPT"));
  EXPECT_EQ(txn::PlanDetail(append, restore), D::kRules);
  EXPECT_TRUE(txn::PlanScope(append, restore).every_chain);
}

}  // namespace
}  // namespace iptkit
