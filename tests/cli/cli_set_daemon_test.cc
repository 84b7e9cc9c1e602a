// `iptkit --daemon SOCKET set ...` against a real iptkitd (tests/daemon/daemon_fixture.h) serving a private network
// namespace on a unix socket: every set command goes through the daemon's /v1/sets (checked with the real `ipset`
// tool and the daemon's audit log), with the daemon's errors and exit codes. Root only (skipped otherwise).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tests/cli/process.h"
#include "tests/daemon/daemon_fixture.h"
#include "tests/integration/test_util.h"

namespace iptkit::clitest {
namespace {

using daemontest::Daemon;
using ::testing::HasSubstr;
using ::testing::Not;

class CliSetDaemonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    IPTKIT_REQUIRE_ROOT();
    ASSERT_OK_AND_ASSIGN(ns_, integration::TestNetns::Create());
    daemontest::DaemonOptions options;
    options.listen = {"127.0.0.1:0"};
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
  std::string IpsetSave() { return ns_->Exec({"ipset", "save"}).out; }
  // The set changes iptkitd audited as done, oldest first.
  std::vector<std::string> AuditedActions() {
    daemontest::Reply r = daemon_->Admin().Get("/v1/audit?limit=1000");
    std::vector<std::string> out;
    for (const auto& e : r.json["entries"]) {
      const std::string action = e["action"];
      if (action.rfind("set_", 0) == 0 && e["result"] == "ok") out.insert(out.begin(), action);
    }
    return out;
  }

  std::unique_ptr<integration::TestNetns> ns_;
  std::unique_ptr<Daemon> daemon_;
  std::string socket_;
};

TEST_F(CliSetDaemonTest, EveryCommandThroughTheDaemon) {
  Ok({"set", "create", "bl", "hash:ip", "timeout", "0", "comment"});
  Ok({"set", "add", "bl", "192.0.2.1", "timeout", "600", "comment", "from ids"});
  EXPECT_THAT(IpsetSave(), HasSubstr("add bl 192.0.2.1 timeout"));
  EXPECT_THAT(IpsetSave(), HasSubstr("comment \"from ids\""));
  EXPECT_EQ(Cli({"set", "test", "bl", "192.0.2.1"}).code, 0);
  EXPECT_EQ(Cli({"set", "test", "bl", "192.0.2.2"}).code, 1);
  ProcessResult r = Cli({"set", "add", "--no-refresh", "bl", "192.0.2.1"});
  EXPECT_EQ(r.code, 4) << r.err;
  EXPECT_THAT(r.err, HasSubstr("iptkitd: "));
  r = Cli({"set", "add", "nosuch", "192.0.2.1"});
  EXPECT_EQ(r.code, 3) << r.err;

  // --dry-run changes nothing.
  Ok({"set", "del", "--dry-run", "bl", "192.0.2.1"});
  EXPECT_EQ(Cli({"set", "test", "bl", "192.0.2.1"}).code, 0);
  Ok({"set", "create", "--dry-run", "other", "hash:net"});
  EXPECT_THAT(IpsetSave(), Not(HasSubstr("other")));

  // load from stdin: a bad line is named with its line, nothing changes; then a good load.
  r = Cli({"set", "load", "bl", "-"}, "10.0.0.1\n10.0.0.2 timeout 5\n10.0.0.300\n");
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_THAT(r.err, HasSubstr("line 3"));
  EXPECT_EQ(Cli({"set", "test", "bl", "10.0.0.1"}).code, 1);
  r = Ok({"--json", "set", "load", "bl", "-"}, "10.0.0.1\n10.0.0.2 timeout 5\n");
  auto doc = nlohmann::json::parse(r.out);
  EXPECT_EQ(doc["report"]["added"], 2) << r.out;
  EXPECT_EQ(Cli({"set", "test", "bl", "10.0.0.1"}).code, 0);

  // sync (minimal difference), list (text and JSON).
  Ok({"set", "sync", "--diff", "bl", "-"}, "10.0.0.1\n10.0.0.9\n");
  r = Ok({"set", "list", "bl"});
  EXPECT_THAT(r.out, HasSubstr("Name: bl\nType: hash:ip\n"));
  EXPECT_THAT(r.out, HasSubstr("10.0.0.9"));
  EXPECT_THAT(r.out, Not(HasSubstr("192.0.2.1")));
  doc = nlohmann::json::parse(Ok({"--json", "set", "list", "--terse"}).out);
  ASSERT_EQ(doc["sets"].size(), 1u) << doc.dump();
  EXPECT_EQ(doc["sets"][0]["entry_count"], 2);

  // swap, rename, flush, destroy (a referenced one only with --cascade, through the daemon's rule writer).
  Ok({"set", "create", "b2", "hash:ip", "timeout", "0"});
  Ok({"set", "swap", "bl", "b2"});
  EXPECT_EQ(Cli({"set", "test", "b2", "10.0.0.9"}).code, 0);
  Ok({"set", "rename", "b2", "b3"});
  Ok({"set", "flush", "b3"});
  EXPECT_THAT(IpsetSave(), Not(HasSubstr("add b3 ")));
  Ok({"append", "INPUT", "-m", "set", "--match-set", "b3", "src", "-j", "DROP"});
  r = Cli({"set", "destroy", "b3"});
  EXPECT_EQ(r.code, 4) << r.err;  // failed precondition: referenced
  EXPECT_THAT(r.err, HasSubstr("in use"));
  r = Ok({"-v", "set", "destroy", "--cascade", "b3"});
  EXPECT_THAT(r.out, HasSubstr("delete rule: -t filter -D INPUT -m set --match-set b3 src -j DROP"));
  EXPECT_THAT(IpsetSave(), Not(HasSubstr("create b3 ")));  // not just "b3": a random initval may hold those letters
  Ok({"set", "destroy", "bl"});

  // Everything went through iptkitd: its audit log has each change (the cascade's rule deletes as a transaction of
  // their own, set_destroy_cascade).
  EXPECT_EQ(AuditedActions(),
            (std::vector<std::string>{"set_create", "set_add", "set_load", "set_sync", "set_create", "set_swap",
                                      "set_rename", "set_flush", "set_destroy_cascade", "set_destroy", "set_destroy"}));
}

// A large load through the daemon shows the daemon's progress (its set_progress events): plain lines when stderr is
// not a terminal, as a local load; nothing with -q.
TEST_F(CliSetDaemonTest, LargeLoadShowsTheDaemonsProgress) {
  Ok({"set", "create", "big", "hash:ip", "maxelem", "65536"});
  std::string input;
  for (int i = 0; i < 20000; ++i) input += "10.2." + std::to_string(i / 256) + "." + std::to_string(i % 256) + "\n";
  ProcessResult r = Ok({"set", "load", "big", "-"}, input);
  EXPECT_THAT(r.err, HasSubstr("set load big: 20000 entries checked\n")) << r.err;
  EXPECT_THAT(r.err, HasSubstr("set load big: written, swapped in\n")) << r.err;
  EXPECT_THAT(r.err, HasSubstr("set load big: done\n")) << r.err;
  EXPECT_THAT(r.out, HasSubstr("20000 entries"));
  r = Ok({"-q", "set", "sync", "big", "-"}, input);
  EXPECT_EQ(r.err, "");
}

}  // namespace
}  // namespace iptkit::clitest
