// The rules of a chain: GET, POST, DELETE .../chains/CHAIN/rules and GET, PUT, DELETE .../rules/N.
#include "src/rest/encode.h"
#include "src/rest/handlers.h"

namespace iptkit::rest {
namespace {

// An error of a single-rule request without a pointer of its own is about the rule's spec.
ErrorContext SpecField() { return ErrorContext{"", "/spec"}; }

Location Where(const Call& call) { return Location{CallFamily(call), call.Param("table"), call.Param("chain")}; }

HttpResponse ListRules(const HandlerEnv& env, Call& call) {
  if (Status s = CheckQuery(env, call, {"allow_lossy"}); !s.ok()) return StatusResponse(call, s);
  Result<json::Json> c = ChainJson(env, call);
  if (!c.ok()) return StatusResponse(call, c.status());
  return JsonResponse({{"family", call.Param("family")},
                       {"table", call.Param("table")},
                       {"chain", call.Param("chain")},
                       {"rules", (*c)["rules"]}});
}

// POST adds (append, insert at ?position=N, or an owned rule first/last among its owner's); DELETE with a body
// deletes by spec.
HttpResponse AddOrDeleteRule(const HandlerEnv& env, Call& call) {
  const bool post = call.method == "POST";
  const std::vector<std::string> params =
      post ? std::vector<std::string>{"position", "dry_run"} : std::vector<std::string>{"dry_run"};
  if (Status s = CheckQuery(env, call, params); !s.ok()) return StatusResponse(call, s);
  const Location where = Where(call);
  Result<RuleBody> body = DecodeRuleBody(call.req.body, where, call.owned_decode);
  if (!body.ok()) return StatusResponse(call, body.status(), SpecField());
  Result<bool> dry = QueryBool(call.req.query, "dry_run");
  if (!dry.ok()) return StatusResponse(call, dry.status());
  service::ChangeRequest change;
  change.dry_run = *dry;
  Rule rule = body->rule;
  if (body->id) rule.SetOwnerTag({*body->owner, *body->id});
  if (!post) {
    if (body->ttl_seconds) {
      return StatusResponse(call, Status::InvalidArgument("/ttl: a delete has no ttl").WithField("/ttl"));
    }
    change.action = "delete";
    if (body->owner) {
      change.deletes.push_back({*body->owner, where.family, where.table, where.chain, rule});
    } else {
      change.ops.Delete(where.family, where.table, where.chain, rule);
    }
    return Submit(env, call, std::move(change), SpecField());
  }
  Result<std::optional<std::string>> position = QueryValue(call.req.query, "position");
  if (!position.ok()) return StatusResponse(call, position.status());
  if (body->owner) {
    store::Position where_owned = store::Position::kLast;
    if (*position && (**position == "1" || **position == "first")) {
      where_owned = store::Position::kFirst;
    } else if (*position && **position != "last") {
      return StatusResponse(
          call, Status::InvalidArgument("query parameter 'position': an owned rule goes first (position=1 or first) "
                                        "or last (last, or no position) among its owner's rules, not at '" +
                                        **position + "'"));
    }
    change.action = "append";
    change.adds.push_back({*body->owner, where.family, where.table, where.chain, rule, where_owned, body->ttl_seconds});
  } else if (*position) {
    Result<std::optional<int64_t>> n = QueryInt(call.req.query, "position", 1, 1 << 30);
    if (!n.ok()) return StatusResponse(call, n.status());
    change.action = "insert";
    change.ops.Insert(where.family, where.table, where.chain, static_cast<int>(**n), rule);
  } else {
    change.action = "append";
    change.ops.Append(where.family, where.table, where.chain, rule);
  }
  return Submit(env, call, std::move(change), SpecField());
}

// GET, PUT (replace) or DELETE the rule at position N.
HttpResponse RuleAt(const HandlerEnv& env, Call& call) {
  Result<std::optional<int64_t>> index_param = QueryInt({{"index", call.Param("index")}}, "index", 1, 1 << 30);
  if (!index_param.ok()) {
    return ErrorResponse(call,
                         MakeError(404, "not_found", "rule index '" + call.Param("index") + "' is not a number >= 1"));
  }
  const int index = static_cast<int>(**index_param);
  if (call.method == "GET") {
    if (Status s = CheckQuery(env, call, {"allow_lossy"}); !s.ok()) return StatusResponse(call, s);
    Result<json::Json> c = ChainJson(env, call);
    if (!c.ok()) return StatusResponse(call, c.status());
    const json::Json& rules = (*c)["rules"];
    if (static_cast<size_t>(index) > rules.size()) {
      return StatusResponse(
          call, Status::NotFound("no rule at index " + std::to_string(index) + ": chain " + call.Param("chain") +
                                 " has " + std::to_string(rules.size()) + " rules"));
    }
    json::Json r = rules[index - 1];
    r["family"] = call.Param("family");
    r["table"] = call.Param("table");
    r["chain"] = call.Param("chain");
    return JsonResponse(r);
  }
  if (Status s = CheckQuery(env, call, {"dry_run"}); !s.ok()) return StatusResponse(call, s);
  Result<bool> dry = QueryBool(call.req.query, "dry_run");
  if (!dry.ok()) return StatusResponse(call, dry.status());
  const Location where = Where(call);
  service::ChangeRequest change;
  change.dry_run = *dry;
  if (call.method == "PUT") {
    Result<ReplaceBody> body = DecodeReplaceBody(call.req.body, where, call.decode);
    if (!body.ok()) return StatusResponse(call, body.status(), SpecField());
    change.action = "replace";
    change.ops.Replace(where.family, where.table, where.chain, index, body->rule, body->expect);
  } else {
    Result<std::optional<Rule>> expect = DecodeExpectBody(call.req.body, where, call.decode);
    if (!expect.ok()) return StatusResponse(call, expect.status(), ErrorContext{"", "/expect"});
    change.action = "delete";
    change.ops.DeleteAt(where.family, where.table, where.chain, index, *expect);
  }
  return Submit(env, call, std::move(change));
}

}  // namespace

HttpResponse RulesHandler(const HandlerEnv& env, Call& call) {
  if (call.params.count("index")) return RuleAt(env, call);
  if (call.method == "GET") return ListRules(env, call);
  return AddOrDeleteRule(env, call);
}

}  // namespace iptkit::rest
