// Differential test of exact semantics: the kernel holds exactly what `iptables -A` installs for the same tokens.
//
// For every rule spec of the extension corpus ($IPTKIT_CORPUS_DIR/valid/extensions.v4|.v6: one rule per spec that
// iptables' own extension tests mark OK) and the cases whose printed form does not load back to the same rule, on
// both variants and both families:
//   1. `iptables -A` with the tokens in namespace A, iptkit (library, one transaction) in namespace B;
//   2. the kernel rules compared: nft through iptkit's netlink reader (every expression and the user data), legacy
//      as x_tables entry bytes (counters, hook bits and blob offsets normalized away);
//   3. `iptables -C` with the typed tokens finds iptkit's rule in B, iptkit's Check finds iptables' rule in A, and
//      iptkit's Delete with the same tokens removes every one of them;
//   4. a spec iptables refuses, iptkit refuses too, changing nothing.
// Which shipped extensions (libxt_*, libipt_* / libip6t_*) no case uses is printed (the corpus covers those that
// have tests in iptables and load in a network namespace).
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>

#include "iptkit/dialect.h"
#include "iptkit/firewall.h"
#include "src/backend/backend.h"
#include "src/backend/legacy/xt_fingerprint.h"
#include "src/backend/legacy/xt_rules.h"
#include "src/backend/nft/netlink_client.h"
#include "src/base/unique_fd.h"
#include "tests/integration/corpus.h"
#include "tests/integration/library_util.h"
#include "tests/integration/test_util.h"

namespace iptkit::integration {
namespace {

struct Case {
  std::string table;
  std::string chain;
  std::vector<std::string> args;  // the tokens after the chain name
  std::string where;              // "extensions.v4 line 12" or "issue case"
  std::string Text() const {
    std::string out = "-t " + table + " -A " + chain;
    for (const std::string& a : args) out += " " + QuoteRestoreArgument(a);
    return out + " (" + where + ")";
  }
};

// The rules of the extension corpus file of `family`, in file order; empty when the corpus is absent.
std::vector<Case> CorpusCases(Family family) {
  std::vector<Case> cases;
  const std::string name = family == Family::kIPv4 ? "extensions.v4" : "extensions.v6";
  std::ifstream in(std::string(IPTKIT_CORPUS_DIR) + "/valid/" + name);
  if (!in) return cases;
  std::string line, table;
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.starts_with("*")) table = line.substr(1);
    if (!line.starts_with("-A ")) continue;
    Result<std::vector<Token>> tokens = LexRestoreLine(line);
    EXPECT_TRUE(tokens.ok() && tokens->size() >= 2) << name << " line " << n;
    if (!tokens.ok() || tokens->size() < 2) continue;
    Case c{table, (*tokens)[1].text, {}, name + " line " + std::to_string(n)};
    for (size_t i = 2; i < tokens->size(); ++i) c.args.push_back((*tokens)[i].text);
    cases.push_back(std::move(c));
  }
  return cases;
}

