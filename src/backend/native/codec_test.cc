// The libxtables wrapper and the rule codec without a kernel: every rule of the shared corpus (canonical
// iptables-nft-save text) parsed in-process, encoded as iptables-nft encodes it, decoded as iptables-nft-save
// decodes it and printed again must give its own line back; errors name the token; the wrapper survives
// libxtables' exit handler and never lets one rule's extension state leak into the next.
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "iptkit/dialect.h"
#include "src/backend/native/rule_codec.h"
#include "src/backend/native/xtables.h"

namespace iptkit::backend::native {
namespace {

using ::testing::HasSubstr;

Result<std::string> FormatThroughKernelEncoding(Family family, const std::string& spec) {
  IPTKIT_ASSIGN_OR_RETURN(Rule rule, ParseRuleSpec(spec, family));
  IPTKIT_ASSIGN_OR_RETURN(Xtables * xt, Xtables::Instance());
  std::vector<Result<XtRule>> parsed = xt->Parse(family, {&rule});
  if (!parsed[0].ok()) return parsed[0].status();
  IPTKIT_ASSIGN_OR_RETURN(XtRule back, RoundTrip(*parsed[0]));
  std::vector<Result<std::string>> text = xt->Format({&back});
  // The model built directly is the text parser's model of that text.
  std::vector<Result<Rule>> model = xt->ToRules({&back});
  if (text[0].ok()) {
    if (!model[0].ok()) return model[0].status().WithContext("ToRules");
    IPTKIT_ASSIGN_OR_RETURN(Rule reparsed, ParseRuleSpec(*text[0], family));
    if (!(*model[0] == reparsed)) {
      return Status::Internal("ToRules gives '" + FormatRuleSpec(*model[0]) + "', the text parser '" +
                              FormatRuleSpec(reparsed) + "'");
    }
  }
  return text[0];
}

std::string CorpusDir() {
  std::string dir = std::string(IPTKIT_CORPUS_DIR) + "/valid";
  return std::filesystem::is_directory(dir) ? dir : "";
}

// Every rule of the corpus files in `dir` with its file and family, except those naming an ipset (set names are
// resolved in the kernel; the sets exist only where the kernel tests create them). Empty, with a failure recorded,
// when a file does not parse.
struct CorpusRule {
  std::string file;
  Family family;
  Rule rule;
  std::string spec;
};
std::vector<CorpusRule> CorpusRules(const std::string& dir) {
  std::vector<CorpusRule> out;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string path = entry.path().string();
    const Family family = path.ends_with(".v6") ? Family::kIPv6 : Family::kIPv4;
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    Result<Ruleset> rs = ParseSave(text.str(), family);
    if (!rs.ok()) {
      ADD_FAILURE() << path << ": " << rs.status().ToString();
      return {};
    }
    for (const Table& t : rs->tables) {
      for (const Chain& c : t.chains) {
        for (const Rule& r : c.rules) {
          std::string spec = FormatRuleSpec(r);
          if (spec.find("-m set ") != std::string::npos || spec.find("-j SET ") != std::string::npos) continue;
          out.push_back({entry.path().filename().string(), family, r, std::move(spec)});
        }
      }
    }
  }
  return out;
}

TEST(CodecTest, EveryCorpusRuleComesBackAsItsOwnLine) {
  const std::string dir = CorpusDir();
  if (dir.empty()) GTEST_SKIP() << "corpus absent";
  size_t rules = 0;
  std::vector<std::string> failures;
  for (const CorpusRule& c : CorpusRules(dir)) {
    Result<std::string> back = FormatThroughKernelEncoding(c.family, c.spec);
    ++rules;
    if (!back.ok()) {
      failures.push_back(c.file + ": " + c.spec + " -> " + back.status().ToString());
    } else if (*back != c.spec) {
      failures.push_back(c.file + ": " + c.spec + " -> " + *back);
    }
  }
  EXPECT_GT(rules, 1000u);
  EXPECT_TRUE(failures.empty()) << failures.size() << " of " << rules << " rules differ, e.g.:\n"
                                << (failures.empty() ? "" : failures[0]) << "\n"
                                << (failures.size() > 1 ? failures[1] : "") << "\n"
                                << (failures.size() > 2 ? failures[2] : "");
}

// Many rules at once, as a read of a whole table formats them: every extension printed in one capture (the texts
// told apart by delimiters) and parsed once. Each rule gives its own line, as alone; a rule whose extension cannot be
// printed (a revision libxtables does not have) fails alone and names the extension, its neighbours unaffected.
TEST(CodecTest, OneBatchGivesEachRuleItsOwnLineAndFailsOnlyTheBadOnes) {
  const std::string dir = CorpusDir();
  if (dir.empty()) GTEST_SKIP() << "corpus absent";
  Result<Xtables*> xt = Xtables::Instance();
  ASSERT_TRUE(xt.ok());
  std::vector<XtRule> rules;
  std::vector<std::string> specs;
  std::vector<bool> bad;  // an extension revision libxtables does not have
  for (const CorpusRule& c : CorpusRules(dir)) {
    std::vector<Result<XtRule>> parsed = (*xt)->Parse(c.family, {&c.rule});
    ASSERT_TRUE(parsed[0].ok()) << c.spec << ": " << parsed[0].status().ToString();
    Result<XtRule> back = RoundTrip(*parsed[0]);
    ASSERT_TRUE(back.ok()) << c.spec << ": " << back.status().ToString();
    rules.push_back(*back);
    specs.push_back(c.spec);
    bad.push_back(false);
    if (rules.size() % 97 == 0 && !back->matches.empty()) {
      rules.push_back(*back);
      rules.back().matches.back().revision = 200;
      specs.push_back(c.spec);
      bad.push_back(true);
    }
  }
  ASSERT_GT(rules.size(), 1000u);
  std::vector<const XtRule*> ptrs;
  for (const XtRule& r : rules) ptrs.push_back(&r);
  // Keys of another namespace descriptor: nothing printed by the tests before is found in a cache.
  const int netns = ::open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(netns, 0);
  std::vector<Result<std::string>> text = (*xt)->Format(ptrs, netns);
  const int other = ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  std::vector<Result<Rule>> model = (*xt)->ToRules(ptrs, other);
  ::close(netns);
  ::close(other);
  ASSERT_EQ(text.size(), rules.size());
  ASSERT_EQ(model.size(), rules.size());
  size_t broken = 0;
  for (size_t i = 0; i < rules.size(); ++i) {
    if (bad[i]) {
      ++broken;
      ASSERT_FALSE(text[i].ok()) << specs[i];
      EXPECT_EQ(text[i].status().code(), StatusCode::kFailedPrecondition);
      EXPECT_THAT(text[i].status().message(), HasSubstr("revision 200"));
      ASSERT_FALSE(model[i].ok()) << i;
      EXPECT_THAT(model[i].status().message(), HasSubstr("revision 200"));
      continue;
    }
    ASSERT_TRUE(text[i].ok()) << specs[i] << ": " << text[i].status().ToString();
    EXPECT_EQ(*text[i], specs[i]);
    ASSERT_TRUE(model[i].ok()) << specs[i] << ": " << model[i].status().ToString();
    Result<Rule> parsed = ParseRuleSpec(specs[i], rules[i].family);
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(FormatRuleSpec(*model[i]), specs[i]);
    EXPECT_TRUE(*model[i] == *parsed) << specs[i];
  }
  EXPECT_GT(broken, 5u);
}

TEST(CodecTest, UserSpellingsBecomeCanonical) {
  struct Case {
    Family family;
    std::string in, out;
  };
  for (const Case& c : std::vector<Case>{
           {Family::kIPv4, "-p tcp --dport 22 -s 10.1.2.3 -j ACCEPT",
            "-s 10.1.2.3/32 -p tcp -m tcp --dport 22 -j ACCEPT"},
           {Family::kIPv4, "-s 10.1.2.3/255.255.0.0 -j DROP", "-s 10.1.0.0/16 -j DROP"},
           {Family::kIPv4, "-d 10.0.0.0/255.0.255.0 -j DROP", "-d 10.0.0.0/255.0.255.0 -j DROP"},
           {Family::kIPv4, "-i eth+ ! -o lo -j RETURN", "-i eth+ ! -o lo -j RETURN"},
           {Family::kIPv4, "-i + -j ACCEPT", "-j ACCEPT"},
           {Family::kIPv4, "! -i + -j ACCEPT", "! -i + -j ACCEPT"},
           {Family::kIPv4, "-p udp --sport 53 --dport 1024:65535", "-p udp -m udp --sport 53 --dport 1024:65535"},
           {Family::kIPv4, "-p tcp ! --dport 0:80", "-p tcp -m tcp --dport 81:65535"},
           {Family::kIPv4, "-m mark --mark 0x10/0xf0 -j MARK --set-mark 1",
            "-m mark --mark 0x10/0xf0 -j MARK --set-xmark 0x1/0xffffffff"},
           {Family::kIPv4, "-m limit --limit 7/hour -j LOG", "-m limit --limit 7/hour -j LOG"},
           {Family::kIPv4, "-f -p 47 -j DROP", "-p gre -f -j DROP"},
           {Family::kIPv6, "-s 2001:db8::1 -p icmpv6 --icmpv6-type echo-request -j ACCEPT",
            "-s 2001:db8::1/128 -p ipv6-icmp -m icmp6 --icmpv6-type 128 -j ACCEPT"},
           {Family::kIPv4, "-j NFLOG --nflog-prefix " + std::string(100, 'x'),
            "-j NFLOG --nflog-prefix " + std::string(100, 'x')},
       }) {
    Result<std::string> out = FormatThroughKernelEncoding(c.family, c.in);
    ASSERT_TRUE(out.ok()) << c.in << ": " << out.status().ToString();
    EXPECT_EQ(*out, c.out) << c.in;
  }
}

TEST(CodecTest, ErrorsNameTheTokenAndLeaveNoState) {
  Result<std::string> bad = FormatThroughKernelEncoding(Family::kIPv4, "-p tcp --dport nosuchport -j ACCEPT");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.status().details().token, "nosuchport");
  EXPECT_THAT(bad.status().message(), HasSubstr("-m tcp"));
  // The same extension right after an error: no flags or payload of the failed rule remain.
  Result<std::string> good = FormatThroughKernelEncoding(Family::kIPv4, "-p tcp --dport 22 -j ACCEPT");
  ASSERT_TRUE(good.ok()) << good.status().ToString();
  EXPECT_EQ(*good, "-p tcp -m tcp --dport 22 -j ACCEPT");
  // An option given twice is libxtables' own error ("multiple ... flags not allowed"), through its exit handler.
  Result<Rule> twice = ParseRuleSpec("-m comment --comment a", Family::kIPv4);
  ASSERT_TRUE(twice.ok());
  twice->matches[0].options.push_back(twice->matches[0].options[0]);
  Result<Xtables*> xt = Xtables::Instance();
  ASSERT_TRUE(xt.ok());
  std::vector<Result<XtRule>> parsed = (*xt)->Parse(Family::kIPv4, {&*twice});
  ASSERT_FALSE(parsed[0].ok());
  EXPECT_EQ(parsed[0].status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(parsed[0].status().details().token, "--comment");
  // Two uses of one extension in one rule are independent copies.
  Result<std::string> two = FormatThroughKernelEncoding(Family::kIPv4, "-m comment --comment a -m comment --comment b");
  ASSERT_TRUE(two.ok()) << two.status().ToString();
  EXPECT_EQ(*two, "-m comment --comment a -m comment --comment b");
  // A header value libxtables refuses.
  Result<std::string> iface = FormatThroughKernelEncoding(Family::kIPv4, "-p tcp -m tcp --tcp-flags SYN,BOGUS SYN");
  ASSERT_FALSE(iface.ok());
  EXPECT_EQ(iface.status().code(), StatusCode::kInvalidArgument);
}

TEST(CodecTest, TcpMatchWithoutProtocolIsRefusedAsIptablesNftDoes) {
  Result<std::string> r = FormatThroughKernelEncoding(Family::kIPv4, "-m tcp --dport 22 -j ACCEPT");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("requires '-p tcp'"));
}

