// NativeBackend::ReadSaveText: the save text printed from each rule's binary form (native_backend.h), the way
// iptables-nft-save prints straight from the kernel's rules, instead of decoding every rule into the model and
// printing the model. The tables, chains and reasons are the model read's (JudgeChains, FormatSave of the tables
// without their rules), so both print the same bytes; native_backend_test compares them on the whole corpus.
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "iptkit/dialect.h"
#include "src/backend/native/native_backend.h"
#include "src/backend/native/native_read.h"
#include "src/backend/native/xtables.h"
#include "src/backend/ops/table_sim.h"
#include "src/dialect/text_util.h"

namespace iptkit::backend::native {
namespace {

// A visitor judges a table's chains at its first rule, before the sets are dumped (they come after the rules): once
// the whole read is in, `reason` is judged again with the sets (JudgeChains names nft sets in the table) when it is
// still empty.
void RejudgeWithSets(const std::vector<DumpedChain>& chains,
                     const std::map<std::string, std::vector<std::string>>& sets, const std::string& table,
                     std::string& reason) {
  if (!reason.empty() || !sets.count(table)) return;
  Result<Table> fresh = NewTable(table);
  if (!fresh.ok()) return;
  NativeBackend::KTable kernel;
  reason = JudgeChains(chains, sets, *fresh, kernel);
}

void AppendCounters(std::string& out, const Counters& counters) {
  dialect::AppendSaveCounters(out, counters.packets, counters.bytes);
}

// What both readers below share: the tables and chains judged as Dump judges them, and each dumped rule decoded and
// kept with its chain until a slice of kSlice rules is full, when the reader's Flush turns the slice into its output.
// Only a slice of binary rules is kept at a time, never a model of the whole table.
class SliceVisitor : public DumpVisitor {
 public:
  SliceVisitor(Family family, Xtables* xt, int netns_fd) : family_(family), xt_(xt), netns_fd_(netns_fd) {}

  void Reset() override {
    DumpVisitor::Reset();
    tables_.clear();
    chains_.clear();
    run_ = nullptr;
    judged_ = false;
    pending_.clear();
    pending_where_.clear();
  }

  Status OnRule(const nlmsghdr* m, const RuleLocation& loc) final {
    if (!judged_) IPTKIT_RETURN_IF_ERROR(Judge());
    if (run_ == nullptr || loc.chain != run_->name || loc.table != run_->table->table.name) {
      key_.assign(loc.table);
      key_ += '\0';
      key_ += loc.chain;
      auto it = chains_.find(key_);
      if (it == chains_.end()) return Status::Ok();  // a table or chain iptables does not show (judged above)
      run_ = &it->second;
    }
    Result<XtRule> xt = DecodeDumpedRule(family_, m);
    if (!xt.ok()) {
      if (run_->table->decode_reason.empty()) {
        run_->table->decode_reason = "chain " + run_->name + " rule " + std::to_string(run_->rules + 1) +
                                     " (nft handle " + std::to_string(loc.handle) + "): " + xt.status().message();
      }
      return Status::Ok();
    }
    if (pending_.empty()) pending_.reserve(kSlice);
    pending_.push_back(*std::move(xt));
    pending_where_.push_back({run_, run_->rules++});
    if (pending_.size() == kSlice) Flush();
    return Status::Ok();
  }

 protected:
  // Small enough that a slice's binary rules (and the reader's model rules: a Rule is about 0.5 KB) stay in pages
  // touched once and reused by every slice after: with 1,024 a list of 1,000 rules touched about 300 fresh pages
  // more (592 against 290 page faults, 0.76 of the CPU time paired), and on this kind of machine a first touch costs
  // more than the few more libxtables captures of smaller slices.
  static constexpr size_t kSlice = 128;
  struct TableOut {
    Table table;  // its chains, without rules
    NativeBackend::KTable kernel;
    std::string reason;         // JudgeChains's
    std::string decode_reason;  // the first rule that does not decode
    std::string format_reason;  // the first rule libxtables cannot print
  };
  struct ChainOut {
    TableOut* table = nullptr;
    std::string name;
    size_t rules = 0;   // rules decoded so far (a rule's number in its chain as the model read counts it)
    std::string lines;  // its "-A" lines (the save text's reader only)
  };

  // Turns the pending slice into the reader's output, then empties it.
  virtual void Flush() = 0;

