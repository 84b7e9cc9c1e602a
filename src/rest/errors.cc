#include "src/rest/errors.h"

#include <cctype>
#include <utility>

#include <nlohmann/json.hpp>

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

// "'TOKEN' at column N: " anywhere in the message (the rule parser's wording, dialect/rule_parser.cc). The token
// may itself contain quotes: it is what lies between the first quote of the match and "' at column ".
void FindSpecToken(const std::string& message, HttpError& e) {
  static constexpr std::string_view kAt = "' at column ";
  size_t at = message.find(kAt);
  while (at != std::string::npos) {
    size_t digits = at + kAt.size();
    size_t end = digits;
    while (end < message.size() && std::isdigit(static_cast<unsigned char>(message[end]))) ++end;
    size_t open = message.rfind(": '", at);
    size_t start = open != std::string::npos ? open + 2 : (message[0] == '\'' ? 0 : std::string::npos);
    if (end > digits && end - digits <= 9 && start != std::string::npos && start < at) {
      e.token = message.substr(start + 1, at - start - 1);
      e.column = std::stoi(message.substr(digits, end - digits));
      return;
    }
    at = message.find(kAt, at + 1);
  }
}

// "op N (" → N.
std::optional<int> OpNumber(const std::string& message) {
  size_t pos = message.find("op ");
  while (pos != std::string::npos) {
    if (pos == 0 || message[pos - 1] == ' ' || message[pos - 1] == ':') {
      size_t end = pos + 3;
      while (end < message.size() && std::isdigit(static_cast<unsigned char>(message[end]))) ++end;
      if (end > pos + 3 && end - pos - 3 <= 9 && end + 1 < message.size() && message[end] == ' ' &&
          message[end + 1] == '(') {
        return std::stoi(message.substr(pos + 3, end - pos - 3));
      }
    }
    pos = message.find("op ", pos + 1);
  }
  return std::nullopt;
}

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
  const std::string& m = status.message();
  if (!m.empty() && m[0] == '/') {
    size_t colon = m.find(": ");
    e.field = m.substr(0, colon);
  } else if (auto n = OpNumber(m); n && !context.op_pointer.empty() && *n >= 1) {
    e.field = context.op_pointer + "/" + std::to_string(*n - 1);
  }
  FindSpecToken(m, e);
  // A message without a pointer is about the request's rule only when iptables or the parser said so (a token, or
  // iptables rejecting the rule while canonicalizing it), not for a position, a chain or the body's syntax.
  const bool about_rule = e.token.has_value() || m.find("canonicalizing") != std::string::npos ||
                          m.find("iptables rejects") != std::string::npos;
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
  if (error.retry_after_seconds) details["retry_after"] = *error.retry_after_seconds;
  if (!request_id.empty()) details["request_id"] = std::string(request_id);
  nlohmann::ordered_json body;
  body["error"]["code"] = error.code;
  body["error"]["message"] = error.message;
  body["error"]["details"] = details;
  return body.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

}  // namespace iptkit::rest
