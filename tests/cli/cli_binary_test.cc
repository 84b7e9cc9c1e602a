// The built iptkit binary over the fake backend. Fake state does not persist across processes, so these tests
// cover argument handling, validation, dry runs, usage errors and exit codes only; tests/cli/cli_netns_test.cc
// runs the binary against the real kernel.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "tests/cli/process.h"

namespace iptkit::clitest {
namespace {

using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using ::testing::StartsWith;

ProcessResult Iptkit(std::vector<std::string> args, const std::string& stdin_text = "") {
  args.insert(args.begin(), IPTKIT_CLI_BIN);
  return RunProcess(args, stdin_text);
}

ProcessResult Fake(std::vector<std::string> args, const std::string& stdin_text = "") {
  args.insert(args.begin(), {"--backend", "fake"});
  return Iptkit(std::move(args), stdin_text);
}

// The error contract: one line "iptkit: ..." on stderr naming what is wrong, followed (when the error is about an
// argument of the command line) by the command line with that argument marked; nothing on stdout.
void ExpectOneErrorLine(const ProcessResult& r, const std::string& named) {
  EXPECT_THAT(r.err, StartsWith("iptkit: "));
  const auto lines = std::count(r.err.begin(), r.err.end(), '\n');
  EXPECT_TRUE(lines == 1 || lines == 3) << r.err;
  if (lines == 3) {
    EXPECT_THAT(r.err, MatchesRegex("iptkit: [^\n]*\n  iptkit [^\n]*\n *\\^+\n")) << r.err;
  }
  EXPECT_THAT(r.err.substr(0, r.err.find('\n')), HasSubstr(named));
  EXPECT_EQ(r.out, "");
}

TEST(CliBinaryTest, HelpAndVersion) {
  ProcessResult help = Iptkit({"--help"});
  EXPECT_EQ(help.code, 0);
  for (const char* cmd : {"info", "list", "save", "restore", "check", "append", "insert", "delete", "replace", "chain",
                          "plan", "apply", "txn"}) {
    EXPECT_THAT(help.out, HasSubstr(cmd));
  }
  ProcessResult append_help = Iptkit({"append", "--help"});
  EXPECT_EQ(append_help.code, 0);
  EXPECT_THAT(append_help.out, HasSubstr("RULESPEC"));
  ProcessResult version = Iptkit({"--version"});
  EXPECT_EQ(version.code, 0);
  EXPECT_THAT(version.out, StartsWith("iptkit "));
}

TEST(CliBinaryTest, UsageErrorsExit2) {
  struct Case {
    std::vector<std::string> args;
    std::string named;
  };
  const std::vector<Case> cases = {
      {{"--frobnicate", "list"}, "--frobnicate"},
      {{"frobnicate"}, "frobnicate"},
      {{"--backend", "bogus", "info"}, "bogus"},
      {{"--wait", "abc", "info"}, "abc"},
      {{"-4", "-6", "save"}, "-4 and -6"},
      {{"insert", "INPUT", "zero", "-j", "ACCEPT"}, "zero"},
      {{"insert", "INPUT", "0", "-j", "ACCEPT"}, "0"},
      {{"delete", "INPUT", "1", "-j", "ACCEPT"}, "'-j'"},
      {{"append"}, "CHAIN"},
      {{"chain", "policy", "INPUT", "REJECT"}, "REJECT"},
      {{"list", "filter", "INPUT", "extra"}, "extra"},
      {{}, "no command given"},
      {{"-6", "txn", "ops.json"}, "-6 does not apply to txn"},
      {{"plan", "-4", "d.json"}, "-4 does not apply to plan"},
      {{"-t", "nat", "apply", "d.json"}, "-t/--table does not apply to apply"},
      {{"append", "--ttl", "10m", "INPUT", "-j", "DROP"}, "--ttl needs a running iptkitd"},
      {{"--daemon", "append", "--ttl", "10y", "INPUT", "-j", "DROP"}, "--ttl"},
  };
  for (const Case& c : cases) {
    ProcessResult r = Fake(c.args);
    EXPECT_EQ(r.code, 2) << c.named << ": " << r.err;
    ExpectOneErrorLine(r, c.named);
  }
}

TEST(CliBinaryTest, BadRuleInputExit2NamesToken) {
  struct Case {
    std::vector<std::string> args;
    std::string named;
  };
  const std::vector<Case> cases = {
      {{"append", "INPUT", "-s", "www.example.com", "-j", "ACCEPT"}, "www.example.com"},
      {{"append", "INPUT", "-s", "10.0.0.0/40", "-j", "ACCEPT"}, "10.0.0.0/40"},
      {{"append", "INPUT", "-s", "10.0.0.256", "-j", "ACCEPT"}, "10.0.0.256"},
      {{"append", "INPUT", "--no-such-option", "1", "-j", "ACCEPT"}, "--no-such-option"},
      {{"append", "INPUT", "-p", "tcp", "-j", "DNAT", "--to-destination", "10.0.0.1"}, "DNAT"},
      {{"append", "-t", "nat", "PREROUTING", "-j", "MASQUERADE"}, "MASQUERADE"},
      {{"chain", "policy", "MYCHAIN", "DROP"}, "MYCHAIN"},
      {{"chain", "create", std::string(29, 'C')}, std::string(29, 'C')},
      {{"append", std::string(29, 'C'), "-j", "ACCEPT"}, std::string(29, 'C')},
      {{"chain", "create", "DNAT"}, "DNAT"},
      {{"append", "INPUT", "-m", "comment", "--comment", "evil\n-A INPUT -j ACCEPT", "-j", "DROP"}, "comment"},
      {{"chain", "create", "NEW\nLINE"}, "NEW"},
      {{"append", "-t", "nosuch", "INPUT", "-j", "ACCEPT"}, "nosuch"},
      {{"-6", "append", "INPUT", "-s", "10.0.0.1", "-j", "ACCEPT"}, "10.0.0.1"},
      {{"-6", "append", "INPUT", "-f", "-j", "ACCEPT"}, "-f"},
  };
  for (const Case& c : cases) {
    ProcessResult r = Fake(c.args);
    EXPECT_EQ(r.code, 2) << c.named << ": " << r.err;
    ExpectOneErrorLine(r, c.named);
  }
}

TEST(CliBinaryTest, DryRunPrintsExactRestoreText) {
  ProcessResult v4 =
      Fake({"append", "--dry-run", "INPUT", "-p", "tcp", "--dport", "22", "-s", "1.2.3.4", "-j", "ACCEPT"});
  ASSERT_EQ(v4.code, 0) << v4.err;
  EXPECT_EQ(v4.out, "*filter\n-A INPUT -s 1.2.3.4/32 -p tcp -m tcp --dport 22 -j ACCEPT\nCOMMIT\n");
  EXPECT_EQ(v4.err, "");

  ProcessResult v6 =
      Fake({"-6", "insert", "--dry-run", "-t", "mangle", "PREROUTING", "1", "--", "-s", "2001:db8::1", "-j", "ACCEPT"});
  ASSERT_EQ(v6.code, 0) << v6.err;
  EXPECT_EQ(v6.out, "*mangle\n-I PREROUTING 1 -s 2001:db8::1/128 -j ACCEPT\nCOMMIT\n");

  ProcessResult create = Fake({"chain", "create", "--dry-run", "-t", "nat", "MYNAT"});
  ASSERT_EQ(create.code, 0) << create.err;
  EXPECT_EQ(create.out, "*nat\n-N MYNAT\nCOMMIT\n");

  ProcessResult policy = Fake({"chain", "policy", "--dry-run", "FORWARD", "DROP"});
  ASSERT_EQ(policy.code, 0) << policy.err;
  EXPECT_EQ(policy.out, "*filter\n-P FORWARD DROP\nCOMMIT\n");
}

TEST(CliBinaryTest, DryRunJson) {
  ProcessResult r = Fake({"--json", "append", "--dry-run", "OUTPUT", "-j", "ACCEPT"});
  ASSERT_EQ(r.code, 0) << r.err;
  nlohmann::json doc = nlohmann::json::parse(r.out, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(doc.is_discarded()) << r.out;
  EXPECT_THAT(r.out, HasSubstr("-A OUTPUT -j ACCEPT"));
}

TEST(CliBinaryTest, RestoreAndTxnDryRunFromStdin) {
  ProcessResult restore = Fake({"restore", "--noflush", "--dry-run", "-"},
                               "*filter\n:ADDED - [0:0]\n-A ADDED -s 192.0.2.0/24 -j DROP\nCOMMIT\n");
  ASSERT_EQ(restore.code, 0) << restore.err;
  EXPECT_THAT(restore.out, HasSubstr("-A ADDED -s 192.0.2.0/24 -j DROP\n"));

  ProcessResult txn = Fake({"txn", "--dry-run", "-"}, R"({"ops":[{"create_chain":{"chain":"T1"}},
      {"append":{"chain":"T1","rule":{"spec":"-j RETURN"}}}]})");
  ASSERT_EQ(txn.code, 0) << txn.err;
  EXPECT_EQ(txn.out, "*filter\n-N T1\n-A T1 -j RETURN\nCOMMIT\n");

