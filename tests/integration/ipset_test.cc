// Ipsets (include/iptkit/ipset.h) against the real kernel, each case in its own network namespace: every operation
// and set type, timeouts that expire, a --match-set rule dropping real packets, bulk loads of 100,000 entries,
// rejected loads that change nothing, sync through a temporary set and swap.
#include "iptkit/ipset.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <functional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "src/base/netns.h"
#include "src/base/unique_fd.h"
#include "tests/integration/netns_fixture.h"
#include "tests/integration/test_util.h"

namespace iptkit::integration {
namespace {

// The elements of a set, sorted (what "unchanged" compares).
std::vector<std::string> Elems(const Ipsets& sets, const std::string& name) {
  auto info = sets.Get(name);
  if (!info.ok()) return {"<" + info.status().ToString() + ">"};
  std::vector<std::string> out;
  for (const SetEntry& e : info->entries) out.push_back(e.elem);
  std::sort(out.begin(), out.end());
  return out;
}

// 10.<a>.<b>.<c> for i = 0, 1, ...: up to 16M distinct addresses.
std::string Address(uint32_t i) {
  return "10." + std::to_string((i >> 16) & 0xff) + "." + std::to_string((i >> 8) & 0xff) + "." +
         std::to_string(i & 0xff);
}

std::vector<SetEntrySpec> Entries(uint32_t n, uint32_t first = 0) {
  std::vector<SetEntrySpec> out;
  out.reserve(n);
  for (uint32_t i = 0; i < n; ++i) out.push_back({Address(first + i), std::nullopt, std::nullopt, int(i + 1)});
  return out;
}

class IpsetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    IPTKIT_REQUIRE_ROOT();
    auto ns = TestNetns::Create();
    ASSERT_TRUE(ns.ok()) << ns.status().ToString();
    ns_ = std::move(*ns);
    sets_ = std::make_unique<Ipsets>(ns_->name());
  }
  std::unique_ptr<TestNetns> ns_;
  std::unique_ptr<Ipsets> sets_;
};

TEST_F(IpsetTest, CreatesEveryTypeWithItsEntries) {
  struct Case {
    std::string type;
    SetOptions options;
    std::string elem;
  };
  const std::vector<Case> cases = {
      {"hash:ip", {.timeout = 0, .counters = true, .comment = true}, "192.0.2.1"},
      {"hash:ip", {.family = "inet6", .netmask = 64}, "2001:db8::"},
      {"hash:net", {.hashsize = 4096, .maxelem = 1000, .skbinfo = true}, "10.1.0.0/16"},
      {"hash:ip,port", {}, "192.0.2.1,tcp:80"},
      {"hash:net,port", {.family = "inet6"}, "2001:db8::/32,udp:53"},
      {"hash:ip,port,ip", {}, "192.0.2.1,tcp:80,192.0.2.2"},
      {"hash:ip,port,net", {}, "192.0.2.1,tcp:80,10.0.0.0/8"},
      {"hash:net,iface", {}, "10.0.0.0/8,eth0"},
      {"bitmap:ip", {.netmask = 24, .range = "10.0.0.0/16"}, "10.0.3.0"},
      {"bitmap:ip,mac", {.timeout = 60, .range = "10.0.0.0/24"}, "10.0.0.5,00:11:22:33:44:55"},
      {"bitmap:port", {.counters = true, .range = "1-1024"}, "22"},
  };
  int n = 0;
  for (const Case& c : cases) {
    std::string name = "s" + std::to_string(n++);
    SCOPED_TRACE(name + " " + c.type);
    ASSERT_STATUS_OK(sets_->Create(name, c.type, c.options));
    ASSERT_STATUS_OK(sets_->Add(name, c.elem));
    ASSERT_OK_AND_ASSIGN(bool in, sets_->Test(name, c.elem));
    EXPECT_TRUE(in);
    ASSERT_OK_AND_ASSIGN(SetInfo info, sets_->Get(name));
    EXPECT_EQ(info.type, c.type);
    EXPECT_EQ(info.entry_count, 1u);
    EXPECT_GT(info.memory_bytes, 0u);
    ASSERT_EQ(info.entries.size(), 1u);
    EXPECT_EQ(info.entries[0].elem, c.elem);
    EXPECT_EQ(info.options.counters, c.options.counters);
    EXPECT_EQ(info.options.comment, c.options.comment);
    EXPECT_EQ(info.options.skbinfo, c.options.skbinfo);
    EXPECT_EQ(info.options.timeout, c.options.timeout);
    if (!c.options.family.empty()) {
      EXPECT_EQ(info.options.family, c.options.family);
    }
    if (c.options.maxelem) {
      EXPECT_EQ(info.options.maxelem, c.options.maxelem);
    }
    if (c.options.netmask) {
      EXPECT_EQ(info.options.netmask, c.options.netmask);
    }
  }
  // list:set holds sets.
  ASSERT_STATUS_OK(sets_->Create("all", "list:set", {.size = 4}));
  ASSERT_STATUS_OK(sets_->Add("all", "s0"));
  ASSERT_OK_AND_ASSIGN(SetInfo s0, sets_->Get("s0", false));
  EXPECT_EQ(s0.references, 1u);
  EXPECT_CODE(sets_->Destroy("s0"), StatusCode::kFailedPrecondition);
  ASSERT_OK_AND_ASSIGN(auto all, sets_->List("", false));
  EXPECT_EQ(all.size(), cases.size() + 1);
}

