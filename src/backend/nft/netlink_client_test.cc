// NetlinkClient against the real kernel in a private network namespace (needs root; skips otherwise), and the
// lossy-expression judgement as a unit.
#include "src/backend/nft/netlink_client.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <libmnl/libmnl.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <unistd.h>

#include <string>

#include "src/base/netns.h"
#include "src/base/subprocess.h"

namespace iptkit::backend::nft {
namespace {

using ::testing::HasSubstr;

TEST(LossyExpressionsReasonTest, IptablesNftExpressionsAreFaithful) {
  // -s 10.0.0.0/8 -p tcp -m tcp --dport 22 -m comment --comment x -j ACCEPT as iptables-nft 1.8.9 writes it.
  EXPECT_EQ(LossyExpressionsReason({{"payload", ""},
                                    {"bitwise", ""},
                                    {"cmp", ""},
                                    {"meta", ""},
                                    {"cmp", ""},
                                    {"payload", ""},
                                    {"cmp", ""},
                                    {"range", ""},
                                    {"match", ""},
                                    {"counter", ""},
                                    {"limit", ""},
                                    {"log", ""},
                                    {"queue", ""},
                                    {"target", ""},
                                    {"immediate", ""}}),
            "");
}

TEST(LossyExpressionsReasonTest, NativeExpressionsAreLossy) {
  EXPECT_EQ(LossyExpressionsReason({}), "rule without expressions");
  EXPECT_EQ(LossyExpressionsReason({{"payload", ""}, {"lookup", "__set0"}, {"immediate", ""}}), "anonymous set lookup");
  EXPECT_EQ(LossyExpressionsReason({{"payload", ""}, {"lookup", "blocked"}}), "named set lookup (@blocked)");
  EXPECT_EQ(LossyExpressionsReason({{"ct", ""}, {"bitwise", ""}, {"cmp", ""}}), "native nft expression 'ct'");
  EXPECT_EQ(LossyExpressionsReason({{"counter", ""}, {"nat", ""}}), "native nft expression 'nat'");
  EXPECT_EQ(LossyExpressionsReason({{"counter", ""}, {"reject", ""}}), "native nft expression 'reject'");
}

class NetlinkClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (network namespaces)";
    auto ns = base::ScratchNetns::Create();
    ASSERT_TRUE(ns.ok()) << ns.status().ToString();
    ns_.emplace(std::move(ns).value());
    auto client = NetlinkClient::Open(ns_->fd());
    ASSERT_TRUE(client.ok()) << client.status().ToString();
    client_ = std::move(client).value();
  }

  // Runs argv[0] with `input` inside the namespace; "" on success, else a description.
  std::string Exec(std::vector<std::string> argv, std::string input = "") {
    std::string path = argv[0];
    auto r = base::RunSubprocess(base::Cmd(path, argv).Stdin(std::move(input)).Netns(ns_->fd()));
    if (!r.ok()) return r.status().ToString();
    if (r->exit_code != 0) return path + " exited " + std::to_string(r->exit_code) + ": " + r->stderr_text;
    return "";
  }
  std::string Restore(const std::string& text) { return Exec({"/usr/sbin/iptables-nft-restore", "--noflush"}, text); }
  uint32_t Gen() {
    auto g = client_->GenerationId();
    EXPECT_TRUE(g.ok()) << g.status().ToString();
    return g.ok() ? *g : 0;
  }

  std::optional<base::ScratchNetns> ns_;
  std::unique_ptr<NetlinkClient> client_;
};

