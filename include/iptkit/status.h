// Status and Result<T>: how every iptkit call reports success or failure.
//
// A Status is a code plus a human-readable message that names what was wrong (the token and column of a rule
// spec, the JSON pointer of a field, the restore line and iptables' stderr), and a structured payload
// (StatusDetails) carrying the same facts as fields, so that adapters (the CLI, the REST layer) render them without
// parsing the message. Result<T> holds either a value or a non-OK Status. Both are cheap value types; neither is
// thread-safe to mutate concurrently, but copies are independent. No iptkit function throws.
//
//   iptkit::Result<iptkit::Rule> rule = iptkit::ParseRuleSpec("-p tcp --dport 22 -j ACCEPT", Family::kIPv4);
//   if (!rule.ok()) {
//     std::cerr << rule.status().ToString() << "\n";  // "INVALID_ARGUMENT: ..."
//     return 1;
//   }
//   Use(*rule);
#ifndef IPTKIT_STATUS_H_
#define IPTKIT_STATUS_H_

#include <cassert>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace iptkit {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,     // bad input: spec, JSON, option; nothing was changed
  kNotFound,            // table, chain, rule or set does not exist
  kAlreadyExists,       // chain or set exists already
  kFailedPrecondition,  // chain not empty / still referenced, table unrepresentable, snapshot moved
  kAborted,             // a concurrent change won; retry the read-modify-write
  kUnavailable,         // lock busy past the wait bound, service down
  kPermissionDenied,    // not root / no CAP_NET_ADMIN, token scope
  kInternal,            // a bug, or a tool that misbehaved (unparsable output)
};

std::string_view StatusCodeName(StatusCode code);

// What a failure is about, as fields. Every field is optional; producers fill what they know, and the message says
// the same in words. Adapters render it (REST: error.details; CLI: a caret under the token).
struct StatusDetails {
  std::optional<std::string> token;   // the offending token of a rule spec or command line
  std::optional<int> column;          // its 1-based byte column in the spec
  std::optional<int> argument;        // its 1-based position among the spec's arguments (argv-style input)
  std::optional<std::string> field;   // JSON pointer of the offending value ("/ops/2/append/rule/spec")
  std::optional<int> op_index;        // 0-based index of the offending op of a transaction
  std::optional<std::string> family;  // "ipv4" / "ipv6"
  std::optional<std::string> table;   // where the failure is: table, chain, 1-based rule number
  std::optional<std::string> chain;
  std::optional<int> rule;
  std::optional<std::string> owner;   // the owner of the rule or chain concerned
  std::optional<int> line;            // 1-based line of the caller's own input (a restore file, a bulk load)
  std::optional<std::string> reason;  // a short machine-readable reason ("lossy", "unrepresentable", ...)
  friend bool operator==(const StatusDetails&, const StatusDetails&) = default;
};

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  static Status InvalidArgument(std::string m) { return {StatusCode::kInvalidArgument, std::move(m)}; }
  static Status NotFound(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
  static Status AlreadyExists(std::string m) { return {StatusCode::kAlreadyExists, std::move(m)}; }
  static Status FailedPrecondition(std::string m) { return {StatusCode::kFailedPrecondition, std::move(m)}; }
  static Status Aborted(std::string m) { return {StatusCode::kAborted, std::move(m)}; }
  static Status Unavailable(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }
  static Status PermissionDenied(std::string m) { return {StatusCode::kPermissionDenied, std::move(m)}; }
  static Status Internal(std::string m) { return {StatusCode::kInternal, std::move(m)}; }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "NOT_FOUND: chain 'FOO' does not exist in table filter" (or "OK").
  std::string ToString() const;

  // Returns a copy whose message is "<prefix>: <message>" (same code, same details); OK stays OK.
  Status WithContext(std::string_view prefix) const;

  const StatusDetails& details() const { return details_; }
  // Copies with one part of the payload set (the message is unchanged); OK stays OK. Setters do not overwrite what
  // an inner producer set already, except WithFieldPrefix, which prepends: "/ops/2" + "/rule/spec".
  Status WithToken(std::string token, std::optional<int> column = std::nullopt) const;
  Status WithArgument(int argument) const;
  Status WithField(std::string pointer) const;
  Status WithFieldPrefix(std::string_view prefix) const;
  Status WithOpIndex(int index) const;
  Status WithLocation(std::string family, std::string table, std::string chain = {},
                      std::optional<int> rule = std::nullopt) const;
  Status WithOwner(std::string owner) const;
  Status WithLine(int line) const;
  Status WithReason(std::string reason) const;
  // Replaces the whole payload.
  Status WithDetails(StatusDetails details) const;

  friend bool operator==(const Status&, const Status&) = default;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
  StatusDetails details_;
};

// Holds a T or a non-OK Status. Accessing the value of an error Result is a bug (asserts in debug builds).
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : data_(std::move(value)) {}        // NOLINT(google-explicit-constructor)
  Result(Status status) : data_(std::move(status)) {  // NOLINT(google-explicit-constructor)
    assert(!std::get<Status>(data_).ok() && "Result constructed from an OK Status");
  }

  bool ok() const { return std::holds_alternative<T>(data_); }
  Status status() const { return ok() ? Status::Ok() : std::get<Status>(data_); }

  T& value() & {
    assert(ok());
    return std::get<T>(data_);
  }
  const T& value() const& {
    assert(ok());
    return std::get<T>(data_);
  }
  T&& value() && {
    assert(ok());
    return std::get<T>(std::move(data_));
  }
  T value_or(T fallback) const& { return ok() ? std::get<T>(data_) : std::move(fallback); }

  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  std::variant<T, Status> data_;
};

}  // namespace iptkit

#define IPTKIT_CONCAT_INNER_(a, b) a##b
#define IPTKIT_CONCAT_(a, b) IPTKIT_CONCAT_INNER_(a, b)

// Returns the Status from the enclosing function if `expr` (a Status) is not OK.
#define IPTKIT_RETURN_IF_ERROR(expr)                 \
  do {                                               \
    ::iptkit::Status iptkit_status_ = (expr);        \
    if (!iptkit_status_.ok()) return iptkit_status_; \
  } while (0)

// `IPTKIT_ASSIGN_OR_RETURN(auto x, MakeX());` declares x from a Result or returns its Status.
#define IPTKIT_ASSIGN_OR_RETURN(lhs, expr) \
  IPTKIT_ASSIGN_OR_RETURN_IMPL_(IPTKIT_CONCAT_(iptkit_result_, __LINE__), lhs, expr)
#define IPTKIT_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                  \
  if (!tmp.ok()) return tmp.status();                 \
  lhs = std::move(tmp).value()

#endif  // IPTKIT_STATUS_H_
