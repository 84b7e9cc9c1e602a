// Shared helpers of the backend unit tests (and of the txn tests through txn_test_util.h): rules and TableOps
// from spec text.
//
//   TableBatch b{.table = "filter", .ops = {TOp(TableOp::Kind::kAppend, "INPUT", "-s 1.2.3.4 -j ACCEPT")}};
#ifndef IPTKIT_SRC_BACKEND_BACKEND_TEST_UTIL_H_
#define IPTKIT_SRC_BACKEND_BACKEND_TEST_UTIL_H_

#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <utility>

#include "iptkit/dialect.h"
#include "iptkit/model.h"
#include "src/backend/backend.h"

namespace iptkit::backend_test {

// The rule `spec` parses to; a parse error fails the current test (and yields an empty rule).
inline Rule R(std::string_view spec, Family family = Family::kIPv4) {
  Result<Rule> rule = ParseRuleSpec(spec, family);
  EXPECT_TRUE(rule.ok()) << spec << ": " << rule.status().ToString();
  return rule.ok() ? *rule : Rule{};
}

// TableOp::Make with the rule given as IPv4 spec text ("" = no rule).
inline backend::TableOp TOp(backend::TableOp::Kind kind, std::string chain, std::string_view spec = "", int index = 0,
                            std::string arg = "") {
  return backend::TableOp::Make(kind, std::move(chain), spec.empty() ? Rule{} : R(spec), index, std::move(arg));
}

}  // namespace iptkit::backend_test

#endif  // IPTKIT_SRC_BACKEND_BACKEND_TEST_UTIL_H_
