// NativeBackend with event_cache against the real kernel and iptables-nft in private network namespaces (root;
// skips otherwise): the cached snapshot follows foreign writes (iptables-nft in the same namespace) by re-reading
// only the tables they touched, is never re-read for the backend's own commits or for writes to the other family,
// and is read whole again after the notifications were lost (a foreign burst of 20,000 changes against a small
// receive buffer). After each step the cache must equal a fresh read.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <thread>

#include "iptkit/dialect.h"
#include "src/backend/native/native_backend.h"
#include "src/backend/test_netns.h"
#include "src/base/unique_fd.h"

namespace iptkit::backend::native {
namespace {

using K = TableOp::Kind;

TableOp Op(K kind, int index, const Rule& rule) {
  TableOp op;
  op.kind = kind;
  op.chain = "INPUT";
  op.index = index;
  op.rule = rule;
  return op;
}

// The model as iptables-save prints it (no counters), with the unrepresentable marks.
std::string Text(const Ruleset& rs) { return FormatSave(rs, {.counters = false, .mark_lossy = true}); }

class EventCacheTest : public ::testing::Test {
 protected:
  void Open(int rcvbuf = 0) {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root for network namespaces";
    ns_ = std::make_unique<test::TestNetns>("iptkit-events");
    ASSERT_TRUE(ns_->ok()) << ns_->error();
    BackendOptions options;
    options.netns = ns_->name();
    options.event_cache = true;
    NativeOptions native;
    native.event_rcvbuf = rcvbuf;
    auto b = NativeBackend::Create(options, native);
    ASSERT_TRUE(b.ok()) << b.status().ToString();
    backend_ = std::move(b).value();
    ASSERT_NE(backend_->event_feed(), nullptr);
    BackendOptions plain;
    plain.netns = ns_->name();
    auto f = NativeBackend::Create(plain);
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    fresh_ = std::move(f).value();
  }
  void SetUp() override { Open(); }

  std::string Iptables(std::vector<std::string> args, Family family = Family::kIPv4) const {
    args.insert(args.begin(), family == Family::kIPv4 ? "/usr/sbin/iptables-nft" : "/usr/sbin/ip6tables-nft");
    return ns_->Exec(args);
  }

  // The cached read equals what another backend reads from the kernel now.
  void ExpectCacheIsCurrent(Family family, const std::string& where) {
    Result<Ruleset> cached = backend_->Read(family, std::nullopt, /*fresh_counters=*/false);
    ASSERT_TRUE(cached.ok()) << where << ": " << cached.status().ToString();
    Result<Ruleset> now = fresh_->Read(family);
    ASSERT_TRUE(now.ok()) << where << ": " << now.status().ToString();
    EXPECT_EQ(Text(*cached), Text(*now)) << where;
  }

  struct EventCacheStats {
    uint64_t resyncs = 0;
    uint64_t table_reads = 0;
    uint64_t applied = 0;
  };
  EventCacheStats Stats() const {
    return {backend_->stats().event_resyncs, backend_->stats().event_table_reads, backend_->stats().event_applied};
  }

