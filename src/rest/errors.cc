#include "src/rest/errors.h"

#include <cctype>
#include <nlohmann/json.hpp>
#include <utility>

namespace iptkit::rest {
namespace {

struct Mapping {
  StatusCode code;
  int http;
};
// The one table (STYLE.md "Errors").
constexpr Mapping kMappings[] = {
    {StatusCode::kOk, 200},
    {StatusCode::kInvalidArgument, 400},
    {StatusCode::kNotFound, 404},
    {StatusCode::kAlreadyExists, 409},
    {StatusCode::kAborted, 409},
    {StatusCode::kFailedPrecondition, 412},
    {StatusCode::kPermissionDenied, 403},
    {StatusCode::kUnavailable, 503},
    {StatusCode::kInternal, 500},
};

}  // namespace

int HttpStatusFor(StatusCode code) {
  for (const Mapping& m : kMappings) {
    if (m.code == code) return m.http;
  }
  return 500;
}

std::string ErrorCodeFor(StatusCode code) {
  std::string name(StatusCodeName(code));
  for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return name;
}

HttpError ErrorFromStatus(const Status& status, const ErrorContext& context) {
  HttpError e;
  e.http_status = HttpStatusFor(status.code());
  e.code = ErrorCodeFor(status.code());
  e.message = status.message();
  const StatusDetails& d = status.details();
  e.field = d.field;
  if (!e.field && d.op_index && !context.op_pointer.empty()) {
    e.field = context.op_pointer + "/" + std::to_string(*d.op_index);
  }
  e.token = d.token;
  e.column = d.column;
  e.argument = d.argument;
  e.reason = d.reason;
  e.table = d.table;
  e.chain = d.chain;
  e.rule = d.rule;
  e.owner = d.owner;
  e.line = d.line;
  // Without a pointer, a failure is about the request's rule only when the parser named a token of it or iptables
  // rejected the rule, not for a position, a chain or the body's syntax.
  const bool about_rule = d.token.has_value() || d.reason == "rule_rejected";
  if (!e.field && about_rule && !context.default_field.empty()) e.field = context.default_field;
  if (status.code() == StatusCode::kUnavailable) e.retry_after_seconds = 1;
  return e;
}

HttpError MakeError(int http_status, std::string code, std::string message) {
  HttpError e;
  e.http_status = http_status;
  e.code = std::move(code);
  e.message = std::move(message);
  return e;
}

std::string ErrorBody(const HttpError& error, std::string_view request_id) {
  nlohmann::ordered_json details = nlohmann::ordered_json::object();
  if (error.field) details["field"] = *error.field;
  if (error.token) details["token"] = *error.token;
  if (error.column) details["column"] = *error.column;
  if (error.argument) details["argument"] = *error.argument;
  if (error.reason) details["reason"] = *error.reason;
  if (error.table) details["table"] = *error.table;
  if (error.chain) details["chain"] = *error.chain;
  if (error.rule) details["rule"] = *error.rule;
  if (error.owner) details["owner"] = *error.owner;
  if (error.line) details["line"] = *error.line;
  if (error.retry_after_seconds) details["retry_after"] = *error.retry_after_seconds;
  if (!request_id.empty()) details["request_id"] = std::string(request_id);
  nlohmann::ordered_json body;
  body["error"]["code"] = error.code;
  body["error"]["message"] = error.message;
  body["error"]["details"] = details;
  return body.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

}  // namespace iptkit::rest
