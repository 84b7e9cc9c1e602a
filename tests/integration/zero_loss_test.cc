// Zero loss through the library (DESIGN.md §9): while a 20,000 datagrams/s UDP stream runs, the receiver's whole
// filter table (policy DROP, the stream's ACCEPT amid 50 other rules) is replaced 40 times with
// Firewall::Restore. Every datagram must arrive and UdpRcvbufErrors must not move. The naive flush-and-re-add
// counterpart, which must lose datagrams, and the iptables-restore baseline are in zero_loss_cli_test.cc.
#include <gtest/gtest.h>

#include <cstdio>

#include "iptkit/firewall.h"
#include "tests/integration/library_util.h"
#include "tests/integration/test_util.h"
#include "tests/integration/zero_loss_scenario.h"

namespace iptkit::integration {
namespace {

constexpr int kReplacements = 40;

class ZeroLossTest : public ::testing::TestWithParam<BackendKind> {};

TEST_P(ZeroLossTest, FirewallRestoreOfWholeFilterTableLosesNothing) {
  IPTKIT_REQUIRE_ROOT();
  const Variant variant = VariantOf(GetParam());
  ASSERT_OK_AND_ASSIGN(ZeroLossSetup setup, MakeZeroLossSetup(variant));
  IPTKIT_REQUIRE_VARIANT(*setup.receiver, variant, Family::kIPv4);
  ASSERT_OK_AND_ASSIGN(auto fw, OpenFirewall(*setup.receiver, GetParam()));

  ASSERT_OK_AND_ASSIGN(ZeroLossResult result, RunZeroLoss(setup, kReplacements, [&](int g) -> Status {
    Result<CommitResult> done = fw->Restore(Family::kIPv4, ReceiverFilterTable(g), {});
    return done.ok() ? Status::Ok() : done.status();
  }));
  std::printf("  %s\n", result.Describe().c_str());
  EXPECT_EQ(result.replacements_done, kReplacements) << result.Describe();
  EXPECT_EQ(result.stream.missing, 0u) << result.Describe();
  EXPECT_EQ(result.stream.send_errors, 0u) << result.Describe();
  EXPECT_EQ(result.rcvbuf_errors, 0u) << result.Describe();
  // Each replacement really happened: the kernel holds the last generation.
  ASSERT_OK_AND_ASSIGN(std::string saved, setup.receiver->Save(variant, Family::kIPv4, "filter"));
  EXPECT_EQ(saved, ReceiverFilterTable(kReplacements));
}

TEST_P(ZeroLossTest, TransactionRewritingInputLosesNothing) {
  IPTKIT_REQUIRE_ROOT();
  const Variant variant = VariantOf(GetParam());
  ASSERT_OK_AND_ASSIGN(ZeroLossSetup setup, MakeZeroLossSetup(variant));
  IPTKIT_REQUIRE_VARIANT(*setup.receiver, variant, Family::kIPv4);
  ASSERT_OK_AND_ASSIGN(auto fw, OpenFirewall(*setup.receiver, GetParam()));

  // Flush INPUT and re-add every rule, in one transaction: one atomic kernel commit of the filter table.
  ASSERT_OK_AND_ASSIGN(ZeroLossResult result, RunZeroLoss(setup, kReplacements, [&](int g) -> Status {
    Transaction txn;
    txn.Flush(Family::kIPv4, "filter", "INPUT");
    for (const auto& args : ReceiverInputRules(g)) {
      IPTKIT_ASSIGN_OR_RETURN(Rule rule, ParseRuleArgs(args, Family::kIPv4));
      txn.Append(Family::kIPv4, "filter", "INPUT", std::move(rule));
    }
    Result<CommitResult> done = fw->Commit(txn);
    return done.ok() ? Status::Ok() : done.status();
  }));
  std::printf("  %s\n", result.Describe().c_str());
  EXPECT_EQ(result.replacements_done, kReplacements) << result.Describe();
  EXPECT_EQ(result.stream.missing, 0u) << result.Describe();
  EXPECT_EQ(result.rcvbuf_errors, 0u) << result.Describe();
  ASSERT_OK_AND_ASSIGN(std::string saved, setup.receiver->Save(variant, Family::kIPv4, "filter"));
  EXPECT_EQ(saved, ReceiverFilterTable(kReplacements));
}

INSTANTIATE_TEST_SUITE_P(Backends, ZeroLossTest, ::testing::Values(BackendKind::kNft, BackendKind::kLegacy),
                         BackendParamName);

}  // namespace
}  // namespace iptkit::integration
