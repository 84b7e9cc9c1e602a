// UniqueFd: sole owner of one file descriptor (fmt's `file`, android-base's unique_fd).
//
// Move-only; the destructor closes the descriptor and never throws. -1 means "none". close(2) errors in the
// destructor are ignored on purpose: the descriptor is released either way (close(2), NOTES: "retrying the
// close() after a failure return is the wrong thing to do").
// Thread-safety: like an int; one owner at a time.
//
//   iptkit::base::UniqueFd fd(open("/run/netns/blue", O_RDONLY | O_CLOEXEC));
//   if (!fd.valid()) return ErrnoToStatus(errno, "open /run/netns/blue");
//   setns(fd.get(), CLONE_NEWNET);
#ifndef IPTKIT_SRC_BASE_UNIQUE_FD_H_
#define IPTKIT_SRC_BASE_UNIQUE_FD_H_

#include <unistd.h>

#include <utility>

namespace iptkit::base {

class UniqueFd {
 public:
  UniqueFd() noexcept = default;
  explicit UniqueFd(int fd) noexcept : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() noexcept { reset(); }

  int get() const noexcept { return fd_; }
  bool valid() const noexcept { return fd_ >= 0; }
  explicit operator bool() const noexcept { return valid(); }

  // Gives up ownership without closing; returns the descriptor (-1 if none).
  [[nodiscard]] int release() noexcept { return std::exchange(fd_, -1); }
  // Closes the owned descriptor (if any) and takes `fd`.
  void reset(int fd = -1) noexcept {
    int old = std::exchange(fd_, fd);
    if (old >= 0) ::close(old);
  }

 private:
  int fd_ = -1;
};

}  // namespace iptkit::base

#endif  // IPTKIT_SRC_BASE_UNIQUE_FD_H_
