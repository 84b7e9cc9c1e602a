// The daemon's state directory: checked before the store in it is opened, and held by one daemon at a time.
//
// PrepareStateDir creates a missing directory (mode 0700) and refuses, naming the mode or owner and the command that
// fixes it, a directory that others could use to replace the database (group or world writable, or owned by another
// user) and a database file (or its -wal/-shm files) that others could read or write (it holds token hashes and the
// audit log). StateDirLock is an exclusive flock(2) on DIR/iptkitd.lock, which holds the holder's pid, so that a
// second daemon on the same directory refuses to start and names the first (two writers would race each other's
// owned state). The lock belongs to the open file description and goes with the process, also on SIGKILL.
// Thread-safety: the functions are; a StateDirLock is owned by one thread at a time.
//
//   IPTKIT_RETURN_IF_ERROR(store::PrepareStateDir("/var/lib/iptkitd", /*create=*/true));
//   IPTKIT_ASSIGN_OR_RETURN(store::StateDirLock lock, store::StateDirLock::Acquire("/var/lib/iptkitd"));
//   IPTKIT_ASSIGN_OR_RETURN(auto store, store::Store::Open("/var/lib/iptkitd/iptkitd.db"));
#ifndef IPTKIT_SRC_STORE_STATE_DIR_H_
#define IPTKIT_SRC_STORE_STATE_DIR_H_

#include <string>

#include "iptkit/status.h"
#include "src/base/unique_fd.h"

namespace iptkit::store {

// The database file in a state directory: DIR/iptkitd.db.
std::string DatabasePath(const std::string& dir);

// create: a missing directory is made with mode 0700 (its parent must exist); otherwise it is NotFound.
// FailedPrecondition naming the path, its mode or owner and the fix ("chmod 700 DIR") when the directory is group
// or world writable, not a directory, or not owned by this process's effective uid; or when the database, its -wal
// or its -shm file exists with any group or other permission bit, is not a regular file, or has another owner.
Status PrepareStateDir(const std::string& dir, bool create);

class StateDirLock {
 public:
  // Takes the lock without waiting and writes this process's pid into the lock file. FailedPrecondition
  // "state directory DIR is in use by another iptkitd (pid N; lock file DIR/iptkitd.lock)" when another process
  // holds it; other errors as ErrnoToStatus.
  static Result<StateDirLock> Acquire(const std::string& dir);

  StateDirLock(StateDirLock&&) noexcept = default;
  StateDirLock& operator=(StateDirLock&&) noexcept = default;
  ~StateDirLock() = default;  // closing the descriptor releases the lock (the file stays)

  const std::string& path() const { return path_; }

 private:
  StateDirLock(std::string path, base::UniqueFd fd) : path_(std::move(path)), fd_(std::move(fd)) {}
  std::string path_;
  base::UniqueFd fd_;
};

}  // namespace iptkit::store

#endif  // IPTKIT_SRC_STORE_STATE_DIR_H_
