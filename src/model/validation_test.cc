#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "iptkit/model.h"

namespace iptkit {
namespace {

using ::testing::HasSubstr;

constexpr Family kV4 = Family::kIPv4;
constexpr Family kV6 = Family::kIPv6;

Rule RuleWithComment(std::string comment) {
  Rule r;
  r.matches.push_back(Match{"comment", {Option{"comment", false, {std::move(comment)}}}});
  r.target = Target::Jump("ACCEPT");
  return r;
}

// ---- ValidateChainName ----

TEST(ValidateChainNameTest, LengthLimitIs28Bytes) {
  EXPECT_TRUE(ValidateChainName(std::string(28, 'A')).ok());
  Status s = ValidateChainName(std::string(29, 'A'));
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("29 bytes"));
  EXPECT_THAT(s.message(), HasSubstr(std::string(29, 'A')));
}

TEST(ValidateChainNameTest, RefusesEmptyLeadingDashOrBangAndWhitespace) {
  EXPECT_EQ(ValidateChainName("").code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(ValidateChainName("-FOO").message(), HasSubstr("may not start with '-'"));
  EXPECT_THAT(ValidateChainName("!FOO").message(), HasSubstr("may not start with '!'"));
  EXPECT_THAT(ValidateChainName("MY CHAIN").message(), HasSubstr("whitespace"));
  EXPECT_THAT(ValidateChainName("MY\nCHAIN").message(), HasSubstr("newline"));
  EXPECT_THAT(ValidateChainName(std::string("MY\0X", 4)).message(), HasSubstr("NUL"));
}

TEST(ValidateChainNameTest, RefusesTargetNames) {
  for (const char* name : {"ACCEPT", "DROP", "RETURN", "QUEUE", "DNAT", "LOG", "MASQUERADE", "REJECT", "CT", "NOTRACK",
                           "TTL", "HL", "NFQUEUE", "TCPMSS"}) {
    Status s = ValidateChainName(name);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << name;
    EXPECT_THAT(s.message(), HasSubstr("clashes with a target name")) << name;
  }
}

TEST(ValidateChainNameTest, AcceptsOrdinaryNames) {
  for (const char* name : {"MYAPP-IN", "f2b-sshd", "DOCKER-USER", "log", "Dnat", "ufw-before-input", "a.b_c"}) {
    EXPECT_TRUE(ValidateChainName(name).ok()) << name;
  }
}

// ---- ValidateRule ----

TEST(ValidateRuleTest, CommentLimitIs255Bytes) {
  EXPECT_TRUE(ValidateRule(RuleWithComment(std::string(255, 'x')), kV4).ok());
  Status s = ValidateRule(RuleWithComment(std::string(256, 'x')), kV4);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("match 'comment' option '--comment'"));
  EXPECT_THAT(s.message(), HasSubstr("256 bytes"));
}

TEST(ValidateRuleTest, NewlineCarriageReturnAndNulRejectedNamingTheOption) {
  for (std::string bad : {std::string("a\nb"), std::string("a\rb"), std::string("a\0b", 3)}) {
    Status s = ValidateRule(RuleWithComment(bad), kV4);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(s.message(), HasSubstr("match 'comment' option '--comment'"));

    Rule log;
    log.target = Target::Jump("LOG", {Option{"log-prefix", false, {bad}}});
    s = ValidateRule(log, kV4);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(s.message(), HasSubstr("target 'LOG' option '--log-prefix'"));

    Rule header;
    header.in_interface = Field{"eth" + bad};
    EXPECT_THAT(ValidateRule(header, kV4).message(), HasSubstr("in interface (-i)"));

    Rule match_name;
    match_name.matches.push_back(Match{"tc" + bad, {}});
    EXPECT_THAT(ValidateRule(match_name, kV4).message(), HasSubstr("name contains"));

    Rule option_name;
    option_name.matches.push_back(Match{"tcp", {Option{"dp" + bad, false, {"22"}}}});
    EXPECT_THAT(ValidateRule(option_name, kV4).message(), HasSubstr("match 'tcp' option"));
  }
  Rule proto;
  proto.protocol = Field{"tcp\n"};
  EXPECT_THAT(ValidateRule(proto, kV4).message(), HasSubstr("protocol (-p)"));
}

TEST(ValidateRuleTest, FragmentOnlyForIPv4) {
  Rule r;
  r.fragment = Field{};
  EXPECT_TRUE(ValidateRule(r, kV4).ok());
  r.fragment->negated = true;
  EXPECT_TRUE(ValidateRule(r, kV4).ok());
  Status s = ValidateRule(r, kV6);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("fragment (-f)"));
}

