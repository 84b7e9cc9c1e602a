// Fleet mode end to end (docs/fleet.md): iptkitd --agent processes, each serving its own network namespace, follow
// a group in a real etcd; the kernel state is checked with iptables-save, the host reports in etcd.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "src/fleet/etcd_client.h"
#include "src/fleet/etcd_test_server.h"
#include "tests/daemon/daemon_fixture.h"
#include "tests/integration/test_util.h"

namespace iptkit::daemontest {
namespace {

using fleet::EtcdClient;
using fleet::EtcdTestServer;
using namespace std::chrono_literals;

constexpr char kPrefix[] = "/t";
constexpr char kGroup[] = "/t/groups/web/";

// The etcd key of `rel` in the test group.
std::string Key(const std::string& rel) { return kGroup + rel; }

// An owner document: one chain with `sources` accepted, hooked first into INPUT.
std::string OwnerDoc(const std::string& owner, const std::vector<std::string>& sources) {
  std::string upper;
  for (char c : owner) upper += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  Json rules = Json::array();
  for (const std::string& s : sources) rules.push_back({{"spec", "-s " + s + " -j ACCEPT"}});
  Json doc = {
      {"owner", owner},
      {"family", "ipv4"},
      {"chains", {{{"table", "filter"}, {"name", upper + "-IN"}, {"rules", rules}}}},
      {"hooks", {{{"table", "filter"}, {"chain", "INPUT"}, {"position", "first"}, {"spec", "-j " + upper + "-IN"}}}}};
  return doc.dump();
}

struct Host {
  std::unique_ptr<integration::TestNetns> ns;  // destroyed after the daemon
  std::unique_ptr<Daemon> daemon;
  std::string id;
  std::string Save() const { return SaveText(*ns); }
  bool Has(const std::string& text) const { return Save().find(text) != std::string::npos; }
};

class FleetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    IPTKIT_REQUIRE_ROOT();
    if (!EtcdTestServer::Available()) GTEST_SKIP() << "no /usr/bin/etcd (Debian package etcd-server)";
    etcd_ = std::make_unique<EtcdTestServer>();
    Status s = etcd_->Start();
    ASSERT_TRUE(s.ok()) << s.ToString();
    fleet::EtcdOptions o;
    o.endpoints = {etcd_->url()};
    auto c = EtcdClient::Create(o);
    ASSERT_TRUE(c.ok());
    etcd = std::move(c).value();
  }
  void TearDown() override {
    hosts.clear();  // the daemons before etcd
  }

  Host& StartAgent(const std::string& id, std::vector<std::string> extra = {}) {
    auto ns = integration::TestNetns::Create();
    EXPECT_TRUE(ns.ok()) << ns.status().ToString();
    DaemonOptions options;
    options.args = {"--agent",   "--etcd", etcd_->url(), "--prefix",   kPrefix,        "--group", "web",
                    "--host-id", id,       "--label",    "zone=" + id, "--report-ttl", "3s"};
    options.args.insert(options.args.end(), extra.begin(), extra.end());
    auto d = Daemon::Start(**ns, options);
    EXPECT_TRUE(d.ok()) << d.status().ToString();
    hosts.push_back(std::make_unique<Host>(Host{std::move(ns).value(), d.ok() ? std::move(d).value() : nullptr, id}));
    return *hosts.back();
  }

  // The host's report in etcd, or null.
  Json Report(const std::string& id) {
    auto r = etcd->Range(std::string(kPrefix) + "/hosts/" + id);
    if (!r.ok() || r->kvs.empty()) return Json();
    return Json::parse(r->kvs[0].value, nullptr, false);
  }
  std::string LastError(const std::string& id) {
    Json r = Report(id);
    return r.is_object() ? r.value("last_error", "") : "";
  }
  bool HasError(const std::string& id, const std::string& rel) {
    Json r = Report(id);
    return r.is_object() && r.contains("errors") && r["errors"].contains(Key(rel));
  }
  int64_t Put(const std::string& rel, const std::string& value) {
    auto r = etcd->Put(Key(rel), value);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.value_or(0);
  }
  // The state of the host's canary gate for the key ("" when the report shows none).
  std::string GateState(const std::string& id, const std::string& rel) {
    Json r = Report(id);
    if (!r.is_object() || !r.contains("canary_gates")) return "";
    return r["canary_gates"].value(Key(rel), Json::object()).value("state", "");
  }
  // The host reported the key applied at `revision`.
  bool Applied(const std::string& id, const std::string& rel, int64_t revision) {
    Json r = Report(id);
    return r.is_object() && r["applied"].value(Key(rel), int64_t{0}) == revision;
  }

  std::unique_ptr<EtcdTestServer> etcd_;
  std::unique_ptr<EtcdClient> etcd;
  std::vector<std::unique_ptr<Host>> hosts;
};

TEST_F(FleetTest, SeveralAgentsConvergeAndReportWhatTheyApplied) {
  Put(".group", "1");
  int64_t rev = Put("owners/app", OwnerDoc("app", {"10.0.0.1"}));
  for (const char* id : {"h1", "h2", "h3"}) ASSERT_NE(StartAgent(id).daemon, nullptr);
  for (auto& h : hosts) {
    EXPECT_TRUE(WaitUntil([&] { return h->Has("-A APP-IN -s 10.0.0.1/32"); }, 20s)) << h->id << "\n" << h->Save();
    EXPECT_TRUE(WaitUntil([&] { return Applied(h->id, "owners/app", rev); }, 10s)) << Report(h->id).dump();
  }
  // A change reaches every host; one etcd txn with two owners is applied on each.
  fleet::TxnRequest t;
  t.success.push_back(fleet::TxnOp::Put(Key("owners/app"), OwnerDoc("app", {"10.0.0.2"})));
  t.success.push_back(fleet::TxnOp::Put(Key("owners/db"), OwnerDoc("db", {"10.0.1.1"})));
  auto txn = etcd->Txn(t);
  ASSERT_TRUE(txn.ok());
  for (auto& h : hosts) {
    EXPECT_TRUE(WaitUntil([&] { return h->Has("-A APP-IN -s 10.0.0.2/32") && h->Has("-A DB-IN -s 10.0.1.1/32"); }, 20s))
        << h->id << "\n"
        << h->Save();
    EXPECT_FALSE(h->Has("10.0.0.1/32")) << h->Save();
    EXPECT_TRUE(WaitUntil([&] { return Applied(h->id, "owners/db", txn->revision); }, 10s));
    Json r = Report(h->id);
    EXPECT_EQ(r["group"], "web");
    EXPECT_EQ(r["labels"]["zone"], h->id);
    EXPECT_FALSE(r["backend"].get<std::string>().empty());
  }
  // The audit log names etcd as the principal, with the revision.
  HttpClient http = hosts[0]->daemon->Admin();
  Reply audit = http.Get("/v1/audit?principal=etcd:anonymous@" + std::to_string(txn->revision));
  ASSERT_EQ(audit.status, 200) << audit.Describe();
  ASSERT_EQ(audit.json["entries"].size(), 1u) << audit.body;  // one etcd txn, one iptkit transaction
  EXPECT_EQ(audit.json["entries"][0]["action"], "fleet_txn");
  // Deleting the key removes the owner's state.
  ASSERT_TRUE(etcd->Delete(Key("owners/db")).ok());
  for (auto& h : hosts) {
    EXPECT_TRUE(WaitUntil([&] { return !h->Has("DB-IN"); }, 20s)) << h->Save();
    EXPECT_TRUE(h->Has("-A APP-IN -s 10.0.0.2/32"));
  }
}

