#include "tools/iptkit/cli_args.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace iptkit::cli {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

Invocation ParseOk(const std::vector<std::string>& args) {
  Result<Invocation> inv = ParseCommandLine(args);
  EXPECT_TRUE(inv.ok()) << inv.status().ToString();
  return inv.ok() ? *inv : Invocation{};
}

Status ParseError(const std::vector<std::string>& args) {
  Result<Invocation> inv = ParseCommandLine(args);
  EXPECT_FALSE(inv.ok());
  return inv.status();
}

TEST(CliArgsTest, GlobalsBeforeCommand) {
  Invocation inv = ParseOk({"--netns", "blue", "--backend", "legacy", "-6", "--json", "--wait", "2.5", "-v", "info"});
  EXPECT_EQ(inv.kind, CommandKind::kInfo);
  EXPECT_EQ(inv.global.netns, "blue");
  EXPECT_EQ(inv.global.backend, BackendKind::kLegacy);
  EXPECT_EQ(inv.global.family, Family::kIPv6);
  EXPECT_TRUE(inv.global.json);
  EXPECT_EQ(inv.global.wait, std::chrono::milliseconds(2500));
  EXPECT_EQ(inv.global.verbosity, 1);
}

TEST(CliArgsTest, Defaults) {
  Invocation inv = ParseOk({"save"});
  EXPECT_EQ(inv.kind, CommandKind::kSave);
  EXPECT_EQ(inv.global.backend, BackendKind::kAuto);
  EXPECT_EQ(inv.global.family, Family::kIPv4);
  EXPECT_EQ(inv.global.wait, std::chrono::seconds(10));
  EXPECT_FALSE(inv.global.json);
  EXPECT_EQ(inv.table, "");
  EXPECT_EQ(inv.TableOrFilter(), "filter");
}

TEST(CliArgsTest, GlobalsAfterCommand) {
  Invocation inv = ParseOk({"list", "-6", "--json", "nat", "POSTROUTING", "--counters"});
  EXPECT_EQ(inv.kind, CommandKind::kList);
  EXPECT_EQ(inv.global.family, Family::kIPv6);
  EXPECT_TRUE(inv.global.json);
  EXPECT_EQ(inv.table, "nat");
  EXPECT_EQ(inv.chain, "POSTROUTING");
  EXPECT_TRUE(inv.counters);
}

TEST(CliArgsTest, AppendTakesRawRulespecWithDashOptions) {
  // -t, -v, -4 and --json inside the RULESPEC belong to the spec, not to iptkit.
  Invocation inv = ParseOk({"append", "-t", "mangle", "--dry-run", "PREROUTING", "-s", "1.2.3.4", "-p", "tcp",
                            "--dport", "22", "-m", "comment", "--comment", "-t -v --json", "-j", "ACCEPT"});
  EXPECT_EQ(inv.kind, CommandKind::kAppend);
  EXPECT_EQ(inv.table, "mangle");
  EXPECT_TRUE(inv.dry_run);
  EXPECT_EQ(inv.chain, "PREROUTING");
  EXPECT_THAT(inv.spec, ElementsAre("-s", "1.2.3.4", "-p", "tcp", "--dport", "22", "-m", "comment", "--comment",
                                    "-t -v --json", "-j", "ACCEPT"));
}

TEST(CliArgsTest, DoubleDashBeforeRulespecIsDropped) {
  Invocation inv = ParseOk({"check", "INPUT", "--", "-j", "DROP"});
  EXPECT_EQ(inv.kind, CommandKind::kCheck);
  EXPECT_EQ(inv.table, "");
  EXPECT_THAT(inv.spec, ElementsAre("-j", "DROP"));
}

TEST(CliArgsTest, RulespecStartingWithNegation) {
  Invocation inv = ParseOk({"append", "INPUT", "!", "-s", "10.0.0.0/8", "-j", "DROP"});
  EXPECT_THAT(inv.spec, ElementsAre("!", "-s", "10.0.0.0/8", "-j", "DROP"));
}

TEST(CliArgsTest, TableLongFormAndEqualsForm) {
  EXPECT_EQ(ParseOk({"append", "--table", "nat", "OUTPUT", "-j", "ACCEPT"}).table, "nat");
  EXPECT_EQ(ParseOk({"append", "--table=raw", "OUTPUT", "-j", "ACCEPT"}).table, "raw");
}

