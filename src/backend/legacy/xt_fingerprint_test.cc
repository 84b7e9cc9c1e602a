// Tests of XtablesProbe against the real kernel in private network namespaces (root; skip otherwise). Tables
// are written with iptables-legacy inside the namespace; the host's firewall is never touched.
#include "src/backend/legacy/xt_fingerprint.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <vector>

#include "src/backend/test_netns.h"
#include "src/base/netns.h"
#include "src/base/subprocess.h"

namespace iptkit::backend::legacy {
namespace {

using base::Cmd;
using ::testing::HasSubstr;
using ::testing::Not;

class TestNetns : public test::TestNetns {
 public:
  TestNetns() : test::TestNetns("iptkit-legacy") {}
};

constexpr const char* kIpt = "/usr/sbin/iptables-legacy";
constexpr const char* kIpt6 = "/usr/sbin/ip6tables-legacy";
constexpr const char* kSave = "/usr/sbin/iptables-legacy-save";
constexpr const char* kSave6 = "/usr/sbin/ip6tables-legacy-save";

// Sends two UDP datagrams to port 9 of argv[1].
constexpr const char* kSendUdp =
    "import socket, sys\n"
    "s = socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)\n"
    "for _ in range(2): s.sendto(b'x', (sys.argv[1], 9))\n";

std::vector<std::string> Names(const Fingerprint& fp) {
  std::vector<std::string> names;
  for (const auto& t : fp) names.push_back(t.name);
  return names;
}

class XtablesProbeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root for network namespaces";
    ns_ = std::make_unique<TestNetns>();
    ASSERT_TRUE(ns_->ok()) << ns_->error();
    auto fd = base::OpenNetns(ns_->name());
    ASSERT_TRUE(fd.ok()) << fd.status().ToString();
    fd_ = std::move(fd).value();
    auto probe = XtablesProbe::Open(fd_.get());
    ASSERT_TRUE(probe.ok()) << probe.status().ToString();
    probe_ = std::move(probe).value();
  }

  Fingerprint Read(Family family) {
    auto fp = probe_->Read(family);
    EXPECT_TRUE(fp.ok()) << fp.status().ToString();
    return fp.ok() ? *fp : Fingerprint{};
  }

  std::unique_ptr<TestNetns> ns_;
  base::UniqueFd fd_;
  std::unique_ptr<XtablesProbe> probe_;
};

TEST_F(XtablesProbeTest, ReadingCreatesNoTable) {
  // A fresh netns has no legacy table; probing both families must not instantiate any.
  EXPECT_EQ(Read(Family::kIPv4), Fingerprint{});
  EXPECT_EQ(Read(Family::kIPv6), Fingerprint{});
  EXPECT_EQ(ns_->Output({kSave}), "");
  EXPECT_EQ(ns_->Output({kSave6}), "");

  // One table instantiated by a write: exactly that one is seen, and probing loads no other.
  ASSERT_EQ(ns_->Exec({kIpt, "-t", "mangle", "-A", "OUTPUT", "-j", "ACCEPT"}), "");
  EXPECT_THAT(Names(Read(Family::kIPv4)), ::testing::ElementsAre("mangle"));
  EXPECT_EQ(Read(Family::kIPv6), Fingerprint{});
  const std::string save = ns_->Output({kSave});
  EXPECT_THAT(save, HasSubstr("*mangle\n"));
  EXPECT_THAT(save, Not(HasSubstr("*filter\n")));
  EXPECT_THAT(save, Not(HasSubstr("*nat\n")));
  EXPECT_EQ(ns_->Output({kSave6}), "");
}

TEST_F(XtablesProbeTest, TablesAreInSaveOrder) {
  ASSERT_EQ(ns_->Exec({kIpt, "-t", "raw", "-A", "OUTPUT", "-j", "ACCEPT"}), "");
  ASSERT_EQ(ns_->Exec({kIpt, "-A", "OUTPUT", "-j", "ACCEPT"}), "");
  ASSERT_EQ(ns_->Exec({kIpt, "-t", "nat", "-A", "OUTPUT", "-j", "ACCEPT"}), "");
  std::vector<std::string> save_order;  // the "*table" lines of iptables-legacy-save
  const std::string save = ns_->Output({kSave});
  for (size_t pos = save.find("\n*"); pos != std::string::npos; pos = save.find("\n*", pos + 1)) {
    save_order.push_back(save.substr(pos + 2, save.find('\n', pos + 1) - pos - 2));
  }
  EXPECT_EQ(Names(Read(Family::kIPv4)), save_order);
  EXPECT_EQ(save_order.size(), 3u);
}

