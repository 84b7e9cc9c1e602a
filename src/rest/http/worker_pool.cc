#include "src/rest/http/worker_pool.h"

#include <pthread.h>

#include <algorithm>

namespace iptkit::rest::http {

WorkerPool::WorkerPool(std::string name, size_t max_threads)
    : name_(std::move(name)), max_threads_(std::max<size_t>(1, max_threads)) {}

WorkerPool::~WorkerPool() { Stop(); }

bool WorkerPool::Submit(std::function<void()> job) {
  std::lock_guard<std::mutex> lock(mu_);
  if (stopped_) return false;
  jobs_.push_back(std::move(job));
  if (jobs_.size() > idle_ && threads_.size() < max_threads_) {
    threads_.emplace_back([this] { Work(); });
    // Thread names show in top -H and /proc/PID/task/*/comm (at most 15 bytes).
    pthread_setname_np(threads_.back().native_handle(), name_.substr(0, 15).c_str());
  } else {
    cv_.notify_one();
  }
  return true;
}

void WorkerPool::Stop() {
  std::vector<std::thread> threads;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_ && threads_.empty()) return;
    stopped_ = true;
    jobs_.clear();
    threads.swap(threads_);
  }
  cv_.notify_all();
  for (std::thread& t : threads) {
    if (t.joinable()) t.join();
  }
}

size_t WorkerPool::threads() const {
  std::lock_guard<std::mutex> lock(mu_);
  return threads_.size();
}

size_t WorkerPool::busy() const {
  std::lock_guard<std::mutex> lock(mu_);
  return threads_.size() > idle_ ? threads_.size() - idle_ : 0;
}

void WorkerPool::Work() {
  for (;;) {
    std::function<void()> job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      ++idle_;
      cv_.wait(lock, [&] { return stopped_ || !jobs_.empty(); });
      --idle_;
      if (stopped_) return;
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    job();
  }
}

}  // namespace iptkit::rest::http
