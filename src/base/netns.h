// Network namespaces by descriptor: opening the one a user names, and a private scratch namespace.
//
// iptkit never switches its own threads into another namespace; it hands the descriptor to RunSubprocess,
// whose child calls setns(2). An open descriptor keeps its namespace alive (namespaces(7)), so a ScratchNetns
// lives exactly as long as the object and leaves nothing behind (no /run/netns entry, no mount).
// Thread-safety: OpenNetns is thread-safe; a ScratchNetns is a value owned by one thread at a time.
//
//   IPTKIT_ASSIGN_OR_RETURN(UniqueFd ns, OpenNetns("blue"));         // /run/netns/blue
//   IPTKIT_ASSIGN_OR_RETURN(ScratchNetns scratch, ScratchNetns::Create());
//   RunSubprocess(Cmd("/usr/sbin/iptables-nft-save").Netns(scratch.fd()));
#ifndef IPTKIT_SRC_BASE_NETNS_H_
#define IPTKIT_SRC_BASE_NETNS_H_

#include <sys/types.h>

#include <functional>
#include <string>
#include <string_view>

#include "iptkit/status.h"
#include "src/base/unique_fd.h"

namespace iptkit::base {

// "" → an invalid UniqueFd (meaning: the caller's namespace). A NAME without '/' → /run/netns/NAME (as
// `ip netns` names them); anything with a '/' is a path (/proc/PID/ns/net, /var/run/docker/netns/X, ...).
// Fails with NotFound when it does not exist and InvalidArgument when the path is not a network namespace.
Result<UniqueFd> OpenNetns(std::string_view name_or_path);

// The path OpenNetns opens for `name_or_path` ("" for "").
std::string NetnsPath(std::string_view name_or_path);

// The namespace inode (st_ino of the nsfs file) of an open namespace descriptor; two descriptors refer to the
// same namespace iff device and inode are equal (namespaces(7)).
struct NetnsId {
  dev_t dev = 0;
  ino_t ino = 0;
  friend bool operator==(const NetnsId&, const NetnsId&) = default;
};
Result<NetnsId> GetNetnsId(int fd);

// A private, empty network namespace (only a down loopback). Created by a short-lived child that calls
// unshare(CLONE_NEWNET); the parent opens /proc/PID/ns/net and reaps the child. Needs CAP_SYS_ADMIN.
class ScratchNetns {
 public:
  static Result<ScratchNetns> Create();

  ScratchNetns(ScratchNetns&&) noexcept = default;
  ScratchNetns& operator=(ScratchNetns&&) noexcept = default;
  ~ScratchNetns() = default;

  int fd() const { return fd_.get(); }
  // A path other processes of this process can open while the object lives ("/proc/<pid>/fd/<fd>"), e.g. for
  // BackendOptions::netns.
  std::string path() const;

 private:
  explicit ScratchNetns(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

// Runs `fn` on a short-lived thread that first setns(CLONE_NEWNET)s into `netns_fd` (-1: stays in the caller's
// netns), and returns fn's Status. For sockets and /proc/thread-self/net files that must belong to that namespace
// (a socket keeps the netns it was created in); setns() changes only the calling thread, so the caller's thread
// stays where it is. `what` names the purpose in errors.
Status RunInNetnsThread(int netns_fd, const std::function<Status()>& fn, std::string_view what);

}  // namespace iptkit::base

#endif  // IPTKIT_SRC_BASE_NETNS_H_
