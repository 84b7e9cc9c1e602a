#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "iptkit/dialect.h"

namespace iptkit {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::vector<std::string> Texts(const std::vector<Token>& tokens) {
  std::vector<std::string> out;
  for (const Token& t : tokens) out.push_back(t.text);
  return out;
}

std::vector<Token> Lex(std::string_view line) {
  auto tokens = LexRestoreLine(line);
  EXPECT_TRUE(tokens.ok()) << tokens.status().ToString();
  return tokens.ok() ? *tokens : std::vector<Token>{};
}

TEST(LexRestoreLineTest, BlanksSeparateAndCollapse) {
  auto tokens = Lex("  -A\tINPUT   -j  ACCEPT ");
  EXPECT_THAT(Texts(tokens), ElementsAre("-A", "INPUT", "-j", "ACCEPT"));
  EXPECT_EQ(tokens[0].column, 2u);
  EXPECT_EQ(tokens[1].column, 5u);
  EXPECT_EQ(tokens[3].column, 17u);
  EXPECT_FALSE(tokens[0].quoted);
}

TEST(LexRestoreLineTest, DoubleQuotesGroupAndMarkQuoted) {
  auto tokens = Lex(R"(--comment "a b  c" x)");
  ASSERT_EQ(tokens.size(), 3u);
  EXPECT_EQ(tokens[1], (Token{"a b  c", 10, true}));
  EXPECT_EQ(tokens[2], (Token{"x", 19, false}));
}

TEST(LexRestoreLineTest, BackslashEscapesOnlyInsideQuotes) {
  EXPECT_THAT(Texts(Lex(R"("a\"b\\c\'d\x")")), ElementsAre(R"(a"b\c'dx)"));
  EXPECT_THAT(Texts(Lex(R"(a\b c\\)")), ElementsAre(R"(a\b)", R"(c\\)"));
}

TEST(LexRestoreLineTest, EmptyQuotedTokenIsAToken) {
  auto tokens = Lex(R"(--comment "" -j)");
  ASSERT_EQ(tokens.size(), 3u);
  EXPECT_EQ(tokens[1], (Token{"", 10, true}));
  EXPECT_THAT(Texts(Lex(R"("")")), ElementsAre(""));
}

TEST(LexRestoreLineTest, ClosingQuoteEndsTheToken) {
  // add_param_to_argv emits the token at the closing quote: `"ab"cd` is two tokens.
  EXPECT_THAT(Texts(Lex(R"("ab"cd)")), ElementsAre("ab", "cd"));
  EXPECT_THAT(Texts(Lex(R"("a""b")")), ElementsAre("a", "b"));
  // An opening quote inside a token continues it.
  auto tokens = Lex(R"(x ab"cd ef" y)");
  EXPECT_THAT(Texts(tokens), ElementsAre("x", "abcd ef", "y"));
  EXPECT_EQ(tokens[1].column, 2u);
  EXPECT_TRUE(tokens[1].quoted);
}

TEST(LexRestoreLineTest, SingleQuotesAreOrdinary) {
  EXPECT_THAT(Texts(Lex("--comment 'a b'")), ElementsAre("--comment", "'a", "b'"));
}

TEST(LexRestoreLineTest, UnterminatedQuoteNamesColumn) {
  auto tokens = LexRestoreLine(R"(-m comment --comment "abc)");
  ASSERT_FALSE(tokens.ok());
  EXPECT_EQ(tokens.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(tokens.status().message(), HasSubstr("unterminated double quote opened at column 22"));
  // An escaped quote does not close.
  EXPECT_FALSE(LexRestoreLine(R"("abc\")").ok());
}

TEST(LexRestoreLineTest, RefusesLineBreaksAndNul) {
  auto nl = LexRestoreLine("-j ACCEPT\n-A INPUT");
  ASSERT_FALSE(nl.ok());
  EXPECT_THAT(nl.status().message(), HasSubstr("a newline at column 10"));
  auto cr = LexRestoreLine("--comment \"a\rb\"");
  ASSERT_FALSE(cr.ok());
  EXPECT_THAT(cr.status().message(), HasSubstr("a carriage return at column 13"));
  auto nul = LexRestoreLine(std::string_view("ab\0c", 4));
  ASSERT_FALSE(nul.ok());
  EXPECT_THAT(nul.status().message(), HasSubstr("a NUL byte at column 3"));
}

TEST(QuoteRestoreTokenTest, LikeXtablesSaveString) {
  EXPECT_EQ(QuoteRestoreToken("abc_DEF-123"), "abc_DEF-123");
  EXPECT_EQ(QuoteRestoreToken("a b"), "\"a b\"");
  EXPECT_EQ(QuoteRestoreToken("a.b"), "\"a.b\"");
  EXPECT_EQ(QuoteRestoreToken(""), "\"\"");
  EXPECT_EQ(QuoteRestoreToken(R"(a"b\c'd)"), R"("a\"b\\c\'d")");
}

TEST(QuoteRestoreTokenTest, LexesBackToTheSameValue) {
  std::mt19937 rng(42);
  const std::string alphabet = "ab Z09_-\"\\'\t.$;|&`(){}[]!#*?~<>/:,=+%@^\x7f\xc3\xa9";
  for (int i = 0; i < 2000; ++i) {
    std::string value;
    size_t len = rng() % 12;
    for (size_t j = 0; j < len; ++j) value.push_back(alphabet[rng() % alphabet.size()]);
    auto tokens = LexRestoreLine("x " + QuoteRestoreToken(value) + " y");
    ASSERT_TRUE(tokens.ok()) << value;
    ASSERT_EQ(tokens->size(), 3u) << value;
    EXPECT_EQ((*tokens)[1].text, value);
  }
}

}  // namespace
}  // namespace iptkit
