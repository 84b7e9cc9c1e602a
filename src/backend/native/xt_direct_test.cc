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

// Random option lists of tcp, udp and comment matches, in the forms DirectParseMatch covers and in others near them
// (service names, octal and hex numbers, reversed and open ranges, repeated options, a TCP flag, inversions).
struct Specs {
  std::mt19937 rng{20261208};

  std::string Port() {
    switch (rng() % 12) {
      case 0:
        return "0";
      case 1:
        return "65535";
      case 2:
        return "65536";
      case 3:
        return "ssh";
      case 4:
        return "022";
      case 5:
        return "0x16";
      case 6:
        return "";
      default:
        return std::to_string(rng() % 65536);
    }
  }
  std::string Ports() {
    if (rng() % 3 != 0) return Port();
    return Port() + ":" + Port();
  }
  Match PortMatch(const char* name) {
    Match m{name, {}};
    const int n = static_cast<int>(rng() % 3) + (rng() % 10 == 0 ? 1 : 0);
    for (int i = 0; i < n; ++i) {
      static const char* kNames[] = {"sport", "dport", "source-port", "destination-port"};
      m.options.push_back(Option{kNames[rng() % 4], rng() % 3 == 0, {Ports()}});
    }
    if (std::string_view(name) == "tcp" && rng() % 10 == 0) m.options.push_back(Option{"syn", false, {}});
    return m;
  }
  Match Comment() {
    static const std::string kChars = "abcXYZ019_- !#\"'\\/:.,;$`*?()[]{}<>|&~%@=+\t";
    std::string text;
    const size_t length = rng() % 8 == 0 ? 250 + rng() % 10 : rng() % 20;
    for (size_t i = 0; i < length; ++i) {
      text += rng() % 50 == 0 ? static_cast<char>(0x80 + rng() % 0x80) : kChars[rng() % kChars.size()];
    }
    Match m{"comment", {Option{"comment", rng() % 20 == 0, {text}}}};
    if (rng() % 20 == 0) m.options.push_back(Option{"comment", false, {"again"}});
    return m;
  }
};

// DirectParseMatch gives libxtables' payloads: the same rules parsed with and without it give equal binary rules,
// or the same error.
TEST(XtDirectTest, ParsedPayloadsAreLibxtablesOnes) {
  Result<Xtables*> xt = Xtables::Instance();
  ASSERT_TRUE(xt.ok()) << xt.status().ToString();
  Specs gen;
  std::vector<Rule> rules;
  size_t covered = 0;
  for (int i = 0; i < 3000; ++i) {
    Rule r;
    switch (i % 3) {
      case 0:
        r.protocol = Field{"tcp", false};
        r.matches.push_back(gen.PortMatch("tcp"));
        break;
      case 1:
        r.protocol = Field{"udp", false};
        r.matches.push_back(gen.PortMatch("udp"));
        break;
      default:
        break;
    }
    r.matches.push_back(gen.Comment());
    r.target = Target::Jump("ACCEPT");
    for (const Match& m : r.matches) covered += DirectParseMatch(m) ? 1 : 0;
    rules.push_back(std::move(r));
  }
  EXPECT_GT(covered, 2000u);
  std::vector<const Rule*> ptrs;
  for (const Rule& r : rules) ptrs.push_back(&r);
  for (Family family : {Family::kIPv4, Family::kIPv6}) {
    std::vector<Result<XtRule>> direct = (*xt)->Parse(family, ptrs);
    SetDirectExtensions(false);
    EXPECT_FALSE(DirectParseMatch(Match{"tcp", {Option{"dport", false, {"22"}}}}));
    std::vector<Result<XtRule>> parsed = (*xt)->Parse(family, ptrs);
    SetDirectExtensions(true);
    ASSERT_EQ(direct.size(), rules.size());
    ASSERT_EQ(parsed.size(), rules.size());
    size_t differ = 0;
    for (size_t i = 0; i < rules.size(); ++i) {
      const std::string spec = FormatRuleSpec(rules[i]);
      ASSERT_EQ(direct[i].ok(), parsed[i].ok())
          << spec << ": " << (direct[i].ok() ? parsed[i] : direct[i]).status().ToString();
      if (!parsed[i].ok()) {
        EXPECT_EQ(direct[i].status().message(), parsed[i].status().message()) << spec;
        continue;
      }
      if (!(*direct[i] == *parsed[i]) && ++differ <= 5) ADD_FAILURE() << "payloads differ for " << spec;
    }
    EXPECT_EQ(differ, 0u);
  }
}

}  // namespace
}  // namespace iptkit::backend::native
