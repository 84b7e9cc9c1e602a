#include "src/backend/fake/fault_backend.h"

#include <algorithm>
#include <cassert>

namespace iptkit::backend {

FaultBackend::FaultBackend(std::unique_ptr<Backend> inner) : inner_(std::move(inner)) {
  assert(inner_);
  traits_ = inner_->traits();
  traits_.atomic_across_tables = false;
}

void FaultBackend::FailNthCommit(int n, Status status) {
  assert(n >= 1 && !status.ok());
  nth_faults_.emplace_back(commit_calls() + n, std::move(status));
}

void FaultBackend::FailTableCommits(Family family, std::string table, Status status, int times) {
  assert(!status.ok());
  table_faults_.push_back({family, std::move(table), std::move(status), times});
}

void FaultBackend::FailReads(Status status, int times) {
  read_fault_ = std::move(status);
  read_fault_times_ = times;
}

void FaultBackend::ClearFaults() {
  nth_faults_.clear();
  table_faults_.clear();
  read_fault_times_ = 0;
}

Result<Ruleset> FaultBackend::Read(Family family, const std::optional<std::string>& table, bool fresh_counters) {
  if (read_fault_times_ > 0) {
    --read_fault_times_;
    return read_fault_;
  }
  return inner_->Read(family, table, fresh_counters);
}

Result<CommitReport> FaultBackend::Commit(const std::vector<CommitTable>& tables) {
  return CommitTableByTable(tables, traits_.name, [this](const TableBatch& batch) { return CommitOneTable(batch); });
}

Status FaultBackend::CommitOneTable(const TableBatch& batch) {
  if (before_commit_) before_commit_(batch);
  attempted_.push_back(batch);
  const int number = commit_calls();
  for (auto it = nth_faults_.begin(); it != nth_faults_.end(); ++it) {
    if (it->first == number) {
      Status s = it->second;
      nth_faults_.erase(it);
      return s;
    }
  }
  for (auto it = table_faults_.begin(); it != table_faults_.end(); ++it) {
    if (it->family != batch.family || it->table != batch.table || it->times == 0) continue;
    Status s = it->status;
    if (it->times > 0 && --it->times == 0) table_faults_.erase(it);
    return s;
  }
  return inner_->Commit(batch);
}

}  // namespace iptkit::backend
