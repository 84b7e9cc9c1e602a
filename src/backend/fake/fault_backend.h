// FaultBackend: wraps another Backend and fails on demand (leveldb's FaultInjectionTestEnv), to prove that
// iptkit rolls back multi-table transactions and reports inverse failures.
//
// Faults apply to Commit (and optionally Read): a failed Commit is not passed on, so the wrapped backend is
// unchanged, exactly like a kernel rejection of the whole table block. Everything else is forwarded.
// Thread-safety: not thread-safe (like every Backend).
//
//   auto fault = std::make_unique<FaultBackend>(NewFakeBackend());
//   fault->FailNthCommit(2, Status::InvalidArgument("line 1 failed"));   // the 2nd commit from now fails
//   fault->SetBeforeCommit([&](const TableBatch& b) { ... });             // runs before every commit
//   auto fw = Firewall::WithBackend(std::move(fault));
#ifndef IPTKIT_SRC_BACKEND_FAKE_FAULT_BACKEND_H_
#define IPTKIT_SRC_BACKEND_FAKE_FAULT_BACKEND_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "src/backend/backend.h"

namespace iptkit::backend {

class FaultBackend : public Backend {
 public:
  explicit FaultBackend(std::unique_ptr<Backend> inner);

  Backend& inner() { return *inner_; }

  // The n-th Commit call counted from now (1 = the next one) fails with `status` (not OK).
  void FailNthCommit(int n, Status status);
  // Commits of (family, table) fail with `status`; `times` < 0 means every one, else only the next `times`.
  void FailTableCommits(Family family, std::string table, Status status, int times = -1);
  // The next `times` Reads fail with `status`.
  void FailReads(Status status, int times = 1);
  // Forgets every pending fault.
  void ClearFaults();
  // Called before each Commit (faulty or not) with the batch, e.g. to slip in a foreign writer.
  void SetBeforeCommit(std::function<void(const TableBatch&)> hook) { before_commit_ = std::move(hook); }

  // Commit calls so far, and every batch given to Commit (including failed ones), in order.
  int commit_calls() const { return static_cast<int>(attempted_.size()); }
  const std::vector<TableBatch>& attempted() const { return attempted_; }

  // The inner backend's, except that it commits table by table (faults hit single tables).
  const BackendTraits& traits() const override { return traits_; }
  Result<Ruleset> Read(Family family, const std::optional<std::string>& table = std::nullopt,
                       bool fresh_counters = true) override;
  // Table by table (CommitTableByTable); each table commit counts as one call and may fail by a fault.
  Result<CommitReport> Commit(const std::vector<CommitTable>& tables) override;
  using Backend::Commit;
  Result<std::vector<Rule>> Canonicalize(Family family, const std::string& table,
                                         const std::vector<Rule>& rules) override {
    return inner_->Canonicalize(family, table, rules);
  }
  Result<std::unique_ptr<LockGuard>> Lock(std::chrono::milliseconds wait) override { return inner_->Lock(wait); }
  Result<FirewallInfo> Info() override { return inner_->Info(); }

 private:
  struct TableFault {
    Family family;
    std::string table;
    Status status;
    int times;
  };
  Status CommitOneTable(const TableBatch& batch);
  std::unique_ptr<Backend> inner_;
  BackendTraits traits_;
  std::vector<std::pair<int, Status>> nth_faults_;  // absolute commit number (1-based) → status
  std::vector<TableFault> table_faults_;
  Status read_fault_;
  int read_fault_times_ = 0;
  std::function<void(const TableBatch&)> before_commit_;
  std::vector<TableBatch> attempted_;
};

}  // namespace iptkit::backend

#endif  // IPTKIT_SRC_BACKEND_FAKE_FAULT_BACKEND_H_
