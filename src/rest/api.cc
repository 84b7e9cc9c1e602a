#include "src/rest/api.h"

#include <spdlog/spdlog.h>
#include <sys/random.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <utility>

#include "src/rest/handlers.h"
#include "src/rest/ui_assets.h"

namespace iptkit::rest {
namespace {

using Clock = std::chrono::steady_clock;

// ---- Routing: the route table (tests/rest/openapi_test.py reads it: keep one route per line) ----

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
  kRates,
  kSets,
  kSet,
  kSetFlush,
  kSetRename,
  kSetSwap,
  kSetEntries,
  kSetTest,
  kSetLoad,
  kSetSync,
};

struct Route {
  RouteId id;
  std::string_view pattern;  // segments; {name} is a parameter
  std::vector<std::string_view> methods;
  Handler handler;  // one per resource (handlers.h)
};

// clang-format off
const std::vector<Route>& Routes() {
  static const std::vector<Route> routes = {
      {RouteId::kHealthz, "/healthz", {"GET"}, &HealthHandler},
      {RouteId::kMetrics, "/metrics", {"GET"}, &MetricsHandler},
      {RouteId::kVersion, "/v1/version", {"GET"}, &VersionHandler},
      {RouteId::kInfo, "/v1/info", {"GET"}, &InfoHandler},
      {RouteId::kTransactions, "/v1/transactions", {"POST"}, &TransactionsHandler},
      {RouteId::kTransaction, "/v1/transactions/{id}", {"GET"}, &TransactionsHandler},
      {RouteId::kConfirm, "/v1/transactions/{id}/confirm", {"POST"}, &TransactionsHandler},
      {RouteId::kOwners, "/v1/owners", {"GET"}, &OwnersHandler},
      {RouteId::kOwner, "/v1/owners/{owner}", {"GET", "PUT", "DELETE"}, &OwnersHandler},
      {RouteId::kAudit, "/v1/audit", {"GET"}, &AuditHandler},
      {RouteId::kEvents, "/v1/events", {"GET"}, &EventsHandler},
      {RouteId::kSets, "/v1/sets", {"GET", "POST"}, &SetsHandler},
      {RouteId::kSet, "/v1/sets/{set}", {"GET", "DELETE"}, &SetsHandler},
      {RouteId::kSetFlush, "/v1/sets/{set}/flush", {"POST"}, &SetsHandler},
      {RouteId::kSetRename, "/v1/sets/{set}/rename", {"POST"}, &SetsHandler},
      {RouteId::kSetSwap, "/v1/sets/{set}/swap", {"POST"}, &SetsHandler},
      {RouteId::kSetEntries, "/v1/sets/{set}/entries", {"POST", "DELETE"}, &SetsHandler},
      {RouteId::kSetTest, "/v1/sets/{set}/test", {"GET"}, &SetsHandler},
      {RouteId::kSetLoad, "/v1/sets/{set}/load", {"POST"}, &SetsHandler},
      {RouteId::kSetSync, "/v1/sets/{set}/sync", {"POST"}, &SetsHandler},
      {RouteId::kFamily, "/v1/{family}", {"GET"}, &TablesHandler},
      {RouteId::kTable, "/v1/{family}/tables/{table}", {"GET"}, &TablesHandler},
      {RouteId::kChain, "/v1/{family}/tables/{table}/chains/{chain}", {"GET", "PUT", "DELETE"}, &ChainsHandler},
      {RouteId::kRules, "/v1/{family}/tables/{table}/chains/{chain}/rules", {"GET", "POST", "DELETE"}, &RulesHandler},
      {RouteId::kRule, "/v1/{family}/tables/{table}/chains/{chain}/rules/{index}", {"GET", "PUT", "DELETE"}, &RulesHandler},
      {RouteId::kRates, "/v1/{family}/tables/{table}/chains/{chain}/rates", {"GET"}, &RatesHandler},
  };
  return routes;
}
// clang-format on

// The segments of a path ("/v1/ipv4" → "v1", "ipv4"), without allocating: every request is matched against the
// route table (twice: Admit and Handle), and a vector per route tried was most of the routing's cost. A path with
// more segments than any route has gets n = kMax + 1 (it matches nothing); one that does not start with '/' none.
struct Segments {
  static constexpr size_t kMax = 8;  // the longest route: /v1/{family}/tables/{table}/chains/{chain}/rules/{index}
  std::array<std::string_view, kMax> at;
  size_t n = 0;
};

Segments Split(std::string_view path) {
  Segments out;
  if (path.empty() || path[0] != '/') return out;
  size_t start = 1;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    if (out.n == Segments::kMax) {
      out.n = Segments::kMax + 1;
      return out;
    }
    out.at[out.n++] = path.substr(start, end - start);
    start = end + 1;
  }
  return out;
}

