// GET, PUT, DELETE /v1/FAMILY/tables/TABLE/chains/CHAIN.
#include "src/rest/encode.h"
#include "src/rest/handlers.h"

namespace iptkit::rest {
namespace {

// PUT creates a user chain (idempotent: an existing one is no change) or sets a builtin chain's policy.
HttpResponse PutChain(const HandlerEnv& env, Call& call) {
  if (Status s = CheckQuery(env, call, {"dry_run"}); !s.ok()) return StatusResponse(call, s);
  Result<std::optional<std::string>> policy = DecodeChainBody(call.req.body, call.decode);
  if (!policy.ok()) return StatusResponse(call, policy.status());
  Result<bool> dry = QueryBool(call.req.query, "dry_run");
  if (!dry.ok()) return StatusResponse(call, dry.status());
  const std::string table = call.Param("table");
  const std::string chain = call.Param("chain");
  service::ChangeRequest change;
  change.dry_run = *dry;
  if (IsBuiltinChain(table, chain)) {
    if (!*policy) {
      return StatusResponse(call, Status::InvalidArgument("/policy: '" + chain +
                                                          "' is a builtin chain: PUT sets its policy and needs "
                                                          "{\"policy\": ...}")
                                      .WithField("/policy"));
    }
    change.action = "policy";
    change.ops.SetPolicy(CallFamily(call), table, chain, **policy);
  } else {
    if (*policy) {
      return StatusResponse(
          call, Status::InvalidArgument("/policy: user chain '" + chain + "' has no policy").WithField("/policy"));
    }
    change.action = "create_chain";
    change.ops.CreateChain(CallFamily(call), table, chain);
  }
  Result<service::ChangeResult> done = SubmitChange(env, call, std::move(change));
  if (!done.ok() && done.status().code() == StatusCode::kAlreadyExists && !IsBuiltinChain(table, chain)) {
    // PUT is idempotent: the chain is there.
    service::ChangeResult unchanged;
    unchanged.dry_run = *dry;
    json::Json j = ResultJson(unchanged);
    j.erase("transaction");
    return JsonResponse(j);
  }
  if (!done.ok()) return StatusResponse(call, done.status());
  return JsonResponse(ResultJson(*done));
}

HttpResponse DeleteChain(const HandlerEnv& env, Call& call) {
  if (Status s = CheckQuery(env, call, {"cascade", "dry_run"}); !s.ok()) return StatusResponse(call, s);
  if (Status s = NoBody(call); !s.ok()) return StatusResponse(call, s);
  Result<bool> cascade = QueryBool(call.req.query, "cascade");
  if (!cascade.ok()) return StatusResponse(call, cascade.status());
  Result<bool> dry = QueryBool(call.req.query, "dry_run");
  if (!dry.ok()) return StatusResponse(call, dry.status());
  service::ChangeRequest change;
  change.action = "delete_chain";
  change.dry_run = *dry;
  change.ops.DeleteChain(CallFamily(call), call.Param("table"), call.Param("chain"), *cascade);
  return Submit(env, call, std::move(change));
}

}  // namespace

HttpResponse ChainsHandler(const HandlerEnv& env, Call& call) {
  if (call.method == "PUT") return PutChain(env, call);
  if (call.method == "DELETE") return DeleteChain(env, call);
  if (Status s = CheckQuery(env, call, {"allow_lossy"}); !s.ok()) return StatusResponse(call, s);
  Result<json::Json> j = ChainJson(env, call);
  if (!j.ok()) return StatusResponse(call, j.status());
  return JsonResponse(*j);
}

}  // namespace iptkit::rest
