// The iptkit binary end to end against the real kernel, inside a fresh network namespace per test, on both
// iptables variants (--backend nft / legacy) and both families; every change is verified with the real
// `ip netns exec NS iptables-save`. Root only (GTEST_SKIP otherwise); never touches the host's firewall.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <tuple>

#include "tests/cli/process.h"

namespace iptkit::clitest {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

struct Param {
  std::string backend;  // "nft" or "legacy"
  bool ipv6 = false;
};

std::string ParamName(const ::testing::TestParamInfo<Param>& info) {
  return info.param.backend + (info.param.ipv6 ? "_ipv6" : "_ipv4");
}

class CliNetnsTest : public ::testing::TestWithParam<Param> {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root (creates a network namespace)";
    const Param& p = GetParam();
    save_tool_ = FindTool(std::string(p.ipv6 ? "ip6tables-" : "iptables-") + p.backend + "-save");
    if (save_tool_.empty() || FindTool("ip").empty()) GTEST_SKIP() << "iptables " << p.backend << " not installed";
    ns_ = std::make_unique<TestNetns>();
    ASSERT_TRUE(ns_->ok()) << "ip netns add failed";
    addr_ = p.ipv6 ? "2001:db8::7" : "192.0.2.7";
    canonical_addr_ = p.ipv6 ? "2001:db8::7/128" : "192.0.2.7/32";
    other_ = p.ipv6 ? "2001:db8::8" : "192.0.2.8";
  }

  void TearDown() override {
    ns_.reset();  // ip netns del, also after a failed assertion
    for (const std::string& f : temp_files_) std::remove(f.c_str());
  }

  ProcessResult Cli(std::vector<std::string> args, const std::string& stdin_text = "") {
    std::vector<std::string> argv = {
        IPTKIT_CLI_BIN, "--netns", ns_->name(), "--backend", GetParam().backend, GetParam().ipv6 ? "-6" : "-4",
        "--wait",       "5"};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunProcess(argv, stdin_text);
  }

  // Runs the CLI and asserts exit 0.
  ProcessResult Ok(std::vector<std::string> args, const std::string& stdin_text = "") {
    ProcessResult r = Cli(args, stdin_text);
    EXPECT_EQ(r.code, 0) << "iptkit " << ::testing::PrintToString(args) << "\nstderr: " << r.err;
    return r;
  }

  // The real iptables-save of one table in the namespace, without "#" lines.
  std::string KernelSave(const std::string& table = "filter") {
    ProcessResult r = ns_->Exec({save_tool_, "-t", table});
    EXPECT_EQ(r.code, 0) << r.err;
    return StripSaveComments(r.out);
  }

  // The "-A CHAIN ..." lines of one chain.
  std::string ChainLines(const std::string& chain, const std::string& table = "filter") {
    std::istringstream in(KernelSave(table));
    std::string line, out;
    while (std::getline(in, line)) {
      if (line.rfind("-A " + chain + " ", 0) == 0) out += line + "\n";
    }
    return out;
  }

  std::string WriteTemp(const std::string& content) {
    std::string path =
        "/tmp/iptkit-cli-test-" + std::to_string(getpid()) + "-" + std::to_string(temp_files_.size()) + ".txt";
    std::ofstream(path) << content;
    temp_files_.push_back(path);
    return path;
  }

  std::unique_ptr<TestNetns> ns_;
  std::string save_tool_;
  std::string addr_, canonical_addr_, other_;
  std::vector<std::string> temp_files_;
};