// Regression: a rule whose expressions outgrow one netlink attribute (16-bit length) was encoded with that length
// wrapped, and nf_tables kept only its first expressions (no verdict). It is refused; a long rule that fits is not.
TEST(CodecTest, RuleLongerThanOneNetlinkAttributeIsRefused) {
  auto comments = [](int n) {
    std::string spec;
    for (int i = 0; i < n; ++i) spec += "-m comment --comment " + std::string(250, 'x') + " ";
    return spec + "-j DROP";
  };
  Result<std::string> fits = FormatThroughKernelEncoding(Family::kIPv4, comments(40));
  ASSERT_TRUE(fits.ok()) << fits.status().ToString();
  EXPECT_THAT(*fits, HasSubstr("-j DROP"));
  Result<std::string> too_long = FormatThroughKernelEncoding(Family::kIPv4, comments(300));
  ASSERT_FALSE(too_long.ok());
  EXPECT_EQ(too_long.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(too_long.status().message(), HasSubstr("netlink attribute"));
}

// Runs this test binary again with only `test` selected and `env` added; its exit status.
int RunSelf(const std::string& test, const std::vector<std::string>& env) {
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    for (const std::string& e : env) putenv(const_cast<char*>(e.c_str()));
    std::string filter = "--gtest_filter=" + test;
    char* argv[] = {const_cast<char*>("codec_test"), filter.data(), nullptr};
    execv("/proc/self/exe", argv);
    _exit(127);
  }
  int status = 0;
  if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return -1;
  return WEXITSTATUS(status);
}