// The keys of one etcd transaction are one iptkit transaction: all applied in one commit (one audit record), or
// none of them (each reported).
TEST_F(FleetTest, AnEtcdTxnIsAppliedAsOneTransactionOrNotAtAll) {
  Put(".group", "1");
  int64_t first = Put("owners/app", OwnerDoc("app", {"10.0.0.1"}));
  Host& h = StartAgent("h1");
  ASSERT_NE(h.daemon, nullptr);
  ASSERT_TRUE(WaitUntil([&] { return Applied("h1", "owners/app", first); }, 20s)) << Report("h1").dump();
  // One good document and one the kernel would refuse (a port out of range), in one txn.
  fleet::TxnRequest bad;
  bad.success.push_back(fleet::TxnOp::Put(Key("owners/app"), OwnerDoc("app", {"10.0.0.2"})));
  bad.success.push_back(fleet::TxnOp::Put(
      Key("owners/db"),
      R"({"chains":[{"table":"filter","name":"DB-IN","rules":[{"spec":"-p tcp --dport 99999 -j ACCEPT"}]}]})"));
  auto bad_txn = etcd->Txn(bad);
  ASSERT_TRUE(bad_txn.ok());
  ASSERT_TRUE(WaitUntil([&] { return HasError("h1", "owners/app") && HasError("h1", "owners/db"); }, 20s))
      << Report("h1").dump();
  Json r = Report("h1");
  EXPECT_EQ(r["errors"][Key("owners/app")]["revision"], bad_txn->revision);
  EXPECT_EQ(r["errors"][Key("owners/db")]["revision"], bad_txn->revision);
  EXPECT_NE(r["errors"][Key("owners/app")]["error"].get<std::string>().find("owner 'db'"), std::string::npos)
      << r.dump();
  EXPECT_EQ(r["applied"][Key("owners/app")], first);
  EXPECT_FALSE(r["applied"].contains(Key("owners/db")));
  EXPECT_TRUE(h.Has("-A APP-IN -s 10.0.0.1/32")) << h.Save();  // the good half was not applied either
  EXPECT_FALSE(h.Has("10.0.0.2")) << h.Save();
  EXPECT_FALSE(h.Has("DB-IN")) << h.Save();
  // A good txn: both keys in one commit, one audit record.
  fleet::TxnRequest good;
  good.success.push_back(fleet::TxnOp::Put(Key("owners/app"), OwnerDoc("app", {"10.0.0.3"})));
  good.success.push_back(fleet::TxnOp::Put(Key("owners/db"), OwnerDoc("db", {"10.0.1.1"})));
  auto good_txn = etcd->Txn(good);
  ASSERT_TRUE(good_txn.ok());
  ASSERT_TRUE(WaitUntil(
      [&] { return Applied("h1", "owners/app", good_txn->revision) && Applied("h1", "owners/db", good_txn->revision); },
      20s))
      << Report("h1").dump();
  EXPECT_FALSE(HasError("h1", "owners/app"));
  EXPECT_FALSE(HasError("h1", "owners/db"));
  EXPECT_TRUE(h.Has("-A APP-IN -s 10.0.0.3/32") && h.Has("-A DB-IN -s 10.0.1.1/32")) << h.Save();
  HttpClient http = h.daemon->Admin();
  Reply audit = http.Get("/v1/audit?principal=etcd:anonymous@" + std::to_string(good_txn->revision));
  ASSERT_EQ(audit.status, 200) << audit.Describe();
  ASSERT_EQ(audit.json["entries"].size(), 1u) << audit.body;
  EXPECT_EQ(audit.json["entries"][0]["action"], "fleet_txn");
  // A txn that deletes one owner and changes another: one transaction too.
  fleet::TxnRequest mixed;
  mixed.success.push_back(fleet::TxnOp::Delete(Key("owners/db")));
  mixed.success.push_back(fleet::TxnOp::Put(Key("owners/app"), OwnerDoc("app", {"10.0.0.4"})));
  auto mixed_txn = etcd->Txn(mixed);
  ASSERT_TRUE(mixed_txn.ok());
  ASSERT_TRUE(WaitUntil([&] { return Applied("h1", "owners/app", mixed_txn->revision); }, 20s)) << Report("h1").dump();
  EXPECT_TRUE(WaitUntil([&] { return !h.Has("DB-IN"); }, 5s)) << h.Save();
  audit = http.Get("/v1/audit?principal=etcd:anonymous@" + std::to_string(mixed_txn->revision));
  ASSERT_EQ(audit.status, 200) << audit.Describe();
  EXPECT_EQ(audit.json["entries"].size(), 1u) << audit.body;
}

