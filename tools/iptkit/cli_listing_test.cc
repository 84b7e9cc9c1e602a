// The listing layout without a kernel; tests/cli/cli_netns_test.cc compares it with the real iptables -L and -S
// for many rules on both variants and families.
#include "tools/iptkit/cli_listing.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "iptkit/dialect.h"

namespace iptkit::cli {
namespace {

Rule R(const std::string& spec, Family family = Family::kIPv4) {
  Result<Rule> r = ParseRuleSpec(spec, family);
  EXPECT_TRUE(r.ok()) << spec << ": " << r.status().ToString();
  return r.ok() ? *r : Rule{};
}

// INPUT with policy DROP and large policy counters, holding `rules`.
Chain InputWith(std::vector<Rule> rules) {
  Chain input;
  input.name = "INPUT";
  input.policy = "DROP";
  input.counters = {123456789, 98765432109};
  input.rules = std::move(rules);
  return input;
}

Table FilterWith(std::vector<Rule> rules) {
  Table t;
  t.name = "filter";
  t.chains.push_back(InputWith(std::move(rules)));
  return WithBuiltinChains(t);
}

TEST(CliListingTest, ColumnsAsIptables) {
  Rule ssh = R("-s 10.0.0.0/8 -p tcp -m tcp --dport 22 -m comment --comment ssh -j ACCEPT");
  ssh.counters = {100000, 99999999};
  Table t = FilterWith({ssh, R("! -i eth0 -o eth+ ! -d 192.168.0.0/255.255.0.0 -f -g FOO")});
  ListingFormat f{.counters = true, .line_numbers = true, .chain = "INPUT"};
  EXPECT_EQ(FormatChains(Family::kIPv4, t, f),
            "Chain INPUT (policy DROP 123M packets, 99G bytes)\n"
            "num   pkts bytes target     prot opt in     out     source               destination         \n"
            "1     100K  100M ACCEPT     6    --  *      *       10.0.0.0/8           0.0.0.0/0            tcp dpt:22 "
            "/* ssh */\n"
            "2        0     0 FOO        0    -f  !eth0  eth+    0.0.0.0/0           !192.168.0.0/16      [goto] \n");
  f.exact = true;
  f.rule = 1;
  EXPECT_EQ(FormatChains(Family::kIPv4, t, f),
            "1      100000 99999999 ACCEPT     6    --  *      *       10.0.0.0/8           0.0.0.0/0            tcp "
            "dpt:22 /* ssh */\n");
}

// The columns are padded as fmt's "{:<W}" padded them before: by columns, so a UTF-8 name takes fewer bytes of
// padding than its length in bytes, and a value wider than its column is never cut.
TEST(CliListingTest, PaddingCountsColumnsNotBytes) {
  Rule utf8;
  utf8.target = Target::Jump(
      "\xC3\x9C"
      "BER");  // "ÜBER": 5 bytes, 4 columns
  Rule wide;
  wide.target = Target::Jump("LONGER-THAN-NINE");
  wide.in_interface = Field{"veth-abcdefgh", false};
  Table t = FilterWith({utf8, wide});
  ListingFormat f{.counters = true, .exact = true, .line_numbers = true, .chain = "INPUT"};
  EXPECT_EQ(FormatChains(Family::kIPv4, t, f),
            "Chain INPUT (policy DROP 123456789 packets, 98765432109 bytes)\n"
            "num      pkts      bytes target     prot opt in     out     source               destination         \n"
            "1           0        0 \xC3\x9C"
            "BER       0    --  *      *       0.0.0.0/0            0.0.0.0/0           \n"
            "2           0        0 LONGER-THAN-NINE  0    --  veth-abcdefgh *       0.0.0.0/0            0.0.0.0/0  "
            "         \n");
}

TEST(CliListingTest, RulesAsIptablesS) {
  Table t = FilterWith({R("-p udp -m udp --dport 53 -j ACCEPT"), R("-m mark --mark 0x1")});
  ListingFormat f{.counters = true};
  EXPECT_EQ(FormatRulesS(t, f),
            "-P INPUT DROP -c 123456789 98765432109\n-P FORWARD ACCEPT -c 0 0\n-P OUTPUT ACCEPT -c 0 0\n"
            "-A INPUT -p udp -m udp --dport 53 -c 0 0 -j ACCEPT\n-A INPUT -m mark --mark 0x1 -c 0 0\n");
}

TEST(CliListingTest, ExtensionPrinters) {
  struct Case {
    std::string spec;
    std::string printed;
  };
  const std::vector<Case> cases = {
      {"-p tcp -m tcp --sport 1000:2000 ! --dport 22 --tcp-flags FIN,SYN,RST,ACK SYN -j ACCEPT",
       " tcp spts:1000:2000 dpt:!22 flags:0x17/0x02"},
      {"-p icmp -m icmp --icmp-type 3/1 -j ACCEPT", " icmptype 3 code 1"},
      {"-p icmp -m icmp ! --icmp-type 8 -j ACCEPT", " icmp !type 8"},
      {"-m conntrack ! --ctstate INVALID --ctdir REPLY -j ACCEPT", " ! ctstate INVALID ctdir REPLY"},
      {"-p tcp -m multiport ! --sports 1000:2000,3000", " multiport sports  !1000:2000,3000"},
      {"-m limit --limit 10/min --limit-burst 20", " limit: avg 10/min burst 20"},
      {"-m connmark --mark 0x3/0xf", " connmark match  0x3/0xf"},
      {"-j LOG --log-prefix \"x: \" --log-level 6 --log-uid", " LOG flags 8 level 6 prefix \"x: \""},
      {"-j MARK --set-xmark 0x0/0xffffff0f", " MARK and 0xf0"},
      {"-j CONNMARK --save-mark --nfmask 0xff --ctmask 0xf", " CONNMARK save nfmask 0xff ctmask ~0xf"},
      {"-m hashlimit --hashlimit-upto 5/sec --hashlimit-name foo",
       " hashlimit --hashlimit-upto 5/sec --hashlimit-name foo"},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(FormatRuleDetails(Family::kIPv4, R(c.spec)), c.printed) << c.spec;
  }
}

TEST(CliListingTest, OwnerFilterAndNotes) {
  Rule owned = R("-s 192.0.2.1/32 -m comment --comment iptkit:web:abc -j DROP");
  Table t = FilterWith({R("-j ACCEPT"), owned});
  ListingFormat f{.line_numbers = true, .owner = "web"};
  f.notes[{"INPUT", 2}] = "[ttl 30s]";
  EXPECT_EQ(FormatChains(Family::kIPv4, t, f),
            "Chain INPUT (policy DROP)\n"
            "num  target     prot opt source               destination         \n"
            "2    DROP       0    --  192.0.2.1            0.0.0.0/0            /* iptkit:web:abc */ [ttl 30s]\n");
  EXPECT_EQ(FormatRulesS(t, f), "-A INPUT -s 192.0.2.1/32 -m comment --comment \"iptkit:web:abc\" -j DROP\n");
}

TEST(CliListingTest, Ipv6Addresses) {
  Table t;
  t.name = "filter";
  Chain c;
  c.name = "INPUT";
  c.policy = "ACCEPT";
  c.rules = {R("-s 2001:db8::7/128 -d 2001:db8::/32 -p ipv6-icmp -m icmp6 --icmpv6-type 128 -j ACCEPT", Family::kIPv6)};
  t.chains = {c};
  EXPECT_EQ(FormatChains(Family::kIPv6, WithBuiltinChains(t), ListingFormat{.chain = "INPUT"}),
            "Chain INPUT (policy ACCEPT)\n"
            "target     prot opt source               destination         \n"
            "ACCEPT     58   --  2001:db8::7          2001:db8::/32        ipv6-icmptype 128\n");
}

// A filter table with a user chain, jumps into it, counters, an owned rule and a set: the listing collected rule by
// rule (ListingCollector) and from the save text (list -S) is what FormatChains / FormatRulesS print from the model,
// for every flag combination.
Table Mixed() {
  Table t;
  t.name = "filter";
  Rule ssh = R("-s 10.0.0.0/8 -p tcp -m tcp --dport 22 -m comment --comment ssh -j ACCEPT");
  ssh.counters = {100000, 99999999};
  Chain input = InputWith({ssh, R("-j USER"), R("-m set --match-set blocklist src -j DROP"),
                           R("-s 192.0.2.1/32 -m comment --comment iptkit:web:abc -j DROP"), R("! -i eth0 -g USER")});
  Chain user;
  user.name = "USER";
  user.rules = {R("-p udp -m udp --dport 53 -j ACCEPT"), R("-j RETURN")};
  Chain empty;
  empty.name = "EMPTY";
  t.chains = {input, empty, user};
  return WithBuiltinChains(t);
}

std::string Collected(const Table& table, const ListingFormat& format, bool rules_s,
                      std::vector<SetUse>* sets = nullptr) {
  ListingCollector collector(Family::kIPv4, {table.name}, format, rules_s);
  collector.CollectSets();
  collector.OnRule("nat", "PREROUTING", R("-j ACCEPT"));  // a table not listed: passed by
  Table skeleton = table;
  for (Chain& c : skeleton.chains) {
    for (const Rule& r : c.rules) collector.OnRule(table.name, c.name, r);
    c.rules.clear();
  }
  if (sets != nullptr) *sets = collector.SetUses();
  return collector.Format(skeleton);
}

TEST(CliListingTest, CollectedRuleByRuleIsTheModelsListing) {
  const Table t = Mixed();
  for (bool counters : {false, true}) {
    for (bool exact : {false, true}) {
      for (bool line_numbers : {false, true}) {
        for (std::string chain : {"", "INPUT", "USER", "EMPTY"}) {
          for (int rule : {0, 2}) {
            for (std::string owner : {"", "web"}) {
              if (rule != 0 && chain.empty()) continue;
              ListingFormat f{.counters = counters,
                              .exact = exact,
                              .line_numbers = line_numbers,
                              .chain = chain,
                              .rule = rule,
                              .owner = owner};
              const std::string what = chain + " " + std::to_string(rule) + " " + owner + " " +
                                       std::to_string(counters) + std::to_string(exact) + std::to_string(line_numbers);
              EXPECT_EQ(Collected(t, f, false), FormatChains(Family::kIPv4, t, f)) << what;
              EXPECT_EQ(Collected(t, f, true), FormatRulesS(t, f)) << what;
            }
          }
        }
      }
    }
  }
  std::vector<SetUse> sets;
  Collected(t, {}, false, &sets);
  Ruleset rs;
  rs.tables = {t};
  std::vector<SetUse> expected = SetsReferenced({&rs});
  ASSERT_EQ(sets.size(), expected.size());
  ASSERT_EQ(sets.size(), 1u);
  EXPECT_EQ(sets[0].name, "blocklist");
  ASSERT_EQ(sets[0].used_by.size(), 1u);
  EXPECT_EQ(sets[0].used_by[0].rule, 3);
  EXPECT_EQ(sets[0].used_by[0].chain, "INPUT");
}

TEST(CliListingTest, ResetForgetsWhatWasHandedOver) {
  const Table t = Mixed();
  ListingCollector collector(Family::kIPv4, {"filter"}, {}, false);
  collector.OnRule("filter", "INPUT", R("-j ACCEPT"));
  collector.Reset();
  Table skeleton = t;
  for (Chain& c : skeleton.chains) {
    for (const Rule& r : c.rules) collector.OnRule("filter", c.name, r);
    c.rules.clear();
  }
  EXPECT_EQ(collector.Format(skeleton), FormatChains(Family::kIPv4, t, {}));
  EXPECT_EQ(collector.RuleCount("filter", "INPUT"), 5u);
  EXPECT_EQ(collector.RuleCount("filter", "NONE"), 0u);
}

TEST(CliListingTest, RulesSFromTheSaveTextIsTheModelsListing) {
  Table t = Mixed();
  t.unrepresentable_reason = "a reason";
  t.chains[0].rules[1].lossy = "shown differently";
  Ruleset rs;
  rs.tables = {t};
  Result<std::vector<SavedTable>> saved = ParseSavedTables(FormatSave(rs, {.counters = false, .mark_lossy = true}));
  ASSERT_TRUE(saved.ok()) << saved.status().ToString();
  ASSERT_EQ(saved->size(), 1u);
  SavedTable& s = saved->front();
  EXPECT_EQ(s.table.unrepresentable_reason, "a reason");
  ASSERT_EQ(s.lossy.size(), 1u);
  EXPECT_EQ(s.lossy[0].chain, "INPUT");
  EXPECT_EQ(s.lossy[0].rule, 2);
  EXPECT_EQ(s.lossy[0].reason, "shown differently");
  s.table = WithBuiltinChains(std::move(s.table));
  for (std::string chain : {"", "INPUT", "USER", "EMPTY", "FORWARD"}) {
    ListingFormat f{.chain = chain};
    EXPECT_EQ(FormatRulesSFromSave(s, f), FormatRulesS(t, f)) << chain;
  }
  // Counters are the model's form (list -S -v): not this path's.
  EXPECT_EQ(ParseSavedTables(FormatSave(rs, {.counters = true})).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseSavedTables("-A INPUT -j ACCEPT\n").status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(ParseSavedTables("").ok());
}

// The sets a ruleset uses, a missing one named as such (text and JSON).
TEST(CliListingTest, SetsReferencedIncludingAMissingOne) {
  Ruleset v4;
  v4.family = Family::kIPv4;
  v4.tables.push_back(FilterWith({R("-m set --match-set bl src -j DROP"), R("-s 10.0.0.1 -j ACCEPT"),
                                  R("-m set --match-set gone dst -j SET --add-set bl src")}));
  std::vector<SetUse> uses = SetsReferenced({&v4});
  ASSERT_EQ(uses.size(), 2u);
  EXPECT_EQ(uses[0].name, "bl");
  ASSERT_EQ(uses[0].used_by.size(), 2u);
  EXPECT_EQ(uses[0].used_by[1].rule, 3);
  EXPECT_EQ(uses[1].name, "gone");
  SetInfo bl;
  bl.name = "bl";
  bl.type = "hash:ip";
  bl.entry_count = 7;
  uses[0].info = bl;
  EXPECT_EQ(FormatSetUses(uses),
            "\nSets used by these rules:\n"
            "  bl    hash:ip  7 entries  (ipv4 filter INPUT 1, ipv4 filter INPUT 3)\n"
            "  gone  MISSING (no such set)  (ipv4 filter INPUT 3)\n");
  nlohmann::json j = SetUsesJson(uses);
  EXPECT_EQ(j[0]["entry_count"], 7);
  EXPECT_EQ(j[1]["missing"], true);
  EXPECT_FALSE(j[1].contains("type"));
  EXPECT_EQ(FormatSetUses({}), "");
}

}  // namespace
}  // namespace iptkit::cli
