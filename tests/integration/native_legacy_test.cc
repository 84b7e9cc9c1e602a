// The in-process legacy backend (native-legacy: libiptc + libxtables) against iptables-legacy itself, in private
// namespaces: every corpus file written by it gives the same iptables-legacy-save text and the same kernel entries
// (xt_rules.h kernel forms) as iptables-legacy-restore writes; what iptables-legacy wrote is read into the model
// the text parser gives for iptables-legacy-save's output; iptables-legacy -C / -D find the rules it wrote.
// Plus: a commit the kernel refuses changes nothing, counters of other rules survive a change, a foreign
// iptables-legacy writer in a loop loses nothing (the xtables lock), and `auto` picks it on legacy.
#include <gtest/gtest.h>
#include <sched.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <set>
#include <sstream>
#include <thread>

#include "iptkit/dialect.h"
#include "iptkit/firewall.h"
#include "src/backend/legacy/xt_fingerprint.h"
#include "src/backend/legacy/xt_rules.h"
#include "src/backend/legacy/xtables_backend.h"
#include "src/base/netns.h"
#include "tests/integration/corpus.h"
#include "tests/integration/library_util.h"
#include "tests/integration/test_util.h"

namespace iptkit::integration {
namespace {

using backend::legacy::ChainRuleForms;
using backend::legacy::Fingerprint;
using backend::legacy::RuleForms;
using backend::legacy::XtablesProbe;

// table → its kernel rule forms, for one family of one namespace.
std::map<std::string, ChainRuleForms> KernelForms(const TestNetns& ns, Family family) {
  std::map<std::string, ChainRuleForms> out;
  Result<base::UniqueFd> fd = base::OpenNetns(ns.name());
  EXPECT_TRUE(fd.ok()) << fd.status().ToString();
  if (!fd.ok()) return out;
  auto probe = XtablesProbe::Open(fd->get());
  EXPECT_TRUE(probe.ok()) << probe.status().ToString();
  if (!probe.ok()) return out;
  Result<Fingerprint> fp = (*probe)->Read(family);
  EXPECT_TRUE(fp.ok()) << fp.status().ToString();
  if (!fp.ok()) return out;
  for (const auto& t : *fp) {
    Result<ChainRuleForms> forms = RuleForms(family, t);
    EXPECT_TRUE(forms.ok()) << forms.status().ToString();
    if (forms.ok()) out[t.name] = *std::move(forms);
  }
  return out;
}

// "-C CHAIN rule" / "-D CHAIN rule" for every "-A" line of an iptables-save text, per table, as restore input.
std::string EveryRuleAs(const std::string& save_text, const std::string& command) {
  std::string out;
  std::istringstream in(save_text);
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with("*") || line == "COMMIT") {
      out += line + "\n";
    } else if (line.starts_with("-A ") && line.find(' ', 3) != std::string::npos) {
      // (A rule without a spec is left out: iptables-legacy-restore 1.8.9 fails `-C CHAIN` alone even on its own
      // table.)
      out += command + line.substr(2) + "\n";
    }
  }
  return out;
}

// "" when both are equal, else where they first differ (table, chain, rule, byte offset) with the bytes around it.
std::string FormsDifference(std::map<std::string, ChainRuleForms> ours, std::map<std::string, ChainRuleForms> theirs) {
  // Tables without rules are left out: iptables-legacy-restore instantiates filter even for a file without it.
  for (auto* forms : {&ours, &theirs}) {
    std::erase_if(*forms, [](const auto& table) {
      for (const auto& [chain, rules] : table.second) {
        if (!rules.empty()) return false;
      }
      return true;
    });
  }
  auto hex = [](const std::string& s, size_t from) {
    std::string out;
    char buf[4];
    for (size_t i = from; i < s.size() && i < from + 24; ++i) {
      std::snprintf(buf, sizeof(buf), "%02x", static_cast<unsigned char>(s[i]));
      out += buf;
    }
    return out;
  };
  for (const auto& [table, chains] : theirs) {
    auto t = ours.find(table);
    if (t == ours.end()) return "table " + table + " missing";
    for (const auto& [chain, forms] : chains) {
      auto c = t->second.find(chain);
      if (c == t->second.end()) return table + " " + chain + " missing";
      if (c->second.size() != forms.size()) return table + " " + chain + ": rule counts differ";
      for (size_t k = 0; k < forms.size(); ++k) {
        const std::string& a = c->second[k];
        const std::string& b = forms[k];
        if (a == b) continue;
        size_t at = 0;
        while (at < a.size() && at < b.size() && a[at] == b[at]) ++at;
        const size_t from = at >= 8 ? at - 8 : 0;
        return table + " " + chain + " rule " + std::to_string(k + 1) + " sizes " + std::to_string(a.size()) + "/" +
               std::to_string(b.size()) + " differ at byte " + std::to_string(at) + ": ours " + hex(a, from) +
               ", theirs " + hex(b, from);
      }
    }
  }
  return ours.size() == theirs.size() ? "" : "table counts differ";
}

