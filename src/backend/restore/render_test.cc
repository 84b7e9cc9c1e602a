#include <gtest/gtest.h>

#include "iptkit/dialect.h"
#include "src/backend/backend.h"
#include "src/backend/backend_test_util.h"

namespace iptkit::backend {
namespace {

using backend_test::R;
using K = TableOp::Kind;

TEST(RenderTest, EveryOpKindAsARestoreLine) {
  Rule rule = R("-s 10.0.0.0/8 -p tcp -m tcp --dport 22 -j ACCEPT");
  const std::string spec = "-s 10.0.0.0/8 -p tcp -m tcp --dport 22 -j ACCEPT";
  EXPECT_EQ(RenderRestoreLine(TableOp::Make(K::kAppend, "INPUT", rule)), "-A INPUT " + spec);
  EXPECT_EQ(RenderRestoreLine(TableOp::Make(K::kInsert, "INPUT", rule, 3)), "-I INPUT 3 " + spec);
  EXPECT_EQ(RenderRestoreLine(TableOp::Make(K::kCheck, "INPUT", rule)), "-C INPUT " + spec);
  EXPECT_EQ(RenderRestoreLine(TableOp::Make(K::kDelete, "INPUT", rule)), "-D INPUT " + spec);
  EXPECT_EQ(RenderRestoreLine(TableOp::Make(K::kDeleteAt, "INPUT", {}, 2)), "-D INPUT 2");
  EXPECT_EQ(RenderRestoreLine(TableOp::Make(K::kReplace, "INPUT", rule, 1)), "-R INPUT 1 " + spec);
  EXPECT_EQ(RenderRestoreLine(TableOp::Make(K::kNewChain, "MYCHAIN")), "-N MYCHAIN");
  EXPECT_EQ(RenderRestoreLine(TableOp::Make(K::kDeleteChain, "MYCHAIN")), "-X MYCHAIN");
  EXPECT_EQ(RenderRestoreLine(TableOp::Make(K::kRenameChain, "MYCHAIN", {}, 0, "OTHER")), "-E MYCHAIN OTHER");
  EXPECT_EQ(RenderRestoreLine(TableOp::Make(K::kFlush, "MYCHAIN")), "-F MYCHAIN");
  EXPECT_EQ(RenderRestoreLine(TableOp::Make(K::kFlush, "")), "-F");
  EXPECT_EQ(RenderRestoreLine(TableOp::Make(K::kZero, "INPUT")), "-Z INPUT");
  EXPECT_EQ(RenderRestoreLine(TableOp::Make(K::kZero, "")), "-Z");
  EXPECT_EQ(RenderRestoreLine(TableOp::Make(K::kPolicy, "INPUT", {}, 0, "DROP")), "-P INPUT DROP");
  // An empty rule (no match, no target) has no trailing blank.
  EXPECT_EQ(RenderRestoreLine(TableOp::Make(K::kAppend, "INPUT", Rule{})), "-A INPUT");
}

TEST(RenderTest, NoflushBatchNeverDeclaresChains) {
  // Regression guard for docs/architecture.md §3: ":INPUT ACCEPT [0:0]" under --noflush resets an admin's DROP policy
  // and
  // ":MYCHAIN - [0:0]" flushes an existing chain.
  TableBatch batch;
  batch.table = "filter";
  batch.ops = {TableOp::Make(K::kNewChain, "MYCHAIN"), TableOp::Make(K::kAppend, "MYCHAIN", R("-j RETURN")),
               TableOp::Make(K::kPolicy, "FORWARD", {}, 0, "DROP"),
               TableOp::Make(K::kAppend, "INPUT", R("-j MYCHAIN"))};
  EXPECT_EQ(RenderRestoreBlock(batch),
            "*filter\n"
            "-N MYCHAIN\n"
            "-A MYCHAIN -j RETURN\n"
            "-P FORWARD DROP\n"
            "-A INPUT -j MYCHAIN\n"
            "COMMIT\n");
}

TEST(RenderTest, CountersPrefixRuleOpsOnlyWhenAsked) {
  TableBatch batch;
  batch.table = "filter";
  batch.with_counters = true;
  Rule rule = R("-j ACCEPT");
  rule.counters = {5, 420};
  batch.ops = {TableOp::Make(K::kAppend, "INPUT", rule), TableOp::Make(K::kInsert, "INPUT", rule, 1),
               TableOp::Make(K::kDelete, "INPUT", rule)};
  EXPECT_EQ(RenderRestoreBlock(batch),
            "*filter\n[5:420] -A INPUT -j ACCEPT\n[5:420] -I INPUT 1 -j ACCEPT\n-D INPUT -j ACCEPT\nCOMMIT\n");
  batch.with_counters = false;
  EXPECT_EQ(RenderRestoreBlock(batch),
            "*filter\n-A INPUT -j ACCEPT\n-I INPUT 1 -j ACCEPT\n-D INPUT -j ACCEPT\nCOMMIT\n");
}

// The typed form is sent as typed; a typed -c goes with append/insert/replace only (iptables refuses it with -C and
// -D), and a batch with counters gives them as "[p:b]" instead.
TEST(RenderTest, TypedFormIsSentWithItsCounters) {
  Rule rule = R("-p tcp --dport 22 -c 5 6 -j ACCEPT");
  TableBatch batch;
  batch.table = "filter";
  batch.ops = {TableOp::Make(K::kAppend, "INPUT", rule), TableOp::Make(K::kReplace, "INPUT", rule, 2),
               TableOp::Make(K::kCheck, "INPUT", rule), TableOp::Make(K::kDelete, "INPUT", rule)};
  EXPECT_EQ(RenderRestoreBlock(batch),
            "*filter\n-A INPUT -c 5 6 -p tcp --dport 22 -j ACCEPT\n-R INPUT 2 -c 5 6 -p tcp --dport 22 -j ACCEPT\n"
            "-C INPUT -p tcp --dport 22 -j ACCEPT\n-D INPUT -p tcp --dport 22 -j ACCEPT\nCOMMIT\n");
  batch.with_counters = true;
  batch.ops.resize(1);
  EXPECT_EQ(RenderRestoreBlock(batch), "*filter\n[5:6] -A INPUT -p tcp --dport 22 -j ACCEPT\nCOMMIT\n");
  // Changed after parsing: sent as printed.
  rule.target = Target::Jump("DROP");
  EXPECT_EQ(RenderRestoreLine(TableOp::Make(K::kAppend, "INPUT", rule)), "-A INPUT -p tcp -m tcp --dport 22 -j DROP");
}

TEST(RenderTest, FlushTableBatchDeclaresLikeIptablesSave) {
  TableBatch batch;
  batch.table = "nat";
  batch.flush_table = true;
  batch.with_counters = true;
  TableOp post = TableOp::Make(K::kPolicy, "POSTROUTING", {}, 0, "ACCEPT");
  post.rule.counters = {7, 700};
  TableOp pre = TableOp::Make(K::kPolicy, "PREROUTING", {}, 0, "DROP");
  Rule masq = R("-o eth0 -j MASQUERADE");
  batch.ops = {post, TableOp::Make(K::kNewChain, "DOCKER"), pre, TableOp::Make(K::kAppend, "POSTROUTING", masq),
               TableOp::Make(K::kAppend, "DOCKER", R("-j RETURN"))};
  // Builtins in hook order (INPUT, OUTPUT undeclared by ops → ACCEPT [0:0]), then user chains, then rules.
  EXPECT_EQ(RenderRestoreBlock(batch),
            "*nat\n"
            ":PREROUTING DROP [0:0]\n"
            ":INPUT ACCEPT [0:0]\n"
            ":OUTPUT ACCEPT [0:0]\n"
            ":POSTROUTING ACCEPT [7:700]\n"
            ":DOCKER - [0:0]\n"
            "[0:0] -A POSTROUTING -o eth0 -j MASQUERADE\n"
            "[0:0] -A DOCKER -j RETURN\n"
            "COMMIT\n");
}

TEST(RenderTest, FlushTableWithoutCountersPrintsZeroChainCounters) {
  TableBatch batch;
  batch.table = "raw";
  batch.flush_table = true;
  TableOp pre = TableOp::Make(K::kPolicy, "PREROUTING", {}, 0, "ACCEPT");
  pre.rule.counters = {1, 2};
  batch.ops = {pre};
  EXPECT_EQ(RenderRestoreBlock(batch), "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n");
}

TEST(RenderTest, IPv6RulesRenderWithTheirFamilySpelling) {
  TableBatch batch;
  batch.family = Family::kIPv6;
  batch.table = "filter";
  batch.ops = {TableOp::Make(K::kAppend, "INPUT", R("-s 2001:db8::/32 -p ipv6-icmp -j ACCEPT", Family::kIPv6))};
  EXPECT_EQ(RenderRestoreBlock(batch), "*filter\n-A INPUT -s 2001:db8::/32 -p ipv6-icmp -j ACCEPT\nCOMMIT\n");
}

}  // namespace
}  // namespace iptkit::backend
