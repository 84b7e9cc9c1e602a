// XtablesProbe: an exact, cheap change detector for iptables-legacy (x_tables) tables, without spawning
// iptables-legacy-save. Used by RestoreBackend's legacy snapshot cache (restore_backend.h).
//
// A table's fingerprint is what the kernel hands to iptables-legacy-save itself: the IPT_SO_GET_INFO answer
// (valid hooks, hook entry / underflow offsets, entry count, blob size) followed by the IPT_SO_GET_ENTRIES blob
// with every entry's counters zeroed (entries walked by next_offset; counters change with traffic, nothing else
// save prints does). The bytes are kept whole and compared, not hashed: equal fingerprints mean byte-identical
// rule blobs. Since kernel 4.11 the blob carries only the user-visible part of each match/target (xt_data_to_user
// copies `usersize` bytes), so it holds no kernel pointers or rate-limit state; a field that still moved with
// traffic would only cause a cache miss, never a stale hit.
// What the blob does not show: the name an ipset has now (the set match stores the set's index, save asks ipset
// for the name), so `ipset rename` / `ipset swap` change save's text without changing any fingerprint. The nft
// generation id has the same blind spot.
//
// The tables of a family are the lines of /proc/net/ip_tables_names (ip6_tables_names) of the target netns, in
// that order — the order iptables-legacy-save prints them in (iptables 1.8.9 iptables-save.c for_each_table).
// Only listed tables are queried: a GET_INFO for a table that is not instantiated in the netns instantiates it
// (x_tables.c xt_find_table_lock → the module's table_init), which a read must never do. Tables are never removed
// except with their netns or module, so a table listed a moment ago still exists (ENOENT is tolerated anyway).
//
// The raw sockets (one per family; getsockopt answers for the netns the socket was created in) and the names
// files (a /proc/net file shows the netns of the thread that opened it) are opened once by a short-lived thread
// that setns()'s first (like nft::NetlinkClient) and kept. A names file that does not exist yet (ip_tables /
// ip6_tables not loaded: no legacy table anywhere) is looked for again on each Read. Needs CAP_NET_ADMIN.
// Thread-safety: one thread at a time (like every Backend).
//
//   IPTKIT_ASSIGN_OR_RETURN(auto probe, legacy::XtablesProbe::Open(netns_fd));
//   IPTKIT_ASSIGN_OR_RETURN(legacy::Fingerprint before, probe->Read(Family::kIPv4));
//   ... iptables-legacy-save ...
//   IPTKIT_ASSIGN_OR_RETURN(legacy::Fingerprint after, probe->Read(Family::kIPv4));
//   bool unchanged = before == after;
#ifndef IPTKIT_SRC_BACKEND_LEGACY_XT_FINGERPRINT_H_
#define IPTKIT_SRC_BACKEND_LEGACY_XT_FINGERPRINT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "iptkit/model.h"
#include "iptkit/status.h"
#include "src/base/unique_fd.h"

namespace iptkit::backend::legacy {

struct TableFingerprint {
  std::string name;
  std::string bytes;  // GET_INFO answer + blob with zeroed counters
  // Rules in the table, as iptables-legacy-save would print them (-A lines): the blob's entries minus one policy
  // entry per builtin chain, a head (ERROR target) and a tail (RETURN) per user chain, and the final ERROR entry
  // (libiptc's layout, libiptc.c). Derived from `bytes`.
  size_t rules = 0;
  friend bool operator==(const TableFingerprint&, const TableFingerprint&) = default;
};
// Every table of one family, in /proc/net/ip{,6}_tables_names order.
using Fingerprint = std::vector<TableFingerprint>;

class XtablesProbe {
 public:
  // Opens the sockets and names files inside `netns_fd` (-1: the caller's namespace). The descriptor must stay
  // open while the probe lives (it is used to look for a names file again).
  static Result<std::unique_ptr<XtablesProbe>> Open(int netns_fd);
  ~XtablesProbe() = default;
  XtablesProbe(const XtablesProbe&) = delete;
  XtablesProbe& operator=(const XtablesProbe&) = delete;

  // The family's fingerprint now. Never creates a table.
  Result<Fingerprint> Read(Family family);

  // getsockopt calls made so far (tests).
  uint64_t requests() const { return requests_; }

 private:
  struct PerFamily {
    base::UniqueFd socket;
    base::UniqueFd names;  // invalid while the file does not exist
  };
  explicit XtablesProbe(int netns_fd) : netns_fd_(netns_fd) {}
  // Opens what is missing of `family` inside the netns.
  Status OpenInNetns(Family family, bool with_socket);
  Result<std::vector<std::string>> TableNames(Family family);
  Result<TableFingerprint> ReadTable(Family family, const std::string& name, bool& absent);

  int netns_fd_;
  PerFamily v4_, v6_;
  uint64_t requests_ = 0;
};

}  // namespace iptkit::backend::legacy

#endif  // IPTKIT_SRC_BACKEND_LEGACY_XT_FINGERPRINT_H_
