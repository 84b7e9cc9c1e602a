// Shared fixtures of the txn unit tests: a Firewall over FaultBackend(FakeBackend) loaded with a small ruleset
// whose every rule carries distinct counters, so rollbacks can be compared byte for byte (counters included).
#ifndef IPTKIT_SRC_TXN_TXN_TEST_UTIL_H_
#define IPTKIT_SRC_TXN_TXN_TEST_UTIL_H_

#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <string>

#include "iptkit/dialect.h"
#include "iptkit/firewall.h"
#include "src/backend/backend_test_util.h"
#include "src/backend/fake/fake_backend.h"
#include "src/backend/fake/fault_backend.h"

namespace iptkit::txn_test {

inline constexpr Family v4 = Family::kIPv4;
inline constexpr Family v6 = Family::kIPv6;

inline constexpr std::string_view kBaseV4 =
    "*filter\n"
    ":INPUT DROP [0:0]\n"
    ":FORWARD ACCEPT [0:0]\n"
    ":OUTPUT ACCEPT [0:0]\n"
    ":LOGDROP - [0:0]\n"
    ":SSH - [0:0]\n"
    "-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n"
    "-A INPUT -p tcp -m tcp --dport 22 -j SSH\n"
    "-A INPUT -s 10.0.0.0/8 -j ACCEPT\n"
    "-A INPUT -j LOGDROP\n"
    "-A OUTPUT -j SSH\n"
    "-A LOGDROP -j LOG --log-prefix \"drop: \"\n"
    "-A LOGDROP -j DROP\n"
    "-A SSH -s 192.168.0.0/16 -j ACCEPT\n"
    "COMMIT\n"
    "*nat\n"
    ":PREROUTING ACCEPT [0:0]\n"
    ":INPUT ACCEPT [0:0]\n"
    ":OUTPUT ACCEPT [0:0]\n"
    ":POSTROUTING ACCEPT [0:0]\n"
    "-A POSTROUTING -o eth0 -j MASQUERADE\n"
    "COMMIT\n";

inline constexpr std::string_view kBaseV6 =
    "*filter\n"
    ":INPUT ACCEPT [0:0]\n"
    ":FORWARD DROP [0:0]\n"
    ":OUTPUT ACCEPT [0:0]\n"
    "-A INPUT -s 2001:db8::/32 -j ACCEPT\n"
    "-A INPUT -p ipv6-icmp -j ACCEPT\n"
    "COMMIT\n";

// R(spec, family = IPv4): the parsed rule. TOp(kind, chain, spec = "", index = 0, arg = ""): a TableOp.
using backend_test::R;
using backend_test::TOp;

class FirewallFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    auto fake = std::make_unique<backend::FakeBackend>();
    fake_ = fake.get();
    auto fault = std::make_unique<backend::FaultBackend>(std::move(fake));
    fault_ = fault.get();
    FirewallOptions options;
    options.backend = BackendKind::kFake;
    options.netns = "test-ns";
    options.before_commit_hook = [this] {
      if (hook_) hook_();
    };
    fw_ = Firewall::WithBackend(std::move(fault), options);
    ASSERT_TRUE(fake_->LoadSave(v4, kBaseV4).ok());
    ASSERT_TRUE(fake_->LoadSave(v6, kBaseV6).ok());
    ASSERT_EQ(Save(v4), kBaseV4) << "the dialect printer must round-trip the fixture";
    // Distinct counters on every rule and on the builtin chains' policies.
    uint64_t n = 1;
    for (Family family : {v4, v6}) {
      Ruleset rs = *fake_->Read(family);
      for (auto& table : rs.tables) {
        for (auto& chain : table.chains) {
          if (chain.builtin()) chain.counters = {n * 1000, n * 100000};
          for (auto& rule : chain.rules) rule.counters = {n, n * 100};
          ++n;
        }
      }
      fake_->SetRuleset(std::move(rs));
    }
    before_ = SaveAll();
  }

  std::string Save(Family family, bool counters = false) {
    Result<Ruleset> rs = fake_->Read(family);
    EXPECT_TRUE(rs.ok()) << rs.status().ToString();
    return rs.ok() ? FormatSave(*rs, {.counters = counters}) : "";
  }
  // Both families with counters.
  std::string SaveAll() { return Save(v4, true) + Save(v6, true); }
  const Chain& ChainOf(Family family, const std::string& table, const std::string& chain) {
    static Chain empty;
    snapshot_ = *fake_->Read(family, table);
    const Chain* c = snapshot_.tables.at(0).FindChain(chain);
    EXPECT_NE(c, nullptr) << chain;
    return c == nullptr ? empty : *c;
  }
  std::vector<std::string> Specs(Family family, const std::string& table, const std::string& chain) {
    std::vector<std::string> out;
    for (const auto& r : ChainOf(family, table, chain).rules) out.push_back(FormatRuleSpec(r));
    return out;
  }
  // A foreign writer: commits straight to the fake, under iptkit's feet.
  void Foreign(backend::TableOp op, std::string table = "filter", Family family = Family::kIPv4) {
    backend::TableBatch b;
    b.family = family;
    b.table = std::move(table);
    b.ops.push_back(std::move(op));
    ASSERT_TRUE(fake_->Commit(b).ok());
  }

  backend::FakeBackend* fake_ = nullptr;
  backend::FaultBackend* fault_ = nullptr;
  std::unique_ptr<Firewall> fw_;
  std::function<void()> hook_;
  std::string before_;
  Ruleset snapshot_;
};

}  // namespace iptkit::txn_test

#endif  // IPTKIT_SRC_TXN_TXN_TEST_UTIL_H_
