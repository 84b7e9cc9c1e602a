// The text forms of libipset (no kernel): list output parsing, entry input, and the command lines written.
#include "src/ipset/set_text.h"

#include <gtest/gtest.h>

#include "iptkit/ipset.h"

namespace iptkit::ipset {
namespace {

constexpr std::string_view kList =
    "Name: a\n"
    "Type: hash:ip\n"
    "Revision: 6\n"
    "Header: family inet hashsize 1024 maxelem 65536 timeout 0 counters comment bucketsize 12 initval 0xe1b8868b\n"
    "Size in memory: 328\n"
    "References: 1\n"
    "Number of entries: 2\n"
    "Members:\n"
    "1.2.3.4 timeout 0 packets 3 bytes 180 comment \"hi there\"\n"
    "1.2.3.5 timeout 17 packets 0 bytes 0\n"
    "\n"
    "Name: b\n"
    "Type: bitmap:port\n"
    "Revision: 3\n"
    "Header: range 1-1000\n"
    "Size in memory: 200\n"
    "References: 0\n"
    "Number of entries: 0\n"
    "Members:\n"
    "\n"
    "Name: g\n"
    "Type: hash:ip\n"
    "Revision: 6\n"
    "Header: family inet6 hashsize 1024 maxelem 200000 netmask 64 skbinfo bucketsize 12 initval 0x9af76f09\n"
    "Size in memory: 288\n"
    "References: 0\n"
    "Number of entries: 1\n"
    "Members:\n"
    "2001:db8:: skbmark 0x10/0xff skbprio 1:2 skbqueue 3\n";

TEST(SetTextTest, ParsesListOutput) {
  auto sets = ParseListOutput(kList);
  ASSERT_TRUE(sets.ok()) << sets.status().ToString();
  ASSERT_EQ(sets->size(), 3u);
  const SetInfo& a = (*sets)[0];
  EXPECT_EQ(a.name, "a");
  EXPECT_EQ(a.type, "hash:ip");
  EXPECT_EQ(a.revision, 6);
  EXPECT_EQ(a.memory_bytes, 328u);
  EXPECT_EQ(a.references, 1u);
  EXPECT_EQ(a.entry_count, 2u);
  EXPECT_EQ(a.options.family, "inet");
  EXPECT_EQ(a.options.timeout, 0u);
  EXPECT_TRUE(a.options.counters);
  EXPECT_TRUE(a.options.comment);
  EXPECT_FALSE(a.options.skbinfo);
  EXPECT_EQ(a.Capacity(), 65536u);
  ASSERT_EQ(a.entries.size(), 2u);
  EXPECT_EQ(a.entries[0].elem, "1.2.3.4");
  EXPECT_EQ(a.entries[0].comment, "hi there");
  EXPECT_EQ(a.entries[0].packets, 3u);
  EXPECT_EQ(a.entries[0].bytes, 180u);
  EXPECT_EQ(a.entries[1].timeout, 17u);
  EXPECT_FALSE(a.entries[1].comment.has_value());

  const SetInfo& b = (*sets)[1];
  EXPECT_EQ(b.options.range, "1-1000");
  EXPECT_EQ(b.Capacity(), 1000u);
  EXPECT_TRUE(b.entries.empty());

  const SetInfo& g = (*sets)[2];
  EXPECT_EQ(g.options.family, "inet6");
  EXPECT_EQ(g.options.netmask, 64u);
  EXPECT_EQ(g.Capacity(), 200000u);
  ASSERT_EQ(g.entries.size(), 1u);
  EXPECT_EQ(g.entries[0].extra, (std::vector<std::string>{"skbmark", "0x10/0xff", "skbprio", "1:2", "skbqueue", "3"}));
  EXPECT_EQ(CopyLine("t", g.entries[0]), "add t 2001:db8:: skbmark 0x10/0xff skbprio 1:2 skbqueue 3\n");
  EXPECT_EQ(CopyLine("t", a.entries[0]), "add t 1.2.3.4 timeout 0 packets 3 bytes 180 comment \"hi there\"\n");
}

TEST(SetTextTest, BitmapCapacityFollowsTheRange) {
  SetInfo s;
  s.type = "bitmap:ip";
  s.options.range = "10.0.0.0-10.0.255.255";
  EXPECT_EQ(s.Capacity(), 65536u);
  s.options.netmask = 24;
  EXPECT_EQ(s.Capacity(), 256u);
  s.type = "list:set";
  EXPECT_EQ(s.Capacity(), 8u);
}

TEST(SetTextTest, ParsesEntryLines) {
  auto e = ParseSetEntries(
      "# blocklist\n\n10.0.0.1\n10.0.0.2 timeout 60\n10.0.0.3 comment \"two words\" timeout 0\n"
      "add bl 10.0.0.4 comment x\n");
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  ASSERT_EQ(e->size(), 4u);
  EXPECT_EQ((*e)[0], (SetEntrySpec{"10.0.0.1", std::nullopt, std::nullopt, 3}));
  EXPECT_EQ((*e)[1], (SetEntrySpec{"10.0.0.2", 60, std::nullopt, 4}));
  EXPECT_EQ((*e)[2], (SetEntrySpec{"10.0.0.3", 0, "two words", 5}));
  EXPECT_EQ((*e)[3], (SetEntrySpec{"10.0.0.4", std::nullopt, "x", 6}));
  EXPECT_EQ(AddLine("bl", (*e)[2]), "add bl 10.0.0.3 timeout 0 comment \"two words\"\n");
}

TEST(SetTextTest, BadEntryLinesNameTheLine) {
  auto e = ParseSetEntries("10.0.0.1\n10.0.0.2 timeout 2147484\n");
  ASSERT_EQ(e.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(e.status().details().line, 2);
  EXPECT_EQ(e.status().details().token, "2147484");
  EXPECT_NE(e.status().message().find("line 2"), std::string::npos) << e.status().message();

  e = ParseSetEntries("10.0.0.1 flags x\n");
  EXPECT_EQ(e.status().details().line, 1);
  EXPECT_EQ(e.status().details().token, "flags");

  e = ParseSetEntries("add other 10.0.0.1\n", "bl");
  EXPECT_EQ(e.status().details().token, "other");

  e = ParseSetEntries("10.0.0.1 timeout -1\n");
  EXPECT_EQ(e.status().code(), StatusCode::kInvalidArgument);
}

TEST(SetTextTest, CreateLineChecksTypeAndOptions) {
  auto line = CreateLine("bl", "hash:ip", {.family = "inet6", .maxelem = 200000, .timeout = 0, .comment = true});
  ASSERT_TRUE(line.ok());
  EXPECT_EQ(*line, "create bl hash:ip family inet6 maxelem 200000 timeout 0 comment\n");

  auto bad = CreateLine("bl", "hash:foo", {});
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.status().details().field, "type");

  bad = CreateLine("bl", "bitmap:port", {.maxelem = 10, .range = "1-10"});
  EXPECT_EQ(bad.status().details().field, "maxelem");
  bad = CreateLine("bl", "bitmap:port", {});
  EXPECT_EQ(bad.status().details().field, "range");
  bad = CreateLine("bl", "hash:net", {.netmask = 24});
  EXPECT_EQ(bad.status().details().field, "netmask");
  bad = CreateLine(std::string(32, 'x'), "hash:ip", {});
  EXPECT_EQ(bad.status().details().field, "name");
  EXPECT_NE(bad.status().message().find("longer than 31"), std::string::npos);
  bad = CreateLine("a b", "hash:ip", {});
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
}

TEST(SetTextTest, ValuesCannotBreakOutOfTheirLine) {
  EXPECT_FALSE(CheckElem("1.2.3.4\nflush x").ok());
  EXPECT_FALSE(CheckElem("1.2.3.4 timeout").ok());
  EXPECT_FALSE(CheckComment("a\"b").ok());
  EXPECT_FALSE(CheckComment(std::string(256, 'c')).ok());
  EXPECT_TRUE(CheckComment(std::string(255, 'c')).ok());
  EXPECT_FALSE(CheckTimeout(2147484).ok());
  EXPECT_TRUE(CheckTimeout(2147483).ok());
}

// ipset's words after an entry (`iptkit set add NAME ENTRY timeout 300 comment TEXT`, the C ABI): errors name the
// word or value.
TEST(SetAddOptionsTest, TimeoutAndCommentAreReadAndAnythingElseNamed) {
  Result<SetAddOptions> ok = ParseSetAddOptions({"timeout", "300", "comment", "from the IDS"});
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->timeout, 300u);
  EXPECT_EQ(ok->comment, "from the IDS");
  EXPECT_FALSE(ok->no_refresh);
  EXPECT_FALSE(ParseSetAddOptions({})->timeout.has_value());

  Result<SetAddOptions> bad = ParseSetAddOptions({"timeout", "3000000"});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().details().token, "3000000") << bad.status().ToString();
  Result<SetAddOptions> unknown = ParseSetAddOptions({"packets", "5"});
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().details().token, "packets");
  Result<SetAddOptions> dangling = ParseSetAddOptions({"timeout"});
  ASSERT_FALSE(dangling.ok());
  EXPECT_EQ(dangling.status().details().token, "timeout");
}

}  // namespace
}  // namespace iptkit::ipset
