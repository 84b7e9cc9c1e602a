#include "src/base/subprocess.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "src/base/netns.h"

namespace iptkit::base {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    out.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

TEST(SubprocessTest, ReportsExitCodes) {
  auto ok = RunSubprocess(Cmd("/bin/true"));
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->exit_code, 0);
  auto fail = RunSubprocess(Cmd("/bin/sh", {"sh", "-c", "exit 42"}));
  ASSERT_TRUE(fail.ok()) << fail.status().ToString();
  EXPECT_EQ(fail->exit_code, 42);
  EXPECT_EQ(fail->term_signal, 0);
}

TEST(SubprocessTest, ReportsDeathBySignal) {
  auto r = RunSubprocess(Cmd("/bin/sh", {"sh", "-c", "kill -TERM $$"}));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->term_signal, SIGTERM);
  EXPECT_EQ(r->exit_code, 128 + SIGTERM);
}

TEST(SubprocessTest, PassesStdinAndSeparatesStdoutFromStderr) {
  auto r = RunSubprocess(
      Cmd("/bin/sh", {"sh", "-c", "read line; echo \"out:$line\"; echo \"err:$line\" >&2"}).Stdin("hello world\n"));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->stdout_text, "out:hello world\n");
  EXPECT_EQ(r->stderr_text, "err:hello world\n");
}

TEST(SubprocessTest, ArgumentsAreNotInterpretedByAShell) {
  auto r = RunSubprocess(Cmd("/bin/echo", {"echo", "$HOME", "a;b", "`id`"}));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->stdout_text, "$HOME a;b `id`\n");
}

TEST(SubprocessTest, MovesLargeDataBothWaysWithoutDeadlock) {
  // 8 MiB through cat: both pipes fill up long before the end, so this hangs unless the parent writes and
  // reads at the same time.
  std::string big;
  big.reserve(8 << 20);
  for (int i = 0; big.size() < (8u << 20); ++i) big += "-A INPUT -s 10.0.0." + std::to_string(i % 250) + " -j ACCEPT\n";
  auto r = RunSubprocess(Cmd("/bin/cat").Stdin(big));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->exit_code, 0);
  EXPECT_EQ(r->stdout_text.size(), big.size());
  EXPECT_TRUE(r->stdout_text == big);

  auto err = RunSubprocess(Cmd("/bin/sh", {"sh", "-c", "cat >&2"}).Stdin(big));
  ASSERT_TRUE(err.ok()) << err.status().ToString();
  EXPECT_TRUE(err->stderr_text == big);
}

TEST(SubprocessTest, ChildThatIgnoresStdinDoesNotKillTheCaller) {
  std::string big(4 << 20, 'x');
  auto r = RunSubprocess(Cmd("/bin/true").Stdin(big));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->exit_code, 0);
}

TEST(SubprocessTest, TimeoutKillsTheProcessGroupAndIsUnavailable) {
  auto start = std::chrono::steady_clock::now();
  // The grandchild sleep holds stdout too: the whole group must die, or this waits 30 s.
  auto r = RunSubprocess(Cmd("/bin/sh", {"sh", "-c", "sleep 30 & sleep 30"}).Timeout(std::chrono::milliseconds(300)));
  auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_THAT(r.status().message(), HasSubstr("timed out after 300 ms"));
  EXPECT_LT(elapsed, std::chrono::seconds(3));  // the whole group died, not only the shell (else 30 s)
}

