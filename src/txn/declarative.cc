#include "src/txn/declarative.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "iptkit/dialect.h"

namespace iptkit {

std::string OwnerChainPrefix(std::string_view owner) {
  std::string prefix;
  prefix.reserve(owner.size() + 1);
  for (char c : owner) prefix.push_back(c >= 'a' && c <= 'z' ? static_cast<char>(c - 'a' + 'A') : c);
  prefix.push_back('-');
  return prefix;
}

Status ValidateOwner(std::string_view owner) {
  bool ok = !owner.empty() && owner.size() <= 32;
  for (char c : owner) ok = ok && ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-');
  if (!ok) {
    return Status::InvalidArgument("owner '" + std::string(owner) + "': must be 1..32 characters of [a-z0-9-]");
  }
  return Status::Ok();
}

}  // namespace iptkit

namespace iptkit::txn {
namespace {

using backend::TableBatch;
using backend::TableOp;

// One op; the rule's counters are dropped (they are sent only by whole-table restores).
TableOp MakeOp(TableOp::Kind kind, const std::string& chain, const Rule* rule = nullptr, int index = 0) {
  TableOp op = TableOp::Make(kind, chain, rule != nullptr ? *rule : Rule{}, index);
  op.rule.counters = {};
  return op;
}

// The owner of the rule's tag, as Rule::OwnerTag reads it, without copying the tag: a plan asks this of every
// rule of every chain it looks at several times, and the copies were a fifth of the plan's time in a chain of
// 1,000 rules.
std::optional<std::string_view> TagOwner(const Rule& rule) {
  std::optional<TagView> tag = ViewOwnerTag(rule);
  if (!tag) return std::nullopt;
  return tag->owner;
}

bool IsOurs(const Rule& rule, std::string_view owner) {
  std::optional<std::string_view> tagged = TagOwner(rule);
  return tagged.has_value() && *tagged == owner;
}

// The chain a rule jumps or goes to (or a target extension / verdict name); nullptr without a target.
const std::string* TargetName(const Rule& rule) {
  return rule.target.kind == Target::Kind::kNone ? nullptr : &rule.target.name;
}

bool HasOwnerPrefix(std::string_view name, std::string_view prefix) {
  return name.size() > prefix.size() && name.substr(0, prefix.size()) == prefix;
}

std::string Where(std::string_view table, std::string_view chain) {
  return std::string(table) + "/" + std::string(chain);
}

// Checks one desired rule: tag (if any) of this owner with a valid id; a jump into the owner's prefix names an
// owned chain of the table.
Status CheckDesiredRule(const DesiredState& desired, const std::string& prefix,
                        const std::set<std::pair<std::string, std::string>>& owned, const std::string& table,
                        const std::string& where, const Rule& rule) {
  if (auto tag = rule.OwnerTag()) {
    if (tag->owner != desired.owner) {
      return Status::InvalidArgument(where + ": carries the tag of owner '" + tag->owner + "', not '" + desired.owner +
                                     "': " + FormatRuleSpec(rule));
    }
    IPTKIT_RETURN_IF_ERROR(ValidateRuleId(tag->id).WithContext(where));
  }
  const std::string* target = TargetName(rule);
  if (target != nullptr && target->substr(0, prefix.size()) == prefix && !owned.count({table, *target})) {
    return Status::InvalidArgument(where + ": jumps to '" + *target + "', which has the prefix '" + prefix +
                                   "' of owner '" + desired.owner + "' but is not an owned chain of table " + table +
                                   " in this desired state: " + FormatRuleSpec(rule));
  }
  return Status::Ok();
}

// Indices into `values` of one longest strictly increasing subsequence (patience sorting, O(n log n)).
std::vector<size_t> LongestIncreasing(const std::vector<int>& values) {
  std::vector<size_t> tails;  // tails[k]: index of the smallest tail of an increasing run of length k+1
  std::vector<size_t> prev(values.size(), SIZE_MAX);
  for (size_t i = 0; i < values.size(); ++i) {
    auto it = std::lower_bound(tails.begin(), tails.end(), values[i], [&](size_t t, int v) { return values[t] < v; });
    if (it != tails.begin()) prev[i] = *(it - 1);
    if (it == tails.end()) {
      tails.push_back(i);
    } else {
      *it = i;
    }
  }
  std::vector<size_t> out(tails.size());
  size_t at = tails.empty() ? SIZE_MAX : tails.back();
  for (size_t k = tails.size(); k-- > 0;) {
    out[k] = at;
    at = prev[at];
  }
  return out;
}

// Collects the ops and steps of one table.
class TablePlanner {
 public:
  TablePlanner(Family family, std::string table, std::string owner)
      : family_(family), table_(std::move(table)), owner_(std::move(owner)) {}