// The snapshot cache of RestoreBackend relies on this: one successful iptables-nft-restore run that changes
// anything is one kernel transaction (one generation), also when it creates the table and builtin chains; a run
// that changes nothing (only -C) commits nothing.
TEST_F(NetlinkClientTest, OneRestoreRunIsOneGeneration) {
  uint32_t g0 = Gen();
  ASSERT_EQ(Restore("*filter\n-N FOO\n-A FOO -j RETURN\n-A INPUT -s 10.0.0.0/8 -j FOO\n-A OUTPUT -j ACCEPT\nCOMMIT\n"),
            "");
  uint32_t g1 = Gen();
  EXPECT_EQ(g1, g0 + 1);
  ASSERT_EQ(Restore("*filter\n-N BAR\n-I INPUT 1 -j BAR\n-D OUTPUT -j ACCEPT\n-P FORWARD DROP\nCOMMIT\n"), "");
  uint32_t g2 = Gen();
  EXPECT_EQ(g2, g1 + 1);
  ASSERT_EQ(Restore("*nat\n-A POSTROUTING -o lo -j MASQUERADE\nCOMMIT\n"), "");
  uint32_t g3 = Gen();
  EXPECT_EQ(g3, g2 + 1);
  ASSERT_EQ(Restore("*filter\n-C INPUT -j BAR\nCOMMIT\n"), "");
  EXPECT_EQ(Gen(), g3);
  // A failing run commits nothing.
  EXPECT_NE(Restore("*filter\n-A INPUT -j ACCEPT\n-D INPUT -j DROP\nCOMMIT\n"), "");
  EXPECT_EQ(Gen(), g3);
  // A reader changes nothing.
  ASSERT_EQ(Exec({"/usr/sbin/iptables-nft-save", "-c"}), "");
  EXPECT_EQ(Gen(), g3);
}

TEST_F(NetlinkClientTest, DumpCountsRulesPerChain) {
  ASSERT_EQ(
      Restore("*filter\n-N FOO\n-A FOO -j RETURN\n-A INPUT -s 10.0.0.0/8 -p tcp -m tcp --dport 22 -j FOO\n"
              "-A INPUT -m comment --comment hi -j ACCEPT\n-A INPUT -m conntrack --ctstate ESTABLISHED -j ACCEPT\n"
              "COMMIT\n*nat\n-A POSTROUTING -o lo -j MASQUERADE\nCOMMIT\n"),
      "");
  auto view = client_->Dump(Family::kIPv4, std::nullopt);
  ASSERT_TRUE(view.ok()) << view.status().ToString();
  ASSERT_TRUE(view->count({"ip", "filter"}));
  ASSERT_TRUE(view->count({"ip", "nat"}));
  const KernelTable& filter = view->at({"ip", "filter"});
  ASSERT_TRUE(filter.chains.count("INPUT"));
  EXPECT_EQ(filter.chains.at("INPUT").rules, 3u);
  EXPECT_TRUE(filter.chains.at("INPUT").base);
  EXPECT_EQ(filter.chains.at("INPUT").hook, "input");
  EXPECT_EQ(filter.chains.at("INPUT").priority, 0);
  EXPECT_EQ(filter.chains.at("INPUT").lossy, "");
  ASSERT_TRUE(filter.chains.count("FOO"));
  EXPECT_EQ(filter.chains.at("FOO").rules, 1u);
  EXPECT_FALSE(filter.chains.at("FOO").base);
  EXPECT_TRUE(filter.sets.empty());
  const KernelTable& nat = view->at({"ip", "nat"});
  EXPECT_EQ(nat.chains.at("POSTROUTING").hook, "postrouting");
  EXPECT_EQ(nat.chains.at("POSTROUTING").priority, 100);
  EXPECT_EQ(nat.chains.at("POSTROUTING").rules, 1u);

  auto only = client_->Dump(Family::kIPv4, std::string("nat"));
  ASSERT_TRUE(only.ok()) << only.status().ToString();
  EXPECT_EQ(only->size(), 1u);
  EXPECT_TRUE(only->count({"ip", "nat"}));

  auto v6 = client_->Dump(Family::kIPv6, std::nullopt);
  ASSERT_TRUE(v6.ok()) << v6.status().ToString();
  EXPECT_TRUE(v6->empty());
  auto missing = client_->Dump(Family::kIPv6, std::string("mangle"));
  ASSERT_TRUE(missing.ok()) << missing.status().ToString();
  EXPECT_TRUE(missing->empty());
}

