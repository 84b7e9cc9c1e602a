#include "src/rest/handlers.h"

#include <utility>

#include "src/rest/encode.h"

namespace iptkit::rest {

std::string Call::Param(const std::string& name) const {
  auto it = params.find(name);
  return it == params.end() ? "" : it->second;
}

HttpResponse JsonResponse(const json::Json& body, int status) {
  HttpResponse r;
  r.status = status;
  r.body = json::Dump(body);
  return r;
}

HttpResponse ErrorResponse(std::string_view request_id, const HttpError& e) {
  HttpResponse r;
  r.status = e.http_status;
  r.body = ErrorBody(e, request_id);
  if (e.retry_after_seconds) r.headers.emplace_back("Retry-After", std::to_string(*e.retry_after_seconds));
  return r;
}

HttpResponse ErrorResponse(const Call& call, const HttpError& e) { return ErrorResponse(call.request_id, e); }

HttpResponse StatusResponse(const Call& call, const Status& s, const ErrorContext& context) {
  return ErrorResponse(call, ErrorFromStatus(s, context));
}

Status CheckQuery(const HandlerEnv& env, const Call& call, std::vector<std::string> allowed) {
  allowed.push_back("netns");
  IPTKIT_RETURN_IF_ERROR(rest::CheckQuery(call.req.query, allowed));
  IPTKIT_ASSIGN_OR_RETURN(std::optional<std::string> netns, QueryValue(call.req.query, "netns"));
  const std::string& served = env.options->netns;
  if (netns && *netns != served) {
    return Status::InvalidArgument("query parameter 'netns': this daemon serves network namespace '" +
                                   (served.empty() ? std::string("(its own)") : served) + "', not '" + *netns + "'");
  }
  return Status::Ok();
}

Status NoBody(const Call& call) {
  if (!call.req.body.empty()) return Status::InvalidArgument("(body): this request takes no body");
  return Status::Ok();
}

Status PrepareChange(const HandlerEnv& env, const Call& call, service::ChangeRequest& change) {
  change.principal = call.principal.name;
  change.request_id = call.request_id;
  change.request_json = call.req.body;
  Status scoped = AuthorizeChange(call.principal, TouchesOf(change));
  if (!scoped.ok()) {
    env.auth_failures->Inc({"scope"});
    return scoped;
  }
  change.ttl_bounded = TtlBounded(call.principal);
  // What the plan actually touches (an owner's dropped chains, a cascade's rules elsewhere) is checked again by the
  // writer.
  const store::Scopes& scopes = call.principal.scopes;
  if (!scopes.tables.empty() || !scopes.chains.empty()) {
    Principal who = call.principal;
    service::Metrics::Counter* failures = env.auth_failures;
    change.authorize = [who, failures](const std::vector<service::ChangedChain>& chains) {
      Status s = AuthorizeChains(who, chains);
      if (!s.ok()) failures->Inc({"scope"});
      return s;
    };
  }
  // Never answer 200 for a change that cannot be stored.
  if (!change.dry_run) IPTKIT_RETURN_IF_ERROR(env.store->CheckFiles());
  return Status::Ok();
}

Result<service::ChangeResult> SubmitChange(const HandlerEnv& env, const Call& call, service::ChangeRequest change) {
  IPTKIT_RETURN_IF_ERROR(PrepareChange(env, call, change));
  return env.service->Submit(std::move(change));
}

HttpResponse Submit(const HandlerEnv& env, const Call& call, service::ChangeRequest change,
                    const ErrorContext& context) {
  if (call.respond == nullptr) {
    Result<service::ChangeResult> done = SubmitChange(env, call, std::move(change));
    if (!done.ok()) return StatusResponse(call, done.status(), context);
    return JsonResponse(ResultJson(*done));
  }
  if (Status ready = PrepareChange(env, call, change); !ready.ok()) return StatusResponse(call, ready, context);
  // The answer is encoded where it is sent (the HTTP layer's thread), not on the writer's side, which answers a
  // whole group commit at once.
  env.service->SubmitAsync(std::move(change), [respond = *call.respond, request_id = call.request_id,
                                               context](Result<service::ChangeResult> done) {
    respond([done = std::move(done), request_id, context]() -> HttpResponse {
      if (!done.ok()) return ErrorResponse(request_id, ErrorFromStatus(done.status(), context));
      return JsonResponse(ResultJson(*done));
    });
  });
  HttpResponse deferred;
  deferred.deferred = true;
  return deferred;
}

}  // namespace iptkit::rest
