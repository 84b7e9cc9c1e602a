// The etcd client and the prefix watcher against a real etcd (Debian's etcd-server) on 127.0.0.1.
#include "src/fleet/etcd_client.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

#include "src/fleet/etcd_test_server.h"
#include "src/fleet/prefix_watcher.h"

namespace iptkit::fleet {
namespace {

using namespace std::chrono_literals;

#define SKIP_WITHOUT_ETCD() \
  if (!EtcdTestServer::Available()) GTEST_SKIP() << "no /usr/bin/etcd (Debian package etcd-server)"

std::unique_ptr<EtcdClient> Client(const EtcdTestServer& etcd, const std::function<void(EtcdOptions&)>& set = nullptr) {
  EtcdOptions o;
  if (set) set(o);
  o.endpoints = {etcd.url()};
  auto c = EtcdClient::Create(o);
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return c.ok() ? std::move(c).value() : nullptr;
}

// Waits up to `limit` for `pred`.
template <typename Pred>
bool Eventually(Pred pred, std::chrono::milliseconds limit = 10s) {
  auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return pred();
}

TEST(EndpointTest, ParsesAndRefuses) {
  auto ep = ParseEndpoint("https://[::1]:2379/");
  ASSERT_TRUE(ep.ok());
  EXPECT_TRUE(ep->tls);
  EXPECT_EQ(ep->host, "::1");
  EXPECT_EQ(ep->port, 2379);
  EXPECT_EQ(ParseEndpoint("127.0.0.1:2379").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseEndpoint("http://127.0.0.1").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseEndpoint("http://127.0.0.1:70000").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseEndpoint("http://127.0.0.1:2379/v3").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(PrefixEnd("/p/"), "/p0");
  EXPECT_EQ(PrefixEnd(std::string("a\xff", 2)), "b");
}

TEST(EtcdClientTest, RangePutDeleteTxnAtRevisions) {
  SKIP_WITHOUT_ETCD();
  EtcdTestServer etcd;
  ASSERT_TRUE(etcd.Start().ok());
  auto c = Client(etcd);
  ASSERT_NE(c, nullptr);
  const std::string binary("v\0\xff\n1", 5);
  auto r1 = c->Put("/p/a", binary);
  ASSERT_TRUE(r1.ok()) << r1.status().ToString();
  auto r2 = c->Put("/p/a", "two");
  ASSERT_TRUE(r2.ok());
  ASSERT_TRUE(c->Put("/p/b", "b").ok());
  ASSERT_TRUE(c->Put("/q", "outside").ok());
  EXPECT_GT(*r2, *r1);

  auto all = c->Range("/p/", PrefixEnd("/p/"));
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  ASSERT_EQ(all->kvs.size(), 2u);
  EXPECT_EQ(all->kvs[0].key, "/p/a");
  EXPECT_EQ(all->kvs[0].value, "two");
  EXPECT_EQ(all->kvs[0].mod_revision, *r2);
  EXPECT_EQ(all->kvs[0].version, 2);
  EXPECT_EQ(all->kvs[0].create_revision, *r1);
  EXPECT_GE(all->revision, *r2 + 2);

  auto old = c->Range("/p/a", {}, *r1);  // the value as of r1, bytes intact
  ASSERT_TRUE(old.ok());
  ASSERT_EQ(old->kvs.size(), 1u);
  EXPECT_EQ(old->kvs[0].value, binary);

  auto future = c->Range("/p/a", {}, all->revision + 100);
  EXPECT_EQ(future.status().code(), StatusCode::kFailedPrecondition);

  // Txn: compare the mod revision; the failing branch runs when it moved.
  TxnRequest t;
  t.compare.push_back(TxnCompare::ModEquals("/p/a", *r2));
  t.success.push_back(TxnOp::Put("/p/a", "three"));
  t.failure.push_back(TxnOp::Put("/p/conflict", "x"));
  auto won = c->Txn(t);
  ASSERT_TRUE(won.ok()) << won.status().ToString();
  EXPECT_TRUE(won->succeeded);
  auto lost = c->Txn(t);
  ASSERT_TRUE(lost.ok());
  EXPECT_FALSE(lost->succeeded);
  EXPECT_EQ(c->Range("/p/conflict")->kvs.size(), 1u);

  ASSERT_TRUE(c->Delete("/p/", PrefixEnd("/p/")).ok());
  EXPECT_TRUE(c->Range("/p/", PrefixEnd("/p/"))->kvs.empty());
  EXPECT_EQ(c->Range("/q")->kvs.size(), 1u);

  // Compacted revisions cannot be read any more.
  auto now = c->Range("/q");
  ASSERT_TRUE(c->Compact(now->revision).ok());
  auto gone = c->Range("/p/a", {}, *r1);
  EXPECT_EQ(gone.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(gone.status().details().reason, "compacted");
}

TEST(EtcdClientTest, ResponsesAreBounded) {
  SKIP_WITHOUT_ETCD();
  EtcdTestServer etcd;
  ASSERT_TRUE(etcd.Start().ok());
  auto c = Client(etcd, [](EtcdOptions& o) { o.max_response_bytes = 4096; });
  ASSERT_NE(c, nullptr);
  ASSERT_TRUE(c->Put("/big", std::string(100000, 'x')).ok());
  auto r = c->Range("/big");
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find("larger than 4096"), std::string::npos) << r.status().ToString();
}

TEST(EtcdClientTest, LeasesKeepKeysAliveUntilRevoked) {
  SKIP_WITHOUT_ETCD();
  EtcdTestServer etcd;
  ASSERT_TRUE(etcd.Start().ok());
  auto c = Client(etcd);
  ASSERT_NE(c, nullptr);
  auto lease = c->LeaseGrant(2);
  ASSERT_TRUE(lease.ok()) << lease.status().ToString();
  ASSERT_TRUE(c->Put("/hosts/a", "report", *lease).ok());
  for (int i = 0; i < 4; ++i) {  // 4 s > TTL: only the keep-alives hold the key
    std::this_thread::sleep_for(1s);
    auto ttl = c->LeaseKeepAlive(*lease);
    ASSERT_TRUE(ttl.ok()) << ttl.status().ToString();
    EXPECT_EQ(*ttl, 2);
  }
  auto kv = c->Range("/hosts/a");
  ASSERT_EQ(kv->kvs.size(), 1u);
  EXPECT_EQ(kv->kvs[0].lease, *lease);
  ASSERT_TRUE(c->LeaseRevoke(*lease).ok());
  EXPECT_TRUE(c->Range("/hosts/a")->kvs.empty());
  EXPECT_EQ(c->LeaseKeepAlive(*lease).status().code(), StatusCode::kNotFound);

  // Without keep-alives the key vanishes after the TTL.
  auto short_lease = c->LeaseGrant(1);
  ASSERT_TRUE(c->Put("/hosts/b", "report", *short_lease).ok());
  EXPECT_TRUE(Eventually([&] { return c->Range("/hosts/b")->kvs.empty(); }, 10s));
}

TEST(EtcdClientTest, WatchStreamDeliversEventsAndInterruptStopsIt) {
  SKIP_WITHOUT_ETCD();
  EtcdTestServer etcd;
  ASSERT_TRUE(etcd.Start().ok());
  auto c = Client(etcd);
  auto writer = Client(etcd);
  ASSERT_TRUE(c && writer);
  auto start = writer->Put("/w/x", "1");
  auto watch = c->Watch("/w/", PrefixEnd("/w/"), *start);  // from a past revision: the put is replayed
  ASSERT_TRUE(watch.ok()) << watch.status().ToString();
  auto m = (*watch)->Next();
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  ASSERT_EQ(m->events.size(), 1u);
  EXPECT_EQ(m->events[0].kv.key, "/w/x");
  EXPECT_EQ(m->events[0].kv.value, "1");
  // One txn, two keys: one message.
  TxnRequest t;
  t.success.push_back(TxnOp::Put("/w/y", "2"));
  t.success.push_back(TxnOp::Delete("/w/x"));
  ASSERT_TRUE(writer->Txn(t).ok());
  m = (*watch)->Next();
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  ASSERT_EQ(m->events.size(), 2u);
  EXPECT_EQ(m->events[0].type, WatchEvent::Type::kPut);
  EXPECT_EQ(m->events[1].type, WatchEvent::Type::kDelete);
  EXPECT_EQ(m->events[1].kv.key, "/w/x");
  // A blocked Next returns at once when interrupted.
  std::thread stopper([&] {
    std::this_thread::sleep_for(200ms);
    c->Interrupt();
  });
  auto t0 = std::chrono::steady_clock::now();
  m = (*watch)->Next();
  stopper.join();
  EXPECT_EQ(m.status().code(), StatusCode::kUnavailable);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
}

// Collects what a PrefixWatcher hands out.
struct Seen {
  std::mutex mu;
  PrefixWatcher::Snapshot last;
  int calls = 0;
  Status connection;
  void OnState(const PrefixWatcher::Snapshot& s) {
    std::lock_guard<std::mutex> lock(mu);
    last = s;
    ++calls;
  }
  std::optional<std::string> Value(const std::string& key) {
    std::lock_guard<std::mutex> lock(mu);
    auto it = last.kvs.find(key);
    if (it == last.kvs.end()) return std::nullopt;
    return it->second.value;
  }
};

TEST(PrefixWatcherTest, FollowsChangesAndResyncsAfterCompaction) {
  SKIP_WITHOUT_ETCD();
  EtcdTestServer etcd;
  ASSERT_TRUE(etcd.Start().ok());
  auto c = Client(etcd);
  auto writer = Client(etcd);
  ASSERT_TRUE(writer->Put("/g/a", "1").ok());
  Seen seen;
  std::atomic<bool> compacted{false};
  PrefixWatcher w(c.get(), "/g/",
                  {.on_state =
                       [&](const PrefixWatcher::Snapshot& s) {
                         // Between the first Range and its watch: history moves on and is compacted, so the watch
                         // from Range's revision + 1 is canceled and the watcher must resync.
                         if (!compacted.exchange(true)) {
                           ASSERT_TRUE(writer->Put("/g/b", "2").ok());
                           auto rev = writer->Put("/g/c", "3");
                           ASSERT_TRUE(writer->Compact(*rev).ok());
                         }
                         seen.OnState(s);
                       },
                   .on_connection = nullptr});
  w.Start();
  ASSERT_TRUE(Eventually([&] { return seen.Value("/g/c") == "3"; })) << "never resynced after the compaction";
  EXPECT_GE(w.resyncs(), 2);
  EXPECT_EQ(seen.Value("/g/b"), "2");
  EXPECT_EQ(seen.Value("/g/a"), "1");
  ASSERT_TRUE(writer->Delete("/g/a").ok());
  ASSERT_TRUE(writer->Put("/outside", "x").ok());
  EXPECT_TRUE(Eventually([&] { return !seen.Value("/g/a").has_value(); }));
  {
    std::lock_guard<std::mutex> lock(seen.mu);
    EXPECT_FALSE(seen.last.kvs.contains("/outside"));
    EXPECT_EQ(seen.last.changed, std::vector<std::string>{"/g/a"});
  }
  w.Stop();
}

TEST(PrefixWatcherTest, ReconnectsAfterAnOutageWithBackoffCappedAt2s) {
  SKIP_WITHOUT_ETCD();
  EtcdTestServer etcd;
  ASSERT_TRUE(etcd.Start().ok());
  auto c = Client(etcd, [](EtcdOptions& o) { o.request_timeout = 1s; });
  auto writer = Client(etcd);
  Seen seen;
  std::atomic<int> failures{0};
  PrefixWatcher w(c.get(), "/g/",
                  {.on_state = [&](const PrefixWatcher::Snapshot& s) { seen.OnState(s); },
                   .on_connection =
                       [&](const Status& s) {
                         if (!s.ok()) failures.fetch_add(1);
                       }});
  w.Start();
  ASSERT_TRUE(writer->Put("/g/a", "1").ok());
  ASSERT_TRUE(Eventually([&] { return seen.Value("/g/a") == "1"; }));
  etcd.Stop(/*hard=*/true);
  ASSERT_TRUE(Eventually([&] { return failures.load() >= 3; }, 15s)) << "the outage was not noticed";
  std::this_thread::sleep_for(3s);  // long enough for the backoff to reach its cap
  ASSERT_TRUE(etcd.Start().ok());
  auto healthy = std::chrono::steady_clock::now();
  ASSERT_TRUE(writer->Put("/g/a", "2").ok());
  ASSERT_TRUE(Eventually([&] { return seen.Value("/g/a") == "2"; }, 10s));
  // Back within the 2 s backoff cap plus a request (generous: a loaded machine).
  EXPECT_LT(std::chrono::steady_clock::now() - healthy, 5s);
  w.Stop();
}

TEST(EtcdClientTest, AuthenticatesAndReauthenticatesExpiredTokens) {
  SKIP_WITHOUT_ETCD();
  EtcdTestServer etcd(EtcdTestServer::Options{.tls = false, .auth_token_ttl_s = 1});
  ASSERT_TRUE(etcd.Start().ok());
  ASSERT_TRUE(etcd.EnableAuth("agent", "s3cret", "/fleet/").ok());
  auto anonymous = Client(etcd);
  EXPECT_EQ(anonymous->Put("/fleet/x", "1").status().code(), StatusCode::kPermissionDenied);
  auto wrong = Client(etcd, [](EtcdOptions& o) { o.user = "agent", o.password = "nope"; });
  EXPECT_EQ(wrong->Put("/fleet/x", "1").status().code(), StatusCode::kPermissionDenied);

  auto c = Client(etcd, [](EtcdOptions& o) { o.user = "agent", o.password = "s3cret"; });
  ASSERT_TRUE(c->Put("/fleet/x", "1").ok());
  EXPECT_EQ(c->Put("/other", "1").status().code(), StatusCode::kPermissionDenied);
  std::this_thread::sleep_for(3s);  // the simple token expires after 1 s unused
  auto r = c->Range("/fleet/x");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->kvs.size(), 1u);
  std::this_thread::sleep_for(3s);
  auto watch = c->Watch("/fleet/", PrefixEnd("/fleet/"), 0);
  ASSERT_TRUE(watch.ok()) << watch.status().ToString();
  ASSERT_TRUE(c->Put("/fleet/y", "2").ok());
  auto m = (*watch)->Next();
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  ASSERT_EQ(m->events.size(), 1u);
  EXPECT_EQ(m->events[0].kv.key, "/fleet/y");
}

TEST(EtcdClientTest, TlsWithClientCertificates) {
  SKIP_WITHOUT_ETCD();
  EtcdTestServer etcd(EtcdTestServer::Options{.tls = true, .auth_token_ttl_s = 0});
  Status started = etcd.Start();
  ASSERT_TRUE(started.ok()) << started.ToString();
  auto c = Client(etcd, [&](EtcdOptions& o) { o.tls = {etcd.ca_file(), etcd.client_cert(), etcd.client_key()}; });
  auto put = c->Put("/t", "1");
  ASSERT_TRUE(put.ok()) << put.status().ToString();
  auto watch = c->Watch("/t", {}, *put);
  ASSERT_TRUE(watch.ok()) << watch.status().ToString();
  auto m = (*watch)->Next();
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->events.at(0).kv.value, "1");

  auto no_cert = Client(etcd, [&](EtcdOptions& o) { o.tls.ca_file = etcd.ca_file(); });
  EXPECT_EQ(no_cert->Put("/t", "2").status().code(), StatusCode::kUnavailable);
  auto no_ca = Client(etcd, [&](EtcdOptions& o) { o.tls = {"", etcd.client_cert(), etcd.client_key()}; });
  auto refused = no_ca->Put("/t", "2");
  EXPECT_EQ(refused.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(refused.status().message().find("TLS handshake"), std::string::npos) << refused.status().ToString();
  EtcdOptions bad_files;
  bad_files.endpoints = {etcd.url()};
  bad_files.tls = {"", "/nonexistent.pem", "/nonexistent.key"};
  EXPECT_EQ(EtcdClient::Create(bad_files).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace iptkit::fleet
