// The daemon's own resources: GET /healthz, /metrics, /v1/version and /v1/info.
#include "iptkit/json.h"
#include "src/rest/handlers.h"

namespace iptkit::rest {

// Not ok while starting, or while the store cannot keep changes (its files were removed or replaced, or the last
// write failed): changes are refused then (503), so the daemon is not healthy.
HttpResponse HealthHandler(const HandlerEnv& env, Call& call) {
  if (Status s = CheckQuery(env, call, {}); !s.ok()) return StatusResponse(call, s);
  if (!env.service->started()) return JsonResponse({{"status", "starting"}}, 503);
  const store::StoreHealth store = env.store->Health();
  if (!store.ok()) return JsonResponse({{"status", "unhealthy"}, {"problems", {"store: " + store.problem}}}, 503);
  return JsonResponse({{"status", "ok"}});
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
