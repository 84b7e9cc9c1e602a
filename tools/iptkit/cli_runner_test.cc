// The CLI commands end to end in-process, over one Firewall on the fake backend that persists across commands
// (unlike separate processes, see tests/cli/ for the binary).
#include "tools/iptkit/cli_runner.h"

#include <dlfcn.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <sstream>

#include "src/dialect/xtables_lib.h"

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

  Outcome Cli(const std::vector<std::string>& args, const std::string& stdin_text = "", const Environment& env = {}) {
    std::istringstream in(stdin_text);
    std::ostringstream out;
    std::ostringstream err;
    Outcome o;
    o.code = Main(args, in, out, err, firewall_.get(), env);
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
  EXPECT_EQ(list.out,
            "Chain INPUT (policy ACCEPT)\n"
            "target     prot opt source               destination         \n"
            "ACCEPT     6    --  1.2.3.4              0.0.0.0/0            tcp dpt:22\n");
  EXPECT_EQ(Cli({"list", "-S", "INPUT"}).out,
            "-P INPUT ACCEPT\n-A INPUT -s 1.2.3.4/32 -p tcp -m tcp --dport 22 -j ACCEPT\n");

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
  Outcome list = Cli({"list", "-S", "filter", "INPUT"});
  EXPECT_THAT(list.out, HasSubstr("-A INPUT -s 10.1.1.1/32 -j DROP\n-A INPUT -j ACCEPT\n"));

  ASSERT_EQ(Cli({"replace", "INPUT", "2", "-j", "RETURN", "--expect", "-j", "ACCEPT"}).code, 0);
  EXPECT_EQ(Cli({"list", "-S", "INPUT", "2"}).out, "-A INPUT -j RETURN\n");

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
  EXPECT_THAT(Cli({"list", "INPUT"}).out, HasSubstr("Chain INPUT (policy DROP)"));
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
    // The message, and the command line with the argument marked when the error names one.
    const auto lines = std::count(o.err.begin(), o.err.end(), '\n');
    EXPECT_TRUE(lines == 1 || lines == 3) << o.err;
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

TEST_F(CliRunnerTest, UniqueAddsOnlyWhenAbsent) {
  ASSERT_EQ(Cli({"append", "--unique", "INPUT", "-s", "192.0.2.1", "-j", "DROP"}).code, 0);
  // The same rule typed differently is equal: nothing is added, and -v says so.
  Outcome again = Cli({"-v", "append", "--unique", "INPUT", "-s", "192.0.2.1/32", "-j", "DROP"});
  ASSERT_EQ(again.code, 0) << again.err;
  EXPECT_EQ(again.out, "an equal rule is in the chain already: nothing to add\n");
  Outcome insert = Cli({"--json", "insert", "--unique", "INPUT", "-s", "192.0.2.1", "-j", "DROP"});
  ASSERT_EQ(insert.code, 0) << insert.err;
  EXPECT_EQ(nlohmann::json::parse(insert.out)["tables"], nlohmann::json::array());
  EXPECT_EQ(Cli({"list", "-S", "INPUT"}).out, "-P INPUT ACCEPT\n-A INPUT -s 192.0.2.1/32 -j DROP\n");
  // Without --unique a copy is added.
  ASSERT_EQ(Cli({"insert", "INPUT", "-s", "192.0.2.1", "-j", "DROP"}).code, 0);
  EXPECT_EQ(Cli({"list", "-S", "INPUT"}).out,
            "-P INPUT ACCEPT\n-A INPUT -s 192.0.2.1/32 -j DROP\n-A INPUT -s 192.0.2.1/32 -j DROP\n");
}

TEST_F(CliRunnerTest, EmptyRulespecNeedsMatchAll) {
  std::string before = Save();
  Outcome empty = Cli({"append", "INPUT"});
  EXPECT_EQ(empty.code, kExitInvalid);
  EXPECT_THAT(empty.err, HasSubstr("give --match-all before CHAIN if you mean it (iptkit append --match-all INPUT)"));
  EXPECT_EQ(Save(), before);
  EXPECT_EQ(Cli({"append", "--match-all", "INPUT"}).code, 0);
  EXPECT_THAT(Save(), HasSubstr("\n-A INPUT\n"));
  EXPECT_EQ(Cli({"check", "INPUT"}).code, kExitInvalid);
  EXPECT_EQ(Cli({"check", "--match-all", "INPUT"}).code, 0);
}

// Regression: `append INPUT -j ACCEPT --dry-run` used to say "unknown option of target ACCEPT".
TEST_F(CliRunnerTest, IptkitOptionAfterChainIsToldToGoBeforeIt) {
  std::string before = Save();
  Outcome o = Cli({"append", "INPUT", "-j", "ACCEPT", "--dry-run"});
  EXPECT_EQ(o.code, kExitInvalid);
  EXPECT_EQ(o.err,
            "iptkit: '--dry-run' is an iptkit option, but it comes after CHAIN, in the RULESPEC: iptkit options go "
            "before CHAIN (iptkit append --dry-run INPUT ...)\n"
            "  iptkit append INPUT -j ACCEPT --dry-run\n"
            "                                ^^^^^^^^^\n");
  EXPECT_EQ(Save(), before);
  EXPECT_THAT(Cli({"append", "INPUT", "-t", "nat", "-j", "ACCEPT"}).err, HasSubstr("iptkit options go before CHAIN"));
  EXPECT_THAT(Cli({"insert", "INPUT", "1", "-j", "ACCEPT", "--unique"}).err,
              HasSubstr("iptkit options go before CHAIN"));
  // An option of neither iptables nor iptkit stays the rule parser's error, marked on the command line.
  Outcome unknown = Cli({"append", "INPUT", "-p", "tcp", "--dportx", "22", "-j", "ACCEPT"});
  EXPECT_EQ(unknown.code, kExitInvalid);
  EXPECT_THAT(unknown.err, HasSubstr("'--dportx'"));
  EXPECT_THAT(unknown.err, HasSubstr("\n  iptkit append INPUT -p tcp --dportx 22 -j ACCEPT\n"
                                     "                             ^^^^^^^^\n"));
}

TEST_F(CliRunnerTest, IndexPastTheEndIsExit3ForInsertDeleteAndReplace) {
  ASSERT_EQ(Cli({"append", "INPUT", "-j", "ACCEPT"}).code, 0);
  std::string before = Save();
  for (const auto& args : std::vector<std::vector<std::string>>{{"insert", "INPUT", "3", "-j", "DROP"},
                                                                {"delete", "INPUT", "2"},
                                                                {"replace", "INPUT", "2", "-j", "DROP"},
                                                                {"list", "INPUT", "2"}}) {
    Outcome o = Cli(args);
    EXPECT_EQ(o.code, kExitNotFound) << args[0] << ": " << o.err;
  }
  EXPECT_EQ(Save(), before);
  EXPECT_EQ(Cli({"insert", "INPUT", "2", "-j", "DROP"}).code, 0);  // rules + 1 appends
}

TEST_F(CliRunnerTest, DeletingAnOwnedRuleWithoutItsOwnerSaysWhoOwnsIt) {
  Outcome applied = Cli({"apply", "-"}, R"({"owner":"web","family":"ipv4","chains":[],
      "hooks":[{"table":"filter","chain":"INPUT","position":"first","spec":"-s 192.0.2.9 -j DROP"}]})");
  ASSERT_EQ(applied.code, 0) << applied.err;
  std::string before = Save();
  Outcome o = Cli({"delete", "INPUT", "-s", "192.0.2.9", "-j", "DROP"});
  EXPECT_EQ(o.code, kExitConflict) << o.err;
  EXPECT_THAT(o.err, HasSubstr("the rule is owned by 'web': rule 1 of filter INPUT carries the owner tag iptkit:web:"));
  EXPECT_EQ(Save(), before);
  // A rule nobody has is still "not found".
  EXPECT_EQ(Cli({"delete", "INPUT", "-s", "192.0.2.10", "-j", "DROP"}).code, kExitNotFound);
  // list --owner shows only that owner's rules, with their real numbers.
  ASSERT_EQ(Cli({"append", "INPUT", "-j", "ACCEPT"}).code, 0);
  Outcome owned = Cli({"list", "-S", "--owner", "web"});
  ASSERT_EQ(owned.code, 0) << owned.err;
  EXPECT_THAT(owned.out, HasSubstr("-A INPUT -s 192.0.2.9/32 -m comment --comment \"iptkit:web:"));
  EXPECT_THAT(owned.out, Not(HasSubstr("-j ACCEPT")));
  EXPECT_EQ(Cli({"list", "--owner", "nobody"}).out, "");
  auto doc = nlohmann::json::parse(Cli({"--json", "list", "--owner", "web"}).out);
  ASSERT_EQ(doc["tables"][0]["chains"].size(), 1u);
  EXPECT_EQ(doc["tables"][0]["chains"][0]["rules"][0]["index"], 1);
}

