// `iptkit set ...` end to end: the binary in a fresh network namespace per test, checked with the real `ipset`
// tool and iptables-nft. Root only (GTEST_SKIP otherwise).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <memory>
#include <nlohmann/json.hpp>

#include "tests/cli/process.h"

namespace iptkit::clitest {
namespace {

using ::testing::HasSubstr;

class CliSetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root (creates a network namespace)";
    if (FindTool("ipset").empty() || FindTool("iptables-nft").empty()) GTEST_SKIP() << "ipset/iptables-nft missing";
    ns_ = std::make_unique<TestNetns>();
    ASSERT_TRUE(ns_->ok());
  }
  ProcessResult Cli(std::vector<std::string> args, const std::string& stdin_text = "") {
    std::vector<std::string> argv = {IPTKIT_CLI_BIN, "--netns", ns_->name()};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunProcess(argv, stdin_text);
  }
  std::string IpsetSave() { return ns_->Exec({"ipset", "save"}).out; }
  std::unique_ptr<TestNetns> ns_;
};

TEST_F(CliSetTest, EveryCommandEndToEnd) {
  ProcessResult r = Cli({"set", "create", "bl", "hash:ip", "timeout", "0", "comment"});
  ASSERT_EQ(r.code, 0) << r.err;
  r = Cli({"set", "add", "bl", "192.0.2.1", "timeout", "600", "comment", "from ids"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(IpsetSave(), HasSubstr("add bl 192.0.2.1 timeout"));
  EXPECT_THAT(IpsetSave(), HasSubstr("comment \"from ids\""));
  EXPECT_EQ(Cli({"set", "test", "bl", "192.0.2.1"}).code, 0);
  EXPECT_EQ(Cli({"set", "test", "bl", "192.0.2.2"}).code, 1);
  r = Cli({"set", "add", "--no-refresh", "bl", "192.0.2.1"});
  EXPECT_EQ(r.code, 4) << r.err;
  r = Cli({"set", "add", "bl", "192.0.2.1", "timeout", "2147484"});
  EXPECT_EQ(r.code, 2) << r.err;

  // --dry-run changes nothing.
  r = Cli({"set", "del", "--dry-run", "bl", "192.0.2.1"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(Cli({"set", "test", "bl", "192.0.2.1"}).code, 0);
  r = Cli({"set", "create", "--dry-run", "other", "hash:net"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(IpsetSave(), ::testing::Not(HasSubstr("other")));

  // load from stdin, a bad line named, nothing changed.
  r = Cli({"set", "load", "bl", "-"}, "10.0.0.1\n10.0.0.2 timeout 5\n10.0.0.300\n");
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("line 3"));
  EXPECT_EQ(Cli({"set", "test", "bl", "10.0.0.1"}).code, 1);
  r = Cli({"--json", "set", "load", "bl", "-"}, "10.0.0.1\n10.0.0.2 timeout 5\n");
  ASSERT_EQ(r.code, 0) << r.err;
  auto doc = nlohmann::json::parse(r.out);
  EXPECT_EQ(doc["report"]["added"], 2);
  EXPECT_EQ(doc["report"]["entries_after"], 3);

  // sync: exactly these.
  r = Cli({"set", "sync", "bl", "-"}, "10.0.0.9\n");
  ASSERT_EQ(r.code, 0) << r.err;
  r = Cli({"--json", "set", "list", "bl"});
  ASSERT_EQ(r.code, 0) << r.err;
  doc = nlohmann::json::parse(r.out);
  ASSERT_EQ(doc["sets"].size(), 1u);
  EXPECT_EQ(doc["sets"][0]["entry_count"], 1);
  EXPECT_EQ(doc["sets"][0]["entries"][0]["entry"], "10.0.0.9");
  EXPECT_EQ(doc["sets"][0]["options"]["timeout"], 0);

  // flush, rename, swap.
  ASSERT_EQ(Cli({"set", "flush", "bl"}).code, 0);
  ASSERT_EQ(Cli({"set", "rename", "bl", "blocklist"}).code, 0);
  ASSERT_EQ(Cli({"set", "create", "new", "hash:ip", "timeout", "0"}).code, 0);
  ASSERT_EQ(Cli({"set", "add", "new", "192.0.2.50"}).code, 0);
  ASSERT_EQ(Cli({"set", "swap", "blocklist", "new"}).code, 0);
  EXPECT_EQ(Cli({"set", "test", "blocklist", "192.0.2.50"}).code, 0);
  EXPECT_EQ(Cli({"set", "list", "missing"}).code, 3);

  // destroy: refused while referenced, --cascade removes the rule first.
  ProcessResult rule =
      ns_->Exec({"iptables-nft", "-A", "INPUT", "-m", "set", "--match-set", "blocklist", "src", "-j", "DROP"});
  ASSERT_EQ(rule.code, 0) << rule.err;
  r = Cli({"set", "destroy", "blocklist"});
  EXPECT_EQ(r.code, 4);
  EXPECT_THAT(r.err, HasSubstr("--cascade"));
  r = Cli({"set", "destroy", "--cascade", "--dry-run", "blocklist"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("--match-set blocklist src -j DROP"));
  EXPECT_THAT(ns_->Exec({"iptables-nft", "-S", "INPUT"}).out, HasSubstr("blocklist"));
  r = Cli({"set", "destroy", "--cascade", "blocklist"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(ns_->Exec({"iptables-nft", "-S", "INPUT"}).out, ::testing::Not(HasSubstr("blocklist")));
  EXPECT_THAT(IpsetSave(), ::testing::Not(HasSubstr("blocklist")));
}

// `iptkit list` and `iptkit info` name the sets the rules use, with their type and size (text and --json); the -S
// form stays exactly iptables -S.
// A one-entry add, test or delete registers only the set's own type with libipset (src/ipset/session.cc), after the
// set's header: every type and family still parses its entries, and the errors are libipset's as with every type.
TEST_F(CliSetTest, AddTestDelOfEachTypeInProcessesOfTheirOwn) {
  struct Case {
    std::vector<std::string> create;  // ipset create NAME ...
    std::string entry;
    std::string wrong;  // an entry this set's type or family refuses
  };
  const std::vector<Case> cases = {
      {{"n4", "hash:net"}, "10.0.0.0/8", "2001:db8::1"},
      {{"n6", "hash:net", "family", "inet6"}, "2001:db8::/32", "192.0.2.1"},
      {{"ipp", "hash:ip,port"}, "192.0.2.1,tcp:80", "192.0.2.1,tcp:99999"},
      {{"ports", "bitmap:port", "range", "1-1000"}, "80", "2000"},
      {{"nets", "list:set"}, "n4", "nosuchset"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> create = {"ipset", "create"};
    create.insert(create.end(), c.create.begin(), c.create.end());
    ProcessResult made = ns_->Exec(create);
    ASSERT_EQ(made.code, 0) << made.err;
  }
  for (const Case& c : cases) {
    const std::string& set = c.create[0];
    SCOPED_TRACE(set);
    ProcessResult r = Cli({"set", "add", set, c.entry});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_THAT(IpsetSave(), HasSubstr("add " + set + " " + c.entry));
    EXPECT_EQ(Cli({"set", "test", set, c.entry}).code, 0);
    r = Cli({"set", "add", set, c.wrong});
    EXPECT_NE(r.code, 0);
    EXPECT_THAT(r.err, HasSubstr(c.wrong));
    EXPECT_THAT(IpsetSave(), ::testing::Not(HasSubstr("add " + set + " " + c.wrong)));
    r = Cli({"set", "del", set, c.entry});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(Cli({"set", "test", set, c.entry}).code, 1);
    r = Cli({"set", "del", set, c.entry});
    EXPECT_EQ(r.code, 3) << r.err;
  }
  for (const std::vector<std::string>& words : {std::vector<std::string>{"set", "add", "nosuch", "192.0.2.1"},
                                                {"set", "test", "nosuch", "192.0.2.1"},
                                                {"set", "del", "nosuch", "192.0.2.1"}}) {
    ProcessResult r = Cli(words);
    EXPECT_EQ(r.code, 3) << r.err;
    EXPECT_THAT(r.err, HasSubstr("does not exist"));
  }
}

TEST_F(CliSetTest, ListAndInfoShowTheSetsTheRulesUse) {
  ASSERT_EQ(Cli({"set", "create", "bl", "hash:ip"}).code, 0);
  ASSERT_EQ(Cli({"set", "add", "bl", "192.0.2.1"}).code, 0);
  ASSERT_EQ(ns_->Exec({"iptables-nft", "-A", "INPUT", "-m", "set", "--match-set", "bl", "src", "-j", "DROP"}).code, 0);
  ProcessResult r = Cli({"list", "INPUT"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("Sets used by these rules:\n  bl  hash:ip  1 entries  (ipv4 filter INPUT 1)\n"));
  r = Cli({"list", "-S", "INPUT"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, ::testing::Not(HasSubstr("Sets used")));
  r = Cli({"--json", "list"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto doc = nlohmann::json::parse(r.out);
  ASSERT_EQ(doc["sets"].size(), 1u) << r.out;
  EXPECT_EQ(doc["sets"][0]["name"], "bl");
  EXPECT_EQ(doc["sets"][0]["missing"], false);
  EXPECT_EQ(doc["sets"][0]["entry_count"], 1);
  EXPECT_EQ(doc["sets"][0]["used_by"][0]["chain"], "INPUT");
  r = Cli({"info"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("  bl  hash:ip  1 entries  (ipv4 filter INPUT 1)"));
  r = Cli({"--json", "info"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["sets"][0]["name"], "bl") << r.out;
}

TEST_F(CliSetTest, UsageErrorsAndHelp) {
  ProcessResult r = Cli({"set", "frob"});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("unknown set command 'frob'"));
  r = Cli({"set", "add", "bl"});
  EXPECT_EQ(r.code, 2);
  r = Cli({"set", "create", "bl", "hash:ip", "frob"});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("frob"));
  r = Cli({"set", "create", "bl", "bitmap:port", "maxelem", "5", "range", "1-10"});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("maxelem"));
  r = Cli({"set", "load", "--help"});
  EXPECT_EQ(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("--grow"));
}

TEST_F(CliSetTest, WithoutPrivilegesIsExit6) {
  // nobody: the kernel refuses every ipset command without CAP_NET_ADMIN (libipset reports EPERM).
  ProcessResult r = RunProcess({IPTKIT_CLI_BIN, "set", "list"}, "", RunOptions{.uid = 65534});
  EXPECT_EQ(r.code, 6) << r.err;
  EXPECT_THAT(r.err, HasSubstr("Operation not permitted"));
}

TEST_F(CliSetTest, LargeLoadShowsProgressAndRespectsTheCapacity) {
  ASSERT_EQ(Cli({"set", "create", "bl", "hash:ip", "maxelem", "1000"}).code, 0);
  std::string input;
  for (int i = 0; i < 2000; ++i) input += "10.1." + std::to_string(i / 256) + "." + std::to_string(i % 256) + "\n";
  ProcessResult r = Cli({"set", "load", "bl", "-"}, input);
  EXPECT_EQ(r.code, 4);
  EXPECT_THAT(r.err, HasSubstr("at most 1000"));
  r = Cli({"set", "load", "--grow", "bl", "-"}, input);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("entries checked"));
  EXPECT_THAT(r.out, HasSubstr("2000 entries"));
}

}  // namespace
}  // namespace iptkit::clitest
