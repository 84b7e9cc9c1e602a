// The nf_tables expressions of a rule, as iptables-nft 1.8.9 writes and reads them (iptables/nft.c add_match,
// add_action; nft-ipv4.c / nft-ipv6.c add; nft-shared.c nft_rule_to_iptables_command_state).
//
// EncodeRule writes an XtRule into a libnftnl rule exactly as iptables-nft does: interface names as meta
// iifname/oifname compares (a "+" wildcard compares the prefix; "! -i +" the impossible name "INVAL/D"), the
// protocol as meta l4proto, addresses as network-header payload loads with a bitwise mask only for non-prefix
// masks, -f as the fragment-offset bits, then the compat protocol attributes, then the matches (tcp, udp, mark
// and limit as native expressions where iptables-nft translates them, every other match as an xt compat `match`
// expression carrying its payload), a counter, and the verdict (immediate ACCEPT/DROP/RETURN, jump/goto, NFLOG as
// a `log` expression, TRACE as `meta nftrace set 1`, any other target as an xt compat `target`).
//
// DecodeRule reads a kernel rule back into an XtRule the way iptables-nft-save does, but strictly: wherever
// iptables-nft would fail ("Parsing nftables rule failed") or silently print a rule that is not the kernel's
// (an expression it ignores, a set lookup, a native nft statement), it returns FailedPrecondition saying what was
// not understood, so that the table is marked unrepresentable instead of misread.
// Thread-safety: pure functions on their arguments.
//
//   nftnl_rule* r = nftnl_rule_alloc();
//   IPTKIT_RETURN_IF_ERROR(EncodeRule(xt, r));
//   IPTKIT_ASSIGN_OR_RETURN(XtRule back, DecodeRuleMessage(Family::kIPv4, nlh));   // a kernel rule message
#ifndef IPTKIT_SRC_BACKEND_NATIVE_RULE_CODEC_H_
#define IPTKIT_SRC_BACKEND_NATIVE_RULE_CODEC_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "iptkit/status.h"
#include "src/backend/native/xt_rule.h"

struct nftnl_rule;
struct nlattr;
struct nlmsghdr;

namespace iptkit::backend::native {

// Adds the expressions and the compat attributes of `rule` to `r` (family, table, chain, handle and position are
// the caller's). InvalidArgument for what iptables-nft refuses while building a rule ("TCP match requires
// '-p tcp'").
Status EncodeRule(const XtRule& rule, nftnl_rule* r);

// Where a rule message (NFT_MSG_NEWRULE, as the kernel dumps or echoes it) belongs, read from its attributes
// without decoding the expressions. The views point into the message.
struct RuleLocation {
  std::string_view table, chain;
  uint64_t handle = 0;
  const nlattr* expressions = nullptr;  // NFTA_RULE_EXPRESSIONS
  const nlattr* userdata = nullptr;     // NFTA_RULE_USERDATA
};
RuleLocation RuleMessageLocation(const nlmsghdr* nlh);

// The XtRule of a rule message (expressions, counter, userdata comment), read straight from its netlink
// attributes. FailedPrecondition naming the expression or value it does not understand.
Result<XtRule> DecodeRuleMessage(Family family, const nlmsghdr* nlh);

// DecodeRule(EncodeRule(rule)) through a netlink message, as if the kernel had stored and dumped it: what
// iptables-nft-save would print for a rule iptables-nft wrote.
Result<XtRule> RoundTrip(const XtRule& rule);

}  // namespace iptkit::backend::native

#endif  // IPTKIT_SRC_BACKEND_NATIVE_RULE_CODEC_H_
