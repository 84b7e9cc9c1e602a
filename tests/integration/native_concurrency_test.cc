// Concurrency that can fail, on the native backend: a foreign writer (the iptables-nft CLI) inserts at and deletes
// from position 1 of the chain iptkit is editing, forced in between iptkit's read and its commit by
// FirewallOptions::before_commit_hook, while iptkit replaces by number, deletes by number, inserts by number and
// applies an owner's desired state. Each edit is linearized at its commit: the result must be exactly what the
// same sequence gives when every foreign write comes first (what `iptables -R/-D/-I N` would do at that moment),
// and the owner's chain must hold exactly its desired rules in order. The batch's generation id is what makes it
// so: the stale batch is refused (ERESTART), re-read and re-planned, so retries > 0. With the generation check
// switched off (a test knob) the same sequence edits the wrong rules, which the test shows.
#include <gtest/gtest.h>

#include <algorithm>

#include "iptkit/dialect.h"
#include "iptkit/firewall.h"
#include "src/backend/native/native_backend.h"
#include "tests/integration/library_util.h"
#include "tests/integration/test_util.h"

namespace iptkit::integration {
namespace {

std::string Line(const std::string& chain, const std::string& spec) { return "-A " + chain + " " + spec; }

// The rule lines without the owner tag (the tag's id is iptkit's choice).
std::vector<std::string> Untagged(const std::vector<std::string>& lines) {
  std::vector<std::string> out;
  for (std::string l : lines) {
    size_t tag = l.find(" -m comment --comment \"iptkit:");
    if (tag != std::string::npos) {
      size_t end = l.find('"', tag + 24);
      l.erase(tag, end + 1 - tag);
    }
    out.push_back(l);
  }
  return out;
}

class NativeRaceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    IPTKIT_REQUIRE_ROOT();
    ASSERT_OK_AND_ASSIGN(ns_, TestNetns::Create());
    IPTKIT_REQUIRE_VARIANT(*ns_, Variant::kNft, Family::kIPv4);
    std::string text = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n";
    for (int i = 1; i <= 8; ++i) {
      expected_.push_back(Line("INPUT", "-s 192.0.2." + std::to_string(i) + "/32 -j ACCEPT"));
      text += expected_.back() + "\n";
    }
    text += "COMMIT\n";
    CommandResult loaded = ns_->Restore(Variant::kNft, Family::kIPv4, text);
    ASSERT_TRUE(loaded.ok()) << loaded.Describe();
  }

  // A Firewall on a NativeBackend whose first commit attempt of each call is preceded by `foreign_` (if set).
  void Open(bool check_generation) {
    backend::BackendOptions options;
    options.netns = ns_->name();
    auto b = backend::native::NativeBackend::Create(options);
    ASSERT_TRUE(b.ok()) << b.status().ToString();
    native_ = b->get();
    native_->native_options().check_generation = check_generation;
    FirewallOptions fw;
    fw.netns = ns_->name();
    fw.before_commit_hook = [this] {
      if (++hook_calls_ == 1 && foreign_) foreign_();
    };
    fw_ = Firewall::WithBackend(std::move(b).value(), fw);
  }

  // Runs `op` with the foreign write `write` forced between its read and its commit.
  Status WithForeign(const std::function<void()>& write, const std::function<Status()>& op) {
    hook_calls_ = 0;
    foreign_ = write;
    Status s = op();
    foreign_ = nullptr;
    if (hook_calls_ == 0) return Status::Internal("the hook never ran");
    return s;
  }

  void ForeignInsert(const std::string& chain, const std::string& source, std::vector<std::string>& model) {
    CommandResult r = ns_->Iptables(Variant::kNft, Family::kIPv4, {"-I", chain, "1", "-s", source, "-j", "DROP"});
    EXPECT_TRUE(r.ok()) << r.Describe();
    model.insert(model.begin(), Line(chain, "-s " + source + "/32 -j DROP"));
  }
  void ForeignDeleteFirst(const std::string& chain, std::vector<std::string>& model) {
    CommandResult r = ns_->Iptables(Variant::kNft, Family::kIPv4, {"-D", chain, "1"});
    EXPECT_TRUE(r.ok()) << r.Describe();
    if (!model.empty()) model.erase(model.begin());
  }

  std::vector<std::string> Kernel(const std::string& chain) {
    Result<std::string> saved = ns_->Save(Variant::kNft, Family::kIPv4, "filter");
    EXPECT_TRUE(saved.ok()) << saved.status().ToString();
    return saved.ok() ? RuleLines(*saved, "filter", chain) : std::vector<std::string>{};
  }

