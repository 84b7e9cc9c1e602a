// Helpers for the integration tests that drive the public iptkit API.
#ifndef IPTKIT_TESTS_INTEGRATION_LIBRARY_UTIL_H_
#define IPTKIT_TESTS_INTEGRATION_LIBRARY_UTIL_H_

#include <gtest/gtest.h>

#include <memory>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "iptkit/dialect.h"
#include "iptkit/firewall.h"
#include "tests/integration/netns_fixture.h"

namespace iptkit {
// "native", "native_legacy", "nft", "legacy" (test names and messages).
inline std::string BackendName(BackendKind kind) {
  return kind == BackendKind::kLegacy         ? "legacy"
         : kind == BackendKind::kNft          ? "nft"
         : kind == BackendKind::kNative       ? "native"
         : kind == BackendKind::kNativeLegacy ? "native_legacy"
                                              : "other";
}
inline void PrintTo(BackendKind kind, std::ostream* os) { *os << BackendName(kind); }
inline void PrintTo(Family family, std::ostream* os) { *os << (family == Family::kIPv4 ? "ipv4" : "ipv6"); }
}  // namespace iptkit

namespace iptkit::integration {

inline Variant VariantOf(BackendKind kind) {
  return kind == BackendKind::kLegacy || kind == BackendKind::kNativeLegacy ? Variant::kLegacy : Variant::kNft;
}

inline std::string BackendParamName(const ::testing::TestParamInfo<BackendKind>& info) {
  return BackendName(info.param);
}

// A Firewall on `ns` through the given backend.
inline Result<std::unique_ptr<Firewall>> OpenFirewall(const TestNetns& ns, BackendKind kind,
                                                      FirewallOptions options = {}) {
  options.netns = ns.name();
  options.backend = kind;
  return Firewall::Open(options);
}

// A rule from user syntax; a parse error fails the current test (and yields an empty rule).
inline Rule Spec(std::string_view spec, Family family = Family::kIPv4) {
  Result<Rule> rule = ParseRuleSpec(spec, family);
  EXPECT_TRUE(rule.ok()) << "ParseRuleSpec(\"" << spec << "\"): " << rule.status().ToString();
  return rule.ok() ? *rule : Rule{};
}

// The "-A CHAIN ..." lines of one chain of one table in iptables-save text, in order.
inline std::vector<std::string> RuleLines(std::string_view save_text, const std::string& table,
                                          const std::string& chain) {
  std::vector<std::string> lines;
  auto tables = SplitTables(save_text);
  auto it = tables.find(table);
  if (it == tables.end()) return lines;
  std::string prefix = "-A " + chain + " ";
  size_t pos = 0;
  const std::string& block = it->second;
  while (pos < block.size()) {
    size_t end = block.find('\n', pos);
    std::string line = block.substr(pos, end - pos);
    if (line.starts_with(prefix) || line == "-A " + chain) lines.push_back(line);
    pos = end == std::string::npos ? block.size() : end + 1;
  }
  return lines;
}

}  // namespace iptkit::integration

#endif  // IPTKIT_TESTS_INTEGRATION_LIBRARY_UTIL_H_
