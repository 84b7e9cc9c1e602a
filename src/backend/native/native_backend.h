// NativeBackend: iptables rules on nf_tables without iptables processes. One persistent NETLINK_NETFILTER socket,
// opened inside the target network namespace, reads and writes the tables iptables-nft manages (ip/ip6 filter,
// nat, mangle, raw, security) exactly as iptables-nft 1.8.9 would, so iptables-nft-save, `iptables -C/-D/-L` and
// iptables-nft itself see the same rules as if iptables had made them.
//
// Contracts beyond backend.h:
//  - Read dumps tables, chains, rules and sets of the family (or of one table) over netlink, between two reads of
//    the generation id (retried, at most 5 times, when they differ: a snapshot is of exactly one generation), and
//    decodes every rule into the model through the rule codec and libxtables (xtables.h): the Rule is the one the
//    text parser gives for iptables-nft-save's line. A table with a rule that cannot be decoded exactly (native nft
//    expressions, set lookups, anything iptables-nft-save would fail on or print lossily), with nft sets, with base
//    chains iptables does not make, or with chain names iptables cannot take, gets unrepresentable_reason naming
//    the rule's handle and what was not understood. A whole-family read for planning (fresh_counters = false), and
//    with event_cache every whole-family read, is cached with its generation id; Read(fresh_counters = false) and
//    Unchanged answer from it while the kernel's id is the same (one round trip). A Read with fresh counters (a
//    listing) without event_cache is kept too, as a copy, unless the backend is one_shot (it then hands its model to
//    the caller: no copy of every rule); a read of one table is kept as a snapshot of that table, which answers only
//    plans that look at that table alone (ChainScope::named_only with tables). A plan's read answered from a kept
//    snapshot gets the chains its scope names (at kRules, a chain it deletes from by spec with only its rules equal
//    to the spec), not a copy of every rule.
//  - Commit sends every table batch of the call as ONE nfnetlink batch: atomic across tables and across IPv4 and
//    IPv6. Positions and specs of the ops are resolved against the snapshot they were planned on, and rules are
//    addressed by kernel handle: delete / replace name the rule itself, inserts are placed next to a handle (an
//    anchored insert after the rule before it, or before the rule after it when only that one is owned). When
//    some op's meaning depends on that snapshot beyond the handles it names (a `-C` precondition, an absolute
//    position, a flush, -Z, a whole-table restore: NeedsSnapshot in the .cc), the batch carries the snapshot's
//    generation id; when anything was committed since, the kernel refuses it (ERESTART) and Commit returns Aborted
//    (stats().stale_generation counts them) so that the caller re-reads and re-plans (txn::LockedCommit does, with
//    backoff). A batch of handle-anchored ops only (appends, inserts at the head or TableOp::anchored, deletes by
//    spec, chain ops the kernel checks itself) goes without it: another writer's unrelated commit does not make it
//    stale, and a change it cannot take (its rule, chain or anchor gone) fails in the kernel with NotFound,
//    AlreadyExists or FailedPrecondition, nothing committed. Handles of rules added are learned from the kernel's echo
//    (NLM_F_ECHO); the cached snapshot is then updated in place, as of the commit's generation id (one more than
//    before: ours), which comes with the kernel's answer to a batch that adds first and is otherwise not asked for
//    (with event_cache it is): every later use of the cache compares it with the kernel's id first.
//  - Tables and builtin chains are created on first use with iptables-nft's hook, priority and type; a whole-table
//    restore (flush_table) deletes and re-creates the table in the same batch, as iptables-nft-restore does.
//  - Ops the native encoder cannot express (renaming a chain created in the same commit; extensions listed in
//    NativeOptions::unsupported_extensions, a test knob) send the WHOLE call through the restore backend (nft
//    variant, table by table); the CommitReport says so (backend "nft", fallback_reason).
//  - A kernel error names the op (its restore line) and the table: InvalidArgument (nothing was committed),
//    Aborted for ERESTART, PermissionDenied for EPERM.
//  - Canonicalize is in-process (libxtables parse → iptables-nft's encoding → decoding → the save text → the
//    model), cached per (family, spec); no namespace, no process.
//  - Lock() is a no-op guard: correctness against other writers comes from the generation id.
// Thread-safety: one thread at a time (like every Backend).
//
//   IPTKIT_ASSIGN_OR_RETURN(auto backend, NativeBackend::Create({.netns = "blue"}));
//   IPTKIT_ASSIGN_OR_RETURN(Ruleset rs, backend->Read(Family::kIPv4));
//   IPTKIT_RETURN_IF_ERROR(backend->Commit(TableBatch{.family = Family::kIPv4, .table = "filter", .ops = {...}}));
#ifndef IPTKIT_SRC_BACKEND_NATIVE_NATIVE_BACKEND_H_
#define IPTKIT_SRC_BACKEND_NATIVE_NATIVE_BACKEND_H_

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "src/backend/backend.h"
#include "src/backend/native/event_feed.h"
#include "src/backend/native/nft_batch.h"
#include "src/backend/native/xt_rule.h"
#include "src/backend/nft/netlink_client.h"
#include "src/base/unique_fd.h"