TEST(CliArgsTest, InsertAndReplaceTakeIndex) {
  Invocation ins = ParseOk({"insert", "INPUT", "3", "-j", "ACCEPT"});
  EXPECT_EQ(ins.kind, CommandKind::kInsert);
  EXPECT_EQ(ins.index, 3);
  EXPECT_THAT(ins.spec, ElementsAre("-j", "ACCEPT"));

  Invocation rep =
      ParseOk({"replace", "-t", "nat", "PREROUTING", "1", "-p", "udp", "-j", "RETURN", "--expect", "-j", "ACCEPT"});
  EXPECT_EQ(rep.kind, CommandKind::kReplace);
  EXPECT_EQ(rep.index, 1);
  EXPECT_THAT(rep.spec, ElementsAre("-p", "udp", "-j", "RETURN"));
  ASSERT_TRUE(rep.expect.has_value());
  EXPECT_THAT(*rep.expect, ElementsAre("-j", "ACCEPT"));
}

TEST(CliArgsTest, InsertWithoutIndexIsUsageError) {
  Status s = ParseError({"insert", "INPUT", "-j", "ACCEPT"});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("N"));
}

TEST(CliArgsTest, InsertBadIndex) {
  EXPECT_EQ(ParseError({"insert", "INPUT", "x3", "-j", "ACCEPT"}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseError({"insert", "INPUT", "0", "-j", "ACCEPT"}).code(), StatusCode::kInvalidArgument);
}

TEST(CliArgsTest, DeleteBySpecOrIndex) {
  Invocation by_spec = ParseOk({"delete", "INPUT", "-s", "1.2.3.4", "-j", "DROP"});
  EXPECT_EQ(by_spec.kind, CommandKind::kDelete);
  EXPECT_THAT(by_spec.spec, ElementsAre("-s", "1.2.3.4", "-j", "DROP"));

  Invocation by_index = ParseOk({"delete", "-t", "nat", "POSTROUTING", "2"});
  EXPECT_EQ(by_index.kind, CommandKind::kDeleteAt);
  EXPECT_EQ(by_index.index, 2);
  EXPECT_THAT(by_index.spec, IsEmpty());
  EXPECT_FALSE(by_index.expect.has_value());

  Invocation expecting = ParseOk({"delete", "INPUT", "2", "--expect", "--", "-j", "DROP"});
  EXPECT_EQ(expecting.kind, CommandKind::kDeleteAt);
  ASSERT_TRUE(expecting.expect.has_value());
  EXPECT_THAT(*expecting.expect, ElementsAre("-j", "DROP"));
}

TEST(CliArgsTest, DeleteIndexWithSpecIsUsageError) {
  Status s = ParseError({"delete", "INPUT", "2", "-j", "DROP"});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("'-j'"));
  EXPECT_EQ(ParseError({"delete", "INPUT", "2", "--expect"}).code(), StatusCode::kInvalidArgument);
}

TEST(CliArgsTest, MissingChain) {
  EXPECT_EQ(ParseError({"append"}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseError({"append", "--", "-j", "ACCEPT"}).code(), StatusCode::kInvalidArgument);
}

TEST(CliArgsTest, UnknownOptionNamesIt) {
  Status s = ParseError({"--frobnicate", "list"});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("--frobnicate"));
  // Without a command CLI11 would only say that a subcommand is required.
  EXPECT_THAT(ParseError({"--json", "--bogus"}).message(), HasSubstr("'--bogus'"));
  EXPECT_THAT(ParseError({"-vv"}).message(), Not(HasSubstr("unknown option")));
  Status before_chain = ParseError({"append", "--bogus", "INPUT", "-j", "ACCEPT"});
  EXPECT_THAT(before_chain.message(), HasSubstr("--bogus"));
}

TEST(CliArgsTest, UnknownCommandAndBackend) {
  EXPECT_THAT(ParseError({"frobnicate"}).message(), HasSubstr("frobnicate"));
  EXPECT_THAT(ParseError({"--backend", "bogus", "info"}).message(), HasSubstr("bogus"));
  EXPECT_EQ(ParseError({}).code(), StatusCode::kInvalidArgument);
}

