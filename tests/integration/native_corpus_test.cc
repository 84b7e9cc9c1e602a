// The native backend's reading on the whole corpus (the other direction, written natively → iptables-nft-save
// prints the file, is corpus_roundtrip_test's native case): each file loaded by iptables-nft-restore into a fresh
// namespace and read over netlink gives exactly the model the text parser gives for the file, every table
// representable, and Firewall::Save (printed from the rules' binary forms) prints what iptables-nft-save prints and
// what the model read prints.
#include <gtest/gtest.h>

#include "iptkit/dialect.h"
#include "iptkit/firewall.h"
#include "tests/integration/corpus.h"
#include "tests/integration/library_util.h"
#include "tests/integration/test_util.h"

namespace iptkit::integration {
namespace {

class NativeCorpusReadTest : public ::testing::TestWithParam<CorpusFile> {};

TEST_P(NativeCorpusReadTest, IptablesRestoreThenNativeReadGivesTheParsedFile) {
  IPTKIT_REQUIRE_ROOT();
  const CorpusFile& file = GetParam();
  if (file.path.empty()) GTEST_SKIP() << "no corpus under " << IPTKIT_CORPUS_DIR;
  ASSERT_OK_AND_ASSIGN(std::string text, ReadTextFile(file.path));
  ASSERT_OK_AND_ASSIGN(auto ns, TestNetns::Create());
  IPTKIT_REQUIRE_VARIANT(*ns, Variant::kNft, file.family);
  ASSERT_STATUS_OK(LoadCorpusFile(*ns, Variant::kNft, file, text));
  ASSERT_OK_AND_ASSIGN(auto fw, OpenFirewall(*ns, BackendKind::kNative));

  ASSERT_OK_AND_ASSIGN(Ruleset expected, ParseSave(text, file.family));
  ASSERT_OK_AND_ASSIGN(Ruleset read, fw->List(file.family));
  for (const Table& t : read.tables) EXPECT_EQ(t.unrepresentable_reason, "") << t.name;
  ASSERT_EQ(read.tables.size(), expected.tables.size());
  for (size_t i = 0; i < read.tables.size(); ++i) {
    const Table& r = read.tables[i];
    const Table& e = expected.tables[i];
    ASSERT_EQ(r.name, e.name);
    ASSERT_EQ(r.chains.size(), e.chains.size()) << r.name;
    for (size_t c = 0; c < r.chains.size(); ++c) {
      ASSERT_EQ(r.chains[c].name, e.chains[c].name) << r.name;
      EXPECT_EQ(r.chains[c].policy, e.chains[c].policy) << r.name << " " << r.chains[c].name;
      ASSERT_EQ(r.chains[c].rules.size(), e.chains[c].rules.size()) << r.name << " " << r.chains[c].name;
      for (size_t k = 0; k < r.chains[c].rules.size(); ++k) {
        EXPECT_EQ(r.chains[c].rules[k], e.chains[c].rules[k])
            << r.name << " " << r.chains[c].name << " rule " << k + 1 << ": read '"
            << FormatRuleSpec(r.chains[c].rules[k]) << "', file '" << FormatRuleSpec(e.chains[c].rules[k]) << "'";
      }
    }
  }
  EXPECT_TRUE(read == expected);
  ASSERT_OK_AND_ASSIGN(std::string mine, fw->Save(file.family));
  ASSERT_OK_AND_ASSIGN(std::string kernel, ns->Save(Variant::kNft, file.family));
  EXPECT_EQ(mine, kernel);
  // Save prints each rule from its binary form, without the model: the model's text byte for byte, counters too.
  for (bool counters : {false, true}) {
    ASSERT_OK_AND_ASSIGN(std::string streamed, fw->Save(file.family, std::nullopt, SaveOptions{.counters = counters}));
    EXPECT_EQ(streamed, FormatSave(read, {.counters = counters, .mark_lossy = true})) << "counters " << counters;
  }
}

std::vector<CorpusFile> FilesOrPlaceholder() {
  std::vector<CorpusFile> files = CorpusFiles();
  if (files.empty()) files.push_back({"absent", "", Family::kIPv4});
  return files;
}

INSTANTIATE_TEST_SUITE_P(Corpus, NativeCorpusReadTest, ::testing::ValuesIn(FilesOrPlaceholder()), [](const auto& info) {
  std::string name = info.param.name;
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return name;
});

}  // namespace
}  // namespace iptkit::integration
