// `iptkit list` on the whole corpus, through the two paths that print it without a model of the whole table: `list
// -S` from the save text (which the native backend prints from the rules' binary forms), and every other text
// listing (-L with -v, -x, --line-numbers, a chain, a rule; -S -v) from the rules handed over a slice at a time
// (Backend::ReadRules). Each is byte for byte what the model's listing prints, with the same warnings, errors and
// sets, for every table (those the file leaves out too), every chain and a chain that does not exist; `list -S` is
// what `iptables-nft -S` prints, and the -L forms are compared with `iptables-nft -L -n` (iptkit's extension
// printers cover the common extensions; the test prints how many matched).
#include <gtest/gtest.h>

#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "iptkit/dialect.h"
#include "iptkit/firewall.h"
#include "tests/integration/corpus.h"
#include "tests/integration/library_util.h"
#include "tests/integration/test_util.h"
#include "tools/iptkit/cli_args.h"
#include "tools/iptkit/cli_listing.h"
#include "tools/iptkit/cli_support.h"

namespace iptkit::integration {
namespace {

struct Listed {
  Status status = Status::Ok();
  std::string out, err;
};

std::optional<std::string> TableOf(const cli::Invocation& inv) {
  if (!inv.table.empty()) return inv.table;
  if (!inv.chain.empty()) return "filter";
  return std::nullopt;
}

// The listing as `iptkit list` printed it before: from the model read (and the sets its rules use, not looked up).
Listed FromModel(Firewall& fw, Family family, const cli::Invocation& inv) {
  Listed out;
  Result<Ruleset> all = fw.List(family, TableOf(inv), {.allow_lossy = inv.allow_lossy});
  if (!all.ok()) return {all.status(), "", ""};
  all->family = family;
  Result<Ruleset> selected = cli::SelectListing(*std::move(all), inv);
  if (!selected.ok()) return {selected.status(), "", ""};
  std::ostringstream err;
  out.out = cli::RenderSelectedListing(*selected, inv, {}, err);
  if (!inv.list.rules) out.out += cli::FormatSetUses(cli::SetsReferenced({&*selected}));
  out.err = err.str();
  return out;
}

// `iptkit list -S` as it prints now: from the save text.
Listed FromSave(Firewall& fw, Family family, const cli::Invocation& inv) {
  Listed out;
  Result<std::string> save = fw.Save(family, TableOf(inv), {.allow_lossy = inv.allow_lossy});
  if (!save.ok()) return {save.status(), "", ""};
  std::ostringstream err;
  Result<std::string> text = cli::RenderRulesSFromSave(*save, family, inv, err);
  out.status = text.status();
  if (text.ok()) out.out = *text;
  out.err = err.str();
  return out;
}

// The other text listings as they print now: from the rules handed over.
Listed FromRules(Firewall& fw, Family family, const cli::Invocation& inv) {
  Listed out;
  Result<std::optional<cli::RulesListing>> listing = cli::ListFromRules(fw.backend(), family, TableOf(inv), inv);
  if (!listing.ok()) return {listing.status(), "", ""};
  if (!*listing) return {Status::Internal("refused (a table that cannot be shown faithfully)"), "", ""};
  std::ostringstream err;
  out.out = cli::RenderRulesListing(**listing, inv, err);
  if (!inv.list.rules) out.out += cli::FormatSetUses((*listing)->sets);
  out.err = err.str();
  return out;
}

class NativeListingCorpusTest : public ::testing::TestWithParam<CorpusFile> {};

TEST_P(NativeListingCorpusTest, ListingsWithoutTheModelAreTheModelsListing) {
  IPTKIT_REQUIRE_ROOT();
  const CorpusFile& file = GetParam();
  if (file.path.empty()) GTEST_SKIP() << "no corpus under " << IPTKIT_CORPUS_DIR;
  ASSERT_OK_AND_ASSIGN(std::string text, ReadTextFile(file.path));
  ASSERT_OK_AND_ASSIGN(auto ns, TestNetns::Create());
  IPTKIT_REQUIRE_VARIANT(*ns, Variant::kNft, file.family);
  ASSERT_STATUS_OK(LoadCorpusFile(*ns, Variant::kNft, file, text));
  ASSERT_OK_AND_ASSIGN(auto fw, OpenFirewall(*ns, BackendKind::kNative));
  ASSERT_OK_AND_ASSIGN(Ruleset parsed, ParseSave(text, file.family));
  const std::string family_flag = file.family == Family::kIPv4 ? "-4" : "-6";

  // {iptkit arguments, iptables arguments (empty: no comparison with iptables)}
  std::vector<std::pair<std::vector<std::string>, std::vector<std::string>>> cases = {
      {{"list", "-S"}, {}},
      {{"list", "-S", "INPUT"}, {"-S", "INPUT"}},
      {{"list", "-S", "NO-SUCH-CHAIN"}, {}},
      {{"list"}, {}},
      {{"list", "-v", "-x"}, {}},
      {{"list", "NO-SUCH-CHAIN"}, {}},
      {{"list", "INPUT", "999999"}, {}},
  };
  for (const std::string& table : KnownTables()) {
    cases.push_back({{"-t", table, "list", "-S"}, {"-t", table, "-S"}});
    cases.push_back({{"-t", table, "list", "-S", "-v"}, {"-t", table, "-S", "-v"}});
    cases.push_back({{"-t", table, "list"}, {"-t", table, "-L", "-n"}});
    cases.push_back({{"-t", table, "list", "-v"}, {"-t", table, "-L", "-n", "-v"}});
    cases.push_back(
        {{"-t", table, "list", "-v", "-x", "--line-numbers"}, {"-t", table, "-L", "-n", "-v", "-x", "--line-numbers"}});
    const Table* t = parsed.FindTable(table);
    if (t == nullptr) continue;
    for (const Chain& c : t->chains) {
      cases.push_back({{"-t", table, "list", "-S", c.name}, {"-t", table, "-S", c.name}});
      cases.push_back(
          {{"-t", table, "list", c.name, "--line-numbers"}, {"-t", table, "-L", c.name, "-n", "--line-numbers"}});
      if (!c.rules.empty()) {
        const std::string last = std::to_string(c.rules.size());
        cases.push_back({{"-t", table, "list", c.name, last, "-v"}, {"-t", table, "-L", c.name, last, "-n", "-v"}});
        cases.push_back({{"-t", table, "list", "-S", c.name, last}, {"-t", table, "-S", c.name, last}});
      }
    }
  }
  size_t same_as_iptables = 0, compared = 0, s_compared = 0;
  for (const auto& [args, iptables_args] : cases) {
    std::vector<std::string> argv = {family_flag};
    argv.insert(argv.end(), args.begin(), args.end());
    ASSERT_OK_AND_ASSIGN(cli::Invocation inv, cli::ParseCommandLine(argv));
    Listed model = FromModel(*fw, file.family, inv);
    Listed now = cli::ListsFromSaveText(inv) ? FromSave(*fw, file.family, inv) : FromRules(*fw, file.family, inv);
    const std::string what = ::testing::PrintToString(argv);
    EXPECT_EQ(now.status.code(), model.status.code()) << what << ": " << now.status.ToString();
    EXPECT_EQ(now.status.message(), model.status.message()) << what;
    EXPECT_EQ(now.out, model.out) << what;
    EXPECT_EQ(now.err, model.err) << what;
    if (iptables_args.empty() || !model.status.ok()) continue;
    CommandResult iptables = ns->Iptables(Variant::kNft, file.family, iptables_args);
    ASSERT_TRUE(iptables.ok()) << iptables.Describe();
    ++compared;
    if (inv.list.rules) {
      // iptables -S prints the save text's rule lines: always the same.
      EXPECT_EQ(now.out, iptables.out) << what;
      ++s_compared;
    }
    if (now.out == iptables.out) ++same_as_iptables;
  }
  EXPECT_GE(s_compared, KnownTables().size());
  std::cout << file.name << ": " << same_as_iptables << " of " << compared
            << " listings byte for byte what iptables-nft prints\n";
}

std::vector<CorpusFile> FilesOrPlaceholder() {
  std::vector<CorpusFile> files = CorpusFiles();
  if (files.empty()) files.push_back({"absent", "", Family::kIPv4});
  return files;
}

INSTANTIATE_TEST_SUITE_P(Corpus, NativeListingCorpusTest, ::testing::ValuesIn(FilesOrPlaceholder()),
                         [](const auto& info) {
                           std::string name = info.param.name;
                           for (char& c : name) {
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           }
                           return name;
                         });

}  // namespace
}  // namespace iptkit::integration
