// Codec tests with a small test spec printer/parser, so they need neither the dialect nor the txn library.
// The public API with the real dialect is covered by json_test.cc.
#include "src/json/json_codec.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <string>

namespace iptkit::json {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

std::string Quote(const std::string& v) {
  bool bare =
      !v.empty() &&
      v.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./:,") == std::string::npos;
  return bare ? v : "\"" + v + "\"";
}

void AppendOptions(std::string& out, const std::vector<Option>& options) {
  for (const Option& o : options) {
    out += o.negated ? " ! --" : " --";
    out += o.name;
    for (const std::string& v : o.values) out += " " + Quote(v);
  }
}

// Enough of iptables-save's layout for these tests (the real printer is FormatRuleSpec).
std::string TestFormat(const Rule& r) {
  std::string out;
  auto field = [&out](const std::optional<Field>& f, const char* flag) {
    if (!f) return;
    out += f->negated ? " ! " : " ";
    out += flag;
    if (!f->value.empty()) out += " " + f->value;
  };
  field(r.source, "-s");
  field(r.destination, "-d");
  field(r.in_interface, "-i");
  field(r.out_interface, "-o");
  field(r.protocol, "-p");
  field(r.fragment, "-f");
  for (const Match& m : r.matches) {
    out += " -m " + m.name;
    AppendOptions(out, m.options);
  }
  if (r.target.kind != Target::Kind::kNone) {
    out += r.target.kind == Target::Kind::kGoto ? " -g " : " -j ";
    out += r.target.name;
    AppendOptions(out, r.target.options);
  }
  return out.empty() ? out : out.substr(1);
}

Rule SshRule() {
  Rule r;
  r.source = Field{"10.0.0.0/8"};
  r.protocol = Field{"tcp"};
  r.matches.push_back(Match{"tcp", {Option{"dport", false, {"22"}}}});
  r.matches.push_back(Match{"comment", {Option{"comment", false, {"ssh"}}}});
  r.target = Target::Jump("ACCEPT");
  return r;
}

Rule JumpRule(std::string chain) {
  Rule r;
  r.target = Target::Jump(std::move(chain));
  return r;
}

// Parses only the specs registered in `known`: ones it printed, and a few user input forms mapped to the rule
// iptables would make of them.
struct TestSpec {
  std::map<std::string, Rule> known;
  SpecCodec codec;
  TestSpec() {
    known["-s 10.0.0.0/8 -p tcp -m tcp --dport 22 -m comment --comment \"ssh\" -j ACCEPT"] = SshRule();
    known["-s 10.0.0.0/8 -p tcp --dport 22 -m comment --comment ssh -j ACCEPT"] = SshRule();
    known["-j ACCEPT"] = JumpRule("ACCEPT");
    known["-j RETURN"] = JumpRule("RETURN");
    known["-j MYAPP-IN"] = JumpRule("MYAPP-IN");
    // Parses back whatever it printed, like the real dialect would.
    codec.format = [this](const Rule& r) {
      std::string text = TestFormat(r);
      Rule copy = r;
      copy.counters = {};
      known.emplace(text, copy);
      return text;
    };
    codec.parse = [this](std::string_view spec, Family) -> Result<Rule> {
      auto it = known.find(std::string(spec));
      if (it == known.end()) return Status::InvalidArgument("column 0: cannot parse '" + std::string(spec) + "'");
      return it->second;
    };
  }
};

Json MustParse(std::string_view text) {
  Result<Json> j = Parse(text);
  EXPECT_TRUE(j.ok()) << j.status().ToString();
  return j.ok() ? *j : Json();
}

// ---- Text ----

TEST(JsonParseTest, MalformedJsonNamesTheByte) {
  Result<Json> j = Parse(R"({"ops": [ {"append": } ]})");
  ASSERT_FALSE(j.ok());
  EXPECT_EQ(j.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(j.status().message(), StartsWith("malformed JSON at byte 22"));
  EXPECT_THAT(Parse("").status().message(), StartsWith("malformed JSON at byte 1"));
  EXPECT_THAT(Parse("{\"a\":1} trailing").status().message(), HasSubstr("malformed JSON"));
}

TEST(JsonParseTest, DuplicateKeysAreErrorsNamingTheirPointer) {
  Result<Json> j = Parse(R"({"ops":[{"append":{"chain":"A","rule":{"spec":"-j DROP","spec":"-j ACCEPT"}}}]})");
  ASSERT_FALSE(j.ok());
  EXPECT_EQ(j.status().message(), "/ops/0/append/rule/spec: duplicate key");
  j = Parse(R"({"a":[1,{"b":1},[2,{"c":1,"c":2}]]})");
  EXPECT_EQ(j.status().message(), "/a/2/1/c: duplicate key");
  // The same key in sibling objects is fine.
  EXPECT_TRUE(Parse(R"([{"a":1},{"a":2}])").ok());
}

TEST(JsonParseTest, PointerEscaping) {
  EXPECT_EQ(PointerJoin("/x", "a/b~c"), "/x/a~1b~0c");
  TestSpec spec;
  Result<RuleInput> r = RuleFromJson(MustParse(R"({"we/ird~":1})"), Family::kIPv4, "/r", spec.codec);
  EXPECT_THAT(r.status().message(), StartsWith("/r/we~1ird~0: unknown field"));
}

TEST(JsonParseTest, DumpReplacesInvalidUtf8InsteadOfThrowing) {
  Json j = Json::object();
  j["comment"] = std::string("bad \xff byte");
  std::string out = Dump(j);
  EXPECT_THAT(out, HasSubstr("bad "));
  EXPECT_THAT(out, HasSubstr("\xEF\xBF\xBD"));
}

// ---- Rules ----

TEST(RuleJsonTest, GoldenShapeOfDesignExample) {
  TestSpec spec;
  Rule r = SshRule();
  RuleOutput out;
  out.location = RuleLocation{Family::kIPv4, "filter", "INPUT", 3};
  r.SetOwnerTag({"myapp", "01HZX"});
  // docs/json.md's example (plus the owner tag the example's "owner" implies).
  EXPECT_EQ(
      Dump(RuleToJson(r, out, spec.codec)),
      R"({"family":"ipv4","table":"filter","chain":"INPUT","index":3,)"
      R"("spec":"-s 10.0.0.0/8 -p tcp -m tcp --dport 22 -m comment --comment ssh -m comment --comment iptkit:myapp:01HZX -j ACCEPT",)"
      R"("src":{"addr":"10.0.0.0/8"},"protocol":{"value":"tcp"},)"
      R"("matches":[{"name":"tcp","options":[{"name":"dport","values":["22"]}]},)"
      R"({"name":"comment","options":[{"name":"comment","values":["ssh"]}]},)"
      R"({"name":"comment","options":[{"name":"comment","values":["iptkit:myapp:01HZX"]}]}],)"
      R"("target":{"name":"ACCEPT"},"counters":{"packets":0,"bytes":0},"owner":"myapp","id":"01HZX"})");
}

TEST(RuleJsonTest, RoundTripEveryField) {
  TestSpec spec;
  Rule r;
  r.source = Field{"10.0.0.0/8", true};
  r.destination = Field{"192.168.1.1/32"};
  r.in_interface = Field{"eth+"};
  r.out_interface = Field{"wg0", true};
  r.protocol = Field{"udp", true};
  r.fragment = Field{"", true};
  r.matches.push_back(Match{"conntrack", {Option{"ctstate", true, {"INVALID"}}}});
  r.matches.push_back(Match{"tcp", {Option{"syn", false, {}}, Option{"tcp-flags", true, {"SYN,RST", "SYN"}}}});
  r.matches.push_back(Match{"mark", {}});
  r.target = Target::Jump("LOG", {Option{"log-prefix", false, {"drop: \"x\""}}, Option{"log-uid", false, {}}});
  r.counters = Counters{12345678901234ULL, 18446744073709551615ULL};
  for (const Rule& rule : {r, JumpRule("X"), Rule{}}) {
    Json j = RuleToJson(rule, {}, spec.codec);
    // Through text, as clients see it.
    Result<Json> reparsed = Parse(Dump(j, 2));
    ASSERT_TRUE(reparsed.ok());
    Result<RuleInput> back = RuleFromJson(*reparsed, Family::kIPv4, "", spec.codec);
    ASSERT_TRUE(back.ok()) << back.status().ToString() << "\n" << Dump(j);
    EXPECT_EQ(back->rule, rule);
    EXPECT_EQ(back->rule.counters, rule.counters);
  }
  Rule go;
  go.target = Target::Goto("OTHER");
  Json j = RuleToJson(go, {}, spec.codec);
  EXPECT_EQ(Dump(j["target"]), R"({"name":"OTHER","kind":"goto"})");
  EXPECT_EQ(RuleFromJson(j, Family::kIPv4, "", spec.codec)->rule, go);
}

TEST(RuleJsonTest, SpecOnlyStructuredOnlyAndBoth) {
  TestSpec spec;
  Result<RuleInput> a =
      RuleFromJson(MustParse(R"({"spec":"-s 10.0.0.0/8 -p tcp --dport 22 -m comment --comment ssh -j ACCEPT"})"),
                   Family::kIPv4, "", spec.codec);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->rule, SshRule());
  // Both forms, agreeing (what RuleToJson prints).
  Json both = RuleToJson(SshRule(), {}, spec.codec);
  ASSERT_TRUE(RuleFromJson(both, Family::kIPv4, "", spec.codec).ok());
  // Both forms, disagreeing.
  both["target"]["name"] = "DROP";
  Result<RuleInput> bad = RuleFromJson(both, Family::kIPv4, "/rule", spec.codec);
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), StartsWith("/rule/spec: does not agree with the structured fields"));
  EXPECT_THAT(bad.status().message(), HasSubstr("-j DROP"));
  // Spec errors carry the parser's message after the pointer.
  Result<RuleInput> unparsable = RuleFromJson(MustParse(R"({"spec":"-x"})"), Family::kIPv4, "/r", spec.codec);
  EXPECT_EQ(unparsable.status().message(), "/r/spec: column 0: cannot parse '-x'");
  // Without a parser, "spec" is refused.
  SpecCodec no_parse{TestFormat, nullptr};
  EXPECT_THAT(RuleFromJson(MustParse(R"({"spec":"-j ACCEPT"})"), Family::kIPv4, "", no_parse).status().message(),
              HasSubstr("cannot be parsed here"));
  // Empty object: a rule without target (a counting rule), as iptables allows.
  Result<RuleInput> empty = RuleFromJson(MustParse("{}"), Family::kIPv4, "", spec.codec);
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->rule, Rule{});
}

