#include "src/backend/fake/fault_backend.h"

#include <gtest/gtest.h>

#include "iptkit/dialect.h"
#include "src/backend/backend_test_util.h"
#include "src/backend/fake/fake_backend.h"

namespace iptkit::backend {
namespace {

constexpr Family v4 = Family::kIPv4;

TableBatch AppendBatch(std::string table, std::string chain, std::string_view spec) {
  TableBatch b;
  b.family = v4;
  b.table = std::move(table);
  b.ops.push_back(backend_test::TOp(TableOp::Kind::kAppend, std::move(chain), spec));
  return b;
}

class FaultBackendTest : public ::testing::Test {
 protected:
  FaultBackendTest() {
    auto fake = std::make_unique<FakeBackend>();
    fake_ = fake.get();
    fault_ = std::make_unique<FaultBackend>(std::move(fake));
  }
  size_t Rules(const std::string& table, const std::string& chain) {
    Result<Ruleset> rs = fake_->Read(v4, table);
    return rs->tables[0].FindChain(chain)->rules.size();
  }
  FakeBackend* fake_;
  std::unique_ptr<FaultBackend> fault_;
};

TEST_F(FaultBackendTest, FailsTheNthCommitWithoutPassingItOn) {
  fault_->FailNthCommit(2, Status::InvalidArgument("line 1 failed"));
  EXPECT_TRUE(fault_->Commit(AppendBatch("filter", "INPUT", "-j ACCEPT")).ok());
  Status s = fault_->Commit(AppendBatch("filter", "INPUT", "-j DROP"));
  EXPECT_EQ(s, Status::InvalidArgument("line 1 failed"));
  EXPECT_TRUE(fault_->Commit(AppendBatch("filter", "INPUT", "-j LOG")).ok());
  EXPECT_EQ(Rules("filter", "INPUT"), 2u);
  EXPECT_EQ(fault_->commit_calls(), 3);
  EXPECT_EQ(fake_->commit_calls(), 2);
  ASSERT_EQ(fault_->attempted().size(), 3u);
  EXPECT_EQ(FormatRuleSpec(fault_->attempted()[1].ops[0].rule), "-j DROP");
}

TEST_F(FaultBackendTest, NthIsCountedFromTheCallThatArmsIt) {
  EXPECT_TRUE(fault_->Commit(AppendBatch("filter", "INPUT", "-j ACCEPT")).ok());
  fault_->FailNthCommit(1, Status::Unavailable("busy"));
  EXPECT_EQ(fault_->Commit(AppendBatch("filter", "INPUT", "-j ACCEPT")).code(), StatusCode::kUnavailable);
  EXPECT_TRUE(fault_->Commit(AppendBatch("filter", "INPUT", "-j ACCEPT")).ok());
}

TEST_F(FaultBackendTest, FailsCommitsOfANamedTable) {
  fault_->FailTableCommits(v4, "nat", Status::FailedPrecondition("kernel says no"), 1);
  EXPECT_TRUE(fault_->Commit(AppendBatch("filter", "INPUT", "-j ACCEPT")).ok());
  EXPECT_EQ(fault_->Commit(AppendBatch("nat", "POSTROUTING", "-j MASQUERADE")).code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(fault_->Commit(AppendBatch("nat", "POSTROUTING", "-j MASQUERADE")).ok());

  fault_->FailTableCommits(v4, "filter", Status::Internal("always"));
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(fault_->Commit(AppendBatch("filter", "INPUT", "-j ACCEPT")).code(), StatusCode::kInternal);
  }
  fault_->ClearFaults();
  EXPECT_TRUE(fault_->Commit(AppendBatch("filter", "INPUT", "-j ACCEPT")).ok());
  EXPECT_EQ(Rules("filter", "INPUT"), 2u);
}

TEST_F(FaultBackendTest, HookRunsBeforeEveryCommitAndCanWriteUnderneath) {
  std::vector<std::string> seen;
  fault_->SetBeforeCommit([&](const TableBatch& b) {
    seen.push_back(b.table);
    if (b.table == "filter") {
      ASSERT_TRUE(fake_->Commit(AppendBatch("filter", "OUTPUT", "-j DROP")).ok());
    }
  });
  fault_->FailNthCommit(2, Status::Aborted("x"));
  EXPECT_TRUE(fault_->Commit(AppendBatch("filter", "INPUT", "-j ACCEPT")).ok());
  EXPECT_FALSE(fault_->Commit(AppendBatch("raw", "OUTPUT", "-j ACCEPT")).ok());
  EXPECT_EQ(seen, (std::vector<std::string>{"filter", "raw"}));
  EXPECT_EQ(Rules("filter", "OUTPUT"), 1u);
}

TEST_F(FaultBackendTest, FailsReadsAndForwardsTheRest) {
  fault_->FailReads(Status::Internal("save printed a warning"), 1);
  EXPECT_EQ(fault_->Read(v4).status().code(), StatusCode::kInternal);
  EXPECT_TRUE(fault_->Read(v4).ok());
  EXPECT_EQ(fault_->traits().name, "fake");
  EXPECT_TRUE(fault_->Info().ok());
  EXPECT_TRUE(fault_->Lock(std::chrono::milliseconds(1)).ok());
  Result<std::vector<Rule>> canon = fault_->Canonicalize(v4, "filter", {*ParseRuleSpec("-s 1.2.3.4 -j DROP", v4)});
  ASSERT_TRUE(canon.ok());
  EXPECT_EQ(FormatRuleSpec(canon->at(0)), "-s 1.2.3.4/32 -j DROP");
  EXPECT_EQ(&fault_->inner(), fake_);
}

}  // namespace
}  // namespace iptkit::backend
