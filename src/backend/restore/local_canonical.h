// LocalCanonicalRule: the canonical form of a rule — exactly what iptables-save prints for it — for the rules
// simple enough to compute without running iptables. Everything else is canonicalized by loading it into a
// scratch namespace (RestoreBackend::Canonicalize), which costs a restore and a save per batch of new specs; ban
// lists and other address rules added at a high rate (the daemon's TTL rules) skip that.
//
// Covered, as both iptables 1.8.9 variants print them (pinned by local_canonical_test against the kernel):
//  - -s / -d: a numeric address already written the way inet_ntop writes it, with an optional /prefix (1..32 or
//    1..128) or, for IPv4, a contiguous dotted mask; printed as network/prefix (host bits cleared, "/32" or
//    "/128" for a host), "!" kept. /0 is left to iptables (it drops the field).
//  - -i / -o: an interface name of [A-Za-z0-9._@-] or such a "eth+" wildcard (not "+" alone), "!" kept;
//    printed as given.
//  - -m comment --comment TEXT with TEXT of [A-Za-z0-9:._-] (the owner tags), any number.
//  - -j ACCEPT, DROP or RETURN without options, or no target.
// Anything else (-p, -f, other matches, other targets, options) → nullopt.
// Thread-safety: a pure function.
//
//   std::optional<Rule> c = LocalCanonicalRule(Family::kIPv4, *ParseRuleSpec("-s 10.1.2.3 -j DROP", v4));
//   // FormatRuleSpec(*c) == "-s 10.1.2.3/32 -j DROP"
#ifndef IPTKIT_SRC_BACKEND_RESTORE_LOCAL_CANONICAL_H_
#define IPTKIT_SRC_BACKEND_RESTORE_LOCAL_CANONICAL_H_

#include <optional>

#include "iptkit/model.h"

namespace iptkit::backend {

std::optional<Rule> LocalCanonicalRule(Family family, const Rule& rule);

}  // namespace iptkit::backend

#endif  // IPTKIT_SRC_BACKEND_RESTORE_LOCAL_CANONICAL_H_
