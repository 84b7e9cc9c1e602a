// TransactionFromJson lives in its own file: it needs Transaction's builder (src/txn/transaction.cc), which the
// rest of the codec does not, so binaries that only decode rules and ops do not link the txn library.
#include "src/json/json_codec.h"

namespace iptkit::json {

Result<Transaction> TransactionFromJson(const Json& j, const SpecCodec& spec) {
  if (!j.is_object()) return Status::InvalidArgument("(document): expected object with \"ops\"");
  for (const auto& [key, value] : j.items()) {
    if (key != "ops") {
      return Status::InvalidArgument(PointerJoin("", key) + ": unknown field (expected one of: ops)")
          .WithField(PointerJoin("", key));
    }
  }
  auto it = j.find("ops");
  if (it == j.end()) return Status::InvalidArgument("/ops: required field is missing").WithField("/ops");
  if (!it->is_array()) return Status::InvalidArgument("/ops: expected array of ops").WithField("/ops");
  const Json* ops = &*it;
  Transaction txn;
  for (size_t i = 0; i < ops->size(); ++i) {
    IPTKIT_ASSIGN_OR_RETURN(Op op, OpFromJson((*ops)[i], "/ops/" + std::to_string(i), spec));
    txn.Add(std::move(op));
  }
  return txn;
}

}  // namespace iptkit::json
