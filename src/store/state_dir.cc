#include "src/store/state_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "src/base/errno_status.h"

namespace iptkit::store {
namespace {

std::string Octal(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof(buf), "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

// `path` (a state file) must be a regular file of ours without group or other permissions, if it exists.
Status CheckFile(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return Status::Ok();
    return base::ErrnoToStatus(errno, "stat " + path);
  }
  if (!S_ISREG(st.st_mode)) {
    return Status::FailedPrecondition(path + " is not a regular file (a symlink or another kind of file); remove it");
  }
  if (st.st_uid != ::geteuid()) {
    return Status::FailedPrecondition(path + " is owned by uid " + std::to_string(st.st_uid) +
                                      ", not by iptkitd's uid " + std::to_string(::geteuid()) + "; fix: chown " +
                                      std::to_string(::geteuid()) + " " + path);
  }
  if ((st.st_mode & 0077) != 0) {
    return Status::FailedPrecondition(path + " has mode " + Octal(st.st_mode) +
                                      ": other users may read or change it (it holds token hashes and the audit "
                                      "log); fix: chmod 600 " +
                                      path);
  }
  return Status::Ok();
}

}  // namespace

std::string DatabasePath(const std::string& dir) { return dir + "/iptkitd.db"; }

Status PrepareStateDir(const std::string& dir, bool create) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) {
    if (errno != ENOENT) return base::ErrnoToStatus(errno, "state directory " + dir);
    if (!create) return Status::NotFound("state directory '" + dir + "' does not exist");
    // The mode is exact whatever the umask (mkdir applies it, so chmod after).
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return base::ErrnoToStatus(errno, "mkdir " + dir);
    if (::stat(dir.c_str(), &st) != 0) return base::ErrnoToStatus(errno, "state directory " + dir);
  }
  if (!S_ISDIR(st.st_mode)) return Status::FailedPrecondition("state directory " + dir + " is not a directory");
  if (st.st_uid != ::geteuid()) {
    return Status::FailedPrecondition("state directory " + dir + " is owned by uid " + std::to_string(st.st_uid) +
                                      ", not by iptkitd's uid " + std::to_string(::geteuid()) + "; fix: chown " +
                                      std::to_string(::geteuid()) + " " + dir);
  }
  if ((st.st_mode & 0022) != 0) {
    return Status::FailedPrecondition("state directory " + dir + " has mode " + Octal(st.st_mode) +
                                      ": other users may create, remove or replace files in it (the database); "
                                      "fix: chmod 700 " +
                                      dir);
  }
  const std::string db = DatabasePath(dir);
  for (const std::string& path : {db, db + "-wal", db + "-shm"}) IPTKIT_RETURN_IF_ERROR(CheckFile(path));
  return Status::Ok();
}

Result<StateDirLock> StateDirLock::Acquire(const std::string& dir) {
  const std::string path = dir + "/iptkitd.lock";
  base::UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd.valid()) return base::ErrnoToStatus(errno, "open " + path);
  while (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EINTR) continue;
    if (errno != EWOULDBLOCK) return base::ErrnoToStatus(errno, "flock " + path);
    char buf[32] = {};
    const ssize_t n = ::pread(fd.get(), buf, sizeof(buf) - 1, 0);
    std::string pid = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
    while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' ')) pid.pop_back();
    return Status::FailedPrecondition("state directory " + dir + " is in use by another iptkitd (pid " +
                                      (pid.empty() ? std::string("unknown") : pid) + "; lock file " + path +
                                      "): one daemon per state directory");
  }
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd.get(), 0) != 0 ||
      ::pwrite(fd.get(), pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    return base::ErrnoToStatus(errno, "write " + path);
  }
  return StateDirLock(path, std::move(fd));
}

}  // namespace iptkit::store
