// GET /v1/events: Server-Sent Events from ?after=N, Last-Event-ID, or now.
#include "src/rest/handlers.h"

namespace iptkit::rest {

HttpResponse EventsHandler(const HandlerEnv& env, Call& call) {
  if (Status s = CheckQuery(env, call, {"after"}); !s.ok()) return StatusResponse(call, s);
  Result<std::optional<int64_t>> after_param = QueryInt(call.req.query, "after", 0, INT64_MAX);
  if (!after_param.ok()) return StatusResponse(call, after_param.status());
  service::EventBus* events = env.events;
  uint64_t after = events->last_id();
  auto last_event = call.req.headers.find("last-event-id");
  if (*after_param) {
    after = static_cast<uint64_t>(**after_param);
  } else if (last_event != call.req.headers.end() && !last_event->second.empty()) {
    Result<std::optional<int64_t>> id =
        QueryInt({{"Last-Event-ID", last_event->second}}, "Last-Event-ID", 0, INT64_MAX);
    if (!id.ok()) return StatusResponse(call, id.status());
    after = static_cast<uint64_t>(**id);
  }
  // An id from an earlier run of the daemon (ids restart at 1) means "from now".
  if (after > events->last_id()) after = events->last_id();
  // The HTTP layer writes the stream from its I/O loop; no request thread waits for events.
  Result<std::unique_ptr<service::EventBus::Subscription>> sub = events->Subscribe(after);
  if (!sub.ok()) {
    HttpError e = ErrorFromStatus(sub.status());
    e.retry_after_seconds = 5;
    return ErrorResponse(call, e);
  }
  HttpResponse r;
  r.content_type = "text/event-stream";
  r.events = *std::move(sub);
  return r;
}

}  // namespace iptkit::rest