  ProcessResult bad_json = Fake({"txn", "-"}, "{\"ops\": [");
  EXPECT_EQ(bad_json.code, 2);
  ExpectOneErrorLine(bad_json, "iptkit: ");

  ProcessResult missing = Fake({"restore", "/nonexistent/rules.v4"});
  EXPECT_EQ(missing.code, 2);
  ExpectOneErrorLine(missing, "/nonexistent/rules.v4");
}

// The marking: the offending argument of the command line, under it.
TEST(CliBinaryTest, ErrorsMarkTheOffendingArgument) {
  ProcessResult r = Fake({"append", "INPUT", "-p", "tcp", "--dport", "22", "-s", "10.0.0.0/33", "-j", "ACCEPT"});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("\n  iptkit --backend fake append INPUT -p tcp --dport 22 -s 10.0.0.0/33 -j ACCEPT\n"
                               "                                                          ^^^^^^^^^^^\n"));
  ProcessResult option = Fake({"append", "INPUT", "-j", "ACCEPT", "--dry-run"});
  EXPECT_EQ(option.code, 2);
  EXPECT_THAT(option.err, StartsWith("iptkit: '--dry-run' is an iptkit option, but it comes after CHAIN"));
  EXPECT_THAT(option.err, HasSubstr("iptkit options go before CHAIN"));
  ProcessResult usage = Fake({"list", "--frobnicate"});
  EXPECT_THAT(usage.err, HasSubstr("\n  iptkit --backend fake list --frobnicate\n"
                                   "                             ^^^^^^^^^^^^\n"));
}

