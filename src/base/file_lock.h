// FileLock: an exclusive flock(2) on a file, acquired within a deadline.
//
// Used for the xtables lock (/run/xtables.lock): iptables-legacy serializes writers with flock(LOCK_EX) on that
// file (iptables xshared.c xtables_lock), per mount namespace. Like iptables' --wait, the lock is polled with
// LOCK_NB until the deadline, so a wedged holder produces Unavailable ("xtables lock busy"), never a hang.
// flock locks belong to the open file description: two FileLocks on the same path exclude each other even
// inside one process. The lock is released when the object is destroyed.
// Thread-safety: a FileLock is owned by one thread at a time; Acquire is thread-safe.
//
//   IPTKIT_ASSIGN_OR_RETURN(FileLock lock, FileLock::Acquire("/run/xtables.lock", std::chrono::seconds(10)));
//   ... read, plan, restore ...
//   // released at scope exit
#ifndef IPTKIT_SRC_BASE_FILE_LOCK_H_
#define IPTKIT_SRC_BASE_FILE_LOCK_H_

#include <chrono>
#include <string>

#include "iptkit/status.h"
#include "src/base/unique_fd.h"

namespace iptkit::base {

class FileLock {
 public:
  // Opens (creating it with mode 0600 if missing) `path` and takes LOCK_EX, retrying every few ms until `wait`
  // has passed. wait == 0 tries once. Timeout → Unavailable naming the path; open errors → ErrnoToStatus.
  static Result<FileLock> Acquire(const std::string& path, std::chrono::milliseconds wait);

  FileLock(FileLock&&) noexcept = default;
  FileLock& operator=(FileLock&&) noexcept = default;
  ~FileLock() = default;  // closing the descriptor releases the lock

  const std::string& path() const { return path_; }

 private:
  FileLock(std::string path, UniqueFd fd) : path_(std::move(path)), fd_(std::move(fd)) {}
  std::string path_;
  UniqueFd fd_;
};

}  // namespace iptkit::base

#endif  // IPTKIT_SRC_BASE_FILE_LOCK_H_
