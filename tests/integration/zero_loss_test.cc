// Zero loss through the library (docs/testing.md): while a 20,000 datagrams/s UDP stream runs, the receiver's whole
// filter table (policy DROP, the stream's ACCEPT amid 50 other rules) is replaced 40 times with
// Firewall::Restore. Every datagram must arrive and UdpRcvbufErrors must not move. The naive flush-and-re-add
// counterpart, which must lose datagrams, and the iptables-restore baseline are in zero_loss_cli_test.cc.
#include <gtest/gtest.h>

#include <cstdio>
#include <functional>
#include <memory>
#include <string>

#include "iptkit/firewall.h"
#include "tests/integration/library_util.h"
#include "tests/integration/test_util.h"
#include "tests/integration/zero_loss_scenario.h"

namespace iptkit::integration {
namespace {

constexpr int kReplacements = 40;

// Each test: the two namespaces of the scenario and a Firewall on the receiver through the backend under test.
class ZeroLossTest : public ::testing::TestWithParam<BackendKind> {
 protected:
  void SetUp() override {
    IPTKIT_REQUIRE_ROOT();
    ASSERT_OK_AND_ASSIGN(setup_, MakeZeroLossSetup(variant_));
    IPTKIT_REQUIRE_VARIANT(*setup_.receiver, variant_, Family::kIPv4);
    ASSERT_OK_AND_ASSIGN(fw_, OpenFirewall(*setup_.receiver, GetParam()));
  }

  // Runs the stream while `replace(g)` rewrites the receiver's filter table kReplacements times, and expects
  // every replacement done, no datagram missing, no receive-buffer drop and the last generation in the kernel.
  void ExpectNoLoss(const std::function<Status(int generation)>& replace, ZeroLossResult* result) {
    ASSERT_OK_AND_ASSIGN(*result, RunZeroLoss(setup_, kReplacements, replace));
    std::printf("  %s\n", result->Describe().c_str());
    EXPECT_EQ(result->replacements_done, kReplacements) << result->Describe();
    EXPECT_EQ(result->stream.missing, 0u) << result->Describe();
    EXPECT_EQ(result->rcvbuf_errors, 0u) << result->Describe();
    // Each replacement really happened: the kernel holds the last generation.
    ASSERT_OK_AND_ASSIGN(std::string saved, setup_.receiver->Save(variant_, Family::kIPv4, "filter"));
    EXPECT_EQ(saved, ReceiverFilterTable(kReplacements));
  }

  const Variant variant_ = VariantOf(GetParam());
  ZeroLossSetup setup_;
  std::unique_ptr<Firewall> fw_;
};

TEST_P(ZeroLossTest, FirewallRestoreOfWholeFilterTableLosesNothing) {
  ZeroLossResult result;
  ExpectNoLoss(
      [&](int g) -> Status {
        Result<CommitResult> done = fw_->Restore(Family::kIPv4, ReceiverFilterTable(g), {});
        return done.ok() ? Status::Ok() : done.status();
      },
      &result);
  EXPECT_EQ(result.stream.send_errors, 0u) << result.Describe();
}

TEST_P(ZeroLossTest, TransactionRewritingInputLosesNothing) {
  ZeroLossResult result;
  // Flush INPUT and re-add every rule, in one transaction: one atomic kernel commit of the filter table.
  ExpectNoLoss(
      [&](int g) -> Status {
        Transaction txn;
        txn.Flush(Family::kIPv4, "filter", "INPUT");
        for (const auto& args : ReceiverInputRules(g)) {
          IPTKIT_ASSIGN_OR_RETURN(Rule rule, ParseRuleArgs(args, Family::kIPv4));
          txn.Append(Family::kIPv4, "filter", "INPUT", std::move(rule));
        }
        Result<CommitResult> done = fw_->Commit(txn);
        return done.ok() ? Status::Ok() : done.status();
      },
      &result);
}

INSTANTIATE_TEST_SUITE_P(Backends, ZeroLossTest, ::testing::Values(BackendKind::kNft, BackendKind::kLegacy),
                         BackendParamName);

}  // namespace
}  // namespace iptkit::integration
