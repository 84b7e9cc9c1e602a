#include "src/fleet/set_doc.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace iptkit::fleet {
namespace {

TEST(SetDocTest, ParsesADocumentWithEntriesAndOptions) {
  auto d = ParseSetDoc("block", R"({"name":"block","type":"hash:ip","options":{"timeout":600,"maxelem":131072},
      "entries":["192.0.2.1",{"entry":"192.0.2.2","timeout":5,"comment":"x"}],"canary":"ring=a","canary_timeout":9})");
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->type, "hash:ip");
  EXPECT_EQ(d->options.timeout, 600u);
  EXPECT_EQ(d->options.maxelem, 131072u);
  ASSERT_EQ(d->entries.size(), 2u);
  EXPECT_EQ(d->entries[1].elem, "192.0.2.2");
  EXPECT_EQ(d->entries[1].timeout, 5u);
  EXPECT_EQ(d->entries[1].comment, "x");
  EXPECT_EQ(d->canary, "ring=a");
  EXPECT_FALSE(d->chunks);
}

TEST(SetDocTest, RefusesWhatIsWrongNamingTheField) {
  struct Case {
    const char* json;
    const char* field;
  };
  for (const Case& c : std::vector<Case>{
           {R"({"type":"hash:ip"})", "/entries"},
           {R"({"type":"hash:nope","entries":[]})", "/type"},
           {R"({"name":"other","type":"hash:ip","entries":[]})", "/name"},
           {R"({"type":"hash:ip","entries":[""]})", "/entries/0"},
           {R"({"type":"hash:ip","entries":[{"entry":"1.2.3.4","ttl":1}]})", "/entries/0/ttl"},
           {R"({"type":"hash:ip","options":{"size":"big"},"entries":[]})", "/options/size"},
           {R"({"type":"hash:ip","options":{"bogus":1},"entries":[]})", "/options/bogus"},
           {R"({"type":"hash:ip","entries":[],"chunks":{"count":1,"sha256":"00"}})", "/entries"},
           {R"({"type":"hash:ip","chunks":{"count":0,"sha256":"00"}})", "/chunks/count"},
           {R"({"type":"hash:ip","chunks":{"count":2,"sha256":"XYZ"}})", "/chunks/sha256"},
           {R"({"type":"hash:ip","entries":[],"canary":"nolabel"})", "/canary"},
           {R"({"type":"hash:ip","entries":[],"canary_timeout":0})", "/canary_timeout"},
           {R"({"type":"hash:ip","entries":[],"extra":1})", "/extra"},
       }) {
    auto d = ParseSetDoc("block", c.json);
    ASSERT_FALSE(d.ok()) << c.json;
    EXPECT_EQ(d.status().code(), StatusCode::kInvalidArgument) << c.json;
    EXPECT_EQ(d.status().details().field, c.field) << c.json << ": " << d.status().ToString();
  }
  EXPECT_FALSE(ParseSetDoc("block", "[1]").ok());
  EXPECT_FALSE(ParseSetDoc("iptkit-tmp-00000000", R"({"type":"hash:ip","entries":[]})").ok());
  EXPECT_FALSE(ParseSetDoc(std::string(32, 'a'), R"({"type":"hash:ip","entries":[]})").ok());
}

TEST(SetDocTest, ChunksAreAppliedOnlyWhenTheyAllMatchTheManifest) {
  std::string text;
  for (int i = 0; i < 5000; ++i) text += "10.0." + std::to_string(i / 256) + "." + std::to_string(i % 256) + "\n";
  auto chunks = SplitChunks(text, 4096);
  ASSERT_TRUE(chunks.ok());
  ASSERT_GT(chunks->size(), 10u);
  std::string joined;
  for (const std::string& c : *chunks) {
    EXPECT_LE(c.size(), 4096u);
    EXPECT_EQ(c.back(), '\n');  // split at line ends
    joined += c;
  }
  EXPECT_EQ(joined, text);
  const std::string manifest = R"({"type":"hash:ip","chunks":{"count":)" + std::to_string(chunks->size()) +
                               R"(,"sha256":")" + Sha256Hex(text) + R"("}})";
  auto doc = ParseSetDoc("big", manifest);
  ASSERT_TRUE(doc.ok()) << doc.status().ToString();
  auto entries = AssembleChunks(*doc, *chunks);
  ASSERT_TRUE(entries.ok()) << entries.status().ToString();
  EXPECT_EQ(entries->size(), 5000u);
  // One missing: not yet.
  std::vector<std::string> fewer(chunks->begin(), chunks->end() - 1);
  auto missing = AssembleChunks(*doc, fewer);
  EXPECT_EQ(missing.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(missing.status().details().reason, "chunks_incomplete");
  // One changed: the hash does not match.
  std::vector<std::string> changed = *chunks;
  changed[3][0] = '9';
  auto mismatch = AssembleChunks(*doc, changed);
  EXPECT_EQ(mismatch.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(mismatch.status().details().reason, "chunks_mismatch");
  // A line longer than a chunk cannot be split.
  EXPECT_FALSE(SplitChunks(std::string(100, 'a') + "\n", 10).ok());
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(SetDocTest, ALiveSetMatchesWhenEveryOptionTheDocumentSetsIsTheSame) {
  auto doc = ParseSetDoc("s", R"({"type":"hash:ip","options":{"maxelem":1000},"entries":[]})");
  ASSERT_TRUE(doc.ok());
  SetInfo live;
  live.type = "hash:ip";
  live.options.maxelem = 1000;
  live.options.hashsize = 1024;  // the kernel's default, not named by the document
  EXPECT_TRUE(SetMatchesDoc(live, *doc));
  live.options.maxelem = 65536;
  EXPECT_FALSE(SetMatchesDoc(live, *doc));
  live.options.maxelem = 1000;
  live.type = "hash:net";
  EXPECT_FALSE(SetMatchesDoc(live, *doc));
}

}  // namespace
}  // namespace iptkit::fleet
