// iptkit --daemon SOCKET against a real iptkitd (tests/daemon/daemon_fixture.h) serving a private network namespace
// on a unix socket, on both iptables variants: owned and TTL rules from the command line, the listing with TTLs,
// deletes with and without the owner, --unique, check, chain ops, apply/plan, and the errors iptkitd answers.
// Root only (skipped otherwise).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include "tests/cli/process.h"
#include "tests/daemon/daemon_fixture.h"
#include "tests/integration/test_util.h"

namespace iptkit::clitest {
namespace {

using daemontest::Daemon;
using integration::Variant;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using ::testing::Not;
using ::testing::StartsWith;

class CliDaemonTest : public ::testing::TestWithParam<Variant> {
 protected:
  void SetUp() override {
    IPTKIT_REQUIRE_ROOT();
    ASSERT_OK_AND_ASSIGN(ns_, integration::TestNetns::Create());
    daemontest::DaemonOptions options;
    options.backend = std::string(integration::VariantName(GetParam()));
    options.listen = {};
    ASSERT_OK_AND_ASSIGN(daemon_, Daemon::Create(*ns_, options));
    socket_ = daemon_->dir() + "/iptkitd.sock";
    daemon_->options().args = {"--socket", socket_, "--socket-allow", "uid:0"};
    ASSERT_STATUS_OK(daemon_->Launch());
  }

  ProcessResult Cli(std::vector<std::string> args, const std::string& stdin_text = "") {
    std::vector<std::string> argv = {IPTKIT_CLI_BIN, "--daemon", socket_};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunProcess(argv, stdin_text);
  }
  ProcessResult Ok(std::vector<std::string> args, const std::string& stdin_text = "") {
    ProcessResult r = Cli(args, stdin_text);
    EXPECT_EQ(r.code, 0) << ::testing::PrintToString(args) << "\nstderr: " << r.err;
    return r;
  }
  std::string Save(Family family = Family::kIPv4, const std::string& table = "filter") {
    return daemontest::SaveText(*ns_, family, GetParam(), table);
  }

