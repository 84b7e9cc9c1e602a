// EventLoop: one I/O thread of iptkitd's HTTP server (src/rest/http_server.h). It accepts connections from the
// listening sockets it shares with the other loops (EPOLLEXCLUSIVE), and runs each connection's state machine
// (TLS handshake, head, preflight, body, handler, answer, event stream, lingering close) on non-blocking sockets with
// level-triggered epoll. Handlers run on a WorkerPool; while one runs, its worker owns the connection (answers on the
// socket itself, takes a body or the next keep-alive request that is already there) and then hands it back through a
// mailbox and an eventfd. Changes of rules (Api::Inline) are run by the loop itself without a worker: the handler
// queues the change for the writer and returns, and the writer's answer comes back through the same mailbox (one
// wake-up of the loop for a whole group commit's answers, instead of one blocked worker woken per request).
// Every limit of the server is enforced here, before more of a request is read.
// Thread-safety: Run on one thread; Wake and Deliver from any thread.
#ifndef IPTKIT_SRC_REST_HTTP_EVENT_LOOP_H_
#define IPTKIT_SRC_REST_HTTP_EVENT_LOOP_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "iptkit/status.h"
#include "src/base/unique_fd.h"
#include "src/rest/api.h"
#include "src/rest/http/request_parser.h"
#include "src/rest/http/transport.h"
#include "src/rest/http/worker_pool.h"
#include "src/rest/http_server.h"

namespace iptkit::rest::http {

using Clock = std::chrono::steady_clock;

struct ListenSocket {
  base::UniqueFd fd;
  bool unix_socket = false;
  bool tls = false;
};

class EventLoop;

// What the loops of one server share. Set up by HttpServer::Start before the loops run; the counters are updated
// by every loop.
struct ServerShared {
  Api* api = nullptr;
  HttpServerOptions options;
  ParseLimits limits;
  std::unique_ptr<TlsContext> tls;
  std::unique_ptr<WorkerPool> tcp_workers;
  std::unique_ptr<WorkerPool> unix_workers;
  // max_connections and max_socket_connections, fitted to the descriptor limit (RLIMIT_NOFILE, which may change
  // while the daemon runs: prlimit(1)) minus fixed_descriptors. Refreshed by RefreshCaps.
  std::atomic<size_t> tcp_cap{0};
  std::atomic<size_t> unix_cap{0};
  uint64_t fixed_descriptors = 0;
  std::atomic<uint64_t> descriptor_limit{0};
  // Reads RLIMIT_NOFILE and recomputes the caps when it changed; returns the limit.
  uint64_t RefreshCaps();
  size_t linger_bytes = 8 << 20;  // what a lingering close discards at most
  std::atomic<size_t> tcp_open{0};
  std::atomic<size_t> unix_open{0};
  std::mutex peers_mu;
  std::map<std::string, size_t> peers;  // GUARDED_BY(peers_mu): open TCP connections per client address
  std::atomic<bool> stopping{false};
  // Every loop of the server (set before they run), and the turn of the next accepted connection: connections are
  // spread over the loops in turn, whichever loop accepted them.
  std::vector<EventLoop*> loops;
  std::atomic<size_t> next_loop{0};

  service::Metrics::Gauge* connections = nullptr;   // {listener}: "tcp", "unix"
  service::Metrics::Gauge* streams = nullptr;       // open event streams
  service::Metrics::Counter* limit_hits = nullptr;  // {limit}
  void Hit(const char* limit) {
    if (limit_hits != nullptr) limit_hits->Inc({limit});
  }
};

class EventLoop {
 public:
  EventLoop(ServerShared* shared, std::vector<const ListenSocket*> listeners);
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // epoll, the eventfd, the listeners. Before Run.
  Status Init();
  // Serves until ServerShared::stopping is set (then Wake): closes what it can at once, gives requests in a worker
  // a short grace, closes the rest, and returns.
  void Run();
  void Wake();

