// Firewall: queries, Commit and Restore (declarative PlanApply/Apply live in firewall_apply.cc, Open in
// firewall_open.cc so that users of WithBackend do not need the backend factory).
#include "iptkit/firewall.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <random>
#include <thread>
#include <tuple>
#include <utility>

#include "iptkit/dialect.h"
#include "src/backend/backend.h"
#include "src/backend/ops/table_sim.h"
#include "src/txn/firewall_internal.h"

namespace iptkit {

namespace txn {

Result<Snapshots> ReadSnapshots(backend::Backend& backend, const std::vector<Family>& families,
                                backend::SnapshotDetail detail, const backend::ChainScope& scope, bool for_commit) {
  Snapshots snapshots;
  for (Family family : families) {
    if (snapshots.count(family) != 0) continue;
    // Planning needs no fresh counters: a backend may answer from its snapshot cache (nft generation id). A backend
    // that commits the snapshot a plan read (commits_plan_snapshot) is always asked for a plan's snapshot.
    const bool whole = detail == backend::SnapshotDetail::kRules && scope.every_chain &&
                       !(for_commit && backend.traits().commits_plan_snapshot);
    Result<Ruleset> rs = whole               ? backend.Read(family, std::nullopt, /*fresh_counters=*/false)
                         : scope.every_chain ? backend.ReadForPlan(family, detail)
                                             : backend.ReadChainsForPlan(family, detail, scope);
    if (!rs.ok()) return rs.status().WithContext("reading the " + std::string(FamilyName(family)) + " snapshot");
    rs->family = family;
    snapshots.emplace(family, *std::move(rs));
  }
  return snapshots;
}

namespace {

bool Empty(const backend::TableBatch& batch) { return batch.ops.empty() && !batch.flush_table; }

// Whether `txn` changes more than one table. A backend without atomic_across_tables commits them one by one and
// undoes the earlier ones with their inverses when a later one fails; those inverses re-add what an op removed and
// must not remove an equal earlier rule for an added one, so they are planned on the rules of the chains they touch.
bool SpansTables(const Transaction& txn) {
  for (const Op& op : txn.ops()) {
    if (op.family != txn.ops().front().family || op.table != txn.ops().front().table) return true;
  }
  return false;
}

// Whether `op` adds a rule the table's graph check (backend::CheckTableGraph: jump loops, the hooks that reach a
// target extension in a user chain) has to see together with every other chain's rules.
bool AddsGraphEdge(const Op& op) {
  if (op.kind != Op::Kind::kAppend && op.kind != Op::Kind::kInsert && op.kind != Op::Kind::kReplace) return false;
  const Target& t = op.rule.target;
  const bool extension = backend::IsTargetExtension(t);
  const bool to_chain =
      t.kind == Target::Kind::kGoto || (t.kind == Target::Kind::kJump && !IsStandardVerdict(t.name) && !extension);
  return to_chain || (extension && !IsBuiltinChain(op.table, op.chain));
}

// The user chain the rule of `op` jumps or goes to, if any (its existence is checked on the snapshot).
std::optional<std::string> JumpTarget(const Op& op) {
  if (op.kind != Op::Kind::kAppend && op.kind != Op::Kind::kInsert && op.kind != Op::Kind::kReplace) {
    return std::nullopt;
  }
  const Target& t = op.rule.target;
  const bool to_chain = t.kind == Target::Kind::kGoto ||
                        (t.kind == Target::Kind::kJump && !IsStandardVerdict(t.name) && !backend::IsTargetExtension(t));
  if (!to_chain || t.name.empty()) return std::nullopt;
  return t.name;
}

}  // namespace

CommitResult RenderPlanned(const std::vector<PlannedTable>& tables, bool dry_run) {
  CommitResult result;
  result.dry_run = dry_run;
  for (const auto& t : tables) {
    if (Empty(t.batch)) continue;
    result.tables.push_back({t.batch.family, t.batch.table, backend::RenderRestoreBlock(t.batch)});
  }
  return result;
}

Result<CommitResult> CommitBatches(backend::Backend& backend, const std::vector<PlannedTable>& tables,
                                   const CommitOptions& options) {
  CommitResult result = RenderPlanned(tables, options.dry_run);
  if (options.dry_run) return result;
  IPTKIT_ASSIGN_OR_RETURN(backend::CommitReport report, backend.Commit(tables));
  result.atomic_across_tables = report.atomic_across_tables;
  result.backend = report.backend;
  return result;
}

backend::SnapshotDetail PlanDetail(const Transaction& txn, const backend::BackendTraits& traits) {
  using D = backend::SnapshotDetail;
  if (!traits.handles && !traits.commits_plan_snapshot) return D::kRules;
  // Without handles but committing the snapshot the plan read (native-legacy): positions are exact under the lock,
  // but the inverses of a transaction over several tables need real rules, and so do the loop and hook checks of
  // an op that adds a jump or puts a target extension in a user chain.
  const bool snapshot = !traits.handles;
  if (snapshot && !traits.atomic_across_tables && SpansTables(txn)) return D::kRules;
  D need = D::kChains;
  for (const Op& op : txn.ops()) {
    if (snapshot && AddsGraphEdge(op)) return D::kRules;
    switch (op.kind) {
      case Op::Kind::kAppend:
        if (op.unique) return D::kRules;  // looks for an equal rule
        break;
      case Op::Kind::kCreateChain:
      case Op::Kind::kRenameChain:
      case Op::Kind::kFlush:
      case Op::Kind::kPolicy:
        break;
      case Op::Kind::kInsert:
        if (op.unique) return D::kRules;
        if (op.index != 1) need = std::max(need, D::kPositions);
        break;
      case Op::Kind::kDelete:
        if (!snapshot) return D::kRules;
        // The chain's placeholders with the rule where it is byte for byte (probes).
        need = std::max(need, D::kPositions);
        break;
      case Op::Kind::kDeleteAt:
      case Op::Kind::kReplace:
        need = std::max(need, op.expect ? D::kRules : D::kPositions);
        break;
      case Op::Kind::kDeleteChain:
      case Op::Kind::kZero:
        return D::kRules;
    }
  }
  return need;
}

backend::ChainScope PlanScope(const Transaction& txn, const backend::BackendTraits& traits) {
  if (!traits.handles && !traits.commits_plan_snapshot) return backend::ChainScope{};
  // Without handles but committing the snapshot the plan read (native-legacy): as PlanDetail says, an op that adds a
  // jump needs every chain, and a flush's inverse (a transaction over several tables) re-adds the chain's rules.
  const bool snapshot = !traits.handles;
  const bool inverses = snapshot && !traits.atomic_across_tables && SpansTables(txn);
  backend::ChainScope scope;
  scope.every_chain = false;
  // The planner looks up no chain but those its ops name (their own chain, a jump target, a chain to create) unless
  // an op needs every chain (below): the snapshot may hold only those, as iptables-nft fetches only them.
  scope.named_only = true;
  for (const Op& op : txn.ops()) {
    if (snapshot && AddsGraphEdge(op)) return backend::ChainScope{};
    scope.tables.insert(op.table);  // the planner looks at the tables of its ops only
    if (std::optional<std::string> target = JumpTarget(op)) scope.named.emplace(op.table, *target);
    switch (op.kind) {
      case Op::Kind::kDeleteChain:  // whether anything still jumps to it: every chain's rules
      case Op::Kind::kRenameChain:  // later ops may name the chain by its new name
        return backend::ChainScope{};
      case Op::Kind::kZero:
        if (op.chain.empty()) return backend::ChainScope{};
        scope.chains.emplace(op.table, op.chain);
        break;
      case Op::Kind::kFlush:
        if (!op.chain.empty()) scope.named.emplace(op.table, op.chain);
        if (!inverses) break;
        if (op.chain.empty()) return backend::ChainScope{};
        scope.chains.emplace(op.table, op.chain);
        break;
      case Op::Kind::kDelete:  // searches the chain for its rule only
        scope.probes[{op.table, op.chain}].push_back(op.rule);
        break;
      case Op::Kind::kAppend:
      case Op::Kind::kInsert:
      case Op::Kind::kDeleteAt:
      case Op::Kind::kReplace:
        scope.chains.emplace(op.table, op.chain);
        break;
      case Op::Kind::kCreateChain:  // whether it exists already
      case Op::Kind::kPolicy:
        scope.named.emplace(op.table, op.chain);
        break;
    }
  }
  // A chain read whole needs no probe; without handles a chain read as placeholders keeps its probe (the
  // placeholders then show the deleted rule where it is).
  if (!snapshot || PlanDetail(txn, traits) == backend::SnapshotDetail::kRules) {
    for (const auto& where : scope.chains) scope.probes.erase(where);
  }
  // One table is committed alone and never undone op by op: a chain only deleted from by spec needs no positions
  // (the backend gives the rules it found, not a placeholder per rule of the chain; Firewall::Commit drops the
  // inverse that would be planned from them).
  if (snapshot && !inverses) scope.probe_positions = false;
  return scope;
}

Result<CommitResult> LockedCommit(backend::Backend& backend, const FirewallOptions& fw_options,
                                  const std::vector<Family>& families, const CommitOptions& options,
                                  const PlanFunction& plan, backend::SnapshotDetail detail,
                                  const backend::ChainScope& scope) {
  // Aborted means a concurrent change won between read and commit (e.g. the native backend's stale generation id):
  // read, plan and commit again, a few times, with jittered backoff.
  constexpr int kAttempts = 5;
  for (int attempt = 1;; ++attempt) {
    Result<CommitResult> done = [&]() -> Result<CommitResult> {
      IPTKIT_ASSIGN_OR_RETURN(std::unique_ptr<backend::LockGuard> lock, backend.Lock(fw_options.wait));
      IPTKIT_ASSIGN_OR_RETURN(Snapshots snapshots,
                              ReadSnapshots(backend, families, detail, scope, /*for_commit=*/true));
      if (options.progress) {
        CommitProgress progress;
        progress.stage = CommitProgress::Stage::kSnapshotRead;
        options.progress(progress);
      }
      IPTKIT_ASSIGN_OR_RETURN(std::vector<PlannedTable> planned, plan(std::move(snapshots)));
      if (!options.dry_run && fw_options.before_commit_hook) fw_options.before_commit_hook();
      if (!options.progress) return CommitBatches(backend, planned, options);
      CommitProgress progress;
      progress.stage = CommitProgress::Stage::kPlanned;
      for (const PlannedTable& t : planned) {
        if (Empty(t.batch)) continue;
        ++progress.tables;
        progress.ops += t.batch.ops.size();
      }
      options.progress(progress);
      if (options.dry_run || progress.tables == 0) return CommitBatches(backend, planned, options);
      progress.stage = CommitProgress::Stage::kCommitting;
      options.progress(progress);
      IPTKIT_ASSIGN_OR_RETURN(CommitResult result, CommitBatches(backend, planned, options));
      progress.stage = CommitProgress::Stage::kCommitted;
      options.progress(progress);
      return result;
    }();
    if (done.ok() || done.status().code() != StatusCode::kAborted) return done;
    if (attempt == kAttempts) {
      return done.status().WithContext("gave up after " + std::to_string(kAttempts) + " attempts");
    }
    static thread_local std::minstd_rand jitter(std::random_device{}());
    const int base_us = 500 << attempt;
    std::this_thread::sleep_for(std::chrono::microseconds(base_us / 2 + static_cast<int>(jitter() % base_us)));
  }
}

}  // namespace txn

namespace {

using backend::TableOp;

// FailedPrecondition naming the first table of `rs` that its text cannot show faithfully (an unrepresentable table,
// or the first rule marked lossy), with how many more there are; OK when there is none.
Status RefuseLossy(const Ruleset& rs) {
  const std::string family(FamilyName(rs.family));
  const std::string hint =
      "; refusing to print what would restore differently (allow_lossy / --allow-lossy prints "
      "it with these rules marked)";
  std::optional<Status> first;
  size_t more = 0;
  for (const Table& t : rs.tables) {
    if (!t.unrepresentable_reason.empty()) {
      if (first) {
        ++more;
        continue;
      }
      first = Status::FailedPrecondition(family + " table " + t.name +
                                         " cannot be shown faithfully: " + t.unrepresentable_reason + hint)
                  .WithLocation(family, t.name)
                  .WithReason("unrepresentable");
    }
    for (const Chain& c : t.chains) {
      for (size_t i = 0; i < c.rules.size(); ++i) {
        if (c.rules[i].lossy.empty()) continue;
        if (first) {
          ++more;
          continue;
        }
        first = Status::FailedPrecondition(family + " " + t.name + " " + c.name + " rule " + std::to_string(i + 1) +
                                           " is lossy: " + c.rules[i].lossy + hint)
                    .WithLocation(family, t.name, c.name, static_cast<int>(i + 1))
                    .WithReason("lossy");
      }
    }
  }
  if (!first) return Status::Ok();
  if (more == 0) return *first;
  return Status(first->code(), first->message() + " (and " + std::to_string(more) + " more)")
      .WithDetails(first->details());
}

// The 1-based line of each rule of a restore text: (table, chain, index among the chain's rules) → line, as
// ParseSave numbers them (it has parsed the text already, so every rule line is well formed).
std::map<std::tuple<std::string, std::string, size_t>, int> RuleLines(std::string_view text) {
  std::map<std::tuple<std::string, std::string, size_t>, int> lines;
  std::map<std::pair<std::string, std::string>, size_t> counts;
  std::string table;
  int n = 0;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(start, end - start);
    start = end + 1;
    ++n;
    if (line.starts_with("*")) {
      table = std::string(line.substr(1));
      continue;
    }
    if (!line.empty() && line[0] == '[') line.remove_prefix(std::min(line.size(), line.find(']') + 1));
    Result<std::vector<Token>> tokens = LexRestoreLine(line);
    if (!tokens.ok() || tokens->size() < 2 || ((*tokens)[0].text != "-A" && (*tokens)[0].text != "--append")) {
      continue;
    }
    const std::string& chain = (*tokens)[1].text;
    lines[{table, chain, counts[{table, chain}]++}] = n;
  }
  return lines;
}

// The batch a restore of `table` (parsed from the user's text) sends.
Result<backend::TableBatch> RestoreBatch(Family family, const Table& table, const Table& current,
                                         const Firewall::RestoreOptions& options) {
  backend::TableBatch batch;
  batch.family = family;
  batch.table = table.name;
  batch.flush_table = !options.noflush;
  batch.with_counters = options.counters;
  for (const auto& chain : table.chains) {
    const bool builtin = IsBuiltinChain(table.name, chain.name);
    if (chain.builtin() != builtin) {
      return Status::InvalidArgument(
          "table " + table.name + ": chain " + chain.name +
          (builtin ? " is builtin and needs a policy" : " is not builtin; use '-' as policy"));
    }
    if (builtin) {
      // A whole-table restore sets every declared policy. With --noflush the declarations are ignored: a
      // builtin declaration there would reset an admin's policy (docs/architecture.md §3); policies change only by -P.
      if (!options.noflush) {
        TableOp op = TableOp::Make(TableOp::Kind::kPolicy, chain.name, {}, 0, *chain.policy);
        op.rule.counters = chain.counters;
        batch.ops.push_back(std::move(op));
      }
    } else if (!options.noflush || current.FindChain(chain.name) == nullptr) {
      // --noflush: an existing user chain is appended to, never flushed (unlike iptables-restore's ":NAME -").
      batch.ops.push_back(TableOp::Make(TableOp::Kind::kNewChain, chain.name));
    }
  }
  for (const auto& chain : table.chains) {
    for (Rule rule : chain.rules) {
      if (!options.counters) rule.counters = {};
      batch.ops.push_back(TableOp::Make(TableOp::Kind::kAppend, chain.name, std::move(rule)));
    }
  }
  return batch;
}

}  // namespace