// An owner document whose chain drops the sources in `set`.
std::string SetUserDoc(const std::string& owner, const std::string& set) {
  std::string upper;
  for (char c : owner) upper += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  Json doc = {{"owner", owner},
              {"family", "ipv4"},
              {"chains",
               {{{"table", "filter"},
                 {"name", upper + "-IN"},
                 {"rules", {{{"spec", "-m set --match-set " + set + " src -j DROP"}}}}}}},
              {"hooks", {{{"table", "filter"}, {"chain", "INPUT"}, {"spec", "-j " + upper + "-IN"}}}}};
  return doc.dump();
}

// The set as the host's daemon lists it (GET /v1/sets/NAME), or null.
Json HostSet(Host& h, const std::string& name, bool entries = false) {
  HttpClient http = h.daemon->Admin();
  Reply r = http.Get("/v1/sets/" + name + (entries ? "?entries=true" : ""));
  return r.status == 200 ? r.json : Json();
}

// A set document and the owner that uses it, in one etcd transaction: the set is made first (temp + swap), then
// the rules; changing the document replaces the entries; deleting both removes the rules, then the set.
TEST_F(FleetTest, SetDocumentsAreAppliedBeforeTheRulesThatUseThem) {
  Put(".group", "1");
  Host& h = StartAgent("h1");
  ASSERT_NE(h.daemon, nullptr);
  ASSERT_TRUE(WaitUntil([&] { return Report("h1").is_object(); }, 20s));
  fleet::TxnRequest t;
  t.success.push_back(
      fleet::TxnOp::Put(Key("sets/blocklist"), R"({"type":"hash:ip","entries":["192.0.2.1",{"entry":"192.0.2.2"}]})"));
  t.success.push_back(fleet::TxnOp::Put(Key("owners/app"), SetUserDoc("app", "blocklist")));
  auto txn = etcd->Txn(t);
  ASSERT_TRUE(txn.ok());
  ASSERT_TRUE(WaitUntil(
      [&] { return Applied("h1", "sets/blocklist", txn->revision) && Applied("h1", "owners/app", txn->revision); },
      20s))
      << Report("h1").dump();
  EXPECT_TRUE(h.Has("-A APP-IN -m set --match-set blocklist src")) << h.Save();
  Json set = HostSet(h, "blocklist");
  ASSERT_TRUE(set.is_object());
  EXPECT_EQ(set["type"], "hash:ip");
  EXPECT_EQ(set["entry_count"], 2);
  // A txn whose rules fail: its set change is undone too (the set is put back as it was).
  fleet::TxnRequest failing;
  failing.success.push_back(
      fleet::TxnOp::Put(Key("sets/blocklist"), R"({"type":"hash:ip","entries":["203.0.113.5"]})"));
  failing.success.push_back(fleet::TxnOp::Put(
      Key("owners/app"),
      R"({"chains":[{"table":"filter","name":"APP-IN","rules":[{"spec":"-p tcp --dport 99999 -j ACCEPT"}]}]})"));
  auto failing_txn = etcd->Txn(failing);
  ASSERT_TRUE(failing_txn.ok());
  ASSERT_TRUE(WaitUntil([&] { return HasError("h1", "sets/blocklist") && HasError("h1", "owners/app"); }, 20s))
      << Report("h1").dump();
  // The set was changed first, then put back (the set service's audit records of that revision say so).
  HttpClient admin = h.daemon->Admin();
  Reply set_audit = admin.Get("/v1/audit?principal=etcd:anonymous@" + std::to_string(failing_txn->revision));
  ASSERT_EQ(set_audit.status, 200);
  bool undone = false;
  for (const Json& e : set_audit.json["entries"]) undone = undone || e.value("request_id", "") == "fleet-undo";
  EXPECT_TRUE(undone) << set_audit.body;
  Json kept = HostSet(h, "blocklist", true);
  ASSERT_EQ(kept["entries"].size(), 2u) << kept.dump();
  EXPECT_TRUE(kept["entries"][0]["entry"] == "192.0.2.1" || kept["entries"][1]["entry"] == "192.0.2.1") << kept.dump();
  EXPECT_TRUE(Applied("h1", "sets/blocklist", txn->revision));
  // A good one again (the app document back): applied.
  fleet::TxnRequest again;
  again.success.push_back(fleet::TxnOp::Put(Key("owners/app"), SetUserDoc("app", "blocklist")));
  again.success.push_back(
      fleet::TxnOp::Put(Key("sets/blocklist"), R"({"type":"hash:ip","entries":["192.0.2.1","192.0.2.2"]})"));
  auto again_txn = etcd->Txn(again);
  ASSERT_TRUE(again_txn.ok());
  ASSERT_TRUE(WaitUntil([&] { return Applied("h1", "owners/app", again_txn->revision); }, 20s)) << Report("h1").dump();
  // A new document: exactly its entries.
  int64_t rev = Put("sets/blocklist", R"({"type":"hash:ip","entries":["198.51.100.9"]})");
  ASSERT_TRUE(WaitUntil([&] { return Applied("h1", "sets/blocklist", rev); }, 20s)) << Report("h1").dump();
  set = HostSet(h, "blocklist", true);
  ASSERT_EQ(set["entries"].size(), 1u) << set.dump();
  EXPECT_EQ(set["entries"][0]["entry"], "198.51.100.9");
  // Other create options: built aside and swapped in; the rule that uses it stays.
  rev = Put("sets/blocklist", R"({"type":"hash:ip","options":{"timeout":600},"entries":["198.51.100.10"]})");
  ASSERT_TRUE(WaitUntil([&] { return Applied("h1", "sets/blocklist", rev); }, 20s)) << Report("h1").dump();
  set = HostSet(h, "blocklist", true);
  EXPECT_EQ(set["options"]["timeout"], 600) << set.dump();
  EXPECT_EQ(set["entry_count"], 1);
  EXPECT_TRUE(h.Has("--match-set blocklist src")) << h.Save();
  // A bad set document: reported, the set stays.
  int64_t bad = Put("sets/blocklist", R"({"type":"hash:ip","entries":["not-an-address"]})");
  ASSERT_TRUE(WaitUntil([&] { return HasError("h1", "sets/blocklist"); }, 20s)) << Report("h1").dump();
  EXPECT_EQ(Report("h1")["errors"][Key("sets/blocklist")]["revision"], bad);
  EXPECT_EQ(HostSet(h, "blocklist")["entry_count"], 1);
  // Both gone in one txn: the rules first, then the set.
  fleet::TxnRequest del;
  del.success.push_back(fleet::TxnOp::Delete(Key("sets/blocklist")));
  del.success.push_back(fleet::TxnOp::Delete(Key("owners/app")));
  ASSERT_TRUE(etcd->Txn(del).ok());
  EXPECT_TRUE(WaitUntil([&] { return !h.Has("APP-IN") && !HostSet(h, "blocklist").is_object(); }, 20s))
      << h.Save() << Report("h1").dump();
}

