// Coexistence with a foreign firewall (docs/architecture.md §4): with ufw's ruleset loaded (INPUT policy DROP), iptkit
// applies, changes and removes an owner's chains declaratively. The foreign chains, the foreign rules of the
// builtin chains and the policies stay byte-identical throughout, every rule iptkit writes carries the tag
// `-m comment --comment "iptkit:<owner>:<id>"` as its last match, and after the removal the kernel state is
// exactly what ufw left (iptables-save and, on nft, `nft list ruleset`).
#include <gtest/gtest.h>

#include <fstream>
#include <optional>
#include <regex>
#include <set>
#include <sstream>

#include "iptkit/desired.h"
#include "iptkit/firewall.h"
#include "tests/integration/library_util.h"
#include "tests/integration/test_util.h"

namespace iptkit::integration {
namespace {

constexpr char kOwner[] = "ittest";
constexpr char kChain[] = "ITTEST-IN";
// The tag iptables-save prints, with the id part captured.
const std::regex kTagged(R"re(-m comment --comment "iptkit:ittest:([A-Za-z0-9._-]{1,26})"( -[jg] \S+.*)?$)re");

std::optional<std::string> ReadCorpusFile(const std::string& name) {
  std::ifstream in(std::string(IPTKIT_CORPUS_DIR) + "/valid/" + name);
  if (!in) return std::nullopt;
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

bool IsOwnedLine(const std::string& line) {
  return line.find("iptkit:ittest:") != std::string::npos || line.starts_with(":ITTEST-") ||
         line.starts_with("-A ITTEST-");
}

// The filter table without anything of ours: every chain's text with our lines dropped, per chain.
std::map<std::string, std::string> ForeignRemainder(const std::string& save_text) {
  std::map<std::string, std::string> out;
  for (const auto& [chain, text] : ChainTexts(SplitTables(save_text)["filter"])) {
    if (chain.starts_with("ITTEST-")) continue;
    std::istringstream in(text);
    std::string line, kept;
    while (std::getline(in, line)) {
      if (!IsOwnedLine(line)) kept += line + "\n";
    }
    out[chain] = kept;
  }
  return out;
}

DesiredState Desired(const std::vector<std::string>& chain_rules, bool with_forward_hook) {
  DesiredState want;
  want.owner = kOwner;
  OwnedChain chain;
  chain.table = "filter";
  chain.name = kChain;
  for (const auto& spec : chain_rules) chain.rules.push_back(Spec(spec));
  want.chains.push_back(chain);
  want.hooks.push_back({"filter", "INPUT", HookRule::Position::kFirst, Spec(std::string("-j ") + kChain)});
  if (with_forward_hook) {
    want.hooks.push_back({"filter", "FORWARD", HookRule::Position::kLast, Spec("-i veth0 -j " + std::string(kChain))});
  }
  return want;
}

class CoexistenceTest : public ::testing::TestWithParam<BackendKind> {};

TEST_P(CoexistenceTest, UfwRulesetSurvivesApplyChangeAndRemove) {
  IPTKIT_REQUIRE_ROOT();
  std::optional<std::string> ufw = ReadCorpusFile("ufw__assembled_host.v4");
  if (!ufw) GTEST_SKIP() << "corpus file ufw__assembled_host.v4 not found under " << IPTKIT_CORPUS_DIR;
  const Variant variant = VariantOf(GetParam());
  ASSERT_OK_AND_ASSIGN(auto ns, TestNetns::Create());
  IPTKIT_REQUIRE_VARIANT(*ns, variant, Family::kIPv4);
  CommandResult loaded = ns->Restore(variant, Family::kIPv4, *ufw);
  ASSERT_TRUE(loaded.ok()) << loaded.Describe();
  ASSERT_OK_AND_ASSIGN(std::string baseline, ns->Save(variant, Family::kIPv4));
  ASSERT_NE(baseline.find(":INPUT DROP [0:0]\n"), std::string::npos) << "ufw dump should set INPUT policy DROP";
  std::string baseline_nft;
  if (variant == Variant::kNft) {
    ASSERT_OK_AND_ASSIGN(baseline_nft, ns->NftListRuleset());
  }
  const auto foreign = ForeignRemainder(baseline);
  ASSERT_GT(foreign.size(), 30u);

  ASSERT_OK_AND_ASSIGN(auto fw, OpenFirewall(*ns, GetParam()));

  // 1. Apply.
  DesiredState first = Desired({"-s 10.0.0.0/8 -p tcp --dport 22 -j ACCEPT", "-p udp --dport 53 -j ACCEPT",
                                "-m conntrack --ctstate INVALID -j DROP", "-j RETURN"},
                               /*with_forward_hook=*/true);
  ASSERT_OK_AND_ASSIGN(ApplyPlan applied, fw->Apply(first));
  EXPECT_TRUE(applied.changed());
  ASSERT_OK_AND_ASSIGN(std::string after_apply, ns->Save(variant, Family::kIPv4));
  EXPECT_EQ(ForeignRemainder(after_apply), foreign);
  std::vector<std::string> owned = RuleLines(after_apply, "filter", kChain);
  ASSERT_EQ(owned.size(), 4u) << after_apply;
  EXPECT_TRUE(
      owned[0].starts_with("-A ITTEST-IN -s 10.0.0.0/8 -p tcp -m tcp --dport 22 -m comment --comment "
                           "\"iptkit:ittest:"))
      << owned[0];
  EXPECT_TRUE(owned[3].starts_with("-A ITTEST-IN -m comment --comment \"iptkit:ittest:")) << owned[3];
  std::set<std::string> ids;
  for (const auto& line : owned) {
    std::smatch m;
    ASSERT_TRUE(std::regex_search(line, m, kTagged)) << "tag missing or not last: " << line;
    ids.insert(m[1]);
  }
  EXPECT_EQ(ids.size(), owned.size()) << "ids must be distinct within a chain";
  std::vector<std::string> input = RuleLines(after_apply, "filter", "INPUT");
  ASSERT_FALSE(input.empty());
  EXPECT_TRUE(std::regex_search(input.front(), kTagged)) << "hook must be first: " << input.front();
  EXPECT_NE(input.front().find(" -j ITTEST-IN"), std::string::npos) << input.front();
  std::vector<std::string> forward = RuleLines(after_apply, "filter", "FORWARD");
  ASSERT_FALSE(forward.empty());
  EXPECT_TRUE(forward.back().starts_with("-A FORWARD -i veth0 -m comment --comment \"iptkit:ittest:"))
      << "hook must be last: " << forward.back();

  // Applying the same state again changes nothing (canonical comparison, no churn).
  ASSERT_OK_AND_ASSIGN(ApplyPlan again, fw->PlanApply(first));
  EXPECT_FALSE(again.changed()) << "re-apply plans " << again.steps.size() << " steps";

  // 2. Change: one rule replaced, one added, the FORWARD hook dropped.
  DesiredState second = Desired({"-s 10.0.0.0/8 -p tcp --dport 22 -j ACCEPT", "-p udp --dport 5353 -j ACCEPT",
                                 "-m conntrack --ctstate INVALID -j DROP", "-p icmp -j ACCEPT", "-j RETURN"},
                                /*with_forward_hook=*/false);
  ASSERT_OK_AND_ASSIGN(ApplyPlan changed, fw->Apply(second));
  EXPECT_TRUE(changed.changed());
  ASSERT_OK_AND_ASSIGN(std::string after_change, ns->Save(variant, Family::kIPv4));
  EXPECT_EQ(ForeignRemainder(after_change), foreign);
  owned = RuleLines(after_change, "filter", kChain);
  ASSERT_EQ(owned.size(), 5u) << after_change;
  EXPECT_NE(owned[1].find("--dport 5353 "), std::string::npos) << owned[1];
  EXPECT_NE(owned[3].find("-p icmp "), std::string::npos) << owned[3];
  for (const auto& line : RuleLines(after_change, "filter", "FORWARD")) {
    EXPECT_EQ(line.find("iptkit:"), std::string::npos) << "stale hook left: " << line;
  }

  // 3. Remove everything of the owner: back to ufw's state, byte for byte.
  DesiredState none;
  none.owner = kOwner;
  ASSERT_OK_AND_ASSIGN(ApplyPlan removed, fw->Apply(none));
  EXPECT_TRUE(removed.changed());
  ASSERT_OK_AND_ASSIGN(std::string after_remove, ns->Save(variant, Family::kIPv4));
  EXPECT_EQ(after_remove, baseline);
  if (variant == Variant::kNft) {
    ASSERT_OK_AND_ASSIGN(std::string nft_after, ns->NftListRuleset());
    EXPECT_EQ(nft_after, baseline_nft);
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, CoexistenceTest,
                         ::testing::Values(BackendKind::kNative, BackendKind::kNft, BackendKind::kLegacy,
                                           BackendKind::kNativeLegacy),
                         BackendParamName);

}  // namespace
}  // namespace iptkit::integration