Firewall::Firewall(std::unique_ptr<backend::Backend> backend, FirewallOptions options)
    : backend_(std::move(backend)), options_(std::move(options)) {}

Firewall::~Firewall() = default;

std::unique_ptr<Firewall> Firewall::WithBackend(std::unique_ptr<backend::Backend> backend,
                                                const FirewallOptions& options) {
  return std::unique_ptr<Firewall>(new Firewall(std::move(backend), options));
}

Result<Ruleset> Firewall::List(Family family, std::optional<std::string> table, const ListOptions& options) {
  IPTKIT_ASSIGN_OR_RETURN(Ruleset rs, backend_->Read(family, table));
  if (!options.allow_lossy) IPTKIT_RETURN_IF_ERROR(RefuseLossy(rs));
  return rs;
}

Result<std::string> Firewall::Save(Family family, std::optional<std::string> table, const SaveOptions& options) {
  IPTKIT_ASSIGN_OR_RETURN(backend::SaveText saved, backend_->ReadSaveText(family, table, options.counters));
  if (!options.allow_lossy) IPTKIT_RETURN_IF_ERROR(RefuseLossy(saved.read));
  return std::move(saved.text);
}

Result<std::string> Firewall::Save(Family family, std::optional<std::string> table, bool counters) {
  return Save(family, std::move(table), SaveOptions{.counters = counters});
}