TEST(ValidateRuleTest, IcmpRefusedInIPv6) {
  for (const char* p : {"icmp", "ICMP", "1"}) {
    Rule r;
    r.protocol = Field{p};
    EXPECT_TRUE(ValidateRule(r, kV4).ok()) << p;
    Status s = ValidateRule(r, kV6);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << p;
    EXPECT_THAT(s.message(), HasSubstr("ipv6-icmp")) << p;
  }
  for (const char* p : {"ipv6-icmp", "icmpv6", "58", "tcp"}) {
    Rule r;
    r.protocol = Field{p};
    EXPECT_TRUE(ValidateRule(r, kV6).ok()) << p;
  }
}

TEST(ValidateRuleTest, AddressesMustBeNumericSingleAddressesOfTheFamily) {
  auto with_src = [](std::string v) {
    Rule r;
    r.source = Field{std::move(v)};
    return r;
  };
  for (const char* ok : {"10.0.0.0/8", "1.2.3.4", "1.2.3.4/32", "0.0.0.0/0", "10.0.0.0/255.0.255.0"}) {
    EXPECT_TRUE(ValidateRule(with_src(ok), kV4).ok()) << ok;
  }
  for (const char* ok : {"::1/128", "fd00::/8", "2001:db8::1", "::/0"}) {
    EXPECT_TRUE(ValidateRule(with_src(ok), kV6).ok()) << ok;
  }
  Status s = ValidateRule(with_src("1.2.3.4,5.6.7.8"), kV4);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("comma lists"));
  EXPECT_THAT(ValidateRule(with_src("example.com"), kV4).message(), HasSubstr("host names"));
  EXPECT_THAT(ValidateRule(with_src("::1"), kV4).message(), HasSubstr("not a numeric ipv4 address"));
  EXPECT_THAT(ValidateRule(with_src("1.2.3.4"), kV6).message(), HasSubstr("not a numeric ipv6 address"));
  EXPECT_THAT(ValidateRule(with_src("1.2.3.4/33"), kV4).message(), HasSubstr("bad mask '33'"));
  Rule dst;
  dst.destination = Field{"bad"};
  EXPECT_THAT(ValidateRule(dst, kV4).message(), HasSubstr("destination (-d)"));
}

TEST(ValidateRuleTest, InterfaceNamesAtMost15Bytes) {
  Rule r;
  r.out_interface = Field{std::string(15, 'e')};
  EXPECT_TRUE(ValidateRule(r, kV4).ok());
  r.out_interface = Field{"eth+"};
  EXPECT_TRUE(ValidateRule(r, kV4).ok());
  r.out_interface = Field{std::string(16, 'e')};
  EXPECT_THAT(ValidateRule(r, kV4).message(), HasSubstr("out interface (-o)"));
}

TEST(ValidateRuleTest, SetNamesAtMost31Bytes) {
  Rule r;
  r.matches.push_back(Match{"set", {Option{"match-set", false, {std::string(31, 's'), "src"}}}});
  EXPECT_TRUE(ValidateRule(r, kV4).ok());
  r.matches[0].options[0].values[0] = std::string(32, 's');
  EXPECT_THAT(ValidateRule(r, kV4).message(), HasSubstr("--match-set"));
  Rule t;
  t.target = Target::Jump("SET", {Option{"add-set", false, {std::string(32, 's'), "src"}}});
  EXPECT_THAT(ValidateRule(t, kV4).message(), HasSubstr("--add-set"));
}

TEST(ValidateRuleTest, TargetShapes) {
  Rule r;
  EXPECT_TRUE(ValidateRule(r, kV4).ok());  // no target: a counting rule
  r.target = Target::Goto("MYCHAIN");
  EXPECT_TRUE(ValidateRule(r, kV4).ok());
  r.target = Target::Goto("ACCEPT");
  EXPECT_THAT(ValidateRule(r, kV4).message(), HasSubstr("goto"));
  r.target = Target::Goto(std::string(29, 'C'));
  EXPECT_EQ(ValidateRule(r, kV4).code(), StatusCode::kInvalidArgument);
  r.target = Target::Jump("");
  EXPECT_THAT(ValidateRule(r, kV4).message(), HasSubstr("empty name"));
  r.target = Target{Target::Kind::kNone, "ACCEPT", {}};
  EXPECT_EQ(ValidateRule(r, kV4).code(), StatusCode::kInvalidArgument);
  r.target = Target::Jump("LOG", {Option{"--log-prefix", false, {"x"}}});
  EXPECT_THAT(ValidateRule(r, kV4).message(), HasSubstr("without dashes"));
}

