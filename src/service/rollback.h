// What undoes a commit-confirm transaction, and its JSON form in the store (ConfirmRecord::rollback).
//
// The kernel part is the transaction's guarded inverse batches (txn::PlannedTable::inverse of just its ops); the
// store part lists every managed rule and owner document the transaction changed, with the value before and after.
// A rollback puts a value back only while it is still the one the transaction left (a later change wins), and
// applies the inverse ops that still apply (a rule someone deleted since is not deleted twice).
// Thread-safety: values and pure functions.
//
//   Rollback undo = ...;
//   std::string text = RollbackToJson(undo);      // stored with the confirm record
//   IPTKIT_ASSIGN_OR_RETURN(Rollback again, RollbackFromJson(text));
#ifndef IPTKIT_SRC_SERVICE_ROLLBACK_H_
#define IPTKIT_SRC_SERVICE_ROLLBACK_H_

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "iptkit/desired.h"
#include "iptkit/status.h"
#include "src/backend/backend.h"
#include "src/store/store.h"

namespace iptkit::service {

struct Rollback {
  std::vector<backend::TableBatch> batches;  // in commit order
  struct ManagedChange {
    store::ManagedRuleKey key;
    std::optional<store::ManagedRule> before, after;
  };
  std::vector<ManagedChange> managed;
  struct DocumentChange {
    std::string owner;
    std::optional<DesiredState> before, after;
  };
  std::vector<DocumentChange> documents;
};

std::string RollbackToJson(const Rollback& rollback);
// InvalidArgument naming the JSON pointer for text this module did not write.
Result<Rollback> RollbackFromJson(std::string_view text);

}  // namespace iptkit::service

#endif  // IPTKIT_SRC_SERVICE_ROLLBACK_H_
