// EventBus: the daemon's in-memory event stream behind `GET /v1/events` (Server-Sent Events).
//
// Publishers (the writer thread, the drift checker) append events; each gets the next id (1, 2, 3, ...). The bus keeps
// only the newest `capacity` events in a ring. Readers poll with the id of the last event they have seen — the SSE
// `Last-Event-ID` — and block until something newer exists; a reader that fell further behind than the ring reaches
// is told so (`missed`) and continues from the oldest event still held. Ids restart at 1 with every daemon start.
//
// Thread-safety: all methods are thread-safe; any number of publishers and waiters may run at once.
//
//   EventBus bus(1024);
//   bus.Publish("rule_added", R"({"table":"filter","chain":"INPUT"})", NowMs());
//   uint64_t seen = 0;  // or the client's Last-Event-ID
//   for (;;) {
//     EventBus::Batch batch = bus.WaitAfter(seen, std::chrono::seconds(15));
//     if (batch.missed) SendComment(": some events were dropped");
//     for (const Event& e : batch.events) { Send(FormatSse(e)); seen = e.id; }
//     if (batch.closed) break;
//     if (batch.events.empty()) SendComment(": keep-alive");
//   }
#ifndef IPTKIT_SRC_SERVICE_EVENTS_H_
#define IPTKIT_SRC_SERVICE_EVENTS_H_

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <vector>

namespace iptkit::service {

struct Event {
  uint64_t id = 0;      // 1, 2, 3, ... in publication order
  int64_t time_ms = 0;  // publisher's clock, milliseconds since the Unix epoch
  std::string type;     // SSE event name, e.g. "rule_added"
  std::string data;     // one-line JSON text
};

class EventBus {
 public:
  // Keeps the newest `capacity` events (at least 1).
  explicit EventBus(size_t capacity = 1024);
  EventBus(const EventBus&) = delete;
  EventBus& operator=(const EventBus&) = delete;

  // Appends an event and wakes every waiter; returns its id. Ids start at 1 and increase by 1. Publishing after
  // Close() still records the event (readers get it along with closed = true).
  uint64_t Publish(std::string type, std::string data, int64_t time_ms);

  struct Batch {
    std::vector<Event> events;  // id > after, oldest first, consecutive ids
    bool missed = false;        // events with ids after `after` were dropped from the ring before this read
    bool closed = false;        // Close() was called: stop reading once `events` are delivered
  };

  // Blocks until an event with id > after exists, `timeout` passes, or Close() is called; returns up to `max` events
  // with id > after, oldest first (empty on timeout). Once closed, returns at once with whatever events remain and
  // closed = true. timeout <= 0 never blocks. An `after` beyond last_id() (a Last-Event-ID from a previous daemon
  // run) simply waits for that id to be reached; callers that want to restart such a reader compare with last_id().
  Batch WaitAfter(uint64_t after, std::chrono::milliseconds timeout, size_t max = 256);

  // The id of the newest event; 0 before the first Publish.
  uint64_t last_id() const;

  // Wakes every waiter; later waits return closed immediately. Idempotent.
  void Close();

 private:
  const size_t capacity_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Event> ring_;  // GUARDED_BY(mu_); ids consecutive, ring_.back().id == last_id_
  uint64_t last_id_ = 0;    // GUARDED_BY(mu_)
  bool closed_ = false;     // GUARDED_BY(mu_)
};

// One SSE message: "id: N\nevent: TYPE\ndata: DATA\n\n". A CR or LF in TYPE or DATA would end the field (or forge
// another one), so each is replaced by a space.
std::string FormatSse(const Event& e);

}  // namespace iptkit::service

#endif  // IPTKIT_SRC_SERVICE_EVENTS_H_
