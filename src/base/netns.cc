#include "src/base/netns.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <system_error>
#include <thread>

#include "src/base/errno_status.h"

#ifndef NSFS_MAGIC
#define NSFS_MAGIC 0x6e736673
#endif
#ifndef NS_GET_NSTYPE
#define NS_GET_NSTYPE _IO(0xb7, 0x3)
#endif

namespace iptkit::base {

std::string NetnsPath(std::string_view name_or_path) {
  if (name_or_path.empty()) return "";
  if (name_or_path.find('/') != std::string_view::npos) return std::string(name_or_path);
  return "/run/netns/" + std::string(name_or_path);
}

Result<UniqueFd> OpenNetns(std::string_view name_or_path) {
  if (name_or_path.empty()) return UniqueFd();
  if (name_or_path == "." || name_or_path == "..") {
    return Status::InvalidArgument("invalid netns name '" + std::string(name_or_path) + "'");
  }
  const std::string path = NetnsPath(name_or_path);
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoToStatus(errno, "open netns " + path);
  struct statfs fs;
  if (::fstatfs(fd.get(), &fs) != 0) return ErrnoToStatus(errno, "fstatfs netns " + path);
  if (static_cast<unsigned long>(fs.f_type) != NSFS_MAGIC) {
    return Status::InvalidArgument(path + " is not a namespace file (not on nsfs)");
  }
  int type = ::ioctl(fd.get(), NS_GET_NSTYPE);
  if (type >= 0 && type != CLONE_NEWNET) {
    return Status::InvalidArgument(path + " is a namespace, but not a network namespace");
  }
  return fd;
}

Result<NetnsId> GetNetnsId(int fd) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return ErrnoToStatus(errno, "fstat netns fd " + std::to_string(fd));
  return NetnsId{st.st_dev, st.st_ino};
}

std::string ScratchNetns::path() const {
  return "/proc/" + std::to_string(::getpid()) + "/fd/" + std::to_string(fd_.get());
}

Result<ScratchNetns> ScratchNetns::Create() {
  // ready: child → parent ("unshared", or an errno); release: parent closes it when the ns file is open.
  int ready[2], release[2];
  if (::pipe2(ready, O_CLOEXEC) != 0) return ErrnoToStatus(errno, "pipe2");
  UniqueFd ready_r(ready[0]), ready_w(ready[1]);
  if (::pipe2(release, O_CLOEXEC) != 0) return ErrnoToStatus(errno, "pipe2");
  UniqueFd release_r(release[0]), release_w(release[1]);

  const int keep_low = std::min(ready_w.get(), release_r.get());
  const int keep_high = std::max(ready_w.get(), release_r.get());
  const long open_max = ::sysconf(_SC_OPEN_MAX);
  const int max_fd = open_max > 0 && open_max < INT_MAX ? static_cast<int>(open_max) - 1 : 65535;
  pid_t pid = ::fork();
  if (pid < 0) return ErrnoToStatus(errno, "fork for unshare(CLONE_NEWNET)");
  if (pid == 0) {
    // Async-signal-safe only. Every descriptor but 0-2 and its two pipe ends goes: its copy of the release write end
    // (or it never sees EOF), and the pipes of a Create running on another thread at the same time, which it
    // inherited: a helper holding another helper's release end keeps that one waiting, and two that hold each
    // other's never end (nor do their callers, in waitpid).
    auto close_range = [max_fd](int first, int last) {
      if (first > last) return;
      if (::syscall(SYS_close_range, static_cast<unsigned>(first), static_cast<unsigned>(last), 0u) == 0) return;
      for (int fd = first; fd <= std::min(last, max_fd); ++fd) ::close(fd);
    };
    close_range(3, keep_low - 1);
    close_range(keep_low + 1, keep_high - 1);
    close_range(keep_high + 1, INT_MAX);
    int err = ::unshare(CLONE_NEWNET) == 0 ? 0 : errno;
    ssize_t ignored = ::write(ready_w.get(), &err, sizeof(err));
    (void)ignored;
    char byte;
    while (::read(release_r.get(), &byte, 1) < 0 && errno == EINTR) {
    }
    ::_exit(0);
  }
  ready_w.reset();
  release_r.reset();
  auto reap = [pid] {
    int status;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
  };

  int err = -1;
  ssize_t n;
  do {
    n = ::read(ready_r.get(), &err, sizeof(err));
  } while (n < 0 && errno == EINTR);
  if (n != static_cast<ssize_t>(sizeof(err))) {
    release_w.reset();
    reap();
    return Status::Internal("unshare(CLONE_NEWNET) helper child died before reporting");
  }
  if (err != 0) {
    release_w.reset();
    reap();
    return ErrnoToStatus(err, "unshare(CLONE_NEWNET)");
  }
  const std::string ns_path = "/proc/" + std::to_string(pid) + "/ns/net";
  UniqueFd fd(::open(ns_path.c_str(), O_RDONLY | O_CLOEXEC));
  int open_errno = errno;
  release_w.reset();
  reap();
  if (!fd.valid()) return ErrnoToStatus(open_errno, "open " + ns_path);
  return ScratchNetns(std::move(fd));
}

Status RunInNetnsThread(int netns_fd, const std::function<Status()>& fn, std::string_view what) {
  if (netns_fd < 0) return fn();
  Status status;
  auto body = [&] {
    if (::setns(netns_fd, CLONE_NEWNET) != 0) {
      status = ErrnoToStatus(errno, "setns (" + std::string(what) + ")");
      return;
    }
    status = fn();
  };
  try {
    std::thread(body).join();
  } catch (const std::system_error& e) {
    return Status::Internal("starting the netns thread (" + std::string(what) + "): " + e.what());
  }
  return status;
}

}  // namespace iptkit::base
