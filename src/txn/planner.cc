#include "src/txn/planner.h"

#include <algorithm>
#include <functional>
#include <tuple>
#include <unordered_set>
#include <utility>

#include "iptkit/dialect.h"
#include "src/backend/ops/table_sim.h"

namespace iptkit::txn {
namespace {

using backend::TableBatch;
using backend::TableOp;
using TKind = TableOp::Kind;

std::string Quoted(std::string_view s) { return "'" + std::string(s) + "'"; }

std::string TableName(Family family, std::string_view table) {
  return std::string(FamilyName(family)) + " " + std::string(table);
}

// Undoes the presence of the rule at 1-based `pos` of `chain`. By spec when that is the first occurrence of the
// spec (-D by spec is race-free); otherwise an earlier equal rule exists and -D by spec would remove that one, so
// the position is used, guarded by -C (a residual race with a foreign writer moving rules in between, which on
// legacy cannot happen while the xtables lock is held).
// `maybe_earlier` false: the caller knows no other rule of the chain can equal this one (SpecShapes), so the
// O(chain) search is skipped.
std::vector<TableOp> RemoveInverse(const Chain& chain, int pos, bool maybe_earlier = true) {
  const Rule& rule = chain.rules[pos - 1];
  if (!maybe_earlier || backend::FindRule(chain, rule) == pos - 1) {
    return {TableOp::Make(TKind::kDelete, chain.name, rule)};
  }
  return {TableOp::Make(TKind::kCheck, chain.name, rule), TableOp::Make(TKind::kDeleteAt, chain.name, {}, pos)};
}

// Puts `rule` (with its counters) back at 1-based `pos` of a chain that has `size` rules now.
TableOp ReinsertInverse(const std::string& chain, size_t size, int pos, const Rule& rule) {
  if (static_cast<size_t>(pos) == size + 1) return TableOp::Make(TKind::kAppend, chain, rule);
  return TableOp::Make(TKind::kInsert, chain, rule, pos);
}

// Applies `op` to `sim` and returns the ops that undo it (to be run in order, after the inverses of every later
// op). On error `sim` is unchanged.
Result<std::vector<TableOp>> ApplyAndInvert(Family family, Table& sim, const TableOp& op, bool with_counters,
                                            bool maybe_equal_rule = true) {
  // What the op is about to remove, read before applying.
  const Chain* before = op.chain.empty() ? nullptr : sim.FindChain(op.chain);
  std::optional<Rule> removed;
  int removed_pos = 0;
  if (before != nullptr) {
    if (op.kind == TKind::kDelete) {
      int at = backend::FindRule(*before, op.rule);
      if (at >= 0) {
        removed = before->rules[at];
        removed_pos = at + 1;
        // A lossy rule cannot be put back from its printed form, but the delete names it by a typed form that
        // loads to the very same kernel rule.
        if (!removed->lossy.empty() && HasTypedForm(op.rule)) {
          Counters counters = removed->counters;
          removed = op.rule;
          removed->counters = counters;
        }
      }
    } else if ((op.kind == TKind::kDeleteAt || op.kind == TKind::kReplace) && op.index >= 1 &&
               static_cast<size_t>(op.index) <= before->rules.size()) {
      removed = before->rules[op.index - 1];
      removed_pos = op.index;
    }
  }
  std::vector<Chain> flushed;  // -F: the chains as they were
  std::vector<std::string> deleted_chains;
  if (op.kind == TKind::kFlush) {
    for (const auto& c : sim.chains) {
      if (op.chain.empty() || c.name == op.chain) flushed.push_back(c);
    }
  }
  if (op.kind == TKind::kDeleteChain) {
    for (const auto& c : sim.chains) {
      if (op.chain.empty() ? !c.builtin() : c.name == op.chain) deleted_chains.push_back(c.name);
    }
  }
  std::optional<std::string> old_policy;
  Counters old_policy_counters;
  if (op.kind == TKind::kPolicy && before != nullptr) {
    old_policy = before->policy;
    old_policy_counters = before->counters;
  }

  IPTKIT_RETURN_IF_ERROR(backend::ApplyTableOp(family, sim, op, with_counters));

  const Chain* after = op.chain.empty() ? nullptr : sim.FindChain(op.chain);
  std::vector<TableOp> inverse;
  switch (op.kind) {
    case TKind::kAppend:
      inverse = RemoveInverse(*after, static_cast<int>(after->rules.size()), maybe_equal_rule);
      break;
    case TKind::kInsert:
      inverse = RemoveInverse(*after, op.index, maybe_equal_rule);
      break;
    case TKind::kCheck:
    case TKind::kZero:  // counters cannot be given back
      break;
    case TKind::kDelete:
    case TKind::kDeleteAt:
      inverse.push_back(ReinsertInverse(op.chain, after->rules.size(), removed_pos, *removed));
      break;
    case TKind::kReplace:
      inverse = RemoveInverse(*after, op.index);
      inverse.push_back(ReinsertInverse(op.chain, after->rules.size() - 1, removed_pos, *removed));
      break;
    case TKind::kNewChain:
      inverse.push_back(TableOp::Make(TKind::kDeleteChain, op.chain));
      break;
    case TKind::kDeleteChain:
      for (const auto& name : deleted_chains) inverse.push_back(TableOp::Make(TKind::kNewChain, name));
      break;
    case TKind::kRenameChain:
      inverse.push_back(TableOp::Make(TKind::kRenameChain, op.arg, {}, 0, op.chain));
      break;
    case TKind::kFlush:
      for (const auto& c : flushed) {
        for (const auto& r : c.rules) inverse.push_back(TableOp::Make(TKind::kAppend, c.name, r));
      }
      break;
    case TKind::kPolicy: {
      TableOp undo = TableOp::Make(TKind::kPolicy, op.chain, {}, 0, old_policy.value_or("ACCEPT"));
      undo.rule.counters = old_policy_counters;
      inverse.push_back(std::move(undo));
      break;
    }
  }
  return inverse;
}

// A hash of the fields two rules with the same canonical spec always share (those backend::FindRule compares
// before formatting: header fields, target, match names). Different hashes mean different specs.
uint64_t SpecShapeHash(const Rule& r) {
  uint64_t h = 14695981039346656037ull;  // FNV-1a 64
  auto byte = [&](unsigned char c) {
    h ^= c;
    h *= 1099511628211ull;
  };
  auto mix = [&](std::string_view bytes, unsigned char tag) {
    for (unsigned char c : bytes) byte(c);
    byte(tag);
  };
  for (const std::optional<Field>* f :
       {&r.source, &r.destination, &r.in_interface, &r.out_interface, &r.protocol, &r.fragment}) {
    if (*f) {
      mix((*f)->value, (*f)->negated ? 1 : 2);
    } else {
      byte(3);
    }
  }
  mix(r.target.name, r.target.kind == Target::Kind::kGoto ? 4 : r.target.kind == Target::Kind::kJump ? 5 : 6);
  for (const Match& m : r.matches) mix(m.name, 7);
  return h;
}

// One table of a BatchPlanner as PlanOp sees it: the simulated table and a way to emit ops onto it.
class TableSimulation {
 public:
  using EmitFn = std::function<Status(TableOp op)>;
  TableSimulation(Table& table, EmitFn emit) : table_(table), emit_(std::move(emit)) {}
  Table& table() { return table_; }
  Status Emit(TableOp op) { return emit_(std::move(op)); }