bool IsParam(std::string_view segment) { return segment.size() > 2 && segment.front() == '{' && segment.back() == '}'; }

// Matches `path` against `route`; fills params. {family} only matches ipv4/ipv6.
bool Match(const Route& route, std::string_view path, std::map<std::string, std::string>* params) {
  const Segments want = Split(route.pattern);
  const Segments got = Split(path);
  if (want.n != got.n) return false;
  for (size_t i = 0; i < want.n; ++i) {
    if (IsParam(want.at[i])) {
      if (got.at[i].empty()) return false;
      if (want.at[i] == "{family}" && got.at[i] != "ipv4" && got.at[i] != "ipv6") return false;
    } else if (want.at[i] != got.at[i]) {
      return false;
    }
  }
  if (params != nullptr) {
    params->clear();
    for (size_t i = 0; i < want.n; ++i) {
      if (IsParam(want.at[i])) {
        (*params)[std::string(want.at[i].substr(1, want.at[i].size() - 2))] = std::string(got.at[i]);
      }
    }
  }
  return true;
}

// ---- Small helpers ----

// A request id the daemon makes: "r-" and 16 hex digits. Unique within the process (a counter through two
// bijections of 64-bit numbers: a step by an odd constant from a random start, then splitmix64's finalizer), and
// from a start drawn once per process, so that ids of different runs do not repeat each other. getrandom(2) and
// snprintf for every request were 5% of the daemon's CPU under 64 clients adding set entries.
std::string NewRequestId() {
  static const uint64_t start = [] {
    uint64_t value = 0;
    size_t got = 0;
    auto* bytes = reinterpret_cast<unsigned char*>(&value);
    while (got < sizeof(value)) {
      const ssize_t n = getrandom(bytes + got, sizeof(value) - got, 0);
      if (n > 0) got += static_cast<size_t>(n);
    }
    return value;
  }();
  static std::atomic<uint64_t> next{0};
  uint64_t x = start + next.fetch_add(1, std::memory_order_relaxed) * 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  x ^= x >> 31;
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "r-0123456789abcdef";
  for (int i = 17; i >= 2; --i, x >>= 4) out[i] = kHex[x & 0xf];
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

// "100", "2.5".
std::string FormatRate(double rate) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", rate);
  return buf;
}

}  // namespace

// ---- Api ----

struct Api::Context {
  explicit Context(const HttpRequest& r) : req(r), method(r.method == "HEAD" ? std::string("GET") : r.method) {}
  const HttpRequest& req;
  std::string method;  // HEAD as GET
  std::string request_id;
  const Route* route = nullptr;
  std::map<std::string, std::string> params;
  Principal principal;
  Clock::time_point start;
  size_t max_body_bytes = 0;  // what Admit allows the HTTP layer to read
};

