// Test-only: a named network namespace (`ip netns add`) for backend tests, deleted by the destructor (also when
// a test fails), with helpers to run tools inside it. Root only; callers skip when !ok().
#ifndef IPTKIT_SRC_BACKEND_TEST_NETNS_H_
#define IPTKIT_SRC_BACKEND_TEST_NETNS_H_

#include <unistd.h>

#include <atomic>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "src/base/netns.h"
#include "src/base/subprocess.h"

namespace iptkit::backend::test {

class TestNetns {
 public:
  // Named "<prefix>-<pid>-<n>".
  explicit TestNetns(std::string_view prefix) {
    static std::atomic<int> counter{0};
    name_ = std::string(prefix) + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
    auto r = base::RunSubprocess(base::Cmd("/usr/sbin/ip", {"ip", "netns", "add", name_}));
    ok_ = r.ok() && r->exit_code == 0;
    if (!ok_) error_ = r.ok() ? r->stderr_text : r.status().ToString();
  }
  ~TestNetns() {
    if (ok_) (void)base::RunSubprocess(base::Cmd("/usr/sbin/ip", {"ip", "netns", "delete", name_}));
  }
  TestNetns(const TestNetns&) = delete;
  TestNetns& operator=(const TestNetns&) = delete;

  bool ok() const { return ok_; }
  const std::string& error() const { return error_; }
  const std::string& name() const { return name_; }

  // Runs argv (argv[0] an absolute path) inside the namespace; "" on success, else a description.
  std::string Exec(std::vector<std::string> argv, std::string stdin_data = "") const {
    auto r = Run(argv, std::move(stdin_data));
    if (!r.ok()) return r.status().ToString();
    if (r->exit_code != 0) return base::DescribeCommand(base::Cmd(argv[0], argv)) + ": " + r->stderr_text;
    return "";
  }
  // Its standard output ("" when it could not run).
  std::string Output(std::vector<std::string> argv) const {
    auto r = Run(argv, "");
    return r.ok() ? r->stdout_text : "";
  }

 private:
  Result<base::SubprocessResult> Run(const std::vector<std::string>& argv, std::string stdin_data) const {
    IPTKIT_ASSIGN_OR_RETURN(base::UniqueFd fd, base::OpenNetns(name_));
    return base::RunSubprocess(base::Cmd(argv[0], argv).Stdin(std::move(stdin_data)).Netns(fd.get()));
  }

  std::string name_;
  std::string error_;
  bool ok_ = false;
};

}  // namespace iptkit::backend::test

#endif  // IPTKIT_SRC_BACKEND_TEST_NETNS_H_
