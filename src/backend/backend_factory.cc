// MakeBackend: picks and creates the backend for a BackendKind (docs/architecture.md §3, "Variants").
#include "src/backend/backend.h"
#include "src/backend/fake/fake_backend.h"
#include "src/backend/restore/restore_backend.h"

namespace iptkit::backend {

Result<std::unique_ptr<Backend>> MakeBackend(BackendKind kind, const BackendOptions& options) {
  switch (kind) {
    case BackendKind::kFake:
      return NewFakeBackend();
    case BackendKind::kNft:
      return NewRestoreBackend(Variant::kNft, options);
    case BackendKind::kLegacy:
      return NewRestoreBackend(Variant::kLegacy, options);
    case BackendKind::kAuto: {
      // The variant that holds rules judges the packets; with rules in both (or neither) nft, the default of
      // current distributions, is chosen and `info` warns about the other one.
      IPTKIT_ASSIGN_OR_RETURN(VariantRuleCounts counts, CountRulesPerVariant(options));
      return NewRestoreBackend(PickVariant(counts), options);
    }
  }
  return Status::InvalidArgument("unknown backend kind");
}

}  // namespace iptkit::backend
