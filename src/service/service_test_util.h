// Test helpers for the service: one in-memory "kernel" (FakeBackend) shared by the writer's and the reader's
// backends, with hooks to reject commits like the kernel does and to change it behind the daemon's back.
#ifndef IPTKIT_SRC_SERVICE_SERVICE_TEST_UTIL_H_
#define IPTKIT_SRC_SERVICE_SERVICE_TEST_UTIL_H_

#include <unistd.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "iptkit/dialect.h"
#include "src/backend/fake/shared_fake.h"

namespace iptkit::service::test {

// The shared kernel (src/backend/fake/shared_fake.h) with helpers to look at it and to change it behind the
// daemon's back.
struct FakeKernel : backend::SharedFake {
  std::string Save(Family family) {
    std::lock_guard<std::mutex> lock(mu);
    Result<Ruleset> rs = fake.Read(family);
    return rs.ok() ? FormatSave(*rs) : rs.status().ToString();
  }
  // A foreign writer (someone running iptables by hand).
  Status Foreign(Family family, const std::string& table, std::vector<backend::TableOp> ops) {
    std::lock_guard<std::mutex> lock(mu);
    backend::TableBatch batch;
    batch.family = family;
    batch.table = table;
    batch.ops = std::move(ops);
    return fake.Commit(batch);
  }
};

// A temporary directory removed by the destructor.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "iptkit-service-XXXXXX").string();
    path_ = mkdtemp(tmpl.data()) != nullptr ? tmpl : "";
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace iptkit::service::test

#endif  // IPTKIT_SRC_SERVICE_SERVICE_TEST_UTIL_H_
