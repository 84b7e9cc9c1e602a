// libFuzzer target for the JSON decoders (docs/testing.md): transactions, desired state, rules. Beyond "no crash,
// no sanitizer report": whatever decodes encodes back to JSON that decodes to an equal value.
//   cmake --preset fuzz && cmake --build --preset fuzz && build/fuzz/fuzz/json_fuzzer -max_total_time=60
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "iptkit/json.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto txn = iptkit::TransactionFromJson(text);
  if (txn.ok()) {
    auto again = iptkit::TransactionFromJson(iptkit::TransactionToJson(*txn));
    if (!again.ok() || again->ops() != txn->ops()) __builtin_trap();
  }
  auto desired = iptkit::DesiredStateFromJson(text);
  if (desired.ok()) {
    auto again = iptkit::DesiredStateFromJson(iptkit::DesiredStateToJson(*desired));
    if (!again.ok() || !(*again == *desired)) __builtin_trap();
  }
  (void)iptkit::RuleFromJson(text, iptkit::Family::kIPv4);
  return 0;
}
