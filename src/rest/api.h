// Api: the REST API of iptkitd (docs/rest.md, docs/openapi.yaml) as a transport-independent handler: an
// HttpRequest in, an HttpResponse out. It routes (a table of routes, each with the handler of its resource:
// src/rest/handlers.h), authenticates (bearer token, or unix socket peer), rate-limits and checks the read/write
// scope and the body's envelope; the handler decodes (decode.h), calls the Service and encodes (encode.h). Errors
// are {"error":{"code","message","details"}} with the HTTP status from one table (src/rest/errors.h). No business
// logic lives here. The HTTP listeners (http_server.h) only move bytes.
// Thread-safety: Handle may be called from any number of threads at once.
//
//   Api api(service.get(), store.get(), &events, &metrics, options);
//   HttpResponse r = api.Handle(HttpRequest{.method = "GET", .path = "/v1/ipv4", .headers = {{"authorization",
//                                           "Bearer iptk_..."}}});
#ifndef IPTKIT_SRC_REST_API_H_
#define IPTKIT_SRC_REST_API_H_

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "src/rest/auth.h"
#include "src/rest/decode.h"
#include "src/rest/errors.h"
#include "src/service/counter_sampler.h"
#include "src/service/events.h"
#include "src/service/metrics.h"
#include "src/service/service.h"
#include "src/service/sets.h"
#include "src/store/store.h"

namespace iptkit::rest {

struct HttpRequest {
  std::string method;  // "GET", "POST", "PUT", "DELETE", ...
  std::string path;    // decoded, without the query
  Query query;
  // Header names in lower case.
  std::multimap<std::string, std::string> headers;
  std::string body;
  std::optional<PeerCred> peer;  // set for requests on the unix socket (then no token is needed)
  std::string remote;            // for the access log: "127.0.0.1:5555", "unix"
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  // Server-Sent Events (`GET /v1/events`): the HTTP layer writes what this subscription reads, without holding a
  // request thread, until it ends; `body` is then ignored.
  std::unique_ptr<service::EventBus::Subscription> events;
  // Set by a handler called with a Call::respond that answers later through it (Api::HandleAsync); nothing else
  // of this value is used then.
  bool deferred = false;
  // The HTTP layer sends this answer only after `hold`, reading nothing more of the connection meanwhile, and then
  // closes the connection: the 429 of a client address past its budget of failed authentications
  // (ApiOptions::auth_failure_rate), so that a client flooding bad tokens gets one answer per connection per hold.
  std::chrono::milliseconds hold{0};
};

// What Api::Preflight decided from a request's head: who asks and how much body the HTTP layer may read for it.
struct Admission {
  Principal principal;                          // empty name for /healthz, which needs no authentication
  std::string request_id;                       // the id the answer will carry
  size_t max_body_bytes = 0;                    // 0: the request takes no body (a body sent anyway is not read)
  std::chrono::steady_clock::time_point start;  // when the head was looked at, for the latency metric
};

struct ApiOptions {
  std::string netns;  // the netns the daemon serves, as configured ("" = its own)
  std::string default_owner = "iptkitd";
  size_t max_body_bytes = 1 << 20;
  // The body limit of set loads and syncs (POST /v1/sets/SET/load|sync), which may also be text/plain: read whole
  // (32 MiB: about a million IPv4 entries in restore format) before anything is applied.
  size_t max_set_body_bytes = 32 << 20;
  size_t max_ops = 1000;
  // Most bytes of one GET /v1/audit answer (at least one entry is always sent); the rest is on the next page.
  size_t audit_page_bytes = 1 << 20;
  double rate_limit = 100;  // requests per second per principal; 0 = unlimited
  double rate_burst = 200;
  // Failed authentications per client address (AuthFailureBudget: per IPv4 address or IPv6 /64, of requests that
  // came over TCP): 401s, and the answers made without a live token before authentication
  // (ChargeRefusedHead): `auth_failure_rate` per second, `auth_failure_burst` at once; 0 = no budget. Beyond it such
  // a request is answered 429 (auth_failures_exceeded, Retry-After) after `auth_failure_hold` (HttpResponse::hold),
  // and its connection closed. A valid token in a well-formed head is never refused by it.
  double auth_failure_rate = 10;
  double auth_failure_burst = 100;
  std::chrono::milliseconds auth_failure_hold{1000};
  size_t auth_failure_peers = 4096;  // addresses tracked at most (TokenBuckets::Options::max_keys)
  std::vector<SocketRule> socket_allow;
  std::string version;  // of iptkitd
  // The dashboard (docs/dashboard.md): static files served at /ui/ on the TCP listeners from this directory;
  // "" = no dashboard (/ui/ is 404). Only for requests whose Host (without port, lower case) is in ui_hosts.
  std::string ui_dir;
  std::vector<std::string> ui_hosts;
  // Sampled rule counters behind GET .../chains/CHAIN/rates; nullptr = sampling is off (503). Not owned; must
  // outlive the Api.
  const service::CounterSampler* counters = nullptr;
  // The daemon's IP sets when it shares them (with the fleet agent); nullptr: the Api makes its own. Not owned.
  service::SetService* sets = nullptr;
};

// What the handlers share (handlers.h).
struct HandlerEnv {
  service::Service* service = nullptr;
  store::Store* store = nullptr;
  service::EventBus* events = nullptr;
  service::Metrics* metrics = nullptr;
  const ApiOptions* options = nullptr;
  service::Metrics::Counter* auth_failures = nullptr;  // {reason}
  const service::CounterSampler* counters = nullptr;   // may be nullptr
  service::SetService* sets = nullptr;                 // /v1/sets
};

class Api {
 public:
  Api(service::Service* service, store::Store* store, service::EventBus* events, service::Metrics* metrics,
      ApiOptions options);
  // Everything that can be decided from a request's head (method, path, query, headers, peer; not the body):
  // routing, authentication, rate limit, read/write scope, body size (Content-Length) and type. Either the
  // answer (401, 403, 404, 405, 413, 415, 429, OPTIONS' 204, ...: the HTTP layer sends it without reading the
  // body, and the request is counted and logged here), or an Admission. Headers only: `head.body` is looked at
  // only by Handle(request) below.
  struct Preflighted {
    std::optional<HttpResponse> response;  // answer this
    Admission admission;                   // else: read up to admission.max_body_bytes, then Handle
  };
  Preflighted Preflight(const HttpRequest& head);
  // Serves an admitted request (its body read) as the admitted principal, without authenticating again.
  HttpResponse Handle(const HttpRequest& request, const Admission& admission);
  // Preflight, then Handle: for callers that have the whole request (tests).
  HttpResponse Handle(const HttpRequest& request);