TEST(ValidateRuleTest, TypicalRulesPass) {
  Rule r;
  r.source = Field{"10.0.0.0/8", true};
  r.in_interface = Field{"eth0"};
  r.protocol = Field{"tcp"};
  r.matches.push_back(Match{"tcp", {Option{"dport", false, {"22"}}, Option{"tcp-flags", true, {"SYN,RST", "SYN"}}}});
  r.matches.push_back(Match{"conntrack", {Option{"ctstate", false, {"NEW,ESTABLISHED"}}}});
  r.target = Target::Jump("LOG", {Option{"log-prefix", false, {"ssh: "}}, Option{"log-tcp-sequence", false, {}}});
  EXPECT_TRUE(ValidateRule(r, kV4).ok()) << ValidateRule(r, kV4).ToString();
}

// ---- ValidateTargetPlacement ----

struct PlacementCase {
  const char* target;
  const char* table;
  const char* hook;
  Family family;
  bool ok;
};

TEST(ValidateTargetPlacementTest, MatchesTheKernel) {
  // Each row was checked against Linux 6.18 with iptables-legacy and iptables-nft 1.8.9 in a scratch netns.
  const PlacementCase cases[] = {
      {"DNAT", "nat", "PREROUTING", kV4, true},
      {"DNAT", "nat", "OUTPUT", kV4, true},
      {"DNAT", "nat", "POSTROUTING", kV4, false},
      {"DNAT", "nat", "INPUT", kV6, false},
      {"DNAT", "filter", "INPUT", kV4, false},
      {"DNAT", "nat", "", kV4, true},
      {"DNAT", "filter", "", kV4, false},
      {"SNAT", "nat", "POSTROUTING", kV4, true},
      {"SNAT", "nat", "INPUT", kV6, true},
      {"SNAT", "nat", "PREROUTING", kV4, false},
      {"SNAT", "nat", "OUTPUT", kV4, false},
      {"MASQUERADE", "nat", "POSTROUTING", kV6, true},
      {"MASQUERADE", "nat", "PREROUTING", kV4, false},
      {"MASQUERADE", "nat", "INPUT", kV4, false},
      {"MASQUERADE", "mangle", "POSTROUTING", kV4, false},
      {"REDIRECT", "nat", "PREROUTING", kV4, true},
      {"REDIRECT", "nat", "OUTPUT", kV6, true},
      {"REDIRECT", "nat", "POSTROUTING", kV4, false},
      {"NETMAP", "nat", "INPUT", kV4, true},
      {"NETMAP", "nat", "POSTROUTING", kV6, true},
      {"NETMAP", "filter", "INPUT", kV4, false},
      {"CT", "raw", "PREROUTING", kV4, true},
      {"CT", "raw", "OUTPUT", kV6, true},
      {"CT", "mangle", "PREROUTING", kV4, false},
      {"CT", "filter", "", kV4, false},
      {"NOTRACK", "raw", "OUTPUT", kV4, true},
      {"NOTRACK", "filter", "INPUT", kV4, false},
      {"TRACE", "raw", "PREROUTING", kV4, true},
      {"TRACE", "filter", "INPUT", kV4, false},
      {"TPROXY", "mangle", "PREROUTING", kV4, true},
      {"TPROXY", "mangle", "", kV6, true},
      {"TPROXY", "mangle", "INPUT", kV4, false},
      {"TPROXY", "nat", "PREROUTING", kV4, false},
      {"CHECKSUM", "mangle", "POSTROUTING", kV4, true},
      {"CHECKSUM", "filter", "OUTPUT", kV4, false},
      {"DSCP", "mangle", "FORWARD", kV6, true},
      {"DSCP", "filter", "FORWARD", kV4, false},
      {"TOS", "mangle", "OUTPUT", kV4, true},
      {"TOS", "raw", "OUTPUT", kV4, false},
      {"ECN", "mangle", "PREROUTING", kV4, true},
      {"ECN", "mangle", "PREROUTING", kV6, false},
      {"TTL", "mangle", "INPUT", kV4, true},
      {"TTL", "mangle", "INPUT", kV6, false},
      {"HL", "mangle", "INPUT", kV6, true},
      {"HL", "mangle", "INPUT", kV4, false},
      {"SNPT", "mangle", "POSTROUTING", kV6, true},
      {"SNPT", "mangle", "INPUT", kV6, true},
      {"SNPT", "mangle", "PREROUTING", kV6, false},
      {"DNPT", "mangle", "PREROUTING", kV6, true},
      {"DNPT", "mangle", "POSTROUTING", kV6, false},
      {"DNPT", "mangle", "OUTPUT", kV4, false},
      {"SECMARK", "security", "INPUT", kV4, true},
      {"SECMARK", "mangle", "INPUT", kV4, true},
      {"SECMARK", "filter", "INPUT", kV4, false},
      {"CONNSECMARK", "security", "OUTPUT", kV6, true},
      {"CONNSECMARK", "nat", "OUTPUT", kV4, false},
      {"CLASSIFY", "mangle", "POSTROUTING", kV4, true},
      {"CLASSIFY", "filter", "FORWARD", kV4, true},
      {"CLASSIFY", "raw", "OUTPUT", kV6, true},
      {"CLASSIFY", "filter", "INPUT", kV4, false},
      {"CLASSIFY", "mangle", "PREROUTING", kV4, false},
      {"REJECT", "filter", "INPUT", kV4, true},
      {"REJECT", "filter", "FORWARD", kV6, true},
      {"REJECT", "filter", "OUTPUT", kV4, true},
      {"REJECT", "filter", "", kV4, true},
      {"REJECT", "mangle", "INPUT", kV4, false},
      {"REJECT", "raw", "PREROUTING", kV4, false},
      {"REJECT", "security", "INPUT", kV4, false},
      {"SYNPROXY", "filter", "INPUT", kV4, true},
      {"SYNPROXY", "filter", "FORWARD", kV6, true},
      {"SYNPROXY", "raw", "", kV4, true},
      {"SYNPROXY", "filter", "OUTPUT", kV4, false},
      {"SYNPROXY", "raw", "PREROUTING", kV4, false},
      {"TEE", "filter", "INPUT", kV4, true},
      {"TEE", "nat", "POSTROUTING", kV6, true},
      {"MARK", "filter", "INPUT", kV4, true},
      {"MARK", "raw", "PREROUTING", kV6, true},
      {"CONNMARK", "nat", "PREROUTING", kV4, true},
      {"LOG", "raw", "OUTPUT", kV4, true},
      {"NFQUEUE", "security", "FORWARD", kV6, true},
      {"TCPMSS", "filter", "INPUT", kV4, true},
      {"ACCEPT", "nat", "PREROUTING", kV4, true},
      {"MY-CHAIN", "raw", "OUTPUT", kV6, true},
      {"SOMEEXT", "mangle", "", kV4, true},
  };
  for (const PlacementCase& c : cases) {
    Status s = ValidateTargetPlacement(c.target, c.table, c.hook, c.family);
    std::string where =
        std::string(c.target) + " in " + c.table + " " + c.hook + " " + std::string(FamilyName(c.family));
    if (c.ok) {
      EXPECT_TRUE(s.ok()) << where << ": " << s.ToString();
    } else {
      EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << where;
      EXPECT_THAT(s.message(), HasSubstr(std::string("'") + c.target + "'")) << where;
    }
  }
}