Result<bool> Firewall::Check(Family family, const std::string& table, const std::string& chain, const Rule& rule) {
  IPTKIT_RETURN_IF_ERROR(backend::CheckRuleLocally(family, table, chain, rule));
  if (rule.typed.size() >= 3 && rule.typed[0] == "-c" && HasTypedForm(rule)) {
    return Status::InvalidArgument("-c sets the counters of a new rule; check takes none").WithToken("-c");
  }
  IPTKIT_ASSIGN_OR_RETURN(std::vector<Rule> canon, backend_->Canonicalize(family, table, {rule}));
  // Found byte for byte is found; anything else is decided on the decoded rules.
  IPTKIT_ASSIGN_OR_RETURN(bool exact, backend_->HoldsExactRule(family, table, chain, canon.front()));
  if (exact) return true;
  // A backend with handles reads that one chain and its rules (as iptables -C does); the others read the table.
  backend::ChainScope one = backend::ChainScope::One(table, chain);
  one.named_only = true;
  Result<Ruleset> read = backend_->traits().handles || backend_->traits().commits_plan_snapshot
                             ? backend_->ReadChainsForPlan(family, backend::SnapshotDetail::kRules, one)
                             : backend_->Read(family, table);
  IPTKIT_ASSIGN_OR_RETURN(Ruleset rs, std::move(read));
  const Table* t = rs.FindTable(table);
  const Chain* c = t == nullptr ? nullptr : t->FindChain(chain);
  if (c == nullptr) {
    return Status::NotFound("chain '" + chain + "' does not exist in " + std::string(FamilyName(family)) + " " + table);
  }
  return backend::FindRule(*c, canon.front()) >= 0;
}