TEST(RuleJsonTest, WrongTypesNameThePointer) {
  TestSpec spec;
  struct Case {
    const char* json;
    const char* error;
  } cases[] = {
      {R"([])", "(document): expected object, got array"},
      {R"({"spec":3})", "/spec: expected string, got number"},
      {R"({"src":"1.2.3.4"})", "/src: expected object, got string"},
      {R"({"src":{"addr":1}})", "/src/addr: expected string, got number"},
      {R"({"src":{}})", "/src/addr: required field is missing"},
      {R"({"src":{"addr":"1.2.3.4","not":"yes"}})", "/src/not: expected boolean, got string"},
      {R"({"src":{"address":"1.2.3.4"}})", "/src/address: unknown field (expected one of: addr, not)"},
      {R"({"in":{"addr":"eth0"}})", "/in/addr: unknown field (expected one of: name, not)"},
      {R"({"fragment":{"value":""}})", "/fragment/value: unknown field (expected one of: not)"},
      {R"({"matches":{}})", "/matches: expected array of matches"},
      {R"({"matches":[{"options":[]}]})", "/matches/0/name: required field is missing"},
      {R"({"matches":[{"name":""}]})", "/matches/0/name: empty match name"},
      {R"({"matches":[{"name":"tcp","options":[{"name":"dport","values":"22"}]}]})",
       "/matches/0/options/0/values: expected array of strings"},
      {R"({"matches":[{"name":"tcp","options":[{"name":"dport"},{"name":"sport","values":[22]}]}]})",
       "/matches/0/options/1/values: expected array of strings"},
      {R"({"matches":[{"name":"tcp","opts":[]}]})", "/matches/0/opts: unknown field (expected one of: name, options)"},
      {R"({"target":"ACCEPT"})", "/target: expected object, got string"},
      {R"({"target":{"name":"X","kind":"call"}})", "/target/kind: unknown kind 'call' (expected jump or goto)"},
      {R"({"target":{"name":"X","kind":"goto","options":[]}})", "/target/options: goto takes no options"},
      {R"({"counters":{"packets":-1}})", "/counters/packets: expected non-negative integer, got number"},
      {R"({"counters":{"packets":1.5}})", "/counters/packets: expected non-negative integer, got number"},
      {R"({"index":0})", "/index: expected integer >= 1, got 0"},
      {R"({"index":"1"})", "/index: expected integer >= 1, got string"},
      {R"({"family":"inet"})", "/family: unknown family 'inet' (expected ipv4 or ipv6)"},
      {R"({"family":"ipv6"})", "/family: 'ipv6' disagrees with 'ipv4' given by the context"},
      {R"({"table":"filtre"})", "/table: unknown table 'filtre' (expected filter, nat, mangle, raw or security)"},
      {R"({"owner":"myapp"})", "/id: \"owner\" and \"id\" go together"},
      {R"({"owner":"MyApp","id":"1"})", "/owner: owner must match [a-z0-9-]{1,32}, got 'MyApp'"},
      {R"({"bogus":true})", "/bogus: unknown field"},
  };
  for (const Case& c : cases) {
    Result<RuleInput> r = RuleFromJson(MustParse(c.json), Family::kIPv4, "", spec.codec);
    ASSERT_FALSE(r.ok()) << c.json;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << c.json;
    EXPECT_THAT(r.status().message(), StartsWith(c.error)) << c.json;
  }
}