// Typed forms whose printed form is lossy or whose canonical text loads to other bytes than the typed one, and
// extensions the corpus has no faithful print for (issue 9 §1). Some are refused by iptables; then iptkit must refuse
// them too.
std::vector<Case> IssueCases(Family family) {
  const bool v4 = family == Family::kIPv4;
  std::vector<std::string> input = {
      "-p tcp -m tcp ! --sport :",
      "-p tcp -m tcp --sport :",
      "-p udp ! --dport 0:65535",
      "-p tcp -m multiport ! --ports 0:65535",
      "! -i +",
      "-m esp ! --espspi :",
      "-m esp --espspi :",
      "-m ipcomp --ipcompspi :",
      "-m ipcomp ! --ipcompspi 0:4294967295",
      "-p esp -m esp ! --espspi :",
      "-p esp -m esp --espspi 5:",
      "-p 108 -m ipcomp --ipcompspi :",
      "-p 108 -m ipcomp ! --ipcompspi 7",
      "-m connlimit --connlimit-above 2",
      "-p tcp --syn -m connlimit --connlimit-upto 4 --connlimit-mask 24 -j REJECT",
      "-m connlimit --connlimit-above 10 --connlimit-daddr",
      "-m recent --set",
      "-m recent --name ssh --rcheck --seconds 60 --hitcount 4 --rsource",
      "-m recent --update --name web --reap --seconds 30 -j DROP",
      "-j RATEEST --rateest-name EST1 --rateest-interval 1s --rateest-ewmalog 8s",
      "-m rateest --rateest EST1 --rateest-gt --rateest-bps 1mbit",
      "-m rateest --rateest-delta --rateest EST1 --rateest-pps1 10 --rateest-lt --rateest-pps2 20",
      "-m hashlimit --hashlimit-upto 10/sec --hashlimit-name hl1",
      "-m limit --limit 3/min --limit-burst 5",
      "-m comment --comment \"two words\" -j ACCEPT",
      "-m length ! --length 0:65535",
      "-m mark --mark 0x1 -j MARK --set-xmark 0x2/0xffffffff",
      "-m string --algo bm --string abc --from 0 --to 65535",
      "-m time --timestart 08:00 --timestop 17:00 --weekdays Mon,Tue",
      "-p sctp -m sctp ! --sport :",
      "-p dccp -m dccp ! --dport :",
      "-p udplite -j ACCEPT",
  };
  if (v4) {
    input.insert(input.end(), {"-p icmp --icmp-type 255/255", "-p icmp -m icmp --icmp-type any",
                               "-p icmp --icmp-type 8/0 -j ACCEPT", "-m ah ! --ahspi :", "-m ttl --ttl-gt 0"});
  } else {
    input.insert(input.end(), {"-p ipv6-icmp --icmpv6-type 255/255", "-p ipv6-icmp -m icmp6 --icmpv6-type 128/0",
                               "-m ah ! --ahspi :", "-m frag ! --fragid :", "-m rt ! --rt-segsleft :",
                               "-m hl --hl-gt 0", "-m mh ! --mh-type :"});
  }
  std::vector<Case> cases;
  for (const std::string& spec : input) {
    Result<std::vector<Token>> tokens = LexRestoreLine(spec);
    EXPECT_TRUE(tokens.ok()) << spec;
    if (!tokens.ok()) continue;
    Case c{"filter", "INPUT", {}, "issue case"};
    for (const Token& t : *tokens) c.args.push_back(t.text);
    cases.push_back(std::move(c));
  }
  cases.push_back(Case{"filter", "OUTPUT", {"!", "-o", "+"}, "issue case"});
  return cases;
}

// iptables-restore input with one "COMMAND CHAIN ARGS" line per case of cases[from, to), grouped per table in order
// of first use (the cases of a table keep their order); each argument quoted as iptables-restore reads it back.
std::string RestoreText(const std::vector<Case>& cases, size_t from, size_t to, const std::string& command) {
  std::vector<std::string> order;
  std::map<std::string, std::string> lines;
  for (size_t i = from; i < to; ++i) {
    const Case& c = cases[i];
    if (!lines.count(c.table)) order.push_back(c.table);
    std::string& text = lines[c.table];
    text += command + " " + c.chain;
    for (const std::string& a : c.args) text += " " + QuoteRestoreArgument(a);
    text += "\n";
  }
  std::string out;
  for (const std::string& table : order) out += "*" + table + "\n" + lines[table] + "COMMIT\n";
  return out;
}

// table → chain → the kernel forms of its rules, in order.
using KernelForms = std::map<std::string, std::map<std::string, std::vector<std::string>>>;