// A document that uses a set nobody made yet is reported and retried; the other owners go on meanwhile.
TEST_F(FleetTest, ADocumentUsingAMissingSetIsRetriedWithoutBlockingOthers) {
  Put(".group", "1");
  Host& h = StartAgent("h1");
  ASSERT_NE(h.daemon, nullptr);
  int64_t waiting = Put("owners/app", SetUserDoc("app", "late"));
  int64_t other = Put("owners/other", OwnerDoc("other", {"10.0.9.9"}));
  ASSERT_TRUE(WaitUntil([&] { return HasError("h1", "owners/app") && Applied("h1", "owners/other", other); }, 20s))
      << Report("h1").dump();
  Json r = Report("h1");
  EXPECT_EQ(r["errors"][Key("owners/app")]["revision"], waiting);
  EXPECT_NE(r["errors"][Key("owners/app")]["error"].get<std::string>().find("'late'"), std::string::npos) << r.dump();
  EXPECT_TRUE(h.Has("-A OTHER-IN -s 10.0.9.9/32")) << h.Save();
  int64_t made = Put("sets/late", R"({"type":"hash:net","entries":["203.0.113.0/24"]})");
  // The set's own key applies at once; the owner on its next retry (every 5 s).
  ASSERT_TRUE(WaitUntil([&] { return Applied("h1", "sets/late", made) && Applied("h1", "owners/app", waiting); }, 20s))
      << Report("h1").dump();
  EXPECT_TRUE(h.Has("-A APP-IN -m set --match-set late src")) << h.Save();
  EXPECT_FALSE(HasError("h1", "owners/app"));
}

// A set of 100,000 entries is larger than an etcd value: `iptkit fleet put` writes it as chunks and a manifest; the
// agent applies it once every chunk matches the manifest, in one temp + swap.
TEST_F(FleetTest, AHundredThousandEntrySetThroughChunks) {
  auto cli = [&](std::vector<std::string> args, std::string_view input = "") {
    args.insert(args.begin(), {IPTKIT_BIN, "fleet", "--etcd", etcd_->url(), "--prefix", kPrefix});
    return integration::RunCommand(args, "", input, 120s);
  };
  Put(".group", "1");
  Host& h = StartAgent("h1");
  ASSERT_NE(h.daemon, nullptr);
  std::string text;
  for (int i = 0; i < 100000; ++i) {
    text +=
        "10." + std::to_string(i >> 16) + "." + std::to_string((i >> 8) & 255) + "." + std::to_string(i & 255) + "\n";
  }
  auto put = cli({"put", "web", "sets/big", "--type", "hash:ip", "--set-options", R"({"maxelem":131072})", "-"}, text);
  ASSERT_TRUE(put.ok()) << put.Describe();
  auto chunks = etcd->Range(Key("sets/big/chunk/"), fleet::PrefixEnd(Key("sets/big/chunk/")));
  ASSERT_TRUE(chunks.ok());
  EXPECT_GE(chunks->kvs.size(), 2u);
  for (const fleet::KeyValue& kv : chunks->kvs) EXPECT_LE(kv.value.size(), 512u * 1024);
  auto waited = cli({"wait", "web", "--timeout", "90s", "--hosts", "1"});
  ASSERT_TRUE(waited.ok()) << waited.Describe();  // the manifest and every chunk applied
  Json set = HostSet(h, "big");
  ASSERT_TRUE(set.is_object());
  EXPECT_EQ(set["entry_count"], 100000);
  // A chunk that no longer matches the manifest (a writer in the middle of an update): not applied, reported; the
  // set stays as it was.
  std::string first = chunks->kvs[0].value;
  ASSERT_TRUE(first.starts_with("10.0.0.0\n"));
  int64_t stray = Put("sets/big/chunk/0", "10.9" + first.substr(4));  // same size, another first entry
  ASSERT_TRUE(WaitUntil([&] { return HasError("h1", "sets/big"); }, 20s)) << Report("h1").dump();
  EXPECT_NE(Report("h1")["errors"][Key("sets/big")]["error"].get<std::string>().find("sha256"), std::string::npos);
  EXPECT_FALSE(Applied("h1", "sets/big/chunk/0", stray));
  EXPECT_EQ(HostSet(h, "big")["entry_count"], 100000);
  // A smaller version replaces it (one document, the old chunks deleted with the manifest).
  auto small = cli({"put", "web", "sets/big", "--type", "hash:ip", "--set-options", R"({"maxelem":131072})", "-"},
                   "192.0.2.1\n192.0.2.2\n");
  ASSERT_TRUE(small.ok()) << small.Describe();
  ASSERT_TRUE(cli({"wait", "web", "--timeout", "60s"}).ok());
  EXPECT_EQ(HostSet(h, "big")["entry_count"], 2);
  auto left = etcd->Range(Key("sets/big/chunk/"), fleet::PrefixEnd(Key("sets/big/chunk/")));
  ASSERT_TRUE(left.ok());
  EXPECT_TRUE(left->kvs.empty());
}

// A document that names a canary label: hosts with the label apply it at once, the others after every canary
// reported it applied.
std::string CanaryDoc(const std::string& owner, const std::string& source, int timeout_s) {
  Json doc = Json::parse(OwnerDoc(owner, {source}));
  doc["canary"] = "ring=canary";
  doc["canary_timeout"] = timeout_s;
  return doc.dump();
}

// When the host's audit log recorded the etcd revision (its RFC 3339 time: ordered as text), or "".
std::string AuditTimeOf(Host& h, int64_t revision) {
  HttpClient http = h.daemon->Admin();
  Reply audit = http.Get("/v1/audit?principal=etcd:anonymous@" + std::to_string(revision));
  if (audit.status != 200 || audit.json["entries"].empty()) return "";
  return audit.json["entries"][0].value("time", "");
}

