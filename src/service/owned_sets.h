// OwnedSets: the IP sets that owners' documents own (DesiredState::sets, docs/daemon.md "Owned sets"), kept by the
// writer thread: checked and made canonical when a document is accepted, created before the owner's rules are
// planned (iptables resolves a `--match-set NAME` against the kernel), filled and repaired with the document's
// entries, destroyed after the rules when the document drops them.
//
// Entries with a timeout carry an absolute deadline (OwnedSetEntry::expires_ms, stamped when the document is
// accepted): a missing entry is re-added with the time left, never more, and an entry whose kernel timeout is
// longer than its time left is put back to it. Small differences are applied entry by entry (the other entries
// keep their counters and timeouts); large ones (more than kSwapAbove changes) through a temporary set and a swap,
// so that a rule matching the set never sees it half filled.
// Thread-safety: one thread at a time (the writer).
//
//   OwnedSets sets("blue");
//   IPTKIT_RETURN_IF_ERROR(sets.Prepare(document, owners, NowMs()));   // on PUT: checks, canonical entries
//   Result<bool> repaired = sets.Ensure(document, NowMs());           // at start-up, per drift check
//   sets.Destroy(sets.Dropped(before, after));                        // after the rules are gone
#ifndef IPTKIT_SRC_SERVICE_OWNED_SETS_H_
#define IPTKIT_SRC_SERVICE_OWNED_SETS_H_

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "iptkit/desired.h"
#include "iptkit/ipset.h"
#include "iptkit/status.h"
#include "src/service/owner_state.h"

namespace iptkit::service {

// The owner whose document owns set `name` in `owners` (nullopt: none).
std::optional<std::string> OwnerOfSet(const std::map<std::string, OwnerState>& owners, std::string_view name);

class OwnedSets {
 public:
  // More differences than this between a set and its document are applied through a temporary set and a swap.
  static constexpr size_t kSwapAbove = 1024;

  // `netns` as Ipsets takes it ("" = the caller's).
  explicit OwnedSets(std::string netns) : sets_(std::move(netns)) {}

  // Checks the sets of a document being accepted, changing no set: no other owner in `owners` owns one of them; a
  // set that exists and that this owner does not own yet is refused (it is someone else's); each set is made under
  // a temporary name with the document's type and options and filled with its entries, which the kernel checks.
  // Errors are InvalidArgument/FailedPrecondition naming the field (/sets/I/..., /sets/I/entries/K). On success
  // the document's entries are the kernel's spelling of them (10.0.0.5/24 is 10.0.0.0/24, duplicates merged), each
  // with expires_ms = now + its timeout when it has one, and the sets that do not exist are created empty, so that
  // the owner's rules can be planned against them (TakeCreated lists them).
  Status Prepare(DesiredState& document, const std::map<std::string, OwnerState>& owners, int64_t now_ms);
  // The sets the last Prepare created (empty), then forgets them: the caller destroys them when the document is
  // not committed after all (a dry run, a failed plan).
  std::vector<std::string> TakeCreated();

  // Brings the kernel's sets to the document's: creates a missing set, replaces one whose type, family or options
  // differ (a swap when the type and family are the same; otherwise only when no rule uses it), adds missing
  // entries (with the time left; expired ones are left out), deletes foreign ones, re-adds entries whose timeout or
  // comment differ. Returns whether anything had to change.
  Result<bool> Ensure(const DesiredState& document, int64_t now_ms);

  // The sets that `before` owns and `after` does not (a document dropped them, an owner was deleted).
  static std::vector<std::string> Dropped(const std::map<std::string, OwnerState>& before,
                                          const std::map<std::string, OwnerState>& after);
  // Destroys these sets (their rules are gone already; a reference the kernel still holds is waited for).
  // Failures are logged and returned (the first).
  Status Destroy(const std::vector<std::string>& names);

  const Ipsets& ipsets() const { return sets_; }

 private:
  Ipsets sets_;
  std::vector<std::string> created_;
  std::set<std::string> made_;  // sets Prepare created that Destroy has not destroyed (theirs, not foreign)
};

}  // namespace iptkit::service

#endif  // IPTKIT_SRC_SERVICE_OWNED_SETS_H_
