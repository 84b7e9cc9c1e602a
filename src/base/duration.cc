#include "src/base/duration.h"

#include <limits>
#include <string>

namespace iptkit::base {
namespace {

constexpr std::string_view kForms = "expected a duration such as 250ms, 90 or 90s, 10m, 2h, 1d";

std::string Quote(std::string_view text) { return "'" + std::string(text) + "'"; }

// Splits "10m" into its number and its unit's length in milliseconds (0 when the unit is unknown).
bool Split(std::string_view text, uint64_t* number, int64_t* factor) {
  size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  const std::string_view unit = text.substr(digits);
  if (unit == "ms") {
    *factor = 1;
  } else if (unit == "s" || unit.empty()) {
    *factor = 1000;
  } else if (unit == "m") {
    *factor = 60 * 1000;
  } else if (unit == "h") {
    *factor = 60 * 60 * 1000;
  } else if (unit == "d") {
    *factor = 24 * 60 * 60 * 1000;
  } else {
    return false;
  }
  if (digits == 0 || digits > 18) return false;
  uint64_t n = 0;
  for (size_t i = 0; i < digits; ++i) n = n * 10 + static_cast<uint64_t>(text[i] - '0');
  if (n > static_cast<uint64_t>(std::numeric_limits<int64_t>::max() / *factor)) return false;
  *number = n;
  return true;
}

}  // namespace

Result<std::chrono::milliseconds> ParseDuration(std::string_view text) {
  uint64_t n = 0;
  int64_t factor = 0;
  if (!Split(text, &n, &factor)) return Status::InvalidArgument(Quote(text) + ": " + std::string(kForms));
  if (n == 0) return Status::InvalidArgument(Quote(text) + ": the duration must be greater than 0");
  return std::chrono::milliseconds(static_cast<int64_t>(n) * factor);
}

Result<int64_t> ParseSeconds(std::string_view text, int64_t max) {
  uint64_t n = 0;
  int64_t factor = 0;
  const std::string bound = "a whole number of seconds 1.." + std::to_string(max) + " (90, 10m, 2h, 1d)";
  if (!Split(text, &n, &factor) || factor < 1000) return Status::InvalidArgument(Quote(text) + ": expected " + bound);
  const uint64_t seconds = n * static_cast<uint64_t>(factor / 1000);
  if (seconds == 0 || seconds > static_cast<uint64_t>(max)) {
    return Status::InvalidArgument(Quote(text) + ": expected " + bound);
  }
  return static_cast<int64_t>(seconds);
}

}  // namespace iptkit::base
