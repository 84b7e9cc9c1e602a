#include "iptkit/status.h"

#include <gtest/gtest.h>

namespace iptkit {
namespace {

TEST(StatusTest, ContextKeepsTheCodeAndThePayload) {
  Status s = Status::InvalidArgument("unknown option").WithToken("--dportx", 8);
  Status outer = s.WithContext("op 1 (append ipv4 filter INPUT)");
  EXPECT_EQ(outer.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(outer.message(), "op 1 (append ipv4 filter INPUT): unknown option");
  EXPECT_EQ(outer.details().token, "--dportx");
  EXPECT_EQ(outer.details().column, 8);
}

TEST(StatusTest, SettersKeepWhatAnInnerProducerSet) {
  Status s = Status::NotFound("x").WithOpIndex(3).WithLocation("ipv4", "nat", "PREROUTING", 2);
  s = s.WithOpIndex(0).WithLocation("ipv6", "filter").WithToken("a").WithToken("b");
  EXPECT_EQ(s.details().op_index, 3);
  EXPECT_EQ(s.details().table, "nat");
  EXPECT_EQ(s.details().chain, "PREROUTING");
  EXPECT_EQ(s.details().rule, 2);
  EXPECT_EQ(s.details().token, "a");
  EXPECT_FALSE(s.details().column.has_value());
}

TEST(StatusTest, FieldPrefixNestsPointers) {
  Status s = Status::InvalidArgument("bad").WithField("/rule/spec").WithFieldPrefix("/ops/2/append");
  EXPECT_EQ(s.details().field, "/ops/2/append/rule/spec");
  EXPECT_EQ(Status::InvalidArgument("bad").WithFieldPrefix("/ops/1").details().field, "/ops/1");
}

TEST(StatusTest, OkStaysOkAndEmpty) {
  Status s = Status::Ok().WithToken("x", 1).WithField("/a").WithReason("lossy").WithContext("c");
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.details(), StatusDetails{});
  EXPECT_EQ(s, Status::Ok());
}

}  // namespace
}  // namespace iptkit
