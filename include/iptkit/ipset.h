// Ipsets: the kernel's IP sets (ipset(8)) of one network namespace, in-process through libipset.
//
// A rule such as `-m set --match-set blocklist src -j DROP` stays put while the entries of `blocklist` change;
// Ipsets lists, creates, fills and replaces those sets. Every call is one libipset session on a short-lived thread
// inside the namespace (a netlink socket belongs to the namespace it was opened in) — except Add, whose concurrent
// calls share a long-lived worker thread of the namespace and its batches (docs/sets.md "How it works") — so calls
// are independent and an Ipsets object may be used from several threads at once (libipset itself is not thread-safe:
// the calls of a process run their libipset part one at a time). The kernel applies each command atomically; the
// multi-step operations (Load, Sync, the grow path) build a temporary set `iptkit-tmp-<8hex>` that copies every
// create option of the live set and swap it in, so that a rule matching the set never sees a partial set and a
// rejected input leaves the live set exactly as it was.
//
//   auto sets = iptkit::Ipsets("blue");                        // or Ipsets() for the caller's namespace
//   IPTKIT_RETURN_IF_ERROR(sets.Create("blocklist", "hash:ip", {.timeout = 0}));
//   IPTKIT_RETURN_IF_ERROR(sets.Add("blocklist", "192.0.2.7", {.timeout = 600, .comment = "ids"}));
//   auto entries = iptkit::ParseSetEntries("198.51.100.1\n198.51.100.2 timeout 60\n");
//   auto report = sets.Load("blocklist", *entries, {.progress = [](const iptkit::SetProgress& p) { ... }});
#ifndef IPTKIT_IPSET_H_
#define IPTKIT_IPSET_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "iptkit/model.h"
#include "iptkit/set_types.h"
#include "iptkit/status.h"

namespace iptkit {

// The set types this library creates (those of the Linux kernels iptkit supports).
const std::vector<std::string>& SetTypes();

// Create options from ipset's words, as `ipset create NAME TYPE OPTIONS` takes them: "family inet6 maxelem 100000
// timeout 300 counters comment". InvalidArgument names the unknown word or the bad value (details.token); whether
// the type takes an option is Create's check.
Result<SetOptions> ParseSetOptions(const std::vector<std::string>& words);

// One entry as listed.
struct SetEntry {
  std::string elem{};                 // as the kernel prints it: "10.0.0.0/24", "192.0.2.1,tcp:80"
  std::optional<uint32_t> timeout{};  // seconds left (sets with timeout support; 0 = permanent)
  std::optional<uint64_t> packets{};  // sets with counters
  std::optional<uint64_t> bytes{};
  std::optional<std::string> comment{};  // sets with comment support, when the entry has one
  std::vector<std::string> extra{};      // other listed attributes as ipset prints them ("skbmark", "0x10", ...)
  bool nomatch = false;                  // hash:net types: an exception from a broader entry
};

struct SetInfo {
  std::string name{};
  std::string type{};  // "hash:ip", ...
  int revision = 0;
  SetOptions options;               // parsed from the header
  std::string header{};             // the header as ipset prints it ("family inet hashsize 1024 ...")
  uint64_t memory_bytes = 0;        // size in kernel memory
  uint32_t references = 0;          // rules (and list:set sets) that use the set
  uint32_t entry_count = 0;         // number of entries
  std::vector<SetEntry> entries{};  // empty when listed without entries
  // The capacity to check loads against: maxelem for hash types (default 65536), the range size for bitmaps,
  // `size` for list:set.
  uint64_t Capacity() const;
};

// One entry to add (input of Add, Load and Sync): the element and its optional timeout and comment.
struct SetEntrySpec {
  std::string elem{};
  std::optional<uint32_t> timeout{};     // 0..kMaxSetTimeout seconds (0 = permanent on a set with timeouts)
  std::optional<std::string> comment{};  // up to 255 bytes, no '"', no control characters
  int line = 0;                          // 1-based line of the caller's input (0: not from text); named in errors
  friend bool operator==(const SetEntrySpec&, const SetEntrySpec&) = default;
};

// Entries from text, one per line: `ELEM [timeout N] [comment TEXT|"TEXT"]`; also ipset's restore lines
// `add SETNAME ELEM ...` (SETNAME must then be `set_name` when given). Blank lines and `#` comments are skipped.
// Errors are InvalidArgument with details.line (and details.token).
Result<std::vector<SetEntrySpec>> ParseSetEntries(std::string_view text, std::string_view set_name = "");

struct SetAddOptions {
  std::optional<uint32_t> timeout{};     // default: the set's default timeout
  std::optional<std::string> comment{};  // replaces the entry's comment (none: the entry has no comment after)
  // Fail with AlreadyExists when the entry is in the set. By default re-adding refreshes the timeout and replaces
  // the comment; the entry's counters are kept.
  bool no_refresh = false;
};

// Add options from ipset's words after the entry, as `ipset add NAME ENTRY OPTIONS` takes them: "timeout 300
// comment TEXT". InvalidArgument names the unexpected word or the bad value (details.token).
Result<SetAddOptions> ParseSetAddOptions(const std::vector<std::string>& words);

// Progress of a bulk operation, reported on the calling thread's behalf from the session thread.
struct SetProgress {
  enum class Stage {
    kChecked,  // input validated and the capacity checked: `total` entries to write
    kCopied,   // the current entries were copied into the temporary set
    kLoading,  // `done` of `total` entries written
    kSwapped,  // the temporary set replaced the live one
    kDone,
  };
  Stage stage = Stage::kChecked;
  size_t done = 0;
  size_t total = 0;
};

struct SetLoadOptions {
  // When current + new entries exceed the capacity: build the set anew with a larger maxelem (and hashsize) and
  // swap it in, instead of failing. Hash types only.
  bool grow = false;
  // Validate everything (including against the kernel, on a temporary set) but leave the live set unchanged.
  bool dry_run = false;
  std::function<void(const SetProgress&)> progress{};
};

struct SetSyncOptions {
  // Add and delete only the difference in the live set (entries kept keep their counters and timeouts; an entry
  // given with a new comment or timeout is re-added). For small changes. Default: build a temporary set with
  // exactly the entries and swap it in.
  bool minimal_diff = false;
  bool dry_run = false;
  std::function<void(const SetProgress&)> progress{};
};

// What a Load or Sync did (or, with dry_run, would do).
struct SetChangeReport {
  size_t added = 0;      // entries new to the set
  size_t refreshed = 0;  // entries already there, re-added (timeout refreshed / comment replaced)
  size_t removed = 0;    // entries gone (Sync)
  size_t entries_after = 0;
  bool swapped = false;                     // done through a temporary set and swap
  std::optional<uint32_t> grown_maxelem{};  // the new maxelem when the set was grown
};

// The sets a rule uses, in order, each once: `-m set --match-set NAME` (also the old `--set NAME`) and the SET
// target's `--add-set`/`--del-set`/`--map-set NAME`.
std::vector<std::string> SetsUsedBy(const Rule& rule);
// Whether `rule` uses the set `name` (SetsUsedBy contains it).
bool RuleUsesSet(const Rule& rule, std::string_view name);

class Ipsets {
 public:
  // `netns`: "" = the caller's network namespace; a name (as `ip netns`) or a path (/proc/PID/ns/net).
  explicit Ipsets(std::string netns = "");

