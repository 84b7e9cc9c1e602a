// The daemon's own resources: GET /healthz, /metrics, /v1/version and /v1/info.
#include "iptkit/json.h"
#include "src/rest/handlers.h"

namespace iptkit::rest {

// Not ok while starting, or while a duty fails (service.h Health): the store cannot keep changes (its files were
// removed or replaced, or its last write failed: changes are refused with 503 then) or records of the daemon's own
// work wait in memory for it, an owner's state cannot be applied, a TTL expiry or confirm rollback fails, the
// backend cannot commit (a missing tool). No token here: the problems say which duty fails and why (tool, store,
// owner name), never rules.
HttpResponse HealthHandler(const HandlerEnv& env, Call& call) {
  if (Status s = CheckQuery(env, call, {}); !s.ok()) return StatusResponse(call, s);
  const service::Health health = env.service->GetHealth();
  if (health.state == service::Health::State::kStarting) return JsonResponse({{"status", "starting"}}, 503);
  if (health.state == service::Health::State::kOk) return JsonResponse({{"status", "ok"}});
  json::Json problems = json::Json::array();
  for (const service::Health::Problem& p : health.problems) problems.push_back(p.Describe());
  return JsonResponse({{"status", "unhealthy"}, {"problems", problems}}, 503);
}

HttpResponse MetricsHandler(const HandlerEnv& env, Call& call) {
  if (Status s = CheckQuery(env, call, {}); !s.ok()) return StatusResponse(call, s);
  HttpResponse r;
  r.content_type = "text/plain; version=0.0.4; charset=utf-8";
  r.body = env.metrics->Render();
  return r;
}

HttpResponse VersionHandler(const HandlerEnv& env, Call& call) {
  if (Status s = CheckQuery(env, call, {}); !s.ok()) return StatusResponse(call, s);
  return JsonResponse({{"version", env.options->version},
                       {"api", "v1"},
                       {"backend", env.service->backend_name()},
                       {"netns", env.options->netns}});
}

HttpResponse InfoHandler(const HandlerEnv& env, Call& call) {
  if (Status s = CheckQuery(env, call, {}); !s.ok()) return StatusResponse(call, s);
  Result<FirewallInfo> info = env.service->Info();
  if (!info.ok()) return StatusResponse(call, info.status());
  info->netns = env.options->netns;
  return JsonResponse(json::FirewallInfoToJson(*info));
}

}  // namespace iptkit::rest