// "" when both maps are equal, else the first differing table and line.
std::string FirstDifference(std::map<std::string, std::string> ours, std::map<std::string, std::string> theirs) {
  // Tables without rules and with ACCEPT policies are left out (see FormsDifference).
  for (auto* blocks : {&ours, &theirs}) {
    std::erase_if(*blocks, [](const auto& table) {
      return table.second.find("\n-A ") == std::string::npos && table.second.find(" DROP [") == std::string::npos;
    });
  }
  for (const auto& [table, block] : theirs) {
    auto it = ours.find(table);
    if (it == ours.end()) return "table " + table + " missing";
    if (it->second == block) continue;
    std::istringstream a(it->second), b(block);
    std::string la, lb;
    while (true) {
      bool ga = static_cast<bool>(std::getline(a, la));
      bool gb = static_cast<bool>(std::getline(b, lb));
      if (!ga && !gb) break;
      if (!ga || !gb || la != lb) {
        return "table " + table + ": ours '" + (ga ? la : "<end>") + "', theirs '" + (gb ? lb : "<end>") + "'";
      }
    }
  }
  for (const auto& [table, block] : ours) {
    if (!theirs.count(table)) return "extra table " + table;
  }
  return "";
}

class NativeLegacyCorpusTest : public ::testing::TestWithParam<CorpusFile> {};

TEST_P(NativeLegacyCorpusTest, WrittenLikeIptablesLegacyAndReadBack) {
  IPTKIT_REQUIRE_ROOT();
  const CorpusFile& file = GetParam();
  if (file.path.empty()) GTEST_SKIP() << "no corpus under " << IPTKIT_CORPUS_DIR;
  ASSERT_OK_AND_ASSIGN(std::string text, ReadTextFile(file.path));
  ASSERT_OK_AND_ASSIGN(auto theirs, TestNetns::Create());
  ASSERT_OK_AND_ASSIGN(auto ours, TestNetns::Create());
  IPTKIT_REQUIRE_VARIANT(*theirs, Variant::kLegacy, file.family);
  ASSERT_STATUS_OK(PrepareCorpusObjects(*theirs, file.name));
  ASSERT_STATUS_OK(PrepareCorpusObjects(*ours, file.name));

  CommandResult loaded = theirs->Restore(Variant::kLegacy, file.family, text);
  ASSERT_TRUE(loaded.ok()) << loaded.Describe();
  ASSERT_OK_AND_ASSIGN(auto fw, OpenFirewall(*ours, BackendKind::kNativeLegacy));
  ASSERT_OK_AND_ASSIGN(CommitResult done, fw->Restore(file.family, text, {}));
  EXPECT_EQ(done.backend, "native-legacy");

  // The same save text and the same kernel entries.
  ASSERT_OK_AND_ASSIGN(std::string their_save, theirs->Save(Variant::kLegacy, file.family));
  ASSERT_OK_AND_ASSIGN(std::string our_save, ours->Save(Variant::kLegacy, file.family));
  // Per table: the kernel lists tables in the order they were first used, which the two writers need not share.
  EXPECT_EQ(FirstDifference(SplitTables(our_save), SplitTables(their_save)), "");
  EXPECT_EQ(FormsDifference(KernelForms(*ours, file.family), KernelForms(*theirs, file.family)), "");

  // What iptables-legacy wrote reads as the text parser reads iptables-legacy-save's output.
  ASSERT_OK_AND_ASSIGN(auto reader, OpenFirewall(*theirs, BackendKind::kNativeLegacy));
  ASSERT_OK_AND_ASSIGN(Ruleset expected, ParseSave(their_save, file.family));
  ASSERT_OK_AND_ASSIGN(Ruleset read, reader->List(file.family, std::nullopt, ListOptions{.allow_lossy = true}));
  ASSERT_EQ(read.tables.size(), expected.tables.size());
  for (size_t i = 0; i < read.tables.size(); ++i) {
    const Table& r = read.tables[i];
    const Table& e = expected.tables[i];
    EXPECT_EQ(r.unrepresentable_reason, "") << r.name;
    ASSERT_EQ(r.name, e.name);
    ASSERT_EQ(r.chains.size(), e.chains.size()) << r.name;
    for (size_t c = 0; c < r.chains.size(); ++c) {
      ASSERT_EQ(r.chains[c].name, e.chains[c].name) << r.name;
      EXPECT_EQ(r.chains[c].policy, e.chains[c].policy) << r.name << " " << r.chains[c].name;
      ASSERT_EQ(r.chains[c].rules.size(), e.chains[c].rules.size()) << r.name << " " << r.chains[c].name;
      for (size_t k = 0; k < r.chains[c].rules.size(); ++k) {
        EXPECT_EQ(r.chains[c].rules[k], e.chains[c].rules[k])
            << r.name << " " << r.chains[c].name << " rule " << k + 1 << ": read '"
            << FormatRuleSpec(r.chains[c].rules[k]) << "', save '" << FormatRuleSpec(e.chains[c].rules[k]) << "'";
      }
    }
  }
  ASSERT_OK_AND_ASSIGN(std::string mine, reader->Save(file.family, std::nullopt, SaveOptions{.allow_lossy = true}));
  std::string unmarked;
  std::istringstream lines(mine);
  for (std::string line; std::getline(lines, line);) {
    if (!line.starts_with("# iptkit: lossy rule ")) unmarked += line + "\n";
  }
  EXPECT_EQ(FirstDifference(SplitTables(unmarked), SplitTables(their_save)), "");

  // iptables-legacy finds every rule we wrote: -C passes for all, -D removes all (a miss fails the restore).
  CommandResult checked = ours->Restore(Variant::kLegacy, file.family, EveryRuleAs(our_save, "-C"), true);
  EXPECT_TRUE(checked.ok()) << checked.Describe();
  CommandResult deleted = ours->Restore(Variant::kLegacy, file.family, EveryRuleAs(our_save, "-D"), true);
  EXPECT_TRUE(deleted.ok()) << deleted.Describe();
  CommandResult deleted_theirs = theirs->Restore(Variant::kLegacy, file.family, EveryRuleAs(their_save, "-D"), true);
  EXPECT_TRUE(deleted_theirs.ok()) << deleted_theirs.Describe();
  EXPECT_EQ(FormsDifference(KernelForms(*ours, file.family), KernelForms(*theirs, file.family)), "");
}

