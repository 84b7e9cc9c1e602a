#include "src/rest/api.h"

#include <spdlog/spdlog.h>
#include <sys/random.h>

#include <algorithm>
#include <cstdio>
#include <utility>

#include "iptkit/dialect.h"
#include "iptkit/json.h"
#include "src/json/json_codec.h"

namespace iptkit::rest {
namespace {

using json::Json;
using Clock = std::chrono::steady_clock;

// ---- Routing ----

enum class RouteId {
  kHealthz,
  kMetrics,
  kVersion,
  kInfo,
  kFamily,
  kTable,
  kChain,
  kRules,
  kRule,
  kTransactions,
  kTransaction,
  kConfirm,
  kOwners,
  kOwner,
  kAudit,
  kEvents,
};

struct Route {
  RouteId id;
  std::string_view pattern;  // segments; {name} is a parameter
  std::vector<std::string_view> methods;
};

const std::vector<Route>& Routes() {
  static const std::vector<Route> routes = {
      {RouteId::kHealthz, "/healthz", {"GET"}},
      {RouteId::kMetrics, "/metrics", {"GET"}},
      {RouteId::kVersion, "/v1/version", {"GET"}},
      {RouteId::kInfo, "/v1/info", {"GET"}},
      {RouteId::kTransactions, "/v1/transactions", {"POST"}},
      {RouteId::kTransaction, "/v1/transactions/{id}", {"GET"}},
      {RouteId::kConfirm, "/v1/transactions/{id}/confirm", {"POST"}},
      {RouteId::kOwners, "/v1/owners", {"GET"}},
      {RouteId::kOwner, "/v1/owners/{owner}", {"GET", "PUT", "DELETE"}},
      {RouteId::kAudit, "/v1/audit", {"GET"}},
      {RouteId::kEvents, "/v1/events", {"GET"}},
      {RouteId::kFamily, "/v1/{family}", {"GET"}},
      {RouteId::kTable, "/v1/{family}/tables/{table}", {"GET"}},
      {RouteId::kChain, "/v1/{family}/tables/{table}/chains/{chain}", {"GET", "PUT", "DELETE"}},
      {RouteId::kRules, "/v1/{family}/tables/{table}/chains/{chain}/rules", {"GET", "POST", "DELETE"}},
      {RouteId::kRule, "/v1/{family}/tables/{table}/chains/{chain}/rules/{index}", {"GET", "PUT", "DELETE"}},
  };
  return routes;
}

std::vector<std::string_view> Split(std::string_view path) {
  std::vector<std::string_view> out;
  if (path.empty() || path[0] != '/') return out;
  size_t start = 1;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    out.push_back(path.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

// Matches `path` against `route`; fills params. {family} only matches ipv4/ipv6.
bool Match(const Route& route, std::string_view path, std::map<std::string, std::string>* params) {
  std::vector<std::string_view> want = Split(route.pattern);
  std::vector<std::string_view> got = Split(path);
  if (want.size() != got.size()) return false;
  std::map<std::string, std::string> found;
  for (size_t i = 0; i < want.size(); ++i) {
    if (want[i].size() > 2 && want[i].front() == '{' && want[i].back() == '}') {
      if (got[i].empty()) return false;
      std::string name(want[i].substr(1, want[i].size() - 2));
      if (name == "family" && got[i] != "ipv4" && got[i] != "ipv6") return false;
      found[name] = std::string(got[i]);
    } else if (want[i] != got[i]) {
      return false;
    }
  }
  if (params != nullptr) *params = std::move(found);
  return true;
}

// ---- Small helpers ----

std::string RandomHex(size_t bytes) {
  std::string raw(bytes, '\0');
  size_t got = 0;
  while (got < bytes) {
    ssize_t n = getrandom(raw.data() + got, bytes - got, 0);
    if (n > 0) got += static_cast<size_t>(n);
  }
  std::string out;
  char buf[3];
  for (unsigned char c : raw) {
    std::snprintf(buf, sizeof(buf), "%02x", c);
    out += buf;
  }
  return out;
}

bool ValidRequestId(std::string_view id) {
  if (id.empty() || id.size() > 64) return false;
  for (char c : id) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' || c == ':')) return false;
  }
  return true;
}

std::string Header(const HttpRequest& req, const std::string& name) {
  auto it = req.headers.find(name);
  return it == req.headers.end() ? "" : it->second;
}

std::string Dump(const Json& j) { return json::Dump(j); }

HttpResponse JsonResponse(const Json& j, int status = 200) {
  HttpResponse r;
  r.status = status;
  r.body = Dump(j);
  return r;
}

Json ManagedJson(const service::ManagedRuleView& v) {
  const store::ManagedRule& r = v.rule;
  Json j;
  j["owner"] = r.owner;
  j["family"] = std::string(FamilyName(r.family));
  j["table"] = r.table;
  j["chain"] = r.chain;
  j["spec"] = r.spec;
  j["id"] = r.rule_id;
  j["position"] = std::string(store::PositionName(r.position));
  if (v.ttl_remaining_seconds) {
    j["ttl_remaining"] = *v.ttl_remaining_seconds;
    j["expires_at"] = FormatTime(*r.deadline_ms);
  } else {
    j["ttl_remaining"] = nullptr;
  }
  j["created_at"] = FormatTime(r.created_ms);
  j["updated_at"] = FormatTime(r.updated_ms);
  return j;
}

Json TablesJson(const std::vector<TableCommit>& tables) {
  Json out = Json::array();
  for (const TableCommit& t : tables) {
    out.push_back(
        {{"family", std::string(FamilyName(t.family))}, {"table", t.table}, {"restore_text", t.restore_text}});
  }
  return out;
}

Json StepsJson(const std::vector<PlanStep>& steps) {
  Json out = Json::array();
  for (const PlanStep& s : steps) {
    out.push_back({{"family", std::string(FamilyName(s.family))}, {"table", s.table}, {"description", s.description}});
  }
  return out;
}

Json ResultJson(const service::ChangeResult& r) {
  Json j;
  j["transaction"] = r.id;
  j["dry_run"] = r.dry_run;
  j["changed"] = r.changed;
  j["batch_requests"] = r.batch_requests;
  j["tables"] = TablesJson(r.tables);
  j["steps"] = StepsJson(r.steps);
  j["warnings"] = r.warnings;
  Json managed = Json::array();
  for (const auto& m : r.managed) managed.push_back(ManagedJson(m));
  j["managed"] = managed;
  if (r.confirm_deadline_ms) {
    j["confirm_deadline"] = FormatTime(*r.confirm_deadline_ms);
    j["confirm_url"] = "/v1/transactions/" + r.id + "/confirm";
  }
  return j;
}

Json ConfirmJson(const store::ConfirmRecord& c) {
  Json j;
  j["transaction"] = c.id;
  j["state"] = std::string(store::ConfirmStateName(c.state));
  j["deadline"] = FormatTime(c.deadline_ms);
  j["principal"] = c.principal;
  j["request_id"] = c.request_id;
  j["created_at"] = FormatTime(c.created_ms);
  j["resolved_at"] = c.resolved_ms ? Json(FormatTime(*c.resolved_ms)) : Json(nullptr);
  j["message"] = c.message;
  return j;
}

// "100", "2.5".
std::string FormatRate(double rate) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", rate);
  return buf;
}

ErrorContext SpecField() { return ErrorContext{"", "/spec"}; }

Json OwnerJson(const service::OwnerView& o, bool with_drift) {
  Json j;
  j["owner"] = o.owner;
  j["document"] = o.document ? json::DesiredStateToJson(*o.document, json::DialectSpec()) : Json(nullptr);
  Json managed = Json::array();
  for (const auto& m : o.managed) managed.push_back(ManagedJson(m));
  j["managed"] = managed;
  if (with_drift) {
    j["in_sync"] = o.drift.empty();
    j["drift"] = StepsJson(o.drift);
  }
  return j;
}

}  // namespace

// ---- Api ----

struct Api::Context {
  const HttpRequest& req;
  std::string method;  // HEAD as GET
  std::string request_id;
  const Route* route = nullptr;
  std::map<std::string, std::string> params;
  Principal principal;
};

Api::Api(service::Service* service, store::Store* store, service::EventBus* events, service::Metrics* metrics,
         ApiOptions options)
    : service_(service), store_(store), events_(events), metrics_(metrics), options_(std::move(options)) {
  requests_ = &metrics_->AddCounter("iptkitd_http_requests_total", "HTTP requests served, by method, route and status.",
                                    {"method", "route", "code"});
  latency_ = &metrics_->AddHistogram("iptkitd_http_request_duration_seconds",
                                     "Time from a request's arrival to its answer, by route.", {"route"},
                                     {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10});
  auth_failures_ = &metrics_->AddCounter("iptkitd_http_auth_failures_total",
                                         "Requests refused for authentication (401) or scope (403).", {"reason"});
}

std::string Api::RequestId(std::string_view given) {
  return ValidRequestId(given) ? std::string(given) : "r-" + RandomHex(8);
}

std::string Api::RouteName(std::string_view path) {
  for (const Route& r : Routes()) {
    if (Match(r, path, nullptr)) return std::string(r.pattern);
  }
  return "";
}

bool Api::RateLimited(const std::string& principal, int* retry_after) {
  if (options_.rate_limit <= 0) return false;
  std::lock_guard<std::mutex> lock(rate_mu_);
  const auto now = Clock::now();
  auto [it, fresh] = buckets_.try_emplace(principal);
  Bucket& b = it->second;
  if (fresh) {
    b.tokens = options_.rate_burst;
    b.last = now;
  }
  const double elapsed = std::chrono::duration<double>(now - b.last).count();
  b.tokens = std::min(options_.rate_burst, b.tokens + elapsed * options_.rate_limit);
  b.last = now;
  if (b.tokens >= 1) {
    b.tokens -= 1;
    return false;
  }
  *retry_after = std::max(1, static_cast<int>((1 - b.tokens) / options_.rate_limit + 0.999));
  return true;
}

HttpResponse Api::Handle(const HttpRequest& req) {
  const auto t0 = Clock::now();
  Context ctx{req, req.method == "HEAD" ? std::string("GET") : req.method, "", nullptr, {}, {}};
  ctx.request_id = RequestId(Header(req, "x-request-id"));
  HttpResponse resp = Dispatch(ctx);
  if (resp.status >= 400 && resp.body.empty()) {
    resp.body = ErrorBody(MakeError(resp.status, "error", "request failed"), ctx.request_id);
  }
  resp.headers.emplace_back("X-Request-Id", ctx.request_id);
  resp.headers.emplace_back("Cache-Control", "no-store");
  const std::string route = ctx.route != nullptr ? std::string(ctx.route->pattern) : "unknown";
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  requests_->Inc({ctx.method, route, std::to_string(resp.status)});
  if (!resp.stream) latency_->Observe({route}, seconds);
  // Never the query or headers: they could hold secrets pasted by mistake.
  spdlog::info("{} {} {} {} {} {:.1f}ms {}", req.remote.empty() ? "-" : req.remote,
               ctx.principal.name.empty() ? "-" : ctx.principal.name, req.method, route, resp.status, seconds * 1000,
               ctx.request_id);
  return resp;
}

HttpResponse Api::Dispatch(Context& ctx) {
  const HttpRequest& req = ctx.req;
  auto error = [&](const HttpError& e) {
    HttpResponse r;
    r.status = e.http_status;
    r.body = ErrorBody(e, ctx.request_id);
    if (e.retry_after_seconds) r.headers.emplace_back("Retry-After", std::to_string(*e.retry_after_seconds));
    return r;
  };
  auto status_error = [&](const Status& s, const ErrorContext& ec = {}) { return error(ErrorFromStatus(s, ec)); };

  for (const Route& r : Routes()) {
    if (Match(r, req.path, &ctx.params)) {
      ctx.route = &r;
      break;
    }
  }
  if (ctx.route == nullptr) return error(MakeError(404, "not_found", "no such route: " + req.path));
  const auto& methods = ctx.route->methods;
  std::string allow;
  for (std::string_view m : methods) allow += (allow.empty() ? "" : ", ") + std::string(m);
  if (ctx.method == "OPTIONS") {
    HttpResponse r;
    r.status = 204;
    r.headers.emplace_back("Allow", allow);
    return r;
  }
  if (std::find(methods.begin(), methods.end(), ctx.method) == methods.end()) {
    HttpResponse r = error(
        MakeError(405, "method_not_allowed",
                  req.method + " is not allowed on " + std::string(ctx.route->pattern) + " (allowed: " + allow + ")"));
    r.headers.emplace_back("Allow", allow);
    return r;
  }

  // A token in the URL is refused before authentication (docs/daemon.md "Security"): a client that put it there
  // learns why (400) instead of getting "missing Authorization header" (401).
  for (const auto& [name, value] : req.query) {
    if (name == "token" || name == "access_token" || name == "api_key") {
      return status_error(CheckQuery({{name, value}}, {}));
    }
  }

  // ---- Authentication (everything but /healthz) ----
  if (ctx.route->id != RouteId::kHealthz) {
    if (req.peer) {
      Result<Principal> p = PeerPrincipal(*req.peer, options_.socket_allow);
      if (!p.ok()) {
        auth_failures_->Inc({"peer"});
        return status_error(p.status());
      }
      ctx.principal = *std::move(p);
    } else {
      AuthResult a = Authenticate(*store_, Header(req, "authorization"));
      if (!a.principal) {
        auth_failures_->Inc({"token"});
        HttpResponse r = error(MakeError(401, "unauthenticated", a.problem));
        r.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"iptkitd\"");
        return r;
      }
      ctx.principal = *std::move(a.principal);
    }
    int retry_after = 0;
    if (RateLimited(ctx.principal.name, &retry_after)) {
      HttpError e = MakeError(429, "rate_limited",
                              ctx.principal.name + " exceeded " + FormatRate(options_.rate_limit) +
                                  " requests per second (burst " + FormatRate(options_.rate_burst) + ")");
      e.retry_after_seconds = retry_after;
      return error(e);
    }
    const bool reads = ctx.method == "GET";
    Status allowed = reads ? AuthorizeRead(ctx.principal) : Status::Ok();
    if (!reads && !ctx.principal.scopes.write)
      allowed = Status::PermissionDenied(ctx.principal.name + " has no write scope");
    if (!allowed.ok()) {
      auth_failures_->Inc({"scope"});
      return status_error(allowed);
    }
  }

