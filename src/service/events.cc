#include "src/service/events.h"

#include <algorithm>
#include <string_view>

namespace iptkit::service {

EventBus::EventBus(size_t capacity) : capacity_(std::max<size_t>(capacity, 1)) {}

uint64_t EventBus::Publish(std::string type, std::string data, int64_t time_ms) {
  uint64_t id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    id = ++last_id_;
    ring_.push_back(Event{.id = id, .time_ms = time_ms, .type = std::move(type), .data = std::move(data)});
    if (ring_.size() > capacity_) ring_.pop_front();
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
  const uint64_t oldest = ring_.front().id;
  batch.missed = after + 1 < oldest;
  // Ids in the ring are consecutive, so the first one > after sits at a computed offset.
  const size_t first = after < oldest ? 0 : static_cast<size_t>(after + 1 - oldest);
  const size_t n = std::min(max, ring_.size() - first);
  batch.events.assign(ring_.begin() + first, ring_.begin() + first + n);
  return batch;
}

uint64_t EventBus::last_id() const {
  std::lock_guard<std::mutex> lock(mu_);
  return last_id_;
}

void EventBus::Close() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
  }
  cv_.notify_all();
}

namespace {

void AppendOneLine(std::string* out, std::string_view s) {
  for (char c : s) *out += (c == '\r' || c == '\n') ? ' ' : c;
}

}  // namespace

std::string FormatSse(const Event& e) {
  std::string out = "id: " + std::to_string(e.id) + "\nevent: ";
  AppendOneLine(&out, e.type);
  out += "\ndata: ";
  AppendOneLine(&out, e.data);
  out += "\n\n";
  return out;
}

}  // namespace iptkit::service