TEST_P(CliNetnsTest, RuleLifecycle) {
  Ok({"append", "INPUT", "-p", "tcp", "--dport", "22", "-s", addr_, "-j", "ACCEPT"});
  const std::string ssh = "-A INPUT -s " + canonical_addr_ + " -p tcp -m tcp --dport 22 -j ACCEPT\n";
  EXPECT_EQ(ChainLines("INPUT"), ssh);

  Ok({"insert", "INPUT", "1", "--", "-s", other_, "-j", "DROP"});
  const std::string drop =
      "-A INPUT -s " + std::string(GetParam().ipv6 ? "2001:db8::8/128" : "192.0.2.8/32") + " -j DROP\n";
  EXPECT_EQ(ChainLines("INPUT"), drop + ssh);

  EXPECT_EQ(Cli({"check", "INPUT", "-s", other_, "-j", "DROP"}).code, 0);
  EXPECT_EQ(Cli({"check", "INPUT", "-s", other_, "-j", "ACCEPT"}).code, 1);

  // Replace rule 2, guarded by what it must be; a wrong guard changes nothing.
  ProcessResult wrong = Cli({"replace", "INPUT", "2", "-j", "RETURN", "--expect", "-j", "ACCEPT"});
  EXPECT_EQ(wrong.code, 4) << wrong.err;
  EXPECT_EQ(ChainLines("INPUT"), drop + ssh);
  Ok({"replace", "INPUT", "2", "-p", "tcp", "--dport", "2222", "-j", "ACCEPT", "--expect", "-s", addr_, "-p", "tcp",
      "--dport", "22", "-j", "ACCEPT"});
  const std::string ssh2 = "-A INPUT -p tcp -m tcp --dport 2222 -j ACCEPT\n";
  EXPECT_EQ(ChainLines("INPUT"), drop + ssh2);

  ProcessResult wrong_delete = Cli({"delete", "INPUT", "1", "--expect", "-j", "ACCEPT"});
  EXPECT_EQ(wrong_delete.code, 4) << wrong_delete.err;
  Ok({"delete", "INPUT", "1", "--expect", "-s", other_, "-j", "DROP"});
  EXPECT_EQ(ChainLines("INPUT"), ssh2);
  Ok({"delete", "INPUT", "-p", "tcp", "--dport", "2222", "-j", "ACCEPT"});
  EXPECT_EQ(ChainLines("INPUT"), "");
  EXPECT_EQ(Cli({"delete", "INPUT", "-j", "ACCEPT"}).code, 3);
}

TEST_P(CliNetnsTest, ChainOpsAndPolicy) {
  Ok({"chain", "create", "CLI-IN"});
  Ok({"append", "CLI-IN", "-s", addr_, "-j", "RETURN"});
  Ok({"append", "INPUT", "-j", "CLI-IN"});
  EXPECT_THAT(KernelSave(), HasSubstr(":CLI-IN - [0:0]\n"));

  const std::string before = KernelSave();
  ProcessResult referenced = Cli({"chain", "delete", "CLI-IN"});
  EXPECT_EQ(referenced.code, 4);
  EXPECT_THAT(referenced.err, HasSubstr("-j CLI-IN"));
  EXPECT_EQ(KernelSave(), before);

  Ok({"chain", "rename", "CLI-IN", "CLI-RENAMED"});
  EXPECT_EQ(ChainLines("INPUT"), "-A INPUT -j CLI-RENAMED\n");
  EXPECT_EQ(ChainLines("CLI-RENAMED"), "-A CLI-RENAMED -s " + canonical_addr_ + " -j RETURN\n");
  Ok({"chain", "zero", "CLI-RENAMED"});
  Ok({"chain", "flush", "CLI-RENAMED"});
  EXPECT_EQ(ChainLines("CLI-RENAMED"), "");
  Ok({"chain", "delete", "--cascade", "CLI-RENAMED"});
  EXPECT_THAT(KernelSave(), Not(HasSubstr("CLI-RENAMED")));
  EXPECT_EQ(ChainLines("INPUT"), "");

  Ok({"chain", "policy", "FORWARD", "DROP"});
  EXPECT_THAT(KernelSave(), HasSubstr(":FORWARD DROP"));
  Ok({"chain", "policy", "FORWARD", "ACCEPT"});
  EXPECT_THAT(KernelSave(), HasSubstr(":FORWARD ACCEPT"));

  Ok({"chain", "create", "-t", "mangle", "CLI-MANGLE"});
  EXPECT_THAT(KernelSave("mangle"), HasSubstr(":CLI-MANGLE - [0:0]\n"));
}