TEST(RuleJsonTest, ValidationErrorsCarryThePointerOfTheRule) {
  TestSpec spec;
  Result<RuleInput> r =
      RuleFromJson(MustParse(R"({"matches":[{"name":"comment","options":[{"name":"comment","values":["a\nb"]}]}]})"),
                   Family::kIPv4, "/ops/0/append/rule", spec.codec);
  EXPECT_THAT(r.status().message(), StartsWith("/ops/0/append/rule: match 'comment' option '--comment'"));
  EXPECT_THAT(r.status().message(), HasSubstr("newline"));
  r = RuleFromJson(MustParse(R"({"src":{"addr":"1.2.3.4,5.6.7.8"}})"), Family::kIPv4, "", spec.codec);
  EXPECT_THAT(r.status().message(), HasSubstr("comma lists are not accepted"));
  r = RuleFromJson(MustParse(R"({"fragment":{}})"), Family::kIPv6, "", spec.codec);
  EXPECT_THAT(r.status().message(), HasSubstr("fragment (-f)"));
}

TEST(RuleJsonTest, OwnerAndIdAddOrMustMatchTheTag) {
  TestSpec spec;
  Result<RuleInput> r =
      RuleFromJson(MustParse(R"({"spec":"-j ACCEPT","owner":"myapp","id":"7"})"), Family::kIPv4, "", spec.codec);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_TRUE(r->rule.OwnerTag().has_value());
  EXPECT_EQ(r->rule.OwnerTag()->owner, "myapp");
  EXPECT_EQ(r->rule.OwnerTag()->id, "7");
  // Output of a tagged rule reads back to the same rule.
  Json out = RuleToJson(r->rule, {}, spec.codec);
  EXPECT_EQ(RuleFromJson(out, Family::kIPv4, "", spec.codec)->rule, r->rule);
  out["id"] = "8";
  EXPECT_THAT(RuleFromJson(out, Family::kIPv4, "", spec.codec).status().message(),
              StartsWith("/owner: disagrees with the rule's owner tag 'iptkit:myapp:7'"));
}