  // ---- Body ----
  if (!req.body.empty()) {
    if (req.body.size() > options_.max_body_bytes) {
      return error(MakeError(413, "payload_too_large",
                             "the body has " + std::to_string(req.body.size()) + " bytes; the limit is " +
                                 std::to_string(options_.max_body_bytes)));
    }
    std::string type = Header(req, "content-type");
    type = type.substr(0, type.find(';'));
    while (!type.empty() && type.back() == ' ') type.pop_back();
    std::transform(type.begin(), type.end(), type.begin(), [](unsigned char c) { return std::tolower(c); });
    if (type != "application/json") {
      return error(MakeError(415, "unsupported_media_type",
                             "request bodies are JSON: send Content-Type: application/json" +
                                 (type.empty() ? std::string() : " (got " + type + ")")));
    }
  }

  const DecodeOptions decode{options_.netns, options_.default_owner, options_.max_ops};
  std::optional<std::string> scoped_owner;
  if (!ctx.principal.scopes.owners.empty()) scoped_owner = ctx.principal.scopes.owners.front();
  DecodeOptions owned_decode = decode;
  if (scoped_owner) owned_decode.default_owner = *scoped_owner;

  // Query parameters every route accepts.
  auto check_query = [&](std::vector<std::string> allowed) -> Status {
    allowed.push_back("netns");
    IPTKIT_RETURN_IF_ERROR(CheckQuery(req.query, allowed));
    IPTKIT_ASSIGN_OR_RETURN(std::optional<std::string> netns, QueryValue(req.query, "netns"));
    if (netns && *netns != options_.netns) {
      return Status::InvalidArgument("query parameter 'netns': this daemon serves network namespace '" +
                                     (options_.netns.empty() ? std::string("(its own)") : options_.netns) + "', not '" +
                                     *netns + "'");
    }
    return Status::Ok();
  };
  auto no_body = [&]() -> Status {
    if (!req.body.empty()) return Status::InvalidArgument("(body): this request takes no body");
    return Status::Ok();
  };