Api::Api(service::Service* service, store::Store* store, service::EventBus* events, service::Metrics* metrics,
         ApiOptions options)
    : options_(std::move(options)),
      rate_buckets_(TokenBuckets::Options{
          .rate = options_.rate_limit, .burst = options_.rate_burst, .max_keys = kMaxRateLimitedPrincipals}) {
  requests_ = &metrics->AddCounter("iptkitd_http_requests_total", "HTTP requests served, by method, route and status.",
                                   {"method", "route", "code"});
  latency_ = &metrics->AddHistogram("iptkitd_http_request_duration_seconds",
                                    "Time from a request's arrival to its answer, by route.", {"route"},
                                    {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10});
  env_.service = service;
  env_.store = store;
  env_.events = events;
  env_.metrics = metrics;
  env_.options = &options_;
  env_.counters = options_.counters;
  env_.auth_failures = &metrics->AddCounter(
      "iptkitd_http_auth_failures_total",
      "Requests refused for authentication (401; 429 past a client address's budget of them) or scope (403).",
      {"reason"});
  auth_budget_ =
      std::make_unique<AuthFailureBudget>(AuthFailureBudget::Options{.rate = options_.auth_failure_rate,
                                                                     .burst = options_.auth_failure_burst,
                                                                     .max_keys = options_.auth_failure_peers});
  // IP sets are always the kernel's: a daemon on the in-memory fake backend (tests, demos) serves none (503), so
  // that it never changes the sets of the namespace it runs in.
  if (options_.sets != nullptr) {
    env_.sets = options_.sets;
  } else if (service != nullptr && service->backend_name() != "fake") {
    sets_ = std::make_unique<service::SetService>(options_.netns, service, store, events, metrics);
    env_.sets = sets_.get();
  }
}

std::string Api::RequestId(std::string_view given) {
  return ValidRequestId(given) ? std::string(given) : NewRequestId();
}

std::string Api::RouteName(std::string_view path) {
  for (const Route& r : Routes()) {
    if (Match(r, path, nullptr)) return std::string(r.pattern);
  }
  return "";
}

bool Api::RateLimited(const std::string& principal, int* retry_after) {
  return !rate_buckets_.Charge(principal, Clock::now(), retry_after);
}

HttpResponse Api::Handle(const HttpRequest& req) {
  Preflighted p = Preflight(req);
  if (p.response) return std::move(*p.response);
  return Handle(req, p.admission);
}

Api::Preflighted Api::Preflight(const HttpRequest& head) {
  Context ctx(head);
  ctx.start = Clock::now();
  ctx.request_id = RequestId(Header(head, "x-request-id"));
  Preflighted out;
  if (IsUiPath(head.path)) {  // the dashboard's files: no token, no body (ui_assets.h)
    HttpResponse r = ServeUi(options_.ui_dir, options_.ui_hosts, head);
    if (r.status >= 400) r = Unauthenticated(ctx, std::move(r), "a dashboard request failed");
    out.response = Finish(ctx, std::move(r));
    return out;
  }
  if (std::optional<HttpResponse> refused = Admit(ctx)) {
    out.response = Finish(ctx, *std::move(refused));
    return out;
  }
  out.admission = Admission{ctx.principal, ctx.request_id, ctx.max_body_bytes, ctx.start};
  return out;
}

void Api::Resume(Context& ctx, const Admission& admission) {
  ctx.start = admission.start;
  ctx.request_id = admission.request_id;
  ctx.principal = admission.principal;
  ctx.max_body_bytes = admission.max_body_bytes;
  for (const Route& r : Routes()) {
    if (Match(r, ctx.req.path, &ctx.params)) {
      ctx.route = &r;
      break;
    }
  }
}

HttpResponse Api::Handle(const HttpRequest& req, const Admission& admission) {
  Context ctx(req);
  Resume(ctx, admission);
  if (ctx.route == nullptr) {
    HttpResponse r;
    r.status = 404;
    r.body = ErrorBody(MakeError(404, "not_found", "no such route: " + req.path), ctx.request_id);
    return Finish(ctx, std::move(r));
  }
  return Finish(ctx, Dispatch(ctx));
}

