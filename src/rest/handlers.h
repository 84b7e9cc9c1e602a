// The REST API's handlers, one per resource, and what they share. Api (api.h) routes a request, authenticates it,
// rate-limits it, checks the read/write scope and the body's size and type, and then calls the route's handler with
// a Call; a handler checks its query parameters, decodes (decode.h), calls the Service or the Store, and encodes
// (encode.h). Business logic lives in the service; scope checks in auth.h; error mapping in errors.h.
// Thread-safety: handlers are called from any number of threads at once; a Call belongs to one request.
//
//   HttpResponse GetVersion(const HandlerEnv& env, Call& call) {
//     if (Status s = CheckQuery(env, call, {}); !s.ok()) return StatusResponse(call, s);
//     return JsonResponse({{"version", env.options->version}});
//   }
#ifndef IPTKIT_SRC_REST_HANDLERS_H_
#define IPTKIT_SRC_REST_HANDLERS_H_

#include <map>
#include <string>
#include <vector>

#include "src/json/json_codec.h"
#include "src/rest/api.h"
#include "src/rest/auth.h"
#include "src/rest/decode.h"
#include "src/rest/errors.h"
#include "src/service/service.h"

namespace iptkit::rest {

// One routed, authenticated request.
struct Call {
  const HttpRequest& req;
  std::string method;                         // HEAD as GET
  std::string request_id;                     // X-Request-Id
  std::map<std::string, std::string> params;  // path parameters by name ("family", "table", ...)
  Principal principal;
  DecodeOptions decode;        // the daemon's
  DecodeOptions owned_decode;  // with the principal's first owner scope as the default owner
  // Set when the caller takes a deferred answer (Api::HandleAsync): Submit then queues the change and returns a
  // deferred response; the answer goes through this once the writer answered.
  const Api::Respond* respond = nullptr;

  // A path parameter ("" when the route has none of that name).
  std::string Param(const std::string& name) const;
};

using Handler = HttpResponse (*)(const HandlerEnv& env, Call& call);

// ---- Shared helpers (handlers.cc) ----
HttpResponse JsonResponse(const json::Json& body, int status = 200);
HttpResponse ErrorResponse(const Call& call, const HttpError& error);
HttpResponse ErrorResponse(std::string_view request_id, const HttpError& error);
HttpResponse StatusResponse(const Call& call, const Status& status, const ErrorContext& context = {});
// The query parameters `allowed` plus "netns" (which must name the daemon's namespace); InvalidArgument otherwise.
Status CheckQuery(const HandlerEnv& env, const Call& call, std::vector<std::string> allowed);
// InvalidArgument when the request has a body.
Status NoBody(const Call& call);
// Submits a change on behalf of the caller: fills principal, request id and body for the audit log; checks the
// scopes (AuthorizeChange, and AuthorizeChains after planning when the token is limited to tables or chains);
// refuses with Unavailable, before anything is planned, a change the store could not keep (Store::CheckFiles);
// then Service::Submit.
Result<service::ChangeResult> SubmitChange(const HandlerEnv& env, const Call& call, service::ChangeRequest change);
// What SubmitChange does before Service::Submit (the change is ready to submit when it returns Ok).
Status PrepareChange(const HandlerEnv& env, const Call& call, service::ChangeRequest& change);
// SubmitChange answered: the change result, or the error with `context`. With call.respond set, the change is
// queued (Service::SubmitAsync) and a deferred response returned; the answer goes through call.respond.
HttpResponse Submit(const HandlerEnv& env, const Call& call, service::ChangeRequest change,
                    const ErrorContext& context = {});

// ---- Handlers, one per resource (each in <resource>_handler.cc) ----
HttpResponse HealthHandler(const HandlerEnv& env, Call& call);        // GET /healthz
HttpResponse MetricsHandler(const HandlerEnv& env, Call& call);       // GET /metrics
HttpResponse VersionHandler(const HandlerEnv& env, Call& call);       // GET /v1/version
HttpResponse InfoHandler(const HandlerEnv& env, Call& call);          // GET /v1/info
HttpResponse TablesHandler(const HandlerEnv& env, Call& call);        // GET /v1/FAMILY, GET .../tables/TABLE
HttpResponse ChainsHandler(const HandlerEnv& env, Call& call);        // GET, PUT, DELETE .../chains/CHAIN
HttpResponse RulesHandler(const HandlerEnv& env, Call& call);         // .../rules and .../rules/N
HttpResponse TransactionsHandler(const HandlerEnv& env, Call& call);  // /v1/transactions[/ID[/confirm]]
HttpResponse OwnersHandler(const HandlerEnv& env, Call& call);        // /v1/owners[/OWNER]
HttpResponse AuditHandler(const HandlerEnv& env, Call& call);         // GET /v1/audit
HttpResponse EventsHandler(const HandlerEnv& env, Call& call);        // GET /v1/events
HttpResponse RatesHandler(const HandlerEnv& env, Call& call);         // GET .../chains/CHAIN/rates
HttpResponse SetsHandler(const HandlerEnv& env, Call& call);          // /v1/sets[/SET[/...]]

// ---- Reads shared by the ruleset handlers (tables_handler.cc) ----
// The FAMILY, TABLE and CHAIN of the route.
Family CallFamily(const Call& call);
// The family's ruleset (or one table of it) as JSON, managed rules annotated. NotFound for a table or chain that
// does not exist.
Result<json::Json> FamilyJson(const HandlerEnv& env, const Call& call, const std::optional<std::string>& table);
Result<json::Json> TableJson(const HandlerEnv& env, const Call& call);
Result<json::Json> ChainJson(const HandlerEnv& env, const Call& call);

}  // namespace iptkit::rest

#endif  // IPTKIT_SRC_REST_HANDLERS_H_
