// Test helpers for the service: one in-memory "kernel" (FakeBackend) shared by the writer's and the reader's
// backends, with hooks to reject commits like the kernel does and to change it behind the daemon's back.
#ifndef IPTKIT_SRC_SERVICE_SERVICE_TEST_UTIL_H_
#define IPTKIT_SRC_SERVICE_SERVICE_TEST_UTIL_H_

#include <unistd.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "iptkit/dialect.h"
#include "src/backend/fake/fake_backend.h"

namespace iptkit::service::test {

// The shared kernel: a FakeBackend behind a mutex.
struct FakeKernel {
  std::mutex mu;
  backend::FakeBackend fake;
  // Called (under mu) before each commit; a non-OK Status rejects the batch like the kernel at COMMIT.
  std::function<Status(const backend::TableBatch&)> reject;
  int commits = 0;  // successful commits

  std::string Save(Family family) {
    std::lock_guard<std::mutex> lock(mu);
    Result<Ruleset> rs = fake.Read(family);
    return rs.ok() ? FormatSave(*rs) : rs.status().ToString();
  }
  // A foreign writer (someone running iptables by hand).
  Status Foreign(Family family, const std::string& table, std::vector<backend::TableOp> ops) {
    std::lock_guard<std::mutex> lock(mu);
    backend::TableBatch batch;
    batch.family = family;
    batch.table = table;
    batch.ops = std::move(ops);
    return fake.Commit(batch);
  }
};

// A Backend over a FakeKernel.
class SharedFakeBackend : public backend::Backend {
 public:
  explicit SharedFakeBackend(std::shared_ptr<FakeKernel> kernel) : kernel_(std::move(kernel)) {}
  std::string name() const override { return "fake"; }
  Result<Ruleset> Read(Family family, const std::optional<std::string>& table, bool fresh_counters) override {
    std::lock_guard<std::mutex> lock(kernel_->mu);
    return kernel_->fake.Read(family, table, fresh_counters);
  }
  Status Commit(const backend::TableBatch& batch) override {
    std::lock_guard<std::mutex> lock(kernel_->mu);
    if (kernel_->reject) IPTKIT_RETURN_IF_ERROR(kernel_->reject(batch));
    Status s = kernel_->fake.Commit(batch);
    if (s.ok()) ++kernel_->commits;
    return s;
  }
  Result<std::vector<Rule>> Canonicalize(Family family, const std::string& table,
                                         const std::vector<Rule>& rules) override {
    std::lock_guard<std::mutex> lock(kernel_->mu);
    return kernel_->fake.Canonicalize(family, table, rules);
  }
  Result<std::unique_ptr<backend::LockGuard>> Lock(std::chrono::milliseconds wait) override {
    std::lock_guard<std::mutex> lock(kernel_->mu);
    return kernel_->fake.Lock(wait);
  }
  Result<FirewallInfo> Info() override {
    std::lock_guard<std::mutex> lock(kernel_->mu);
    return kernel_->fake.Info();
  }

 private:
  std::shared_ptr<FakeKernel> kernel_;
};

// A temporary directory removed by the destructor.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "iptkit-service-XXXXXX").string();
    path_ = mkdtemp(tmpl.data()) != nullptr ? tmpl : "";
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace iptkit::service::test

#endif  // IPTKIT_SRC_SERVICE_SERVICE_TEST_UTIL_H_
