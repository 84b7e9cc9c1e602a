// Baseline for corpus_roundtrip_test.cc without iptkit: every corpus file loaded with the variant's own
// iptables-restore into a fresh namespace saves back as the file (CorpusDiff's known legacy differences
// included). A failure here is the kernel/iptables/corpus, not the library; it also keeps CorpusDiff honest.
#include <gtest/gtest.h>

#include "tests/integration/corpus.h"
#include "tests/integration/test_util.h"

namespace iptkit::integration {
namespace {

class CorpusCliTest : public ::testing::TestWithParam<Variant> {};

TEST_P(CorpusCliTest, IptablesRestoreThenSaveGivesTheFile) {
  IPTKIT_REQUIRE_ROOT();
  std::vector<CorpusFile> files = CorpusFiles();
  if (files.empty()) GTEST_SKIP() << "no corpus under " << IPTKIT_CORPUS_DIR;
  for (const CorpusFile& file : files) {
    SCOPED_TRACE(file.name);
    ASSERT_OK_AND_ASSIGN(std::string text, ReadTextFile(file.path));
    ASSERT_OK_AND_ASSIGN(auto ns, TestNetns::Create());
    IPTKIT_REQUIRE_VARIANT(*ns, GetParam(), file.family);
    ASSERT_STATUS_OK(LoadCorpusFile(*ns, GetParam(), file, text));
    ASSERT_OK_AND_ASSIGN(std::string saved, ns->Save(GetParam(), file.family));
    EXPECT_EQ(CorpusDiff(GetParam(), text, saved), "");
  }
}

TEST(CorpusDiffTest, LegacyKnownDifferencesOnlyOnLegacy) {
  std::string prefix(70, 'x');
  std::string expected =
      "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
      "-A INPUT -j NFLOG --nflog-prefix " +
      prefix + "\n-A FORWARD ! -i +\nCOMMIT\n";
  std::string legacy =
      "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
      "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
      "-A INPUT -j NFLOG --nflog-prefix " +
      prefix.substr(0, 63) + "\n-A FORWARD\nCOMMIT\n";
  EXPECT_EQ(CorpusDiff(Variant::kLegacy, expected, legacy), "");
  EXPECT_NE(CorpusDiff(Variant::kNft, expected, legacy), "");
  EXPECT_EQ(CorpusDiff(Variant::kNft, expected, expected), "");
  // A real difference is still one on legacy: a missing rule, a wrong policy, a non-empty extra table.
  std::string missing_rule = legacy;
  missing_rule.erase(missing_rule.find("-A FORWARD\n"), 11);
  EXPECT_NE(CorpusDiff(Variant::kLegacy, expected, missing_rule), "");
  std::string drop_policy = legacy;
  drop_policy.replace(drop_policy.find(":INPUT ACCEPT"), 13, ":INPUT DROP");
  EXPECT_NE(CorpusDiff(Variant::kLegacy, expected, drop_policy), "");
  std::string raw_rule = legacy;
  raw_rule.insert(raw_rule.find("COMMIT"), "-A OUTPUT -j NOTRACK\n");
  EXPECT_NE(CorpusDiff(Variant::kLegacy, expected, raw_rule), "");
}

INSTANTIATE_TEST_SUITE_P(Variants, CorpusCliTest, ::testing::Values(Variant::kNft, Variant::kLegacy),
                         [](const auto& info) { return std::string(VariantName(info.param)); });

}  // namespace
}  // namespace iptkit::integration