  // Submits a change after the scope check; maps the result.
  auto submit = [&](service::ChangeRequest change, const ErrorContext& ec) -> HttpResponse {
    change.principal = ctx.principal.name;
    change.request_id = ctx.request_id;
    change.request_json = req.body;
    Status scoped = AuthorizeChange(ctx.principal, TouchesOf(change));
    if (!scoped.ok()) {
      auth_failures_->Inc({"scope"});
      return status_error(scoped);
    }
    // What the plan actually touches (an owner's dropped chains, a cascade's rules elsewhere) is checked again by
    // the writer.
    const store::Scopes& scopes = ctx.principal.scopes;
    if (!scopes.tables.empty() || !scopes.chains.empty()) {
      Principal who = ctx.principal;
      service::Metrics::Counter* failures = auth_failures_;
      change.authorize = [who, failures](const std::vector<service::ChangedChain>& chains) {
        Status s = AuthorizeChains(who, chains);
        if (!s.ok()) failures->Inc({"scope"});
        return s;
      };
    }
    Result<service::ChangeResult> done = service_->Submit(std::move(change));
    if (!done.ok()) return status_error(done.status(), ec);
    return JsonResponse(ResultJson(*done));
  };

  const std::string family_name = ctx.params.count("family") ? ctx.params.at("family") : "";
  Family family = family_name == "ipv6" ? Family::kIPv6 : Family::kIPv4;
  const std::string table = ctx.params.count("table") ? ctx.params.at("table") : "";
  const std::string chain = ctx.params.count("chain") ? ctx.params.at("chain") : "";
  if (!table.empty() && BuiltinChains(table).empty()) {
    return error(
        MakeError(404, "not_found", "unknown table '" + table + "' (known: filter, nat, mangle, raw, security)"));
  }
  const Location where{family, table, chain};