// A caller killed with SIGKILL takes its child along (a daemon killed with -9 must not leave an iptables-restore
// that commits after its next instance started).
TEST(SubprocessTest, ChildDiesWithAKilledCaller) {
  char dir_template[] = "/tmp/iptkit-pdeath-XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  const std::string pid_file = std::string(dir_template) + "/pid";
  pid_t caller = fork();
  ASSERT_GE(caller, 0);
  if (caller == 0) {
    (void)RunSubprocess(Cmd("/bin/sh", {"sh", "-c", "echo $$ > " + pid_file + "; exec sleep 30"}));
    _exit(0);
  }
  pid_t child = 0;
  for (int i = 0; i < 200 && child == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    FILE* f = std::fopen(pid_file.c_str(), "r");
    if (f != nullptr) {
      if (std::fscanf(f, "%d", &child) != 1) child = 0;
      std::fclose(f);
    }
  }
  ASSERT_GT(child, 0) << "the child did not start";
  ASSERT_EQ(::kill(child, 0), 0);
  ::kill(caller, SIGKILL);
  ::waitpid(caller, nullptr, 0);
  bool gone = false;
  for (int i = 0; i < 200 && !gone; ++i) {
    // The child is reparented (to init or a subreaper) and reaped there; until then kill(0) still succeeds on a
    // zombie, so look at its state.
    std::string stat_path = "/proc/" + std::to_string(child) + "/stat";
    FILE* f = std::fopen(stat_path.c_str(), "r");
    if (f == nullptr) {
      gone = true;
      break;
    }
    int pid = 0;
    char comm[256] = "", state = 0;
    if (std::fscanf(f, "%d %255s %c", &pid, comm, &state) == 3 && state == 'Z') gone = true;
    std::fclose(f);
    if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(gone) << "pid " << child << " outlived its killed caller";
  if (!gone) ::kill(child, SIGKILL);
  std::remove(pid_file.c_str());
  rmdir(dir_template);
}

TEST(SubprocessTest, EnvironmentIsFixedAndMinimal) {
  ASSERT_EQ(::setenv("XTABLES_LIBDIR", "/tmp/evil", 1), 0);
  ASSERT_EQ(::setenv("LD_PRELOAD", "/tmp/evil.so", 1), 0);
  auto r = RunSubprocess(Cmd("/usr/bin/env").Env({{"XTABLES_LOCKFILE", "/tmp/x.lock"}}));
  ::unsetenv("XTABLES_LIBDIR");
  ::unsetenv("LD_PRELOAD");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_THAT(Lines(r->stdout_text),
              UnorderedElementsAre("PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", "XTABLES_LOCKFILE=/tmp/x.lock"));
}

TEST(SubprocessTest, ExtraEnvOverridesFixedVariables) {
  auto r = RunSubprocess(Cmd("/usr/bin/env").Env({{"LC_ALL", "C.UTF-8"}}));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_THAT(Lines(r->stdout_text), UnorderedElementsAre("PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C.UTF-8"));
  auto bad = RunSubprocess(Cmd("/usr/bin/env").Env({{"A=B", "x"}}));
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
}

TEST(SubprocessTest, OnlyStdioIsInherited) {
  int fd = ::dup(1);  // not close-on-exec: must still not reach the child
  ASSERT_GE(fd, 0);
  auto r = RunSubprocess(Cmd("/bin/ls", {"ls", "/proc/self/fd"}));
  ::close(fd);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  // 0, 1, 2 and the directory ls itself has open to read /proc/self/fd.
  EXPECT_THAT(Lines(r->stdout_text), ElementsAre("0", "1", "2", "3"));
}

TEST(SubprocessTest, RefusesRelativePathsAndReportsMissingPrograms) {
  EXPECT_EQ(RunSubprocess(Cmd("true")).status().code(), StatusCode::kInvalidArgument);
  auto missing = RunSubprocess(Cmd("/nonexistent/iptkit-no-such-program"));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(missing.status().details().reason, "tool_missing");
  EXPECT_THAT(missing.status().message(), HasSubstr("cannot run /nonexistent/iptkit-no-such-program"));
}

TEST(SubprocessTest, DescribeCommandQuotesWhereNeeded) {
  EXPECT_EQ(DescribeCommand(Cmd("/usr/sbin/iptables-nft-save", {"x", "-t", "filter"})),
            "/usr/sbin/iptables-nft-save -t filter");
  EXPECT_EQ(DescribeCommand(Cmd("/bin/echo", {"echo", "a b", "", "q\""})), "/bin/echo \"a b\" \"\" \"q\\\"\"");
}

TEST(SubprocessTest, ChildRunsWithRealUidSetToEffectiveUid) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to fake a setuid caller";
  // A forked copy of the test plays the setuid program: real uid 65534, effective uid 0.
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (::setresuid(65534, 0, 0) != 0) ::_exit(10);
    if (::getuid() == ::geteuid()) ::_exit(11);
    auto r = RunSubprocess(Cmd("/usr/bin/id", {"id", "-ru"}));
    if (!r.ok()) ::_exit(12);
    ::_exit(r->stdout_text == "0\n" ? 0 : 13);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(SubprocessTest, EntersTheGivenNetworkNamespace) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root for a network namespace";
  auto scratch = ScratchNetns::Create();
  ASSERT_TRUE(scratch.ok()) << scratch.status().ToString();
  auto own = RunSubprocess(Cmd("/bin/readlink", {"readlink", "/proc/self/ns/net"}));
  auto inside = RunSubprocess(Cmd("/bin/readlink", {"readlink", "/proc/self/ns/net"}).Netns(scratch->fd()));
  ASSERT_TRUE(own.ok() && inside.ok());
  auto id = GetNetnsId(scratch->fd());
  ASSERT_TRUE(id.ok());
  EXPECT_NE(own->stdout_text, inside->stdout_text);
  EXPECT_EQ(inside->stdout_text, "net:[" + std::to_string(id->ino) + "]\n");
}

TEST(SubprocessTest, BadNetnsFdIsReported) {
  auto r = RunSubprocess(Cmd("/bin/true").Netns(0));  // stdin is not a namespace
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("setns(CLONE_NEWNET)"));
}

}  // namespace
}  // namespace iptkit::base
