// REST errors: the one mapping from Status codes to HTTP statuses, and the JSON error body
// {"error":{"code","message","details"}} (docs/rest.md "Errors").
//
// `details.field` is the JSON pointer of the offending value, taken from the message when it starts with one
// (every JSON decoding error does: "/ops/2/append/rule/spec: ...") or given by the caller (a planner error
// "op 3 (...)" of a transaction maps to "/ops/2"); for a rule spec, `details.token` and `details.column` (1-based
// byte column in the spec) name the token the parser stopped at.
// Thread-safety: pure functions.
//
//   HttpError e = ErrorFromStatus(status, {.op_pointer = "/ops"});
//   response.status = e.http_status;
//   response.body = ErrorBody(e);
#ifndef IPTKIT_SRC_REST_ERRORS_H_
#define IPTKIT_SRC_REST_ERRORS_H_

#include <optional>
#include <string>
#include <string_view>

#include "iptkit/status.h"

namespace iptkit::rest {

struct HttpError {
  int http_status = 500;
  std::string code;  // "invalid_argument", "not_found", ..., "unauthenticated", "rate_limited"
  std::string message;
  std::optional<std::string> field;   // JSON pointer
  std::optional<std::string> token;   // the offending token of a rule spec
  std::optional<int> column;          // its 1-based column
  std::optional<int> argument;        // or its 1-based position among the spec's arguments
  std::optional<std::string> reason;  // a short machine-readable reason ("lossy", "rule_rejected", ...)
  std::optional<std::string> table;   // where: table, chain, 1-based rule number
  std::optional<std::string> chain;
  std::optional<int> rule;
  std::optional<std::string> owner;        // the owner of the rule concerned
  std::optional<int> line;                 // 1-based line of the request's own text (set load/sync entries)
  std::optional<int> retry_after_seconds;  // for 429 / 503
};

// The HTTP status of each Status code: InvalidArgument 400, NotFound 404, AlreadyExists 409, Aborted 409,
// FailedPrecondition 412, PermissionDenied 403, Unavailable 503, Internal 500 (OK 200).
int HttpStatusFor(StatusCode code);
// "invalid_argument", "not_found", ... (lower-case StatusCodeName).
std::string ErrorCodeFor(StatusCode code);

struct ErrorContext {
  // Where the request's transaction ops sit ("/ops"): "op N (...)" in a message becomes field "<op_pointer>/<N-1>".
  std::string op_pointer;
  // The field of the request a message without a pointer is about (e.g. "/spec" for a single-rule request).
  std::string default_field;
};
HttpError ErrorFromStatus(const Status& status, const ErrorContext& context = {});
// An error of the HTTP layer itself (401, 405, 413, 415, 429, ...).
HttpError MakeError(int http_status, std::string code, std::string message);

// {"error":{"code":...,"message":...,"details":{...}}} (details only with what is known), one line.
std::string ErrorBody(const HttpError& error, std::string_view request_id = "");

}  // namespace iptkit::rest

#endif  // IPTKIT_SRC_REST_ERRORS_H_