  // The listing of a family, with managed rules annotated (ttl_remaining, expires_at).
  auto listing = [&](const std::optional<std::string>& only_table) -> Result<Json> {
    IPTKIT_ASSIGN_OR_RETURN(Ruleset rs, service_->List(family, only_table));
    rs.family = family;
    Json j = json::RulesetToJson(rs, json::DialectSpec());
    std::map<std::tuple<std::string, std::string, std::string, std::string>, service::ManagedRuleView> managed;
    for (const service::ManagedRuleView& v : service_->ManagedRules()) {
      if (v.rule.family != family) continue;
      managed.emplace(std::make_tuple(v.rule.table, v.rule.chain, v.rule.owner, v.rule.rule_id), v);
    }
    for (Json& t : j["tables"]) {
      for (Json& c : t["chains"]) {
        for (Json& r : c["rules"]) {
          if (!r.contains("owner")) continue;
          auto it = managed.find({t["name"].get<std::string>(), c["name"].get<std::string>(),
                                  r["owner"].get<std::string>(), r["id"].get<std::string>()});
          if (it == managed.end()) continue;
          r["managed"] = true;
          r["ttl_remaining"] =
              it->second.ttl_remaining_seconds ? Json(*it->second.ttl_remaining_seconds) : Json(nullptr);
          if (it->second.rule.deadline_ms) r["expires_at"] = FormatTime(*it->second.rule.deadline_ms);
        }
      }
    }
    return j;
  };
  auto table_json = [&]() -> Result<Json> {
    IPTKIT_ASSIGN_OR_RETURN(Json all, listing(table));
    for (Json& t : all["tables"]) {
      if (t["name"] == table) {
        t["family"] = family_name;
        return t;
      }
    }
    return Status::NotFound("table " + table + " does not exist in " + family_name + " (nothing has used it yet)");
  };
  auto chain_json = [&]() -> Result<Json> {
    IPTKIT_ASSIGN_OR_RETURN(Json t, table_json());
    for (Json& c : t["chains"]) {
      if (c["name"] == chain) {
        c["family"] = family_name;
        c["table"] = table;
        return c;
      }
    }
    return Status::NotFound("chain '" + chain + "' does not exist in " + family_name + " " + table);
  };

