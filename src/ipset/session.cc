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

}  // namespace
}  // namespace iptkit::ipset

// The registration of one builtin set type (each of its revisions), which ipset_load_types calls for every type.
// Only libipset's static archive has them (the shared library does not export them): weak, so null where absent.
extern "C" {
void ipset_types_init(void) __attribute__((weak));
void ipset_bitmap_ip_init(void) __attribute__((weak));
void ipset_bitmap_ipmac_init(void) __attribute__((weak));
void ipset_bitmap_port_init(void) __attribute__((weak));
void ipset_hash_ip_init(void) __attribute__((weak));
void ipset_hash_ipmac_init(void) __attribute__((weak));
void ipset_hash_ipmark_init(void) __attribute__((weak));
void ipset_hash_ipport_init(void) __attribute__((weak));
void ipset_hash_ipportip_init(void) __attribute__((weak));
void ipset_hash_ipportnet_init(void) __attribute__((weak));
void ipset_hash_mac_init(void) __attribute__((weak));
void ipset_hash_net_init(void) __attribute__((weak));
void ipset_hash_netiface_init(void) __attribute__((weak));
void ipset_hash_netnet_init(void) __attribute__((weak));
void ipset_hash_netport_init(void) __attribute__((weak));
void ipset_hash_netportnet_init(void) __attribute__((weak));
void ipset_list_set_init(void) __attribute__((weak));
}

namespace iptkit::ipset {
namespace {

// libipset's list of set types is process-wide and not thread-safe. ipset_load_types registers every type: it
// writes into each type's static structure (about 60 of them, 14 pages, each a copy-on-write page fault in a
// one-add process) and does nothing once any type is registered. A session for adds to existing sets registers
// only the types of the sets it names (LoadSetType); any other session registers all of them (LoadAllTypes), the
// rest through ipset_types_init when some are registered already (registering a type twice changes nothing).
// Settype modules (libipset's module directory, which Debian's ipset leaves empty) are loaded only when
// ipset_load_types registers the types, i.e. when no single set's type came first.
struct TypeRegistry {
  std::mutex mu;
  bool all = false;
  bool some = false;
};

TypeRegistry& Types() {
  static TypeRegistry registry;
  return registry;
}

void LoadAllTypes() {
  TypeRegistry& r = Types();
  std::lock_guard<std::mutex> lock(r.mu);
  if (r.all) return;
  if (r.some && ipset_types_init != nullptr) {
    ipset_types_init();
  } else {
    ipset_load_types();
  }
  r.all = true;
}

// Registers the revisions of the builtin type `name` (as the kernel names a set's type); false when this libipset
// cannot register one type alone (the shared library) or does not build the type in.
bool LoadSetType(std::string_view name) {
  static constexpr struct {
    std::string_view name;
    void (*init)(void);
  } kTypes[] = {
      {"bitmap:ip", ipset_bitmap_ip_init},
      {"bitmap:ip,mac", ipset_bitmap_ipmac_init},
      {"bitmap:port", ipset_bitmap_port_init},
      {"hash:ip", ipset_hash_ip_init},
      {"hash:ip,mac", ipset_hash_ipmac_init},
      {"hash:ip,mark", ipset_hash_ipmark_init},
      {"hash:ip,port", ipset_hash_ipport_init},
      {"hash:ip,port,ip", ipset_hash_ipportip_init},
      {"hash:ip,port,net", ipset_hash_ipportnet_init},
      {"hash:mac", ipset_hash_mac_init},
      {"hash:net", ipset_hash_net_init},
      {"hash:net,iface", ipset_hash_netiface_init},
      {"hash:net,net", ipset_hash_netnet_init},
      {"hash:net,port", ipset_hash_netport_init},
      {"hash:net,port,net", ipset_hash_netportnet_init},
      {"list:set", ipset_list_set_init},
  };
  TypeRegistry& r = Types();
  std::lock_guard<std::mutex> lock(r.mu);
  if (r.all) return true;
  if (ipset_types_init == nullptr) return false;
  for (const auto& t : kTypes) {
    if (t.name != name) continue;
    if (t.init == nullptr) return false;
    t.init();  // a revision registered before is left as it is (ipset_type_add: -EEXIST)
    r.some = true;
    return true;
  }
  return false;
}

}  // namespace

Result<std::unique_ptr<Session>> Session::Open(bool exist, SetTypes types) {
  if (types == SetTypes::kAll) LoadAllTypes();
  struct ::ipset* handle = ipset_init();
  if (handle == nullptr) {
    return Status::Unavailable("libipset: cannot open a session (netlink socket; is the ip_set module available?)");
  }
  std::unique_ptr<Session> session(new Session(handle, types));
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
  if (ipset_data_set(data, IPSET_SETNAME, set.c_str()) != 0) {
    LoadAllTypes();  // the lines run as without the cache (below)
    return;
  }
  // The type of an existing set, as for an add line: the kernel's header (type name, revision, family) matched
  // against the registered types (in a kNamedSets session: the set's own, registered now).
  const struct ipset_type* type = nullptr;
  if (types_ == SetTypes::kAll) {
    type = ipset_type_get(session, IPSET_CMD_ADD);
  } else if (ipset_cmd(session, IPSET_CMD_HEADER, 0) == 0) {
    const auto* type_name = static_cast<const char*>(ipset_data_get(data, IPSET_OPT_TYPENAME));
    if (type_name != nullptr && LoadSetType(type_name)) type = ipset_type_check(session);
  }
  const uint8_t family = ipset_data_family(data);
  ipset_data_reset(data);
  if (type == nullptr) {
    ipset_session_report_reset(session);
    // The lines run as without the cache, libipset reporting what is wrong (no such set) with every type known.
    LoadAllTypes();
    return;
  }
  if (ipset_cache_add(set.c_str(), type, family) == 0) cached_.push_back(set);
}

void Session::ForgetSetTypes() {
  for (const std::string& name : cached_) ipset_cache_del(name.c_str());
  cached_.clear();
}

void Session::SetExist(bool exist) {
  if (exist) {
    ipset_envopt_set(ipset_session(handle_), IPSET_ENV_EXIST);
  } else {
    ipset_envopt_unset(ipset_session(handle_), IPSET_ENV_EXIST);
  }
}

void Session::Run(std::string_view text) {
  if (text.empty()) return;
  // libipset counts every line fgets returns (ipset_parse_stream; callers' lines are shorter than its buffer).
  lines_run_ += static_cast<int>(std::count(text.begin(), text.end(), '\n'));
  if (text.back() != '\n') ++lines_run_;
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
