// GET /v1/audit: the audit log, newest first, in pages bounded by `limit` entries and by ApiOptions::
// audit_page_bytes. The page is written entry by entry while the store streams them (Store::ScanAudit): no more
// than one page and one entry are ever held, however big the entries or the limit.
#include "src/rest/encode.h"
#include "src/rest/handlers.h"

namespace iptkit::rest {
namespace {

Status DecodeAuditQuery(const Query& query, store::AuditQuery* q) {
  auto str = [&](const char* name, std::string* out) -> Status {
    IPTKIT_ASSIGN_OR_RETURN(std::optional<std::string> v, QueryValue(query, name));
    if (v) *out = *v;
    return Status::Ok();
  };
  IPTKIT_RETURN_IF_ERROR(str("principal", &q->principal));
  IPTKIT_RETURN_IF_ERROR(str("action", &q->action));
  IPTKIT_RETURN_IF_ERROR(str("result", &q->result));
  IPTKIT_RETURN_IF_ERROR(str("request_id", &q->request_id));
  IPTKIT_ASSIGN_OR_RETURN(q->since_ms, QueryTime(query, "since"));
  IPTKIT_ASSIGN_OR_RETURN(q->until_ms, QueryTime(query, "until"));
  IPTKIT_ASSIGN_OR_RETURN(q->before_id, QueryInt(query, "before", 1, INT64_MAX));
  IPTKIT_ASSIGN_OR_RETURN(std::optional<int64_t> limit, QueryInt(query, "limit", 1, 1000));
  if (limit) q->limit = static_cast<int>(*limit);
  return Status::Ok();
}

}  // namespace

HttpResponse AuditHandler(const HandlerEnv& env, Call& call) {
  if (Status s =
          CheckQuery(env, call, {"principal", "action", "result", "request_id", "since", "until", "before", "limit"});
      !s.ok()) {
    return StatusResponse(call, s);
  }
  store::AuditQuery q;
  if (Status s = DecodeAuditQuery(call.req.query, &q); !s.ok()) return StatusResponse(call, s);
  const size_t page_bytes = env.options->audit_page_bytes;
  HttpResponse r;
  r.body = "{\"entries\":[";
  size_t taken = 0;
  Result<std::optional<int64_t>> next = env.store->ScanAudit(q, [&](const store::AuditEntry& e) {
    std::string one = json::Dump(AuditEntryJson(e));
    // The first entry always goes in (a page with nothing would never advance); later ones only while they fit.
    if (taken > 0 && r.body.size() + one.size() + 64 > page_bytes) return store::ScanStep::kStop;
    if (taken > 0) r.body += ',';
    r.body += one;
    ++taken;
    return store::ScanStep::kTake;
  });
  if (!next.ok()) return StatusResponse(call, next.status());
  r.body += "],\"next_before\":" + (*next ? std::to_string(**next) : std::string("null")) + "}";
  return r;
}

}  // namespace iptkit::rest