 private:
  Table& table_;
  EmitFn emit_;
};

std::string DescribeOp(size_t number, const Op& op) {
  std::string s =
      "op " + std::to_string(number) + " (" + std::string(OpKindName(op.kind)) + " " + TableName(op.family, op.table);
  if (!op.chain.empty()) s += " " + op.chain;
  if (op.kind == Op::Kind::kInsert || op.kind == Op::Kind::kDeleteAt || op.kind == Op::Kind::kReplace) {
    s += " " + std::to_string(op.index);
  }
  return s + ")";
}

// `s` about op `number` (1-based): the message names the op, the payload carries its index and place.
Status AtOp(const Status& s, size_t number, const Op& op, std::string_view suffix = {}) {
  return s.WithContext(DescribeOp(number, op) + std::string(suffix))
      .WithOpIndex(static_cast<int>(number) - 1)
      .WithLocation(std::string(FamilyName(op.family)), op.table, op.chain);
}

// Counters given with -c on the command line (only append, insert and replace take them, as in iptables).
bool TypedCounters(const Rule& rule) { return rule.typed.size() >= 3 && rule.typed[0] == "-c" && HasTypedForm(rule); }

bool HasRule(Op::Kind kind) {
  return kind == Op::Kind::kAppend || kind == Op::Kind::kInsert || kind == Op::Kind::kDelete ||
         kind == Op::Kind::kReplace;
}

// iptables-nft-restore 1.8.9 resolves chain names against the cache it read before the block, so in one block
// `-E OLD NEW` followed by an op that names NEW (as its chain or as a jump/goto target) fails at COMMIT with
// "No chain/target/match by that name" (checked on this kernel). Refuse that up front, naming the op, instead of
// letting the commit fail and roll back; legacy handles it.
Status CheckNftRenameUse(const Transaction& txn) {
  std::map<std::pair<Family, std::string>, std::vector<std::string>> renamed;  // (family, table) -> new names
  for (size_t i = 0; i < txn.ops().size(); ++i) {
    const Op& op = txn.ops()[i];
    std::vector<std::string>& names = renamed[{op.family, op.table}];
    auto named = [&](const std::string& chain) { return std::find(names.begin(), names.end(), chain) != names.end(); };
    const bool uses = named(op.chain) || (HasRule(op.kind) && !op.rule.target.empty() && named(op.rule.target.name));
    if (uses) {
      return AtOp(Status::InvalidArgument("uses a chain renamed earlier in the same table commit, which iptables-nft "
                                          "1.8.9 rejects at COMMIT; commit the rename in its own transaction first"),
                  i + 1, op);
    }
    if (op.kind == Op::Kind::kRenameChain) names.push_back(op.new_name);
  }
  return Status::Ok();
}

Result<const Chain*> NeedChain(const Table& table, const std::string& chain) {
  if (chain.empty()) return Status::InvalidArgument("no chain given");
  const Chain* c = table.FindChain(chain);
  if (c == nullptr) return Status::NotFound("chain " + Quoted(chain) + " does not exist in table " + table.name);
  return c;
}

Result<const Chain*> NeedUserChain(const Table& table, const std::string& chain, std::string_view verb) {
  IPTKIT_ASSIGN_OR_RETURN(const Chain* c, NeedChain(table, chain));
  if (c->builtin()) return Status::InvalidArgument("cannot " + std::string(verb) + " builtin chain " + Quoted(chain));
  return c;
}

// The rule at `index` of `chain`, checked against `expect`, and (unless `by_position`: the backend addresses rules by
// kernel handle on the snapshot it planned on) that it can be addressed race-free by its spec (its first occurrence
// in the chain is at `index`, docs/architecture.md §3).
Result<Rule> RuleAtIndex(const Chain& chain, int index, const std::optional<Rule>& expect, bool by_position) {
  if (index < 1) return Status::InvalidArgument("index " + std::to_string(index) + " must be 1 or more");
  if (static_cast<size_t>(index) > chain.rules.size()) {
    return Status::NotFound("no rule at index " + std::to_string(index) + ": chain " + chain.name + " has " +
                            std::to_string(chain.rules.size()) + " rules")
        .WithReason(std::string(kReasonIndexOutOfRange));
  }
  const Rule& at = chain.rules[index - 1];
  if (expect && !backend::SameRule(at, *expect)) {
    return Status::FailedPrecondition("rule " + std::to_string(index) + " of chain " + chain.name + " is " +
                                      Quoted(FormatRuleSpec(at)) + ", expected " + Quoted(FormatRuleSpec(*expect)));
  }
  if (by_position) return at;
  int first = backend::FindRule(chain, at);
  if (first != index - 1) {
    return Status::FailedPrecondition("rule " + std::to_string(index) + " of chain " + chain.name + " (" +
                                      Quoted(FormatRuleSpec(at)) + ") also occurs earlier, at " +
                                      std::to_string(first + 1) + "; it cannot be addressed by position race-free");
  }
  // The expected rule is the same rule and carries what the user typed, which names it exactly even when its
  // printed form is lossy.
  if (expect) return *expect;
  return at;
}

// An append (index 0) or insert where `placement` puts it.
TableOp PlacedAdd(Family family, const Table& table, const Chain& chain, size_t number, const Op& op, int index,
                  const BatchPlanner::Placement& placement) {
  if (placement) {
    const int at = placement(family, table, chain, number, index);
    if (at != index) index = at < 1 || static_cast<size_t>(at) > chain.rules.size() ? 0 : at;
  }
  if (index == 0) return TableOp::Make(TKind::kAppend, op.chain, op.rule);
  return TableOp::Make(TKind::kInsert, op.chain, op.rule, index);
}

// Renders one transaction op (op `number`, 1-based) into table ops on the simulation, with op-level checks that
// give better messages than the table-op level ones. `by_position`: the backend has handles
// (BackendTraits::handles) and resolves -D N / -R N against the snapshot the plan was made on, so they are sent as
// such instead of by spec.
Status PlanOp(Family family, TableSimulation& sim, size_t number, const Op& op,
              const BatchPlanner::Placement& placement, bool by_position) {
  const Table& table = sim.table();
  switch (op.kind) {
    case Op::Kind::kAppend: {
      IPTKIT_ASSIGN_OR_RETURN(const Chain* c, NeedChain(table, op.chain));
      // Op::unique: present anywhere in the chain (as simulated, so also when added earlier in this plan).
      if (op.unique && backend::FindRule(*c, op.rule) >= 0) return Status::Ok();
      return sim.Emit(PlacedAdd(family, table, *c, number, op, 0, placement));
    }
    case Op::Kind::kInsert: {
      IPTKIT_ASSIGN_OR_RETURN(const Chain* c, NeedChain(table, op.chain));
      if (op.index < 1 || static_cast<size_t>(op.index) > c->rules.size() + 1) {
        return Status::InvalidArgument("insert index " + std::to_string(op.index) + " out of range 1.." +
                                       std::to_string(c->rules.size() + 1) + " of chain " + op.chain)
            .WithReason(std::string(kReasonIndexOutOfRange));
      }
      if (op.unique && backend::FindRule(*c, op.rule) >= 0) return Status::Ok();
      return sim.Emit(PlacedAdd(family, table, *c, number, op, op.index, placement));
    }
    case Op::Kind::kDelete: {
      IPTKIT_ASSIGN_OR_RETURN(const Chain* c, NeedChain(table, op.chain));
      if (backend::FindRule(*c, op.rule) < 0) {
        Status missing = Status::NotFound("no rule " + Quoted(FormatRuleSpec(op.rule)) + " in chain " + op.chain);
        // A spec without owner tag does not match an owned rule that equals it but for the tag: say whose it is
        // (details: owner and rule number), so that callers can tell the user to give the owner.
        if (op.rule.OwnerTag()) return missing;
        const std::string wanted = FormatRuleSpec(op.rule);
        int number = 0;
        for (const Rule& r : c->rules) {
          ++number;
          std::optional<Rule::Tag> tag = r.OwnerTag();
          if (!tag) continue;
          Rule untagged = r;
          untagged.matches.pop_back();
          if (FormatRuleSpec(untagged) != wanted) continue;
          return Status::NotFound("no rule " + Quoted(wanted) + " without owner in chain " + op.chain + "; rule " +
                                  std::to_string(number) + " equals it but belongs to owner '" + tag->owner + "'")
              .WithOwner(tag->owner)
              .WithLocation(std::string(FamilyName(family)), table.name, op.chain, number);
        }
        return missing;
      }
      return sim.Emit(TableOp::Make(TKind::kDelete, op.chain, op.rule));
    }
    case Op::Kind::kDeleteAt: {
      IPTKIT_ASSIGN_OR_RETURN(const Chain* c, NeedChain(table, op.chain));
      IPTKIT_ASSIGN_OR_RETURN(Rule old, RuleAtIndex(*c, op.index, op.expect, by_position));
      if (by_position) return sim.Emit(TableOp::Make(TKind::kDeleteAt, op.chain, {}, op.index));
      IPTKIT_RETURN_IF_ERROR(sim.Emit(TableOp::Make(TKind::kCheck, op.chain, old)));
      return sim.Emit(TableOp::Make(TKind::kDelete, op.chain, old));
    }
    case Op::Kind::kReplace: {
      IPTKIT_ASSIGN_OR_RETURN(const Chain* c, NeedChain(table, op.chain));
      IPTKIT_ASSIGN_OR_RETURN(Rule old, RuleAtIndex(*c, op.index, op.expect, by_position));
      // Checked before anything is emitted so that a bad new rule names the replace, not a half of it.
      IPTKIT_RETURN_IF_ERROR(backend::CheckRule(family, table, op.chain, op.rule));
      if (by_position) return sim.Emit(TableOp::Make(TKind::kReplace, op.chain, op.rule, op.index));
      IPTKIT_RETURN_IF_ERROR(sim.Emit(TableOp::Make(TKind::kCheck, op.chain, old)));
      IPTKIT_RETURN_IF_ERROR(sim.Emit(TableOp::Make(TKind::kDelete, op.chain, old)));
      return sim.Emit(TableOp::Make(TKind::kInsert, op.chain, op.rule, op.index));
    }
    case Op::Kind::kCreateChain: {
      IPTKIT_RETURN_IF_ERROR(ValidateChainName(op.chain));
      if (table.FindChain(op.chain) != nullptr) {
        return Status::AlreadyExists("chain " + Quoted(op.chain) + " already exists in table " + table.name);
      }
      return sim.Emit(TableOp::Make(TKind::kNewChain, op.chain));
    }
    case Op::Kind::kDeleteChain: {
      IPTKIT_ASSIGN_OR_RETURN(const Chain* c, NeedUserChain(table, op.chain, "delete"));
      std::vector<backend::RuleRef> refs = backend::FindReferences(table, op.chain);
      if (!op.cascade) {
        if (!refs.empty()) {
          return Status::FailedPrecondition(
              "chain " + Quoted(op.chain) + " is referenced by " + std::to_string(refs.size()) +
              " rule(s): " + backend::DescribeReferences(table, refs) + " (delete them first or use cascade)");
        }
        if (!c->rules.empty()) {
          return Status::FailedPrecondition("chain " + Quoted(op.chain) + " is not empty (" +
                                            std::to_string(c->rules.size()) + " rules; flush it first or use cascade)");
        }
        return sim.Emit(TableOp::Make(TKind::kDeleteChain, op.chain));
      }
      const bool has_rules = !c->rules.empty();
      for (const auto& ref : refs) IPTKIT_RETURN_IF_ERROR(sim.Emit(TableOp::Make(TKind::kDelete, ref.chain, ref.rule)));
      if (has_rules) IPTKIT_RETURN_IF_ERROR(sim.Emit(TableOp::Make(TKind::kFlush, op.chain)));
      return sim.Emit(TableOp::Make(TKind::kDeleteChain, op.chain));
    }
    case Op::Kind::kRenameChain: {
      IPTKIT_RETURN_IF_ERROR(NeedUserChain(table, op.chain, "rename").status());
      IPTKIT_RETURN_IF_ERROR(ValidateChainName(op.new_name));
      if (table.FindChain(op.new_name) != nullptr) {
        return Status::AlreadyExists("chain " + Quoted(op.new_name) + " already exists in table " + table.name);
      }
      return sim.Emit(TableOp::Make(TKind::kRenameChain, op.chain, {}, 0, op.new_name));
    }
    case Op::Kind::kFlush:
    case Op::Kind::kZero: {
      if (!op.chain.empty()) IPTKIT_RETURN_IF_ERROR(NeedChain(table, op.chain).status());
      return sim.Emit(TableOp::Make(op.kind == Op::Kind::kFlush ? TKind::kFlush : TKind::kZero, op.chain));
    }
    case Op::Kind::kPolicy: {
      IPTKIT_ASSIGN_OR_RETURN(const Chain* c, NeedChain(table, op.chain));
      if (!c->builtin()) {
        return Status::InvalidArgument("cannot set a policy on user chain " + Quoted(op.chain) +
                                       " (only builtin chains have one)");
      }
      if (op.policy != "ACCEPT" && op.policy != "DROP") {
        return Status::InvalidArgument("bad policy " + Quoted(op.policy) + " (expected ACCEPT or DROP)");
      }
      if (op.policy == "DROP" && table.name == "nat") {
        return Status::InvalidArgument(
            "policy DROP is not allowed in table nat: the nat table is not intended for "
            "filtering (iptables inhibits DROP there)");
      }
      return sim.Emit(TableOp::Make(TKind::kPolicy, op.chain, {}, 0, op.policy));
    }
  }
  return Status::Internal("unknown op kind");
}

// A batch that rebuilds `table` whole (builtin policies, user chains, rules, all with counters).
TableBatch PreimageBatch(Family family, const Table& table) {
  TableBatch batch;
  batch.family = family;
  batch.table = table.name;
  batch.flush_table = true;
  batch.with_counters = true;
  for (const auto& c : table.chains) {
    if (c.builtin()) {
      TableOp op = TableOp::Make(TKind::kPolicy, c.name, {}, 0, *c.policy);
      op.rule.counters = c.counters;
      batch.ops.push_back(std::move(op));
    } else {
      batch.ops.push_back(TableOp::Make(TKind::kNewChain, c.name));
    }
  }
  for (const auto& c : table.chains) {
    for (const auto& r : c.rules) batch.ops.push_back(TableOp::Make(TKind::kAppend, c.name, r));
  }
  return batch;
}

// OK unless `op` carries a rule marked lossy that has no typed form: such a rule can only be named by its printed
// form, which loads as another rule (Rule::lossy).
Status CheckSendable(const TableOp& op, std::string_view what) {
  const bool carries = op.kind == TKind::kAppend || op.kind == TKind::kInsert || op.kind == TKind::kReplace ||
                       op.kind == TKind::kCheck || op.kind == TKind::kDelete;
  if (!carries || op.rule.lossy.empty() || HasTypedForm(op.rule)) return Status::Ok();
  return Status::FailedPrecondition("rule " + Quoted(FormatRuleSpec(op.rule)) + " of chain " + op.chain +
                                    " cannot be named by its printed form: " + op.rule.lossy + "; " +
                                    std::string(what) +
                                    " would be another rule (name it by the spec it was added with: delete by "
                                    "spec, or --expect SPEC)")
      .WithReason("lossy");
}

// Whether the journal entries from `from` on may make CheckTableGraph fail on a table that passed it before:
// only a rule added with a target that is neither a standard verdict nor empty can (a jump or goto to a user chain
// is a new edge: a loop, or hooks newly reaching a chain; a target extension in a user chain must suit every hook
// that reaches it). Deleting rules or chains, renaming, flushing, policies and verdict rules cannot. Skipping the
// check for them keeps a group commit of many `-j DROP` appends from walking a 20,000-rule table per request.
template <typename EntryT>
bool MayChangeGraph(const std::vector<EntryT>& journal, size_t from) {
  for (size_t i = from; i < journal.size(); ++i) {
    const EntryT& e = journal[i];
    if (!e.op) continue;
    const TableOp& op = *e.op;
    const bool adds = op.kind == TKind::kAppend || op.kind == TKind::kInsert || op.kind == TKind::kReplace;
    if (adds && !op.rule.target.empty() && !IsStandardVerdict(op.rule.target.name)) return true;
  }
  return false;
}

}  // namespace

std::vector<Family> InvolvedFamilies(const Transaction& txn) {
  std::vector<Family> families;
  for (const auto& op : txn.ops()) {
    if (std::find(families.begin(), families.end(), op.family) == families.end()) families.push_back(op.family);
  }
  return families;
}

Result<Table> SnapshotTable(const Ruleset& snapshot, const std::string& table) {
  if (const Table* t = snapshot.FindTable(table)) return *t;
  return backend::NewTable(table);
}

// ---- BatchPlanner ----

BatchPlanner::BatchPlanner(backend::Backend* backend, Snapshots snapshots, ShapeIndex shapes)
    : backend_(backend),
      by_position_(backend != nullptr && backend->traits().handles),
      state_(std::move(snapshots)),
      shapes_(std::move(shapes)) {
  for (auto& [family, rs] : state_) rs.family = family;
}

Result<const Ruleset*> BatchPlanner::Current(Family family) const {
  auto it = state_.find(family);
  if (it == state_.end()) return Status::Internal("no snapshot of " + std::string(FamilyName(family)));
  return &it->second;
}

Result<Table*> BatchPlanner::Touch(Family family, const std::string& table) {
  IPTKIT_RETURN_IF_ERROR(poisoned_);
  auto it = state_.find(family);
  if (it == state_.end()) return Status::Internal("no snapshot of " + std::string(FamilyName(family)));
  if (Table* t = it->second.FindTable(table)) return t;
  IPTKIT_ASSIGN_OR_RETURN(Table fresh, backend::NewTable(table));
  it->second.tables.push_back(std::move(fresh));
  Entry created;
  created.family = family;
  created.table = table;
  created.created = true;
  journal_.push_back(std::move(created));
  return &it->second.tables.back();
}

Status BatchPlanner::Emit(Family family, Table& table, TableOp op, bool with_counters) {
  // Counters travel only in batches sent with counters; elsewhere a rule starts at zero (and must not carry
  // counters into a group commit that another request's batch makes a batch with counters).
  if (!with_counters) op.rule.counters = {};
  // Whether the rule an append/insert adds may equal one the chain holds (then its inverse must not be a plain
  // `-D spec`, which would remove the earlier copy). A set of SpecShapeHash per chain answers "surely not" without
  // scanning the chain: built on first use from the chain, it only ever grows (every rule added through here goes
  // in; deletes leave stale entries), so it holds a superset of the chain's shapes — except after ops that move or
  // replace a chain's rules wholesale, which drop it.
  const bool adds = op.kind == TKind::kAppend || op.kind == TKind::kInsert || op.kind == TKind::kReplace;
  bool maybe_equal = true;
  const auto key = std::make_tuple(family, table.name, op.chain);
  if (adds) {
    auto it = shapes_.find(key);
    if (it == shapes_.end()) {
      std::unordered_set<uint64_t> built;
      if (const Chain* c = table.FindChain(op.chain)) {
        for (const Rule& r : c->rules) built.insert(SpecShapeHash(r));
      }
      it = shapes_.emplace(key, std::move(built)).first;
    }
    const uint64_t h = SpecShapeHash(op.rule);
    maybe_equal = it->second.count(h) != 0;
    it->second.insert(h);
  } else if (op.kind == TKind::kRenameChain || op.kind == TKind::kDeleteChain) {
    shapes_.erase(key);
    shapes_.erase(std::make_tuple(family, table.name, op.arg));
    if (op.chain.empty())
      std::erase_if(
          shapes_, [&](const auto& e) { return std::get<0>(e.first) == family && std::get<1>(e.first) == table.name; });
  }
  // iptkit never rewrites a rule from a lossy printed form (it would load as another rule): neither the op nor what
  // would undo it may have to send one.
  IPTKIT_RETURN_IF_ERROR(CheckSendable(op, "it"));
  IPTKIT_ASSIGN_OR_RETURN(std::vector<TableOp> inverse, ApplyAndInvert(family, table, op, with_counters, maybe_equal));
  for (const TableOp& inv : inverse) {
    Status sendable = CheckSendable(inv, "undoing this change would have to re-add it from its printed form; it");
    if (!sendable.ok()) {
      Undo(Entry{family, table.name, op, std::move(inverse), std::nullopt, false, false, with_counters});
      return sendable;
    }
  }
  Entry e;
  e.family = family;
  e.table = table.name;
  e.zeroes = op.kind == TKind::kZero;
  e.with_counters = with_counters;
  e.op = std::move(op);
  e.inverse = std::move(inverse);
  journal_.push_back(std::move(e));
  return Status::Ok();
}

void BatchPlanner::Undo(const Entry& entry) {
  Ruleset& rs = state_.at(entry.family);
  if (entry.created) {
    std::erase_if(rs.tables, [&](const Table& t) { return t.name == entry.table; });
    return;
  }
  Table* table = rs.FindTable(entry.table);
  if (table == nullptr) {
    poisoned_ = Status::Internal("planner undo: table " + entry.table + " vanished from the simulation");
    return;
  }
  if (!entry.op) {  // a table reset
    *table = *entry.preimage;
    return;
  }
  for (const TableOp& inv : entry.inverse) {
    Status s = backend::ApplyTableOp(entry.family, *table, inv, /*with_counters=*/true);
    if (!s.ok()) {
      // Cannot happen when the simulation is right after `entry`; if it does, nothing planned is trusted any more.
      poisoned_ =
          Status::Internal("planner undo of '" + backend::DescribeTableOp(*entry.op) + "' failed: " + s.ToString());
      return;
    }
  }
}

void BatchPlanner::RollbackTo(Mark mark) {
  while (journal_.size() > mark.entries) {
    Undo(journal_.back());
    journal_.pop_back();
  }
}

Status BatchPlanner::AddTransaction(const Transaction& txn, const Placement& placement) {
  IPTKIT_RETURN_IF_ERROR(poisoned_);
  if (backend_ == nullptr) return Status::Internal("BatchPlanner without a backend cannot plan transactions");
  if (!backend_->traits().rename_then_use) IPTKIT_RETURN_IF_ERROR(CheckNftRenameUse(txn));
  struct Group {
    Family family;
    std::string table;
    std::vector<size_t> ops;  // indices into txn.ops()
  };
  std::vector<Group> groups;
  for (size_t i = 0; i < txn.ops().size(); ++i) {
    const Op& op = txn.ops()[i];
    auto it = std::find_if(groups.begin(), groups.end(),
                           [&](const Group& g) { return g.family == op.family && g.table == op.table; });
    if (it == groups.end()) {
      groups.push_back({op.family, op.table, {}});
      it = groups.end() - 1;
    }
    it->ops.push_back(i);
  }

  const Mark start = mark();
  auto fail = [&](Status s) {
    RollbackTo(start);
    return s;
  };
  for (const Group& group : groups) {
    const std::string where = TableName(group.family, group.table);
    Result<Table*> table = Touch(group.family, group.table);
    if (!table.ok()) {
      return fail(AtOp(table.status(), group.ops.front() + 1, txn.ops()[group.ops.front()]));
    }
    if (!(*table)->unrepresentable_reason.empty()) {
      return fail(Status::FailedPrecondition("table " + where + " is unrepresentable (" +
                                             (*table)->unrepresentable_reason + "); iptkit does not rewrite it")
                      .WithLocation(std::string(FamilyName(group.family)), group.table)
                      .WithReason("unrepresentable"));
    }

    // Local rule checks, then one canonicalization call for every rule of the table.
    std::vector<Op> ops;
    std::vector<Rule> rules;
    for (size_t i : group.ops) {
      const Op& op = txn.ops()[i];
      // The same local checks as every other entry point, before anything runs iptables (table_sim.h).
      if (HasRule(op.kind)) {
        Status s = backend::CheckRuleLocally(op.family, op.table, op.chain, op.rule);
        if (s.ok() && op.kind == Op::Kind::kDelete && TypedCounters(op.rule)) {
          s = Status::InvalidArgument("-c sets the counters of a new rule; delete takes none").WithToken("-c");
        }
        if (!s.ok()) return fail(AtOp(s, i + 1, op));
        rules.push_back(op.rule);
      }
      if (op.expect) {
        Status s = ValidateRule(*op.expect, op.family);
        if (!s.ok()) return fail(AtOp(s, i + 1, op, " expect"));
        rules.push_back(*op.expect);
      }
      ops.push_back(op);
    }
    if (!rules.empty()) {
      Result<std::vector<Rule>> canon = backend_->Canonicalize(group.family, group.table, rules);
      if (!canon.ok()) {
        // Which op: the rules iptables accepts are cached now, so one call per rule finds the refused one cheaply.
        for (size_t k = 0; k < ops.size(); ++k) {
          const Op& op = ops[k];
          if (HasRule(op.kind)) {
            Result<std::vector<Rule>> one = backend_->Canonicalize(group.family, group.table, {op.rule});
            if (!one.ok()) return fail(AtOp(one.status(), group.ops[k] + 1, op));
          }
          if (op.expect) {
            Result<std::vector<Rule>> one = backend_->Canonicalize(group.family, group.table, {*op.expect});
            if (!one.ok()) return fail(AtOp(one.status(), group.ops[k] + 1, op, " expect"));
          }
        }
        return fail(canon.status().WithContext("table " + where));
      }
      if (canon->size() != rules.size()) {
        return fail(Status::Internal("backend " + backend_->traits().name + " returned " +
                                     std::to_string(canon->size()) + " canonical rules for " +
                                     std::to_string(rules.size())));
      }
      size_t next = 0;
      for (Op& op : ops) {
        if (HasRule(op.kind)) op.rule = (*canon)[next++];
        if (op.expect) op.expect = (*canon)[next++];
      }
    }

    // Canonicalization may have run iptables, but nothing else touched the simulation: the pointer is still good.
    Table& t = **table;
    const size_t group_start = journal_.size();
    TableSimulation sim(t, [&](TableOp op) { return Emit(group.family, t, std::move(op), false); });
    for (size_t k = 0; k < ops.size(); ++k) {
      Status s = PlanOp(group.family, sim, group.ops[k] + 1, ops[k], placement, by_position_);
      if (!s.ok()) return fail(AtOp(s, group.ops[k] + 1, ops[k]));
    }
    if (MayChangeGraph(journal_, group_start)) {
      Status graph = backend::CheckTableGraph(group.family, t);
      if (!graph.ok()) return fail(graph.WithContext("table " + where + " after the transaction"));
    }
  }
  return Status::Ok();
}

Status BatchPlanner::AddBatch(TableBatch batch) {
  IPTKIT_RETURN_IF_ERROR(poisoned_);
  const std::string where = TableName(batch.family, batch.table);
  const Mark start = mark();
  auto fail = [&](Status s) {
    RollbackTo(start);
    return s;
  };
  IPTKIT_ASSIGN_OR_RETURN(Table * table, Touch(batch.family, batch.table));
  if (!table->unrepresentable_reason.empty()) {
    return fail(Status::FailedPrecondition("table " + where + " is unrepresentable (" + table->unrepresentable_reason +
                                           "); iptkit does not rewrite it")
                    .WithLocation(std::string(FamilyName(batch.family)), batch.table)
                    .WithReason("unrepresentable"));
  }
  if (batch.flush_table) {
    for (size_t i = 0; i < start.entries; ++i) {
      const Entry& e = journal_[i];
      if (e.family == batch.family && e.table == batch.table && !e.created) {
        return fail(Status::FailedPrecondition("a whole-table restore of " + where +
                                               " must be the first change planned for that table"));
      }
    }
    // The undo of a whole-table restore is the table's pre-image, sent from its printed forms.
    for (const Chain& c : table->chains) {
      for (size_t i = 0; i < c.rules.size(); ++i) {
        if (c.rules[i].lossy.empty() || HasTypedForm(c.rules[i])) continue;
        return fail(
            Status::FailedPrecondition("a whole-table restore of " + where + " could not be undone: rule " +
                                       std::to_string(i + 1) + " of chain " + c.name + " is lossy (" +
                                       c.rules[i].lossy + "); iptkit never rewrites a rule from its printed form")
                .WithLocation(std::string(FamilyName(batch.family)), batch.table, c.name, static_cast<int>(i + 1))
                .WithReason("lossy"));
      }
    }
    Entry reset;
    reset.family = batch.family;
    reset.table = batch.table;
    reset.preimage = *table;
    journal_.push_back(std::move(reset));
    backend::ResetTable(*table);
    std::erase_if(shapes_, [&](const auto& e) {
      return std::get<0>(e.first) == batch.family && std::get<1>(e.first) == batch.table;
    });
  }
  for (size_t i = 0; i < batch.ops.size(); ++i) {
    Status s = Emit(batch.family, *table, batch.ops[i], batch.with_counters);
    if (!s.ok()) {
      return fail(
          s.WithContext(where + " op " + std::to_string(i + 1) + " (" + backend::DescribeTableOp(batch.ops[i]) + ")"));
    }
  }
  // A whole-table restore builds the table anew: always checked.
  if (batch.flush_table || MayChangeGraph(journal_, start.entries)) {
    Status graph = backend::CheckTableGraph(batch.family, *table);
    if (!graph.ok()) return fail(graph.WithContext("table " + where));
  }
  return Status::Ok();
}

namespace {

// Journal entries grouped per table in order of first touch.
template <typename EntryT>
std::vector<std::vector<const EntryT*>> GroupByTable(const std::vector<EntryT>& journal, size_t from, size_t to) {
  std::vector<std::vector<const EntryT*>> groups;
  for (size_t i = from; i < to && i < journal.size(); ++i) {
    const EntryT& e = journal[i];
    if (e.created) continue;
    auto it = std::find_if(groups.begin(), groups.end(), [&](const std::vector<const EntryT*>& g) {
      return g.front()->family == e.family && g.front()->table == e.table;
    });
    if (it == groups.end()) {
      groups.push_back({&e});
    } else {
      it->push_back(&e);
    }
  }
  return groups;
}

}  // namespace

std::vector<PlannedTable> BatchPlanner::Finish(Mark from, Mark to) const {
  std::vector<PlannedTable> planned;
  for (const auto& group : GroupByTable(journal_, from.entries, to.entries)) {
    PlannedTable p;
    p.batch.family = p.inverse.family = group.front()->family;
    p.batch.table = p.inverse.table = group.front()->table;
    p.inverse.with_counters = true;
    const Entry* reset = nullptr;
    for (const Entry* e : group) {
      if (!e->op) {
        reset = e;
        p.batch.flush_table = true;
        continue;
      }
      p.batch.ops.push_back(*e->op);
      if (e->with_counters) p.batch.with_counters = true;
      if (e->zeroes) p.irreversible = true;
    }
    if (reset != nullptr) {
      p.inverse = PreimageBatch(reset->family, *reset->preimage);
    } else {
      for (auto it = group.rbegin(); it != group.rend(); ++it) {
        p.inverse.ops.insert(p.inverse.ops.end(), (*it)->inverse.begin(), (*it)->inverse.end());
      }
    }
    planned.push_back(std::move(p));
  }
  // Tables that zero counters commit last: a failure of any other table then rolls back completely.
  std::stable_partition(planned.begin(), planned.end(), [](const PlannedTable& p) { return !p.irreversible; });
  return planned;
}

std::vector<TableCommit> BatchPlanner::Render(Mark from, Mark to) const {
  std::vector<TableCommit> out;
  for (const auto& group : GroupByTable(journal_, from.entries, to.entries)) {
    TableBatch batch;
    batch.family = group.front()->family;
    batch.table = group.front()->table;
    for (const Entry* e : group) {
      if (!e->op) {
        batch.flush_table = true;
      } else {
        batch.ops.push_back(*e->op);
        if (e->with_counters) batch.with_counters = true;
      }
    }
    out.push_back({batch.family, batch.table, backend::RenderRestoreBlock(batch)});
  }
  return out;
}

Result<std::vector<PlannedTable>> PlanTransaction(backend::Backend& backend, const Transaction& txn,
                                                  Snapshots snapshots) {
  BatchPlanner planner(&backend, std::move(snapshots));
  planner.set_by_position(backend.traits().handles || backend.traits().commits_plan_snapshot);
  IPTKIT_RETURN_IF_ERROR(planner.AddTransaction(txn));
  return planner.Finish();
}

Result<PlannedTable> PlanBatch(const Ruleset& snapshot, TableBatch batch) {
  batch.family = snapshot.family;
  const Family family = snapshot.family;
  const std::string table = batch.table;
  BatchPlanner planner(nullptr, Snapshots{{family, snapshot}});
  IPTKIT_RETURN_IF_ERROR(planner.AddBatch(std::move(batch)));
  std::vector<PlannedTable> planned = planner.Finish();
  if (planned.empty()) {
    // Nothing to send (an empty --noflush batch): still a valid plan of that table.
    PlannedTable p;
    p.batch.family = p.inverse.family = family;
    p.batch.table = p.inverse.table = table;
    p.inverse.with_counters = true;
    return p;
  }
  return std::move(planned.front());
}

}  // namespace iptkit::txn