  // The imperative part: 9 steps of replace / delete / insert by number, each behind a foreign write at position
  // 1. Returns the first error (if any); `expected_` is the linearized result.
  Status Imperative() {
    for (int step = 0; step < 9; ++step) {
      const std::string mine = "-s 198.51.100." + std::to_string(step) + "/32 -j ACCEPT";
      auto write = [&, step] {
        if (step % 2 == 0) {
          ForeignInsert("INPUT", "203.0.113." + std::to_string(step), expected_);
        } else {
          ForeignDeleteFirst("INPUT", expected_);
        }
      };
      Transaction txn;
      if (step % 3 == 0) txn.Replace(Family::kIPv4, "filter", "INPUT", 3, Spec(mine));
      if (step % 3 == 1) txn.DeleteAt(Family::kIPv4, "filter", "INPUT", 4);
      if (step % 3 == 2) txn.Insert(Family::kIPv4, "filter", "INPUT", 2, Spec(mine));
      Status s = WithForeign(write, [&] { return fw_->Commit(txn).status(); });
      if (!s.ok()) return s.WithContext("step " + std::to_string(step));
      if (step % 3 == 0) expected_[2] = Line("INPUT", mine);
      if (step % 3 == 1) expected_.erase(expected_.begin() + 3);
      if (step % 3 == 2) expected_.insert(expected_.begin() + 1, Line("INPUT", mine));
    }
    return Status::Ok();
  }

  // The declarative part: owner "app" owns APP-IN; its desired rules change 6 times while foreign writes insert
  // at and delete position 1 of APP-IN (which may be one of the owner's rules). Returns the first error; fills the
  // owner's last desired rules and the foreign rules that must remain.
  Status Declarative(std::vector<std::string>* desired_out, std::vector<std::string>* foreign_out) {
    auto desired_for = [](int round) {
      std::vector<std::string> d;
      for (int i = 0; i < 4; ++i)
        d.push_back("-s 10.0." + std::to_string(round) + "." + std::to_string(i) + "/32 -j ACCEPT");
      if (round % 2 == 1) std::reverse(d.begin(), d.end());
      return d;
    };
    auto apply = [&](const std::vector<std::string>& bodies) {
      DesiredState want;
      want.owner = "app";
      OwnedChain chain;
      chain.name = "APP-IN";
      for (const std::string& b : bodies) chain.rules.push_back(Spec(b));
      want.chains.push_back(std::move(chain));
      return fw_->Apply(want).status();
    };
    IPTKIT_RETURN_IF_ERROR(apply(desired_for(0)));
    std::vector<std::string> last = desired_for(0);
    std::vector<std::string> foreign;
    for (int round = 1; round <= 6; ++round) {
      auto write = [&, round] {
        std::vector<std::string> scratch;
        if (round % 2 == 1) {
          CommandResult r =
              ns_->Iptables(Variant::kNft, Family::kIPv4,
                            {"-I", "APP-IN", "1", "-s", "203.0.113." + std::to_string(100 + round), "-j", "DROP"});
          EXPECT_TRUE(r.ok()) << r.Describe();
          foreign.insert(foreign.begin(), "-s 203.0.113." + std::to_string(100 + round) + "/32 -j DROP");
        } else {
          // The foreign rule inserted last round goes again (by spec: the owner's apply may have put one of its
          // rules before it).
          CommandResult r =
              ns_->Iptables(Variant::kNft, Family::kIPv4,
                            {"-D", "APP-IN", "-s", "203.0.113." + std::to_string(100 + round - 1), "-j", "DROP"});
          EXPECT_TRUE(r.ok()) << r.Describe();
          if (!foreign.empty()) foreign.erase(foreign.begin());
        }
      };
      last = desired_for(round);
      IPTKIT_RETURN_IF_ERROR(
          WithForeign(write, [&] { return apply(last); }).WithContext("round " + std::to_string(round)));
    }
    *desired_out = last;
    *foreign_out = foreign;
    return Status::Ok();
  }

  std::unique_ptr<TestNetns> ns_;
  backend::native::NativeBackend* native_ = nullptr;
  std::unique_ptr<Firewall> fw_;
  std::function<void()> foreign_;
  int hook_calls_ = 0;
  std::vector<std::string> expected_;
};

TEST_F(NativeRaceTest, EditsBehindForeignWritesAreExactlyRightAndRetried) {
  Open(/*check_generation=*/true);
  ASSERT_STATUS_OK(Imperative());
  EXPECT_EQ(Kernel("INPUT"), expected_);
  const uint64_t imperative_retries = native_->stats().stale_generation;
  EXPECT_GE(imperative_retries, 9u) << "each step's first batch was stale";

  std::vector<std::string> desired, foreign;
  ASSERT_STATUS_OK(Declarative(&desired, &foreign));
  EXPECT_GT(native_->stats().stale_generation, imperative_retries);
  // APP-IN: the foreign rules that remain first (each was inserted at 1), then exactly the desired rules in order.
  std::vector<std::string> want;
  for (const std::string& f : foreign) want.push_back(Line("APP-IN", f));
  for (const std::string& d : desired) want.push_back(Line("APP-IN", d));
  EXPECT_EQ(Untagged(Kernel("APP-IN")), want);
}