bool Api::Inline(const HttpRequest& head) {
  if (head.method == "GET" || head.method == "HEAD" || head.method == "OPTIONS") return false;
  for (const Route& r : Routes()) {
    if ((r.id == RouteId::kRules || r.id == RouteId::kRule) && Match(r, head.path, nullptr)) return true;
  }
  return false;
}

std::optional<HttpResponse> Api::HandleAsync(const HttpRequest& req, const Admission& admission, Respond respond) {
  Context ctx(req);
  Resume(ctx, admission);
  if (ctx.route == nullptr || !Inline(req)) return Handle(req, admission);
  // The deferred answer is finished (headers, metrics, access log) where it is made.
  Respond finish = [this, logged = LoggedOf(ctx), respond = std::move(respond)](Answer answer) {
    respond([this, logged, answer = std::move(answer)] { return Finish(logged, answer()); });
  };
  HttpResponse r = Dispatch(ctx, &finish);
  if (r.deferred) return std::nullopt;
  return Finish(ctx, std::move(r));
}

Api::Logged Api::LoggedOf(const Context& ctx) {
  const HttpRequest& req = ctx.req;
  Logged l;
  l.method = ctx.method;
  l.req_method = req.method;
  l.path = req.path;
  l.remote = req.remote;
  l.route = ctx.route != nullptr ? std::string(ctx.route->pattern) : IsUiPath(req.path) ? "/ui/" : "unknown";
  l.principal = ctx.principal.name;
  l.request_id = ctx.request_id;
  l.start = ctx.start;
  return l;
}

HttpResponse Api::Finish(const Context& ctx, HttpResponse resp) { return Finish(LoggedOf(ctx), std::move(resp)); }

HttpResponse Api::Finish(const Logged& l, HttpResponse resp) {
  if (resp.status >= 400 && resp.body.empty()) {
    resp.body = ErrorBody(MakeError(resp.status, "error", "request failed"), l.request_id);
  }
  resp.headers.emplace_back("X-Request-Id", l.request_id);
  resp.headers.emplace_back("Cache-Control", "no-store");
  if (!IsUiPath(l.path)) resp.headers.emplace_back("X-Content-Type-Options", "nosniff");
  const double seconds = std::chrono::duration<double>(Clock::now() - l.start).count();
  requests_->Inc({l.method, l.route, std::to_string(resp.status)});
  if (!resp.events) latency_->Observe({l.route}, seconds);
  // Never the query or headers: they could hold secrets pasted by mistake.
  spdlog::info("{} {} {} {} {} {:.1f}ms {}", l.remote.empty() ? "-" : l.remote, l.principal.empty() ? "-" : l.principal,
               l.req_method, l.route, resp.status, seconds * 1000, l.request_id);
  return resp;
}

std::optional<HttpResponse> Api::Overspent(std::string_view remote, std::string_view problem,
                                           const std::string& request_id, Clock::time_point now) {
  int retry_after = 0;
  if (auth_budget_->Charge(AuthFailureBudget::PeerKey(remote), now, &retry_after)) return std::nullopt;
  env_.auth_failures->Inc({"budget"});
  HttpError e = MakeError(429, "auth_failures_exceeded",
                          "too many failed authentications from your address (" + std::string(problem) + "); " +
                              FormatRate(options_.auth_failure_rate) + " per second are answered");
  e.retry_after_seconds = retry_after;
  HttpResponse r;
  r.status = 429;
  r.body = ErrorBody(e, request_id);
  r.headers.emplace_back("Retry-After", std::to_string(retry_after));
  r.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"iptkitd\"");
  r.hold = options_.auth_failure_hold;
  return r;
}

std::optional<HttpResponse> Api::ChargeRefusedHead(std::string_view remote, std::string_view problem,
                                                   const std::string& request_id) {
  if (remote.empty()) return std::nullopt;
  std::optional<HttpResponse> held = Overspent(remote, problem, request_id, Clock::now());
  if (held) {
    held->headers.emplace_back("X-Request-Id", request_id);
    held->headers.emplace_back("Cache-Control", "no-store");
    held->headers.emplace_back("X-Content-Type-Options", "nosniff");
  }
  return held;
}