Result<KernelForms> ReadKernelForms(const TestNetns& ns, Variant variant, Family family) {
  base::UniqueFd fd(::open(ns.path().c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return Status::Internal("open " + ns.path());
  KernelForms out;
  if (variant == Variant::kNft) {
    IPTKIT_ASSIGN_OR_RETURN(std::unique_ptr<backend::nft::NetlinkClient> client,
                            backend::nft::NetlinkClient::Open(fd.get()));
    IPTKIT_ASSIGN_OR_RETURN(backend::nft::KernelView view, client->Dump(family, std::nullopt, /*rule_forms=*/true));
    for (auto& [key, table] : view) {
      for (auto& [chain, kc] : table.chains) {
        auto& list = out[key.second][chain];
        for (backend::nft::KernelRule& r : kc.rule_list) list.push_back(std::move(r.form));
      }
    }
    return out;
  }
  IPTKIT_ASSIGN_OR_RETURN(std::unique_ptr<backend::legacy::XtablesProbe> probe,
                          backend::legacy::XtablesProbe::Open(fd.get()));
  IPTKIT_ASSIGN_OR_RETURN(backend::legacy::Fingerprint fp, probe->Read(family));
  for (const backend::legacy::TableFingerprint& t : fp) {
    IPTKIT_ASSIGN_OR_RETURN(backend::legacy::ChainRuleForms forms, backend::legacy::RuleForms(family, t));
    for (auto& [chain, list] : forms) out[t.name][chain] = std::move(list);
  }
  return out;
}

size_t RuleCount(const KernelForms& forms) {
  size_t n = 0;
  for (const auto& [table, chains] : forms) {
    for (const auto& [chain, list] : chains) n += list.size();
  }
  return n;
}

// Printable bytes of a kernel form for a failure message.
std::string Hex(const std::string& bytes) {
  static const char* kDigits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += kDigits[c >> 4];
      out += kDigits[c & 15];
    }
  }
  return out;
}

// The extensions shipped on this machine for `family` (libxt_* and libipt_* / libip6t_*), by name.
std::set<std::string> ShippedExtensions(Family family) {
  std::set<std::string> names;
  const std::string own = family == Family::kIPv4 ? "libipt_" : "libip6t_";
  for (const char* dir : {"/usr/lib/x86_64-linux-gnu/xtables", "/usr/lib/aarch64-linux-gnu/xtables", "/usr/lib/xtables",
                          "/usr/libexec/xtables"}) {
    DIR* d = ::opendir(dir);
    if (d == nullptr) continue;
    while (dirent* e = ::readdir(d)) {
      std::string file = e->d_name;
      if (!file.ends_with(".so")) continue;
      file.resize(file.size() - 3);
      for (const std::string& prefix : {std::string("libxt_"), own}) {
        if (file.starts_with(prefix)) names.insert(file.substr(prefix.size()));
      }
    }
    ::closedir(d);
  }
  return names;
}

// The extensions a case loads: -m NAME, -j NAME, and the protocol's implicit match.
std::set<std::string> UsedExtensions(const Case& c) {
  std::set<std::string> names;
  for (size_t i = 0; i + 1 < c.args.size(); ++i) {
    const std::string& a = c.args[i];
    if (a == "-m" || a == "--match" || a == "-j" || a == "--jump" || a == "-p" || a == "--protocol") {
      names.insert(c.args[i + 1]);
      if (c.args[i + 1] == "ipv6-icmp" || c.args[i + 1] == "icmpv6") names.insert("icmp6");
    }
  }
  names.insert("standard");
  return names;
}

struct DiffParam {
  BackendKind backend;
  Family family;
};

std::string ParamName(const ::testing::TestParamInfo<DiffParam>& info) {
  return BackendName(info.param.backend) + "_" + (info.param.family == Family::kIPv4 ? "ipv4" : "ipv6");
}

class DifferentialTest : public ::testing::TestWithParam<DiffParam> {
 protected:
  void SetUp() override {
    IPTKIT_REQUIRE_ROOT();
    ASSERT_OK_AND_ASSIGN(ns_a_, TestNetns::Create());
    ASSERT_OK_AND_ASSIGN(ns_b_, TestNetns::Create());
    IPTKIT_REQUIRE_VARIANT(*ns_a_, variant(), family());
  }
  Variant variant() const { return VariantOf(GetParam().backend); }
  Family family() const { return GetParam().family; }
  CommandResult Iptables(const TestNetns& ns, const Case& c, const std::string& command) const {
    std::vector<std::string> argv = {"-w", "10", "-t", c.table, command, c.chain};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    return ns.Iptables(variant(), family(), argv);
  }