namespace iptkit::backend::native {

class DumpVisitor;  // native_read.h

struct NativeOptions {
  // Test knob: send batches without the generation id of their snapshot, so that the kernel applies them to
  // whatever it holds (what the concurrency tests show to go wrong).
  bool check_generation = true;
  // Test knob: matches / targets the native encoder treats as not expressible (a transaction using one goes
  // through the restore backend).
  std::set<std::string> unsupported_extensions;
  // Long-lived users (the daemon): keep the cached snapshots fresh from nf_tables' change notifications
  // (event_feed.h) instead of asking the kernel for its generation id before each use; tables a foreign transaction
  // touched are read again (only those), a whole family after lost notifications. Counters are never taken from
  // the cache (Read with fresh_counters reads them). A one-op process gains nothing from it.
  bool event_cache = false;
  // Ask the kernel to echo each rule a batch adds (NLM_F_ECHO), whose handle the snapshot then records, so that a
  // later call can address the rule without reading the chain again; off (BackendOptions::one_shot), a commit that
  // added rules drops the snapshot instead.
  bool echo_rules = true;
  // Test knob: the event socket's receive buffer in bytes (0: EventFeed::kDefaultReceiveQueue).
  int event_rcvbuf = 0;
  // Why this backend was chosen (FirewallInfo::backend_reason): `reason_at_info()` when set (a reason that costs
  // kernel reads to word, worked out only when Info asks), else `reason`.
  std::string reason;
  std::function<std::string()> reason_at_info;
};

class NativeBackend final : public Backend {
 public:
  // Opens the netns of `options` and the netlink socket inside it. FailedPrecondition when libxtables cannot be used
  // in this process (setuid: real and effective ids differ).
  static Result<std::unique_ptr<NativeBackend>> Create(const BackendOptions& options, NativeOptions native = {});
  ~NativeBackend() override;

