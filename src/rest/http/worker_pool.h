// WorkerPool: a bounded set of threads that run the request handlers of iptkitd's HTTP server (Api::Preflight and
// Api::Handle, which may block waiting for the writer thread) so that the I/O loops never block.
//
// Threads are started on demand up to `max_threads` and kept; jobs beyond that wait in a FIFO queue. The queue is
// bounded by the caller: the server submits at most one job per connection at a time, and connections are capped.
// Thread-safety: Submit from any thread; Stop from one thread, once (the destructor calls it).
//
//   WorkerPool pool("http", 64);
//   pool.Submit([&] { Answer(api->Handle(request)); });
//   pool.Stop();  // waits for running jobs; queued ones are dropped
#ifndef IPTKIT_SRC_REST_HTTP_WORKER_POOL_H_
#define IPTKIT_SRC_REST_HTTP_WORKER_POOL_H_

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace iptkit::rest::http {

class WorkerPool {
 public:
  WorkerPool(std::string name, size_t max_threads);
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Queues `job`; false (and `job` dropped) after Stop.
  bool Submit(std::function<void()> job);
  // Refuses new jobs, drops queued ones, waits for the running ones to return and joins the threads.
  void Stop();

  size_t threads() const;
  size_t busy() const;

 private:
  void Work();

  const std::string name_;
  const size_t max_threads_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;  // GUARDED_BY(mu_)
  std::vector<std::thread> threads_;        // GUARDED_BY(mu_)
  size_t idle_ = 0;                         // GUARDED_BY(mu_)
  bool stopped_ = false;                    // GUARDED_BY(mu_)
};

}  // namespace iptkit::rest::http

#endif  // IPTKIT_SRC_REST_HTTP_WORKER_POOL_H_