  // One op and its step (kind, chain, and the owner and id of a tagged rule as fields).
  void Op(TableOp op, PlanStep::Kind kind, std::string description) {
    PlanStep step{family_, table_, std::move(description), kind, op.chain, "", ""};
    if (auto tag = op.rule.OwnerTag()) {
      step.owner = tag->owner;
      step.rule_id = tag->id;
    }
    if (op.rule.counters.packets != 0 || op.rule.counters.bytes != 0) with_counters_ = true;
    ops_.push_back(std::move(op));
    steps_.push_back(std::move(step));
  }
  void Guard(const std::string& chain, const Rule& rule) {
    ops_.push_back(MakeOp(TableOp::Kind::kCheck, chain, &rule));
  }

  // Plans one chain: deletes by spec, then guarded inserts. `kernel` is the chain as read (empty when it does not
  // exist yet). Without `anchored` (owned chains) the desired list is head + tail and foreign rules float: they
  // stay where they are. With `anchored` (builtin chains) `head` must precede the first foreign rule and `tail`
  // follow the last one; rules of ours between foreign rules are misplaced and go.
  Status PlanChain(const std::string& chain, const std::vector<Rule>& kernel, bool anchored,
                   const std::vector<const Rule*>& head, const std::vector<const Rule*>& tail);

  std::vector<TableOp>& ops() { return ops_; }
  std::vector<PlanStep>& steps() { return steps_; }
  // Some op re-inserts a moved rule with its counters (the batch must be sent with counters, zero or not).
  bool with_counters() const { return with_counters_; }
  bool changed() const {
    return std::any_of(ops_.begin(), ops_.end(), [](const TableOp& op) { return op.kind != TableOp::Kind::kCheck; });
  }

