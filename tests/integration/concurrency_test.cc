// Concurrency that can fail (docs/architecture.md §3, docs/testing.md): a foreign writer slips `-I INPUT 1` in between
// iptkit's read and its commit (FirewallOptions::before_commit_hook). Position-based deletes and replaces must then
// either hit the rule the caller saw at that position or fail with FailedPrecondition — never delete or replace the
// rule that moved into the position. On legacy, the xtables lock held by another process turns into Unavailable within
// FirewallOptions::wait.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <future>
#include <set>

#include "iptkit/firewall.h"
#include "tests/integration/library_util.h"
#include "tests/integration/test_util.h"

namespace iptkit::integration {
namespace {

using std::chrono::milliseconds;

constexpr char kA[] = "-A INPUT -s 192.0.2.1/32 -j ACCEPT";
constexpr char kB[] = "-A INPUT -s 192.0.2.2/32 -j DROP";
constexpr char kC[] = "-A INPUT -s 192.0.2.3/32 -j ACCEPT";
constexpr char kX[] = "-A INPUT -s 203.0.113.66/32 -j ACCEPT";  // the foreign writer's rule
constexpr char kN[] = "-A INPUT -s 192.0.2.99/32 -j REJECT --reject-with icmp-port-unreachable";

class ConcurrencyTest : public ::testing::TestWithParam<BackendKind> {
 protected:
  void SetUp() override {
    IPTKIT_REQUIRE_ROOT();
    ASSERT_OK_AND_ASSIGN(ns_, TestNetns::Create());
    IPTKIT_REQUIRE_VARIANT(*ns_, variant(), Family::kIPv4);
    std::string text = std::string("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n") + kA +
                       "\n" + kB + "\n" + kC + "\nCOMMIT\n";
    CommandResult loaded = ns_->Restore(variant(), Family::kIPv4, text);
    ASSERT_TRUE(loaded.ok()) << loaded.Describe();
  }
  Variant variant() const { return VariantOf(GetParam()); }

  // A Firewall whose first commit is preceded by a foreign `iptables -I INPUT 1` of kX. The foreign writer runs
  // asynchronously: on legacy, iptkit holds the xtables lock from read to commit, so the writer (with -w) can
  // only get in afterwards; the hook waits a little for it either way, and WaitForeign() collects it.
  Result<std::unique_ptr<Firewall>> OpenWithForeignWriter() {
    FirewallOptions options;
    options.before_commit_hook = [this] {
      if (foreign_.valid()) return;  // once per test, also if iptkit retries
      foreign_ = std::async(std::launch::async, [this] {
        return ns_->Iptables(variant(), Family::kIPv4,
                             {"-w", "10", "-I", "INPUT", "1", "-s", "203.0.113.66", "-j", "ACCEPT"});
      });
      foreign_.wait_for(milliseconds(500));
    };
    return OpenFirewall(*ns_, GetParam(), options);
  }
  void WaitForeign() {
    ASSERT_TRUE(foreign_.valid()) << "before_commit_hook was never called";
    CommandResult r = foreign_.get();
    EXPECT_TRUE(r.ok()) << r.Describe();
  }
  std::vector<std::string> Input() {
    Result<std::string> saved = ns_->Save(variant(), Family::kIPv4, "filter");
    EXPECT_TRUE(saved.ok()) << saved.status().ToString();
    return saved.ok() ? RuleLines(*saved, "filter", "INPUT") : std::vector<std::string>{};
  }
  static Rule Body(const char* line) { return Spec(std::string(line).substr(std::string("-A INPUT ").size())); }

