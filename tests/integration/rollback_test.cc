// Rollback (docs/architecture.md §4): a transaction over filter and nat whose nat part the kernel rejects at commit
// leaves both tables byte-identical — iptables-save of every table and, on nft, `nft list ruleset`.
//
// Kernel-only rejections used (each passes `iptables-restore --test` on both variants and fails only at COMMIT;
// verified with iptables 1.8.9):
//  - `-m addrtype --limit-iface-in` in nat POSTROUTING: xt_addrtype's checkentry refuses an input-interface
//    limit in POSTROUTING/OUTPUT (net/netfilter/xt_addrtype.c, addrtype_mt_checkentry_v1); libxt_addrtype only
//    checks that in and out are not both given. No table/hook placement rule of the library covers it, so it
//    reaches the kernel and exercises the rollback of the already committed filter table.
//  - `-j MASQUERADE` in nat PREROUTING: the target's hook mask allows POSTROUTING only (xt_check_target). The
//    library validates placement locally (docs/architecture.md §3), so there it must fail before anything is sent;
//    either way nothing may change.
#include <gtest/gtest.h>

#include "iptkit/firewall.h"
#include "tests/integration/library_util.h"
#include "tests/integration/test_util.h"

namespace iptkit::integration {
namespace {

struct Snapshot {
  std::string v4;
  std::string v6;
  std::string nft;  // `nft list ruleset` on the nft variant, else empty
};

Result<Snapshot> TakeSnapshot(const TestNetns& ns, Variant variant) {
  Snapshot s;
  IPTKIT_ASSIGN_OR_RETURN(s.v4, ns.Save(variant, Family::kIPv4));
  IPTKIT_ASSIGN_OR_RETURN(s.v6, ns.Save(variant, Family::kIPv6));
  if (variant == Variant::kNft) {
    IPTKIT_ASSIGN_OR_RETURN(s.nft, ns.NftListRuleset());
  }
  return s;
}

void ExpectSameSnapshot(const Snapshot& before, const Snapshot& after) {
  EXPECT_EQ(after.v4, before.v4) << "IPv4 tables changed";
  EXPECT_EQ(after.v6, before.v6) << "IPv6 tables changed";
  EXPECT_EQ(after.nft, before.nft) << "nft list ruleset changed";
}

std::string BaseRuleset(Family family) {
  const bool v4 = family == Family::kIPv4;
  const std::string net = v4 ? "198.51.100.0/24" : "2001:db8:1::/48";
  const std::string host = v4 ? "192.0.2.7/32" : "2001:db8::7/128";
  return "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
         "-A POSTROUTING -s " +
         net +
         " -o veth-x -j MASQUERADE\n"
         "COMMIT\n"
         "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n:IT-SVC - [0:0]\n"
         "-A INPUT -i lo -j ACCEPT\n"
         "-A INPUT -s " +
         host +
         " -j DROP\n"
         "-A INPUT -p tcp -m tcp --dport 22 -j IT-SVC\n"
         "-A IT-SVC -s " +
         net +
         " -j ACCEPT\n"
         "COMMIT\n";
}

// Filter ops of every kind whose inverse the rollback must produce, followed by the nat ops.
Transaction FilterThenNat(Family family, const std::vector<std::string>& nat_specs) {
  const bool v4 = family == Family::kIPv4;
  const std::string host = v4 ? "192.0.2.7" : "2001:db8::7";
  const std::string other = v4 ? "203.0.113.9" : "2001:db8::9";
  Transaction txn;
  txn.Append(family, "filter", "INPUT", Spec("-p udp --dport 53 -j ACCEPT", family));
  txn.Insert(family, "filter", "INPUT", 1, Spec("-s " + other + " -j DROP", family));
  txn.Delete(family, "filter", "INPUT", Spec("-s " + host + " -j DROP", family));
  txn.SetPolicy(family, "filter", "INPUT", "DROP");
  txn.CreateChain(family, "filter", "IT-NEW");
  txn.Append(family, "filter", "IT-NEW", Spec("-j RETURN", family));
  txn.Flush(family, "filter", "IT-SVC");
  for (const auto& spec : nat_specs) txn.Append(family, "nat", "POSTROUTING", Spec(spec, family));
  return txn;
}

struct RollbackParam {
  BackendKind backend;
  Family family;
};

class RollbackTest : public ::testing::TestWithParam<RollbackParam> {
 protected:
  void SetUp() override {
    IPTKIT_REQUIRE_ROOT();
    ASSERT_OK_AND_ASSIGN(ns_, TestNetns::Create());
    IPTKIT_REQUIRE_VARIANT(*ns_, variant(), family());
    CommandResult loaded = ns_->Restore(variant(), family(), BaseRuleset(family()));
    ASSERT_TRUE(loaded.ok()) << loaded.Describe();
    ASSERT_OK_AND_ASSIGN(fw_, OpenFirewall(*ns_, GetParam().backend));
  }
  Variant variant() const { return VariantOf(GetParam().backend); }
  Family family() const { return GetParam().family; }