std::vector<CorpusFile> FilesOrPlaceholder() {
  std::vector<CorpusFile> files = CorpusFiles();
  if (files.empty()) files.push_back({"absent", "", Family::kIPv4});
  return files;
}

INSTANTIATE_TEST_SUITE_P(Corpus, NativeLegacyCorpusTest, ::testing::ValuesIn(FilesOrPlaceholder()),
                         [](const auto& info) {
                           std::string name = info.param.name;
                           for (char& c : name) {
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           }
                           return name;
                         });

class NativeLegacyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    IPTKIT_REQUIRE_ROOT();
    ASSERT_OK_AND_ASSIGN(ns_, TestNetns::Create());
    IPTKIT_REQUIRE_VARIANT(*ns_, Variant::kLegacy, Family::kIPv4);
  }
  CommandResult Ipt(const std::vector<std::string>& args) {
    return ns_->Iptables(Variant::kLegacy, Family::kIPv4, args);
  }
  std::unique_ptr<TestNetns> ns_;
};

TEST_F(NativeLegacyTest, RefusedCommitChangesNothing) {
  ASSERT_TRUE(Ipt({"-A", "INPUT", "-s", "10.0.0.1/32", "-j", "ACCEPT"}).ok());
  ASSERT_OK_AND_ASSIGN(std::string before, ns_->Save(Variant::kLegacy, Family::kIPv4, "", true));
  ASSERT_OK_AND_ASSIGN(auto fw, OpenFirewall(*ns_, BackendKind::kNativeLegacy));
  // Two rules in one table; the kernel refuses the second (REJECT exists only in filter's INPUT/FORWARD/OUTPUT; the
  // table check happens in the kernel: xt_check_target).
  Transaction txn;
  txn.Append(Family::kIPv4, "mangle", "PREROUTING", Spec("-s 10.0.0.2/32 -j ACCEPT"));
  txn.Append(Family::kIPv4, "mangle", "PREROUTING", Spec("-p tcp -j REJECT --reject-with tcp-reset"));
  Result<CommitResult> done = fw->Commit(txn);
  ASSERT_FALSE(done.ok());
  EXPECT_EQ(done.status().code(), StatusCode::kInvalidArgument) << done.status().ToString();
  ASSERT_OK_AND_ASSIGN(std::string after, ns_->Save(Variant::kLegacy, Family::kIPv4, "", true));
  // mangle may now exist (iptables-legacy instantiates a table on first use, too) but holds no rule.
  EXPECT_EQ(RuleLines(after, "filter", "INPUT"), RuleLines(before, "filter", "INPUT"));
  EXPECT_TRUE(RuleLines(after, "mangle", "PREROUTING").empty()) << after;
}

TEST_F(NativeLegacyTest, CountersOfOtherRulesSurviveChanges) {
  ASSERT_TRUE(Ipt({"-A", "INPUT", "-s", "10.0.0.1/32", "-c", "5", "700", "-j", "ACCEPT"}).ok());
  ASSERT_TRUE(Ipt({"-A", "INPUT", "-s", "10.0.0.2/32", "-c", "7", "900", "-j", "ACCEPT"}).ok());
  ASSERT_OK_AND_ASSIGN(auto fw, OpenFirewall(*ns_, BackendKind::kNativeLegacy));
  Transaction txn;
  txn.Insert(Family::kIPv4, "filter", "INPUT", 1, Spec("-s 10.0.0.3/32 -j DROP"));
  txn.Delete(Family::kIPv4, "filter", "INPUT", Spec("-s 10.0.0.1/32 -j ACCEPT"));
  ASSERT_OK_AND_ASSIGN(CommitResult done, fw->Commit(txn));
  EXPECT_EQ(done.backend, "native-legacy");
  ASSERT_OK_AND_ASSIGN(std::string saved, ns_->Save(Variant::kLegacy, Family::kIPv4, "filter", true));
  EXPECT_NE(saved.find(":OUTPUT ACCEPT [0:0]\n[0:0] -A INPUT -s 10.0.0.3/32 -j DROP\n"
                       "[7:900] -A INPUT -s 10.0.0.2/32 -j ACCEPT\nCOMMIT\n"),
            std::string::npos)
      << saved;
  ASSERT_OK_AND_ASSIGN(Ruleset rs, fw->List(Family::kIPv4, "filter"));
  ASSERT_EQ(rs.tables.size(), 1u);
  const Chain* input = rs.tables[0].FindChain("INPUT");
  ASSERT_NE(input, nullptr);
  ASSERT_EQ(input->rules.size(), 2u);
  EXPECT_EQ(input->rules[1].counters.packets, 7u);
  EXPECT_EQ(input->rules[1].counters.bytes, 900u);
}

