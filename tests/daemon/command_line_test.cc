// iptkitd's command line end to end (issue 8, item 9; issue 9, item 5): flags go through the configuration file's
// checks, the ready file is never written through a symlink, SIGTERM stops the daemon promptly, and every flag of
// `iptkitd --help` is documented in docs/daemon-config.md (and every documented flag exists).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "tests/daemon/daemon_fixture.h"
#include "tests/integration/test_util.h"

namespace iptkit::daemontest {
namespace {

using Clock = std::chrono::steady_clock;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// Regression (issue 8, item 9): command-line flags skipped the configuration file's checks: --rate-burst 0 made
// every request 429 and --log-level bogus disabled logging. Each bad value is refused with the flag named, for
// the same reason as the same value in the file.
TEST(DaemonCommandLine, FlagsAreCheckedLikeTheConfigFile) {
  char tmpl[] = "/tmp/iptkitd-flags-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  struct Case {
    std::string key, value, reason;
  } cases[] = {
      {"rate_burst", "0", "expected a number >= 1"},
      {"log_level", "bogus", "expected one of trace|debug|info|warn|error|off"},
      {"rate_limit", "-1", "expected a number >= 0"},
      {"max_ops", "0", "expected a positive integer"},
      {"max_connections", "lots", "expected a positive integer"},
      {"max_batch", "0", "expected a positive integer"},
      {"group_wait", "2s", "at most 1s"},
      {"drift_interval", "0", "greater than 0"},
      {"default_owner", "Bad", "[a-z0-9-]"},
      {"socket_mode", "999", "expected an octal mode"},
      {"backend", "iptables", "expected one of auto|nft|legacy|fake"},
      {"listen", "example.com:80", "host names other than localhost are not resolved"},
      {"socket_allow", "root", "expected uid:N or gid:N"},
      {"audit_max_age", "forever", "expected a duration"},
      {"audit_body_bytes", "10", "expected an integer >= 256"},
      {"audit_page_bytes", "1000", "expected an integer >= 65536"},
  };
  for (const Case& c : cases) {
    std::string flag = "--" + c.key;
    std::replace(flag.begin(), flag.end(), '_', '-');
    // The flag: refused before anything starts, naming the flag, the value and the reason.
    // (--backend fake: were a bad value ever accepted, the daemon would serve an in-memory firewall, not the host's.)
    std::vector<std::string> args = {flag, c.value, "--listen", "127.0.0.1:0", "--state-dir", dir + "/s"};
    if (c.key != "backend") args.insert(args.end(), {"--backend", "fake"});
    CommandResult by_flag = Daemon::RunBinary(args, std::chrono::seconds(10));
    EXPECT_EQ(by_flag.exit_code, 2) << by_flag.Describe();
    const size_t at_flag = by_flag.err.find(flag + " '" + c.value + "': ");
    ASSERT_NE(at_flag, std::string::npos) << by_flag.Describe();
    const std::string flag_reason = by_flag.err.substr(at_flag + flag.size() + c.value.size() + 5);
    EXPECT_NE(flag_reason.find(c.reason), std::string::npos) << by_flag.Describe();
    // The same value in the file: the same reason.
    const std::string conf = dir + "/iptkitd.conf";
    std::ofstream(conf) << c.key << " = " << c.value << "\n";
    CommandResult by_file =
        Daemon::RunBinary({"--config", conf, "--listen", "127.0.0.1:0", "--state-dir", dir + "/s", "--backend", "fake"},
                          std::chrono::seconds(10));
    EXPECT_EQ(by_file.exit_code, 2) << by_file.Describe();
    const size_t at_key = by_file.err.find(c.key + " '" + c.value + "': ");
    ASSERT_NE(at_key, std::string::npos) << by_file.Describe();
    EXPECT_EQ(by_file.err.substr(at_key + c.key.size() + c.value.size() + 5), flag_reason) << by_file.Describe();
    EXPECT_FALSE(std::filesystem::exists(dir + "/s")) << "a refused start created the state directory";
  }
  // A flag given twice (not a repeatable one) is refused too.
  CommandResult twice =
      Daemon::RunBinary({"--log-level", "info", "--log-level", "warn", "--listen", "127.0.0.1:0", "--backend", "fake"},
                        std::chrono::seconds(10));
  EXPECT_EQ(twice.exit_code, 2) << twice.Describe();
  std::filesystem::remove_all(dir);
}

// Starts iptkitd with `args` (its stdout/stderr to `log`), dying with the test; returns its pid.
pid_t Spawn(const std::vector<std::string>& args, const std::string& log) {
  std::vector<std::string> all = {IPTKITD_BIN};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  static char env_path[] = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";
  char* envp[] = {env_path, nullptr};
  const int log_fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(125);
    dup2(log_fd, 1);
    dup2(log_fd, 2);
    close_range(3, ~0U, 0);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execve(argv[0], argv.data(), envp);
    _exit(127);
  }
  close(log_fd);
  return pid;
}

