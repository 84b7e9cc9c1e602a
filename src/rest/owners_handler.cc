// GET /v1/owners and GET, PUT, DELETE /v1/owners/OWNER.
#include "src/rest/encode.h"
#include "src/rest/handlers.h"

namespace iptkit::rest {
namespace {

HttpResponse ChangeOwner(const HandlerEnv& env, Call& call, const std::string& owner) {
  if (Status s = CheckQuery(env, call, {"dry_run", "confirm_within"}); !s.ok()) return StatusResponse(call, s);
  Result<bool> dry = QueryBool(call.req.query, "dry_run");
  if (!dry.ok()) return StatusResponse(call, dry.status());
  Result<std::optional<int64_t>> confirm = QuerySeconds(call.req.query, "confirm_within", kMaxSeconds);
  if (!confirm.ok()) return StatusResponse(call, confirm.status());
  service::ChangeRequest change;
  change.dry_run = *dry;
  change.confirm_within_seconds = *confirm;
  if (call.method == "PUT") {
    Result<DesiredState> doc = DecodeOwnerBody(call.req.body, owner, call.decode);
    if (!doc.ok()) return StatusResponse(call, doc.status());
    change.action = "put_owner";
    change.put_owner = *std::move(doc);
  } else {
    if (Status s = NoBody(call); !s.ok()) return StatusResponse(call, s);
    change.action = "delete_owner";
    change.delete_owner = owner;
  }
  if (change.dry_run && change.confirm_within_seconds) {
    return StatusResponse(call,
                          Status::InvalidArgument("query parameter 'confirm_within': a dry run cannot be confirmed"));
  }
  return Submit(env, call, std::move(change));
}

}  // namespace

HttpResponse OwnersHandler(const HandlerEnv& env, Call& call) {
  if (!call.params.count("owner")) {
    if (Status s = CheckQuery(env, call, {}); !s.ok()) return StatusResponse(call, s);
    json::Json owners = json::Json::array();
    for (const service::OwnerView& o : env.service->Owners()) owners.push_back(OwnerJson(o, false));
    return JsonResponse({{"owners", owners}});
  }
  const std::string owner = call.Param("owner");
  if (Status s = ValidateOwner(owner); !s.ok()) return ErrorResponse(call, MakeError(404, "not_found", s.message()));
  if (call.method != "GET") return ChangeOwner(env, call, owner);
  if (Status s = CheckQuery(env, call, {}); !s.ok()) return StatusResponse(call, s);
  Result<service::OwnerView> o = env.service->GetOwner(owner);
  if (!o.ok()) return StatusResponse(call, o.status());
  return JsonResponse(OwnerJson(*o, true));
}

}  // namespace iptkit::rest
