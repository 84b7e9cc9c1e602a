#include "src/backend/legacy/xt_fingerprint.h"

#include <fcntl.h>
// glibc's netinet/in.h before the kernel headers: it tells <linux/in.h> (via __UAPI_DEF_*) not to redefine
// in_addr and IPPROTO_*.
// clang-format off
#include <netinet/in.h>
#include <linux/netfilter_ipv4/ip_tables.h>
#include <linux/netfilter_ipv6/ip6_tables.h>
// clang-format on
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <functional>

#include "src/base/errno_status.h"
#include "src/base/netns.h"

namespace iptkit::backend::legacy {
namespace {

// A table changing between GET_INFO and GET_ENTRIES (another size) makes GET_ENTRIES fail with EAGAIN
// (ip_tables.c get_entries); read both again.
constexpr int kEntriesAttempts = 5;

// Runs `fn` on a throwaway thread that first joins the network namespace `netns_fd` (-1: stays in ours):
// setns() changes only the calling thread, and sockets / /proc/thread-self/net files keep the namespace they
// were opened in. The same pattern as nft::NetlinkClient::Open.

// The kernel's structures per family (the IPv4 and IPv6 ABIs are the same shape).
struct V4 {
  using Info = ipt_getinfo;
  using Entries = ipt_get_entries;
  using Entry = ipt_entry;
  static constexpr int kLevel = IPPROTO_IP;
  static constexpr int kDomain = AF_INET;
  static constexpr int kGetInfo = IPT_SO_GET_INFO;
  static constexpr int kGetEntries = IPT_SO_GET_ENTRIES;
};
struct V6 {
  using Info = ip6t_getinfo;
  using Entries = ip6t_get_entries;
  using Entry = ip6t_entry;
  static constexpr int kLevel = IPPROTO_IPV6;
  static constexpr int kDomain = AF_INET6;
  static constexpr int kGetInfo = IP6T_SO_GET_INFO;
  static constexpr int kGetEntries = IP6T_SO_GET_ENTRIES;
};

const char* NamesPath(Family family) {
  return family == Family::kIPv4 ? "/proc/thread-self/net/ip_tables_names" : "/proc/thread-self/net/ip6_tables_names";
}

// One table: GET_INFO then GET_ENTRIES of exactly info.size bytes; `absent` on ENOENT.
template <typename T>
Result<TableFingerprint> Fetch(int sock, const std::string& name, bool& absent, uint64_t& requests) {
  typename T::Info info;
  if (name.size() >= sizeof(info.name)) return Status::InvalidArgument("x_tables table name too long: " + name);
  for (int attempt = 1;; ++attempt) {
    std::memset(&info, 0, sizeof(info));
    std::memcpy(info.name, name.data(), name.size());
    socklen_t len = sizeof(info);
    ++requests;
    if (::getsockopt(sock, T::kLevel, T::kGetInfo, &info, &len) != 0) {
      if (errno == ENOENT) {
        absent = true;
        return TableFingerprint{};
      }
      return base::ErrnoToStatus(errno, "getsockopt SO_GET_INFO for x_tables table " + name);
    }
    // bytes = the GET_INFO answer, then the GET_ENTRIES answer in place (its header: name and size).
    const size_t header = offsetof(typename T::Entries, entrytable);
    TableFingerprint fp;
    fp.name = name;
    fp.bytes.assign(sizeof(info) + header + info.size, '\0');
    std::memcpy(fp.bytes.data(), &info, sizeof(info));
    char* answer = fp.bytes.data() + sizeof(info);
    auto* get = reinterpret_cast<typename T::Entries*>(answer);
    std::memcpy(get->name, name.data(), name.size());
    get->size = info.size;
    len = static_cast<socklen_t>(header + info.size);
    ++requests;
    if (::getsockopt(sock, T::kLevel, T::kGetEntries, answer, &len) != 0) {
      if (errno == EAGAIN && attempt < kEntriesAttempts) continue;  // replaced in between with another size
      if (errno == ENOENT) {
        absent = true;
        return TableFingerprint{};
      }
      return base::ErrnoToStatus(errno, "getsockopt SO_GET_ENTRIES for x_tables table " + name);
    }
    // Zero the counters of every entry. The blob is a sequence of entries chained by next_offset
    // (x_tables.h; ip_tables.c translate_table checks the same bounds).
    char* blob = answer + header;
    size_t offset = 0;
    size_t entries = 0;
    size_t errors = 0;  // ERROR targets: one head per user chain, and the table's last entry
    while (offset < info.size) {
      if (info.size - offset < sizeof(typename T::Entry)) {
        return Status::Internal("x_tables table " + name + ": truncated entry at offset " + std::to_string(offset));
      }
      typename T::Entry entry;
      std::memcpy(&entry, blob + offset, sizeof(entry));
      if (entry.next_offset < sizeof(typename T::Entry) || entry.next_offset > info.size - offset) {
        return Status::Internal("x_tables table " + name + ": bad next_offset " + std::to_string(entry.next_offset) +
                                " at offset " + std::to_string(offset));
      }
      std::memset(blob + offset + offsetof(typename T::Entry, counters), 0, sizeof(entry.counters));
      if (entry.target_offset + sizeof(xt_entry_target) <= entry.next_offset) {
        xt_entry_target target;
        std::memcpy(&target, blob + offset + entry.target_offset, sizeof(target));
        if (std::strncmp(target.u.user.name, XT_ERROR_TARGET, sizeof(target.u.user.name)) == 0) ++errors;
      }
      ++entries;
      offset += entry.next_offset;
    }
    const size_t builtins = static_cast<size_t>(__builtin_popcount(info.valid_hooks));
    const size_t overhead = builtins + 1 + (errors > 0 ? 2 * (errors - 1) : 0);
    fp.rules = entries > overhead ? entries - overhead : 0;
    return fp;
  }
}

}  // namespace

Result<std::unique_ptr<XtablesProbe>> XtablesProbe::Open(int netns_fd) {
  std::unique_ptr<XtablesProbe> probe(new XtablesProbe(netns_fd));
  IPTKIT_RETURN_IF_ERROR(probe->OpenInNetns(Family::kIPv4, /*with_socket=*/true));
  IPTKIT_RETURN_IF_ERROR(probe->OpenInNetns(Family::kIPv6, /*with_socket=*/true));
  return probe;
}

Status XtablesProbe::OpenInNetns(Family family, bool with_socket) {
  PerFamily& f = family == Family::kIPv4 ? v4_ : v6_;
  return base::RunInNetnsThread(
      netns_fd_,
      [&]() -> Status {
        if (with_socket) {
          int domain = family == Family::kIPv4 ? V4::kDomain : V6::kDomain;
          int fd = ::socket(domain, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW);
          if (fd < 0) return base::ErrnoToStatus(errno, "socket(SOCK_RAW) for the x_tables probe");
          f.socket.reset(fd);
        }
        int fd = ::open(NamesPath(family), O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
          if (errno == ENOENT) return Status::Ok();  // the module is not loaded: no table of this family exists
          return base::ErrnoToStatus(errno, std::string("open ") + NamesPath(family));
        }
        f.names.reset(fd);
        return Status::Ok();
      },
      "opening the x_tables probe");
}

Result<std::vector<std::string>> XtablesProbe::TableNames(Family family) {
  PerFamily& f = family == Family::kIPv4 ? v4_ : v6_;
  if (!f.names) {
    IPTKIT_RETURN_IF_ERROR(OpenInNetns(family, /*with_socket=*/false));
    if (!f.names) return std::vector<std::string>{};
  }
  if (::lseek(f.names.get(), 0, SEEK_SET) < 0) return base::ErrnoToStatus(errno, NamesPath(family));
  std::string text;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(f.names.get(), buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      return base::ErrnoToStatus(errno, std::string("read ") + NamesPath(family));
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  std::vector<std::string> names;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    if (end > start) names.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return names;
}

Result<TableFingerprint> XtablesProbe::ReadTable(Family family, const std::string& name, bool& absent) {
  if (family == Family::kIPv4) return Fetch<V4>(v4_.socket.get(), name, absent, requests_);
  return Fetch<V6>(v6_.socket.get(), name, absent, requests_);
}

Result<Fingerprint> XtablesProbe::Read(Family family) {
  IPTKIT_ASSIGN_OR_RETURN(std::vector<std::string> names, TableNames(family));
  Fingerprint fp;
  for (const std::string& name : names) {
    bool absent = false;
    IPTKIT_ASSIGN_OR_RETURN(TableFingerprint table, ReadTable(family, name, absent));
    if (!absent) fp.push_back(std::move(table));
  }
  return fp;
}

}  // namespace iptkit::backend::legacy