TEST_F(CliRunnerTest, ListShowsEveryBuiltinChainOfATableNotCreatedYet) {
  Outcome nat = Cli({"-t", "nat", "list"});
  ASSERT_EQ(nat.code, 0) << nat.err;
  EXPECT_EQ(nat.out,
            "Chain PREROUTING (policy ACCEPT)\ntarget     prot opt source               destination         \n\n"
            "Chain INPUT (policy ACCEPT)\ntarget     prot opt source               destination         \n\n"
            "Chain OUTPUT (policy ACCEPT)\ntarget     prot opt source               destination         \n\n"
            "Chain POSTROUTING (policy ACCEPT)\ntarget     prot opt source               destination         \n");
  EXPECT_EQ(Cli({"-t", "raw", "list", "-S"}).out, "-P PREROUTING ACCEPT\n-P OUTPUT ACCEPT\n");
  EXPECT_EQ(Cli({"list", "NOSUCH"}).code, kExitNotFound);
}

TEST_F(CliRunnerTest, FileCommandsRefuseAFamilyFlag) {
  Outcome o = Cli({"-6", "txn", "-"}, R"({"ops":[{"flush":{}}]})");
  EXPECT_EQ(o.code, kExitInvalid);
  EXPECT_THAT(o.err, HasSubstr("-6 does not apply to txn: the family comes from the JSON"));
}

