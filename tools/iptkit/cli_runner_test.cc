// The CLI commands end to end in-process, over one Firewall on the fake backend that persists across commands
// (unlike separate processes, see tests/cli/ for the binary).
#include "tools/iptkit/cli_runner.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <sstream>

namespace iptkit::cli {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

struct Outcome {
  int code = -1;
  std::string out;
  std::string err;
};

class CliRunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    FirewallOptions options;
    options.backend = BackendKind::kFake;
    auto fw = Firewall::Open(options);
    ASSERT_TRUE(fw.ok()) << fw.status().ToString();
    firewall_ = std::move(fw).value();
  }

  Outcome Cli(const std::vector<std::string>& args, const std::string& stdin_text = "") {
    std::istringstream in(stdin_text);
    std::ostringstream out;
    std::ostringstream err;
    Outcome o;
    o.code = Main(args, in, out, err, firewall_.get());
    o.out = out.str();
    o.err = err.str();
    return o;
  }

  std::string Save(const std::string& family_flag = "-4") {
    Outcome o = Cli({family_flag, "save"});
    EXPECT_EQ(o.code, 0) << o.err;
    return o.out;
  }

  std::unique_ptr<Firewall> firewall_;
};

TEST_F(CliRunnerTest, AppendCheckListDelete) {
  Outcome add = Cli({"append", "INPUT", "-p", "tcp", "--dport", "22", "-s", "1.2.3.4", "-j", "ACCEPT"});
  ASSERT_EQ(add.code, 0) << add.err;
  EXPECT_EQ(add.out, "");
  EXPECT_EQ(add.err, "");

  EXPECT_EQ(Cli({"check", "INPUT", "-s", "1.2.3.4", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"}).code, 0);
  Outcome miss = Cli({"check", "INPUT", "-s", "1.2.3.5", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"});
  EXPECT_EQ(miss.code, kExitCheckMiss);
  EXPECT_EQ(miss.err, "");

  Outcome list = Cli({"list", "filter", "INPUT"});
  ASSERT_EQ(list.code, 0) << list.err;
  EXPECT_THAT(list.out, HasSubstr("Chain INPUT (policy ACCEPT)\n"));
  EXPECT_THAT(list.out, HasSubstr("1    -s 1.2.3.4/32 -p tcp -m tcp --dport 22 -j ACCEPT\n"));

  Outcome del =
      Cli({"delete", "INPUT", "--", "-s", "1.2.3.4/32", "-p", "tcp", "-m", "tcp", "--dport", "22", "-j", "ACCEPT"});
  ASSERT_EQ(del.code, 0) << del.err;
  EXPECT_EQ(Cli({"check", "INPUT", "-s", "1.2.3.4", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"}).code,
            kExitCheckMiss);
  EXPECT_THAT(Save(), Not(HasSubstr("-A INPUT")));
}

TEST_F(CliRunnerTest, DryRunPrintsRestoreTextAndChangesNothing) {
  std::string before = Save();
  Outcome dry = Cli({"append", "--dry-run", "INPUT", "-s", "10.0.0.0/8", "-j", "DROP"});
  ASSERT_EQ(dry.code, 0) << dry.err;
  EXPECT_EQ(dry.out, "*filter\n-A INPUT -s 10.0.0.0/8 -j DROP\nCOMMIT\n");
  EXPECT_EQ(Save(), before);
}

TEST_F(CliRunnerTest, VerbosePrintsWhatWasSent) {
  Outcome add = Cli({"-v", "append", "OUTPUT", "-j", "ACCEPT"});
  ASSERT_EQ(add.code, 0) << add.err;
  EXPECT_EQ(add.out, "*filter\n-A OUTPUT -j ACCEPT\nCOMMIT\n");
}

TEST_F(CliRunnerTest, InsertReplaceDeleteAtWithExpect) {
  ASSERT_EQ(Cli({"append", "INPUT", "-j", "ACCEPT"}).code, 0);
  ASSERT_EQ(Cli({"insert", "INPUT", "1", "-s", "10.1.1.1", "-j", "DROP"}).code, 0);
  Outcome list = Cli({"list", "filter", "INPUT"});
  EXPECT_THAT(list.out, HasSubstr("1    -s 10.1.1.1/32 -j DROP\n2    -j ACCEPT\n"));

  ASSERT_EQ(Cli({"replace", "INPUT", "2", "-j", "RETURN", "--expect", "-j", "ACCEPT"}).code, 0);
  EXPECT_THAT(Cli({"list", "filter", "INPUT"}).out, HasSubstr("2    -j RETURN\n"));

  // Rule 1 is not the expected one: nothing happens.
  Outcome wrong = Cli({"delete", "INPUT", "1", "--expect", "-j", "RETURN"});
  EXPECT_EQ(wrong.code, kExitConflict) << wrong.err;
  EXPECT_THAT(wrong.err, StartsWith("iptkit: "));
  EXPECT_THAT(Save(), HasSubstr("-A INPUT -s 10.1.1.1/32 -j DROP\n-A INPUT -j RETURN\n"));

  ASSERT_EQ(Cli({"delete", "INPUT", "1", "--expect", "-s", "10.1.1.1", "-j", "DROP"}).code, 0);
  ASSERT_EQ(Cli({"delete", "INPUT", "1"}).code, 0);
  EXPECT_THAT(Save(), Not(HasSubstr("-A INPUT")));
}

TEST_F(CliRunnerTest, ChainLifecycleAndReferences) {
  ASSERT_EQ(Cli({"chain", "create", "MYCHAIN"}).code, 0);
  ASSERT_EQ(Cli({"append", "MYCHAIN", "-j", "RETURN"}).code, 0);
  ASSERT_EQ(Cli({"append", "INPUT", "-j", "MYCHAIN"}).code, 0);
  EXPECT_THAT(Cli({"list", "filter"}).out, HasSubstr("Chain MYCHAIN (1 references)\n"));

  EXPECT_EQ(Cli({"chain", "create", "MYCHAIN"}).code, kExitConflict);  // AlreadyExists

  Outcome referenced = Cli({"chain", "delete", "MYCHAIN"});
  EXPECT_EQ(referenced.code, kExitConflict);
  EXPECT_THAT(referenced.err, HasSubstr("-j MYCHAIN"));

  ASSERT_EQ(Cli({"chain", "rename", "MYCHAIN", "OTHER"}).code, 0);
  EXPECT_THAT(Save(), HasSubstr("-A INPUT -j OTHER\n"));
  ASSERT_EQ(Cli({"chain", "flush", "OTHER"}).code, 0);
  ASSERT_EQ(Cli({"chain", "delete", "--cascade", "OTHER"}).code, 0);
  EXPECT_THAT(Save(), Not(HasSubstr("OTHER")));
  EXPECT_EQ(Cli({"chain", "delete", "OTHER"}).code, kExitNotFound);
  EXPECT_EQ(Cli({"append", "NOSUCH", "-j", "ACCEPT"}).code, kExitNotFound);
}

TEST_F(CliRunnerTest, Policy) {
  ASSERT_EQ(Cli({"chain", "policy", "INPUT", "DROP"}).code, 0);
  EXPECT_THAT(Save(), HasSubstr(":INPUT DROP"));
  EXPECT_THAT(Cli({"list", "filter", "INPUT"}).out, HasSubstr("Chain INPUT (policy DROP)"));
  ASSERT_EQ(Cli({"chain", "create", "USERCHAIN"}).code, 0);
  Outcome user = Cli({"chain", "policy", "USERCHAIN", "DROP"});
  EXPECT_EQ(user.code, kExitInvalid);
  EXPECT_THAT(user.err, HasSubstr("'USERCHAIN'"));
}

TEST_F(CliRunnerTest, BadInputIsExit2AndNamesTheToken) {
  ASSERT_EQ(Cli({"append", "INPUT", "-j", "ACCEPT"}).code, 0);
  std::string before = Save();
  struct Case {
    std::vector<std::string> args;
    std::string named;
  };
  const std::vector<Case> cases = {
      {{"append", "INPUT", "-s", "example.com", "-j", "ACCEPT"}, "example.com"},
      {{"append", "INPUT", "-s", "10.0.0.0/33", "-j", "ACCEPT"}, "10.0.0.0/33"},
      {{"append", "INPUT", "--frobnicate", "-j", "ACCEPT"}, "--frobnicate"},
      {{"append", "INPUT", "-p", "tcp", "-j", "DNAT", "--to-destination", "10.0.0.1"}, "DNAT"},
      {{"chain", "create", std::string(29, 'A')}, std::string(29, 'A')},
      {{"append", "INPUT", "-m", "comment", "--comment", "a\nb", "-j", "ACCEPT"}, "comment"},
      {{"chain", "create", "BAD\nNAME"}, "BAD"},
      {{"append", "-t", "nosuchtable", "INPUT", "-j", "ACCEPT"}, "nosuchtable"},
  };
  for (const Case& c : cases) {
    Outcome o = Cli(c.args);
    EXPECT_EQ(o.code, kExitInvalid) << c.args.back() << ": " << o.err;
    EXPECT_THAT(o.err, StartsWith("iptkit: ")) << c.named;
    EXPECT_THAT(o.err, HasSubstr(c.named));
    EXPECT_EQ(std::count(o.err.begin(), o.err.end(), '\n'), 1) << o.err;
  }
  EXPECT_EQ(Save(), before);
  Outcome longest = Cli({"chain", "create", std::string(28, 'A')});
  EXPECT_EQ(longest.code, 0) << longest.err;
}

TEST_F(CliRunnerTest, ListJsonStripsCountersUnlessAsked) {
  ASSERT_EQ(Cli({"append", "INPUT", "-j", "ACCEPT"}).code, 0);
  Outcome plain = Cli({"--json", "list", "filter"});
  ASSERT_EQ(plain.code, 0) << plain.err;
  auto doc = nlohmann::json::parse(plain.out);
  EXPECT_EQ(doc["family"], "ipv4");
  EXPECT_THAT(plain.out, Not(HasSubstr("\"counters\"")));
  EXPECT_THAT(plain.out, HasSubstr("-j ACCEPT"));
  Outcome counted = Cli({"--json", "list", "--counters"});
  EXPECT_THAT(counted.out, HasSubstr("\"counters\""));
}

TEST_F(CliRunnerTest, RestoreAndTxnFromStdin) {
  Outcome restore =
      Cli({"restore", "--noflush", "-"}, "*filter\n:ADDED - [0:0]\n-A ADDED -s 192.0.2.0/24 -j DROP\nCOMMIT\n");
  ASSERT_EQ(restore.code, 0) << restore.err;
  EXPECT_THAT(Save(), HasSubstr("-A ADDED -s 192.0.2.0/24 -j DROP\n"));

  Outcome txn = Cli({"txn", "-"}, R"({"ops":[
      {"create_chain":{"chain":"TXN"}},
      {"append":{"chain":"TXN","rule":{"spec":"-j RETURN"}}},
      {"policy":{"chain":"FORWARD","policy":"DROP"}}]})");
  ASSERT_EQ(txn.code, 0) << txn.err;
  EXPECT_THAT(Save(), HasSubstr("-A TXN -j RETURN\n"));
  EXPECT_THAT(Save(), HasSubstr(":FORWARD DROP"));

  Outcome bad = Cli({"txn", "-"}, R"({"ops":[{"append":{"chain":"INPUT","rule":{"spec":"-j ACCEPT"},"x":1}}]})");
  EXPECT_EQ(bad.code, kExitInvalid);
  EXPECT_THAT(bad.err, HasSubstr("/ops/0/append"));

  EXPECT_EQ(Cli({"restore", "/nonexistent/file"}).code, kExitInvalid);
}

TEST_F(CliRunnerTest, Ipv6) {
  ASSERT_EQ(Cli({"-6", "append", "INPUT", "-s", "2001:db8::1", "-j", "ACCEPT"}).code, 0);
  EXPECT_THAT(Save("-6"), HasSubstr("-A INPUT -s 2001:db8::1/128 -j ACCEPT\n"));
  EXPECT_THAT(Save("-4"), Not(HasSubstr("2001:db8")));
}

TEST(CliExitCodeTest, Mapping) {
  EXPECT_EQ(ExitCodeFor(StatusCode::kOk), 0);
  EXPECT_EQ(ExitCodeFor(StatusCode::kInvalidArgument), 2);
  EXPECT_EQ(ExitCodeFor(StatusCode::kNotFound), 3);
  EXPECT_EQ(ExitCodeFor(StatusCode::kAlreadyExists), 4);
  EXPECT_EQ(ExitCodeFor(StatusCode::kFailedPrecondition), 4);
  EXPECT_EQ(ExitCodeFor(StatusCode::kAborted), 4);
  EXPECT_EQ(ExitCodeFor(StatusCode::kUnavailable), 5);
  EXPECT_EQ(ExitCodeFor(StatusCode::kPermissionDenied), 6);
  EXPECT_EQ(ExitCodeFor(StatusCode::kInternal), 10);
}

TEST(CliMainTest, UsageErrorNeedsNoFirewall) {
  std::istringstream in;
  std::ostringstream out;
  std::ostringstream err;
  EXPECT_EQ(Main({"--bogus"}, in, out, err), kExitInvalid);
  EXPECT_THAT(err.str(), StartsWith("iptkit: "));
  EXPECT_THAT(err.str(), HasSubstr("--bogus"));
  EXPECT_EQ(out.str(), "");
}

}  // namespace
}  // namespace iptkit::cli
