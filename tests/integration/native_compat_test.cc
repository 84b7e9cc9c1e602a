// The native backend and the iptables-nft CLI on the same rules: `iptables -C` / `-D` find the rules iptkit added
// (an owner's rules too, given with their `iptkit:owner:id` comment last), and iptkit deletes rules iptables added,
// by spec in user spelling and by number. iptables compares binary rule forms (nft.c nft_rule_cmp), so this holds
// only if iptkit encodes rules exactly as iptables-nft does.
#include <gtest/gtest.h>

#include <algorithm>
#include <sstream>

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

// Rules and their lookalikes (the same rule but for one extension option or field): iptables tells them apart by
// their binary forms, and so must iptkit when it reads only the chain an op names (Backend::ReadChainsForPlan).
const std::vector<std::pair<std::string, std::string>>& Lookalikes() {
  static const std::vector<std::pair<std::string, std::string>> pairs = {
      {"-s 192.0.2.1/32 -p tcp -m tcp --dport 22 -j ACCEPT", "-s 192.0.2.1/32 -p tcp -m tcp --dport 23 -j ACCEPT"},
      {"-m conntrack --ctstate NEW -j ACCEPT", "-m conntrack --ctstate NEW,ESTABLISHED -j ACCEPT"},
      {"-p tcp -m multiport --dports 80,443 -j ACCEPT", "-p tcp -m multiport --dports 80,444 -j ACCEPT"},
      {"-m comment --comment a -j DROP", "-m comment --comment b -j DROP"},
      {"-m limit --limit 3/min -j ACCEPT", "-m limit --limit 4/min -j ACCEPT"},
      {"-m mark --mark 0x1/0xff -j RETURN", "-m mark --mark 0x1/0xfe -j RETURN"},
      {"-i eth+ -j ACCEPT", "-i eth0 -j ACCEPT"},
  };
  return pairs;
}

