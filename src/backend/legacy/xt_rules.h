// The rules of an x_tables (iptables-legacy) table as the kernel holds them: each rule's entry from the table's
// blob (XtablesProbe's fingerprint, xt_fingerprint.h), normalized into a "kernel form" that compares equal exactly
// when two rules are the same kernel rule wherever they sit. iptables -C/-D compare entries the same way (libiptc
// is_same: the ipt_entry header, every match and the target, up to each extension's user-visible size).
//
// Normalized: the counters and `comefrom` (hook bits the kernel computes from the rule's place) are zeroed; a
// jump's verdict, which is the blob offset of the target chain, becomes the chain's name (a rule without a target,
// which libiptc encodes as a jump to the next entry, becomes "next"); ipset indexes in the set match and the SET
// target are zeroed (an index names a set only within one network namespace; the rule's text carries the name).
//
// Layout (libiptc.c, the kernel's ip_tables.c): builtin chains start at hook_entry[hook] and end with their policy
// entry at underflow[hook]; a user chain is an ERROR entry carrying its name, its rules, and a RETURN entry; the
// table ends with an ERROR entry. iptables-legacy-save prints chains and rules in this order.
// Thread-safety: pure functions.
//
//   IPTKIT_ASSIGN_OR_RETURN(legacy::Fingerprint fp, probe->Read(Family::kIPv4));
//   IPTKIT_ASSIGN_OR_RETURN(legacy::ChainRuleForms forms, legacy::RuleForms(Family::kIPv4, fp[0]));
//   forms["INPUT"][0]  // the kernel form of the first rule of INPUT
#ifndef IPTKIT_SRC_BACKEND_LEGACY_XT_RULES_H_
#define IPTKIT_SRC_BACKEND_LEGACY_XT_RULES_H_

#include <map>
#include <string>
#include <vector>

#include "iptkit/model.h"
#include "iptkit/status.h"
#include "src/backend/legacy/xt_fingerprint.h"

namespace iptkit::backend::legacy {

// Chain name → the kernel forms of its rules, in order (every chain of the table, also empty ones).
using ChainRuleForms = std::map<std::string, std::vector<std::string>>;

// Parses one table's fingerprint. Internal for a blob that does not have the layout above.
Result<ChainRuleForms> RuleForms(Family family, const TableFingerprint& table);

}  // namespace iptkit::backend::legacy

#endif  // IPTKIT_SRC_BACKEND_LEGACY_XT_RULES_H_
