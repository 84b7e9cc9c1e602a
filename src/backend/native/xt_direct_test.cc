// The extensions printed without libxtables (xt_direct.h) print and parse exactly as through libxtables: random tcp,
// udp and comment payloads, each formatted and built into a model both ways.
#include "src/backend/native/xt_direct.h"

#include <gtest/gtest.h>
#include <linux/netfilter/xt_comment.h>
#include <linux/netfilter/xt_tcpudp.h>
#include <netinet/in.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "iptkit/dialect.h"
#include "src/backend/native/xtables.h"

namespace iptkit::backend::native {
namespace {

template <class T>
XtExtension Ext(const char* name, const T& info) {
  XtExtension ext;
  ext.name = name;
  ext.data.assign(reinterpret_cast<const char*>(&info), sizeof(T));
  ext.data.resize((sizeof(T) + 7) / 8 * 8, '\0');  // XT_ALIGN, as the kernel hands the payload over
  return ext;
}

struct Payloads {
  std::mt19937 rng{20261207};

  uint16_t Port() {
    switch (rng() % 4) {
      case 0:
        return 0;
      case 1:
        return 0xFFFF;
      default:
        return static_cast<uint16_t>(rng());
    }
  }
  void Ports(uint16_t out[2]) {
    switch (rng() % 4) {
      case 0:  // the whole range: not printed
        out[0] = 0, out[1] = 0xFFFF;
        break;
      case 1:
        out[0] = out[1] = Port();
        break;
      default:
        out[0] = Port(), out[1] = Port();
        break;
    }
  }
  XtExtension Tcp() {
    xt_tcp t{};
    Ports(t.spts);
    Ports(t.dpts);
    t.invflags = static_cast<uint8_t>(rng() % 4);  // source and destination port inversions
    if (rng() % 8 == 0) t.option = static_cast<uint8_t>(rng());
    if (rng() % 8 == 0) t.flg_mask = static_cast<uint8_t>(rng() & 0x3F), t.flg_cmp = static_cast<uint8_t>(rng() & 0x3F);
    if (rng() % 8 == 0) t.invflags |= static_cast<uint8_t>(rng() % 16);
    return Ext("tcp", t);
  }
  XtExtension Udp() {
    xt_udp u{};
    Ports(u.spts);
    Ports(u.dpts);
    u.invflags = static_cast<uint8_t>(rng() % 4);
    return Ext("udp", u);
  }
  XtExtension Comment() {
    static const std::string kChars = "abcXYZ019_- !#\"'\\/:.,;$`*?()[]{}<>|&~%@=+\t";
    xt_comment_info c{};
    const size_t length = rng() % 6 == 0 ? 200 + rng() % 100 : rng() % 20;
    for (size_t i = 0; i < length && i < sizeof(c.comment); ++i) {
      c.comment[i] = rng() % 50 == 0 ? static_cast<char>(0x80 + rng() % 0x80) : kChars[rng() % kChars.size()];
    }
    return Ext("comment", c);
  }
};

TEST(XtDirectTest, TextsAndModelsAreLibxtablesOnes) {
  Result<Xtables*> xt = Xtables::Instance();
  ASSERT_TRUE(xt.ok()) << xt.status().ToString();
  Payloads gen;
  std::vector<XtRule> rules;
  size_t covered = 0;
  for (int i = 0; i < 3000; ++i) {
    XtRule r;
    r.family = i % 5 == 0 ? Family::kIPv6 : Family::kIPv4;
    r.verdict = XtRule::Verdict::kAccept;
    switch (i % 3) {
      case 0:
        r.header.proto = IPPROTO_TCP;
        r.header.flags = r.family == Family::kIPv6 ? kFlagProto : 0;
        r.matches.push_back(gen.Tcp());
        break;
      case 1:
        r.header.proto = IPPROTO_UDP;
        r.header.flags = r.family == Family::kIPv6 ? kFlagProto : 0;
        r.matches.push_back(gen.Udp());
        break;
      default:
        break;
    }
    r.matches.push_back(gen.Comment());
    for (const XtExtension& m : r.matches) covered += DirectMatchCovered(m) ? 1 : 0;
    rules.push_back(std::move(r));
  }
  EXPECT_GT(covered, 3000u);  // most of them (what is not covered goes through libxtables both ways)
  std::vector<const XtRule*> ptrs;
  for (const XtRule& r : rules) ptrs.push_back(&r);

  std::vector<Result<std::string>> direct_text = (*xt)->Format(ptrs);
  std::vector<Result<Rule>> direct_model = (*xt)->ToRules(ptrs);
  SetDirectExtensions(false);
  for (const XtExtension& m : rules[0].matches) EXPECT_FALSE(DirectMatchCovered(m));
  std::vector<Result<std::string>> text = (*xt)->Format(ptrs);
  std::vector<Result<Rule>> model = (*xt)->ToRules(ptrs);
  SetDirectExtensions(true);

  ASSERT_EQ(direct_text.size(), rules.size());
  ASSERT_EQ(direct_model.size(), rules.size());
  size_t differ = 0;
  for (size_t i = 0; i < rules.size(); ++i) {
    ASSERT_TRUE(text[i].ok()) << text[i].status().ToString();
    ASSERT_TRUE(direct_text[i].ok()) << direct_text[i].status().ToString();
    EXPECT_EQ(*direct_text[i], *text[i]);
    ASSERT_EQ(direct_model[i].ok(), model[i].ok()) << *text[i];
    if (!model[i].ok()) {
      EXPECT_EQ(direct_model[i].status().message(), model[i].status().message());
      continue;
    }
    if (!(*direct_model[i] == *model[i]) && ++differ <= 5) {
      ADD_FAILURE() << "'" << *text[i] << "': built '" << FormatRuleSpec(*direct_model[i]) << "', parsed '"
                    << FormatRuleSpec(*model[i]) << "'";
    }
  }
  EXPECT_EQ(differ, 0u);
}

}  // namespace
}  // namespace iptkit::backend::native