  // After a whole read: the last slice flushed, and every table's unrepresentable_reason set. A table named and not
  // in the kernel is given as iptables-nft-save -t TABLE prints it (as Read does).
  Status Complete(const std::optional<std::string>& table) {
    if (!judged_) IPTKIT_RETURN_IF_ERROR(Judge());
    Flush();
    if (tables_.empty() && table) {
      if (Result<Table> fresh = NewTable(*table); fresh.ok()) tables_.emplace_back().table = *std::move(fresh);
    }
    for (TableOut& t : tables_) {
      // The sets are dumped after the rules: a table's reason is judged again with them (as Dump judges it).
      RejudgeWithSets(chains, sets, t.table.name, t.reason);
      t.table.unrepresentable_reason = !t.reason.empty()          ? t.reason
                                       : !t.decode_reason.empty() ? t.decode_reason
                                                                  : t.format_reason;
    }
    return Status::Ok();
  }

  // The slice's rules as libxtables takes them.
  const std::vector<const XtRule*>& PendingPointers() {
    ptrs_.clear();
    for (const XtRule& x : pending_) ptrs_.push_back(&x);
    return ptrs_;
  }

  // A rule of the slice libxtables could not print gives its table a reason (the first one counts).
  void FormatFailed(size_t k, const Status& error) {
    auto [chain, index] = pending_where_[k];
    if (chain->table->format_reason.empty()) {
      chain->table->format_reason =
          "chain " + chain->name + " rule " + std::to_string(index + 1) + ": " + error.message();
    }
  }

  Family family_;
  Xtables* xt_;
  int netns_fd_;
  std::vector<TableOut> tables_;  // in iptables-nft-save's order (fixed once judged: chains_ points into it)
  std::unordered_map<std::string, ChainOut> chains_;  // "table\0chain" → the chain
  std::string key_;
  std::vector<XtRule> pending_;
  std::vector<std::pair<ChainOut*, size_t>> pending_where_;  // chain, and the rule's index among its decoded rules

 private:
  // The tables and their chains, once every chain message is in (before the first rule; the rule dump follows the
  // chain dump).
  Status Judge() {
    judged_ = true;
    for (const std::string& name : SaveOrder()) {
      if (!tables.count(name)) continue;
      IPTKIT_ASSIGN_OR_RETURN(Table t, NewTable(name));
      tables_.emplace_back().table = std::move(t);
    }
    for (TableOut& t : tables_) {
      t.reason = JudgeChains(chains, sets, t.table, t.kernel);
      for (const Chain& c : t.table.chains) {
        if (!t.kernel.chains.count(c.name)) continue;  // a builtin chain the kernel does not have
        ChainOut& out = chains_[t.table.name + '\0' + c.name];
        out.table = &t;
        out.name = c.name;
      }
    }
    return Status::Ok();
  }

  ChainOut* run_ = nullptr;  // the chain of the previous rule (rules come chain by chain)
  bool judged_ = false;
  std::vector<const XtRule*> ptrs_;
};

// Prints the rules a slice at a time as they arrive: each one's "-A CHAIN ..." line goes into its chain's text; the
// chains' texts are put together in iptables-nft-save's order at the end.
class SaveVisitor final : public SliceVisitor {
 public:
  SaveVisitor(Family family, bool counters, Xtables* xt, int netns_fd)
      : SliceVisitor(family, xt, netns_fd), counters_(counters) {}

  // After a whole read: the text, and the tables printed (chains without rules).
  Result<SaveText> Finish(const std::optional<std::string>& table) {
    IPTKIT_RETURN_IF_ERROR(Complete(table));
    SaveText out;
    out.read.family = family_;
    size_t size = 0;
    for (const auto& [key, chain] : chains_) size += chain.lines.size();
    out.text.reserve(size + 4096);
    Ruleset one;
    one.family = family_;
    for (TableOut& t : tables_) {
      // "*table", the reason, the chain lines and "COMMIT" as FormatSave prints them; the rule lines before COMMIT.
      one.tables.clear();
      one.tables.push_back(std::move(t.table));
      std::string head = FormatSave(one, {.counters = counters_, .mark_lossy = true});
      constexpr std::string_view kCommit = "COMMIT\n";
      out.text.append(head, 0, head.size() - kCommit.size());
      for (const Chain& c : one.tables.front().chains) {
        key_.assign(one.tables.front().name);
        key_ += '\0';
        key_ += c.name;
        if (auto it = chains_.find(key_); it != chains_.end()) out.text += it->second.lines;
      }
      out.text += kCommit;
      out.read.tables.push_back(std::move(one.tables.front()));
    }
    return out;
  }

