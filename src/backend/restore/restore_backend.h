// RestoreBackend: the portable backend. Reads with iptables-{nft,legacy}-save (ip6tables-* for IPv6), writes by
// piping one "*table ... COMMIT" block into iptables-{nft,legacy}-restore --noflush --wait N, all spawned inside
// the target network namespace (src/base/subprocess.h). docs/architecture.md §3 lists the netfilter facts this rests
// on.
//
// Contracts beyond backend.h:
//  - Read is one save spawn (+ on nft a native netlink dump of the same tables, src/backend/nft/; on legacy always
//    of the whole family, the wanted table picked from it). It fails (never a partial snapshot) when the save tool
//    exits non-zero or prints "Parsing nftables rule failed", "incompatible" or the "iptables-legacy tables
//    present" warning. On nft, a table whose kernel rules do not match the save text (rule count per chain, chains
//    save does not show, or rules using nft features iptables-nft-save prints lossily, e.g. an anonymous set
//    `ip saddr { 1.1.1.1, 2.2.2.2 } accept` that prints as `-A INPUT -j ACCEPT`) gets unrepresentable_reason.
//  - Snapshot cache (nft only; docs/architecture.md §3 "keep a model and refresh it"). A whole-family Read records the
//    nf_tables generation id G read BEFORE the save, and keeps the snapshot only when the id is still G after the
//    save and the netlink dump: then nothing was committed in between (the kernel bumps the id on every commit
//    that changes anything, in any family), so save and dump both show generation G exactly. A concurrent change
//    can only make the ids differ — a re-read (up to 3 attempts; the last one is returned uncached), never a stale
//    cache. Read(fresh_counters = false) first reads the id (one netlink round trip) and returns the cached
//    snapshot when it is still G; counters may then be stale. After a successful Commit the id is read again:
//    exactly one more than just before the restore, for a batch that surely commits (-A -I -D -R -N -X -E; one
//    iptables-nft-restore run is one kernel transaction, netlink_client_test OneRestoreRunIsOneGeneration),
//    means the bump was ours, and the cached table is updated by simulating the batch (table_sim.h ApplyTableOp)
//    when all its rules are known canonical (outputs of Canonicalize or rules of the snapshot); the other
//    families' entries of that generation move along. Anything else (another id, a batch that may or may not
//    commit such as only -F/-Z/-P, flush_table / with_counters batches, a failed simulation) drops the cache.
//    Legacy tables created meanwhile do not bump the id: a cached read does not repeat the save's warning about
//    them (the nft snapshot itself is still exact).
//  - Snapshot cache (legacy). x_tables has no generation id; the change detector is the family's fingerprint
//    (src/backend/legacy/xt_fingerprint.h: the rule blob of every table, counters zeroed, read with two
//    getsockopt calls per table, no spawn). A whole-family save is kept only when (a) the fingerprint read BEFORE
//    the save equals the one read AFTER it and names the tables the save printed, in its order (else re-read, up
//    to 3 attempts, the last one uncached), and (b) this backend holds the xtables lock (LockGuard, as Firewall
//    does across read → commit): a content fingerprint, unlike a counter, cannot tell A from A→B→A, so only
//    excluding lock-respecting writers during the save makes "unchanged" mean "save saw this state".
//    Read(fresh_counters = false) returns the cached snapshot when the fingerprint now equals the recorded one —
//    byte-equal blobs are equal rulesets, whatever happened in between; counters may then be stale.
//    Commit (the lock is held throughout, ours or the guard's): the fingerprint is compared with the cached one
//    first (a foreign write since the read → drop) unless the cache was checked or recorded during the current
//    hold of a LockGuard (no lock-respecting writer can have run since), then the restore runs, then the cached table
//    is updated by ApplyTableOp under the nft path's conditions (rules known canonical; not flush_table /
//    with_counters) and the fingerprint read right after the restore, still under the lock, is recorded with it. A new
//    table takes its place in /proc/net/ip_tables_names order (save's order). A failed restore replaced nothing
//    (libiptc replaces a table once, at COMMIT): the cache stays, and is checked by the next read anyway. Limits: a
//    writer that ignores the xtables lock (raw libiptc, another lock file or mount namespace) and changes a table
//    between our check and our restore, or between our restore and the fingerprint after it, is folded into the
//    recorded fingerprint without being in the model — the same writer also loses updates against iptables itself
//    (libiptc replaces whole tables). `ipset rename/swap` changes save's text without changing any blob (rules hold set
//    indexes), as it does not change the nft generation id either.
//  - Commit maps failures to the op: "line N failed" / "Error occurred at line: N" name the restore line, which
//    the Status quotes with the tool's stderr. A lock timeout is Unavailable. A rejection at the COMMIT line is
//    the kernel refusing the table (legacy logs the reason only to the kernel log) → InvalidArgument. Harmless
//    stderr noise of a successful run is ignored.
//  - Locking (legacy): Lock() and every Commit outside a Lock() hold flock(BackendOptions::xtables_lock_path)
//    with the wait bound; the children then use a private lock file through XTABLES_LOCKFILE (honoured by
//    iptables 1.8.9, xshared.c xtables_lock) so they neither deadlock on our lock nor wait forever. nft: Lock()
//    is a no-op guard (iptables-nft takes no lock; -C preconditions and its generation-id retry give
//    correctness). A LockGuard must not outlive its backend.
//  - Canonicalize computes the canonical form of simple rules itself (addresses, interfaces, comments, verdicts:
//    local_canonical.h, whose printed forms always load back to the same kernel rule) and loads the other uncached
//    rules as typed (FormatRuleForRestore) into a private ScratchNetns (created on first use, reused) as a user chain
//    of the same table (so hook restrictions do not apply), one restore + one save + one read of the kernel forms
//    for all of them, with the user chains they jump to, the ipsets they use (create line copied from the target
//    netns), nfacct objects and rate estimators (a RATEEST rule per name a rateest match uses). A printed form that
//    differs from the typed text is loaded too (one more restore for all of them), and when it does not give the
//    same kernel form the canonical rule is marked lossy (Rule::lossy, Rule::kernel_form = the typed rule's kernel
//    form). Results carry the input's typed form (or, for a rule without one, its printed form): that is what
//    Commit sends. Cached per (family, table, text sent). The table's part of the target placement is checked
//    first (CheckRuleLocally); a rule iptables refuses fails with iptables' own reason, naming the argument it
//    quotes (StatusDetails token/argument), never iptkit's scratch chain or a line of the scratch batch.
//  - Lossy prints. Read marks every rule whose printed form does not load back to the rule the kernel holds
//    (Rule::lossy with the reason, Rule::kernel_form): the kernel forms come from the same netlink dump (nft: every
//    rule's expressions, nft::KernelRule::form; a rule using an expression iptables-nft does not write is lossy
//    outright) or x_tables blob (legacy: legacy::RuleForms) that the read checks its snapshot with, and each distinct
//    printed form is loaded once in the scratch netns to learn its kernel form (cached per text). Examples: legacy
//    `-p tcp -m tcp ! --sport :` prints as `-p tcp -m tcp` (match-all), `! -i +` as nothing; on nft the former
//    prints as `-p tcp`.
// Thread-safety: one thread at a time (like every Backend).
//
//   IPTKIT_ASSIGN_OR_RETURN(auto backend, NewRestoreBackend(Variant::kNft, {.netns = "blue"}));
//   IPTKIT_ASSIGN_OR_RETURN(Ruleset rs, backend->Read(Family::kIPv4, "filter"));
//   TableBatch batch{.family = Family::kIPv4, .table = "filter", .ops = {...}};
//   IPTKIT_RETURN_IF_ERROR(backend->Commit(batch));
#ifndef IPTKIT_SRC_BACKEND_RESTORE_RESTORE_BACKEND_H_
#define IPTKIT_SRC_BACKEND_RESTORE_RESTORE_BACKEND_H_

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "src/backend/backend.h"
#include "src/backend/legacy/xt_fingerprint.h"
#include "src/backend/nft/netlink_client.h"
#include "src/base/netns.h"
#include "src/base/subprocess.h"
#include "src/base/unique_fd.h"