 private:
  Family family_;
  std::string table_;
  std::string owner_;
  std::vector<TableOp> ops_;
  std::vector<PlanStep> steps_;
  bool with_counters_ = false;
};

Status TablePlanner::PlanChain(const std::string& chain, const std::vector<Rule>& kernel, bool anchored,
                               const std::vector<const Rule*>& head, const std::vector<const Rule*>& tail) {
  const size_t n = kernel.size();
  std::vector<std::string> kspec(n);  // our rules' specs only: the others are never matched, deleted or named
  std::vector<bool> ours(n);
  // In an anchored chain the rules not made by iptkit are the anchors that head and tail are placed around. Rules
  // of other iptkit owners are not: two owners' first (or last) hooks may interleave in any order, else each
  // owner's apply would move its hooks above the other's and the two would take turns forever.
  std::vector<bool> anchor(n);
  size_t foreign = 0;
  for (size_t i = 0; i < n; ++i) {
    const std::optional<std::string_view> tagged = TagOwner(kernel[i]);
    ours[i] = tagged.has_value() && *tagged == owner_;
    anchor[i] = !tagged.has_value();
    if (anchor[i]) ++foreign;
    if (ours[i]) kspec[i] = FormatRuleSpec(kernel[i]);
  }

  // Desired segments: one list, or (anchored, with foreign rules) head, an empty list between each pair of
  // foreign rules, tail.
  std::vector<std::vector<const Rule*>> segs;
  if (!anchored || foreign == 0) {
    segs.push_back(head);
    segs.back().insert(segs.back().end(), tail.begin(), tail.end());
  } else {
    segs.push_back(head);
    segs.resize(foreign);
    segs.push_back(tail);
  }
  std::vector<std::vector<std::string>> dspec(segs.size());
  std::vector<std::unordered_map<std::string, int>> dindex(segs.size());
  std::unordered_set<std::string> all_desired;
  for (size_t s = 0; s < segs.size(); ++s) {
    for (const Rule* rule : segs[s]) {
      std::string spec = FormatRuleSpec(*rule);
      if (!IsOurs(*rule, owner_)) {
        return Status::InvalidArgument("desired rule in " + Where(table_, chain) + " carries no tag of owner '" +
                                       owner_ + "' (AssignOwnerTags first): " + spec);
      }
      if (!all_desired.insert(spec).second) {
        return Status::InvalidArgument("desired rule appears twice in " + Where(table_, chain) +
                                       " with the same tag (AssignOwnerTags makes ids unique): " + spec);
      }
      dindex[s].emplace(spec, static_cast<int>(dspec[s].size()));
      dspec[s].push_back(std::move(spec));
    }
  }

  // Segment of each kernel rule of ours; the last copy of each of our specs (the only one that may be kept, so
  // that `-D spec`, which removes the first copy, never hits a kept rule).
  std::vector<size_t> kseg(n, 0);
  std::unordered_map<std::string, size_t> last;
  for (size_t i = 0, seg = 0; i < n; ++i) {
    if (!ours[i]) {
      if (anchored && anchor[i]) ++seg;
      continue;
    }
    kseg[i] = seg;
    last[kspec[i]] = i;
  }

  // Longest common subsequence per segment. Desired specs are unique and so are the candidates (last copies):
  // the LCS is the longest increasing run of desired positions taken in kernel order. The candidates of every
  // segment are collected in one pass over the chain (an anchored chain has a segment per foreign rule, so a pass
  // per segment would be quadratic in the chain's length).
  std::vector<int> match(n, -1);
  std::vector<std::vector<bool>> dmatched(segs.size());
  for (size_t s = 0; s < segs.size(); ++s) dmatched[s].assign(segs[s].size(), false);
  std::vector<std::vector<size_t>> cand(segs.size());
  std::vector<std::vector<int>> pos(segs.size());
  for (size_t i = 0; i < n; ++i) {
    if (!ours[i] || last[kspec[i]] != i) continue;
    const size_t s = kseg[i];
    auto it = dindex[s].find(kspec[i]);
    if (it == dindex[s].end()) continue;
    cand[s].push_back(i);
    pos[s].push_back(it->second);
  }
  for (size_t s = 0; s < segs.size(); ++s) {
    for (size_t k : LongestIncreasing(pos[s])) {
      match[cand[s][k]] = pos[s][k];
      dmatched[s][pos[s][k]] = true;
    }
  }

  // Deletes, front to back, by spec. A deleted rule that is desired elsewhere in the chain is moved: it goes back
  // in with the counters it had (a rule that did not change keeps its counters, also when someone else's insert
  // pushed it out of place).
  size_t kept = 0;
  std::unordered_map<std::string, Counters> moved;
  for (size_t i = 0; i < n; ++i) {
    if (!ours[i] || match[i] >= 0) {
      ++kept;
      continue;
    }
    Op(MakeOp(TableOp::Kind::kDelete, chain, &kernel[i]), PlanStep::Kind::kDelete,
       "delete " + table_ + " " + chain + " rule " + std::to_string(i + 1) + ": " + kspec[i]);
    if (all_desired.count(kspec[i])) moved[kspec[i]] = kernel[i].counters;
  }
  // The rule to insert for a new slot: a moved rule keeps its counters. The batch says so also when they are zero
  // in the snapshot: a backend whose snapshot's counters are older than the kernel's (the native event cache) then
  // sends the kernel's.
  auto with_counters = [&](TableOp op, const std::string& spec) {
    if (auto it = moved.find(spec); it != moved.end()) {
      op.rule.counters = it->second;
      with_counters_ = true;
    }
    return op;
  };

  // The final chain: kept kernel rules in order, each new desired rule right after its desired predecessor (the
  // first of a segment at the segment's start).
  struct Slot {
    int kernel = -1;                    // index into `kernel`, or -1 for a new rule
    const Rule* rule = nullptr;         // new rule
    const std::string* spec = nullptr;  // a new rule's spec (read only for new rules)
  };
  std::vector<Slot> fin;
  fin.reserve(kept + all_desired.size());
  // An anchored chain without foreign rules is one segment, head then tail; other owners' rules may sit anywhere
  // in it. New tail rules with no tail rule of ours kept before them go to the end of the chain (after the other
  // owners' rules), as they would after foreign rules: else an unowned rule appended later (which the daemon puts
  // above every owner's last hooks) would leave them out of place.
  const size_t head_size = head.size();
  const bool tail_to_end =
      anchored && foreign == 0 && !tail.empty() &&
      std::none_of(match.begin(), match.end(), [&](int m) { return m >= static_cast<int>(head_size); });
  std::vector<Slot> at_end;
  auto run = [&](size_t s, size_t from) {
    for (size_t j = from; j < segs[s].size() && !dmatched[s][j]; ++j) {
      (tail_to_end && j >= head_size ? at_end : fin).push_back({-1, segs[s][j], &dspec[s][j]});
    }
  };
  size_t seg = 0;
  run(0, 0);
  for (size_t i = 0; i < n; ++i) {
    if (!ours[i]) {
      fin.push_back({static_cast<int>(i), nullptr, &kspec[i]});
      if (anchored && anchor[i]) run(++seg, 0);
      continue;
    }
    if (match[i] < 0) continue;
    fin.push_back({static_cast<int>(i), nullptr, &kspec[i]});
    run(kseg[i], static_cast<size_t>(match[i]) + 1);
  }
  fin.insert(fin.end(), at_end.begin(), at_end.end());

  // Inserts in final order: when fin[f] goes in, fin[0..f) are in place and nothing else precedes it.
  std::vector<size_t> kept_after(fin.size() + 1, 0);
  for (size_t f = fin.size(); f-- > 0;) kept_after[f] = kept_after[f + 1] + (fin[f].kernel >= 0 ? 1 : 0);
  int guarded = -1;
  for (size_t f = 0; f < fin.size(); ++f) {
    if (fin[f].kernel >= 0) continue;
    if (kept_after[f] == 0) {
      Op(with_counters(MakeOp(TableOp::Kind::kAppend, chain, fin[f].rule), *fin[f].spec), PlanStep::Kind::kAppend,
         "append " + table_ + " " + chain + ": " + *fin[f].spec);
      continue;
    }
    if (f > 0 && fin[f - 1].kernel >= 0 && fin[f - 1].kernel != guarded) {
      // `-I N` is positional: make the block fail if the rule it goes after is gone (docs/architecture.md §3).
      Guard(chain, kernel[fin[f - 1].kernel]);
      guarded = fin[f - 1].kernel;
    }
    Op(with_counters(MakeOp(TableOp::Kind::kInsert, chain, fin[f].rule, static_cast<int>(f + 1)), *fin[f].spec),
       PlanStep::Kind::kInsert, "insert " + table_ + " " + chain + " " + std::to_string(f + 1) + ": " + *fin[f].spec);
  }
  return Status::Ok();
}

bool TableHasOurState(const Table& table, std::string_view owner, std::string_view prefix) {
  for (const Chain& chain : table.chains) {
    if (!chain.builtin() && HasOwnerPrefix(chain.name, prefix)) return true;
    for (const Rule& rule : chain.rules) {
      if (IsOurs(rule, owner)) return true;
    }
  }
  return false;
}

}  // namespace

std::optional<TagView> ViewOwnerTag(const Rule& rule) {
  // As Rule::OwnerTag (src/model/model.cc): the last match is a lone, not negated `--comment "iptkit:OWNER:ID"`
  // with a non-empty owner.
  constexpr std::string_view kPrefix = "iptkit:";
  if (rule.matches.empty()) return std::nullopt;
  const Match& m = rule.matches.back();
  if (m.name != "comment" || m.options.size() != 1) return std::nullopt;
  const Option& o = m.options[0];
  if (o.name != "comment" || o.negated || o.values.size() != 1) return std::nullopt;
  std::string_view comment = o.values[0];
  if (!comment.starts_with(kPrefix)) return std::nullopt;
  comment.remove_prefix(kPrefix.size());
  const size_t colon = comment.find(':');
  if (colon == std::string_view::npos || colon == 0) return std::nullopt;
  return TagView{comment.substr(0, colon), comment.substr(colon + 1)};
}

std::string DeriveRuleId(std::string_view table, std::string_view chain, std::string_view canonical_untagged_spec) {
  uint64_t hash = 14695981039346656037ull;  // FNV-1a 64 offset basis
  auto mix = [&](std::string_view bytes) {
    for (unsigned char c : bytes) {
      hash ^= c;
      hash *= 1099511628211ull;  // FNV-1a 64 prime
    }
  };
  mix(table);
  mix(std::string_view("\0", 1));
  mix(chain);
  mix(std::string_view("\0", 1));
  mix(canonical_untagged_spec);
  static constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
  std::string id(13, 'a');
  for (int i = 0; i < 13; ++i) id[i] = kAlphabet[(hash >> (60 - 5 * i)) & 31];
  return id;
}

Status ValidateRuleId(std::string_view id) {
  bool ok = !id.empty() && id.size() <= kMaxRuleIdLength;
  for (char c : id) {
    ok = ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
                c == '-');
  }
  if (!ok) {
    return Status::InvalidArgument("rule id '" + std::string(id) + "': must be 1.." + std::to_string(kMaxRuleIdLength) +
                                   " characters of [A-Za-z0-9._-]");
  }
  return Status::Ok();
}