  // name "native", variant "nft"; atomic across tables; handles; no lock; no rename-then-use in one commit.
  const BackendTraits& traits() const override { return traits_; }
  Result<Ruleset> Read(Family family, const std::optional<std::string>& table = std::nullopt,
                       bool fresh_counters = true) override;
  // Prints each rule's save line from its binary form as the rules arrive (libxtables' save text, as
  // iptables-nft-save prints it), without the model and without touching the cache: byte for byte FormatSave of
  // Read(family, table). `read` holds the tables and chains printed (with unrepresentable_reason), no rules.
  Result<SaveText> ReadSaveText(Family family, const std::optional<std::string>& table, bool counters) override;
  // Read's rules decoded a slice at a time into the same model rules, handed over and reused (native_save.cc):
  // neither the binary rules of the whole dump nor a model rule per rule are held. Does not touch the cache.
  Result<Ruleset> ReadRules(Family family, const std::optional<std::string>& table, RuleVisitor& visitor) override;
  // kChains reads tables and chains only; kPositions also the rules' handles (placeholders in the model); both
  // skip decoding. Cached like a whole-family read, each at its detail.
  Result<Ruleset> ReadForPlan(Family family, SnapshotDetail detail) override;
  // Tables and chains, and the rules of the chains in `scope` only: one rule dump per chain in scope, filtered by
  // the kernel (NFTA_RULE_TABLE / NFTA_RULE_CHAIN in the dump request), so that planning a delete in one chain of
  // many reads and decodes that chain alone. Cached like ReadForPlan; a narrowed snapshot is never served as a whole
  // one (Read, Unchanged). With the event cache (the daemon keeps whole families fresh) or unsupported_extensions
  // it is ReadForPlan. A chain of ChainScope::probes (a delete by spec) is scanned, not kept: each of its rules is
  // decoded and compared with the probes as it arrives, and the chain is given with only the rules equal to one of
  // them, in kernel order (the others left out: nothing of them is needed to delete the first equal rule by its
  // handle); when a probe is not found, or a rule of the chain cannot be decoded, the chain is decoded whole.
  Result<Ruleset> ReadChainsForPlan(Family family, SnapshotDetail detail, const ChainScope& scope) override;
  bool Unchanged(Family family) override;
  // Dumps the rules of that one chain (filtered by the kernel) and compares each one's binary form, decoded but
  // not printed, with the encoding of `rule` as read back (RoundTrip), counters aside; stops at the first equal one.
  Result<bool> HoldsExactRule(Family family, const std::string& table, const std::string& chain,
                              const Rule& rule) override;
  Result<CommitReport> Commit(const std::vector<CommitTable>& tables) override;
  using Backend::Commit;
  Result<std::vector<Rule>> Canonicalize(Family family, const std::string& table,
                                         const std::vector<Rule>& rules) override;
  Result<std::unique_ptr<LockGuard>> Lock(std::chrono::milliseconds wait) override;
  Result<FirewallInfo> Info() override;

  // What happened so far (tests, benchmarks).
  struct Stats {
    uint64_t dumps = 0;              // netlink reads of a family or table
    uint64_t cache_hits = 0;         // reads answered from the cached snapshot
    uint64_t batches = 0;            // batches sent
    uint64_t stale_generation = 0;   // batches the kernel refused with ERESTART
    uint64_t checked_batches = 0;    // batches sent with the generation id (some op needs the snapshot)
    uint64_t anchored_batches = 0;   // batches sent without it (every op anchored by handle)
    uint64_t restore_fallbacks = 0;  // commits sent through the restore backend
    uint64_t probe_scans = 0;        // chains searched for a delete by spec without keeping their rules
    // event_cache only:
    uint64_t event_hits = 0;          // uses of a cached snapshot the notifications proved current
    uint64_t event_applied = 0;       // foreign transactions' rule changes applied to a table from notifications
    uint64_t event_kept_commits = 0;  // own commits after a foreign one whose snapshot was kept (not read again)
    uint64_t event_table_reads = 0;   // tables read again because a foreign transaction changed them
    uint64_t event_resyncs = 0;       // families read whole again after lost notifications (overflow, gap)
  };
  const Stats& stats() const { return stats_; }
  NativeOptions& native_options() { return native_; }
  bool has_cached_snapshot(Family family) const { return cache_.count(family) != 0; }
  // The netlink client: what was asked of the kernel (NetlinkClient::requests; tests).
  const nft::NetlinkClient& netlink() const { return *netlink_; }
  // The notification reader (event_cache), or nullptr.
  const EventFeed* event_feed() const { return events_.get(); }

  // Implementation types (public for the helpers in native_backend.cc).
  struct Slot {
    uint64_t handle = 0;               // 0 while only planned (added in the batch being built)
    uint32_t id = 0;                   // NFTA_RULE_ID of a rule added in the batch being built
    std::shared_ptr<const XtRule> xt;  // its binary form (re-encoded by -Z)
  };
  // Where an own commit put a rule it added, as its NEWRULE said: at the head of the chain, at its end, right after
  // or right before the rule `anchor` (its handle); kOther: not known (a replace, an anchor not known by handle).
  struct OwnPlacement {
    enum class Kind { kOther, kHead, kEnd, kAfter, kBefore };
    Kind kind = Kind::kOther;
    uint64_t anchor = 0;
  };
  struct KChain {
    uint64_t handle = 0;  // 0 while only planned
    uint32_t id = 0;      // seq of the NEWCHAIN that creates it in the batch being built
    bool base = false;
    std::vector<Slot> rules;  // parallel to the model chain's rules
  };
  struct KTable {
    bool exists = false;
    std::map<std::string, KChain> chains;  // chains the kernel has
  };
  // (table, chain) → the canonical rules a plan searches for there (ChainScope::probes), each with its binary form
  // as read back from the kernel.
  using Probes = std::map<std::pair<std::string, std::string>, std::vector<std::pair<Rule, XtRule>>>;
  struct FamilyState {
    uint32_t generation = 0;
    SnapshotDetail detail = SnapshotDetail::kRules;  // what `ruleset` and the slots hold
    ChainScope scope;                                // whose rules they hold (ReadChainsForPlan)
    Ruleset ruleset;
    std::map<std::string, KTable> kernel;
  };

