// POST /v1/transactions, GET /v1/transactions/ID and POST /v1/transactions/ID/confirm.
#include "src/rest/encode.h"
#include "src/rest/handlers.h"

namespace iptkit::rest {
namespace {

HttpResponse PostTransaction(const HandlerEnv& env, Call& call) {
  if (Status s = CheckQuery(env, call, {"dry_run", "confirm_within"}); !s.ok()) return StatusResponse(call, s);
  Result<TransactionBody> body = DecodeTransactionBody(call.req.body, call.owned_decode);
  if (!body.ok()) return StatusResponse(call, body.status());
  Result<bool> dry = QueryBool(call.req.query, "dry_run");
  if (!dry.ok()) return StatusResponse(call, dry.status());
  Result<std::optional<int64_t>> confirm = QuerySeconds(call.req.query, "confirm_within", kMaxSeconds);
  if (!confirm.ok()) return StatusResponse(call, confirm.status());
  if (*confirm && body->confirm_within_seconds && *confirm != *body->confirm_within_seconds) {
    return StatusResponse(
        call, Status::InvalidArgument("query parameter 'confirm_within' disagrees with the body's \"confirm_within\""));
  }
  if (*confirm) body->confirm_within_seconds = *confirm;
  service::ChangeRequest change;
  change.action = "transaction";
  change.ops = std::move(body->ops);
  change.adds = std::move(body->adds);
  change.deletes = std::move(body->deletes);
  change.dry_run = body->dry_run || *dry;
  change.confirm_within_seconds = body->confirm_within_seconds;
  if (change.dry_run && change.confirm_within_seconds) {
    return StatusResponse(
        call, Status::InvalidArgument("/confirm_within: a dry run cannot be confirmed").WithField("/confirm_within"));
  }
  return Submit(env, call, std::move(change), ErrorContext{"/ops", ""});
}

HttpResponse Confirm(const HandlerEnv& env, Call& call) {
  if (Status s = CheckQuery(env, call, {}); !s.ok()) return StatusResponse(call, s);
  if (!call.req.body.empty() && call.req.body != "{}") {
    return StatusResponse(call, Status::InvalidArgument("(body): give no body"));
  }
  const std::string id = call.Param("id");
  // Confirming makes the change permanent: only its own principal or an unrestricted one may.
  Result<store::ConfirmRecord> record = env.service->GetConfirm(id);
  if (record.ok()) {
    if (Status s = AuthorizeConfirm(call.principal, *record); !s.ok()) {
      env.auth_failures->Inc({"scope"});
      return StatusResponse(call, s);
    }
  }
  service::ChangeRequest change;
  change.action = "confirm";
  change.confirm = id;
  Result<service::ChangeResult> done = SubmitChange(env, call, std::move(change));
  if (!done.ok()) return StatusResponse(call, done.status());
  Result<store::ConfirmRecord> c = env.service->GetConfirm(id);
  if (!c.ok()) return StatusResponse(call, c.status());
  return JsonResponse(ConfirmJson(*c));
}

}  // namespace

HttpResponse TransactionsHandler(const HandlerEnv& env, Call& call) {
  if (!call.params.count("id")) return PostTransaction(env, call);
  if (call.method == "POST") return Confirm(env, call);
  if (Status s = CheckQuery(env, call, {}); !s.ok()) return StatusResponse(call, s);
  Result<store::ConfirmRecord> c = env.service->GetConfirm(call.Param("id"));
  if (!c.ok()) return StatusResponse(call, c.status());
  return JsonResponse(ConfirmJson(*c));
}

}  // namespace iptkit::rest