TEST_F(FleetTest, ACanaryRolloutReachesTheOthersAfterTheCanariesApplied) {
  Put(".group", "1");
  Host& canary = StartAgent("c1", {"--label", "ring=canary"});
  Host& other = StartAgent("n1");
  Host& other2 = StartAgent("n2");
  ASSERT_NE(canary.daemon, nullptr);
  ASSERT_NE(other.daemon, nullptr);
  ASSERT_NE(other2.daemon, nullptr);
  ASSERT_TRUE(WaitUntil([&] { return Report("c1").is_object() && Report("n1").is_object(); }, 20s));
  int64_t rev = Put("owners/app", CanaryDoc("app", "10.0.0.1", 60));
  for (const char* id : {"c1", "n1", "n2"}) {
    EXPECT_TRUE(WaitUntil([&] { return Applied(id, "owners/app", rev); }, 20s)) << id << Report(id).dump();
  }
  EXPECT_TRUE(other.Has("-A APP-IN -s 10.0.0.1/32")) << other.Save();
  // The others applied after the canary (their audit records are later than the canary's).
  const std::string at_canary = AuditTimeOf(canary, rev);
  ASSERT_FALSE(at_canary.empty());
  EXPECT_GE(AuditTimeOf(other, rev), at_canary);
  EXPECT_GE(AuditTimeOf(other2, rev), at_canary);
  EXPECT_FALSE(Report("n1").contains("canary_gates")) << Report("n1").dump();  // passed gates are not shown
}

// The canary cannot apply the document (here: the owner is outside its scope): the gate fails, the others never
// apply that revision, and the hosts' reports and `iptkit fleet status` say so.
TEST_F(FleetTest, AFailingCanaryStopsTheRollout) {
  Put(".group", "1");
  int64_t before = Put("owners/app", OwnerDoc("app", {"10.0.0.1"}));
  Host& canary = StartAgent("c1", {"--label", "ring=canary", "--agent-owners", "other"});
  Host& other = StartAgent("n1");
  ASSERT_NE(canary.daemon, nullptr);
  ASSERT_NE(other.daemon, nullptr);
  ASSERT_TRUE(WaitUntil([&] { return Applied("n1", "owners/app", before) && HasError("c1", "owners/app"); }, 20s))
      << Report("n1").dump() << Report("c1").dump();
  int64_t rev = Put("owners/app", CanaryDoc("app", "10.0.0.2", 60));
  ASSERT_TRUE(WaitUntil([&] { return GateState("n1", "owners/app") == "failed"; }, 20s)) << Report("n1").dump();
  Json r = Report("n1");
  EXPECT_EQ(r["errors"][Key("owners/app")]["revision"], rev);
  EXPECT_NE(r["errors"][Key("owners/app")]["error"].get<std::string>().find("canary c1"), std::string::npos)
      << r.dump();
  EXPECT_EQ(r["applied"][Key("owners/app")], before);
  std::this_thread::sleep_for(1s);
  EXPECT_TRUE(other.Has("-A APP-IN -s 10.0.0.1/32")) << other.Save();  // the previous state stays
  EXPECT_FALSE(other.Has("10.0.0.2")) << other.Save();
  auto status = integration::RunCommand(
      {IPTKIT_BIN, "fleet", "--etcd", etcd_->url(), "--prefix", kPrefix, "status", "web"}, "", "", 30s);
  ASSERT_TRUE(status.ok()) << status.Describe();
  Json st = Json::parse(status.out, nullptr, false);
  ASSERT_TRUE(st.is_object()) << status.out;
  bool seen = false;
  for (const Json& h : st["hosts"]) {
    if (h["host_id"] != "n1") continue;
    seen = true;
    EXPECT_EQ(h["state"], "failed") << h.dump();
    EXPECT_EQ(h["canary_gates"][Key("owners/app")]["state"], "failed") << h.dump();
  }
  EXPECT_TRUE(seen) << status.out;
  // A new revision opens a new gate: without a canary label it goes everywhere.
  int64_t fixed = Put("owners/app", OwnerDoc("app", {"10.0.0.3"}));
  EXPECT_TRUE(WaitUntil([&] { return Applied("n1", "owners/app", fixed); }, 20s)) << Report("n1").dump();
}

// The only canary dies (no revoke: its lease runs out): the gate times out and fails; nothing is applied.
TEST_F(FleetTest, ADeadCanaryTimesTheGateOut) {
  Put(".group", "1");
  Host& canary = StartAgent("c1", {"--label", "ring=canary"});
  Host& other = StartAgent("n1");
  ASSERT_NE(canary.daemon, nullptr);
  ASSERT_NE(other.daemon, nullptr);
  ASSERT_TRUE(WaitUntil([&] { return Report("c1").is_object() && Report("n1").is_object(); }, 20s));
  canary.daemon->Kill();
  int64_t rev = Put("owners/app", CanaryDoc("app", "10.0.0.1", 4));
  // Waiting while the gate is open (the canary's report is still there for up to 3 s, then gone).
  ASSERT_TRUE(WaitUntil([&] { return GateState("n1", "owners/app") == "failed"; }, 20s)) << Report("n1").dump();
  Json r = Report("n1");
  EXPECT_NE(r["canary_gates"][Key("owners/app")]["detail"].get<std::string>().find("timed out"), std::string::npos)
      << r.dump();
  EXPECT_EQ(r["errors"][Key("owners/app")]["revision"], rev);
  EXPECT_FALSE(other.Has("APP-IN")) << other.Save();
  auto waited = integration::RunCommand(
      {IPTKIT_BIN, "fleet", "--etcd", etcd_->url(), "--prefix", kPrefix, "wait", "web", "--timeout", "10s"}, "", "",
      30s);
  EXPECT_EQ(waited.exit_code, 1) << waited.Describe();
}

