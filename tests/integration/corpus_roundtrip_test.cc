// Corpus kernel round-trip through the library (docs/testing.md): each file of $IPTKIT_CORPUS_DIR/valid restored
// with Firewall::Restore into a fresh namespace; Firewall::Save and the real iptables-save must both give the
// file back (nft: byte-identical; legacy: per table with the known differences, see corpus.h).
// corpus_cli_test.cc is the same round-trip with iptables-restore itself, as the baseline.
#include <gtest/gtest.h>

#include <regex>

#include "iptkit/firewall.h"
#include "tests/integration/corpus.h"
#include "tests/integration/library_util.h"
#include "tests/integration/test_util.h"

namespace iptkit::integration {
namespace {

class CorpusRoundTripTest : public ::testing::TestWithParam<std::tuple<BackendKind, CorpusFile>> {};

TEST_P(CorpusRoundTripTest, RestoreThenSaveGivesTheFile) {
  IPTKIT_REQUIRE_ROOT();
  const auto& [backend, file] = GetParam();
  if (file.path.empty()) GTEST_SKIP() << "no corpus under " << IPTKIT_CORPUS_DIR;
  const Variant variant = VariantOf(backend);
  ASSERT_OK_AND_ASSIGN(std::string text, ReadTextFile(file.path));
  ASSERT_OK_AND_ASSIGN(auto ns, TestNetns::Create());
  IPTKIT_REQUIRE_VARIANT(*ns, variant, file.family);
  ASSERT_STATUS_OK(PrepareCorpusObjects(*ns, file.name));
  ASSERT_OK_AND_ASSIGN(auto fw, OpenFirewall(*ns, backend));

  ASSERT_OK_AND_ASSIGN(CommitResult done, fw->Restore(file.family, text, {}));
  EXPECT_FALSE(done.tables.empty());
  ASSERT_OK_AND_ASSIGN(std::string kernel, ns->Save(variant, file.family));
  EXPECT_EQ(CorpusDiff(variant, text, kernel), "") << "iptables-save after Firewall::Restore";
  // iptables-legacy-save drops `! -i +` / `! -o +`: such a rule's printed form loads as another rule, so Save
  // refuses its table unless allowed, and then marks the rule with a comment line.
  const bool lossy = variant == Variant::kLegacy && (std::regex_search(text, std::regex(" ! -[io] \\+( |\n)")));
  Result<std::string> strict = fw->Save(file.family);
  if (lossy) {
    ASSERT_FALSE(strict.ok());
    EXPECT_EQ(strict.status().details().reason, "lossy") << strict.status().ToString();
  } else {
    ASSERT_TRUE(strict.ok()) << strict.status().ToString();
  }
  ASSERT_OK_AND_ASSIGN(std::string mine, fw->Save(file.family, std::nullopt, SaveOptions{.allow_lossy = true}));
  if (!lossy) {
    EXPECT_EQ(mine, *strict);
  }
  std::string unmarked;
  size_t marks = 0;
  for (size_t pos = 0; pos < mine.size();) {
    size_t end = mine.find('\n', pos);
    end = end == std::string::npos ? mine.size() : end + 1;
    const std::string line = mine.substr(pos, end - pos);
    if (line.starts_with("# iptkit: lossy rule ")) {
      ++marks;
    } else {
      unmarked += line;
    }
    pos = end;
  }
  EXPECT_EQ(marks > 0, lossy);
  EXPECT_EQ(CorpusDiff(variant, text, unmarked), "") << "Firewall::Save";
}

std::vector<CorpusFile> FilesOrPlaceholder() {
  std::vector<CorpusFile> files = CorpusFiles();
  if (files.empty()) files.push_back({"absent", "", Family::kIPv4});  // one skipped case says why
  return files;
}

INSTANTIATE_TEST_SUITE_P(Corpus, CorpusRoundTripTest,
                         ::testing::Combine(::testing::Values(BackendKind::kNative, BackendKind::kNft,
                                                              BackendKind::kLegacy, BackendKind::kNativeLegacy),
                                            ::testing::ValuesIn(FilesOrPlaceholder())),
                         [](const auto& info) {
                           std::string name = BackendName(std::get<0>(info.param)) + "_" + std::get<1>(info.param).name;
                           for (char& c : name) {
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           }
                           return name;
                         });

}  // namespace
}  // namespace iptkit::integration