TEST(CliPermissionTest, NonRootIsToldWhatIsNeeded) {
  std::istringstream in;
  std::ostringstream out;
  std::ostringstream err;
  Environment env;
  env.has_net_admin = false;
  EXPECT_EQ(Main({"--backend", "nft", "list"}, in, out, err, nullptr, env), kExitPermission);
  EXPECT_THAT(err.str(), HasSubstr("iptkit needs root (or the CAP_NET_ADMIN capability)"));
  EXPECT_THAT(err.str(), HasSubstr("--daemon"));
  std::ostringstream err2;
  env.has_net_admin = true;
  env.has_sys_admin = false;
  EXPECT_EQ(Main({"--netns", "x", "--backend", "legacy", "save"}, in, out, err2, nullptr, env), kExitPermission);
  EXPECT_THAT(err2.str(), HasSubstr("entering network namespace 'x' needs root"));
  // The fake backend touches no kernel state: no privileges needed.
  std::ostringstream err3;
  env.has_net_admin = false;
  EXPECT_EQ(Main({"--backend", "fake", "list"}, in, out, err3, nullptr, env), kExitOk) << err3.str();
}

TEST_F(CliRunnerTest, ProgressOfLargeRestoreAndApply) {
  std::string text = "*filter\n:BIG - [0:0]\n";
  for (int i = 0; i < 1200; ++i)
    text += "-A BIG -s 10.0." + std::to_string(i / 250) + "." + std::to_string(i % 250) + " -j DROP\n";
  text += "COMMIT\n";
  Outcome lines = Cli({"restore", "-"}, text);
  ASSERT_EQ(lines.code, 0) << lines.err;
  EXPECT_THAT(lines.err, HasSubstr("iptkit restore: parsed 1200 rules"));
  EXPECT_THAT(lines.err, HasSubstr("iptkit restore: committing 1201 ops in 1 table"));
  EXPECT_THAT(lines.err, HasSubstr("iptkit restore: done"));
  EXPECT_EQ(lines.err.find('\r'), std::string::npos);
  EXPECT_EQ(Cli({"-q", "restore", "-"}, text).err, "");
  Environment terminal;
  terminal.stderr_is_terminal = true;
  Outcome bar = Cli({"restore", "-"}, text, terminal);
  ASSERT_EQ(bar.code, 0) << bar.err;
  EXPECT_THAT(bar.err, StartsWith("\r\x1b[Kiptkit restore: ["));
  EXPECT_THAT(bar.err, HasSubstr("] 100% done"));
  EXPECT_EQ(std::count(bar.err.begin(), bar.err.end(), '\n'), 1);
  // Small inputs show nothing.
  EXPECT_EQ(Cli({"restore", "--noflush", "-"}, "*filter\n-A BIG -j RETURN\nCOMMIT\n", terminal).err, "");

  std::string doc = R"({"owner":"big","family":"ipv4","chains":[{"table":"filter","name":"BIG-IN","rules":[)";
  for (int i = 0; i < 1000; ++i)
    doc += std::string(i ? "," : "") + R"({"spec":"-s 10.1.)" + std::to_string(i / 250) + "." +
           std::to_string(i % 250) + R"( -j DROP"})";
  doc += "]}]}";
  Outcome apply = Cli({"apply", "-"}, doc);
  ASSERT_EQ(apply.code, 0) << apply.err;
  EXPECT_THAT(apply.err, HasSubstr("iptkit apply: checking 1000 rules"));
  EXPECT_THAT(apply.err, HasSubstr("iptkit apply: committing 1001 ops in 1 table"));
}