Status ValidateDesiredState(const DesiredState& desired) {
  IPTKIT_RETURN_IF_ERROR(ValidateOwner(desired.owner));
  const std::string prefix = OwnerChainPrefix(desired.owner);
  const auto& tables = KnownTables();
  auto known = [&](const std::string& t) { return std::find(tables.begin(), tables.end(), t) != tables.end(); };

  std::set<std::pair<std::string, std::string>> owned;
  for (const OwnedChain& chain : desired.chains) {
    const std::string where = "owned chain " + Where(chain.table, chain.name);
    if (!known(chain.table)) return Status::InvalidArgument(where + ": unknown table '" + chain.table + "'");
    if (!HasOwnerPrefix(chain.name, prefix)) {
      return Status::InvalidArgument(where + ": the name of a chain of owner '" + desired.owner +
                                     "' must start with '" + prefix + "' and continue after it");
    }
    IPTKIT_RETURN_IF_ERROR(ValidateChainName(chain.name).WithContext(where));
    if (!owned.emplace(chain.table, chain.name).second) {
      return Status::InvalidArgument(where + ": listed twice");
    }
  }
  for (const OwnedChain& chain : desired.chains) {
    for (size_t i = 0; i < chain.rules.size(); ++i) {
      IPTKIT_RETURN_IF_ERROR(CheckDesiredRule(
          desired, prefix, owned, chain.table,
          "owned chain " + Where(chain.table, chain.name) + " rule " + std::to_string(i + 1), chain.rules[i]));
    }
  }
  for (size_t i = 0; i < desired.hooks.size(); ++i) {
    const HookRule& hook = desired.hooks[i];
    const std::string where = "hook " + std::to_string(i + 1) + " in " + Where(hook.table, hook.chain);
    if (!known(hook.table)) return Status::InvalidArgument(where + ": unknown table '" + hook.table + "'");
    if (!IsBuiltinChain(hook.table, hook.chain)) {
      return Status::InvalidArgument(where + ": '" + hook.chain + "' is not a builtin chain of table " + hook.table +
                                     " (rules of owned chains belong in `chains`)");
    }
    IPTKIT_RETURN_IF_ERROR(CheckDesiredRule(desired, prefix, owned, hook.table, where, hook.rule));
  }
  return Status::Ok();
}

