// Atomicity across tables and families, which only the native backend has (one netlink batch per transaction):
//  - a transaction over filter and nat, IPv4 and IPv6, whose last op the kernel refuses changes nothing anywhere
//    (iptables-save of both families and `nft list ruleset` byte-identical);
//  - a UDP stream between two namespaces sees either the whole old or the whole new ruleset while a transaction
//    switches a mark scheme that spans two tables (mangle sets the mark, filter accepts that mark; policy DROP):
//    a mixed state (new mangle, old filter) drops packets. On the native backend no datagram is lost; on the
//    restore backend, which commits table by table, the same test loses datagrams (so it can fail).
#include <gtest/gtest.h>

#include "iptkit/firewall.h"
#include "tests/integration/library_util.h"
#include "tests/integration/test_util.h"
#include "tests/integration/zero_loss_scenario.h"

namespace iptkit::integration {
namespace {

TEST(NativeAtomicityTest, KernelRefusalChangesNothingInAnyTableOrFamily) {
  IPTKIT_NEW_NETNS(ns);
  IPTKIT_REQUIRE_VARIANT(*ns, Variant::kNft, Family::kIPv6);
  ASSERT_TRUE(ns->Restore(Variant::kNft, Family::kIPv4,
                          "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
                          "-A INPUT -i lo -j ACCEPT\nCOMMIT\n")
                  .ok());
  ASSERT_TRUE(ns->Restore(Variant::kNft, Family::kIPv6,
                          "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
                          "-A INPUT -i lo -j ACCEPT\nCOMMIT\n")
                  .ok());
  ASSERT_OK_AND_ASSIGN(std::string v4, ns->Save(Variant::kNft, Family::kIPv4));
  ASSERT_OK_AND_ASSIGN(std::string v6, ns->Save(Variant::kNft, Family::kIPv6));
  ASSERT_OK_AND_ASSIGN(std::string nft, ns->NftListRuleset());
  ASSERT_OK_AND_ASSIGN(auto fw, OpenFirewall(*ns, BackendKind::kNative));

  Transaction txn;
  txn.Append(Family::kIPv4, "filter", "INPUT", Spec("-s 192.0.2.1 -j DROP"));
  txn.CreateChain(Family::kIPv6, "filter", "NEW6");
  txn.Append(Family::kIPv6, "filter", "INPUT", Spec("-s 2001:db8::1 -j NEW6", Family::kIPv6));
  txn.Append(Family::kIPv6, "nat", "POSTROUTING", Spec("-s 2001:db8::/32 -j MASQUERADE", Family::kIPv6));
  txn.Append(Family::kIPv4, "nat", "POSTROUTING", Spec("-s 10.0.0.0/8 -j MASQUERADE"));
  // Refused by the kernel only, at commit: --limit-iface-in is not allowed in POSTROUTING.
  txn.Append(Family::kIPv4, "nat", "POSTROUTING", Spec("-m addrtype --src-type LOCAL --limit-iface-in -j ACCEPT"));
  Result<CommitResult> done = fw->Commit(txn);
  ASSERT_FALSE(done.ok());
  EXPECT_EQ(done.status().code(), StatusCode::kInvalidArgument) << done.status().ToString();
  EXPECT_NE(done.status().message().find("-A POSTROUTING -m addrtype"), std::string::npos)
      << "the error names the op: " << done.status().message();
  ASSERT_OK_AND_ASSIGN(std::string v4_after, ns->Save(Variant::kNft, Family::kIPv4));
  ASSERT_OK_AND_ASSIGN(std::string v6_after, ns->Save(Variant::kNft, Family::kIPv6));
  ASSERT_OK_AND_ASSIGN(std::string nft_after, ns->NftListRuleset());
  EXPECT_EQ(v4_after, v4);
  EXPECT_EQ(v6_after, v6);
  EXPECT_EQ(nft_after, nft);

  // Without the refused op the same transaction commits, as one kernel transaction.
  Transaction good;
  for (size_t i = 0; i + 1 < txn.ops().size(); ++i) good.Add(txn.ops()[i]);
  ASSERT_OK_AND_ASSIGN(CommitResult ok, fw->Commit(good));
  EXPECT_TRUE(ok.atomic_across_tables);
  EXPECT_EQ(ok.backend, "native");
  ASSERT_OK_AND_ASSIGN(std::string v6_new, ns->Save(Variant::kNft, Family::kIPv6));
  EXPECT_NE(v6_new.find("-A POSTROUTING -s 2001:db8::/32 -j MASQUERADE"), std::string::npos) << v6_new;
}

// The receiver's mark scheme of generation g: mangle PREROUTING marks the stream with M(g) = 10 + g; filter INPUT
// (policy DROP) accepts M(g - 1) and M(g). One transaction moves it from g - 1 to g, mangle first.
// nf_tables switches generations atomically, but a packet crosses two hooks (PREROUTING, then INPUT) and a commit
// can fall between them: such a packet sees the old mangle and the new filter, which still accepts M(g - 1). The
// only state that drops the stream is the new mangle with the old filter (M(g) is not in {M(g - 2), M(g - 1)}):
// that never exists for one batch, and exists between the two commits of the restore backend, which commits the
// transaction's tables in order (mangle, then filter).
int Mark(int generation) { return 10 + generation; }
std::string MarkScheme(int g) {
  return "*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
         ":POSTROUTING ACCEPT [0:0]\n"
         "-A PREROUTING -p udp -m udp --dport " +
         std::to_string(kStreamPort) + " -j MARK --set-xmark " + std::to_string(Mark(g)) +
         "\nCOMMIT\n"
         "*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
         "-A INPUT -m mark --mark " +
         std::to_string(Mark(g - 1)) + " -j ACCEPT\n-A INPUT -m mark --mark " + std::to_string(Mark(g)) +
         " -j ACCEPT\nCOMMIT\n";
}

class CrossTableStreamTest : public ::testing::TestWithParam<BackendKind> {};

TEST_P(CrossTableStreamTest, StreamSeesTheWholeOldOrTheWholeNewRuleset) {
  IPTKIT_REQUIRE_ROOT();
  ASSERT_OK_AND_ASSIGN(ZeroLossSetup setup, MakeZeroLossSetup(Variant::kNft));
  CommandResult loaded = setup.receiver->Restore(Variant::kNft, Family::kIPv4, MarkScheme(0));
  ASSERT_TRUE(loaded.ok()) << loaded.Describe();
  ASSERT_OK_AND_ASSIGN(auto fw, OpenFirewall(*setup.receiver, GetParam()));
  auto replace = [&](int g) -> Status {
    Transaction txn;
    txn.Replace(
        Family::kIPv4, "mangle", "PREROUTING", 1,
        Spec("-p udp --dport " + std::to_string(kStreamPort) + " -j MARK --set-mark " + std::to_string(Mark(g))));
    // Rule 2 first: [M(g-2), M(g-1)] → [M(g-2), M(g)] → [M(g-1), M(g)], no duplicate in between.
    txn.Replace(Family::kIPv4, "filter", "INPUT", 2, Spec("-m mark --mark " + std::to_string(Mark(g)) + " -j ACCEPT"));
    txn.Replace(Family::kIPv4, "filter", "INPUT", 1,
                Spec("-m mark --mark " + std::to_string(Mark(g - 1)) + " -j ACCEPT"));
    return fw->Commit(txn).status();
  };
  UdpStreamOptions options;
  options.count = 60000;
  ASSERT_OK_AND_ASSIGN(ZeroLossResult r, RunZeroLoss(setup, 40, replace, options));
  std::printf("  %s: %s\n", BackendName(GetParam()).c_str(), r.Describe().c_str());
  if (GetParam() == BackendKind::kNative) {
    EXPECT_GE(r.replacements_done, 30) << r.Describe();
    EXPECT_EQ(r.stream.missing, 0u) << "one batch: never the new mangle with the old filter. " << r.Describe();
  } else {
    // Table by table: between the two commits the new mark meets the old filter. This is what the test catches.
    EXPECT_GT(r.stream.missing, 0u) << "the restore backend commits table by table; " << r.Describe();
  }
  EXPECT_EQ(r.rcvbuf_errors, 0u);
}

INSTANTIATE_TEST_SUITE_P(Backends, CrossTableStreamTest, ::testing::Values(BackendKind::kNative, BackendKind::kNft),
                         BackendParamName);

}  // namespace
}  // namespace iptkit::integration