  std::unique_ptr<integration::TestNetns> ns_;
  std::unique_ptr<Daemon> daemon_;
  std::string socket_;
};

TEST_P(CliDaemonTest, OwnedRulesWithTtlFromTheCommandLine) {
  Ok({"append", "--owner", "web", "--ttl", "10m", "INPUT", "-s", "192.0.2.7", "-j", "DROP"});
  EXPECT_THAT(Save(), HasSubstr("-A INPUT -s 192.0.2.7/32 -m comment --comment \"iptkit:web:"));
  Ok({"-6", "insert", "--owner", "web", "--ttl", "1d", "INPUT", "1", "-s", "2001:db8::7", "-j", "DROP"});
  EXPECT_THAT(Save(Family::kIPv6), HasSubstr("-A INPUT -s 2001:db8::7/128 -m comment --comment \"iptkit:web:"));

  // The listing shows the TTL iptkitd keeps; --owner filters; JSON carries iptkitd's own members.
  ProcessResult list = Ok({"list", "-v", "--line-numbers", "INPUT"});
  EXPECT_THAT(list.out, MatchesRegex("(.|\n)*/\\* iptkit:web:[a-z0-9]+ \\*/ \\[ttl (59[0-9]|600)s\\]\n(.|\n)*"))
      << list.out;
  ProcessResult v6 = Ok({"-6", "list", "INPUT"});
  EXPECT_THAT(v6.out, MatchesRegex("(.|\n)*\\[ttl 86[34][0-9][0-9]s\\]\n(.|\n)*")) << v6.out;
  auto doc = nlohmann::json::parse(Ok({"--json", "list", "--owner", "web"}).out);
  ASSERT_EQ(doc["tables"].size(), 1u) << doc.dump();
  const auto& rule = doc["tables"][0]["chains"][0]["rules"][0];
  EXPECT_EQ(rule["owner"], "web");
  EXPECT_EQ(rule["managed"], true);
  EXPECT_TRUE(rule["ttl_remaining"].is_number());
  EXPECT_EQ(Ok({"list", "--owner", "nobody"}).out, "");

  // Adding it again is the same add (iptkitd refreshes it): still one rule.
  Ok({"append", "--owner", "web", "--ttl", "10m", "INPUT", "-s", "192.0.2.7/32", "-j", "DROP"});
  EXPECT_EQ(daemontest::TaggedLines(Save(), "web").size(), 1u) << Save();

  // Without the owner the rule is not deleted, and the message says whose it is.
  const std::string before = Save();
  ProcessResult anonymous = Cli({"delete", "INPUT", "-s", "192.0.2.7", "-j", "DROP"});
  EXPECT_EQ(anonymous.code, 4) << anonymous.err;
  EXPECT_THAT(anonymous.err, StartsWith("iptkit: the rule is owned by 'web': rule 1 of filter INPUT carries the "
                                        "owner tag iptkit:web:"));
  EXPECT_THAT(anonymous.err, HasSubstr("give --owner web to delete it"));
  EXPECT_EQ(Save(), before);
  Ok({"delete", "--owner", "web", "INPUT", "-s", "192.0.2.7", "-j", "DROP"});
  EXPECT_THAT(Save(), Not(HasSubstr("192.0.2.7")));
  // An owned rule goes first or last.
  ProcessResult middle = Cli({"insert", "--owner", "web", "INPUT", "2", "-j", "DROP"});
  EXPECT_EQ(middle.code, 2) << middle.err;
  EXPECT_THAT(middle.err, HasSubstr("insert --owner takes N = 1"));
}

TEST_P(CliDaemonTest, TtlRuleIsRemovedWhenItsTimeIsUp) {
  Ok({"append", "--ttl", "2", "INPUT", "-s", "192.0.2.8", "-j", "DROP"});
  EXPECT_THAT(Save(), HasSubstr("192.0.2.8"));
  // Liveness with a generous bound: the daemon removes it after 2 s.
  EXPECT_TRUE(
      daemontest::WaitUntil([&] { return Save().find("192.0.2.8") == std::string::npos; }, std::chrono::seconds(20)))
      << Save();
}

TEST_P(CliDaemonTest, UnownedChangesChecksAndChains) {
  Ok({"append", "--unique", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"});
  Ok({"append", "--unique", "INPUT", "-p", "tcp", "-m", "tcp", "--dport", "22", "-j", "ACCEPT"});
  EXPECT_THAT(Ok({"-v", "append", "--unique", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"}).out,
              HasSubstr("nothing to add"));
  EXPECT_EQ(Save(),
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
            "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\nCOMMIT\n");
  EXPECT_EQ(Cli({"check", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"}).code, 0);
  EXPECT_EQ(Cli({"check", "INPUT", "-p", "tcp", "--dport", "23", "-j", "ACCEPT"}).code, 1);
  EXPECT_EQ(Cli({"check", "NOSUCH", "-j", "ACCEPT"}).code, 3);

  // Dry run: the exact text, nothing changed.
  ProcessResult dry = Ok({"-t", "nat", "chain", "create", "--dry-run", "CLI-NAT"});
  EXPECT_EQ(dry.out, "*nat\n-N CLI-NAT\nCOMMIT\n");
  EXPECT_THAT(Save(Family::kIPv4, "nat"), Not(HasSubstr("CLI-NAT")));
  Ok({"-t", "nat", "chain", "create", "CLI-NAT"});
  Ok({"-t", "nat", "append", "CLI-NAT", "-j", "RETURN"});
  EXPECT_THAT(Ok({"save", "-t", "nat"}).out, HasSubstr(":CLI-NAT - [0:0]\n-A CLI-NAT -j RETURN\n"));
  EXPECT_EQ(Cli({"-t", "nat", "chain", "create", "CLI-NAT"}).code, 4);  // already_exists
  Ok({"replace", "INPUT", "1", "-j", "DROP", "--expect", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"});
  EXPECT_EQ(Cli({"delete", "INPUT", "1", "--expect", "-j", "ACCEPT"}).code, 4);
  Ok({"delete", "INPUT", "1"});
  EXPECT_EQ(Cli({"delete", "INPUT", "1"}).code, 3);
  Ok({"chain", "policy", "FORWARD", "DROP"});
  EXPECT_THAT(Save(), HasSubstr(":FORWARD DROP"));

  // iptkitd's errors keep their code, and the listing works as locally.
  ProcessResult missing = Cli({"append", "NOSUCH", "-j", "ACCEPT"});
  EXPECT_EQ(missing.code, 3) << missing.err;
  EXPECT_THAT(missing.err, StartsWith("iptkit: iptkitd: "));
  EXPECT_THAT(Ok({"-t", "nat", "list", "-S"}).out, HasSubstr("-P PREROUTING ACCEPT\n"));
  EXPECT_THAT(Ok({"info"}).out, HasSubstr("backend: " + std::string(integration::VariantName(GetParam()))));
}

TEST_P(CliDaemonTest, ApplyPlanTxnAndWhatIsRefused) {
  const std::string doc = R"({"owner":"app","family":"ipv4",
      "chains":[{"table":"filter","name":"APP-IN","rules":[{"spec":"-s 192.0.2.1 -j ACCEPT"}]}],
      "hooks":[{"table":"filter","chain":"INPUT","position":"first","spec":"-j APP-IN"}]})";
  EXPECT_THAT(Ok({"plan", "-"}, doc).out, HasSubstr("create chain filter APP-IN"));
  EXPECT_THAT(Save(), Not(HasSubstr("APP-IN")));
  Ok({"apply", "-"}, doc);
  EXPECT_THAT(Save(), HasSubstr("-A INPUT -m comment --comment \"iptkit:app:"));
  EXPECT_EQ(Ok({"plan", "-"}, doc).out, "no changes\n");
  Ok({"txn", "-"},
     R"({"ops":[{"create_chain":{"chain":"TXN"}},{"append":{"chain":"TXN","rule":{"spec":"-j RETURN"}}}]})");
  EXPECT_THAT(Save(), HasSubstr("-A TXN -j RETURN\n"));

  ProcessResult restore = Cli({"restore", "-"}, "*filter\nCOMMIT\n");
  EXPECT_EQ(restore.code, 2);
  EXPECT_THAT(restore.err, HasSubstr("restore is not available through iptkitd"));
  ProcessResult no_owner = Cli({"apply", "-"}, R"({"family":"ipv4","chains":[]})");
  EXPECT_EQ(no_owner.code, 2);
  EXPECT_THAT(no_owner.err, HasSubstr("/owner"));
}

// --netns goes along with every request: iptkitd serves one namespace and refuses another.
TEST_P(CliDaemonTest, NetnsIsCheckedByTheDaemon) {
  Ok({"--netns", ns_->name(), "append", "INPUT", "-s", "192.0.2.30", "-j", "DROP"});
  EXPECT_THAT(Save(), HasSubstr("192.0.2.30"));
  EXPECT_THAT(Ok({"--netns", ns_->name(), "list", "-S"}).out, HasSubstr("192.0.2.30"));
  ProcessResult other = Cli({"--netns", "some-other-ns", "list"});
  EXPECT_EQ(other.code, 2) << other.err;
  EXPECT_THAT(other.err, HasSubstr("some-other-ns"));
  ProcessResult backend = Cli({"--backend", "legacy", "list"});
  EXPECT_EQ(backend.code, 2);
  EXPECT_THAT(backend.err, HasSubstr("--backend does not apply with --daemon"));
}

TEST_P(CliDaemonTest, UnreachableDaemonIsExit5) {
  ProcessResult r = RunProcess({IPTKIT_CLI_BIN, "--daemon", daemon_->dir() + "/nosuch.sock", "list"});
  EXPECT_EQ(r.code, 5) << r.err;
  EXPECT_THAT(r.err, StartsWith("iptkit: cannot reach iptkitd at " + daemon_->dir() + "/nosuch.sock"));
}

// A user the daemon does not allow on its socket gets iptkitd's 403 as exit 6.
TEST_P(CliDaemonTest, SocketPeerNotAllowedIsExit6) {
  ASSERT_EQ(chmod(socket_.c_str(), 0666), 0);
  ASSERT_EQ(chmod(daemon_->dir().c_str(), 0755), 0);
  RunOptions nobody;
  nobody.uid = 65534;
  ProcessResult r = RunProcess({IPTKIT_CLI_BIN, "--daemon", socket_, "list"}, "", nobody);
  EXPECT_EQ(r.code, 6) << r.err;
  EXPECT_THAT(r.err, StartsWith("iptkit: iptkitd: "));
}

INSTANTIATE_TEST_SUITE_P(Variants, CliDaemonTest, ::testing::Values(Variant::kNft, Variant::kLegacy),
                         [](const ::testing::TestParamInfo<Variant>& info) {
                           return std::string(integration::VariantName(info.param));
                         });

}  // namespace
}  // namespace iptkit::clitest