  switch (ctx.route->id) {
    case RouteId::kHealthz: {
      if (Status s = check_query({}); !s.ok()) return status_error(s);
      // No token here: the problems say which duty fails and why (tool, store, owner name), never rules.
      const service::Health health = service_->GetHealth();
      if (health.state == service::Health::State::kStarting) return JsonResponse({{"status", "starting"}}, 503);
      if (health.state == service::Health::State::kOk) return JsonResponse({{"status", "ok"}});
      Json problems = Json::array();
      for (const service::Health::Problem& p : health.problems) problems.push_back(p.Describe());
      return JsonResponse({{"status", "unhealthy"}, {"problems", problems}}, 503);
    }
    case RouteId::kVersion: {
      if (Status s = check_query({}); !s.ok()) return status_error(s);
      return JsonResponse({{"version", options_.version},
                           {"api", "v1"},
                           {"backend", service_->backend_name()},
                           {"netns", options_.netns}});
    }
    case RouteId::kInfo: {
      if (Status s = check_query({}); !s.ok()) return status_error(s);
      Result<FirewallInfo> info = service_->Info();
      if (!info.ok()) return status_error(info.status());
      info->netns = options_.netns;
      return JsonResponse(json::FirewallInfoToJson(*info));
    }
    case RouteId::kMetrics: {
      if (Status s = check_query({}); !s.ok()) return status_error(s);
      HttpResponse r;
      r.content_type = "text/plain; version=0.0.4; charset=utf-8";
      r.body = metrics_->Render();
      return r;
    }
    case RouteId::kFamily: {
      if (Status s = check_query({}); !s.ok()) return status_error(s);
      Result<Json> j = listing(std::nullopt);
      if (!j.ok()) return status_error(j.status());
      return JsonResponse(*j);
    }
    case RouteId::kTable: {
      if (Status s = check_query({}); !s.ok()) return status_error(s);
      Result<Json> j = table_json();
      if (!j.ok()) return status_error(j.status());
      return JsonResponse(*j);
    }
    case RouteId::kChain: {
      if (ctx.method == "GET") {
        if (Status s = check_query({}); !s.ok()) return status_error(s);
        Result<Json> j = chain_json();
        if (!j.ok()) return status_error(j.status());
        return JsonResponse(*j);
      }
      if (ctx.method == "PUT") {
        if (Status s = check_query({"dry_run"}); !s.ok()) return status_error(s);
        Result<std::optional<std::string>> policy = DecodeChainBody(req.body, decode);
        if (!policy.ok()) return status_error(policy.status());
        Result<bool> dry = QueryBool(req.query, "dry_run");
        if (!dry.ok()) return status_error(dry.status());
        service::ChangeRequest change;
        change.dry_run = *dry;
        if (IsBuiltinChain(table, chain)) {
          if (!*policy) {
            return status_error(
                Status::InvalidArgument("/policy: '" + chain +
                                        "' is a builtin chain: PUT sets its policy and needs {\"policy\": ...}")
                    .WithField("/policy"));
          }
          change.action = "policy";
          change.ops.SetPolicy(family, table, chain, **policy);
        } else {
          if (*policy) {
            return status_error(
                Status::InvalidArgument("/policy: user chain '" + chain + "' has no policy").WithField("/policy"));
          }
          change.action = "create_chain";
          change.ops.CreateChain(family, table, chain);
        }
        HttpResponse r = submit(std::move(change), {});
        if (r.status == 409 && r.body.find("already exists") != std::string::npos) {
          // PUT is idempotent: the chain is there.
          service::ChangeResult unchanged;
          unchanged.dry_run = *dry;
          Json j = ResultJson(unchanged);
          j.erase("transaction");
          return JsonResponse(j);
        }
        return r;
      }
      // DELETE
      if (Status s = check_query({"cascade", "dry_run"}); !s.ok()) return status_error(s);
      if (Status s = no_body(); !s.ok()) return status_error(s);
      Result<bool> cascade = QueryBool(req.query, "cascade");
      Result<bool> dry = QueryBool(req.query, "dry_run");
      if (!cascade.ok()) return status_error(cascade.status());
      if (!dry.ok()) return status_error(dry.status());
      service::ChangeRequest change;
      change.action = "delete_chain";
      change.dry_run = *dry;
      change.ops.DeleteChain(family, table, chain, *cascade);
      return submit(std::move(change), {});
    }
    case RouteId::kRules: {
      if (ctx.method == "GET") {
        if (Status s = check_query({}); !s.ok()) return status_error(s);
        Result<Json> c = chain_json();
        if (!c.ok()) return status_error(c.status());
        return JsonResponse({{"family", family_name}, {"table", table}, {"chain", chain}, {"rules", (*c)["rules"]}});
      }
      const bool post = ctx.method == "POST";
      if (Status s =
              check_query(post ? std::vector<std::string>{"position", "dry_run"} : std::vector<std::string>{"dry_run"});
          !s.ok()) {
        return status_error(s);
      }
      Result<RuleBody> body = DecodeRuleBody(req.body, where, owned_decode);
      if (!body.ok()) return status_error(body.status(), SpecField());
      Result<bool> dry = QueryBool(req.query, "dry_run");
      if (!dry.ok()) return status_error(dry.status());
      service::ChangeRequest change;
      change.dry_run = *dry;
      Rule rule = body->rule;
      if (body->id) rule.SetOwnerTag({*body->owner, *body->id});
      if (post) {
        Result<std::optional<std::string>> position = QueryValue(req.query, "position");
        if (!position.ok()) return status_error(position.status());
        if (body->owner) {
          store::Position where_owned = store::Position::kLast;
          if (*position && (**position == "1" || **position == "first")) {
            where_owned = store::Position::kFirst;
          } else if (*position && **position != "last") {
            return status_error(Status::InvalidArgument(
                "query parameter 'position': an owned rule goes first (position=1 or first) or last (last, or "
                "no position) among its owner's rules, not at '" +
                **position + "'"));
          }
          change.action = "append";
          change.adds.push_back({*body->owner, family, table, chain, rule, where_owned, body->ttl_seconds});
        } else if (*position) {
          Result<std::optional<int64_t>> n = QueryInt(req.query, "position", 1, 1 << 30);
          if (!n.ok()) return status_error(n.status());
          change.action = "insert";
          change.ops.Insert(family, table, chain, static_cast<int>(**n), rule);
        } else {
          change.action = "append";
          change.ops.Append(family, table, chain, rule);
        }
      } else {
        if (body->ttl_seconds)
          return status_error(Status::InvalidArgument("/ttl: a delete has no ttl").WithField("/ttl"));
        change.action = "delete";
        if (body->owner) {
          change.deletes.push_back({*body->owner, family, table, chain, rule});
        } else {
          change.ops.Delete(family, table, chain, rule);
        }
      }
      return submit(std::move(change), SpecField());
    }
    case RouteId::kRule: {
      Result<std::optional<int64_t>> index_param = QueryInt({{"index", ctx.params.at("index")}}, "index", 1, 1 << 30);
      if (!index_param.ok()) {
        return error(MakeError(404, "not_found", "rule index '" + ctx.params.at("index") + "' is not a number >= 1"));
      }
      const int index = static_cast<int>(**index_param);
      if (ctx.method == "GET") {
        if (Status s = check_query({}); !s.ok()) return status_error(s);
        Result<Json> c = chain_json();
        if (!c.ok()) return status_error(c.status());
        const Json& rules = (*c)["rules"];
        if (static_cast<size_t>(index) > rules.size()) {
          return status_error(Status::NotFound("no rule at index " + std::to_string(index) + ": chain " + chain +
                                               " has " + std::to_string(rules.size()) + " rules"));
        }
        Json r = rules[index - 1];
        r["family"] = family_name;
        r["table"] = table;
        r["chain"] = chain;
        return JsonResponse(r);
      }
      if (Status s = check_query({"dry_run"}); !s.ok()) return status_error(s);
      Result<bool> dry = QueryBool(req.query, "dry_run");
      if (!dry.ok()) return status_error(dry.status());
      service::ChangeRequest change;
      change.dry_run = *dry;
      if (ctx.method == "PUT") {
        Result<ReplaceBody> body = DecodeReplaceBody(req.body, where, decode);
        if (!body.ok()) return status_error(body.status(), SpecField());
        change.action = "replace";
        change.ops.Replace(family, table, chain, index, body->rule, body->expect);
      } else {
        Result<std::optional<Rule>> expect = DecodeExpectBody(req.body, where, decode);
        if (!expect.ok()) return status_error(expect.status(), ErrorContext{"", "/expect"});
        change.action = "delete";
        change.ops.DeleteAt(family, table, chain, index, *expect);
      }
      return submit(std::move(change), {});
    }
    case RouteId::kTransactions: {
      if (Status s = check_query({"dry_run", "confirm_within"}); !s.ok()) return status_error(s);
      Result<TransactionBody> body = DecodeTransactionBody(req.body, owned_decode);
      if (!body.ok()) return status_error(body.status());
      Result<bool> dry = QueryBool(req.query, "dry_run");
      if (!dry.ok()) return status_error(dry.status());
      Result<std::optional<int64_t>> confirm = QueryInt(req.query, "confirm_within", 1, kMaxSeconds);
      if (!confirm.ok()) return status_error(confirm.status());
      if (*confirm && body->confirm_within_seconds && *confirm != *body->confirm_within_seconds) {
        return status_error(
            Status::InvalidArgument("query parameter 'confirm_within' disagrees with the body's \"confirm_within\""));
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
        return status_error(
            Status::InvalidArgument("/confirm_within: a dry run cannot be confirmed").WithField("/confirm_within"));
      }
      return submit(std::move(change), ErrorContext{"/ops", ""});
    }
    case RouteId::kTransaction: {
      if (Status s = check_query({}); !s.ok()) return status_error(s);
      Result<store::ConfirmRecord> c = service_->GetConfirm(ctx.params.at("id"));
      if (!c.ok()) return status_error(c.status());
      return JsonResponse(ConfirmJson(*c));
    }
    case RouteId::kConfirm: {
      if (Status s = check_query({}); !s.ok()) return status_error(s);
      if (!req.body.empty() && req.body != "{}") return status_error(Status::InvalidArgument("(body): give no body"));
      service::ChangeRequest change;
      change.action = "confirm";
      change.confirm = ctx.params.at("id");
      HttpResponse r = submit(std::move(change), {});
      if (r.status != 200) return r;
      Result<store::ConfirmRecord> c = service_->GetConfirm(ctx.params.at("id"));
      if (!c.ok()) return status_error(c.status());
      return JsonResponse(ConfirmJson(*c));
    }
    case RouteId::kOwners: {
      if (Status s = check_query({}); !s.ok()) return status_error(s);
      Json owners = Json::array();
      for (const service::OwnerView& o : service_->Owners()) owners.push_back(OwnerJson(o, false));
      return JsonResponse({{"owners", owners}});
    }
    case RouteId::kOwner: {
      const std::string owner = ctx.params.at("owner");
      if (Status s = ValidateOwner(owner); !s.ok()) return error(MakeError(404, "not_found", s.message()));
      if (ctx.method == "GET") {
        if (Status s = check_query({}); !s.ok()) return status_error(s);
        Result<service::OwnerView> o = service_->GetOwner(owner);
        if (!o.ok()) return status_error(o.status());
        return JsonResponse(OwnerJson(*o, true));
      }
      if (Status s = check_query({"dry_run", "confirm_within"}); !s.ok()) return status_error(s);
      Result<bool> dry = QueryBool(req.query, "dry_run");
      if (!dry.ok()) return status_error(dry.status());
      Result<std::optional<int64_t>> confirm = QueryInt(req.query, "confirm_within", 1, kMaxSeconds);
      if (!confirm.ok()) return status_error(confirm.status());
      service::ChangeRequest change;
      change.dry_run = *dry;
      change.confirm_within_seconds = *confirm;
      if (ctx.method == "PUT") {
        Result<DesiredState> doc = DecodeOwnerBody(req.body, owner, decode);
        if (!doc.ok()) return status_error(doc.status());
        change.action = "put_owner";
        change.put_owner = *std::move(doc);
      } else {
        if (Status s = no_body(); !s.ok()) return status_error(s);
        change.action = "delete_owner";
        change.delete_owner = owner;
      }
      if (change.dry_run && change.confirm_within_seconds) {
        return status_error(Status::InvalidArgument("query parameter 'confirm_within': a dry run cannot be confirmed"));
      }
      return submit(std::move(change), {});
    }
    case RouteId::kAudit: {
      if (Status s = check_query({"principal", "action", "result", "request_id", "since", "until", "before", "limit"});
          !s.ok()) {
        return status_error(s);
      }
      store::AuditQuery q;
      auto str = [&](const char* name, std::string* out) -> Status {
        IPTKIT_ASSIGN_OR_RETURN(std::optional<std::string> v, QueryValue(req.query, name));
        if (v) *out = *v;
        return Status::Ok();
      };
      Status s = str("principal", &q.principal);
      if (s.ok()) s = str("action", &q.action);
      if (s.ok()) s = str("result", &q.result);
      if (s.ok()) s = str("request_id", &q.request_id);
      Result<std::optional<int64_t>> since = QueryTime(req.query, "since");
      Result<std::optional<int64_t>> until = QueryTime(req.query, "until");
      Result<std::optional<int64_t>> before = QueryInt(req.query, "before", 1, INT64_MAX);
      Result<std::optional<int64_t>> limit = QueryInt(req.query, "limit", 1, 1000);
      for (const Status& each : {since.status(), until.status(), before.status(), limit.status()}) {
        if (s.ok()) s = each;
      }
      if (!s.ok()) return status_error(s);
      q.since_ms = *since;
      q.until_ms = *until;
      q.before_id = *before;
      if (*limit) q.limit = static_cast<int>(**limit);
      Result<store::AuditPage> page = store_->QueryAudit(q);
      if (!page.ok()) return status_error(page.status());
      Json entries = Json::array();
      for (const store::AuditEntry& e : page->entries) {
        Json j;
        j["id"] = e.id;
        j["time"] = FormatTime(e.time_ms);
        j["principal"] = e.principal;
        j["request_id"] = e.request_id;
        j["action"] = e.action;
        Result<Json> request = e.request.empty() ? Result<Json>(Json(nullptr)) : json::Parse(e.request);
        j["request"] = request.ok() ? *request : Json(e.request);
        j["result"] = e.result;
        j["message"] = e.message;
        j["diff"] = e.diff;
        entries.push_back(std::move(j));
      }
      return JsonResponse(
          {{"entries", entries}, {"next_before", page->next_before ? Json(*page->next_before) : Json(nullptr)}});
    }
    case RouteId::kEvents: {
      if (Status s = check_query({"after"}); !s.ok()) return status_error(s);
      Result<std::optional<int64_t>> after_param = QueryInt(req.query, "after", 0, INT64_MAX);
      if (!after_param.ok()) return status_error(after_param.status());
      uint64_t after = events_->last_id();
      const std::string last_event = Header(req, "last-event-id");
      if (*after_param) {
        after = static_cast<uint64_t>(**after_param);
      } else if (!last_event.empty()) {
        Result<std::optional<int64_t>> id = QueryInt({{"Last-Event-ID", last_event}}, "Last-Event-ID", 0, INT64_MAX);
        if (!id.ok()) return status_error(id.status());
        after = static_cast<uint64_t>(**id);
      }
      // An id from an earlier run of the daemon (ids restart at 1) means "from now".
      if (after > events_->last_id()) after = events_->last_id();
      HttpResponse r;
      r.content_type = "text/event-stream";
      service::EventBus* events = events_;
      const auto keepalive = options_.sse_keepalive;
      auto last = std::make_shared<uint64_t>(after);
      r.stream = [events, keepalive, last](const std::function<bool(std::string_view)>& write) {
        service::EventBus::Batch b = events->WaitAfter(*last, keepalive);
        if (b.missed && !write(": some events were dropped from the buffer before they could be sent\n\n")) {
          return false;
        }
        for (const service::Event& e : b.events) {
          if (!write(service::FormatSse(e))) return false;
          *last = e.id;
        }
        if (b.closed) return false;
        if (b.events.empty()) return write(": keep-alive\n\n");
        return true;
      };
      return r;
    }
  }
  return error(MakeError(500, "internal", "unhandled route"));
}

}  // namespace iptkit::rest
