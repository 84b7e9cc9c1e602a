// What each one-shot command asks the kernel on the native backend (root, a private network namespace; skips
// otherwise), counted per netlink request type. iptables-nft 1.8.9 reads for -A/-I: the generation, every table, the
// builtin chains and the named chain by name; for -D N/-R/-C/-D spec also the sets of the table and the rules of
// INPUT and of the named chain. iptkit asks for no more: no dump of every table or every chain, and the rules of the
// named chain only, whatever the number of other chains. A dump of every chain or table, or a rule dump of another
// chain, coming back makes these fail.
#include <gtest/gtest.h>
#include <linux/netfilter/nf_tables.h>
#include <unistd.h>

#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "iptkit/dialect.h"
#include "iptkit/firewall.h"
#include "src/backend/native/native_backend.h"
#include "src/backend/test_netns.h"

namespace iptkit {
namespace {

// Requests of one command: "GETGEN", "GETCHAIN", ... for requests of one object, "+dump" for dumps; zero counts left
// out.
using Requests = std::map<std::string, uint64_t>;

std::string Show(const Requests& r) {
  std::ostringstream out;
  for (const auto& [what, n] : r) out << what << "=" << n << " ";
  return out.str();
}

class FirewallReadsTest : public ::testing::Test {
 protected:
  static constexpr int kChains = 20;
  static constexpr int kRulesPerChain = 5;

  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root for network namespaces";
    ns_ = std::make_unique<backend::test::TestNetns>("iptkit-fwreads");
    ASSERT_TRUE(ns_->ok()) << ns_->error();
    // kChains user chains of kRulesPerChain rules, each jumped to from INPUT; a nat table beside filter.
    std::string text = "*nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -s 198.51.100.0/24 -j MASQUERADE\nCOMMIT\n";
    text += "*filter\n";
    for (int c = 0; c < kChains; ++c) text += ":c" + std::to_string(c) + " - [0:0]\n";
    for (int c = 0; c < kChains; ++c) {
      for (int r = 0; r < kRulesPerChain; ++r) {
        text += "-A c" + std::to_string(c) + " -s 10.0." + std::to_string(c) + "." + std::to_string(r) +
                "/32 -p tcp -m tcp --dport 22 -j ACCEPT\n";
      }
    }
    for (int c = 0; c < kChains; ++c) text += "-A INPUT -j c" + std::to_string(c) + "\n";
    text += "COMMIT\n";
    ASSERT_EQ(ns_->Exec({"/usr/sbin/iptables-nft-restore"}, text), "");
  }

  // A Firewall on a fresh native backend (as one iptkit process has), and that backend. `event_cache`: the daemon's
  // kind of handle (BackendOptions::event_cache).
  std::unique_ptr<Firewall> Open(backend::native::NativeBackend** native, bool event_cache = false) {
    backend::BackendOptions options;
    options.netns = ns_->name();
    options.event_cache = event_cache;
    auto b = backend::native::NativeBackend::Create(options);
    EXPECT_TRUE(b.ok()) << b.status().ToString();
    if (!b.ok()) return nullptr;
    *native = b->get();
    FirewallOptions fw;
    fw.netns = ns_->name();
    return Firewall::WithBackend(std::move(b).value(), fw);
  }

  static Requests Count(const backend::native::NativeBackend& native) {
    static const std::map<uint16_t, std::string> kTypes = {
        {NFT_MSG_GETGEN, "GETGEN"},     {NFT_MSG_GETTABLE, "GETTABLE"},
        {NFT_MSG_GETCHAIN, "GETCHAIN"}, {NFT_MSG_GETRULE, "GETRULE"},
        {NFT_MSG_GETSET, "GETSET"},     {NFT_MSG_GETSETELEM, "GETSETELEM"},
        {NFT_MSG_GETOBJ, "GETOBJ"},     {NFT_MSG_GETFLOWTABLE, "GETFLOWTABLE"}};
    Requests out;
    uint64_t counted = 0;
    for (const auto& [type, name] : kTypes) {
      for (bool dump : {false, true}) {
        const uint64_t n = native.netlink().requests(type, dump);
        counted += n;
        if (n != 0) out[name + (dump ? "+dump" : "")] = n;
      }
    }
    // Everything else (the commit's batch, anything not a read above).
    if (native.netlink().requests() != counted) out["other"] = native.netlink().requests() - counted;
    return out;
  }