// The environment never decides where extensions come from: in a fresh process (nothing loaded yet) with
// XTABLES_LIBDIR and IPTABLES_LIB_DIR pointing nowhere, extensions still load from the compiled-in directory.
TEST(CodecTest, XtablesLibdirInTheEnvironmentIsIgnored) {
  EXPECT_EQ(RunSelf("CodecTest.ChildLoadsExtensions",
                    {"IPTKIT_CODEC_CHILD=1", "XTABLES_LIBDIR=/nonexistent", "IPTABLES_LIB_DIR=/nonexistent"}),
            0);
}
TEST(CodecTest, ChildLoadsExtensions) {
  if (getenv("IPTKIT_CODEC_CHILD") == nullptr) GTEST_SKIP() << "run by XtablesLibdirInTheEnvironmentIsIgnored";
  ASSERT_STREQ(getenv("XTABLES_LIBDIR"), "/nonexistent");
  Result<std::string> r = FormatThroughKernelEncoding(Family::kIPv4, "-m conntrack --ctstate NEW -j ACCEPT");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, "-m conntrack --ctstate NEW -j ACCEPT");
}

// Where libxtables would _exit(111) (real and effective uid differ), the wrapper refuses with a message saying what
// to do, and the process lives on.
TEST(CodecTest, SetuidLikeProcessIsRefusedNotKilled) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to make real and effective uid differ";
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (setresuid(65534, 0, 0) != 0) _exit(2);
    Result<Xtables*> xt = Xtables::Instance();
    const bool refused = !xt.ok() && xt.status().code() == StatusCode::kFailedPrecondition &&
                         xt.status().message().find("setresuid") != std::string::npos;
    _exit(refused ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

}  // namespace
}  // namespace iptkit::backend::native
