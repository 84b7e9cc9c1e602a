// gtest helpers shared by the integration tests.
#ifndef IPTKIT_TESTS_INTEGRATION_TEST_UTIL_H_
#define IPTKIT_TESTS_INTEGRATION_TEST_UTIL_H_

#include <gtest/gtest.h>

#include <ostream>

#include "iptkit/status.h"
#include "tests/integration/netns_fixture.h"

namespace iptkit::integration {
inline void PrintTo(Variant variant, std::ostream* os) { *os << VariantName(variant); }
}  // namespace iptkit::integration

#define IPTKIT_IT_CONCAT_INNER_(a, b) a##b
#define IPTKIT_IT_CONCAT_(a, b) IPTKIT_IT_CONCAT_INNER_(a, b)

// `ASSERT_OK_AND_ASSIGN(auto x, MakeX());` — fails the test with the Status when not OK.
#define ASSERT_OK_AND_ASSIGN(lhs, expr) \
  ASSERT_OK_AND_ASSIGN_IMPL_(IPTKIT_IT_CONCAT_(it_result_, __COUNTER__), lhs, expr)
#define ASSERT_OK_AND_ASSIGN_IMPL_(tmp, lhs, expr)                   \
  auto tmp = (expr);                                                 \
  ASSERT_TRUE(tmp.ok()) << #expr << ": " << tmp.status().ToString(); \
  lhs = std::move(tmp).value()

#define ASSERT_STATUS_OK(expr)                                              \
  do {                                                                      \
    ::iptkit::Status it_status_ = (expr);                                   \
    ASSERT_TRUE(it_status_.ok()) << #expr << ": " << it_status_.ToString(); \
  } while (0)

#define EXPECT_CODE(status_expr, expected_code)                                                             \
  do {                                                                                                      \
    ::iptkit::Status it_status_ = (status_expr);                                                            \
    EXPECT_EQ(it_status_.code(), (expected_code)) << #status_expr << " returned " << it_status_.ToString(); \
  } while (0)

// Skips the test unless it runs as root (network namespaces, iptables).
#define IPTKIT_REQUIRE_ROOT()                                                             \
  do {                                                                                    \
    if (!::iptkit::integration::IsRoot()) GTEST_SKIP() << "needs root (netns, iptables)"; \
  } while (0)

// Creates a namespace into `var` (a std::unique_ptr<TestNetns>), skipping when not root.
#define IPTKIT_NEW_NETNS(var)                                                 \
  IPTKIT_REQUIRE_ROOT();                                                      \
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<::iptkit::integration::TestNetns> var, \
                       ::iptkit::integration::TestNetns::Create())

// Skips the test when the iptables variant does not work in the namespace (kernel feature missing).
#define IPTKIT_REQUIRE_VARIANT(ns, variant, family)                                          \
  do {                                                                                       \
    ::iptkit::Status it_usable_ = ::iptkit::integration::VariantUsable(ns, variant, family); \
    if (!it_usable_.ok()) GTEST_SKIP() << it_usable_.ToString();                             \
  } while (0)

#endif  // IPTKIT_TESTS_INTEGRATION_TEST_UTIL_H_
