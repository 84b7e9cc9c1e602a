#include "src/service/events.h"

#include <algorithm>
#include <string_view>

namespace iptkit::service {
namespace {

// What one ring entry costs beyond its strings (the Entry, the deque slot, allocator overhead).
constexpr size_t kEntryOverhead = 128;

void AppendOneLine(std::string* out, std::string_view s) {
  for (char c : s) *out += (c == '\r' || c == '\n') ? ' ' : c;
}

}  // namespace

EventBus::EventBus(size_t capacity) : EventBus(EventBusOptions{.capacity = capacity}) {}

EventBus::EventBus(EventBusOptions options)
    : options_([&] {
        options.capacity = std::max<size_t>(options.capacity, 1);
        return options;
      }()) {}

EventBus::~EventBus() = default;

uint64_t EventBus::OffsetOf(uint64_t id) const {
  if (ring_.empty() || id > last_id_) return total_bytes_;
  return ring_[IndexOf(id)].start;
}

uint64_t EventBus::Publish(std::string type, std::string data, int64_t time_ms) {
  uint64_t id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    id = ++last_id_;
    Entry entry;
    entry.event = Event{.id = id, .time_ms = time_ms, .type = std::move(type), .data = std::move(data)};
    entry.frame = FormatSse(entry.event);
    entry.start = total_bytes_;
    entry.cost = entry.frame.size() + entry.event.type.size() + entry.event.data.size() + kEntryOverhead;
    total_bytes_ += entry.frame.size();
    ring_bytes_ += entry.cost;
    ring_.push_back(std::move(entry));
    while (ring_.size() > 1 && (ring_.size() > options_.capacity || ring_bytes_ > options_.max_bytes)) {
      ring_bytes_ -= ring_.front().cost;
      ring_.pop_front();
    }
    const uint64_t oldest = ring_.front().event.id;
    for (Subscription* s : subscribers_) {
      if (!s->cut_) {
        const uint64_t backlog = total_bytes_ - s->next_offset_;
        if (s->next_id_ < oldest) {
          s->cut_ = true;
          s->cut_reason_ = "events it had not received yet were dropped from the daemon's buffer";
        } else if (backlog > options_.max_backlog_bytes) {
          s->cut_ = true;
          s->cut_reason_ = "it fell " + std::to_string(backlog) + " bytes of events behind (the limit is " +
                           std::to_string(options_.max_backlog_bytes) + ")";
        }
      }
      if (s->wake_) s->wake_();
    }
  }
  cv_.notify_all();
  return id;
}

EventBus::Batch EventBus::WaitAfter(uint64_t after, std::chrono::milliseconds timeout, size_t max) {
  const auto deadline = std::chrono::steady_clock::now() + std::max(timeout, std::chrono::milliseconds(0));
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_until(lock, deadline, [&] { return closed_ || last_id_ > after; });

  Batch batch;
  batch.closed = closed_;
  if (last_id_ <= after || ring_.empty()) return batch;
  const uint64_t oldest = ring_.front().event.id;
  batch.missed = after + 1 < oldest;
  // Ids in the ring are consecutive, so the first one > after sits at a computed offset.
  const size_t first = after < oldest ? 0 : static_cast<size_t>(after + 1 - oldest);
  const size_t n = std::min(max, ring_.size() - first);
  batch.events.reserve(n);
  for (size_t i = first; i < first + n; ++i) batch.events.push_back(ring_[i].event);
  return batch;
}

Result<std::unique_ptr<EventBus::Subscription>> EventBus::Subscribe(uint64_t after) {
  std::lock_guard<std::mutex> lock(mu_);
  if (subscribers_.size() >= options_.max_subscribers) {
    return Status::Unavailable(std::to_string(subscribers_.size()) +
                               " event streams are open, the most this daemon serves at once (max_event_streams)");
  }
  std::unique_ptr<Subscription> s(new Subscription(this));
  uint64_t next = std::min(after, last_id_) + 1;
  if (!ring_.empty() && next < ring_.front().event.id) {
    s->missed_ = true;
    next = ring_.front().event.id;
  }
  // Start no further back than the backlog bound allows.
  while (next <= last_id_ && total_bytes_ - OffsetOf(next) > options_.max_backlog_bytes) {
    s->missed_ = true;
    ++next;
  }
  s->next_id_ = next;
  s->next_offset_ = OffsetOf(next);
  subscribers_.insert(s.get());
  return s;
}

uint64_t EventBus::last_id() const {
  std::lock_guard<std::mutex> lock(mu_);
  return last_id_;
}

size_t EventBus::subscribers() const {
  std::lock_guard<std::mutex> lock(mu_);
  return subscribers_.size();
}

void EventBus::Close() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    for (Subscription* s : subscribers_) {
      if (s->wake_) s->wake_();
    }
  }
  cv_.notify_all();
}

// ---- Subscription ----

EventBus::Subscription::~Subscription() {
  std::lock_guard<std::mutex> lock(bus_->mu_);
  bus_->subscribers_.erase(this);
}

void EventBus::Subscription::SetWaker(std::function<void()> wake) {
  std::lock_guard<std::mutex> lock(bus_->mu_);
  wake_ = std::move(wake);
}

bool EventBus::Subscription::cut() const {
  std::lock_guard<std::mutex> lock(bus_->mu_);
  return cut_;
}

void EventBus::Subscription::Cut(std::string reason) {
  std::lock_guard<std::mutex> lock(bus_->mu_);
  if (cut_) return;
  cut_ = true;
  cut_reason_ = std::move(reason);
}

EventBus::Subscription::State EventBus::Subscription::Read(size_t max_bytes, std::string* out) {
  std::lock_guard<std::mutex> lock(bus_->mu_);
  const std::deque<Entry>& ring = bus_->ring_;
  if (!cut_ && !ring.empty() && next_id_ < ring.front().event.id) {
    cut_ = true;
    cut_reason_ = "events it had not received yet were dropped from the daemon's buffer";
  }
  if (cut_) {
    const std::string resume = std::to_string(last_id());
    *out +=
        ": disconnected: this stream was too slow: " + cut_reason_ + "; reconnect with Last-Event-ID: " + resume + "\n";
    std::string reason;
    for (char c : cut_reason_) {
      if (c == '"' || c == '\\') reason += '\\';
      reason += c;
    }
    *out += "event: disconnect\ndata: {\"reason\":\"slow_consumer\",\"message\":\"" + reason +
            "\",\"last_event_id\":" + resume + "}\n\n";
    return kCut;
  }
  if (missed_) {
    *out += ": some events were dropped from the buffer before they could be sent\n\n";
    missed_ = false;
  }
  const size_t start = out->size();
  while (next_id_ <= bus_->last_id_ && (out->size() == start || out->size() - start < max_bytes)) {
    const Entry& e = ring[bus_->IndexOf(next_id_)];
    *out += e.frame;
    next_offset_ += e.frame.size();
    ++next_id_;
  }
  if (bus_->closed_ && next_id_ > bus_->last_id_) return kFinished;
  return kOpen;
}

std::string FormatSse(const Event& e) {
  std::string out = "id: " + std::to_string(e.id) + "\nevent: ";
  AppendOneLine(&out, e.type);
  out += "\ndata: ";
  AppendOneLine(&out, e.data);
  out += "\n\n";
  return out;
}

}  // namespace iptkit::service