TEST_F(NetlinkClientTest, DumpFlagsNativeNftRules) {
  ASSERT_EQ(Restore("*filter\n-A INPUT -j ACCEPT\n-A FORWARD -j ACCEPT\n-A OUTPUT -j ACCEPT\nCOMMIT\n"), "");
  ASSERT_EQ(Exec({"/usr/sbin/nft", "add rule ip filter INPUT ip saddr { 1.1.1.1, 2.2.2.2 } accept"}), "");
  ASSERT_EQ(Exec({"/usr/sbin/nft", "add set ip filter blocked { type ipv4_addr; }"}), "");
  ASSERT_EQ(Exec({"/usr/sbin/nft", "add rule ip filter FORWARD ip saddr @blocked drop"}), "");
  ASSERT_EQ(Exec({"/usr/sbin/nft", "add rule ip filter OUTPUT ct state established accept"}), "");
  auto view = client_->Dump(Family::kIPv4, std::string("filter"));
  ASSERT_TRUE(view.ok()) << view.status().ToString();
  const KernelTable& filter = view->at({"ip", "filter"});
  EXPECT_EQ(filter.chains.at("INPUT").rules, 2u);
  EXPECT_THAT(filter.chains.at("INPUT").lossy, HasSubstr("rule 2 (nft handle "));
  EXPECT_THAT(filter.chains.at("INPUT").lossy, HasSubstr("anonymous set lookup"));
  EXPECT_THAT(filter.chains.at("FORWARD").lossy, HasSubstr("named set lookup (@blocked)"));
  EXPECT_THAT(filter.chains.at("OUTPUT").lossy, HasSubstr("native nft expression 'ct'"));
  EXPECT_EQ(filter.sets, std::vector<std::string>{"blocked"});
}

TEST_F(NetlinkClientTest, EveryReadIsOneRoundTripPerKind) {
  uint64_t before = client_->requests();
  ASSERT_TRUE(client_->GenerationId().ok());
  EXPECT_EQ(client_->requests(), before + 1);
  ASSERT_TRUE(client_->Dump(Family::kIPv4, std::nullopt).ok());
  EXPECT_EQ(client_->requests(), before + 5);  // tables, chains, rules, sets
}

// One object asked for by name is answered by its message alone (no ACK is asked for) or by NotFound, and the next
// request on the socket gets its own answer.
TEST_F(NetlinkClientTest, OneObjectByNameIsItsMessageOrNotFound) {
  ASSERT_EQ(Restore("*filter\n-N FOO\nCOMMIT\n"), "");
  std::string got;  // the answers' message types
  auto on_message = [&](const nlmsghdr* m) {
    got += std::to_string(m->nlmsg_type & 0xff) + ";";
    return Status::Ok();
  };
  auto table = [&](const char* name) {
    return client_->GetMessage(
        NFT_MSG_GETTABLE, NFPROTO_IPV4, [&](nlmsghdr* nlh) { mnl_attr_put_strz(nlh, NFTA_TABLE_NAME, name); },
        on_message);
  };
  auto chain = [&](const char* name) {
    return client_->GetMessage(
        NFT_MSG_GETCHAIN, NFPROTO_IPV4,
        [&](nlmsghdr* nlh) {
          mnl_attr_put_strz(nlh, NFTA_CHAIN_TABLE, "filter");
          mnl_attr_put_strz(nlh, NFTA_CHAIN_NAME, name);
        },
        on_message);
  };
  EXPECT_TRUE(table("filter").ok());
  EXPECT_EQ(table("nat").code(), StatusCode::kNotFound);
  EXPECT_TRUE(chain("FOO").ok());
  EXPECT_EQ(chain("BAR").code(), StatusCode::kNotFound);
  EXPECT_EQ(got, std::to_string(NFT_MSG_NEWTABLE) + ";" + std::to_string(NFT_MSG_NEWCHAIN) + ";");
  const uint32_t g = Gen();
  EXPECT_EQ(Gen(), g);
  EXPECT_EQ(client_->requests(NFT_MSG_GETTABLE, /*dump=*/false), 2u);
  EXPECT_EQ(client_->requests(NFT_MSG_GETCHAIN, /*dump=*/false), 2u);
  EXPECT_EQ(client_->requests(NFT_MSG_GETGEN, /*dump=*/false), 2u);
  Result<KernelView> view = client_->Dump(Family::kIPv4, std::string("filter"));
  ASSERT_TRUE(view.ok()) << view.status().ToString();
  EXPECT_EQ(view->at({"ip", "filter"}).chains.count("FOO"), 1u);
}

}  // namespace
}  // namespace iptkit::backend::nft
