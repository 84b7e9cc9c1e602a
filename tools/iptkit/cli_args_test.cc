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

TEST(CliArgsTest, InsertWithoutIndexInsertsFirstLikeIptables) {
  Invocation inv = ParseOk({"insert", "INPUT", "-j", "ACCEPT"});
  EXPECT_EQ(inv.index, 1);
  EXPECT_THAT(inv.spec, ElementsAre("-j", "ACCEPT"));
}

TEST(CliArgsTest, ReplaceWithoutIndexIsUsageError) {
  Status s = ParseError({"replace", "INPUT", "-j", "ACCEPT"});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("'-j' is not a rule number"));
  EXPECT_EQ(s.details().argument, 3);
  EXPECT_EQ(s.details().token, "-j");
}

TEST(CliArgsTest, InsertBadIndex) {
  // Not a number: the RULESPEC starts there (and the rule parser names it).
  EXPECT_THAT(ParseOk({"insert", "INPUT", "x3", "-j", "ACCEPT"}).spec, ElementsAre("x3", "-j", "ACCEPT"));
  Status zero = ParseError({"insert", "INPUT", "0", "-j", "ACCEPT"});
  EXPECT_THAT(zero.message(), HasSubstr("rule numbers start at 1"));
  EXPECT_EQ(zero.details().argument, 3);
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
  EXPECT_EQ(s.details().token, "--frobnicate");
  EXPECT_EQ(s.details().argument, 1);
  EXPECT_THAT(ParseError({"--json", "--bogus"}).message(), HasSubstr("'--bogus'"));
  EXPECT_THAT(ParseError({"-vv"}).message(), HasSubstr("no command given"));
  Status before_chain = ParseError({"append", "--bogus", "INPUT", "-j", "ACCEPT"});
  EXPECT_THAT(before_chain.message(), HasSubstr("--bogus"));
  EXPECT_EQ(before_chain.details().argument, 2);
  // An option of another command says so.
  Status other = ParseError({"append", "--cascade", "INPUT", "-j", "ACCEPT"});
  EXPECT_THAT(other.message(), HasSubstr("'--cascade' does not apply to append"));
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

// iptables users give the table first: `iptables -t nat -A ...`.
TEST(CliArgsTest, TableBeforeOrAfterTheCommand) {
  Invocation before = ParseOk({"-t", "mangle", "append", "PREROUTING", "-j", "ACCEPT"});
  EXPECT_EQ(before.kind, CommandKind::kAppend);
  EXPECT_EQ(before.table, "mangle");
  EXPECT_EQ(before.chain, "PREROUTING");
  EXPECT_THAT(before.spec, ElementsAre("-j", "ACCEPT"));
  Invocation after = ParseOk({"append", "-t", "mangle", "PREROUTING", "-j", "ACCEPT"});
  EXPECT_EQ(after.table, before.table);
  EXPECT_EQ(after.spec, before.spec);
  EXPECT_EQ(ParseOk({"--table=nat", "chain", "create", "X"}).table, "nat");
  EXPECT_EQ(ParseOk({"-tnat", "list"}).table, "nat");
  // A table does not apply where the input names it.
  Status txn = ParseError({"-t", "nat", "txn", "ops.json"});
  EXPECT_THAT(txn.message(), HasSubstr("-t/--table does not apply to txn"));
  EXPECT_EQ(txn.details().argument, 1);
}

TEST(CliArgsTest, RulespecStartsAfterChainAndRecordsItsPosition) {
  Invocation inv = ParseOk({"-6", "append", "--dry-run", "INPUT", "-j", "ACCEPT", "--dry-run"});
  // The second --dry-run is part of the RULESPEC (the runner tells the user that iptkit options go before CHAIN).
  EXPECT_THAT(inv.spec, ElementsAre("-j", "ACCEPT", "--dry-run"));
  EXPECT_EQ(inv.spec_begin, 4u);
  EXPECT_EQ(inv.args[inv.spec_begin], "-j");
  Invocation dashed = ParseOk({"append", "INPUT", "--", "-j", "ACCEPT"});
  EXPECT_EQ(dashed.spec_begin, 3u);
  Invocation replace = ParseOk({"replace", "INPUT", "2", "-j", "DROP", "--expect", "-j", "ACCEPT"});
  EXPECT_EQ(replace.spec_begin, 3u);
  EXPECT_EQ(replace.expect_begin, 6u);
}

TEST(CliArgsTest, IptkitOptionsAreKnownPerCommand) {
  EXPECT_TRUE(IsIptkitOption("--dry-run", CommandKind::kAppend));
  EXPECT_TRUE(IsIptkitOption("--unique", CommandKind::kInsert));
  EXPECT_TRUE(IsIptkitOption("-t", CommandKind::kCheck));
  EXPECT_TRUE(IsIptkitOption("--table=nat", CommandKind::kAppend));
  EXPECT_TRUE(IsIptkitOption("-6", CommandKind::kAppend));
  EXPECT_TRUE(IsIptkitOption("--owner", CommandKind::kDeleteAt));
  EXPECT_FALSE(IsIptkitOption("--unique", CommandKind::kDelete));
  EXPECT_FALSE(IsIptkitOption("-n", CommandKind::kAppend));  // list's and restore's, not append's
  EXPECT_FALSE(IsIptkitOption("--dport", CommandKind::kAppend));
  EXPECT_FALSE(IsIptkitOption("--", CommandKind::kAppend));
}

TEST(CliArgsTest, ListTakesIptablesFlags) {
  Invocation inv = ParseOk({"list", "-nvx", "--line-numbers", "INPUT", "3"});
  EXPECT_EQ(inv.kind, CommandKind::kList);
  EXPECT_TRUE(inv.list.numeric);
  EXPECT_TRUE(inv.list.exact);
  EXPECT_TRUE(inv.list.line_numbers);
  EXPECT_EQ(inv.global.verbosity, 1);
  EXPECT_EQ(inv.table, "");
  EXPECT_EQ(inv.chain, "INPUT");
  EXPECT_EQ(inv.index, 3);
  Invocation table_chain = ParseOk({"list", "nat", "POSTROUTING", "-S"});
  EXPECT_EQ(table_chain.table, "nat");
  EXPECT_EQ(table_chain.chain, "POSTROUTING");
  EXPECT_TRUE(table_chain.list.rules);
  // With -t every positional is the chain (a user chain may be called "nat").
  Invocation t = ParseOk({"-t", "filter", "list", "nat"});
  EXPECT_EQ(t.table, "filter");
  EXPECT_EQ(t.chain, "nat");
  EXPECT_EQ(ParseOk({"list", "--owner", "myapp"}).owner, "myapp");
  EXPECT_THAT(ParseError({"list", "INPUT", "x"}).message(), HasSubstr("'x' is not a rule number"));
  EXPECT_THAT(ParseError({"list", "INPUT", "0"}).message(), HasSubstr("'0' is not a rule number"));
}

TEST(CliArgsTest, UniqueAndMatchAll) {
  Invocation inv = ParseOk({"append", "--unique", "--match-all", "INPUT"});
  EXPECT_TRUE(inv.unique);
  EXPECT_TRUE(inv.match_all);
  EXPECT_THAT(inv.spec, IsEmpty());
  EXPECT_TRUE(ParseOk({"insert", "--unique", "INPUT", "2", "-j", "DROP"}).unique);
  EXPECT_THAT(ParseError({"delete", "--unique", "INPUT", "-j", "DROP"}).message(),
              HasSubstr("'--unique' does not apply to delete"));
}

TEST(CliArgsTest, FamilyComesFromTheJsonForFileCommands) {
  for (const char* cmd : {"txn", "plan", "apply"}) {
    Status s = ParseError({"-6", cmd, "f.json"});
    EXPECT_THAT(s.message(), HasSubstr("-6 does not apply to " + std::string(cmd))) << cmd;
    EXPECT_THAT(s.message(), HasSubstr("the family comes from the JSON"));
    EXPECT_EQ(s.details().argument, 1);
    EXPECT_EQ(ParseError({cmd, "-4", "f.json"}).details().argument, 2);
  }
  EXPECT_EQ(ParseOk({"-6", "restore", "f"}).global.family, Family::kIPv6);
}

TEST(CliArgsTest, DaemonSocketTtlAndOwner) {
  Invocation plain = ParseOk({"--daemon", "append", "--owner", "web", "--ttl", "10m", "INPUT", "-j", "DROP"});
  ASSERT_TRUE(plain.global.daemon.has_value());
  EXPECT_EQ(*plain.global.daemon, kDefaultDaemonSocket);
  EXPECT_EQ(plain.owner, "web");
  EXPECT_EQ(plain.ttl_seconds, 600);
  Invocation path = ParseOk({"--daemon", "/tmp/d.sock", "list"});
  EXPECT_EQ(*path.global.daemon, "/tmp/d.sock");
  EXPECT_EQ(path.kind, CommandKind::kList);
  EXPECT_EQ(*ParseOk({"--daemon=rel.sock", "info"}).global.daemon, "rel.sock");
  EXPECT_EQ(*ParseOk({"info", "--daemon", "./x.sock"}).global.daemon, "./x.sock");
  for (const char* ttl : {"90", "90s", "2h", "1d"}) {
    EXPECT_TRUE(ParseOk({"--daemon", "append", "--ttl", ttl, "INPUT", "-j", "DROP"}).ttl_seconds.has_value());
  }
  EXPECT_EQ(ParseOk({"--daemon", "append", "--ttl", "1d", "INPUT", "-j", "DROP"}).ttl_seconds, 86400);
  Status bad = ParseError({"--daemon", "append", "--ttl", "10x", "INPUT", "-j", "DROP"});
  EXPECT_THAT(bad.message(), HasSubstr("--ttl"));
  EXPECT_EQ(bad.details().argument, 4);
  // --ttl and --owner on changes need iptkitd, which keeps the rules.
  EXPECT_THAT(ParseError({"append", "--ttl", "90", "INPUT", "-j", "DROP"}).message(), HasSubstr("--daemon"));
  EXPECT_THAT(ParseError({"delete", "--owner", "web", "INPUT", "-j", "DROP"}).message(), HasSubstr("--daemon"));
}

TEST(CliArgsTest, QuietAndCombinedShortFlags) {
  Invocation inv = ParseOk({"-qv", "restore", "-nc", "-"});
  EXPECT_TRUE(inv.global.quiet);
  EXPECT_EQ(inv.global.verbosity, 1);
  EXPECT_TRUE(inv.noflush);
  EXPECT_TRUE(inv.counters);
  EXPECT_THAT(ParseError({"list", "-nz"}).message(), HasSubstr("unknown option '-z' in '-nz'"));
}

TEST(CliArgsTest, EveryCommandHasHelpWithArgumentsOptionsAndTwoExamples) {
  for (const std::string& name : CommandNames()) {
    std::vector<std::string> args;
    size_t space = name.find(' ');
    if (space == std::string::npos) {
      args = {name, "--help"};
    } else {
      args = {name.substr(0, space), name.substr(space + 1), "--help"};
    }
    Invocation inv = ParseOk(args);
    EXPECT_EQ(inv.kind, CommandKind::kHelp) << name;
    EXPECT_THAT(inv.text, HasSubstr("Usage: iptkit " + name)) << name;
    EXPECT_THAT(inv.text, HasSubstr("\nExamples:\n  iptkit ")) << name;
    size_t examples = inv.text.find("Examples:");
    size_t count = 0;
    for (size_t at = inv.text.find("\n  iptkit ", examples); at != std::string::npos;
         at = inv.text.find("\n  iptkit ", at + 1)) {
      ++count;
    }
    EXPECT_EQ(count, 2u) << name;
  }
  EXPECT_THAT(RootHelp(), HasSubstr("Exit codes:"));
  // `iptkit append INPUT --help` is help, as `iptables -A INPUT --help` is.
  EXPECT_EQ(ParseOk({"append", "INPUT", "--help"}).kind, CommandKind::kHelp);
}

TEST(CliArgsTest, ChangingCommands) {
  EXPECT_TRUE(IsChangingCommand(CommandKind::kAppend));
  EXPECT_TRUE(IsChangingCommand(CommandKind::kChainPolicy));
  EXPECT_FALSE(IsChangingCommand(CommandKind::kCheck));
  EXPECT_FALSE(IsChangingCommand(CommandKind::kPlan));
}

}  // namespace
}  // namespace iptkit::cli
