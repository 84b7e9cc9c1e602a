// SharedFake: one in-memory "kernel" (FakeBackend) behind a mutex, reached through any number of Backend
// handles. The daemon needs two backends over the same netns (its writer's and its reader's); with the fake
// backend they must see the same state, so both are handles of one SharedFake.
// Thread-safety: every handle call takes the mutex; handles may be used from different threads.
//
//   auto kernel = std::make_shared<SharedFake>();
//   std::unique_ptr<Backend> writer = NewSharedFakeHandle(kernel), reader = NewSharedFakeHandle(kernel);
#ifndef IPTKIT_SRC_BACKEND_FAKE_SHARED_FAKE_H_
#define IPTKIT_SRC_BACKEND_FAKE_SHARED_FAKE_H_

#include <functional>
#include <memory>
#include <mutex>

#include "src/backend/fake/fake_backend.h"

namespace iptkit::backend {

struct SharedFake {
  std::mutex mu;
  FakeBackend fake;
  // Test hook, called under `mu` before each commit: a non-OK Status rejects the batch as the kernel would at
  // COMMIT (nothing changes).
  std::function<Status(const TableBatch&)> reject;
  int commits = 0;  // successful commits through handles
};

std::unique_ptr<Backend> NewSharedFakeHandle(std::shared_ptr<SharedFake> shared);

}  // namespace iptkit::backend

#endif  // IPTKIT_SRC_BACKEND_FAKE_SHARED_FAKE_H_
