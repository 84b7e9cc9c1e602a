// Random token soup: the parser never crashes, returns a Rule or an InvalidArgument error, and every Rule it
// returns prints to a spec that parses back to the same Rule.

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "iptkit/dialect.h"

namespace iptkit {
namespace {

const std::vector<std::string>& Vocabulary() {
  static const std::vector<std::string> kWords = {
      "-s",
      "-d",
      "-i",
      "-o",
      "-p",
      "-f",
      "-m",
      "-j",
      "-g",
      "-c",
      "!",
      "--source",
      "--dst",
      "--proto",
      "--jump",
      "tcp",
      "udp",
      "icmp",
      "ipv6-icmp",
      "6",
      "all",
      "gre",
      "1.2.3.4",
      "10.0.0.0/8",
      "::1",
      "fe80::/64",
      "1.2.3.4,5.6.7.8",
      "host.example",
      "eth0",
      "eth+",
      "--dport",
      "--sport",
      "--dports",
      "--syn",
      "22",
      "1:1024",
      "comment",
      "--comment",
      "\"a b\"",
      "\"\"",
      "\"--x\"",
      "'q'",
      "conntrack",
      "--ctstate",
      "NEW,ESTABLISHED",
      "multiport",
      "limit",
      "--limit",
      "5/sec",
      "mark",
      "--mark",
      "0x1/0xff",
      "string",
      "--string",
      "--algo",
      "bm",
      "nfacct",
      "--nfacct-name",
      "LOG",
      "--log-prefix",
      "\"x: \"",
      "ACCEPT",
      "DROP",
      "RETURN",
      "DNAT",
      "--to-destination",
      "10.0.0.1:80",
      "MY-CHAIN",
      "set",
      "--match-set",
      "src,dst",
      "--bogus",
      "-x",
      "nosuch",
      "--dport=22",
      "--tcp-flags",
      "SYN,ACK",
      "SYN",
      "recent",
      "--name",
      "--set",
      "--rcheck",
      "icmp6",
      "--icmpv6-type",
      "echo-request",
      "-",
      "--",
      "=",
      "\"",
      "\\",
      "$(id)",
      ";",
      "|",
  };
  return kWords;
}

std::string RandomSoup(std::mt19937& rng) {
  const auto& words = Vocabulary();
  std::string spec;
  size_t n = rng() % 14;
  for (size_t i = 0; i < n; ++i) {
    if (!spec.empty()) spec += ' ';
    if (rng() % 20 == 0) {
      // A few raw bytes, including the forbidden ones.
      size_t len = 1 + rng() % 4;
      for (size_t j = 0; j < len; ++j) spec.push_back(static_cast<char>(rng() % 256));
    } else {
      spec += words[rng() % words.size()];
    }
  }
  return spec;
}

void CheckOne(const std::string& spec, Family family, size_t* parsed) {
  auto rule = ParseRuleSpec(spec, family);
  if (!rule.ok()) {
    ASSERT_EQ(rule.status().code(), StatusCode::kInvalidArgument) << spec << "\n" << rule.status().ToString();
    ASSERT_FALSE(rule.status().message().empty());
    return;
  }
  ++*parsed;
  std::string printed = FormatRuleSpec(*rule);
  auto again = ParseRuleSpec(printed, family);
  ASSERT_TRUE(again.ok()) << "input:   " << spec << "\nprinted: " << printed << "\n" << again.status().ToString();
  EXPECT_EQ(*again, *rule) << "input:   " << spec << "\nprinted: " << printed;
  EXPECT_EQ(FormatRuleSpec(*again), printed);
}

TEST(FuzzTest, RandomTokenSoupNeverCrashesAndRoundTrips) {
  std::mt19937 rng(20240601);
  size_t parsed = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string spec = RandomSoup(rng);
    CheckOne(spec, i % 2 ? Family::kIPv4 : Family::kIPv6, &parsed);
    if (HasFatalFailure()) return;
  }
  // The soup must exercise the success path too, or the round-trip check proves nothing.
  EXPECT_GT(parsed, 500u);
}

TEST(FuzzTest, ArgsFormNeverCrashes) {
  std::mt19937 rng(7);
  const auto& words = Vocabulary();
  for (int i = 0; i < 5000; ++i) {
    std::vector<std::string> args;
    size_t n = rng() % 10;
    for (size_t j = 0; j < n; ++j) args.push_back(words[rng() % words.size()]);
    auto rule = ParseRuleArgs(args, i % 2 ? Family::kIPv4 : Family::kIPv6);
    if (!rule.ok()) {
      EXPECT_EQ(rule.status().code(), StatusCode::kInvalidArgument);
    }
  }
}

TEST(FuzzTest, RandomSaveTextNeverCrashes) {
  std::mt19937 rng(99);
  const std::vector<std::string> lines = {"*filter", "*nat", ":INPUT ACCEPT [0:0]", ":X - [0:0]",     "COMMIT",
                                          "# c",     "",     "[1:2] -A INPUT",      "-A X -j RETURN", ":INPUT - [1:1]"};
  for (int i = 0; i < 5000; ++i) {
    std::string text;
    size_t n = rng() % 8;
    for (size_t j = 0; j < n; ++j) {
      if (rng() % 3 == 0) {
        text += "-A INPUT " + RandomSoup(rng);
      } else {
        text += lines[rng() % lines.size()];
      }
      text += '\n';
    }
    auto rs = ParseSave(text, Family::kIPv4);
    if (rs.ok()) {
      auto again = ParseSave(FormatSave(*rs), Family::kIPv4);
      ASSERT_TRUE(again.ok()) << text;
      EXPECT_EQ(*again, *rs);
    } else {
      EXPECT_EQ(rs.status().code(), StatusCode::kInvalidArgument);
    }
  }
}

}  // namespace
}  // namespace iptkit