  std::unique_ptr<TestNetns> ns_;
  std::unique_ptr<Firewall> fw_;
};

TEST_P(RollbackTest, KernelRejectedNatPartUndoesCommittedFilterPart) {
  ASSERT_OK_AND_ASSIGN(Snapshot before, TakeSnapshot(*ns_, variant()));
  const std::string net = family() == Family::kIPv4 ? "10.9.0.0/16" : "fd00:9::/64";
  Transaction txn = FilterThenNat(
      family(), {"-s " + net + " -j MASQUERADE", "-m addrtype --src-type LOCAL --limit-iface-in -j ACCEPT"});
  Result<CommitResult> done = fw_->Commit(txn);
  ASSERT_FALSE(done.ok()) << "the kernel accepted an input-interface limit in POSTROUTING?";
  EXPECT_NE(done.status().message().find("nat"), std::string::npos)
      << "the error should name the rejected table: " << done.status().ToString();
  ASSERT_OK_AND_ASSIGN(Snapshot after, TakeSnapshot(*ns_, variant()));
  ExpectSameSnapshot(before, after);
}

TEST_P(RollbackTest, MasqueradeInPreroutingChangesNothing) {
  ASSERT_OK_AND_ASSIGN(Snapshot before, TakeSnapshot(*ns_, variant()));
  Transaction txn = FilterThenNat(family(), {});
  txn.Append(family(), "nat", "PREROUTING", Spec("-j MASQUERADE", family()));
  Result<CommitResult> done = fw_->Commit(txn);
  ASSERT_FALSE(done.ok());
  ASSERT_OK_AND_ASSIGN(Snapshot after, TakeSnapshot(*ns_, variant()));
  ExpectSameSnapshot(before, after);
}

// The same transaction without the bad rule commits: the rollback above undid real changes.
TEST_P(RollbackTest, SameTransactionWithoutTheBadRuleCommits) {
  ASSERT_OK_AND_ASSIGN(Snapshot before, TakeSnapshot(*ns_, variant()));
  const std::string net = family() == Family::kIPv4 ? "10.9.0.0/16" : "fd00:9::/64";
  Result<CommitResult> done = fw_->Commit(FilterThenNat(family(), {"-s " + net + " -j MASQUERADE"}));
  ASSERT_TRUE(done.ok()) << done.status().ToString();
  ASSERT_OK_AND_ASSIGN(std::string saved, ns_->Save(variant(), family()));
  const bool v4 = family() == Family::kIPv4;
  const std::string other = v4 ? "203.0.113.9/32" : "2001:db8::9/128";
  EXPECT_EQ(SplitTables(saved)["filter"],
            "*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n:IT-NEW - [0:0]\n"
            ":IT-SVC - [0:0]\n"
            "-A INPUT -s " +
                other +
                " -j DROP\n"
                "-A INPUT -i lo -j ACCEPT\n"
                "-A INPUT -p tcp -m tcp --dport 22 -j IT-SVC\n"
                "-A INPUT -p udp -m udp --dport 53 -j ACCEPT\n"
                "-A IT-NEW -j RETURN\n"
                "COMMIT\n");
  EXPECT_EQ(RuleLines(saved, "nat", "POSTROUTING").size(), 2u) << saved;
}

INSTANTIATE_TEST_SUITE_P(All, RollbackTest,
                         ::testing::Values(RollbackParam{BackendKind::kNative, Family::kIPv4},
                                           RollbackParam{BackendKind::kNative, Family::kIPv6},
                                           RollbackParam{BackendKind::kNft, Family::kIPv4},
                                           RollbackParam{BackendKind::kNft, Family::kIPv6},
                                           RollbackParam{BackendKind::kLegacy, Family::kIPv4},
                                           RollbackParam{BackendKind::kLegacy, Family::kIPv6},
                                           RollbackParam{BackendKind::kNativeLegacy, Family::kIPv4},
                                           RollbackParam{BackendKind::kNativeLegacy, Family::kIPv6}),
                         [](const auto& info) {
                           return BackendName(info.param.backend) +
                                  (info.param.family == Family::kIPv4 ? "_v4" : "_v6");
                         });

}  // namespace
}  // namespace iptkit::integration