// ---- Ops ----

TEST(OpJsonTest, RoundTripEveryKind) {
  TestSpec spec;
  std::vector<Op> ops;
  // kind, family, table, chain, index, rule, expect, new_name, policy, cascade
  auto add = [&ops](Op::Kind kind, Family family, std::string table, std::string chain, int index, Rule rule,
                    std::optional<Rule> expect, std::string new_name, std::string policy, bool cascade) {
    Op op;
    op.kind = kind;
    op.family = family;
    op.table = std::move(table);
    op.chain = std::move(chain);
    op.index = index;
    op.rule = std::move(rule);
    op.expect = std::move(expect);
    op.new_name = std::move(new_name);
    op.policy = std::move(policy);
    op.cascade = cascade;
    ops.push_back(std::move(op));
  };
  const Family v4 = Family::kIPv4;
  const Family v6 = Family::kIPv6;
  add(Op::Kind::kAppend, v4, "filter", "INPUT", 0, SshRule(), std::nullopt, "", "", false);
  add(Op::Kind::kInsert, v6, "mangle", "PREROUTING", 2, JumpRule("ACCEPT"), std::nullopt, "", "", false);
  add(Op::Kind::kDelete, v4, "filter", "INPUT", 0, SshRule(), std::nullopt, "", "", false);
  add(Op::Kind::kDeleteAt, v4, "filter", "INPUT", 4, Rule{}, std::nullopt, "", "", false);
  add(Op::Kind::kDeleteAt, v4, "filter", "INPUT", 4, Rule{}, SshRule(), "", "", false);
  add(Op::Kind::kReplace, v4, "filter", "INPUT", 1, JumpRule("DROP"), SshRule(), "", "", false);
  add(Op::Kind::kReplace, v4, "nat", "POSTROUTING", 1, JumpRule("MASQUERADE"), std::nullopt, "", "", false);
  add(Op::Kind::kCreateChain, v4, "raw", "MYAPP-RAW", 0, Rule{}, std::nullopt, "", "", false);
  add(Op::Kind::kDeleteChain, v4, "filter", "MYAPP-IN", 0, Rule{}, std::nullopt, "", "", true);
  add(Op::Kind::kDeleteChain, v4, "filter", "MYAPP-IN", 0, Rule{}, std::nullopt, "", "", false);
  add(Op::Kind::kRenameChain, v4, "filter", "OLD", 0, Rule{}, std::nullopt, "NEW", "", false);
  add(Op::Kind::kFlush, v4, "nat", "", 0, Rule{}, std::nullopt, "", "", false);
  add(Op::Kind::kFlush, v4, "filter", "INPUT", 0, Rule{}, std::nullopt, "", "", false);
  add(Op::Kind::kZero, v6, "filter", "MYAPP-IN", 0, Rule{}, std::nullopt, "", "", false);
  add(Op::Kind::kPolicy, v4, "filter", "FORWARD", 0, Rule{}, std::nullopt, "", "DROP", false);
  add(Op::Kind::kAppend, v4, "filter", "INPUT", 0, SshRule(), std::nullopt, "", "", false);
  ops.back().unique = true;
  add(Op::Kind::kInsert, v6, "filter", "INPUT", 1, JumpRule("ACCEPT"), std::nullopt, "", "", false);
  ops.back().unique = true;
  for (size_t i = 0; i < ops.size(); ++i) {
    Json j = OpToJson(ops[i], spec.codec);
    Result<Op> back = OpFromJson(MustParse(Dump(j)), "/ops/" + std::to_string(i), spec.codec);
    ASSERT_TRUE(back.ok()) << back.status().ToString() << "\n" << Dump(j);
    EXPECT_EQ(*back, ops[i]) << Dump(j);
  }
  EXPECT_EQ(Dump(OpToJson(ops[14], spec.codec)),
            R"({"policy":{"family":"ipv4","table":"filter","chain":"FORWARD","policy":"DROP"}})");
  EXPECT_EQ(Dump(OpToJson(ops[3], spec.codec)),
            R"({"delete":{"family":"ipv4","table":"filter","chain":"INPUT","index":4}})");
  EXPECT_THAT(Dump(OpToJson(ops[16], spec.codec)), HasSubstr(R"("unique":true)"));
  EXPECT_THAT(Dump(OpToJson(ops[0], spec.codec)), Not(HasSubstr("unique")));
}