namespace {

// Tags `rule` for (table, chain); `seen` holds the tagged specs already given out in that chain.
Status TagRule(const std::string& owner, const std::string& table, const std::string& chain, Rule& rule,
               std::unordered_set<std::string>& seen) {
  Rule untagged = rule;
  std::optional<std::string> id;
  if (auto tag = rule.OwnerTag()) {
    if (tag->owner != owner) {
      return Status::InvalidArgument("rule in " + Where(table, chain) + " carries the tag of owner '" + tag->owner +
                                     "', not '" + owner + "'");
    }
    IPTKIT_RETURN_IF_ERROR(ValidateRuleId(tag->id));
    id = tag->id;
    untagged.matches.pop_back();
  }
  const std::string base = id ? *id : DeriveRuleId(table, chain, FormatRuleSpec(untagged));
  std::string candidate = base;
  for (int copy = 2;; ++copy) {
    Rule tagged = untagged;
    tagged.SetOwnerTag({owner, candidate});
    if (seen.insert(FormatRuleSpec(tagged)).second) {
      tagged.counters = rule.counters;
      rule = std::move(tagged);
      return Status::Ok();
    }
    candidate = base + "-" + std::to_string(copy);
    if (candidate.size() > kMaxRuleIdLength) {
      return Status::InvalidArgument("rule in " + Where(table, chain) + " with id '" + base + "' appears " +
                                     std::to_string(copy) + " times; the id of copy " + std::to_string(copy) + " ('" +
                                     candidate + "') would exceed " + std::to_string(kMaxRuleIdLength) +
                                     " characters: use a shorter id");
    }
  }
}

}  // namespace

