#include "src/fleet/prefix_watcher.h"

#include <algorithm>
#include <utility>

namespace iptkit::fleet {

PrefixWatcher::PrefixWatcher(EtcdClient* etcd, std::string prefix, Callbacks callbacks, Options options)
    : etcd_(etcd), prefix_(std::move(prefix)), callbacks_(std::move(callbacks)), options_(options) {}

PrefixWatcher::~PrefixWatcher() { Stop(); }

void PrefixWatcher::Start() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = false;
  }
  etcd_->ResetInterrupt();
  thread_ = std::thread([this] { Run(); });
}

void PrefixWatcher::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  etcd_->Interrupt();
  if (thread_.joinable()) thread_.join();
}

bool PrefixWatcher::Sleep(std::chrono::milliseconds d) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, d, [&] { return stop_; });
  return !stop_;
}

Status PrefixWatcher::Resync(Snapshot* state) {
  resyncs_.fetch_add(1);
  IPTKIT_ASSIGN_OR_RETURN(RangeResult r, etcd_->Range(prefix_, PrefixEnd(prefix_)));
  Snapshot next;
  next.revision = r.revision;
  next.resync = true;
  for (KeyValue& kv : r.kvs) {
    next.changed.push_back(kv.key);
    next.kvs.emplace(kv.key, std::move(kv));
  }
  for (const auto& [key, kv] : state->kvs) {
    if (!next.kvs.contains(key)) next.changed.push_back(key);  // deleted meanwhile
  }
  *state = std::move(next);
  if (callbacks_.on_state) callbacks_.on_state(*state);
  return Status::Ok();
}

Status PrefixWatcher::Follow(Snapshot* state) {
  IPTKIT_ASSIGN_OR_RETURN(auto watch, etcd_->Watch(prefix_, PrefixEnd(prefix_), state->revision + 1));
  if (callbacks_.on_connection) callbacks_.on_connection(Status::Ok());
  for (;;) {
    IPTKIT_ASSIGN_OR_RETURN(WatchStream::Message m, watch->Next());
    if (m.canceled) {
      return Status::FailedPrecondition("etcd: the watch was canceled: " + m.cancel_reason)
          .WithReason(m.compact_revision > 0 ? "compacted" : "canceled");
    }
    if (m.events.empty()) continue;  // progress notifications
    state->changed.clear();
    state->resync = false;
    for (WatchEvent& e : m.events) {
      state->changed.push_back(e.kv.key);
      state->revision = std::max(state->revision, e.kv.mod_revision);
      if (e.type == WatchEvent::Type::kDelete) {
        state->kvs.erase(e.kv.key);
        state->deleted[e.kv.key] = e.kv.mod_revision > 0 ? e.kv.mod_revision : m.revision;
        if (state->deleted.size() > kMaxDeleted) {
          state->deleted.erase(std::min_element(state->deleted.begin(), state->deleted.end(),
                                                [](const auto& a, const auto& b) { return a.second < b.second; }));
        }
      } else {
        std::string key = e.kv.key;
        state->deleted.erase(key);
        state->kvs[key] = std::move(e.kv);
      }
    }
    std::sort(state->changed.begin(), state->changed.end());
    state->changed.erase(std::unique(state->changed.begin(), state->changed.end()), state->changed.end());
    if (callbacks_.on_state) callbacks_.on_state(*state);
  }
}

void PrefixWatcher::Run() {
  Snapshot state;
  std::chrono::milliseconds backoff = options_.initial_backoff;
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return;
    }
    Status s = Resync(&state);
    if (s.ok()) {
      backoff = options_.initial_backoff;
      s = Follow(&state);
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return;
    }
    if (s.details().reason == "compacted") {  // resync at once
      compactions_.fetch_add(1);
      continue;
    }
    if (callbacks_.on_connection) callbacks_.on_connection(s);
    if (!Sleep(backoff)) return;
    backoff = std::min(backoff * 2, options_.max_backoff);
  }
}

}  // namespace iptkit::fleet