TEST(OpJsonTest, DefaultsAndSpecInput) {
  TestSpec spec;
  Result<Op> op =
      OpFromJson(MustParse(R"({"append":{"chain":"INPUT","rule":{"spec":"-j ACCEPT"}}})"), "/ops/0", spec.codec);
  ASSERT_TRUE(op.ok()) << op.status().ToString();
  EXPECT_EQ(op->family, Family::kIPv4);
  EXPECT_EQ(op->table, "filter");
  EXPECT_EQ(op->rule, JumpRule("ACCEPT"));
  // A rule copied from a listing may repeat the location when it agrees.
  op = OpFromJson(MustParse(R"({"append":{"chain":"INPUT","rule":{"family":"ipv4","table":"filter","chain":"INPUT",
                                 "index":7,"spec":"-j ACCEPT","counters":{"packets":1,"bytes":2}}}})"),
                  "/ops/0", spec.codec);
  ASSERT_TRUE(op.ok()) << op.status().ToString();
}

TEST(OpJsonTest, ErrorsNameThePointer) {
  TestSpec spec;
  struct Case {
    const char* json;
    const char* error;
  } cases[] = {
      {R"({"append":{"chain":"INPUT","rule":{"matches":[{"name":"tcp","options":[{"name":"a"},{"name":"b","values":"x"}]}]}}})",
       "/ops/3/append/rule/matches/0/options/1/values: expected array of strings"},
      {R"({"add":{}})", "/ops/3/add: unknown op"},
      {R"({"append":{},"insert":{}})", "/ops/3: an op is an object with exactly one verb member"},
      {R"("append")", "/ops/3: expected object, got string"},
      {R"({"append":[]})", "/ops/3/append: expected object, got array"},
      {R"({"append":{"rule":{}}})", "/ops/3/append/chain: required field is missing"},
      {R"({"append":{"chain":"INPUT"}})", "/ops/3/append/rule: required field is missing"},
      {R"({"append":{"chain":"INPUT","rule":{},"index":1}})", "/ops/3/append/index: unknown field"},
      {R"({"append":{"chain":"INPUT","family":"ipv5","rule":{}}})", "/ops/3/append/family: unknown family 'ipv5'"},
      {R"({"append":{"chain":"INPUT","table":"nat","rule":{"table":"filter"}}})",
       "/ops/3/append/rule/table: 'filter' disagrees with the op's table 'nat'"},
      {R"({"append":{"chain":"INPUT","rule":{"chain":"OUTPUT"}}})",
       "/ops/3/append/rule/chain: 'OUTPUT' disagrees with the op's chain 'INPUT'"},
      {R"({"append":{"chain":"INPUT","family":"ipv6","rule":{"family":"ipv4"}}})",
       "/ops/3/append/rule/family: 'ipv4' disagrees"},
      {R"({"append":{"chain":"DNAT","rule":{}}})", "/ops/3/append/chain: chain name 'DNAT' clashes with a target name"},
      {R"({"insert":{"chain":"INPUT","rule":{}}})", "/ops/3/insert/index: required field is missing"},
      {R"({"insert":{"chain":"INPUT","index":-2,"rule":{}}})", "/ops/3/insert/index: expected integer >= 1, got -2"},
      {R"({"insert":{"chain":"INPUT","index":1.5,"rule":{}}})",
       "/ops/3/insert/index: expected integer >= 1, got number"},
      {R"({"delete":{"chain":"INPUT"}})", "/ops/3/delete: give either \"rule\" or \"index\""},
      {R"({"delete":{"chain":"INPUT","rule":{},"index":1}})", "/ops/3/delete: give either \"rule\" or \"index\""},
      {R"({"delete":{"chain":"INPUT","rule":{},"expect":{}}})", "/ops/3/delete/expect: only valid with \"index\""},
      {R"({"delete":{"chain":"INPUT","index":2,"expect":{"spec":"-j NOPE"}}})",
       "/ops/3/delete/expect/spec: column 0: cannot parse '-j NOPE'"},
      {R"({"replace":{"chain":"INPUT","index":1}})", "/ops/3/replace/rule: required field is missing"},
      {R"({"create_chain":{"chain":"INPUT"}})",
       "/ops/3/create_chain/chain: 'INPUT' is a builtin chain of table filter"},
      {R"({"create_chain":{"chain":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}})", "/ops/3/create_chain/chain: chain name"},
      {R"({"delete_chain":{"chain":"X","cascade":1}})", "/ops/3/delete_chain/cascade: expected boolean, got number"},
      {R"({"append":{"chain":"X","rule":{},"unique":"yes"}})", "/ops/3/append/unique: expected boolean, got string"},
      {R"({"delete":{"chain":"X","rule":{},"unique":true}})", "/ops/3/delete/unique: unknown field"},
      {R"({"rename_chain":{"chain":"X"}})", "/ops/3/rename_chain/new_name: required field is missing"},
      {R"({"rename_chain":{"chain":"X","new_name":"-Y"}})", "/ops/3/rename_chain/new_name: chain name '-Y' may not"},
      {R"({"flush":{"chain":5}})", "/ops/3/flush/chain: expected string, got number"},
      {R"({"policy":{"chain":"INPUT","policy":"REJECT"}})",
       "/ops/3/policy/policy: expected ACCEPT or DROP, got 'REJECT'"},
      {R"({"policy":{"chain":"INPUT"}})", "/ops/3/policy/policy: required field is missing"},
  };
  for (const Case& c : cases) {
    Result<Op> op = OpFromJson(MustParse(c.json), "/ops/3", spec.codec);
    ASSERT_FALSE(op.ok()) << c.json;
    EXPECT_EQ(op.status().code(), StatusCode::kInvalidArgument) << c.json;
    EXPECT_THAT(op.status().message(), StartsWith(c.error)) << c.json;
  }
}