Status AssignOwnerTags(DesiredState& desired) {
  IPTKIT_RETURN_IF_ERROR(ValidateOwner(desired.owner));
  for (OwnedChain& chain : desired.chains) {
    std::unordered_set<std::string> seen;
    for (Rule& rule : chain.rules) IPTKIT_RETURN_IF_ERROR(TagRule(desired.owner, chain.table, chain.name, rule, seen));
  }
  std::map<std::pair<std::string, std::string>, std::unordered_set<std::string>> hook_seen;
  for (HookRule& hook : desired.hooks) {
    IPTKIT_RETURN_IF_ERROR(
        TagRule(desired.owner, hook.table, hook.chain, hook.rule, hook_seen[{hook.table, hook.chain}]));
  }
  return Status::Ok();
}

Result<DeclarativePlan> PlanDeclarative(const Ruleset& current, const DesiredState& desired) {
  IPTKIT_RETURN_IF_ERROR(ValidateDesiredState(desired));
  const std::string& owner = desired.owner;
  const std::string prefix = OwnerChainPrefix(owner);
  const std::string family_name(FamilyName(current.family));

  // Tables in commit order: the known ones, then any other the snapshot has (only to remove our rules).
  std::vector<std::string> order = KnownTables();
  for (const Table& t : current.tables) {
    if (std::find(order.begin(), order.end(), t.name) == order.end()) order.push_back(t.name);
  }

  DeclarativePlan plan;
  for (const std::string& table_name : order) {
    const Table* kt = current.FindTable(table_name);
    std::vector<const OwnedChain*> want_chains;
    for (const OwnedChain& c : desired.chains) {
      if (c.table == table_name) want_chains.push_back(&c);
    }
    std::map<std::string, std::pair<std::vector<const Rule*>, std::vector<const Rule*>>> want_hooks;
    for (const HookRule& h : desired.hooks) {
      if (h.table != table_name) continue;
      auto& [head, tail] = want_hooks[h.chain];
      (h.position == HookRule::Position::kFirst ? head : tail).push_back(&h.rule);
    }
    const bool named = !want_chains.empty() || !want_hooks.empty();
    if (!named && (kt == nullptr || !TableHasOurState(*kt, owner, prefix))) continue;
    if (kt != nullptr && !kt->unrepresentable_reason.empty()) {
      return Status::FailedPrecondition("table " + table_name + " (" + family_name +
                                        ") cannot be shown faithfully by iptables-save (" + kt->unrepresentable_reason +
                                        "); iptkit does not rewrite it")
          .WithLocation(family_name, table_name)
          .WithReason("unrepresentable");
    }
    static const Table kEmpty;
    const Table& table = kt != nullptr ? *kt : kEmpty;

    // Ownership of the kernel's user chains.
    std::unordered_set<std::string> jumped_by_ours, jumped_by_foreign;
    for (const Chain& c : table.chains) {
      for (const Rule& r : c.rules) {
        if (const std::string* t = TargetName(r)) (IsOurs(r, owner) ? jumped_by_ours : jumped_by_foreign).insert(*t);
      }
    }
    auto is_builtin = [&](const Chain& c) { return c.builtin() || IsBuiltinChain(table_name, c.name); };
    auto owned = [&](const Chain& c) {
      if (is_builtin(c) || !HasOwnerPrefix(c.name, prefix)) return false;
      if (jumped_by_ours.count(c.name)) return true;
      return std::all_of(c.rules.begin(), c.rules.end(), [&](const Rule& r) { return IsOurs(r, owner); });
    };
    std::unordered_set<std::string> wanted_names;
    for (const OwnedChain* c : want_chains) wanted_names.insert(c->name);

    TablePlanner tp(current.family, table_name, owner);
    static const std::vector<Rule> kNoRules;
    static const std::vector<const Rule*> kNone;

    // 1. Missing owned chains, before anything jumps to them.
    for (const OwnedChain* c : want_chains) {
      if (table.FindChain(c->name) == nullptr) {
        tp.Op(MakeOp(TableOp::Kind::kNewChain, c->name), PlanStep::Kind::kCreateChain,
              "create chain " + table_name + " " + c->name);
      }
    }
    // 2. Owned chains' rules.
    for (const OwnedChain* c : want_chains) {
      const Chain* kc = table.FindChain(c->name);
      std::vector<const Rule*> rules;
      for (const Rule& r : c->rules) rules.push_back(&r);
      if (kc != nullptr) {
        size_t foreign =
            std::count_if(kc->rules.begin(), kc->rules.end(), [&](const Rule& r) { return !IsOurs(r, owner); });
        if (foreign > 0) {
          plan.warnings.push_back("owned chain " + Where(table_name, c->name) + " (" + family_name + ") holds " +
                                  std::to_string(foreign) + " rule(s) not tagged by owner '" + owner +
                                  "'; they are kept in place");
        }
      }
      IPTKIT_RETURN_IF_ERROR(tp.PlanChain(c->name, kc != nullptr ? kc->rules : kNoRules, false, rules, kNone));
    }
    // 3. Builtin chains: hooks in place, other rules of ours removed.
    std::vector<std::string> builtins = BuiltinChains(table_name);
    for (const Chain& c : table.chains) {
      if (is_builtin(c) && std::find(builtins.begin(), builtins.end(), c.name) == builtins.end()) {
        builtins.push_back(c.name);
      }
    }
    for (const std::string& name : builtins) {
      const Chain* kc = table.FindChain(name);
      auto hooks = want_hooks.find(name);
      const bool has_ours = kc != nullptr && std::any_of(kc->rules.begin(), kc->rules.end(),
                                                         [&](const Rule& r) { return IsOurs(r, owner); });
      if (hooks == want_hooks.end() && !has_ours) continue;
      IPTKIT_RETURN_IF_ERROR(tp.PlanChain(name, kc != nullptr ? kc->rules : kNoRules, true,
                                          hooks != want_hooks.end() ? hooks->second.first : kNone,
                                          hooks != want_hooks.end() ? hooks->second.second : kNone));
    }
    // 4. Other user chains: stale owned chains are emptied, elsewhere only our rules go.
    std::vector<std::string> remove_chains;
    for (const Chain& c : table.chains) {
      if (is_builtin(c) || wanted_names.count(c.name)) continue;
      const bool has_ours =
          std::any_of(c.rules.begin(), c.rules.end(), [&](const Rule& r) { return IsOurs(r, owner); });
      if (has_ours) IPTKIT_RETURN_IF_ERROR(tp.PlanChain(c.name, c.rules, false, kNone, kNone));
      if (!owned(c)) continue;
      const bool holds_foreign =
          std::any_of(c.rules.begin(), c.rules.end(), [&](const Rule& r) { return !IsOurs(r, owner); });
      if (holds_foreign || jumped_by_foreign.count(c.name)) {
        plan.warnings.push_back("chain " + Where(table_name, c.name) + " (" + family_name + ") of owner '" + owner +
                                "' is no longer desired but " +
                                (holds_foreign ? std::string("holds rules") : std::string("is used by rules")) +
                                " not tagged by it; only its tagged rules are removed");
        continue;
      }
      remove_chains.push_back(c.name);
    }
    // 5. Stale owned chains, now empty and unreferenced.
    for (const std::string& name : remove_chains) {
      tp.Op(MakeOp(TableOp::Kind::kDeleteChain, name), PlanStep::Kind::kDeleteChain,
            "delete chain " + table_name + " " + name);
    }

    if (!tp.changed()) continue;
    TableBatch batch;
    batch.family = current.family;
    batch.table = table_name;
    batch.ops = std::move(tp.ops());
    batch.with_counters = tp.with_counters();
    plan.batches.push_back(std::move(batch));
    for (PlanStep& s : tp.steps()) plan.steps.push_back(std::move(s));
  }
  return plan;
}

}  // namespace iptkit::txn
