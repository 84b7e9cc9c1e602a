#include "iptkit/transaction.h"

#include <gtest/gtest.h>

namespace iptkit {
namespace {

constexpr Family v4 = Family::kIPv4;
constexpr Family v6 = Family::kIPv6;

Rule Accept() {
  Rule r;
  r.target = Target::Jump("ACCEPT");
  return r;
}

TEST(TransactionTest, BuilderRecordsOpsInOrder) {
  Rule drop;
  drop.target = Target::Jump("DROP");
  Transaction txn;
  EXPECT_TRUE(txn.empty());
  txn.Append(v4, "filter", "INPUT", Accept())
      .Insert(v6, "mangle", "OUTPUT", 3, drop)
      .Delete(v4, "filter", "INPUT", drop)
      .DeleteAt(v4, "filter", "INPUT", 2, Accept())
      .Replace(v4, "nat", "POSTROUTING", 1, drop)
      .CreateChain(v4, "filter", "FOO")
      .DeleteChain(v4, "filter", "FOO", true)
      .RenameChain(v4, "filter", "FOO", "BAR")
      .Flush(v4, "raw")
      .Zero(v4, "filter", "INPUT")
      .SetPolicy(v4, "filter", "FORWARD", "DROP");
  ASSERT_EQ(txn.ops().size(), 11u);
  const auto& ops = txn.ops();
  EXPECT_EQ(ops[0].kind, Op::Kind::kAppend);
  EXPECT_EQ(ops[0].rule, Accept());
  EXPECT_EQ(ops[1].kind, Op::Kind::kInsert);
  EXPECT_EQ(ops[1].family, v6);
  EXPECT_EQ(ops[1].table, "mangle");
  EXPECT_EQ(ops[1].index, 3);
  EXPECT_EQ(ops[2].rule, drop);
  EXPECT_EQ(ops[3].kind, Op::Kind::kDeleteAt);
  EXPECT_EQ(ops[3].expect, Accept());
  EXPECT_EQ(ops[4].kind, Op::Kind::kReplace);
  EXPECT_FALSE(ops[4].expect.has_value());
  EXPECT_EQ(ops[5].kind, Op::Kind::kCreateChain);
  EXPECT_TRUE(ops[6].cascade);
  EXPECT_EQ(ops[7].new_name, "BAR");
  EXPECT_EQ(ops[8].chain, "");
  EXPECT_EQ(ops[9].chain, "INPUT");
  EXPECT_EQ(ops[10].policy, "DROP");
  EXPECT_FALSE(txn.empty());

  Op raw;
  raw.kind = Op::Kind::kFlush;
  raw.chain = "X";
  txn.Add(raw);
  EXPECT_EQ(txn.ops().back(), raw);
}

TEST(TransactionTest, UniqueAddsAreMarked) {
  Transaction txn;
  txn.Append(v4, "filter", "INPUT", Accept())
      .AppendUnique(v4, "filter", "INPUT", Accept())
      .InsertUnique(v6, "filter", "OUTPUT", 2, Accept());
  ASSERT_EQ(txn.ops().size(), 3u);
  EXPECT_FALSE(txn.ops()[0].unique);
  EXPECT_EQ(txn.ops()[1].kind, Op::Kind::kAppend);
  EXPECT_TRUE(txn.ops()[1].unique);
  EXPECT_EQ(txn.ops()[2].kind, Op::Kind::kInsert);
  EXPECT_EQ(txn.ops()[2].index, 2);
  EXPECT_EQ(txn.ops()[2].family, v6);
  EXPECT_TRUE(txn.ops()[2].unique);
  EXPECT_NE(txn.ops()[0], txn.ops()[1]);
}

TEST(TransactionTest, OpKindNamesAreTheJsonVerbs) {
  EXPECT_EQ(OpKindName(Op::Kind::kAppend), "append");
  EXPECT_EQ(OpKindName(Op::Kind::kInsert), "insert");
  EXPECT_EQ(OpKindName(Op::Kind::kDelete), "delete");
  EXPECT_EQ(OpKindName(Op::Kind::kDeleteAt), "delete");
  EXPECT_EQ(OpKindName(Op::Kind::kReplace), "replace");
  EXPECT_EQ(OpKindName(Op::Kind::kCreateChain), "create_chain");
  EXPECT_EQ(OpKindName(Op::Kind::kDeleteChain), "delete_chain");
  EXPECT_EQ(OpKindName(Op::Kind::kRenameChain), "rename_chain");
  EXPECT_EQ(OpKindName(Op::Kind::kFlush), "flush");
  EXPECT_EQ(OpKindName(Op::Kind::kZero), "zero");
  EXPECT_EQ(OpKindName(Op::Kind::kPolicy), "policy");
}

}  // namespace
}  // namespace iptkit
