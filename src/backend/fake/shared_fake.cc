#include "src/backend/fake/shared_fake.h"

#include <utility>

namespace iptkit::backend {
namespace {

class SharedFakeHandle final : public Backend {
 public:
  explicit SharedFakeHandle(std::shared_ptr<SharedFake> shared) : shared_(std::move(shared)) {}
  const BackendTraits& traits() const override { return shared_->fake.traits(); }
  Result<Ruleset> Read(Family family, const std::optional<std::string>& table, bool fresh_counters) override {
    std::lock_guard<std::mutex> lock(shared_->mu);
    return shared_->fake.Read(family, table, fresh_counters);
  }
  Result<CommitReport> Commit(const std::vector<CommitTable>& tables) override {
    std::lock_guard<std::mutex> lock(shared_->mu);
    return CommitTableByTable(tables, traits().name, [this](const TableBatch& batch) {
      if (shared_->reject) IPTKIT_RETURN_IF_ERROR(shared_->reject(batch));
      Status s = shared_->fake.Commit(batch);
      if (s.ok()) ++shared_->commits;
      return s;
    });
  }
  using Backend::Commit;
  Result<std::vector<Rule>> Canonicalize(Family family, const std::string& table,
                                         const std::vector<Rule>& rules) override {
    std::lock_guard<std::mutex> lock(shared_->mu);
    return shared_->fake.Canonicalize(family, table, rules);
  }
  Result<std::unique_ptr<LockGuard>> Lock(std::chrono::milliseconds wait) override {
    std::lock_guard<std::mutex> lock(shared_->mu);
    return shared_->fake.Lock(wait);
  }
  Result<FirewallInfo> Info() override {
    std::lock_guard<std::mutex> lock(shared_->mu);
    return shared_->fake.Info();
  }

 private:
  std::shared_ptr<SharedFake> shared_;
};

}  // namespace

std::unique_ptr<Backend> NewSharedFakeHandle(std::shared_ptr<SharedFake> shared) {
  return std::make_unique<SharedFakeHandle>(std::move(shared));
}

}  // namespace iptkit::backend