Result<FirewallInfo> Firewall::Info() {
  IPTKIT_ASSIGN_OR_RETURN(FirewallInfo info, backend_->Info());
  if (info.backend.empty()) info.backend = backend_->traits().name;
  info.netns = options_.netns;
  return info;
}

Result<Rule> Firewall::Canonicalize(Family family, const std::string& table, const Rule& rule) {
  IPTKIT_RETURN_IF_ERROR(backend::CheckRuleLocally(family, table, "", rule));
  IPTKIT_ASSIGN_OR_RETURN(std::vector<Rule> canon, backend_->Canonicalize(family, table, {rule}));
  if (canon.size() != 1) return Status::Internal("backend returned " + std::to_string(canon.size()) + " rules");
  return std::move(canon.front());
}

Result<CommitResult> Firewall::Commit(const Transaction& txn, const CommitOptions& options) {
  if (txn.empty()) {
    CommitResult nothing;
    nothing.dry_run = options.dry_run;
    nothing.atomic_across_tables = true;
    return nothing;
  }
  const backend::ChainScope scope = txn::PlanScope(txn, backend_->traits());
  return txn::LockedCommit(
      *backend_, options_, txn::InvolvedFamilies(txn), options,
      [&](txn::Snapshots snapshots) -> Result<std::vector<txn::PlannedTable>> {
        IPTKIT_ASSIGN_OR_RETURN(std::vector<txn::PlannedTable> planned,
                                txn::PlanTransaction(*backend_, txn, std::move(snapshots)));
        // Planned on chains without positions (ChainScope::probe_positions): the inverse would be wrong, and the
        // one table is committed alone, so it is never sent (CommitTableByTable).
        if (!scope.probe_positions && !scope.probes.empty()) {
          for (txn::PlannedTable& t : planned) t.inverse.ops.clear();
        }
        return planned;
      },
      txn::PlanDetail(txn, backend_->traits()), scope);
}