  std::unique_ptr<TestNetns> ns_a_;  // iptables
  std::unique_ptr<TestNetns> ns_b_;  // iptkit
};

TEST_P(DifferentialTest, IptkitInstallsWhatIptablesInstalls) {
  const auto started = std::chrono::steady_clock::now();
  std::string phases;  // seconds per step, for the summary line
  auto phase = [&, last = started](const char* name) mutable {
    const auto now = std::chrono::steady_clock::now();
    phases +=
        std::string(" ") + name + " " +
        std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(now - last).count() / 1000.0).substr(0, 5);
    last = now;
  };
  std::vector<Case> all = CorpusCases(family());
  const size_t corpus_size = all.size();
  for (Case& c : IssueCases(family())) all.push_back(std::move(c));

  // 1. iptables -A in A: what iptables accepts. The corpus specs all load (corpus README): one iptables-restore
  //    --noflush of their "-A CHAIN ARGS" lines (iptables-restore hands each line's arguments to the same command
  //    parser as `iptables -A`), and only if that fails `iptables -A` one by one; the issue cases one by one.
  std::vector<Case> accepted, refused;
  auto one_by_one = [&](size_t from, size_t to) {
    for (size_t i = from; i < to; ++i) {
      CommandResult r = Iptables(*ns_a_, all[i], "-A");
      (r.ok() ? accepted : refused).push_back(all[i]);
    }
  };
  if (corpus_size > 0) {
    CommandResult batch = ns_a_->Restore(variant(), family(), RestoreText(all, 0, corpus_size, "-A"), true);
    if (batch.ok()) {
      accepted.assign(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(corpus_size));
    } else {
      ADD_FAILURE() << "the corpus does not load in one batch: " << batch.Describe();
      for (const std::string table : {"filter", "nat", "mangle", "raw", "security"}) {
        ns_a_->Iptables(variant(), family(), {"-t", table, "-F"});
      }
      one_by_one(0, corpus_size);
    }
  }
  one_by_one(corpus_size, all.size());
  for (const Case& c : refused) EXPECT_EQ(c.where, "issue case") << "iptables refuses " << c.Text();

  phase("iptables-A");
  // 2. iptkit in B: the same tokens, one transaction.
  ASSERT_OK_AND_ASSIGN(auto fw_b, OpenFirewall(*ns_b_, GetParam().backend));
  std::vector<Rule> rules;
  Transaction txn;
  for (const Case& c : accepted) {
    Result<Rule> rule = ParseRuleArgs(c.args, family());
    ASSERT_TRUE(rule.ok()) << "iptkit cannot parse what iptables accepts: " << c.Text() << ": "
                           << rule.status().ToString();
    rules.push_back(*rule);
    txn.Append(family(), c.table, c.chain, *rule);
  }
  Result<CommitResult> committed = fw_b->Commit(txn);
  if (!committed.ok()) {
    // Name each case iptkit refuses (one commit each), then stop: the kernels cannot be compared.
    for (size_t i = 0; i < accepted.size(); ++i) {
      Transaction one;
      one.Append(family(), accepted[i].table, accepted[i].chain, rules[i]);
      Result<CommitResult> r = fw_b->Commit(one);
      EXPECT_TRUE(r.ok()) << "iptkit refuses what iptables accepts: " << accepted[i].Text() << ": "
                          << r.status().ToString();
    }
    FAIL() << "the transaction of " << accepted.size() << " appends failed: " << committed.status().ToString();
  }

  phase("iptkit-append");
  // 3. The kernels hold the same rules.
  ASSERT_OK_AND_ASSIGN(KernelForms kernel_a, ReadKernelForms(*ns_a_, variant(), family()));
  ASSERT_OK_AND_ASSIGN(KernelForms kernel_b, ReadKernelForms(*ns_b_, variant(), family()));
  ASSERT_EQ(RuleCount(kernel_a), accepted.size());
  std::map<std::pair<std::string, std::string>, std::vector<const Case*>> placed;
  for (const Case& c : accepted) placed[{c.table, c.chain}].push_back(&c);
  size_t differ = 0;
  for (const auto& [where, cases] : placed) {
    const std::vector<std::string>& a = kernel_a[where.first][where.second];
    const std::vector<std::string>& b = kernel_b[where.first][where.second];
    ASSERT_EQ(a.size(), cases.size()) << where.first << " " << where.second;
    ASSERT_EQ(b.size(), cases.size()) << "iptkit's " << where.first << " " << where.second;
    for (size_t i = 0; i < cases.size(); ++i) {
      if (a[i] == b[i]) continue;
      ++differ;
      ADD_FAILURE() << "the kernel holds another rule for " << cases[i]->Text() << "\n  iptables: " << Hex(a[i])
                    << "\n  iptkit:   " << Hex(b[i]);
    }
  }
  EXPECT_EQ(RuleCount(kernel_b), accepted.size());
  EXPECT_EQ(differ, 0u);

  phase("compare");
  // 4. iptables -C with the typed tokens finds iptkit's rule: one batch of "-C" lines (iptables-restore runs each
  //    through `iptables -C`'s parser); when a rule is missed, `iptables -C` one by one names it.
  CommandResult checked = ns_b_->Restore(variant(), family(), RestoreText(accepted, 0, accepted.size(), "-C"), true);
  if (!checked.ok()) {
    for (const Case& c : accepted) {
      CommandResult r = Iptables(*ns_b_, c, "-C");
      EXPECT_TRUE(r.ok()) << "iptables -C misses iptkit's rule " << c.Text() << ": " << r.Describe();
    }
  }

  phase("iptables-C");
  // 5. iptkit's Check finds iptables' rule, and its Delete removes each of them.
  ASSERT_OK_AND_ASSIGN(auto fw_a, OpenFirewall(*ns_a_, GetParam().backend));
  Transaction deletes;
  for (size_t i = 0; i < accepted.size(); ++i) deletes.Delete(family(), accepted[i].table, accepted[i].chain, rules[i]);
  // A dry run first: it canonicalizes every rule in one go per table, so the checks below find them cached.
  Result<CommitResult> planned = fw_a->Commit(deletes, {.dry_run = true});
  EXPECT_TRUE(planned.ok()) << planned.status().ToString();
  {
    // Holding the xtables lock lets legacy reads reuse one snapshot (nothing can change it meanwhile).
    ASSERT_OK_AND_ASSIGN(auto lock, fw_a->backend().Lock(std::chrono::seconds(10)));
    // Every issue case and every 8th corpus case: a Check is a fresh read of the table, and the Delete below finds
    // every one of them the same way (Check and Delete share backend::FindRule).
    for (size_t i = 0; i < accepted.size(); ++i) {
      if (accepted[i].where != "issue case" && i % 8 != 0) continue;
      Result<bool> found = fw_a->Check(family(), accepted[i].table, accepted[i].chain, rules[i]);
      EXPECT_TRUE(found.ok() && *found) << "iptkit check misses iptables' rule " << accepted[i].Text() << ": "
                                        << (found.ok() ? "not found" : found.status().ToString());
    }
  }
  Result<CommitResult> deleted = fw_a->Commit(deletes);
  EXPECT_TRUE(deleted.ok()) << deleted.status().ToString();
  ASSERT_OK_AND_ASSIGN(KernelForms after, ReadKernelForms(*ns_a_, variant(), family()));
  EXPECT_EQ(RuleCount(after), 0u) << "iptkit's delete left iptables' rules behind";

  phase("iptkit-check-delete");
  // 6. What iptables refuses, iptkit refuses, changing nothing.
  for (const Case& c : refused) {
    Result<Rule> rule = ParseRuleArgs(c.args, family());
    if (!rule.ok()) continue;
    Transaction one;
    one.Append(family(), c.table, c.chain, *rule);
    Result<CommitResult> r = fw_b->Commit(one);
    EXPECT_FALSE(r.ok()) << "iptkit accepts what iptables refuses: " << c.Text();
    if (!r.ok()) {
      EXPECT_EQ(r.status().message().find("IPTKIT"), std::string::npos) << r.status().ToString();
    }
  }
  ASSERT_OK_AND_ASSIGN(KernelForms b_after, ReadKernelForms(*ns_b_, variant(), family()));
  EXPECT_EQ(b_after, kernel_b) << "a refused rule changed the kernel";

  phase("refused");
  // Coverage: the shipped extensions no case loads.
  std::set<std::string> used;
  for (const Case& c : accepted) used.merge(UsedExtensions(c));
  std::string unused;
  for (const std::string& name : ShippedExtensions(family())) {
    if (!used.count(name)) unused += " " + name;
  }
  const auto seconds =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started).count() / 1e3;
  std::cout << "[ differential ] " << VariantName(variant()) << " " << FamilyName(family()) << ": " << corpus_size
            << " corpus + " << all.size() - corpus_size << " issue cases, " << accepted.size() << " accepted, "
            << refused.size() << " refused by iptables, " << seconds << " s (" << phases
            << " ); shipped extensions without a case:" << (unused.empty() ? " none" : unused) << "\n";
  if (corpus_size == 0) std::cout << "[ differential ] corpus absent (" << IPTKIT_CORPUS_DIR << "): issue cases only\n";
}