 private:
  // Prints the pending rules into their chains' texts. A rule libxtables cannot print is printed as the model read
  // leaves it (an empty rule) and gives its table a reason.
  void Flush() override {
    if (pending_.empty()) return;
    std::vector<Result<std::string>> texts = xt_->Format(PendingPointers(), netns_fd_);
    for (size_t i = 0; i < texts.size(); ++i) {
      ChainOut& chain = *pending_where_[i].first;
      std::string& out = chain.lines;
      if (counters_) {
        AppendCounters(out, texts[i].ok() ? pending_[i].counters : Counters{});
        out += ' ';
      }
      out += "-A ";
      out += chain.name;
      if (!texts[i].ok()) {
        FormatFailed(i, texts[i].status());
      } else if (!texts[i]->empty()) {
        out += ' ';
        out += *texts[i];
      }
      out += '\n';
    }
    pending_.clear();
    pending_where_.clear();
  }

  bool counters_;
};

// Decodes the rules a slice at a time into the same model rules and hands each to the caller's visitor, in dump
// order (table by table, chain by chain): what Dump builds for the model read, without keeping it.
class RulesVisitor final : public SliceVisitor {
 public:
  RulesVisitor(Family family, Xtables* xt, int netns_fd, RuleVisitor& out)
      : SliceVisitor(family, xt, netns_fd), out_(out) {}

  void Reset() override {
    // A new attempt (the generation moved during the last one): the caller forgets what it was handed.
    out_.Reset();
    SliceVisitor::Reset();
  }

  // After a whole read: the tables and chains, without rules.
  Result<Ruleset> Finish(const std::optional<std::string>& table) {
    IPTKIT_RETURN_IF_ERROR(Complete(table));
    Ruleset out;
    out.family = family_;
    for (TableOut& t : tables_) out.tables.push_back(std::move(t.table));
    return out;
  }

 private:
  // Builds the pending rules' models into the reused slice of rules and hands them over. A rule libxtables cannot
  // print is handed over as the model read leaves it (an empty rule) and gives its table a reason.
  void Flush() override {
    if (pending_.empty()) return;
    if (built_.size() < pending_.size()) built_.resize(pending_.size());
    out_ptrs_.clear();
    for (size_t i = 0; i < pending_.size(); ++i) out_ptrs_.push_back(&built_[i]);
    for (auto& [k, error] : xt_->ToRules(PendingPointers(), out_ptrs_, netns_fd_)) FormatFailed(k, error);
    for (size_t i = 0; i < pending_.size(); ++i) {
      const ChainOut& chain = *pending_where_[i].first;
      out_.OnRule(chain.table->table.name, chain.name, built_[i]);
    }
    pending_.clear();
    pending_where_.clear();
  }

  RuleVisitor& out_;
  std::vector<Rule> built_;  // the slice's models, reused by the next slice
  std::vector<Rule*> out_ptrs_;
};

}  // namespace

Result<SaveText> NativeBackend::ReadSaveText(Family family, const std::optional<std::string>& table, bool counters) {
  IPTKIT_ASSIGN_OR_RETURN(Xtables * xt, Xtables::Instance());
  SaveVisitor visitor(family, counters, xt, netns_.get());
  IPTKIT_RETURN_IF_ERROR(DumpAtOneGeneration(family, table, SnapshotDetail::kRules, ChainScope{}, visitor).status());
  return visitor.Finish(table);
}

}  // namespace iptkit::backend::native

namespace iptkit::backend::native {

Result<Ruleset> NativeBackend::ReadRules(Family family, const std::optional<std::string>& table, RuleVisitor& visitor) {
  IPTKIT_ASSIGN_OR_RETURN(Xtables * xt, Xtables::Instance());
  RulesVisitor rules(family, xt, netns_.get(), visitor);
  IPTKIT_RETURN_IF_ERROR(DumpAtOneGeneration(family, table, SnapshotDetail::kRules, ChainScope{}, rules).status());
  return rules.Finish(table);
}

}  // namespace iptkit::backend::native