HttpResponse Api::Unauthenticated(Context& ctx, HttpResponse answer, std::string_view problem) {
  const HttpRequest& req = ctx.req;
  if (req.peer || req.remote.empty()) return answer;  // unix socket peers and in-process callers: never charged
  if (const std::string authorization = Header(req, "authorization"); !authorization.empty()) {
    AuthResult a = Authenticate(*env_.store, authorization);
    if (a.principal) {
      ctx.principal = *std::move(a.principal);  // named in the access log line
      return answer;
    }
    if (!a.lookup.ok()) return answer;  // the store failed, not the client: not charged
  }
  std::optional<HttpResponse> held = Overspent(req.remote, problem, ctx.request_id, ctx.start);
  if (held) return *std::move(held);
  return answer;
}

// Routing, authentication, rate limit, the read/write scope and the body's envelope, all from the request's head.
std::optional<HttpResponse> Api::Admit(Context& ctx) {
  const HttpRequest& req = ctx.req;
  auto error = [&](const HttpError& e) {
    HttpResponse r;
    r.status = e.http_status;
    r.body = ErrorBody(e, ctx.request_id);
    if (e.retry_after_seconds) r.headers.emplace_back("Retry-After", std::to_string(*e.retry_after_seconds));
    return r;
  };
  auto status_error = [&](const Status& s) { return error(ErrorFromStatus(s)); };

  for (const Route& r : Routes()) {
    if (Match(r, req.path, &ctx.params)) {
      ctx.route = &r;
      break;
    }
  }
  // Answered before authentication (so that a client learns 404 or 405 rather than 401), yet charged to the
  // budget of failed authentications unless a live token came with it (Unauthenticated).
  if (ctx.route == nullptr) {
    const std::string problem = "no such route: " + req.path;
    return Unauthenticated(ctx, error(MakeError(404, "not_found", problem)), problem);
  }
  const auto& methods = ctx.route->methods;
  std::string allow;
  for (std::string_view m : methods) allow += (allow.empty() ? "" : ", ") + std::string(m);
  if (ctx.method == "OPTIONS") {
    HttpResponse r;
    r.status = 204;
    r.headers.emplace_back("Allow", allow);
    return Unauthenticated(ctx, std::move(r), "OPTIONS");
  }
  if (std::find(methods.begin(), methods.end(), ctx.method) == methods.end()) {
    const std::string problem =
        req.method + " is not allowed on " + std::string(ctx.route->pattern) + " (allowed: " + allow + ")";
    HttpResponse r = error(MakeError(405, "method_not_allowed", problem));
    r.headers.emplace_back("Allow", allow);
    return Unauthenticated(ctx, std::move(r), problem);
  }

  // A token in the URL is refused before authentication (docs/daemon.md "Security"): a client that put it there
  // learns why (400) instead of getting "missing Authorization header" (401).
  for (const auto& [name, value] : req.query) {
    if (name == "token" || name == "access_token" || name == "api_key") {
      const Status refused = CheckQuery({{name, value}}, {});
      return Unauthenticated(ctx, status_error(refused), refused.message());
    }
  }

  // ---- Authentication (everything but /healthz) ----
  if (ctx.route->id != RouteId::kHealthz) {
    if (req.peer) {
      Result<Principal> p = PeerPrincipal(*req.peer, options_.socket_allow);
      if (!p.ok()) {
        env_.auth_failures->Inc({"peer"});
        return status_error(p.status());
      }
      ctx.principal = *std::move(p);
    } else {
      AuthResult a = Authenticate(*env_.store, Header(req, "authorization"));
      if (!a.lookup.ok()) {
        // The store, not the client, failed: say what is wrong with it (503), never "unauthenticated".
        Status files = env_.store->CheckFiles();
        return status_error(files.ok() ? Status::Unavailable("cannot check the token: " + a.lookup.message()) : files);
      }
      if (!a.principal) {
        // Charged after the lookup, never before it: a valid token gets through from any address, however many
        // bad ones came from there. (Requests without a remote end are the in-process callers': tests.)
        if (!req.remote.empty()) {
          if (std::optional<HttpResponse> held = Overspent(req.remote, a.problem, ctx.request_id, ctx.start)) {
            return held;
          }
        }
        env_.auth_failures->Inc({"token"});
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
    if (!reads && !ctx.principal.scopes.write) {
      allowed = Status::PermissionDenied(ctx.principal.name + " has no write scope");
    }
    if (!allowed.ok()) {
      env_.auth_failures->Inc({"scope"});
      return status_error(allowed);
    }
  }

  // ---- Body: size and type, from the head (docs/rest.md "Limits") ----
  // A GET (or HEAD, OPTIONS) body is ignored: it is not read.
  uint64_t announced = req.body.size();
  bool has_body = !req.body.empty() || req.headers.count("transfer-encoding") > 0;
  if (const std::string length = Header(req, "content-length"); !length.empty()) {
    const uint64_t n = std::strtoull(length.c_str(), nullptr, 10);
    announced = std::max(announced, n);
    has_body = has_body || n > 0;
  }
  // Set loads and syncs take bigger bodies, also as text (restore format).
  const bool bulk = ctx.route->id == RouteId::kSetLoad || ctx.route->id == RouteId::kSetSync;
  const size_t limit = bulk ? std::max(options_.max_set_body_bytes, options_.max_body_bytes) : options_.max_body_bytes;
  if (ctx.method != "GET" && has_body) {
    if (announced > limit) {
      return error(
          MakeError(413, "payload_too_large",
                    "the body has " + std::to_string(announced) + " bytes; the limit is " + std::to_string(limit)));
    }
    std::string type = Header(req, "content-type");
    type = type.substr(0, type.find(';'));
    while (!type.empty() && type.back() == ' ') type.pop_back();
    std::transform(type.begin(), type.end(), type.begin(), [](unsigned char c) { return std::tolower(c); });
    if (type != "application/json" && !(bulk && type == "text/plain")) {
      return error(MakeError(415, "unsupported_media_type",
                             std::string(bulk ? "this body is JSON or text: send Content-Type: application/json or "
                                                "text/plain"
                                              : "request bodies are JSON: send Content-Type: application/json") +
                                 (type.empty() ? std::string() : " (got " + type + ")")));
    }
    ctx.max_body_bytes = limit;
  }

  // A table parameter names a table iptables knows.
  if (auto table = ctx.params.find("table"); table != ctx.params.end() && BuiltinChains(table->second).empty()) {
    return error(MakeError(404, "not_found",
                           "unknown table '" + table->second + "' (known: filter, nat, mangle, raw, security)"));
  }
  return std::nullopt;
}

// An admitted request, its body read: the route's handler.
HttpResponse Api::Dispatch(Context& ctx, const Respond* respond) {
  const HttpRequest& req = ctx.req;
  // The body was admitted by Admit (size and type) and read by the HTTP layer within ctx.max_body_bytes.
  if (ctx.method != "GET" && req.body.size() > ctx.max_body_bytes) {
    HttpResponse r;
    r.status = 413;
    r.body = ErrorBody(MakeError(413, "payload_too_large",
                                 "the body has " + std::to_string(req.body.size()) + " bytes; the limit is " +
                                     std::to_string(ctx.max_body_bytes)),
                       ctx.request_id);
    return r;
  }
  Call call{req, ctx.method, ctx.request_id, ctx.params, ctx.principal, {}, {}};
  call.decode = DecodeOptions{options_.netns, options_.default_owner, options_.max_ops};
  call.owned_decode = call.decode;
  if (!call.principal.scopes.owners.empty()) call.owned_decode.default_owner = call.principal.scopes.owners.front();
  call.respond = respond;
  return ctx.route->handler(env_, call);
}

}  // namespace iptkit::rest
