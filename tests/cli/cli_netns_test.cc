// The iptkit binary end to end against the real kernel, inside a fresh network namespace per test, on both
// iptables variants (--backend native / nft / legacy) and both families; every change is verified with the real
// `ip netns exec NS iptables-save`. Root only (GTEST_SKIP otherwise); never touches the host's firewall.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
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
  std::string backend;  // "native", "nft" or "legacy"
  bool ipv6 = false;
  // The iptables variant whose tools see what the backend writes.
  std::string variant() const { return backend == "legacy" ? "legacy" : "nft"; }
};

std::string ParamName(const ::testing::TestParamInfo<Param>& info) {
  return info.param.backend + (info.param.ipv6 ? "_ipv6" : "_ipv4");
}

class CliNetnsTest : public ::testing::TestWithParam<Param> {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root (creates a network namespace)";
    const Param& p = GetParam();
    save_tool_ = FindTool(std::string(p.ipv6 ? "ip6tables-" : "iptables-") + p.variant() + "-save");
    if (save_tool_.empty() || FindTool("ip").empty()) GTEST_SKIP() << "iptables " << p.variant() << " not installed";
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

  // The binary in the test's namespace with its backend and family (not for plan, apply and txn: their JSON names
  // the family, and -4/-6 are refused there).
  ProcessResult Cli(std::vector<std::string> args, const std::string& stdin_text = "") {
    std::vector<std::string> argv = {IPTKIT_CLI_BIN,     "--netns", ns_->name(), "--backend",
                                     GetParam().backend, "--wait",  "5"};
    const bool json_family = !args.empty() && (args[0] == "plan" || args[0] == "apply" || args[0] == "txn");
    if (!json_family) argv.push_back(GetParam().ipv6 ? "-6" : "-4");
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
  EXPECT_THAT(list.out, HasSubstr("/* hello world */"));
  EXPECT_THAT(Ok({"list", "-S", "filter", "INPUT"}).out,
              HasSubstr("-A INPUT -s " + canonical_addr_ + " -m comment --comment \"hello world\" -j ACCEPT"));
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
      std::string(p.ipv6 ? "ip6tables-" : "iptables-") + (p.variant() == "nft" ? "legacy" : "nft");
  ASSERT_FALSE(FindTool(other).empty());
  ProcessResult foreign = ns_->Exec({FindTool(other), "-A", "INPUT", "-j", "ACCEPT"});
  ASSERT_EQ(foreign.code, 0) << foreign.err;
  std::string family = p.ipv6 ? "ipv6" : "ipv4";
  std::string desired = WriteTemp(R"({"owner":"clitest","family":")" + family + R"(",
      "chains":[{"table":"filter","name":"CLITEST-IN","rules":[{"spec":"-j RETURN"}]}],
      "hooks":[{"table":"filter","chain":"INPUT","position":"first","spec":"-j CLITEST-IN"}]})");
  ProcessResult applied = Ok({"apply", desired});
  EXPECT_THAT(applied.out, HasSubstr("warning: iptables-" + std::string(p.variant() == "nft" ? "legacy" : "nft")))
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

// ---- iptables habits (issue 9 §4) ----

// The rules of the listing comparison, loaded with the real iptables of the variant; a rule this kernel or
// iptables refuses is skipped (and counted).
const std::vector<std::vector<std::string>>& ListingCorpusV4() {
  static const std::vector<std::vector<std::string>> kRules = {
      {"-A", "INPUT", "-s", "10.0.0.0/8", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"},
      {"-A", "INPUT", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"},
      {"-A", "INPUT", "-i", "lo", "-j", "ACCEPT"},
      {"-A", "INPUT", "!", "-i", "eth0", "-p", "udp", "--sport", "53", "-m", "comment", "--comment", "dns x", "-j",
       "DROP"},
      {"-A", "INPUT", "-p", "icmp", "--icmp-type", "echo-request", "-m", "limit", "--limit", "5/sec", "-j", "LOG",
       "--log-prefix", "ping: "},
      {"-A", "INPUT", "-p", "tcp", "-m", "multiport", "--dports", "80,443", "-j", "REJECT", "--reject-with",
       "tcp-reset"},
      {"-A", "INPUT", "-f", "-j", "DROP"},
      {"-A", "INPUT", "!", "-f", "-p", "47", "-j", "DROP"},
      {"-A", "INPUT", "-m", "mark", "--mark", "0x1/0xff"},
      {"-N", "LIST-X"},
      {"-A", "INPUT", "-j", "LIST-X"},
      {"-A", "INPUT", "-g", "LIST-X"},
      {"-A", "OUTPUT", "!", "-d", "192.168.0.0/255.255.0.0", "-o", "eth+", "-p", "sctp", "-j", "RETURN"},
      {"-A", "LIST-X", "-m", "state", "--state", "NEW", "-p", "tcp", "--syn", "-j", "ACCEPT"},
      {"-A", "LIST-X", "-p", "tcp", "--sport", "1000:2000", "!", "--dport", "22", "--tcp-flags", "SYN,ACK", "SYN", "-j",
       "DROP"},
      {"-A", "LIST-X", "-p", "tcp", "--tcp-option", "2", "-j", "ACCEPT"},
      {"-A", "LIST-X", "-p", "icmp", "--icmp-type", "3/1", "-j", "ACCEPT"},
      {"-A", "LIST-X", "-p", "icmp", "!", "--icmp-type", "any", "-j", "ACCEPT"},
      {"-A", "LIST-X", "-m", "conntrack", "!", "--ctstate", "INVALID", "--ctproto", "6", "--ctorigsrc", "10.0.0.1",
       "--ctstatus", "ASSURED", "--ctdir", "REPLY", "-j", "ACCEPT"},
      {"-A", "LIST-X", "-p", "tcp", "-m", "multiport", "!", "--sports", "1000:2000,3000", "-j", "ACCEPT"},
      {"-A", "LIST-X", "-m", "limit", "--limit", "10/min", "--limit-burst", "20", "-j", "ACCEPT"},
      {"-A", "LIST-X", "-m", "connmark", "!", "--mark", "0x3/0xf", "-j", "ACCEPT"},
      {"-A", "LIST-X", "-m", "mac", "--mac-source", "AA:BB:CC:DD:EE:FF", "-j", "ACCEPT"},
      {"-A", "LIST-X", "-m", "length", "!", "--length", "100:200", "-j", "ACCEPT"},
      {"-A", "LIST-X", "-m", "pkttype", "--pkt-type", "broadcast", "-j", "DROP"},
      {"-A", "LIST-X", "-m", "addrtype", "--src-type", "LOCAL", "!", "--dst-type", "UNICAST,BROADCAST",
       "--limit-iface-in", "-j", "ACCEPT"},
      {"-A", "LIST-X", "-m", "iprange", "--src-range", "10.0.0.1-10.0.0.9", "!", "--dst-range", "10.1.0.1-10.1.0.5",
       "-j", "ACCEPT"},
      {"-A", "LIST-X", "-m", "ttl", "!", "--ttl-eq", "64", "-j", "ACCEPT"},
      {"-A", "LIST-X", "-m", "owner", "!", "--gid-owner", "1000-2000", "--suppl-groups", "-j", "ACCEPT"},
      {"-A", "LIST-X", "-m", "dscp", "--dscp", "0x0a", "-j", "ACCEPT"},
      {"-A", "LIST-X", "-p", "tcp", "-m", "tcpmss", "--mss", "1000:1500", "-j", "ACCEPT"},
      {"-A", "LIST-X", "-m", "comment", "--comment", "say \"hi\" ok", "-j", "ACCEPT"},
      {"-A", "LIST-X", "-j", "LOG", "--log-level", "6", "--log-tcp-sequence", "--log-uid"},
      {"-A", "LIST-X", "-j", "NFLOG", "--nflog-group", "3", "--nflog-prefix", "pre fix", "--nflog-threshold", "5"},
      {"-A", "LIST-X", "-j", "NFQUEUE", "--queue-balance", "0:3", "--queue-bypass"},
      {"-A", "LIST-X", "-p", "tcp", "--tcp-flags", "SYN,RST", "SYN", "-j", "TCPMSS", "--clamp-mss-to-pmtu"},
      {"-A", "LIST-X", "-s", "192.0.2.7", "-d", "198.51.100.0/24", "-j", "RETURN"},
      {"-t", "mangle", "-A", "PREROUTING", "-j", "MARK", "--set-mark", "0x1"},
      {"-t", "mangle", "-A", "PREROUTING", "-j", "MARK", "--and-mark", "0xf0"},
      {"-t", "mangle", "-A", "PREROUTING", "-j", "CONNMARK", "--save-mark", "--nfmask", "0xff", "--ctmask", "0xf"},
      {"-t", "mangle", "-A", "POSTROUTING", "-j", "TTL", "--ttl-set", "5"},
      {"-t", "nat", "-A", "PREROUTING", "-p", "tcp", "--dport", "80", "-j", "DNAT", "--to-destination",
       "10.0.0.1-10.0.0.3:8080-8090", "--random", "--persistent"},
      {"-t", "nat", "-A", "PREROUTING", "-p", "tcp", "-j", "REDIRECT", "--to-ports", "8080"},
      {"-t", "nat", "-A", "POSTROUTING", "-o", "eth1", "-j", "SNAT", "--to-source", "10.9.9.9"},
      {"-t", "nat", "-A", "POSTROUTING", "-p", "tcp", "-o", "eth2", "-j", "MASQUERADE", "--to-ports", "1000-2000",
       "--random-fully"},
      {"-t", "raw", "-A", "PREROUTING", "-p", "udp", "-j", "CT", "--helper", "tftp", "--zone", "5"},
      {"-t", "raw", "-A", "OUTPUT", "-j", "NOTRACK"},
  };
  return kRules;
}

const std::vector<std::vector<std::string>>& ListingCorpusV6() {
  static const std::vector<std::vector<std::string>> kRules = {
      {"-N", "LIST-X"},
      {"-A", "INPUT", "-s", "2001:db8::/32", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"},
      {"-A", "INPUT", "-d", "2001:db8::7", "!", "-s", "fe80::/10", "-i", "lo", "-j", "ACCEPT"},
      {"-A", "INPUT", "-p", "ipv6-icmp", "--icmpv6-type", "128", "-j", "ACCEPT"},
      {"-A", "INPUT", "-p", "ipv6-icmp", "!", "--icmpv6-type", "1/3", "-j", "DROP"},
      {"-A", "INPUT", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"},
      {"-A", "INPUT", "-j", "LIST-X"},
      {"-A", "LIST-X", "-p", "udp", "-m", "multiport", "--dports", "53,5353", "-m", "comment", "--comment", "dns", "-j",
       "ACCEPT"},
      {"-A", "LIST-X", "-m", "hl", "--hl-eq", "255", "-j", "ACCEPT"},
      {"-A", "LIST-X", "-m", "iprange", "--src-range", "2001:db8::1-2001:db8::9", "-j", "ACCEPT"},
      {"-A", "LIST-X", "-j", "REJECT", "--reject-with", "icmp6-adm-prohibited"},
      {"-A", "LIST-X", "-j", "LOG", "--log-prefix", "v6 "},
      {"-t", "mangle", "-A", "PREROUTING", "-j", "HL", "--hl-set", "64"},
      {"-t", "nat", "-A", "PREROUTING", "-p", "tcp", "--dport", "80", "-j", "DNAT", "--to-destination",
       "[2001:db8::1]:8080"},
      {"-t", "nat", "-A", "POSTROUTING", "-o", "eth0", "-j", "MASQUERADE"},
  };
  return kRules;
}

// `iptkit list` prints what `iptables -L -n` (and -S) prints, for every flag combination, table, chain and rule
// number, with counters of every size (K/M/G and -x).
TEST_P(CliNetnsTest, ListIsWhatIptablesPrints) {
  const Param& p = GetParam();
  const std::string tool = FindTool(std::string(p.ipv6 ? "ip6tables-" : "iptables-") + p.variant());
  const auto& corpus = p.ipv6 ? ListingCorpusV6() : ListingCorpusV4();
  size_t loaded = 0;
  for (const auto& rule : corpus) {
    std::vector<std::string> argv = {tool};
    argv.insert(argv.end(), rule.begin(), rule.end());
    ProcessResult r = ns_->Exec(argv);
    if (r.code == 0) ++loaded;
  }
  EXPECT_GE(loaded + 2, corpus.size()) << "too many rules refused by " << tool;
  // Counters of every size.
  ProcessResult counters =
      ns_->Exec({tool + "-restore", "-c", "--noflush"},
                "*filter\n:INPUT DROP [123456789:98765432109]\n:CNT - [0:0]\n"
                "[5:300] -A CNT -j ACCEPT\n[99999:100000] -A CNT -j ACCEPT\n"
                "[100000:99999999] -A CNT -j ACCEPT\n[12345678901:1234567890123] -A CNT\nCOMMIT\n");
  ASSERT_EQ(counters.code, 0) << counters.err;

  auto iptables = [&](std::vector<std::string> args) {
    std::vector<std::string> argv = {tool};
    argv.insert(argv.end(), args.begin(), args.end());
    ProcessResult r = ns_->Exec(argv);
    EXPECT_EQ(r.code, 0) << ::testing::PrintToString(args) << ": " << r.err;
    return r.out;
  };
  for (const std::string table : {"filter", "nat", "mangle", "raw"}) {
    for (const std::vector<std::string>& flags : std::vector<std::vector<std::string>>{
             {}, {"-v"}, {"--line-numbers"}, {"-v", "--line-numbers"}, {"-v", "-x"}, {"-v", "-x", "--line-numbers"}}) {
      std::vector<std::string> ipt = {"-t", table, "-L", "-n"};
      ipt.insert(ipt.end(), flags.begin(), flags.end());
      std::vector<std::string> ours = {"-t", table, "list"};
      ours.insert(ours.end(), flags.begin(), flags.end());
      EXPECT_EQ(Ok(ours).out, iptables(ipt)) << table << " " << ::testing::PrintToString(flags);
    }
    EXPECT_EQ(Ok({"-t", table, "list", "-S"}).out, iptables({"-t", table, "-S"})) << table;
    EXPECT_EQ(Ok({"-t", table, "list", "-S", "-v"}).out, iptables({"-t", table, "-S", "-v"})) << table;
  }
  // One chain, one rule.
  EXPECT_EQ(Ok({"list", "-v", "-x", "CNT"}).out, iptables({"-L", "CNT", "-n", "-v", "-x"}));
  EXPECT_EQ(Ok({"list", "LIST-X", "2", "-v", "--line-numbers"}).out,
            iptables({"-L", "LIST-X", "2", "-n", "-v", "--line-numbers"}));
  EXPECT_EQ(Ok({"list", "-S", "LIST-X", "2"}).out, iptables({"-S", "LIST-X", "2"}));
  EXPECT_EQ(Ok({"list", "-S", "-v", "INPUT"}).out, iptables({"-S", "INPUT", "-v"}));
  EXPECT_EQ(Cli({"list", "LIST-X", "99"}).code, 3);
}

// A table nothing has used yet lists with its empty builtin chains, as iptables -L shows it.
TEST_P(CliNetnsTest, ListShowsEmptyBuiltinChainsOfUnusedTables) {
  const std::string tool = FindTool(std::string(GetParam().ipv6 ? "ip6tables-" : "iptables-") + GetParam().variant());
  for (const std::string table : {"nat", "mangle", "raw", "filter"}) {
    const std::string ours = Ok({"-t", table, "list", "-v"}).out;  // before iptables creates the table
    const std::string ours_s = Ok({"-t", table, "list", "-S"}).out;
    ProcessResult theirs = ns_->Exec({tool, "-t", table, "-L", "-n", "-v"});
    EXPECT_EQ(ours, theirs.out) << table;
    EXPECT_EQ(ours_s, ns_->Exec({tool, "-t", table, "-S"}).out) << table;
  }
}

TEST_P(CliNetnsTest, TableBeforeOrAfterTheCommand) {
  Ok({"-t", "mangle", "append", "PREROUTING", "-s", addr_, "-j", "ACCEPT"});
  Ok({"append", "-t", "mangle", "PREROUTING", "-s", other_, "-j", "ACCEPT"});
  EXPECT_EQ(ChainLines("PREROUTING", "mangle"),
            "-A PREROUTING -s " + canonical_addr_ + " -j ACCEPT\n-A PREROUTING -s " +
                std::string(GetParam().ipv6 ? "2001:db8::8/128" : "192.0.2.8/32") + " -j ACCEPT\n");
}

// Regression: `append INPUT -j ACCEPT --dry-run` said "unknown option of target ACCEPT" (and nothing was marked).
TEST_P(CliNetnsTest, IptkitOptionsAfterTheChainAreToldToGoBeforeIt) {
  const std::string before = KernelSave();
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{"append", "INPUT", "-j", "ACCEPT", "--dry-run"},
                                             {"append", "INPUT", "-s", addr_, "--unique", "-j", "ACCEPT"},
                                             {"insert", "INPUT", "1", "-t", "nat", "-j", "ACCEPT"},
                                             {"delete", "INPUT", "-j", "ACCEPT", "--json"}}) {
    ProcessResult r = Cli(args);
    EXPECT_EQ(r.code, 2) << r.err;
    EXPECT_THAT(r.err, HasSubstr("iptkit options go before CHAIN")) << r.err;
    EXPECT_THAT(r.err, HasSubstr("\n  iptkit --netns ")) << r.err;  // the command line, marked
  }
  EXPECT_EQ(KernelSave(), before);
}

TEST_P(CliNetnsTest, UniqueAddsOnlyWhenAbsent) {
  Ok({"append", "--unique", "INPUT", "-p", "tcp", "--dport", "22", "-s", addr_, "-j", "ACCEPT"});
  // The same rule, typed in its canonical form: nothing is added.
  Ok({"append", "--unique", "INPUT", "-s", canonical_addr_, "-p", "tcp", "-m", "tcp", "--dport", "22", "-j", "ACCEPT"});
  Ok({"insert", "--unique", "INPUT", "-p", "tcp", "--dport", "22", "-s", addr_, "-j", "ACCEPT"});
  const std::string ssh = "-A INPUT -s " + canonical_addr_ + " -p tcp -m tcp --dport 22 -j ACCEPT\n";
  EXPECT_EQ(ChainLines("INPUT"), ssh);
  ProcessResult said =
      Ok({"-v", "append", "--unique", "INPUT", "-p", "tcp", "--dport", "22", "-s", addr_, "-j", "ACCEPT"});
  EXPECT_EQ(said.out, "an equal rule is in the chain already: nothing to add\n");
  Ok({"insert", "--unique", "INPUT", "-s", other_, "-j", "DROP"});
  const std::string drop =
      "-A INPUT -s " + std::string(GetParam().ipv6 ? "2001:db8::8/128" : "192.0.2.8/32") + " -j DROP\n";
  EXPECT_EQ(ChainLines("INPUT"), drop + ssh);
}

TEST_P(CliNetnsTest, EmptyRulespecNeedsMatchAll) {
  ProcessResult r = Cli({"append", "INPUT"});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("--match-all"));
  EXPECT_EQ(ChainLines("INPUT"), "");
  Ok({"append", "--match-all", "INPUT"});
  EXPECT_THAT(KernelSave(), HasSubstr("\n-A INPUT\n"));
}

TEST_P(CliNetnsTest, IndexPastTheEndIsExit3ForInsertDeleteAndReplace) {
  Ok({"append", "INPUT", "-j", "ACCEPT"});
  const std::string before = KernelSave();
  EXPECT_EQ(Cli({"insert", "INPUT", "3", "-j", "DROP"}).code, 3);
  EXPECT_EQ(Cli({"delete", "INPUT", "2"}).code, 3);
  EXPECT_EQ(Cli({"replace", "INPUT", "2", "-j", "DROP"}).code, 3);
  EXPECT_EQ(KernelSave(), before);
}

TEST_P(CliNetnsTest, DeletingAnOwnedRuleWithoutItsOwnerSaysWhoOwnsIt) {
  std::string family = GetParam().ipv6 ? "ipv6" : "ipv4";
  std::string desired = WriteTemp(R"({"owner":"web","family":")" + family + R"(","chains":[],
      "hooks":[{"table":"filter","chain":"INPUT","position":"first","spec":"-s )" +
                                  addr_ + R"( -j DROP"}]})");
  Ok({"apply", desired});
  const std::string before = KernelSave();
  ProcessResult r = Cli({"delete", "INPUT", "-s", addr_, "-j", "DROP"});
  EXPECT_EQ(r.code, 4) << r.err;
  EXPECT_THAT(r.err, StartsWith("iptkit: the rule is owned by 'web': rule 1 of filter INPUT carries the owner tag "
                                "iptkit:web:"));
  EXPECT_EQ(KernelSave(), before);
  EXPECT_EQ(Cli({"delete", "INPUT", "-s", other_, "-j", "DROP"}).code, 3);
  // list --owner shows the owner's rules only.
  Ok({"append", "INPUT", "-j", "ACCEPT"});
  ProcessResult owned = Ok({"list", "-S", "--owner", "web"});
  EXPECT_THAT(owned.out, HasSubstr("-A INPUT -s " + canonical_addr_ + " -m comment --comment \"iptkit:web:"));
  EXPECT_THAT(owned.out, Not(HasSubstr("-j ACCEPT")));
}

// A table holding a rule whose printed form loads as another rule (legacy), or one iptables-nft-save cannot show
// (nft): save and list refuse it (exit 4 naming the rule and why) unless --allow-lossy, which marks it; check and
// delete with the typed spec still find a lossy rule.
TEST_P(CliNetnsTest, LossyTableIsRefusedUnlessAllowed) {
  const std::string iptables = save_tool_.substr(0, save_tool_.size() - std::string("-save").size());
  if (GetParam().backend == "nft" || GetParam().backend == "native") {
    // iptables-nft installs `! --sport :` as plain `-p tcp` (printed faithfully). What its save cannot show is an
    // nft set lookup: it prints `-A INPUT -j DROP`, an unconditional drop.
    ASSERT_EQ(ns_->Exec({iptables, "-A", "INPUT", "-j", "ACCEPT"}).code, 0);
    const std::string fam = GetParam().ipv6 ? "ip6" : "ip";
    ASSERT_EQ(ns_->Exec({FindTool("nft"), "add", "set", fam, "filter", "s",
                         GetParam().ipv6 ? "{ type ipv6_addr; }" : "{ type ipv4_addr; }"})
                  .code,
              0);
    ASSERT_EQ(ns_->Exec({FindTool("nft"), "add", "rule", fam, "filter", "INPUT", fam, "saddr", "@s", "drop"}).code, 0);
    ProcessResult save = Cli({"save", "filter"});
    EXPECT_EQ(save.code, 4) << save.err;
    EXPECT_THAT(save.err, HasSubstr("cannot be shown faithfully"));
    EXPECT_EQ(save.out, "");
    EXPECT_EQ(Cli({"--json", "list", "filter"}).code, 4);
    ProcessResult allowed = Ok({"save", "--allow-lossy", "filter"});
    EXPECT_THAT(allowed.out, HasSubstr("# iptkit: unrepresentable table: "));
    return;
  }
  ProcessResult loaded = ns_->Exec({iptables, "-A", "INPUT", "-p", "tcp", "-m", "tcp", "!", "--sport", ":"});
  ASSERT_EQ(loaded.code, 0) << loaded.err;
  ProcessResult save = Cli({"save", "filter"});
  EXPECT_EQ(save.code, 4) << save.err;
  EXPECT_THAT(save.err, HasSubstr("filter INPUT rule 1 is lossy"));
  EXPECT_EQ(save.out, "");
  EXPECT_EQ(Cli({"--json", "list", "filter"}).code, 4);
  ProcessResult allowed = Ok({"save", "--allow-lossy", "filter"});
  EXPECT_THAT(allowed.out, HasSubstr("\n-A INPUT -p tcp -m tcp\n# iptkit: lossy rule 1 of INPUT: "));
  ProcessResult json = Ok({"--json", "list", "--allow-lossy", "filter"});
  EXPECT_THAT(json.out, HasSubstr("\"lossy\""));
  Ok({"check", "INPUT", "-p", "tcp", "-m", "tcp", "!", "--sport", ":"});
  // The printed form names another rule.
  EXPECT_EQ(Cli({"check", "INPUT", "-p", "tcp", "-m", "tcp"}).code, 1);
  Ok({"delete", "INPUT", "-p", "tcp", "-m", "tcp", "!", "--sport", ":"});
  EXPECT_EQ(ChainLines("INPUT"), "");
}

// restore of a large input shows progress: plain lines when stderr is not a terminal, a bar when it is, nothing
// with -q.
TEST_P(CliNetnsTest, LargeRestoreShowsProgress) {
  std::string text = "*filter\n:BIG - [0:0]\n";
  for (int i = 0; i < 1500; ++i) {
    text += "-A BIG -s " +
            (GetParam().ipv6 ? "2001:db8::" + std::to_string(i + 1)
                             : "10.0." + std::to_string(i / 250) + "." + std::to_string(i % 250 + 1)) +
            " -j DROP\n";
  }
  text += "COMMIT\n";
  ProcessResult lines = Ok({"restore", "--noflush", "-"}, text);
  EXPECT_THAT(lines.err, HasSubstr("iptkit restore: parsed 1500 rules"));
  EXPECT_THAT(lines.err, HasSubstr("iptkit restore: committing 1501 ops in 1 table"));
  EXPECT_THAT(lines.err, HasSubstr("iptkit restore: done"));
  Ok({"chain", "delete", "--cascade", "BIG"});

  std::vector<std::string> argv = {IPTKIT_CLI_BIN, "--netns",          ns_->name(),
                                   "--backend",    GetParam().backend, GetParam().ipv6 ? "-6" : "-4",
                                   "restore",      "--noflush",        "-"};
  RunOptions terminal;
  terminal.stderr_terminal = true;
  ProcessResult bar = RunProcess(argv, text, terminal);
  EXPECT_EQ(bar.code, 0) << bar.err;
  EXPECT_THAT(bar.err, StartsWith("\r\x1b[Kiptkit restore: [")) << bar.err;
  EXPECT_THAT(bar.err, HasSubstr("] 100% done"));
  EXPECT_EQ(std::count(bar.err.begin(), bar.err.end(), '\n'), 1) << bar.err;
  Ok({"chain", "delete", "--cascade", "BIG"});

  EXPECT_EQ(Ok({"-q", "restore", "--noflush", "-"}, text).err, "");
  const std::string big = ChainLines("BIG");
  EXPECT_EQ(std::count(big.begin(), big.end(), '\n'), 1500);
}

// `auto` uses the native backend on nf_tables and says why; with rules only in x_tables it uses legacy.
TEST(CliAutoBackendTest, InfoSaysWhichBackendAndWhy) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (creates a network namespace)";
  const std::string legacy = FindTool("iptables-legacy");
  if (legacy.empty() || FindTool("iptables-nft").empty()) GTEST_SKIP() << "iptables not installed";
  TestNetns ns;
  ASSERT_TRUE(ns.ok());
  auto info = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {IPTKIT_CLI_BIN, "--netns", ns.name()});
    args.push_back("info");
    ProcessResult r = RunProcess(args);
    EXPECT_EQ(r.code, 0) << r.err;
    return r.out;
  };
  std::string out = info({});
  EXPECT_THAT(out, HasSubstr("backend: native\n")) << out;
  EXPECT_THAT(out, HasSubstr("backend chosen: auto: nf_tables holds 0 rules, x_tables (legacy) 0 rules: the nft "
                             "variant, natively\n"))
      << out;
  out = info({"--backend", "nft"});
  EXPECT_THAT(out, HasSubstr("backend: nft\n")) << out;
  EXPECT_THAT(out, HasSubstr("backend chosen: requested (--backend nft")) << out;
  // A rule only in x_tables: auto follows it to legacy.
  ProcessResult added = ns.Exec({legacy, "-A", "INPUT", "-j", "ACCEPT"});
  ASSERT_EQ(added.code, 0) << added.err;
  out = info({});
  EXPECT_THAT(out, HasSubstr("backend: native-legacy\n")) << out;
  EXPECT_THAT(out, HasSubstr("x_tables (legacy) 1 rule: the legacy variant, natively")) << out;
}

INSTANTIATE_TEST_SUITE_P(Variants, CliNetnsTest,
                         ::testing::Values(Param{"native", false}, Param{"native", true}, Param{"nft", false},
                                           Param{"nft", true}, Param{"legacy", false}, Param{"legacy", true}),
                         ParamName);

}  // namespace
}  // namespace iptkit::clitest
