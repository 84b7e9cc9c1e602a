// Value types of IP sets shared by the library's Ipsets (ipset.h) and owner documents (desired.h): the create
// options of a set and the kernel's limits. No code, no libipset.
#ifndef IPTKIT_SET_TYPES_H_
#define IPTKIT_SET_TYPES_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace iptkit {

// The longest set name (the kernel's IPSET_MAXNAMELEN is 32 with the terminating NUL).
inline constexpr size_t kMaxSetNameLength = 31;
// The longest per-entry timeout in seconds (ipset's limit: UINT_MAX / 1000).
inline constexpr uint32_t kMaxSetTimeout = 2147483;
// The longest entry comment (the kernel's IPSET_MAX_COMMENT_SIZE).
inline constexpr size_t kMaxSetCommentLength = 255;
// Hash sets hold this many entries unless created with maxelem.
inline constexpr uint32_t kDefaultSetMaxElem = 65536;
// Temporary sets (Load, Sync, grow) are named this plus 8 hex digits; leftovers are destroyed by the next Sync.
inline constexpr std::string_view kTempSetPrefix = "iptkit-tmp-";

// The create options of a set (ipset's words). Unset fields take the kernel's defaults. Each type accepts a
// subset; Create names the option a type does not take.
struct SetOptions {
  std::string family{};                // "inet" (default) or "inet6": hash types
  std::optional<uint32_t> hashsize{};  // hash types: initial buckets (power of two, default 1024)
  std::optional<uint32_t> maxelem{};   // hash types: capacity (default 65536)
  std::optional<uint32_t> timeout{};   // default entry timeout in seconds; 0 = entries stay unless given one
  bool counters = false;               // per-entry packet/byte counters
  bool comment = false;                // per-entry comments
  bool skbinfo = false;                // per-entry skbmark/skbprio/skbqueue
  std::optional<uint32_t> netmask{};   // hash:ip, bitmap:ip: store addresses masked to this prefix length
  std::string range{};                 // bitmap types (required): "10.0.0.0/16", "10.0.0.0-10.0.0.255", "1-1024"
  std::optional<uint32_t> size{};      // list:set: how many sets it may hold (default 8)
  friend bool operator==(const SetOptions&, const SetOptions&) = default;
};

}  // namespace iptkit

#endif  // IPTKIT_SET_TYPES_H_