// The knob that shows what the generation id prevents: the same sequence without it edits rules by the handles of a
// stale snapshot, so the result is not the linearized one (or the kernel refuses an edit of a rule that is gone).
TEST_F(NativeRaceTest, WithoutTheGenerationCheckTheSameSequenceGoesWrong) {
  Open(/*check_generation=*/false);
  Status imperative = Imperative();
  const bool imperative_wrong = !imperative.ok() || Kernel("INPUT") != expected_;
  EXPECT_TRUE(imperative_wrong) << "without the generation check the stale batches should have edited wrong rules";
  EXPECT_EQ(native_->stats().stale_generation, 0u);
}

// ---- Which batches carry the generation id (docs/architecture.md "Generation checks") ----

// The native backend read by the test itself, so that a foreign write lands exactly between its read and its commit.
class NativeAnchorTest : public NativeRaceTest {
 protected:
  using K = backend::TableOp::Kind;

  void SetUp() override {
    NativeRaceTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    backend::BackendOptions options;
    options.netns = ns_->name();
    auto b = backend::native::NativeBackend::Create(options);
    ASSERT_TRUE(b.ok()) << b.status().ToString();
    backend_ = std::move(b).value();
  }

  Rule Canon(const std::string& spec) {
    Result<std::vector<Rule>> c = backend_->Canonicalize(Family::kIPv4, "filter", {Spec(spec)});
    EXPECT_TRUE(c.ok()) << spec << ": " << c.status().ToString();
    return c.ok() ? c->front() : Rule{};
  }
  static backend::TableOp Op(K kind, const Rule& rule, int index = 0, bool anchored = false) {
    backend::TableOp op = backend::TableOp::Make(kind, "INPUT", rule, index);
    op.anchored = anchored;
    return op;
  }
  // Reads, lets `foreign` write, then commits `ops` planned on that read.
  Status ReadForeignCommit(const std::function<void()>& foreign, std::vector<backend::TableOp> ops) {
    IPTKIT_RETURN_IF_ERROR(backend_->Read(Family::kIPv4, std::nullopt, false).status());
    foreign();
    backend::CommitTable t;
    t.batch.family = Family::kIPv4;
    t.batch.table = "filter";
    t.batch.ops = std::move(ops);
    return backend_->Commit(std::vector<backend::CommitTable>{t}).status();
  }

  std::unique_ptr<backend::native::NativeBackend> backend_;
};

// An unrelated foreign commit between the read and the commit does not make a batch of handle-anchored ops stale:
// it is sent without the generation id and lands exactly where its anchors say (the linearization: the foreign
// write, then the batch).
TEST_F(NativeAnchorTest, AnchoredBatchIsNotRefusedForAnUnrelatedForeignCommit) {
  const std::string mine = "-s 198.51.100.1/32 -j ACCEPT";
  const std::string tail = "-s 198.51.100.2/32 -j ACCEPT";
  // After 192.0.2.2 (snapshot position 3 = after rule 2), delete 192.0.2.5 by spec, append one: while a foreign
  // writer inserts at position 1.
  Status s = ReadForeignCommit([&] { ForeignInsert("INPUT", "203.0.113.1", expected_); },
                               {Op(K::kCheck, Canon("-s 192.0.2.2/32 -j ACCEPT"), 0, /*anchored=*/true),
                                Op(K::kInsert, Canon(mine), 3, /*anchored=*/true),
                                Op(K::kDelete, Canon("-s 192.0.2.5/32 -j ACCEPT")), Op(K::kAppend, Canon(tail))});
  ASSERT_STATUS_OK(s);
  EXPECT_EQ(backend_->stats().stale_generation, 0u);
  EXPECT_EQ(backend_->stats().anchored_batches, 1u);
  EXPECT_EQ(backend_->stats().checked_batches, 0u);
  // expected_: the foreign rule first, then 192.0.2.1..8.
  expected_.insert(expected_.begin() + 3, Line("INPUT", mine));
  expected_.erase(std::find(expected_.begin(), expected_.end(), Line("INPUT", "-s 192.0.2.5/32 -j ACCEPT")));
  expected_.push_back(Line("INPUT", tail));
  EXPECT_EQ(Kernel("INPUT"), expected_);
}

