// LocalCanonicalRule against the real iptables: each covered rule loaded with iptables-restore (both variants,
// both families) saves exactly as the local canonical form prints; uncovered rules are left to iptables.
#include "src/backend/restore/local_canonical.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "iptkit/dialect.h"
#include "src/backend/restore/restore_backend.h"
#include "src/backend/test_netns.h"

namespace iptkit::backend {
namespace {

using ::testing::HasSubstr;

constexpr Family v4 = Family::kIPv4;
constexpr Family v6 = Family::kIPv6;

std::optional<std::string> Local(Family family, const std::string& spec) {
  Result<Rule> rule = ParseRuleSpec(spec, family);
  EXPECT_TRUE(rule.ok()) << spec << ": " << rule.status().ToString();
  if (!rule.ok()) return std::nullopt;
  std::optional<Rule> c = LocalCanonicalRule(family, *rule);
  if (!c) return std::nullopt;
  return FormatRuleSpec(*c);
}

const std::vector<std::string> kCoveredV4 = {
    "-s 10.1.2.3 -j DROP",
    "-s 10.1.2.3/32 -j DROP",
    "-d 192.168.7.9/24 -j ACCEPT",
    "! -s 172.16.5.4/12 -j RETURN",
    "-s 10.0.0.0/255.0.0.0 -d 10.9.8.7/255.255.255.252 -j DROP",
    "-s 1.2.3.4/31",
    "-i eth0 -o veth+ -j ACCEPT",
    "! -i docker0 -s 100.64.0.1/10 -j DROP",
    "-s 203.0.113.7 -m comment --comment iptkit:bans:abc123 -j DROP",
    "-s 203.0.113.8 -m comment --comment note -m comment --comment iptkit:web:x.y_z-1 -j DROP",
    "-j ACCEPT",
    "-d 255.255.255.255/1 -j DROP",
};
const std::vector<std::string> kCoveredV6 = {
    "-s 2001:db8::1 -j DROP",
    "-s 2001:DB8:0:0:0:0:0:1/128 -j DROP",
    "-d 2001:db8:abcd:12::/48 -j ACCEPT",
    "! -s fe80::1234:5678/10 -j RETURN",
    "-s ::ffff:192.0.2.1 -j DROP",
    "-s ::1/127 -i lo -j ACCEPT",
    "-s 2001:db8::7 -m comment --comment iptkit:bans:q2 -j DROP",
};

TEST(LocalCanonicalTest, LeavesEverythingElseToIptables) {
  for (const char* spec :
       {"-p tcp -j DROP", "-s 10.0.0.1 -p udp --dport 53 -j ACCEPT", "-f -j DROP", "-s 10.0.0.0/0 -j DROP",
        "-s 10.0.0.0/255.0.255.0 -j DROP", "-j LOG", "-j MYCHAIN", "-g MYCHAIN", "-i + -j DROP",
        "-j REJECT --reject-with tcp-reset", "-m comment --comment \"with space\" -j DROP",
        "-m conntrack --ctstate NEW -j ACCEPT", "-j QUEUE"}) {
    EXPECT_EQ(Local(v4, spec), std::nullopt) << spec;
  }
  EXPECT_EQ(Local(v6, "-s ::/0 -j DROP"), std::nullopt);
  EXPECT_EQ(Local(v4, "-s 10.1.2.3 -j DROP"), "-s 10.1.2.3/32 -j DROP");
  EXPECT_EQ(Local(v4, "-d 192.168.7.9/24 -j ACCEPT"), "-d 192.168.7.0/24 -j ACCEPT");
  EXPECT_EQ(Local(v6, "-d 2001:db8:abcd:12::/48 -j ACCEPT"), "-d 2001:db8:abcd::/48 -j ACCEPT");
}

// What iptables-save prints for `spec` in a user chain, in a fresh namespace.
std::string KernelSpec(Variant variant, Family family, const std::string& spec) {
  test::TestNetns ns("iptkit-lc");
  if (!ns.ok()) return "(netns: " + ns.error() + ")";
  const std::string tool = IptablesToolPath(variant, family, "");
  const std::string restore = IptablesToolPath(variant, family, "-restore");
  const std::string save = IptablesToolPath(variant, family, "-save");
  std::string err = ns.Exec({restore}, "*filter\n:T - [0:0]\n-A T " + spec + "\nCOMMIT\n");
  if (!err.empty()) return "(restore: " + err + ")";
  std::string out = ns.Output({save, "-t", "filter"});
  if (variant == Variant::kLegacy) out = ns.Output({save});
  const std::string prefix = "-A T ";
  for (size_t pos = 0; pos < out.size();) {
    size_t end = out.find('\n', pos);
    std::string line = out.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
    if (line.rfind(prefix, 0) == 0) return line.substr(prefix.size());
    if (line == "-A T") return "";
    if (end == std::string::npos) break;
    pos = end + 1;
  }
  return "(no rule in save output: " + out + ")";
}

class LocalCanonicalKernelTest : public ::testing::TestWithParam<Variant> {};

TEST_P(LocalCanonicalKernelTest, EqualsWhatIptablesSavePrints) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (netns, iptables)";
  for (Family family : {v4, v6}) {
    for (const std::string& spec : family == v4 ? kCoveredV4 : kCoveredV6) {
      std::optional<std::string> local = Local(family, spec);
      ASSERT_TRUE(local.has_value()) << spec << " should be covered";
      const std::string kernel = KernelSpec(GetParam(), family, spec);
      if (kernel.rfind("(restore:", 0) == 0 && kernel.find("Table does not exist") != std::string::npos) {
        GTEST_SKIP() << "variant not usable here: " << kernel;
      }
      EXPECT_EQ(*local, kernel) << VariantName(GetParam()) << " " << FamilyName(family) << ": " << spec;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, LocalCanonicalKernelTest, ::testing::Values(Variant::kNft, Variant::kLegacy),
                         [](const auto& info) { return std::string(VariantName(info.param)); });

}  // namespace
}  // namespace iptkit::backend