  // An answer made where it is sent (the HTTP layer's thread), not on the thread that finished the work.
  using Answer = std::function<HttpResponse()>;
  using Respond = std::function<void(Answer)>;
  // Whether HandleAsync serves the request without waiting for anything but the CPU, from its head: the changes
  // of the rules routes (POST and DELETE .../rules, PUT and DELETE .../rules/N), whose handlers only decode and
  // queue the change for the writer. An event loop may run those itself instead of handing them to a worker.
  static bool Inline(const HttpRequest& head);
  // Handle for those requests without waiting for the writer: either the answer now, or nullopt and `respond` is
  // called once later with the answer (on the thread that answers the change: it must only hand the Answer on;
  // the Answer then records the request's metrics and access log line where it is run). Other routes answer now.
  std::optional<HttpResponse> HandleAsync(const HttpRequest& request, const Admission& admission, Respond respond);

  // The budget of failed authentications (ApiOptions::auth_failure_rate) covers every TCP request answered without a
  // valid principal: a 401, an answer Preflight makes before authentication (404, 405, OPTIONS' 204, a token in the
  // query's 400, a /ui/ error) unless a live token came with it, and a head the HTTP layer refuses (400, 414, 431,
  // 408). This charges one of the latter to its client address (`remote`; "" for unix socket peers, never charged):
  // nullopt while within the budget, else the answer to send instead, complete: 429 auth_failures_exceeded with a
  // hold (HttpResponse::hold). Nothing of a refused head is trusted, its Authorization header neither, and its
  // token is not looked up (no store read on an I/O loop): a client that sends malformed heads is charged for them
  // whatever token it has.
  std::optional<HttpResponse> ChargeRefusedHead(std::string_view remote, std::string_view problem,
                                                const std::string& request_id);

  // The route pattern a path matches ("/v1/{family}/tables/{table}"), or "" — for metrics labels and logs.
  static std::string RouteName(std::string_view path);

  // The id a request goes by: `given` (the client's X-Request-Id) when it is 1..64 characters of
  // [A-Za-z0-9._:-], else a new "r-" + 16 hex digits. Also for the errors the HTTP layer answers itself.
  static std::string RequestId(std::string_view given);

 private:
  struct Context;
  // Preflight's checks; nullopt when the request is admitted (ctx.principal set).
  std::optional<HttpResponse> Admit(Context& ctx);
  // An admitted request's context: what Preflight found (`admission`) and the route `req` matches (none: nullptr).
  static void Resume(Context& ctx, const Admission& admission);
  // The route's handler; with `respond`, one that changes something may answer later through it (deferred).
  HttpResponse Dispatch(Context& ctx, const Respond* respond = nullptr);
  // What Finish needs of a request, copied (an answer made after the request is gone).
  struct Logged {
    std::string method;      // HEAD as GET
    std::string req_method;  // as sent
    std::string path;
    std::string remote;
    std::string route;
    std::string principal;
    std::string request_id;
    std::chrono::steady_clock::time_point start;
  };
  static Logged LoggedOf(const Context& ctx);
  // Error body, X-Request-Id, Cache-Control, metrics and the access log line.
  HttpResponse Finish(const Context& ctx, HttpResponse resp);
  HttpResponse Finish(const Logged& l, HttpResponse resp);
  bool RateLimited(const std::string& principal, int* retry_after);
  // Spends one failure of `remote`'s address at `now`; past its budget, the held 429 (body and WWW-Authenticate;
  // not finished). `remote` must not be "".
  std::optional<HttpResponse> Overspent(std::string_view remote, std::string_view problem,
                                        const std::string& request_id, std::chrono::steady_clock::time_point now);
  // An answer Preflight makes before authentication (`answer`): charged to the request's client address unless it
  // came from a unix socket peer or an in-process caller, or its Authorization header names a live token (then
  // ctx.principal is set, for the access log), or the store could not be asked; past the budget, the held 429
  // replaces it.
  HttpResponse Unauthenticated(Context& ctx, HttpResponse answer, std::string_view problem);

  ApiOptions options_;
  HandlerEnv env_;
  service::Metrics::Counter* requests_ = nullptr;   // {method, route, code}
  service::Metrics::Histogram* latency_ = nullptr;  // {route}

  std::unique_ptr<service::SetService> sets_;

  std::unique_ptr<AuthFailureBudget> auth_budget_;
  // Principals are tokens and socket peers' uids: far fewer than this; the cap only bounds memory.
  static constexpr size_t kMaxRateLimitedPrincipals = 65536;
  TokenBuckets rate_buckets_;  // requests per principal (rate_limit, rate_burst)
};

}  // namespace iptkit::rest

#endif  // IPTKIT_SRC_REST_API_H_
