#include "src/service/metrics.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "src/base/subprocess.h"

namespace iptkit::service {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kPromtool[] = "/usr/bin/promtool";

// Feeds `text` to `promtool check metrics`; clean output means exit 0 and nothing printed.
void ExpectPromtoolClean(const std::string& text) {
  auto r = base::RunSubprocess(
      base::Cmd(kPromtool, {"promtool", "check", "metrics"}).Stdin(text).Timeout(std::chrono::seconds(30)));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->exit_code, 0) << r->stdout_text << r->stderr_text << "\n--- input ---\n" << text;
  EXPECT_EQ(r->stdout_text, "") << text;
  EXPECT_EQ(r->stderr_text, "") << text;
}

TEST(MetricsTest, CounterWithoutLabelsStartsAtZeroAndCounts) {
  Metrics m;
  Metrics::Counter& c = m.AddCounter("iptkitd_requests_total", "Requests.");
  EXPECT_EQ(c.Value(), 0);
  EXPECT_EQ(m.Render(),
            "# HELP iptkitd_requests_total Requests.\n"
            "# TYPE iptkitd_requests_total counter\n"
            "iptkitd_requests_total 0\n");
  c.Inc();
  c.Inc({}, 2.5);
  EXPECT_EQ(c.Value(), 3.5);
  EXPECT_THAT(m.Render(), HasSubstr("\niptkitd_requests_total 3.5\n"));
}

TEST(MetricsTest, LabelledSeriesAppearWhenTouchedSortedByLabelValues) {
  Metrics m;
  Metrics::Counter& c = m.AddCounter("http_requests_total", "HTTP requests.", {"method", "code"});
  EXPECT_EQ(m.Render(),
            "# HELP http_requests_total HTTP requests.\n"
            "# TYPE http_requests_total counter\n");
  c.Inc({"POST", "201"});
  c.Inc({"GET", "200"}, 3);
  c.Inc({"GET", "200"});
  EXPECT_EQ(c.Value({"GET", "200"}), 4);
  EXPECT_EQ(c.Value({"GET", "404"}), 0);
  EXPECT_EQ(m.Render(),
            "# HELP http_requests_total HTTP requests.\n"
            "# TYPE http_requests_total counter\n"
            "http_requests_total{method=\"GET\",code=\"200\"} 4\n"
            "http_requests_total{method=\"POST\",code=\"201\"} 1\n");
}

TEST(MetricsTest, GaugeSetAndAdd) {
  Metrics m;
  Metrics::Gauge& g = m.AddGauge("queue_depth", "Queued requests.", {"queue"});
  g.Set({"write"}, 5);
  g.Add({"write"}, -2);
  g.Add({"read"}, 0.25);
  EXPECT_EQ(g.Value({"write"}), 3);
  EXPECT_EQ(g.Value({"read"}), 0.25);
  EXPECT_EQ(g.Value({"none"}), 0);
  EXPECT_EQ(m.Render(),
            "# HELP queue_depth Queued requests.\n"
            "# TYPE queue_depth gauge\n"
            "queue_depth{queue=\"read\"} 0.25\n"
            "queue_depth{queue=\"write\"} 3\n");
}

TEST(MetricsTest, ValuesUseGoFloatSyntax) {
  Metrics m;
  Metrics::Gauge& g = m.AddGauge("v", "Values.", {"k"});
  g.Set({"a"}, std::numeric_limits<double>::infinity());
  g.Set({"b"}, -std::numeric_limits<double>::infinity());
  g.Set({"c"}, std::nan(""));
  g.Set({"d"}, 1e6);
  g.Set({"e"}, 1e20);
  g.Set({"f"}, -0.001);
  g.Set({"g"}, 12345678901234.0);
  const std::string text = m.Render();
  EXPECT_THAT(text, HasSubstr("v{k=\"a\"} +Inf\n"));
  EXPECT_THAT(text, HasSubstr("v{k=\"b\"} -Inf\n"));
  EXPECT_THAT(text, HasSubstr("v{k=\"c\"} NaN\n"));
  EXPECT_THAT(text, HasSubstr("v{k=\"d\"} 1000000\n"));
  EXPECT_THAT(text, HasSubstr("v{k=\"e\"} 1e+20\n"));
  EXPECT_THAT(text, HasSubstr("v{k=\"f\"} -0.001\n"));
  EXPECT_THAT(text, HasSubstr("v{k=\"g\"} 12345678901234\n"));
}