namespace iptkit::backend {

enum class Variant { kNft, kLegacy };
// "nft" / "legacy".
std::string_view VariantName(Variant variant);

// /usr/sbin/{iptables,ip6tables}-{nft,legacy}{suffix}; suffix "", "-save" or "-restore".
std::string IptablesToolPath(Variant variant, Family family, std::string_view suffix);

class RestoreBackend final : public Backend {
 public:
  // Opens the netns of `options` (kept open for the backend's lifetime).
  static Result<std::unique_ptr<RestoreBackend>> Create(Variant variant, const BackendOptions& options);
  ~RestoreBackend() override;

  // name and variant "nft" or "legacy"; table by table; no handles; legacy needs the xtables lock; nft cannot use a
  // chain renamed in the same commit.
  const BackendTraits& traits() const override { return traits_; }
  Result<Ruleset> Read(Family family, const std::optional<std::string>& table = std::nullopt,
                       bool fresh_counters = true) override;
  // Table by table (CommitTableByTable): one iptables-restore run per table.
  Result<CommitReport> Commit(const std::vector<CommitTable>& tables) override;
  using Backend::Commit;
  // True when a Read(family, nullopt, false) now would answer from the snapshot cache.
  bool Unchanged(Family family) override;
  Result<std::vector<Rule>> Canonicalize(Family family, const std::string& table,
                                         const std::vector<Rule>& rules) override;
  Result<std::unique_ptr<LockGuard>> Lock(std::chrono::milliseconds wait) override;
  Result<FirewallInfo> Info() override;