Result<CommitResult> Firewall::Restore(Family family, std::string_view text, const RestoreOptions& options) {
  IPTKIT_ASSIGN_OR_RETURN(Ruleset parsed,
                          ParseSave(text, family, {.restore_input = options.noflush, .keep_tokens = true}));
  if (parsed.tables.empty()) return Status::InvalidArgument("restore text names no table (no '*table' line)");
  if (options.progress) {
    CommitProgress progress;
    progress.stage = CommitProgress::Stage::kParsed;
    for (const Table& t : parsed.tables) {
      for (const Chain& c : t.chains) progress.rules += c.rules.size();
    }
    options.progress(progress);
  }
  for (size_t i = 0; i < parsed.tables.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      if (parsed.tables[i].name == parsed.tables[j].name) {
        return Status::InvalidArgument("restore text names table " + parsed.tables[i].name + " twice");
      }
    }
  }
  // Every rule goes through the checks an appended rule goes through, and is canonicalized (before the lock: a
  // backend may run iptables to do it), keeping what the file says as what is sent.
  const std::map<std::tuple<std::string, std::string, size_t>, int> lines = RuleLines(text);
  for (Table& table : parsed.tables) {
    std::vector<Rule*> rules;
    std::vector<int> rule_lines;
    for (Chain& chain : table.chains) {
      for (size_t k = 0; k < chain.rules.size(); ++k) {
        auto line = lines.find({table.name, chain.name, k});
        const int n = line == lines.end() ? 0 : line->second;
        Status s = backend::CheckRuleLocally(family, table.name, chain.name, chain.rules[k]);
        if (!s.ok()) return n > 0 ? s.WithContext("line " + std::to_string(n)).WithLine(n) : s;
        rules.push_back(&chain.rules[k]);
        rule_lines.push_back(n);
      }
    }
    std::vector<Rule> batch;
    for (const Rule* r : rules) batch.push_back(*r);
    Result<std::vector<Rule>> canon = backend_->Canonicalize(family, table.name, batch);
    if (!canon.ok()) {
      // Which rule: the others are cached now, so one call per rule finds it cheaply.
      for (size_t k = 0; k < batch.size(); ++k) {
        Result<std::vector<Rule>> one = backend_->Canonicalize(family, table.name, {batch[k]});
        if (one.ok()) continue;
        const int n = rule_lines[k];
        return n > 0 ? one.status().WithContext("line " + std::to_string(n)).WithLine(n) : one.status();
      }
      return canon.status();
    }
    for (size_t k = 0; k < rules.size(); ++k) *rules[k] = std::move((*canon)[k]);
  }
  return txn::LockedCommit(
      *backend_, options_, {family}, CommitOptions{.progress = options.progress, .dry_run = options.dry_run},
      [&](txn::Snapshots snapshots) -> Result<std::vector<txn::PlannedTable>> {
        // Every batch is built against the table as read (each table is named once), then planned.
        std::vector<backend::TableBatch> batches;
        for (const auto& table : parsed.tables) {
          IPTKIT_ASSIGN_OR_RETURN(Table current, txn::SnapshotTable(snapshots.at(family), table.name));
          IPTKIT_ASSIGN_OR_RETURN(backend::TableBatch batch, RestoreBatch(family, table, current, options));
          batches.push_back(std::move(batch));
        }
        txn::BatchPlanner planner(backend_.get(), std::move(snapshots));
        for (backend::TableBatch& batch : batches) {
          batch.family = family;
          IPTKIT_RETURN_IF_ERROR(planner.AddBatch(std::move(batch)));
        }
        return planner.Finish();
      });
}

}  // namespace iptkit