// ---- Desired state ----

DesiredState SampleDesired() {
  DesiredState d;
  d.owner = "myapp";
  d.chains.push_back(OwnedChain{"filter", "MYAPP-IN", {SshRule(), JumpRule("RETURN")}});
  d.chains.push_back(OwnedChain{"nat", "MYAPP-NAT", {}});
  d.hooks.push_back(HookRule{"filter", "INPUT", HookRule::Position::kFirst, JumpRule("MYAPP-IN")});
  d.hooks.push_back(HookRule{"nat", "POSTROUTING", HookRule::Position::kLast, JumpRule("MYAPP-NAT")});
  return d;
}

TEST(DesiredJsonTest, RoundTrip) {
  TestSpec spec;
  for (DesiredState::Families f :
       {DesiredState::Families::kIPv4, DesiredState::Families::kIPv6, DesiredState::Families::kBoth}) {
    DesiredState d = SampleDesired();
    d.families = f;
    if (f == DesiredState::Families::kIPv6) d.chains[0].rules[0].source = Field{"fd00::/8"};
    Json j = DesiredStateToJson(d, spec.codec);
    Result<DesiredState> back = DesiredStateFromJson(MustParse(Dump(j)), spec.codec);
    ASSERT_TRUE(back.ok()) << back.status().ToString() << "\n" << Dump(j);
    EXPECT_EQ(*back, d);
  }
}