TEST_F(NativeLegacyTest, ErrorsNameTheOpAndChangeNothing) {
  ASSERT_OK_AND_ASSIGN(auto fw, OpenFirewall(*ns_, BackendKind::kNativeLegacy));
  Transaction txn;
  txn.Append(Family::kIPv4, "filter", "INPUT", Spec("-s 10.0.0.9/32 -j ACCEPT"));
  txn.Delete(Family::kIPv4, "filter", "INPUT", Spec("-s 10.0.0.8/32 -j ACCEPT"));
  Result<CommitResult> done = fw->Commit(txn);
  ASSERT_FALSE(done.ok());
  EXPECT_NE(done.status().message().find("10.0.0.8"), std::string::npos) << done.status().ToString();
  ASSERT_OK_AND_ASSIGN(std::string saved, ns_->Save(Variant::kLegacy, Family::kIPv4, "filter"));
  EXPECT_TRUE(RuleLines(saved, "filter", "INPUT").empty()) << saved;
}

TEST_F(NativeLegacyTest, ForeignIptablesLegacyWriterLosesNothing) {
  constexpr int kEach = 40;
  ASSERT_OK_AND_ASSIGN(auto fw, OpenFirewall(*ns_, BackendKind::kNativeLegacy));
  std::thread foreign([&] {
    for (int i = 0; i < kEach; ++i) {
      CommandResult r = Ipt({"-w", "-A", "INPUT", "-s", "10.1.0." + std::to_string(i) + "/32", "-j", "ACCEPT"});
      EXPECT_TRUE(r.ok()) << r.Describe();
    }
  });
  for (int i = 0; i < kEach; ++i) {
    Transaction txn;
    txn.Append(Family::kIPv4, "filter", "INPUT", Spec("-s 10.2.0." + std::to_string(i) + "/32 -j DROP"));
    Result<CommitResult> done = fw->Commit(txn);
    EXPECT_TRUE(done.ok()) << done.status().ToString();
  }
  foreign.join();
  ASSERT_OK_AND_ASSIGN(std::string saved, ns_->Save(Variant::kLegacy, Family::kIPv4, "filter"));
  std::vector<std::string> lines = RuleLines(saved, "filter", "INPUT");
  EXPECT_EQ(lines.size(), 2u * kEach);
  std::set<std::string> distinct(lines.begin(), lines.end());
  EXPECT_EQ(distinct.size(), 2u * kEach);
}

TEST_F(NativeLegacyTest, ReadsSeeForeignChangesDespiteTheDecodeCache) {
  ASSERT_TRUE(Ipt({"-N", "FOO"}).ok());
  ASSERT_TRUE(Ipt({"-A", "INPUT", "-s", "10.0.0.1/32", "-c", "3", "300", "-j", "FOO"}).ok());
  ASSERT_OK_AND_ASSIGN(auto fw, OpenFirewall(*ns_, BackendKind::kNativeLegacy));
  ASSERT_OK_AND_ASSIGN(Ruleset before, fw->List(Family::kIPv4, "filter"));
  ASSERT_EQ(FormatRuleSpec(before.tables.at(0).FindChain("INPUT")->rules.at(0)), "-s 10.0.0.1/32 -j FOO");
  EXPECT_EQ(before.tables.at(0).FindChain("INPUT")->rules.at(0).counters.packets, 3u);
  // The same entry bytes, another jump target name and other counters: both must show.
  ASSERT_TRUE(Ipt({"-E", "FOO", "BAR"}).ok());
  ASSERT_TRUE(Ipt({"-Z", "INPUT"}).ok());
  ASSERT_OK_AND_ASSIGN(Ruleset after, fw->List(Family::kIPv4, "filter"));
  const Rule& rule = after.tables.at(0).FindChain("INPUT")->rules.at(0);
  EXPECT_EQ(FormatRuleSpec(rule), "-s 10.0.0.1/32 -j BAR");
  EXPECT_EQ(rule.counters.packets, 0u);
  EXPECT_NE(after.tables.at(0).FindChain("BAR"), nullptr);
}

// The kernel copies an extension's name into the entry it returns only up to its NUL (xt_obj_to_user): the rest of
// the name field is whatever libiptc's (unzeroed) GET_ENTRIES buffer held. A rule's decode cache key and a lossy
// rule's kernel form took those bytes in, so on a caller's thread whose malloc handed that buffer out dirty (the
// main thread of a Python process inside the namespace) every read decoded every rule again (twice the CPU of a
// read of 10,000 rules) and one rule's kernel form differed from read to read. Here the caller's thread is in the
// namespace (the backend runs libiptc on it) and dirties its freed memory differently before each read.
TEST_F(NativeLegacyTest, ReadsTakeNothingFromTheReadBufferPastAnExtensionName) {
  // `! -i +` is lossy (its kernel form is what identifies it); a match and a target extension carry names.
  ASSERT_TRUE(Ipt({"-A", "INPUT", "!", "-i", "+", "-p", "tcp", "-m", "tcp", "--dport", "22", "-j", "LOG"}).ok());
  ASSERT_TRUE(
      Ipt({"-A", "INPUT", "-s", "10.0.0.1/32", "-p", "udp", "-m", "udp", "--dport", "53", "-j", "ACCEPT"}).ok());
  std::vector<std::string> forms;
  std::thread inside([&] {
    ASSERT_OK_AND_ASSIGN(base::UniqueFd fd, base::OpenNetns(ns_->name()));
    ASSERT_EQ(::setns(fd.get(), CLONE_NEWNET), 0);
    FirewallOptions options;  // the caller's namespace, which this thread is in
    options.backend = BackendKind::kNativeLegacy;
    ASSERT_OK_AND_ASSIGN(auto fw, Firewall::Open(options));
    for (unsigned char dirt : {0xA5, 0x5A, 0xC3}) {
      // Freed chunks of every small size, filled with `dirt`: the next reads' buffers come from them.
      std::vector<void*> chunks;
      for (size_t size = 16; size <= 8192; size += 16) {
        chunks.push_back(std::malloc(size));
        std::memset(chunks.back(), dirt, size);
      }
      for (void* p : chunks) std::free(p);
      ASSERT_OK_AND_ASSIGN(Ruleset rs, fw->List(Family::kIPv4, "filter", {.allow_lossy = true}));
      const Chain* input = rs.tables.at(0).FindChain("INPUT");
      ASSERT_NE(input, nullptr);
      ASSERT_EQ(input->rules.size(), 2u);
      EXPECT_FALSE(input->rules[0].lossy.empty());
      forms.push_back(input->rules[0].kernel_form);
    }
  });
  inside.join();
  ASSERT_EQ(forms.size(), 3u);
  EXPECT_EQ(forms[0], forms[1]);
  EXPECT_EQ(forms[0], forms[2]);
}

