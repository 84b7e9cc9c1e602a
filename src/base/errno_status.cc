#include "src/base/errno_status.h"

#include <cerrno>
#include <cstring>

namespace iptkit::base {

std::string ErrnoString(int err) {
  char buf[256];
  // GNU strerror_r may return a static string instead of filling buf.
  const char* text = strerror_r(err, buf, sizeof(buf));
  return text;
}

Status ErrnoToStatus(int err, std::string_view what) {
  std::string message = std::string(what) + ": " + ErrnoString(err) + " (errno " + std::to_string(err) + ")";
  switch (err) {
    case EPERM:
    case EACCES:
      return Status::PermissionDenied(std::move(message));
    case ENOENT:
    case ESRCH:
      return Status::NotFound(std::move(message));
    case EEXIST:
      return Status::AlreadyExists(std::move(message));
    case EAGAIN:
    case EBUSY:
    case EINTR:
    case ETIMEDOUT:
      return Status::Unavailable(std::move(message));
    case EINVAL:
    case ENAMETOOLONG:
    case ENOTDIR:
    case ELOOP:
      return Status::InvalidArgument(std::move(message));
    default:
      return Status::Internal(std::move(message));
  }
}

}  // namespace iptkit::base
