// EventBus: the daemon's in-memory event stream behind `GET /v1/events` (Server-Sent Events).
//
// Publishers (the writer thread, the drift checker) append events; each gets the next id (1, 2, 3, ...). The bus keeps
// the newest events in a ring bounded by a count and by bytes. Ids restart at 1 with every daemon start.
//
// Two ways to read:
// - WaitAfter polls with the id of the last event seen (the SSE `Last-Event-ID`) and blocks until something newer
//   exists; a reader that fell further behind than the ring reaches is told so (`missed`).
// - Subscribe gives a Subscription: a cursor into the ring for one client, read without blocking by the thread that
//   writes to that client, and woken (SetWaker) when there is more. A subscription copies nothing: the bytes it has
//   not read yet are its backlog in the shared ring. One that falls more than `max_backlog_bytes` behind, or whose
//   unread events leave the ring, is cut: its last Read returns the reason as SSE text (a comment and a `disconnect`
//   event) so the client can resume with Last-Event-ID. Memory is the ring's bound, however many subscribers stall.
//   At most `max_subscribers` subscriptions exist at once.
//
// Thread-safety: all EventBus methods are thread-safe; a Subscription is read by one thread at a time (its waker is
// called from publishers' threads). The bus must outlive its subscriptions.
//
//   EventBus bus({.max_subscribers = 256, .max_backlog_bytes = 1 << 20});
//   bus.Publish("rule_added", R"({"table":"filter","chain":"INPUT"})", NowMs());
//   IPTKIT_ASSIGN_OR_RETURN(auto sub, bus.Subscribe(/*after=*/0));
//   sub->SetWaker([&] { loop.Wake(); });
//   std::string out;
//   if (sub->Read(64 << 10, &out) != EventBus::Subscription::kOpen) Close(out);  // else send `out`, wait for a wake
#ifndef IPTKIT_SRC_SERVICE_EVENTS_H_
#define IPTKIT_SRC_SERVICE_EVENTS_H_

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "iptkit/status.h"

namespace iptkit::service {

struct Event {
  uint64_t id = 0;      // 1, 2, 3, ... in publication order
  int64_t time_ms = 0;  // publisher's clock, milliseconds since the Unix epoch
  std::string type;     // SSE event name, e.g. "rule_added"
  std::string data;     // one-line JSON text
};

struct EventBusOptions {
  size_t capacity = 1024;              // events kept (at least 1)
  size_t max_bytes = 8 << 20;          // bytes of events kept (the newest event is kept whatever its size)
  size_t max_subscribers = 256;        // subscriptions at once; Subscribe beyond: Unavailable
  size_t max_backlog_bytes = 1 << 20;  // SSE bytes a subscription may have unread before it is cut
};

class EventBus {
 public:
  // Keeps the newest `capacity` events (at least 1); other options default.
  explicit EventBus(size_t capacity = 1024);
  explicit EventBus(EventBusOptions options);
  ~EventBus();
  EventBus(const EventBus&) = delete;
  EventBus& operator=(const EventBus&) = delete;

  // Appends an event, wakes every waiter and subscription; returns its id. Ids start at 1 and increase by 1.
  // Publishing after Close() still records the event (readers get it along with closed = true).
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

  class Subscription;
  // A subscription that reads the events after `after` (clamped to last_id()). When some of them left the ring
  // already, or they are more than max_backlog_bytes, it starts with the oldest that fit and its first Read says
  // that events were dropped. Unavailable when max_subscribers subscriptions exist.
  Result<std::unique_ptr<Subscription>> Subscribe(uint64_t after);

  // The id of the newest event; 0 before the first Publish.
  uint64_t last_id() const;
  // Subscriptions that exist now.
  size_t subscribers() const;
  const EventBusOptions& options() const { return options_; }

  // Wakes every waiter and subscription; later waits return closed immediately. Idempotent.
  void Close();

 private:
  struct Entry {
    Event event;
    std::string frame;   // FormatSse(event)
    uint64_t start = 0;  // SSE bytes published before this event
    size_t cost = 0;     // bytes counted against max_bytes
  };
  // The ring index of event `id`, which must be held.
  size_t IndexOf(uint64_t id) const { return static_cast<size_t>(id - ring_.front().event.id); }
  // The SSE-byte offset at which event `id` starts (total_bytes_ for the next event to come).
  uint64_t OffsetOf(uint64_t id) const;

  const EventBusOptions options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Entry> ring_;               // GUARDED_BY(mu_); ids consecutive, ring_.back().id == last_id_
  size_t ring_bytes_ = 0;                // GUARDED_BY(mu_)
  uint64_t total_bytes_ = 0;             // GUARDED_BY(mu_); SSE bytes of every event published
  uint64_t last_id_ = 0;                 // GUARDED_BY(mu_)
  bool closed_ = false;                  // GUARDED_BY(mu_)
  std::set<Subscription*> subscribers_;  // GUARDED_BY(mu_)
};

// One client's cursor into the bus (see EventBus). Destroying it unsubscribes.
class EventBus::Subscription {
 public:
  enum State {
    kOpen,      // more may come: wait for the waker
    kCut,       // the subscriber fell behind: the text appended last is the reason; close the stream after it
    kFinished,  // the bus was closed and everything was read: close the stream
  };
  ~Subscription();
  Subscription(const Subscription&) = delete;
  Subscription& operator=(const Subscription&) = delete;

  // Called whenever Read has something new to say (an event, a cut, Close): from publishers' threads, with the
  // bus's lock held, so it must be quick and must not call into the bus. Replaces the previous waker.
  void SetWaker(std::function<void()> wake);

  // Appends SSE text to *out: the events after the cursor, oldest first, stopping once about max_bytes were
  // appended (always whole frames, at least one), preceded by a comment when events were dropped before this
  // subscription could read them. On kCut, what was appended is the disconnect notice.
  State Read(size_t max_bytes, std::string* out);
  // Whether this subscription was cut (Read will say why), without reading.
  bool cut() const;
  // Cuts it for a reason of the reader's (a client that accepts no data): Read appends the notice with `reason`.
  // No effect when it was cut already.
  void Cut(std::string reason);
  // The id of the last event Read appended (or the `after` it started from).
  uint64_t last_id() const { return next_id_ - 1; }

 private:
  friend class EventBus;
  explicit Subscription(EventBus* bus) : bus_(bus) {}
  EventBus* const bus_;
  // GUARDED_BY(bus_->mu_):
  std::function<void()> wake_;
  uint64_t next_id_ = 1;      // the next event to read
  uint64_t next_offset_ = 0;  // its SSE-byte offset: total_bytes_ - next_offset_ is the backlog
  bool missed_ = false;       // events were dropped before the first Read
  bool cut_ = false;
  std::string cut_reason_;
};

// One SSE message: "id: N\nevent: TYPE\ndata: DATA\n\n". A CR or LF in TYPE or DATA would end the field (or forge
// another one), so each is replaced by a space.
std::string FormatSse(const Event& e);

}  // namespace iptkit::service

#endif  // IPTKIT_SRC_SERVICE_EVENTS_H_
