#include "src/rest/http/listen.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <string_view>

#include "src/base/errno_status.h"

namespace iptkit::rest::http {
namespace {

// The command line of process `pid`, arguments separated by blanks, cut at 200 bytes; "" when unknown.
std::string CommandLine(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
  std::string raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!raw.empty() && raw.back() == '\0') raw.pop_back();
  for (char& c : raw) {
    if (c == '\0') c = ' ';
  }
  if (raw.size() > 200) raw = raw.substr(0, 200) + "...";
  return raw;
}

std::string DescribePid(pid_t pid) {
  const std::string cmd = CommandLine(pid);
  return "pid " + std::to_string(pid) + (cmd.empty() ? "" : " (" + cmd + ")");
}

// Inodes of the sockets listening on `port` in /proc/net/tcp and tcp6 (state 0A = TCP_LISTEN).
std::set<unsigned long> ListeningInodes(int port) {
  std::set<unsigned long> inodes;
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(table);
    std::string line;
    std::getline(in, line);  // the header
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      std::string slot, local, remote, state, queues, timer, retransmits, uid, timeout;
      unsigned long inode = 0;
      if (!(fields >> slot >> local >> remote >> state >> queues >> timer >> retransmits >> uid >> timeout >> inode)) {
        continue;
      }
      const size_t colon = local.rfind(':');
      if (colon == std::string::npos || state != "0A") continue;
      if (std::strtol(local.c_str() + colon + 1, nullptr, 16) == port && inode != 0) inodes.insert(inode);
    }
  }
  return inodes;
}

// The first process with a descriptor on one of these socket inodes.
std::optional<pid_t> SocketOwner(const std::set<unsigned long>& inodes) {
  if (inodes.empty()) return std::nullopt;
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return std::nullopt;
  std::optional<pid_t> found;
  while (dirent* d = readdir(proc)) {
    char* end = nullptr;
    const long pid = std::strtol(d->d_name, &end, 10);
    if (end == d->d_name || *end != '\0' || pid <= 0) continue;
    const std::string fd_dir = "/proc/" + std::string(d->d_name) + "/fd";
    DIR* fds = opendir(fd_dir.c_str());
    if (fds == nullptr) continue;
    while (dirent* f = readdir(fds)) {
      if (f->d_name[0] == '.') continue;
      char target[64];
      const ssize_t n = readlink((fd_dir + "/" + f->d_name).c_str(), target, sizeof(target) - 1);
      if (n <= 0) continue;
      target[n] = '\0';
      unsigned long inode = 0;
      if (std::sscanf(target, "socket:[%lu]", &inode) == 1 && inodes.count(inode) > 0) {
        found = static_cast<pid_t>(pid);
        break;
      }
    }
    closedir(fds);
    if (found) break;
  }
  closedir(proc);
  return found;
}

}  // namespace

std::string DescribePortHolder(int port) {
  std::optional<pid_t> pid = SocketOwner(ListeningInodes(port));
  return pid ? DescribePid(*pid) : "";
}

Result<base::UniqueFd> ListenTcp(const std::string& address, int port, int* bound_port) {
  const bool v6 = address.find(':') != std::string::npos;
  const std::string name = (v6 ? "[" + address + "]" : address) + ":" + std::to_string(port);
  sockaddr_storage storage{};
  socklen_t len = 0;
  if (v6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&storage);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET6, address.c_str(), &a->sin6_addr) != 1) {
      return Status::InvalidArgument("listen " + name + ": not a numeric IPv6 address");
    }
    len = sizeof(sockaddr_in6);
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&storage);
    a->sin_family = AF_INET;
    a->sin_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET, address.c_str(), &a->sin_addr) != 1) {
      return Status::InvalidArgument("listen " + name + ": not a numeric IPv4 address");
    }
    len = sizeof(sockaddr_in);
  }
  base::UniqueFd fd(::socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return base::ErrnoToStatus(errno, "listen " + name + ": socket");
  const int one = 1;
  // Not SO_REUSEPORT: that would let a second daemon listen on the same port (socket(7)).
  setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  // Inherited by accepted sockets (tcp(7)); set again on each to be sure.
  setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&storage), len) != 0) {
    const int err = errno;
    if (err == EADDRINUSE) {
      const std::string holder = port != 0 ? DescribePortHolder(port) : "";
      return Status::FailedPrecondition("listen " + name + ": the address is in use" +
                                        (holder.empty() ? " (by a process this daemon cannot see)" : " by " + holder));
    }
    return base::ErrnoToStatus(err, "listen " + name);
  }
  if (::listen(fd.get(), SOMAXCONN) != 0) {
    const int err = errno;
    if (err == EADDRINUSE) {
      const std::string holder = DescribePortHolder(port);
      return Status::FailedPrecondition("listen " + name + ": the address is in use" +
                                        (holder.empty() ? "" : " by " + holder));
    }
    return base::ErrnoToStatus(err, "listen " + name);
  }
  sockaddr_storage bound{};
  socklen_t bound_len = sizeof(bound);
  if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&bound), &bound_len) != 0) {
    return base::ErrnoToStatus(errno, "listen " + name + ": getsockname");
  }
  *bound_port = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                                  : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  return fd;
}

