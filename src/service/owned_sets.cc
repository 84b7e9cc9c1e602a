#include "src/service/owned_sets.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <random>
#include <set>
#include <unordered_map>
#include <unordered_set>

namespace iptkit::service {
namespace {

std::string Quote(std::string_view s) { return "'" + std::string(s) + "'"; }

std::string TempName() {
  std::random_device rd;
  char hex[9];
  std::snprintf(hex, sizeof hex, "%08x", static_cast<unsigned>(rd()));
  return std::string(kTempSetPrefix) + hex;
}

std::string SetField(size_t index) { return "/sets/" + std::to_string(index); }

// The entries to write now: the time left of each timed entry (rounded up), expired ones left out.
std::vector<SetEntrySpec> Specs(const OwnedSet& set, int64_t now_ms) {
  std::vector<SetEntrySpec> out;
  out.reserve(set.entries.size());
  for (size_t i = 0; i < set.entries.size(); ++i) {
    const OwnedSetEntry& e = set.entries[i];
    SetEntrySpec spec{e.elem, e.timeout, e.comment, static_cast<int>(i + 1)};
    if (e.expires_ms) {
      const int64_t left_ms = *e.expires_ms - now_ms;
      if (left_ms <= 0) continue;
      spec.timeout = static_cast<uint32_t>(std::min<int64_t>((left_ms + 999) / 1000, kMaxSetTimeout));
    }
    out.push_back(std::move(spec));
  }
  return out;
}

bool HasFamily(std::string_view type) { return type.rfind("hash:", 0) == 0 && type != "hash:mac"; }

std::string FamilyOf(const SetOptions& o) { return o.family.empty() ? "inet" : o.family; }

// Why the live set's create options differ from the document's ("" when they do not). Options the document leaves
// out are not compared (hashsize: the kernel grows it).
std::string OptionsDiffer(const OwnedSet& want, const SetInfo& live) {
  const SetOptions& w = want.options;
  const SetOptions& l = live.options;
  if (w.timeout.has_value() != l.timeout.has_value() || (w.timeout && *w.timeout != *l.timeout)) return "timeout";
  if (w.counters != l.counters) return "counters";
  if (w.comment != l.comment) return "comment";
  if (w.skbinfo != l.skbinfo) return "skbinfo";
  if (w.maxelem && l.maxelem && *w.maxelem != *l.maxelem) return "maxelem";
  if (w.netmask && w.netmask != l.netmask) return "netmask";
  if (w.size && l.size && *w.size != *l.size) return "size";
  return "";
}

// Fills a new set under a temporary name and swaps it in for `name` (same type and family).
Status ReplaceBySwap(const Ipsets& sets, const OwnedSet& want, const std::vector<SetEntrySpec>& specs) {
  const std::string temp = TempName();
  IPTKIT_RETURN_IF_ERROR(sets.Create(temp, want.type, want.options));
  Status filled = specs.empty() ? Status::Ok() : sets.Load(temp, specs).status();
  if (filled.ok()) filled = sets.Swap(temp, want.name);
  Status dropped = sets.Destroy(temp);
  if (!filled.ok()) return filled;
  return dropped;
}

}  // namespace

std::optional<std::string> OwnerOfSet(const std::map<std::string, OwnerState>& owners, std::string_view name) {
  for (const auto& [owner, state] : owners) {
    if (!state.document) continue;
    for (const OwnedSet& set : state.document->sets) {
      if (set.name == name) return owner;
    }
  }
  return std::nullopt;
}

Status OwnedSets::Prepare(DesiredState& document, const std::map<std::string, OwnerState>& owners, int64_t now_ms) {
  created_.clear();
  if (document.sets.empty()) return Status::Ok();
  std::vector<bool> exists(document.sets.size(), false);
  for (size_t i = 0; i < document.sets.size(); ++i) {
    OwnedSet& set = document.sets[i];
    const std::string field = SetField(i);
    std::optional<std::string> holder = OwnerOfSet(owners, set.name);
    if (holder && *holder != document.owner) {
      return Status::FailedPrecondition(field + "/name: set " + Quote(set.name) + " belongs to owner " +
                                        Quote(*holder) + "'s document")
          .WithField(field + "/name")
          .WithReason("owned_set")
          .WithToken(set.name);
    }
    Result<SetInfo> live = sets_.Get(set.name, false);
    if (!live.ok() && live.status().code() != StatusCode::kNotFound) return live.status().WithField(field);
    exists[i] = live.ok();
    if (live.ok() && !holder && !made_.count(set.name)) {
      return Status::FailedPrecondition(field + "/name: set " + Quote(set.name) +
                                        " exists and no owner's document owns it; a document does not take over "
                                        "a set (destroy it, or choose another name)")
          .WithField(field + "/name")
          .WithReason("set_exists")
          .WithToken(set.name);
    }
    if (live.ok() &&
        (live->type != set.type || (HasFamily(set.type) && FamilyOf(live->options) != FamilyOf(set.options))) &&
        live->references > 0) {
      return Status::FailedPrecondition(field + "/type: set " + Quote(set.name) + " is " + live->type + " (" +
                                        FamilyOf(live->options) + ") and rules use it; it cannot become " + set.type +
                                        " (" + FamilyOf(set.options) + ") while they do")
          .WithField(field + "/type")
          .WithToken(set.name);
    }
    // The kernel checks the type, the options and every entry on a temporary set.
    const std::string temp = TempName();
    Status made = sets_.Create(temp, set.type, set.options);
    if (!made.ok()) {
      std::string where = field + "/type";
      const std::string option = made.details().field.value_or("type");
      if (option == "name") where = field + "/name";
      if (option != "type" && option != "name") where = field + "/options/" + option;
      std::string message = made.message();
      const size_t at = message.find(temp);
      if (at != std::string::npos) message.replace(at, temp.size(), set.name);
      return Status(made.code(), where + ": " + message).WithField(where).WithToken(set.name);
    }
    std::vector<SetEntrySpec> specs = Specs(set, now_ms);
    Result<SetChangeReport> loaded =
        specs.empty() ? Result<SetChangeReport>(SetChangeReport{}) : sets_.Load(temp, specs);
    Result<SetInfo> canonical = loaded.ok() ? sets_.Get(temp, true) : Result<SetInfo>(loaded.status());
    (void)sets_.Destroy(temp);
    if (!loaded.ok()) {
      const Status& s = loaded.status();
      std::string where = field + "/entries";
      if (s.details().line && *s.details().line > 0) where += "/" + std::to_string(*s.details().line - 1);
      std::string message = s.message();
      const size_t at = message.find(temp);
      if (at != std::string::npos) message.replace(at, temp.size(), set.name);
      return Status(s.code(), where + ": " + message).WithField(where).WithToken(set.name);
    }
    if (!canonical.ok()) return canonical.status().WithField(field);
    std::vector<OwnedSetEntry> entries;
    entries.reserve(canonical->entries.size());
    for (const SetEntry& e : canonical->entries) {
      OwnedSetEntry out{e.elem, std::nullopt, e.comment, std::nullopt};
      if (set.options.timeout && e.timeout) {
        out.timeout = *e.timeout;
        if (*e.timeout > 0) out.expires_ms = now_ms + int64_t{*e.timeout} * 1000;
      }
      entries.push_back(std::move(out));
    }
    std::sort(entries.begin(), entries.end(),
              [](const OwnedSetEntry& a, const OwnedSetEntry& b) { return a.elem < b.elem; });
    set.entries = std::move(entries);
  }
  for (size_t i = 0; i < document.sets.size(); ++i) {
    if (exists[i]) continue;
    const OwnedSet& set = document.sets[i];
    Status made = sets_.Create(set.name, set.type, set.options);
    if (!made.ok() && made.code() != StatusCode::kAlreadyExists) {
      (void)Destroy(TakeCreated());
      return made.WithField(SetField(i));
    }
    if (made.ok()) {
      created_.push_back(set.name);
      made_.insert(set.name);
    }
  }
  return Status::Ok();
}

std::vector<std::string> OwnedSets::TakeCreated() {
  std::vector<std::string> out;
  out.swap(created_);
  return out;
}

Result<bool> OwnedSets::Ensure(const DesiredState& document, int64_t now_ms) {
  bool changed = false;
  for (const OwnedSet& set : document.sets) {
    const std::string what = "owned set " + Quote(set.name) + " of owner " + Quote(document.owner);
    const std::vector<SetEntrySpec> specs = Specs(set, now_ms);
    Result<SetInfo> live = sets_.Get(set.name, true);
    if (!live.ok() && live.status().code() != StatusCode::kNotFound) return live.status().WithContext(what);
    if (!live.ok()) {
      spdlog::info("{} is missing; creating it with {} entries", what, specs.size());
      IPTKIT_RETURN_IF_ERROR(sets_.Create(set.name, set.type, set.options).WithContext(what));
      if (!specs.empty()) IPTKIT_RETURN_IF_ERROR(sets_.Load(set.name, specs).status().WithContext(what));
      changed = true;
      continue;
    }
    const bool same_kind =
        live->type == set.type && (!HasFamily(set.type) || FamilyOf(live->options) == FamilyOf(set.options));
    const std::string differs = same_kind ? OptionsDiffer(set, *live) : std::string("type");
    if (!differs.empty()) {
      spdlog::info("{} differs from its document ({}); replacing it", what, differs);
      if (same_kind) {
        IPTKIT_RETURN_IF_ERROR(ReplaceBySwap(sets_, set, specs).WithContext(what));
      } else if (live->references == 0) {
        IPTKIT_RETURN_IF_ERROR(sets_.Destroy(set.name).WithContext(what));
        IPTKIT_RETURN_IF_ERROR(sets_.Create(set.name, set.type, set.options).WithContext(what));
        if (!specs.empty()) IPTKIT_RETURN_IF_ERROR(sets_.Load(set.name, specs).status().WithContext(what));
      } else {
        return Status::FailedPrecondition(what + " is " + live->type + " and rules use it; it cannot become " +
                                          set.type + " while they do");
      }
      changed = true;
      continue;
    }
    // Entry by entry.
    std::unordered_map<std::string, const SetEntry*> have;
    for (const SetEntry& e : live->entries) have[e.elem] = &e;
    std::unordered_set<std::string> want;
    std::vector<const SetEntrySpec*> adds;
    for (const SetEntrySpec& spec : specs) {
      want.insert(spec.elem);
      auto it = have.find(spec.elem);
      if (it == have.end()) {
        adds.push_back(&spec);
        continue;
      }
      const SetEntry& e = *it->second;
      bool redo = e.comment != spec.comment;
      if (set.options.timeout) {
        const int64_t left = e.timeout.value_or(0);
        const int64_t wanted = spec.timeout.value_or(*set.options.timeout);
        // Never longer than the time left; a timeout the kernel counts down from a later add is put back, and a
        // permanent entry (0) that became temporary too. Two seconds of slack for the rounding of both.
        if (wanted == 0 ? left != 0 : (left == 0 || left > wanted + 1 || left + 2 < wanted)) redo = true;
      }
      if (redo) adds.push_back(&spec);
    }
    std::vector<std::string> dels;
    for (const SetEntry& e : live->entries) {
      if (!want.count(e.elem)) dels.push_back(e.elem);
    }
    if (adds.empty() && dels.empty()) continue;
    changed = true;
    spdlog::info("{}: {} entries to add or put back, {} to delete", what, adds.size(), dels.size());
    if (adds.size() + dels.size() > kSwapAbove) {
      IPTKIT_RETURN_IF_ERROR(ReplaceBySwap(sets_, set, specs).WithContext(what));
      continue;
    }
    for (const std::string& elem : dels) {
      Status s = sets_.Delete(set.name, elem);
      if (!s.ok() && s.code() != StatusCode::kNotFound) return s.WithContext(what);  // NotFound: it just expired
    }
    for (const SetEntrySpec* spec : adds) {
      IPTKIT_RETURN_IF_ERROR(
          sets_.Add(set.name, spec->elem, {.timeout = spec->timeout, .comment = spec->comment}).WithContext(what));
    }
  }
  return changed;
}

std::vector<std::string> OwnedSets::Dropped(const std::map<std::string, OwnerState>& before,
                                            const std::map<std::string, OwnerState>& after) {
  std::vector<std::string> out;
  for (const auto& [owner, state] : before) {
    if (!state.document) continue;
    for (const OwnedSet& set : state.document->sets) {
      if (!OwnerOfSet(after, set.name)) out.push_back(set.name);
    }
  }
  return out;
}

Status OwnedSets::Destroy(const std::vector<std::string>& names) {
  Status first;
  for (const std::string& name : names) {
    Status s = sets_.Destroy(name);
    if (s.ok() || s.code() == StatusCode::kNotFound) {
      made_.erase(name);
      continue;
    }
    spdlog::warn("destroying set {} (no longer owned): {}", name, s.ToString());
    if (first.ok()) first = s;
  }
  return first;
}

}  // namespace iptkit::service