TEST(DesiredJsonTest, DesignExampleParses) {
  TestSpec spec;
  spec.known["-s 10.0.0.0/8 -p tcp --dport 22 -j ACCEPT"] = SshRule();
  Result<DesiredState> d = DesiredStateFromJson(MustParse(R"({"owner":"myapp","family":"ipv4",
 "chains":[{"table":"filter","name":"MYAPP-IN",
            "rules":[{"spec":"-s 10.0.0.0/8 -p tcp --dport 22 -j ACCEPT"},{"spec":"-j RETURN"}]}],
 "hooks":[{"table":"filter","chain":"INPUT","position":"first","spec":"-j MYAPP-IN"}]})"),
                                                spec.codec);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->owner, "myapp");
  EXPECT_EQ(d->families, DesiredState::Families::kIPv4);
  ASSERT_EQ(d->chains.size(), 1u);
  EXPECT_EQ(d->chains[0].rules, (std::vector<Rule>{SshRule(), JumpRule("RETURN")}));
  ASSERT_EQ(d->hooks.size(), 1u);
  EXPECT_EQ(d->hooks[0], (HookRule{"filter", "INPUT", HookRule::Position::kFirst, JumpRule("MYAPP-IN")}));
}

TEST(DesiredJsonTest, ErrorsNameThePointer) {
  TestSpec spec;
  struct Case {
    const char* json;
    const char* error;
  } cases[] = {
      {R"({"family":"ipv4","chains":[]})", "/owner: required field is missing"},
      {R"({"owner":"myapp"})", "/chains: required field is missing"},
      {R"({"owner":"my app","chains":[]})", "/owner: owner must match"},
      {R"({"owner":"myapp","family":"all","chains":[]})",
       "/family: unknown family 'all' (expected ipv4, ipv6 or both)"},
      {R"({"owner":"myapp","chains":[],"extra":1})", "/extra: unknown field"},
      {R"({"owner":"myapp","chains":[{"name":"MYAPP-IN"}]})", "/chains/0/rules: required field is missing"},
      {R"({"owner":"myapp","chains":[{"name":"MYAPP-IN","rules":[{"spec":"-j ACCEPT","index":1}]}]})",
       "/chains/0/rules/0/index: unknown field"},
      {R"({"owner":"myapp","chains":[{"name":"MYAPP-IN","rules":[{"spec":"-j ACCEPT"},{"spec":7}]}]})",
       "/chains/0/rules/1/spec: expected string, got number"},
      {R"({"owner":"myapp","chains":[{"table":"x","name":"MYAPP-IN","rules":[]}]})", "/chains/0/table: unknown table"},
      {R"({"owner":"myapp","chains":[{"name":"ACCEPT","rules":[]}]})", "/chains/0/name: chain name 'ACCEPT' clashes"},
      {R"({"owner":"myapp","chains":[],"hooks":[{"chain":"PREROUTING","spec":"-j ACCEPT"}]})",
       "/hooks/0/chain: 'PREROUTING' is not a builtin chain of table filter"},
      {R"({"owner":"myapp","chains":[],"hooks":[{"chain":"INPUT","position":"middle"}]})",
       "/hooks/0/position: expected first or last, got 'middle'"},
      {R"({"owner":"myapp","chains":[],"hooks":[{"chain":"INPUT","spec":"-j ACCEPT","owner":"x"}]})",
       "/hooks/0/owner: unknown field"},
  };
  for (const Case& c : cases) {
    Result<DesiredState> d = DesiredStateFromJson(MustParse(c.json), spec.codec);
    ASSERT_FALSE(d.ok()) << c.json;
    EXPECT_EQ(d.status().code(), StatusCode::kInvalidArgument) << c.json;
    EXPECT_THAT(d.status().message(), StartsWith(c.error)) << c.json;
  }
}

