// XtablesBackend ("native-legacy"): iptables rules on x_tables (the legacy variant) without iptables processes. It
// talks to the kernel the way iptables-legacy and python-iptables do, through libiptc (Debian's libip4tc /
// libip6tc): a table is read with IPT_SO_GET_INFO / GET_ENTRIES (iptc_init), changed in memory, and committed with
// ONE IPT_SO_SET_REPLACE (iptc_commit), followed by IPT_SO_SET_ADD_COUNTERS for the packets the old table counted
// meanwhile. Extension payloads are parsed and printed in-process by libxtables (native/xtables.h).
//
// Why libiptc rather than building the blob here: libiptc is exactly what iptables-legacy(-restore) commits with,
// so the kernel ends up with byte-identical tables (chain layout, jump offsets, policy and user-chain RETURN
// entries, ERROR heads); it keeps the counters of unchanged rules (the replace hands back the old counters, which it
// adds to the new table by position); and it is the reference for -C/-D equality (is_same). Writing our own blob
// would duplicate all of that and its corner cases (counter mapping of moved rules, renamed chains) for no gain:
// libiptc's in-memory edit of a 10,000-rule table costs a few milliseconds.
//
// Contracts beyond backend.h:
//  - Read lists the tables of /proc/net/ip{,6}_tables_names of the target netns (a table that is not listed is never
//    touched: asking for it would instantiate it) and decodes every entry into the model: the ipt_entry / ip6t_entry
//    header (addresses and masks, interfaces with `+` wildcards, protocol, fragment flag, inversions) and each
//    match and target through libxtables, as iptables-legacy-save prints it. A rule that cannot be decoded (an
//    extension libxtables does not know) makes the table unrepresentable (Table::unrepresentable_reason). Every read
//    takes the tables from the kernel (counters are always fresh); a rule is decoded once per backend and then taken
//    from a cache keyed by its entry bytes (counters zeroed, jumps by chain name, extension names without what
//    follows their NUL), except set-match / SET rules.
//  - ReadChainsForPlan (and ReadForPlan) read only what a plan asks for, as iptables-legacy reads only what it
//    changes: only the tables of ChainScope::tables when it names any (one iptc_init each; every table otherwise),
//    their chains and policies always, the rules of the chains in scope only (kPositions:
//    placeholders; kRules: decoded). A delete by spec's rule (ChainScope::probes) is found by comparing each entry
//    of its chain with the entry the rule is written as (header, then each match's and the target's size, name,
//    revision and data, as libiptc's is_same with a full mask), so nothing is decoded; only when it is not found
//    that way is the chain decoded. Without ChainScope::probe_positions such a chain (not in ChainScope::chains)
//    holds only the rules found, no placeholders. A table's unrepresentable_reason judges only the rules it decoded.
//  - Under Lock() the handles a plan read are kept (traits commits_plan_snapshot) and Commit edits and commits the
//    very handle the plan was made on: one iptc_init per change, as iptables-legacy. A writer that does not take
//    the xtables lock and changes the table in between changes its entry count (an append, insert or delete) and
//    the kernel refuses the commit (EAGAIN: Aborted, so txn::LockedCommit reads and plans again); a change that
//    keeps the count (a replace, a policy) in that window is overwritten, as by iptables-legacy. The handles go
//    when the guard goes. A -D by spec in a chain whose probes that read found byte for byte deletes the first
//    entry that is the rule byte for byte, by its position (the entry the plan found; libiptc's is_same skips
//    revisions and interface bytes past the mask); elsewhere libiptc's delete decides. -D N / -R N are sent as
//    such (the position is the plan's), and refused with FailedPrecondition when the rule at N cannot be decoded
//    (iptkit never removes a rule it cannot show).
//  - Commit is table by table (CommitTableByTable), each table ONE SET_REPLACE of libiptc's edited copy: a batch
//    whose op fails in libiptc (no such chain / rule, chain in use) or whose new table the kernel refuses changes
//    nothing. Errors name the op (its restore line) and the table.
//  - -C / -D compare like libiptc's is_same with a mask of every byte of the rule: the kernel returns each
//    extension's user-visible part followed by zeros, and libxtables leaves kernel-private fields zero.
//  - Lock(): flock(BackendOptions::xtables_lock_path), the lock iptables-legacy takes; a Commit outside a Lock()
//    takes it for its own duration (on a fresh handle). Nested guards of one backend share the outer flock.
//  - HoldsExactRule compares the chain's entries with the rule's entry (as for probes above).
//  - Canonicalize is in-process (libxtables parse → the save text → the model), cached per (family, spec).
//  - Info delegates the variant survey to the legacy restore backend (iptables-*-save), naming this backend.
// Thread-safety: one thread at a time (like every Backend); libiptc calls of all instances are serialized.
//
//   IPTKIT_ASSIGN_OR_RETURN(auto backend, legacy::NewXtablesBackend({.netns = "blue"}));
//   IPTKIT_ASSIGN_OR_RETURN(Ruleset rs, backend->Read(Family::kIPv4));
#ifndef IPTKIT_SRC_BACKEND_LEGACY_XTABLES_BACKEND_H_
#define IPTKIT_SRC_BACKEND_LEGACY_XTABLES_BACKEND_H_

#include <memory>

#include "src/backend/backend.h"

namespace iptkit::backend::legacy {

// FailedPrecondition when libxtables cannot be used in this process (real and effective ids differ).
Result<std::unique_ptr<Backend>> NewXtablesBackend(const BackendOptions& options);

}  // namespace iptkit::backend::legacy

#endif  // IPTKIT_SRC_BACKEND_LEGACY_XTABLES_BACKEND_H_