TEST(ValidateTargetPlacementTest, ErrorsNameTargetTableAndHook) {
  Status s = ValidateTargetPlacement("DNAT", "nat", "POSTROUTING", kV4);
  EXPECT_THAT(s.message(), HasSubstr("'DNAT'"));
  EXPECT_THAT(s.message(), HasSubstr("nat POSTROUTING"));
  EXPECT_THAT(s.message(), HasSubstr("PREROUTING, OUTPUT"));
  s = ValidateTargetPlacement("MASQUERADE", "filter", "FORWARD", kV4);
  EXPECT_THAT(s.message(), HasSubstr("only valid in table nat"));
  EXPECT_THAT(s.message(), HasSubstr("filter FORWARD"));
  s = ValidateTargetPlacement("SECMARK", "raw", "", kV4);
  EXPECT_THAT(s.message(), HasSubstr("mangle or security"));
}

TEST(ValidateTargetPlacementTest, UnknownTableOrNonBuiltinHookRejected) {
  EXPECT_THAT(ValidateTargetPlacement("ACCEPT", "bogus", "", kV4).message(), HasSubstr("unknown table 'bogus'"));
  EXPECT_THAT(ValidateTargetPlacement("ACCEPT", "raw", "INPUT", kV4).message(),
              HasSubstr("not a builtin chain of table raw"));
}

// Regression: DROP in the nat table passed local validation; iptables refuses it in userspace, which only the
// scratch canonicalization used to catch (address-only rules are now canonicalized without iptables).
TEST(TargetPlacementTest, DropIsNotAllowedInNat) {
  Status s = ValidateTargetPlacement("DROP", "nat", "PREROUTING", Family::kIPv4);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("not intended for filtering"), std::string::npos) << s.ToString();
  EXPECT_EQ(ValidateTargetPlacement("DROP", "nat", "", Family::kIPv6).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(ValidateTargetPlacement("ACCEPT", "nat", "PREROUTING", Family::kIPv4).ok());
  EXPECT_TRUE(ValidateTargetPlacement("DROP", "mangle", "PREROUTING", Family::kIPv4).ok());
}

}  // namespace
}  // namespace iptkit