// A plan's read initializes only the tables its ops touch (ChainScope::tables), as iptables-legacy reads only the
// table it changes: with nat, mangle and raw instantiated too (python-iptables instantiates every table when it
// starts), an append to filter made an iptc_init (a socket, GET_INFO, GET_ENTRIES) of each of them.
TEST_F(NativeLegacyTest, APlanReadsOnlyTheTablesItTouches) {
  ASSERT_TRUE(Ipt({"-t", "nat", "-A", "POSTROUTING", "-j", "ACCEPT"}).ok());
  ASSERT_TRUE(Ipt({"-t", "mangle", "-A", "PREROUTING", "-j", "ACCEPT"}).ok());
  ASSERT_TRUE(Ipt({"-A", "INPUT", "-j", "ACCEPT"}).ok());
  backend::BackendOptions options;
  options.netns = ns_->name();
  ASSERT_OK_AND_ASSIGN(auto backend, backend::legacy::NewXtablesBackend(options));
  backend::ChainScope scope = backend::ChainScope::One("filter", "INPUT");
  ASSERT_OK_AND_ASSIGN(Ruleset rs, backend->ReadChainsForPlan(Family::kIPv4, backend::SnapshotDetail::kRules, scope));
  ASSERT_EQ(rs.tables.size(), 1u);
  EXPECT_EQ(rs.tables[0].name, "filter");
  ASSERT_NE(rs.tables[0].FindChain("INPUT"), nullptr);
  EXPECT_EQ(rs.tables[0].FindChain("INPUT")->rules.size(), 1u);
  // Two tables named: those two; none named: every table.
  scope.tables = {"filter", "nat"};
  ASSERT_OK_AND_ASSIGN(rs, backend->ReadChainsForPlan(Family::kIPv4, backend::SnapshotDetail::kChains, scope));
  std::set<std::string> names;
  for (const Table& t : rs.tables) names.insert(t.name);
  EXPECT_EQ(names, (std::set<std::string>{"filter", "nat"}));
  scope.tables.clear();
  ASSERT_OK_AND_ASSIGN(rs, backend->ReadChainsForPlan(Family::kIPv4, backend::SnapshotDetail::kChains, scope));
  names.clear();
  for (const Table& t : rs.tables) names.insert(t.name);
  EXPECT_TRUE(names.count("mangle")) << rs.tables.size();
  // And a change through the Firewall still lands (its plan read filter alone).
  ASSERT_OK_AND_ASSIGN(auto fw, OpenFirewall(*ns_, BackendKind::kNativeLegacy));
  Transaction txn;
  txn.Append(Family::kIPv4, "filter", "INPUT", Spec("-s 10.0.0.7/32 -j DROP"));
  txn.Delete(Family::kIPv4, "filter", "INPUT", Spec("-j ACCEPT"));
  Result<CommitResult> done = fw->Commit(txn);
  ASSERT_TRUE(done.ok()) << done.status().ToString();
  ASSERT_OK_AND_ASSIGN(std::string saved, ns_->Save(Variant::kLegacy, Family::kIPv4, ""));
  EXPECT_EQ(RuleLines(saved, "filter", "INPUT"), std::vector<std::string>{"-A INPUT -s 10.0.0.7/32 -j DROP"});
  EXPECT_EQ(RuleLines(saved, "nat", "POSTROUTING").size(), 1u);
}