TEST_F(IpsetTest, BadInputNamesWhatIsWrongAndChangesNothing) {
  Status s = sets_->Create("x", "hash:foo");
  EXPECT_CODE(s, StatusCode::kInvalidArgument);
  EXPECT_EQ(s.details().field, "type");
  s = sets_->Create("x", "bitmap:port", {.maxelem = 5, .range = "1-10"});
  EXPECT_EQ(s.details().field, "maxelem");
  s = sets_->Create(std::string(32, 'n'), "hash:ip");
  EXPECT_CODE(s, StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("longer than 31"), std::string::npos) << s.ToString();
  ASSERT_OK_AND_ASSIGN(auto none, sets_->List());
  EXPECT_TRUE(none.empty());

  ASSERT_STATUS_OK(sets_->Create("v4", "hash:ip"));
  EXPECT_CODE(sets_->Create("v4", "hash:ip"), StatusCode::kAlreadyExists);
  s = sets_->Add("v4", "2001:db8::1");
  EXPECT_CODE(s, StatusCode::kInvalidArgument);
  EXPECT_EQ(s.details().token, "2001:db8::1");
  s = sets_->Add("v4", "192.0.2.1", {.timeout = 5});
  EXPECT_CODE(s, StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("timeout"), std::string::npos) << s.ToString();
  EXPECT_CODE(sets_->Add("v4", "192.0.2.1", {.timeout = 2147484}), StatusCode::kInvalidArgument);
  EXPECT_CODE(sets_->Add("missing", "192.0.2.1"), StatusCode::kNotFound);
  EXPECT_CODE(sets_->Delete("v4", "192.0.2.1"), StatusCode::kNotFound);
  EXPECT_CODE(sets_->Get("missing").status(), StatusCode::kNotFound);
  EXPECT_TRUE(Elems(*sets_, "v4").empty());
}

TEST_F(IpsetTest, AddIsIdempotentAndRefreshesUnlessNoRefresh) {
  ASSERT_STATUS_OK(sets_->Create("bl", "hash:ip", {.timeout = 0, .counters = true, .comment = true}));
  ASSERT_STATUS_OK(sets_->Add("bl", "192.0.2.1", {.timeout = 100, .comment = "first"}));
  ASSERT_STATUS_OK(sets_->Add("bl", "192.0.2.1", {.timeout = 1000, .comment = "second"}));
  ASSERT_OK_AND_ASSIGN(SetInfo info, sets_->Get("bl"));
  ASSERT_EQ(info.entries.size(), 1u);
  EXPECT_GT(info.entries[0].timeout.value_or(0), 900u);
  EXPECT_EQ(info.entries[0].comment, "second");
  Status s = sets_->Add("bl", "192.0.2.1", {.no_refresh = true});
  EXPECT_CODE(s, StatusCode::kAlreadyExists);
  ASSERT_STATUS_OK(sets_->Delete("bl", "192.0.2.1"));
  ASSERT_OK_AND_ASSIGN(bool in, sets_->Test("bl", "192.0.2.1"));
  EXPECT_FALSE(in);
}

TEST_F(IpsetTest, TimeoutsReallyExpire) {
  ASSERT_STATUS_OK(sets_->Create("t", "hash:ip", {.timeout = 0}));
  ASSERT_STATUS_OK(sets_->Add("t", "192.0.2.1", {.timeout = 1}));
  ASSERT_STATUS_OK(sets_->Add("t", "192.0.2.2"));  // timeout 0: stays
  ASSERT_OK_AND_ASSIGN(bool in, sets_->Test("t", "192.0.2.1"));
  EXPECT_TRUE(in);
  bool gone = false;
  for (int i = 0; i < 50 && !gone; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    auto t = sets_->Test("t", "192.0.2.1");
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    gone = !*t;
  }
  EXPECT_TRUE(gone) << "the entry with timeout 1 was still there after 10 s";
  EXPECT_EQ(Elems(*sets_, "t"), std::vector<std::string>{"192.0.2.2"});
}