  // Every set (or the one named), with entries when `with_entries`. NotFound names a missing set.
  Result<std::vector<SetInfo>> List(std::string_view name = "", bool with_entries = true) const;
  Result<SetInfo> Get(std::string_view name, bool with_entries = true) const;

  // AlreadyExists when a set of that name exists; InvalidArgument names an unknown type, an option the type does
  // not take (details.field = the option), a bad name.
  Status Create(std::string_view name, std::string_view type, const SetOptions& options = {}) const;
  // FailedPrecondition while a rule or list:set references the set (details.reason "referenced").
  Status Destroy(std::string_view name) const;
  Status Flush(std::string_view name) const;
  // FailedPrecondition while referenced; AlreadyExists when `to` exists.
  Status Rename(std::string_view from, std::string_view to) const;
  // Exchanges the contents of two sets of the same type and family, atomically for rules that reference them.
  Status Swap(std::string_view a, std::string_view b) const;

  Status Add(std::string_view name, std::string_view elem, const SetAddOptions& options = {}) const;
  // Independent single adds at once (to one set or several), each with its own result in the same order, exactly
  // as if each were one Add; they share the add worker's batch (one hand-off for all). For callers that collect
  // concurrent requests themselves (iptkitd).
  struct AddRequest {
    std::string set;
    std::string elem;
    SetAddOptions options{};
  };
  std::vector<Status> AddEach(const std::vector<AddRequest>& adds) const;
  // NotFound when the entry is not in the set.
  Status Delete(std::string_view name, std::string_view elem) const;
  // Whether the element is in the set (for hash:net: covered by an entry).
  Result<bool> Test(std::string_view name, std::string_view elem) const;

  // Adds many entries in one operation (re-added entries refresh, as Add). Checks current + new <= capacity first
  // (FailedPrecondition reason "set_full" naming both numbers, unless options.grow). The entries are written into a
  // temporary copy of the set (create options and current entries with their timeouts, comments and counters) which
  // then replaces the live set by swap: a rejected entry (InvalidArgument with details.line of the entry) leaves the
  // live set exactly as before.
  Result<SetChangeReport> Load(std::string_view name, const std::vector<SetEntrySpec>& entries,
                               const SetLoadOptions& options = {}) const;
  // Makes the set contain exactly `entries`. Destroys leftover temporary sets first.
  Result<SetChangeReport> Sync(std::string_view name, const std::vector<SetEntrySpec>& entries,
                               const SetSyncOptions& options = {}) const;

  const std::string& netns() const { return netns_; }

 private:
  std::string netns_{};
};

}  // namespace iptkit

#endif  // IPTKIT_IPSET_H_