TEST_F(FleetTest, WithoutTheMarkerNothingIsApplied) {
  Put("owners/app", OwnerDoc("app", {"10.0.0.1"}));
  Host& h = StartAgent("h1");
  ASSERT_NE(h.daemon, nullptr);
  ASSERT_TRUE(WaitUntil([&] { return LastError("h1").find("marker") != std::string::npos; }, 15s))
      << Report("h1").dump();
  EXPECT_FALSE(h.Has("APP-IN")) << h.Save();
  int64_t rev = Put(".group", "1");
  (void)rev;
  EXPECT_TRUE(WaitUntil([&] { return h.Has("-A APP-IN -s 10.0.0.1/32"); }, 20s)) << h.Save();
  // A wiped prefix (the marker gone with everything) strips nothing.
  ASSERT_TRUE(etcd->Delete(kGroup, fleet::PrefixEnd(kGroup)).ok());
  ASSERT_TRUE(WaitUntil([&] { return LastError("h1").find("marker") != std::string::npos; }, 15s));
  EXPECT_TRUE(h.Has("-A APP-IN -s 10.0.0.1/32")) << h.Save();
}

TEST_F(FleetTest, ABadDocumentIsReportedAndThePreviousStateStays) {
  Put(".group", "1");
  int64_t good = Put("owners/app", OwnerDoc("app", {"10.0.0.1"}));
  Put("owners/other", OwnerDoc("other", {"10.0.9.9"}));
  Host& h = StartAgent("h1");
  ASSERT_NE(h.daemon, nullptr);
  ASSERT_TRUE(WaitUntil([&] { return Applied("h1", "owners/app", good); }, 20s)) << Report("h1").dump();
  int64_t bad = Put("owners/app", R"({"owner":"app","chains":[{"table":"filter","name":"APP-IN",)"
                                  R"("rules":[{"spec":"-p tcp --dport 99999 -j ACCEPT"}]}]})");
  int64_t broken = Put("owners/other", "{not json");
  ASSERT_TRUE(WaitUntil(
      [&] {
        Json r = Report("h1");
        return r.is_object() && r["errors"].contains(Key("owners/app")) && r["errors"].contains(Key("owners/other"));
      },
      20s))
      << Report("h1").dump();
  Json r = Report("h1");
  EXPECT_EQ(r["errors"][Key("owners/app")]["revision"], bad);
  EXPECT_EQ(r["errors"][Key("owners/other")]["revision"], broken);
  EXPECT_EQ(r["applied"][Key("owners/app")], good);  // not the bad revision
  EXPECT_TRUE(h.Has("-A APP-IN -s 10.0.0.1/32")) << h.Save();
  EXPECT_TRUE(h.Has("-A OTHER-IN -s 10.0.9.9/32")) << h.Save();
  // Fixed: applied, the error goes.
  int64_t fixed = Put("owners/app", OwnerDoc("app", {"10.0.0.3"}));
  EXPECT_TRUE(WaitUntil([&] { return Applied("h1", "owners/app", fixed); }, 20s)) << Report("h1").dump();
  EXPECT_TRUE(h.Has("-A APP-IN -s 10.0.0.3/32")) << h.Save();
  EXPECT_FALSE(HasError("h1", "owners/app"));
}

TEST_F(FleetTest, MassRemovalNeedsForce) {
  Put(".group", "1");
  int64_t last = 0;
  for (const char* o : {"a1", "a2", "a3"}) last = Put(std::string("owners/") + o, OwnerDoc(o, {"10.0.0.1"}));
  Host& h = StartAgent("h1", {"--max-removals", "2"});
  ASSERT_NE(h.daemon, nullptr);
  ASSERT_TRUE(WaitUntil([&] { return Applied("h1", "owners/a3", last); }, 20s)) << Report("h1").dump();
  ASSERT_TRUE(etcd->Delete(Key("owners/"), fleet::PrefixEnd(Key("owners/"))).ok());
  ASSERT_TRUE(WaitUntil([&] { return LastError("h1").find("refused") != std::string::npos; }, 15s))
      << Report("h1").dump();
  for (const char* c : {"A1-IN", "A2-IN", "A3-IN"}) EXPECT_TRUE(h.Has(c)) << h.Save();
  // With .force the removal goes through.
  Put(".force", "1");
  EXPECT_TRUE(WaitUntil([&] { return !h.Has("A1-IN") && !h.Has("A2-IN") && !h.Has("A3-IN"); }, 20s)) << h.Save();
}

TEST_F(FleetTest, TtlRulesFromEtcdKeepTheirAbsoluteDeadline) {
  Put(".group", "1");
  Host& h = StartAgent("h1");
  ASSERT_NE(h.daemon, nullptr);
  ASSERT_TRUE(WaitUntil([&] { return Report("h1").is_object(); }, 20s));
  const int64_t expires =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count() + 8;
  Json rule = {{"owner", "ops"}, {"chain", "INPUT"}, {"spec", "-s 192.0.2.7 -j DROP"}, {"expires_at", expires}};
  int64_t rev = Put("rules/block1", rule.dump());
  ASSERT_TRUE(WaitUntil([&] { return h.Has("-A INPUT -s 192.0.2.7/32"); }, 20s)) << h.Save();
  EXPECT_TRUE(WaitUntil([&] { return Applied("h1", "rules/block1", rev); }, 10s));
  // It expires at expires_at although the key is still there (a re-apply does not extend it).
  EXPECT_TRUE(WaitUntil([&] { return !h.Has("192.0.2.7"); }, 30s)) << h.Save();
  // Out of the agent's max TTL: refused and reported.
  Host& scoped = StartAgent("h2", {"--agent-max-ttl", "60"});
  ASSERT_NE(scoped.daemon, nullptr);
  rule["expires_at"] = expires + 3600;
  rule["spec"] = "-s 192.0.2.8 -j DROP";
  Put("rules/block2", rule.dump());
  EXPECT_TRUE(WaitUntil([&] { return HasError("h2", "rules/block2"); }, 20s)) << Report("h2").dump();
  EXPECT_FALSE(scoped.Has("192.0.2.8"));
  EXPECT_TRUE(WaitUntil([&] { return h.Has("192.0.2.8"); }, 20s)) << h.Save();
  ASSERT_TRUE(etcd->Delete(Key("rules/block2")).ok());
  EXPECT_TRUE(WaitUntil([&] { return !h.Has("192.0.2.8"); }, 20s)) << h.Save();
}

