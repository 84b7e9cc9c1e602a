// MakeBackend: picks and creates the backend for a BackendKind (docs/architecture.md §3, "Variants"), and records
// why, for `iptkit info`.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <optional>
#include <string>
#include <utility>

#include "src/backend/backend.h"
#include "src/backend/fake/fake_backend.h"
#include "src/backend/legacy/xt_fingerprint.h"
#include "src/backend/legacy/xtables_backend.h"
#include "src/backend/native/native_backend.h"
#include "src/backend/restore/restore_backend.h"
#include "src/base/netns.h"

namespace iptkit::backend {
namespace {

// Forwards everything to `inner`; Info() also says why this backend was chosen.
class ChosenBackend final : public Backend {
 public:
  ChosenBackend(std::unique_ptr<Backend> inner, std::string reason)
      : inner_(std::move(inner)), reason_(std::move(reason)) {}
  const BackendTraits& traits() const override { return inner_->traits(); }
  Result<Ruleset> Read(Family family, const std::optional<std::string>& table, bool fresh_counters) override {
    return inner_->Read(family, table, fresh_counters);
  }
  Result<SaveText> ReadSaveText(Family family, const std::optional<std::string>& table, bool counters) override {
    return inner_->ReadSaveText(family, table, counters);
  }
  Result<Ruleset> ReadRules(Family family, const std::optional<std::string>& table, RuleVisitor& visitor) override {
    return inner_->ReadRules(family, table, visitor);
  }
  Result<Ruleset> ReadForPlan(Family family, SnapshotDetail detail) override {
    return inner_->ReadForPlan(family, detail);
  }
  Result<Ruleset> ReadChainsForPlan(Family family, SnapshotDetail detail, const ChainScope& scope) override {
    return inner_->ReadChainsForPlan(family, detail, scope);
  }
  Result<bool> HoldsExactRule(Family family, const std::string& table, const std::string& chain,
                              const Rule& rule) override {
    return inner_->HoldsExactRule(family, table, chain, rule);
  }
  bool Unchanged(Family family) override { return inner_->Unchanged(family); }
  Result<CommitReport> Commit(const std::vector<CommitTable>& tables) override { return inner_->Commit(tables); }
  using Backend::Commit;
  Result<std::vector<Rule>> Canonicalize(Family family, const std::string& table,
                                         const std::vector<Rule>& rules) override {
    return inner_->Canonicalize(family, table, rules);
  }
  Result<std::unique_ptr<LockGuard>> Lock(std::chrono::milliseconds wait) override { return inner_->Lock(wait); }
  Result<FirewallInfo> Info() override {
    IPTKIT_ASSIGN_OR_RETURN(FirewallInfo info, inner_->Info());
    info.backend_reason = reason_;
    return info;
  }