TEST(MetricsTest, EscapesLabelValuesAndHelp) {
  Metrics m;
  Metrics::Gauge& g = m.AddGauge("escapes", "Back\\slash, new\nline and \"quotes\".", {"v"});
  g.Set({"a\\b\"c\nd"}, 1);
  EXPECT_EQ(m.Render(),
            "# HELP escapes Back\\\\slash, new\\nline and \"quotes\".\n"
            "# TYPE escapes gauge\n"
            "escapes{v=\"a\\\\b\\\"c\\nd\"} 1\n");
}

TEST(MetricsTest, HistogramBucketsAreCumulativeWithInfSumAndCount) {
  Metrics m;
  // Unsorted, duplicated and an explicit +Inf: normalized to 0.125, 0.5, 1.
  Metrics::Histogram& h = m.AddHistogram("commit_seconds", "Commit latency.", {"table"},
                                         {1, 0.125, 0.5, 0.125, std::numeric_limits<double>::infinity()});
  h.Observe({"filter"}, 0.0625);
  h.Observe({"filter"}, 0.125);  // upper bounds are inclusive
  h.Observe({"filter"}, 0.75);
  h.Observe({"filter"}, 3);
  h.Observe({"filter"}, std::nan(""));  // ignored
  EXPECT_EQ(h.Count({"filter"}), 4u);
  EXPECT_EQ(h.Sum({"filter"}), 3.9375);
  EXPECT_EQ(h.CumulativeCounts({"filter"}), (std::vector<uint64_t>{2, 2, 3, 4}));
  EXPECT_EQ(h.Count({"nat"}), 0u);
  EXPECT_TRUE(h.CumulativeCounts({"nat"}).empty());
  EXPECT_EQ(m.Render(),
            "# HELP commit_seconds Commit latency.\n"
            "# TYPE commit_seconds histogram\n"
            "commit_seconds_bucket{table=\"filter\",le=\"0.125\"} 2\n"
            "commit_seconds_bucket{table=\"filter\",le=\"0.5\"} 2\n"
            "commit_seconds_bucket{table=\"filter\",le=\"1\"} 3\n"
            "commit_seconds_bucket{table=\"filter\",le=\"+Inf\"} 4\n"
            "commit_seconds_sum{table=\"filter\"} 3.9375\n"
            "commit_seconds_count{table=\"filter\"} 4\n");
}

TEST(MetricsTest, HistogramWithoutLabelsRendersZerosFromTheStart) {
  Metrics m;
  m.AddHistogram("batch_size", "Requests per commit.", {}, {1, 10});
  EXPECT_EQ(m.Render(),
            "# HELP batch_size Requests per commit.\n"
            "# TYPE batch_size histogram\n"
            "batch_size_bucket{le=\"1\"} 0\n"
            "batch_size_bucket{le=\"10\"} 0\n"
            "batch_size_bucket{le=\"+Inf\"} 0\n"
            "batch_size_sum 0\n"
            "batch_size_count 0\n");
}

TEST(MetricsTest, FamiliesSortedByNameThenCollectorsInOrder) {
  Metrics m;
  m.AddGauge("zeta", "Z.");
  m.AddCounter("alpha_total", "A.");
  m.AddCollector([] {
    return std::vector<Metrics::Family>{
        {.name = "rule_packets_total",
         .help = "Packets matched by a rule.",
         .type = "counter",
         .samples = {{.labels = {{"table", "filter"}, {"chain", "INPUT"}, {"rule", "1"}}, .value = 42}}},
        {.name = "chain_rules", .help = "Rules per chain.", .type = "gauge", .samples = {{.labels = {}, .value = 3}}},
    };
  });
  EXPECT_EQ(m.Render(),
            "# HELP alpha_total A.\n"
            "# TYPE alpha_total counter\n"
            "alpha_total 0\n"
            "# HELP zeta Z.\n"
            "# TYPE zeta gauge\n"
            "zeta 0\n"
            "# HELP rule_packets_total Packets matched by a rule.\n"
            "# TYPE rule_packets_total counter\n"
            "rule_packets_total{table=\"filter\",chain=\"INPUT\",rule=\"1\"} 42\n"
            "# HELP chain_rules Rules per chain.\n"
            "# TYPE chain_rules gauge\n"
            "chain_rules 3\n");
}

