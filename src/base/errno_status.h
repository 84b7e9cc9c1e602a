// ErrnoToStatus: the one place where an errno becomes a Status.
//
// The message is "<what>: <strerror> (errno N)", so it names the syscall and its object
// ("setns /run/netns/blue: Operation not permitted (errno 1)"). Codes: EPERM/EACCES → PermissionDenied,
// ENOENT/ESRCH → NotFound, EEXIST → AlreadyExists, EAGAIN/EWOULDBLOCK/EBUSY/EINTR/ETIMEDOUT → Unavailable,
// EINVAL/ENAMETOOLONG/ENOTDIR/ELOOP → InvalidArgument, anything else → Internal.
// Thread-safety: thread-safe (uses strerror_r).
//
//   if (setns(fd, CLONE_NEWNET) != 0) return ErrnoToStatus(errno, "setns " + path);
#ifndef IPTKIT_SRC_BASE_ERRNO_STATUS_H_
#define IPTKIT_SRC_BASE_ERRNO_STATUS_H_

#include <string>
#include <string_view>

#include "iptkit/status.h"

namespace iptkit::base {

Status ErrnoToStatus(int err, std::string_view what);
// strerror(err) without the thread-safety problem of strerror.
std::string ErrnoString(int err);

}  // namespace iptkit::base

#endif  // IPTKIT_SRC_BASE_ERRNO_STATUS_H_