// A single-chain op reads, decodes and rewrites nothing outside its chain (as iptables-legacy -A/-D): a rule iptkit
// cannot decode (the QUEUE verdict, which iptables-legacy-save cannot show as a rule iptkit would load back) in
// another chain of the same table blocks none of them and stays as it was, and the table is still reported
// unrepresentable and refused for what needs every chain (deleting a chain). Before plans read only the chains
// their ops name, the whole table was decoded for every change and each of these failed as unrepresentable.
TEST_F(NativeLegacyTest, SingleChainOpsLeaveAnUndecodableRuleInAnotherChainAlone) {
  ASSERT_TRUE(Ipt({"-A", "FORWARD", "-j", "QUEUE"}).ok());
  ASSERT_TRUE(Ipt({"-N", "FOO"}).ok());
  ASSERT_TRUE(Ipt({"-A", "INPUT", "-s", "10.0.0.1/32", "-j", "ACCEPT"}).ok());
  ASSERT_TRUE(Ipt({"-A", "INPUT", "-s", "10.0.0.2/32", "-c", "4", "400", "-j", "ACCEPT"}).ok());
  ASSERT_OK_AND_ASSIGN(std::string before, ns_->Save(Variant::kLegacy, Family::kIPv4, "filter"));
  ASSERT_OK_AND_ASSIGN(auto fw, OpenFirewall(*ns_, BackendKind::kNativeLegacy));
  auto commit = [&](Transaction txn) {
    Result<CommitResult> done = fw->Commit(txn);
    EXPECT_TRUE(done.ok()) << done.status().ToString();
  };
  commit(std::move(Transaction().Append(Family::kIPv4, "filter", "INPUT", Spec("-s 10.0.0.3/32 -j DROP"))));
  commit(std::move(Transaction().Insert(Family::kIPv4, "filter", "INPUT", 2, Spec("-s 10.0.0.4/32 -j DROP"))));
  commit(std::move(Transaction().Delete(Family::kIPv4, "filter", "INPUT", Spec("-s 10.0.0.1/32 -j ACCEPT"))));
  commit(std::move(Transaction().Replace(Family::kIPv4, "filter", "INPUT", 1, Spec("-s 10.0.0.5/32 -j DROP"))));
  commit(std::move(Transaction().Append(Family::kIPv4, "filter", "FOO", Spec("-s 10.0.0.6/32 -j RETURN"))));
  ASSERT_OK_AND_ASSIGN(std::string after, ns_->Save(Variant::kLegacy, Family::kIPv4, "filter"));
  ASSERT_OK_AND_ASSIGN(std::string counted, ns_->Save(Variant::kLegacy, Family::kIPv4, "filter", true));
  EXPECT_EQ(RuleLines(after, "filter", "FORWARD"), RuleLines(before, "filter", "FORWARD"));
  EXPECT_EQ(RuleLines(after, "filter", "FORWARD"), (std::vector<std::string>{"-A FORWARD -j QUEUE"}));
  // The counters of the rule nobody named survive (libiptc maps them by position).
  EXPECT_EQ(RuleLines(after, "filter", "INPUT"),
            (std::vector<std::string>{"-A INPUT -s 10.0.0.5/32 -j DROP", "-A INPUT -s 10.0.0.2/32 -j ACCEPT",
                                      "-A INPUT -s 10.0.0.3/32 -j DROP"}));
  EXPECT_NE(counted.find("[4:400] -A INPUT -s 10.0.0.2/32 -j ACCEPT"), std::string::npos) << counted;
  EXPECT_EQ(RuleLines(after, "filter", "FOO"), (std::vector<std::string>{"-A FOO -s 10.0.0.6/32 -j RETURN"}));

  // Still reported, and refused where every chain's rules count.
  Result<Ruleset> listed = fw->List(Family::kIPv4, "filter");
  ASSERT_FALSE(listed.ok());
  EXPECT_EQ(listed.status().code(), StatusCode::kFailedPrecondition) << listed.status().ToString();
  ASSERT_TRUE(Ipt({"-F", "FOO"}).ok());
  Result<CommitResult> drop = fw->Commit(Transaction().DeleteChain(Family::kIPv4, "filter", "FOO"));
  ASSERT_FALSE(drop.ok());
  EXPECT_EQ(drop.status().code(), StatusCode::kFailedPrecondition) << drop.status().ToString();
  EXPECT_NE(drop.status().message().find("unrepresentable"), std::string::npos) << drop.status().ToString();
  ASSERT_OK_AND_ASSIGN(std::string last, ns_->Save(Variant::kLegacy, Family::kIPv4, "filter"));
  EXPECT_NE(last.find(":FOO - [0:0]"), std::string::npos) << last;
}

