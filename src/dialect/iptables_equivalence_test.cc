// Differential check against the real iptables (needs root; skipped otherwise): user-style specs and the text
// FormatRuleSpec(ParseRuleSpec(spec)) prints for them must load into the same kernel rules, i.e. iptables-nft-save
// prints the same table for both. Runs only inside private network namespaces that it deletes again.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "iptkit/dialect.h"

extern char** environ;

namespace iptkit {
namespace {

constexpr const char* kIp = "/usr/sbin/ip";
constexpr const char* kRestore = "/usr/sbin/iptables-nft-restore";
constexpr const char* kSave = "/usr/sbin/iptables-nft-save";

// Runs argv (no shell) with stdin/stdout redirected to files; returns the exit status (-1 on spawn failure).
int Run(const std::vector<std::string>& argv, const std::string& in_path, const std::string& out_path) {
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, in_path.empty() ? "/dev/null" : in_path.c_str(), O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, out_path.empty() ? "/dev/null" : out_path.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  pid_t pid;
  int rc = posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return -1;
  int status = 0;
  if (waitpid(pid, &status, 0) < 0) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A network namespace that exists for the guard's lifetime.
class ScratchNetns {
 public:
  explicit ScratchNetns(std::string name) : name_(std::move(name)) {
    ok_ = Run({kIp, "netns", "add", name_}, "", "") == 0;
  }
  ~ScratchNetns() {
    if (ok_) Run({kIp, "netns", "del", name_}, "", "");
  }
  bool ok() const { return ok_; }
  // Loads `rules` with iptables-nft-restore and returns iptables-nft-save's output without "#" lines.
  std::string LoadAndSave(const std::string& rules, const std::string& dir) {
    std::string in = dir + "/" + name_ + ".rules";
    std::string out = dir + "/" + name_ + ".out";
    std::ofstream(in) << rules;
    int rc = Run({kIp, "netns", "exec", name_, kRestore}, in, out);
    if (rc != 0) return "restore failed: " + ReadFile(out);
    if (Run({kIp, "netns", "exec", name_, kSave}, "", out) != 0) return "save failed: " + ReadFile(out);
    std::istringstream lines(ReadFile(out));
    std::string line, text;
    while (std::getline(lines, line)) {
      if (!line.empty() && line[0] != '#') text += line + "\n";
    }
    return text;
  }

 private:
  std::string name_;
  bool ok_ = false;
};

TEST(IptablesEquivalenceTest, NormalizedSpecsLoadAsTheOriginals) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root for a private network namespace";
  for (const char* tool : {kIp, kRestore, kSave}) {
    if (access(tool, X_OK) != 0) GTEST_SKIP() << tool << " not installed";
  }
  const std::vector<std::string> specs = {
      "-p tcp --dport 22 -s 1.2.3.4 -j ACCEPT",
      "--protocol udp --source 10.0.0.0/8 --destination-port 53 --jump DROP",
      "--src 10.0.0.1 --dst 10.0.0.2 --in-interface eth0 --out-interface eth1 --fragment -j DROP",
      "! -s 10.0.0.0/255.0.255.0 ! -p udp ! -f -j RETURN",
      "-p TCP --sport 1",
      "-p 6 --dport 22",
      "-p icmp --icmp-type echo-request",
      "-m comment --comment x -p tcp --dport 22",
      "-p tcp --sport 1 -m comment --comment \"a b\" --dport 2",
      "-m mark --mark 1 -m connmark --mark 2",
      "-m recent --set -m recent --name x --rcheck",
      "--proto udp --dp 5",
      "-p tcp -m multiport --dport 22,23",
      "-p tcp --dport=22 -j LOG --log-prefix=x",
      "-p tcp --tcp-flags SYN,ACK SYN",
      "-j LOG --log-prefix -foo",
      "-m comment --comment --x",
      "-m comment --comment \"\"",
      "-m comment --comment \"$(reboot); `id` | & > *\"",
      "-m comment --comment 'single'",
      "-m comment --comment \"a\\\"b\\\\c'd\"",
      "-m string --string \"a\\\"b\" --algo bm",
      "-p tcp -m tcp ! --dport 22 -m conntrack ! --ctstate NEW,ESTABLISHED -m limit --limit 5/sec -j REJECT",
      "-m u32 --u32 \"0x0=0x0&&0x0=0x1\"",
      "-m statistic --mode random --probability 0.5",
      "-m hashlimit --hashlimit-upto 1/sec --hashlimit-name foo",
      "-j NFLOG --nflog-prefix \"a b\" --nflog-group 2",
      "-j MARK --set-mark 1",
      "-p sctp --chunk-types all DATA",
  };
  std::string original = "*filter\n", normalized = "*filter\n";
  for (const std::string& spec : specs) {
    auto rule = ParseRuleSpec(spec, Family::kIPv4);
    ASSERT_TRUE(rule.ok()) << spec << ": " << rule.status().ToString();
    original += "-A FORWARD " + spec + "\n";
    normalized += "-A FORWARD " + FormatRuleSpec(*rule) + "\n";
  }
  original += "COMMIT\n";
  normalized += "COMMIT\n";

  std::string dir = std::filesystem::temp_directory_path() / ("iptkit-dialect-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  std::string saved_original, saved_normalized;
  {
    ScratchNetns a("iptkit-dialect-" + std::to_string(getpid()) + "-a");
    ScratchNetns b("iptkit-dialect-" + std::to_string(getpid()) + "-b");
    ASSERT_TRUE(a.ok() && b.ok()) << "ip netns add failed";
    saved_original = a.LoadAndSave(original, dir);
    saved_normalized = b.LoadAndSave(normalized, dir);
  }
  std::filesystem::remove_all(dir);
  ASSERT_EQ(saved_original.rfind("*filter", 0), 0u) << saved_original;
  size_t rules = 0;
  for (size_t at = saved_original.find("\n-A FORWARD "); at != std::string::npos;
       at = saved_original.find("\n-A FORWARD ", at + 1)) {
    ++rules;
  }
  EXPECT_EQ(rules, specs.size()) << saved_original;
  EXPECT_EQ(saved_normalized, saved_original);
  // And what iptables printed is a fixed point of the dialect.
  auto rs = ParseSave(saved_original, Family::kIPv4);
  ASSERT_TRUE(rs.ok()) << rs.status().ToString();
  EXPECT_EQ(FormatSave(*rs), saved_original);
}

}  // namespace
}  // namespace iptkit