TEST_F(IpsetTest, FlushRenameSwapDestroy) {
  ASSERT_STATUS_OK(sets_->Create("a", "hash:ip"));
  ASSERT_STATUS_OK(sets_->Create("b", "hash:ip", {.timeout = 0}));
  ASSERT_STATUS_OK(sets_->Add("a", "192.0.2.1"));
  ASSERT_STATUS_OK(sets_->Add("b", "192.0.2.2", {.timeout = 500}));
  ASSERT_STATUS_OK(sets_->Swap("a", "b"));
  EXPECT_EQ(Elems(*sets_, "a"), std::vector<std::string>{"192.0.2.2"});
  ASSERT_OK_AND_ASSIGN(SetInfo a, sets_->Get("a"));
  EXPECT_EQ(a.options.timeout, 0u) << "the timeout support moved with the content";
  ASSERT_STATUS_OK(sets_->Rename("a", "c"));
  EXPECT_CODE(sets_->Get("a").status(), StatusCode::kNotFound);
  EXPECT_CODE(sets_->Rename("c", "b"), StatusCode::kAlreadyExists);
  ASSERT_STATUS_OK(sets_->Flush("c"));
  EXPECT_TRUE(Elems(*sets_, "c").empty());
  ASSERT_STATUS_OK(sets_->Create("v6", "hash:ip", {.family = "inet6"}));
  EXPECT_CODE(sets_->Swap("c", "v6"), StatusCode::kInvalidArgument);
  ASSERT_STATUS_OK(sets_->Destroy("c"));
  EXPECT_CODE(sets_->Destroy("c"), StatusCode::kNotFound);
}

TEST_F(IpsetTest, ReferencedSetIsNotDestroyedNorRenamed) {
  IPTKIT_REQUIRE_VARIANT(*ns_, Variant::kNft, Family::kIPv4);
  ASSERT_STATUS_OK(sets_->Create("bl", "hash:ip"));
  auto r = ns_->Iptables(Variant::kNft, Family::kIPv4,
                         {"-A", "INPUT", "-m", "set", "--match-set", "bl", "src", "-j", "DROP"});
  ASSERT_TRUE(r.ok()) << r.Describe();
  Status s = sets_->Destroy("bl");
  EXPECT_CODE(s, StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.details().reason, "referenced");
  EXPECT_CODE(sets_->Rename("bl", "other"), StatusCode::kFailedPrecondition);
  // Right after the last referencing rule is gone, destroy works (the kernel frees the reference later).
  r = ns_->Iptables(Variant::kNft, Family::kIPv4, {"-F", "INPUT"});
  ASSERT_TRUE(r.ok()) << r.Describe();
  ASSERT_STATUS_OK(sets_->Destroy("bl"));
}

