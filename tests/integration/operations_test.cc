// Every imperative operation through the public API, on both backends (nft, legacy) and both families, checked
// against the real iptables-save output; and the classes of bad input, each of which must return its error
// code and leave the kernel state byte-identical.
#include <gtest/gtest.h>

#include "iptkit/dialect.h"
#include "iptkit/firewall.h"
#include "tests/integration/library_util.h"
#include "tests/integration/test_util.h"

namespace iptkit::integration {
namespace {

struct OpsParam {
  BackendKind backend;
  Family family;
};

class OperationsTest : public ::testing::TestWithParam<OpsParam> {
 protected:
  void SetUp() override {
    IPTKIT_REQUIRE_ROOT();
    ASSERT_OK_AND_ASSIGN(ns_, TestNetns::Create());
    IPTKIT_REQUIRE_VARIANT(*ns_, variant(), family());
    CommandResult loaded = ns_->Restore(variant(), family(), Base());
    ASSERT_TRUE(loaded.ok()) << loaded.Describe();
    ASSERT_OK_AND_ASSIGN(fw_, OpenFirewall(*ns_, GetParam().backend));
  }

  Variant variant() const { return VariantOf(GetParam().backend); }
  Family family() const { return GetParam().family; }
  bool v4() const { return family() == Family::kIPv4; }
  // Host addresses as the user types them and as iptables-save prints them.
  std::string H(int n) const { return v4() ? "192.0.2." + std::to_string(n) : "2001:db8::" + std::to_string(n); }
  std::string HS(int n) const { return H(n) + (v4() ? "/32" : "/128"); }
  std::string Net() const { return v4() ? "198.51.100.0/24" : "2001:db8:1::/48"; }

  // The starting ruleset (canonical, as iptables-save prints it) and its INPUT rules R1..R4.
  std::string R1() const { return "-A INPUT -i lo -j ACCEPT"; }
  std::string R2() const { return "-A INPUT -s " + HS(1) + " -p tcp -m tcp --dport 22 -j ACCEPT"; }
  std::string R3() const { return "-A INPUT -p tcp -m tcp --dport 80 -j IT-WEB"; }
  std::string R4() const { return "-A INPUT -s " + HS(2) + " -j DROP"; }
  std::string Base(bool counters = false) const {
    auto c = [&](const char* pc) { return counters ? std::string(pc) + " " : std::string(); };
    return "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
           "-A POSTROUTING -s " +
           Net() +
           " -j MASQUERADE\n"
           "COMMIT\n"
           "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:IT-WEB - [0:0]\n" +
           c("[1:100]") + R1() + "\n" + c("[2:200]") + R2() + "\n" + c("[3:300]") + R3() + "\n" + c("[4:400]") + R4() +
           "\n" + c("[6:600]") + "-A IT-WEB -s " + Net() + " -j ACCEPT\n" + c("[7:700]") +
           "-A IT-WEB -j RETURN\n"
           "COMMIT\n";
  }

  Rule S(const std::string& spec) const { return Spec(spec, family()); }
  Result<std::string> SaveAll() const { return ns_->Save(variant(), family()); }
  std::string SaveFilter(bool counters = false) const {
    Result<std::string> s = ns_->Save(variant(), family(), "filter", counters);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return s.ok() ? *s : "";
  }
  std::vector<std::string> Chain(const std::string& chain) const { return RuleLines(SaveFilter(), "filter", chain); }
  std::vector<std::string> Declarations() const {
    std::vector<std::string> out;
    for (const auto& [name, text] : ChainTexts(SaveFilter())) out.push_back(text.substr(0, text.find('\n')));
    return out;
  }
  Status CommitOne(Transaction txn) {
    Result<CommitResult> r = fw_->Commit(txn);
    return r.ok() ? Status::Ok() : r.status();
  }
  // Commits `txn`, expects `code` and the kernel state (all tables of the family) unchanged.
  void ExpectRejectedUnchanged(const Transaction& txn, StatusCode code) {
    Result<std::string> before = SaveAll();
    ASSERT_TRUE(before.ok()) << before.status().ToString();
    Result<CommitResult> r = fw_->Commit(txn);
    ASSERT_FALSE(r.ok()) << "accepted a bad transaction";
    EXPECT_EQ(r.status().code(), code) << r.status().ToString();
    EXPECT_FALSE(r.status().message().empty());
    Result<std::string> after = SaveAll();
    ASSERT_TRUE(after.ok()) << after.status().ToString();
    EXPECT_EQ(*after, *before) << "a rejected transaction changed the kernel state";
  }
  Family f() const { return family(); }

