#include "iptkit/transaction.h"

#include <utility>

namespace iptkit {

std::string_view OpKindName(Op::Kind kind) {
  switch (kind) {
    case Op::Kind::kAppend:
      return "append";
    case Op::Kind::kInsert:
      return "insert";
    case Op::Kind::kDelete:
      return "delete";
    case Op::Kind::kDeleteAt:
      return "delete";  // the same verb; the op carries an index
    case Op::Kind::kReplace:
      return "replace";
    case Op::Kind::kCreateChain:
      return "create_chain";
    case Op::Kind::kDeleteChain:
      return "delete_chain";
    case Op::Kind::kRenameChain:
      return "rename_chain";
    case Op::Kind::kFlush:
      return "flush";
    case Op::Kind::kZero:
      return "zero";
    case Op::Kind::kPolicy:
      return "policy";
  }
  return "unknown";
}

namespace {

Op MakeOp(Op::Kind kind, Family f, std::string table, std::string chain) {
  Op op;
  op.kind = kind;
  op.family = f;
  op.table = std::move(table);
  op.chain = std::move(chain);
  return op;
}

}  // namespace

Transaction& Transaction::Append(Family f, std::string table, std::string chain, Rule rule) {
  Op op = MakeOp(Op::Kind::kAppend, f, std::move(table), std::move(chain));
  op.rule = std::move(rule);
  return Add(std::move(op));
}

Transaction& Transaction::Insert(Family f, std::string table, std::string chain, int index, Rule rule) {
  Op op = MakeOp(Op::Kind::kInsert, f, std::move(table), std::move(chain));
  op.index = index;
  op.rule = std::move(rule);
  return Add(std::move(op));
}

Transaction& Transaction::AppendUnique(Family f, std::string table, std::string chain, Rule rule) {
  Append(f, std::move(table), std::move(chain), std::move(rule));
  ops_.back().unique = true;
  return *this;
}

Transaction& Transaction::InsertUnique(Family f, std::string table, std::string chain, int index, Rule rule) {
  Insert(f, std::move(table), std::move(chain), index, std::move(rule));
  ops_.back().unique = true;
  return *this;
}

Transaction& Transaction::Delete(Family f, std::string table, std::string chain, Rule rule) {
  Op op = MakeOp(Op::Kind::kDelete, f, std::move(table), std::move(chain));
  op.rule = std::move(rule);
  return Add(std::move(op));
}

Transaction& Transaction::DeleteAt(Family f, std::string table, std::string chain, int index,
                                   std::optional<Rule> expect) {
  Op op = MakeOp(Op::Kind::kDeleteAt, f, std::move(table), std::move(chain));
  op.index = index;
  op.expect = std::move(expect);
  return Add(std::move(op));
}

Transaction& Transaction::Replace(Family f, std::string table, std::string chain, int index, Rule rule,
                                  std::optional<Rule> expect) {
  Op op = MakeOp(Op::Kind::kReplace, f, std::move(table), std::move(chain));
  op.index = index;
  op.rule = std::move(rule);
  op.expect = std::move(expect);
  return Add(std::move(op));
}

Transaction& Transaction::CreateChain(Family f, std::string table, std::string chain) {
  return Add(MakeOp(Op::Kind::kCreateChain, f, std::move(table), std::move(chain)));
}

Transaction& Transaction::DeleteChain(Family f, std::string table, std::string chain, bool cascade) {
  Op op = MakeOp(Op::Kind::kDeleteChain, f, std::move(table), std::move(chain));
  op.cascade = cascade;
  return Add(std::move(op));
}

Transaction& Transaction::RenameChain(Family f, std::string table, std::string chain, std::string new_name) {
  Op op = MakeOp(Op::Kind::kRenameChain, f, std::move(table), std::move(chain));
  op.new_name = std::move(new_name);
  return Add(std::move(op));
}

Transaction& Transaction::Flush(Family f, std::string table, std::string chain) {
  return Add(MakeOp(Op::Kind::kFlush, f, std::move(table), std::move(chain)));
}

Transaction& Transaction::Zero(Family f, std::string table, std::string chain) {
  return Add(MakeOp(Op::Kind::kZero, f, std::move(table), std::move(chain)));
}

Transaction& Transaction::SetPolicy(Family f, std::string table, std::string chain, std::string policy) {
  Op op = MakeOp(Op::Kind::kPolicy, f, std::move(table), std::move(chain));
  op.policy = std::move(policy);
  return Add(std::move(op));
}

Transaction& Transaction::Add(Op op) {
  ops_.push_back(std::move(op));
  return *this;
}

}  // namespace iptkit
