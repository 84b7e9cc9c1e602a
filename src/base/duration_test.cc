#include "src/base/duration.h"

#include <gtest/gtest.h>

namespace iptkit::base {
namespace {

using std::chrono::milliseconds;

TEST(DurationTest, EveryUnit) {
  EXPECT_EQ(*ParseDuration("250ms"), milliseconds(250));
  EXPECT_EQ(*ParseDuration("90"), milliseconds(90000));
  EXPECT_EQ(*ParseDuration("90s"), milliseconds(90000));
  EXPECT_EQ(*ParseDuration("10m"), milliseconds(600000));
  EXPECT_EQ(*ParseDuration("2h"), milliseconds(7200000));
  EXPECT_EQ(*ParseDuration("1d"), milliseconds(86400000));
}

TEST(DurationTest, BadFormsNameTheText) {
  for (const char* bad :
       {"", "0", "0s", "-1", "+5", "1.5s", "5 s", "5S", "5x", "ms", "99999999999999999999", "9223372036854775807d"}) {
    Result<milliseconds> d = ParseDuration(bad);
    ASSERT_FALSE(d.ok()) << bad;
    EXPECT_EQ(d.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(d.status().message().find("'" + std::string(bad) + "'"), std::string::npos) << d.status().message();
  }
}

TEST(DurationTest, SecondsWithABound) {
  EXPECT_EQ(*ParseSeconds("90", 2147483), 90);
  EXPECT_EQ(*ParseSeconds("10m", 2147483), 600);
  EXPECT_EQ(*ParseSeconds("1d", 2147483), 86400);
  EXPECT_EQ(*ParseSeconds("2147483", 2147483), 2147483);
  EXPECT_FALSE(ParseSeconds("2147484", 2147483).ok());
  EXPECT_FALSE(ParseSeconds("25d", 2147483).ok());
  EXPECT_FALSE(ParseSeconds("500ms", 2147483).ok());
  EXPECT_FALSE(ParseSeconds("0", 2147483).ok());
}

}  // namespace
}  // namespace iptkit::base