TEST_F(XtablesProbeTest, TrafficCountersDoNotChangeTheFingerprint) {
  ASSERT_EQ(ns_->Exec({"/usr/sbin/ip", "link", "set", "lo", "up"}), "");
  ASSERT_EQ(ns_->Exec({kIpt, "-A", "OUTPUT", "-d", "127.0.0.1", "-p", "udp", "-j", "ACCEPT"}), "");
  ASSERT_EQ(ns_->Exec({kIpt6, "-A", "OUTPUT", "-d", "::1", "-p", "udp", "-j", "ACCEPT"}), "");
  const Fingerprint before4 = Read(Family::kIPv4), before6 = Read(Family::kIPv6);
  ASSERT_EQ(before4.size(), 1u);
  ASSERT_EQ(before6.size(), 1u);
  // Two UDP datagrams per family over lo (no ping installed; python3 is).
  ASSERT_EQ(ns_->Exec({"/usr/bin/python3", "-c", kSendUdp, "127.0.0.1"}), "");
  ASSERT_EQ(ns_->Exec({"/usr/bin/python3", "-c", kSendUdp, "::1"}), "");
  // The counters did move (the rule and the chain policy both count the packets).
  EXPECT_THAT(ns_->Output({kSave, "-c"}), ::testing::ContainsRegex(R"(\[[1-9][0-9]*:[0-9]+\] -A OUTPUT -d 127)"));
  EXPECT_THAT(ns_->Output({kSave6, "-c"}), ::testing::ContainsRegex(R"(\[[1-9][0-9]*:[0-9]+\] -A OUTPUT -d ::1)"));
  EXPECT_EQ(Read(Family::kIPv4), before4);
  EXPECT_EQ(Read(Family::kIPv6), before6);
  // Zeroing counters (a write of the counters only) leaves it alone too.
  ASSERT_EQ(ns_->Exec({kIpt, "-Z"}), "");
  EXPECT_EQ(Read(Family::kIPv4), before4);
}

TEST_F(XtablesProbeTest, EveryRuleChangeChangesTheFingerprint) {
  for (auto [family, ipt, a, b] : {std::tuple{Family::kIPv4, kIpt, "1.1.1.1", "1.1.1.2"},
                                   std::tuple{Family::kIPv6, kIpt6, "2001:db8::1", "2001:db8::2"}}) {
    SCOPED_TRACE(FamilyName(family));
    ASSERT_EQ(ns_->Exec({ipt, "-A", "INPUT", "-s", a, "-j", "DROP"}), "");
    const Fingerprint one = Read(family);
    ASSERT_EQ(one.size(), 1u);
    // Same-size replace: only the address differs.
    ASSERT_EQ(ns_->Exec({ipt, "-R", "INPUT", "1", "-s", b, "-j", "DROP"}), "");
    const Fingerprint two = Read(family);
    ASSERT_EQ(two.size(), 1u);
    EXPECT_EQ(two[0].bytes.size(), one[0].bytes.size());
    EXPECT_NE(two, one);
    // Back to the first rule: the same bytes again (the fingerprint is a function of the rules).
    ASSERT_EQ(ns_->Exec({ipt, "-R", "INPUT", "1", "-s", a, "-j", "DROP"}), "");
    EXPECT_EQ(Read(family), one);

    std::vector<Fingerprint> seen = {one};
    for (std::vector<std::string> change : {std::vector<std::string>{"-P", "FORWARD", "DROP"},
                                            {"-N", "FOO"},
                                            {"-E", "FOO", "BAR"},
                                            {"-A", "BAR", "-j", "RETURN"},
                                            {"-R", "BAR", "1", "-j", "ACCEPT"},
                                            {"-I", "INPUT", "1", "-j", "BAR"},
                                            {"-D", "INPUT", "2"}}) {
      std::vector<std::string> argv = {ipt};
      argv.insert(argv.end(), change.begin(), change.end());
      ASSERT_EQ(ns_->Exec(argv), "");
      Fingerprint now = Read(family);
      for (const Fingerprint& old : seen) EXPECT_NE(now, old) << change[0] << " " << change[1];
      seen.push_back(now);
    }
  }
}

TEST_F(XtablesProbeTest, SocketsStayInTheTargetNetns) {
  // The probe was opened in the test netns; a table made there is seen while the caller's namespace differs.
  ASSERT_EQ(ns_->Exec({kIpt, "-A", "INPUT", "-j", "ACCEPT"}), "");
  EXPECT_THAT(Names(Read(Family::kIPv4)), ::testing::ElementsAre("filter"));
  EXPECT_GT(probe_->requests(), 0u);
}

}  // namespace
}  // namespace iptkit::backend::legacy