  // What `command` asks the kernel, on a backend of its own.
  Requests Asks(const std::function<void(Firewall&)>& command) {
    backend::native::NativeBackend* native = nullptr;
    std::unique_ptr<Firewall> fw = Open(&native);
    if (fw == nullptr) return {};
    command(*fw);
    return Count(*native);
  }

  Rule Spec(const std::string& spec) {
    Result<Rule> r = ParseRuleSpec(spec, Family::kIPv4);
    EXPECT_TRUE(r.ok()) << spec << ": " << r.status().ToString();
    return r.ok() ? *r : Rule{};
  }
  void Commit(Firewall& fw, const Transaction& txn) {
    Result<CommitResult> r = fw.Commit(txn);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
  }
  std::string Chain(const std::string& chain) const {
    std::istringstream in(ns_->Output({"/usr/sbin/iptables-nft-save", "-t", "filter"}));
    std::string out;
    for (std::string line; std::getline(in, line);) {
      if (line.starts_with("-A " + chain + " ")) out += line + "\n";
    }
    return out;
  }

  std::unique_ptr<backend::test::TestNetns> ns_;
};

constexpr Family v4 = Family::kIPv4;
const char* const kProbe = "-s 192.0.2.1/32 -p tcp -m tcp --dport 22 -j ACCEPT";

TEST_F(FirewallReadsTest, AppendAndInsertAtTheHeadReadTheirChainOnlyAndNoRules) {
  Requests append = Asks([&](Firewall& fw) { Commit(fw, Transaction().Append(v4, "filter", "c7", Spec(kProbe))); });
  EXPECT_EQ(append, (Requests{{"GETGEN", 2}, {"GETCHAIN", 1}, {"other", 1}})) << Show(append);
  Requests insert = Asks([&](Firewall& fw) { Commit(fw, Transaction().Insert(v4, "filter", "c7", 1, Spec(kProbe))); });
  EXPECT_EQ(insert, (Requests{{"GETGEN", 2}, {"GETCHAIN", 1}, {"other", 1}})) << Show(insert);
  const std::string c7 = Chain("c7");
  EXPECT_TRUE(c7.starts_with(std::string("-A c7 ") + kProbe + "\n")) << c7;
  EXPECT_TRUE(c7.ends_with(std::string("-A c7 ") + kProbe + "\n")) << c7;
}

TEST_F(FirewallReadsTest, DeleteByNumberAndReplaceReadTheirChainsRulesOnly) {
  Requests del = Asks([&](Firewall& fw) { Commit(fw, Transaction().DeleteAt(v4, "filter", "c7", 2)); });
  EXPECT_EQ(del, (Requests{{"GETGEN", 2}, {"GETCHAIN", 1}, {"GETRULE+dump", 1}, {"other", 1}})) << Show(del);
  Requests replace =
      Asks([&](Firewall& fw) { Commit(fw, Transaction().Replace(v4, "filter", "c7", 1, Spec(kProbe))); });
  EXPECT_EQ(replace, (Requests{{"GETGEN", 2}, {"GETCHAIN", 1}, {"GETRULE+dump", 1}, {"other", 1}})) << Show(replace);
  EXPECT_EQ(Chain("c7"), std::string("-A c7 ") + kProbe +
                             "\n-A c7 -s 10.0.7.2/32 -p tcp -m tcp --dport 22 -j ACCEPT\n"
                             "-A c7 -s 10.0.7.3/32 -p tcp -m tcp --dport 22 -j ACCEPT\n"
                             "-A c7 -s 10.0.7.4/32 -p tcp -m tcp --dport 22 -j ACCEPT\n");
}

TEST_F(FirewallReadsTest, DeleteBySpecAndCheckReadTheirChainsRulesOnly) {
  Requests del = Asks([&](Firewall& fw) {
    Commit(fw, Transaction().Delete(v4, "filter", "c7", Spec("-s 10.0.7.3 -p tcp --dport 22 -j ACCEPT")));
  });
  // iptables-nft -D reads the table's sets too (a rule may look one up); so does iptkit, in the same read.
  EXPECT_EQ(del, (Requests{{"GETGEN", 2}, {"GETCHAIN", 1}, {"GETRULE+dump", 1}, {"GETSET+dump", 1}, {"other", 1}}))
      << Show(del);
  EXPECT_EQ(Chain("c7").find("10.0.7.3/32"), std::string::npos);
  Requests check = Asks([&](Firewall& fw) {
    Result<bool> found = fw.Check(v4, "filter", "c7", Spec("-s 10.0.7.4 -p tcp --dport 22 -j ACCEPT"));
    ASSERT_TRUE(found.ok()) << found.status().ToString();
    EXPECT_TRUE(*found);
  });
  EXPECT_EQ(check, (Requests{{"GETRULE+dump", 1}})) << Show(check);
}

// A plan's tables are listed by name: a chain to create in a table that exists asks for that table (no dump of
// every table), a table that does not exist yet is created with the builtin chain an append needs.
TEST_F(FirewallReadsTest, TablesAreAskedForByNameWhenNoNamedChainShowsThem) {
  Requests create = Asks([&](Firewall& fw) { Commit(fw, Transaction().CreateChain(v4, "filter", "new")); });
  EXPECT_EQ(create, (Requests{{"GETGEN", 2}, {"GETCHAIN", 1}, {"GETTABLE", 1}, {"other", 1}})) << Show(create);
  EXPECT_NE(ns_->Output({"/usr/sbin/iptables-nft-save", "-t", "filter"}).find(":new - [0:0]"), std::string::npos);
  Requests mangle = Asks([&](Firewall& fw) {
    Commit(fw, Transaction().Append(v4, "mangle", "PREROUTING", Spec("-s 192.0.2.9/32 -j ACCEPT")));
  });
  EXPECT_EQ(mangle, (Requests{{"GETGEN", 2}, {"GETCHAIN", 1}, {"GETTABLE", 1}, {"other", 1}})) << Show(mangle);
  EXPECT_NE(
      ns_->Output({"/usr/sbin/iptables-nft-save", "-t", "mangle"}).find("-A PREROUTING -s 192.0.2.9/32 -j ACCEPT"),
      std::string::npos);
}

// A snapshot read for a plan on filter lists filter only: a later plan on another table of the same backend is not
// planned on it (the nat table would be missing from it, and a flush of nat would flush nothing).
TEST_F(FirewallReadsTest, SnapshotOfOneTableDoesNotAnswerAPlanOnAnother) {
  backend::native::NativeBackend* native = nullptr;
  std::unique_ptr<Firewall> fw = Open(&native);
  ASSERT_NE(fw, nullptr);
  Commit(*fw, Transaction().Append(v4, "filter", "c7", Spec(kProbe)));
  Commit(*fw, Transaction().Flush(v4, "nat"));
  const std::string nat = ns_->Output({"/usr/sbin/iptables-nft-save", "-t", "nat"});
  EXPECT_EQ(nat.find("MASQUERADE"), std::string::npos) << nat;
}

// A long-lived handle keeps what it listed: a delete by spec right after a listing (and after its own append) is
// planned on it, the generation id saying nothing changed, and reads no rule; the rule deleted is the first equal
// one. Regression: the warm default handle dumped and decoded the whole chain for each delete by spec.
TEST_F(FirewallReadsTest, DeleteBySpecAfterAListingReadsNoRules) {
  backend::native::NativeBackend* native = nullptr;
  std::unique_ptr<Firewall> fw = Open(&native);
  ASSERT_NE(fw, nullptr);
  ASSERT_TRUE(fw->List(v4, "filter").ok());
  Commit(*fw, Transaction().Append(v4, "filter", "c7", Spec(kProbe)));
  const Requests before = Count(*native);
  Commit(*fw, Transaction().Delete(v4, "filter", "c7", Spec("-s 10.0.7.3 -p tcp --dport 22 -j ACCEPT")));
  Requests del = Count(*native);
  for (const auto& [what, n] : before) del[what] -= n;
  std::erase_if(del, [](const auto& r) { return r.second == 0; });
  EXPECT_EQ(del, (Requests{{"GETGEN", 1}, {"other", 1}})) << Show(del);
  EXPECT_EQ(Chain("c7"),
            "-A c7 -s 10.0.7.0/32 -p tcp -m tcp --dport 22 -j ACCEPT\n"
            "-A c7 -s 10.0.7.1/32 -p tcp -m tcp --dport 22 -j ACCEPT\n"
            "-A c7 -s 10.0.7.2/32 -p tcp -m tcp --dport 22 -j ACCEPT\n"
            "-A c7 -s 10.0.7.4/32 -p tcp -m tcp --dport 22 -j ACCEPT\n" +
                std::string("-A c7 ") + kProbe + "\n");
}

// After a foreign write the kept snapshot is not used as it was: iptables-nft inserts a rule equal to the handle's own
// appended one at the head of the chain, and a delete by spec through the warm handle deletes that first one, not
// the one the handle added (the last). Both kinds of handle; with two deletes in one transaction both go.
TEST_F(FirewallReadsTest, DeleteBySpecAfterAForeignWriteDeletesTheFirstEqualRule) {
  for (bool event_cache : {false, true}) {
    SCOPED_TRACE(event_cache ? "event cache" : "default handle");
    backend::native::NativeBackend* native = nullptr;
    std::unique_ptr<Firewall> fw = Open(&native, event_cache);
    ASSERT_NE(fw, nullptr);
    ASSERT_TRUE(fw->List(v4, "filter").ok());
    Commit(*fw, Transaction().Append(v4, "filter", "c7", Spec(kProbe)));
    ASSERT_EQ(ns_->Exec({"/usr/sbin/iptables-nft", "-t", "filter", "-I", "c7", "1", "-s", "192.0.2.1/32", "-p", "tcp",
                         "-m", "tcp", "--dport", "22", "-j", "ACCEPT"}),
              "");
    Commit(*fw, Transaction().Delete(v4, "filter", "c7", Spec(kProbe)));
    const std::string c7 = Chain("c7");
    EXPECT_TRUE(c7.starts_with("-A c7 -s 10.0.7.0/32 ")) << c7;
    EXPECT_TRUE(c7.ends_with(std::string("-A c7 ") + kProbe + "\n")) << c7;
    ASSERT_EQ(ns_->Exec({"/usr/sbin/iptables-nft", "-t", "filter", "-I", "c7", "2", "-s", "192.0.2.1/32", "-p", "tcp",
                         "-m", "tcp", "--dport", "22", "-j", "ACCEPT"}),
              "");
    Commit(*fw, Transaction().Delete(v4, "filter", "c7", Spec(kProbe)).Delete(v4, "filter", "c7", Spec(kProbe)));
    EXPECT_EQ(Chain("c7").find("192.0.2.1"), std::string::npos) << Chain("c7");
    EXPECT_EQ(Chain("c7").size(), 5 * std::string("-A c7 -s 10.0.7.0/32 -p tcp -m tcp --dport 22 -j ACCEPT\n").size());
  }
}

// A delete by spec planned on a kept snapshot that finds no equal rule still says, as a read of the chain does,
// when an owned rule equals the spec but for its owner tag (and which one). Both kinds of handle.
TEST_F(FirewallReadsTest, DeleteBySpecOfAnOwnedRuleWithoutItsTagNamesTheOwner) {
  for (bool event_cache : {false, true}) {
    SCOPED_TRACE(event_cache ? "event cache" : "default handle");
    backend::native::NativeBackend* native = nullptr;
    std::unique_ptr<Firewall> fw = Open(&native, event_cache);
    ASSERT_NE(fw, nullptr);
    Rule owned = Spec(kProbe);
    owned.SetOwnerTag({"app", event_cache ? "r2" : "r1"});
    Commit(*fw, Transaction().Append(v4, "filter", "c7", owned));
    ASSERT_TRUE(fw->List(v4, "filter").ok());
    Result<CommitResult> refused = fw->Commit(Transaction().Delete(v4, "filter", "c7", Spec(kProbe)));
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(refused.status().code(), StatusCode::kNotFound) << refused.status().ToString();
    EXPECT_NE(refused.status().message().find("rule 6 equals it but belongs to owner 'app'"), std::string::npos)
        << refused.status().ToString();
    Commit(*fw, Transaction().Delete(v4, "filter", "c7", owned));
  }
}

}  // namespace
}  // namespace iptkit