TEST_P(CliNetnsTest, SaveListAndRestore) {
  Ok({"append", "INPUT", "-s", addr_, "-m", "comment", "--comment", "hello world", "-j", "ACCEPT"});
  ProcessResult save = Ok({"save", "filter"});
  EXPECT_EQ(StripSaveComments(save.out), KernelSave());

  ProcessResult list = Ok({"list", "filter", "INPUT"});
  EXPECT_THAT(list.out, HasSubstr("Chain INPUT (policy ACCEPT)"));
  EXPECT_THAT(list.out, HasSubstr("1    -s " + canonical_addr_ + " -m comment --comment \"hello world\" -j ACCEPT"));
  ProcessResult json = Ok({"--json", "list", "filter", "INPUT", "--counters"});
  EXPECT_THAT(json.out, HasSubstr("\"counters\""));

  // Whole-table restore replaces the filter table.
  const std::string text = std::string("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n") +
                           ":RESTORED - [0:0]\n-A INPUT -j RESTORED\n-A RESTORED -s " + canonical_addr_ +
                           " -j DROP\nCOMMIT\n";
  std::string file = WriteTemp(text);
  ProcessResult dry = Ok({"restore", "--dry-run", file});
  EXPECT_THAT(dry.out, HasSubstr("-A RESTORED -s " + canonical_addr_ + " -j DROP"));
  EXPECT_THAT(KernelSave(), HasSubstr("hello world"));
  Ok({"restore", file});
  EXPECT_EQ(KernelSave(), text);

  // --noflush adds, from stdin.
  Ok({"restore", "--noflush", "-"}, "*filter\n:ADDED - [0:0]\n-A ADDED -d " + canonical_addr_ + " -j ACCEPT\nCOMMIT\n");
  EXPECT_EQ(ChainLines("ADDED"), "-A ADDED -d " + canonical_addr_ + " -j ACCEPT\n");
  EXPECT_EQ(ChainLines("RESTORED"), "-A RESTORED -s " + canonical_addr_ + " -j DROP\n");
}

TEST_P(CliNetnsTest, TxnAndApply) {
  std::string family = GetParam().ipv6 ? "ipv6" : "ipv4";
  std::string txn = WriteTemp(R"({"ops":[{"create_chain":{"family":")" + family + R"(","chain":"TXN"}},
      {"append":{"family":")" +
                              family + R"(","chain":"TXN","rule":{"spec":"-s )" + addr_ + R"( -j RETURN"}}}]})");
  Ok({"txn", txn});
  EXPECT_EQ(ChainLines("TXN"), "-A TXN -s " + canonical_addr_ + " -j RETURN\n");

  std::string desired = WriteTemp(R"({"owner":"clitest","family":")" + family + R"(",
      "chains":[{"table":"filter","name":"CLITEST-IN","rules":[{"spec":"-s )" +
                                  addr_ + R"( -j ACCEPT"},
                                                              {"spec":"-j RETURN"}]}],
      "hooks":[{"table":"filter","chain":"INPUT","position":"first","spec":"-j CLITEST-IN"}]})");
  ProcessResult plan = Ok({"plan", desired});
  EXPECT_THAT(plan.out, Not(HasSubstr("no changes")));
  EXPECT_EQ(ChainLines("INPUT"), "");  // plan changes nothing
  ProcessResult dry = Ok({"apply", "--dry-run", desired});
  EXPECT_THAT(dry.out, HasSubstr("CLITEST-IN"));
  EXPECT_EQ(ChainLines("INPUT"), "");
  Ok({"apply", desired});
  EXPECT_THAT(ChainLines("INPUT"), HasSubstr("-j CLITEST-IN"));
  EXPECT_THAT(ChainLines("CLITEST-IN"), HasSubstr("-m comment --comment \"iptkit:clitest:"));
  EXPECT_THAT(ChainLines("CLITEST-IN"), HasSubstr("-s " + canonical_addr_));
  EXPECT_THAT(Ok({"plan", desired}).out, HasSubstr("no changes"));

  std::string empty = WriteTemp(R"({"owner":"clitest","family":")" + family + R"(","chains":[]})");
  Ok({"apply", empty});
  EXPECT_THAT(KernelSave(), Not(HasSubstr("CLITEST")));
  EXPECT_EQ(ChainLines("TXN"), "-A TXN -s " + canonical_addr_ + " -j RETURN\n");
}