// -c PKTS BYTES on an append is honoured as iptables honours it; iptables and iptkit refuse it with check.
TEST_P(DifferentialTest, CountersOfAnAppendAreSet) {
  const Case c{"filter", "INPUT", {"-c", "5", "6", "-p", "udp", "-j", "ACCEPT"}, "counters"};
  ASSERT_TRUE(Iptables(*ns_a_, c, "-A").ok());
  ASSERT_OK_AND_ASSIGN(auto fw_b, OpenFirewall(*ns_b_, GetParam().backend));
  ASSERT_OK_AND_ASSIGN(Rule rule, ParseRuleArgs(c.args, family()));
  Transaction txn;
  txn.Append(family(), c.table, c.chain, rule);
  Result<CommitResult> committed = fw_b->Commit(txn);
  ASSERT_TRUE(committed.ok()) << committed.status().ToString();
  ASSERT_OK_AND_ASSIGN(std::string a, ns_a_->Save(variant(), family(), "filter", /*counters=*/true));
  ASSERT_OK_AND_ASSIGN(std::string b, ns_b_->Save(variant(), family(), "filter", /*counters=*/true));
  EXPECT_EQ(b, a);
  // (ip6tables-nft 1.8.9 drops the counters of -c, for iptables and iptkit alike: compared above.)
  if (variant() == Variant::kLegacy || family() == Family::kIPv4) {
    EXPECT_NE(b.find("[5:6] -A INPUT -p udp -j ACCEPT"), std::string::npos) << b;
  }
  EXPECT_FALSE(Iptables(*ns_b_, c, "-C").ok());
  Result<bool> found = fw_b->Check(family(), c.table, c.chain, rule);
  EXPECT_FALSE(found.ok());
}

INSTANTIATE_TEST_SUITE_P(
    Variants, DifferentialTest,
    ::testing::Values(DiffParam{BackendKind::kNative, Family::kIPv4}, DiffParam{BackendKind::kNative, Family::kIPv6},
                      DiffParam{BackendKind::kNft, Family::kIPv4}, DiffParam{BackendKind::kNft, Family::kIPv6},
                      DiffParam{BackendKind::kLegacy, Family::kIPv4}, DiffParam{BackendKind::kLegacy, Family::kIPv6},
                      DiffParam{BackendKind::kNativeLegacy, Family::kIPv4},
                      DiffParam{BackendKind::kNativeLegacy, Family::kIPv6}),
    ParamName);

}  // namespace
}  // namespace iptkit::integration