  std::unique_ptr<TestNetns> ns_;
  std::unique_ptr<Firewall> fw_;
};

using V = std::vector<std::string>;

TEST_P(OperationsTest, AppendCanonicalizesUserSpec) {
  Transaction txn;
  txn.Append(f(), "filter", "INPUT", S("-p tcp --dport 443 -s " + H(3) + " -j ACCEPT"));
  ASSERT_OK_AND_ASSIGN(CommitResult done, fw_->Commit(txn));
  ASSERT_EQ(done.tables.size(), 1u);
  EXPECT_EQ(done.tables[0].table, "filter");
  EXPECT_EQ(Chain("INPUT"),
            (V{R1(), R2(), R3(), R4(), "-A INPUT -s " + HS(3) + " -p tcp -m tcp --dport 443 -j ACCEPT"}));
}

TEST_P(OperationsTest, InsertAtFrontMiddleAndEnd) {
  Transaction txn;
  txn.Insert(f(), "filter", "INPUT", 1, S("-s " + H(5) + " -j DROP"));
  txn.Insert(f(), "filter", "INPUT", 3, S("-s " + H(6) + " -j DROP"));
  txn.Insert(f(), "filter", "INPUT", 7, S("-s " + H(7) + " -j DROP"));  // size + 1: appends
  ASSERT_STATUS_OK(CommitOne(txn));
  EXPECT_EQ(Chain("INPUT"), (V{"-A INPUT -s " + HS(5) + " -j DROP", R1(), "-A INPUT -s " + HS(6) + " -j DROP", R2(),
                               R3(), R4(), "-A INPUT -s " + HS(7) + " -j DROP"}));
}

TEST_P(OperationsTest, DeleteBySpecInUserForm) {
  Transaction txn;
  txn.Delete(f(), "filter", "INPUT", S("-p tcp --dport 22 -s " + H(1) + " -j ACCEPT"));
  ASSERT_STATUS_OK(CommitOne(txn));
  EXPECT_EQ(Chain("INPUT"), (V{R1(), R3(), R4()}));
}

TEST_P(OperationsTest, DeleteAtWithExpect) {
  Transaction txn;
  txn.DeleteAt(f(), "filter", "INPUT", 2, S("-s " + H(1) + " -p tcp --dport 22 -j ACCEPT"));
  ASSERT_STATUS_OK(CommitOne(txn));
  EXPECT_EQ(Chain("INPUT"), (V{R1(), R3(), R4()}));
  Transaction plain;
  plain.DeleteAt(f(), "filter", "INPUT", 1);
  ASSERT_STATUS_OK(CommitOne(plain));
  EXPECT_EQ(Chain("INPUT"), (V{R3(), R4()}));
}

TEST_P(OperationsTest, ReplaceAtWithAndWithoutExpect) {
  Transaction txn;
  txn.Replace(f(), "filter", "INPUT", 4, S("-s " + H(8) + " -j REJECT"), S("-s " + H(2) + " -j DROP"));
  ASSERT_STATUS_OK(CommitOne(txn));
  std::string reject =
      v4() ? "-j REJECT --reject-with icmp-port-unreachable" : "-j REJECT --reject-with icmp6-port-unreachable";
  EXPECT_EQ(Chain("INPUT"), (V{R1(), R2(), R3(), "-A INPUT -s " + HS(8) + " " + reject}));
  Transaction plain;
  plain.Replace(f(), "filter", "INPUT", 1, S("-i lo -p udp -j ACCEPT"));
  ASSERT_STATUS_OK(CommitOne(plain));
  EXPECT_EQ(Chain("INPUT")[0], "-A INPUT -i lo -p udp -j ACCEPT");
}

TEST_P(OperationsTest, CreateRenameAndDeleteChain) {
  Transaction create;
  create.CreateChain(f(), "filter", "IT-NEW");
  ASSERT_STATUS_OK(CommitOne(create));
  EXPECT_EQ(Declarations(), (V{":FORWARD ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":IT-NEW - [0:0]", ":IT-WEB - [0:0]",
                               ":OUTPUT ACCEPT [0:0]"}));
  ExpectRejectedUnchanged(Transaction().CreateChain(f(), "filter", "IT-NEW"), StatusCode::kAlreadyExists);

  // Renaming keeps the rules and the references (they follow the chain, as with iptables -E).
  ASSERT_STATUS_OK(CommitOne(Transaction().RenameChain(f(), "filter", "IT-WEB", "IT-HTTP")));
  EXPECT_EQ(Chain("INPUT"), (V{R1(), R2(), "-A INPUT -p tcp -m tcp --dport 80 -j IT-HTTP", R4()}));
  EXPECT_EQ(Chain("IT-HTTP"), (V{"-A IT-HTTP -s " + Net() + " -j ACCEPT", "-A IT-HTTP -j RETURN"}));
  EXPECT_TRUE(Chain("IT-WEB").empty());

  ASSERT_STATUS_OK(CommitOne(Transaction().DeleteChain(f(), "filter", "IT-NEW")));
  EXPECT_EQ(Declarations(),
            (V{":FORWARD ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":IT-HTTP - [0:0]", ":OUTPUT ACCEPT [0:0]"}));
  ExpectRejectedUnchanged(Transaction().DeleteChain(f(), "filter", "IT-NEW"), StatusCode::kNotFound);
}

// Regression: iptables-nft-restore 1.8.9 fails at COMMIT when a block renames a chain and then uses the new name;
// iptkit refuses that transaction up front on nft (naming the op) and commits it on legacy, where it works.
TEST_P(OperationsTest, RenameThenUseNewNameInOneTransaction) {
  Transaction txn;
  txn.RenameChain(f(), "filter", "IT-WEB", "IT-HTTP");
  txn.Append(f(), "filter", "IT-HTTP", S("-j ACCEPT"));
  if (variant() == Variant::kNft) {
    ExpectRejectedUnchanged(txn, StatusCode::kInvalidArgument);
    Result<CommitResult> refused = fw_->Commit(txn);
    ASSERT_FALSE(refused.ok());
    EXPECT_NE(refused.status().message().find("op 2 (append"), std::string::npos) << refused.status().ToString();
  } else {
    ASSERT_STATUS_OK(CommitOne(txn));
    EXPECT_EQ(Chain("IT-HTTP"),
              (V{"-A IT-HTTP -s " + Net() + " -j ACCEPT", "-A IT-HTTP -j RETURN", "-A IT-HTTP -j ACCEPT"}));
  }
}

TEST_P(OperationsTest, DeleteReferencedChainListsReferencesAndCascades) {
  CommandResult flushed = ns_->Iptables(variant(), family(), {"-F", "IT-WEB"});
  ASSERT_TRUE(flushed.ok()) << flushed.Describe();
  Result<std::string> before = SaveAll();
  ASSERT_TRUE(before.ok());
  Result<CommitResult> refused = fw_->Commit(Transaction().DeleteChain(f(), "filter", "IT-WEB"));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kFailedPrecondition) << refused.status().ToString();
  EXPECT_NE(refused.status().message().find("--dport 80"), std::string::npos)
      << "the error must list the referencing rule: " << refused.status().message();
  EXPECT_EQ(*SaveAll(), *before);

  ASSERT_STATUS_OK(CommitOne(Transaction().DeleteChain(f(), "filter", "IT-WEB", /*cascade=*/true)));
  EXPECT_EQ(Chain("INPUT"), (V{R1(), R2(), R4()}));
  EXPECT_EQ(Declarations(), (V{":FORWARD ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]"}));
}

TEST_P(OperationsTest, FlushChainThenTable) {
  ASSERT_STATUS_OK(CommitOne(Transaction().Flush(f(), "filter", "INPUT")));
  EXPECT_TRUE(Chain("INPUT").empty());
  EXPECT_EQ(Chain("IT-WEB").size(), 2u);
  ASSERT_STATUS_OK(CommitOne(Transaction().Flush(f(), "filter")));
  EXPECT_TRUE(Chain("IT-WEB").empty());
  // Flushing keeps the chains and their policies.
  EXPECT_EQ(Declarations(),
            (V{":FORWARD ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":IT-WEB - [0:0]", ":OUTPUT ACCEPT [0:0]"}));
  Result<std::string> nat = ns_->Save(variant(), family(), "nat");
  ASSERT_TRUE(nat.ok());
  EXPECT_EQ(RuleLines(*nat, "nat", "POSTROUTING").size(), 1u) << "flush of filter touched nat";
}

TEST_P(OperationsTest, ZeroChainThenTable) {
  if (variant() == Variant::kNft && family() == Family::kIPv6) {
    // ip6tables-nft-restore -c (iptables 1.8.9) drops rule counters, so this fixture cannot preset them there.
    GTEST_SKIP() << "ip6tables-nft-restore -c does not restore rule counters";
  }
  CommandResult loaded = ns_->Exec({IptablesTool(variant(), family(), "-restore"), "-c"}, Base(true));
  ASSERT_TRUE(loaded.ok()) << loaded.Describe();
  ASSERT_NE(SaveFilter(true).find("[2:200] " + R2()), std::string::npos) << SaveFilter(true);
  ASSERT_STATUS_OK(CommitOne(Transaction().Zero(f(), "filter", "INPUT")));
  std::string saved = SaveFilter(true);
  EXPECT_NE(saved.find("[0:0] " + R2()), std::string::npos) << saved;
  EXPECT_NE(saved.find("[7:700] -A IT-WEB -j RETURN"), std::string::npos) << "zero INPUT touched IT-WEB: " << saved;
  ASSERT_STATUS_OK(CommitOne(Transaction().Zero(f(), "filter")));
  saved = SaveFilter(true);
  EXPECT_NE(saved.find("[0:0] -A IT-WEB -j RETURN"), std::string::npos) << saved;
  EXPECT_EQ(saved.find("00] "), std::string::npos) << "counters left: " << saved;
}

TEST_P(OperationsTest, PolicyOnBuiltinChain) {
  ASSERT_STATUS_OK(CommitOne(Transaction().SetPolicy(f(), "filter", "INPUT", "DROP")));
  EXPECT_EQ(Declarations()[1], ":INPUT DROP [0:0]");
  EXPECT_EQ(Chain("INPUT"), (V{R1(), R2(), R3(), R4()}));
  ASSERT_STATUS_OK(CommitOne(Transaction().SetPolicy(f(), "filter", "INPUT", "ACCEPT")));
  EXPECT_EQ(Declarations()[1], ":INPUT ACCEPT [0:0]");
}

TEST_P(OperationsTest, CheckFindsCanonicalEquivalent) {
  ASSERT_OK_AND_ASSIGN(bool present,
                       fw_->Check(f(), "filter", "INPUT", S("-p tcp --dport 22 -s " + H(1) + " -j ACCEPT")));
  EXPECT_TRUE(present);
  ASSERT_OK_AND_ASSIGN(bool absent,
                       fw_->Check(f(), "filter", "INPUT", S("-s " + H(1) + " -p tcp --dport 23 -j ACCEPT")));
  EXPECT_FALSE(absent);
  EXPECT_EQ(fw_->Check(f(), "filter", "NO-SUCH", S("-j ACCEPT")).status().code(), StatusCode::kNotFound);
}

TEST_P(OperationsTest, ListReturnsRulesAndCounters) {
  if (variant() == Variant::kNft && family() == Family::kIPv6) {
    // ip6tables-nft-restore -c (iptables 1.8.9) drops rule counters, so this fixture cannot preset them there.
    GTEST_SKIP() << "ip6tables-nft-restore -c does not restore rule counters";
  }
  CommandResult loaded = ns_->Exec({IptablesTool(variant(), family(), "-restore"), "-c"}, Base(true));
  ASSERT_TRUE(loaded.ok()) << loaded.Describe();
  ASSERT_OK_AND_ASSIGN(Ruleset rs, fw_->List(f(), "filter"));
  EXPECT_EQ(rs.family, f());
  ASSERT_EQ(rs.tables.size(), 1u);
  const Table& filter = rs.tables[0];
  EXPECT_EQ(filter.name, "filter");
  EXPECT_TRUE(filter.unrepresentable_reason.empty()) << filter.unrepresentable_reason;
  const iptkit::Chain* input = filter.FindChain("INPUT");
  ASSERT_NE(input, nullptr);
  EXPECT_EQ(input->policy, std::optional<std::string>("ACCEPT"));
  ASSERT_EQ(input->rules.size(), 4u);
  EXPECT_EQ(FormatRuleSpec(input->rules[1]), R2().substr(9));
  EXPECT_EQ(input->rules[1], S(R2().substr(9)));
  EXPECT_EQ(input->rules[1].counters, (Counters{2, 200}));
  const iptkit::Chain* web = filter.FindChain("IT-WEB");
  ASSERT_NE(web, nullptr);
  EXPECT_FALSE(web->builtin());
  EXPECT_EQ(web->rules.size(), 2u);
  ASSERT_OK_AND_ASSIGN(Ruleset all, fw_->List(f()));
  EXPECT_NE(all.FindTable("nat"), nullptr);
}

TEST_P(OperationsTest, SaveEqualsIptablesSave) {
  ASSERT_OK_AND_ASSIGN(std::string mine, fw_->Save(f()));
  ASSERT_OK_AND_ASSIGN(std::string theirs, SaveAll());
  EXPECT_EQ(SplitTables(mine), SplitTables(theirs));
  if (variant() == Variant::kNft) {
    EXPECT_EQ(mine, theirs);
  }
  ASSERT_OK_AND_ASSIGN(std::string filter, fw_->Save(f(), "filter"));
  EXPECT_EQ(filter, SaveFilter());
}

TEST_P(OperationsTest, RestoreReplacesNamedTablesOnly) {
  std::string text =
      "*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:IT-B - [0:0]\n"
      "-A INPUT -s " +
      HS(9) + " -j IT-B\n-A IT-B -j ACCEPT\nCOMMIT\n";
  Result<std::string> nat_before = ns_->Save(variant(), family(), "nat");
  ASSERT_TRUE(nat_before.ok());
  ASSERT_OK_AND_ASSIGN(CommitResult done, fw_->Restore(f(), text, {}));
  EXPECT_FALSE(done.dry_run);
  EXPECT_EQ(SaveFilter(), text);
  EXPECT_EQ(*ns_->Save(variant(), family(), "nat"), *nat_before);

  ASSERT_OK_AND_ASSIGN(CommitResult added,
                       fw_->Restore(f(), "*filter\n-A IT-B -s " + H(10) + " -j RETURN\nCOMMIT\n", {.noflush = true}));
  EXPECT_EQ(Chain("IT-B"), (V{"-A IT-B -j ACCEPT", "-A IT-B -s " + HS(10) + " -j RETURN"}));
  EXPECT_EQ(Declarations()[1], ":INPUT DROP [0:0]") << "noflush restore must keep the policy";

  std::string now = SaveFilter();
  ASSERT_OK_AND_ASSIGN(CommitResult dry, fw_->Restore(f(), Base(), {.dry_run = true}));
  EXPECT_TRUE(dry.dry_run);
  EXPECT_EQ(SaveFilter(), now) << "dry run changed the kernel";
}

TEST_P(OperationsTest, FailingOpAbortsWholeTransaction) {
  Transaction txn;
  txn.Append(f(), "filter", "INPUT", S("-s " + H(11) + " -j DROP"));
  txn.SetPolicy(f(), "filter", "FORWARD", "DROP");
  txn.Delete(f(), "filter", "INPUT", S("-s " + H(12) + " -j DROP"));  // not there
  ExpectRejectedUnchanged(txn, StatusCode::kNotFound);
}

// ---- Bad input classes: the error code, and nothing changed. ----

TEST_P(OperationsTest, DnatInFilterIsInvalid) {
  std::string to = v4() ? "10.0.0.1:80" : "[fd00::1]:80";
  ExpectRejectedUnchanged(
      Transaction().Append(f(), "filter", "INPUT", S("-p tcp --dport 8080 -j DNAT --to-destination " + to)),
      StatusCode::kInvalidArgument);
}

TEST_P(OperationsTest, MasqueradeInPreroutingIsInvalid) {
  ExpectRejectedUnchanged(Transaction().Append(f(), "nat", "PREROUTING", S("-j MASQUERADE")),
                          StatusCode::kInvalidArgument);
}

TEST_P(OperationsTest, PolicyOnUserChainIsInvalid) {
  ExpectRejectedUnchanged(Transaction().SetPolicy(f(), "filter", "IT-WEB", "DROP"), StatusCode::kInvalidArgument);
  ExpectRejectedUnchanged(Transaction().SetPolicy(f(), "filter", "INPUT", "REJECT"), StatusCode::kInvalidArgument);
}

TEST_P(OperationsTest, JumpToMissingChainIsNotFound) {
  ExpectRejectedUnchanged(Transaction().Append(f(), "filter", "INPUT", S("-p udp -j IT-MISSING")),
                          StatusCode::kNotFound);
  ExpectRejectedUnchanged(Transaction().Append(f(), "filter", "IT-MISSING", S("-j ACCEPT")), StatusCode::kNotFound);
}

TEST_P(OperationsTest, WrongExpectIsFailedPrecondition) {
  ExpectRejectedUnchanged(Transaction().DeleteAt(f(), "filter", "INPUT", 1, S("-s " + H(1) + " -j ACCEPT")),
                          StatusCode::kFailedPrecondition);
  ExpectRejectedUnchanged(Transaction().Replace(f(), "filter", "INPUT", 2, S("-j ACCEPT"), S("-i lo -j ACCEPT")),
                          StatusCode::kFailedPrecondition);
}

INSTANTIATE_TEST_SUITE_P(
    All, OperationsTest,
    ::testing::Values(OpsParam{BackendKind::kNative, Family::kIPv4}, OpsParam{BackendKind::kNative, Family::kIPv6},
                      OpsParam{BackendKind::kNft, Family::kIPv4}, OpsParam{BackendKind::kNft, Family::kIPv6},
                      OpsParam{BackendKind::kLegacy, Family::kIPv4}, OpsParam{BackendKind::kLegacy, Family::kIPv6},
                      OpsParam{BackendKind::kNativeLegacy, Family::kIPv4},
                      OpsParam{BackendKind::kNativeLegacy, Family::kIPv6}),
    [](const auto& info) {
      return BackendName(info.param.backend) + (info.param.family == Family::kIPv4 ? "_v4" : "_v6");
    });

}  // namespace
}  // namespace iptkit::integration