  std::unique_ptr<TestNetns> ns_;
  std::future<CommandResult> foreign_;
};

TEST_P(ConcurrencyTest, DeleteAtWithExpectNeverDeletesTheRuleThatMovedIn) {
  ASSERT_OK_AND_ASSIGN(auto fw, OpenWithForeignWriter());
  Transaction txn;
  txn.DeleteAt(Family::kIPv4, "filter", "INPUT", 2, Body(kB));  // iptkit sees A, B, C: B is at 2
  Result<CommitResult> done = fw->Commit(txn);
  WaitForeign();
  std::vector<std::string> input = Input();
  if (done.ok()) {
    EXPECT_EQ(input, (std::vector<std::string>{kX, kA, kC})) << "B had to go, and only B";
  } else {
    EXPECT_EQ(done.status().code(), StatusCode::kFailedPrecondition) << done.status().ToString();
    EXPECT_EQ(input, (std::vector<std::string>{kX, kA, kB, kC})) << "a failed delete must change nothing";
  }
}

TEST_P(ConcurrencyTest, ReplaceWithExpectNeverReplacesTheRuleThatMovedIn) {
  ASSERT_OK_AND_ASSIGN(auto fw, OpenWithForeignWriter());
  Transaction txn;
  txn.Replace(Family::kIPv4, "filter", "INPUT", 2, Body(kN), Body(kB));
  Result<CommitResult> done = fw->Commit(txn);
  WaitForeign();
  std::vector<std::string> input = Input();
  if (done.ok()) {
    // B must be the rule that went, and nothing else may change. Where N lands: on legacy the xtables lock keeps
    // the foreign insert out until the commit is done (X, A, N, C); on nft, which has no lock, the index is
    // resolved by iptables-nft-restore against the chain as it is at commit, so N may sit at index 2 of the
    // shifted chain (X, N, A, C). docs/cli.md states this; the native nft backend will close it with the
    // generation id.
    std::vector<std::string> in_place = {kX, kA, kN, kC};
    std::vector<std::string> at_index = {kX, kN, kA, kC};
    if (variant() == Variant::kLegacy) {
      EXPECT_EQ(input, in_place) << "B had to become N, nothing else";
    } else {
      EXPECT_TRUE(input == in_place || input == at_index)
          << "B had to become N, nothing else: " << ::testing::PrintToString(input);
    }
  } else {
    EXPECT_EQ(done.status().code(), StatusCode::kFailedPrecondition) << done.status().ToString();
    EXPECT_EQ(input, (std::vector<std::string>{kX, kA, kB, kC})) << "a failed replace must change nothing";
  }
}

TEST_P(ConcurrencyTest, DeleteBySpecHitsTheRuleWhereverItMoved) {
  ASSERT_OK_AND_ASSIGN(auto fw, OpenWithForeignWriter());
  Transaction txn;
  txn.Delete(Family::kIPv4, "filter", "INPUT", Body(kB));
  Result<CommitResult> done = fw->Commit(txn);
  WaitForeign();
  ASSERT_TRUE(done.ok()) << done.status().ToString();
  EXPECT_EQ(Input(), (std::vector<std::string>{kX, kA, kC}));
}

TEST_P(ConcurrencyTest, InsertAtPositionKeepsForeignRule) {
  ASSERT_OK_AND_ASSIGN(auto fw, OpenWithForeignWriter());
  Transaction txn;
  txn.Insert(Family::kIPv4, "filter", "INPUT", 1, Body(kN));
  Result<CommitResult> done = fw->Commit(txn);
  WaitForeign();
  ASSERT_TRUE(done.ok()) << done.status().ToString();
  std::vector<std::string> input = Input();
  ASSERT_EQ(input.size(), 5u);
  // Both inserted "at 1"; whichever came last is first, but nothing was lost or duplicated.
  std::multiset<std::string> got(input.begin(), input.end());
  EXPECT_EQ(got, (std::multiset<std::string>{kX, kN, kA, kB, kC}));
  EXPECT_EQ(std::vector<std::string>(input.end() - 3, input.end()), (std::vector<std::string>{kA, kB, kC}));
}

INSTANTIATE_TEST_SUITE_P(Backends, ConcurrencyTest,
                         ::testing::Values(BackendKind::kNative, BackendKind::kNft, BackendKind::kLegacy,
                                           BackendKind::kNativeLegacy),
                         BackendParamName);

// Holds flock(LOCK_EX) on `path` in a child process until Release() (or the destructor). The xtables lock is per
// mount namespace and shared with the host's iptables users, so tests hold it only for a moment.
class LockHolder {
 public:
  static Result<std::unique_ptr<LockHolder>> Hold(const std::string& path, milliseconds max_hold) {
    int ready[2];
    if (pipe2(ready, O_CLOEXEC) != 0) return Status::Internal("pipe");
    pid_t pid = fork();
    if (pid == 0) {
      close(ready[0]);
      int fd = open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
      if (fd < 0 || flock(fd, LOCK_EX) != 0) _exit(1);
      char ok = 'L';
      if (write(ready[1], &ok, 1) != 1) _exit(1);
      usleep(static_cast<useconds_t>(max_hold.count() * 1000));  // bounded even if the parent dies
      _exit(0);
    }
    close(ready[1]);
    if (pid < 0) {
      close(ready[0]);
      return Status::Internal("fork");
    }
    auto holder = std::unique_ptr<LockHolder>(new LockHolder(pid));
    char c = 0;
    ssize_t n = read(ready[0], &c, 1);
    close(ready[0]);
    if (n != 1) return Status::Unavailable("could not take " + path);
    return holder;
  }
  ~LockHolder() { Release(); }
  void Release() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

 private:
  explicit LockHolder(pid_t pid) : pid_(pid) {}
  pid_t pid_;
};

TEST(LegacyLockTest, CommitReturnsUnavailableWithinTheWaitBound) {
  IPTKIT_NEW_NETNS(ns);
  IPTKIT_REQUIRE_VARIANT(*ns, Variant::kLegacy, Family::kIPv4);
  ASSERT_OK_AND_ASSIGN(std::string before, ns->Save(Variant::kLegacy, Family::kIPv4));
  FirewallOptions options;
  options.wait = std::chrono::seconds(1);
  ASSERT_OK_AND_ASSIGN(auto fw, OpenFirewall(*ns, BackendKind::kLegacy, options));
  Transaction txn;
  txn.Append(Family::kIPv4, "filter", "INPUT", Spec("-s 192.0.2.5 -j DROP"));

  ASSERT_OK_AND_ASSIGN(auto lock, LockHolder::Hold("/run/xtables.lock", milliseconds(4000)));
  auto start = std::chrono::steady_clock::now();
  Result<CommitResult> done = fw->Commit(txn);
  auto elapsed = std::chrono::steady_clock::now() - start;
  lock->Release();

  ASSERT_FALSE(done.ok()) << "committed while another process held the xtables lock";
  EXPECT_EQ(done.status().code(), StatusCode::kUnavailable) << done.status().ToString();
  EXPECT_GE(elapsed, milliseconds(900)) << "gave up before the wait bound";
  EXPECT_LT(elapsed, milliseconds(2500)) << "overran the 1 s wait bound";
  ASSERT_OK_AND_ASSIGN(std::string after, ns->Save(Variant::kLegacy, Family::kIPv4));
  EXPECT_EQ(after, before);

  // Once the lock is free the same commit goes through.
  Result<CommitResult> retry = fw->Commit(txn);
  ASSERT_TRUE(retry.ok()) << retry.status().ToString();
  ASSERT_OK_AND_ASSIGN(std::string saved, ns->Save(Variant::kLegacy, Family::kIPv4, "filter"));
  EXPECT_EQ(RuleLines(saved, "filter", "INPUT"), (std::vector<std::string>{"-A INPUT -s 192.0.2.5/32 -j DROP"}));
}

}  // namespace
}  // namespace iptkit::integration
