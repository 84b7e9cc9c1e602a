#include "src/base/netns.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "src/base/subprocess.h"

namespace iptkit::base {
namespace {

using ::testing::HasSubstr;

Result<NetnsId> IdOfPath(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return Status::NotFound(path);
  return GetNetnsId(fd.get());
}

TEST(NetnsTest, EmptyMeansTheCallersNamespace) {
  auto fd = OpenNetns("");
  ASSERT_TRUE(fd.ok());
  EXPECT_FALSE(fd->valid());
  EXPECT_EQ(NetnsPath(""), "");
}

TEST(NetnsTest, NamesMapToRunNetnsAndPathsStayPaths) {
  EXPECT_EQ(NetnsPath("blue"), "/run/netns/blue");
  EXPECT_EQ(NetnsPath("/proc/1/ns/net"), "/proc/1/ns/net");
  EXPECT_EQ(NetnsPath("./x"), "./x");
}

TEST(NetnsTest, OpensAPathAndIdentifiesIt) {
  auto fd = OpenNetns("/proc/self/ns/net");
  ASSERT_TRUE(fd.ok()) << fd.status().ToString();
  auto id = GetNetnsId(fd->get());
  auto expected = IdOfPath("/proc/self/ns/net");
  ASSERT_TRUE(id.ok() && expected.ok());
  EXPECT_EQ(*id, *expected);
}

TEST(NetnsTest, MissingNamespaceIsNotFound) {
  auto fd = OpenNetns("iptkit-restore-no-such-netns");
  ASSERT_FALSE(fd.ok());
  EXPECT_EQ(fd.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(fd.status().message(), HasSubstr("/run/netns/iptkit-restore-no-such-netns"));
}

TEST(NetnsTest, RejectsFilesThatAreNotNetworkNamespaces) {
  auto file = OpenNetns("/etc/hostname");
  EXPECT_EQ(file.status().code(), StatusCode::kInvalidArgument);
  auto uts = OpenNetns("/proc/self/ns/uts");
  EXPECT_EQ(uts.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(uts.status().message(), HasSubstr("not a network namespace"));
  EXPECT_EQ(OpenNetns("..").status().code(), StatusCode::kInvalidArgument);
}

TEST(ScratchNetnsTest, IsANewNamespaceDistinctFromTheCallers) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (CAP_SYS_ADMIN) to unshare a network namespace";
  auto a = ScratchNetns::Create();
  auto b = ScratchNetns::Create();
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  auto own = IdOfPath("/proc/self/ns/net");
  auto id_a = GetNetnsId(a->fd());
  auto id_b = GetNetnsId(b->fd());
  ASSERT_TRUE(own.ok() && id_a.ok() && id_b.ok());
  EXPECT_NE(id_a->ino, own->ino);
  EXPECT_NE(id_a->ino, id_b->ino);

  // The path form opens the same namespace (usable as BackendOptions::netns).
  auto reopened = OpenNetns(a->path());
  ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
  auto id_reopened = GetNetnsId(reopened->get());
  ASSERT_TRUE(id_reopened.ok());
  EXPECT_EQ(*id_reopened, *id_a);

  // Empty: only the loopback device.
  auto links = RunSubprocess(Cmd("/usr/sbin/ip", {"ip", "-o", "link", "show"}).Netns(a->fd()));
  ASSERT_TRUE(links.ok()) << links.status().ToString();
  EXPECT_THAT(links->stdout_text, HasSubstr("1: lo:"));
  EXPECT_EQ(std::count(links->stdout_text.begin(), links->stdout_text.end(), '\n'), 1);
}

// A scratch namespace is never bound to a name: no entry of /run/netns is it. (Compared by the namespace's inode
// while it lives, not by listing /run/netns before and after: other tests add and remove names in parallel, and
// a freed inode number may be reused by their namespaces.)
TEST(ScratchNetnsTest, LeavesNothingInRunNetns) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (CAP_SYS_ADMIN) to unshare a network namespace";
  auto bound_as = [](ino_t ino) {
    std::vector<std::string> names;
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator("/run/netns", ec)) {
      struct stat st {};
      if (::stat(entry.path().c_str(), &st) == 0 && st.st_ino == ino) names.push_back(entry.path().filename());
    }
    return names;
  };
  auto a = ScratchNetns::Create();
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  struct stat st {};
  ASSERT_EQ(::fstat(a->fd(), &st), 0);
  EXPECT_THAT(bound_as(st.st_ino), ::testing::IsEmpty());
}

// Regression: the helper child of each Create inherited the pipes of a Create running at the same time on another
// thread; two such children each held the other's release pipe open, so neither saw its end, both blocked forever
// and so did the two callers in waitpid (found as two orphaned iptkitd children blocked in a pipe read after a test
// daemon that canonicalized in scratch namespaces from two threads was killed). Many Creates from two threads
// must all finish; the bound is a liveness bound (each takes milliseconds), and a hang aborts the test program.
TEST(ScratchNetnsTest, CreatesOnTwoThreadsAtOnceAllFinish) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (CAP_SYS_ADMIN) to unshare a network namespace";
  auto creates = [] {
    for (int i = 0; i < 200; ++i) {
      Result<ScratchNetns> ns = ScratchNetns::Create();
      if (!ns.ok()) return ns.status();
    }
    return Status::Ok();
  };
  auto a = std::async(std::launch::async, creates);
  auto b = std::async(std::launch::async, creates);
  const auto until = std::chrono::steady_clock::now() + std::chrono::minutes(5);
  if (a.wait_until(until) != std::future_status::ready || b.wait_until(until) != std::future_status::ready) {
    ADD_FAILURE() << "ScratchNetns::Create on two threads did not finish: the helper children hold each other's pipes";
    std::abort();  // the blocked threads cannot be joined
  }
  EXPECT_TRUE(a.get().ok());
  EXPECT_TRUE(b.get().ok());
}

class NamedNetnsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root for ip netns";
    name_ = "iptkit-restore-base-" + std::to_string(::getpid());
    auto r = RunSubprocess(Cmd("/usr/sbin/ip", {"ip", "netns", "add", name_}));
    ASSERT_TRUE(r.ok() && r->exit_code == 0) << (r.ok() ? r->stderr_text : r.status().ToString());
    created_ = true;
  }
  void TearDown() override {
    if (created_) (void)RunSubprocess(Cmd("/usr/sbin/ip", {"ip", "netns", "delete", name_}));
  }
  std::string name_;
  bool created_ = false;
};

TEST_F(NamedNetnsTest, OpensByName) {
  auto fd = OpenNetns(name_);
  ASSERT_TRUE(fd.ok()) << fd.status().ToString();
  auto id = GetNetnsId(fd->get());
  auto expected = IdOfPath("/run/netns/" + name_);
  ASSERT_TRUE(id.ok() && expected.ok());
  EXPECT_EQ(*id, *expected);
}

}  // namespace
}  // namespace iptkit::base