// Rules in the other iptables variant judge the same packets: apply must say so even when it is otherwise quiet.
// (Regression: iptables-nft-save's "legacy tables present" warning used to make every nft read fail.)
TEST_P(CliNetnsTest, ApplyWarnsAboutRulesInTheOtherVariant) {
  const Param& p = GetParam();
  const std::string other =
      std::string(p.ipv6 ? "ip6tables-" : "iptables-") + (p.backend == std::string("nft") ? "legacy" : "nft");
  ASSERT_FALSE(FindTool(other).empty());
  ProcessResult foreign = ns_->Exec({FindTool(other), "-A", "INPUT", "-j", "ACCEPT"});
  ASSERT_EQ(foreign.code, 0) << foreign.err;
  std::string family = p.ipv6 ? "ipv6" : "ipv4";
  std::string desired = WriteTemp(R"({"owner":"clitest","family":")" + family + R"(",
      "chains":[{"table":"filter","name":"CLITEST-IN","rules":[{"spec":"-j RETURN"}]}],
      "hooks":[{"table":"filter","chain":"INPUT","position":"first","spec":"-j CLITEST-IN"}]})");
  ProcessResult applied = Ok({"apply", desired});
  EXPECT_THAT(applied.out,
              HasSubstr("warning: iptables-" + std::string(p.backend == std::string("nft") ? "legacy" : "nft")))
      << applied.out;
  EXPECT_THAT(ChainLines("INPUT"), HasSubstr("-j CLITEST-IN"));
}

TEST_P(CliNetnsTest, BadInputChangesNothing) {
  Ok({"chain", "create", "USERCHAIN"});
  Ok({"append", "INPUT", "-j", "ACCEPT"});
  const std::string before_filter = KernelSave();
  const std::string before_nat = KernelSave("nat");
  struct Case {
    std::vector<std::string> args;
    std::string named;
  };
  const std::vector<Case> cases = {
      {{"append", "INPUT", "--frobnicate", "-j", "ACCEPT"}, "--frobnicate"},
      {{"--frobnicate", "append", "INPUT", "-j", "ACCEPT"}, "--frobnicate"},
      {{"append", "INPUT", "-s", "host.example.com", "-j", "ACCEPT"}, "host.example.com"},
      {{"append", "INPUT", "-s", GetParam().ipv6 ? "2001:db8::/129" : "10.0.0.0/33", "-j", "ACCEPT"},
       GetParam().ipv6 ? "2001:db8::/129" : "10.0.0.0/33"},
      {{"append", "INPUT", "-p", "tcp", "-j", "DNAT", "--to-destination",
        GetParam().ipv6 ? "[2001:db8::1]" : "10.0.0.1"},
       "DNAT"},
      {{"chain", "policy", "USERCHAIN", "DROP"}, "USERCHAIN"},
      {{"chain", "create", std::string(29, 'L')}, std::string(29, 'L')},
      {{"append", "INPUT", "-m", "comment", "--comment", "x\n-A INPUT -j DROP", "-j", "ACCEPT"}, "comment"},
      {{"chain", "create", "-t", "nat", "NEW\nLINE"}, "NEW"},
  };
  for (const Case& c : cases) {
    ProcessResult r = Cli(c.args);
    EXPECT_EQ(r.code, 2) << c.named << ": " << r.err;
    EXPECT_THAT(r.err, StartsWith("iptkit: ")) << c.named;
    EXPECT_THAT(r.err, HasSubstr(c.named));
  }
  EXPECT_EQ(KernelSave(), before_filter);
  EXPECT_EQ(KernelSave("nat"), before_nat);
  // The 28-byte limit itself is fine.
  Ok({"chain", "create", std::string(28, 'L')});
}

INSTANTIATE_TEST_SUITE_P(Variants, CliNetnsTest,
                         ::testing::Values(Param{"nft", false}, Param{"nft", true}, Param{"legacy", false},
                                           Param{"legacy", true}),
                         ParamName);

}  // namespace
}  // namespace iptkit::clitest