// An error in a FILE (restore text, a JSON document) shows the line or the JSON string it is about, marked.
TEST_F(CliRunnerTest, ErrorsInInputFilesShowTheLineMarked) {
  Outcome restore = Cli({"restore", "--noflush", "-"}, "*filter\n-A INPUT -p tcp --dportx 22 -j ACCEPT\nCOMMIT\n");
  EXPECT_EQ(restore.code, kExitInvalid);
  EXPECT_EQ(restore.err,
            "iptkit: line 2: '--dportx' at column 17: unknown option (not an option of match tcp)\n"
            "  stdin:2: -A INPUT -p tcp --dportx 22 -j ACCEPT\n"
            "                           ^^^^^^^^\n");
  Outcome txn = Cli({"txn", "-"}, R"({"ops":[{"append":{"chain":"INPUT","rule":{"spec":"-p tcp --dportx 1"}}}]})");
  EXPECT_EQ(txn.code, kExitInvalid);
  EXPECT_THAT(txn.err, HasSubstr("\n  stdin /ops/0/append/rule/spec: -p tcp --dportx 1\n"
                                 "                                        ^^^^^^^^\n"));
  EXPECT_THAT(txn.err, StartsWith("iptkit: stdin: /ops/0/append/rule/spec: '--dportx' at column 8"));
  // A pointer that names no string shows nothing more.
  Outcome other = Cli({"txn", "-"}, R"({"ops":[{"append":{"chain":"INPUT","rule":{"spec":"-j ACCEPT"},"x":1}}]})");
  EXPECT_EQ(std::count(other.err.begin(), other.err.end(), '\n'), 1) << other.err;
}

TEST(CliFormatErrorTest, MarksTheArgumentTheErrorNames) {
  Status s = Status::InvalidArgument("bad").WithToken("a b").WithArgument(2);
  EXPECT_EQ(FormatError(s, {"append", "a b", "c"}), "iptkit: bad\n  iptkit append 'a b' c\n                ^^^^^\n");
  // A token that is not the argument at that position is not marked (the payload is about something else).
  EXPECT_EQ(FormatError(s, {"append", "x", "c"}), "iptkit: bad\n");
  EXPECT_EQ(FormatError(Status::NotFound("line 1\nline 2\n"), {}), "iptkit: line 1 | line 2\n");
  // Long command lines show a window around the argument.
  std::vector<std::string> args = {"append", "INPUT"};
  for (int i = 0; i < 40; ++i) args.push_back("-m");
  args.push_back("BAD");
  for (int i = 0; i < 40; ++i) args.push_back("-x");
  Status far = Status::InvalidArgument("bad").WithToken("BAD").WithArgument(43);
  std::string text = FormatError(far, args);
  EXPECT_THAT(text, HasSubstr("\n  ...-m -m -m"));
  EXPECT_THAT(text, HasSubstr("-m BAD -x"));
  EXPECT_THAT(text, HasSubstr("-x...\n"));
  size_t line2 = text.find('\n') + 1;
  size_t line3 = text.find('\n', line2) + 1;
  EXPECT_EQ(text.substr(line2).find("BAD"), text.substr(line3).find('^'));
}

