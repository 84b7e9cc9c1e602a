// libFuzzer target for the iptables-save/-restore dialect (docs/testing.md). Contract checked beyond "no crash,
// no sanitizer report": whatever parses prints back to text that parses to an equal value.
//   cmake --preset fuzz && cmake --build --preset fuzz && build/fuzz/fuzz/dialect_fuzzer -max_total_time=60
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "iptkit/dialect.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  for (iptkit::Family family : {iptkit::Family::kIPv4, iptkit::Family::kIPv6}) {
    auto rule = iptkit::ParseRuleSpec(text, family);
    if (rule.ok()) {
      auto again = iptkit::ParseRuleSpec(iptkit::FormatRuleSpec(*rule), family);
      if (!again.ok() || !(*again == *rule)) __builtin_trap();
    }
    auto ruleset = iptkit::ParseSave(text, family);
    if (ruleset.ok()) {
      auto again = iptkit::ParseSave(iptkit::FormatSave(*ruleset), family);
      if (!again.ok() || !(*again == *ruleset)) __builtin_trap();
    }
  }
  (void)iptkit::LexRestoreLine(text);
  return 0;
}