std::vector<std::string> Words(const std::string& spec) {
  std::vector<std::string> out;
  std::istringstream in(spec);
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

// Check and delete by spec on one chain among many (iptkit reads that chain only) answer as iptables -C / -D do,
// also right after foreign writes to that chain and to others between iptkit's read and its commit.
TEST_F(NativeCompatTest, ChecksAndDeletesInOneChainOfManyAnswerAsIptables) {
  std::string text = "*filter\n";
  for (int c = 0; c < 12; ++c) text += ":c" + std::to_string(c) + " - [0:0]\n";
  for (int c = 0; c < 12; ++c) {
    for (const auto& [rule, lookalike] : Lookalikes()) {
      // c7 holds the rules, the other chains hold their lookalikes (c9 both: whichever is first must not matter).
      if (c == 7 || c == 9) text += "-A c" + std::to_string(c) + " " + rule + "\n";
      if (c != 7) text += "-A c" + std::to_string(c) + " " + lookalike + "\n";
    }
  }
  text += "COMMIT\n";
  CommandResult loaded = ns_->Restore(Variant::kNft, Family::kIPv4, text);
  ASSERT_TRUE(loaded.ok()) << loaded.Describe();
  for (const auto& [rule, lookalike] : Lookalikes()) {
    for (const std::string chain : {"c7", "c3"}) {
      for (const std::string& spec : {rule, lookalike}) {
        ASSERT_OK_AND_ASSIGN(bool present, fw_->Check(Family::kIPv4, "filter", chain, Spec(spec)));
        EXPECT_EQ(present, Ipt(Cmd("-C", chain, Words(spec))).ok()) << chain << ": " << spec;
      }
    }
  }
  // A foreign append to c7 between two checks on the same Firewall: the second sees it.
  const std::string late = "-s 198.51.100.1/32 -j DROP";
  ASSERT_OK_AND_ASSIGN(bool before, fw_->Check(Family::kIPv4, "filter", "c7", Spec(late)));
  EXPECT_FALSE(before);
  ASSERT_TRUE(Ipt({"-A", "c7", "-s", "198.51.100.1", "-j", "DROP"}).ok());
  ASSERT_OK_AND_ASSIGN(bool after, fw_->Check(Family::kIPv4, "filter", "c7", Spec(late)));
  EXPECT_TRUE(after);

  // c9 holds each rule and its lookalike: deleting the rules by spec leaves exactly the lookalikes; deleting a
  // lookalike from c7, which holds none, is refused by both.
  for (const auto& [rule, lookalike] : Lookalikes()) {
    Transaction txn;
    txn.Delete(Family::kIPv4, "filter", "c9", Spec(rule));
    ASSERT_OK_AND_ASSIGN(CommitResult done, fw_->Commit(txn));
    Transaction missing;
    missing.Delete(Family::kIPv4, "filter", "c7", Spec(lookalike));
    Result<CommitResult> refused = fw_->Commit(missing);
    EXPECT_EQ(refused.status().code(), StatusCode::kNotFound) << lookalike;
    EXPECT_FALSE(Ipt(Cmd("-D", "c7", Words(lookalike))).ok()) << lookalike;
  }
  {
    ASSERT_OK_AND_ASSIGN(std::string saved, ns_->Save(Variant::kNft, Family::kIPv4, "filter"));
    std::vector<std::string> lookalikes;
    for (const auto& [rule, lookalike] : Lookalikes()) {
      ASSERT_OK_AND_ASSIGN(Rule canon, fw_->Canonicalize(Family::kIPv4, "filter", Spec(lookalike)));
      lookalikes.push_back("-A c9 " + FormatRuleSpec(canon));
    }
    EXPECT_EQ(RuleLines(saved, "filter", "c9"), lookalikes) << saved;
  }

  // Delete every rule of c7 by spec, each with a foreign write forced between iptkit's read and its commit: odd
  // ones append to another chain, even ones insert the rule being deleted at the head of c7 (iptables -D would then
  // remove one of the two equal rules; so does iptkit).
  FirewallOptions options;
  int step = 0;
  std::string foreign_chain;
  options.before_commit_hook = [&] {
    if (foreign_chain.empty()) return;
    const auto& rule = Lookalikes()[static_cast<size_t>(step)].first;
    std::vector<std::string> args =
        step % 2 == 1 ? std::vector<std::string>{"-A", "c3", "-j", "RETURN"} : Cmd("-I", "c7", Words(rule));
    if (step % 2 == 0) args.insert(args.begin() + 2, "1");
    CommandResult r = Ipt(args);
    EXPECT_TRUE(r.ok()) << r.Describe();
    foreign_chain.clear();  // once per op (a retry reads again)
  };
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Firewall> fw, OpenFirewall(*ns_, BackendKind::kNative, options));
  for (step = 0; step < static_cast<int>(Lookalikes().size()); ++step) {
    foreign_chain = "set";
    Transaction txn;
    txn.Delete(Family::kIPv4, "filter", "c7", Spec(Lookalikes()[static_cast<size_t>(step)].first));
    ASSERT_OK_AND_ASSIGN(CommitResult done, fw->Commit(txn));
    EXPECT_EQ(done.backend, "native");
  }
  ASSERT_OK_AND_ASSIGN(std::string saved, ns_->Save(Variant::kNft, Family::kIPv4, "filter"));
  std::vector<std::string> expected;
  for (size_t i = 0; i < Lookalikes().size(); i += 2) {
    expected.push_back("-A c7 " + Lookalikes()[i].first);  // the copies inserted at the head, last first
  }
  std::reverse(expected.begin(), expected.end());
  expected.push_back("-A c7 -s 198.51.100.1/32 -j DROP");
  EXPECT_EQ(RuleLines(saved, "filter", "c7"), expected) << saved;
  std::vector<std::string> c3 = RuleLines(saved, "filter", "c3");
  EXPECT_EQ(c3.size(), Lookalikes().size() + Lookalikes().size() / 2) << saved;
  // The chains iptkit did not read are untouched, and a whole read sees exactly what iptables-nft-save prints.
  ASSERT_OK_AND_ASSIGN(Ruleset all, fw->List(Family::kIPv4, "filter"));
  const std::string listed = FormatSave(all);
  for (int c = 0; c < 12; ++c) {
    const std::string chain = "c" + std::to_string(c);
    EXPECT_EQ(RuleLines(listed, "filter", chain), RuleLines(saved, "filter", chain)) << chain;
  }
}

}  // namespace
}  // namespace iptkit::integration
