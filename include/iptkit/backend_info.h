// Which backend a Firewall uses, and what `iptkit info` reports about the system: the iptables variants present,
// their tables and rule counts, and the nf_tables base chains of other tools. Plain value types.
//
//   iptkit::Result<iptkit::FirewallInfo> info = firewall->Info();
//   for (const iptkit::VariantTables& v : info->variants) std::cout << v.variant << " " << v.tables.size() << "\n";
#ifndef IPTKIT_BACKEND_INFO_H_
#define IPTKIT_BACKEND_INFO_H_

#include <cstddef>
#include <string>
#include <vector>

#include "iptkit/model.h"

namespace iptkit {

enum class BackendKind {
  kAuto,          // the variant that holds rules (nft when neither or both do); natively: kNative or kNativeLegacy
  kNft,           // iptables-nft-restore / -save
  kLegacy,        // iptables-legacy-restore / -save
  kFake,          // in-memory, same semantics; for tests (the library's and the users')
  kNative,        // nf_tables over netlink in-process (libmnl, libnftnl, libxtables), as iptables-nft writes rules
  kNativeLegacy,  // x_tables in-process (libiptc, libxtables), as iptables-legacy writes rules
};

// What `iptkit info` shows.
struct VariantTables {
  std::string variant;  // "nft" or "legacy"
  std::string version;  // `iptables -V` of that variant
  struct TableRules {
    Family family = Family::kIPv4;
    std::string table;
    size_t rules = 0;
    bool representable = true;
  };
  std::vector<TableRules> tables;  // tables that exist in that variant, with rule counts
};
struct ForeignNftChain {
  std::string family;  // nft family: ip, ip6, inet, ...
  std::string table;
  std::string chain;
  std::string hook;  // input, forward, ...
  int priority = 0;
};
struct FirewallInfo {
  std::string backend;                       // "native", "native-legacy", "nft", "legacy" or "fake"
  std::string backend_reason;                // why this backend is in use ("requested", what auto found, ...)
  std::string netns;                         // as given ("" = caller's)
  std::vector<VariantTables> variants;       // both variants, so rules in the other one are visible
  std::vector<ForeignNftChain> foreign_nft;  // nft base chains not made by iptables-nft (firewalld, docker...)
  std::vector<std::string> warnings;
};

}  // namespace iptkit

#endif  // IPTKIT_BACKEND_INFO_H_