  Variant variant() const { return variant_; }
  // Number of distinct specs in the canonicalization cache, and how many of them were computed without iptables
  // (tests).
  size_t canonical_cache_size() const { return canonical_cache_.size(); }
  size_t local_canonicalized() const { return local_canonicalized_; }
  // What Read did so far (tests): save spawns, and reads answered from the snapshot cache.
  struct ReadStats {
    uint64_t saves = 0;
    uint64_t cache_hits = 0;
  };
  const ReadStats& read_stats() const { return read_stats_; }
  // Whether a snapshot of the family is cached (used only while the nft generation id / the legacy fingerprint is
  // unchanged).
  bool has_cached_snapshot(Family family) const { return snapshot_cache_.count(family) != 0; }

  // Implementation types (public for the helpers in restore_backend.cc).
  struct SaveOutput {
    Ruleset ruleset;
    std::string text;
    // Lenient reads only: what made the output incomplete.
    std::vector<std::string> incompatible_tables;
    std::vector<std::string> warnings;
  };
  struct LockState {
    int depth = 0;       // live guards of this backend holding the xtables lock
    uint64_t epoch = 0;  // bumped each time an outermost guard takes the lock (1 = the first hold)
  };

 private:
  // The cached snapshot as a Read of `table` (all tables when nullopt) returns it, counting a cache hit; nullopt
  // when the table is not in the cache.
  std::optional<Ruleset> CachedView(const Ruleset& cached, const std::optional<std::string>& table);
  RestoreBackend(Variant variant, BackendOptions options, base::UniqueFd netns);

  Result<base::SubprocessResult> Run(base::SubprocessOptions options, int netns_fd) const;
  // One save of `variant` in `netns_fd`; strict = the Read contract (markers are errors).
  Result<SaveOutput> RunSave(Variant variant, Family family, const std::optional<std::string>& table, int netns_fd,
                             bool strict) const;
  // One restore run; on failure, the tool's stderr goes to `stderr_text` when given.
  Status RunRestore(Family family, const std::string& table, const std::string& text, bool noflush, bool counters,
                    int netns_fd, std::string* stderr_text = nullptr) const;
  Result<std::string> PrivateLockFile();
  std::vector<std::pair<std::string, std::string>> ChildEnv() const;
  Status EnsureScratch(Family family, const std::vector<const Rule*>& rules);
  // One load of rules into the scratch netns (canonicalize.cc): per rule OK or iptables' error about it alone
  // (bisected), its kernel form, and with want_printed what the save tool prints for it.
  struct ScratchRule {
    std::string text;   // after "-A CHAIN "
    const Rule* model;  // what the text parses to: its jump target, sets, nfacct objects, rate estimators
  };
  struct ScratchResult {
    std::vector<Status> status;
    std::vector<std::string> forms;
    std::vector<Rule> printed;
  };
  Result<ScratchResult> RunInScratch(Family family, const std::string& table, const std::vector<ScratchRule>& rules,
                                     bool want_printed);
  // The kernel forms of the rules of `chain` in the scratch netns.
  Result<std::vector<std::string>> ScratchForms(Family family, const std::string& table, const std::string& chain);
  // Loads the printed forms not in printed_forms_ yet and records what each loads to.
  Status LearnPrintedForms(Family family, const std::string& table,
                           const std::vector<std::pair<std::string, const Rule*>>& texts);
  // The kernel's rules of a table per chain, in order, for MarkLossyRules.
  struct KernelRuleView {
    std::string form;   // the kernel form
    std::string lossy;  // why its expressions alone make it lossy ("" = they do not)
  };
  using KernelRuleForms = std::map<std::string, std::vector<KernelRuleView>>;
  // Sets Rule::lossy / kernel_form on every rule of `table` (as read) whose printed form does not load back to the
  // kernel's rule. Chains whose rule count differs from the kernel's are left alone (the table is unrepresentable).
  Status MarkLossyRules(Family family, Table& table, const KernelRuleForms& kernel);
  Result<nft::NetlinkClient*> Netlink();
  Result<legacy::XtablesProbe*> XtProbe();
  Result<Ruleset> ReadLegacy(Family family, const std::optional<std::string>& table, bool fresh_counters);
  // After a successful restore of `batch` on legacy, with the xtables lock still held: update or drop the
  // family's cached snapshot (see the contract above).
  void UpdateLegacyCache(const TableBatch& batch);
  // MarkLossyRules for every table of a legacy save whose blob was the same before and after it; a table that
  // changed during the save gets unrepresentable_reason (its rules cannot be judged).
  void MarkLossyLegacy(Family family, Ruleset& rs, const legacy::Fingerprint& before,
                       const Result<legacy::Fingerprint>& after);
  Result<Ruleset> ReadNft(Family family, const std::optional<std::string>& table, bool fresh_counters);
  // After a successful restore of `batch` on nft: update or drop snapshot_cache_ (see the contract above).
  void UpdateSnapshotCache(const TableBatch& batch, uint32_t generation_before);
  // Applies `batch` to the cached `table` in place; false when it cannot be simulated faithfully (then the table
  // may be half changed and the caller drops the cache entry).
  bool SimulateOnCache(Table& table, const TableBatch& batch) const;