TEST(CliArgsTest, FamiliesAreExclusive) {
  EXPECT_THAT(ParseError({"-4", "-6", "save"}).message(), HasSubstr("-4 and -6"));
}

TEST(CliArgsTest, ChainCommands) {
  Invocation create = ParseOk({"chain", "create", "-t", "nat", "MYCHAIN"});
  EXPECT_EQ(create.kind, CommandKind::kChainCreate);
  EXPECT_EQ(create.table, "nat");
  EXPECT_EQ(create.chain, "MYCHAIN");

  Invocation del = ParseOk({"chain", "delete", "--cascade", "MYCHAIN", "--dry-run"});
  EXPECT_EQ(del.kind, CommandKind::kChainDelete);
  EXPECT_TRUE(del.cascade);
  EXPECT_TRUE(del.dry_run);

  Invocation rename = ParseOk({"chain", "rename", "OLD", "NEW"});
  EXPECT_EQ(rename.kind, CommandKind::kChainRename);
  EXPECT_EQ(rename.chain, "OLD");
  EXPECT_EQ(rename.arg, "NEW");

  Invocation flush_all = ParseOk({"chain", "flush"});
  EXPECT_EQ(flush_all.kind, CommandKind::kChainFlush);
  EXPECT_EQ(flush_all.chain, "");
  EXPECT_EQ(ParseOk({"chain", "zero", "INPUT"}).kind, CommandKind::kChainZero);
}

TEST(CliArgsTest, PolicyAcceptsBothOrders) {
  Invocation a = ParseOk({"chain", "policy", "INPUT", "DROP"});
  EXPECT_EQ(a.kind, CommandKind::kChainPolicy);
  EXPECT_EQ(a.chain, "INPUT");
  EXPECT_EQ(a.arg, "DROP");
  Invocation b = ParseOk({"chain", "policy", "ACCEPT", "FORWARD"});
  EXPECT_EQ(b.chain, "FORWARD");
  EXPECT_EQ(b.arg, "ACCEPT");
  EXPECT_THAT(ParseError({"chain", "policy", "INPUT", "REJECT"}).message(), HasSubstr("'REJECT'"));
}

TEST(CliArgsTest, FileCommands) {
  Invocation restore = ParseOk({"restore", "-", "--noflush", "--counters", "--dry-run"});
  EXPECT_EQ(restore.kind, CommandKind::kRestore);
  EXPECT_EQ(restore.arg, "-");
  EXPECT_TRUE(restore.noflush);
  EXPECT_TRUE(restore.counters);
  EXPECT_TRUE(restore.dry_run);
  EXPECT_EQ(ParseOk({"plan", "d.json"}).kind, CommandKind::kPlan);
  Invocation apply = ParseOk({"apply", "d.json", "--dry-run"});
  EXPECT_EQ(apply.kind, CommandKind::kApply);
  EXPECT_TRUE(apply.dry_run);
  EXPECT_EQ(ParseOk({"txn", "ops.json"}).kind, CommandKind::kTxn);
  EXPECT_EQ(ParseError({"restore"}).code(), StatusCode::kInvalidArgument);
  // plan changes nothing, so it has no --dry-run.
  EXPECT_EQ(ParseError({"plan", "d.json", "--dry-run"}).code(), StatusCode::kInvalidArgument);
}

TEST(CliArgsTest, HelpAndVersion) {
  Invocation help = ParseOk({"--help"});
  EXPECT_EQ(help.kind, CommandKind::kHelp);
  EXPECT_THAT(help.text, HasSubstr("append"));
  Invocation sub_help = ParseOk({"chain", "policy", "--help"});
  EXPECT_EQ(sub_help.kind, CommandKind::kHelp);
  EXPECT_THAT(sub_help.text, HasSubstr("POLICY"));
  EXPECT_THAT(ParseOk({"--version"}).text, HasSubstr("iptkit"));
}

TEST(CliArgsTest, ChangingCommands) {
  EXPECT_TRUE(IsChangingCommand(CommandKind::kAppend));
  EXPECT_TRUE(IsChangingCommand(CommandKind::kChainPolicy));
  EXPECT_FALSE(IsChangingCommand(CommandKind::kCheck));
  EXPECT_FALSE(IsChangingCommand(CommandKind::kPlan));
}

}  // namespace
}  // namespace iptkit::cli