  std::unique_ptr<test::TestNetns> ns_;
  std::unique_ptr<NativeBackend> backend_;
  std::unique_ptr<NativeBackend> fresh_;  // reads the kernel without a cache
};

TEST_F(EventCacheTest, FollowsForeignWritesByRereadingOnlyTheTablesTheyTouched) {
  ASSERT_EQ(Iptables({"-A", "INPUT", "-s", "10.0.0.1", "-j", "ACCEPT"}), "");
  ExpectCacheIsCurrent(Family::kIPv4, "first read");
  const uint64_t dumps = backend_->stats().dumps;

  // Nothing happened: answered from the cache with no read of the kernel at all.
  ExpectCacheIsCurrent(Family::kIPv4, "unchanged");
  EXPECT_EQ(backend_->stats().dumps, dumps);
  EXPECT_GE(backend_->stats().event_hits, 1u);

  // Rule additions and deletions are applied from their notifications (`applied`); other changes make the table
  // be read again.
  struct Step {
    std::vector<std::string> args;
    bool applied = false;
  };
  const std::vector<Step> foreign = {
      {{"-A", "INPUT", "-s", "10.0.0.2", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"}, true},
      {{"-I", "INPUT", "1", "-s", "10.0.0.3", "-j", "DROP"}, true},
      {{"-I", "INPUT", "2", "-m", "comment", "--comment", "in the middle", "-j", "RETURN"}, true},
      {{"-D", "INPUT", "3"}, true},
      {{"-R", "INPUT", "2", "-s", "10.0.0.5", "-j", "DROP"}, true},
      {{"-R", "INPUT", "1", "-s", "10.0.0.4", "-j", "DROP"}},
      {{"-N", "web"}},
      {{"-A", "web", "-p", "tcp", "--dport", "80", "-j", "ACCEPT"}, true},
      {{"-A", "INPUT", "-j", "web"}, true},
      {{"-t", "nat", "-A", "POSTROUTING", "-o", "eth0", "-j", "MASQUERADE"}},
      {{"-P", "FORWARD", "DROP"}},
      {{"-F", "web"}, true},
      {{"-D", "INPUT", "-j", "web"}, true},
      {{"-X", "web"}},
  };
  for (const Step& step : foreign) {
    std::string where;
    for (const std::string& a : step.args) where += a + " ";
    ASSERT_EQ(Iptables(step.args), "") << where;
    const uint64_t table_reads = backend_->stats().event_table_reads;
    const uint64_t applied = backend_->stats().event_applied;
    ExpectCacheIsCurrent(Family::kIPv4, "after iptables " + where);
    if (step.applied) {
      EXPECT_GT(backend_->stats().event_applied, applied) << where;
      EXPECT_EQ(backend_->stats().event_table_reads, table_reads) << where;
    } else {
      EXPECT_GT(backend_->stats().event_table_reads, table_reads) << where;
    }
  }
  // Only tables were read again, never the whole family; no notification was lost.
  EXPECT_EQ(backend_->stats().event_resyncs, 0u);

  // A write to the other family is no reason to read IPv4 again.
  const uint64_t table_reads = backend_->stats().event_table_reads;
  ASSERT_EQ(Iptables({"-A", "INPUT", "-s", "2001:db8::1", "-j", "ACCEPT"}, Family::kIPv6), "");
  ExpectCacheIsCurrent(Family::kIPv4, "after an ip6tables write");
  EXPECT_EQ(backend_->stats().event_table_reads, table_reads);
  ExpectCacheIsCurrent(Family::kIPv6, "IPv6");
}

TEST_F(EventCacheTest, OwnCommitsAreNoNewsAndForeignOnesAfterThemAre) {
  ExpectCacheIsCurrent(Family::kIPv4, "first read");
  Result<Rule> parsed = ParseRuleSpec("-s 10.1.0.1/32 -j ACCEPT", Family::kIPv4);
  ASSERT_TRUE(parsed.ok());
  Result<std::vector<Rule>> canonical = backend_->Canonicalize(Family::kIPv4, "filter", {*parsed});
  ASSERT_TRUE(canonical.ok()) << canonical.status().ToString();
  const Rule* rule = &canonical->front();
  for (int i = 0; i < 3; ++i) {
    CommitTable t;
    t.batch.family = Family::kIPv4;
    t.batch.table = "filter";
    t.batch.ops = {Op(K::kAppend, 0, *rule)};
    ASSERT_TRUE(backend_->Read(Family::kIPv4, std::nullopt, false).ok());
    Result<CommitReport> done = backend_->Commit({t});
    ASSERT_TRUE(done.ok()) << done.status().ToString();
  }
  ExpectCacheIsCurrent(Family::kIPv4, "after own commits");
  EXPECT_EQ(backend_->stats().event_table_reads, 0u);
  EXPECT_TRUE(backend_->Unchanged(Family::kIPv4));

  ASSERT_EQ(Iptables({"-I", "INPUT", "2", "-s", "10.1.0.2", "-j", "DROP"}), "");
  EXPECT_FALSE(backend_->Unchanged(Family::kIPv4));  // re-read: what the caller kept is stale
  ExpectCacheIsCurrent(Family::kIPv4, "after a foreign insert between own rules");
  EXPECT_EQ(backend_->stats().event_applied, 1u);

  // Planned on the event-fed snapshot: a delete by position lands on the rule now at that position.
  CommitTable del;
  del.batch.family = Family::kIPv4;
  del.batch.table = "filter";
  del.batch.ops = {Op(K::kDeleteAt, 2, Rule{})};
  ASSERT_TRUE(backend_->ReadForPlan(Family::kIPv4, SnapshotDetail::kPositions).ok());
  Result<CommitReport> done = backend_->Commit({del});
  ASSERT_TRUE(done.ok()) << done.status().ToString();
  EXPECT_NE(Iptables({"-C", "INPUT", "-s", "10.1.0.2", "-j", "DROP"}), "");  // gone
  EXPECT_EQ(Iptables({"-C", "INPUT", "-s", "10.1.0.1", "-j", "ACCEPT"}), "");
  ExpectCacheIsCurrent(Family::kIPv4, "after deleting the foreign rule by position");
}

// A foreign commit between the snapshot and an own commit (an append, an insert at the head or after a rule, a
// delete by spec: anchored, so the kernel takes it): the snapshot is kept with the own commit in it, and the foreign
// change is applied from its notification, also when its rule lands next to a rule the own commit added (which of
// them the kernel put first follows from where each went). Either way the snapshot equals a fresh read afterwards.
TEST_F(EventCacheTest, KeepsTheSnapshotWhenAForeignCommitCameBeforeAnOwnOne) {
  ASSERT_EQ(Iptables({"-A", "INPUT", "-s", "10.4.0.1", "-j", "ACCEPT"}), "");
  ExpectCacheIsCurrent(Family::kIPv4, "first read");
  Result<Rule> parsed = ParseRuleSpec("-s 10.4.0.9/32 -j ACCEPT", Family::kIPv4);
  ASSERT_TRUE(parsed.ok());
  Result<std::vector<Rule>> canonical = backend_->Canonicalize(Family::kIPv4, "filter", {*parsed});
  ASSERT_TRUE(canonical.ok()) << canonical.status().ToString();
  CommitTable append;
  append.batch.family = Family::kIPv4;
  append.batch.table = "filter";
  append.batch.ops = {Op(K::kAppend, 0, canonical->front())};
  CommitTable remove = append;  // a batch that starts with a delete: the delete asks for the echo
  remove.batch.ops = {Op(K::kDelete, 0, canonical->front())};
  CommitTable head = append;  // an insert at the head
  head.batch.ops = {Op(K::kInsert, 1, canonical->front())};
  CommitTable second = append;  // an insert right after the first rule
  second.batch.ops = {Op(K::kInsert, 2, canonical->front())};
  second.batch.ops[0].anchored = true;
  struct Step {
    std::vector<std::string> foreign;
    const CommitTable* own;
    bool applied;  // else the table is read again
  };
  const std::vector<Step> steps = {
      {{"-I", "INPUT", "1", "-s", "10.4.0.2", "-j", "DROP"}, &append, true},  // at the head, far from the append
      {{"-I", "INPUT", "2", "-s", "10.4.0.3", "-j", "DROP"}, &append, true},  // in the middle
      {{"-D", "INPUT", "-s", "10.4.0.2", "-j", "DROP"}, &append, true},       // a delete
      // Next to rules the own commit added: the kernel put them before or after the foreign rule as their places
      // say. An append is after it; an insert at the head is before one at the head; an insert right after the rule
      // the foreign rule went after is before it.
      {{"-A", "INPUT", "-s", "10.4.0.4", "-j", "DROP"}, &append, true},
      {{"-I", "INPUT", "1", "-s", "10.4.0.5", "-j", "DROP"}, &remove, true},  // an own delete
      {{"-A", "INPUT", "-s", "10.4.0.6", "-j", "DROP"}, &remove, true},
      {{"-I", "INPUT", "1", "-s", "10.4.0.7", "-j", "DROP"}, &head, true},
      {{"-I", "INPUT", "2", "-s", "10.4.0.8", "-j", "DROP"}, &second, true},
  };
  for (const Step& step : steps) {
    std::string where;
    for (const std::string& a : step.foreign) where += a + " ";
    ASSERT_TRUE(backend_->Read(Family::kIPv4, std::nullopt, false).ok());
    ASSERT_EQ(Iptables(step.foreign), "") << where;
    const uint64_t kept = backend_->stats().event_kept_commits;
    Result<CommitReport> done = backend_->Commit({*step.own});
    ASSERT_TRUE(done.ok()) << where << done.status().ToString();
    EXPECT_EQ(backend_->stats().event_kept_commits, kept + 1) << where;
    EXPECT_TRUE(backend_->has_cached_snapshot(Family::kIPv4)) << where;
    const uint64_t applied = backend_->stats().event_applied;
    const uint64_t reads = backend_->stats().event_table_reads;
    const uint64_t dumps = backend_->stats().dumps;
    ExpectCacheIsCurrent(Family::kIPv4, "after iptables " + where + "and an own append");
    if (step.applied) {
      EXPECT_EQ(backend_->stats().event_applied, applied + 1) << where;
      EXPECT_EQ(backend_->stats().dumps, dumps) << where;
    } else {
      EXPECT_EQ(backend_->stats().event_table_reads, reads + 1) << where;
    }
  }
  EXPECT_EQ(backend_->stats().event_resyncs, 0u);
}

// A rule a plan moves (deleted and added again in one batch sent with counters) goes back with the kernel's
// counters, not with the older ones of the event-fed snapshot (read before the packets were counted): the daemon's
// drift repair moved owned hooks back with counters of the last read of their table, which looked like resets.
TEST_F(EventCacheTest, AMovedRuleKeepsTheKernelsCountersNotTheSnapshots) {
  ASSERT_EQ(ns_->Exec({"/usr/sbin/ip", "link", "set", "lo", "up"}), "");
  ASSERT_EQ(Iptables({"-A", "INPUT", "-s", "10.5.0.1", "-j", "ACCEPT"}), "");
  Result<Rule> parsed = ParseRuleSpec("-i lo -p udp -m udp --dport 7001 -j ACCEPT", Family::kIPv4);
  ASSERT_TRUE(parsed.ok());
  Result<std::vector<Rule>> canonical = backend_->Canonicalize(Family::kIPv4, "filter", {*parsed});
  ASSERT_TRUE(canonical.ok()) << canonical.status().ToString();
  const Rule& hook = canonical->front();
  CommitTable add;
  add.batch.family = Family::kIPv4;
  add.batch.table = "filter";
  add.batch.ops = {Op(K::kAppend, 0, hook)};
  ASSERT_TRUE(backend_->Read(Family::kIPv4, std::nullopt, false).ok());
  ASSERT_TRUE(backend_->Commit({add}).ok());
  Result<Ruleset> snapshot = backend_->Read(Family::kIPv4, std::nullopt, false);
  ASSERT_TRUE(snapshot.ok());

  // 20 datagrams through the hook, from a thread inside the namespace.
  std::thread sender([&] {
    base::UniqueFd ns(::open(("/run/netns/" + ns_->name()).c_str(), O_RDONLY | O_CLOEXEC));
    if (!ns.valid() || ::setns(ns.get(), CLONE_NEWNET) != 0) return;
    base::UniqueFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(7001);
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int i = 0; i < 20; ++i) ::sendto(s.get(), "x", 1, 0, reinterpret_cast<const sockaddr*>(&to), sizeof(to));
  });
  sender.join();

  // The move: above the foreign rule, with the snapshot's counters (none), as the declarative planner sends it.
  const Chain* input = snapshot->FindTable("filter")->FindChain("INPUT");
  ASSERT_EQ(input->rules.size(), 2u);
  CommitTable move = add;
  move.batch.with_counters = true;
  move.batch.ops = {Op(K::kDelete, 0, input->rules[1]), Op(K::kInsert, 1, input->rules[1])};
  move.batch.ops[1].rule.counters = input->rules[1].counters;
  Result<CommitReport> done = backend_->Commit({move});
  ASSERT_TRUE(done.ok()) << done.status().ToString();

  Result<Ruleset> now = fresh_->Read(Family::kIPv4);
  ASSERT_TRUE(now.ok());
  const Chain* after = now->FindTable("filter")->FindChain("INPUT");
  ASSERT_EQ(after->rules.size(), 2u);
  EXPECT_EQ(after->rules[0], hook);
  EXPECT_GE(after->rules[0].counters.packets, 20u) << FormatSave(*now, {.counters = true});
}

// Several rule changes in one foreign transaction (iptables-nft-restore --noflush): rules placed after rules the
// same transaction adds, appends and inserts at the head of a chain, deletes of rules next to them, in two chains.
// Applied from the notifications in commit order, the snapshot equals a fresh read; a table is read again only
// where a notification leaves a rule's place open.
TEST_F(EventCacheTest, AppliesATransactionOfRuleChangesFromItsNotifications) {
  ASSERT_EQ(Iptables({"-N", "app"}), "");
  for (int i = 1; i <= 5; ++i) {
    ASSERT_EQ(Iptables({"-A", "INPUT", "-s", "10.2.0." + std::to_string(i), "-j", "ACCEPT"}), "");
    ASSERT_EQ(Iptables({"-A", "app", "-s", "10.3.0." + std::to_string(i), "-j", "RETURN"}), "");
  }
  ExpectCacheIsCurrent(Family::kIPv4, "first read");
  const uint64_t table_reads = backend_->stats().event_table_reads;
  // (text, applied from the notifications)
  const std::vector<std::pair<std::string, bool>> transactions = {
      {"*filter\n-I INPUT 1 -s 10.9.0.1 -j DROP\n-I INPUT 3 -s 10.9.0.2 -j DROP\n-A INPUT -s 10.9.0.3 -j DROP\n"
       "-D app -s 10.3.0.2 -j RETURN\n-I app 2 -p tcp --dport 80 -j ACCEPT\n-I app 1 -m comment --comment \"head of "
       "app\" -j RETURN\nCOMMIT\n",
       true},
      // Each placed before the one before it: the notification of 10.9.0.4 names 10.9.0.5 as its predecessor.
      {"*filter\n-D INPUT -s 10.9.0.1 -j DROP\n-I INPUT 1 -s 10.9.0.4 -j DROP\n-I INPUT 1 -s 10.9.0.5 -j DROP\n"
       "-I INPUT 1 -s 10.9.0.6 -j DROP\n-D app 1\n-D app 1\n-I app 1 -s 10.9.0.7 -j ACCEPT\nCOMMIT\n",
       true},
      {"*filter\n-A app -s 10.9.0.8 -j DROP\n-I app 1 -s 10.9.0.9 -j DROP\n-A INPUT -s 10.9.0.10 -j DROP\nCOMMIT\n",
       true},
      // A deletion and an append in one chain: the append's notification (first or last) leaves its place open.
      {"*filter\n-D INPUT -s 10.9.0.3 -j DROP\n-A INPUT -s 10.9.0.11 -j DROP\nCOMMIT\n", false},
  };
  for (const auto& [text, applies] : transactions) {
    ASSERT_EQ(ns_->Exec({"/usr/sbin/iptables-nft-restore", "--noflush"}, text), "") << text;
    const uint64_t applied = backend_->stats().event_applied;
    const uint64_t reads = backend_->stats().event_table_reads;
    ExpectCacheIsCurrent(Family::kIPv4, text);
    if (applies) {
      EXPECT_EQ(backend_->stats().event_applied, applied + 1) << text;
      EXPECT_EQ(backend_->stats().event_table_reads, reads) << text;
    } else {
      EXPECT_EQ(backend_->stats().event_table_reads, reads + 1) << text;
    }
  }
  EXPECT_EQ(backend_->stats().event_table_reads, table_reads + 1);
  EXPECT_EQ(backend_->stats().event_resyncs, 0u);
}

// Another writer's steady trickle between two uses of the cache (what a daemon sees next to a script calling
// iptables in a loop): 2,000 one-rule transactions, each a rule notification and a NEWGEN. With the kernel's default
// receive queue (about 208 KiB) a few hundred of them overflowed it and the whole family was read again; the feed's
// default queue (EventFeed::kDefaultReceiveQueue) holds them, and each is applied from its notification. So is a
// transaction of 100 deletions, which at most 64 rule messages per transaction made a reason to read the table.
TEST_F(EventCacheTest, ADefaultQueueHoldsThousandsOfForeignOneRuleTransactions) {
  int queue = 0;
  socklen_t len = sizeof(queue);
  ASSERT_EQ(getsockopt(backend_->event_feed()->fd(), SOL_SOCKET, SO_RCVBUF, &queue, &len), 0);
  EXPECT_GE(queue, EventFeed::kDefaultReceiveQueue);  // the kernel reports twice what was set (socket(7))
  Result<Rule> parsed = ParseRuleSpec("-s 10.9.0.1/32 -p tcp -m tcp --dport 443 -j ACCEPT", Family::kIPv4);
  ASSERT_TRUE(parsed.ok());
  Result<std::vector<Rule>> canonical = fresh_->Canonicalize(Family::kIPv4, "filter", {*parsed});
  ASSERT_TRUE(canonical.ok()) << canonical.status().ToString();
  auto append = [&]() -> Status {
    CommitTable t;
    t.batch.family = Family::kIPv4;
    t.batch.table = "filter";
    t.batch.ops = {Op(K::kAppend, 0, canonical->front())};
    return fresh_->Commit({t}).status();
  };
  ASSERT_TRUE(append().ok());  // the writer's first commit also creates the table and its builtin chains
  ExpectCacheIsCurrent(Family::kIPv4, "first read");
  const EventCacheStats before = Stats();
  constexpr int kTransactions = 2000;
  for (int i = 0; i < kTransactions; ++i) {
    Status done = append();
    ASSERT_TRUE(done.ok()) << i << ": " << done.ToString();
  }
  ExpectCacheIsCurrent(Family::kIPv4, "after the trickle");
  EXPECT_EQ(backend_->event_feed()->overflows(), 0u);
  EXPECT_EQ(backend_->stats().event_resyncs, before.resyncs);
  EXPECT_EQ(backend_->stats().event_table_reads, before.table_reads);
  EXPECT_EQ(backend_->stats().event_applied, before.applied + kTransactions);

  // One foreign transaction deleting 100 of them (a program removing its rules at once) is applied too.
  std::string text = "*filter\n";
  for (int i = 0; i < 100; ++i) text += "-D INPUT 1\n";
  ASSERT_EQ(ns_->Exec({"/usr/sbin/iptables-nft-restore", "--noflush"}, text + "COMMIT\n"), "");
  ExpectCacheIsCurrent(Family::kIPv4, "after 100 deletions in one transaction");
  EXPECT_EQ(backend_->stats().event_table_reads, before.table_reads);
  EXPECT_EQ(backend_->stats().event_applied, before.applied + kTransactions + 1);
}

// The issue's "event-cache resync after a foreign burst of 20,000 changes against a small receive buffer".
TEST_F(EventCacheTest, ResyncsAfterAForeignBurstOf20000ChangesAgainstASmallReceiveBuffer) {
  backend_.reset();
  Open(/*rcvbuf=*/4096);
  ASSERT_EQ(Iptables({"-A", "INPUT", "-s", "10.0.0.1", "-j", "ACCEPT"}), "");
  ExpectCacheIsCurrent(Family::kIPv4, "first read");
  EXPECT_EQ(backend_->stats().event_resyncs, 0u);

  // One foreign transaction of 20,000 rule additions: 20,000 notifications, far more than 4 KiB hold.
  std::string text = "*filter\n:burst - [0:0]\n";
  for (int i = 0; i < 20000; ++i) {
    text += "-A burst -s 10." + std::to_string(i / 250 % 250) + "." + std::to_string(i % 250) +
            ".1/32 -p tcp -m tcp --dport " + std::to_string(1 + i % 60000) + " -j ACCEPT\n";
  }
  text += "-A INPUT -j burst\nCOMMIT\n";
  ASSERT_EQ(ns_->Exec({"/usr/sbin/iptables-nft-restore", "--noflush"}, text), "");

  ExpectCacheIsCurrent(Family::kIPv4, "after the burst");
  EXPECT_GE(backend_->stats().event_resyncs, 1u) << "the lost notifications must have been noticed";
  EXPECT_GE(backend_->event_feed()->overflows(), 1u);

  // Followed normally afterwards.
  const uint64_t resyncs = backend_->stats().event_resyncs;
  ASSERT_EQ(Iptables({"-D", "burst", "1"}), "");
  ExpectCacheIsCurrent(Family::kIPv4, "after a foreign delete following the burst");
  EXPECT_EQ(backend_->stats().event_resyncs, resyncs);
}

// A plan's read through the event cache gets what its scope looks at, not a copy of every rule of the family: the
// rules of the chains it names, of a chain it deletes from by spec only the rules equal to the spec (every one, in
// chain order, as the rule was typed: canonicalized first), and no rules of the other chains; nothing is read from
// the kernel for it. Regression: every such plan copied (and freed) the whole family's rules.
TEST_F(EventCacheTest, PlanReadsGetTheChainsTheyLookAtOnly) {
  for (const char* source : {"10.5.0.1", "10.5.0.2", "10.5.0.1", "10.5.0.3"}) {
    ASSERT_EQ(Iptables({"-A", "INPUT", "-s", source, "-p", "tcp", "--dport", "22", "-j", "ACCEPT"}), "");
  }
  ASSERT_EQ(Iptables({"-A", "FORWARD", "-s", "10.6.0.1", "-j", "DROP"}), "");
  ASSERT_EQ(Iptables({"-A", "OUTPUT", "-d", "10.7.0.1", "-j", "DROP"}), "");
  ExpectCacheIsCurrent(Family::kIPv4, "warm");
  const uint64_t dumps = backend_->stats().dumps;
  Result<Rule> probe = ParseRuleSpec("-p tcp -s 10.5.0.1 --dport 22 -j ACCEPT", Family::kIPv4);
  ASSERT_TRUE(probe.ok()) << probe.status().ToString();
  ChainScope scope;
  scope.every_chain = false;
  scope.named_only = true;
  scope.tables = {"filter"};
  scope.probes[{"filter", "INPUT"}] = {*probe};
  scope.chains.emplace("filter", "FORWARD");
  Result<Ruleset> planned = backend_->ReadChainsForPlan(Family::kIPv4, SnapshotDetail::kRules, scope);
  ASSERT_TRUE(planned.ok()) << planned.status().ToString();
  EXPECT_EQ(backend_->stats().dumps, dumps);
  const Table* filter = planned->FindTable("filter");
  ASSERT_NE(filter, nullptr);
  ASSERT_NE(filter->FindChain("INPUT"), nullptr);
  std::vector<std::string> input;
  for (const Rule& r : filter->FindChain("INPUT")->rules) input.push_back(FormatRuleSpec(r));
  const std::string equal = "-s 10.5.0.1/32 -p tcp -m tcp --dport 22 -j ACCEPT";
  EXPECT_EQ(input, (std::vector<std::string>{equal, equal}));
  ASSERT_NE(filter->FindChain("FORWARD"), nullptr);
  ASSERT_EQ(filter->FindChain("FORWARD")->rules.size(), 1u);
  EXPECT_EQ(FormatRuleSpec(filter->FindChain("FORWARD")->rules[0]), "-s 10.6.0.1/32 -j DROP");
  ASSERT_NE(filter->FindChain("OUTPUT"), nullptr);
  EXPECT_TRUE(filter->FindChain("OUTPUT")->rules.empty());

  // The delete planned on it removes the first equal rule, by its handle.
  ASSERT_FALSE(input.empty());
  TableBatch del{Family::kIPv4, "filter", {TableOp::Make(TableOp::Kind::kDelete, "INPUT", *probe)}};
  Result<std::vector<Rule>> canon = backend_->Canonicalize(Family::kIPv4, "filter", {*probe});
  ASSERT_TRUE(canon.ok()) << canon.status().ToString();
  del.ops[0].rule = canon->front();
  Status deleted = backend_->Commit(del);
  ASSERT_TRUE(deleted.ok()) << deleted.ToString();
  const std::string saved = ns_->Output({"/usr/sbin/iptables-nft-save", "-t", "filter"});
  EXPECT_NE(saved.find("-A INPUT -s 10.5.0.2/32 -p tcp -m tcp --dport 22 -j ACCEPT\n"
                       "-A INPUT -s 10.5.0.1/32 -p tcp -m tcp --dport 22 -j ACCEPT\n"
                       "-A INPUT -s 10.5.0.3/32"),
            std::string::npos)
      << saved;
  EXPECT_EQ(saved.find("-A INPUT -s 10.5.0.1/32 -p tcp -m tcp --dport 22 -j ACCEPT\n-A INPUT -s 10.5.0.2/32"),
            std::string::npos)
      << saved;
}

}  // namespace
}  // namespace iptkit::backend::native