 private:
  NativeBackend(BackendOptions options, NativeOptions native, base::UniqueFd netns,
                std::unique_ptr<nft::NetlinkClient> netlink);
  // Dumps and decodes the family (or one table) at one generation, at `detail`, with the rules of the chains in
  // `scope`.
  // `probes`: chains of `scope` given with only the rules equal to one of these (and placeholders), when each of
  // them is found there byte for byte; else decoded whole. `closing_generation`: see DumpAtOneGeneration.
  Result<FamilyState> Dump(Family family, const std::optional<std::string>& table, SnapshotDetail detail,
                           const ChainScope& scope = {}, const Probes& probes = {}, bool closing_generation = true);
  // The netlink half of Dump and ReadSaveText: tables, chains, the rules of the chains in `scope` (not at kChains)
  // and, at kRules, the sets, all of one generation (read again, at most 5 times, while it moves; then Aborted), into
  // `visitor`. Returns that generation. The tables are every table of the family (one dump), or with a scope that
  // names its chains and its tables (ChainScope::named_only and tables) those tables only, each known from a named
  // chain of it or asked for by name. Without `closing_generation` the generation is read once, before the reads,
  // and returned: the caller reads it again after its own further requests and compares (ScanChains).
  Result<uint32_t> DumpAtOneGeneration(Family family, const std::optional<std::string>& table, SnapshotDetail detail,
                                       const ChainScope& scope, DumpVisitor& visitor, bool closing_generation = true);
  // The snapshot for a plan whose only rule reads are the probe chains' (see ReadChainsForPlan): tables, chains and
  // the rules of `scope.chains` as Dump gives them, each probe chain with only its rules equal to a probe, all of one
  // generation. nullopt when a probe is not found byte for byte or a rule of its chain does not decode (the caller
  // then decodes the chain whole, which says what is wrong) or the ruleset kept changing.
  Result<std::optional<FamilyState>> ScanProbes(Family family, const ChainScope& scope, const Probes& probes);
  // The snapshot at kPositions for `scope` (its chains, no probes): tables and chains as Dump gives them, and for
  // each chain in scope the handles of its rules, read from the rule messages without keeping anything else of them.
  // nullopt when the ruleset kept changing.
  Result<std::optional<FamilyState>> ScanPositions(Family family, const ChainScope& scope);
  // What ScanProbes and ScanPositions do to one chain in scope: fill its model chain and kernel chain from the
  // chain's rule dump; false when the scan cannot give the snapshot (the caller then reads otherwise).
  using ChainScan = std::function<bool(const std::string& table, const std::string& chain, iptkit::Table& model_table,
                                       Chain& model_chain, KChain& kernel_chain)>;
  // The attempt loop both scans share: Dump of `dumped` at `detail`, `scan` of each of `chains` that exists, then one
  // more read of the generation id says nothing changed meanwhile (else again, at most 3 times). The snapshot gets
  // `scope`. nullopt when a scan fails or the ruleset kept changing.
  Result<std::optional<FamilyState>> ScanChains(Family family, SnapshotDetail detail, const ChainScope& dumped,
                                                const ChainScope& scope,
                                                const std::vector<std::pair<std::string, std::string>>& chains,
                                                const ChainScan& scan);
  // The family's whole snapshot at kRules, current: the cached one when the notifications (event_cache) or the
  // kernel's generation id say it is, else read whole and kept.
  Result<const FamilyState*> CurrentWhole(Family family);
  // The binary forms of canonical rules (from the canonicalization cache, else parsed).
  Status EnsureXt(Family family, const std::vector<const Rule*>& rules);
  std::shared_ptr<const XtRule> XtOf(Family family, const Rule& rule) const;
  // Stores a snapshot read whole as the family's cache (and follows it with the event feed).
  void Remember(Family family, FamilyState st);
  // event_cache: whether cache_[family] is (made) current from the notifications, re-reading the tables foreign
  // transactions changed (or the family, after lost notifications). false: not known (the caller reads as without
  // the feed).
  bool FreshFromEvents(Family family);
  // Applies one foreign transaction's rule additions and deletions in a table (EventFeed::RuleChanges) to `st`
  // as the kernel made them: an added rule decoded from its notification and placed after the rule its
  // NFTA_RULE_POSITION names. false when that cannot be done exactly (a handle not in the snapshot, a rule that
  // does not decode, a table already unrepresentable, a place the notification leaves open): the caller then
  // reads the table again (`st` may be half changed).
  // `later_own`: handles of rules the backend's own commits after that transaction added (they are in `st`, the
  // transaction not yet), with where each commit put them. Which of them the kernel put before a rule of the
  // transaction placed next to them follows from that: a rule added at the head, or right after or before a rule
  // that is before the transaction's rule, is before it; one appended at the end, or next to a rule after it, is
  // after it. Where that is not known (kOther, an anchor gone), the table is read again.
  bool ApplyRuleChanges(Family family, FamilyState& st, const EventFeed::RuleChanges& changes,
                        const std::map<uint64_t, OwnPlacement>& later_own);
  // event_cache: the cached snapshot keeps the counters of its last read (of the table, or of the rule's
  // notification), and a rule a plan moves (deleted and added again, with the snapshot's counters, in a batch sent
  // with counters: the declarative planner's way of keeping them) would go back with those. Sets such re-added
  // rules' counters to the kernel's now: each rule asked for by its handle in the snapshot (the first rule equal to
  // it, which the delete by spec removes), the chain dumped when it is not found there. Returns whether any op was such
  // a move.
  bool FreshenMovedCounters(std::vector<CommitTable>& tables);
  Result<CommitReport> CommitThroughRestore(const std::vector<CommitTable>& tables, const std::string& why);
  std::optional<std::string> NotExpressible(const std::vector<CommitTable>& tables) const;