  Status CommitOneTable(const TableBatch& batch);

  Variant variant_;
  BackendTraits traits_;
  BackendOptions options_;
  base::UniqueFd netns_;
  std::shared_ptr<LockState> lock_state_;
  std::string private_lock_path_;  // legacy: created on first use, removed by the destructor

  std::optional<base::ScratchNetns> scratch_;
  std::map<std::string, std::string> scratch_sets_;  // ipset name → create line (without initval)
  std::set<std::string> scratch_nfacct_;
  std::unique_ptr<nft::NetlinkClient> scratch_netlink_;  // nft: the scratch netns' rules, opened on first use
  std::unique_ptr<legacy::XtablesProbe> scratch_probe_;  // legacy: the same
  // What a printed form loads to in the scratch netns: its kernel form, or why iptables refuses it.
  struct PrintedForm {
    std::string form;
    std::string refused;
  };
  std::map<std::tuple<Family, std::string, std::string>, PrintedForm> printed_forms_;
  std::map<std::tuple<Family, std::string, std::string>, Rule> canonical_cache_;
  // FormatRuleSpec of every rule Canonicalize returned, per (family, table): known to be what save prints.
  std::set<std::tuple<Family, std::string, std::string>> canonical_outputs_;
  size_t local_canonicalized_ = 0;

  std::unique_ptr<nft::NetlinkClient> netlink_;     // nft: opened on first use, kept open
  std::unique_ptr<legacy::XtablesProbe> xt_probe_;  // legacy: opened on first Read, kept open
  struct CachedSnapshot {
    uint32_t generation = 0;  // nft
    Ruleset ruleset;
    legacy::Fingerprint fingerprint;  // legacy: the family's tables when `ruleset` was true
    uint64_t verified_epoch = 0;      // legacy: the lock hold during which it last matched the kernel (0: none)
  };
  std::map<Family, CachedSnapshot> snapshot_cache_;
  ReadStats read_stats_;
};

Result<std::unique_ptr<Backend>> NewRestoreBackend(Variant variant, const BackendOptions& options);

// ---- Variant detection (for the factory's BackendKind::kAuto) ----

// Rules held by each variant in the netns of `options`, both families, without spawning anything: nft from one
// netlink dump per family (iptables-nft's ip/ip6 tables), legacy from the x_tables blobs of the tables listed in
// /proc/net/ip{,6}_tables_names. A variant that cannot be read counts 0 and is named in `errors`.
struct VariantRuleCounts {
  size_t nft = 0;
  size_t legacy = 0;
  std::vector<std::string> errors;
};
Result<VariantRuleCounts> CountRulesPerVariant(const BackendOptions& options);
// The variant that holds rules; nft when neither or both do (docs/architecture.md §3).
Variant PickVariant(const VariantRuleCounts& counts);

}  // namespace iptkit::backend

#endif  // IPTKIT_SRC_BACKEND_RESTORE_RESTORE_BACKEND_H_
