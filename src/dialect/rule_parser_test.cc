#include "src/dialect/rule_parser.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "iptkit/dialect.h"

namespace iptkit {
namespace {

using ::testing::HasSubstr;

constexpr Family kV4 = Family::kIPv4;
constexpr Family kV6 = Family::kIPv6;

// Parses user input and prints it the way iptables-save would (without the kernel's canonicalization).
std::string Normalize(std::string_view spec, Family family = kV4) {
  auto rule = ParseRuleSpec(spec, family);
  if (!rule.ok()) return "ERROR " + rule.status().ToString();
  return FormatRuleSpec(*rule);
}

Status ParseError(std::string_view spec, Family family = kV4) {
  auto rule = ParseRuleSpec(spec, family);
  if (rule.ok()) return Status::Internal("parsed as: " + FormatRuleSpec(*rule));
  return rule.status();
}

MATCHER_P(IsInvalidWith, text, "") {
  *result_listener << arg.ToString();
  return arg.code() == StatusCode::kInvalidArgument && arg.message().find(text) != std::string::npos;
}

TEST(ParseRuleSpecTest, ModelOfASimpleRule) {
  auto rule = ParseRuleSpec("-p tcp --dport 22 -s 1.2.3.4 -j ACCEPT", kV4);
  ASSERT_TRUE(rule.ok()) << rule.status().ToString();
  Rule want;
  want.source = Field{"1.2.3.4", false};
  want.protocol = Field{"tcp", false};
  want.matches.push_back(Match{"tcp", {Option{"dport", false, {"22"}}}});
  want.target = Target::Jump("ACCEPT");
  EXPECT_EQ(*rule, want);
}

TEST(ParseRuleSpecTest, UserInputFormsPrintAsIptablesSave) {
  struct Case {
    std::string in;
    std::string out;
    Family family = kV4;
  };
  const Case cases[] = {
      // Implicit protocol match; header fields move to save order; no /32 (the kernel's job).
      {"-p tcp --dport 22 -s 1.2.3.4 -j ACCEPT", "-s 1.2.3.4 -p tcp -m tcp --dport 22 -j ACCEPT"},
      {"--protocol udp --source 10.0.0.0/8 --destination-port 53 --jump DROP",
       "-s 10.0.0.0/8 -p udp -m udp --destination-port 53 -j DROP"},
      {"--src 10.0.0.1 --dst 10.0.0.2 --in-interface eth0 --out-interface eth1 --fragment --goto X",
       "-s 10.0.0.1 -d 10.0.0.2 -i eth0 -o eth1 -f -g X"},
      {"! -s 10.0.0.0/255.0.255.0 ! -p udp ! -f -j RETURN", "! -s 10.0.0.0/255.0.255.0 ! -p udp ! -f -j RETURN"},
      // iptables lower-cases the protocol; a number loads the match by its name.
      {"-p TCP --sport 1", "-p tcp -m tcp --sport 1"},
      {"-p 6 --dport 22", "-p 6 -m tcp --dport 22"},
      {"-p icmp --icmp-type echo-request", "-p icmp -m icmp --icmp-type echo-request"},
      {"-p ipv6-icmp --icmpv6-type 1", "-p ipv6-icmp -m icmp6 --icmpv6-type 1", kV6},
      {"-p icmpv6 -m icmpv6 --icmpv6-type 1", "-p icmpv6 -m icmp6 --icmpv6-type 1", kV6},
      // The implicit match is appended when it is loaded; options go to the newest extension that has them.
      {"-m comment --comment x -p tcp --dport 22", "-p tcp -m comment --comment x -m tcp --dport 22"},
      {"-p tcp --sport 1 -m comment --comment \"a b\" --dport 2",
       "-p tcp -m tcp --sport 1 --dport 2 -m comment --comment \"a b\""},
      {"-m mark --mark 1 -m connmark --mark 2", "-m mark --mark 1 -m connmark --mark 2"},
      {"-m recent --set -m recent --name x --rcheck", "-m recent --set -m recent --name x --rcheck"},
      // getopt_long abbreviations and "--name=value".
      {"--proto udp --dp 5", "-p udp -m udp --dport 5"},
      {"-p tcp -m multiport --dport 22,23", "-p tcp -m multiport --dports 22,23"},
      {"--source 1.2.3.4 -p tcp --dport=22 -j LOG --log-prefix=x",
       "-s 1.2.3.4 -p tcp -m tcp --dport 22 -j LOG --log-prefix x"},
      // Values: all following non-option tokens; quoted tokens always; a required value may start with '-'.
      {"-p tcp --tcp-flags SYN,ACK SYN", "-p tcp -m tcp --tcp-flags SYN,ACK SYN"},
      {"-m set --match-set myset src,dst -j SET --add-set other src --exist",
       "-m set --match-set myset src,dst -j SET --add-set other src --exist"},
      {"-j LOG --log-prefix -foo", "-j LOG --log-prefix -foo"},
      // getopt takes any next argument for a required value, and iptables-save prints such values bare.
      {"-m comment --comment \"--x\"", "-m comment --comment --x"},
      {"-m comment --comment --comment", "-m comment --comment --comment"},
      {"-m comment --comment \"-j\"", "-m comment --comment \"-j\""},
      {"-m comment --comment \"\"", "-m comment --comment \"\""},
      // Shell metacharacters are data: nothing goes through a shell.
      {"-m comment --comment \"$(reboot); `id` | & > *\"", "-m comment --comment \"$(reboot); `id` | & > *\""},
      {"-m comment --comment 'single'", "-m comment --comment \"\\'single\\'\""},
      // Targets: extension options, user chains, standard verdicts.
      {"-j DNAT --to-destination 10.0.0.1:80", "-j DNAT --to-destination 10.0.0.1:80"},
      {"-j MY-CHAIN", "-j MY-CHAIN"},
      {"-j TPROXY --on-port 1 --on-ip ::1", "-j TPROXY --on-port 1 --on-ip ::1", kV6},
      {"-j CT --notrack -m comment --comment x", "-m comment --comment x -j CT --notrack"},
      {"-s ::1/128 -d fe80::/ffff:ffff:: -p tcp --dport 1 -j REJECT --reject-with tcp-reset",
       "-s ::1/128 -d fe80::/ffff:ffff:: -p tcp -m tcp --dport 1 -j REJECT --reject-with tcp-reset", kV6},
      {"-c 10 20 -j ACCEPT", "-j ACCEPT"},
      {"", ""},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(Normalize(c.in, c.family), c.out) << c.in;
  }
}

// iptables 1.8.9 takes "--source=1.2.3.4" whole as the address (and "-ptcp" as an unknown option), so iptkit
// refuses what iptables refuses instead of reading what it never would.
TEST(ParseRuleSpecTest, HeaderOptionsTakeNoAttachedValue) {
  EXPECT_THAT(ParseError("--source=1.2.3.4 -j ACCEPT"),
              IsInvalidWith("'--source=1.2.3.4' at column 1: iptables reads this whole argument as the value of "
                            "--source: write '--source 1.2.3.4'"));
  EXPECT_THAT(ParseError("-p tcp --jump=ACCEPT"), IsInvalidWith("'--jump=ACCEPT' at column 8"));
  EXPECT_THAT(ParseError("-ptcp"), IsInvalidWith("'-ptcp' at column 1: unknown option"));
}

// The typed form: what the user wrote, sent as it is (Rule::typed), without the owner tag and -c.
TEST(ParseRuleSpecTest, TypedForm) {
  Result<Rule> rule = ParseRuleSpec("-p tcp --dport 22 -s 1.2.3.4 -j ACCEPT", kV4);
  ASSERT_TRUE(rule.ok()) << rule.status().ToString();
  EXPECT_EQ(rule->typed, (std::vector<std::string>{"-p", "tcp", "--dport", "22", "-s", "1.2.3.4", "-j", "ACCEPT"}));
  EXPECT_EQ(rule->typed_for, "-s 1.2.3.4 -p tcp -m tcp --dport 22 -j ACCEPT");
  EXPECT_TRUE(HasTypedForm(*rule));
  EXPECT_EQ(FormatRuleForRestore(*rule), "-p tcp --dport 22 -s 1.2.3.4 -j ACCEPT");

  // -c comes first in one spelling (only append/insert/replace send it); the owner tag is the model's; arguments
  // are quoted only where they must be.
  rule = ParseRuleSpec("-m comment --comment \"a b\" -c 5,6 -j ACCEPT -m comment --comment iptkit:app:r1", kV4);
  ASSERT_TRUE(rule.ok()) << rule.status().ToString();
  EXPECT_EQ(rule->counters, (Counters{5, 6}));
  EXPECT_EQ(rule->typed,
            (std::vector<std::string>{"-c", "5", "6", "-m", "comment", "--comment", "a b", "-j", "ACCEPT"}));
  EXPECT_EQ(FormatRuleForRestore(*rule),
            "-c 5 6 -m comment --comment \"a b\" -j ACCEPT -m comment --comment iptkit:app:r1");
  EXPECT_EQ(FormatRuleForRestore(*rule, /*counters=*/false),
            "-m comment --comment \"a b\" -j ACCEPT -m comment --comment iptkit:app:r1");
  rule->SetOwnerTag({"app", "r2"});
  EXPECT_TRUE(HasTypedForm(*rule));
  EXPECT_EQ(FormatRuleForRestore(*rule, false),
            "-m comment --comment \"a b\" -j ACCEPT -m comment --comment iptkit:app:r2");
  rule->ClearOwnerTag();
  EXPECT_EQ(FormatRuleForRestore(*rule, false), "-m comment --comment \"a b\" -j ACCEPT");

  // A rule changed otherwise is sent as printed.
  rule->target = Target::Jump("DROP");
  EXPECT_FALSE(HasTypedForm(*rule));
  EXPECT_EQ(FormatRuleForRestore(*rule), "-m comment --comment \"a b\" -j DROP");

  // Rules built field by field and rules read from a save have none; a restore file's rules keep theirs.
  Rule built;
  built.target = Target::Jump("ACCEPT");
  EXPECT_FALSE(HasTypedForm(built));
  const std::string save = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp --dport 22 -j ACCEPT\nCOMMIT\n";
  Result<Ruleset> saved = ParseSave(save, kV4);
  ASSERT_TRUE(saved.ok());
  EXPECT_FALSE(HasTypedForm(saved->tables[0].chains[0].rules[0]));
  saved = ParseSave(save, kV4, {.keep_tokens = true});
  ASSERT_TRUE(saved.ok());
  EXPECT_EQ(FormatRuleForRestore(saved->tables[0].chains[0].rules[0]), "-p tcp --dport 22 -j ACCEPT");
}

TEST(ParseRuleSpecTest, QuoteRestoreArgumentReadsBackUnchanged) {
  for (std::string arg : {"a", "", "a b", "\"", "\\", "a\\\"b", "'", "!", "-j", "x\ty", "#", "\\\""}) {
    Result<std::vector<Token>> tokens = LexRestoreLine("-A " + QuoteRestoreArgument(arg) + " -j");
    ASSERT_TRUE(tokens.ok()) << arg;
    ASSERT_EQ(tokens->size(), 3u) << QuoteRestoreArgument(arg);
    EXPECT_EQ((*tokens)[1].text, arg) << QuoteRestoreArgument(arg);
  }
  EXPECT_EQ(QuoteRestoreArgument("10.0.0.1/32"), "10.0.0.1/32");
  EXPECT_EQ(QuoteRestoreArgument("a b"), "\"a b\"");
}

TEST(ParseRuleSpecTest, CountersOption) {
  auto rule = ParseRuleSpec("-c 10 20 -j ACCEPT", kV4);
  ASSERT_TRUE(rule.ok());
  EXPECT_EQ(rule->counters, (Counters{10, 20}));
  rule = ParseRuleSpec("--set-counters 7,8", kV4);
  ASSERT_TRUE(rule.ok());
  EXPECT_EQ(rule->counters, (Counters{7, 8}));
  EXPECT_THAT(ParseError("-c 1 x"), IsInvalidWith("'x' at column 6: counters must be unsigned integers"));
}

TEST(ParseRuleSpecTest, RejectsHostNamesAndCommaLists) {
  EXPECT_THAT(ParseError("-s example.com -j ACCEPT"),
              IsInvalidWith("'example.com' at column 4: not an IPv4 address literal (host names are not supported"));
  EXPECT_THAT(ParseError("-p tcp -d localhost"), IsInvalidWith("'localhost' at column 11"));
  EXPECT_THAT(ParseError("-s 1.2.3.4,5.6.7.8 -j DROP"),
              IsInvalidWith("'1.2.3.4,5.6.7.8' at column 4: comma lists of addresses are not supported: one spec "
                            "must be one rule"));
  EXPECT_THAT(ParseError("-d ::1,::2", kV6), IsInvalidWith("comma lists of addresses are not supported"));
  EXPECT_THAT(ParseError("-s ::1"), IsInvalidWith("'::1' at column 4: an IPv6 address in an IPv4 rule"));
  EXPECT_THAT(ParseError("-s 1.2.3.4", kV6), IsInvalidWith("an IPv4 address in an IPv6 rule"));
  EXPECT_THAT(ParseError("-s 1.2.3.4/33"), IsInvalidWith("prefix length out of range 0-32"));
  EXPECT_THAT(ParseError("-s 1.2.3.4/x"), IsInvalidWith("bad network mask 'x'"));
  EXPECT_THAT(ParseError("-s 1.2.3"), IsInvalidWith("not an IPv4 address literal"));
}

// Regression: stray words after an option's value (a spec pasted from a shell line) used to become extra values
// of that option; iptables rejects them ("Bad argument"), and so must the parser, naming the token.
TEST(ParseRuleSpecTest, RejectsStrayArgumentsAfterAValue) {
  EXPECT_THAT(ParseError("-p tcp --dport 22 && reboot -j ACCEPT"),
              IsInvalidWith("'&&' at column 19: unexpected argument"));
  EXPECT_THAT(ParseError("-m conntrack --ctstate NEW ; rm -j ACCEPT"),
              IsInvalidWith("';' at column 28: unexpected argument"));
  // The options that do read a second argument keep it.
  EXPECT_TRUE(ParseRuleSpec("-p tcp --tcp-flags SYN,ACK SYN -j DROP", kV4).ok());
  EXPECT_TRUE(ParseRuleSpec("-m set --match-set blocked src -j DROP", kV4).ok());
}

TEST(ParseRuleSpecTest, RejectsUnknownExtensionsAndOptions) {
  EXPECT_THAT(ParseError("-m nosuchmatch --x 1"), IsInvalidWith("'nosuchmatch' at column 4: unknown match extension"));
  EXPECT_THAT(ParseError("-m icmp6 --icmpv6-type 1"),
              IsInvalidWith("'icmp6' at column 4: unknown match extension for IPv4"));
  EXPECT_THAT(ParseError("-m ../../tmp/evil"), IsInvalidWith("'../../tmp/evil' at column 4: unknown match"));
  EXPECT_THAT(ParseError("-p tcp -m tcp --dport 1 --bogus 2"),
              IsInvalidWith("'--bogus' at column 25: unknown option (not an option of match tcp)"));
  EXPECT_THAT(ParseError("-p tcp --bogus 2"),
              IsInvalidWith("'--bogus' at column 8: unknown option (not an option of match tcp)"));
  EXPECT_THAT(ParseError("-j ACCEPT --log-prefix x"), IsInvalidWith("'--log-prefix' at column 11: unknown option"));
  EXPECT_THAT(ParseError("-j MYCHAIN --foo"),
              IsInvalidWith("'--foo' at column 12: unknown option (the jump target is a chain and takes no options)"));
  EXPECT_THAT(ParseError("-x 1"), IsInvalidWith("'-x' at column 1: unknown option"));
  EXPECT_THAT(ParseError("-m tcp --d 1"), IsInvalidWith("'--d' at column 8: ambiguous option abbreviation"));
}

TEST(ParseRuleSpecTest, RejectsOptionsOutsideAnyContext) {
  EXPECT_THAT(ParseError("--dport 22 -j ACCEPT"),
              IsInvalidWith("'--dport' at column 1: option outside any match or target"));
  // The protocol must come first, as in iptables (parsing is sequential).
  EXPECT_THAT(ParseError("--dport 22 -p tcp"), IsInvalidWith("'--dport' at column 1"));
}

TEST(ParseRuleSpecTest, RejectsMissingValues) {
  EXPECT_THAT(ParseError("-p tcp --dport"), IsInvalidWith("'--dport' at column 8: missing value"));
  EXPECT_THAT(ParseError("-p tcp --dport -j ACCEPT"), IsInvalidWith("'--dport' at column 8: missing value"));
  EXPECT_THAT(ParseError("-p tcp --dport --source 1.2.3.4"), IsInvalidWith("'--dport' at column 8: missing value"));
  EXPECT_THAT(ParseError("-m comment --comment"), IsInvalidWith("'--comment' at column 12: missing value"));
  EXPECT_THAT(ParseError("-s"), IsInvalidWith("'-s' at column 1: missing value"));
  EXPECT_THAT(ParseError("-j"), IsInvalidWith("'-j' at column 1: missing value"));
  EXPECT_THAT(ParseError("-m"), IsInvalidWith("'-m' at column 1: missing value"));
  EXPECT_THAT(ParseError("-p tcp -m tcp --dport=1 --syn=2"),
              IsInvalidWith("'--syn=2' at column 25: --syn takes no value"));
}

TEST(ParseRuleSpecTest, RejectsBadNegation) {
  EXPECT_THAT(ParseError("-s ! 1.2.3.4"),
              IsInvalidWith("'!' at column 4: '!' after -s is the old intrapositioned negation: write '! -s VALUE'"));
  EXPECT_THAT(ParseError("-p tcp --dport ! 22"), IsInvalidWith("'!' at column 16"));
  EXPECT_THAT(ParseError("! ! -s 1.2.3.4"), IsInvalidWith("'!' at column 3: multiple consecutive '!'"));
  EXPECT_THAT(ParseError("! -j ACCEPT"), IsInvalidWith("'-j' at column 3: cannot be negated"));
  EXPECT_THAT(ParseError("! -m tcp"), IsInvalidWith("'-m' at column 3: cannot be negated"));
  EXPECT_THAT(ParseError("-j ACCEPT !"), IsInvalidWith("'!' at column 11: '!' at the end negates nothing"));
  EXPECT_THAT(ParseError("-m comment ! --comment x"), IsInvalidWith("--comment of comment cannot be negated"));
  EXPECT_THAT(ParseError("! -p all"), IsInvalidWith("would never match"));
}

TEST(ParseRuleSpecTest, RejectsRepeatedFields) {
  EXPECT_THAT(ParseError("-s 1.2.3.4 -s 5.6.7.8"), IsInvalidWith("'-s' at column 12: given more than once"));
  EXPECT_THAT(ParseError("-j ACCEPT -g X"), IsInvalidWith("'-g' at column 11: only one -j or -g per rule"));
  EXPECT_THAT(ParseError("-m comment --comment a --comment b"),
              IsInvalidWith("'--comment' at column 24: --comment may be given only once per comment"));
  EXPECT_THAT(ParseError("-m mark --mark 1 --mark 2"),
              IsInvalidWith("'--mark' at column 18: --mark may be given only once"));
}

TEST(ParseRuleSpecTest, RejectsFragmentInIPv6) {
  EXPECT_THAT(ParseError("-f -j DROP", kV6), IsInvalidWith("'-f' at column 1: -f exists only for IPv4"));
  EXPECT_EQ(Normalize("-f -j DROP"), "-f -j DROP");
}

TEST(ParseRuleSpecTest, RejectsOtherBadHeaderValues) {
  EXPECT_THAT(ParseError("-p nosuchproto"), IsInvalidWith("'nosuchproto' at column 4: unknown protocol"));
  EXPECT_THAT(ParseError("-i waytoolonginterface0"), IsInvalidWith("interface name longer than 15 bytes"));
  EXPECT_THAT(ParseError("-j ACCEPT extra"), IsInvalidWith("'extra' at column 11: unexpected argument"));
  EXPECT_THAT(ParseError("\"-j\" ACCEPT"), IsInvalidWith("'-j' at column 1: unexpected argument"));
}

TEST(ParseRuleSpecTest, RejectsLineBreaksAndNul) {
  EXPECT_THAT(ParseError("-m comment --comment \"a\nb\""), IsInvalidWith("a newline at column 24"));
  EXPECT_THAT(ParseError("-j ACCEPT\r"), IsInvalidWith("a carriage return at column 10"));
  EXPECT_THAT(ParseError(std::string_view("-j AC\0CEPT", 10)), IsInvalidWith("a NUL byte at column 6"));
}

TEST(ParseRuleArgsTest, ArgumentsAreTokensAndErrorsNameThem) {
  auto rule =
      ParseRuleArgs({"-p", "tcp", "--dport", "22", "-m", "comment", "--comment", "a b \"c\"", "-j", "ACCEPT"}, kV4);
  ASSERT_TRUE(rule.ok()) << rule.status().ToString();
  EXPECT_EQ(FormatRuleSpec(*rule), R"(-p tcp -m tcp --dport 22 -m comment --comment "a b \"c\"" -j ACCEPT)");
  auto bad = ParseRuleArgs({"-s", "host.example", "-j", "ACCEPT"}, kV4);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status(), IsInvalidWith("'host.example' (argument 2): not an IPv4 address literal"));
  auto nl = ParseRuleArgs({"-m", "comment", "--comment", "x\ny"}, kV4);
  ASSERT_FALSE(nl.ok());
  EXPECT_THAT(nl.status(), IsInvalidWith("(argument 4): contains a newline"));
  // A value starting with '-' is taken for a required argument, as getopt does.
  auto dash = ParseRuleArgs({"-m", "comment", "--comment", "-x"}, kV4);
  ASSERT_TRUE(dash.ok());
  EXPECT_EQ(dash->matches[0].options[0].values[0], "-x");
}

TEST(ParseRuleTokensTest, GenericFallbackAcceptsUnknownExtensionsAndOptions) {
  auto tokens = LexRestoreLine("-p tcp --dport 22 -m foo --bar 1 2 --baz -j BAZ --qux \"x y\"");
  ASSERT_TRUE(tokens.ok());
  auto rule = dialect::ParseRuleTokens(*tokens, kV4, dialect::GenericExtensions(), dialect::TokenLocation::kColumn);
  ASSERT_TRUE(rule.ok()) << rule.status().ToString();
  EXPECT_EQ(FormatRuleSpec(*rule), "-p tcp -m tcp --dport 22 -m foo --bar 1 2 --baz -j BAZ --qux \"x y\"");
  // Without a match, the protocol match still loads implicitly; other protocols have none.
  tokens = LexRestoreLine("-p gre --key 1");
  auto gre = dialect::ParseRuleTokens(*tokens, kV4, dialect::GenericExtensions(), dialect::TokenLocation::kColumn);
  ASSERT_FALSE(gre.ok());
  EXPECT_THAT(gre.status(), IsInvalidWith("'--key' at column 8: option outside any match or target"));
}

}  // namespace
}  // namespace iptkit
