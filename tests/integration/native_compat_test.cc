// The native backend and the iptables-nft CLI on the same rules: `iptables -C` / `-D` find the rules iptkit added
// (an owner's rules too, given with their `iptkit:owner:id` comment last), and iptkit deletes rules iptables added,
// by spec in user spelling and by number. iptables compares binary rule forms (nft.c nft_rule_cmp), so this holds
// only if iptkit encodes rules exactly as iptables-nft does.
#include <gtest/gtest.h>

#include "iptkit/firewall.h"
#include "tests/integration/library_util.h"
#include "tests/integration/test_util.h"

namespace iptkit::integration {
namespace {

// User spellings of rules with the extensions iptables-nft translates natively (tcp, udp, mark, limit), compat
// matches and targets, header fields of every kind.
const std::vector<std::vector<std::string>>& Specs4() {
  static const std::vector<std::vector<std::string>> specs = {
      {"-i", "lo", "-j", "ACCEPT"},
      {"-s", "192.0.2.0/24", "!", "-d", "198.51.100.7", "-j", "DROP"},
      {"-p", "tcp", "--dport", "22", "--sport", "1024:65535", "-j", "ACCEPT"},
      {"-p", "tcp", "--tcp-flags", "SYN,ACK", "SYN", "-j", "DROP"},
      {"-p", "udp", "!", "--dport", "53", "-j", "CT", "--notrack"},
      {"-m", "mark", "--mark", "0x10/0xf0", "-j", "RETURN"},
      {"-m", "limit", "--limit", "3/min", "--limit-burst", "7", "-j", "LOG", "--log-prefix", "lim: "},
      {"-o", "eth+", "-p", "icmp", "--icmp-type", "echo-request", "-j", "ACCEPT"},
      {"-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-m", "comment", "--comment", "two words", "-j",
       "ACCEPT"},
      {"-f", "-j", "DROP"},
      {"-p", "tcp", "-m", "multiport", "--dports", "80,443", "-j", "NFLOG", "--nflog-group", "3"},
      {"-j", "TRACE"},
  };
  return specs;
}

class NativeCompatTest : public ::testing::Test {
 protected:
  void SetUp() override {
    IPTKIT_REQUIRE_ROOT();
    ASSERT_OK_AND_ASSIGN(ns_, TestNetns::Create());
    IPTKIT_REQUIRE_VARIANT(*ns_, Variant::kNft, Family::kIPv4);
    ASSERT_OK_AND_ASSIGN(fw_, OpenFirewall(*ns_, BackendKind::kNative));
  }
  CommandResult Ipt(std::vector<std::string> args) const { return ns_->Iptables(Variant::kNft, Family::kIPv4, args); }
  static std::vector<std::string> Cmd(std::string verb, std::string chain, const std::vector<std::string>& spec) {
    std::vector<std::string> args = {std::move(verb), std::move(chain)};
    args.insert(args.end(), spec.begin(), spec.end());
    return args;
  }

