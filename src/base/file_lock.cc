#include "src/base/file_lock.h"

#include <fcntl.h>
#include <sys/file.h>

#include <algorithm>
#include <cerrno>
#include <thread>

#include "src/base/errno_status.h"

namespace iptkit::base {

Result<FileLock> FileLock::Acquire(const std::string& path, std::chrono::milliseconds wait) {
  using Clock = std::chrono::steady_clock;
  const Clock::time_point deadline = Clock::now() + wait;
  // O_NOFOLLOW: a root process must not be steered into creating files through a planted symlink.
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd.valid()) return ErrnoToStatus(errno, "open lock file " + path);
  std::chrono::milliseconds pause(1);
  while (true) {
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) == 0) return FileLock(path, std::move(fd));
    if (errno == EINTR) continue;
    if (errno != EWOULDBLOCK) return ErrnoToStatus(errno, "flock " + path);
    Clock::time_point now = Clock::now();
    if (now >= deadline) {
      return Status::Unavailable("xtables lock busy: " + path + " is held by another process (waited " +
                                 std::to_string(wait.count()) + " ms)");
    }
    std::this_thread::sleep_for(std::min<Clock::duration>(pause, deadline - now));
    pause = std::min(pause * 2, std::chrono::milliseconds(50));
  }
}

}  // namespace iptkit::base
