// Tests of the integration-test machinery itself, with the iptables CLI only.
#include "tests/integration/netns_fixture.h"

#include <gtest/gtest.h>

#include "tests/integration/test_util.h"
#include "tests/integration/udp_stream.h"

namespace iptkit::integration {
namespace {

bool NetnsListed(const std::string& name) {
  CommandResult r = RunCommand({"ip", "netns", "list"});
  return r.out.find(name + " ") != std::string::npos || r.out.find(name + "\n") != std::string::npos;
}

TEST(NetnsFixtureTest, NamespaceExistsUntilDestroyed) {
  IPTKIT_NEW_NETNS(ns);
  std::string name = ns->name();
  EXPECT_TRUE(name.starts_with("iptkit-it-")) << name;
  EXPECT_TRUE(NetnsListed(name));
  ns.reset();
  EXPECT_FALSE(NetnsListed(name));
}

TEST(NetnsFixtureTest, RulesStayInTheirNamespace) {
  IPTKIT_NEW_NETNS(a);
  IPTKIT_NEW_NETNS(b);
  for (Variant v : {Variant::kNft, Variant::kLegacy}) {
    IPTKIT_REQUIRE_VARIANT(*a, v, Family::kIPv4);
    CommandResult add = a->Iptables(v, Family::kIPv4, {"-A", "INPUT", "-s", "192.0.2.1", "-j", "DROP"});
    ASSERT_TRUE(add.ok()) << add.Describe();
    ASSERT_OK_AND_ASSIGN(std::string in_a, a->Save(v, Family::kIPv4));
    EXPECT_NE(in_a.find("-A INPUT -s 192.0.2.1/32 -j DROP\n"), std::string::npos) << in_a;
    EXPECT_EQ(in_a.find("# "), std::string::npos) << "comment lines must be stripped: " << in_a;
    ASSERT_OK_AND_ASSIGN(std::string in_b, b->Save(v, Family::kIPv4));
    EXPECT_EQ(in_b.find("192.0.2.1"), std::string::npos) << in_b;
  }
}

TEST(NetnsFixtureTest, RunReportsExitCodeStdoutAndStdin) {
  IPTKIT_REQUIRE_ROOT();
  CommandResult cat = RunCommand({"cat"}, "", "hello\n");
  EXPECT_EQ(cat.exit_code, 0);
  EXPECT_EQ(cat.out, "hello\n");
  CommandResult fail = RunCommand({"false"});
  EXPECT_EQ(fail.exit_code, 1);
  CommandResult missing = RunCommand({"no-such-tool-iptkit"});
  EXPECT_EQ(missing.exit_code, -1);
  CommandResult slow = RunCommand({"sleep", "10"}, "", "", std::chrono::milliseconds(200));
  EXPECT_EQ(slow.exit_code, 128 + 9);
}

TEST(NetnsFixtureTest, RestoreAndSaveRoundTripBothVariantsBothFamilies) {
  IPTKIT_NEW_NETNS(ns);
  for (Variant v : {Variant::kNft, Variant::kLegacy}) {
    for (Family f : {Family::kIPv4, Family::kIPv6}) {
      IPTKIT_REQUIRE_VARIANT(*ns, v, f);
      std::string src = f == Family::kIPv4 ? "198.51.100.0/24" : "2001:db8::/32";
      std::string text =
          "*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:IT-X - [0:0]\n"
          "-A INPUT -s " +
          src + " -p tcp -m tcp --dport 22 -j IT-X\n-A IT-X -j ACCEPT\nCOMMIT\n";
      CommandResult r = ns->Restore(v, f, text);
      ASSERT_TRUE(r.ok()) << r.Describe();
      ASSERT_OK_AND_ASSIGN(std::string saved, ns->Save(v, f, "filter"));
      EXPECT_EQ(saved, text) << VariantName(v);
      auto tables = SplitTables(saved);
      ASSERT_EQ(tables.count("filter"), 1u);
      auto chains = ChainTexts(tables["filter"]);
      EXPECT_EQ(chains["IT-X"], ":IT-X - [0:0]\n-A IT-X -j ACCEPT\n");
      EXPECT_EQ(chains["OUTPUT"], ":OUTPUT ACCEPT [0:0]\n");
    }
  }
  ASSERT_OK_AND_ASSIGN(std::string nft, ns->NftListRuleset());
  EXPECT_NE(nft.find("table ip filter"), std::string::npos) << nft;
  EXPECT_NE(nft.find("table ip6 filter"), std::string::npos) << nft;
}

TEST(NetnsFixtureTest, VethCarriesUdpBothFamiliesWithoutLoss) {
  IPTKIT_NEW_NETNS(tx);
  IPTKIT_NEW_NETNS(rx);
  ASSERT_OK_AND_ASSIGN(VethLink link, ConnectVeth(*tx, *rx));
  for (const std::string& dst : {link.b_ipv4, link.b_ipv6}) {
    UdpStreamOptions options;
    options.count = 5000;
    ASSERT_OK_AND_ASSIGN(auto stream, UdpStream::Create(*tx, *rx, dst, 6000, options));
    stream->Start();
    UdpStreamResult r = stream->Finish();
    EXPECT_EQ(r.sent, options.count) << dst << ": " << r.Describe();
    EXPECT_EQ(r.missing, 0u) << dst << ": " << r.Describe();
    // Paced at 20,000/s: 5,000 datagrams take about 0.25 s.
    EXPECT_GT(r.seconds, 0.2) << r.Describe();
    EXPECT_LT(r.seconds, 2.0) << r.Describe();
  }
}

TEST(NetnsFixtureTest, StreamSeesDropRule) {
  IPTKIT_NEW_NETNS(tx);
  IPTKIT_NEW_NETNS(rx);
  ASSERT_OK_AND_ASSIGN(VethLink link, ConnectVeth(*tx, *rx));
  CommandResult drop =
      rx->Iptables(Variant::kNft, Family::kIPv4, {"-A", "INPUT", "-p", "udp", "--dport", "6001", "-j", "DROP"});
  ASSERT_TRUE(drop.ok()) << drop.Describe();
  UdpStreamOptions options;
  options.count = 1000;
  options.drain = std::chrono::milliseconds(200);
  ASSERT_OK_AND_ASSIGN(auto stream, UdpStream::Create(*tx, *rx, link.b_ipv4, 6001, options));
  stream->Start();
  UdpStreamResult r = stream->Finish();
  EXPECT_EQ(r.received, 0u) << r.Describe();
  EXPECT_EQ(r.missing, 1000u) << r.Describe();
}

TEST(NetnsFixtureTest, NstatReadsTheNamespacesCounters) {
  IPTKIT_NEW_NETNS(ns);
  ASSERT_OK_AND_ASSIGN(uint64_t errors, ns->NstatCounter("UdpRcvbufErrors"));
  EXPECT_EQ(errors, 0u);
  EXPECT_EQ(ns->NstatCounter("NoSuchCounterIptkit").status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace iptkit::integration