// Regression (issue 8, item 9): --ready-file followed a symlink, so whoever could write the ready file's directory
// could make the daemon (root) overwrite any file.
TEST(DaemonCommandLine, ReadyFileIsNeverWrittenThroughASymlink) {
  IPTKIT_NEW_NETNS(ns);
  ASSERT_OK_AND_ASSIGN(auto daemon, Daemon::Create(*ns));
  // Symlinks at the ready file's path and at the temporary name it was once written to first (".tmp").
  const std::string victim = daemon->dir() + "/victim";
  const std::string victim2 = daemon->dir() + "/victim2";
  const std::string ready = daemon->dir() + "/planted-ready.json";
  std::ofstream(victim) << "precious\n";
  std::ofstream(victim2) << "precious too\n";
  ASSERT_EQ(::symlink(victim.c_str(), ready.c_str()), 0);
  ASSERT_EQ(::symlink(victim2.c_str(), (ready + ".tmp").c_str()), 0);
  const pid_t pid = Spawn({"--netns", daemon->netns(), "--state-dir", daemon->state_dir(), "--backend", "nft",
                           "--listen", "127.0.0.1:0", "--ready-file", ready},
                          daemon->dir() + "/spawned.log");
  ASSERT_GT(pid, 0);
  // Ready: the path is now a regular file with the daemon's JSON; the symlink's target is untouched.
  const bool written = WaitUntil(
      [&] {
        struct stat st {};
        return ::lstat(ready.c_str(), &st) == 0 && S_ISREG(st.st_mode) && !ReadFile(ready).empty();
      },
      std::chrono::seconds(30));
  kill(pid, SIGTERM);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(written) << ReadFile(daemon->dir() + "/spawned.log");
  EXPECT_EQ(ReadFile(victim), "precious\n");
  EXPECT_EQ(ReadFile(victim2), "precious too\n");
  Json j = Json::parse(ReadFile(ready), nullptr, false);
  ASSERT_TRUE(j.is_object()) << ReadFile(ready);
  EXPECT_EQ(j["pid"], pid);
  // No temporary file of its own is left beside it.
  for (const auto& e : std::filesystem::directory_iterator(daemon->dir())) {
    EXPECT_FALSE(e.path().filename().string().starts_with("planted-ready.json.tmp.")) << e.path();
  }
}

// Regression (issue 8, item 9): the daemon needed more than 1 s to stop on SIGTERM. Stopping with an idle
// keep-alive client, an open event stream and a request just answered is measured over several runs; the bound
// asserted is generous (liveness), the times are printed.
TEST(DaemonCommandLine, SigtermStopsWithinASecond) {
  IPTKIT_NEW_NETNS(ns);
  ASSERT_OK_AND_ASSIGN(auto daemon, Daemon::Create(*ns));
  std::vector<double> times;
  for (int run = 0; run < 3; ++run) {
    ASSERT_STATUS_OK(daemon->Launch());
    HttpClient idle = daemon->Admin();
    ASSERT_EQ(
        idle.Post(RulesPath("INPUT"), R"({"spec": "-s 192.0.2.)" + std::to_string(run + 1) + R"( -j DROP"})").status,
        200);
    HttpClient stream = daemon->Admin();
    std::thread reader([&] { stream.Stream("/v1/events", [](std::string_view) { return true; }); });
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    const auto t0 = Clock::now();
    Status stopped = daemon->Stop(std::chrono::seconds(10));
    times.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
    stream.Disconnect();
    reader.join();
    ASSERT_STATUS_OK(stopped);
  }
  std::string all;
  for (double t : times) all += std::to_string(static_cast<int>(t * 1000)) + " ms ";
  std::cout << "SIGTERM to exit: " << all << "\n";
  for (double t : times) EXPECT_LT(t, 1.0) << "SIGTERM to exit took " << all;
}

// The flags a --help text lists ("--name" at the start of an option line).
std::set<std::string> HelpFlags(const std::string& help) {
  std::set<std::string> flags;
  std::regex option(R"(^\s+(?:-\w,)?(--[a-z][a-z0-9-]*))");
  std::istringstream in(help);
  std::string line;
  while (std::getline(in, line)) {
    std::smatch m;
    if (std::regex_search(line, m, option)) flags.insert(m[1]);
  }
  return flags;
}

// Issue 9, item 5: daemon-config.md listed 6 of iptkitd's 20 flags. Every flag of `iptkitd --help` (and of the
// token subcommands) is in docs/daemon-config.md, and every flag the page names exists.
TEST(DaemonCommandLine, EveryFlagIsDocumentedAndEveryDocumentedFlagExists) {
  const std::string doc_path = (std::filesystem::path(IPTKIT_SOURCE_DIR) / "docs" / "daemon-config.md").string();
  const std::string doc = ReadFile(doc_path);
  ASSERT_FALSE(doc.empty()) << doc_path;
  std::set<std::string> have;
  for (const std::vector<std::string>& cmd : {std::vector<std::string>{"--help"},
                                              {"token", "create", "--help"},
                                              {"token", "list", "--help"},
                                              {"token", "revoke", "--help"}}) {
    CommandResult r = Daemon::RunBinary(cmd);
    ASSERT_EQ(r.exit_code, 0) << r.Describe();
    std::set<std::string> flags = HelpFlags(r.out);
    EXPECT_GT(flags.size(), 1u) << r.out;
    for (const std::string& f : flags) {
      if (f == "--help") continue;
      have.insert(f);
      EXPECT_NE(doc.find("`" + f), std::string::npos) << f << " (iptkitd " << cmd[0] << ") is not in " << doc_path;
    }
  }
  EXPECT_GE(have.size(), 30u);
  std::regex mentioned(R"(`(--[a-z][a-z0-9-]*))");
  for (auto it = std::sregex_iterator(doc.begin(), doc.end(), mentioned); it != std::sregex_iterator(); ++it) {
    const std::string f = (*it)[1];
    EXPECT_TRUE(have.count(f) || f == "--help") << doc_path << " names " << f << ", which iptkitd does not have";
  }
}

}  // namespace
}  // namespace iptkit::daemontest