// The same foreign write makes a batch whose meaning depends on the snapshot stale: an insert at an absolute
// position, or a `-C` precondition. Those carry the generation id and the kernel refuses them; nothing of them is
// committed.
TEST_F(NativeAnchorTest, SnapshotBoundBatchesStillCarryTheGenerationId) {
  const std::vector<std::string> before = Kernel("INPUT");
  std::vector<std::string> model = before;
  Status absolute = ReadForeignCommit([&] { ForeignInsert("INPUT", "203.0.113.2", model); },
                                      {Op(K::kInsert, Canon("-s 198.51.100.3/32 -j ACCEPT"), 3)});
  EXPECT_EQ(absolute.code(), StatusCode::kAborted) << absolute.ToString();
  Status checked =
      ReadForeignCommit([&] { ForeignDeleteFirst("INPUT", model); },
                        {Op(K::kCheck, Canon("-s 192.0.2.1/32 -j ACCEPT")), Op(K::kAppend, Canon("-s 198.51.100.4"))});
  EXPECT_EQ(checked.code(), StatusCode::kAborted) << checked.ToString();
  EXPECT_EQ(backend_->stats().stale_generation, 2u);
  EXPECT_EQ(backend_->stats().checked_batches, 2u);
  EXPECT_EQ(Kernel("INPUT"), model) << "only the foreign writes are in";
}

// An anchor another writer removed between the read and the commit: the kernel refuses the op that names it
// (ENOENT), the whole batch with it, and the caller gets NotFound, the code it re-reads and re-plans on.
TEST_F(NativeAnchorTest, AGoneAnchorFailsTheWholeBatchWithNotFound) {
  std::vector<std::string> model = expected_;
  Status s = ReadForeignCommit(
      [&] {
        CommandResult r =
            ns_->Iptables(Variant::kNft, Family::kIPv4, {"-D", "INPUT", "-s", "192.0.2.2", "-j", "ACCEPT"});
        EXPECT_TRUE(r.ok()) << r.Describe();
        model.erase(model.begin() + 1);
      },
      {Op(K::kAppend, Canon("-s 198.51.100.5/32 -j ACCEPT")),
       Op(K::kInsert, Canon("-s 198.51.100.6/32 -j ACCEPT"), 3, /*anchored=*/true)});
  EXPECT_EQ(s.code(), StatusCode::kNotFound) << s.ToString();
  EXPECT_EQ(backend_->stats().stale_generation, 0u);
  EXPECT_EQ(Kernel("INPUT"), model) << "nothing of the batch was committed";
  // The same delete by spec of a rule that is gone.
  s = ReadForeignCommit(
      [&] {
        CommandResult r =
            ns_->Iptables(Variant::kNft, Family::kIPv4, {"-D", "INPUT", "-s", "192.0.2.3", "-j", "ACCEPT"});
        EXPECT_TRUE(r.ok()) << r.Describe();
        model.erase(model.begin() + 1);
      },
      {Op(K::kDelete, Canon("-s 192.0.2.3/32 -j ACCEPT"))});
  EXPECT_EQ(s.code(), StatusCode::kNotFound) << s.ToString();
  EXPECT_EQ(Kernel("INPUT"), model);
}

// An anchored insert between a rule without an owner tag and an owned one names the owned one (it goes before it):
// another writer deleting the rule before it does not fail the batch. Regression: in the daemon soak, unowned adds
// placed above owned `last` hooks followed a foreign `-A` rule there, and most refused commits (ENOENT) were those.
TEST_F(NativeAnchorTest, AnInsertBeforeAnOwnedRuleIsAnchoredOnIt) {
  const std::string owned = "-s 192.0.2.9/32 -m comment --comment \"iptkit:app:r1\" -j ACCEPT";
  CommandResult added =
      ns_->Iptables(Variant::kNft, Family::kIPv4,
                    {"-A", "INPUT", "-s", "192.0.2.9", "-m", "comment", "--comment", "iptkit:app:r1", "-j", "ACCEPT"});
  ASSERT_TRUE(added.ok()) << added.Describe();
  std::vector<std::string> model = expected_;
  model.push_back(Line("INPUT", owned));
  const std::string mine = "-s 198.51.100.7/32 -j ACCEPT";
  // Snapshot position 9: after 192.0.2.8, right before the owned rule; 192.0.2.8 goes meanwhile.
  Status s = ReadForeignCommit(
      [&] {
        CommandResult r =
            ns_->Iptables(Variant::kNft, Family::kIPv4, {"-D", "INPUT", "-s", "192.0.2.8", "-j", "ACCEPT"});
        EXPECT_TRUE(r.ok()) << r.Describe();
        model.erase(model.begin() + 7);
      },
      {Op(K::kInsert, Canon(mine), 9, /*anchored=*/true)});
  ASSERT_STATUS_OK(s);
  EXPECT_EQ(backend_->stats().stale_generation, 0u);
  model.insert(model.end() - 1, Line("INPUT", mine));
  EXPECT_EQ(Kernel("INPUT"), model);
}

}  // namespace
}  // namespace iptkit::integration
