#include "iptkit/status.h"

namespace iptkit {

std::string_view StatusCodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return "OK";
    case StatusCode::kInvalidArgument:
      return "INVALID_ARGUMENT";
    case StatusCode::kNotFound:
      return "NOT_FOUND";
    case StatusCode::kAlreadyExists:
      return "ALREADY_EXISTS";
    case StatusCode::kFailedPrecondition:
      return "FAILED_PRECONDITION";
    case StatusCode::kAborted:
      return "ABORTED";
    case StatusCode::kUnavailable:
      return "UNAVAILABLE";
    case StatusCode::kPermissionDenied:
      return "PERMISSION_DENIED";
    case StatusCode::kInternal:
      return "INTERNAL";
  }
  return "UNKNOWN";
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  std::string out(StatusCodeName(code_));
  out += ": ";
  out += message_;
  return out;
}

Status Status::WithContext(std::string_view prefix) const {
  if (ok()) return *this;
  Status out(code_, std::string(prefix) + ": " + message_);
  out.details_ = details_;
  return out;
}

namespace {

template <typename T>
void SetIfEmpty(std::optional<T>& slot, T value) {
  if (!slot) slot = std::move(value);
}

}  // namespace

Status Status::WithToken(std::string token, std::optional<int> column) const {
  if (ok() || details_.token) return *this;
  Status out = *this;
  out.details_.token = std::move(token);
  out.details_.column = column;
  return out;
}

Status Status::WithArgument(int argument) const {
  if (ok()) return *this;
  Status out = *this;
  SetIfEmpty(out.details_.argument, argument);
  return out;
}

Status Status::WithField(std::string pointer) const {
  if (ok()) return *this;
  Status out = *this;
  SetIfEmpty(out.details_.field, std::move(pointer));
  return out;
}

Status Status::WithFieldPrefix(std::string_view prefix) const {
  if (ok()) return *this;
  Status out = *this;
  out.details_.field = std::string(prefix) + out.details_.field.value_or("");
  return out;
}

Status Status::WithOpIndex(int index) const {
  if (ok()) return *this;
  Status out = *this;
  SetIfEmpty(out.details_.op_index, index);
  return out;
}

Status Status::WithLocation(std::string family, std::string table, std::string chain, std::optional<int> rule) const {
  if (ok() || details_.table) return *this;
  Status out = *this;
  out.details_.family = std::move(family);
  out.details_.table = std::move(table);
  if (!chain.empty()) out.details_.chain = std::move(chain);
  out.details_.rule = rule;
  return out;
}

Status Status::WithOwner(std::string owner) const {
  if (ok()) return *this;
  Status out = *this;
  SetIfEmpty(out.details_.owner, std::move(owner));
  return out;
}

Status Status::WithLine(int line) const {
  if (ok()) return *this;
  Status out = *this;
  SetIfEmpty(out.details_.line, line);
  return out;
}

Status Status::WithReason(std::string reason) const {
  if (ok()) return *this;
  Status out = *this;
  SetIfEmpty(out.details_.reason, std::move(reason));
  return out;
}

Status Status::WithDetails(StatusDetails details) const {
  if (ok()) return *this;
  Status out = *this;
  out.details_ = std::move(details);
  return out;
}

}  // namespace iptkit