TEST(MetricsTest, CollectorsAreCalledAtEveryScrape) {
  Metrics m;
  int calls = 0;
  m.AddCollector([&calls] {
    ++calls;
    return std::vector<Metrics::Family>{
        {.name = "scrapes", .help = "Scrapes.", .type = "gauge", .samples = {{.labels = {}, .value = double(calls)}}}};
  });
  EXPECT_THAT(m.Render(), HasSubstr("\nscrapes 1\n"));
  EXPECT_THAT(m.Render(), HasSubstr("\nscrapes 2\n"));
}

TEST(MetricsTest, CollectedFamiliesMergeByNameAndConflictsOrMalformedAreDropped) {
  Metrics m;
  m.AddGauge("registered", "Registered.");
  auto family = [](std::string name, std::string type, std::string label, double v) {
    return Metrics::Family{.name = std::move(name),
                           .help = "H.",
                           .type = std::move(type),
                           .samples = {{.labels = {{std::move(label), "x"}}, .value = v}}};
  };
  m.AddCollector([&] {
    return std::vector<Metrics::Family>{
        family("shared", "gauge", "a", 1),
        family("registered", "gauge", "a", 9),       // name taken by a registered family
        family("bad name", "gauge", "a", 9),         // invalid metric name
        family("badlabel", "gauge", "__x", 9),       // reserved label name
        family("untyped_thing", "untyped", "a", 9),  // only counter and gauge
        family("no_suffix", "counter", "a", 9),      // counters end in _total
        family("gauge_total", "gauge", "a", 9),      // and only counters do
    };
  });
  m.AddCollector([&] {
    return std::vector<Metrics::Family>{family("shared", "gauge", "b", 2), family("shared", "counter", "c", 9)};
  });
  EXPECT_EQ(m.Render(),
            "# HELP registered Registered.\n"
            "# TYPE registered gauge\n"
            "registered 0\n"
            "# HELP shared H.\n"
            "# TYPE shared gauge\n"
            "shared{a=\"x\"} 1\n"
            "shared{b=\"x\"} 2\n");
}

TEST(MetricsTest, EmptyRegistryRendersNothing) {
  Metrics m;
  EXPECT_EQ(m.Render(), "");
}

#ifdef NDEBUG
// Programming errors are ignored in release builds (they assert in debug builds).
TEST(MetricsTest, WrongNumberOfLabelValuesIsIgnored) {
  Metrics m;
  Metrics::Counter& c = m.AddCounter("errors_total", "Errors.", {"code"});
  c.Inc();
  c.Inc({"a", "b"});
  Metrics::Gauge& g = m.AddGauge("g", "G.");
  g.Set({"x"}, 4);
  Metrics::Histogram& h = m.AddHistogram("h", "H.", {"a"}, {1});
  h.Observe({}, 1);
  EXPECT_EQ(c.Value(), 0);
  EXPECT_EQ(g.Value({}), 0);
  EXPECT_EQ(h.Count({}), 0u);
  EXPECT_THAT(m.Render(), Not(HasSubstr("errors_total{")));
  EXPECT_THAT(m.Render(), Not(HasSubstr("h_bucket")));
}

TEST(MetricsTest, NegativeCounterIncrementIsIgnored) {
  Metrics m;
  Metrics::Counter& c = m.AddCounter("up_total", "Up.");
  c.Inc({}, 2);
  c.Inc({}, -1);
  c.Inc({}, std::nan(""));
  EXPECT_EQ(c.Value(), 2);
}

TEST(MetricsTest, RejectedRegistrationsAreLiveButNotRendered) {
  Metrics m;
  Metrics::Counter& first = m.AddCounter("dup_total", "First.");
  Metrics::Counter& second = m.AddCounter("dup_total", "Second.");
  Metrics::Counter& unsuffixed = m.AddCounter("requests", "No _total suffix.");
  Metrics::Gauge& bad_label = m.AddGauge("gauge", "G.", {"bad-label"});
  Metrics::Histogram& le = m.AddHistogram("hist", "H.", {"le"}, {1});
  first.Inc();
  second.Inc({}, 5);
  unsuffixed.Inc();
  bad_label.Set({"x"}, 1);
  le.Observe({"x"}, 1);
  EXPECT_EQ(second.Value(), 5);
  EXPECT_EQ(m.Render(),
            "# HELP dup_total First.\n"
            "# TYPE dup_total counter\n"
            "dup_total 1\n");
}
#else
TEST(MetricsDeathTest, ProgrammingErrorsAssertInDebugBuilds) {
  EXPECT_DEATH(
      {
        Metrics m;
        m.AddCounter("requests", "No _total suffix.");
      },
      "");
  EXPECT_DEATH(
      {
        Metrics m;
        m.AddCounter("errors_total", "Errors.", {"code"}).Inc();
      },
      "label values");
}
#endif

