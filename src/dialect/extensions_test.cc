#include "src/dialect/extensions.h"

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace iptkit::dialect {
namespace {

using Arg = ExtensionOption::Arg;

TEST(SystemExtensionsTest, ReadsX6OptionTables) {
  const Extension* tcp = SystemExtensions().FindMatch(Family::kIPv4, "tcp");
  ASSERT_NE(tcp, nullptr);
  EXPECT_FALSE(tcp->generic);
  EXPECT_FALSE(tcp->target);
  const ExtensionOption* dport = tcp->FindOption("dport");
  ASSERT_NE(dport, nullptr);
  EXPECT_EQ(dport->arg, Arg::kRequired);
  const ExtensionOption* syn = tcp->FindOption("syn");
  ASSERT_NE(syn, nullptr);
  EXPECT_EQ(syn->arg, Arg::kNone);
  // Aliases share the id (used for the "only once" check).
  EXPECT_EQ(tcp->FindOption("destination-port")->id, dport->id);
  EXPECT_EQ(tcp->FindOption("nosuch"), nullptr);
}

TEST(SystemExtensionsTest, ReadsX6Flags) {
  const Extension* conntrack = SystemExtensions().FindMatch(Family::kIPv4, "conntrack");
  ASSERT_NE(conntrack, nullptr);
  const ExtensionOption* ctstate = conntrack->FindOption("ctstate");
  ASSERT_NE(ctstate, nullptr);
  EXPECT_EQ(ctstate->arg, Arg::kRequired);
  EXPECT_TRUE(ctstate->flags_known);
  EXPECT_TRUE(ctstate->invertible);
  const Extension* comment = SystemExtensions().FindMatch(Family::kIPv6, "comment");
  ASSERT_NE(comment, nullptr);
  ASSERT_NE(comment->FindOption("comment"), nullptr);
  EXPECT_FALSE(comment->FindOption("comment")->invertible);
  EXPECT_FALSE(comment->FindOption("comment")->multi);
}

// The option tables the catalog answers without libxtables (BuiltinMatch) are the ones libxtables reads from the
// installed extensions, field by field, for both families: a change of the system's iptables extensions (an
// option added, an old-style extension converted to x6) fails here instead of parsing rules differently.
TEST(SystemExtensionsTest, BuiltinMatchesAreLibxtablesOnes) {
  for (Family family : {Family::kIPv4, Family::kIPv6}) {
    for (const char* name : {"tcp", "udp", "comment"}) {
      SCOPED_TRACE(std::string(name) + (family == Family::kIPv4 ? " ipv4" : " ipv6"));
      const Extension* builtin = BuiltinMatch(name);
      ASSERT_NE(builtin, nullptr);
      std::optional<Extension> loaded = XtablesMatch(family, name);
      ASSERT_TRUE(loaded.has_value());
      EXPECT_EQ(builtin->name, loaded->name);
      EXPECT_EQ(builtin->target, loaded->target);
      EXPECT_EQ(builtin->generic, loaded->generic);
      ASSERT_EQ(builtin->options.size(), loaded->options.size());
      for (size_t i = 0; i < loaded->options.size(); ++i) {
        const ExtensionOption& b = builtin->options[i];
        const ExtensionOption& l = loaded->options[i];
        EXPECT_EQ(b.name, l.name);
        EXPECT_EQ(b.arg, l.arg) << l.name;
        EXPECT_EQ(b.flags_known, l.flags_known) << l.name;
        EXPECT_EQ(b.invertible, l.invertible) << l.name;
        EXPECT_EQ(b.multi, l.multi) << l.name;
        EXPECT_EQ(b.id, l.id) << l.name;
      }
      // And the catalog hands out the built-in one.
      EXPECT_EQ(SystemExtensions().FindMatch(family, name)->options.size(), builtin->options.size());
    }
  }
  EXPECT_EQ(BuiltinMatch("conntrack"), nullptr);
  EXPECT_EQ(BuiltinMatch("TCP"), nullptr);
}

TEST(SystemExtensionsTest, UnknownNamesAndChains) {
  EXPECT_EQ(SystemExtensions().FindMatch(Family::kIPv4, "nosuchmatch"), nullptr);
  EXPECT_EQ(SystemExtensions().FindMatch(Family::kIPv4, "../../../tmp/x"), nullptr);
  EXPECT_EQ(SystemExtensions().FindMatch(Family::kIPv4, std::string(40, 'a')), nullptr);
  EXPECT_EQ(SystemExtensions().FindTarget(Family::kIPv4, "MY-CHAIN"), nullptr);
  // A chain named like a match library is still a chain.
  EXPECT_EQ(SystemExtensions().FindTarget(Family::kIPv4, "tcp"), nullptr);
  const Extension* accept = SystemExtensions().FindTarget(Family::kIPv6, "ACCEPT");
  ASSERT_NE(accept, nullptr);
  EXPECT_TRUE(accept->options.empty());
  EXPECT_FALSE(accept->generic);
}

TEST(SystemExtensionsTest, FamilySpecificExtensions) {
  EXPECT_NE(SystemExtensions().FindMatch(Family::kIPv4, "icmp"), nullptr);
  EXPECT_EQ(SystemExtensions().FindMatch(Family::kIPv4, "icmp6"), nullptr);
  const Extension* icmpv6 = SystemExtensions().FindMatch(Family::kIPv6, "icmpv6");
  ASSERT_NE(icmpv6, nullptr);
  EXPECT_EQ(icmpv6->name, "icmp6");
  EXPECT_NE(SystemExtensions().FindTarget(Family::kIPv4, "TTL"), nullptr);
  EXPECT_EQ(SystemExtensions().FindTarget(Family::kIPv6, "TTL"), nullptr);
  EXPECT_NE(SystemExtensions().FindTarget(Family::kIPv6, "HL"), nullptr);
}

// libxtables drops other-family target registrations; a target shared object loaded for one family must still
// be found for the other, in either order.
TEST(SystemExtensionsTest, SharedTargetsForBothFamilies) {
  for (const char* name : {"TEE", "DSCP", "SNAT", "MASQUERADE"}) {
    const Extension* v4 = SystemExtensions().FindTarget(Family::kIPv4, name);
    const Extension* v6 = SystemExtensions().FindTarget(Family::kIPv6, name);
    ASSERT_NE(v4, nullptr) << name;
    ASSERT_NE(v6, nullptr) << name;
    EXPECT_FALSE(v4->options.empty()) << name;
    EXPECT_FALSE(v6->options.empty()) << name;
  }
  for (const char* name : {"TPROXY", "NETMAP", "REDIRECT"}) {
    EXPECT_NE(SystemExtensions().FindTarget(Family::kIPv6, name), nullptr) << name;
    EXPECT_NE(SystemExtensions().FindTarget(Family::kIPv4, name), nullptr) << name;
  }
}

TEST(SystemExtensionsTest, ConcurrentLookupsAgree) {
  const char* names[] = {"conntrack", "multiport", "limit", "hashlimit", "owner", "set", "string", "time"};
  std::vector<std::thread> threads;
  std::vector<const Extension*> seen(16);
  for (int t = 0; t < 16; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        Family f = (i + t) % 2 ? Family::kIPv4 : Family::kIPv6;
        const Extension* e = SystemExtensions().FindMatch(f, names[(i + t) % 8]);
        if (e == nullptr) seen[t] = nullptr;
      }
      seen[t] = SystemExtensions().FindMatch(Family::kIPv4, "conntrack");
    });
  }
  for (auto& th : threads) th.join();
  for (const Extension* e : seen) {
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e, seen[0]);
  }
}

TEST(GenericExtensionsTest, EverythingIsGenericExceptStandardVerdicts) {
  const Extension* m = GenericExtensions().FindMatch(Family::kIPv4, "whatever");
  ASSERT_NE(m, nullptr);
  EXPECT_TRUE(m->generic);
  const Extension* t = GenericExtensions().FindTarget(Family::kIPv4, "DROP");
  ASSERT_NE(t, nullptr);
  EXPECT_FALSE(t->generic);
}

}  // namespace
}  // namespace iptkit::dialect