  std::unique_ptr<TestNetns> ns_;
  std::unique_ptr<Firewall> fw_;
};

TEST_F(NativeCompatTest, IptablesChecksAndDeletesRulesIptkitAdded) {
  const std::string chain = "T";  // a user chain of raw: TRACE and CT are allowed, and both -i and -o
  Transaction txn;
  txn.CreateChain(Family::kIPv4, "raw", chain);
  for (const auto& spec : Specs4()) {
    ASSERT_OK_AND_ASSIGN(Rule rule, ParseRuleArgs(spec, Family::kIPv4));
    txn.Append(Family::kIPv4, "raw", chain, rule);
  }
  ASSERT_OK_AND_ASSIGN(CommitResult done, fw_->Commit(txn));
  EXPECT_EQ(done.backend, "native");
  for (const auto& spec : Specs4()) {
    std::vector<std::string> check = Cmd("-C", chain, spec);
    check.insert(check.begin(), {"-t", "raw"});
    CommandResult r = Ipt(check);
    EXPECT_TRUE(r.ok()) << "iptables -C does not find what iptkit added: " << r.Describe();
  }
  for (const auto& spec : Specs4()) {
    std::vector<std::string> del = Cmd("-D", chain, spec);
    del.insert(del.begin(), {"-t", "raw"});
    CommandResult r = Ipt(del);
    EXPECT_TRUE(r.ok()) << r.Describe();
  }
  ASSERT_OK_AND_ASSIGN(std::string after, ns_->Save(Variant::kNft, Family::kIPv4, "raw"));
  EXPECT_TRUE(RuleLines(after, "raw", chain).empty()) << after;
}

TEST_F(NativeCompatTest, IptablesFindsOwnedRulesWithTheTagLast) {
  DesiredState want;
  want.owner = "shop";
  OwnedChain chain;
  chain.name = "SHOP-IN";
  chain.rules = {Spec("-p tcp --dport 443 -j ACCEPT"), Spec("-s 192.0.2.9 -m comment --comment mine -j DROP")};
  want.chains.push_back(chain);
  want.hooks.push_back({"filter", "INPUT", HookRule::Position::kFirst, Spec("-j SHOP-IN")});
  ASSERT_OK_AND_ASSIGN(ApplyPlan plan, fw_->Apply(want));
  EXPECT_TRUE(plan.changed());
  ASSERT_OK_AND_ASSIGN(std::string saved, ns_->Save(Variant::kNft, Family::kIPv4, "filter"));
  std::vector<std::string> lines = RuleLines(saved, "filter", "SHOP-IN");
  ASSERT_EQ(lines.size(), 2u) << saved;
  std::vector<std::string> hooks = RuleLines(saved, "filter", "INPUT");
  ASSERT_EQ(hooks.size(), 1u) << saved;
  // Every owned rule exactly as iptables-save prints it (tag last), given back to iptables -C and -D.
  for (const std::string& line : {lines[0], lines[1], hooks[0]}) {
    const std::string chain_name = line.substr(3, line.find(' ', 3) - 3);
    ASSERT_OK_AND_ASSIGN(Rule rule, ParseRuleSpec(line.substr(4 + chain_name.size()), Family::kIPv4));
    ASSERT_TRUE(rule.OwnerTag().has_value()) << line;
    std::vector<std::string> args = {"-C", chain_name};
    ASSERT_OK_AND_ASSIGN(std::vector<Token> tokens, LexRestoreLine(line.substr(4 + chain_name.size())));
    for (const Token& t : tokens) args.push_back(t.text);
    CommandResult c = Ipt(args);
    EXPECT_TRUE(c.ok()) << line << ": " << c.Describe();
    // Without the tag it is another rule.
    std::vector<std::string> untagged = {"-C", chain_name};
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (tokens[i].text == "-m" && i + 3 < tokens.size() && tokens[i + 1].text == "comment" &&
          tokens[i + 3].text.starts_with("iptkit:")) {
        i += 3;
        continue;
      }
      untagged.push_back(tokens[i].text);
    }
    if (untagged.size() < args.size()) {
      EXPECT_FALSE(Ipt(untagged).ok()) << "untagged " << line;
    }
    args[0] = "-D";
    CommandResult d = Ipt(args);
    EXPECT_TRUE(d.ok()) << line << ": " << d.Describe();
  }
}

TEST_F(NativeCompatTest, IptkitDeletesRulesIptablesAdded) {
  ASSERT_TRUE(Ipt({"-t", "raw", "-N", "T"}).ok());
  for (const auto& spec : Specs4()) {
    std::vector<std::string> add = Cmd("-A", "T", spec);
    add.insert(add.begin(), {"-t", "raw"});
    CommandResult r = Ipt(add);
    ASSERT_TRUE(r.ok()) << r.Describe();
  }
  // Delete every other one by spec (user spelling), then the last one by number.
  Transaction txn;
  for (size_t i = 0; i < Specs4().size(); i += 2) {
    ASSERT_OK_AND_ASSIGN(Rule rule, ParseRuleArgs(Specs4()[i], Family::kIPv4));
    txn.Delete(Family::kIPv4, "raw", "T", rule);
  }
  ASSERT_OK_AND_ASSIGN(CommitResult done, fw_->Commit(txn));
  Transaction last;
  last.DeleteAt(Family::kIPv4, "raw", "T", static_cast<int>(Specs4().size() / 2));
  ASSERT_OK_AND_ASSIGN(CommitResult done2, fw_->Commit(last));
  for (size_t i = 0; i < Specs4().size(); ++i) {
    std::vector<std::string> check = Cmd("-C", "T", Specs4()[i]);
    check.insert(check.begin(), {"-t", "raw"});
    const bool present = i % 2 == 1 && i + 1 != Specs4().size();
    EXPECT_EQ(Ipt(check).ok(), present) << "rule " << i;
  }
}

}  // namespace
}  // namespace iptkit::integration
