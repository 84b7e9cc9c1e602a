// iptkitd's state directory end to end (issue 8, items 7 and 9): one daemon per directory, a directory removed or
// replaced while the daemon runs, and permissions that would let other users read or replace the database.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "tests/daemon/daemon_fixture.h"
#include "tests/integration/test_util.h"

namespace iptkit::daemontest {
namespace {

// The arguments Daemon::Launch would give, for running a second daemon (or one expected to refuse) to completion.
std::vector<std::string> DaemonArgs(const Daemon& d) {
  return {"--netns", d.netns(), "--state-dir", d.state_dir(), "--backend", "nft", "--listen", "127.0.0.1:0"};
}

// Regression (issue 8, item 7): a second daemon on the same state directory started and raced the first.
TEST(DaemonStateDir, SecondDaemonOnTheSameStateDirExitsNamingTheFirst) {
  IPTKIT_NEW_NETNS(ns);
  ASSERT_OK_AND_ASSIGN(auto first, Daemon::Start(*ns));
  CommandResult second = Daemon::RunBinary(DaemonArgs(*first), std::chrono::seconds(20));
  EXPECT_NE(second.exit_code, 0) << second.Describe();
  const std::string said = second.out + second.err;
  EXPECT_NE(said.find("in use by another iptkitd (pid " + std::to_string(first->pid())), std::string::npos) << said;
  EXPECT_NE(said.find(first->state_dir()), std::string::npos) << said;
  // The first one is unharmed, and once it is gone the directory is free again.
  HttpClient admin = first->Admin();
  EXPECT_EQ(admin.Post(RulesPath("INPUT"), R"({"spec": "-s 192.0.2.1 -j DROP"})").status, 200);
  admin.Disconnect();
  ASSERT_STATUS_OK(first->Stop());
  ASSERT_STATUS_OK(first->Launch());
}

// Regression (issue 8, item 7): deleting the state directory while the daemon ran went unnoticed: writes answered
// 200 (into an unlinked database) and the next start had an empty store.
TEST(DaemonStateDir, RemovedOrReplacedStateDirStopsWritesAndShowsInHealth) {
  IPTKIT_NEW_NETNS(ns);
  ASSERT_OK_AND_ASSIGN(auto daemon, Daemon::Start(*ns));
  HttpClient admin = daemon->Admin();
  const std::string rules = RulesPath("INPUT");
  ASSERT_EQ(admin.Post(rules, R"({"spec": "-s 192.0.2.1 -j DROP"})").status, 200);
  ASSERT_EQ(daemon->Client("").Get("/healthz").status, 200);
  const std::string before = SaveText(*ns);

  std::filesystem::remove_all(daemon->state_dir());
  Reply refused = admin.Post(rules, R"({"spec": "-s 192.0.2.2 -j DROP"})");
  ExpectError(refused, 503, "unavailable");
  EXPECT_NE(refused.body.find("the state directory " + daemon->state_dir() + " was removed"), std::string::npos)
      << refused.body;
  ExpectError(admin.Put("/v1/owners/app", R"({"chains": []})"), 503, "unavailable");
  ExpectError(admin.Post(rules, R"({"spec": "-s 192.0.2.3 -j DROP", "owner": "x", "ttl": 60})"), 503, "unavailable");
  EXPECT_EQ(SaveText(*ns), before) << "a change that cannot be stored was committed";
  Reply health = daemon->Client("").Get("/healthz");
  EXPECT_EQ(health.status, 503) << health.Describe();
  EXPECT_EQ(health.json["status"], "unhealthy") << health.body;
  EXPECT_NE(health.body.find("was removed"), std::string::npos) << health.body;
  // Reads go on; the log says it loudly.
  EXPECT_EQ(admin.Get("/v1/ipv4").status, 200);
  EXPECT_TRUE(WaitUntil([&] { return daemon->Log().find("STORE PROBLEM: the state directory") != std::string::npos; },
                        std::chrono::seconds(5)))
      << daemon->Log();

  // Made again (empty): it is not the directory the daemon opened.
  ASSERT_TRUE(std::filesystem::create_directory(daemon->state_dir()));
  ::chmod(daemon->state_dir().c_str(), 0700);
  Reply replaced = admin.Post(rules, R"({"spec": "-s 192.0.2.4 -j DROP"})");
  ExpectError(replaced, 503, "unavailable");
  EXPECT_NE(replaced.body.find("was replaced"), std::string::npos) << replaced.body;
  EXPECT_EQ(daemon->Client("").Get("/healthz").status, 503);
  EXPECT_EQ(SaveText(*ns), before);
  admin.Disconnect();
}

// Regression (issue 8, item 9): a pre-existing world-readable database or a 0777 state directory was accepted.
TEST(DaemonStateDir, OpenModesAreRefusedNamingTheModeAndTheFix) {
  IPTKIT_NEW_NETNS(ns);
  ASSERT_OK_AND_ASSIGN(auto daemon, Daemon::Create(*ns));  // the state directory and its database, not running
  const std::string dir = daemon->state_dir();
  const std::string db = dir + "/iptkitd.db";

  ASSERT_EQ(::chmod(dir.c_str(), 0777), 0);
  CommandResult r = Daemon::RunBinary(DaemonArgs(*daemon), std::chrono::seconds(20));
  EXPECT_NE(r.exit_code, 0) << r.Describe();
  EXPECT_NE((r.out + r.err).find("state directory " + dir + " has mode 0777"), std::string::npos) << r.Describe();
  EXPECT_NE((r.out + r.err).find("chmod 700 " + dir), std::string::npos) << r.Describe();
  // The token command checks the same.
  CommandResult token = Daemon::RunBinary({"token", "list", "--state-dir", dir});
  EXPECT_NE(token.exit_code, 0) << token.Describe();
  EXPECT_NE(token.err.find("mode 0777"), std::string::npos) << token.Describe();

  ASSERT_EQ(::chmod(dir.c_str(), 0700), 0);
  ASSERT_EQ(::chmod(db.c_str(), 0644), 0);
  r = Daemon::RunBinary(DaemonArgs(*daemon), std::chrono::seconds(20));
  EXPECT_NE(r.exit_code, 0) << r.Describe();
  EXPECT_NE((r.out + r.err).find(db + " has mode 0644"), std::string::npos) << r.Describe();
  EXPECT_NE((r.out + r.err).find("chmod 600 " + db), std::string::npos) << r.Describe();

  // Fixed: it starts.
  ASSERT_EQ(::chmod(db.c_str(), 0600), 0);
  ASSERT_STATUS_OK(daemon->Launch());
}

}  // namespace
}  // namespace iptkit::daemontest