TEST_F(FleetTest, EtcdDownKeepsTheRulesAlsoAcrossARestartThenConverges) {
  Put(".group", "1");
  int64_t rev = Put("owners/app", OwnerDoc("app", {"10.0.0.1"}));
  Host& h = StartAgent("h1");
  ASSERT_NE(h.daemon, nullptr);
  ASSERT_TRUE(WaitUntil([&] { return Applied("h1", "owners/app", rev); }, 20s));
  etcd_->Stop(/*hard=*/true);
  std::this_thread::sleep_for(3s);
  EXPECT_TRUE(h.Has("-A APP-IN -s 10.0.0.1/32")) << h.Save();
  h.daemon->Kill();
  (void)h.ns->Iptables(integration::Variant::kNft, Family::kIPv4, {"-F", "APP-IN"});
  ASSERT_TRUE(h.daemon->Launch().ok());  // etcd still down: the store's state is applied again
  EXPECT_TRUE(WaitUntil([&] { return h.Has("-A APP-IN -s 10.0.0.1/32"); }, 20s)) << h.Save();
  ASSERT_TRUE(etcd_->Start().ok());
  const auto healthy = std::chrono::steady_clock::now();
  Put("owners/app", OwnerDoc("app", {"10.0.0.2"}));
  EXPECT_TRUE(WaitUntil([&] { return h.Has("-A APP-IN -s 10.0.0.2/32"); }, 20s)) << h.Save();
  // Generous (a loaded machine): the watcher's backoff is capped at 2 s.
  EXPECT_LT(std::chrono::steady_clock::now() - healthy, 10s);
}

// An agent that was down while the group changed (and etcd compacted that history away) converges when it comes
// back: it starts from a Range, not from the revisions it missed.
TEST_F(FleetTest, AKilledAgentConvergesAfterItsRestart) {
  Put(".group", "1");
  Put("owners/app", OwnerDoc("app", {"10.0.0.1"}));
  int64_t rev = Put("owners/gone", OwnerDoc("gone", {"10.0.5.5"}));
  Host& h = StartAgent("h1");
  ASSERT_NE(h.daemon, nullptr);
  ASSERT_TRUE(WaitUntil([&] { return Applied("h1", "owners/gone", rev); }, 20s)) << Report("h1").dump();
  h.daemon->Kill();
  for (int i = 2; i <= 5; ++i) Put("owners/app", OwnerDoc("app", {"10.0.0." + std::to_string(i)}));
  ASSERT_TRUE(etcd->Delete(Key("owners/gone")).ok());
  auto now = etcd->Range(kGroup);
  ASSERT_TRUE(now.ok());
  ASSERT_TRUE(etcd->Compact(now->revision).ok());
  EXPECT_TRUE(h.Has("-A GONE-IN")) << h.Save();  // nobody applied anything meanwhile
  // What a crash in the middle of a set rebuild leaves behind goes at the restart; other sets stay.
  ASSERT_EQ(h.ns->Exec({"/usr/sbin/ipset", "create", "iptkit-fl-0badc0de", "hash:ip"}).exit_code, 0);
  ASSERT_EQ(h.ns->Exec({"/usr/sbin/ipset", "create", "iptkit-flows", "hash:ip"}).exit_code, 0);
  ASSERT_TRUE(h.daemon->Launch().ok());
  EXPECT_TRUE(WaitUntil([&] { return h.Has("-A APP-IN -s 10.0.0.5/32") && !h.Has("GONE-IN"); }, 20s)) << h.Save();
  EXPECT_FALSE(h.Has("10.0.0.1/32")) << h.Save();
  EXPECT_TRUE(WaitUntil(
      [&] {
        return h.ns->Exec({"/usr/sbin/ipset", "list", "-n"}).out == "iptkit-flows\n";
      },
      10s))
      << h.ns->Exec({"/usr/sbin/ipset", "list", "-n"}).out;
}

// etcd compacts the history a live watch still needs (the agent stalled while the group changed a lot): etcd
// cancels the watch (compacted), the agent resyncs from a Range and converges to the latest state.
TEST_F(FleetTest, ACompactionDuringTheWatchMakesTheAgentResyncAndConverge) {
  Put(".group", "1");
  int64_t rev = Put("owners/app", OwnerDoc("app", {"10.0.0.1"}));
  Put("owners/gone", OwnerDoc("gone", {"10.0.5.5"}));
  Host& h = StartAgent("h1");
  ASSERT_NE(h.daemon, nullptr);
  ASSERT_TRUE(WaitUntil([&] { return Applied("h1", "owners/app", rev); }, 20s)) << Report("h1").dump();
  // Stalled (SIGSTOP): the watch stream's buffers fill with large events the agent does not read, until etcd moves
  // the watch to its slow watchers (its gauge says so; how many events that takes depends on the HTTP/2 windows and
  // socket buffers between etcd, its gateway and the agent, 25 MB was not always enough); then the history is
  // compacted under it.
  ASSERT_EQ(kill(h.daemon->pid(), SIGSTOP), 0);
  const std::string filler(64 * 1024, 'x');
  HttpClient etcd_http(etcd_->url());
  auto slow_watchers = [&] {
    const std::string metrics = etcd_http.Get("/metrics").body;
    const std::string name = "\netcd_debugging_mvcc_slow_watcher_total ";
    size_t at = metrics.find(name);
    return at == std::string::npos ? 0.0 : std::strtod(metrics.c_str() + at + name.size(), nullptr);
  };
  int puts = 0;
  for (; puts < 3000 && (puts < 100 || slow_watchers() < 1); ++puts) {
    Put("filler/" + std::to_string(puts % 50), filler);  // ignored keys of the group
  }
  ASSERT_GE(slow_watchers(), 1) << "etcd still delivers the watch after " << puts << " puts of 64 KiB";
  ASSERT_TRUE(etcd->Delete(Key("owners/gone")).ok());
  int64_t last = Put("owners/app", OwnerDoc("app", {"10.0.0.9"}));
  ASSERT_TRUE(etcd->Compact(last).ok());
  ASSERT_EQ(kill(h.daemon->pid(), SIGCONT), 0);
  EXPECT_TRUE(WaitUntil([&] { return Applied("h1", "owners/app", last); }, 30s)) << Report("h1").dump();
  EXPECT_TRUE(WaitUntil([&] { return h.Has("-A APP-IN -s 10.0.0.9/32") && !h.Has("GONE-IN"); }, 10s)) << h.Save();
  EXPECT_FALSE(h.Has("10.0.0.1/32")) << h.Save();
  Json r = Report("h1");
  EXPECT_GE(r["watch"].value("compacted", 0), 1) << "etcd did not cancel the watch: " << r.dump();
}

