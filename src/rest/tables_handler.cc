// GET /v1/FAMILY and GET /v1/FAMILY/tables/TABLE, and the listings the chain and rule handlers share.
#include "src/rest/encode.h"
#include "src/rest/handlers.h"

namespace iptkit::rest {

Family CallFamily(const Call& call) { return call.Param("family") == "ipv6" ? Family::kIPv6 : Family::kIPv4; }

Result<json::Json> FamilyJson(const HandlerEnv& env, const Call& call, const std::optional<std::string>& table) {
  const Family family = CallFamily(call);
  // A table its text cannot show faithfully is refused (409 naming the rule and why) unless ?allow_lossy=true.
  IPTKIT_ASSIGN_OR_RETURN(bool allow_lossy, QueryBool(call.req.query, "allow_lossy"));
  IPTKIT_ASSIGN_OR_RETURN(Ruleset rs, env.service->List(family, table, {.allow_lossy = allow_lossy}));
  rs.family = family;
  return AnnotatedRuleset(rs, env.service->ManagedRules());
}

Result<json::Json> TableJson(const HandlerEnv& env, const Call& call) {
  const std::string table = call.Param("table");
  IPTKIT_ASSIGN_OR_RETURN(json::Json all, FamilyJson(env, call, table));
  for (json::Json& t : all["tables"]) {
    if (t["name"] == table) {
      t["family"] = call.Param("family");
      return t;
    }
  }
  return Status::NotFound("table " + table + " does not exist in " + call.Param("family") +
                          " (nothing has used it yet)");
}

Result<json::Json> ChainJson(const HandlerEnv& env, const Call& call) {
  const std::string chain = call.Param("chain");
  IPTKIT_ASSIGN_OR_RETURN(json::Json t, TableJson(env, call));
  for (json::Json& c : t["chains"]) {
    if (c["name"] == chain) {
      c["family"] = call.Param("family");
      c["table"] = call.Param("table");
      return c;
    }
  }
  return Status::NotFound("chain '" + chain + "' does not exist in " + call.Param("family") + " " +
                          call.Param("table"));
}

HttpResponse TablesHandler(const HandlerEnv& env, Call& call) {
  if (Status s = CheckQuery(env, call, {"allow_lossy"}); !s.ok()) return StatusResponse(call, s);
  Result<json::Json> j = call.params.count("table") ? TableJson(env, call) : FamilyJson(env, call, std::nullopt);
  if (!j.ok()) return StatusResponse(call, j.status());
  return JsonResponse(*j);
}

}  // namespace iptkit::rest
