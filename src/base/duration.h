// Durations as people type them, one parser for the CLI, the REST API and iptkitd's configuration:
// "250ms", "90" or "90s", "10m", "2h", "1d" (a bare number is seconds).
// Thread-safety: pure functions.
//
//   IPTKIT_ASSIGN_OR_RETURN(std::chrono::milliseconds wait, base::ParseDuration("250ms"));
//   IPTKIT_ASSIGN_OR_RETURN(int64_t ttl, base::ParseSeconds("10m", /*max=*/2147483));   // 600
#ifndef IPTKIT_SRC_BASE_DURATION_H_
#define IPTKIT_SRC_BASE_DURATION_H_

#include <chrono>
#include <cstdint>
#include <string_view>

#include "iptkit/status.h"

namespace iptkit::base {

// A positive duration: digits followed by one of ms, s, m, h, d, or by nothing (seconds). InvalidArgument naming
// the text otherwise (zero, a sign, a fraction, an unknown unit, overflow).
Result<std::chrono::milliseconds> ParseDuration(std::string_view text);

// A positive whole number of seconds in 1..max: the forms of ParseDuration except "ms". InvalidArgument naming the
// text and the bound otherwise.
Result<int64_t> ParseSeconds(std::string_view text, int64_t max);

}  // namespace iptkit::base

#endif  // IPTKIT_SRC_BASE_DURATION_H_