TEST(MetricsTest, ConcurrentUpdatesAndScrapes) {
  Metrics m;
  Metrics::Counter& c = m.AddCounter("ops_total", "Ops.", {"worker"});
  Metrics::Counter& all = m.AddCounter("all_ops_total", "Ops.");
  Metrics::Histogram& h = m.AddHistogram("op_seconds", "Op latency.", {}, {0.5});
  constexpr int kThreads = 4, kOps = 20000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kOps; ++i) {
        c.Inc({std::to_string(t % 2)});
        all.Inc();
        h.Observe({}, i % 2);
      }
    });
  }
  std::thread scraper([&] {
    for (int i = 0; i < 50; ++i) EXPECT_THAT(m.Render(), HasSubstr("# TYPE ops_total counter\n"));
  });
  // Registering while others update and render is fine too.
  for (int i = 0; i < 20; ++i) m.AddGauge("late_" + std::to_string(i), "Late.");
  for (auto& t : threads) t.join();
  scraper.join();
  EXPECT_EQ(c.Value({"0"}) + c.Value({"1"}), kThreads * kOps);
  EXPECT_EQ(all.Value(), kThreads * kOps);
  EXPECT_EQ(h.Count({}), uint64_t{kThreads * kOps});
  EXPECT_EQ(h.CumulativeCounts({}), (std::vector<uint64_t>{kThreads * kOps / 2, kThreads * kOps}));
}

TEST(MetricsTest, RenderPassesPromtoolCheckMetrics) {
  if (::access(kPromtool, X_OK) != 0) GTEST_SKIP() << kPromtool << " is not installed (Debian package prometheus)";
  Metrics m;
  Metrics::Counter& requests =
      m.AddCounter("iptkitd_http_requests_total", "HTTP requests served, by method and code.", {"method", "code"});
  requests.Inc({"GET", "200"});
  requests.Inc({"POST", "409"}, 2);
  m.AddCounter("iptkitd_commits_total", "Group commits.").Inc();
  Metrics::Gauge& queue = m.AddGauge("iptkitd_queue_requests", "Requests waiting for the writer.");
  queue.Set({}, 7);
  Metrics::Gauge& odd = m.AddGauge("iptkitd_odd_labels", "Help with a back\\slash\nand a newline.", {"value"});
  odd.Set({"quote \" backslash \\ newline \n end"}, 1);
  odd.Set({""}, std::numeric_limits<double>::infinity());
  Metrics::Histogram& commit =
      m.AddHistogram("iptkitd_commit_duration_seconds", "Commit latency.", {"family"}, {0.001, 0.01, 0.1, 1, 10});
  for (double v : {0.0005, 0.002, 0.2, 20.0}) commit.Observe({"ipv4"}, v);
  m.AddHistogram("iptkitd_batch_requests", "Requests per group commit.", {}, {1, 2, 5, 10, 100}).Observe({}, 3);
  m.AddCollector([] {
    return std::vector<Metrics::Family>{
        {.name = "iptkitd_rule_packets_total",
         .help = "Packets matched by an owned rule.",
         .type = "counter",
         .samples = {{.labels = {{"table", "filter"}, {"chain", "INPUT"}, {"owner", "app"}}, .value = 1234},
                     {.labels = {{"table", "filter"}, {"chain", "IN\"PUT"}, {"owner", "a\\pp"}}, .value = 0}}},
        {.name = "iptkitd_owned_rules", .help = "Owned rules.", .type = "gauge", .samples = {}},
    };
  });
  ExpectPromtoolClean(m.Render());
}

TEST(MetricsTest, PromtoolRejectsWhatItShouldSoTheCheckIsReal) {
  if (::access(kPromtool, X_OK) != 0) GTEST_SKIP() << kPromtool << " is not installed (Debian package prometheus)";
  auto r = base::RunSubprocess(base::Cmd(kPromtool, {"promtool", "check", "metrics"})
                                   .Stdin("# HELP requests Requests.\n# TYPE requests counter\nrequests 1\n"));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_NE(r->exit_code, 0);
  EXPECT_THAT(r->stdout_text + r->stderr_text, HasSubstr("_total"));
}

}  // namespace
}  // namespace iptkit::service
