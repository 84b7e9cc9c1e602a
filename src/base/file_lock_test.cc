#include "src/base/file_lock.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <thread>

#include "src/base/subprocess.h"

namespace iptkit::base {
namespace {

using ::testing::HasSubstr;

class FileLockTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/iptkit-restore-lock-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/xtables.lock";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_, path_;
};

TEST_F(FileLockTest, CreatesTheFileAndLocksIt) {
  auto lock = FileLock::Acquire(path_, std::chrono::milliseconds(0));
  ASSERT_TRUE(lock.ok()) << lock.status().ToString();
  EXPECT_TRUE(std::filesystem::exists(path_));
  EXPECT_EQ(lock->path(), path_);
}

TEST_F(FileLockTest, SecondHolderTimesOutWithUnavailableWithinTheBound) {
  auto first = FileLock::Acquire(path_, std::chrono::milliseconds(0));
  ASSERT_TRUE(first.ok());
  auto start = std::chrono::steady_clock::now();
  auto second = FileLock::Acquire(path_, std::chrono::milliseconds(200));
  auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kUnavailable);
  EXPECT_THAT(second.status().message(), HasSubstr("lock busy"));
  EXPECT_THAT(second.status().message(), HasSubstr(path_));
  EXPECT_GE(elapsed, std::chrono::milliseconds(200));
  EXPECT_LT(elapsed, std::chrono::milliseconds(1000));
}

TEST_F(FileLockTest, ReleasedOnDestructionAndAcquiredWhileWaiting) {
  std::optional<FileLock> first;
  {
    auto r = FileLock::Acquire(path_, std::chrono::milliseconds(0));
    ASSERT_TRUE(r.ok());
    first.emplace(std::move(r).value());
  }
  std::thread releaser([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    first.reset();
  });
  auto second = FileLock::Acquire(path_, std::chrono::seconds(5));
  releaser.join();
  EXPECT_TRUE(second.ok()) << second.status().ToString();
}

TEST_F(FileLockTest, SeesALockHeldByAnotherProcess) {
  // flock(1) holds the lock in another process; iptables does the same.
  ASSERT_EQ(::access("/usr/bin/flock", X_OK), 0);
  std::thread holder([&] { (void)RunSubprocess(Cmd("/usr/bin/flock", {"flock", path_, "sleep", "1"})); });
  // Wait until the holder has it.
  bool held = false;
  for (int i = 0; i < 100 && !held; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    auto probe = FileLock::Acquire(path_, std::chrono::milliseconds(0));
    held = !probe.ok();
  }
  EXPECT_TRUE(held);
  auto blocked = FileLock::Acquire(path_, std::chrono::milliseconds(50));
  EXPECT_EQ(blocked.status().code(), StatusCode::kUnavailable);
  auto waited = FileLock::Acquire(path_, std::chrono::seconds(5));
  EXPECT_TRUE(waited.ok()) << waited.status().ToString();
  holder.join();
}

TEST_F(FileLockTest, DoesNotFollowSymlinks) {
  std::string target = dir_ + "/target";
  ASSERT_EQ(::symlink(target.c_str(), path_.c_str()), 0);
  auto lock = FileLock::Acquire(path_, std::chrono::milliseconds(0));
  EXPECT_EQ(lock.status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(std::filesystem::exists(target));
}

TEST_F(FileLockTest, MissingDirectoryIsNotFound) {
  auto lock = FileLock::Acquire(dir_ + "/no/such/dir/x.lock", std::chrono::milliseconds(0));
  EXPECT_EQ(lock.status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace iptkit::base