// The applied revision of a key is stored with the change's audit record: after a restart the agent knows what it
// applied and does not apply it again (one fleet_put_owner in the audit log, not two).
TEST_F(FleetTest, AppliedRevisionsSurviveARestart) {
  Put(".group", "1");
  int64_t rev = Put("owners/app", OwnerDoc("app", {"10.0.0.1"}));
  Host& h = StartAgent("h1");
  ASSERT_NE(h.daemon, nullptr);
  ASSERT_TRUE(WaitUntil([&] { return Applied("h1", "owners/app", rev); }, 20s)) << Report("h1").dump();
  ASSERT_TRUE(h.daemon->Stop().ok());
  ASSERT_TRUE(WaitUntil([&] { return !Report("h1").is_object(); }, 10s));  // a clean stop revokes the lease
  ASSERT_TRUE(h.daemon->Launch().ok());
  int64_t later = Put("marker-bump/x", "1");  // a revision after the restart, outside owners/ and rules/
  ASSERT_TRUE(
      WaitUntil([&] { return Report("h1").is_object() && Report("h1").value("revision", int64_t{0}) >= later; }, 20s))
      << Report("h1").dump();
  EXPECT_TRUE(Applied("h1", "owners/app", rev));
  HttpClient http = h.daemon->Admin();
  Reply audit = http.Get("/v1/audit?action=fleet_put_owner");
  ASSERT_EQ(audit.status, 200) << audit.Describe();
  EXPECT_EQ(audit.json["entries"].size(), 1u) << audit.body;
  EXPECT_EQ(audit.json["entries"][0]["principal"], "etcd:anonymous@" + std::to_string(rev));
}

TEST_F(FleetTest, TheHostReportVanishesAfterItsLease) {
  Put(".group", "1");
  Host& h = StartAgent("h1");
  ASSERT_NE(h.daemon, nullptr);
  ASSERT_TRUE(WaitUntil([&] { return Report("h1").is_object(); }, 15s));
  std::this_thread::sleep_for(5s);  // > the 3 s TTL: kept alive
  EXPECT_TRUE(Report("h1").is_object());
  h.daemon->Kill();  // no revoke: the lease must run out
  const auto killed = std::chrono::steady_clock::now();
  EXPECT_TRUE(WaitUntil([&] { return !Report("h1").is_object(); }, 15s));
  EXPECT_GT(std::chrono::steady_clock::now() - killed, 1s);
}

// `iptkit fleet`: put, get, wait (the "has applied R" rule), status, delete --force.
TEST_F(FleetTest, TheCliPutsWaitsAndReports) {
  auto cli = [&](std::vector<std::string> args, std::string_view input = "") {
    args.insert(args.begin(), {IPTKIT_BIN, "fleet", "--etcd", etcd_->url(), "--prefix", kPrefix});
    return integration::RunCommand(args, "", input, 60s);
  };
  ASSERT_TRUE(cli({"put", "web", ".group"}).ok());
  Host& h = StartAgent("h1");
  ASSERT_NE(h.daemon, nullptr);
  auto put = cli({"put", "web", "owners/app", "-"}, OwnerDoc("app", {"10.0.0.1"}));
  ASSERT_TRUE(put.ok()) << put.Describe();
  auto waited = cli({"wait", "web", "--timeout", "30s", "--hosts", "1"});
  ASSERT_TRUE(waited.ok()) << waited.Describe();
  EXPECT_TRUE(h.Has("-A APP-IN -s 10.0.0.1/32")) << h.Save();  // applied means in the kernel
  Json status = Json::parse(cli({"status", "web"}).out, nullptr, false);
  ASSERT_TRUE(status.is_object());
  EXPECT_EQ(status["hosts"][0]["host_id"], "h1");
  EXPECT_EQ(status["hosts"][0]["state"], "applied");
  auto got = cli({"get", "web", "owners/app"});
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(Json::parse(got.out)["owner"], "app");
  EXPECT_EQ(cli({"get", "web", "owners/none"}).exit_code, 3);
  // --canary adds the label to the document (the host has zone=h1: it is its own canary).
  auto canary = cli({"put", "web", "owners/app", "--canary", "zone=h1", "-"}, OwnerDoc("app", {"10.0.0.1"}));
  ASSERT_TRUE(canary.ok()) << canary.Describe();
  EXPECT_EQ(Json::parse(cli({"get", "web", "owners/app"}).out)["canary"], "zone=h1");
  EXPECT_EQ(cli({"put", "web", "owners/app", "--canary", "nolabel", "-"}, "{}").exit_code, 2);
  ASSERT_TRUE(cli({"wait", "web", "--timeout", "30s"}).ok());
  EXPECT_EQ(cli({"put", "web", "owners/app", "-"}, "{not json").exit_code, 2);
  // A document the host refuses: wait says so (exit 1) instead of waiting forever.
  auto bad =
      cli({"put", "web", "owners/app", "-"},
          R"({"chains":[{"table":"filter","name":"APP-IN","rules":[{"spec":"-p tcp --dport 99999 -j ACCEPT"}]}]})");
  ASSERT_TRUE(bad.ok());
  auto failed = cli({"wait", "web", "--timeout", "30s"});
  EXPECT_EQ(failed.exit_code, 1) << failed.Describe();
  EXPECT_NE(failed.out.find("failed"), std::string::npos) << failed.out;
  // delete --force removes the owner everywhere.
  ASSERT_TRUE(cli({"delete", "web", "owners/", "--force"}).ok());
  EXPECT_TRUE(cli({"wait", "web", "--timeout", "30s"}).ok());
  EXPECT_TRUE(WaitUntil([&] { return !h.Has("APP-IN"); }, 10s)) << h.Save();
}

}  // namespace
}  // namespace iptkit::daemontest
