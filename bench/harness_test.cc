#include "bench/harness.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <set>
#include <sstream>

namespace iptkit::bench {
namespace {

TEST(SummarizeTest, MedianAndNearestRankP90) {
  Summary odd = Summarize({5, 1, 3});
  EXPECT_EQ(odd.n, 3u);
  EXPECT_DOUBLE_EQ(odd.median_ms, 3);
  EXPECT_DOUBLE_EQ(odd.p90_ms, 5);  // rank ceil(2.7) = 3

  Summary even = Summarize({4, 1, 3, 2});
  EXPECT_DOUBLE_EQ(even.median_ms, 2.5);
  EXPECT_DOUBLE_EQ(even.p90_ms, 4);

  std::vector<double> hundred;
  for (int i = 100; i >= 1; --i) hundred.push_back(i);
  Summary h = Summarize(hundred);
  EXPECT_DOUBLE_EQ(h.median_ms, 50.5);
  EXPECT_DOUBLE_EQ(h.p90_ms, 90);  // rank 90

  EXPECT_EQ(Summarize({}).n, 0u);
}

TEST(CountRuleLinesTest, CountsOnlyTheChainWithAndWithoutCounters) {
  const std::string save =
      "*filter\n:INPUT ACCEPT [0:0]\n:INPUTX - [0:0]\n-A INPUT -j ACCEPT\n[3:120] -A INPUT -s 1.2.3.4/32 -j DROP\n"
      "-A INPUTX -j ACCEPT\n-A OUTPUT -j ACCEPT\nCOMMIT\n";
  EXPECT_EQ(CountRuleLines(save, "INPUT"), 2u);
  EXPECT_EQ(CountRuleLines(save, "INPUTX"), 1u);
  EXPECT_EQ(CountRuleLines(save, "FORWARD"), 0u);
  EXPECT_EQ(CountRuleLines("-A INPUT -j ACCEPT", "INPUT"), 1u);  // last line without newline
}

TEST(GenerateRulesTest, DistinctRulesWithoutTheProbe) {
  const std::string text = GenerateRules(1000);
  std::istringstream in(text);
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, "*filter");
  std::set<std::string> rules;
  size_t count = 0;
  while (std::getline(in, line) && line != "COMMIT") {
    ASSERT_EQ(line.rfind("-A INPUT ", 0), 0u) << line;
    EXPECT_EQ(line.find(kProbeRule), std::string::npos);
    rules.insert(line);
    ++count;
  }
  EXPECT_EQ(line, "COMMIT");
  EXPECT_EQ(count, 1000u);
  EXPECT_EQ(rules.size(), 1000u);
  EXPECT_EQ(CountRuleLines(text, "INPUT"), 1000u);
}

TEST(RunProcessTest, FeedsStdinAndCapturesOutputAndExitCode) {
  // Larger than a pipe buffer in both directions, so a naive write-then-read would deadlock.
  std::string big(1 << 20, 'x');
  auto cat = RunProcess({"/bin/cat"}, {.stdin_data = big});
  ASSERT_TRUE(cat.ok()) << cat.status().ToString();
  EXPECT_EQ(cat->exit_code, 0);
  EXPECT_EQ(cat->out.size(), big.size());

  auto failing = RunProcess({"/bin/sh", "-c", "echo oops >&2; exit 3"});
  ASSERT_TRUE(failing.ok());
  EXPECT_EQ(failing->exit_code, 3);
  EXPECT_EQ(failing->err, "oops\n");

  auto ok = RunProcessOk({"/bin/sh", "-c", "echo oops >&2; exit 3"});
  ASSERT_FALSE(ok.ok());
  EXPECT_EQ(ok.status().code(), StatusCode::kInternal);
  EXPECT_NE(ok.status().message().find("exited with 3: oops"), std::string::npos) << ok.status().message();

  auto env = RunProcessOk({"/usr/bin/env"});
  ASSERT_TRUE(env.ok());
  EXPECT_EQ(*env, "PATH=/usr/sbin:/usr/bin:/sbin:/bin\nLC_ALL=C\n");

  EXPECT_EQ(RunProcess({"relative/path"}).status().code(), StatusCode::kInvalidArgument);
  auto missing = RunProcess({"/nonexistent/tool"});
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ(missing->exit_code, 127);
}

TEST(NetnsTest, ChildRunsInsideAndNamespaceIsDeleted) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to create network namespaces";
  const std::string name = "iptkit-bench-test-" + std::to_string(getpid());
  const std::string path = "/run/netns/" + name;
  struct stat st;
  {
    auto ns = Netns::Create(name);
    ASSERT_TRUE(ns.ok()) << ns.status().ToString();
    ASSERT_EQ(stat(path.c_str(), &st), 0);
    auto inside = RunProcessOk({"/usr/bin/readlink", "/proc/self/ns/net"}, {.netns_fd = (*ns)->fd()});
    auto outside = RunProcessOk({"/usr/bin/readlink", "/proc/self/ns/net"});
    ASSERT_TRUE(inside.ok() && outside.ok());
    EXPECT_NE(*inside, *outside);
    EXPECT_EQ(*inside, "net:[" + std::to_string(st.st_ino) + "]\n");
  }
  EXPECT_NE(stat(path.c_str(), &st), 0) << path << " still exists";
}

TEST(FormatReportTest, RatiosAgainstTheFirstToolAndErrors) {
  Results results;
  results[{100, "append", "iptkit", "nft"}].samples_ms = {2, 2, 2};
  results[{100, "append", "cli", "nft"}].samples_ms = {5, 5, 6};
  results[{100, "append", "python", "nft"}].not_applicable = true;
  results[{100, "append", "iptkit", "legacy"}].error = "boom";
  results[{100, "append", "cli", "legacy"}].samples_ms = {1};
  results[{100, "append", "python", "legacy"}].samples_ms = {3};
  ReportLayout layout;
  layout.sizes = {100};
  layout.ops = {"append"};
  layout.tools = {"iptkit", "cli", "python"};
  layout.variants = {"nft", "legacy"};
  const std::string md = FormatReport(results, layout);
  EXPECT_NE(md.find("| append | iptkit | 2.00 | 2.00 | 1.00 | 3 | error | — | — | 0 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| append | cli | 5.00 | 6.00 | 2.50 | 3 | 1.00 | 1.00 | — | 1 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| append | python | n/a | n/a | n/a | n/a | 3.00 | 3.00 | — | 1 |"), std::string::npos) << md;
  EXPECT_NE(md.find("- 100 rules, legacy, iptkit, append: boom"), std::string::npos) << md;
}

TEST(ValidateConfigTest, NamesTheBadOption) {
  BenchConfig config;
  config.python_script = "x.py";
  EXPECT_TRUE(ValidateConfig(config).ok());
  config.variants = {"nft", "iptables"};
  Status bad = ValidateConfig(config);
  EXPECT_EQ(bad.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("--variants: unknown variant 'iptables'"), std::string::npos);
  config.variants = {"legacy"};
  config.python_script.clear();
  EXPECT_NE(ValidateConfig(config).message().find("--python-script"), std::string::npos);
}

}  // namespace
}  // namespace iptkit::bench
