// Decoding of REST request bodies and query parameters into service requests (docs/rest.md). Pure functions
// over text: no I/O, no exceptions; every error is InvalidArgument whose message starts with the JSON pointer of
// the offending value ("/ops/3/append/rule/ttl: expected an integer 1..315360000, got -5"), or names the query
// parameter. A fuzz target (fuzz/rest_fuzzer.cc) feeds them arbitrary input.
// Thread-safety: safe to call concurrently.
//
//   IPTKIT_ASSIGN_OR_RETURN(RuleBody body, DecodeRuleBody(text, {Family::kIPv4, "filter", "INPUT"}, ""));
//   IPTKIT_ASSIGN_OR_RETURN(TransactionBody txn, DecodeTransactionBody(text, {.default_owner = "iptkitd"}));
#ifndef IPTKIT_SRC_REST_DECODE_H_
#define IPTKIT_SRC_REST_DECODE_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "iptkit/desired.h"
#include "iptkit/model.h"
#include "iptkit/status.h"
#include "iptkit/transaction.h"
#include "src/service/service.h"

namespace iptkit::rest {

// Longest TTL and confirm window accepted: 10 years.
inline constexpr int64_t kMaxSeconds = 315360000;

struct DecodeOptions {
  std::string netns;          // the daemon's; a body or query naming another is refused
  std::string default_owner;  // owner of a rule that has a ttl but no owner
  size_t max_ops = 1000;      // ops of a transaction, rules of a document
};

// Where a rule route points.
struct Location {
  Family family = Family::kIPv4;
  std::string table;
  std::string chain;
};

// A rule body: "spec" and/or the structured fields (include/iptkit/json.h), plus "owner", "id" and "ttl" for
// owned rules ("ttl" and "confirm_within" everywhere: an integer of seconds, or a string "90", "10m", "2h", "1d");
// "family", "table" and "chain" may be given but must equal the route's; "netns" must be the daemon's. The rule comes
// back without an owner tag: a comment starting with "iptkit:" anywhere in a rule the caller wrote is refused (in every
// body below, for owned and imperative ops alike).
struct RuleBody {
  Rule rule;
  std::optional<std::string> owner;  // also set (to default_owner) when only a ttl was given
  std::optional<std::string> id;
  std::optional<int64_t> ttl_seconds;
};
Result<RuleBody> DecodeRuleBody(std::string_view body, const Location& where, const DecodeOptions& options);

// PUT .../rules/N: a rule body (without owner/id/ttl) plus optional "expect" (a spec string or a rule object).
struct ReplaceBody {
  Rule rule;
  std::optional<Rule> expect;
};
Result<ReplaceBody> DecodeReplaceBody(std::string_view body, const Location& where, const DecodeOptions& options);

// DELETE .../rules/N: empty, or {"expect": spec or rule object}.
Result<std::optional<Rule>> DecodeExpectBody(std::string_view body, const Location& where,
                                             const DecodeOptions& options);

// PUT .../chains/CHAIN: empty, {} or {"policy": "ACCEPT"|"DROP"}.
Result<std::optional<std::string>> DecodeChainBody(std::string_view body, const DecodeOptions& options);

// POST /v1/transactions: {"ops": [...], "confirm_within": S, "dry_run": B, "netns": N}. Ops are those of
// docs/json.md; an append/insert/delete whose rule carries "owner" (or a "ttl") is an owned op: append adds at the
// end of the owner's rules (position last), insert with index 1 at their front (position first), delete removes
// the managed rule. Owned ops run after the others (service.h ChangeRequest).
struct TransactionBody {
  Transaction ops;
  std::vector<service::ManagedAdd> adds;
  std::vector<service::ManagedDelete> deletes;
  std::optional<int64_t> confirm_within_seconds;
  bool dry_run = false;
};
Result<TransactionBody> DecodeTransactionBody(std::string_view body, const DecodeOptions& options);

// PUT /v1/owners/OWNER: a desired state document (docs/json.md); its "owner" may be left out and must otherwise
// equal `owner`. At most max_ops rules.
Result<DesiredState> DecodeOwnerBody(std::string_view body, const std::string& owner, const DecodeOptions& options);

// ---- Query parameters ----
using Query = std::multimap<std::string, std::string>;
// The single value of `name`, or nullopt; a parameter given twice is an error.
Result<std::optional<std::string>> QueryValue(const Query& query, const std::string& name);
// "1"/"true"/"yes" or "0"/"false"/"no"; absent = false.
Result<bool> QueryBool(const Query& query, const std::string& name);
// An integer in [min, max], or nullopt when absent.
Result<std::optional<int64_t>> QueryInt(const Query& query, const std::string& name, int64_t min, int64_t max);
// A number of seconds 1..max: "90", "10m", "2h", "1d" (src/base/duration.h), or nullopt when absent.
Result<std::optional<int64_t>> QuerySeconds(const Query& query, const std::string& name, int64_t max);
// Milliseconds since the epoch: an integer, or an RFC 3339 UTC time "2026-12-02T04:00:00Z" (optional ".mmm").
Result<std::optional<int64_t>> QueryTime(const Query& query, const std::string& name);
// Refuses parameters not in `allowed`, and tokens in the URL ("token", "access_token", "api_key": they would
// end up in logs), naming the parameter.
Status CheckQuery(const Query& query, const std::vector<std::string>& allowed);
// Formats milliseconds since the epoch as RFC 3339 UTC with milliseconds.
std::string FormatTime(int64_t ms);

}  // namespace iptkit::rest

#endif  // IPTKIT_SRC_REST_DECODE_H_
