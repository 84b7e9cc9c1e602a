// PrefixWatcher: keeps an in-memory copy of every key under a prefix in step with etcd, level-triggered: a Range
// (the snapshot and its revision), then one watch from revision+1; each watch message updates the copy and hands
// the whole copy to the callback. A `canceled` watch (its start revision was compacted) is a resync: Range again,
// watch again from the new header.revision+1. A broken stream or an unreachable etcd is retried with backoff
// (100 ms doubling, capped at max_backoff: 2 s) and a resync; meanwhile the callback is not called, so the caller
// keeps what it applied last.
//
// Keys changed by one etcd transaction arrive in one watch message and so in one callback.
// Thread-safety: Start runs a thread of its own that makes every callback; Stop (or the destructor) interrupts
// and joins it. The callbacks must not call Stop.
//
//   PrefixWatcher w(etcd.get(), "/p/groups/web/", {.on_state = [&](const PrefixWatcher::Snapshot& s) {...}});
//   w.Start();
#ifndef IPTKIT_SRC_FLEET_PREFIX_WATCHER_H_
#define IPTKIT_SRC_FLEET_PREFIX_WATCHER_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "iptkit/status.h"
#include "src/fleet/etcd_client.h"

namespace iptkit::fleet {

class PrefixWatcher {
 public:
  struct Snapshot {
    int64_t revision = 0;                 // the store revision this copy is of
    std::map<std::string, KeyValue> kvs;  // key -> value, every key under the prefix
    std::vector<std::string> changed;     // keys that changed since the previous callback (all keys after a resync)
    bool resync = false;                  // this copy comes from a Range (start, reconnect, compaction)
    // Keys seen deleted by the watch since the last resync, with the revision of their deletion (so that a caller
    // can tell which etcd transaction removed a key); a key put again leaves the map. Bounded (kMaxDeleted: the
    // oldest go first); a key deleted while no watch was up is not in it.
    std::map<std::string, int64_t> deleted;
  };
  struct Callbacks {
    std::function<void(const Snapshot&)> on_state;
    // Called when etcd stops or starts answering: OK when connected, the reason otherwise.
    std::function<void(const Status&)> on_connection;
  };
  static constexpr size_t kMaxDeleted = 10000;
  struct Options {
    std::chrono::milliseconds initial_backoff = std::chrono::milliseconds(100);
    std::chrono::milliseconds max_backoff = std::chrono::seconds(2);
  };

  // `etcd` must outlive the watcher; the watcher uses its Interrupt to stop (do not share the client with calls
  // that must go on after Stop).
  PrefixWatcher(EtcdClient* etcd, std::string prefix, Callbacks callbacks, Options options);
  PrefixWatcher(EtcdClient* etcd, std::string prefix, Callbacks callbacks)
      : PrefixWatcher(etcd, std::move(prefix), std::move(callbacks), Options()) {}
  ~PrefixWatcher();
  void Start();
  void Stop();

  // How many resyncs (Ranges) happened: start, reconnects, compactions (tests).
  int64_t resyncs() const { return resyncs_.load(); }
  // How many of them were because etcd canceled the watch for a compacted start revision.
  int64_t compactions() const { return compactions_.load(); }

 private:
  void Run();
  Status Resync(Snapshot* state);
  Status Follow(Snapshot* state);
  bool Sleep(std::chrono::milliseconds d);

  EtcdClient* etcd_;
  std::string prefix_;
  Callbacks callbacks_;
  Options options_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;  // guarded by mu_
  std::atomic<int64_t> resyncs_{0};
  std::atomic<int64_t> compactions_{0};
};

}  // namespace iptkit::fleet

#endif  // IPTKIT_SRC_FLEET_PREFIX_WATCHER_H_