  // A worker hands connection `conn` back (its state says what comes next), with the answer when it is an event
  // stream (streams are written by the loop).
  struct Result {
    uint64_t conn = 0;
    bool stream = false;
    HttpResponse response;
    // The deferred answer of a request the loop handled itself (Api::HandleAsync); made and sent by the loop.
    Api::Answer answer;
    // `response` has a hold (HttpResponse::hold): the loop sends it when the hold is over.
    bool held = false;
  };
  void Deliver(Result result);

 private:
  struct Connection;
  enum class Job { kWhole, kPreflight, kHandle };
  enum class Prepared { kNeedMore, kProblem, kWhole, kPreflight };

  void Accept(size_t listener);
  // Takes a new connection into this loop's epoll set (Accept's, or one another loop accepted for it).
  void Register(std::unique_ptr<Connection> c);
  void PauseAccepting();
  void OnEvent(Connection& c, uint32_t events);
  void DoHandshake(Connection& c);
  void DoRead(Connection& c);
  void DoWrite(Connection& c);
  void Advance(Connection& c);
  Prepared Prepare(Connection& c, HttpProblem* problem, const char** limit);
  void StartRequest(Connection& c);
  // Runs an Api::Inline request on the loop: answers it now, or leaves it waiting (kWaiting) for its answer.
  void HandleInline(Connection& c);
  void Submit(Connection& c, Job job);
  void OnResult(Result result);
  void Serialize(Connection& c, HttpResponse response);
  void Respond(Connection& c, HttpResponse response);
  // On a worker, owning the connection: runs the request (and those the client sends right after it).
  Result RunAway(Connection& c, Job job);
  // The answer to the request in `c` (false: admitted, the body is still on its way).
  bool Compute(Connection& c, Job job, HttpResponse* response);
  void WriteDirect(Connection& c);
  // Waits briefly for the next request's bytes; whether some came.
  bool ReadAhead(Connection& c);
  void RespondProblem(Connection& c, const HttpProblem& problem, const char* limit);
  // A head refused before it reached the Api (400, 414, 431, 408): charged to the TCP client's budget of failed
  // authentications (Api::ChargeRefusedHead); the held 429 to send instead past it.
  std::optional<HttpResponse> ChargeRefusedHead(const Connection& c, const HttpProblem& problem);
  // RespondProblem for a refused head, or the held 429.
  void RespondRefusedHead(Connection& c, const HttpProblem& problem, const char* limit);
  void OnWritten(Connection& c);
  void PumpStream(Connection& c);
  void StartLinger(Connection& c);
  void CheckTimers();
  void UpdateInterest(Connection& c);
  void Close(Connection& c);
  void BeginStop();
  bool ReadWanted(const Connection& c) const;

  ServerShared* const s_;
  const std::vector<const ListenSocket*> listeners_;
  base::UniqueFd epoll_;
  base::UniqueFd wake_;
  std::atomic<bool> woken_{false};
  std::atomic<bool> events_pending_{false};  // an event subscription has something new
  // Results for the loop. Shared with the deferred answers of inline requests, which may come after the loop is gone
  // (the service answers what it had queued): then `loop` is null and they are dropped.
  struct Mailbox {
    std::mutex mu;
    std::vector<Result> results;                       // GUARDED_BY(mu)
    std::vector<std::unique_ptr<Connection>> adopted;  // GUARDED_BY(mu): accepted by another loop for this one
    EventLoop* loop = nullptr;                         // GUARDED_BY(mu)
    void Post(Result result);
    void Adopt(std::unique_ptr<Connection> c);
  };
  std::shared_ptr<Mailbox> mailbox_;

  std::unordered_map<uint64_t, std::unique_ptr<Connection>> conns_;
  std::vector<uint64_t> closed_;  // closed this round, erased at its end
  uint64_t next_id_;
  bool accepting_paused_ = false;
  Clock::time_point accept_resume_;
  bool stop_begun_ = false;
  Clock::time_point stop_deadline_;
};

}  // namespace iptkit::rest::http

#endif  // IPTKIT_SRC_REST_HTTP_EVENT_LOOP_H_