TEST(CliExitCodeTest, Mapping) {
  EXPECT_EQ(ExitCodeFor(Status::InvalidArgument("x").WithReason(std::string(kReasonIndexOutOfRange))), 3);
  EXPECT_EQ(ExitCodeFor(Status::InvalidArgument("x")), 2);
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

// ---- libxtables is loaded on first use (src/dialect/xtables_lib.h) ----

// Whether this process has libxtables loaded.
bool LibxtablesLoaded() {
  void* h = ::dlopen(dialect::XtablesLibPath().c_str(), RTLD_NOW | RTLD_NOLOAD);
  if (h != nullptr) ::dlclose(h);
  return h != nullptr;
}

// Before main(): loaded then only as a dynamic dependency of the program.
const bool g_libxtables_loaded_at_start = LibxtablesLoaded();

// One command in the child of a death test; prints what went wrong to stderr (which the test shows).
bool Runs(const std::vector<std::string>& args, int want_code, const std::string& want_err = "",
          const Environment& env = {}) {
  std::istringstream in;
  std::ostringstream out;
  std::ostringstream err;
  const int code = Main(args, in, out, err, nullptr, env);
  if (code == want_code && err.str().find(want_err) != std::string::npos) return true;
  std::fprintf(stderr, "%s: exit %d (want %d), stderr: %s\n", args.back().c_str(), code, want_code, err.str().c_str());
  return false;
}

// The CLI does not link libxtables: a command that needs no extension (--version, a set command) never maps it, and
// the first one that looks an extension up loads it. Fails if the library is a dynamic dependency again, or if a
// lookup stops loading it. Runs in a child process (what it loads stays there); ctest runs each test in a process of
// its own, so only a run of the whole binary can have it loaded already.
TEST(CliXtablesDeathTest, LoadedOnlyByTheFirstCommandThatNeedsIt) {
  ASSERT_FALSE(g_libxtables_loaded_at_start) << "libxtables is a dynamic dependency of this program";
  if (LibxtablesLoaded()) GTEST_SKIP() << "an earlier test of this process loaded libxtables";
  EXPECT_EXIT(
      {
        bool ok = !LibxtablesLoaded() && Runs({"--version"}, kExitOk) && !LibxtablesLoaded() &&
                  Runs({"set", "add", "bl", "10.0.0.1", "bogus-option"}, kExitInvalid) && !LibxtablesLoaded() &&
                  Runs({"--backend", "fake", "append", "INPUT", "-m", "conntrack", "--ctstate", "NEW", "-j", "ACCEPT"},
                       kExitOk) &&
                  LibxtablesLoaded();
        std::_Exit(ok ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
}

// Without libxtables (a missing file) the commands that do not need it run: --version, and the rule parser takes
// an extension's options generically (as in a setuid process), so a fake-backend append of a conntrack rule works.
// (What needs the library fails naming the file: XtablesDeathTest in the native backend's tests.)
TEST(CliXtablesDeathTest, WithoutTheLibraryOtherCommandsRun) {
  if (LibxtablesLoaded()) GTEST_SKIP() << "an earlier test of this process loaded libxtables";
  EXPECT_EXIT(
      {
        dialect::SetXtablesLibPathForTesting("/nonexistent/libxtables.so.12");
        bool ok = Runs({"--version"}, kExitOk) &&
                  Runs({"--backend", "fake", "append", "INPUT", "-m", "conntrack", "--ctstate", "NEW", "-j", "ACCEPT"},
                       kExitOk) &&
                  !LibxtablesLoaded();
        std::_Exit(ok ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
}

}  // namespace
}  // namespace iptkit::cli
