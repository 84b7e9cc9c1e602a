// The audit log of iptkitd under load (issue 8, items 3 and 4): pages bounded in bytes however large the entries
// and the limit, memory bounded while clients read them in parallel, stored bodies bounded, and retention by age
// and by size.
#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "tests/daemon/daemon_fixture.h"
#include "tests/integration/test_util.h"

namespace iptkit::daemontest {
namespace {

// Resident memory of a process in bytes (VmRSS), 0 when unknown.
int64_t RssBytes(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  }
  return 0;
}

// A transaction of `ops` appends to a chain that does not exist: it reaches the writer, fails there and is audited
// with its whole body (about 150 bytes per op).
std::string FailingTransaction(int ops, int n) {
  std::string comment(100, 'c');
  std::string body = R"({"ops": [)";
  for (int i = 0; i < ops; ++i) {
    body += std::string(i ? "," : "") + R"({"append": {"chain": "NOPE", "rule": {"spec": "-s 10.)" +
            std::to_string(n % 250) + "." + std::to_string(i % 250) + R"(.1 -m comment --comment )" + comment +
            R"( -j DROP"}}})";
  }
  return body + "]}";
}

// Makes `count` audit entries of about `ops` * 150 bytes each, from 4 clients at once.
void MakeEntries(Daemon& daemon, int count, int ops) {
  std::atomic<int> next{0};
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      HttpClient c = daemon.Admin();
      for (int n = next++; n < count; n = next++) {
        Reply r = c.Post("/v1/transactions", FailingTransaction(ops, n));
        if (r.status != 404) ++bad;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  ASSERT_EQ(bad.load(), 0) << "the failing transactions did not fail with 404";
}

// Regression (issue 8, item 3): four parallel GET /v1/audit?limit=1000 took the daemon to 3.2 GB: every entry kept
// its whole body and a page was built whole. Pages are bounded in bytes (with a cursor), stored bodies are cut,
// and the daemon's memory stays bounded while 4 clients page through 1,000 entries of 68 KB bodies at once.
TEST(DaemonAudit, PagesAreBoundedInBytesAndMemoryStaysBounded) {
  IPTKIT_NEW_NETNS(ns);
  ASSERT_OK_AND_ASSIGN(auto daemon, Daemon::Start(*ns, {.args = {"--audit-page-bytes", "1048576"}}));
  MakeEntries(*daemon, 1000, 450);  // about 68 KB each: over the 64 KiB a stored body keeps
  if (HasFatalFailure()) return;

  const int64_t rss_before = RssBytes(daemon->pid());
  std::atomic<int64_t> rss_peak{rss_before};
  std::atomic<bool> done{false};
  std::thread sampler([&] {
    while (!done) {
      rss_peak = std::max<int64_t>(rss_peak, RssBytes(daemon->pid()));
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  std::vector<std::thread> readers;
  std::vector<std::string> problems(4);
  std::vector<int> totals(4);
  std::vector<size_t> largest(4);
  for (int t = 0; t < 4; ++t) {
    readers.emplace_back([&, t] {
      HttpClient c = daemon->Admin();
      std::set<int64_t> ids;
      std::string before;
      for (int page = 0; page < 2000; ++page) {
        Reply r = c.Get("/v1/audit?limit=1000" + before);
        if (r.status != 200 || !r.is_json()) {
          problems[t] = r.Describe();
          return;
        }
        largest[t] = std::max(largest[t], r.body.size());
        for (const Json& e : r.json["entries"]) {
          if (!ids.insert(e["id"].get<int64_t>()).second) problems[t] = "entry seen twice";
          // Stored bodies are cut, with their original size.
          if (e["action"] == "transaction" && !e.contains("request_bytes")) problems[t] = "a 68 KB body was kept whole";
        }
        if (r.json["next_before"].is_null()) break;
        before = "&before=" + std::to_string(r.json["next_before"].get<int64_t>());
      }
      totals[t] = static_cast<int>(ids.size());
    });
  }
  for (std::thread& t : readers) t.join();
  done = true;
  sampler.join();
  for (int t = 0; t < 4; ++t) {
    EXPECT_EQ(problems[t], "") << "reader " << t;
    EXPECT_GE(totals[t], 1000) << "reader " << t;
    // A page is at most audit_page_bytes plus one entry (a stored body is at most 64 KiB, plus its diff).
    EXPECT_LE(largest[t], size_t{1048576 + 200000}) << "reader " << t;
  }
  const double grew_mb = static_cast<double>(rss_peak - rss_before) / (1 << 20);
  std::cout << "RSS " << rss_before / (1 << 20) << " MB before, peak " << rss_peak / (1 << 20)
            << " MB while 4 clients paged through the audit log (+" << grew_mb << " MB)\n";
  EXPECT_LT(grew_mb, 100.0);
}

// Issue 8, item 4: audit retention by age and by size, enforced periodically.
TEST(DaemonAudit, RetentionByAgeAndBySize) {
  IPTKIT_NEW_NETNS(ns);
  ASSERT_OK_AND_ASSIGN(auto daemon, Daemon::Start(*ns, {.args = {"--audit-max-age", "1h", "--audit-prune-interval",
                                                                 "1s", "--audit-max-bytes", "200000"}}));
  HttpClient admin = daemon->Admin();
  auto entries = [&]() -> Json {
    Reply r = admin.Get("/v1/audit?limit=1000");
    EXPECT_EQ(r.status, 200) << r.Describe();
    return r.json["entries"];
  };
  // Size: 40 entries of about 20 KB (800 KB) shrink to the newest that fit in 200,000 bytes.
  MakeEntries(*daemon, 40, 130);
  if (HasFatalFailure()) return;
  // A prune may run while the entries are still being made (every second): wait for one after the last of them.
  auto stored_bytes = [](const Json& list) {
    size_t bytes = 0;
    for (const Json& e : list) bytes += e["request"].dump().size() + e["message"].get<std::string>().size();
    return bytes;
  };
  ASSERT_TRUE(WaitUntil(
      [&] {
        Json now = entries();
        return now.size() <= 11 && stored_bytes(now) <= 200000;
      },
      std::chrono::seconds(10)))
      << entries().size() << " entries, " << stored_bytes(entries()) << " bytes";
  Json left = entries();
  EXPECT_GE(left.size(), 5u);
  EXPECT_LE(left.size(), 11u);
  EXPECT_LE(stored_bytes(left), 200000u);
  Reply metrics = admin.Get("/metrics");
  EXPECT_GE(MetricValue(metrics.body, "iptkitd_audit_pruned_total", {{"reason", "size"}}).value_or(0), 29.0)
      << metrics.body;

  // Age: with a maximum age of 3 s they are gone; a new entry stays until it is 3 s old.
  admin.Disconnect();
  ASSERT_STATUS_OK(daemon->Stop());
  daemon->options().args = {"--audit-max-age", "3s", "--audit-prune-interval", "1s"};
  ASSERT_STATUS_OK(daemon->Launch());
  admin = daemon->Admin();
  ASSERT_TRUE(WaitUntil([&] { return entries().empty(); }, std::chrono::seconds(10))) << entries().dump();
  ASSERT_EQ(admin.Post(RulesPath("INPUT"), R"({"spec": "-s 192.0.2.1 -j DROP"})").status, 200);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  EXPECT_EQ(entries().size(), 1u);
  EXPECT_TRUE(WaitUntil([&] { return entries().empty(); }, std::chrono::seconds(10)));
  metrics = admin.Get("/metrics");
  EXPECT_GE(MetricValue(metrics.body, "iptkitd_audit_pruned_total", {{"reason", "age"}}).value_or(0), 6.0);
}

}  // namespace
}  // namespace iptkit::daemontest