  BackendOptions options_;
  NativeOptions native_;
  BackendTraits traits_;
  base::UniqueFd netns_;
  std::unique_ptr<nft::NetlinkClient> netlink_;
  std::unique_ptr<EventFeed> events_;  // event_cache only
  std::unique_ptr<Backend> restore_;   // the fallback, created on first use
  BatchStorage batch_storage_;         // NftBatch's buffer, reused
  std::map<Family, FamilyState> cache_;
  // event_cache: own commits made on a snapshot another writer had committed after (Commit kept the snapshot, with
  // the commit in it; FreshFromEvents applies the other writer's changes and then forgets these): the commit's
  // generation (or a later one, which only makes more of the other writer's rules be placed with care) and the
  // handles of the rules it added, with where it put them when `generation` is the commit's own (`exact`, from the
  // batch's answer: a later one could be that of a transaction of the other writer after the commit, whose rules
  // are then placed with the commit's rules already there).
  struct OwnCommit {
    uint32_t generation = 0;
    bool exact = false;
    std::set<uint64_t> added;
    std::map<uint64_t, OwnPlacement> placed;  // by handle; exact commits only
  };
  std::map<Family, std::vector<OwnCommit>> own_commits_;
  bool freshening_counters_ = false;  // Commit of the copy FreshenMovedCounters made
  // (family, FormatRuleSpec of the input) → canonical rule; (family, canonical spec) → binary form.
  std::map<std::pair<Family, std::string>, Rule> canonical_;
  std::map<std::pair<Family, std::string>, std::shared_ptr<const XtRule>> xt_;
  Stats stats_;
};

Result<std::unique_ptr<Backend>> NewNativeBackend(const BackendOptions& options, NativeOptions native = {});

}  // namespace iptkit::backend::native

#endif  // IPTKIT_SRC_BACKEND_NATIVE_NATIVE_BACKEND_H_