 private:
  std::unique_ptr<Backend> inner_;
  std::string reason_;
};

Result<std::unique_ptr<Backend>> Restore(Variant variant, const BackendOptions& options, std::string reason) {
  IPTKIT_ASSIGN_OR_RETURN(std::unique_ptr<Backend> b, NewRestoreBackend(variant, options));
  return std::unique_ptr<Backend>(std::make_unique<ChosenBackend>(std::move(b), std::move(reason)));
}

// The in-process legacy backend with its reason; FailedPrecondition when libxtables cannot be used in this process
// (the caller then falls back to the restore backend).
Result<std::unique_ptr<Backend>> NativeLegacy(const BackendOptions& options, std::string reason) {
  IPTKIT_ASSIGN_OR_RETURN(std::unique_ptr<Backend> b, legacy::NewXtablesBackend(options));
  return std::unique_ptr<Backend>(std::make_unique<ChosenBackend>(std::move(b), std::move(reason)));
}

native::NativeOptions Reason(std::string reason) {
  native::NativeOptions o;
  o.reason = std::move(reason);
  return o;
}

std::string Count(size_t n) { return std::to_string(n) + (n == 1 ? " rule" : " rules"); }

// Whether the caller's own network namespace surely has no x_tables (legacy) table: neither family's names file
// lists one (the kernel lists every table that exists; the file is missing while the module is not loaded). Two
// opens and reads, where the probe below also opens a raw socket per family. The directory is looked up once
// (each path walk through /proc/<pid> of a new process instantiates its entries): /proc/self/net from the
// process's first thread, whose namespace it shows, else /proc/thread-self/net.
bool NoLegacyTableHere(const BackendOptions& options) {
  if (!options.netns.empty()) return false;
  const char* dir_path = ::gettid() == ::getpid() ? "/proc/self/net" : "/proc/thread-self/net";
  base::UniqueFd dir(::open(dir_path, O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!dir.valid()) return false;
  for (const char* name : {"ip_tables_names", "ip6_tables_names"}) {
    base::UniqueFd fd(::openat(dir.get(), name, O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) {
      if (errno == ENOENT) continue;
      return false;
    }
    char c;
    if (::read(fd.get(), &c, 1) != 0) return false;  // a table (or an error): the probe counts
  }
  return true;
}

// The rules of the x_tables (legacy) tables that exist, both families (never instantiating a table); nullopt when
// they cannot be read (the full count then decides, errors included).
std::optional<size_t> LegacyRules(const BackendOptions& options) {
  if (NoLegacyTableHere(options)) return 0;
  Result<base::UniqueFd> ns = base::OpenNetns(options.netns);
  if (!ns.ok()) return std::nullopt;
  Result<std::unique_ptr<legacy::XtablesProbe>> probe = legacy::XtablesProbe::Open(ns->get());
  if (!probe.ok()) return std::nullopt;
  size_t rules = 0;
  for (Family family : {Family::kIPv4, Family::kIPv6}) {
    Result<legacy::Fingerprint> fp = (*probe)->Read(family);
    if (!fp.ok()) return std::nullopt;
    for (const legacy::TableFingerprint& t : *fp) rules += t.rules;
  }
  return rules;
}

std::string AutoReason(const VariantRuleCounts& counts) {
  return "auto: nf_tables holds " + Count(counts.nft) + ", x_tables (legacy) " + Count(counts.legacy);
}

}  // namespace

Result<std::unique_ptr<Backend>> MakeBackend(BackendKind kind, const BackendOptions& options) {
  switch (kind) {
    case BackendKind::kFake:
      return NewFakeBackend();
    case BackendKind::kNft:
      return Restore(Variant::kNft, options, "requested (--backend nft: iptables-nft-restore / -save)");
    case BackendKind::kLegacy:
      return Restore(Variant::kLegacy, options, "requested (--backend legacy: iptables-legacy-restore / -save)");
    case BackendKind::kNative:
      return native::NewNativeBackend(options, Reason("requested (--backend native)"));
    case BackendKind::kNativeLegacy:
      return NativeLegacy(options, "requested (--backend native-legacy: x_tables in-process through libiptc)");
    case BackendKind::kAuto: {
      // The variant that holds rules judges the packets; with rules in both (or neither) nft, the default of
      // current distributions, is chosen and `info` warns about the other one. Either variant is handled in-process
      // (native on nft, native-legacy on legacy) whenever libxtables can be used (not in a process whose real and
      // effective ids differ); otherwise through the variant's restore / save tools.
      //
      // Without legacy rules the choice is nft whatever nf_tables holds, so nf_tables is not counted then: that
      // would dump and decode every rule of both families, for each one-op CLI process. The reason, with both
      // counts as before, is then worked out when Info asks for it.
      if (std::optional<size_t> legacy_rules = LegacyRules(options); legacy_rules && *legacy_rules == 0) {
        native::NativeOptions lazy;
        lazy.reason_at_info = [options] {
          Result<VariantRuleCounts> counts = CountRulesPerVariant(options);
          return (counts.ok() ? AutoReason(*counts) : "auto: x_tables (legacy) holds no rules") +
                 ": the nft variant, natively";
        };
        auto native = native::NewNativeBackend(options, std::move(lazy));
        if (native.ok() || native.status().code() != StatusCode::kFailedPrecondition) return native;
      }
      IPTKIT_ASSIGN_OR_RETURN(VariantRuleCounts counts, CountRulesPerVariant(options));
      const Variant variant = PickVariant(counts);
      const std::string found = AutoReason(counts);
      if (variant == Variant::kLegacy) {
        auto in_process = NativeLegacy(options, found + ": the legacy variant, natively (libiptc)");
        if (in_process.ok() || in_process.status().code() != StatusCode::kFailedPrecondition) return in_process;
        return Restore(
            Variant::kLegacy, options,
            found + ": the legacy variant through iptables-legacy-restore (" + in_process.status().message() + ")");
      }
      auto native = native::NewNativeBackend(options, Reason(found + ": the nft variant, natively"));
      if (native.ok() || native.status().code() != StatusCode::kFailedPrecondition) return native;
      return Restore(Variant::kNft, options,
                     found + ": the nft variant through iptables-nft-restore (" + native.status().message() + ")");
    }
  }
  return Status::InvalidArgument("unknown backend kind");
}

}  // namespace iptkit::backend