// Sends one UDP datagram from `from` to b:port and says whether `to` received it within 1 s.
bool Delivered(const TestNetns& from, const TestNetns& to, const std::string& b_ip, uint16_t port) {
  int rx = -1, tx = -1;
  Status s = RunInNetns(to.path(), [&] {
    rx = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    timeval tv{1, 0};
    ::setsockopt(rx, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return ::bind(rx, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 ? Status::Ok() : Status::Internal("bind");
  });
  if (s.ok())
    s = RunInNetns(from.path(), [&] {
      tx = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      return tx >= 0 ? Status::Ok() : Status::Internal("socket");
    });
  base::UniqueFd rx_fd(rx), tx_fd(tx);
  if (!s.ok()) return false;
  sockaddr_in dst{};
  dst.sin_family = AF_INET;
  dst.sin_port = htons(port);
  inet_pton(AF_INET, b_ip.c_str(), &dst.sin_addr);
  const char msg[] = "ping";
  ::sendto(tx, msg, sizeof(msg), 0, reinterpret_cast<sockaddr*>(&dst), sizeof(dst));
  char buf[16];
  return ::recv(rx, buf, sizeof(buf), 0) > 0;
}

TEST_F(IpsetTest, MatchSetRuleDropsRealPacketsFromAnEntryAddedAfterwards) {
  IPTKIT_REQUIRE_VARIANT(*ns_, Variant::kNft, Family::kIPv4);
  ASSERT_OK_AND_ASSIGN(auto peer, TestNetns::Create());
  ASSERT_OK_AND_ASSIGN(VethLink link, ConnectVeth(*peer, *ns_));
  ASSERT_STATUS_OK(sets_->Create("blocklist", "hash:ip", {.timeout = 0}));
  auto r = ns_->Iptables(Variant::kNft, Family::kIPv4,
                         {"-A", "INPUT", "-m", "set", "--match-set", "blocklist", "src", "-j", "DROP"});
  ASSERT_TRUE(r.ok()) << r.Describe();
  EXPECT_TRUE(Delivered(*peer, *ns_, link.b_ipv4, 4001)) << "before the entry";
  ASSERT_STATUS_OK(sets_->Add("blocklist", link.a_ipv4, {.timeout = 600}));
  EXPECT_FALSE(Delivered(*peer, *ns_, link.b_ipv4, 4002)) << "with the entry";
  ASSERT_STATUS_OK(sets_->Delete("blocklist", link.a_ipv4));
  EXPECT_TRUE(Delivered(*peer, *ns_, link.b_ipv4, 4003)) << "after the delete";
}

TEST_F(IpsetTest, BulkLoadOf100000EntriesIntoASetSizedForIt) {
  ASSERT_STATUS_OK(sets_->Create("big", "hash:ip", {.maxelem = 131072}));
  ASSERT_STATUS_OK(sets_->Add("big", "192.0.2.1"));
  std::vector<SetProgress> seen;
  ASSERT_OK_AND_ASSIGN(
      SetChangeReport report,
      sets_->Load("big", Entries(100000), {.progress = [&](const SetProgress& p) { seen.push_back(p); }}));
  EXPECT_EQ(report.added, 100000u);
  EXPECT_EQ(report.entries_after, 100001u);
  EXPECT_TRUE(report.swapped);
  ASSERT_OK_AND_ASSIGN(SetInfo info, sets_->Get("big", false));
  EXPECT_EQ(info.entry_count, 100001u);
  EXPECT_EQ(info.options.maxelem, 131072u);
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.back().stage, SetProgress::Stage::kDone);
  EXPECT_GT(std::count_if(seen.begin(), seen.end(),
                          [](const SetProgress& p) { return p.stage == SetProgress::Stage::kLoading; }),
            5);
  // No temporary set is left.
  ASSERT_OK_AND_ASSIGN(auto all, sets_->List("", false));
  EXPECT_EQ(all.size(), 1u);
}

TEST_F(IpsetTest, BulkLoadIntoADefaultSetIsRefusedAndChangesNothing) {
  ASSERT_STATUS_OK(sets_->Create("small", "hash:ip"));
  ASSERT_STATUS_OK(sets_->Add("small", "192.0.2.1"));
  auto report = sets_->Load("small", Entries(100000));
  EXPECT_CODE(report.status(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(report.status().details().reason, "set_full");
  EXPECT_NE(report.status().message().find("65536"), std::string::npos) << report.status().ToString();
  EXPECT_EQ(Elems(*sets_, "small"), std::vector<std::string>{"192.0.2.1"});

  // --grow: a larger set is built and swapped in.
  ASSERT_OK_AND_ASSIGN(SetChangeReport grown, sets_->Load("small", Entries(100000), {.grow = true}));
  EXPECT_EQ(grown.grown_maxelem, 131072u);
  ASSERT_OK_AND_ASSIGN(SetInfo info, sets_->Get("small", false));
  EXPECT_EQ(info.entry_count, 100001u);
  EXPECT_GE(info.options.maxelem.value_or(0), 100001u);
}

TEST_F(IpsetTest, BadLineAtEntry99999LeavesTheSetUnchanged) {
  ASSERT_STATUS_OK(sets_->Create("bl", "hash:ip", {.maxelem = 200000, .timeout = 0, .comment = true}));
  ASSERT_STATUS_OK(sets_->Add("bl", "192.0.2.1", {.timeout = 900, .comment = "keep"}));
  std::vector<SetEntrySpec> entries = Entries(100000);
  entries[99998].elem = "10.1.2.300";  // entry 99,999
  auto report = sets_->Load("bl", entries);
  EXPECT_CODE(report.status(), StatusCode::kInvalidArgument);
  EXPECT_EQ(report.status().details().line, 99999) << report.status().ToString();
  EXPECT_EQ(report.status().details().token, "10.1.2.300");
  EXPECT_NE(report.status().message().find("line 99999"), std::string::npos) << report.status().ToString();
  ASSERT_OK_AND_ASSIGN(SetInfo info, sets_->Get("bl"));
  ASSERT_EQ(info.entries.size(), 1u);
  EXPECT_EQ(info.entries[0].comment, "keep");
  EXPECT_GT(info.entries[0].timeout.value_or(0), 800u);
  ASSERT_OK_AND_ASSIGN(auto all, sets_->List("", false));
  EXPECT_EQ(all.size(), 1u) << "the temporary set is gone";
}

TEST_F(IpsetTest, LoadKeepsCurrentEntriesWithTheirTimeoutsCommentsAndCounters) {
  ASSERT_STATUS_OK(sets_->Create("bl", "hash:ip", {.timeout = 0, .counters = true, .comment = true}));
  ASSERT_STATUS_OK(sets_->Add("bl", "192.0.2.1", {.timeout = 900, .comment = "old"}));
  ASSERT_STATUS_OK(sets_->Add("bl", "192.0.2.2", {.comment = "refreshed"}));
  ASSERT_OK_AND_ASSIGN(auto entries, ParseSetEntries("192.0.2.2 comment new\n192.0.2.3 timeout 50\n"));
  ASSERT_OK_AND_ASSIGN(SetChangeReport report, sets_->Load("bl", entries));
  EXPECT_EQ(report.added, 1u);
  EXPECT_EQ(report.refreshed, 1u);
  ASSERT_OK_AND_ASSIGN(SetInfo info, sets_->Get("bl"));
  ASSERT_EQ(info.entries.size(), 3u);
  for (const SetEntry& e : info.entries) {
    if (e.elem == "192.0.2.1") {
      EXPECT_EQ(e.comment, "old");
      EXPECT_GT(e.timeout.value_or(0), 800u);
    } else if (e.elem == "192.0.2.2") {
      EXPECT_EQ(e.comment, "new");
    } else {
      EXPECT_LE(e.timeout.value_or(0), 50u);
      EXPECT_GT(e.timeout.value_or(0), 0u);
    }
    EXPECT_TRUE(e.packets.has_value());
  }
}

TEST_F(IpsetTest, SyncMakesTheSetExactlyTheEntriesThroughATemporarySet) {
  IPTKIT_REQUIRE_VARIANT(*ns_, Variant::kNft, Family::kIPv4);
  ASSERT_STATUS_OK(
      sets_->Create("bl", "hash:ip", {.hashsize = 2048, .maxelem = 1000, .timeout = 300, .comment = true}));
  ASSERT_STATUS_OK(sets_->Add("bl", "192.0.2.1"));
  ASSERT_STATUS_OK(sets_->Add("bl", "192.0.2.2"));
  // A leftover temporary set of an interrupted sync is cleaned up.
  ASSERT_STATUS_OK(sets_->Create("iptkit-tmp-deadbeef", "hash:ip"));
  auto r = ns_->Iptables(Variant::kNft, Family::kIPv4,
                         {"-A", "INPUT", "-m", "set", "--match-set", "bl", "src", "-j", "DROP"});
  ASSERT_TRUE(r.ok()) << r.Describe();
  ASSERT_OK_AND_ASSIGN(auto entries, ParseSetEntries("192.0.2.2\n192.0.2.3 timeout 0 comment c\n"));
  ASSERT_OK_AND_ASSIGN(SetChangeReport dry, sets_->Sync("bl", entries, {.dry_run = true}));
  EXPECT_FALSE(dry.swapped);
  EXPECT_EQ(dry.added, 1u);
  EXPECT_EQ(dry.removed, 1u);
  EXPECT_EQ(Elems(*sets_, "bl"), (std::vector<std::string>{"192.0.2.1", "192.0.2.2"})) << "a dry run changes nothing";
  ASSERT_OK_AND_ASSIGN(SetChangeReport report, sets_->Sync("bl", entries));
  EXPECT_TRUE(report.swapped);
  EXPECT_EQ(report.added, 1u);
  EXPECT_EQ(report.removed, 1u);
  EXPECT_EQ(Elems(*sets_, "bl"), (std::vector<std::string>{"192.0.2.2", "192.0.2.3"}));
  ASSERT_OK_AND_ASSIGN(SetInfo info, sets_->Get("bl", false));
  // Every create option was copied: the swapped-in set still takes timeouts and comments.
  EXPECT_EQ(info.options.timeout, 300u);
  EXPECT_TRUE(info.options.comment);
  EXPECT_EQ(info.options.maxelem, 1000u);
  EXPECT_EQ(info.options.hashsize, 2048u);
  EXPECT_EQ(info.references, 1u) << "the rule still references the set";
  ASSERT_STATUS_OK(sets_->Add("bl", "192.0.2.9", {.timeout = 30, .comment = "after swap"}));
  ASSERT_OK_AND_ASSIGN(auto all, sets_->List("", false));
  EXPECT_EQ(all.size(), 1u) << "the temporary sets are gone";

  // A bad entry: named, nothing changed.
  ASSERT_OK_AND_ASSIGN(auto bad, ParseSetEntries("192.0.2.4\nnot-an-address\n"));
  auto failed = sets_->Sync("bl", bad);
  EXPECT_CODE(failed.status(), StatusCode::kInvalidArgument);
  EXPECT_EQ(failed.status().details().line, 2);
  EXPECT_EQ(Elems(*sets_, "bl"), (std::vector<std::string>{"192.0.2.2", "192.0.2.3", "192.0.2.9"}));
}

TEST_F(IpsetTest, MinimalDiffSyncKeepsCountersOfKeptEntries) {
  ASSERT_STATUS_OK(sets_->Create("n", "hash:net", {.counters = true, .comment = true}));
  ASSERT_STATUS_OK(sets_->Add("n", "10.0.0.0/24"));
  ASSERT_STATUS_OK(sets_->Add("n", "10.0.1.0/24"));
  // Packets counted on 10.0.0.0/24 survive: set them through a re-add with counters (the kernel keeps them).
  auto r = ns_->Exec({"/usr/sbin/ipset", "add", "-exist", "n", "10.0.0.0/24", "packets", "7", "bytes", "700"});
  ASSERT_TRUE(r.ok()) << r.Describe();
  ASSERT_OK_AND_ASSIGN(auto entries, ParseSetEntries("10.0.0.9/24\n10.0.2.0/24 comment new\n"));
  ASSERT_OK_AND_ASSIGN(SetChangeReport report, sets_->Sync("n", entries, {.minimal_diff = true}));
  EXPECT_FALSE(report.swapped);
  EXPECT_EQ(report.added, 1u);
  EXPECT_EQ(report.removed, 1u);
  ASSERT_OK_AND_ASSIGN(SetInfo info, sets_->Get("n"));
  ASSERT_EQ(info.entries.size(), 2u);
  for (const SetEntry& e : info.entries) {
    if (e.elem == "10.0.0.0/24") {
      EXPECT_EQ(e.packets, 7u);
    } else {
      EXPECT_EQ(e.elem, "10.0.2.0/24");
      EXPECT_EQ(e.comment, "new");
    }
  }
  // dry run: nothing changes.
  ASSERT_OK_AND_ASSIGN(auto other, ParseSetEntries("10.9.0.0/16\n"));
  ASSERT_OK_AND_ASSIGN(SetChangeReport dry, sets_->Sync("n", other, {.minimal_diff = true, .dry_run = true}));
  EXPECT_EQ(dry.added, 1u);
  EXPECT_EQ(dry.removed, 2u);
  EXPECT_EQ(Elems(*sets_, "n"), (std::vector<std::string>{"10.0.0.0/24", "10.0.2.0/24"}));
}

TEST_F(IpsetTest, Ipv6SetsAndLoadDryRun) {
  ASSERT_STATUS_OK(sets_->Create("v6", "hash:net", {.family = "inet6"}));
  ASSERT_OK_AND_ASSIGN(auto entries, ParseSetEntries("2001:db8::/32\n2001:db8:1::/48\n"));
  ASSERT_OK_AND_ASSIGN(SetChangeReport dry, sets_->Load("v6", entries, {.dry_run = true}));
  EXPECT_EQ(dry.added, 2u);
  EXPECT_TRUE(Elems(*sets_, "v6").empty());
  ASSERT_OK_AND_ASSIGN(SetChangeReport done, sets_->Load("v6", entries));
  EXPECT_EQ(done.added, 2u);
  ASSERT_OK_AND_ASSIGN(bool in, sets_->Test("v6", "2001:db8:1::5"));
  EXPECT_TRUE(in);
}

// Regression: libipset is not thread-safe; 64 concurrent adds through iptkitd stored the wrong elements or failed
// with "Null-valued element" for valid addresses. Many threads adding through one Ipsets must store every entry.
TEST_F(IpsetTest, ConcurrentAddsFromManyThreadsStoreEveryEntry) {
  ASSERT_TRUE(sets_->Create("c", "hash:ip", {.timeout = 0}).ok());
  constexpr uint32_t kThreads = 32, kPerThread = 100;
  std::vector<std::thread> threads;
  std::vector<std::string> errors(kThreads);
  for (uint32_t t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (uint32_t i = 0; i < kPerThread; ++i) {
        Status s = sets_->Add("c", Address(t * kPerThread + i), {.timeout = 600});
        if (!s.ok() && errors[t].empty()) errors[t] = s.ToString();
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (const std::string& e : errors) EXPECT_EQ(e, "");
  std::vector<std::string> want;
  for (uint32_t i = 0; i < kThreads * kPerThread; ++i) want.push_back(Address(i));
  std::sort(want.begin(), want.end());
  EXPECT_EQ(Elems(*sets_, "c"), want);
}

// Batched adds tell libipset each set's type once per batch (Session::CacheSetType) instead of one kernel query per
// line; the type is forgotten after the batch. A set that another process re-creates with another type between two
// batches gets entries of its new type, each add answered OK.
TEST_F(IpsetTest, BatchedAddsFollowASetReCreatedWithAnotherTypeByAnotherProcess) {
  ASSERT_TRUE(sets_->Create("r", "hash:ip").ok());
  auto add_many = [&](const std::function<std::string(uint32_t)>& elem) {
    std::vector<std::thread> threads;
    std::vector<std::string> errors(16);
    for (uint32_t t = 0; t < 16; ++t) {
      threads.emplace_back([&, t] {
        for (uint32_t i = 0; i < 20; ++i) {
          Status s = sets_->Add("r", elem(t * 20 + i));
          if (!s.ok() && errors[t].empty()) errors[t] = s.ToString();
        }
      });
    }
    for (std::thread& t : threads) t.join();
    for (const std::string& e : errors) EXPECT_EQ(e, "");
  };
  add_many([](uint32_t i) { return Address(i); });
  // Within the add worker's idle time (its session stays open) and with no other libipset session in between (closing
  // one empties libipset's cache), by the ipset tool: libipset in this process is not told.
  CommandResult destroyed = ns_->Exec({"/usr/sbin/ipset", "destroy", "r"});
  ASSERT_TRUE(destroyed.ok()) << destroyed.Describe();
  CommandResult created = ns_->Exec({"/usr/sbin/ipset", "create", "r", "hash:ip,port"});
  ASSERT_TRUE(created.ok()) << created.Describe();
  add_many([](uint32_t i) { return Address(i) + ",tcp:" + std::to_string(1000 + i); });
  std::vector<std::string> elems = Elems(*sets_, "r");
  ASSERT_EQ(elems.size(), 320u);
  EXPECT_NE(std::find(elems.begin(), elems.end(), "10.0.0.7,tcp:1007"), elems.end());
}

size_t ThreadsOfThisProcess() {
  size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/task")) ++n;
  return n;
}

// Ipsets("") from a thread inside the namespace: after a pause an add runs on the calling thread (no worker thread
// is started: a one-add process such as `iptkit set add` pays for none); adds close together go through the worker
// and its long-lived session; each gets its own answer either way.
TEST_F(IpsetTest, AddsInTheCallersOwnNamespaceRunOnItsThreadAfterAPause) {
  ASSERT_TRUE(sets_->Create("own", "hash:ip", {.timeout = 0}).ok());
  ASSERT_TRUE(sets_->Create("nt", "hash:ip").ok());
  auto fd = base::OpenNetns(ns_->name());
  ASSERT_TRUE(fd.ok()) << fd.status().ToString();
  std::this_thread::sleep_for(std::chrono::milliseconds(700));  // other cases' add workers are gone
  std::vector<std::string> errors;
  size_t before = 0, after_one = 0;
  std::thread inside([&] {
    if (::setns(fd->get(), CLONE_NEWNET) != 0) {
      errors.push_back("setns failed");
      return;
    }
    Ipsets own("");
    before = ThreadsOfThisProcess();
    Status one = own.Add("own", "10.8.0.1", {.timeout = 600});
    after_one = ThreadsOfThisProcess();
    if (!one.ok()) errors.push_back(one.ToString());
    // Right after: the worker thread takes these (and stays for its idle time).
    Status again = own.Add("own", "10.8.0.1", {.no_refresh = true});
    if (again.code() != StatusCode::kAlreadyExists) errors.push_back("no_refresh: " + again.ToString());
    std::this_thread::sleep_for(std::chrono::milliseconds(700));
    Status bad = own.Add("nt", "10.8.0.2", {.timeout = 5});  // no timeout support: libipset refuses it
    if (bad.code() != StatusCode::kInvalidArgument) errors.push_back("bad entry: " + bad.ToString());
    std::this_thread::sleep_for(std::chrono::milliseconds(700));
    std::vector<std::thread> many;
    std::vector<std::string> many_errors(8);
    for (uint32_t t = 0; t < 8; ++t) {
      many.emplace_back([&, t] {
        if (::setns(fd->get(), CLONE_NEWNET) != 0) {
          many_errors[t] = "setns failed";
          return;
        }
        for (uint32_t i = 0; i < 25; ++i) {
          Status s = own.Add("own", Address(1000 + t * 25 + i));
          if (!s.ok() && many_errors[t].empty()) many_errors[t] = s.ToString();
        }
      });
    }
    for (std::thread& t : many) t.join();
    for (const std::string& e : many_errors) {
      if (!e.empty()) errors.push_back(e);
    }
  });
  inside.join();
  EXPECT_EQ(errors, std::vector<std::string>{});
  EXPECT_LE(after_one, before) << "a thread was started for one add after a pause";
  std::vector<std::string> want = {"10.8.0.1"};
  for (uint32_t i = 0; i < 200; ++i) want.push_back(Address(1000 + i));
  std::sort(want.begin(), want.end());
  EXPECT_EQ(Elems(*sets_, "own"), want);
}

// AddEach: independent adds in one hand-off, to several sets, each with its own result in order (a bad name, an
// entry the set refuses, an existing entry with no_refresh) while the others are stored.
TEST_F(IpsetTest, AddEachGivesEveryAddItsOwnResult) {
  ASSERT_TRUE(sets_->Create("a", "hash:ip", {.timeout = 0}).ok());
  ASSERT_TRUE(sets_->Create("b", "hash:net").ok());
  ASSERT_TRUE(sets_->Add("a", "10.0.0.9").ok());
  std::vector<Status> r = sets_->AddEach({{"a", "10.0.0.1", {.timeout = 60}},
                                          {"b", "10.1.0.0/16"},
                                          {"a", "not-an-address"},
                                          {"bad name!", "10.0.0.2"},
                                          {"a", "10.0.0.9", {.no_refresh = true}},
                                          {"b", "10.2.0.0/16"}});
  ASSERT_EQ(r.size(), 6u);
  EXPECT_TRUE(r[0].ok()) << r[0].ToString();
  EXPECT_TRUE(r[1].ok()) << r[1].ToString();
  EXPECT_EQ(r[2].code(), StatusCode::kInvalidArgument) << r[2].ToString();
  EXPECT_EQ(r[3].code(), StatusCode::kInvalidArgument) << r[3].ToString();
  EXPECT_EQ(r[4].code(), StatusCode::kAlreadyExists) << r[4].ToString();
  EXPECT_TRUE(r[5].ok()) << r[5].ToString();
  EXPECT_EQ(Elems(*sets_, "a"), (std::vector<std::string>{"10.0.0.1", "10.0.0.9"}));
  EXPECT_EQ(Elems(*sets_, "b"), (std::vector<std::string>{"10.1.0.0/16", "10.2.0.0/16"}));
}

// AddEach runs its adds to one set as one stream (one multi-entry netlink message): refused adds in the middle of
// it, some by the kernel (a comment for a set without comment support, a timeout for one without timeouts) and some
// by libipset's parser (an IPv6 address for an IPv4 set), each fail alone with an error naming their own entry, and
// every other add before and after them is stored, with its timeout; adds without refresh in the same batch get
// their own answer (an existing entry: AlreadyExists; a new one: stored).
TEST_F(IpsetTest, AddEachRefusedAddsInOneStreamFailAloneAndTheRestIsStored) {
  ASSERT_STATUS_OK(sets_->Create("s", "hash:ip", {.timeout = 0}));
  ASSERT_STATUS_OK(sets_->Add("s", "10.200.0.1"));
  std::vector<Ipsets::AddRequest> adds;
  std::vector<StatusCode> want_code;
  std::vector<std::string> want_elems = {"10.200.0.1"};
  for (uint32_t i = 0; i < 300; ++i) {
    const std::string elem = Address(i);
    if (i % 50 == 17) {
      adds.push_back({"s", elem, {.timeout = 60, .comment = "refused"}});
      want_code.push_back(StatusCode::kInvalidArgument);
    } else if (i % 50 == 31) {
      adds.push_back({"s", "2001:db8::" + std::to_string(i), {.timeout = 60}});
      want_code.push_back(StatusCode::kInvalidArgument);
    } else if (i == 120) {
      adds.push_back({"s", "10.200.0.1", {.no_refresh = true}});
      want_code.push_back(StatusCode::kAlreadyExists);
    } else if (i == 121) {
      adds.push_back({"s", elem, {.timeout = 60, .no_refresh = true}});
      want_code.push_back(StatusCode::kOk);
      want_elems.push_back(elem);
    } else {
      adds.push_back({"s", elem, {.timeout = 60}});
      want_code.push_back(StatusCode::kOk);
      want_elems.push_back(elem);
    }
  }
  adds.push_back({"s", "10.201.0.1", {.timeout = 60, .comment = "refused at the end"}});
  want_code.push_back(StatusCode::kInvalidArgument);
  std::vector<Status> r = sets_->AddEach(adds);
  ASSERT_EQ(r.size(), adds.size());
  for (size_t i = 0; i < adds.size(); ++i) {
    EXPECT_EQ(r[i].code(), want_code[i]) << i << " " << adds[i].elem << ": " << r[i].ToString();
    if (!r[i].ok()) {
      EXPECT_NE(r[i].message().find("'" + adds[i].elem + "'"), std::string::npos) << i << ": " << r[i].ToString();
      EXPECT_EQ(r[i].details().token, adds[i].elem) << i;
    }
  }
  std::sort(want_elems.begin(), want_elems.end());
  ASSERT_OK_AND_ASSIGN(SetInfo info, sets_->Get("s"));
  std::vector<std::string> have;
  for (const SetEntry& e : info.entries) {
    have.push_back(e.elem);
    if (e.elem != "10.200.0.1") {
      EXPECT_GT(e.timeout.value_or(0), 30u) << e.elem;
    }
  }
  std::sort(have.begin(), have.end());
  EXPECT_EQ(have, want_elems);
  // The set type of a set without timeouts: every add with a timeout is refused alone, the others stored.
  ASSERT_STATUS_OK(sets_->Create("plain", "hash:ip"));
  r = sets_->AddEach({{"plain", "10.3.0.1"}, {"plain", "10.3.0.2", {.timeout = 5}}, {"plain", "10.3.0.3"}});
  ASSERT_EQ(r.size(), 3u);
  EXPECT_TRUE(r[0].ok()) << r[0].ToString();
  EXPECT_CODE(r[1], StatusCode::kInvalidArgument);
  EXPECT_TRUE(r[2].ok()) << r[2].ToString();
  EXPECT_EQ(Elems(*sets_, "plain"), (std::vector<std::string>{"10.3.0.1", "10.3.0.3"}));
}

// Concurrent single adds share batches (one libipset session each); a bad add among them fails alone, with its own
// error, and every other add of its batch is stored; adds without refresh (no_refresh) keep their own answer.
TEST_F(IpsetTest, ConcurrentAddsWithBadOnesEachGetTheirOwnResult) {
  ASSERT_TRUE(sets_->Create("c", "hash:ip", {.timeout = 0}).ok());
  ASSERT_TRUE(sets_->Create("n", "hash:ip").ok());  // no timeout support
  ASSERT_TRUE(sets_->Add("c", "10.9.9.9").ok());
  constexpr uint32_t kThreads = 32, kPerThread = 50;
  std::vector<std::thread> threads;
  std::vector<std::vector<Status>> results(kThreads);
  for (uint32_t t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (uint32_t i = 0; i < kPerThread; ++i) {
        const uint32_t k = t * kPerThread + i;
        if (k % 97 == 5) {
          results[t].push_back(sets_->Add("n", Address(k), {.timeout = 5}));  // no timeout support: refused
        } else if (k % 101 == 7) {
          results[t].push_back(sets_->Add("c", "10.9.9.9", {.no_refresh = true}));  // exists: AlreadyExists
        } else {
          results[t].push_back(sets_->Add("c", Address(k), {.timeout = 600}));
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  std::vector<std::string> want = {"10.9.9.9"};
  for (uint32_t t = 0; t < kThreads; ++t) {
    for (uint32_t i = 0; i < kPerThread; ++i) {
      const uint32_t k = t * kPerThread + i;
      const Status& s = results[t][i];
      if (k % 97 == 5) {
        EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << k << ": " << s.ToString();
      } else if (k % 101 == 7) {
        EXPECT_EQ(s.code(), StatusCode::kAlreadyExists) << k << ": " << s.ToString();
      } else {
        EXPECT_TRUE(s.ok()) << k << ": " << s.ToString();
        want.push_back(Address(k));
      }
    }
  }
  std::sort(want.begin(), want.end());
  EXPECT_EQ(Elems(*sets_, "c"), want);
  EXPECT_EQ(Elems(*sets_, "n"), std::vector<std::string>{});
}

}  // namespace
}  // namespace iptkit::integration
