#include "src/ipset/session.h"

#include <libipset/data.h>
#include <libipset/ipset.h>
#include <libipset/session.h>
#include <libipset/types.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>

namespace iptkit::ipset {
namespace {

std::string Format(const char* fmt, va_list ap) {
  va_list copy;
  va_copy(copy, ap);
  char small[1024];
  int n = std::vsnprintf(small, sizeof(small), fmt, copy);
  va_end(copy);
  if (n < 0) return {};
  if (static_cast<size_t>(n) < sizeof(small)) return std::string(small, static_cast<size_t>(n));
  std::string big(static_cast<size_t>(n) + 1, '\0');
  std::vsnprintf(big.data(), big.size(), fmt, ap);
  big.resize(static_cast<size_t>(n));
  return big;
}

std::string TrimEnd(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\r')) s.pop_back();
  return s;
}

// "Error in line 12: text" → line 12, "text".
Report ParseReport(Report::Kind kind, std::string message) {
  Report r;
  r.kind = kind;
  message = TrimEnd(std::move(message));
  constexpr std::string_view kPrefix = "Error in line ";
  if (message.rfind(kPrefix, 0) == 0) {
    size_t colon = message.find(':', kPrefix.size());
    if (colon != std::string::npos) {
      r.line = std::atoi(message.c_str() + kPrefix.size());
      size_t start = colon + 1;
      while (start < message.size() && message[start] == ' ') ++start;
      message = message.substr(start);
    }
  }
  r.message = std::move(message);
  return r;
}

// ipset_custom_errorfn: parameter problems found by the parser (unknown argument, ...). Returning non-zero makes the
// parser fail the line instead of calling exit().
int CustomError(struct ::ipset* handle, void* p, int status, const char* msg, ...) {
  auto* self = static_cast<Session*>(p);
  va_list ap;
  va_start(ap, msg);
  std::string text = Format(msg, ap);
  va_end(ap);
  if (status != IPSET_NO_PROBLEM) self->AddReport(ParseReport(Report::Kind::kError, text));
  return -1;
}

// ipset_standard_errorfn: the session's report (kernel errors, syntax errors, test results).
int StandardError(struct ::ipset* handle, void* p) {
  auto* self = static_cast<Session*>(p);
  struct ipset_session* session = ipset_session(handle);
  const char* msg = ipset_session_report_msg(session);
  enum ipset_err_type type = ipset_session_report_type(session);
  std::string text = msg == nullptr ? "" : msg;
  ipset_session_report_reset(session);
  switch (type) {
    case IPSET_NO_ERROR:
      return 0;
    case IPSET_WARNING:
      self->AddReport(ParseReport(Report::Kind::kWarning, text));
      return 0;
    case IPSET_NOTICE:
      self->AddReport(ParseReport(Report::Kind::kNotice, text));
      return -1;
    case IPSET_ERROR:
      self->AddReport(ParseReport(Report::Kind::kError, text));
      return -1;
  }
  return -1;
}

int PrintOut(struct ipset_session* session, void* p, const char* fmt, ...) {
  auto* self = static_cast<Session*>(p);
  va_list ap;
  va_start(ap, fmt);
  std::string text = Format(fmt, ap);
  va_end(ap);
  self->AppendOutput(text);
  return static_cast<int>(text.size());
}

void LoadTypesOnce() {
  // ipset_load_types fills a process-wide list of types; it is not thread-safe.
  static std::once_flag once;
  std::call_once(once, [] { ipset_load_types(); });
}

}  // namespace

Result<std::unique_ptr<Session>> Session::Open(bool exist) {
  LoadTypesOnce();
  struct ::ipset* handle = ipset_init();
  if (handle == nullptr) {
    return Status::Unavailable("libipset: cannot open a session (netlink socket; is the ip_set module available?)");
  }
  std::unique_ptr<Session> session(new Session(handle));
  if (ipset_custom_printf(handle, CustomError, StandardError, PrintOut, session.get()) != 0) {
    return Status::Internal("libipset: cannot install the print handlers");
  }
  if (exist) ipset_envopt_set(ipset_session(handle), IPSET_ENV_EXIST);
  return session;
}

Session::~Session() {
  ForgetSetTypes();
  ipset_fini(handle_);
}

void Session::CacheSetType(std::string_view name) {
  const std::string set(name);
  if (std::find(cached_.begin(), cached_.end(), set) != cached_.end()) return;
  struct ipset_session* session = ipset_session(handle_);
  struct ipset_data* data = ipset_session_data(session);
  ipset_data_reset(data);
  if (ipset_data_set(data, IPSET_SETNAME, set.c_str()) != 0) return;
  // The type of an existing set, as for an add line: the kernel's header (type name, revision, family) matched
  // against the loaded types.
  const struct ipset_type* type = ipset_type_get(session, IPSET_CMD_ADD);
  const uint8_t family = ipset_data_family(data);
  ipset_data_reset(data);
  if (type == nullptr) {
    ipset_session_report_reset(session);
    return;
  }
  if (ipset_cache_add(set.c_str(), type, family) == 0) cached_.push_back(set);
}

void Session::ForgetSetTypes() {
  for (const std::string& name : cached_) ipset_cache_del(name.c_str());
  cached_.clear();
}

void Session::Run(std::string_view text) {
  if (text.empty()) return;
  // fmemopen reads the caller's buffer in place; it is not written ("r").
  FILE* f = fmemopen(const_cast<char*>(text.data()), text.size(), "r");
  if (f == nullptr) {
    AddReport({Report::Kind::kError, "fmemopen failed", std::nullopt});
    return;
  }
  int rc = ipset_parse_stream(handle_, f);
  std::fclose(f);
  if (rc < 0 && FirstFailure() == nullptr) {
    AddReport({Report::Kind::kError, "libipset failed without saying why", std::nullopt});
  }
}

void Session::RunChunks(const std::vector<std::string>& lines, size_t chunk,
                        const std::function<void(size_t)>& progress) {
  std::string text;
  size_t done = 0;
  while (done < lines.size()) {
    size_t end = std::min(lines.size(), done + chunk);
    text.clear();
    for (size_t i = done; i < end; ++i) text += lines[i];
    Run(text);
    done = end;
    if (FirstFailure() != nullptr) return;
    if (progress) progress(done);
  }
}

const Report* Session::FirstFailure() const {
  for (const Report& r : reports_) {
    if (r.kind != Report::Kind::kWarning) return &r;
  }
  return nullptr;
}

bool Session::HasWarning() const {
  for (const Report& r : reports_) {
    if (r.kind == Report::Kind::kWarning) return true;
  }
  return false;
}

Status ReportStatus(const Report& report, std::string_view what) {
  const std::string& m = report.message;
  std::string message = std::string(what) + ": " + m;
  auto has = [&](std::string_view s) { return m.find(s) != std::string::npos; };
  Status s;
  if (has("does not exist") || has("it's not added")) {
    s = Status::NotFound(message);
  } else if (has("already exists") || has("already added")) {
    s = Status::AlreadyExists(message);
  } else if (has("in use")) {
    s = Status::FailedPrecondition(message).WithReason("referenced");
  } else if (has("is full")) {
    s = Status::FailedPrecondition(message).WithReason("set_full");
  } else if (has("Operation not permitted")) {
    s = Status::PermissionDenied(message + " (needs root or CAP_NET_ADMIN)");
  } else if (has("Kernel error") || has("Cannot open session")) {
    s = Status::Unavailable(message);
  } else {
    s = Status::InvalidArgument(message);
  }
  return s;
}

}  // namespace iptkit::ipset