// In the op's own chain: a delete by spec finds its rule by the entry bytes and decodes no other rule, so an
// undecodable rule beside it does not block it; deleting or replacing the undecodable rule by position is refused
// (iptkit cannot say what it would remove) and changes nothing.
TEST_F(NativeLegacyTest, AnUndecodableRuleIsNeverRemovedByPosition) {
  ASSERT_TRUE(Ipt({"-A", "INPUT", "-s", "10.0.0.1/32", "-j", "ACCEPT"}).ok());
  ASSERT_TRUE(Ipt({"-A", "INPUT", "-j", "QUEUE"}).ok());
  ASSERT_TRUE(Ipt({"-A", "INPUT", "-s", "10.0.0.2/32", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"}).ok());
  ASSERT_OK_AND_ASSIGN(auto fw, OpenFirewall(*ns_, BackendKind::kNativeLegacy));
  ASSERT_OK_AND_ASSIGN(CommitResult deleted,
                       fw->Commit(Transaction().Delete(Family::kIPv4, "filter", "INPUT",
                                                       Spec("-s 10.0.0.2 -p tcp --dport 22 -j ACCEPT"))));
  EXPECT_EQ(deleted.backend, "native-legacy");
  ASSERT_OK_AND_ASSIGN(std::string before, ns_->Save(Variant::kLegacy, Family::kIPv4, "filter"));
  EXPECT_EQ(RuleLines(before, "filter", "INPUT"),
            (std::vector<std::string>{"-A INPUT -s 10.0.0.1/32 -j ACCEPT", "-A INPUT -j QUEUE"}));
  for (Transaction txn : {std::move(Transaction().DeleteAt(Family::kIPv4, "filter", "INPUT", 2)),
                          std::move(Transaction().Replace(Family::kIPv4, "filter", "INPUT", 2, Spec("-j DROP")))}) {
    Result<CommitResult> done = fw->Commit(txn);
    ASSERT_FALSE(done.ok());
    EXPECT_EQ(done.status().code(), StatusCode::kFailedPrecondition) << done.status().ToString();
    EXPECT_NE(done.status().message().find("cannot be decoded"), std::string::npos) << done.status().ToString();
    ASSERT_OK_AND_ASSIGN(std::string now, ns_->Save(Variant::kLegacy, Family::kIPv4, "filter"));
    EXPECT_EQ(now, before);
  }
  Status last = fw->Commit(Transaction().DeleteAt(Family::kIPv4, "filter", "INPUT", 1)).status();
  ASSERT_TRUE(last.ok()) << last.ToString();
  ASSERT_OK_AND_ASSIGN(std::string after, ns_->Save(Variant::kLegacy, Family::kIPv4, "filter"));
  EXPECT_EQ(RuleLines(after, "filter", "INPUT"), (std::vector<std::string>{"-A INPUT -j QUEUE"}));
}

// A delete by spec removes exactly the first rule that is the given one, by its entry bytes: not a similar rule
// (another address, port, protocol or verdict), not an undecodable rule with the same header and match (QUEUE),
// not the later copy; every other rule keeps its place and its counters (libiptc maps counters by position). A
// plan of one table reads no placeholder per rule of the chain (ChainScope::probe_positions), so this also pins
// that the plan and the commit agree on which entry goes: in one transaction, with an append to the same chain
// (placeholders), and a second delete of a rule that is there once (NotFound, nothing changes).
TEST_F(NativeLegacyTest, ADeleteBySpecRemovesExactlyTheFirstEqualRule) {
  const std::vector<std::vector<std::string>> rules = {
      {"-s", "10.0.0.1/32", "-p", "tcp", "--dport", "22", "-c", "1", "100", "-j", "ACCEPT"},
      {"-c", "2", "200", "-j", "QUEUE"},
      {"-s", "10.0.0.2/32", "-p", "tcp", "--dport", "23", "-c", "3", "300", "-j", "ACCEPT"},
      {"-s", "10.0.0.2/32", "-p", "tcp", "--dport", "22", "-c", "4", "400", "-j", "DROP"},
      {"-s", "10.0.0.2/32", "-p", "udp", "--dport", "22", "-c", "5", "500", "-j", "ACCEPT"},
      {"-s", "10.0.0.2/32", "-p", "tcp", "--dport", "22", "-c", "6", "600", "-j", "QUEUE"},
      {"-s", "10.0.0.2/32", "-p", "tcp", "--dport", "22", "-c", "7", "700", "-j", "ACCEPT"},
      {"-s", "10.0.0.2/32", "-p", "tcp", "--dport", "22", "-c", "8", "800", "-j", "QUEUE"},
      {"-s", "10.0.0.2/32", "-p", "tcp", "--dport", "22", "-c", "9", "900", "-j", "ACCEPT"},
  };
  for (const auto& r : rules) {
    std::vector<std::string> args = {"-A", "INPUT"};
    args.insert(args.end(), r.begin(), r.end());
    ASSERT_TRUE(Ipt(args).ok());
  }
  const std::string x = "-s 10.0.0.2/32 -p tcp -m tcp --dport 22 -j ACCEPT";
  // INPUT's rule lines with their counters ("[7:700] -A INPUT ...").
  auto counted = [&](const std::string& text) {
    std::vector<std::string> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
      if (line.starts_with("[") && line.find("] -A INPUT ") != std::string::npos) out.push_back(line);
    }
    return out;
  };
  ASSERT_OK_AND_ASSIGN(std::string before, ns_->Save(Variant::kLegacy, Family::kIPv4, "filter", true));
  std::vector<std::string> lines = counted(before);
  ASSERT_EQ(lines.size(), rules.size()) << before;
  ASSERT_EQ(lines[6], "[7:700] -A INPUT " + x) << before;
  ASSERT_OK_AND_ASSIGN(auto fw, OpenFirewall(*ns_, BackendKind::kNativeLegacy));

  ASSERT_OK_AND_ASSIGN(CommitResult done,
                       fw->Commit(Transaction().Delete(Family::kIPv4, "filter", "INPUT",
                                                       Spec("-s 10.0.0.2 -p tcp --dport 22 -j ACCEPT"))));
  EXPECT_EQ(done.backend, "native-legacy");
  lines.erase(lines.begin() + 6);
  ASSERT_OK_AND_ASSIGN(std::string after, ns_->Save(Variant::kLegacy, Family::kIPv4, "filter", true));
  EXPECT_EQ(counted(after), lines) << after;

  // Twice in one transaction, with one copy left: NotFound naming the rule, and nothing changes.
  Transaction twice;
  twice.Delete(Family::kIPv4, "filter", "INPUT", Spec(x));
  twice.Delete(Family::kIPv4, "filter", "INPUT", Spec(x));
  Result<CommitResult> refused = fw->Commit(twice);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kNotFound) << refused.status().ToString();
  EXPECT_NE(refused.status().message().find("10.0.0.2/32"), std::string::npos) << refused.status().ToString();
  ASSERT_OK_AND_ASSIGN(std::string unchanged, ns_->Save(Variant::kLegacy, Family::kIPv4, "filter", true));
  EXPECT_EQ(counted(unchanged), lines) << unchanged;

  // With an append to the same chain (the chain is read with placeholders): the last copy goes, the rest stays.
  Transaction with_append;
  with_append.Append(Family::kIPv4, "filter", "INPUT", Spec("-s 10.0.0.3/32 -j DROP"));
  with_append.Delete(Family::kIPv4, "filter", "INPUT", Spec(x));
  ASSERT_TRUE(fw->Commit(with_append).ok());
  lines.erase(lines.begin() + 7);
  lines.push_back("[0:0] -A INPUT -s 10.0.0.3/32 -j DROP");
  ASSERT_OK_AND_ASSIGN(std::string last, ns_->Save(Variant::kLegacy, Family::kIPv4, "filter", true));
  EXPECT_EQ(counted(last), lines) << last;

  // None left: not found byte for byte, so the chain is decoded to compare by canonical spec, and its QUEUE rules
  // make the table unrepresentable: refused, and nothing changes (the undecodable rules with the same header and
  // match are all still there).
  Result<CommitResult> gone = fw->Commit(Transaction().Delete(Family::kIPv4, "filter", "INPUT", Spec(x)));
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.status().code(), StatusCode::kFailedPrecondition) << gone.status().ToString();
  ASSERT_OK_AND_ASSIGN(std::string end, ns_->Save(Variant::kLegacy, Family::kIPv4, "filter", true));
  EXPECT_EQ(counted(end), lines) << end;
  // In a chain iptkit can decode whole, a rule that is not there is NotFound, naming it.
  ASSERT_TRUE(Ipt({"-A", "OUTPUT", "-d", "10.0.0.2/32", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"}).ok());
  Result<CommitResult> absent = fw->Commit(Transaction().Delete(Family::kIPv4, "filter", "OUTPUT", Spec(x)));
  ASSERT_FALSE(absent.ok());
  EXPECT_EQ(absent.status().code(), StatusCode::kNotFound) << absent.status().ToString();
  EXPECT_NE(absent.status().message().find("no rule '" + x + "' in chain OUTPUT"), std::string::npos)
      << absent.status().ToString();
}

// iptkit commits the table it read (one iptc_init per change, as iptables-legacy). A writer that does not take the
// xtables lock (python-iptables, or iptables-legacy pointed at another lock file, as here) and changes the table
// between that read and the commit makes the kernel refuse the commit (the entry count moved): iptkit reads, plans
// and commits again, and both rules are there.
TEST_F(NativeLegacyTest, AWriterOutsideTheLockBetweenReadAndCommitLosesNothing) {
  ASSERT_TRUE(Ipt({"-A", "INPUT", "-s", "10.0.0.1/32", "-j", "ACCEPT"}).ok());
  int hooks = 0;
  FirewallOptions options;
  options.before_commit_hook = [&] {
    if (hooks++ > 0) return;
    CommandResult r = ns_->Exec({"env", "XTABLES_LOCKFILE=/run/iptkit-test-other-" + ns_->name() + ".lock",
                                 "iptables-legacy", "-w", "-I", "INPUT", "1", "-s", "10.9.9.9/32", "-j", "DROP"});
    EXPECT_TRUE(r.ok()) << r.Describe();
  };
  ASSERT_OK_AND_ASSIGN(auto fw, OpenFirewall(*ns_, BackendKind::kNativeLegacy, options));
  Status done =
      fw->Commit(Transaction().Delete(Family::kIPv4, "filter", "INPUT", Spec("-s 10.0.0.1/32 -j ACCEPT"))).status();
  ASSERT_TRUE(done.ok()) << done.ToString();
  EXPECT_EQ(hooks, 2);  // planned and committed twice: the first commit was refused
  ASSERT_OK_AND_ASSIGN(std::string saved, ns_->Save(Variant::kLegacy, Family::kIPv4, "filter"));
  EXPECT_EQ(RuleLines(saved, "filter", "INPUT"), (std::vector<std::string>{"-A INPUT -s 10.9.9.9/32 -j DROP"}));
  ::unlink(("/run/iptkit-test-other-" + ns_->name() + ".lock").c_str());
}

TEST_F(NativeLegacyTest, AutoPicksItOnLegacyAndInfoSaysWhy) {
  ASSERT_TRUE(Ipt({"-A", "INPUT", "-s", "10.0.0.1/32", "-j", "ACCEPT"}).ok());
  ASSERT_OK_AND_ASSIGN(auto fw, OpenFirewall(*ns_, BackendKind::kAuto));
  ASSERT_OK_AND_ASSIGN(FirewallInfo info, fw->Info());
  EXPECT_EQ(info.backend, "native-legacy");
  EXPECT_NE(info.backend_reason.find("the legacy variant, natively"), std::string::npos) << info.backend_reason;
  Transaction txn;
  txn.Append(Family::kIPv4, "filter", "INPUT", Spec("-s 10.0.0.2/32 -j DROP"));
  ASSERT_OK_AND_ASSIGN(CommitResult done, fw->Commit(txn));
  EXPECT_EQ(done.backend, "native-legacy");
  ASSERT_OK_AND_ASSIGN(std::string saved, ns_->Save(Variant::kLegacy, Family::kIPv4, "filter"));
  EXPECT_EQ(RuleLines(saved, "filter", "INPUT"),
            (std::vector<std::string>{"-A INPUT -s 10.0.0.1/32 -j ACCEPT", "-A INPUT -s 10.0.0.2/32 -j DROP"}));
}

}  // namespace
}  // namespace iptkit::integration
