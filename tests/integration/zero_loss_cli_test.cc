// The zero-loss scenario driven by the iptables CLI, no iptkit involved. It proves the machinery the library
// tests rely on: an atomic whole-table iptables-restore loses nothing (so a loss in zero_loss_test.cc is the
// library's), and the naive flush-and-re-add loop loses datagrams (so the scenario can fail).
#include <gtest/gtest.h>

#include <cstdio>

#include "tests/integration/test_util.h"
#include "tests/integration/zero_loss_scenario.h"

namespace iptkit::integration {
namespace {

constexpr int kReplacements = 40;

class ZeroLossCliTest : public ::testing::TestWithParam<Variant> {};

TEST_P(ZeroLossCliTest, AtomicRestoreBaselineLosesNothing) {
  IPTKIT_REQUIRE_ROOT();
  ASSERT_OK_AND_ASSIGN(ZeroLossSetup setup, MakeZeroLossSetup(GetParam()));
  IPTKIT_REQUIRE_VARIANT(*setup.receiver, GetParam(), Family::kIPv4);
  ASSERT_OK_AND_ASSIGN(ZeroLossResult result, RunZeroLoss(setup, kReplacements, [&](int g) -> Status {
                         CommandResult r = setup.receiver->Restore(GetParam(), Family::kIPv4, ReceiverFilterTable(g));
                         return r.ok() ? Status::Ok() : Status::Internal(r.Describe());
                       }));
  std::printf("  %s\n", result.Describe().c_str());
  EXPECT_EQ(result.replacements_done, kReplacements) << result.Describe();
  EXPECT_EQ(result.stream.missing, 0u) << result.Describe();
  EXPECT_EQ(result.stream.send_errors, 0u) << result.Describe();
  EXPECT_EQ(result.rcvbuf_errors, 0u) << result.Describe();
  ASSERT_OK_AND_ASSIGN(std::string saved, setup.receiver->Save(GetParam(), Family::kIPv4, "filter"));
  EXPECT_EQ(saved, ReceiverFilterTable(kReplacements));
}

TEST_P(ZeroLossCliTest, NaiveFlushAndReaddLosesDatagrams) {
  IPTKIT_REQUIRE_ROOT();
  ASSERT_OK_AND_ASSIGN(ZeroLossSetup setup, MakeZeroLossSetup(GetParam()));
  IPTKIT_REQUIRE_VARIANT(*setup.receiver, GetParam(), Family::kIPv4);
  ASSERT_OK_AND_ASSIGN(
      ZeroLossResult result, RunZeroLoss(setup, kReplacements, [&](int g) -> Status {
        CommandResult flush = setup.receiver->Iptables(GetParam(), Family::kIPv4, {"-w", "5", "-F", "INPUT"});
        if (!flush.ok()) return Status::Internal(flush.Describe());
        for (auto rule : ReceiverInputRules(g)) {
          rule.insert(rule.begin(), {"-w", "5", "-A", "INPUT"});
          CommandResult add = setup.receiver->Iptables(GetParam(), Family::kIPv4, rule);
          if (!add.ok()) return Status::Internal(add.Describe());
        }
        return Status::Ok();
      }));
  std::printf("  %s\n", result.Describe().c_str());
  // Between the flush and the re-added ACCEPT, the policy DROP eats the stream.
  EXPECT_GT(result.replacements_done, 0) << result.Describe();
  EXPECT_GT(result.stream.missing, 0u) << result.Describe();
  EXPECT_EQ(result.stream.send_errors, 0u) << result.Describe();
  // The loss is the firewall's doing, not the receive buffer's.
  EXPECT_EQ(result.rcvbuf_errors, 0u) << result.Describe();
}

INSTANTIATE_TEST_SUITE_P(Variants, ZeroLossCliTest, ::testing::Values(Variant::kNft, Variant::kLegacy),
                         [](const auto& info) { return std::string(VariantName(info.param)); });

}  // namespace
}  // namespace iptkit::integration