Result<UnixListener> ListenUnix(const std::string& path, uint32_t mode) {
  const std::string what = "listen unix:" + path;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return Status::InvalidArgument(what + ": a socket path has 1.." + std::to_string(sizeof(addr.sun_path) - 1) +
                                   " bytes");
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  const socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1);

  struct stat st {};
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) return Status::FailedPrecondition(what + ": exists and is not a socket");
    // Someone accepting there? Then it is not ours to take.
    base::UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!probe.valid()) return base::ErrnoToStatus(errno, what + ": socket");
    if (::connect(probe.get(), reinterpret_cast<sockaddr*>(&addr), len) == 0) {
      ucred cred{};
      socklen_t cred_len = sizeof(cred);
      std::string holder;
      if (getsockopt(probe.get(), SOL_SOCKET, SO_PEERCRED, &cred, &cred_len) == 0 && cred.pid > 0) {
        holder = " by " + DescribePid(cred.pid);
      }
      return Status::FailedPrecondition(what + ": the socket is served" + holder +
                                        "; another daemon is running (not replacing its socket)");
    }
    const int err = errno;
    if (err != ECONNREFUSED && err != ENOENT) {
      return base::ErrnoToStatus(err, what + ": checking whether the existing socket is served");
    }
    // Nobody listens: the socket of a daemon that is gone.
    if (unlink(path.c_str()) != 0 && errno != ENOENT) {
      return base::ErrnoToStatus(errno, what + ": removing the stale socket");
    }
  }
  UnixListener out;
  out.fd = base::UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!out.fd.valid()) return base::ErrnoToStatus(errno, what + ": socket");
  // Created with no permissions for anyone but the owner until chmod below sets the configured mode.
  const mode_t old_mask = umask(0177);
  const int bound = ::bind(out.fd.get(), reinterpret_cast<sockaddr*>(&addr), len);
  const int bind_errno = errno;
  umask(old_mask);
  if (bound != 0) {
    if (bind_errno == EADDRINUSE) {
      return Status::FailedPrecondition(what + ": another process created the socket just now");
    }
    return base::ErrnoToStatus(bind_errno, what);
  }
  if (::listen(out.fd.get(), SOMAXCONN) != 0) return base::ErrnoToStatus(errno, what);
  if (chmod(path.c_str(), mode) != 0) return base::ErrnoToStatus(errno, what + ": chmod");
  if (lstat(path.c_str(), &st) == 0) out.inode = st.st_ino;
  return out;
}

void RemoveUnixSocket(const std::string& path, ino_t inode) {
  struct stat st {};
  if (lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode) && st.st_ino == inode) unlink(path.c_str());
}

uint64_t RaiseDescriptorLimit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return 1024;
  if (limit.rlim_cur != limit.rlim_max) {
    rlimit raised = limit;
    raised.rlim_cur = limit.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) limit = raised;
  }
  return limit.rlim_cur == RLIM_INFINITY ? uint64_t{1} << 20 : static_cast<uint64_t>(limit.rlim_cur);
}

}  // namespace iptkit::rest::http