// ---- Output-only shapes ----

TEST(OutputJsonTest, RulesetShape) {
  TestSpec spec;
  Ruleset rs;
  rs.family = Family::kIPv4;
  Table filter{"filter", {}, ""};
  Chain input{"INPUT", "DROP", Counters{5, 500}, {SshRule()}};
  input.rules[0].counters = Counters{1, 60};
  filter.chains.push_back(input);
  filter.chains.push_back(Chain{"MYAPP-IN", std::nullopt, {}, {}});
  rs.tables.push_back(filter);
  rs.tables.push_back(Table{"nat", {}, "rule count differs from the kernel's"});
  EXPECT_EQ(Dump(RulesetToJson(rs, spec.codec)),
            R"({"family":"ipv4","tables":[{"name":"filter","chains":[)"
            R"({"name":"INPUT","policy":"DROP","counters":{"packets":5,"bytes":500},"rules":[{"index":1,)"
            R"("spec":"-s 10.0.0.0/8 -p tcp -m tcp --dport 22 -m comment --comment ssh -j ACCEPT",)"
            R"("src":{"addr":"10.0.0.0/8"},"protocol":{"value":"tcp"},)"
            R"("matches":[{"name":"tcp","options":[{"name":"dport","values":["22"]}]},)"
            R"({"name":"comment","options":[{"name":"comment","values":["ssh"]}]}],)"
            R"("target":{"name":"ACCEPT"},"counters":{"packets":1,"bytes":60}}]},)"
            R"({"name":"MYAPP-IN","rules":[]}]},)"
            R"({"name":"nat","unrepresentable":"rule count differs from the kernel's","chains":[]}]})");
}

TEST(OutputJsonTest, ResultsShapes) {
  CommitResult cr;
  cr.dry_run = true;
  cr.tables.push_back(TableCommit{Family::kIPv6, "filter", "*filter\n-A INPUT -j ACCEPT\nCOMMIT\n"});
  EXPECT_EQ(Dump(json::CommitResultToJson(cr)), R"({"dry_run":true,"tables":[{"family":"ipv6","table":"filter",)"
                                                R"("restore_text":"*filter\n-A INPUT -j ACCEPT\nCOMMIT\n"}]})");

  ApplyPlan plan;
  EXPECT_EQ(Dump(json::ApplyPlanToJson(plan)), R"({"changed":false,"steps":[],"tables":[],"warnings":[]})");
  plan.steps.push_back(PlanStep{Family::kIPv4, "filter", "insert filter MYAPP-IN 1: -j RETURN"});
  plan.warnings.push_back("legacy tables hold rules on INPUT");
  EXPECT_EQ(Dump(json::ApplyPlanToJson(plan)), R"({"changed":true,"steps":[{"family":"ipv4","table":"filter",)"
                                               R"("description":"insert filter MYAPP-IN 1: -j RETURN"}],"tables":[],)"
                                               R"("warnings":["legacy tables hold rules on INPUT"]})");

  FirewallInfo info;
  info.backend = "nft";
  info.variants.push_back(VariantTables{"nft", "iptables v1.8.9 (nf_tables)", {{Family::kIPv4, "filter", 3, true}}});
  info.foreign_nft.push_back(ForeignNftChain{"inet", "firewalld", "filter_INPUT", "input", 10});
  EXPECT_EQ(Dump(json::FirewallInfoToJson(info)),
            R"x({"backend":"nft","netns":"","variants":[{"variant":"nft","version":"iptables v1.8.9 (nf_tables)",)x"
            R"("tables":[{"family":"ipv4","table":"filter","rules":3,"representable":true}]}],)"
            R"("foreign_nft":[{"family":"inet","table":"firewalld","chain":"filter_INPUT","hook":"input",)"
            R"("priority":10}],"warnings":[]})");
}

TEST(OutputJsonTest, EmptyTransaction) {
  TestSpec spec;
  EXPECT_EQ(Dump(TransactionToJson(Transaction{}, spec.codec)), R"({"ops":[]})");
}

}  // namespace
}  // namespace iptkit::json