TEST(CliBinaryTest, EveryCommandHelpHasArgumentsOptionsAndExamples) {
  ProcessResult help = Iptkit({"--help"});
  EXPECT_THAT(help.out, HasSubstr("Exit codes:\n  0   success\n"));
  for (const char* cmd :
       {"info", "list", "save", "restore", "check", "append", "insert", "delete", "replace", "plan", "apply", "txn"}) {
    ProcessResult r = Iptkit({cmd, "--help"});
    EXPECT_EQ(r.code, 0) << cmd;
    EXPECT_THAT(r.out, StartsWith("Usage: iptkit " + std::string(cmd))) << cmd;
    EXPECT_THAT(r.out, HasSubstr("\nExamples:\n  iptkit ")) << cmd;
  }
  ProcessResult chain = Iptkit({"chain", "delete", "--help"});
  EXPECT_THAT(chain.out, HasSubstr("Arguments:\n  CHAIN"));
  EXPECT_THAT(chain.out, HasSubstr("--cascade"));
}

TEST(CliBinaryTest, NonRootIsToldRootOrCapNetAdminIsNeeded) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to run the binary as another user";
  for (const char* backend : {"nft", "legacy", "auto"}) {
    RunOptions nobody;
    nobody.uid = 65534;
    ProcessResult r = RunProcess({IPTKIT_CLI_BIN, "--backend", backend, "list"}, "", nobody);
    EXPECT_EQ(r.code, 6) << backend << ": " << r.err;
    EXPECT_EQ(r.err,
              "iptkit: iptkit needs root (or the CAP_NET_ADMIN capability) to read or change iptables rules; run it "
              "as root, or through a running iptkitd that allows your user: iptkit --daemon [SOCKET] ...\n");
    EXPECT_EQ(r.out, "");
  }
  // The fake backend needs no privileges.
  RunOptions nobody;
  nobody.uid = 65534;
  EXPECT_EQ(RunProcess({IPTKIT_CLI_BIN, "--backend", "fake", "list"}, "", nobody).code, 0);
}

TEST(CliBinaryTest, ExitCodesOnFreshFakeState) {
  ProcessResult check = Fake({"check", "INPUT", "-j", "ACCEPT"});
  EXPECT_EQ(check.code, 1);
  EXPECT_EQ(check.err, "");
  ProcessResult json_check = Fake({"--json", "check", "INPUT", "-j", "ACCEPT"});
  EXPECT_EQ(json_check.code, 1);
  EXPECT_EQ(json_check.out, "{\"present\":false}\n");

  ProcessResult no_chain = Fake({"chain", "delete", "NOSUCH"});
  EXPECT_EQ(no_chain.code, 3);
  ExpectOneErrorLine(no_chain, "NOSUCH");

  ProcessResult no_rule = Fake({"delete", "INPUT", "-j", "ACCEPT"});
  EXPECT_EQ(no_rule.code, 3) << no_rule.err;

  ProcessResult list = Fake({"list"});
  EXPECT_EQ(list.code, 0) << list.err;
  ProcessResult list_missing = Fake({"list", "filter", "NOSUCH"});
  EXPECT_EQ(list_missing.code, 3);
  ExpectOneErrorLine(list_missing, "NOSUCH");
}

}  // namespace
}  // namespace iptkit::clitest
