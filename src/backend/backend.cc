// The parts of the Backend seam shared by every backend: the single-table convenience and the table-by-table
// commit sequence with guarded rollback (backend.h).
#include "src/backend/backend.h"

#include "iptkit/dialect.h"

namespace iptkit::backend {
namespace {

bool Empty(const TableBatch& batch) { return batch.ops.empty() && !batch.flush_table; }

std::string TableName(const TableBatch& batch) { return std::string(FamilyName(batch.family)) + " " + batch.table; }

}  // namespace

Result<SaveText> Backend::ReadSaveText(Family family, const std::optional<std::string>& table, bool counters) {
  SaveText out;
  IPTKIT_ASSIGN_OR_RETURN(out.read, Read(family, table));
  out.text = FormatSave(out.read, {.counters = counters, .mark_lossy = true});
  return out;
}

Result<Ruleset> Backend::ReadRules(Family family, const std::optional<std::string>& table, RuleVisitor& visitor) {
  IPTKIT_ASSIGN_OR_RETURN(Ruleset read, Read(family, table));
  visitor.Reset();
  for (Table& t : read.tables) {
    for (Chain& c : t.chains) {
      for (const Rule& r : c.rules) visitor.OnRule(t.name, c.name, r);
      c.rules.clear();
    }
  }
  return read;
}

Status Backend::Commit(const TableBatch& batch) {
  CommitTable table;
  table.batch = batch;
  return Commit(std::vector<CommitTable>{std::move(table)}).status();
}

Result<CommitReport> CommitTableByTable(const std::vector<CommitTable>& tables, const std::string& backend_name,
                                        const std::function<Status(const TableBatch&)>& commit_one) {
  std::vector<size_t> to_commit;
  for (size_t i = 0; i < tables.size(); ++i) {
    if (!Empty(tables[i].batch)) to_commit.push_back(i);
  }
  CommitReport report;
  report.backend = backend_name;
  report.atomic_across_tables = to_commit.size() <= 1;
  for (size_t k = 0; k < to_commit.size(); ++k) {
    const CommitTable& failed = tables[to_commit[k]];
    Status status = commit_one(failed.batch);
    if (status.ok()) continue;
    if (to_commit.size() == 1) return status;  // nothing to undo, nothing to tell apart

    // Undo tables k-1..0, newest first; keep going when one inverse fails so that as much as possible is undone.
    std::string rolled_back;
    std::string rollback_errors;
    std::string left_changed;
    std::string zeroed;
    for (size_t j = k; j-- > 0;) {
      const CommitTable& done = tables[to_commit[j]];
      if (done.irreversible) zeroed += (zeroed.empty() ? "" : ", ") + TableName(done.batch);
      Status undo = Empty(done.inverse) ? Status::Ok() : commit_one(done.inverse);
      if (undo.ok()) {
        rolled_back += (rolled_back.empty() ? "" : ", ") + TableName(done.batch);
      } else {
        rollback_errors += "; rollback of " + TableName(done.batch) + " failed: " + undo.ToString();
        left_changed += (left_changed.empty() ? "" : ", ") + TableName(done.batch);
      }
    }
    std::string what = "commit of " + TableName(failed.batch) + " (table " + std::to_string(k + 1) + " of " +
                       std::to_string(to_commit.size()) + ") failed";
    std::string zero_note = zeroed.empty() ? "" : " (counters zeroed in " + zeroed + " could not be restored)";
    if (!rollback_errors.empty()) {
      return Status::Internal(what + ": " + status.ToString() + rollback_errors + "; left changed: " + left_changed +
                              (rolled_back.empty() ? "" : "; rolled back: " + rolled_back) + zero_note)
          .WithDetails(status.details());
    }
    if (!rolled_back.empty()) what += ", rolled back " + rolled_back + zero_note;
    return Status(status.code(), what + ": " + status.message()).WithDetails(status.details());
  }
  return report;
}

}  // namespace iptkit::backend
