#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "iptkit/dialect.h"

namespace iptkit {
namespace {

Rule WithMatch(std::string name, std::vector<Option> options) {
  Rule rule;
  rule.matches.push_back(Match{std::move(name), std::move(options)});
  return rule;
}

Rule WithTarget(std::string name, std::vector<Option> options) {
  Rule rule;
  rule.target = Target::Jump(std::move(name), std::move(options));
  return rule;
}

TEST(FormatRuleSpecTest, EmptyRuleIsEmpty) { EXPECT_EQ(FormatRuleSpec(Rule{}), ""); }

TEST(FormatRuleSpecTest, HeaderInSaveOrderWithNegation) {
  Rule rule;
  rule.fragment = Field{"", true};
  rule.protocol = Field{"tcp", false};
  rule.out_interface = Field{"eth1", false};
  rule.in_interface = Field{"eth+", true};
  rule.destination = Field{"10.0.0.0/8", false};
  rule.source = Field{"1.2.3.4", true};
  rule.matches.push_back(Match{"tcp", {Option{"dport", true, {"22"}}}});
  rule.target = Target::Jump("ACCEPT");
  EXPECT_EQ(FormatRuleSpec(rule),
            "! -s 1.2.3.4 -d 10.0.0.0/8 ! -i eth+ -o eth1 -p tcp ! -f -m tcp ! --dport 22 -j ACCEPT");
}

TEST(FormatRuleSpecTest, GotoAndMultiValueOptions) {
  Rule rule = WithMatch("tcp", {Option{"tcp-flags", false, {"FIN,SYN,RST,ACK", "SYN"}}});
  rule.protocol = Field{"tcp", false};
  rule.target = Target::Goto("OTHER");
  EXPECT_EQ(FormatRuleSpec(rule), "-p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -g OTHER");
  Rule set = WithMatch("set", {Option{"match-set", true, {"myset", "src,dst"}}, Option{"return-nomatch", false, {}}});
  EXPECT_EQ(FormatRuleSpec(set), "-m set ! --match-set myset src,dst --return-nomatch");
}

TEST(FormatRuleSpecTest, SaveStringOptionsQuoteOnlyWhenNeeded) {
  EXPECT_EQ(FormatRuleSpec(WithMatch("comment", {Option{"comment", false, {"ssh-in_2"}}})),
            "-m comment --comment ssh-in_2");
  EXPECT_EQ(FormatRuleSpec(WithMatch("comment", {Option{"comment", false, {"ns/svc:p80 -> 10.0.0.1:80"}}})),
            "-m comment --comment \"ns/svc:p80 -> 10.0.0.1:80\"");
  EXPECT_EQ(FormatRuleSpec(WithMatch("comment", {Option{"comment", false, {R"(a"b\c'd)"}}})),
            R"(-m comment --comment "a\"b\\c\'d")");
  EXPECT_EQ(FormatRuleSpec(WithTarget("LOG", {Option{"log-prefix", false, {"abc"}}})), "-j LOG --log-prefix abc");
  EXPECT_EQ(FormatRuleSpec(
                WithTarget("LOG", {Option{"log-prefix", false, {"[UFW BLOCK] "}}, Option{"log-level", false, {"4"}}})),
            "-j LOG --log-prefix \"[UFW BLOCK] \" --log-level 4");
  EXPECT_EQ(FormatRuleSpec(WithTarget("NFLOG", {Option{"nflog-prefix", false, {"x y"}}})),
            "-j NFLOG --nflog-prefix \"x y\"");
  EXPECT_EQ(FormatRuleSpec(WithMatch("helper", {Option{"helper", false, {"Q.931"}}})), "-m helper --helper \"Q.931\"");
  EXPECT_EQ(FormatRuleSpec(WithMatch("cgroup", {Option{"path", true, {"/"}}})), "-m cgroup ! --path \"/\"");
  // iptables prints a bare "-foo" (save_string keeps [A-Za-z0-9_-]); the parser takes it as the required value.
  EXPECT_EQ(FormatRuleSpec(WithTarget("LOG", {Option{"log-prefix", false, {"-foo"}}})), "-j LOG --log-prefix -foo");
}

TEST(FormatRuleSpecTest, NfacctNameHasTwoBlanks) {
  EXPECT_EQ(FormatRuleSpec(WithMatch("nfacct", {Option{"nfacct-name", false, {"ct_state_invalid"}}})),
            "-m nfacct --nfacct-name  ct_state_invalid");
}

TEST(FormatRuleSpecTest, AlwaysQuotedOptions) {
  EXPECT_EQ(FormatRuleSpec(WithMatch("string", {Option{"string", false, {"test"}}, Option{"algo", false, {"bm"}}})),
            "-m string --string \"test\" --algo bm");
  EXPECT_EQ(FormatRuleSpec(WithMatch("string", {Option{"string", true, {R"(a"b\c'd)"}}})),
            R"(-m string ! --string "a\"b\\c'd")");
  EXPECT_EQ(FormatRuleSpec(WithMatch("string", {Option{"hex-string", false, {"|0a0a|"}}})),
            "-m string --hex-string \"|0a0a|\"");
  EXPECT_EQ(FormatRuleSpec(WithMatch("u32", {Option{"u32", false, {"0x0=0x0&&0x0=0x1"}}})),
            "-m u32 --u32 \"0x0=0x0&&0x0=0x1\"");
  EXPECT_EQ(FormatRuleSpec(WithMatch("bpf", {Option{"bytecode", false, {"1,6 0 0 0"}}})),
            "-m bpf --bytecode \"1,6 0 0 0\"");
  EXPECT_EQ(FormatRuleSpec(WithMatch("connlabel", {Option{"label", true, {"40"}}, Option{"set", false, {}}})),
            "-m connlabel ! --label \"40\" --set");
  EXPECT_EQ(FormatRuleSpec(WithTarget("LED", {Option{"led-trigger-id", false, {"net"}}})),
            "-j LED --led-trigger-id \"net\"");
}

TEST(FormatRuleSpecTest, BareOptionsStayBareUnlessTheyWouldNotLexBack) {
  EXPECT_EQ(FormatRuleSpec(WithTarget("DNAT", {Option{"to-destination", false, {"[dead::beef]:22"}}})),
            "-j DNAT --to-destination [dead::beef]:22");
  EXPECT_EQ(FormatRuleSpec(WithMatch("recent", {Option{"name", false, {"a.b"}}})), "-m recent --name a.b");
  // iptables itself would print these raw and produce a line that means something else; iptkit quotes them.
  EXPECT_EQ(FormatRuleSpec(WithMatch("recent", {Option{"name", false, {"a b"}}})), "-m recent --name \"a b\"");
  EXPECT_EQ(FormatRuleSpec(WithMatch("recent", {Option{"name", false, {""}}})), "-m recent --name \"\"");
  EXPECT_EQ(FormatRuleSpec(WithMatch("recent", {Option{"name", false, {"!"}}})), "-m recent --name \"!\"");
  EXPECT_EQ(FormatRuleSpec(WithMatch("x", {Option{"o", false, {"a", "-b"}}})), "-m x --o a \"-b\"");
}

TEST(FormatSaveTest, PrintsTablesChainsRulesAndCommit) {
  Ruleset rs;
  Table filter;
  filter.name = "filter";
  Chain input{"INPUT", "DROP", Counters{10, 2000}, {}};
  Rule rule;
  rule.protocol = Field{"tcp", false};
  rule.matches.push_back(Match{"tcp", {Option{"dport", false, {"22"}}}});
  rule.target = Target::Jump("ACCEPT");
  rule.counters = Counters{3, 180};
  input.rules.push_back(rule);
  input.rules.push_back(Rule{});
  Chain user{"MY-CHAIN", std::nullopt, {}, {}};
  Rule ret;
  ret.target = Target::Jump("RETURN");
  user.rules.push_back(ret);
  filter.chains = {input, Chain{"FORWARD", "ACCEPT", {}, {}}, user};
  rs.tables.push_back(filter);
  Table raw;
  raw.name = "raw";
  raw.chains = {Chain{"PREROUTING", "ACCEPT", {}, {}}};
  rs.tables.push_back(raw);

  EXPECT_EQ(FormatSave(rs),
            "*filter\n"
            ":INPUT DROP [0:0]\n"
            ":FORWARD ACCEPT [0:0]\n"
            ":MY-CHAIN - [0:0]\n"
            "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\n"
            "-A INPUT\n"
            "-A MY-CHAIN -j RETURN\n"
            "COMMIT\n"
            "*raw\n"
            ":PREROUTING ACCEPT [0:0]\n"
            "COMMIT\n");
  EXPECT_EQ(FormatSave(rs, {.counters = true}),
            "*filter\n"
            ":INPUT DROP [10:2000]\n"
            ":FORWARD ACCEPT [0:0]\n"
            ":MY-CHAIN - [0:0]\n"
            "[3:180] -A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\n"
            "[0:0] -A INPUT\n"
            "[0:0] -A MY-CHAIN -j RETURN\n"
            "COMMIT\n"
            "*raw\n"
            ":PREROUTING ACCEPT [0:0]\n"
            "COMMIT\n");
  EXPECT_EQ(FormatSave(Ruleset{}), "");
}

}  // namespace
}  // namespace iptkit
