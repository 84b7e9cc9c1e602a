// FakeBackend: an in-memory Backend with the semantics of iptables-restore --noflush (leveldb's NewMemEnv), for
// iptkit's unit tests and for users' own tests.
//
// Each Commit applies its batch to a copy of the table and swaps the copy in only when every op succeeded (the
// kernel's atomic table replace); a failing op returns an error naming the op and its 1-based line in the batch
// and changes nothing. Semantics per op are those of src/backend/ops/table_sim.h. Tables appear on first use
// (a Commit naming them) with their builtin chains, policy ACCEPT. Rules are stored canonicalized the way the
// kernel would print the common cases: a bare address gets /32 (IPv4) or /128 (IPv6), a prefix masks the address
// ("10.1.2.3/8" → "10.0.0.0/8"), a contiguous dotted mask becomes a prefix; everything else is kept as given
// (so Canonicalize(x) is what FormatRuleSpec prints after that). Counters are kept per rule, zeroed by -Z, taken
// from the batch only with with_counters; AddPacketCounts simulates traffic.
// Thread-safety: not thread-safe (like every Backend); the test hooks too.
//
//   auto fake = std::make_unique<iptkit::backend::FakeBackend>();
//   FakeBackend* raw = fake.get();
//   auto fw = iptkit::Firewall::WithBackend(std::move(fake));
//   ... fw->Commit(txn) ...
//   raw->AddPacketCounts(Family::kIPv4, "filter", "INPUT", 1, 10, 840);
#ifndef IPTKIT_SRC_BACKEND_FAKE_FAKE_BACKEND_H_
#define IPTKIT_SRC_BACKEND_FAKE_FAKE_BACKEND_H_

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "src/backend/backend.h"

namespace iptkit::backend {

class FakeBackend : public Backend {
 public:
  FakeBackend() = default;

  // name "fake", no variant; commits table by table (like the restore backend), no handles, no lock needed.
  const BackendTraits& traits() const override;
  // Every table that exists (was used) in the family; with `table`, that table (as freshly created when it was
  // never used). NotFound for a table name iptables does not know. Always current: fresh_counters changes nothing.
  Result<Ruleset> Read(Family family, const std::optional<std::string>& table = std::nullopt,
                       bool fresh_counters = true) override;
  Result<CommitReport> Commit(const std::vector<CommitTable>& tables) override;
  using Backend::Commit;
  Result<std::vector<Rule>> Canonicalize(Family family, const std::string& table,
                                         const std::vector<Rule>& rules) override;
  // A no-op guard; locked() tells whether one is alive.
  Result<std::unique_ptr<LockGuard>> Lock(std::chrono::milliseconds wait) override;
  // backend "fake"; one variant "fake" listing the existing tables and their rule counts.
  Result<FirewallInfo> Info() override;

  // ---- Test hooks ----
  // Replaces the family's whole state (e.g. with ParseSave output); tables keep their unrepresentable_reason.
  void SetRuleset(Ruleset ruleset);
  // Replaces the family's state with parsed iptables-save text.
  Status LoadSave(Family family, std::string_view save_text);
  // Adds traffic to the counters of rule `index` (1-based) of a chain.
  Status AddPacketCounts(Family family, std::string_view table, std::string_view chain, int index, uint64_t packets,
                         uint64_t bytes);
  // Marks a table as unrepresentable (as the nft backend does when iptables-save is lossy); creates it if needed.
  Status MarkUnrepresentable(Family family, std::string_view table, std::string reason);
  // Successful commits, in order (what was swapped in).
  const std::vector<TableBatch>& committed() const { return committed_; }
  // Calls of Commit, successful or not.
  int commit_calls() const { return commit_calls_; }
  bool locked() const { return *lock_depth_ > 0; }

 private:
  Status CommitOneTable(const TableBatch& batch);
  std::map<Family, Ruleset> state_;
  std::vector<TableBatch> committed_;
  int commit_calls_ = 0;
  std::shared_ptr<int> lock_depth_ = std::make_shared<int>(0);  // shared with live guards
};

// The fake as a plain Backend (the factory's kFake).
std::unique_ptr<Backend> NewFakeBackend();

// The fake's canonical form of one rule (see FakeBackend); InvalidArgument naming the spec for a malformed
// address or mask.
Result<Rule> FakeCanonicalRule(Family family, const Rule& rule);

}  // namespace iptkit::backend

#endif  // IPTKIT_SRC_BACKEND_FAKE_FAKE_BACKEND_H_
