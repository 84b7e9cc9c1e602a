// Validation of rule header values (-s/-d addresses, -i/-o interfaces, -p protocols) as iptables 1.8.9
// accepts them, minus everything that would need DNS.
#ifndef IPTKIT_SRC_DIALECT_FIELDS_H_
#define IPTKIT_SRC_DIALECT_FIELDS_H_

#include <optional>
#include <string>
#include <string_view>

#include "iptkit/model.h"

namespace iptkit::dialect {

// An address literal of the family with an optional "/prefix" or "/dotted-mask" (IPv6: "/ipv6-mask").
// Returns the problem ("" when valid). Host names and comma lists are refused: iptables would resolve the one
// through DNS and expand the other into several rules.
std::string CheckAddressSpec(std::string_view value, Family family);

// 1..15 bytes (IFNAMSIZ - 1), a trailing '+' is a wildcard. Returns the problem ("" when valid).
std::string CheckInterface(std::string_view value);

// A protocol as `-p` takes it: a number 0..255, a name from iptables' built-in list (xtables_chain_protos) or
// from the protocols database (/etc/protocols; never DNS). Returns the number, nullopt when unknown.
std::optional<int> ParseProtocol(std::string_view value);

// The name iptables uses to load a protocol's implicit match (xshared.c find_proto/proto_to_name): the name as
// given, or for a number the built-in name or the protocols database name.
std::string ProtocolMatchName(std::string_view value);

}  // namespace iptkit::dialect

#endif  // IPTKIT_SRC_DIALECT_FIELDS_H_
