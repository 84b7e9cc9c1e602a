// libFuzzer target for the REST decoding (docs/testing.md): request bodies of every kind, query values, and the
// error-details extraction over the messages they produce. Beyond "no crash, no sanitizer report": every error is
// InvalidArgument and its message starts with a JSON pointer or names the body, and the details extraction never
// reports a column without a token.
//   cmake --preset fuzz && cmake --build --preset fuzz && build/fuzz/fuzz/rest_fuzzer -max_total_time=60
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "src/rest/decode.h"
#include "src/rest/errors.h"

namespace {

void Check(const iptkit::Status& s) {
  if (s.ok()) return;
  if (s.code() != iptkit::StatusCode::kInvalidArgument) __builtin_trap();
  const std::string& m = s.message();
  if (m.empty()) __builtin_trap();
  iptkit::rest::HttpError e = iptkit::rest::ErrorFromStatus(s, {"/ops", "/spec"});
  if (e.http_status != 400) __builtin_trap();
  if (e.column.has_value() != e.token.has_value()) __builtin_trap();
  (void)iptkit::rest::ErrorBody(e, "r-fuzz");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const iptkit::rest::DecodeOptions options{"", "iptkitd", 1000};
  const iptkit::rest::Location where{iptkit::Family::kIPv4, "filter", "INPUT"};
  Check(iptkit::rest::DecodeRuleBody(text, where, options).status());
  Check(iptkit::rest::DecodeReplaceBody(text, where, options).status());
  Check(iptkit::rest::DecodeExpectBody(text, where, options).status());
  Check(iptkit::rest::DecodeChainBody(text, options).status());
  Check(iptkit::rest::DecodeTransactionBody(text, options).status());
  Check(iptkit::rest::DecodeOwnerBody(text, "myapp", options).status());
  const iptkit::rest::Query query{{"v", std::string(text)}};
  Check(iptkit::rest::QueryInt(query, "v", 1, 1000).status());
  Check(iptkit::rest::QueryTime(query, "v").status());
  Check(iptkit::rest::QueryBool(query, "v").status());
  // Arbitrary messages through the details extraction.
  (void)iptkit::rest::ErrorFromStatus(iptkit::Status::InvalidArgument(std::string(text)), {"/ops", "/spec"});
  return 0;
}
